"""Send bytes over one TCP connection: ``tcp_client ADDR PORT NBYTES TIMEOUT``.

Connects (retrying until TIMEOUT), sends NBYTES unless TIMEOUT passes first, shuts its
side down and prints how many bytes it sent."""

from __future__ import annotations

import socket
import sys
import time


def main(argv: list[str]) -> None:
    addr, port, nbytes, timeout = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = max(0.1, min(2.0, deadline - time.monotonic()))
            c = socket.create_connection((addr, port), timeout=left)
            break
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
    chunk = b"x" * 65536
    sent = 0
    try:
        while sent < nbytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            c.settimeout(left)
            sent += c.send(chunk[: min(len(chunk), nbytes - sent)])
        c.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    print(sent, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
