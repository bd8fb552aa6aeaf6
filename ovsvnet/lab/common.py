"""What every part of the lab shares: its errors, name rules and the root/OVS check."""

from __future__ import annotations

import os
import re
import secrets
import shutil

import netaddr

from ovsvnet.errors import NotFoundError, OvsvnetError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$")
#: What a lab needs on this machine (``ip`` runs programs inside namespaces).
BINARIES = ("ovs-vswitchd", "ovsdb-server", "ovsdb-tool", "ovs-vsctl", "ip")


class LabError(OvsvnetError):
    """Building, driving or tearing down a lab failed."""


class LabNotFoundError(LabError, NotFoundError):
    """No such segment, host, guest or lab state file (exit code 4)."""


def have_root_and_ovs() -> bool:
    """True when this process can build a lab: root, and the OVS and iproute2 binaries exist."""
    return os.geteuid() == 0 and all(shutil.which(b) for b in BINARIES)


def check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise LabError(f"bad {kind} name {name!r}: use letters, digits, '-', '_' or '.', up to 31")


def random_mac() -> str:
    """A random locally administered unicast MAC, as ``02:ab:...`` (lower case)."""
    value = int.from_bytes(secrets.token_bytes(6), "big")
    value = (value & ~(0x01 << 40)) | (0x02 << 40)  # first octet: unicast, locally administered
    return str(netaddr.EUI(value, dialect=netaddr.mac_unix_expanded))
