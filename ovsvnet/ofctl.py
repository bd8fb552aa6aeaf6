"""Bring a bridge's ovsvnet flows to exactly a desired set, atomically and only if needed.

The comparison is done by ``ovs-ofctl diff-flows`` between the bridge's current ovsvnet flows
(dumped with ``--no-stats``) and the desired ones, so OVS itself normalises both sides
(``dl_type=0x0806`` vs ``arp``, field order, hex case) and an unchanged bridge really is left
untouched: no flow is rewritten, counters keep counting. The differences are applied in one
OpenFlow bundle (all or nothing). Flows without the ovsvnet cookie, and learned flows, are
never in the comparison, so they are never removed by it.

Gotcha recorded here because it bit us: in OpenFlow 1.1+ a delete without ``table=`` means
*every* table, so every flow_mod we write names its table.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

from ovsvnet import flows as F
from ovsvnet.errors import OvsUnreachableError, OvsvnetError

OPENFLOW = "OpenFlow15"
_COOKIE = re.compile(r"cookie=(0x[0-9a-fA-F]+)")
_OUTPUT = re.compile(r"actions=output:(\d+)\s*$")


@dataclass
class FlowChange:
    bridge: str
    removed: list[str]
    added: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.added)


def target(rundir: str, bridge: str) -> str:
    return f"unix:{os.path.join(rundir, bridge)}.mgmt"


def run_ofctl(rundir: str, bridge: str, *args: str, check: bool = True,
              timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run ``ovs-ofctl ARGS[0] <bridge's mgmt socket> ARGS[1:]``."""
    command, rest = args[0], args[1:]
    argv = ["ovs-ofctl", "-O", OPENFLOW, "--no-names", command, target(rundir, bridge), *rest]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise OvsvnetError("ovs-ofctl not found: install openvswitch-common") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        if "No such file" in err or "Connection refused" in err:
            raise OvsUnreachableError(
                f"cannot reach ovs-vswitchd for bridge {bridge} at {target(rundir, bridge)}: "
                f"{err}; is ovs-vswitchd running?")
        raise OvsvnetError(f"ovs-ofctl {command} {bridge}: {err}")
    return proc


def dump(rundir: str, bridge: str, *match: str) -> list[str]:
    out = run_ofctl(rundir, bridge, "dump-flows", "--no-stats", *match).stdout
    return [line.strip() for line in out.splitlines() if line.strip().startswith("cookie=")]


def flow_cookie(line: str) -> int | None:
    m = _COOKIE.search(line)
    return int(m.group(1), 16) if m else None


def is_static_ovsvnet(line: str) -> bool:
    """Our flow, and not one learned at runtime."""
    c = flow_cookie(line)
    kind = F.cookie_kind(c) if c is not None else None
    return kind is not None and kind != F.KIND_LEARNED


def diff(current: list[str], desired: list[F.Flow]) -> tuple[list[str], list[str]]:
    """(flows to remove, flows to add), each in diff-flows' normalised text."""
    with tempfile.TemporaryDirectory(prefix="ovsvnet-flows-") as tmp:
        cur_path = os.path.join(tmp, "current")
        want_path = os.path.join(tmp, "desired")
        with open(cur_path, "w") as f:
            f.write("".join(line + "\n" for line in current))
        with open(want_path, "w") as f:
            f.write("".join(flow.render() + "\n" for flow in desired))
        proc = subprocess.run(["ovs-ofctl", "diff-flows", cur_path, want_path],
                              capture_output=True, text=True, timeout=20)
    if proc.returncode not in (0, 2):
        raise OvsvnetError(f"ovs-ofctl diff-flows: {proc.stderr.strip()}")
    removed = [line[1:] for line in proc.stdout.splitlines() if line.startswith("-")]
    added = [line[1:] for line in proc.stdout.splitlines() if line.startswith("+")]
    return removed, added


def _with_table(spec: str) -> str:
    return spec if spec.startswith("table=") else "table=0 " + spec


def _delete_spec(spec: str) -> str:
    spec = re.sub(r"\s*actions=.*$", "", spec)
    spec = re.sub(r"\s*cookie=0x[0-9a-fA-F]+", "", spec)
    return _with_table(spec.strip())


def apply(rundir: str, bridge: str, desired: list[F.Flow]) -> FlowChange:
    """Make the bridge's static ovsvnet flows exactly ``desired``; no-op when equal."""
    current = [line for line in dump(rundir, bridge) if is_static_ovsvnet(line)]
    if sorted(current) == sorted(f.dump_form() for f in desired):
        return FlowChange(bridge, [], [])  # already exact; spares a diff-flows process
    removed, added = diff(current, desired)
    if not removed and not added:
        return FlowChange(bridge, [], [])
    mods = [f"flow delete_strict {_delete_spec(s)}" for s in removed]
    mods += [f"flow add {_with_table(s)}" for s in added]
    with tempfile.NamedTemporaryFile("w", prefix="ovsvnet-bundle-", suffix=".txt") as f:
        f.write("\n".join(mods) + "\n")
        f.flush()
        run_ofctl(rundir, bridge, "bundle", f.name)
    return FlowChange(bridge, removed, added)


def prune_learned(rundir: str, bridge: str, live_ports: set[int]) -> int:
    """Delete learned entries that point at a tunnel port that no longer exists."""
    mask = f"cookie={F.cookie(F.KIND_LEARNED):#x}/{F.KIND_MASK:#x}"
    stale = set()
    for line in dump(rundir, bridge, f"table={F.T_UNICAST},{mask}"):
        m = _OUTPUT.search(line)
        if m and int(m.group(1)) not in live_ports:
            stale.add(int(m.group(1)))
    for port in sorted(stale):
        run_ofctl(rundir, bridge, "del-flows", f"table={F.T_UNICAST},{mask},out_port={port}")
    return len(stale)


def flush_learned(rundir: str, bridge: str, key: int | None = None) -> None:
    """Forget learned remote MACs (all vnets, or one key): they are relearned by flooding."""
    if key is None:
        match = f"cookie={F.cookie(F.KIND_LEARNED):#x}/{F.KIND_MASK:#x}"
    else:
        match = f"cookie={F.cookie(F.KIND_LEARNED, key):#x}/-1"
    run_ofctl(rundir, bridge, "del-flows", f"table={F.T_UNICAST},{match}")


def canary_present(rundir: str, bridge: str) -> bool:
    c = F.cookie(F.KIND_CANARY)
    return bool(dump(rundir, bridge, f"table={F.T_CANARY},cookie={c:#x}/-1"))
