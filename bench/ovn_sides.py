"""The two systems ``bench/ovn.py`` compares, each on its own two lab hosts with two guests:
:class:`OvsvnetSide` (the ``ovsvnet`` CLI as a user types it) and :class:`OvnSide` (OVN
through ``ovn-nbctl`` on the central node, :mod:`ovsvnet.lab.ovn`). Each step returns the
commands to run (so the bench times them alike) or runs the untimed set-up itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import Agents, PingStream
from ovsvnet.lab import Guest, Lab, LabError, LabHost, wait_until
from ovsvnet.lab.netns import ns_argv
from ovsvnet.lab.ovn import GENEVE_OVERHEAD, OvnLab

PROBE, GROW, DEFINE_A, DEFINE_B = 0x3000, 0x3001, 0x3800, 0x3C00
PARK = "br-park"
SUBNET = "192.168.77"
MTU = 1500 - GENEVE_OVERHEAD
Cmd = tuple[list[str], dict[str, str]]


def _ovsvnet_cmd() -> list[str]:
    """This venv's ``ovsvnet`` console script (what a user runs), else ``python -m``."""
    script = Path(sys.executable).parent / "ovsvnet"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ovsvnet"]


OVSVNET = _ovsvnet_cmd()


def bridge(k: int) -> str:
    """Named explicitly (``create --bridge``): the default naming may change."""
    return f"vn{k:x}"


def run_all(cmds: Sequence[Cmd], timeout: float = 300) -> float:
    """Run ``cmds`` at once (each a new process); wall time until the last one finished."""
    t0 = time.monotonic()
    procs = [subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv, env in cmds]
    errors = []
    for p, (argv, _) in zip(procs, cmds):
        try:
            _out, err = p.communicate(timeout=max(1.0, t0 + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            errors.append(f"timed out: {' '.join(argv[4:9])}")
            continue
        if p.returncode:
            errors.append(f"exit {p.returncode}: {' '.join(argv[4:9])}: {err.strip()[-300:]}")
    wall = time.monotonic() - t0
    if errors:
        raise LabError("; ".join(errors))
    return wall


def vsctl_cmd(h: LabHost, *args: str) -> Cmd:
    return ns_argv(h.netns, ["ovs-vsctl", f"--db={h.db}", "--timeout=60", *args]), h.env


def replug(h: LabHost, g: Guest, bridge: str, *iface: str) -> Cmd:
    """Move guest ``g``'s port to ``bridge`` in one transaction (what libvirt's plug does)."""
    return vsctl_cmd(h, "--if-exists", "del-port", g.port, "--", "add-port", bridge, g.port,
                  "--", "set", "Interface", g.port, f'external_ids:ovsvnet-guest="{g.name}"',
                  *iface)


class Side:
    """One system on its two hosts and two guests; subclasses say how it does each step."""

    name = ""

    def __init__(self, lab: Lab, hosts: tuple[LabHost, LabHost], tag: str):
        self.lab, self.hosts = lab, hosts
        self.guests: list[Guest] = []
        for i, h in enumerate(hosts, 1):
            h.vsctl("add-br", PARK, "--", "set", "Bridge", PARK,
                    f"datapath_type={h.datapath_type}", "fail_mode=secure")
            g = lab.add_guest(f"g{tag}{i}", h.name, PARK, ip=f"{SUBNET}.{i}/24", mtu=MTU)
            g.run("sysctl", "-q", "-w", "net.ipv4.neigh.eth0.retrans_time_ms=10")
            self.guests.append(g)

    def flush(self) -> None:
        for g in self.guests:
            g.run("ip", "neigh", "flush", "dev", "eth0")

    def park(self) -> None:
        run_all([replug(h, g, PARK) for h, g in zip(self.hosts, self.guests)])

    def plug(self, k: int) -> list[Cmd]:
        raise NotImplementedError

    def define(self, k: int, guests: bool) -> list[Cmd]:
        raise NotImplementedError

    def undefine(self, k: int) -> None:
        raise NotImplementedError

    def grow(self, ids: list[int]) -> None:
        raise NotImplementedError

    def list_cmd(self) -> Cmd:
        raise NotImplementedError

    def daemon_pids(self) -> list[int]:
        """The control-plane daemons on the two hosts (agents, ovn-controllers)."""
        raise NotImplementedError

    def flows(self) -> int:
        """OpenFlow rules on host 1, all bridges of this system."""
        raise NotImplementedError


class OvsvnetSide(Side):
    name = "ovsvnet"

    def __init__(self, lab: Lab, hosts: tuple[LabHost, LabHost]):
        super().__init__(lab, hosts, "o")
        self.agents = Agents(1.0)
        for h, other in ((hosts[0], hosts[1]), (hosts[1], hosts[0])):
            run_all([self.cli(h, "peer-add", other.address)])

    @staticmethod
    def cli(h: LabHost, *args: str) -> Cmd:
        return ns_argv(h.netns, [*OVSVNET, "--db", h.db, "--timeout", "300", *args]), h.env

    def define(self, k: int, guests: bool) -> list[Cmd]:
        return [self.cli(h, "create", "--id", f"{k:x}", "--bridge", bridge(k))
                for h in self.hosts]

    def plug(self, k: int) -> list[Cmd]:
        return [replug(h, g, bridge(k)) for h, g in zip(self.hosts, self.guests)]

    def undefine(self, k: int) -> None:
        run_all([self.cli(h, "delete", f"{k:x}", "--force") for h in self.hosts])

    def grow(self, ids: list[int]) -> None:
        cmds = []
        for h in self.hosts:
            d = h.dir / "sxp"
            d.mkdir(exist_ok=True)
            files = []
            for k in ids:
                (d / f"{k:x}.sxp").write_text(f"(vnet (id {k:x}) (security none))\n")
                files.append(str(d / f"{k:x}.sxp"))
            cmds.append(self.cli(h, "create", *files))
        run_all(cmds, timeout=60 + 5 * len(ids))

    def list_cmd(self) -> Cmd:
        return self.cli(self.hosts[0], "list")

    def mtu(self) -> int:
        argv, env = self.cli(self.hosts[0], "show", f"{PROBE:x}", "--json")
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        return int(json.loads(out.stdout or "{}").get("mtu") or 0)

    def start_agents(self) -> None:
        """``ovsvnet agent`` on both hosts; returns once each has done its first sync."""
        for h in self.hosts:
            self.agents.start(h, wait=False)
        for h in self.hosts:
            wait(lambda h=h: self.agents.pid(h) is None
                  or ((self.agents.status(h, timeout=30) or {}).get("syncs") or 0) >= 1,
                  300, f"first sync of the agent on {h.name}")
            if self.agents.pid(h) is None:
                raise LabError(f"agent on {h.name} exited; see {h.dir / 'agent.log'}")

    def daemon_pids(self) -> list[int]:
        return [p for p in (self.agents.pid(h) for h in self.hosts) if p]

    def flows(self) -> int:
        h = self.hosts[0]
        total = 0
        for br in h.vsctl("list-br").split():
            if br != PARK:
                out = h.ofctl("dump-aggregate", br)
                total += int(re.search(r"flow_count=(\d+)", out).group(1))  # type: ignore[union-attr]
        return total - 1  # br-phy's NORMAL flow is the lab's underlay, not ovsvnet's


class OvnSide(Side):
    name = "ovn"

    def __init__(self, lab: Lab, hosts: tuple[LabHost, LabHost], ovn: OvnLab):
        self.ovn = ovn
        super().__init__(lab, hosts, "n")

    def _nbctl(self, *args: str) -> Cmd:
        return self.ovn.central.nbctl_argv(*args), self.ovn.central.env

    def define(self, k: int, guests: bool) -> list[Cmd]:
        if guests:
            ports = [(f"ls{k:x}-{i}", f"{g.mac} {g.addr}") for i, g in enumerate(self.guests, 1)]
            return [self._nbctl(*OvnLab.switch_args(f"ls{k:x}", ports))]
        ports = [(f"ls{k:x}-{i}", "unknown") for i in (1, 2)]
        return [self._nbctl("--wait=hv", "--print-wait-time", "--timeout=120",
                            *OvnLab.switch_args(f"ls{k:x}", ports))]

    def vifs(self, ids: Sequence[int]) -> None:
        """Internal ports on br-int standing for VMs already plugged: logical port
        ls<k>-<i> is bound on host i as soon as it is defined."""
        cmds = []
        for i, h in enumerate(self.hosts, 1):
            args: list[str] = []
            for k in ids:
                port = f"i{k:x}"
                args += ["--", "--may-exist", "add-port", "br-int", port, "--", "set",
                         "Interface", port, "type=internal", f"external_ids:iface-id=ls{k:x}-{i}"]
            cmds.append(vsctl_cmd(h, *args[1:]))
        run_all(cmds)

    def plug(self, k: int) -> list[Cmd]:
        return [replug(h, g, "br-int", f'external_ids:iface-id="ls{k:x}-{i}"')
                for i, (h, g) in enumerate(zip(self.hosts, self.guests), 1)]

    def undefine(self, k: int) -> None:
        self.ovn.del_switch(f"ls{k:x}")
        run_all([vsctl_cmd(h, "--if-exists", "del-port", f"i{k:x}") for h in self.hosts])

    def grow(self, ids: list[int]) -> None:
        self.vifs(ids)
        args: list[str] = []
        for k in ids:
            args += ["--", *OvnLab.switch_args(f"ls{k:x}", [(f"ls{k:x}-{i}", "unknown")
                                                             for i in (1, 2)])]
        self.ovn.central.nbctl(*args[1:], timeout=120)
        self.ovn.sync(timeout=300)

    def list_cmd(self) -> Cmd:
        return self._nbctl("ls-list")

    def daemon_pids(self) -> list[int]:
        return [p for p in self.ovn.controller_pids().values() if p]

    def flows(self) -> int:
        out = self.hosts[0].ofctl("dump-aggregate", "br-int")
        return int(re.search(r"flow_count=(\d+)", out).group(1))  # type: ignore[union-attr]


class Stream(PingStream):
    """A 10 ms ping stream that outlives "host unreachable": started before the network
    exists (``ping -w``, which PingStream uses, quits at the first error; a count bounds
    this one instead). Only echo replies count, not "unreachable" lines."""

    _LINE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)")

    def __init__(self, netns: str, dst: str, interval: float = 0.01, max_seconds: float = 30):
        self.replies: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "stdbuf", "-oL", "ping", "-n", "-D", "-i",
             str(interval), "-W", "1", "-c", str(int(max_seconds / interval)), dst],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def wait(pred: Any, timeout: float, what: str) -> None:
    wait_until(pred, timeout=timeout, interval=0.05, what=what)


