"""Who plugged a port into a vnet, read from the ids its attacher wrote (pure).

Every tool that adds a port to an OVS bridge leaves its own keys in ``external_ids``; none
writes ovsvnet's. A port's own MAC is the host end's (a libvirt tap's ``fe:54:..``, Xen's
``fe:ff:ff:ff:ff:ff``, a veth's random one), never the guest's: the guest's MAC is known only
where the attacher recorded it (``attached-mac``). The keys, by attacher:

============  =========  ===========================================================
attacher      table      keys
============  =========  ===========================================================
Xen           Interface  ``xen-vm-name``, ``xen-vm-uuid``, ``attached-mac``
              (``vif-openvswitch`` and ``scripts/vif-ovsvnet``)
libvirt       Interface  ``vm-id`` (domain uuid), ``iface-id``, ``attached-mac``,
                         ``iface-status``
ovs-docker    Interface  ``container_id``, ``container_iface``
ovs-cni       Port       ``contPodUid``, ``contNetns``, ``contIface``,
                         ``owner=ovs-cni.network.kubevirt.io``; Interface ``iface-id`` for OVN
ovsvnet lab   Interface  ``ovsvnet-guest``
LXD/Incus     -          nothing for ``nictype=bridged`` (a ``veth...`` port, plain add-port)
============  =========  ===========================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: ovs-cni's Port ``external_ids:owner`` (pkg/ovsdb/ovsdb.go, ``ovsPortOwner``).
OVS_CNI_OWNER = "ovs-cni.network.kubevirt.io"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class Owner:
    """What a port's ids say about whoever plugged it in; ``kind`` None = nobody said."""

    kind: str | None = None
    name: str | None = None      # VM or guest name, when recorded
    uuid: str | None = None      # domain uuid, container id or pod uid
    iface: str | None = None     # the attacher's id of this interface
    guest_mac: str | None = None

    @property
    def label(self) -> str | None:
        """One short human line: ``xen vm1 (uuid)``, ``libvirt domain UUID``, ..."""
        if self.kind is None:
            return None
        if self.kind == "xen":
            return _join("xen", self.name, f"({self.uuid})" if self.uuid else None)
        if self.kind == "libvirt":
            return _join("libvirt domain", self.uuid)
        if self.kind == "docker":
            return _join("docker", (self.uuid or "")[:12] or None, self.iface)
        if self.kind == "ovs-cni":
            return _join("pod", self.uuid, self.iface)
        if self.kind == "lab":
            return _join("lab guest", self.name)
        return _join("iface-id", self.iface)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def owner(iface_ids: Mapping[str, str], port_ids: Mapping[str, str]) -> Owner:
    """The owner a port's Interface and Port ``external_ids`` name (first attacher that
    matches, in the table's order)."""
    i, p = iface_ids, port_ids
    mac = guest_mac(i.get("attached-mac"))
    if "xen-vm-name" in i or "xen-vm-uuid" in i:
        return Owner("xen", _s(i.get("xen-vm-name")), _s(i.get("xen-vm-uuid")), None, mac)
    if "vm-id" in i:
        return Owner("libvirt", None, _s(i["vm-id"]), _s(i.get("iface-id")), mac)
    if "container_id" in i:
        return Owner("docker", None, _s(i["container_id"]), _s(i.get("container_iface")), mac)
    if p.get("owner") == OVS_CNI_OWNER or "contPodUid" in p:
        return Owner("ovs-cni", None, _s(p.get("contPodUid")), _s(p.get("contIface")), mac)
    if "ovsvnet-guest" in i:
        return Owner("lab", _s(i["ovsvnet-guest"]), None, None, mac)
    if "iface-id" in i:
        return Owner("iface-id", None, None, _s(i["iface-id"]), mac)
    return Owner(guest_mac=mac)


def guest_mac(text: str | None) -> str | None:
    """``attached-mac`` normalised (lower case, colons); None when absent or not a MAC."""
    if not text:
        return None
    mac = text.strip().strip('"').lower().replace("-", ":")
    return mac if _MAC.match(mac) else None


def _s(value: str | None) -> str | None:
    return value or None


def _join(*parts: str | None) -> str:
    return " ".join(p for p in parts if p)
