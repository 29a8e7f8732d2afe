#!/usr/bin/env bash
# Watcher benchmark (`isomgr watch`, FUSE driver), one table with targets and PASS/FAIL:
#   - Event-to-ready: from `mv` into the watched directory until a file inside is readable, p50 and
#     p99 over >= 100 trials, beside a by-hand inotifywait + blkid + fuseiso script in the same run.
#     Target: p50 < 1 ms, p99 < 3 ms.
#   - Start with 10,000 images already present until all are readable. Target: < 0.5 s.
#   - Idle: CPU time and context switches over 30 s with nothing changing (target: none) and RSS
#     with 10,000 images served (target: < 30 MiB).
# The measuring is done by benches/watch_bench.py (sub-millisecond timing); images are made by
# benches/watch_images.py and cached in $BENCH_DIR (watch-events, watch-10000).
# BENCH_QUICK=1: smoke run (20 trials, 1,000 images, 5 s idle). TRIALS, IMAGES, IDLE_SECS override.
# BENCH_SPIN_PAUSE_US=N pauses N us between readiness attempts (default 0: spin).
# BENCH_KEEP=1 keeps the work directory and isomgr's logs (ISOMGR_LOG=debug is passed through).
# Needs root, /dev/fuse, python3, genisoimage, inotifywait (inotify-tools), blkid, fuseiso.
# Start-up: if isomgr runs out of file descriptors (it holds 2 per image), that is a FAIL row; then
# the soft limit is raised if it can be, else the start-up, idle and RSS rows use the most images
# that fit (hard-linked subset), and say so.
# Exit status: 0 all PASS, 3 some FAIL, 1 broken run.
set -euo pipefail
cd "$(dirname "$0")/.."

export BENCH_DIR=${BENCH_DIR:-/var/tmp/isomgr-bench}
for tool in python3 genisoimage inotifywait blkid fuseiso fusermount; do
  command -v "$tool" >/dev/null || { echo "watch.sh: $tool is missing (apt-get install inotify-tools fuseiso genisoimage)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "watch.sh: must run as root" >&2; exit 1; }
[ -c /dev/fuse ] || { echo "watch.sh: /dev/fuse is missing" >&2; exit 1; }

echo "building (release)..." >&2
cargo build --release --quiet --bin isomgr
ISOMGR=$PWD/target/release/isomgr

mkdir -p "$BENCH_DIR"
# Work directory on the same filesystem as the image cache: trials hard-link and rename.
WORK=$(mktemp -d "$BENCH_DIR/watch-run.XXXXXX")
cleanup() {
  [ "${BENCH_KEEP:-}" = 1 ] && { echo "watch.sh: kept $WORK (logs: $WORK/*.log)" >&2; return; }
  # Whatever a broken run left mounted under the work directory, innermost first.
  awk -v w="$WORK/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 benches/watch_bench.py "$ISOMGR" "$WORK" || rc=$?
if [ "${rc:-0}" -ne 0 ] && [ "${rc:-0}" -ne 3 ]; then
  echo "watch.sh: broken run; isomgr logs follow" >&2
  tail -n 20 "$WORK"/*.log >&2 || true
fi
exit "${rc:-0}"
