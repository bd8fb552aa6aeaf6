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

python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e "${here}[test,bench]"
