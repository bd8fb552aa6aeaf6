"""The pure decision of what a host holds: tunnels per (peer, level), MTUs, what is local."""

from __future__ import annotations

from ovsvnet import ipsec
from ovsvnet.config import VnetConfig
from ovsvnet.desired import Security, StaticPeer, TunnelSpec, Underlay, layout, peer_specs

NONE97 = VnetConfig.build("97")
AUTH98 = VnetConfig.build("98", security="auth")
CONF99 = VnetConfig.build("99", security="conf")
UND = Underlay("192.0.2.1", 1500, "route")
NO_IPSEC = Security("the netdev datapath cannot encrypt tunnels")
IPSEC = Security(None, ipsec.PskCredentials(b"s" * 32), ipsec.Algorithms())


def lay(peers, sec=NO_IPSEC, vnets=(NONE97, AUTH98, CONF99)):
    return layout(vnets, peers, sec, UND, datapath_type="netdev", local_ip_setting=None)


def test_static_peers_carry_every_vnet_until_they_announce():
    specs = peer_specs([StaticPeer("192.0.2.2"), StaticPeer("192.0.2.3", 4790)],
                       [TunnelSpec("192.0.2.3", 4789, frozenset({0x97}), "h3")])
    assert [(s.address, s.vnets, s.origin) for s in specs] == [
        ("192.0.2.2", None, None), ("192.0.2.3", frozenset({0x97}), "h3")]


def test_without_ipsec_secure_vnets_stay_local_and_get_no_tunnel():
    out = lay([TunnelSpec("192.0.2.2")])
    assert out.active_keys == {0x97}
    assert [(t.address, t.level) for t in out.tunnels] == [("192.0.2.2", "none")]
    assert out.ipsec_other_config is None and out.local_ip is None


def test_one_tunnel_per_peer_and_level_of_the_vnets_it_carries():
    out = lay([TunnelSpec("192.0.2.2"), TunnelSpec("192.0.2.3", vnets=frozenset({0x98})),
               TunnelSpec("192.0.2.4", vnets=frozenset({0x1234}))], sec=IPSEC)
    assert out.active_keys == {0x97, 0x98, 0x99}
    assert sorted((t.address, t.level) for t in out.tunnels) == [
        ("192.0.2.2", "auth"), ("192.0.2.2", "conf"), ("192.0.2.2", "none"),
        ("192.0.2.3", "auth")]
    assert out.local_ip == "192.0.2.1" and out.ipsec_other_config == {"ipsec_skb_mark": "1/1"}


def test_mtu_follows_the_level_and_the_underlay():
    out = lay([], sec=IPSEC)
    assert out.mtus == {0x97: 1450, 0x98: 1421, 0x99: 1421}
    jumbo = layout([NONE97], [], IPSEC, Underlay("2001:db8::1", 9000, "configured"),
                   datapath_type="system", local_ip_setting="2001:db8::1")
    assert jumbo.mtus == {0x97: 9000 - 70} and jumbo.local_ip == "2001:db8::1"
