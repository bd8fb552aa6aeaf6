"""A thread-free client for the Open_vSwitch database, on the python-ovs IDL.

Why not ovsdbapp: it hides a thread, shares one connection per class (a trap when a test
talks to several lab hosts in one process) and swallows errors by default. What we keep from
it is the protocol python-ovs documents for a correct transaction:

1. record ``idl.change_seqno``, 2. build the whole transaction from the current view,
3. ``commit_block()``, 4. on TRY_AGAIN wait for the view to change and start again at 1.

Every command builds exactly one transaction, so a refused input changes nothing and two
racing commands serialise (the loser rebuilds from the winner's view and sees the clash).
After SUCCESS we wait until ovs-vswitchd has applied it (``cur_cfg >= next_cfg``, as
ovs-vsctl does) and read back the interfaces it could not create.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.vlog

from ovsvnet.errors import OvsUnreachableError, OvsvnetError

DEFAULT_DB = "unix:/var/run/openvswitch/db.sock"

#: The columns ovsvnet reads or writes; the IDL replicates only these.
COLUMNS: dict[str, list[str]] = {
    "Open_vSwitch": [
        "bridges", "next_cfg", "cur_cfg", "external_ids", "other_config",
        "datapath_types", "iface_types", "ovs_version",
    ],
    "Bridge": [
        "name", "ports", "datapath_type", "fail_mode", "external_ids",
        "other_config", "protocols",
    ],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": [
        "name", "type", "options", "ofport", "error", "mtu", "mtu_request",
        "external_ids", "link_state", "admin_state", "mac_in_use",
    ],
}

T = TypeVar("T")


class Aborted(Exception):
    """Raised inside a transaction builder to abort without an error (nothing to do)."""


def rundir_for(remote: str) -> str:
    """Where ovs-vswitchd keeps its sockets, guessed from the OVSDB remote.

    OVS keeps db.sock and the bridges' .mgmt sockets in one run directory, so for a
    ``unix:`` remote that directory is the right default; ``OVS_RUNDIR`` wins when set.
    """
    if os.environ.get("OVS_RUNDIR"):
        return os.environ["OVS_RUNDIR"]
    if remote.startswith("unix:"):
        return os.path.dirname(remote[len("unix:"):]) or "."
    return "/var/run/openvswitch"


def _fetch_schema(remote: str, timeout: float) -> Any:
    error, stream = ovs.stream.Stream.open_block(
        ovs.stream.Stream.open(remote), int(timeout * 1000))
    if error:
        raise OvsUnreachableError(
            f"cannot reach OVSDB at {remote}: {os.strerror(error)}; is ovsdb-server running?")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        error, reply = rpc.transact_block(
            ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"]))
    finally:
        rpc.close()
    if error or reply.error:
        reason = os.strerror(error) if error else reply.error
        raise OvsUnreachableError(f"cannot read the schema from OVSDB at {remote}: {reason}")
    return reply.result


@dataclass
class FailedInterface:
    name: str
    error: str


class Ovsdb:
    """One connection to one ovsdb-server; single-threaded, explicit ``run()``."""

    def __init__(self, remote: str = DEFAULT_DB, timeout: float = 10.0,
                 extra_columns: dict[str, list[str]] | None = None):
        self.remote = remote
        self.timeout = timeout
        schema = _fetch_schema(remote, timeout)
        helper = ovs.db.idl.SchemaHelper(None, schema)
        columns = {t: list(c) for t, c in COLUMNS.items()}
        for table, cols in (extra_columns or {}).items():
            columns.setdefault(table, []).extend(cols)
        for table, cols in columns.items():
            helper.register_columns(table, cols)
        self.idl = ovs.db.idl.Idl(remote, helper)
        self._name_index: dict[str, tuple[int, dict[str, Any]]] = {}
        self._wait_for_change(0, time.monotonic() + timeout,
                              what="the first copy of the database")

    # -- reading -------------------------------------------------------------------------

    def run(self) -> None:
        """Process whatever the server sent; call before reading if time has passed."""
        self.idl.run()

    @property
    def ovs(self) -> Any:
        """The single Open_vSwitch row."""
        rows = list(self.idl.tables["Open_vSwitch"].rows.values())
        if not rows:
            raise OvsvnetError(
                f"OVSDB at {self.remote} has no Open_vSwitch row; run 'ovs-vsctl init'")
        return rows[0]

    def rows(self, table: str) -> Iterator[Any]:
        return iter(list(self.idl.tables[table].rows.values()))

    def _by_name(self, table: str) -> dict[str, Any]:
        """Rows of ``table`` by name, rebuilt only when the replica changed: a lookup per
        vnet must not scan every row (1000 vnets made list and sync quadratic)."""
        seqno = self.idl.change_seqno
        cached = self._name_index.get(table)
        if cached is None or cached[0] != seqno:
            cached = (seqno, {row.name: row for row in self.idl.tables[table].rows.values()})
            self._name_index[table] = cached
        return cached[1]

    def bridge(self, name: str) -> Any | None:
        return self._by_name("Bridge").get(name)

    def interface(self, name: str) -> Any | None:
        return self._by_name("Interface").get(name)

    # -- writing -------------------------------------------------------------------------

    def transact(self, build: Callable[[ovs.db.idl.Transaction], T], *,
                 wait_vswitchd: bool = True) -> T | None:
        """Run ``build(txn)`` as one transaction, rebuilding it on TRY_AGAIN.

        ``build`` reads the current view and stages changes; it may raise an OvsvnetError
        to refuse (nothing is committed) or :class:`Aborted` when there is nothing to do.
        Returns what ``build`` returned (None if aborted).
        """
        deadline = time.monotonic() + self.timeout
        while True:
            self.idl.run()
            seqno = self.idl.change_seqno
            txn = ovs.db.idl.Transaction(self.idl)
            if wait_vswitchd:
                self.ovs.increment("next_cfg")
            try:
                result = build(txn)
            except Aborted:
                txn.abort()
                return None
            except BaseException:
                txn.abort()
                raise
            status = txn.commit_block()
            if status == txn.TRY_AGAIN:
                self._wait_for_change(seqno, deadline, what="a retry after a concurrent change")
                continue
            if status not in (txn.SUCCESS, txn.UNCHANGED):
                raise self._txn_error(txn, status)
            break
        if wait_vswitchd and status == txn.SUCCESS:
            self._wait_vswitchd(txn.get_increment_new_value(), deadline)
        return result

    def _txn_error(self, txn: ovs.db.idl.Transaction, status: str) -> OvsvnetError:
        detail = txn.get_error() or status
        if "constraint violation" in detail or "referential integrity" in detail:
            from ovsvnet.errors import ConflictError
            return ConflictError(f"OVSDB refused the change: {_short_error(detail)}")
        if status == txn.NOT_LOCKED or "connection" in detail.lower():
            return OvsUnreachableError(f"lost OVSDB at {self.remote}: {detail}")
        return OvsvnetError(f"OVSDB refused the change: {_short_error(detail)}")

    def _wait_vswitchd(self, next_cfg: int, deadline: float) -> None:
        while True:
            self.idl.run()
            if self.ovs.cur_cfg >= next_cfg:
                return
            if time.monotonic() >= deadline:
                raise OvsUnreachableError(
                    f"ovs-vswitchd did not apply the change within {self.timeout:g}s "
                    f"(the database has it); is ovs-vswitchd running for {self.remote}?")
            self._block(deadline)

    def _wait_for_change(self, seqno: int, deadline: float, what: str) -> None:
        while self.idl.change_seqno == seqno and not self.idl.run():
            if not self.idl._session.is_connected() and time.monotonic() >= deadline:
                raise OvsUnreachableError(
                    f"cannot reach OVSDB at {self.remote}: no answer within "
                    f"{self.timeout:g}s while waiting for {what}; is ovsdb-server running?")
            if time.monotonic() >= deadline:
                raise OvsUnreachableError(
                    f"OVSDB at {self.remote} sent nothing within {self.timeout:g}s "
                    f"while waiting for {what}")
            self._block(deadline)

    def _block(self, deadline: float) -> None:
        """Sleep until the server sends something or the deadline passes."""
        poller = ovs.poller.Poller()
        self.idl.wait(poller)
        poller.timer_wait(int(max(0.0, deadline - time.monotonic()) * 1000))
        poller.block()

    def failed_interfaces(self, names: set[str]) -> list[FailedInterface]:
        """Interfaces among ``names`` that ovs-vswitchd could not create."""
        self.idl.run()
        failed = []
        for iface in self.rows("Interface"):
            if iface.name not in names:
                continue
            err = iface.error[0] if iface.error else ""
            ofport = iface.ofport[0] if iface.ofport else None
            if err or ofport == -1:
                failed.append(FailedInterface(iface.name, err or "could not be added"))
        return failed

    def close(self) -> None:
        self.idl.close()

    def __enter__(self) -> "Ovsdb":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short_error(detail: str) -> str:
    """python-ovs returns the server's JSON error; keep the human part."""
    import json
    try:
        data = json.loads(detail)
    except (ValueError, TypeError):
        return detail
    if isinstance(data, dict):
        return data.get("details") or data.get("error") or detail
    return detail


def quiet_python_ovs() -> None:
    """python-ovs logs reconnect chatter to stderr once vlog is initialised; keep it off."""
    ovs.vlog.Vlog.set_levels_from_string("any:console:off")
