"""Shared checks for functional tests: ovsvnet runs, database snapshots, flow dumps, frames on
the wire."""

from __future__ import annotations

import json
import subprocess
import textwrap
from typing import Any

from ovsvnet.lab import Guest, LabHost

#: Columns that OVS updates by itself (counters, status, negotiated values); a snapshot
#: without them changes only when someone changes the configuration.
VOLATILE = {
    "_version", "next_cfg", "cur_cfg", "statistics", "status", "link_resets", "link_state",
    "link_speed", "duplex", "mtu", "mac_in_use", "ifindex", "admin_state", "ofport",
    "error", "datapath_id", "datapath_version", "rstp_status", "rstp_statistics",
    "lacp_current", "bfd_status", "cfm_fault", "cfm_remote_mpids", "cfm_health",
    "dpdk_initialized", "dpdk_version", "iface_types", "datapath_types", "ovs_version",
    "db_version", "system_type", "system_version", "bond_active_slave", "datapaths",
}


def ovsvnet(host: LabHost, *args: str, rc: int = 0,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``ovsvnet ARGS`` in the host's namespace; asserts its exit code is ``rc``."""
    proc = host.ovsvnet(*args, check=False, timeout=timeout)
    assert proc.returncode == rc, (host.name, args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def db_snapshot(host: LabHost) -> dict[str, Any]:
    """The host's whole Open_vSwitch database without the columns OVS changes by itself."""
    out = host.run("ovsdb-client", "dump", "--format=json", host.db, "Open_vSwitch").stdout
    snapshot: dict[str, Any] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        table = json.loads(line)
        rows = []
        headings = table["headings"]
        for row in table["data"]:
            rows.append({h: v for h, v in zip(headings, row) if h not in VOLATILE})
        snapshot[table["caption"].split()[0]] = sorted(rows, key=json.dumps)
    return snapshot


def flow_dump(host: LabHost, bridge: str) -> list[str]:
    """The bridge's flows without counters, to compare two moments."""
    out = host.run("ovs-ofctl", "-O", "OpenFlow15", "--no-stats", "--no-names",
                   "dump-flows", bridge).stdout
    return sorted(line.strip() for line in out.splitlines() if "cookie=" in line)


def send_udp(guest: Guest, dst: str, port: int, payload: str, count: int = 1,
             broadcast: bool = False) -> None:
    """Send ``count`` UDP datagrams from a guest (bounded: a handful of packets)."""
    code = textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, {int(broadcast)})
        for _ in range({count}):
            s.sendto({payload.encode()!r}, ({dst!r}, {port}))
    """)
    guest.run("python3", "-c", code)
