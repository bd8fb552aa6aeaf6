"""Run a command inside the running agent, which already holds this host's database.

A command run on its own downloads the whole Open_vSwitch database first (0.6 s at 1000
vnets, like every ``ovs-vsctl`` run: the reason ``ovn-nbctl`` grew a daemon mode). When
the agent runs on the same database, the command is sent to it instead: the agent runs the
very same click command against its replica and returns the output and the exit code, so
the result is the same as running it here, at a cost that does not grow with the host.

Only commands that read or change this host's vnets and peers go (:data:`DELEGABLE`); not
those that run long, read stdin, talk to the registry or inspect this process's
environment. ``OVSVNET_DIRECT=1`` runs every command here (tests compare both paths).

This client is plain ``socket`` + ``json``, and finds the agent with ``os`` alone:
python-ovs's unixctl client would import 20 ms of modules (its poller and logging), and
:mod:`ovsvnet.system.proc` 4 ms (subprocess), as much as the rest of a fast command.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False  # typing costs 5 ms of a 10 ms command; annotations are strings
if TYPE_CHECKING:
    from typing import Any

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
    """The running agent's control socket in ``rundir``, as ``ovs-appctl -t`` finds it
    (its pidfile there names it), else the socket of a live agent whose pidfile is elsewhere
    (the lab's). A dead agent's socket answers nothing: the caller then runs the command."""
    try:
        with open(os.path.join(rundir, f"{TARGET}.pid")) as f:
            pid = f.read().strip()
    except OSError:
        pid = ""
    if pid.isdigit() and os.path.exists(os.path.join(rundir, f"{TARGET}.{pid}.ctl")):
        return os.path.join(rundir, f"{TARGET}.{pid}.ctl")
    try:
        names = sorted(os.listdir(rundir))
    except OSError:
        return None
    for name in names:
        middle = name[len(TARGET) + 1:-len(".ctl")]
        if name.startswith(f"{TARGET}.") and name.endswith(".ctl") and middle.isdigit() \
                and os.path.exists(f"/proc/{middle}"):
            return os.path.join(rundir, name)
    return None


#: set once this process asked an agent (and it could not answer): no second attempt
tried = False


def wanted(command: str | None, argv: list[str], registry: str | None) -> bool:
    """Whether to hand ``command`` over: not when it reads stdin or names a file (the agent
    may not see the caller's files: systemd's ProtectHome hides /root and /home from it)."""
    return (command in DELEGABLE and not registry and "-" not in argv and not tried
            and os.environ.get("OVSVNET_DIRECT", "") in ("", "0")
            and not any(os.path.exists(a) for a in argv if a and not a.startswith("-")
                        and a != command))


def call(path: str, method: str, params: list[Any], timeout: float) -> Any:
    """One JSON-RPC request on a unixctl socket; the result, or None if it failed."""
    import socket  # only when an agent is there to ask
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
    global tried
    path = agent_socket(rundir)
    if path is None:
        return None
    tried = True
    request = {"argv": argv, "prog": prog, "cwd": os.getcwd(), "db": db}
    result = call(path, COMMAND, [json.dumps(request)], timeout)
    if not isinstance(result, str):
        return None
    try:
        reply = json.loads(result)
        return int(reply["rc"]), str(reply["out"]), str(reply["err"])
    except (ValueError, KeyError, TypeError):
        return None


def _root_options(args: list[str]) -> tuple[dict[str, str], int] | None:
    """The root options before the command (only --db, --rundir, --timeout; anything else
    is for click to parse) and where the command starts; None to leave it to click."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            return opts, i
        name, eq, value = arg.partition("=")
        if name not in ("--db", "--rundir", "--timeout"):
            return None  # --registry, TLS files, --help, --version, a typo...
        if not eq:
            if i + 1 >= len(args):
                return None
            value = args[i + 1]
            i += 1
        opts[name[2:]] = value
        i += 1
    return None


def fast_path(args: list[str], prog: str) -> tuple[int, str, str] | None:
    """Hand the command to the agent before click is even imported; None when it is not
    for the agent (the caller then runs the click group, which may still hand it over)."""
    parsed = _root_options(args)
    if parsed is None or os.environ.get("OVSVNET_REGISTRY"):
        return None
    opts, at = parsed
    if not wanted(args[at], args, None) or "-h" in args or "--help" in args:
        return None
    from ovsvnet.system.paths import DEFAULT_DB, rundir_for
    db = opts.get("db") or os.environ.get("OVSVNET_DB") or DEFAULT_DB
    try:
        timeout = float(opts.get("timeout", "10"))
    except ValueError:
        return None
    return run_in_agent(opts.get("rundir") or rundir_for(db), db, args, prog, timeout)
