"""Table and plot of ``bench/ovn.py``'s results (ovsvnet against OVN, same lab, same run);
:mod:`bench.report` calls these when a results file has an ``ovn`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {
    "define_to_first_ping": "define a network -> first ping",
    "define_one": "define one more network on both hosts -> flows on both",
    "list": "`ovsvnet list` vs `ovn-nbctl ls-list`",
    "vswitchd_restart_to_traffic": "ovs-vswitchd restart -> traffic back",
    "throughput": "TCP throughput",
    "rtt_median": "RTT, median",
    "rtt_min": "RTT, minimum",
}

#: Ratios where more is better (for every other one, less is).
HIGHER_IS_BETTER = {"throughput"}


def _s(s: dict[str, Any] | None, scale: float = 1.0, lo: str = "min", hi: str = "max") -> str:
    if not s or not s.get("n"):
        return "-"
    med = f"{s['median'] * scale:.3g}"
    return med if s["n"] == 1 else f"{med} [{s[lo] * scale:.3g}-{s[hi] * scale:.3g}]"


def _r(r: Any) -> str:
    if r is None:
        return "-"
    if not isinstance(r, dict):
        return f"**{r:.3g}**"
    low, high = r.get("low"), r.get("high")
    spread = f" [{low:.3g}-{high:.3g}]" if low is not None and high is not None else ""
    return f"**{r['median']:.3g}**{spread}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2g}%"


def markdown(r: dict[str, Any]) -> list[str]:
    """The section of results.md (and of BENCHMARKS.md)."""
    L = ["### ovsvnet against OVN", ""]
    if r.get("skipped"):
        return L + [f"Skipped: {r.get('reason')}.", ""]
    sz = r["sizes"]
    L += [f"Same lab, same run: ovsvnet on hosts o1, o2 (static peers; `{r['ovsvnet_command']}`"
          f"), {r['ovn_version']} on hosts n1, n2 (one ovn-controller each, Geneve) with "
          f"NB/SB/northd on a central namespace; guests alike on both (MTU {r['guest_mtu']}). "
          f"{sz['reps']} repetitions interleaved ({sz['restart_reps']} for restarts). "
          "`median [min-max]`; ratios are ovsvnet / OVN, median over median "
          "[widest range the spreads allow].", "",
          "| measure | networks | ovsvnet | OVN | ovsvnet / OVN |", "|---|---|---|---|---|"]
    d = r["define_to_ping"]
    L.append(f"| {LABELS['define_to_first_ping']} (s) | 0 | {_s(d['first_reply_s']['ovsvnet'])} "
             f"| {_s(d['first_reply_s']['ovn'])} | {_r(d['first_reply_s']['ratio'])} |")
    for key, what in (("define_s", "define command(s)"), ("plug_s", "plug both guests")):
        L.append(f"| &nbsp; of which {what} (s) | 0 | {_s(d[key]['ovsvnet'])} | "
                 f"{_s(d[key]['ovn'])} | {_r(d[key]['ratio'])} |")
    levels = r.get("levels", {})
    for key, unit in (("define_one", "s"), ("list", "s")):
        for n, lv in levels.items():
            e = lv[key]
            extra = ""
            waits = e.get("ovn_wait_ms") or {}
            if waits:
                extra = " (" + ", ".join(f"{k.replace(' completion', '')} {_s(v)} ms"
                                         for k, v in waits.items()) + ")"
            L.append(f"| {LABELS[key]} ({unit}) | {n} | {_s(e['ovsvnet'])} | "
                     f"{_s(e['ovn'])}{extra} | {_r(e['ratio'])} |")
    for n, lv in levels.items():
        if "restart" in lv:
            e = lv["restart"]
            f = e.get("failures") or {}
            lost = "" if not any(f.values()) else f" ({f} lost)"
            L.append(f"| {LABELS['vswitchd_restart_to_traffic']}, from the kill; ovsvnet with "
                     f"agents (s){lost} | {n} | {_s(e['ovsvnet'])} | {_s(e['ovn'])} | "
                     f"{_r(e['ratio'])} |")
            for key, what in (("restart_itself", "the lab's restart itself (stop, start, "
                                "database applied, underlay restored)"),
                              ("after_vswitchd_back", "first reply after that restart returned")):
                b = e.get(key)
                if b:
                    L.append(f"| &nbsp; {what} (s) | {n} | {_s(b['ovsvnet'])} | "
                             f"{_s(b['ovn'])} | {_r(b['ratio'])} |")
        for mode, idle in (lv.get("idle") or {}).items():
            if not isinstance(idle, dict):
                continue
            a, b = idle["ovsvnet"], idle["ovn"]
            ratio = r["ratios"].get(f"idle_vswitchd_cpu_at_{n}_{mode}")
            L.append(f"| idle ovs-vswitchd CPU per host, ovsvnet {mode.replace('_', ' ')} "
                     f"({lv['idle']['seconds']:g} s) | {n} | {_pct(a['vswitchd_cores_per_host'])} "
                     f"| {_pct(b['vswitchd_cores_per_host'])} | {_r(ratio)} |")
            if mode == "agent":
                L.append(f"| idle agent / ovn-controller CPU per host | {n} | "
                         f"{_pct(a['daemons_cores_per_host'])} | "
                         f"{_pct(b['daemons_cores_per_host'])} | - |")
                L.append(f"| agent / ovn-controller RSS per host (MiB) | {n} | "
                         f"{(a['daemons_rss_kib_per_host'] or 0) / 1024:.1f} | "
                         f"{(b['daemons_rss_kib_per_host'] or 0) / 1024:.1f} | - |")
        if "dataplane" in lv:
            dp = lv["dataplane"]
            a, b = dp["ovsvnet"], dp["ovn"]
            L += [f"| TCP throughput, Gbit/s (iperf3 -t {dp['iperf_seconds']}) | {n} | "
                  f"{_s(a['throughput_gbps'])} | {_s(b['throughput_gbps'])} | "
                  f"{_r(dp['ratios']['throughput'])} |",
                  f"| RTT, ms, median [p10-p90] ({dp['ping_count']} pings) | {n} | "
                  f"{_s(a['rtt_ms'], lo='p10', hi='p90')} | {_s(b['rtt_ms'], lo='p10', hi='p90')} "
                  f"| {_r(dp['ratios']['rtt_median'])} |",
                  f"| RTT, ms, minimum | {n} | {a['rtt_ms'].get('min', '-')} | "
                  f"{b['rtt_ms'].get('min', '-')} | {_r(dp['ratios']['rtt_min'])} |"]
    for n, lv in levels.items():
        fl = lv.get("flows_host1") or {}
        L.append(f"| OpenFlow rules on host 1 | {n} | {fl.get('ovsvnet', '-')} | "
                 f"{fl.get('ovn', '-')} | - |")
    L.append("")
    if r.get("errors"):
        L += ["Errors: " + "; ".join(r["errors"]), ""]
    return L


def plot(r: dict[str, Any], path: Path) -> Path:
    """Every ratio ovsvnet / OVN on one log axis, with the spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(k, v) for k, v in r["ratios"].items() if v]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(items) + 1.6))
    for i, (key, v) in enumerate(items):
        med = v["median"] if isinstance(v, dict) else v
        lo = v.get("low") if isinstance(v, dict) else None
        hi = v.get("high") if isinstance(v, dict) else None
        xerr = [[max(0.0, med - lo)], [max(0.0, hi - med)]] if lo and hi else None
        worse = med < 1 if key in HIGHER_IS_BETTER else med > 1
        ax.errorbar([med], [i], xerr=xerr, fmt="o", capsize=4,
                    color="#d62728" if worse else "#2ca02c")
        ax.annotate(f"{med:.3g}", (med, i), xytext=(6, 5), textcoords="offset points",
                    fontsize=8)
    ax.axvline(1.0, color="#555", linestyle="--", alpha=0.7)
    ax.set_yticks(range(len(items)), [k.replace("_", " ") for k, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ovsvnet / OVN (median; bars: widest range the spreads allow); "
                  "red: ovsvnet worse, green: better")
    ax.set_title("ovsvnet against OVN, same lab, same run", fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
