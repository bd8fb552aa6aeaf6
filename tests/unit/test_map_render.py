"""``ovsvnet map`` through the real Graphviz: the SVG has every host, tunnel and label, a
hostile host name stays text, files are replaced atomically; the CLI's format rules."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from ovsvnet.cli.map import _format_for
from ovsvnet.errors import ConfigError, OvsvnetError
from ovsvnet.map import dot, model, render

from .test_map_model import facts, with_registry

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="needs graphviz (dot)")


def parse(svg: str) -> dict[str, dict]:
    out = {}
    for g in ET.fromstring(svg).iter(f"{SVG}g"):
        if g.get("class") in ("node", "edge"):
            out[g.get("id")] = {"title": g.findtext(f"{SVG}title"),
                                "texts": [t.text or "" for t in g.iter(f"{SVG}text")]}
    return out


@needs_dot
def test_svg_has_every_host_and_tunnel_with_its_labels():
    g = model.build(with_registry(facts()))
    items = parse(render.svg(dot.render(g)))
    assert {k for k in items if k.startswith("host-")} == {"host-hv1", "host-hv2", "host-hv3"}
    tunnels = {k for k in items if k.startswith("tunnel-")}
    assert tunnels == {f"tunnel-{t.a}-{t.b}-{t.level}" for t in g.tunnels} and len(tunnels) == 6
    assert items["tunnel-hv1-hv2-none"]["title"] == "hv1--hv2"
    assert "none · up · mtu 1450" in items["tunnel-hv1-hv2-none"]["texts"]
    assert "auth · inactive · mtu 1421" in items["tunnel-hv1-hv2-auth"]["texts"]
    hv3 = " ".join(items["host-hv3"]["texts"])
    assert "10.0.0.4 · down · registry" in hv3 and "behind the registry" in hv3


@needs_dot
def test_a_hostile_name_is_drawn_as_text():
    f = facts()
    evil = 'evil" -- x [label=<<B>pwn</B>>] "'
    f["agent"]["peers"][0]["origin"] = evil
    f["tunnels"][0]["origin"] = evil
    items = parse(render.svg(dot.render(model.build(f))))
    node = next(v for v in items.values() if v["title"] == evil)
    assert evil in node["texts"]
    assert len([k for k in items if k.startswith("host-")]) == 3


@needs_dot
def test_files_are_replaced_atomically(tmp_path):
    text = dot.render(model.build(facts()))
    for fmt in ("svg", "png", "dot"):
        out = tmp_path / f"map.{fmt}"
        render.write(text, fmt, str(out))
        assert out.stat().st_size > 100 and oct(out.stat().st_mode & 0o777) == "0o644"
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.dot", "map.png", "map.svg"]


def test_without_graphviz_one_line_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(render.proc, "which", lambda name: None)
    with pytest.raises(OvsvnetError, match=r"apt-get install graphviz"):
        render.svg("graph {}")
    with pytest.raises(OvsvnetError):
        render.write("graph {}", "png", str(tmp_path / "x.png"))
    assert list(tmp_path.iterdir()) == []


def test_output_format_rules():
    assert _format_for(None, None) == "dot"
    assert _format_for("a/b.PNG", None) == "png" and _format_for("x.gv", None) == "dot"
    assert _format_for("x.whatever", "svg") == "svg"
    for bad in ("x.pdf", "x.html", "noext"):
        with pytest.raises(ConfigError, match="^output: cannot tell the format"):
            _format_for(bad, None)
