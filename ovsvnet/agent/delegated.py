"""Commands the CLI hands to the running agent (see :mod:`ovsvnet.cli.delegate`).

The agent holds this host's database replica; a command run on it costs what its change
costs instead of a download of the whole database. The CLI layer gives the agent the
function that runs a command (:data:`Runner`), so the agent never imports the CLI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from ovsvnet.errors import OvsvnetError

#: (argv, program name, host) -> (exit code, stdout, stderr)
Runner = Callable[[list[str], str, Any], tuple[int, str, str]]


def run(request_text: str, host: Any, runner: Runner | None) -> str:
    """Run one delegated command on ``host`` (the agent's); the JSON reply the CLI expects.

    Any refusal is an OvsvnetError, which the control socket returns as an error: the
    caller then runs the command itself (another database, no OVSDB connection, a bug)."""
    if runner is None:
        raise OvsvnetError("cli: this agent runs no commands")
    try:
        request = json.loads(request_text)
        args, prog, cwd, db = (list(map(str, request["argv"])), str(request["prog"]),
                               str(request["cwd"]), str(request["db"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise OvsvnetError(f"cli: bad request: {exc}") from exc
    if db != host.db.remotes:
        raise OvsvnetError(f"cli: this agent manages {host.db.remotes}, not {db}")
    # What ovsdb-server sent before the caller started is in the socket by now (it sends a
    # change's updates with the reply to whoever made it): take it in, so the command sees
    # every change made before it. Disconnected, the replica may be old: the caller then
    # runs the command itself and reports what it finds.
    host.db.run()
    if not host.db.connected():
        raise OvsvnetError("cli: the agent is not connected to OVSDB")
    here = os.getcwd()
    try:
        os.chdir(cwd)  # a command's relative file names are the caller's
        code, out, err = runner(args, prog, host)
    except Exception as exc:
        raise OvsvnetError(f"cli: {type(exc).__name__}: {exc}") from exc
    finally:
        os.chdir(here)
    return json.dumps({"rc": code, "out": out, "err": err})
