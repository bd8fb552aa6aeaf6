"""Running a registry member: ``ovsdb-tool create-cluster``/``join-cluster`` and ovsdb-server.

A member lives in one directory (default ``/var/lib/ovsvnet/registry``)::

    registry.db       the database (a Raft log when clustered)
    member.json       how it was set up: address, client and Raft ports, standalone or not
    ovsdb-server.pid  .ctl  .log   the daemon's pidfile, control socket and log
    registry.sock     a local unix socket (ovsvnet --registry unix:DIR/registry.sock)

so ``start``, ``stop`` and ``status`` need nothing but the directory. Clients connect on
``tcp:ADDRESS:6645``; members talk Raft on ``tcp:ADDRESS:6646``. A 3-member cluster
survives the loss of one member, a 5-member cluster two; a standalone member (small sites)
is a plain OVSDB file with no failover.

Only processes this module started are signalled: the pid comes from the member's own
pidfile and is checked to be an ``ovsdb-server`` before any signal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ovsvnet.errors import ConfigError, ConflictError, NotFoundError, OvsvnetError, WaitTimeout
from ovsvnet.registry import model as R
from ovsvnet.system import proc, unixctl

DEFAULT_DIR = "/var/lib/ovsvnet/registry"


@dataclass
class Member:
    """One registry member's settings (saved as ``member.json`` in its directory)."""

    dir: str
    address: str
    port: int = R.CLIENT_PORT
    raft_port: int = R.RAFT_PORT
    standalone: bool = False

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def db(self) -> Path:
        return self.path / "registry.db"

    @property
    def pidfile(self) -> Path:
        return self.path / "ovsdb-server.pid"

    @property
    def ctl(self) -> Path:
        return self.path / "ovsdb-server.ctl"

    @property
    def log(self) -> Path:
        return self.path / "ovsdb-server.log"

    @property
    def sock(self) -> Path:
        return self.path / "registry.sock"

    def raft_remote(self) -> str:
        return f"tcp:{_host(self.address)}:{self.raft_port}"

    def client_remote(self) -> str:
        return f"tcp:{_host(self.address)}:{self.port}"

    def save(self) -> None:
        (self.path / "member.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str) -> Member:
        try:
            data = json.loads((Path(directory) / "member.json").read_text())
        except OSError as exc:
            raise NotFoundError(f"registry: no member in {directory} ({exc.strerror}); "
                                "run ovsvnet registry init or join first") from exc
        except ValueError as exc:
            raise OvsvnetError(f"registry: {directory}/member.json is not JSON: {exc}") from exc
        return cls(**{k: data[k] for k in ("dir", "address", "port", "raft_port", "standalone")
                      if k in data})


def _host(address: str) -> str:
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError as exc:
        raise ConfigError(f"address: {address!r} is not an IP address") from exc


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return proc.run(argv, timeout=timeout)


def _prepare(member: Member) -> None:
    _host(member.address)
    for what, port in (("port", member.port), ("raft-port", member.raft_port)):
        if not 1 <= port <= 65535:
            raise ConfigError(f"{what}: {port} is not a TCP port")
    if member.db.exists():
        raise ConflictError(f"registry: {member.db} already exists; start it with "
                            f"ovsvnet registry start --dir {member.dir}")
    member.path.mkdir(parents=True, exist_ok=True, mode=0o750)


def init(member: Member) -> None:
    """Create a new registry: the first member of a cluster, or a standalone database.

    The database starts with its one ``Registry`` row (``next_cfg`` 0), written offline with
    ``ovsdb-tool transact`` into a standalone file that ``create-cluster`` then takes as
    its initial contents, so two first commands cannot race to insert it."""
    _prepare(member)
    seed = member.path / "registry.seed.db"
    with contextlib.suppress(FileNotFoundError):
        seed.unlink()
    _run(["ovsdb-tool", "create", str(seed), str(R.SCHEMA_PATH)])
    _run(["ovsdb-tool", "transact", str(seed), json.dumps(
        [R.DB_NAME, {"op": "insert", "table": "Registry", "row": {"next_cfg": 0}}])])
    if member.standalone:
        seed.rename(member.db)
    else:
        try:
            _run(["ovsdb-tool", "create-cluster", str(member.db), str(seed),
                  member.raft_remote()])
        finally:
            seed.unlink()
    member.save()


def join(member: Member, peers: list[str]) -> None:
    """Create this member's database as a copy-to-be of an existing cluster.

    ``peers`` are existing members' addresses (``ADDR`` or ``ADDR:RAFTPORT``); the data
    arrives from the leader once the server starts."""
    if member.standalone:
        raise ConfigError("join: a standalone registry has no cluster to join")
    if not peers:
        raise ConfigError("join: give at least one existing member with --peer")
    remotes = []
    for p in peers:
        if p.startswith("tcp:") or p.startswith("ssl:"):
            remotes.append(p)
            continue
        tcp = R.normalize_remotes(p, port=R.RAFT_PORT)
        remotes.append(tcp)
    _prepare(member)
    _run(["ovsdb-tool", "join-cluster", str(member.db), R.DB_NAME, member.raft_remote(),
          *remotes])
    member.save()


def argv(member: Member, detach: bool = True) -> list[str]:
    """The ovsdb-server command line for a member."""
    args = ["ovsdb-server", str(member.db),
            f"--remote=ptcp:{member.port}:{member.address}",
            f"--remote=punix:{member.sock}",
            f"--pidfile={member.pidfile}", f"--unixctl={member.ctl}",
            f"--log-file={member.log}", "--no-chdir"]
    return args + (["--detach"] if detach else [])


def pid(member: Member) -> int | None:
    """The member's ovsdb-server pid, if it runs (read from its own pidfile, name checked)."""
    return proc.pid_from_file(member.pidfile, comm="ovsdb-server")


def start(member: Member, foreground: bool = False) -> int | None:
    """Start ovsdb-server for the member (detached; or exec it, for systemd)."""
    if not member.db.exists():
        raise NotFoundError(f"registry: no database in {member.dir}; run ovsvnet registry "
                            "init or join first")
    running = pid(member)
    if running:
        return running
    with contextlib.suppress(FileNotFoundError):
        member.sock.unlink()
    if foreground:
        cmd = argv(member, detach=False)
        os.execvp(cmd[0], cmd)
    _run(argv(member))
    return pid(member)


def stop(member: Member, timeout: float = 10) -> bool:
    """Stop the member's ovsdb-server; False if it was not running."""
    running = pid(member)
    if running is None:
        return False
    with contextlib.suppress(OvsvnetError):
        unixctl.call(member.ctl, "exit")
    with contextlib.suppress(WaitTimeout):
        proc.wait_until(lambda: pid(member) != running, timeout=timeout,
                        what="ovsdb-server to exit")
        return True
    proc.stop_pid(running, comm="ovsdb-server", grace=5)
    return True


def parse_cluster_status(text: str) -> dict[str, Any]:
    """``ovs-appctl cluster/status`` output as a dict (keys lower-case, servers listed)."""
    out: dict[str, Any] = {"servers": []}
    in_servers = False
    for line in text.splitlines():
        if line.startswith("Servers:"):
            in_servers = True
            continue
        if in_servers and line.startswith("    "):
            m = re.match(r"\s+(\w+) \((\w+) at ([^)]+)\)( \(self\))?", line)
            if m:
                out["servers"].append({"sid": m.group(1), "address": m.group(3),
                                       "self": bool(m.group(4))})
            continue
        in_servers = False
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith(" "):
            out[key.strip().lower().replace(" ", "_")] = value.strip()
    return out


def status(member: Member) -> dict[str, Any]:
    """This member: running or not; its role, term, leader and servers when clustered."""
    data: dict[str, Any] = {"dir": member.dir, "address": member.address,
                            "client_remote": member.client_remote(),
                            "mode": "standalone" if member.standalone else "clustered",
                            "pid": pid(member)}
    if data["pid"] is None:
        data["state"] = "stopped"
        return data
    data["state"] = "running"
    if member.standalone:
        data["role"] = "standalone"
        return data
    try:
        text = unixctl.call(member.ctl, "cluster/status", R.DB_NAME)
    except OvsvnetError as exc:
        data["error"] = str(exc)
        return data
    cs = parse_cluster_status(text)
    data.update({"role": cs.get("role"), "status": cs.get("status"), "term": cs.get("term"),
                 "leader": cs.get("leader"), "cluster_id": cs.get("cluster_id"),
                 "server_id": cs.get("server_id"), "servers": cs["servers"]})
    return data
