"""Real IPsec for lab hosts: ``ovs-monitor-ipsec`` driving strongSwan, one per host namespace.

Only meaningful where the lab runs the kernel datapath (``Lab(datapath_type="system")``) on
a kernel with XFRM and ESP: the kernel lane's qemu guest (``ci/kernel-lane.sh``).

strongSwan's starter and charon use fixed paths (``/etc/ipsec.conf``, ``/etc/ipsec.secrets``,
``/etc/ipsec.d``, ``/etc/strongswan.d``, ``/run/charon.ctl``, ``/run/charon.pid``), so
each host's IKE stack runs in the host's network namespace *and* a private mount namespace
in which those paths are bind mounts of ``<host dir>/ipsec/...``. The monitor is started
there (``ip netns exec NS unshare -m ...``) and starts charon itself (``ipsec restart``), so
both share that view; :meth:`LabIpsec.ipsec` runs further ``ipsec`` commands inside it with
``nsenter``. The monitor's pidfile is ``<host dir>/ovs-monitor-ipsec.pid``, where ovsvnet
looks for it (:func:`ovsvnet.system.kernel.monitor_pid`), so ovsvnet sees IPsec as available.

Teardown stops the monitor, then the IKE daemons, by the pids in this host's own pidfiles
after checking the process names (never by name).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

from ovsvnet.errors import OvsvnetError
from ovsvnet.lab.common import LabError
from ovsvnet.lab.members import LabHost
from ovsvnet.lab.netns import ns_argv
from ovsvnet.system import proc
from ovsvnet.system.kernel import MONITOR_PIDFILE
from ovsvnet.system.proc import wait_until
from ovsvnet.system.xfrm import policies_installed

MONITOR = Path("/usr/share/openvswitch/scripts/ovs-monitor-ipsec")
#: charon's AES-GCM plugin: the monitor's IKE proposal (aes256gcm16-sha256-modp2048) needs it;
#: without it charon cannot build the proposal and no IKE SA ever comes up.
GCM_PLUGIN = Path("/usr/lib/ipsec/plugins/libstrongswan-gcm.so")
#: (path in the private view, kind): what each host gets a copy of.
_PRIVATE = (("/etc/ipsec.conf", "file"), ("/etc/ipsec.secrets", "file"),
            ("/etc/ipsec.d", "dir"), ("/etc/strongswan.d", "dir"), ("/run", "empty"))

_PRELUDE = r"""
set -e
root=$1; shift
for spec in "$@"; do
  [ "$spec" = -- ] && break
  mount --bind "$root$spec" "$spec"
  shift
done
shift
exec "$@"
"""


def usable() -> str | None:
    """Why real IPsec cannot run in a lab here (None when it can)."""
    if not MONITOR.exists():
        return f"{MONITOR} is missing (Debian package openvswitch-ipsec)"
    if not shutil.which("ipsec") and not Path("/usr/sbin/ipsec").exists():
        return "strongSwan's ipsec command is missing (Debian package strongswan-starter)"
    if not GCM_PLUGIN.exists():
        return (f"{GCM_PLUGIN} is missing (Debian package libstrongswan-standard-plugins): "
                "charon could not negotiate the monitor's AES-GCM IKE proposal")
    if not Path("/proc/net/xfrm_stat").exists():
        return "the kernel has no XFRM (IPsec)"
    if not (Path("/sys/module/openvswitch").exists() and Path("/sys/module/esp4").exists()):
        return "openvswitch.ko and esp4.ko are not loaded (the kernel lane loads them)"
    return None


class LabIpsec:
    """strongSwan + ovs-monitor-ipsec for one lab host."""

    def __init__(self, host: LabHost, secret: bytes):
        self.host = host
        self.secret = secret
        self.root = host.dir / "ipsec"
        self.monitor_pidfile = host.dir / MONITOR_PIDFILE
        self.monitor_log = host.dir / "ovs-monitor-ipsec.log"
        self.secret_file = host.dir / "ipsec-secret"

    def __repr__(self) -> str:
        return f"LabIpsec({self.host.name})"

    # -- start ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        for path, kind in _PRIVATE:
            dst = self.root / path.lstrip("/")
            if kind == "dir":
                if Path(path).is_dir():
                    shutil.copytree(path, dst, symlinks=True, dirs_exist_ok=True)
                else:
                    dst.mkdir(parents=True, exist_ok=True)
            elif kind == "file":
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text("")
                dst.chmod(0o600)
            else:
                dst.mkdir(parents=True, exist_ok=True)
        # charon logs to syslog, which a lab (or the kernel lane's guest) may not have
        (self.root / "etc/strongswan.d/zz-ovsvnet-lab-log.conf").write_text(
            "charon {\n  filelog {\n    lab {\n"
            f"      path = {self.host.dir / 'charon.log'}\n"
            "      time_format = %H:%M:%S\n      flush_line = yes\n"
            "      default = 1\n      ike = 1\n      knl = 1\n"
            "    }\n  }\n  syslog {\n    daemon {\n      default = -1\n    }\n  }\n}\n")
        self.secret_file.write_bytes(self.secret)
        self.secret_file.chmod(0o600)

    def start(self, configure: bool = True) -> None:
        """Start the monitor (which restarts charon in the private view); with ``configure``
        also point ovsvnet at the shared secret (``ovsvnet-ipsec-secret-file``)."""
        self._prepare()
        binds = [p for p, _ in _PRIVATE]
        argv = ns_argv(self.host.netns, [
            "unshare", "-m", "--propagation", "private", "sh", "-c", _PRELUDE, "sh",
            str(self.root), *binds, "--",
            str(MONITOR), self.host.db, "--ike-daemon=strongswan",
            f"--pidfile={self.monitor_pidfile}", f"--log-file={self.monitor_log}",
            "--detach", "--no-chdir"])
        proc.run(argv, env=self.host.env, timeout=120, error=LabError,
                 what=f"{self.host.name}: ovs-monitor-ipsec")
        wait_until(self.charon_pid, timeout=120, what=f"{self.host.name}: charon to start")
        wait_until(lambda: (self.root / "run" / "charon.ctl").exists(), timeout=60,
                   what=f"{self.host.name}: charon's stroke socket")
        if configure:
            self.host.vsctl("set", "Open_vSwitch", ".",
                            f'external_ids:ovsvnet-ipsec-secret-file="{self.secret_file}"')

    # -- pids -----------------------------------------------------------------------------
    def monitor_pid(self) -> int | None:
        """This host's monitor: named in its pidfile, with that pidfile on its command line."""
        pid = proc.pid_from_file(self.monitor_pidfile, needle="ovs-monitor-ipsec")
        if pid is None or not proc.pid_alive(pid, needle=str(self.monitor_pidfile)):
            return None
        return pid

    def charon_pid(self) -> int | None:
        return proc.pid_from_file(self.root / "run" / "charon.pid", needle="charon")

    def starter_pid(self) -> int | None:
        return proc.pid_from_file(self.root / "run" / "starter.charon.pid", needle="starter")

    # -- commands -------------------------------------------------------------------------
    def ipsec(self, *args: str, check: bool = True, timeout: float = 60
              ) -> subprocess.CompletedProcess[str]:
        """``ipsec ARGS`` in this host's namespaces (network + private mounts)."""
        pid = self.charon_pid() or self.monitor_pid()
        if pid is None:
            raise LabError(f"{self.host.name}: no charon or monitor to join")
        return proc.run(["nsenter", "-t", str(pid), "-m", "-n", "ipsec", *args], check=check,
                        timeout=timeout, error=LabError,
                        what=f"{self.host.name}: ipsec {' '.join(args)}")

    def xfrm(self, what: str = "state") -> str:
        """``ip xfrm state`` / ``ip xfrm policy`` of the host's namespace."""
        return self.host.run("ip", "xfrm", what).stdout

    def arm(self, peer: str, levels: list[str] | tuple[str, ...], timeout: float = 180) -> None:
        """Wait until the IKE daemon has routed this host's secure tunnels to ``peer``
        (their ESP policies are in the kernel), then ``ovsvnet sync``: ovsvnet arms a secure
        tunnel only once its policies are there (``ops.secure_arming``), and a lab without
        an agent does not re-check by itself."""
        secure = [lvl for lvl in levels if lvl != "none"]
        if not secure:
            return
        wait_until(lambda: all(policies_installed(lvl, peer, self.xfrm("policy"))
                               for lvl in secure),
                   timeout=timeout, what=f"{self.host.name}: IPsec policies to {peer}")
        self.host.ovsvnet("sync")

    def established(self) -> int:
        """How many IPsec SAs are installed (``ip -s xfrm state count`` equivalent)."""
        return sum(1 for line in self.xfrm("state").splitlines() if line.startswith("src "))

    def diagnostics(self) -> str:
        """xfrm policies and states, ``ipsec statusall`` and the end of charon's log."""
        parts = []
        for what in ("policy", "state"):
            r = self.host.run("ip", "xfrm", what, check=False)
            parts.append(f"--- {self.host.name}: ip xfrm {what}\n{r.stdout}")
        with contextlib.suppress(Exception):
            parts.append(f"--- {self.host.name}: ipsec statusall\n"
                         + self.ipsec("statusall", check=False).stdout)
        with contextlib.suppress(OSError):
            log = (self.host.dir / "charon.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {self.host.name}: charon.log (last 40 lines)\n"
                         + "\n".join(log[-40:]))
        return "\n".join(parts)

    # -- stop -----------------------------------------------------------------------------
    def _kill(self, pid: int | None, needle: str, grace: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``grace`` s: only while ``pid`` still is ``needle``."""
        if pid is None:
            return
        try:
            proc.stop_pid(pid, needle=needle, grace=grace)
        except OvsvnetError as err:
            raise LabError(f"{self.host.name}: {needle} pid {pid} survived SIGKILL") from err

    def stop(self) -> None:
        """Stop the monitor, then strongSwan (``ipsec stop``, then by pidfile)."""
        errors = []
        mon = self.monitor_pid()
        try:
            self._kill(mon, "ovs-monitor-ipsec")
        except LabError as err:
            errors.append(str(err))
        if self.charon_pid() is not None:
            with contextlib.suppress(Exception):
                self.ipsec("stop", check=False, timeout=30)
        for pid, what in ((self.starter_pid(), "starter"), (self.charon_pid(), "charon")):
            try:
                self._kill(pid, what)
            except LabError as err:
                errors.append(str(err))
        if errors:
            raise LabError("; ".join(errors))
