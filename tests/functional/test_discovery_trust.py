"""Discovery under attack, with real agents and a rogue on the segment (issue 14).

Two hosts run agents with the lab's discovery key; a plain namespace on the same segment
plays the attacker: first without the key (everything it sends fails the MAC), then as a
compromised key holder (the MAC passes, so every other rule must hold on its own): it
speaks for another host from its own address, moves a live host, dates announcements in
the far future or the past, claims a huge hold time, floods 1000 ids, and forges LEAVEs.
No real peer is displaced, the counters name each drop, and the agent's memory stays
bounded. Last, a captured announcement replayed after an agent restart is refused.
"""

from __future__ import annotations

import sys
import time

import pytest

from ovsvnet.lab import LabHost, PlainHost, capture, wait_until

from .helpers import ovsvnet
from .test_agent import INTERVAL, _payload_from_hex, lab_with_agents, status, tunnels

pytestmark = pytest.mark.root

#: Runs in the rogue's namespace: builds and sends announcements as the spec in argv asks.
SENDER = r"""
import json, socket, sys, time
from ovsvnet.announce import Announcement, SequenceGenerator, VnetAd, encode
from ovsvnet.vnetid import VnetId
spec = json.loads(sys.argv[1])
key = bytes.fromhex(spec["key"]) if spec.get("key") else None
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(spec["src"]))
now_ms = int(time.time() * 1000)
for m in spec["messages"]:
    seq = m.get("seq") or SequenceGenerator(now_ms + m.get("skew_ms", 0)).next()
    ann = Announcement(m["origin"], m["address"], seq,
                       tuple(VnetAd(VnetId(v)) for v in m.get("vnets", [0x97])),
                       m.get("hold", 30), leaving=m.get("leaving", False))
    data = encode(ann, key)
    for dest in spec["to"]:
        s.sendto(data, (dest, 1798))
"""


def send(rogue: PlainHost, to: list[str], messages: list[dict], key: bytes | None) -> None:
    import json
    spec = {"src": rogue.address, "to": to, "messages": messages,
            "key": key.hex() if key else None}
    rogue.run(sys.executable, "-c", SENDER, json.dumps(spec), timeout=60)


def counters(host: LabHost) -> dict[str, int]:
    return dict(status(host)["agent"]["counters"])


def agent_rss_kib(host: LabHost) -> int:
    pid = int((host.dir / "agent.pid").read_text())
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_forged_announcements_move_nothing_and_each_drop_is_counted():
    with lab_with_agents("s1") as (lab, agents):
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h in (h1, h2):
            ovsvnet(h, "create", "--id", "97")
            agents.start(h)
        assert wait_until(lambda: tunnels(h1) == {h2.address}, timeout=15, what="tunnel")
        rogue = lab.add_plain_host("rogue", "s1")
        key = h1.discovery_key().read_bytes().strip()
        h2_id = status(h2)["agent"]["system_id"]
        group = "224.10.0.1"
        rss_before = agent_rss_kib(h1)
        before = counters(h1)

        # 1. no key: the MAC fails, whatever the datagram says (unicast and multicast)
        send(rogue, [h1.address, group], [
            {"origin": h2_id, "address": rogue.address, "seq": 2**64 - 1, "hold": 65535},
            {"origin": h2_id, "address": h2.address, "leaving": True},
            {"origin": "evil", "address": rogue.address}], key=b"x" * 32)
        # 2. a compromised key holder: the MAC passes; the other rules must hold
        send(rogue, [h1.address, group], [
            {"origin": h2_id, "address": h2.address},                  # from the wrong place
            {"origin": h2_id, "address": rogue.address},               # moves a live host
            {"origin": h2_id, "address": rogue.address, "leaving": True},   # LEAVE-kills it
            {"origin": h2_id, "address": h2.address, "leaving": True},      # ... spoofed
            {"origin": "ghost1", "address": rogue.address, "seq": 2**64 - 1},  # far future
            {"origin": "ghost2", "address": rogue.address, "skew_ms": -300_000},  # too old
        ], key=key)
        # 3. 1000 ids from one address, each claiming a huge hold time
        send(rogue, [h1.address], [{"origin": f"flood{i}", "address": rogue.address,
                                    "hold": 65535} for i in range(1000)], key=key)
        time.sleep(4 * INTERVAL)

        after = counters(h1)
        gained = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        assert gained["decode_auth"] >= 6, gained        # 3 messages x (unicast + group)
        assert gained["spoofed"] >= 4, gained            # 2 messages x 2 ways
        assert gained["moved"] >= 4, gained
        assert gained["future"] >= 2 and gained["too_old"] >= 2, gained
        # 4 ids per address at most (the kernel drops what overflows the socket's buffer)
        assert gained["source_cap"] >= 200, gained
        assert gained["hold_capped"] >= 4, gained
        peers = {p["origin"]: p for p in status(h1)["agent"]["peers"]}
        assert peers[h2_id]["address"] == h2.address       # the real h2 is where it was
        assert not {"evil", "ghost1", "ghost2"} & set(peers)
        flood = [p for o, p in peers.items() if o.startswith("flood")]
        assert len(flood) <= 4 and all(p["hold_time"] <= 30 for p in flood), flood
        # the key holder itself may join (it holds the key), at one address: one tunnel
        assert tunnels(h1) <= {h2.address, rogue.address}
        assert h2.address in tunnels(h1)
        assert agent_rss_kib(h1) - rss_before < 20_000, (rss_before, agent_rss_kib(h1))


def test_a_replayed_announcement_is_refused_after_an_agent_restart():
    """The newest sequence number per peer survives the agent's restart, so a captured
    announcement of a host that has since left cannot bring it back."""
    with lab_with_agents("s1") as (lab, agents):
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h in (h1, h2):
            ovsvnet(h, "create", "--id", "97")
            agents.start(h)
        assert wait_until(lambda: tunnels(h1) == {h2.address}, timeout=15, what="tunnel")
        with capture(h2, "eth0", f"udp port 1798 and src host {h2.address} and dst host "
                     f"{h1.address}", count=1, timeout=10, settle=10, extra=("-x",)) as cap:
            ovsvnet(h1, "peer-add", h2.address)  # h2 now also announces to h1 by unicast
            ovsvnet(h2, "peer-add", h1.address)
        captured = _payload_from_hex(cap.lines)
        assert captured, cap.lines
        agents.stop(h2)  # h2 leaves (a signed LEAVE)
        ovsvnet(h1, "peer-delete", h2.address)
        assert wait_until(lambda: h2.address not in tunnels(h1), timeout=10, what="h2 gone")
        agents.stop(h1)
        agents.start(h1)
        stale_before = counters(h1)["stale"]
        code = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                "s.sendto(bytes.fromhex(sys.argv[1]), (sys.argv[2], 1798))\n")
        h2.run(sys.executable, "-c", code, captured.hex(), h1.address)  # h2's own address
        time.sleep(4 * INTERVAL)
        assert counters(h1)["stale"] >= stale_before + 1
        assert h2.address not in {p["address"] for p in status(h1)["agent"]["peers"]}
        assert h2.address not in tunnels(h1)
