"""``ovsvnet map``'s pure parts: facts -> graph (states of hosts and tunnels), DOT, HTML."""

from __future__ import annotations

import copy
import re

import pytest

from ovsvnet.map import dot, html, model

CANON = "0000:0000:0000:0000:0000:0000:0000:00{}"


def facts() -> dict:
    """hv1 (this host): vnet 97 (none, active) and 99 (auth, inactive: no IPsec); hv2 heard,
    carrying 97; a static peer 10.0.0.3 never heard."""
    return {
        "host": {"system_id": "hv1", "hostname": None, "local_ip": "10.0.0.1",
                 "vnet_mtu_by_level": {"none": 1450, "auth": 1421, "conf": 1421}},
        "vnets": [
            {"short": "0097", "key": 0x97, "security": "none", "state": "active", "mtu": 1450,
             "domains": ["vif1.0"], "reason": None, "source": "local"},
            {"short": "0099", "key": 0x99, "security": "auth", "state": "inactive",
             "mtu": 1421, "domains": [], "reason": "IPsec needs the kernel datapath",
             "source": "local"}],
        "broken": [],
        "tunnels": [
            {"port": "vx-0a000002", "peer": "10.0.0.2", "level": "none", "ofport": 5,
             "origin": "hv2", "source": None, "vnets": ["97"]},
            {"port": "vx-0a000003", "peer": "10.0.0.3", "level": "none", "ofport": 6,
             "origin": None, "source": None, "vnets": None}],
        "static_peers": ["10.0.0.3"],
        "armed": [],
        "agent": {"system_id": "hv1", "group": "224.10.0.1:1798",
                  "peers": [{"origin": "hv2", "address": "10.0.0.2", "vnets": ["0097"],
                             "levels": {"0097": "none"}, "last_seen": 0.3}],
                  "static_peers": {"10.0.0.3": None}, "rejected_peers": {},
                  "id_clashes": [], "registry": None},
        "registry": None,
    }


def with_registry(f: dict) -> dict:
    f = copy.deepcopy(f)
    f["static_peers"], f["agent"]["static_peers"] = [], {}
    f["tunnels"] = f["tunnels"][:1]
    f["registry"] = {
        "next_cfg": 5, "broken": {},
        "vnets": [{"id": CANON.format(97), "key": 0x97, "security": "none", "chassis": []},
                  {"id": CANON.format(99), "key": 0x99, "security": "auth", "chassis": []},
                  {"id": CANON.format(98), "key": 0x98, "security": "none",
                   "chassis": ["hv2", "hv3"]}],
        "chassis": [
            {"name": "hv1", "hostname": "", "address": "10.0.0.1", "cfg": 5, "behind": False,
             "vnets": [CANON.format(97)], "conflicts": {}},
            {"name": "hv2", "hostname": "node2", "address": "10.0.0.2", "cfg": 5,
             "behind": False, "vnets": [CANON.format(97), CANON.format(98)],
             "conflicts": {CANON.format(99): "a local vnet holds id 0099"}},
            {"name": "hv3", "hostname": "", "address": "10.0.0.4", "cfg": 3, "behind": True,
             "vnets": [CANON.format(97), CANON.format(98)], "conflicts": {}}]}
    return f


def edges(g: model.Graph) -> dict[tuple[str, str, str], model.Tunnel]:
    return {(t.a, t.b, t.level): t for t in g.tunnels}


def test_this_hosts_view_states():
    g = model.build(facts())
    assert {k: h.state for k, h in g.hosts.items()} == \
        {"hv1": "self", "hv2": "up", "ip:10.0.0.3": "down"}
    me = g.hosts["hv1"]
    assert me.vnets["0097"].mtu == 1450 and me.vnets["0097"].domains == 1
    assert me.vnets["0099"].state == "inactive"
    assert g.hosts["ip:10.0.0.3"].static and g.hosts["ip:10.0.0.3"].all_vnets
    e = edges(g)
    up = e[("hv1", "hv2", "none")]
    assert (up.state, up.mtu, up.ports, up.vnets) == ("up", 1450, ["vx-0a000002"], ["0097"])
    assert ("hv1", "hv2", "auth") not in e  # hv2 does not carry 99
    # the silent static peer carries every vnet: both levels, down
    assert e[("hv1", "ip:10.0.0.3", "none")].state == "down"
    assert e[("hv1", "ip:10.0.0.3", "auth")].state == "down"
    # between two other hosts: not seen from here, but a down end is down
    assert e[("hv2", "ip:10.0.0.3", "none")].state == "down"
    assert g.view == "host" and "hv1" in g.title


def test_a_secure_level_without_ipsec_is_inactive_and_armed_when_policies_are_in():
    f = facts()
    f["agent"]["peers"][0]["vnets"].append("0099")
    f["agent"]["peers"][0]["levels"]["0099"] = "auth"
    auth = model.build(f).tunnels
    assert [t.state for t in auth if t.level == "auth" and t.b == "hv2"] == ["inactive"]
    assert [t.note for t in auth if t.level == "auth" and t.b == "hv2"] == \
        ["IPsec needs the kernel datapath"]
    # on the kernel datapath with IPsec: a Geneve port, armed or not
    f["vnets"][1]["state"] = "active"
    f["tunnels"].append({"port": "gn-0a000002", "peer": "10.0.0.2", "level": "auth",
                         "ofport": 7, "origin": "hv2", "source": None, "vnets": ["99"]})
    assert edges(model.build(f))[("hv1", "hv2", "auth")].state == "inactive"
    f["armed"] = ["gn-0a000002"]
    assert edges(model.build(f))[("hv1", "hv2", "auth")].state == "armed"
    f["tunnels"][-1]["ofport"] = None
    assert edges(model.build(f))[("hv1", "hv2", "auth")].state == "down"


def test_registry_view_roster_conflicts_and_silent_chassis():
    g = model.build(with_registry(facts()))
    assert g.view == "registry"
    assert {k: h.state for k, h in g.hosts.items()} == \
        {"hv1": "self", "hv2": "up", "hv3": "down"}  # multicast on, hv3 not heard
    assert g.hosts["hv2"].name == "node2 (hv2)"
    assert any("conflict 0099" in n for n in g.hosts["hv2"].notes)
    assert any("behind the registry" in n for n in g.hosts["hv3"].notes)
    # 99 (auth) is every host's; hv2 does not publish it: inactive (no IPsec there);
    # hv3 is behind the registry: it may not have applied it yet
    assert g.hosts["hv2"].vnets["0099"].state == "inactive"
    assert g.hosts["hv3"].vnets["0099"].state == "pending"
    assert "0098" not in g.hosts["hv1"].vnets  # scoped to hv2 and hv3
    e = edges(g)
    assert e[("hv1", "hv2", "none")].state == "up"
    assert e[("hv1", "hv2", "auth")].state == "inactive"
    assert e[("hv1", "hv3", "none")].state == "down"
    assert e[("hv2", "hv3", "none")].vnets == ["0097", "0098"]
    # without discovery the registry alone cannot tell who is up: unknown, not down
    f = with_registry(facts())
    f["agent"]["group"] = None
    f["agent"]["peers"] = []
    g = model.build(f)
    assert g.hosts["hv3"].state == "unknown" and g.hosts["hv2"].state == "unknown"
    e = edges(g)
    assert e[("hv2", "hv3", "none")].state == "unknown"
    assert e[("hv2", "hv3", "auth")].state == "inactive"  # not active on either


def test_no_agent_no_guessing():
    f = facts()
    f["agent"] = None
    g = model.build(f)
    assert g.hosts["ip:10.0.0.3"].state == "unknown"
    assert g.hosts["hv2"].state == "unknown"  # known only from its tunnel port
    assert any("agent not running" in n for n in g.hosts["hv1"].notes)


def test_json_shape():
    data = model.build(facts()).to_dict()
    assert {h["key"] for h in data["hosts"]} == {"hv1", "hv2", "ip:10.0.0.3"}
    assert {"a", "b", "level", "state", "vnets", "ports", "mtu", "note"} <= \
        set(data["tunnels"][0])


def test_dot_has_ids_styles_and_escapes_what_peers_say():
    f = facts()
    f["agent"]["peers"][0]["origin"] = 'evil" -- x [label=<<B>pwn</B>>] "'
    f["tunnels"][0]["origin"] = f["agent"]["peers"][0]["origin"]
    text = dot.render(model.build(f))
    assert text.startswith("graph ") and text.rstrip().endswith("}")
    assert 'id="host-hv1"' in text and 'id="tunnel-hv1-ip_10.0.0.3-none"' in text
    # in a label (markup) it is text; in an id (a DOT string) its quotes are escaped
    assert "<B>evil&quot; -- x [label=&lt;&lt;B&gt;pwn&lt;/B&gt;&gt;] &quot;</B>" in text
    # a DOT string never closes early: every quote inside one is escaped
    for line in text.splitlines():
        assert len(re.findall(r'(?<!\\)"', line)) % 2 == 0, line
    assert 'color="#d62728"' in text  # a down edge


def test_edge_label_lists_a_few_vnets():
    t = model.Tunnel("a", "b", "none", "up", [f"{i:04x}" for i in range(7)], mtu=1450)
    assert t.label == "none · up · mtu 1450\nvnet 0000, 0001, 0002, 0003 +3"


def test_html_page_is_self_contained_and_runs_no_script():
    svg = ('<?xml version="1.0"?>\n<!DOCTYPE svg>\n<!-- Generated by graphviz -->\n'
           '<svg width="10pt"><g class="node"><title>hv1</title></g></svg>\n')
    page = html.page(svg, "ovsvnet map from <hv1>", "2026-01-01 00:00:00 UTC", refresh=5)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "default-src 'none'" in page and "<script" not in page.lower()
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page and "Generated by" not in page
    assert "&lt;hv1&gt;" in page and "<title>hv1</title>" in page
    assert "http://" not in page.replace('http-equiv', '') and "https://" not in page
    assert 'http-equiv="refresh"' not in html.page(svg, "t", "now")
    with pytest.raises(ValueError):
        html.inline_svg("<html></html>")


@pytest.mark.parametrize("name", ["ovsvnet.metrics", "ovsvnet.map.model", "ovsvnet.map.dot",
                                  "ovsvnet.map.html"])
def test_the_pure_parts_do_no_io(name):
    """As tests/unit/test_layout.py checks its PURE modules (these belong in that set)."""
    from .test_layout import FORBIDDEN, MODULES, PURE, imports
    for imported in imports(MODULES[name]):
        top = imported.split(".")[0]
        if top == "ovsvnet":
            assert imported in PURE or imported in ("ovsvnet.map.model",), (name, imported)
        else:
            assert top not in FORBIDDEN, (name, imported)
