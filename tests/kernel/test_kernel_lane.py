"""Kernel lane: ovsvnet on Open vSwitch's kernel datapath with real IPsec ESP.

Two simulated hosts (namespaces, each with its own ovsdb-server, ovs-vswitchd on its own
``ovs-system`` kernel datapath, ovs-monitor-ipsec and strongSwan charon), three vnets
(97 ``none``, 98 ``auth``, 99 ``conf``), one guest per vnet on each host. Frames on the
underlay are captured as raw bytes on a host's port of the segment's Linux bridge (a capture
of the bridge device itself misses forwarded unicast).

Runs in the qemu guest of ``ci/kernel-lane.sh`` only (see conftest.py); the order of the
tests matters: the last ones take SAs and IKE daemons down.
"""

from __future__ import annotations

import re
import secrets
import sys
import time

import pytest

from ovsvnet import ipsec as I
from ovsvnet.sandbox import tcp_transfer, wait_until
from tests.kernel import wire
from tests.kernel.conftest import LEVEL_IDS, World

LEVELS = ("none", "auth", "conf")
pytestmark = pytest.mark.kernel_lane


def _marker(level: str) -> bytes:
    return f"OVSVNET-KL-{level}-{secrets.token_hex(6)}".encode()


def _send_udp(g, dst: str, port: int, payload: bytes, count: int = 5) -> None:
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for _ in range({count}): s.sendto({payload!r}, ({dst!r}, {port}))\n")
    g.run(sys.executable, "-c", code)


def test_the_lab_runs_on_the_kernel_datapath(world: World) -> None:
    for h in (world.h1, world.h2):
        assert h.vsctl("get", "Bridge", "br-vnet", "datapath_type").strip() == "system"
        assert h.vsctl("get", "Bridge", "vnet0098", "datapath_type").strip() == "system"
        dps = h.appctl("dpif/show")
        assert re.search(r"^system@ovs-system:", dps, re.M), dps
        assert "netdev@" not in dps, dps
        status = h.ovsvnet("status", "--json").stdout
        assert '"ipsec"' in status or "IPsec available" in status, status


@pytest.mark.parametrize("level", LEVELS)
def test_guests_on_two_hosts_ping_and_carry_tcp(world: World, level: str) -> None:
    g1, g2 = world.guests[level]
    if not g1.ping(g2.addr, count=3, timeout=60):
        diag = "\n".join(ip.diagnostics() for ip in world.ipsec.values())
        print(f"KL diagnostics after a failed {level} ping:\n{diag}")
        raise AssertionError(f"{level}: no ping {g1.name} -> {g2.name}")
    assert g2.ping(g1.addr, count=3, timeout=30), f"{level}: no ping {g2.name} -> {g1.name}"
    n = 4_000_000
    got = tcp_transfer(g1, g2, nbytes=n, timeout=120, port=5201)
    assert got == n, f"{level}: TCP carried {got} of {n} bytes"
    # the largest datagram the MTU ovsvnet computed allows, unfragmented (DF)
    big = world.mtu[level] - 28
    r = g1.run("ping", "-n", "-c", "2", "-W", "5", "-M", "do", "-s", str(big), g2.addr,
               check=False, timeout=30)
    assert r.returncode == 0, f"{level}: {big}-byte ping at MTU {world.mtu[level]}: {r.stdout}"


@pytest.mark.parametrize("level", LEVELS)
def test_underlay_frames_match_the_level(world: World, level: str) -> None:
    g1, g2 = world.guests[level]
    h1, h2 = world.h1.address, world.h2.address
    assert g1.ping(g2.addr, count=1, timeout=60)  # SAs and neighbours up before capturing
    marker = _marker(level)
    count = 8
    with wire.pcap(world.seg.netns, world.h1.switch_port, world.tmp / f"{level}.pcap") as cap:
        _send_udp(g1, g2.addr, 7777, marker, count)
        assert g1.ping(g2.addr, count=2, timeout=30)
    frames = cap.between(h1, h2)
    with_marker = [f for f in frames if marker in f.data]
    esp = [f for f in frames if f.proto == wire.ESP]
    clear_tunnel = [f for f in frames if f.proto == wire.GRE
                    or (f.proto == wire.UDP and f.dport in (4789, 6081))]
    print(f"KL wire {level}: {len(frames)} frames h1<->h2: {len(esp)} ESP, "
          f"{len(clear_tunnel)} plaintext tunnel (VXLAN/Geneve/GRE), "
          f"{len(with_marker)} with the payload marker readable")
    if level == "none":
        vx = [f for f in with_marker if f.proto == wire.UDP and f.dport == 4789]
        assert len(vx) >= count, f"none: {len(vx)} VXLAN frames carry the marker: {frames}"
        assert not esp, f"none: ESP on the wire: {esp}"
        vni = LEVEL_IDS["none"]
        assert all(f.data[14 + 20 + 8 + 4:14 + 20 + 8 + 7] == vni.to_bytes(3, "big")
                   for f in vx), "none: VXLAN frames with another VNI"
    else:
        assert not clear_tunnel, f"{level}: plaintext tunnel frames: {clear_tunnel}"
        assert len(esp) >= count, f"{level}: only {len(esp)} ESP frames for {count} datagrams"
        if level == "auth":
            # integrity only (ESP null): the payload is readable inside ESP, never outside
            assert with_marker and all(f.proto == wire.ESP for f in with_marker), with_marker
        else:
            assert not with_marker, f"conf: payload readable on the wire: {with_marker}"


@pytest.mark.parametrize("level,encap", [("none", "vxlan"), ("auth", "geneve"),
                                         ("conf", "gre")])
def test_a_forged_plaintext_frame_reaches_a_guest_only_on_a_none_vnet(
        world: World, level: str, encap: str) -> None:
    """A stranger on the segment forges a tunnel frame from h2's address to h1, for the
    level's own tunnel type and vnet key, addressed to h1's guest. The ``none`` vnet (plain
    VXLAN, no integrity) delivers it: that proves the forgery is well formed. ``auth`` and
    ``conf`` must drop it (their tunnels accept only ESP)."""
    if "evil" not in world.lab.plain_hosts:
        world.lab.add_plain_host("evil", "s1")
    evil = world.lab.plain_host("evil")
    g1, g2 = world.guests[level]
    # Learned MACs (and SAs) up: the normal state. The forgery must be dropped even if the
    # SA is not up, so only the control (none) insists on it.
    up = g1.ping(g2.addr, count=1, timeout=60 if level == "none" else 20)
    assert up or level != "none", "none: the control vnet does not work"
    marker = _marker(f"forged-{level}")
    frame = wire.inner_frame(g1.mac, g2.mac, g2.addr, g1.addr, 7778, marker)
    vid = LEVEL_IDS[level]
    if encap == "vxlan":
        outer = wire.ipv4(world.h2.address, world.h1.address, wire.UDP,
                          wire.udp(50001, 4789, wire.vxlan(vid, frame)))
    elif encap == "geneve":
        outer = wire.ipv4(world.h2.address, world.h1.address, wire.UDP,
                          wire.udp(50001, 6081, wire.geneve(vid, frame)))
    else:
        outer = wire.ipv4(world.h2.address, world.h1.address, wire.GRE,
                          wire.gre_key(vid, frame))
    with wire.pcap(g1.netns, "eth0", world.tmp / f"forged-{level}.pcap",
                   "udp port 7778", settle=2) as inside, \
            wire.pcap(world.seg.netns, world.h1.switch_port,
                      world.tmp / f"forged-seg-{level}.pcap", "ip", settle=1) as seg:
        evil.run(sys.executable, "-c", wire.SEND_RAW, world.h1.address, "5",
                 input=outer.hex())
    sent = [f for f in seg.frames if marker in f.data]
    got = [f for f in inside.frames if marker in f.data]
    print(f"KL forged {level} ({encap}): {len(sent)} forged frames on the underlay, "
          f"{len(got)} reached guest {g1.name} (SA up before: {up})")
    assert len(sent) >= 5, f"the forged frames did not reach the underlay: {seg.frames}"
    if level == "none":
        assert got, "control failed: a forged VXLAN frame for the none vnet was not delivered"
    else:
        assert not got, f"{level}: a forged plaintext {encap} frame reached the guest"


def _conns_to(ips, peer: str) -> list[str]:
    out = ips.ipsec("status", check=False).stdout
    names = set(re.findall(r"^\s*(\S+?)(?:\{\d+\}|\[\d+\])?:", out, re.M))
    prefixes = tuple(I.port_name(lvl, peer) for lvl in ("auth", "conf"))
    return sorted(n for n in names if n.startswith(prefixes))


def test_a_tunnel_whose_sa_is_down_carries_nothing_in_clear(world: World) -> None:
    """h2's IKE daemon answers no more (its charon is stopped) and h1's SAs are torn down
    (``ipsec down``): h1's guests keep sending on the auth and conf vnets; nothing of it
    may leave h1 in clear (no Geneve, no GRE, no payload) while h1 cannot renegotiate."""
    h1, h2 = world.h1, world.h2
    ip1, ip2 = world.ipsec["h1"], world.ipsec["h2"]
    conns = _conns_to(ip1, h2.address)
    assert conns, ip1.ipsec("status", check=False).stdout
    ip2.ipsec("stop", check=False)
    wait_until(lambda: ip2.charon_pid() is None, timeout=60, what="h2's charon to stop")
    for c in conns:
        ip1.ipsec("down", c, check=False)
    wait_until(lambda: not re.search(r"proto esp spi 0x[0-9a-f]*[1-9a-f]",
                                     ip1.xfrm("state")),
               timeout=60, what="h1's ESP SAs to go")
    markers = {}
    with wire.pcap(world.seg.netns, h1.switch_port, world.tmp / "sa-down.pcap") as cap:
        for level in ("auth", "conf"):
            g1, g2 = world.guests[level]
            markers[level] = _marker(f"down-{level}")
            _send_udp(g1, g2.addr, 7779, markers[level], 5)
            assert not g1.ping(g2.addr, count=2, timeout=4)
    out = cap.sent_by(h1.address)
    clear = [f for f in out if f.proto == wire.GRE
             or (f.proto == wire.UDP and f.dport in (4789, 6081))
             or any(m in f.data for m in markers.values())]
    esp = [f for f in out if f.proto == wire.ESP]
    ike = [f for f in out if f.proto == wire.UDP and f.dport in (500, 4500)]
    print(f"KL sa-down: h1 sent {len(out)} frames: {len(clear)} in clear, {len(esp)} ESP, "
          f"{len(ike)} IKE (trying to renegotiate)")
    assert not clear, f"h1 sent tunnel traffic in clear while its SAs were down: {clear}"
    assert not esp, f"ESP without an SA? {esp}"


def test_a_host_whose_ike_daemon_is_stopped_sends_nothing_in_clear(world: World) -> None:
    """h2's charon was stopped by the previous test (its SAs *and* policies are gone, the
    plaintext shunt with them). h2's guests send on the auth and conf vnets: nothing may
    leave h2 in clear."""
    h1, h2 = world.h1, world.h2
    if world.ipsec["h2"].charon_pid() is not None:
        world.ipsec["h2"].ipsec("stop", check=False)
        wait_until(lambda: world.ipsec["h2"].charon_pid() is None, timeout=60,
                   what="h2's charon to stop")
    markers = {}
    with wire.pcap(world.seg.netns, h2.switch_port, world.tmp / "ike-down.pcap") as cap:
        for level in ("auth", "conf"):
            g1, g2 = world.guests[level]
            markers[level] = _marker(f"ike-down-{level}")
            _send_udp(g2, g1.addr, 7780, markers[level], 5)
            g2.ping(g1.addr, count=2, timeout=4)
    out = cap.sent_by(h2.address)
    clear = [f for f in out if f.proto == wire.GRE
             or (f.proto == wire.UDP and f.dport in (4789, 6081))
             or any(m in f.data for m in markers.values())]
    print(f"KL ike-down: h2 (charon stopped) sent {len(out)} frames, {len(clear)} in clear")
    status = h2.ovsvnet("show", "98", "--json", check=False).stdout
    print(f"KL ike-down: ovsvnet show 98 on h2: {status.strip()[:300]}")
    assert not clear, (f"h2 sent {len(clear)} tunnel frames in clear with its IKE daemon "
                       f"stopped: {clear[:4]}")
