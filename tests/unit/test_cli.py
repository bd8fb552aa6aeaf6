"""The command line without root or OVS: every command's help and examples, the vn verbs,
shell completion, the generated reference, and one-line errors with their exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovsvnet.cli import cli

ROOT = Path(__file__).resolve().parents[2]


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


def test_libvirt_bridges_command_reads_stdin():
    xml = (ROOT / "tests" / "unit" / "data" / "domain.xml").read_text()
    result = CliRunner().invoke(cli, ["libvirt-bridges"], input=xml)
    assert result.exit_code == 0
    assert result.output.splitlines() == ["vnet97 ovs", "br-other ovs", "virbr0 plain",
                                          "virbr1 plain"]


def test_doctor_without_open_vswitch_fails_with_exit_1():
    proc = subprocess.run([sys.executable, "-m", "ovsvnet", "--db", "unix:/nonexistent/db.sock",
                           "doctor", "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 1
    assert data["findings"][0]["check"] == "ovsdb" and data["findings"][0]["status"] == "FAIL"
