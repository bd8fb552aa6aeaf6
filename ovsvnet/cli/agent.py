"""``ovsvnet agent``: check the options, take the pidfile, run the daemon."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import click

from ovsvnet.announce import GROUP, PORT
from ovsvnet.cli.common import Session, pass_session
from ovsvnet.errors import ConfigError


def _multicast_group(text: str) -> str:
    try:
        if not ipaddress.ip_address(text).is_multicast:
            raise ConfigError(f"group: {text} is not a multicast address")
    except ValueError as exc:
        raise ConfigError(f"group: {text} is not an IP address") from exc
    return text


@click.command(epilog=f"""\b
Examples:
  ovsvnet agent                                  # multicast {GROUP}:{PORT}, every 5 s
  ovsvnet agent --interval 2 --key-file /etc/ovsvnet/discovery.key
  ovsvnet agent --no-multicast                   # static peers only (ovsvnet peer-add)
  ovsvnet agent --registry 10.0.0.1,10.0.0.2,10.0.0.3 --no-multicast   # the registry only
  ovsvnet agent --metrics-address 9798            # Prometheus: http://127.0.0.1:9798/metrics
  ovs-appctl -t ovsvnet-agent status             # its control socket, as for OVS's daemons""")
@click.option("--group", default=GROUP, show_default=True,
              help="Multicast group for announcements.")
@click.option("--port", "disc_port", default=PORT, show_default=True, type=int,
              help="UDP port for announcements.")
@click.option("--ttl", default=1, show_default=True, type=click.IntRange(1, 255),
              help="Multicast TTL (1 = this segment only; use peer-add across routers).")
@click.option("--interface", metavar="ADDRESS",
              help="Local address to send and join multicast on (default: tunnel endpoint).")
@click.option("--interval", default=5.0, show_default=True,
              type=click.FloatRange(0.2, 3600), help="Seconds between announcements.")
@click.option("--hold", type=click.IntRange(1, 65535), metavar="SECONDS",
              help="Peers expire after this long unheard (default 3 intervals).")
@click.option("--key-file", type=click.Path(dir_okay=False),
              help="Shared key (mode 0600, from 'ovsvnet keygen'): announcements are "
                   "HMAC-signed and checked. Required unless --insecure-discovery.")
@click.option("--insecure-discovery", is_flag=True,
              help="Run discovery without a key: anyone who can send UDP to the discovery "
                   "port can announce itself as a peer (labs only).")
@click.option("--no-multicast", is_flag=True, help="Only talk to static peers.")
@click.option("--canary-interval", default=2.0, show_default=True,
              type=click.FloatRange(0.1, 60), metavar="SECONDS",
              help="How often to check that ovs-vswitchd still has ovsvnet's flows.")
@click.option("--registry", "agent_registry", metavar="REMOTES",
              help="Follow the cluster registry: carry its vnets, take peers from its chassis "
                   "table, publish this host (default: the global --registry).")
@click.option("--metrics-address", metavar="[ADDRESS:]PORT",
              help="Serve Prometheus metrics on http://ADDRESS:PORT/metrics (a port alone: "
                   "127.0.0.1; 0.0.0.0:PORT for every address). Off by default.")
@click.option("--metrics-textfile", type=click.Path(dir_okay=False), metavar="PATH",
              help="Keep the metrics in PATH (*.prom) for node_exporter's textfile collector.")
@click.option("--pidfile", type=click.Path(dir_okay=False), help="Write the pid here.")
@pass_session
def agent(s: Session, group: str, disc_port: int, ttl: int, interface: str | None,
          interval: float, hold: int | None, key_file: str | None, insecure_discovery: bool,
          no_multicast: bool, canary_interval: float, agent_registry: str | None,
          metrics_address: str | None, metrics_textfile: str | None,
          pidfile: str | None) -> None:
    """Run the agent: discover peers, keep tunnels and flows right, repair after restarts.

    Discovery is authenticated: give --key-file (the same key on every host). With
    --registry it also carries the registry's vnets and finds peers in its chassis table
    (beside multicast, unless --no-multicast; with --no-multicast and no key, discovery is
    off and the registry alone gives the peers); while the registry is unreachable it keeps
    the last known state and catches up when it returns.
    """
    from ovsvnet.agent.core import Agent, AgentOptions
    from ovsvnet.agent.discovery import read_key_file
    from ovsvnet.agent.metrics_export import MetricsOptions, check_textfile
    from ovsvnet.metrics import parse_address
    from ovsvnet.system import log
    from ovsvnet.system.proc import PidFile

    registry = agent_registry or s.registry_remotes
    discovery = True
    if not key_file and not insecure_discovery:
        if not (registry and no_multicast):
            raise ConfigError(
                "key-file: discovery needs a shared key: 'ovsvnet keygen /etc/ovsvnet/"
                "discovery.key' on one host, copy it to every host, then --key-file; or "
                "--insecure-discovery to run without one (anyone who can send UDP to port "
                f"{disc_port} can then announce itself as a peer)")
        discovery = False  # the registry alone: its rows are authenticated by TLS
    opts = AgentOptions(group=_multicast_group(group), port=disc_port, ttl=ttl,
                        interface=interface, interval=interval, hold_time=hold,
                        key=read_key_file(key_file) if key_file else None,
                        multicast=not no_multicast, canary_interval=canary_interval,
                        registry=registry, insecure_discovery=insecure_discovery,
                        discovery=discovery, ssl=s.ssl_files(),
                        metrics=MetricsOptions(
                            parse_address(metrics_address) if metrics_address else None,
                            check_textfile(metrics_textfile) if metrics_textfile else None),
                        runner=_run_command)
    if opts.registry:
        from ovsvnet.registry.model import normalize_remotes
        normalize_remotes(opts.registry)  # a typo is an error now, not a silent retry loop
    log.setup()
    # One agent per OVS: the pidfile lock (default beside OVS's own pidfiles) is taken before
    # anything else, so a second agent is refused instead of taking the first's socket.
    lock = PidFile(pidfile or os.path.join(s.rundir, "ovsvnet-agent.pid"))
    lock.acquire()
    try:
        Agent(s.host, opts).run()
    finally:
        lock.release()


@click.command(epilog="""\b
Examples:
  ovsvnet keygen /etc/ovsvnet/discovery.key       # then copy it to every host (mode 0600)
  ovsvnet agent --key-file /etc/ovsvnet/discovery.key
  ovsvnet keygen /etc/ovsvnet/ipsec.secret        # the IPsec secret (docs/security.md)""")
@click.argument("path", type=click.Path(dir_okay=False))
def keygen(path: str) -> None:
    """Write a new random key to PATH (32 random bytes, base64, mode 0600; never overwrites).

    The same file serves as the agents' discovery key (--key-file) or as the IPsec secret
    (external_ids:ovsvnet-ipsec-secret-file). Copy it to the other hosts over a channel you
    trust (scp), never in clear.
    """
    from ovsvnet.system import keyfiles
    keyfiles.write_key(path)
    click.echo(f"wrote a new key to {path} (mode 0600)")


def _run_command(argv: list[str], prog: str, host: Any) -> tuple[int, str, str]:
    """How the agent runs a command the CLI handed over: the CLI itself, on its host."""
    from ovsvnet.cli.root import run_captured  # the root group, imported when first needed
    return run_captured(argv, prog, host)
