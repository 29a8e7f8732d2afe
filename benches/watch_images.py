#!/usr/bin/env python3
"""Makes many small ISO images that differ only in their volume label, for benches/watch.sh.

One image is made with genisoimage (-J -R -no-pad) from a tiny tree holding `hello.txt`; every
other image is a copy with the label patched in place: the primary volume descriptor's volume
identifier (bytes 40..72, a-characters padded with spaces) and, in every Joliet supplementary
volume descriptor, the same field in UCS-2 big-endian. blkid and isomgr then report the new label.

    watch_images.py OUT_DIR PREFIX COUNT   -> OUT_DIR/<prefix><i>.iso, labels <PREFIX><i>

The directory is filled once: a `.complete` marker holding the count is written last, and a
directory with a matching marker is left as it is.
"""

import os
import subprocess
import sys
import tempfile

SECTOR = 2048
KNOWN_FILE = "hello.txt"
KNOWN_CONTENT = b"hello from a watched image\n"


def base_image() -> bytes:
    with tempfile.TemporaryDirectory(prefix="isomgr-watch-img.") as tmp:
        src = os.path.join(tmp, "src")
        os.mkdir(src)
        with open(os.path.join(src, KNOWN_FILE), "wb") as f:
            f.write(KNOWN_CONTENT)
        out = os.path.join(tmp, "base.iso")
        subprocess.run(
            ["genisoimage", "-quiet", "-no-pad", "-J", "-R", "-V", "BASE", "-o", out, src],
            check=True,
        )
        with open(out, "rb") as f:
            return f.read()


def label_fields(img: bytes):
    """(offset, encoding) of every volume identifier to patch: PVD and Joliet SVDs."""
    fields = []
    for sector in range(16, 16 + 64):
        d = img[sector * SECTOR:(sector + 1) * SECTOR]
        if len(d) < SECTOR or d[1:6] != b"CD001":
            raise ValueError(f"no volume descriptor at sector {sector}")
        kind = d[0]
        if kind == 255:
            return fields
        if kind == 1:
            fields.append((sector * SECTOR + 40, "ascii"))
        elif kind == 2 and d[88:90] == b"%/" and d[90:91] in (b"@", b"C", b"E"):
            fields.append((sector * SECTOR + 40, "utf-16-be"))
    raise ValueError("no volume descriptor set terminator")


def patched(img: bytes, fields, label: str) -> bytes:
    buf = bytearray(img)
    for off, enc in fields:
        if enc == "ascii":
            raw = label.encode("ascii").ljust(32, b" ")
        else:
            raw = label.encode("utf-16-be")
            raw = raw + " ".encode("utf-16-be") * ((32 - len(raw)) // 2)
        if len(raw) != 32:
            raise ValueError(f"label {label!r} too long")
        buf[off:off + 32] = raw
    return bytes(buf)


def make(out_dir: str, prefix: str, count: int) -> None:
    marker = os.path.join(out_dir, ".complete")
    try:
        with open(marker) as f:
            if f.read().strip() == str(count):
                return
    except FileNotFoundError:
        pass
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):
        os.unlink(os.path.join(out_dir, name))
    img = base_image()
    fields = label_fields(img)
    width = max(4, len(str(count - 1)))
    for i in range(count):
        label = f"{prefix.upper()}{i:0{width}d}"
        with open(os.path.join(out_dir, f"{label.lower()}.iso"), "wb") as f:
            f.write(patched(img, fields, label))
    with open(marker, "w") as f:
        f.write(f"{count}\n")


def labels(out_dir: str):
    """Sorted (file name, label) pairs of a directory made by make()."""
    return [(n, n[:-4].upper()) for n in sorted(os.listdir(out_dir)) if n.endswith(".iso")]


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: watch_images.py OUT_DIR PREFIX COUNT")
    make(sys.argv[1], sys.argv[2], int(sys.argv[3]))
