"""What a pass costs the switch: a sync with nothing to do sends and reads no OpenFlow message;
vnet bridges need no programming; a restarted ovs-vswitchd gets every flow back from the
agent, in one bundle, without a command; commands run inside a running agent."""

from __future__ import annotations

import json
import sys
import time

import pytest

from ovsvnet.lab import LabHost, wait_until

from .helpers import flow_dump, ovsvnet
from .test_agent import lab_with_agents, status

pytestmark = pytest.mark.root

VNETS = ("97", "98", "99")


def openflow_messages(host: LabHost) -> int:
    """OpenFlow messages ovs-vswitchd received from any client, all bridges (its coverage
    counter; the main thread folds its count in once a second, hence the wait)."""
    time.sleep(1.5)
    return int(host.appctl("coverage/read-counter", "ofproto_recv_openflow").strip())


def direct(host: LabHost, *args: str, rc: int = 0):
    """``ovsvnet ARGS`` run by itself, not by an agent."""
    proc = host.run("env", "OVSVNET_DIRECT=1", sys.executable, "-m", "ovsvnet", "--db", host.db,
                    *args, check=False, timeout=60)
    assert proc.returncode == rc, (args, proc.stdout, proc.stderr)
    return proc


def test_a_sync_with_nothing_to_do_sends_and_reads_no_openflow_message(lab):
    lab.add_segment("s1")
    h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
    for vid in VNETS:
        direct(h1, "create", "--id", vid)
    direct(h1, "peer-add", h2.address)
    assert "in sync" in direct(h1, "sync").stdout
    # vnet bridges carry only the NORMAL flow ovs-vswitchd gives a standalone bridge
    bridge = json.loads(direct(h1, "show", "97", "--json").stdout)["bridge"]
    assert h1.vsctl("get", "Bridge", bridge, "fail_mode").strip() == "standalone"
    flows = h1.ofctl("-O", "OpenFlow15", "--no-stats", "dump-flows", bridge).split("\n")
    assert [line.strip() for line in flows if "actions=" in line] == [
        "priority=0 actions=NORMAL"]

    before = openflow_messages(h1)
    for _ in range(3):
        assert "in sync" in direct(h1, "sync").stdout
    assert openflow_messages(h1) == before, "a no-op sync talked to ovs-vswitchd"

    # the counter does count: a sync that has something to do talks to the switch
    h1.ofctl("del-flows", "br-vnet", "table=40")
    before = openflow_messages(h1)
    assert "in sync" in direct(h1, "sync").stdout  # the record says nothing changed ...
    assert openflow_messages(h1) == before
    assert "synced" in direct(h1, "sync", "--full").stdout  # ... --full reads and repairs
    assert openflow_messages(h1) > before
    assert any("table=40" in line for line in flow_dump(h1, "br-vnet"))


def test_a_restarted_vswitchd_gets_every_flow_back_from_the_agent():
    with lab_with_agents("s1") as (lab, agents):
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h in (h1, h2):
            for vid in VNETS:
                ovsvnet(h, "create", "--id", vid)
            agents.start(h)
        wait_until(lambda: len(status(h2)["agent"]["peers"]) == 1, timeout=15,
                   what="h2 hears h1")
        bridge = json.loads(ovsvnet(h2, "show", "97", "--json").stdout)["bridge"]
        g1 = lab.add_guest("g1", "h1", bridge, ip="192.168.97.1/24", mtu=1450)
        g2 = lab.add_guest("g2", "h2", bridge, ip="192.168.97.2/24", mtu=1450)
        assert wait_until(lambda: g1.ping(g2.addr, count=1, timeout=2), timeout=15,
                          what="first ping")
        static = lambda: [line for line in flow_dump(h2, "br-vnet")  # learned MACs aside
                          if "0x6f7604" not in line.split()[0]]
        before = static()
        assert len([line for line in before if "0x6f76020000000099" in line]) == 6

        start = time.monotonic()
        h2.restart_vswitchd()
        assert wait_until(lambda: static() == before, timeout=20,
                          what="every static flow back")
        back = time.monotonic() - start
        assert wait_until(lambda: g1.ping(g2.addr, count=1, timeout=1), timeout=10,
                          what="traffic after the restart")
        print(f"\nvswitchd restart: all {len(before)} flows back {back:.2f}s after it began")
        agent = status(h2)["agent"]
        assert agent["vswitchd_restarts"] == 1 and agent["flows_repaired"] == 0
        assert status(h1)["agent"]["peers"], "h1 lost h2 meanwhile"


def test_commands_run_in_the_agent_give_what_they_give_alone():
    with lab_with_agents("s1") as (lab, agents):
        h1 = lab.add_host("h1", "s1")
        agents.start(h1)
        ovsvnet(h1, "create", "--id", "97", "--vnetif", "vnif97")  # through the agent
        for args in (("list", "--json"), ("show", "97", "--json"), ("peers", "--json"),
                     ("vnet-list", "-l")):
            assert ovsvnet(h1, *args).stdout == direct(h1, *args).stdout, args
        # errors and exit codes come back too
        via_agent = ovsvnet(h1, "show", "42", rc=4)
        assert via_agent.stderr == direct(h1, "show", "42", rc=4).stderr
        assert "vnet 42" in via_agent.stderr or "42" in via_agent.stderr
        # a hook's check of one bridge
        bridge = json.loads(ovsvnet(h1, "show", "97", "--json").stdout)["bridge"]
        assert "in sync" in ovsvnet(h1, "sync", "--bridge", bridge).stdout
        missing = ovsvnet(h1, "sync", "--bridge", "nosuchbr", rc=4)
        assert "nosuchbr is not a vnet bridge" in missing.stderr
