"""scripts/vif-ovsvnet driven as xl's hotplug drives a vif script, against lab hosts.

libxl (tools/libs/light/libxl_linux.c, Xen 4.17) runs ``SCRIPT online|offline type_if=vif``
with ``script``, ``XENBUS_TYPE``, ``XENBUS_PATH=backend/vif/DOMID/DEVID``,
``XENBUS_BASE_PATH`` and ``netdev``, ``vif`` added to its own environment, after writing the
device's keys to xenstore (libxl_nic.c: backend ``bridge``, ``mac``, ``mtu`` only when not
1500, ``vifname``, ``frontend-id``...; frontend ``mtu``; ``/local/domain/D/vm``). There is no
Xen here: a stand-in ``xenstore-read``/``xenstore-write`` on PATH serves exactly those keys
from files, and the backend vif is a veth whose other end sits in a "domU" namespace. The
rest is real: the lab host's OVS, ovsvnet from PATH (no OVSVNET), ``ip``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ovsvnet.lab import Lab, LabHost

from .helpers import ovsvnet as ok

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
VIF = ROOT / "scripts" / "vif-ovsvnet"
EXAMPLE = ROOT / "examples" / "vnet97.sxp"
DOMID, DEVID, UUID = 5, 0, "5b4c1a7e-0000-4000-8000-000000000097"
GUEST_MAC = "00:16:3e:00:00:97"

XENSTORE_READ = """\
#!/bin/sh
# stand-in: the keys xl wrote, one file each under $XS_STORE; relative paths are dom0's
rc=0
for p in "$@"; do
    case $p in /*) f=$XS_STORE$p ;; *) f=$XS_STORE/local/domain/0/$p ;; esac
    if [ -f "$f" ]; then cat "$f"; else echo "couldn't read path $p" >&2; rc=1; fi
done
exit $rc
"""
XENSTORE_WRITE = """\
#!/bin/sh
while [ $# -ge 2 ]; do
    case $1 in /*) f=$XS_STORE$1 ;; *) f=$XS_STORE/local/domain/0/$1 ;; esac
    mkdir -p "$(dirname "$f")" && printf '%s\\n' "$2" > "$f" || exit 1
    echo "$1=$2" >> "$XS_STORE/writes"
    shift 2
done
"""


@pytest.fixture(scope="module")
def net():
    with Lab() as lab:
        lab.add_segment("s1")
        h1, h2 = lab.add_host("h1", "s1"), lab.add_host("h2", "s1")
        for h, other in ((h1, h2), (h2, h1)):
            ok(h, "create", str(EXAMPLE))
            ok(h, "peer-add", other.address)
        lab.add_guest("g2", "h2", "vnet97", ip="10.97.0.2/24", mtu=1450)
        yield lab


class Xl:
    """One domain's vif as xl sets it up: xenstore keys, the backend vif, the hotplug call."""

    def __init__(self, lab: Lab, tmp: Path, name: str, bridge: str, mtu: int | None = None,
                 vifname: str | None = None):
        self.lab, self.host, self.tmp = lab, lab.host("h1"), tmp
        self.vif = f"vif{DOMID}.{DEVID}"
        # the domU: a namespace whose eth0 is the frontend; the backend end is vif5.0 on h1
        self.guest = lab.add_guest(name, "h1", bridge, ip="10.97.0.5/24", mac=GUEST_MAC)
        self.host.vsctl("del-port", self.guest.port)
        self.host.run("ip", "link", "set", self.guest.port, "down")
        self.host.run("ip", "link", "set", self.guest.port, "name", self.vif)
        self.store = tmp / "xenstore"
        be = f"/local/domain/0/backend/vif/{DOMID}/{DEVID}"
        fe = f"/local/domain/{DOMID}/device/vif/{DEVID}"
        keys = {f"{be}/frontend-id": str(DOMID), f"{be}/bridge": bridge, f"{be}/mac": GUEST_MAC,
                f"{be}/handle": str(DEVID), f"{be}/type": "vif", f"{be}/online": "1",
                f"{be}/script": "/etc/xen/scripts/vif-ovsvnet", f"{be}/hotplug-status": "",
                f"{fe}/mac": GUEST_MAC, f"{fe}/mtu": str(mtu or 1500), f"{fe}/handle": "0",
                f"/local/domain/{DOMID}/vm": f"/vm/{UUID}", f"/local/domain/{DOMID}/name": name,
                f"/vm/{UUID}/name": name, f"/vm/{UUID}/uuid": UUID}
        if mtu is not None and mtu != 1500:   # libxl writes the backend mtu only then
            keys[f"{be}/mtu"] = str(mtu)
        if vifname:
            keys[f"{be}/vifname"] = vifname
        for key, value in keys.items():
            f = self.store / key.lstrip("/")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(value + "\n")
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name_, body in (("xenstore-read", XENSTORE_READ), ("xenstore-write", XENSTORE_WRITE)):
            (self.bin / name_).write_text(body)
            (self.bin / name_).chmod(0o755)
        self.defaults = tmp / "default-ovsvnet"   # /etc/default/ovsvnet of a real host
        self.defaults.write_text(f"OVSVNET_DB={self.host.db}\nOVSVNET_SYSLOG=no\n")

    def key(self, path: str) -> str | None:
        f = self.store / path.lstrip("/")
        return f.read_text().strip() if f.exists() else None

    def hotplug(self, action: str, script: Path = VIF, **extra: str
                ) -> subprocess.CompletedProcess[str]:
        """``script action type_if=vif`` with libxl's environment (xl's own: PATH, HOME)."""
        path = f"{self.bin}:{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"
        env = {"PATH": path, "HOME": "/root", "XS_STORE": str(self.store),
               "OVSVNET_DEFAULTS": str(self.defaults), "script": str(script),
               "XENBUS_TYPE": "vif", "XENBUS_PATH": f"backend/vif/{DOMID}/{DEVID}",
               "XENBUS_BASE_PATH": "backend", "netdev": "", "vif": self.vif, **extra}
        return self.host.run("env", "-i", *[f"{k}={v}" for k, v in env.items()], str(script),
                             action, "type_if=vif", check=False, timeout=60)


def iface(host: LabHost, name: str, column: str) -> str:
    return host.vsctl("get", "Interface", name, column).strip()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_vif_script_is_posix_sh_and_shellcheck_clean():
    proc = subprocess.run(["shellcheck", "-s", "sh", str(VIF)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout
    assert VIF.read_text().startswith("#!/bin/sh\n")


def test_online_plugs_the_vif_with_the_vnet_mtu_and_the_owner_offline_removes_it(net, tmp_path):
    h1 = net.host("h1")
    xl = Xl(net, tmp_path, "dom5", "vnet97")
    try:
        proc = xl.hotplug("online")
        assert proc.returncode == 0, proc.stderr
        assert xl.vif in h1.vsctl("list-ports", "vnet97").split()
        ids = h1.vsctl("get", "Interface", xl.vif, "external_ids")
        for part in ('xen-vm-name=dom5', f'xen-vm-uuid="{UUID}"', f'attached-mac="{GUEST_MAC}"'):
            assert part in ids, ids
        assert h1.run("cat", f"/sys/class/net/{xl.vif}/mtu").stdout.strip() == "1450"
        assert iface(h1, xl.vif, "mtu_request") == "1450"
        assert xl.key(f"/local/domain/{DOMID}/device/vif/{DEVID}/mtu") == "1450"  # to netfront
        assert xl.key(f"/local/domain/0/backend/vif/{DOMID}/{DEVID}/hotplug-status") == \
            "connected"
        # vifs shows the guest's MAC and the domain, not the vif's own fe:ff:ff:ff:ff:ff
        vifs = json.loads(ok(h1, "vifs", "97", "--json").stdout)
        row = next(v for v in vifs if v["port"] == xl.vif)
        assert (row["mac"], row["owner"], row["port_mac"]) == (
            GUEST_MAC, f"xen dom5 ({UUID})", "fe:ff:ff:ff:ff:ff")
        # netfront takes the MTU xenstore gives it; then full-size frames cross to h2
        xl.guest.run("ip", "link", "set", "eth0", "mtu", "1450")
        big = xl.guest.run("ping", "-c", "1", "-W", "5", "-M", "do", "-s", "1422", "10.97.0.2",
                           check=False)
        assert big.returncode == 0, big.stdout + big.stderr
        proc = xl.hotplug("offline")
        assert proc.returncode == 0, proc.stderr
        assert xl.vif not in h1.vsctl("list-ports", "vnet97").split()
        assert xl.hotplug("offline").returncode == 0   # again: nothing there, still fine
    finally:
        h1.vsctl("--if-exists", "del-port", xl.vif)
        net.remove_guest("dom5")


def test_mtu_and_vifname_from_the_xl_config(net, tmp_path):
    h1 = net.host("h1")
    xl = Xl(net, tmp_path, "dom6", "vnet97", mtu=1400, vifname="dom6-eth0")
    try:
        proc = xl.hotplug("online")
        assert proc.returncode == 0, proc.stderr
        assert "dom6-eth0" in h1.vsctl("list-ports", "vnet97").split()
        assert iface(h1, "dom6-eth0", "mtu_request") == "1400"
        assert xl.key(f"/local/domain/{DOMID}/device/vif/{DEVID}/mtu") == "1400"
        assert xl.hotplug("offline").returncode == 0
        assert "dom6-eth0" not in h1.vsctl("list-ports", "vnet97").split()
    finally:
        h1.vsctl("--if-exists", "del-port", "dom6-eth0")
        net.remove_guest("dom6")


def test_bridges_that_are_not_vnets_or_vlan_syntax_fail_the_device(net, tmp_path):
    h1 = net.host("h1")
    h1.vsctl("--may-exist", "add-br", "br-plain", "--", "set", "Bridge", "br-plain",
             "datapath_type=netdev")
    xl = Xl(net, tmp_path, "dom7", "vnet97")
    be = tmp_path / "xenstore" / "local/domain/0/backend/vif/5/0"
    try:
        for bridge, words in (("vnet97.10", "BRIDGE.VLAN and BRIDGE:TRUNK"),
                              ("vnet97:10:20", "BRIDGE.VLAN and BRIDGE:TRUNK"),
                              ("br-plain", "not an ovsvnet vnet's bridge"),
                              ("nosuchbr", "not an ovsvnet vnet's bridge")):
            (be / "bridge").write_text(bridge + "\n")
            proc = xl.hotplug("online")
            assert proc.returncode == 1, (bridge, proc.stderr)
            assert words in proc.stderr, proc.stderr
            assert xl.key("/local/domain/0/backend/vif/5/0/hotplug-status") == "error"
            assert words in (xl.key("/local/domain/0/backend/vif/5/0/hotplug-error") or "")
        assert xl.vif not in h1.vsctl("list-ports", "br-plain").split()
        # Open vSwitch unreachable: the device fails with that reason
        (be / "bridge").write_text("vnet97\n")
        xl.defaults.write_text("OVSVNET_DB=unix:/nonexistent/db.sock\nOVSVNET_SYSLOG=no\n")
        proc = xl.hotplug("online")
        assert proc.returncode == 1 and "Open vSwitch does not answer" in proc.stderr
    finally:
        h1.vsctl("--if-exists", "del-port", xl.vif)
        net.remove_guest("dom7")
        h1.vsctl("--if-exists", "del-br", "br-plain")


def test_hands_over_to_xens_vif_openvswitch_when_installed(net, tmp_path):
    """Installed next to Xen's vif-openvswitch, the script checks, sets the MTU, and then
    leaves the port to it, with xl's arguments and environment unchanged."""
    h1 = net.host("h1")
    scripts = tmp_path / "etc-xen-scripts"
    scripts.mkdir()
    shutil.copy(VIF, scripts / "vif-ovsvnet")
    calls = tmp_path / "vos-calls"
    vos = scripts / "vif-openvswitch"
    vos.write_text("#!/bin/sh\n"
                   f'echo "$* vif=$vif XENBUS_PATH=$XENBUS_PATH mtu=$(cat /sys/class/net/$vif/mtu)"'
                   f' >> {calls}\n'
                   'case $1 in online) ovs-vsctl --db="$DB" add-port vnet97 "$vif" ;; '
                   'offline) ovs-vsctl --db="$DB" --if-exists del-port "$vif" ;; esac\n')
    vos.chmod(0o755)
    xl = Xl(net, tmp_path, "dom8", "vnet97")
    try:
        assert xl.hotplug("online", script=scripts / "vif-ovsvnet", DB=h1.db).returncode == 0
        assert iface(h1, xl.vif, "mtu_request") == "1450"
        assert xl.hotplug("offline", script=scripts / "vif-ovsvnet", DB=h1.db).returncode == 0
        assert calls.read_text().splitlines() == [
            f"online type_if=vif vif={xl.vif} XENBUS_PATH=backend/vif/5/0 mtu=1450",
            f"offline type_if=vif vif={xl.vif} XENBUS_PATH=backend/vif/5/0 mtu=1450"]
        assert xl.vif not in h1.vsctl("list-ports", "vnet97").split()
    finally:
        h1.vsctl("--if-exists", "del-port", xl.vif)
        net.remove_guest("dom8")
