"""``ovsvnet agent``: discovery, and keeping tunnels and flows right while things change.

One single-threaded loop (python-ovs poller) waits on four things at once:

* the OVSDB IDL: any change to definitions, peers or ports -> reconcile;
* the discovery socket (UDP 1798, :mod:`ovsvnet.agent.discovery`): announcements from peers
  -> the peer table -> reconcile if it changed;
* timers: announce every ``interval``, expire silent peers, check the flow canary;
* the control socket (:mod:`ovsvnet.agent.control`).

Self-repair: when ovs-vswitchd restarts (its pid and start time change) it has lost every
flow, and the next pass installs them all in one bundle; if the canary flow is gone while
ovs-vswitchd is the same process, someone deleted flows, and the next pass reads them back
and repairs them (see :mod:`ovsvnet.system.flowstore`); if ovsdb-server goes away the IDL
reconnects by itself and the loop reconciles once the fresh copy arrives. Meanwhile the data
plane keeps forwarding with the flows it has.

Restart without a flap: discovered peers are recorded on their tunnel ports (origin and
vnets in external_ids), and a starting agent takes them as provisional peers, so its first
reconcile computes the same tunnels and flows as before and changes nothing. They expire
like any peer if they do not announce themselves within their hold time.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ovs.poller

from ovsvnet import model as M
from ovsvnet.agent import control, delegated, metrics_export
from ovsvnet.agent.discovery import Discovery, DiscoveryOptions
from ovsvnet.announce import GROUP, PORT
from ovsvnet.desired import TunnelSpec
from ovsvnet.errors import OvsUnreachableError, OvsvnetError
from ovsvnet.ops import state
from ovsvnet.ops.host import Host, security, underlay
from ovsvnet.ops.sync import secure_arming, sync
from ovsvnet.ovsdb import Ovsdb, SslFiles
from ovsvnet.system import ofctl, proc, sdnotify
from ovsvnet.system.log import event
from ovsvnet.vnetid import VnetId


@dataclass
class AgentOptions:
    group: str = GROUP
    port: int = PORT
    ttl: int = 1
    interface: str | None = None  # local address for multicast; default: tunnel endpoint
    interval: float = 5.0
    hold_time: int | None = None  # default: 3 announcement intervals
    key: bytes | None = None
    multicast: bool = True
    canary_interval: float = 2.0
    control: str | None = None
    registry: str | None = None  # cluster registry remotes (ovsvnet.registry.sync)
    insecure_discovery: bool = False  # no key: anyone who can send UDP can join (said loudly)
    discovery: bool = True  # off: the registry alone (no socket on the discovery port)
    ssl: SslFiles | None = None  # TLS identity for ssl: registry remotes
    metrics: metrics_export.MetricsOptions | None = None  # opt-in Prometheus exporter
    runner: delegated.Runner | None = None  # runs CLI commands handed over (cli.delegate)

    @property
    def hold(self) -> int:
        return self.hold_time or max(1, math.ceil(3 * self.interval))


@dataclass
class AgentStats:
    syncs: int = 0
    sync_errors: int = 0
    last_sync_error: str | None = None
    vswitchd_restarts: int = 0
    flows_repaired: int = 0  # flows found missing by the canary (deleted by hand), put back
    sync_seconds: float = 0.0  # in reconcile passes, failed ones too
    last_sync_seconds: float | None = None
    started: float = field(default_factory=time.time)


#: ovs-vswitchd's pidfile in its run directory (OVS's default name).
VSWITCHD_PIDFILE = "ovs-vswitchd.pid"
#: Longest time between two looks at ovs-vswitchd's identity (s).
SWITCH_CHECK = 0.5

#: The newest sequence number heard per peer, kept across restarts (replay protection).
SEEN_FILE = "ovsvnet-agent.seen"


def ensure_system_id(db: Ovsdb) -> str:
    """This host's OVS system-id; one is made and stored when there is none, as ovs-ctl
    does, so that two clones with one hostname are still two hosts."""
    current = db.ovs.external_ids.get("system-id")
    if current:
        return str(current)
    new = str(uuid.uuid4())

    def build(txn: Any) -> str:
        if db.ovs.external_ids.get("system-id"):
            return str(db.ovs.external_ids["system-id"])  # someone else set one meanwhile
        db.ovs.setkey("external_ids", "system-id", new)
        return new

    chosen = db.transact(build)[0] or new
    if chosen == new:
        event("system-id-created", system_id=new, hostname=socket.gethostname())
    return chosen


class Agent:
    def __init__(self, host: Host, opts: AgentOptions):
        from ovsvnet.registry.sync import RegistrySync

        self.host = host
        self.opts = opts
        self.db = host.db
        self.system_id = ensure_system_id(self.db)
        if opts.registry and opts.ssl is not None:
            # the registry lets a chassis write only the rows named by its certificate
            from ovsvnet.registry.pki import check_chassis
            check_chassis(opts.ssl, self.system_id)
        now = time.monotonic()
        #: the next pass also reads the flows back from the switch (``sync`` command,
        #: canary gone)
        self.full = False
        #: ovs-vswitchd's identity (pid and start time) at the last look
        self.vswitchd = proc.identity(os.path.join(host.rundir, VSWITCHD_PIDFILE))
        self.stats = AgentStats()
        self.notifier = sdnotify.Notifier()  # systemd: ready after the first sync, watchdog
        self.stopping = False
        self.dirty = True
        self.seen_seqno = -1
        self.provisional: dict[str, TunnelSpec] = {}
        self._announced: tuple[int, dict[VnetId, str]] = (-1, {})
        self.provisional_until = now + opts.hold
        self._seed_from_tunnels()
        self.registry = (RegistrySync(self.host, opts.registry, self.system_id, opts.ssl)
                         if opts.registry else None)
        if self.registry is not None:
            self.registry.resume(self.provisional)
        self.local_ip = self._local_address()
        self.discovery = Discovery(
            self.system_id, DiscoveryOptions(
                opts.group, opts.port, opts.ttl, opts.multicast, opts.key, opts.hold,
                opts.interval, os.path.join(host.rundir, SEEN_FILE)),
            self._static_addresses, now) if opts.discovery else None
        if self.discovery is not None:
            self.discovery.join(self.local_ip)
        self.exporter = metrics_export.Exporter(host, opts.metrics, self.status)
        self.control_path = control.path_for(host.rundir, opts.control)
        self.control = control.serve(self.control_path, {
            "status": lambda argv: json.dumps(self.status(), sort_keys=True),
            "metrics": lambda argv: self.exporter.render(),
            "sync": self._cmd_sync,
            "cli": self._cmd_cli,
        })
        now = time.monotonic()
        self.next_announce = now
        self.next_expire = now + 1
        self.next_canary = now + opts.canary_interval
        self.retry_at = 0.0
        #: Secure tunnel ports armed at the last check (secure_arming); None: not yet.
        self.armed: frozenset[str] | None = None
        #: peers of the last pass that got no tunnel (address -> why)
        self.rejected: dict[str, str] = {}

    # -- setup --------------------------------------------------------------------------

    def _static_addresses(self) -> set[str]:
        return {p.address for p in state.static_peers(self.db)}

    def _seed_from_tunnels(self) -> None:
        """Discovered peers from before a restart, as recorded on their tunnel ports."""
        self.provisional = {p.address: p for p in state.recorded_peers(self.db)
                            if p.origin is not None}
        if self.provisional:
            event("resume", peers=",".join(sorted(self.provisional)))

    def _local_address(self) -> str | None:
        und = underlay(self.host, sorted(self._static_addresses()))
        return self.opts.interface or und.local_ip

    # -- control commands -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        table = self.discovery.table if self.discovery is not None else None
        peers = []
        for p in table.peers() if table is not None else []:
            peers.append({
                "origin": p.origin, "address": p.address, "port": p.port,
                "vnets": sorted(f"{vid.key:04x}" if vid.value < 1 << 24 else str(vid)
                                for vid in p.vnets),
                "levels": {f"{vid.key:04x}": level for vid, level in p.vnets.items()
                           if vid.value < 1 << 24},
                "last_seen": round(now - p.last_seen, 1), "hold_time": p.hold_time,
                "static": p.static, "via": p.via,
            })
        for address, spec in sorted(self.provisional.items()):
            if not any(p["address"] == address for p in peers):
                peers.append({"origin": spec.origin, "address": address, "port": spec.port,
                              "vnets": sorted(f"{k:04x}" for k in spec.vnets or ()),
                              "last_seen": None, "hold_time": None, "static": False,
                              "via": "resumed"})
        return {
            "system_id": self.system_id, "tunnel_ip": self.local_ip,
            "group": f"{self.opts.group}:{self.opts.port}" if self.opts.multicast else None,
            "interval": self.opts.interval, "hold_time": self.opts.hold,
            "authenticated": self.opts.key is not None,
            "insecure_discovery": self.discovery is not None and self.opts.key is None,
            "discovery": self.discovery is not None,
            "peers": peers, "static_peers": table.configured() if table else {},
            "counters": table.counters if table else {},
            "id_clashes": sorted(table.clashes) if table else [],
            "rejected_peers": dict(self.rejected),
            "syncs": self.stats.syncs, "sync_errors": self.stats.sync_errors,
            "last_sync_error": self.stats.last_sync_error,
            "vswitchd_restarts": self.stats.vswitchd_restarts,
            "flows_repaired": self.stats.flows_repaired,
            "sync_seconds": round(self.stats.sync_seconds, 6),
            "last_sync_seconds": self.stats.last_sync_seconds,
            "inventory": self.exporter.inventory(self.armed),
            "announcements_sent": self.discovery.sent if self.discovery else 0,
            "uptime": round(time.time() - self.stats.started, 1),
            "registry": self.registry.status() if self.registry is not None else None,
        }

    def _cmd_cli(self, argv: list[str]) -> str:
        # (a command that changed OVSDB is seen by the IDL like any change: no pass is
        # forced here, so reads cost no pass)
        return delegated.run(argv[0] if argv else "", self.host, self.opts.runner)

    def _cmd_sync(self, argv: list[str]) -> str:
        self.full = True
        self.dirty = True
        return "sync scheduled"

    # -- discovery ----------------------------------------------------------------------

    def _local_vnets(self) -> dict[VnetId, str]:
        """The vnets to announce; re-read only when OVSDB changed (parsing 1000 stored
        definitions every announcement cost a fifth of a core at idle)."""
        seqno = self.db.seqno
        if self._announced[0] != seqno:
            defs, _ = state.definitions(self.db)
            sec = security(self.host)
            self._announced = (seqno, {c.id: c.security for c in defs.values()
                                       if sec.active(c)})
        return self._announced[1]

    def announce(self, leaving: bool = False) -> None:
        if self.local_ip is None:
            self.local_ip = self._local_address()
            if self.local_ip is None:
                event("no-tunnel-address", level="warn")
                return
        if self.discovery is not None:
            self.discovery.local_ip = self.local_ip
            self.discovery.table.set_own([self.local_ip])
            self.discovery.announce(self._local_vnets(), leaving=leaving)

    # -- reconcile ----------------------------------------------------------------------

    def discovered(self, now: float) -> list[TunnelSpec]:
        specs = {}
        if now < self.provisional_until:
            specs.update(self.provisional)
        else:
            self.provisional.clear()
        for p in self.discovery.table.peers() if self.discovery is not None else []:
            keys = frozenset(v.key for v in p.vnets if v.value < 1 << 24)
            specs[p.address] = TunnelSpec(p.address, p.port, keys, p.origin)
        if self.registry is not None:
            return self.registry.merge_peers(list(specs.values()), self.local_ip)
        return list(specs.values())

    def reconcile(self, now: float) -> None:
        self.host.discovered = self.discovered(now)
        # The view this pass starts from. A change that lands while it runs (a CLI
        # `create` racing a peer update) must trigger another pass, so the pass only marks
        # this seqno seen. Its own transaction's echo costs one more pass, which finds
        # nothing to do and commits nothing (UNCHANGED sends no update), so it settles.
        started_at = self.db.run()
        try:
            if self.registry is not None:
                report = self.registry.sync(self.full)
            else:
                report = sync(self.host, self.full)
        except Exception as exc:  # noqa: BLE001 - one failed pass must not stop the agent
            # OvsvnetError is the expected kind (OVS restarting, a rejected transaction);
            # anything else (an ovs-ofctl that timed out under load, a bug) is logged with
            # its type and retried too: a dead agent would leave tunnels to rot unseen.
            detail = str(exc) if isinstance(exc, OvsvnetError) else f"{type(exc).__name__}: {exc}"
            self.stats.sync_errors += 1
            self.stats.last_sync_error = detail
            # ovs-vswitchd (re)starting: its bridges appear within seconds; try again soon,
            # so a restarted switch gets its flows the moment it can take them
            unreachable = isinstance(exc, OvsUnreachableError)
            if not unreachable or self.stats.sync_errors % 10 == 1:
                event("sync-failed", level="warn", error=detail)
            self.retry_at = now + (0.2 if unreachable else 1.0)
            self.full = True  # what happened to the flows is unknown: read them back
            return
        self.full = False
        self.stats.syncs += 1
        self.notifier.ready(f"{self.stats.syncs} syncs, {self.stats.sync_errors} failed")
        self.dirty = False
        self.seen_seqno = started_at
        if report.rejected != self.rejected:
            for address, why in sorted(report.rejected.items()):
                if self.rejected.get(address) != why:
                    event("peer-rejected", level="warn", peer=address, reason=why)
            self.rejected = dict(report.rejected)
        if report.changed_flows or report.failed:
            event("synced", flows_changed=report.changed_flows,
                  tunnels=len(self.host.learned()), failed=";".join(report.failed) or "-")

    def _check_switch(self) -> None:
        """Has ovs-vswitchd restarted (and lost every flow)? Its pidfile names it, and a pid
        with its start time names one lifetime: a look costs two small reads, so it is taken
        every wake-up and at least every SWITCH_CHECK s, and the reinstall follows at once.
        (A dropped OpenFlow connection would tell the same, but ovsvnet keeps none open;
        the canary below also catches flows deleted by hand.)"""
        now = proc.identity(os.path.join(self.host.rundir, VSWITCHD_PIDFILE))
        if now is None or now == self.vswitchd:
            return  # not running (the pass would fail: wait), or the same process
        if self.vswitchd is not None:
            self.stats.vswitchd_restarts += 1
            event("vswitchd-restart-detected", level="warn", before=self.vswitchd, now=now)
        self.vswitchd = now
        self.dirty = True

    def _check_canary(self) -> None:
        """The slow check: the canary flow is gone while ovs-vswitchd is the same process,
        so someone deleted flows by hand; the next pass reads them back and repairs."""
        if self.db.bridge(M.TRANSPORT_BRIDGE) is not None:
            try:
                present = ofctl.canary_present(self.host.rundir, M.TRANSPORT_BRIDGE)
            except OvsvnetError:
                present = True  # vswitchd is (re)starting: _check_switch sees to it
            if not present:
                self.stats.flows_repaired += 1
                event("flows-missing", level="warn", bridge=M.TRANSPORT_BRIDGE)
                self.full = True
                self.dirty = True
        self._check_arming()

    def _check_arming(self) -> None:
        """Secure tunnels carry traffic only while their IPsec policies are in the kernel
        (secure_arming). The IKE daemon can drop or restore them at any time without
        any OVSDB change, so look every canary_interval and compare the look with what the
        installed flows arm: a difference -> a reconcile pass, which disarms (or re-arms) the
        ports within seconds of charon stopping (starting).

        Not with the previous look: a pass in between (the agent's first, one for an OVSDB
        change, a command's) looked at the kernel at its own moment and the flows keep what
        it saw. Issue 14: the first pass armed, charon stopped, and the first look, with no
        earlier look to differ from, asked for nothing: the tunnels stayed armed for good."""
        from ovsvnet import flows as F
        from ovsvnet.system import flowstore

        try:
            armed = secure_arming(self.host)
        except OvsvnetError:
            armed = frozenset()
        previous, self.armed = self.armed, armed
        transport = self.db.bridge(M.TRANSPORT_BRIDGE)
        record = (flowstore.load(self.host.rundir, M.TRANSPORT_BRIDGE)
                  if transport is not None else None)
        in_flows: set[str] | None = None
        if transport is None:
            stale = False  # no tunnels at all
        elif record is None:
            # no record of the installed flows (no ovs-vswitchd pidfile): compare looks,
            # the first one included (the start's pass looked earlier)
            stale = armed != previous
        else:
            # secure tunnel ports by the match of their table-0 flow; a port without an
            # OpenFlow port can get no flow, so it does not count
            ports = {}
            for port in transport.ports:
                ids = port.external_ids
                if ids.get(M.ROLE) == M.ROLE_TUNNEL and ids.get(M.PORT_LEVEL, "none") != "none":
                    ofp = state.ofport(port.interfaces[0]) if port.interfaces else None
                    if ofp is not None:
                        ports[f"in_port={ofp}"] = port.name
            in_flows = {ports[m.split(",", 1)[0]] for table, _, m in record.flows
                        if table == F.T_CLASSIFY and m.split(",", 1)[0] in ports}
            stale = in_flows != armed & set(ports.values())
        if (previous is not None and armed != previous) or (stale and in_flows is not None):
            event("secure-tunnels-armed", armed=",".join(sorted(armed)) or "-",
                  flows="?" if in_flows is None else ",".join(sorted(in_flows)) or "-")
        self.dirty = self.dirty or stale

    # -- main loop ----------------------------------------------------------------------

    def run_once(self) -> None:
        now = time.monotonic()
        self.notifier.tick(now)
        if self.db.run() != self.seen_seqno:
            self.dirty = True
        self.control.run()
        self.exporter.run()
        heard = self.discovery.drain(now) if self.discovery is not None else set()
        if heard:
            self.dirty = True
            for address in heard:
                self.provisional.pop(address, None)
        if self.discovery is not None:
            self.discovery.save_seen(now)
        if now >= self.next_announce:
            self.announce()
            jitter = random.uniform(-0.1, 0.1) * self.opts.interval
            self.next_announce = now + self.opts.interval + jitter
        if now >= self.next_expire:
            if self.discovery is not None and self.discovery.table.expire(now):
                self.dirty = True
            if self.provisional and now >= self.provisional_until:
                self.dirty = True
            if not os.path.isdir(self.host.rundir):
                event("rundir-gone", level="warn", rundir=self.host.rundir)
                self.stopping = True  # its OVS is gone for good (a lab removed under it)
            self.next_expire = now + 1
        self._check_switch()
        if now >= self.next_canary:
            self._check_canary()
            self.next_canary = now + self.opts.canary_interval
        if self.registry is not None and self.registry.run():
            self.dirty = True
        connected = self.db.connected()
        if self.dirty and now >= self.retry_at and connected:
            started = time.monotonic()
            self.reconcile(now)
            self.stats.last_sync_seconds = round(time.monotonic() - started, 6)
            self.stats.sync_seconds += self.stats.last_sync_seconds
        if self.registry is not None and connected:
            self.registry.publish(self.local_ip, self._local_vnets())

        poller = ovs.poller.Poller()
        self.db.wait(poller)
        if self.registry is not None:
            self.registry.wait(poller)
        if self.discovery is not None:
            poller.fd_wait(self.discovery.fileno(), ovs.poller.POLLIN)
        self.control.wait(poller)
        self.exporter.wait(poller)
        wake = min(self.next_announce, self.next_expire, self.next_canary,
                   self.notifier.next_ping, now + SWITCH_CHECK)
        if self.dirty and connected:
            # (not connected: the IDL wakes us when it is back; an immediate timer here
            # spun at 30% of a core in agents whose ovsdb-server was gone)
            wake = min(wake, max(self.retry_at, now))
        poller.timer_wait(max(0, int((wake - time.monotonic()) * 1000)))
        poller.block()

    def run(self) -> None:
        event("start", system_id=self.system_id, tunnel_ip=self.local_ip or "-",
              group=f"{self.opts.group}:{self.opts.port}" if self.opts.multicast else "off",
              registry=self.registry.remotes if self.registry is not None else "off",
              interval=self.opts.interval, hold=self.opts.hold,
              auth="hmac" if self.opts.key else "off", control=self.control_path)
        if self.discovery is not None and self.opts.key is None:
            event("insecure-discovery", level="warn",
                  detail="no discovery key: anyone who can send UDP to port "
                         f"{self.opts.port} can announce itself as a peer")
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        try:
            while not self.stopping:
                self.run_once()
        finally:
            self.notifier.stopping()
            self.announce(leaving=True)
            if self.registry is not None:
                self.registry.close()
            self.control.close()
            self.exporter.close()
            if self.discovery is not None:
                self.discovery.close()
            event("stop", reason="signal")
