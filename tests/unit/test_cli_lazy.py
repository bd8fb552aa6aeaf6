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
            "and m not in ('ovsvnet.cli.common', 'ovsvnet.cli.delegate')]\n"
            "print(','.join(loaded), 'ovs' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "  peer-add" in out.stdout and "Add a static peer" in out.stdout
    assert out.stderr.strip() == "False", out.stderr
