"""The agent's control socket: ``ovs-appctl -t ovsvnet-agent status``, as for OVS's daemons.

The socket is ``<rundir>/ovsvnet-agent.<pid>.ctl``, OVS's own naming: ``ovs-appctl -t NAME``
reads ``<rundir>/NAME.pid`` (the agent's default pidfile, ``OVS_RUNDIR`` or
``/var/run/openvswitch``) and talks to ``<rundir>/NAME.<pid>.ctl``. The server side lives in
the agent's loop (python-ovs's unixctl server, polled like every other socket); :func:`find`
and :func:`query` are what ``ovsvnet status``, ``map`` and ``doctor`` use to reach it, also
when the agent was started with ``--pidfile`` elsewhere (the lab does).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Callable
from typing import Any

import ovs.unixctl
import ovs.unixctl.server

from ovsvnet.errors import OvsvnetError
from ovsvnet.system import proc, unixctl

#: The agent's name for ``ovs-appctl -t``: its pidfile and socket are named after it.
TARGET = "ovsvnet-agent"
#: The socket of agents before the rename (found by :func:`find` during an upgrade).
LEGACY_NAME = f"{TARGET}.ctl"

Handler = Callable[[list[str]], str]


def socket_path(rundir: str, pid: int) -> str:
    return os.path.join(rundir, f"{TARGET}.{pid}.ctl")


def path_for(rundir: str, path: str | None = None) -> str:
    """Where this process (the agent) listens: ``path`` if given, else OVS's default name."""
    return path or socket_path(rundir, os.getpid())


def _pid_of(sock: str) -> int | None:
    middle = os.path.basename(sock)[len(TARGET) + 1: -len(".ctl")]
    return int(middle) if middle.isdigit() else None


def find(rundir: str, path: str | None = None) -> str | None:
    """The running agent's socket: ``path`` if given; else as ``ovs-appctl -t ovsvnet-agent``
    finds it (pidfile, then the pid's socket); else the newest socket in ``rundir`` whose
    agent is alive (an agent with its pidfile elsewhere); else the pre-rename name."""
    if path:
        return path
    pid = proc.read_pid(os.path.join(rundir, f"{TARGET}.pid"))
    if pid and os.path.exists(socket_path(rundir, pid)):
        return socket_path(rundir, pid)
    live = [s for s in glob.glob(os.path.join(glob.escape(rundir), f"{TARGET}.*.ctl"))
            if proc.pid_alive(_pid_of(s))]
    if live:
        return max(live, key=lambda s: (os.path.getmtime(s), s))
    legacy = os.path.join(rundir, LEGACY_NAME)
    return legacy if os.path.exists(legacy) else None


def _remove_stale(rundir: str) -> None:
    """Sockets left by agents that died without closing them (SIGKILL): their pid is gone.
    A live agent's socket is never touched, whatever its pidfile."""
    for sock in glob.glob(os.path.join(glob.escape(rundir), f"{TARGET}.*.ctl")):
        pid = _pid_of(sock)
        if pid is not None and pid != os.getpid() and not proc.pid_alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(sock)


def serve(path: str, commands: dict[str, Handler]) -> ovs.unixctl.server.UnixctlServer:
    """Open the control socket at ``path`` with ``commands`` (name -> handler(args) -> reply).

    The socket is mode 0600. Sockets of dead agents in the same directory are removed; the
    caller holds the pidfile lock, so no live agent owns ``path``."""
    _remove_stale(os.path.dirname(path) or ".")
    if os.path.exists(path):
        os.unlink(path)
    old = os.umask(0o077)  # root only: python-ovs's fchmod after bind does not apply
    try:
        error, server = ovs.unixctl.server.UnixctlServer.create(path)
    finally:
        os.umask(old)
    if error:
        raise OvsvnetError(f"control socket {path}: {os.strerror(error)}")
    for name, handler in commands.items():
        def reply(conn: Any, argv: list[str], aux: Handler) -> None:
            try:
                conn.reply(aux(argv))
            except OvsvnetError as exc:
                conn.reply_error(str(exc))
        most = ARGUMENTS.get(name, 0)
        ovs.unixctl.command_register(name, "", 0, most, reply, handler)
    return server


#: Commands that take arguments (name -> at most how many); the others take none.
ARGUMENTS = {"cli": 1}


def query(rundir: str, command: str = "status", path: str | None = None) -> Any:
    """Ask a running agent over its control socket; None if no agent answers. A JSON reply
    is decoded; any other reply (``metrics``) is returned as text."""
    sock = find(rundir, path)
    if sock is None:
        return None
    try:
        result = unixctl.call(sock, command)
    except OvsvnetError:
        return None
    try:
        return json.loads(result)
    except (TypeError, ValueError):
        return result
