"""Convergence: how long the system takes to get back in line after a change.

Three hosts h1, h2, h3 on one segment, each running ``ovsvnet agent --interval I`` in its
namespace (hold time = the agent's default, 3 intervals). Vnet 97 on h1 and h2 from the
start. Measured, each repeated and reported as median and spread:

* discovery, vnet created: ``ovsvnet create --id 97`` on h3 -> tunnels h1<->h3 and h2<->h3
  up (VXLAN port with an OpenFlow port number on every side); vnet deleted -> gone again;
* host death: h3's agent killed (SIGKILL, no goodbye) -> its tunnels gone on h1 and h2
  (bounded below by the hold time); graceful leave (SIGTERM, goodbye announcement);
* host join: h3's agent started -> tunnels up everywhere;
* migration: guest a3 moved between h3 and h2 (same MAC and IP), one gratuitous ARP, then
  the first reply to a ping stream (10 ms) from a1 on h1, timed from the moment the ARP
  was sent; moves are spaced by more than ovsvnet's move lock;
* ovs-vswitchd restart on h2 (flows lost) -> first reply of a1's ping stream to a2 on h2,
  repaired by the agent (canary check), and, agents stopped and static peers instead,
  repaired by ``ovsvnet sync`` run at once after the restart.

Baselines are the configured times: announcement interval, hold time, the agent's canary
check interval; each result is also given as a ratio to them.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from bench.common import (
    Agents,
    PingStream,
    ovsvnet,
    ping_ok,
    send_garp,
    summarize,
    tunnel_addrs,
)
from ovsvnet import flows
from ovsvnet.lab import Lab, LabError, LabHost, wait_until

CANARY_INTERVAL = 2.0  # ovsvnet.agent.AgentOptions.canary_interval (no CLI option)


def _mesh(hosts: list[LabHost]) -> bool:
    want = {h.address for h in hosts}
    return all(tunnel_addrs(h) >= want - {h.address} for h in hosts)


def _gone_from(others: list[LabHost], h: LabHost) -> bool:
    return all(h.address not in tunnel_addrs(o) for o in others)


def _wait(pred: Any, timeout: float, what: str) -> float:
    """Poll ``pred`` every 20 ms; returns the wall-clock time it first held."""
    wait_until(pred, timeout=timeout, interval=0.02, what=what)
    return time.time()


def _stats(xs: list[float], baseline: float | None) -> dict[str, Any]:
    s = summarize(xs, 4)
    if s.get("n") and baseline:
        s["ratio_to_baseline_median"] = round(s["median"] / baseline, 3)
        s["baseline_s"] = baseline
    return s


def run(profile: Any, log: Any) -> dict[str, Any]:
    interval = profile.interval
    reps = profile.conv_reps
    agents = Agents(interval)
    res: dict[str, Any] = {"interval_s": interval, "repetitions": reps}
    with Lab(prefix=profile.lab_prefix("v")) as lab:
        try:
            lab.add_segment("s1")
            h1, h2, h3 = (lab.add_host(n, "s1") for n in ("h1", "h2", "h3"))
            for h in (h1, h2):
                ovsvnet(h, "create", "--id", "97")
            for h in (h1, h2, h3):
                agents.start(h)
            st = agents.status(h1) or {}
            hold = float(st.get("hold_time") or 3 * interval)
            res["hold_s"] = hold
            res["canary_interval_s"] = CANARY_INTERVAL
            _wait(lambda: _mesh([h1, h2]), 20, "tunnels h1<->h2")
            limit = hold + 20

            # -- discovery: vnet created / deleted on h3 ---------------------------------
            created, cmd, deleted = [], [], []
            for _ in range(reps):
                t0 = time.time()
                ovsvnet(h3, "create", "--id", "97")
                cmd.append(time.time() - t0)
                created.append(_wait(lambda: _mesh([h1, h2, h3]), limit,
                                     "tunnels to h3 after it created vnet 97") - t0)
                t0 = time.time()
                ovsvnet(h3, "delete", "97", "--force")
                deleted.append(_wait(lambda: _gone_from([h1, h2], h3), limit,
                                     "tunnels to h3 gone after it deleted vnet 97") - t0)
            log(f"  vnet created -> mesh: {summarize(created)['median']:.2f}s; "
                f"deleted -> gone: {summarize(deleted)['median']:.2f}s")
            res["discovery_vnet_created"] = _stats(created, interval)
            res["discovery_vnet_created"]["create_command_s"] = summarize(cmd, 4)["median"]
            res["vnet_deleted_tunnels_gone"] = _stats(deleted, interval)

            # -- host death, graceful leave, join ---------------------------------------
            ovsvnet(h3, "create", "--id", "97")
            _wait(lambda: _mesh([h1, h2, h3]), limit, "full mesh")
            death, leave, join = [], [], []
            for _ in range(reps):
                for sig, bucket in ((signal.SIGKILL, death), (signal.SIGTERM, leave)):
                    t0 = time.time()
                    agents.stop(h3, sig)
                    bucket.append(_wait(lambda: _gone_from([h1, h2], h3), limit,
                                        "h3's tunnels to go from h1 and h2") - t0)
                    t1 = agents.start(h3, wait=False)
                    join.append(_wait(lambda: _mesh([h1, h2, h3]), limit,
                                      "h3 to rejoin the mesh") - t1)
            log(f"  host death -> tunnels gone: {summarize(death)['median']:.2f}s "
                f"(hold {hold:g}s); leave: {summarize(leave)['median']:.2f}s; "
                f"join: {summarize(join)['median']:.2f}s")
            res["host_death_tunnels_gone"] = _stats(death, hold)
            res["host_leave_tunnels_gone"] = _stats(leave, interval)
            res["host_join_mesh"] = _stats(join, interval)
            agents.status(h3, timeout=30)  # the restarted agent answers

            # -- guests ----------------------------------------------------------------------
            a1 = lab.add_guest("a1", "h1", "vnet-0097", ip="192.168.97.1/24", mtu=1450)
            a2 = lab.add_guest("a2", "h2", "vnet-0097", ip="192.168.97.2/24", mtu=1450)
            lab.add_guest("a3", "h3", "vnet-0097", ip="192.168.97.3/24", mtu=1450)
            for dst in ("192.168.97.2", "192.168.97.3"):
                if not ping_ok(a1.netns, dst, count=3, timeout=20):
                    raise LabError(f"a1 cannot ping {dst} before the convergence tests")

            # -- migration -------------------------------------------------------------------
            # Moves are spaced by more than ovsvnet's move lock (a location learned from an
            # announcement outranks ordinary learning for MOVE_LOCK seconds): a guest moved
            # again within that time is a different, rarer case (see BENCHMARKS.md).
            spacing = float(getattr(flows, "MOVE_LOCK", 0)) + 1.0
            mig, mig_timeouts = [], 0
            window = 10.0
            last = 0.0
            for _ in range(reps):
                time.sleep(max(0.0, last + spacing - time.time()))
                target = "h2" if lab.guest("a3").host == "h3" else "h3"
                a3 = lab.move_guest("a3", target)
                with PingStream(a1.netns, a3.addr or "", 0.01, window + 5) as stream:
                    time.sleep(0.3)  # the stream runs against the old location
                    t0 = send_garp(a3.netns, a3.mac, a3.addr or "")  # time of the send
                    ts = stream.wait_reply_after(t0, window)
                last = t0
                if ts is None:
                    mig_timeouts += 1
                else:
                    mig.append(ts - t0)
            log(f"  migration -> traffic from h1: "
                f"{summarize(mig)['median'] if mig else float('nan'):.3f}s "
                f"({mig_timeouts} timeouts of {window:g}s)")
            res["migration_first_reply"] = _stats(mig, interval)
            res["migration_first_reply"]["timeouts"] = mig_timeouts
            res["migration_first_reply"]["window_s"] = window
            res["migration_first_reply"]["spacing_s"] = spacing

            # -- ovs-vswitchd restart, agent repairs -----------------------------------------
            def restart_once(manual: bool) -> tuple[float | None, float, float | None]:
                with PingStream(a1.netns, a2.addr or "", 0.01, 60) as stream:
                    t_pre = time.time()
                    if stream.wait_reply_after(t_pre - 1, 10) is None:
                        raise LabError("no traffic a1 -> a2 before the restart")
                    t_kill = time.time()
                    h2.restart_vswitchd()
                    t_up = time.time()
                    sync_s = None
                    if manual:
                        ovsvnet(h2, "sync")
                        sync_s = time.time() - t_up
                    ts = stream.wait_reply_after(t_up, 30)
                return (ts - t_up if ts else None), t_up - t_kill, sync_s

            repair, restart_s, failures = [], [], 0
            for _ in range(reps):
                r, d, _s = restart_once(manual=False)
                restart_s.append(d)
                if r is None:
                    failures += 1
                else:
                    repair.append(r)
            st2 = agents.status(h2, timeout=30) or {}
            log(f"  vswitchd restart -> traffic (agent): "
                f"{summarize(repair)['median'] if repair else float('nan'):.2f}s after "
                f"ovs-vswitchd is back; {failures} failures")
            res["vswitchd_restart_agent"] = _stats(repair, CANARY_INTERVAL)
            res["vswitchd_restart_agent"]["ratio_to_interval_median"] = (
                round(res["vswitchd_restart_agent"]["median"] / interval, 3) if repair else None)
            res["vswitchd_restart_agent"]["failures"] = failures
            res["vswitchd_restart_agent"]["vswitchd_restart_itself_s"] = summarize(restart_s, 3)
            res["vswitchd_restart_agent"]["agent_counted_restarts"] = st2.get(
                "vswitchd_restarts")

            # -- ovs-vswitchd restart, ovsvnet sync by hand ----------------------------------
            agents.stop_all()
            for h, other in ((h1, h2), (h2, h1)):
                ovsvnet(h, "peer-add", other.address)
            for h in (h1, h2):
                ovsvnet(h, "sync")
            if not ping_ok(a1.netns, a2.addr or "", count=3, timeout=20):
                raise LabError("static peers h1<->h2: a1 cannot ping a2")
            manual, sync_cmd, mfail = [], [], 0
            for _ in range(reps):
                r, _d, s = restart_once(manual=True)
                if s is not None:
                    sync_cmd.append(s)
                if r is None:
                    mfail += 1
                else:
                    manual.append(r)
            log(f"  vswitchd restart -> traffic (ovsvnet sync by hand): "
                f"{summarize(manual)['median'] if manual else float('nan'):.2f}s")
            res["vswitchd_restart_manual_sync"] = _stats(manual, None)
            res["vswitchd_restart_manual_sync"]["failures"] = mfail
            res["vswitchd_restart_manual_sync"]["sync_command_s"] = summarize(sync_cmd, 3)
            if repair and manual:
                res["ratios"] = {"restart_repair_agent/manual_sync": round(
                    summarize(repair)["median"] / summarize(manual)["median"], 3)}
        except Exception:
            _log_agents(log, lab, agents)
            raise
        finally:
            agents.stop_all()
    return res


def _log_agents(log: Any, lab: Lab, agents: Agents) -> None:
    """On failure: per host, its tunnel ports, whether its agent still runs, what the agent
    says it knows and the tail of its log, so that a CI run that has torn the lab down
    still says why."""
    for h in lab.hosts.values():
        path = h.dir / "agent.log"
        tail = path.read_text(errors="replace").splitlines()[-25:] if path.exists() else []
        alive = agents.pid(h) is not None
        st = agents.status(h, timeout=3) if alive else None
        peers = [(p.get("address"), p.get("vnets")) for p in (st or {}).get("peers", [])]
        log(f"  -- {h.name} ({h.address}) tunnels {sorted(tunnel_addrs(h))}; agent "
            f"{'running' if alive else 'NOT running'}; peers {peers}; agent.log tail:")
        for line in tail:
            log(f"     {line}")
