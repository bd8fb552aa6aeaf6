"""Bring a host in line: one OVSDB transaction for a change and all it implies, then the flows.

Each state-changing operation is one OVSDB transaction that contains both the user's change
and everything derived from it (ports, tunnels, MTU), followed by bringing the flows in
line. ``sync`` is the same pass with no user change, so it is safe at any time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ovsvnet import flows as F
from ovsvnet import ipsec
from ovsvnet import model as M
from ovsvnet.addresses import is_unicast_host
from ovsvnet.config import VnetConfig
from ovsvnet.desired import Layout, StaticPeer
from ovsvnet.dryrun import RowChange, is_new, staged_changes
from ovsvnet.errors import NotFoundError, OvsvnetError
from ovsvnet.ops import state
from ovsvnet.ops.host import Host, layout_for, peers, security, underlay
from ovsvnet.ops.reconcile import stage
from ovsvnet.system import flowstore, ofctl, progress, xfrm
from ovsvnet.vnetid import VnetId


@dataclass
class SyncReport:
    flow_changes: list[ofctl.FlowChange] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    pruned_learned: int = 0
    #: peers that got no tunnel because they break a rule (address -> why)
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def changed_flows(self) -> int:
        return sum(len(c.removed) + len(c.added) for c in self.flow_changes)


@dataclass
class Plan:
    """What a command would change (``--dry-run``): the rows of its OVSDB transaction, sent
    to ovsdb-server ending in an ``abort`` (ovs-vsctl's --dry-run: nothing is committed),
    and the flow changes, computed on the transaction's staged view and not sent. Ports the
    transaction creates have no OpenFlow number yet: their flows use a stand-in
    (:attr:`new_ports` maps it to the port's name)."""

    ovsdb: list[RowChange] = field(default_factory=list)
    flows: list[ofctl.FlowChange] = field(default_factory=list)
    new_ports: dict[int, str] = field(default_factory=dict)
    #: compare with the flows in the switch, not with the record (``sync --full``)
    full: bool = False

    def ofport(self, iface: Any, name: str) -> int | None:
        if not is_new(iface):
            return state.ofport(iface)
        number = next((n for n, p in self.new_ports.items() if p == name), None)
        if number is None:
            number = NEW_PORT_BASE + len(self.new_ports)
            self.new_ports[number] = name
        return number


#: Stand-in OpenFlow numbers of ports a dry run would create (ovs-vswitchd counts from 1).
NEW_PORT_BASE = 61000

PeerChange = Callable[[list[StaticPeer]], list[StaticPeer]]
DefsChange = Callable[[dict[VnetId, VnetConfig]], dict[VnetId, VnetConfig]]


def commit(host: Host, change: DefsChange,
           peer_change: PeerChange | None = None, new_peer: str | None = None,
           sources: dict[VnetId, str] | None = None, strict: bool = True,
           only: frozenset[str] | None = None, plan: Plan | None = None) -> Layout | None:
    """One transaction: the command's change plus everything derived from it.

    ``change(defs)`` returns the new definitions; ``peer_change(statics)`` (staging its own
    OVSDB edit) returns the new static peers. Both are re-run on TRY_AGAIN against a fresh
    view, then :func:`ovsvnet.ops.reconcile.stage` adds the derived rows. ``sources`` (which
    ``change`` may fill) marks new bridges with where their definition came from.
    Interfaces ovs-vswitchd could not create fail the command (``strict``) or, for a sync,
    are reported in ``layout.rejected`` so the pass goes on to the flows. With ``plan``
    nothing changes: the transaction and the flows it implies are put there (--dry-run).
    """
    addresses = [t.address for t in peers(host) if is_unicast_host(t.address)]
    und = underlay(host, addresses + ([new_peer] if new_peer else []))

    def build(txn: Any) -> Layout:
        progress.phase("staging the OVSDB change")
        if plan is not None:  # index the names now, not the rows staged below (never real)
            host.db.bridge(M.TRANSPORT_BRIDGE)
            host.db.interface(M.TRANSPORT_BRIDGE)
        defs, _ = state.definitions(host.db)
        new_defs = change(dict(defs))
        statics, bad = state.static_peer_keys(host.db)
        if peer_change is not None:
            statics = peer_change(statics)
        layout = layout_for(host, list(new_defs.values()), und, statics, sources)
        layout.rejected.update(bad)
        stage(txn, host.db, layout, only)
        if plan is None:
            progress.phase("committing; ovs-vswitchd applies the change")
            return layout
        plan.flows.clear()  # (a build runs again after a concurrent change)
        plan.new_ports.clear()
        apply_flows(host, full=plan.full, plan=plan)  # on the staged view
        plan.ovsdb[:] = staged_changes(txn)
        txn.dry_run = True  # python-ovs ends it in an "abort": nothing is committed
        return layout

    layout = host.db.transact_vswitchd(build, wait_vswitchd=plan is None)
    if plan is None and layout is not None and layout.created_interfaces:
        failed = host.db.failed_interfaces(layout.created_interfaces)
        if failed and strict:
            raise OvsvnetError("ovs-vswitchd could not create " + "; ".join(
                f"{f.name}: {f.error}" for f in failed))
        layout.rejected.update({f.name: f"ovs-vswitchd could not create it: {f.error}"
                                for f in failed})
    return layout


def apply_flows(host: Host, bridges: set[str] | None = None,
                full: bool = False, plan: Plan | None = None) -> SyncReport:
    """Bring the transport bridge's flows to the desired set, sending only differences.

    Vnet bridges need no programming: they run ``fail_mode=standalone``, for which
    ovs-vswitchd itself installs the one flow they need (``NORMAL``) whenever it (re)starts.
    The transport bridge's installed flows are remembered (:mod:`ovsvnet.system.flowstore`),
    so a pass with nothing to change sends and reads nothing. ``bridges`` limits the work to
    those bridges; ``full`` reads the flows back from the switch and repairs hand edits.
    With ``plan`` (inside a dry run's transaction, on its staged view) the changes go there,
    unsent, and the kernel's IPsec policies are only looked at.
    """
    db = host.db
    if plan is None:
        db.run()
        progress.phase("bringing the flows in line")
        transport = db.bridge(M.TRANSPORT_BRIDGE)
    else:  # the name index does not know the rows this transaction inserts or deletes
        transport = next((b for b in db.rows("Bridge") if b.name == M.TRANSPORT_BRIDGE), None)
    report = SyncReport()
    if transport is None or transport.external_ids.get(M.ROLE) != M.ROLE_TRANSPORT:
        return report
    if bridges is not None and M.TRANSPORT_BRIDGE not in bridges:
        return report
    defs, _ = state.definitions(db)
    sec = security(host)
    active = {c.key: ipsec.LEVEL_CODES[c.security] for c in defs.values() if sec.active(c)}
    discovered = {d.address: d for d in host.learned()}
    vnet_ports: list[F.VnetPort] = []
    tunnel_ports: list[F.TunnelPort] = []
    # The guard and the arming gate (see secure_arming): a secure tunnel port gets flows
    # only while its IPsec policies and ovsvnet's own block policies are in the kernel.
    armed = secure_arming(host, transport,
                          want_guard=None if plan else any(c != 0 for c in active.values()),
                          failed=report.failed)
    for port in transport.ports:
        ids = port.external_ids
        role = ids.get(M.ROLE)
        if role not in (M.ROLE_PATCH, M.ROLE_TUNNEL):
            continue
        iface = port.interfaces[0]
        ofp = plan.ofport(iface, port.name) if plan is not None else state.ofport(iface)
        if ofp is None:
            report.failed.append(f"{port.name}: {(iface.error or ['no OpenFlow port'])[0]}")
            continue
        if role == M.ROLE_PATCH:
            vid = VnetId.parse(ids[M.PORT_VNET])
            if vid.key in active:
                vnet_ports.append(F.VnetPort(vid.key, ofp, active[vid.key]))
        else:
            address = ids[M.PORT_PEER]
            d = discovered.get(address)
            level = ipsec.LEVEL_CODES.get(ids.get(M.PORT_LEVEL, "none"), 0)
            if level != 0 and port.name not in armed:
                continue  # unarmed: its frames hit table 0's drop, nothing is sent to it
            tunnel_ports.append(F.TunnelPort(address, ofp, d.vnets if d else None, level))
    identity = flowstore.switch_identity(host.rundir, transport.uuid,
                                         transport.datapath_type)
    desired = F.transport_flows(vnet_ports, tunnel_ports)
    if plan is not None:
        plan.flows.append(ofctl.FlowChange(M.TRANSPORT_BRIDGE, [], [f.render() for f in desired],
                                           replaced=True) if is_new(transport) else
                          flowstore.install(host.rundir, M.TRANSPORT_BRIDGE, desired,
                                            identity, full, dry_run=True))
        return report
    change = flowstore.install(host.rundir, M.TRANSPORT_BRIDGE, desired, identity, full)
    report.flow_changes.append(change)
    if change.removed:
        # a tunnel may be gone: MACs learned behind it would send frames nowhere
        report.pruned_learned = ofctl.prune_learned(
            host.rundir, M.TRANSPORT_BRIDGE, {t.ofport for t in tunnel_ports})
    return report


def _secure_tunnels(transport: Any) -> list[tuple[str, str, str]]:
    """(port name, level, peer address) of the transport bridge's auth/conf tunnel ports."""
    out = []
    for port in transport.ports if transport is not None else []:
        ext = port.external_ids
        level = ext.get(M.PORT_LEVEL, "none")
        if ext.get(M.ROLE) == M.ROLE_TUNNEL and level in ipsec.LEVELS and level != "none":
            out.append((port.name, level, ext[M.PORT_PEER]))
    return out


def secure_arming(host: Host, transport: Any = None, *, want_guard: bool | None = None,
                  failed: list[str] | None = None) -> frozenset[str]:
    """The secure (auth/conf) tunnel ports that may carry traffic now: "armed".

    A secure port is armed only on the kernel datapath, while ovsvnet's guard policies
    (:mod:`ovsvnet.system.xfrm`) are in place *and* ``ip xfrm policy`` holds the port's own
    ESP policies (:func:`ovsvnet.system.xfrm.policies_installed`, installed by the IKE daemon
    for the monitor's conns). Stopping the IKE daemon removes its policies, so the next
    pass disarms the port (the agent re-checks every ``canary_interval``); the guard covers
    the seconds in between. ``want_guard`` True/False installs/removes the guard first
    (``apply_flows`` does, from whether secure vnets are active); None only looks (the
    agent's periodic check). Problems go to ``failed`` and leave every secure port unarmed.

    Off the kernel datapath this never runs ``ip xfrm`` (nothing there uses xfrm, and the
    test suite's userspace labs share the machine's xfrm tables) and arms nothing.
    """
    if state.effective_datapath(host.db) != "system":
        return frozenset()
    if transport is None:
        transport = host.db.bridge(M.TRANSPORT_BRIDGE)
    secure = _secure_tunnels(transport)
    if not secure and not want_guard:
        if want_guard is None:
            return frozenset()
        # nothing secure left: remove a guard an earlier pass installed, if any (a kernel
        # whose xfrm cannot even be listed has none: not a problem for a host without
        # secure vnets)
        try:
            text = xfrm.read_policies()
        except OvsvnetError:
            return frozenset()
        try:
            xfrm.ensure(text, False)
        except OvsvnetError as exc:
            if failed is not None:
                failed.append(str(exc))
        return frozenset()
    try:
        text = xfrm.read_policies()
        if want_guard is not None:
            xfrm.ensure(text, want_guard)
            guarded = want_guard
        else:
            guarded = xfrm.complete(text)
    except OvsvnetError as exc:
        if failed is not None:
            failed.append(str(exc))
        return frozenset()
    if not guarded:
        return frozenset()
    return frozenset(name for name, level, peer in secure
                     if xfrm.policies_installed(level, peer, text))


def sync(host: Host, full: bool = False, change: DefsChange | None = None,
         sources: dict[VnetId, str] | None = None, plan: Plan | None = None) -> SyncReport:
    """Reconcile OVSDB rows and flows with the stored definitions and peers.

    The agent passes ``change`` (and ``sources``) to fold the cluster registry's vnets in,
    in the same transaction (see :func:`ovsvnet.registry.model.plan`). ``full`` also reads
    the flows back from the switch (see :func:`apply_flows`); ``plan``: a dry run.
    """
    if plan is not None:
        plan.full = full
    layout = commit(host, change or (lambda defs: defs), sources=sources, strict=False,
                    plan=plan)
    report = apply_flows(host, full=full) if plan is None else SyncReport()
    if layout is not None:
        report.rejected = dict(layout.rejected)
    return report


def in_place(host: Host, bridge: str) -> bool:
    """Whether vnet bridge ``bridge`` is whole: its definition, its patch pair with OpenFlow
    ports (when the vnet is active) and the transport bridge's flows installed into the
    ovs-vswitchd running now, this vnet's among them. Reads one definition, not all of
    them, so a hook's check costs the same at 1 and at 1000 vnets. Raises NotFoundError for
    a bridge that is no vnet."""
    db = host.db
    br = db.bridge(bridge)
    ids = br.external_ids if br is not None else {}
    if br is None or ids.get(M.ROLE) != M.ROLE_VNET:
        raise NotFoundError(f"bridge: {bridge} is not a vnet bridge on this host "
                            "(ovsvnet list shows them)")
    try:
        cfg = state.parse_stored(ids.get(M.CONFIG) or "", bridge)
    except OvsvnetError:
        return False  # broken record: a full pass reports it
    if br.fail_mode != ["standalone"]:
        return False
    if not security(host).active(cfg):
        return True  # stays local: nothing to plug into the transport bridge
    here = db.interface(M.vnet_patch_name(cfg.key))
    there = db.interface(M.transport_patch_name(cfg.key))
    transport = db.bridge(M.TRANSPORT_BRIDGE)
    if here is None or there is None or transport is None:
        return False
    if state.ofport(here) is None or state.ofport(there) is None:
        return False
    now = flowstore.switch_identity(host.rundir, transport.uuid, transport.datapath_type)
    if now is None or now != flowstore.recorded_identity(host.rundir, M.TRANSPORT_BRIDGE):
        return False
    # A domain is about to depend on this vnet: look at its own flows (one small read, the
    # same at 1 and 1000 vnets), which someone may have deleted by hand since the record.
    return any(f" table={F.T_INTO_VNET}," in line
               for line in ofctl.dump_vnet(host.rundir, M.TRANSPORT_BRIDGE, cfg.key))


def sync_bridges(host: Host, bridges: list[str], full: bool = False,
                 plan: Plan | None = None) -> SyncReport:
    """:func:`sync` for a hook that is about to plug (or has plugged) domains into
    ``bridges``: nothing when they are in place (see :func:`in_place`), else a whole pass."""
    if not full and all([in_place(host, b) for b in bridges]):
        return SyncReport()
    # something was missing: put those vnets (and the tunnels) in place, no other vnet, and
    # compare the flows with the switch (trust no record)
    if plan is not None:
        plan.full = True
    layout = commit(host, lambda defs: defs, strict=False, only=frozenset(bridges), plan=plan)
    report = apply_flows(host, full=True) if plan is None else SyncReport()
    if layout is not None:
        report.rejected = dict(layout.rejected)
    return report
