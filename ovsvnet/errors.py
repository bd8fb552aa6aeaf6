"""The exception hierarchy and the exit codes it maps to.

Every failure the user can cause or meet is an :class:`OvsvnetError`; the CLI turns it into a
one-line message and the exit code of its class, so scripts can tell bad input from a missing
vnet from an unreachable OVS without parsing text.
"""

from __future__ import annotations


class OvsvnetError(Exception):
    """Base class. Exit code 1: the operation failed."""

    exit_code = 1


class ConfigError(OvsvnetError):
    """Bad input (a field breaks a rule). Exit code 2, like a usage error."""

    exit_code = 2


class VnetIdError(ConfigError):
    """A vnet id that does not parse or is not allowed."""


class SxpError(ConfigError):
    """An SXP syntax error, located by line and column (1-based)."""

    def __init__(self, message: str, line: int, column: int, source: str = "<input>"):
        self.line = line
        self.column = column
        self.source = source
        super().__init__(f"{source}:{line}:{column}: {message}")


class ConflictError(OvsvnetError):
    """The request clashes with what exists (same id, bridge in use). Exit code 3."""

    exit_code = 3


class NotFoundError(OvsvnetError):
    """The named vnet, peer or host does not exist. Exit code 4."""

    exit_code = 4


class OvsUnreachableError(OvsvnetError):
    """OVSDB or ovs-vswitchd cannot be reached. Exit code 5."""

    exit_code = 5


class CommandError(OvsvnetError):
    """A program ovsvnet runs (ovs-ofctl, ip, ovsdb-tool, ...) is missing, hung or failed."""


class WaitTimeout(OvsvnetError):
    """Something ovsvnet waited for did not happen in time."""


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "operation failed (OVS refused a change, a command failed)",
    2: "bad input: a field breaks a rule, or a usage error",
    3: "conflict: the vnet, bridge or peer already exists or is in use",
    4: "not found: no such vnet, peer or lab host",
    5: "Open vSwitch unreachable: ovsdb-server or ovs-vswitchd not running",
}
