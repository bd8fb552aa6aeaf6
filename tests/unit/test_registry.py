"""The registry's pure parts, without root: the shipped schema, rows <-> definitions,
remotes, peers from chassis rows, the plan that folds registry vnets into a host, and the
cluster/status parser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import ovs.db.schema
import pytest

from ovsvnet.config import VnetConfig
from ovsvnet.desired import TunnelSpec
from ovsvnet.errors import ConfigError
from ovsvnet.registry import model as R
from ovsvnet.registry.server import Member, parse_cluster_status
from ovsvnet.vnetid import VnetId


def cfg(vid: str, **kw: str) -> VnetConfig:
    return VnetConfig.build(vid, **kw)


def test_schema_ships_with_the_package_and_is_versioned():
    data = R.schema()
    assert data["name"] == R.DB_NAME == "OVSVNET_Registry"
    assert R.schema_version() == "1.1.0"
    parsed = ovs.db.schema.DbSchema.from_json(data)  # python-ovs accepts it
    assert set(parsed.tables) == {"Registry", "Vnet", "Chassis", "Chassis_Private",
                                  "Connection", "RBAC_Role", "RBAC_Permission"}
    for table, cols in (("Vnet", R.VNET_COLUMNS), ("Chassis", R.CHASSIS_COLUMNS),
                        ("Chassis_Private", R.PRIVATE_COLUMNS)):
        assert set(cols) <= set(parsed.tables[table].columns), table
    # uniqueness the database itself enforces
    assert data["tables"]["Vnet"]["indexes"] == [["id"], ["key"], ["bridge"]]
    assert data["tables"]["Chassis"]["indexes"] == [["name"]]
    key = data["tables"]["Vnet"]["columns"]["key"]["type"]["key"]
    assert (key["minInteger"], key["maxInteger"]) == (1, 2**24 - 1)


@pytest.mark.skipif(not shutil.which("ovsdb-tool"), reason="needs ovsdb-tool")
def test_ovsdb_tool_accepts_the_schema(tmp_path: Path):
    db = tmp_path / "r.db"
    subprocess.run(["ovsdb-tool", "create", str(db), str(R.SCHEMA_PATH)], check=True)
    name = subprocess.run(["ovsdb-tool", "db-name", str(db)], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert name == R.DB_NAME


def test_rows_round_trip_and_are_checked_like_local_definitions():
    rv = R.RegistryVnet(cfg("97", vnetif="vnif97", security="none"), frozenset({"h1"}))
    row = rv.to_row()
    assert row == {"id": "0000:0000:0000:0000:0000:0000:0000:0097", "key": 0x97,
                   "bridge": "vnet-0097", "vnetif": ["vnif97"], "security": "none",
                   "chassis": ["h1"]}
    assert R.vnet_from_row(row) == rv
    assert R.vnet_from_row({**row, "vnetif": []}).cfg.vnetif is None
    with pytest.raises(ConfigError, match="bridge"):
        R.vnet_from_row({**row, "bridge": "br-vnet"})
    with pytest.raises(ConfigError, match="key"):
        R.vnet_from_row({**row, "key": 5})
    with pytest.raises(ConfigError, match="canonical"):
        R.vnet_from_row({**row, "id": "97"})
    snap = R.snapshot_from_rows([row, {**row, "id": "zz", "bridge": "x"}], [])
    assert [v.cfg.id for v in snap.vnets] == [rv.cfg.id] and "zz" in snap.broken


def test_scope_empty_means_every_chassis():
    a = R.RegistryVnet(cfg("97"))
    b = R.RegistryVnet(cfg("98"), frozenset({"h2"}))
    snap = R.Snapshot(vnets=[a, b])
    assert set(snap.desired("h1")) == {a.cfg.id}
    assert set(snap.desired("h2")) == {a.cfg.id, b.cfg.id}


@pytest.mark.parametrize("text,expected", [
    ("10.0.0.1", "tcp:10.0.0.1:6645"),
    ("10.0.0.1,10.0.0.2:7000", "tcp:10.0.0.1:6645,tcp:10.0.0.2:7000"),
    ("tcp:10.0.0.1:6645, ssl:h2:6645", "tcp:10.0.0.1:6645,ssl:h2:6645"),
    ("[fd00::1]:7000,fd00::2", "tcp:[fd00::1]:7000,tcp:[fd00::2]:6645"),
    ("reg1.example.net", "tcp:reg1.example.net:6645"),
])
def test_remotes_are_normalized(text, expected):
    assert R.normalize_remotes(text) == expected


@pytest.mark.parametrize("text", ["", ",", "10.0.0.1:http", "a b", "10.0.0.1:70000"])
def test_bad_remotes_are_config_errors(text):
    with pytest.raises(ConfigError):
        R.normalize_remotes(text)


def chassis(name, address, *vnets):
    return R.ChassisInfo(name, address, vnets=frozenset(VnetId.parse(v).canonical
                                                        for v in vnets))


def test_peers_come_from_other_chassis_with_their_flood_lists():
    rows = [chassis("h1", "10.0.0.1", "97"), chassis("h2", "10.0.0.2", "97", "98"),
            chassis("h3", "10.0.0.3"), chassis("bad", "not-an-ip", "97"),
            chassis("h2-old", "10.0.0.2", "99")]
    peers = R.chassis_peers(rows, "h1", "10.0.0.1")
    by_addr = {p.address: p for p in peers}
    assert set(by_addr) == {"10.0.0.2", "10.0.0.3"}
    assert by_addr["10.0.0.2"].vnets == {0x97, 0x98, 0x99}  # same address: union
    assert by_addr["10.0.0.3"].vnets == frozenset()
    assert all(p.source == R.SOURCE_REGISTRY for p in peers)
    assert by_addr["10.0.0.2"].external_ids()["ovsvnet-source"] == "registry"


def test_merge_with_multicast_peers_floods_to_the_union():
    mc = [TunnelSpec("10.0.0.2", vnets=frozenset({1}), origin="h2"),
          TunnelSpec("10.0.0.9", vnets=frozenset({2}), origin="h9"),
          TunnelSpec("10.0.0.5", vnets=None)]
    reg = [TunnelSpec("10.0.0.2", vnets=frozenset({3}), origin="h2", source="registry"),
           TunnelSpec("10.0.0.5", vnets=frozenset({3}), origin="h5", source="registry"),
           TunnelSpec("10.0.0.3", vnets=frozenset({3}), origin="h3", source="registry")]
    merged = {s.address: s for s in R.merge_peers(mc, reg)}
    # the registry wins for an address both know: its rows are signed by each host's cert
    assert merged["10.0.0.2"].vnets == {3} and merged["10.0.0.2"].source == "registry"
    assert merged["10.0.0.5"].vnets == {3} and merged["10.0.0.5"].origin == "h5"
    assert merged["10.0.0.9"].source is None
    assert "10.0.0.3" in merged


def test_bad_chassis_rows_are_skipped_and_named_and_scopes_bind_claims():
    rows = [chassis("h2", "10.0.0.2", "97", "98"), chassis("h3", "127.0.0.1", "97"),
            chassis('evil"name', "10.0.0.4", "97"), chassis("h5", "0.0.0.0"),
            chassis("h6", "10.0.0.6", "97", "98")]
    rejected: dict[str, str] = {}
    scopes = {VnetId.parse("98").canonical: frozenset({"h2"})}
    peers = {p.address: p for p in R.chassis_peers(rows, "h1", "10.0.0.1", scopes, rejected)}
    assert set(peers) == {"10.0.0.2", "10.0.0.6"}
    assert peers["10.0.0.2"].vnets == {0x97, 0x98}
    assert peers["10.0.0.6"].vnets == {0x97}  # scoped out of 98: its claim is ignored
    assert set(rejected) == {"h3", 'evil"name', "h5"}
    assert "loopback" in rejected["h3"] and "unspecified" in rejected["h5"]


def ids(*texts):
    return {VnetId.parse(t) for t in texts}


def test_plan_adds_removes_and_never_touches_local_vnets():
    local = {c.id: c for c in (cfg("1a"), cfg("97"), cfg("98"))}  # 97, 98 from the registry
    desired = {c.id: c for c in (cfg("97"), cfg("99"), cfg("1a"))}
    p = R.plan(local, ids("97", "98"), desired)
    assert set(p.defs) == ids("1a", "97", "99")
    assert p.added == [VnetId.parse("99")] and p.removed == [VnetId.parse("98")]
    assert p.registry_ids == ids("97", "99")
    assert "local" in p.conflicts["001a"]  # the local 1a wins and stays local
    assert p.defs[VnetId.parse("1a")] is local[VnetId.parse("1a")]


def test_plan_changes_a_registry_vnet_in_place():
    local = {VnetId.parse("97"): cfg("97")}
    new = cfg("97", vnetif="vnif97")
    p = R.plan(local, ids("97"), {new.id: new})
    assert p.changed == [new.id] and p.defs[new.id] == new and not p.conflicts


def test_plan_reports_name_clashes_instead_of_failing():
    local = {c.id: c for c in (cfg("1a", bridge="shared"),)}
    desired = {c.id: c for c in (cfg("97", bridge="shared"), cfg("98", vnetif="eth9"),
                                 cfg("99"))}
    p = R.plan(local, set(), desired, foreign=lambda name: name == "eth9")
    assert set(p.defs) == ids("1a", "99")
    assert "shared" in p.conflicts["0097"] and "eth9" in p.conflicts["0098"]
    # two registry vnets that want one bridge: the first (by id) gets it
    desired = {c.id: c for c in (cfg("97", bridge="b1"), cfg("98", bridge="b1"))}
    p = R.plan({}, set(), desired)
    assert set(p.defs) == ids("97") and "b1" in p.conflicts["0098"]


def test_plan_without_registry_changes_is_the_identity():
    local = {c.id: c for c in (cfg("97"), cfg("98"))}
    p = R.plan(local, ids("97"), {VnetId.parse("97"): cfg("97")})
    assert p.defs == local and not (p.added or p.removed or p.changed or p.conflicts)


CLUSTER_STATUS = """\
e8a2
Name: OVSVNET_Registry
Cluster ID: 346b (346b452f-3f49-47d1-88ad-b9dbade62d49)
Server ID: 9ccd (9ccd6139-ae50-4b11-8e04-8968c68c88a0)
Address: tcp:10.77.1.2:6646
Status: cluster member
Role: follower
Term: 3
Leader: 7013
Vote: 7013

Election timer: 1000
Servers:
    7013 (7013 at tcp:10.77.1.3:6646) next_index=2 match_index=3
    9ccd (9ccd at tcp:10.77.1.2:6646) (self)
"""


def test_cluster_status_is_parsed():
    st = parse_cluster_status(CLUSTER_STATUS)
    assert (st["role"], st["term"], st["leader"], st["status"]) == (
        "follower", "3", "7013", "cluster member")
    assert st["servers"] == [
        {"sid": "7013", "address": "tcp:10.77.1.3:6646", "self": False},
        {"sid": "9ccd", "address": "tcp:10.77.1.2:6646", "self": True}]


def test_member_settings_round_trip(tmp_path: Path):
    m = Member.create(str(tmp_path), "fd00::1", 7645, 7646, False, tls=None)
    assert m.raft_remote() == "tcp:[fd00::1]:7646"
    m.save()
    assert Member.load(str(tmp_path)) == m
    assert json.loads((tmp_path / "member.json").read_text())["address"] == "fd00::1"


def test_systemd_unit_runs_the_member_in_the_foreground():
    import configparser
    unit = Path(__file__).resolve().parents[2] / "scripts" / "ovsvnet-registry.service"
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(unit.read_text())
    start = parser["Service"]["ExecStart"]
    assert "registry start" in start and "--foreground" in start
    assert parser["Service"]["Type"] == "simple"
    # a database from an older ovsvnet is converted once the server runs, never fatally
    assert parser["Service"]["ExecStartPost"].startswith("-")
    assert "registry upgrade" in parser["Service"]["ExecStartPost"]
    # a TLS member's agents are served by its relay, a unit of its own bound to the member
    relay = configparser.ConfigParser(interpolation=None, strict=False)
    relay.read_string(unit.with_name("ovsvnet-registry-relay.service").read_text())
    assert "registry start" in relay["Service"]["ExecStart"]
    assert relay["Service"]["ExecStart"].endswith("--foreground --relay")
    assert relay["Unit"]["BindsTo"] == relay["Unit"]["After"] == "ovsvnet-registry.service"


def test_a_row_change_never_lowers_a_level_nor_unplugs_domains():
    conf = VnetConfig.build("97", security="conf")
    none = VnetConfig.build("97", security="none")
    other = VnetConfig.build("98")
    local = {conf.id: conf, other.id: other}
    # lowered in the registry: the old definition stays, reported
    p = R.plan(local, {conf.id, other.id}, {conf.id: none, other.id: other})
    assert p.defs[conf.id] == conf and conf.id in p.registry_ids
    assert "lowers its security from conf to none" in p.conflicts["0097"]
    assert p.changed == []
    # raised: applied
    p = R.plan({none.id: none}, {none.id}, {none.id: conf})
    assert p.defs[none.id] == conf and p.changed == [none.id]
    # deleted in the registry with a domain plugged in: kept and reported
    p = R.plan(local, {conf.id, other.id}, {other.id: other},
               plugged=lambda vid: ["vif3.0"] if vid == conf.id else [])
    assert conf.id in p.defs and p.removed == []
    assert "domains are plugged in (vif3.0)" in p.conflicts["0097"]
    # nothing plugged: removed
    p = R.plan(local, {conf.id, other.id}, {other.id: other})
    assert conf.id not in p.defs and p.removed == [conf.id]
