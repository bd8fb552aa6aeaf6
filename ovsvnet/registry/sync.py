"""What ``ovsvnet agent --registry`` adds to the agent: registry vnets become local bridges,
registry chassis become peers, and this host is published.

The agent stays in charge of its loop; it calls :meth:`RegistrySync.run` (did the registry
change?), :meth:`RegistrySync.sync` instead of :func:`ovsvnet.ops.sync.sync` (the same single
transaction, with the registry's vnets folded in by :func:`ovsvnet.registry.model.plan`),
:meth:`RegistrySync.merge_peers` for its peer list and :meth:`RegistrySync.publish` once per
turn (a no-op unless something changed).

Ownership: a bridge the agent makes from the registry is marked ``ovsvnet-source=registry``
and only such bridges are ever changed or removed because of the registry; a local vnet is
never touched, and wins over a registry vnet with the same id (reported, not fatal).
Until the registry has been reached once (``snapshot is None``) nothing is added or removed.
"""

from __future__ import annotations

import socket
from typing import Any

import ovs.poller

from ovsvnet import __version__
from ovsvnet import model as M
from ovsvnet.config import VnetConfig
from ovsvnet.desired import TunnelSpec
from ovsvnet.ops import state
from ovsvnet.ops.host import Host
from ovsvnet.ops.sync import SyncReport, sync
from ovsvnet.ovsdb import SslFiles
from ovsvnet.registry import model as R
from ovsvnet.registry.follow import RegistryFollower
from ovsvnet.system.log import event
from ovsvnet.vnetid import VnetId


class RegistrySync:
    def __init__(self, host: Host, remotes: str, name: str, ssl: SslFiles | None = None):
        self.host = host
        self.name = name
        self.follower = RegistryFollower(remotes, name, ssl)
        self.hostname = socket.gethostname()
        self.applied_cfg = 0
        self.conflicts: dict[str, str] = {}
        self.last_plan: R.Plan | None = None
        self._attached: tuple[int, set[str]] = (-1, set())
        self._defs: tuple[int, list[VnetConfig]] = (-1, [])

    @property
    def remotes(self) -> str:
        return self.follower.remotes

    def resume(self, provisional: dict[str, TunnelSpec]) -> None:
        """Take the registry's peers recorded on tunnel ports out of the agent's provisional
        (hold-time limited) peers: they last until the registry answers, however long."""
        for address, spec in list(provisional.items()):
            if spec.source == R.SOURCE_REGISTRY:
                self.follower.resumed.append(provisional.pop(address))

    def run(self) -> bool:
        return self.follower.run()

    def wait(self, poller: ovs.poller.Poller) -> None:
        self.follower.wait(poller)

    def close(self) -> None:
        self.follower.close()

    def merge_peers(self, discovered: list[TunnelSpec],
                    local_ip: str | None) -> list[TunnelSpec]:
        """The agent's peers plus the registry chassis that share a vnet with this host.

        Chassis sharing nothing get no tunnel anyway; leaving them out here keeps the cost
        of a reconcile (a route lookup per peer, among others) in proportion to this
        host's neighbours, not to the size of the site."""
        keys = {c.key for c in self._carried()}
        peers = [p for p in self.follower.peers(local_ip) if p.vnets is None or p.vnets & keys]
        return R.merge_peers(discovered, peers)

    def _carried(self) -> list[VnetConfig]:
        """This host's vnets and the registry's vnets for it (about to be made)."""
        seqno = self.host.db.seqno
        if self._defs[0] != seqno:
            defs, _ = state.definitions(self.host.db)
            self._defs = (seqno, list(defs.values()))
        snap = self.follower.snapshot
        return self._defs[1] + (list(snap.desired(self.name).values()) if snap else [])

    # -- reconcile -------------------------------------------------------------------------------

    def sync(self, full: bool = False) -> SyncReport:
        snap = self.follower.snapshot
        if snap is None:  # never reached: keep everything as it is
            return sync(self.host, full)
        desired = snap.desired(self.name)
        sources: dict[VnetId, str] = {}
        plans: list[R.Plan] = []
        db = self.host.db

        def change(defs: dict[VnetId, VnetConfig]) -> dict[VnetId, VnetConfig]:
            ids = {v.canonical for v in defs}

            def foreign(name: str) -> bool:
                br = db.bridge(name)
                if br is not None:
                    return br.external_ids.get(M.ROLE) != M.ROLE_VNET or \
                        br.external_ids.get(M.VNET_ID) not in ids
                return db.interface(name) is not None

            registry_ids = {v for v, src in state.sources(db).items()
                            if src == R.ORIGIN_REGISTRY}
            def plugged(vid: VnetId) -> list[str]:
                br = db.bridge(defs[vid].bridge)
                return state.domain_ports(br) if br is not None else []

            p = R.plan(defs, registry_ids, desired, foreign, plugged)
            sources.clear()
            sources.update({v: R.ORIGIN_REGISTRY for v in p.registry_ids})
            plans[:] = [p]
            return p.defs

        report = sync(self.host, full, change, sources)
        p = plans[-1] if plans else None
        if p is not None:
            for what, ids in (("registry-vnet-added", p.added),
                              ("registry-vnet-changed", p.changed),
                              ("registry-vnet-removed", p.removed)):
                if ids:
                    event(what, vnets=",".join(v.short for v in ids))
            if p.conflicts != self.conflicts:
                for short, reason in sorted(p.conflicts.items()):
                    if self.conflicts.get(short) != reason:
                        event("registry-vnet-conflict", level="warn", vnet=short,
                                 reason=reason)
                self.conflicts = dict(p.conflicts)
            self.last_plan = p
        self.applied_cfg = snap.next_cfg
        return report

    # -- publishing --------------------------------------------------------------------------------

    def attached(self) -> set[str]:
        """Vnets (canonical ids) with domain ports on this host; re-read on OVSDB changes."""
        seqno = self.host.db.seqno
        if self._attached[0] != seqno:
            defs, _ = state.definitions(self.host.db)
            found = set()
            for cfg in defs.values():
                bridge = self.host.db.bridge(cfg.bridge)
                if bridge is not None and state.domain_ports(bridge):
                    found.add(cfg.id.canonical)
            self._attached = (seqno, found)
        return self._attached[1]

    def publish(self, local_ip: str | None, carried: dict[VnetId, str]) -> None:
        if local_ip is None:
            return
        info = R.ChassisInfo(self.name, local_ip, M.VXLAN_PORT,
                             frozenset(v.canonical for v in carried), self.hostname,
                             __version__)
        self.follower.publish(info, self.applied_cfg, self.attached(), self.conflicts)

    def status(self) -> dict[str, Any]:
        data = self.follower.status()
        here = [v for v, src in state.sources(self.host.db).items()
                if src == R.ORIGIN_REGISTRY]
        data.update({"applied_cfg": self.applied_cfg, "vnets_here": len(here),
                     "conflicts": dict(self.conflicts)})
        return data
