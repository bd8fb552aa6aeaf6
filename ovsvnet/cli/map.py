"""``ovsvnet map``: draw the network (hosts, vnets, tunnels) with Graphviz."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import click

from ovsvnet.cli.common import Session, pass_session
from ovsvnet.errors import ConfigError

EXTENSIONS = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".json": "json",
              ".html": "html", ".htm": "html"}


def _format_for(output: str | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    if output is None:
        return "dot"
    ext = os.path.splitext(output)[1].lower()
    if ext not in EXTENSIONS or EXTENSIONS[ext] == "html":
        raise ConfigError(f"output: cannot tell the format of {output!r} from its extension "
                          "(.dot, .svg, .png, .json; or give --format; HTML: --html FILE)")
    return EXTENSIONS[ext]


def _draw(s: Session, fmt: str, output: str | None, html_file: str | None,
          refresh: float | None) -> dict[str, Any]:
    """Gather, build and write once; the graph's JSON (for --watch's message)."""
    from ovsvnet.map import dot, gather, html, model, render
    facts = gather.facts(s.host, s.registry if s.registry_remotes else None)
    graph = model.build(facts)
    text = dot.render(graph)
    if fmt == "json":
        data = json.dumps({"graph": graph.to_dict(), "facts": facts}, indent=2,
                          sort_keys=True) + "\n"
        if output:
            render.write_text(data, output)
        else:
            click.echo(data, nl=False)
    elif output:
        render.write(text, fmt, output)
    elif fmt == "dot":
        click.echo(text, nl=False)
    elif fmt == "svg":
        click.echo(render.svg(text), nl=False)
    else:
        raise ConfigError("format: png needs --output FILE")
    if html_file:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        note = "" if facts["agent"] else "agent not running"
        render.write_text(html.page(render.svg(text), graph.title, stamp, refresh, note),
                          html_file)
    return graph.to_dict()


@click.command("map", epilog="""\b
Examples:
  ovsvnet map -o net.png                         # this host, its peers, their tunnels
  ovsvnet --registry 10.0.0.1,10.0.0.2,10.0.0.3 map -o cluster.svg   # every chassis
  ovsvnet map | dot -Tpdf > net.pdf              # DOT on stdout
  ovsvnet map --html /var/www/ovsvnet/map.html --watch   # a page that keeps itself fresh
  ovsvnet map --format json | jq '.graph.tunnels[] | select(.state == "down")'

\b
Hosts: this host (blue), up (green: heard by the agent), down (red: a static peer or a
registry chassis not heard), unknown (grey: nothing can tell). Tunnels, one per pair of
hosts and security level: up, armed (secure, IPsec policies in place), inactive (secure
level without IPsec: the vnet stays on its host), down, unknown (between two other hosts).
Needs Graphviz's dot for SVG, PNG and HTML (Debian: apt-get install graphviz).""")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write to FILE (format from its extension: .dot .svg .png .json).")
@click.option("--format", "fmt", type=click.Choice(["dot", "svg", "png", "json"]),
              help="Output format (default: from --output, else dot on stdout).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write a self-contained HTML page with the SVG.")
@click.option("--refresh", type=click.FloatRange(1, 3600), default=None, metavar="SECONDS",
              help="The HTML page reloads itself this often (default with --watch: 5).")
@click.option("--watch", is_flag=True,
              help="Keep redrawing every --refresh seconds until interrupted (with --html: "
                   "a live page; files are replaced atomically).")
@pass_session
def map_(s: Session, output: str | None, fmt: str | None, html_file: str | None,
         refresh: float | None, watch: bool) -> None:
    """Draw the network: hosts, the vnets each carries, tunnels with level, state and MTU.

    From this host's view (its OVSDB and its agent: the peers it hears, static peers,
    conflicts); with --registry also every chassis and vnet of the cluster registry.
    """
    fmt = _format_for(output, fmt)
    if watch and not (output or html_file):
        raise ConfigError("watch: give --output FILE or --html FILE to keep redrawing")
    if watch and refresh is None:
        refresh = 5.0
    _draw(s, fmt, output, html_file, refresh)
    if not watch:
        return
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    assert refresh is not None
    try:
        while not stop:
            next_at = time.monotonic() + refresh
            while not stop and time.monotonic() < next_at:
                time.sleep(0.2)
            if not stop:
                s.host.db.run()  # the IDLs catch up with what changed meanwhile
                if s.registry_remotes:
                    s.registry.db.run()
                _draw(s, fmt, output, html_file, refresh)
    except KeyboardInterrupt:
        pass
