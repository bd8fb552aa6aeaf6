"""An agent keeps writing to the registry through a leader's death and a leadership change:
it talks to any member connected to the cluster (leader_only=False), whose writes go to the
leader of the moment. The times are printed (BENCHMARKS.md quotes them), not asserted."""

from __future__ import annotations

import time

import pytest

from ovsvnet.lab import LabHost, wait_until
from ovsvnet.lab.registry import wait_elected

from .helpers import ovsvnet as run
from .test_registry import cluster_lab, registry_status

pytestmark = pytest.mark.root


def published(host: LabHost, remotes: str) -> int:
    """How many vnets the registry's Chassis row of ``host`` lists (the agent writes it)."""
    rows = [c for c in registry_status(host, remotes)["chassis"] if c["name"] == host.system_id]
    return rows[0]["vnets"] if rows else -1


def time_a_write(host: LabHost, remotes: str, vnet: str) -> float:
    """Create a local vnet on ``host`` and time until its agent published it."""
    before = published(host, remotes)
    t0 = time.monotonic()
    run(host, "create", "--id", vnet)
    assert wait_until(lambda: published(host, remotes) == before + 1, timeout=30,
                      interval=0.05, what=f"vnet {vnet} published")
    return time.monotonic() - t0


def test_an_agent_writes_again_soon_after_the_leader_dies_or_hands_over():
    with cluster_lab(n_hosts=1) as (lab, cluster, hosts, agents):
        h1 = hosts[0]
        R = cluster.operator_remotes
        assert wait_until(lambda: published(h1, R) == 0, timeout=20, what="h1's chassis row")
        calm = time_a_write(h1, R, "a1")

        leader = wait_elected(cluster)
        cluster.kill(leader)
        after_kill = time_a_write(h1, R, "a2")
        wait_elected(cluster)
        cluster.start(leader)  # back as a follower

        leader = wait_elected(cluster)
        ctl = cluster.members[leader].ctl
        h1.run("ovs-appctl", "-t", str(ctl), "cluster/leave", "OVSVNET_Registry",
               check=False)  # the leader leaves the cluster: leadership moves
        after_leave = time_a_write(h1, R, "a3")
        print(f"\nagent write published: {calm:.2f}s calm, {after_kill:.2f}s right after the "
              f"leader {leader} was killed, {after_leave:.2f}s right after it left")
        status = h1.ovsvnet("status", "--json", check=False)
        assert status.returncode == 0
