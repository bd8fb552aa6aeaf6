"""Commands against the cluster registry: create, delete, list, show, status.

A thread-free python-ovs IDL on the registry (comma-separated remotes; like the agents, it
talks to any member connected to its cluster: a member's unix socket, the operators' way
in, leader or not; a TLS member's relay; an insecure member; a follower or a relay
forwards the writes), used the same way as :class:`ovsvnet.ovsdb.Ovsdb`: every command is
one transaction, rebuilt from a fresh view on TRY_AGAIN, so a refused input changes
nothing and two racing commands serialise. The rules and error messages are those of
local vnets (:mod:`ovsvnet.config` checks every field); the clashes that only a cluster
has (a bridge name used by another cluster vnet, domains plugged in on some host) get the
same exit codes.

A transaction cut off by a leader change is retried on the new leader. So that a retry of a
create that did commit is not mistaken for a clash, created rows carry a request token
(``external_ids:ovsvnet-request``) and a retry that finds its own token succeeds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from ssl import SSLCertVerificationError, SSLError
from typing import Any, TypeVar

from ovsvnet import __version__, rules
from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConflictError, NotFoundError, OvsUnreachableError, OvsvnetError
from ovsvnet.ovsdb import Client, SslFiles
from ovsvnet.registry import model as M
from ovsvnet.vnetid import VnetId

#: Reconnect backoff (ms) of commands: short-lived and few, so they retry fast (0.1 s to
#: 0.5 s) while a new leader is elected. Agents: :data:`ovsvnet.registry.follow.BACKOFF_MS`.
COMMAND_BACKOFF_MS = (100, 500)

T = TypeVar("T")
REQUEST = "ovsvnet-request"


class RegistryUnreachableError(OvsUnreachableError):
    """No registry member connected to its cluster answered in time (exit code 5)."""


class RegistryClient:
    """One connection to the registry (a member, or a member's relay); single-threaded,
    explicit ``run()``."""

    def __init__(self, remotes: str, timeout: float = 10.0, ssl: SslFiles | None = None):
        self.remotes = M.normalize_remotes(remotes, scheme="tcp" if ssl is None else "ssl")
        self.timeout = timeout
        self.db = Client(self.remotes, M.SCHEMA_PATH, M.DATA_TABLES, timeout=timeout,
                         leader_only=False, backoff=COMMAND_BACKOFF_MS,
                         unreachable=RegistryUnreachableError,
                         what=f"the registry at {self.remotes}", ssl=ssl, tls_fatal=True)
        try:
            self.db.wait_until(self.db.connected, time.monotonic() + timeout,
                               "member connected to its cluster answered; is it running "
                               "with a majority of its members? (ovsvnet registry status)")
        except SSLError as exc:  # python-ovs lets TLS failures escape its connect and recv
            raise RegistryUnreachableError(f"cannot reach the registry at {self.remotes}: "
                                           f"{tls_failure(exc)}") from None

    def rows(self, table: str) -> list[Any]:
        return self.db.rows(table)

    def close(self) -> None:
        self.db.close()

    def transact(self, build: Callable[[Any], T]) -> T:
        """Run ``build(txn)`` as one transaction that also bumps ``Registry.next_cfg``;
        rebuilt on TRY_AGAIN (a concurrent change, or a leader change) until the timeout."""
        try:
            return self.db.transact(build, before=self._bump).result  # type: ignore[return-value]
        except OvsvnetError as exc:
            if "RBAC rules" not in str(exc):
                raise
            raise OvsvnetError(f"{exc} (a chassis certificate writes only its own rows; "
                               "operators change the registry on a member's socket: "
                               "--registry unix:DIR/registry.sock)") from None

    def _bump(self, txn: Any) -> None:
        rows = self.rows("Registry")
        if rows:
            rows[0].increment("next_cfg")
        else:
            row = self.db.insert(txn, "Registry")
            row.next_cfg = 1

    # -- reading -------------------------------------------------------------------------------

    def vnets(self) -> tuple[dict[VnetId, M.RegistryVnet], dict[str, str]]:
        """The cluster's vnets by id, and rows that break a rule (id -> reason)."""
        snap = M.snapshot_from_rows((_vnet_values(r) for r in self.rows("Vnet")), [])
        return {rv.cfg.id: rv for rv in snap.vnets}, snap.broken

    def next_cfg(self) -> int:
        rows = self.rows("Registry")
        return int(rows[0].next_cfg) if rows else 0


def tls_failure(exc: SSLError) -> str:
    """A TLS handshake failure in words: which side refused whose certificate."""
    reason = str(getattr(exc, "verify_message", "") or exc.reason or exc)
    if isinstance(exc, SSLCertVerificationError):
        return (f"TLS: the member's certificate does not verify against --ca-cert "
                f"({reason}); an agent's CA file is the registry's server CA")
    return (f"TLS: the member refused this certificate ({reason}); the registry accepts "
            "chassis certificates from its chassis CA only")


def _vnet_values(row: Any) -> dict[str, Any]:
    return {c: getattr(row, c) for c in M.VNET_COLUMNS}


def _row_by_id(client: RegistryClient, vid: VnetId) -> Any | None:
    for row in client.rows("Vnet"):
        if row.id == vid.canonical:
            return row
    return None


# -- operations ---------------------------------------------------------------------------------

def resolve(client: RegistryClient, text: str) -> M.RegistryVnet:
    """A cluster vnet named by id (any form), bridge name or vnetif name."""
    vnets, _ = client.vnets()
    return rules.resolve(vnets, lambda rv: rv.cfg, text, "in the registry",
                         "ovsvnet --registry ... list")


def create_many(client: RegistryClient, cfgs: list[VnetConfig], may_exist: bool = False,
                chassis: frozenset[str] = frozenset()) -> set[VnetId]:
    """Define cluster vnets in one transaction (all or none); the ids actually created.

    The rules are a host's (:func:`ovsvnet.rules.check_create`), checked against the other
    cluster vnets; ``may_exist`` accepts an identical definition (same scope too).
    """
    wanted = rules.unique_request((M.RegistryVnet(cfg, chassis) for cfg in cfgs),
                                  lambda rv: rv.cfg)
    token = uuid.uuid4().hex

    def build(txn: Any) -> set[VnetId]:
        existing, _ = client.vnets()

        def ours(vid: VnetId) -> bool:  # our own commit, cut off by a leader change
            row = _row_by_id(client, vid)
            return row is not None and row.external_ids.get(REQUEST) == token

        create = rules.check_create(
            {v: rv.cfg for v, rv in existing.items()}, [rv.cfg for rv in wanted.values()],
            may_exist=may_exist, identical=lambda v: existing[v] == wanted[v],
            where=" in the registry", ours=ours)
        for vid in create:
            if ours(vid):
                continue
            row = client.db.insert(txn, "Vnet")
            for column, value in wanted[vid].to_row().items():
                setattr(row, column, value)
            row.external_ids = {REQUEST: token, "created-by": f"ovsvnet {__version__}"}
        return set(create)

    return client.transact(build)


def attached(client: RegistryClient, vid: VnetId) -> list[str]:
    """Chassis that report domain ports on the vnet (``Chassis_Private.attached``)."""
    return sorted(r.name for r in client.rows("Chassis_Private")
                  if vid.canonical in r.attached)


def delete(client: RegistryClient, text: str, force: bool = False) -> M.RegistryVnet:
    """Delete a cluster vnet; every agent removes its bridge. Refused while a host reports
    domains plugged into it, unless ``force`` (as a local delete)."""
    rv = resolve(client, text)

    def build(txn: Any) -> None:
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


def vnet_view(client: RegistryClient, rv: M.RegistryVnet,
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


def chassis_progress(client: RegistryClient) -> tuple[int, list[dict[str, Any]]]:
    """``Registry.next_cfg`` and each chassis (by name) with the vnets it carries and how far
    it has got: its ``Chassis_Private.cfg`` against that next_cfg."""
    private = {r.name: r for r in client.rows("Chassis_Private")}
    next_cfg = client.next_cfg()
    chassis = []
    for ch in sorted(client.rows("Chassis"), key=lambda r: r.name):
        p = private.get(ch.name)
        cfg = int(p.cfg) if p is not None else None
        chassis.append({"name": ch.name, "hostname": ch.hostname, "address": ch.address,
                        "vnets": sorted(ch.vnets), "cfg": cfg,
                        "behind": cfg is None or cfg < next_cfg,
                        "conflicts": dict(p.conflicts) if p is not None else {}})
    return next_cfg, chassis


def status_view(client: RegistryClient) -> dict[str, Any]:
    """Contents and how far each host has got: Registry.next_cfg against Chassis_Private.cfg."""
    vnets, broken = client.vnets()
    next_cfg, chassis = chassis_progress(client)
    for ch in chassis:
        ch["vnets"] = len(ch["vnets"])
    connected_to = client.db.remote()
    return {"remotes": client.remotes, "connected_to": connected_to,
            "insecure": bool(connected_to and connected_to.startswith("tcp:")),
            "schema_version": M.schema_version(), "next_cfg": next_cfg,
            "vnets": len(vnets), "broken_vnets": broken, "chassis": chassis}


def chassis_delete(client: RegistryClient, name: str) -> None:
    """Forget a host that is gone for good (its agent would publish itself again)."""
    def build(txn: Any) -> None:
        rows = [r for t in ("Chassis", "Chassis_Private") for r in client.rows(t)
                if r.name == name]
        if not rows:
            raise NotFoundError(f"chassis: no chassis '{name}' in the registry")
        for r in rows:
            r.delete()

    client.transact(build)
