#!/usr/bin/env bash
# Builds isomgr and runs the watcher on its defaults: images dropped into /srv/iso-drop appear
# as directories under /srv/isos. Extra arguments go to `isomgr watch`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet
exec ./target/release/isomgr watch "$@"
