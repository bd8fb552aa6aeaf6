"""The lab itself: simulated hosts, segments, a router, guests, teardown and the sandbox CLI.

    segment s1: a, b            segment s2: c            router r joins s1 and s2

br-test is wired by hand with plain OVS commands (no ovsvnet): a star of VXLAN tunnels
a<->b (same segment) and a<->c (through the router). A star, not a full mesh: with
``actions=NORMAL`` a mesh of three floods broadcasts around the loop forever.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovsvnet.cli.lab import sandbox
from ovsvnet.lab import (
    Lab,
    LabError,
    LabHost,
    capture,
    have_root_and_ovs,
    netns_exists,
    pid_alive,
    tcp_transfer,
    udp_multicast,
)

# Most tests build labs and are marked ``root`` one by one (tests/conftest.py skips them
# without root); the parsing, help and error-message tests run everywhere.

GUEST_MTU = 1450  # 1500-byte underlay minus 50 bytes of VXLAN encapsulation


def _wire_vxlan(host: LabHost, peers: list[LabHost]) -> None:
    host.vsctl("add-br", "br-test", "--", "set", "bridge", "br-test",
               "datapath_type=netdev", "fail_mode=secure")
    for peer in peers:
        port = f"vx-{peer.name}"
        host.vsctl("add-port", "br-test", port, "--", "set", "interface", port,
                   "type=vxlan", f"options:remote_ip={peer.address}")
    host.ofctl("add-flow", "br-test", "actions=NORMAL")


@pytest.fixture(scope="module")
def wan():
    with Lab() as lab:
        lab.add_segment("s1")
        lab.add_segment("s2")
        a = lab.add_host("a", "s1")
        b = lab.add_host("b", "s1")
        lab.add_router("r", ["s1", "s2"])  # after a and b: their default routes are added late
        c = lab.add_host("c", "s2")
        _wire_vxlan(a, [b, c])
        _wire_vxlan(b, [a])
        _wire_vxlan(c, [a])
        for n, h in enumerate((a, b, c), 1):
            lab.add_guest(f"g{h.name}", h.name, "br-test", ip=f"192.168.97.{n}/24",
                          mtu=GUEST_MTU)
        yield lab


@pytest.mark.root
def test_hosts_are_separate_ovs_instances(wan):
    for h in wan.hosts.values():
        assert h.netns == f"{wan.prefix}-{h.name}" and netns_exists(h.netns)
        assert h.db == f"unix:{wan.workdir / h.name / 'db.sock'}"
        assert set(h.vsctl("list-br").split()) == {"br-phy", "br-test"}
        def ext(key: str, h: LabHost = h) -> str:
            return h.vsctl("get", "Open_vSwitch", ".", f"external_ids:{key}").strip().strip('"')

        assert ext("system-id") == h.system_id == f"{wan.prefix}-{h.name}"
        assert ext("hostname") == h.name
        assert h.vsctl("get", "bridge", "br-phy", "datapath_type").strip() == "netdev"
        assert h.vsctl("get", "bridge", "br-phy", "fail_mode").strip() == "secure"
        assert f"inet {h.address}/24" in h.run("ip", "-4", "addr", "show", "br-phy").stdout
        # commands run with the host's environment find its own daemons
        assert h.run("printenv", "OVS_RUNDIR").stdout.strip() == str(h.dir)
        assert h.run("printenv", "OVSVNET_DB").stdout.strip() == h.db
        assert "br-phy" in h.appctl("ovs/route/show")
    g = wan.guest("ga")
    tag = wan.host("a").vsctl("get", "interface", g.port, "external_ids:ovsvnet-guest")
    assert tag.strip().strip('"') == "ga"
    assert g.port == "g-ga" and g.addr == "192.168.97.1"
    eth0 = g.run("ip", "-o", "link", "show", "eth0").stdout
    assert g.mac in eth0 and f"mtu {GUEST_MTU}" in eth0
    assert "tx-checksumming: off" in g.run("ethtool", "-k", "eth0").stdout


@pytest.mark.root
def test_underlay_routes_between_segments(wan):
    a, b, c = (wan.host(n) for n in "abc")
    for src, dst in ((a, b), (a, c), (c, b)):
        assert src.run("ping", "-n", "-c", "2", "-i", "0.2", "-w", "5", dst.address,
                       check=False).returncode == 0, f"{src.name} -> {dst.name}"
    assert "via 10.77.2.254" in c.run("ip", "route", "show", "default").stdout
    assert "via 10.77.1.254" in a.run("ip", "route", "show", "default").stdout  # added late


@pytest.mark.root
def test_vxlan_on_one_segment_carries_ping_and_tcp(wan):
    ga, gb = wan.guest("ga"), wan.guest("gb")
    assert ga.ping(gb.addr, count=3, timeout=10)
    assert tcp_transfer(ga, gb, nbytes=2_000_000, timeout=20) == 2_000_000


@pytest.mark.root
def test_vxlan_across_the_router_carries_ping_and_tcp(wan):
    ga, gc = wan.guest("ga"), wan.guest("gc")
    assert gc.ping(ga.addr, count=3, timeout=10)
    assert tcp_transfer(gc, ga, nbytes=2_000_000, timeout=20) == 2_000_000
    # on c's wire: each echo request and reply is one VXLAN packet from/to a's address
    a, c = wan.host("a"), wan.host("c")
    with capture(c, "eth0", "udp port 4789 and host " + a.address, timeout=10) as wire:
        assert gc.ping(ga.addr, count=3, timeout=10)
    echoes = [ln for ln in wire.lines if "ICMP echo" in ln]
    assert len(echoes) == 6, wire.raw
    assert all("VXLAN" in ln for ln in echoes)
    sources = [re.search(r" (\d+\.\d+\.\d+\.\d+)\.\d+ > ", ln).group(1) for ln in echoes]
    assert sorted(sources) == sorted([a.address] * 3 + [c.address] * 3), wire.lines


def test_capture_joins_continuation_lines():
    from ovsvnet.lab.traffic import _packets

    raw = ["12:00:00.000001 a > b: VXLAN", "x > y: ARP", "12:00:00.000002 c > d: UDP",
           "    detail"]
    assert _packets(raw) == ["12:00:00.000001 a > b: VXLAN | x > y: ARP",
                             "12:00:00.000002 c > d: UDP | detail"]
    assert _packets(["no timestamp", "second"]) == ["no timestamp", "second"]


@pytest.mark.root
def test_multicast_floods_the_segment_but_does_not_cross_the_router(wan):
    a, b, c = (wan.host(n) for n in "abc")
    got = udp_multicast(a, [b, c], group="224.10.0.1", port=1798, count=5, ttl=8, timeout=1.5)
    assert got == {"b": 5, "c": 0}
    # and the other way: c's multicast reaches nobody on s1
    got = udp_multicast(c, [a, b], count=3, timeout=1)
    assert got == {"a": 0, "b": 0}


@pytest.mark.root
def test_daemons_restart_and_traffic_resumes(lab):
    lab.add_segment("s1")
    a, b = lab.add_host("a", "s1"), lab.add_host("b", "s1")
    _wire_vxlan(a, [b])
    _wire_vxlan(b, [a])
    ga = lab.add_guest("ga", "a", "br-test", ip="192.168.98.1/24", mtu=GUEST_MTU)
    gb = lab.add_guest("gb", "b", "br-test", ip="192.168.98.2/24", mtu=GUEST_MTU)
    assert ga.ping(gb.addr, count=1)
    old = b.vswitchd_pid()
    b.restart_vswitchd()  # flows are lost; the lab restores br-phy's, the test br-test's
    assert b.vswitchd_pid() not in (None, old)
    b.ofctl("add-flow", "br-test", "actions=NORMAL")
    assert ga.ping(gb.addr, count=2)
    b.stop_vswitchd(cleanup=True)  # removes the taps: br-phy loses its address
    assert not b.link_exists("br-phy")
    b.start_vswitchd()
    assert f"inet {b.address}/" in b.run("ip", "-4", "addr", "show", "br-phy").stdout
    b.ofctl("add-flow", "br-test", "actions=NORMAL")
    assert ga.ping(gb.addr, count=2)
    b.restart_ovsdb()
    assert b.alive() == {"ovsdb-server": True, "ovs-vswitchd": True}
    assert "br-test" in b.vsctl("list-br")
    assert ga.ping(gb.addr, count=2)
    # a guest moves to a; same MAC and IP, now local to ga; its gratuitous ARP makes a's
    # br-test forget that the MAC was behind vx-b
    mac = gb.mac
    gb = lab.move_guest("gb", "a", announce=True)
    assert (gb.host, gb.mac) == ("a", mac) and gb.port in a.vsctl("list-ports", "br-test")
    assert gb.port not in b.vsctl("list-ports", "br-test")
    assert ga.ping(gb.addr, count=2)
    problems = [p for h in (a, b) for p in h.log_problems(
        allow=[r"Network is down", r"connection dropped", r"No such device",
               r"receive error on g-gb", r"(send|receiv)ing .* on g-gb", r"Broken pipe",
               r"refused", r"Connection reset by peer",
               # a VXLAN frame from a can arrive while b's restarted vswitchd is still
               # adding br-test's tunnel port back (it is dropped, and the next one passes)
               r"receive tunnel port not found"])]
    assert not problems, problems


def _leftovers(prefix: str, pids: list[int]) -> tuple[list[str], list[int]]:
    ns = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                    check=True).stdout.split() if n.startswith(prefix + "-")]
    return ns, [p for p in pids if pid_alive(p)]


def _pids(lab: Lab) -> list[int]:
    pids = [p for h in lab.hosts.values() for p in (h.ovsdb_pid(), h.vswitchd_pid())]
    assert all(pids) and len(pids) == 2 * len(lab.hosts)
    return pids  # type: ignore[return-value]


@pytest.mark.root
def test_down_leaves_nothing_behind():
    lab = Lab()
    try:
        lab.add_segment("s1")
        lab.add_host("h1", "s1")
        lab.add_host("h2", "s1")
        lab.add_plain_host("p1", "s1")
        lab.hosts["h1"].vsctl("add-br", "br-x", "--", "set", "bridge", "br-x",
                              "datapath_type=netdev")
        lab.add_guest("g1", "h1", "br-x", ip="192.168.99.1/24")
        pids = _pids(lab)
        assert len(lab.namespaces) == 5
    finally:
        lab.down()
    assert _leftovers(lab.prefix, pids) == ([], [])
    assert not lab.workdir.exists()
    lab.down()  # idempotent


@pytest.mark.root
def test_teardown_runs_when_the_body_raises():
    with pytest.raises(RuntimeError, match="boom"), Lab() as lab:
        lab.add_segment("s1")
        lab.add_host("h1", "s1")
        pids = _pids(lab)
        raise RuntimeError("boom")
    assert _leftovers(lab.prefix, pids) == ([], [])
    assert not lab.workdir.exists()


@pytest.mark.root
def test_failed_build_is_torn_down_and_names_are_checked(lab):
    lab.add_segment("s1")
    with pytest.raises(LabError):
        lab.add_host("s1", "s1")  # name taken by the segment
    with pytest.raises(LabError):
        lab.add_host("bad name", "s1")
    with pytest.raises(LabError, match="not in segment"):
        lab.add_host("h1", "s1", address="10.1.2.3")
    with pytest.raises(LabError):
        lab.add_guest("g1", "nohost", "br-x")
    assert list(lab.hosts) == [] and list(lab.guests) == []


@pytest.mark.root
def test_state_file_round_trip_tears_down_from_another_object():
    lab = Lab()
    try:
        lab.add_segment("s1")
        h = lab.add_host("h1", "s1")
        path = lab.save_state()
        pids = _pids(lab)
        again = Lab.load(path)
        assert again.host("h1").db == h.db and again.namespaces == lab.namespaces
        again.down()
        assert _leftovers(lab.prefix, pids) == ([], [])
    finally:
        lab.down()
    assert not lab.workdir.exists()


# ---- the CLI -------------------------------------------------------------------------------


def test_cli_help_needs_no_root():
    runner = CliRunner()
    for args in ([], ["up"], ["down"], ["status"], ["exec"]):
        result = runner.invoke(sandbox, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example" in result.output


def test_cli_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(sandbox, ["--state-dir", str(tmp_path), "status"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: no sandbox is up (state dir {tmp_path})"]


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ovsvnet", "sandbox", "--state-dir", str(state_dir), *args],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.root
def test_cli_up_status_exec_down():
    state_dir = Path(tempfile.mkdtemp(prefix="ovlcli", dir="/tmp"))
    runner = CliRunner()
    try:
        result = runner.invoke(sandbox, ["--state-dir", str(state_dir), "up", "--hosts", "2"])
        assert result.exit_code == 0, result.output
        lab = Lab.load(state_dir / "default" / "lab.json")
        h1 = lab.host("h1")
        assert f"--db {h1.db}" in result.output
        assert "ovsvnet sandbox exec h1 -- ovs-vsctl show" in result.output

        again = runner.invoke(sandbox, ["--state-dir", str(state_dir), "up"])
        assert again.exit_code == 1 and "already up" in again.output

        result = runner.invoke(sandbox, ["--state-dir", str(state_dir), "status", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["healthy"] and set(data["hosts"]) == {"h1", "h2"}

        proc = _cli(state_dir, "exec", "h1", "--", "ovs-vsctl", "show")
        assert proc.returncode == 0 and "br-phy" in proc.stdout, proc.stderr
        proc = _cli(state_dir, "exec", "default", "h2", "--", "ovs-appctl", "-t",
                    "ovs-vswitchd", "ovs/route/show")
        assert proc.returncode == 0 and "br-phy" in proc.stdout, proc.stderr
        proc = _cli(state_dir, "exec", "h2", "--", "ping", "-n", "-c", "1", "-w", "5",
                    h1.address)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        proc = _cli(state_dir, "exec", "h2", "--", "sh", "-c", "exit 7")
        assert proc.returncode == 7
        proc = _cli(state_dir, "exec", "nosuch", "--", "true")
        assert proc.returncode == 4 and "no host, guest" in proc.stderr

        result = runner.invoke(sandbox, ["--state-dir", str(state_dir), "down"])
        assert result.exit_code == 0, result.output
        assert not (state_dir / "default").exists()
        assert _leftovers(lab.prefix, []) == ([], [])
        assert not any(h.ovsdb_pid() or h.vswitchd_pid() for h in lab.hosts.values())
    finally:
        state = state_dir / "default" / "lab.json"
        if state.exists():
            Lab.load(state).down()
        shutil.rmtree(state_dir, ignore_errors=True)


class _Item:
    """Just enough of a pytest item for the collection hook."""

    def __init__(self, *marks: pytest.MarkDecorator):
        self.marks = [m.mark for m in marks]

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return next((m for m in self.marks if m.name == name), None)

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.marks.append(marker.mark)


def test_root_tests_skip_cleanly_without_root(monkeypatch):
    from tests.conftest import pytest_collection_modifyitems

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert not have_root_and_ovs()
    root, plain = _Item(pytest.mark.root), _Item()
    pytest_collection_modifyitems(None, [root, plain])  # type: ignore[arg-type]
    assert [m.name for m in root.marks] == ["root", "skip"]
    assert plain.marks == []


@pytest.mark.root
def test_keep_env_keeps_workdir(monkeypatch):
    monkeypatch.setenv("OVSVNET_KEEP_LAB", "1")
    lab = Lab()
    try:
        lab.add_segment("s1")
    finally:
        lab.down()
    try:
        assert lab.keep and lab.workdir.exists()
        assert _leftovers(lab.prefix, []) == ([], [])
    finally:
        shutil.rmtree(lab.workdir, ignore_errors=True)
    assert os.environ["OVSVNET_KEEP_LAB"] == "1"
