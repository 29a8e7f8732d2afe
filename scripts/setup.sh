#!/usr/bin/env bash
# Installs what building, running and testing isomgr needs on Debian/Ubuntu, idempotently:
# system packages, the Rust toolchain check, and a running systemd-udevd. Needs root.
set -euo pipefail

packages=(
  build-essential pkg-config libudev-dev libclang-dev
  fuse3 libfuse3-dev udev util-linux e2fsprogs squashfs-tools
  genisoimage xorriso libarchive-tools fuseiso hyperfine inotify-tools
  nginx curl  # tests/web.rs: a real web server in front of the root
  xfsprogs  # tests/mkiso_reflink.rs: an XFS scratch file system that shares blocks
  # tests/udf.rs: UDF images made by other tools, and 7-Zip as an independent UDF reader
  udftools python3-pycdlib p7zip-full
  # systemd-analyze verify of the unit, and man(1) for its Documentation= pages
  systemd man-db
  # scripts/kernel-vm.sh: a guest with Debian's kernel, for hosts without iso9660
  qemu-system-x86 busybox-static
  # tests/mkiso_boot.rs: mkiso's El Torito images booted in QEMU (qemu-system-x86 above) with
  # isolinux and GRUB (i386-pc) under SeaBIOS, GRUB (grub-mkstandalone) in a FAT image under OVMF
  isolinux syslinux-common ovmf grub-efi-amd64-bin grub-pc-bin grub-common mtools dosfstools
  syslinux-utils fdisk  # isohybrid and sfdisk, to check mkiso --isohybrid-mbr's first sector
  syslinux  # its installer, for floppy and hard disk images booted by emulation
  gdisk  # sgdisk, to check the GPT of mkiso --isohybrid-gpt-basdat
  ipxe  # its ipxe.iso, a distribution's image served and remastered
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (apt-get, loop devices, FUSE mounts)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tests/mkiso_boot.rs: Debian's memtest86+ images (their UEFI boot image is an appended
# partition), unpacked only: installing the package would add it to this machine's GRUB menu.
memtest=/var/cache/isomgr-tests/memtest86+
if [ ! -e "$memtest/usr/lib/memtest86+/memtest86+x64.iso" ]; then
  echo "setup: unpacking memtest86+ into $memtest"
  work=$(mktemp -d)
  chmod 755 "$work" && chown _apt "$work" 2>/dev/null || true  # apt downloads as _apt
  mkdir -p "$memtest"
  (cd "$work" && apt-get download -qq memtest86+ >/dev/null && dpkg -x memtest86+_*.deb "$memtest")
  rm -rf "$work"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain (rustup from apt)"
    apt-get install -y -qq rustup >/dev/null 2>&1 || apt-get install -y -qq cargo >/dev/null
    command -v rustup >/dev/null 2>&1 && rustup default stable >/dev/null
  fi
fi

# udev: the drives source and its tests listen to real udev events.
if ! pgrep -x systemd-udevd >/dev/null 2>&1; then
  for udevd in /lib/systemd/systemd-udevd /usr/lib/systemd/systemd-udevd; do
    if [ -x "$udevd" ]; then
      "$udevd" --daemon
      udevadm trigger --action=add --subsystem-match=block >/dev/null 2>&1 || true
      udevadm settle --timeout=10 || true
      break
    fi
  done
fi

# Loop devices and FUSE.
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
