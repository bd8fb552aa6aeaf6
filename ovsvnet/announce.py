"""Discovery announcements: the wire format ovsvnet agents speak on UDP 1798 (224.10.0.1).

Xen's VARP message (43 bytes, one vnet, no version, no authentication) could not say "this
host carries these vnets" and could be forged by anyone on the segment. This format is a new
protocol on the old port: versioned so it can change, self-delimiting so any byte string
either decodes completely or is rejected with a reason, and optionally authenticated with a
shared key. All integers are big-endian (network order). Pure code: no sockets, no clock.

Common header (8 bytes)::

    off  len  field
    0    4    magic   b"OVNT"
    4    1    version 1 (anything else: DecodeError "version")
    5    1    type    1 ANNOUNCE, 2 RELAY, 3 LEAVE
    6    1    flags   bit0 = authenticated (a 16-byte MAC trails); other bits must be 0
    7    1    reserved: sent as 0, ignored on receipt

ANNOUNCE and LEAVE body (LEAVE = a host shutting down cleanly; same layout, usually 0 vnets,
and a fresh seq so it outranks the host's last ANNOUNCE)::

    len    field
    1      origin length L (1..64)
    L      origin host id, UTF-8, printable (the OVS system-id)
    1      address family: 4 or 6
    4|16   tunnel address (not unspecified, not multicast)
    8      seq u64: per-origin, strictly increasing across restarts (see SequenceGenerator)
    2      hold time u16 seconds (>= 1): expire the origin if nothing newer arrives by then
    1      part u8   (0-based)
    1      parts u8  (>= 1, part < parts): one vnet list split over `parts` datagrams,
                     each self-contained and all carrying the same seq
    2      tunnel UDP port u16 (>= 1; 4789 by default)
    2      vnet count N u16
    N*17   per vnet: 16-byte id (big-endian, non-zero, no repeats) + security u8
           (0 none, 1 auth, 2 conf)

RELAY body (a relay host passing on what it heard; receivers never relay a RELAY again)::

    len    field
    1      relay host id length R (1..64)
    R      relay host id, UTF-8, printable
    1      hop count u8 (>= 1; 1 today)
    2      inner length M u16
    M      the original ANNOUNCE or LEAVE datagram, verbatim, its own MAC included, so the
           origin's authentication holds end to end through any relay

Trailer, only when flags bit0 is set::

    16     HMAC-SHA256(key, every preceding byte of this datagram), first 16 bytes

The MAC covers the header, so an ANNOUNCE's MAC can never pass for a RELAY's. A RELAY made
with a key carries two MACs: the origin's (inside) and the relayer's (outside).

Keys. A receiver *with* a key rejects ("auth") anything unauthenticated or with a wrong MAC,
outside and inside a RELAY. A receiver *without* a key accepts both kinds, skips the MAC and
marks the result ``authenticated=False``: it has promised nothing, and it lets a site turn
keys on sender by sender without splitting discovery in two. ``decode`` also takes several
keys (any one may match) so a key can be rotated without a flag day. The MAC proves who
sent a datagram, not when: replays are refused by the sequence numbers, in the peer table.

Size. ``encode_all`` splits a vnet list so every datagram, *and the RELAY that may wrap it*
(worst case: a 64-byte relay id and a MAC), stays within ``max_size`` (1200 by default, under
the 1232-byte payload that the IPv6 minimum MTU guarantees), so relayed copies do not fragment
either. 0 vnets still give one datagram.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import ConfigError, OvsvnetError
from .vnetid import VnetId

MAGIC = b"OVNT"
VERSION = 1
PORT = 1798
GROUP = "224.10.0.1"
DEFAULT_TUNNEL_PORT = 4789
DEFAULT_MAX_SIZE = 1200

TYPE_ANNOUNCE = 1
TYPE_RELAY = 2
TYPE_LEAVE = 3
_TYPES = (TYPE_ANNOUNCE, TYPE_RELAY, TYPE_LEAVE)

FLAG_AUTH = 0x01
_KNOWN_FLAGS = FLAG_AUTH

MAC_LEN = 16
MAX_ID_LEN = 64
MAX_PARTS = 255
MAX_VNETS_PER_MESSAGE = 0xFFFF

SECURITY_CODES = {"none": 0, "auth": 1, "conf": 2}
SECURITY_NAMES = {code: name for name, code in SECURITY_CODES.items()}

#: Every ``DecodeError.reason``; the agent counts drops under these words.
REASONS = ("magic", "version", "type", "flags", "truncated", "trailing", "field", "auth", "nested")

_HEADER = struct.Struct("!4sBBBB")
_ANN_FIXED = struct.Struct("!QHBBHH")  # seq, hold, part, parts, port, count
_VNET_LEN = 17
_RELAY_OVERHEAD_MAX = _HEADER.size + 1 + MAX_ID_LEN + 1 + 2 + MAC_LEN
_SEQ_MAX = (1 << 64) - 1


class DecodeError(OvsvnetError):
    """A datagram that is not a valid announcement; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"bad announcement ({reason}){': ' + detail if detail else ''}")


class EncodeError(ConfigError):
    """Something we were asked to send cannot be expressed (id too long, too many vnets)."""


@dataclass(frozen=True)
class VnetAd:
    """One vnet a host carries, and the security level it carries it at."""

    id: VnetId
    security: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.id, VnetId) or self.id.value == 0:
            raise EncodeError(f"vnet ad: id must be a non-zero VnetId, not {self.id!r}")
        if self.security not in SECURITY_CODES:
            raise EncodeError(f"vnet ad: security {self.security!r} is not none, auth or conf")


@dataclass(frozen=True)
class Announcement:
    """One ANNOUNCE (or LEAVE, ``leaving=True``) datagram, decoded.

    ``authenticated`` is set by :func:`decode` only (a verified MAC); ``encode`` ignores it
    and it takes no part in equality, so ``decode(encode(a, k), k) == a``.
    """

    origin: str
    address: str
    seq: int
    vnets: tuple[VnetAd, ...]
    hold_time: int
    port: int = DEFAULT_TUNNEL_PORT
    part: int = 0
    parts: int = 1
    leaving: bool = False
    authenticated: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Relayed:
    """A RELAY: ``inner`` is the original datagram, ``announcement`` what it decodes to.

    ``authenticated`` is True only when both the relayer's and the origin's MAC verified.
    """

    relay: str
    hops: int
    inner: bytes
    announcement: Announcement
    authenticated: bool = field(default=False, compare=False)


Keys = bytes | Sequence[bytes] | None


class SequenceGenerator:
    """Per-origin sequence numbers that an agent restart never reuses.

    ``seq = start_ms * 1024 + counter``, where ``start_ms`` is the wall clock (ms since the
    epoch) when the agent starts. A later run starts above every number an earlier run used
    as long as the earlier run averaged under 1024 sequence numbers per millisecond of its
    life (it uses one per announcement round). Passing ``now_ms`` to :meth:`next` pulls the
    counter up to the clock, tightening that further; the value never goes down, even if the
    clock does. u64 holds this until the year 500000.
    """

    SCALE = 1024

    def __init__(self, start_ms: int):
        if not isinstance(start_ms, int) or start_ms < 0:
            raise ValueError(f"start_ms must be a non-negative int, not {start_ms!r}")
        self._next = start_ms * self.SCALE
        if self._next > _SEQ_MAX:
            raise ValueError(f"start_ms {start_ms} overflows the u64 sequence number")

    def next(self, now_ms: int | None = None) -> int:
        """The next sequence number (one per announcement round; all its parts share it)."""
        if now_ms is not None:
            self._next = max(self._next, now_ms * self.SCALE)
        seq = self._next
        if seq > _SEQ_MAX:
            raise OverflowError("sequence numbers exhausted")
        self._next += 1
        return seq


# --------------------------------------------------------------------------- encoding


def encode(ann: Announcement, key: bytes | None) -> bytes:
    """One ANNOUNCE/LEAVE datagram; authenticated when ``key`` is given."""
    if not 0 <= ann.seq <= _SEQ_MAX:
        raise EncodeError(f"announce: seq {ann.seq} is outside u64")
    if not 1 <= ann.hold_time <= 0xFFFF:
        raise EncodeError(f"announce: hold time {ann.hold_time} is outside 1..65535")
    if not 1 <= ann.port <= 0xFFFF:
        raise EncodeError(f"announce: port {ann.port} is outside 1..65535")
    if not (1 <= ann.parts <= MAX_PARTS and 0 <= ann.part < ann.parts):
        raise EncodeError(f"announce: part {ann.part} of {ann.parts} is not valid")
    if len(ann.vnets) > MAX_VNETS_PER_MESSAGE:
        raise EncodeError(f"announce: {len(ann.vnets)} vnets do not fit one message")
    if len({ad.id for ad in ann.vnets}) != len(ann.vnets):
        raise EncodeError("announce: a vnet is listed twice")
    body = bytearray(_encode_id("origin", ann.origin))
    body += _encode_address(ann.address)
    body += _ANN_FIXED.pack(ann.seq, ann.hold_time, ann.part, ann.parts, ann.port, len(ann.vnets))
    for ad in ann.vnets:
        body += ad.id.to_bytes() + bytes((SECURITY_CODES[ad.security],))
    return _seal(TYPE_LEAVE if ann.leaving else TYPE_ANNOUNCE, bytes(body), key)


def encode_all(
    origin: str,
    address: str,
    seq: int,
    vnets: Iterable[VnetAd] | Mapping[VnetId, str],
    hold_time: int,
    port: int = DEFAULT_TUNNEL_PORT,
    key: bytes | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> list[bytes]:
    """A host's whole vnet list as one or more datagrams (parts), each within ``max_size``.

    Vnets are sorted by id so the same list always splits the same way.
    """
    if isinstance(vnets, Mapping):
        ads = [VnetAd(vid, sec) for vid, sec in vnets.items()]
    else:
        ads = list(vnets)
    ads.sort(key=lambda ad: ad.id.value)
    empty = encode(Announcement(origin, address, seq, (), hold_time, port), key)
    room = max_size - _RELAY_OVERHEAD_MAX - len(empty)
    per_part = min(room // _VNET_LEN, MAX_VNETS_PER_MESSAGE)
    if per_part < 1:
        raise EncodeError(f"announce: max_size {max_size} leaves no room for a vnet")
    chunks = [tuple(ads[i : i + per_part]) for i in range(0, len(ads), per_part)] or [()]
    if len(chunks) > MAX_PARTS:
        raise EncodeError(
            f"announce: {len(ads)} vnets need {len(chunks)} parts; at most {MAX_PARTS} "
            f"(raise max_size)"
        )
    return [
        encode(Announcement(origin, address, seq, chunk, hold_time, port, i, len(chunks)), key)
        for i, chunk in enumerate(chunks)
    ]


def encode_relay(relay: str, inner: bytes, key: bytes | None, hops: int = 1) -> bytes:
    """Wrap a received ANNOUNCE/LEAVE datagram, unchanged, for passing on."""
    inner = bytes(inner)
    if len(inner) < _HEADER.size or inner[:4] != MAGIC or inner[5] not in (
        TYPE_ANNOUNCE,
        TYPE_LEAVE,
    ):
        raise EncodeError("relay: the inner datagram is not an ANNOUNCE or LEAVE")
    if len(inner) > 0xFFFF:
        raise EncodeError("relay: the inner datagram is too long")
    if not 1 <= hops <= 0xFF:
        raise EncodeError(f"relay: hop count {hops} is outside 1..255")
    body = _encode_id("relay", relay) + struct.pack("!BH", hops, len(inner)) + inner
    return _seal(TYPE_RELAY, body, key)


def inner_bytes(msg: Announcement | Relayed, datagram: bytes) -> bytes:
    """What to hand :func:`encode_relay` when passing ``msg`` (decoded from ``datagram``) on."""
    return msg.inner if isinstance(msg, Relayed) else bytes(datagram)


def _seal(msg_type: int, body: bytes, key: bytes | None) -> bytes:
    if key is not None:
        _check_key(key)
    flags = FLAG_AUTH if key is not None else 0
    data = _HEADER.pack(MAGIC, VERSION, msg_type, flags, 0) + body
    return data + _mac(key, data) if key is not None else data


def _encode_id(what: str, text: str) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else b""
    if not raw or len(raw) > MAX_ID_LEN or not text.isprintable():
        raise EncodeError(
            f"{what} id {text!r} must be 1..{MAX_ID_LEN} bytes of printable UTF-8"
        )
    return bytes((len(raw),)) + raw


def _encode_address(text: str) -> bytes:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError as exc:
        raise EncodeError(f"announce: address {text!r} is not an IP address") from exc
    if addr.is_unspecified or addr.is_multicast:
        raise EncodeError(f"announce: address {text} cannot be a tunnel endpoint")
    return bytes((addr.version,)) + addr.packed


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise ValueError("the discovery key must be non-empty bytes")


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_LEN]


# --------------------------------------------------------------------------- decoding


def decode(data: bytes, key: Keys) -> Announcement | Relayed:
    """Parse and check one datagram. Raises only :class:`DecodeError` for bad bytes."""
    keys = _keys(key)
    msg_type, body, authed = _open(bytes(data), keys)
    if msg_type != TYPE_RELAY:
        return _decode_announcement(msg_type, body, authed)
    reader = _Reader(body)
    relay = reader.ident()
    hops = reader.u8()
    if hops < 1:
        raise DecodeError("field", "hop count 0")
    inner = reader.take(reader.u16())
    reader.end()
    inner_type, inner_body, inner_authed = _open(inner, keys)
    if inner_type == TYPE_RELAY:
        raise DecodeError("nested", "a RELAY inside a RELAY")
    ann = _decode_announcement(inner_type, inner_body, inner_authed)
    return Relayed(relay, hops, inner, ann, authenticated=authed and inner_authed)


def _keys(key: Keys) -> tuple[bytes, ...]:
    if key is None:
        return ()
    keys = (bytes(key),) if isinstance(key, (bytes, bytearray)) else tuple(key)
    for k in keys:
        _check_key(k)
    return keys


def _open(data: bytes, keys: tuple[bytes, ...]) -> tuple[int, bytes, bool]:
    """Check the header and the MAC; return (type, body without MAC, authenticated)."""
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise DecodeError("magic")
    if len(data) < _HEADER.size:
        raise DecodeError("truncated", "shorter than the header")
    _, version, msg_type, flags, _reserved = _HEADER.unpack_from(data)
    if version != VERSION:
        raise DecodeError("version", f"version {version}")
    if msg_type not in _TYPES:
        raise DecodeError("type", f"type {msg_type}")
    if flags & ~_KNOWN_FLAGS:
        raise DecodeError("flags", f"unknown flags 0x{flags:02x}")
    if not flags & FLAG_AUTH:
        if keys:
            raise DecodeError("auth", "not authenticated")
        return msg_type, data[_HEADER.size :], False
    if len(data) < _HEADER.size + MAC_LEN:
        raise DecodeError("truncated", "no room for the MAC")
    signed, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if not keys:
        return msg_type, signed[_HEADER.size :], False
    if not any(hmac.compare_digest(_mac(k, signed), mac) for k in keys):
        raise DecodeError("auth", "MAC does not verify")
    return msg_type, signed[_HEADER.size :], True


def _decode_announcement(msg_type: int, body: bytes, authed: bool) -> Announcement:
    reader = _Reader(body)
    origin = reader.ident()
    address = reader.address()
    seq, hold, part, parts, port, count = reader.unpack(_ANN_FIXED)
    if hold < 1:
        raise DecodeError("field", "hold time 0")
    if parts < 1 or part >= parts:
        raise DecodeError("field", f"part {part} of {parts}")
    if port < 1:
        raise DecodeError("field", "port 0")
    vnets = []
    seen: set[int] = set()
    for _ in range(count):
        value = int.from_bytes(reader.take(16), "big")
        code = reader.u8()
        if value == 0 or value in seen:
            raise DecodeError("field", "vnet id 0 or repeated")
        if code not in SECURITY_NAMES:
            raise DecodeError("field", f"security code {code}")
        seen.add(value)
        vnets.append(VnetAd(VnetId(value), SECURITY_NAMES[code]))
    reader.end()
    return Announcement(
        origin,
        address,
        seq,
        tuple(vnets),
        hold,
        port,
        part,
        parts,
        leaving=msg_type == TYPE_LEAVE,
        authenticated=authed,
    )


class _Reader:
    """Bounds-checked cursor: every overrun is a DecodeError, never an IndexError."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError("truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    def ident(self) -> str:
        length = self.u8()
        if not 1 <= length <= MAX_ID_LEN:
            raise DecodeError("field", f"id length {length}")
        raw = self.take(length)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("field", "id is not UTF-8") from exc
        if not text.isprintable():
            raise DecodeError("field", "id has unprintable characters")
        return text

    def address(self) -> str:
        family = self.u8()
        if family == 4:
            addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                self.take(4)
            )
        elif family == 6:
            addr = ipaddress.IPv6Address(self.take(16))
        else:
            raise DecodeError("field", f"address family {family}")
        if addr.is_unspecified or addr.is_multicast:
            raise DecodeError("field", f"address {addr} is not a tunnel endpoint")
        return str(addr)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError("trailing", f"{len(self.data) - self.pos} bytes after the end")
