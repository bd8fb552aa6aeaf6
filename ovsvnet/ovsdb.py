"""The one OVSDB client: python-ovs's IDL, thread-free, for the local Open_vSwitch database and
for the cluster registry.

Why not ovsdbapp: it hides a thread, shares one connection per class (a trap when a test
talks to several lab hosts in one process) and swallows errors by default. What we keep from
it is the protocol python-ovs documents for a correct transaction:

1. record ``idl.change_seqno``, 2. build the whole transaction from the current view,
3. ``commit_block()``, 4. on TRY_AGAIN wait for the view to change and start again at 1.

Every command builds exactly one transaction, so a refused input changes nothing and two
racing commands serialise (the loser rebuilds from the winner's view and sees the clash).
:class:`Ovsdb` adds what ovs-vsctl does for the Open_vSwitch database: after SUCCESS it waits
until ovs-vswitchd has applied the change (``cur_cfg >= next_cfg``) and reads back the
interfaces it could not create.

This module is the only one that touches python-ovs's private attributes (the reconnect
backoff, the session's connection state), with :mod:`ovsvnet.dryrun` (staged rows).
"""

from __future__ import annotations

import errno
import json
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.timeval
import ovs.vlog

from ovsvnet.errors import ConfigError, ConflictError, OvsUnreachableError, OvsvnetError
from ovsvnet.system import progress
from ovsvnet.system.paths import DEFAULT_DB

#: The columns ovsvnet reads or writes in Open_vSwitch; the IDL replicates only these.
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
Build = Callable[[ovs.db.idl.Transaction], T]


class Aborted(Exception):
    """Raised inside a transaction builder to abort without an error (nothing to do)."""


def short_error(detail: str) -> str:
    """python-ovs returns the server's JSON error; keep the human part."""
    try:
        data = json.loads(detail)
    except (ValueError, TypeError):
        return detail
    if isinstance(data, dict):
        return str(data.get("details") or data.get("error") or detail)
    return detail


def quiet_python_ovs() -> None:
    """python-ovs logs reconnect chatter to stderr once vlog is initialised; keep it off."""
    ovs.vlog.Vlog.set_levels_from_string("any:console:off")


def fetch_schema(remote: str, database: str, timeout: float) -> Any:
    """The database's schema as the server has it (no version mismatch with a local file)."""
    error, stream = ovs.stream.Stream.open_block(
        ovs.stream.Stream.open(remote), int(timeout * 1000))
    if error:
        raise OvsUnreachableError(
            f"cannot reach OVSDB at {remote}: {os.strerror(error)}; is ovsdb-server running?")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        error, reply = rpc.transact_block(
            ovs.jsonrpc.Message.create_request("get_schema", [database]))
    finally:
        rpc.close()
    if error or reply.error:
        reason = os.strerror(error) if error else reply.error
        raise OvsUnreachableError(f"cannot read the schema from OVSDB at {remote}: {reason}")
    return reply.result


@dataclass(frozen=True)
class SslFiles:
    """This process's TLS identity for ``ssl:`` remotes (ovs-vsctl's -p/-c/-C)."""

    private_key: str
    certificate: str
    ca_cert: str

    def check(self) -> SslFiles:
        for what, path in (("private-key", self.private_key),
                           ("certificate", self.certificate), ("ca-cert", self.ca_cert)):
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise ConfigError(f"{what}: {path} is not a readable file")
        return self


def use_ssl(files: SslFiles | None, remotes: str) -> None:
    """Give python-ovs the key, certificate and CA for ``ssl:`` remotes (process-wide, as
    python-ovs keeps them); an ``ssl:`` remote without them is a clear error, never a
    traceback. python-ovs checks the peer's certificate against the CA (no host name
    check), so the registry's servers need their own CA (docs/registry.md)."""
    wants_ssl = any(r.strip().startswith("ssl:") for r in remotes.split(","))
    if files is None:
        if wants_ssl:
            raise ConfigError(f"ssl: {remotes} needs a certificate: give --private-key, "
                              "--certificate and --ca-cert (or their OVSVNET_* variables)")
        return
    files.check()
    ovs.stream.Stream.ssl_set_private_key_file(files.private_key)
    ovs.stream.Stream.ssl_set_certificate_file(files.certificate)
    ovs.stream.Stream.ssl_set_ca_cert_file(files.ca_cert)


_slow_getattr = ovs.db.idl.Row.__getattr__


def _fast_getattr(row: Any, column_name: str) -> Any:
    """python-ovs's ``Row.__getattr__`` for a column the row has not changed, converted once.

    python-ovs converts a set or map column three times per read (to a list, back to a
    datum, to Python): 43,000 reads cost a no-op sync 1.1 s of its 1.7 s at 1000 vnets.
    Rows of an :class:`_Idl` keep each converted column until the server changes the row
    (python-ovs updates a datum in place, so the datum cannot tell; ``notify`` can). Reads
    of columns the caller changed in a transaction take python-ovs's path. Values are
    handed out as copies, since callers may edit what they read.
    """
    d = row.__dict__
    changes, data_ = d.get("_changes"), d.get("_data")
    if (changes or data_ is None or column_name not in data_
            or not getattr(d.get("_idl"), "memoizes", False)
            or any(d["_mutations"].values())):
        return _slow_getattr(row, column_name)
    memo = d.get("_ovsvnet_memo")
    if memo is None:
        memo = d["_ovsvnet_memo"] = {}
    try:
        value = memo[column_name]
    except KeyError:
        value = memo[column_name] = data_[column_name].to_python(row._uuid_to_row)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


ovs.db.idl.Row.__getattr__ = _fast_getattr


class _Idl(ovs.db.idl.Idl):
    """An IDL whose rows forget their converted columns when the server changes them."""

    memoizes = True

    def notify(self, event: Any, row: Any, updates: Any = None) -> None:
        row.__dict__.pop("_ovsvnet_memo", None)
        if updates is not None:
            updates.__dict__.pop("_ovsvnet_memo", None)
        super().notify(event, row, updates)


class Client:
    """One connection to one database (any of ``remotes``); single-threaded: call
    :meth:`run` to take in what the server sent, :meth:`wait` to sleep until it sends more.

    ``tables`` maps each table to replicate to its columns (None: every column).
    ``leader_only`` talks only to a Raft leader; ``backoff`` = (min, max) reconnect delay in
    ms, below python-ovs's 1 s floor, so a client follows a new leader quickly.
    ``unreachable`` is the error raised when nothing answers in time, ``what`` names the
    database in messages.
    """

    def __init__(self, remotes: str, schema: Mapping[str, Any] | str | Path,
                 tables: Mapping[str, list[str] | None], *, timeout: float = 10.0,
                 leader_only: bool = False, backoff: tuple[int, int] | None = None,
                 unreachable: type[OvsUnreachableError] = OvsUnreachableError,
                 what: str | None = None, ssl: SslFiles | None = None,
                 tls_fatal: bool = False):
        use_ssl(ssl, remotes)
        self.remotes = remotes
        self.timeout = timeout
        self.unreachable = unreachable
        self.what = what or f"OVSDB at {remotes}"
        if isinstance(schema, (str, Path)):
            helper = ovs.db.idl.SchemaHelper(location=str(schema))
        else:
            helper = ovs.db.idl.SchemaHelper(None, dict(schema))
        for table, columns in tables.items():
            if columns is None:
                helper.register_table(table)
            else:
                helper.register_columns(table, list(columns))
        self.idl = _Idl(remotes, helper, leader_only=leader_only)
        if backoff is not None:
            reconnect = self.idl._session.reconnect
            reconnect.min_backoff, reconnect.max_backoff = backoff
        self._index: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        #: the last TLS failure (handshake, certificate), shown by status and doctor
        self.tls_error: str | None = None
        self.tls_fatal = tls_fatal

    # -- connection ------------------------------------------------------------------------

    def run(self) -> int:
        """Process what the server sent; returns the replica's change sequence number."""
        self._run_idl()
        return int(self.idl.change_seqno)

    def _run_idl(self) -> None:
        """``idl.run()``, with TLS failures turned into a failed connection.

        python-ovs lets ``ssl.SSLError`` escape from a handshake or a read (a wrong CA, a
        relay that refuses the certificate): an agent died of it with a traceback. The
        error is kept in :attr:`tls_error` and the session backs off and retries, so a
        fixed CA file is picked up without a restart. A one-shot client (``tls_fatal``)
        gets the error at once instead: it has no later to wait for."""
        try:
            self.idl.run()
        except ssl.SSLError as exc:
            if self.tls_fatal:
                raise
            self.tls_error = str(getattr(exc, "verify_message", "") or exc.reason or exc)
            session = self.idl._session
            if session.rpc is not None:
                session.rpc.error(errno.EPROTO)
            elif session.stream is not None:
                session.reconnect.connect_failed(ovs.timeval.msec(), errno.EPROTO)
                session.pick_remote()
                session.stream.close()
                session.stream = None

    @property
    def seqno(self) -> int:
        return int(self.idl.change_seqno)

    def wait(self, poller: ovs.poller.Poller) -> None:
        self.idl.wait(poller)

    def connected(self) -> bool:
        """Connected and holding a complete, current replica."""
        return bool(self.idl._session.is_connected()) and \
            self.idl.state == self.idl.IDL_S_MONITORING

    def remote(self) -> str | None:
        """The remote this client is connected to now (the leader, when leader-only)."""
        return str(self.idl._session.get_name()) if self.connected() else None

    def reset_backoff(self) -> None:
        """After losing a server, try every other remote at once before backing off."""
        self.idl._session.reset_backoff()

    def force_reconnect(self) -> None:
        self.idl.force_reconnect()

    def cond_change(self, table: str, conditions: list[Any]) -> None:
        """Replicate only the rows of ``table`` matching ``conditions`` (monitor_cond)."""
        self.idl.cond_change(table, conditions)

    def block(self, deadline: float, cap: float | None = None) -> None:
        """Sleep until the server sends something or ``deadline`` (or ``cap`` s) passes."""
        poller = ovs.poller.Poller()
        self.idl.wait(poller)
        left = max(0.0, deadline - time.monotonic())
        poller.timer_wait(int((left if cap is None else min(left, cap)) * 1000))
        poller.block()

    def wait_until(self, done: Callable[[], bool], deadline: float, what: str) -> None:
        """Run the IDL until ``done()`` or the deadline (then :attr:`unreachable`)."""
        while True:
            self._run_idl()
            if done():
                return
            if time.monotonic() >= deadline:
                raise self.unreachable(
                    f"cannot reach {self.what}: no {what} within {self.timeout:g}s")
            self.block(deadline, cap=0.5)

    def wait_connected(self, what: str = "answer") -> None:
        self.wait_until(self.connected, time.monotonic() + self.timeout, what)

    def wait_for_change(self, seqno: int, deadline: float, what: str) -> None:
        """Wait until the replica moves past ``seqno`` (or the connection drops)."""
        self.wait_until(lambda: self.idl.change_seqno != seqno or not self.connected(),
                        deadline, what)

    def close(self) -> None:
        self.idl.close()

    # -- reading ---------------------------------------------------------------------------

    def rows(self, table: str) -> list[Any]:
        return list(self.idl.tables[table].rows.values())

    def by_name(self, table: str, name: str) -> Any | None:
        """A row by its ``name`` column; the index is rebuilt only when the replica changed
        (a lookup per vnet must not scan every row: 1000 vnets made commands quadratic)."""
        seqno = self.idl.change_seqno
        cached = self._index.get((table, "name"))
        if cached is None or cached[0] != seqno:
            cached = (seqno, {row.name: row for row in self.idl.tables[table].rows.values()})
            self._index[(table, "name")] = cached
        return cached[1].get(name)

    # -- writing ---------------------------------------------------------------------------

    def transact(self, build: Build[T], *, before: Callable[[Any], None] | None = None,
                 ready: Callable[[], bool] | None = None) -> Committed[T]:
        """Run ``build(txn)`` as one transaction, rebuilt on TRY_AGAIN until the timeout.

        ``build`` reads the current view and stages changes; it may raise an OvsvnetError
        to refuse (nothing is committed) or :class:`Aborted` when there is nothing to do.
        ``before(txn)`` stages what every transaction of this database carries (a counter).
        Returns what ``build`` returned (None if aborted), the transaction and its status.
        """
        deadline = time.monotonic() + self.timeout
        is_ready = ready or self.connected
        while True:
            self.wait_until(is_ready, deadline, "answer")
            seqno = self.idl.change_seqno
            txn = ovs.db.idl.Transaction(self.idl)
            try:
                if before is not None:
                    before(txn)
                result = build(txn)
            except Aborted:
                txn.abort()
                return Committed(None, txn, "aborted")
            except BaseException:
                txn.abort()
                raise
            status = txn.commit_block()
            if status == txn.TRY_AGAIN:
                self.wait_for_change(seqno, deadline, "a retry after a concurrent change")
                continue
            if status not in (txn.SUCCESS, txn.UNCHANGED):
                raise self.txn_error(txn, status)
            return Committed(result, txn, status)

    def insert(self, txn: Any, table: str) -> Any:
        """A new row of ``table`` in ``txn``."""
        return txn.insert(self.idl.tables[table])

    def txn_error(self, txn: Any, status: str) -> OvsvnetError:
        detail = txn.get_error() or status
        if "constraint violation" in detail or "referential integrity" in detail:
            return ConflictError(f"{self.what} refused the change: {short_error(detail)}")
        if status == txn.NOT_LOCKED or "connection" in detail.lower():
            return self.unreachable(f"lost {self.what}: {detail}")
        return OvsvnetError(f"{self.what} refused the change: {short_error(detail)}")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Committed(NamedTuple, Generic[T]):
    """What :meth:`Client.transact` did: the builder's result, the transaction, its status."""

    result: T | None
    txn: Any
    status: str


class Pending:
    """A transaction committed without blocking (an agent must never wait on a server):
    :meth:`poll` each loop turn until it reports the outcome."""

    def __init__(self, client: Client, build: Callable[[Any], None]):
        self.txn = ovs.db.idl.Transaction(client.idl)
        self.started = time.monotonic()
        build(self.txn)
        self.status: str = self.txn.commit()

    @property
    def done(self) -> bool:
        return self.status != self.txn.INCOMPLETE

    def poll(self) -> bool:
        """True once the transaction has an outcome (see :attr:`ok`, :attr:`error`)."""
        if not self.done:
            self.status = self.txn.commit()
        return self.done

    @property
    def ok(self) -> bool:
        return self.status in (self.txn.SUCCESS, self.txn.UNCHANGED)

    @property
    def error(self) -> str:
        return str(self.txn.get_error() or self.status)


@dataclass
class FailedInterface:
    name: str
    error: str


class Ovsdb(Client):
    """The local Open_vSwitch database, as ovs-vsctl uses it."""

    def __init__(self, remote: str = DEFAULT_DB, timeout: float = 10.0,
                 extra_columns: dict[str, list[str]] | None = None):
        columns: dict[str, list[str] | None] = {t: list(c) for t, c in COLUMNS.items()}
        for table, cols in (extra_columns or {}).items():
            existing = columns.setdefault(table, [])
            assert existing is not None
            existing.extend(cols)
        super().__init__(remote, fetch_schema(remote, "Open_vSwitch", timeout), columns,
                         timeout=timeout, what=f"OVSDB at {remote}")
        self.remote_name = remote
        deadline = time.monotonic() + timeout
        while self.idl.change_seqno == 0:
            self.idl.run()
            if self.idl.change_seqno:
                break
            if time.monotonic() >= deadline:
                raise OvsUnreachableError(
                    f"cannot reach OVSDB at {remote}: no answer within {timeout:g}s while "
                    "waiting for the first copy of the database; is ovsdb-server running?")
            self.block(deadline)

    @property
    def ovs(self) -> Any:
        """The single Open_vSwitch row."""
        rows = self.rows("Open_vSwitch")
        if not rows:
            raise OvsvnetError(
                f"OVSDB at {self.remotes} has no Open_vSwitch row; run 'ovs-vsctl init'")
        return rows[0]

    def bridge(self, name: str) -> Any | None:
        return self.by_name("Bridge", name)

    def interface(self, name: str) -> Any | None:
        return self.by_name("Interface", name)

    def transact_vswitchd(self, build: Build[T], *, wait_vswitchd: bool = True) -> T | None:
        """:meth:`Client.transact` plus ovs-vsctl's wait: after SUCCESS, until ovs-vswitchd
        has applied the change (``cur_cfg >= next_cfg``)."""
        start = time.monotonic()

        def bump(txn: Any) -> None:
            if wait_vswitchd:
                self.ovs.increment("next_cfg")

        result, txn, status = self.transact(build, before=bump)
        if wait_vswitchd and status == txn.SUCCESS:
            self._wait_vswitchd(txn.get_increment_new_value(), start + self.timeout)
        return result

    def _wait_vswitchd(self, next_cfg: int, deadline: float) -> None:
        while True:
            self.idl.run()
            if self.ovs.cur_cfg >= next_cfg:
                return
            if time.monotonic() >= deadline:
                raise OvsUnreachableError(
                    f"ovs-vswitchd did not apply the change within {self.timeout:g}s "
                    f"(the database has it); is ovs-vswitchd running for {self.remotes}?")
            self.block(deadline, cap=progress.tick())  # a big change's longest wait: shown

    def failed_interfaces(self, names: set[str]) -> list[FailedInterface]:
        """Interfaces among ``names`` that ovs-vswitchd could not create."""
        self.idl.run()
        failed = []
        for name in sorted(names):
            iface = self.interface(name)
            if iface is None:
                continue
            err = iface.error[0] if iface.error else ""
            ofport = iface.ofport[0] if iface.ofport else None
            if err or ofport == -1:
                failed.append(FailedInterface(iface.name, err or "could not be added"))
        return failed
