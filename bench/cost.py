"""What a command and a pass cost, at 1 vnet and at ``big_n`` (1000) vnets (issue 15's goals).

Every figure is a same-run ratio against its nearest Open vSwitch command on the same lab host:

* a command's *own* cost is its time minus a bare ``python -c pass`` (the floor of any Python
  CLI), compared with ``ovs-vsctl`` doing the nearest thing: ``list`` vs ``list-br``,
  ``create`` one more vnet vs ``add-br`` + a patch-port pair, ``peer-add`` vs ``add-port``
  of a VXLAN port; ``show`` and ``create`` at big_n against their own 1-vnet time;
* each command both ways: run by itself (``OVSVNET_DIRECT=1``: it downloads the database, as
  ovs-vsctl does) and handed to the running agent (:mod:`ovsvnet.cli.delegate`);
* a no-op ``sync`` and a hook's ``sync --bridge`` (libvirt's ``prepare``);
* ``import ovsvnet.cli`` and ``ovsvnet --help`` against the bare interpreter;
* ovs-vswitchd restarted under a running agent: until every static flow is back (all
  vnets) and until a ping on one vnet answers, and whether the peer expired meanwhile;
* the agent's RSS and idle CPU at big_n against one vnet.

Each command runs as a user would type it: a new process in the host's namespace.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from bench.common import Agents, cpu_seconds, rss_kib, summarize
from ovsvnet.lab import Lab, LabHost, wait_until

BASE = 0x3000  # vnet ids of this section: 0x3000 ...
PROBE = 0x2FFF  # the vnet created and deleted again by the create probes
PEER_PROBE = "10.77.9.9"  # a static peer added and deleted again by the peer-add probes


def _cmd(host: LabHost, *args: str, direct: bool) -> list[str]:
    env = ["env", "OVSVNET_DIRECT=1"] if direct else []
    return [*env, sys.executable, "-m", "ovsvnet", "--db", host.db, *args]


def _time(host: LabHost, argv: list[str], reps: int, undo: list[str] | None = None,
          timeout: float = 600) -> dict[str, Any]:
    """Median and spread of ``argv`` run ``reps`` times in the host's namespace (``undo``
    between runs, untimed); fails loudly when the command fails."""
    samples = []
    for _ in range(reps):
        t0 = time.monotonic()
        done = host.run(*argv, check=False, timeout=timeout)
        samples.append(time.monotonic() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr[-300:]}")
        if undo is not None:
            host.run(*undo, check=False, timeout=timeout)
    return summarize(samples)


def _own(cmd: dict[str, Any], floor: dict[str, Any]) -> float:
    return max(0.0, cmd["median"] - floor["median"])


def _grow(host: LabHost, n: int, log: Any) -> None:
    """Define vnets BASE .. BASE+n-1 in one command (those there already are accepted)."""
    d = host.dir / "cost-sxp"
    d.mkdir(exist_ok=True)
    files = []
    for i in range(n):
        p = d / f"{BASE + i:x}.sxp"
        p.write_text(f"(vnet (id {BASE + i:x}) (security none))\n")
        files.append(str(p))
    t0 = time.monotonic()
    done = host.run(*_cmd(host, "create", "--may-exist", *files, direct=True), check=False,
                    timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"create {len(files)} vnets: {done.stderr[-300:]}")
    log(f"  {n} vnets defined ({time.monotonic() - t0:.1f}s)")


def _vsctl(host: LabHost, *args: str) -> list[str]:
    return ["ovs-vsctl", f"--db={host.db}", *args]


def _commands(host: LabHost, peer: LabHost, reps: int, direct: bool, log: Any,
              tag: str) -> dict[str, Any]:
    show_id = f"{BASE:x}"
    bridge = f"vnet-{BASE:04x}"
    out: dict[str, Any] = {}
    out["list"] = _time(host, _cmd(host, "list", direct=direct), reps)
    out["show"] = _time(host, _cmd(host, "show", show_id, direct=direct), reps)
    out["create"] = _time(host, _cmd(host, "create", "--id", f"{PROBE:x}", direct=direct),
                          reps, undo=_cmd(host, "delete", f"{PROBE:x}", direct=True))
    out["peer_add"] = _time(host, _cmd(host, "peer-add", PEER_PROBE, direct=direct), reps,
                            undo=_cmd(host, "peer-delete", PEER_PROBE, direct=True))
    out["sync"] = _time(host, _cmd(host, "sync", direct=direct), reps)
    out["hook"] = _time(host, _cmd(host, "sync", "--bridge", bridge, direct=direct), reps)
    log(f"  {tag}: list {out['list']['median']:.3f}s show {out['show']['median']:.3f}s "
        f"create {out['create']['median']:.3f}s peer-add {out['peer_add']['median']:.3f}s "
        f"sync {out['sync']['median']:.3f}s sync --bridge {out['hook']['median']:.3f}s")
    return out


def _baselines(host: LabHost, reps: int) -> dict[str, Any]:
    patch = ["--", "add-port", "bxb", "bxp", "--", "set", "Interface", "bxp", "type=patch",
             "options:peer=bxq", "--", "add-port", "br-vnet", "bxq", "--", "set",
             "Interface", "bxq", "type=patch", "options:peer=bxp"]
    return {
        "list_br": _time(host, _vsctl(host, "list-br"), reps),
        "add_br_patch": _time(
            host, _vsctl(host, "add-br", "bxb", "--", "set", "Bridge", "bxb",
                         "datapath_type=netdev", "fail_mode=standalone", *patch), reps,
            undo=_vsctl(host, "del-br", "bxb", "--", "del-port", "br-vnet", "bxq")),
        "add_port": _time(
            host, _vsctl(host, "add-port", "br-vnet", "bxv", "--", "set", "Interface", "bxv",
                         "type=vxlan", "options:remote_ip=10.77.9.8", "options:key=flow"),
            reps, undo=_vsctl(host, "del-port", "br-vnet", "bxv")),
    }


def _static_flows(host: LabHost) -> list[str]:
    out = host.run("ovs-ofctl", "-O", "OpenFlow15", "--no-stats", "dump-flows", "br-vnet",
                   timeout=60).stdout
    return sorted(line.strip() for line in out.splitlines()
                  if "cookie=" in line and "0x6f7604" not in line.split()[0])


def _restart(lab: Lab, host: LabHost, peer: LabHost, agents: Agents, n: int,
             log: Any) -> dict[str, Any]:
    """ovs-vswitchd restarted under the agent: every flow back, and one vnet's traffic."""
    bridge = f"vnet-{BASE:04x}"
    g1 = lab.add_guest(f"c{n}a", host.name, bridge, ip="192.168.61.1/24", mtu=1450)
    g2 = lab.add_guest(f"c{n}b", peer.name, bridge, ip="192.168.61.2/24", mtu=1450)
    wait_until(lambda: g1.ping(g2.addr, count=1, timeout=2), timeout=30, what="first ping")
    before = _static_flows(host)
    t0 = time.time()
    host.restart_vswitchd()
    restarted = time.time()
    # (single pings, not a ping stream: ping -w gives up at the first "unreachable" error)
    reply = None
    while reply is None and time.time() - restarted < 60:
        if g2.run("ping", "-n", "-q", "-c", "1", "-W", "0.2", g1.addr,
                  check=False).returncode == 0:
            reply = time.time()
    wait_until(lambda: _static_flows(host) == before, timeout=120, interval=0.05,
               what="every static flow back")
    flows_back = time.time()
    status = agents.status(host) or {}
    res = {
        "n_vnets": n, "n_static_flows": len(before),
        "vswitchd_restart_s": round(restarted - t0, 3),
        # (an upper bound: the first comparison runs after traffic is back)
        "flows_back_after_restart_s": round(flows_back - restarted, 3),
        "traffic_back_after_restart_s": round(reply - restarted, 3) if reply else None,
        "agent_saw_restarts": status.get("vswitchd_restarts"),
        "peer_kept": bool(status.get("static_peers")) or bool(status.get("peers")),
    }
    log(f"  N={n}: vswitchd restart: {len(before)} flows back {res['flows_back_after_restart_s']}s"
        f" after it answered, traffic {res['traffic_back_after_restart_s']}s")
    return res


def _agent_footprint(host: LabHost, agents: Agents, idle: float) -> dict[str, Any]:
    pid = agents.pid(host)
    assert pid is not None
    time.sleep(2)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(idle)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    return {"rss_kib": rss_kib(pid),
            "idle_cpu_percent": round(100 * ((cpu1 or 0) - (cpu0 or 0)) / (t1 - t0), 2)}


def run(profile: Any, log: Any) -> dict[str, Any]:
    reps = max(3, profile.query_reps)
    py = [sys.executable]
    floor = summarize([_t([*py, "-c", "pass"]) for _ in range(10)])
    res: dict[str, Any] = {
        "floor_python_s": floor,
        "import_cli_s": summarize([_t([*py, "-c", "import ovsvnet.cli"]) for _ in range(10)]),
        "help_s": summarize([_t([*py, "-m", "ovsvnet", "--help"]) for _ in range(5)]),
        "sizes": {},
    }
    log(f"  python -c pass {floor['median'] * 1000:.0f} ms, import ovsvnet.cli "
        f"{res['import_cli_s']['median'] * 1000:.0f} ms, --help "
        f"{res['help_s']['median'] * 1000:.0f} ms")
    agents = Agents(interval=1.0)
    with Lab(prefix=profile.lab_prefix("cost")) as lab:
        lab.add_segment("s1")
        host, peer = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        host.run(*_cmd(host, "peer-add", peer.address, direct=True))
        peer.run(*_cmd(peer, "create", "--id", f"{BASE:x}", direct=True))
        peer.run(*_cmd(peer, "peer-add", host.address, direct=True))
        try:
            for n in (1, profile.big_n):
                _grow(host, n, log)
                size: dict[str, Any] = {"baselines": _baselines(host, max(5, reps))}
                size["direct"] = _commands(host, peer, reps, True, log, f"N={n} direct")
                agents.start(host, "--no-multicast", timeout=120)
                try:
                    size["agent"] = _commands(host, peer, reps, False, log, f"N={n} agent")
                    size["agent_footprint"] = _agent_footprint(host, agents,
                                                               profile.idle_seconds)
                    size["restart"] = _restart(lab, host, peer, agents, n, log)
                finally:
                    agents.stop_all()
                res["sizes"][str(n)] = size
        finally:
            agents.stop_all()
    res["ratios"] = ratios(res, profile.big_n)
    return res


def _t(argv: list[str]) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.monotonic() - t0


def ratios(res: dict[str, Any], big: int) -> dict[str, Any]:
    """The goals' ratios: own cost vs the nearest ovs-vsctl command, per size and path."""
    floor = res["floor_python_s"]
    out: dict[str, Any] = {
        "import_cli/bare_python": round(res["import_cli_s"]["median"] / floor["median"], 2),
    }
    pairs = (("list", "list_br"), ("create", "add_br_patch"), ("peer_add", "add_port"),
             ("sync", "list_br"), ("hook", "list_br"))
    for n, size in res["sizes"].items():
        base = size["baselines"]
        for path in ("direct", "agent"):
            for cmd, vs in pairs:
                out[f"{cmd}/{vs} own, N={n}, {path}"] = round(
                    _own(size[path][cmd], floor) / base[vs]["median"], 2)
    one, many = res["sizes"].get("1"), res["sizes"].get(str(big))
    if one and many:
        for path in ("direct", "agent"):
            for cmd in ("show", "create", "hook"):
                out[f"{cmd} N={big}/N=1, {path}"] = round(
                    many[path][cmd]["median"] / one[path][cmd]["median"], 2)
        out[f"agent RSS N={big}/N=1"] = round(
            many["agent_footprint"]["rss_kib"] / one["agent_footprint"]["rss_kib"], 2)
    return out


def markdown(res: dict[str, Any]) -> list[str]:
    """The section's table for BENCHMARKS.md / results.md."""
    floor = res["floor_python_s"]["median"]
    L = ["## What a command costs (bench/cost.py)", "",
         f"Bare `python -c pass` {floor * 1000:.0f} ms; `import ovsvnet.cli` "
         f"{res['import_cli_s']['median'] * 1000:.0f} ms "
         f"({res['ratios']['import_cli/bare_python']}x); `ovsvnet --help` "
         f"{res['help_s']['median'] * 1000:.0f} ms.", "",
         "| vnets | command | by itself (s) | via the agent (s) | ovs-vsctl baseline (s) | "
         "own cost / baseline, by itself | via agent |", "|---|---|---|---|---|---|---|"]
    names = {"list": ("list", "list_br", "list-br"),
             "show": ("show 3000", None, None),
             "create": ("create one more", "add_br_patch", "add-br + patch pair"),
             "peer_add": ("peer-add", "add_port", "add-port vxlan"),
             "sync": ("sync (no-op)", "list_br", "list-br"),
             "hook": ("sync --bridge (hook)", "list_br", "list-br")}
    for n, size in res["sizes"].items():
        for cmd, (label, base_key, base_label) in names.items():
            d, a = size["direct"][cmd]["median"], size["agent"][cmd]["median"]
            if base_key:
                b = size["baselines"][base_key]["median"]
                L.append(f"| {n} | {label} | {d:.3f} | {a:.3f} | {b:.3f} ({base_label}) | "
                         f"{max(0, d - floor) / b:.1f}x | {max(0, a - floor) / b:.1f}x |")
            else:
                L.append(f"| {n} | {label} | {d:.3f} | {a:.3f} | - | - | - |")
    L += ["", "| vnets | static flows | flows back after vswitchd restart (s) | "
          "traffic back (s) | peer kept | agent RSS (MiB) | agent idle CPU (%) |",
          "|---|---|---|---|---|---|---|"]
    for n, size in res["sizes"].items():
        r, f = size["restart"], size["agent_footprint"]
        L.append(f"| {n} | {r['n_static_flows']} | {r['flows_back_after_restart_s']} | "
                 f"{r['traffic_back_after_restart_s']} | {r['peer_kept']} | "
                 f"{(f['rss_kib'] or 0) / 1024:.1f} | {f['idle_cpu_percent']} |")
    L += ["", "Ratios: " + "; ".join(f"{k} {v}" for k, v in res["ratios"].items()), ""]
    return L

