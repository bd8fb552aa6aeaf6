"""One Open vSwitch host as the operations see it: its database, run directory and the facts
every decision needs (IPsec support, the underlay, its peers)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ovsvnet import desired, ipsec
from ovsvnet import model as M
from ovsvnet.config import VnetConfig
from ovsvnet.desired import Layout, Security, StaticPeer, TunnelSpec, Underlay
from ovsvnet.errors import ConfigError
from ovsvnet.ops import state
from ovsvnet.ovsdb import Ovsdb
from ovsvnet.system import kernel, keyfiles
from ovsvnet.vnetid import VnetId


@dataclass
class Host:
    """One Open vSwitch instance: its database connection and its run directory."""

    db: Ovsdb
    rundir: str
    #: Peers learned by discovery or the registry: the agent fills this; a command (None)
    #: takes what the agent recorded on tunnel ports. Static peers come from OVSDB.
    discovered: list[TunnelSpec] | None = None

    def learned(self) -> list[TunnelSpec]:
        return self.discovered if self.discovered is not None else \
            state.recorded_peers(self.db)


def security(host: Host) -> Security:
    """IPsec needs the kernel datapath, kernel ESP, a running ovs-monitor-ipsec and keys.

    ovsvnet never carries a secure vnet in clear: where any of these is missing its bridge
    stays local (domains on this host still talk to each other) and it is shown as
    inactive with this reason. The one verdict: commands, the agent and doctor all use it.
    """
    settings = dict(host.db.ovs.external_ids)
    support = ipsec.support(state.effective_datapath(host.db),
                            **kernel.ipsec_facts(host.rundir))
    if not support.ok:
        return Security(support.reason)
    try:
        credentials = keyfiles.credentials_from_settings(settings)
        algorithms = ipsec.Algorithms.from_settings(settings)
    except ConfigError as exc:
        return Security(str(exc))
    if credentials is None:
        return Security("no IPsec keys configured: set external_ids:"
                        f"{ipsec.SETTING_SECRET_FILE} or certificates (docs/security.md)")
    return Security(None, credentials, algorithms)


def underlay(host: Host, peers: Iterable[str]) -> Underlay:
    """Tunnel endpoint and underlay MTU: configured values win, else the routes say."""
    from ovsvnet.system import netlink  # pyroute2 costs 0.2 s to import; only when needed

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


def peers(host: Host, statics: list[StaticPeer] | None = None) -> list[TunnelSpec]:
    """This host's peers: static ones from OVSDB overlaid with the discovered ones."""
    return desired.peer_specs(state.static_peers(host.db) if statics is None else statics,
                              host.learned())


def layout_for(host: Host, vnets: list[VnetConfig], und: Underlay,
               statics: list[StaticPeer] | None = None,
               sources: dict[VnetId, str] | None = None) -> Layout:
    return desired.layout(vnets, peers(host, statics), security(host), und,
                          datapath_type=state.datapath_type(host.db),
                          local_ip_setting=state.setting(host.db, M.LOCAL_IP),
                          sources=sources)
