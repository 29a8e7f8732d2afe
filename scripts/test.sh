#!/usr/bin/env bash
# Runs the whole test suite as CI does: set-up, then every unit and integration test, then
# in a QEMU guest the real optical drive tests and (on a kernel without iso9660) the
# kernel-driver tests again.
# Tests that need root, a loop device, FUSE or udev fail under CI=true when they cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --all-targets
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"

# A throw-away guest (scripts/kernel-vm.sh) runs what this host cannot:
# - where this kernel has no iso9660 (in /proc/filesystems or as a module), tests/kernel.rs
#   again under Debian's stock kernel, where its ISO tests must run rather than skip;
# - always, the tests of a real optical drive in tests/drives.rs (`#[ignore]`d on the host):
#   the guest has a SCSI CD-ROM drive whose disc and eject button the tests work through
#   QEMU's monitor.
has_iso9660() {
  grep -qw iso9660 /proc/filesystems && return 0
  local m=/lib/modules/$(uname -r)
  grep -qs '/isofs\.ko' "$m/modules.builtin" "$m/modules.dep"
}
test_executable() {
  local exe
  exe=$(cargo test --test "$1" --no-run --message-format=json |
    sed -n "s/.*\"executable\":\"\([^\"]*\/$1-[0-9a-f]*\)\".*/\1/p" | tail -1)
  [ -x "$exe" ] || { echo "test: no tests/$1.rs executable" >&2; exit 1; }
  echo "$exe"
}
drive_tests=$(test_executable drives)
kernel_tests=
if has_iso9660; then
  echo "test: this kernel has iso9660; tests/kernel.rs mounted ISOs here"
else
  kernel_tests=$(test_executable kernel)
fi
bash scripts/kernel-vm.sh sh -c '
  status=0
  if [ -n "$1" ]; then "$1" --test-threads=1 || status=1; fi
  "$2" --ignored --test-threads=1 || status=1
  exit $status' guest "$kernel_tests" "$drive_tests"
