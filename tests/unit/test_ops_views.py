"""Views' pure parts: MAC addresses as Xen's vif table took them, fdb/show output."""

from __future__ import annotations

import pytest

from ovsvnet.errors import ConfigError
from ovsvnet.ops.views import parse_fdb, parse_mac


def test_parse_mac():
    assert parse_mac("AA:00:00:12:34:56") == "aa:00:00:12:34:56"
    assert parse_mac("aa-00-00-12-34-56") == "aa:00:00:12:34:56"
    for bad in ("aa:00-00:12:34:56", "aa:00:00:12:34", "aa:00:00:12:34:5g", "zz"):
        with pytest.raises(ConfigError):
            parse_mac(bad)


def test_parse_fdb():
    text = (" port  VLAN  MAC                Age\n"
            "    3     0  02:00:00:00:97:01    1\n"
            "LOCAL     0  6e:aa:bb:cc:dd:ee    5\n")
    assert parse_fdb(text) == [
        {"port": "3", "vlan": 0, "mac": "02:00:00:00:97:01", "age": "1"},
        {"port": "LOCAL", "vlan": 0, "mac": "6e:aa:bb:cc:dd:ee", "age": "5"}]


