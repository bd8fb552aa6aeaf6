"""Kernel and daemon facts (read-only): what ovsvnet.ipsec.support decides from."""

from __future__ import annotations

import os

from ovsvnet import ipsec as I
from ovsvnet.system import kernel


def test_gather_facts_runs_read_only(tmp_path):
    facts = kernel.ipsec_facts(tmp_path)
    assert facts["monitor_pid"] is None
    assert isinstance(facts["esp"], bool) and isinstance(facts["xfrm"], bool)
    assert I.support("netdev", **kernel.ipsec_facts(tmp_path)).ok is False


def test_gather_facts_finds_a_live_monitor_by_pidfile(tmp_path):
    (tmp_path / kernel.MONITOR_PIDFILE).write_text(f"{os.getpid()}\n")
    # our own pid is alive but is not ovs-monitor-ipsec: not counted
    assert kernel.ipsec_facts(tmp_path)["monitor_pid"] is None
