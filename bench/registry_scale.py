"""Registry scale: one real agent following a registry that describes a large site.

No OVS data planes for the site: the registry (a standalone member in a lab namespace) is
filled by a Python client with N simulated chassis rows (addresses in 10.200.0.0/16 that
nobody answers) and N vnets. Each vnet is scoped to 3 chassis (a tenant LAN across three
hosts), so the real agent, on lab host h1, is asked to build only the vnets scoped to it
(``H1_VNETS``) and tunnels to the simulated chassis that share them, not N bridges; it still
replicates and processes the whole Vnet and Chassis tables, which is what is measured.

Measured, same agent and same host, against a baseline registry holding only h1's own
chassis row and one vnet (``ratio`` = scale / baseline):

* ``change_applied``: ``create`` of one vnet scoped to h1 -> h1's Chassis_Private.cfg reaches
  the new Registry.next_cfg (the agent's bridge, ports and flows are in place: checked);
* ``foreign_change_applied``: a vnet for other chassis only -> h1 has processed it (cfg);
* ``peer_change_applied``: a simulated chassis starts carrying one of h1's vnets -> h1 has a
  tunnel to it;
* agent RSS after settling, and agent CPU seconds for the first full copy;
* registry side: rows, ovsdb-server RSS, database file size.

The registry is a TLS member as deployed: the real agent follows it over ``ssl:`` with a
chassis certificate (so the cost of TLS and of the chassis role is in the figures), while
the bench fills and changes it as an operator does, on the member's unix socket.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Agents, cpu_seconds, rss_kib, summarize, tunnel_addrs
from ovsvnet.config import VnetConfig
from ovsvnet.lab import Lab, LabHost, wait_until
from ovsvnet.lab.registry import RegistryCluster
from ovsvnet.ovsdb import SslFiles
from ovsvnet.registry import model as R
from ovsvnet.registry.client import RegistryClient, create_many
from ovsvnet.registry.server import pid as member_pid
from ovsvnet.vnetid import VnetId

H1_VNETS = 10  # vnets scoped to the real agent (each also to 2 simulated chassis)
SCOPE = 3  # chassis per vnet


def _sim_address(i: int) -> str:
    return str(ipaddress.ip_address("10.200.0.1") + i)


def _vid(i: int) -> VnetId:
    return VnetId(0x10000 + i)


def _populate(client: RegistryClient, h1: str, n_chassis: int, n_vnets: int) -> None:
    """N vnets scoped to 3 chassis each (the first H1_VNETS include h1), and the simulated
    chassis rows, carrying exactly the vnets scoped to them."""
    sims = [f"sim{i:05d}" for i in range(n_chassis)]
    scopes: dict[VnetId, frozenset[str]] = {}
    for i in range(n_vnets):
        names = [sims[(i + k) % len(sims)] for k in range(SCOPE)] if sims else []
        if i < H1_VNETS:
            names = [h1] + names[:SCOPE - 1]
        scopes[_vid(i)] = frozenset(names)

    def build(txn: Any) -> None:
        for vid, scope in scopes.items():
            row = client.db.insert(txn, "Vnet")
            for col, value in R.RegistryVnet(VnetConfig.build(vid), scope).to_row().items():
                setattr(row, col, value)
        carried: dict[str, set[str]] = {s: set() for s in sims}
        for vid, scope in scopes.items():
            for name in scope:
                carried.setdefault(name, set()).add(vid.canonical)
        for i, name in enumerate(sims):
            row = client.db.insert(txn, "Chassis")
            info = R.ChassisInfo(name, _sim_address(i), vnets=frozenset(carried[name]),
                                 hostname=name, version="sim")
            for col, value in info.to_row().items():
                setattr(row, col, value)

    client.transact(build)


def _applied(client: RegistryClient, name: str, cfg: int) -> Callable[[], bool]:
    def check() -> bool:
        client.db.run()
        for row in client.rows("Chassis_Private"):
            if row.name == name:
                return int(row.cfg) >= cfg
        return False
    return check


def _timed_change(client: RegistryClient, name: str,
                  change: Callable[[], None], extra: Callable[[], bool] | None = None,
                  timeout: float = 120) -> float:
    t0 = time.monotonic()
    change()
    target = client.next_cfg()
    wait_until(lambda: _applied(client, name, target)() and (extra is None or extra()),
               timeout=timeout, interval=0.01, what=f"{name} to apply cfg {target}")
    return time.monotonic() - t0


@contextlib.contextmanager
def _identity(files: SslFiles) -> Iterator[None]:
    """The agent's -p/-c/-C, through their environment variables (the bench's agent
    launcher puts its extra arguments after the ``agent`` command)."""
    names = {"OVSVNET_PRIVATE_KEY": files.private_key, "OVSVNET_CERTIFICATE": files.certificate,
             "OVSVNET_CA_CERT": files.ca_cert}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _bridge_exists(host: LabHost, bridge: str) -> Callable[[], bool]:
    return lambda: host.run("ovs-vsctl", f"--db={host.db}", "br-exists", bridge,
                            check=False).returncode == 0


def _measure(lab: Lab, h1: LabHost, cluster: RegistryCluster, n: int, reps: int,
             interval: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Fill the registry with ``n`` chassis and ``n`` vnets (n=0: h1 + 1 vnet), start the
    agent, measure, stop it."""
    sock = "unix:" + str(cluster.members["r1"].sock)
    client = RegistryClient(sock, timeout=120)
    agents = Agents(interval)
    res: dict[str, Any] = {"chassis": max(n, 0) + 1, "vnets": n if n else 1}
    try:
        t0 = time.monotonic()
        if n:
            _populate(client, h1.system_id, n, n)
        else:
            create_many(client, [VnetConfig.build(_vid(0))], chassis=frozenset({h1.system_id}))
        res["populate_s"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        with _identity(cluster.chassis(h1.name, h1.system_id)):
            agents.start(h1, "--registry", cluster.remotes, "--no-multicast")
        pid = agents.pid(h1)
        assert pid is not None
        mine = min(n, H1_VNETS) if n else 1
        wait_until(lambda: _applied(client, h1.system_id, client.next_cfg())()
                   and _bridge_exists(h1, VnetConfig.build(_vid(mine - 1)).bridge)(),
                   timeout=300, interval=0.05, what="the agent's first full copy")
        res["initial_converge_s"] = round(time.monotonic() - t0, 2)
        res["agent_cpu_initial_s"] = cpu_seconds(pid)
        res["h1_vnets"] = mine
        res["h1_tunnels"] = len(tunnel_addrs(h1))
        time.sleep(2 * interval)
        res["agent_rss_kib"] = rss_kib(pid)
        cpu0, t_idle = cpu_seconds(pid) or 0.0, time.monotonic()
        time.sleep(3)
        res["agent_idle_cpu"] = round(((cpu_seconds(pid) or 0.0) - cpu0)
                                      / (time.monotonic() - t_idle), 4)

        mine_changes, foreign_changes, peer_changes = [], [], []
        for r in range(reps):
            vid = _vid(50000 + r)
            cfg = VnetConfig.build(vid)
            # the (simulated) chassis that carries it too is in its scope: a chassis cannot
            # claim a vnet the registry scoped to others
            scope = frozenset({h1.system_id, f"simnew{r}"})
            mine_changes.append(_timed_change(
                client, h1.system_id,
                lambda cfg=cfg, scope=scope: create_many(client, [cfg], chassis=scope),
                _bridge_exists(h1, cfg.bridge)))
            other = VnetConfig.build(_vid(60000 + r))
            foreign_changes.append(_timed_change(
                client, h1.system_id,
                lambda other=other: create_many(client, [other],
                                                chassis=frozenset({"sim-nowhere"}))))
            # a (simulated) chassis starts carrying vnet `vid`: h1 gets a tunnel to it
            address = _sim_address(90000 + r)

            def add_peer(r: int = r, address: str = address, vid: VnetId = vid) -> None:
                def build(txn: Any) -> None:
                    row = client.db.insert(txn, "Chassis")
                    info = R.ChassisInfo(f"simnew{r}", address,
                                         vnets=frozenset({vid.canonical}))
                    for col, value in info.to_row().items():
                        setattr(row, col, value)
                client.transact(build)  # bumps next_cfg too, so "applied" is observable

            peer_changes.append(_timed_change(
                client, h1.system_id, add_peer,
                lambda address=address: address in tunnel_addrs(h1)))
        res["change_applied"] = summarize(mine_changes, 4)
        res["foreign_change_applied"] = summarize(foreign_changes, 4)
        res["peer_change_applied"] = summarize(peer_changes, 4)
        res["agent_rss_after_kib"] = rss_kib(pid)
        spid = member_pid(cluster.members["r1"])
        res["registry_rss_kib"] = rss_kib(spid) if spid else None
        res["registry_db_bytes"] = Path(cluster.members["r1"].db).stat().st_size
        log(f"  n={n}: first copy {res['initial_converge_s']}s, change applied "
            f"{res['change_applied']['median']:.3f}s, agent RSS "
            f"{(res['agent_rss_kib'] or 0) / 1024:.1f} MiB")
    finally:
        agents.stop_all()
        client.close()
    return res


def run(profile: Any, log: Callable[[str], None]) -> dict[str, Any]:
    n = profile.registry_n
    reps = profile.registry_reps
    out: dict[str, Any] = {"n": n, "repetitions": reps, "h1_vnets": H1_VNETS, "scope": SCOPE,
                           "interval_s": profile.interval}
    for label, size in (("baseline", 0), ("scale", n)):
        with Lab(prefix=profile.lab_prefix("r" + label[0])) as lab:
            lab.add_segment("s1")
            r1 = lab.add_plain_host("r1", "s1")
            h1 = lab.add_host("h1", "s1")
            with RegistryCluster(lab.workdir, [r1], standalone=True) as cluster:
                cluster.up()
                out[label] = _measure(lab, h1, cluster, size, reps, profile.interval, log)
    b, s = out["baseline"], out["scale"]
    out["ratios"] = {
        key: round(s[key]["median"] / b[key]["median"], 2)
        for key in ("change_applied", "foreign_change_applied", "peer_change_applied")
        if b[key].get("median")}
    out["ratios"]["agent_rss"] = round(s["agent_rss_kib"] / b["agent_rss_kib"], 2)
    return out
