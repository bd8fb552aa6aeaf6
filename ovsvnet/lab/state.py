"""Where labs keep their files and state, and the state file itself (``lab.json``, version 1).

A lab that outlives the process that built it (``ovsvnet sandbox up``, ``ovsvnet demo
--keep``) lives in ``<state dir>/<name>/``; its ``lab.json`` is what
:meth:`ovsvnet.lab.Lab.load` reads to drive or tear it down later.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ovsvnet.lab.common import LabError, LabNotFoundError

#: Where ``ovsvnet sandbox`` and ``ovsvnet demo --keep`` keep their labs.
DEFAULT_STATE_DIR = Path("/run/ovsvnet-sandbox")
#: The environment variable that moves it.
STATE_DIR_ENV = "OVSVNET_SANDBOX_DIR"
STATE_FILE = "lab.json"
STATE_VERSION = 1
#: Where labs without an explicit workdir live: short, for the unix socket paths.
_TMP = "/tmp"


def state_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$OVSVNET_SANDBOX_DIR``, else :data:`DEFAULT_STATE_DIR`."""
    return explicit or Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_state(path: Path) -> dict[str, Any]:
    """The JSON of a lab state file; :class:`LabNotFoundError` when there is none."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabNotFoundError(f"no lab state file {path}") from None
    except (OSError, ValueError) as err:
        raise LabError(f"cannot read lab state {path}: {err}") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise LabError(f"lab state {path} has unknown version {version!r}")
    return data


def is_state_of(path: Path, prefix: str) -> bool:
    """Whether ``path`` is a readable lab state file of the lab ``prefix``."""
    try:
        return read_state(path).get("prefix") == prefix
    except LabError:
        return False


def make_workdir(prefix: str, workdir: Path | str | None = None) -> tuple[Path, bool]:
    """The directory of lab ``prefix``, and whether the lab made it (its teardown then
    removes it all).

    Without ``workdir``: a new private ``/tmp/<prefix>-XXXXXXXX``. With one: created with
    mode 0700, or, when it exists, a real directory that is empty or holds only this lab's
    state file; anything else might hold files (or symlinks) this root process should not
    touch."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix=prefix + "-", dir=_TMP)), True
    path = Path(workdir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
        return path, True
    except FileExistsError:
        pass
    except OSError as err:
        raise LabError(f"cannot create lab directory {path}: {err.strerror or err}") from err
    if path.is_symlink() or not path.is_dir():
        raise LabError(f"lab directory {path} exists and is not a plain directory")
    entries = [p for p in path.iterdir() if p.name != STATE_FILE + ".tmp"]
    if any(p.name != STATE_FILE or not is_state_of(p, prefix) for p in entries):
        raise LabError(f"lab directory {path} exists and is not empty")
    return path, False
