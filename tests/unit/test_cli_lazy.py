"""The root group lists commands from stored summaries: they must say what the commands say."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from ovsvnet.cli import COMMANDS, SUMMARIES, cli


def test_every_command_has_a_summary() -> None:
    assert set(SUMMARIES) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("limit", [40, 70, 200])
def test_summary_matches_the_commands_own_help(name: str, limit: int) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    stand_in = click.Command(name, help=SUMMARIES[name])
    assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit)


def test_help_lists_commands_without_importing_them() -> None:
    code = ("import sys; from ovsvnet.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "loaded = [m for m in sys.modules if m.startswith('ovsvnet.cli.') "
            "and m not in ('ovsvnet.cli.common', 'ovsvnet.cli.delegate', 'ovsvnet.cli.root')]\n"
            "print(','.join(loaded), 'ovs' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "  peer-add" in out.stdout and "Add a static peer" in out.stdout
    assert out.stderr.strip() == "False", out.stderr


def test_importing_the_entry_point_imports_neither_click_nor_python_ovs() -> None:
    code = "import sys, ovsvnet.cli; print(sorted(m for m in ('click', 'ovs') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args, expected", [
    (["list"], ({}, 0)),
    (["--db", "unix:/x/db.sock", "show", "97"], ({"db": "unix:/x/db.sock"}, 2)),
    (["--db=unix:/x/db.sock", "--timeout", "3", "sync"],
     ({"db": "unix:/x/db.sock", "timeout": "3"}, 3)),
    (["--registry", "r1", "list"], None),  # for click: the registry is no agent's business
    (["-p", "key.pem", "list"], None),
    (["--db"], None),
    (["--version"], None),
])
def test_the_fast_path_reads_only_plain_root_options(args, expected) -> None:
    from ovsvnet.cli import delegate
    assert delegate._root_options(args) == expected


def test_a_command_that_names_a_file_is_run_by_the_caller(tmp_path, monkeypatch) -> None:
    """The agent may not see the caller's files (ProtectHome): such commands stay here."""
    from ovsvnet.cli import delegate
    monkeypatch.delenv("OVSVNET_DIRECT", raising=False)
    sxp = tmp_path / "vnet97.sxp"
    sxp.write_text("(vnet (id 97))\n")
    assert delegate.wanted("create", ["create", "--id", "97"], None)
    assert not delegate.wanted("create", ["create", str(sxp)], None)
    assert not delegate.wanted("vnet-create", ["vnet-create", "-"], None)
    assert not delegate.wanted("agent", ["agent"], None)
    assert not delegate.wanted("list", ["list"], "10.0.0.1")
