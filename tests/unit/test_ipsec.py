"""Security levels: mapping, tunnel options, keys, redaction, file checks, MTU, host support."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovsvnet import ipsec as I
from ovsvnet.config import RESERVED_PREFIXES, SECURITY_LEVELS
from ovsvnet.errors import ConfigError

SECRET = b"0123456789abcdef0123456789abcdef"
PSK = I.PskCredentials(SECRET)
LOCAL = "192.0.2.1"
PEER = "192.0.2.2"


# -- mapping ------------------------------------------------------------------------------

def test_levels_match_the_config_levels_and_codes():
    assert I.LEVELS == SECURITY_LEVELS
    assert I.LEVEL_CODES == {"none": 0, "auth": 1, "conf": 2}
    assert set(I.MAPPING) == set(I.LEVELS)


def test_each_level_owns_its_tunnel_type_port_prefix_and_selectors():
    maps = list(I.MAPPING.values())
    assert len({m.tunnel_type for m in maps}) == 3
    assert len({m.prefix for m in maps}) == 3
    assert {m.prefix for m in maps} <= set(RESERVED_PREFIXES)
    for a, b in itertools.combinations(maps, 2):
        assert not set(a.selectors) & set(b.selectors), (a.level, b.level)
        assert a.dst_port != b.dst_port
    assert [m.level for m in maps if not m.ipsec] == ["none"]
    assert (I.tunnel_type("none"), I.tunnel_type("auth"), I.tunnel_type("conf")) == \
        ("vxlan", "geneve", "gre")


def test_port_names_differ_per_level_and_keep_the_vxlan_name():
    names = {lvl: I.port_name(lvl, PEER) for lvl in I.LEVELS}
    assert names == {"none": "vx-c0000202", "auth": "gn-c0000202", "conf": "gr-c0000202"}
    assert names["none"] == "vx-" + "".join(f"{int(o):02x}" for o in PEER.split("."))
    v6 = {I.port_name(lvl, "2001:db8::2") for lvl in I.LEVELS}
    assert len(v6) == 3 and all(len(n) == 15 for n in v6)
    assert len(I.port_name("none", "2001:db8::2")) <= 15


@given(st.integers(32768, 60999))
def test_vxlan_packets_are_covered_by_no_secure_conn(sport):
    # none = VXLAN: dport 4789, source port from the kernel's ephemeral range
    assert I.levels_covering("udp", sport, 4789) == set()
    assert I.levels_covering("udp", 4789, sport) == set()


@given(st.integers(1, 65535))
def test_every_geneve_and_gre_packet_is_covered_by_its_level_only(sport):
    assert I.levels_covering("udp", sport, 6081) == {"auth"}
    assert I.levels_covering("udp", 6081, sport) == {"auth"}
    assert I.levels_covering("gre", None, None) == {"conf"}


def test_conn_names_follow_the_monitor():
    assert I.conn_names("none", "vx-c0000202") == ()
    assert I.conn_names("auth", "gn-c0000202") == ("gn-c0000202-in-1", "gn-c0000202-out-1")
    assert I.conn_names("conf", "gr-c0000202", 3) == ("gr-c0000202-3",)


def test_unknown_level_is_a_config_error():
    with pytest.raises(ConfigError, match="security: 'secret' is not one of none, auth, conf"):
        I.tunnel_spec("secret", PEER, LOCAL, PSK)


# -- tunnel options -----------------------------------------------------------------------

def test_none_has_no_ipsec_option_at_all():
    itype, name, options = I.tunnel_spec("none", PEER, LOCAL, PSK)
    assert (itype, name) == ("vxlan", "vx-c0000202")
    assert options == {"remote_ip": PEER, "key": "flow", "local_ip": LOCAL}
    assert I.interface_level(itype, options) == "none"


def test_none_keeps_a_peers_custom_udp_port():
    _, _, options = I.tunnel_spec("none", PEER, None, None, dst_port=4790)
    assert options == {"remote_ip": PEER, "key": "flow", "dst_port": "4790"}
    _, _, options = I.tunnel_spec("none", PEER, None, None, dst_port=4789)
    assert "dst_port" not in options


def test_auth_is_geneve_with_null_encryption_and_hmac():
    itype, name, options = I.tunnel_spec("auth", PEER, LOCAL, PSK)
    assert (itype, name) == ("geneve", "gn-c0000202")
    assert options == {
        "remote_ip": PEER, "key": "flow", "local_ip": LOCAL,
        "psk": I.derive_psk(SECRET, LOCAL, PEER),
        "ipsec_esp": "null-sha256-modp2048", "egress_pkt_mark": "1",
    }
    assert I.interface_level(itype, options) == "auth"


def test_conf_is_gre_with_aes():
    itype, name, options = I.tunnel_spec("conf", PEER, LOCAL, PSK)
    assert (itype, name) == ("gre", "gr-c0000202")
    assert options["ipsec_esp"] == "aes128gcm16-modp2048"
    assert options["psk"] == I.tunnel_spec("auth", PEER, LOCAL, PSK)[2]["psk"], \
        "one key per peer: strongSwan picks the secret by peer address"
    assert I.interface_level(itype, options) == "conf"


def test_original_algorithms_and_options():
    algs = I.Algorithms.original(ike="aes128-sha1-modp2048")
    _, _, auth = I.tunnel_spec("auth", PEER, LOCAL, PSK, algs)
    _, _, conf = I.tunnel_spec("conf", PEER, LOCAL, PSK, algs)
    assert auth["ipsec_esp"] == "null-sha1-modp2048"
    assert conf["ipsec_esp"] == "aes128-sha1-modp2048"
    assert auth["ipsec_ike"] == conf["ipsec_ike"] == "aes128-sha1-modp2048"
    no_pfs = I.Algorithms(auth="null-sha1", conf="aes128-sha256", pfs="none")
    assert no_pfs.esp("auth") == "null-sha1" and no_pfs.esp("conf") == "aes128-sha256"
    assert no_pfs.esp("none") is None


def test_libreswan_spelling():
    algs = I.Algorithms(ike_daemon="libreswan")
    assert algs.esp("auth") == "null-sha2_256-modp2048"
    assert algs.esp("conf") == "aes_gcm128-null-modp2048"
    assert I.Algorithms.original(ike_daemon="libreswan", pfs="ecp256").esp("conf") == \
        "aes128-sha1-dh19"


def test_certificate_mode_options():
    cert = I.CertCredentials("/etc/ipsec.d/cacerts/ca.pem", "/etc/ipsec.d/certs/h.pem",
                             "/etc/ipsec.d/private/h.pem", "h1")
    _, _, options = I.tunnel_spec("conf", PEER, None, cert, remote_name="h2")
    assert options["remote_name"] == "h2"
    assert "psk" not in options and "local_ip" not in options
    with pytest.raises(ConfigError, match="remote_name: certificate mode needs the CN"):
        I.tunnel_spec("auth", PEER, LOCAL, cert)
    assert I.open_vswitch_other_config(cert) == {
        "ipsec_skb_mark": "1/1", "certificate": "/etc/ipsec.d/certs/h.pem",
        "private_key": "/etc/ipsec.d/private/h.pem", "ca_cert": "/etc/ipsec.d/cacerts/ca.pem"}


def test_open_vswitch_other_config_for_psk_sets_only_the_mark():
    conf = I.open_vswitch_other_config(PSK)
    assert conf == {"ipsec_skb_mark": I.SKB_MARK}
    assert set(I.OTHER_CONFIG_KEYS) - set(conf) == {"certificate", "private_key", "ca_cert"}
    assert int(I.SKB_MARK.split("/")[0]) & int(I.EGRESS_PKT_MARK), \
        "secure tunnels must carry the mark the shunt drops on when unencrypted"
    with pytest.raises(ConfigError, match="ipsec_skb_mark"):
        I.open_vswitch_other_config(PSK, "1")


def test_secure_levels_refuse_a_moved_port_and_missing_keys():
    with pytest.raises(ConfigError, match="would leave unencrypted"):
        I.tunnel_spec("auth", PEER, LOCAL, PSK, dst_port=4790)
    with pytest.raises(ConfigError, match="would leave unencrypted"):
        I.tunnel_spec("conf", PEER, LOCAL, PSK, dst_port=4789)
    assert I.tunnel_spec("auth", PEER, LOCAL, PSK, dst_port=6081)[2].get("dst_port") is None
    with pytest.raises(ConfigError, match="needs IPsec keys"):
        I.tunnel_spec("conf", PEER, LOCAL, None)
    with pytest.raises(ConfigError, match="tunnel address of this host is unknown"):
        I.tunnel_spec("conf", PEER, None, PSK)
    with pytest.raises(ConfigError, match="same IP version"):
        I.tunnel_spec("conf", "2001:db8::2", LOCAL, PSK)
    with pytest.raises(ConfigError, match="own tunnel address"):
        I.tunnel_spec("auth", LOCAL, LOCAL, PSK)
    with pytest.raises(ConfigError, match="not an IP address"):
        I.tunnel_spec("auth", "peer.example", LOCAL, PSK)


def test_interface_level_refuses_mismatched_rows():
    assert I.interface_level("geneve", {"remote_ip": PEER}) is None  # secure type, no IPsec
    assert I.interface_level("vxlan", {"remote_ip": PEER, "psk": "x"}) is None
    assert I.interface_level("internal", {}) is None


# -- algorithms ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"auth": "md5"}, r"ipsec auth: unknown proposal 'md5'; choose one of sha256, sha1"),
    ({"conf": "des-sha1"}, r"ipsec conf: unknown proposal 'des-sha1'; choose one of"),
    ({"conf": "null-sha256"}, r"ipsec conf: unknown proposal 'null-sha256'"),
    ({"pfs": "modp1024"}, r"ipsec pfs: unknown proposal 'modp1024'"),
    ({"ike": "aes256 sha1"}, r"ipsec ike: 'aes256 sha1' is not an IKE proposal"),
    ({"ike": "aes256\nleft=%any"}, r"is not an IKE proposal"),
    ({"ike_daemon": "racoon"}, r"ike daemon: 'racoon' is not one of strongswan, libreswan"),
])
def test_algorithm_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        I.Algorithms(**kwargs)


def test_algorithms_from_settings():
    algs = I.Algorithms.from_settings({"ovsvnet-ipsec-auth": "sha1",
                                       "ovsvnet-ipsec-conf": "AES256GCM16",
                                       "ovsvnet-ipsec-pfs": "none",
                                       "other": "ignored"})
    assert algs == I.Algorithms(auth="sha1", conf="aes256gcm16", pfs=None)
    assert I.Algorithms.from_settings({}) == I.Algorithms()


# -- keys ---------------------------------------------------------------------------------

def test_derived_psk_is_symmetric_and_per_pair_and_per_secret():
    k = I.derive_psk(SECRET, LOCAL, PEER)
    assert k == I.derive_psk(SECRET, PEER, LOCAL)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", k)
    assert k != I.derive_psk(SECRET, LOCAL, "192.0.2.3")
    assert k != I.derive_psk(SECRET, "192.0.2.3", PEER)
    assert k != I.derive_psk(SECRET[::-1], LOCAL, PEER)
    # canonical address forms give the same key
    assert I.derive_psk(SECRET, "2001:db8::1", "2001:0db8:0:0::2") == \
        I.derive_psk(SECRET, "2001:db8::2", "2001:db8:0::1")
    with pytest.raises(ConfigError, match="key with itself"):
        I.derive_psk(SECRET, LOCAL, LOCAL)


@given(st.binary(min_size=16, max_size=64), st.ip_addresses(v=4), st.ip_addresses(v=4))
def test_derived_psk_symmetry_property(secret, a, b):
    if a == b:
        return
    assert I.derive_psk(secret, str(a), str(b)) == I.derive_psk(secret, str(b), str(a))


def test_psk_credentials_never_show_the_secret():
    assert SECRET.decode() not in repr(PSK)
    assert "redacted" in repr(PSK)
    with pytest.raises(ConfigError, match="too short"):
        I.PskCredentials(b"short")


def test_redaction_hides_psk_only():
    _, _, options = I.tunnel_spec("auth", PEER, LOCAL, PSK)
    shown = I.redact(options)
    assert shown["psk"] == "<redacted>"
    assert options["psk"] not in repr(shown)
    assert {k: v for k, v in shown.items() if k != "psk"} == \
        {k: v for k, v in options.items() if k != "psk"}
    assert I.redact({"ipsec_secret_thing": "x", "remote_name": "h2"}) == \
        {"ipsec_secret_thing": "<redacted>", "remote_name": "h2"}


# -- overhead -----------------------------------------------------------------------------

def test_encapsulation_overhead():
    assert I.encap_overhead("none") == 50  # IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
    assert I.encap_overhead("none", 6) == 70
    assert I.encap_overhead("auth") == 20 + 8 + 8 + 14
    assert I.encap_overhead("conf") == 20 + 4 + 4 + 14 == 42
    assert I.encap_overhead("conf", 6) == 62
    with pytest.raises(ConfigError):
        I.encap_overhead("none", 5)


@pytest.mark.parametrize("level, algs, expected", [
    # SPI 4 + seq 4 + IV + worst padding + 2 + ICV
    ("none", I.Algorithms(), 0),
    ("auth", I.Algorithms(), 4 + 4 + 0 + 3 + 2 + 16),              # null + HMAC-SHA-256-128
    ("auth", I.Algorithms.original(), 4 + 4 + 0 + 3 + 2 + 12),     # null + HMAC-SHA1-96
    ("auth", I.Algorithms(auth="sha512"), 4 + 4 + 0 + 3 + 2 + 32),
    ("conf", I.Algorithms(), 4 + 4 + 8 + 3 + 2 + 16),              # AES-128-GCM-16
    ("conf", I.Algorithms(conf="aes128-sha256"), 4 + 4 + 16 + 15 + 2 + 16),
    ("conf", I.Algorithms.original(), 4 + 4 + 16 + 15 + 2 + 12),   # AES-128-CBC + SHA1-96
])
def test_esp_overhead(level, algs, expected):
    assert I.esp_overhead(level, algs) == expected
    assert I.esp_overhead(level, algs, 6) == expected  # ESP alignment is the same for v6


def test_level_overhead_and_mtu():
    assert [I.level_overhead(lvl) for lvl in I.LEVELS] == [50, 79, 79]
    assert [I.level_overhead(lvl, I.Algorithms.original()) for lvl in I.LEVELS] == [50, 75, 95]
    assert [I.vnet_mtu(lvl, 1500) for lvl in I.LEVELS] == [1450, 1421, 1421]
    assert I.vnet_mtu("none", 1500) == 1450
    assert I.vnet_mtu("conf", 1500, I.Algorithms.original(), 6) == 1500 - 62 - 53
    with pytest.raises(ConfigError, match="underlay needs a larger MTU"):
        I.vnet_mtu("conf", 600)


# -- support ------------------------------------------------------------------------------

GOOD = {"xfrm": True, "esp": True, "monitor_pid": 4242}


def test_support_ok_on_a_complete_kernel_host():
    s = I.support("system", **GOOD, ike_running=True, esp_detail="esp4 loaded")
    assert s.ok and s.problems == ()
    assert "ovs-monitor-ipsec pid 4242" in s.reason and "esp4 loaded" in s.reason


@pytest.mark.parametrize("datapath, facts, needle", [
    ("netdev", GOOD, "the netdev datapath cannot encrypt tunnels"),
    ("", GOOD, "the unknown datapath"),
    ("system", {**GOOD, "xfrm": False}, "no IPsec (XFRM) support"),
    ("system", {**GOOD, "esp": False}, "the kernel has no ESP"),
    ("system", {**GOOD, "monitor_pid": None}, "ovs-monitor-ipsec is not running"),
    ("system", {**GOOD, "ike_running": False}, "no IKE daemon is running"),
])
def test_support_names_each_missing_piece(datapath, facts, needle):
    s = I.support(datapath, **facts)
    assert not s.ok
    assert needle in s.reason
    assert len(s.problems) == 1


def test_support_lists_every_problem_of_this_kind_of_machine():
    # what these test machines look like: netdev, XFRM but no ESP, no monitor
    s = I.support("netdev", xfrm=True, esp=False, monitor_pid=None,
                  esp_detail="CONFIG_INET_ESP is not set")
    assert not s.ok and len(s.problems) == 3
    assert s.reason.index("datapath") < s.reason.index("ESP") < s.reason.index("monitor")
    assert "CONFIG_INET_ESP is not set" in s.reason
