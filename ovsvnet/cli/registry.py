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
#: How long start/init/join wait for the database when its schema must be checked.
UPGRADE_TIMEOUT = 15.0


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
  ovsvnet registry pki init --dir /root/pki                       # once, on an admin host
  ovsvnet registry pki server r1 --dir /root/pki                  # one per member
  ovsvnet registry pki chassis "$(ovs-vsctl get . external_ids:system-id | tr -d '"')" \\
      --dir /root/pki                                             # one per host
  ovsvnet registry init --address 10.0.0.1 --pki-dir /etc/ovsvnet/pki/r1     # on 10.0.0.1
  ovsvnet registry join --address 10.0.0.2 --peer 10.0.0.1 --pki-dir /etc/ovsvnet/pki/r2
  ovsvnet registry status
  ovsvnet --registry unix:/var/lib/ovsvnet/registry/registry.sock create --id 97
  ovsvnet -p K -c C -C CA agent --registry ssl:10.0.0.1:6645,ssl:10.0.0.2:6645,...
  (a TLS cluster; vnets defined on a member's socket; agents with chassis certificates)""")
def registry() -> None:
    """The cluster registry: define vnets once for many hosts (clustered OVSDB, Raft).

    Members run ovsdb-server with the OVSVNET_Registry database (3 or 5 for a cluster that
    survives 1 or 2 failures; --standalone for one), over TLS: agents connect with a
    chassis certificate and may write only their own rows; operators define vnets on a
    member's unix socket ('ovsvnet --registry unix:DIR/registry.sock create|delete|...').
    Agents follow it with 'ovsvnet -p K -c C -C CA agent --registry REMOTES'.
    """


def _member_options(f: Any) -> Any:
    f = click.option("--insecure", is_flag=True,
                     help="Plain TCP for clients and Raft, no certificates and no roles: "
                          "anyone who reaches the port can change every vnet.")(f)
    f = click.option("--client-ca-cert", "client_ca_cert", metavar="FILE",
                     help="The CA of the agents' chassis certificates (only the member's "
                          "relay trusts it).")(f)
    f = click.option("--ca-cert", "ca_cert", metavar="FILE",
                     help="The CA of the other members' certificates (the server CA).")(f)
    f = click.option("--certificate", metavar="FILE",
                     help="This member's certificate (signed by the server CA).")(f)
    f = click.option("--private-key", "private_key", metavar="FILE",
                     help="This member's private key (mode 0600).")(f)
    f = click.option("--pki-dir", metavar="DIR",
                     help="This member's identity: DIR/privkey.pem, cert.pem, cacert.pem and "
                          "clientca.pem (as 'registry pki server' makes them).")(f)
    f = click.option("--raft-address", default="", metavar="ADDRESS",
                     help="Where Raft listens, if not on --address: an address on a "
                          "network only members reach (see docs/registry.md).")(f)
    f = click.option("--raft-port", default=RAFT_PORT, show_default=True, type=int,
                     help="TCP port for Raft between members.")(f)
    f = click.option("--port", default=CLIENT_PORT, show_default=True, type=int,
                     help="TCP port for clients (agents); the same on every member.")(f)
    f = click.option("--address", required=True, metavar="ADDRESS",
                     help="This member's IP address (clients and members connect to it).")(f)
    f = click.option("--dir", "directory", default=DEFAULT_DIR, metavar="DIR",
                     help=DIR_HELP)(f)
    return f


def _member(directory: str, address: str, port: int, raft_port: int, standalone: bool,
            opts: dict[str, Any]) -> Any:
    """The member from init/join options."""
    from ovsvnet.registry import pki
    from ovsvnet.registry import server as S
    tls = pki.member_files(opts["pki_dir"], opts["private_key"], opts["certificate"],
                           opts["ca_cert"], opts["client_ca_cert"], insecure=opts["insecure"])
    return S.Member.create(directory, address, port, raft_port, standalone, tls,
                           opts["raft_address"])


def _started(member: Any, no_start: bool, timeout: float = UPGRADE_TIMEOUT) -> None:
    from ovsvnet.registry import server as S
    if no_start:
        click.echo(f"start it with: ovsvnet registry start --dir {member.dir}")
        return
    pid = S.start(member)
    click.echo(f"ovsdb-server running (pid {pid}); {_serving(member)}")
    _check_schema(member, timeout)


def _check_schema(member: Any, timeout: float) -> None:
    """After a start: convert a database from an older ovsvnet (a joined member's too, whose
    schema is the cluster's). A cluster without a majority yet cannot be converted: the
    member runs (a TLS member serves no network client until then) and says so."""
    from ovsvnet.errors import OvsUnreachableError
    from ovsvnet.registry import upgrade as U
    if not U.needs_upgrade(member):
        return
    try:
        click.echo(f"database: {U.upgrade(member, timeout)}")
    except OvsUnreachableError as exc:
        click.echo(f"warning: {exc}", err=True)


def _serving(member: Any) -> str:
    if member.insecure:
        return (f"clients use {member.client_remote()} (INSECURE: plain TCP, no certificates, "
                "anyone who reaches it can change every vnet)")
    return (f"agents use {member.client_remote()} (relay) with a chassis certificate; "
            f"operators use unix:{member.sock}")


@registry.command(epilog="""\b
Examples:
  ovsvnet registry init --address 10.0.0.1 --pki-dir /etc/ovsvnet/pki/r1   # first member
  ovsvnet registry init --address 10.0.0.1 --pki-dir /etc/ovsvnet/pki/r1 --standalone
  ovsvnet registry init --address 10.0.0.1 --private-key /etc/ovsvnet/r1-key.pem \\
      --certificate /etc/ovsvnet/r1-cert.pem --ca-cert /etc/ovsvnet/server-ca.pem \\
      --client-ca-cert /etc/ovsvnet/chassis-ca.pem
  ovsvnet registry init --address 10.0.0.1 --insecure      # plain TCP, no access control""")
@_member_options
@click.option("--standalone", is_flag=True, help="One server, no cluster (small sites).")
@click.option("--no-start", is_flag=True, help="Only create the database.")
def init(directory: str, address: str, port: int, raft_port: int, standalone: bool,
         no_start: bool, **tls: Any) -> None:
    """Create a new registry (ovsdb-tool create-cluster, or create) and start it.

    The database is created with its access control: the chassis role and, over TLS, the
    client listener whose connections get that role. A TLS member runs two ovsdb-servers:
    the database (Raft, trusting the server CA only; the operators' socket) and a relay
    serving the agents (trusting the chassis CA only)."""
    from ovsvnet.registry import model as R
    from ovsvnet.registry import server as S
    member = _member(directory, address, port, raft_port, standalone, tls)
    S.init(member)
    kind = "standalone registry" if standalone else \
        f"cluster, first member at {member.raft_remote()}"
    click.echo(f"created {member.db} ({kind}, schema {R.schema_version()})")
    _started(member, no_start)


@registry.command(epilog="""\b
Examples:
  ovsvnet registry join --address 10.0.0.2 --peer 10.0.0.1 --pki-dir /etc/ovsvnet/pki/r2
  ovsvnet registry join --address 10.0.0.3 --peer 10.0.0.1 --peer 10.0.0.2 \\
      --pki-dir /etc/ovsvnet/pki/r3
  ovsvnet registry join --address 10.0.0.2 --peer 10.0.0.1 --insecure   # a plain-TCP cluster""")
@_member_options
@click.option("--peer", "peers", multiple=True, required=True, metavar="ADDR[:RAFTPORT]",
              help="An existing member (repeat for more).")
@click.option("--no-start", is_flag=True, help="Only create the database.")
def join(directory: str, address: str, port: int, raft_port: int, peers: tuple[str, ...],
         no_start: bool, **tls: Any) -> None:
    """Add this host as a member of an existing cluster (ovsdb-tool join-cluster) and start
    it; it copies the data from the leader. A TLS cluster's members all use TLS."""
    from ovsvnet.registry import server as S
    member = _member(directory, address, port, raft_port, False, tls)
    S.join(member, list(peers))
    click.echo(f"created {member.db}, joining the cluster via {', '.join(peers)}")
    _started(member, no_start)


@registry.command(epilog="""\b
Examples:
  ovsvnet registry start
  ovsvnet registry start --foreground          # systemd: scripts/ovsvnet-registry.service
  ovsvnet registry start --foreground --relay  # systemd: ovsvnet-registry-relay.service""")
@click.option("--dir", "directory", default=DEFAULT_DIR, metavar="DIR", help=DIR_HELP)
@click.option("--foreground", is_flag=True,
              help="Run the database server in the foreground (then run 'registry "
                   "upgrade'); with --relay, the TLS relay instead.")
@click.option("--relay", is_flag=True, help="With --foreground: the relay.")
@click.option("--timeout", default=UPGRADE_TIMEOUT, show_default=True, metavar="SECONDS",
              help="How long to wait for the database when its schema must be checked.")
def start(directory: str, foreground: bool, relay: bool, timeout: float) -> None:
    """Start this member (settings from DIR/member.json): its database server and, for
    TLS, its relay; a database from an older ovsvnet is converted once it runs (see
    'registry upgrade')."""
    from ovsvnet.registry import server as S
    if relay and not foreground:
        raise ConfigError("relay: --relay goes with --foreground (a detached start starts "
                          "both)")
    member = S.Member.load(directory)
    pid = S.start(member, foreground=foreground, relay=relay)
    click.echo(f"ovsdb-server running (pid {pid}); {_serving(member)}")
    _check_schema(member, timeout)


@registry.command(epilog="""\b
Examples:
  ovsvnet registry upgrade
  ovsvnet registry upgrade --dir /srv/registry --timeout 60""")
@click.option("--dir", "directory", default=DEFAULT_DIR, metavar="DIR", help=DIR_HELP)
@click.option("--timeout", default=30.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the database (a cluster needs a majority up).")
def upgrade(directory: str, timeout: float) -> None:
    """Bring a running member's database to this ovsvnet's schema (ovsdb-client convert,
    online: a clustered database converts once, through Raft, for every member) and seed
    the access control it lacks. 'registry start' does this by itself."""
    from ovsvnet.registry import server as S
    from ovsvnet.registry import upgrade as U
    member = S.Member.load(directory)
    U.wait_running(member, min(timeout, 10))
    click.echo(f"database: {U.upgrade(member, timeout)}")


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
        if m["insecure"]:
            click.echo(f"  INSECURE: plain TCP ({m['client_remote']}), no certificates, no "
                       "roles: anyone who reaches it can change every vnet")
        else:
            relay = m["tls"]["relay"]
            click.echo(f"  TLS: agents on {m['client_remote']} (role {m['tls']['role']}) "
                       f"through the relay ({relay['state']}"
                       + (f", pid {relay['pid']}" if relay["pid"] else "")
                       + f"), certificate {m['tls']['certificate']}")
        if not m.get("schema"):
            click.echo(f"  schema not checked since it was made or joined: run 'ovsvnet "
                       f"registry upgrade --dir {m['dir']}' once it is running")
        for srv in m.get("servers", []):
            click.echo(f"  server {srv['sid']} at {srv['address']}"
                       + (" (this member)" if srv["self"] else ""))
        if m.get("error"):
            click.echo(f"  {m['error']}")
    c = data.get("contents")
    if c:
        click.echo(f"registry {c['remotes']} (connected to {c['connected_to']}): "
                   f"{c['vnets']} vnets, {len(c['chassis'])} chassis, cfg {c['next_cfg']}, "
                   f"schema {c['schema_version']}")
        if c.get("insecure"):
            click.echo("  INSECURE: this connection is plain TCP (no certificates, no roles)")
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
  ovsvnet registry status                          # this member (role, term, TLS)
  ovsvnet --registry unix:/var/lib/ovsvnet/registry/registry.sock registry status --json
  ovsvnet -p K -c C -C CA --registry ssl:10.0.0.1:6645 registry status   # from a chassis""")
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
    if member and (member["state"] != "running" or
                   member.get("tls", {}).get("relay", {}).get("state") == "stopped"):
        exit_with(1)  # a TLS member without its relay serves no agent


@registry.command("chassis-delete", epilog="""\b
Examples:
  ovsvnet --registry unix:/var/lib/ovsvnet/registry/registry.sock registry chassis-delete h17
  (an operator's change: on a member's socket; a chassis may delete only its own rows)""")
@click.argument("name")
@pass_session
def chassis_delete(s: Session, name: str) -> None:
    """Forget a host that is gone for good (other hosts drop their tunnels to it)."""
    from ovsvnet.registry import client as C
    C.chassis_delete(s.registry, name)
    click.echo(f"chassis {name} deleted from the registry")


# -- registry pki ---------------------------------------------------------------------------

DEFAULT_PKI_DIR = "/var/lib/ovsvnet/pki"
PKI_HELP = "The PKI directory (the two CAs and what they issued; default {})."


@registry.group(epilog="""\b
Examples:
  ovsvnet registry pki init --dir /root/pki
  ovsvnet registry pki server r1 --dir /root/pki     # -> /root/pki/servers/r1/
  ovsvnet registry pki chassis 6f1c2d8e-0b7d-4a4e-9d8e-3c1c5e0b2a11 --dir /root/pki
  (copy each identity directory to its host; keep the CA keys on the admin host)""")
def pki() -> None:
    """Certificates for the registry, made with ovs-pki: a server CA and a chassis CA.

    Agents and Raft trust only the server CA, so a chassis certificate can never pose as a
    registry server (python-ovs checks the CA, not host names) nor join Raft. Each identity
    is a directory with privkey.pem (0600), cert.pem and cacert.pem (and, for a member,
    clientca.pem), for --pki-dir (members) or -p/-c/-C (agents). Certificates from other
    CAs work too: give the files instead.
    """


def _pki_dir_option(f: Any) -> Any:
    return click.option("--dir", "directory", default=DEFAULT_PKI_DIR, metavar="DIR",
                        envvar="OVSVNET_PKI_DIR",
                        help=PKI_HELP.format(DEFAULT_PKI_DIR) + " Also $OVSVNET_PKI_DIR.")(f)


def _bits_option(f: Any) -> Any:
    return click.option("--bits", default=3072, show_default=True, type=int,
                        help="RSA key size.")(f)


@pki.command("init", epilog="""\b
Examples:
  ovsvnet registry pki init --dir /root/pki
  (then: ovsvnet registry pki server NAME / chassis SYSTEM_ID)""")
@_pki_dir_option
@_bits_option
def pki_init(directory: str, bits: int) -> None:
    """Create the two CAs (ovs-pki init): controllerca signs servers, switchca chassis."""
    from ovsvnet.registry import pki as P
    P.init(directory, bits)
    click.echo(f"created the server CA {P.ca_cert(directory, 'server')} and the chassis CA "
               f"{P.ca_cert(directory, 'chassis')}; their keys stay in {directory}")


def _issued(path: Any, kind: str) -> None:
    from ovsvnet.registry import pki as P
    files = [P.CERT, P.CA] + ([P.CLIENT_CA] if (path / P.CLIENT_CA).exists() else [])
    click.echo(f"created {path}/{P.KEY} (0600), {', '.join(files)} ({kind})")


@pki.command("server", epilog="""\b
Examples:
  ovsvnet registry pki server r1 --dir /root/pki
  scp -r /root/pki/servers/r1 10.0.0.1:/etc/ovsvnet/pki/r1
  ovsvnet registry init --address 10.0.0.1 --pki-dir /etc/ovsvnet/pki/r1   # on 10.0.0.1""")
@click.argument("name")
@_pki_dir_option
@click.option("--out", metavar="DIR", help="Where to write it (default DIR/servers/NAME).")
@_bits_option
def pki_server(name: str, directory: str, out: str | None, bits: int) -> None:
    """A registry member's identity: a certificate from the server CA, the server CA (what
    its Raft peers must chain to) and the chassis CA (what its agents must chain to)."""
    from ovsvnet.registry import pki as P
    _issued(P.issue(directory, "server", name, out, bits), "for a registry member")


@pki.command("chassis", epilog="""\b
Examples:
  ovsvnet registry pki chassis "$(ovs-vsctl get . external_ids:system-id | tr -d '"')" \\
      --dir /root/pki                                         # the host's system-id
  ovsvnet -p /etc/ovsvnet/pki/privkey.pem -c /etc/ovsvnet/pki/cert.pem \\
      -C /etc/ovsvnet/pki/cacert.pem agent --registry ssl:10.0.0.1:6645,ssl:10.0.0.2:6645""")
@click.argument("system_id", metavar="SYSTEM_ID")
@_pki_dir_option
@click.option("--out", metavar="DIR", help="Where to write it (default DIR/chassis/SYSTEM_ID).")
@_bits_option
def pki_chassis(system_id: str, directory: str, out: str | None, bits: int) -> None:
    """A host's identity for its agent: a certificate from the chassis CA whose CN is the
    host's OVS system-id (the rows it may write), and the server CA to check members."""
    from ovsvnet.registry import pki as P
    _issued(P.issue(directory, "chassis", system_id, out, bits), "for an agent")
