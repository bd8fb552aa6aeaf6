"""What one host knows about the network, as the plain dict :func:`ovsvnet.map.model.build`
takes: its vnets and tunnel ports (OVSDB), its agent's status (control socket) and, when
asked, the cluster registry's vnets and chassis. Read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovsvnet import model as M
from ovsvnet.ops import state, views
from ovsvnet.ops.host import Host

if TYPE_CHECKING:
    from ovsvnet.registry.client import RegistryClient


def tunnel_ports(host: Host) -> list[dict[str, Any]]:
    """ovsvnet's tunnel ports: name, peer, level, OpenFlow port, origin, vnet keys (None:
    every vnet, a static peer's)."""
    transport = host.db.bridge(M.TRANSPORT_BRIDGE)
    out = []
    for port in transport.ports if transport is not None else []:
        ext = port.external_ids
        if ext.get(M.ROLE) != M.ROLE_TUNNEL:
            continue
        vnets = ext.get(M.PORT_VNETS)
        out.append({"port": port.name, "peer": ext.get(M.PORT_PEER, ""),
                    "level": ext.get(M.PORT_LEVEL, "none"),
                    "ofport": state.ofport(port.interfaces[0]),
                    "origin": ext.get(M.PORT_ORIGIN), "source": ext.get(M.SOURCE),
                    "vnets": [k for k in vnets.split(",") if k] if vnets is not None else None})
    return sorted(out, key=lambda t: t["port"])


def registry_facts(client: RegistryClient) -> dict[str, Any]:
    """The registry's vnets (with their scope) and chassis (with what each reports)."""
    from ovsvnet.registry.client import chassis_progress  # only with --registry
    vnets, broken = client.vnets()
    next_cfg, chassis = chassis_progress(client)
    return {"next_cfg": next_cfg, "broken": broken, "chassis": chassis,
            "vnets": [{"id": rv.cfg.id.canonical, "key": rv.cfg.key,
                       "security": rv.cfg.security, "chassis": sorted(rv.chassis)}
                      for _, rv in sorted(vnets.items(), key=lambda i: i[0].value)]}


def facts(host: Host, registry: RegistryClient | None = None) -> dict[str, Any]:
    """Everything the map is drawn from; JSON-ready (``ovsvnet map --format facts``)."""
    from ovsvnet.agent.control import query
    from ovsvnet.ops.sync import secure_arming

    agent = query(host.rundir)
    vnets, broken = views.list_view(host)
    ext = host.db.ovs.external_ids
    host_view = views.host_view(host)
    return {
        "host": {**host_view, "system_id": ext.get("system-id"),
                 "hostname": ext.get("hostname")},
        "vnets": [{k: v[k] for k in ("short", "key", "security", "state", "mtu", "domains",
                                     "reason", "source")} for v in vnets],
        "broken": [{"bridge": b.bridge, "reason": b.reason} for b in broken],
        "tunnels": tunnel_ports(host),
        "static_peers": [p.address for p in state.static_peers(host.db)],
        "armed": sorted(secure_arming(host)),
        "agent": agent if isinstance(agent, dict) else None,
        "registry": registry_facts(registry) if registry is not None else None,
    }

