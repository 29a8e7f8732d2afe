#!/usr/bin/env bash
# Runs the whole test suite as CI does: set-up, then every unit and integration test.
# Tests that need root, a loop device, FUSE or udev fail under CI=true when they cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --all-targets
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"
