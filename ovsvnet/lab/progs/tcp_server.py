"""Receive one TCP connection: ``tcp_server ADDR PORT TIMEOUT``.

Prints ``ready`` once listening, then the number of bytes received when the peer closes,
or when TIMEOUT seconds have passed (a stalled connection reports what arrived so far)."""

from __future__ import annotations

import socket
import sys
import time


def main(argv: list[str]) -> None:
    addr, port, timeout = argv[0], int(argv[1]), float(argv[2])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    s.settimeout(timeout)
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    n = 0
    try:
        c, _ = s.accept()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            c.settimeout(left)
            b = c.recv(65536)
            if not b:
                break
            n += len(b)
    except OSError:  # socket.timeout is an OSError
        pass
    print(n, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
