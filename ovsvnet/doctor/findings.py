"""Facts -> findings: one line each, OK, WARN or FAIL, with a fix when there is one (pure).

Each ``*_finding`` takes what :mod:`ovsvnet.doctor.checks` gathered and decides; nothing
here reads the system, so every rule is unit-tested without root.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ovsvnet import ipsec
from ovsvnet.config import auto_name_clash

OK, WARN, FAIL = "OK", "WARN", "FAIL"

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


def parse_version(text: str) -> str:
    """``ovs-vswitchd (Open vSwitch) 3.1.0`` -> ``3.1.0`` (else the first line)."""
    m = re.search(r"\(Open vSwitch\)\s+(\S+)", text)
    return m.group(1) if m else (text.strip().splitlines() or [""])[0]


def db_socket_path(remote: str) -> str | None:
    return remote[len("unix:"):] if remote.startswith("unix:") else None


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


def ipsec_finding(support: ipsec.Support, security_reason: str | None,
                  secure_vnets: list[str], facts: dict[str, Any]) -> Finding:
    """Can auth/conf vnets cross hosts here? Never FAIL: `none` vnets work regardless.

    ``support`` is :func:`ovsvnet.ipsec.support` on this host's facts and
    ``security_reason`` ovsvnet's own verdict (:func:`ovsvnet.ops.host.security`, which
    also needs keys): the same verdict the commands and the agent act on."""
    data = {"support": support.reason, "facts": facts, "secure_vnets": secure_vnets}
    inactive = (f"; auth/conf vnets stay on this host (inactive): {', '.join(secure_vnets)}"
                if secure_vnets else "; auth/conf vnets would stay on this host")
    if not support.ok:
        impossible = facts.get("datapath") != "system" or not facts.get("xfrm") \
            or not facts.get("esp")
        fix = None
        if not impossible:
            fix = ("systemctl start openvswitch-ipsec" if facts.get("monitor_installed")
                   else "apt-get install openvswitch-ipsec strongswan")
        return Finding("ipsec", WARN, ("impossible here: " if impossible else "not ready: ")
                       + support.reason + inactive, fix, data)
    if security_reason:
        return Finding("ipsec", WARN, f"not ready: {security_reason}{inactive}", data=data)
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
    name = status.get("system_id")
    data = {"system_id": name}
    if status.get("id_clashes"):
        return Finding("agent", FAIL, f"another host announces this host's system-id {name} "
                       f"(from {', '.join(status['id_clashes'])}): neither gets tunnels "
                       "right", "give each host its own: ovs-vsctl set Open_vSwitch . "
                       "external_ids:system-id=$(uuidgen), then restart the agent", data)
    if status.get("insecure_discovery"):
        return Finding("agent", WARN, f"agent {name} runs discovery without a key: anyone "
                       "who can send UDP to its port can announce itself as a peer",
                       "ovsvnet keygen /etc/ovsvnet/discovery.key (copy it to every host), "
                       "then run the agent with --key-file", data)
    registry = status.get("registry") or {}
    if "RBAC rules" in str(registry.get("last_error") or ""):
        return Finding("agent", FAIL, f"the registry refuses this host's rows "
                       f"({registry['last_error']}): its certificate's CN is not its "
                       f"system-id {name}", f"ovsvnet registry pki chassis {name}, then run "
                       "the agent with that identity (-p/-c/-C)", data)
    if registry.get("tls_error"):
        return Finding("agent", FAIL, f"the registry's TLS fails: {registry['tls_error']}",
                       "check the agent's --ca-cert (the registry's server CA) and its "
                       "certificate (from the chassis CA): docs/registry.md", data)
    if registry.get("insecure"):
        return Finding("agent", WARN, f"agent {name} follows an INSECURE registry over plain "
                       f"TCP ({registry.get('remotes')}): anyone who reaches it can change "
                       "this host's vnets and peers",
                       f"ovsvnet registry pki chassis {name}; agent -p/-c/-C --registry "
                       "ssl:... (docs/registry.md)", data)
    rejected = status.get("rejected_peers") or {}
    if rejected:
        return Finding("agent", WARN, f"agent {name} left {len(rejected)} peer(s) out: "
                       + "; ".join(f"{a}: {w}" for a, w in sorted(rejected.items())),
                       "fix or remove those peers (ovsvnet status shows them)", data)
    return Finding("agent", OK, f"agent {name} running, "
                   f"{len(status.get('peers') or [])} peer(s), up {status.get('uptime')}s",
                   data=data)


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


def names_finding(names: Iterable[tuple[str, str, str]]) -> Finding:
    """``names``: (vnet short id, field, name) of every vnet bridge and vnetif. A name of
    the form another program counts up on its own (libvirt's ``vnetN`` taps) is accepted
    when defined (Xen's ``vnet97``), but the day that program reaches the number, whichever
    of the two comes second cannot be created."""
    clashes = []
    for short, field_, name in names:
        whose = auto_name_clash(name)
        if whose:
            clashes.append({"vnet": short, "field": field_, "name": name, "like": whose})
    data: dict[str, Any] = {"clashes": clashes}
    if not clashes:
        return Finding("names", OK, "no vnet bridge or vnetif is named like another "
                       "program's automatic devices", data=data)
    what = "; ".join(f"vnet {c['vnet']} {c['field']} {c['name']} has the form of {c['like']}"
                     for c in clashes)
    return Finding("names", WARN, what + ": when that program reaches the number, the tap "
                   "or the vnet's device cannot be created", "give the vnet another name "
                   "(ovsvnet delete ID, then ovsvnet create --id ID: the default is vnet-ID), "
                   "at least on hosts that run libvirt or QEMU", data)


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
