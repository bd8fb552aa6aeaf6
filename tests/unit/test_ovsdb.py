"""The one OVSDB client against a real ovsdb-server (unprivileged, no switch): one
transaction per call, rebuilt when someone else changed the view, refusals mapped to exit
codes, and deadlines instead of hangs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ovsvnet.errors import ConflictError, OvsUnreachableError
from ovsvnet.ovsdb import Aborted, Client, Ovsdb, Pending, quiet_python_ovs, short_error
from ovsvnet.registry import model as R

from .conftest import VSWITCH_SCHEMA

quiet_python_ovs()


def _init(db: Ovsdb) -> None:
    """A fresh conf.db has no Open_vSwitch row; ovs-vsctl init makes one. (A column is set:
    python-ovs 3.1, Debian 12's, drops the insert of a row with no column given.)"""
    def build(txn):
        db.insert(txn, "Open_vSwitch").bridges = []
    db.transact(build)


@pytest.fixture
def local(ovsdb_server):
    remote = ovsdb_server(VSWITCH_SCHEMA)
    first = Ovsdb(remote, timeout=5)
    _init(first)
    yield remote
    first.close()


def _add_bridge(db: Ovsdb, name: str):
    def build(txn):
        br = db.insert(txn, "Bridge")
        br.name = name
        db.ovs.addvalue("bridges", br)
        return name
    return db.transact_vswitchd(build, wait_vswitchd=False)


def test_a_transaction_commits_and_the_view_follows(local):
    db = Ovsdb(local, timeout=5)
    assert _add_bridge(db, "br-a") == "br-a"
    db.run()
    assert db.bridge("br-a") is not None and db.bridge("br-b") is None
    db.close()


def test_a_transaction_is_rebuilt_when_another_client_changed_the_view(local):
    """TRY_AGAIN: the builder runs again on the fresh view and sees the other's change."""
    a, b = Ovsdb(local, timeout=5), Ovsdb(local, timeout=5)
    seen: list[int] = []

    def build(txn):
        seen.append(len(a.rows("Bridge")))
        if len(seen) == 1:  # meanwhile another client adds a bridge
            _add_bridge(b, "br-other")
        a.ovs.verify("bridges")
        br = a.insert(txn, "Bridge")
        br.name = "br-mine"
        a.ovs.addvalue("bridges", br)

    a.transact(build)
    assert seen == [0, 1]
    a.run()
    assert {r.name for r in a.rows("Bridge")} == {"br-other", "br-mine"}
    a.close()
    b.close()


def test_aborted_commits_nothing(local):
    db = Ovsdb(local, timeout=5)

    def build(txn):
        br = db.insert(txn, "Bridge")
        br.name = "br-never"
        raise Aborted()

    assert db.transact(build)[0] is None
    db.run()
    assert db.bridge("br-never") is None
    db.close()


def test_a_constraint_violation_is_a_conflict(local):
    db = Ovsdb(local, timeout=5)
    _add_bridge(db, "br-dup")
    with pytest.raises(ConflictError, match="refused the change"):
        _add_bridge(db, "br-dup")
    db.close()


def test_an_absent_server_is_unreachable_within_the_timeout(tmp_path):
    start = time.monotonic()
    with pytest.raises(OvsUnreachableError, match="cannot reach OVSDB"):
        Ovsdb(f"unix:{tmp_path / 'nothing.sock'}", timeout=1)
    assert time.monotonic() - start < 5


def test_short_error_keeps_the_human_part():
    assert short_error('{"details":"too many rows","error":"constraint violation"}') == \
        "too many rows"
    assert short_error("plain text") == "plain text"


def test_a_pending_transaction_is_polled_to_its_outcome(ovsdb_server):
    """The agent's way: commit without blocking, poll each loop turn."""
    remote = ovsdb_server(R.SCHEMA_PATH)
    client = Client(remote, R.SCHEMA_PATH, {"Chassis": None}, timeout=5)
    client.wait_connected()

    def build(txn):
        row = client.insert(txn, "Chassis")
        row.name, row.address, row.port = "hv1", "192.0.2.1", 4789

    pending = Pending(client, build)
    deadline = time.monotonic() + 5
    while not pending.poll():
        client.run()
        assert time.monotonic() < deadline
        client.block(deadline, cap=0.1)
    assert pending.ok, pending.error
    client.run()
    assert [r.name for r in client.rows("Chassis")] == ["hv1"]
    assert client.remote() == remote
    client.close()


def test_client_reads_only_the_columns_it_registered(ovsdb_server):
    remote = ovsdb_server(R.SCHEMA_PATH)
    client = Client(remote, Path(R.SCHEMA_PATH), {"Chassis": ["name"]}, timeout=5)
    client.wait_connected()
    assert "address" not in client.idl.tables["Chassis"].columns
    client.close()
