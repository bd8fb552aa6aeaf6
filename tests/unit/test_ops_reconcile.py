"""Staging rows from a layout, against a real ovsdb-server (no switch): what ovsvnet owns is
made exactly, what it does not own is never touched, and a clash refuses the whole change."""

from __future__ import annotations

import pytest

from ovsvnet import model as M
from ovsvnet.config import VnetConfig
from ovsvnet.desired import Security, TunnelSpec, Underlay, layout
from ovsvnet.errors import ConflictError
from ovsvnet.ops.reconcile import stage
from ovsvnet.ovsdb import Ovsdb, quiet_python_ovs

from .conftest import VSWITCH_SCHEMA

quiet_python_ovs()
UND = Underlay("192.0.2.1", 1500, "configured")
NO_IPSEC = Security("netdev")
B97, B98 = VnetConfig.build("97").bridge, VnetConfig.build("98").bridge  # default names


@pytest.fixture
def db(ovsdb_server):
    d = Ovsdb(ovsdb_server(VSWITCH_SCHEMA), timeout=5)
    d.transact(lambda txn: setattr(d.insert(txn, "Open_vSwitch"), "bridges", []))
    yield d
    d.close()


def apply(db: Ovsdb, vnets, peers=()):
    lay = layout(vnets, list(peers), NO_IPSEC, UND, datapath_type="netdev",
                 local_ip_setting=None)
    db.transact_vswitchd(lambda txn: stage(txn, db, lay), wait_vswitchd=False)
    db.run()
    return lay


def ports(db: Ovsdb, bridge: str) -> dict[str, dict[str, str]]:
    return {p.name: dict(p.external_ids) for p in db.bridge(bridge).ports}


def test_a_vnet_gets_its_bridge_patch_pair_and_tunnels(db):
    v97 = VnetConfig.build("97", vnetif="vnif97")
    lay = apply(db, [v97], [TunnelSpec("192.0.2.2")])
    br = db.bridge(B97)
    assert br.external_ids[M.ROLE] == M.ROLE_VNET and br.fail_mode == ["standalone"]
    assert db.bridge(M.TRANSPORT_BRIDGE).fail_mode == ["secure"]
    assert br.external_ids[M.CONFIG] == v97.to_sxp() and br.datapath_type == "netdev"
    assert ports(db, B97)["vt-000097"][M.ROLE] == M.ROLE_PATCH
    assert ports(db, B97)["vnif97"][M.ROLE] == M.ROLE_VNETIF
    transport = ports(db, M.TRANSPORT_BRIDGE)
    assert transport["vp-000097"][M.PORT_VNET] == v97.id.canonical
    assert transport["vx-c0000202"][M.PORT_PEER] == "192.0.2.2"
    assert db.interface("vx-c0000202").options["key"] == "flow"
    assert db.interface("vnif97").mtu_request == [1450]
    assert {B97, "vnif97", "vt-000097", "vp-000097", "vx-c0000202",
            M.TRANSPORT_BRIDGE} <= lay.created_interfaces


def test_removing_a_vnet_removes_only_what_ovsvnet_made(db):
    apply(db, [VnetConfig.build("97"), VnetConfig.build("98")], [TunnelSpec("192.0.2.2")])

    def plug(txn):  # a domain on vnet 98, and someone else's bridge
        iface = db.insert(txn, "Interface")
        iface.name = "vif3.0"
        port = db.insert(txn, "Port")
        port.name, port.interfaces = "vif3.0", [iface]
        db.bridge(B98).addvalue("ports", port)
        br = db.insert(txn, "Bridge")
        br.name = "br-admin"
        db.ovs.addvalue("bridges", br)
    db.transact(plug)
    apply(db, [VnetConfig.build("98")], [])
    db.run()
    assert db.bridge(B97) is None and db.bridge("br-admin") is not None
    assert "vif3.0" in ports(db, B98)
    assert set(ports(db, M.TRANSPORT_BRIDGE)) == {M.TRANSPORT_BRIDGE, "vp-000098"}
    apply(db, [], [])
    assert db.bridge(M.TRANSPORT_BRIDGE) is None and db.bridge(B98) is None


def test_a_bridge_someone_else_made_is_a_conflict_and_nothing_changes(db):
    def foreign(txn):
        br = db.insert(txn, "Bridge")
        br.name = B97
        db.ovs.addvalue("bridges", br)
    db.transact(foreign)
    with pytest.raises(ConflictError, match=f"'{B97}' already exists in OVSDB and ovsvnet"):
        apply(db, [VnetConfig.build("98"), VnetConfig.build("97")])
    db.run()
    assert db.bridge(B98) is None and db.bridge(M.TRANSPORT_BRIDGE) is None


def test_ipsec_is_gated_on_the_transport_bridges_real_datapath(db):
    """M3: a setting changed to "system" after br-vnet was made on netdev must not make
    secure vnets look active: their tunnels would never pass through the kernel's XFRM."""
    from ovsvnet.ops import state
    apply(db, [VnetConfig.build("97")], [TunnelSpec("192.0.2.2")])
    db.transact(lambda txn: db.ovs.setkey("external_ids", M.DATAPATH, "system"))
    db.run()
    assert state.datapath_type(db) == "system"  # what new bridges would get
    assert state.effective_datapath(db) == "netdev"  # what the tunnels really use


def test_a_scoped_stage_touches_only_its_vnets(db):
    """What create, delete and a hook's repair stage: their vnets and the tunnels, while
    another vnet's missing patch port stays missing and its bridge stays."""
    v97, v98, v99 = (VnetConfig.build(k) for k in ("97", "98", "99"))
    apply(db, [v97, v98], [TunnelSpec("192.0.2.2")])
    db.transact(lambda txn: [_drop(db, B98, "vt-000098")])
    db.run()
    lay = layout([v97, v98, v99], [TunnelSpec("192.0.2.2")], NO_IPSEC, UND,
                 datapath_type="netdev", local_ip_setting=None)
    db.transact_vswitchd(lambda txn: stage(txn, db, lay, only=frozenset({v99.bridge})),
                         wait_vswitchd=False)
    db.run()
    assert "vt-000099" in ports(db, v99.bridge)
    assert "vt-000098" not in ports(db, B98)  # not in scope: not repaired
    assert {"vp-000097", "vp-000098", "vp-000099"} <= set(ports(db, M.TRANSPORT_BRIDGE))
    # a scoped delete removes its own bridge and patch, nothing else
    lay = layout([v98, v99], [TunnelSpec("192.0.2.2")], NO_IPSEC, UND,
                 datapath_type="netdev", local_ip_setting=None)
    db.transact_vswitchd(lambda txn: stage(txn, db, lay, only=frozenset({B97})),
                         wait_vswitchd=False)
    db.run()
    assert db.bridge(B97) is None and db.bridge(B98) is not None
    assert "vp-000097" not in ports(db, M.TRANSPORT_BRIDGE)
    assert "vp-000098" in ports(db, M.TRANSPORT_BRIDGE)


def _drop(db: Ovsdb, bridge: str, port: str) -> None:
    br = db.bridge(bridge)
    for p in br.ports:
        if p.name == port:
            br.delvalue("ports", p)
            for iface in p.interfaces:
                iface.delete()
            p.delete()
