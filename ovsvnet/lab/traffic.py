"""Traffic between lab members, and what a wire saw: TCP transfers, UDP multicast, tcpdump.

Every sender and receiver is a small program of :mod:`ovsvnet.lab.progs` run inside a
namespace, bounded by a count and a timeout: nothing here sends outside the lab.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ovsvnet.errors import WaitTimeout
from ovsvnet.lab.common import LabError
from ovsvnet.lab.members import Guest, LabHost, PlainHost
from ovsvnet.lab.netns import ns_argv, run_in
from ovsvnet.system.proc import wait_until

Endpoint = Guest | LabHost | PlainHost


def _prog(name: str, *args: object) -> list[str]:
    return [sys.executable, "-m", f"ovsvnet.lab.progs.{name}", *map(str, args)]


def _addr_of(x: Any) -> str:
    a = x.addr if isinstance(x, Guest) else getattr(x, "address", None)
    if not a:
        raise LabError(f"{getattr(x, 'name', x)} has no IP address")
    return str(a)


def _netns_of(target: Any) -> str:
    if isinstance(target, str):
        return target
    netns = getattr(target, "netns", None)
    if not isinstance(netns, str):
        raise TypeError(f"expected a namespace name or an object with .netns, got {target!r}")
    return netns


def tcp_transfer(
    src: Endpoint,
    dst: Endpoint,
    nbytes: int = 2_000_000,
    timeout: float = 20,
    port: int = 5201,
) -> int:
    """Send ``nbytes`` over one TCP connection from ``src`` to ``dst``; return bytes received.

    Both ends are small Python programs run in the namespaces and bounded by ``timeout``;
    a stalled connection returns the count received so far instead of hanging."""
    dst_addr = _addr_of(dst)
    server = subprocess.Popen(
        ns_argv(dst.netns, _prog("tcp_server", dst_addr, port, timeout)),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if line != "ready":
            server.wait(5)
            err = server.stderr.read().strip() if server.stderr else ""
            raise LabError(f"tcp server in {dst.name} failed: {err}")
        run_in(src.netns, _prog("tcp_client", dst_addr, port, nbytes, timeout), check=False,
               timeout=timeout + 10)
        out, _ = server.communicate(timeout=timeout + 10)
        return int(out.strip().splitlines()[-1])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def udp_multicast(
    sender: Endpoint,
    receivers: Sequence[Endpoint],
    group: str = "224.10.0.1",
    port: int = 1798,
    count: int = 5,
    ttl: int = 8,
    timeout: float = 1.0,
) -> dict[str, int]:
    """Send ``count`` UDP datagrams to ``group:port`` from ``sender`` (TTL ``ttl``, out of
    its own address); return, per receiver name, how many datagrams it got.

    Each receiver joins the group on its own address before the first send and stops once
    it has all ``count`` datagrams, or ``timeout`` seconds after the last send."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for r in receivers:
            p = subprocess.Popen(
                ns_argv(r.netns, _prog("mcast_recv", group, port, _addr_of(r), count)),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            procs[r.name] = p
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                p.kill()
                _, err = p.communicate(timeout=5)
                raise LabError(f"multicast receiver in {r.name} failed: {err.strip()}")
        run_in(sender.netns, _prog("mcast_send", group, port, _addr_of(sender), count, ttl),
               timeout=count + 10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
            time.sleep(0.02)
        result = {}
        for name, p in procs.items():
            out, err = p.communicate(input="", timeout=10)  # closes stdin: "stop"
            lines = out.strip().splitlines()
            if p.returncode != 0 or not lines:
                raise LabError(f"multicast receiver in {name} failed: {err.strip()}")
            result[name] = int(lines[-1])
        return result
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


class Capture:
    """Result of :func:`capture`, filled when the block exits.

    ``lines`` holds one entry per packet: tcpdump's continuation lines (the inner frame of
    a VXLAN packet, ``-v`` details) are joined to their packet's line. ``raw`` is tcpdump's
    output as printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.raw: list[str] = []
        self.stderr = ""

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def count(self) -> int:
        return len(self.lines)


_TS = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d+ ")


def _packets(raw: list[str]) -> list[str]:
    if not raw or not _TS.match(raw[0]):
        return list(raw)  # no timestamps (-t): cannot tell continuations apart
    out: list[str] = []
    for line in raw:
        if _TS.match(line) or not out:
            out.append(line)
        else:
            out[-1] += " | " + line.strip()
    return out


@contextlib.contextmanager
def capture(
    ns: Any,
    iface: str,
    filter: str = "",
    count: int = 1000,
    timeout: float = 10.0,
    settle: float = 0.5,
    extra: Sequence[str] = ("-e",),
) -> Iterator[Capture]:
    """Run tcpdump on ``iface`` in namespace ``ns`` (a name, or anything with ``.netns``).

    Capturing starts before the block runs. After the block, it waits at most ``settle``
    seconds (bounded by ``timeout`` from the start) or until ``count`` packets were seen,
    then stops tcpdump; ``cap.lines`` then holds one line per packet (see :class:`Capture`).
    ``filter`` is a tcpdump expression; ``extra`` are further tcpdump options::

        with capture(lab.segments["s1"], "h-a", "ether broadcast", timeout=5) as cap:
            guest.ping("192.168.97.9", count=1, timeout=2)
        assert len(cap.lines) <= 2
    """
    netns = _netns_of(ns)
    argv = ["tcpdump", "-l", "-n", "--immediate-mode", "-i", iface, "-c", str(count), *extra]
    if filter:
        argv += filter.split() if isinstance(filter, str) else list(filter)
    start = time.monotonic()
    proc = subprocess.Popen(
        ns_argv(netns, argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    cap = Capture()
    assert proc.stderr is not None and proc.stdout is not None
    err_lines: list[str] = []
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: err_lines.extend(stderr), daemon=True)
    reader.start()
    try:
        # tcpdump says "listening on IFACE" on stderr once its socket is bound (after
        # "verbose output suppressed"); only then can the block send traffic.
        with contextlib.suppress(WaitTimeout):
            wait_until(
                lambda: proc.poll() is not None or any("listening on" in ln for ln in err_lines),
                timeout=10, what=f"tcpdump on {netns}/{iface} to start",
            )
        if not any("listening on" in ln for ln in err_lines):
            msg = " ".join(ln.strip() for ln in err_lines)
            raise LabError(f"tcpdump on {netns}/{iface} failed: {msg}")
        yield cap
        deadline = min(start + timeout, time.monotonic() + settle)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # flushes and prints its counters
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out = proc.stdout.read()
        proc.stdout.close()
        reader.join(5)
        cap.raw = [ln for ln in out.splitlines() if ln.strip()]
        cap.lines = _packets(cap.raw)
        cap.stderr = "".join(err_lines)
