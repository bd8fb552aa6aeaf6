"""The multicast probe: who answers on the discovery group from this host (bounded).

Sends at most ``count`` ICMP echo requests to the group (TTL 1) and listens for ovsvnet
announcements for ``duration`` seconds; nothing else leaves the host.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time

from ovsvnet.announce import GROUP, PORT


def icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo_request(ident: int, seq: int, payload: bytes = b"ovsvnet-doctor") -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    csum = icmp_checksum(header + payload)
    return struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload


def parse_icmp_echo_reply(packet: bytes) -> tuple[int, int] | None:
    """(ident, seq) of an ICMP echo reply in a raw IPv4 packet, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or packet[9] != socket.IPPROTO_ICMP:
        return None
    icmp_type, code, _, ident, seq = struct.unpack_from("!BBHHH", packet, ihl)
    if icmp_type != 0 or code != 0:
        return None
    return ident, seq


def describe_announcement(data: bytes) -> str | None:
    """'origin' (or 'origin via relay') of an ovsvnet announcement, None if it is not one."""
    from ovsvnet.announce import DecodeError, Relayed, decode
    try:
        msg = decode(data, None)
    except (DecodeError, ValueError, struct.error):
        return None
    if isinstance(msg, Relayed):
        return f"{msg.announcement.origin} via {msg.relay}"
    return msg.origin


def probe_multicast(local_ip: str, group: str = GROUP, port: int = PORT,
                    duration: float = 2.0, count: int = 3) -> tuple[dict[str, str], str]:
    """Who is reachable on the discovery group from ``local_ip``: (heard, method).

    Listens for ovsvnet announcements on ``group:port`` and sends ``count`` ICMP echo
    requests to the group (TTL 1; Xen's manual did ``ping 224.10.0.1``; Linux hosts answer
    only with ``icmp_echo_ignore_broadcasts=0``). Bounded: returns after ``duration`` s.
    """
    heard: dict[str, str] = {}
    methods = []
    ident = os.getpid() & 0xFFFF
    mif = socket.inet_aton(local_ip)
    with contextlib.ExitStack() as stack:
        udp: socket.socket | None = None
        raw: socket.socket | None = None
        try:
            udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind(("0.0.0.0", port))
            udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                           socket.inet_aton(group) + mif)
            methods.append("announcements")
        except OSError:
            udp = None
        try:
            raw = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                    socket.IPPROTO_ICMP))
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mif)
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            methods.append("icmp echo")
        except OSError:
            raw = None
        socks = [s for s in (udp, raw) if s is not None]
        if not socks:
            return heard, "no probe possible (not root?)"
        start = time.monotonic()
        deadline = start + duration
        sent = 0
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if raw is not None and sent < count and now >= start + sent * duration / (count + 1):
                with contextlib.suppress(OSError):
                    raw.sendto(icmp_echo_request(ident, sent), (group, 0))
                sent += 1
            ready, _, _ = select.select(socks, [], [], min(0.1, max(0.0, deadline - now)))
            for s in ready:
                try:
                    data, (src, _p) = s.recvfrom(65535)
                except OSError:
                    continue
                if src == local_ip:
                    continue
                what = None
                if s is udp:
                    origin = describe_announcement(data)
                    what = f"announces {origin}" if origin is not None else None
                else:
                    reply = parse_icmp_echo_reply(data)
                    what = "icmp echo" if reply is not None and reply[0] == ident else None
                if what is not None and what not in heard.get(src, "").split(", "):
                    heard[src] = f"{heard[src]}, {what}" if src in heard else what
    return heard, " + ".join(methods)
