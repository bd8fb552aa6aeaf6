"""Plots (matplotlib, Agg) and Markdown tables from a ``results.json``.

``python -m bench.report RESULTS.json [OUTDIR]`` redraws them without re-running anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"ovsvnet": "#1f77b4", "ovs_hand": "#ff7f0e", "kernel": "#2ca02c",
          "underlay": "#7f7f7f"}
METHOD_LABELS = {
    "ovsvnet_per_call": "ovsvnet create, one call per vnet",
    "ovsvnet_batch": "ovsvnet create FILE..., one call",
    "vsctl_per_call": "ovs-vsctl add-br, one call per bridge",
    "vsctl_batch": "ovs-vsctl, one transaction",
}
CONV_LABELS = {
    "discovery_vnet_created": "vnet created on h3 -> tunnels up",
    "vnet_deleted_tunnels_gone": "vnet deleted on h3 -> tunnels gone",
    "host_join_mesh": "agent started on h3 -> tunnels up",
    "host_leave_tunnels_gone": "agent stopped (goodbye) -> tunnels gone",
    "host_death_tunnels_gone": "agent killed (no goodbye) -> tunnels gone",
    "migration_first_reply": "guest moved + 1 GARP -> traffic from h1",
    "vswitchd_restart_agent": "ovs-vswitchd restart -> traffic (agent)",
    "vswitchd_restart_manual_sync": "ovs-vswitchd restart -> traffic (ovsvnet sync by hand)",
}


def _err(s: dict[str, Any], lo: str = "min", hi: str = "max") -> tuple[float, float]:
    return (max(0.0, s["median"] - s[lo]), max(0.0, s[hi] - s["median"]))


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the PNGs for whatever sections are present; return their paths."""
    made = []
    if "dataplane" in results:
        made.append(_plot_dataplane(results["dataplane"], out / "dataplane.png"))
    if "controlplane" in results:
        made.append(_plot_create(results["controlplane"]["create"], out / "create.png"))
        made.append(_plot_flows(results["controlplane"]["flows_and_ports"], out / "flows.png"))
    if "convergence" in results:
        made.append(_plot_convergence(results["convergence"], out / "convergence.png"))
    if results.get("ovn", {}).get("ratios"):
        from bench import ovn_report
        made.append(ovn_report.plot(results["ovn"], out / "ovn.png"))
    return made


def _plot_dataplane(d: dict[str, Any], path: Path) -> Path:
    names = list(d["configs"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, unit, lo, hi in ((ax1, "throughput_gbps", "Gbit/s", "min", "max"),
                                  (ax2, "rtt_ms", "ms", "p10", "p90")):
        meds = [d["configs"][n][key]["median"] for n in names]
        errs = list(zip(*[_err(d["configs"][n][key], lo, hi) for n in names]))
        ax.bar(range(len(names)), meds, yerr=errs, capsize=5,
               color=[COLORS.get(n, "#999") for n in names])
        ax.set_xticks(range(len(names)), names)
        for i, m in enumerate(meds):
            ax.annotate(f"{m:.3g}", (i, m), ha="center", va="bottom", fontsize=8,
                        xytext=(8, 2), textcoords="offset points")
        ax.set_ylabel(unit)
    ax1.set_title(f"TCP throughput (iperf3 -t {d['iperf_seconds']}, "
                  f"{d['repetitions']} runs; median, min-max)", fontsize=9)
    ax2.set_title(f"RTT (ping, {d['ping_count']} at {d['ping_interval_s']}s; "
                  "median, p10-p90)", fontsize=9)
    ax2.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_create(c: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, rows in c["methods"].items():
        if not rows:
            continue
        ns = sorted(int(n) for n in rows)
        s = [rows[str(n)]["seconds_per_vnet"] for n in ns]
        ax.errorbar(ns, [x["median"] for x in s], yerr=list(zip(*[_err(x) for x in s])),
                    marker="o", capsize=4, label=METHOD_LABELS.get(method, method),
                    linestyle="-" if method.startswith("ovsvnet") else "--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (vnets or bridges created)")
    ax.set_ylabel("seconds per vnet")
    ax.set_title("Creating N vnets vs N netdev bridges (median, min-max)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_flows(f: dict[str, Any], path: Path) -> Path:
    cells = f["cells"]
    peers = sorted({c["peers"] for c in cells})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for p in peers:
        row = sorted((c for c in cells if c["peers"] == p), key=lambda c: c["vnets"])
        v = [c["vnets"] for c in row]
        ax1.plot(v, [c["flows_total"] for c in row], marker="o", label=f"{p} peers")
        ax2.plot(v, [c["ports_on_ovsvnet_bridges"] for c in row], marker="o",
                 label=f"{p} peers")
    for ax, what in ((ax1, "OpenFlow rules (all ovsvnet bridges)"),
                     (ax2, "ports on ovsvnet bridges")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vnets")
        ax.set_title(what, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fit = f["fit"]["flows_total"]
    fig.suptitle(f"flows = {fit['const']:g} + {fit['per_vnet']:g}*vnets + "
                 f"{fit['per_peer']:g}*peers + {fit['per_vnet_x_peer']:g}*vnets*peers",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_convergence(c: dict[str, Any], path: Path) -> Path:
    keys = [k for k in CONV_LABELS if c.get(k, {}).get("n")]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(keys) + 1.8))
    for i, k in enumerate(keys):
        s = c[k]
        ax.errorbar([s["median"]], [i], xerr=[[_err(s)[0]], [_err(s)[1]]], fmt="o",
                    capsize=4, color="#1f77b4")
        ax.annotate(f"{s['median']:.3g}s", (s["median"], i), xytext=(6, 6),
                    textcoords="offset points", fontsize=8)
    for x, label, style in ((c["interval_s"], "interval", ":"),
                            (c.get("canary_interval_s"), "canary check", "-."),
                            (c.get("hold_s"), "hold", "--")):
        if x:
            ax.axvline(x, linestyle=style, color="#d62728", alpha=0.7)
            ax.text(x, 1.01, f"{label} {x:g}s", transform=ax.get_xaxis_transform(),
                    rotation=30, fontsize=7, color="#d62728", ha="left", va="bottom")
    ax.set_yticks(range(len(keys)), [CONV_LABELS[k] for k in keys], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("seconds (median, min-max)")
    ax.set_title(f"Convergence, agents --interval {c['interval_s']:g} "
                 f"({c['repetitions']} run(s) each)", fontsize=10, pad=28)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- Markdown -----------------------------------------------------------------------------------

def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _s(s: dict[str, Any] | None, digits: int = 3, lo: str = "min", hi: str = "max",
       scale: float = 1.0) -> str:
    if not s or not s.get("n"):
        return "-"
    med = s["median"] * scale
    if s["n"] == 1:
        return f"{med:.{digits}g}"
    return f"{med:.{digits}g} [{s[lo] * scale:.{digits}g}-{s[hi] * scale:.{digits}g}]"


def _r(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    return f"{r['median']:.3g} [{_f(r.get('low'))}-{_f(r.get('high'))}]"


def _registry_markdown(r: dict[str, Any]) -> list[str]:
    b, s = r["baseline"], r["scale"]
    L = ["### Registry scale", "",
         f"One real agent (`--registry`, multicast off) on h1; a standalone registry holding "
         f"{s['chassis']} chassis and {s['vnets']} vnets (each scoped to {r['scope']} "
         f"chassis; {s['h1_vnets']} include h1), against a baseline registry holding h1's "
         f"chassis and 1 vnet. {r['repetitions']} run(s) per change.", "",
         "| measure | baseline | scale | ratio |", "|---|---|---|---|"]
    for key, label in (("change_applied", "vnet for h1 created -> applied on h1 (s)"),
                       ("foreign_change_applied", "vnet for others created -> processed (s)"),
                       ("peer_change_applied", "chassis joins h1's vnet -> tunnel (s)")):
        L.append(f"| {label} | {_s(b[key])} | {_s(s[key])} | "
                 f"{_f(r['ratios'].get(key))} |")
    L.append(f"| agent RSS (MiB) | {b['agent_rss_kib'] / 1024:.1f} | "
             f"{s['agent_rss_kib'] / 1024:.1f} | {_f(r['ratios'].get('agent_rss'))} |")
    for key, label in (("initial_converge_s", "agent start -> first copy applied (s)"),
                       ("agent_cpu_initial_s", "agent CPU for start + first copy (s)"),
                       ("agent_idle_cpu", "agent idle CPU (cores)"),
                       ("h1_tunnels", "tunnels on h1"),
                       ("registry_rss_kib", "ovsdb-server RSS (KiB)"),
                       ("registry_db_bytes", "registry file (bytes)")):
        L.append(f"| {label} | {_f(b.get(key))} | {_f(s.get(key))} | - |")
    return L + [""]


def markdown(results: dict[str, Any], pngs: list[Path] | None = None) -> str:
    m = results["meta"]
    mach = m["machine"]
    L = [f"Run: `{m['command']}` ({m['mode']}), started {m['started']}, "
         f"{m.get('seconds', 0):.0f} s. Machine: {mach['cpus']} CPUs ({mach['cpu_model']}), "
         f"{mach['memory_gib']} GiB, kernel {mach['kernel']}, {mach['ovs_version']}, "
         f"{mach['iperf3_version']}, Python {mach['python']}. Load average at start "
         f"{m['loadavg_start']}, at end {m.get('loadavg_end')}.", ""]
    L.append("Spread: `median [min-max]` unless stated; ratios are ovsvnet / baseline, "
             "median of medians [widest range the spreads allow].")
    L.append("")
    if "dataplane" in results:
        d = results["dataplane"]
        L += ["### Data plane", "",
              f"Two hosts on one segment, one vnet, guest MTU {d['ovsvnet_reported_mtu']} "
              f"(reported by ovsvnet), TX offload off; iperf3 -t {d['iperf_seconds']} x "
              f"{d['repetitions']} (interleaved), ping {d['ping_count']} x "
              f"{d['ping_interval_s']}s.", "",
              "| set-up | TCP Gbit/s | RTT ms median [p10-p90] | retransmits/run | "
              "ovs-vswitchd CPU (both hosts, cores) | ovsvnet / this: throughput | "
              "ovsvnet / this: RTT |",
              "|---|---|---|---|---|---|---|"]
        for name, c in d["configs"].items():
            rr = d["ratios"].get(f"ovsvnet/{name}", {})
            retr = [x for x in c["retransmits"] if x is not None]
            cpu = c.get("vswitchd_cpu_per_second_both_hosts")
            L.append(f"| {c['label']} | {_s(c['throughput_gbps'])} | "
                     f"{_s(c['rtt_ms'], lo='p10', hi='p90')} | "
                     f"{sorted(retr)[len(retr) // 2] if retr else '-'} | "
                     f"{_s(cpu) if cpu else '-'} | "
                     f"{_r(rr.get('throughput')) if rr else '1'} | "
                     f"{_r(rr.get('rtt')) if rr else '1'} |")
        L += ["", f"AF_XDP: skipped; {d['afxdp']['reason']}.", ""]
    if "controlplane" in results:
        cp = results["controlplane"]
        cr = cp["create"]
        L += ["### Control plane: creating N vnets", "",
              "| N | method | ms per vnet | per call ms (median, last 10% of calls) | "
              "ovs-vswitchd RSS MiB |", "|---|---|---|---|---|"]
        ns = sorted({int(n) for rows in cr["methods"].values() for n in rows})
        for n in ns:
            for method, rows in cr["methods"].items():
                e = rows.get(str(n))
                if not e:
                    continue
                pc = e.get("per_call_seconds")
                last = e["last_10pct_call_seconds_median"] if pc else 0
                pcs = f"{pc['median'] * 1000:.3g}, {last * 1000:.3g}" if pc else "-"
                rss = e.get("vswitchd_rss_kib")
                L.append(f"| {n} | {METHOD_LABELS[method]} | "
                         f"{_s(e['seconds_per_vnet'], scale=1000)} | {pcs} | "
                         f"{rss / 1024:.0f} |" if rss else
                         f"| {n} | {METHOD_LABELS[method]} | "
                         f"{_s(e['seconds_per_vnet'], scale=1000)} | {pcs} | - |")
        L += ["", "| N | ovsvnet batch / vsctl batch | ovsvnet per call / vsctl per call |",
              "|---|---|---|"]
        for n, r in cr["ratios"].items():
            L.append(f"| {n} | {_r(r.get('ovsvnet_batch/vsctl_batch'))} | "
                     f"{_r(r.get('ovsvnet_per_call/vsctl_per_call'))} |")
        s = cp["at_scale"]
        L += ["", f"### Control plane: commands with {s['n_vnets']} vnets", "",
              "| command | seconds | baseline | baseline seconds | ratio |",
              "|---|---|---|---|---|",
              f"| `ovsvnet list` | {_s(s['ovsvnet_list_s'])} | `ovs-vsctl list-br` | "
              f"{_s(s['vsctl_list_br_s'])} | {_r(s['ratios']['list/list-br'])} |",
              f"| `ovsvnet sync` (no-op, {s.get('sync_flows_changed')} flows changed) | "
              f"{_s(s['ovsvnet_sync_noop_s'])} | `ovs-vsctl list-br` | "
              f"{_s(s['vsctl_list_br_s'])} | {_r(s['ratios']['sync/list-br'])} |",
              f"| `ovsvnet peer-add` | {_s(s['ovsvnet_peer_add_s'])} | "
              f"`ovs-vsctl add-port` (1 VXLAN port) | {_s(s['vsctl_add_vxlan_port_s'])} | "
              f"{_r(s['ratios']['peer-add/vsctl-add-port'])} |", "",
              f"A no-op `ovsvnet sync` advanced `cur_cfg` by "
              f"{s.get('noop_sync_bumped_cur_cfg_by')} (each step is one full "
              "ovs-vswitchd reconfiguration).", ""]
        f = cp["flows_and_ports"]
        L += ["### Control plane: flows and ports", "",
              "| vnets | static peers | flows (all ovsvnet bridges) | of which br-vnet | "
              "ports on ovsvnet bridges | tunnel ports | outputs in flood actions |",
              "|---|---|---|---|---|---|---|"]
        for c in sorted(f["cells"], key=lambda c: (c["vnets"], c["peers"])):
            L.append(f"| {c['vnets']} | {c['peers']} | {c['flows_total']} | "
                     f"{c['flows_br_vnet']} | {c['ports_on_ovsvnet_bridges']} | "
                     f"{c.get('role_tunnel', 0)} | {c['flood_output_actions']} |")
        L.append("")
        for key, fit in f["fit"].items():
            L.append(f"- least-squares fit, {key} = {fit['const']:g} + {fit['per_vnet']:g} x "
                     f"vnets + {fit['per_peer']:g} x peers + {fit['per_vnet_x_peer']:g} x "
                     f"vnets x peers (max residual {fit['max_abs_residual']:g})")
        mem = cp["memory"]
        big, small = mem["agent_big"], mem.get("agent_small") or {}
        L += ["", "### Control plane: agent memory and idle cost", "",
              "| process | RSS MiB | idle CPU (fraction of a core) | start to first sync s |",
              "|---|---|---|---|",
              f"| python, bare | {mem['python_bare_rss_kib'] / 1024:.1f} | - | - |",
              f"| python importing ovsvnet | {mem['python_import_ovsvnet_rss_kib'] / 1024:.1f}"
              " | - | - |"]
        if small:
            L.append(f"| agent, {small['vnets']} vnet(s), {small['static_peers']} peer(s) | "
                     f"{small['rss_kib'] / 1024:.1f} | {_f(small['idle_cpu_fraction'])} | "
                     f"{_f(small['start_to_first_sync_s'])} |")
        L.append(f"| agent, {big['vnets']} vnets, {big['static_peers']} peers | "
                 f"{big['rss_kib'] / 1024:.1f} | {_f(big['idle_cpu_fraction'])} | "
                 f"{_f(big['start_to_first_sync_s'])} |")
        L += ["", "Ratios: " + ", ".join(f"{k} = {v}" for k, v in mem["ratios"].items()), ""]
    if "convergence" in results:
        c = results["convergence"]
        L += ["### Convergence", "",
              f"Agents `--interval {c['interval_s']:g}` (hold {c.get('hold_s')}s, canary check "
              f"every {c.get('canary_interval_s')}s), {c['repetitions']} run(s) each.", "",
              "| event -> converged | seconds | baseline | ratio (median / baseline) |",
              "|---|---|---|---|"]
        for k, label in CONV_LABELS.items():
            s = c.get(k)
            if not s:
                continue
            extra = ""
            if s.get("timeouts"):
                extra = f" ({s['timeouts']} timeouts)"
            if s.get("failures"):
                extra = f" ({s['failures']} failures)"
            base = s.get("baseline_s")
            name = {c["interval_s"]: "interval", c.get("hold_s"): "hold",
                    c.get("canary_interval_s"): "canary check"}.get(base, "")
            L.append(f"| {label}{extra} | {_s(s)} | "
                     f"{f'{name} {_f(base)}s' if base else '-'} | "
                     f"{_f(s.get('ratio_to_baseline_median'))} |")
        if c.get("ratios"):
            L += ["", "Ratios: " + ", ".join(f"{k} = {v}" for k, v in c["ratios"].items())]
        L.append("")
    if "registry" in results:
        L += _registry_markdown(results["registry"])
    if "cost" in results:
        from bench import cost
        L += cost.markdown(results["cost"])
    if "ovn" in results:
        from bench import ovn_report
        L += ovn_report.markdown(results["ovn"])
    if results.get("errors"):
        L += ["### Errors", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()] + [""]
    if pngs:
        L += ["Plots: " + ", ".join(f"`{p.name}`" for p in pngs), ""]
    return "\n".join(L)


def main(argv: list[str]) -> int:
    src = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else src.parent
    results = json.loads(src.read_text())
    pngs = plots(results, out)
    (out / "results.md").write_text(markdown(results, pngs))
    print("\n".join(str(p) for p in pngs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
