"""The peer table: every rule on its own, then whole networks of tables that must not loop."""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field

import pytest

from ovsvnet.announce import (
    Announcement,
    Relayed,
    SequenceGenerator,
    VnetAd,
    decode,
    encode,
    encode_all,
    encode_relay,
    inner_bytes,
)
from ovsvnet.peertable import Limits, PeerTable, Verdict
from ovsvnet.vnetid import VnetId

SELF = "self"
STATIC = {"10.9.0.1", "10.9.0.2"}


def vid(v: int) -> VnetId:
    return VnetId(v)


def ann(
    origin="a",
    seq=1,
    vnets=(0x97,),
    part=0,
    parts=1,
    address=None,
    leaving=False,
    hold=30,
    security="none",
) -> Announcement:
    address = address or {"a": "10.0.0.1", "b": "10.0.0.2"}.get(origin, "10.0.0.3")
    ads = tuple(VnetAd(vid(v), security) for v in vnets)
    return Announcement(origin, address, seq, ads, hold, 4789, part, parts, leaving)


def relayed(msg: Announcement, relay="r"):
    data = encode_relay(relay, encode(msg, None), None)
    return decode(data, None)


def table(static=STATIC) -> PeerTable:
    return PeerTable(SELF, 0.0, static)


# ----------------------------------------------------------------------------- basics


def test_new_peer_is_applied_and_changes_the_table():
    t = table()
    v = t.receive(ann(), "10.0.0.1", 1.0, STATIC, multicast=True)
    assert v.accepted and v.changed and v.action == "applied"
    [p] = t.peers()
    assert (p.origin, p.address, p.port, p.seq, p.hold_time, p.via) == (
        "a", "10.0.0.1", 4789, 1, 30, None
    )
    assert p.vnets == {vid(0x97): "none"} and p.last_seen == 1.0 and not p.static
    assert t.carrying(vid(0x97)) == {"a"} and t.carrying(vid(0x98)) == set()


def test_refresh_with_same_content_is_not_a_change():
    t = table()
    t.receive(ann(seq=1), "10.0.0.1", 1.0, STATIC)
    v = t.receive(ann(seq=2), "10.0.0.1", 5.0, STATIC)
    assert v.accepted and not v.changed
    assert t.peer("a").last_seen == 5.0


@pytest.mark.parametrize(
    "newer",
    [ann(seq=2, vnets=(0x98,)), ann(seq=2, address="10.0.0.77"), ann(seq=2, security="conf")],
    ids=["vnets", "address", "security"],
)
def test_content_changes_are_changes(newer):
    t = table()
    t.receive(ann(seq=1, hold=2), "10.0.0.1", 1.0, STATIC)
    if newer.address != "10.0.0.1":  # a live peer is not moved: its old record must expire
        assert t.receive(newer, newer.address, 2.0, STATIC).action == "moved"
        t.expire(4.0)
    assert t.receive(newer, newer.address, 4.5, STATIC).changed


def test_own_announcements_are_ignored():
    t = table()
    assert t.receive(ann(origin=SELF), "10.0.0.5", 1.0, STATIC).action == "own"
    assert t.receive(relayed(ann(origin=SELF)), "10.9.0.1", 1.0, STATIC).action == "own"
    assert t.receive(relayed(ann(), relay=SELF), "10.0.0.5", 1.0, STATIC).action == "own"
    assert t.peers() == [] and t.counters["own"] == 3


def test_older_seq_is_stale():
    t = table()
    t.receive(ann(seq=5), "10.0.0.1", 1.0, STATIC)
    v = t.receive(ann(seq=4, vnets=(0x98,)), "10.0.0.1", 2.0, STATIC)
    assert v.action == "stale" and not v.changed
    assert t.peer("a").vnets == {vid(0x97): "none"} and t.counters["stale"] == 1


def test_same_seq_and_part_is_a_duplicate_and_does_not_refresh():
    t = table()
    t.receive(ann(seq=5), "10.0.0.1", 1.0, STATIC)
    v = t.receive(ann(seq=5), "10.0.0.1", 9.0, STATIC)
    assert v.action == "duplicate" and t.counters["duplicate"] == 1
    assert t.peer("a").last_seen == 1.0  # a replay cannot keep a dead peer alive


def test_a_part_count_that_disagrees_within_a_seq_is_dropped():
    t = table()
    t.receive(ann(seq=5, part=0, parts=2), "10.0.0.1", 1.0, STATIC)
    assert t.receive(ann(seq=5, part=1, parts=3), "10.0.0.1", 1.0, STATIC).action == (
        "inconsistent"
    )


# ----------------------------------------------------------------------------- parts


def test_parts_of_one_seq_are_merged():
    t = table()
    t.receive(ann(seq=1, vnets=(2, 3), part=0, parts=2), "10.0.0.1", 1.0, STATIC)
    assert set(t.peer("a").vnets) == {vid(2), vid(3)}
    v = t.receive(ann(seq=1, vnets=(4,), part=1, parts=2), "10.0.0.1", 1.0, STATIC)
    assert v.changed and set(t.peer("a").vnets) == {vid(2), vid(3), vid(4)}


def test_removals_wait_for_a_complete_newer_list_so_lost_parts_do_not_flap():
    t = table()
    for part, vnets in enumerate([(2, 3), (4,)]):
        t.receive(ann(seq=1, vnets=vnets, part=part, parts=2), "10.0.0.1", 1.0, STATIC)
    # seq 2 drops vnet 3 and adds 5; part 0 alone must not drop 4 (its part 1 is still out)
    v = t.receive(ann(seq=2, vnets=(2, 5), part=0, parts=2), "10.0.0.1", 2.0, STATIC)
    assert v.changed and set(t.peer("a").vnets) == {vid(2), vid(3), vid(4), vid(5)}
    t.receive(ann(seq=2, vnets=(4,), part=1, parts=2), "10.0.0.1", 2.0, STATIC)
    assert set(t.peer("a").vnets) == {vid(2), vid(4), vid(5)}


def test_an_abandoned_incomplete_seq_is_folded_not_lost():
    t = table()
    t.receive(ann(seq=1, vnets=(2,)), "10.0.0.1", 1.0, STATIC)
    t.receive(ann(seq=2, vnets=(3,), part=0, parts=2), "10.0.0.1", 2.0, STATIC)  # part 1 lost
    t.receive(ann(seq=3, vnets=(4,), part=1, parts=2), "10.0.0.1", 3.0, STATIC)  # part 0 lost
    assert set(t.peer("a").vnets) == {vid(2), vid(3), vid(4)}
    assert t.counters["incomplete"] == 1
    t.receive(ann(seq=4, vnets=(4,)), "10.0.0.1", 4.0, STATIC)  # complete: now exact
    assert set(t.peer("a").vnets) == {vid(4)}


def test_zero_vnets_is_a_complete_empty_list():
    t = table()
    t.receive(ann(seq=1, vnets=(2,)), "10.0.0.1", 1.0, STATIC)
    assert t.receive(ann(seq=2, vnets=()), "10.0.0.1", 2.0, STATIC).changed
    assert t.peer("a").vnets == {} and t.carrying(vid(2)) == set()


# ----------------------------------------------------------------------------- leave, expiry


def test_leave_removes_at_once_and_a_replay_cannot_resurrect():
    t = table()
    t.receive(ann(seq=1), "10.0.0.1", 1.0, STATIC)
    v = t.receive(ann(seq=2, vnets=(), leaving=True), "10.0.0.1", 2.0, STATIC)
    assert v.accepted and v.changed and t.peers() == [] and t.counters["left"] == 1
    assert t.receive(ann(seq=1), "10.0.0.1", 3.0, STATIC).action == "stale"
    assert t.receive(ann(seq=2, vnets=(), leaving=True), "10.0.0.1", 3.0, STATIC).action == (
        "duplicate"
    )
    assert t.receive(ann(seq=3), "10.0.0.1", 4.0, STATIC).changed  # it came back
    assert [p.origin for p in t.peers()] == ["a"]


def test_leave_from_an_unknown_origin_changes_nothing():
    t = table()
    v = t.receive(ann(seq=9, vnets=(), leaving=True), "10.0.0.1", 1.0, STATIC)
    assert v.accepted and not v.changed and t.counters["left"] == 0
    assert t.receive(ann(seq=8), "10.0.0.1", 1.0, STATIC).action == "stale"


def test_expiry_after_hold_time_and_tombstone_until_forget_after():
    t = PeerTable(SELF, 0.0, STATIC, forget_after=100.0)
    t.receive(ann(seq=1, hold=30), "10.0.0.1", 0.0, STATIC)
    t.receive(ann(origin="b", seq=1, hold=60), "10.0.0.2", 0.0, STATIC)
    assert t.expire(30.0) == []  # exactly the hold time: still alive
    assert t.expire(30.5) == ["a"]
    assert [p.origin for p in t.peers()] == ["b"] and t.counters["expired"] == 1
    assert t.receive(ann(seq=1), "10.0.0.1", 31.0, STATIC).action == "duplicate"
    assert t.peers()[0].origin == "b"  # the replay did not bring a back
    t.expire(131.0)  # tombstone forgotten (b expired at 131 too, its tombstone is fresh)
    assert t.receive(ann(seq=1), "10.0.0.1", 132.0, STATIC).accepted
    assert t.receive(ann(origin="b", seq=1), "10.0.0.2", 132.0, STATIC).action == "duplicate"


def test_late_part_of_an_expired_seq_does_not_resurrect():
    t = table()
    t.receive(ann(seq=1, part=0, parts=2), "10.0.0.1", 0.0, STATIC)
    t.expire(100.0)
    assert t.receive(ann(seq=1, part=1, parts=2), "10.0.0.1", 101.0, STATIC).action == "stale"
    assert t.peers() == []


def test_static_peers_are_shown_down_until_heard():
    t = table()
    assert t.configured() == {"10.9.0.1": None, "10.9.0.2": None}
    t.receive(ann(origin="b", address="10.9.0.2"), "10.9.0.2", 1.0, STATIC, multicast=False)
    assert t.configured() == {"10.9.0.1": None, "10.9.0.2": "b"}
    assert t.peer("b").static
    t.set_static({"10.9.0.1"})
    assert not t.peer("b").static and t.configured() == {"10.9.0.1": None}
    t.expire(1000.0)
    assert t.configured() == {"10.9.0.1": None}


def test_a_direct_message_must_come_from_the_address_it_claims():
    """Even from a static peer: a host's tunnel address is the address it speaks from
    (anything else could move another host's tunnels anywhere)."""
    t = table()
    v = t.receive(ann(origin="b", address="192.0.2.7"), "10.9.0.1", 1.0, STATIC,
                  multicast=False)
    assert v.action == "spoofed" and t.peer("b") is None and t.counters["spoofed"] == 1
    t.receive(ann(origin="b", address="10.9.0.1"), "10.9.0.1", 1.0, STATIC, multicast=False)
    assert t.peer("b").static and t.configured()["10.9.0.1"] == "b"
    # a relayed message names a third host: its MAC (with a key) vouches for it instead
    assert t.receive(relayed(ann(origin="c", address="10.0.0.3")), "10.9.0.1", 1.0,
                     STATIC, multicast=False).accepted


# ----------------------------------------------------------------------------- relaying


def test_multicast_announce_is_forwarded_to_static_peers_except_sender_and_origin():
    static = {"10.9.0.1", "10.9.0.2", "10.0.0.1"}
    t = table(static)
    v = t.receive(ann(address="10.0.0.1"), "10.0.0.1", 1.0, static, multicast=True)
    assert v.relay_to == ("10.9.0.1", "10.9.0.2") and not v.to_segment
    assert t.counters["relayed"] == 2


def test_forwarded_at_most_once_per_origin_seq_part():
    t = table()
    assert t.receive(ann(), "10.0.0.1", 1.0, STATIC, multicast=True).relay_to
    assert t.receive(ann(), "10.0.0.1", 1.0, STATIC, multicast=True).relay_to == ()
    assert t.receive(ann(part=1, parts=2, seq=2), "10.0.0.1", 1.0, STATIC,
                     multicast=True).relay_to
    assert t.receive(ann(part=0, parts=2, seq=2), "10.0.0.1", 1.0, STATIC,
                     multicast=True).relay_to


def test_relay_heard_by_multicast_is_applied_but_never_passed_on():
    t = table()
    v = t.receive(relayed(ann(), relay="r1"), "10.0.0.8", 1.0, STATIC, multicast=True)
    assert v.accepted and v.relay_to == () and not v.to_segment
    assert t.peer("a").via == "r1"


def test_unicast_from_static_peer_goes_onto_the_segment_once():
    t = table()
    v = t.receive(relayed(ann(), relay="r1"), "10.9.0.1", 1.0, STATIC, multicast=False)
    assert v.accepted and v.to_segment and v.relay_to == ()
    v = t.receive(relayed(ann(), relay="r2"), "10.9.0.2", 1.0, STATIC, multicast=False)
    assert v.action == "duplicate" and not v.to_segment
    assert t.counters["to_segment"] == 1


def test_direct_unicast_from_static_peer_goes_onto_the_segment_not_to_other_peers():
    t = table()
    msg = ann(origin="b", address="10.9.0.1")
    v = t.receive(msg, "10.9.0.1", 1.0, STATIC, multicast=False)
    assert v.to_segment and v.relay_to == ()
    assert t.peer("b").via is None


def test_no_segment_copy_when_the_segment_already_has_it():
    t = table()
    t.receive(relayed(ann(), relay="r1"), "10.0.0.8", 1.0, STATIC, multicast=True)
    v = t.receive(relayed(ann(), relay="r2"), "10.9.0.1", 1.0, STATIC, multicast=False)
    assert v.action == "duplicate" and not v.to_segment


def test_relay_by_unicast_from_a_stranger_is_dropped():
    t = table()
    v = t.receive(relayed(ann()), "192.0.2.66", 1.0, STATIC, multicast=False)
    assert v.action == "stranger" and t.peers() == [] and t.counters["stranger"] == 1


def test_direct_unicast_from_a_stranger_is_learned_but_not_passed_on():
    t = table()
    v = t.receive(ann(), "10.0.0.1", 1.0, STATIC, multicast=False)
    assert v.accepted and v.relay_to == () and not v.to_segment


def test_a_duplicate_still_gets_its_first_forward():
    t = table()
    t.receive(relayed(ann()), "10.0.0.8", 1.0, STATIC, multicast=True)  # via a relay first
    v = t.receive(ann(), "10.0.0.1", 1.0, STATIC, multicast=True)  # then straight from a
    assert v.action == "duplicate" and v.relay_to == tuple(sorted(STATIC))


def test_multicast_is_guessed_from_the_source_when_not_given():
    t = table()
    assert t.receive(ann(), "10.0.0.1", 1.0, STATIC).relay_to  # not a static peer: multicast
    v = t.receive(relayed(ann(origin="b")), "10.9.0.1", 1.0, STATIC)  # static: unicast
    assert v.to_segment


def test_stale_messages_are_never_passed_on():
    t = table()
    t.receive(ann(seq=5), "10.0.0.1", 1.0, STATIC, multicast=True)
    v = t.receive(ann(seq=4), "10.0.0.1", 1.0, STATIC, multicast=True)
    assert v.relay_to == () and not v.to_segment


def test_leave_is_relayed_like_an_announce():
    t = table()
    t.receive(ann(seq=1), "10.0.0.1", 1.0, STATIC, multicast=True)
    v = t.receive(ann(seq=2, vnets=(), leaving=True), "10.0.0.1", 2.0, STATIC, multicast=True)
    assert v.relay_to == tuple(sorted(STATIC))


# ----------------------------------------------------------------------------- views


def test_peers_are_copies_and_counters_are_complete():
    t = table()
    t.receive(ann(), "10.0.0.1", 1.0, STATIC)
    t.peers()[0].vnets.clear()
    assert t.peer("a").vnets and t.peer("zzz") is None
    t.note_decode_error("auth")
    c = t.counters
    for key in ("received", "stale", "duplicate", "relayed", "expired", "own", "left"):
        assert key in c
    assert c["received"] == 2 and c["decode_auth"] == 1


def test_static_peers_argument_updates_the_configured_set():
    t = PeerTable(SELF, 0.0)
    t.receive(ann(), "10.0.0.1", 1.0, {"10.9.0.5"})
    assert t.configured() == {"10.9.0.5": None}


# ----------------------------------------------------------------------------- simulation

KEY = b"sim-key"
HOLD = 30


@dataclass
class Host:
    id: str
    addr: str
    segment: str | None
    statics: set[str] = field(default_factory=set)
    vnets: dict[VnetId, str] = field(default_factory=dict)
    table: PeerTable | None = None
    gen: SequenceGenerator | None = None


class Network:
    """Segments deliver multicast to every member (the sender too: loop-back); unicast goes
    to the host with that address. Counts every delivery; a loop would blow the limit."""

    LIMIT = 100_000

    def __init__(self, hosts: list[Host], key: bytes | None, rng: random.Random | None = None,
                 tell_multicast: bool = True):
        self.hosts = hosts
        self.by_addr = {h.addr: h for h in hosts}
        self.key = key
        self.rng = rng
        self.tell_multicast = tell_multicast
        for i, h in enumerate(hosts):
            h.table = PeerTable(h.id, 0.0, h.statics)
            h.gen = SequenceGenerator(1000 + i)
        self.copies: Counter[tuple[str, str, int, int]] = Counter()

    def members(self, segment: str) -> list[Host]:
        return [h for h in self.hosts if h.segment == segment]

    def round(self, now: float) -> int:
        """Every host announces once; returns the number of datagrams delivered."""
        queue: deque[tuple[Host, str | None, bytes]] = deque()  # (sender, unicast dest, data)
        for h in self.hosts:
            seq = h.gen.next()
            for data in encode_all(h.id, h.addr, seq, h.vnets, HOLD, 4789, self.key):
                queue.extend(self._sends(h, data))
        delivered = self._run(queue, now)
        for h in self.hosts:
            h.table.expire(now)
        return delivered

    def leave(self, h: Host, now: float) -> int:
        data = encode(Announcement(h.id, h.addr, h.gen.next(), (), HOLD, leaving=True), self.key)
        self.hosts.remove(h)
        return self._run(deque(self._sends(h, data)), now)

    @staticmethod
    def _sends(h: Host, data: bytes) -> list[tuple[Host, str | None, bytes]]:
        """An agent's own message: to its segment's group, and to each static peer."""
        mc = [(h, None, data)] if h.segment else []
        return mc + [(h, dest, data) for dest in sorted(h.statics)]

    def _run(self, queue: deque[tuple[Host, str | None, bytes]], now: float) -> int:
        delivered = 0
        while queue:
            if self.rng:
                queue.rotate(-self.rng.randrange(len(queue)))
            sender, dest, data = queue.popleft()
            receivers = self.members(sender.segment) if dest is None else [self.by_addr[dest]]
            for r in receivers:
                if r not in self.hosts:
                    continue  # gone (left)
                delivered += 1
                assert delivered < self.LIMIT, "discovery loops"
                msg = decode(data, self.key)
                inner = msg.announcement if isinstance(msg, Relayed) else msg
                if inner.origin != r.id:
                    self.copies[(r.id, inner.origin, inner.seq, inner.part)] += 1
                mc = (dest is None) if self.tell_multicast else None
                v = r.table.receive(msg, sender.addr, now, r.statics, multicast=mc)
                if v.relay_to or v.to_segment:
                    wrapped = encode_relay(r.id, inner_bytes(msg, data), self.key)
                    queue.extend((r, a, wrapped) for a in v.relay_to)
                    if v.to_segment and r.segment:
                        queue.append((r, None, wrapped))
        return delivered

    def assert_everyone_knows_everyone(self) -> None:
        for h in self.hosts:
            learned = {p.origin: p.vnets for p in h.table.peers()}
            expected = {o.id: o.vnets for o in self.hosts if o is not h}
            assert learned == expected, f"{h.id} learned {sorted(learned)}"


def _host(name: str, n: int, segment: str | None, vnets: int = 2) -> Host:
    vs = {VnetId(0x100 + n * 10 + k): ("none", "auth", "conf")[k % 3] for k in range(vnets)}
    return Host(name, f"10.{n // 100}.{n % 100}.1", segment, vnets=vs)


def _mesh(relays: list[Host]) -> None:
    for r in relays:
        r.statics = {o.addr for o in relays if o is not r}


def cycle_of_three() -> list[Host]:
    relays = [_host(f"r{s}", i * 10, s) for i, s in enumerate("abc")]
    plain = [_host(f"{s}{k}", i * 10 + k, s) for i, s in enumerate("abc") for k in (1, 2)]
    plain[0].vnets = {VnetId(v): "none" for v in range(2, 200)}  # several parts
    _mesh(relays)
    return relays + plain


def two_relays_on_one_segment() -> list[Host]:
    """Xen looped here: each forwarder re-heard what the other re-injected onto the LAN."""
    ra1, ra2, rb = _host("ra1", 1, "a"), _host("ra2", 2, "a"), _host("rb", 3, "b")
    _mesh([ra1, ra2, rb])
    return [ra1, ra2, rb, _host("a1", 4, "a"), _host("b1", 5, "b")]


def two_relays_on_one_segment_each_peered_only_across() -> list[Host]:
    ra1, ra2, rb = _host("ra1", 1, "a"), _host("ra2", 2, "a"), _host("rb", 3, "b")
    ra1.statics = {rb.addr}
    ra2.statics = {rb.addr}
    rb.statics = {ra1.addr, ra2.addr}
    return [ra1, ra2, rb, _host("a1", 4, "a"), _host("b1", 5, "b")]


def three_segments_two_relays_each_and_a_cloud_host() -> list[Host]:
    relays = [_host(f"r{s}{k}", i * 10 + k, s) for i, s in enumerate("abc") for k in (1, 2)]
    plain = [_host(f"{s}3", i * 10 + 3, s, vnets=70) for i, s in enumerate("abc")]
    cloud = _host("cloud", 90, None)  # no multicast: talks to every relay by unicast
    _mesh(relays + [cloud])
    return relays + plain + [cloud]


TOPOLOGIES = {
    "cycle": cycle_of_three,
    "two-relays-one-segment": two_relays_on_one_segment,
    "two-relays-one-segment-across": two_relays_on_one_segment_each_peered_only_across,
    "three-segments": three_segments_two_relays_each_and_a_cloud_host,
}


def _bound(hosts: list[Host]) -> int:
    """Most copies of one (origin, seq, part) one host may get: the origin's own send,
    one forward per relay, one segment copy per relay on its segment."""
    return 1 + 2 * sum(1 for h in hosts if h.statics)


@pytest.mark.parametrize("key", [None, KEY], ids=["keyless", "keyed"])
@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_simulation_everyone_learns_everyone_and_traffic_is_bounded(name, key):
    hosts = TOPOLOGIES[name]()
    net = Network(hosts, key)
    counts = [net.round(now=10.0 * r) for r in range(1, 5)]
    net.assert_everyone_knows_everyone()
    assert len(set(counts)) == 1, counts  # the same every round: nothing accumulates
    assert max(net.copies.values()) <= _bound(hosts)
    for h in hosts:
        c = h.table.counters
        assert c["stale"] == 0 and c["stranger"] == 0 and c["inconsistent"] == 0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_simulation_in_random_order_and_without_the_multicast_hint(name, seed):
    hosts = TOPOLOGIES[name]()
    net = Network(hosts, None, rng=random.Random(seed), tell_multicast=False)
    first = net.round(10.0)
    later = [net.round(10.0 * r) for r in range(2, 5)]
    net.assert_everyone_knows_everyone()
    assert max(net.copies.values()) <= _bound(hosts)
    assert max(later) <= 2 * first  # bounded; order may shift a few copies between rounds


def test_simulation_leave_and_silence_propagate_across_segments():
    hosts = cycle_of_three()
    net = Network(list(hosts), KEY)
    net.round(10.0)
    leaver = next(h for h in hosts if h.id == "b1")
    assert net.leave(leaver, 11.0) > 0
    for h in net.hosts:
        assert "b1" not in {p.origin for p in h.table.peers()}, h.id
        assert h.table.counters["left"] == 1
    # A host that goes silent expires everywhere once its hold time has passed.
    silent = next(h for h in hosts if h.id == "c2")
    net.hosts.remove(silent)
    net.round(10.0 + HOLD)
    assert all("c2" in {p.origin for p in h.table.peers()} for h in net.hosts)
    net.round(10.0 + HOLD + 5)
    for h in net.hosts:
        assert "c2" not in {p.origin for p in h.table.peers()}, h.id
        assert h.table.counters["expired"] == 1
    net.assert_everyone_knows_everyone()


def test_simulation_would_catch_a_xen_style_forwarder(monkeypatch):
    """Guard against a vacuous harness: forwarding every copy, relays included, as Xen did,
    must trip the loop detector on the same topology."""

    def forward_everything(self, record, ann, relayed, src, by_multicast, action):
        if by_multicast:
            dests = tuple(sorted(self._static - {src, ann.address}))
            return Verdict(action, ann.origin, False, dests, False)
        return Verdict(action, ann.origin, False, (), src in self._static)

    monkeypatch.setattr(PeerTable, "_passing_on", forward_everything)
    net = Network(three_segments_two_relays_each_and_a_cloud_host(), None)
    net.LIMIT = 5_000
    with pytest.raises(AssertionError, match="loops"):
        net.round(10.0)


# ----------------------------------------------------------------------------- limits


def test_hold_time_is_capped():
    t = PeerTable(SELF, 0.0, STATIC, limits=Limits(max_hold=15))
    t.receive(ann(hold=65535), "10.0.0.1", 1.0)
    assert t.peer("a").hold_time == 15 and t.counters["hold_capped"] == 1
    assert t.expire(17.0) == ["a"]


def test_sequence_numbers_carry_a_clock_that_must_be_fresh():
    lim = Limits(max_age_ms=60_000, max_ahead_ms=30_000)
    t = PeerTable(SELF, 0.0, STATIC, limits=lim)
    now_ms = 1_800_000_000_000
    seq = SequenceGenerator(now_ms).next()
    assert t.receive(ann(seq=seq), "10.0.0.1", 1.0, wall_ms=now_ms).accepted
    old = SequenceGenerator(now_ms - 61_000).next()
    assert t.receive(ann(origin="b", seq=old), "10.0.0.2", 1.0,
                     wall_ms=now_ms).action == "too_old"
    far = (2**64 - 1)
    assert t.receive(ann(origin="b", seq=far), "10.0.0.2", 1.0,
                     wall_ms=now_ms).action == "future"
    # the real host b is not locked out by the far-future attempt
    assert t.receive(ann(origin="b", seq=SequenceGenerator(now_ms).next()), "10.0.0.2", 2.0,
                     wall_ms=now_ms).accepted
    # nor does a far-future LEAVE cut host a off
    assert t.receive(ann(seq=far, leaving=True), "10.0.0.1", 3.0,
                     wall_ms=now_ms).action == "future"
    assert t.peer("a") is not None


def test_peers_are_capped_in_all_and_per_source():
    t = PeerTable(SELF, 0.0, {"10.9.0.1"}, limits=Limits(max_peers=3, max_per_source=2))
    for i, origin in enumerate("xy"):
        assert t.receive(relayed(ann(origin=origin, address=f"10.0.1.{i + 1}")), "10.9.0.1",
                         1.0, multicast=False).accepted
    assert t.receive(relayed(ann(origin="z", address="10.0.1.9")), "10.9.0.1", 1.0,
                     multicast=False).action == "source_cap"
    assert t.receive(ann(origin="a"), "10.0.0.1", 1.0).accepted
    assert t.receive(ann(origin="b"), "10.0.0.2", 1.0).action == "peer_cap"
    # known peers still update when the table is full
    assert t.receive(ann(origin="a", seq=2, vnets=(0x98,)), "10.0.0.1", 2.0).changed
    assert t.counters["source_cap"] == 1 and t.counters["peer_cap"] == 1
    assert len(t.peers()) == 3


def test_our_own_id_from_another_address_is_a_clash():
    t = PeerTable(SELF, 0.0, STATIC, own_addresses={"10.0.0.5"})
    assert t.receive(ann(origin=SELF, address="10.0.0.5"), "10.0.0.5", 1.0).action == "own"
    assert t.receive(ann(origin=SELF, address="10.0.0.6"), "10.0.0.6", 2.0).action == \
        "id_clash"
    assert t.clashes == {"10.0.0.6": 2.0} and t.peers() == []


def test_high_water_marks_survive_a_restart():
    first = table()
    first.receive(ann(seq=7), "10.0.0.1", 1.0)
    marks = first.high_water()
    assert marks == {"a": 7}
    second = table()
    second.remember(marks, 0.0)
    assert second.receive(ann(seq=7), "10.0.0.1", 1.0).action == "stale"  # a replay
    assert second.receive(ann(seq=8), "10.0.0.1", 1.0).accepted


def test_only_the_host_at_the_known_address_speaks_for_a_live_peer():
    """A key holder elsewhere cannot move host a's tunnels, nor LEAVE-kill it."""
    t = table()
    t.receive(ann(seq=1), "10.0.0.1", 1.0)
    assert t.receive(ann(seq=2, address="10.6.6.6"), "10.6.6.6", 2.0).action == "moved"
    assert t.receive(ann(seq=3, address="10.6.6.6", leaving=True), "10.6.6.6",
                     2.0).action == "moved"
    assert t.peer("a").address == "10.0.0.1" and t.counters["moved"] == 2
    assert t.receive(ann(seq=4, leaving=True), "10.0.0.1", 3.0).accepted  # a itself may
    assert t.peer("a") is None


def test_one_address_speaks_for_few_ids_directly():
    t = PeerTable(SELF, 0.0, STATIC, limits=Limits(max_direct_per_source=2))
    for i, origin in enumerate("xyz"):
        v = t.receive(ann(origin=origin, address="10.0.0.7"), "10.0.0.7", 1.0)
        assert v.action == ("applied" if i < 2 else "source_cap")
