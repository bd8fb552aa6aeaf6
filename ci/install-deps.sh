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
fi

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
"$venv/bin/pip" install -q -e "${here}[test,bench]"
"$venv/bin/python" -c 'import ovs.json, sys; sys.exit(ovs.json.PARSER != "C")' \
  || echo "install-deps: warning: python-ovs without its C JSON parser (slow commands)" >&2
