"""Owners of vnet ports, from the external_ids each attacher really writes."""

from __future__ import annotations

from ovsvnet.owners import OVS_CNI_OWNER, Owner, guest_mac, owner

# libvirt 9.0 (virNetDevOpenvswitchAddPort): --may-exist add-port BR vnetN -- set Interface
# vnetN external-ids:attached-mac=... iface-id=... vm-id=... iface-status=active
LIBVIRT = {"attached-mac": "52:54:00:97:00:01", "iface-id": "0d9c55f4-4b9e-4c2d-a1a8-0f5e1f3c6b2a",
           "vm-id": "c7a5fdbd-cdaf-9455-926a-d65c16db1809", "iface-status": "active"}
# Xen's vif-openvswitch (and scripts/vif-ovsvnet)
XEN = {"xen-vm-name": "dom1", "xen-vm-uuid": "5b4c1a7e-0000-4000-8000-000000000097",
       "attached-mac": "00:16:3E:00:00:97"}
# ovs-docker add-port BR eth1 CONTAINER
DOCKER = {"container_id": "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70",
          "container_iface": "eth1"}
# ovs-cni (pkg/ovsdb/ovsdb.go createPortOperation): on the Port row
CNI_PORT = {"contPodUid": "b6c4f0e2-1111-4222-8333-444455556666",
            "contNetns": "/var/run/netns/cni-1234", "contIface": "net1",
            "owner": OVS_CNI_OWNER}


def test_libvirt_port():
    o = owner(LIBVIRT, {})
    assert o == Owner("libvirt", None, LIBVIRT["vm-id"], LIBVIRT["iface-id"],
                      "52:54:00:97:00:01")
    assert o.label == f"libvirt domain {LIBVIRT['vm-id']}"


def test_xen_port_guest_mac_normalised():
    o = owner(XEN, {})
    assert (o.kind, o.name, o.uuid, o.guest_mac) == ("xen", "dom1", XEN["xen-vm-uuid"],
                                                     "00:16:3e:00:00:97")
    assert o.label == f"xen dom1 ({XEN['xen-vm-uuid']})"


def test_docker_and_ovs_cni_ports():
    d = owner(DOCKER, {})
    assert (d.kind, d.uuid, d.iface, d.guest_mac) == ("docker", DOCKER["container_id"], "eth1",
                                                      None)
    assert d.label == "docker 3f2a1b4c5d6e eth1"
    c = owner({}, CNI_PORT)
    assert (c.kind, c.uuid, c.iface) == ("ovs-cni", CNI_PORT["contPodUid"], "net1")
    assert c.label == f"pod {CNI_PORT['contPodUid']} net1"
    # ovs-cni with OVN: the Interface carries iface-id; the Port still says ovs-cni
    assert owner({"iface-id": "ns_pod"}, CNI_PORT).kind == "ovs-cni"


def test_lab_guest_lxd_and_unknown_ports():
    assert owner({"ovsvnet-guest": "g1"}, {}).label == "lab guest g1"
    assert owner({"iface-id": "lsp1"}, {}).label == "iface-id lsp1"
    lxd = owner({}, {})   # LXD/Incus nictype=bridged: a plain add-port, no ids
    assert lxd == Owner() and lxd.label is None
    assert lxd.to_dict() == {"kind": None, "name": None, "uuid": None, "iface": None,
                             "guest_mac": None, "label": None}


def test_guest_mac_rejects_what_is_not_a_mac():
    assert guest_mac('"52:54:00:AA:BB:CC"') == "52:54:00:aa:bb:cc"
    assert guest_mac("52-54-00-aa-bb-cc") == "52:54:00:aa:bb:cc"
    for bad in (None, "", "52:54:00:aa:bb", "zz:54:00:aa:bb:cc", "52:54:00:aa:bb:cc:dd"):
        assert guest_mac(bad) is None
    # a malformed attached-mac leaves the owner known, the MAC unknown
    assert owner({**LIBVIRT, "attached-mac": "nonsense"}, {}).guest_mac is None
