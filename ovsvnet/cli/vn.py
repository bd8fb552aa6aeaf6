"""The rest of Xen's ``vn`` verbs: vnets, vnifs, vif-add, vif-delete, bridges (rendering only;
the views are :mod:`ovsvnet.ops.views`)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from typing import Any

import click

from ovsvnet import model as M
from ovsvnet.cli import common as C
from ovsvnet.cli.common import (
    VNET_COLUMNS,
    VNET_KEYS,
    Session,
    emit,
    format_options,
    json_option,
    pass_session,
)
from ovsvnet.config import VnetConfig
from ovsvnet.errors import NotFoundError


def _chosen(s: Session, vnets: Sequence[str]) -> list[VnetConfig]:
    from ovsvnet.ops import state
    from ovsvnet.ops import vnets as ops_vnets
    defs, _ = state.definitions(s.host.db)
    if not vnets:
        return sorted(defs.values(), key=lambda c: c.id)
    out: list[VnetConfig] = []
    for v in vnets:
        cfg = ops_vnets.resolve(s.host, v)
        if cfg not in out:
            out.append(cfg)
    return sorted(out, key=lambda c: c.id)


def _render_vnets(rows: list[dict[str, Any]], long: bool, all_: bool) -> None:
    if not rows or not (long or all_):
        C.render_vnets(rows, False)
        return
    for row in rows:
        click.echo(f"vnet {row['short']} ({row['id']}): bridge {row['bridge']}, vnetif "
                   f"{row['vnetif'] or '-'}, security {row['security']}, mtu "
                   f"{row['mtu'] or '-'}, {row['state']}"
                   + (f" ({row['reason']})" if row.get("reason") else ""))
        if long:
            click.echo("  ports:")
            C.render_ports(row["ports"])
        if all_:
            click.echo("  vifs:" + ("" if row["vifs"] else " none"))
            for v in row["vifs"]:
                click.echo(f"    {v['port']:<16}ofport {v['ofport']}  mtu {v['mtu']}  mac "
                           f"{v['mac'] or '-'}  {v['owner'] or 'owner unknown'}")
            click.echo("  varp:" + ("" if row["varp"] else " none learned"))
            for e in row["varp"]:
                click.echo(f"    {e['mac']}  peer {e['peer']}  idle {e['idle']}s")


@click.command(epilog="""\b
Examples:
  vn vnets                 # like 'ovsvnet list'
  vn vnets -l 97           # plus the bridge's ports
  vn vnets -a              # plus vifs and learned remote MACs (varp)
  ovsvnet vnets -la --json
  ovsvnet vnets --format csv --columns short,bridge,mtu""")
@click.argument("vnets", nargs=-1, metavar="[VNET]...")
@click.option("-a", "--all", "all_", is_flag=True, help="Add vifs and varp entries.")
@click.option("-l", "--long", is_flag=True, help="Add the bridge ports.")
@format_options(VNET_KEYS[:13] + ["vifs", "varp"], [k for k, _ in VNET_COLUMNS])
@pass_session
def vnets(s: Session, vnets: tuple[str, ...], all_: bool, long: bool, as_json: bool) -> None:
    """Xen's 'vn vnets': the vnets (all, or those named by id, bridge or vnetif), by id."""
    from ovsvnet.ops import views
    rows = []
    for cfg in _chosen(s, vnets):
        row = views.vnet_view(s.host, cfg)
        if all_:
            row["vifs"] = views.vifs_view(s.host, cfg)
            row["varp"] = views.varp_view(s.host, cfg)
        rows.append(row)
    emit(rows, as_json, lambda r: _render_vnets(r, long, all_))


@click.command(epilog="""\b
Examples:
  vn vnifs
  ovsvnet vnifs 97 --json
  ovsvnet vnifs --format csv --columns vnetif,mac,addresses""")
@click.argument("vnets", nargs=-1, metavar="[VNET]...")
@format_options(["vnet", "vnetif", "bridge", "mac", "mtu", "admin_state", "link_state", "ofport",
                 "addresses", "error"],
                ["vnet", "vnetif", "mac", "mtu", "admin_state", "link_state", "addresses",
                 "error"])
@pass_session
def vnifs(s: Session, vnets: tuple[str, ...], as_json: bool) -> None:
    """Xen's 'vn vnifs': the vnets' host interfaces (vnetif) with MAC, MTU, state, addresses."""
    from ovsvnet.ops import views
    rows = views.vnifs_view(s.host, _chosen(s, vnets))
    emit(rows, as_json, lambda r: C.table_or(r, [
        ("vnet", "VNET"), ("vnetif", "VNETIF"), ("mac", "MAC"), ("mtu", "MTU"),
        ("admin_state", "ADMIN"), ("link_state", "LINK"), ("addresses", "ADDRESSES"),
        ("error", "ERROR")], "no vnet interfaces (no vnet has a vnetif)"))


def _mac(s: Session, vmac: str, interface: bool) -> str:
    from ovsvnet.ops import views
    return views.interface_mac(s.host, vmac) if interface else views.parse_mac(vmac)


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
    from ovsvnet.ops import views
    from ovsvnet.ops import vnets as ops_vnets
    cfg = ops_vnets.resolve(s.host, vnet)
    mac = _mac(s, vmac, interface)
    local = views.local_mac(s.host, cfg, mac)
    remote = [r for r in views.varp_view(s.host, cfg) if r["mac"] == mac]
    data: dict[str, Any] = {"vnet": cfg.id.short, "mac": mac, "added": False, "local": None,
                            "remote": None}
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
        click.echo(f"  {mac} is on this host, port {data['local']['port']} (seen "
                   f"{data['local']['age']}s ago)")
    if data["remote"]:
        click.echo(f"  {mac} is behind peer {data['remote']['peer']} (idle "
                   f"{data['remote']['idle']}s)")
    if not data["local"] and not data["remote"]:
        click.echo(f"  {mac} has not been seen yet; it is learned from its first frame")


@click.command("vif-delete", epilog="""\b
Examples:
  vn vif-delete 97 aa:00:00:12:34:56    # after a domain moved away, or to re-learn it
  vn vif-delete -i 97 vif3.0

\b
What it does on Open vSwitch: forgets VMAC on that vnet, both in the vnet bridge's MAC
table and as a learned remote MAC on the transport bridge (like varp-flush for one
address). It is learned again from the next frame it sends. Exit 4 if the MAC was not
known (exit 0 with --if-exists; the vnet must exist either way, as ovs-vsctl's
--if-exists del-port still needs its bridge).""")
@click.argument("vnet")
@click.argument("vmac")
@click.option("-i", "--interface", is_flag=True,
              help="VMAC names an interface; use its MAC.")
@click.option("--if-exists", is_flag=True, help="No error if VMAC is not known (exit 0).")
@pass_session
def vif_delete(s: Session, vnet: str, vmac: str, interface: bool, if_exists: bool) -> None:
    """Xen's 'vn vif-delete': forget VMAC on VNET (local MAC table and learned remote entry)."""
    from ovsvnet.ops import views
    from ovsvnet.ops import vnets as ops_vnets
    cfg = ops_vnets.resolve(s.host, vnet)
    mac = _mac(s, vmac, interface)
    forgot = []
    local = views.local_mac(s.host, cfg, mac)
    if local is not None:
        views.forget_local(s.host, cfg, mac, local["port"])
        forgot.append(f"MAC table entry of {cfg.bridge} (port {local['port']})")
    remote = [r for r in views.varp_view(s.host, cfg) if r["mac"] == mac]
    if remote:
        views.forget_remote(s.host, cfg, mac)
        forgot.append(f"learned remote entry (peer {remote[0]['peer']})")
    if not forgot and if_exists:
        click.echo(f"vnet {cfg.id.short}: {mac} is not known, nothing to forget (--if-exists)")
        return
    if not forgot:
        raise NotFoundError(f"vmac: {mac} is not known on vnet {cfg.id.short} (nothing to "
                            "forget)")
    click.echo(f"vnet {cfg.id.short}: forgot {mac}: " + "; ".join(forgot))


@click.command(epilog="""\b
Examples:
  vn bridges
  vn bridges -l                 # with each bridge's ports
  ovsvnet bridges --json
  ovsvnet bridges --format csv --columns name,role""")
@click.option("-l", "--long", is_flag=True, help="List each bridge's ports.")
@format_options(["name", "ovsvnet", "role", "datapath_type", "fail_mode", "ports"],
                ["name", "ovsvnet", "role", "datapath_type", "fail_mode", "ports"])
@pass_session
def bridges(s: Session, long: bool, as_json: bool) -> None:
    """Xen's 'vn bridges': every OVS bridge and its ports; ovsvnet's are marked '*'."""
    from ovsvnet.ops import views

    def render(rows: list[dict[str, Any]]) -> None:
        if not rows:
            click.echo("no bridges")
            return
        if not long:
            C.table([{**r, "mark": "*" if r["ovsvnet"] else " ", "nports": len(r["ports"]),
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

    emit(views.bridges_view(s.host), as_json, render)
