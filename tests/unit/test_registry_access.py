"""The registry's access control, without root: the schema's RBAC and Connection tables as
ovsdb-server reads them, the chassis role's rows, the seeding transaction (checked by
ovsdb-tool), members' command lines and settings, Raft peers, the choice of TLS files,
and converting a database from an older ovsvnet (against an unprivileged ovsdb-server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ovsvnet.errors import ConfigError
from ovsvnet.ovsdb import SslFiles
from ovsvnet.registry import model as R
from ovsvnet.registry import pki
from ovsvnet.registry import server as S
from ovsvnet.registry import upgrade as U

needs_ovsdb = pytest.mark.skipif(not shutil.which("ovsdb-tool"), reason="needs ovsdb-tool")
TLS = pki.MemberTls("/etc/ovsvnet/pki/r1/privkey.pem", "/etc/ovsvnet/pki/r1/cert.pem",
                    "/etc/ovsvnet/pki/r1/cacert.pem", "/etc/ovsvnet/pki/r1/clientca.pem")


def columns(table: str) -> dict[str, Any]:
    cols: dict[str, Any] = R.schema()["tables"][table]["columns"]
    return cols


# -- the schema ------------------------------------------------------------------------------

def test_the_schema_has_the_tables_ovsdb_server_reads_for_rbac_and_remotes():
    # ovsdb-server(7) §3.2 and ovsdb/rbac.c: a table named RBAC_Role turns RBAC on
    role = columns("RBAC_Role")
    assert role["name"]["type"] == "string"
    perms = role["permissions"]["type"]
    assert perms["key"] == "string" and perms["value"]["refTable"] == "RBAC_Permission"
    perm = columns("RBAC_Permission")
    assert perm["insert_delete"]["type"] == "boolean"
    for col in ("authorization", "update"):
        assert perm[col]["type"] == {"key": "string", "min": 0, "max": "unlimited"}
    # ovsdb-server.c add_manager_options reads these from each row a db: remote names
    conn = columns("Connection")
    assert {"target", "max_backoff", "inactivity_probe", "read_only", "role",
            "other_config"} <= set(conn)
    assert conn["target"]["type"] == conn["role"]["type"] == "string"
    ref = columns("Registry")["connections"]["type"]
    assert ref["key"] == {"type": "uuid", "refTable": "Connection"}
    assert R.CONNECTIONS_REMOTE == "db:OVSVNET_Registry,Registry,connections"
    # one role per name and one listener per target: a second seeding fails as a whole
    assert R.schema()["tables"]["RBAC_Role"]["indexes"] == [["name"]]
    assert R.schema()["tables"]["Connection"]["indexes"] == [["target"]]


def test_a_chassis_may_update_exactly_what_its_agent_publishes():
    chassis = R.ChassisInfo("h1", "10.0.0.1").to_row()
    assert sorted(R.CHASSIS_UPDATES["Chassis"]) == sorted(set(chassis) - {"name"})
    assert sorted(R.CHASSIS_UPDATES["Chassis_Private"]) == sorted(
        set(R.PRIVATE_COLUMNS) - {"name", "external_ids"})
    for table, cols in R.CHASSIS_UPDATES.items():
        assert R.OWNER_COLUMN not in cols, f"a chassis could rename its {table} row"
        assert set(cols) <= set(columns(table))
    perms = R.chassis_permissions()
    assert set(perms) == {"Chassis", "Chassis_Private"}  # Vnet, Registry: read-only
    assert perms["Chassis"] == {
        "table": "Chassis", "authorization": ["set", ["name"]], "insert_delete": True,
        "update": ["set", ["address", "hostname", "port", "version", "vnets"]]}
    assert set(R.DATA_TABLES) == {"Registry", "Vnet", "Chassis", "Chassis_Private"}


@pytest.mark.parametrize("port,address,standalone,target", [
    (6645, "10.0.0.1", False, "pssl:6645"),
    (6645, "fd00::1", False, "pssl:6645:[::]"),
    (7645, "10.0.0.1", True, "pssl:7645:10.0.0.1"),
    (6645, "fd00::1", True, "pssl:6645:[fd00::1]"),
])
def test_the_client_listener_is_shared_by_a_cluster(port, address, standalone, target):
    assert R.client_listener(port, address, standalone) == target


def test_the_client_listener_needs_an_address():
    with pytest.raises(ConfigError, match="address: 'reg1' is not an IP address"):
        R.client_listener(6645, "reg1", False)


def test_seeding_a_new_database():
    db, *ops = R.seed_transaction(registry=True, rbac=True, target="pssl:6645")
    assert db == R.DB_NAME
    assert [(o["op"], o["table"]) for o in ops] == [
        ("insert", "RBAC_Permission"), ("insert", "RBAC_Permission"), ("insert", "RBAC_Role"),
        ("insert", "Connection"), ("insert", "Registry")]
    assert ops[3]["row"] == {"target": "pssl:6645", "role": R.CHASSIS_ROLE}
    assert ops[4]["row"] == {"next_cfg": 0, "connections": ["set", [["named-uuid", "conn"]]]}
    # plain TCP: no listener row (a role needs a certificate CN), the role still seeded
    _, *ops = R.seed_transaction(registry=True, rbac=True, target=None)
    assert [o["table"] for o in ops][-1] == "Registry" and "Connection" not in str(ops)
    assert ops[-1]["row"]["connections"] == ["set", []]


def test_seeding_a_converted_database_adds_only_what_is_missing():
    _, *ops = R.seed_transaction(registry=False, rbac=False, target="pssl:6645")
    assert [o["op"] for o in ops] == ["insert", "mutate"]
    assert ops[1]["mutations"] == [["connections", "insert",
                                    ["set", [["named-uuid", "conn"]]]]]
    assert R.seed_transaction(registry=False, rbac=False, target=None) == [R.DB_NAME]


@needs_ovsdb
def test_ovsdb_tool_applies_the_seed(tmp_path: Path):
    db = tmp_path / "r.db"
    subprocess.run(["ovsdb-tool", "create", str(db), str(R.SCHEMA_PATH)], check=True)
    out = subprocess.run(["ovsdb-tool", "transact", str(db), json.dumps(
        R.seed_transaction(registry=True, rbac=True, target="pssl:6645"))],
        capture_output=True, text=True, check=True).stdout
    S.check_transact(out, "seed")  # no operation failed
    query = [R.DB_NAME] + [{"op": "select", "table": t, "where": []}
                           for t in ("RBAC_Role", "RBAC_Permission", "Connection", "Registry")]
    out = subprocess.run(["ovsdb-tool", "query", str(db), json.dumps(query)],
                         capture_output=True, text=True, check=True).stdout
    roles, perms, conns, regs = (r["rows"] for r in json.loads(out))
    assert [r["name"] for r in roles] == [R.CHASSIS_ROLE]
    by_uuid = {p["_uuid"][1]: p for p in perms}
    granted = {table: by_uuid[ref[1]]["table"] for table, ref in roles[0]["permissions"][1]}
    assert granted == {"Chassis": "Chassis", "Chassis_Private": "Chassis_Private"}
    assert [(c["target"], c["role"]) for c in conns] == [("pssl:6645", R.CHASSIS_ROLE)]
    assert regs[0]["connections"] == ["uuid", conns[0]["_uuid"][1]]
    # seeding twice is refused as a whole by the indexes (a racing member seeded first)
    out = subprocess.run(["ovsdb-tool", "transact", str(db), json.dumps(
        R.seed_transaction(registry=False, rbac=True, target="pssl:6645"))],
        capture_output=True, text=True, check=True).stdout
    with pytest.raises(Exception, match="constraint violation"):
        S.check_transact(out, "seed")


def test_bare_addresses_mean_tls_for_a_client_with_a_certificate():
    assert R.normalize_remotes("10.0.0.1,fd00::2,10.0.0.3:7645", scheme="ssl") == \
        "ssl:10.0.0.1:6645,ssl:[fd00::2]:6645,ssl:10.0.0.3:7645"
    assert R.normalize_remotes("tcp:10.0.0.1:6645,unix:/r.sock", scheme="ssl") == \
        "tcp:10.0.0.1:6645,unix:/r.sock"  # a remote says what it is


# -- members ---------------------------------------------------------------------------------

def test_a_tls_member_is_a_raft_server_for_peers_and_a_relay_for_agents(tmp_path: Path):
    m = S.Member.create(str(tmp_path), "10.0.0.1", tls=TLS)
    assert (m.raft_remote(), m.client_remote()) == ("ssl:10.0.0.1:6646", "ssl:10.0.0.1:6645")
    # the database server: Raft peers (server CA only) and the operators' socket, no TCP
    argv = S.argv(m, detach=False)
    assert argv[:2] == ["ovsdb-server", f"{tmp_path}/registry.db"]
    assert f"--remote=punix:{tmp_path}/registry.sock" in argv
    assert {f"--private-key={TLS.private_key}", f"--certificate={TLS.certificate}",
            f"--ca-cert={TLS.ca_cert}"} <= set(argv)
    assert not [a for a in argv if "tcp" in a or "ssl" in a or "db:" in a]
    # the relay: agents (chassis CA only), listener and role from the Connection rows
    relay = S.relay_argv(m)
    assert relay[:2] == ["ovsdb-server", f"relay:OVSVNET_Registry:unix:{tmp_path}/registry.sock"]
    assert {"--remote=db:OVSVNET_Registry,Registry,connections",
            f"--ca-cert={TLS.client_ca_cert}", f"--pidfile={tmp_path}/relay.pid",
            f"--unixctl={tmp_path}/relay.ctl", "--detach"} <= set(relay)
    assert f"--ca-cert={TLS.ca_cert}" not in relay
    assert m.listener() == "pssl:6645"
    assert TLS.raft() == SslFiles(TLS.private_key, TLS.certificate, TLS.ca_cert)
    assert TLS.relay() == SslFiles(TLS.private_key, TLS.certificate, TLS.client_ca_cert)


def test_an_insecure_member_serves_plain_tcp_as_before(tmp_path: Path):
    m = S.Member.create(str(tmp_path), "10.0.0.1", 7645, 7646, tls=None)
    assert (m.raft_remote(), m.client_remote()) == ("tcp:10.0.0.1:7646", "tcp:10.0.0.1:7645")
    argv = S.argv(m)
    assert "--remote=ptcp:7645:10.0.0.1" in argv and "--detach" in argv
    assert not [a for a in argv if a.startswith(("--private-key", "--remote=db:"))]
    assert m.listener() is None and m.tls is None
    with pytest.raises(ConfigError, match="is insecure: it has no relay"):
        S.relay_argv(m)


def test_raft_may_listen_on_a_members_only_address(tmp_path: Path):
    m = S.Member.create(str(tmp_path), "10.0.0.1", tls=TLS, raft_address="192.168.50.1")
    assert m.raft_remote() == "ssl:192.168.50.1:6646"
    assert m.client_remote() == "ssl:10.0.0.1:6645"


def test_member_settings_keep_the_tls_files_and_old_ones_load_as_insecure(tmp_path: Path):
    m = S.Member.create(str(tmp_path), "10.0.0.1", tls=TLS)
    m.save()
    assert S.Member.load(str(tmp_path)) == m and S.Member.load(str(tmp_path)).tls == TLS
    # member.json of ovsvnet before 1.1.0: served plain TCP, and still does
    (tmp_path / "member.json").write_text(json.dumps(
        {"dir": str(tmp_path), "address": "10.0.0.1", "port": 6645, "raft_port": 6646,
         "standalone": False}))
    old = S.Member.load(str(tmp_path))
    assert old.insecure and old.raft_remote() == "tcp:10.0.0.1:6646"
    assert U.needs_upgrade(old)
    broken = S.Member(str(tmp_path), "10.0.0.1")  # TLS without files
    with pytest.raises(ConfigError, match="names no certificate"):
        S.argv(broken)


@pytest.mark.parametrize("peer,scheme,remote", [
    ("10.0.0.1", "ssl", "ssl:10.0.0.1:6646"),
    ("10.0.0.1:7646", "ssl", "ssl:10.0.0.1:7646"),
    ("fd00::1", "ssl", "ssl:[fd00::1]:6646"),
    ("10.0.0.1", "tcp", "tcp:10.0.0.1:6646"),
    ("ssl:10.0.0.1:6646", "ssl", "ssl:10.0.0.1:6646"),
])
def test_raft_peers_use_the_members_transport(peer, scheme, remote):
    assert S.peer_remote(peer, scheme) == remote


@pytest.mark.parametrize("peer,scheme,message", [
    ("tcp:10.0.0.1:6646", "ssl", "uses tcp, but this member uses ssl"),
    ("ssl:10.0.0.1:6646", "tcp", "uses ssl, but this member uses tcp"),
    ("unix:/x.sock", "ssl", "is not ADDR"),
    ("10.0.0.1,10.0.0.2", "ssl", "is not ADDR"),
])
def test_mixed_transports_are_refused(peer, scheme, message):
    with pytest.raises(ConfigError, match=message):
        S.peer_remote(peer, scheme)


# -- which files a member gets ---------------------------------------------------------------

def test_member_files_from_a_pki_dir_or_four_options():
    files = pki.member_files("/etc/ovsvnet/pki/r1", None, None, None, None, insecure=False)
    assert files == TLS
    assert pki.member_files(None, TLS.private_key, TLS.certificate, TLS.ca_cert,
                            TLS.client_ca_cert, insecure=False) == TLS
    assert pki.member_files(None, None, None, None, None, insecure=True) is None


@pytest.mark.parametrize("args,message", [
    ((None, None, None, None, None, False), "or --insecure for plain TCP"),
    ((None, "k.pem", None, None, None, False), "go together"),
    ((None, "k.pem", "c.pem", "ca.pem", None, False), "go together"),
    (("/d", "k.pem", "c.pem", "ca.pem", "cc.pem", False), "not both"),
    (("/d", None, None, None, None, True), "takes no --pki-dir"),
    ((None, "k.pem", "c.pem", "ca.pem", None, True), "takes no --pki-dir"),
])
def test_member_files_name_the_rule_they_break(args, message):
    *files, insecure = args
    with pytest.raises(ConfigError, match=message):
        pki.member_files(*files, insecure=insecure)


def test_cli_defaults_match_the_library():
    from ovsvnet.cli import registry as cli
    assert cli.DEFAULT_PKI_DIR == pki.DEFAULT_PKI_DIR
    assert cli.DEFAULT_DIR == S.DEFAULT_DIR


# -- converting a database from an older ovsvnet -----------------------------------------------

def old_schema(path: Path) -> Path:
    data = R.schema()
    data["version"] = "1.0.0"
    for table in ("Connection", "RBAC_Role", "RBAC_Permission"):
        del data["tables"][table]
    del data["tables"]["Registry"]["columns"]["connections"]
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("insecure", [False, True])
def test_upgrade_converts_online_and_seeds_once(ovsdb_server, tmp_path: Path, insecure: bool):
    remote = ovsdb_server(old_schema(tmp_path / "old.ovsschema"))
    member = S.Member.create(str(tmp_path / "member"), "10.0.0.1", standalone=True,
                             tls=None if insecure else TLS)
    member.path.mkdir()
    os.symlink(remote[len("unix:"):], member.sock)  # the member's socket is the server's
    subprocess.run(["ovsdb-client", "transact", remote, json.dumps([
        R.DB_NAME, {"op": "insert", "table": "Registry", "row": {"next_cfg": 5}}])],
        check=True, capture_output=True)
    done = U.upgrade(member, timeout=10)
    assert done == "converted from schema 1.0.0 to 1.1.0; seeded the access control"
    assert S.Member.load(member.dir).schema == "1.1.0" and not U.needs_upgrade(member)
    assert U.upgrade(member, timeout=10) == "schema 1.1.0, up to date"
    out = subprocess.run(["ovsdb-client", "dump", "--format=json", remote, R.DB_NAME],
                         capture_output=True, text=True, check=True).stdout
    tables = {t["caption"].split()[0]: [dict(zip(t["headings"], r)) for r in t["data"]]
              for t in map(json.loads, out.splitlines()) if t}
    assert [r["next_cfg"] for r in tables["Registry"]] == [5]  # the data is kept
    assert [r["name"] for r in tables["RBAC_Role"]] == [R.CHASSIS_ROLE]
    expected = [] if insecure else [("pssl:6645:10.0.0.1", R.CHASSIS_ROLE)]
    assert [(r["target"], r["role"]) for r in tables["Connection"]] == expected
