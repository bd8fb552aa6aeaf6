"""The process toolkit on real processes of this test (never anyone else's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ovsvnet.errors import CommandError, OvsvnetError, WaitTimeout
from ovsvnet.system import proc


def test_run_returns_output_and_names_failures():
    assert proc.run(["echo", "hi"]).stdout == "hi\n"
    with pytest.raises(CommandError, match=r"sh -c failed \(exit 3\): boom"):
        proc.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert proc.run(["sh", "-c", "exit 3"], check=False).returncode == 3
    with pytest.raises(CommandError, match="not found"):
        proc.run(["/nonexistent/binary"])
    with pytest.raises(CommandError, match="no answer within 0.2s"):
        proc.run(["sleep", "5"], timeout=0.2)


def test_pids_are_checked_by_name_and_a_zombie_is_dead(tmp_path):
    child = subprocess.Popen(["sleep", "30"])
    try:
        proc.wait_until(lambda: proc.pid_alive(child.pid, comm="sleep", needle="30"), timeout=5)
        assert proc.pid_alive(child.pid)
        assert not proc.pid_alive(child.pid, comm="ovsdb-server")
        assert proc.pid_alive(child.pid, needle="30")
        pidfile = tmp_path / "x.pid"
        pidfile.write_text(f"{child.pid}\n")
        assert proc.pid_from_file(pidfile, comm="sleep") == child.pid
        assert proc.pid_from_file(pidfile, comm="other") is None
        # a process that is not the one we mean is never signalled
        assert proc.stop_pid(child.pid, comm="ovsdb-server") is False
        assert child.poll() is None
        assert proc.stop_pid(child.pid, comm="sleep", grace=2) is True
        child.wait(5)
        assert not proc.pid_alive(child.pid)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert proc.read_pid(tmp_path / "missing.pid") is None
    zombie = subprocess.Popen(["true"])  # exits at once; not reaped until wait()
    proc.wait_until(lambda: not proc.pid_alive(zombie.pid), timeout=5, what="a zombie")
    assert os.path.exists(f"/proc/{zombie.pid}")  # still there, but counts as dead
    zombie.wait()


def test_stop_pid_escalates_to_sigkill():
    child = subprocess.Popen([sys.executable, "-c",
                              "import signal, time; signal.signal(signal.SIGTERM, "
                              "signal.SIG_IGN); print('ready', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    assert proc.stop_pid(child.pid, grace=0.3) is True
    assert child.wait(5) == -signal.SIGKILL


def test_wait_until_returns_the_value_or_times_out():
    values = iter([0, 0, 7])
    assert proc.wait_until(lambda: next(values), timeout=2) == 7
    with pytest.raises(WaitTimeout, match="waiting for nothing"):
        proc.wait_until(lambda: False, timeout=0.1, what="nothing")


def test_pidfile_is_exclusive_and_refuses_symlinks(tmp_path):
    path = tmp_path / "agent.pid"
    first = proc.PidFile(path)
    first.acquire()
    assert proc.read_pid(path) == os.getpid()
    with pytest.raises(OvsvnetError, match="held by a running process"):
        proc.PidFile(path).acquire()
    first.release()
    assert not path.exists()
    target = tmp_path / "elsewhere"
    link = tmp_path / "link.pid"
    link.symlink_to(target)
    with pytest.raises(OvsvnetError, match="cannot open"):
        proc.PidFile(link).acquire()
    assert not target.exists()
