"""Containers on a vnet with the real runtimes, as docs/containers.md tells users to do it.

Docker (docker.io + ovs-docker), Podman 4 (``--network none`` + ovs-docker through a ``docker``
that runs podman, as Debian's podman-docker does) and LXD 5.0 (a bridged NIC whose parent is
the vnet's bridge), all from Debian 12, each start a container from a debootstrap-made root
(no image registry is reachable here) on lab host h1, and the container pings guest g2 on h2
across vnet 97 with full-size frames (DF set, the vnet's MTU). ovs-cni and Incus cannot run
here: their OVSDB transactions are replayed row for row (from their sources, see
docs/containers.md) on a veth made the way they make it.

One module lab: h1 and h2 with vnet 97 (examples/vnet97.sxp) and static peers, g2 on h2.

Safety: daemons run with private state directories and sockets, inside h1's network namespace
(where they make their links) and, for dockerd and LXD, in a private mount namespace of their
own; they are stopped by pid. Teardown removes containers through their runtime, then stops by
pid what is left (container processes recorded at start, and any process whose command line
names the test's private directory), unmounts what is left under that directory and removes it.
Each test checks that the root network namespace's links and forwarding did not change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ovsvnet.lab import Lab, LabHost, wait_until
from ovsvnet.lab import netns as N
from ovsvnet.system import proc

from . import rootfs
from .helpers import ovsvnet as ok

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "containers"
G2 = "10.97.0.2"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's docker first (not a /usr/local one)
OVS_CNI_OWNER = "ovs-cni.network.kubevirt.io"  # ovs-cni pkg/ovsdb/ovsdb.go: ovsPortOwner
#: Top-level cgroups the runtimes make with the cgroupfs driver (cgroup v1, one per controller).
RUNTIME_CGROUPS = ("docker", "libpod_parent", "lxc.pivot", "lxc.payload.*", "lxc.monitor.*")
#: System directories the runtimes make whatever their private roots (deepest first):
#: containerd's shim sockets, netavark's run directory (podman, as root).
RUNTIME_DIRS = tuple(Path(p) for p in ("/run/containerd/s", "/run/containerd",
                                       "/run/containers/networks", "/run/containers"))


def runtime_cgroups() -> set[Path]:
    return {p for pattern in RUNTIME_CGROUPS for p in Path("/sys/fs/cgroup").glob(f"*/{pattern}")}


class Net(NamedTuple):
    lab: Lab
    h1: LabHost
    mtu: int


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    with Lab() as lab:
        lab.add_segment("s1")
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h, other in ((h1, h2), (h2, h1)):
            ok(h, "create", str(ROOT / "examples" / "vnet97.sxp"))
            ok(h, "peer-add", other.address)
        mtu = json.loads(ok(h1, "show", "97", "--json").stdout)["mtu"]
        lab.add_guest("g2", "h2", "vnet97", ip=f"{G2}/24", mtu=mtu)
        yield Net(lab, h1, mtu)


def root_state() -> tuple[list[str], str]:
    """The root network namespace's link names and IPv4 forwarding: what no test may change."""
    links = sorted(line.split(":")[1].strip().split("@")[0] for line in
                   subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                                  check=True).stdout.splitlines())
    return links, Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


class Box:
    """A test's private directory and what it started; :meth:`teardown` undoes it all."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="ovsvnet-ctr-", dir="/tmp"))
        self._undo: list[Callable[[], Any]] = []
        self._pids: list[tuple[int, str]] = []
        self._cgroups = runtime_cgroups()
        self._dirs = [p for p in RUNTIME_DIRS if not p.exists()]

    def on_teardown(self, fn: Callable[[], Any]) -> None:
        self._undo.append(fn)

    def keep_pid(self, pid: int, comm: str) -> None:
        """Stop ``pid`` at teardown if it still runs ``comm`` (after the runtime had its go)."""
        self._pids.append((pid, comm))

    def daemon(self, argv: Sequence[str], comm: str, env: dict[str, str]) -> int:
        """Start a daemon whose wrappers all ``exec`` it (so its pid is the Popen's)."""
        log = open(self.path / f"{comm}.log", "w")  # closed at teardown
        child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.keep_pid(child.pid, comm)
        self.on_teardown(lambda: (log.close(), child.poll()))
        return child.pid

    def teardown(self) -> None:
        errors: list[BaseException] = []
        for fn in reversed(self._undo):
            try:
                fn()
            except Exception as err:  # undo the rest, report the first
                errors.append(err)
        for pid, comm in reversed(self._pids):
            proc.stop_pid(pid, comm=comm, grace=10)
        me = str(self.path)
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and any(me in a for a in proc.cmdline(int(p.name))):
                proc.stop_pid(int(p.name), needle=me, grace=5)
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for m in sorted((m for m in mounts if m.startswith(me + "/")), reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        # the runtimes' empty cgroups made meanwhile (the kernel refuses rmdir of a busy one)
        for cg in runtime_cgroups() - self._cgroups:
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()),
                            key=lambda p: -len(p.parts)) + [cg]:
                with contextlib.suppress(OSError):
                    d.rmdir()
        for p in self._dirs:  # only if empty: never another runtime's
            with contextlib.suppress(OSError):
                p.rmdir()
        # never through a mount left behind (a bind mount of a system directory)
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.path)], check=False)
        if errors:
            raise errors[0]


@pytest.fixture(name="box")
def box_fixture() -> Iterator[Box]:
    """A :class:`Box`, torn down after the test; then the root namespace must be as before."""
    before = root_state()
    b = Box()
    try:
        yield b
    finally:
        b.teardown()
    assert root_state() == before, "the root network namespace changed"


def run(argv: Sequence[str], env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout,
                       stdin=subprocess.DEVNULL, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr or p.stdout}")
    return p


def in_host(h: LabHost, argv: Sequence[str], env: dict[str, str]) -> list[str]:
    """``argv`` in the lab host's network namespace only: unlike ``ip netns exec`` this keeps
    the mount namespace, so runtimes still see the cgroup tree under /sys."""
    return ["nsenter", f"--net=/run/netns/{h.netns}", "env", f"OVS_RUNDIR={h.dir}",
            *[f"{k}={v}" for k, v in env.items()], *argv]


def pings(prefix: Sequence[str], size: int, env: dict[str, str] | None = None,
          timeout: float = 20) -> bool:
    """Whether ``PREFIX ping`` gets 3 full-size replies from g2 (DF set) within ``timeout``;
    ping is started again while time is left, as the first ARP may be lost (Guest.ping)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        p = run([*prefix, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-M", "do",
                 "-s", str(size - 28), "-w", str(max(1, round(left))), G2],
                env, check=False, timeout=left + 10)
        if p.returncode == 0:
            return True
        if deadline - time.monotonic() < 1:
            return False


def assert_on_the_vnet(net: Net, port: str, table: str, ext: dict[str, str]) -> None:
    """The runtime's port is a domain of vnet 97 that ovsvnet lists, counts and leaves alone
    (``sync`` keeps the ``external_ids`` the runtime wrote on its ``table`` row)."""
    h1 = net.h1
    assert port in h1.vsctl("list-ports", "vnet97").split()
    vifs = json.loads(ok(h1, "vifs", "97", "--json").stdout)
    assert port in [v["port"] for v in vifs], vifs
    refused = ok(h1, "delete", "97", rc=3)
    assert port in refused.stderr
    ok(h1, "sync")
    got = json.loads(h1.vsctl("--format=json", "--columns=external_ids", "list", table, port))
    assert dict(got["data"][0][0][1]) == ext, got


def assert_unplugged(net: Net, port: str) -> None:
    wait_until(lambda: port not in net.h1.vsctl("list-ports", "vnet97").split(), timeout=10,
               what=f"{port} to leave vnet97")
    vifs = json.loads(ok(net.h1, "vifs", "97", "--json").stdout)
    assert port not in [v["port"] for v in vifs]


def container_port(net: Net, name: str) -> str:
    out = net.h1.vsctl("--data=bare", "--no-heading", "--columns=name", "find", "Interface",
                       f"external_ids:container_id={name}")
    assert out.strip(), f"no OVS port for container {name}"
    return out.strip()


def start_dockerd(box: Box, netns: str) -> dict[str, str]:
    """A private dockerd in ``netns``; returns the environment for Debian's ``docker``.

    Private mount namespace with /etc/docker (key.json) bound to the box; data, exec root,
    socket and pidfile in the box; no bridge, no iptables, no forwarding, no masquerading:
    dockerd changes nothing outside its directories."""
    d = box.path
    (d / "etc").mkdir()
    sock = d / "docker.sock"
    env = {"PATH": SYSTEM_PATH, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0"}
    box.daemon(["nsenter", f"--net=/run/netns/{netns}", "unshare", "--mount",
                "--propagation", "private", "sh", "-c",
                '[ -d /etc/docker ] && mount --bind "$0/etc" /etc/docker; exec "$@"', str(d),
                "dockerd", f"--data-root={d}/data", f"--exec-root={d}/exec",
                f"--host=unix://{sock}", f"--pidfile={d}/dockerd.pid", "--iptables=false",
                "--ip6tables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none"],
               "dockerd", env)
    wait_until(lambda: run(["docker", "version"], env, check=False).returncode == 0,
               timeout=30, what="dockerd to answer")
    return env


# -- Docker ------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("dockerd") is None,
                    reason="dockerd not installed (Debian package docker.io)")
def test_docker_container_on_the_vnet_with_ovs_docker(net: Net, box: Box) -> None:
    env = start_dockerd(box, net.h1.netns)
    run(["docker", "import", str(rootfs.root_tarball(packages=rootfs.NET_TOOLS)),
         "ovsvnet-test/bookworm"], env, timeout=120)
    box.on_teardown(lambda: run(["docker", "rm", "-f", "c1"], env, check=False))
    run(in_host(net.h1, [str(EXAMPLES / "ovs-docker-vnet97.sh"), "c1", "10.97.0.11/24",
                         "ovsvnet-test/bookworm", "sleep", "infinity"], env), env)
    box.keep_pid(int(run(["docker", "inspect", "-f", "{{.State.Pid}}", "c1"], env).stdout),
                 "sleep")
    port = container_port(net, "c1")
    exec_c1 = ["docker", "exec", "c1"]
    assert f"mtu {net.mtu} " in run([*exec_c1, "ip", "-o", "link", "show", "eth1"], env).stdout
    assert pings(exec_c1, net.mtu, env)
    assert_on_the_vnet(net, port, "Interface", {"container_id": "c1", "container_iface": "eth1"})
    run(in_host(net.h1, ["ovs-docker", "del-ports", "vnet97", "c1"], env), env)
    assert_unplugged(net, port)


# -- Podman 4 ----------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                    reason="podman or runc not installed (Debian packages podman, runc)")
def test_podman_container_on_the_vnet_with_ovs_docker(net: Net, box: Box) -> None:
    d = box.path
    # Private storage and state; runc, as crun cannot raise RLIMIT_NOFILE on these machines.
    (d / "storage.conf").write_text(  # vfs: works on any file system, also nested
        f'[storage]\ndriver = "vfs"\ngraphroot = "{d}/root"\nrunroot = "{d}/run"\n')
    (d / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:4096", "nproc=1024:4096"]\n'
        f'[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n'
        f'tmp_dir = "{d}/tmp"\nvolume_path = "{d}/volumes"\n'
        f'[network]\nnetwork_config_dir = "{d}/networks"\n')
    (d / "bin").mkdir()
    docker = d / "bin" / "docker"  # what Debian's podman-docker installs as /usr/bin/docker
    docker.write_text('#!/bin/sh\nexec podman "$@"\n')
    docker.chmod(0o755)
    env = {"PATH": f"{d}/bin:{SYSTEM_PATH}", "CONTAINERS_CONF": f"{d}/containers.conf",
           "CONTAINERS_STORAGE_CONF": f"{d}/storage.conf"}
    box.on_teardown(lambda: run(["podman", "rm", "-f", "-t", "0", "c1"], env, check=False))
    # The container's root is a private copy of the debootstrap root (podman run --rootfs).
    root = rootfs.debian_root(d / "rootfs", packages=rootfs.NET_TOOLS)
    run(in_host(net.h1, [str(EXAMPLES / "ovs-docker-vnet97.sh"), "c1", "10.97.0.12/24",
                         "--rootfs", str(root), "sleep", "infinity"], env), env)
    box.keep_pid(int(run(["podman", "inspect", "-f", "{{.State.Pid}}", "c1"], env).stdout),
                 "sleep")
    port = container_port(net, "c1")
    exec_c1 = ["podman", "exec", "c1"]
    assert f"mtu {net.mtu} " in run([*exec_c1, "ip", "-o", "link", "show", "eth1"], env).stdout
    assert pings(exec_c1, net.mtu, env)
    assert_on_the_vnet(net, port, "Interface", {"container_id": "c1", "container_iface": "eth1"})
    run(["podman", "rm", "-f", "-t", "0", "c1"], env)
    # The veth went with the container's namespace; its port stays until ovs-docker removes it.
    run(in_host(net.h1, ["ovs-docker", "del-ports", "vnet97", "c1"], env), env, check=False)
    assert_unplugged(net, port)


# -- LXD (and Incus) ---------------------------------------------------------------------------

LXD_START = """set -e
mount --rbind /sys/fs/cgroup "$0/cgroup"
mount -t sysfs sysfs /sys
mount --move "$0/cgroup" /sys/fs/cgroup
exec lxd --logfile "$0/lxd.log"
"""
LXD_PRESEED = """storage_pools:
- {name: default, driver: dir}
profiles:
- name: default
  devices:
    root: {path: /, pool: default, type: disk}
"""


def nested_on_cgroup_v1() -> bool:
    """Whether this runs inside a podman or docker container on cgroup v1, where LXD cannot
    start containers (tried with ci/Containerfile's image: "Failed to setup cgroup limits").
    Some machines carry a stray /.dockerenv, so docker's marker counts only together with a
    cgroup of our own."""
    if not Path("/sys/fs/cgroup/cpuset/cpuset.cpus").exists():
        return False
    own = [line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
           if line.split(":")[1] == "cpuset"]
    return Path("/run/.containerenv").exists() or (Path("/.dockerenv").exists()
                                                   and own not in ([], ["/"]))


@pytest.mark.skipif(shutil.which("lxd") is None or shutil.which("lxc") is None,
                    reason="lxd not installed (Debian package lxd)")
@pytest.mark.skipif(nested_on_cgroup_v1(), reason="LXD cannot start containers inside a container "
                    "on cgroup v1 (lxc: Failed to setup cgroup limits)")
def test_lxd_container_on_the_vnet_with_a_bridged_nic(net: Net, box: Box) -> None:
    d = box.path
    (d / "lxd").mkdir(mode=0o711)
    (d / "cgroup").mkdir()
    env = {"PATH": SYSTEM_PATH, "LXD_DIR": f"{d}/lxd", "LXD_CONF": f"{d}/client",
           "HOME": str(d)}
    # In h1's network namespace with a private mount namespace whose sysfs is h1's (LXD
    # finds the bridge there) and still holds the cgroup tree; ovs-vsctl reaches h1's OVS
    # through OVS_RUNDIR.
    box.daemon(["nsenter", f"--net=/run/netns/{net.h1.netns}", "unshare", "--mount",
                "--propagation", "private", "env", f"OVS_RUNDIR={net.h1.dir}", "sh", "-c",
                LXD_START, str(d)], "lxd", env)
    run(["lxd", "waitready", "--timeout", "30"], env, timeout=40)
    box.on_teardown(lambda: run(["lxd", "shutdown", "--timeout", "20"], env, check=False))
    box.on_teardown(lambda: run(["lxc", "delete", "--force", "c1"], env, check=False))
    subprocess.run(["lxd", "init", "--preseed"], input=LXD_PRESEED, text=True, env=env,
                   check=True, capture_output=True, timeout=60)
    (d / "metadata.yaml").write_text(f"architecture: x86_64\ncreation_date: {int(time.time())}\n"
                                     "properties: {description: debootstrap bookworm}\n")
    run(["tar", "-C", str(d), "-cf", f"{d}/meta.tar", "metadata.yaml"])
    run(["lxc", "image", "import", f"{d}/meta.tar",
         str(rootfs.root_tarball(packages=rootfs.NET_TOOLS)), "--alias", "bookworm"], env,
        timeout=120)
    run(["lxc", "profile", "create", "vnet97"], env)
    subprocess.run(["lxc", "profile", "edit", "vnet97"], input=(
        EXAMPLES / "lxd-profile-vnet97.yaml").read_text(), text=True, env=env, check=True,
        capture_output=True, timeout=30)
    # privileged: no id shifting of the root; a minbase root has no init of its own
    run(["lxc", "init", "bookworm", "c1", "-p", "default", "-p", "vnet97",
         "-c", "security.privileged=true", "-c", "raw.lxc=lxc.init.cmd = /bin/sleep infinity"],
        env, timeout=120)
    run(["lxc", "start", "c1"], env)
    box.keep_pid(int(json.loads(run(["lxc", "query", "/1.0/instances/c1/state"], env).stdout)
                     ["pid"]), "sleep")
    exec_c1 = ["lxc", "exec", "c1", "--"]
    # no mtu key: the NIC took the bridge's MTU, the vnet's
    assert f"mtu {net.mtu} " in run([*exec_c1, "ip", "-o", "link", "show", "eth1"], env).stdout
    run([*exec_c1, "ip", "addr", "add", "10.97.0.13/24", "dev", "eth1"], env)
    host_name = json.loads(run(["lxc", "query", "/1.0/instances/c1/state"], env).stdout)[
        "network"]["eth1"]["host_name"]
    assert pings(exec_c1, net.mtu, env)
    assert_on_the_vnet(net, host_name, "Port", {})
    run(["lxc", "delete", "--force", "c1"], env)
    assert_unplugged(net, host_name)


# -- ovs-cni and Incus, replayed -------------------------------------------------------------

def replay(net: Net, attacher: str, pod_ns: str) -> tuple[str, dict[str, str]]:
    """Plug a veth from ``pod_ns`` into vnet97 exactly as ``attacher`` does; return the port
    name and the external_ids it writes on its Port row.

    ovs-cni (pkg/veth/veth.go, pkg/ovsdb/ovsdb.go CreatePort): veth made in the pod's namespace
    with the configured MTU on both ends, host end ``veth<8 hex>``; one transaction inserts the
    Interface (name only), the Port (vlan_mode trunk without a vlan, owner and pod ids in
    external_ids) and mutates the Bridge's ports. Incus (internal/server/network/ovs
    CreateBridgePort): Interface and Port with the name only; the NIC's MTU is the parent's."""
    conf = json.loads((EXAMPLES / "ovs-cni-vnet97.conflist").read_text())["plugins"][0]
    bridge = conf["bridge"]
    host_if = "veth" + os.urandom(4).hex()
    if attacher == "ovs-cni":
        mtu, ifname = int(conf["mtu"]), "net1"
        ext = {"contPodUid": "6f5e3b5c-97a1-4c1e-9a3d-000000000097",
               "contNetns": f"/run/netns/{pod_ns}", "contIface": ifname, "owner": OVS_CNI_OWNER}
        port_row: dict[str, Any] = {"vlan_mode": "trunk",
                                    "external_ids": ["map", sorted(ext.items())]}
    else:
        mtu = int(net.h1.run("cat", f"/sys/class/net/{bridge}/mtu").stdout)
        ifname, ext, port_row = "eth1", {}, {}
    with N.Links(pod_ns) as links:
        links.add_veth(ifname, host_if, net.h1.netns, mtu=mtu)
        links.add_address(ifname, "10.97.0.14/24")
        links.up(ifname)
    txn = ["Open_vSwitch",
           {"op": "insert", "table": "Interface", "row": {"name": host_if},
            "uuid-name": "iface"},
           {"op": "insert", "table": "Port", "uuid-name": "port",
            "row": {"name": host_if, "interfaces": ["set", [["named-uuid", "iface"]]],
                    **port_row}},
           {"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
            "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]}]
    net.h1.run("ovsdb-client", "transact", net.h1.db, json.dumps(txn))
    with N.Links(net.h1.netns) as links:
        links.up(host_if)
    return host_if, ext


@pytest.mark.parametrize("attacher", ["ovs-cni", "incus"])
def test_ovs_cni_and_incus_ports_replayed_are_on_the_vnet(net: Net, box: Box,
                                                          attacher: str) -> None:
    pod_ns = f"{net.lab.prefix}-pod"
    N.create(pod_ns)
    box.on_teardown(lambda: N.remove(pod_ns))
    port, ext = replay(net, attacher, pod_ns)
    box.on_teardown(lambda: net.h1.vsctl("--if-exists", "del-port", "vnet97", port))
    assert f"mtu {net.mtu} " in N.run_in(pod_ns, ["ip", "-o", "link", "show"]).stdout
    assert pings(["ip", "netns", "exec", pod_ns], net.mtu)
    assert_on_the_vnet(net, port, "Port", ext)
    vlan_mode = "trunk" if attacher == "ovs-cni" else "[]"
    assert net.h1.vsctl("get", "Port", port, "vlan_mode").strip() == vlan_mode
    # ovs-cni deletes every port whose Interface has an error (common.CleanPorts, on each ADD):
    # none of ovsvnet's may have one.
    rows = json.loads(net.h1.vsctl("--format=json", "--columns=name,error", "list",
                                   "Interface"))["data"]
    assert [name for name, error in rows if error != ["set", []]] == [], rows
    # DEL: ovs-cni and Incus remove the port, the runtime the namespace.
    net.h1.vsctl("del-port", "vnet97", port)
    assert_unplugged(net, port)
