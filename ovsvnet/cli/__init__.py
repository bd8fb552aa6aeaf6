"""The ``ovsvnet`` command (and ``vn``, its Xen name): the entry points.

Importing this package costs next to nothing: a command that a running agent can do on its
copy of the database (:mod:`ovsvnet.cli.delegate`) is handed to it before click or
python-ovs is imported, so such a command costs an interpreter start and the agent's work.
Everything else goes to the click group in :mod:`ovsvnet.cli.root`, which is also what
``from ovsvnet.cli import cli`` (or ``COMMANDS``, ``run``...) gives.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing itself costs 5 ms: the annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def main(argv: Sequence[str] | None = None, prog_name: str = "ovsvnet") -> None:
    """Entry point: run the command, turning ovsvnet errors into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    from ovsvnet.cli import delegate
    done = delegate.fast_path(args, prog_name)
    if done is not None:
        code, out, err = done
        sys.stdout.write(out)
        sys.stderr.write(err)
        sys.exit(code)
    from ovsvnet.cli.root import run
    sys.exit(run(args, prog_name))


def vn_main() -> None:
    """``vn``: the Xen vnet tool's name for the same commands."""
    main(prog_name="vn")


def __getattr__(name: str) -> Any:
    """The click group and its helpers, imported on first use (PEP 562)."""
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib  # (not "from ovsvnet.cli import root": that asks this function again)
    root = importlib.import_module("ovsvnet.cli.root")
    try:
        return getattr(root, name)
    except AttributeError:
        raise AttributeError(f"module 'ovsvnet.cli' has no attribute {name!r}") from None
