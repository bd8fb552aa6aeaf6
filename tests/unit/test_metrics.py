"""Prometheus metrics: rendering (pure), the agent's HTTP endpoint and textfile (real
sockets on 127.0.0.1, no root), and the control socket's OVS-style name."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ovsvnet import metrics
from ovsvnet.agent import control
from ovsvnet.agent.metrics_export import (
    CLIENT_TIMEOUT,
    MAX_CLIENTS,
    HttpEndpoint,
    Textfile,
    check_textfile,
)
from ovsvnet.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def agent_status(**over) -> dict:
    status = {
        "system_id": "hv1", "tunnel_ip": "10.0.0.1", "group": "224.10.0.1:1798",
        "discovery": True, "insecure_discovery": False, "authenticated": True,
        "uptime": 12.5, "syncs": 7, "sync_errors": 1, "sync_seconds": 0.25,
        "last_sync_seconds": 0.01, "vswitchd_restarts": 2, "announcements_sent": 30,
        "peers": [{"origin": "hv2", "address": "10.0.0.2", "last_seen": 0.4},
                  {"origin": "hv3", "address": "10.0.0.3", "last_seen": None}],
        "static_peers": {"10.0.0.2": "hv2", "192.0.2.9": None},
        "rejected_peers": {"10.0.0.9": "no route"}, "id_clashes": [],
        "counters": {"received": 100, "applied": 60, "spoofed": 3, "decode_auth": 5,
                     "duplicate": 4, "expired": 1},
        "inventory": {"vnets": {"none": {"active": 2}, "auth": {"inactive": 1}},
                      "tunnels": {"none": {"up": 1, "down": 1}}},
        "registry": None,
    }
    status.update(over)
    return status


def sample(text: str, name: str, **labels: str) -> float:
    return metrics.parse_samples(text)[(name, tuple(sorted(labels.items())))]


def test_every_family_has_help_and_type_and_valid_names():
    text = metrics.render(agent_status(registry={"connected": True, "next_cfg": 9,
                                                 "applied_cfg": 7, "vnets": 3}), "0.1.0")
    helps = re.findall(r"^# HELP (\S+) \S", text, re.M)
    types = dict(re.findall(r"^# TYPE (\S+) (counter|gauge|summary)$", text, re.M))
    assert helps == list(types) and len(set(helps)) == len(helps)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        family = name.removesuffix("_sum").removesuffix("_count")
        assert family in types, line
        if types[family] == "counter":
            assert family.endswith("_total"), family
    series = [line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series))


def test_values_are_the_status_values():
    text = metrics.render(agent_status(), "0.1.0")
    assert sample(text, "ovsvnet_agent_announcements_dropped_total", reason="spoofed") == 3
    assert sample(text, "ovsvnet_agent_announcements_dropped_total", reason="decode_auth") == 5
    # every refusal reason is there from the start (rate() needs the zero)
    assert sample(text, "ovsvnet_agent_announcements_dropped_total", reason="future") == 0
    assert sample(text, "ovsvnet_agent_announcements_received_total") == 100
    assert sample(text, "ovsvnet_agent_discovery_events_total", event="applied") == 60
    assert sample(text, "ovsvnet_agent_peers", state="live") == 1
    assert sample(text, "ovsvnet_agent_peers", state="resumed") == 1
    assert sample(text, "ovsvnet_agent_static_peers", state="down") == 1
    assert sample(text, "ovsvnet_agent_sync_duration_seconds_count") == 8
    assert sample(text, "ovsvnet_agent_sync_duration_seconds_sum") == 0.25
    assert sample(text, "ovsvnet_agent_vswitchd_restarts_repaired_total") == 2
    assert sample(text, "ovsvnet_vnets", level="auth", state="inactive") == 1
    assert sample(text, "ovsvnet_vnets", level="conf", state="active") == 0
    assert sample(text, "ovsvnet_tunnels", level="none", state="down") == 1
    assert sample(text, "ovsvnet_agent_info", system_id="hv1", tunnel_ip="10.0.0.1",
                  version="0.1.0", discovery="authenticated") == 1
    assert "registry" not in text


def test_registry_connection_and_lag():
    text = metrics.render(agent_status(registry={
        "connected": False, "disconnects": 4, "next_cfg": 12, "applied_cfg": 9,
        "vnets": 5, "chassis": 3, "conflicts": {"0097": "local vnet"}, "publish_errors": 0}))
    assert sample(text, "ovsvnet_agent_registry_connected") == 0
    assert sample(text, "ovsvnet_agent_registry_lag") == 3
    assert sample(text, "ovsvnet_agent_registry_conflicts") == 1
    assert sample(text, "ovsvnet_agent_registry_disconnects_total") == 4


def test_hostile_label_values_are_escaped_and_parse_back():
    evil = 'a"b\\c\nd} x="1'
    text = metrics.render(agent_status(system_id=evil))
    assert sample(text, "ovsvnet_agent_info", system_id=evil, tunnel_ip="10.0.0.1",
                  version="", discovery="authenticated") == 1
    assert len([line for line in text.splitlines() if "ovsvnet_agent_info{" in line]) == 1


def test_drop_reasons_are_the_ones_status_prints():
    from ovsvnet.cli.host import DROP_REASONS
    assert metrics.DROP_REASONS == DROP_REASONS


def test_every_metric_is_documented():
    text = metrics.render(agent_status(registry={
        "connected": True, "connected_for": 1.0, "disconnects": 0, "next_cfg": 1,
        "applied_cfg": 1, "vnets": 1, "vnets_here": 1, "chassis": 1, "conflicts": {},
        "publish_errors": 0}))
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    documented = set(re.findall(r"^\| `(ovsvnet_[a-z_]+)` \|", DOC.read_text(), re.M))
    assert names == documented


@pytest.mark.parametrize(("text", "want"), [
    ("9798", ("127.0.0.1", 9798)), ("0.0.0.0:9798", ("0.0.0.0", 9798)),
    ("10.1.2.3:1", ("10.1.2.3", 1)), ("[::1]:9798", ("::1", 9798)),
])
def test_metrics_address(text, want):
    assert metrics.parse_address(text) == want


@pytest.mark.parametrize(("text", "words"), [
    (":9798", "0.0.0.0:9798 for every address"), ("localhost:9798", "is not PORT"),
    ("10.0.0.1:0", "not a TCP port"), ("10.0.0.1:99999", "not a TCP port"),
    ("::1:9798", "is not PORT"), ("", "is not PORT"), ("[::1]9798", "is not PORT"),
])
def test_bad_metrics_address(text, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as err:
        metrics.parse_address(text)
    assert str(err.value).startswith("metrics-address: ")


# -- the exporter's endpoint and textfile ----------------------------------------------------

def pump(endpoint: HttpEndpoint, until, timeout: float = 5.0):
    """Run the endpoint's turn until ``until()`` is truthy (what the agent's loop does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        endpoint.run(time.monotonic())
        got = until()
        if got:
            return got
        time.sleep(0.005)
    raise AssertionError("endpoint did not answer")


def reader(sock: socket.socket):
    sock.setblocking(False)
    buf = bytearray()

    def read():
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return None
        if chunk:
            buf.extend(chunk)
            return None
        return bytes(buf)  # closed by the server: the whole reply
    return read


def test_http_endpoint_answers_without_blocking_on_silent_clients():
    calls = []
    endpoint = HttpEndpoint(("127.0.0.1", 0), lambda: calls.append(1) or "# HELP x y\nx 1\n")
    try:
        silent = socket.create_connection(endpoint.address)  # connects, never sends
        silent.sendall(b"GET /metr")
        client = socket.create_connection(endpoint.address)
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        reply = pump(endpoint, reader(client))
        assert time.monotonic() - started < 1.0
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"version=0.0.4" in head
        assert body == b"# HELP x y\nx 1\n" and calls == [1]
        for request, code in ((b"GET / HTTP/1.0\r\n\r\n", b"200"),
                              (b"GET /other HTTP/1.0\r\n\r\n", b"404"),
                              (b"DELETE /metrics HTTP/1.0\r\n\r\n", b"405"),
                              (b"nonsense\r\n\r\n", b"400"),
                              (b"GET /" + b"a" * 9000, b"431")):
            c = socket.create_connection(endpoint.address)
            c.sendall(request)
            assert pump(endpoint, reader(c)).split(b" ")[1] == code, request[:20]
            c.close()
        # the silent client is dropped after its deadline, and only then
        assert len(endpoint.clients) == 1
        endpoint.run(time.monotonic() + CLIENT_TIMEOUT + 1)
        assert endpoint.clients == []
        silent.close()
        client.close()
    finally:
        endpoint.close()


def test_http_endpoint_caps_its_clients():
    endpoint = HttpEndpoint(("127.0.0.1", 0), lambda: "x 1\n")
    socks = []
    try:
        for _ in range(MAX_CLIENTS + 3):
            socks.append(socket.create_connection(endpoint.address, timeout=5))
            time.sleep(0.01)
            endpoint.run(time.monotonic())
        assert len(endpoint.clients) == MAX_CLIENTS and endpoint.refused == 3
    finally:
        for s in socks:
            s.close()
        endpoint.close()


def test_http_endpoint_port_in_use_is_one_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(Exception, match=f"metrics-address: cannot listen on "
                                            f"127.0.0.1:{port}: Address already in use"):
            HttpEndpoint(("127.0.0.1", port), lambda: "")


def test_textfile_is_replaced_atomically_and_removed(tmp_path):
    path = tmp_path / "ovsvnet.prom"
    texts = iter(["a 1\n", "a 2\n"])
    tf = Textfile(str(path), lambda: next(texts))
    tf.run(100.0)
    assert path.read_text() == "a 1\n" and oct(path.stat().st_mode & 0o777) == "0o644"
    tf.run(101.0)  # not due yet
    assert path.read_text() == "a 1\n"
    inode = path.stat().st_ino
    tf.run(200.0)
    assert path.read_text() == "a 2\n" and path.stat().st_ino != inode  # a new file, renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ovsvnet.prom"]
    tf.close()
    assert not path.exists()


def test_textfile_rules(tmp_path):
    assert check_textfile(str(tmp_path / "a.prom"))
    with pytest.raises(ConfigError, match="must end in .prom"):
        check_textfile(str(tmp_path / "a.txt"))
    with pytest.raises(ConfigError, match="does not exist"):
        check_textfile(str(tmp_path / "nope" / "a.prom"))


# -- the control socket's name -------------------------------------------------------------

def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_control_socket_is_found_as_ovs_appctl_finds_it(tmp_path):
    rundir = str(tmp_path)
    me = os.getpid()
    assert control.path_for(rundir) == f"{rundir}/ovsvnet-agent.{me}.ctl"
    assert control.find(rundir) is None
    (tmp_path / "ovsvnet-agent.ctl").touch()  # an agent from before the rename
    assert control.find(rundir) == f"{rundir}/ovsvnet-agent.ctl"
    # an agent with its pidfile elsewhere (--pidfile): the live pid's socket
    Path(control.socket_path(rundir, dead_pid())).touch()
    Path(control.socket_path(rundir, me)).touch()
    assert control.find(rundir) == control.socket_path(rundir, me)
    # the pidfile names it, as for ovs-appctl -t ovsvnet-agent
    (tmp_path / "ovsvnet-agent.pid").write_text(f"{os.getppid()}\n")
    Path(control.socket_path(rundir, os.getppid())).touch()
    assert control.find(rundir) == control.socket_path(rundir, os.getppid())
    assert control.find(rundir, "/x/y.ctl") == "/x/y.ctl"


def test_serving_removes_only_dead_agents_sockets(tmp_path):
    rundir = str(tmp_path)
    dead = Path(control.socket_path(rundir, dead_pid()))
    live = Path(control.socket_path(rundir, os.getppid()))
    dead.touch()
    live.touch()
    server = control.serve(control.path_for(rundir), {"ping": lambda argv: "pong"})
    try:
        assert not dead.exists() and live.exists()
        assert Path(control.path_for(rundir)).exists()
    finally:
        server.close()
    assert not Path(control.path_for(rundir)).exists()


def test_the_pidfile_is_one_ovs_appctl_trusts(tmp_path):
    """OVS's read_pidfile (here python-ovs's, the same check as ovs-appctl's C) accepts a
    pidfile only while the pid in it holds a POSIX lock on it: flock alone is "stale"."""
    from ovsvnet.system.proc import PidFile
    path = tmp_path / "ovsvnet-agent.pid"
    check = ("import sys, ovs.daemon; print(ovs.daemon.read_pidfile(sys.argv[1]))")

    def seen() -> int:
        return int(subprocess.run([sys.executable, "-c", check, str(path)], text=True,
                                  capture_output=True, check=True).stdout)

    lock = PidFile(path)
    lock.acquire()
    try:
        assert seen() == os.getpid()
    finally:
        lock.release()
    assert not path.exists()
