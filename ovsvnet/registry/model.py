"""The cluster registry's data model: schema, rows <-> vnet definitions, desired state.

The registry is an OVSDB database (``OVSVNET_Registry``, schema ``registry.ovsschema`` in
this package) served by ovsdb-server, clustered with Raft (3 or 5 members) or standalone.
It holds what many hosts share, so that a vnet is defined once:

* ``Vnet``: one row per cluster-wide vnet (the same fields as a local definition, plus an
  optional ``chassis`` scope: the hosts that carry it; empty = every host).
* ``Chassis``: one row per host running an agent: its name (the OVS system-id), tunnel
  address and the vnets it carries. Every agent reads all of them: they are its peers and
  flood lists, instead of (or beside) multicast discovery.
* ``Chassis_Private``: what a host reports that only operators read (applied ``cfg``, vnets
  with domain ports, conflicts). Kept apart so a host's bookkeeping is not sent to every
  other host (agents monitor only their own row, as OVN does with its Chassis_Private).
* ``Registry``: one row; ``next_cfg`` is bumped by every change, and a host's
  ``Chassis_Private.cfg`` says which change it has applied. Its ``connections`` are the
  ``Connection`` rows ovsdb-server listens for clients on (``--remote=db:...``), each with
  the RBAC role (``RBAC_Role``, ``RBAC_Permission``; ovsdb-server(7) §3.2) its clients get.

Who may write what (schema 1.1.0): agents connect over TLS with a chassis certificate and get
the role :data:`CHASSIS_ROLE`: insert, update and delete only the ``Chassis`` and
``Chassis_Private`` rows whose ``name`` is their certificate's CN, and only the columns they
publish; ``Vnet`` and ``Registry`` are read-only to them. Operators define vnets on a
member's local unix socket, which has no role.

Pure code: no I/O beyond reading the schema file; the IDL clients live in
:mod:`ovsvnet.registry.client` (commands) and :mod:`ovsvnet.registry.follow` (agent).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovsvnet import model as M
from ovsvnet.addresses import unicast_host
from ovsvnet.config import VnetConfig
from ovsvnet.desired import TunnelSpec
from ovsvnet.errors import ConfigError
from ovsvnet.ipsec import CERT_NAME_RE
from ovsvnet.vnetid import VnetId

SCHEMA_PATH = Path(__file__).with_name("registry.ovsschema")
DB_NAME = "OVSVNET_Registry"
#: Default TCP ports: clients (agents, commands) and Raft between members. OVN uses
#: 6641-6644, OVSDB itself 6640.
CLIENT_PORT = 6645
RAFT_PORT = 6646
#: ``Bridge.external_ids`` value of :data:`ovsvnet.model.ORIGIN` on vnets the agent made
#: from the registry (it only ever removes those, never a local vnet).
ORIGIN_REGISTRY = "registry"
#: ``Port.external_ids`` value of :data:`ovsvnet.model.PORT_SOURCE` on tunnels to peers
#: learned from the registry (kept across an agent restart while the registry is away).
SOURCE_REGISTRY = "registry"

VNET_COLUMNS = ["id", "key", "bridge", "vnetif", "security", "chassis", "external_ids"]
CHASSIS_COLUMNS = ["name", "hostname", "address", "port", "vnets", "version", "external_ids"]
PRIVATE_COLUMNS = ["name", "cfg", "attached", "conflicts", "external_ids"]
#: What commands replicate: the registry's contents, not its access control.
DATA_TABLES: dict[str, list[str]] = {
    "Registry": ["next_cfg", "external_ids"], "Vnet": VNET_COLUMNS,
    "Chassis": CHASSIS_COLUMNS, "Chassis_Private": PRIVATE_COLUMNS}

#: The RBAC role of agents' TLS connections.
CHASSIS_ROLE = "ovsvnet-chassis"
#: Table -> the columns a chassis may update in its own rows: exactly what the agent
#: publishes (:meth:`ovsvnet.registry.follow.RegistryFollower.publish`). ``name`` is not
#: among them, so a chassis cannot rename its row into another host's.
CHASSIS_UPDATES: dict[str, list[str]] = {
    "Chassis": ["hostname", "address", "port", "vnets", "version"],
    "Chassis_Private": ["cfg", "attached", "conflicts"],
}
#: The column a row's owner is named in: ovsdb-server compares it with the client's
#: certificate CN (RBAC_Permission.authorization).
OWNER_COLUMN = "name"
#: ovsdb-server's ``--remote`` that reads the client listeners from the database.
CONNECTIONS_REMOTE = f"db:{DB_NAME},Registry,connections"


def schema() -> dict[str, Any]:
    """The registry schema shipped with this package."""
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return data


def schema_version() -> str:
    return str(schema()["version"])


def normalize_remotes(text: str, port: int = CLIENT_PORT, scheme: str = "tcp") -> str:
    """``A,B:7000,tcp:C:6645,ssl:D:6645`` -> OVSDB remotes, comma-separated.

    A bare address (or ``address:port``, ``[v6]:port``) means ``scheme`` (``ssl`` for a
    client that has a certificate, else ``tcp``) on the client port, so ``--registry
    10.0.0.1,10.0.0.2,10.0.0.3`` is enough for a default cluster.
    """
    out = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        if item.startswith(("tcp:", "ssl:", "unix:")):
            out.append(item)
            continue
        host, number = _split_hostport(item)
        try:
            v6 = ipaddress.ip_address(host).version == 6
        except ValueError:
            if not host or not all(c.isalnum() or c in ".-" for c in host):
                raise ConfigError(f"registry: {item!r} is not an address, address:port "
                                  "or OVSDB remote (tcp:ADDR:PORT)") from None
            v6 = False
        if number is not None and not (number.isdigit() and 1 <= int(number) <= 65535):
            raise ConfigError(f"registry: {item!r}: {number!r} is not a TCP port")
        out.append(f"{scheme}:{f'[{host}]' if v6 else host}:{number or port}")
    if not out:
        raise ConfigError("registry: no remote given (e.g. --registry 10.0.0.1,10.0.0.2)")
    return ",".join(out)


def _split_hostport(item: str) -> tuple[str, str | None]:
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"registry: {item!r} is not [ADDRESS]:PORT")
        return host, rest[1:] or None
    if item.count(":") == 1:
        host, number = item.split(":")
        return host, number
    return item, None  # a name, an IPv4 address or a bare IPv6 address


# -- access control -------------------------------------------------------------------------

def client_listener(port: int, address: str, standalone: bool) -> str:
    """The ``pssl:`` target of a TLS registry's Connection row.

    The row is replicated to every member of a cluster, so it cannot name one member's
    address: a cluster listens on the port on every address (IPv4, or every IPv6 and IPv4
    address for IPv6 members), as OVN's ``set-connection pssl:6642`` does. A standalone
    member binds its own address."""
    try:
        v6 = ipaddress.ip_address(address).version == 6
    except ValueError as exc:
        raise ConfigError(f"address: {address!r} is not an IP address") from exc
    if standalone:
        return f"pssl:{port}:[{address}]" if v6 else f"pssl:{port}:{address}"
    return f"pssl:{port}:[::]" if v6 else f"pssl:{port}"


def _set(values: Iterable[str]) -> list[Any]:
    return ["set", sorted(values)]


def chassis_permissions() -> dict[str, dict[str, Any]]:
    """RBAC_Permission rows (OVSDB JSON) of :data:`CHASSIS_ROLE`, by table."""
    return {table: {"table": table, "authorization": _set([OWNER_COLUMN]),
                    "insert_delete": True, "update": _set(columns)}
            for table, columns in CHASSIS_UPDATES.items()}


def seed_transaction(*, registry: bool, rbac: bool, target: str | None) -> list[Any]:
    """An OVSDB ``transact`` request (``[db, op...]``) seeding a registry database.

    ``registry``: insert the one Registry row (a new database; else the row exists and only
    gains the connection); ``rbac``: the chassis role and its permissions; ``target``: the
    TLS client listener (None: a plain-TCP registry, which has no Connection row, since
    ovsdb-server takes a client's identity only from its certificate)."""
    ops: list[Any] = []
    if rbac:
        perms = chassis_permissions()
        for table, row in perms.items():
            ops.append({"op": "insert", "table": "RBAC_Permission", "row": row,
                        "uuid-name": f"perm_{table.lower()}"})
        ops.append({"op": "insert", "table": "RBAC_Role", "row": {
            "name": CHASSIS_ROLE, "permissions": ["map", [
                [table, ["named-uuid", f"perm_{table.lower()}"]] for table in perms]]}})
    conns: list[Any] = []
    if target is not None:
        ops.append({"op": "insert", "table": "Connection", "uuid-name": "conn",
                    "row": {"target": target, "role": CHASSIS_ROLE}})
        conns = [["named-uuid", "conn"]]
    if registry:
        ops.append({"op": "insert", "table": "Registry",
                    "row": {"next_cfg": 0, "connections": ["set", conns]}})
    elif conns:
        ops.append({"op": "mutate", "table": "Registry", "where": [],
                    "mutations": [["connections", "insert", ["set", conns]]]})
    return [DB_NAME, *ops]


# -- rows <-> definitions -------------------------------------------------------------------

@dataclass(frozen=True)
class RegistryVnet:
    """A cluster-wide vnet: the definition every host gets, and where it goes."""

    cfg: VnetConfig
    #: Chassis names that carry it; empty = every chassis.
    chassis: frozenset[str] = frozenset()

    def applies_to(self, name: str) -> bool:
        return not self.chassis or name in self.chassis

    def to_row(self) -> dict[str, Any]:
        """Column values for the ``Vnet`` table (python-ovs IDL conventions)."""
        return {
            "id": self.cfg.id.canonical,
            "key": self.cfg.key,
            "bridge": self.cfg.bridge,
            "vnetif": [self.cfg.vnetif] if self.cfg.vnetif else [],
            "security": self.cfg.security,
            "chassis": sorted(self.chassis),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.cfg.to_dict(), "chassis": sorted(self.chassis)}


def _optional(value: Any) -> str | None:
    """An OVSDB optional column as the IDL gives it ([], [x]) or a plain value."""
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else None
    return None if value in (None, "") else str(value)


def vnet_from_row(row: Mapping[str, Any]) -> RegistryVnet:
    """Check a ``Vnet`` row with the same rules as a local definition (ConfigError if not).

    Rows written by hand (``ovsdb-client transact``) may break rules the schema cannot
    express; such a row is reported and skipped by agents, never half-applied.
    """
    cfg = VnetConfig.build(str(row["id"]), bridge=str(row["bridge"]),
                           vnetif=_optional(row.get("vnetif")),
                           security=str(row.get("security") or "none"))
    key = row.get("key")
    if key is not None and int(key) != cfg.key:
        raise ConfigError(f"key: row says {key}, but id {cfg.id.short} has key {cfg.key}")
    if cfg.id.canonical != row["id"]:
        raise ConfigError(f"id: {row['id']!r} is not canonical ({cfg.id.canonical})")
    return RegistryVnet(cfg, frozenset(str(c) for c in row.get("chassis") or ()))


@dataclass(frozen=True)
class ChassisInfo:
    """What a host publishes about itself: how to reach it and what it carries."""

    name: str
    address: str
    port: int = M.VXLAN_PORT
    vnets: frozenset[str] = frozenset()  # canonical ids
    hostname: str = ""
    version: str = ""

    def to_row(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "port": self.port,
                "vnets": sorted(self.vnets), "hostname": self.hostname,
                "version": self.version}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ChassisInfo:
        return cls(str(row["name"]), str(row.get("address") or ""),
                   int(row.get("port") or M.VXLAN_PORT),
                   frozenset(str(v) for v in row.get("vnets") or ()),
                   str(row.get("hostname") or ""), str(row.get("version") or ""))


# -- desired state ---------------------------------------------------------------------------

@dataclass
class Snapshot:
    """One consistent view of the registry, as an agent last saw it while connected."""

    vnets: list[RegistryVnet] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)  # row id -> reason
    chassis: list[ChassisInfo] = field(default_factory=list)
    next_cfg: int = 0

    def scopes(self) -> dict[str, frozenset[str]]:
        """Canonical id -> the chassis a scoped vnet is kept to (unscoped vnets left out)."""
        return {rv.cfg.id.canonical: rv.chassis for rv in self.vnets if rv.chassis}

    def desired(self, chassis_name: str) -> dict[VnetId, VnetConfig]:
        """The registry vnets this chassis should carry."""
        return {rv.cfg.id: rv.cfg for rv in self.vnets if rv.applies_to(chassis_name)}


def snapshot_from_rows(vnet_rows: Iterable[Mapping[str, Any]],
                       chassis_rows: Iterable[Mapping[str, Any]],
                       next_cfg: int = 0) -> Snapshot:
    snap = Snapshot(next_cfg=next_cfg)
    for row in vnet_rows:
        try:
            snap.vnets.append(vnet_from_row(row))
        except (ConfigError, KeyError, ValueError, TypeError) as exc:
            snap.broken[str(row.get("id"))] = str(exc)
    for row in chassis_rows:
        try:
            snap.chassis.append(ChassisInfo.from_row(row))
        except (KeyError, ValueError, TypeError):
            continue
    return snap


def chassis_peers(chassis: Iterable[ChassisInfo], self_name: str,
                  self_address: str | None,
                  scopes: Mapping[str, frozenset[str]] | None = None,
                  rejected: dict[str, str] | None = None) -> list[TunnelSpec]:
    """Tunnel specs for the other chassis: the vnet keys each carries is its flood list.

    Each row is checked on its own: a bad name, address or port is left out and recorded
    in ``rejected`` (chassis name -> why), never fatal. A chassis claims the vnets it
    carries, but with ``scopes`` (canonical id -> the chassis a registry vnet is scoped
    to) a claim on a vnet scoped to other hosts is ignored: a host cannot pull itself into
    a vnet the operators kept from it. Two rows with one address (a host reinstalled under
    a new name) are merged, carrying the union of their vnets.
    """
    specs: dict[str, TunnelSpec] = {}
    for ch in chassis:
        if ch.name == self_name:
            continue
        try:
            address = _valid_chassis(ch)
        except ConfigError as exc:
            if rejected is not None:
                rejected[ch.name[:64] or "?"] = str(exc)
            continue
        if address == self_address:
            continue
        keys = set()
        for text in ch.vnets:
            try:
                vid = VnetId.parse(text)
            except ConfigError:
                continue
            scope = (scopes or {}).get(vid.canonical)
            if scope and ch.name not in scope:
                continue
            if 0 < vid.value < 1 << 24:
                keys.add(vid.key)
        old = specs.get(address)
        if old is not None:
            keys |= old.vnets or set()
        specs[address] = TunnelSpec(address, ch.port, frozenset(keys), ch.name,
                                    source=SOURCE_REGISTRY)
    return [specs[a] for a in sorted(specs, key=ipaddress.ip_address)]


def _valid_chassis(ch: ChassisInfo) -> str:
    """The chassis's tunnel address, after checking its row (ConfigError names the rule)."""
    if not CERT_NAME_RE.fullmatch(ch.name):
        raise ConfigError(f"name: {ch.name!r} is not a chassis name (a certificate CN)")
    if not 1 <= ch.port <= 65535:
        raise ConfigError(f"port: {ch.port} is not a UDP port (1-65535)")
    return unicast_host(ch.address, "address")


def merge_peers(discovered: Iterable[TunnelSpec],
                registry: Iterable[TunnelSpec]) -> list[TunnelSpec]:
    """Peers from multicast/provisional and from the registry, one spec per address.

    The registry wins where both know an address: its rows are written by each host under
    its own certificate, while anyone on the wire could have sent the announcement. A
    static peer the registry does not know keeps carrying every vnet.
    """
    specs = {d.address: d for d in discovered}
    for r in registry:
        specs[r.address] = r
    return list(specs.values())


@dataclass
class Plan:
    """The local definitions after applying the registry, and what could not be applied."""

    defs: dict[VnetId, VnetConfig]
    #: Vnet ids that are (or become) the registry's on this host.
    registry_ids: set[VnetId]
    added: list[VnetId] = field(default_factory=list)
    removed: list[VnetId] = field(default_factory=list)
    changed: list[VnetId] = field(default_factory=list)
    #: short id -> why the registry's vnet is not on this host
    conflicts: dict[str, str] = field(default_factory=dict)


#: Security levels from weakest to strongest.
STRENGTH = {"none": 0, "auth": 1, "conf": 2}


def plan(local: Mapping[VnetId, VnetConfig], registry_ids: Iterable[VnetId],
         desired: Mapping[VnetId, VnetConfig],
         foreign: Callable[[str], bool] = lambda name: False,
         plugged: Callable[[VnetId], list[str]] = lambda vid: []) -> Plan:
    """Fold the registry's ``desired`` vnets into this host's definitions.

    ``local`` is every vnet defined on the host, ``registry_ids`` those of them the agent
    made from the registry (only these are ever changed or removed). A local vnet with the
    same id wins; a registry vnet whose bridge or vnetif name is taken (by another vnet or,
    per ``foreign(name)``, by something in OVSDB that is not ovsvnet's) is left out and
    reported, so one bad definition never blocks the others.

    What a registry row change can never do on its own: lower a vnet's security level
    (the old definition is kept and the change reported: lowering a level means deleting
    and re-creating the vnet), or remove a vnet whose bridge has domains plugged in
    (``plugged(vid)`` names them; it stays, reported, until they are unplugged).
    """
    ours = set(registry_ids) & set(local)
    result = Plan({}, set())
    for vid in sorted(ours - set(desired), key=lambda v: v.value):
        domains = plugged(vid)
        if domains:
            result.conflicts[vid.short] = (
                "deleted or rescoped in the registry while domains are plugged in ("
                + ", ".join(domains) + "); kept until they are unplugged")
            result.registry_ids.add(vid)
        else:
            result.removed.append(vid)
    defs = {vid: cfg for vid, cfg in local.items()
            if vid not in ours or vid in desired or vid in result.registry_ids}
    result.defs = defs
    lowered = {vid for vid in ours & set(desired)
               if STRENGTH[desired[vid].security] < STRENGTH[local[vid].security]}
    names: dict[str, VnetId] = {}
    for vid, cfg in defs.items():
        if vid in ours and vid in desired and desired[vid] != cfg and vid not in lowered:
            continue  # a changed registry vnet: its names are checked below like a new one
        for n in (cfg.bridge, cfg.vnetif):
            if n:
                names[n] = vid
    for vid in sorted(desired, key=lambda v: v.value):
        cfg = desired[vid]
        if vid in local and vid not in ours:
            result.conflicts[vid.short] = ("a local vnet with this id exists on this host "
                                           "(the local one wins)")
            continue
        if vid in ours and local[vid] == cfg:
            result.registry_ids.add(vid)
            continue
        if vid in lowered:
            result.conflicts[vid.short] = (
                f"the registry lowers its security from {local[vid].security} to "
                f"{cfg.security}: refused (the vnet keeps {local[vid].security}); to lower "
                "a level, delete the vnet and create it again")
            result.registry_ids.add(vid)
            continue
        clash = None
        old_names = {local[vid].bridge, local[vid].vnetif} if vid in ours else set()
        for what, n in (("bridge", cfg.bridge), ("vnetif", cfg.vnetif)):
            if not n:
                continue
            if n in names and names[n] != vid:
                clash = f"{what} '{n}' is used by vnet {names[n].short} on this host"
            elif n not in names and n not in old_names and foreign(n):
                clash = f"{what} '{n}' already exists in this host's OVSDB, not as ovsvnet's"
            if clash:
                break
        if clash:
            result.conflicts[vid.short] = clash
            if vid in ours:  # keep the old definition rather than lose the vnet
                result.registry_ids.add(vid)
            continue
        if vid in ours:
            result.changed.append(vid)
        else:
            result.added.append(vid)
        defs[vid] = cfg
        result.registry_ids.add(vid)
        for n in (cfg.bridge, cfg.vnetif):
            if n:
                names[n] = vid
    return result
