"""A lab host's own Open vSwitch: ovsdb-server and ovs-vswitchd run inside its namespace.

Each host has a directory holding ``conf.db``, ``db.sock``, pidfiles, logs and the ``.ctl``
sockets; its daemons run with ``OVS_RUNDIR``/``OVS_DBDIR``/``OVS_LOGDIR``/``OVS_SYSCONFDIR``
pointing there. They are talked to over their unixctl sockets (:mod:`ovsvnet.system.unixctl`)
and stopped only by the pids in their own pidfiles, after checking the process name.

Detached daemons are reparented to a pid 1 that may not reap them: a zombie counts as dead
(:func:`ovsvnet.system.proc.pid_alive`).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ovsvnet.errors import OvsvnetError, WaitTimeout
from ovsvnet.lab.common import LabError
from ovsvnet.lab.netns import ns_argv, run_in
from ovsvnet.system import proc, unixctl

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def unixctl_call(ctl: str | os.PathLike[str], command: str, *args: str,
                 timeout: float = 10) -> str:
    """:func:`ovsvnet.system.unixctl.call` with its errors as :class:`LabError`'s kin."""
    return unixctl.call(ctl, command, *args, timeout=timeout)


def is_agent(pid: int | None) -> bool:
    """Whether ``pid`` runs an ``ovsvnet ... agent`` (judged by its command line)."""
    return proc.pid_alive(pid, needle="ovsvnet") and "agent" in proc.cmdline(pid or 0)


def stop_agent(pid: int | None, grace: float = 10.0) -> bool:
    """SIGTERM (the agent announces it is leaving), then SIGKILL after ``grace`` s; only an
    ovsvnet agent is signalled. False when there was none."""
    if pid is None or not is_agent(pid):
        return False
    try:
        return proc.stop_pid(pid, needle="ovsvnet", grace=grace)
    except OvsvnetError as err:
        raise LabError(f"ovsvnet agent (pid {pid}) survived SIGKILL") from err


class OvsDaemons:
    """The Open vSwitch of one lab host (the base of :class:`ovsvnet.lab.LabHost`)."""

    name: str
    netns: str
    dir: Path
    datapath_type: str

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
    def agent_pidfile(self) -> Path:
        return self.dir / "agent.pid"

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
        return run_in(self.netns, argv, check=check, timeout=timeout, input=input, env=self.env)

    def vsctl(self, *args: str, timeout: float = 10) -> str:
        return self.run(
            "ovs-vsctl", f"--db={self.db}", f"--timeout={max(1, int(timeout))}", *args,
            timeout=timeout + 5,
        ).stdout

    def ofctl(self, *args: str, timeout: float = 10) -> str:
        return self.run("ovs-ofctl", *args, timeout=timeout).stdout

    def appctl(self, *args: str, timeout: float = 10) -> str:
        """A unixctl command to this host's ovs-vswitchd (``ovs-appctl``); its reply."""
        if not args:
            raise LabError(f"{self.name}: appctl needs a command")
        try:
            return unixctl_call(self.vswitchd_ctl, *args, timeout=timeout)
        except OvsvnetError as err:
            raise LabError(f"{self.name}: ovs-appctl {args[0]}: {err}") from err

    def _answers(self, ctl: Path) -> bool:
        try:
            unixctl_call(ctl, "version", timeout=5)
        except OvsvnetError:
            return False
        return True

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
        return proc.pid_from_file(self.ovsdb_pidfile, comm="ovsdb-server")

    def vswitchd_pid(self) -> int | None:
        return proc.pid_from_file(self.vswitchd_pidfile, comm="ovs-vswitchd")

    def _spawn(self, argv: list[str], what: str) -> None:
        errfile = self.dir / f"{what}.stderr"
        # --detach: the command returns once the daemon is ready. Its stdio must not be our
        # pipes, or waiting for EOF would wait for the daemon's lifetime.
        with open(errfile, "ab") as err:
            try:
                rc = subprocess.run(
                    ns_argv(self.netns, argv), env=self.env, stdin=subprocess.DEVNULL,
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
            proc.run(["ovsdb-tool", "create", str(self.conf_db), str(SCHEMA)], error=LabError)
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
        proc.wait_until(
            lambda: self.db_sock.exists()
            and proc.run(["ovs-vsctl", f"--db={self.db}", "--timeout=5", "--no-wait", "show"],
                         check=False, timeout=10, error=LabError).returncode == 0,
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
        proc.wait_until(
            lambda: self._answers(self.vswitchd_ctl),
            timeout=15, what=f"{self.name}: ovs-vswitchd to answer on {self.vswitchd_ctl}",
        )
        self.wait_configured()
        self.vswitchd_started()

    def vswitchd_started(self) -> None:
        """Called once a (re)started ovs-vswitchd has applied the database; the lab host
        restores its underlay here."""

    def wait_configured(self, timeout: float = 15) -> None:
        """Wait until ovs-vswitchd has applied the database (``cur_cfg == next_cfg``)."""

        def done() -> bool:
            out = self.vsctl("get", "Open_vSwitch", ".", "cur_cfg", "next_cfg").split()
            return len(out) == 2 and out[0] == out[1]

        proc.wait_until(done, timeout=timeout,
                        what=f"{self.name}: ovs-vswitchd to apply the database")

    def _stop_daemon(self, pidfile: Path, ctl: Path, comm: str, exit_args: Sequence[str]) -> None:
        pid = proc.pid_from_file(pidfile, comm=comm)
        if pid is None:
            return
        if ctl.exists():
            with contextlib.suppress(OvsvnetError):
                unixctl_call(ctl, *exit_args, timeout=10)
        with contextlib.suppress(WaitTimeout):
            proc.wait_until(lambda: not proc.pid_alive(pid, comm), timeout=10,
                            what=f"{comm} {pid} to exit")
            return
        try:
            proc.stop_pid(pid, comm, grace=5.0)
        except OvsvnetError as err:
            raise LabError(f"{self.name}: {comm} (pid {pid}) survived SIGKILL") from err

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

    def start(self) -> None:
        self.start_ovsdb()
        self.start_vswitchd()

    def stop(self) -> None:
        try:
            self.stop_vswitchd()
        finally:
            self.stop_ovsdb()

    def stop_agent(self, timeout: float = 5) -> None:
        """Stop an ``ovsvnet agent`` that wrote ``<dir>/agent.pid`` (checked by command line)."""
        stop_agent(proc.read_pid(self.agent_pidfile), grace=timeout)

    def alive(self) -> dict[str, bool]:
        return {"ovsdb-server": self.ovsdb_pid() is not None,
                "ovs-vswitchd": self.vswitchd_pid() is not None}
