"""Isolation and robustness at the host's edge, with real agents and real frames (issue 14):
a peer enters only the vnets it carries; one bad peer never blocks the good ones; hosts
without a system-id get their own, and a clash of ids is reported on both sides."""

from __future__ import annotations

import json
import time

import pytest

from ovsvnet.lab import capture, wait_until

from .helpers import flow_dump, ovsvnet
from .test_agent import lab_with_agents, status, tunnels

pytestmark = pytest.mark.root


def _drops(host, table: str) -> int:
    """Packets the default drop of a transport table has counted."""
    out = host.ofctl("-O", "OpenFlow15", "dump-flows", "br-vnet", f"table={table}")
    return sum(int(part.split("=")[1].rstrip(",")) for line in out.splitlines()
               if "priority=0 " in line for part in line.split() if
               part.startswith("n_packets="))


def test_a_peer_enters_only_the_vnets_it_carries():
    """h2 carries vnet 97 only. Frames it sends with vnet 98's key (kernel VXLAN from its
    own tunnel address: everything table 0 checks is right) reach no guest of h1's vnet 98;
    the same frames with 97's key do reach vnet 97."""
    with lab_with_agents("s1") as (lab, agents):
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        ovsvnet(h1, "create", "--id", "97")
        ovsvnet(h1, "create", "--id", "98")
        ovsvnet(h2, "create", "--id", "97")
        for h in (h1, h2):
            agents.start(h)
        assert wait_until(lambda: tunnels(h1) == {h2.address}, timeout=15, what="tunnel")
        g97 = lab.add_guest("g97", "h1", "vnet-0097", ip="192.168.97.1/24", mtu=1450)
        g98 = lab.add_guest("g98", "h1", "vnet-0098", ip="192.168.98.1/24", mtu=1450)
        o97 = lab.add_guest("o97", "h2", "vnet-0097", ip="192.168.97.2/24", mtu=1450)
        assert o97.ping(g97.addr, count=2, timeout=10)
        for vni, name, ip in ((0x98, "x98", "192.168.98.66/24"),
                              (0x97, "x97", "192.168.97.66/24")):
            h2.run("ip", "link", "add", name, "type", "vxlan", "id", str(vni), "remote",
                   h1.address, "local", h2.address, "dstport", "4789", "nolearning")
            h2.run("ip", "link", "set", name, "mtu", "1450", "up")
            h2.run("ip", "addr", "add", ip, "dev", name)
        drops_before = _drops(h1, "10")
        with capture(g98, "eth0", "arp or icmp", timeout=8, settle=3) as into98:
            h2.run("ping", "-n", "-c", "5", "-i", "0.2", "-w", "3", "-I", "x98", g98.addr,
                   check=False)
        assert into98.lines == [], into98.lines
        assert _drops(h1, "10") >= drops_before + 3, flow_dump(h1, "br-vnet")
        # the control: the same kind of frame for a vnet h2 carries is delivered (the
        # replies go to h2's OVS, which owns the tunnel endpoint, not to the kernel VXLAN)
        with capture(g97, "eth0", "arp and host 192.168.97.66", timeout=8, settle=3) as into97:
            h2.run("ping", "-n", "-c", "5", "-i", "0.2", "-w", "3", "-I", "x97", g97.addr,
                   check=False)
        assert len(into97.lines) >= 3, into97.lines
        assert o97.ping(g97.addr, count=2, timeout=10)


def test_a_bad_peer_beside_good_ones_blocks_nothing():
    with lab_with_agents("s1") as (lab, agents):
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h in (h1, h2):
            ovsvnet(h, "create", "--id", "97")
        ovsvnet(h2, "peer-add", h1.address)
        # what a hand edit, a broken tool or an old version can leave in OVSDB
        h1.vsctl("set", "Open_vSwitch", ".", "external_ids:ovsvnet-peer-not-an-ip=4789",
                 "external_ids:ovsvnet-peer-127.0.0.1=4789",
                 f"external_ids:ovsvnet-peer-{h2.address}=4789",
                 "external_ids:ovsvnet-peer-10.77.1.99=99999")
        proc = ovsvnet(h1, "sync")
        assert "peer 127.0.0.1 has no tunnel" not in proc.stdout
        for bad in ("ovsvnet-peer-not-an-ip", "ovsvnet-peer-127.0.0.1",
                    "ovsvnet-peer-10.77.1.99"):
            assert bad in proc.stderr, proc.stderr
        assert tunnels(h1) == {h2.address}
        g1 = lab.add_guest("g1", "h1", "vnet-0097", ip="192.168.97.1/24", mtu=1450)
        g2 = lab.add_guest("g2", "h2", "vnet-0097", ip="192.168.97.2/24", mtu=1450)
        assert g1.ping(g2.addr, count=2, timeout=10)
        # the agent: the same pass gives the good peer its tunnel and shows the bad ones
        agents.start(h1)
        agent = wait_until(lambda: (status(h1).get("agent") or {}).get("rejected_peers"),
                           timeout=10, what="the agent to report the bad peers")
        assert set(agent) >= {"ovsvnet-peer-not-an-ip", "ovsvnet-peer-127.0.0.1"}, agent
        assert status(h1)["agent"]["sync_errors"] == 0
        assert g1.ping(g2.addr, count=2, timeout=10)
        doctor = json.loads(ovsvnet(h1, "doctor", "--no-probe", "--json", rc=0).stdout)
        finding = {f["check"]: f for f in doctor["findings"]}["agent"]
        assert finding["status"] == "WARN" and "127.0.0.1" in finding["message"]


def test_hosts_without_a_system_id_get_their_own_and_a_clash_is_reported():
    with lab_with_agents("s1") as (lab, agents):
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h in (h1, h2):
            # cloned images: no system-id, the same host name (namespaces share it anyway)
            h.vsctl("remove", "Open_vSwitch", ".", "external_ids", "system-id")
            h.vsctl("set", "Open_vSwitch", ".", 'external_ids:hostname="clone"')
            ovsvnet(h, "create", "--id", "97")
            agents.start(h)
        assert wait_until(lambda: tunnels(h1) == {h2.address} and tunnels(h2) ==
                          {h1.address}, timeout=15, what="tunnels between the clones")
        ids = {h.vsctl("get", "Open_vSwitch", ".", "external_ids:system-id").strip()
               for h in (h1, h2)}
        assert len(ids) == 2, ids  # each made and stored its own
        # now a real clash: both claim one id
        for h in (h1, h2):
            agents.stop(h)
            h.vsctl("set", "Open_vSwitch", ".", 'external_ids:system-id="same-id"')
            agents.start(h)
        for h in (h1, h2):
            clash = wait_until(lambda h=h: (status(h).get("agent") or {}).get("id_clashes"),
                               timeout=10, what=f"{h.name} to report the clash")
            other = h2 if h is h1 else h1
            assert clash == [other.address]
            out = ovsvnet(h, "status").stdout
            assert "SYSTEM-ID CLASH" in out and other.address in out
        time.sleep(1)
        assert "system-id-clash" in (h1.dir / "agent.log").read_text()
