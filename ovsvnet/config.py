"""A vnet definition: the ``(vnet (id ..) (bridge ..) ...)`` file format and its rules.

A :class:`VnetConfig` is always valid: the constructor checks every field, so code that holds
one never has to re-check it. Xen dropped unknown fields silently (its own vnet99.sxp had
``(vnif vnetif99)`` and nobody noticed); here they are errors that suggest the right name.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, SxpError
from .sxp import Atom, Node, SList, dumps, parse_one
from .vnetid import VnetId, default_bridge_name, parse_vnet_id, validate_vnet_id

SECURITY_LEVELS = ("none", "auth", "conf")
IFNAME_MAX = 14
"""The Xen manual's limit; Linux allows 15, keeping one spare matches old configs' intent."""
FIELDS = ("id", "bridge", "vnetif", "security")
RESERVED_NAMES = ("br-vnet",)
"""Names ovsvnet uses for itself: ``br-vnet`` is the per-host transport bridge."""
HOST_NAMES = ("lo", "ovs-system", "ovs-netdev", "all", "default")
"""The host's own devices every Linux/OVS host has (and ``all``/``default``, which name every
device's sysctls: ``net.ipv4.conf.all``): never a vnet's bridge or vnetif."""
OTHER_BRIDGES = ("br-int", "br-tun", "br-ex", "virbr0", "docker0", "lxdbr0", "incusbr0",
                 "podman0", "cni-podman0")
"""Bridges other programs create by these names (OVN/Neutron, libvirt's default network,
Docker, LXD, Incus, Podman): a vnet of that name would take theirs over, or they ours."""
AUTO_NAMES = (
    (re.compile(r"^vnet[0-9]+$"), "libvirt's automatic tap names (vnet0, vnet1, ...)"),
    (re.compile(r"^macvtap[0-9]+$"), "libvirt's automatic macvtap names"),
    (re.compile(r"^macvlan[0-9]+$"), "libvirt's automatic macvlan names"),
    (re.compile(r"^tap[0-9]+$"), "QEMU's automatic tap names (tap0, tap1, ...)"),
)
"""Names other programs give new devices on their own, counting up: a vnet named like one
works until that program reaches the number (the second of the two fails to appear)."""
MAX_FILE = 64 * 1024
"""A vnet definition is a line; a file larger than this (or /dev/zero) is not one."""
RESERVED_PREFIXES = ("vt-", "vp-", "vx-", "gn-", "gr-")
"""Prefixes of ovsvnet's own patch and tunnel ports; a user bridge named so would collide."""
_PREFIX_USE = {
    "vt-": "patch ports",
    "vp-": "patch ports",
    "vx-": "tunnel ports",
    "gn-": "tunnel ports",
    "gr-": "tunnel ports",
}
_FORBIDDEN = "/:"

_Fail = Callable[[str, "Node"], SxpError]


def validate_ifname(field: str, name: str) -> str:
    """Check a Linux interface name (plus ovsvnet's reservations); return it unchanged."""
    if not isinstance(name, str):
        raise ConfigError(f"{field}: must be a string, not {type(name).__name__}")
    if not name:
        raise ConfigError(f"{field}: name is empty")
    if name in (".", ".."):
        raise ConfigError(f"{field}: {name!r} is not allowed as an interface name")
    if name[0] in "-.":
        raise ConfigError(f"{field}: {name!r} starts with {name[0]!r}; a name starts with a "
                          "letter, a digit or '_' (it could be read as an option)")
    for c in name:
        if c in _FORBIDDEN or c.isspace():
            raise ConfigError(
                f"{field}: {name!r} contains {c!r}; "
                "interface names may not contain '/', ':' or whitespace"
            )
        if not c.isprintable() or ord(c) == 0x7F:
            raise ConfigError(
                f"{field}: {name!r} contains control character U+{ord(c):04X}; "
                "use printable ASCII"
            )
        if not c.isascii():
            raise ConfigError(
                f"{field}: {name!r} contains non-ASCII character {c!r}; use printable ASCII"
            )
    for c in name:
        if not (c.isalnum() or c in "_.-"):
            raise ConfigError(f"{field}: {name!r} contains {c!r}; use letters, digits, "
                              "'_', '.' and '-'")
    if field == "bridge" and "." in name:
        raise ConfigError(f"{field}: {name!r} contains '.'; Xen's vif scripts read "
                          "BRIDGE.VLAN as a VLAN on BRIDGE, so a bridge name has no '.'")
    if len(name) > IFNAME_MAX:
        raise ConfigError(
            f"{field}: {name!r} has {len(name)} characters; the limit is {IFNAME_MAX}"
        )
    if name in RESERVED_NAMES:
        raise ConfigError(f"{field}: {name!r} is reserved for ovsvnet's transport bridge")
    if name in HOST_NAMES:
        raise ConfigError(f"{field}: {name!r} is a device of every host, not a vnet's")
    if name in OTHER_BRIDGES:
        raise ConfigError(f"{field}: {name!r} is the bridge another program creates by that "
                          "name (OVN, libvirt, Docker, LXD, Incus or Podman); pick another")
    for prefix in RESERVED_PREFIXES:
        if name.startswith(prefix):
            raise ConfigError(
                f"{field}: {name!r} starts with {prefix!r}, "
                f"which ovsvnet reserves for its {_PREFIX_USE[prefix]}"
            )
    return name


def default_bridge(vid: VnetId) -> str:
    """The default bridge name: :func:`ovsvnet.vnetid.default_bridge_name`."""
    return default_bridge_name(vid)


def auto_name_clash(name: str) -> str | None:
    """Whose automatic device names ``name`` has the form of (see :data:`AUTO_NAMES`), or
    None. Accepted in a definition (Xen's ``vnet97`` must keep working); ``doctor`` warns."""
    for pattern, whose in AUTO_NAMES:
        if pattern.match(name):
            return whose
    return None


def validate_security(level: str) -> str:
    """Check a security level; return it unchanged."""
    if level not in SECURITY_LEVELS:
        raise ConfigError(f"security: {level!r} is not one of {', '.join(SECURITY_LEVELS)}")
    return level


@dataclass(frozen=True)
class VnetConfig:
    """One vnet: its id, the bridge domains attach to, an optional vnetif, a security level."""

    id: VnetId
    bridge: str
    vnetif: str | None = None
    security: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.id, VnetId):
            raise ConfigError(f"id: must be a VnetId, not {type(self.id).__name__}")
        validate_vnet_id(self.id)
        _ = self.id.key  # too-large ids fail when defined, not when first sent
        validate_ifname("bridge", self.bridge)
        if self.vnetif is not None:
            validate_ifname("vnetif", self.vnetif)
            if self.vnetif == self.bridge:
                raise ConfigError(f"vnetif: must differ from bridge {self.bridge!r}")
        validate_security(self.security)

    @property
    def key(self) -> int:
        """The 24-bit tunnel key (see :mod:`ovsvnet.vnetid`)."""
        return self.id.key

    @classmethod
    def build(
        cls,
        id: str | VnetId,
        bridge: str | None = None,
        vnetif: str | None = None,
        security: str | None = None,
    ) -> VnetConfig:
        """Validate user input (an id may be text) and fill the defaults."""
        vid = parse_vnet_id(id) if isinstance(id, str) else validate_vnet_id(id)
        _ = vid.key
        return cls(
            id=vid,
            bridge=default_bridge(vid) if bridge is None else bridge,
            vnetif=vnetif,
            security="none" if security is None else security,
        )

    @classmethod
    def from_sxp(cls, text: str, source: str = "<input>") -> VnetConfig:
        """Read ``(vnet (id X) ...)``; errors point at the offending line and column."""
        return _from_tree(parse_one(text, source), source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> VnetConfig:
        """Read a config file; unreadable or non-UTF-8 files are ConfigErrors, not crashes."""
        name = os.fspath(path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as e:
            raise ConfigError(f"cannot read {name}: {e.strerror or e}") from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError(f"cannot read {name}: not a regular file")
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE + 1)
        if len(data) > MAX_FILE:
            raise ConfigError(f"cannot read {name}: larger than {MAX_FILE} bytes; a vnet "
                              "definition is one expression")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"cannot read {name}: not valid UTF-8 (byte 0x{data[e.start]:02x} "
                f"at offset {e.start})"
            ) from e
        return cls.from_sxp(text, name)

    @functools.cached_property
    def sxp(self) -> str:
        """:meth:`to_sxp`, made once (every pass compares 1000 stored definitions with it)."""
        return self.to_sxp()

    def to_sxp(self) -> str:
        """The canonical one-line form (long id), readable by :meth:`from_sxp`."""
        tree: list[Any] = ["vnet", ["id", self.id.canonical], ["bridge", self.bridge]]
        if self.vnetif is not None:
            tree.append(["vnetif", self.vnetif])
        tree.append(["security", self.security])
        return dumps(tree)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for ``--json`` output."""
        return {
            "id": self.id.canonical,
            "short": self.id.short,
            "key": self.key,
            "bridge": self.bridge,
            "vnetif": self.vnetif,
            "security": self.security,
        }


def _from_tree(tree: Node, source: str) -> VnetConfig:
    """Check the shape of the tree, then each field, locating every error."""

    def fail(message: str, node: Node) -> SxpError:
        return SxpError(message, node.line, node.column, source)

    if not isinstance(tree, SList):
        raise fail(f"expected a list (vnet (id ...) ...), found atom {str(tree)!r}", tree)
    if not tree:
        raise fail("expected (vnet (id ...) ...), found an empty list", tree)
    head = tree[0]
    if not isinstance(head, Atom):
        raise fail("expected the atom 'vnet' at the head of the list, found a list", head)
    if head != "vnet":
        raise fail(f"expected 'vnet' at the head of the list, found {str(head)!r}", head)

    values: dict[str, Atom] = {}
    names: dict[str, Atom] = {}
    for item in tree[1:]:
        name, value = _field(item, fail)
        if name in names:
            first = names[name]
            raise fail(
                f"duplicate field {str(name)!r}; first given at {first.line}:{first.column}",
                name,
            )
        names[name] = name
        values[name] = value
    if "id" not in values:
        raise fail("missing field 'id'; write it as in (vnet (id 97) ...)", tree)

    checks: dict[str, Callable[[str], object]] = {
        "id": lambda v: parse_vnet_id(v).key,
        "bridge": lambda v: validate_ifname("bridge", v),
        "vnetif": lambda v: validate_ifname("vnetif", v),
        "security": validate_security,
    }
    for field_name, atom in values.items():
        try:
            checks[field_name](str(atom))
        except ConfigError as e:
            raise fail(str(e), atom) from e
    try:
        return VnetConfig.build(
            id=str(values["id"]),
            bridge=_str_or_none(values.get("bridge")),
            vnetif=_str_or_none(values.get("vnetif")),
            security=_str_or_none(values.get("security")),
        )
    except ConfigError as e:  # cross-field rules (vnetif == bridge, default bridge)
        vnetif = values.get("vnetif")
        raise fail(str(e), tree if vnetif is None else vnetif) from e


def _field(item: Node, fail: _Fail) -> tuple[Atom, Atom]:
    """Check one ``(name value)`` element; return its name and value atoms."""
    if not isinstance(item, SList):
        raise fail(f"expected a field list like (id 97), found atom {str(item)!r}", item)
    if not item:
        raise fail("empty field list; expected (FIELD VALUE) like (id 97)", item)
    name = item[0]
    if not isinstance(name, Atom):
        raise fail("expected a field name, found a list", name)
    if name not in FIELDS:
        raise fail(_unknown_field(name), name)
    if len(item) == 1:
        raise fail(f"field {str(name)!r} has no value; write ({name} VALUE)", item)
    if len(item) > 2:
        raise fail(
            f"field {str(name)!r} has {len(item) - 1} values; write exactly one", item[2]
        )
    value = item[1]
    if not isinstance(value, Atom):
        raise fail(f"field {str(name)!r}: the value must be an atom, not a list", value)
    return name, value


def _unknown_field(name: str) -> str:
    message = f"unknown field {name!r}; known fields are {', '.join(FIELDS)}"
    close = difflib.get_close_matches(name, FIELDS, n=1, cutoff=0.6)
    return f"{message} (did you mean {close[0]!r}?)" if close else message


def _str_or_none(atom: Atom | None) -> str | None:
    return None if atom is None else str(atom)
