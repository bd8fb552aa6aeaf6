"""libvirt's XML: which bridges a domain or network names, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovsvnet.errors import ConfigError
from ovsvnet.libvirt import libvirt_bridges

DOMAIN_XML = (Path(__file__).parent / "data" / "domain.xml").read_text()


def test_libvirt_bridges_from_domain_and_network_xml():
    assert libvirt_bridges(DOMAIN_XML) == [("vnet97", True), ("br-other", True),
                                           ("virbr0", False), ("virbr1", False)]
    net = ("<network><name>net97</name><forward mode='bridge'/><bridge name='vnet97'/>"
           "<virtualport type='openvswitch'/></network>")
    assert libvirt_bridges(net) == [("vnet97", True)]
    hook_data = f"<hookData>{net}<networkport><uuid>x</uuid></networkport></hookData>"
    assert libvirt_bridges(hook_data) == [("vnet97", True)]
    assert libvirt_bridges("<network><name>n</name><bridge name='virbr0'/></network>") == [
        ("virbr0", False)]
    with pytest.raises(ConfigError):
        libvirt_bridges("<domain><devices>")


def test_libvirt_xml_with_entities_or_doctype_is_refused():
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]>'
            "<domain><name>&lol;</name></domain>")
    with pytest.raises(ConfigError, match="DOCTYPE"):
        libvirt_bridges(bomb)
    with pytest.raises(ConfigError, match="bytes"):
        libvirt_bridges("<domain>" + " " * (5 * 1024 * 1024) + "</domain>")
