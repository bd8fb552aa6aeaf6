"""OVN beside ovsvnet in a lab (:mod:`ovsvnet.lab`): the peer the benchmarks measure against.

OVN is what an operator would pick instead of ovsvnet for multi-host L2 on Open vSwitch, so
``bench/ovn.py`` runs both on one lab and reports same-run ratios. Everything here comes from
Debian's ``ovn-central``/``ovn-host`` binaries, started by hand, never as system services:

- :class:`OvnCentral`: the NB and SB ``ovsdb-server`` and ``ovn-northd`` inside one lab
  namespace (a plain host on the hosts' segment, like a real central node), with their
  files, sockets and pidfiles in the lab's workdir; SB listens on ``tcp:ADDR:6642``.
- :class:`OvnChassis`: one ``ovn-controller`` per :class:`~ovsvnet.lab.LabHost`, in the
  host's namespace against the host's own OVS (``system-id``, ``ovn-encap-ip`` = the host's
  underlay address, Geneve, ``br-int`` on the host's datapath type), run directory
  ``<host dir>/ovn``.
- :class:`OvnLab`: both, up and down together; logical switches with ports, and a lab
  guest's port bound to a logical port (``external_ids:iface-id`` on ``br-int``).

Every daemon is stopped by the pid in its own pidfile after checking its name. An
:class:`OvnLab` must go down before its lab deletes the namespaces: use it as a context
manager inside the lab's.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ovsvnet.errors import OvsvnetError
from ovsvnet.lab.common import LabError
from ovsvnet.lab.members import LabHost
from ovsvnet.lab.netns import ns_argv, run_in
from ovsvnet.system import proc

if TYPE_CHECKING:
    from ovsvnet.lab.core import Lab
    from ovsvnet.lab.members import Guest

#: What OVN needs on this machine besides Open vSwitch.
OVN_BINARIES = ("ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-sbctl")
SCHEMAS = {"nb": Path("/usr/share/ovn/ovn-nb.ovsschema"),
           "sb": Path("/usr/share/ovn/ovn-sb.ovsschema")}
PORTS = {"nb": 6641, "sb": 6642}
#: Geneve over IPv4 with OVN's one 8-byte option: outer IP 20 + UDP 8 + Geneve 8 + option 8
#: + inner Ethernet 14 (OVN leaves guest MTUs to the operator).
GENEVE_OVERHEAD = 58
BRIDGE = "br-int"


def have_ovn() -> bool:
    """True when OVN's daemons, tools and schemas are installed (``ovn-central``,
    ``ovn-host``)."""
    return (all(proc.which(b) for b in OVN_BINARIES)
            and all(p.exists() for p in SCHEMAS.values()))


def missing_ovn() -> str:
    """One line naming what :func:`have_ovn` misses."""
    gone = [b for b in OVN_BINARIES if not proc.which(b)]
    gone += [str(p) for p in SCHEMAS.values() if not p.exists()]
    return "OVN not installed (apt-get install ovn-central ovn-host): missing " + ", ".join(gone)


class _Place(Protocol):
    name: str
    netns: str
    address: str


def _spawn(netns: str, argv: Sequence[str], env: dict[str, str], errfile: Path,
           what: str) -> None:
    """Start a daemon with ``--detach`` in ``netns``; returns once it says it is ready."""
    with open(errfile, "ab") as err:  # never our pipes: EOF would wait for the daemon
        try:
            rc = subprocess.run(ns_argv(netns, argv), env=env, stdin=subprocess.DEVNULL,
                                stdout=err, stderr=err, timeout=30).returncode
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{what} did not detach within 30s") from exc
    if rc != 0:
        tail = errfile.read_text(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"{what} failed to start (exit {rc}): {' / '.join(tail)}")


def _stop(pidfile: Path, comm: str, what: str) -> None:
    pid = proc.pid_from_file(pidfile, comm=comm)
    if pid is None:
        return
    try:
        proc.stop_pid(pid, comm, grace=5.0)
    except OvsvnetError as err:
        raise LabError(f"{what} (pid {pid}) survived SIGKILL") from err


class OvnCentral:
    """NB + SB ovsdb-servers and ovn-northd in ``place``'s namespace, files in
    ``workdir/ovn-<place>``."""

    def __init__(self, workdir: Path, place: _Place):
        self.place = place
        self.dir = Path(workdir) / f"ovn-{place.name}"

    def _path(self, db: str, suffix: str) -> Path:
        return self.dir / f"{db}.{suffix}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        d = str(self.dir)
        env.update(OVS_RUNDIR=d, OVS_DBDIR=d, OVS_LOGDIR=d, OVN_RUNDIR=d, OVN_DBDIR=d,
                   OVN_LOGDIR=d)
        return env

    @property
    def nb(self) -> str:
        """The NB remote on the central node (what ``ovn-nbctl --db`` takes)."""
        return f"unix:{self._path('nb', 'sock')}"

    @property
    def sb(self) -> str:
        return f"unix:{self._path('sb', 'sock')}"

    @property
    def sb_remote(self) -> str:
        """The SB remote for chassis (``external_ids:ovn-remote``)."""
        return f"tcp:{self.place.address}:{PORTS['sb']}"

    def pids(self) -> dict[str, int | None]:
        return {
            "nb": proc.pid_from_file(self._path("nb", "pid"), comm="ovsdb-server"),
            "sb": proc.pid_from_file(self._path("sb", "pid"), comm="ovsdb-server"),
            "northd": proc.pid_from_file(self._path("northd", "pid"), comm="ovn-northd"),
        }

    def up(self, timeout: float = 30) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for db in ("nb", "sb"):
            dbfile = self._path(db, "db")
            if not dbfile.exists():
                proc.run(["ovsdb-tool", "create", str(dbfile), str(SCHEMAS[db])],
                         error=LabError)
            _spawn(self.place.netns, [
                "ovsdb-server", str(dbfile),
                f"--remote=punix:{self._path(db, 'sock')}",
                f"--remote=ptcp:{PORTS[db]}:{self.place.address}",
                f"--pidfile={self._path(db, 'pid')}", f"--unixctl={self._path(db, 'ctl')}",
                f"--log-file={self._path(db, 'log')}", "--detach", "--no-chdir",
            ], self.env, self._path(db, "stderr"), f"OVN {db.upper()} ovsdb-server")
        self.nbctl("init", timeout=timeout)
        _spawn(self.place.netns, [
            "ovn-northd", f"--ovnnb-db={self.nb}", f"--ovnsb-db={self.sb}",
            f"--pidfile={self._path('northd', 'pid')}",
            f"--unixctl={self._path('northd', 'ctl')}",
            f"--log-file={self._path('northd', 'log')}", "--detach", "--no-chdir",
        ], self.env, self._path("northd", "stderr"), "ovn-northd")
        self.nbctl("--wait=sb", "sync", timeout=timeout)  # northd is at work

    def _ctl(self, tool: str, db: str, args: Sequence[str], timeout: float) -> str:
        return run_in(self.place.netns,
                      [tool, f"--db={db}", f"--timeout={max(1, int(timeout))}", *args],
                      timeout=timeout + 5, env=self.env).stdout

    def nbctl(self, *args: str, timeout: float = 30) -> str:
        """``ovn-nbctl ARGS`` on the central node (its unix socket), as an operator types it."""
        return self._ctl("ovn-nbctl", self.nb, args, timeout)

    def sbctl(self, *args: str, timeout: float = 30) -> str:
        return self._ctl("ovn-sbctl", self.sb, args, timeout)

    def nbctl_argv(self, *args: str) -> list[str]:
        """The full command line of ``ovn-nbctl ARGS`` in the central namespace (to time it
        exactly as :meth:`nbctl` runs it)."""
        return ns_argv(self.place.netns, ["ovn-nbctl", f"--db={self.nb}", *args])

    def chassis(self) -> set[str]:
        out = self.sbctl("--bare", "--columns=name", "list", "Chassis")
        return set(out.split())

    def down(self) -> None:
        errors = []
        for pidfile, comm, what in ((self._path("northd", "pid"), "ovn-northd", "ovn-northd"),
                                    (self._path("sb", "pid"), "ovsdb-server", "OVN SB"),
                                    (self._path("nb", "pid"), "ovsdb-server", "OVN NB")):
            try:
                _stop(pidfile, comm, what)
            except LabError as err:
                errors.append(str(err))
        if errors:
            raise LabError("OVN central teardown incomplete: " + "; ".join(errors))


class OvnChassis:
    """``ovn-controller`` for one lab host, against that host's own OVS."""

    def __init__(self, host: LabHost, central: OvnCentral, encap: str = "geneve"):
        self.host = host
        self.central = central
        self.encap = encap
        self.dir = host.dir / "ovn"

    @property
    def pidfile(self) -> Path:
        return self.dir / "ovn-controller.pid"

    @property
    def log(self) -> Path:
        return self.dir / "ovn-controller.log"

    @property
    def env(self) -> dict[str, str]:
        env = self.host.env  # OVS_RUNDIR: where it finds br-int.mgmt
        env.update(OVN_RUNDIR=str(self.dir), OVN_LOGDIR=str(self.dir))
        return env

    def pid(self) -> int | None:
        return proc.pid_from_file(self.pidfile, comm="ovn-controller")

    def configure(self) -> None:
        """br-int (secure, no in-band) and the chassis keys in the host's Open_vSwitch row."""
        h = self.host
        h.vsctl(
            "--may-exist", "add-br", BRIDGE, "--", "set", "Bridge", BRIDGE,
            f"datapath_type={h.datapath_type}", "fail_mode=secure",
            "other_config:disable-in-band=true",
            "--", "set", "Open_vSwitch", ".",
            f'external_ids:system-id="{h.system_id}"',
            f'external_ids:ovn-remote="{self.central.sb_remote}"',
            f"external_ids:ovn-encap-type={self.encap}",
            f'external_ids:ovn-encap-ip="{h.address}"',
            f"external_ids:ovn-bridge={BRIDGE}",
            f"external_ids:ovn-bridge-datapath-type={h.datapath_type}",
        )

    def start(self) -> None:
        if self.pid():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.configure()
        _spawn(self.host.netns, [
            "ovn-controller", self.host.db, f"--pidfile={self.pidfile}",
            f"--log-file={self.log}", "--detach", "--no-chdir",
        ], self.env, self.dir / "ovn-controller.stderr", f"{self.host.name}: ovn-controller")

    def stop(self) -> None:
        _stop(self.pidfile, "ovn-controller", f"{self.host.name}: ovn-controller")

    def tunnels(self) -> set[str]:
        """Remote addresses of this host's OVN tunnel ports that have an OpenFlow port."""
        out = self.host.vsctl("--format=json", "--columns=ofport,options", "find", "Interface",
                              f"type={self.encap}")
        remotes = set()
        for ofport, options in json.loads(out)["data"]:
            opts = dict(options[1]) if isinstance(options, list) and len(options) == 2 else {}
            if isinstance(ofport, int) and ofport > 0 and opts.get("remote_ip"):
                remotes.add(str(opts["remote_ip"]))
        return remotes


class OvnLab:
    """A central node and one chassis per host; logical switches and bound guest ports."""

    def __init__(self, workdir: Path, central: _Place, hosts: Iterable[LabHost],
                 encap: str = "geneve"):
        if not have_ovn():
            raise LabError(missing_ovn())
        self.central = OvnCentral(workdir, central)
        self.chassis = {h.name: OvnChassis(h, self.central, encap) for h in hosts}

    def up(self, timeout: float = 60) -> None:
        """Start central, then every ovn-controller; wait until each chassis is in SB and
        has a tunnel to every other one."""
        try:
            self.central.up()
            for c in self.chassis.values():
                c.start()
            want = {c.host.system_id for c in self.chassis.values()}
            proc.wait_until(lambda: self.central.chassis() >= want, timeout=timeout,
                            what="every ovn-controller to register its chassis")
            addrs = {c.host.address for c in self.chassis.values()}
            proc.wait_until(
                lambda: all(c.tunnels() >= addrs - {c.host.address}
                            for c in self.chassis.values()),
                timeout=timeout, what="OVN tunnels between every pair of chassis")
        except Exception:
            with contextlib.suppress(LabError):
                self.down()
            raise

    def down(self) -> None:
        """Stop every ovn-controller, then northd and the databases (by pidfile)."""
        errors = []
        for c in self.chassis.values():
            try:
                c.stop()
            except LabError as err:
                errors.append(str(err))
        try:
            self.central.down()
        except LabError as err:
            errors.append(str(err))
        if errors:
            raise LabError("OVN lab teardown incomplete: " + "; ".join(errors))

    def __enter__(self) -> OvnLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # logical topology ----------------------------------------------------------------------
    @staticmethod
    def switch_args(name: str, ports: Sequence[tuple[str, str]]) -> list[str]:
        """``ovn-nbctl`` arguments defining switch ``name`` with ``(port, addresses)`` pairs
        (addresses ``"MAC IP"``, or ``"unknown"``), in one transaction."""
        args = ["ls-add", name]
        for port, addresses in ports:
            args += ["--", "lsp-add", name, port, "--", "lsp-set-addresses", port, addresses]
        return args

    def add_switch(self, name: str, ports: Sequence[tuple[str, str]] = (),
                   wait: str | None = None) -> None:
        """Define a logical switch and its ports; ``wait`` = ``sb`` or ``hv`` waits for
        northd or every chassis."""
        self.central.nbctl(*([f"--wait={wait}"] if wait else []),
                           *self.switch_args(name, ports))

    def del_switch(self, name: str) -> None:
        self.central.nbctl("--if-exists", "ls-del", name)

    def sync(self, timeout: float = 60) -> None:
        """Return once every chassis has applied everything defined so far."""
        self.central.nbctl("--wait=hv", "sync", timeout=timeout)

    @staticmethod
    def bind_args(port: str, lsp: str) -> list[str]:
        """``ovs-vsctl`` arguments that put OVS port ``port`` on br-int bound to logical port
        ``lsp`` (moved from whatever bridge holds it), in one transaction."""
        return ["--if-exists", "del-port", port, "--", "add-port", BRIDGE, port, "--",
                "set", "Interface", port, f'external_ids:iface-id="{lsp}"']

    def bind(self, host: LabHost, port: str, lsp: str) -> None:
        """Bind ``port`` (say a lab guest's) on ``host`` to logical port ``lsp``."""
        host.vsctl(*self.bind_args(port, lsp))

    def bound(self, lsp: str) -> str | None:
        """The chassis (system-id) that claimed ``lsp``, if any."""
        out = self.central.sbctl("--bare", "--columns=chassis", "find", "Port_Binding",
                                 f"logical_port={lsp}").strip()
        if not out:
            return None
        name = self.central.sbctl("--bare", "--columns=name", "list", "Chassis", out).strip()
        return name or None

    def add_guest(self, lab: Lab, name: str, host: str, switch: str, ip: str,
                  mtu: int = 1500 - GENEVE_OVERHEAD) -> Guest:
        """A lab guest on ``host``'s br-int, bound to a new logical port ``<switch>-<name>``
        (addresses: the guest's MAC and IP) of ``switch``, which is created if missing."""
        guest = lab.add_guest(name, host, BRIDGE, ip=ip, mtu=mtu)
        lsp = f"{switch}-{name}"
        self.central.nbctl("--may-exist", "ls-add", switch, "--", "lsp-add", switch, lsp,
                           "--", "lsp-set-addresses", lsp, f"{guest.mac} {guest.addr}")
        self.bind(lab.host(host), guest.port, lsp)
        return guest

    def controller_pids(self) -> dict[str, int | None]:
        return {n: c.pid() for n, c in self.chassis.items()}

    def logs(self) -> dict[str, Path]:
        """Every OVN daemon log of this lab (for a failure report)."""
        out = {f"{n}/ovn-controller": c.log for n, c in self.chassis.items()}
        for db in ("nb", "sb", "northd"):
            out[f"central/{db}"] = self.central._path(db, "log")
        return {k: v for k, v in out.items() if v.exists()}
