#!/usr/bin/env bash
# FUSE driver benchmark: isomgr's FUSE driver beside the page cache (the floor) and fuseiso, in one
# run, with ratios and PASS/FAIL against the targets of issue 4:
#   - sequential read of a 1 GiB file: isomgr >= 2x fuseiso
#   - recursive listing of a 10,000-file image: isomgr <= 0.5x fuseiso's time
# Needs root, /dev/fuse, genisoimage, isoinfo and fuseiso. Images are cached in $BENCH_DIR.
# Warm cache: the image files are read once before measuring, so every figure is served from
# the page cache; what differs is the path to it.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/var/tmp/isomgr-bench}
RUNS=${RUNS:-3}
mkdir -p "$BENCH_DIR"
for tool in genisoimage isoinfo fuseiso fusermount dd find; do
  command -v "$tool" >/dev/null || { echo "fuse.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "fuse.sh: must run as root" >&2; exit 1; }

echo "building (release)..." >&2
cargo build --release --quiet --example fuse_serve
SERVE=target/release/examples/fuse_serve

BIG_ISO=$BENCH_DIR/big.iso
MANY_ISO=$BENCH_DIR/many.iso
if [ ! -s "$BIG_ISO" ]; then
  echo "making $BIG_ISO (one 1 GiB file)..." >&2
  rm -rf "$BENCH_DIR/big-src" && mkdir -p "$BENCH_DIR/big-src"
  head -c 1G /dev/urandom >"$BENCH_DIR/big-src/big.bin"
  genisoimage -quiet -R -J -V BIG -o "$BIG_ISO.tmp" "$BENCH_DIR/big-src" && mv "$BIG_ISO.tmp" "$BIG_ISO"
  rm -rf "$BENCH_DIR/big-src"
fi
if [ ! -s "$MANY_ISO" ]; then
  echo "making $MANY_ISO (10,000 files in 100 directories)..." >&2
  rm -rf "$BENCH_DIR/many-src" && mkdir -p "$BENCH_DIR/many-src"
  for d in $(seq -w 0 99); do
    mkdir "$BENCH_DIR/many-src/dir$d"
    for f in $(seq -w 0 99); do printf '%s\n' "$d$f" >"$BENCH_DIR/many-src/dir$d/file$f.txt"; done
  done
  genisoimage -quiet -R -J -V MANY -o "$MANY_ISO.tmp" "$BENCH_DIR/many-src" && mv "$MANY_ISO.tmp" "$MANY_ISO"
  rm -rf "$BENCH_DIR/many-src"
fi

WORK=$(mktemp -d /tmp/isomgr-bench.XXXXXX)
ISOMGR_MNT=$WORK/isomgr
FUSEISO_MNT=$WORK/fuseiso
mkdir -p "$ISOMGR_MNT" "$FUSEISO_MNT"
SERVE_PID=""
cleanup() {
  [ -n "$SERVE_PID" ] && kill -TERM "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
  mountpoint -q "$FUSEISO_MNT" && fusermount -u "$FUSEISO_MNT" 2>/dev/null || true
  mountpoint -q "$ISOMGR_MNT" && umount -l "$ISOMGR_MNT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s%N; }
# seconds between two now() values
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", (b - a) / 1e9 }'; }

start_isomgr() { # NAME=IMAGE
  local fifo=$WORK/ready
  rm -f "$fifo" && mkfifo "$fifo"
  "$SERVE" "$ISOMGR_MNT" "$1" >"$fifo" &
  SERVE_PID=$!
  read -r line <"$fifo"
  [ "$line" = ready ] || { echo "fuse_serve did not start" >&2; exit 1; }
}
stop_isomgr() {
  kill -TERM "$SERVE_PID" && wait "$SERVE_PID" || true
  SERVE_PID=""
}
start_fuseiso() { fuseiso "$1" "$FUSEISO_MNT"; }
stop_fuseiso() { fusermount -u "$FUSEISO_MNT"; }

# Drops the page cache of one file (and nothing else), so its next read goes through its filesystem.
evict() { dd if="$1" iflag=nocache count=0 status=none; }

# Best throughput (GiB/s) of $RUNS reads of $1 with dd bs=1M; extra dd args follow.
# With EVICT=1 the file's own cache is dropped before each run.
best_read() {
  local file=$1; shift
  local best=0 t0 t1 s rate
  for _ in $(seq "$RUNS"); do
    [ "${EVICT:-0}" = 1 ] && evict "$file"
    t0=$(now); dd if="$file" of=/dev/null bs=1M status=none "$@"; t1=$(now)
    s=$(secs "$t0" "$t1")
    rate=$(awk -v s="$s" 'BEGIN { printf "%.2f", 1 / s }')
    best=$(awk -v a="$best" -v b="$rate" 'BEGIN { print (b > a) ? b : a }')
  done
  echo "$best"
}

# Seconds for one recursive listing.
time_list() {
  local t0 t1
  t0=$(now); "$@" >/dev/null; t1=$(now)
  secs "$t0" "$t1"
}
best_list() {
  local best=999999 s
  for _ in $(seq "$RUNS"); do
    s=$(time_list "$@")
    best=$(awk -v a="$best" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
  done
  echo "$best"
}

echo "warming the page cache with both images..." >&2
cat "$BIG_ISO" "$MANY_ISO" >/dev/null

# The floor: the same 1 GiB byte range read straight from the image file.
LBA=$(isoinfo -R -l -i "$BIG_ISO" | sed -n 's/.*\[ *\([0-9]*\) [0-9]*\] *big\.bin *$/\1/p' | head -1)
[ -n "$LBA" ] || { echo "fuse.sh: could not find big.bin's extent with isoinfo" >&2; exit 1; }
FLOOR=$(best_read "$BIG_ISO" iflag=skip_bytes,count_bytes skip=$((LBA * 2048)) count=$((1 << 30)))

start_isomgr big="$BIG_ISO"
ISOMGR_FUSE=$(EVICT=1 best_read "$ISOMGR_MNT/big/big.bin")
cat "$ISOMGR_MNT/big/big.bin" >/dev/null
ISOMGR_CACHED=$(best_read "$ISOMGR_MNT/big/big.bin")
stop_isomgr

start_fuseiso "$BIG_ISO"
FUSEISO_READ=$(EVICT=1 best_read "$FUSEISO_MNT/big.bin")
stop_fuseiso

# Listing: first listing after a fresh mount (nothing cached in the kernel; best of $RUNS
# mounts, like every other figure), then warm. On a small VM the first listing is bimodal:
# each FUSE request wakes the server and then the lister, which costs far more when the
# scheduler has put them on different CPUs than on the same one.
best_cold() { # START STOP DIR
  local best=999999 s
  for _ in $(seq "$RUNS"); do
    $1; s=$(time_list find "$3"); $2
    best=$(awk -v a="$best" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
  done
  echo "$best"
}
start_many_isomgr() { start_isomgr many="$MANY_ISO"; }
start_many_fuseiso() { start_fuseiso "$MANY_ISO"; }
ISOMGR_FIND_COLD=$(best_cold start_many_isomgr stop_isomgr "$ISOMGR_MNT/many")
FUSEISO_FIND_COLD=$(best_cold start_many_fuseiso stop_fuseiso "$FUSEISO_MNT")

start_isomgr many="$MANY_ISO"
ISOMGR_FIND_WARM=$(best_list find "$ISOMGR_MNT/many")
ISOMGR_LSLR=$(best_list ls -lR "$ISOMGR_MNT/many")
COUNT=$(find "$ISOMGR_MNT/many" -type f | wc -l)
stop_isomgr

start_fuseiso "$MANY_ISO"
FUSEISO_FIND_WARM=$(best_list find "$FUSEISO_MNT")
FUSEISO_LSLR=$(best_list ls -lR "$FUSEISO_MNT")
FCOUNT=$(find "$FUSEISO_MNT" -type f | wc -l)
stop_fuseiso

[ "$COUNT" = 10000 ] && [ "$FCOUNT" = 10000 ] || { echo "fuse.sh: file counts $COUNT / $FCOUNT, expected 10000" >&2; exit 1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? (v >= t) : (v <= t); print ok ? "PASS" : "FAIL" }'; }

R_READ=$(ratio "$ISOMGR_FUSE" "$FUSEISO_READ")
R_CACHED=$(ratio "$ISOMGR_CACHED" "$FUSEISO_READ")
R_FIND=$(ratio "$ISOMGR_FIND_COLD" "$FUSEISO_FIND_COLD")
R_FIND_WARM=$(ratio "$ISOMGR_FIND_WARM" "$FUSEISO_FIND_WARM")
R_LSLR=$(ratio "$ISOMGR_LSLR" "$FUSEISO_LSLR")

printf '\n%s, %s, best of %s\n' "$(uname -r)" "$(nproc) cores" "$RUNS"
printf '%-52s %12s %10s %s\n' "measure" "value" "vs fuseiso" "target"
printf '%-52s %9s GiB/s %10s %s\n' "read 1 GiB: image file, same bytes (floor)" "$FLOOR" "$(ratio "$FLOOR" "$FUSEISO_READ")x" ""
printf '%-52s %9s GiB/s %10s %s\n' "read 1 GiB: isomgr FUSE (file's cache dropped)" "$ISOMGR_FUSE" "${R_READ}x" ">= 2x $(verdict "$R_READ" ">=" 2)"
printf '%-52s %9s GiB/s %10s %s\n' "read 1 GiB: isomgr, again (keep_cache page cache)" "$ISOMGR_CACHED" "${R_CACHED}x" ""
printf '%-52s %9s GiB/s %10s %s\n' "read 1 GiB: fuseiso (file's cache dropped)" "$FUSEISO_READ" "1.00x" ""
printf '%-52s %11s s %10s %s\n' "find, 10,000 files, first after mount: isomgr" "$ISOMGR_FIND_COLD" "${R_FIND}x" "<= 0.5x $(verdict "$R_FIND" "<=" 0.5)"
printf '%-52s %11s s %10s %s\n' "find, 10,000 files, first after mount: fuseiso" "$FUSEISO_FIND_COLD" "1.00x" ""
printf '%-52s %11s s %10s %s\n' "find, 10,000 files, warm: isomgr" "$ISOMGR_FIND_WARM" "${R_FIND_WARM}x" ""
printf '%-52s %11s s %10s %s\n' "find, 10,000 files, warm: fuseiso" "$FUSEISO_FIND_WARM" "1.00x" ""
printf '%-52s %11s s %10s %s\n' "ls -lR, 10,000 files, warm: isomgr" "$ISOMGR_LSLR" "${R_LSLR}x" ""
printf '%-52s %11s s %10s %s\n' "ls -lR, 10,000 files, warm: fuseiso" "$FUSEISO_LSLR" "1.00x" ""
