"""A registry cluster inside a lab (:mod:`ovsvnet.lab`), for tests, benchmarks and demos.

Each member is an ovsdb-server started with ``ovsvnet registry init|join|start`` *inside* a
lab namespace (usually a plain host on a segment, like OVN's central nodes beside the
hypervisors), bound to that namespace's address, with its directory under the lab's
workdir. By default it is a TLS registry: a PKI in the workdir (:mod:`ovsvnet.registry.pki`,
what ``ovsvnet registry pki`` runs), one server identity per member and, on demand, a
chassis identity per lab host (:meth:`RegistryCluster.chassis`), as an operator makes them.
:meth:`RegistryCluster.down` stops every member by the pid in its own pidfile; it must run
before the lab deletes its namespaces (use the cluster as a context manager inside the
lab's), or a server would outlive its namespace.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ovsvnet.errors import OvsvnetError
from ovsvnet.lab.common import LabError
from ovsvnet.lab.netns import ns_argv
from ovsvnet.ovsdb import SslFiles
from ovsvnet.registry import pki
from ovsvnet.registry import server as S
from ovsvnet.system import proc
from ovsvnet.system.proc import wait_until


class _Place(Protocol):
    name: str
    netns: str
    address: str


class RegistryCluster:
    """Members named after the lab namespaces they run in; ``remotes`` for agents,
    ``operator_remotes`` (the members' unix sockets) for defining vnets."""

    #: RSA key size in labs: smaller than a real PKI's, to keep tests fast.
    BITS = 2048

    def __init__(self, workdir: Path, places: Sequence[_Place], standalone: bool = False,
                 insecure: bool = False):
        if standalone and len(places) != 1:
            raise LabError("a standalone registry has exactly one member")
        self.places = {p.name: p for p in places}
        self.pki = Path(workdir) / "registry-pki"
        self.members = {p.name: S.Member.create(
            str(Path(workdir) / f"reg-{p.name}"), p.address, standalone=standalone,
            tls=None if insecure else pki.member_identity(self.pki / "servers" / p.name))
            for p in places}
        self.standalone = standalone
        self.insecure = insecure
        self._chassis: dict[str, SslFiles] = {}

    @property
    def remotes(self) -> str:
        return ",".join(m.client_remote() for m in self.members.values())

    @property
    def operator_remotes(self) -> str:
        """Every member's local socket: no role, the way operators define vnets."""
        return ",".join(f"unix:{m.sock}" for m in self.members.values())

    def _ovsvnet(self, name: str, *args: str) -> None:
        argv = ns_argv(self.places[name].netns,
                       [sys.executable, "-m", "ovsvnet", "registry", *args])
        done = proc.run(argv, check=False, timeout=60, error=LabError,
                        what=f"registry {args[0]} on {name}")
        if done.returncode != 0:
            raise LabError(f"registry {' '.join(args[:2])} on {name} failed: "
                           f"{(done.stderr or done.stdout).strip()[-300:]}")

    def chassis(self, name: str, system_id: str) -> SslFiles:
        """A chassis identity for lab host ``name`` (CN ``system_id``), made once."""
        if name not in self._chassis:
            out = pki.issue(self.pki, "chassis", system_id, self.pki / "chassis" / name,
                            bits=self.BITS)
            self._chassis[name] = pki.identity(out)
        return self._chassis[name]

    def _tls_options(self, name: str) -> list[str]:
        if self.insecure:
            return ["--insecure"]
        return ["--pki-dir", str(self.pki / "servers" / name)]

    def up(self, timeout: float = 30) -> None:
        names = list(self.members)
        if not self.insecure:  # what 'ovsvnet registry pki init|server' do
            pki.init(self.pki, bits=self.BITS)
            for name in names:
                pki.issue(self.pki, "server", name, bits=self.BITS)
        first = self.members[names[0]]
        init = ["init", "--dir", first.dir, "--address", first.address,
                *self._tls_options(names[0])]
        self._ovsvnet(names[0], *init, *(["--standalone"] if self.standalone else []))
        for name in names[1:]:
            m = self.members[name]
            self._ovsvnet(name, "join", "--dir", m.dir, "--address", m.address,
                          "--peer", first.address, *self._tls_options(name))
        self.members = {name: S.Member.load(m.dir) for name, m in self.members.items()}
        wait_until(lambda: self.leader() is not None and all(
            (S.status(m).get("status") or "") == "cluster member"
            for m in self.members.values()) if not self.standalone else
            S.pid(first) is not None, timeout=timeout, what="the registry cluster to form")

    def leader(self) -> str | None:
        """The member that says it is leader (None if none does, or standalone)."""
        for name, m in self.members.items():
            if S.pid(m) is not None and S.status(m).get("role") == "leader":
                return name
        return None

    def pid(self, name: str) -> int | None:
        return S.pid(self.members[name])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one member, its relay too, by their pidfiles (a crash, with SIGKILL; another
        ``sig`` is followed by SIGKILL if one still runs 10 s later)."""
        m = self.members[name]
        for pid in (S.relay_pid(m), S.pid(m)):
            if pid is None:
                continue
            try:
                proc.stop_pid(pid, comm="ovsdb-server", grace=10, first=sig)
            except OvsvnetError as err:
                raise LabError(f"registry member {name} (pid {pid}) survived SIGKILL") from err

    def start(self, name: str) -> None:
        self._ovsvnet(name, "start", "--dir", self.members[name].dir)

    def status(self) -> dict[str, Any]:
        return {name: S.status(m) for name, m in self.members.items()}

    def down(self) -> None:
        """Stop every member (by pidfile); safe to call twice."""
        errors = []
        for name, m in self.members.items():
            try:
                S.stop(m, timeout=5)
            except Exception as exc:  # noqa: BLE001 - stop the others, then report
                errors.append(f"{name}: {exc}")
        if errors:
            raise LabError("registry teardown incomplete: " + "; ".join(errors))

    def __enter__(self) -> RegistryCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def wait_elected(cluster: RegistryCluster, timeout: float = 15) -> str:
    leader = wait_until(cluster.leader, timeout=timeout, what="a registry leader")
    assert leader is not None  # wait_until returns only what is truthy
    return leader
