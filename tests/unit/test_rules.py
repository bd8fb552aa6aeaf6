"""The vnet rules shared by a host and the registry: naming and clashes."""

from __future__ import annotations

import pytest

from ovsvnet import rules
from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConflictError, NotFoundError


def cfg(vid: str, **kw) -> VnetConfig:
    return VnetConfig.build(vid, **kw)


DEFS = {c.id: c for c in (cfg("97", vnetif="vnif97"), cfg("98", bridge="blue"))}


def test_resolve_by_id_in_any_form_bridge_or_vnetif():
    same = lambda c: c
    assert rules.resolve(DEFS, same, "97", "here", "ls").bridge == "vnet-0097"
    assert rules.resolve(DEFS, same, "0:0:0:0:0:0:0:98", "here", "ls").bridge == "blue"
    assert rules.resolve(DEFS, same, "blue", "here", "ls").id == cfg("98").id
    assert rules.resolve(DEFS, same, "vnif97", "here", "ls").id == cfg("97").id
    with pytest.raises(NotFoundError, match=r"no vnet 'x' on this host \(ovsvnet list shows"):
        rules.resolve(DEFS, same, "x", "on this host", "ovsvnet list")


def test_check_create_names_each_clash():
    def check(wanted, **kw):
        kw.setdefault("may_exist", False)
        kw.setdefault("identical", lambda v: DEFS[v] == {c.id: c for c in wanted}[v])
        return rules.check_create(DEFS, wanted, **kw)

    assert check([cfg("99")]) == [cfg("99").id]
    with pytest.raises(ConflictError, match=r"id: vnet 0097 already exists \(bridge vnet-0097"):
        check([cfg("97", vnetif="vnif97")])
    assert check([cfg("97", vnetif="vnif97")], may_exist=True) == []
    with pytest.raises(ConflictError, match="different definition"):
        check([cfg("97")], may_exist=True)
    with pytest.raises(ConflictError, match="bridge: 'blue' is already used by vnet 0098"):
        check([cfg("99", bridge="blue")])
    with pytest.raises(ConflictError, match="vnetif: 'vnif97' is already used by vnet 0097 x"):
        check([cfg("99", vnetif="vnif97")], where=" x")
    with pytest.raises(ConflictError, match="vnetif: an interface named 'eth9'"):
        check([cfg("99", vnetif="eth9")],
              taken=lambda n: f"an interface named '{n}'" if n == "eth9" else None)
    # two new vnets of one request clash with each other too
    with pytest.raises(ConflictError, match="'red' is already used by vnet 0099"):
        check([cfg("99", bridge="red"), cfg("9a", bridge="red")])
    # a row this very request made (a retry after a leader change) counts as created
    assert check([cfg("97")], ours=lambda v: True) == [cfg("97").id]


def test_unique_request():
    assert list(rules.unique_request([cfg("97"), cfg("97")], lambda c: c)) == [cfg("97").id]
    with pytest.raises(ConflictError, match="given twice, differently"):
        rules.unique_request([cfg("97"), cfg("97", security="auth")], lambda c: c)
