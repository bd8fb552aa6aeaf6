"""Host-level commands: setup (and, as they land, doctor, insmod, demo, the vn verbs)."""

from __future__ import annotations

import click

from ovsvnet import ops
from ovsvnet.cli import Session, _print_created, pass_session, report_sync
from ovsvnet.config import VnetConfig
from ovsvnet.vnetid import VnetId, default_vnif_name


@click.command(epilog="""\b
Examples:
  ovsvnet setup                   # check the host and prepare OVS
  ovsvnet setup --default-vnets   # also vnets 2, 3, 4 like Xen's vnet module""")
@click.option("--default-vnets", is_flag=True,
              help="Create Xen's test vnets 2, 3 and 4 (vnetifs vnif0002..vnif0004).")
@pass_session
def setup(s: Session, default_vnets: bool) -> None:
    """Prepare this host (and optionally create the old module's default vnets)."""
    view = ops.host_view(s.host)
    click.echo(f"datapath {view['datapath_type']}, tunnel endpoint "
               f"{view['local_ip'] or 'unknown'}, underlay MTU {view['underlay_mtu']} "
               f"({view['underlay_mtu_source']}), vnet MTU {view['vnet_mtu']}")
    if default_vnets:
        cfgs = [VnetConfig.build(VnetId(n), vnetif=default_vnif_name(VnetId(n)))
                for n in (2, 3, 4)]
        created, report = ops.create_many(s.host, cfgs, may_exist=True)
        for cfg in cfgs:
            _print_created(cfg, cfg.id in created, s.host)
        report_sync(report)


def register(cli: click.Group) -> None:
    """Add this module's commands to the main group (called by ovsvnet.cli)."""
    cli.add_command(setup)
