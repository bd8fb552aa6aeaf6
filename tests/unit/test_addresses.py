"""One rule for tunnel endpoints, whichever door a peer address comes through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovsvnet.addresses import is_unicast_host, unicast_host
from ovsvnet.errors import ConfigError


@pytest.mark.parametrize("good,canonical", [
    ("192.0.2.7", "192.0.2.7"), ("10.0.0.1", "10.0.0.1"),
    ("2001:db8::1", "2001:db8::1"), ("2001:DB8:0::7", "2001:db8::7"),
])
def test_unicast_host_addresses_are_accepted(good, canonical):
    assert unicast_host(good) == canonical


@pytest.mark.parametrize("bad,rule", [
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("127.0.0.1", "loopback"),
    ("::1", "loopback"), ("::ffff:127.0.0.1", "IPv4-mapped"), ("224.10.0.1", "multicast"),
    ("ff02::1", "multicast"), ("255.255.255.255", "broadcast"), ("169.254.0.1", "link-local"),
    ("fe80::1", "link-local"), ("fe80::1%eth0", "scope"), ("0.1.2.3", "this network"),
    ("240.0.0.1", "reserved"), ("a" * 300, "not an IP"), ("host.example", "not an IP"),
    ("", "not an IP"), ("10.0.0.1/24", "not an IP"),
])
def test_everything_else_is_refused_with_the_rule(bad, rule):
    with pytest.raises(ConfigError, match=rule):
        unicast_host(bad, "peer")
    assert not is_unicast_host(bad)


def test_the_field_is_named():
    with pytest.raises(ConfigError, match="^address: "):
        unicast_host("127.0.0.1", "address")


@given(st.text(max_size=80))
def test_any_text_gives_an_address_or_a_config_error(text):
    try:
        unicast_host(text)
    except ConfigError:
        pass
