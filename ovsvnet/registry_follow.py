"""The agent's side of the cluster registry: follow it, publish this host, never block.

:class:`RegistryFollower` keeps a python-ovs IDL on the registry inside the agent's single
loop (no thread): the agent calls :meth:`run` every turn and adds :meth:`wait` to its
poller. The IDL talks to the Raft leader only and moves by itself when the leader changes
or a member dies; it reconnects with backoff while nobody answers.

What the agent gets from it is a :class:`~ovsvnet.registry.Snapshot`, the last complete view
taken *while connected*. While the registry is unreachable the snapshot simply stays as it
was: the agent keeps every bridge, tunnel and flow it has (it never tears down because the
registry is away) and converges on the fresh copy once a leader answers again.

Publishing is one transaction at a time, never waited for: the Chassis row (address and
carried vnets: what the other hosts need) and the Chassis_Private row (applied cfg, domain
ports, conflicts: what operators need; agents monitor only their own).
"""

from __future__ import annotations

import time
from typing import Any

import ovs.db.idl
import ovs.poller

from ovsvnet import registry as R
from ovsvnet.reconcile import TunnelSpec


#: Reconnect backoff (ms). python-ovs doubles from 1 s up to 8 s, and while a new leader is
#: elected (1-2 s) every member turns us away, so each leader change would cost up to 8 s.
#: Agents: 0.25 s doubling to 2 s (a few attempts per agent per election); commands, which
#: are short-lived and few: 0.1 s to 0.5 s.
AGENT_BACKOFF_MS = (250, 2000)
COMMAND_BACKOFF_MS = (100, 500)


def tune_session(idl: ovs.db.idl.Idl, backoff: tuple[int, int] = AGENT_BACKOFF_MS) -> None:
    """Faster failover than python-ovs' defaults (whose setter will not go below 1 s)."""
    reconnect = idl._session.reconnect
    reconnect.min_backoff, reconnect.max_backoff = backoff


class RegistryFollower:
    def __init__(self, remotes: str, name: str):
        self.remotes = R.normalize_remotes(remotes)
        self.name = name
        helper = ovs.db.idl.SchemaHelper(location=str(R.SCHEMA_PATH))
        helper.register_columns("Registry", ["next_cfg"])
        helper.register_columns("Vnet", [c for c in R.VNET_COLUMNS if c != "external_ids"])
        helper.register_columns("Chassis", [c for c in R.CHASSIS_COLUMNS
                                            if c != "external_ids"])
        helper.register_columns("Chassis_Private", ["name", "cfg", "attached", "conflicts"])
        self.idl = ovs.db.idl.Idl(self.remotes, helper, leader_only=True)
        tune_session(self.idl)
        self.idl.cond_change("Chassis_Private", [["name", "==", name]])
        self.snapshot: R.Snapshot | None = None
        #: peers recorded on tunnel ports before a restart, used until the first snapshot
        self.resumed: list[TunnelSpec] = []
        self._seen = -1
        self._txn: ovs.db.idl.Transaction | None = None
        self._published: tuple[Any, ...] | None = None
        self._checked = -1
        self._own_uuid: dict[str, Any] = {}
        self.connected_since: float | None = None
        self.disconnects = 0
        self.snapshots = 0
        self.publish_errors = 0
        self.last_error: str | None = None

    # -- connection ----------------------------------------------------------------------------

    def connected(self) -> bool:
        return bool(self.idl._session.is_connected()) and \
            self.idl.state == self.idl.IDL_S_MONITORING

    def run(self) -> bool:
        """Process what the registry sent; True when the snapshot changed."""
        self.idl.run()
        self._poll_txn()
        up = self.connected()
        if up and self.connected_since is None:
            self.connected_since = time.monotonic()
            # when this leader goes, try every other member at once before backing off
            self.idl._session.reset_backoff()
        elif not up and self.connected_since is not None:
            self.connected_since = None
            self.disconnects += 1
            self._published = None  # republish after reconnecting (the row may be gone)
        if not up or self.idl.change_seqno == self._seen:
            return False
        self._seen = self.idl.change_seqno
        before = self.snapshot
        self.snapshot = self._take()
        self.snapshots += 1
        return before is None or \
            _fingerprint(before, self.name) != _fingerprint(self.snapshot, self.name)

    def _take(self) -> R.Snapshot:
        regs = list(self.idl.tables["Registry"].rows.values())
        return R.snapshot_from_rows(
            ({c: getattr(r, c) for c in R.VNET_COLUMNS if c != "external_ids"}
             for r in self.idl.tables["Vnet"].rows.values()),
            ({c: getattr(r, c) for c in R.CHASSIS_COLUMNS if c != "external_ids"}
             for r in self.idl.tables["Chassis"].rows.values()),
            int(regs[0].next_cfg) if regs else 0)

    def wait(self, poller: ovs.poller.Poller) -> None:
        self.idl.wait(poller)

    def close(self) -> None:
        self.idl.close()

    # -- what the agent uses ------------------------------------------------------------------

    def peers(self, self_address: str | None) -> list[TunnelSpec]:
        """Other chassis as tunnel specs: from the last snapshot, else as resumed."""
        if self.snapshot is None:
            return list(self.resumed)
        return R.chassis_peers(self.snapshot.chassis, self.name, self_address)

    def leader(self) -> str | None:
        return self.idl._session.get_name() if self.connected() else None

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, chassis: R.ChassisInfo, cfg: int, attached: set[str],
                conflicts: dict[str, str]) -> None:
        """Bring this host's rows up to date (no-op when unchanged or a commit is pending)."""
        if not self.connected() or self._txn is not None:
            return
        wanted = (chassis, cfg, tuple(sorted(attached)), tuple(sorted(conflicts.items())))
        seqno = self.idl.change_seqno
        if wanted == self._published and (seqno == self._checked or
                                          self._rows_match(chassis)):
            self._checked = seqno  # rows re-read only when the registry sent something
            return
        txn = ovs.db.idl.Transaction(self.idl)
        row = self._own("Chassis")
        fresh = row is None
        if row is None:
            row = txn.insert(self.idl.tables["Chassis"])
        for column, value in chassis.to_row().items():
            if fresh or getattr(row, column) != value:
                setattr(row, column, value)
        private = {"name": chassis.name, "cfg": cfg, "attached": sorted(attached),
                   "conflicts": dict(conflicts)}
        priv = self._own("Chassis_Private")
        fresh = priv is None
        if priv is None:
            priv = txn.insert(self.idl.tables["Chassis_Private"])
        for column, value in private.items():
            current = None if fresh else getattr(priv, column)
            if fresh or (sorted(current) if column == "attached" else current) != value:
                setattr(priv, column, value)
        status = txn.commit()
        self._published = wanted
        if status == txn.INCOMPLETE:
            self._txn = txn
        else:
            self._done(txn, status)

    def _own(self, table: str) -> Any | None:
        """This host's row (remembered by uuid: a scan of 1000 rows per loop turn showed
        as idle CPU)."""
        rows = self.idl.tables[table].rows
        row = rows.get(self._own_uuid.get(table))
        if row is not None and row.name == self.name:
            return row
        for row in rows.values():
            if row.name == self.name:
                self._own_uuid[table] = row.uuid
                return row
        return None

    def _rows_match(self, chassis: R.ChassisInfo) -> bool:
        row = self._own("Chassis")
        return row is not None and self._own("Chassis_Private") is not None and all(
            getattr(row, c) == v for c, v in chassis.to_row().items())

    def _poll_txn(self) -> None:
        if self._txn is None:
            return
        status = self._txn.commit()
        if status != self._txn.INCOMPLETE:
            txn, self._txn = self._txn, None
            self._done(txn, status)

    def _done(self, txn: ovs.db.idl.Transaction, status: str) -> None:
        if status not in (txn.SUCCESS, txn.UNCHANGED):
            self.publish_errors += 1
            self.last_error = txn.get_error() or status
            self._published = None  # try again on a later turn

    def status(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "remotes": self.remotes, "connected": self.connected(), "leader": self.leader(),
            "connected_for": (round(time.monotonic() - self.connected_since, 1)
                              if self.connected_since is not None else None),
            "disconnects": self.disconnects,
            "has_snapshot": snap is not None,
            "vnets": len(snap.vnets) if snap else None,
            "broken_vnets": dict(snap.broken) if snap else {},
            "chassis": len(snap.chassis) if snap else None,
            "next_cfg": snap.next_cfg if snap else None,
            "publish_errors": self.publish_errors, "last_error": self.last_error,
        }


def _fingerprint(snap: R.Snapshot, self_name: str) -> tuple[Any, ...]:
    """What the agent acts on: its own Chassis row (which it writes) is left out, so
    publishing does not wake it up again."""
    return (tuple(sorted(((rv.cfg.id.value, rv.cfg, tuple(sorted(rv.chassis)))
                          for rv in snap.vnets), key=lambda t: t[0])),
            tuple(sorted(snap.broken.items())),
            tuple(sorted((c for c in snap.chassis if c.name != self_name),
                         key=lambda c: c.name)), snap.next_cfg)
