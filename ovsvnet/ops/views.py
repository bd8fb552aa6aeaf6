"""Read-only views of a host for the commands: vnets, peers, learned MACs, ports, bridges.

Each view is a list of plain dicts (what ``--json`` prints); the CLI only renders them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import netaddr

from ovsvnet import ipsec
from ovsvnet import model as M
from ovsvnet.config import VnetConfig
from ovsvnet.desired import Security
from ovsvnet.errors import ConfigError, NotFoundError, OvsvnetError
from ovsvnet.ops import state
from ovsvnet.ops.host import Host, peers, security, underlay
from ovsvnet.system import ofctl, unixctl
from ovsvnet.vnetid import VnetId


def peers_view(host: Host) -> list[dict[str, Any]]:
    """Static peers and tunnels as OVSDB has them (discovered peers are on their ports)."""
    db = host.db
    rows: dict[str, dict[str, Any]] = {}
    for p in state.static_peers(db):
        rows[p.address] = {"address": p.address, "port": p.port, "static": True,
                           "origin": None, "vnets": "all", "tunnel": None,
                           "tunnel_state": "absent"}
    transport = db.bridge(M.TRANSPORT_BRIDGE)
    for port in transport.ports if transport is not None else []:
        ext = port.external_ids
        if ext.get(M.ROLE) != M.ROLE_TUNNEL:
            continue
        iface = port.interfaces[0]
        row = rows.setdefault(ext[M.PORT_PEER], {
            "address": ext[M.PORT_PEER], "static": False, "origin": None,
            "port": int(iface.options.get("dst_port", M.VXLAN_PORT))})
        row["origin"] = ext.get(M.PORT_ORIGIN)
        if M.PORT_VNETS in ext:
            row["vnets"] = sorted(f"{int(k, 16):04x}" for k in ext[M.PORT_VNETS].split(",") if k)
        else:
            row["vnets"] = "all"
        row["tunnel"] = port.name
        row["tunnel_state"] = "up" if state.ofport(iface) else "error"
    return sorted(rows.values(), key=lambda r: ipaddress.ip_address(r["address"]))


def vnet_view(host: Host, cfg: VnetConfig, sec: Security | None = None) -> dict[str, Any]:
    db = host.db
    bridge = db.bridge(cfg.bridge)
    data: dict[str, Any] = cfg.to_dict()
    data["source"] = (bridge.external_ids.get(M.SOURCE) if bridge is not None else None) \
        or "local"
    sec = sec or security(host)
    reason = None if sec.active(cfg) else sec.reason
    ports = []
    mtu = None
    if bridge is not None:
        for port in sorted(bridge.ports, key=lambda p: p.name):
            iface = port.interfaces[0]
            kind = port.external_ids.get(M.ROLE) or ("bridge" if port.name == bridge.name
                                                      else "domain")
            ports.append({
                "name": port.name, "kind": kind, "ofport": state.ofport(iface),
                "mtu": state.first(iface.mtu),
                "error": iface.error[0] if iface.error else None,
            })
            if port.name == bridge.name and iface.mtu_request:
                mtu = iface.mtu_request[0]
    data.update({
        "state": ("missing" if bridge is None else "active" if reason is None else "inactive"),
        "reason": reason,
        "ports": ports,
        "domains": [p["name"] for p in ports if p["kind"] == "domain"],
        "mtu": mtu,
        "datapath_type": bridge.datapath_type if bridge is not None else None,
    })
    return data


def list_view(host: Host) -> tuple[list[dict[str, Any]], list[state.BrokenVnet]]:
    defs, broken = state.definitions(host.db)
    sec = security(host)
    return [vnet_view(host, cfg, sec) for cfg in sorted(defs.values(), key=lambda c: c.id)], \
        broken


def host_view(host: Host) -> dict[str, Any]:
    und = underlay(host, [t.address for t in peers(host)])
    ipver = und.ip_version
    return {
        "datapath_type": state.datapath_type(host.db),
        "local_ip": und.local_ip,
        "underlay_mtu": und.mtu,
        "underlay_mtu_source": und.mtu_source,
        "vnet_mtu": ipsec.vnet_mtu("none", und.mtu, None, ipver),
        "vnet_mtu_by_level": {lvl: ipsec.vnet_mtu(lvl, und.mtu, None, ipver)
                              for lvl in ipsec.LEVELS},
        "encapsulation": {lvl: ipsec.tunnel_type(lvl) for lvl in ipsec.LEVELS},
        "ipsec": security(host).reason or "available",
    }


def varp_view(host: Host, cfg: VnetConfig | None = None) -> list[dict[str, Any]]:
    """Remote MACs learned on the transport bridge: (vnet, MAC, peer, age in seconds)."""
    db = host.db
    transport = db.bridge(M.TRANSPORT_BRIDGE)
    if transport is None:
        return []
    flows = ofctl.dump_learned(host.rundir, M.TRANSPORT_BRIDGE, cfg.key if cfg else None)
    ports = {}
    for port in transport.ports:
        ofp = state.ofport(port.interfaces[0])
        if ofp is not None:
            ports[ofp] = port.external_ids.get(M.PORT_PEER, port.name)
    defs, _ = state.definitions(db)
    by_key = {c.key: c for c in defs.values()}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for flow in flows:
        key, mac, out = flow.match.get("tun_id"), flow.match.get("dl_dst"), \
            ofctl.output_port(flow)
        if key is None or mac is None or out is None:
            continue
        try:
            key_value = int(key, 0)
            entry = {
                "vnet": "", "mac": str(netaddr.EUI(mac, dialect=netaddr.mac_unix_expanded)),
                "peer": ports.get(out, f"port {out}"),
                "idle": int(flow.info.get("idle_age", "0")),
                "age": int(float(flow.info.get("duration", "0s").rstrip("s"))),
                "locked": int(flow.match.get("priority", "0")) > 100,
            }
        except (ValueError, netaddr.AddrFormatError):
            continue  # not a line of ours
        vnet = by_key.get(key_value)
        entry["vnet"] = vnet.id.short if vnet else f"key {key_value:#x}"
        # a locked entry (from a move announcement) is the one lookups use
        current = rows.get((entry["vnet"], entry["mac"]))
        if current is None or (entry["locked"] and not current["locked"]):
            rows[(entry["vnet"], entry["mac"])] = entry
    return [rows[k] for k in sorted(rows)]


def varp_flush(host: Host, cfg: VnetConfig | None = None) -> None:
    if host.db.bridge(M.TRANSPORT_BRIDGE) is not None:
        _purge_datapath_flows(host)
        ofctl.flush_learned(host.rundir, M.TRANSPORT_BRIDGE, cfg.key if cfg else None)


def _purge_datapath_flows(host: Host) -> None:
    """Drop ovs-vswitchd's datapath flows before deleting learned MACs: it re-applies the
    learn actions of the datapath flows that carried a MAC's last frames when it pushes
    their statistics (see ovsvnet.flows, "Why the lock"), which re-created a forgotten MAC
    at once. Purged first, their last statistics are pushed before the delete; traffic
    takes one upcall each to set them up again."""
    try:
        unixctl.vswitchd(host.rundir, "revalidator/purge")
    except OvsvnetError:
        pass  # an older ovs-vswitchd: the entry comes back until its flows idle out


def vifs_view(host: Host, cfg: VnetConfig | None = None) -> list[dict[str, Any]]:
    """Domain ports per vnet: ``mac`` is the guest's (the attacher's ``attached-mac``; None
    when unrecorded), ``port_mac`` the host end's; ``owner`` says who plugged it in."""
    from ovsvnet.owners import owner
    defs, _ = state.definitions(host.db)
    rows = []
    for c in sorted(defs.values(), key=lambda c: c.id):
        if cfg is not None and c.id != cfg.id:
            continue
        bridge = host.db.bridge(c.bridge)
        if bridge is None:
            continue
        for port in sorted(bridge.ports, key=lambda p: p.name):
            if port.name == bridge.name or M.ROLE in port.external_ids:
                continue
            iface = port.interfaces[0]
            who = owner(iface.external_ids, port.external_ids)
            rows.append({
                "vnet": c.id.short, "bridge": c.bridge, "port": port.name,
                "mac": who.guest_mac, "port_mac": state.first(iface.mac_in_use),
                "owner": who.label, "owner_ids": who.to_dict(),
                "ofport": state.ofport(iface),
                "mtu": state.first(iface.mtu),
            })
    return rows


def vnifs_view(host: Host, cfgs: list[VnetConfig]) -> list[dict[str, Any]]:
    """The vnets' host interfaces (vnetif): MAC, MTU, state, addresses."""
    try:
        from ovsvnet.system import netlink
        addrs = netlink.addresses_by_link()
    except Exception:  # noqa: BLE001 - no netlink here: leave addresses out
        addrs = {}
    rows = []
    for cfg in cfgs:
        if not cfg.vnetif:
            continue
        iface = host.db.interface(cfg.vnetif)
        rows.append({
            "vnet": cfg.id.short, "vnetif": cfg.vnetif, "bridge": cfg.bridge,
            "mac": state.first(iface.mac_in_use) if iface is not None else None,
            "mtu": state.first(iface.mtu) if iface is not None else None,
            "admin_state": state.first(iface.admin_state) if iface is not None else None,
            "link_state": state.first(iface.link_state) if iface is not None else None,
            "ofport": state.ofport(iface) if iface is not None else None,
            "addresses": addrs.get(cfg.vnetif, []),
            "error": state.first(iface.error) if iface is not None else
            "missing: run ovsvnet sync",
        })
    return rows


def _bridge_role(br: Any) -> str | None:
    role: str | None = br.external_ids.get(M.ROLE)
    if role == M.ROLE_VNET:
        vid = br.external_ids.get(M.VNET_ID)
        try:
            return f"vnet {VnetId.parse(vid).short}" if vid else "vnet"
        except ConfigError:
            return "vnet (broken record)"
    return role


def bridges_view(host: Host) -> list[dict[str, Any]]:
    """Every OVS bridge and its ports, ovsvnet's marked with their role."""
    rows = []
    for br in sorted(host.db.rows("Bridge"), key=lambda b: b.name):
        role = _bridge_role(br)
        ports = []
        for port in sorted(br.ports, key=lambda p: p.name):
            iface = port.interfaces[0] if port.interfaces else None
            prole = port.external_ids.get(M.ROLE)
            if prole is None and role and role.startswith("vnet") and port.name != br.name:
                prole = "domain"
            ports.append({"name": port.name, "type": (iface.type or "system") if iface else "",
                          "role": prole, "ofport": state.ofport(iface) if iface else None})
        rows.append({"name": br.name, "ovsvnet": role is not None, "role": role,
                     "datapath_type": br.datapath_type or "system",
                     "fail_mode": br.fail_mode[0] if br.fail_mode else "standalone",
                     "ports": ports})
    return rows


# -- MAC addresses (vn vif-add / vif-delete) ----------------------------------------------

def parse_mac(text: str, field: str = "vmac") -> str:
    """A MAC as Xen's vif table took it (six hex pairs, ':' or '-' used consistently),
    normalised to lower case with colons."""
    sep = ":" if ":" in text else "-"
    parts = text.split(sep)
    if len(parts) != 6 or any(len(p) != 2 for p in parts):
        raise ConfigError(f"{field}: '{text}' is not a MAC address (6 hex pairs joined by ':' "
                          "or '-')")
    try:
        mac = netaddr.EUI(text, dialect=netaddr.mac_unix_expanded)
    except (netaddr.AddrFormatError, TypeError):
        raise ConfigError(f"{field}: '{text}' is not a MAC address (6 hex pairs joined by ':' "
                          "or '-')") from None
    return str(mac)


def parse_fdb(text: str) -> list[dict[str, Any]]:
    """``ovs-appctl fdb/show`` output -> [{port, vlan, mac, age}]."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            mac = parse_mac(parts[2])
            vlan = int(parts[1])
        except (ConfigError, ValueError):
            continue
        rows.append({"port": parts[0], "vlan": vlan, "mac": mac, "age": parts[3]})
    return rows


def interface_mac(host: Host, name: str) -> str:
    iface = host.db.interface(name)
    if iface is None or not iface.mac_in_use:
        raise NotFoundError(f"interface: no interface '{name}' with a MAC in OVSDB")
    return str(iface.mac_in_use[0]).lower()


def local_mac(host: Host, cfg: VnetConfig, mac: str) -> dict[str, Any] | None:
    """Where the vnet bridge's MAC table has ``mac`` on this host (port name, age), or None.

    An entry on the patch port is the bridge's note that the MAC is behind the transport
    bridge, i.e. remote (:func:`varp_view` shows where): not a local one. ovs-vswitchd
    also re-learns it from the datapath flows that carried its last frames for a few
    seconds after it is deleted, so counting it made "forget" look undone."""
    text = unixctl.vswitchd(host.rundir, "fdb/show", cfg.bridge)
    names = {}
    bridge = host.db.bridge(cfg.bridge)
    for port in bridge.ports if bridge is not None else []:
        ofp = state.ofport(port.interfaces[0])
        if ofp is not None:
            names[str(ofp)] = port.name
    names["LOCAL"] = cfg.bridge
    patch = M.vnet_patch_name(cfg.key)
    for row in parse_fdb(text):
        port = names.get(row["port"], row["port"])
        if row["mac"] == mac and port != patch:
            return {"port": port, "age": row["age"]}
    return None


def forget_local(host: Host, cfg: VnetConfig, mac: str, port: str) -> None:
    """Remove one learned MAC from a vnet bridge's MAC table.

    OVS 3.1's fdb/del only deletes static entries, so the learned entry is first turned into
    a static one on the same port (frames keep going where they went), then deleted. If
    that is refused, the bridge's whole table is flushed (everything is relearned)."""
    try:
        unixctl.vswitchd(host.rundir, "fdb/add", cfg.bridge, port, "0", mac)
        unixctl.vswitchd(host.rundir, "fdb/del", cfg.bridge, "0", mac)
    except OvsvnetError:
        unixctl.vswitchd(host.rundir, "fdb/flush", cfg.bridge)


def forget_remote(host: Host, cfg: VnetConfig, mac: str) -> None:
    _purge_datapath_flows(host)
    ofctl.forget_learned(host.rundir, M.TRANSPORT_BRIDGE, cfg.key, mac)
