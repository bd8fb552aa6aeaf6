"""What every command module shares: the session (where OVS and the registry are), output
helpers, and the one way to leave with an exit code.

Command modules import this module, never :mod:`ovsvnet.cli` (the root group imports them),
so there is no import circle.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from ovsvnet.errors import EXIT_CODES
from ovsvnet.system.paths import DEFAULT_DB, rundir_for

if TYPE_CHECKING:
    from ovsvnet.ops.host import Host
    from ovsvnet.ops.sync import Plan, SyncReport
    from ovsvnet.ovsdb import SslFiles
    from ovsvnet.registry.client import RegistryClient

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_HELP = "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
__all__ = ["DEFAULT_DB", "CONTEXT", "EXIT_HELP", "Session", "emit", "table",
           "json_option", "format_options", "dry_run_option", "print_plan", "report_sync",
           "exit_with", "pass_session"]


class Session:
    """What every command needs: where OVS (and the registry) is, opened on first use."""

    def __init__(self, db: str, rundir: str | None, timeout: float,
                 registry: str | None = None,
                 tls: tuple[str | None, str | None, str | None] = (None, None, None)):
        self.db_remote = db
        self.rundir = rundir or rundir_for(db)
        self.timeout = timeout
        self.registry_remotes = registry
        self.tls = tls
        self._host: Host | None = None
        self._borrowed = False
        self._registry: RegistryClient | None = None

    def attach(self, host: Host) -> None:
        """Use a host already open (the agent's), which :meth:`close` then leaves open."""
        self._host = host
        self._borrowed = True

    @property
    def host(self) -> Host:
        if self._host is None:
            from ovsvnet.ops.host import Host
            from ovsvnet.ovsdb import Ovsdb, quiet_python_ovs
            from ovsvnet.system import progress
            progress.phase("reading the Open_vSwitch database")
            quiet_python_ovs()
            self._host = Host(Ovsdb(self.db_remote, self.timeout), self.rundir)
        return self._host

    @property
    def registry(self) -> RegistryClient:
        """The cluster registry client; a usage error without ``--registry``."""
        if not self.registry_remotes:
            raise click.UsageError("this needs the registry: give --registry REMOTES before "
                                   "the command (or set $OVSVNET_REGISTRY)")
        if self._registry is None:
            from ovsvnet.ovsdb import quiet_python_ovs
            from ovsvnet.registry.client import RegistryClient
            quiet_python_ovs()
            self._registry = RegistryClient(self.registry_remotes, self.timeout,
                                            ssl=self.ssl_files())
        return self._registry

    def ssl_files(self) -> SslFiles | None:
        """The TLS identity given with -p/-c/-C (all three, or none)."""
        from ovsvnet.ovsdb import SslFiles
        given = [x for x in self.tls if x]
        if not given:
            return None
        if len(given) != 3:
            raise click.UsageError("--private-key, --certificate and --ca-cert go together")
        key, cert, ca = self.tls
        assert key and cert and ca
        return SslFiles(key, cert, ca)

    def close(self) -> None:
        if self._host is not None and not self._borrowed:
            self._host.db.close()
        if self._registry is not None:
            self._registry.close()


pass_session = click.make_pass_decorator(Session)


def exit_with(code: int) -> None:
    """Leave the command with ``code`` (0: return normally). :func:`ovsvnet.cli.main` passes
    it on as the process's exit code."""
    if code:
        click.get_current_context().exit(code)


def fail(code: int) -> NoReturn:
    click.get_current_context().exit(code)
    raise AssertionError("unreachable")  # pragma: no cover


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print a command's data: JSON, the command's own rendering, or (for a listing with
    :func:`format_options`) the chosen ``--format``/``--columns``."""
    chosen = click.get_current_context().meta.get(_FORMAT)
    if chosen is not None and (chosen[0].kind != "table" or chosen[0].columns):
        from ovsvnet.cli import formats
        click.echo(formats.render(data, chosen[0], chosen[1]), nl=False)
    elif as_json:
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
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def table_or(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]],
             empty: str) -> None:
    """:func:`table`, or one line saying there is nothing."""
    if rows:
        table(rows, columns)
    else:
        click.echo(empty)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON instead of a table.")(f)


_FORMAT = "ovsvnet.format"


def format_options(known: Sequence[str], default: Sequence[str]) -> Callable[[F], F]:
    """``--format table|csv|json``, ``--columns COL,...`` and ``--json`` (= ``--format
    json``) for a listing whose rows have the keys ``known`` (``default``: the csv columns
    when none are chosen). The command gets ``as_json``; :func:`emit` does the rest."""
    from ovsvnet.cli.formats import FORMATS

    def decorator(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from ovsvnet.cli import formats
            try:
                fmt = formats.choose(kwargs.pop("output_format"), kwargs.pop("as_json"),
                                     kwargs.pop("columns"), known)
            except ValueError as exc:
                raise click.UsageError(f"{exc.args[0]}: {exc.args[1]}") from None
            click.get_current_context().meta[_FORMAT] = (fmt, tuple(default))
            return f(*args, as_json=fmt.kind == "json", **kwargs)

        options = [
            click.option("--format", "output_format", type=click.Choice(FORMATS),
                         help="Output format (default table)."),
            click.option("--columns", metavar="COL,...",
                         help=f"Only these columns, in this order: {', '.join(known)}."),
            click.option("--json", "as_json", is_flag=True, help="Same as --format json."),
        ]
        for option in reversed(options):
            wrapper = option(wrapper)
        return cast(F, wrapper)

    return decorator


def dry_run_option(f: F) -> F:
    return click.option("--dry-run", is_flag=True,
                        help="Print the OVSDB and flow changes this would make; make none.")(f)


def print_plan(plan: Plan) -> None:
    """What a ``--dry-run`` found, on stdout."""
    from ovsvnet import model as M
    from ovsvnet.cli import formats
    rows = [(r.op, r.table, r.name, r.columns) for r in plan.ovsdb]
    flows = [(c.bridge, c.removed, c.added, c.replaced) for c in plan.flows]
    for line in formats.plan_lines(rows, flows, plan.new_ports, [M.TRANSPORT_BRIDGE]):
        click.echo(line)
    click.echo("dry run: nothing was changed")


def no_dry_run_with_registry(s: Session, dry_run: bool) -> None:
    if dry_run and s.registry_remotes:
        raise click.UsageError("--dry-run: previews a change of this host, not of the "
                               "registry (leave out --registry)")


def report_sync(report: SyncReport, verbose: bool = False) -> None:
    for failure in report.failed:
        click.echo(f"warning: {failure}", err=True)
    for address, why in sorted(report.rejected.items()):
        click.echo(f"warning: peer {address} has no tunnel: {why}", err=True)
    if verbose:
        click.echo(f"flows: {report.changed_flows} changed"
                   + (f", {report.pruned_learned} stale learned entries removed"
                      if report.pruned_learned else ""))


#: Columns of a vnet list (``list``, ``vn vnets``).
VNET_COLUMNS = [("short", "ID"), ("bridge", "BRIDGE"), ("vnetif", "VNETIF"),
                ("security", "SECURITY"), ("mtu", "MTU"), ("state", "STATE"),
                ("domains", "DOMAINS")]
#: The keys of a vnet's row (``--columns``; with --registry: the last four, not the local
#: state).
VNET_KEYS = ["short", "id", "key", "bridge", "vnetif", "security", "mtu", "state", "reason",
             "domains", "ports", "datapath_type", "source", "chassis", "carried_by", "hosts",
             "domains_on"]


def render_vnets(rows: list[dict[str, Any]], long: bool) -> None:
    if not rows:
        click.echo("no vnets")
        return
    cols = list(VNET_COLUMNS)
    if long:
        cols.insert(1, ("id", "CANONICAL ID"))
    table(rows, cols)
    for row in rows:
        if row.get("reason"):
            click.echo(f"  {row['short']}: {row['reason']}")


def render_ports(ports: list[dict[str, Any]]) -> None:
    for p in ports:
        err = f"  error: {p['error']}" if p.get("error") else ""
        click.echo(f"    {p['name']:<16}{p['kind']:<8} ofport {p['ofport']}  "
                   f"mtu {p['mtu']}{err}")
