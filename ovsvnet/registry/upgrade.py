"""Bringing a member's database to this package's schema (``registry upgrade``, and every
``registry start`` of a member whose schema is not known to be current).

``ovsdb-client convert``, online, on the member's socket, because ``ovsdb-tool convert``
cannot convert a clustered database: a clustered schema change is a Raft log entry, so it
reaches every member and the members that start later find it done. Then the rows a schema
added are seeded if missing (1.1.0: the chassis role and, for TLS, the agents' listener;
until then a TLS member serves no agent: it fails closed).
"""

from __future__ import annotations

import json
from typing import Any

from ovsvnet.errors import (
    ConflictError,
    NotFoundError,
    OvsUnreachableError,
    OvsvnetError,
    WaitTimeout,
)
from ovsvnet.registry import model as R
from ovsvnet.registry.server import Member, check_transact, pid
from ovsvnet.system import proc


def wait_running(member: Member, timeout: float) -> int:
    """The member's pid once it runs (systemd starts ``upgrade`` beside a server that may
    not have written its pidfile yet); NotFoundError if it does not within ``timeout``."""
    try:
        running = proc.wait_until(lambda: pid(member), timeout=timeout,
                                  what="the member's ovsdb-server")
    except WaitTimeout:
        raise NotFoundError(f"registry: the member in {member.dir} is not running; start it "
                            "first (ovsvnet registry start)") from None
    assert running is not None
    return running


def needs_upgrade(member: Member) -> bool:
    """Whether the member's database may predate this package's schema (then
    :func:`upgrade` converts it once the server runs)."""
    return member.schema != R.schema_version()


def _client(member: Member, *args: str, timeout: float) -> str:
    return proc.run(["ovsdb-client", f"--timeout={max(1, int(timeout))}", *args[:1],
                     f"unix:{member.sock}", *args[1:]], timeout=timeout + 5).stdout


def upgrade(member: Member, timeout: float = 30) -> str:
    """Bring a running member's database to this package's schema; what was done.
    Needs the database connected, i.e. a majority of a cluster up."""
    what = f"registry upgrade of {member.dir}"
    try:
        proc.wait_until(member.sock.exists, timeout=timeout, what="the member's socket")
        _client(member, "wait", R.DB_NAME, "connected", timeout=timeout)
    except (WaitTimeout, OvsvnetError) as exc:
        raise OvsUnreachableError(
            f"{what}: the database is not connected within {timeout:g}s (a cluster needs a "
            "majority of its members up); run 'ovsvnet registry upgrade --dir "
            f"{member.dir}' once it is") from exc
    done = []
    if _client(member, "needs-conversion", str(R.SCHEMA_PATH), timeout=timeout).strip() == "yes":
        # a follower that has just started may still be applying another member's
        # conversion; converting again would be harmless, but it is not needed
        old = _client(member, "get-schema-version", R.DB_NAME, timeout=timeout).strip()
        if old != R.schema_version():
            _client(member, "convert", str(R.SCHEMA_PATH), timeout=timeout)
            done.append(f"converted from schema {old} to {R.schema_version()}")
    for _ in range(3):  # another member may be seeding at the same moment
        request = _missing_seed(member, timeout)
        if request is None:
            break
        try:
            check_transact(_client(member, "transact", json.dumps(request), timeout=timeout),
                            f"{what}: seeding")
        except ConflictError:
            continue  # the indexes refused a duplicate: look again
        done.append("seeded the access control")
        break
    else:
        raise OvsvnetError(f"{what}: seeding the access control kept clashing with another "
                           "member's; run it again")
    member.schema = R.schema_version()
    member.save()
    return "; ".join(done) or f"schema {R.schema_version()}, up to date"


def _missing_seed(member: Member, timeout: float) -> list[Any] | None:
    """The seeding request for what the database lacks (None: it lacks nothing)."""
    query = [R.DB_NAME,
             {"op": "select", "table": "Registry", "where": [], "columns": ["_uuid"]},
             {"op": "select", "table": "RBAC_Role",
              "where": [["name", "==", R.CHASSIS_ROLE]], "columns": ["name"]},
             {"op": "select", "table": "Connection", "where": [], "columns": ["target"]}]
    out = _client(member, "transact", json.dumps(query), timeout=timeout)
    check_transact(out, f"registry upgrade of {member.dir}: reading")
    registry, roles, conns = (r["rows"] for r in json.loads(out))
    target = member.listener()
    if target in {c["target"] for c in conns}:
        target = None
    if registry and roles and target is None:
        return None
    return R.seed_transaction(registry=not registry, rbac=not roles, target=target)
