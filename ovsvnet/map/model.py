"""The network as a graph: hosts, the vnets each carries, tunnels by level and state.

Pure: :func:`build` takes the *facts* one host can gather (a plain dict, see
:mod:`ovsvnet.map.gather`: this host's vnets and tunnel ports from OVSDB, its agent's
status, optionally the cluster registry's vnets and chassis) and says what they mean.

Hosts are keyed by OVS ``system-id`` where known (peers announce it, the registry names
chassis by it), else ``ip:<address>``. A host's state:

* ``self``: the host the map was drawn on;
* ``up``: heard by this host's agent within its hold time;
* ``down``: expected to be heard and silent: a static peer, or a registry chassis while the
  agent runs multicast discovery (a host across a router is only heard through relays);
* ``unknown``: nothing can tell (no agent, or the registry alone: it has no heartbeat).

A tunnel is one edge per pair of hosts and security level that share a vnet, with a state:

* ``up``: a clear (``none``) tunnel port with an OpenFlow port;
* ``armed``: a secure tunnel whose IPsec policies are in the kernel (it carries traffic);
* ``inactive``: a secure level that cannot carry traffic (no IPsec here: the vnet stays on
  its host; or the tunnel is not armed);
* ``down``: a host at either end is down, or the tunnel should exist and does not work;
* ``unknown``: between two other hosts, not observable from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

LEVELS = ("none", "auth", "conf")
HOST_STATES = ("self", "up", "down", "unknown")
TUNNEL_STATES = ("up", "armed", "inactive", "down", "unknown")
#: Vnets listed on an edge before "+N more".
EDGE_VNETS = 4


@dataclass
class VnetOnHost:
    """A vnet as one host has it. ``state``: active, inactive (a secure level without
    IPsec), missing (no bridge) from this host's OVSDB; carried (announced or published by
    a peer). A registry vnet that a chassis does not publish as carried: inactive when it is
    secure and the chassis is up to date (agents publish only the vnets that cross hosts:
    a secure vnet without IPsec stays on its host), else pending (not applied yet, or a
    conflict there)."""

    key: str
    level: str
    state: str
    mtu: int | None = None
    domains: int | None = None
    reason: str | None = None


@dataclass
class HostNode:
    key: str
    name: str
    address: str | None
    state: str
    vnets: dict[str, VnetOnHost] = field(default_factory=dict)
    #: True: carries every vnet (a static peer that does not announce; Xen's rule)
    all_vnets: bool = False
    static: bool = False
    registry: bool = False
    notes: list[str] = field(default_factory=list)  # conflicts and warnings, shown in red

    def levels(self) -> dict[str, str]:
        return {k: v.level for k, v in self.vnets.items()}


@dataclass
class Tunnel:
    a: str
    b: str
    level: str
    state: str
    vnets: list[str]
    ports: list[str] = field(default_factory=list)
    mtu: int | None = None
    note: str | None = None

    @property
    def label(self) -> str:
        shown = ", ".join(self.vnets[:EDGE_VNETS])
        if len(self.vnets) > EDGE_VNETS:
            shown += f" +{len(self.vnets) - EDGE_VNETS}"
        parts = [self.level, self.state] + ([f"mtu {self.mtu}"] if self.mtu else [])
        return " · ".join(parts) + f"\nvnet {shown}"


@dataclass
class Graph:
    title: str
    view: str  # "host" or "registry"
    self_key: str
    hosts: dict[str, HostNode] = field(default_factory=dict)
    tunnels: list[Tunnel] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON for ``ovsvnet map --format json``."""
        return {
            "title": self.title, "view": self.view, "self": self.self_key,
            "hosts": [{"key": h.key, "name": h.name, "address": h.address, "state": h.state,
                       "static": h.static, "registry": h.registry, "all_vnets": h.all_vnets,
                       "notes": h.notes,
                       "vnets": [vars(v) for _, v in sorted(h.vnets.items())]}
                      for h in self.hosts.values()],
            "tunnels": [{"a": t.a, "b": t.b, "level": t.level, "state": t.state,
                         "vnets": t.vnets, "ports": t.ports, "mtu": t.mtu, "note": t.note}
                        for t in self.tunnels],
        }


def vnet_key(value: int | str) -> str:
    """The one spelling of a vnet on the map: its 24-bit key in hex, at least 4 digits
    (as ``ovsvnet status`` prints peers' vnets)."""
    return f"{int(value, 16) if isinstance(value, str) else value:04x}"


class _Builder:
    def __init__(self, facts: Mapping[str, Any]):
        self.facts = facts
        self.agent: Mapping[str, Any] | None = facts.get("agent")
        host = facts.get("host") or {}
        self.self_key = str(host.get("system_id") or (self.agent or {}).get("system_id")
                            or "this host")
        self.hosts: dict[str, HostNode] = {}
        self.by_address: dict[str, str] = {}
        #: vnet key -> level, as far as any source tells (this host first)
        self.level_of: dict[str, str] = {}

    # -- nodes --------------------------------------------------------------------------

    def node(self, key: str | None, address: str | None, state: str) -> HostNode:
        """The host known by ``key`` or ``address`` (merged), made if new."""
        found = self.hosts.get(key) if key else None
        if found is None and address:
            found = self.hosts.get(self.by_address.get(address, ""))
        if found is None:
            k = key or f"ip:{address}"
            found = self.hosts[k] = HostNode(k, k, address, state)
        elif key and found.key.startswith("ip:") and found.key != key:
            # a static peer first known by address, now by its id: re-key it
            del self.hosts[found.key]
            found.key = found.name = key
            self.hosts[key] = found
        if address:
            found.address = found.address or address
            self.by_address[address] = found.key
        if _RANK[state] > _RANK[found.state]:
            found.state = state
        return found

    def this_host(self) -> HostNode:
        host = self.facts.get("host") or {}
        me = self.node(self.self_key, host.get("local_ip"), "self")
        me.name = str(host.get("hostname") or self.self_key)
        mtus = host.get("vnet_mtu_by_level") or {}
        for row in self.facts.get("vnets") or []:
            key = vnet_key(row["key"])
            self.level_of[key] = row["security"]
            me.vnets[key] = VnetOnHost(key, row["security"], row["state"],
                                       row.get("mtu") or mtus.get(row["security"]),
                                       len(row.get("domains") or []), row.get("reason"))
        for broken in self.facts.get("broken") or []:
            me.notes.append(f"broken vnet record on bridge {broken['bridge']}")
        agent = self.agent or {}
        for address in agent.get("id_clashes") or []:
            me.notes.append(f"system-id clash: {address} announces this host's id")
        reg = agent.get("registry") or {}
        for vid, why in sorted((reg.get("conflicts") or {}).items()):
            me.notes.append(f"conflict {vid}: {why}")
        if self.agent is None:
            me.notes.append("agent not running: peers are static or recorded only")
        return me

    def peers(self) -> None:
        agent = self.agent or {}
        for p in agent.get("peers") or []:
            heard = p.get("last_seen") is not None
            n = self.node(p.get("origin"), p.get("address"), "up" if heard else "unknown")
            levels = p.get("levels") or {}
            for k in p.get("vnets") or []:
                key = vnet_key(k)
                level = levels.get(k) or self.level_of.get(key, "none")
                n.vnets.setdefault(key, VnetOnHost(key, level, "carried"))
                n.all_vnets = False
        configured = agent.get("static_peers") or {}
        for address in sorted(set(self.facts.get("static_peers") or []) | set(configured)):
            origin = configured.get(address)
            state = "up" if origin else ("down" if self.agent is not None else "unknown")
            n = self.node(origin, address, state)
            n.static = True
            if not n.vnets:
                n.all_vnets = True
        for t in self.facts.get("tunnels") or []:
            n = self.node(t.get("origin"), t["peer"], "unknown")
            if t.get("vnets") is None:
                n.all_vnets = n.all_vnets or not n.vnets
            for k in t.get("vnets") or []:
                key = vnet_key(k)
                n.vnets.setdefault(key, VnetOnHost(key, self.level_of.get(key, t["level"]),
                                                   "carried"))
        for address, why in sorted((agent.get("rejected_peers") or {}).items()):
            self.node(None, address, "unknown").notes.append(f"no tunnel: {why}")

    def registry(self) -> None:
        reg = self.facts.get("registry")
        if not reg:
            return
        vnets = reg.get("vnets") or []
        for v in vnets:
            self.level_of.setdefault(vnet_key(v["key"]), v["security"])
        by_canonical = {v["id"]: vnet_key(v["key"]) for v in vnets if v.get("id")}
        listening = bool(self.agent and self.agent.get("group"))
        names = [ch.get("hostname") for ch in reg.get("chassis") or []]
        for ch in reg.get("chassis") or []:
            heard = ch["name"] in self.hosts and self.hosts[ch["name"]].state in ("up", "self")
            n = self.node(ch["name"], ch.get("address"),
                          "up" if heard else "down" if listening else "unknown")
            n.registry = True
            hostname = ch.get("hostname")
            if hostname and hostname != ch["name"] and names.count(hostname) == 1 \
                    and n.key != self.self_key:  # clones share a hostname: then the id alone
                n.name = f"{hostname} ({ch['name']})"
            carried = {by_canonical.get(c, c) for c in ch.get("vnets") or []}
            for v in vnets:
                key = vnet_key(v["key"])
                if v.get("chassis") and ch["name"] not in v["chassis"]:
                    continue
                if key in n.vnets:
                    continue
                n.vnets[key] = VnetOnHost(key, v["security"], "carried" if key in carried
                                          else "inactive" if v["security"] != "none"
                                          and not ch.get("behind") else "pending")
            if n.vnets:
                n.all_vnets = False
            if ch.get("behind"):
                n.notes.append(f"behind the registry: applied cfg {ch.get('cfg')}, "
                               f"registry at {reg.get('next_cfg')}")
            for vid, why in sorted((ch.get("conflicts") or {}).items()):
                note = f"conflict {by_canonical.get(vid, vid)}: {why}"
                if note not in n.notes and n.key != self.self_key:
                    n.notes.append(note)

    # -- edges --------------------------------------------------------------------------

    def tunnels(self) -> list[Tunnel]:
        me = self.hosts[self.self_key]
        mtus = (self.facts.get("host") or {}).get("vnet_mtu_by_level") or {}
        ports = self.facts.get("tunnels") or []
        armed = set(self.facts.get("armed") or [])
        rejected = (self.agent or {}).get("rejected_peers") or {}
        keys = sorted(self.hosts, key=lambda k: (k != self.self_key, k))
        out = []
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                A, B = self.hosts[a], self.hosts[b]
                for level, shared in _shared(A, B).items():
                    t = Tunnel(a, b, level, "unknown", shared)
                    if "down" in (A.state, B.state):
                        t.state = "down"
                    if A is me:
                        t.mtu = mtus.get(level)
                        mine = [p for p in ports if p["level"] == level
                                and self.by_address.get(p["peer"]) == b]
                        t.ports = sorted(p["port"] for p in mine)
                        if t.state != "down":
                            t.state, t.note = _own_state(level, mine, armed, me, shared,
                                                         rejected.get(B.address or ""))
                    elif t.state != "down" and any(
                            H.vnets.get(k) is not None and H.vnets[k].state == "inactive"
                            for H in (A, B) for k in shared):
                        t.state = "inactive"
                    out.append(t)
        return out


#: Which state wins when two sources disagree about a host.
_RANK = {"unknown": 0, "down": 1, "up": 2, "self": 3}


def _shared(a: HostNode, b: HostNode) -> dict[str, list[str]]:
    """Level -> vnet keys both carry (a host carrying every vnet shares all the other's)."""
    if a.all_vnets and b.all_vnets:
        return {}
    if a.all_vnets:
        common = b.levels()
    elif b.all_vnets:
        common = a.levels()
    else:
        la, lb = a.levels(), b.levels()
        common = {k: la[k] for k in la.keys() & lb.keys()}
    out: dict[str, list[str]] = {}
    for k, level in sorted(common.items()):
        out.setdefault(level, []).append(k)
    return {lvl: out[lvl] for lvl in LEVELS if lvl in out} | \
        {lvl: v for lvl, v in out.items() if lvl not in LEVELS}


def _own_state(level: str, ports: list[Mapping[str, Any]], armed: set[str], me: HostNode,
               shared: Iterable[str], rejected: str | None) -> tuple[str, str | None]:
    """The state of this host's tunnel to one peer at one level, from its port(s)."""
    if ports:
        if any(p.get("ofport") is None for p in ports):
            return "down", "no OpenFlow port (see ovs-vsctl list interface)"
        if level == "none":
            return "up", None
        if all(p["port"] in armed for p in ports):
            return "armed", None
        return "inactive", "IPsec policies not in the kernel: not armed"
    mine = [me.vnets[k] for k in shared if k in me.vnets]
    if level != "none" and mine and all(v.state == "inactive" for v in mine):
        return "inactive", mine[0].reason
    if rejected:
        return "down", rejected
    return "down", "no tunnel port"


def build(facts: Mapping[str, Any]) -> Graph:
    """The graph of what ``facts`` tell (see the module doc for states)."""
    b = _Builder(facts)
    b.this_host()
    b.peers()
    b.registry()
    view = "registry" if facts.get("registry") else "host"
    me = b.hosts[b.self_key]
    title = f"ovsvnet map from {me.name}" + (" with the registry" if view == "registry" else "")
    return Graph(title, view, b.self_key, b.hosts, b.tunnels())
