"""The agent's control socket: ``ovs-appctl -t <rundir>/ovsvnet-agent.ctl status``.

The server side lives in the agent's loop (python-ovs's unixctl server, polled like every
other socket); :func:`query` is what ``ovsvnet status`` and ``doctor`` use to ask it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import ovs.unixctl
import ovs.unixctl.server

from ovsvnet.errors import OvsvnetError
from ovsvnet.system import unixctl

CONTROL_NAME = "ovsvnet-agent.ctl"

Handler = Callable[[list[str]], str]


def path_for(rundir: str, path: str | None = None) -> str:
    return path or os.path.join(rundir, CONTROL_NAME)


def serve(path: str, commands: dict[str, Handler]) -> ovs.unixctl.server.UnixctlServer:
    """Open the control socket at ``path`` with ``commands`` (name -> handler(args) -> reply).

    The socket is mode 0600. A stale socket (of a dead agent) is replaced; the caller holds
    the pidfile lock, so no live agent owns it."""
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
        ovs.unixctl.command_register(name, "", 0, 0, reply, handler)
    return server


def query(rundir: str, command: str = "status", path: str | None = None) -> Any:
    """Ask a running agent over its control socket; None if no agent answers."""
    try:
        result = unixctl.call(path_for(rundir, path), command)
    except OvsvnetError:
        return None
    try:
        return json.loads(result)
    except (TypeError, ValueError):
        return result
