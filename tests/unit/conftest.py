"""A real ovsdb-server for the OVSDB client's unit tests: started unprivileged on a unix
socket in a temporary directory (no namespace, no switch), stopped by its own pid."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


@pytest.fixture
def ovsdb_server(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """``ovsdb_server(schema_path)`` -> a ``unix:`` remote serving a fresh database."""
    if not shutil.which("ovsdb-server") or not shutil.which("ovsdb-tool"):
        pytest.skip("needs ovsdb-server and ovsdb-tool (openvswitch-common)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(schema: Path) -> str:
        n = len(procs)
        db, sock = tmp_path / f"db{n}.db", tmp_path / f"db{n}.sock"
        subprocess.run(["ovsdb-tool", "create", str(db), str(schema)], check=True,
                       capture_output=True)
        proc = subprocess.Popen(
            ["ovsdb-server", str(db), f"--remote=punix:{sock}", "--no-chdir",
             f"--unixctl={tmp_path / f'db{n}.ctl'}", "-vconsole:off",
             f"--log-file={tmp_path / f'db{n}.log'}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ovsdb-server did not start: {proc.returncode}")
            time.sleep(0.02)
        return f"unix:{sock}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
