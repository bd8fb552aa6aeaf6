"""``ovsvnet doctor``: check a host for what ovsvnet needs and say what to fix.

Each check returns :class:`Finding` objects (``OK``, ``WARN`` or ``FAIL``, one line each, with
a fix when there is one). The checks are split in two layers so the logic is unit-tested
without root:

* *facts*: small functions that read the system (``/sys/module``, ``/proc``, OVSDB,
  ``ovs-appctl``, a few bounded multicast probes); each takes its paths as arguments;
* *findings*: pure functions that turn facts into findings (``*_finding``).

:func:`run_checks` runs them all in order; a check whose precondition failed (no OVSDB) is
left out rather than reported twice. Nothing here changes the host: no module is loaded, no
daemon started, no interface touched. The multicast probe sends at most ``count`` ICMP echo
requests to the discovery group, TTL 1, and listens for announcements for ``duration``
seconds.

Exit status (``ovsvnet doctor``): 0 when no finding is FAIL, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import platform
import re
import select
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

OK, WARN, FAIL = "OK", "WARN", "FAIL"
GROUP = "224.10.0.1"
PORT = 1798

MONITOR_IPSEC_PATHS = ("/usr/share/openvswitch/scripts/ovs-monitor-ipsec",
                       "/usr/sbin/ovs-monitor-ipsec", "/usr/bin/ovs-monitor-ipsec")
OVS_BINARIES = ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
SBIN_PATHS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

#: How to start OVS on a host where it is installed but not running.
START_OVS_HINT = ("start it: systemctl start openvswitch-switch (or "
                  "/usr/share/openvswitch/scripts/ovs-ctl start --system-id=random)")
#: The same, with how to run without the kernel module (for insmod).
START_OVS_HINT_LONG = (START_OVS_HINT + "; without the openvswitch kernel module add "
                       "--ovs-vswitchd-options=--disable-system (userspace datapath only)")


@dataclass
class Finding:
    """One line of the doctor's report."""

    check: str
    status: str
    message: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        text = f"{self.status:<5}{self.check + ':':<11}{self.message}"
        return text + (f"; fix: {self.fix}" if self.fix else "")


def exit_code(findings: Iterable[Finding]) -> int:
    return 1 if any(f.status == FAIL for f in findings) else 0


def summary(findings: list[Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.status == s) for s in (OK, WARN, FAIL)}
    return f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failures"


# -- facts: kernel modules ------------------------------------------------------------------

def kmod_state(name: str, sys_module: str = "/sys/module", proc_modules: str = "/proc/modules",
               modules_dir: str | None = None) -> str:
    """``loaded``, ``builtin``, ``available`` (a .ko exists for this kernel) or ``absent``.

    Built-in modules without parameters have no ``/sys/module`` entry, so
    ``modules.builtin`` is read too; ``modules.dep`` lists what ``modprobe`` could load.
    """
    modules_dir = modules_dir or f"/lib/modules/{platform.release()}"
    try:
        for line in Path(proc_modules).read_text().splitlines():
            if line.split(" ", 1)[0] == name:
                return "loaded"
    except OSError:
        pass
    sysdir = Path(sys_module) / name
    if sysdir.is_dir():
        # A loadable module that is loaded has an initstate; a built-in one has none.
        return "loaded" if (sysdir / "initstate").exists() else "builtin"
    if _listed(Path(modules_dir) / "modules.builtin", name):
        return "builtin"
    if _listed(Path(modules_dir) / "modules.dep", name, dep=True):
        return "available"
    return "absent"


def _listed(path: Path, name: str, dep: bool = False) -> bool:
    """Whether ``name``.ko appears in a modules.builtin / modules.dep file."""
    try:
        text = path.read_text()
    except OSError:
        return False
    pattern = re.compile(rf"(^|/){re.escape(name)}\.ko(\.[a-z]+)?{':' if dep else '$'}",
                         re.MULTILINE)
    return bool(pattern.search(text))


def kernel_esp(proc_xfrm: str = "/proc/net/xfrm_stat", **kmod_paths: Any) -> dict[str, Any]:
    """Whether the kernel can do ESP: the XFRM framework and the esp4/esp6 modules."""
    return {
        "xfrm": os.path.exists(proc_xfrm),
        "esp4": kmod_state("esp4", **kmod_paths),
        "esp6": kmod_state("esp6", **kmod_paths),
    }


# -- facts: Open vSwitch daemons ------------------------------------------------------------

def which(binary: str) -> str | None:
    """Like shutil.which, also looking in the sbin directories a user's PATH may lack."""
    found = shutil.which(binary)
    if found:
        return found
    for d in SBIN_PATHS:
        p = os.path.join(d, binary)
        if os.access(p, os.X_OK):
            return p
    return None


def ovs_installed() -> dict[str, str | None]:
    return {b: which(b) for b in OVS_BINARIES}


def read_pid(path: str | Path) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def pid_running(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split(" ", 1)[0] not in ("Z", "X")


def daemon_ctl(rundir: str, daemon: str) -> str | None:
    """The unixctl socket of an OVS daemon in ``rundir``.

    ``<daemon>.ctl`` when it was started with ``--unixctl`` there (the lab does), else the
    default ``<daemon>.<pid>.ctl`` named by its pidfile (packaged OVS).
    """
    plain = os.path.join(rundir, f"{daemon}.ctl")
    if os.path.exists(plain):
        return plain
    pid = read_pid(os.path.join(rundir, f"{daemon}.pid"))
    if pid:
        ctl = os.path.join(rundir, f"{daemon}.{pid}.ctl")
        if os.path.exists(ctl):
            return ctl
    return None


def appctl(ctl: str, *args: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
    binary = which("ovs-appctl") or "ovs-appctl"
    return subprocess.run([binary, "-t", ctl, f"--timeout={max(1, int(timeout))}", *args],
                          capture_output=True, text=True, timeout=timeout + 5,
                          stdin=subprocess.DEVNULL)


def vswitchd_version(rundir: str, timeout: float = 5) -> tuple[str | None, str | None]:
    """(version line, None) when ovs-vswitchd answers, else (None, why not)."""
    ctl = daemon_ctl(rundir, "ovs-vswitchd")
    if ctl is None:
        return None, f"no ovs-vswitchd control socket in {rundir}"
    try:
        proc = appctl(ctl, "version", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"ovs-appctl -t {ctl} version: {exc}"
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        return None, f"{ctl}: {err}"
    return parse_version(proc.stdout), None


def parse_version(text: str) -> str:
    """``ovs-vswitchd (Open vSwitch) 3.1.0`` -> ``3.1.0`` (else the first line)."""
    m = re.search(r"\(Open vSwitch\)\s+(\S+)", text)
    return m.group(1) if m else (text.strip().splitlines() or [""])[0]


def db_socket_path(remote: str) -> str | None:
    return remote[len("unix:"):] if remote.startswith("unix:") else None


# -- findings: pure ---------------------------------------------------------------------------

def ovsdb_finding(remote: str, error: str | None, socket_exists: bool | None,
                  installed: dict[str, str | None]) -> Finding:
    if error is None:
        return Finding("ovsdb", OK, f"reachable at {remote}")
    missing = [b for b in ("ovsdb-server", "ovs-vswitchd") if not installed.get(b)]
    if missing:
        return Finding("ovsdb", FAIL, f"Open vSwitch is not installed ({', '.join(missing)} "
                       "not found)", "apt-get install openvswitch-switch (or run "
                       "ci/install-deps.sh)")
    if socket_exists is False:
        return Finding("ovsdb", FAIL, f"no database socket {db_socket_path(remote)}: "
                       "ovsdb-server is not running (or --db points elsewhere)", START_OVS_HINT)
    return Finding("ovsdb", FAIL, f"cannot talk to OVSDB at {remote}: {error}", START_OVS_HINT)


def vswitchd_finding(version: str | None, error: str | None, cfg_lag: int = 0,
                     ovsdb_failed: bool = False) -> Finding:
    if version is None:
        return Finding("vswitchd", FAIL, f"ovs-vswitchd does not answer ({error})",
                       None if ovsdb_failed else START_OVS_HINT)
    if cfg_lag > 0:
        return Finding("vswitchd", WARN, f"ovs-vswitchd {version} answers but has not applied "
                       f"the last {cfg_lag} database change(s)",
                       "look at ovs-vswitchd.log; 'ovs-vsctl sync' waits for it")
    return Finding("vswitchd", OK, f"ovs-vswitchd {version} answers", data={"version": version})


def datapath_finding(offered: list[str], chosen: str) -> Finding:
    data = {"offered": sorted(offered), "chosen": chosen}
    if not offered:
        return Finding("datapath", WARN, f"ovs-vswitchd reports no datapath types yet; "
                       f"ovsvnet will use {chosen}", "check that ovs-vswitchd runs", data)
    if chosen not in offered:
        return Finding("datapath", FAIL, f"ovsvnet is set to datapath {chosen}, which "
                       f"ovs-vswitchd does not offer ({', '.join(sorted(offered))})",
                       "ovs-vsctl remove Open_vSwitch . external_ids ovsvnet-datapath", data)
    return Finding("datapath", OK, f"offered: {', '.join(sorted(offered))}; new vnet bridges "
                   f"use {chosen}", data=data)


def kmod_finding(state: str, chosen: str) -> Finding:
    data = {"openvswitch": state}
    if state in ("loaded", "builtin"):
        if chosen == "netdev":
            return Finding("kmod", WARN, "openvswitch kernel module is " + state + " but "
                           "ovsvnet uses the userspace datapath (netdev)",
                           "ovs-vsctl set Open_vSwitch . external_ids:ovsvnet-datapath=system "
                           "(for new bridges)", data)
        return Finding("kmod", OK, f"openvswitch kernel module {state}: kernel datapath",
                       data=data)
    fix = ("modprobe openvswitch (then restart ovs-vswitchd without --disable-system)"
           if state == "available" else None)
    return Finding("kmod", WARN, "openvswitch kernel module "
                   + ("not loaded" if state == "available" else "not available in this kernel")
                   + ": userspace datapath only (works; slower, no IPsec)", fix, data)


def ipsec_finding(datapath: str, esp: dict[str, Any], monitor: str | None,
                  monitor_running: bool, secure_vnets: list[str],
                  ovsvnet_reason: str | None = None) -> Finding:
    """Can auth/conf vnets cross hosts here? Never FAIL: `none` vnets work regardless.

    ``ovsvnet_reason`` is ovsvnet's own verdict (:func:`ovsvnet.ops.ipsec_unavailable_reason`):
    even with everything in place, this host's ovsvnet may not carry secure vnets yet."""
    esp_ok = esp.get("xfrm") and esp.get("esp4") in ("loaded", "builtin", "available")
    data = {"datapath": datapath, "kernel_esp": esp, "ovs_monitor_ipsec": monitor,
            "monitor_running": monitor_running, "secure_vnets": secure_vnets}
    blockers = []
    if datapath == "netdev":
        blockers.append("the userspace datapath (netdev) cannot encrypt tunnels")
    if not esp_ok:
        blockers.append("no kernel ESP (" + ("no XFRM" if not esp.get("xfrm")
                                              else f"esp4 {esp.get('esp4')}") + ")")
    if monitor is None:
        blockers.append("ovs-monitor-ipsec not installed")
    elif not monitor_running:
        blockers.append("ovs-monitor-ipsec not running")
    inactive = (f"; auth/conf vnets stay on this host (inactive): {', '.join(secure_vnets)}"
                if secure_vnets else "; auth/conf vnets would stay on this host")
    if blockers:
        impossible = datapath == "netdev" or not esp_ok
        fix = None
        if not impossible:
            fix = ("apt-get install openvswitch-ipsec strongswan" if monitor is None
                   else "systemctl start openvswitch-ipsec")
        return Finding("ipsec", WARN, ("impossible here: " if impossible else "not ready: ")
                       + "; ".join(blockers) + inactive, fix, data)
    if ovsvnet_reason:
        return Finding("ipsec", WARN, f"not ready: {ovsvnet_reason}{inactive}", data=data)
    return Finding("ipsec", OK, "kernel ESP and ovs-monitor-ipsec available", data=data)


def mtu_finding(view: dict[str, Any]) -> Finding:
    und, vnet, src = view["underlay_mtu"], view["vnet_mtu"], view["underlay_mtu_source"]
    data = {"underlay_mtu": und, "vnet_mtu": vnet, "source": src}
    msg = f"underlay MTU {und} ({src}); give guests MTU {vnet}"
    if vnet < 1280:
        return Finding("mtu", WARN, msg + " (below 1280: IPv6 in guests will not work)",
                       "raise the underlay MTU (jumbo frames)", data)
    if src == "default":
        return Finding("mtu", WARN, msg + " (no route found, 1500 assumed)",
                       "ovs-vsctl set Open_vSwitch . external_ids:ovsvnet-underlay-mtu=N", data)
    return Finding("mtu", OK, msg, data=data)


def endpoint_finding(local_ip: str | None, configured: bool, local_addresses: set[str],
                     device: str | None, device_is_ovs: bool, datapath: str) -> Finding:
    data = {"local_ip": local_ip, "configured": configured, "device": device}
    setting = "ovs-vsctl set Open_vSwitch . external_ids:ovsvnet-local-ip=ADDRESS"
    if local_ip is None:
        return Finding("endpoint", FAIL, "no tunnel endpoint address (no route, no setting)",
                       setting, data)
    if local_addresses and local_ip not in local_addresses:
        return Finding("endpoint", FAIL, f"tunnel endpoint {local_ip} is not an address of "
                       "this host", setting, data)
    where = f" on {device}" if device else ""
    if datapath == "netdev" and device and not device_is_ovs:
        return Finding("endpoint", WARN, f"tunnel endpoint {local_ip}{where}, which is not an "
                       "OVS bridge: userspace tunnels need the underlay address on an OVS "
                       "bridge", f"move {local_ip} from {device} onto an OVS bridge that has "
                       f"{device} as a port (like the lab's br-phy)", data)
    return Finding("endpoint", OK, f"tunnel endpoint {local_ip}{where}"
                   + (" (configured)" if configured else ""), data=data)


def agent_finding(status: dict[str, Any] | None) -> Finding:
    if status is None:
        return Finding("agent", WARN, "no agent running: no discovery, static peers only, "
                       "no repair after ovs-vswitchd restarts",
                       "systemctl start ovsvnet-agent (see scripts/ovsvnet-agent.service)")
    return Finding("agent", OK, f"agent {status.get('system_id')} running, "
                   f"{len(status.get('peers') or [])} peer(s), up {status.get('uptime')}s",
                   data={"system_id": status.get("system_id")})


def multicast_finding(group: str, port: int, heard: dict[str, str], method: str,
                      local_ip: str | None) -> Finding:
    """``heard``: peer address -> what answered (announcement origin, 'icmp echo', ...)."""
    data = {"group": f"{group}:{port}", "heard": heard, "method": method}
    if heard:
        who = ", ".join(f"{a} ({w})" for a, w in sorted(
            heard.items(), key=lambda kv: _addr_key(kv[0])))
        return Finding("multicast", OK, f"{group} reaches {len(heard)} host(s) ({method}): "
                       f"{who}", data=data)
    if local_ip is None:
        return Finding("multicast", WARN, f"{group}: not probed (no local address)", data=data)
    return Finding("multicast", WARN, f"nobody answered on {group}:{port} ({method}): no other "
                   "agent on this segment, or multicast is filtered",
                   "hosts behind routers need 'ovsvnet peer-add HOST' on both sides", data)


def _addr_key(a: str) -> tuple[int, Any]:
    try:
        return (0, ipaddress.ip_address(a))
    except ValueError:
        return (1, a)


def heard_from_agent(status: dict[str, Any]) -> dict[str, str]:
    """Peers an agent heard itself (not resumed from OVSDB), with how."""
    heard = {}
    for p in status.get("peers") or []:
        if p.get("last_seen") is None:
            continue
        via = p.get("via")
        how = p.get("origin") or "peer"
        if via:
            how += f" via {via}"
        elif p.get("static"):
            how += " static"
        heard[p["address"]] = how
    return heard


# -- the multicast probe ----------------------------------------------------------------------

def icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo_request(ident: int, seq: int, payload: bytes = b"ovsvnet-doctor") -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    csum = icmp_checksum(header + payload)
    return struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload


def parse_icmp_echo_reply(packet: bytes) -> tuple[int, int] | None:
    """(ident, seq) of an ICMP echo reply in a raw IPv4 packet, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or packet[9] != socket.IPPROTO_ICMP:
        return None
    icmp_type, code, _, ident, seq = struct.unpack_from("!BBHHH", packet, ihl)
    if icmp_type != 0 or code != 0:
        return None
    return ident, seq


def describe_announcement(data: bytes) -> str | None:
    """'origin' (or 'origin via relay') of an ovsvnet announcement, None if it is not one."""
    from ovsvnet.announce import DecodeError, Relayed, decode
    try:
        msg = decode(data, None)
    except (DecodeError, ValueError, struct.error):
        return None
    if isinstance(msg, Relayed):
        return f"{msg.announcement.origin} via {msg.relay}"
    return msg.origin


def probe_multicast(local_ip: str, group: str = GROUP, port: int = PORT,
                    duration: float = 2.0, count: int = 3) -> tuple[dict[str, str], str]:
    """Who is reachable on the discovery group from ``local_ip``: (heard, method).

    Listens for ovsvnet announcements on ``group:port`` and sends ``count`` ICMP echo
    requests to the group (TTL 1; Xen's manual did ``ping 224.10.0.1``; Linux hosts answer
    only with ``icmp_echo_ignore_broadcasts=0``). Bounded: returns after ``duration`` s.
    """
    heard: dict[str, str] = {}
    methods = []
    ident = os.getpid() & 0xFFFF
    mif = socket.inet_aton(local_ip)
    with contextlib.ExitStack() as stack:
        udp: socket.socket | None = None
        raw: socket.socket | None = None
        try:
            udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind(("0.0.0.0", port))
            udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                           socket.inet_aton(group) + mif)
            methods.append("announcements")
        except OSError:
            udp = None
        try:
            raw = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                    socket.IPPROTO_ICMP))
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mif)
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            methods.append("icmp echo")
        except OSError:
            raw = None
        socks = [s for s in (udp, raw) if s is not None]
        if not socks:
            return heard, "no probe possible (not root?)"
        start = time.monotonic()
        deadline = start + duration
        sent = 0
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if raw is not None and sent < count and now >= start + sent * duration / (count + 1):
                with contextlib.suppress(OSError):
                    raw.sendto(icmp_echo_request(ident, sent), (group, 0))
                sent += 1
            ready, _, _ = select.select(socks, [], [], min(0.1, max(0.0, deadline - now)))
            for s in ready:
                try:
                    data, (src, _p) = s.recvfrom(65535)
                except OSError:
                    continue
                if src == local_ip:
                    continue
                what = None
                if s is udp:
                    origin = describe_announcement(data)
                    what = f"announces {origin}" if origin is not None else None
                else:
                    reply = parse_icmp_echo_reply(data)
                    what = "icmp echo" if reply is not None and reply[0] == ident else None
                if what is not None and what not in heard.get(src, "").split(", "):
                    heard[src] = f"{heard[src]}, {what}" if src in heard else what
    return heard, " + ".join(methods)


# -- running everything ----------------------------------------------------------------------

def run_checks(db_remote: str, rundir: str, timeout: float = 5.0, probe: bool = True,
               probe_time: float = 2.0, only: set[str] | None = None) -> list[Finding]:
    """Every check, in order; ``only`` limits them to those check names (plus ovsdb)."""
    from ovsvnet import model as M
    from ovsvnet import netlink, ops, state
    from ovsvnet.errors import OvsvnetError
    from ovsvnet.ovsdb import Ovsdb, quiet_python_ovs

    def wanted(name: str) -> bool:
        return only is None or name in only

    findings: list[Finding] = []
    installed = ovs_installed()
    sock = db_socket_path(db_remote)
    sock_exists = os.path.exists(sock) if sock else None
    db = None
    error = None
    if sock_exists is False:
        error = "no socket"
    else:
        quiet_python_ovs()
        try:
            db = Ovsdb(db_remote, timeout)
        except OvsvnetError as exc:
            error = str(exc)
    findings.append(ovsdb_finding(db_remote, error, sock_exists, installed))
    try:
        if wanted("vswitchd"):
            version, why = vswitchd_version(rundir, timeout)
            lag = 0
            if db is not None and version is not None:
                lag = max(0, db.ovs.next_cfg - db.ovs.cur_cfg)
            findings.append(vswitchd_finding(version, why, lag, ovsdb_failed=db is None))
        chosen = state.datapath_type(db) if db is not None else "netdev"
        if db is not None and wanted("datapath"):
            findings.append(datapath_finding(list(db.ovs.datapath_types), chosen))
        if wanted("kmod"):
            findings.append(kmod_finding(kmod_state("openvswitch"), chosen))
        if db is None:
            return findings
        host = ops.Host(db, rundir)
        defs, _ = state.definitions(db)
        if wanted("ipsec"):
            monitor = next((p for p in MONITOR_IPSEC_PATHS if os.path.exists(p)), None)
            running = pid_running(read_pid(os.path.join(rundir, "ovs-monitor-ipsec.pid")))
            secure = sorted(c.id.short for c in defs.values() if c.security != "none")
            verdict = getattr(ops, "ipsec_unavailable_reason", None)
            reason = verdict(host) if verdict is not None else None
            findings.append(ipsec_finding(chosen, kernel_esp(), monitor, running, secure,
                                          reason))
        view = ops.host_view(host)
        if wanted("mtu"):
            findings.append(mtu_finding(view))
        if wanted("endpoint"):
            peers = [t.address for t in ops.peer_specs(host)]
            und = netlink.detect(peers)
            device_is_ovs = False
            if und.device:
                iface = db.interface(und.device)
                device_is_ovs = iface is not None and iface.type == "internal"
            findings.append(endpoint_finding(
                view["local_ip"], state.setting(db, M.LOCAL_IP) is not None,
                local_addresses(), und.device, device_is_ovs, chosen))
        agent_status = None
        if wanted("agent") or wanted("multicast"):
            from ovsvnet.agent import query
            try:
                agent_status = query(rundir)
            except Exception:  # a wedged control socket is "not running" for us
                agent_status = None
            if not isinstance(agent_status, dict):
                agent_status = None
        if wanted("agent"):
            findings.append(agent_finding(agent_status))
        if wanted("multicast") and probe:
            if agent_status is not None and agent_status.get("group"):
                group, _, port = agent_status["group"].rpartition(":")
                findings.append(multicast_finding(group, int(port),
                                                  heard_from_agent(agent_status),
                                                  "agent's peer table", view["local_ip"]))
            elif view["local_ip"] and ipaddress.ip_address(view["local_ip"]).version == 4:
                heard, method = probe_multicast(view["local_ip"], duration=probe_time)
                findings.append(multicast_finding(GROUP, PORT, heard, method,
                                                  view["local_ip"]))
            else:
                findings.append(multicast_finding(GROUP, PORT, {}, "not probed", None))
    finally:
        if db is not None:
            db.close()
    return findings


def local_addresses() -> set[str]:
    """Every address configured in this network namespace (read-only netlink)."""
    try:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr()
                    if a.get_attr("IFA_ADDRESS")}
    except Exception:  # pragma: no cover - netlink unavailable: skip the comparison
        return set()


def xen_module_params(params: Iterable[str]) -> list[str]:
    """Notes on Xen vnet_module parameters (``vn insmod`` / ``vnet-insert``) and where their
    settings went in ovsvnet. They are accepted and otherwise ignored."""
    notes = {
        "varp_mcaddr": "the discovery group is the agent's --group (ovsvnet agent --group ADDR)",
        "varp_device": "the agent's --interface ADDRESS / the tunnel endpoint "
                       "(external_ids:ovsvnet-local-ip)",
        "vnet_encaps": "encapsulation is always VXLAN (the VNI is the vnet id)",
    }
    out = []
    for p in params:
        name, sep, value = p.partition("=")
        if name in notes:
            out.append(f"note: {name}{sep}{value} ignored: {notes[name]}")
        else:
            out.append(f"note: {p} ignored: not a vnet_module parameter ovsvnet knows")
    return out
