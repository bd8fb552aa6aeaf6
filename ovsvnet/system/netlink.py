"""What the kernel says about this host's network (pyroute2, read-only): routes, addresses.

The tunnel endpoint is the source address the kernel would use towards a peer, and the
underlay MTU is the MTU of the device that route leaves by; both are what a packet to that
peer will really meet. Nothing here changes a link, an address or a route.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError


@dataclass(frozen=True)
class Underlay:
    local_ip: str | None
    device: str | None
    mtu: int | None


def _link_info(ipr: IPRoute, index: int) -> tuple[str | None, int | None]:
    links = ipr.get_links(index)
    if not links:
        return None, None
    return links[0].get_attr("IFLA_IFNAME"), links[0].get_attr("IFLA_MTU")


def route_to(address: str) -> Underlay:
    """Source address, device and MTU of the route to ``address`` (a lookup, no traffic)."""
    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=address)
        except NetlinkError:
            return Underlay(None, None, None)
        if not routes:
            return Underlay(None, None, None)
        route = routes[0]
        device, mtu = _link_info(ipr, route.get_attr("RTA_OIF"))
        metrics = route.get_attr("RTA_METRICS")
        if metrics is not None and metrics.get_attr("RTAX_MTU"):
            mtu = metrics.get_attr("RTAX_MTU")
        return Underlay(route.get_attr("RTA_PREFSRC"), device, mtu)


def default_underlay() -> Underlay:
    """The underlay when there is no peer yet: the default route, else the first address."""
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=2):
            oif = route.get_attr("RTA_OIF")
            device, mtu = _link_info(ipr, oif)
            addrs = ipr.get_addr(family=2, index=oif)
            local = addrs[0].get_attr("IFA_ADDRESS") if addrs else None
            return Underlay(local, device, mtu)
        for addr in ipr.get_addr(family=2):
            if addr.get("scope", 0) == 0:  # global scope
                device, mtu = _link_info(ipr, addr["index"])
                return Underlay(addr.get_attr("IFA_ADDRESS"), device, mtu)
    return Underlay(None, None, None)


def detect(peers: list[str]) -> Underlay:
    """The underlay towards the first peer that has a route, else the default one."""
    for peer in peers:
        found = route_to(peer)
        if found.local_ip or found.mtu:
            return found
    return default_underlay()


def addresses_by_link() -> dict[str, list[str]]:
    """Interface name -> its addresses (``addr/prefixlen``) in this network namespace."""
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        out: dict[str, list[str]] = {}
        for a in ipr.get_addr():
            name = names.get(a["index"])
            if name:
                out.setdefault(name, []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        return out


def local_addresses() -> set[str]:
    """Every address configured in this network namespace."""
    with IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr() if a.get_attr("IFA_ADDRESS")}
