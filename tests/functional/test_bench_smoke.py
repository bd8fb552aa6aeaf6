"""Smoke test of the benchmarks: ``python -m bench.run --quick`` runs every section and
writes sane results. It asserts nothing about speed (CI machines differ); it checks that
every measurement happened, produced positive numbers, and left nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]


def _positive(s: dict, what: str) -> None:
    assert s and s.get("n", 0) >= 1, f"{what}: no samples: {s}"
    assert s["median"] > 0 and s["min"] > 0, f"{what}: not positive: {s}"


def test_quick_benchmark_produces_every_section(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the bench extra (matplotlib) is not installed")
    proc = subprocess.run(
        # OVN is measured by tests/functional/test_bench_ovn.py (its own quick run)
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path),
         "--only", "dataplane,controlplane,cost,convergence,registry"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == {}, out
    assert proc.returncode == 0, out
    assert results["meta"]["mode"] == "quick"

    # data plane: four set-ups, each with throughput and RTT, and the three ratios
    d = results["dataplane"]
    assert set(d["configs"]) == {"ovsvnet", "ovs_hand", "kernel", "underlay"}
    assert 1200 <= d["ovsvnet_reported_mtu"] < 1500
    for name, c in d["configs"].items():
        _positive(c["throughput_gbps"], f"{name} throughput")
        _positive(c["rtt_ms"], f"{name} RTT")
    for key in ("ovsvnet/ovs_hand", "ovsvnet/kernel", "ovsvnet/underlay"):
        assert d["ratios"][key]["throughput"]["median"] > 0, key
        assert d["ratios"][key]["rtt"]["median"] > 0, key
    assert d["afxdp"]["skipped"] is True

    # control plane
    cp = results["controlplane"]
    for method, rows in cp["create"]["methods"].items():
        assert rows, method
        for n, e in rows.items():
            _positive(e["seconds_per_vnet"], f"create {method} N={n}")
    for key in ("ovsvnet_list_s", "vsctl_list_br_s", "ovsvnet_sync_noop_s",
                "ovsvnet_peer_add_s", "vsctl_add_vxlan_port_s"):
        _positive(cp["at_scale"][key], key)
    assert cp["at_scale"]["sync_flows_changed"] == 0, "a no-op sync changed flows"
    cells = cp["flows_and_ports"]["cells"]
    assert len(cells) >= 4 and all(c["flows_total"] > 0 for c in cells)
    for c in cells:
        assert c.get("role_tunnel", 0) == c["peers"], c  # one tunnel port per peer
    # the design promise: ports grow as vnets + peers, never vnets x peers; flows as vnets +
    # peers + the (peer, vnet) pairs really carried: one admission flow per pair (isolation
    # at tunnel entry). The bench's peers are static, and a static peer carries every vnet.
    fit = cp["flows_and_ports"]["fit"]
    assert abs(fit["flows_total"]["per_vnet_x_peer"] - 1.0) < 0.5, fit
    assert abs(fit["ports_on_ovsvnet_bridges"]["per_vnet_x_peer"]) < 0.5, fit
    mem = cp["memory"]
    assert mem["python_bare_rss_kib"] > 0 and mem["python_import_ovsvnet_rss_kib"] > 0
    assert mem["agent_big"]["rss_kib"] > 0 and mem["agent_small"]["rss_kib"] > 0
    assert mem["agent_big"]["vnets"] == results["meta"]["profile"]["big_n"]

    # cost: every command both ways at both sizes, the restart recovered, the ratios there
    co = results["cost"]
    for n, size in co["sizes"].items():
        for path in ("direct", "agent"):
            for cmd in ("list", "show", "create", "peer_add", "sync", "hook"):
                _positive(size[path][cmd], f"cost N={n} {path} {cmd}")
        assert size["restart"]["flows_back_after_restart_s"] is not None
        assert size["restart"]["traffic_back_after_restart_s"] is not None, size["restart"]
        assert size["restart"]["agent_saw_restarts"] == 1
    assert co["ratios"]["import_cli/bare_python"] > 0
    assert "## What a command costs" in (tmp_path / "results.md").read_text()

    # convergence: every event measured at least once, none timed out
    cv = results["convergence"]
    for key in ("discovery_vnet_created", "vnet_deleted_tunnels_gone", "host_death_tunnels_gone",
                "host_leave_tunnels_gone", "host_join_mesh", "migration_first_reply",
                "vswitchd_restart_agent", "vswitchd_restart_manual_sync"):
        _positive(cv[key], key)
    assert cv["migration_first_reply"]["timeouts"] == 0
    assert cv["vswitchd_restart_agent"]["failures"] == 0
    assert cv["host_death_tunnels_gone"]["min"] >= cv["hold_s"] - 1.0  # the hold is honoured

    # registry scale: baseline and scale both converged after every change
    rg = results["registry"]
    for label in ("baseline", "scale"):
        for key in ("change_applied", "foreign_change_applied", "peer_change_applied"):
            _positive(rg[label][key], f"registry {label} {key}")
        assert rg[label]["agent_rss_kib"] > 0, label
    assert rg["scale"]["chassis"] == rg["n"] + 1 and rg["scale"]["vnets"] == rg["n"]
    assert rg["scale"]["h1_vnets"] == rg["h1_vnets"] and rg["scale"]["h1_tunnels"] > 0
    assert rg["ratios"]["agent_rss"] > 0
    assert "### Registry scale" in (tmp_path / "results.md").read_text()

    # outputs, and nothing left behind
    for png in ("dataplane.png", "create.png", "flows.png", "convergence.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    assert "### Data plane" in (tmp_path / "results.md").read_text()
    prefix = results["meta"]["profile"]["prefix"]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ln for ln in left.splitlines() if ln.startswith(prefix)], left
