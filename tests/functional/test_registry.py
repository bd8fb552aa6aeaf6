"""The cluster registry with real members, agents and guests: a 3-member Raft cluster of
ovsdb-servers over TLS (each in its own namespace on the lab segment) and three lab hosts
whose agents follow it with chassis certificates and multicast off, so every peer and every
vnet comes from the registry. Vnets are defined on the members' unix sockets, as operators
do."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ovsvnet.lab import Guest, Lab, LabHost, wait_until
from ovsvnet.lab.registry import RegistryCluster, wait_elected
from ovsvnet.vnetid import VnetId

from .helpers import ovsvnet as run

pytestmark = pytest.mark.root

INTERVAL = 0.5


class Agents:
    """``ovsvnet agent --registry`` in each host's namespace (with the host's chassis
    certificate unless the registry is insecure), stopped by pid."""

    def __init__(self, cluster: RegistryCluster) -> None:
        self.cluster = cluster
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, host: LabHost) -> None:
        tls: list[str] = []
        if not self.cluster.insecure:
            files = self.cluster.chassis(host.name, host.system_id)
            tls = ["-p", files.private_key, "-c", files.certificate, "-C", files.ca_cert]
        log = open(host.dir / "agent.log", "ab")
        self.procs[host.name] = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable, "-m", "ovsvnet",
             "--db", host.db, *tls, "agent", "--interval", str(INTERVAL), "--no-multicast",
             "--registry", self.cluster.remotes, "--pidfile", str(host.dir / "agent.pid")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=host.env)
        log.close()
        wait_until(lambda: agent_status(host) is not None, timeout=15,
                   what=f"agent on {host.name}")

    def stop(self, host: LabHost) -> None:
        self._stop(host.name)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self._stop(name)

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def control_socket(host: LabHost) -> str | None:
    """The agent's control socket in the host's directory (``ovsvnet-agent.<pid>.ctl`` as
    OVS names them, or the older ``ovsvnet-agent.ctl``), the newest if several."""
    socks = list(host.dir.glob("ovsvnet-agent*.ctl"))
    return str(max(socks, key=lambda p: p.stat().st_mtime)) if socks else None


def agent_status(host: LabHost) -> dict | None:
    """The agent's status over its control socket (no ovsvnet process: polls stay cheap)."""
    sock = control_socket(host)
    if sock is None:
        return None
    proc = host.run("ovs-appctl", "-t", sock, "--timeout=5", "status", check=False,
                    timeout=10)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _find(host: LabHost, table: str, *conditions: str) -> list[dict]:
    out = host.run("ovs-vsctl", f"--db={host.db}", "--timeout=5", "--format=json", "find",
                   table, *conditions).stdout
    data = json.loads(out)
    rows = [dict(zip(data["headings"], row)) for row in data["data"]]
    for r in rows:
        for k, v in r.items():
            if isinstance(v, list) and v and v[0] == "map":
                r[k] = dict(v[1])
    return rows


def local_vnets(host: LabHost) -> dict[str, str]:
    """short id -> source ("registry" or "local") of the vnet bridges in the host's OVSDB."""
    return {VnetId.parse(r["external_ids"]["ovsvnet-id"]).short:
            r["external_ids"].get("ovsvnet-source", "local")
            for r in _find(host, "Bridge", "external_ids:ovsvnet-role=vnet")}


def tunnels(host: LabHost) -> set[str]:
    """Remote addresses of the host's tunnel interfaces that have an OpenFlow port."""
    return {r["options"]["remote_ip"] for r in _find(host, "Interface", "type=vxlan")
            if isinstance(r["ofport"], int) and r["ofport"] > 0}


@contextlib.contextmanager
def cluster_lab(n_hosts: int = 3, insecure: bool = False
                ) -> Iterator[tuple[Lab, RegistryCluster, list[LabHost], Agents]]:
    """Three members (TLS unless ``insecure``) and ``n_hosts`` hosts with agents."""
    with Lab() as lab:
        lab.add_segment("s1")
        members = [lab.add_plain_host(f"r{i}", "s1") for i in (1, 2, 3)]
        hosts = [lab.add_host(f"h{i}", "s1") for i in range(1, n_hosts + 1)]
        with RegistryCluster(lab.workdir, members, insecure=insecure) as cluster:
            cluster.up()
            agents = Agents(cluster)
            try:
                for h in hosts:
                    agents.start(h)
                yield lab, cluster, hosts, agents
            finally:
                agents.stop_all()


def registry_status(host: LabHost, remotes: str) -> dict:
    return json.loads(run(host, "--registry", remotes, "registry", "status",
                          "--json").stdout)["contents"]


def everywhere(hosts: list[LabHost], short: str, present: bool = True) -> bool:
    return all((local_vnets(h).get(short) == "registry") == present for h in hosts)


def mesh(hosts: list[LabHost]) -> bool:
    return all(tunnels(h) == {o.address for o in hosts if o is not h} for h in hosts)


def ping_stream(guest: Guest, dst: str, seconds: int) -> subprocess.Popen[str]:
    """A bounded ping (10 per second for ``seconds``), parsed by :func:`longest_gap`."""
    return subprocess.Popen(
        ["ip", "netns", "exec", guest.netns, "ping", "-n", "-i", "0.1", "-W", "1",
         "-c", str(seconds * 10), "-w", str(seconds + 5), dst],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        text=True)


def longest_gap(proc: subprocess.Popen[str]) -> tuple[int, int, int]:
    """(replies, requests sent, longest run of missing icmp_seq) of a finished ping."""
    out, _ = proc.communicate(timeout=60)
    seqs = sorted(int(m) for m in re.findall(r"icmp_seq=(\d+)", out))
    m = re.search(r"(\d+) packets transmitted", out)
    sent = int(m.group(1)) if m else 0
    gap, prev = 0, 0
    for s in seqs + [sent + 1]:
        gap = max(gap, s - prev - 1)
        prev = s
    return len(seqs), sent, gap


def test_one_create_puts_a_vnet_everywhere_and_survives_the_leader():
    with cluster_lab() as (lab, cluster, hosts, agents):
        h1, h2, h3 = hosts
        R = cluster.operator_remotes
        assert wait_until(lambda: len(registry_status(h1, R)["chassis"]) == 3, timeout=15,
                          what="three chassis rows")
        # one create against the registry: the vnet on every host, a full mesh, guests ping
        start = time.monotonic()
        out = run(h1, "--registry", R, "create", "--id", "97").stdout
        assert "created in the registry" in out
        assert wait_until(lambda: everywhere(hosts, "0097") and mesh(hosts), timeout=20,
                          what="vnet 97 and tunnels on every host")
        print(f"\nregistry create -> vnet and tunnels on 3 hosts: "
              f"{time.monotonic() - start:.2f}s")
        g1 = lab.add_guest("g1", "h1", "vnet-0097", ip="192.168.97.1/24", mtu=1450)
        g2 = lab.add_guest("g2", "h2", "vnet-0097", ip="192.168.97.2/24", mtu=1450)
        g3 = lab.add_guest("g3", "h3", "vnet-0097", ip="192.168.97.3/24", mtu=1450)
        assert g1.ping(g2.addr, count=3, timeout=10) and g1.ping(g3.addr, count=3, timeout=10)
        # the same rules and exit codes as local vnets
        run(h2, "--registry", R, "create", "--id", "97", rc=3)
        run(h2, "--registry", R, "create", "--id", "98", "--bridge", "vnet-0097", rc=3)
        run(h2, "--registry", R, "create", "--id", "98", "--bridge", "br-vnet", rc=2)
        run(h2, "--registry", R, "create", "--id", "97", "--may-exist")
        run(h2, "--registry", R, "show", "99", rc=4)
        # a registry vnet is not deleted behind the registry's back on one host
        assert "registry" in run(h2, "delete", "97", rc=3).stderr
        # every host reports its domain ports, so a delete is refused while they are in use
        assert wait_until(lambda: set(json.loads(run(h1, "--registry", R, "show", "97",
                                                     "--json").stdout)["domains_on"])
                          == {h.system_id for h in hosts}, timeout=10, what="domains_on")

        # kill the leader: traffic never stops and a new vnet is defined within seconds
        leader = wait_elected(cluster)
        pings = ping_stream(g1, g2.addr, seconds=8)
        time.sleep(1)
        cluster.kill(leader)
        t0 = time.monotonic()
        run(h3, "--timeout", "20", "--registry", R, "create", "--id", "98")
        created_in = time.monotonic() - t0
        assert wait_until(lambda: everywhere(hosts, "0098"), timeout=20,
                          what="vnet 98 on every host after the leader died")
        converged_in = time.monotonic() - t0
        replies, sent, gap = longest_gap(pings)
        print(f"leader {leader} killed: create took {created_in:.2f}s, on every host after "
              f"{converged_in:.2f}s; ping {replies}/{sent}, longest gap {gap}")
        assert created_in < 10
        assert sent >= 70 and replies >= sent - 2 and gap <= 2, (replies, sent, gap)
        new_leader = wait_elected(cluster)
        assert new_leader != leader
        cluster.start(leader)  # back as a follower

        # one delete removes it everywhere (--force: the guests are still plugged in); a
        # row change never unplugs running domains: a host keeps the bridge, says so, and
        # lets it go once its domains are unplugged
        err = run(h1, "--registry", R, "delete", "97", rc=3).stderr
        assert "domains plugged in" in err
        lab.remove_guest("g3")
        run(h1, "--registry", R, "delete", "97", "--force")
        assert wait_until(lambda: "0097" not in local_vnets(h3), timeout=20,
                          what="vnet 97 gone from h3 (no domain left there)")
        assert wait_until(lambda: all("domains are plugged in" in (
            (agent_status(h) or {}).get("registry") or {}).get("conflicts", {}).get("0097", "")
            for h in (h1, h2)), timeout=15, what="h1 and h2 keep 97 and say why")
        assert everywhere((h1, h2), "0097") and g1.ping(g2.addr, count=2, timeout=10)
        lab.remove_guest("g1")
        lab.remove_guest("g2")
        assert wait_until(lambda: everywhere(hosts, "0097", present=False), timeout=20,
                          what="vnet 97 gone from every host")
        assert wait_until(lambda: all(h.run("ovs-vsctl", f"--db={h.db}", "br-exists",
                                            "vnet-0097", check=False).returncode == 2
                                      for h in hosts), timeout=10, what="bridges gone")
        # vnet 98 stays, and every chassis has applied the last change
        assert everywhere(hosts, "0098")
        assert wait_until(lambda: not any(c["behind"] for c in
                                          registry_status(h1, R)["chassis"]),
                          timeout=15, what="every chassis at the latest cfg")


def test_registry_away_keeps_the_data_plane_and_agents_catch_up():
    with cluster_lab() as (lab, cluster, hosts, agents):
        h1, h2, h3 = hosts
        R = cluster.operator_remotes
        # a local vnet beside a registry vnet; a local vnet with a registry id wins
        run(h3, "create", "--id", "99")
        run(h1, "--registry", R, "create", "--id", "97")
        run(h1, "--registry", R, "create", "--id", "99")
        assert wait_until(lambda: everywhere(hosts, "0097") and mesh(hosts), timeout=20,
                          what="vnet 97 everywhere")
        assert wait_until(lambda: local_vnets(h1).get("0099") == "registry"
                          and local_vnets(h2).get("0099") == "registry", timeout=15,
                          what="vnet 99 on h1 and h2")
        assert local_vnets(h3)["0099"] == "local"
        assert wait_until(lambda: "0099" in ((agent_status(h3) or {}).get("registry") or {})
                          .get("conflicts", {}), timeout=10, what="the conflict reported")
        g1 = lab.add_guest("g1", "h1", "vnet-0097", ip="192.168.97.1/24", mtu=1450)
        g3 = lab.add_guest("g3", "h3", "vnet-0097", ip="192.168.97.3/24", mtu=1450)
        assert g1.ping(g3.addr, count=3, timeout=10)

        # every member dies: traffic goes on, nothing is torn down, agents say so
        pings = ping_stream(g1, g3.addr, seconds=6)
        for name in list(cluster.members):
            cluster.kill(name)
        assert wait_until(lambda: all(not (agent_status(h) or {}).get("registry", {})
                                      .get("connected", True) for h in hosts),
                          timeout=15, what="agents to notice")
        # an agent restarted while the registry is away keeps its vnets and tunnels
        agents.stop(h1)
        agents.start(h1)
        time.sleep(6 * INTERVAL)  # longer than a discovered peer's hold time
        replies, sent, gap = longest_gap(pings)
        print(f"\nall members down, h1's agent restarted: ping {replies}/{sent}, "
              f"longest gap {gap}")
        assert sent >= 50 and replies >= sent - 2 and gap <= 2, (replies, sent, gap)
        assert everywhere(hosts, "0097") and mesh(hosts)
        assert g1.ping(g3.addr, count=3, timeout=10)

        # members come back: a change made now reaches every agent
        for name in cluster.members:
            cluster.start(name)
        wait_elected(cluster, timeout=20)
        t0 = time.monotonic()
        run(h2, "--timeout", "20", "--registry", R, "create", "--id", "9a")
        run(h2, "--timeout", "20", "--registry", R, "delete", "99")
        assert wait_until(lambda: everywhere(hosts, "009a") and not any(
            local_vnets(h).get("0099") == "registry" for h in hosts), timeout=30,
            what="agents to pick up the changes made after the restart")
        print(f"members restarted: changes on every host after {time.monotonic() - t0:.2f}s")
        assert local_vnets(h3)["0099"] == "local"  # the local vnet was never touched
        assert all((agent_status(h) or {}).get("registry", {}).get("connected")
                   for h in hosts)
        assert g1.ping(g3.addr, count=3, timeout=10)
