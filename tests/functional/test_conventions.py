"""ovs-vsctl's conventions on a real lab host: --if-exists, --may-exist, --format/--columns,
--dry-run (OVSDB rows and flows shown, nothing changed), progress on stderr; the same with
an agent running the commands on its replica."""

from __future__ import annotations

import csv
import io
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovsvnet import model as M
from ovsvnet.cli.common import VNET_KEYS
from ovsvnet.cli.host import PEER_KEYS, VIF_KEYS
from ovsvnet.lab import Lab, LabHost
from ovsvnet.system import flowstore

from .helpers import db_snapshot, flow_dump, ovsvnet
from .test_agent import lab_with_agents

pytestmark = pytest.mark.root

PEER = "192.0.2.7"  # a documentation address: a tunnel to it carries nothing anywhere


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[LabHost, LabHost]]:
    """h1 for the conventions (each test leaves it as it found it), h2 for a big batch."""
    with Lab() as lab:
        lab.add_segment("s1")
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        ovsvnet(h1, "create", "--id", "97", "--vnetif", "vnif97")
        ovsvnet(h1, "peer-add", h2.address)
        yield h1, h2


@pytest.fixture
def host(hosts: tuple[LabHost, LabHost]) -> LabHost:
    return hosts[0]


def state(host: LabHost) -> tuple[object, list[str], bytes]:
    """The database, the transport bridge's flows and ovsvnet's record of them."""
    record = flowstore.record_path(str(host.dir), M.TRANSPORT_BRIDGE)
    return db_snapshot(host), flow_dump(host, M.TRANSPORT_BRIDGE), record.read_bytes()


# -- --if-exists ---------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", [("delete", "99"), ("vnet-delete", "99"),
                                  ("peer-delete", "192.0.2.99")])
def test_if_exists_makes_a_missing_target_a_success(host, verb):
    before = state(host)
    missing = ovsvnet(host, *verb, rc=4)
    assert missing.stdout == "" and len(missing.stderr.splitlines()) == 1
    done = ovsvnet(host, *verb, "--if-exists")
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        f"{'peer' if verb[0] == 'peer-delete' else 'vnet'} {verb[1]}: "
        + ("no static peer" if verb[0] == "peer-delete" else "not on this host")
        + ", nothing to delete (--if-exists)"]
    assert state(host) == before


def test_if_exists_on_vif_delete_needs_the_vnet_as_ovs_vsctl_needs_the_bridge(host):
    before = state(host)
    ovsvnet(host, "vif-delete", "97", "aa:00:00:00:00:01", rc=4)
    out = ovsvnet(host, "vif-delete", "97", "aa:00:00:00:00:01", "--if-exists").stdout
    assert out == "vnet 0097: aa:00:00:00:00:01 is not known, nothing to forget (--if-exists)\n"
    ovsvnet(host, "vif-delete", "99", "aa:00:00:00:00:01", "--if-exists", rc=4)
    assert state(host) == before


def test_if_exists_deletes_what_exists(host):
    ovsvnet(host, "create", "--id", "96")
    before_96 = ovsvnet(host, "list", "--format", "csv", "--columns", "short").stdout
    assert "0096" in before_96
    assert ovsvnet(host, "delete", "96", "--if-exists").stdout.startswith("vnet 0096 deleted")
    assert "0096" not in ovsvnet(host, "list", "--format", "csv", "--columns", "short").stdout


# -- --may-exist ---------------------------------------------------------------------------------

def peer_port(host: LabHost, address: str) -> str | None:
    out = host.vsctl("--if-exists", "get", "Open_vSwitch", ".",
                     f'external_ids:"{M.PEER_PREFIX}{address}"').strip()
    return out.strip('"') or None


def test_peer_add_may_exist(host):
    added = ovsvnet(host, "peer-add", PEER)
    assert added.stdout == f"peer {PEER} added (port 4789)\n"
    # the same peer again: no error (Xen's vn peer-add was idempotent), nothing changes
    before = state(host)
    assert ovsvnet(host, "peer-add", PEER).stdout == f"peer {PEER} already present (port 4789)\n"
    assert ovsvnet(host, "peer-add", PEER, "--may-exist").stdout == \
        f"peer {PEER} already present (port 4789)\n"
    # another port: a conflict, unless --may-exist, which then changes it
    refused = ovsvnet(host, "peer-add", PEER, "--port", "4790", rc=3)
    assert refused.stderr == (f"ovsvnet: error: peer: {PEER} already exists with port 4789; "
                              "--may-exist changes it to 4790\n")
    assert state(host) == before
    changed = ovsvnet(host, "peer-add", PEER, "--port", "4790", "--may-exist")
    assert changed.stdout == f"peer {PEER}: port is changed from 4789 to 4790\n"
    assert peer_port(host, PEER) == "4790"
    ovsvnet(host, "peer-delete", PEER)
    assert peer_port(host, PEER) is None


def test_create_may_exist_is_unchanged(host):
    ovsvnet(host, "create", "--id", "97", "--vnetif", "vnif97", rc=3)
    out = ovsvnet(host, "create", "--id", "97", "--vnetif", "vnif97", "--may-exist").stdout
    assert out.startswith("vnet 0097 exists (identical)")


# -- --format, --columns -------------------------------------------------------------------------

def test_list_as_csv_with_chosen_columns(host):
    ovsvnet(host, "create", "--id", "98")
    try:
        out = ovsvnet(host, "list", "--format", "csv", "--columns", "id,bridge").stdout
        assert list(csv.reader(io.StringIO(out))) == [
            ["id", "bridge"],
            ["0000:0000:0000:0000:0000:0000:0000:0097", "vnet-0097"],
            ["0000:0000:0000:0000:0000:0000:0000:0098", "vnet-0098"]]
        table = ovsvnet(host, "list", "--columns", "short,vnetif,mtu").stdout
        assert table.splitlines() == ["SHORT  VNETIF  MTU", "0097   vnif97  1450",
                                      "0098   -       1450"]
        picked = json.loads(ovsvnet(host, "list", "--format", "json", "--columns",
                                    "short,state").stdout)
        assert picked == [{"short": "0097", "state": "active"},
                          {"short": "0098", "state": "active"}]
        # --json stays what it was, and equals --format json
        assert ovsvnet(host, "list", "--json").stdout == \
            ovsvnet(host, "list", "--format", "json").stdout
    finally:
        ovsvnet(host, "delete", "98")


def test_every_key_of_the_json_rows_is_a_documented_column(host):
    for command, known in (("list", VNET_KEYS), ("peers", PEER_KEYS), ("vifs", VIF_KEYS)):
        rows = json.loads(ovsvnet(host, command, "--json").stdout)
        assert rows or command == "vifs", command
        for row in rows:
            assert set(row) <= set(known), (command, set(row) - set(known))


@pytest.mark.parametrize("args, rule", [
    (("list", "--columns", "id,nosuch"), "--columns: 'nosuch' is not a column here"),
    (("peers", "--json", "--format", "csv"), "--json: means --format json; it cannot go with "
                                            "--format csv"),
    (("list", "--format", "xml"), "--format"),
])
def test_format_errors_are_one_line_naming_the_option(host, args, rule):
    proc = ovsvnet(host, *args, rc=2)
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1 and rule in proc.stderr


def test_peers_and_bridges_as_csv(host, hosts):
    peers = list(csv.DictReader(io.StringIO(ovsvnet(host, "peers", "--format", "csv").stdout)))
    assert [(p["address"], p["static"], p["tunnel_state"]) for p in peers] == \
        [(hosts[1].address, "true", "up")]
    out = ovsvnet(host, "bridges", "--format", "csv", "--columns", "name,role").stdout
    assert {"name,role", "br-vnet,transport", "vnet-0097,vnet 0097"} <= set(out.splitlines())


# -- --dry-run -----------------------------------------------------------------------------------

def test_dry_run_of_create_shows_the_rows_and_flows_and_changes_nothing(host):
    before = state(host)
    out = ovsvnet(host, "create", "--id", "95", "--vnetif", "vnif95", "--dry-run").stdout
    assert state(host) == before
    lines = out.splitlines()
    assert lines[0] == "vnet 0095 would be created: bridge vnet-0095, security none"
    assert lines[-1] == "dry run: nothing was changed"
    for row in ("update Open_vSwitch .", "insert Bridge vnet-0095", "insert Port vnif95",
                f"insert Interface {M.transport_patch_name(0x95)}",
                f"update Bridge {M.TRANSPORT_BRIDGE}"):
        assert f"  {row}" in lines, row
    assert "      bridges += [vnet-0095]" in lines
    assert "      fail_mode=standalone" in lines
    # the flows, with the patch port not created yet named (ovs-vswitchd numbers it later)
    patch = f'"{M.transport_patch_name(0x95)}"'
    assert f"flows on {M.TRANSPORT_BRIDGE}: 0 to remove, 6 to add or replace (same match)" \
        in lines
    assert any(f"table=0,priority=100,in_port={patch}" in line for line in lines)
    assert any("table=40" in line and "tun_id=0x95" in line for line in lines)
    # the real create makes what the dry run said
    ovsvnet(host, "create", "--id", "95", "--vnetif", "vnif95")
    try:
        flows = flow_dump(host, M.TRANSPORT_BRIDGE)
        assert len([f for f in flows if "0x6f76020000000095" in f]) == 6
    finally:
        ovsvnet(host, "delete", "95")


def test_dry_run_of_delete_and_peer_changes(host, hosts):
    ovsvnet(host, "create", "--id", "98")  # so that deleting 97 leaves the transport bridge
    before = state(host)
    out = ovsvnet(host, "delete", "97", "--dry-run").stdout.splitlines()
    assert out[0] == "vnet 0097 would be deleted (bridge vnet-0097)"
    assert "  delete Bridge vnet-0097" in out and "      bridges -= [vnet-0097]" in out
    assert f"flows on {M.TRANSPORT_BRIDGE}: 6 to remove, 0 to add or replace (same match)" in out
    assert len([line for line in out if line.startswith("  - ") and "0x6f76020000000097" in line
                ]) == 6
    out = ovsvnet(host, "peer-add", PEER, "--dry-run").stdout.splitlines()
    assert out[0] == f"peer {PEER} would be added (port 4789)"
    assert f"      external_ids += {{{M.PEER_PREFIX}{PEER}=4789}}" in out
    assert any(line.startswith("  insert Interface vx-") for line in out)
    assert any(f"tun_src={PEER}" in line and line.startswith("  + ") for line in out)
    out = ovsvnet(host, "peer-delete", hosts[1].address, "--dry-run").stdout.splitlines()
    assert out[0] == f"peer {hosts[1].address} would be deleted"
    assert any(line.startswith("  delete Interface vx-") for line in out)
    assert any(f"tun_src={hosts[1].address}" in line and line.startswith("  - ")
               for line in out)
    out = ovsvnet(host, "sync", "--dry-run").stdout.splitlines()
    assert out == ["OVSDB: no change", f"flows on {M.TRANSPORT_BRIDGE}: no change",
                   "dry run: nothing was changed"]
    assert state(host) == before
    ovsvnet(host, "delete", "98")


def test_dry_run_of_sync_shows_the_repair_it_would_make(host):
    """A flow deleted by hand: sync --full --dry-run finds it, and only sync repairs it."""
    host.run("ovs-ofctl", "del-flows", "--strict", M.TRANSPORT_BRIDGE,
             "table=40,priority=100,tun_id=0x97")
    broken = state(host)
    out = ovsvnet(host, "sync", "--full", "--dry-run").stdout.splitlines()
    assert f"flows on {M.TRANSPORT_BRIDGE}: 0 to remove, 1 to add or replace (same match)" in out
    assert state(host) == broken
    ovsvnet(host, "sync", "--full")
    assert any("table=40" in f and "tun_id=0x97" in f
               for f in flow_dump(host, M.TRANSPORT_BRIDGE))


def test_dry_run_with_registry_is_refused(host):
    proc = ovsvnet(host, "--registry", "tcp:127.0.0.1:1", "create", "--id", "94", "--dry-run",
                   rc=2)
    assert "--dry-run:" in proc.stderr and len(proc.stderr.splitlines()) == 1


# -- progress ------------------------------------------------------------------------------------

def sxp_files(directory: Path, first: int, count: int) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(first, first + count):
        path = directory / f"v{n:x}.sxp"
        path.write_text(f"(vnet (id {n:x}))\n")
        files.append(str(path))
    return files


def test_a_batch_create_shows_progress_lines_on_stderr_only(hosts, tmp_path):
    h2 = hosts[1]
    files = sxp_files(tmp_path, 0x1000, 200)
    proc = ovsvnet(h2, "create", *files, timeout=120)
    out = proc.stdout.splitlines()
    assert len(out) == 200 and all(" created: bridge vnet-" in line for line in out)
    progress = proc.stderr.splitlines()
    assert progress[0].startswith("create 200 vnets: ")
    assert any(line.startswith("create 200 vnets: committing; ovs-vswitchd applies the change [")
               for line in progress)
    assert progress[-1].startswith("create 200 vnets: done [")
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr  # not a terminal: no bar
    # nothing for JSON, nothing for a small change
    listed = ovsvnet(h2, "list", "--json")
    assert len(json.loads(listed.stdout)) == 200 and listed.stderr == ""
    assert ovsvnet(h2, "create", "--id", "97").stderr == ""


def test_on_a_terminal_the_bar_is_drawn_in_place_and_erased(hosts, tmp_path):
    """OVSVNET_PROGRESS=bar draws what a terminal gets (this test has none)."""
    h2 = hosts[1]
    files = sxp_files(tmp_path, 0x2000, 150)
    proc = h2.run("env", "OVSVNET_PROGRESS=bar", sys.executable, "-m", "ovsvnet", "--db", h2.db,
                  "create", *files, timeout=120)
    assert len(proc.stdout.splitlines()) == 150
    # (read as text, each "\r" that returns to the line's start arrives as "\n")
    assert "\x1b[Kcreate 150 vnets [" in proc.stderr and proc.stderr.endswith("\x1b[K")


# -- the same with an agent ---------------------------------------------------------------------

FAST_PATH = textwrap.dedent("""
    import json, sys
    from ovsvnet.cli import delegate
    print(json.dumps(delegate.fast_path(sys.argv[1:], "ovsvnet")))
""")


def in_agent(host: LabHost, *args: str) -> tuple[int, str, str]:
    """Run a command through the agent only (no fallback): (exit code, stdout, stderr)."""
    proc = host.run(sys.executable, "-c", FAST_PATH, "--db", host.db, *args, timeout=120)
    done = json.loads(proc.stdout)
    assert done is not None, ("the agent did not run", args)
    return done[0], done[1], done[2]


def test_the_same_flags_behave_the_same_in_the_agent(tmp_path):
    with lab_with_agents("s1") as (lab, agents):
        h1 = lab.add_host("h1", "s1")
        ovsvnet(h1, "create", "--id", "97")
        agents.start(h1)
        before = state(h1)
        assert in_agent(h1, "delete", "99")[0] == 4
        assert in_agent(h1, "delete", "99", "--if-exists") == (
            0, "vnet 99: not on this host, nothing to delete (--if-exists)\n", "")
        assert in_agent(h1, "peer-delete", PEER, "--if-exists")[0] == 0
        code, out, _ = in_agent(h1, "create", "--id", "95", "--dry-run")
        assert code == 0 and "  insert Bridge vnet-0095" in out.splitlines()
        # the agent's replica (and its name index) never saw the rows of the dry run
        assert in_agent(h1, "sync", "--bridge", "vnet-0095")[0] == 4
        code, out, _ = in_agent(h1, "delete", "97", "--dry-run")  # the last vnet: br-vnet goes
        assert code == 0 and {"  delete Bridge vnet-0097", f"  delete Bridge {M.TRANSPORT_BRIDGE}",
                              f"flows on {M.TRANSPORT_BRIDGE}: all go with the bridge"
                              } <= set(out.splitlines())
        assert state(h1) == before
        assert in_agent(h1, "list", "--format", "csv", "--columns", "short,bridge") == (
            0, "short,bridge\n0097,vnet-0097\n", "")
        assert in_agent(h1, "peer-add", PEER)[0] == 0
        code, _, err = in_agent(h1, "peer-add", PEER, "--port", "4790")
        assert code == 3 and "--may-exist changes it to 4790" in err
        assert in_agent(h1, "peer-add", PEER, "--port", "4790", "--may-exist")[0] == 0
        assert peer_port(h1, PEER) == "4790"
        # a batch from files is not handed over (the agent may not see the caller's files:
        # systemd's ProtectHome), it runs here, with its progress lines on stderr
        files = sxp_files(tmp_path, 0x3000, 120)
        proc = h1.run(sys.executable, "-c", FAST_PATH, "--db", h1.db, "create", *files)
        assert json.loads(proc.stdout) is None
        proc = ovsvnet(h1, "create", *files)
        assert len(proc.stdout.splitlines()) == 120
        assert proc.stderr.splitlines()[-1].startswith("create 120 vnets: done [")
        assert "\r" not in proc.stderr
        assert state(h1)[0] != before[0]  # the real changes were made
