"""Repeated guest migration, to reproduce the back-to-back migration race in BENCHMARKS.md.

``python -m bench.migration_race [--reps 25] [--spacing 0] [--max-revalidator MS]``

Three hosts with vnet 97 and each other as static peers (no agent); guest a1 on h1 pings
(every 10 ms) guest a3, which is moved between h3 and h2 (same MAC and IP), sending one
gratuitous ARP after each move. Prints, per move, the seconds from that ARP to the first
reply a1 gets, or ``None`` when none came within ``--window`` seconds, then a JSON summary.

``--spacing`` waits that many seconds between moves (ovsvnet's move lock is
``ovsvnet.flows.MOVE_LOCK`` seconds); ``--max-revalidator`` sets OVS's
``other_config:max-revalidator`` (ms, default 500) on every host first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench.common import PingStream, ovsvnet, ping_ok, send_garp, summarize
from ovsvnet.lab import Lab, have_root_and_ovs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.migration_race", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--spacing", type=float, default=0.0, help="seconds between moves")
    ap.add_argument("--window", type=float, default=5.0, help="seconds to wait for a reply")
    ap.add_argument("--max-revalidator", type=int, metavar="MS")
    args = ap.parse_args(argv)
    if not have_root_and_ovs():
        print("needs root and Open vSwitch", file=sys.stderr)
        return 2
    results: list[float | None] = []
    with Lab() as lab:
        lab.add_segment("s1")
        hosts = [lab.add_host(n, "s1") for n in ("h1", "h2", "h3")]
        for h in hosts:
            ovsvnet(h, "create", "--id", "97")
            for other in hosts:
                if other is not h:
                    ovsvnet(h, "peer-add", other.address)
            if args.max_revalidator:
                h.vsctl("set", "Open_vSwitch", ".",
                        f"other_config:max-revalidator={args.max_revalidator}")
        a1 = lab.add_guest("a1", "h1", "vnet-0097", ip="192.168.97.1/24", mtu=1450)
        lab.add_guest("a3", "h3", "vnet-0097", ip="192.168.97.3/24", mtu=1450)
        if not ping_ok(a1.netns, "192.168.97.3", 3, 20):
            print("a1 cannot reach a3 before the first move", file=sys.stderr)
            return 1
        for i in range(args.reps):
            time.sleep(args.spacing)
            target = "h2" if lab.guest("a3").host == "h3" else "h3"
            a3 = lab.move_guest("a3", target)
            with PingStream(a1.netns, a3.addr or "", 0.01, args.window + 5) as stream:
                time.sleep(0.3)  # the stream runs against the old location first
                t0 = send_garp(a3.netns, a3.mac, a3.addr or "")
                ts = stream.wait_reply_after(t0, args.window)
            results.append(round(ts - t0, 4) if ts is not None else None)
            print(f"move {i + 1:3d} to {target}: "
                  f"{results[-1] if results[-1] is not None else 'None (no reply)'}", flush=True)
    ok = [r for r in results if r is not None]
    print(json.dumps({"reps": args.reps, "spacing_s": args.spacing,
                      "max_revalidator_ms": args.max_revalidator,
                      "no_reply_within_window": len(results) - len(ok),
                      "window_s": args.window, "seconds": summarize(ok, 4)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
