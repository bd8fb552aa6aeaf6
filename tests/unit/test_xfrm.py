"""The kernel's IPsec policies: parsing ``ip xfrm policy``, whether a tunnel's are in place,
and ovsvnet's guard (pure parts; the runner is injected),
without root: ``ip`` is never run here."""

from __future__ import annotations

import re
import subprocess

import pytest

from ovsvnet.errors import OvsvnetError
from ovsvnet.system import xfrm

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
# what ``ip xfrm policy`` shows once xfrm.ensure(..., True) ran (kernel 6.18)
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
    assert [(p.family, p.proto, p.dport) for p in xfrm.POLICIES] == [
        (4, "udp", 6081), (4, "gre", None), (6, "udp", 6081), (6, "gre", None)]
    assert xfrm.POLICIES[0].update_argv() == [
        "ip", "xfrm", "policy", "update", "src", "0.0.0.0/0", "dst", "0.0.0.0/0",
        "proto", "udp", "dport", "6081", "dir", "out", "mark", "0x1", "mask", "0xffffffff",
        "action", "block", "priority", "1000000"]
    assert xfrm.POLICIES[3].delete_argv() == [
        "ip", "xfrm", "policy", "delete", "src", "::/0", "dst", "::/0", "proto", "gre",
        "dir", "out", "mark", "0x1", "mask", "0xffffffff"]
    # strongSwan's priorities are smaller numbers (= higher precedence) than the guard's
    prios = [int(n) for n in re.findall(r"priority (\d+)", CHARON)]
    assert prios and max(prios) < xfrm.PRIORITY


def test_the_monitors_shunts_are_not_the_guard() -> None:
    """Same selector and direction as the GRE shunt, but another mask: another policy."""
    assert xfrm.missing(CHARON) == list(xfrm.POLICIES)
    assert not xfrm.complete(CHARON)
    assert xfrm.complete(CHARON + GUARD)
    assert xfrm.complete(GUARD)
    assert xfrm.missing(GUARD.split("src 0.0.0.0/0 dst 0.0.0.0/0 proto gre")[0]) == [
        xfrm.POLICIES[0], xfrm.POLICIES[1]]


def test_plan_installs_what_is_missing_and_removes_what_is_there() -> None:
    assert xfrm.plan(GUARD, True) == []
    assert xfrm.plan("", False) == []
    assert xfrm.plan(CHARON, True) == [p.update_argv() for p in xfrm.POLICIES]
    assert xfrm.plan(CHARON + GUARD, False) == [
        p.delete_argv() for p in xfrm.POLICIES]


def _runner(calls: list[list[str]], rc: int = 0, stdout: str = ""):
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, rc, stdout, "boom" if rc else "")
    return run


def test_ensure_and_read_use_the_runner_and_report_failures() -> None:
    calls: list[list[str]] = []
    done = xfrm.ensure("", True, run=_runner(calls))
    assert len(done) == 4 and calls == [p.update_argv() for p in xfrm.POLICIES]
    assert xfrm.read_policies(run=_runner([], stdout=GUARD)) == GUARD
    with pytest.raises(OvsvnetError, match="boom"):
        xfrm.ensure("", True, run=_runner([], rc=2))
    with pytest.raises(OvsvnetError, match="boom"):
        xfrm.read_policies(run=_runner([], rc=1))


PEER = "192.0.2.2"


# -- kernel policies ------------------------------------------------------------------------

XFRM = """\
src 192.0.2.1/32 dst 192.0.2.2/32 proto udp dport 6081
\tdir out priority 366463 ptype main
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 1 mode transport
src 192.0.2.1/32 dst 192.0.2.2/32 proto udp sport 6081
\tdir out priority 366463 ptype main
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 2 mode transport
src 192.0.2.2/32 dst 192.0.2.1/32 proto udp sport 6081
\tdir in priority 366463 ptype main
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 1 mode transport
src 192.0.2.2/32 dst 192.0.2.1/32 proto udp dport 6081
\tdir in priority 366463 ptype main
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 2 mode transport
src 192.0.2.1/32 dst 192.0.2.2/32 proto gre
\tdir out priority 366975 ptype main
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 3 mode transport
src 0.0.0.0/0 dst 0.0.0.0/0
\tsocket in priority 0 ptype main
"""


def test_policies_installed():
    assert xfrm.policies_installed("none", PEER, "")
    assert xfrm.policies_installed("auth", PEER, XFRM)
    assert not xfrm.policies_installed("auth", "192.0.2.3", XFRM)
    assert not xfrm.policies_installed("conf", PEER, XFRM), "the inbound GRE policy is missing"
    gre_in = ("src 192.0.2.2/32 dst 192.0.2.1/32 proto gre\n\tdir in priority 1 ptype main\n"
              "\ttmpl src 0.0.0.0 dst 0.0.0.0\n\t\tproto esp reqid 3 mode transport\n")
    assert xfrm.policies_installed("conf", PEER, XFRM + gre_in)
    # a block (drop) policy is not an ESP policy
    shunt = XFRM.replace("proto esp reqid 2", "proto xx reqid 2")
    assert not xfrm.policies_installed("auth", PEER, shunt)
