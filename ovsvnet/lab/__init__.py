"""The lab: simulated hosts on one machine, for the functional tests, the benchmarks and the
demo (``ovsvnet sandbox``, ``ovsvnet demo``).

Each lab host is a network namespace with its own ovsdb-server and ovs-vswitchd; hosts sit
on segments (namespaces holding a Linux bridge) joined by routers (namespaces forwarding
between segments), and guests (namespaces standing in for VMs) plug into the hosts' bridges.
Nothing is created in the machine's own network namespace (DESIGN.md §5).

Modules: :mod:`~ovsvnet.lab.core` (:class:`Lab`: build, teardown, state file),
:mod:`~ovsvnet.lab.members` (segments, routers, hosts, guests), :mod:`~ovsvnet.lab.daemons`
(a host's OVS daemons), :mod:`~ovsvnet.lab.netns` (namespaces and links, over netlink),
:mod:`~ovsvnet.lab.traffic` (TCP, multicast, tcpdump), :mod:`~ovsvnet.lab.state` (where
labs keep their state), :mod:`~ovsvnet.lab.progs` (programs run inside namespaces), and the
add-ons :mod:`~ovsvnet.lab.strongswan` (real IPsec), :mod:`~ovsvnet.lab.registry` (a
registry cluster) and :mod:`~ovsvnet.lab.demo`.

The lab may import the pure core (:mod:`ovsvnet.errors`, ...), :mod:`ovsvnet.system` and
:mod:`ovsvnet.registry.server`; never pytest, never the CLI.

The names below are loaded on first use, so that ``python -m ovsvnet.lab.progs.NAME``
(which imports this package first) starts without loading netlink and OVS libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ovsvnet.lab.common import LabError, LabNotFoundError, have_root_and_ovs
    from ovsvnet.lab.core import Lab
    from ovsvnet.lab.members import Guest, LabHost, PlainHost, Router, Segment
    from ovsvnet.lab.netns import netns_exists
    from ovsvnet.lab.state import DEFAULT_STATE_DIR, state_dir
    from ovsvnet.lab.traffic import Capture, capture, tcp_transfer, udp_multicast
    from ovsvnet.system.proc import pid_alive, wait_until

_EXPORTS = {
    "Lab": "ovsvnet.lab.core",
    "Segment": "ovsvnet.lab.members",
    "Router": "ovsvnet.lab.members",
    "LabHost": "ovsvnet.lab.members",
    "PlainHost": "ovsvnet.lab.members",
    "Guest": "ovsvnet.lab.members",
    "LabError": "ovsvnet.lab.common",
    "LabNotFoundError": "ovsvnet.lab.common",
    "have_root_and_ovs": "ovsvnet.lab.common",
    "Capture": "ovsvnet.lab.traffic",
    "capture": "ovsvnet.lab.traffic",
    "tcp_transfer": "ovsvnet.lab.traffic",
    "udp_multicast": "ovsvnet.lab.traffic",
    "netns_exists": "ovsvnet.lab.netns",
    "DEFAULT_STATE_DIR": "ovsvnet.lab.state",
    "state_dir": "ovsvnet.lab.state",
    "wait_until": "ovsvnet.system.proc",
    "pid_alive": "ovsvnet.system.proc",
}

__all__ = [
    "Lab",
    "Segment",
    "Router",
    "LabHost",
    "PlainHost",
    "Guest",
    "LabError",
    "LabNotFoundError",
    "Capture",
    "capture",
    "tcp_transfer",
    "udp_multicast",
    "have_root_and_ovs",
    "netns_exists",
    "DEFAULT_STATE_DIR",
    "state_dir",
    "wait_until",
    "pid_alive",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
