"""Commands for the programs ovsvnet plugs into: the libvirt hook's XML reader and shell
completion scripts."""

from __future__ import annotations

import os
import sys

import click

SHELLS = ("bash", "zsh", "fish")


@click.command("libvirt-bridges", hidden=True, epilog="""\b
Examples:
  virsh dumpxml dom1 | ovsvnet libvirt-bridges
  ovsvnet libvirt-bridges < /etc/libvirt/qemu/networks/net97.xml""")
def libvirt_bridges() -> None:
    """Print the bridges a libvirt domain/network XML on stdin names: 'BRIDGE ovs|plain'.

    Used by scripts/network-vnet as a libvirt hook (it needs no OVS connection).
    """
    from ovsvnet.libvirt import MAX_XML
    from ovsvnet.libvirt import libvirt_bridges as parse
    for name, ovs in parse(sys.stdin.read(MAX_XML + 1)):
        click.echo(f"{name} {'ovs' if ovs else 'plain'}")


@click.command(epilog="""\b
Examples:
  eval "$(ovsvnet completion bash)"                       # this shell
  ovsvnet completion bash > /etc/bash_completion.d/ovsvnet
  ovsvnet completion zsh > "${fpath[1]}/_ovsvnet"
  ovsvnet completion fish > ~/.config/fish/completions/ovsvnet.fish
  vn completion bash > /etc/bash_completion.d/vn

\b
Same as click's own: _OVSVNET_COMPLETE=bash_source ovsvnet""")
@click.argument("shell", required=False, type=click.Choice(SHELLS), metavar="[bash|zsh|fish]")
def completion(shell: str | None) -> None:
    """Print the shell completion script for bash, zsh or fish (default: $SHELL)."""
    from click.shell_completion import get_completion_class
    if shell is None:
        guess = os.path.basename(os.environ.get("SHELL", "bash"))
        shell = guess if guess in SHELLS else "bash"
    root = click.get_current_context().find_root()
    prog = root.info_name or "ovsvnet"
    var = f"_{prog}_COMPLETE".replace("-", "_").upper()
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - SHELLS are click's own
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(root.command, {}, prog, var).source())
