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

import json
import re
import secrets
import subprocess
import sys
import time

import pytest

from ovsvnet import ipsec as I
from ovsvnet.lab import tcp_transfer, wait_until
from ovsvnet.system import xfrm as xfrm_guard
from tests.kernel import wire
from tests.kernel.conftest import LEVEL_IDS, World

LEVELS = ("none", "auth", "conf")
pytestmark = pytest.mark.kernel_lane


def _marker(level: str) -> bytes:
    return f"OVSVNET-KL-{level}-{secrets.token_hex(6)}".encode()


def _guests(world: World, level: str):
    """The (h1, h2) guests of a level, or skip when the reduced lane left the level out."""
    if level not in world.guests:
        pytest.skip(f"{level} is not in this run's world (OVSVNET_KL_LEVELS)")
    return world.guests[level]


def _send_udp(g, dst: str, port: int, payload: bytes, count: int = 5) -> None:
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for _ in range({count}): s.sendto({payload!r}, ({dst!r}, {port}))\n")
    g.run(sys.executable, "-c", code)


def test_the_lab_runs_on_the_kernel_datapath(world: World) -> None:
    for h in (world.h1, world.h2):
        assert h.vsctl("get", "Bridge", "br-vnet", "datapath_type").strip() == "system"
        for level in world.guests:
            br = f"vnet{LEVEL_IDS[level]:04x}"
            assert h.vsctl("get", "Bridge", br, "datapath_type").strip() == "system"
        dps = h.appctl("dpif/show")
        assert re.search(r"^system@ovs-system:", dps, re.M), dps
        assert "netdev@" not in dps, dps
        status = h.ovsvnet("status", "--json").stdout
        assert '"ipsec"' in status or "IPsec available" in status, status


@pytest.mark.parametrize("level", LEVELS)
def test_guests_on_two_hosts_ping_and_carry_tcp(world: World, level: str) -> None:
    g1, g2 = _guests(world, level)
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
    g1, g2 = _guests(world, level)
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
    g1, g2 = _guests(world, level)
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
            g1, g2 = _guests(world, level)
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


def _secure_levels(world: World) -> tuple[str, ...]:
    levels = tuple(lvl for lvl in ("auth", "conf") if lvl in world.guests)
    if not levels:
        pytest.skip("no secure level in this run's world")
    return levels


def _sent_in_clear(world: World, host, sender_index: int, tag: str) -> tuple[list, list]:
    """Each secure level's guest on ``host`` sends marked datagrams and pings across;
    returns (frames ``host`` put on the segment, those of them in clear)."""
    markers = {}
    with wire.pcap(world.seg.netns, host.switch_port, world.tmp / f"{tag}.pcap") as cap:
        for level in _secure_levels(world):
            pair = _guests(world, level)
            src, dst = pair[sender_index], pair[1 - sender_index]
            markers[level] = _marker(f"{tag}-{level}")
            _send_udp(src, dst.addr, 7780, markers[level], 5)
            src.ping(dst.addr, count=2, timeout=4)
    out = cap.sent_by(host.address)
    clear = [f for f in out if f.proto == wire.GRE
             or (f.proto == wire.UDP and f.dport in (4789, 6081))
             or any(m in f.data for m in markers.values())]
    return out, clear


def _armed_ports(h) -> set[str]:
    """Secure tunnel ports of ``h`` that have a table-0 flow (armed)."""
    flows = h.ofctl("--names", "dump-flows", "br-vnet", "table=0")
    return set(re.findall(r"in_port=\"?((?:gn|gr)-[0-9a-f]+)", flows))


def test_a_host_whose_ike_daemon_is_stopped_sends_nothing_in_clear(world: World) -> None:
    """h2's charon was stopped by the previous test: its SAs *and* every xfrm policy it
    installed are gone, the monitor's plaintext shunts with them. No ovsvnet pass ran since
    (the secure tunnels are still armed): ovsvnet's own guard policies (ovsvnet.xfrm_guard)
    must keep every secure tunnel frame from leaving h2 in clear."""
    h2 = world.h2
    ip2 = world.ipsec["h2"]
    if ip2.charon_pid() is not None:
        ip2.ipsec("stop", check=False)
        wait_until(lambda: ip2.charon_pid() is None, timeout=60, what="h2's charon to stop")
    policies = ip2.xfrm("policy")
    print(f"KL ike-down: h2's xfrm policies with charon stopped:\n{policies}")
    assert xfrm_guard.complete(policies), f"h2: ovsvnet's guard is not in place: {policies}"
    armed = _armed_ports(h2)
    out, clear = _sent_in_clear(world, h2, 1, "ike-down")
    print(f"KL ike-down: h2 (charon stopped, tunnels still armed: {sorted(armed)}) sent "
          f"{len(out)} frames, {len(clear)} in clear")
    assert not clear, (f"h2 sent {len(clear)} tunnel frames in clear with its IKE daemon "
                       f"stopped: {clear[:4]}")


def test_ovsvnet_disarms_secure_tunnels_whose_policies_are_gone(world: World) -> None:
    """The next ovsvnet pass (the agent's periodic check, here ``ovsvnet sync``) sees the
    ESP policies gone and disarms h2's secure tunnels: no flows send to them or accept from
    them; still nothing leaves in clear; the none vnet (if built) is untouched."""
    h2 = world.h2
    assert world.ipsec["h2"].charon_pid() is None, "h2's charon should still be stopped"
    before = _armed_ports(h2)
    h2.ovsvnet("sync")
    after = _armed_ports(h2)
    print(f"KL disarm: h2's armed secure tunnels before sync {sorted(before)}, "
          f"after {sorted(after)}")
    assert not after, f"h2 keeps secure tunnels armed without IPsec policies: {after}"
    out, clear = _sent_in_clear(world, h2, 1, "disarmed")
    print(f"KL disarm: h2 sent {len(out)} frames, {len(clear)} in clear")
    assert not clear, f"h2 sent tunnel frames in clear: {clear[:4]}"
    if "none" in world.guests:
        g1, g2 = world.guests["none"]
        assert g2.ping(g1.addr, count=2, timeout=30), "the none vnet stopped working"


def test_after_the_ike_daemon_restarts_sas_and_traffic_come_back(world: World) -> None:
    """Start h2's charon again (it reads the monitor's ipsec.conf: conns routed, policies
    back), one ovsvnet pass re-arms the tunnels, and the secure vnets carry traffic as ESP
    again, the conf payload unreadable."""
    h1, h2 = world.h1, world.h2
    ip1, ip2 = world.ipsec["h1"], world.ipsec["h2"]
    ip2.ipsec("start", check=False)
    wait_until(ip2.charon_pid, timeout=120, what="h2's charon to start again")
    levels = _secure_levels(world)
    ip2.arm(h1.address, levels)
    ip1.arm(h2.address, levels)
    assert _armed_ports(h2), "h2's secure tunnels were not re-armed"
    for level in levels:
        g1, g2 = _guests(world, level)
        if not g2.ping(g1.addr, count=3, timeout=90):
            diag = "\n".join(ip.diagnostics() for ip in world.ipsec.values())
            print(f"KL diagnostics after a failed {level} ping (charon restarted):\n{diag}")
            raise AssertionError(f"{level}: no traffic after h2's charon restarted")
    markers = {}
    with wire.pcap(world.seg.netns, h2.switch_port, world.tmp / "restarted.pcap") as cap:
        for level in levels:
            g1, g2 = _guests(world, level)
            markers[level] = _marker(f"restart-{level}")
            _send_udp(g2, g1.addr, 7781, markers[level], 5)
            assert g2.ping(g1.addr, count=2, timeout=30)
    frames = cap.between(h1.address, h2.address)
    esp = [f for f in frames if f.proto == wire.ESP]
    clear = [f for f in frames if f.proto == wire.GRE
             or (f.proto == wire.UDP and f.dport in (4789, 6081))]
    readable = {lvl: [f for f in frames if m in f.data] for lvl, m in markers.items()}
    print(f"KL restart: {len(frames)} frames h1<->h2: {len(esp)} ESP, {len(clear)} "
          f"plaintext tunnel, payload readable: "
          f"{ {lvl: len(v) for lvl, v in readable.items()} }; "
          f"SAs h1 {ip1.established()}, h2 {ip2.established()}")
    assert not clear, f"plaintext tunnel frames after the restart: {clear[:4]}"
    assert len(esp) >= 5 * len(levels), f"only {len(esp)} ESP frames"
    if "conf" in readable:
        assert not readable["conf"], "conf: payload readable on the wire after the restart"
    if "auth" in readable:
        assert all(f.proto == wire.ESP for f in readable["auth"]), readable["auth"]


def test_the_agent_disarms_and_rearms_secure_tunnels_by_itself(world: World) -> None:
    """With ``ovsvnet agent`` running on h2, stopping h2's charon disarms h2's secure
    tunnels within a few canary intervals and nothing leaves in clear; starting charon again
    re-arms them and traffic comes back, with no command from anyone."""
    h2 = world.h2
    ip2 = world.ipsec["h2"]
    levels = _secure_levels(world)
    log = open(h2.dir / "agent.log", "a")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", h2.netns, sys.executable, "-m", "ovsvnet", "--db", h2.db,
         "agent", "--pidfile", str(h2.dir / "agent.pid"),
         "--key-file", str(h2.discovery_key())],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=h2.env)
    try:
        wait_until(lambda: json.loads(h2.ovsvnet("status", "--json").stdout).get("agent"),
                   timeout=120, what="h2's agent")
        wait_until(lambda: _armed_ports(h2), timeout=60, what="h2's tunnels armed")
        ip2.ipsec("stop", check=False)
        t0 = time.monotonic()
        wait_until(lambda: ip2.charon_pid() is None, timeout=60, what="h2's charon to stop")
        wait_until(lambda: not _armed_ports(h2), timeout=90, what="the agent to disarm")
        disarm = time.monotonic() - t0
        out, clear = _sent_in_clear(world, h2, 1, "agent-disarmed")
        print(f"KL agent: charon stopped -> secure tunnels disarmed after {disarm:.1f}s; "
              f"h2 then sent {len(out)} frames, {len(clear)} in clear")
        assert not clear, f"h2 sent tunnel frames in clear: {clear[:4]}"
        ip2.ipsec("start", check=False)
        t0 = time.monotonic()
        wait_until(lambda: _armed_ports(h2), timeout=180, what="the agent to re-arm")
        rearm = time.monotonic() - t0
        for level in levels:
            g1, g2 = _guests(world, level)
            assert g2.ping(g1.addr, count=3, timeout=90), f"{level}: no traffic after re-arm"
        print(f"KL agent: charon started -> re-armed after {rearm:.1f}s, "
              f"{'/'.join(levels)} ping again")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        with open(h2.dir / "agent.log", errors="replace") as f:
            lines = [ln for ln in f if "armed" in ln or "sync" in ln]
        print("KL agent log (armed/sync lines):\n" + "".join(lines[-12:]))
