#!/usr/bin/env bash
# UDF seeds for the reader's fuzz target, made at run time rather than committed (1 MiB each):
# mkudffs volumes in each layout it writes (revisions, allocation descriptors, strategy 4096,
# sparable, VAT and metadata partitions, blocks of 512 bytes) and a pycdlib UDF 2.60
# bridge (tests/common/pycdlib_bridge.py) with directories, files, symlinks and a non-ASCII name. (With blocks of 4096 bytes the
# anchor alone is 1 MiB in, past the target's -max_len.)
# Needs mkudffs (udftools) and python3-pycdlib (scripts/setup.sh installs both).
#
# Usage: bash fuzz/seed-udf.sh [DIR]     (default: fuzz/corpus/reader)
set -euo pipefail
out=${1:-$(dirname "$0")/corpus/reader}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

seed() { # NAME BLOCK_SIZE MKUDFFS_OPTION...
    local name=$1 bs=$2
    shift 2
    truncate -s 1M "$work/$name"
    mkudffs -b "$bs" --label="$name" "$@" "$work/$name" >/dev/null
}
seed default 2048
seed rev102 2048 --udfrev=1.02
seed rev150 2048 --udfrev=1.50
seed rev201 2048 --udfrev=2.01
seed ad-short 2048 --ad=short
seed ad-inicb 2048 --ad=inicb
seed noefe 2048 --noefe
seed strategy4096 2048 --strategy=4096
seed unalloctable 2048 --space=unalloctable
seed dvdram 2048 --media-type=dvdram
seed cdrw 2048 --media-type=cdrw --sparspace=32 --spartable=1
seed dvdrw 2048 --media-type=dvdrw --sparspace=32 --spartable=1
seed cdr 2048 --media-type=cdr
seed bdr 2048 --media-type=bdr
seed vat 2048 --vat
seed bs512 512

mkdir -p "$work/tree/a/b/c" "$work/tree/d"
echo hello >"$work/tree/a/x.txt"
head -c 5000 /dev/urandom >"$work/tree/a/b/y.bin"
echo z >"$work/tree/d/ünïcode name.txt"
ln -s ../a/x.txt "$work/tree/d/link"
ln -s /abs/path "$work/tree/abs"
: >"$work/tree/empty"
/usr/bin/python3 "$(dirname "$0")/../tests/common/pycdlib_bridge.py" "$work/tree" \
    "$work/pycdlib-udf260" SEED "This disc holds a UDF file system." >/dev/null

# Incrementally written discs end with their VAT: cut each after its last written block.
python3 - "$work"/cdr "$work"/bdr "$work"/vat <<'PY'
import sys
for path in sys.argv[1:]:
    data = open(path, 'rb').read()
    last = max(i for i in range(0, len(data), 2048) if any(data[i:i + 2048]))
    open(path, 'wb').write(data[:last + 2048])
PY

for f in "$work"/*; do
    [ -f "$f" ] && cp "$f" "$out/udf-$(basename "$f")"
done
echo "fuzz/seed-udf.sh: $(find "$out" -name 'udf-*' | wc -l) UDF seeds in $out"
