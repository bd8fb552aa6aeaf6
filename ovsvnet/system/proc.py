"""Processes: run a command, read a pidfile, check and stop a pid, wait for a condition.

One copy of each, so every caller gets the same guarantees: a command that is missing, hangs
or fails becomes an :class:`~ovsvnet.errors.CommandError` with one line of its stderr; a pid
is only ever signalled after checking that it is still the process we mean (its name, or a
word of its command line), because pids are reused; a zombie counts as dead (a detached
daemon's parent may never reap it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from ovsvnet.errors import CommandError, OvsvnetError, WaitTimeout

T = TypeVar("T")

#: Where daemons live when a user's PATH lacks the sbin directories.
SBIN_PATHS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def which(binary: str) -> str | None:
    """Like :func:`shutil.which`, also looking in the sbin directories."""
    found = shutil.which(binary)
    if found:
        return found
    for d in SBIN_PATHS:
        p = os.path.join(d, binary)
        if os.access(p, os.X_OK):
            return p
    return None


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30,
        input: str | None = None, env: Mapping[str, str] | None = None,
        what: str | None = None, error: type[OvsvnetError] = CommandError,
        ) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), capturing text output; stdin is /dev/null unless ``input``.

    A missing binary or a timeout always raises ``error``; a non-zero exit raises it only
    with ``check``. The message starts with ``what`` (default: the first two words)."""
    label = what or " ".join(argv[:2])
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              input=input, env=dict(env) if env is not None else None,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise error(f"{label}: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise error(f"{label}: no answer within {timeout:g}s") from exc
    if check and proc.returncode != 0:
        raise error(f"{label} failed (exit {proc.returncode}): {last_line(proc)}")
    return proc


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last non-empty line of a finished command's stderr (else stdout)."""
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else "no output"


# -- pids ----------------------------------------------------------------------------------

def read_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid in a pidfile, or None when it is missing or not a number."""
    try:
        value = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value > 0 else None


def _stat(pid: int) -> tuple[str, str] | None:
    """(comm, state) of a pid from /proc/PID/stat; comm may hold spaces or parentheses."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:][:1]


def identity(pidfile: str | os.PathLike[str]) -> str | None:
    """``PID:STARTTIME`` of the process a pidfile names, None when it does not run.

    A pid can be reused; a pid with its start time (clock ticks since boot) cannot, so
    two equal identities are one process lifetime. Reading it costs two small files."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return f"{pid}:{fields[19]}"  # field 22 of stat; fields[] starts at field 3


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_alive(pid: int | None, comm: str | None = None, needle: str | None = None) -> bool:
    """Whether ``pid`` runs and is not a zombie; with ``comm``, whether its name is that
    (the kernel keeps 15 characters); with ``needle``, whether a word of its command line
    contains it."""
    if not pid:
        return False
    st = _stat(pid)
    if st is None or st[1] in ("Z", "X"):
        return False
    if comm is not None and st[0] != comm[:15]:
        return False
    return needle is None or any(needle in arg for arg in cmdline(pid))


def pid_from_file(path: str | os.PathLike[str], comm: str | None = None,
                  needle: str | None = None) -> int | None:
    """The pid of a pidfile when that process runs (and is ``comm``/has ``needle``)."""
    pid = read_pid(path)
    return pid if pid_alive(pid, comm, needle) else None


def stop_pid(pid: int, comm: str | None = None, needle: str | None = None, *,
             grace: float = 10.0, first: int = signal.SIGTERM) -> bool:
    """Signal ``pid`` (``first``, then SIGKILL after ``grace`` s) until it is gone.

    Only a process that still is ``comm``/has ``needle`` is signalled. Returns False when
    it was not running; raises :class:`OvsvnetError` if it survives SIGKILL."""
    if not pid_alive(pid, comm, needle):
        return False
    for sig, wait in ((first, grace), (signal.SIGKILL, 5.0)):
        if not pid_alive(pid, comm, needle):
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: not pid_alive(pid), timeout=wait, what=f"pid {pid} to exit")
            return True
    raise OvsvnetError(f"{comm or needle or 'process'} (pid {pid}) survived SIGKILL")


def wait_until(pred: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> T:
    """Poll ``pred`` until it returns something truthy; return that. Backs off from
    ``interval`` to 0.25 s; raises :class:`~ovsvnet.errors.WaitTimeout` after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        result = pred()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)


class PidFile:
    """A pidfile held for the life of a daemon: created without following symlinks,
    mode 0644, locked with ``flock`` so a second daemon is refused (not silently run beside
    the first), removed on :meth:`release`. It also holds a POSIX (``fcntl``) lock, as OVS's
    daemons do: ``ovs-appctl -t NAME`` trusts a pidfile only while its process holds one
    (python-ovs's and OVS's ``read_pidfile`` test it with ``F_GETLK``, blind to ``flock``).
    The POSIX lock drops if the process closes any descriptor of the file, so a daemon must
    not open its own pidfile again."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise OvsvnetError(f"pidfile: cannot open {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = read_pid(self.path)
            raise OvsvnetError(f"pidfile: {self.path} is held by a running process"
                               + (f" (pid {other})" if other else "")) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if read_pid(self.path) == os.getpid():
                self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
