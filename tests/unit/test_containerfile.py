"""ci/Containerfile and its ignore files: the build context holds the tree the suite needs and
none of the host's virtualenv, VCS data, caches or build outputs; the image runs the suite.

The ignore rules are evaluated the way docker and buildah do (moby's pattern matcher: ``*``
and ``?`` stay within one path element, ``**`` spans any number, a match on a directory
excludes everything below it, ``!`` re-includes). tests/functional/test_containerfile.py builds
the image's source stage for real.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "ci" / "Containerfile"

#: Paths that must never reach the image (a host .venv breaks the image's pip), whether or not
#: they exist in this checkout.
EXCLUDED = [".venv", ".venv/bin/pip", ".git", ".git/config", "build", "build/deb/x.deb",
            "ovsvnet.egg-info", "ovsvnet.egg-info/PKG-INFO", "ovsvnet/__pycache__",
            "ovsvnet/lab/__pycache__/core.cpython-311.pyc", ".pytest_cache", ".mypy_cache",
            ".ruff_cache", ".hypothesis", "bench/results/x.json", "dist/ovsvnet.whl"]
#: What the image's install and test scripts use.
NEEDED = ["pyproject.toml", "README.md", "ci/install-deps.sh", "ci/run-tests.sh",
          "ovsvnet/__init__.py", "ovsvnet/registry/registry.ovsschema", "tests/conftest.py",
          "tests/unit/test_containerfile.py", "tests/functional/rootfs.py", "scripts/network-vnet",
          "examples/vnet97.sxp", "examples/containers/ovs-docker-vnet97.sh",
          "docs/gen_reference.py", "bench", ".containerignore"]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "Containerfile ends in a continuation line"
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (before the first FROM: global ARGs, stage 0)."""
    result: list[list[tuple[str, str]]] = [[]]
    for ins in instructions(text):
        if ins[0] == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per rule of a .dockerignore/.containerignore."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((exclude, re.compile(regex + "$")))
    return rules


def excluded(rules: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Whether ``path`` (relative, with ``/``) is left out of the context: the last rule that
    matches it or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for exclude, regex in rules:
        if any(regex.match(p) for p in prefixes):
            verdict = exclude
    return verdict


def test_both_ignore_files_are_the_same() -> None:
    # podman/buildah read .containerignore first, docker only .dockerignore
    assert (ROOT / ".containerignore").read_text() == (ROOT / ".dockerignore").read_text()


@pytest.mark.parametrize("path", EXCLUDED)
def test_the_context_leaves_out_venv_vcs_caches_and_build_outputs(path: str) -> None:
    assert excluded(ignore_rules((ROOT / ".containerignore").read_text()), path)


@pytest.mark.parametrize("path", NEEDED)
def test_the_context_keeps_what_install_and_tests_use(path: str) -> None:
    assert (ROOT / path).exists(), f"{path} is gone: update NEEDED"
    assert not excluded(ignore_rules((ROOT / ".containerignore").read_text()), path)


def test_no_tracked_file_but_ci_glue_is_left_out() -> None:
    try:
        tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True,
                                 text=True, check=True, timeout=30).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (inside the image .git is left out)")
    rules = ignore_rules((ROOT / ".containerignore").read_text())
    assert [p for p in tracked if excluded(rules, p) and not p.startswith(".ci/")] == []


def test_ignore_matching_follows_docker() -> None:
    rules = ignore_rules("**/__pycache__\n*.egg-info\nbuild\n!build/keep\n")
    assert excluded(rules, "__pycache__/x.pyc") and excluded(rules, "a/b/__pycache__")
    assert excluded(rules, "x.egg-info/PKG-INFO") and not excluded(rules, "a/x.egg-info")
    assert excluded(rules, "build/x") and not excluded(rules, "build/keep")
    assert not excluded(rules, "tests/build.py")


def test_the_image_copies_the_tree_and_runs_the_suite() -> None:
    pre, source, final = stages(CONTAINERFILE.read_text())
    assert ("ARG", "BASE=docker.io/library/debian:12") in pre  # overridable: no registry here
    assert source[0] == ("FROM", "${BASE} AS source")
    assert ("COPY", ". /src") in source and ("WORKDIR", "/src") in source
    cmd = [args for kw, args in source + final if kw == "CMD"]
    assert [json.loads(c) for c in cmd] == [["bash", "ci/run-tests.sh"]]
    assert (ROOT / "ci" / "run-tests.sh").exists()
    assert not [kw for kw, _ in source + final if kw == "ENTRYPOINT"]
    assert final[0] == ("FROM", "source")
    runs = " ".join(args for kw, args in final if kw == "RUN")
    assert "bash ci/install-deps.sh" in runs
    # the header's commands are the README's
    header = [shlex.split(line.lstrip("# ")) for line in CONTAINERFILE.read_text().splitlines()
              if line.startswith("#   podman ")]
    assert ["podman", "build", "-t", "ovsvnet-ci", "-f", "ci/Containerfile", "."] in header
    assert ["podman", "run", "--rm", "--privileged", "ovsvnet-ci"] in header


def test_the_readme_gives_the_one_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert ("podman build -t ovsvnet-ci -f ci/Containerfile . && "
            "podman run --rm --privileged ovsvnet-ci") in readme
    assert "--build-arg BASE=localhost/debian:12" in readme  # the way without a registry
