"""Reading ovs-ofctl dumps without python-ovs's flow parser (Debian 12's rejects OF1.5 dumps)."""

from __future__ import annotations

import pytest

from ovsvnet.system import ofctl

LEARNED = (" cookie=0x6f76040000000097, duration=12.052s, table=30, n_packets=5, n_bytes=490,"
           " idle_timeout=300, idle_age=3, priority=110,tun_id=0x97,"
           "dl_dst=06:a4:48:b1:8e:42 actions=output:2")


def test_a_learned_entry_with_statistics() -> None:
    flow = ofctl.parse(LEARNED)
    assert flow.cookie == 0x6F76040000000097
    assert flow.info["idle_age"] == "3" and flow.info["duration"] == "12.052s"
    assert flow.match == {"priority": "110", "tun_id": "0x97", "dl_dst": "06:a4:48:b1:8e:42"}
    assert ofctl.output_port(flow) == 2


def test_a_static_flow_without_statistics_and_with_bare_words() -> None:
    flow = ofctl.parse("cookie=0x6f76020000000097, table=15, priority=150,rarp,reg0=0,"
                       "tun_id=0x97 actions=learn(table=30,priority=100),output:1")
    assert flow.info == {"cookie": "0x6f76020000000097", "table": "15"}
    assert flow.match == {"priority": "150", "rarp": "", "reg0": "0", "tun_id": "0x97"}
    assert ofctl.output_port(flow) is None  # more than one action
    assert ofctl.flow_cookie("cookie=0x6f76020000000097, table=15, priority=1 actions=drop") \
        == 0x6F76020000000097


@pytest.mark.parametrize("line", ["", "NXST_FLOW reply (xid=0x8):", "priority=0"])
def test_lines_that_are_no_flow(line: str) -> None:
    assert list(ofctl.parsed([line])) == []
    assert ofctl.flow_cookie(line) is None
