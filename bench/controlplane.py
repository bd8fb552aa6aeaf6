"""Control plane on one lab host: cost of creating vnets, of the read and sync commands at
scale, of adding a peer, the flow and port counts, and the agent's memory.

Baselines, measured on hosts of the same lab (same OVS build, same userspace datapath):

* creating N vnets against ``ovs-vsctl add-br`` of N bridges (``datapath_type=netdev``,
  ``fail_mode=secure``), one call per bridge and all in one transaction. ovsvnet does more
  per vnet (a bridge, a patch-port pair to ``br-vnet``, flows on both); the ratio shows what
  that costs, not that the baseline does the same job.
* ``ovsvnet list`` and a no-op ``ovsvnet sync`` against ``ovs-vsctl list-br``.
* ``ovsvnet peer-add`` against ``ovs-vsctl add-port`` of one VXLAN port.
* the agent's RSS against a Python process that merely imports ovsvnet, and against an
  agent with one vnet and one peer.

Every command runs as a user would type it: a new process in the host's namespace.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import time
from typing import Any

from bench.common import (
    Agents,
    cpu_seconds,
    ovsvnet,
    ratio,
    rss_kib,
    summarize,
    vsctl_json_rows,
)
from ovsvnet.lab import Lab, LabError, LabHost, wait_until

VNET_BASE = 0x1000
FLOWS_BASE = 0x2000


def _ids(n: int, base: int = VNET_BASE) -> list[int]:
    return [base + i for i in range(n)]


def _sxp_files(host: LabHost, ids: list[int], tag: str) -> list[str]:
    d = host.dir / f"sxp-{tag}"
    d.mkdir(parents=True, exist_ok=True)
    files = []
    for k in ids:
        p = d / f"vnet{k:x}.sxp"
        p.write_text(f"(vnet (id {k:x}) (security none))\n")
        files.append(str(p))
    return files


def _timed(fn: Any) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def _vsctl_add_br_args(ids: list[int]) -> list[str]:
    args: list[str] = []
    for k in ids:
        br = f"vnet-{k:04x}"
        args += ["--", "add-br", br, "--", "set", "Bridge", br, "datapath_type=netdev",
                 "fail_mode=secure"]
    return args[1:]


def _settled_rss(host: LabHost) -> int | None:
    pid = host.vswitchd_pid()
    return rss_kib(pid) if pid else None


class Hosts:
    """Fresh lab hosts on demand (one per measurement, so each starts from empty OVS)."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.n = 0

    def new(self, tag: str) -> LabHost:
        self.n += 1
        return self.lab.add_host(f"{tag}{self.n}", "s1")


def create_one_method(hosts: Hosts, method: str, n: int, timeout: float) -> dict[str, Any]:
    """Create n vnets (or bridges) on a fresh host; returns total time and per-call times."""
    h = hosts.new({"ovsvnet_per_call": "op", "ovsvnet_batch": "ob", "vsctl_per_call": "vp",
                   "vsctl_batch": "vb"}[method])
    ids = _ids(n)
    calls: list[float] = []
    t0 = time.monotonic()
    if method == "ovsvnet_per_call":
        for k in ids:
            calls.append(_timed(lambda k=k: ovsvnet(h, "create", "--id", f"{k:x}",
                                                     timeout=timeout)))
    elif method == "ovsvnet_batch":
        files = _sxp_files(h, ids, "batch")
        t0 = time.monotonic()  # writing the files is not part of the cost
        calls.append(_timed(lambda: ovsvnet(h, "create", *files, timeout=timeout)))
    elif method == "vsctl_per_call":
        for k in ids:
            br = f"vnet-{k:04x}"
            calls.append(_timed(lambda br=br: h.vsctl(
                "add-br", br, "--", "set", "Bridge", br, "datapath_type=netdev",
                "fail_mode=secure", timeout=timeout)))
    elif method == "vsctl_batch":
        args = _vsctl_add_br_args(ids)
        calls.append(_timed(lambda: h.vsctl(*args, timeout=timeout)))
    total = time.monotonic() - t0
    bridges = len(h.vsctl("list-br").split())
    if bridges < n:
        raise LabError(f"{method} N={n}: only {bridges} bridges exist afterwards")
    return {"host": h, "total_s": total, "per_vnet_s": total / n, "calls": calls,
            "vswitchd_rss_kib": _settled_rss(h)}


def create_scaling(profile: Any, hosts: Hosts, log: Any) -> tuple[dict[str, Any], LabHost | None]:
    """Seconds per vnet for each method and N. Returns the results and the host that holds
    the largest ovsvnet batch (kept for the big-N measurements)."""
    big_host: LabHost | None = None
    methods = ("ovsvnet_per_call", "ovsvnet_batch", "vsctl_per_call", "vsctl_batch")
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for n in sorted(set(profile.create_batch_ns) | set(profile.create_per_call_ns)):
        for method in methods:
            if method.endswith("per_call") and n not in profile.create_per_call_ns:
                continue
            if method.endswith("batch") and n not in profile.create_batch_ns:
                continue
            per_call = method.endswith("per_call")
            # per-call runs give one sample per call already; batches are repeated
            reps = 1 if (per_call or n >= 1000 or profile.quick) else 3
            if method == "vsctl_batch" and n >= 1000 and not profile.quick:
                reps = 2
            samples, calls, rss = [], [], []
            for _ in range(reps):
                r = create_one_method(hosts, method, n, timeout=max(60.0, n * 1.5))
                samples.append(r["per_vnet_s"])
                calls.extend(r["calls"])
                if r["vswitchd_rss_kib"]:
                    rss.append(r["vswitchd_rss_kib"])
                if method == "ovsvnet_batch" and n == profile.big_n and big_host is None:
                    big_host = r["host"]  # keep it running
                else:
                    r["host"].stop()
                log(f"  create N={n:<5d} {method:17s} {r['total_s']:8.2f}s "
                    f"({r['per_vnet_s'] * 1000:.1f} ms per vnet)")
            entry: dict[str, Any] = {
                "n": n, "repetitions": reps,
                "seconds_per_vnet": summarize(samples),
                "vswitchd_rss_kib": max(rss) if rss else None,
            }
            if per_call:
                entry["per_call_seconds"] = summarize(calls)
                entry["per_call_seconds"].pop("samples")
                tail = calls[-max(1, len(calls) // 10):]
                entry["last_10pct_call_seconds_median"] = round(sorted(tail)[len(tail) // 2], 4)
            out[method][str(n)] = entry
    ratios: dict[str, Any] = {}
    for n in profile.create_batch_ns:
        key = str(n)
        r: dict[str, Any] = {
            "ovsvnet_batch/vsctl_batch": ratio(out["ovsvnet_batch"][key]["seconds_per_vnet"],
                                               out["vsctl_batch"][key]["seconds_per_vnet"]),
        }
        if key in out["ovsvnet_per_call"]:
            r["ovsvnet_per_call/vsctl_per_call"] = ratio(
                out["ovsvnet_per_call"][key]["seconds_per_vnet"],
                out["vsctl_per_call"][key]["seconds_per_vnet"])
        ratios[key] = r
    return {"methods": out, "ratios": ratios}, big_host


# -- at scale ----------------------------------------------------------------------------------

def _cur_cfg(h: LabHost) -> int:
    return int(h.vsctl("get", "Open_vSwitch", ".", "cur_cfg").strip())


def at_scale(profile: Any, h: LabHost, log: Any) -> dict[str, Any]:
    """list, no-op sync, list-br, peer-add on the host holding big_n vnets."""
    n = profile.big_n
    timeout = max(120.0, n * 1.0)
    res: dict[str, Any] = {"n_vnets": n}
    lst = [_timed(lambda: ovsvnet(h, "list", timeout=timeout)) for _ in range(profile.query_reps)]
    res["ovsvnet_list_s"] = summarize(lst)
    lbr = [_timed(lambda: h.vsctl("list-br")) for _ in range(max(5, profile.query_reps))]
    res["vsctl_list_br_s"] = summarize(lbr)
    log(f"  N={n}: ovsvnet list {res['ovsvnet_list_s']['median']:.2f}s, "
        f"ovs-vsctl list-br {res['vsctl_list_br_s']['median']:.3f}s")
    cfg0 = _cur_cfg(h)
    sync = []
    for _ in range(1):  # one sample: it is the slow one (see BENCHMARKS.md)
        t0 = time.monotonic()
        out = ovsvnet(h, "sync", "-v", timeout=timeout).stdout
        sync.append(time.monotonic() - t0)
        m = re.search(r"flows: (\d+) changed", out)
        res["sync_flows_changed"] = int(m.group(1)) if m else None
    res["ovsvnet_sync_noop_s"] = summarize(sync)
    res["noop_sync_bumped_cur_cfg_by"] = _cur_cfg(h) - cfg0
    log(f"  N={n}: no-op ovsvnet sync {sync[0]:.1f}s "
        f"(flows changed: {res['sync_flows_changed']})")
    seg = ipaddress.IPv4Network(h.address + "/24", strict=False)
    first_peer = str(seg.network_address + 200)
    t_add = _timed(lambda: ovsvnet(h, "peer-add", first_peer, timeout=timeout))
    res["ovsvnet_peer_add_s"] = summarize([t_add])
    # baseline: one VXLAN port added to a bridge on the same host, as ovs-vsctl does it
    base = []
    for i in range(3):
        port = f"bxtest{i}"
        base.append(_timed(lambda port=port, i=i: h.vsctl(
            "add-port", "br-vnet", port, "--", "set", "Interface", port, "type=vxlan",
            f"options:remote_ip={seg.network_address + 240 + i}", "options:key=flow",
            timeout=timeout)))
        h.vsctl("del-port", "br-vnet", port, timeout=timeout)
    res["vsctl_add_vxlan_port_s"] = summarize(base)
    log(f"  N={n}: ovsvnet peer-add {t_add:.2f}s, ovs-vsctl add-port "
        f"{res['vsctl_add_vxlan_port_s']['median']:.3f}s")
    res["ratios"] = {
        "list/list-br": ratio(res["ovsvnet_list_s"], res["vsctl_list_br_s"]),
        "sync/list-br": ratio(res["ovsvnet_sync_noop_s"], res["vsctl_list_br_s"]),
        "peer-add/vsctl-add-port": ratio(res["ovsvnet_peer_add_s"],
                                         res["vsctl_add_vxlan_port_s"]),
    }
    res["_first_peer"] = first_peer
    return res


# -- memory ------------------------------------------------------------------------------------

_IDLE = "import sys{imports}; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"


def _python_rss(imports: str) -> int:
    """RSS of a Python process after ``imports``, while it waits on stdin."""
    code = _IDLE.format(imports=imports)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise LabError(f"python baseline ({imports or 'bare'}) did not start")
        time.sleep(0.2)
        rss = rss_kib(p.pid)
        if rss is None:
            raise LabError("could not read the baseline's RSS")
        return rss
    finally:
        p.communicate("", timeout=10)


def agent_footprint(profile: Any, h: LabHost, log: Any, what: str,
                    timeout: float = 900) -> dict[str, Any]:
    """Start an agent on ``h``, wait for its first sync, let it idle, read RSS and CPU."""
    agents = Agents(profile.interval)
    try:
        t0 = time.monotonic()
        agents.start(h, wait=False)
        pid = agents.pid(h)
        st = wait_until(lambda: (s := agents.status(h, timeout=5)) and s.get("syncs", 0) >= 1
                        and s, timeout=timeout, interval=0.5,
                        what=f"the agent on {h.name} to finish its first sync")
        first_sync = time.monotonic() - t0
        assert pid is not None
        rss0 = rss_kib(pid)
        cpu0, w0 = cpu_seconds(pid), time.monotonic()
        time.sleep(profile.idle_seconds)
        cpu1, w1 = cpu_seconds(pid), time.monotonic()
        rss1 = rss_kib(pid)
        st = agents.status(h, timeout=30) or st
        res = {
            "vnets": len(h.vsctl("--bare", "--columns=name", "find", "Bridge",
                                 "external_ids:ovsvnet-role=vnet").split()),
            "static_peers": len(st.get("static_peers") or {}),
            "tunnels": len(h.vsctl("--bare", "--columns=name", "find", "Interface",
                                   "type=vxlan").split()),
            "start_to_first_sync_s": round(first_sync, 3),
            "rss_kib": rss1,
            "rss_kib_after_first_sync": rss0,
            "idle_cpu_fraction": round((cpu1 - cpu0) / (w1 - w0), 4)
            if cpu0 is not None and cpu1 is not None else None,
            "idle_seconds": profile.idle_seconds,
            "syncs_during_idle_and_start": st.get("syncs"),
            "vswitchd_rss_kib": _settled_rss(h),
        }
        log(f"  agent ({what}): first sync after {first_sync:.1f}s, RSS {rss1} KiB, "
            f"idle CPU {res['idle_cpu_fraction']}")
        return res
    finally:
        agents.stop_all()


def memory(profile: Any, big: LabHost, small: dict[str, Any] | None, first_peer: str,
           log: Any) -> dict[str, Any]:
    seg = ipaddress.IPv4Network(big.address + "/24", strict=False)
    # the remaining static peers go straight into OVSDB (where peer-add stores them); the
    # agent's first sync makes their tunnels, so no slow peer-add per peer is needed here
    extra = [str(seg.network_address + 201 + i) for i in range(profile.memory_peers - 1)]
    if extra:
        big.vsctl("set", "Open_vSwitch", ".",
                  *[f'external_ids:"ovsvnet-peer-{a}"=4789' for a in extra])
    res: dict[str, Any] = {
        "python_bare_rss_kib": _python_rss(""),
        "python_import_ovsvnet_rss_kib": _python_rss(
            "; import ovsvnet.cli, ovsvnet.agent, ovsvnet.ops"),
    }
    res["agent_small"] = small
    res["agent_big"] = agent_footprint(profile, big, log,
                                       f"{profile.big_n} vnets, {profile.memory_peers} peers")
    big_rss = res["agent_big"]["rss_kib"]
    res["ratios"] = {
        "agent_big/python_import_ovsvnet": round(big_rss / res["python_import_ovsvnet_rss_kib"], 3),
        "agent_big/python_bare": round(big_rss / res["python_bare_rss_kib"], 3),
    }
    if small and small.get("rss_kib"):
        res["ratios"]["agent_big/agent_small"] = round(big_rss / small["rss_kib"], 3)
    return res


# -- flows and ports ---------------------------------------------------------------------------

def _count_flows(h: LabHost, bridge: str) -> dict[str, Any]:
    out = h.run("ovs-ofctl", "-O", "OpenFlow15", "--no-stats", "--no-names", "dump-flows",
                bridge).stdout
    total = ovsvnet_flows = learned = flood_outputs = 0
    by_table: dict[str, int] = {}
    for line in out.splitlines():
        m = re.search(r"cookie=(0x[0-9a-f]+)", line)
        if not m:
            continue
        total += 1
        c = int(m.group(1), 16)
        if c >> 48 != 0x6F76:
            continue
        if (c >> 40) & 0xFF == 0x04:
            learned += 1
            continue
        ovsvnet_flows += 1
        t = re.search(r"table=(\d+)", line)
        table = t.group(1) if t else "0"
        by_table[table] = by_table.get(table, 0) + 1
        if table == "40":
            flood_outputs += line.split("actions=", 1)[1].count("output:")
    return {"total": total, "ovsvnet": ovsvnet_flows, "learned": learned,
            "by_table": by_table, "flood_output_actions": flood_outputs}


def _count_ports(h: LabHost) -> dict[str, int]:
    bridges = vsctl_json_rows(h, "--columns=name,ports,external_ids", "list", "Bridge")
    roles: dict[str, int] = {}
    total = 0
    for br in bridges:
        if (br.get("external_ids") or {}).get("ovsvnet-role") not in ("vnet", "transport"):
            continue
        p = br.get("ports")
        total += len(p) if isinstance(p, list) else 1
    for r in vsctl_json_rows(h, "--columns=name,external_ids", "list", "Port"):
        role = (r.get("external_ids") or {}).get("ovsvnet-role")
        if role:
            roles[role] = roles.get(role, 0) + 1
    return {"ports_on_ovsvnet_bridges": total, **{f"role_{k}": v for k, v in roles.items()}}


def flows_and_ports(profile: Any, hosts: Hosts, log: Any) -> dict[str, Any]:
    """Flows and ports for each (vnets, static peers) pair, walked in a snake order so every
    step adds or removes only a few vnets or peers."""
    h = hosts.new("fl")
    seg = ipaddress.IPv4Network(h.address + "/24", strict=False)
    peers_all = [str(seg.network_address + 100 + j) for j in range(max(profile.flows_peers))]
    have_vnets = 0
    have_peers: list[str] = []
    cells = []
    small_agent = None
    peer_add_times: list[dict[str, Any]] = []
    for i, v in enumerate(profile.flows_vnets):
        if v > have_vnets:
            files = _sxp_files(h, _ids(v, FLOWS_BASE)[have_vnets:], f"f{v}")
            ovsvnet(h, "create", *files, timeout=max(120, v * 2))
            have_vnets = v
        vnet_bridge_flows = sum(
            _count_flows(h, f"vnet-{k:04x}")["ovsvnet"] for k in _ids(v, FLOWS_BASE))
        order = profile.flows_peers if i % 2 == 0 else tuple(reversed(profile.flows_peers))
        for p in order:
            while len(have_peers) < p:
                a = peers_all[len(have_peers)]
                t = _timed(lambda a=a: ovsvnet(h, "peer-add", a))
                peer_add_times.append({"vnets": v, "peers_before": len(have_peers),
                                       "seconds": round(t, 3)})
                have_peers.append(a)
            while len(have_peers) > p:
                ovsvnet(h, "peer-delete", have_peers.pop())
            tr = _count_flows(h, "br-vnet")
            ports = _count_ports(h)
            cell = {"vnets": v, "peers": p,
                    "flows_total": tr["ovsvnet"] + vnet_bridge_flows,
                    "flows_br_vnet": tr["ovsvnet"], "flows_vnet_bridges": vnet_bridge_flows,
                    "flows_br_vnet_by_table": tr["by_table"],
                    "flood_output_actions": tr["flood_output_actions"], **ports}
            cells.append(cell)
            log(f"  vnets={v:<4d} peers={p:<3d} flows={cell['flows_total']:<5d} "
                f"(br-vnet {tr['ovsvnet']}) ports={ports['ports_on_ovsvnet_bridges']} "
                f"tunnels={ports.get('role_tunnel', 0)}")
            if small_agent is None and v == min(profile.flows_vnets) and p == min(
                    profile.flows_peers):
                small_agent = agent_footprint(profile, h, log, f"{v} vnet, {p} peer")
    fit = _fit(cells)
    h.stop()
    return {"cells": cells, "fit": fit, "peer_add_seconds": peer_add_times,
            "_small_agent": small_agent}


def _fit(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares: count = a + b*vnets + c*peers + d*vnets*peers, for flows and ports."""
    import numpy as np

    X = np.array([[1, c["vnets"], c["peers"], c["vnets"] * c["peers"]] for c in cells], float)
    out = {}
    for key in ("flows_total", "ports_on_ovsvnet_bridges", "flood_output_actions"):
        y = np.array([c[key] for c in cells], float)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = float(np.max(np.abs(X @ coef - y))) if len(y) else 0.0
        c = [round(float(x), 3) + 0.0 for x in coef]  # + 0.0: no "-0"
        out[key] = {"const": c[0], "per_vnet": c[1], "per_peer": c[2], "per_vnet_x_peer": c[3],
                    "max_abs_residual": round(resid, 3)}
    return out


# -- the section -------------------------------------------------------------------------------

def run(profile: Any, log: Any) -> dict[str, Any]:
    with Lab(prefix=profile.lab_prefix("c")) as lab:
        lab.add_segment("s1")
        hosts = Hosts(lab)
        log("control plane: flows and ports per vnet and per peer")
        flows = flows_and_ports(profile, hosts, log)
        small_agent = flows.pop("_small_agent")
        log("control plane: creating vnets")
        create, big = create_scaling(profile, hosts, log)
        if big is None:
            raise LabError(f"no host with {profile.big_n} vnets was kept")
        log(f"control plane: commands at N={profile.big_n}")
        scale = at_scale(profile, big, log)
        first_peer = scale.pop("_first_peer")
        log(f"control plane: agent memory at N={profile.big_n}")
        mem = memory(profile, big, small_agent, first_peer, log)
    return {"create": create, "at_scale": scale, "flows_and_ports": flows, "memory": mem}
