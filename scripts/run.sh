#!/usr/bin/env bash
# Builds isomgr and runs its main job on the defaults: identify every image in /srv/iso-drop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet
mkdir -p /srv/iso-drop
exec ./target/release/isomgr scan "${@:-/srv/iso-drop}"
