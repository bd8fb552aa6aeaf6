"""Host commands: sync, peers, learned MACs, domain ports, status, setup, doctor, insmod."""

from __future__ import annotations

import json
from typing import Any

import click

from ovsvnet import model as M
from ovsvnet.cli.common import (
    Session,
    dry_run_option,
    emit,
    exit_with,
    format_options,
    json_option,
    pass_session,
    print_plan,
    report_sync,
    table,
    table_or,
)
from ovsvnet.config import VnetConfig
from ovsvnet.errors import NotFoundError, OvsUnreachableError
from ovsvnet.vnetid import VnetId, default_vnif_name


@click.command(epilog="""\b
Examples:
  ovsvnet sync                   # after an ovs-vswitchd restart, or any time
  ovsvnet sync -v
  ovsvnet sync --bridge vnet97   # a hook, before plugging a domain into vnet97
  ovsvnet sync --full            # also compare the flows in the switch (hand edits)
  ovsvnet sync --dry-run         # what a sync would repair, repairing nothing

A sync sends only what differs from what ovsvnet installed last; it reads nothing back from
the switch unless ovs-vswitchd restarted since, or --full is given. With --bridge it checks
those vnets' bridges and patch ports and does a whole sync only if something is missing.
With a running agent on this database the agent does the work (see OVSVNET_DIRECT).""")
@click.option("-v", "--verbose", is_flag=True, help="Say how many flows changed.")
@click.option("-b", "--bridge", "bridges", multiple=True, metavar="BRIDGE",
              help="Only make sure these vnet bridges are in place (repeatable).")
@click.option("--full", is_flag=True,
              help="Also read the flows back from ovs-vswitchd and repair any that differ.")
@dry_run_option
@pass_session
def sync(s: Session, verbose: bool, bridges: tuple[str, ...], full: bool,
         dry_run: bool) -> None:
    """Bring bridges, ports, tunnels, MTU and flows in line with the stored state."""
    from ovsvnet.ops import sync as ops_sync
    from ovsvnet.system import progress
    plan = ops_sync.Plan() if dry_run else None
    if bridges:  # a hook, about to plug a domain in: quiet
        report = ops_sync.sync_bridges(s.host, list(bridges), full, plan=plan)
    else:
        with progress.task("sync", steps=6):
            report = ops_sync.sync(s.host, full, plan=plan)
    if plan is not None:
        print_plan(plan)
        return
    report_sync(report, verbose=verbose)
    if not verbose:
        click.echo("in sync" if not report.changed_flows
                   else f"synced: {report.changed_flows} flow changes")


# -- peers --------------------------------------------------------------------------------

@click.command("peer-add", epilog="""\b
Examples:
  ovsvnet peer-add 192.0.2.7
  ovsvnet peer-add host7.example.net --port 4790
  ovsvnet peer-add --may-exist 192.0.2.7 --port 4790   # change the port of a peer
  ovsvnet peer-add --dry-run 192.0.2.7                 # the tunnels and flows it would add

\b
A peer that exists with the same port is no error (Xen's vn peer-add was idempotent, and
scripts re-run it); with another port it is a conflict (exit 3) unless --may-exist, which
then changes its port.""")
@click.argument("host")
@click.option("-p", "--port", default=M.VXLAN_PORT, show_default=True, type=int,
              help="The peer's VXLAN UDP port.")
@click.option("--may-exist", is_flag=True,
              help="No error if the peer exists with another port: change it to --port.")
@dry_run_option
@pass_session
def peer_add(s: Session, host: str, port: int, may_exist: bool, dry_run: bool) -> None:
    """Add a static peer (address or host name): it gets tunnels for every vnet."""
    from ovsvnet.ops import peers
    from ovsvnet.ops.sync import Plan
    from ovsvnet.system import progress
    plan = Plan() if dry_run else None
    with progress.task(f"peer-add {host}", steps=6):
        address, before, report = peers.peer_add(s.host, host, port, may_exist, plan)
    would = "would be " if plan is not None else ""
    click.echo(f"peer {address} {would}added (port {port})" if before is None else
               f"peer {address} already present (port {port})" if before == str(port) else
               f"peer {address}: port {would or 'is '}changed from {before} to {port}")
    if plan is not None:
        print_plan(plan)
    report_sync(report)


@click.command("peer-delete", epilog="""\b
Examples:
  ovsvnet peer-delete 192.0.2.7
  ovsvnet peer-delete --if-exists 192.0.2.7   # exit 0 when it is no static peer""")
@click.argument("host")
@click.option("--if-exists", is_flag=True, help="No error if it is no static peer (exit 0).")
@dry_run_option
@pass_session
def peer_delete(s: Session, host: str, if_exists: bool, dry_run: bool) -> None:
    """Remove a static peer and its tunnel."""
    from ovsvnet.ops import peers
    from ovsvnet.ops.sync import Plan
    from ovsvnet.system import progress
    plan = Plan() if dry_run else None
    try:
        with progress.task(f"peer-delete {host}", steps=6):
            address, report = peers.peer_delete(s.host, host, plan)
    except NotFoundError:
        if not if_exists:
            raise
        click.echo(f"peer {host}: no static peer, nothing to delete (--if-exists)")
        return
    click.echo(f"peer {address} {'would be ' if plan is not None else ''}deleted")
    if plan is not None:
        print_plan(plan)
    report_sync(report)


#: The keys of a peer's row (``peers --columns``).
PEER_KEYS = ["address", "port", "static", "origin", "vnets", "tunnel", "tunnel_state"]


@click.command(epilog="""\b
Examples:
  ovsvnet peers
  ovsvnet peers --json
  ovsvnet peers --format csv --columns address,tunnel_state""")
@format_options(PEER_KEYS, PEER_KEYS)
@pass_session
def peers(s: Session, as_json: bool) -> None:
    """List peers and the state of their tunnels."""
    from ovsvnet.ops import views
    emit(views.peers_view(s.host), as_json, lambda r: table_or(r, [
        ("address", "PEER"), ("port", "PORT"), ("static", "STATIC"), ("origin", "HOST"),
        ("vnets", "VNETS"), ("tunnel", "TUNNEL"), ("tunnel_state", "STATE")], "no peers"))


# -- learned state (vn varp, vifs) --------------------------------------------------------

def _resolve(s: Session, vnet: str | None) -> VnetConfig | None:
    from ovsvnet.ops import vnets
    return vnets.resolve(s.host, vnet) if vnet else None


def _per_vnet(s: Session, vnet: str | None, as_json: bool, view: str,
              columns: list[tuple[str, str]], empty: str) -> None:
    """Print one of :mod:`ovsvnet.ops.views`' per-vnet views (all vnets, or one)."""
    from ovsvnet.ops import views
    rows = getattr(views, view)(s.host, _resolve(s, vnet))
    emit(rows, as_json, lambda r: table_or(r, columns, empty))


@click.command(epilog="""\b
Examples:
  ovsvnet varp          # every vnet
  ovsvnet varp 97 --json
  ovsvnet varp --format csv --columns vnet,mac,peer""")
@click.argument("vnet", required=False)
@format_options(["vnet", "mac", "peer", "idle", "age", "locked"], ["vnet", "mac", "peer", "idle"])
@pass_session
def varp(s: Session, vnet: str | None, as_json: bool) -> None:
    """Remote MAC addresses learned per vnet, and the peer each lives behind."""
    _per_vnet(s, vnet, as_json, "varp_view", [("vnet", "VNET"), ("mac", "MAC"),
              ("peer", "PEER"), ("idle", "IDLE(s)")], "no learned addresses")


@click.command("varp-flush", epilog="""\b
Examples:
  ovsvnet varp-flush
  ovsvnet varp-flush 97""")
@click.argument("vnet", required=False)
@pass_session
def varp_flush(s: Session, vnet: str | None) -> None:
    """Forget learned remote MACs (they are relearned by flooding)."""
    from ovsvnet.ops import views
    views.varp_flush(s.host, _resolve(s, vnet))
    click.echo("flushed")


#: The keys of a domain port's row (``vifs --columns``).
VIF_KEYS = ["vnet", "bridge", "port", "mac", "port_mac", "owner", "owner_ids", "ofport", "mtu"]


@click.command(epilog="""\b
Examples:
  ovsvnet vifs
  ovsvnet vifs 97 --json
  ovsvnet vifs --format csv --columns port,mac,owner""")
@click.argument("vnet", required=False)
@format_options(VIF_KEYS, ["vnet", "bridge", "port", "mac", "owner", "ofport", "mtu"])
@pass_session
def vifs(s: Session, vnet: str | None, as_json: bool) -> None:
    """Domain ports plugged into each vnet."""
    _per_vnet(s, vnet, as_json, "vifs_view", [
        ("vnet", "VNET"), ("bridge", "BRIDGE"), ("port", "PORT"), ("mac", "MAC"),
        ("owner", "OWNER"), ("ofport", "OFPORT"), ("mtu", "MTU")], "no domain ports")


# -- status -------------------------------------------------------------------------------

#: Peer-table counters that count refused datagrams (status shows them when not zero).
DROP_REASONS = ("stale", "stranger", "spoofed", "too_old", "future", "peer_cap",
                "source_cap", "moved", "id_clash")


def _render_status(data: dict[str, Any]) -> None:
    h = data["host"]
    click.echo(f"host: datapath {h['datapath_type']}, tunnel endpoint {h['local_ip'] or '?'}, "
               f"underlay MTU {h['underlay_mtu']} ({h['underlay_mtu_source']}), "
               f"vnet MTU {h['vnet_mtu']}")
    a = data.get("agent")
    if not a:
        click.echo("agent: not running (peers below are static only)")
    else:
        discovery = ("off (registry only)" if not a.get("discovery", True) else
                     "INSECURE: no key" if a.get("insecure_discovery") else
                     f"auth {'on' if a['authenticated'] else 'off'}")
        click.echo(f"agent: {a['system_id']} up {a['uptime']}s, announcing to "
                   f"{a['group'] or 'static peers only'} every {a['interval']}s "
                   f"(hold {a['hold_time']}s, {discovery}), "
                   f"{a['syncs']} syncs, {a['vswitchd_restarts']} vswitchd restarts repaired")
        if a["peers"]:
            table(a["peers"], [("origin", "PEER"), ("address", "ADDRESS"), ("vnets", "VNETS"),
                               ("last_seen", "SEEN(s ago)"), ("via", "VIA")])
        drops = {k: v for k, v in a["counters"].items() if v and k in DROP_REASONS
                 or v and k.startswith("decode_")}
        if drops:
            click.echo("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
        for address in a.get("id_clashes", []):
            click.echo(f"SYSTEM-ID CLASH: {address} announces this host's system-id "
                       f"{a['system_id']}; give each host its own")
        for address, why in sorted((a.get("rejected_peers") or {}).items()):
            click.echo(f"peer {address} has no tunnel: {why}")
        reg = a.get("registry") or {}
        if reg:
            click.echo(f"registry: {reg.get('remotes')}, "
                       + (f"connected to {reg.get('member')}" if reg.get("connected")
                          else "not connected")
                       + (f", TLS failing: {reg['tls_error']}" if reg.get("tls_error") else ""))
        if reg.get("insecure"):
            click.echo(f"registry: INSECURE: plain TCP ({reg.get('remotes')}): anyone who "
                       "reaches it can change this host's vnets and peers; use a TLS registry "
                       "(docs/registry.md)")
    click.echo("tunnels:")
    table_or(data["tunnels"], [("address", "  PEER"), ("vnets", "VNETS"), ("tunnel", "PORT"),
                               ("tunnel_state", "STATE")], "  none")


@click.command(epilog="""\b
Examples:
  ovsvnet status
  ovsvnet status --json | jq '.agent.peers'""")
@json_option
@pass_session
def status(s: Session, as_json: bool) -> None:
    """This host, its agent and peers (when the agent runs), and its tunnels."""
    from ovsvnet.agent.control import query
    from ovsvnet.ops import views
    data = {"host": views.host_view(s.host), "agent": query(s.rundir),
            "tunnels": [t for t in views.peers_view(s.host) if t["tunnel"]]}
    emit(data, as_json, _render_status)


# -- setup / doctor / insmod ----------------------------------------------------------------

def _print_findings(findings: list[Any]) -> None:
    for f in findings:
        click.echo(f.line())


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
    from ovsvnet.cli.vnets import print_created
    from ovsvnet.doctor import checks
    from ovsvnet.doctor import findings as D
    from ovsvnet.ops import views, vnets
    from ovsvnet.ops.host import security
    found = checks.run_checks(s.db_remote, s.rundir, timeout=s.timeout, probe=False)
    _print_findings(found)
    if found[0].status == D.FAIL:
        raise OvsUnreachableError(f"Open vSwitch is not reachable at {s.db_remote}")
    view = views.host_view(s.host)
    click.echo(f"datapath {view['datapath_type']}, tunnel endpoint "
               f"{view['local_ip'] or 'unknown'}, underlay MTU {view['underlay_mtu']} "
               f"({view['underlay_mtu_source']}), vnet MTU {view['vnet_mtu']}")
    if default_vnets:
        cfgs = [VnetConfig.build(VnetId(n), vnetif=default_vnif_name(VnetId(n)))
                for n in (2, 3, 4)]
        created, report = vnets.create_many(s.host, cfgs, may_exist=True)
        sec = security(s.host)
        for cfg in cfgs:
            print_created(s, cfg, cfg.id in created, sec)
        report_sync(report)
    exit_with(D.exit_code(found))


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
    from ovsvnet.doctor import checks
    from ovsvnet.doctor import findings as D
    found = checks.run_checks(s.db_remote, s.rundir, timeout=min(s.timeout, 5.0),
                              probe=not no_probe, probe_time=probe_time)
    code = D.exit_code(found)
    if as_json:
        click.echo(json.dumps({"findings": [f.to_dict() for f in found],
                               "summary": D.summary(found), "exit_code": code},
                              indent=2, sort_keys=True))
    else:
        _print_findings(found)
        click.echo(D.summary(found))
    exit_with(code)


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
    from ovsvnet.doctor import checks
    from ovsvnet.doctor import findings as D
    from ovsvnet.ops import sync as ops_sync
    from ovsvnet.ops import views
    from ovsvnet.system import proc
    for note in D.xen_module_params(params):
        click.echo(note)
    found = checks.run_checks(s.db_remote, s.rundir, timeout=min(s.timeout, 5.0),
                              probe=False, only={"vswitchd", "datapath", "kmod"})
    _print_findings(found)
    if any(f.status == D.FAIL and f.check in ("ovsdb", "vswitchd") for f in found):
        raise OvsUnreachableError("Open vSwitch is not ready: "
                                  + ("it is installed; " + D.START_OVS_HINT_LONG
                                     if proc.which("ovs-vswitchd") else
                                     "install it: apt-get install openvswitch-switch"))
    from ovsvnet.system import progress
    with progress.task("insmod: sync", steps=6):
        report = ops_sync.sync(s.host)
    report_sync(report)
    rows, _ = views.list_view(s.host)
    click.echo(f"ready: {len(rows)} vnet(s) in place"
               + (f", {report.changed_flows} flow changes" if report.changed_flows else ""))
