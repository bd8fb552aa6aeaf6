"""The desired-flow function: pipeline shape, split horizon, flood lists, cookies, growth."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ovsvnet import flows as F
from ovsvnet import ipsec
from ovsvnet.system.ofctl import _delete_spec, _with_table, is_static_ovsvnet


def _outputs(flow: F.Flow) -> set[int]:
    return {int(p) for p in re.findall(r"output:(\d+)", flow.actions)}


def test_multicast_sources_never_leave_the_host():
    flows = F.transport_flows([F.VnetPort(0x97, 1)], [F.TunnelPort("10.0.0.2", 10)])
    from_vnet = sorted((f for f in flows if f.table == F.T_FROM_VNET),
                       key=lambda f: -f.priority)
    assert from_vnet[0].match == f"dl_src={F.MULTICAST_MAC}" and from_vnet[0].actions == "drop"


def test_frames_from_a_tunnel_only_reach_the_vnet_patch():
    vnets = [F.VnetPort(0x97, 1), F.VnetPort(0x98, 2)]
    tunnels = [F.TunnelPort("10.0.0.2", 10), F.TunnelPort("10.0.0.3", 11)]
    flows = F.transport_flows(vnets, tunnels)
    tunnel_ports = {10, 11}
    from_tunnel = [f for f in flows if f.table in (F.T_FROM_TUNNEL, F.T_INTO_VNET)]
    assert from_tunnel, "the from-tunnel tables must exist"
    for f in from_tunnel:
        assert not (_outputs(f) & tunnel_ports), f"split horizon broken by {f.render()}"
        assert "resubmit" not in f.actions
        assert "goto_table" not in f.actions or f.actions == f"goto_table:{F.T_INTO_VNET}"
    # each key is delivered to its own patch port (announcements too)
    delivery = {f.match: _outputs(f) for f in from_tunnel
                if f.table == F.T_INTO_VNET and f.priority in (100, 150)}
    assert delivery == {
        "tun_id=0x97,reg0=0": {1}, "tun_id=0x98,reg0=0": {2},
        "tun_id=0x97,reg0=0,dl_type=0x8035": {1}, "tun_id=0x98,reg0=0,dl_type=0x8035": {2},
        "tun_id=0x97,reg0=0,arp,dl_dst=ff:ff:ff:ff:ff:ff": {1},
        "tun_id=0x98,reg0=0,arp,dl_dst=ff:ff:ff:ff:ff:ff": {2}}


def test_each_vnet_accepts_and_floods_only_through_tunnels_of_its_level():
    none, auth, conf = 0, 1, 2
    vnets = [F.VnetPort(0x97, 1, none), F.VnetPort(0x98, 2, auth), F.VnetPort(0x99, 3, conf)]
    tunnels = [F.TunnelPort("10.0.0.2", 10, None, none), F.TunnelPort("10.0.0.2", 11, None, auth),
               F.TunnelPort("10.0.0.2", 12, None, conf)]
    flows = F.transport_flows(vnets, tunnels)
    marks = {f.match: f.actions for f in flows if f.table == F.T_CLASSIFY and "tun_src" in f.match}
    assert marks == {
        "in_port=10,tun_src=10.0.0.2": f"set_field:0->reg0,goto_table:{F.T_FROM_TUNNEL}",
        "in_port=11,tun_src=10.0.0.2": f"set_field:1->reg0,goto_table:{F.T_FROM_TUNNEL}",
        "in_port=12,tun_src=10.0.0.2": f"set_field:2->reg0,goto_table:{F.T_FROM_TUNNEL}"}
    admits = {f.match for f in flows if f.table == F.T_FROM_TUNNEL and f.priority == 100}
    assert admits == {"in_port=10,tun_id=0x97", "in_port=11,tun_id=0x98",
                      "in_port=12,tun_id=0x99"}
    accepts = {f.match for f in flows if f.table == F.T_INTO_VNET and f.priority == 100}
    assert accepts == {"tun_id=0x97,reg0=0", "tun_id=0x98,reg0=1", "tun_id=0x99,reg0=2"}
    flood = {f.match: _outputs(f) for f in flows if f.table == F.T_FLOOD and f.priority == 100}
    assert flood == {"tun_id=0x97": {10}, "tun_id=0x98": {11}, "tun_id=0x99": {12}}


def test_announcements_learn_a_locked_entry_that_outranks_ordinary_learning():
    flows = F.transport_flows([F.VnetPort(0x97, 1)], [F.TunnelPort("10.0.0.2", 10)])
    ann = [f for f in flows if f.table == F.T_INTO_VNET and f.priority == 150]
    assert len(ann) == 2
    for f in ann:
        assert f.actions.count("learn(") == 2
        assert f"priority=110,hard_timeout={F.MOVE_LOCK}" in f.actions
        assert "priority=100,idle_timeout=" in f.actions


def test_flood_goes_only_to_peers_carrying_the_vnet():
    vnets = [F.VnetPort(0x97, 1), F.VnetPort(0x98, 2)]
    tunnels = [F.TunnelPort("10.0.0.2", 10, frozenset({0x97})),
               F.TunnelPort("10.0.0.3", 11, frozenset({0x97, 0x98})),
               F.TunnelPort("10.0.0.4", 12, frozenset())]
    flood = {f.match: _outputs(f) for f in F.transport_flows(vnets, tunnels)
             if f.table == F.T_FLOOD and f.priority == 100}
    assert flood == {"tun_id=0x97": {10, 11}, "tun_id=0x98": {11}}


def test_a_peer_enters_only_the_vnets_it_carries():
    """Isolation at tunnel entry: 10.0.0.2 carries 0x97 only, so a frame it sends with
    0x98's key matches no admission and hits table 10's drop."""
    vnets = [F.VnetPort(0x97, 1), F.VnetPort(0x98, 2)]
    tunnels = [F.TunnelPort("10.0.0.2", 10, frozenset({0x97})),
               F.TunnelPort("10.0.0.3", 11, None)]  # a static peer carries all
    admits = {f.match for f in F.transport_flows(vnets, tunnels)
              if f.table == F.T_FROM_TUNNEL and f.priority == 100}
    assert admits == {"in_port=10,tun_id=0x97", "in_port=11,tun_id=0x97",
                      "in_port=11,tun_id=0x98"}


def test_static_peers_carry_every_vnet():
    flows = F.transport_flows([F.VnetPort(5, 1)], [F.TunnelPort("10.0.0.2", 10)])
    assert any(f.table == F.T_FLOOD and _outputs(f) == {10} for f in flows)


def test_ingress_checks_port_and_outer_source():
    flows = F.transport_flows([], [F.TunnelPort("10.0.0.2", 10),
                                   F.TunnelPort("2001:db8::2", 11)])
    classify = [f.match for f in flows if f.table == F.T_CLASSIFY and f.priority == 100]
    assert "in_port=10,tun_src=10.0.0.2" in classify
    assert "in_port=11,tun_ipv6_src=2001:db8::2" in classify
    default = [f for f in flows if f.table == F.T_CLASSIFY and f.priority == 0]
    assert [f.actions for f in default] == ["drop"]


def test_local_frames_are_tagged_with_the_key():
    flows = F.transport_flows([F.VnetPort(0xABCDEF, 3)], [])
    tag = [f for f in flows if f.table == F.T_CLASSIFY and f.match == "in_port=3"]
    assert tag and tag[0].actions.startswith("set_field:0xabcdef->tun_id")


def test_learned_entries_are_per_vnet_and_outlive_arp_caches():
    action = F.learn_action(0x97)
    assert f"table={F.T_UNICAST}" in action
    assert f"cookie={F.cookie(F.KIND_LEARNED, 0x97):#x}" in action
    assert "NXM_NX_TUN_ID[]" in action and "output:NXM_OF_IN_PORT[]" in action
    assert F.LEARN_IDLE_TIMEOUT >= 60


def test_canary_exists_once():
    flows = F.transport_flows([], [])
    canaries = [f for f in flows if F.cookie_kind(f.cookie) == F.KIND_CANARY]
    assert len(canaries) == 1 and canaries[0].table == F.T_CANARY


@settings(max_examples=50, deadline=None)
@given(n_vnets=st.integers(0, 40), n_peers=st.integers(0, 40), data=st.data())
def test_flow_count_grows_as_vnets_plus_peers_plus_carried_pairs(n_vnets, n_peers, data):
    vnets = [F.VnetPort(k + 2, k + 1) for k in range(n_vnets)]
    carried = [frozenset(data.draw(st.sets(st.sampled_from([v.key for v in vnets])))
                         if vnets else set()) for _ in range(n_peers)]
    tunnels = [F.TunnelPort(f"10.0.{p // 250}.{p % 250 + 1}", 1000 + p, carried[p])
               for p in range(n_peers)]
    flows = F.transport_flows(vnets, tunnels)
    pairs = sum(len(c) for c in carried)
    assert len(flows) <= 10 + 5 * n_vnets + n_peers + pairs
    assert len({(f.table, f.priority, f.match) for f in flows}) == len(flows), "duplicate match"


def test_cookie_layout_and_description():
    c = F.cookie(F.KIND_VNET, 0x97)
    assert c == 0x6F76020000000097
    assert F.describe_cookie(c) == "vnet flow of vnet key 0x97"
    assert F.cookie_kind(0x1234) is None
    assert F.describe_cookie(0) == "not ovsvnet"


def test_render_always_names_the_table():
    for f in F.transport_flows([F.VnetPort(2, 1)], [F.TunnelPort("10.0.0.2", 2)]):
        assert re.match(r"cookie=0x[0-9a-f]{16},table=\d+,priority=\d+", f.render())


def test_delete_specs_name_their_table():
    # in OpenFlow 1.1+ a delete without a table hits every table
    assert _delete_spec("priority=0 cookie=0x6f76010000000000 actions=drop") == \
        "table=0 priority=0"
    assert _delete_spec("table=20 priority=0 cookie=0x1 actions=goto_table:30") == \
        "table=20 priority=0"
    assert _with_table("table=5 priority=1") == "table=5 priority=1"


def test_learned_flows_are_not_static():
    learned = f"cookie={F.cookie(F.KIND_LEARNED, 0x97):#x}, table=30, priority=100 actions=output:2"
    static = f"cookie={F.cookie(F.KIND_VNET, 0x97):#x}, table=10, priority=100,tun_id=0x97 " \
             f"actions={F.learn_action(0x97)},output:1"
    foreign = "cookie=0x0, priority=0 actions=NORMAL"
    assert not is_static_ovsvnet(learned)
    assert is_static_ovsvnet(static)
    assert not is_static_ovsvnet(foreign)


def test_tunnel_port_names_fit_linux_limit():
    assert ipsec.port_name("none", "10.0.0.2") == "vx-0a000002"
    assert len(ipsec.port_name("none", "2001:db8::1")) <= 15
    assert ipsec.vnet_mtu("none", 1500) == 1450 and ipsec.vnet_mtu("none", 1500, None, 6) == 1430
