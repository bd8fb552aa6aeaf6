"""Kernel lane throughput: ovsvnet on the kernel datapath against kernel VXLAN + Linux bridge.

Run inside the qemu guest of ``ci/kernel-lane.sh`` (needs openvswitch.ko, esp4.ko, strongSwan):

    python -m bench.kernel_lane [--seconds 5] [--reps 2] [--out FILE.json]

One lab, one segment, all set-ups measured in the same run, repetitions interleaved:

* ``ovsvnet none``  hosts a1, a2 (``datapath_type=system``): vnet 97, plain VXLAN
* ``ovsvnet auth``  same hosts: vnet 98, Geneve in ESP null + HMAC-SHA256-128 (strongSwan)
* ``ovsvnet conf``  same hosts: vnet 99, GRE in ESP AES-128-GCM
* ``kernel``        plain hosts k1, k2: kernel VXLAN (VNI 97) + Linux bridge, no OVS

Guests have their offloads on everywhere (the kernel datapath needs no ``tx off``) and the
MTU ovsvnet computes for the level (the kernel pair uses the ``none`` MTU). Under TCG
(software CPU emulation) absolute numbers mean little: the ratio measured in the same run
is the figure to read, and even that weighs CPU cost, since TCG makes every cycle dear.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import iperf, ns_run, ping_ok, ratio, summarize
from bench.dataplane import _kernel_guest
from ovsvnet.errors import WaitTimeout
from ovsvnet.lab import Lab, LabError, wait_until
from ovsvnet.lab.strongswan import LabIpsec, usable

LEVEL_IDS = {"none": 0x97, "auth": 0x98, "conf": 0x99}


def _log(msg: str) -> None:
    print(msg, flush=True)


def run(seconds: float, reps: int) -> dict[str, Any]:
    reason = usable()
    if reason:
        raise LabError(f"kernel lane throughput: {reason}")
    secret = secrets.token_bytes(32)
    started: list[LabIpsec] = []
    ips: dict[str, LabIpsec] = {}
    t0 = time.monotonic()
    with Lab(prefix="klb" + secrets.token_hex(2), datapath_type="system") as lab:
        try:
            lab.add_segment("s1")
            a1, a2 = lab.add_host("a1", "s1"), lab.add_host("a2", "s1")
            for h in (a1, a2):
                ip = LabIpsec(h, secret)
                started.append(ip)
                ips[h.name] = ip
                ip.start()
            for h, other in ((a1, a2), (a2, a1)):
                for level, vid in LEVEL_IDS.items():
                    h.ovsvnet("create", "--id", f"{vid:x}", "--security", level)
                h.ovsvnet("peer-add", other.address)
            for h, other in ((a1, a2), (a2, a1)):  # secure tunnels: armed once routed
                ips[h.name].arm(other.address, tuple(LEVEL_IDS))
            pairs: dict[str, dict[str, Any]] = {}
            mtus = {}
            for level, vid in LEVEL_IDS.items():
                show = wait_until(
                    lambda vid=vid: (s := json.loads(
                        a1.ovsvnet("show", f"{vid:x}", "--json").stdout))["state"] == "active"
                    and s, timeout=60, what=f"vnet {vid:x} active")
                mtus[level] = int(show["mtu"])
                br = show["bridge"]  # the default name is ovsvnet's to choose
                g1 = lab.add_guest(f"g{level}1", "a1", br, ip=f"192.168.{vid}.1/24",
                                   mtu=mtus[level])
                g2 = lab.add_guest(f"g{level}2", "a2", br, ip=f"192.168.{vid}.2/24",
                                   mtu=mtus[level])
                pairs[f"ovsvnet_{level}"] = {"src": g1.netns, "dst": g2.netns,
                                             "addr": g2.addr, "mtu": mtus[level]}
            k1, k2 = lab.add_plain_host("k1", "s1"), lab.add_plain_host("k2", "s1")
            gk1 = _kernel_guest(lab, k1, k2, "gk1", "192.168.200.1/24", mtus["none"])
            gk2 = _kernel_guest(lab, k2, k1, "gk2", "192.168.200.2/24", mtus["none"])
            for g in (gk1, gk2):  # same guests as ovsvnet's: offloads on
                ns_run(g, ["ethtool", "-K", "eth0", "tx", "on"])
            for k in (k1, k2):  # plain hosts get tx off from the lab (for netdev peers)
                k.run("ethtool", "-K", "eth0", "tx", "on")
            pairs["kernel"] = {"src": gk1, "dst": gk2, "addr": "192.168.200.2",
                               "mtu": mtus["none"]}
            unreachable = []
            for name, p in list(pairs.items()):
                if not ping_ok(p["src"], p["addr"], count=3, timeout=60):
                    _log(f"KL throughput: {name}: {p['src']} cannot ping {p['addr']}: "
                         "not measured")
                    unreachable.append(name)
                    del pairs[name]
            if "kernel" in unreachable or "ovsvnet_none" in unreachable:
                raise LabError(f"baseline set-ups unreachable: {unreachable}")
            _log(f"KL throughput: lab built in {time.monotonic() - t0:.0f}s; MTUs {mtus}")
            runs: dict[str, list[float]] = {name: [] for name in pairs}
            retr: dict[str, list[int]] = {name: [] for name in pairs}
            for rep in range(reps):
                for name, p in pairs.items():
                    r = iperf(p["src"], p["dst"], p["addr"], seconds)
                    runs[name].append(r["gbps"])
                    retr[name].append(r["retransmits"] or 0)
                    _log(f"KL iperf3 rep {rep + 1}/{reps} {name:13s} {r['gbps']:.3f} Gbit/s "
                         f"(retransmits {r['retransmits']})")
        finally:
            for ip in started:
                try:
                    ip.stop()
                except Exception as err:
                    _log(f"KL throughput: stopping {ip}: {err}")
    stats = {name: summarize(v) for name, v in runs.items()}
    result: dict[str, Any] = {
        "seconds": seconds, "reps": reps, "mtus": mtus,
        "gbps": stats, "retransmits": retr,
        "ratio_vs_kernel": {name: ratio(stats[name], stats["kernel"])
                            for name in stats if name != "kernel"},
        "ratio_vs_none": {name: ratio(stats[name], stats["ovsvnet_none"])
                          for name in ("ovsvnet_auth", "ovsvnet_conf") if name in stats},
        "unreachable": unreachable,
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kernel_lane", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="iperf3 -t (default 5)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions per set-up (default 2)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    try:
        result = run(args.seconds, args.reps)
    except (LabError, WaitTimeout) as err:
        print(f"kernel lane throughput: {err}", file=sys.stderr)
        return 1
    try:
        accel = Path("/run/kl-out/accel").read_text().strip()
    except OSError:
        accel = "unknown"
    result["accel"] = accel
    for name, s in result["gbps"].items():
        r = result["ratio_vs_kernel"].get(name)
        extra = f", / kernel {r['median']} [{r['low']}-{r['high']}]" if r else ""
        _log(f"KL throughput {name:13s} median {s['median']:.3f} Gbit/s "
             f"[{s['min']:.3f}-{s['max']:.3f}]{extra}")
    for name, r in result["ratio_vs_none"].items():
        if r:
            _log(f"KL throughput {name} / ovsvnet_none: {r['median']} [{r['low']}-{r['high']}]")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
