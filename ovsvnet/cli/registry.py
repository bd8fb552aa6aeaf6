"""The cluster registry on the command line.

* ``ovsvnet registry init|join|start|stop|status|chassis-delete``: run and inspect registry
  members (:mod:`ovsvnet.registry.server`) and the registry's contents.
* With the global ``--registry REMOTES`` (or ``$OVSVNET_REGISTRY``), ``create``, ``delete``,
  ``list``, ``show`` and Xen's ``vnet-create``/``vnet-delete``/``vnet-list`` act on the
  cluster-wide definitions instead of this host's: :class:`RegistryVnets` is their backend,
  with the local commands' output style, errors and exit codes.
"""

from __future__ import annotations

import os
from typing import Any

import click

from ovsvnet.cli.common import CONTEXT, Session, emit, exit_with, json_option, pass_session, table
from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConfigError

DEFAULT_DIR = "/var/lib/ovsvnet/registry"
DIR_HELP = f"The member's directory (default {DEFAULT_DIR})."
#: Default TCP ports (kept here so --help needs no registry import; checked against
#: ovsvnet.registry.model by a unit test).
CLIENT_PORT = 6645
RAFT_PORT = 6646


class RegistryVnets:
    """The cluster's vnets (the backend with ``--registry``)."""

    def __init__(self, s: Session):
        self.s = s

    def create(self, cfgs: list[VnetConfig], may_exist: bool,
               chassis: tuple[str, ...]) -> None:
        from ovsvnet.registry import client as C
        created = C.create_many(self.s.registry, cfgs, may_exist, frozenset(chassis))
        for cfg in cfgs:
            verb = "created in the registry" if cfg.id in created else \
                "exists in the registry (identical)"
            extra = f", vnetif {cfg.vnetif}" if cfg.vnetif else ""
            where = f", on {','.join(sorted(chassis))}" if chassis else ", on every host"
            click.echo(f"vnet {cfg.id.short} {verb}: bridge {cfg.bridge}{extra}, "
                       f"security {cfg.security}{where}")

    def delete(self, text: str, force: bool) -> None:
        from ovsvnet.registry import client as C
        rv = C.delete(self.s.registry, text, force=force)
        click.echo(f"vnet {rv.cfg.id.short} deleted from the registry (bridge "
                   f"{rv.cfg.bridge}); agents remove it from their hosts")

    def list_(self, long: bool, as_json: bool) -> None:
        from ovsvnet.registry import client as C
        rows, broken = C.list_view(self.s.registry)
        emit(rows, as_json, lambda r: _render_list(r, long))
        for vid, reason in sorted(broken.items()):
            click.echo(f"warning: registry vnet {vid} breaks a rule and is skipped by agents: "
                       f"{reason}", err=True)

    def show(self, text: str, with_flows: bool, as_json: bool) -> None:
        from ovsvnet.registry import client as C
        c = self.s.registry
        rv = C.resolve(c, text)
        data = C.vnet_view(c, rv)
        data["sxp"] = rv.cfg.to_sxp()
        emit(data, as_json, _render_show)

    def vnet_list(self, texts: tuple[str, ...], long: bool) -> None:
        from ovsvnet.registry import client as C
        c = self.s.registry
        vnets, _ = c.vnets()
        if not texts and not long:
            for vid in sorted(vnets, key=lambda v: v.value):
                click.echo(vid.canonical)
            return
        chosen = [C.resolve(c, t) for t in texts] if texts else [
            vnets[v] for v in sorted(vnets, key=lambda v: v.value)]
        for rv in chosen:
            click.echo(rv.cfg.to_sxp())


def _render_list(rows: list[dict[str, Any]], long: bool) -> None:
    if not rows:
        click.echo("no vnets in the registry")
        return
    for row in rows:
        row["scope"] = row["chassis"] or "all"
    cols = [("short", "ID"), ("bridge", "BRIDGE"), ("vnetif", "VNETIF"),
            ("security", "SECURITY"), ("scope", "CHASSIS"), ("hosts", "HOSTS"),
            ("domains_on", "DOMAINS ON")]
    if long:
        cols.insert(1, ("id", "CANONICAL ID"))
    table(rows, cols)


def _render_show(data: dict[str, Any]) -> None:
    click.echo(f"vnet {data['id']} (registry)")
    for key in ("bridge", "vnetif", "security", "key"):
        if data.get(key) is not None:
            value = f"{data[key]:#x}" if key == "key" else data[key]
            click.echo(f"  {key + ':':<15}{value}")
    click.echo(f"  {'chassis:':<15}{','.join(data['chassis']) or 'all'}")
    click.echo(f"  {'carried by:':<15}{','.join(data['carried_by']) or 'none yet'}")
    click.echo(f"  {'domains on:':<15}{','.join(data['domains_on']) or 'none'}")
    click.echo(f"  {'definition:':<15}{data['sxp']}")


# -- the registry group ---------------------------------------------------------------------

@click.group("registry", context_settings=CONTEXT, epilog="""\b
Examples:
  ovsvnet registry init --address 10.0.0.1                        # on 10.0.0.1
  ovsvnet registry join --address 10.0.0.2 --peer 10.0.0.1        # on 10.0.0.2
  ovsvnet registry join --address 10.0.0.3 --peer 10.0.0.1        # on 10.0.0.3
  ovsvnet registry status
  ovsvnet --registry 10.0.0.1,10.0.0.2,10.0.0.3 create --id 97
  ovsvnet agent --registry 10.0.0.1,10.0.0.2,10.0.0.3             # on every host
  (a 3-member cluster on 10.0.0.1-3, then vnets defined once for every host)""")
def registry() -> None:
    """The cluster registry: define vnets once for many hosts (clustered OVSDB, Raft).

    Members run ovsdb-server with the OVSVNET_Registry database (3 or 5 for a cluster that
    survives 1 or 2 failures; --standalone for one). Agents follow it with
    'ovsvnet agent --registry REMOTES'; 'ovsvnet --registry REMOTES create|delete|list|show'
    change and read the cluster-wide vnets.
    """


def _member_options(f: Any) -> Any:
    f = click.option("--raft-port", default=RAFT_PORT, show_default=True, type=int,
                     help="TCP port for Raft between members.")(f)
    f = click.option("--port", default=CLIENT_PORT, show_default=True, type=int,
                     help="TCP port for clients (agents, commands).")(f)
    f = click.option("--address", required=True, metavar="ADDRESS",
                     help="This member's IP address (clients and members connect to it).")(f)
    f = click.option("--dir", "directory", default=DEFAULT_DIR, metavar="DIR",
                     help=DIR_HELP)(f)
    return f


def _started(member: Any, no_start: bool) -> None:
    from ovsvnet.registry import server as S
    if no_start:
        click.echo(f"start it with: ovsvnet registry start --dir {member.dir}")
        return
    pid = S.start(member)
    click.echo(f"ovsdb-server running (pid {pid}); clients use {member.client_remote()}")


@registry.command(epilog="""\b
Examples:
  ovsvnet registry init --address 10.0.0.1                 # first member of a cluster
  ovsvnet registry init --address 10.0.0.1 --standalone    # a single server, no failover
  ovsvnet registry init --dir /srv/reg --address 10.0.0.1 --port 7645 --raft-port 7646""")
@_member_options
@click.option("--standalone", is_flag=True, help="One server, no cluster (small sites).")
@click.option("--no-start", is_flag=True, help="Only create the database.")
def init(directory: str, address: str, port: int, raft_port: int, standalone: bool,
         no_start: bool) -> None:
    """Create a new registry (ovsdb-tool create-cluster, or create) and start it."""
    from ovsvnet.registry import model as R
    from ovsvnet.registry import server as S
    member = S.Member(directory, address, port, raft_port, standalone)
    S.init(member)
    kind = "standalone registry" if standalone else \
        f"cluster, first member at {member.raft_remote()}"
    click.echo(f"created {member.db} ({kind}, schema {R.schema_version()})")
    _started(member, no_start)


@registry.command(epilog="""\b
Examples:
  ovsvnet registry join --address 10.0.0.2 --peer 10.0.0.1
  ovsvnet registry join --address 10.0.0.3 --peer 10.0.0.1 --peer 10.0.0.2""")
@_member_options
@click.option("--peer", "peers", multiple=True, required=True, metavar="ADDR[:RAFTPORT]",
              help="An existing member (repeat for more).")
@click.option("--no-start", is_flag=True, help="Only create the database.")
def join(directory: str, address: str, port: int, raft_port: int, peers: tuple[str, ...],
         no_start: bool) -> None:
    """Add this host as a member of an existing cluster (ovsdb-tool join-cluster) and start
    it; it copies the data from the leader."""
    from ovsvnet.registry import server as S
    member = S.Member(directory, address, port, raft_port, False)
    S.join(member, list(peers))
    click.echo(f"created {member.db}, joining the cluster via {', '.join(peers)}")
    _started(member, no_start)


@registry.command(epilog="""\b
Examples:
  ovsvnet registry start
  ovsvnet registry start --foreground     # for systemd (scripts/ovsvnet-registry.service)""")
@click.option("--dir", "directory", default=DEFAULT_DIR, metavar="DIR", help=DIR_HELP)
@click.option("--foreground", is_flag=True, help="Run ovsdb-server in the foreground.")
def start(directory: str, foreground: bool) -> None:
    """Start this member's ovsdb-server (settings from DIR/member.json)."""
    from ovsvnet.registry import server as S
    member = S.Member.load(directory)
    pid = S.start(member, foreground=foreground)
    click.echo(f"ovsdb-server running (pid {pid}); clients use {member.client_remote()}")


@registry.command(epilog="""\b
Examples:
  ovsvnet registry stop""")
@click.option("--dir", "directory", default=DEFAULT_DIR, metavar="DIR", help=DIR_HELP)
def stop(directory: str) -> None:
    """Stop this member's ovsdb-server (by its pidfile)."""
    from ovsvnet.registry import server as S
    member = S.Member.load(directory)
    click.echo("stopped" if S.stop(member) else "not running")


def _render_status(data: dict[str, Any]) -> None:
    m = data.get("member")
    if m:
        line = f"member {m['dir']}: {m['state']}, {m['mode']}"
        if m.get("role"):
            line += f", role {m['role']}"
        if m.get("term"):
            line += f", term {m['term']}, leader {m.get('leader')}"
        click.echo(line)
        for srv in m.get("servers", []):
            click.echo(f"  server {srv['sid']} at {srv['address']}"
                       + (" (this member)" if srv["self"] else ""))
        if m.get("error"):
            click.echo(f"  {m['error']}")
    c = data.get("contents")
    if c:
        click.echo(f"registry {c['remotes']} (leader {c['connected_to']}): {c['vnets']} vnets, "
                   f"{len(c['chassis'])} chassis, cfg {c['next_cfg']}, "
                   f"schema {c['schema_version']}")
        behind = [ch for ch in c["chassis"] if ch["behind"]]
        if c["chassis"]:
            table(c["chassis"], [("name", "  CHASSIS"), ("address", "ADDRESS"),
                                 ("vnets", "VNETS"), ("cfg", "CFG"), ("behind", "BEHIND")])
        click.echo(f"{len(behind)} chassis behind" if behind else "every chassis is up to date")
        for ch in c["chassis"]:
            for vnet, reason in sorted(ch["conflicts"].items()):
                click.echo(f"conflict on {ch['name']}: vnet {vnet}: {reason}")


@registry.command(epilog="""\b
Examples:
  ovsvnet registry status                          # this member (role, term, leader)
  ovsvnet --registry 10.0.0.1,10.0.0.2 registry status --json   # also the contents""")
@click.option("--dir", "directory", default=None, metavar="DIR",
              help=f"A local member's directory (default {DEFAULT_DIR}, if it exists).")
@json_option
@pass_session
def status(s: Session, directory: str | None, as_json: bool) -> None:
    """This member's Raft state and, with --registry, the contents and each host's progress."""
    from ovsvnet.registry import client as C
    from ovsvnet.registry import server as S
    data: dict[str, Any] = {}
    if directory is not None or os.path.exists(os.path.join(DEFAULT_DIR, "member.json")):
        data["member"] = S.status(S.Member.load(directory or DEFAULT_DIR))
    if s.registry_remotes:
        data["contents"] = C.status_view(s.registry)
    if not data:
        raise ConfigError(f"registry: no member in {DEFAULT_DIR}; give --dir DIR or "
                          "--registry REMOTES")
    emit(data, as_json, _render_status)
    member = data.get("member")
    if member and member["state"] != "running":
        exit_with(1)


@registry.command("chassis-delete", epilog="""\b
Examples:
  ovsvnet --registry 10.0.0.1,10.0.0.2,10.0.0.3 registry chassis-delete host17""")
@click.argument("name")
@pass_session
def chassis_delete(s: Session, name: str) -> None:
    """Forget a host that is gone for good (other hosts drop their tunnels to it)."""
    from ovsvnet.registry import client as C
    C.chassis_delete(s.registry, name)
    click.echo(f"chassis {name} deleted from the registry")
