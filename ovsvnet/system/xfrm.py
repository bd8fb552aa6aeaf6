"""The kernel's IPsec policies (``ip xfrm policy``): are a tunnel's in place, and ovsvnet's
own block policies that keep secure tunnels closed while the IKE daemon is gone.

Why: ``ovs-monitor-ipsec``'s plaintext shunts (``ipsec_skb_mark``) are xfrm policies that
*charon installs*: stopping charon removes them together with every ESP policy, and for
Geneve they only match *source* port 6081 anyway (the kernel lane saw 9 of 10 ``auth``
frames leave in clear as Geneve udp/6081 with charon stopped; docs/security.md). So ovsvnet
installs, on hosts with active secure vnets on the kernel datapath, its own policies::

    src 0.0.0.0/0 dst 0.0.0.0/0 proto udp dport 6081 dir out mark 0x1/0xffffffff action block
    src 0.0.0.0/0 dst 0.0.0.0/0 proto gre            dir out mark 0x1/0xffffffff action block
    (and the same for ::/0)

``mark`` = :data:`ovsvnet.ipsec.EGRESS_PKT_MARK`: ovs-vswitchd sets it on everything an
``auth``/``conf`` tunnel port encapsulates, so ``none`` (VXLAN) tunnels and anything that
is not an ovsvnet secure tunnel (mark 0) are never touched. :data:`PRIORITY` is a larger
number than any policy strongSwan installs (ESP ~366 000, its shunts ~600 000; lower number
= higher precedence), so while charon's ESP policies exist they win and the traffic is
encrypted; when they are gone, the guard drops it.

The mask is exact (``0xffffffff``), not the monitor's ``1``: the kernel identifies a policy
by selector, direction and mark/mask, *not* by priority, so a GRE guard with mark ``1/1``
would be the same policy as the monitor's ``prevent_unencrypted_gre`` shunt: charon would
replace it and delete it on stop. ``egress_pkt_mark=1`` sets the whole 32-bit mark, so the
exact match is the same set of packets.

I/O is limited to :func:`read_policies` and :func:`ensure` (``ip xfrm policy``, through
:func:`ovsvnet.system.proc.run`: pyroute2 has no maintained xfrm API), which act on the
network namespace ovsvnet runs in; :mod:`ovsvnet.ops` calls them only on the kernel datapath
(the userspace datapath never uses xfrm, and the test suite's labs on a shared machine must
never touch its xfrm tables). Everything else is pure text parsing.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from ovsvnet import ipsec
from ovsvnet.errors import OvsvnetError
from ovsvnet.system import proc

#: Lower precedence than every policy charon installs (see the module docstring).
PRIORITY = 1_000_000
MARK = int(ipsec.EGRESS_PKT_MARK)
MASK = 0xFFFFFFFF

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class GuardPolicy:
    """One block policy: outgoing, marked, one tunnel protocol (and UDP port), one family."""

    family: int  # 4 or 6
    proto: str  # "udp" or "gre"
    dport: int | None

    @property
    def any_address(self) -> str:
        return "0.0.0.0/0" if self.family == 4 else "::/0"

    def selector(self) -> list[str]:
        sel = ["src", self.any_address, "dst", self.any_address, "proto", self.proto]
        if self.dport is not None:
            sel += ["dport", str(self.dport)]
        return sel + ["dir", "out", "mark", f"{MARK:#x}", "mask", f"{MASK:#x}"]

    def update_argv(self) -> list[str]:
        """``ip xfrm policy update ...`` (idempotent: creates or replaces)."""
        return ["ip", "xfrm", "policy", "update", *self.selector(), "action", "block",
                "priority", str(PRIORITY)]

    def delete_argv(self) -> list[str]:
        return ["ip", "xfrm", "policy", "delete", *self.selector()]

    def found_in(self, blocks: list[str]) -> bool:
        """Whether ``ip xfrm policy`` output (as :func:`policy_blocks`) holds
        this policy."""
        head = f"src {self.any_address} dst {self.any_address} proto {self.proto}"
        port = f" dport {self.dport}" if self.dport is not None else ""
        for b in blocks:
            if not b.startswith(head + port + " ") and b != head + port:
                continue
            if self.dport is None and re.search(r"\b[sd]port\b", b):
                continue
            if (re.search(r"\bdir out\b", b) and re.search(r"\baction block\b", b)
                    and re.search(rf"\bpriority {PRIORITY}\b", b)
                    and re.search(rf"\bmark {MARK:#x}/{MASK:#x}\b", b)):
                return True
        return False


#: One policy per secure level's tunnel protocol (Geneve udp/6081, GRE) and address family.
POLICIES: tuple[GuardPolicy, ...] = tuple(
    GuardPolicy(family, m.protocol, m.dst_port)
    for family in (4, 6) for m in ipsec.MAPPING.values() if m.ipsec)


def missing(text: str) -> list[GuardPolicy]:
    blocks = policy_blocks(text)
    return [p for p in POLICIES if not p.found_in(blocks)]


def present(text: str) -> list[GuardPolicy]:
    blocks = policy_blocks(text)
    return [p for p in POLICIES if p.found_in(blocks)]


def complete(text: str) -> bool:
    """Whether every guard policy is in place."""
    return not missing(text)


def plan(text: str, wanted: bool) -> list[list[str]]:
    """The ``ip`` commands that bring the guard to ``wanted`` from ``text`` (pure)."""
    if wanted:
        return [p.update_argv() for p in missing(text)]
    return [p.delete_argv() for p in present(text)]


# -- are a tunnel's kernel policies in place? ---------------------------------------------

def policy_blocks(text: str) -> list[str]:
    """``ip xfrm policy`` output, one line per policy (continuation lines joined)."""
    blocks: list[str] = []
    for line in text.splitlines():
        if line.startswith("src "):
            blocks.append(line.strip())
        elif blocks and line[:1].isspace():
            blocks[-1] += " " + line.strip()
    return blocks


def policies_installed(level: str, peer_address: str, xfrm_policy_text: str) -> bool:
    """Whether ``ip xfrm policy`` output holds the ESP policies of the ``level`` tunnel to
    a peer (outgoing and incoming, per conn): the condition to *arm* a secure tunnel.

    Expected shapes (strongSwan, ``set_proto_port_transport_sa``)::

        src A/32 dst B/32 proto udp dport 6081  dir out ... tmpl ... proto esp ... mode transport
        src A/32 dst B/32 proto udp sport 6081  dir out ...
        src B/32 dst A/32 proto udp sport 6081  dir in  ...   (and dport 6081)
        src A/32 dst B/32 proto gre             dir out ...   src B/32 dst A/32 proto gre dir in

    A ``none`` level needs no policy: always True.
    """
    m = ipsec.mapping(level)
    if not m.ipsec:
        return True
    peer = ipsec.parse_address("peer", peer_address)
    host = f"{peer}/{32 if peer.version == 4 else 128}"
    blocks = [b for b in policy_blocks(xfrm_policy_text)
              if re.search(r"\bproto esp\b", b) and "mode transport" in b]

    def has(direction: str, port_field: str | None) -> bool:
        side = "dst" if direction == "out" else "src"
        for b in blocks:
            if not re.search(rf"\b{side} {re.escape(host)}(\s|$)", b):
                continue
            if not re.search(rf"\bdir {direction}\b", b):
                continue
            if not re.search(rf"^src \S+ dst \S+ proto {m.protocol}\b", b):
                continue
            if port_field and not re.search(rf"\b{port_field} {m.dst_port}\b", b):
                continue
            return True
        return False

    if m.dst_port is None:
        return has("out", None) and has("in", None)
    return all(has(d, f) for d in ("out", "in") for f in ("sport", "dport"))


# -- I/O ----------------------------------------------------------------------------------

def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return proc.run(argv, check=False, timeout=10, what="xfrm guard: " + " ".join(argv[:4]))


def read_policies(run: Runner = _run) -> str:
    """``ip xfrm policy`` of this network namespace."""
    proc = run(["ip", "xfrm", "policy", "list"])
    if proc.returncode != 0:
        raise OvsvnetError(f"xfrm guard: ip xfrm policy: {(proc.stderr or '').strip()}")
    return proc.stdout


def ensure(text: str, wanted: bool, run: Runner = _run) -> list[str]:
    """Install (``wanted``) or remove the guard; ``text`` is the current ``ip xfrm policy``.
    Returns the commands run; raises :class:`OvsvnetError` when one fails."""
    done = []
    for argv in plan(text, wanted):
        proc = run(argv)
        if proc.returncode != 0:
            raise OvsvnetError(f"xfrm guard: {' '.join(argv)}: {(proc.stderr or '').strip()}")
        done.append(" ".join(argv))
    return done
