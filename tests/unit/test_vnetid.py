"""Vnet id syntax, text forms, the 24-bit key and default names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovsvnet.errors import ConfigError, VnetIdError
from ovsvnet.vnetid import (
    KEY_BITS,
    MAX_KEY,
    VnetId,
    default_bridge_name,
    default_vnif_name,
    parse_vnet_id,
)

ids128 = st.integers(min_value=0, max_value=2**128 - 1)


@given(ids128)
@settings(max_examples=200)
def test_canonical_round_trip(value: int) -> None:
    vid = VnetId(value)
    assert VnetId.parse(str(vid)) == vid
    assert VnetId.parse(vid.canonical.upper()) == vid
    assert VnetId.parse(vid.short) == vid
    assert VnetId.from_bytes(vid.to_bytes()) == vid


@given(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8))
@settings(max_examples=100)
def test_unpadded_long_form(fields: list[int]) -> None:
    text = ":".join(f"{f:x}" for f in fields)
    expected = 0
    for f in fields:
        expected = (expected << 16) | f
    assert VnetId.parse(text).value == expected


def test_short_form_is_hex_last_field() -> None:
    assert VnetId.parse("97") == VnetId.parse("0:0:0:0:0:0:0:97") == VnetId(0x97)
    assert VnetId.parse("  0097\n") == VnetId(0x97)
    assert VnetId.parse("FfFf").value == 0xFFFF
    assert VnetId.parse("1:0:0:0:0:0:0:0").value == 1 << 112


def test_syntax_allows_zero_and_one() -> None:
    assert VnetId.parse("0").value == 0
    assert VnetId.parse("1").value == 1


def test_text_forms() -> None:
    vid = VnetId(0x97)
    assert str(vid) == vid.canonical == "0000:0000:0000:0000:0000:0000:0000:0097"
    assert vid.short == "0097"
    big = VnetId(0x10000)
    assert big.short == big.canonical == "0000:0000:0000:0000:0000:0000:0001:0000"
    assert vid.to_bytes() == bytes(14) + b"\x00\x97"


def test_ordering_and_hashing() -> None:
    assert VnetId(2) < VnetId(3)
    assert sorted([VnetId(9), VnetId(2)]) == [VnetId(2), VnetId(9)]
    assert len({VnetId.parse("97"), VnetId.parse("0:0:0:0:0:0:0:0097")}) == 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["id: ", "'' is empty"]),
        ("   ", ["id: ", "is empty"]),
        ("1:2:3", ["id: '1:2:3' has 3 fields", "1 field (short form) or 8 (long form)"]),
        ("0:0:0:0:0:0:0:0:97", ["has 9 fields"]),
        ("::97", ["has 3 fields", "'::' shorthand is not supported"]),
        ("abcde", ["id: field 'abcde' has more than 4 hex digits"]),
        ("0:0:0:0:0:0:0:12345", ["field '12345' has more than 4 hex digits"]),
        ("0x97", ["id: '0x97': write hex digits without 0x (97 already means 0x97)"]),
        ("0:0:0:0:0:0:0:0X97", ["field '0X97': write hex digits without 0x"]),
        ("g1", ["id: field 'g1' is not hex"]),
        ("0x", ["field '0x' is not hex"]),
        ("1_0", ["field '1_0' is not hex"]),
        ("+1", ["field '+1' is not hex"]),
        ("\u0663", ["is not hex"]),
        ("0:0:0:0:0:0:0: 1", ["field ' 1' is not hex"]),
        ("0:0::0:0:0:0:97", ["field 3 is empty"]),
        ("0:0:0:0:0:0:0:", ["field 8 is empty"]),
    ],
)
def test_parse_errors(text: str, words: list[str]) -> None:
    with pytest.raises(VnetIdError) as info:
        VnetId.parse(text)
    message = str(info.value)
    assert message.startswith("id: ")
    assert "\n" not in message
    for word in words:
        assert word in message


def test_vnet_id_error_is_config_error() -> None:
    assert issubclass(VnetIdError, ConfigError)


def test_parse_vnet_id_refuses_zero_and_one() -> None:
    with pytest.raises(VnetIdError, match=r"^id: 0 is invalid: vnet ids start at 2$"):
        parse_vnet_id("0:0:0:0:0:0:0:0")
    with pytest.raises(VnetIdError, match=r"^id: 1 is reserved for the physical network$"):
        parse_vnet_id("0001")
    assert parse_vnet_id("2").value == 2


def test_constructor_range() -> None:
    with pytest.raises(VnetIdError):
        VnetId(-1)
    with pytest.raises(VnetIdError):
        VnetId(2**128)
    with pytest.raises(VnetIdError):
        VnetId.from_bytes(b"\x00" * 15)


def test_key_maps_small_ids_to_themselves() -> None:
    assert KEY_BITS == 24
    assert VnetId.parse("97").key == 0x97
    assert VnetId(MAX_KEY).key == 2**24 - 1
    assert VnetId.parse("0:0:0:0:0:0:ff:ffff").key == 0xFFFFFF


@pytest.mark.parametrize("value", [2**24, 2**64, 2**128 - 1])
def test_key_refuses_large_ids(value: int) -> None:
    vid = VnetId(value)
    with pytest.raises(VnetIdError) as info:
        _ = vid.key
    message = str(info.value)
    assert message.startswith(f"id: {vid.canonical} is too large for the 24-bit VXLAN key")
    assert "largest is 0000:0000:0000:0000:0000:0000:00ff:ffff" in message
    assert "could share a key" in message


@given(st.integers(0, MAX_KEY), st.integers(0, MAX_KEY))
@settings(max_examples=100)
def test_keys_and_default_names_are_unique(a: int, b: int) -> None:
    va, vb = VnetId(a), VnetId(b)
    assert (va.key == vb.key) == (a == b)
    assert (default_bridge_name(va) == default_bridge_name(vb)) == (a == b)
    assert len(default_bridge_name(va)) <= 14


def test_default_names() -> None:
    assert default_bridge_name(VnetId(0x97)) == "vnet-0097"
    assert default_vnif_name(VnetId(0x97)) == "vnif0097"
    assert default_bridge_name(VnetId(0xFFFF)) == "vnet-ffff"
    assert default_bridge_name(VnetId(0x10000)) == "vnet-010000"
    assert default_vnif_name(VnetId(0xABCDEF)) == "vnifabcdef"
    with pytest.raises(VnetIdError, match="too large"):
        default_bridge_name(VnetId(2**24))
