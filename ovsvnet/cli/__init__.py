"""The ``ovsvnet`` command (and ``vn``): a thin click layer over :mod:`ovsvnet.ops`.

The root group knows its commands by name and imports a command's module only when that
command runs (or ``--help`` lists them), so ``ovsvnet list`` never imports the lab, the
registry, the doctor or pyroute2. Command modules import :mod:`ovsvnet.cli.common`, never
this module: no import circle. Library errors become one line and the exit code of their
class here, in :func:`main`, and nowhere else.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from ovsvnet import __version__
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
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (click's documented pattern)."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(f"ovsvnet.cli.{module}"), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings=CONTEXT, epilog=f"""\b
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
    session = Session(db, rundir, timeout, registry or None,
                      tls=(private_key, certificate, ca_cert))
    ctx.obj = session
    ctx.call_on_close(session.close)


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
