"""Run a command inside the running agent, which already holds this host's database.

A command run on its own downloads the whole Open_vSwitch database first (0.6 s at 1000
vnets, like every ``ovs-vsctl`` run: the reason ``ovn-nbctl`` grew a daemon mode). When
the agent runs on the same database, the command is sent to it instead: the agent runs the
very same click command against its replica and returns the output and the exit code, so
the result is the same as running it here, at a cost that does not grow with the host.

Only commands that read or change this host's vnets and peers go (:data:`DELEGABLE`); not
those that run long, read stdin, talk to the registry or inspect this process's
environment. ``OVSVNET_DIRECT=1`` runs every command here (tests compare both paths).

This client is plain ``socket`` + ``json``: python-ovs's unixctl client would import 20 ms
of modules (its poller and logging), as much as the rest of a fast command.
"""

from __future__ import annotations

import glob
import json
import os
import socket
from typing import Any

from ovsvnet.system import proc

#: The agent's ``ovs-appctl -t`` name; its pidfile and socket follow OVS's naming.
TARGET = "ovsvnet-agent"
#: The unixctl command that runs a CLI command in the agent.
COMMAND = "cli"

DELEGABLE = frozenset({
    "create", "delete", "list", "show", "vnet-create", "vnet-delete", "vnet-list",
    "sync", "peer-add", "peer-delete", "peers", "varp", "varp-flush", "vifs",
    "vnets", "vnifs", "vif-add", "vif-delete", "bridges",
})


def agent_socket(rundir: str) -> str | None:
    """The running agent's control socket in ``rundir``, as ``ovs-appctl -t`` finds it."""
    pid = proc.read_pid(os.path.join(rundir, f"{TARGET}.pid"))
    if pid:
        path = os.path.join(rundir, f"{TARGET}.{pid}.ctl")
        if os.path.exists(path):
            return path
    for path in sorted(glob.glob(os.path.join(glob.escape(rundir), f"{TARGET}.*.ctl"))):
        middle = os.path.basename(path)[len(TARGET) + 1:-len(".ctl")]
        if middle.isdigit() and proc.pid_alive(int(middle)):
            return path
    return None


def wanted(command: str | None, argv: list[str], registry: str | None) -> bool:
    return (command in DELEGABLE and not registry and "-" not in argv
            and os.environ.get("OVSVNET_DIRECT", "") in ("", "0"))


def call(path: str, method: str, params: list[Any], timeout: float) -> Any:
    """One JSON-RPC request on a unixctl socket; the result, or None if it failed."""
    request = json.dumps({"method": method, "params": params, "id": 0}).encode()
    decoder = json.JSONDecoder()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(request)
            buf = ""
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return None
                buf += chunk.decode()
                try:
                    reply, _ = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    continue  # not all of it yet
                break
    except OSError:
        return None
    if not isinstance(reply, dict) or reply.get("error") is not None:
        return None
    return reply.get("result")


def run_in_agent(rundir: str, db: str, argv: list[str], prog: str,
                 timeout: float) -> tuple[int, str, str] | None:
    """(exit code, stdout, stderr) of ``argv`` run by the agent, or None when no agent on
    this database answers (the caller then runs the command itself)."""
    path = agent_socket(rundir)
    if path is None:
        return None
    request = {"argv": argv, "prog": prog, "cwd": os.getcwd(), "db": db}
    result = call(path, COMMAND, [json.dumps(request)], timeout)
    if not isinstance(result, str):
        return None
    try:
        reply = json.loads(result)
        return int(reply["rc"]), str(reply["out"]), str(reply["err"])
    except (ValueError, KeyError, TypeError):
        return None
