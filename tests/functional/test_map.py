"""``ovsvnet map`` of a real 3-host lab: none and auth vnets (auth inactive on the userspace
datapath), a registry, one host down; drawn with Graphviz, checked in the SVG, opened in
headless Chromium from the HTML page.

``OVSVNET_MAP_SAVE=DIR`` keeps the pictures (map.svg, map.png, map.html, chromium.png):
that is how docs/map.svg and docs/map.png are made.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ovsvnet.lab import Lab, LabHost, wait_until
from ovsvnet.lab.registry import RegistryCluster

from .helpers import ovsvnet
from .test_agent import status, tunnels
from .test_metrics import DefaultAgents

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("dot") is None, reason="needs graphviz (dot)")]

SVG = "{http://www.w3.org/2000/svg}"
UP, DOWN, INACTIVE = "#2ca02c", "#d62728", "#8c8c8c"


def svg_items(path: Path) -> dict[str, dict]:
    """Graphviz's SVG: each node's and edge's id -> its title, texts and stroke colours."""
    root = ET.parse(path).getroot()
    out = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") not in ("node", "edge"):
            continue
        out[g.get("id")] = {
            "class": g.get("class"), "title": g.findtext(f"{SVG}title"),
            "texts": [t.text or "" for t in g.iter(f"{SVG}text")],
            "strokes": {e.get("stroke") for e in g.iter() if e.get("stroke")},
            "dashed": any(e.get("stroke-dasharray") for e in g.iter()),
        }
    return out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def count_colour(path: Path, hex_colour: str, tolerance: int = 40) -> int:
    """Pixels of a picture within ``tolerance`` of a colour (Pillow, from matplotlib)."""
    image = pytest.importorskip("PIL.Image")
    want = bytes.fromhex(hex_colour[1:])
    with image.open(path) as im:
        data = im.convert("RGB").tobytes()
    return sum(1 for i in range(0, len(data), 3)
               if all(abs(data[i + k] - want[k]) <= tolerance for k in range(3)))


def screenshot(html: Path, out: Path, workdir: Path) -> None:
    """Open the page in headless Chromium: in a new, empty network namespace (``unshare
    -n``: not even the root namespace's loopback), with a private profile directory."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs chromium")
    profile = workdir / "chromium-profile"
    profile.mkdir()
    proc = subprocess.run(
        ["unshare", "--net", "--", chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1600,1200",
         f"--screenshot={out}", html.as_uri()],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.exists(), proc.stderr[-2000:]


def test_a_three_host_lab_with_one_host_down_drawn_and_checked(tmp_path):
    agents = DefaultAgents()
    with Lab() as lab:
        lab.add_segment("s1")
        r1 = lab.add_plain_host("r1", "s1")
        h1, h2, h3 = (lab.add_host(n, "s1") for n in ("h1", "h2", "h3"))
        with RegistryCluster(lab.workdir, [r1], standalone=True, insecure=True) as cluster:
            try:
                _scenario(lab, cluster, agents, h1, h2, h3, tmp_path)
            finally:
                agents.stop_all()


def _scenario(lab: Lab, cluster: RegistryCluster, agents: DefaultAgents, h1: LabHost,
              h2: LabHost, h3: LabHost, tmp_path: Path) -> None:
    cluster.up()
    R = cluster.operator_remotes
    ovsvnet(h2, "create", "--id", "9b")  # a local vnet; the registry's 9b will clash on h2
    for h in (h1, h2, h3):
        agents.start(h, "--registry", cluster.remotes)
    ovsvnet(h1, "--registry", R, "create", "--id", "97")
    ovsvnet(h1, "--registry", R, "create", "--id", "99", "--security", "auth")
    ovsvnet(h1, "--registry", R, "create", "--id", "9a", "--chassis", h2.system_id,
            "--chassis", h3.system_id)
    ovsvnet(h1, "--registry", R, "create", "--id", "9b")
    def shorts(h: LabHost) -> set[str]:
        return {v["short"] for v in json.loads(ovsvnet(h, "list", "--json").stdout)}
    assert wait_until(lambda: shorts(h1) == {"0097", "0099", "009b"}
                      and shorts(h3) == {"0097", "0099", "009a", "009b"}, timeout=30,
                      what="the registry's vnets on h1 and h3")
    assert wait_until(lambda: tunnels(h1) == {h2.address, h3.address}
                      and tunnels(h2) == {h1.address, h3.address}, timeout=30, what="mesh")
    assert wait_until(lambda: (status(h2)["agent"]["registry"] or {}).get("conflicts"),
                      timeout=15, what="the conflict on h2")
    bridge = {v["short"]: v["bridge"] for v in
              json.loads(ovsvnet(h1, "list", "--json").stdout)}["0097"]
    lab.add_guest("g1", "h1", bridge, ip="192.168.97.1/24", mtu=1450)
    # h3 goes down hard: its agent killed, its Open vSwitch stopped
    agents.procs["h3"].send_signal(signal.SIGKILL)
    agents.procs.pop("h3").wait()
    h3.stop()
    assert wait_until(lambda: h3.system_id not in
                      {p["origin"] for p in status(h1)["agent"]["peers"]
                       if p["last_seen"] is not None}, timeout=10, what="h3 silent")

    out = tmp_path / "out"
    out.mkdir()
    svg, png, page = out / "map.svg", out / "map.png", out / "map.html"
    ovsvnet(h1, "--registry", cluster.remotes, "map", "-o", str(svg), "--html", str(page),
            "--refresh", "5")
    ovsvnet(h1, "--registry", cluster.remotes, "map", "-o", str(png))
    graph = json.loads(ovsvnet(h1, "--registry", cluster.remotes, "map", "--format",
                               "json").stdout)["graph"]

    items = svg_items(svg)
    ids = {h.name: f"host-{h.system_id}" for h in (h1, h2, h3)}
    for name, hid in ids.items():
        assert items[hid]["class"] == "node" and items[hid]["title"] == \
            {"h1": h1, "h2": h2, "h3": h3}[name].system_id
    n1, n2, n3 = (" ".join(items[ids[n]]["texts"]) for n in ("h1", "h2", "h3"))
    assert f"{h1.address} · this host" in n1 and f"{h2.address} · up" in n2
    assert f"{h3.address} · down" in n3
    assert "vnet 0097" in n1 and "mtu 1450" in n1 and "active (1 dom)" in n1
    assert "vnet 0099" in n1 and "auth" in n1 and "mtu 1421" in n1 and "inactive" in n1
    assert "vnet 009a" not in n1 and "vnet 009a" in n2  # scoped to h2 and h3
    assert "conflict 009b" in n2
    assert DOWN in items[ids["h3"]]["strokes"] and UP in items[ids["h2"]]["strokes"]

    def edge(a: LabHost, b: LabHost, level: str) -> dict:
        return items[f"tunnel-{a.system_id}-{b.system_id}-{level}"]

    e = edge(h1, h2, "none")
    assert e["class"] == "edge" and e["title"] == f"{h1.system_id}--{h2.system_id}"
    assert "none · up · mtu 1450" in e["texts"] and UP in e["strokes"]
    assert "vnet 0097, 009b" in e["texts"]
    e = edge(h1, h2, "auth")
    assert "auth · inactive · mtu 1421" in e["texts"] and INACTIVE in e["strokes"]
    assert e["dashed"]
    for a, b in ((h1, h3), (h2, h3)):
        assert any("none · down" in t for t in edge(a, b, "none")["texts"])
        assert DOWN in edge(a, b, "none")["strokes"]
        assert DOWN in edge(a, b, "auth")["strokes"]
    states = {(t["a"], t["b"], t["level"]): t["state"] for t in graph["tunnels"]}
    assert states[(h2.system_id, h3.system_id, "none")] == "down"
    assert len(states) == 6  # 3 pairs x (none, auth)

    # the page: self-contained, reloads itself, shows the picture in a real browser
    text = page.read_text()
    assert '<meta http-equiv="refresh" content="5">' in text and "<script" not in text
    assert text.count("<svg") == 1 and f">{h3.system_id}</title>" in html.unescape(text)
    shot = out / "chromium.png"
    screenshot(page, shot, tmp_path)
    assert png_size(shot) == (1600, 1200)
    assert count_colour(shot, DOWN) > 200 and count_colour(shot, UP) > 200, \
        "the screenshot shows no red (down) or green (up) tunnels: the SVG did not render"
    width, height = png_size(png)
    assert png.stat().st_size > 10_000 and width > 400 and height > 200

    # --watch keeps the page fresh (atomically replaced), and stops on SIGTERM
    watched = out / "watch.html"
    watcher = subprocess.Popen(
        ["ip", "netns", "exec", h1.netns, sys.executable, "-m", "ovsvnet", "--db", h1.db,
         "map", "--html", str(watched), "--watch", "--refresh", "1", "--format", "dot",
         "-o", str(out / "watch.dot")],
        env=h1.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        assert wait_until(watched.exists, timeout=20, what="the watched page")
        first = watched.stat().st_mtime_ns
        assert wait_until(lambda: watched.stat().st_mtime_ns != first, timeout=10,
                          what="the page rewritten")
    finally:
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(10) == 0, watcher.stderr.read() if watcher.stderr else ""
    assert '<meta http-equiv="refresh" content="1">' in watched.read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".map-")]

    # this host's view alone (no registry): h2 heard, the vnets it announced
    host_view = json.loads(ovsvnet(h1, "map", "--format", "json").stdout)["graph"]
    hosts = {h["key"]: h for h in host_view["hosts"]}
    assert hosts[h1.system_id]["state"] == "self" and hosts[h2.system_id]["state"] == "up"

    save = os.environ.get("OVSVNET_MAP_SAVE")
    if save:
        Path(save).mkdir(parents=True, exist_ok=True)
        for f in (svg, png, page, shot):
            shutil.copy(f, Path(save) / f.name)
