"""What ovsvnet installed on a bridge, remembered beside ovs-vswitchd, so that no pass reads
flows back from the switch in steady state (as ovn-controller keeps its installed flows).

After every change a pass records the bridge's static ovsvnet flows, and the identity of the
switch they went into, in ``<rundir>/ovsvnet-flows.<bridge>.json``. The next pass (the
agent's or a command's) compares its desired flows with that record and sends only the
differences, as one OpenFlow bundle. The identity is ovs-vswitchd's pid and start time, the
bridge's OVSDB row and its datapath type: a restarted ovs-vswitchd, a re-created bridge or a
datapath change each lose every flow, so a record with another identity is stale and the pass
replaces all static ovsvnet flows in one bundle without reading them (a restart script such
as ``ovs-ctl restart`` may have restored some: the bundle deletes them first).

With no record (a first run, a host upgraded from an older ovsvnet), no ovs-vswitchd pidfile,
or ``full`` (``ovsvnet sync --full``), the flows are dumped and compared instead
(:func:`ovsvnet.system.ofctl.apply`). Hand edits of flows do not show in a record: the
agent's canary check and ``sync --full`` find them.

The run directory is a tmpfs on real hosts: the record lives exactly as long as the flows.
A lock file serialises the agent and commands on one bridge.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ovsvnet import flows as F
from ovsvnet.system import ofctl, proc, progress

FlowKey = tuple[int, int, str]

#: The static kinds a full replacement deletes first (never learned MACs).
STATIC_KINDS = (F.KIND_BASE, F.KIND_VNET, F.KIND_PEER, F.KIND_CANARY)


@dataclass(frozen=True)
class Record:
    identity: str
    flows: dict[FlowKey, str]


def record_path(rundir: str, bridge: str) -> Path:
    return Path(rundir) / f"ovsvnet-flows.{bridge}.json"


def switch_identity(rundir: str, bridge_uuid: object, datapath_type: str) -> str | None:
    """Who holds the bridge's flows now, or None when ovs-vswitchd has no pidfile here."""
    vswitchd = proc.identity(os.path.join(rundir, "ovs-vswitchd.pid"))
    if vswitchd is None:
        return None
    return f"{vswitchd} {bridge_uuid} {datapath_type or 'system'}"


#: path -> (stat signature, record): the agent reloads a record only when a command wrote it.
_loaded: dict[str, tuple[tuple[int, int, int], Record]] = {}


def load(rundir: str, bridge: str) -> Record | None:
    path = record_path(rundir, bridge)
    try:
        st = path.stat()
    except OSError:
        return None
    sig = (st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _loaded.get(str(path))
    if hit is not None and hit[0] == sig:
        return hit[1]
    try:
        data = json.loads(path.read_text())
        record = Record(str(data["identity"]),
                        {(int(t), int(p), str(m)): str(r) for t, p, m, r in data["flows"]})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: treated as no record (the slow, safe path)
    _loaded[str(path)] = (sig, record)
    return record


def recorded_identity(rundir: str, bridge: str) -> str | None:
    """The identity in a bridge's record, read from the record's first bytes (the whole
    record of 1000 vnets takes 70 ms to parse; a hook only needs to know it is current)."""
    try:
        with open(record_path(rundir, bridge)) as f:
            head = f.read(512)
    except OSError:
        return None
    match = re.match(r'\{"identity":("(?:[^"\\]|\\.)*")', head)
    return json.loads(match.group(1)) if match else None


def save(rundir: str, bridge: str, record: Record) -> None:
    path = record_path(rundir, bridge)
    tmp = path.with_name(path.name + ".tmp")
    data = {"identity": record.identity,
            "flows": [[t, p, m, r] for (t, p, m), r in sorted(record.flows.items())]}
    with open(tmp, "w") as f:
        f.write(json.dumps(data, separators=(",", ":")))  # dumps: the C encoder, dump is not
    os.replace(tmp, path)
    st = path.stat()
    _loaded[str(path)] = ((st.st_ino, st.st_mtime_ns, st.st_size), record)


def forget(rundir: str, bridge: str) -> None:
    """Drop a bridge's record (the bridge was deleted)."""
    record_path(rundir, bridge).unlink(missing_ok=True)
    _loaded.pop(str(record_path(rundir, bridge)), None)


@contextmanager
def locked(rundir: str, bridge: str) -> Iterator[None]:
    with open(Path(rundir) / f"ovsvnet-flows.{bridge}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _delete_strict(key: FlowKey) -> str:
    table, priority, match = key
    return f"flow delete_strict table={table},priority={priority}" + (f",{match}" if match
                                                                        else "")


def install(rundir: str, bridge: str, desired: list[F.Flow], identity: str | None,
            full: bool = False, dry_run: bool = False) -> ofctl.FlowChange:
    """Make the bridge's static ovsvnet flows ``desired``; see the module's docstring.
    ``dry_run``: only say what would change (compared the same way), send and record
    nothing."""
    want = {(f.table, f.priority, f.match): f.render() for f in desired}
    with locked(rundir, bridge):
        record = None if full or identity is None else load(rundir, bridge)
        if record is None:
            if dry_run:  # read back and compare, as ofctl.apply does, without the bundle
                return ofctl.FlowChange(bridge, *ofctl.diff(
                    [x for x in ofctl.dump(rundir, bridge) if ofctl.is_static_ovsvnet(x)],
                    desired))
            progress.phase("comparing with the flows in ovs-vswitchd, sending the difference")
            change = ofctl.apply(rundir, bridge, desired)  # read back and compare
        elif record.identity == identity:
            removed = [k for k in record.flows if k not in want]
            added = [rendered for k, rendered in want.items() if record.flows.get(k) != rendered]
            mods = [_delete_strict(k) for k in removed] + [f"flow add {r}" for r in added]
            if not mods or dry_run:  # nothing sent, nothing to record
                return ofctl.FlowChange(bridge, [record.flows[k] for k in removed], added)
            progress.phase(f"sending {len(mods)} flow changes to ovs-vswitchd")
            ofctl.bundle(rundir, bridge, mods)
            change = ofctl.FlowChange(bridge, [record.flows[k] for k in removed], added)
        else:
            if dry_run:
                return ofctl.FlowChange(bridge, [], list(want.values()), replaced=True)
            mods = [f"flow delete cookie={F.cookie(kind):#x}/{F.KIND_MASK:#x}"
                    for kind in STATIC_KINDS]
            mods += [f"flow add {r}" for r in want.values()]
            progress.phase(f"replacing all {len(want)} flows in ovs-vswitchd")
            ofctl.bundle(rundir, bridge, mods)
            change = ofctl.FlowChange(bridge, [], list(want.values()), replaced=True)
        if identity is not None:
            save(rundir, bridge, Record(identity, want))
    return change
