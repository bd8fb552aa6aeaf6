"""Prometheus metrics of the agent: its status (a plain dict) -> the text exposition format.

Pure: no sockets, no files. The agent's exporter (:mod:`ovsvnet.agent.metrics_export`)
serves :func:`render` over HTTP, writes it for node_exporter's textfile collector and
answers the ``metrics`` control command with it. Every value comes from the same dict
``ovsvnet status --json`` prints under ``agent`` (the vnet and tunnel counts under
``agent.inventory``), so a scrape and a status taken together agree. The metric names, types and
labels are the interface; docs/metrics.md lists each one.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (text 0.0.4).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ovsvnet.announce import REASONS
from ovsvnet.errors import ConfigError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Peer-table counters that count refused announcements (``ovsvnet status`` prints these
#: as "dropped"); with every decode failure (``decode_<reason>``) they are
#: ``ovsvnet_agent_announcements_dropped_total``. Every other counter is a discovery event.
DROP_REASONS = ("stale", "stranger", "spoofed", "too_old", "future", "peer_cap",
                "source_cap", "moved", "id_clash")
DECODE_DROPS = tuple(f"decode_{r}" for r in (*REASONS, "internal"))

LEVELS = ("none", "auth", "conf")
VNET_STATES = ("active", "inactive", "missing")
#: A tunnel port's state: ``up`` (a clear tunnel with an OpenFlow port), ``armed`` (a secure
#: tunnel whose IPsec policies are in the kernel), ``inactive`` (a secure tunnel not armed:
#: it carries nothing), ``down`` (no OpenFlow port: OVS refused or lost it).
TUNNEL_STATES = ("up", "armed", "inactive", "down")


@dataclass
class Family:
    """One metric family: ``# HELP``, ``# TYPE`` and its samples (suffix, labels, value)."""

    name: str
    kind: str  # counter, gauge, summary, info-as-gauge
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float | None, suffix: str = "", **labels: str) -> None:
        if value is not None:
            self.samples.append((suffix, labels, float(value)))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def exposition(families: Iterable[Family]) -> str:
    """The text format: each family's HELP and TYPE, then its samples; a family without
    samples is left out (Prometheus treats an absent series as absent, not as 0)."""
    lines: list[str] = []
    for fam in families:
        if not fam.samples:
            continue
        help_text = fam.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {fam.name} {help_text}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for suffix, labels, value in fam.samples:
            text = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in sorted(labels.items()))
            lines.append(f"{fam.name}{suffix}{{{text}}} {_number(value)}" if text
                         else f"{fam.name}{suffix} {_number(value)}")
    return "\n".join(lines) + "\n"


def _discovery_mode(status: Mapping[str, Any]) -> str:
    if not status.get("discovery", True):
        return "off"
    return "insecure" if status.get("insecure_discovery") else "authenticated"


def families(status: Mapping[str, Any], version: str = "") -> list[Family]:
    """The agent's metric families from its status dict (``ovsvnet status --json`` .agent)."""
    F = Family
    info = F("ovsvnet_agent_info", "gauge", "Always 1; the labels describe the agent.")
    info.add(1, system_id=str(status.get("system_id") or ""),
             tunnel_ip=str(status.get("tunnel_ip") or ""), version=version,
             discovery=_discovery_mode(status))
    uptime = F("ovsvnet_agent_uptime_seconds", "gauge", "Seconds since the agent started.")
    uptime.add(status.get("uptime"))

    peers = F("ovsvnet_agent_peers", "gauge",
              "Peers in the agent's table: live (heard within their hold time) or resumed "
              "(recorded on a tunnel port by an earlier run, not heard yet).")
    rows = status.get("peers") or []
    peers.add(sum(1 for p in rows if p.get("last_seen") is not None), state="live")
    peers.add(sum(1 for p in rows if p.get("last_seen") is None), state="resumed")
    static = F("ovsvnet_agent_static_peers", "gauge",
               "Configured static peers (peer-add): heard, or down (nothing heard from them).")
    configured = status.get("static_peers") or {}
    static.add(sum(1 for v in configured.values() if v), state="heard")
    static.add(sum(1 for v in configured.values() if not v), state="down")
    rejected = F("ovsvnet_agent_rejected_peers", "gauge",
                 "Peers that got no tunnel in the last pass (status: 'has no tunnel').")
    rejected.add(len(status.get("rejected_peers") or {}))
    clashes = F("ovsvnet_agent_id_clashes", "gauge",
                "Addresses announcing this host's own system-id.")
    clashes.add(len(status.get("id_clashes") or []))

    counters: Mapping[str, int] = status.get("counters") or {}
    sent = F("ovsvnet_agent_announcements_sent_total", "counter",
             "Announcement rounds sent (each to the group and every static peer).")
    sent.add(status.get("announcements_sent"))
    received = F("ovsvnet_agent_announcements_received_total", "counter",
                 "Discovery datagrams received, valid or not.")
    received.add(counters.get("received"))
    dropped = F("ovsvnet_agent_announcements_dropped_total", "counter",
                "Announcements refused, by reason (the status counter's name; decode_* did "
                "not decode or authenticate).")
    if counters:  # every reason, zeros too: a series that appears late breaks rate()
        extra = sorted(k for k in counters if k.startswith("decode_") and k not in DECODE_DROPS)
        for reason in (*DROP_REASONS, *DECODE_DROPS, *extra):
            dropped.add(counters.get(reason, 0), reason=reason)
    events = F("ovsvnet_agent_discovery_events_total", "counter",
               "Other peer-table counters: applied, changed, duplicate, own, relayed, "
               "to_segment, expired, left, incomplete, hold_capped, inconsistent.")
    for name in sorted(counters):
        if name != "received" and name not in DROP_REASONS and not name.startswith("decode_"):
            events.add(counters[name], event=name)

    syncs = F("ovsvnet_agent_syncs_total", "counter", "Reconcile passes that succeeded.")
    syncs.add(status.get("syncs"))
    errors = F("ovsvnet_agent_sync_errors_total", "counter", "Reconcile passes that failed.")
    errors.add(status.get("sync_errors"))
    duration = F("ovsvnet_agent_sync_duration_seconds", "summary",
                 "Time spent in reconcile passes (successful and failed).")
    if status.get("sync_seconds") is not None:
        duration.add(status["sync_seconds"], "_sum")
        duration.add((status.get("syncs") or 0) + (status.get("sync_errors") or 0), "_count")
    last = F("ovsvnet_agent_last_sync_duration_seconds", "gauge",
             "Duration of the latest reconcile pass.")
    last.add(status.get("last_sync_seconds"))
    restarts = F("ovsvnet_agent_vswitchd_restarts_repaired_total", "counter",
                 "ovs-vswitchd restarts detected (canary flow gone) and repaired.")
    restarts.add(status.get("vswitchd_restarts"))

    out = [info, uptime, peers, static, rejected, clashes, sent, received, dropped, events,
           syncs, errors, duration, last, restarts]
    out += _inventory(status.get("inventory") or {})
    out += _registry(status.get("registry"))
    return out


def _inventory(counts: Mapping[str, Any]) -> list[Family]:
    """Vnets and tunnel ports by level and state (``status`` .agent.inventory)."""
    vnets = Family("ovsvnet_vnets", "gauge",
                   "Vnets defined on this host, by security level and state (active, "
                   "inactive: a secure level without IPsec, missing: no bridge).")
    tunnels = Family("ovsvnet_tunnels", "gauge",
                     "Tunnel ports on the transport bridge, by level and state (up, armed, "
                     "inactive, down).")
    for fam, key, states in ((vnets, "vnets", VNET_STATES), (tunnels, "tunnels", TUNNEL_STATES)):
        table: Mapping[str, Mapping[str, int]] = counts.get(key) or {}
        if not table and not counts:
            continue
        for level in LEVELS:
            for st in states:
                fam.add(table.get(level, {}).get(st, 0), level=level, state=st)
    return [vnets, tunnels]


def _registry(reg: Mapping[str, Any] | None) -> list[Family]:
    """The registry connection; absent when the agent does not follow a registry."""
    F = Family
    if not reg:
        return []
    connected = F("ovsvnet_agent_registry_connected", "gauge",
                  "1 while connected to the registry's leader.")
    connected.add(1 if reg.get("connected") else 0)
    since = F("ovsvnet_agent_registry_connected_seconds", "gauge",
              "Seconds connected to the current leader.")
    since.add(reg.get("connected_for"))
    disconnects = F("ovsvnet_agent_registry_disconnects_total", "counter",
                    "Connections to the registry lost.")
    disconnects.add(reg.get("disconnects"))
    next_cfg = F("ovsvnet_agent_registry_next_cfg", "gauge",
                 "The registry's change counter (Registry.next_cfg) as last seen.")
    next_cfg.add(reg.get("next_cfg"))
    applied = F("ovsvnet_agent_registry_applied_cfg", "gauge",
                "The registry change this host has applied.")
    applied.add(reg.get("applied_cfg"))
    lag = F("ovsvnet_agent_registry_lag", "gauge",
            "Registry changes seen but not yet applied here (next_cfg - applied_cfg).")
    if reg.get("next_cfg") is not None and reg.get("applied_cfg") is not None:
        lag.add(max(0, reg["next_cfg"] - reg["applied_cfg"]))
    vnets = F("ovsvnet_agent_registry_vnets", "gauge", "Vnets in the registry.")
    vnets.add(reg.get("vnets"))
    here = F("ovsvnet_agent_registry_vnets_here", "gauge",
             "Registry vnets this host carries as bridges.")
    here.add(reg.get("vnets_here"))
    chassis = F("ovsvnet_agent_registry_chassis", "gauge", "Chassis rows in the registry.")
    chassis.add(reg.get("chassis"))
    conflicts = F("ovsvnet_agent_registry_conflicts", "gauge",
                  "Registry vnets not applied here because a local vnet holds the id or name.")
    conflicts.add(len(reg.get("conflicts") or {}))
    publish = F("ovsvnet_agent_registry_publish_errors_total", "counter",
                "Failed writes of this host's Chassis rows.")
    publish.add(reg.get("publish_errors"))
    return [connected, since, disconnects, next_cfg, applied, lag, vnets, here, chassis,
            conflicts, publish]


def render(status: Mapping[str, Any], version: str = "") -> str:
    """The exposition text for one agent status."""
    return exposition(families(status, version))


def parse_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text -> {(name, sorted labels): value}; for tests and ``ovsvnet`` tools.
    Understands what :func:`exposition` writes (no timestamps, escaped label values)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels: list[tuple[str, str]] = []
        rest = rest.removesuffix("}")
        while rest:
            key, _, rest = rest.partition('="')
            chars, i = [], 0
            while rest[i] != '"':
                if rest[i] == "\\":
                    i += 1
                    chars.append({"n": "\n"}.get(rest[i], rest[i]))
                else:
                    chars.append(rest[i])
                i += 1
            labels.append((key, "".join(chars)))
            rest = rest[i + 1:].removeprefix(",")
        out[(name, tuple(sorted(labels)))] = float(value)
    return out


def parse_address(text: str) -> tuple[str, int]:
    """``--metrics-address``: ``PORT`` (127.0.0.1), ``HOST:PORT`` or ``[V6]:PORT`` with an IP
    literal (no name lookups in the agent). ``:PORT`` is refused rather than guessed: give
    ``0.0.0.0:PORT`` to listen on every address."""
    bad = (f"metrics-address: {text!r} is not PORT, ADDRESS:PORT or [IPV6]:PORT "
           "(e.g. 9798 for 127.0.0.1:9798, 0.0.0.0:9798 for every address)")
    text = text.strip()
    if text.isdigit():
        host, port = "127.0.0.1", text
    elif text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(bad)
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:  # IPv6 needs its brackets: ::1:80 is ambiguous
            raise ConfigError(bad)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(bad) from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"metrics-address: port {port!r} is not a TCP port (1-65535)")
    return host, int(port)
