"""A real libvirtd (Debian's) in the lab, with ovsvnet's hook as libvirt runs it.

libvirtd runs as root in lab host h1's network namespace and in a mount namespace of its own
where its compiled-in directories (/etc/libvirt with hooks/, /run/libvirt, /var/lib/libvirt,
/var/log/libvirt, /var/cache/libvirt) are this test's, and /run/openvswitch is h1's OVS run
directory: its ovs-vsctl and ovsvnet's hook reach h1's OVS by their defaults. The hook is
scripts/libvirt-hook in hooks/qemu.d and hooks/network.d; libvirt gives it LC_ALL, PATH and
HOME only (no OVSVNET): ovsvnet comes from PATH. The domain is a TCG guest: Debian's cloud
kernel (the kernel lane's, fetched from the Debian archive when absent) and a busybox
initramfs that puts eth0 on 10.97.0.7, so guest g2 on h2 pings it across the vnet.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovsvnet.lab import Lab, LabHost, wait_until
from ovsvnet.system import proc

from .helpers import ovsvnet as ok

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "scripts" / "libvirt-hook"
EXAMPLE = ROOT / "examples" / "vnet97.sxp"
BINARIES = ("libvirtd", "virsh", "qemu-system-x86_64", "busybox", "cpio")
KCACHE = Path(os.environ.get("OVSVNET_KERNEL_LANE_CACHE", "/var/cache/ovsvnet-kernel-lane"))
#: libvirtd's directories, bound to private ones in its mount namespace.
DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
        "log": "/var/log/libvirt", "cache": "/var/cache/libvirt", "default": "/etc/default"}
GUEST_IP, GUEST_MAC, NET_MAC = "10.97.0.7", "52:54:00:97:00:07", "52:54:00:97:00:08"

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    any(shutil.which(b) is None for b in BINARIES),
    reason="libvirtd, virsh, qemu-system-x86_64, busybox or cpio not installed "
           "(ci/install-deps.sh installs libvirt-daemon libvirt-daemon-driver-qemu "
           "libvirt-clients qemu-system-x86 busybox-static cpio)")]

INIT = """\
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in $(cat /modules.order); do insmod /modules/$m.ko; done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
for a in $(cat /proc/cmdline); do case $a in ovsvnet_ip=*) addr=${a#*=} ;; esac; done
ip link set lo up
ip link set eth0 up
ip addr add "$addr" dev eth0
echo "OVSVNET-GUEST eth0 mtu $(cat /sys/class/net/eth0/mtu) addr $addr"
while :; do sleep 3600; done
"""


def cloud_kernel() -> tuple[Path, Path, str]:
    """(vmlinuz, modules dir, release) of Debian's cloud kernel, unpacked (not installed)
    in the kernel lane's cache; fetched with apt-get download when absent."""
    done = sorted(glob.glob(str(KCACHE / "*-cloud-amd64" / ".complete")))
    if not done:
        deps = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"],
                              capture_output=True, text=True, timeout=120).stdout
        m = re.search(r"Depends: (linux-image-[0-9]\S*-cloud-amd64)$", deps, re.M)
        if m is None:
            pytest.fail("no linux-image-cloud-amd64 in apt (apt-get update?)")
        pkg = m.group(1)
        kroot, debs = KCACHE / pkg.removeprefix("linux-image-"), KCACHE / "debs"
        shutil.rmtree(kroot, ignore_errors=True)
        debs.mkdir(parents=True, exist_ok=True)
        kroot.mkdir(parents=True)
        subprocess.run(["apt-get", "download", "-q", pkg], cwd=debs, check=True,
                       capture_output=True, timeout=600)
        subprocess.run(["dpkg-deb", "-x", *glob.glob(str(debs / f"{pkg}_*.deb")), str(kroot)],
                       check=True, timeout=300)
        subprocess.run(["depmod", "-b", str(kroot), kroot.name], check=True, timeout=120)
        (kroot / ".complete").touch()
        done = [str(kroot / ".complete")]
    kroot = Path(done[-1]).parent
    return kroot / "boot" / f"vmlinuz-{kroot.name}", kroot, kroot.name


def initramfs(kroot: Path, release: str, out: Path) -> Path:
    """busybox + virtio_net and what it needs + an /init that configures eth0."""
    rd = out.parent / "rd"
    for d in ("bin", "modules", "proc", "sys", "dev"):
        (rd / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", rd / "bin" / "busybox")
    (rd / "init").write_text(INIT)
    (rd / "init").chmod(0o755)
    deps = "".join(subprocess.run(["modprobe", "-d", str(kroot), "-S", release,
                                   "--show-depends", m], capture_output=True, text=True,
                                  check=True, timeout=60).stdout
                   for m in ("virtio_pci", "virtio_net"))   # one module per call
    order = []
    for line in deps.splitlines():
        parts = line.split()
        if parts[:1] == ["insmod"]:
            name = Path(parts[1]).name.removesuffix(".ko")
            if name not in order:
                order.append(name)
                shutil.copy(parts[1], rd / "modules" / f"{name}.ko")
    (rd / "modules.order").write_text("\n".join(order) + "\n")
    files = subprocess.run(["find", "."], cwd=rd, capture_output=True, text=True,
                           check=True).stdout
    with open(out, "wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=rd, input=files.encode(),
                       stdout=f, check=True, timeout=60)
    return out


class Libvirtd:
    """libvirtd in ``host``'s namespace with private directories under ``priv``."""

    def __init__(self, host: LabHost, priv: Path, cache: Path):
        self.host, self.priv, self.cache = host, priv, cache
        self.pid: int | None = None
        self.made: list[Path] = []
        self.uri = f"qemu:///system?socket={priv / 'run' / 'libvirt-sock'}"
        for name in DIRS:
            (priv / name).mkdir(parents=True, exist_ok=True)
        (priv / "log" / "qemu").mkdir(exist_ok=True)
        etc = priv / "etc"
        (etc / "libvirtd.conf").write_text(textwrap.dedent("""\
            auth_unix_rw = "none"
            auth_unix_ro = "none"
            log_filters = "1:util.hook 1:util.command 1:util.netdevopenvswitch"
            log_outputs = "1:file:/var/log/libvirt/libvirtd.log"
            """))
        (etc / "qemu.conf").write_text(textwrap.dedent("""\
            user = "root"
            group = "root"
            dynamic_ownership = 0
            remember_owner = 0
            security_driver = "none"
            cgroup_controllers = [ ]
            namespaces = [ ]
            stdio_handler = "file"
            """))
        for kind in ("qemu.d", "network.d"):
            (etc / "hooks" / kind).mkdir(parents=True, exist_ok=True)
            (etc / "hooks" / kind / "ovsvnet").symlink_to(HOOK)
        # what the hook reads from /etc/default/ovsvnet: nothing but "no syslog"
        (priv / "default" / "ovsvnet").write_text("OVSVNET_SYSLOG=no\n")

    @property
    def log(self) -> str:
        return (self.priv / "log" / "libvirtd.log").read_text(errors="replace")

    def start(self) -> None:
        binds = [(self.priv / k, v) for k, v in DIRS.items() if k != "cache"]
        binds += [(self.cache, DIRS["cache"]), (self.host.dir, "/run/openvswitch")]
        for _, target in binds:
            if not os.path.isdir(target):
                os.makedirs(target)
                self.made.append(Path(target))
        mounts = "; ".join(f"mount --bind {src} {dst}" for src, dst in binds)
        # the hook finds ovsvnet on libvirtd's PATH (this interpreter's, as installed)
        ovsvnet_dir = Path(os.environ.get("OVSVNET_TEST_BINDIR", Path(sys.executable).parent))
        path = f"{ovsvnet_dir}:/usr/sbin:/usr/bin:/sbin:/bin"
        pidfile = self.priv / "libvirtd.pid"
        # exec all the way down: the Popen pid is libvirtd's own
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.host.netns, "env", "-i", f"PATH={path}",
             "HOME=/root", "LC_ALL=C", "unshare", "-m", "sh", "-c",
             f"mount --make-rprivate / && {mounts} && exec libvirtd -p {pidfile}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.priv / "libvirtd.stderr", "ab"), start_new_session=True)
        self.pid = self.proc.pid
        wait_until(lambda: self.virsh("version", check=False).returncode == 0 or
                   self.proc.poll() is not None, timeout=60, what="libvirtd to answer")
        if self.proc.poll() is not None:
            raise RuntimeError("libvirtd exited: " +
                               (self.priv / "libvirtd.stderr").read_text()[-2000:])

    def stop(self) -> None:
        if self.pid is not None and proc.pid_alive(self.pid, "libvirtd"):
            proc.stop_pid(self.pid, "libvirtd", grace=20)
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        self.pid = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True,
                           text=True, timeout=120)
        if check and p.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)}: {p.stderr.strip()}")
        return p

    def cleanup(self) -> None:
        qemu_pid = proc.pid_from_file(self.priv / "run" / "qemu" / "dom1.pid")
        with contextlib.suppress(Exception):
            if self.pid is not None:
                self.virsh("destroy", "dom1", check=False)
        self.stop()
        if qemu_pid is not None and proc.pid_alive(qemu_pid, needle="qemu-system"):
            proc.stop_pid(qemu_pid, needle="qemu-system", grace=5)
        for d in reversed(self.made):
            with contextlib.suppress(OSError):
                d.rmdir()


def domain_xml(kernel: Path, initrd: Path, console: Path) -> str:
    return textwrap.dedent(f"""\
        <domain type='qemu'>
          <name>dom1</name>
          <memory unit='MiB'>256</memory>
          <vcpu>1</vcpu>
          <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel>
            <initrd>{initrd}</initrd>
            <cmdline>console=ttyS0 quiet panic=-1 ovsvnet_ip={GUEST_IP}/24</cmdline></os>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <interface type='bridge'>
              <mac address='{GUEST_MAC}'/>
              <source bridge='vnet97'/>
              <virtualport type='openvswitch'/>
              <mtu size='1450'/>
              <model type='virtio'/>
            </interface>
            <interface type='network'>
              <mac address='{NET_MAC}'/>
              <source network='net97'/>
              <model type='virtio'/>
            </interface>
            <serial type='file'><source path='{console}'/><target port='0'/></serial>
            <memballoon model='none'/>
          </devices>
        </domain>""")


NETWORK_XML = """\
<network>
  <name>net97</name>
  <forward mode='bridge'/>
  <bridge name='vnet97'/>
  <virtualport type='openvswitch'/>
</network>
"""


@pytest.fixture(scope="module")
def lv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Libvirtd, Path]]:
    if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode:
        # libvirt's qemu driver looks this user up even when qemu.conf says root
        subprocess.run(["useradd", "-r", "-U", "-M", "-s", "/usr/sbin/nologin",
                        "libvirt-qemu"], check=True)
    tmp = tmp_path_factory.mktemp("libvirtd")
    kernel, kroot, release = cloud_kernel()
    initrd = initramfs(kroot, release, tmp / "initrd.img")
    with Lab() as lab:
        lab.add_segment("s1")
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h, other in ((h1, h2), (h2, h1)):
            ok(h, "create", str(EXAMPLE))
            ok(h, "peer-add", other.address)
        lab.add_guest("g2", "h2", "vnet97", ip="10.97.0.2/24", mtu=1450)
        cache = Path(os.environ.get("OVSVNET_LIBVIRT_CACHE", "/var/cache/ovsvnet-tests/libvirt"))
        cache.mkdir(parents=True, exist_ok=True)   # qemu capabilities: 8 s once, then 1 s
        d = Libvirtd(h1, tmp / "priv", cache)
        try:
            d.start()
            d.virsh("net-define", str(_write(tmp / "net97.xml", NETWORK_XML)))
            d.virsh("net-start", "net97")
            d.virsh("define", str(_write(tmp / "dom1.xml",
                                         domain_xml(kernel, initrd, tmp / "console.log"))))
            yield lab, d, tmp
        finally:
            d.cleanup()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def hook_calls(d: Libvirtd, op: str) -> list[str]:
    """The hook's command lines for ``op`` as libvirtd logged them (env included)."""
    return [line for line in d.log.splitlines() if "hooks/qemu.d/ovsvnet dom1 " + op in line
            and "About to run" in line]


def hook_results(d: Libvirtd, op: str) -> list[str]:
    """libvirtd's record of each finished hook call for ``op`` (exit status and stderr)."""
    lines = d.log.splitlines()
    out = []
    for i, line in enumerate(lines):
        if "About to run" in line and f"hooks/qemu.d/ovsvnet dom1 {op} " in line:
            pid = re.search(r": (\d+): debug", line)
            for later in lines[i + 1:]:
                if pid and f": {pid.group(1)}: debug : virCommandRun:" in later \
                        and "Result status" in later:
                    out.append(later)
                    break
    return out


def taps(h1: LabHost) -> list[str]:
    return [p for p in h1.vsctl("list-ports", "vnet97").split() if re.fullmatch(r"vnet\d+", p)]


def qemu_pid(d: Libvirtd) -> int | None:
    return proc.pid_from_file(d.priv / "run" / "qemu" / "dom1.pid")


def pings(lab: Lab) -> bool:
    return lab.guest("g2").ping(GUEST_IP, count=1, timeout=5)


def test_domain_starts_on_the_vnet_with_the_vnet_mtu_and_the_hook_ran(lv):
    lab, d, tmp = lv
    h1 = lab.host("h1")
    h1.vsctl("del-port", "vnet97", "vt-000097")        # broken: the hook puts it back
    t0 = time.monotonic()
    d.virsh("start", "dom1")
    started = time.monotonic() - t0
    assert d.virsh("domstate", "dom1").stdout.strip() == "running"
    assert "vt-000097" in h1.vsctl("list-ports", "vnet97").split()
    # libvirt ran the hook with its bare environment: LC_ALL, PATH, HOME, no OVSVNET
    calls = hook_calls(d, "prepare begin")
    assert calls and "OVSVNET" not in calls[-1].split("hooks/")[0], calls
    assert "LC_ALL=C" in calls[-1] and "PATH=" in calls[-1]
    # both taps (bridge and network interface) are on vnet97 with the vnet's MTU
    tap_names = taps(h1)
    assert len(tap_names) == 2, h1.vsctl("list-ports", "vnet97")
    for tap in tap_names:
        assert h1.run("cat", f"/sys/class/net/{tap}/mtu").stdout.strip() == "1450"
    vifs = ok(h1, "vifs", "97", "--json").stdout
    assert GUEST_MAC in vifs and "libvirt domain" in vifs
    # the guest got 1450 from <mtu>, and answers across the vnet at full size
    console = tmp / "console.log"
    wait_until(lambda: console.exists() and "OVSVNET-GUEST" in console.read_text(errors="replace"),
               timeout=120, what="the guest's init")
    assert "OVSVNET-GUEST eth0 mtu 1450" in console.read_text(errors="replace")
    wait_until(lambda: pings(lab), timeout=30, what="g2 to reach the guest")
    assert lab.guest("g2").run("ping", "-c", "1", "-W", "5", "-M", "do", "-s", "1422",
                               GUEST_IP, check=False).returncode == 0
    print(f"virsh start took {started:.1f}s")


def test_libvirtd_restart_with_vswitchd_down_keeps_the_domain(lv):
    lab, d, _ = lv
    h1 = lab.host("h1")
    if d.virsh("domstate", "dom1").stdout.strip() != "running":
        pytest.skip("needs the running domain of the test before")
    pid = qemu_pid(d)
    h1.stop_vswitchd(cleanup=False)                   # a crash: the database stays
    try:
        before = len(hook_results(d, "reconnect"))
        d.restart()
        # libvirtd reconnects in the background: wait for the hook's answer
        done = wait_until(lambda: hook_results(d, "reconnect")[before:], timeout=60,
                          what="the reconnect hook")
        assert "Result status 0" in done[0] and "keeps running" in done[0], done
        assert d.virsh("domstate", "dom1").stdout.strip() == "running"
        assert qemu_pid(d) == pid
    finally:
        h1.start_vswitchd()
    ok(h1, "sync")                                     # what the agent does on its own
    wait_until(lambda: pings(lab), timeout=30, what="traffic back after ovs-vswitchd")


def test_libvirtd_restart_with_both_ovs_daemons_down_keeps_the_domain(lv):
    lab, d, _ = lv
    h1 = lab.host("h1")
    if d.virsh("domstate", "dom1").stdout.strip() != "running":
        pytest.skip("needs the running domain of the tests before")
    pid = qemu_pid(d)
    h1.stop_vswitchd(cleanup=False)
    h1.stop_ovsdb()
    try:
        before = len(hook_results(d, "reconnect"))
        d.restart()
        done = wait_until(lambda: hook_results(d, "reconnect")[before:], timeout=60,
                          what="the reconnect hook")
        assert "Result status 0" in done[0] and "keeps running" in done[0], done
        assert d.virsh("domstate", "dom1").stdout.strip() == "running"
        assert qemu_pid(d) == pid
    finally:
        h1.start()
    ok(h1, "sync")
    wait_until(lambda: pings(lab), timeout=30, what="traffic back after both OVS daemons")
    assert len(taps(h1)) == 2                          # the ports are still (again) there
