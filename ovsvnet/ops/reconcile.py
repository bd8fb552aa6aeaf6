"""Stage the OVSDB changes that make a host's bridges and ports match its desired layout.

Called inside a transaction builder (see :meth:`ovsvnet.ovsdb.Ovsdb.transact_vswitchd`), so a
command's own change (a new definition, a removed peer) and every derived change (patch
ports, tunnel ports, MTU, the transport bridge) commit together or not at all.

Ownership rule: only rows carrying ``external_ids:ovsvnet-role`` are modified or deleted.
A bridge of the same name that is not ovsvnet's is a conflict, never adopted.
"""

from __future__ import annotations

from typing import Any

from ovsvnet import ipsec
from ovsvnet import model as M
from ovsvnet.desired import Layout
from ovsvnet.errors import ConflictError
from ovsvnet.ovsdb import Ovsdb

#: A port ovsvnet owns: (Interface type, options, external_ids, mtu_request or None).
PortSpec = tuple[str, dict[str, str], dict[str, str], int | None]


def _insert_port(txn: Any, db: Ovsdb, name: str, itype: str, options: dict[str, str],
                 external_ids: dict[str, str], mtu: int | None = None) -> Any:
    iface = db.insert(txn, "Interface")
    iface.name = name
    iface.type = itype
    iface.options = options
    iface.external_ids = external_ids
    if mtu is not None:
        iface.mtu_request = [mtu]
    port = db.insert(txn, "Port")
    port.name = name
    port.interfaces = [iface]
    port.external_ids = external_ids
    return port


def _delete_port(bridge: Any, port: Any) -> None:
    bridge.delvalue("ports", port)
    for iface in port.interfaces:
        iface.delete()
    port.delete()


def _delete_bridge(db: Ovsdb, bridge: Any) -> None:
    db.ovs.delvalue("bridges", bridge)
    for port in bridge.ports:
        for iface in port.interfaces:
            iface.delete()
        port.delete()
    bridge.delete()


def _ensure_bridge(txn: Any, db: Ovsdb, name: str, external_ids: dict[str, str],
                   datapath_type: str, layout: Layout, mtu: int | None) -> tuple[Any, bool]:
    """The bridge row (created if missing) and whether it was created now.

    A new bridge is given its whole port list by assignment (see :func:`_sync_ports`):
    python-ovs mutations on a row inserted in the same transaction are not reliable.

    The transport bridge is ``fail_mode=secure``: it separates the vnets, and with no flows
    it drops. A vnet bridge is ``standalone``: it holds one vnet's ports and nothing else, so
    plain MAC learning is all it needs, and for a standalone bridge without a controller
    ovs-vswitchd installs that flow (``NORMAL``) itself, also right after it restarts: a
    thousand vnet bridges need no programming and cannot be left without flows.
    """
    fail_mode = ["secure" if external_ids[M.ROLE] == M.ROLE_TRANSPORT else "standalone"]
    bridge = db.bridge(name)
    if bridge is not None:
        if bridge.external_ids.get(M.ROLE) != external_ids[M.ROLE]:
            raise ConflictError(
                f"bridge: '{name}' already exists in OVSDB and ovsvnet did not create it; "
                "choose another bridge name")
        merged = dict(bridge.external_ids)
        if any(merged.get(k) != v for k, v in external_ids.items()):
            merged.update(external_ids)
            bridge.external_ids = merged
        if bridge.fail_mode != fail_mode:
            bridge.fail_mode = fail_mode  # ovs-vswitchd flushes the bridge's flows
        return bridge, False
    local = _insert_port(txn, db, name, "internal", {}, {}, mtu)
    bridge = db.insert(txn, "Bridge")
    bridge.name = name
    bridge.ports = [local]
    bridge.datapath_type = datapath_type
    bridge.fail_mode = fail_mode
    bridge.protocols = ["OpenFlow10", "OpenFlow13", "OpenFlow14", "OpenFlow15"]
    bridge.external_ids = external_ids
    # No in-band control flows: they would let a vnet's frames reach the host (Neutron
    # turned it off on br-tun after a loop, RHBZ 2134772).
    bridge.other_config = {"disable-in-band": "true"}
    db.ovs.addvalue("bridges", bridge)
    layout.created_interfaces.add(name)
    return bridge, True


def _sync_ports(txn: Any, db: Ovsdb, bridge: Any, created: bool,
                wanted: dict[str, PortSpec],
                layout: Layout, keep: frozenset[str] = frozenset()) -> None:
    """Make the ovsvnet-owned ports of ``bridge`` exactly ``wanted`` (and ``keep`` as they are).

    ``wanted`` maps port name -> (type, options, external_ids, mtu_request). Ports without
    an ovsvnet role (domains, the bridge's own port) are left alone.
    """
    existing = {} if created else {p.name: p for p in bridge.ports}
    new_ports = []
    for name, port in existing.items():
        if M.ROLE in port.external_ids and name not in wanted and name not in keep:
            _delete_port(bridge, port)
    for name, (itype, options, ext, mtu) in wanted.items():
        port = existing.get(name)
        if port is None:
            if db.interface(name) is not None:
                raise ConflictError(
                    f"port: an interface named '{name}' already exists elsewhere in OVSDB")
            new_ports.append(_insert_port(txn, db, name, itype, options, ext, mtu))
            layout.created_interfaces.add(name)
            continue
        iface = port.interfaces[0]
        if iface.type != itype:
            iface.type = itype
        if dict(iface.options) != options:
            iface.options = options
        if mtu is not None and list(iface.mtu_request) != [mtu]:
            iface.mtu_request = [mtu]
        if dict(port.external_ids) != ext:
            port.external_ids = ext
    if created:
        bridge.ports = list(bridge.ports) + new_ports
    else:
        for port in new_ports:
            bridge.addvalue("ports", port)


def _set_mtu(bridge: Any, mtu: int | None) -> None:
    if mtu is None:
        return
    for port in bridge.ports:
        if port.name == bridge.name:
            for iface in port.interfaces:
                if list(iface.mtu_request) != [mtu]:
                    iface.mtu_request = [mtu]


def stage(txn: Any, db: Ovsdb, layout: Layout, only: frozenset[str] | None = None) -> None:
    """Stage every change that makes OVSDB hold ``layout`` (and nothing else of ovsvnet's).

    ``only`` (vnet bridge names) limits the change to those vnets and the tunnels: what a
    hook repairs before plugging a domain, leaving every other vnet as it is."""
    db.ovs.verify("bridges")
    wanted_bridges = {cfg.bridge for cfg in layout.vnets}
    in_scope = [cfg for cfg in layout.vnets if only is None or cfg.bridge in only]

    # Vnet bridges that are no longer defined go first, so a name can be reused at once.
    gone = db.rows("Bridge") if only is None else [
        br for br in map(db.bridge, sorted(only)) if br is not None]
    for br in gone:
        if br.external_ids.get(M.ROLE) == M.ROLE_VNET and br.name not in wanted_bridges:
            _delete_bridge(db, br)

    for cfg in in_scope:
        ext = {M.ROLE: M.ROLE_VNET, M.VNET_ID: cfg.id.canonical, M.CONFIG: cfg.sxp}
        if cfg.id in layout.sources:
            ext[M.SOURCE] = layout.sources[cfg.id]
        existing = db.bridge(cfg.bridge)
        if existing is not None and existing.external_ids.get(M.ROLE) == M.ROLE_VNET \
                and existing.external_ids.get(M.VNET_ID) != cfg.id.canonical:
            raise ConflictError(
                f"bridge: '{cfg.bridge}' is already the bridge of vnet "
                f"{existing.external_ids.get(M.VNET_ID)}")
        mtu = layout.mtus.get(cfg.key)
        bridge, created = _ensure_bridge(txn, db, cfg.bridge, ext, layout.datapath_type,
                                         layout, mtu)
        owned = {M.PORT_VNET: cfg.id.canonical}
        wanted: dict[str, PortSpec] = {}
        if cfg.key in layout.active_keys:
            wanted[M.vnet_patch_name(cfg.key)] = (
                "patch", {"peer": M.transport_patch_name(cfg.key)},
                {M.ROLE: M.ROLE_PATCH, **owned}, None)
        if cfg.vnetif:
            wanted[cfg.vnetif] = ("internal", {}, {M.ROLE: M.ROLE_VNETIF, **owned}, mtu)
        _sync_ports(txn, db, bridge, created, wanted, layout)
        if not created:
            _set_mtu(bridge, mtu)

    transport = db.bridge(M.TRANSPORT_BRIDGE)
    if not layout.active_keys:
        if transport is not None and transport.external_ids.get(M.ROLE) == M.ROLE_TRANSPORT:
            _delete_bridge(db, transport)  # no active vnet at all (the layout is the host's)
        return
    bridge, created = _ensure_bridge(
        txn, db, M.TRANSPORT_BRIDGE, {M.ROLE: M.ROLE_TRANSPORT}, layout.datapath_type,
        layout, None)
    wanted = {}
    for cfg in in_scope:
        if cfg.key not in layout.active_keys:
            continue
        wanted[M.transport_patch_name(cfg.key)] = (
            "patch", {"peer": M.vnet_patch_name(cfg.key)},
            {M.ROLE: M.ROLE_PATCH, M.PORT_VNET: cfg.id.canonical}, None)
    for spec in layout.tunnels:
        itype, options = layout.interfaces[spec.name]
        wanted[spec.name] = (itype, options, spec.external_ids(), None)
    others = frozenset() if only is None else frozenset(
        M.transport_patch_name(cfg.key) for cfg in layout.vnets if cfg.bridge not in only)
    _sync_ports(txn, db, bridge, created, wanted, layout, keep=others)
    if layout.ipsec_other_config is not None:
        other = dict(db.ovs.other_config)
        wanted_other = {k: v for k, v in other.items() if k not in ipsec.OTHER_CONFIG_KEYS}
        wanted_other.update(layout.ipsec_other_config)
        if wanted_other != other:
            db.ovs.other_config = wanted_other
