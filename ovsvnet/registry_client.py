"""Commands against the cluster registry: create, delete, list, show, status.

A thread-free python-ovs IDL on the registry (comma-separated remotes, ``leader_only``: it
talks only to the Raft leader and moves to the new one when the leader changes), used the
same way as :class:`ovsvnet.ovsdb.Ovsdb`: every command is one transaction, rebuilt from a
fresh view on TRY_AGAIN, so a refused input changes nothing and two racing commands
serialise. The rules and error messages are those of local vnets (:mod:`ovsvnet.config`
checks every field); the clashes that only a cluster has (a bridge name used by another
cluster vnet, domains plugged in on some host) get the same exit codes.

A transaction cut off by a leader change is retried on the new leader. So that a retry of a
create that did commit is not mistaken for a clash, created rows carry a request token
(``external_ids:ovsvnet-request``) and a retry that finds its own token succeeds.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import ovs.db.idl
import ovs.poller

from ovsvnet import __version__
from ovsvnet import registry as R
from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConfigError, ConflictError, NotFoundError, OvsUnreachableError, \
    OvsvnetError
from ovsvnet.ovsdb import _short_error
from ovsvnet.registry_follow import COMMAND_BACKOFF_MS, tune_session
from ovsvnet.vnetid import VnetId

T = TypeVar("T")
REQUEST = "ovsvnet-request"


class RegistryUnreachableError(OvsUnreachableError):
    """No registry member answered as leader within the timeout (exit code 5)."""


class RegistryClient:
    """One connection to the registry (its leader); single-threaded, explicit ``run()``."""

    def __init__(self, remotes: str, timeout: float = 10.0):
        self.remotes = R.normalize_remotes(remotes)
        self.timeout = timeout
        helper = ovs.db.idl.SchemaHelper(location=str(R.SCHEMA_PATH))
        helper.register_all()
        self.idl = ovs.db.idl.Idl(self.remotes, helper, leader_only=True)
        tune_session(self.idl, COMMAND_BACKOFF_MS)
        self._wait(lambda: self._ready(), time.monotonic() + timeout,
                   "cluster leader answered")

    # -- connection ------------------------------------------------------------------------

    def _ready(self) -> bool:
        return bool(self.idl._session.is_connected()) and \
            self.idl.state == self.idl.IDL_S_MONITORING

    def _wait(self, done: Callable[[], bool], deadline: float, what: str) -> None:
        while True:
            self.idl.run()
            if done():
                return
            if time.monotonic() >= deadline:
                raise RegistryUnreachableError(
                    f"cannot reach the registry at {self.remotes}: no {what} within "
                    f"{self.timeout:g}s; is it running with a majority of its members? "
                    "(ovsvnet registry status)")
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(int(max(0.0, min(deadline - time.monotonic(), 0.5)) * 1000))
            poller.block()

    def rows(self, table: str) -> list[Any]:
        return list(self.idl.tables[table].rows.values())

    def close(self) -> None:
        self.idl.close()

    # -- transactions ------------------------------------------------------------------------

    def transact(self, build: Callable[[ovs.db.idl.Transaction], T]) -> T:
        """Run ``build(txn)`` as one transaction that also bumps ``Registry.next_cfg``;
        rebuilt on TRY_AGAIN (a concurrent change, or a leader change) until the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            self._wait(self._ready, deadline, "cluster leader answered")
            seqno = self.idl.change_seqno
            txn = ovs.db.idl.Transaction(self.idl)
            try:
                result = build(txn)
                self._bump(txn)
            except BaseException:
                txn.abort()
                raise
            status = txn.commit_block()
            if status == txn.TRY_AGAIN:
                self._wait(lambda: self.idl.change_seqno != seqno or not self._ready(),
                           deadline, "leader answered a retry")
                continue
            if status not in (txn.SUCCESS, txn.UNCHANGED):
                detail = txn.get_error() or status
                if "constraint violation" in detail:
                    raise ConflictError(f"the registry refused the change: "
                                        f"{_short_error(detail)}")
                raise OvsvnetError(f"the registry refused the change: {_short_error(detail)}")
            return result

    def _bump(self, txn: ovs.db.idl.Transaction) -> None:
        rows = self.rows("Registry")
        if rows:
            rows[0].increment("next_cfg")
        else:
            row = txn.insert(self.idl.tables["Registry"])
            row.next_cfg = 1

    # -- reading -------------------------------------------------------------------------------

    def vnets(self) -> tuple[dict[VnetId, R.RegistryVnet], dict[str, str]]:
        """The cluster's vnets by id, and rows that break a rule (id -> reason)."""
        snap = R.snapshot_from_rows((_vnet_values(r) for r in self.rows("Vnet")), [])
        return {rv.cfg.id: rv for rv in snap.vnets}, snap.broken

    def next_cfg(self) -> int:
        rows = self.rows("Registry")
        return int(rows[0].next_cfg) if rows else 0


def _vnet_values(row: Any) -> dict[str, Any]:
    return {c: getattr(row, c) for c in R.VNET_COLUMNS}


def _row_by_id(client: RegistryClient, vid: VnetId) -> Any | None:
    for row in client.rows("Vnet"):
        if row.id == vid.canonical:
            return row
    return None


# -- operations ---------------------------------------------------------------------------------

def resolve(client: RegistryClient, text: str) -> R.RegistryVnet:
    """A cluster vnet named by id (any form), bridge name or vnetif name."""
    vnets, _ = client.vnets()
    try:
        vid: VnetId | None = VnetId.parse(text)
    except ConfigError:
        vid = None
    if vid is not None and vid in vnets:
        return vnets[vid]
    for rv in vnets.values():
        if text in (rv.cfg.bridge, rv.cfg.vnetif):
            return rv
    raise NotFoundError(f"vnet: no vnet '{text}' in the registry (ovsvnet --registry ... "
                        "list shows them)")


def create_many(client: RegistryClient, cfgs: list[VnetConfig], may_exist: bool = False,
                chassis: frozenset[str] = frozenset()) -> set[VnetId]:
    """Define cluster vnets in one transaction (all or none); the ids actually created.

    The same rules as :func:`ovsvnet.ops.create_many`: an id, bridge or vnetif already used
    by another cluster vnet is a conflict; ``may_exist`` accepts an identical definition.
    """
    seen: dict[VnetId, R.RegistryVnet] = {}
    for cfg in cfgs:
        rv = R.RegistryVnet(cfg, chassis)
        if cfg.id in seen and seen[cfg.id] != rv:
            raise ConflictError(f"id: vnet {cfg.id.short} is given twice, differently")
        seen[cfg.id] = rv
    token = uuid.uuid4().hex
    created: set[VnetId] = set()

    def build(txn: ovs.db.idl.Transaction) -> set[VnetId]:
        created.clear()
        existing, _ = client.vnets()
        names = {n: rv for rv in existing.values() for n in (rv.cfg.bridge, rv.cfg.vnetif) if n}
        for vid, rv in seen.items():
            old = existing.get(vid)
            if old is not None:
                row = _row_by_id(client, vid)
                if row is not None and row.external_ids.get(REQUEST) == token:
                    created.add(vid)  # our own commit, cut off by a leader change
                    continue
                if may_exist and old == rv:
                    continue
                if may_exist:
                    raise ConflictError(f"id: vnet {vid.short} already exists in the registry "
                                        f"with a different definition: {old.cfg.to_sxp()}")
                raise ConflictError(f"id: vnet {vid.short} already exists in the registry "
                                    f"(bridge {old.cfg.bridge}); --may-exist accepts an "
                                    "identical definition")
            for field_name in ("bridge", "vnetif"):
                name = getattr(rv.cfg, field_name)
                if name and name in names:
                    raise ConflictError(f"{field_name}: '{name}' is already used by vnet "
                                        f"{names[name].cfg.id.short} in the registry")
            row = txn.insert(client.idl.tables["Vnet"])
            for column, value in rv.to_row().items():
                setattr(row, column, value)
            row.external_ids = {REQUEST: token, "created-by": f"ovsvnet {__version__}"}
            created.add(vid)
            names.update({n: rv for n in (rv.cfg.bridge, rv.cfg.vnetif) if n})
        return set(created)

    return client.transact(build)


def attached(client: RegistryClient, vid: VnetId) -> list[str]:
    """Chassis that report domain ports on the vnet (``Chassis_Private.attached``)."""
    return sorted(r.name for r in client.rows("Chassis_Private")
                  if vid.canonical in r.attached)


def delete(client: RegistryClient, text: str, force: bool = False) -> R.RegistryVnet:
    """Delete a cluster vnet; every agent removes its bridge. Refused while a host reports
    domains plugged into it, unless ``force`` (as a local delete)."""
    rv = resolve(client, text)

    def build(txn: ovs.db.idl.Transaction) -> None:
        row = _row_by_id(client, rv.cfg.id)
        if row is None:
            raise NotFoundError(f"vnet: no vnet '{text}' in the registry")
        hosts = attached(client, rv.cfg.id)
        if hosts and not force:
            raise ConflictError(f"vnet {rv.cfg.id.short} still has domains plugged in on "
                                f"{', '.join(hosts)}; unplug them or use --force")
        row.delete()

    client.transact(build)
    return rv


def carriers(client: RegistryClient) -> dict[str, list[str]]:
    """Canonical vnet id -> the chassis that carry it."""
    out: dict[str, list[str]] = {}
    for ch in client.rows("Chassis"):
        for v in ch.vnets:
            out.setdefault(v, []).append(ch.name)
    return {k: sorted(v) for k, v in out.items()}


def vnet_view(client: RegistryClient, rv: R.RegistryVnet,
              carried: dict[str, list[str]] | None = None) -> dict[str, Any]:
    carried = carriers(client) if carried is None else carried
    data = rv.to_dict()
    data["source"] = "registry"
    data["carried_by"] = carried.get(rv.cfg.id.canonical, [])
    data["hosts"] = len(data["carried_by"])
    data["domains_on"] = attached(client, rv.cfg.id)
    return data


def list_view(client: RegistryClient) -> tuple[list[dict[str, Any]], dict[str, str]]:
    vnets, broken = client.vnets()
    carried = carriers(client)
    return [vnet_view(client, rv, carried) for _, rv in sorted(vnets.items(),
                                                              key=lambda i: i[0].value)], broken


@dataclass
class ChassisView:
    name: str
    hostname: str
    address: str
    vnets: int
    cfg: int | None
    conflicts: dict[str, str]


def status_view(client: RegistryClient) -> dict[str, Any]:
    """Contents and how far each host has got: Registry.next_cfg against Chassis_Private.cfg."""
    vnets, broken = client.vnets()
    private = {r.name: r for r in client.rows("Chassis_Private")}
    next_cfg = client.next_cfg()
    chassis = []
    for ch in sorted(client.rows("Chassis"), key=lambda r: r.name):
        p = private.get(ch.name)
        cfg = int(p.cfg) if p is not None else None
        chassis.append({"name": ch.name, "hostname": ch.hostname, "address": ch.address,
                        "vnets": len(ch.vnets), "cfg": cfg,
                        "behind": cfg is None or cfg < next_cfg,
                        "conflicts": dict(p.conflicts) if p is not None else {}})
    session = client.idl._session
    return {"remotes": client.remotes, "connected_to": session.get_name(),
            "schema_version": R.schema_version(), "next_cfg": next_cfg,
            "vnets": len(vnets), "broken_vnets": broken, "chassis": chassis}


def chassis_delete(client: RegistryClient, name: str) -> None:
    """Forget a host that is gone for good (its agent would publish itself again)."""
    def build(txn: ovs.db.idl.Transaction) -> None:
        rows = [r for t in ("Chassis", "Chassis_Private") for r in client.rows(t)
                if r.name == name]
        if not rows:
            raise NotFoundError(f"chassis: no chassis '{name}' in the registry")
        for r in rows:
            r.delete()

    client.transact(build)
