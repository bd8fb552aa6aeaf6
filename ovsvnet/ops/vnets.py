"""Define and remove a host's own vnets (each one transaction, then the flows it implies)."""

from __future__ import annotations

import os

from ovsvnet import model as M
from ovsvnet import rules
from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConflictError, NotFoundError
from ovsvnet.ops import state
from ovsvnet.ops.host import Host
from ovsvnet.ops.sync import Plan, SyncReport, apply_flows, commit
from ovsvnet.vnetid import VnetId


def resolve(host: Host, text: str) -> VnetConfig:
    """A defined vnet named by id (any form), bridge name or vnetif name."""
    defs, _ = state.definitions(host.db)
    return rules.resolve(defs, lambda c: c, text, "on this host", "ovsvnet list")


def name_in_use(host: Host, name: str) -> str | None:
    """Why a new vnet cannot have a bridge or vnetif of this name here, or None (an OVSDB
    bridge of that name is reported by the staging, which says whose it is)."""
    if host.db.bridge(name) is not None:
        return None
    if host.db.interface(name) is not None:
        return f"an interface named '{name}' already exists in OVSDB"
    if os.path.exists(f"/sys/class/net/{name}"):
        return f"'{name}' is a network device of this host"
    return None


def create_many(host: Host, cfgs: list[VnetConfig], may_exist: bool = False,
                plan: Plan | None = None) -> tuple[set[VnetId], SyncReport]:
    """Define vnets in one transaction (all or none). Returns the ids actually created;
    with ``may_exist`` an identical existing definition is accepted and left as it is.
    With ``plan`` nothing changes: the ids are those that would be created (--dry-run)."""
    wanted = rules.unique_request(cfgs, lambda c: c)
    created: set[VnetId] = set()

    def change(defs: dict[VnetId, VnetConfig]) -> dict[VnetId, VnetConfig]:
        new = rules.check_create(defs, wanted.values(), may_exist=may_exist,
                                 identical=lambda v: defs[v] == wanted[v],
                                 taken=lambda name: name_in_use(host, name))
        created.clear()
        created.update(new)
        return {**defs, **{vid: wanted[vid] for vid in new}}

    # only the new vnets (and the tunnels) are staged: the other 999 are not looked at
    commit(host, change, only=frozenset(c.bridge for c in wanted.values()), plan=plan)
    if plan is not None:
        return created, SyncReport()
    bridges = {c.bridge for c in wanted.values()} | {M.TRANSPORT_BRIDGE}
    return created, apply_flows(host, bridges)


def create(host: Host, cfg: VnetConfig, may_exist: bool = False) -> tuple[bool, SyncReport]:
    """Define one vnet. Returns (created, report); (False, ...) when an identical one exists."""
    created, report = create_many(host, [cfg], may_exist)
    return cfg.id in created, report


def delete(host: Host, text: str, force: bool = False,
           plan: Plan | None = None) -> tuple[VnetConfig, SyncReport]:
    cfg = resolve(host, text)
    if state.sources(host.db).get(cfg.id) == "registry":
        raise ConflictError(f"vnet {cfg.id.short} comes from the cluster registry (the agent "
                            "would make it again); delete it there: ovsvnet --registry "
                            f"REMOTES delete {cfg.id.short}")

    def change(defs: dict[VnetId, VnetConfig]) -> dict[VnetId, VnetConfig]:
        if cfg.id not in defs:
            raise NotFoundError(f"vnet: no vnet '{text}' on this host")
        bridge = host.db.bridge(cfg.bridge)
        plugged = state.domain_ports(bridge) if bridge is not None else []
        if plugged and not force:
            raise ConflictError(
                f"vnet {cfg.id.short} still has domains plugged into {cfg.bridge}: "
                f"{', '.join(plugged)}; unplug them or use --force")
        del defs[cfg.id]
        return defs

    commit(host, change, only=frozenset({cfg.bridge}), plan=plan)
    return cfg, apply_flows(host, {M.TRANSPORT_BRIDGE}) if plan is None else SyncReport()
