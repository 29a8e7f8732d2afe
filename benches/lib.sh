# shellcheck shell=bash
# Shared helpers for the isomgr benchmarks in benches/. Source it; it defines functions only
# (and BENCH_* defaults) and runs nothing.
#
# Environment (all optional):
#   ISOMGR           isomgr binary to time; unset: `cargo build --release` at the repo root
#   BENCH_CACHE_DIR  where generated inputs and compiled helpers live (/var/tmp/isomgr-bench)
#   BENCH_RUNS       timed runs per measurement, the median is reported (7)
#   BENCH_WARMUP     untimed runs before those (2)
#   BENCH_QUICK=1    smoke run: 1 run, no warm-up; each benchmark also shrinks its inputs
#   BENCH_TIMER      hyperfine (default where installed) or bash (EPOCHREALTIME loop)

# shellcheck disable=SC2034 # used by the benchmarks that source this file
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_CACHE_DIR=${BENCH_CACHE_DIR:-/var/tmp/isomgr-bench}
BENCH_QUICK=${BENCH_QUICK:-0}
if [[ $BENCH_QUICK == 1 ]]; then
	BENCH_RUNS=${BENCH_RUNS:-1}
	BENCH_WARMUP=${BENCH_WARMUP:-0}
else
	BENCH_RUNS=${BENCH_RUNS:-7}
	BENCH_WARMUP=${BENCH_WARMUP:-2}
fi
if [[ -z ${BENCH_TIMER:-} ]]; then
	if command -v hyperfine >/dev/null; then BENCH_TIMER=hyperfine; else BENCH_TIMER=bash; fi
fi

bench_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 1; }

# bench_need CMD...: fail naming each missing command.
bench_need() {
	local c missing=()
	for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
	((${#missing[@]} == 0)) || bench_die "missing command(s): ${missing[*]}"
}

# bench_cache SUBDIR: print (and create) a directory under BENCH_CACHE_DIR.
bench_cache() {
	local d=$BENCH_CACHE_DIR/$1
	mkdir -p "$d" || bench_die "cannot create cache directory $d"
	printf '%s\n' "$d"
}

# bench_isomgr: set ISOMGR to the binary to time. Honours ISOMGR from the environment;
# otherwise builds the release binary of the checkout the current directory is in.
bench_isomgr() {
	if [[ -n ${ISOMGR:-} ]]; then
		[[ -x $ISOMGR ]] || ISOMGR=$(command -v "$ISOMGR") || bench_die "ISOMGR=$ISOMGR is not executable"
		bench_log "timing ISOMGR=$ISOMGR (not built)"
		return
	fi
	bench_need cargo git
	local root target
	root=$(git rev-parse --show-toplevel) || bench_die "not inside a git checkout: $PWD"
	bench_log "building isomgr (release) in $root"
	(cd "$root" && cargo build --release --quiet --bin isomgr) || bench_die "cargo build --release failed in $root"
	target=${CARGO_TARGET_DIR:-$root/target}
	[[ $target == /* ]] || target=$root/$target
	ISOMGR=$target/release/isomgr
	[[ -x $ISOMGR ]] || bench_die "build gave no binary at $ISOMGR"
}

# bench_cc SRC OUT: compile a C helper with gcc -O2 unless OUT is newer than SRC.
bench_cc() {
	local src=$1 out=$2
	if [[ ! -x $out || $src -nt $out ]]; then
		bench_need gcc
		gcc -O2 -Wall -Wextra -o "$out.tmp" "$src" || bench_die "compiling $src failed"
		mv -f "$out.tmp" "$out"
	fi
}

# bench_warm PATH...: read every regular file under PATH once, so timings are warm-cache.
bench_warm() {
	find "$@" -type f -print0 | xargs -0 -r cat >/dev/null
}

# bench_time_ms CMD [ARG...]: run CMD (stdout to /dev/null) BENCH_WARMUP times untimed, then
# BENCH_RUNS times timed, and print the median wall time in milliseconds (%.1f). Override the
# counts for one call with RUNS=n WARMUP=n before the call. A failing run is fatal.
bench_time_ms() {
	local runs=${RUNS:-$BENCH_RUNS} warmup=${WARMUP:-$BENCH_WARMUP}
	if [[ $BENCH_TIMER == hyperfine ]]; then
		local json cmd
		json=$(mktemp) && cmd=$(printf '%q ' "$@")
		if ! hyperfine -N --style none --output null --warmup "$warmup" --runs "$runs" \
			--export-json "$json" -- "$cmd" >/dev/null 2>"$json.err"; then
			cat "$json.err" >&2
			rm -f "$json" "$json.err"
			bench_die "failed: ${cmd:0:200}"
		fi
		python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["results"][0]["median"] * 1000))' "$json"
		rm -f "$json" "$json.err"
		return
	fi
	# stderr goes to a file as under hyperfine (no progress display), shown if the run fails.
	local i t0 t1 err times=()
	err=$(mktemp)
	for ((i = 0; i < warmup + runs; i++)); do
		t0=$EPOCHREALTIME
		if ! "$@" >/dev/null 2>"$err"; then
			cat "$err" >&2
			rm -f "$err"
			bench_die "failed: $(printf "%q " "$@" | head -c 200)"
		fi
		t1=$EPOCHREALTIME
		((i < warmup)) || times+=("$t0 $t1")
	done
	rm -f "$err"
	printf '%s\n' "${times[@]}" | python3 -c '
import statistics, sys
d = [float(b) - float(a) for a, b in (l.split() for l in sys.stdin)]
print("%.1f" % (statistics.median(d) * 1000))'
}

# bench_load: the 1-minute load average, for the report; warns when other work is running
# (load above half the CPUs), since that skews every figure.
bench_load() {
	local load
	read -r load _ </proc/loadavg
	if python3 -c 'import os,sys; sys.exit(float(sys.argv[1]) <= os.cpu_count() / 2)' "$load"; then
		bench_log "warning: load average $load on $(nproc) CPU(s): other work is running, timings will be noisy"
	fi
	printf '%s\n' "$load"
}

# bench_ratio A B: A / B with two decimals, "-" where either is missing or B is zero.
bench_ratio() {
	python3 -c '
import sys
try:
    a, b = float(sys.argv[1]), float(sys.argv[2])
    print("%.2f" % (a / b) if b else "-")
except ValueError:
    print("-")' "$1" "$2"
}

# bench_verdict VALUE OP LIMIT: PASS or FAIL for VALUE OP LIMIT (OP one of <= >= < >),
# "-" when VALUE is missing.
bench_verdict() {
	python3 -c '
import operator, sys
ops = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
try:
    print("PASS" if ops[sys.argv[2]](float(sys.argv[1]), float(sys.argv[3])) else "FAIL")
except ValueError:
    print("-")' "$1" "$2" "$3"
}

# bench_table: read tab-separated rows on stdin (first row the header), print aligned columns.
bench_table() {
	column -t -s $'\t'
}
