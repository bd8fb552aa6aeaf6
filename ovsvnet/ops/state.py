"""Read ovsvnet's state back out of OVSDB: definitions, static peers, host settings.

OVSDB is the only store: a vnet's definition lives in its bridge's ``external_ids``, static
peers and host settings in the Open_vSwitch row's ``external_ids`` (keys in
:mod:`ovsvnet.model`). Nothing is cached on disk elsewhere, so ``ovs-vsctl`` always shows the
truth and a restart of anything loses nothing.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from ovsvnet import model as M
from ovsvnet.addresses import unicast_host
from ovsvnet.config import VnetConfig
from ovsvnet.desired import StaticPeer, TunnelSpec
from ovsvnet.errors import ConfigError
from ovsvnet.ovsdb import Ovsdb
from ovsvnet.vnetid import VnetId


@dataclass(frozen=True)
class BrokenVnet:
    """A bridge marked as a vnet whose stored definition no longer parses."""

    bridge: str
    reason: str


def ext(row: Any, key: str) -> str | None:
    return row.external_ids.get(key)


def role(row: Any) -> str | None:
    return row.external_ids.get(M.ROLE)


#: Stored definition text -> parsed definition. Parsing 1000 SXP definitions costs 0.3 s and
#: the agent reads them on every pass; VnetConfig is immutable, so a parse is reused.
_parsed: dict[str, VnetConfig] = {}


def parse_stored(text: str, bridge: str) -> VnetConfig:
    cfg = _parsed.get(text)
    if cfg is None:
        cfg = VnetConfig.from_sxp(text, source=f"bridge {bridge}")
        if len(_parsed) > 65536:
            _parsed.clear()
        _parsed[text] = cfg
    return cfg


def definitions(db: Ovsdb) -> tuple[dict[VnetId, VnetConfig], list[BrokenVnet]]:
    """Every vnet defined on this host, keyed by id, plus bridges whose record is broken."""
    found: dict[VnetId, VnetConfig] = {}
    broken: list[BrokenVnet] = []
    for br in db.rows("Bridge"):
        ids = br.external_ids
        if ids.get(M.ROLE) != M.ROLE_VNET:
            continue
        try:
            cfg = parse_stored(ids.get(M.CONFIG) or "", br.name)
        except ConfigError as exc:
            broken.append(BrokenVnet(br.name, str(exc)))
            continue
        found[cfg.id] = cfg
    return found, broken


def sources(db: Ovsdb) -> dict[VnetId, str]:
    """Vnets whose definition came from elsewhere (``ovsvnet-source``, e.g. the registry),
    by id; a vnet not listed was defined on this host."""
    found: dict[VnetId, str] = {}
    for br in db.rows("Bridge"):
        src = br.external_ids.get(M.SOURCE)
        if role(br) == M.ROLE_VNET and src and M.VNET_ID in br.external_ids:
            try:
                found[VnetId.parse(br.external_ids[M.VNET_ID])] = src
            except ConfigError:
                continue
    return found


def static_peer_keys(db: Ovsdb) -> tuple[list[StaticPeer], dict[str, str]]:
    """The static peers in Open_vSwitch ``external_ids``, and the keys that break a rule
    (key -> why): a hand-made ``ovsvnet-peer-<not an address>`` is skipped and shown, never
    fatal."""
    peers, bad = [], {}
    for key, value in db.ovs.external_ids.items():
        if not key.startswith(M.PEER_PREFIX):
            continue
        try:
            address = unicast_host(key[len(M.PEER_PREFIX):], "peer")
            port = int(value) if value else M.VXLAN_PORT
            if not 1 <= port <= 65535:
                raise ConfigError(f"port: {port} is not a UDP port (1-65535)")
        except (ConfigError, ValueError) as exc:
            bad[key] = str(exc) if isinstance(exc, ConfigError) else \
                f"port: {value!r} is not a number"
            continue
        peers.append(StaticPeer(address, port))
    return sorted(peers, key=lambda p: ipaddress.ip_address(p.address)), bad


def static_peers(db: Ovsdb) -> list[StaticPeer]:
    return static_peer_keys(db)[0]


def setting(db: Ovsdb, key: str) -> str | None:
    return db.ovs.external_ids.get(key)


def datapath_type(db: Ovsdb) -> str:
    """The datapath new bridges get: configured, else the transport bridge's, else detected.

    ``system`` (the kernel module) is used only when ovs-vswitchd offers it *and* the
    openvswitch module is loaded; otherwise the userspace datapath ``netdev``.
    """
    configured = setting(db, M.DATAPATH)
    if configured:
        return configured
    transport = db.bridge(M.TRANSPORT_BRIDGE)
    if transport is not None and transport.datapath_type:
        return transport.datapath_type
    offered = set(db.ovs.datapath_types)
    if "system" in offered and os.path.isdir("/sys/module/openvswitch"):
        return "system"
    if "netdev" in offered or not offered:
        return "netdev"
    return sorted(offered)[0]


def effective_datapath(db: Ovsdb) -> str:
    """The datapath ovsvnet's tunnels really use: the transport bridge's own
    ``datapath_type`` when it exists (a setting changed later applies to new bridges only),
    else what new bridges would get. IPsec is decided on this, never on the setting alone:
    userspace tunnels never pass through the kernel's XFRM."""
    transport = db.bridge(M.TRANSPORT_BRIDGE)
    if transport is not None:
        return transport.datapath_type or "system"  # OVS's default for "" is system
    return datapath_type(db)


def domain_ports(bridge: Any) -> list[str]:
    """Ports on a vnet bridge that ovsvnet did not create: the domains plugged in."""
    return sorted(p.name for p in bridge.ports
                  if p.name != bridge.name and M.ROLE not in p.external_ids)


def ofport(iface: Any) -> int | None:
    value = iface.ofport[0] if iface.ofport else None
    return value if value is not None and value > 0 else None


def first(column: Any) -> Any:
    """The value of an optional OVSDB column as the IDL gives it ([] or [x]), or None."""
    return column[0] if column else None


def recorded_peers(db: Ovsdb) -> list[TunnelSpec]:
    """Peers the agent learned (by discovery or from the registry), as it recorded them on
    their tunnel ports: what a restarted agent resumes with, and what a command keeps (a
    command never removes the agent's tunnels; the agent expires them)."""
    transport = db.bridge(M.TRANSPORT_BRIDGE)
    found: dict[str, TunnelSpec] = {}
    for port in transport.ports if transport is not None else []:
        ext = port.external_ids
        if ext.get(M.ROLE) != M.ROLE_TUNNEL or not (M.PORT_ORIGIN in ext or M.SOURCE in ext):
            continue
        try:
            keys = frozenset(int(k, 16) for k in ext.get(M.PORT_VNETS, "").split(",") if k)
            address = unicast_host(ext.get(M.PORT_PEER, ""), "peer")
            port_no = int(port.interfaces[0].options.get("dst_port", M.VXLAN_PORT))
        except (ConfigError, ValueError):
            continue
        found[address] = TunnelSpec(address, port_no, keys, ext.get(M.PORT_ORIGIN),
                                    source=ext.get(M.SOURCE))
    return list(found.values())
