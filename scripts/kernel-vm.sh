#!/usr/bin/env bash
# Runs one command under a kernel that has iso9660, in a throw-away QEMU guest, as root.
#
#   scripts/kernel-vm.sh [--] COMMAND [ARG...]
#
# For hosts whose kernel has no iso9660 (such as the CI machines): the kernel driver and the
# kernel's reading of mkiso's images can then still be tested for real; and, on any host, a
# real optical drive. The guest boots Debian's stock kernel (linux-image-amd64, downloaded once
# with apt into $ISOMGR_VM_CACHE, default /var/cache/isomgr-vm) with this machine's root file
# system shared read-only over virtio-9p under an overlay that keeps writes in memory, fresh
# tmpfs on /tmp, /run and /var/tmp, and no network. systemd-udevd runs in it as on a booted
# system (every device replayed at start). COMMAND runs in the current directory with CI=true
# and ISOMGR_EXPECT_ISO9660=1 (tests/kernel.rs then fails rather than skips its ISO tests);
# its output is printed and its exit status is returned. The current directory and those of
# COMMAND and of its arguments that are absolute paths show through the guest's tmpfs.
#
# The drives: two empty SCSI CD-ROM drives (QEMU's scsi-cd), ids cd0 and cd1 at SCSI targets
# 0 and 1 ($ISOMGR_VM_DRIVES lists them in that order). The guest changes their discs, presses
# their eject buttons and unplugs them through QEMU's monitor: each line written to the
# control port $ISOMGR_VM_CONTROL (/dev/virtio-ports/isomgr.control) is one QMP command, and
# its reply comes back as one line ({"return": ...} or {"error": ...}). The images put in must
# be paths the host can read.
#
# As on a stock Debian system, isofs, udf and nls_utf8 are not loaded at boot: the first iso9660
# mount(2) loads them through the kernel's module loader (busybox modprobe in the initramfs).
# Needs root, qemu-system-x86_64 and busybox (static); uses KVM where the CPU offers it (vmx or
# svm), else TCG (a /dev/kvm without them, as in nested VMs, hangs the guest).
set -euo pipefail

[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ]; then
  echo "usage: $0 [--] COMMAND [ARG...]" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "kernel-vm: must run as root (it shares / with the guest)" >&2
  exit 1
fi
for tool in qemu-system-x86_64 apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "kernel-vm: $tool not found (scripts/setup.sh)" >&2; exit 1; }
done
busybox=/bin/busybox
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
  { echo "kernel-vm: no static busybox for the initramfs (apt-get install busybox-static)" >&2; exit 1; }

cache=${ISOMGR_VM_CACHE:-/var/cache/isomgr-vm}
mkdir -p "$cache"

# The kernel: the version linux-image-amd64 depends on, fetched and unpacked once.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
  awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$pkg" ]; then
  echo "kernel-vm: apt knows no linux-image-amd64 (a Debian archive is needed for the guest kernel)" >&2
  exit 1
fi
release=${pkg#linux-image-}
kdir=$cache/$pkg
if [ ! -e "$kdir/.unpacked" ]; then
  echo "kernel-vm: fetching $pkg"
  rm -rf "$kdir" && mkdir -p "$kdir/deb"
  # apt's download sandbox user must be able to write there.
  chown _apt "$kdir/deb" 2>/dev/null || true
  (cd "$kdir/deb" && apt-get download -q "$pkg" >/dev/null)
  dpkg-deb -x "$kdir"/deb/*.deb "$kdir/root"
  rm -rf "$kdir/deb"
  touch "$kdir/.unpacked"
fi
vmlinuz=$kdir/root/boot/vmlinuz-$release
moddir=$kdir/root/lib/modules/$release

# The initramfs: busybox, the modules the guest needs with their dependencies, and /init.
work=$(mktemp -d /tmp/isomgr-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
ird=$work/initramfs
mkdir -p "$ird"/{bin,sbin,dev,proc,sys,lower,rw,host,lib/modules/"$release"}
cp "$busybox" "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
ln -s ../bin/busybox "$ird/sbin/modprobe"
[ -e "$moddir/modules.dep" ] || "$busybox" depmod -b "$kdir/root" "$release"
# Loaded at boot; isofs, udf and nls_utf8 are left to the kernel's module loader, as on Debian.
boot_modules=(virtio_pci 9pnet_virtio 9p overlay loop crc32c_generic squashfs ext4 fuse
  virtio_scsi sr_mod sd_mod virtio_console)
printf '%s\n' "${boot_modules[@]}" >"$ird/boot-modules"
wanted=("${boot_modules[@]}" isofs udf nls_utf8)
declare -A need=()
add() {  # a module and, through modules.dep, everything it needs
  local line rel dep
  line=$(grep -E "(^|/)$1\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -1)
  [ -n "$line" ] || { echo "kernel-vm: $1 is not a module of $release" >&2; exit 1; }
  rel=${line%%:*}
  [ -n "${need[$rel]:-}" ] && return
  need[$rel]=1
  for dep in ${line#*:}; do
    dep=${dep##*/}
    add "${dep%%.ko*}"
  done
}
for m in "${wanted[@]}"; do add "$m"; done
for rel in "${!need[@]}"; do
  mkdir -p "$ird/lib/modules/$release/$(dirname "$rel")"
  cp "$moddir/$rel" "$ird/lib/modules/$release/$rel"
done
"$busybox" depmod -b "$ird" "$release"

# The command, quoted for bash (printf %q), and where it runs.
cmd=$(printf '%q ' "$@")
guest_env="CI=true ISOMGR_EXPECT_ISO9660=1"
guest_env+=" ISOMGR_VM_CONTROL=/dev/virtio-ports/isomgr.control ISOMGR_VM_DRIVES='cd0 cd1'"
# systemd's tools (udevadm control, settle, trigger) refuse to act in a chroot unless told.
guest_env+=" SYSTEMD_IGNORE_CHROOT=1"
printf 'cd %q && exec env %s %s\n' "$PWD" "$guest_env" "$cmd" >"$ird/command"
{
  printf '%s\n' "$PWD"
  exe=$(command -v "$1" || true)
  case "$exe" in /*) dirname "$(realpath "$exe")" ;; esac
  for arg in "$@"; do
    case "$arg" in /*) [ -e "$arg" ] && dirname "$(realpath "$arg")" ;; esac
  done
} >"$ird/through"
cat >"$ird/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "kernel-vm-guest: $*"; echo "isomgr-vm-status=125"; poweroff -f; }
while read -r m; do
  modprobe "$m" || fail "modprobe $m"
done </boot-modules
echo /sbin/modprobe >/proc/sys/kernel/modprobe
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose host /lower ||
  fail "mounting the host's root"
# Writes land in memory: an overlay over the host's root, tmpfs on the usual scratch places.
mount -t tmpfs tmpfs /rw && mkdir /rw/upper /rw/work &&
  mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /host ||
  fail "the overlay over the host's root"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
for d in /tmp /run /var/tmp /dev/shm; do
  mount -t tmpfs -o mode=1777 tmpfs "/host$d" || fail "tmpfs on $d"
done
# The working directory and the command's own (a checkout or a target directory may live in
# /tmp) show through those, read-only.
while read -r dir; do
  case "$dir/" in
  /tmp/?* | /run/?* | /var/tmp/?* | /dev/shm/?*)
    mkdir -p "/host$dir" && mount --bind "/lower$dir" "/host$dir" || fail "binding $dir"
    ;;
  esac
done </through
# The guest kernel's modules where tools look for them (isomgr reads modules.dep there).
mkdir -p /host/lib/modules/$(uname -r)
mount --bind /lib/modules/$(uname -r) /host/lib/modules/$(uname -r)
echo "kernel-vm-guest: $(uname -r), $(grep -c . /proc/filesystems) file systems, isofs not loaded yet"
# udev, started as a booting system starts it: the daemon, then every device present replayed.
SYSTEMD_IGNORE_CHROOT=1 chroot /host /bin/sh -c '/lib/systemd/systemd-udevd --daemon &&
  udevadm trigger --type=subsystems --action=add && udevadm trigger --type=devices --action=add &&
  udevadm settle' || fail "starting udev"
chroot /host /bin/bash -c "$(cat /command)" </dev/null
echo "isomgr-vm-status=$?"
sync
poweroff -f
EOF
chmod +x "$ird/init"
(cd "$ird" && find . | "$busybox" cpio -o -H newc 2>/dev/null) >"$work/initramfs.cpio"

# KVM only where the CPU shows virtualisation: a nested /dev/kvm without vmx/svm hangs the guest.
accel=tcg
if [ -w /dev/kvm ] && grep -qw -e vmx -e svm /proc/cpuinfo; then
  accel=kvm
fi
echo "kernel-vm: booting $release ($accel) to run: $cmd"
log=$work/console.log
# The host's side of the guest's control port: each line the guest writes there is a QMP
# command, run by QEMU's monitor; its reply (the line with "return" or "error") goes back.
for f in ctl qmp; do mkfifo "$work/$f.in" "$work/$f.out"; done
relay() {
  local line reply
  exec 3>"$work/qmp.in" 4<"$work/qmp.out" 5>"$work/ctl.in" 6<"$work/ctl.out"
  qmp_reply() {
    while IFS= read -r reply <&4; do
      reply=${reply%$'\r'}
      case $reply in '{"return"'* | '{"error"'*) printf '%s\n' "$reply"; return ;; esac
    done
  }
  IFS= read -r line <&4
  echo '{"execute": "qmp_capabilities"}' >&3
  qmp_reply >/dev/null
  while IFS= read -r line <&6; do
    line=${line%$'\r'}
    printf '%s\n' "$line" >&3
    qmp_reply >&5
    # One line per command, the state queries the tests poll with left out.
    case $line in *'"query-block"'*) ;; *) echo "kernel-vm: qmp: $line -> ${reply:0:160}" >&2 ;; esac
  done
}
relay &
relay_pid=$!
trap 'kill "$relay_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
timeout "${ISOMGR_VM_TIMEOUT:-1800}" qemu-system-x86_64 \
  -accel "$accel" -cpu max -smp "$(nproc)" -m "${ISOMGR_VM_MEMORY:-3072}" \
  -kernel "$vmlinuz" -initrd "$work/initramfs.cpio" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
  -virtfs "local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap" \
  -device virtio-scsi-pci,id=scsi0 \
  -drive if=none,id=cd0drive,media=cdrom,readonly=on \
  -device scsi-cd,bus=scsi0.0,scsi-id=0,drive=cd0drive,id=cd0 \
  -drive if=none,id=cd1drive,media=cdrom,readonly=on \
  -device scsi-cd,bus=scsi0.0,scsi-id=1,drive=cd1drive,id=cd1 \
  -device virtio-serial-pci -chardev pipe,id=ctl,path="$work/ctl" \
  -device virtserialport,chardev=ctl,name=isomgr.control \
  -chardev pipe,id=qmp,path="$work/qmp" -mon chardev=qmp,mode=control \
  -nic none -display none -serial stdio -monitor none -no-reboot </dev/null | tee "$log" ||
  true
status=$(sed -n 's/^isomgr-vm-status=\([0-9]*\).*/\1/p' "$log" | tail -1)
if [ -z "$status" ]; then
  echo "kernel-vm: the guest stopped without reporting a status" >&2
  exit 124
fi
exit "$status"
