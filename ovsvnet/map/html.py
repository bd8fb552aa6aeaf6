"""A self-contained HTML page around the map's SVG, reloading itself.

Pure. Why a meta refresh and no script: the page is a local file that ``ovsvnet map --html
FILE --watch`` rewrites (atomically) from the agent's status; the browser reloads it every
``refresh`` seconds. Nothing listens on the network for it (no endpoint to secure, no
cross-origin access to allow), the agent's loop never runs Graphviz, and the page carries a
Content-Security-Policy that forbids every script and remote load, so even a hostile host
name in the SVG could not run code.
"""

from __future__ import annotations

import html
import re

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def inline_svg(svg: str) -> str:
    """The ``<svg>`` element of Graphviz's output, without its XML prolog and doctype."""
    start = svg.find("<svg")
    if start < 0:
        raise ValueError("not an SVG document")
    return re.sub(r"<!--.*?-->", "", svg[start:], flags=re.S).strip()


def page(svg: str, title: str, generated: str, refresh: float | None = None,
         note: str = "") -> str:
    """The page: title, when it was drawn, the SVG inline, and how it refreshes."""
    meta = (f'<meta http-equiv="refresh" content="{max(1, round(refresh))}">'
            if refresh else "")
    how = (f"reloads every {max(1, round(refresh))} s" if refresh else "a snapshot")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
{meta}
<title>{html.escape(title)}</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 1em; color: #222; }}
header {{ font-size: 0.9em; color: #555; margin-bottom: 0.5em; }}
main svg {{ max-width: 100%; height: auto; }}
</style>
</head>
<body>
<header>{html.escape(title)} · drawn {html.escape(generated)} · {how}{
    (" · " + html.escape(note)) if note else ""}</header>
<main>
{inline_svg(svg)}
</main>
</body>
</html>
"""
