"""Smoke test of the OVN comparison (``bench/ovn.py``): ``python -m bench.run --quick --only
ovn`` builds OVN beside ovsvnet in one lab with one network, a ping crosses OVN, every
same-run ratio ovsvnet / OVN is there and positive, and nothing is left running. It asserts
nothing about speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ovsvnet.lab.ovn import have_ovn, missing_ovn

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
RATIOS = ("define_to_first_ping", "define_one_at_1", "list_at_1",
          "vswitchd_restart_to_traffic_at_1", "throughput", "rtt_median", "rtt_min")


def _median(v: Any) -> float:
    return float(v["median"] if isinstance(v, dict) else v)


def test_quick_ovn_bench_measures_both_systems(tmp_path: Path) -> None:
    if not have_ovn():
        pytest.skip(missing_ovn())
    pytest.importorskip("matplotlib", reason="the bench extra (matplotlib) is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--only", "ovn", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == {}, out
    assert proc.returncode == 0, out
    r = results["ovn"]
    assert not r.get("skipped") and not r.get("errors"), out

    # a ping crossed OVN (and ovsvnet) on the same guests, every time it was asked to
    assert r["ping_crosses"] == {"ovsvnet": True, "ovn": True}
    assert r["define_to_ping"]["failures"] == {"ovsvnet": 0, "ovn": 0}
    assert r["ovsvnet_reported_mtu"] >= r["guest_mtu"]
    level = r["levels"]["1"]
    assert level["restart"]["failures"] == {"ovsvnet": 0, "ovn": 0}
    assert level["flows_host1"]["ovn"] > 0 and level["flows_host1"]["ovsvnet"] > 0

    # every ratio exists and is positive, and so is what it was computed from
    for key in RATIOS:
        assert r["ratios"].get(key) and _median(r["ratios"][key]) > 0, (key, r["ratios"])
    for side in ("ovsvnet", "ovn"):
        for s in (r["define_to_ping"]["first_reply_s"][side], level["define_one"][side],
                  level["list"][side], level["restart"][side],
                  level["dataplane"][side]["throughput_gbps"]):
            assert s["n"] >= 1 and s["median"] > 0 and s["min"] > 0, (side, s)
        for mode in ("no_agent", "agent"):
            assert level["idle"][mode][side]["vswitchd_cores_per_host"] >= 0, (mode, side)
    # OVN's define waited for every chassis and said how long each stage took
    assert level["define_one"]["ovn_wait_ms"], level["define_one"]

    # the report has the section and its plot
    assert "### ovsvnet against OVN" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "ovn.png").stat().st_size > 1000

    # nothing left behind: no namespace, no daemon of this lab (its workdir is in their args)
    lab = results["meta"]["profile"]["prefix"] + "o"
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ln for ln in left.splitlines() if ln.startswith(lab + "-")], left
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert not [ln for ln in ps.splitlines() if f"/{lab}-" in ln], ps


def test_ovn_lab_binds_lab_guests_and_stops_every_daemon() -> None:
    """The lab piece itself (``ovsvnet.lab.ovn``): central + one ovn-controller per host,
    guests bound to logical ports, switches isolated, every daemon gone afterwards."""
    if not have_ovn():
        pytest.skip(missing_ovn())
    from ovsvnet.lab import Lab, pid_alive
    from ovsvnet.lab.ovn import OvnLab

    with Lab() as lab:
        lab.add_segment("s1")
        central = lab.add_plain_host("central", "s1")
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        with OvnLab(lab.workdir, central, [h1, h2]) as ovn:
            ovn.up()
            assert ovn.central.chassis() == {h1.system_id, h2.system_id}
            assert ovn.chassis["h1"].tunnels() == {h2.address}
            g1 = ovn.add_guest(lab, "g1", "h1", "ls1", "192.168.60.1/24")
            g2 = ovn.add_guest(lab, "g2", "h2", "ls1", "192.168.60.2/24")
            ovn.add_guest(lab, "g3", "h2", "ls2", "192.168.60.3/24")
            assert g1.ping(g2.addr or "", timeout=20)
            assert ovn.bound("ls1-g1") == h1.system_id
            assert ovn.bound("ls1-g2") == h2.system_id
            assert not g1.ping("192.168.60.3", count=1, timeout=3)  # another switch
            pids = [*ovn.controller_pids().values(), *ovn.central.pids().values()]
            assert len(pids) == 5 and all(pids), pids
        assert not [p for p in pids if pid_alive(p)], pids
