#!/usr/bin/env bash
# The kernel lane: Open vSwitch's kernel datapath and real IPsec ESP, in a qemu guest.
#
#   bash ci/kernel-lane.sh [pytest args...]        (as root; see README "The kernel lane")
#
# Boots Debian's linux-image-cloud-amd64 (openvswitch.ko, vport-*.ko, esp4.ko) in qemu, with
# this machine's own root file system shared read-only over virtio-fs (tmpfs/overlay for the
# writable directories, nothing copied, no disk image), runs tests/kernel inside with
# OVSVNET_LAB_DATAPATH=system plus the throughput comparison (bench/kernel_lane.py), and
# returns their logs and exit code through a second, writable share: build/kernel-lane/.
#
# Downloads only from the Debian archive (apt). The cloud kernel is *not* installed: its
# .deb is unpacked under $OVSVNET_KERNEL_LANE_CACHE (default /var/cache/ovsvnet-kernel-lane).
# KVM is used when a stock kernel boots with it, else TCG (software emulation; this
# machine's /dev/kvm is the paravirtual PVM flavour, which cannot run a stock kernel).
#
# Host safety (DESIGN.md section 5): qemu runs with -nic none (no tap, no interface in the
# root namespace); the virtiofsd daemons and qemu are this script's children, stopped by pid.
#
# Environment: OVSVNET_KERNEL_LANE_ACCEL=kvm|tcg (skip the probe), _TIMEOUT (seconds for the
# guest, default 2400), _MEM (MiB, default 3072), _CPUS (default: all), _CACHE, _OUT,
# _BENCH=0 (skip the throughput run), _BENCH_SECONDS (iperf3 -t, default 5), _LEVELS=auth,conf
# (the reduced lane: build only these levels' vnets; tests of the others skip),
# _BOOT_TIMEOUT (seconds for the guest to reach its root file system, default 300).
#
# It never skips: a missing qemu, no TCG, too little memory, no mount namespaces, a guest
# that does not boot, or tests that skip inside the guest for anything but the level
# filter each fail the lane with the reason (it runs in .ci/run on every submission).
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cache=${OVSVNET_KERNEL_LANE_CACHE:-/var/cache/ovsvnet-kernel-lane}
out=${OVSVNET_KERNEL_LANE_OUT:-$here/build/kernel-lane}
guest_timeout=${OVSVNET_KERNEL_LANE_TIMEOUT:-2400}
mem=${OVSVNET_KERNEL_LANE_MEM:-3072}
cpus=${OVSVNET_KERNEL_LANE_CPUS:-$(nproc)}
boot_timeout=${OVSVNET_KERNEL_LANE_BOOT_TIMEOUT:-300}
t_start=$(date +%s)
log() { echo "kernel-lane: $(date +%H:%M:%S) $*" >&2; }
die() { echo "kernel-lane: cannot run: $*" >&2; exit 2; }
phases=()
phase() { phases+=("$1 $(( $(date +%s) - t_phase ))s"); t_phase=$(date +%s); }
t_phase=$t_start

[ "$(id -u)" = 0 ] || die "run as root (qemu, virtiofsd and the guest's labs need it)"

# -- 1. packages (Debian archive only) --------------------------------------------------------
# qemu-system-x86 brings /usr/lib/qemu/virtiofsd; busybox-static and cpio build the
# initramfs; strongswan (starter + charon) is the IKE daemon ovs-monitor-ipsec drives inside
# the guest, which runs this host's binaries from the shared root. libstrongswan-standard-plugins
# has charon's gcm (and openssl) plugins: without them charon cannot build the monitor's IKE
# proposal (aes256gcm16-sha256-modp2048) and no IKE SA ever comes up. It is only a
# Recommends of libstrongswan, which --no-install-recommends leaves out.
apt_packages=(qemu-system-x86 busybox-static cpio strongswan-starter strongswan-charon
              strongswan-libcharon libstrongswan-standard-plugins openvswitch-ipsec iperf3
              tcpdump kmod)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep package scripts from starting host services (strongSwan, OVS).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
  rm -f /usr/sbin/policy-rc.d; trap - EXIT
fi
if [ ! -x "$here/.venv/bin/python" ]; then
  log "no .venv: running ci/install-deps.sh"
  bash "$here/ci/install-deps.sh"
fi
phase packages

# -- preflight: everything qemu/TCG needs, each missing piece named ---------------------------
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (qemu-system-x86)"
[ -x /usr/lib/qemu/virtiofsd ] || die "/usr/lib/qemu/virtiofsd is missing (qemu-system-x86)"
[ -x /bin/busybox ] || die "/bin/busybox is missing (busybox-static)"
qemu-system-x86_64 -accel help 2>&1 | grep -qx tcg \
  || die "this qemu-system-x86_64 has no TCG (software emulation): $(qemu-system-x86_64 \
         -accel help 2>&1 | tr '\n' ' ')"
avail=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
[ "$avail" -ge $(( mem + 512 )) ] \
  || die "the guest needs ${mem} MiB plus 512 MiB for qemu and virtiofsd; ${avail} MiB available (OVSVNET_KERNEL_LANE_MEM)"
unshare -m --propagation private true 2>/dev/null \
  || die "cannot create a mount namespace (unshare -m): virtiofsd shares / read-only from one (an unprivileged container?)"

# -- 2. the cloud kernel, unpacked (not installed) -------------------------------------------
mkdir -p "$cache"
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
       | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -1)
if [ -z "$kpkg" ]; then
  apt-get update -qq
  kpkg=$(apt-cache depends linux-image-cloud-amd64 \
         | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -1)
fi
[ -n "$kpkg" ] || { echo "kernel-lane: no linux-image-cloud-amd64 in apt" >&2; exit 1; }
release=${kpkg#linux-image-}
kroot=$cache/$release
if [ ! -e "$kroot/.complete" ]; then
  log "fetching $kpkg from the Debian archive"
  rm -rf "$kroot" "$cache/debs"; mkdir -p "$cache/debs" "$kroot"
  (cd "$cache/debs" && chown _apt: . 2>/dev/null; apt-get download -q "$kpkg" >/dev/null)
  dpkg-deb -x "$cache"/debs/"$kpkg"_*.deb "$kroot"
  depmod -b "$kroot" "$release"
  touch "$kroot/.complete"
fi
vmlinuz=$kroot/boot/vmlinuz-$release
moddir=$kroot/lib/modules/$release
phase kernel

# -- 3. initramfs: busybox + the virtio-fs and overlay modules + ci/kernel-lane/init --------
initrd=$cache/initrd-$release.img
rd=$(mktemp -d "$cache/rd.XXXXXX")
mkdir -p "$rd/bin" "$rd/modules" "$rd/proc" "$rd/sys" "$rd/dev" "$rd/newroot"
cp /bin/busybox "$rd/bin/busybox"
cp "$here/ci/kernel-lane/init" "$rd/init"; chmod 755 "$rd/init"
: > "$rd/modules.order"
while read -r _ path _; do
  name=$(basename "$path" .ko)
  cp "$path" "$rd/modules/$name.ko"
  echo "$name" >> "$rd/modules.order"
done < <(for m in virtio_pci virtiofs overlay; do
           modprobe -d "$kroot" -S "$release" --show-depends "$m"; done \
         | awk '$1 == "insmod" && !seen[$2]++')
(cd "$rd" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$initrd.tmp"
mv "$initrd.tmp" "$initrd"
rm -rf "$rd"
phase initramfs

# -- 4. shares, accelerator, boot ----------------------------------------------------------
run_id=$(date -u +%Y%m%dT%H%M%SZ)
rundir=$out/$run_id
mkdir -p "$rundir"
ln -sfn "$run_id" "$out/latest"
work=$(mktemp -d /tmp/ovsvnet-kl.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The root share: a read-only bind of / in a private mount namespace of virtiofsd's own
# (the guest mounts it read-only too); the results share: build/kernel-lane/<run>, writable.
virtiofsd=/usr/lib/qemu/virtiofsd
start_fs() {  # tag source ro|rw
  local sock=$work/$1.sock
  if [ "$3" = ro ]; then
    mkdir -p "$work/$1.root"
    # shellcheck disable=SC2016  # expanded by the inner sh
    unshare -m --propagation private sh -c \
      'mount --bind / "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"' \
      sh "$work/$1.root" "$virtiofsd" --socket-path="$sock" -o source="$work/$1.root" \
      -o sandbox=chroot -o cache=always -o no_posix_lock -o log_level=err \
      >"$work/$1.log" 2>&1 &
  else
    "$virtiofsd" --socket-path="$sock" -o source="$2" -o sandbox=chroot -o cache=none \
      -o log_level=err >"$work/$1.log" 2>&1 &
  fi
  pids+=($!)
  for _ in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.1; done
  echo "kernel-lane: virtiofsd for $1 did not start: $(cat "$work/$1.log")" >&2
  return 1
}

qemu_argv() {  # accel kl_args...: sets the array qemu
  local accel=$1; shift
  local cpu=max acc=tcg,thread=multi
  if [ "$accel" = kvm ]; then cpu=host; acc=kvm; fi
  # shellcheck disable=SC2054  # qemu's option values contain commas
  qemu=(qemu-system-x86_64 -accel "$acc" -cpu "$cpu" -smp "$cpus" -m "${mem}M"
    -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -numa node,memdev=mem
    -kernel "$vmlinuz" -initrd "$initrd" -nic none -display none -monitor none
    -serial stdio -no-reboot
    -append "console=ttyS0 panic=-1 quiet loglevel=4 $*")
  if [ "$1" != kl_probe=1 ]; then  # virtiofsd serves one connection, then exits
    # shellcheck disable=SC2054
    qemu+=(-chardev "socket,id=fs0,path=$work/rootfs.sock"
      -device vhost-user-fs-pci,chardev=fs0,tag=rootfs
      -chardev "socket,id=fs1,path=$work/klout.sock"
      -device vhost-user-fs-pci,chardev=fs1,tag=klout)
  fi
}

accel=${OVSVNET_KERNEL_LANE_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  if [ -w /dev/kvm ]; then
    # A stock kernel either reaches the initramfs under KVM within seconds or never does.
    t0=$(date +%s)
    qemu_argv kvm kl_probe=1
    # in a subshell that outlives qemu, so bash's "Aborted" (qemu aborts on PVM) lands in
    # kvm-probe.log instead of the lane's output
    (timeout -k 5 30 "${qemu[@]}" </dev/null; exit $?) >"$rundir/kvm-probe.log" 2>&1 || true
    if grep -q KERNEL-LANE-PROBE-OK "$rundir/kvm-probe.log"; then
      accel=kvm
    fi
    log "KVM probe: $( [ $accel = kvm ] && echo usable || echo 'not usable (see kvm-probe.log)'), $(( $(date +%s) - t0 ))s"
  fi
fi
start_fs rootfs / ro
start_fs klout "$rundir" rw
log "booting $release with $accel, ${cpus} CPUs, ${mem} MiB; guest timeout ${guest_timeout}s"
printf '%s\n' "$@" > "$rundir/pytest-args"
echo "$accel" > "$rundir/accel"
t_boot=$(date +%s)
# pytest inside gets the guest's time minus a margin, so a slow run still ends with its own
# summary instead of a killed guest
pytest_timeout=$(( guest_timeout > 600 ? guest_timeout - 150 : guest_timeout * 3 / 4 ))
set +e
qemu_argv "$accel" "kl_guest=$here/ci/kernel-lane/guest.sh" "kl_modules=$moddir" \
  "kl_repo=$here" "kl_bench=${OVSVNET_KERNEL_LANE_BENCH:-1}" \
  "kl_bench_seconds=${OVSVNET_KERNEL_LANE_BENCH_SECONDS:-5}" \
  "kl_levels=${OVSVNET_KERNEL_LANE_LEVELS:-}" "kl_pytest_timeout=$pytest_timeout"
timeout -k 30 "$guest_timeout" "${qemu[@]}" </dev/null > "$rundir/console.log" 2>&1 &
qpid=$!
pids+=("$qpid")
tail -n +1 -f --pid="$qpid" "$rundir/console.log" | sed -u 's/^/  guest| /' >&2 &
# A guest that never reaches its root file system (qemu stuck, TCG far too slow) fails now,
# not after the whole guest timeout.
booted=0
while kill -0 "$qpid" 2>/dev/null; do
  if grep -q '^kernel-lane init: root mounted' "$rundir/console.log"; then booted=1; break; fi
  if [ $(( $(date +%s) - t_boot )) -ge "$boot_timeout" ]; then
    echo "kernel-lane: the guest did not reach its root file system within ${boot_timeout}s" \
         "under $accel; stopping qemu" >&2
    kill "$qpid" 2>/dev/null
    break
  fi
  sleep 1
done
wait "$qpid"
qrc=$?
set -e
t_end=$(date +%s)
phase guest
log "guest ran $(( t_end - t_boot ))s (qemu exit $qrc); total $(( t_end - t_start ))s"

# -- 5. results -----------------------------------------------------------------------------
rc=1
if [ -s "$rundir/rc" ]; then
  rc=$(cat "$rundir/rc")
elif [ "$booted" = 0 ]; then
  echo "kernel-lane: the guest never booted (qemu exit $qrc); its console:" >&2
  tail -n 30 "$rundir/console.log" >&2
elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  echo "kernel-lane: the guest timed out after ${guest_timeout}s" >&2
else
  echo "kernel-lane: the guest wrote no result (qemu exit $qrc)" >&2
fi
if [ -s "$rundir/summary.txt" ]; then
  cat "$rundir/summary.txt"
elif [ -s "$rundir/pytest.log" ]; then  # no summary: the end of what pytest said
  tail -n 40 "$rundir/pytest.log"
fi
log "timings: ${phases[*]}, total $(( $(date +%s) - t_start ))s"
log "logs: $rundir (pytest: pytest.log, throughput: throughput.json, console: console.log)"
log "result: $( [ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc)")"
exit "$rc"
