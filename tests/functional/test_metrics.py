"""The agent's Prometheus metrics and its ``ovs-appctl -t ovsvnet-agent`` name, with real
agents: a scrape agrees with ``status`` (drops provoked by a rogue included), the HTTP
endpoint never blocks the loop, the textfile is replaced atomically and removed at exit."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ovsvnet.lab import Lab, LabHost, wait_until
from ovsvnet.metrics import parse_samples

from .helpers import ovsvnet
from .test_agent import INTERVAL, status, tunnels
from .test_discovery_trust import send

pytestmark = pytest.mark.root

PORT = 9798

#: GET a URL inside a host's namespace: prints the status, the content type, then the body.
FETCH = r"""
import sys, time, urllib.request, urllib.error
t = time.monotonic()
try:
    r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], method=sys.argv[2]),
                               timeout=5)
    code, ctype, body = r.status, r.headers.get("Content-Type"), r.read().decode()
except urllib.error.HTTPError as e:
    code, ctype, body = e.code, e.headers.get("Content-Type"), e.read().decode()
print(code); print(ctype); print(f"{time.monotonic() - t:.3f}"); sys.stdout.write(body)
"""


class DefaultAgents:
    """Agents as a packaged host runs them: no --pidfile, so the pidfile is
    ``<rundir>/ovsvnet-agent.pid`` and ``ovs-appctl -t ovsvnet-agent`` finds them."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, host: LabHost, *extra: str) -> subprocess.Popen[bytes]:
        with open(host.dir / "agent.log", "ab") as log:
            self.procs[host.name] = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, sys.executable, "-m", "ovsvnet",
                 "--db", host.db, "agent", "--interval", str(INTERVAL),
                 "--key-file", str(host.discovery_key()), *extra],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=host.env)
        wait_until(lambda: status(host).get("agent") is not None, timeout=15,
                   what=f"agent on {host.name}")
        return self.procs[host.name]

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@contextlib.contextmanager
def lab_with_default_agents() -> Iterator[tuple[Lab, DefaultAgents]]:
    agents = DefaultAgents()
    with Lab() as lab:
        try:
            lab.add_segment("s1")
            yield lab, agents
        finally:
            agents.stop_all()


def fetch(host: LabHost, path: str, method: str = "GET") -> tuple[int, str, float, str]:
    out = host.run(sys.executable, "-c", FETCH, f"http://127.0.0.1:{PORT}{path}", method,
                   timeout=20).stdout
    code, ctype, took, body = out.split("\n", 3)
    return int(code), ctype, float(took), body


def scrape(host: LabHost) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, ctype, _, body = fetch(host, "/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4"), (code, ctype)
    return parse_samples(body)


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def appctl(host: LabHost, *args: str) -> subprocess.CompletedProcess[str]:
    """``ovs-appctl -t ovsvnet-agent ARGS`` with the host's OVS_RUNDIR, as an operator would."""
    return host.run("ovs-appctl", "-t", "ovsvnet-agent", "--timeout=5", *args, check=False,
                    timeout=15)


def test_appctl_by_name_and_a_scrape_that_matches_status_drops_included(tmp_path):
    with lab_with_default_agents() as (lab, agents):
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h in (h1, h2):
            ovsvnet(h, "create", "--id", "97")
        ovsvnet(h1, "create", "--id", "99", "--security", "auth")  # inactive: userspace
        textfile = h1.dir / "ovsvnet.prom"
        proc = agents.start(h1, "--metrics-address", str(PORT),
                            "--metrics-textfile", str(textfile))
        agents.start(h2)
        assert wait_until(lambda: tunnels(h1) == {h2.address}, timeout=15, what="tunnel")

        # ovs-appctl -t NAME: <rundir>/NAME.pid, then <rundir>/NAME.<pid>.ctl, as for OVS
        assert (h1.dir / "ovsvnet-agent.pid").read_text().strip() == str(proc.pid)
        assert (h1.dir / f"ovsvnet-agent.{proc.pid}.ctl").exists()
        reply = appctl(h1, "status")
        assert reply.returncode == 0, reply.stderr
        assert json.loads(reply.stdout)["system_id"] == h1.system_id
        text = appctl(h1, "metrics").stdout
        assert text.startswith("# HELP ") and "ovsvnet_agent_syncs_total" in text

        # drops, provoked: unauthenticated (wrong key) and spoofed (a key holder speaking
        # for h2 from its own address); each must show in status and in the metrics
        rogue = lab.add_plain_host("rogue", "s1")
        key = h1.discovery_key().read_bytes().strip()
        h2_id = status(h2)["agent"]["system_id"]
        send(rogue, [h1.address], [{"origin": "evil", "address": rogue.address}] * 3,
             key=b"x" * 32)
        send(rogue, [h1.address], [{"origin": h2_id, "address": h2.address}] * 2, key=key)
        assert wait_until(lambda: status(h1)["agent"]["counters"]["spoofed"] >= 2
                          and status(h1)["agent"]["counters"]["decode_auth"] >= 3,
                          timeout=10, what="the drops counted")

        before = scrape(h1)
        agent = status(h1)["agent"]
        after = scrape(h1)
        listing = json.loads(ovsvnet(h1, "list", "--json").stdout)

        def between(name: str, got: float, **labels: str) -> None:
            lo, hi = value(before, name, **labels), value(after, name, **labels)
            assert lo <= got <= hi, (name, labels, lo, got, hi)

        counters = agent["counters"]
        for reason in ("decode_auth", "spoofed", "stale", "moved", "future", "too_old"):
            between("ovsvnet_agent_announcements_dropped_total", counters[reason],
                    reason=reason)
        assert value(after, "ovsvnet_agent_announcements_dropped_total",
                     reason="decode_auth") >= 3
        assert value(after, "ovsvnet_agent_announcements_dropped_total", reason="spoofed") >= 2
        between("ovsvnet_agent_announcements_received_total", counters["received"])
        between("ovsvnet_agent_announcements_sent_total", agent["announcements_sent"])
        for event in ("applied", "duplicate", "own", "expired", "left"):
            between("ovsvnet_agent_discovery_events_total", counters[event], event=event)
        between("ovsvnet_agent_syncs_total", agent["syncs"])
        between("ovsvnet_agent_sync_errors_total", agent["sync_errors"])
        between("ovsvnet_agent_sync_duration_seconds_count",
                agent["syncs"] + agent["sync_errors"])
        between("ovsvnet_agent_sync_duration_seconds_sum", agent["sync_seconds"])
        between("ovsvnet_agent_vswitchd_restarts_repaired_total", agent["vswitchd_restarts"])
        live = sum(1 for p in agent["peers"] if p["last_seen"] is not None)
        assert value(after, "ovsvnet_agent_peers", state="live") == live
        assert {p["origin"] for p in agent["peers"]} >= {h2.system_id}
        info = [k for k in after if k[0] == "ovsvnet_agent_info"]
        assert dict(info[0][1])["system_id"] == h1.system_id
        assert dict(info[0][1])["discovery"] == "authenticated"
        # vnets and tunnels by level and state: as list and the status's tunnels say
        for level in ("none", "auth", "conf"):
            for st in ("active", "inactive", "missing"):
                want = sum(1 for v in listing if v["security"] == level and v["state"] == st)
                assert value(after, "ovsvnet_vnets", level=level, state=st) == want, \
                    (level, st)
        assert value(after, "ovsvnet_vnets", level="auth", state="inactive") == 1
        assert value(after, "ovsvnet_tunnels", level="none", state="up") == 1
        assert sum(v for (n, _), v in after.items() if n == "ovsvnet_tunnels") == 1
        assert not [k for k in after if k[0].startswith("ovsvnet_agent_registry")]

        # the HTTP side: other paths and methods, and a silent client blocks nothing
        assert fetch(h1, "/nope")[0] == 404
        assert fetch(h1, "/metrics", "HEAD")[0] == 200
        assert fetch(h1, "/metrics", "POST")[0] == 405
        silent = subprocess.Popen(
            ["ip", "netns", "exec", h1.netns, sys.executable, "-c",
             f"import socket,time\ns=socket.create_connection(('127.0.0.1',{PORT}))\n"
             "s.send(b'GET /metr')\ntime.sleep(8)"], stdin=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            code, _, took, _ = fetch(h1, "/metrics")
            assert code == 200 and took < 1.0, took  # answered while the other hangs
            assert status(h1)["agent"] is not None
        finally:
            silent.kill()
            silent.wait()

        # the textfile: node_exporter's format, replaced (never half-written), 0644
        def spoofed_in_textfile() -> bool:
            if not textfile.exists():
                return False
            return value(parse_samples(textfile.read_text()),
                         "ovsvnet_agent_announcements_dropped_total",
                         reason="spoofed") == counters["spoofed"]
        assert wait_until(spoofed_in_textfile, timeout=15, what="the textfile rewritten")
        assert oct(textfile.stat().st_mode & 0o777) == "0o644"
        assert not [p for p in h1.dir.iterdir() if p.name.endswith(".tmp")]

        # stopped: socket and textfile gone; ovs-appctl says so
        agents.stop("h1")
        assert not textfile.exists()
        assert not list(h1.dir.glob("ovsvnet-agent.*.ctl"))
        assert appctl(h1, "status").returncode != 0


def test_bad_metrics_options_are_one_line_and_start_nothing(tmp_path):
    with lab_with_default_agents() as (lab, _):
        h1 = lab.add_host("h1", "s1")
        for args, words in (
                (["--metrics-address", ":9798"], "metrics-address"),
                (["--metrics-address", "localhost:9798"], "metrics-address"),
                (["--metrics-address", "127.0.0.1:70000"], "not a TCP port"),
                (["--metrics-textfile", str(tmp_path / "x.txt")], "must end in .prom"),
                (["--metrics-textfile", "/nonexistent/dir/x.prom"], "does not exist")):
            proc = h1.ovsvnet("agent", "--insecure-discovery", *args, check=False,
                              timeout=30)
            assert proc.returncode == 2, (args, proc.stderr)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and words in lines[0], (args, proc.stderr)
        assert not (h1.dir / "ovsvnet-agent.pid").exists()
        # a port in use: the agent says so and exits (it does not run without its endpoint)
        blocker = subprocess.Popen(
            ["ip", "netns", "exec", h1.netns, sys.executable, "-c",
             f"import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{PORT}))\n"
             "s.listen()\ntime.sleep(30)"], stdin=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            proc = h1.ovsvnet("agent", "--insecure-discovery", "--metrics-address",
                              str(PORT), check=False, timeout=30)
            assert proc.returncode == 1, proc.stderr
            assert "cannot listen on 127.0.0.1:9798" in proc.stderr
        finally:
            blocker.kill()
            blocker.wait()
