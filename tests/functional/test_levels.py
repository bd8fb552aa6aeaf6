"""Security levels are enforced by the flows: crafted frames on the wrong tunnel type.

On the userspace datapath a secure vnet is never active (no IPsec), so no real secure
traffic can flow here. What can be checked on real OVS is the pipeline itself: the
transport flows for a none, an auth and a conf vnet are installed on a lab bridge that has
one VXLAN, one Geneve and one GRE port to a peer, and frames are traced through
ovs-vswitchd's own classifier (``ofproto/trace``) as they would arrive on each tunnel.
"""

from __future__ import annotations

import json
import re

import pytest

from ovsvnet import flows as F
from ovsvnet import ipsec
from ovsvnet.lab import Lab
from ovsvnet.system import ofctl

pytestmark = pytest.mark.root

PEER = "10.77.1.200"
KEYS = {"none": 0x97, "auth": 0x98, "conf": 0x99}


@pytest.fixture(scope="module")
def bridge():
    with Lab() as lab:
        lab.add_segment("s1")
        h = lab.add_host("h1", "s1")
        args = ["add-br", "br-lv", "--", "set", "Bridge", "br-lv", "datapath_type=netdev",
                "fail_mode=secure", "protocols=OpenFlow10,OpenFlow13,OpenFlow15"]
        for level in ipsec.LEVELS:
            name = ipsec.port_name(level, PEER)
            args += ["--", "add-port", "br-lv", name, "--", "set", "Interface", name,
                     f"type={ipsec.tunnel_type(level)}", f"options:remote_ip={PEER}",
                     "options:key=flow"]
            args += ["--", "add-port", "br-lv", f"in-{level}", "--", "set", "Interface",
                     f"in-{level}", "type=internal"]
        h.vsctl(*args)
        ofport = {}
        for level in ipsec.LEVELS:
            ofport[("tunnel", level)] = int(h.vsctl("get", "Interface",
                                                    ipsec.port_name(level, PEER), "ofport"))
            ofport[("vnet", level)] = int(h.vsctl("get", "Interface", f"in-{level}", "ofport"))
        vnets = [F.VnetPort(KEYS[lvl], ofport[("vnet", lvl)], ipsec.LEVEL_CODES[lvl])
                 for lvl in ipsec.LEVELS]
        tunnels = [F.TunnelPort(PEER, ofport[("tunnel", lvl)], None, ipsec.LEVEL_CODES[lvl])
                   for lvl in ipsec.LEVELS]
        ofctl.apply(str(h.dir), "br-lv", F.transport_flows(vnets, tunnels))
        yield h, ofport


def trace(h, flow: str) -> str:
    return h.appctl("ofproto/trace", "br-lv", flow)


@pytest.mark.parametrize("vnet_level", ipsec.LEVELS)
@pytest.mark.parametrize("tunnel_level", ipsec.LEVELS)
def test_a_vnet_accepts_frames_only_from_its_own_tunnel_type(bridge, vnet_level, tunnel_level):
    h, ofport = bridge
    flow = (f"in_port={ofport[('tunnel', tunnel_level)]},tun_src={PEER},tun_dst=10.77.1.1,"
            f"tun_id={KEYS[vnet_level]:#x},dl_src=02:00:00:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff,"
            "dl_type=0x0800")
    out = trace(h, flow)
    delivered = re.search(rf"output:{ofport[('vnet', vnet_level)]}\b", out) is not None
    assert delivered == (vnet_level == tunnel_level), out


@pytest.mark.parametrize("level", ipsec.LEVELS)
def test_a_vnet_floods_only_through_its_own_tunnel_type(bridge, level):
    h, ofport = bridge
    out = trace(h, f"in_port={ofport[('vnet', level)]},dl_src=02:00:00:00:00:01,"
                   "dl_dst=ff:ff:ff:ff:ff:ff,dl_type=0x0800")
    outputs = {int(p) for p in re.findall(r"\boutput:(\d+)", out)}
    tunnel_ports = {ofport[("tunnel", lvl)] for lvl in ipsec.LEVELS}
    assert outputs & tunnel_ports == {ofport[("tunnel", level)]}, out


def test_show_explains_why_a_secure_vnet_is_inactive():
    with Lab() as lab:
        lab.add_segment("s1")
        h = lab.add_host("h1", "s1")
        h.ovsvnet("create", "--id", "98", "--security", "conf")
        data = json.loads(h.ovsvnet("show", "98", "--json").stdout)
        assert data["state"] == "inactive"
        assert "userspace" in data["reason"] or "netdev" in data["reason"], data["reason"]
        host = json.loads(h.ovsvnet("status", "--json").stdout)["host"]
        assert host["vnet_mtu_by_level"]["none"] == 1450
        assert host["vnet_mtu_by_level"]["conf"] < host["vnet_mtu_by_level"]["none"]


def test_no_frame_of_an_inactive_secure_vnet_crosses_the_underlay():
    """auth vnet 98 and none vnet 97 on two hosts that peer; guests on both send broadcasts
    and unicasts: the underlay carries vnet 97's tunnel traffic and nothing of vnet 98."""
    from ovsvnet.lab import capture

    with Lab() as lab:
        lab.add_segment("s1")
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h, other in ((h1, h2), (h2, h1)):
            h.ovsvnet("create", "--id", "97")
            h.ovsvnet("create", "--id", "98", "--security", "auth")
            h.ovsvnet("peer-add", other.address)
        s1 = lab.add_guest("x1", "h1", "vnet-0098", ip="192.168.98.1/24", mtu=1421)
        s2 = lab.add_guest("x2", "h2", "vnet-0098", ip="192.168.98.2/24", mtu=1421)
        n1 = lab.add_guest("n1", "h1", "vnet-0097", ip="192.168.97.1/24", mtu=1450)
        n2 = lab.add_guest("n2", "h2", "vnet-0097", ip="192.168.97.2/24", mtu=1450)
        seg = lab.segment("s1")
        # everything tunnelled: VXLAN, Geneve, GRE, ESP
        wire = "udp port 4789 or udp port 6081 or ip proto 47 or ip proto 50"
        with capture(seg, seg.bridge, wire, timeout=20, settle=2, extra=("-e", "-v")) as cap:
            assert n1.ping(n2.addr, count=3, timeout=10)  # control: vnet 97 does cross
            assert not s1.ping(s2.addr, count=3, timeout=4)
            s1.run("ping", "-n", "-b", "-c", "3", "-i", "0.2", "-W", "1",
                   "192.168.98.255", check=False)
        assert any("vni 151" in line for line in cap.lines), cap.lines  # vnet 97 = 0x97
        leaked = [line for line in cap.lines if "192.168.98." in line or "vni 152" in line
                  or "GRE" in line or "Geneve" in line or "ESP" in line]
        assert leaked == [], leaked
