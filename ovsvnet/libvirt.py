"""libvirt's XML as ovsvnet's hook reads it: which bridges a domain or network names (pure).

ElementTree on expat >= 2.4 refuses entity expansion bombs and external entities; a
``<!DOCTYPE`` is refused outright anyway (libvirt never sends one), so nothing the XML says
can make the hook read a file or grow without bound.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ovsvnet.errors import ConfigError

#: libvirt's XML for one domain or network is a few KiB; refuse anything absurd.
MAX_XML = 4 * 1024 * 1024


def libvirt_bridges(xml_text: str) -> list[tuple[str, bool]]:
    """Bridges named in a libvirt domain or network XML: [(bridge, openvswitch?)].

    Domain XML: every ``<interface>`` with ``<source bridge='X'/>`` (type='bridge', or a
    type='network' interface whose live XML names its bridge), openvswitch when it has
    ``<virtualport type='openvswitch'/>``. Network XML (also inside ``<hookData>``):
    ``<bridge name='X'/>`` with a ``<virtualport type='openvswitch'/>`` child of the network.
    Order kept, duplicates dropped.
    """
    if len(xml_text) > MAX_XML:
        raise ConfigError(f"xml: {len(xml_text)} bytes is not a libvirt definition")
    if "<!DOCTYPE" in xml_text or "<!ENTITY" in xml_text:
        raise ConfigError("xml: a DOCTYPE or ENTITY declaration is not accepted")
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ConfigError(f"xml: not well-formed: {exc}") from exc
    found: dict[str, bool] = {}

    def add(name: str | None, ovs: bool) -> None:
        if name:
            found[name] = found.get(name, False) or ovs

    for iface in root.iter("interface"):
        src = iface.find("source")
        vp = iface.find("virtualport")
        add(src.get("bridge") if src is not None else None,
            vp is not None and vp.get("type") == "openvswitch")
    nets = [root] if root.tag == "network" else list(root.iter("network"))
    for net in nets:
        br = net.find("bridge")
        vp = net.find("virtualport")
        add(br.get("name") if br is not None else None,
            vp is not None and vp.get("type") == "openvswitch")
    return list(found.items())
