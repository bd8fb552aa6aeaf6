"""Send gratuitous ARP requests from eth0: ``garp MAC IP COUNT`` (as QEMU/Xen do after a
guest moved). Needs CAP_NET_RAW; sends COUNT frames, 50 ms apart."""

from __future__ import annotations

import socket
import struct
import sys
import time


def main(argv: list[str]) -> None:
    mac = bytes.fromhex(argv[0].replace(":", ""))
    ip, count = socket.inet_aton(argv[1]), int(argv[2])
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    for _ in range(count):
        s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1:])
