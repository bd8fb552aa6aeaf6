"""The data plane with real packets: 3 hosts on 2 segments, vnet 97 on all, vnet 98 on two.

    segment s1: h1, h2, k (plain Linux, kernel VXLAN), rogue (plain Linux, not a peer)
    segment s2: h3                          s1 and s2 joined by router r

Guests a1/a2/a3 are on vnet 97; b1/b2 are on vnet 98 with the *same* MACs and IPs as a1/a2,
so any leak between the vnets would show up as a frame in the wrong guest.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from ovsvnet.flows import MOVE_LOCK
from ovsvnet.lab import Lab, capture, tcp_transfer, wait_until

from .helpers import flow_dump, ovsvnet, send_udp

pytestmark = pytest.mark.root

MAC = {"1": "02:00:00:00:97:01", "2": "02:00:00:00:97:02", "3": "02:00:00:00:97:03"}


@pytest.fixture(scope="module")
def net():
    with Lab() as lab:
        lab.add_segment("s1")
        lab.add_segment("s2")
        lab.add_router("r", ["s1", "s2"])
        hosts = [lab.add_host("h1", "s1"), lab.add_host("h2", "s1"), lab.add_host("h3", "s2")]
        for h in hosts:
            ovsvnet(h, "create", "--id", "97")
            for other in hosts:
                if other is not h:
                    ovsvnet(h, "peer-add", other.address)
        for h in hosts[:2]:
            ovsvnet(h, "create", "--id", "98")
        mtu = json.loads(ovsvnet(hosts[0], "show", "97", "--json").stdout)["mtu"]
        assert mtu == 1450
        for n, h in zip("123", hosts):
            lab.add_guest(f"a{n}", h.name, "vnet-0097", ip=f"192.168.97.{n}/24", mac=MAC[n],
                          mtu=mtu)
        for n, h in zip("12", hosts[:2]):
            lab.add_guest(f"b{n}", h.name, "vnet-0098", ip=f"192.168.97.{n}/24", mac=MAC[n],
                          mtu=mtu)
        yield lab


def test_every_pair_of_guests_pings_and_carries_tcp(net):
    a = [net.guest(f"a{n}") for n in "123"]
    for i, src in enumerate(a):
        for dst in a[i + 1:]:
            assert src.ping(dst.addr, count=3, timeout=10), f"{src.name} -> {dst.name}"
            assert tcp_transfer(src, dst, nbytes=1_000_000, timeout=30) == 1_000_000, \
                f"TCP {src.name} -> {dst.name}"
    assert net.guest("b1").ping("192.168.97.2", count=3, timeout=10)


def test_learned_addresses_and_vifs_are_shown(net):
    a1, a2 = net.guest("a1"), net.guest("a2")
    assert a1.ping(a2.addr, count=1, timeout=10)
    h1 = net.host("h1")
    varp = json.loads(ovsvnet(h1, "varp", "97", "--json").stdout)
    assert {"vnet": "0097", "mac": a2.mac, "peer": net.host("h2").address} in [
        {k: r[k] for k in ("vnet", "mac", "peer")} for r in varp]
    vifs = json.loads(ovsvnet(h1, "vifs", "--json").stdout)
    assert {(v["vnet"], v["port"]) for v in vifs} == {("0097", a1.port), ("0098",
                                                        net.guest("b1").port)}
    ovsvnet(h1, "varp-flush", "97")
    assert json.loads(ovsvnet(h1, "varp", "97", "--json").stdout) == []


def test_vnets_with_identical_addresses_never_see_each_other(net):
    a1, a2, a3, b1, b2 = (net.guest(n) for n in ("a1", "a2", "a3", "b1", "b2"))
    with capture(b2, "eth0", "udp port 9097", timeout=8, settle=1.5) as leak98, \
            capture(a2, "eth0", "udp port 9097", timeout=8, settle=1.5) as seen97:
        send_udp(a1, "192.168.97.255", 9097, "vnet97 broadcast", broadcast=True)
        send_udp(a1, a2.addr, 9097, "vnet97 unicast")
    assert seen97.count == 2, seen97.lines
    assert leak98.count == 0, leak98.lines
    with capture(a2, "eth0", "udp port 9098", timeout=8, settle=1.5) as leak97a, \
            capture(a3, "eth0", "udp port 9098", timeout=8, settle=1.5) as leak97b, \
            capture(b2, "eth0", "udp port 9098", timeout=8, settle=1.5) as seen98:
        send_udp(b1, "192.168.97.255", 9098, "vnet98 broadcast", broadcast=True)
        send_udp(b1, b2.addr, 9098, "vnet98 unicast")
    assert seen98.count == 2, seen98.lines
    assert leak97a.count == 0 and leak97b.count == 0, leak97a.lines + leak97b.lines


def test_one_broadcast_arrives_exactly_once_everywhere(net):
    a1, a2, a3 = (net.guest(n) for n in ("a1", "a2", "a3"))
    with capture(a2, "eth0", "udp port 9100", timeout=8, settle=2) as c2, \
            capture(a3, "eth0", "udp port 9100", timeout=8, settle=2) as c3, \
            capture(a1, "eth0", "udp port 9100", timeout=8, settle=2) as c1:
        send_udp(a1, "192.168.97.255", 9100, "one broadcast", broadcast=True)
    assert (c1.count, c2.count, c3.count) == (1, 1, 1), (c1.lines, c2.lines, c3.lines)


def _plain_vxlan(host, name, vni, remote, ip, local):
    host.run("ip", "link", "add", name, "type", "vxlan", "id", str(vni), "remote", remote,
             "local", local, "dstport", "4789", "nolearning")
    host.run("ip", "link", "set", name, "mtu", "1450", "up")
    host.run("ip", "addr", "add", ip, "dev", name)


def test_kernel_vxlan_peer_interoperates(net):
    """A plain Linux host with kernel VXLAN (VNI = vnet id) as a static peer of h1."""
    h1, a1 = net.host("h1"), net.guest("a1")
    k = net.add_plain_host("k", "s1")
    _plain_vxlan(k, "vx97", 0x97, h1.address, "192.168.97.50/24", k.address)
    ovsvnet(h1, "peer-add", k.address)
    try:
        with capture(k, "eth0", "udp port 4789", timeout=10, settle=1, extra=("-v",)) as wire:
            assert k.run("ping", "-n", "-c", "3", "-i", "0.2", "-w", "10",
                         a1.addr, check=False).returncode == 0
        assert any(re.search(r"VXLAN.*vni 151\b", line) for line in wire.lines), wire.lines
    finally:
        ovsvnet(h1, "peer-delete", k.address)


def test_unknown_keys_and_strangers_are_dropped(net):
    h1, a1 = net.host("h1"), net.guest("a1")
    k = net.plain_hosts.get("k") or net.add_plain_host("k", "s1")
    rogue = net.add_plain_host("rogue", "s1")
    # a peer sending a key no vnet uses, and a stranger sending vnet 97's key
    ovsvnet(h1, "peer-add", k.address)
    try:
        _plain_vxlan(k, "vx55", 0x55, h1.address, "192.168.55.50/24", k.address)
        _plain_vxlan(rogue, "vx97", 0x97, h1.address, "192.168.97.66/24", rogue.address)
        unknown_key = [l for l in flow_dump(h1, "br-vnet")
                       if "table=10" in l and "priority=0" in l]
        assert unknown_key
        before = _packets(h1, "table=10", "priority=0 ")
        with capture(a1, "eth0", "udp port 9200", timeout=8, settle=1.5) as seen:
            send_udp(k, "192.168.55.255", 9200, "wrong key", count=3, broadcast=True)
            send_udp(rogue, "192.168.97.255", 9200, "not a peer", count=3, broadcast=True)
        assert seen.count == 0, seen.lines
        assert _packets(h1, "table=10", "priority=0 ") >= before + 3
    finally:
        ovsvnet(h1, "peer-delete", k.address)


def _packets(host, table, priority):
    out = host.run("ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-vnet", table).stdout
    for line in out.splitlines():
        if priority in line.replace(",", " ") + " ":
            return int(re.search(r"n_packets=(\d+)", line).group(1))
    raise AssertionError(f"no {table} {priority} flow in {out}")


def test_mtu_reported_carries_full_size_frames_unfragmented(net):
    a1, a2 = net.guest("a1"), net.guest("a2")
    h2 = net.host("h2")
    # a full 1450-byte IP packet with DF crosses; one byte more does not leave the guest
    assert a1.run("ping", "-n", "-M", "do", "-s", "1422", "-c", "2", "-w", "10",
                  a2.addr, check=False).returncode == 0
    with capture(h2, "eth0", "ip[6:2] & 0x3fff != 0", timeout=40, settle=0.5) as frags:
        assert tcp_transfer(a1, a2, nbytes=2_000_000, timeout=30) == 2_000_000
    assert frags.count == 0, frags.lines
    # control: guests that ignore the MTU lose their full-size frames on the underlay
    c1 = net.add_guest("c1", "h1", "vnet-0097", ip="192.168.97.11/24", mtu=1500)
    c2 = net.add_guest("c2", "h2", "vnet-0097", ip="192.168.97.12/24", mtu=1500)
    try:
        assert c1.ping(c2.addr, count=2, timeout=10)
        assert c1.run("ping", "-n", "-M", "do", "-s", "1472", "-c", "2", "-w", "4",
                      c2.addr, check=False).returncode != 0
    finally:
        net.remove_guest("c1")
        net.remove_guest("c2")


def test_migrated_guest_is_reachable_again_at_once(net, record_property):
    a1 = net.guest("a1")
    assert a1.ping(net.guest("a3").addr, count=2, timeout=10)  # h1 has learned a3 -> h3
    a3 = net.move_guest("a3", "h2")
    start = time.monotonic()
    a3.announce()
    ok = wait_until(lambda: a1.run("ping", "-n", "-c", "1", "-W", "1", a3.addr,
                                   check=False).returncode == 0,
                    timeout=20, what="a3 to answer from h2")
    elapsed = time.monotonic() - start
    record_property("migration_seconds", round(elapsed, 3))
    print(f"\nmigration: a3 reachable from h1 {elapsed:.2f}s after its gratuitous ARP on h2")
    assert ok and elapsed < 5, elapsed
    h1_varp = json.loads(ovsvnet(net.host("h1"), "varp", "97", "--json").stdout)
    assert {(r["mac"], r["peer"]) for r in h1_varp} >= {(a3.mac, net.host("h2").address)}
    # after the move lock expires the ordinary entry must be right too: no loss past it
    pings = int((MOVE_LOCK + 2) / 0.5)
    proc = a1.run("ping", "-n", "-q", "-c", str(pings), "-i", "0.5", "-W", "1", a3.addr,
                  check=False, timeout=MOVE_LOCK + 20)
    assert f"{pings} received" in proc.stdout, proc.stdout
    net.move_guest("a3", "h3")
    net.guest("a3").announce()


def test_vswitchd_restart_then_sync_restores_traffic_and_sync_is_idempotent(net):
    a1, a2 = net.guest("a1"), net.guest("a2")
    h2 = net.host("h2")
    assert a1.ping(a2.addr, count=1, timeout=10)
    h2.restart_vswitchd()
    assert not [l for l in flow_dump(h2, "br-vnet") if "table=200" in l], "canary survived?"
    assert not a1.ping(a2.addr, count=1, timeout=2), "traffic without flows?"
    ovsvnet(h2, "sync")
    assert a1.ping(a2.addr, count=3, timeout=15)
    before = {br: flow_dump(h2, br) for br in ("br-vnet", "vnet-0097", "vnet-0098")}
    out = ovsvnet(h2, "sync", "-v").stdout
    assert "flows: 0 changed" in out, out
    ovsvnet(h2, "sync")
    after = {br: flow_dump(h2, br) for br in before}
    static = {br: [l for l in lines if "0x6f7604" not in l.split()[0]]
              for br, lines in before.items()}
    assert static == {br: [l for l in lines if "0x6f7604" not in l.split()[0]]
                      for br, lines in after.items()}
