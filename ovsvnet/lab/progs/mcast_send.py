"""Send multicast datagrams: ``mcast_send GROUP PORT IFADDR COUNT TTL``.

COUNT datagrams ``ovsvnet-mcast N`` to GROUP:PORT, out of the interface holding IFADDR,
with TTL, 50 ms apart."""

from __future__ import annotations

import socket
import sys
import time


def main(argv: list[str]) -> None:
    group, port, ifaddr = argv[0], int(argv[1]), argv[2]
    count, ttl = int(argv[3]), int(argv[4])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
    for i in range(count):
        s.sendto(b"ovsvnet-mcast %d" % i, (group, port))
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1:])
