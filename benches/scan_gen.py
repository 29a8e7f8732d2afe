#!/usr/bin/env python3
"""Write COUNT distinct copies of a small ISO9660 image, each with its own volume label.

Usage: scan_gen.py TEMPLATE.iso OUTDIR COUNT [PER_DIR]

Copies go to OUTDIR/dNNN/scanCOUNT-NNNNN.iso, PER_DIR (default 100) per subdirectory, like a
drop tree. Each copy gets the label Scan<COUNT>_<NNNNN> patched into the primary volume
descriptor (sector 16, bytes 40..72, d-characters, space padded) and, when the template has a
Joliet supplementary descriptor, into it too (UCS-2 big-endian, at most 16 characters). The
labels vary in the way real discs do, so a scanner has to pick the label the way blkid does:
  i % 3 == 0: PVD and Joliet both upper case           SCAN1000_00003
  i % 3 == 1: Joliet carries mixed case                Scan1000_00004 (PVD SCAN1000_00004)
  i % 3 == 2: label longer than Joliet's 16 characters SCAN1000_00005_LONG_LABEL (PVD whole,
              Joliet its first 16 characters; blkid joins the two)
The template's size must equal the volume size it declares (genisoimage -no-pad), so every copy
is complete. OUTDIR must not exist; it is written as OUTDIR.tmp and renamed when done.
"""
import os
import struct
import sys

SECTOR = 2048
PVD_LBA = 16
VOLUME_ID = slice(40, 72)
JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")
MAX_DESCRIPTORS = 32


def descriptors(image):
    """Yield (lba, type) of each volume descriptor up to the set terminator (ECMA-119 8.1)."""
    for lba in range(PVD_LBA, PVD_LBA + MAX_DESCRIPTORS):
        sector = image[lba * SECTOR:(lba + 1) * SECTOR]
        if len(sector) < SECTOR or sector[1:6] != b"CD001":
            raise SystemExit(f"template: no volume descriptor set terminator by sector {lba}")
        yield lba, sector[0], sector
        if sector[0] == 255:
            return


def labels(count, i):
    """(pvd_label, joliet_label) of copy i."""
    base = f"SCAN{count}_{i:05d}"
    if i % 3 == 0:
        return base, base
    if i % 3 == 1:
        return base, f"Scan{count}_{i:05d}"
    long = (base + "_LONG_LABEL")[:32]
    return long, long[:16]


def main():
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__.split("\n\n")[1])
    template, outdir, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    per_dir = int(sys.argv[4]) if len(sys.argv) == 5 else 100
    image = bytearray(open(template, "rb").read())

    pvd = None
    joliet = None
    for lba, kind, sector in descriptors(image):
        if kind == 1 and pvd is None:
            pvd = lba * SECTOR
        elif kind == 2 and sector[88:91] in JOLIET_ESCAPES and joliet is None:
            joliet = lba * SECTOR
    if pvd is None:
        raise SystemExit(f"{template}: no primary volume descriptor")
    blocks = struct.unpack_from("<I", image, pvd + 80)[0]
    block_size = struct.unpack_from("<H", image, pvd + 128)[0]
    if blocks * block_size != len(image):
        raise SystemExit(f"{template}: {len(image)} bytes but the volume declares "
                         f"{blocks * block_size}; make it with genisoimage -no-pad")

    tmp = outdir + ".tmp"
    if os.path.exists(outdir):
        raise SystemExit(f"{outdir}: already exists")
    for i in range(count):
        sub = os.path.join(tmp, f"d{i // per_dir:03d}")
        if i % per_dir == 0:
            os.makedirs(sub, exist_ok=True)
        plabel, jlabel = labels(count, i)
        image[pvd + VOLUME_ID.start:pvd + VOLUME_ID.stop] = plabel.encode("ascii").ljust(32, b" ")
        if joliet is not None:
            image[joliet + VOLUME_ID.start:joliet + VOLUME_ID.stop] = \
                jlabel.ljust(16).encode("utf-16-be")
        with open(os.path.join(sub, f"scan{count}-{i:05d}.iso"), "wb") as f:
            f.write(image)
    os.rename(tmp, outdir)


if __name__ == "__main__":
    main()
