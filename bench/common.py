"""Shared pieces of the benchmarks: statistics, timing, process probes, traffic tools.

Everything that sends packets runs inside namespaces of a :class:`ovsvnet.lab.Lab`
and is bounded in count and time (iperf3 ``-t`` plus a subprocess timeout, ping ``-c``/``-w``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovsvnet.cli.delegate import agent_socket
from ovsvnet.lab import LabError, LabHost, wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- statistics -------------------------------------------------------------------------------

def summarize(samples: Sequence[float], digits: int = 6) -> dict[str, Any]:
    """Median and spread (min, max, quartiles) of repeated measurements."""
    xs = sorted(float(x) for x in samples)
    if not xs:
        return {"n": 0, "samples": []}
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    r = lambda v: round(v, digits)
    return {
        "n": len(xs), "median": r(statistics.median(xs)), "min": r(xs[0]), "max": r(xs[-1]),
        "q1": r(q1), "q3": r(q3), "mean": r(statistics.fmean(xs)),
        "samples": [r(x) for x in samples],
    }


def ratio(a: dict[str, Any], b: dict[str, Any], digits: int = 3, lo: str = "min",
          hi: str = "max") -> dict[str, Any] | None:
    """a/b of two :func:`summarize` results: ratio of medians, and the widest range the
    spreads allow (a.lo/b.hi .. a.hi/b.lo; by default the spread is min..max)."""
    if not a.get("n") or not b.get("n") or not b["median"] or not b.get(lo):
        return None
    return {
        "median": round(a["median"] / b["median"], digits),
        "low": round(a[lo] / b[hi], digits) if b.get(hi) else None,
        "high": round(a[hi] / b[lo], digits),
        "spread": f"{lo}-{hi}",
    }


def percentile(xs: Sequence[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed wall time in seconds."""
    out: list[float] = []
    start = time.monotonic()
    try:
        yield out
    finally:
        out.append(time.monotonic() - start)


# -- processes ----------------------------------------------------------------------------------

def rss_kib(pid: int) -> int | None:
    """Resident set size (VmRSS) of ``pid`` in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` (all its threads) in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _first(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    flags: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "cpu_virtualisation_flags": sorted(set(flags) & {"vmx", "svm", "hypervisor"}),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "ovs_version": _first(["ovs-vswitchd", "--version"]),
        "iperf3_version": _first(["iperf3", "--version"]),
        "python": sys.version.split()[0],
    }


# -- lab helpers ---------------------------------------------------------------------------------

def ns_run(netns: str, argv: Sequence[str], timeout: float = 30,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout:g}s in {netns}: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"failed in {netns} (exit {proc.returncode}): {' '.join(argv)}: "
                       f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    return proc


def ovsvnet(host: LabHost, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``ovsvnet ARGS`` in the host's namespace; raise with its stderr if it fails."""
    proc = host.ovsvnet("--timeout", str(int(timeout)), *args, check=False,
                        timeout=timeout + 30)
    if proc.returncode != 0:
        raise LabError(f"{host.name}: ovsvnet {' '.join(args[:3])}... exited "
                       f"{proc.returncode}: {proc.stderr.strip()[-400:]}")
    return proc


def vsctl_json_rows(host: LabHost, *args: str) -> list[dict[str, Any]]:
    """``ovs-vsctl -f json ARGS`` as a list of {column: python value} dicts."""
    out = subprocess.run(
        ["ovs-vsctl", f"--db={host.db}", "--timeout=10", "--format=json", *args],
        capture_output=True, text=True, timeout=20, check=True).stdout
    data = json.loads(out)
    return [{h: _ovsdb_value(v) for h, v in zip(data["headings"], row)} for row in data["data"]]


def _ovsdb_value(v: Any) -> Any:
    if isinstance(v, list) and len(v) == 2 and v[0] == "map":
        return {k: _ovsdb_value(x) for k, x in v[1]}
    if isinstance(v, list) and len(v) == 2 and v[0] == "set":
        return [_ovsdb_value(x) for x in v[1]]
    if isinstance(v, list) and len(v) == 2 and v[0] == "uuid":
        return v[1]
    return v


def tunnel_addrs(host: LabHost) -> set[str]:
    """Remote addresses of the host's VXLAN ports that have an OpenFlow port number."""
    rows = vsctl_json_rows(host, "--columns=ofport,options", "find", "Interface", "type=vxlan")
    up = set()
    for r in rows:
        ofport = r.get("ofport")
        if isinstance(ofport, int) and ofport > 0:
            remote = (r.get("options") or {}).get("remote_ip")
            if remote:
                up.add(remote)
    return up


# -- traffic -------------------------------------------------------------------------------------

_RTT = re.compile(r"time=([\d.]+) ms")


def ping_rtts(netns: str, dst: str, count: int, interval: float = 0.01,
              size: int | None = None) -> list[float]:
    """``count`` echo round trips from ``netns`` to ``dst`` (ms); lost ones are missing."""
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1",
            "-w", str(int(count * interval + 10))]
    if size is not None:
        argv += ["-s", str(size)]
    proc = ns_run(netns, [*argv, dst], timeout=count * interval + 30, check=False)
    return [float(m.group(1)) for m in _RTT.finditer(proc.stdout)]


def ping_ok(netns: str, dst: str, count: int = 3, timeout: float = 10) -> bool:
    """``count`` replies within ``timeout`` s (retrying while ARP/neighbours resolve)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = max(1, int(deadline - time.monotonic()))
        proc = ns_run(netns, ["ping", "-n", "-q", "-c", str(count), "-i", "0.1", "-W", "1",
                              "-w", str(left), dst], timeout=left + 5, check=False)
        if proc.returncode == 0:
            return True
    return False


def _wait_listening(netns: str, port: int, timeout: float = 10) -> None:
    wait_until(lambda: f":{port} " in ns_run(netns, ["ss", "-Hltn"], check=False).stdout,
               timeout=timeout, interval=0.02, what=f"iperf3 server in {netns} on :{port}")


def iperf(src_ns: str, dst_ns: str, dst_addr: str, seconds: float, port: int = 5201,
          watch_pids: Sequence[int] = ()) -> dict[str, Any]:
    """One bounded iperf3 TCP test (single stream, ``src`` -> ``dst``).

    Returns received Gbit/s, retransmits, iperf3's CPU figures and, for each pid in
    ``watch_pids``, the CPU seconds it used per wall second during the test."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", dst_ns, "iperf3", "-s", "-1", "-B", dst_addr, "-p", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(dst_ns, port)
        cpu0 = {pid: cpu_seconds(pid) for pid in watch_pids}
        t0 = time.monotonic()
        proc = ns_run(src_ns, ["iperf3", "-c", dst_addr, "-p", str(port), "-t", str(seconds),
                               "-J", "--connect-timeout", "5000"],
                      timeout=seconds + 30, check=False)
        wall = time.monotonic() - t0
        cpu1 = {pid: cpu_seconds(pid) for pid in watch_pids}
        try:
            data = json.loads(proc.stdout)
        except ValueError as exc:
            raise LabError(f"iperf3 {src_ns} -> {dst_addr}: no JSON: "
                           f"{(proc.stderr or proc.stdout)[-300:]}") from exc
        if "error" in data:
            raise LabError(f"iperf3 {src_ns} -> {dst_addr}: {data['error']}")
        end = data["end"]
        return {
            "gbps": end["sum_received"]["bits_per_second"] / 1e9,
            "retransmits": end.get("sum_sent", {}).get("retransmits"),
            "cpu_sender_pct": end.get("cpu_utilization_percent", {}).get("host_total"),
            "cpu_receiver_pct": end.get("cpu_utilization_percent", {}).get("remote_total"),
            "daemon_cpu": {str(pid): round((cpu1[pid] - cpu0[pid]) / wall, 3)
                           for pid in watch_pids
                           if cpu0.get(pid) is not None and cpu1.get(pid) is not None},
        }
    finally:
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class PingStream:
    """A ping at a fixed interval from one namespace, replies timestamped (``ping -D``).

    Used to time outages: :meth:`first_reply_after` gives the first reply received after a
    wall-clock moment. Bounded by ``max_seconds`` (``ping -w``) and stopped by :meth:`stop`."""

    _LINE = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+)")

    def __init__(self, netns: str, dst: str, interval: float = 0.01, max_seconds: float = 30):
        self.replies: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "stdbuf", "-oL", "ping", "-n", "-D",
             "-i", str(interval), "-W", "1", "-w", str(int(max_seconds)), dst],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = self._LINE.match(line)
            if m:
                with self._lock:
                    self.replies.append((float(m.group(1)), int(m.group(2))))

    def first_reply_after(self, t: float) -> float | None:
        with self._lock:
            return next((ts for ts, _ in self.replies if ts > t), None)

    def wait_reply_after(self, t: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ts = self.first_reply_after(t)
            if ts is not None:
                return ts
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        return self.first_reply_after(t)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)

    def __enter__(self) -> PingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_GARP = r"""
import socket, struct, sys, time
mac = bytes.fromhex(sys.argv[1].replace(":", ""))
ip = socket.inet_aton(sys.argv[2])
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
print(repr(time.time()), flush=True)
"""


def send_garp(netns: str, mac: str, ip: str) -> float:
    """One gratuitous ARP request from ``eth0`` in ``netns`` (as QEMU/Xen send after a move);
    returns the wall-clock time it was sent (after the sender process started)."""
    out = ns_run(netns, [sys.executable, "-c", _GARP, mac, ip]).stdout
    return float(out.strip().splitlines()[-1])


# -- agents -----------------------------------------------------------------------------------

@dataclass
class AgentProc:
    host: LabHost
    proc: subprocess.Popen[bytes]
    started: float


class Agents:
    """``ovsvnet agent`` processes started in their hosts' namespaces, stopped by pid."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.procs: dict[str, AgentProc] = {}

    def start(self, host: LabHost, *extra: str, wait: bool = True, timeout: float = 30) -> float:
        """Start the agent; returns the wall-clock start time. With ``wait``, returns once
        its control socket answers."""
        log = open(host.dir / "agent.log", "ab")
        t0 = time.time()
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable, "-m", "ovsvnet",
             "--db", host.db, "--timeout", "600", "agent", "--interval", str(self.interval),
             "--key-file", str(host.discovery_key()),
             "--pidfile", str(host.dir / "agent.pid"), *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=host.env)
        log.close()
        self.procs[host.name] = AgentProc(host, proc, t0)
        if wait:
            wait_until(lambda: self.status(host, timeout=5) is not None or proc.poll() is not None,
                       timeout=timeout, interval=0.05, what=f"agent on {host.name}")
            if proc.poll() is not None:
                raise LabError(f"agent on {host.name} exited {proc.returncode}; see "
                               f"{host.dir / 'agent.log'}")
        return t0

    def pid(self, host: LabHost) -> int | None:
        a = self.procs.get(host.name)
        return a.proc.pid if a is not None and a.proc.poll() is None else None

    @staticmethod
    def status(host: LabHost, timeout: float = 5) -> dict[str, Any] | None:
        """The agent's ``status`` over its control socket (bounded by ``timeout``)."""
        ctl = agent_socket(str(host.dir))  # <rundir>/ovsvnet-agent.<pid>.ctl
        if ctl is None:
            return None
        try:
            proc = subprocess.run(
                ["ovs-appctl", "-t", str(ctl), f"--timeout={max(1, int(timeout))}", "status"],
                capture_output=True, text=True, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            return None
        if proc.returncode != 0:
            return None
        try:
            return json.loads(proc.stdout)
        except ValueError:
            return None

    def stop(self, host: LabHost, sig: int = signal.SIGTERM) -> None:
        a = self.procs.pop(host.name, None)
        if a is None or a.proc.poll() is not None:
            return
        a.proc.send_signal(sig)
        try:
            a.proc.wait(15)
        except subprocess.TimeoutExpired:
            a.proc.kill()
            a.proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(self.procs[name].host)
