"""The Debian package as an operator gets it: built from the tree with Debian's tooling
(ci/build-deb.sh), installed with apt into a clean Debian 12 root, used, removed, purged.

The root is a copy of the cached debootstrap root (tests/functional/rootfs.py), run with
systemd-nspawn. apt steps share this machine's network to reach the archive (a policy-rc.d
in the root keeps openvswitch-switch from starting daemons there); everything else runs with
``--private-network``, so the demo's namespaces, links and OVS daemons live in the
container's own network namespace, never in this machine's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovsvnet import __version__
from tests.functional import rootfs

REPO = Path(__file__).resolve().parents[2]
ARCHIVES = rootfs.CACHE / "apt-archives"  # downloaded .debs, shared by runs (under a lock)
TOOLS = ("debootstrap", "systemd-nspawn", "dpkg-buildpackage", "lintian")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                       reason=f"needs {', '.join(TOOLS)} (ci/install-deps.sh)"),
]


# -- helpers (test_service.py uses them too) -------------------------------------------------

def nspawn(root: Path, *argv: str, network: bool = False, timeout: float = 300,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``root``; ``network``: share this machine's network (apt only)."""
    cmd = ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--pipe",
           "-E", "DEBIAN_FRONTEND=noninteractive", "-E", "LC_ALL=C.UTF-8"]
    cmd += [f"--bind={ARCHIVES}:/var/cache/apt/archives"] if network else \
        ["--private-network"]
    proc = subprocess.run([*cmd, "--", *argv], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {proc.returncode}\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@contextlib.contextmanager
def _archive_lock() -> Iterator[None]:
    (ARCHIVES / "partial").mkdir(parents=True, exist_ok=True)
    with open(ARCHIVES / ".ovsvnet-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def apt_install(root: Path, *packages: str, recommends: bool = True,
                timeout: float = 600) -> str:
    """``apt-get install`` in ``root`` (packages or ./file.deb paths inside it)."""
    opts = "" if recommends else "--no-install-recommends"
    update = "" if list((root / "var/lib/apt/lists").glob("*_Packages")) else \
        "apt-get update -qq && "
    with _archive_lock():
        return nspawn(root, "sh", "-c", f"{update}apt-get install -y -q {opts} "
                      + " ".join(packages), network=True, timeout=timeout).stdout


def build_deb(outdir: Path) -> Path:
    """ci/build-deb.sh (lintian included: it fails on any lintian error)."""
    proc = subprocess.run(["bash", str(REPO / "ci" / "build-deb.sh"), str(outdir)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "lintian: no errors" in proc.stdout
    deb = outdir / f"ovsvnet_{__version__}_all.deb"
    assert deb.is_file(), proc.stdout
    return deb


def fresh_root(dest: Path, deb: Path, packages: tuple[str, ...] = ()) -> Path:
    """A clean Debian 12 root (with ``packages``, cached by rootfs.py), the .deb in /var/tmp,
    services kept from starting."""
    root = rootfs.debian_root(dest, packages=packages)
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copy(deb, root / "var/tmp" / deb.name)
    # a throwaway root: dpkg need not fsync every file (the installs take a third of the time)
    (root / "etc/dpkg/dpkg.cfg.d/ovsvnet-tests").write_text("force-unsafe-io\n")
    # man-db's index is not needed to read a page; rebuilding it on every install is slow
    nspawn(root, "sh", "-c", "echo 'man-db man-db/auto-update boolean false' "
           "| debconf-set-selections")
    return root


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree's package, or $OVSVNET_TEST_DEB (a .deb built before, e.g. by CI)."""
    given = os.environ.get("OVSVNET_TEST_DEB")
    return Path(given) if given else build_deb(tmp_path_factory.mktemp("deb"))


# -- the package -----------------------------------------------------------------------------

#: Not part of the system's files: package manager state, caches, logs, the test's /var/tmp,
#: state other programs keep (logrotate's; libuuid's clock, from the demo's OVS daemons).
VOLATILE = ("proc", "sys", "dev", "run", "tmp", "var/tmp", "var/cache", "var/log",
            "var/lib/apt", "var/lib/dpkg", "var/lib/logrotate", "var/lib/libuuid", "root")


def snapshot(root: Path) -> set[str]:
    """Every path in the root (as /path), but the volatile ones."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel
        dirnames[:] = [d for d in dirnames if os.path.join(rel, d) not in VOLATILE]
        for name in dirnames + filenames:
            out.add("/" + os.path.join(rel, name))
    return out


def installed_packages(root: Path) -> dict[str, str]:
    text = nspawn(root, "dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\\n").stdout
    return {p: v for p, v, *status in (line.split(" ", 2) for line in text.splitlines())
            if status and status[0].endswith("installed") and "config-files" not in status[0]}


def canonical(root: Path, path: str) -> str:
    """``path`` as the snapshot names it: /lib/... is /usr/lib/... in a merged-/usr root."""
    parent = (root / path.lstrip("/")).parent.resolve()
    return "/" + str((parent / Path(path).name).relative_to(root.resolve()))


def ovsvnets_own(root: Path) -> set[str]:
    """What purging ovsvnet must take away: its files, the directories no other package
    shares, the bytecode py3compile made, its units' state kept by deb-systemd-helper."""
    listed = [p for p in nspawn(root, "dpkg", "-L", "ovsvnet").stdout.split() if p != "/."]
    dirs = [p for p in listed if (root / p.lstrip("/")).is_dir()]  # /lib: a symlink too
    shared = set()
    for line in nspawn(root, "dpkg-query", "-S", *dirs).stdout.splitlines():
        owners, _, path = line.partition(": ")
        if owners.split(", ") != ["ovsvnet"]:
            shared.add(path)
    own = {canonical(root, p) for p in listed if p not in shared}
    return own | {p for p in snapshot(root)
                  if p.startswith("/usr/lib/python3/dist-packages/ovsvnet/")
                  or (p.startswith("/var/lib/systemd/deb-systemd-helper") and "ovsvnet" in p)}


@pytest.fixture(scope="module")
def installed(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A root with man-db and logrotate (the operator's tools), then the package by apt."""
    root = fresh_root(tmp_path_factory.mktemp("pkg") / "root", deb, ("logrotate", "man-db"))
    before = installed_packages(root)
    apt_output = apt_install(root, f"/var/tmp/{deb.name}")
    after = installed_packages(root)
    conffiles = nspawn(root, "dpkg-query", "-W", "-f", "${Conffiles}", "ovsvnet").stdout
    yield {"root": root, "new": {p: v for p, v in after.items() if p not in before},
           "apt": apt_output, "deb": deb,
           "conffiles": [line.split()[0] for line in conffiles.splitlines() if line.strip()],
           "baseline": snapshot(root) - ovsvnets_own(root)}
    shutil.rmtree(root.parent, ignore_errors=True)


def test_apt_pulls_only_debian_packages(installed):
    new = installed["new"]
    assert new.get("ovsvnet") == __version__
    for dep in ("openvswitch-switch", "python3-openvswitch", "python3-click",
                "python3-pyroute2", "python3-netaddr"):
        assert dep in new, f"{dep} not pulled in: {sorted(new)}"
    # every other new package is the archive's own version, from the archive
    others = sorted(p for p in new if p != "ovsvnet")
    madison = nspawn(installed["root"], "apt-cache", "madison", *others).stdout
    offered = {(p.strip(), v.strip()) for p, v, source in
               (line.split("|")[:3] for line in madison.splitlines())
               if rootfs.mirror().rstrip("/") in source}
    assert [p for p in others if (p, new[p]) not in offered] == []
    # and Python finds Debian's libraries, nothing from pip
    where = nspawn(installed["root"], "python3", "-c", "import click, netaddr, ovs, pyroute2; "
                   "print(click.__file__, netaddr.__file__, ovs.__file__, pyroute2.__file__)")
    assert all(p.startswith("/usr/lib/python3/dist-packages/") for p in where.stdout.split())
    assert "python3-pip" not in new


def test_commands_man_pages_completion_units_and_hooks(installed):
    root = installed["root"]
    for prog in ("ovsvnet", "vn"):
        out = nspawn(root, prog, "--version").stdout
        assert out.strip() == f"{prog}, version {__version__}"
    for section, page, text in (("1", "ovsvnet", "ovsvnet - virtual networks"),
                                ("1", "vn", "Xen's vnet tool"),
                                ("8", "ovsvnet-agent", "Type=notify"),
                                ("5", "vnet.sxp", "(vnet (id 97)")):
        out = nspawn(root, "man", "-P", "cat", section, page).stdout
        assert text in re.sub(r"\s+", " ", out), (page, out[:500])
    # click's completion, generated by the click the package runs with
    out = nspawn(root, "bash", "-c", ". /usr/share/bash-completion/completions/ovsvnet; "
                 "COMP_WORDS=(ovsvnet vnet-c); COMP_CWORD=1; _ovsvnet_completion ovsvnet; "
                 'printf "%s\\n" "${COMPREPLY[@]}"').stdout.split()
    assert out == ["vnet-create"]
    # the units: /usr/bin/ovsvnet, installed, not enabled (they need settings first)
    unit = (root / "lib/systemd/system/ovsvnet-agent.service").read_text()
    assert "ExecStart=/usr/bin/ovsvnet agent " in unit and "Type=notify" in unit
    assert "/usr/local" not in (root / "lib/systemd/system/ovsvnet-registry.service").read_text()
    assert not list((root / "etc/systemd/system").rglob("ovsvnet*"))
    # hooks: libvirt's per-driver directories and xend's script directory
    for hook in ("qemu.d", "lxc.d", "libxl.d", "network.d"):
        proc = nspawn(root, f"/etc/libvirt/hooks/{hook}/ovsvnet", "dom1", "stopped", "end", "-",
                      check=False)
        assert (proc.returncode, proc.stdout) == (0, ""), (hook, proc.stderr)
    assert "Exit codes:" in nspawn(root, "/etc/xen/scripts/network-vnet", "--help").stdout
    if (REPO / "scripts" / "vif-ovsvnet").exists():
        assert (root / "etc/xen/scripts/vif-ovsvnet").is_symlink()


def test_the_installed_demo_runs(installed):
    # Debian's python3-pyroute2 0.7.2, netaddr 0.8.0, click 8.1.3, python3-openvswitch 3.1
    proc = nspawn(installed["root"], "ovsvnet", "demo", timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert re.search(r"result: (\d+)/\1 pings succeeded", proc.stdout), proc.stdout[-2000:]


def test_logrotate_rotates_the_registry_log(installed):
    out = nspawn(installed["root"], "sh", "-ec", """
        ovsvnet registry init --address 127.0.0.1 --insecure --standalone >/dev/null
        log=/var/lib/ovsvnet/registry/ovsdb-server.log
        test -s $log
        logrotate -f /etc/logrotate.d/ovsvnet
        sleep 0.5
        ls /var/lib/ovsvnet/registry
        echo ---; cat $log
        ovsvnet registry stop >/dev/null
    """).stdout
    listing, log = out.split("---\n", 1)
    assert "ovsdb-server.log.1.gz" in listing.split()
    assert "opened log file /var/lib/ovsvnet/registry/ovsdb-server.log" in log  # reopened


def test_remove_leaves_only_configuration_and_purge_leaves_nothing(installed):
    root = installed["root"]
    # use it as an operator would: a key, registry data, the agent's replay state
    nspawn(root, "sh", "-ec", "ovsvnet keygen /etc/ovsvnet/discovery.key >/dev/null; "
           "test -d /var/lib/ovsvnet/registry || ovsvnet registry init --address 127.0.0.1 "
           "--insecure --standalone --no-start >/dev/null")
    baseline = installed["baseline"]
    nspawn(root, "apt-get", "remove", "-y", "-q", "ovsvnet")
    status = nspawn(root, "dpkg-query", "-W", "-f", "${Status}", "ovsvnet").stdout
    assert status == "deinstall ok config-files"
    left = sorted(snapshot(root) - baseline)
    allowed = {*installed["conffiles"], "/etc/ovsvnet"}
    # deb-systemd-helper keeps whether the units were enabled until purge (dh's design: a
    # reinstall restores it)
    unexpected = [p for p in left if p not in allowed and not p.startswith("/etc/ovsvnet/")
                  and not p.startswith(("/var/lib/ovsvnet", "/var/lib/systemd/deb-systemd"))]
    assert unexpected == [], f"left behind by remove (not configuration or data): {left}"
    assert "/etc/default/ovsvnet" in left and "/etc/logrotate.d/ovsvnet" in left
    assert not (root / "usr/lib/python3/dist-packages/ovsvnet").exists()

    nspawn(root, "apt-get", "purge", "-y", "-q", "ovsvnet")
    assert nspawn(root, "dpkg-query", "-W", "ovsvnet", check=False).returncode != 0
    after = snapshot(root)
    assert sorted(after - baseline) == [], "left behind by purge"
    assert sorted(baseline - after) == [], "purge removed files that were not ovsvnet's"
