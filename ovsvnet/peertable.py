"""Who is out there: the discovery state machine, without sockets or clocks.

The agent decodes a datagram, hands it to :meth:`PeerTable.receive` with the sender's address
and the time, and gets back a :class:`Verdict`: did the table change (so tunnels and flows
need reconciling), and where must the message be passed on. The agent does the sending.

Relaying, and why it cannot loop. Xen forwarded every multicast it heard to every peer and
re-injected what peers sent onto the LAN; two forwarders on one segment, or a cycle of three
peers, fed each other forever. Here:

* **forward** (unicast to static peers): only an ANNOUNCE/LEAVE heard *by multicast*, straight
  from its origin. It goes to every static peer except the sender and the origin's address,
  also when the origin is itself someone's static peer: we cannot see the origin's peer list,
  and the worst case is one duplicate per peer, which the receiver drops.
* **to segment** (multicast onto our LAN): only a message that came *by unicast from a
  configured static peer*, and only if our segment has not already seen it.
* Both are wrapped as RELAY (hop count 1). A RELAY is never forwarded to static peers, and a
  RELAY heard by multicast is never passed on at all. A RELAY by unicast from an address that
  is not a static peer is dropped, and a host's own ANNOUNCE by unicast from such an address
  is learned but not passed on: a stranger cannot make us amplify onto our LAN.
* Each (origin, seq, part) is applied once, forwarded at most once and put on the segment at
  most once per host. So one announcement causes at most ``hosts x (static peers + 1)``
  sends, whatever the topology, and the count does not grow from round to round.

One hop means the relays of all sites must list each other (a full mesh of relays, as Xen's
"peer-add at one machine per subnet with all the others"); a chain of relays does not carry
announcements past the first hop, by design.

Replay and duplicates. Per origin we keep the newest seq seen. Older seqs are *stale*; a
part already applied for the newest seq is a *duplicate*. After a LEAVE or expiry the origin's
newest seq is kept as a tombstone for ``forget_after`` seconds, so a replayed old
announcement cannot resurrect it; the origin's next real announcement has a higher seq.

Parts of a vnet list. The peer's vnets are the last *complete* set (all parts of one seq)
overlaid with the parts of the newest seq received so far. Additions show at once; a vnet
disappears only when a complete newer list lacks it. So a lost part never makes a peer's
vnets flap (which would tear tunnels down and up), at the cost that removals wait for a
complete round. A seq abandoned incomplete is folded into the base set, so nothing heard
recently vanishes because of a lost datagram.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from .announce import Announcement, Relayed, SequenceGenerator
from .vnetid import VnetId

DEFAULT_FORGET_AFTER = 600.0


@dataclass(frozen=True)
class Limits:
    """What the table takes from the network at most (every refusal is counted).

    ``max_hold``: a peer's hold time is capped to this (an attacker's 65535 s cannot keep a
    ghost alive for 18 hours). ``max_peers``/``max_per_source``: peers in all, and peers
    whose newest message came from one source address (a relay passes on a segment);
    ``max_direct_per_source``: hosts speaking for themselves from one address (one host is
    one id; a few allow for a host that changed its id and whose old one has not expired).
    ``max_age_ms``/``max_ahead_ms``: a sequence number carries its sender's clock (see
    :class:`ovsvnet.announce.SequenceGenerator`); one older or further ahead than this
    against ours is refused, so a captured announcement cannot be replayed later, and one
    dated in the far future cannot lock a host out. None turns a check off.
    """

    max_hold: int | None = None
    max_peers: int = 1024
    max_per_source: int = 256
    max_direct_per_source: int = 4
    max_age_ms: int | None = None
    max_ahead_ms: int | None = None

#: Always present in :attr:`PeerTable.counters`; decode drops add ``decode_<reason>``.
COUNTERS = (
    "received",  # every datagram, decoded or not
    "applied",  # new (origin, seq, part) taken in
    "changed",  # ... that changed a peer's address, port or vnets
    "stale",  # older seq than we have (replay, or a reordered old round)
    "duplicate",  # (origin, seq, part) already applied (a second path, a relay's copy)
    "inconsistent",  # same seq, different part count
    "own",  # our own announcement coming back
    "stranger",  # RELAY by unicast from an address that is not a static peer
    "relayed",  # unicast copies we asked the agent to send to static peers
    "to_segment",  # copies we asked the agent to multicast onto our segment
    "expired",  # peers dropped after their hold time
    "left",  # peers removed by their LEAVE
    "incomplete",  # a seq superseded before all its parts arrived
    "spoofed",  # a direct message whose claimed address is not where it came from
    "too_old",  # its sequence number's clock is older than the freshness window
    "future",  # its sequence number's clock is ahead of ours beyond the allowed skew
    "peer_cap",  # a new peer refused: the table is full
    "source_cap",  # a new peer refused: its source already brought too many
    "hold_capped",  # a hold time lowered to the limit
    "id_clash",  # someone else announces this host's own id
    "moved",  # a live peer's id claimed from another address (it may move once it expired)
)


@dataclass
class Peer:
    """A host heard from.

    ``vnets`` maps id to security level (see the module doc for how parts merge); ``static``
    is True when its tunnel address, or the address it spoke to us from, is a configured
    static peer; ``via`` is the relay host id of the newest message, None if heard directly.
    """

    origin: str
    address: str
    port: int
    vnets: dict[VnetId, str]
    last_seen: float
    hold_time: int
    seq: int
    static: bool
    via: str | None


@dataclass(frozen=True)
class Verdict:
    """What one received message did, and what the agent must send on its behalf.

    ``action``: "applied", "stale", "duplicate", "inconsistent", "own" or "stranger".
    For ``relay_to`` (unicast) and ``to_segment`` (multicast) the agent sends
    ``encode_relay(self_id, inner_bytes(msg, datagram), key)``.
    """

    action: str
    origin: str
    changed: bool = False
    relay_to: tuple[str, ...] = ()
    to_segment: bool = False

    @property
    def accepted(self) -> bool:
        return self.action == "applied"


@dataclass
class _Record:
    """Per-origin bookkeeping for its newest seq; ``peer`` is None for a tombstone."""

    seq: int
    parts: int
    peer: Peer | None = None
    base: dict[VnetId, str] = field(default_factory=dict)
    pending: dict[VnetId, str] = field(default_factory=dict)
    applied: set[int] = field(default_factory=set)
    forwarded: set[int] = field(default_factory=set)
    on_segment: set[int] = field(default_factory=set)
    direct_src: str | None = None
    last_src: str | None = None
    gone_at: float = 0.0

    def start(self, seq: int, parts: int) -> bool:
        """Move to a newer seq; True when the old one was left incomplete."""
        incomplete = self.peer is not None and len(self.applied) < self.parts
        if incomplete:
            self.base = {**self.base, **self.pending}
        self.seq, self.parts = seq, parts
        self.pending = {}
        self.applied, self.forwarded, self.on_segment = set(), set(), set()
        return incomplete


class PeerTable:
    """Discovered peers, replay/duplicate filtering and the relay decisions."""

    def __init__(
        self,
        self_id: str,
        now: float,
        static_peers: Iterable[str] = (),
        forget_after: float = DEFAULT_FORGET_AFTER,
        limits: Limits | None = None,
        own_addresses: Iterable[str] = (),
    ):
        self.self_id = self_id
        self.started = now
        self.forget_after = forget_after
        self.limits = limits or Limits()
        self._static: frozenset[str] = frozenset(static_peers)
        self._own: frozenset[str] = frozenset(own_addresses)
        self._records: dict[str, _Record] = {}
        self._counters: Counter[str] = Counter()
        #: address -> when someone there last announced this host's own id
        self.clashes: dict[str, float] = {}

    # ------------------------------------------------------------------ receiving

    def receive(
        self,
        msg: Announcement | Relayed,
        src_addr: str,
        now: float,
        static_peers: Iterable[str] | None = None,
        *,
        multicast: bool | None = None,
        wall_ms: int | None = None,
    ) -> Verdict:
        """Apply one decoded message from ``src_addr``.

        ``static_peers`` (addresses), when given, replaces the configured set. ``multicast``
        says whether the datagram arrived on the group; the agent knows (the socket) and
        should say so. When None it is guessed: from a static peer means unicast.
        ``wall_ms`` is this host's clock (ms since the epoch) for the freshness checks.
        """
        if static_peers is not None:
            self.set_static(static_peers)
        self._counters["received"] += 1
        relay = msg.relay if isinstance(msg, Relayed) else None
        relayed = relay is not None
        ann = msg.announcement if isinstance(msg, Relayed) else msg
        if relay == self.self_id or (ann.origin == self.self_id and (
                not self._own or src_addr in self._own or ann.address in self._own)):
            return self._drop("own", ann.origin)  # our own, looped back by the group or a relay
        if ann.origin == self.self_id:
            self.clashes[ann.address] = now
            return self._drop("id_clash", ann.origin)
        if not relayed and ann.address != src_addr:
            return self._drop("spoofed", ann.origin)
        by_multicast = src_addr not in self._static if multicast is None else multicast
        from_static = src_addr in self._static
        if relayed and not by_multicast and not from_static:
            return self._drop("stranger", ann.origin)
        stale = self._stale_clock(ann.seq, wall_ms)
        if stale:
            return self._drop(stale, ann.origin)

        record = self._records.get(ann.origin)
        if record is not None and record.peer is not None \
                and record.peer.address != ann.address:
            # Only the host at the known address speaks for a live peer: otherwise anyone
            # holding the key could move (or LEAVE-kill) another host's tunnels.
            return self._drop("moved", ann.origin)
        if (record is None or record.peer is None) and not ann.leaving:
            full = self._full(src_addr, relayed)
            if full:
                return self._drop(full, ann.origin)
        if record is not None and ann.seq < record.seq:
            return self._drop("stale", ann.origin)
        if record is not None and ann.seq == record.seq:
            if ann.parts != record.parts:
                return self._drop("inconsistent", ann.origin)
            if ann.part in record.applied:
                self._counters["duplicate"] += 1
                return self._passing_on(record, ann, relayed, src_addr, by_multicast, "duplicate")
            if record.peer is None:
                return self._drop("stale", ann.origin)

        changed = self._apply(ann, record, msg, src_addr, now)
        record = self._records[ann.origin]
        record.applied.add(ann.part)
        self._counters["applied"] += 1
        if changed:
            self._counters["changed"] += 1
        return dataclasses.replace(
            self._passing_on(record, ann, relayed, src_addr, by_multicast, "applied"),
            changed=changed,
        )

    def _apply(
        self,
        ann: Announcement,
        record: _Record | None,
        msg: Announcement | Relayed,
        src_addr: str,
        now: float,
    ) -> bool:
        """Fold a new (origin, seq, part) into the table; True if peers or vnets changed."""
        if record is None:
            record = self._records[ann.origin] = _Record(ann.seq, ann.parts)
        elif ann.seq > record.seq and record.start(ann.seq, ann.parts):
            self._counters["incomplete"] += 1
        via = msg.relay if isinstance(msg, Relayed) else None
        if via is None:
            record.direct_src = src_addr
        record.last_src = src_addr
        if ann.leaving:
            return self._bury(record, now, "left")
        hold = ann.hold_time
        if self.limits.max_hold is not None and hold > self.limits.max_hold:
            hold = self.limits.max_hold
            self._counters["hold_capped"] += 1
        before = self._fingerprint(record.peer)
        record.pending.update({ad.id: ad.security for ad in ann.vnets})
        if len(record.applied | {ann.part}) == record.parts:
            record.base, record.pending = record.pending, {}
        vnets = {**record.base, **record.pending}
        peer = record.peer
        if peer is None:
            peer = record.peer = Peer(
                ann.origin, ann.address, ann.port, vnets, now, hold, ann.seq, False, via
            )
        else:
            peer.address, peer.port, peer.vnets = ann.address, ann.port, vnets
            peer.last_seen, peer.hold_time, peer.seq, peer.via = now, hold, ann.seq, via
        peer.static = self._is_static(record)
        return self._fingerprint(peer) != before

    def _passing_on(
        self,
        record: _Record,
        ann: Announcement,
        relayed: bool,
        src_addr: str,
        by_multicast: bool,
        action: str,
    ) -> Verdict:
        """The relay decision for (origin, seq, part): each duty at most once (module doc)."""
        relay_to: tuple[str, ...] = ()
        to_segment = False
        if by_multicast:
            record.on_segment.add(ann.part)
            if not relayed and ann.part not in record.forwarded:
                record.forwarded.add(ann.part)
                relay_to = tuple(sorted(self._static - {src_addr, ann.address}))
        elif src_addr in self._static and ann.part not in record.on_segment:
            record.on_segment.add(ann.part)
            to_segment = True
        self._counters["relayed"] += len(relay_to)
        self._counters["to_segment"] += int(to_segment)
        return Verdict(action, ann.origin, False, relay_to, to_segment)

    def _stale_clock(self, seq: int, wall_ms: int | None) -> str | None:
        """"too_old"/"future" when the sender's clock in ``seq`` is outside the window."""
        if wall_ms is None:
            return None
        sent_ms = seq // SequenceGenerator.SCALE
        lim = self.limits
        if lim.max_ahead_ms is not None and sent_ms > wall_ms + lim.max_ahead_ms:
            return "future"
        if lim.max_age_ms is not None and sent_ms < wall_ms - lim.max_age_ms:
            return "too_old"
        return None

    def _full(self, src_addr: str, relayed: bool) -> str | None:
        """Why a new peer cannot be taken in (None: it can)."""
        live = [r for r in self._records.values() if r.peer is not None]
        if len(live) >= self.limits.max_peers:
            return "peer_cap"
        cap = self.limits.max_per_source if relayed else self.limits.max_direct_per_source
        same = sum(1 for r in live if r.last_src == src_addr and r.peer is not None
                   and (r.peer.via is not None) == relayed)
        return "source_cap" if same >= cap else None

    def _drop(self, action: str, origin: str) -> Verdict:
        self._counters[action] += 1
        return Verdict(action, origin)

    # ------------------------------------------------------------------ time and config

    def expire(self, now: float) -> list[str]:
        """Remove peers silent for longer than their hold time; forget old tombstones."""
        gone = []
        for origin, record in list(self._records.items()):
            peer = record.peer
            if peer is not None and now - peer.last_seen > peer.hold_time:
                self._bury(record, now, "expired")
                gone.append(origin)
            elif peer is None and now - record.gone_at > self.forget_after:
                del self._records[origin]
        return sorted(gone)

    def _bury(self, record: _Record, now: float, why: str) -> bool:
        """Turn a record into a tombstone; True if a live peer went away."""
        existed = record.peer is not None
        record.peer = None
        record.base, record.pending = {}, {}
        record.gone_at = now
        if existed:
            self._counters[why] += 1
        return existed

    def set_own(self, addresses: Iterable[str]) -> None:
        """This host's own tunnel addresses (an announcement of our id from elsewhere is a
        clash, not our own echo)."""
        self._own = frozenset(a for a in addresses if a)

    def high_water(self) -> dict[str, int]:
        """The newest sequence number seen per origin, to keep across a restart."""
        return {origin: r.seq for origin, r in self._records.items()}

    def remember(self, seqs: dict[str, int], now: float) -> None:
        """Take the high-water marks of an earlier run: each origin's older announcements
        stay stale (a replay after our restart is refused) until it announces anew."""
        for origin, seq in seqs.items():
            if origin not in self._records and isinstance(seq, int) and seq >= 0:
                self._records[origin] = _Record(seq, 1, gone_at=now)

    def set_static(self, addresses: Iterable[str]) -> None:
        """Replace the configured static peer addresses (``vn peer-add``/``peer-delete``)."""
        self._static = frozenset(addresses)
        for record in self._records.values():
            if record.peer is not None:
                record.peer.static = self._is_static(record)

    def note_decode_error(self, reason: str) -> None:
        """Count a datagram that did not decode, under ``decode_<reason>``."""
        self._counters["received"] += 1
        self._counters[f"decode_{reason}"] += 1

    # ------------------------------------------------------------------ views

    def peers(self) -> list[Peer]:
        """Live peers by origin; copies, so callers cannot disturb the table."""
        return [
            dataclasses.replace(r.peer, vnets=dict(r.peer.vnets))
            for _, r in sorted(self._records.items())
            if r.peer is not None
        ]

    def peer(self, origin: str) -> Peer | None:
        record = self._records.get(origin)
        if record is None or record.peer is None:
            return None
        return dataclasses.replace(record.peer, vnets=dict(record.peer.vnets))

    def carrying(self, vnet_id: VnetId) -> set[str]:
        """Origins whose current vnet list includes ``vnet_id`` (the flood set for it)."""
        return {
            origin
            for origin, r in self._records.items()
            if r.peer is not None and vnet_id in r.peer.vnets
        }

    def configured(self) -> dict[str, str | None]:
        """Each static peer address and the origin heard at it, or None (shown as down)."""
        heard: dict[str, str] = {}
        for origin, record in self._records.items():
            if record.peer is None:
                continue
            for addr in (record.peer.address, record.direct_src):
                if addr in self._static:
                    heard.setdefault(addr, origin)
        return {addr: heard.get(addr) for addr in sorted(self._static)}

    @property
    def counters(self) -> dict[str, int]:
        """Totals for ``ovsvnet status`` (received, applied, stale, duplicate, ...)."""
        return {**dict.fromkeys(COUNTERS, 0), **self._counters}

    # ------------------------------------------------------------------ helpers

    def _is_static(self, record: _Record) -> bool:
        peer = record.peer
        return peer is not None and (
            peer.address in self._static or record.direct_src in self._static
        )

    @staticmethod
    def _fingerprint(peer: Peer | None) -> tuple[object, ...] | None:
        if peer is None:
            return None
        vnets = sorted(peer.vnets.items(), key=lambda item: item[0].value)
        return (peer.address, peer.port, tuple(vnets))
