"""The shell scripts (xend network-script, libvirt hook) and the systemd unit, without OVS."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "network-vnet"
HOOK = ROOT / "scripts" / "libvirt-hook"
VIF = ROOT / "scripts" / "vif-ovsvnet"
UNIT = ROOT / "scripts" / "ovsvnet-agent.service"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_are_shellcheck_clean():
    proc = subprocess.run(["shellcheck", str(SCRIPT), str(HOOK), str(VIF)], capture_output=True,
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
        # --man=no: the unit's man pages exist only once the package is installed
        proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(UNIT)],
                              capture_output=True,
                              text=True, timeout=60)
        problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                    if line.strip() and "is not executable" not in line
                    and "ovsdb-server.service" not in line]
        assert not problems, problems
