"""Integrations against lab hosts: the xend network-script and libvirt hook (scripts/), the vn
verbs, the doctor and the demo.

One module lab: hosts h1 and h2 on one segment, vnet 97 (examples/vnet97.sxp) on both with
static peers, guest g1 on h1 and g2 on h2. The scripts run inside h1's namespace with
OVSVNET / OVSVNET_DB pointing at h1, as xend and libvirtd would run them on a real host.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ovsvnet import ipsec
from ovsvnet.lab import Lab, LabHost, netns_exists, wait_until

from .helpers import db_snapshot
from .helpers import ovsvnet as ok

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "network-vnet"
HOOK = ROOT / "scripts" / "libvirt-hook"
EXAMPLE = ROOT / "examples" / "vnet97.sxp"
XEND_ARGS = ["vifnum=0", "bridge=xenbr0", "netdev=eth0", "antispoof=no"]  # xen_vnet.md §5.3

DOMAIN_XML = """\
<domain type='kvm'>
  <name>dom1</name>
  <uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809</uuid>
  <memory unit='KiB'>524288</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <interface type='bridge'>
      <mac address='52:54:00:97:00:01'/>
      <source bridge='vnet97'/>
      <virtualport type='openvswitch'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:00:00:02'/>
      <source bridge='br-other'/>
      <virtualport type='openvswitch'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""

NETWORK_XML = """\
<network>
  <name>net97</name>
  <forward mode='bridge'/>
  <bridge name='vnet97'/>
  <virtualport type='openvswitch'/>
</network>
"""


@pytest.fixture(scope="module")
def net():
    with Lab() as lab:
        lab.add_segment("s1")
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h, other in ((h1, h2), (h2, h1)):
            ok(h, "create", str(EXAMPLE))
            ok(h, "peer-add", other.address)
        mtu = json.loads(ok(h1, "show", "97", "--json").stdout)["mtu"]
        lab.add_guest("g1", "h1", "vnet97", ip="10.97.0.1/24", mtu=mtu)
        lab.add_guest("g2", "h2", "vnet97", ip="10.97.0.2/24", mtu=mtu)
        assert lab.guest("g1").ping("10.97.0.2", count=1, timeout=10)
        yield lab


def script(host: LabHost, argv: list[str], env: dict[str, str] | None = None,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a script in the host's namespace, ovsvnet pointed at this host's OVS."""
    envs = {"OVSVNET": f"{sys.executable} -m ovsvnet", "OVSVNET_DB": host.db,
            "OVSVNET_SYSLOG": "no", "OVSVNET_DEFAULTS": "/nonexistent/ovsvnet", **(env or {})}
    return host.run("env", *[f"{k}={v}" for k, v in envs.items()], *argv, check=False,
                    input=input, timeout=60)


def fake(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def break_vnet97(host: LabHost) -> None:
    """What an admin's mistake or a crash leaves: the patch port and br-vnet's flows gone."""
    host.vsctl("del-port", "vnet97", "vt-000097")
    host.ofctl("del-flows", "br-vnet")
    assert "vt-000097" not in host.vsctl("list-ports", "vnet97")


def assert_vnet97_in_place(host: LabHost) -> None:
    assert "vt-000097" in host.vsctl("list-ports", "vnet97").split()
    flows = host.ofctl("dump-flows", "br-vnet", "cookie=0x6f76020000000097/-1")
    assert "tun_id=0x97" in flows, flows
    assert "cookie=0x6f760c" in host.ofctl("dump-flows", "br-vnet", "table=200")  # canary


# -- xend network-script -------------------------------------------------------------------

def test_xend_start_restores_the_vnets_and_hands_over_to_network_bridge(net, tmp_path):
    h1 = net.host("h1")
    calls = tmp_path / "calls"
    nb = fake(tmp_path / "network-bridge", f'echo "$*" >> {calls}\necho "bridge up"\n')
    break_vnet97(h1)
    proc = script(h1, ["sh", str(SCRIPT), "start", *XEND_ARGS],
                  {"NETWORK_BRIDGE": str(nb), "SYSTEMCTL": "false"})
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    out = proc.stdout
    assert "Open vSwitch answers" in out
    assert "agent: no systemd unit ovsvnet-agent.service installed" in out
    assert re.search(r"vnets: synced: \d+ flow changes", out), out
    assert "bridge up" in out
    assert calls.read_text().splitlines() == ["start " + " ".join(XEND_ARGS)]
    assert_vnet97_in_place(h1)
    assert net.guest("g1").ping("10.97.0.2", count=1, timeout=10)


def test_xend_start_with_an_agent_unit_and_a_vnet_as_xend_bridge(net, tmp_path):
    """The agent's unit is started when installed; bridge=<a vnet> is not given to
    network-bridge (it would build a Linux bridge of that name)."""
    h1 = net.host("h1")
    log = tmp_path / "systemctl.log"
    systemctl = fake(tmp_path / "systemctl", f"""\
        echo "$*" >> {log}
        case $1 in cat) exit 0 ;; is-active) exit 3 ;; start) exit 0 ;; esac
        exit 1
    """)
    calls = tmp_path / "calls"
    nb = fake(tmp_path / "network-bridge", f'echo "$*" >> {calls}\n')
    proc = script(h1, ["sh", str(SCRIPT), "start", "vifnum=0", "bridge=vnet97"],
                  {"NETWORK_BRIDGE": str(nb), "SYSTEMCTL": str(systemctl)})
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "agent: started ovsvnet-agent.service" in proc.stdout
    assert "vnets: in sync" in proc.stdout
    assert "network-bridge: skipped: bridge=vnet97 is an ovsvnet vnet" in proc.stdout
    assert log.read_text().splitlines() == [
        "cat ovsvnet-agent.service", "is-active --quiet ovsvnet-agent.service",
        "start ovsvnet-agent.service"]
    assert not calls.exists()
    # A failing unit is reported, and the exit code says so.
    fake(systemctl, 'case $1 in cat) exit 0 ;; *) exit 1 ;; esac\n')
    proc = script(h1, ["sh", str(SCRIPT), "start", *XEND_ARGS],
                  {"NETWORK_BRIDGE": "", "SYSTEMCTL": str(systemctl)})
    assert proc.returncode == 1
    assert "could not start ovsvnet-agent.service" in proc.stdout


def test_xend_status_and_stop(net, tmp_path):
    h1 = net.host("h1")
    calls = tmp_path / "calls"
    nb = fake(tmp_path / "network-bridge", f'echo "$*" >> {calls}\n')
    before = db_snapshot(h1)
    proc = script(h1, ["sh", str(SCRIPT), "status", *XEND_ARGS], {"NETWORK_BRIDGE": str(nb)})
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "host: datapath netdev" in proc.stdout
    assert re.search(rf"{net.host('h2').address}\s+all\s+vx-\w+\s+up", proc.stdout), proc.stdout
    proc = script(h1, ["sh", str(SCRIPT), "stop", *XEND_ARGS], {"NETWORK_BRIDGE": str(nb)})
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "vnets stay defined" in proc.stdout
    assert calls.read_text().splitlines() == [f"{a} {' '.join(XEND_ARGS)}"
                                              for a in ("status", "stop")]
    assert db_snapshot(h1) == before  # status and stop change nothing


# -- libvirt hook ------------------------------------------------------------------------------

def test_libvirt_qemu_hook_prepares_vnet_bridges_and_ignores_others(net, tmp_path):
    h1 = net.host("h1")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    qemu = hooks / "qemu"
    qemu.symlink_to(SCRIPT)  # installed as /etc/libvirt/hooks/qemu
    break_vnet97(h1)
    proc = script(h1, [str(qemu), "dom1", "prepare", "begin", "-"], input=DOMAIN_XML)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout == ""  # libvirt may read stdout as a replacement XML
    assert "bridge br-other is not an ovsvnet vnet; ignored" in proc.stderr
    assert "qemu dom1 prepare: vnet bridge(s) vnet97 in place" in proc.stderr
    assert_vnet97_in_place(h1)
    assert h1.run("ovs-vsctl", "br-exists", "br-other", check=False).returncode == 2
    # The rest of a domain's life does nothing, harmlessly (prepare comes before every
    # start, restore and incoming migration: one sync per start).
    before = db_snapshot(h1)
    for op, sub in (("start", "begin"), ("started", "begin"), ("migrate", "begin"),
                    ("restore", "begin"), ("stopped", "end"), ("release", "end")):
        proc = script(h1, [str(qemu), "dom1", op, sub, "-"], input=DOMAIN_XML)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), op
    assert db_snapshot(h1) == before
    # A domain with no vnet bridge needs no sync; one whose vnet OVS cannot reach fails.
    plain = DOMAIN_XML.replace("vnet97", "virbr0")
    proc = script(h1, [str(qemu), "dom2", "prepare", "begin", "-"], input=plain)
    assert proc.returncode == 0 and "in place" not in proc.stderr, proc.stderr
    proc = script(h1, [str(qemu), "dom1", "prepare", "begin", "-"], input=DOMAIN_XML,
                  env={"OVSVNET_DB": "unix:/nonexistent/db.sock"})
    assert proc.returncode == 5, proc.stderr
    assert "Open vSwitch does not answer" in proc.stderr


def test_libvirt_network_hook_through_the_wrapper(net, tmp_path):
    h1 = net.host("h1")
    hookdir = tmp_path / "hooks" / "network.d"
    hookdir.mkdir(parents=True)
    (hookdir / "ovsvnet").symlink_to(HOOK)  # /etc/libvirt/hooks/network.d/ovsvnet
    break_vnet97(h1)
    proc = script(h1, [str(hookdir / "ovsvnet"), "net97", "start", "begin", "-"],
                  input=NETWORK_XML)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "network net97 start: vnet bridge(s) vnet97 in place" in proc.stderr
    assert_vnet97_in_place(h1)


def bare_hook(host: LabHost, argv: list[str], input: str, **extra: str
              ) -> subprocess.CompletedProcess[str]:
    """The hook as libvirtd runs it: only LC_ALL, PATH and HOME (no OVSVNET), with the
    ovsvnet command found on PATH (here: the virtualenv's)."""
    path = f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"
    envs = {"LC_ALL": "C", "PATH": path, "HOME": "/root", "OVSVNET_DB": host.db,
            "OVSVNET_SYSLOG": "no", "OVSVNET_DEFAULTS": "/nonexistent/ovsvnet", **extra}
    return host.run("env", "-i", *[f"{k}={v}" for k, v in envs.items()], *argv, check=False,
                    input=input, timeout=60)


def test_libvirt_hook_in_libvirtds_bare_environment(net, tmp_path):
    """libvirtd gives hooks no OVSVNET; the hook must find ovsvnet on PATH, not recurse."""
    h1 = net.host("h1")
    break_vnet97(h1)
    proc = bare_hook(h1, [str(SCRIPT), "hook", "qemu", "dom1", "prepare", "begin", "-"],
                     DOMAIN_XML)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "recursion" not in proc.stderr
    assert "qemu dom1 prepare: vnet bridge(s) vnet97 in place" in proc.stderr
    assert_vnet97_in_place(h1)


def test_libvirt_hook_never_fails_a_running_domain(net, tmp_path):
    """reconnect/attach concern a running domain: libvirtd kills it when the hook fails."""
    h1 = net.host("h1")
    gone = {"OVSVNET_DB": "unix:/nonexistent/db.sock"}
    for op in ("reconnect", "attach"):
        proc = bare_hook(h1, [str(SCRIPT), "hook", "qemu", "dom1", op, "begin", "-"],
                         DOMAIN_XML, **gone)
        assert proc.returncode == 0, (op, proc.stderr)
        assert "keeps running" in proc.stderr and "exit 5 ignored" in proc.stderr
    # starting a domain on a vnet OVS cannot serve still fails, with the real exit code
    proc = bare_hook(h1, [str(SCRIPT), "hook", "qemu", "dom1", "prepare", "begin", "-"],
                     DOMAIN_XML, **gone)
    assert proc.returncode == 5, proc.stderr


def test_hook_reports_a_failed_sync_with_its_exit_code(net, tmp_path):
    h1 = net.host("h1")
    fake_ovsvnet = fake(tmp_path / "ovsvnet", f"""\
        if [ "$3" = sync ]; then echo "boom" >&2; exit 5; fi
        exec {sys.executable} -m ovsvnet "$@"
        """)
    proc = script(h1, [str(SCRIPT), "hook", "qemu", "dom1", "prepare", "begin", "-"],
                  input=DOMAIN_XML, env={"OVSVNET": str(fake_ovsvnet)})
    assert proc.returncode == 5, proc.stderr
    # libvirt shows a failed hook's stderr as the error: one line, what failed and why
    assert proc.stderr == ("network-vnet: error: dom1: ovsvnet sync --bridge vnet97 failed "
                           "(exit 5): boom\n")


def sync_takes_bridges() -> bool:
    out = subprocess.run([sys.executable, "-m", "ovsvnet", "sync", "--help"],
                         capture_output=True, text=True, timeout=60).stdout
    return "--bridge" in out


def test_hook_syncs_only_the_bridges_the_xml_names(net, tmp_path):
    if not sync_takes_bridges():
        pytest.skip("this ovsvnet has no 'sync --bridge' yet (the hook then syncs all)")
    h1 = net.host("h1")
    ok(h1, "create", "--id", "98", "--bridge", "br98")
    try:
        break_vnet97(h1)
        h1.vsctl("del-port", "br98", "vt-000098")
        proc = script(h1, [str(SCRIPT), "hook", "qemu", "dom1", "prepare", "begin", "-"],
                      input=DOMAIN_XML)
        assert proc.returncode == 0, proc.stderr
        assert_vnet97_in_place(h1)
        assert "vt-000098" not in h1.vsctl("list-ports", "br98").split()  # not named: untouched
    finally:
        ok(h1, "delete", "98")


def test_network_hook_operations(net, tmp_path):
    """libvirt >= 6 calls networks' hooks with start, started, port-created, port-deleted,
    updated, stopped: start may fail (the network would sit on a broken vnet), a port on a
    running network never fails, the rest need nothing."""
    h1 = net.host("h1")
    port_xml = (f"<hookData>{NETWORK_XML}<networkport><uuid>8d2e3f4a-0000-4000-8000-"
                "000000000001</uuid><owner><name>dom1</name></owner><mac address="
                "'52:54:00:97:00:01'/></networkport></hookData>")
    break_vnet97(h1)
    proc = script(h1, [str(SCRIPT), "hook", "network", "net97", "port-created", "begin", "-"],
                  input=port_xml)
    assert proc.returncode == 0, proc.stderr
    assert "network net97 port-created: vnet bridge(s) vnet97 in place" in proc.stderr
    assert_vnet97_in_place(h1)
    before = db_snapshot(h1)
    for op, sub in (("port-deleted", "begin"), ("started", "begin"), ("stopped", "end")):
        proc = script(h1, [str(SCRIPT), "hook", "network", "net97", op, sub, "-"],
                      input=port_xml, env={"OVSVNET": "false"})
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), op
    assert db_snapshot(h1) == before
    gone = {"OVSVNET_DB": "unix:/nonexistent/db.sock"}
    proc = script(h1, [str(SCRIPT), "hook", "network", "net97", "port-created", "begin", "-"],
                  input=port_xml, env=gone)
    assert proc.returncode == 0 and "keeps running" in proc.stderr, proc.stderr
    proc = script(h1, [str(SCRIPT), "hook", "network", "net97", "start", "begin", "-"],
                  input=NETWORK_XML, env=gone)
    assert proc.returncode == 5
    assert proc.stderr.count("\n") == 1 and "Open vSwitch does not answer at " \
        "unix:/nonexistent/db.sock: cannot put bridge(s) vnet97 in place" in proc.stderr


# -- vn verbs -------------------------------------------------------------------------------

VN_DRIVER = r"""
import contextlib, io, json, sys
from ovsvnet.cli import main
out = []
for argv in json.load(sys.stdin):
    o, e = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            main(argv, prog_name="vn")
        except SystemExit as exc:
            code = exc.code or 0
    out.append([argv, code, o.getvalue(), e.getvalue()])
print(json.dumps(out))
"""


def vn(host: LabHost, *commands: list[str]) -> list[tuple[int, str, str]]:
    """Run several vn commands in the host's namespace, in one process (imports once)."""
    argvs = [["--db", host.db, *c] for c in commands]
    proc = host.run(sys.executable, "-c", VN_DRIVER, input=json.dumps(argvs), timeout=120)
    return [(code, o, e) for _, code, o, e in json.loads(proc.stdout)]


def test_vn_console_script_has_every_verb(net):
    vn_bin = Path(sys.executable).parent / "vn"
    if not vn_bin.exists():
        pytest.skip("the vn console script is not installed in this environment")
    out = net.host("h1").run(str(vn_bin), "--db", net.host("h1").db, "--help").stdout
    for verb in ("vnets", "vnifs", "vifs", "vif-add", "vif-delete", "varp", "varp-flush",
                 "vnet-create", "vnet-delete", "vnet-list", "peers", "peer-add",
                 "peer-delete", "bridges", "insmod"):
        assert re.search(rf"^  {re.escape(verb)}\s", out, re.M), verb
    assert net.host("h1").run(str(vn_bin), "--db", net.host("h1").db,
                              "vnets").stdout.startswith("ID")


def test_vn_listing_verbs(net):
    h1 = net.host("h1")
    g1, g2 = net.guest("g1"), net.guest("g2")
    assert g1.ping(g2.addr, count=1, timeout=10)
    (rc1, plain, _), (rc2, long, _), (rc3, all_, _), (rc4, js, _), (rc5, vnifs, _), \
        (rc6, br, _), (rc7, brl, _), (rc8, missing, err8) = vn(
            h1, ["vnets"], ["vnets", "-l", "97"], ["vnets", "-a"], ["vnets", "-la", "--json"],
            ["vnifs"], ["bridges"], ["bridges", "-l"], ["vnets", "99"])
    assert (rc1, rc2, rc3, rc4, rc5, rc6, rc7, rc8) == (0, 0, 0, 0, 0, 0, 0, 4), err8
    assert re.search(r"^0097\s+vnet97\s+vnif97\s+none\s+1450\s+active\s+" + g1.port, plain, re.M)
    assert "vt-000097" in long and "vifs:" not in long
    assert f"    {g1.port} " in all_ and g2.mac in all_ and net.host("h2").address in all_
    row = json.loads(js)[0]
    assert [v["port"] for v in row["vifs"]] == [g1.port]
    assert g2.mac in [e["mac"] for e in row["varp"]]
    assert {p["name"] for p in row["ports"]} >= {"vnet97", "vnif97", "vt-000097", g1.port}
    assert re.search(r"^0097\s+vnif97\s+[0-9a-f:]{17}\s+1450\s", vnifs, re.M), vnifs
    assert re.search(r"^\*\s+vnet97\s+vnet 0097\s+netdev\s+standalone", br, re.M), br
    assert re.search(r"^\s+br-phy\s+-\s+netdev", br, re.M), br
    assert re.search(r"^\* br-vnet: transport", brl, re.M)
    tunnel = ipsec.port_name("none", net.host("h2").address)
    assert re.search(rf"^\s+{tunnel}\s+vxlan\s+tunnel\s+ofport \d+", brl, re.M), brl
    assert "no vnet '99'" in err8


def test_vn_vif_add_and_delete(net):
    h1 = net.host("h1")
    g1, g2 = net.guest("g1"), net.guest("g2")
    assert g1.ping(g2.addr, count=1, timeout=10)
    res = vn(h1, ["vif-add", "97", g1.mac], ["vif-add", "vnet97", g2.mac.upper().replace(":", "-")],
             ["vif-add", "97", "02:00:00:00:00:99", "--json"], ["vif-add", "97", "nonsense"],
             ["vif-add", "99", g1.mac], ["vif-add", "-i", "97", "vnif97"],
             ["vif-delete", "97", g2.mac], ["varp", "97", "--json"],
             ["vif-delete", "97", g2.mac], ["vif-delete", "97", g1.mac])
    codes = [r[0] for r in res]
    assert codes == [0, 0, 0, 2, 4, 0, 0, 0, 4, 0], res
    assert f"{g1.mac} is on this host, port {g1.port}" in res[0][1]
    assert "nothing to add" in res[0][1]
    assert f"{g2.mac} is behind peer {net.host('h2').address}" in res[1][1]
    assert json.loads(res[2][1]) == {"added": False, "local": None, "mac": "02:00:00:00:00:99",
                                     "remote": None, "vnet": "0097"}
    assert "not a MAC address" in res[3][2]
    assert f"forgot {g2.mac}: learned remote entry" in res[6][1]
    assert f"learned remote entry (peer {net.host('h2').address})" in res[6][1]
    assert g2.mac not in [e["mac"] for e in json.loads(res[7][1])]
    assert "is not known on vnet 0097" in res[8][2]
    assert f"MAC table entry of vnet97 (port {g1.port})" in res[9][1]
    fdb = h1.appctl("fdb/show", "vnet97")
    assert g1.mac not in fdb
    assert g1.ping(g2.addr, count=1, timeout=10)  # relearned from the next frames


def test_vn_xen_verbs_and_insmod(net):
    h1 = net.host("h1")
    res = vn(h1, ["vnet-create", "98", "-s", "none", "-v", "vnif98"], ["vnet-list"],
             ["vnet-list", "-l", "98"], ["vifs", "97"], ["varp"], ["varp-flush", "97"],
             ["varp", "97", "--json"], ["peer-add", "10.77.1.200"], ["peers"],
             ["peer-delete", "10.77.1.200"], ["peers", "--json"], ["vnet-delete", "vnif98"],
             ["vnet-list"], ["insmod", "varp_mcaddr=239.1.2.3", "vnet_encaps=udp"])
    assert [r[0] for r in res] == [0] * len(res), res
    assert "vnet 0098 created" in res[0][1]
    assert res[1][1].split() == ["0000:0000:0000:0000:0000:0000:0000:0097",
                                 "0000:0000:0000:0000:0000:0000:0000:0098"]
    assert "(vnetif vnif98)" in res[2][1]
    assert net.guest("g1").port in res[3][1]
    # flushed: whatever is there was learned again since (guests keep talking)
    assert res[5][1].strip() == "flushed"
    assert all(e["age"] <= 1 for e in json.loads(res[6][1])), res[6][1]
    assert "10.77.1.200" in res[8][1]
    assert [p["address"] for p in json.loads(res[10][1])] == [net.host("h2").address]
    assert "0098" not in res[12][1]
    insmod = res[13][1]
    assert "note: varp_mcaddr=239.1.2.3 ignored: the discovery group is the agent's --group" \
        in insmod
    assert re.search(r"^OK   vswitchd:", insmod, re.M) and "ready: 1 vnet(s) in place" in insmod


# -- doctor ---------------------------------------------------------------------------------

def test_doctor_on_a_lab_host_hears_an_agent(net):
    h1, h2 = net.host("h1"), net.host("h2")
    agent = subprocess.Popen(
        ["ip", "netns", "exec", h2.netns, sys.executable, "-m", "ovsvnet", "--db", h2.db,
         "agent", "--interval", "0.5", "--key-file", str(h2.discovery_key())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=h2.env, start_new_session=True)
    try:
        wait_until(lambda: (h2.dir / f"ovsvnet-agent.{agent.pid}.ctl").exists(), timeout=15,
                   what="h2's agent")
        proc = h1.ovsvnet("doctor", "--json", "--probe-time", "1.5", check=False)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        found = {f["check"]: f for f in json.loads(proc.stdout)["findings"]}
        status = {k: f["status"] for k, f in found.items()}
        assert status == {"ovsdb": "OK", "vswitchd": "OK", "datapath": "OK", "kmod": "WARN",
                          "ipsec": "WARN", "names": "WARN", "mtu": "OK", "endpoint": "OK",
                          "agent": "WARN", "multicast": "OK"}, found
        # examples/vnet97.sxp names its bridge vnet97, Xen-style: libvirt's 98th tap
        assert "vnet 0097 bridge vnet97 has the form of libvirt's automatic tap names" \
            in found["names"]["message"]
        assert found["mtu"]["data"] == {"underlay_mtu": 1500, "vnet_mtu": 1450,
                                        "source": "route"}
        assert found["endpoint"]["data"]["local_ip"] == h1.address
        assert found["endpoint"]["data"]["device"] == "br-phy"
        assert "the netdev datapath cannot encrypt" in found["ipsec"]["message"]
        assert h2.address in found["multicast"]["data"]["heard"]
        # The agent's own host reads its peer table instead of probing.
        proc = h2.ovsvnet("doctor", check=False)
        assert proc.returncode == 0
        assert re.search(r"^OK   agent:\s+agent \S+-h2 running", proc.stdout, re.M), proc.stdout
        assert "agent's peer table" in proc.stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)


# -- demo -----------------------------------------------------------------------------------

def test_demo_runs_end_to_end_and_leaves_nothing_behind(tmp_path):
    env = dict(os.environ, OVSVNET_SANDBOX_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "ovsvnet", "demo"], capture_output=True,
                          text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-2000:])
    assert "result: 6/6 pings succeeded" in out
    assert "every host found the other 2 and opened tunnels" in out
    for text in ("ovs-vsctl show", "Bridge vnet97", "# vnet flow of vnet key 0x97",
                 "agent: ", "lab ovl"):
        assert text in out, text
    prefix = re.search(r"lab (ovl\w+) removed", out).group(1)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listed
    assert not netns_exists(f"{prefix}-h1")
    assert not any(Path("/tmp").glob(f"{prefix}*"))
