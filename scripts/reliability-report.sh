#!/usr/bin/env bash
# Runs each reliability test target in full (ISOMGR_FULL=1, release build, --nocapture) and
# prints one table: test, the figure lines it printed (`name: key=value ...`), PASS/FAIL.
# A target that does not exist (yet) is skipped with a note. Needs what the tests need: root,
# FUSE, loop devices (scripts/setup.sh installs the tools). Exit status 1 if any test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
TARGETS=(crash churn yank web races incomplete hostile limits)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
rows=()
for t in "${TARGETS[@]}"; do
    if [[ ! -f "tests/$t.rs" ]]; then
        rows+=("$t|(no tests/$t.rs yet: skipped)|SKIP")
        continue
    fi
    echo "== $t" >&2
    if ISOMGR_FULL=1 cargo test --release --test "$t" -- --nocapture --test-threads=1 \
        >"$out/$t.log" 2>&1; then
        result=PASS
    else
        result=FAIL
        failed=1
    fi
    # A figure line starts with the target's name; with --nocapture it may follow the
    # harness's "test NAME ... " on the same line.
    figures=$(grep -oE "(^|[. ])$t(-[a-z]+)?: .*" "$out/$t.log" | sed -E 's/^[. ]//' |
        grep -v 'ISOMGR_SEED=' | paste -sd ';' -)
    rows+=("$t|${figures:-(no figure line)}|$result")
    if [[ $result == FAIL ]]; then
        echo "--- $t failed; last lines of its output:" >&2
        tail -n 30 "$out/$t.log" >&2
    fi
done
printf '%-11s %-6s %s\n' TEST RESULT FIGURES
for r in "${rows[@]}"; do
    IFS='|' read -r name figures result <<<"$r"
    printf '%-11s %-6s %s\n' "$name" "$result" "$figures"
done
exit "$failed"
