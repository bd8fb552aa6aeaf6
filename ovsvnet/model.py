"""Names and markers ovsvnet puts into OVSDB (tunnel names and MTUs: :mod:`ovsvnet.ipsec`).

Everything ovsvnet creates is findable with ``ovs-vsctl`` through these keys, and ovsvnet
only ever modifies or deletes rows that carry ``ovsvnet-role``: a bridge or port someone else
made is never touched.

==================================  ===========================================================
Row / key                           Meaning
==================================  ===========================================================
Bridge ``ovsvnet-role=vnet``        a vnet's bridge (domains plug in here)
Bridge ``ovsvnet-id``               the vnet id, canonical 8 x %04x form
Bridge ``ovsvnet-config``           the definition as one SXP expression (source of truth)
Bridge ``ovsvnet-role=transport``   the host's transport bridge ``br-vnet``
Port   ``ovsvnet-role=patch``       a patch port joining a vnet bridge to br-vnet
Port   ``ovsvnet-role=vnetif``      the vnet's host interface (Xen's vnif)
Port   ``ovsvnet-role=tunnel``      a tunnel port to one peer (``ovsvnet-peer=<address>``)
Port   ``ovsvnet-vnet``             the vnet id a patch/vnetif port belongs to
Port   ``ovsvnet-origin``           a discovered peer's host id (tunnel ports)
Port   ``ovsvnet-vnets``            the vnet keys (hex) a discovered peer carries
Port   ``ovsvnet-level``            a tunnel's security level (none|auth|conf)
Bridge ``ovsvnet-source=registry``  a vnet the agent made from the cluster registry
Port   ``ovsvnet-source=registry``  a tunnel to a peer learned from the cluster registry
Open_vSwitch ``ovsvnet-peer-<A>``   a static peer at address A; value = its tunnel UDP port
Open_vSwitch ``ovsvnet-local-ip``   tunnel endpoint, when not detected from the routes
Open_vSwitch ``ovsvnet-datapath``   datapath type for new bridges (netdev|system)
Open_vSwitch ``ovsvnet-underlay-mtu`` underlay MTU, when not detected from the routes
==================================  ===========================================================
"""

from __future__ import annotations

TRANSPORT_BRIDGE = "br-vnet"

ROLE = "ovsvnet-role"
VNET_ID = "ovsvnet-id"
CONFIG = "ovsvnet-config"
PORT_VNET = "ovsvnet-vnet"
PORT_PEER = "ovsvnet-peer"
PORT_ORIGIN = "ovsvnet-origin"
PORT_VNETS = "ovsvnet-vnets"
PORT_LEVEL = "ovsvnet-level"
SOURCE = "ovsvnet-source"
PEER_PREFIX = "ovsvnet-peer-"
LOCAL_IP = "ovsvnet-local-ip"
DATAPATH = "ovsvnet-datapath"
UNDERLAY_MTU = "ovsvnet-underlay-mtu"

ROLE_VNET = "vnet"
ROLE_TRANSPORT = "transport"
ROLE_PATCH = "patch"
ROLE_VNETIF = "vnetif"
ROLE_TUNNEL = "tunnel"

VXLAN_PORT = 4789
DEFAULT_UNDERLAY_MTU = 1500


def vnet_patch_name(key: int) -> str:
    """The patch port on the vnet bridge side (``vt-`` = "vnet to transport")."""
    return f"vt-{key:06x}"


def transport_patch_name(key: int) -> str:
    """The patch port on the transport side (``vp-`` = "vnet patch")."""
    return f"vp-{key:06x}"
