"""Static peers: the hosts this one always has tunnels to (Xen's ``vn peer-add``)."""

from __future__ import annotations

import ipaddress
import re
import socket

from ovsvnet import model as M
from ovsvnet.addresses import unicast_host
from ovsvnet.desired import StaticPeer
from ovsvnet.errors import ConfigError, ConflictError, NotFoundError
from ovsvnet.ops.host import Host
from ovsvnet.ops.sync import Plan, SyncReport, apply_flows, commit


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


def peer_add(host: Host, text: str, port: int = M.VXLAN_PORT, may_exist: bool = False,
             plan: Plan | None = None) -> tuple[str, str | None, SyncReport]:
    """Add a static peer. Returns (address, the port it had before or None, report).

    The same peer with the same port is no error (Xen's ``vn peer-add`` was idempotent, and
    scripts re-run it); with another port it is a conflict unless ``may_exist``, which
    then changes the port (as ``ovs-vsctl --may-exist add-port ... -- set`` converges).
    """
    if not 1 <= port <= 65535:
        raise ConfigError(f"port: {port} is not a UDP port (1-65535)")
    address = unicast_host(resolve_address(text), "peer")
    key = M.PEER_PREFIX + address
    before: str | None = None

    def change(statics: list[StaticPeer]) -> list[StaticPeer]:
        nonlocal before
        before = host.db.ovs.external_ids.get(key)
        if before is not None and before != str(port) and not may_exist:
            raise ConflictError(f"peer: {address} already exists with port {before}; "
                                f"--may-exist changes it to {port}")
        if before != str(port):
            host.db.ovs.setkey("external_ids", key, str(port))
        return [p for p in statics if p.address != address] + [StaticPeer(address, port)]

    commit(host, lambda defs: defs, change, new_peer=address, plan=plan)
    return address, before, (apply_flows(host, {M.TRANSPORT_BRIDGE}) if plan is None
                             else SyncReport())


def peer_delete(host: Host, text: str, plan: Plan | None = None) -> tuple[str, SyncReport]:
    address = resolve_address(text)
    key = M.PEER_PREFIX + address

    def change(statics: list[StaticPeer]) -> list[StaticPeer]:
        if key not in host.db.ovs.external_ids:
            raise NotFoundError(f"peer: {address} is not a static peer of this host")
        host.db.ovs.delkey("external_ids", key)
        return [p for p in statics if p.address != address]

    commit(host, lambda defs: defs, change, plan=plan)
    return address, apply_flows(host, {M.TRANSPORT_BRIDGE}) if plan is None else SyncReport()
