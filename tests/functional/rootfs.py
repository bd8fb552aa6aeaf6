"""A Debian 12 root file system for tests that need a clean system (package, containers).

No image registry is reachable from CI machines, so roots are made with debootstrap from the
archive apt already uses. The minbase root is built once per machine (40-50 s) into a cache;
a root with extra packages (``cached_root(packages=...)``) is built once from it with
``chroot ... apt-get install`` (10-20 s), and a tarball of either (``root_tarball``, what
``podman import``/``docker import`` take) once more. Tests get a copy (``debian_root``) and may
change it freely; the cached ones are never written to after they are complete.

Every cache entry is built under ``<name>.partial`` and renamed when complete, under a lock,
so parallel tests share one build and an interrupted build is redone, never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

CACHE = Path(os.environ.get("OVSVNET_ROOTFS_CACHE", "/var/cache/ovsvnet-tests"))
SUITE = "bookworm"
#: What a container test needs inside its image: ``ip`` to configure an interface (LXD),
#: ``ping`` to prove the path.
NET_TOOLS = ("iproute2", "iputils-ping")


def mirror() -> str:
    """The Debian mirror this machine's apt uses (first ``URIs:`` or ``deb`` line)."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    return "http://deb.debian.org/debian"


def _name(variant: str, packages: Sequence[str]) -> str:
    return "+".join([f"{SUITE}-{variant}", *sorted(packages)])


@contextlib.contextmanager
def _building(name: str) -> Iterator[tuple[Path, Path | None]]:
    """Lock cache entry ``name``; yield (final path, partial path to build or None if done)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    final = CACHE / name
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.exists() and (final.is_file() or (final / ".complete").exists()):
            yield final, None
            return
        partial = CACHE / f"{name}.partial"
        for stale in (final, partial):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        yield final, partial
        partial.rename(final)


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ...: exit {proc.returncode}: "
                           f"{proc.stdout[-2000:]}")


def _apt_install(root: Path, packages: Sequence[str]) -> None:
    """``apt-get install`` into ``root`` from the host's mirror; no service starts (policy-rc.d)."""
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C"}
    _run(["chroot", str(root), "apt-get", "-q", "update"], env)
    _run(["chroot", str(root), "apt-get", "-q", "-y", "install", "--no-install-recommends",
          *packages], env)
    _run(["chroot", str(root), "apt-get", "clean"], env)
    policy.unlink()
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()


def cached_root(variant: str = "minbase", packages: Sequence[str] = ()) -> Path:
    """The cached pristine root, with ``packages`` installed (built on first use)."""
    if packages:
        base = cached_root(variant)
    with _building(_name(variant, packages)) as (final, partial):
        if partial is not None:
            if packages:
                _run(["cp", "-a", "--reflink=auto", str(base), str(partial)])
                (partial / ".complete").unlink()
                _apt_install(partial, packages)
            else:
                _run(["debootstrap", f"--variant={variant}", SUITE, str(partial), mirror()])
            (partial / ".complete").touch()
    return final


def root_tarball(variant: str = "minbase", packages: Sequence[str] = ()) -> Path:
    """A tarball of the cached root (for ``podman import``/``docker import``), built once."""
    root = cached_root(variant, packages)
    with _building(_name(variant, packages) + ".tar") as (final, partial):
        if partial is not None:
            _run(["tar", "-C", str(root), "--exclude=./.complete", "--numeric-owner",
                  "-cf", str(partial), "."])
    return final


def debian_root(dest: Path, variant: str = "minbase", packages: Sequence[str] = ()) -> Path:
    """A private copy of the pristine root at ``dest`` (which must not exist yet)."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(cached_root(variant, packages)),
                    str(dest)], check=True)
    (dest / ".complete").unlink(missing_ok=True)
    return dest


def have_debootstrap() -> bool:
    return shutil.which("debootstrap") is not None
