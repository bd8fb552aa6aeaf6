"""Gather this host's facts and turn them into findings, in order (:func:`run_checks`).

A check whose precondition failed (no OVSDB) is left out rather than reported twice.
Nothing here changes the host: no module is loaded, no daemon started, no interface
touched; the only traffic is :mod:`ovsvnet.doctor.probe`'s bounded multicast probe.
Exit status (``ovsvnet doctor``): 0 when no finding is FAIL, 1 otherwise.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable

from ovsvnet import ipsec
from ovsvnet import model as M
from ovsvnet.announce import GROUP, PORT
from ovsvnet.doctor.findings import (
    Finding,
    agent_finding,
    datapath_finding,
    db_socket_path,
    endpoint_finding,
    heard_from_agent,
    ipsec_finding,
    kmod_finding,
    mtu_finding,
    multicast_finding,
    names_finding,
    ovsdb_finding,
    parse_version,
    vswitchd_finding,
)
from ovsvnet.errors import OvsvnetError
from ovsvnet.ops import state, views
from ovsvnet.ops.host import Host, peers, security
from ovsvnet.ovsdb import Ovsdb, quiet_python_ovs
from ovsvnet.system import kernel, proc, unixctl

MONITOR_IPSEC_PATHS = ("/usr/share/openvswitch/scripts/ovs-monitor-ipsec",
                       "/usr/sbin/ovs-monitor-ipsec", "/usr/bin/ovs-monitor-ipsec")
OVS_BINARIES = ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")


def ovs_installed() -> dict[str, str | None]:
    return {b: proc.which(b) for b in OVS_BINARIES}


def vswitchd_version(rundir: str) -> tuple[str | None, str | None]:
    """(version, None) when ovs-vswitchd answers, else (None, why not)."""
    ctl = unixctl.daemon_ctl(rundir, "ovs-vswitchd")
    if ctl is None:
        return None, f"no ovs-vswitchd control socket in {rundir}"
    try:
        return parse_version(unixctl.call(ctl, "version")), None
    except OvsvnetError as exc:
        return None, f"{ctl}: {exc}"


def ipsec_facts(host: Host, datapath: str) -> dict[str, object]:
    facts = dict(kernel.ipsec_facts(host.rundir))
    facts["datapath"] = datapath
    facts["monitor_installed"] = any(os.path.exists(p) for p in MONITOR_IPSEC_PATHS)
    return facts


def run_checks(db_remote: str, rundir: str, timeout: float = 5.0, probe: bool = True,
               probe_time: float = 2.0, only: set[str] | None = None) -> list[Finding]:
    """Every check, in order; ``only`` limits them to those check names (plus ovsdb)."""

    def wanted(name: str) -> bool:
        return only is None or name in only

    findings: list[Finding] = []
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
    findings.append(ovsdb_finding(db_remote, error, sock_exists, ovs_installed()))
    try:
        if wanted("vswitchd"):
            version, why = vswitchd_version(rundir)
            lag = 0
            if db is not None and version is not None:
                lag = max(0, db.ovs.next_cfg - db.ovs.cur_cfg)
            findings.append(vswitchd_finding(version, why, lag, ovsdb_failed=db is None))
        chosen = state.datapath_type(db) if db is not None else "netdev"
        if db is not None and wanted("datapath"):
            findings.append(datapath_finding(list(db.ovs.datapath_types), chosen))
        if wanted("kmod"):
            findings.append(kmod_finding(kernel.kmod_state("openvswitch"), chosen))
        if db is None:
            return findings
        host = Host(db, rundir)
        findings += _host_checks(host, chosen, wanted, probe, probe_time)
    finally:
        if db is not None:
            db.close()
    return findings


def _host_checks(host: Host, chosen: str, wanted: Callable[[str], bool], probe: bool,
                 probe_time: float) -> list[Finding]:
    from ovsvnet.agent.control import query
    from ovsvnet.system import netlink

    out: list[Finding] = []
    db = host.db
    defs, _ = state.definitions(db)
    if wanted("ipsec"):
        facts = ipsec_facts(host, chosen)
        support = ipsec.support(chosen, **{k: facts[k] for k in (  # type: ignore[arg-type]
            "xfrm", "esp", "esp_detail", "monitor_pid", "ike_running")})
        secure = sorted(c.id.short for c in defs.values() if c.security != "none")
        out.append(ipsec_finding(support, security(host).reason, secure, facts))
    if wanted("names"):
        out.append(names_finding(
            [(c.id.short, f, n) for c in sorted(defs.values(), key=lambda c: c.id)
             for f, n in (("bridge", c.bridge), ("vnetif", c.vnetif)) if n]))
    view = views.host_view(host)
    if wanted("mtu"):
        out.append(mtu_finding(view))
    if wanted("endpoint"):
        und = netlink.detect([t.address for t in peers(host)])
        device_is_ovs = False
        if und.device:
            iface = db.interface(und.device)
            device_is_ovs = iface is not None and iface.type == "internal"
        try:
            addresses = netlink.local_addresses()
        except Exception:  # noqa: BLE001 - netlink unavailable: skip the comparison
            addresses = set()
        out.append(endpoint_finding(view["local_ip"], state.setting(db, M.LOCAL_IP) is not None,
                                    addresses, und.device, device_is_ovs, chosen))
    agent_status = None
    if wanted("agent") or wanted("multicast"):
        try:
            agent_status = query(host.rundir)
        except Exception:  # noqa: BLE001 - a wedged control socket is "not running" for us
            agent_status = None
        if not isinstance(agent_status, dict):
            agent_status = None
    if wanted("agent"):
        out.append(agent_finding(agent_status))
    if wanted("multicast") and probe:
        if agent_status is not None and agent_status.get("group"):
            group, _, port = agent_status["group"].rpartition(":")
            out.append(multicast_finding(group, int(port), heard_from_agent(agent_status),
                                         "agent's peer table", view["local_ip"]))
        elif view["local_ip"] and ipaddress.ip_address(view["local_ip"]).version == 4:
            from ovsvnet.doctor.probe import probe_multicast
            heard, method = probe_multicast(view["local_ip"], duration=probe_time)
            out.append(multicast_finding(GROUP, PORT, heard, method, view["local_ip"]))
        else:
            out.append(multicast_finding(GROUP, PORT, {}, "not probed", None))
    return out
