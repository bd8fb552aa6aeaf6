"""The rules every vnet definition obeys wherever it is stored (pure, no I/O).

A host's OVSDB and the cluster registry keep vnets in different places, but a vnet is named
and clashes the same way in both: by id (any form), bridge name or vnetif name; an id, a
bridge or a vnetif belongs to one vnet; a request may not define one id twice differently.
:mod:`ovsvnet.ops.vnets` and :mod:`ovsvnet.registry.client` call these, so a rule changes in
one place and the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from ovsvnet.config import VnetConfig
from ovsvnet.errors import ConfigError, ConflictError, NotFoundError
from ovsvnet.vnetid import VnetId

T = TypeVar("T")


def names(cfg: VnetConfig) -> list[tuple[str, str]]:
    """(field, name) of the interface names a vnet owns: its bridge and vnetif."""
    return [(f, n) for f, n in (("bridge", cfg.bridge), ("vnetif", cfg.vnetif)) if n]


def unique_request(items: Iterable[T], cfg_of: Callable[[T], VnetConfig]) -> dict[VnetId, T]:
    """The request by id; one id given twice with different definitions is a conflict."""
    seen: dict[VnetId, T] = {}
    for item in items:
        vid = cfg_of(item).id
        if vid in seen and seen[vid] != item:
            raise ConflictError(f"id: vnet {vid.short} is given twice, differently")
        seen[vid] = item
    return seen


def resolve(defs: Mapping[VnetId, T], cfg_of: Callable[[T], VnetConfig], text: str,
            where: str, hint: str) -> T:
    """The vnet named by ``text``: an id in any form, a bridge name or a vnetif name."""
    try:
        vid: VnetId | None = VnetId.parse(text)
    except ConfigError:
        vid = None
    if vid is not None and vid in defs:
        return defs[vid]
    for item in defs.values():
        cfg = cfg_of(item)
        if text in (cfg.bridge, cfg.vnetif):
            return item
    raise NotFoundError(f"vnet: no vnet '{text}' {where} ({hint} shows them)")


def check_create(existing: Mapping[VnetId, VnetConfig], wanted: Iterable[VnetConfig], *,
                 may_exist: bool, identical: Callable[[VnetId], bool], where: str = "",
                 ours: Callable[[VnetId], bool] = lambda vid: False,
                 taken: Callable[[str], str | None] = lambda name: None) -> list[VnetId]:
    """The ids of ``wanted`` to create, after checking every rule against ``existing``.

    ``identical(vid)``: the existing definition equals the wanted one (accepted with
    ``may_exist``). ``ours(vid)``: an existing row was made by this very request (a retry
    after a leader change), so it counts as created. ``taken(name)``: whether that
    name is in use outside the vnets (a host's OVSDB or its devices): why, or None.
    ``where`` ends every message
    (" in the registry").
    """
    used = {n: cfg for cfg in existing.values() for _, n in names(cfg)}
    create: list[VnetId] = []
    for cfg in wanted:
        old = existing.get(cfg.id)
        if old is not None:
            if ours(cfg.id):
                create.append(cfg.id)
                continue
            if may_exist and identical(cfg.id):
                continue
            if may_exist:
                raise ConflictError(f"id: vnet {cfg.id.short} already exists{where} with a "
                                    f"different definition: {old.to_sxp()}")
            raise ConflictError(f"id: vnet {cfg.id.short} already exists{where} (bridge "
                                f"{old.bridge}); --may-exist accepts an identical definition")
        for field, name in names(cfg):
            if name in used:
                raise ConflictError(f"{field}: '{name}' is already used by vnet "
                                    f"{used[name].id.short}{where}")
        for field, name in names(cfg):
            why = taken(name)
            if why:
                raise ConflictError(f"{field}: {why}")
        create.append(cfg.id)
        used.update({n: cfg for _, n in names(cfg)})
    return create
