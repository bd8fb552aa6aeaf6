"""``ovsvnet demo``: three simulated hosts, one vnet, agents, guests, pings; then tear down.

Runs in a lab (:mod:`ovsvnet.lab`): every host is a network namespace with its own
ovsdb-server and ovs-vswitchd, so nothing touches this machine's own network. The agents are
``ovsvnet agent`` processes in their hosts' namespaces, each in its own session (Ctrl-C reaches
only the demo, which stops them) with a pidfile in its host's directory.

If the agents do not bring the tunnels up in time, the demo says so and falls back to static
peers (``ovsvnet peer-add``), so the rest still shows the data plane.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovsvnet.errors import OvsvnetError
from ovsvnet.lab import state as lab_state
from ovsvnet.lab.common import LabError, have_root_and_ovs
from ovsvnet.lab.core import Lab
from ovsvnet.lab.daemons import stop_agent
from ovsvnet.lab.netns import netns_exists, ns_argv
from ovsvnet.system.proc import read_pid

Echo = Callable[[str], Any]

VNET97_SXP = "(vnet (id 97) (bridge vnet97) (vnetif vnif97) (security none))\n"
AGENT_INTERVAL = 1.0
CONVERGE_TIMEOUT = 15.0


@dataclass
class DemoOptions:
    hosts: int = 3
    keep: bool = False
    name: str = "demo"
    state_dir: Path | None = None  # default: $OVSVNET_SANDBOX_DIR or /run/ovsvnet-sandbox


def example_file() -> Path | None:
    """examples/vnet97.sxp of the source tree, when ovsvnet runs from one."""
    p = Path(__file__).resolve().parents[2] / "examples" / "vnet97.sxp"
    return p if p.is_file() else None


class Interrupted(Exception):
    """SIGTERM during the demo (Ctrl-C arrives as KeyboardInterrupt)."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (tests with CliRunner in a thread): leave it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# -- agents ---------------------------------------------------------------------------------

def agent_pidfile(host: Any) -> Path:
    return Path(host.dir) / "agent.pid"


def start_agent(host: Any, interval: float = AGENT_INTERVAL) -> subprocess.Popen[bytes]:
    with open(Path(host.dir) / "agent.log", "ab") as log:  # the agent keeps its own copy
        return subprocess.Popen(
            ns_argv(host.netns, [sys.executable, "-m", "ovsvnet", "--db", host.db, "agent",
                                 "--interval", str(interval),
                                 "--key-file", str(host.discovery_key()),
                                 "--pidfile", str(agent_pidfile(host))]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=host.env,
            start_new_session=True)


def stop_agent_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM (the agent announces it is leaving), then SIGKILL; only an ovsvnet agent.
    Best effort: an agent that survives SIGKILL is left to the lab's teardown report."""
    with contextlib.suppress(LabError):
        stop_agent(pid, grace=timeout)


def stop_agents(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for agent in procs.values():
        if agent.poll() is None:
            agent.terminate()
    for agent in procs.values():
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)
    procs.clear()


# -- the demo -------------------------------------------------------------------------------

def _ovsvnet(host: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = host.ovsvnet(*args, check=False)
    if check and proc.returncode != 0:
        raise OvsvnetError(f"{host.name}: ovsvnet {' '.join(args)} failed (exit "
                           f"{proc.returncode}): {proc.stderr.strip()}")
    return proc


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines())


def _tunnels_up(hosts: list[Any]) -> bool:
    want = len(hosts) - 1
    for h in hosts:
        proc = h.ovsvnet("peers", "--json", check=False)
        if proc.returncode != 0:
            return False
        up = [p for p in json.loads(proc.stdout) if p.get("tunnel_state") == "up"]
        if len(up) < want:
            return False
    return True


def run(opts: DemoOptions, echo: Echo = print) -> int:
    """The whole demo; returns the exit code (0 = every ping succeeded)."""
    if not have_root_and_ovs():
        echo("ovsvnet demo needs root and Open vSwitch (ovsdb-server, ovs-vswitchd, ip): run "
             "'bash ci/install-deps.sh' as root first")
        return 1
    started = time.monotonic()
    lab: Lab | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    state_file: Path | None = None
    if opts.keep:
        workdir = lab_state.state_dir(opts.state_dir) / opts.name
        state_file = workdir / "lab.json"
        if state_file.exists():
            old = Lab.load(state_file)
            if any(netns_exists(ns) for ns in old.namespaces):
                echo(f"a lab named {opts.name!r} is already up: 'ovsvnet demo --down"
                     f"{'' if opts.name == 'demo' else ' --name ' + opts.name}' removes it")
                return 1
            shutil.rmtree(workdir, ignore_errors=True)
        workdir.parent.mkdir(parents=True, exist_ok=True)
    ok = False
    interrupted = False
    try:
        with _sigterm_raises():
            lab = Lab(workdir=workdir) if opts.keep else Lab()
            ok = _body(lab, opts, procs, echo, state_file)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        echo("\ninterrupted: tearing the lab down")
    except OvsvnetError as exc:
        echo(f"demo failed: {exc}")
    finally:
        if lab is not None and (not opts.keep or interrupted):
            stop_agents(procs)
            try:
                lab.down()
                echo(f"lab {lab.prefix} removed ({time.monotonic() - started:.0f} s in all)")
            except OvsvnetError as exc:
                echo(f"warning: teardown incomplete: {exc}")
        elif lab is not None:  # --keep: the agents keep running, stopped by 'demo --down'
            _print_kept(lab, opts, echo)
    if interrupted:
        return 130
    return 0 if ok else 1


def _body(lab: Any, opts: DemoOptions, procs: dict[str, subprocess.Popen[bytes]], echo: Echo,
          state_file: Path | None) -> bool:
    t0 = time.monotonic()

    def step(title: str) -> None:
        echo(f"\n== {title}  [{time.monotonic() - t0:4.1f} s]")

    step(f"lab {lab.prefix}: {opts.hosts} hosts on one segment, each its own ovsdb-server "
         "and ovs-vswitchd (userspace datapath) in its own network namespace")
    lab.add_segment("s1")
    hosts = [lab.add_host(f"h{i + 1}", "s1") for i in range(opts.hosts)]
    if state_file is not None:
        lab.save_state(state_file)
    for h in hosts:
        echo(f"    {h.name}  {h.address:<12} --db {h.db}")

    sxp = example_file()
    if sxp is None:
        sxp = Path(lab.workdir) / "vnet97.sxp"
        sxp.write_text(VNET97_SXP)
    step(f"vnet 97 from {sxp.name} on every host: {sxp.read_text().strip().splitlines()[-1]}")
    for h in hosts:
        out = _ovsvnet(h, "create", str(sxp)).stdout.strip()
        echo(f"    {h.name}$ ovsvnet create {sxp.name}\n{_indent(out, '      ')}")

    step(f"agents: 'ovsvnet agent --interval {AGENT_INTERVAL:g}' on every host (discovery on "
         "224.10.0.1:1798)")
    for h in hosts:
        procs[h.name] = start_agent(h)
        if state_file is not None:
            lab.save_state(state_file)
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    converged = False
    while time.monotonic() < deadline:
        dead = [n for n, p in procs.items() if p.poll() is not None]
        if dead:
            echo(f"    agent on {', '.join(dead)} exited (see {hosts[0].dir.parent}/<host>/"
                 "agent.log)")
            break
        if _tunnels_up(hosts):
            converged = True
            break
        time.sleep(0.3)
    if converged:
        echo(f"    every host found the other {opts.hosts - 1} and opened tunnels")
    else:
        echo(f"    WARNING: the agents did not bring every tunnel up within "
             f"{CONVERGE_TIMEOUT:g} s; falling back to static peers (ovsvnet peer-add)")
        for h in hosts:
            for other in hosts:
                if other is not h:
                    _ovsvnet(h, "peer-add", other.address)

    mtu = json.loads(_ovsvnet(hosts[0], "show", "97", "--json").stdout)["mtu"] or 1450
    step(f"guests: one per host on bridge vnet97, MTU {mtu} (from 'ovsvnet show 97 --json')")
    guests = []
    for i, h in enumerate(hosts):
        g = lab.add_guest(f"g{i + 1}", h.name, "vnet97", ip=f"10.97.0.{i + 1}/24", mtu=mtu)
        guests.append(g)
        echo(f"    {g.name} on {h.name}: {g.ip}  mac {g.mac}  port {g.port}")
    if state_file is not None:
        lab.save_state(state_file)

    step("ping every pair of guests")
    good = total = 0
    for src in guests:
        for dst in guests:
            if src is dst:
                continue
            total += 1
            t = time.monotonic()
            ok = src.ping(dst.addr, count=2, interval=0.2, timeout=10)
            good += ok
            echo(f"    {src.name} -> {dst.name} ({dst.addr}): "
                 f"{'ok' if ok else 'FAILED'}  {time.monotonic() - t:.1f} s")

    h1 = hosts[0]
    step(f"ovs-vsctl show ({h1.name})")
    echo(_indent(h1.vsctl("show")))
    step(f"ovsvnet show 97 --flows ({h1.name}): every flow with what its cookie means")
    echo(_indent(_ovsvnet(h1, "show", "97", "--flows").stdout))
    step(f"ovsvnet varp ({h1.name}): remote MACs learned per vnet")
    echo(_indent(_ovsvnet(h1, "varp").stdout))
    step(f"ovsvnet status ({h1.name})")
    echo(_indent(_ovsvnet(h1, "status").stdout))

    step(f"result: {good}/{total} pings succeeded")
    return good == total


def _print_kept(lab: Any, opts: DemoOptions, echo: Echo) -> None:
    sel = "" if opts.name == "demo" else f" --name {opts.name}"
    first = next(iter(lab.hosts.values()), None)
    echo(f"\nThe lab stays up (sandbox {opts.name!r}, prefix {lab.prefix}). Try:")
    if first is not None:
        echo(f"  ovsvnet --db {first.db} list")
        echo(f"  ovsvnet sandbox exec {opts.name} {first.name} -- ovsvnet status")
    if "g1" in lab.guests and "g2" in lab.guests:
        echo(f"  ovsvnet sandbox exec {opts.name} g1 -- ping -c 3 {lab.guests['g2'].addr}")
    echo(f"  ovsvnet sandbox status {opts.name}")
    echo(f"Remove it (agents too): ovsvnet demo --down{sel}")


def take_down(name: str = "demo", echo: Echo = print, state_dir: Path | None = None) -> int:
    """Stop the agents of a lab a ``--keep`` demo left (by pidfile), then remove the lab."""
    workdir = lab_state.state_dir(state_dir) / name
    state_file = workdir / "lab.json"
    if not state_file.exists():
        echo(f"no demo lab named {name!r} ({state_file} does not exist)")
        return 4
    lab = Lab.load(state_file)
    for h in lab.hosts.values():
        pid = read_pid(agent_pidfile(h))
        if pid:
            stop_agent_pid(pid)
    try:
        lab.down()
    except LabError as exc:
        echo(f"teardown incomplete: {exc}")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    echo(f"demo lab {name!r} removed")
    return 0
