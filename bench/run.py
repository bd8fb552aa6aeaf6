"""Run the benchmarks: ``python -m bench.run [--quick] [--out DIR] [--only SECTIONS]``.

Needs root and the Open vSwitch binaries (it builds labs of simulated hosts, see
:mod:`ovsvnet.lab`). Writes ``results.json``, ``results.md`` (the tables of
BENCHMARKS.md) and PNG plots to ``--out`` (default ``bench/results``).

The full run takes about 20 minutes on 2 cores; ``--quick`` (under 3 minutes) runs every
section with tiny sizes and one repetition, for CI: its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import loadavg, machine_info
from ovsvnet.lab import have_root_and_ovs

SECTIONS = ("dataplane", "controlplane", "cost", "convergence", "registry", "ovn")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "bench"


@dataclass
class Profile:
    """Sizes and repetitions of one run."""

    quick: bool = False
    # data plane
    iperf_seconds: int = 5
    iperf_reps: int = 5
    ping_count: int = 200
    ping_interval: float = 0.01
    # control plane
    create_per_call_ns: tuple[int, ...] = (10, 100)
    create_batch_ns: tuple[int, ...] = (10, 100, 1000)
    big_n: int = 1000
    query_reps: int = 3
    flows_vnets: tuple[int, ...] = (1, 10, 100)
    flows_peers: tuple[int, ...] = (1, 5, 10)
    memory_peers: int = 10
    idle_seconds: float = 10.0
    # convergence
    interval: float = 1.0
    conv_reps: int = 5
    # registry scale (bench/registry_scale.py)
    registry_n: int = 1000
    registry_reps: int = 5
    prefix: str = field(default_factory=lambda: "ovb" + secrets.token_hex(2))

    @classmethod
    def make(cls, quick: bool) -> Profile:
        if not quick:
            return cls()
        return cls(quick=True, iperf_seconds=2, iperf_reps=1, ping_count=50,
                   create_per_call_ns=(10,), create_batch_ns=(10,), big_n=10, query_reps=1,
                   flows_vnets=(1, 10), flows_peers=(1, 5), memory_peers=5,
                   idle_seconds=3.0, conv_reps=1, registry_n=50, registry_reps=1)

    def lab_prefix(self, section: str) -> str:
        return f"{self.prefix}{section}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _section(name: str) -> Callable[[Profile, Callable[[str], None]], dict[str, Any]]:
    if name == "dataplane":
        from bench import dataplane
        return dataplane.run
    if name == "controlplane":
        from bench import controlplane
        return controlplane.run
    if name == "cost":
        from bench import cost
        return cost.run
    if name == "convergence":
        from bench import convergence
        return convergence.run
    if name == "registry":
        from bench import registry_scale
        return registry_scale.run
    if name == "ovn":
        from bench import ovn
        return ovn.run
    raise ValueError(name)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, one repetition (< 3 min); for smoke tests")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run (default: {','.join(SECTIONS)})")
    ap.add_argument("--publish", action="store_true",
                    help=f"also copy the PNGs and results.json to {DOCS}")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    if not have_root_and_ovs():
        print("bench.run: needs root and the Open vSwitch binaries (ovs-vswitchd, "
              "ovsdb-server, ip)", file=sys.stderr)
        return 2
    profile = Profile.make(args.quick)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "command": "python -m bench.run" + (" --quick" if args.quick else ""),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),
            "profile": asdict(profile),
            "loadavg_start": loadavg(),
            "sections": {},
        },
        "errors": {},
    }
    path = out / "results.json"
    t_all = time.monotonic()
    for name in sections:
        log(f"== {name}")
        t0 = time.monotonic()
        load0 = loadavg()
        try:
            results[name] = _section(name)(profile, log)
        except Exception as exc:  # keep the other sections' results
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} failed: {exc}")
            traceback.print_exc()
        results["meta"]["sections"][name] = {
            "seconds": round(time.monotonic() - t0, 1), "loadavg_before": load0,
            "loadavg_after": loadavg()}
        log(f"{name} took {time.monotonic() - t0:.0f}s")
        write_json(path, results)
    results["meta"]["seconds"] = round(time.monotonic() - t_all, 1)
    results["meta"]["loadavg_end"] = loadavg()
    write_json(path, results)
    try:
        from bench import report
        pngs = report.plots(results, out)
        (out / "results.md").write_text(report.markdown(results, pngs))
    except Exception as exc:
        results["errors"]["report"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        pngs = []
        write_json(path, results)
    if args.publish:
        DOCS.mkdir(parents=True, exist_ok=True)
        for p in [path, out / "results.md", *pngs]:
            if p.exists():
                shutil.copy2(p, DOCS / p.name)
        log(f"copied results and plots to {DOCS}")
    log(f"done in {results['meta']['seconds']:.0f}s: {path}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
