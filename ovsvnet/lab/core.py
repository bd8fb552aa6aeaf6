"""The lab: builds segments, routers, hosts and guests, records them, and tears them down.

Topology::

    guest netns --veth--> host netns (ovsdb-server + ovs-vswitchd, br-phy holds eth0 + address)
                            eth0 --veth--> segment netns (Linux bridge br0, multicast floods)
                                             <--veth-- router netns (.254, ip_forward, no mroute)

Every namespace is called ``f"{prefix}-{name}"``. A lab's files live in its workdir: a fresh
``/tmp/<prefix>-XXXXXXXX`` (``mkdtemp``, mode 0700) unless one is given, which is then
created with mode 0700 or must be empty.

Things learned the hard way, each handled here or in :mod:`ovsvnet.lab.members`:

- The host kernel still sees what arrives on OVS's AF_PACKET ports. With the default
  ``arp_ignore=0`` it answers ARP for br-phy's address on ``eth0`` with eth0's MAC; a peer
  (or the router) that caches that MAC sends tunnel packets OVS never decapsulates (the host
  kernel answers "ICMP port unreachable"), now and then. Hosts set ``arp_ignore=1``.
- TX checksum offload must be off on every veth end whose packets reach an OVS AF_PACKET
  port unfinished: guests (TCP stalls) and plain hosts (kernel VXLAN's outer UDP checksum).
- With ``actions=NORMAL`` a full mesh of three or more VXLAN tunnels loops broadcasts forever.

Safety (DESIGN.md §5): every link is created from inside a namespace of this lab (the peer is
born directly in another namespace of this lab), so nothing is ever created, renamed or moved in
the root namespace. Teardown deletes only the namespaces this lab recorded and signals only
the pids found in its own pidfiles, after checking the process name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

from ovsvnet.lab import netns as N
from ovsvnet.lab.common import LabError, LabNotFoundError, check_name, random_mac
from ovsvnet.lab.members import Guest, LabHost, PlainHost, Router, Segment
from ovsvnet.lab.state import STATE_FILE, STATE_VERSION, make_workdir, read_state, write_state
from ovsvnet.system import proc

# Unix socket paths are limited to 108 bytes; OVS also puts "<bridge>.mgmt" (up to 20 chars)
# into the run directory.
_MAX_DIR_LEN = 80
#: Keeps captures quiet: no router solicitations, MLD reports or DAD probes.
_NO_IPV6 = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
# eth0 and the guest ports are OVS ports (AF_PACKET), yet the host's kernel still sees what
# arrives on them. With the default arp_ignore=0 it answers ARP for br-phy's address on eth0
# with eth0's MAC; a peer that caches that MAC sends tunnel packets OVS will not decapsulate
# (ICMP port unreachable, flaky). Answer on br-phy only.
_ARP_IGNORE = ("net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.default.arp_ignore=1")


class Lab:
    """Simulated hosts, segments, routers and guests; a context manager that always tears down.

    >>> with Lab() as lab:                                   # doctest: +SKIP
    ...     lab.add_segment("s1"); lab.add_segment("s2"); lab.add_router("r", ["s1", "s2"])
    ...     a = lab.add_host("a", "s1"); b = lab.add_host("b", "s2")
    ...     a.vsctl("add-br", "br-test", "--", "set", "bridge", "br-test", "datapath_type=netdev")
    """

    def __init__(
        self,
        prefix: str | None = None,
        workdir: Path | str | None = None,
        datapath_type: str | None = None,
        keep: bool | None = None,
        ipv6: bool = False,
    ):
        self.prefix = prefix or "ovl" + secrets.token_hex(3)[:5]
        check_name("prefix", self.prefix)
        # "netdev" (userspace, the default) or "system" (openvswitch.ko, the kernel lane);
        # $OVSVNET_LAB_DATAPATH picks it for every lab a test run builds.
        self.datapath_type = datapath_type or os.environ.get("OVSVNET_LAB_DATAPATH") or "netdev"
        if self.datapath_type not in ("netdev", "system"):
            raise LabError(f"unknown datapath type {self.datapath_type!r} (netdev or system)")
        self.keep = keep if keep is not None else os.environ.get("OVSVNET_KEEP_LAB") == "1"
        self.ipv6 = ipv6
        self.workdir, self._created_workdir = make_workdir(self.prefix, workdir)
        self.segments: dict[str, Segment] = {}
        self.routers: dict[str, Router] = {}
        self.hosts: dict[str, LabHost] = {}
        self.guests: dict[str, Guest] = {}
        self.plain_hosts: dict[str, PlainHost] = {}
        self.namespaces: list[str] = []  # every namespace this lab created, in creation order
        self._port_names: set[str] = set()
        self._next_subnet = 1
        self._down = False
        self.state_path: Path | None = None

    def __repr__(self) -> str:
        return f"Lab(prefix={self.prefix!r}, hosts={list(self.hosts)}, guests={list(self.guests)})"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.down()
            return
        try:
            self.down()
        except Exception as err:  # noqa: BLE001 - do not mask the body's exception
            warnings.warn(f"lab {self.prefix} teardown incomplete: {err}", RuntimeWarning,
                          stacklevel=2)

    # naming ------------------------------------------------------------------------------------
    def _ns_name(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def _check_new(self, kind: str, name: str) -> None:
        check_name(kind, name)
        if self._down:
            raise LabError(f"lab {self.prefix} is down")
        for what, d in (("segment", self.segments), ("router", self.routers),
                        ("host", self.hosts), ("guest", self.guests),
                        ("plain host", self.plain_hosts)):
            if name in d:
                raise LabError(f"name {name!r} is already used by a {what}")

    def _unique_port(self, base: str) -> str:
        base = base[:15]
        name, n = base, 1
        while name in self._port_names:
            suffix = str(n)
            name = base[: 15 - len(suffix)] + suffix
            n += 1
        self._port_names.add(name)
        return name

    def _add_netns(self, name: str, sysctls: tuple[str, ...] = ()) -> str:
        """Create and record namespace ``<prefix>-<name>``: lo up, IPv6 off (unless the lab
        has ``ipv6``), and the ``sysctls`` given."""
        ns = self._ns_name(name)
        N.create(ns)
        self.namespaces.append(ns)
        with N.Links(ns) as links:
            links.up("lo")
        N.sysctl(ns, *(() if self.ipv6 else _NO_IPV6), *sysctls)
        return ns

    def _get(self, kind: str, d: dict[str, Any], name: str) -> Any:
        try:
            return d[name]
        except KeyError:
            raise LabNotFoundError(f"no {kind} {name!r} in lab {self.prefix}") from None

    def segment(self, name: str) -> Segment:
        return self._get("segment", self.segments, name)

    def host(self, name: str) -> LabHost:
        return self._get("host", self.hosts, name)

    def guest(self, name: str) -> Guest:
        return self._get("guest", self.guests, name)

    def plain_host(self, name: str) -> PlainHost:
        return self._get("plain host", self.plain_hosts, name)

    def member(self, name: str) -> Segment | Router | LabHost | Guest | PlainHost:
        """Any named member (for ``sandbox exec``)."""
        for d in (self.hosts, self.guests, self.plain_hosts, self.routers, self.segments):
            if name in d:
                return d[name]
        raise LabNotFoundError(f"no host, guest, router or segment {name!r} in lab {self.prefix}")

    # building ----------------------------------------------------------------------------------
    def add_segment(self, name: str, subnet: str | None = None) -> Segment:
        self._check_new("segment", name)
        if subnet is None:
            used = {s.network for s in self.segments.values()}
            while True:
                net = ipaddress.IPv4Network(f"10.77.{self._next_subnet}.0/24")
                self._next_subnet += 1
                if net not in used:
                    break
        else:
            net = ipaddress.IPv4Network(subnet, strict=False)
        if net.num_addresses < 8:
            raise LabError(f"subnet {net} is too small for a segment")
        ns = self._add_netns(name)
        seg = Segment(name=name, netns=ns, subnet=str(net))
        self.segments[name] = seg
        with N.Links(ns) as links:
            links.add_bridge(seg.bridge)
            links.up(seg.bridge)
        return seg

    def _plug_into_segment(
        self, seg: Segment, netns: str, ifname: str, port: str, mtu: int = 1500,
        links: N.Links | None = None,
    ) -> None:
        """veth ``ifname`` in ``netns`` <-> ``port`` in the segment's bridge, created from
        inside ``netns`` (through ``links`` when open there) with the peer born in the
        segment's namespace."""
        with contextlib.ExitStack() as stack:
            if links is None:
                links = stack.enter_context(N.Links(netns))
            links.add_veth(ifname, port, seg.netns, mtu=mtu)
        seg.ports.append(port)
        with N.Links(seg.netns) as seg_links:
            seg_links.set_master(port, seg.bridge)
            seg_links.up(port)

    def add_router(self, name: str, segments: list[str]) -> Router:
        self._check_new("router", name)
        segs = [self.segment(s) for s in segments]
        ns = self._add_netns(name, ("net.ipv4.ip_forward=1",))
        router = Router(name=name, netns=ns, segments=list(segments))
        self.routers[name] = router
        with N.Links(ns) as links:
            for i, seg in enumerate(segs):
                leg = f"to-{seg.name}" if len(f"to-{seg.name}") <= 15 else f"leg{i}"
                port = self._unique_port(f"r-{name}")
                self._plug_into_segment(seg, ns, leg, port, links=links)
                router.legs[seg.name] = leg
                links.add_address(leg, f"{seg.gateway}/{seg.network.prefixlen}")
                links.up(leg)
                seg.routers.append(name)
        on_segments: list[LabHost | PlainHost] = [*self.hosts.values(),
                                                  *self.plain_hosts.values()]
        for h in on_segments:
            if h.gateway is None and h.segment in router.segments:
                h.set_gateway(self.segments[h.segment].gateway)
        return router

    def add_host(
        self, name: str, segment: str, address: str | None = None, mtu: int = 1500
    ) -> LabHost:
        self._check_new("host", name)
        seg = self.segment(segment)
        net = seg.network
        address = self._allocate(seg, address)
        hdir = self.workdir / name
        if len(str(hdir)) > _MAX_DIR_LEN:
            raise LabError(f"host directory {hdir} is too long for unix socket paths")
        hdir.mkdir(parents=True, exist_ok=True)
        ns = self._add_netns(name, _ARP_IGNORE)
        gateway = seg.gateway if seg.routers else None
        host = LabHost(
            name=name, netns=ns, dir=hdir, segment=segment, address=address,
            prefixlen=net.prefixlen, system_id=f"{self.prefix}-{name}",
            datapath_type=self.datapath_type, mtu=mtu, switch_port=self._unique_port(f"h-{name}"),
            gateway=gateway,
        )
        self.hosts[name] = host  # recorded before anything starts, so down() finds it
        self._plug_into_segment(seg, ns, "eth0", host.switch_port, mtu)
        host.start_ovsdb()
        proc.run(["ovs-vsctl", f"--db={host.db}", "--timeout=10", "--no-wait", "init", "--",
                  "set", "Open_vSwitch", ".",
                  f'external_ids:system-id="{host.system_id}"',
                  f'external_ids:hostname="{name}"'], error=LabError)
        host.start_vswitchd()
        host.vsctl(
            "add-br", "br-phy", "--",
            "set", "Bridge", "br-phy", f"datapath_type={self.datapath_type}", "fail_mode=secure",
            "--", "add-port", "br-phy", "eth0",
            "--", "set", "Interface", "br-phy", f"mtu_request={mtu}",
        )
        host.configure_underlay()
        return host

    def _allocate(self, seg: Segment, address: str | None) -> str:
        net = seg.network
        on_segments: list[LabHost | PlainHost] = [*self.hosts.values(),
                                                  *self.plain_hosts.values()]
        taken = {h.address for h in on_segments if h.segment == seg.name} | {seg.gateway}
        if address is None:
            while True:
                ip = net.network_address + seg.next_host
                seg.next_host += 1
                if ip >= net.broadcast_address - 1:
                    raise LabError(f"segment {seg.name} has no free address left")
                if str(ip) not in taken:
                    return str(ip)
        address = address.split("/")[0]
        if ipaddress.IPv4Address(address) not in net:
            raise LabError(f"address {address} is not in segment {seg.name} ({net})")
        if address in taken:
            raise LabError(f"address {address} is already used on segment {seg.name}")
        return address

    def add_plain_host(self, name: str, segment: str, address: str | None = None,
                       mtu: int = 1500) -> PlainHost:
        """A namespace on ``segment`` with the address on ``eth0`` and no Open vSwitch."""
        self._check_new("plain host", name)
        seg = self.segment(segment)
        address = self._allocate(seg, address)
        ns = self._add_netns(name)
        ph = PlainHost(name=name, netns=ns, segment=segment, address=address,
                       prefixlen=seg.network.prefixlen, mtu=mtu,
                       switch_port=self._unique_port(f"p-{name}"))
        self.plain_hosts[name] = ph
        with N.Links(ns) as links:
            self._plug_into_segment(seg, ns, "eth0", ph.switch_port, mtu, links=links)
            # Its packets end up in an OVS AF_PACKET port: with TX checksum offload on, kernel
            # VXLAN's outer UDP checksum arrives unfinished ("bad udp cksum"), OVS drops it.
            N.tx_offload_off(ns, "eth0")
            links.add_address("eth0", f"{address}/{ph.prefixlen}")
            links.up("eth0")
        if seg.routers:
            ph.set_gateway(seg.gateway)
        return ph

    def add_guest(
        self,
        name: str,
        host: str,
        bridge: str,
        ip: str | None = None,
        mac: str | None = None,
        mtu: int = 1500,
    ) -> Guest:
        self._check_new("guest", name)
        h = self.host(host)
        if ip is not None and "/" not in ip:
            ip = f"{ip}/24"
        mac = (mac or random_mac()).lower()
        port = self._unique_port(f"g-{name}")
        ns = self._add_netns(name)
        guest = Guest(name=name, netns=ns, host=host, bridge=bridge, ip=ip, mac=mac, port=port,
                      mtu=mtu)
        self.guests[name] = guest
        self._plug_guest(guest, h)
        return guest

    def _plug_guest(self, guest: Guest, h: LabHost) -> None:
        with N.Links(guest.netns) as links:
            links.add_veth("eth0", guest.port, h.netns, mtu=guest.mtu, address=guest.mac)
            # Required with the userspace datapath: AF_PACKET hands partial checksums / GSO
            # frames to OVS, and TCP stalls (ping and UDP still work). The kernel datapath
            # handles offloaded frames like any kernel switch: offloads stay on there.
            if h.datapath_type != "system":
                N.tx_offload_off(guest.netns, "eth0")
            if guest.ip:
                links.add_address("eth0", guest.ip)
            links.up("eth0")
        h.vsctl("add-port", guest.bridge, guest.port, "--",
                "set", "Interface", guest.port, f'external_ids:ovsvnet-guest="{guest.name}"')
        with N.Links(h.netns) as links:
            links.up(guest.port)

    def remove_guest(self, name: str) -> None:
        guest = self.guest(name)
        h = self.hosts.get(guest.host)
        if h is not None and h.ovsdb_pid():
            h.vsctl("--if-exists", "del-port", guest.port)
        self._del_netns(guest.netns)
        if h is not None and N.netns_exists(h.netns):
            proc.wait_until(lambda: not h.link_exists(guest.port), timeout=10,
                            what=f"{guest.port} to vanish from {h.name}")
        del self.guests[name]
        self._port_names.discard(guest.port)

    def move_guest(self, name: str, host: str, bridge: str | None = None,
                   announce: bool = False) -> Guest:
        """Unplug guest ``name`` and plug it into ``host`` (same MAC, IP and MTU).

        The guest's namespace is made anew (its ARP cache is empty). With ``announce`` it
        sends a gratuitous ARP once plugged in; without, switches that learned its MAC
        elsewhere keep sending there until the guest speaks or the entry ages out."""
        old = self.guest(name)
        self.host(host)
        self.remove_guest(name)
        guest = self.add_guest(name, host, bridge or old.bridge, ip=old.ip, mac=old.mac,
                               mtu=old.mtu)
        if announce:
            guest.announce()
        return guest

    # teardown ----------------------------------------------------------------------------------
    def _del_netns(self, ns: str) -> None:
        if ns not in self.namespaces or not ns.startswith(self.prefix + "-"):
            raise LabError(f"refusing to delete namespace {ns}: not created by lab {self.prefix}")
        if N.netns_exists(ns):
            N.remove(ns)
            proc.wait_until(lambda: not N.netns_exists(ns), timeout=10,
                            what=f"namespace {ns} to go")
        self.namespaces.remove(ns)

    def down(self) -> None:
        """Stop every daemon (by pidfile), delete this lab's namespaces and its workdir.

        Idempotent and best effort: it goes on after a failure and raises one LabError
        listing all failures at the end."""
        errors: list[str] = []
        self._down = True
        for host in reversed(list(self.hosts.values())):
            try:
                host.stop_agent()
                host.stop()
            except Exception as err:  # noqa: BLE001 - go on, report all at the end
                errors.append(f"{host.name}: {err}")
        for ns in reversed(list(self.namespaces)):
            try:
                self._del_netns(ns)
            except Exception as err:  # noqa: BLE001 - go on, report all at the end
                errors.append(str(err))
        if not self.keep and not errors:
            if self._created_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            else:
                for h in self.hosts.values():
                    shutil.rmtree(h.dir, ignore_errors=True)
                if self.state_path is not None:
                    with contextlib.suppress(OSError):
                        self.state_path.unlink()
        if errors:
            raise LabError(f"lab {self.prefix} teardown incomplete: " + "; ".join(errors))

    # state -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "prefix": self.prefix,
            "workdir": str(self.workdir),
            "created_workdir": self._created_workdir,
            "datapath_type": self.datapath_type,
            "keep": self.keep,
            "ipv6": self.ipv6,
            "namespaces": list(self.namespaces),
            "next_subnet": self._next_subnet,
            "segments": {k: v.to_json() for k, v in self.segments.items()},
            "routers": {k: v.to_json() for k, v in self.routers.items()},
            "hosts": {k: v.to_json() for k, v in self.hosts.items()},
            "guests": {k: v.to_json() for k, v in self.guests.items()},
            "plain_hosts": {k: v.to_json() for k, v in self.plain_hosts.items()},
        }

    def save_state(self, path: Path | str | None = None) -> Path:
        """Write the lab's state as JSON (default ``workdir/lab.json``); return the path."""
        p = Path(path) if path is not None else self.workdir / STATE_FILE
        write_state(p, self.to_json())
        self.state_path = p
        return p

    @classmethod
    def load(cls, path: Path | str) -> Lab:
        """Rebuild a Lab object from :meth:`save_state` output; creates nothing."""
        p = Path(path)
        d = read_state(p)
        lab = cls.__new__(cls)
        lab.prefix = d["prefix"]
        check_name("prefix", lab.prefix)
        lab.workdir = Path(d["workdir"])
        lab._created_workdir = d["created_workdir"]
        lab.datapath_type = d["datapath_type"]
        lab.keep = d["keep"]
        lab.ipv6 = d["ipv6"]
        lab.namespaces = [n for n in d["namespaces"] if n.startswith(lab.prefix + "-")]
        lab._next_subnet = d["next_subnet"]
        lab.segments = {k: Segment(**v) for k, v in d["segments"].items()}
        lab.routers = {k: Router(**v) for k, v in d["routers"].items()}
        lab.hosts = {k: LabHost.from_json(v) for k, v in d["hosts"].items()}
        lab.guests = {k: Guest(**v) for k, v in d["guests"].items()}
        lab.plain_hosts = {k: PlainHost(**v) for k, v in d.get("plain_hosts", {}).items()}
        lab._port_names = (
            {h.switch_port for h in lab.hosts.values()}
            | {g.port for g in lab.guests.values()}
            | {p.switch_port for p in lab.plain_hosts.values()}
            | {p for s in lab.segments.values() for p in s.ports}
        )
        lab._down = False
        lab.state_path = p
        return lab

    def status(self) -> dict[str, Any]:
        """What exists and what runs: namespaces, daemons per host, guests."""
        return {
            "prefix": self.prefix,
            "workdir": str(self.workdir),
            "namespaces": {ns: N.netns_exists(ns) for ns in self.namespaces},
            "segments": {n: {"netns": s.netns, "subnet": s.subnet, "routers": s.routers}
                         for n, s in self.segments.items()},
            "routers": {n: {"netns": r.netns, "segments": r.segments}
                        for n, r in self.routers.items()},
            "hosts": {
                n: {"netns": h.netns, "segment": h.segment, "address": h.address, "db": h.db,
                    "system_id": h.system_id, **h.alive()}
                for n, h in self.hosts.items()
            },
            "guests": {n: {"netns": g.netns, "host": g.host, "bridge": g.bridge, "ip": g.ip,
                           "mac": g.mac, "port": g.port}
                       for n, g in self.guests.items()},
            "plain_hosts": {n: {"netns": p.netns, "segment": p.segment, "address": p.address}
                            for n, p in self.plain_hosts.items()},
        }
