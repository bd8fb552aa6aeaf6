"""The root group of the ``ovsvnet`` command (and ``vn``): a thin click layer over
:mod:`ovsvnet.ops`.

The root group knows its commands by name and imports a command's module only when that
command runs (``--help`` lists them from :data:`SUMMARIES`), so ``ovsvnet list`` never
imports the lab, the registry, the doctor or pyroute2. Command modules import
:mod:`ovsvnet.cli.common`, never this module: no import circle. Library errors become one line
and the exit code of their class here, in :func:`run`, and nowhere else.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from collections.abc import Sequence
from typing import Any

import click

from ovsvnet import __version__
from ovsvnet.cli import delegate
from ovsvnet.cli.common import CONTEXT, DEFAULT_DB, EXIT_HELP, Session
from ovsvnet.errors import OvsvnetError

#: command name -> "module:attribute" (modules under ovsvnet.cli).
COMMANDS = {
    "create": "vnets:create", "delete": "vnets:delete", "list": "vnets:list_",
    "show": "vnets:show", "vnet-create": "vnets:vnet_create",
    "vnet-delete": "vnets:vnet_delete", "vnet-list": "vnets:vnet_list",
    "sync": "host:sync", "peer-add": "host:peer_add", "peer-delete": "host:peer_delete",
    "peers": "host:peers", "varp": "host:varp", "varp-flush": "host:varp_flush",
    "vifs": "host:vifs", "status": "host:status", "setup": "host:setup",
    "doctor": "host:doctor", "insmod": "host:insmod",
    "agent": "agent:agent", "keygen": "agent:keygen",
    "vnets": "vn:vnets", "vnifs": "vn:vnifs", "vif-add": "vn:vif_add",
    "vif-delete": "vn:vif_delete", "bridges": "vn:bridges",
    "registry": "registry:registry",
    "sandbox": "lab:sandbox", "demo": "lab:demo",
    "libvirt-bridges": "integrations:libvirt_bridges", "completion": "integrations:completion",
    "map": "map:map_",
}


#: command name -> its one-line help, so ``ovsvnet --help`` lists the commands without
#: importing them (tests/unit/test_cli_lazy.py checks each against the command's own help).
SUMMARIES = {
    "create": "Define vnets from SXP FILEs (all or none, one transaction) or from options.",
    "delete": "Delete a vnet (by id, bridge or vnetif name) and everything ovsvnet made for it.",
    "list": "List the vnets defined on this host (with --registry: the cluster's vnets).",
    "show": "Show one vnet: definition, ports, MTU and state (with --registry: its cluster-wide "
            "definition and the hosts that carry it).",
    "vnet-create": "Xen's vnet-create: VNET is a config file (xm) or an id (vn).",
    "vnet-delete": "Xen's vnet-delete: delete a vnet by id or vnetif name.",
    "vnet-list": "Xen's vnet-list: the ids; with -l or ids, each stored definition.",
    "sync": "Bring bridges, ports, tunnels, MTU and flows in line with the stored state.",
    "peer-add": "Add a static peer (address or host name): it gets tunnels for every vnet.",
    "peer-delete": "Remove a static peer and its tunnel.",
    "peers": "List peers and the state of their tunnels.",
    "varp": "Remote MAC addresses learned per vnet, and the peer each lives behind.",
    "varp-flush": "Forget learned remote MACs (they are relearned by flooding).",
    "vifs": "Domain ports plugged into each vnet.",
    "status": "This host, its agent and peers (when the agent runs), and its tunnels.",
    "setup": "Check and prepare this host (and optionally create the old module's default "
             "vnets).",
    "doctor": "Check this host for what ovsvnet needs; one finding per line with what to fix.",
    "insmod": "Xen's 'vn insmod': check/prepare Open vSwitch on this host, then sync the vnets.",
    "agent": "Run the agent: discover peers, keep tunnels and flows right, repair after "
             "restarts.",
    "keygen": "Write a new random key to PATH (32 random bytes, base64, mode 0600; never "
              "overwrites).",
    "vnets": "Xen's 'vn vnets': the vnets (all, or those named by id, bridge or vnetif), by id.",
    "vnifs": "Xen's 'vn vnifs': the vnets' host interfaces (vnetif) with MAC, MTU, state, "
             "addresses.",
    "vif-add": "Xen's 'vn vif-add': not needed with MAC learning; reports where VMAC is known.",
    "vif-delete": "Xen's 'vn vif-delete': forget VMAC on VNET (local MAC table and learned "
                  "remote entry).",
    "bridges": "Xen's 'vn bridges': every OVS bridge and its ports; ovsvnet's are marked '*'.",
    "registry": "The cluster registry: define vnets once for many hosts (clustered OVSDB, "
                "Raft).",
    "sandbox": "A lab of simulated hosts on this machine, each with its own Open vSwitch.",
    "demo": "Three simulated hosts, vnet 97 on each, agents, a guest per host, pings across.",
    "libvirt-bridges": "Print the bridges a libvirt domain/network XML on stdin names: "
                       "'BRIDGE ovs|plain'.",
    "completion": "Print the shell completion script for bash, zsh or fish (default: $SHELL).",
    "map": "Draw the network: hosts, the vnets each carries, tunnels with level, state and MTU.",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (click's documented pattern);
    its help lists them from ``summaries`` (importing them all would cost 50 ms)."""

    def __init__(self, *args: Any, lazy: dict[str, str],
                 summaries: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy
        self.summaries = summaries or {}

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.summaries and name not in self.commands:
                stand_in = click.Command(name, help=self.summaries[name])
                rows.append((name, stand_in.get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(f"ovsvnet.cli.{module}"), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, summaries=SUMMARIES, context_settings=CONTEXT,
             epilog=f"""\b
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
@click.option("-p", "--private-key", envvar="OVSVNET_PRIVATE_KEY", metavar="FILE",
              help="Key for ssl: registry remotes (as ovs-vsctl -p; also $OVSVNET_PRIVATE_KEY).")
@click.option("-c", "--certificate", envvar="OVSVNET_CERTIFICATE", metavar="FILE",
              help="This host's (or operator's) certificate for ssl: registry remotes.")
@click.option("-C", "--ca-cert", envvar="OVSVNET_CA_CERT", metavar="FILE",
              help="The CA that signed the registry servers' certificates.")
@click.version_option(__version__, "-V", "--version")
@click.pass_context
def cli(ctx: click.Context, db: str, rundir: str | None, timeout: float,
        registry: str | None, private_key: str | None, certificate: str | None,
        ca_cert: str | None) -> None:
    """Virtual networks (vnets) spanning hosts, on Open vSwitch.

    A vnet is a private LAN with a 128-bit id, an OVS bridge that domains plug into, and
    a security level. Frames cross hosts in VXLAN tunnels keyed by the vnet id.
    """
    invocation = ctx.obj if isinstance(ctx.obj, Invocation) else Invocation([], "ovsvnet")
    session = Session(db, rundir, timeout, registry or None,
                      tls=(private_key, certificate, ca_cert))
    if invocation.host is not None:  # running inside the agent, on its replica
        session.attach(invocation.host)
    elif delegate.wanted(ctx.invoked_subcommand, invocation.argv, registry):
        done = delegate.run_in_agent(session.rundir, db, invocation.argv, invocation.prog,
                                     timeout)
        if done is not None:
            code, out, err = done
            sys.stdout.write(out)
            sys.stderr.write(err)
            ctx.exit(code)
    ctx.obj = session
    ctx.call_on_close(session.close)


class Invocation:
    """How the CLI was called: its arguments, its name, and (inside the agent) the agent's
    host, whose database replica the command then uses instead of opening its own. (A
    plain class: dataclasses costs this import 6 ms.)"""

    def __init__(self, argv: list[str], prog: str, host: Any = None):
        self.argv, self.prog, self.host = argv, prog, host


def run(argv: Sequence[str], prog_name: str = "ovsvnet", host: Any = None) -> int:
    """Run one command; errors become one line on stderr; returns the exit code."""
    args = list(argv)
    try:
        # with standalone_mode=False click returns what ctx.exit(code) set instead of
        # exiting; keep that code
        rv = cli.main(args=args, prog_name=prog_name, standalone_mode=False,
                      obj=Invocation(args, prog_name, host))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        # One line, like every other error: usage errors name the option and the rule.
        click.echo(f"{prog_name}: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except OvsvnetError as exc:
        click.echo(f"{prog_name}: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return rv if isinstance(rv, int) else 0


def run_captured(argv: Sequence[str], prog_name: str, host: Any) -> tuple[int, str, str]:
    """:func:`run` inside the agent, on its host: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(argv, prog_name, host)
    return code, out.getvalue(), err.getvalue()
