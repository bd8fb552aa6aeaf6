"""Which addresses may be a tunnel endpoint (pure): one rule for every way a peer arrives.

A static peer typed by an operator, an address in OVSDB, one claimed by an announcement and
one in a registry Chassis row are all checked here, so a loopback, broadcast or multicast
address cannot slip in through the laxest door.
"""

from __future__ import annotations

import ipaddress

from ovsvnet.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def unicast_host(text: str, field: str = "peer") -> str:
    """The canonical text of a unicast host address, or :class:`ConfigError` naming the rule.

    Refused: anything that is not an IP address, scoped addresses (``fe80::1%eth0``),
    IPv4-mapped IPv6 (``::ffff:127.0.0.1``: give the IPv4 address), unspecified, loopback,
    multicast, broadcast, link-local, "this network" (0.0.0.0/8) and reserved ranges
    (240.0.0.0/4).
    """
    if not isinstance(text, str) or not text or len(text) > 64:
        raise ConfigError(f"{field}: {text!r} is not an IP address")
    if "%" in text:
        raise ConfigError(f"{field}: {text} has a scope; tunnel endpoints are global "
                          "addresses")
    try:
        ip: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{field}: {text!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        raise ConfigError(f"{field}: {ip} is an IPv4-mapped address; give {ip.ipv4_mapped}")
    why = _not_unicast(ip)
    if why:
        raise ConfigError(f"{field}: {ip} is {why}, not a unicast host address")
    return str(ip)


def _not_unicast(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "the broadcast address"
        if ip in ipaddress.IPv4Network("0.0.0.0/8"):
            return 'in "this network" (0.0.0.0/8)'
        if ip in ipaddress.IPv4Network("240.0.0.0/4"):
            return "reserved (240.0.0.0/4)"
    elif ip.is_reserved:
        return "reserved"
    return None


def is_unicast_host(text: str) -> bool:
    try:
        unicast_host(text)
    except ConfigError:
        return False
    return True
