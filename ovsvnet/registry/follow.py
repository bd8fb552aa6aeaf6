"""The agent's side of the cluster registry: follow it, publish this host, never block.

:class:`RegistryFollower` keeps a python-ovs IDL on the registry inside the agent's single
loop (no thread): the agent calls :meth:`run` every turn and adds :meth:`wait` to its
poller. The IDL talks to any member that is connected to the cluster, as ovn-controller
does (``leader_only=False``): a follower answers reads from its copy and forwards writes to
the leader, so a leader change or a leadership transfer costs an agent nothing unless its
own member dies or leaves, and then it moves to another at once (python-ovs refuses a member
whose copy is older than one it has seen, so it never goes back in time). It reconnects
with backoff while nobody answers.

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

import ovs.poller

from ovsvnet.desired import TunnelSpec
from ovsvnet.ovsdb import Client, Pending, SslFiles
from ovsvnet.registry import model as R

#: Reconnect backoff (ms). python-ovs doubles from 1 s up to 8 s, and while a new leader is
#: elected (1-2 s) every member turns us away, so each leader change would cost up to 8 s.
#: Agents: 0.25 s doubling to 2 s (a few attempts per agent per election).
BACKOFF_MS = (250, 2000)
#: A write without an answer for this long means its member is not serving (s).
STALL_S = 2.0


class RegistryFollower:
    def __init__(self, remotes: str, name: str, ssl: SslFiles | None = None):
        self.remotes = R.normalize_remotes(remotes, scheme="tcp" if ssl is None else "ssl")
        self.name = name
        self.db = Client(self.remotes, R.SCHEMA_PATH, {
            "Registry": ["next_cfg"],
            "Vnet": [c for c in R.VNET_COLUMNS if c != "external_ids"],
            "Chassis": [c for c in R.CHASSIS_COLUMNS if c != "external_ids"],
            "Chassis_Private": ["name", "cfg", "attached", "conflicts"],
        }, leader_only=False, backoff=BACKOFF_MS, what=f"the registry at {self.remotes}",
            ssl=ssl)
        self.db.cond_change("Chassis_Private", [["name", "==", name]])
        self.snapshot: R.Snapshot | None = None
        #: peers recorded on tunnel ports before a restart, used until the first snapshot
        self.resumed: list[TunnelSpec] = []
        self._seen = -1
        self._txn: Pending | None = None
        self._published: tuple[Any, ...] | None = None
        self._checked = -1
        self._own_uuid: dict[str, Any] = {}
        self.connected_since: float | None = None
        self.disconnects = 0
        self.snapshots = 0
        self.publish_errors = 0
        self.last_error: str | None = None
        #: Chassis rows left out because they break a rule (name -> why)
        self.rejected: dict[str, str] = {}

    # -- connection ----------------------------------------------------------------------------

    def connected(self) -> bool:
        return self.db.connected()

    def run(self) -> bool:
        """Process what the registry sent; True when the snapshot changed."""
        seqno = self.db.run()
        self._poll_txn()
        up = self.connected()
        if up and self.connected_since is None:
            self.connected_since = time.monotonic()
            # when this leader goes, try every other member at once before backing off
            self.db.reset_backoff()
        elif not up and self.connected_since is not None:
            self.connected_since = None
            self.disconnects += 1
            self._published = None  # republish after reconnecting (the row may be gone)
        if not up or seqno == self._seen:
            return False
        self._seen = seqno
        before = self.snapshot
        self.snapshot = self._take()
        self.snapshots += 1
        return before is None or \
            _fingerprint(before, self.name) != _fingerprint(self.snapshot, self.name)

    def _take(self) -> R.Snapshot:
        regs = self.db.rows("Registry")
        return R.snapshot_from_rows(
            ({c: getattr(r, c) for c in R.VNET_COLUMNS if c != "external_ids"}
             for r in self.db.rows("Vnet")),
            ({c: getattr(r, c) for c in R.CHASSIS_COLUMNS if c != "external_ids"}
             for r in self.db.rows("Chassis")),
            int(regs[0].next_cfg) if regs else 0)

    def wait(self, poller: ovs.poller.Poller) -> None:
        self.db.wait(poller)

    def close(self) -> None:
        self.db.close()

    # -- what the agent uses ------------------------------------------------------------------

    def peers(self, self_address: str | None) -> list[TunnelSpec]:
        """Other chassis as tunnel specs: from the last snapshot, else as resumed."""
        if self.snapshot is None:
            return list(self.resumed)
        self.rejected = {}
        return R.chassis_peers(self.snapshot.chassis, self.name, self_address,
                               self.snapshot.scopes(), self.rejected)

    def leader(self) -> str | None:
        return self.db.remote()

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, chassis: R.ChassisInfo, cfg: int, attached: set[str],
                conflicts: dict[str, str]) -> None:
        """Bring this host's rows up to date (no-op when unchanged or a commit is pending)."""
        if not self.connected() or self._txn is not None:
            return
        wanted = (chassis, cfg, tuple(sorted(attached)), tuple(sorted(conflicts.items())))
        seqno = self.db.seqno
        if wanted == self._published and (seqno == self._checked or
                                          self._rows_match(chassis)):
            self._checked = seqno  # rows re-read only when the registry sent something
            return
        private = {"name": chassis.name, "cfg": cfg, "attached": sorted(attached),
                   "conflicts": dict(conflicts)}

        def build(txn: Any) -> None:
            row = self._own("Chassis")
            fresh = row is None
            if row is None:
                row = self.db.insert(txn, "Chassis")
            for column, value in chassis.to_row().items():
                if fresh or getattr(row, column) != value:
                    setattr(row, column, value)
            priv = self._own("Chassis_Private")
            fresh = priv is None
            if priv is None:
                priv = self.db.insert(txn, "Chassis_Private")
            for column, value in private.items():
                current: Any = None if fresh else getattr(priv, column)
                if column == "attached" and current is not None:
                    current = sorted(current)
                if fresh or current != value:
                    setattr(priv, column, value)

        pending = Pending(self.db, build)
        self._published = wanted
        if pending.done:
            self._done(pending)
        else:
            self._txn = pending

    def _own(self, table: str) -> Any | None:
        """This host's row (remembered by uuid: a scan of 1000 rows per loop turn showed
        as idle CPU)."""
        rows = self.db.idl.tables[table].rows
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
        if self._txn is not None and self._txn.poll():
            pending, self._txn = self._txn, None
            self._done(pending)
        elif self._txn is not None and time.monotonic() - self._txn.started > STALL_S:
            # The member took the write and never answered (it left the cluster, or its
            # relay lost its source while the connection stayed up): python-ovs waits
            # forever. Give up on it and on that member; publish again on another.
            self._txn.txn.abort()
            self._txn = None
            self.publish_errors += 1
            self.last_error = f"a write got no answer within {STALL_S:g}s; trying another member"
            self._published = None
            self.db.force_reconnect()

    def _done(self, pending: Pending) -> None:
        if not pending.ok:
            self.publish_errors += 1
            self.last_error = pending.error
            self._published = None  # try again on a later turn

    def status(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "remotes": self.remotes, "connected": self.connected(),
            "member": self.leader(),  # (any member: agents do not need the leader)
            "leader": self.leader(),
            "insecure": any(r.startswith("tcp:") for r in self.remotes.split(",")),
            "tls_error": self.db.tls_error,
            "connected_for": (round(time.monotonic() - self.connected_since, 1)
                              if self.connected_since is not None else None),
            "disconnects": self.disconnects,
            "has_snapshot": snap is not None,
            "vnets": len(snap.vnets) if snap else None,
            "broken_vnets": dict(snap.broken) if snap else {},
            "chassis": len(snap.chassis) if snap else None,
            "next_cfg": snap.next_cfg if snap else None,
            "publish_errors": self.publish_errors, "last_error": self.last_error,
            "rejected_chassis": dict(self.rejected),
        }


def _fingerprint(snap: R.Snapshot, self_name: str) -> tuple[Any, ...]:
    """What the agent acts on: its own Chassis row (which it writes) is left out, so
    publishing does not wake it up again."""
    return (tuple(sorted(((rv.cfg.id.value, rv.cfg, tuple(sorted(rv.chassis)))
                          for rv in snap.vnets), key=lambda t: t[0])),
            tuple(sorted(snap.broken.items())),
            tuple(sorted((c for c in snap.chassis if c.name != self_name),
                         key=lambda c: c.name)), snap.next_cfg)
