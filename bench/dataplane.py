"""Data plane: TCP throughput and RTT between two guests on two hosts of one segment.

Four set-ups, all in one lab on the same Linux-bridge segment ``s1`` and measured in the
same run, repetitions interleaved (ovsvnet, OVS by hand, kernel, underlay, ovsvnet, ...)
so that background load on the machine spreads over all of them alike:

(a) ``ovsvnet``  hosts a1, a2: ``ovsvnet create --id 97`` and each other as static peer;
    guests on ``vnet-0097`` with the MTU ovsvnet reports (vnet bridge -> patch -> br-vnet
    -> VXLAN key=flow -> br-phy -> eth0, userspace datapath, AF_PACKET ports).
(b) ``ovs_hand`` hosts b1, b2: the least OVS can do for the same job on the same
    datapath: one netdev bridge per host, one flow ``actions=NORMAL``, one VXLAN port
    (key 97) to the other host, guests plugged in; br-phy underlay as the lab builds it.
(c) ``kernel``   plain hosts k1, k2: Linux kernel VXLAN (VNI 97, udp/4789) in a Linux
    bridge with the guest's veth; no OVS at all.
(d) ``underlay`` plain hosts u1, u2 talking directly on the segment: no encapsulation,
    no host switch; the ceiling for any overlay here.

Guests everywhere have TX checksum offload off (the userspace datapath needs it; the
others get the same so the guests are identical) and the overlay MTU (1450); the
underlay pair uses the segment MTU (1500).
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.common import (
    iperf,
    ns_run,
    ovsvnet,
    percentile,
    ping_ok,
    ping_rtts,
    ratio,
    summarize,
)
from ovsvnet.lab import Lab, LabError, LabHost, PlainHost

CONFIGS = {
    "ovsvnet": "ovsvnet (vnet 97, static peers)",
    "ovs_hand": "OVS by hand (1 bridge, NORMAL, 1 VXLAN port)",
    "kernel": "kernel VXLAN + Linux bridge",
    "underlay": "bare underlay (no encapsulation)",
}
VNI = 0x97


def _kernel_guest(lab: Lab, k: PlainHost, remote: PlainHost, name: str, ip: str,
                  mtu: int) -> str:
    """Kernel VXLAN + Linux bridge in plain host ``k``, and a guest namespace on it.

    Every link is created from inside a namespace of this lab, with its peer born
    directly in another namespace of this lab (DESIGN.md section 5)."""
    k.run("ip", "link", "add", "vx", "type", "vxlan", "id", str(VNI), "remote", remote.address,
          "local", k.address, "dstport", "4789", "dev", "eth0")
    k.run("ip", "link", "add", "br0", "type", "bridge", "stp_state", "0")
    k.run("ip", "link", "set", "vx", "mtu", str(mtu), "master", "br0", "up")
    k.run("ip", "link", "set", "br0", "up")
    # The lab has no public "guest of a plain host": make the namespace through the lab so
    # it is recorded and deleted with the lab.
    gns = lab._add_netns(name)
    port = lab._unique_port(f"g-{name}")
    ns_run(gns, ["ip", "link", "add", "eth0", "mtu", str(mtu), "type", "veth", "peer", "name",
                 port, "mtu", str(mtu), "netns", k.netns])
    ns_run(gns, ["ethtool", "-K", "eth0", "tx", "off"])
    ns_run(gns, ["ip", "addr", "add", ip, "dev", "eth0"])
    ns_run(gns, ["ip", "link", "set", "eth0", "up"])
    k.run("ip", "link", "set", port, "master", "br0", "up")
    return gns


def _hand_ovs(h: LabHost, remote: LabHost) -> None:
    h.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev",
            "fail_mode=secure",
            "--", "add-port", "br-int", "vx0",
            "--", "set", "Interface", "vx0", "type=vxlan",
            f"options:remote_ip={remote.address}", f"options:key={VNI}")
    h.ofctl("add-flow", "br-int", "actions=NORMAL")


def build(lab: Lab) -> dict[str, Any]:
    """The four set-ups; returns {config: {src, dst, addr, pids}} and the MTUs."""
    lab.add_segment("s1")
    a1, a2 = lab.add_host("a1", "s1"), lab.add_host("a2", "s1")
    for h, other in ((a1, a2), (a2, a1)):
        ovsvnet(h, "create", "--id", f"{VNI:x}")
        ovsvnet(h, "peer-add", other.address)
    mtu = json.loads(ovsvnet(a1, "show", f"{VNI:x}", "--json").stdout)["mtu"]
    if not mtu:
        raise LabError("ovsvnet show reported no MTU")
    ga1 = lab.add_guest("ga1", "a1", "vnet-0097", ip="192.168.97.1/24", mtu=mtu)
    ga2 = lab.add_guest("ga2", "a2", "vnet-0097", ip="192.168.97.2/24", mtu=mtu)

    b1, b2 = lab.add_host("b1", "s1"), lab.add_host("b2", "s1")
    _hand_ovs(b1, b2)
    _hand_ovs(b2, b1)
    gb1 = lab.add_guest("gb1", "b1", "br-int", ip="192.168.98.1/24", mtu=mtu)
    gb2 = lab.add_guest("gb2", "b2", "br-int", ip="192.168.98.2/24", mtu=mtu)

    k1, k2 = lab.add_plain_host("k1", "s1"), lab.add_plain_host("k2", "s1")
    gk1 = _kernel_guest(lab, k1, k2, "gk1", "192.168.99.1/24", mtu)
    gk2 = _kernel_guest(lab, k2, k1, "gk2", "192.168.99.2/24", mtu)

    u1, u2 = lab.add_plain_host("u1", "s1"), lab.add_plain_host("u2", "s1")

    def pids(*hosts: LabHost) -> list[int]:
        return [p for p in (h.vswitchd_pid() for h in hosts) if p]

    pairs = {
        "ovsvnet": {"src": ga1.netns, "dst": ga2.netns, "addr": ga2.addr,
                    "pids": pids(a1, a2), "mtu": mtu},
        "ovs_hand": {"src": gb1.netns, "dst": gb2.netns, "addr": gb2.addr,
                     "pids": pids(b1, b2), "mtu": mtu},
        "kernel": {"src": gk1, "dst": gk2, "addr": "192.168.99.2", "pids": [], "mtu": mtu},
        "underlay": {"src": u1.netns, "dst": u2.netns, "addr": u2.address, "pids": [],
                     "mtu": u1.mtu},
    }
    for name, p in pairs.items():
        if not ping_ok(p["src"], p["addr"], count=3, timeout=15):
            raise LabError(f"data plane set-up {name}: {p['src']} cannot ping {p['addr']}")
    return {"pairs": pairs, "mtu": mtu}


def run(profile: Any, log: Any) -> dict[str, Any]:
    with Lab(prefix=profile.lab_prefix("d")) as lab:
        t0 = time.monotonic()
        built = build(lab)
        pairs = built["pairs"]
        log(f"data plane: lab built in {time.monotonic() - t0:.1f}s; "
            f"ovsvnet reports MTU {built['mtu']}")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in pairs}
        for rep in range(profile.iperf_reps):
            for name, p in pairs.items():
                r = iperf(p["src"], p["dst"], p["addr"], profile.iperf_seconds,
                          watch_pids=p["pids"])
                runs[name].append(r)
                log(f"  iperf3 rep {rep + 1}/{profile.iperf_reps} {name:9s} "
                    f"{r['gbps']:.3f} Gbit/s (retr {r['retransmits']})")
        rtts: dict[str, list[float]] = {}
        for name, p in pairs.items():
            ping_rtts(p["src"], p["addr"], 5, 0.05)  # warm: neighbours, learned MACs
            rtts[name] = ping_rtts(p["src"], p["addr"], profile.ping_count,
                                   profile.ping_interval)
            log(f"  ping {name:9s} {len(rtts[name])}/{profile.ping_count} replies, "
                f"median {summarize(rtts[name])['median'] if rtts[name] else 'n/a'} ms")

    configs: dict[str, Any] = {}
    for name in pairs:
        tp = summarize([r["gbps"] for r in runs[name]])
        rtt = summarize(rtts[name], digits=4)
        rtt.pop("samples", None)
        if rtts[name]:
            rtt["p10"] = round(percentile(rtts[name], 10), 4)
            rtt["p90"] = round(percentile(rtts[name], 90), 4)
        rtt["lost"] = profile.ping_count - len(rtts[name])
        daemon = [sum(r["daemon_cpu"].values()) for r in runs[name] if r["daemon_cpu"]]
        configs[name] = {
            "label": CONFIGS[name],
            "guest_mtu": pairs[name]["mtu"],
            "throughput_gbps": tp,
            "rtt_ms": rtt,
            "retransmits": [r["retransmits"] for r in runs[name]],
            "iperf_cpu_sender_pct": [r["cpu_sender_pct"] for r in runs[name]],
            "iperf_cpu_receiver_pct": [r["cpu_receiver_pct"] for r in runs[name]],
            "vswitchd_cpu_per_second_both_hosts": summarize(daemon, 3) if daemon else None,
        }
    ratios = {}
    for base in ("ovs_hand", "kernel", "underlay"):
        ratios[f"ovsvnet/{base}"] = {
            "throughput": ratio(configs["ovsvnet"]["throughput_gbps"],
                                configs[base]["throughput_gbps"]),
            "rtt": ratio(configs["ovsvnet"]["rtt_ms"], configs[base]["rtt_ms"],
                         lo="p10", hi="p90"),
        }
    return {
        "iperf_seconds": profile.iperf_seconds,
        "repetitions": profile.iperf_reps,
        "ping_count": profile.ping_count,
        "ping_interval_s": profile.ping_interval,
        "ovsvnet_reported_mtu": built["mtu"],
        "configs": configs,
        "ratios": ratios,
        "afxdp": {"skipped": True,
                  "reason": "ovsvnet does not choose port types yet (guest and underlay ports "
                            "are AF_PACKET 'system' ports on the netdev datapath)"},
    }
