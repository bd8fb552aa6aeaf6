"""The agent's discovery socket: send announcements, take in what peers send (UDP 1798).

The wire format is :mod:`ovsvnet.announce` and the state machine :mod:`ovsvnet.peertable`
(both pure); this module owns the socket: joining the group, telling multicast from
unicast arrivals (IP_PKTINFO), bounding the work per loop turn, and relaying.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ovsvnet.announce import (
    GROUP,
    PORT,
    Announcement,
    DecodeError,
    SequenceGenerator,
    decode,
    encode,
    encode_all,
    encode_relay,
    inner_bytes,
)
from ovsvnet.peertable import Limits, PeerTable
from ovsvnet.system import keyfiles
from ovsvnet.system.log import event
from ovsvnet.vnetid import VnetId

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
#: Datagrams taken in per loop turn, so timers still run under a flood.
DRAIN_BATCH = 256


def read_key_file(path: str) -> bytes:
    """The shared discovery key: private (like ssh's keys) and strong."""
    return keyfiles.read_key(path, "key-file")


#: Clock skew tolerated between hosts (their sequence numbers carry their clocks).
CLOCK_SKEW_MS = 30_000
#: How often the newest sequence number per peer is saved (and at exit).
SAVE_EVERY = 10.0


@dataclass
class DiscoveryOptions:
    group: str = GROUP
    port: int = PORT
    ttl: int = 1
    multicast: bool = True
    key: bytes | None = None
    hold: int = 15
    interval: float = 5.0
    #: where the newest sequence number per peer survives a restart (None: not kept)
    seen_file: str | None = None
    max_peers: int = 1024
    max_per_source: int = 256

    def limits(self) -> Limits:
        """Hold times capped at 10 of our intervals (at least 30 s); sequence clocks within
        the skew ahead and the skew plus a few seconds behind ours."""
        return Limits(max_hold=max(30, math.ceil(10 * self.interval), self.hold),
                      max_peers=self.max_peers, max_per_source=self.max_per_source,
                      max_age_ms=CLOCK_SKEW_MS + 10_000, max_ahead_ms=CLOCK_SKEW_MS)


class Discovery:
    """Announcements out, peers in; the agent calls :meth:`announce` on its timer and
    :meth:`drain` when the socket is readable."""

    def __init__(self, system_id: str, opts: DiscoveryOptions,
                 static_addresses: Callable[[], set[str]], now: float):
        self.system_id = system_id
        self.opts = opts
        self.static_addresses = static_addresses
        self.table = PeerTable(system_id, now, static_addresses(), limits=opts.limits())
        self.seq = SequenceGenerator(int(time.time() * 1000))
        self.sent = 0
        self.sock = self._open()
        self.local_ip: str | None = None
        self._saved: dict[str, int] = {}
        self._clash_logged: dict[str, float] = {}
        self._save_at = now + SAVE_EVERY
        self._load_seen(now)

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(("0.0.0.0", self.opts.port))
        sock.setblocking(False)
        return sock

    def join(self, local_ip: str | None) -> None:
        """Join the group on the interface of ``local_ip`` and send from it."""
        self.local_ip = local_ip
        self.table.set_own([local_ip] if local_ip else [])
        if not self.opts.multicast:
            return
        local = socket.inet_aton(local_ip or "0.0.0.0")
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                             socket.inet_aton(self.opts.group) + local)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, local)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.opts.ttl)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.save_seen()
        self.sock.close()

    # -- replay protection across restarts ------------------------------------------------

    def _load_seen(self, now: float) -> None:
        path = self.opts.seen_file
        if not path:
            return
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read(1 << 20))
        except (OSError, ValueError):
            return
        if isinstance(data, dict):
            seqs = {str(k): v for k, v in data.items() if isinstance(v, int)}
            self.table.remember(seqs, now)
            self._saved = seqs

    def save_seen(self, now: float | None = None) -> None:
        """Write the newest sequence number per origin (atomically), when it changed."""
        path = self.opts.seen_file
        if not path or (now is not None and now < self._save_at):
            return
        if now is not None:
            self._save_at = now + SAVE_EVERY
        seqs = self.table.high_water()
        if seqs == self._saved:
            return
        tmp = f"{path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(seqs, f)
            os.replace(tmp, path)
            self._saved = seqs
        except OSError as exc:
            event("seen-file-failed", level="warn", path=path, error=exc.strerror or str(exc))

    # -- sending ----------------------------------------------------------------------------

    def _send(self, data: bytes, address: str) -> None:
        try:
            self.sock.sendto(data, (address, self.opts.port))
        except OSError as exc:
            event("send-failed", level="warn", to=address, error=exc.strerror or str(exc))

    def destinations(self) -> list[str]:
        dests = [self.opts.group] if self.opts.multicast else []
        return dests + sorted(self.static_addresses())

    def announce(self, vnets: Mapping[VnetId, str], leaving: bool = False) -> bool:
        """Send this host's vnets (or a LEAVE) to the group and every static peer."""
        if self.local_ip is None:
            return False
        seq = self.seq.next(int(time.time() * 1000))
        if leaving:
            msgs = [encode(Announcement(self.system_id, self.local_ip, seq, (), self.opts.hold,
                                        leaving=True), self.opts.key)]
        else:
            msgs = encode_all(self.system_id, self.local_ip, seq, vnets, self.opts.hold,
                              key=self.opts.key)
        for dest in self.destinations():
            for msg in msgs:
                self._send(msg, dest)
        self.sent += 1
        return True

    # -- receiving --------------------------------------------------------------------------

    def drain(self, now: float) -> set[str]:
        """Take in what arrived (at most :data:`DRAIN_BATCH` datagrams); the addresses of
        peers that appeared or changed (empty: nothing to reconcile)."""
        changed: set[str] = set()
        for _ in range(DRAIN_BATCH):
            try:
                data, ancdata, _, src = self.sock.recvmsg(65535, socket.CMSG_SPACE(12))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    break
                raise
            try:
                changed |= self._handle(data, src[0], _is_multicast(ancdata), now)
            except Exception as exc:  # noqa: BLE001 - a datagram must never take the agent down
                self.table.note_decode_error("internal")
                event("message-dropped", level="warn", src=src[0], error=repr(exc))
        return changed

    def _handle(self, data: bytes, src: str, multicast: bool, now: float) -> set[str]:
        if self.local_ip is not None and src == self.local_ip:
            return set()
        try:
            msg = decode(data, self.opts.key)
        except DecodeError as exc:
            self.table.note_decode_error(exc.reason)
            return set()
        before = {p.origin: p.address for p in self.table.peers()}
        verdict = self.table.receive(msg, src, now, self.static_addresses(),
                                     multicast=multicast, wall_ms=int(time.time() * 1000))
        if verdict.action == "id_clash" and now >= self._clash_logged.get(src, 0.0):
            self._clash_logged[src] = now + 60
            event("system-id-clash", level="error", address=src,
                  hint="another host announces this host's system-id; give each host its "
                       "own (ovs-vsctl set Open_vSwitch . external_ids:system-id=...)")
        changed: set[str] = set()
        if verdict.changed:
            peer = self.table.peer(verdict.origin)
            if peer is not None:
                changed.add(peer.address)
                event("peer-up" if verdict.origin not in before else "peer-changed",
                      origin=peer.origin, address=peer.address, via=peer.via or "direct",
                      vnets=",".join(sorted(f"{v.key:x}" for v in peer.vnets)) or "-")
            elif verdict.origin in before:
                changed.add(before[verdict.origin])
                event("peer-left", origin=verdict.origin, address=before[verdict.origin])
        if verdict.relay_to or verdict.to_segment:
            wrapped = encode_relay(self.system_id, inner_bytes(msg, data), self.opts.key)
            for address in verdict.relay_to:
                self._send(wrapped, address)
            if verdict.to_segment and self.opts.multicast:
                self._send(wrapped, self.opts.group)
        return changed


def _is_multicast(ancdata: list[tuple[int, int, bytes]]) -> bool:
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
            _, _, dst = struct.unpack("I4s4s", value[:12])
            return bool(ipaddress.ip_address(dst).is_multicast)
    return False

