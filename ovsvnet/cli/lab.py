"""The lab on the command line: ``ovsvnet sandbox`` (build, inspect, use and remove simulated
hosts on this machine) and ``ovsvnet demo``.

A sandbox (see :mod:`ovsvnet.lab`) lives on after ``sandbox up`` returns; its state file
``<state-dir>/<name>/lab.json`` lets ``status``, ``exec`` and ``down`` find it again from
another process. Needs root and the Open vSwitch binaries. The lab is imported only when a
command runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ovsvnet.cli.common import exit_with
from ovsvnet.errors import OvsvnetError
from ovsvnet.lab.state import DEFAULT_STATE_DIR, STATE_FILE

if TYPE_CHECKING:
    from ovsvnet.lab import Lab

DEFAULT_NAME = "default"
_META_KEY = "ovsvnet.sandbox.state_dir"


def _state_dir() -> Path:
    ctx = click.get_current_context()
    return Path(ctx.meta.get(_META_KEY, DEFAULT_STATE_DIR))


def _labs(state_dir: Path) -> list[str]:
    if not state_dir.is_dir():
        return []
    return sorted(p.parent.name for p in state_dir.glob(f"*/{STATE_FILE}"))


def _resolve_name(name: str | None) -> str:
    """The named sandbox, or the only one that is up."""
    state_dir = _state_dir()
    labs = _labs(state_dir)
    if name is not None:
        if name not in labs:
            raise click.ClickException(
                f"no sandbox named {name!r} in {state_dir}"
                + (f" (up: {', '.join(labs)})" if labs else "")
            )
        return name
    if not labs:
        raise click.ClickException(f"no sandbox is up (state dir {state_dir})")
    if len(labs) > 1:
        if DEFAULT_NAME in labs:
            return DEFAULT_NAME
        raise click.ClickException(f"several sandboxes are up ({', '.join(labs)}): name one")
    return labs[0]


def _load(name: str) -> Lab:
    from ovsvnet.lab import Lab
    return Lab.load(_state_dir() / name / STATE_FILE)


def _need_root() -> None:
    from ovsvnet.lab import have_root_and_ovs
    if not have_root_and_ovs():
        raise click.ClickException(
            "the sandbox needs root and the Open vSwitch binaries (ovs-vswitchd, ovsdb-server)"
        )


def _check_name(name: str) -> str:
    if not name or len(name) > 24 or not all(c.isalnum() or c in "-_" for c in name):
        raise click.BadParameter("use up to 24 letters, digits, '-' or '_'", param_hint="--name")
    return name


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  ovsvnet sandbox up --hosts 3 --segments 2
  ovsvnet sandbox status
  ovsvnet sandbox exec h1 -- ovs-vsctl show
  ovsvnet sandbox down""",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="OVSVNET_SANDBOX_DIR",
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Where sandboxes keep their state and daemon directories.",
)
@click.pass_context
def sandbox(ctx: click.Context, state_dir: Path) -> None:
    """A lab of simulated hosts on this machine, each with its own Open vSwitch.

    Every host is a network namespace running its own ovsdb-server and ovs-vswitchd
    (userspace datapath); hosts on one segment share a Linux bridge, segments are joined
    by a router that forwards unicast but not multicast. Needs root.
    """
    ctx.meta[_META_KEY] = state_dir


@sandbox.command(
    epilog="""\b
Examples:
  ovsvnet sandbox up                      # two hosts on one segment
  ovsvnet sandbox up --hosts 4 --segments 2 --name wan
  ovsvnet --db unix:/run/ovsvnet-sandbox/default/h1/db.sock list""",
)
@click.option("--hosts", "n_hosts", type=click.IntRange(1, 32), default=2, show_default=True,
              help="Number of hosts (h1, h2, ...), spread over the segments in turn.")
@click.option("--segments", "n_segments", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Number of segments (s1, ...); with more than one, router r1 joins them.")
@click.option("--name", default=DEFAULT_NAME, show_default=True,
              callback=lambda c, p, v: _check_name(v),
              help="Name of the sandbox, for status, exec and down.")
@click.option("--json", "as_json", is_flag=True, help="Print the sandbox's status as JSON.")
def up(n_hosts: int, n_segments: int, name: str, as_json: bool) -> None:
    """Build a sandbox and leave it running."""
    from ovsvnet.lab import Lab, netns_exists
    _need_root()
    workdir = _state_dir() / name
    state = workdir / STATE_FILE
    if state.exists():
        old = _load(name)
        if any(netns_exists(ns) for ns in old.namespaces):
            raise click.ClickException(
                f"sandbox {name!r} is already up (prefix {old.prefix}); run "
                f"'ovsvnet sandbox down {name}' first"
            )
        shutil.rmtree(workdir, ignore_errors=True)  # stale state of a sandbox that is gone
    elif workdir.exists():
        try:
            workdir.rmdir()
        except OSError:
            raise click.ClickException(
                f"{workdir} exists and is not a sandbox; remove it") from None
    workdir.parent.mkdir(parents=True, exist_ok=True)
    lab = Lab(workdir=workdir)
    try:
        segs = [lab.add_segment(f"s{i + 1}").name for i in range(n_segments)]
        if n_segments > 1:
            lab.add_router("r1", segs)
        for i in range(n_hosts):
            lab.add_host(f"h{i + 1}", segs[i % n_segments])
        lab.save_state(state)
    except BaseException:
        try:
            lab.down()
        except OvsvnetError as err:
            click.echo(f"warning: cleanup after failure incomplete: {err}", err=True)
        raise
    if as_json:
        click.echo(json.dumps(lab.status(), indent=2, sort_keys=True))
        return
    click.echo(f"sandbox {name!r} is up: prefix {lab.prefix}, state {state}")
    for h in lab.hosts.values():
        click.echo(f"  {h.name:<4} {h.address:<15} segment {h.segment:<4} --db {h.db}")
    first = next(iter(lab.hosts.values()))
    sel = "" if name == DEFAULT_NAME else f" {name}"
    click.echo("Use it:")
    click.echo(f"  ovsvnet --db {first.db} list")
    click.echo(f"  ovsvnet sandbox exec{sel} {first.name} -- ovs-vsctl show")
    click.echo(f"  ovsvnet sandbox status{sel}")
    click.echo(f"  ovsvnet sandbox down{sel}")


@sandbox.command(
    epilog="""\b
Examples:
  ovsvnet sandbox down
  ovsvnet sandbox down wan""",
)
@click.argument("name", required=False)
def down(name: str | None) -> None:
    """Stop a sandbox's daemons and delete its namespaces and files.

    NAME may be left out when only one sandbox is up."""
    _need_root()
    name = _resolve_name(name)
    lab = _load(name)
    lab.down()
    workdir = _state_dir() / name
    if workdir.exists() and not lab.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    click.echo(f"sandbox {name!r} is down")


@sandbox.command(
    epilog="""\b
Examples:
  ovsvnet sandbox status
  ovsvnet sandbox status wan --json""",
)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(name: str | None, as_json: bool) -> None:
    """Show a sandbox's hosts, namespaces and whether its daemons run.

    Exits 1 when a namespace is missing or a daemon is not running."""
    name = _resolve_name(name)
    lab = _load(name)
    data: dict[str, Any] = lab.status()
    healthy = all(data["namespaces"].values()) and all(
        h["ovsdb-server"] and h["ovs-vswitchd"] for h in data["hosts"].values()
    )
    data["name"] = name
    data["healthy"] = healthy
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(f"sandbox {name!r}: prefix {lab.prefix}, workdir {lab.workdir}, "
                   f"{'healthy' if healthy else 'DEGRADED'}")
        click.echo(f"  {'HOST':<6} {'ADDRESS':<15} {'SEGMENT':<8} {'OVSDB':<6} {'VSWITCHD':<8} DB")
        for hname, h in data["hosts"].items():
            click.echo(
                f"  {hname:<6} {h['address']:<15} {h['segment']:<8} "
                f"{'up' if h['ovsdb-server'] else 'DOWN':<6} "
                f"{'up' if h['ovs-vswitchd'] else 'DOWN':<8} "
                f"{h['db']}"
            )
        for gname, g in data["guests"].items():
            click.echo(f"  guest {gname}: host {g['host']} bridge {g['bridge']} "
                       f"ip {g['ip']} mac {g['mac']}")
        for rname, r in data["routers"].items():
            click.echo(f"  router {rname}: segments {', '.join(r['segments'])}")
        missing = [ns for ns, ok in data["namespaces"].items() if not ok]
        click.echo(f"  namespaces: {len(data['namespaces']) - len(missing)} present"
                   + (f", missing: {', '.join(missing)}" if missing else ""))
    exit_with(0 if healthy else 1)


@sandbox.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog="""\b
Examples:
  ovsvnet sandbox exec h1 -- ovs-vsctl show
  ovsvnet sandbox exec h1 -- ovs-appctl -t ovs-vswitchd ovs/route/show
  ovsvnet sandbox exec wan h2 -- ip addr
  ovsvnet sandbox exec h1 -- ovsvnet list    # OVSVNET_DB is set""",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True,
                metavar="[NAME] MEMBER -- COMMAND [ARG]...")
def exec_(args: tuple[str, ...]) -> None:
    """Run a command in a sandbox host (or guest, router, segment) namespace.

    NAME may be left out when only one sandbox is up. On hosts the Open vSwitch environment
    is set (OVS_RUNDIR and friends point at the
    host's directory, so ovs-vsctl, ovs-ofctl and ovs-appctl -t ovs-vswitchd find its
    daemons; OVSVNET_DB holds its --db value). The exit code is the command's.
    """
    argv = list(args)
    labs = _labs(_state_dir())
    lab: Lab | None = None
    if "--" in argv[:3]:  # "MEMBER -- CMD" or "NAME MEMBER -- CMD": the separator decides
        sep = argv.index("--")
        if sep == 0:
            raise click.UsageError("expected [NAME] MEMBER -- COMMAND [ARG]...")
        if sep == 2:
            lab = _load(_resolve_name(argv[0]))
        argv = argv[sep - 1 : sep] + argv[sep + 1 :]
    elif len(argv) >= 3 and argv[0] in labs:  # no separator: NAME only if it has MEMBER
        cand = _load(argv[0])
        if _has_member(cand, argv[1]):
            lab, argv = cand, argv[1:]
    if lab is None:
        lab = _load(_resolve_name(None))
    if len(argv) < 2:
        raise click.UsageError("expected [NAME] MEMBER -- COMMAND [ARG]...")
    member_name, cmd = argv[0], argv[1:]
    from ovsvnet.lab import LabHost, netns_exists
    member = lab.member(member_name)
    env = dict(member.env) if isinstance(member, LabHost) else dict(os.environ)
    if isinstance(member, LabHost):
        # "ovs-appctl -t ovs-vswitchd" looks for $OVS_RUNDIR/ovs-vswitchd.<pid>.ctl; ours is
        # named ovs-vswitchd.ctl, so point -t at it.
        ctls = {"ovs-vswitchd": str(member.vswitchd_ctl), "ovsdb-server": str(member.ovsdb_ctl)}
        cmd = [ctls.get(c, c) if i > 0 and cmd[i - 1] == "-t" else c
               for i, c in enumerate(cmd)]
    if not netns_exists(member.netns):
        raise click.ClickException(
            f"namespace {member.netns} does not exist (is the sandbox down?)")
    try:
        rc = subprocess.call(["ip", "netns", "exec", member.netns, *cmd], env=env)
    except OSError as err:
        raise click.ClickException(f"cannot run {cmd[0]}: {err}") from None
    exit_with(rc)


def _has_member(lab: Lab, name: str) -> bool:
    return any(name in d for d in
               (lab.hosts, lab.guests, lab.plain_hosts, lab.routers, lab.segments))


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
    from ovsvnet.lab import demo as demo_mod
    if take_down:
        code = demo_mod.take_down(name, click.echo)
    else:
        code = demo_mod.run(demo_mod.DemoOptions(hosts=n_hosts, keep=keep, name=name),
                            click.echo)
    exit_with(code)
