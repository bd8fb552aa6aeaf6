"""ovsvnet against OVN on the same lab, in the same run: every figure a ratio ovsvnet / OVN.

One lab, one segment: hosts o1, o2 run ovsvnet (static peers of each other; agents only
where a measure needs them), hosts n1, n2 run OVN (one ``ovn-controller`` each, Geneve,
``br-int`` on the same userspace datapath), and a plain host ``central`` runs OVN's NB/SB
``ovsdb-server`` and ``ovn-northd`` (:mod:`ovsvnet.lab.ovn`). The two systems use separate
hosts so one's daemons never load the other's ovs-vswitchd. Guests are the same on both
sides: same addresses, MTU 1442 (OVN's Geneve needs 58 bytes; ovsvnet's VXLAN 50), ARP
retried every 10 ms (``retrans_time_ms``) so that a first ping measures the network, not
the guest's 1 s ARP timer. A guest waits on a parking bridge (no flows) until plugged.

ovsvnet runs as a user types it: the ``ovsvnet`` console script of this venv, a new process
in the host's namespace. OVN runs as an operator types it: ``ovn-nbctl`` in the central
namespace. Measured, repetitions interleaved (ovsvnet, OVN, ovsvnet, ...):

(a) define a network -> first ping between guests on two hosts: ovsvnet ``create`` on both
    hosts at once; OVN one ``ovn-nbctl`` (switch + 2 ports); then both guests plugged (one
    ``ovs-vsctl`` per host at once; OVN's sets ``iface-id``); until the first echo reply.
(b) with N networks present on both hosts, define one more on both hosts until its flows are
    installed on both: ovsvnet ``create`` on both hosts at once; OVN ``ovn-nbctl --wait=hv``
    (switch + one port per host, whose OVS interfaces already exist: the VMs).
(c) ``ovsvnet list`` against ``ovn-nbctl ls-list`` at N networks.
(d) ovs-vswitchd restarted on host 2 -> guest traffic back (ovsvnet: agents running).
(e) idle ovs-vswitchd CPU at the largest N, both systems in the same window.
(f) data plane: TCP throughput (iperf3) and RTT between the guests.

Sizes: N = 1, 10, 100 (``--quick``: 1), 5 repetitions, 3 restarts (``--quick``: 1 of each);
iperf3, ping and idle window from the run's profile. The steps of each system are in
:mod:`bench.ovn_sides`, the table and plot in :mod:`bench.ovn_report`.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PingStream,
    cpu_seconds,
    iperf,
    ping_ok,
    ping_rtts,
    ratio,
    rss_kib,
    summarize,
)
from bench.ovn_sides import (
    DEFINE_A,
    DEFINE_B,
    GROW,
    MTU,
    OVSVNET,
    PROBE,
    OvnSide,
    OvsvnetSide,
    Side,
    Stream,
    run_all,
)
from ovsvnet.errors import OvsvnetError
from ovsvnet.lab import Lab, LabError
from ovsvnet.lab.ovn import OvnLab, have_ovn, missing_ovn


@dataclass
class Sizes:
    """Network counts measured at (the first gets the data plane, the last the idle CPU,
    both the restarts) and repetitions."""

    levels: tuple[int, ...] = (1, 10, 100)
    reps: int = 5
    restart_reps: int = 3
    first_ping_limit: float = 30.0

    @classmethod
    def of(cls, profile: Any) -> Sizes:
        return cls(levels=(1,), reps=1, restart_reps=1) if profile.quick else cls()


# -- the measures ---------------------------------------------------------------------------

def define_to_ping(side: Side, k: int, limit: float) -> dict[str, float] | None:
    """(a) for network ``k``: define, plug both guests, first echo reply (from t0)."""
    side.flush()
    g1, g2 = side.guests
    with Stream(g1.netns, g2.addr or "", 0.01, limit + 5) as stream:
        time.sleep(0.2)  # the stream runs (into the parking bridge) before t0
        t0 = time.time()
        define = run_all(side.define(k, guests=True))
        plug = run_all(side.plug(k))
        ts = stream.wait_reply_after(t0, limit)
    side.park()
    side.undefine(k)
    if ts is None:
        return None
    return {"define_s": define, "plug_s": plug, "first_reply_s": ts - t0}


def define_one(side: Side, k: int) -> tuple[float, dict[str, int]]:
    """(b): define network ``k`` on both hosts, until its flows are on both (one sample)."""
    if isinstance(side, OvnSide):
        side.vifs([k])
        argv, env = side.define(k, guests=False)[0]
        t0 = time.monotonic()
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
        wall = time.monotonic() - t0
        if out.returncode:
            raise LabError(f"ovn-nbctl --wait=hv: {out.stderr.strip()[-300:]}")
        waits = {key: int(ms) for key, ms in re.findall(
            r"(ovn-northd completion|ovn-controller\(s\) completion):\s+(\d+)ms", out.stdout)}
    else:
        wall, waits = run_all(side.define(k, guests=False)), {}
    side.undefine(k)
    return wall, waits


def restart(side: Side, limit: float = 60) -> tuple[float | None, float, float | None]:
    """(d): ovs-vswitchd restarted on host 2, a 10 ms ping stream from guest 1. Returns
    (traffic back after the kill, the restart itself, traffic back after ovs-vswitchd is).

    Traffic is back at the first reply that ends a gap of 0.1 s or more after the kill: a
    repair may finish before the lab's restart returns (underlay restored), and replies in
    flight at the kill are no repair."""
    g1, g2 = side.guests
    h2 = side.hosts[1]
    with PingStream(g1.netns, g2.addr or "", 0.01, limit + 30) as stream:
        if stream.wait_reply_after(time.time() - 1, 15) is None:
            raise LabError(f"{side.name}: no traffic before the ovs-vswitchd restart")
        t_kill = time.time()
        h2.restart_vswitchd()
        t_up = time.time()
        ts = stream.wait_reply_after(t_up, limit)
    if ts is None:
        return None, t_up - t_kill, None
    times = [t for t, _ in stream.replies]
    back = next((b for a, b in zip(times, times[1:]) if b > t_kill and b - a >= 0.1), ts)
    return back - t_kill, t_up - t_kill, ts - t_up


def _cpu(pid: int) -> float | None:
    """CPU seconds of all of ``pid``'s threads, to the nanosecond (schedstat), so that a
    few seconds of an idle daemon are not rounded to clock ticks."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return cpu_seconds(pid)
    total = 0
    for t in tasks:
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def idle_cpu(sides: Sequence[Side], seconds: float) -> dict[str, dict[str, Any]]:
    """(e): CPU per wall second of each side's ovs-vswitchd (mean of its two hosts) and of
    its control daemons (agents, ovn-controllers), all in the same window."""
    pids = {s.name: {"vswitchd": [p for p in (h.vswitchd_pid() for h in s.hosts) if p],
                     "daemons": s.daemon_pids()} for s in sides}
    c0 = {p: _cpu(p) for d in pids.values() for ps in d.values() for p in ps}
    w0 = time.monotonic()
    time.sleep(seconds)
    c1 = {p: _cpu(p) for p in c0}
    wall = time.monotonic() - w0
    out: dict[str, dict[str, Any]] = {}
    for name, d in pids.items():
        out[name] = {}
        for role, ps in d.items():
            used = [(c1[p] or 0.0) - (c0[p] or 0.0) for p in ps if c0.get(p) is not None]
            out[name][f"{role}_cores_per_host"] = (round(sum(used) / wall / len(used), 6)
                                                   if used else None)
            out[name][f"{role}_rss_kib_per_host"] = (
                round(sum(rss_kib(p) or 0 for p in ps) / len(ps)) if ps else None)
    return out


# -- the run --------------------------------------------------------------------------------

def _both(sides: Sequence[Side], samples: dict[str, list[float]]) -> dict[str, Any]:
    a, b = (summarize(samples[s.name], 4) for s in sides)
    return {"ovsvnet": a, "ovn": b, "ratio": ratio(a, b)}


def _dataplane(profile: Any, sides: Sequence[Side], log: Any) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in sides}
    for rep in range(profile.iperf_reps):
        for s in sides:
            g1, g2 = s.guests
            pids = [p for p in (h.vswitchd_pid() for h in s.hosts) if p]
            r = iperf(g1.netns, g2.netns, g2.addr or "", profile.iperf_seconds, watch_pids=pids)
            runs[s.name].append(r)
            log(f"  iperf3 rep {rep + 1}/{profile.iperf_reps} {s.name:7s} {r['gbps']:.3f} Gbit/s")
    out: dict[str, Any] = {"iperf_seconds": profile.iperf_seconds, "ping_count": profile.ping_count}
    for s in sides:
        g1, g2 = s.guests
        ping_rtts(g1.netns, g2.addr or "", 5, 0.05)  # warm: neighbours, learned MACs
        rtts = ping_rtts(g1.netns, g2.addr or "", profile.ping_count, profile.ping_interval)
        rtt = summarize(rtts, 4)
        rtt.pop("samples", None)
        if rtts:
            rtt["p10"], rtt["p90"] = (round(sorted(rtts)[int(q * (len(rtts) - 1))], 4)
                                      for q in (0.1, 0.9))
        rtt["lost"] = profile.ping_count - len(rtts)
        out[s.name] = {"throughput_gbps": summarize([r["gbps"] for r in runs[s.name]], 4),
                       "rtt_ms": rtt, "retransmits": [r["retransmits"] for r in runs[s.name]]}
        log(f"  ping {s.name:7s} min {rtt.get('min')} ms, median {rtt.get('median')} ms")
    a, b = out["ovsvnet"], out["ovn"]
    out["ratios"] = {"throughput": ratio(a["throughput_gbps"], b["throughput_gbps"]),
                     "rtt_median": ratio(a["rtt_ms"], b["rtt_ms"], lo="p10", hi="p90"),
                     "rtt_min": (round(a["rtt_ms"]["min"] / b["rtt_ms"]["min"], 3)
                                 if a["rtt_ms"].get("n") and b["rtt_ms"].get("n") else None)}
    return out


def _restarts(sides: Sequence[Side], reps: int, log: Any) -> dict[str, Any]:
    """(d), timed from the kill (what a user sees) and from ovs-vswitchd being back (the
    lab's restart is done: daemon up, database applied, underlay restored)."""
    back: dict[str, list[float]] = {s.name: [] for s in sides}
    after_up: dict[str, list[float]] = {s.name: [] for s in sides}
    itself: dict[str, list[float]] = {s.name: [] for s in sides}
    fails = {s.name: 0 for s in sides}
    for _ in range(reps):
        for s in sides:
            r, d, u = restart(s)
            itself[s.name].append(d)
            if r is None or u is None:
                fails[s.name] += 1
            else:
                back[s.name].append(r)
                after_up[s.name].append(u)
            log(f"  vswitchd restart -> traffic {s.name:7s} "
                f"{'lost' if r is None else f'{r:.2f}s'} (restart itself {d:.2f}s)")
    out = _both(sides, back)
    out["failures"] = fails
    out["after_vswitchd_back"] = _both(sides, after_up)
    out["restart_itself"] = _both(sides, itself)
    return out


def _level(profile: Any, sizes: Sizes, sides: Sequence[Side], n: int, first: bool, last: bool,
           log: Any) -> dict[str, Any]:
    """Every measure at ``n`` networks present on both systems."""
    ovs = sides[0]
    assert isinstance(ovs, OvsvnetSide)
    res: dict[str, Any] = {"flows_host1": {s.name: s.flows() for s in sides}}
    lists: dict[str, list[float]] = {s.name: [] for s in sides}
    for _ in range(sizes.reps):
        for s in sides:
            lists[s.name].append(run_all([s.list_cmd()]))
    res["list"] = _both(sides, lists)
    defines: dict[str, list[float]] = {s.name: [] for s in sides}
    waits: list[dict[str, int]] = []
    for rep in range(sizes.reps):
        for s in sides:
            wall, w = define_one(s, DEFINE_B + n * 16 + rep)
            defines[s.name].append(wall)
            if w:
                waits.append(w)
    res["define_one"] = _both(sides, defines)
    res["define_one"]["ovn_wait_ms"] = {key: summarize([w[key] for w in waits if key in w], 1)
                                        for key in sorted({k for w in waits for k in w})}
    med = {key: {s: res[key][s]["median"] for s in ("ovsvnet", "ovn")}
           for key in ("list", "define_one")}
    log(f"  N={n}: list {med['list']['ovsvnet']:.3f}s vs {med['list']['ovn']:.3f}s; define "
        f"one {med['define_one']['ovsvnet']:.3f}s vs {med['define_one']['ovn']:.3f}s; flows on "
        f"host 1 {res['flows_host1']}")
    if first:
        res["dataplane"] = _dataplane(profile, sides, log)
    if last:
        res["idle"] = {"seconds": profile.idle_seconds,
                       "no_agent": idle_cpu(sides, profile.idle_seconds)}
    if first or last:
        try:  # the agent is ovsvnet's: a failure here spares the other measures
            ovs.start_agents()
            if last:
                res["idle"]["agent"] = idle_cpu(sides, profile.idle_seconds)
            res["restart"] = _restarts(sides, sizes.restart_reps, log)
        except OvsvnetError as err:
            res["error"] = f"with agents: {err}"
            log(f"  N={n}: FAILED with agents: {err}")
        finally:
            ovs.agents.stop_all()
    if last:
        log(f"  N={n}: idle CPU {res['idle']}")
    return res


def _measure(profile: Any, sizes: Sizes, lab: Lab, ovn: OvnLab, log: Any) -> dict[str, Any]:
    o = (lab.host("o1"), lab.host("o2"))
    ovs: OvsvnetSide = OvsvnetSide(lab, o)
    sides: tuple[Side, Side] = (ovs, OvnSide(lab, (lab.host("n1"), lab.host("n2")), ovn))
    res: dict[str, Any] = {}
    try:
        got: dict[str, list[dict[str, float]]] = {s.name: [] for s in sides}
        fails = {s.name: 0 for s in sides}
        for rep in range(-1, sizes.reps):  # rep -1 warms caches and tunnel neighbours
            for s in sides:
                r = define_to_ping(s, DEFINE_A + 2 * (rep + 1), sizes.first_ping_limit)
                if rep >= 0:
                    if r is None:
                        fails[s.name] += 1
                    else:
                        got[s.name].append(r)
                log(f"  define -> first ping {s.name:7s} "
                    + (f"{r['first_reply_s']:.3f}s (define {r['define_s']:.3f}s, plug "
                       f"{r['plug_s']:.3f}s)" if r else "no reply")
                    + (" (warm-up)" if rep < 0 else ""))
        res["define_to_ping"] = {
            key: _both(sides, {n: [r[key] for r in v] for n, v in got.items()})
            for key in ("first_reply_s", "define_s", "plug_s")}
        res["define_to_ping"]["failures"] = fails
        for s in sides:  # network 1 of N: the guests stay on it
            run_all(s.define(PROBE, guests=True))
            run_all(s.plug(PROBE))
            if not ping_ok(s.guests[0].netns, s.guests[1].addr or "", count=3, timeout=30):
                raise LabError(f"{s.name}: the guests cannot ping each other on network 1")
        res["ping_crosses"] = {s.name: True for s in sides}
        res["ovsvnet_reported_mtu"] = ovs.mtu()
        if res["ovsvnet_reported_mtu"] and res["ovsvnet_reported_mtu"] < MTU:
            raise LabError(f"ovsvnet reports MTU {res['ovsvnet_reported_mtu']} < {MTU}")
        current, res["levels"] = 1, {}
        for n in sizes.levels:
            if n > current:
                ids = [GROW + i for i in range(current - 1, n - 1)]
                for s in sides:
                    t0 = time.monotonic()
                    s.grow(ids)
                    log(f"  {s.name}: {len(ids)} networks more in {time.monotonic() - t0:.1f}s")
                current = n
            res["levels"][str(n)] = _level(profile, sizes, sides, n, n == sizes.levels[0],
                                           n == sizes.levels[-1], log)
    finally:
        ovs.agents.stop_all()
    return res


def _ratios(res: dict[str, Any]) -> dict[str, Any]:
    """The headline: each measure's ovsvnet / OVN ratio, flat."""
    out: dict[str, Any] = {"define_to_first_ping": res["define_to_ping"]["first_reply_s"]["ratio"]}
    for n, lv in res["levels"].items():
        out[f"define_one_at_{n}"] = lv["define_one"]["ratio"]
        out[f"list_at_{n}"] = lv["list"]["ratio"]
        if "restart" in lv:
            out[f"vswitchd_restart_to_traffic_at_{n}"] = lv["restart"]["ratio"]
        if "dataplane" in lv:
            for key, r in lv["dataplane"]["ratios"].items():
                out[key] = r
        for mode, idle in lv.get("idle", {}).items():
            if isinstance(idle, dict):
                a = idle["ovsvnet"]["vswitchd_cores_per_host"]
                b = idle["ovn"]["vswitchd_cores_per_host"]
                out[f"idle_vswitchd_cpu_at_{n}_{mode}"] = round(a / b, 3) if a and b else None
    return out


def run(profile: Any, log: Any) -> dict[str, Any]:
    if not have_ovn():
        log(f"  skipped: {missing_ovn()}")
        return {"skipped": True, "reason": missing_ovn()}
    sizes = Sizes.of(profile)
    res: dict[str, Any] = {"sizes": asdict(sizes), "ovsvnet_command": " ".join(OVSVNET),
                           "guest_mtu": MTU, "ovn_version": _version()}
    with Lab(prefix=profile.lab_prefix("o")) as lab:
        t0 = time.monotonic()
        lab.add_segment("s1")
        central = lab.add_plain_host("central", "s1")
        for name in ("o1", "o2", "n1", "n2"):
            lab.add_host(name, "s1")
        with OvnLab(lab.workdir, central, [lab.host("n1"), lab.host("n2")]) as ovn:
            ovn.up()
            log(f"  lab with OVN up in {time.monotonic() - t0:.1f}s")
            try:
                res.update(_measure(profile, sizes, lab, ovn, log))
            except Exception:
                for name, path in ovn.logs().items():
                    tail = path.read_text(errors="replace").splitlines()[-8:]
                    log(f"  -- {name} log tail:\n     " + "\n     ".join(tail))
                raise
    res["ratios"] = _ratios(res)
    errors = [f"N={n}: {lv['error']}" for n, lv in res["levels"].items() if "error" in lv]
    if errors:
        res["errors"] = errors
    log("  ratios ovsvnet/OVN: " + ", ".join(
        f"{k} {v['median'] if isinstance(v, dict) else v}" for k, v in res["ratios"].items()))
    return res


def _version() -> str:
    out = subprocess.run(["ovn-controller", "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    return out.splitlines()[0] if out else "unknown"
