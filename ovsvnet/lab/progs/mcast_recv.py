"""Count multicast datagrams: ``mcast_recv GROUP PORT IFADDR EXPECT``.

Joins GROUP on the interface holding IFADDR, prints ``ready``, then counts datagrams on
PORT until EXPECT arrived or stdin closes (the caller's "stop"; at most 60 s of silence),
and prints the count."""

from __future__ import annotations

import select
import socket
import sys


def main(argv: list[str]) -> None:
    group, port, ifaddr, expect = argv[0], int(argv[1]), argv[2], int(argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    mreq = socket.inet_aton(group) + socket.inet_aton(ifaddr)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    print("ready", flush=True)
    n = 0
    while n < expect:  # until enough datagrams, or stdin closes (the parent's "stop")
        ready, _, _ = select.select([s, sys.stdin], [], [], 60)
        if not ready or sys.stdin in ready:
            break
        s.recvfrom(2048)
        n += 1
    print(n, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
