"""The operations behind the commands: create, delete, sync, peers, and the read-only views.

Each state-changing operation is one OVSDB transaction that contains both the user's change
and everything derived from it (ports, tunnels, MTU), followed by bringing the flows in
line. ``sync`` is the same pass with no user change, so it is safe at any time.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ovsvnet import flows as F
from ovsvnet import ipsec
from ovsvnet import model as M
from ovsvnet import ofctl, state, xfrm_guard
from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConfigError, ConflictError, NotFoundError, OvsvnetError
from ovsvnet.ovsdb import Ovsdb
from ovsvnet.reconcile import Layout, TunnelSpec, stage
from ovsvnet.vnetid import VnetId


@dataclass
class Host:
    """One Open vSwitch instance: its database connection and its run directory."""

    db: Ovsdb
    rundir: str
    #: Peers learned by discovery (the agent fills this); static peers come from OVSDB.
    discovered: list[TunnelSpec] = field(default_factory=list)


@dataclass
class SyncReport:
    flow_changes: list[ofctl.FlowChange] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    pruned_learned: int = 0

    @property
    def changed_flows(self) -> int:
        return sum(len(c.removed) + len(c.added) for c in self.flow_changes)


# -- security levels ----------------------------------------------------------------------

@dataclass(frozen=True)
class Security:
    """Whether auth/conf vnets can cross the underlay here, and with what keys."""

    reason: str | None  # why not, or None when they can
    credentials: ipsec.Credentials | None = None
    algorithms: ipsec.Algorithms | None = None


def security(host: Host) -> Security:
    """IPsec needs the kernel datapath, kernel ESP, a running ovs-monitor-ipsec and keys.

    ovsvnet never carries a secure vnet in clear: where any of these is missing its bridge
    stays local (domains on this host still talk to each other) and it is shown as
    inactive with this reason.
    """
    settings = dict(host.db.ovs.external_ids)
    support = ipsec.host_support(state.datapath_type(host.db), host.rundir)
    if not support.ok:
        return Security(support.reason)
    try:
        credentials = ipsec.credentials_from_settings(settings)
        algorithms = ipsec.Algorithms.from_settings(settings)
    except ConfigError as exc:
        return Security(str(exc))
    if credentials is None:
        return Security("no IPsec keys configured: set external_ids:"
                        f"{ipsec.SETTING_SECRET_FILE} or certificates (docs/security.md)")
    return Security(None, credentials, algorithms)


def ipsec_unavailable_reason(host: Host) -> str | None:
    return security(host).reason


def is_active(host: Host, cfg: VnetConfig, sec: Security | None = None) -> bool:
    if cfg.security == "none":
        return True
    return (sec or security(host)).reason is None


# -- building the layout ------------------------------------------------------------------

@dataclass(frozen=True)
class Underlay:
    local_ip: str | None
    mtu: int
    mtu_source: str


def underlay(host: Host, peers: Iterable[str]) -> Underlay:
    """Tunnel endpoint and underlay MTU: configured values win, else the routes say."""
    from ovsvnet import netlink  # pyroute2 costs 0.2 s to import; only commands that need it

    peers = list(peers)
    local_ip = state.setting(host.db, M.LOCAL_IP)
    configured_mtu = state.setting(host.db, M.UNDERLAY_MTU)
    found = [netlink.route_to(p) for p in peers] or [netlink.default_underlay()]
    if local_ip is None:
        local_ip = next((u.local_ip for u in found if u.local_ip), None)
    if configured_mtu:
        return Underlay(local_ip, int(configured_mtu), "configured")
    mtus = [u.mtu for u in found if u.mtu]
    if mtus:
        return Underlay(local_ip, min(mtus), "route")
    return Underlay(local_ip, M.DEFAULT_UNDERLAY_MTU, "default")


def peer_specs(host: Host, statics: list[state.StaticPeer] | None = None) -> list[TunnelSpec]:
    """Static peers (carrying every vnet until heard) overlaid with what discovery heard.

    A static peer that announces itself is known exactly, so its announced vnets replace
    the "every vnet" assumption; a static peer that never announces (plain kernel VXLAN,
    an old host) keeps getting every vnet.
    """
    if statics is None:
        statics = state.static_peers(host.db)
    specs = {p.address: TunnelSpec(p.address, p.port, None) for p in statics}
    for d in host.discovered:
        specs[d.address] = d
    return list(specs.values())


def layout_for(host: Host, vnets: list[VnetConfig], und: Underlay,
               statics: list[state.StaticPeer] | None = None,
               sources: dict[VnetId, str] | None = None) -> Layout:
    """Tunnels: one per (peer, level) for each level of the active vnets the peer carries."""
    sec = security(host)
    active = [c for c in vnets if is_active(host, c, sec)]
    level_of = {c.key: c.security for c in active}
    tunnels = []
    for peer in peer_specs(host, statics):
        keys = set(level_of) if peer.vnets is None else set(level_of) & peer.vnets
        for level in sorted({level_of[k] for k in keys}):
            tunnels.append(peer.at_level(level))
    ipver = ipaddress.ip_address(und.local_ip).version if und.local_ip else 4
    return Layout(
        vnets=sorted(vnets, key=lambda c: c.id),
        active_keys=set(level_of),
        tunnels=tunnels,
        datapath_type=state.datapath_type(host.db),
        mtus={c.key: ipsec.vnet_mtu(c.security, und.mtu, sec.algorithms, ipver)
              for c in vnets},
        local_ip=state.setting(host.db, M.LOCAL_IP) or (
            und.local_ip if sec.reason is None else None),
        credentials=sec.credentials,
        algorithms=sec.algorithms,
        ipsec_other_config=(ipsec.open_vswitch_other_config(sec.credentials)
                            if sec.reason is None else None),
        sources=dict(sources or {}),
    )


PeerChange = Callable[[list[state.StaticPeer]], list[state.StaticPeer]]


def _commit(host: Host, change: Callable[[dict[VnetId, VnetConfig]], dict[VnetId, VnetConfig]],
            peer_change: PeerChange | None = None, new_peer: str | None = None,
            sources: dict[VnetId, str] | None = None) -> Layout | None:
    """One transaction: the command's change plus everything derived from it.

    ``change(defs)`` returns the new definitions; ``peer_change(statics)`` (staging its own
    OVSDB edit) returns the new static peers. Both are re-run on TRY_AGAIN against a fresh
    view, then :func:`ovsvnet.reconcile.stage` adds the derived rows. ``sources`` (which
    ``change`` may fill) marks new bridges with where their definition came from.
    """
    peers = [t.address for t in peer_specs(host)] + ([new_peer] if new_peer else [])
    und = underlay(host, peers)

    def build(txn: Any) -> Layout:
        defs, _ = state.definitions(host.db)
        new_defs = change(dict(defs))
        statics = state.static_peers(host.db)
        if peer_change is not None:
            statics = peer_change(statics)
        layout = layout_for(host, list(new_defs.values()), und, statics, sources)
        stage(txn, host.db, layout)
        return layout

    layout = host.db.transact(build)
    if layout is not None and layout.created_interfaces:
        failed = host.db.failed_interfaces(layout.created_interfaces)
        if failed:
            raise OvsvnetError("ovs-vswitchd could not create " + "; ".join(
                f"{f.name}: {f.error}" for f in failed))
    return layout


# -- flows --------------------------------------------------------------------------------

FlowCache = dict[str, tuple[str, ...]]


def _apply(host: Host, bridge: str, desired: list[F.Flow], report: SyncReport,
           cache: FlowCache | None) -> None:
    rendered = tuple(f.render() for f in desired)
    if cache is not None and cache.get(bridge) == rendered:
        return
    report.flow_changes.append(ofctl.apply(host.rundir, bridge, desired))
    if cache is not None:
        cache[bridge] = rendered


def apply_flows(host: Host, bridges: set[str] | None = None,
                cache: FlowCache | None = None) -> SyncReport:
    """Bring ovsvnet bridges' flows to the desired set (no-op when already there).

    ``bridges`` limits the work to those bridges (a create touches its own bridge and the
    transport bridge, not the other 999). ``cache`` remembers what was last applied per
    bridge so a long-running agent skips bridges whose desired flows did not change; it
    must be cleared when ovs-vswitchd may have lost flows (canary gone).
    """
    db = host.db
    db.run()
    report = SyncReport()
    defs, _ = state.definitions(db)
    sec = security(host)
    active = {c.key: ipsec.LEVEL_CODES[c.security] for c in defs.values()
              if is_active(host, c, sec)}
    jobs = [(cfg.bridge, F.vnet_bridge_flows(cfg.key)) for cfg in defs.values()
            if (bridges is None or cfg.bridge in bridges) and db.bridge(cfg.bridge) is not None]
    # Each bridge costs ovs-ofctl processes; run them side by side (they wait on
    # ovs-vswitchd, not on this process), so 1000 vnets do not take 1000 round trips.
    if len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda job: _apply(host, job[0], job[1], report, cache), jobs))
    elif jobs:
        _apply(host, jobs[0][0], jobs[0][1], report, cache)
    transport = db.bridge(M.TRANSPORT_BRIDGE)
    if transport is None or transport.external_ids.get(M.ROLE) != M.ROLE_TRANSPORT:
        return report
    if bridges is not None and M.TRANSPORT_BRIDGE not in bridges:
        return report
    discovered = {d.address: d for d in host.discovered}
    vnet_ports: list[F.VnetPort] = []
    tunnel_ports: list[F.TunnelPort] = []
    # The guard and the arming gate (see secure_arming): a secure tunnel port gets flows
    # only while its IPsec policies and ovsvnet's own block policies are in the kernel.
    armed = secure_arming(host, transport,
                          want_guard=any(code != 0 for code in active.values()),
                          failed=report.failed)
    for port in transport.ports:
        role = port.external_ids.get(M.ROLE)
        iface = port.interfaces[0]
        ofp = state.ofport(iface)
        if role not in (M.ROLE_PATCH, M.ROLE_TUNNEL):
            continue
        if ofp is None:
            report.failed.append(f"{port.name}: {(iface.error or ['no OpenFlow port'])[0]}")
            continue
        if role == M.ROLE_PATCH:
            vid = VnetId.parse(port.external_ids[M.PORT_VNET])
            if vid.key in active:
                vnet_ports.append(F.VnetPort(vid.key, ofp, active[vid.key]))
        else:
            address = port.external_ids[M.PORT_PEER]
            d = discovered.get(address)
            level = ipsec.LEVEL_CODES.get(port.external_ids.get(M.PORT_LEVEL, "none"), 0)
            if level != 0 and port.name not in armed:
                continue  # unarmed: its frames hit table 0's drop, nothing is sent to it
            tunnel_ports.append(F.TunnelPort(address, ofp, d.vnets if d else None, level))
    applied_before = len(report.flow_changes)
    _apply(host, M.TRANSPORT_BRIDGE, F.transport_flows(vnet_ports, tunnel_ports), report, cache)
    if cache is None or len(report.flow_changes) > applied_before:
        report.pruned_learned = ofctl.prune_learned(
            host.rundir, M.TRANSPORT_BRIDGE, {t.ofport for t in tunnel_ports})
    return report


def _secure_tunnels(transport: Any) -> list[tuple[str, str, str]]:
    """(port name, level, peer address) of the transport bridge's auth/conf tunnel ports."""
    out = []
    for port in transport.ports if transport is not None else []:
        ext = port.external_ids
        level = ext.get(M.PORT_LEVEL, "none")
        if ext.get(M.ROLE) == M.ROLE_TUNNEL and level in ipsec.LEVELS and level != "none":
            out.append((port.name, level, ext[M.PORT_PEER]))
    return out


def secure_arming(host: Host, transport: Any = None, *, want_guard: bool | None = None,
                  failed: list[str] | None = None) -> frozenset[str]:
    """The secure (auth/conf) tunnel ports that may carry traffic now: "armed".

    A secure port is armed only on the kernel datapath, while ovsvnet's guard policies
    (:mod:`ovsvnet.xfrm_guard`) are in place *and* ``ip xfrm policy`` holds the port's own
    ESP policies (:func:`ovsvnet.ipsec.policies_installed`, installed by the IKE daemon
    for the monitor's conns). Stopping the IKE daemon removes its policies, so the next
    pass disarms the port (the agent re-checks every ``canary_interval``); the guard covers
    the seconds in between. ``want_guard`` True/False installs/removes the guard first
    (``apply_flows`` does, from whether secure vnets are active); None only looks (the
    agent's periodic check). Problems go to ``failed`` and leave every secure port unarmed.

    Off the kernel datapath this never runs ``ip xfrm`` (nothing there uses xfrm, and the
    test suite's userspace labs share the machine's xfrm tables) and arms nothing.
    """
    if state.datapath_type(host.db) != "system":
        return frozenset()
    if transport is None:
        transport = host.db.bridge(M.TRANSPORT_BRIDGE)
    secure = _secure_tunnels(transport)
    if not secure and not want_guard:
        if want_guard is None:
            return frozenset()
        # nothing secure left: remove a guard an earlier pass installed, if any (a kernel
        # whose xfrm cannot even be listed has none: not a problem for a host without
        # secure vnets)
        try:
            text = xfrm_guard.read_policies()
        except OvsvnetError:
            return frozenset()
        try:
            xfrm_guard.ensure(text, False)
        except OvsvnetError as exc:
            if failed is not None:
                failed.append(str(exc))
        return frozenset()
    try:
        text = xfrm_guard.read_policies()
        if want_guard is not None:
            xfrm_guard.ensure(text, want_guard)
            guarded = want_guard
        else:
            guarded = xfrm_guard.complete(text)
    except OvsvnetError as exc:
        if failed is not None:
            failed.append(str(exc))
        return frozenset()
    if not guarded:
        return frozenset()
    return frozenset(name for name, level, peer in secure
                     if ipsec.policies_installed(level, peer, text))


DefsChange = Callable[[dict[VnetId, VnetConfig]], dict[VnetId, VnetConfig]]


def sync(host: Host, cache: FlowCache | None = None, change: DefsChange | None = None,
         sources: dict[VnetId, str] | None = None) -> SyncReport:
    """Reconcile OVSDB rows and flows with the stored definitions and peers.

    The agent passes ``change`` (and ``sources``) to fold the cluster registry's vnets in,
    in the same transaction (see :func:`ovsvnet.registry.plan`).
    """
    _commit(host, change or (lambda defs: defs), sources=sources)
    return apply_flows(host, cache=cache)


# -- vnets --------------------------------------------------------------------------------

def resolve(host: Host, text: str) -> VnetConfig:
    """A defined vnet named by id (any form), bridge name or vnetif name."""
    defs, _ = state.definitions(host.db)
    try:
        vid: VnetId | None = VnetId.parse(text)
    except ConfigError:
        vid = None
    if vid is not None and vid in defs:
        return defs[vid]
    for cfg in defs.values():
        if text in (cfg.bridge, cfg.vnetif):
            return cfg
    raise NotFoundError(f"vnet: no vnet '{text}' on this host (ovsvnet list shows them)")


def create_many(host: Host, cfgs: list[VnetConfig],
                may_exist: bool = False) -> tuple[set[VnetId], SyncReport]:
    """Define vnets in one transaction (all or none). Returns the ids actually created;
    with ``may_exist`` an identical existing definition is accepted and left as it is."""
    created: set[VnetId] = set()
    seen: dict[VnetId, VnetConfig] = {}
    for cfg in cfgs:
        if cfg.id in seen and seen[cfg.id] != cfg:
            raise ConflictError(f"id: vnet {cfg.id.short} is given twice, differently")
        seen[cfg.id] = cfg

    def change(defs: dict[VnetId, VnetConfig]) -> dict[VnetId, VnetConfig]:
        created.clear()
        names = {n: c for c in defs.values() for n in (c.bridge, c.vnetif) if n}
        for cfg in seen.values():
            old = defs.get(cfg.id)
            if old is not None:
                if may_exist and old == cfg:
                    continue
                if may_exist:
                    raise ConflictError(f"id: vnet {cfg.id.short} already exists with a "
                                        f"different definition: {old.to_sxp()}")
                raise ConflictError(f"id: vnet {cfg.id.short} already exists (bridge "
                                    f"{old.bridge}); --may-exist accepts an identical "
                                    "definition")
            for field_name in ("bridge", "vnetif"):
                name = getattr(cfg, field_name)
                if name and name in names:
                    raise ConflictError(f"{field_name}: '{name}' is already used by vnet "
                                        f"{names[name].id.short}")
            if cfg.vnetif and host.db.interface(cfg.vnetif) is not None:
                raise ConflictError(f"vnetif: an interface named '{cfg.vnetif}' already "
                                    "exists in OVSDB")
            defs[cfg.id] = cfg
            created.add(cfg.id)
            names.update({n: cfg for n in (cfg.bridge, cfg.vnetif) if n})
        return defs

    _commit(host, change)
    bridges = {c.bridge for c in seen.values()} | {M.TRANSPORT_BRIDGE}
    return created, apply_flows(host, bridges)


def create(host: Host, cfg: VnetConfig, may_exist: bool = False) -> tuple[bool, SyncReport]:
    """Define one vnet. Returns (created, report); (False, ...) when an identical one exists."""
    created, report = create_many(host, [cfg], may_exist)
    return cfg.id in created, report


def delete(host: Host, text: str, force: bool = False) -> tuple[VnetConfig, SyncReport]:
    cfg = resolve(host, text)
    if state.sources(host.db).get(cfg.id) == "registry":
        raise ConflictError(f"vnet {cfg.id.short} comes from the cluster registry (the agent "
                            "would make it again); delete it there: ovsvnet --registry "
                            f"REMOTES delete {cfg.id.short}")

    def change(defs: dict[VnetId, VnetConfig]) -> dict[VnetId, VnetConfig]:
        if cfg.id not in defs:
            raise NotFoundError(f"vnet: no vnet '{text}' on this host")
        bridge = host.db.bridge(cfg.bridge)
        plugged = state.domain_ports(bridge) if bridge is not None else []
        if plugged and not force:
            raise ConflictError(
                f"vnet {cfg.id.short} still has domains plugged into {cfg.bridge}: "
                f"{', '.join(plugged)}; unplug them or use --force")
        del defs[cfg.id]
        return defs

    _commit(host, change)
    return cfg, apply_flows(host, {M.TRANSPORT_BRIDGE})


# -- peers --------------------------------------------------------------------------------

def resolve_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", text):
        raise ConfigError(f"peer: '{text}' is neither an IP address nor a host name")
    try:
        infos = socket.getaddrinfo(text, None, proto=socket.IPPROTO_UDP)
    except socket.gaierror as exc:
        raise ConfigError(f"peer: cannot resolve '{text}': {exc.strerror}") from exc
    for family in (socket.AF_INET, socket.AF_INET6):
        for info in infos:
            if info[0] == family:
                return str(info[4][0])
    raise ConfigError(f"peer: '{text}' has no IPv4 or IPv6 address")


def peer_add(host: Host, text: str, port: int = M.VXLAN_PORT,
             may_exist: bool = True) -> tuple[str, bool, SyncReport]:
    """Add a static peer. Returns (address, added, report); idempotent for the same port."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"port: {port} is not a UDP port (1-65535)")
    address = resolve_address(text)
    ip = ipaddress.ip_address(address)
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        raise ConfigError(f"peer: {address} is not a unicast host address")
    key = M.PEER_PREFIX + address
    added = True

    def change(statics: list[state.StaticPeer]) -> list[state.StaticPeer]:
        nonlocal added
        current = host.db.ovs.external_ids.get(key)
        added = current != str(port)
        if current is not None and added and not may_exist:
            raise ConflictError(f"peer: {address} already exists with port {current}")
        if added:
            host.db.ovs.setkey("external_ids", key, str(port))
        return [p for p in statics if p.address != address] + [state.StaticPeer(address, port)]

    _commit(host, lambda defs: defs, change, new_peer=address)
    return address, added, apply_flows(host, {M.TRANSPORT_BRIDGE})


def peer_delete(host: Host, text: str) -> tuple[str, SyncReport]:
    address = resolve_address(text)
    key = M.PEER_PREFIX + address

    def change(statics: list[state.StaticPeer]) -> list[state.StaticPeer]:
        if key not in host.db.ovs.external_ids:
            raise NotFoundError(f"peer: {address} is not a static peer of this host")
        host.db.ovs.delkey("external_ids", key)
        return [p for p in statics if p.address != address]

    _commit(host, lambda defs: defs, change)
    return address, apply_flows(host, {M.TRANSPORT_BRIDGE})


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


# -- read-only views ----------------------------------------------------------------------

def vnet_view(host: Host, cfg: VnetConfig, sec: Security | None = None) -> dict[str, Any]:
    db = host.db
    bridge = db.bridge(cfg.bridge)
    data: dict[str, Any] = cfg.to_dict()
    data["source"] = (bridge.external_ids.get(M.SOURCE) if bridge is not None else None) \
        or "local"
    sec = sec or security(host)
    reason = None if is_active(host, cfg, sec) else sec.reason
    ports = []
    mtu = None
    if bridge is not None:
        for port in sorted(bridge.ports, key=lambda p: p.name):
            iface = port.interfaces[0]
            kind = port.external_ids.get(M.ROLE) or ("bridge" if port.name == bridge.name
                                                      else "domain")
            ports.append({
                "name": port.name, "kind": kind, "ofport": state.ofport(iface),
                "mtu": iface.mtu[0] if iface.mtu else None,
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
    peers = [t.address for t in peer_specs(host)]
    und = underlay(host, peers)
    ipver = ipaddress.ip_address(und.local_ip).version if und.local_ip else 4
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
    if db.bridge(M.TRANSPORT_BRIDGE) is None:
        return []
    mask = (f"cookie={F.cookie(F.KIND_LEARNED, cfg.key):#x}/-1" if cfg else
            f"cookie={F.cookie(F.KIND_LEARNED):#x}/{F.KIND_MASK:#x}")
    out = ofctl.run_ofctl(host.rundir, M.TRANSPORT_BRIDGE, "dump-flows",
                          f"table={F.T_UNICAST},{mask}").stdout
    ports = {}
    for port in db.bridge(M.TRANSPORT_BRIDGE).ports:
        ofp = state.ofport(port.interfaces[0])
        if ofp is not None:
            ports[ofp] = port.external_ids.get(M.PORT_PEER, port.name)
    defs, _ = state.definitions(db)
    by_key = {c.key: c for c in defs.values()}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for line in out.splitlines():
        m_key = re.search(r"tun_id=(0x[0-9a-f]+)", line)
        m_mac = re.search(r"dl_dst=([0-9a-f:]{17})", line)
        m_out = re.search(r"actions=output:(\d+)", line)
        m_idle = re.search(r"idle_age=(\d+)", line)
        m_prio = re.search(r"priority=(\d+)", line)
        if not (m_key and m_mac and m_out):
            continue
        key = int(m_key.group(1), 16)
        vnet = by_key.get(key)
        entry = {
            "vnet": vnet.id.short if vnet else f"key {key:#x}",
            "mac": m_mac.group(1),
            "peer": ports.get(int(m_out.group(1)), f"port {m_out.group(1)}"),
            "idle": int(m_idle.group(1)) if m_idle else 0,
            "locked": bool(m_prio and int(m_prio.group(1)) > 100),
        }
        # a locked entry (from a move announcement) is the one lookups use
        current = rows.get((entry["vnet"], entry["mac"]))
        if current is None or (entry["locked"] and not current["locked"]):
            rows[(entry["vnet"], entry["mac"])] = entry
    return [rows[k] for k in sorted(rows)]


def varp_flush(host: Host, cfg: VnetConfig | None = None) -> None:
    if host.db.bridge(M.TRANSPORT_BRIDGE) is not None:
        ofctl.flush_learned(host.rundir, M.TRANSPORT_BRIDGE, cfg.key if cfg else None)


def vifs_view(host: Host, cfg: VnetConfig | None = None) -> list[dict[str, Any]]:
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
            rows.append({
                "vnet": c.id.short, "bridge": c.bridge, "port": port.name,
                "mac": iface.mac_in_use[0] if iface.mac_in_use else None,
                "ofport": state.ofport(iface),
                "mtu": iface.mtu[0] if iface.mtu else None,
            })
    return rows
