"""ovs-vsctl's conventions, the pure parts: --format/--columns output, --dry-run's text (and
its transaction, against a real unprivileged ovsdb-server), and progress display."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest
from click.testing import CliRunner

from ovsvnet.cli import formats
from ovsvnet.cli.common import emit, format_options
from ovsvnet.dryrun import RowChange, staged_changes
from ovsvnet.ovsdb import Ovsdb, quiet_python_ovs
from ovsvnet.system import progress

from .conftest import VSWITCH_SCHEMA

quiet_python_ovs()

ROWS = [
    {"short": "0097", "id": "0000:0000:0000:0000:0000:0000:0000:0097", "bridge": "vnet97",
     "vnetif": None, "mtu": 1450, "domains": ["vif1.0", "vif2.0"], "static": True,
     "ports": [{"name": "vnet97", "ofport": 65534}]},
    {"short": "0098", "id": "0000:0000:0000:0000:0000:0000:0000:0098", "bridge": "a,b \"q\"",
     "vnetif": "vnif98", "mtu": None, "domains": [], "static": False, "ports": []},
]
KNOWN = ["short", "id", "bridge", "vnetif", "mtu", "domains", "static", "ports"]


# -- --columns and --format --------------------------------------------------------------------

def test_columns_are_picked_in_the_order_given():
    assert formats.parse_columns("id,bridge", KNOWN) == ("id", "bridge")
    assert formats.parse_columns(" bridge , id ", KNOWN) == ("bridge", "id")


@pytest.mark.parametrize("text, rule", [
    ("id,nosuch", "'nosuch' is not a column here"),
    ("id,,bridge", "is not COL,COL,..."),
    ("", "is not COL,COL,..."),
    ("id,id", "'id' is given twice"),
])
def test_bad_columns_name_the_option_and_the_rule(text, rule):
    with pytest.raises(ValueError) as err:
        formats.parse_columns(text, KNOWN)
    option, message = err.value.args
    assert option == "--columns" and rule in message


def test_json_is_an_alias_of_format_json_and_does_not_contradict_it():
    assert formats.choose(None, True, None, KNOWN) == formats.Format("json")
    assert formats.choose("json", True, "id", KNOWN) == formats.Format("json", ("id",))
    assert formats.choose(None, False, None, KNOWN) == formats.Format("table")
    with pytest.raises(ValueError) as err:
        formats.choose("csv", True, None, KNOWN)
    assert err.value.args == ("--json", "means --format json; it cannot go with --format csv")


def test_csv_quotes_what_needs_it_and_joins_lists():
    text = formats.render_csv(ROWS, ["short", "bridge", "domains", "mtu", "static", "ports"])
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["short", "bridge", "domains", "mtu", "static", "ports"]
    assert parsed[1] == ["0097", "vnet97", "vif1.0,vif2.0", "1450", "true",
                         '[{"name":"vnet97","ofport":65534}]']
    assert parsed[2] == ["0098", 'a,b "q"', "", "", "false", ""]  # round-trips


def test_csv_of_no_rows_is_the_header():
    assert formats.render_csv([], ["id", "bridge"]) == "id,bridge\n"


def test_table_aligns_under_upper_case_headers_and_shows_empty_as_dash():
    lines = formats.render_table(ROWS, ["short", "vnetif", "mtu"]).splitlines()
    assert lines == ["SHORT  VNETIF  MTU",
                     "0097   -       1450",
                     "0098   vnif98  -"]


def test_render_json_keeps_every_key_unless_columns_are_chosen():
    assert json.loads(formats.render(ROWS, formats.Format("json"), ["short"])) == ROWS
    picked = json.loads(formats.render(ROWS, formats.Format("json", ("mtu", "short")), []))
    assert picked == [{"mtu": 1450, "short": "0097"}, {"mtu": None, "short": "0098"}]
    assert list(picked[0]) == ["mtu", "short"]  # in the order asked


def test_render_csv_without_columns_uses_the_commands_default():
    text = formats.render(ROWS, formats.Format("csv"), ["short", "mtu"])
    assert text == "short,mtu\n0097,1450\n0098,\n"


def _listing() -> click.Command:
    @click.command()
    @format_options(KNOWN, ["short", "bridge"])
    def listing(as_json: bool) -> None:
        emit(ROWS, as_json, lambda rows: click.echo(f"own rendering of {len(rows)}"))
    return listing


@pytest.mark.parametrize("args, out", [
    ([], "own rendering of 2\n"),  # no --format: the command's own table, as before
    (["--format", "csv", "--columns", "short,mtu"], "short,mtu\n0097,1450\n0098,\n"),
    (["--format", "csv"], 'short,bridge\n0097,vnet97\n0098,"a,b ""q"""\n'),
    (["--columns", "short"], "SHORT\n0097\n0098\n"),
])
def test_format_options_on_a_command(args, out):
    result = CliRunner().invoke(_listing(), args)
    assert result.exit_code == 0, result.output
    assert result.output == out


def test_json_flag_prints_what_it_printed_before():
    result = CliRunner().invoke(_listing(), ["--json"])
    assert json.loads(result.output) == ROWS
    assert result.output == json.dumps(ROWS, indent=2, sort_keys=True) + "\n"


def test_format_errors_are_usage_errors_naming_the_option():
    result = CliRunner().invoke(_listing(), ["--columns", "short,nope"])
    assert result.exit_code == 2 and "--columns: 'nope' is not a column here" in result.output
    result = CliRunner().invoke(_listing(), ["--format", "xml"])
    assert result.exit_code == 2 and "--format" in result.output


# -- --dry-run's text ----------------------------------------------------------------------------

def test_values_print_as_ovs_vsctl_prints_them():
    assert formats.value_text(["a", "b"]) == "[a, b]"
    assert formats.value_text({"b": "2", "a": "x y"}) == '{a="x y", b=2}'
    assert formats.value_text("(vnet (id 97))") == '"(vnet (id 97))"'
    assert formats.value_text(True) == "true" and formats.value_text(1450) == "1450"


def test_row_lines_show_sets_added_and_removed():
    assert formats.row_lines("update", "Bridge", "br-vnet", [
        ("ports", "+", ["vp-97"]), ("ports", "-", ["vp-98"]),
        ("external_ids", "-", ["ovsvnet-peer-10.0.0.1"]), ("mtu_request", "=", 1450)]) == [
        "update Bridge br-vnet",
        "    ports += [vp-97]",
        "    ports -= [vp-98]",
        "    external_ids -= [ovsvnet-peer-10.0.0.1]",
        "    mtu_request=1450",
    ]


def test_flows_name_the_ports_a_change_creates():
    new = {61000: "vx-0a000007"}
    flow = "table=0,priority=100,in_port=61000,tun_src=10.0.0.7,actions=output:3,output:61000"
    assert formats.flow_text(flow, new) == ('table=0,priority=100,in_port="vx-0a000007",'
                                            'tun_src=10.0.0.7,actions=output:3,'
                                            'output:"vx-0a000007"')
    assert formats.flow_text("in_port=610001,actions=drop", new) == "in_port=610001,actions=drop"


def test_plan_lines():
    rows = [("delete", "Bridge", "vnet97", ()),
            ("update", "Open_vSwitch", ".", (("bridges", "-", ["vnet97"]),))]
    flows = [("br-vnet", ["table=40,tun_id=0x97,actions=output:3"], [], False)]
    assert formats.plan_lines(rows, flows, {}) == [
        "OVSDB: 2 row(s) would change (one transaction, sent to ovsdb-server ending in an "
        "abort: nothing committed)",
        "  delete Bridge vnet97",
        "  update Open_vSwitch .",
        "      bridges -= [vnet97]",
        "flows on br-vnet: 1 to remove, 0 to add or replace (same match)",
        "  - table=40,tun_id=0x97,actions=output:3",
    ]
    assert formats.plan_lines([], [("br-vnet", [], [], False)], {}) == [
        "OVSDB: no change", "flows on br-vnet: no change"]


# -- --dry-run's transaction (a real ovsdb-server, no switch) -----------------------------------

@pytest.fixture
def db(ovsdb_server):
    remote = ovsdb_server(VSWITCH_SCHEMA)
    client = Ovsdb(remote, timeout=5)
    client.transact(lambda txn: setattr(client.insert(txn, "Open_vSwitch"), "bridges", []))
    client.run()
    yield client
    client.close()


def _add_bridge(db: Ovsdb, name: str, dry_run: list[RowChange] | None = None) -> None:
    def build(txn):
        iface = db.insert(txn, "Interface")
        iface.name = name
        port = db.insert(txn, "Port")
        port.name = name
        port.interfaces = [iface]
        br = db.insert(txn, "Bridge")
        br.name = name
        br.fail_mode = ["standalone"]
        br.ports = [port]
        br.external_ids = {"ovsvnet-role": "vnet"}
        db.ovs.addvalue("bridges", br)
        db.ovs.setkey("external_ids", "ovsvnet-peer-10.0.0.7", "4789")
        dry(txn, dry_run)
    db.transact_vswitchd(build, wait_vswitchd=False)  # no switch here


def dry(txn, changes: list[RowChange] | None) -> None:
    """What ovsvnet.ops.sync.commit does for --dry-run at the end of its build."""
    if changes is not None:
        changes[:] = staged_changes(txn)
        txn.dry_run = True


def _dump(db: Ovsdb) -> list:
    db.run()
    return sorted((b.name, sorted(p.name for p in b.ports)) for b in db.rows("Bridge")) + \
        [dict(db.ovs.external_ids)]


def test_a_dry_run_lists_the_rows_and_commits_nothing(db):
    before = _dump(db)
    changes: list[RowChange] = []
    _add_bridge(db, "vnet97", changes)
    assert _dump(db) == before and db.bridge("vnet97") is None  # no phantom in the index
    assert changes == [
        RowChange("update", "Open_vSwitch", ".", (
            ("bridges", "+", ["vnet97"]),
            ("external_ids", "+", {"ovsvnet-peer-10.0.0.7": "4789"}))),
        RowChange("insert", "Bridge", "vnet97", (
            ("external_ids", "=", {"ovsvnet-role": "vnet"}), ("fail_mode", "=", "standalone"),
            ("name", "=", "vnet97"), ("ports", "=", ["vnet97"]))),
        RowChange("insert", "Port", "vnet97", (("interfaces", "=", ["vnet97"]),
                                               ("name", "=", "vnet97"))),
        RowChange("insert", "Interface", "vnet97", (("name", "=", "vnet97"),)),
    ]


def test_a_dry_run_of_a_delete_names_the_deleted_rows(db):
    _add_bridge(db, "vnet97")
    db.run()
    changes: list[RowChange] = []

    def build(txn):
        br = db.bridge("vnet97")
        db.ovs.delvalue("bridges", br)
        db.ovs.delkey("external_ids", "ovsvnet-peer-10.0.0.7")
        for port in br.ports:
            port.interfaces[0].delete()
            port.delete()
        br.delete()
        dry(txn, changes)
    db.transact_vswitchd(build, wait_vswitchd=False)
    assert db.bridge("vnet97") is not None
    assert changes == [
        RowChange("update", "Open_vSwitch", ".", (
            ("bridges", "-", ["vnet97"]), ("external_ids", "-", ["ovsvnet-peer-10.0.0.7"]))),
        RowChange("delete", "Bridge", "vnet97"),
        RowChange("delete", "Port", "vnet97"),
        RowChange("delete", "Interface", "vnet97"),
    ]


def test_a_dry_run_is_sent_and_aborted_by_the_server(db):
    """python-ovs's dry_run (ovs-vsctl's): the server runs the operations, then aborts."""
    before = _dump(db)

    def build(txn):
        br = db.insert(txn, "Bridge")
        br.name = "vnet97"
        db.ovs.addvalue("bridges", br)
        dry(txn, [])
    _, txn, status = db.transact(build)
    assert status == txn.SUCCESS  # the server answered every operation ...
    assert _dump(db) == before  # ... and committed none


# -- progress ------------------------------------------------------------------------------------

@pytest.mark.parametrize("isatty, quiet, forced, mode", [
    (True, False, "", "bar"), (False, False, "", "lines"), (True, True, "", "off"),
    (False, True, "", "off"), (True, False, "lines", "lines"), (False, True, "bar", "bar"),
    (False, False, "nonsense", "lines"),
])
def test_the_mode_follows_the_stream_unless_quiet_or_forced(isatty, quiet, forced, mode):
    assert progress.choose_mode(isatty, quiet, forced) == mode


def test_bar_line():
    assert progress.bar_line("create 500 vnets", "waiting for ovs-vswitchd", 2, 4, 1.25) == \
        "create 500 vnets [##########..........] 2/4 1.2s waiting for ovs-vswitchd"
    cut = progress.bar_line("create 500 vnets", "waiting for ovs-vswitchd", 9, 4, 3, width=60)
    assert cut == "create 500 vnets [####################] 4/4 3.0s waiting f…"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_of_a_large_task_come_at_once():
    out, clock = io.StringIO(), Clock()
    p = progress.Progress("create 200 vnets", 3, out, "lines", large=True, clock=clock)
    p.phase("staging")
    clock.now += 0.5
    p.phase("committing")
    p.close(ok=True)
    assert out.getvalue() == ("create 200 vnets: staging [0.0 s]\n"
                              "create 200 vnets: committing [0.5 s]\n"
                              "create 200 vnets: done [0.5 s]\n")


def test_a_quick_task_that_is_not_large_prints_nothing():
    out, clock = io.StringIO(), Clock()
    p = progress.Progress("sync", 3, out, "lines", large=False, clock=clock)
    p.phase("staging")
    clock.now += 0.4
    p.tick()
    p.close(ok=True)
    assert out.getvalue() == ""


def test_a_slow_task_prints_its_held_lines_then_goes_on():
    out, clock = io.StringIO(), Clock()
    p = progress.Progress("sync", 3, out, "lines", large=False, clock=clock)
    p.phase("staging")
    clock.now += 1.5
    p.tick()  # past LINES_AFTER: the held line comes out
    assert out.getvalue() == "sync: staging [0.0 s]\n"
    clock.now += progress.EVERY
    p.tick()  # a long wait says it goes on
    p.close(ok=True)
    assert out.getvalue().splitlines()[1:] == ["sync: still staging [11.5 s]",
                                               "sync: done [11.5 s]"]


def test_the_bar_waits_then_redraws_in_place_and_leaves_no_trace():
    out, clock = io.StringIO(), Clock()
    p = progress.Progress("create 500 vnets", 2, out, "bar", clock=clock)
    p.phase("staging")
    assert out.getvalue() == ""  # not before DELAY: a quick command never flashes a bar
    clock.now += 1
    p.phase("committing")
    p.close(ok=True)
    assert out.getvalue().startswith("\r\x1b[Kcreate 500 vnets [####################] 2/2")
    assert out.getvalue().endswith("\r\x1b[K")


def test_a_task_shows_nothing_when_quiet_and_phases_without_a_task_are_no_ops():
    out = io.StringIO()
    progress.phase("nobody listens")  # the agent's own passes
    with progress.task("list", 1, large=True, quiet=True, stream=out):
        assert not progress.active()
        progress.phase("reading")
    with progress.task("create 200 vnets", 1, large=True, stream=out):
        assert progress.active()
        progress.phase("reading")
    assert not progress.active()
    assert out.getvalue().splitlines()[0].startswith("create 200 vnets: reading")


def test_a_broken_stderr_never_fails_the_command():
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("EPIPE")
    p = progress.Progress("x", 1, Broken(), "lines")
    p.phase("a")
    p.close(ok=True)
    assert p.mode == "off"
