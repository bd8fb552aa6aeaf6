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

import contextlib
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ovsvnet import ipsec as I
from ovsvnet.agent import control
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
            br = world.bridges[level]
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


def _secure_levels(world: World) -> tuple[str, ...]:
    levels = tuple(lvl for lvl in ("auth", "conf") if lvl in world.guests)
    if not levels:
        pytest.skip("no secure level in this run's world")
    return levels


# -- offered traffic: a "nothing in clear" check proves nothing if nothing was sent ----------

#: Marked datagrams each sending guest offers per level (pings come on top).
OFFERED = 5
#: The host's XFRM counters that count a dropped outgoing packet: the guard's (or any) block
#: policy, and an ESP policy whose SA is missing (charon still routes the conn, no SA).
XFRM_DROPS = ("XfrmOutPolBlock", "XfrmOutNoStates")


def _xfrm_stat(h) -> dict[str, int]:
    """``/proc/net/xfrm_stat`` of the host's namespace (the counters are per namespace)."""
    text = h.run("cat", "/proc/net/xfrm_stat").stdout
    return {k: int(v) for k, v in (ln.split() for ln in text.splitlines() if ln.strip())}


def _port_packets(h, bridge: str, port: str) -> tuple[int, int]:
    """(rx, tx) packets of an OpenFlow port. A tunnel port's count is what OVS sent to it,
    whatever the kernel then did with it; ``revalidator/wait`` first, so the datapath's
    flow statistics have been credited to the ports."""
    out = h.ofctl("dump-ports", bridge, port)
    rx, tx = re.search(r"rx pkts=(\d+)", out), re.search(r"tx pkts=(\d+)", out)
    assert rx and tx, f"{h.name}: ovs-ofctl dump-ports {bridge} {port}: {out}"
    return int(rx.group(1)), int(tx.group(1))


def _guest_tx(g) -> int:
    return int(g.run("cat", "/sys/class/net/eth0/statistics/tx_packets").stdout)


@dataclass
class Offered:
    """One burst from a host's secure-level guests toward the other host, and its fate."""

    frames: list  # IP frames the host put on the segment
    clear: list  # those of them in clear: a plaintext tunnel header or a payload marker
    guest_tx: dict[str, int] = field(default_factory=dict)  # level -> sent by the guest
    ovs_rx: dict[str, int] = field(default_factory=dict)  # level -> taken in by OVS
    tunnel_tx: dict[str, int] = field(default_factory=dict)  # level -> OVS gave the tunnel
    xfrm: dict[str, int] = field(default_factory=dict)  # XFRM_DROPS growth on the host

    def __str__(self) -> str:
        per = ", ".join(f"{lvl}: guest sent {self.guest_tx[lvl]}, OVS took "
                        f"{self.ovs_rx[lvl]}, tunnel port got {self.tunnel_tx[lvl]}"
                        for lvl in self.guest_tx)
        drops = ", ".join(f"{k} +{v}" for k, v in self.xfrm.items())
        return (f"{per}; XFRM drops {drops}; on the wire {len(self.frames)} frames, "
                f"{len(self.clear)} in clear")

    def assert_stopped(self, by: str) -> None:
        """Traffic was offered and none of it left in clear. ``by="xfrm"``: the secure
        tunnels are armed, so OVS sent the frames to them and the kernel's XFRM dropped
        each one; ``by="flows"``: disarmed, OVS dropped them before any tunnel."""
        for lvl in self.guest_tx:
            assert self.guest_tx[lvl] >= OFFERED, f"{lvl}: the guest sent nothing: {self}"
            assert self.ovs_rx[lvl] >= OFFERED, f"{lvl}: OVS received nothing: {self}"
            if by == "xfrm":
                assert self.tunnel_tx[lvl] >= OFFERED, f"{lvl}: nothing reached the tunnel: {self}"
            else:
                assert self.tunnel_tx[lvl] == 0, f"{lvl}: a disarmed tunnel got frames: {self}"
        dropped = sum(self.xfrm.values())
        if by == "xfrm":
            assert dropped >= sum(self.tunnel_tx.values()), f"XFRM did not drop them: {self}"
        assert not self.clear, f"{len(self.clear)} frames in clear {self.clear[:4]}: {self}"


def _offer(world: World, host, sender_index: int, tag: str) -> Offered:
    """Each secure level's guest on ``host`` sends OFFERED marked datagrams and pings to its
    peer on the other host. The sender has a permanent neighbour entry for the peer, so the
    marked datagrams themselves leave the guest (an unanswered ARP would hold them back and
    only ARP requests would be offered). Counters are read before and after."""
    other = world.h1 if host is world.h2 else world.h2
    levels = _secure_levels(world)
    pairs = {lvl: _guests(world, lvl) for lvl in levels}
    senders = {lvl: (p[sender_index], p[1 - sender_index]) for lvl, p in pairs.items()}
    tunnels = {lvl: I.port_name(lvl, other.address) for lvl in levels}

    def snapshot() -> tuple[dict, dict, dict, dict]:
        host.appctl("revalidator/wait")
        return ({lvl: _guest_tx(src) for lvl, (src, _) in senders.items()},
                {lvl: _port_packets(host, src.bridge, src.port)[0]
                 for lvl, (src, _) in senders.items()},
                {lvl: _port_packets(host, "br-vnet", tunnels[lvl])[1] for lvl in levels},
                _xfrm_stat(host))

    for src, dst in senders.values():
        src.run("ip", "neigh", "replace", dst.addr, "lladdr", dst.mac, "dev", "eth0",
                "nud", "permanent")
    markers = {}
    try:
        before = snapshot()
        with wire.pcap(world.seg.netns, host.switch_port, world.tmp / f"{tag}.pcap") as cap:
            for lvl, (src, dst) in senders.items():
                markers[lvl] = _marker(f"{tag}-{lvl}")
                _send_udp(src, dst.addr, 7780, markers[lvl], OFFERED)
                src.ping(dst.addr, count=2, timeout=4)
        after = snapshot()
    finally:
        for src, dst in senders.values():
            src.run("ip", "neigh", "del", dst.addr, "dev", "eth0", check=False)
    out = cap.sent_by(host.address)
    clear = [f for f in out if f.proto == wire.GRE
             or (f.proto == wire.UDP and f.dport in (4789, 6081))
             or any(m in f.data for m in markers.values())]
    diff = [{k: a[k] - b.get(k, 0) for k in a} for a, b in zip(after, before)]
    return Offered(out, clear, diff[0], diff[1], diff[2],
                   {k: diff[3].get(k, 0) for k in XFRM_DROPS})


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
    offered = _offer(world, h1, 0, "sa-down")
    esp = [f for f in offered.frames if f.proto == wire.ESP]
    ike = [f for f in offered.frames if f.proto == wire.UDP and f.dport in (500, 4500)]
    print(f"KL sa-down: h1 (SAs down) {offered}: {len(esp)} ESP, {len(ike)} IKE "
          f"(trying to renegotiate)")
    offered.assert_stopped("xfrm")
    assert not esp, f"ESP without an SA? {esp}"


def _armed_ports(h) -> set[str]:
    """Secure tunnel ports of ``h`` that have a table-0 flow (armed)."""
    flows = h.ofctl("--names", "dump-flows", "br-vnet", "table=0")
    return set(re.findall(r"in_port=\"?((?:gn|gr)-[0-9a-f]+)", flows))


def test_a_host_whose_ike_daemon_is_stopped_sends_nothing_in_clear(world: World) -> None:
    """h2's charon was stopped by the previous test: its SAs *and* every xfrm policy it
    installed are gone, the monitor's plaintext shunts with them. No ovsvnet pass ran since
    (the secure tunnels are still armed): ovsvnet's own guard policies (ovsvnet.xfrm_guard)
    must drop every secure tunnel frame OVS hands the kernel, none may leave h2 in clear."""
    h2 = world.h2
    ip2 = world.ipsec["h2"]
    if ip2.charon_pid() is not None:
        ip2.ipsec("stop", check=False)
        wait_until(lambda: ip2.charon_pid() is None, timeout=60, what="h2's charon to stop")
    policies = ip2.xfrm("policy")
    print(f"KL ike-down: h2's xfrm policies with charon stopped:\n{policies}")
    assert xfrm_guard.complete(policies), f"h2: ovsvnet's guard is not in place: {policies}"
    armed = _armed_ports(h2)
    assert armed, "h2's secure tunnels should still be armed (no ovsvnet pass ran)"
    offered = _offer(world, h2, 1, "ike-down")
    print(f"KL ike-down: h2 (charon stopped, tunnels still armed: {sorted(armed)}) {offered}")
    offered.assert_stopped("xfrm")


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
    offered = _offer(world, h2, 1, "disarmed")
    print(f"KL disarm: h2 {offered}")
    offered.assert_stopped("flows")
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


# -- the agent on its own -----------------------------------------------------------------

def _agent_status(h) -> dict:
    """The agent's own status over its control socket, asked from here (a unix socket:
    no namespace to enter, no ``ovsvnet`` process to start, which takes seconds under TCG)."""
    reply = control.query(str(h.dir))
    return reply if isinstance(reply, dict) else {}


def _agent_diagnostics(h, pid: int) -> str:
    """What an agent that does not act is doing: its process state, children, status,
    the kernel's xfrm policies and the end of its log."""
    parts = []
    for what in ("status", "wchan", "stack"):
        try:
            with open(f"/proc/{pid}/{what}") as f:
                text = f.read()
            if what == "status":
                text = "".join(ln for ln in text.splitlines(True)
                               if ln.startswith(("State", "Threads")))
            parts.append(f"--- /proc/{pid}/{what}\n{text}")
        except OSError as err:
            parts.append(f"--- /proc/{pid}/{what}: {err}")
    r = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,wchan:20,args", "--ppid", str(pid)],
                       capture_output=True, text=True, check=False)
    parts.append(f"--- children\n{r.stdout}")
    parts.append("--- status\n" + json.dumps(_agent_status(h), sort_keys=True))
    parts.append("--- ip xfrm policy\n" + h.run("ip", "xfrm", "policy", check=False).stdout)
    parts.append("--- table 0\n" + h.ofctl("--names", "dump-flows", "br-vnet", "table=0"))
    with open(h.dir / "agent.log", errors="replace") as f:
        parts.append("--- agent.log (last 30)\n" + "".join(f.readlines()[-30:]))
    return "\n".join(parts)


@contextlib.contextmanager
def _agent(h, *args: str) -> Iterator[subprocess.Popen]:
    """``ovsvnet agent ARGS`` on ``h`` for the block (its own pid: ``ip netns exec`` execs);
    stopped by that pid afterwards, its armed/sync log lines printed."""
    log = open(h.dir / "agent.log", "a")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", h.netns, sys.executable, "-m", "ovsvnet", "--db", h.db,
         "agent", "--pidfile", str(h.dir / "agent.pid"),
         "--key-file", str(h.discovery_key()), *args],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=h.env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        with open(h.dir / "agent.log", errors="replace") as f:
            lines = [ln for ln in f if "armed" in ln or "sync" in ln]
        print("KL agent log (armed/sync lines):\n" + "".join(lines[-12:]))


def _charon_up_and_armed(world: World) -> None:
    """The agent tests start from h2's charon running and its tunnels armed, whatever an
    earlier test that failed half way left behind."""
    ip2 = world.ipsec["h2"]
    if ip2.charon_pid() is None:
        ip2.ipsec("start", check=False)
        wait_until(ip2.charon_pid, timeout=120, what="h2's charon to start")
    if not _armed_ports(world.h2):
        ip2.arm(world.h1.address, _secure_levels(world))


def _wait_disarmed(h, proc: subprocess.Popen, timeout: float) -> None:
    try:
        wait_until(lambda: not _armed_ports(h), timeout=timeout, what="the agent to disarm")
    except Exception:
        print("KL agent did not disarm: " + _agent_diagnostics(h, proc.pid))
        raise


def test_the_agent_disarms_and_rearms_secure_tunnels_by_itself(world: World) -> None:
    """With ``ovsvnet agent`` running on h2, stopping h2's charon disarms h2's secure
    tunnels within a few canary intervals and nothing leaves in clear; starting charon again
    re-arms them and traffic comes back, with no command from anyone."""
    h2 = world.h2
    ip2 = world.ipsec["h2"]
    levels = _secure_levels(world)
    _charon_up_and_armed(world)
    with _agent(h2) as proc:
        wait_until(lambda: _agent_status(h2), timeout=120, what="h2's agent")
        wait_until(lambda: _armed_ports(h2), timeout=60, what="h2's tunnels armed")
        ip2.ipsec("stop", check=False)
        t0 = time.monotonic()
        wait_until(lambda: ip2.charon_pid() is None, timeout=60, what="h2's charon to stop")
        _wait_disarmed(h2, proc, 90)
        disarm = time.monotonic() - t0
        offered = _offer(world, h2, 1, "agent-disarmed")
        print(f"KL agent: charon stopped -> secure tunnels disarmed after {disarm:.1f}s; "
              f"then h2 {offered}")
        offered.assert_stopped("flows")
        ip2.ipsec("start", check=False)
        t0 = time.monotonic()
        wait_until(lambda: _armed_ports(h2), timeout=180, what="the agent to re-arm")
        rearm = time.monotonic() - t0
        for level in levels:
            g1, g2 = _guests(world, level)
            assert g2.ping(g1.addr, count=3, timeout=90), f"{level}: no traffic after re-arm"
        print(f"KL agent: charon started -> re-armed after {rearm:.1f}s, "
              f"{'/'.join(levels)} ping again")


def test_the_agent_disarms_when_charon_stops_before_its_first_check(world: World) -> None:
    """Issue 14: the agent's first pass armed h2's tunnels (charon up), then charon stopped
    before the agent's first arming check. The check compared that first look with nothing
    ("first look: nothing to do"), not with what the flows armed, so the agent never
    disarmed. A long canary interval makes the order certain: first pass, charon stopped,
    first check. The agent must disarm at that check, and re-arm at a later one."""
    h2 = world.h2
    ip2 = world.ipsec["h2"]
    levels = _secure_levels(world)
    interval = 20
    _charon_up_and_armed(world)
    with _agent(h2, "--canary-interval", str(interval)) as proc:
        wait_until(lambda: _agent_status(h2).get("syncs", 0) >= 1, timeout=120,
                   what="h2's agent's first pass")
        assert _armed_ports(h2), "the agent's first pass should arm h2's tunnels (charon up)"
        ip2.ipsec("stop", check=False)
        wait_until(lambda: ip2.charon_pid() is None, timeout=60, what="h2's charon to stop")
        t0 = time.monotonic()
        # the first check comes `interval` s after the agent's start (its uptime's zero)
        stopped = float(_agent_status(h2).get("uptime", interval))
        assert stopped < interval, (f"charon stopped at the agent's uptime {stopped:.0f}s, "
                                    "maybe after its first check: the case is not set up")
        _wait_disarmed(h2, proc, 2 * interval + 30)
        disarm = stopped + time.monotonic() - t0
        offered = _offer(world, h2, 1, "agent-first-check")
        print(f"KL agent first check: charon stopped at the agent's uptime {stopped:.1f}s, "
              f"disarmed by {disarm:.1f}s (canary interval {interval}s); then h2 {offered}")
        offered.assert_stopped("flows")
        ip2.ipsec("start", check=False)
        wait_until(lambda: _armed_ports(h2), timeout=2 * interval + 120,
                   what="the agent to re-arm")
        for level in levels:
            g1, g2 = _guests(world, level)
            assert g2.ping(g1.addr, count=3, timeout=90), f"{level}: no traffic after re-arm"
