"""The graph as Graphviz DOT text: hosts as tables of their vnets, tunnels as edges.

Pure. Every node and edge gets a stable ``id`` (``host-<key>``, ``tunnel-<a>-<b>-<level>``)
that Graphviz copies into the SVG, so tests and style sheets can find them. Everything
that came from the network (host names, notes) is escaped: a peer's id cannot inject DOT
or markup.
"""

from __future__ import annotations

import html
import re

from ovsvnet.map.model import Graph, HostNode, Tunnel

#: state -> (colour, style, pen width) of a tunnel edge
EDGE_STYLE = {
    "up": ("#2ca02c", "solid", 2.0),
    "armed": ("#1f5fbf", "bold", 3.0),
    "inactive": ("#8c8c8c", "dashed", 1.5),
    "down": ("#d62728", "dotted", 2.0),
    "unknown": ("#b0b0b0", "dashed", 1.0),
}
#: host state -> (border colour, fill, border style)
NODE_STYLE = {
    "self": ("#1f5fbf", "#eaf1fb", "bold"),
    "up": ("#2ca02c", "#f3fbf3", "solid"),
    "down": ("#d62728", "#fdecea", "dashed"),
    "unknown": ("#8c8c8c", "#f5f5f5", "dashed"),
}
#: vnet state (on a host) -> its text colour
VNET_COLOUR = {"active": "#2c7a2c", "carried": "#222222", "inactive": "#8c8c8c",
               "pending": "#b36b00", "missing": "#d62728"}


def quote(text: str) -> str:
    """A DOT double-quoted string (backslash and quote escaped, newlines as \\n)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def ident(*parts: str) -> str:
    """An id for SVG: letters, digits, '-', '_' and '.' only."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)


def _row(cells: list[str], colour: str = "#222222", italic: bool = False) -> str:
    out = []
    for i, c in enumerate(cells):
        align = "RIGHT" if i == 2 else "LEFT"
        if not c:  # Graphviz refuses an empty <FONT></FONT>
            out.append(f'<TD ALIGN="{align}"> </TD>')
            continue
        text = f"<I>{_e(c)}</I>" if italic else _e(c)
        out.append(f'<TD ALIGN="{align}"><FONT COLOR="{colour}">{text}</FONT></TD>')
    return "<TR>" + "".join(out) + "</TR>"


def node_label(h: HostNode) -> str:
    border, _, _ = NODE_STYLE.get(h.state, NODE_STYLE["unknown"])
    state = "this host" if h.state == "self" else h.state
    tags = [t for t, on in (("static", h.static), ("registry", h.registry)) if on]
    rows = [f'<TR><TD COLSPAN="4"><B>{_e(h.name)}</B></TD></TR>',
            f'<TR><TD COLSPAN="4"><FONT COLOR="{border}">{_e(h.address or "address unknown")}'
            f' · {_e(state)}{_e(" · " + ", ".join(tags)) if tags else ""}</FONT></TD></TR>']
    if h.all_vnets:
        rows.append(_row(["every vnet", "", "", ""]))
    for key, v in sorted(h.vnets.items()):
        mtu = f"mtu {v.mtu}" if v.mtu else ""
        state = v.state + (f" ({v.domains} dom)" if v.domains else "")
        rows.append(_row([f"vnet {key}", v.level, mtu, state],
                         VNET_COLOUR.get(v.state, "#222222"),
                         italic=v.state in ("inactive", "pending")))
    for note in h.notes:
        rows.append(f'<TR><TD COLSPAN="4" ALIGN="LEFT"><FONT COLOR="#d62728">{_e(note)}'
                    "</FONT></TD></TR>")
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="3">'
            + "".join(rows) + "</TABLE>>")


def _node(h: HostNode) -> str:
    border, fill, style = NODE_STYLE.get(h.state, NODE_STYLE["unknown"])
    return (f"  {quote(h.key)} [id={quote(ident('host', h.key))}, label={node_label(h)}, "
            f'color="{border}", fillcolor="{fill}", style="rounded,filled,{style}", '
            f"tooltip={quote(h.key)}];")


def _edge(t: Tunnel) -> str:
    colour, style, width = EDGE_STYLE.get(t.state, EDGE_STYLE["unknown"])
    tip = f"{t.level} tunnel {t.state}" + (f": {t.note}" if t.note else "") + \
        (f" ({', '.join(t.ports)})" if t.ports else "") + f"; vnets {', '.join(t.vnets)}"
    return (f"  {quote(t.a)} -- {quote(t.b)} [id={quote(ident('tunnel', t.a, t.b, t.level))}, "
            f"label={quote(t.label)}, color=\"{colour}\", fontcolor=\"{colour}\", "
            f"style={style}, penwidth={width}, tooltip={quote(tip)}];")


def legend() -> str:
    """The key to the edges, under the title (HTML-like label text)."""
    parts = [f'<FONT COLOR="{c}">{_e(s)}</FONT>' for s, (c, _, _) in EDGE_STYLE.items()]
    return ('<FONT POINT-SIZE="10">tunnels: ' + " · ".join(parts)
            + "<BR/>one edge per pair of hosts and security level; "
            "mtu: the guest MTU of that level</FONT>")


def render(g: Graph) -> str:
    """DOT text for ``g`` (an undirected graph laid out by ``dot``, left to right)."""
    lines = [
        f"graph {quote(ident('ovsvnet', g.view))} {{",
        f'  graph [label=<<B>{_e(g.title)}</B><BR/>{legend()}>, labelloc=t, fontname="Helvetica", '
        'rankdir=LR, nodesep=0.6, ranksep=1.6, pad=0.3];',
        '  node [shape=box, fontname="Helvetica", fontsize=11, margin="0.15,0.08"];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    lines += [_node(h) for h in g.hosts.values()]
    lines += [_edge(t) for t in g.tunnels]
    lines.append("}")
    return "\n".join(lines) + "\n"
