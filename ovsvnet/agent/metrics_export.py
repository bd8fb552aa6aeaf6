"""The agent's Prometheus exporter: an opt-in HTTP endpoint and a node_exporter textfile.

Both render :func:`ovsvnet.metrics.render` of the agent's own ``status`` at the moment they
are asked, so a scrape and ``ovsvnet status`` agree.

Why no thread: the status is read from the agent's OVSDB IDL and peer table, which only the
loop's thread may touch (python-ovs is not thread-safe). So the endpoint is a non-blocking
listening socket polled by the agent's loop like the discovery and control sockets: a
scrape is accepted, read and answered in pieces as the sockets become ready, never waited
for. A slow or silent client holds a connection slot at most :data:`CLIENT_TIMEOUT` seconds
and never the loop; at most :data:`MAX_CLIENTS` at once, further ones are closed at once.
Rendering runs in the loop (well under a millisecond for a host's counters, plus one pass
over the vnet bridges when OVSDB changed).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ovs.poller

from ovsvnet import __version__, metrics
from ovsvnet import model as M
from ovsvnet.errors import ConfigError, OvsvnetError
from ovsvnet.ops import state
from ovsvnet.ops.host import Host, security
from ovsvnet.system.log import event

MAX_CLIENTS = 16
MAX_REQUEST = 8192
CLIENT_TIMEOUT = 5.0
#: How often the textfile is rewritten (node_exporter reads it at each of its scrapes).
TEXTFILE_EVERY = 10.0
#: IPsec availability (which decides whether secure vnets are active) can change without
#: an OVSDB change; it is looked at again when older than this.
SECURITY_TTL = 5.0


@dataclass
class MetricsOptions:
    """``agent --metrics-address HOST:PORT`` and ``--metrics-textfile PATH``; both off."""

    address: tuple[str, int] | None = None
    textfile: str | None = None


def check_textfile(path: str) -> str:
    """node_exporter's textfile collector reads only ``*.prom`` files in its directory."""
    if not path.endswith(".prom"):
        raise ConfigError(f"metrics-textfile: {path!r} must end in .prom (node_exporter's "
                          "textfile collector reads only *.prom files)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"metrics-textfile: directory {directory} does not exist")
    return path


def count_inventory(host: Host, armed: frozenset[str], ipsec_ok: bool) -> dict[str, Any]:
    """Vnets and tunnel ports by level and state, as :mod:`ovsvnet.metrics` names them
    (vnets' states as ``ovsvnet list`` shows them: a secure vnet is active where IPsec
    works)."""
    db = host.db
    defs, _ = state.definitions(db)
    vnets: dict[str, dict[str, int]] = {}
    for cfg in defs.values():
        st = ("missing" if db.bridge(cfg.bridge) is None
              else "active" if cfg.security == "none" or ipsec_ok else "inactive")
        by_state = vnets.setdefault(cfg.security, {})
        by_state[st] = by_state.get(st, 0) + 1
    tunnels: dict[str, dict[str, int]] = {}
    transport = db.bridge(M.TRANSPORT_BRIDGE)
    for port in transport.ports if transport is not None else []:
        if port.external_ids.get(M.ROLE) != M.ROLE_TUNNEL:
            continue
        level = port.external_ids.get(M.PORT_LEVEL, "none")
        if state.ofport(port.interfaces[0]) is None:
            st = "down"
        elif level == "none":
            st = "up"
        else:
            st = "armed" if port.name in armed else "inactive"
        by_state = tunnels.setdefault(level, {})
        by_state[st] = by_state.get(st, 0) + 1
    return {"vnets": vnets, "tunnels": tunnels}


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    request: bytes = b""
    reply: bytes | None = None


def _response(code: int, reason: str, body: bytes, content_type: str = "text/plain",
              head: bool = False, extra: str = "") -> bytes:
    header = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
              f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return header.encode() + (b"" if head else body)


class HttpEndpoint:
    """``GET /metrics`` on a non-blocking socket; :meth:`run` and :meth:`wait` each turn."""

    def __init__(self, address: tuple[str, int], render: Callable[[], str]):
        host, port = address
        self.render = render
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(MAX_CLIENTS)
        except OSError as exc:
            sock.close()
            where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            raise OvsvnetError(f"metrics-address: cannot listen on {where}: "
                               f"{exc.strerror or exc}") from None
        sock.setblocking(False)
        self.sock = sock
        self.address = sock.getsockname()[:2]
        self.clients: list[_Client] = []
        self.refused = 0

    def run(self, now: float) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # EMFILE and the like: try again next turn
                event("metrics-accept-failed", level="warn", error=exc.strerror or str(exc))
                break
            if len(self.clients) >= MAX_CLIENTS:
                self.refused += 1
                conn.close()
                continue
            conn.setblocking(False)
            self.clients.append(_Client(conn, now + CLIENT_TIMEOUT))
        for client in list(self.clients):
            if not self._serve(client, now):
                self.clients.remove(client)
                client.sock.close()

    def _serve(self, c: _Client, now: float) -> bool:
        """Move one client on as far as its socket allows; False when it is done."""
        if now > c.deadline:
            return False
        try:
            if c.reply is None:
                data = c.sock.recv(4096)
                if not data:
                    return False
                c.request += data
                if b"\r\n\r\n" in c.request or b"\n\n" in c.request:
                    c.reply = self._answer(c.request)
                elif len(c.request) > MAX_REQUEST:
                    c.reply = _response(431, "Request Header Fields Too Large", b"")
                else:
                    return True
            sent = c.sock.send(c.reply)
            c.reply = c.reply[sent:]
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if c.reply:
            return True
        with contextlib.suppress(OSError):
            c.sock.shutdown(socket.SHUT_WR)
        return False

    def _answer(self, request: bytes) -> bytes:
        line = request.split(b"\n", 1)[0].decode("latin-1").strip().split()
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            return _response(400, "Bad Request", b"bad request\n")
        method, target = line[0], line[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return _response(405, "Method Not Allowed", b"GET only\n", extra="Allow: GET, HEAD\r\n")
        head = method == "HEAD"
        if target == "/metrics":
            try:
                body = self.render().encode()
            except Exception as exc:  # noqa: BLE001 - a scrape must never take the agent down
                event("metrics-render-failed", level="warn", error=f"{type(exc).__name__}: {exc}")
                return _response(500, "Internal Server Error", b"render failed\n", head=head)
            return _response(200, "OK", body, metrics.CONTENT_TYPE, head=head)
        if target == "/":
            return _response(200, "OK", b"ovsvnet agent: metrics at /metrics\n", head=head)
        return _response(404, "Not Found", b"not found: try /metrics\n", head=head)

    def wait(self, poller: ovs.poller.Poller, now: float) -> None:
        poller.fd_wait(self.sock.fileno(), ovs.poller.POLLIN)
        for c in self.clients:
            poller.fd_wait(c.sock.fileno(),
                           ovs.poller.POLLIN if c.reply is None else ovs.poller.POLLOUT)
        if self.clients:
            first = min(c.deadline for c in self.clients)
            poller.timer_wait(max(0, int((first - now) * 1000) + 1))

    def close(self) -> None:
        for c in self.clients:
            c.sock.close()
        self.clients.clear()
        self.sock.close()


class Textfile:
    """The metrics as a file for node_exporter's textfile collector, replaced atomically
    (written beside it under a name not ending in .prom, then renamed) every
    :data:`TEXTFILE_EVERY` seconds; removed when the agent stops, so a stopped agent's
    metrics disappear instead of freezing (a crash leaves it: watch its mtime)."""

    def __init__(self, path: str, render: Callable[[], str]):
        self.path = check_textfile(path)
        self.render = render
        self.next_write = 0.0
        self.failed: str | None = None

    def run(self, now: float) -> None:
        if now < self.next_write:
            return
        self.next_write = now + TEXTFILE_EVERY
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            text = self.render()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
            self.failed = None
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the agent
            detail = f"{type(exc).__name__}: {exc}"
            if detail != self.failed:
                event("metrics-textfile-failed", level="warn", path=self.path, error=detail)
            self.failed = detail
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def wait(self, poller: ovs.poller.Poller, now: float) -> None:
        poller.timer_wait(max(0, int((self.next_write - now) * 1000)))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


@dataclass
class Exporter:
    """What the agent holds: the endpoint and textfile it was asked for (maybe neither;
    the ``metrics`` control command works either way) and the inventory cache."""

    host: Host
    opts: MetricsOptions | None
    status: Callable[[], dict[str, Any]]
    http: HttpEndpoint | None = None
    textfile: Textfile | None = None
    _cache: tuple[Any, dict[str, Any]] | None = field(default=None, repr=False)
    _security: tuple[float, bool] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.opts is not None and self.opts.textfile:
            self.textfile = Textfile(self.opts.textfile, self.render)
        if self.opts is not None and self.opts.address:
            self.http = HttpEndpoint(self.opts.address, self.render)
            event("metrics-listening", address=":".join(str(a) for a in self.http.address))

    def render(self) -> str:
        return metrics.render(self.status(), __version__)

    def inventory(self, armed: frozenset[str] | None) -> dict[str, Any]:
        """Vnets and tunnels by level and state (for ``status``), recounted only when OVSDB,
        the armed set or IPsec availability (looked at every :data:`SECURITY_TTL` s) changed:
        parsing every stored definition costs ~0.1 ms per vnet."""
        now = time.monotonic()
        if self._security is None or now - self._security[0] > SECURITY_TTL:
            self._security = (now, security(self.host).reason is None)
        key = (self.host.db.seqno, armed, self._security[1])
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, count_inventory(self.host, armed or frozenset(),
                                                self._security[1]))
        return self._cache[1]

    def run(self) -> None:
        now = time.monotonic()
        if self.http is not None:
            self.http.run(now)
        if self.textfile is not None:
            self.textfile.run(now)

    def wait(self, poller: ovs.poller.Poller) -> None:
        now = time.monotonic()
        if self.http is not None:
            self.http.wait(poller, now)
        if self.textfile is not None:
            self.textfile.wait(poller, now)

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.textfile is not None:
            self.textfile.close()
