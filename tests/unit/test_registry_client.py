"""Registry commands and the agent's follower against a real (standalone, unprivileged)
ovsdb-server holding the OVSVNET_Registry schema: the same rules as local vnets, one
transaction each, and the follower's snapshot and non-blocking publishing."""

from __future__ import annotations

import time

import pytest

from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConflictError, NotFoundError
from ovsvnet.ovsdb import quiet_python_ovs
from ovsvnet.registry import client as C
from ovsvnet.registry import model as R
from ovsvnet.registry.follow import RegistryFollower

quiet_python_ovs()


@pytest.fixture
def registry(ovsdb_server):
    remote = ovsdb_server(R.SCHEMA_PATH)
    client = C.RegistryClient(remote, timeout=5)
    yield remote, client
    client.close()


def cfg(vid: str, **kw) -> VnetConfig:
    return VnetConfig.build(vid, **kw)


def test_create_many_is_all_or_nothing_with_the_local_rules(registry):
    _, c = registry
    assert C.create_many(c, [cfg("97"), cfg("98", vnetif="vnif98")]) == {
        cfg("97").id, cfg("98").id}
    assert c.next_cfg() == 1
    with pytest.raises(ConflictError, match="already exists in the registry"):
        C.create_many(c, [cfg("99"), cfg("97")])
    with pytest.raises(ConflictError, match="'vnif98' is already used by vnet 0098 in the reg"):
        C.create_many(c, [cfg("9a", vnetif="vnif98")])
    with pytest.raises(ConflictError, match="given twice, differently"):
        C.create_many(c, [cfg("9b"), cfg("9b", security="auth")])
    vnets, broken = c.vnets()
    assert sorted(v.short for v in vnets) == ["0097", "0098"] and broken == {}
    assert c.next_cfg() == 1  # refused requests changed nothing
    # --may-exist: identical is fine (nothing created), different is not
    assert C.create_many(c, [cfg("97")], may_exist=True) == set()
    with pytest.raises(ConflictError, match="different definition"):
        C.create_many(c, [cfg("97", security="conf")], may_exist=True)


def test_resolve_delete_and_domains_plugged_in(registry):
    _, c = registry
    C.create_many(c, [cfg("97", vnetif="vnif97")])
    assert C.resolve(c, "vnif97").cfg.id == cfg("97").id
    assert C.resolve(c, "0000:0000:0000:0000:0000:0000:0000:0097").cfg.bridge == "vnet-0097"
    with pytest.raises(NotFoundError, match="no vnet 'nope' in the registry"):
        C.resolve(c, "nope")

    def attached(txn):
        row = c.db.insert(txn, "Chassis_Private")
        row.name, row.cfg, row.attached = "hv1", 1, [cfg("97").id.canonical]
    c.transact(attached)
    with pytest.raises(ConflictError, match="still has domains plugged in on hv1"):
        C.delete(c, "97")
    assert C.delete(c, "97", force=True).cfg.id == cfg("97").id
    assert c.vnets()[0] == {}


def test_the_follower_takes_snapshots_and_publishes_without_blocking(registry):
    remote, c = registry
    C.create_many(c, [cfg("97"), cfg("98")], chassis=frozenset({"hv1"}))
    f = RegistryFollower(remote, "hv1")
    deadline = time.monotonic() + 5
    while not f.run():
        assert time.monotonic() < deadline
        f.db.block(deadline, cap=0.1)
    assert f.connected() and f.leader() == remote
    assert sorted(v.short for v in f.snapshot.desired("hv1")) == ["0097", "0098"]
    assert f.snapshot.desired("hv2") == {}
    info = R.ChassisInfo("hv1", "192.0.2.1", 4789, frozenset({cfg("97").id.canonical}))
    f.publish(info, 1, {cfg("97").id.canonical}, {})
    while f._txn is not None:
        f.run()
        assert time.monotonic() < deadline
        f.db.block(deadline, cap=0.1)
    assert f.publish_errors == 0
    c.db.wait_until(lambda: bool(c.rows("Chassis_Private")), time.monotonic() + 5, "rows")
    status = C.status_view(c)
    assert [(ch["name"], ch["address"], ch["cfg"]) for ch in status["chassis"]] == [
        ("hv1", "192.0.2.1", 1)]
    # unchanged: publishing again commits nothing
    f.publish(info, 1, {cfg("97").id.canonical}, {})
    assert f._txn is None
    f.close()
