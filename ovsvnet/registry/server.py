"""Running a registry member: ``ovsdb-tool create-cluster``/``join-cluster`` and ovsdb-server.

A member lives in one directory (default ``/var/lib/ovsvnet/registry``, mode 0700)::

    registry.db       the database (a Raft log when clustered)
    member.json       how it was set up: address, ports, standalone or not, TLS files
    ovsdb-server.pid  .ctl  .log   the database server's pidfile, control socket and log
    relay.pid  .ctl  .log          the TLS relay's (TLS members only)
    registry.sock     the operators' unix socket (no role: full access; root only)

so ``start``, ``stop``, ``status`` and ``upgrade`` need nothing but the directory.

A TLS member (the default) is two ovsdb-servers, because ovsdb-server has one TLS setting
per process: the database server talks Raft over ``ssl:`` and trusts only the server CA
(so no chassis certificate ever opens a Raft connection: Raft trusts its peers
completely), and serves the operators' socket; its relay (``relay:`` on that socket)
serves the agents on ``pssl:`` through the database's own Connection row
(``--remote=db:OVSVNET_Registry,Registry,connections``), trusts only the chassis CA, and
applies the row's RBAC role, which lets a chassis write only its own rows (and forwards
what it allows to the database server). An ``--insecure`` member is one ovsdb-server on
plain TCP with no roles (anyone who reaches the port can change anything).
A 3-member cluster survives the loss of one member, a 5-member cluster two; a standalone
member (small sites) is a plain OVSDB file with no failover.

Only processes this module started are signalled: the pids come from the member's own
pidfiles and are checked to be ``ovsdb-server`` before any signal.
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

from ovsvnet.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    OvsvnetError,
    WaitTimeout,
)
from ovsvnet.registry import model as R
from ovsvnet.registry import pki
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
    #: plain TCP for clients and Raft, no certificates, no roles (``--insecure``)
    insecure: bool = False
    private_key: str = ""
    certificate: str = ""
    #: the CA of the Raft peers (the server CA)
    ca_cert: str = ""
    #: the CA of the agents (the chassis CA): only the relay trusts it
    client_ca_cert: str = ""
    #: the schema version the database was last brought to (``start`` converts older ones)
    schema: str = ""
    #: where Raft listens, if not on ``address`` (a network only members reach)
    raft_address: str = ""

    @classmethod
    def create(cls, directory: str, address: str, port: int = R.CLIENT_PORT,
               raft_port: int = R.RAFT_PORT, standalone: bool = False,
               tls: pki.MemberTls | None = None, raft_address: str = "") -> Member:
        """A new member: TLS with ``tls``'s files, plain TCP when ``tls`` is None."""
        files = ("", "", "", "") if tls is None else (
            tls.private_key, tls.certificate, tls.ca_cert, tls.client_ca_cert)
        return cls(directory, address, port, raft_port, standalone, tls is None, *files,
                   raft_address=raft_address)

    @property
    def tls(self) -> pki.MemberTls | None:
        if self.insecure:
            return None
        files = (self.private_key, self.certificate, self.ca_cert, self.client_ca_cert)
        if not all(files):
            raise ConfigError(f"registry: {self.dir}/member.json names no certificate; "
                              "a TLS member needs private_key, certificate, ca_cert and "
                              "client_ca_cert")
        return pki.MemberTls(*files)

    @property
    def scheme(self) -> str:
        return "tcp" if self.insecure else "ssl"

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

    @property
    def relay_pidfile(self) -> Path:
        return self.path / "relay.pid"

    @property
    def relay_ctl(self) -> Path:
        return self.path / "relay.ctl"

    @property
    def relay_log(self) -> Path:
        return self.path / "relay.log"

    def raft_remote(self) -> str:
        return f"{self.scheme}:{_host(self.raft_address or self.address)}:{self.raft_port}"

    def client_remote(self) -> str:
        return f"{self.scheme}:{_host(self.address)}:{self.port}"

    def listener(self) -> str | None:
        """The TLS client listener of this member's Connection row (None: insecure)."""
        return None if self.insecure else R.client_listener(self.port, self.address,
                                                             self.standalone)

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
        if "insecure" not in data:
            data["insecure"] = True  # made before schema 1.1.0: plain TCP, as it was
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _host(address: str) -> str:
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError as exc:
        raise ConfigError(f"address: {address!r} is not an IP address") from exc


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return proc.run(argv, timeout=timeout)


def _prepare(member: Member) -> None:
    _host(member.address)
    if member.raft_address:
        _host(member.raft_address)
    for what, port in (("port", member.port), ("raft-port", member.raft_port)):
        if not 1 <= port <= 65535:
            raise ConfigError(f"{what}: {port} is not a TCP port")
    _check_identity(member)
    if member.db.exists():
        raise ConflictError(f"registry: {member.db} already exists; start it with "
                            f"ovsvnet registry start --dir {member.dir}")
    member.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _private(member)


def _check_identity(member: Member) -> None:
    """A TLS member's files, checked before ovsdb-server gets them."""
    tls = member.tls
    if tls is not None:
        pki.check_member(tls)


def _private(member: Member) -> None:
    """The directory holds the operators' socket, which has no role: root (the owner) only."""
    if member.path.stat().st_mode & 0o077:
        os.chmod(member.path, 0o700)


def check_transact(out: str, what: str) -> None:
    """``ovsdb-tool``/``ovsdb-client transact`` exit 0 even when an operation fails."""
    try:
        results = json.loads(out)
    except ValueError as exc:
        raise OvsvnetError(f"{what}: unexpected answer {out.strip()[:200]!r}") from exc
    for r in results:
        if isinstance(r, dict) and "error" in r:
            detail = f"{r['error']}: {r.get('details', '')}".rstrip(": ")
            if r["error"] == "constraint violation":
                raise ConflictError(f"{what}: {detail}")
            raise OvsvnetError(f"{what}: {detail}")


def init(member: Member) -> None:
    """Create a new registry: the first member of a cluster, or a standalone database.

    The database starts with its one ``Registry`` row (``next_cfg`` 0), the chassis role
    and, for TLS, the client listener, written offline with ``ovsdb-tool transact`` into a
    standalone file that ``create-cluster`` then takes as its initial contents: nothing is
    ever served without its access control, and two first commands cannot race."""
    _prepare(member)
    seed = member.path / "registry.seed.db"
    with contextlib.suppress(FileNotFoundError):
        seed.unlink()
    _run(["ovsdb-tool", "create", str(seed), str(R.SCHEMA_PATH)])
    try:
        request = R.seed_transaction(registry=True, rbac=True, target=member.listener())
        check_transact(_run(["ovsdb-tool", "transact", str(seed),
                              json.dumps(request)]).stdout, "registry: seeding the database")
        if member.standalone:
            seed.rename(member.db)
        else:
            _run(["ovsdb-tool", "create-cluster", str(member.db), str(seed),
                  member.raft_remote()])
    finally:
        with contextlib.suppress(FileNotFoundError):
            seed.unlink()
    member.schema = R.schema_version()
    member.save()


def peer_remote(peer: str, scheme: str) -> str:
    """An existing member's Raft remote from ``ADDR``, ``ADDR:RAFTPORT`` or a remote; a
    remote must use the member's own transport (TLS members never talk plain TCP)."""
    for s in ("tcp", "ssl"):
        if peer.startswith(f"{s}:"):
            if s != scheme:
                raise ConfigError(f"peer: {peer} uses {s}, but this member uses {scheme} "
                                  "(every member of a cluster uses the same; --insecure "
                                  "means tcp)")
            return peer
    if "," in peer or peer.startswith("unix:"):
        raise ConfigError(f"peer: {peer!r} is not ADDR, ADDR:RAFTPORT or "
                          f"{scheme}:ADDR:RAFTPORT")
    return R.normalize_remotes(peer, port=R.RAFT_PORT, scheme=scheme)


def join(member: Member, peers: list[str]) -> None:
    """Create this member's database as a copy-to-be of an existing cluster.

    ``peers`` are existing members' addresses (``ADDR`` or ``ADDR:RAFTPORT``); the data
    (and the access control) arrives from the leader once the server starts. Its schema is
    the cluster's, unknown until then, so the first start checks it
    (:func:`ovsvnet.registry.upgrade.upgrade`)."""
    if member.standalone:
        raise ConfigError("join: a standalone registry has no cluster to join")
    if not peers:
        raise ConfigError("join: give at least one existing member with --peer")
    remotes = [peer_remote(p, member.scheme) for p in peers]
    _prepare(member)
    _run(["ovsdb-tool", "join-cluster", str(member.db), R.DB_NAME, member.raft_remote(),
          *remotes])
    member.schema = ""
    member.save()


def argv(member: Member, detach: bool = True) -> list[str]:
    """The database server's command line (TLS: Raft and the operators' socket only)."""
    tls = member.tls
    if tls is None:
        remotes = [f"--remote=ptcp:{member.port}:{member.address}"]
    else:
        remotes = [f"--private-key={tls.private_key}", f"--certificate={tls.certificate}",
                   f"--ca-cert={tls.ca_cert}"]
    args = ["ovsdb-server", str(member.db), *remotes,
            f"--remote=punix:{member.sock}",
            f"--pidfile={member.pidfile}", f"--unixctl={member.ctl}",
            f"--log-file={member.log}", "--no-chdir"]
    return args + (["--detach"] if detach else [])


def relay_argv(member: Member, detach: bool = True) -> list[str]:
    """The TLS relay's command line: agents' listener and role from the database's
    Connection rows, the chassis CA only; everything it allows goes to the socket."""
    tls = member.tls
    if tls is None:
        raise ConfigError(f"registry: the member in {member.dir} is insecure: it has no relay")
    args = ["ovsdb-server", f"relay:{R.DB_NAME}:unix:{member.sock}",
            f"--remote={R.CONNECTIONS_REMOTE}", f"--private-key={tls.private_key}",
            f"--certificate={tls.certificate}", f"--ca-cert={tls.client_ca_cert}",
            f"--pidfile={member.relay_pidfile}", f"--unixctl={member.relay_ctl}",
            f"--log-file={member.relay_log}", "--no-chdir"]
    return args + (["--detach"] if detach else [])


def pid(member: Member) -> int | None:
    """The database server's pid, if it runs (from its own pidfile, name checked)."""
    return proc.pid_from_file(member.pidfile, comm="ovsdb-server")


def relay_pid(member: Member) -> int | None:
    """The relay's pid, if it runs."""
    return proc.pid_from_file(member.relay_pidfile, comm="ovsdb-server")


def start(member: Member, foreground: bool = False, relay: bool = False) -> int | None:
    """Start the member: its database server and, for TLS, its relay (detached); or exec
    one of them in the foreground (``relay``), for systemd. Returns the server's pid."""
    if not member.db.exists():
        raise NotFoundError(f"registry: no database in {member.dir}; run ovsvnet registry "
                            "init or join first")
    _check_identity(member)
    _private(member)
    if foreground:
        cmd = relay_argv(member, detach=False) if relay else argv(member, detach=False)
        if not relay:
            with contextlib.suppress(FileNotFoundError):
                member.sock.unlink()
        os.execvp(cmd[0], cmd)
    running = pid(member)
    if running is None:
        with contextlib.suppress(FileNotFoundError):
            member.sock.unlink()
        _run(argv(member))
        running = pid(member)
    if member.tls is not None and relay_pid(member) is None:
        _run(relay_argv(member))
    return running


def stop(member: Member, timeout: float = 10) -> bool:
    """Stop the member's relay and database server; False if neither was running."""
    stopped = _stop(relay_pid(member), member.relay_ctl, timeout)
    return _stop(pid(member), member.ctl, timeout) or stopped


def _stop(running: int | None, ctl: Path, timeout: float) -> bool:
    if running is None:
        return False
    with contextlib.suppress(OvsvnetError):
        unixctl.call(ctl, "exit")
    with contextlib.suppress(WaitTimeout):
        proc.wait_until(lambda: not proc.pid_alive(running), timeout=timeout,
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
    """This member: running or not; its role, term, leader and servers when clustered;
    whether it is insecure (plain TCP, no roles) and what it is secured with."""
    data: dict[str, Any] = {"dir": member.dir, "address": member.address,
                            "client_remote": member.client_remote(),
                            "mode": "standalone" if member.standalone else "clustered",
                            "transport": member.scheme, "insecure": member.insecure,
                            "schema": member.schema or None, "pid": pid(member)}
    if not member.insecure:
        relay = relay_pid(member)
        data["tls"] = {"private_key": member.private_key, "certificate": member.certificate,
                       "ca_cert": member.ca_cert, "client_ca_cert": member.client_ca_cert,
                       "listener": member.listener(), "role": R.CHASSIS_ROLE,
                       "relay": {"pid": relay, "state": "running" if relay else "stopped"}}
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
