"""Without root: every command's help and examples, the vn verbs, shell completion, the
generated reference, the doctor's pure helpers, the libvirt XML reader and the scripts'
usage and exit codes."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovsvnet import doctor as D
from ovsvnet.cli import cli
from ovsvnet.cli_host import libvirt_bridges, parse_fdb, parse_vmac
from ovsvnet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "network-vnet"
HOOK = ROOT / "scripts" / "libvirt-hook"
UNIT = ROOT / "scripts" / "ovsvnet-agent.service"


def _load_gen_reference():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" /
                                                  "gen_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _load_gen_reference()
COMMANDS = GEN.commands()

VN_VERBS = ["vnets", "vnifs", "vifs", "vif-add", "vif-delete", "varp", "varp-flush",
            "vnet-create", "vnet-delete", "vnet-list", "peers", "peer-add", "peer-delete",
            "bridges", "insmod"]


# -- help and examples ------------------------------------------------------------------------

def test_the_walk_finds_every_command():
    paths = {p for p, _, _ in COMMANDS}
    for name in ("ovsvnet", "ovsvnet doctor", "ovsvnet demo", "ovsvnet completion",
                 "ovsvnet sandbox up", *(f"ovsvnet {v}" for v in VN_VERBS)):
        assert name in paths


@pytest.mark.parametrize("path", [p for p, _, _ in COMMANDS])
def test_every_command_has_an_examples_epilog(path):
    cmd = next(c for p, c, _ in COMMANDS if p == path)
    epilog = cmd.epilog or ""
    assert "Examples:" in epilog, f"{path} has no 'Examples:' epilog"
    examples = epilog.split("Examples:", 1)[1].strip().splitlines()
    assert examples and examples[0].strip().startswith(("ovsvnet", "vn", "eval", "virsh")), \
        f"{path}: the first example should be a command line: {examples[:1]}"


@pytest.mark.parametrize("path", [p for p, _, _ in COMMANDS])
def test_help_works_without_open_vswitch(path):
    args = path.split()[1:] + ["--help"]
    result = CliRunner().invoke(cli, ["--db", "unix:/nonexistent/db.sock", *args],
                                prog_name="ovsvnet")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ovsvnet")


@pytest.mark.parametrize("verb", VN_VERBS)
def test_vn_accepts_every_verb(verb):
    result = CliRunner().invoke(cli, [verb, "--help"], prog_name="vn")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: vn {verb} ")


def test_vn_entry_point():
    """ovsvnet.cli:vn_main (the vn console script) is the same program under Xen's name."""
    proc = subprocess.run([sys.executable, "-c", "from ovsvnet.cli import vn_main; vn_main()",
                           "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: vn ")
    for verb in VN_VERBS:
        assert re.search(rf"^  {re.escape(verb)}\s", proc.stdout, re.M), verb


def test_vif_add_help_documents_the_decision():
    out = CliRunner().invoke(cli, ["vif-add", "--help"]).output
    assert "nothing needs adding" in out and "Open vSwitch learns" in out
    out = CliRunner().invoke(cli, ["vif-delete", "--help"]).output
    assert "forgets VMAC" in out


# -- the generated reference ------------------------------------------------------------------

def test_reference_is_up_to_date():
    committed = (ROOT / "docs" / "reference.md").read_text()
    assert committed == GEN.render(), \
        "docs/reference.md is out of date: run .venv/bin/python docs/gen_reference.py"


def test_reference_has_every_command():
    text = GEN.render()
    for path, _, _ in COMMANDS:
        assert f"\n## {path}\n" in text


# -- completion -------------------------------------------------------------------------------

@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"),
                                          ("zsh", "#compdef ovsvnet"),
                                          ("fish", "complete --no-files --command ovsvnet")])
def test_completion_scripts(shell, marker):
    result = CliRunner().invoke(cli, ["completion", shell], prog_name="ovsvnet")
    assert result.exit_code == 0, result.output
    assert "_OVSVNET_COMPLETE" in result.output and marker in result.output


def test_completion_for_vn_uses_its_own_variable():
    result = CliRunner().invoke(cli, ["completion", "bash"], prog_name="vn")
    assert "_VN_COMPLETE" in result.output


def test_click_completion_answers_for_commands_and_options():
    env = dict(os.environ, _OVSVNET_COMPLETE="bash_complete", COMP_WORDS="ovsvnet vn",
               COMP_CWORD="1")
    proc = subprocess.run([sys.executable, "-m", "ovsvnet"], env=env, capture_output=True,
                          text=True, timeout=30)
    words = {line.split(",", 1)[1] for line in proc.stdout.splitlines() if "," in line}
    assert {"vnets", "vnifs", "vnet-create", "vnet-delete", "vnet-list"} <= words, proc.stdout
    env.update(COMP_WORDS="ovsvnet doctor --", COMP_CWORD="2")
    proc = subprocess.run([sys.executable, "-m", "ovsvnet"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert "plain,--no-probe" in proc.stdout.splitlines()


# -- doctor: pure helpers ---------------------------------------------------------------------

def test_kmod_state(tmp_path):
    sysmod, mods = tmp_path / "sys", tmp_path / "lib"
    sysmod.mkdir()
    mods.mkdir()
    (sysmod / "openvswitch").mkdir()
    (sysmod / "openvswitch" / "initstate").write_text("live\n")
    (sysmod / "xfrm_user").mkdir()  # built in: no initstate
    (mods / "modules.builtin").write_text("kernel/net/ipv4/esp4.ko\n")
    (mods / "modules.dep").write_text(
        "kernel/net/ipv6/esp6.ko.xz: kernel/net/xfrm/xfrm_algo.ko.xz\n"
        "kernel/net/openvswitch/vport-vxlan.ko: kernel/net/openvswitch/openvswitch.ko\n")
    paths = dict(sys_module=str(sysmod), proc_modules=str(tmp_path / "nope"),
                 modules_dir=str(mods))
    assert D.kmod_state("openvswitch", **paths) == "loaded"
    assert D.kmod_state("xfrm_user", **paths) == "builtin"
    assert D.kmod_state("esp4", **paths) == "builtin"
    assert D.kmod_state("esp6", **paths) == "available"
    assert D.kmod_state("vport-vxlan", **paths) == "available"
    assert D.kmod_state("vxlan", **paths) == "absent"  # not a suffix match of vport-vxlan
    (tmp_path / "modules").write_text("esp6 16384 0 - Live 0x0\n")
    assert D.kmod_state("esp6", **{**paths, "proc_modules": str(tmp_path / "modules")}) == \
        "loaded"


def test_daemon_ctl_and_version(tmp_path):
    assert D.daemon_ctl(str(tmp_path), "ovs-vswitchd") is None
    (tmp_path / "ovs-vswitchd.pid").write_text("4242\n")
    (tmp_path / "ovs-vswitchd.4242.ctl").write_text("")
    assert D.daemon_ctl(str(tmp_path), "ovs-vswitchd") == str(tmp_path /
                                                             "ovs-vswitchd.4242.ctl")
    (tmp_path / "ovs-vswitchd.ctl").write_text("")  # the lab's --unixctl name wins
    assert D.daemon_ctl(str(tmp_path), "ovs-vswitchd") == str(tmp_path / "ovs-vswitchd.ctl")
    assert D.parse_version("ovs-vswitchd (Open vSwitch) 3.1.0\n") == "3.1.0"
    assert D.parse_version("something else\n") == "something else"


def test_findings_and_exit_code():
    installed = {b: f"/usr/bin/{b}" for b in D.OVS_BINARIES}
    ok = D.ovsdb_finding("unix:/run/db.sock", None, True, installed)
    assert ok.status == D.OK
    gone = D.ovsdb_finding("unix:/run/db.sock", "no socket", False, installed)
    assert gone.status == D.FAIL and "systemctl start openvswitch-switch" in gone.fix
    absent = D.ovsdb_finding("unix:/run/db.sock", "no socket", False,
                             {b: None for b in D.OVS_BINARIES})
    assert "apt-get install openvswitch-switch" in absent.fix
    assert D.exit_code([ok]) == 0 and D.exit_code([ok, gone]) == 1
    assert D.summary([ok, gone]) == "1 ok, 0 warnings, 1 failures"
    line = gone.line()
    assert line.startswith("FAIL ovsdb:") and "\n" not in line and "; fix: " in line
    assert set(ok.to_dict()) == {"check", "status", "message", "fix", "data"}


def test_datapath_kmod_and_ipsec_findings():
    assert D.datapath_finding(["netdev", "system"], "netdev").status == D.OK
    assert D.datapath_finding([], "netdev").status == D.WARN
    assert D.datapath_finding(["netdev"], "system").status == D.FAIL
    assert D.kmod_finding("loaded", "system").status == D.OK
    assert D.kmod_finding("absent", "netdev").status == D.WARN
    assert "modprobe openvswitch" in D.kmod_finding("available", "netdev").fix
    esp_none = {"xfrm": True, "esp4": "absent", "esp6": "absent"}
    esp_ok = {"xfrm": True, "esp4": "available", "esp6": "available"}
    f = D.ipsec_finding("netdev", esp_none, "/usr/share/x/ovs-monitor-ipsec", False, ["0098"])
    assert f.status == D.WARN and f.message.startswith("impossible here")
    assert "userspace datapath (netdev)" in f.message and "0098" in f.message
    f = D.ipsec_finding("system", esp_ok, "/usr/share/x/ovs-monitor-ipsec", False, [])
    assert f.message.startswith("not ready") and f.fix == "systemctl start openvswitch-ipsec"
    f = D.ipsec_finding("system", esp_ok, None, False, [])
    assert "apt-get install openvswitch-ipsec" in f.fix
    assert D.ipsec_finding("system", esp_ok, "/x", True, []).status == D.OK
    f = D.ipsec_finding("system", esp_ok, "/x", True, ["0099"], "not driven yet")
    assert f.status == D.WARN and f.message.startswith("not ready: not driven yet")


def test_mtu_endpoint_agent_and_multicast_findings():
    view = {"underlay_mtu": 1500, "vnet_mtu": 1450, "underlay_mtu_source": "route"}
    assert D.mtu_finding(view).message == "underlay MTU 1500 (route); give guests MTU 1450"
    assert D.mtu_finding({**view, "underlay_mtu_source": "default"}).status == D.WARN
    assert D.mtu_finding({**view, "vnet_mtu": 1230}).status == D.WARN
    assert D.endpoint_finding(None, False, set(), None, False, "netdev").status == D.FAIL
    assert D.endpoint_finding("192.0.2.9", True, {"192.0.2.1"}, "eth0", False,
                              "system").status == D.FAIL
    assert D.endpoint_finding("192.0.2.1", False, {"192.0.2.1"}, "br-phy", True,
                              "netdev").status == D.OK
    warn = D.endpoint_finding("192.0.2.1", False, {"192.0.2.1"}, "eth0", False, "netdev")
    assert warn.status == D.WARN and "OVS bridge" in warn.message
    assert D.endpoint_finding("192.0.2.1", False, {"192.0.2.1"}, "eth0", False,
                              "system").status == D.OK
    assert D.agent_finding(None).status == D.WARN
    assert D.agent_finding({"system_id": "h1", "peers": [{}], "uptime": 3}).status == D.OK
    status = {"peers": [
        {"address": "10.0.0.2", "origin": "h2", "last_seen": 0.5, "via": None,
         "static": False},
        {"address": "10.0.9.3", "origin": "h3", "last_seen": 1.0, "via": "h2",
         "static": False},
        {"address": "10.0.0.4", "origin": "h4", "last_seen": None, "via": "resumed",
         "static": False}]}
    heard = D.heard_from_agent(status)
    assert heard == {"10.0.0.2": "h2", "10.0.9.3": "h3 via h2"}
    f = D.multicast_finding("224.10.0.1", 1798, heard, "agent's peer table", "10.0.0.1")
    assert f.status == D.OK and f.message.index("10.0.0.2") < f.message.index("10.0.9.3")
    f = D.multicast_finding("224.10.0.1", 1798, {}, "announcements", "10.0.0.1")
    assert f.status == D.WARN and "peer-add" in f.fix


def test_icmp_helpers():
    req = D.icmp_echo_request(0x1234, 7, b"abc")
    assert req[0] == 8 and D.icmp_checksum(req) == 0  # a correct checksum sums to zero
    icmp = bytearray(req)
    icmp[0] = 0  # echo reply
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", D.icmp_checksum(bytes(icmp)))
    ip = bytes([0x45, 0, 0, 20 + len(icmp), 0, 0, 0, 0, 64, 1, 0, 0,
                10, 0, 0, 2, 10, 0, 0, 1])
    assert D.parse_icmp_echo_reply(ip + bytes(icmp)) == (0x1234, 7)
    assert D.parse_icmp_echo_reply(ip + req) is None  # a request is not a reply
    assert D.parse_icmp_echo_reply(b"\x45\0") is None
    assert D.describe_announcement(b"not an announcement") is None


def test_announcements_are_described():
    from ovsvnet.announce import Announcement, VnetAd, encode
    from ovsvnet.vnetid import VnetId
    ann = Announcement("h2", "10.0.0.2", 5, (VnetAd(VnetId(0x97), "none"),), 15, 4789, 0, 1)
    assert D.describe_announcement(encode(ann, None)) == "h2"
    assert D.describe_announcement(encode(ann, b"k" * 32)) == "h2"  # signed, read anyway


def test_xen_module_params_are_noted():
    notes = D.xen_module_params(["varp_mcaddr=239.1.2.3", "vnet_encaps=udp", "bogus=1"])
    assert notes[0].startswith("note: varp_mcaddr=239.1.2.3 ignored: ") and "--group" in notes[0]
    assert "VXLAN" in notes[1] and "bogus=1 ignored" in notes[2]


# -- vn verbs: pure parts ---------------------------------------------------------------------

def test_parse_vmac():
    assert parse_vmac("AA:00:00:12:34:56") == "aa:00:00:12:34:56"
    assert parse_vmac("aa-00-00-12-34-56") == "aa:00:00:12:34:56"
    for bad in ("aa:00-00:12:34:56", "aa:00:00:12:34", "aa:00:00:12:34:5g", "zz"):
        with pytest.raises(ConfigError):
            parse_vmac(bad)


def test_parse_fdb():
    text = (" port  VLAN  MAC                Age\n"
            "    3     0  02:00:00:00:97:01    1\n"
            "LOCAL     0  6e:aa:bb:cc:dd:ee    5\n")
    assert parse_fdb(text) == [
        {"port": "3", "vlan": 0, "mac": "02:00:00:00:97:01", "age": "1"},
        {"port": "LOCAL", "vlan": 0, "mac": "6e:aa:bb:cc:dd:ee", "age": "5"}]


DOMAIN_XML = """<domain type='kvm'><name>dom1</name><devices>
  <interface type='bridge'><source bridge='vnet97'/><virtualport type='openvswitch'>
    <parameters interfaceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/></virtualport></interface>
  <interface type='bridge'><source bridge='br-other'/><virtualport type='openvswitch'/>
  </interface>
  <interface type='bridge'><source bridge='virbr0'/></interface>
  <interface type='network'><source network='default' bridge='virbr1'/></interface>
  <interface type='network'><source network='net98'/></interface>
  <interface type='bridge'><source bridge='vnet97'/><virtualport type='openvswitch'/>
  </interface>
</devices></domain>"""


def test_libvirt_bridges_from_domain_and_network_xml():
    assert libvirt_bridges(DOMAIN_XML) == [("vnet97", True), ("br-other", True),
                                           ("virbr0", False), ("virbr1", False)]
    net = ("<network><name>net97</name><forward mode='bridge'/><bridge name='vnet97'/>"
           "<virtualport type='openvswitch'/></network>")
    assert libvirt_bridges(net) == [("vnet97", True)]
    hook_data = f"<hookData>{net}<networkport><uuid>x</uuid></networkport></hookData>"
    assert libvirt_bridges(hook_data) == [("vnet97", True)]
    assert libvirt_bridges("<network><name>n</name><bridge name='virbr0'/></network>") == [
        ("virbr0", False)]
    with pytest.raises(ConfigError):
        libvirt_bridges("<domain><devices>")


def test_libvirt_bridges_command_reads_stdin():
    result = CliRunner().invoke(cli, ["libvirt-bridges"], input=DOMAIN_XML)
    assert result.exit_code == 0
    assert result.output.splitlines() == ["vnet97 ovs", "br-other ovs", "virbr0 plain",
                                          "virbr1 plain"]


# -- scripts and the unit file ----------------------------------------------------------------

@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_are_shellcheck_clean():
    proc = subprocess.run(["shellcheck", str(SCRIPT), str(HOOK)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def run_script(*args: str, env: dict[str, str] | None = None,
               input: str | None = None, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    full = {**os.environ, "OVSVNET": f"{sys.executable} -m ovsvnet", "OVSVNET_SYSLOG": "no",
            "OVSVNET_DEFAULTS": "/nonexistent/ovsvnet", **(env or {})}
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60,
                          env=full, input=input if input is not None else "")


def test_script_usage_and_help():
    assert run_script().returncode == 2
    assert run_script("restart").returncode == 2
    assert run_script("start", "not-a-var").returncode == 2
    assert run_script("hook", "qemu").returncode == 2
    assert run_script("hook", "xen", "dom1", "start", "begin", "-").returncode == 2
    help_ = run_script("--help")
    assert help_.returncode == 0 and "Exit codes:" in help_.stdout
    assert "xend passes e.g.  vifnum=0 bridge=xenbr0 netdev=eth0 antispoof=no" in help_.stdout


def test_hook_operations_that_need_nothing_exit_0_silently(tmp_path):
    # ovsvnet must not even be run: point it at something that fails loudly.
    env = {"OVSVNET": "false", "OVS_VSCTL": "false"}
    for args in (["qemu", "dom1", "stopped", "end", "-"], ["qemu", "dom1", "release", "end", "-"],
                 ["qemu", "dom1", "started", "begin", "-"], ["network", "n", "stopped", "end",
                                                             "-"],
                 ["qemu", "dom1", "migrate", "end", "-"]):
        proc = run_script("hook", *args, env=env, input="<domain/>")
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), args


def test_xend_start_with_open_vswitch_down_still_hands_over(tmp_path):
    if shutil.which("ovs-vsctl") is None:
        pytest.skip("ovs-vsctl not installed")
    calls = tmp_path / "calls"
    nb = tmp_path / "network-bridge"
    nb.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexit 0\n')
    nb.chmod(0o755)
    proc = run_script("start", "vifnum=0", "bridge=xenbr0", "netdev=eth0", "antispoof=no",
                      env={"OVSVNET_DB": "unix:/nonexistent/db.sock",
                           "NETWORK_BRIDGE": str(nb)})
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "Open vSwitch does not answer at unix:/nonexistent/db.sock" in proc.stdout
    assert calls.read_text() == "start vifnum=0 bridge=xenbr0 netdev=eth0 antispoof=no\n"
    # Without a network-bridge it says so and the exit code is ovsvnet's alone.
    proc = run_script("stop", "vifnum=0", env={"NETWORK_BRIDGE": str(tmp_path / "none")})
    assert proc.returncode == 0 and "is not installed; nothing to hand over" in proc.stdout


def test_script_settings_file_fills_what_the_environment_leaves_unset(tmp_path):
    if shutil.which("ovs-vsctl") is None:
        pytest.skip("ovs-vsctl not installed")
    calls = tmp_path / "calls"
    nb = tmp_path / "network-bridge"
    nb.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    nb.chmod(0o755)
    defaults = tmp_path / "ovsvnet.default"
    defaults.write_text(f'# /etc/default/ovsvnet\nOVSVNET_DB=unix:/nonexistent/from-file.sock\n'
                        f'NETWORK_BRIDGE="{nb}"\nOVSVNET_AGENT_OPTS="--interval 2"\n')
    proc = run_script("start", "vifnum=0", env={"OVSVNET_DEFAULTS": str(defaults)})
    assert proc.returncode == 5
    assert "at unix:/nonexistent/from-file.sock" in proc.stdout
    assert calls.read_text() == "start vifnum=0\n"
    proc = run_script("start", "vifnum=0", env={"OVSVNET_DEFAULTS": str(defaults),
                                                "OVSVNET_DB": "unix:/nonexistent/env.sock"})
    assert "at unix:/nonexistent/env.sock" in proc.stdout  # the environment wins


def test_libvirt_hook_wrapper_finds_network_vnet(tmp_path):
    d = tmp_path / "qemu.d"
    d.mkdir()
    (d / "ovsvnet").symlink_to(HOOK)
    proc = run_script("dom1", "release", "end", "-", script=d / "ovsvnet",
                      env={"OVSVNET": "false"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    # An unknown kind (the wrapper installed under a name libvirt does not use) is refused.
    (tmp_path / "ovsvnet-hook").symlink_to(HOOK)
    proc = run_script("dom1", "start", "begin", "-", script=tmp_path / "ovsvnet-hook")
    assert proc.returncode == 2


def test_systemd_unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    assert re.match(r"^/\S+/ovsvnet agent ", service["ExecStart"])
    assert "$OVSVNET_AGENT_OPTS" in service["ExecStart"]
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"] == "-/etc/default/ovsvnet"
    assert "openvswitch-switch.service" in parser["Unit"]["After"]
    assert parser["Install"]["WantedBy"].startswith("multi-user.target")
    if shutil.which("systemd-analyze"):
        proc = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True,
                              text=True, timeout=60)
        problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                    if line.strip() and "is not executable" not in line
                    and "ovsdb-server.service" not in line]
        assert not problems, problems


def test_doctor_without_open_vswitch_fails_with_exit_1():
    proc = subprocess.run([sys.executable, "-m", "ovsvnet", "--db", "unix:/nonexistent/db.sock",
                           "doctor", "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 1
    assert data["findings"][0]["check"] == "ovsdb" and data["findings"][0]["status"] == "FAIL"
