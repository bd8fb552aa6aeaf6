"""A lab of simulated hosts on one machine: namespaces, Linux-bridge segments, OVS per host.

Used by the functional tests, the benchmarks and the demo (``ovsvnet sandbox up``).

Topology::

    guest netns --veth--> host netns (ovsdb-server + ovs-vswitchd, br-phy holds eth0 + address)
                            eth0 --veth--> segment netns (Linux bridge br0, multicast floods)
                                             <--veth-- router netns (.254, ip_forward, no mroute)

Every namespace is called ``f"{prefix}-{name}"``; each host has its own directory holding
``conf.db``, ``db.sock``, pidfiles, logs and the ``.ctl`` sockets, and its daemons run *inside*
its namespace with ``OVS_RUNDIR``/``OVS_DBDIR``/``OVS_LOGDIR``/``OVS_SYSCONFDIR`` pointing there.

Things learned the hard way, each handled here:

- The host kernel still sees what arrives on OVS's AF_PACKET ports. With the default
  ``arp_ignore=0`` it answers ARP for br-phy's address on ``eth0`` with eth0's MAC; a peer
  (or the router) that caches that MAC sends tunnel packets OVS never decapsulates (the host
  kernel answers "ICMP port unreachable"), now and then. Hosts set ``arp_ignore=1``.
- TX checksum offload must be off on every veth end whose packets reach an OVS AF_PACKET
  port unfinished: guests (TCP stalls) and plain hosts (kernel VXLAN's outer UDP checksum).
- OpenFlow flows do not survive an ovs-vswitchd restart; br-phy is ``fail_mode=secure``, so
  :meth:`Host.start_vswitchd` puts its NORMAL flow (and, after ``exit --cleanup``, its
  address and routes) back.
- Detached daemons are reparented to a pid 1 that may not reap them: a zombie counts as dead.
- With ``actions=NORMAL`` a full mesh of three or more VXLAN tunnels loops broadcasts forever.
- OVS resolves a tunnel's next hop on demand and drops the packet meanwhile, so the first
  ARP of a guest is lost on each side; :meth:`Guest.ping` retries within its deadline.

Safety (DESIGN.md §5): every link is created from inside a namespace of this lab (the peer is
born directly in another namespace of this lab), so nothing is ever created, renamed or moved in
the root namespace. Teardown deletes only the namespaces this lab recorded and signals only
the pids found in its own pidfiles, after checking the process name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovsvnet.errors import NotFoundError, OvsvnetError

__all__ = [
    "Lab",
    "Segment",
    "Router",
    "Host",
    "Guest",
    "PlainHost",
    "LabError",
    "LabNotFoundError",
    "Capture",
    "capture",
    "tcp_transfer",
    "udp_multicast",
    "require_root",
    "have_root_and_ovs",
    "wait_until",
    "pid_alive",
    "netns_exists",
]

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
NETNS_DIR = Path("/run/netns")
STATE_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$")
# Unix socket paths are limited to 108 bytes; OVS also puts "<bridge>.mgmt" (up to 20 chars)
# into the run directory.
_MAX_DIR_LEN = 80


class LabError(OvsvnetError):
    """Building, driving or tearing down a lab failed."""


class LabNotFoundError(LabError, NotFoundError):
    """No such segment, host, guest or lab state file (exit code 4)."""


# --------------------------------------------------------------------------------------------
# small helpers


def have_root_and_ovs() -> bool:
    """True when this process can build a lab: root, and the OVS and iproute2 binaries exist."""
    return os.geteuid() == 0 and all(
        shutil.which(b) for b in ("ovs-vswitchd", "ovsdb-server", "ovsdb-tool", "ovs-vsctl", "ip")
    )


def require_root() -> None:
    """Skip the calling pytest test unless :func:`have_root_and_ovs`."""
    if not have_root_and_ovs():
        import pytest

        pytest.skip("needs root and the Open vSwitch binaries (ovs-vswitchd, ovsdb-server, ip)")


def wait_until(
    pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll ``pred`` until it returns something truthy; return that. Raise LabError on timeout."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        result = pred()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout:g}s: {' '.join(argv)}") from exc
    except FileNotFoundError as exc:
        raise LabError(f"command not found: {argv[0]}") from exc
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(
            f"command failed (exit {proc.returncode}): {' '.join(argv)}"
            + (f": {msg[-1]}" if msg else "")
        )
    return proc


def _ns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def netns_exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def pid_alive(pid: int, comm: str | None = None) -> bool:
    """Whether ``pid`` runs (and is called ``comm``, when given). A zombie counts as dead:
    detached daemons are reparented to a pid 1 that may never reap them."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) S ..." -- comm may hold spaces or parentheses: split at the last ')'.
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    state = stat[stat.rindex(")") + 2 :].split(" ", 1)[0]
    if state in ("Z", "X"):
        return False
    return comm is None or name == comm[:15]


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _random_mac() -> str:
    b = bytearray(secrets.token_bytes(6))
    b[0] = (b[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{x:02x}" for x in b)


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise LabError(f"bad {kind} name {name!r}: use letters, digits, '-', '_' or '.', up to 31")


def _netns_of(target: Any) -> str:
    if isinstance(target, str):
        return target
    netns = getattr(target, "netns", None)
    if not isinstance(netns, str):
        raise TypeError(f"expected a namespace name or an object with .netns, got {target!r}")
    return netns


# --------------------------------------------------------------------------------------------
# lab members


@dataclass
class Segment:
    """An L2 segment: a namespace holding a Linux bridge ``br0`` (multicast snooping off)."""

    name: str
    netns: str
    subnet: str
    bridge: str = "br0"
    routers: list[str] = field(default_factory=list)
    next_host: int = 1
    ports: list[str] = field(default_factory=list)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        """The address a router takes on this segment (``.254`` of a /24)."""
        return str(self.network.broadcast_address - 1)

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return _run(_ns_argv(self.netns, argv), check=check, timeout=timeout)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Router:
    """A namespace with one leg per segment (``.254``); forwards unicast, never multicast."""

    name: str
    netns: str
    segments: list[str]
    legs: dict[str, str] = field(default_factory=dict)  # segment -> interface in router netns

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return _run(_ns_argv(self.netns, argv), check=check, timeout=timeout)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Host:
    """A simulated hypervisor host: a namespace with its own ovsdb-server and ovs-vswitchd."""

    def __init__(
        self,
        name: str,
        netns: str,
        dir: Path,
        segment: str,
        address: str,
        prefixlen: int,
        system_id: str,
        datapath_type: str = "netdev",
        mtu: int = 1500,
        switch_port: str = "",
        gateway: str | None = None,
    ):
        self.name = name
        self.netns = netns
        self.dir = Path(dir)
        self.segment = segment
        self.address = address
        self.prefixlen = prefixlen
        self.system_id = system_id
        self.datapath_type = datapath_type
        self.mtu = mtu
        self.switch_port = switch_port
        self.gateway = gateway

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r}, address={self.address!r})"

    # paths ---------------------------------------------------------------------------------
    @property
    def db_sock(self) -> Path:
        return self.dir / "db.sock"

    @property
    def db(self) -> str:
        """The ``--db`` value for ovsvnet and ovs-vsctl."""
        return f"unix:{self.db_sock}"

    @property
    def conf_db(self) -> Path:
        return self.dir / "conf.db"

    @property
    def vswitchd_ctl(self) -> Path:
        return self.dir / "ovs-vswitchd.ctl"

    @property
    def ovsdb_ctl(self) -> Path:
        return self.dir / "ovsdb-server.ctl"

    @property
    def vswitchd_pidfile(self) -> Path:
        return self.dir / "ovs-vswitchd.pid"

    @property
    def ovsdb_pidfile(self) -> Path:
        return self.dir / "ovsdb-server.pid"

    @property
    def vswitchd_log(self) -> Path:
        return self.dir / "ovs-vswitchd.log"

    @property
    def ovsdb_log(self) -> Path:
        return self.dir / "ovsdb-server.log"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        d = str(self.dir)
        env.update(
            OVS_RUNDIR=d, OVS_DBDIR=d, OVS_LOGDIR=d, OVS_SYSCONFDIR=d, OVSVNET_DB=self.db
        )
        return env

    # running things --------------------------------------------------------------------------
    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host namespace with the host's OVS environment."""
        return _run(_ns_argv(self.netns, argv), check=check, timeout=timeout, input=input,
                    env=self.env)

    def vsctl(self, *args: str, timeout: float = 10) -> str:
        return self.run(
            "ovs-vsctl", f"--db={self.db}", f"--timeout={max(1, int(timeout))}", *args,
            timeout=timeout + 5,
        ).stdout

    def ofctl(self, *args: str, timeout: float = 10) -> str:
        return self.run("ovs-ofctl", *args, timeout=timeout).stdout

    def appctl(self, *args: str, timeout: float = 10) -> str:
        return self.run(
            "ovs-appctl", "-t", str(self.vswitchd_ctl), f"--timeout={max(1, int(timeout))}", *args,
            timeout=timeout + 5,
        ).stdout

    def ovsvnet(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m ovsvnet --db <db> ARGS`` inside the host namespace."""
        return self.run(
            sys.executable, "-m", "ovsvnet", "--db", self.db, *args,
            check=check, timeout=timeout, input=input,
        )

    def log_problems(self, allow: Sequence[str] = ()) -> list[str]:
        """WARN/ERR/EMER lines of both daemon logs, minus those matching a regex in ``allow``."""
        out = []
        for log in (self.ovsdb_log, self.vswitchd_log):
            try:
                lines = log.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                if re.search(r"\|(WARN|ERR|EMER)\|", line) and not any(
                    re.search(a, line) for a in allow
                ):
                    out.append(f"{log.name}: {line}")
        return out

    # daemons ------------------------------------------------------------------------------------
    def ovsdb_pid(self) -> int | None:
        pid = _read_pid(self.ovsdb_pidfile)
        return pid if pid and pid_alive(pid, "ovsdb-server") else None

    def vswitchd_pid(self) -> int | None:
        pid = _read_pid(self.vswitchd_pidfile)
        return pid if pid and pid_alive(pid, "ovs-vswitchd") else None

    def _spawn(self, argv: list[str], what: str) -> None:
        errfile = self.dir / f"{what}.stderr"
        # --detach: the command returns once the daemon is ready. Its stdio must not be our
        # pipes, or waiting for EOF would wait for the daemon's lifetime.
        with open(errfile, "ab") as err:
            try:
                rc = subprocess.run(
                    _ns_argv(self.netns, argv), env=self.env, stdin=subprocess.DEVNULL,
                    stdout=err, stderr=err, timeout=30,
                ).returncode
            except subprocess.TimeoutExpired as exc:
                raise LabError(f"{self.name}: {what} did not detach within 30s") from exc
        if rc != 0:
            tail = errfile.read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError(f"{self.name}: {what} failed to start (exit {rc}): {' / '.join(tail)}")

    def start_ovsdb(self) -> None:
        if self.ovsdb_pid():
            return
        if not self.conf_db.exists():
            _run(["ovsdb-tool", "create", str(self.conf_db), str(SCHEMA)])
        with contextlib.suppress(FileNotFoundError):
            self.db_sock.unlink()
        self._spawn(
            [
                "ovsdb-server", str(self.conf_db),
                f"--remote=punix:{self.db_sock}",
                "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                f"--pidfile={self.ovsdb_pidfile}",
                f"--unixctl={self.ovsdb_ctl}",
                f"--log-file={self.ovsdb_log}",
                "--detach", "--no-chdir",
            ],
            "ovsdb-server",
        )
        wait_until(
            lambda: self.db_sock.exists()
            and _run(["ovs-vsctl", f"--db={self.db}", "--timeout=5", "--no-wait", "show"],
                     check=False, timeout=10).returncode == 0,
            timeout=15, what=f"{self.name}: ovsdb-server to answer on {self.db_sock}",
        )

    def start_vswitchd(self) -> None:
        if self.vswitchd_pid():
            return
        self._spawn(
            [
                "ovs-vswitchd", self.db,
                # The kernel datapath (openvswitch.ko) is per network namespace: each host's
                # ovs-vswitchd gets its own "ovs-system" datapath in its own namespace.
                *(() if self.datapath_type == "system" else ("--disable-system",)),
                f"--pidfile={self.vswitchd_pidfile}",
                f"--unixctl={self.vswitchd_ctl}",
                f"--log-file={self.vswitchd_log}",
                "--detach", "--no-chdir",
            ],
            "ovs-vswitchd",
        )
        wait_until(
            lambda: _run(["ovs-appctl", "-t", str(self.vswitchd_ctl), "--timeout=5", "version"],
                         check=False, timeout=10).returncode == 0,
            timeout=15, what=f"{self.name}: ovs-vswitchd to answer on {self.vswitchd_ctl}",
        )
        self.wait_configured()
        if self.link_exists("br-phy"):
            self.configure_underlay()

    def wait_configured(self, timeout: float = 15) -> None:
        """Wait until ovs-vswitchd has applied the database (``cur_cfg == next_cfg``)."""

        def done() -> bool:
            out = self.vsctl("get", "Open_vSwitch", ".", "cur_cfg", "next_cfg").split()
            return len(out) == 2 and out[0] == out[1]

        wait_until(done, timeout=timeout, what=f"{self.name}: ovs-vswitchd to apply the database")

    def _stop_daemon(self, pidfile: Path, ctl: Path, comm: str, exit_args: Sequence[str]) -> None:
        pid = _read_pid(pidfile)
        if not pid or not pid_alive(pid, comm):
            return
        if ctl.exists():
            _run(["ovs-appctl", "-t", str(ctl), "--timeout=10", *exit_args],
                 check=False, timeout=15)
        for sig, grace in ((None, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if sig is not None and pid_alive(pid, comm):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            try:
                wait_until(lambda: not pid_alive(pid, comm), timeout=grace,
                           what=f"{comm} {pid} to exit")
                return
            except LabError:
                continue
        raise LabError(f"{self.name}: {comm} (pid {pid}) survived SIGKILL")

    def stop_vswitchd(self, cleanup: bool = True) -> None:
        """Stop ovs-vswitchd. ``cleanup=True`` also removes its tap devices (br-phy loses its
        address); ``cleanup=False`` leaves them, as a crash would."""
        self._stop_daemon(
            self.vswitchd_pidfile, self.vswitchd_ctl, "ovs-vswitchd",
            ["exit", "--cleanup"] if cleanup else ["exit"],
        )

    def stop_ovsdb(self) -> None:
        self._stop_daemon(self.ovsdb_pidfile, self.ovsdb_ctl, "ovsdb-server", ["exit"])

    def restart_vswitchd(self, cleanup: bool = False) -> None:
        self.stop_vswitchd(cleanup=cleanup)
        self.start_vswitchd()

    def restart_ovsdb(self) -> None:
        self.stop_ovsdb()
        self.start_ovsdb()

    def stop(self) -> None:
        try:
            self.stop_vswitchd()
        finally:
            self.stop_ovsdb()

    def stop_agent(self, timeout: float = 5) -> None:
        """Stop an ``ovsvnet agent`` that wrote ``<dir>/agent.pid`` (checked by command line)."""
        pid = _read_pid(self.dir / "agent.pid")
        if pid is None or not pid_alive(pid):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        if b"ovsvnet" not in b" ".join(cmdline) or b"agent" not in cmdline:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def start(self) -> None:
        self.start_ovsdb()
        self.start_vswitchd()

    def alive(self) -> dict[str, bool]:
        return {"ovsdb-server": self.ovsdb_pid() is not None,
                "ovs-vswitchd": self.vswitchd_pid() is not None}

    # underlay ----------------------------------------------------------------------------------
    def link_exists(self, ifname: str) -> bool:
        return self.run("ip", "link", "show", "dev", ifname, check=False).returncode == 0

    def configure_underlay(self) -> None:
        """(Re)apply br-phy's NORMAL flow, address, state and default route; idempotent.

        :meth:`start_vswitchd` calls it: a restarted ovs-vswitchd has lost its flows, and
        after ``exit --cleanup`` also its taps (re-created without address)."""
        wait_until(lambda: self.link_exists("br-phy"), timeout=10, what=f"{self.name}: br-phy tap")
        # OpenFlow flows do not survive an ovs-vswitchd restart, and br-phy is fail_mode=secure.
        self.ofctl("add-flow", "br-phy", "actions=NORMAL")
        self.run("ip", "link", "set", "dev", "eth0", "up")
        self.run("ip", "addr", "replace", f"{self.address}/{self.prefixlen}", "dev", "br-phy")
        self.run("ip", "link", "set", "dev", "br-phy", "up")
        if self.gateway:
            self.set_gateway(self.gateway)
        # OVS learns kernel routes through netlink; tunnels need br-phy's route in its table.
        wait_until(
            lambda: "br-phy" in self.appctl("ovs/route/show"),
            timeout=10, what=f"{self.name}: br-phy route in ovs/route/show",
        )

    def set_gateway(self, gateway: str) -> None:
        self.gateway = gateway
        self.run("ip", "route", "replace", "default", "via", gateway, "dev", "br-phy")
        wait_until(
            lambda: re.search(r"0\.0\.0\.0/0 dev br-phy", self.appctl("ovs/route/show")),
            timeout=10, what=f"{self.name}: default route in ovs/route/show",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "netns": self.netns, "dir": str(self.dir), "segment": self.segment,
            "address": self.address, "prefixlen": self.prefixlen, "system_id": self.system_id,
            "datapath_type": self.datapath_type, "mtu": self.mtu, "switch_port": self.switch_port,
            "gateway": self.gateway,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Host:
        return cls(**d)


@dataclass
class PlainHost:
    """A host without Open vSwitch: its address sits on ``eth0`` (for kernel VXLAN peers,
    strangers and other plain-Linux parties on a segment)."""

    name: str
    netns: str
    segment: str
    address: str
    prefixlen: int
    mtu: int = 1500
    switch_port: str = ""
    gateway: str | None = None

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _run(_ns_argv(self.netns, argv), check=check, timeout=timeout, input=input)

    def set_gateway(self, gateway: str) -> None:
        self.gateway = gateway
        self.run("ip", "route", "replace", "default", "via", gateway, "dev", "eth0")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Guest:
    """A guest (VM stand-in): a namespace whose ``eth0`` is plugged into a bridge on a host."""

    name: str
    netns: str
    host: str
    bridge: str
    ip: str | None
    mac: str
    port: str
    mtu: int = 1500

    @property
    def addr(self) -> str | None:
        """The bare IP address (``ip`` without the prefix length)."""
        return self.ip.split("/")[0] if self.ip else None

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _run(_ns_argv(self.netns, argv), check=check, timeout=timeout, input=input)

    def ping(self, dst: str, count: int = 3, interval: float = 0.2, timeout: float = 10) -> bool:
        """True when ``count`` echo replies arrive within ``timeout`` seconds.

        ``ping -c N -w T`` keeps sending until N replies or T seconds, but gives up early once
        ARP for the destination failed; the first ARP probes can be lost while OVS resolves
        tunnel neighbours on each side, so ping is run again while time is left."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            proc = self.run(
                "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1",
                "-w", str(max(1, round(left))), dst,
                check=False, timeout=left + 5,
            )
            if proc.returncode == 0:
                return True
            if deadline - time.monotonic() < 1:
                return False

    def announce(self, count: int = 1) -> None:
        """Send ``count`` gratuitous ARP requests from eth0, as QEMU/Xen do after a move."""
        if not self.addr:
            raise LabError(f"guest {self.name} has no IP address to announce")
        self.run(sys.executable, "-c", _GARP, self.mac, self.addr, str(count))

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


_GARP = r"""
import socket, struct, sys, time
mac = bytes.fromhex(sys.argv[1].replace(":", ""))
ip, count = socket.inet_aton(sys.argv[2]), int(sys.argv[3])
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for i in range(count):
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
    time.sleep(0.05)
"""


# --------------------------------------------------------------------------------------------
# the lab


class Lab:
    """Simulated hosts, segments, routers and guests; a context manager that always tears down.

    >>> with Lab() as lab:                                   # doctest: +SKIP
    ...     lab.add_segment("s1"); lab.add_segment("s2"); lab.add_router("r", ["s1", "s2"])
    ...     a = lab.add_host("a", "s1"); b = lab.add_host("b", "s2")
    ...     a.vsctl("add-br", "br-test", "--", "set", "bridge", "br-test", "datapath_type=netdev")
    """

    def __init__(
        self,
        prefix: str | None = None,
        workdir: Path | str | None = None,
        datapath_type: str | None = None,
        keep: bool | None = None,
        ipv6: bool = False,
    ):
        self.prefix = prefix or "ovl" + secrets.token_hex(3)[:5]
        _check_name("prefix", self.prefix)
        # "netdev" (userspace, the default) or "system" (openvswitch.ko, the kernel lane);
        # $OVSVNET_LAB_DATAPATH picks it for every lab a test run builds.
        self.datapath_type = datapath_type or os.environ.get("OVSVNET_LAB_DATAPATH") or "netdev"
        if self.datapath_type not in ("netdev", "system"):
            raise LabError(f"unknown datapath type {self.datapath_type!r} (netdev or system)")
        self.keep = keep if keep is not None else os.environ.get("OVSVNET_KEEP_LAB") == "1"
        self.ipv6 = ipv6
        self.workdir = Path(workdir) if workdir is not None else Path("/tmp") / self.prefix
        self._created_workdir = not self.workdir.exists()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.segments: dict[str, Segment] = {}
        self.routers: dict[str, Router] = {}
        self.hosts: dict[str, Host] = {}
        self.guests: dict[str, Guest] = {}
        self.plain_hosts: dict[str, PlainHost] = {}
        self.namespaces: list[str] = []  # every namespace this lab created, in creation order
        self._port_names: set[str] = set()
        self._next_subnet = 1
        self._down = False
        self.state_path: Path | None = None

    def __repr__(self) -> str:
        return f"Lab(prefix={self.prefix!r}, hosts={list(self.hosts)}, guests={list(self.guests)})"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.down()
            return
        try:
            self.down()
        except Exception as err:  # do not mask the body's exception
            warnings.warn(f"lab {self.prefix} teardown incomplete: {err}", RuntimeWarning,
                          stacklevel=2)

    # naming ------------------------------------------------------------------------------------
    def _ns_name(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def _check_new(self, kind: str, name: str) -> None:
        _check_name(kind, name)
        if self._down:
            raise LabError(f"lab {self.prefix} is down")
        for what, d in (("segment", self.segments), ("router", self.routers),
                        ("host", self.hosts), ("guest", self.guests),
                        ("plain host", self.plain_hosts)):
            if name in d:
                raise LabError(f"name {name!r} is already used by a {what}")

    def _unique_port(self, base: str) -> str:
        base = base[:15]
        name, n = base, 1
        while name in self._port_names:
            suffix = str(n)
            name = base[: 15 - len(suffix)] + suffix
            n += 1
        self._port_names.add(name)
        return name

    def _add_netns(self, name: str) -> str:
        ns = self._ns_name(name)
        if netns_exists(ns):
            raise LabError(f"namespace {ns} already exists")
        _run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        _run(_ns_argv(ns, ["ip", "link", "set", "dev", "lo", "up"]))
        if not self.ipv6:
            # Keeps captures quiet: no router solicitations, MLD reports or DAD probes.
            _run(_ns_argv(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                               "net.ipv6.conf.default.disable_ipv6=1"]))
        return ns

    def _get(self, kind: str, d: dict[str, Any], name: str) -> Any:
        try:
            return d[name]
        except KeyError:
            raise LabNotFoundError(f"no {kind} {name!r} in lab {self.prefix}") from None

    def segment(self, name: str) -> Segment:
        return self._get("segment", self.segments, name)

    def host(self, name: str) -> Host:
        return self._get("host", self.hosts, name)

    def guest(self, name: str) -> Guest:
        return self._get("guest", self.guests, name)

    def plain_host(self, name: str) -> PlainHost:
        return self._get("plain host", self.plain_hosts, name)

    def member(self, name: str) -> Segment | Router | Host | Guest | PlainHost:
        """Any named member (for ``sandbox exec``)."""
        for d in (self.hosts, self.guests, self.plain_hosts, self.routers, self.segments):
            if name in d:
                return d[name]
        raise LabNotFoundError(f"no host, guest, router or segment {name!r} in lab {self.prefix}")

    # building ----------------------------------------------------------------------------------
    def add_segment(self, name: str, subnet: str | None = None) -> Segment:
        self._check_new("segment", name)
        if subnet is None:
            used = {s.network for s in self.segments.values()}
            while True:
                net = ipaddress.IPv4Network(f"10.77.{self._next_subnet}.0/24")
                self._next_subnet += 1
                if net not in used:
                    break
        else:
            net = ipaddress.IPv4Network(subnet, strict=False)
        if net.num_addresses < 8:
            raise LabError(f"subnet {net} is too small for a segment")
        ns = self._add_netns(name)
        seg = Segment(name=name, netns=ns, subnet=str(net))
        self.segments[name] = seg
        seg.run("ip", "link", "add", seg.bridge, "type", "bridge",
                "mcast_snooping", "0", "stp_state", "0")
        seg.run("ip", "link", "set", "dev", seg.bridge, "up")
        return seg

    def _plug_into_segment(
        self, seg: Segment, netns: str, ifname: str, port: str, mtu: int = 1500
    ) -> None:
        """veth ``ifname`` in ``netns`` <-> ``port`` in the segment's bridge, created from
        inside ``netns`` with the peer born in the segment's namespace."""
        _run(_ns_argv(netns, ["ip", "link", "add", ifname, "mtu", str(mtu), "type", "veth",
                              "peer", "name", port, "mtu", str(mtu), "netns", seg.netns]))
        seg.ports.append(port)
        seg.run("ip", "link", "set", "dev", port, "master", seg.bridge)
        seg.run("ip", "link", "set", "dev", port, "up")

    def add_router(self, name: str, segments: list[str]) -> Router:
        self._check_new("router", name)
        segs = [self.segment(s) for s in segments]
        ns = self._add_netns(name)
        router = Router(name=name, netns=ns, segments=list(segments))
        self.routers[name] = router
        router.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for i, seg in enumerate(segs):
            leg = f"to-{seg.name}"[:15] if len(f"to-{seg.name}") <= 15 else f"leg{i}"
            port = self._unique_port(f"r-{name}")
            self._plug_into_segment(seg, ns, leg, port)
            router.legs[seg.name] = leg
            router.run("ip", "addr", "add", f"{seg.gateway}/{seg.network.prefixlen}", "dev", leg)
            router.run("ip", "link", "set", "dev", leg, "up")
            seg.routers.append(name)
        for h in [*self.hosts.values(), *self.plain_hosts.values()]:
            if h.gateway is None and h.segment in router.segments:
                h.set_gateway(self.segments[h.segment].gateway)
        return router

    def add_host(
        self, name: str, segment: str, address: str | None = None, mtu: int = 1500
    ) -> Host:
        self._check_new("host", name)
        seg = self.segment(segment)
        net = seg.network
        address = self._allocate(seg, address)
        hdir = self.workdir / name
        if len(str(hdir)) > _MAX_DIR_LEN:
            raise LabError(f"host directory {hdir} is too long for unix socket paths")
        hdir.mkdir(parents=True, exist_ok=True)
        ns = self._add_netns(name)
        # eth0 and the guest ports are OVS ports (AF_PACKET), yet the host's kernel still sees
        # what arrives on them. With the default arp_ignore=0 it answers ARP for br-phy's
        # address on eth0 with eth0's MAC; a peer that caches that MAC sends tunnel packets
        # OVS will not decapsulate (ICMP port unreachable, flaky). Answer on br-phy only.
        _run(_ns_argv(ns, ["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1",
                           "net.ipv4.conf.default.arp_ignore=1"]))
        gateway = seg.gateway if seg.routers else None
        host = Host(
            name=name, netns=ns, dir=hdir, segment=segment, address=address,
            prefixlen=net.prefixlen, system_id=f"{self.prefix}-{name}",
            datapath_type=self.datapath_type, mtu=mtu, switch_port=self._unique_port(f"h-{name}"),
            gateway=gateway,
        )
        self.hosts[name] = host  # recorded before anything starts, so down() finds it
        self._plug_into_segment(seg, ns, "eth0", host.switch_port, mtu)
        host.start_ovsdb()
        _run(["ovs-vsctl", f"--db={host.db}", "--timeout=10", "--no-wait", "init", "--",
              "set", "Open_vSwitch", ".",
              f'external_ids:system-id="{host.system_id}"',
              f'external_ids:hostname="{name}"'])
        host.start_vswitchd()
        host.vsctl(
            "add-br", "br-phy", "--",
            "set", "Bridge", "br-phy", f"datapath_type={self.datapath_type}", "fail_mode=secure",
            "--", "add-port", "br-phy", "eth0",
            "--", "set", "Interface", "br-phy", f"mtu_request={mtu}",
        )
        host.configure_underlay()
        return host

    def _allocate(self, seg: Segment, address: str | None) -> str:
        net = seg.network
        taken = {h.address for h in [*self.hosts.values(), *self.plain_hosts.values()]
                 if h.segment == seg.name} | {seg.gateway}
        if address is None:
            while True:
                ip = net.network_address + seg.next_host
                seg.next_host += 1
                if ip >= net.broadcast_address - 1:
                    raise LabError(f"segment {seg.name} has no free address left")
                if str(ip) not in taken:
                    return str(ip)
        address = address.split("/")[0]
        if ipaddress.IPv4Address(address) not in net:
            raise LabError(f"address {address} is not in segment {seg.name} ({net})")
        if address in taken:
            raise LabError(f"address {address} is already used on segment {seg.name}")
        return address

    def add_plain_host(self, name: str, segment: str, address: str | None = None,
                       mtu: int = 1500) -> PlainHost:
        """A namespace on ``segment`` with the address on ``eth0`` and no Open vSwitch."""
        self._check_new("plain host", name)
        seg = self.segment(segment)
        address = self._allocate(seg, address)
        ns = self._add_netns(name)
        ph = PlainHost(name=name, netns=ns, segment=segment, address=address,
                       prefixlen=seg.network.prefixlen, mtu=mtu,
                       switch_port=self._unique_port(f"p-{name}"))
        self.plain_hosts[name] = ph
        self._plug_into_segment(seg, ns, "eth0", ph.switch_port, mtu)
        # Its packets end up in an OVS AF_PACKET port: with TX checksum offload on, kernel
        # VXLAN's outer UDP checksum arrives unfinished ("bad udp cksum") and OVS drops it.
        ph.run("ethtool", "-K", "eth0", "tx", "off")
        ph.run("ip", "addr", "add", f"{address}/{ph.prefixlen}", "dev", "eth0")
        ph.run("ip", "link", "set", "dev", "eth0", "up")
        if seg.routers:
            ph.set_gateway(seg.gateway)
        return ph

    def add_guest(
        self,
        name: str,
        host: str,
        bridge: str,
        ip: str | None = None,
        mac: str | None = None,
        mtu: int = 1500,
    ) -> Guest:
        self._check_new("guest", name)
        h = self.host(host)
        if ip is not None and "/" not in ip:
            ip = f"{ip}/24"
        mac = (mac or _random_mac()).lower()
        port = self._unique_port(f"g-{name}")
        ns = self._add_netns(name)
        guest = Guest(name=name, netns=ns, host=host, bridge=bridge, ip=ip, mac=mac, port=port,
                      mtu=mtu)
        self.guests[name] = guest
        self._plug_guest(guest, h)
        return guest

    def _plug_guest(self, guest: Guest, h: Host) -> None:
        guest.run("ip", "link", "add", "eth0", "address", guest.mac, "mtu", str(guest.mtu), "type",
                  "veth", "peer", "name", guest.port, "mtu", str(guest.mtu), "netns", h.netns)
        # Required with the userspace datapath: AF_PACKET hands partial checksums / GSO
        # frames to OVS, and TCP stalls (ping and UDP still work). The kernel datapath
        # handles offloaded frames like any kernel switch: offloads stay on there.
        if h.datapath_type != "system":
            guest.run("ethtool", "-K", "eth0", "tx", "off")
        if guest.ip:
            guest.run("ip", "addr", "add", guest.ip, "dev", "eth0")
        guest.run("ip", "link", "set", "dev", "eth0", "up")
        h.vsctl("add-port", guest.bridge, guest.port, "--",
                "set", "Interface", guest.port, f'external_ids:ovsvnet-guest="{guest.name}"')
        h.run("ip", "link", "set", "dev", guest.port, "up")

    def remove_guest(self, name: str) -> None:
        guest = self.guest(name)
        h = self.hosts.get(guest.host)
        if h is not None and h.ovsdb_pid():
            h.vsctl("--if-exists", "del-port", guest.port)
        self._del_netns(guest.netns)
        if h is not None and netns_exists(h.netns):
            wait_until(lambda: not h.link_exists(guest.port), timeout=10,
                       what=f"{guest.port} to vanish from {h.name}")
        del self.guests[name]
        self._port_names.discard(guest.port)

    def move_guest(self, name: str, host: str, bridge: str | None = None,
                   announce: bool = False) -> Guest:
        """Unplug guest ``name`` and plug it into ``host`` (same MAC, IP and MTU).

        The guest's namespace is made anew (its ARP cache is empty). With ``announce`` it
        sends a gratuitous ARP once plugged in; without, switches that learned its MAC
        elsewhere keep sending there until the guest speaks or the entry ages out."""
        old = self.guest(name)
        self.host(host)
        self.remove_guest(name)
        guest = self.add_guest(name, host, bridge or old.bridge, ip=old.ip, mac=old.mac,
                               mtu=old.mtu)
        if announce:
            guest.announce()
        return guest

    # teardown ----------------------------------------------------------------------------------
    def _del_netns(self, ns: str) -> None:
        if ns not in self.namespaces or not ns.startswith(self.prefix + "-"):
            raise LabError(f"refusing to delete namespace {ns}: not created by lab {self.prefix}")
        if netns_exists(ns):
            _run(["ip", "netns", "del", ns], check=False)
            wait_until(lambda: not netns_exists(ns), timeout=10, what=f"namespace {ns} to go")
        self.namespaces.remove(ns)

    def down(self) -> None:
        """Stop every daemon (by pidfile), delete this lab's namespaces and its workdir.

        Idempotent and best effort: it goes on after a failure and raises one LabError
        listing all failures at the end."""
        errors: list[str] = []
        self._down = True
        for host in reversed(list(self.hosts.values())):
            try:
                host.stop_agent()
                host.stop()
            except Exception as err:
                errors.append(f"{host.name}: {err}")
        for ns in reversed(list(self.namespaces)):
            try:
                self._del_netns(ns)
            except Exception as err:
                errors.append(str(err))
        if not self.keep and not errors:
            if self._created_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            else:
                for h in self.hosts.values():
                    shutil.rmtree(h.dir, ignore_errors=True)
                if self.state_path is not None:
                    with contextlib.suppress(OSError):
                        self.state_path.unlink()
        if errors:
            raise LabError(f"lab {self.prefix} teardown incomplete: " + "; ".join(errors))

    # state -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "prefix": self.prefix,
            "workdir": str(self.workdir),
            "created_workdir": self._created_workdir,
            "datapath_type": self.datapath_type,
            "keep": self.keep,
            "ipv6": self.ipv6,
            "namespaces": list(self.namespaces),
            "next_subnet": self._next_subnet,
            "segments": {k: v.to_json() for k, v in self.segments.items()},
            "routers": {k: v.to_json() for k, v in self.routers.items()},
            "hosts": {k: v.to_json() for k, v in self.hosts.items()},
            "guests": {k: v.to_json() for k, v in self.guests.items()},
            "plain_hosts": {k: v.to_json() for k, v in self.plain_hosts.items()},
        }

    def save_state(self, path: Path | str | None = None) -> Path:
        """Write the lab's state as JSON (default ``workdir/lab.json``); return the path."""
        p = Path(path) if path is not None else self.workdir / "lab.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(p)
        self.state_path = p
        return p

    @classmethod
    def load(cls, path: Path | str) -> Lab:
        """Rebuild a Lab object from :meth:`save_state` output; creates nothing."""
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise LabNotFoundError(f"no lab state file {p}") from None
        except (OSError, ValueError) as err:
            raise LabError(f"cannot read lab state {p}: {err}") from None
        if d.get("version") != STATE_VERSION:
            raise LabError(f"lab state {p} has unknown version {d.get('version')!r}")
        lab = cls.__new__(cls)
        lab.prefix = d["prefix"]
        _check_name("prefix", lab.prefix)
        lab.workdir = Path(d["workdir"])
        lab._created_workdir = d["created_workdir"]
        lab.datapath_type = d["datapath_type"]
        lab.keep = d["keep"]
        lab.ipv6 = d["ipv6"]
        lab.namespaces = [n for n in d["namespaces"] if n.startswith(lab.prefix + "-")]
        lab._next_subnet = d["next_subnet"]
        lab.segments = {k: Segment(**v) for k, v in d["segments"].items()}
        lab.routers = {k: Router(**v) for k, v in d["routers"].items()}
        lab.hosts = {k: Host.from_json(v) for k, v in d["hosts"].items()}
        lab.guests = {k: Guest(**v) for k, v in d["guests"].items()}
        lab.plain_hosts = {k: PlainHost(**v) for k, v in d.get("plain_hosts", {}).items()}
        lab._port_names = (
            {h.switch_port for h in lab.hosts.values()}
            | {g.port for g in lab.guests.values()}
            | {p.switch_port for p in lab.plain_hosts.values()}
            | {p for s in lab.segments.values() for p in s.ports}
        )
        lab._down = False
        lab.state_path = p
        return lab

    def status(self) -> dict[str, Any]:
        """What exists and what runs: namespaces, daemons per host, guests."""
        return {
            "prefix": self.prefix,
            "workdir": str(self.workdir),
            "namespaces": {ns: netns_exists(ns) for ns in self.namespaces},
            "segments": {n: {"netns": s.netns, "subnet": s.subnet, "routers": s.routers}
                         for n, s in self.segments.items()},
            "routers": {n: {"netns": r.netns, "segments": r.segments}
                        for n, r in self.routers.items()},
            "hosts": {
                n: {"netns": h.netns, "segment": h.segment, "address": h.address, "db": h.db,
                    "system_id": h.system_id, **h.alive()}
                for n, h in self.hosts.items()
            },
            "guests": {n: {"netns": g.netns, "host": g.host, "bridge": g.bridge, "ip": g.ip,
                           "mac": g.mac, "port": g.port}
                       for n, g in self.guests.items()},
            "plain_hosts": {n: {"netns": p.netns, "segment": p.segment, "address": p.address}
                            for n, p in self.plain_hosts.items()},
        }


# --------------------------------------------------------------------------------------------
# traffic helpers

_TCP_SERVER = r"""
import socket, sys, time
addr, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(1); s.settimeout(timeout)
print("ready", flush=True)
deadline = time.monotonic() + timeout
n = 0
try:
    c, _ = s.accept()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        c.settimeout(left)
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
except (OSError, socket.timeout):
    pass
print(n, flush=True)
"""

_TCP_CLIENT = r"""
import socket, sys, time
addr, port, nbytes, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + timeout
while True:
    try:
        left = max(0.1, min(2.0, deadline - time.monotonic()))
        c = socket.create_connection((addr, port), timeout=left)
        break
    except OSError:
        if time.monotonic() >= deadline:
            raise
        time.sleep(0.1)
chunk = b"x" * 65536
sent = 0
try:
    while sent < nbytes:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        c.settimeout(left)
        sent += c.send(chunk[: min(len(chunk), nbytes - sent)])
    c.shutdown(socket.SHUT_WR)
except OSError:
    pass
print(sent, flush=True)
"""


def _addr_of(x: Any) -> str:
    a = x.addr if isinstance(x, Guest) else getattr(x, "address", None)
    if not a:
        raise LabError(f"{getattr(x, 'name', x)} has no IP address")
    return a


def tcp_transfer(
    src: Guest | Host | PlainHost,
    dst: Guest | Host | PlainHost,
    nbytes: int = 2_000_000,
    timeout: float = 20,
    port: int = 5201,
) -> int:
    """Send ``nbytes`` over one TCP connection from ``src`` to ``dst``; return bytes received.

    Both ends are small Python programs run in the namespaces and bounded by ``timeout``;
    a stalled connection returns the count received so far instead of hanging."""
    dst_addr = _addr_of(dst)
    py = sys.executable
    server = subprocess.Popen(
        _ns_argv(dst.netns, [py, "-c", _TCP_SERVER, dst_addr, str(port), str(timeout)]),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if line != "ready":
            server.wait(5)
            err = server.stderr.read().strip() if server.stderr else ""
            raise LabError(f"tcp server in {dst.name} failed: {err}")
        client = [py, "-c", _TCP_CLIENT, dst_addr, str(port), str(nbytes), str(timeout)]
        _run(_ns_argv(src.netns, client), check=False, timeout=timeout + 10)
        out, _ = server.communicate(timeout=timeout + 10)
        return int(out.strip().splitlines()[-1])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


_MCAST_RECV = r"""
import select, socket, sys
group, port, ifaddr, expect = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
mreq = socket.inet_aton(group) + socket.inet_aton(ifaddr)
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
print("ready", flush=True)
n = 0
while n < expect:  # until enough datagrams, or stdin closes (the parent's "stop")
    ready, _, _ = select.select([s, sys.stdin], [], [], 60)
    if not ready or sys.stdin in ready:
        break
    s.recvfrom(2048)
    n += 1
print(n, flush=True)
"""

_MCAST_SEND = r"""
import socket, sys, time
group, port, ifaddr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count, ttl = int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
for i in range(count):
    s.sendto(b"ovsvnet-mcast %d" % i, (group, port))
    time.sleep(0.05)
"""


def udp_multicast(
    sender: Host | Guest | PlainHost,
    receivers: Sequence[Host | Guest | PlainHost],
    group: str = "224.10.0.1",
    port: int = 1798,
    count: int = 5,
    ttl: int = 8,
    timeout: float = 1.0,
) -> dict[str, int]:
    """Send ``count`` UDP datagrams to ``group:port`` from ``sender`` (TTL ``ttl``, out of
    its own address); return, per receiver name, how many datagrams it got.

    Each receiver joins the group on its own address before the first send and stops once
    it has all ``count`` datagrams, or ``timeout`` seconds after the last send."""
    py = sys.executable
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for r in receivers:
            p = subprocess.Popen(
                _ns_argv(r.netns,
                         [py, "-c", _MCAST_RECV, group, str(port), _addr_of(r), str(count)]),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            procs[r.name] = p
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                p.kill()
                _, err = p.communicate(timeout=5)
                raise LabError(f"multicast receiver in {r.name} failed: {err.strip()}")
        _run(_ns_argv(sender.netns, [py, "-c", _MCAST_SEND, group, str(port), _addr_of(sender),
                                     str(count), str(ttl)]), timeout=count + 10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
            time.sleep(0.02)
        result = {}
        for name, p in procs.items():
            out, err = p.communicate(input="", timeout=10)  # closes stdin: "stop"
            lines = out.strip().splitlines()
            if p.returncode != 0 or not lines:
                raise LabError(f"multicast receiver in {name} failed: {err.strip()}")
            result[name] = int(lines[-1])
        return result
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


class Capture:
    """Result of :func:`capture`, filled when the block exits.

    ``lines`` holds one entry per packet: tcpdump's continuation lines (the inner frame of
    a VXLAN packet, ``-v`` details) are joined to their packet's line. ``raw`` is tcpdump's
    output as printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.raw: list[str] = []
        self.stderr = ""

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def count(self) -> int:
        return len(self.lines)


_TS = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d+ ")


def _packets(raw: list[str]) -> list[str]:
    if not raw or not _TS.match(raw[0]):
        return list(raw)  # no timestamps (-t): cannot tell continuations apart
    out: list[str] = []
    for line in raw:
        if _TS.match(line) or not out:
            out.append(line)
        else:
            out[-1] += " | " + line.strip()
    return out


@contextlib.contextmanager
def capture(
    ns: Any,
    iface: str,
    filter: str = "",
    count: int = 1000,
    timeout: float = 10.0,
    settle: float = 0.5,
    extra: Sequence[str] = ("-e",),
) -> Iterator[Capture]:
    """Run tcpdump on ``iface`` in namespace ``ns`` (a name, or anything with ``.netns``).

    Capturing starts before the block runs. After the block, it waits at most ``settle``
    seconds (bounded by ``timeout`` from the start) or until ``count`` packets were seen,
    then stops tcpdump; ``cap.lines`` then holds one line per packet (see :class:`Capture`).
    ``filter`` is a tcpdump expression; ``extra`` are further tcpdump options::

        with capture(lab.segments["s1"], "h-a", "ether broadcast", timeout=5) as cap:
            guest.ping("192.168.97.9", count=1, timeout=2)
        assert len(cap.lines) <= 2
    """
    netns = _netns_of(ns)
    argv = ["tcpdump", "-l", "-n", "--immediate-mode", "-i", iface, "-c", str(count), *extra]
    if filter:
        argv += filter.split() if isinstance(filter, str) else list(filter)
    start = time.monotonic()
    proc = subprocess.Popen(
        _ns_argv(netns, argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    cap = Capture()
    assert proc.stderr is not None and proc.stdout is not None
    err_lines: list[str] = []
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: err_lines.extend(stderr), daemon=True)
    reader.start()
    try:
        # tcpdump says "listening on IFACE" on stderr once its socket is bound (after
        # "verbose output suppressed"); only then can the block send traffic.
        try:
            wait_until(
                lambda: proc.poll() is not None or any("listening on" in ln for ln in err_lines),
                timeout=10, what=f"tcpdump on {netns}/{iface} to start",
            )
        except LabError:
            pass
        if not any("listening on" in ln for ln in err_lines):
            msg = " ".join(ln.strip() for ln in err_lines)
            raise LabError(f"tcpdump on {netns}/{iface} failed: {msg}")
        yield cap
        deadline = min(start + timeout, time.monotonic() + settle)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # flushes and prints its counters
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out = proc.stdout.read()
        proc.stdout.close()
        reader.join(5)
        cap.raw = [ln for ln in out.splitlines() if ln.strip()]
        cap.lines = _packets(cap.raw)
        cap.stderr = "".join(err_lines)
