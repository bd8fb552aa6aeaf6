"""Network namespaces and the links inside them, through netlink (pyroute2).

Safety (DESIGN.md §5): every link is created through a netlink socket that lives *inside* a
lab namespace, and a veth's peer is born directly in another lab namespace (``net_ns_fd``),
so nothing is ever created, renamed or moved in the root namespace. :func:`remove` deletes
only a namespace by the name it is given; the lab passes only names it recorded.

A netlink socket belongs to the namespace it was created in, for its whole life.
:class:`Links` creates its socket in a short-lived thread that first joins the lab namespace
(``setns`` changes only the calling thread; the thread then ends): no other thread of this
process ever changes namespace, and no helper process is forked (pyroute2's
``IPRoute(netns=...)`` forks one per socket, about 8 ms against 1 ms here).

Programs still run inside a namespace with ``ip netns exec NS ...`` (:func:`run_in`); so do
``sysctl`` and ``ethtool``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.exceptions import NetlinkError

from ovsvnet.lab.common import LabError
from ovsvnet.system import proc

NETNS_DIR = Path("/run/netns")
#: rtm_protocol of the routes ``ip route`` adds (RTPROT_BOOT): kept, so that a lab host's
#: routing table looks as it did when iproute2 built it.
_RTPROT_BOOT = 3


def netns_exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def _check(netns: str) -> None:
    if not netns or "/" in netns or netns in (".", ".."):
        raise LabError(f"bad namespace name {netns!r}")


# -- programs inside a namespace -------------------------------------------------------------

def ns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def run_in(netns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30,
           input: str | None = None, env: Mapping[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``netns``; a failure is a :class:`LabError` naming both."""
    return proc.run(ns_argv(netns, argv), check=check, timeout=timeout, input=input, env=env,
                    what=f"{netns}: {' '.join(argv)}", error=LabError)


def sysctl(netns: str, *settings: str) -> None:
    """``sysctl -w`` each ``key=value`` inside ``netns`` (one process for all)."""
    if settings:
        run_in(netns, ["sysctl", "-q", "-w", *settings])


def tx_offload_off(netns: str, ifname: str) -> None:
    """Turn TX checksum offload off on ``ifname`` (``ethtool -K IF tx off``)."""
    run_in(netns, ["ethtool", "-K", ifname, "tx", "off"])


# -- namespaces ------------------------------------------------------------------------------

def create(netns: str) -> None:
    """Create the named namespace (``ip netns add``); it must not exist yet."""
    _check(netns)
    if netns_exists(netns):
        raise LabError(f"namespace {netns} already exists")
    try:
        pyroute2_netns.create(netns)
    except Exception as err:  # the helper process re-raises what it met, by class name
        raise LabError(f"{netns}: create the namespace: {err}") from err


def remove(netns: str) -> None:
    """Remove the named namespace (``ip netns del``): detach and unlink its mount point.
    Its links go once no process runs in it any more."""
    _check(netns)
    try:
        pyroute2_netns.remove(netns)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise LabError(f"{netns}: delete the namespace: {err.strerror or err}") from err


def _socket_in(netns: str) -> int:
    """A new rtnetlink socket inside ``netns``; returns its file descriptor (see module doc)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            pyroute2_netns.setns(netns, flags=0)  # this thread only; never creates netns
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
            box["fd"] = sock.detach()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name=f"netlink-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    fd: int = box["fd"]
    return fd


def _reason(err: BaseException) -> str:
    if isinstance(err, NetlinkError) and len(err.args) > 1:
        return str(err.args[1])
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


class Links:
    """Netlink inside one lab namespace; a context manager that closes its socket.

    Every failure is a :class:`LabError` naming the namespace and the operation::

        with Links("ovl1a2b3-s1") as ln:
            ln.add_bridge("br0")
            ln.up("br0")
    """

    def __init__(self, netns: str):
        _check(netns)
        self.netns = netns
        self._ipr: IPRoute | None = None

    def __enter__(self) -> Links:
        with self._op("open a netlink socket"):
            fd = _socket_in(self.netns)
            try:
                try:
                    self._ipr = IPRoute(fileno=fd, groups=0)
                except TypeError:  # pyroute2 0.7 (Debian 12) joins no groups, takes no such
                    self._ipr = IPRoute(fileno=fd)
            except BaseException:
                os.close(fd)
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            ipr.close()

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            raise LabError(f"{self.netns}: netlink socket is not open")
        return self._ipr

    @contextlib.contextmanager
    def _op(self, what: str) -> Iterator[None]:
        try:
            yield
        except (NetlinkError, OSError) as err:
            raise LabError(f"{self.netns}: {what}: {_reason(err)}") from err

    # -- links ---------------------------------------------------------------------------
    def index(self, ifname: str) -> int | None:
        """The interface's index, or None when there is no such interface."""
        try:
            links = self.ipr.link("get", ifname=ifname)
        except NetlinkError as err:
            if err.code == 19:  # ENODEV
                return None
            raise LabError(f"{self.netns}: ip link show {ifname}: {_reason(err)}") from err
        return int(links[0]["index"]) if links else None

    def exists(self, ifname: str) -> bool:
        return self.index(ifname) is not None

    def _index(self, ifname: str, what: str) -> int:
        idx = self.index(ifname)
        if idx is None:
            raise LabError(f"{self.netns}: {what}: no interface {ifname}")
        return idx

    def up(self, ifname: str) -> None:
        """``ip link set dev IF up``."""
        what = f"ip link set dev {ifname} up"
        idx = self._index(ifname, what)
        with self._op(what):
            self.ipr.link("set", index=idx, state="up")

    def set_master(self, ifname: str, master: str) -> None:
        """``ip link set dev IF master BRIDGE``."""
        what = f"ip link set dev {ifname} master {master}"
        idx, master_idx = self._index(ifname, what), self._index(master, what)
        with self._op(what):
            self.ipr.link("set", index=idx, master=master_idx)

    def add_bridge(self, name: str) -> None:
        """A Linux bridge with multicast snooping and STP off (multicast floods)."""
        with self._op(f"ip link add {name} type bridge"):
            self.ipr.link("add", ifname=name, kind="bridge", br_mcast_snooping=0,
                          br_stp_state=0)

    def add_veth(self, ifname: str, peer: str, peer_netns: str, mtu: int = 1500,
                 address: str | None = None) -> None:
        """A veth pair: ``ifname`` here, ``peer`` born directly in ``peer_netns``."""
        _check(peer_netns)
        spec: dict[str, Any] = {"ifname": ifname, "kind": "veth", "mtu": mtu,
                                "peer": {"ifname": peer, "mtu": mtu, "net_ns_fd": peer_netns}}
        if address is not None:
            spec["address"] = address
        with self._op(f"ip link add {ifname} type veth peer name {peer} netns {peer_netns}"):
            self.ipr.link("add", **spec)

    # -- addresses and routes --------------------------------------------------------------
    def add_address(self, ifname: str, cidr: str, replace: bool = False) -> None:
        """``ip addr add|replace ADDRESS/PREFIX dev IF`` (IPv4)."""
        iface = ipaddress.IPv4Interface(cidr)
        verb = "replace" if replace else "add"
        what = f"ip addr {verb} {iface} dev {ifname}"
        idx = self._index(ifname, what)
        with self._op(what):
            self.ipr.addr(verb, index=idx, address=str(iface.ip),
                          prefixlen=iface.network.prefixlen)

    def default_route(self, gateway: str, ifname: str) -> None:
        """``ip route replace default via GATEWAY dev IF``."""
        what = f"ip route replace default via {gateway} dev {ifname}"
        idx = self._index(ifname, what)
        with self._op(what):
            self.ipr.route("replace", dst="default", gateway=gateway, oif=idx,
                           proto=_RTPROT_BOOT)
