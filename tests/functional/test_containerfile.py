"""ci/Containerfile for real: its source stage built by a private dockerd from this checkout
(which has a .venv, .git and caches) holds the tree without them, and runs the suite.

No image registry is reachable here, so the base image is imported from a debootstrap root
(``--build-arg BASE=``), as README "Tests" tells users without a registry. Only the source stage
is built (seconds, no network): the last stage runs ci/install-deps.sh, which needs Debian's
archive and PyPI and takes minutes (measured by hand, README). docker reads .dockerignore;
tests/unit/test_containerfile.py holds .containerignore (podman) to the same rules.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from ovsvnet.lab import netns as N

from . import rootfs
from .test_containers import Box, box_fixture, run, start_dockerd  # noqa: F401 - fixture "box"

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("dockerd") is None,
                    reason="dockerd not installed (Debian package docker.io)")
def test_the_image_holds_the_tree_without_venv_vcs_or_caches_and_runs_the_suite(
        box: Box) -> None:
    ns = f"ovc{secrets.token_hex(3)}-build"  # dockerd's own namespace: lo only, no way out
    N.create(ns)
    box.on_teardown(lambda: N.remove(ns))
    env = start_dockerd(box, ns)
    run(["docker", "import", str(rootfs.root_tarball()), "localhost/debian:12"], env,
        timeout=120)
    run(["docker", "build", "--network", "none", "--build-arg", "BASE=localhost/debian:12",
         "--target", "source", "-t", "ovsvnet-ci:source", "-f", "ci/Containerfile", str(ROOT)],
        env, timeout=300)
    config = json.loads(run(["docker", "image", "inspect", "ovsvnet-ci:source"],
                            env).stdout)[0]["Config"]
    assert config["Cmd"] == ["bash", "ci/run-tests.sh"]
    assert config["WorkingDir"] == "/src" and not config["Entrypoint"]
    run(["docker", "create", "--name", "src", "ovsvnet-ci:source"], env)
    box.on_teardown(lambda: run(["docker", "rm", "-f", "src"], env, check=False))
    tar = subprocess.run(["docker", "cp", "src:/src", "-"], env=env, capture_output=True,
                         check=True, timeout=120).stdout
    names = {m.name.removeprefix("src/") for m in tarfile.open(fileobj=io.BytesIO(tar))}
    for needed in ("pyproject.toml", "ci/install-deps.sh", "ci/run-tests.sh",
                   "ovsvnet/__init__.py", "tests/unit/test_containerfile.py",
                   "examples/containers/ovs-docker-vnet97.sh", ".containerignore"):
        assert needed in names, needed
    leaked = sorted(n for n in names if n.split("/")[0] in (".venv", ".git", "build", ".ci")
                    or "__pycache__" in n.split("/") or ".egg-info" in n
                    or n.split("/")[0].endswith("_cache"))
    assert leaked == []
    # it meant something: this checkout has what had to stay out
    assert [p for p in (".venv", ".git") if (ROOT / p).exists()]
