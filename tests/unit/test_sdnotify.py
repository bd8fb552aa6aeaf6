"""sd_notify against real AF_UNIX datagram sockets: a path and the abstract namespace."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from ovsvnet.system import sdnotify


class Manager:
    """A stand-in for systemd's notification socket: bound, received from, nothing else."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2)
        self.env = {"NOTIFY_SOCKET": "@" + address[1:] if address.startswith("\0") else address}

    def recv(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def nothing_waiting(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(2)
        return False


@pytest.fixture(params=["path", "abstract"])
def manager(request, tmp_path) -> Iterator[Manager]:
    address = str(tmp_path / "notify") if request.param == "path" else \
        f"\0ovsvnet-test-{uuid.uuid4().hex}"
    m = Manager(address)
    yield m
    m.sock.close()


def test_messages_arrive_as_systemd_reads_them(manager):
    assert sdnotify.ready("synced: 3 vnets", env=manager.env)
    assert manager.recv() == ["READY=1", "STATUS=synced: 3 vnets"]
    assert sdnotify.watchdog(env=manager.env)
    assert manager.recv() == ["WATCHDOG=1"]
    assert sdnotify.status("resyncing", env=manager.env)
    assert manager.recv() == ["STATUS=resyncing"]
    assert sdnotify.stopping(env=manager.env)
    assert manager.recv() == ["STOPPING=1"]


def test_outside_systemd_nothing_is_sent_and_nothing_raises(tmp_path):
    assert sdnotify.ready(env={}) is False
    assert sdnotify.watchdog(env={"NOTIFY_SOCKET": "relative/path"}) is False
    assert sdnotify.watchdog(env={"NOTIFY_SOCKET": "@"}) is False
    assert sdnotify.watchdog(env={"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    # the manager went away: the socket file is gone, or nobody listens on it
    assert sdnotify.ready(env={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    stale = tmp_path / "stale"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(stale))
    s.close()
    assert sdnotify.ready(env={"NOTIFY_SOCKET": str(stale)}) is False


def test_the_process_environment_is_the_default(manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.env["NOTIFY_SOCKET"])
    assert sdnotify.watchdog()
    assert manager.recv() == ["WATCHDOG=1"]


@pytest.mark.parametrize("env,expected", [
    ({"WATCHDOG_USEC": "3000000"}, 3.0),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 3.0),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),  # a parent's watchdog
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(env, expected):
    assert sdnotify.watchdog_interval(env) == expected


def test_notifier_readiness_once_status_on_change(manager):
    n = sdnotify.Notifier(env=manager.env)
    n.ready("synced 1")
    assert manager.recv() == ["READY=1", "STATUS=synced 1"]
    n.ready("synced 1")  # unchanged: nothing
    assert manager.nothing_waiting()
    n.ready("synced 2")
    assert manager.recv() == ["STATUS=synced 2"]
    n.stopping()
    assert manager.recv() == ["STOPPING=1"]


def test_notifier_pings_at_half_the_interval(manager):
    now = [100.0]
    env = {**manager.env, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    n = sdnotify.Notifier(env=env, clock=lambda: now[0])
    assert n.next_ping == 102.0
    assert n.tick(101.9) is False
    assert manager.nothing_waiting()
    assert n.tick(102.0) is True
    assert manager.recv() == ["WATCHDOG=1"]
    assert n.next_ping == 104.0
    now[0] = 104.5
    assert n.tick() is True  # the clock's time by default
    assert manager.recv() == ["WATCHDOG=1"]


def test_notifier_without_systemd_or_watchdog_is_inert():
    n = sdnotify.Notifier(env={"WATCHDOG_USEC": "4000000"})  # no socket: no watchdog either
    assert n.next_ping == float("inf") and n.tick(1e12) is False
    n.ready("x")
    n.stopping()
    assert n.is_ready
