"""Where Open vSwitch lives on this host: its database socket and its run directory.

Kept apart from :mod:`ovsvnet.ovsdb` so the CLI can name its defaults (in ``--help``)
without importing python-ovs, which costs more than the rest of the CLI together.
"""

from __future__ import annotations

import os

DEFAULT_DB = "unix:/var/run/openvswitch/db.sock"


def rundir_for(remote: str) -> str:
    """Where ovs-vswitchd keeps its sockets, guessed from the OVSDB remote.

    OVS keeps db.sock and the bridges' .mgmt sockets in one run directory, so for a
    ``unix:`` remote that directory is the right default; ``OVS_RUNDIR`` wins when set.
    """
    if os.environ.get("OVS_RUNDIR"):
        return os.environ["OVS_RUNDIR"]
    if remote.startswith("unix:"):
        return os.path.dirname(remote[len("unix:"):]) or "."
    return "/var/run/openvswitch"
