"""Vnet commands: create, delete, list, show and Xen's vnet-create/-delete/-list.

Each command parses its options and hands them to the session's backend: this host
(:class:`LocalVnets`, on :mod:`ovsvnet.ops`) or, with ``--registry``, the cluster registry
(:class:`ovsvnet.cli.registry.RegistryVnets`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import click

from ovsvnet import flows as F
from ovsvnet import model as M
from ovsvnet.cli.common import (
    VNET_COLUMNS,
    VNET_KEYS,
    Session,
    dry_run_option,
    emit,
    format_options,
    json_option,
    no_dry_run_with_registry,
    pass_session,
    print_plan,
    render_ports,
    render_vnets,
    report_sync,
)
from ovsvnet.config import SECURITY_LEVELS, VnetConfig
from ovsvnet.errors import NotFoundError

if TYPE_CHECKING:
    from ovsvnet.desired import Security


class VnetBackend(Protocol):
    """Where ``create``, ``delete``, ``list``, ``show`` and the ``vnet-*`` verbs act: this
    host (:class:`ovsvnet.cli.vnets.LocalVnets`) or the cluster registry
    (:class:`ovsvnet.cli.registry.RegistryVnets`); chosen once, by ``--registry``."""

    def create(self, cfgs: list[VnetConfig], may_exist: bool,
               chassis: tuple[str, ...]) -> None: ...

    def delete(self, text: str, force: bool) -> None: ...

    def list_(self, long: bool, as_json: bool) -> None: ...

    def show(self, text: str, with_flows: bool, as_json: bool) -> None: ...

    def vnet_list(self, texts: tuple[str, ...], long: bool) -> None: ...


def backend(s: Session) -> VnetBackend:
    """Where the vnet commands act: the registry with ``--registry``, else this host."""
    if s.registry_remotes:
        from ovsvnet.cli.registry import RegistryVnets
        return RegistryVnets(s)
    return LocalVnets(s)


class LocalVnets:
    """This host's vnets (the default backend)."""

    def __init__(self, s: Session):
        self.s = s

    def create(self, cfgs: list[VnetConfig], may_exist: bool,
               chassis: tuple[str, ...], dry_run: bool = False) -> None:
        from ovsvnet.ops import vnets
        from ovsvnet.ops.host import security
        from ovsvnet.ops.sync import Plan
        from ovsvnet.system import progress
        if chassis:
            raise click.UsageError("--chassis goes with --registry (a cluster-wide vnet)")
        plan = Plan() if dry_run else None
        with progress.task(f"create {len(cfgs)} vnet{'s' if len(cfgs) > 1 else ''}", steps=6,
                           large=len(cfgs) >= progress.LARGE):
            created, report = vnets.create_many(self.s.host, cfgs, may_exist=may_exist,
                                                plan=plan)
        if plan is not None:
            for cfg in cfgs:
                verb = "would be created" if cfg.id in created else "exists (identical)"
                click.echo(f"vnet {cfg.id.short} {verb}: bridge {cfg.bridge}, "
                           f"security {cfg.security}")
            print_plan(plan)
            return
        sec = security(self.s.host)  # once, not per vnet (0.7 s at 500 vnets)
        for cfg in cfgs:
            print_created(self.s, cfg, cfg.id in created, sec)
        report_sync(report)

    def delete(self, text: str, force: bool, dry_run: bool = False) -> None:
        from ovsvnet.ops import vnets
        from ovsvnet.ops.sync import Plan
        from ovsvnet.system import progress
        plan = Plan() if dry_run else None
        with progress.task(f"delete vnet {text}", steps=6):
            cfg, report = vnets.delete(self.s.host, text, force=force, plan=plan)
        if plan is not None:
            click.echo(f"vnet {cfg.id.short} would be deleted (bridge {cfg.bridge})")
            print_plan(plan)
            return
        click.echo(f"vnet {cfg.id.short} deleted (bridge {cfg.bridge})")
        report_sync(report)

    def list_(self, long: bool, as_json: bool) -> None:
        from ovsvnet.ops import views
        rows, broken = views.list_view(self.s.host)
        emit(rows, as_json, lambda r: render_vnets(r, long))
        for b in broken:
            click.echo(f"warning: bridge {b.bridge} has a broken ovsvnet record: {b.reason}",
                       err=True)

    def show(self, text: str, with_flows: bool, as_json: bool) -> None:
        from ovsvnet.ops import views, vnets
        host = self.s.host
        cfg = vnets.resolve(host, text)
        data = views.vnet_view(host, cfg)
        data["sxp"] = cfg.to_sxp()
        data["vifs"] = views.vifs_view(host, cfg)
        if with_flows:
            data["flows"] = ["bridge " + cfg.bridge + ":"] + annotated_flows(
                self.s.rundir, cfg.bridge)
            if host.db.bridge(M.TRANSPORT_BRIDGE) is not None:
                data["flows"] += [f"bridge {M.TRANSPORT_BRIDGE}:"] + annotated_flows(
                    self.s.rundir, M.TRANSPORT_BRIDGE, cfg.key)
        emit(data, as_json, _render_show)

    def vnet_list(self, texts: tuple[str, ...], long: bool) -> None:
        from ovsvnet.ops import views, vnets
        host = self.s.host
        rows, _ = views.list_view(host)
        if not texts and not long:
            for row in rows:
                click.echo(row["id"])
            return
        chosen = [vnets.resolve(host, v) for v in texts] if texts else [
            vnets.resolve(host, r["id"]) for r in rows]
        for cfg in chosen:
            click.echo(cfg.to_sxp())


def print_created(s: Session, cfg: VnetConfig, created: bool,
                  sec: Security | None = None) -> None:
    from ovsvnet.ops import views
    view = views.vnet_view(s.host, cfg, sec)
    verb = "created" if created else "exists (identical)"
    extra = f", vnetif {cfg.vnetif}" if cfg.vnetif else ""
    click.echo(f"vnet {cfg.id.short} {verb}: bridge {cfg.bridge}{extra}, "
               f"security {cfg.security}, mtu {view['mtu']}")
    if view["state"] == "inactive":
        click.echo(f"vnet {cfg.id.short} is inactive (stays on this host): {view['reason']}",
                   err=True)


def annotated_flows(rundir: str, bridge: str, key: int | None = None) -> list[str]:
    """The bridge's ovsvnet flows, each followed by what its cookie means."""
    from ovsvnet.system import ofctl
    lines = []
    for line in ofctl.dump_vnet(rundir, bridge, key):
        c = ofctl.flow_cookie(line)
        what = F.describe_cookie(c) if c is not None else \
            "ovs-vswitchd's own flow of a fail_mode=standalone bridge: MAC learning"
        lines.append(f"{line}    # {what}")
    return lines


def _render_show(data: dict[str, Any]) -> None:
    click.echo(f"vnet {data['id']}")
    for key in ("bridge", "vnetif", "security", "key", "state", "reason", "mtu",
                "datapath_type"):
        if data.get(key) is not None:
            value = f"{data[key]:#x}" if key == "key" else data[key]
            click.echo(f"  {key + ':':<15}{value}")
    click.echo("  ports:")
    render_ports(data["ports"])
    for v in data.get("vifs", []):
        click.echo(f"  vif {v['port']}: guest mac {v['mac'] or '-'}, "
                   f"{v['owner'] or 'owner unknown'}")
    if "sxp" in data:
        click.echo(f"  definition:    {data['sxp']}")
    for line in data.get("flows", []):
        click.echo(f"  {line}")


def configs_from(files: Sequence[str], vid: str | None, bridge: str | None,
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


@click.command(epilog="""\b
Examples:
  ovsvnet create examples/vnet97.sxp
  ovsvnet create --id 97 --bridge vnet97 --vnetif vnif97
  ovsvnet create --may-exist vnet97.sxp     # no error if the same vnet exists
  ovsvnet create vnets/*.sxp                # many vnets, one transaction
  ovsvnet create --dry-run --id 97          # the OVSDB rows and flows it would add
  ovsvnet --registry 10.0.0.1,10.0.0.2,10.0.0.3 create --id 97            # every host
  ovsvnet --registry 10.0.0.1 create --id 98 --chassis h1 --chassis h2    # two hosts""")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--id", "vid", metavar="ID", help="Vnet id (hex; short form = last field).")
@click.option("--bridge", metavar="NAME", help="Bridge name (default vnet-<id>, e.g. vnet-0097).")
@click.option("--vnetif", metavar="NAME", help="Host interface on the vnet (default none).")
@click.option("--security", type=click.Choice(SECURITY_LEVELS), help="Default none.")
@click.option("--may-exist", is_flag=True, help="Succeed if an identical vnet exists.")
@click.option("--chassis", "chassis", multiple=True, metavar="NAME",
              help="With --registry: only these hosts (system-ids) carry it; default all.")
@dry_run_option
@pass_session
def create(s: Session, files: tuple[str, ...], vid: str | None, bridge: str | None,
           vnetif: str | None, security: str | None, may_exist: bool,
           chassis: tuple[str, ...], dry_run: bool) -> None:
    """Define vnets from SXP FILEs (all or none, one transaction) or from options.

    Each FILE holds one expression:
    (vnet (id 97) (bridge vnet97) (vnetif vnif97) (security none))
    With --registry the vnets are defined once for every host that follows the registry.
    A create of many vnets shows its progress on stderr.
    """
    cfgs = configs_from(files, vid, bridge, vnetif, security)
    _create(s, cfgs, may_exist, chassis, dry_run)


def _create(s: Session, cfgs: list[VnetConfig], may_exist: bool, chassis: tuple[str, ...],
            dry_run: bool) -> None:
    no_dry_run_with_registry(s, dry_run)
    if dry_run:
        LocalVnets(s).create(cfgs, may_exist, chassis, dry_run=True)
    else:
        backend(s).create(cfgs, may_exist, chassis)


def _delete(s: Session, vnet: str, force: bool, if_exists: bool, dry_run: bool) -> None:
    no_dry_run_with_registry(s, dry_run)
    try:
        if dry_run:
            LocalVnets(s).delete(vnet, force, dry_run=True)
        else:
            backend(s).delete(vnet, force)
    except NotFoundError:
        if not if_exists:
            raise
        where = "in the registry" if s.registry_remotes else "on this host"
        click.echo(f"vnet {vnet}: not {where}, nothing to delete (--if-exists)")


if_exists_option = click.option(
    "--if-exists", is_flag=True, help="No error if there is no such vnet (exit 0).")


@click.command(epilog="""\b
Examples:
  ovsvnet delete 97
  ovsvnet delete vnet97 --force     # also unplugs the domains still attached
  ovsvnet delete --if-exists 97     # exit 0 when there is no vnet 97
  ovsvnet delete --dry-run 97       # the OVSDB rows and flows it would remove""")
@click.argument("vnet")
@click.option("--force", is_flag=True, help="Delete even if domains are plugged in.")
@if_exists_option
@dry_run_option
@pass_session
def delete(s: Session, vnet: str, force: bool, if_exists: bool, dry_run: bool) -> None:
    """Delete a vnet (by id, bridge or vnetif name) and everything ovsvnet made for it.

    With --registry: delete a cluster-wide vnet; every agent removes it from its host.
    """
    _delete(s, vnet, force, if_exists, dry_run)


@click.command("list", epilog="""\b
Examples:
  ovsvnet list
  ovsvnet list --json | jq '.[].bridge'
  ovsvnet list --format csv --columns id,bridge""")
@click.option("-l", "--long", is_flag=True, help="Show the canonical 8-field ids too.")
@format_options(VNET_KEYS, [k for k, _ in VNET_COLUMNS])
@pass_session
def list_(s: Session, long: bool, as_json: bool) -> None:
    """List the vnets defined on this host (with --registry: the cluster's vnets)."""
    backend(s).list_(long, as_json)


@click.command(epilog="""\b
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
    backend(s).show(vnet, with_flows, as_json)


# -- Xen (xm) aliases ---------------------------------------------------------------------

@click.command("vnet-create", epilog="""\b
Examples:
  ovsvnet vnet-create vnet97.sxp            # xm vnet-create: a config file
  ovsvnet vnet-create 97 -s none -v vnif97  # vn vnet-create: an id and options""")
@click.argument("vnet")
@click.option("-s", "--security", type=click.Choice(SECURITY_LEVELS))
@click.option("-b", "--bridge", metavar="NAME")
@click.option("-v", "--vnetif", metavar="NAME")
@click.option("--may-exist", is_flag=True, help="Succeed if an identical vnet exists.")
@dry_run_option
@pass_session
def vnet_create(s: Session, vnet: str, security: str | None, bridge: str | None,
                vnetif: str | None, may_exist: bool, dry_run: bool) -> None:
    """Xen's vnet-create: VNET is a config file (xm) or an id (vn)."""
    if os.path.exists(vnet):
        (cfg,) = configs_from([vnet], None, bridge, vnetif, security)
    else:
        cfg = VnetConfig.build(vnet, bridge=bridge, vnetif=vnetif, security=security)
    _create(s, [cfg], may_exist, (), dry_run)


@click.command("vnet-delete", epilog="""\b
Examples:
  ovsvnet vnet-delete 97
  vn vnet-delete vnif97 -b""")
@click.argument("vnet")
@click.option("-b", "--bridge", "with_bridge", is_flag=True,
              help="Accepted for vn compatibility; the bridge always goes with the vnet.")
@click.option("--force", is_flag=True, help="Delete even if domains are plugged in.")
@if_exists_option
@dry_run_option
@pass_session
def vnet_delete(s: Session, vnet: str, with_bridge: bool, force: bool, if_exists: bool,
                dry_run: bool) -> None:
    """Xen's vnet-delete: delete a vnet by id or vnetif name."""
    _delete(s, vnet, force, if_exists, dry_run)


@click.command("vnet-list", epilog="""\b
Examples:
  ovsvnet vnet-list
  ovsvnet vnet-list -l 97""")
@click.argument("vnets", nargs=-1)
@click.option("-l", "--long", is_flag=True, help="Print each definition as SXP.")
@pass_session
def vnet_list(s: Session, vnets: tuple[str, ...], long: bool) -> None:
    """Xen's vnet-list: the ids; with -l or ids, each stored definition."""
    backend(s).vnet_list(vnets, long)
