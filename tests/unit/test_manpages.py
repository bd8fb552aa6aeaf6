"""The manual pages in man/: generated from the CLI by docs/gen_man.py, never out of date,
valid roff, complete; and the Debian package's metadata agrees with the Python package."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ovsvnet import __version__
from ovsvnet.config import VnetConfig

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"
PAGES = ("ovsvnet.1", "vn.1", "ovsvnet-agent.8", "vnet.sxp.5")


def _gen_man():
    spec = importlib.util.spec_from_file_location("gen_man", ROOT / "docs" / "gen_man.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_man = _gen_man()


def rendered() -> dict[str, str]:
    return {"ovsvnet.1": gen_man.page_ovsvnet(), "vn.1": gen_man.page_vn(),
            "ovsvnet-agent.8": gen_man.page_agent(), "vnet.sxp.5": gen_man.page_sxp()}


def test_committed_pages_are_what_the_cli_says():
    stale = [name for name, text in rendered().items()
             if not (MAN / name).exists() or (MAN / name).read_text() != text]
    assert not stale, (f"man/{', man/'.join(stale)} out of date: run "
                       f"{sys.executable} docs/gen_man.py")


def test_check_mode_fails_on_a_stale_page(tmp_path, monkeypatch):
    for name in PAGES:
        (tmp_path / name).write_text((MAN / name).read_text())
    monkeypatch.setattr(gen_man, "MAN", tmp_path)
    assert gen_man.main(["--check"]) == 0
    (tmp_path / "vn.1").write_text((MAN / "vn.1").read_text().replace("vnifs", "vnifz", 1))
    assert gen_man.main(["--check"]) == 1


def test_every_visible_command_has_a_section():
    text = (MAN / "ovsvnet.1").read_text()
    sections = set(re.findall(r"^\.SS (.+)$", text, re.M))
    paths = {gen_man.esc(ctx.command_path) for ctx in gen_man.walk(gen_man.root())}
    assert paths and paths == sections
    assert ".SS ovsvnet libvirt\\-bridges" not in sections  # hidden: for scripts


def test_vn_documents_xen_verbs_under_its_own_name():
    text = (MAN / "vn.1").read_text()
    for verb in gen_man.XEN_VERBS:
        assert f".SS vn {gen_man.esc(verb)}\n" in text


@pytest.mark.parametrize("name", PAGES)
def test_pages_are_valid_roff(name):
    if shutil.which("groff") is None:
        pytest.skip("groff not installed")
    # -ww: every warning, as lintian's groff-message check; -z: no output, only diagnostics
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN / name)],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert (MAN / name).read_text().isascii()
    head = (MAN / name).read_text().split("\n")
    stem, section = name.rsplit(".", 1)
    assert any(line.startswith(f".TH {stem.upper()} {section} ") for line in head[:5])
    assert f'"ovsvnet {__version__}"' in head[2]


def test_sxp_examples_in_the_page_are_valid_definitions():
    text = (MAN / "vnet.sxp.5").read_text()
    block = text.split(".SH EXAMPLES\n.PP\n.nf\n", 1)[1].split("\n.fi", 1)[0]
    plain = block.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")
    definitions = [line for line in plain.splitlines() if line.startswith("(vnet")]
    assert len(definitions) == len(list((ROOT / "examples").glob("*.sxp"))) >= 1
    for line in definitions:
        assert VnetConfig.from_sxp(line).id.short


def test_sxp_page_follows_the_config_rules():
    from ovsvnet import config as C
    text = (MAN / "vnet.sxp.5").read_text()
    for field in C.FIELDS:
        assert f".TP\n.B {field}\n" in text
    for name in (*C.RESERVED_NAMES, *C.RESERVED_PREFIXES, *C.HOST_NAMES):
        assert gen_man.esc(name) in text
    assert f"at most {C.IFNAME_MAX} characters" in text


def test_roff_escaping():
    assert gen_man.esc("--db") == "\\-\\-db"
    assert gen_man.esc("a\\b") == "a\\eb"
    assert gen_man.esc(".hidden\n'quote\nok") == "\\&.hidden\n\\&'quote\nok"
    assert gen_man.esc("\u2192") == "\\[u2192]"
    text = "First line\nwraps here.\n\n\b\nExamples:\n  ovsvnet list\n\fhidden"
    assert gen_man.paragraphs(text) == (".PP\nFirst line wraps here.\n"
                                        ".PP\n.nf\nExamples:\n  ovsvnet list\n.fi")


def test_option_help_comes_from_click():
    @click.command()
    @click.option("--interval", default=5.0, show_default=True, help="Seconds.")
    @click.option("--secret", hidden=True)
    def cmd(interval: float, secret: str) -> None:
        """Doc."""

    ctx = click.Context(cmd, info_name="cmd")
    out = gen_man.options(cmd.get_params(ctx), ctx)
    assert ".TP\n.B \\-\\-interval FLOAT\nSeconds.  [default: 5.0]" in out
    assert "secret" not in out


def test_the_package_installs_every_page_and_versions_agree():
    listed = (ROOT / "debian" / "ovsvnet.manpages").read_text().split()
    assert sorted(listed) == sorted(f"man/{p}" for p in PAGES)
    assert sorted(p.name for p in MAN.iterdir()) == sorted(PAGES)
    changelog = (ROOT / "debian" / "changelog").read_text().split("\n", 1)[0]
    assert changelog.startswith(f"ovsvnet ({__version__}) "), \
        "debian/changelog's newest entry must be the package version (dch -v VERSION)"
    toml = (ROOT / "pyproject.toml").read_text()
    assert f'\nversion = "{__version__}"\n' in toml
