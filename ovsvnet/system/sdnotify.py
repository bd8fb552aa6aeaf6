"""systemd's service notification protocol (``sd_notify(3)``), standard library only.

Under a ``Type=notify`` unit systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.
The daemon sends newline-separated ``KEY=VALUE`` datagrams: ``READY=1`` when it can serve
(``systemctl start`` returns then), ``WATCHDOG=1`` more often than the interval (else it is
killed and restarted), ``STATUS=...`` for ``systemctl status``, ``STOPPING=1`` on its way out.

Outside systemd every call is a no-op. Sending never raises: a daemon must not die because
the manager went away or the socket was never there; a failed send returns False.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Mapping


def _address(env: Mapping[str, str]) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET``: an absolute path, or ``@name`` as the
    abstract name ``\\0name``; anything else (unset, relative, ``vsock:``) is None."""
    value = env.get("NOTIFY_SOCKET", "")
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one datagram; True if sent."""
    address = _address(os.environ if env is None else env)
    if address is None or not fields:
        return False
    message = "\n".join(fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError:
        return False
    return True


def ready(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """The service is up: ``systemctl start`` returns, units ordered after it start."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []), env=env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    """One line for ``systemctl status``."""
    return notify(f"STATUS={text}", env=env)


def stopping(env: Mapping[str, str] | None = None) -> bool:
    """The service is shutting down (systemd stops expecting watchdog pings)."""
    return notify("STOPPING=1", env=env)


def watchdog(env: Mapping[str, str] | None = None) -> bool:
    """One watchdog ping."""
    return notify("WATCHDOG=1", env=env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog interval in seconds, or None when there is none for this process
    (unset, malformed or zero ``$WATCHDOG_USEC``, or ``$WATCHDOG_PID`` names another
    process: a child that inherited the environment must not ping for its parent)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1e6


class Notifier:
    """What a daemon's loop needs: readiness once, status when it changes, and watchdog
    pings at half the interval (``sd_watchdog_enabled(3)``'s advice) from :meth:`tick`.

    ``next_ping`` is when the loop must wake up next at the latest (``inf`` without a
    watchdog), so a loop that sleeps until its next timer also wakes for the watchdog."""

    def __init__(self, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.enabled = _address(self.env) is not None
        interval = watchdog_interval(self.env) if self.enabled else None
        self.period = interval / 2 if interval else None
        self.next_ping = clock() + self.period if self.period else math.inf
        self.is_ready = False
        self._status: str | None = None

    def ready(self, status: str | None = None) -> None:
        """READY=1 the first time (with ``status``), later only a changed status."""
        if not self.is_ready:
            self.is_ready = True
            self._status = status
            if self.enabled:
                ready(status, self.env)
        elif status is not None:
            self.status(status)

    def status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            if self.enabled:
                status(text, self.env)

    def tick(self, now: float | None = None) -> bool:
        """Ping the watchdog when half the interval has passed; True if it pinged."""
        if self.period is None:
            return False
        now = self.clock() if now is None else now
        if now < self.next_ping:
            return False
        self.next_ping = now + self.period
        return watchdog(self.env)

    def stopping(self) -> None:
        if self.enabled:
            stopping(self.env)
