"""The members of a lab: segments, routers, hosts with Open vSwitch, plain hosts and guests.

Each member is a namespace ``f"{prefix}-{name}"``; these objects only name it and drive what
runs in it. :class:`ovsvnet.lab.Lab` creates and deletes them.

Things learned the hard way, each handled here:

- The host kernel still sees what arrives on OVS's AF_PACKET ports (see
  :meth:`ovsvnet.lab.Lab.add_host` for ``arp_ignore``).
- OpenFlow flows do not survive an ovs-vswitchd restart; br-phy is ``fail_mode=secure``, so
  :meth:`LabHost.start_vswitchd` puts its NORMAL flow (and, after ``exit --cleanup``, its
  address and routes) back.
- OVS resolves a tunnel's next hop on demand and drops the packet meanwhile, so the first
  ARP of a guest is lost on each side; :meth:`Guest.ping` retries within its deadline.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovsvnet.errors import ConfigError
from ovsvnet.lab.common import LabError
from ovsvnet.lab.daemons import OvsDaemons
from ovsvnet.lab.netns import Links, run_in
from ovsvnet.system import keyfiles
from ovsvnet.system.proc import wait_until


@dataclass
class Segment:
    """An L2 segment: a namespace holding a Linux bridge ``br0`` (multicast snooping off)."""

    name: str
    netns: str
    subnet: str
    bridge: str = "br0"
    routers: list[str] = field(default_factory=list)
    next_host: int = 1
    ports: list[str] = field(default_factory=list)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        """The address a router takes on this segment (``.254`` of a /24)."""
        return str(self.network.broadcast_address - 1)

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run_in(self.netns, argv, check=check, timeout=timeout)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Router:
    """A namespace with one leg per segment (``.254``); forwards unicast, never multicast."""

    name: str
    netns: str
    segments: list[str]
    legs: dict[str, str] = field(default_factory=dict)  # segment -> interface in router netns

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run_in(self.netns, argv, check=check, timeout=timeout)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class LabHost(OvsDaemons):
    """A simulated hypervisor host: a namespace with its own ovsdb-server and ovs-vswitchd.

    Its underlay address sits on ``br-phy``, an OVS bridge (``fail_mode=secure``, one NORMAL
    flow) holding ``eth0``, the veth to its segment. (Not :class:`ovsvnet.ops.host.Host`,
    which is what ovsvnet manages on a real machine.)"""

    def __init__(
        self,
        name: str,
        netns: str,
        dir: Path,
        segment: str,
        address: str,
        prefixlen: int,
        system_id: str,
        datapath_type: str = "netdev",
        mtu: int = 1500,
        switch_port: str = "",
        gateway: str | None = None,
    ):
        self.name = name
        self.netns = netns
        self.dir = Path(dir)
        self.segment = segment
        self.address = address
        self.prefixlen = prefixlen
        self.system_id = system_id
        self.datapath_type = datapath_type
        self.mtu = mtu
        self.switch_port = switch_port
        self.gateway = gateway

    def __repr__(self) -> str:
        return f"LabHost({self.name!r}, netns={self.netns!r}, address={self.address!r})"

    # underlay ----------------------------------------------------------------------------------
    def discovery_key(self) -> Path:
        """The lab's discovery key (``agent --key-file``): one per lab, in the directory its
        hosts share, made on first use."""
        path = self.dir.parent / "discovery.key"
        if not path.exists():
            try:
                keyfiles.write_key(path)
            except ConfigError:
                if not path.exists():
                    raise
        return path

    def link_exists(self, ifname: str) -> bool:
        with Links(self.netns) as links:
            return links.exists(ifname)

    def vswitchd_started(self) -> None:
        if self.link_exists("br-phy"):
            self.configure_underlay()

    def configure_underlay(self) -> None:
        """(Re)apply br-phy's NORMAL flow, address, state and default route; idempotent.

        :meth:`start_vswitchd` calls it: a restarted ovs-vswitchd has lost its flows, and
        after ``exit --cleanup`` also its taps (re-created without address)."""
        wait_until(lambda: self.link_exists("br-phy"), timeout=10, what=f"{self.name}: br-phy tap")
        # OpenFlow flows do not survive an ovs-vswitchd restart, and br-phy is fail_mode=secure.
        self.ofctl("add-flow", "br-phy", "actions=NORMAL")
        with Links(self.netns) as links:
            links.up("eth0")
            links.add_address("br-phy", f"{self.address}/{self.prefixlen}", replace=True)
            links.up("br-phy")
        if self.gateway:
            self.set_gateway(self.gateway)
        # OVS learns kernel routes through netlink; tunnels need br-phy's route in its table.
        wait_until(
            lambda: "br-phy" in self.appctl("ovs/route/show"),
            timeout=10, what=f"{self.name}: br-phy route in ovs/route/show",
        )

    def set_gateway(self, gateway: str) -> None:
        self.gateway = gateway
        with Links(self.netns) as links:
            links.default_route(gateway, "br-phy")
        wait_until(
            lambda: re.search(r"0\.0\.0\.0/0 dev br-phy", self.appctl("ovs/route/show")),
            timeout=10, what=f"{self.name}: default route in ovs/route/show",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "netns": self.netns, "dir": str(self.dir), "segment": self.segment,
            "address": self.address, "prefixlen": self.prefixlen, "system_id": self.system_id,
            "datapath_type": self.datapath_type, "mtu": self.mtu, "switch_port": self.switch_port,
            "gateway": self.gateway,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LabHost:
        return cls(**d)


@dataclass
class PlainHost:
    """A host without Open vSwitch: its address sits on ``eth0`` (for kernel VXLAN peers,
    strangers and other plain-Linux parties on a segment)."""

    name: str
    netns: str
    segment: str
    address: str
    prefixlen: int
    mtu: int = 1500
    switch_port: str = ""
    gateway: str | None = None

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_in(self.netns, argv, check=check, timeout=timeout, input=input)

    def set_gateway(self, gateway: str) -> None:
        self.gateway = gateway
        with Links(self.netns) as links:
            links.default_route(gateway, "eth0")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Guest:
    """A guest (VM stand-in): a namespace whose ``eth0`` is plugged into a bridge on a host."""

    name: str
    netns: str
    host: str
    bridge: str
    ip: str | None
    mac: str
    port: str
    mtu: int = 1500

    @property
    def addr(self) -> str | None:
        """The bare IP address (``ip`` without the prefix length)."""
        return self.ip.split("/")[0] if self.ip else None

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_in(self.netns, argv, check=check, timeout=timeout, input=input)

    def ping(self, dst: str, count: int = 3, interval: float = 0.2, timeout: float = 10) -> bool:
        """True when ``count`` echo replies arrive within ``timeout`` seconds.

        ``ping -c N -w T`` keeps sending until N replies or T seconds, but gives up early once
        ARP for the destination failed; the first ARP probes can be lost while OVS resolves
        tunnel neighbours on each side, so ping is run again while time is left."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            proc = self.run(
                "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1",
                "-w", str(max(1, round(left))), dst,
                check=False, timeout=left + 5,
            )
            if proc.returncode == 0:
                return True
            if deadline - time.monotonic() < 1:
                return False

    def announce(self, count: int = 1) -> None:
        """Send ``count`` gratuitous ARP requests from eth0, as QEMU/Xen do after a move."""
        if not self.addr:
            raise LabError(f"guest {self.name} has no IP address to announce")
        self.run(sys.executable, "-m", "ovsvnet.lab.progs.garp", self.mac, self.addr, str(count))

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)
