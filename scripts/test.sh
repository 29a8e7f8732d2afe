#!/usr/bin/env bash
# Runs the whole test suite as CI does: set-up, then every unit and integration test, then
# (on a kernel without iso9660) the kernel-driver tests again in a guest whose kernel has it.
# Tests that need root, a loop device, FUSE or udev fail under CI=true when they cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --all-targets
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"

# The kernel driver and the kernel's reading of mkiso's images need a kernel with iso9660.
# Where this one has none (in /proc/filesystems or as a module), tests/kernel.rs runs again
# under Debian's stock kernel in a throw-away guest (scripts/kernel-vm.sh), where its ISO
# tests must run rather than skip.
has_iso9660() {
  grep -qw iso9660 /proc/filesystems && return 0
  local m=/lib/modules/$(uname -r)
  grep -qs '/isofs\.ko' "$m/modules.builtin" "$m/modules.dep"
}
if has_iso9660; then
  echo "test: this kernel has iso9660; tests/kernel.rs mounted ISOs here"
else
  kernel_tests=$(cargo test --test kernel --no-run --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\/kernel-[0-9a-f]*\)".*/\1/p' | tail -1)
  [ -x "$kernel_tests" ] || { echo "test: no tests/kernel.rs executable" >&2; exit 1; }
  bash scripts/kernel-vm.sh "$kernel_tests" --test-threads=1
fi
