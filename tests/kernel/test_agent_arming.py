"""The agent's arming check (``Agent._check_arming``) as pure logic: no root, no OVS, no
kernel. It runs in the normal suite too (it needs nothing the lane has); the kernel lane's
``test_the_agent_disarms_when_charon_stops_before_its_first_check`` is the same case on a
real kernel.

Issue 14: the reduced lane's agent never disarmed h2's secure tunnels after h2's charon
stopped. Its first pass armed them (charon up); charon stopped before its first arming
check; that check, having no earlier look to compare with, assumed the flows agreed and
asked for no pass, and every later look equalled the first. The check must compare what the
kernel allows with what the installed flows arm.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ovsvnet import flows as F
from ovsvnet import ipsec
from ovsvnet import model as M
from ovsvnet.agent import core
from ovsvnet.agent.core import Agent
from ovsvnet.system import flowstore

PEER = "10.77.1.1"
GN, GR, VX = "gn-0a4d0101", "gr-0a4d0101", "vx-0a4d0101"
LEVEL = {GN: "auth", GR: "conf", VX: "none"}
OFPORT = {VX: 4, GN: 5, GR: 6}
BOTH = frozenset({GN, GR})
NONE: frozenset[str] = frozenset()


def _transport(ofports: dict[str, int | None]) -> SimpleNamespace:
    ports = [SimpleNamespace(name=name, interfaces=[SimpleNamespace(
                                 ofport=[ofp] if ofp is not None else [])],
                             external_ids={M.ROLE: M.ROLE_TUNNEL, M.PORT_LEVEL: LEVEL[name],
                                           M.PORT_PEER: PEER})
             for name, ofp in ofports.items()]
    return SimpleNamespace(name=M.TRANSPORT_BRIDGE, ports=ports,
                           external_ids={M.ROLE: M.ROLE_TRANSPORT})


def _flows(armed: frozenset[str]) -> list[F.Flow]:
    """The transport bridge's flows a pass installs with these secure ports armed: like
    apply_flows, an unarmed secure port gets no flow at all."""
    tunnels = [F.TunnelPort(PEER, OFPORT[VX], None, 0)]
    tunnels += [F.TunnelPort(PEER, OFPORT[n] or 0, None, ipsec.LEVEL_CODES[LEVEL[n]])
                for n in sorted(armed)]
    vnets = [F.VnetPort(0x98, 2, ipsec.LEVEL_CODES["auth"]),
             F.VnetPort(0x99, 3, ipsec.LEVEL_CODES["conf"])]
    return F.transport_flows(vnets, tunnels)


class _Checker:
    """An Agent with only what the arming check reads (no OVSDB, sockets or discovery);
    ``look`` is what secure_arming would find in the kernel now. Passes leave their record
    of the installed flows (ovsvnet.system.flowstore) in a temporary run directory."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rundir: Path,
                 ofports: dict[str, int | None] | None = None):
        transport = _transport(OFPORT if ofports is None else ofports)
        db = SimpleNamespace(bridge=lambda name: transport
                             if name == M.TRANSPORT_BRIDGE else None)
        self.rundir = str(rundir)
        self.agent = Agent.__new__(Agent)
        self.agent.host = SimpleNamespace(db=db, rundir=self.rundir)  # type: ignore
        self.agent.db = db  # type: ignore[assignment]
        self.agent.armed = None
        self.agent.dirty = False
        self.look = NONE
        monkeypatch.setattr(core, "secure_arming", lambda host: self.look)

    def passed(self, armed: frozenset[str]) -> None:
        """A pass (the agent's or a command's) installed flows arming ``armed``."""
        flows = {(f.table, f.priority, f.match): f.render() for f in _flows(armed)}
        flowstore.save(self.rundir, M.TRANSPORT_BRIDGE, flowstore.Record("vswitchd 1", flows))
        self.agent.dirty = False

    def check(self, look: frozenset[str]) -> bool:
        """One periodic check seeing ``look``; whether it asked for a pass."""
        self.look = look
        self.agent._check_arming()
        return self.agent.dirty


def test_the_first_check_disarms_what_the_first_pass_armed(monkeypatch, tmp_path) -> None:
    """The lane's failure: first pass with charon up, charon stops, then the first check."""
    c = _Checker(monkeypatch, tmp_path)
    c.passed(BOTH)
    assert c.check(NONE), "the first check left the secure tunnels armed without policies"
    c.passed(NONE)  # that pass disarmed them: no more passes
    assert not c.check(NONE)


def test_the_first_check_rearms_what_the_first_pass_left_disarmed(monkeypatch, tmp_path) -> None:
    c = _Checker(monkeypatch, tmp_path)
    c.passed(NONE)  # charon had not routed the tunnels yet
    assert c.check(BOTH)


def test_a_pass_between_two_checks_that_saw_the_same_is_corrected(monkeypatch, tmp_path) -> None:
    """A pass for something else (an OVSDB change) ran while charon was briefly away; the
    next check sees what the check before it saw: the flows still differ."""
    c = _Checker(monkeypatch, tmp_path)
    c.passed(BOTH)
    c.check(BOTH)
    c.passed(BOTH)  # steady: charon up, tunnels armed, one look taken
    c.passed(NONE)
    assert c.check(BOTH), "the flows stayed disarmed with the policies in place"
    c.passed(BOTH)
    c.check(NONE)
    c.passed(BOTH)  # and the other way round: charon came back for that pass only
    assert c.check(NONE), "the flows stayed armed without policies"


def test_checks_that_agree_with_the_flows_cost_no_pass(monkeypatch, tmp_path) -> None:
    c = _Checker(monkeypatch, tmp_path)
    c.passed(BOTH)
    assert not any(c.check(BOTH) for _ in range(3))
    # the userspace datapath, or no secure vnet: nothing is ever armed
    c = _Checker(monkeypatch, tmp_path)
    c.passed(NONE)
    assert not any(c.check(NONE) for _ in range(3))


def test_a_port_without_an_openflow_port_does_not_cause_a_pass_every_check(
        monkeypatch, tmp_path) -> None:
    """ovs-vswitchd could not create gr-: no pass can give it flows, so it is not counted."""
    c = _Checker(monkeypatch, tmp_path, {VX: 4, GN: 5, GR: None})
    c.passed(frozenset({GN}))
    assert not c.check(BOTH)


def test_without_a_record_of_the_flows_the_first_check_asks_for_a_pass(
        monkeypatch, tmp_path) -> None:
    """No record (no ovs-vswitchd pidfile to tie one to): what the flows arm is unknown, so
    the first look asks for a pass; later ones compare looks."""
    c = _Checker(monkeypatch, tmp_path)
    assert c.check(NONE)
    c.agent.dirty = False
    assert not c.check(NONE)
    assert c.check(BOTH)
