"""Host-level commands: setup, doctor, insmod, demo, completion, and the remaining ``vn`` verbs
(vnets, vnifs, vif-add, vif-delete, bridges).

The checks live in :mod:`ovsvnet.doctor` and the demo in :mod:`ovsvnet.demo`; this module is
the click layer over them (and over :mod:`ovsvnet.ops` for the read-only views).
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import xml.etree.ElementTree as ET
from typing import Any, Sequence

import click

from ovsvnet import doctor as D
from ovsvnet import flows as F
from ovsvnet import model as M
from ovsvnet import ofctl, ops, state
from ovsvnet.cli import Session, _print_created, emit, json_option, pass_session, report_sync, \
    table
from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConfigError, NotFoundError, OvsUnreachableError, OvsvnetError
from ovsvnet.vnetid import VnetId, default_vnif_name


def _exit(code: int) -> None:
    """Exit with ``code`` from inside a command. (click's ctx.exit() is turned into a return
    value under standalone_mode=False, which ovsvnet.cli.main does not pass on.)"""
    if code:
        sys.exit(code)


def _print_findings(findings: list[D.Finding]) -> None:
    for f in findings:
        click.echo(f.line())


# -- setup / doctor / insmod ----------------------------------------------------------------

@click.command(epilog="""\b
Examples:
  ovsvnet setup                   # check the host (like doctor, without probes), report MTUs
  ovsvnet setup --default-vnets   # also vnets 2, 3, 4 like Xen's vnet module""")
@click.option("--default-vnets", is_flag=True,
              help="Create Xen's test vnets 2, 3 and 4 (vnetifs vnif0002..vnif0004).")
@pass_session
def setup(s: Session, default_vnets: bool) -> None:
    """Check and prepare this host (and optionally create the old module's default vnets).

    Prints the doctor's findings (without the multicast probe; 'ovsvnet doctor' does that)
    and exits 1 if one of them is FAIL, after doing the rest of its job.
    """
    findings = D.run_checks(s.db_remote, s.rundir, timeout=s.timeout, probe=False)
    _print_findings(findings)
    if findings[0].status == D.FAIL:
        raise OvsUnreachableError(f"Open vSwitch is not reachable at {s.db_remote}")
    view = ops.host_view(s.host)
    click.echo(f"datapath {view['datapath_type']}, tunnel endpoint "
               f"{view['local_ip'] or 'unknown'}, underlay MTU {view['underlay_mtu']} "
               f"({view['underlay_mtu_source']}), vnet MTU {view['vnet_mtu']}")
    if default_vnets:
        cfgs = [VnetConfig.build(VnetId(n), vnetif=default_vnif_name(VnetId(n)))
                for n in (2, 3, 4)]
        created, report = ops.create_many(s.host, cfgs, may_exist=True)
        for cfg in cfgs:
            _print_created(cfg, cfg.id in created, s.host)
        report_sync(report)
    _exit(D.exit_code(findings))


@click.command(epilog="""\b
Examples:
  ovsvnet doctor
  ovsvnet doctor --json | jq '.findings[] | select(.status != "OK")'
  ovsvnet doctor --no-probe                       # no multicast probe (instant)
  ovsvnet --db unix:/run/ovsvnet-sandbox/default/h1/db.sock doctor

\b
Checks: ovsdb (database socket), vswitchd (answers), datapath (types offered, the one
used), kmod (openvswitch module), ipsec (kernel ESP, ovs-monitor-ipsec, datapath),
mtu (underlay and guest MTU), endpoint (tunnel address), agent, multicast (who answers
on 224.10.0.1: the agent's peer table, else ICMP echo + listening for announcements).

\b
Exit codes: 0 no FAIL finding, 1 at least one FAIL.""")
@click.option("--no-probe", is_flag=True, help="Skip the multicast probe.")
@click.option("--probe-time", default=2.0, show_default=True,
              type=click.FloatRange(0.2, 30), metavar="SECONDS",
              help="How long the multicast probe listens.")
@json_option
@pass_session
def doctor(s: Session, no_probe: bool, probe_time: float, as_json: bool) -> None:
    """Check this host for what ovsvnet needs; one finding per line with what to fix."""
    findings = D.run_checks(s.db_remote, s.rundir, timeout=min(s.timeout, 5.0),
                            probe=not no_probe, probe_time=probe_time)
    code = D.exit_code(findings)
    if as_json:
        click.echo(json.dumps({"findings": [f.to_dict() for f in findings],
                               "summary": D.summary(findings), "exit_code": code},
                              indent=2, sort_keys=True))
    else:
        _print_findings(findings)
        click.echo(D.summary(findings))
    _exit(code)


@click.command(epilog="""\b
Examples:
  ovsvnet insmod                       # check OVS, put the stored vnets in place
  vn insmod varp_mcaddr=239.1.2.3      # Xen module parameters are accepted with a note

\b
Exit codes: 0 OVS ready and vnets in place, 5 OVS not reachable (with how to start it),
1 other failure.""")
@click.argument("params", nargs=-1, metavar="[PARAM=VALUE]...")
@pass_session
def insmod(s: Session, params: tuple[str, ...]) -> None:
    """Xen's 'vn insmod': check/prepare Open vSwitch on this host, then sync the vnets.

    There is no module to load: Open vSwitch is the data plane. This checks that OVSDB and
    ovs-vswitchd answer, which datapath is used and whether the openvswitch kernel module is
    loaded (or userspace only), then brings the stored vnets in place ('ovsvnet sync').
    Xen's module parameters (varp_mcaddr=, varp_device=, vnet_encaps=) are accepted and
    ignored, with a note on where that setting lives now.
    """
    for note in D.xen_module_params(params):
        click.echo(note)
    findings = D.run_checks(s.db_remote, s.rundir, timeout=min(s.timeout, 5.0), probe=False,
                            only={"vswitchd", "datapath", "kmod"})
    _print_findings(findings)
    if any(f.status == D.FAIL and f.check in ("ovsdb", "vswitchd") for f in findings):
        raise OvsUnreachableError("Open vSwitch is not ready: "
                                  + ("it is installed; " + D.START_OVS_HINT_LONG
                                     if D.which("ovs-vswitchd") else
                                     "install it: apt-get install openvswitch-switch"))
    report = ops.sync(s.host)
    report_sync(report)
    rows, _ = ops.list_view(s.host)
    click.echo(f"ready: {len(rows)} vnet(s) in place"
               + (f", {report.changed_flows} flow changes" if report.changed_flows else ""))


# -- vn verbs -------------------------------------------------------------------------------

def _chosen(s: Session, vnets: Sequence[str]) -> list[VnetConfig]:
    defs, _ = state.definitions(s.host.db)
    if not vnets:
        return sorted(defs.values(), key=lambda c: c.id)
    out: list[VnetConfig] = []
    for v in vnets:
        cfg = ops.resolve(s.host, v)
        if cfg not in out:
            out.append(cfg)
    return sorted(out, key=lambda c: c.id)


def _render_vnets(rows: list[dict[str, Any]], long: bool, all_: bool) -> None:
    if not rows:
        click.echo("no vnets")
        return
    if not (long or all_):
        table(rows, [("short", "ID"), ("bridge", "BRIDGE"), ("vnetif", "VNETIF"),
                     ("security", "SECURITY"), ("mtu", "MTU"), ("state", "STATE"),
                     ("domains", "DOMAINS")])
        for row in rows:
            if row.get("reason"):
                click.echo(f"  {row['short']}: {row['reason']}")
        return
    for row in rows:
        click.echo(f"vnet {row['short']} ({row['id']}): bridge {row['bridge']}, vnetif "
                   f"{row['vnetif'] or '-'}, security {row['security']}, mtu "
                   f"{row['mtu'] or '-'}, {row['state']}"
                   + (f" ({row['reason']})" if row.get("reason") else ""))
        if long:
            click.echo("  ports:")
            for p in row["ports"]:
                err = f"  error: {p['error']}" if p.get("error") else ""
                click.echo(f"    {p['name']:<16}{p['kind']:<8} ofport {p['ofport']}  "
                           f"mtu {p['mtu']}{err}")
        if all_:
            click.echo("  vifs:" + ("" if row["vifs"] else " none"))
            for v in row["vifs"]:
                click.echo(f"    {v['port']:<16}ofport {v['ofport']}  mtu {v['mtu']}")
            click.echo("  varp:" + ("" if row["varp"] else " none learned"))
            for e in row["varp"]:
                click.echo(f"    {e['mac']}  peer {e['peer']}  idle {e['idle']}s")


@click.command(epilog="""\b
Examples:
  vn vnets                 # like 'ovsvnet list'
  vn vnets -l 97           # plus the bridge's ports
  vn vnets -a              # plus vifs and learned remote MACs (varp)
  ovsvnet vnets -la --json""")
@click.argument("vnets", nargs=-1, metavar="[VNET]...")
@click.option("-a", "--all", "all_", is_flag=True, help="Add vifs and varp entries.")
@click.option("-l", "--long", is_flag=True, help="Add the bridge ports.")
@json_option
@pass_session
def vnets(s: Session, vnets: tuple[str, ...], all_: bool, long: bool, as_json: bool) -> None:
    """Xen's 'vn vnets': the vnets (all, or those named by id, bridge or vnetif), by id."""
    rows = []
    for cfg in _chosen(s, vnets):
        row = ops.vnet_view(s.host, cfg)
        if all_:
            row["vifs"] = ops.vifs_view(s.host, cfg)
            row["varp"] = ops.varp_view(s.host, cfg)
        rows.append(row)
    emit(rows, as_json, lambda r: _render_vnets(r, long, all_))


def _link_addresses() -> dict[str, list[str]]:
    """Interface name -> its addresses in this namespace (read-only netlink)."""
    try:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            out: dict[str, list[str]] = {}
            for a in ipr.get_addr():
                name = names.get(a["index"])
                if name:
                    out.setdefault(name, []).append(f"{a.get_attr('IFA_ADDRESS')}/"
                                                    f"{a['prefixlen']}")
            return out
    except Exception:  # pragma: no cover - no netlink: leave addresses out
        return {}


@click.command(epilog="""\b
Examples:
  vn vnifs
  ovsvnet vnifs 97 --json""")
@click.argument("vnets", nargs=-1, metavar="[VNET]...")
@json_option
@pass_session
def vnifs(s: Session, vnets: tuple[str, ...], as_json: bool) -> None:
    """Xen's 'vn vnifs': the vnets' host interfaces (vnetif) with MAC, MTU, state, addresses."""
    addrs = _link_addresses()
    rows = []
    for cfg in _chosen(s, vnets):
        if not cfg.vnetif:
            continue
        iface = s.host.db.interface(cfg.vnetif)
        rows.append({
            "vnet": cfg.id.short, "vnetif": cfg.vnetif, "bridge": cfg.bridge,
            "mac": (iface.mac_in_use[0] if iface is not None and iface.mac_in_use else None),
            "mtu": iface.mtu[0] if iface is not None and iface.mtu else None,
            "admin_state": (iface.admin_state[0] if iface is not None and iface.admin_state
                            else None),
            "link_state": (iface.link_state[0] if iface is not None and iface.link_state
                           else None),
            "ofport": state.ofport(iface) if iface is not None else None,
            "addresses": addrs.get(cfg.vnetif, []),
            "error": iface.error[0] if iface is not None and iface.error else
            (None if iface is not None else "missing: run ovsvnet sync"),
        })
    emit(rows, as_json, lambda r: table(r, [
        ("vnet", "VNET"), ("vnetif", "VNETIF"), ("mac", "MAC"), ("mtu", "MTU"),
        ("admin_state", "ADMIN"), ("link_state", "LINK"), ("addresses", "ADDRESSES"),
        ("error", "ERROR")]) if r else click.echo("no vnet interfaces (no vnet has a vnetif)"))


_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$")


def parse_vmac(text: str) -> str:
    """A MAC as Xen's vif table took it (17 characters, ':' or '-' used consistently),
    normalised to lower case with colons."""
    if not _MAC_RE.match(text):
        raise ConfigError(f"vmac: '{text}' is not a MAC address (6 hex pairs joined by ':' "
                          "or '-')")
    return text.replace("-", ":").lower()


def _vswitchd_ctl(s: Session) -> str:
    ctl = D.daemon_ctl(s.rundir, "ovs-vswitchd")
    if ctl is None:
        raise OvsUnreachableError(f"no ovs-vswitchd control socket in {s.rundir} (use "
                                  "--rundir)")
    return ctl


def parse_fdb(text: str) -> list[dict[str, Any]]:
    """``ovs-appctl fdb/show`` output -> [{port, vlan, mac, age}]."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and _MAC_RE.match(parts[2]):
            rows.append({"port": parts[0], "vlan": int(parts[1]), "mac": parts[2].lower(),
                         "age": parts[3]})
    return rows


def _local_mac(s: Session, cfg: VnetConfig, mac: str) -> dict[str, Any] | None:
    """Where the vnet bridge's MAC table has ``mac`` (port name, age), or None."""
    proc = D.appctl(_vswitchd_ctl(s), "fdb/show", cfg.bridge)
    if proc.returncode != 0:
        raise OvsvnetError(f"ovs-appctl fdb/show {cfg.bridge}: {proc.stderr.strip()}")
    names = {}
    bridge = s.host.db.bridge(cfg.bridge)
    for port in bridge.ports if bridge is not None else []:
        ofp = state.ofport(port.interfaces[0])
        if ofp is not None:
            names[str(ofp)] = port.name
    names["LOCAL"] = cfg.bridge
    for row in parse_fdb(proc.stdout):
        if row["mac"] == mac:
            return {"port": names.get(row["port"], row["port"]), "age": row["age"]}
    return None


def _resolve_vmac(s: Session, vmac: str, interface: bool) -> str:
    if not interface:
        return parse_vmac(vmac)
    iface = s.host.db.interface(vmac)
    if iface is None or not iface.mac_in_use:
        raise NotFoundError(f"interface: no interface '{vmac}' with a MAC in OVSDB")
    return str(iface.mac_in_use[0]).lower()


VIF_NOTE = ("Xen's vif table told the vnet module which MACs were local, so it could answer "
            "VARP queries for them. Open vSwitch learns instead: the vnet bridge learns a "
            "domain's MAC from its first frame, and peers learn it from the frames they "
            "receive; frames for a MAC nobody learned yet are flooded to the hosts carrying "
            "the vnet. So there is nothing to add.")


VIF_ADD_EPILOG = "\b\nExamples:\n  vn vif-add 97 aa:00:00:12:34:56\n" \
    "  vn vif-add -i 97 vif3.0           # VMAC is an interface: use its MAC\n\n\b\n" + \
    textwrap.fill(
        "What it does on Open vSwitch: nothing needs adding. " + VIF_NOTE + " vif-add checks "
        "the vnet and the MAC and tells where the MAC is known (a port of this host, a peer, "
        "or not seen yet); it changes nothing. Exit 0 when the vnet exists.", width=88)


@click.command("vif-add", epilog=VIF_ADD_EPILOG)
@click.argument("vnet")
@click.argument("vmac")
@click.option("-i", "--interface", is_flag=True,
              help="VMAC names an interface; use its MAC.")
@json_option
@pass_session
def vif_add(s: Session, vnet: str, vmac: str, interface: bool, as_json: bool) -> None:
    """Xen's 'vn vif-add': not needed with MAC learning; reports where VMAC is known."""
    cfg = ops.resolve(s.host, vnet)
    mac = _resolve_vmac(s, vmac, interface)
    local = _local_mac(s, cfg, mac)
    remote = [r for r in ops.varp_view(s.host, cfg) if r["mac"] == mac]
    data = {"vnet": cfg.id.short, "mac": mac, "added": False, "local": None, "remote": None}
    if local is not None and local["port"] not in {M.vnet_patch_name(cfg.key)}:
        data["local"] = local
    if remote:
        data["remote"] = {"peer": remote[0]["peer"], "idle": remote[0]["idle"]}
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    click.echo(f"vnet {cfg.id.short}: nothing to add for {mac}: Open vSwitch learns MACs "
               "(see 'vn vif-add --help')")
    if data["local"]:
        click.echo(f"  {mac} is on this host, port {local['port']} (seen {local['age']}s ago)")
    if data["remote"]:
        click.echo(f"  {mac} is behind peer {data['remote']['peer']} (idle "
                   f"{data['remote']['idle']}s)")
    if not data["local"] and not data["remote"]:
        click.echo(f"  {mac} has not been seen yet; it is learned from its first frame")


def _forget_local(s: Session, cfg: VnetConfig, mac: str, port: str) -> None:
    """Remove one learned MAC from a vnet bridge's MAC table.

    OVS 3.1's fdb/del only deletes static entries, so the learned entry is first turned into
    a static one on the same port (frames keep going where they went), then deleted. If
    that is refused, the bridge's whole table is flushed (everything is relearned)."""
    ctl = _vswitchd_ctl(s)
    added = D.appctl(ctl, "fdb/add", cfg.bridge, port, "0", mac)
    if added.returncode == 0 and D.appctl(ctl, "fdb/del", cfg.bridge, "0", mac).returncode == 0:
        return
    flushed = D.appctl(ctl, "fdb/flush", cfg.bridge)
    if flushed.returncode != 0:
        raise OvsvnetError(f"ovs-appctl fdb/flush {cfg.bridge}: {flushed.stderr.strip()}")


@click.command("vif-delete", epilog="""\b
Examples:
  vn vif-delete 97 aa:00:00:12:34:56    # after a domain moved away, or to re-learn it
  vn vif-delete -i 97 vif3.0

\b
What it does on Open vSwitch: forgets VMAC on that vnet, both in the vnet bridge's MAC
table and as a learned remote MAC on the transport bridge (like varp-flush for one
address). It is learned again from the next frame it sends. Exit 4 if the MAC was not
known.""")
@click.argument("vnet")
@click.argument("vmac")
@click.option("-i", "--interface", is_flag=True,
              help="VMAC names an interface; use its MAC.")
@pass_session
def vif_delete(s: Session, vnet: str, vmac: str, interface: bool) -> None:
    """Xen's 'vn vif-delete': forget VMAC on VNET (local MAC table and learned remote entry)."""
    cfg = ops.resolve(s.host, vnet)
    mac = _resolve_vmac(s, vmac, interface)
    forgot = []
    local = _local_mac(s, cfg, mac)
    if local is not None:
        _forget_local(s, cfg, mac, local["port"])
        forgot.append(f"MAC table entry of {cfg.bridge} (port {local['port']})")
    remote = [r for r in ops.varp_view(s.host, cfg) if r["mac"] == mac]
    if remote:
        ofctl.run_ofctl(s.rundir, M.TRANSPORT_BRIDGE, "del-flows",
                        f"table={F.T_UNICAST},cookie={F.cookie(F.KIND_LEARNED, cfg.key):#x}/-1,"
                        f"tun_id={cfg.key:#x},dl_dst={mac}")
        forgot.append(f"learned remote entry (peer {remote[0]['peer']})")
    if not forgot:
        raise NotFoundError(f"vmac: {mac} is not known on vnet {cfg.id.short} (nothing to "
                            "forget)")
    click.echo(f"vnet {cfg.id.short}: forgot {mac}: " + "; ".join(forgot))


def _bridge_role(br: Any) -> str | None:
    role = br.external_ids.get(M.ROLE)
    if role == M.ROLE_VNET:
        vid = br.external_ids.get(M.VNET_ID)
        try:
            return f"vnet {VnetId.parse(vid).short}" if vid else "vnet"
        except ConfigError:
            return "vnet (broken record)"
    return role


@click.command(epilog="""\b
Examples:
  vn bridges
  vn bridges -l                 # with each bridge's ports
  ovsvnet bridges --json""")
@click.option("-l", "--long", is_flag=True, help="List each bridge's ports.")
@json_option
@pass_session
def bridges(s: Session, long: bool, as_json: bool) -> None:
    """Xen's 'vn bridges': every OVS bridge and its ports; ovsvnet's are marked '*'."""
    rows = []
    for br in sorted(s.host.db.rows("Bridge"), key=lambda b: b.name):
        role = _bridge_role(br)
        ports = []
        for port in sorted(br.ports, key=lambda p: p.name):
            iface = port.interfaces[0] if port.interfaces else None
            prole = port.external_ids.get(M.ROLE)
            if prole is None and role and role.startswith("vnet") and port.name != br.name:
                prole = "domain"
            ports.append({"name": port.name, "type": (iface.type or "system") if iface else "",
                          "role": prole, "ofport": state.ofport(iface) if iface else None})
        rows.append({"name": br.name, "ovsvnet": role is not None, "role": role,
                     "datapath_type": br.datapath_type or "system",
                     "fail_mode": br.fail_mode[0] if br.fail_mode else "standalone",
                     "ports": ports})

    def render(rows: list[dict[str, Any]]) -> None:
        if not rows:
            click.echo("no bridges")
            return
        if not long:
            table([{**r, "mark": "*" if r["ovsvnet"] else " ", "nports": len(r["ports"]),
                    "names": [p["name"] for p in r["ports"] if p["name"] != r["name"]]}
                   for r in rows],
                  [("mark", " "), ("name", "BRIDGE"), ("role", "OVSVNET"),
                   ("datapath_type", "DATAPATH"), ("fail_mode", "FAIL_MODE"),
                   ("names", "PORTS")])
            return
        for r in rows:
            click.echo(f"{'*' if r['ovsvnet'] else ' '} {r['name']}: {r['role'] or 'not ovsvnet'}"
                       f", datapath {r['datapath_type']}, fail_mode {r['fail_mode']}")
            for p in r["ports"]:
                click.echo(f"    {p['name']:<16}{p['type']:<10}{p['role'] or '-':<10}"
                           f"ofport {p['ofport']}")

    emit(rows, as_json, render)


# -- libvirt hook helper ----------------------------------------------------------------------

def libvirt_bridges(xml_text: str) -> list[tuple[str, bool]]:
    """Bridges named in a libvirt domain or network XML: [(bridge, openvswitch?)].

    Domain XML: every ``<interface>`` with ``<source bridge='X'/>`` (type='bridge', or a
    type='network' interface whose live XML names its bridge), openvswitch when it has
    ``<virtualport type='openvswitch'/>``. Network XML (also inside ``<hookData>``):
    ``<bridge name='X'/>`` with a ``<virtualport type='openvswitch'/>`` child of the network.
    Order kept, duplicates dropped.
    """
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ConfigError(f"xml: not well-formed: {exc}") from exc
    found: dict[str, bool] = {}

    def add(name: str | None, ovs: bool) -> None:
        if name:
            found[name] = found.get(name, False) or ovs

    for iface in root.iter("interface"):
        src = iface.find("source")
        vp = iface.find("virtualport")
        add(src.get("bridge") if src is not None else None,
            vp is not None and vp.get("type") == "openvswitch")
    nets = [root] if root.tag == "network" else list(root.iter("network"))
    for net in nets:
        br = net.find("bridge")
        vp = net.find("virtualport")
        add(br.get("name") if br is not None else None,
            vp is not None and vp.get("type") == "openvswitch")
    return list(found.items())


@click.command("libvirt-bridges", hidden=True, epilog="""\b
Examples:
  virsh dumpxml dom1 | ovsvnet libvirt-bridges
  ovsvnet libvirt-bridges < /etc/libvirt/qemu/networks/net97.xml""")
def libvirt_bridges_cmd() -> None:
    """Print the bridges a libvirt domain/network XML on stdin names: 'BRIDGE ovs|plain'.

    Used by scripts/network-vnet as a libvirt hook (it needs no OVS connection).
    """
    for name, ovs in libvirt_bridges(sys.stdin.read()):
        click.echo(f"{name} {'ovs' if ovs else 'plain'}")


# -- demo, completion -----------------------------------------------------------------------

@click.command(epilog="""\b
Examples:
  ovsvnet demo                  # build, show, tear down (about 20 s)
  ovsvnet demo --keep           # leave the lab up to play with
  ovsvnet demo --down           # remove a lab left by --keep

\b
Exit codes: 0 every ping succeeded, 1 a ping or a step failed, 130 interrupted.""")
@click.option("--keep", is_flag=True,
              help="Leave the lab (and its agents) running; prints how to use and remove it.")
@click.option("--down", "take_down", is_flag=True, help="Remove the lab a --keep run left.")
@click.option("--hosts", "n_hosts", default=3, show_default=True, type=click.IntRange(2, 8),
              help="Number of simulated hosts.")
@click.option("--name", default="demo", show_default=True,
              help="Sandbox name for --keep/--down (see 'ovsvnet sandbox').")
def demo(keep: bool, take_down: bool, n_hosts: int, name: str) -> None:
    """Three simulated hosts, vnet 97 on each, agents, a guest per host, pings across.

    Needs root and Open vSwitch (run 'bash ci/install-deps.sh' first). Everything runs in
    network namespaces of a lab (see 'ovsvnet sandbox'); nothing touches the host's own
    network. The lab is torn down at the end, also on failure and on Ctrl-C.
    """
    from ovsvnet import demo as demo_mod
    if take_down:
        code = demo_mod.take_down(name, click.echo)
    else:
        code = demo_mod.run(demo_mod.DemoOptions(hosts=n_hosts, keep=keep, name=name),
                            click.echo)
    _exit(code)


SHELLS = ("bash", "zsh", "fish")


@click.command(epilog="""\b
Examples:
  eval "$(ovsvnet completion bash)"                       # this shell
  ovsvnet completion bash > /etc/bash_completion.d/ovsvnet
  ovsvnet completion zsh > "${fpath[1]}/_ovsvnet"
  ovsvnet completion fish > ~/.config/fish/completions/ovsvnet.fish
  vn completion bash > /etc/bash_completion.d/vn

\b
Same as click's own: _OVSVNET_COMPLETE=bash_source ovsvnet""")
@click.argument("shell", required=False, type=click.Choice(SHELLS))
def completion(shell: str | None) -> None:
    """Print the shell completion script for bash, zsh or fish (default: $SHELL)."""
    from click.shell_completion import get_completion_class
    if shell is None:
        guess = os.path.basename(os.environ.get("SHELL", "bash"))
        shell = guess if guess in SHELLS else "bash"
    root = click.get_current_context().find_root()
    prog = root.info_name or "ovsvnet"
    var = f"_{prog}_COMPLETE".replace("-", "_").upper()
    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(root.command, {}, prog, var).source())


COMMANDS = [setup, doctor, insmod, vnets, vnifs, vif_add, vif_delete, bridges,
            libvirt_bridges_cmd, demo, completion]


def register(cli: click.Group) -> None:
    """Add this module's commands to the main group (called by ovsvnet.cli)."""
    for command in COMMANDS:
        cli.add_command(command)
