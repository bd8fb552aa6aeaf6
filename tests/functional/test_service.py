"""The agent under systemd, as the package installs it: ``Type=notify`` readiness after the
first successful sync, the watchdog restarting a hung agent, journald priorities, and
``ovs-appctl -t ovsvnet-agent``.

This machine has no systemd as init, so a clean Debian 12 root with the package and systemd
boots under ``systemd-nspawn --boot --private-network``: its systemd, Open vSwitch (Debian's
units; userspace datapath) and agent run in the container's own namespaces; commands reach
them with ``nsenter`` into the container's init. The unit is the installed one; a drop-in
only shortens ``WatchdogSec=`` to 4 s so that a hang is seen quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.functional.test_package import TOOLS, apt_install, build_deb, fresh_root

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(any(shutil.which(t) is None for t in (*TOOLS, "nsenter")),
                       reason=f"needs {', '.join(TOOLS)}, nsenter (ci/install-deps.sh)"),
]

WATCHDOG_SEC = 4
Run = Callable[..., subprocess.CompletedProcess[str]]


def _container_init(nspawn_pid: int, timeout: float = 60) -> int:
    """The container's PID 1 (seen from here): nspawn's child running systemd."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{nspawn_pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                        return int(child)
        time.sleep(0.2)
    raise AssertionError("the container's systemd did not start")


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("svc")
    given = os.environ.get("OVSVNET_TEST_DEB")  # as in test_package.py
    deb = Path(given) if given else build_deb(base)
    root = fresh_root(base / "root", deb, ("systemd", "systemd-sysv"))
    apt_install(root, f"/var/tmp/{deb.name}")
    dropin = root / "etc/systemd/system/ovsvnet-agent.service.d"
    dropin.mkdir(parents=True)
    (dropin / "test.conf").write_text(f"[Service]\nWatchdogSec={WATCHDOG_SEC}\n"
                                      "TimeoutStartSec=60\n")
    console = open(base / "console.log", "w")
    nspawn = subprocess.Popen(
        ["systemd-nspawn", "-q", "-D", str(root), "--boot", "--register=no", "--keep-unit",
         "--private-network", "--console=read-only"],
        stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
    try:
        init = _container_init(nspawn.pid)

        def run(*argv: str, check: bool = True, timeout: float = 120
                ) -> subprocess.CompletedProcess[str]:
            proc = subprocess.run(["nsenter", "-t", str(init), "-a", *argv],
                                  capture_output=True, text=True, timeout=timeout)
            if check and proc.returncode != 0:
                raise AssertionError(f"{' '.join(argv)}: exit {proc.returncode}\n"
                                     f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            return proc

        state = run("systemctl", "is-system-running", "--wait", check=False).stdout.strip()
        assert state in ("running", "degraded"), state
        assert run("systemctl", "is-active", "ovsdb-server", "ovs-vswitchd").returncode == 0
        # inside the container: an underlay (veth pair) for the tunnel endpoint and
        # multicast, the userspace datapath (no openvswitch module here), one vnet, a key
        run("sh", "-ec", """
            ip link add v0 type veth peer name v1
            ip addr add 10.99.0.1/24 dev v0
            ip link set v0 up; ip link set v1 up
            ovs-vsctl set Open_vSwitch . external_ids:ovsvnet-datapath=netdev
            ovsvnet create --id 97 >/dev/null
            ovsvnet keygen /etc/ovsvnet/discovery.key >/dev/null
            echo 'OVSVNET_AGENT_OPTS="--key-file /etc/ovsvnet/discovery.key --interval 1"' \
                >> /etc/default/ovsvnet
            systemctl daemon-reload
        """)
        yield run
    finally:
        nspawn.terminate()  # nspawn powers the container off (SIGRTMIN+3 to its systemd)
        try:
            nspawn.wait(60)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait(10)
        console.close()
        shutil.rmtree(base, ignore_errors=True)


def unit(run: Run, *props: str) -> dict[str, str]:
    out = run("systemctl", "show", "ovsvnet-agent", "-p", ",".join(props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_start_returns_once_the_first_sync_succeeded(booted):
    run = booted
    # No ovs-vswitchd: every sync fails, so the agent never becomes ready.
    run("systemctl", "stop", "ovs-vswitchd")
    run("systemctl", "start", "--no-block", "ovsvnet-agent")
    time.sleep(3)
    assert unit(run, "ActiveState")["ActiveState"] == "activating"
    # journald priorities: the failures are warnings, the start line is not
    warnings = run("journalctl", "-u", "ovsvnet-agent", "-p", "warning", "-o", "cat").stdout
    assert "event=sync-failed" in warnings and "event=start" not in warnings
    info = run("journalctl", "-u", "ovsvnet-agent", "-p", "info", "-o", "cat").stdout
    assert "event=start" in info
    # ovs-vswitchd back: 'systemctl start' waits for the agent's READY=1, not its fork
    run("systemctl", "start", "ovs-vswitchd")
    began = time.monotonic()
    run("systemctl", "start", "ovsvnet-agent")
    waited = time.monotonic() - began
    state = unit(run, "ActiveState", "StatusText", "MainPID")
    assert state["ActiveState"] == "active"
    assert re.fullmatch(r"\d+ syncs, \d+ failed", state["StatusText"]), state
    assert int(state["StatusText"].split()[2]) >= 1  # the failed passes before readiness
    print(f"ready {waited:.2f} s after ovs-vswitchd came back")

    # a plain start from stopped: ready means synced
    run("systemctl", "restart", "ovsvnet-agent")
    state = unit(run, "ActiveState", "StatusText")
    assert state["ActiveState"] == "active" and state["StatusText"].startswith(
        ("1 syncs", "2 syncs", "3 syncs")), state


def test_control_socket_answers_ovs_appctl_by_name(booted):
    run = booted
    run("systemctl", "start", "ovsvnet-agent")
    status = json.loads(run("ovs-appctl", "-t", "ovsvnet-agent", "status").stdout)
    assert status["syncs"] >= 1
    commands = run("ovs-appctl", "-t", "ovsvnet-agent", "help").stdout.split()
    assert {"status", "sync"} <= set(commands)


def test_a_hung_agent_is_restarted_by_the_watchdog(booted):
    run = booted
    run("systemctl", "start", "ovsvnet-agent")
    before = unit(run, "MainPID", "NRestarts")
    assert int(before["MainPID"]) > 0
    run("kill", "-STOP", before["MainPID"])
    stopped = time.monotonic()
    deadline = stopped + WATCHDOG_SEC + 30
    after = before
    while time.monotonic() < deadline:
        after = unit(run, "MainPID", "NRestarts", "ActiveState")
        if after["MainPID"] not in ("0", before["MainPID"]) and after["ActiveState"] == "active":
            break
        time.sleep(0.5)
    recovered = time.monotonic() - stopped
    assert after["MainPID"] not in ("0", before["MainPID"]), after
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    journal = run("journalctl", "-u", "ovsvnet-agent", "-o", "cat").stdout
    assert f"Watchdog timeout (limit {WATCHDOG_SEC}s)" in journal
    # PYTHONFAULTHANDLER (the unit): where the agent was when the watchdog's SIGABRT came
    assert "Fatal Python error: Aborted" in journal and "in run_once" in journal
    print(f"hung agent replaced by a ready one {recovered:.1f} s after SIGSTOP "
          f"(WatchdogSec={WATCHDOG_SEC})")
