"""Graphviz: DOT text -> SVG or PNG, with ``dot`` (Debian package ``graphviz``)."""

from __future__ import annotations

import os
import tempfile

from ovsvnet.errors import OvsvnetError
from ovsvnet.system import proc

FORMATS = ("dot", "svg", "png", "json")
TIMEOUT = 30.0


def _dot() -> str:
    found = proc.which("dot")
    if found is None:
        raise OvsvnetError("map: Graphviz's 'dot' is not installed (apt-get install graphviz); "
                           "--format dot prints the graph without it")
    return found


def svg(dot_text: str) -> str:
    """The SVG text of a graph."""
    return proc.run([_dot(), "-Tsvg"], input=dot_text, timeout=TIMEOUT, what="dot -Tsvg",
                    error=OvsvnetError).stdout


def write(dot_text: str, fmt: str, path: str) -> None:
    """Render to ``path`` (replaced atomically: a page or watcher never reads half a file)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".map-", suffix=f".{fmt}", dir=directory)
    os.close(fd)
    try:
        if fmt in ("svg", "png"):
            proc.run([_dot(), f"-T{fmt}", "-o", tmp], input=dot_text, timeout=TIMEOUT,
                     what=f"dot -T{fmt}", error=OvsvnetError)
        else:
            with open(tmp, "w") as f:
                f.write(dot_text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(text: str, path: str) -> None:
    """Write ``text`` to ``path`` atomically (the HTML page, JSON)."""
    write(text, "text", path)
