"""ovsvnet's xfrm guard (pure parts) and the arming gate of secure tunnels (ops.secure_arming),
without root: ``ip`` is never run here."""

from __future__ import annotations

import re
import subprocess
from types import SimpleNamespace

import pytest

from ovsvnet import model as M
from ovsvnet import ops, xfrm_guard
from ovsvnet.errors import OvsvnetError

# ``ip xfrm policy`` on a kernel-lane host: charon's ESP policies for the Geneve (auth) and
# GRE (conf) tunnels to 10.77.1.2 and the monitor's shunts (mark 1/1).
CHARON = """\
src 10.77.1.1/32 dst 10.77.1.2/32 proto udp dport 6081 
\tdir out priority 366912 ptype main 
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 3 mode transport
src 10.77.1.2/32 dst 10.77.1.1/32 proto udp sport 6081 
\tdir in priority 366912 ptype main 
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 3 mode transport
src 10.77.1.1/32 dst 10.77.1.2/32 proto udp sport 6081 
\tdir out priority 366912 ptype main 
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 2 mode transport
src 10.77.1.2/32 dst 10.77.1.1/32 proto udp dport 6081 
\tdir in priority 366912 ptype main 
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 2 mode transport
src 10.77.1.1/32 dst 10.77.1.2/32 proto gre 
\tdir out priority 366976 ptype main 
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 1 mode transport
src 10.77.1.2/32 dst 10.77.1.1/32 proto gre 
\tdir in priority 366976 ptype main 
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 1 mode transport
src 0.0.0.0/0 dst 0.0.0.0/0 proto udp sport 6081 
\tdir out action block priority 599679 ptype main 
\tmark 0x1/0x1 
src 0.0.0.0/0 dst 0.0.0.0/0 proto gre 
\tdir out action block priority 599743 ptype main 
\tmark 0x1/0x1 
"""
# what ``ip xfrm policy`` shows once xfrm_guard.ensure(..., True) ran (kernel 6.18)
GUARD = """\
src ::/0 dst ::/0 proto gre 
\tdir out action block priority 1000000 ptype main 
\tmark 0x1/0xffffffff 
src ::/0 dst ::/0 proto udp dport 6081 
\tdir out action block priority 1000000 ptype main 
\tmark 0x1/0xffffffff 
src 0.0.0.0/0 dst 0.0.0.0/0 proto gre 
\tdir out action block priority 1000000 ptype main 
\tmark 0x1/0xffffffff 
src 0.0.0.0/0 dst 0.0.0.0/0 proto udp dport 6081 
\tdir out action block priority 1000000 ptype main 
\tmark 0x1/0xffffffff 
"""


def test_the_guard_blocks_marked_geneve_and_gre_out_with_the_lowest_precedence() -> None:
    assert [(p.family, p.proto, p.dport) for p in xfrm_guard.POLICIES] == [
        (4, "udp", 6081), (4, "gre", None), (6, "udp", 6081), (6, "gre", None)]
    assert xfrm_guard.POLICIES[0].update_argv() == [
        "ip", "xfrm", "policy", "update", "src", "0.0.0.0/0", "dst", "0.0.0.0/0",
        "proto", "udp", "dport", "6081", "dir", "out", "mark", "0x1", "mask", "0xffffffff",
        "action", "block", "priority", "1000000"]
    assert xfrm_guard.POLICIES[3].delete_argv() == [
        "ip", "xfrm", "policy", "delete", "src", "::/0", "dst", "::/0", "proto", "gre",
        "dir", "out", "mark", "0x1", "mask", "0xffffffff"]
    # strongSwan's priorities are smaller numbers (= higher precedence) than the guard's
    prios = [int(n) for n in re.findall(r"priority (\d+)", CHARON)]
    assert prios and max(prios) < xfrm_guard.PRIORITY


def test_the_monitors_shunts_are_not_the_guard() -> None:
    """Same selector and direction as the GRE shunt, but another mask: another policy."""
    assert xfrm_guard.missing(CHARON) == list(xfrm_guard.POLICIES)
    assert not xfrm_guard.complete(CHARON)
    assert xfrm_guard.complete(CHARON + GUARD)
    assert xfrm_guard.complete(GUARD)
    assert xfrm_guard.missing(GUARD.split("src 0.0.0.0/0 dst 0.0.0.0/0 proto gre")[0]) == [
        xfrm_guard.POLICIES[0], xfrm_guard.POLICIES[1]]


def test_plan_installs_what_is_missing_and_removes_what_is_there() -> None:
    assert xfrm_guard.plan(GUARD, True) == []
    assert xfrm_guard.plan("", False) == []
    assert xfrm_guard.plan(CHARON, True) == [p.update_argv() for p in xfrm_guard.POLICIES]
    assert xfrm_guard.plan(CHARON + GUARD, False) == [
        p.delete_argv() for p in xfrm_guard.POLICIES]


def _runner(calls: list[list[str]], rc: int = 0, stdout: str = ""):
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, rc, stdout, "boom" if rc else "")
    return run


def test_ensure_and_read_use_the_runner_and_report_failures() -> None:
    calls: list[list[str]] = []
    done = xfrm_guard.ensure("", True, run=_runner(calls))
    assert len(done) == 4 and calls == [p.update_argv() for p in xfrm_guard.POLICIES]
    assert xfrm_guard.read_policies(run=_runner([], stdout=GUARD)) == GUARD
    with pytest.raises(OvsvnetError, match="boom"):
        xfrm_guard.ensure("", True, run=_runner([], rc=2))
    with pytest.raises(OvsvnetError, match="boom"):
        xfrm_guard.read_policies(run=_runner([], rc=1))


# -- ops.secure_arming ----------------------------------------------------------------------

def _port(name: str, level: str, peer: str = "10.77.1.2") -> SimpleNamespace:
    return SimpleNamespace(name=name, external_ids={
        M.ROLE: M.ROLE_TUNNEL, M.PORT_LEVEL: level, M.PORT_PEER: peer})


TRANSPORT = SimpleNamespace(ports=[_port("vx-0a4d0102", "none"), _port("gn-0a4d0102", "auth"),
                                   _port("gr-0a4d0102", "conf"),
                                   _port("gr-0a4d0103", "conf", "10.77.1.3")])


@pytest.fixture
def xfrm(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Fake xfrm tables for ops: ``state["text"]`` is what ``ip xfrm policy`` shows."""
    st: dict = {"text": "", "reads": 0, "ensured": [], "datapath": "system"}

    def read() -> str:
        st["reads"] += 1
        return st["text"]

    def ensure(text: str, wanted: bool) -> list[str]:
        st["ensured"].append(wanted)
        st["text"] = (text + GUARD) if wanted else text.replace(GUARD, "")
        return []

    monkeypatch.setattr(ops.xfrm_guard, "read_policies", read)
    monkeypatch.setattr(ops.xfrm_guard, "ensure", ensure)
    monkeypatch.setattr(ops.state, "datapath_type", lambda db: st["datapath"])
    return st


HOST = ops.Host(db=None, rundir="/nonexistent")  # type: ignore[arg-type]


def test_off_the_kernel_datapath_nothing_is_armed_and_xfrm_is_never_touched(xfrm) -> None:
    xfrm["datapath"] = "netdev"
    xfrm["text"] = CHARON + GUARD
    for want in (True, False, None):
        assert ops.secure_arming(HOST, TRANSPORT, want_guard=want) == frozenset()
    assert xfrm["reads"] == 0 and xfrm["ensured"] == []


def test_a_secure_port_is_armed_only_with_its_policies_and_the_guard(xfrm) -> None:
    failed: list[str] = []
    # charon's policies for 10.77.1.2 (not .3) are there; the pass installs the guard
    xfrm["text"] = CHARON
    armed = ops.secure_arming(HOST, TRANSPORT, want_guard=True, failed=failed)
    assert armed == {"gn-0a4d0102", "gr-0a4d0102"} and failed == []
    assert xfrm["ensured"] == [True]
    # the agent's look: guard there, policies there -> the same set, nothing changed
    assert ops.secure_arming(HOST, TRANSPORT) == armed and xfrm["ensured"] == [True]
    # charon stopped: its policies went, the guard stays -> nothing armed
    xfrm["text"] = GUARD
    assert ops.secure_arming(HOST, TRANSPORT) == frozenset()
    # guard gone (someone flushed xfrm), policies back -> not armed until a pass reinstalls
    xfrm["text"] = CHARON
    assert ops.secure_arming(HOST, TRANSPORT) == frozenset()
    assert ops.secure_arming(HOST, TRANSPORT, want_guard=True) == armed


def test_no_secure_vnet_left_removes_the_guard_and_arms_nothing(xfrm) -> None:
    xfrm["text"] = CHARON + GUARD
    assert ops.secure_arming(HOST, SimpleNamespace(ports=[]), want_guard=False) == frozenset()
    assert xfrm["ensured"] == [False] and not xfrm_guard.complete(xfrm["text"])
    xfrm["text"] = CHARON + GUARD
    assert ops.secure_arming(HOST, TRANSPORT, want_guard=False) == frozenset()


def test_an_xfrm_failure_arms_nothing_and_is_reported(xfrm, monkeypatch) -> None:
    def broken() -> str:
        raise OvsvnetError("xfrm guard: ip xfrm policy: no")
    monkeypatch.setattr(ops.xfrm_guard, "read_policies", broken)
    failed: list[str] = []
    assert ops.secure_arming(HOST, TRANSPORT, want_guard=True, failed=failed) == frozenset()
    assert failed == ["xfrm guard: ip xfrm policy: no"]
    failed.clear()  # a host without secure vnets does not complain about xfrm
    assert ops.secure_arming(HOST, SimpleNamespace(ports=[]), want_guard=False,
                             failed=failed) == frozenset()
    assert failed == []
