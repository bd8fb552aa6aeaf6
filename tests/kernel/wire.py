"""Underlay captures as raw bytes (pcap), and forged tunnel frames, for the kernel lane."""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ovsvnet.lab import LabError, wait_until

ESP, UDP, GRE = 50, 17, 47


@dataclass
class Frame:
    src: str
    dst: str
    proto: int
    sport: int | None
    dport: int | None
    data: bytes  # the whole Ethernet frame

    def __repr__(self) -> str:
        ports = f" {self.sport}->{self.dport}" if self.dport is not None else ""
        return f"<{self.src}->{self.dst} proto {self.proto}{ports} {len(self.data)}B>"


@dataclass
class Pcap:
    frames: list[Frame] = field(default_factory=list)

    def between(self, a: str, b: str) -> list[Frame]:
        return [f for f in self.frames if {f.src, f.dst} == {a, b}]

    def sent_by(self, a: str) -> list[Frame]:
        return [f for f in self.frames if f.src == a]


def parse_pcap(raw: bytes) -> list[Frame]:
    if len(raw) < 24:
        return []
    magic = struct.unpack("<I", raw[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off, out = 24, []
    while off + 16 <= len(raw):
        _, _, incl, _ = struct.unpack(endian + "IIII", raw[off:off + 16])
        data = raw[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(data) < 34 or data[12:14] != b"\x08\x00":
            continue
        ip = data[14:]
        ihl = (ip[0] & 0x0F) * 4
        proto = ip[9]
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        sport = dport = None
        if proto == UDP and len(ip) >= ihl + 4:
            sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
        out.append(Frame(src, dst, proto, sport, dport, data))
    return out


@contextlib.contextmanager
def pcap(netns: str, iface: str, path: Path, bpf: str = "ip", settle: float = 1.0,
         timeout: float = 120) -> Iterator[Pcap]:
    """tcpdump -w on ``iface`` in ``netns`` around the block; frames parsed afterwards."""
    argv = ["ip", "netns", "exec", netns, "tcpdump", "-n", "-U", "--immediate-mode", "-s", "0",
            "-i", iface,
            "-w", str(path), *bpf.split()]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    result = Pcap()
    try:
        wait_until(lambda: proc.poll() is not None or any("listening on" in e for e in err),
                   timeout=60, what=f"tcpdump on {netns}/{iface}")
        if proc.poll() is not None:
            raise LabError(f"tcpdump on {netns}/{iface} failed: {''.join(err)}")
        start = time.monotonic()
        yield result
        time.sleep(min(settle, max(0.0, timeout - (time.monotonic() - start))))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
    result.frames = parse_pcap(path.read_bytes() if path.exists() else b"")


# -- forged frames ------------------------------------------------------------------------

def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0x4b4c) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto,
                      0, socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def inner_frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, dport: int,
                payload: bytes) -> bytes:
    mac = lambda m: bytes.fromhex(m.replace(":", ""))
    return mac(dst_mac) + mac(src_mac) + b"\x08\x00" + ipv4(src_ip, dst_ip, UDP,
                                                            udp(40000, dport, payload))


def vxlan(vni: int, frame: bytes) -> bytes:
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def geneve(vni: int, frame: bytes) -> bytes:
    return struct.pack("!BBHI", 0, 0, 0x6558, vni << 8) + frame


def gre_key(key: int, frame: bytes) -> bytes:
    return struct.pack("!HHI", 0x2000, 0x6558, key) + frame


SEND_RAW = r"""
import socket, sys
dst, n = sys.argv[1], int(sys.argv[2])
pkt = bytes.fromhex(sys.stdin.read().strip())
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(n):
    s.sendto(pkt, (dst, 0))
"""
