"""The arming gate of secure tunnels (:func:`ovsvnet.ops.sync.secure_arming`), with the
kernel's xfrm tables faked: a secure port carries traffic only while its IPsec policies and
ovsvnet's guard are in place."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ovsvnet import model as M
from ovsvnet.errors import OvsvnetError
from ovsvnet.ops import sync
from ovsvnet.ops.host import Host
from ovsvnet.system import xfrm as xfrm_guard

from .test_xfrm import CHARON, GUARD


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

    monkeypatch.setattr(sync.xfrm, "read_policies", read)
    monkeypatch.setattr(sync.xfrm, "ensure", ensure)
    monkeypatch.setattr(sync.state, "effective_datapath", lambda db: st["datapath"])
    return st


HOST = Host(db=None, rundir="/nonexistent")  # type: ignore[arg-type]


def test_off_the_kernel_datapath_nothing_is_armed_and_xfrm_is_never_touched(xfrm) -> None:
    xfrm["datapath"] = "netdev"
    xfrm["text"] = CHARON + GUARD
    for want in (True, False, None):
        assert sync.secure_arming(HOST, TRANSPORT, want_guard=want) == frozenset()
    assert xfrm["reads"] == 0 and xfrm["ensured"] == []


def test_a_secure_port_is_armed_only_with_its_policies_and_the_guard(xfrm) -> None:
    failed: list[str] = []
    # charon's policies for 10.77.1.2 (not .3) are there; the pass installs the guard
    xfrm["text"] = CHARON
    armed = sync.secure_arming(HOST, TRANSPORT, want_guard=True, failed=failed)
    assert armed == {"gn-0a4d0102", "gr-0a4d0102"} and failed == []
    assert xfrm["ensured"] == [True]
    # the agent's look: guard there, policies there -> the same set, nothing changed
    assert sync.secure_arming(HOST, TRANSPORT) == armed and xfrm["ensured"] == [True]
    # charon stopped: its policies went, the guard stays -> nothing armed
    xfrm["text"] = GUARD
    assert sync.secure_arming(HOST, TRANSPORT) == frozenset()
    # guard gone (someone flushed xfrm), policies back -> not armed until a pass reinstalls
    xfrm["text"] = CHARON
    assert sync.secure_arming(HOST, TRANSPORT) == frozenset()
    assert sync.secure_arming(HOST, TRANSPORT, want_guard=True) == armed


def test_no_secure_vnet_left_removes_the_guard_and_arms_nothing(xfrm) -> None:
    xfrm["text"] = CHARON + GUARD
    assert sync.secure_arming(HOST, SimpleNamespace(ports=[]), want_guard=False) == frozenset()
    assert xfrm["ensured"] == [False] and not xfrm_guard.complete(xfrm["text"])
    xfrm["text"] = CHARON + GUARD
    assert sync.secure_arming(HOST, TRANSPORT, want_guard=False) == frozenset()


def test_an_xfrm_failure_arms_nothing_and_is_reported(xfrm, monkeypatch) -> None:
    def broken() -> str:
        raise OvsvnetError("xfrm guard: ip xfrm policy: no")
    monkeypatch.setattr(sync.xfrm, "read_policies", broken)
    failed: list[str] = []
    assert sync.secure_arming(HOST, TRANSPORT, want_guard=True, failed=failed) == frozenset()
    assert failed == ["xfrm guard: ip xfrm policy: no"]
    failed.clear()  # a host without secure vnets does not complain about xfrm
    assert sync.secure_arming(HOST, SimpleNamespace(ports=[]), want_guard=False,
                             failed=failed) == frozenset()
    assert failed == []
