"""Vnet definitions against a real ovsdb-server and ovs-vswitchd (one lab host)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ovsvnet.lab import Lab, LabHost

from .helpers import db_snapshot, ovsvnet

pytestmark = pytest.mark.root

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def host():
    with Lab() as lab:
        lab.add_segment("s1")
        yield lab.add_host("h1", "s1")


def vs(host: LabHost, *args: str) -> str:
    return host.vsctl(*args).strip()


def ext_ids(host: LabHost, bridge: str) -> dict[str, str]:
    out = host.vsctl("--format=json", "--columns=external_ids", "list", "Bridge", bridge)
    pairs = json.loads(out)["data"][0][0][1]
    return dict(pairs)


def test_create_survives_restarts_and_delete_restores_the_database(host):
    before = db_snapshot(host)
    ovsvnet(host, "create", str(EXAMPLES / "vnet97.sxp"))

    assert vs(host, "br-exists", "vnet97") == ""
    ids = ext_ids(host, "vnet97")
    assert ids["ovsvnet-role"] == "vnet"
    assert ids["ovsvnet-id"] == "0000:0000:0000:0000:0000:0000:0000:0097"
    assert "(vnetif vnif97)" in ids["ovsvnet-config"]
    assert vs(host, "get", "Bridge", "vnet97", "fail_mode") == "standalone"
    assert vs(host, "get", "Bridge", "vnet97", "datapath_type") == "netdev"
    assert vs(host, "get", "Interface", "vnif97", "type") == "internal"
    assert vs(host, "port-to-br", "vnif97") == "vnet97"

    host.restart_ovsdb()
    host.restart_vswitchd()
    listed = json.loads(ovsvnet(host, "list", "--json").stdout)
    assert [(v["short"], v["bridge"], v["state"]) for v in listed] == [
        ("0097", "vnet97", "active")]
    assert host.run("ip", "link", "show", "vnif97").returncode == 0

    ovsvnet(host, "delete", "97")
    assert db_snapshot(host) == before


def test_show_reports_ports_mtu_and_flows(host):
    ovsvnet(host, "create", "--id", "a1", "--vnetif", "vnifa1")
    try:
        data = json.loads(ovsvnet(host, "show", "a1", "--json").stdout)
        assert data["bridge"] == "vnet-00a1" and data["mtu"] == 1450
        assert {p["name"]: p["kind"] for p in data["ports"]} == {
            "vnet-00a1": "bridge", "vnifa1": "vnetif", "vt-0000a1": "patch"}
        text = ovsvnet(host, "show", "vnet-00a1", "--flows").stdout
        assert "priority=0 actions=NORMAL    # ovs-vswitchd's own flow" in text
        assert "# vnet flow of vnet key 0xa1" in text
        assert vs(host, "get", "Interface", "vnifa1", "mtu_request") == "1450"
    finally:
        ovsvnet(host, "delete", "a1")


BAD_INPUTS = [
    (["create", "--id", "0"], 2, "id: 0 is invalid"),
    (["create", "--id", "1"], 2, "reserved for the physical network"),
    (["create", "--id", "0x97"], 2, "without 0x"),
    (["create", "--id", "1:0:0:0:0:0:0:0"], 2, "24-bit"),
    (["create", "--id", "97", "--bridge", "a/b"], 2, "bridge: 'a/b' contains '/'"),
    (["create", "--id", "97", "--vnetif", "averyveryverylongname"], 2, "the limit is 14"),
    (["create", "--id", "97", "--bridge", "br-vnet"], 2, "reserved"),
    (["create", "--id", "97", "--security", "secret"], 2, "secret"),
    (["create", "--id", "97", "--bridge", "x", "--vnetif", "x"], 2, "must differ"),
]


@pytest.mark.parametrize("args,rc,message", BAD_INPUTS, ids=[" ".join(a) for a, _, _ in BAD_INPUTS])
def test_refused_input_changes_nothing(host, args, rc, message):
    before = db_snapshot(host)
    proc = ovsvnet(host, *args, rc=rc)
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert db_snapshot(host) == before


def test_bad_files_are_refused_with_location(host, tmp_path):
    cases = {
        "(vnet (id 97) (vnif x))": ":1:16: unknown field 'vnif'",
        "(vnet (id 97) (id 98))": "duplicate field 'id'",
        "(vnet (bridge b))": "id",
        "(vnet (id 97)": "not closed",
        "(vnet (id 97)) (vnet (id 98))": "exactly one expression",
    }
    before = db_snapshot(host)
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.sxp"
        path.write_text(text + "\n")
        proc = ovsvnet(host, "create", str(path), rc=2)
        assert message in proc.stderr, (text, proc.stderr)
    assert db_snapshot(host) == before


def test_conflicts_change_nothing(host):
    host.vsctl("add-br", "foreign0", "--", "set", "Bridge", "foreign0",
               "datapath_type=netdev")
    ovsvnet(host, "create", "--id", "b1", "--vnetif", "vnifb1")
    try:
        before = db_snapshot(host)
        cases = [
            (["create", "--id", "b2", "--bridge", "foreign0"], "did not create it"),
            (["create", "--id", "b1"], "already exists"),
            (["create", "--id", "b2", "--bridge", "vnet-00b1"], "already used by vnet 00b1"),
            (["create", "--id", "b2", "--vnetif", "vnifb1"], "already used by vnet 00b1"),
            (["create", "--may-exist", "--id", "b1", "--vnetif", "other"],
             "different definition"),
        ]
        for args, message in cases:
            proc = ovsvnet(host, *args, rc=3)
            assert message in proc.stderr, (args, proc.stderr)
        assert db_snapshot(host) == before
        # an identical definition is accepted with --may-exist, and changes nothing
        ovsvnet(host, "create", "--may-exist", "--id", "b1", "--vnetif", "vnifb1")
        assert db_snapshot(host) == before
    finally:
        ovsvnet(host, "delete", "b1")
        host.vsctl("del-br", "foreign0")
    assert vs(host, "list-br").split() == ["br-phy"]


def test_racing_creates_one_wins(host):
    for round_ in range(4):
        # same id, different bridges / same bridge, different ids
        pairs = [(["--id", "c1", "--bridge", "racea"], ["--id", "c1", "--bridge", "raceb"]),
                 (["--id", "c2", "--bridge", "racec"], ["--id", "c3", "--bridge", "racec"])]
        for a, b in pairs:
            procs = [subprocess.Popen(
                ["ip", "netns", "exec", host.netns, sys.executable, "-m", "ovsvnet",
                 "--db", host.db, "create", *args],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=host.env)
                for args in (a, b)]
            results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
            codes = sorted(rc for rc, _ in results)
            assert codes == [0, 3], (round_, a, b, results)
            loser = next(err for rc, err in results if rc == 3)
            assert "already" in loser and len(loser.strip().splitlines()) == 1, loser
            listed = json.loads(ovsvnet(host, "list", "--json").stdout)
            assert len(listed) == 1
            ovsvnet(host, "delete", listed[0]["short"])


def test_delete_refuses_while_domains_are_plugged_in(host):
    ovsvnet(host, "create", "--id", "d1")
    host.vsctl("add-port", "vnet-00d1", "dom1", "--", "set", "Interface", "dom1",
               "type=internal")
    proc = ovsvnet(host, "delete", "d1", rc=3)
    assert "dom1" in proc.stderr and "--force" in proc.stderr
    assert vs(host, "br-exists", "vnet-00d1") == ""
    ovsvnet(host, "delete", "d1", "--force")
    assert host.run("ovs-vsctl", "--db", host.db, "br-exists", "vnet-00d1",
                    check=False).returncode == 2
    ovsvnet(host, "delete", "d1", rc=4)


def test_xen_aliases_and_default_vnets(host):
    ovsvnet(host, "vnet-create", str(EXAMPLES / "vnet97.sxp"))
    ovsvnet(host, "vnet-create", "e1", "-s", "none", "-v", "vnife1")
    ids = ovsvnet(host, "vnet-list").stdout.split()
    assert ids == ["0000:0000:0000:0000:0000:0000:0000:0097",
                   "0000:0000:0000:0000:0000:0000:0000:00e1"]
    long = ovsvnet(host, "vnet-list", "-l", "e1").stdout
    assert long.strip() == ("(vnet (id 0000:0000:0000:0000:0000:0000:0000:00e1) "
                            "(bridge vnet-00e1) (vnetif vnife1) (security none))")
    ovsvnet(host, "vnet-delete", "vnif97")
    ovsvnet(host, "vnet-delete", "-b", "e1")
    ovsvnet(host, "setup", "--default-vnets")
    listed = json.loads(ovsvnet(host, "list", "--json").stdout)
    assert [(v["short"], v["vnetif"]) for v in listed] == [
        ("0002", "vnif0002"), ("0003", "vnif0003"), ("0004", "vnif0004")]
    ovsvnet(host, "setup", "--default-vnets")  # idempotent
    for n in ("2", "3", "4"):
        ovsvnet(host, "delete", n)


def test_secure_vnet_is_inactive_on_the_userspace_datapath(host):
    proc = ovsvnet(host, "create", str(EXAMPLES / "vnet98.sxp"))
    try:
        assert "inactive" in proc.stderr and "userspace" in proc.stderr
        data = json.loads(ovsvnet(host, "show", "98", "--json").stdout)
        assert data["state"] == "inactive"
        # no path to the transport bridge: nothing of it can reach the underlay
        assert all(p["kind"] != "patch" for p in data["ports"])
        assert host.run("ovs-vsctl", "--db", host.db, "br-exists", "br-vnet",
                        check=False).returncode == 2
    finally:
        ovsvnet(host, "delete", "98")


def test_unreachable_ovsdb_is_one_line(host):
    proc = host.run(sys.executable, "-m", "ovsvnet", "--db", "unix:/nonexistent/db.sock", "list",
                    check=False)
    assert proc.returncode == 5
    assert proc.stderr.strip().splitlines() == [
        "ovsvnet: error: cannot reach OVSDB at unix:/nonexistent/db.sock: "
        "No such file or directory; is ovsdb-server running?"]
