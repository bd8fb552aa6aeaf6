"""Facts about this host's kernel and IPsec daemons (read-only: nothing is loaded or started).

The one place that answers "is module X there", "can the kernel do ESP" and "does the IKE
daemon run"; :func:`ipsec_facts` feeds :func:`ovsvnet.ipsec.support`, whose verdict the
commands, the agent and ``doctor`` all show.
"""

from __future__ import annotations

import gzip
import os
import platform
import re
from pathlib import Path
from typing import Any

from ovsvnet.system import proc

MONITOR_PIDFILE = "ovs-monitor-ipsec.pid"
#: (pidfile, process name) of the IKE daemons ovs-monitor-ipsec drives.
IKE_PIDFILES = ((Path("/run/charon.pid"), "charon"), (Path("/run/pluto/pluto.pid"), "pluto"))


def kmod_state(name: str, sys_module: str = "/sys/module", proc_modules: str = "/proc/modules",
               modules_dir: str | None = None) -> str:
    """``loaded``, ``builtin``, ``available`` (a .ko exists for this kernel) or ``absent``.

    Built-in modules without parameters have no ``/sys/module`` entry, so
    ``modules.builtin`` is read too; ``modules.dep`` lists what ``modprobe`` could load.
    """
    modules_dir = modules_dir or f"/lib/modules/{platform.release()}"
    try:
        for line in Path(proc_modules).read_text().splitlines():
            if line.split(" ", 1)[0] == name:
                return "loaded"
    except OSError:
        pass
    sysdir = Path(sys_module) / name
    if sysdir.is_dir():
        # A loadable module that is loaded has an initstate; a built-in one has none.
        return "loaded" if (sysdir / "initstate").exists() else "builtin"
    if _listed(Path(modules_dir) / "modules.builtin", name):
        return "builtin"
    if _listed(Path(modules_dir) / "modules.dep", name, dep=True):
        return "available"
    return "absent"


def _listed(path: Path, name: str, dep: bool = False) -> bool:
    """Whether ``name``.ko appears in a modules.builtin / modules.dep file."""
    try:
        text = path.read_text()
    except OSError:
        return False
    pattern = re.compile(rf"(^|/){re.escape(name)}\.ko(\.[a-z]+)?{':' if dep else '$'}",
                         re.MULTILINE)
    return bool(pattern.search(text))


def _kernel_config(release: str) -> str:
    try:
        return gzip.decompress(Path("/proc/config.gz").read_bytes()).decode(errors="replace")
    except OSError:
        pass
    try:
        return Path(f"/boot/config-{release}").read_text(errors="replace")
    except OSError:
        return ""


def esp(ip_version: int = 4) -> tuple[bool, str]:
    """(whether the kernel can do ESP for this IP version, how we know)."""
    module = "esp4" if ip_version == 4 else "esp6"
    option = "CONFIG_INET_ESP" if ip_version == 4 else "CONFIG_INET6_ESP"
    state = kmod_state(module)
    if state in ("loaded", "builtin"):
        return True, f"{module} {'loaded' if state == 'loaded' else 'built in'}"
    if state == "available":
        return True, f"{module} loadable"
    release = os.uname().release
    m = re.search(rf"^{option}=([ym])$", _kernel_config(release), re.M)
    if m and m.group(1) == "y":
        return True, f"{module} built in"
    if m:  # =m but no modules installed for this kernel
        return False, f"{option}=m but no {module}.ko under /lib/modules/{release}"
    return False, f"{option} is not set in kernel {release}"


def xfrm() -> bool:
    """Whether the kernel has the IPsec (XFRM) framework."""
    return Path("/proc/net/xfrm_stat").exists()


def ike_running() -> bool | None:
    """True/False when an IKE daemon's pidfile exists (running or not); None when none does."""
    found = None
    for pidfile, comm in IKE_PIDFILES:
        if pidfile.exists():
            found = bool(found) or proc.pid_from_file(pidfile, needle=comm) is not None
    return found


def monitor_pid(rundir: str | os.PathLike[str]) -> int | None:
    """ovs-monitor-ipsec's pid, from its pidfile in OVS's run directory."""
    return proc.pid_from_file(Path(rundir) / MONITOR_PIDFILE, needle="ovs-monitor-ipsec")


def ipsec_facts(rundir: str | os.PathLike[str], ip_version: int = 4) -> dict[str, Any]:
    """Everything :func:`ovsvnet.ipsec.support` needs to know about this host."""
    ok, detail = esp(ip_version)
    return {"xfrm": xfrm(), "esp": ok, "esp_detail": detail,
            "monitor_pid": monitor_pid(rundir), "ike_running": ike_running()}
