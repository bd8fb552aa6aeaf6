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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ovsvnet import flows as F
from ovsvnet.errors import CommandError, OvsUnreachableError
from ovsvnet.system import proc

OPENFLOW = "OpenFlow15"


@dataclass
class FlowChange:
    bridge: str
    removed: list[str]
    added: list[str]
    #: every static flow was replaced (the switch restarted since the last pass)
    replaced: bool = False

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
    done = proc.run(argv, check=False, timeout=timeout, what=f"ovs-ofctl {command} {bridge}")
    if check and done.returncode != 0:
        err = proc.last_line(done)
        if "No such file" in err or "Connection refused" in err:
            raise OvsUnreachableError(
                f"cannot reach ovs-vswitchd for bridge {bridge} at {target(rundir, bridge)}: "
                f"{err}; is ovs-vswitchd running?")
        raise CommandError(f"ovs-ofctl {command} {bridge}: {err}")
    return done


def dump(rundir: str, bridge: str, *match: str) -> list[str]:
    out = run_ofctl(rundir, bridge, "dump-flows", "--no-stats", *match).stdout
    # a flow with cookie 0 (ovs-vswitchd's own NORMAL flow) starts at its priority
    return [line.strip() for line in out.splitlines() if " actions=" in line
            and line.strip().startswith(("cookie=", "priority=", "table="))]


@dataclass(frozen=True)
class DumpedFlow:
    """One line of ``ovs-ofctl dump-flows``: its statistics (``info``: duration, idle_age...,
    as text), its match (field -> value as text, bare words such as ``arp`` -> ""), and its
    actions as text. ovsvnet reads only its own learned entries this way, whose format OVS
    keeps stable; python-ovs 3.1's flow parser (Debian 12's) rejects OpenFlow 1.5 dumps."""

    info: dict[str, str]
    match: dict[str, str]
    actions: str

    @property
    def cookie(self) -> int | None:
        value = self.info.get("cookie")
        try:
            return int(value, 0) if value is not None else None
        except ValueError:
            return None


def parse(line: str) -> DumpedFlow:
    head, sep, actions = line.strip().partition(" actions=")
    if not sep:
        raise ValueError(f"not a flow: {line!r}")
    chunks = head.split(", ")
    info: dict[str, str] = {}
    for chunk in chunks[:-1]:
        key, _, value = chunk.partition("=")
        info[key.strip()] = value.strip()
    match: dict[str, str] = {}
    for field in chunks[-1].split(","):
        key, _, value = field.partition("=")
        if key in ("cookie", "duration", "table", "n_packets", "n_bytes", "idle_timeout",
                   "hard_timeout", "idle_age", "hard_age", "reset_counts", "importance"):
            info[key] = value  # --no-stats dumps put these beside the match
        elif key:
            match[key] = value
    return DumpedFlow(info, match, actions)


def parsed(lines: list[str]) -> Iterator[DumpedFlow]:
    for line in lines:
        try:
            yield parse(line)
        except ValueError:
            continue


def dump_vnet(rundir: str, bridge: str, key: int | None = None) -> list[str]:
    """A bridge's flows (``--no-stats``), or only vnet ``key``'s static ones."""
    if key is None:
        return dump(rundir, bridge)
    return dump(rundir, bridge, f"cookie={F.cookie(F.KIND_VNET, key):#x}/-1")


def flow_cookie(line: str) -> int | None:
    try:
        return parse(line).cookie
    except ValueError:
        return None


def output_port(flow: DumpedFlow) -> int | None:
    """The port of a flow whose only action is ``output:N``."""
    m = re.fullmatch(r"output:(\d+)", flow.actions.strip())
    return int(m.group(1)) if m else None


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
        out = proc.run(["ovs-ofctl", "diff-flows", cur_path, want_path], check=False,
                       timeout=20)
    if out.returncode not in (0, 2):
        raise CommandError(f"ovs-ofctl diff-flows: {proc.last_line(out)}")
    removed = [line[1:] for line in out.stdout.splitlines() if line.startswith("-")]
    added = [line[1:] for line in out.stdout.splitlines() if line.startswith("+")]
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
    bundle(rundir, bridge, mods)
    return FlowChange(bridge, removed, added)


def bundle(rundir: str, bridge: str, mods: list[str]) -> None:
    """Send flow mods (``flow add ...``, ``flow delete_strict ...``) as one OpenFlow bundle:
    ovs-vswitchd applies all of them or none."""
    with tempfile.NamedTemporaryFile("w", prefix="ovsvnet-bundle-", suffix=".txt") as f:
        f.write("\n".join(mods) + "\n")
        f.flush()
        run_ofctl(rundir, bridge, "bundle", f.name, timeout=60)


def prune_learned(rundir: str, bridge: str, live_ports: set[int]) -> int:
    """Delete learned entries that point at a tunnel port that no longer exists."""
    mask = f"cookie={F.cookie(F.KIND_LEARNED):#x}/{F.KIND_MASK:#x}"
    stale = set()
    for flow in parsed(dump(rundir, bridge, f"table={F.T_UNICAST},{mask}")):
        port = output_port(flow)
        if port is not None and port not in live_ports:
            stale.add(port)
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


def forget_learned(rundir: str, bridge: str, key: int, mac: str) -> None:
    """Forget one learned remote MAC of one vnet (relearned from its next frame)."""
    run_ofctl(rundir, bridge, "del-flows",
              f"table={F.T_UNICAST},cookie={F.cookie(F.KIND_LEARNED, key):#x}/-1,"
              f"tun_id={key:#x},dl_dst={mac}")


def dump_learned(rundir: str, bridge: str, key: int | None = None) -> list[Any]:
    """The learned remote MACs (table 30), all vnets or one, parsed."""
    mask = (f"cookie={F.cookie(F.KIND_LEARNED, key):#x}/-1" if key is not None else
            f"cookie={F.cookie(F.KIND_LEARNED):#x}/{F.KIND_MASK:#x}")
    out = run_ofctl(rundir, bridge, "dump-flows", f"table={F.T_UNICAST},{mask}").stdout
    return list(parsed([ln.strip() for ln in out.splitlines() if "cookie=" in ln]))


def canary_present(rundir: str, bridge: str) -> bool:
    c = F.cookie(F.KIND_CANARY)
    return bool(dump(rundir, bridge, f"table={F.T_CANARY},cookie={c:#x}/-1"))
