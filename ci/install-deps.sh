#!/usr/bin/env bash
# Install everything ovsvnet needs on a Debian 12 host (or a privileged container):
# Open vSwitch userspace tools, network tools for the lab, and a Python virtualenv
# with the package and its test extras. Idempotent; starts no global service.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${OVSVNET_VENV:-$here/.venv}

apt_packages=(
  openvswitch-switch openvswitch-common openvswitch-ipsec python3-openvswitch
  iproute2 iputils-ping ethtool tcpdump iperf3 procps kmod
  python3-venv python3-dev gcc
  shellcheck
  # a private libvirtd in the lab (tests/functional/test_libvirtd.py): no -system package,
  # so no units and no system-wide daemon; busybox-static and cpio make the guest's initramfs
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
  busybox-static cpio
  # ovsvnet map renders with Graphviz; its test opens the HTML page in headless Chromium
  graphviz chromium
  # container recipes (tests/functional/test_containers.py): each runtime runs privately
  # inside a lab host, from a debootstrap root (no image registry is needed)
  debootstrap docker.io podman runc lxd
  # the Debian package (ci/build-deb.sh, tests/functional/test_package.py) and the agent
  # under systemd in a booted Debian root (tests/functional/test_service.py)
  debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-click
  lintian systemd-container man-db
  # OVN as the benchmarks' peer (bench/ovn.py): started per lab by the bench, never globally
  ovn-central ovn-host ovn-common
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d keeps the Debian packages from starting the host's OVS service:
  # ovsvnet's lab and tests run their own daemons and must not touch a global one.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The packages enable their units for the next boot on a host with systemd; ovsvnet's
  # tests and benches run their own private daemons, so keep those off (what this script
  # newly installed only: a host that already ran them keeps its choice).
  if [ -d /run/systemd/system ]; then
    for p in "${missing[@]}"; do
      case "$p" in
        docker.io) units="docker.service docker.socket containerd.service" ;;
        lxd) units="lxd.socket lxd-containers.service" ;;
        ovn-central|ovn-host) units="$p.service" ;;
        *) continue ;;
      esac
      for unit in $units; do systemctl disable --now "$unit" >/dev/null 2>&1 || true; done
    done
  fi
fi
# Nothing of OVN may run system-wide (a bench starts its own per lab, elsewhere).
for f in /var/run/ovn/ovn-northd.pid /var/run/ovn/ovn-controller.pid \
    /var/run/ovn/ovnnb_db.pid /var/run/ovn/ovnsb_db.pid; do
  if [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
    echo "install-deps: a system OVN daemon runs ($f); stop ovn-central/ovn-host first" >&2
    exit 1
  fi
done

# The virtualenv is built on Debian's python3 and sees its site packages, so `ovs` is
# Debian's python3-openvswitch: it has python-ovs's C JSON parser (ovs._json), which PyPI's
# `ovs` sdist does not build. Every command parses the OVSDB snapshot with it; the pure
# Python parser costs ovsvnet 0.5 s per command at 1000 vnets (BENCHMARKS.md).
# libvirt's qemu driver runs guests as this user (libvirt-daemon-system would create it)
getent passwd libvirt-qemu >/dev/null || useradd -r -U -M -s /usr/sbin/nologin libvirt-qemu

python=${PYTHON:-/usr/bin/python3}
if [ -x "$venv/bin/python" ] && ! grep -q '^include-system-site-packages = true' "$venv/pyvenv.cfg"; then
  echo "install-deps: rebuilding $venv on $python with Debian's site packages" >&2
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv --system-site-packages "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
# editable_mode=compat: a .pth line instead of setuptools' import finder, which every Python
# start in the venv paid ~8 ms to import (as much as a command handed to the agent costs)
"$venv/bin/pip" install -q -e "${here}[test,bench]" --config-settings editable_mode=compat
"$venv/bin/python" -c 'import ovs.json, sys; sys.exit(ovs.json.PARSER != "C")' \
  || echo "install-deps: warning: python-ovs without its C JSON parser (slow commands)" >&2
