"""Vnet ids: Xen's 128-bit identifiers, their text forms, and the 24-bit wire key.

Xen 3.0 wrote ids as 8 colon-separated hex fields (``0000:...:0097``) and accepted a single
field as shorthand for the last one, so ``97`` means 0x97 (hex, not decimal). We keep that
syntax so old config files mean the same vnet, but parse it strictly: the kernel silently
ignored junk after the 8th field, and ``vn`` padded short lists, both of which let a typo name
a different vnet without a word.

The wire key: VXLAN (and Geneve) carry a 24-bit key, not 128 bits. Ids below 2**24 map to
the same number; any other mapping (hashing, truncation) would eventually let two different
vnets share a key and silently bridge their traffic together. So ovsvnet refuses ids that do
not fit: an error at definition time is better than two tenants on one LAN.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .errors import VnetIdError

ID_BITS = 128
FIELDS = 8
FIELD_DIGITS = 4
KEY_BITS = 24
MAX_KEY = (1 << KEY_BITS) - 1
VNET_INVALID = 0
VNET_PHYS = 1

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, order=True)
class VnetId:
    """A 128-bit vnet id; ordering follows the numeric value."""

    value: int

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            raise VnetIdError(f"id: value must be an int, not {type(self.value).__name__}")
        if not 0 <= self.value < (1 << ID_BITS):
            raise VnetIdError(f"id: value {self.value} is outside 0 .. 2**128-1")

    @classmethod
    def parse(cls, text: str) -> VnetId:
        """Parse the short or long text form; syntax only (0 and 1 pass)."""
        stripped = text.strip()
        if not stripped:
            raise VnetIdError(f"id: {text!r} is empty")
        fields = stripped.split(":")
        if len(fields) not in (1, FIELDS):
            hint = "; '::' shorthand is not supported" if "::" in stripped else ""
            raise VnetIdError(
                f"id: {stripped!r} has {len(fields)} fields; "
                f"write 1 field (short form) or {FIELDS} (long form){hint}"
            )
        value = 0
        for index, field in enumerate(fields, start=1):
            value = (value << 16) | _parse_field(stripped, field, index, len(fields) == 1)
        return cls(value)

    @functools.cached_property
    def canonical(self) -> str:
        """The 8-field ``%04x`` form Xen printed; the one spelling we store and show."""
        return ":".join(f"{(self.value >> (16 * i)) & 0xFFFF:04x}" for i in reversed(range(FIELDS)))

    @property
    def short(self) -> str:
        """``%04x`` of the value when it fits one field, else the canonical form."""
        return f"{self.value:04x}" if self.value <= 0xFFFF else self.canonical

    @property
    def key(self) -> int:
        """The 24-bit tunnel key: the id itself; larger ids are refused (see module doc)."""
        if self.value > MAX_KEY:
            largest = VnetId(MAX_KEY).canonical
            raise VnetIdError(
                f"id: {self.canonical} is too large for the {KEY_BITS}-bit VXLAN key "
                f"(largest is {largest}); ovsvnet refuses ids that could share a key"
            )
        return self.value

    def to_bytes(self) -> bytes:
        """16 bytes big-endian, as Xen put the id on the wire (8 big-endian u16)."""
        return self.value.to_bytes(16, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> VnetId:
        """Inverse of :meth:`to_bytes`."""
        if len(data) != 16:
            raise VnetIdError(f"id: expected 16 bytes, got {len(data)}")
        return cls(int.from_bytes(data, "big"))

    def __str__(self) -> str:
        return self.canonical


def _parse_field(text: str, field: str, index: int, short_form: bool) -> int:
    """One field of 1-4 hex digits; errors name the field so long ids are easy to fix."""
    if field == "":
        raise VnetIdError(f"id: {text!r}: field {index} is empty; write 1-4 hex digits")
    if field[:2] in ("0x", "0X") and _is_hex(field[2:]):
        rest = field[2:]
        where = repr(text) if short_form else f"field {field!r}"
        raise VnetIdError(
            f"id: {where}: write hex digits without 0x ({rest} already means 0x{rest})"
        )
    if not _is_hex(field):
        raise VnetIdError(f"id: field {field!r} is not hex")
    if len(field) > FIELD_DIGITS:
        raise VnetIdError(f"id: field {field!r} has more than {FIELD_DIGITS} hex digits")
    return int(field, 16)


def _is_hex(text: str) -> bool:
    """Explicit digit set: ``int(x, 16)`` also takes '_', '+', spaces and Unicode digits."""
    return bool(text) and all(c in _HEX_DIGITS for c in text)


def validate_vnet_id(vid: VnetId) -> VnetId:
    """Refuse the two ids Xen gave special meaning; returns ``vid`` for chaining."""
    if vid.value == VNET_INVALID:
        raise VnetIdError("id: 0 is invalid: vnet ids start at 2")
    if vid.value == VNET_PHYS:
        raise VnetIdError("id: 1 is reserved for the physical network")
    return vid


def parse_vnet_id(text: str) -> VnetId:
    """Parse an id a user may define a vnet with (not 0, not 1)."""
    return validate_vnet_id(VnetId.parse(text))


def default_bridge_name(vid: VnetId) -> str:
    """``vnet-%04x`` of the key (``vnet-%06x`` above 0xffff): unique because the key is, and
    never of the form ``vnet<number>`` libvirt gives its taps (``vnet1000`` would be the
    1001st tap and the bridge of id 0x1000 without the ``-``)."""
    return _default_name("vnet-", vid)


def default_vnif_name(vid: VnetId) -> str:
    """``vnif%04x`` of the key, like the Xen kernel module's default device name."""
    return _default_name("vnif", vid)


def _default_name(prefix: str, vid: VnetId) -> str:
    key = vid.key
    return f"{prefix}{key:04x}" if key <= 0xFFFF else f"{prefix}{key:06x}"
