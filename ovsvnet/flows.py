"""The OpenFlow rules of a host, computed from its desired state (pure, no I/O).

*vnet bridges* (one per vnet, domains plug in) carry no ovsvnet flows: local switching is
plain MAC learning, the ``NORMAL`` flow ovs-vswitchd itself gives a ``fail_mode=standalone``
bridge (the patch port to the transport bridge is one more port; NORMAL never learns a
multicast source MAC, and the transport bridge drops such frames).

*transport bridge* ``br-vnet`` (one per host; one patch port per vnet, one tunnel port per
peer, ``options:key=flow``). Its pipeline, after Neutron's br-tun:

    table 0  CLASSIFY     from vnet K's patch: tun_id:=K, goto 20
                          from peer P's tunnel (in_port and tun_src both P's): reg0 := the
                          tunnel's security level (0 none/VXLAN, 1 auth/Geneve,
                          2 conf/GRE; see ovsvnet.ipsec), goto 10
                          anything else: drop
    table 10 FROM_TUNNEL  in_port=P, tun_id=K for each vnet K that peer P carries, through
                          P's tunnel of K's level: goto 15. Isolation at tunnel entry: a
                          peer can only put frames into the vnets it carries (a static peer
                          carries all), never into another local vnet of the same level.
                          multicast source MAC, unknown key, or a peer that does not carry
                          K: drop
    table 15 INTO_VNET    tun_id=K, reg0=level of K (a frame for a vnet only counts when it
                          came through a tunnel of that vnet's level: an auth/conf vnet
                          never accepts a frame from the clear VXLAN tunnel, and a none
                          vnet never one from an IPsec tunnel):
                          learn (K, src MAC) -> that tunnel into table 30,
                          then out to vnet K's patch port only   <- split horizon: a frame
                          from a tunnel can never leave by a tunnel
                          tun_id=K and a broadcast ARP or a RARP (what a guest sends when
                          it arrives after a migration): also learn a *locked* entry
                          (priority 110, hard timeout MOVE_LOCK seconds), see below
    table 20 FROM_VNET    multicast source MAC: drop (never valid, never leaves the host);
                          multicast/broadcast dst: goto 40; unicast: goto 30
    table 30 UNICAST      learned (tun_id, dst MAC) -> output:that tunnel; else goto 40
    table 40 FLOOD        tun_id=K -> output to every peer carrying K, through the tunnel
                          of K's level (head-end replication)
    table 200 CANARY      one drop flow; if it is gone, ovs-vswitchd restarted and lost
                          every flow, so the agent reinstalls them

Why the lock: OVS keeps, per datapath flow, a cached copy of the learn it executed and
re-applies it when it pushes that flow's statistics (up to ~0.5 s later). If a moved guest's
last frames from its old host are pushed *after* its gratuitous ARP from the new host was
learned, OVS re-creates the old (MAC -> old host) entry, and the guest stays unreachable until
it speaks again (``ofproto_flow_mod_learn_refresh`` re-creates a replaced learned rule; seen
here in about 1 test run in 5). The locked entry learned from the announcement outranks
the ordinary one for MOVE_LOCK seconds, long enough for ordinary traffic from the new location
to relearn the ordinary entry for good. It is the same idea as OVS's own gratuitous-ARP lock
in its MAC learning table (which applies only to bonds).

The flow count grows as vnets + peers + the (peer, vnet) pairs that are really carried
(never all vnets x all peers): ingress is checked per peer in table 0, per carried pair in
table 10 and per key in table 15; the flood action lists name the same pairs.

Cookies: every flow carries ``0x6f76`` ("ov") in its top 16 bits, then a kind byte, then the
vnet key in the low 24 bits, e.g. ``0x6f76020000000097`` = a static flow of vnet 0x97 and
``0x6f76040000000097`` = a MAC learned on vnet 0x97. ``ovs-ofctl dump-flows br-vnet
cookie=0x6f76020000000097/-1`` shows one vnet's rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

COOKIE_MAGIC = 0x6F76
KIND_BASE = 0x01
KIND_VNET = 0x02
KIND_PEER = 0x03
KIND_LEARNED = 0x04
KIND_CANARY = 0x0C
KIND_NAMES = {
    KIND_BASE: "base", KIND_VNET: "vnet", KIND_PEER: "peer",
    KIND_LEARNED: "learned", KIND_CANARY: "canary",
}
#: Mask selecting magic + kind: ``cookie=<c>/KIND_MASK`` matches one kind of flow.
KIND_MASK = 0xFFFF_FF00_0000_0000

T_CLASSIFY, T_FROM_TUNNEL, T_INTO_VNET, T_FROM_VNET = 0, 10, 15, 20
T_UNICAST, T_FLOOD, T_CANARY = 30, 40, 200

#: Seconds a learned remote MAC lives without traffic. Longer than Linux's ARP cache
#: (reachable 15-45 s, then stale until gc after 60 s), so a quiet guest is not flooded for
#: while its peers still believe they know it; a MAC that moves is relearned at once anyway
#: because learn() overwrites the entry with the same (vnet, MAC) match.
LEARN_IDLE_TIMEOUT = 300

MULTICAST_MAC = "01:00:00:00:00:00/01:00:00:00:00:00"

#: Seconds a location learned from a broadcast ARP or RARP outranks ordinary learning. It
#: must outlast one revalidation of the datapath flows that carried the MAC's last frames
#: from its old place (ovs-vswitchd's max-revalidator, 500 ms by default, plus the dump
#: under load), and no more: an ordinary ARP broadcast sent just before a *second* move
#: takes a lock too, which the same stale refresh can bring back for the old place, for
#: this long at most (10 s failed 6 moves in 25 at one move every 2 s; bench.migration_race).
MOVE_LOCK = 3

#: What a guest sends to announce itself after a move: QEMU and Xen send RARP or gratuitous
#: ARP (a broadcast ARP); any broadcast ARP proves where its sender is at that moment.
ANNOUNCEMENTS = ("dl_type=0x8035", "arp,dl_dst=ff:ff:ff:ff:ff:ff")


def cookie(kind: int, key: int = 0) -> int:
    return (COOKIE_MAGIC << 48) | (kind << 40) | (key & 0xFFFFFF)


def cookie_kind(value: int) -> int | None:
    """The kind byte of an ovsvnet cookie, or None for someone else's flow."""
    if value >> 48 != COOKIE_MAGIC:
        return None
    return (value >> 40) & 0xFF


def describe_cookie(value: int) -> str:
    kind = cookie_kind(value)
    if kind is None:
        return "not ovsvnet"
    name = KIND_NAMES.get(kind, f"kind {kind:#x}")
    key = value & 0xFFFFFF
    return f"{name} flow of vnet key {key:#x}" if key else f"{name} flow"


@dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: str
    actions: str
    cookie: int
    comment: str = field(default="", compare=False)

    def render(self) -> str:
        """The flow in ``ovs-ofctl add-flow`` syntax (table always explicit)."""
        match = f",{self.match}" if self.match else ""
        return (f"cookie={self.cookie:#018x},table={self.table},priority={self.priority}"
                f"{match},actions={self.actions}")

    def dump_form(self) -> str:
        """How ``ovs-ofctl --no-stats dump-flows`` prints this flow when its match and
        actions are already in OVS's canonical spelling (true for the vnet bridges' flows).
        Used only as a shortcut: when it does not match, the diff-flows comparison decides."""
        table = f"table={self.table}, " if self.table else ""
        match = f",{self.match}" if self.match else ""
        return (f"cookie={self.cookie:#x}, {table}priority={self.priority}{match} "
                f"actions={self.actions}")


@dataclass(frozen=True)
class VnetPort:
    """A vnet as the transport bridge sees it: key, patch port, security level code."""

    key: int
    patch_ofport: int
    level: int = 0


@dataclass(frozen=True)
class TunnelPort:
    """A tunnel to one peer at one security level; ``vnets`` are the keys the peer
    carries, None = all (static peer)."""

    address: str
    ofport: int
    vnets: frozenset[int] | None = None
    level: int = 0

    def carries(self, key: int) -> bool:
        return self.vnets is None or key in self.vnets


def _tun_src_field(address: str) -> str:
    return "tun_src" if ipaddress.ip_address(address).version == 4 else "tun_ipv6_src"


def learn_action(key: int, idle_timeout: int = LEARN_IDLE_TIMEOUT) -> str:
    return (f"learn(table={T_UNICAST},priority=100,idle_timeout={idle_timeout},"
            f"delete_learned,cookie={cookie(KIND_LEARNED, key):#x},"
            "NXM_NX_TUN_ID[],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])")


def lock_action(key: int, lock: int = MOVE_LOCK) -> str:
    """The locked entry learned from an announcement (see "Why the lock" above)."""
    return (f"learn(table={T_UNICAST},priority=110,hard_timeout={lock},"
            f"delete_learned,cookie={cookie(KIND_LEARNED, key):#x},"
            "NXM_NX_TUN_ID[],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])")


def transport_flows(vnets: list[VnetPort], tunnels: list[TunnelPort],
                    idle_timeout: int = LEARN_IDLE_TIMEOUT) -> list[Flow]:
    """Every static flow of the transport bridge for these vnets and tunnels."""
    base = cookie(KIND_BASE)
    flows: list[Flow] = [
        Flow(T_CLASSIFY, 0, "", "drop", base, "not from a vnet nor from a known peer"),
        Flow(T_FROM_TUNNEL, 200, f"dl_src={MULTICAST_MAC}", "drop", base,
             "a multicast source MAC is never valid; do not learn it"),
        Flow(T_FROM_TUNNEL, 0, "", "drop", base,
             "a key no local vnet uses, or a peer that does not carry it"),
        Flow(T_INTO_VNET, 0, "", "drop", base, "not admitted by table 10"),
        Flow(T_FROM_VNET, 20, f"dl_src={MULTICAST_MAC}", "drop", base,
             "a multicast source MAC is never valid; it does not leave the host"),
        Flow(T_FROM_VNET, 10, f"dl_dst={MULTICAST_MAC}", f"goto_table:{T_FLOOD}", base,
             "broadcast and multicast are flooded"),
        Flow(T_FROM_VNET, 0, "", f"goto_table:{T_UNICAST}", base, "unicast: look up"),
        Flow(T_UNICAST, 0, "", f"goto_table:{T_FLOOD}", base,
             "unknown unicast is flooded"),
        Flow(T_FLOOD, 0, "", "drop", base, "no peer carries this vnet"),
        Flow(T_CANARY, 0, "", "drop", cookie(KIND_CANARY),
             "canary: its absence means ovs-vswitchd restarted"),
    ]
    for tunnel in sorted(tunnels, key=lambda t: t.ofport):
        flows.append(Flow(
            T_CLASSIFY, 100,
            f"in_port={tunnel.ofport},{_tun_src_field(tunnel.address)}={tunnel.address}",
            f"set_field:{tunnel.level}->reg0,goto_table:{T_FROM_TUNNEL}", cookie(KIND_PEER),
            f"from peer {tunnel.address}, security level {tunnel.level}"))
    for vnet in sorted(vnets, key=lambda v: v.key):
        c = cookie(KIND_VNET, vnet.key)
        flows.append(Flow(
            T_CLASSIFY, 100, f"in_port={vnet.patch_ofport}",
            f"set_field:{vnet.key:#x}->tun_id,goto_table:{T_FROM_VNET}", c,
            f"from vnet key {vnet.key:#x}: tag with its key"))
        carriers = [t for t in sorted(tunnels, key=lambda t: t.ofport)
                    if t.carries(vnet.key) and t.level == vnet.level]
        for t in carriers:
            flows.append(Flow(
                T_FROM_TUNNEL, 100, f"in_port={t.ofport},tun_id={vnet.key:#x}",
                f"goto_table:{T_INTO_VNET}", c,
                f"peer {t.address} carries vnet key {vnet.key:#x}: admitted"))
        into = f"tun_id={vnet.key:#x},reg0={vnet.level}"
        flows.append(Flow(
            T_INTO_VNET, 100, into,
            f"{learn_action(vnet.key, idle_timeout)},output:{vnet.patch_ofport}", c,
            f"into vnet key {vnet.key:#x}: learn the sender, deliver locally only"))
        for announcement in ANNOUNCEMENTS:
            flows.append(Flow(
                T_INTO_VNET, 150, f"{into},{announcement}",
                f"{learn_action(vnet.key, idle_timeout)},{lock_action(vnet.key)},"
                f"output:{vnet.patch_ofport}", c,
                f"into vnet key {vnet.key:#x}: an announcement; learn and lock the sender"))
        outputs = [f"output:{t.ofport}" for t in carriers]
        if outputs:
            flows.append(Flow(
                T_FLOOD, 100, f"tun_id={vnet.key:#x}", ",".join(outputs), c,
                f"flood vnet key {vnet.key:#x} to the {len(outputs)} peer(s) carrying it"))
    return flows
