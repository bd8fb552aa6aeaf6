#!/bin/bash
# PID 1 inside the kernel lane's guest (after ci/kernel-lane/init): load the kernel modules,
# run tests/kernel with the kernel datapath, then the throughput comparison; write logs,
# a summary and the exit code to /run/kl-out (build/kernel-lane/<run> on the host); power off.
set -u
out=/run/kl-out
# shellcheck disable=SC2013  # words, not lines
arg() { local w; for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "${w#*=}" ;; esac; done; }
repo=$(arg kl_repo)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis OVSVNET_LAB_DATAPATH=system TERM=dumb \
  OVSVNET_KERNEL_LANE_OUT=/run/kl-out
# devtmpfs has no /dev/fd (bash's process substitution needs it) and no std* links
ln -sfn /proc/self/fd /dev/fd
for i in 0 1 2; do ln -sfn "/proc/self/fd/$i" "/dev/$(echo stdin stdout stderr | cut -d' ' -f$((i + 1)))"; done
poweroff() { sync; echo o > /proc/sysrq-trigger; sleep 30; }
trap poweroff EXIT
exec > >(tee -a "$out/guest.log") 2>&1
t0=$(date +%s)
say() { echo "kernel-lane guest: +$(( $(date +%s) - t0 ))s $*"; }

mkdir -p /dev/pts /dev/shm /sys/fs/cgroup
mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
hostname kernel-lane
ip link set lo up
modules=(openvswitch vport-vxlan vport-geneve vport-gre veth bridge vxlan geneve ip_gre
         esp4 xfrm_user xfrm_algo authenc echainiv seqiv gcm ghash-generic aesni_intel
         aes_generic crypto_null hmac sha256_generic sha1_generic cbc ctr tun)
for m in "${modules[@]}"; do modprobe "$m" 2>/dev/null || echo "modprobe $m: failed"; done
say "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB;" \
    "loaded: $(for m in openvswitch vport_vxlan vport_geneve vport_gre esp4 xfrm_user; do
                 [ -d /sys/module/$m ] && printf '%s ' $m; done)"
levels=$(arg kl_levels)
[ -n "$levels" ] && export OVSVNET_KL_LEVELS=$levels
cd "$repo" || { echo 1 > "$out/rc"; exit 1; }
mapfile -t pytest_args < <(grep -v '^$' "$out/pytest-args" 2>/dev/null)
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(tests/kernel)
say "pytest ${pytest_args[*]}"
ptimeout=$(arg kl_pytest_timeout)
timeout -k 10 "${ptimeout:-1800}" .venv/bin/python -m pytest -v -rA -s -p no:cacheprovider \
  --junitxml="$out/junit.xml" "${pytest_args[@]}" \
  2>&1 | tee "$out/pytest.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && say "pytest timed out after ${ptimeout:-1800}s"
say "pytest exit $rc"
# A lane test that skips here proves nothing (a module that did not load, strongSwan without
# its gcm plugin, ...): a failure, except for the levels the reduced lane leaves out.
unexpected=$(grep -E '^SKIPPED ' "$out/pytest.log" | grep -v "is not in this run's world")
if [ -n "$unexpected" ]; then
  say "tests skipped in the kernel lane (a failure here):"
  echo "$unexpected"
  [ "$rc" = 0 ] && rc=1
fi
brc=0
if [ "$(arg kl_bench)" = 1 ]; then
  say "throughput: python -m bench.kernel_lane"
  timeout -k 10 900 .venv/bin/python -m bench.kernel_lane --seconds "$(arg kl_bench_seconds)" \
    --out "$out/throughput.json" 2>&1 | tee "$out/throughput.log"
  brc=${PIPESTATUS[0]}
  say "throughput exit $brc"
fi
{
  echo "kernel lane summary: kernel $(uname -r), $(nproc) CPUs"
  grep -E '^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) |^=+ .* in [0-9.]+s' "$out/pytest.log"
  [ -n "$unexpected" ] && echo "unexpected skips: a failure"
  grep -E '^(KL|  )' "$out/throughput.log" 2>/dev/null
  echo "pytest exit $rc, throughput exit $brc, guest time $(( $(date +%s) - t0 ))s"
} > "$out/summary.txt"
[ "$rc" = 0 ] && [ "$brc" = 0 ] && echo 0 > "$out/rc" || echo "${rc/#0/$brc}" > "$out/rc"
