"""Vnet definitions: field rules, the SXP file format, located errors, examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovsvnet.config import (
    HOST_NAMES,
    IFNAME_MAX,
    OTHER_BRIDGES,
    RESERVED_NAMES,
    RESERVED_PREFIXES,
    SECURITY_LEVELS,
    VnetConfig,
    auto_name_clash,
    validate_ifname,
)
from ovsvnet.errors import ConfigError, SxpError, VnetIdError
from ovsvnet.vnetid import VnetId

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def sxp_error(text: str, source: str = "t.sxp") -> SxpError:
    with pytest.raises(SxpError) as info:
        VnetConfig.from_sxp(text, source)
    return info.value


# --- build and defaults ----------------------------------------------------------------------


def test_build_defaults() -> None:
    c = VnetConfig.build("97")
    assert c == VnetConfig(id=VnetId(0x97), bridge="vnet-0097", vnetif=None, security="none")
    assert c.key == 0x97
    assert VnetConfig.build(VnetId(0x10000)).bridge == "vnet-010000"


@pytest.mark.parametrize("key", [0x2, 0x97, 0x1000, 0x9999, 0xFFFF, 0x100000, 0x999999,
                                 0xFFFFFF])
def test_default_bridge_never_has_the_form_of_an_automatic_name(key: int) -> None:
    """libvirt names its taps vnet0, vnet1, ...: vnet%04x of 0x1000 was its tap 1000."""
    name = VnetConfig.build(VnetId(key)).bridge
    assert auto_name_clash(name) is None
    assert len(name) <= IFNAME_MAX and validate_ifname("bridge", name) == name


def test_automatic_names_are_accepted_and_recognised() -> None:
    """Xen's explicit vnet97 keeps working; doctor warns (auto_name_clash says whose)."""
    assert VnetConfig.build("97", bridge="vnet97").bridge == "vnet97"
    assert "libvirt's automatic tap names" in (auto_name_clash("vnet97") or "")
    assert "macvtap" in (auto_name_clash("macvtap3") or "")
    assert "QEMU" in (auto_name_clash("tap0") or "")
    for name in ("vnet-0097", "vnet97a", "vnetx", "vnet", "vnif97", "tap", "mytap0"):
        assert auto_name_clash(name) is None, name


def test_build_all_fields() -> None:
    c = VnetConfig.build("0:0:0:0:0:0:0:98", bridge="br98", vnetif="vnif98", security="auth")
    assert (c.id.value, c.bridge, c.vnetif, c.security) == (0x98, "br98", "vnif98", "auth")


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"id": "0"}, VnetIdError, "id: 0 is invalid"),
        ({"id": "1"}, VnetIdError, "id: 1 is reserved for the physical network"),
        ({"id": VnetId(1)}, VnetIdError, "reserved"),
        ({"id": "0x97"}, VnetIdError, "without 0x"),
        ({"id": "0:0:0:0:0:1:0:0"}, VnetIdError, "too large for the 24-bit VXLAN key"),
        ({"id": "97", "security": "secret"}, ConfigError,
         "security: 'secret' is not one of none, auth, conf"),
        ({"id": "97", "security": "AUTH"}, ConfigError, "is not one of"),
        ({"id": "97", "bridge": "x", "vnetif": "x"}, ConfigError,
         "vnetif: must differ from bridge 'x'"),
        ({"id": "97", "vnetif": "vnet-0097"}, ConfigError, "must differ from bridge 'vnet-0097'"),
        ({"id": "97", "bridge": ""}, ConfigError, "bridge: name is empty"),
    ],
)
def test_build_errors(kwargs: dict[str, object], error: type[Exception], words: str) -> None:
    with pytest.raises(error) as info:
        VnetConfig.build(**kwargs)  # type: ignore[arg-type]
    assert words in str(info.value)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="bridge"):
        VnetConfig(id=VnetId(0x97), bridge="a b")
    with pytest.raises(VnetIdError):
        VnetConfig(id=VnetId(0), bridge="x")


# --- interface names -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "vnet97", "x" * IFNAME_MAX, "br_0-1a", "vx", "br-vnet2",
                                  "_x"])
def test_ifname_ok(name: str) -> None:
    assert validate_ifname("bridge", name) == name
    assert validate_ifname("vnetif", name + ".1"[: IFNAME_MAX - len(name)])


@pytest.mark.parametrize(
    ("field", "name", "message"),
    [
        ("bridge", "a/b", "bridge: 'a/b' contains '/'; "
         "interface names may not contain '/', ':' or whitespace"),
        ("bridge", "a:b", "contains ':'"),
        ("bridge", "a b", "contains ' '"),
        ("bridge", "a\tb", "contains '\\t'"),
        ("vnetif", "averyveryverylongname",
         "vnetif: 'averyveryverylongname' has 21 characters; the limit is 14"),
        ("bridge", "x" * 15, "has 15 characters; the limit is 14"),
        ("bridge", "", "bridge: name is empty"),
        ("bridge", ".", "'.' is not allowed"),
        ("bridge", "..", "'..' is not allowed"),
        ("bridge", "a\x01", "control character U+0001"),
        ("bridge", "a\x7f", "control character U+007F"),
        ("bridge", "brü", "non-ASCII character 'ü'"),
        ("bridge", "br-vnet", "bridge: 'br-vnet' is reserved for ovsvnet's transport bridge"),
        ("bridge", "vx-1", "bridge: 'vx-1' starts with 'vx-', "
         "which ovsvnet reserves for its tunnel ports"),
        ("vnetif", "vp-abc", "starts with 'vp-'"),
        ("bridge", "-h", "starts with '-'"),
        ("bridge", "--db=tcp", "starts with '-'"),
        ("vnetif", ".hidden", "starts with '.'"),
        ("bridge", "ovs-system", "a device of every host"),
        ("bridge", "all", "a device of every host"),
        ("vnetif", "default", "a device of every host"),
        ("bridge", "br-int", "the bridge another program creates by that name"),
        ("bridge", "virbr0", "the bridge another program creates by that name"),
        ("vnetif", "docker0", "the bridge another program creates by that name"),
        ("bridge", "-", "starts with '-'"),
        ("bridge", "--help", "could be read as an option"),
        ("vnetif", "lo", "a device of every host"),
        ("bridge", "vnet%d", "contains '%'"),
        ("bridge", "a*?$(x)", "contains '*'"),
        ("bridge", "br0.100", "BRIDGE.VLAN"),
    ],
)
def test_ifname_errors(field: str, name: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_ifname(field, name)
    assert message in str(info.value)


@pytest.mark.parametrize("prefix", RESERVED_PREFIXES)
def test_every_reserved_prefix_refused(prefix: str) -> None:
    with pytest.raises(ConfigError, match="reserves"):
        validate_ifname("bridge", prefix + "x")


def test_reserved_exports() -> None:
    assert RESERVED_NAMES == ("br-vnet",)
    assert set(RESERVED_PREFIXES) == {"vt-", "vp-", "vx-", "gn-", "gr-"}
    assert SECURITY_LEVELS == ("none", "auth", "conf")


# --- SXP format ------------------------------------------------------------------------------


def test_from_sxp_full() -> None:
    c = VnetConfig.from_sxp("(vnet (id 97) (bridge vnet97) (vnetif vnif97) (security none))")
    assert c == VnetConfig.build("97", "vnet97", "vnif97", "none")


def test_from_sxp_fields_any_order_and_quoted() -> None:
    c = VnetConfig.from_sxp("# c\n(vnet\n (security 'conf')\n (\"id\" \"0:0:0:0:0:0:0:2\"))")
    assert c == VnetConfig.build("2", security="conf")


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("(vnet (id 97)\n (vnif vnetif99))", 2, 3,
         "unknown field 'vnif'; known fields are id, bridge, vnetif, security "
         "(did you mean 'vnetif'?)"),
        ("(vnet (id 97) (brige x))", 1, 16, "(did you mean 'bridge'?)"),
        ("(vnet (id 97) (colour blue))", 1, 16, "unknown field 'colour'"),
        ("(vnet (id 97)\n  (id 98))", 2, 4, "duplicate field 'id'; first given at 1:8"),
        ("(vnet (bridge x))", 1, 1, "missing field 'id'"),
        ("(vnet)", 1, 1, "missing field 'id'"),
        ("(vnet (id))", 1, 7, "field 'id' has no value"),
        ("(vnet (id 97 98))", 1, 14, "field 'id' has 2 values; write exactly one"),
        ("(vnet (id (97)))", 1, 11, "the value must be an atom, not a list"),
        ("(vnt (id 97))", 1, 2, "expected 'vnet' at the head of the list, found 'vnt'"),
        ("((vnet) (id 97))", 1, 2, "expected the atom 'vnet'"),
        ("vnet", 1, 1, "expected a list"),
        ("()", 1, 1, "found an empty list"),
        ("(vnet (id 97) bridge)", 1, 15, "expected a field list like (id 97), found atom"),
        ("(vnet (id 97) ())", 1, 15, "empty field list"),
        ("(vnet (id 97) ((bridge) x))", 1, 16, "expected a field name, found a list"),
        ("(vnet (id 97))\n(vnet (id 98))", 2, 1, "expected exactly one expression"),
        ("", 1, 1, "no expression found"),
        ("(vnet (id 97)", 1, 14, "list opened at 1:1 is not closed"),
        ("(vnet\n (id 0x97))", 2, 6, "id: '0x97': write hex digits without 0x"),
        ("(vnet (id 1))", 1, 11, "id: 1 is reserved"),
        ("(vnet (id 1:0:0:0:0:0:0:0))", 1, 11, "too large for the 24-bit VXLAN key"),
        ("(vnet (id 97) (bridge 'a/b'))", 1, 23, "bridge: 'a/b' contains '/'"),
        ("(vnet (id 97) (vnetif br-vnet))", 1, 23, "reserved for ovsvnet's transport bridge"),
        ("(vnet (id 97) (security secret))", 1, 25,
         "security: 'secret' is not one of none, auth, conf"),
        ("(vnet (id 97) (bridge b) (vnetif b))", 1, 34, "vnetif: must differ from bridge 'b'"),
        ("(vnet (id 97) (vnetif vnet-0097))", 1, 23, "must differ from bridge 'vnet-0097'"),
    ],
)
def test_from_sxp_errors(text: str, line: int, column: int, words: str) -> None:
    err = sxp_error(text)
    assert (err.line, err.column) == (line, column), str(err)
    assert str(err).startswith(f"t.sxp:{line}:{column}: ")
    assert words in str(err)


def test_to_sxp() -> None:
    c = VnetConfig.build("97", "vnet97")
    assert c.to_sxp() == (
        "(vnet (id 0000:0000:0000:0000:0000:0000:0000:0097) (bridge vnet97) (security none))"
    )
    c = VnetConfig.build("98", "vnet98", "vnif98", "auth")
    assert c.to_sxp() == (
        "(vnet (id 0000:0000:0000:0000:0000:0000:0000:0098) (bridge vnet98) "
        "(vnetif vnif98) (security auth))"
    )


def test_to_dict_is_json_ready() -> None:
    c = VnetConfig.build("97", vnetif="vnif97")
    d = c.to_dict()
    assert d == {
        "id": "0000:0000:0000:0000:0000:0000:0000:0097",
        "short": "0097",
        "key": 0x97,
        "bridge": "vnet-0097",
        "vnetif": "vnif97",
        "security": "none",
    }
    assert json.loads(json.dumps(d)) == d


ifname_chars = st.sampled_from(
    [chr(c) for c in range(0x21, 0x7F) if chr(c).isalnum() or chr(c) in "_-"]
)
ifnames = (
    st.text(ifname_chars, min_size=1, max_size=IFNAME_MAX)
    .filter(lambda n: n[0] != "-" and n not in RESERVED_NAMES + HOST_NAMES + OTHER_BRIDGES)
    .filter(lambda n: not n.startswith(RESERVED_PREFIXES))
)
configs = st.builds(
    VnetConfig.build,
    id=st.integers(2, 2**24 - 1).map(VnetId),
    bridge=st.one_of(st.none(), ifnames),
    vnetif=st.one_of(st.none(), ifnames),
    security=st.one_of(st.none(), st.sampled_from(SECURITY_LEVELS)),
)


@given(st.data())
@settings(max_examples=200)
def test_to_sxp_round_trip(data: st.DataObject) -> None:
    try:
        c = data.draw(configs)
    except ConfigError:
        return  # vnetif happened to equal the bridge
    assert VnetConfig.from_sxp(c.to_sxp()) == c


# --- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "security"), [("vnet97", "none"), ("vnet98", "auth"), ("vnet99", "conf")]
)
def test_examples_parse(name: str, security: str) -> None:
    path = EXAMPLES / f"{name}.sxp"
    assert path.read_text().startswith("#")
    c = VnetConfig.from_file(path)
    number = name.removeprefix("vnet")
    assert c == VnetConfig.build(number, f"vnet{number}", f"vnif{number}", security)
    assert c.id.value == int(number, 16)


def test_xen_original_vnet99_typo_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "vnet99.sxp"
    path.write_text("# Xen's shipped file\n(vnet (id 99) (bridge vnet99) (vnif vnetif99) "
                    "(security conf))\n")
    with pytest.raises(SxpError) as info:
        VnetConfig.from_file(path)
    assert str(info.value).startswith(f"{path}:2:32: unknown field 'vnif'")
    assert "did you mean 'vnetif'?" in str(info.value)


def test_from_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sxp"
    with pytest.raises(ConfigError, match=r"^cannot read .*nope\.sxp: No such file"):
        VnetConfig.from_file(missing)
    with pytest.raises(ConfigError, match="cannot read"):
        VnetConfig.from_file(tmp_path)
    binary = tmp_path / "bin.sxp"
    binary.write_bytes(b"(vnet (id 97)\xff)")
    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(byte 0xff at offset 13\)"):
        VnetConfig.from_file(binary)


def test_from_file_accepts_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.sxp"
    path.write_bytes(b"\xef\xbb\xbf(vnet (id 97))")
    assert VnetConfig.from_file(str(path)).id.value == 0x97


def test_from_file_refuses_devices_and_huge_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        VnetConfig.from_file("/dev/zero")
    big = tmp_path / "big.sxp"
    big.write_text("(vnet (id 97))" + " " * (70 * 1024))
    with pytest.raises(ConfigError, match="larger than 65536 bytes"):
        VnetConfig.from_file(big)
