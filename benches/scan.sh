#!/usr/bin/env bash
# Scan latency: `isomgr scan` over 100, 1,000 and 10,000 small ISO images, timed in the same
# run beside
#   floor         open + pread(2 KiB at 32 KiB) + close per file, one thread (benches/floor.c)
#   blkid -p      one `blkid -p -o value -s LABEL` call over all the images
#   blkid/image   one `blkid -p -o value -s LABEL FILE` call per image, what a script does
# and prints the medians with ratios. Targets, at 10,000 images, warm cache:
#   isomgr scan --json <= 1.25 x floor, and >= 5 x faster than the single blkid -p call.
# Before timing it checks that the labels `isomgr scan --json` reports for random images equal
# what blkid -p reports, and exits 1 on any mismatch.
#
# Usage: benches/scan.sh          (from anywhere inside an isomgr checkout; builds it --release)
# Environment, besides lib.sh's (ISOMGR, BENCH_CACHE_DIR, BENCH_RUNS, BENCH_WARMUP, BENCH_TIMER):
#   BENCH_QUICK=1       smoke run: the 100-image set only, 1 run each
#   SCAN_CACHE          where the image sets live ($BENCH_CACHE_DIR/scan); made once, reused
#   SCAN_SETS           set sizes to run ("100 1000 10000"; quick: "100")
#   SCAN_CHECK_SAMPLE   images whose label is checked against blkid (20)
#   SCAN_ROUNDS         alternating rounds of floor and scan --json (11; quick: 1)
#   BENCH_STRICT=1      exit 1 when a target is missed, too
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET_SET=10000
TARGET_FLOOR_RATIO=1.25  # isomgr scan --json / floor, at most
TARGET_BLKID_SPEEDUP=5   # blkid -p one call / isomgr scan --json, at least

SCAN_CACHE=${SCAN_CACHE:-$BENCH_CACHE_DIR/scan}
if [[ $BENCH_QUICK == 1 ]]; then SCAN_SETS=${SCAN_SETS:-100}; else SCAN_SETS=${SCAN_SETS:-100 1000 10000}; fi
SCAN_CHECK_SAMPLE=${SCAN_CHECK_SAMPLE:-20}
if [[ $BENCH_QUICK == 1 ]]; then SCAN_ROUNDS=${SCAN_ROUNDS:-1}; else SCAN_ROUNDS=${SCAN_ROUNDS:-11}; fi
[[ $SCAN_ROUNDS =~ ^[1-9][0-9]*$ ]] || bench_die "SCAN_ROUNDS: not a count: $SCAN_ROUNDS"
read -r -a sets <<<"$SCAN_SETS"

bench_need genisoimage blkid python3 xargs find shuf column
mkdir -p "$SCAN_CACHE" || bench_die "cannot create $SCAN_CACHE"

# --- inputs ---------------------------------------------------------------------------------

# One small, realistic image (Rock Ridge + Joliet, a few files, a subdirectory, no padding so
# its size is its volume size); the sets are copies of it with the label patched.
template=$SCAN_CACHE/template.iso
if [[ ! -s $template ]]; then
	tree=$(mktemp -d)
	mkdir -p "$tree/docs/More Files" "$tree/boot"
	printf 'scan benchmark image\n' >"$tree/README.TXT"
	printf 'mixed case and spaces\n' >"$tree/docs/More Files/Release Notes.txt"
	head -c 6000 /dev/zero | tr '\0' 'x' >"$tree/boot/kernel.bin"
	genisoimage -quiet -no-pad -J -r -V TEMPLATE -o "$template.tmp" "$tree" ||
		bench_die "genisoimage failed making $template"
	rm -rf "$tree"
	mv -f "$template.tmp" "$template"
fi

for n in "${sets[@]}"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || bench_die "SCAN_SETS: not a count: $n"
	dir=$SCAN_CACHE/set-$n
	if [[ ! -d $dir ]]; then
		bench_log "generating $n images in $dir"
		rm -rf "$dir.tmp"
		python3 "$BENCH_DIR/scan_gen.py" "$template" "$dir" "$n" 100
	fi
	# The file list (NUL-separated, sorted) that the blkid runs take.
	if [[ ! -s $dir.list || $dir -nt $dir.list ]]; then
		find "$dir" -type f -name '*.iso' -print0 | sort -z >"$dir.list"
	fi
	got=$(tr -cd '\0' <"$dir.list" | wc -c)
	((got == n)) || bench_die "$dir holds $got images, not $n; remove it to regenerate"
done

floor=$(bench_cache bin)/floor
bench_cc "$BENCH_DIR/floor.c" "$floor"
bench_isomgr

for n in "${sets[@]}"; do
	out=$("$floor" -v "$SCAN_CACHE/set-$n" 2>&1 >/dev/null) || bench_die "floor failed: $out"
	[[ $out == "files=$n short=0" ]] || bench_die "floor over set-$n: $out"
done

bench_log "warming the page cache"
for n in "${sets[@]}"; do bench_warm "$SCAN_CACHE/set-$n"; done

# --- correctness: labels equal blkid's -------------------------------------------------------

largest=${sets[-1]}
for n in "${sets[@]}"; do if ((n > largest)); then largest=$n; fi; done
mapfile -d '' sample < <(shuf -z -n "$SCAN_CHECK_SAMPLE" "$SCAN_CACHE/set-$largest.list")
json=$(mktemp)
trap 'rm -f "$json"' EXIT
"$ISOMGR" scan --json "${sample[@]}" >"$json" || bench_die "$ISOMGR scan --json over ${#sample[@]} images failed"
expected=()
for f in "${sample[@]}"; do
	expected+=("$f" "$(blkid -p -o value -s LABEL "$f")")
done
python3 - "$json" "${expected[@]}" <<'EOF' || bench_die "isomgr scan labels differ from blkid -p (above)"
import json, os, sys
text = open(sys.argv[1]).read()
try:
    entries = json.loads(text)
except ValueError as e:
    sys.exit(f"isomgr scan --json printed no JSON array ({e}): {text[:200]!r}")
by_path = {os.path.realpath(e["path"]): e for e in entries}
pairs = sys.argv[2:]
bad = 0
for path, want in zip(pairs[::2], pairs[1::2]):
    e = by_path.get(os.path.realpath(path))
    if e is None:
        print(f"mismatch: {path}: not in isomgr scan --json output", file=sys.stderr)
        bad += 1
    elif e.get("label") != want or e.get("complete") is not True or e.get("fs") != "iso9660":
        print(f"mismatch: {path}: isomgr label={e.get('label')!r} fs={e.get('fs')!r} "
              f"complete={e.get('complete')!r}; blkid -p label={want!r}", file=sys.stderr)
        bad += 1
print(f"labels checked against blkid -p: {len(pairs) // 2} images, {bad} mismatches", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
"$ISOMGR" scan --json "$SCAN_CACHE/set-$largest" >"$json" || bench_die "$ISOMGR scan --json $SCAN_CACHE/set-$largest failed"
count=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$json") ||
	bench_die "isomgr scan --json over set-$largest printed no JSON array"
((count == largest)) || bench_die "isomgr scan --json over set-$largest listed $count images, not $largest"

# --- timings --------------------------------------------------------------------------------

# median_of MS...: the median of the figures (%.1f).
median_of() {
	python3 -c 'import statistics, sys; print("%.1f" % statistics.median(map(float, sys.argv[1:])))' "$@"
}

xargs_max=$(xargs --show-limits </dev/null 2>&1 | sed -n 's/^Maximum length of command we could actually use: //p')
[[ -n $xargs_max ]] || bench_die "cannot read xargs --show-limits"

load_start=$(bench_load)
rows=()
verdicts=()
notes=()
for n in "${sets[@]}"; do
	dir=$SCAN_CACHE/set-$n
	list=$dir.list
	# The pair the target compares alternates: SCAN_ROUNDS rounds of the floor then scan --json,
	# each the median of its runs; each side reports the median of its rounds, and json/floor
	# is the median of the rounds' ratios. A machine that slows down for a few seconds (a
	# shared VM does, by a third and more) then weighs on both sides of a ratio alike, not on
	# whichever happened to run then.
	bench_log "set of $n: floor and isomgr scan --json, $SCAN_ROUNDS round(s)"
	floors=() jsons=() ratios=()
	for ((round = 0; round < SCAN_ROUNDS; round++)); do
		floors+=("$(bench_time_ms "$floor" "$dir")")
		jsons+=("$(bench_time_ms "$ISOMGR" scan --json "$dir")")
		ratios+=("$(bench_ratio "${jsons[-1]}" "${floors[-1]}")")
	done
	t_floor=$(median_of "${floors[@]}")
	t_json=$(median_of "${jsons[@]}")
	r_floor=$(python3 -c 'import statistics, sys; print("%.2f" % statistics.median(map(float, sys.argv[1:])))' "${ratios[@]}")
	((SCAN_ROUNDS == 1)) || notes+=("set of $n: floor rounds ${floors[*]} ms; scan --json rounds ${jsons[*]} ms; ratios ${ratios[*]}")
	bench_log "set of $n: isomgr scan (text)"
	t_text=$(bench_time_ms "$ISOMGR" scan "$dir")

	# All paths on one blkid command line when ARG_MAX allows (xargs -s at its maximum);
	# otherwise xargs splits and the calls are counted.
	calls=$(xargs -0 -s "$xargs_max" -a "$list" echo | wc -l)
	bench_log "set of $n: blkid -p, $calls call(s)"
	t_blkid=$(bench_time_ms xargs -0 -s "$xargs_max" -a "$list" blkid -p -o value -s LABEL)
	((calls == 1)) || notes+=("set of $n: the paths exceed ARG_MAX; blkid -p ran as $calls calls")

	# One blkid per image: about 1 ms each, so fewer runs as the set grows (one at 10,000).
	if [[ $BENCH_QUICK == 1 && $n -ge $TARGET_SET ]]; then
		t_each=skipped
		notes+=("set of $n: blkid per image skipped (BENCH_QUICK=1)")
	else
		runs=$((3000 / n))
		((runs >= 1)) || runs=1
		((runs <= BENCH_RUNS)) || runs=$BENCH_RUNS
		warmup=$BENCH_WARMUP
		((n < 1000)) || warmup=0
		bench_log "set of $n: blkid per image, $runs run(s)"
		t_each=$(RUNS=$runs WARMUP=$warmup bench_time_ms xargs -0 -n 1 -a "$list" blkid -p -o value -s LABEL)
		((runs >= BENCH_RUNS)) || notes+=("set of $n: blkid per image is the median of $runs run(s)")
	fi

	r_text=$(bench_ratio "$t_text" "$t_floor")
	r_blkid=$(bench_ratio "$t_blkid" "$t_json")
	r_each=$(bench_ratio "$t_each" "$t_json")
	if ((n == TARGET_SET)); then
		v_floor=$(bench_verdict "$r_floor" '<=' "$TARGET_FLOOR_RATIO")
		v_blkid=$(bench_verdict "$r_blkid" '>=' "$TARGET_BLKID_SPEEDUP")
		r_floor+=" $v_floor"
		r_blkid+=" $v_blkid"
		verdicts+=("$v_floor" "$v_blkid")
	fi
	rows+=("$n	$t_floor	$t_json	$t_text	$t_blkid	$t_each	$r_floor	$r_text	$r_blkid	$r_each")
done

# --- report ---------------------------------------------------------------------------------

echo
echo "isomgr scan latency, warm cache: median of $BENCH_RUNS run(s) after $BENCH_WARMUP warm-up(s), timer $BENCH_TIMER; floor and scan --json: median of $SCAN_ROUNDS alternating round(s) of those, json/floor the median of the rounds' ratios"
echo "$(nproc) CPU(s), $(uname -sr), $(blkid --version | head -1), images in $SCAN_CACHE ($(stat -f -c %T "$SCAN_CACHE"))"
echo "isomgr: $ISOMGR; load average $load_start at the start of timing, $(bench_load) at the end"
echo
{
	printf 'images\tfloor ms\tscan --json ms\tscan text ms\tblkid -p ms\tblkid/image ms\tjson/floor\ttext/floor\tblkid-p/json\tblkid-image/json\n'
	printf '%s\n' "${rows[@]}"
} | bench_table
echo
((${#notes[@]} == 0)) || printf 'note: %s\n' "${notes[@]}"
if [[ " ${sets[*]} " == *" $TARGET_SET "* ]]; then
	echo "targets at $TARGET_SET images: scan --json <= ${TARGET_FLOOR_RATIO}x floor: ${verdicts[0]};" \
		"blkid -p (one call) >= ${TARGET_BLKID_SPEEDUP}x slower than scan --json: ${verdicts[1]}"
else
	echo "targets (at $TARGET_SET images: scan --json <= ${TARGET_FLOOR_RATIO}x floor, >= ${TARGET_BLKID_SPEEDUP}x faster than blkid -p) not evaluated: set of $TARGET_SET not run"
fi

if [[ ${BENCH_STRICT:-0} == 1 && " ${verdicts[*]} " == *" FAIL "* ]]; then
	exit 1
fi
