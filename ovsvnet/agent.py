"""``ovsvnet agent``: discovery, and keeping tunnels and flows right while things change.

One single-threaded loop (python-ovs poller) waits on four things at once:

* the OVSDB IDL: any change to definitions, peers or ports -> reconcile;
* the discovery socket (UDP 1798): announcements from peers (multicast on the segment,
  unicast from static peers and their relays) -> the peer table -> reconcile if it changed;
* timers: announce every ``interval``, expire silent peers, check the flow canary;
* the control socket (``ovs-appctl -t <rundir>/ovsvnet-agent.ctl status``).

Self-repair: if the canary flow is gone, ovs-vswitchd restarted and lost every flow, so the
flow cache is dropped and everything is reinstalled; if ovsdb-server goes away the IDL
reconnects by itself and the loop reconciles once the fresh copy arrives. Meanwhile the data
plane keeps forwarding with the flows it has.

Restart without a flap: discovered peers are recorded on their tunnel ports (origin and
vnets in external_ids), and a starting agent takes them as provisional peers, so its first
reconcile computes the same tunnels and flows as before and changes nothing. They expire
like any peer if they do not announce themselves within their hold time.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import os
import random
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import ovs.poller
import ovs.unixctl
import ovs.unixctl.server

from ovsvnet import model as M
from ovsvnet import ofctl, ops, state
from ovsvnet.announce import (
    GROUP, PORT, Announcement, DecodeError, SequenceGenerator, decode, encode, encode_all,
    encode_relay, inner_bytes,
)
from ovsvnet.errors import ConfigError, OvsvnetError
from ovsvnet.peertable import PeerTable
from ovsvnet.reconcile import TunnelSpec
from ovsvnet.registry_agent import RegistrySync
from ovsvnet.vnetid import VnetId

CONTROL_NAME = "ovsvnet-agent.ctl"
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def log(event: str, level: str = "info", **fields: Any) -> None:
    """One structured line per event on stderr (journald keeps it under systemd)."""
    parts = [f"ts={time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}", f"level={level}",
             f"event={event}"]
    for key, value in fields.items():
        text = str(value)
        parts.append(f"{key}={json.dumps(text) if (' ' in text or not text) else text}")
    print(" ".join(parts), file=sys.stderr, flush=True)


def read_key_file(path: str) -> bytes:
    """The shared discovery key; refused if others can read it (like ssh does)."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as exc:
        raise ConfigError(f"key-file: cannot read {path}: {exc.strerror}") from exc
    if st.st_mode & 0o077:
        raise ConfigError(f"key-file: {path} is readable by others (mode "
                          f"{st.st_mode & 0o777:04o}); run chmod 600 {path}")
    if len(key) < 16:
        raise ConfigError(f"key-file: {path} holds {len(key)} bytes; use at least 16")
    return key


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
    registry: str | None = None  # cluster registry remotes (ovsvnet.registry_agent)

    @property
    def hold(self) -> int:
        return self.hold_time or max(1, math.ceil(3 * self.interval))


@dataclass
class AgentStats:
    syncs: int = 0
    sync_errors: int = 0
    last_sync_error: str | None = None
    vswitchd_restarts: int = 0
    announcements_sent: int = 0
    started: float = field(default_factory=time.time)


class Agent:
    def __init__(self, host: ops.Host, opts: AgentOptions):
        self.host = host
        self.opts = opts
        self.db = host.db
        self.system_id = (self.db.ovs.external_ids.get("system-id")
                          or socket.gethostname())
        now = time.monotonic()
        self.table = PeerTable(self.system_id, now, self._static_addresses())
        self.seq = SequenceGenerator(int(time.time() * 1000))
        self.cache: ops.FlowCache = {}
        self.stats = AgentStats()
        self.stopping = False
        self.dirty = True
        self.seen_seqno = -1
        self.provisional: dict[str, TunnelSpec] = {}
        self._announced: tuple[int, dict[VnetId, str]] = (-1, {})
        self.provisional_until = now + opts.hold
        self._seed_from_tunnels()
        self.registry = (RegistrySync(self.host, opts.registry, self.system_id, log)
                         if opts.registry else None)
        if self.registry is not None:
            self.registry.resume(self.provisional)
        self.local_ip = self._local_address()
        self.sock = self._open_socket()
        self.control = self._open_control()
        now = time.monotonic()
        self.next_announce = now
        self.next_expire = now + 1
        self.next_canary = now + opts.canary_interval
        self.retry_at = 0.0
        #: Secure tunnel ports armed at the last check (ops.secure_arming); None: not yet.
        self.armed: frozenset[str] | None = None

    # -- setup --------------------------------------------------------------------------

    def _static_addresses(self) -> set[str]:
        return {p.address for p in state.static_peers(self.db)}

    def _seed_from_tunnels(self) -> None:
        """Discovered peers from before a restart, as recorded on their tunnel ports."""
        transport = self.db.bridge(M.TRANSPORT_BRIDGE)
        if transport is None:
            return
        for port in transport.ports:
            ext = port.external_ids
            if ext.get(M.ROLE) != M.ROLE_TUNNEL or M.PORT_ORIGIN not in ext:
                continue
            keys = frozenset(int(k, 16) for k in ext.get(M.PORT_VNETS, "").split(",") if k)
            options = port.interfaces[0].options
            self.provisional[ext[M.PORT_PEER]] = TunnelSpec(
                ext[M.PORT_PEER], int(options.get("dst_port", M.VXLAN_PORT)), keys,
                ext[M.PORT_ORIGIN], source=ext.get(M.SOURCE))
        if self.provisional:
            log("resume", peers=",".join(sorted(self.provisional)))

    def _local_address(self) -> str | None:
        und = ops.underlay(self.host, sorted(self._static_addresses()))
        return self.opts.interface or und.local_ip

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(("0.0.0.0", self.opts.port))
        if self.opts.multicast:
            local = socket.inet_aton(self.local_ip or "0.0.0.0")
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            socket.inet_aton(self.opts.group) + local)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, local)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.opts.ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock.setblocking(False)
        return sock

    def _open_control(self) -> ovs.unixctl.server.UnixctlServer | None:
        path = self.opts.control or os.path.join(self.host.rundir, CONTROL_NAME)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket of a dead agent; a live one would hold a pidfile
        error, server = ovs.unixctl.server.UnixctlServer.create(path)
        if error:
            log("control-socket-failed", level="warn", path=path, error=os.strerror(error))
            return None
        ovs.unixctl.command_register("status", "", 0, 0, self._cmd_status, None)
        ovs.unixctl.command_register("sync", "", 0, 0, self._cmd_sync, None)
        ovs.unixctl.command_register("exit", "", 0, 0, self._cmd_exit, None)
        self.control_path = path
        return server

    # -- control commands -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        peers = []
        for p in self.table.peers():
            peers.append({
                "origin": p.origin, "address": p.address, "port": p.port,
                "vnets": sorted(f"{vid.key:04x}" if vid.value < 1 << 24 else str(vid)
                                for vid in p.vnets),
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
            "peers": peers, "static_peers": self.table.configured(),
            "counters": self.table.counters,
            "syncs": self.stats.syncs, "sync_errors": self.stats.sync_errors,
            "last_sync_error": self.stats.last_sync_error,
            "vswitchd_restarts": self.stats.vswitchd_restarts,
            "announcements_sent": self.stats.announcements_sent,
            "uptime": round(time.time() - self.stats.started, 1),
            "registry": self.registry.status() if self.registry is not None else None,
        }

    def _cmd_status(self, conn: Any, argv: list[str], aux: Any) -> None:
        conn.reply(json.dumps(self.status(), sort_keys=True))

    def _cmd_sync(self, conn: Any, argv: list[str], aux: Any) -> None:
        self.cache.clear()
        self.dirty = True
        conn.reply("sync scheduled")

    def _cmd_exit(self, conn: Any, argv: list[str], aux: Any) -> None:
        self.stopping = True
        conn.reply("exiting")

    # -- discovery ----------------------------------------------------------------------

    def _local_vnets(self) -> dict[VnetId, str]:
        """The vnets to announce; re-read only when OVSDB changed (parsing 1000 stored
        definitions every announcement cost a fifth of a core at idle)."""
        seqno = self.db.idl.change_seqno
        if self._announced[0] != seqno:
            defs, _ = state.definitions(self.db)
            sec = ops.security(self.host)
            self._announced = (seqno, {c.id: c.security for c in defs.values()
                                       if ops.is_active(self.host, c, sec)})
        return self._announced[1]

    def _send(self, data: bytes, address: str) -> None:
        try:
            self.sock.sendto(data, (address, self.opts.port))
        except OSError as exc:
            log("send-failed", level="warn", to=address, error=exc.strerror)

    def _destinations(self) -> list[str]:
        dests = [self.opts.group] if self.opts.multicast else []
        return dests + sorted(self._static_addresses())

    def announce(self, leaving: bool = False) -> None:
        if self.local_ip is None:
            self.local_ip = self._local_address()
            if self.local_ip is None:
                log("no-tunnel-address", level="warn")
                return
        seq = self.seq.next(int(time.time() * 1000))
        if leaving:
            msgs = [encode(Announcement(self.system_id, self.local_ip, seq, (), self.opts.hold,
                                        leaving=True), self.opts.key)]
        else:
            msgs = encode_all(self.system_id, self.local_ip, seq, self._local_vnets(),
                              self.opts.hold, key=self.opts.key)
        for dest in self._destinations():
            for msg in msgs:
                self._send(msg, dest)
        self.stats.announcements_sent += 1

    def _drain(self, now: float) -> None:
        for _ in range(256):  # bounded per loop turn, so timers still run under a flood
            try:
                data, ancdata, _, src = self.sock.recvmsg(65535, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    return
                raise
            try:
                self._handle(data, src[0], self._is_multicast(ancdata), now)
            except Exception as exc:  # a datagram must never take the agent down
                self.table.note_decode_error("internal")
                log("message-dropped", level="warn", src=src[0], error=repr(exc))

    @staticmethod
    def _is_multicast(ancdata: list[tuple[int, int, bytes]]) -> bool:
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
                _, _, dst = struct.unpack("I4s4s", value[:12])
                return ipaddress.ip_address(dst).is_multicast
        return False

    def _handle(self, data: bytes, src: str, multicast: bool, now: float) -> None:
        if self.local_ip is not None and src == self.local_ip:
            return
        try:
            msg = decode(data, self.opts.key)
        except DecodeError as exc:
            self.table.note_decode_error(exc.reason)
            return
        before = {p.origin: p.address for p in self.table.peers()}
        verdict = self.table.receive(msg, src, now, self._static_addresses(),
                                     multicast=multicast)
        if verdict.changed:
            self.dirty = True
            peer = self.table.peer(verdict.origin)
            if peer is not None:
                self.provisional.pop(peer.address, None)
                log("peer-up" if verdict.origin not in before else "peer-changed",
                    origin=peer.origin, address=peer.address, via=peer.via or "direct",
                    vnets=",".join(sorted(f"{v.key:x}" for v in peer.vnets)) or "-")
            elif verdict.origin in before:
                log("peer-left", origin=verdict.origin, address=before[verdict.origin])
        if verdict.relay_to or verdict.to_segment:
            wrapped = encode_relay(self.system_id, inner_bytes(msg, data), self.opts.key)
            for address in verdict.relay_to:
                self._send(wrapped, address)
            if verdict.to_segment and self.opts.multicast:
                self._send(wrapped, self.opts.group)

    # -- reconcile ----------------------------------------------------------------------

    def discovered(self, now: float) -> list[TunnelSpec]:
        specs = {}
        if now < self.provisional_until:
            specs.update(self.provisional)
        else:
            self.provisional.clear()
        for p in self.table.peers():
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
        self.db.idl.run()
        started_at = self.db.idl.change_seqno
        try:
            if self.registry is not None:
                report = self.registry.sync(self.cache)
            else:
                report = ops.sync(self.host, self.cache)
        except Exception as exc:  # noqa: BLE001 - one failed pass must not stop the agent
            # OvsvnetError is the expected kind (OVS restarting, a rejected transaction);
            # anything else (an ovs-ofctl that timed out under load, a bug) is logged with
            # its type and retried too: a dead agent would leave tunnels to rot unseen.
            detail = str(exc) if isinstance(exc, OvsvnetError) else f"{type(exc).__name__}: {exc}"
            self.stats.sync_errors += 1
            self.stats.last_sync_error = detail
            log("sync-failed", level="warn", error=detail)
            self.retry_at = now + 1.0
            self.cache.clear()
            return
        self.stats.syncs += 1
        self.dirty = False
        self.seen_seqno = started_at
        if report.changed_flows or report.failed:
            log("synced", flows_changed=report.changed_flows,
                tunnels=len(self.host.discovered),
                failed=";".join(report.failed) or "-")

    def _check_canary(self) -> None:
        if self.db.bridge(M.TRANSPORT_BRIDGE) is None:
            return
        try:
            present = ofctl.canary_present(self.host.rundir, M.TRANSPORT_BRIDGE)
        except OvsvnetError:
            present = False  # vswitchd is (re)starting: reinstall once it answers
        if not present:
            if self.cache:
                self.stats.vswitchd_restarts += 1
                log("vswitchd-restart-detected", level="warn")
            self.cache.clear()
            self.dirty = True
        self._check_arming()

    def _check_arming(self) -> None:
        """Secure tunnels carry traffic only while their IPsec policies are in the kernel
        (ops.secure_arming). The IKE daemon can drop or restore them at any time without
        any OVSDB change, so look every canary_interval: a changed set -> a reconcile pass,
        which disarms (or re-arms) the ports within seconds of charon stopping (starting)."""
        try:
            armed = ops.secure_arming(self.host)
        except OvsvnetError:
            armed = frozenset()
        if armed != self.armed:
            first = self.armed is None
            if not first:
                log("secure-tunnels-armed", armed=",".join(sorted(armed)) or "-")
            self.armed = armed
            # the first look follows the start's own pass; it only matters when something
            # is armed (never on the userspace datapath, so no extra pass there)
            self.dirty = self.dirty or not first or bool(armed)

    # -- main loop ----------------------------------------------------------------------

    def _connected(self) -> bool:
        return bool(self.db.idl._session.is_connected()) and self.db.idl.has_ever_connected()

    def run_once(self) -> None:
        now = time.monotonic()
        self.db.idl.run()
        if self.db.idl.change_seqno != self.seen_seqno:
            self.dirty = True
        if self.control is not None:
            self.control.run()
        self._drain(now)
        if now >= self.next_announce:
            self.announce()
            jitter = random.uniform(-0.1, 0.1) * self.opts.interval
            self.next_announce = now + self.opts.interval + jitter
        if now >= self.next_expire:
            if self.table.expire(now):
                self.dirty = True
            if self.provisional and now >= self.provisional_until:
                self.dirty = True
            self.next_expire = now + 1
        if now >= self.next_canary:
            self._check_canary()
            self.next_canary = now + self.opts.canary_interval
        if self.registry is not None and self.registry.run():
            self.dirty = True
        if self.dirty and now >= self.retry_at and self._connected():
            self.reconcile(now)
        if self.registry is not None and self._connected():
            self.registry.publish(self.local_ip, self._local_vnets())

        poller = ovs.poller.Poller()
        self.db.idl.wait(poller)
        if self.registry is not None:
            self.registry.wait(poller)
        poller.fd_wait(self.sock.fileno(), ovs.poller.POLLIN)
        if self.control is not None:
            self.control.wait(poller)
        wake = min(self.next_announce, self.next_expire, self.next_canary)
        if self.dirty:
            wake = min(wake, max(self.retry_at, now))
        poller.timer_wait(max(0, int((wake - time.monotonic()) * 1000)))
        poller.block()

    def run(self) -> None:
        log("start", system_id=self.system_id, tunnel_ip=self.local_ip or "-",
            group=f"{self.opts.group}:{self.opts.port}" if self.opts.multicast else "off",
            registry=self.registry.remotes if self.registry is not None else "off",
            interval=self.opts.interval, hold=self.opts.hold,
            auth="hmac" if self.opts.key else "off",
            control=getattr(self, "control_path", "-"))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        try:
            while not self.stopping:
                self.run_once()
        finally:
            self.announce(leaving=True)
            if self.registry is not None:
                self.registry.close()
            if self.control is not None:
                self.control.close()
            self.sock.close()
            log("stop", reason="signal or exit command")


def query(rundir: str, command: str = "status", path: str | None = None) -> Any:
    """Ask a running agent over its control socket; None if no agent answers."""
    import ovs.unixctl.client
    path = path or os.path.join(rundir, CONTROL_NAME)
    if not os.path.exists(path):
        return None
    error, client = ovs.unixctl.client.UnixctlClient.create(path)
    if error:
        return None
    try:
        error, err, result = client.transact(command, [])
    finally:
        client.close()
    if error or err is not None:
        return None
    try:
        return json.loads(result)
    except (TypeError, ValueError):
        return result
