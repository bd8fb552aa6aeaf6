"""What a host should hold: its vnets, the tunnels to its peers, MTUs (pure, no I/O).

:mod:`ovsvnet.ops` gathers the facts (definitions and peers from OVSDB, routes, IPsec
support) and hands them to :func:`layout`; :mod:`ovsvnet.ops.reconcile` stages the rows that
make OVSDB match the result. Keeping the decision pure lets it be tested without a switch.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ovsvnet import ipsec
from ovsvnet import model as M
from ovsvnet.addresses import unicast_host
from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConfigError
from ovsvnet.vnetid import VnetId


@dataclass(frozen=True)
class TunnelSpec:
    address: str
    port: int = M.VXLAN_PORT
    vnets: frozenset[int] | None = None  # keys it carries; None = every vnet (static peer)
    origin: str | None = None  # the peer's host id, when learned by discovery
    level: str = "none"  # one tunnel per (peer, security level), see ovsvnet.ipsec
    source: str | None = None  # "registry" for a peer learned from the cluster registry

    @property
    def name(self) -> str:
        return ipsec.port_name(self.level, self.address)

    def at_level(self, level: str) -> TunnelSpec:
        return TunnelSpec(self.address, self.port, self.vnets, self.origin, level, self.source)

    def external_ids(self) -> dict[str, str]:
        """What the tunnel port records about its peer, so a restarted agent can resume
        with the same peers (and the same flows) instead of tearing tunnels down."""
        ext = {M.ROLE: M.ROLE_TUNNEL, M.PORT_PEER: self.address, M.PORT_LEVEL: self.level}
        if self.origin is not None:
            ext[M.PORT_ORIGIN] = self.origin
        if self.vnets is not None:
            ext[M.PORT_VNETS] = ",".join(f"{k:x}" for k in sorted(self.vnets))
        if self.source is not None:
            ext[M.SOURCE] = self.source
        return ext


@dataclass(frozen=True)
class StaticPeer:
    address: str
    port: int = M.VXLAN_PORT


@dataclass(frozen=True)
class Security:
    """Whether auth/conf vnets can cross the underlay here, and with what keys."""

    reason: str | None  # why not, or None when they can
    credentials: ipsec.Credentials | None = None
    algorithms: ipsec.Algorithms | None = None

    def active(self, cfg: VnetConfig) -> bool:
        """A ``none`` vnet always crosses; a secure one only where IPsec works."""
        return cfg.security == "none" or self.reason is None


@dataclass(frozen=True)
class Underlay:
    local_ip: str | None
    mtu: int
    mtu_source: str

    @property
    def ip_version(self) -> int:
        return ipaddress.ip_address(self.local_ip).version if self.local_ip else 4


@dataclass
class Layout:
    """What OVSDB should hold for ovsvnet on this host."""

    vnets: list[VnetConfig]
    #: Keys of the vnets that may cross the underlay; a secure vnet without working IPsec
    #: is left out, so it has no patch port to the transport bridge and stays local.
    active_keys: set[int]
    tunnels: list[TunnelSpec]
    datapath_type: str
    #: MTU for each vnet's bridge port and vnetif, by key (it depends on the level).
    mtus: dict[int, int]
    local_ip: str | None = None
    #: IPsec keys and proposals, and the Open_vSwitch other_config they need; None where
    #: IPsec is not usable (then no secure tunnel is in ``tunnels``).
    credentials: ipsec.Credentials | None = None
    algorithms: ipsec.Algorithms | None = None
    ipsec_other_config: dict[str, str] | None = None
    created_interfaces: set[str] = field(default_factory=set)
    #: Where a vnet's definition came from, recorded on its bridge (``ovsvnet-source``);
    #: vnets not listed are local. Existing bridges keep what they have.
    sources: dict[VnetId, str] = field(default_factory=dict)
    #: Interface (type, options) of each tunnel in ``tunnels``, by port name.
    interfaces: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    #: Peers left out because they break a rule (address -> why): one bad peer never
    #: stops the others from getting their tunnels.
    rejected: dict[str, str] = field(default_factory=dict)


def peer_specs(statics: Iterable[StaticPeer], discovered: Iterable[TunnelSpec]
               ) -> list[TunnelSpec]:
    """Static peers (carrying every vnet until heard) overlaid with what discovery heard.

    A static peer that announces itself is known exactly, so its announced vnets replace
    the "every vnet" assumption; a static peer that never announces (plain kernel VXLAN,
    an old host) keeps getting every vnet.
    """
    specs = {p.address: TunnelSpec(p.address, p.port, None) for p in statics}
    for d in discovered:
        specs[d.address] = d
    return list(specs.values())


def layout(vnets: Iterable[VnetConfig], peers: Iterable[TunnelSpec], sec: Security,
           und: Underlay, *, datapath_type: str, local_ip_setting: str | None,
           sources: Mapping[VnetId, str] | None = None) -> Layout:
    """Tunnels: one per (peer, level) for each level of the active vnets the peer carries."""
    vnets = sorted(vnets, key=lambda c: c.id)
    level_of = {c.key: c.security for c in vnets if sec.active(c)}
    lay = Layout(
        vnets=vnets,
        active_keys=set(level_of),
        tunnels=[],
        datapath_type=datapath_type,
        mtus={c.key: ipsec.vnet_mtu(c.security, und.mtu, sec.algorithms, und.ip_version)
              for c in vnets},
        local_ip=local_ip_setting or (und.local_ip if sec.reason is None else None),
        credentials=sec.credentials,
        algorithms=sec.algorithms,
        ipsec_other_config=(ipsec.open_vswitch_other_config(sec.credentials)
                            if sec.reason is None else None),
        sources=dict(sources or {}),
    )
    own = {a for a in (lay.local_ip, und.local_ip) if a}
    for peer in peers:
        keys = set(level_of) if peer.vnets is None else set(level_of) & peer.vnets
        wanted = [peer.at_level(level) for level in sorted({level_of[k] for k in keys})]
        try:
            unicast_host(peer.address, "peer")
            if peer.address in own:
                raise ConfigError(f"peer: {peer.address} is this host's own tunnel address")
            interfaces = {spec.name: tunnel_interface(spec, lay) for spec in wanted}
        except ConfigError as exc:
            lay.rejected[peer.address] = str(exc)
            continue
        lay.tunnels += wanted
        lay.interfaces.update(interfaces)
    return lay


def tunnel_interface(spec: TunnelSpec, lay: Layout) -> tuple[str, dict[str, str]]:
    """The Interface type and options of a tunnel (IPsec options for auth/conf); a
    :class:`ConfigError` names the rule a peer breaks."""
    itype, _, options = ipsec.tunnel_spec(
        spec.level, spec.address, lay.local_ip, lay.credentials, lay.algorithms,
        remote_name=spec.origin, dst_port=spec.port if spec.port != M.VXLAN_PORT else None)
    return itype, options
