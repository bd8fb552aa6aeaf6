"""The kernel lane's world: two simulated hosts on the kernel datapath with real IPsec.

The tests marked ``kernel_lane`` run only where the lab can use Open vSwitch's kernel datapath
and kernel ESP (``OVSVNET_LAB_DATAPATH=system``, openvswitch.ko and esp4.ko loaded): inside
the qemu guest of ``ci/kernel-lane.sh``. Everywhere else (the normal suite on these
machines) they skip; unmarked ones (pure logic the lane's cases rest on) run everywhere.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ovsvnet.lab import Guest, Lab, LabHost, Segment, have_root_and_ovs, strongswan, wait_until
from ovsvnet.lab.strongswan import LabIpsec

LEVEL_IDS = {"none": 0x97, "auth": 0x98, "conf": 0x99}
#: The levels the world builds: all, or the comma-separated list in $OVSVNET_KL_LEVELS (the
#: reduced lane, ``OVSVNET_KERNEL_LANE_LEVELS=auth,conf bash ci/kernel-lane.sh``: each vnet
#: less saves about two minutes of world building under TCG). Tests of a level left out skip.
WORLD_LEVELS = tuple(lvl for lvl in LEVEL_IDS
                     if lvl in (os.environ.get("OVSVNET_KL_LEVELS") or ",".join(LEVEL_IDS))
                     .split(","))


def kernel_lane_reason() -> str | None:
    if os.environ.get("OVSVNET_LAB_DATAPATH") != "system":
        return "kernel lane only (OVSVNET_LAB_DATAPATH=system, run by ci/kernel-lane.sh)"
    if not have_root_and_ovs():
        return "needs root and Open vSwitch"
    return strongswan.usable()


def pytest_collection_modifyitems(config, items):
    reason = kernel_lane_reason()
    if reason:
        for item in items:
            # only the lane's own tests: test_agent_arming.py is pure logic, run everywhere
            if ("tests/kernel/" in str(item.fspath).replace(os.sep, "/")
                    and item.get_closest_marker("kernel_lane")):
                item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class World:
    lab: Lab
    seg: Segment
    h1: LabHost
    h2: LabHost
    ipsec: dict[str, LabIpsec]
    guests: dict[str, tuple[Guest, Guest]]  # level -> (on h1, on h2)
    mtu: dict[str, int]
    bridges: dict[str, str]  # level -> its vnet's bridge (ovsvnet's default name)
    tmp: Path


def _show(h: LabHost, vnet: str) -> dict:
    return json.loads(h.ovsvnet("show", vnet, "--json").stdout)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    reason = kernel_lane_reason()
    if reason:
        pytest.skip(reason)
    secret = secrets.token_bytes(32)
    started: list[LabIpsec] = []
    with Lab(prefix="klw" + secrets.token_hex(2), datapath_type="system") as lab:
        try:
            lab.add_segment("s1")
            h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
            ips = {}
            for h in (h1, h2):
                ips[h.name] = LabIpsec(h, secret)
                started.append(ips[h.name])
                ips[h.name].start()
            for h, other in ((h1, h2), (h2, h1)):
                for level in WORLD_LEVELS:
                    h.ovsvnet("create", "--id", f"{LEVEL_IDS[level]:x}", "--security", level)
                h.ovsvnet("peer-add", other.address)
            mtu, bridges = {}, {}
            for level in WORLD_LEVELS:
                vid = LEVEL_IDS[level]
                for h in (h1, h2):
                    shown = wait_until(
                        lambda h=h, vid=vid: (s := _show(h, f"{vid:x}"))["state"] == "active"
                        and s, timeout=60, what=f"{h.name}: vnet {vid:x} active")
                mtu[level] = int(shown["mtu"])
                bridges[level] = shown["bridge"]
            # secure tunnels are armed only once charon routed them (ops.secure_arming)
            for h, other in ((h1, h2), (h2, h1)):
                ips[h.name].arm(other.address, WORLD_LEVELS)
            guests = {}
            for level in WORLD_LEVELS:
                vid, br = LEVEL_IDS[level], bridges[level]
                g1 = lab.add_guest(f"{level[0]}1", "h1", br, ip=f"192.168.{vid}.1/24",
                                   mtu=mtu[level])
                g2 = lab.add_guest(f"{level[0]}2", "h2", br, ip=f"192.168.{vid}.2/24",
                                   mtu=mtu[level])
                guests[level] = (g1, g2)
            yield World(lab, lab.segment("s1"), h1, h2, ips, guests, mtu, bridges,
                        tmp_path_factory.mktemp("wire"))
        finally:
            for ip in started:
                try:
                    ip.stop()
                except Exception as err:
                    print(f"kernel lane: stopping {ip}: {err}")
            _keep_logs(lab)


def _keep_logs(lab: Lab) -> None:
    """Copy the hosts' daemon logs to $OVSVNET_KERNEL_LANE_OUT (the lane's results share)."""
    out = os.environ.get("OVSVNET_KERNEL_LANE_OUT")
    if not out:
        return
    for h in lab.hosts.values():
        for name in ("charon.log", "ovs-monitor-ipsec.log", "ovs-vswitchd.log", "agent.log"):
            src = h.dir / name
            if src.exists():
                shutil.copyfile(src, Path(out) / f"{lab.prefix}-{h.name}-{name}")
