"""The ``ovsvnet`` command (and ``vn``): a thin click layer over :mod:`ovsvnet.ops`.

Library errors are turned into one-line messages and exit codes at one place
(:func:`main`); commands return data and one renderer prints it as a table or, with
``--json``, as JSON. The OVSDB connection is opened lazily, so ``--help`` works anywhere.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Sequence

import click

from ovsvnet import __version__
from ovsvnet import flows as F
from ovsvnet import model as M
from ovsvnet import ofctl, ops
from ovsvnet.config import SECURITY_LEVELS, VnetConfig
from ovsvnet.errors import EXIT_CODES, ConfigError, OvsvnetError
from ovsvnet.ovsdb import DEFAULT_DB, Ovsdb, quiet_python_ovs, rundir_for


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Session:
    """What every command needs: where OVS (and the registry) is, opened on first use."""

    def __init__(self, db: str, rundir: str | None, timeout: float,
                 registry: str | None = None):
        self.db_remote = db
        self.rundir = rundir or rundir_for(db)
        self.timeout = timeout
        self.registry_remotes = registry
        self._host: ops.Host | None = None
        self._registry: Any = None

    @property
    def host(self) -> ops.Host:
        if self._host is None:
            quiet_python_ovs()
            self._host = ops.Host(Ovsdb(self.db_remote, self.timeout), self.rundir)
        return self._host

    @property
    def registry(self) -> Any:
        """The cluster registry client (:class:`ovsvnet.registry_client.RegistryClient`)."""
        if self._registry is None:
            from ovsvnet.registry_client import RegistryClient
            quiet_python_ovs()
            self._registry = RegistryClient(self.registry_remotes or "", self.timeout)
        return self._registry

    def close(self) -> None:
        if self._host is not None:
            self._host.db.close()
        if self._registry is not None:
            self._registry.close()


pass_session = click.make_pass_decorator(Session)


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        render(data)


def table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Print rows as aligned columns; ``columns`` = [(key, header), ...]."""
    cells = [[h for _, h in columns]]
    for row in rows:
        cells.append(["-" if row.get(k) in (None, "", []) else
                      ",".join(map(str, row[k])) if isinstance(row.get(k), list)
                      else str(row[k]) for k, _ in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON instead of a table.")(f)


def report_sync(report: ops.SyncReport, verbose: bool = False) -> None:
    for failure in report.failed:
        click.echo(f"warning: {failure}", err=True)
    if verbose:
        click.echo(f"flows: {report.changed_flows} changed"
                   + (f", {report.pruned_learned} stale learned entries removed"
                      if report.pruned_learned else ""))


EXIT_HELP = "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


@click.group(context_settings=CONTEXT, epilog=f"""\b
Examples:
  ovsvnet create examples/vnet97.sxp
  ovsvnet create --id 98 --security none --vnetif vnif98
  ovsvnet list
  ovsvnet peer-add 192.0.2.7
  ovsvnet --db unix:/tmp/lab/h1/db.sock show 97
  ovsvnet --registry 10.0.0.1,10.0.0.2,10.0.0.3 create --id 97   # on every host

\b
Exit codes:
{EXIT_HELP}""")
@click.option("--db", default=DEFAULT_DB, show_default=True, envvar="OVSVNET_DB",
              metavar="REMOTE", help="OVSDB to manage (also $OVSVNET_DB).")
@click.option("--rundir", default=None, metavar="DIR",
              help="ovs-vswitchd's run directory (default: $OVS_RUNDIR, else the directory "
                   "of a unix: --db socket).")
@click.option("--timeout", default=10.0, show_default=True, metavar="SECONDS",
              help="How long to wait for OVSDB, ovs-vswitchd or the registry.")
@click.option("--registry", default=None, envvar="OVSVNET_REGISTRY", metavar="REMOTES",
              help="The cluster registry (ADDR,ADDR,... or tcp:ADDR:PORT,...; also "
                   "$OVSVNET_REGISTRY): create, delete, list, show and the vnet-* verbs act "
                   "on its cluster-wide vnets instead of this host's.")
@click.version_option(__version__, "-V", "--version")
@click.pass_context
def cli(ctx: click.Context, db: str, rundir: str | None, timeout: float,
        registry: str | None) -> None:
    """Virtual networks (vnets) spanning hosts, on Open vSwitch.

    A vnet is a private LAN with a 128-bit id, an OVS bridge that domains plug into, and
    a security level. Frames cross hosts in VXLAN tunnels keyed by the vnet id.
    """
    session = Session(db, rundir, timeout, registry or None)
    ctx.obj = session
    ctx.call_on_close(session.close)


# -- vnets ----------------------------------------------------------------------------------

def _configs_from(files: Sequence[str], vid: str | None, bridge: str | None,
                  vnetif: str | None, security: str | None) -> list[VnetConfig]:
    if files and vid:
        raise click.UsageError("give FILEs or --id, not both")
    if files:
        if bridge or vnetif or security:
            raise click.UsageError("--bridge/--vnetif/--security go with --id, not with FILE")
        return [VnetConfig.from_file(f) for f in files]
    if not vid:
        raise click.UsageError("give a config FILE or --id ID")
    return [VnetConfig.build(vid, bridge=bridge, vnetif=vnetif, security=security)]


def _print_created(cfg: VnetConfig, created: bool, host: ops.Host) -> None:
    view = ops.vnet_view(host, cfg)
    verb = "created" if created else "exists (identical)"
    extra = f", vnetif {cfg.vnetif}" if cfg.vnetif else ""
    click.echo(f"vnet {cfg.id.short} {verb}: bridge {cfg.bridge}{extra}, "
               f"security {cfg.security}, mtu {view['mtu']}")
    if view["state"] == "inactive":
        click.echo(f"vnet {cfg.id.short} is inactive (stays on this host): {view['reason']}",
                   err=True)


@cli.command(epilog="""\b
Examples:
  ovsvnet create examples/vnet97.sxp
  ovsvnet create --id 97 --bridge vnet97 --vnetif vnif97
  ovsvnet create --may-exist vnet97.sxp     # no error if the same vnet exists
  ovsvnet create vnets/*.sxp                # many vnets, one transaction
  ovsvnet --registry 10.0.0.1,10.0.0.2,10.0.0.3 create --id 97            # every host
  ovsvnet --registry 10.0.0.1 create --id 98 --chassis h1 --chassis h2    # two hosts""")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--id", "vid", metavar="ID", help="Vnet id (hex; short form = last field).")
@click.option("--bridge", metavar="NAME", help="Bridge name (default vnet<id>).")
@click.option("--vnetif", metavar="NAME", help="Host interface on the vnet (default none).")
@click.option("--security", type=click.Choice(SECURITY_LEVELS), help="Default none.")
@click.option("--may-exist", is_flag=True, help="Succeed if an identical vnet exists.")
@click.option("--chassis", "chassis", multiple=True, metavar="NAME",
              help="With --registry: only these hosts (system-ids) carry it; default all.")
@pass_session
def create(s: Session, files: tuple[str, ...], vid: str | None, bridge: str | None,
           vnetif: str | None, security: str | None, may_exist: bool,
           chassis: tuple[str, ...]) -> None:
    """Define vnets from SXP FILEs (all or none, one transaction) or from options.

    Each FILE holds one expression:
    (vnet (id 97) (bridge vnet97) (vnetif vnif97) (security none))
    With --registry the vnets are defined once for every host that follows the registry.
    """
    cfgs = _configs_from(files, vid, bridge, vnetif, security)
    if s.registry_remotes:
        from ovsvnet import cli_registry
        return cli_registry.create(s, cfgs, may_exist, chassis)
    if chassis:
        raise click.UsageError("--chassis goes with --registry (a cluster-wide vnet)")
    created, report = ops.create_many(s.host, cfgs, may_exist=may_exist)
    for cfg in cfgs:
        _print_created(cfg, cfg.id in created, s.host)
    report_sync(report)


@cli.command(epilog="""\b
Examples:
  ovsvnet delete 97
  ovsvnet delete vnet97 --force     # also unplugs the domains still attached""")
@click.argument("vnet")
@click.option("--force", is_flag=True, help="Delete even if domains are plugged in.")
@pass_session
def delete(s: Session, vnet: str, force: bool) -> None:
    """Delete a vnet (by id, bridge or vnetif name) and everything ovsvnet made for it.

    With --registry: delete a cluster-wide vnet; every agent removes it from its host.
    """
    if s.registry_remotes:
        from ovsvnet import cli_registry
        return cli_registry.delete(s, vnet, force)
    cfg, report = ops.delete(s.host, vnet, force=force)
    click.echo(f"vnet {cfg.id.short} deleted (bridge {cfg.bridge})")
    report_sync(report)


def _render_list(rows: list[dict[str, Any]], long: bool) -> None:
    if not rows:
        click.echo("no vnets")
        return
    cols = [("short", "ID"), ("bridge", "BRIDGE"), ("vnetif", "VNETIF"),
            ("security", "SECURITY"), ("mtu", "MTU"), ("state", "STATE"),
            ("domains", "DOMAINS")]
    if long:
        cols.insert(1, ("id", "CANONICAL ID"))
    table(rows, cols)
    for row in rows:
        if row.get("reason"):
            click.echo(f"  {row['short']}: {row['reason']}")


@cli.command("list", epilog="""\b
Examples:
  ovsvnet list
  ovsvnet list --json | jq '.[].bridge'""")
@click.option("-l", "--long", is_flag=True, help="Show the canonical 8-field ids too.")
@json_option
@pass_session
def list_(s: Session, long: bool, as_json: bool) -> None:
    """List the vnets defined on this host (with --registry: the cluster's vnets)."""
    if s.registry_remotes:
        from ovsvnet import cli_registry
        return cli_registry.list_(s, long, as_json)
    rows, broken = ops.list_view(s.host)
    emit(rows, as_json, lambda r: _render_list(r, long))
    for b in broken:
        click.echo(f"warning: bridge {b.bridge} has a broken ovsvnet record: {b.reason}",
                   err=True)


def _render_show(data: dict[str, Any]) -> None:
    click.echo(f"vnet {data['id']}")
    for key in ("bridge", "vnetif", "security", "key", "state", "reason", "mtu",
                "datapath_type"):
        if data.get(key) is not None:
            value = f"{data[key]:#x}" if key == "key" else data[key]
            click.echo(f"  {key + ':':<15}{value}")
    click.echo("  ports:")
    for p in data["ports"]:
        err = f"  error: {p['error']}" if p.get("error") else ""
        click.echo(f"    {p['name']:<16}{p['kind']:<8} ofport {p['ofport']}  "
                   f"mtu {p['mtu']}{err}")
    if "sxp" in data:
        click.echo(f"  definition:    {data['sxp']}")
    for line in data.get("flows", []):
        click.echo(f"  {line}")


def annotated_flows(host: ops.Host, bridge: str, key: int | None = None) -> list[str]:
    """The bridge's ovsvnet flows, each followed by what its cookie means."""
    match = [f"cookie={F.cookie(F.KIND_VNET, key):#x}/{0xFFFF_FFFF_FFFF_FFFF:#x}"] \
        if key is not None else []
    lines = []
    for line in ofctl.dump(host.rundir, bridge, *match):
        c = ofctl.flow_cookie(line)
        lines.append(f"{line}    # {F.describe_cookie(c) if c is not None else ''}")
    return lines


@cli.command(epilog="""\b
Examples:
  ovsvnet show 97
  ovsvnet show vnet97 --flows
  ovsvnet show 0000:0000:0000:0000:0000:0000:0000:0097 --json""")
@click.argument("vnet")
@click.option("--flows", "with_flows", is_flag=True, help="Also the vnet's OpenFlow rules.")
@json_option
@pass_session
def show(s: Session, vnet: str, with_flows: bool, as_json: bool) -> None:
    """Show one vnet: definition, ports, MTU and state (with --registry: its cluster-wide
    definition and the hosts that carry it)."""
    if s.registry_remotes:
        from ovsvnet import cli_registry
        return cli_registry.show(s, vnet, as_json)
    cfg = ops.resolve(s.host, vnet)
    data = ops.vnet_view(s.host, cfg)
    data["sxp"] = cfg.to_sxp()
    if with_flows:
        data["flows"] = ["bridge " + cfg.bridge + ":"] + annotated_flows(s.host, cfg.bridge)
        if s.host.db.bridge(M.TRANSPORT_BRIDGE) is not None:
            data["flows"] += [f"bridge {M.TRANSPORT_BRIDGE}:"] + annotated_flows(
                s.host, M.TRANSPORT_BRIDGE, cfg.key)
    emit(data, as_json, _render_show)


# -- Xen (xm) aliases ---------------------------------------------------------------------

@cli.command("vnet-create", epilog="""\b
Examples:
  ovsvnet vnet-create vnet97.sxp            # xm vnet-create: a config file
  ovsvnet vnet-create 97 -s none -v vnif97  # vn vnet-create: an id and options""")
@click.argument("vnet")
@click.option("-s", "--security", type=click.Choice(SECURITY_LEVELS))
@click.option("-b", "--bridge", metavar="NAME")
@click.option("-v", "--vnetif", metavar="NAME")
@click.option("--may-exist", is_flag=True)
@pass_session
def vnet_create(s: Session, vnet: str, security: str | None, bridge: str | None,
                vnetif: str | None, may_exist: bool) -> None:
    """Xen's vnet-create: VNET is a config file (xm) or an id (vn)."""
    if os.path.exists(vnet):
        (cfg,) = _configs_from([vnet], None, bridge, vnetif, security)
    else:
        cfg = VnetConfig.build(vnet, bridge=bridge, vnetif=vnetif, security=security)
    if s.registry_remotes:
        from ovsvnet import cli_registry
        return cli_registry.create(s, [cfg], may_exist, ())
    created, report = ops.create(s.host, cfg, may_exist=may_exist)
    _print_created(cfg, created, s.host)
    report_sync(report)


@cli.command("vnet-delete", epilog="""\b
Examples:
  ovsvnet vnet-delete 97
  vn vnet-delete vnif97 -b""")
@click.argument("vnet")
@click.option("-b", "--bridge", "with_bridge", is_flag=True,
              help="Accepted for vn compatibility; the bridge always goes with the vnet.")
@click.option("--force", is_flag=True, help="Delete even if domains are plugged in.")
@pass_session
def vnet_delete(s: Session, vnet: str, with_bridge: bool, force: bool) -> None:
    """Xen's vnet-delete: delete a vnet by id or vnetif name."""
    if s.registry_remotes:
        from ovsvnet import cli_registry
        return cli_registry.delete(s, vnet, force)
    cfg, report = ops.delete(s.host, vnet, force=force)
    click.echo(f"vnet {cfg.id.short} deleted (bridge {cfg.bridge})")
    report_sync(report)


@cli.command("vnet-list", epilog="""\b
Examples:
  ovsvnet vnet-list
  ovsvnet vnet-list -l 97""")
@click.argument("vnets", nargs=-1)
@click.option("-l", "--long", is_flag=True, help="Print each definition as SXP.")
@pass_session
def vnet_list(s: Session, vnets: tuple[str, ...], long: bool) -> None:
    """Xen's vnet-list: the ids; with -l or ids, each stored definition."""
    if s.registry_remotes:
        from ovsvnet import cli_registry
        return cli_registry.vnet_list(s, vnets, long)
    rows, _ = ops.list_view(s.host)
    if not vnets and not long:
        for row in rows:
            click.echo(row["id"])
        return
    chosen = [ops.resolve(s.host, v) for v in vnets] if vnets else [
        ops.resolve(s.host, r["id"]) for r in rows]
    for cfg in chosen:
        click.echo(cfg.to_sxp())


# -- host ---------------------------------------------------------------------------------

@cli.command(epilog="""\b
Examples:
  ovsvnet sync          # after an ovs-vswitchd restart, or any time
  ovsvnet sync -v""")
@click.option("-v", "--verbose", is_flag=True, help="Say how many flows changed.")
@pass_session
def sync(s: Session, verbose: bool) -> None:
    """Bring bridges, ports, tunnels, MTU and flows in line with the stored state."""
    report = ops.sync(s.host)
    report_sync(report, verbose=True if verbose else False)
    if not verbose:
        click.echo("in sync" if not report.changed_flows
                   else f"synced: {report.changed_flows} flow changes")


# -- peers --------------------------------------------------------------------------------

@cli.command("peer-add", epilog="""\b
Examples:
  ovsvnet peer-add 192.0.2.7
  ovsvnet peer-add host7.example.net --port 4790""")
@click.argument("host")
@click.option("-p", "--port", default=M.VXLAN_PORT, show_default=True, type=int,
              help="The peer's VXLAN UDP port.")
@pass_session
def peer_add(s: Session, host: str, port: int) -> None:
    """Add a static peer (address or host name): it gets tunnels for every vnet."""
    address, added, report = ops.peer_add(s.host, host, port)
    click.echo(f"peer {address} {'added' if added else 'already present'} (port {port})")
    report_sync(report)


@cli.command("peer-delete", epilog="""\b
Examples:
  ovsvnet peer-delete 192.0.2.7""")
@click.argument("host")
@pass_session
def peer_delete(s: Session, host: str) -> None:
    """Remove a static peer and its tunnel."""
    address, report = ops.peer_delete(s.host, host)
    click.echo(f"peer {address} deleted")
    report_sync(report)


@cli.command(epilog="""\b
Examples:
  ovsvnet peers
  ovsvnet peers --json""")
@json_option
@pass_session
def peers(s: Session, as_json: bool) -> None:
    """List peers and the state of their tunnels."""
    rows = ops.peers_view(s.host)
    emit(rows, as_json, lambda r: table(r, [
        ("address", "PEER"), ("port", "PORT"), ("static", "STATIC"), ("origin", "HOST"),
        ("vnets", "VNETS"), ("tunnel", "TUNNEL"), ("tunnel_state", "STATE")])
        if r else click.echo("no peers"))


# -- learned state (vn varp, vifs) --------------------------------------------------------

@cli.command(epilog="""\b
Examples:
  ovsvnet varp          # every vnet
  ovsvnet varp 97 --json""")
@click.argument("vnet", required=False)
@json_option
@pass_session
def varp(s: Session, vnet: str | None, as_json: bool) -> None:
    """Remote MAC addresses learned per vnet, and the peer each lives behind."""
    cfg = ops.resolve(s.host, vnet) if vnet else None
    rows = ops.varp_view(s.host, cfg)
    emit(rows, as_json, lambda r: table(r, [
        ("vnet", "VNET"), ("mac", "MAC"), ("peer", "PEER"), ("idle", "IDLE(s)")])
        if r else click.echo("no learned addresses"))


@cli.command("varp-flush", epilog="""\b
Examples:
  ovsvnet varp-flush
  ovsvnet varp-flush 97""")
@click.argument("vnet", required=False)
@pass_session
def varp_flush(s: Session, vnet: str | None) -> None:
    """Forget learned remote MACs (they are relearned by flooding)."""
    cfg = ops.resolve(s.host, vnet) if vnet else None
    ops.varp_flush(s.host, cfg)
    click.echo("flushed")


@cli.command(epilog="""\b
Examples:
  ovsvnet vifs
  ovsvnet vifs 97 --json""")
@click.argument("vnet", required=False)
@json_option
@pass_session
def vifs(s: Session, vnet: str | None, as_json: bool) -> None:
    """Domain ports plugged into each vnet."""
    cfg = ops.resolve(s.host, vnet) if vnet else None
    rows = ops.vifs_view(s.host, cfg)
    emit(rows, as_json, lambda r: table(r, [
        ("vnet", "VNET"), ("bridge", "BRIDGE"), ("port", "PORT"), ("mac", "MAC"),
        ("ofport", "OFPORT"), ("mtu", "MTU")]) if r else click.echo("no domain ports"))


# -- agent ----------------------------------------------------------------------------------

@cli.command(epilog="""\b
Examples:
  ovsvnet agent                                  # multicast 224.10.0.1:1798, every 5 s
  ovsvnet agent --interval 2 --key-file /etc/ovsvnet/discovery.key
  ovsvnet agent --no-multicast                   # static peers only (ovsvnet peer-add)
  ovsvnet agent --registry 10.0.0.1,10.0.0.2,10.0.0.3 --no-multicast   # the registry only
  ovs-appctl -t /var/run/openvswitch/ovsvnet-agent.ctl status""")
@click.option("--group", default="224.10.0.1", show_default=True,
              help="Multicast group for announcements.")
@click.option("--port", "disc_port", default=1798, show_default=True, type=int,
              help="UDP port for announcements.")
@click.option("--ttl", default=1, show_default=True, type=click.IntRange(1, 255),
              help="Multicast TTL (1 = this segment only; use peer-add across routers).")
@click.option("--interface", metavar="ADDRESS",
              help="Local address to send and join multicast on (default: tunnel endpoint).")
@click.option("--interval", default=5.0, show_default=True,
              type=click.FloatRange(0.2, 3600), help="Seconds between announcements.")
@click.option("--hold", type=click.IntRange(1, 65535), metavar="SECONDS",
              help="Peers expire after this long unheard (default 3 intervals).")
@click.option("--key-file", type=click.Path(dir_okay=False),
              help="Shared key (mode 0600): announcements are HMAC-signed and checked.")
@click.option("--no-multicast", is_flag=True, help="Only talk to static peers.")
@click.option("--canary-interval", default=2.0, show_default=True,
              type=click.FloatRange(0.1, 60), metavar="SECONDS",
              help="How often to check that ovs-vswitchd still has ovsvnet's flows.")
@click.option("--registry", "agent_registry", metavar="REMOTES",
              help="Follow the cluster registry: carry its vnets, take peers from its chassis "
                   "table, publish this host (default: the global --registry).")
@click.option("--pidfile", type=click.Path(dir_okay=False), help="Write the pid here.")
@pass_session
def agent(s: Session, group: str, disc_port: int, ttl: int, interface: str | None,
          interval: float, hold: int | None, key_file: str | None, no_multicast: bool,
          canary_interval: float, agent_registry: str | None, pidfile: str | None) -> None:
    """Run the agent: discover peers, keep tunnels and flows right, repair after restarts.

    With --registry it also carries the registry's vnets and finds peers in its chassis
    table (beside multicast, unless --no-multicast); while the registry is unreachable it
    keeps the last known state and catches up when it returns.
    """
    from ovsvnet.agent import Agent, AgentOptions, read_key_file
    try:
        import ipaddress
        if not ipaddress.ip_address(group).is_multicast:
            raise ConfigError(f"group: {group} is not a multicast address")
    except ValueError as exc:
        raise ConfigError(f"group: {group} is not an IP address") from exc
    opts = AgentOptions(group=group, port=disc_port, ttl=ttl, interface=interface,
                        interval=interval, hold_time=hold,
                        key=read_key_file(key_file) if key_file else None,
                        multicast=not no_multicast, canary_interval=canary_interval,
                        registry=agent_registry or s.registry_remotes)
    if opts.registry:
        from ovsvnet.registry import normalize_remotes
        normalize_remotes(opts.registry)  # a typo is an error now, not a silent retry loop
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        Agent(s.host, opts).run()
    finally:
        if pidfile and os.path.exists(pidfile):
            os.unlink(pidfile)


def _render_status(data: dict[str, Any]) -> None:
    h = data["host"]
    click.echo(f"host: datapath {h['datapath_type']}, tunnel endpoint {h['local_ip'] or '?'}, "
               f"underlay MTU {h['underlay_mtu']} ({h['underlay_mtu_source']}), "
               f"vnet MTU {h['vnet_mtu']}")
    a = data.get("agent")
    if not a:
        click.echo("agent: not running (peers below are static only)")
    else:
        click.echo(f"agent: {a['system_id']} up {a['uptime']}s, announcing to "
                   f"{a['group'] or 'static peers only'} every {a['interval']}s "
                   f"(hold {a['hold_time']}s, auth {'on' if a['authenticated'] else 'off'}), "
                   f"{a['syncs']} syncs, {a['vswitchd_restarts']} vswitchd restarts repaired")
        if a["peers"]:
            table(a["peers"], [("origin", "PEER"), ("address", "ADDRESS"), ("vnets", "VNETS"),
                               ("last_seen", "SEEN(s ago)"), ("via", "VIA")])
        drops = {k: v for k, v in a["counters"].items()
                 if v and (k.startswith("decode_") or k in ("stale", "stranger"))}
        if drops:
            click.echo("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
    click.echo("tunnels:")
    table(data["tunnels"], [("address", "  PEER"), ("vnets", "VNETS"), ("tunnel", "PORT"),
                            ("tunnel_state", "STATE")]) if data["tunnels"] else \
        click.echo("  none")


@cli.command(epilog="""\b
Examples:
  ovsvnet status
  ovsvnet status --json | jq '.agent.peers'""")
@json_option
@pass_session
def status(s: Session, as_json: bool) -> None:
    """This host, its agent and peers (when the agent runs), and its tunnels."""
    from ovsvnet.agent import query
    data = {"host": ops.host_view(s.host), "agent": query(s.rundir),
            "tunnels": [t for t in ops.peers_view(s.host) if t["tunnel"]]}
    emit(data, as_json, _render_status)


def _register_optional() -> None:
    """Subcommand groups that live in their own modules."""
    from ovsvnet.cli_sandbox import sandbox
    cli.add_command(sandbox)
    from ovsvnet import cli_registry
    cli_registry.register(cli)
    try:
        from ovsvnet import cli_host
    except ImportError:  # pragma: no cover - the module is being written
        return
    cli_host.register(cli)


_register_optional()


def main(argv: Sequence[str] | None = None, prog_name: str = "ovsvnet") -> None:
    """Entry point: run the CLI, turning ovsvnet errors into one line and an exit code."""
    try:
        # with standalone_mode=False click returns what ctx.exit(code) set instead of
        # exiting; keep that code
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name=prog_name,
                      standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        # One line, like every other error: usage errors name the option and the rule.
        click.echo(f"{prog_name}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OvsvnetError as exc:
        click.echo(f"{prog_name}: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


def vn_main() -> None:
    """``vn``: the Xen vnet tool's name for the same commands."""
    main(prog_name="vn")
