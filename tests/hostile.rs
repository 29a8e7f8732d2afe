//! Hostile images: one hand-assembled image per known ISO9660 parser bug class (directory
//! cycles, continuation loops, relocation abuse, extents past the end or wrapping, absurd sizes,
//! disagreeing both-endian halves, names with '/', NUL, "." or "..", names over 255 bytes,
//! symlinks out of the image). Each is read three ways: the reader API in-process, `isomgr ls
//! -R --json` and `isomgr cat` as child processes (timed, peak RSS from wait4), and a real FUSE
//! mount walked with raw readdir and lstat. Each must be refused with a clean error or served
//! safely: no name with '/' or NUL, no extra "."/"..", no endless tree, symlinks shown as
//! stored and never followed by isomgr itself.
//!
//! A symlink inside the mount is resolved by the kernel on the host side when a local process
//! follows it (an absolute `/etc/shadow` target then names the host's file), exactly as with the
//! kernel's own iso9660 driver; a web server in front of the mount must not follow symlinks
//! (nginx `disable_symlinks on`). So the test never follows one through the mount: it checks the
//! target is shown as stored and that an `O_NOFOLLOW` open refuses it.
//!
//! `HOSTILE_KEEP=DIR` keeps a copy of every assembled image in DIR, to try by hand.

mod common;

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use isomgr::fuse::reopen::FdPool;
use isomgr::fuse::FuseDriver;
use isomgr::iso9660::{Entry, Error, Image, Kind};

const S: usize = 2048;
/// Sectors of every assembled image (192 KiB).
const SECTORS: usize = 96;
const PVD: usize = 16;
const SVD: usize = 17;
const TERM: usize = 18;
const ROOT: u32 = 20;
const SUB: u32 = 21;
const SUB2: u32 = 22;
const JROOT: u32 = 24;
const DATA: u32 = 30;
const CE_A: u32 = 40;
const CE_B: u32 = 41;
/// Continuation areas of the deep symlinks, one sector each.
const CE_DEEP: u32 = 50;
const HELLO: &[u8] = b"hello\n";

/// Per-image bounds: a generous hang guard and the memory ceiling.
const MAX_MS: u128 = 1000;
const MAX_RSS_KIB: i64 = 64 * 1024;
/// A child still running after this is killed (and the case fails on time).
const HANG: Duration = Duration::from_secs(10);

const DIR: u8 = 0x02;
const FILE: u8 = 0x00;

// ---------------------------------------------------------------------------------------------
// Assembling images

fn both32(v: u32) -> Vec<u8> {
    [v.to_le_bytes(), v.to_be_bytes()].concat()
}

/// A both-endian u32 whose halves disagree.
fn both32_split(le: u32, be: u32) -> Vec<u8> {
    [le.to_le_bytes(), be.to_be_bytes()].concat()
}

fn both16(v: u16) -> Vec<u8> {
    [v.to_le_bytes(), v.to_be_bytes()].concat()
}

/// A directory record (ECMA-119 9.1), length rounded up to even. `extent_len` is the 16
/// bytes of extent and data length, so tests can write disagreeing halves.
fn record_raw(name: &[u8], extent_len: &[u8], flags: u8, su: &[u8]) -> Vec<u8> {
    assert_eq!(extent_len.len(), 16);
    let pad = usize::from(name.len() % 2 == 0);
    let mut len = 33 + name.len() + pad + su.len();
    len += len % 2;
    assert!(len <= 255, "record of {len} bytes");
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    r[2..18].copy_from_slice(extent_len);
    r[18..25].copy_from_slice(&[126, 1, 2, 3, 4, 5, 0]);
    r[25] = flags;
    r[28..32].copy_from_slice(&both16(1));
    r[32] = name.len() as u8;
    r[33..33 + name.len()].copy_from_slice(name);
    r[33 + name.len() + pad..33 + name.len() + pad + su.len()].copy_from_slice(su);
    r
}

fn record(name: &[u8], extent: u32, len: u32, flags: u8, su: &[u8]) -> Vec<u8> {
    record_raw(name, &[both32(extent), both32(len)].concat(), flags, su)
}

/// A SUSP entry.
fn su(sig: &[u8; 2], body: &[u8]) -> Vec<u8> {
    [&[sig[0], sig[1], (4 + body.len()) as u8, 1][..], body].concat()
}

fn sp() -> Vec<u8> {
    su(b"SP", &[0xBE, 0xEF, 0])
}

fn er() -> Vec<u8> {
    su(b"ER", &[&[10u8, 0, 0, 1][..], b"RRIP_1991A"].concat())
}

fn nm(flags: u8, name: &[u8]) -> Vec<u8> {
    su(b"NM", &[&[flags][..], name].concat())
}

fn px(mode: u32) -> Vec<u8> {
    su(
        b"PX",
        &[both32(mode), both32(1), both32(0), both32(0)].concat(),
    )
}

/// SL with the given components `(flags, content)`.
fn sl(comps: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = vec![0u8];
    for (f, c) in comps {
        body.push(*f);
        body.push(c.len() as u8);
        body.extend_from_slice(c);
    }
    su(b"SL", &body)
}

fn ce(block: u32, offset: u32, len: u32) -> Vec<u8> {
    su(
        b"CE",
        &[both32(block), both32(offset), both32(len)].concat(),
    )
}

fn cl(block: u32) -> Vec<u8> {
    su(b"CL", &both32(block))
}

fn pl(block: u32) -> Vec<u8> {
    su(b"PL", &both32(block))
}

fn re() -> Vec<u8> {
    su(b"RE", b"")
}

/// A Rock Ridge symlink record.
fn symlink_rec(name: &str, comps: &[(u8, &[u8])]) -> Vec<u8> {
    let area = [nm(0, name.as_bytes()), px(0o120777), sl(comps)].concat();
    record(name.to_uppercase().as_bytes(), 0, 0, FILE, &area)
}

/// A Rock Ridge file record holding "hello\n".
fn hello_rec(name: &str) -> Vec<u8> {
    let area = [nm(0, name.as_bytes()), px(0o100644)].concat();
    record(b"HELLO.TXT;1", DATA, HELLO.len() as u32, FILE, &area)
}

/// A Rock Ridge directory record.
fn dir_rec(name: &str, extent: u32, su_extra: &[u8]) -> Vec<u8> {
    let area = [nm(0, name.as_bytes()), px(0o040755), su_extra.to_vec()].concat();
    record(name.to_uppercase().as_bytes(), extent, S as u32, DIR, &area)
}

/// A hand-assembled image: descriptors, directories, file data and continuation areas.
struct Iso {
    data: Vec<u8>,
    rr: bool,
}

impl Iso {
    /// An empty volume; `rr` puts SP and ER in the root's "." record.
    fn new(rr: bool) -> Iso {
        let mut iso = Iso {
            data: vec![0u8; SECTORS * S],
            rr,
        };
        let root = record(&[0], ROOT, S as u32, DIR, &[]);
        iso.put(
            PVD as u32,
            0,
            &volume_descriptor(1, &root, SECTORS as u32, false),
        );
        iso.put(TERM as u32, 0, &[255, b'C', b'D', b'0', b'0', b'1', 1]);
        iso.put(DATA, 0, HELLO);
        iso.dir(ROOT, ROOT, &[]);
        iso
    }

    fn put(&mut self, sector: u32, offset: usize, bytes: &[u8]) {
        let at = sector as usize * S + offset;
        self.data[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Writes directory `sector` ("." and ".." then `entries`) into one sector.
    fn dir(&mut self, sector: u32, parent: u32, entries: &[Vec<u8>]) {
        self.dir_with_dots(sector, parent, &[], entries);
    }

    /// As [`Iso::dir`], with extra system use entries in the ".." record.
    fn dir_with_dots(&mut self, sector: u32, parent: u32, dotdot_su: &[u8], entries: &[Vec<u8>]) {
        let dot_su = if self.rr && sector == ROOT {
            [sp(), px(0o040755), er()].concat()
        } else if self.rr {
            px(0o040755)
        } else {
            Vec::new()
        };
        let mut bytes = record(&[0], sector, S as u32, DIR, &dot_su);
        bytes.extend(record(&[1], parent, S as u32, DIR, dotdot_su));
        for e in entries {
            bytes.extend_from_slice(e);
        }
        assert!(bytes.len() <= S, "directory {sector} overflows its sector");
        let mut full = vec![0u8; S];
        full[..bytes.len()].copy_from_slice(&bytes);
        self.put(sector, 0, &full);
    }

    /// Adds a Joliet supplementary descriptor whose root is `JROOT`, holding `names` as files
    /// with "hello\n".
    fn joliet(&mut self, names: &[&[u16]]) {
        let root = record(&[0], JROOT, S as u32, DIR, &[]);
        self.put(
            SVD as u32,
            0,
            &volume_descriptor(2, &root, SECTORS as u32, true),
        );
        let entries: Vec<Vec<u8>> = names
            .iter()
            .map(|n| {
                let id: Vec<u8> = n.iter().flat_map(|c| c.to_be_bytes()).collect();
                record(&id, DATA, HELLO.len() as u32, FILE, &[])
            })
            .collect();
        let rr = std::mem::replace(&mut self.rr, false);
        self.dir(JROOT, JROOT, &entries);
        self.rr = rr;
    }
}

/// A primary (1) or supplementary (2) volume descriptor (ECMA-119 8.4, 8.5).
fn volume_descriptor(ty: u8, root: &[u8], sectors: u32, joliet: bool) -> Vec<u8> {
    let mut d = vec![0u8; S];
    d[0] = ty;
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    d[8..40].fill(b' ');
    d[40..72].fill(b' ');
    d[40..47].copy_from_slice(b"HOSTILE");
    d[80..88].copy_from_slice(&both32(sectors));
    if joliet {
        d[88..91].copy_from_slice(b"%/E");
    }
    d[120..124].copy_from_slice(&both16(1));
    d[124..128].copy_from_slice(&both16(1));
    d[128..132].copy_from_slice(&both16(S as u16));
    d[156..156 + root.len()].copy_from_slice(root);
    d[881] = 1;
    d
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

// ---------------------------------------------------------------------------------------------
// The cases

/// What the case must give through `isomgr ls -R --json /`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Refused,
    Served,
}

struct Case {
    name: &'static str,
    image: Vec<u8>,
    want: Want,
    /// A path for `isomgr cat`, and the bytes it must print (`None`: it must fail cleanly).
    cat: Option<(&'static str, Option<&'static [u8]>)>,
    /// Error message fragment `ls -R` must show when refused.
    why: &'static str,
}

fn case(
    name: &'static str,
    iso: Iso,
    want: Want,
    why: &'static str,
    cat: Option<(&'static str, Option<&'static [u8]>)>,
) -> Case {
    Case {
        name,
        image: iso.data,
        want,
        cat,
        why,
    }
}

/// A fixture image made by genisoimage, changed by `patch`, which gets the image and the
/// byte offset of the directory record of each of `paths`.
fn patched_fixture(
    name: &str,
    paths: &[&str],
    patch: impl FnOnce(&mut Vec<u8>, &[usize]),
) -> Vec<u8> {
    let mut img = fs::read(common::fixtures().join(name)).expect("fixture image");
    let opened = Image::open(img.clone()).expect("fixture opens");
    let at: Vec<usize> = paths
        .iter()
        .map(|p| opened.lookup(p).expect("fixture path").id as usize)
        .collect();
    patch(&mut img, &at);
    img
}

fn put32(img: &mut [u8], at: usize, v: u32) {
    img[at..at + 8].copy_from_slice(&both32(v));
}

/// Directory /d of 16 sectors whose 440 records all point at the same chain of 16
/// continuation areas (32 KiB each, 256 times the record), so reading 32 KiB of directory
/// would parse 14 MiB.
fn ce_amplifier() -> Iso {
    const DIR_AT: u32 = 60;
    const DIR_SECTORS: u32 = 16;
    const CHAIN_AT: u32 = DIR_AT + DIR_SECTORS;
    const CHAIN: u32 = 16;
    let mut iso = Iso::new(true);
    for i in 0..CHAIN {
        let mut area = Vec::new();
        if i + 1 < CHAIN {
            area.extend(ce(CHAIN_AT + i + 1, 0, S as u32));
        }
        while area.len() + 255 <= S {
            area.extend(su(b"PD", &[0u8; 251]));
        }
        area.resize(S, 0);
        iso.put(CHAIN_AT + i, 0, &area);
    }
    let len = DIR_SECTORS * S as u32;
    let mut sector = [
        record(&[0], DIR_AT, len, DIR, &px(0o040755)),
        record(&[1], ROOT, S as u32, DIR, &[]),
    ]
    .concat();
    let mut at = DIR_AT;
    for n in 0..440 {
        let rec = record(
            format!("F{n:05}").as_bytes(),
            DATA,
            0,
            FILE,
            &ce(CHAIN_AT, 0, S as u32),
        );
        if sector.len() + rec.len() > S {
            sector.resize(S, 0);
            iso.put(at, 0, &sector);
            at += 1;
            sector.clear();
        }
        sector.extend(rec);
    }
    assert!(at < CHAIN_AT);
    sector.resize(S, 0);
    iso.put(at, 0, &sector);
    let area = [nm(0, b"d"), px(0o040755)].concat();
    iso.dir(ROOT, ROOT, &[record(b"D", DIR_AT, len, DIR, &area)]);
    iso
}

fn long_name_case() -> Iso {
    // 100 bytes in the record, 100 + 100 in a continuation area: 300 bytes in all. The name
    // is refused and the record falls back to its ISO9660 name.
    let mut iso = Iso::new(true);
    let part = [b'x'; 100];
    let area = [nm(1, &part), nm(0, &part)].concat();
    iso.put(CE_A, 0, &area);
    let rec_su = [nm(1, &part), px(0o100644), ce(CE_A, 0, area.len() as u32)].concat();
    let rec = record(b"LONG.TXT;1", DATA, HELLO.len() as u32, FILE, &rec_su);
    iso.dir(ROOT, ROOT, &[rec]);
    iso
}

/// Directory /a lists itself as "a" and symlinks L00..L23, each pointing 560 levels down
/// ("a/a/.../a/L01", through a continuation area), the last back to L00: following L00 costs
/// 40 hops of 560 components each.
/// With `alternate`, /a lists "b" and /b lists "a", and the targets go "b/a/b/a/.../L01".
fn deep_symlink_chain(alternate: bool) -> Iso {
    const LINKS: u32 = 24;
    const DEPTH: usize = 560;
    let mut iso = Iso::new(true);
    iso.dir(ROOT, ROOT, &[dir_rec("a", SUB, &[])]);
    let mut entries = vec![if alternate {
        dir_rec("b", SUB2, &[])
    } else {
        dir_rec("a", SUB, &[])
    }];
    if alternate {
        iso.dir(SUB2, SUB, &[dir_rec("a", SUB, &[])]);
    }
    for i in 0..LINKS {
        let next = format!("L{:02}", (i + 1) % LINKS);
        let mut area = Vec::new();
        for _ in 0..DEPTH / 80 {
            let comps: Vec<(u8, &[u8])> = (0..80)
                .map(|k| match (alternate, k % 2) {
                    (true, 0) => (0u8, &b"b"[..]),
                    _ => (0u8, &b"a"[..]),
                })
                .collect();
            let mut e = sl(&comps);
            e[4] = 1; // more SL entries follow
            area.extend(e);
        }
        area.extend(sl(&[(0, next.as_bytes())]));
        assert!(area.len() <= S);
        iso.put(CE_DEEP + i, 0, &area);
        let name = format!("L{i:02}");
        let rec_su = ce(CE_DEEP + i, 0, area.len() as u32);
        entries.push(record(name.as_bytes(), 0, 0, FILE, &rec_su));
    }
    iso.dir(SUB, ROOT, &entries);
    iso
}

fn cases() -> Vec<Case> {
    use Want::*;
    let mut out = Vec::new();

    // Directory cycles.
    let mut iso = Iso::new(true);
    iso.dir(ROOT, ROOT, &[dir_rec("loop", SUB, &[])]);
    iso.dir(SUB, ROOT, &[dir_rec("again", SUB, &[]), hello_rec("f")]);
    out.push(case(
        "dir_extent_is_its_own",
        iso,
        Refused,
        "directory loop",
        Some(("/loop/again/again/f", Some(HELLO))),
    ));

    let mut iso = Iso::new(true);
    iso.dir(ROOT, ROOT, &[dir_rec("a", SUB, &[]), hello_rec("f")]);
    iso.dir(SUB, ROOT, &[dir_rec("up", ROOT, &[])]);
    out.push(case(
        "dir_extent_is_its_parent",
        iso,
        Refused,
        "directory loop",
        Some(("/a/up/a/up/f", Some(HELLO))),
    ));

    let mut iso = Iso::new(false);
    iso.dir(ROOT, ROOT, &[record(b"A", SUB, S as u32, DIR, &[])]);
    iso.dir(SUB, ROOT, &[record(b"B", SUB2, S as u32, DIR, &[])]);
    iso.dir(SUB2, SUB, &[record(b"TOP", ROOT, S as u32, DIR, &[])]);
    out.push(case(
        "plain_iso_dir_cycle_through_grandparent",
        iso,
        Refused,
        "directory loop",
        None,
    ));

    // No cycle, but every level lists the next one four times: 4^8 paths over 8 directories.
    let mut iso = Iso::new(false);
    for level in 0..8u32 {
        let here = if level == 0 { ROOT } else { SUB + level - 1 };
        let parent = if level <= 1 { ROOT } else { here - 1 };
        let names: [&[u8]; 4] = [b"A", b"B", b"C", b"D"];
        let entries: Vec<Vec<u8>> = names
            .iter()
            .map(|n| record(n, SUB + level, S as u32, DIR, &[]))
            .collect();
        iso.dir(here, parent, &entries);
    }
    iso.dir(SUB + 8, SUB + 7, &[]);
    out.push(case(
        "dir_shared_by_many_parents",
        iso,
        Refused,
        "directory loop",
        None,
    ));

    // Continuation area loops.
    let mut iso = Iso::new(true);
    iso.put(CE_A, 0, &ce(CE_A, 0, 28));
    let rec = record(
        b"F.TXT;1",
        DATA,
        6,
        FILE,
        &[nm(0, b"f"), ce(CE_A, 0, 28)].concat(),
    );
    iso.dir(ROOT, ROOT, &[rec]);
    out.push(case(
        "ce_points_to_itself",
        iso,
        Refused,
        "continuation area",
        Some(("/f", None)),
    ));

    let mut iso = Iso::new(true);
    iso.put(CE_A, 0, &ce(CE_B, 0, 28));
    iso.put(CE_B, 0, &ce(CE_A, 0, 28));
    let rec = record(
        b"F.TXT;1",
        DATA,
        6,
        FILE,
        &[nm(0, b"f"), ce(CE_A, 0, 28)].concat(),
    );
    iso.dir(ROOT, ROOT, &[rec]);
    out.push(case(
        "ce_a_to_b_to_a",
        iso,
        Refused,
        "continuation area",
        Some(("/f", None)),
    ));

    let mut iso = Iso::new(true);
    let rec = record(
        b"F.TXT;1",
        DATA,
        6,
        FILE,
        &[nm(0, b"f"), ce(0xFFFF_FFFF, 2040, 0xFFFF_FFFF)].concat(),
    );
    iso.dir(ROOT, ROOT, &[rec]);
    out.push(case(
        "ce_beyond_image_and_huge",
        iso,
        Refused,
        "continuation area",
        None,
    ));

    out.push(case(
        "ce_chain_shared_by_every_record",
        ce_amplifier(),
        Refused,
        "continuation areas of this directory exceed",
        None,
    ));

    // Rock Ridge relocation abuse.
    let mut iso = Iso::new(true);
    let rec = record(b"RELOC", 0, 0, FILE, &[nm(0, b"reloc"), cl(DATA)].concat());
    iso.dir(ROOT, ROOT, &[rec, hello_rec("f")]);
    out.push(case(
        "cl_to_a_file",
        iso,
        Refused,
        "directory record at sector 30",
        Some(("/f", None)),
    ));

    let mut iso = Iso::new(true);
    iso.dir(ROOT, ROOT, &[dir_rec("d", SUB, &[])]);
    let rec = record(b"SELF", 0, 0, FILE, &[nm(0, b"self"), cl(SUB)].concat());
    iso.dir(SUB, ROOT, &[rec, hello_rec("f")]);
    out.push(case(
        "cl_to_its_own_directory",
        iso,
        Refused,
        "directory loop",
        Some(("/d/self/self/f", Some(HELLO))),
    ));

    let mut iso = Iso::new(true);
    iso.dir(ROOT, ROOT, &[dir_rec("d", SUB, &[])]);
    let rec = record(b"ROOT", 0, 0, FILE, &[nm(0, b"root"), cl(ROOT)].concat());
    iso.dir(SUB, ROOT, &[rec]);
    out.push(case(
        "cl_to_an_ancestor",
        iso,
        Refused,
        "directory loop",
        None,
    ));

    let mut iso = Iso::new(true);
    let rec = record(
        b"FAR",
        0,
        0,
        FILE,
        &[nm(0, b"far"), cl(0xFFFF_FFFF)].concat(),
    );
    iso.dir(ROOT, ROOT, &[rec]);
    out.push(case("cl_beyond_the_image", iso, Refused, "truncated", None));

    let mut iso = Iso::new(true);
    iso.dir(ROOT, ROOT, &[dir_rec("d", SUB, &[])]);
    iso.dir_with_dots(SUB, ROOT, &pl(SUB2), &[hello_rec("f")]);
    out.push(case(
        "pl_without_re",
        iso,
        Served,
        "",
        Some(("/d/f", Some(HELLO))),
    ));

    let mut iso = Iso::new(true);
    iso.dir(ROOT, ROOT, &[dir_rec("moved", SUB, &re()), hello_rec("f")]);
    iso.dir(SUB, ROOT, &[hello_rec("g")]);
    out.push(case(
        "re_without_cl",
        iso,
        Served,
        "",
        Some(("/moved/g", None)),
    ));

    // Extents and sizes.
    let mut iso = Iso::new(true);
    let area = [nm(0, b"big"), px(0o100644)].concat();
    iso.dir(
        ROOT,
        ROOT,
        &[record(
            b"BIG;1",
            (SECTORS - 1) as u32,
            10 * S as u32,
            FILE,
            &area,
        )],
    );
    out.push(case(
        "file_extent_past_the_end",
        iso,
        Served,
        "",
        Some(("/big", None)),
    ));

    let mut iso = Iso::new(true);
    let area = [nm(0, b"wrap"), px(0o100644)].concat();
    iso.dir(
        ROOT,
        ROOT,
        &[record(b"WRAP;1", 0xFFFF_FFFF, 0xFFFF_FFFF, FILE, &area)],
    );
    out.push(case(
        "file_extent_wraps_u32",
        iso,
        Served,
        "",
        Some(("/wrap", None)),
    ));

    let mut iso = Iso::new(true);
    iso.dir(ROOT, ROOT, &[dir_rec("d", 0xFFFF_FFFF, &[])]);
    out.push(case(
        "dir_extent_wraps_u32",
        iso,
        Refused,
        "truncated",
        None,
    ));

    let mut iso = Iso::new(true);
    let area = [nm(0, b"huge"), px(0o100644)].concat();
    iso.dir(
        ROOT,
        ROOT,
        &[record(b"HUGE;1", DATA, 0xFFFF_FFFF, FILE, &area)],
    );
    out.push(case(
        "file_size_0xffffffff",
        iso,
        Served,
        "",
        Some(("/huge", None)),
    ));

    let mut iso = Iso::new(true);
    let area = [nm(0, b"d"), px(0o040755)].concat();
    iso.dir(ROOT, ROOT, &[record(b"D", SUB, 0xFFFF_FFFF, DIR, &area)]);
    iso.dir(SUB, ROOT, &[]);
    out.push(case(
        "dir_size_0xffffffff",
        iso,
        Refused,
        "exceeds the limit",
        None,
    ));

    let mut iso = Iso::new(true);
    let area = [nm(0, b"f"), px(0o100644)].concat();
    let fields = [
        both32_split(DATA, 0x1234_5678),
        both32_split(HELLO.len() as u32, 0xFFFF_FFFF),
    ]
    .concat();
    iso.dir(ROOT, ROOT, &[record_raw(b"F.TXT;1", &fields, FILE, &area)]);
    iso.put(PVD as u32, 80, &both32_split(SECTORS as u32, 0xFFFF_FFFF));
    out.push(case(
        "both_endian_halves_disagree",
        iso,
        Served,
        "",
        Some(("/f", Some(HELLO))),
    ));

    // Joliet names.
    let mut iso = Iso::new(false);
    iso.joliet(&[&utf16("a/b"), &utf16("/etc"), &utf16("ok")]);
    out.push(case(
        "joliet_names_with_slash",
        iso,
        Served,
        "",
        Some(("/ok", Some(HELLO))),
    ));

    let mut iso = Iso::new(false);
    iso.joliet(&[&[0x61, 0, 0x62], &[0], &utf16("ok")]);
    out.push(case(
        "joliet_names_with_nul",
        iso,
        Served,
        "",
        Some(("/ok", Some(HELLO))),
    ));

    let mut iso = Iso::new(false);
    iso.joliet(&[&utf16("."), &utf16(".."), &utf16("..;1"), &utf16("ok")]);
    out.push(case(
        "joliet_names_dot_and_dotdot",
        iso,
        Served,
        "",
        Some(("/ok", Some(HELLO))),
    ));

    // Real images (genisoimage) patched.
    let img = patched_fixture("deep.iso", &["/", "/a/b"], |img, at| {
        let root_extent = u32::from_le_bytes(img[at[0] + 2..at[0] + 6].try_into().unwrap());
        put32(img, at[1] + 2, root_extent);
    });
    out.push(Case {
        name: "real_deep_iso_dir_points_at_root",
        image: img,
        want: Refused,
        why: "directory loop",
        cat: None,
    });
    let img = patched_fixture("rr-joliet.iso", &["/README"], |img, at| {
        put32(img, at[0] + 2, 0x7FFF_FFFF);
        put32(img, at[0] + 10, 0xFFFF_FFFF);
    });
    out.push(Case {
        name: "real_rr_joliet_file_far_past_the_end",
        image: img,
        want: Served,
        why: "",
        cat: Some(("/README", None)),
    });
    let img = patched_fixture("rockridge.iso", &["/link-to-plain"], |img, at| {
        let len = img[at[0]] as usize;
        let rec = &mut img[at[0]..at[0] + len];
        let i = rec
            .windows(9)
            .position(|w| w == b"plain.txt")
            .expect("the SL component");
        rec[i..i + 9].copy_from_slice(b"../../../");
    });
    out.push(Case {
        name: "real_rockridge_symlink_component_with_slashes",
        image: img,
        want: Served,
        why: "",
        cat: Some(("/link-to-plain", None)),
    });

    let mut iso = Iso::new(false);
    let long: Vec<u16> = vec![0x4E00; 100]; // 200 bytes on disc, 300 in UTF-8
    iso.joliet(&[&long, &utf16("ok")]);
    out.push(case(
        "joliet_name_over_255_utf8_bytes",
        iso,
        Served,
        "",
        Some(("/ok", Some(HELLO))),
    ));

    // Rock Ridge modes: a device node and set-id bits.
    let mut iso = Iso::new(true);
    let dev = [
        nm(0, b"sda"),
        px(0o060666),
        su(b"PN", &[both32(0), both32(0x0800)].concat()),
    ]
    .concat();
    let suid = [nm(0, b"suid"), px(0o106755)].concat();
    iso.dir(
        ROOT,
        ROOT,
        &[
            record(b"SDA;1", 0, 0, FILE, &dev),
            record(b"SUID;1", DATA, HELLO.len() as u32, FILE, &suid),
        ],
    );
    out.push(case(
        "rr_device_node_and_set_id_bits",
        iso,
        Served,
        "",
        Some(("/suid", Some(HELLO))),
    ));

    // Rock Ridge NM names.
    for (name, bad) in [
        ("rr_name_dot", &b"."[..]),
        ("rr_name_dotdot", &b".."[..]),
        ("rr_name_with_slash", &b"../../etc/passwd"[..]),
        ("rr_name_with_nul", &b"a\0b"[..]),
    ] {
        let mut iso = Iso::new(true);
        let area = [nm(0, bad), px(0o100644)].concat();
        let bad_rec = record(b"BAD.TXT;1", DATA, 6, FILE, &area);
        iso.dir(ROOT, ROOT, &[bad_rec, hello_rec("ok")]);
        out.push(case(name, iso, Served, "", Some(("/ok", Some(HELLO)))));
    }

    let mut iso = Iso::new(true);
    let area = [nm(0x02, b""), px(0o040755)].concat();
    let flagged = record(b"CUR", SUB, S as u32, DIR, &area);
    let area = [nm(0x04, b""), px(0o040755)].concat();
    let parent = record(b"PAR", ROOT, S as u32, DIR, &area);
    iso.dir(ROOT, ROOT, &[flagged, parent, hello_rec("ok")]);
    iso.dir(SUB, ROOT, &[]);
    out.push(case(
        "rr_name_current_and_parent_flags",
        iso,
        Served,
        "",
        Some(("/ok", Some(HELLO))),
    ));

    out.push(case(
        "rr_name_over_255_bytes",
        long_name_case(),
        Served,
        "",
        Some(("/LONG.TXT", Some(HELLO))),
    ));

    let mut iso = Iso::new(true);
    iso.dir(ROOT, ROOT, &[hello_rec("same"), hello_rec("same")]);
    out.push(case(
        "rr_duplicate_names",
        iso,
        Served,
        "",
        Some(("/same", Some(HELLO))),
    ));

    // Symlinks.
    let mut iso = Iso::new(true);
    let link = symlink_rec("shadow", &[(0x08, b""), (0, b"etc"), (0, b"shadow")]);
    iso.dir(ROOT, ROOT, &[link]);
    out.push(case(
        "symlink_to_etc_shadow",
        iso,
        Served,
        "",
        Some(("/shadow", None)),
    ));

    let mut iso = Iso::new(true);
    let link = symlink_rec(
        "up",
        &[
            (0x04, b""),
            (0x04, b""),
            (0x04, b""),
            (0, b"etc"),
            (0, b"passwd"),
        ],
    );
    iso.dir(ROOT, ROOT, &[dir_rec("d", SUB, &[])]);
    iso.dir(SUB, ROOT, &[link]);
    out.push(case(
        "symlink_dotdot_out_of_the_image",
        iso,
        Served,
        "",
        Some(("/d/up", None)),
    ));

    let mut iso = Iso::new(true);
    let a = symlink_rec("a", &[(0, b"b")]);
    let b = symlink_rec("b", &[(0, b"a")]);
    iso.dir(ROOT, ROOT, &[a, b]);
    out.push(case("symlink_loop", iso, Served, "", Some(("/a", None))));

    let mut iso = Iso::new(true);
    let nul = symlink_rec("nul", &[(0, b"a\0b")]);
    let empty = symlink_rec("empty", &[]);
    iso.dir(ROOT, ROOT, &[nul, empty, hello_rec("a")]);
    out.push(case(
        "symlink_targets_empty_and_with_nul",
        iso,
        Served,
        "",
        Some(("/nul", None)),
    ));

    out.push(case(
        "symlink_chain_of_deep_paths",
        deep_symlink_chain(false),
        Refused,
        "directory loop",
        Some(("/a/L00", None)),
    ));
    out.push(case(
        "symlink_chain_of_deep_alternating_paths",
        deep_symlink_chain(true),
        Refused,
        "directory loop",
        Some(("/a/L00", None)),
    ));

    let mut iso = Iso::new(true);
    let host = symlink_rec("host", &[(0x20, b""), (0, b"etc"), (0, b"shadow")]);
    let dir_link = symlink_rec("dirlink", &[(0x08, b"")]);
    iso.dir(ROOT, ROOT, &[host, dir_link]);
    out.push(case(
        "symlink_host_and_root_components",
        iso,
        Served,
        "",
        Some(("/host", None)),
    ));

    out
}

/// Symlink targets the assembled images store, by case: what readlink must show.
fn stored_targets(case: &str) -> Vec<(&'static str, &'static str)> {
    match case {
        "symlink_to_etc_shadow" => vec![("shadow", "/etc/shadow")],
        "symlink_dotdot_out_of_the_image" => vec![("d/up", "../../../etc/passwd")],
        "symlink_loop" => vec![("a", "b"), ("b", "a")],
        "symlink_targets_empty_and_with_nul" => vec![("empty", "")],
        "real_rockridge_symlink_component_with_slashes" => {
            vec![("link-to-plain", "../../../"), ("link-to-tools", "tools")]
        }
        "symlink_host_and_root_components" => vec![("host", "/etc/shadow"), ("dirlink", "/")],

        _ => vec![],
    }
}

/// The target of `a/Lnn` in the deep symlink chain (every level of the walk is "a").
fn deep_chain_target(case: &str, rel: &Path) -> Option<String> {
    let step = match case {
        "symlink_chain_of_deep_paths" => "a/a/",
        "symlink_chain_of_deep_alternating_paths" => "b/a/",
        _ => return None,
    };
    let n: u32 = rel.file_name()?.to_str()?.strip_prefix('L')?.parse().ok()?;
    Some(format!("{}L{:02}", step.repeat(280), (n + 1) % 24))
}

// ---------------------------------------------------------------------------------------------
// Reading through the reader API, in-process

/// Opens, walks, reads every file and follows a few paths; the first error. On a thread with
/// a deadline, so a hang fails the test.
/// Read errors (a file past the end of the image) are counted, not returned.
fn exercise(image: Vec<u8>, follow: Option<&'static str>) -> Result<(usize, usize), Error> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| {
            let img = Image::open(image)?;
            if let Some(p) = follow {
                if let Ok(e) = img.lookup_follow(p) {
                    assert_ne!(e.kind, Kind::Symlink, "lookup_follow returned a symlink");
                }
            }
            let mut entries: Vec<Entry> = Vec::new();
            img.walk(&img.root(), "/", |path, e| {
                let name = e.name.as_bytes();
                assert!(
                    !name.is_empty()
                        && name != b"."
                        && name != b".."
                        && !name.contains(&b'/')
                        && !name.contains(&0),
                    "unusable name {:?} at {path}",
                    e.name
                );
                entries.push(e.clone());
                Ok(())
            })?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut read_errors = 0;
            for e in entries.iter().filter(|e| e.kind == Kind::File) {
                let mut off = 0;
                while off < e.size.min(1 << 20) {
                    match img.read_at(e, off, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => off += n as u64,
                        Err(_) => {
                            read_errors += 1;
                            break;
                        }
                    }
                }
            }
            Ok((entries.len(), read_errors))
        })();
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the reader finished within 10 s (no hang)")
}

// ---------------------------------------------------------------------------------------------
// Reading through the CLI, as a measured child process

struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    ms: u128,
    rss_kib: i64,
}

/// Runs isomgr with `args`, output to files, and reaps it with wait4 for its own peak RSS.
fn run_measured(dir: &Path, args: &[&OsStr]) -> Run {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let started = Instant::now();
    let child = Command::new(common::bin())
        .args(args)
        .env_remove("ISOMGR_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("starting isomgr");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain data the call fills in; `pid` is our child, reaped here exactly once
    // (killed first if it outlives the hang guard).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = loop {
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if rc != 0 {
            break rc;
        }
        if started.elapsed() > HANG {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let ms = started.elapsed().as_millis();
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child);
    Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stdout: fs::read(&out_path).expect("reading stdout"),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        ms,
        rss_kib: usage.ru_maxrss,
    }
}

/// A refusal is exit 1 with one message on stderr, never a panic or a signal.
fn assert_clean_failure(case: &str, what: &str, r: &Run) {
    assert_eq!(r.signal, None, "{case}: {what} killed by a signal");
    assert_eq!(
        r.code,
        Some(1),
        "{case}: {what} exit code; stderr: {}",
        r.stderr
    );
    assert!(
        !r.stderr.trim().is_empty(),
        "{case}: {what} failed without a message"
    );
    assert!(
        !r.stderr.contains("panicked"),
        "{case}: {what} panicked: {}",
        r.stderr
    );
}

fn check_listing(case: &str, json: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(json).expect("ls --json gives JSON");
    let mut seen = HashSet::new();
    for e in v.as_array().expect("an array") {
        let path = e["path"].as_str().expect("path");
        assert!(path.starts_with('/'), "{case}: {path}");
        let comps: Vec<&str> = path.split('/').skip(1).collect();
        for c in &comps {
            assert!(
                !c.is_empty() && *c != "." && *c != ".." && !c.contains('\0'),
                "{case}: unusable component in {path:?}"
            );
        }
        assert!(
            seen.insert(path.to_owned()) || case == "rr_duplicate_names",
            "{case}: {path} listed twice"
        );
        if e["type"] == "symlink" {
            // Null only where the reader refused the stored target.
            assert!(
                e["target"].is_string()
                    || (case == "symlink_targets_empty_and_with_nul" && e["target"].is_null()),
                "{case}: symlink {path} without its target"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading through a real FUSE mount

fn can_mount(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    let why = format!("{test}: needs root ({root}) and /dev/fuse ({fuse})");
    assert!(!common::in_ci(), "{why}");
    eprintln!("SKIPPED {why}");
    false
}

/// The names a raw readdir gives, "." and ".." included.
fn raw_readdir(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let c = CString::new(dir.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: valid C string; the stream is closed below; each dirent is read before the next
    // readdir call.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        if d.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let mut names = Vec::new();
        loop {
            *libc::__errno_location() = 0;
            let ent = libc::readdir(d);
            if ent.is_null() {
                let err = *libc::__errno_location();
                libc::closedir(d);
                if err != 0 {
                    return Err(std::io::Error::from_raw_os_error(err));
                }
                return Ok(names);
            }
            let name = CStr::from_ptr((*ent).d_name.as_ptr());
            names.push(OsStr::from_bytes(name.to_bytes()).to_owned());
        }
    }
}

/// Deepest level the mount walk goes: every assembled tree is at most 3 deep, so reaching this
/// means a cycle shows as an endless tree.
const WALK_DEPTH: usize = 12;

/// Most entries the mount walk visits per medium; every assembled tree has a handful.
const WALK_ENTRIES: usize = 1000;

#[derive(Default)]
struct MountWalk {
    entries: usize,
    errors: Vec<String>,
    depth: usize,
}

/// Walks `dir` in the mount without following symlinks, checking every listing.
fn walk_mount(
    case: &str,
    image: &Image<Vec<u8>>,
    mnt: &Path,
    dir: &Path,
    depth: usize,
    w: &mut MountWalk,
) {
    w.depth = w.depth.max(depth);
    assert!(
        w.entries < WALK_ENTRIES,
        "{case}: over {WALK_ENTRIES} entries: directories shared in the image multiply the tree"
    );
    assert!(
        depth < WALK_DEPTH,
        "{case}: {} is {depth} levels deep: a cycle in the image shows as an endless tree",
        dir.display()
    );
    let names = match raw_readdir(dir) {
        Ok(n) => n,
        Err(e) => {
            w.errors.push(format!("readdir {}: {e}", dir.display()));
            return;
        }
    };
    let dots = names.iter().filter(|n| n.as_bytes() == b".").count();
    let dotdots = names.iter().filter(|n| n.as_bytes() == b"..").count();
    assert_eq!(
        (dots, dotdots),
        (1, 1),
        "{case}: {} lists . and .. once each: {names:?}",
        dir.display()
    );
    let mut seen = HashSet::new();
    for name in names
        .iter()
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
    {
        let b = name.as_bytes();
        assert!(
            !b.is_empty() && !b.contains(&b'/') && !b.contains(&0) && b.len() <= 255,
            "{case}: bad name {name:?}"
        );
        assert!(
            seen.insert(name.clone()),
            "{case}: {name:?} listed twice in {}",
            dir.display()
        );
        w.entries += 1;
        let path = dir.join(name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                w.errors.push(format!("lstat {}: {e}", path.display()));
                continue;
            }
        };
        let ft = meta.file_type();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o6000,
            0,
            "{case}: set-id bit on {}",
            path.display()
        );
        if ft.is_symlink() {
            // Shown as stored (or not at all when the reader refused the target); isomgr never
            // resolves it; O_NOFOLLOW refuses it.
            let rel = path.strip_prefix(mnt.join(case)).expect("under the medium");
            let stored = image
                .lookup(&format!("/{}", rel.display()))
                .expect("the reader's entry")
                .target;
            let Some(stored) = stored else {
                let e = fs::read_link(&path).expect_err("a refused target is not shown");
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::EIO),
                    "{case}: {}",
                    path.display()
                );
                continue;
            };
            let target = fs::read_link(&path).expect("readlink of a listed symlink");
            assert_eq!(
                target.as_os_str(),
                stored,
                "{case}: target of {}",
                path.display()
            );
            let want = stored_targets(case)
                .into_iter()
                .find(|(p, _)| Path::new(p) == rel)
                .map(|(_, t)| t.to_owned())
                .or_else(|| deep_chain_target(case, rel));
            assert!(
                want.is_some() || case.starts_with("real_"),
                "{case}: no expected target for {}",
                rel.display()
            );
            assert!(
                want.is_none() || target.to_str() == want.as_deref(),
                "{case}: target of {}",
                path.display()
            );
            let e = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .expect_err("O_NOFOLLOW open of a symlink must fail");
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ELOOP),
                "{case}: {}",
                path.display()
            );
        } else if ft.is_dir() {
            let real = fs::canonicalize(&path).expect("canonicalize a directory of the mount");
            assert!(
                real.starts_with(mnt),
                "{case}: {} resolves to {}",
                path.display(),
                real.display()
            );
            walk_mount(case, image, mnt, &path, depth + 1, w);
        } else if ft.is_file() {
            let mut buf = vec![0u8; 64 * 1024];
            match File::open(&path).and_then(|mut f| f.read(&mut buf)) {
                Ok(_) => {}
                Err(e) => w.errors.push(format!("read {}: {e}", path.display())),
            }
        } else {
            assert!(
                !(ft.is_block_device() || ft.is_char_device()),
                "{case}: device node {}",
                path.display()
            );
        }
    }
}

/// Mounted driver; a lazy unmount if the normal one did not happen.
struct Mounted {
    driver: Option<FuseDriver>,
    root: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        drop(self.driver.take());
        let c = CString::new(self.root.as_os_str().as_bytes()).expect("path");
        // SAFETY: valid C string; failure (not mounted) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_images_are_refused_or_served_safely() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut refused = 0;
    let mut served = 0;
    let mut max_ms = 0u128;
    let mut max_rss = 0i64;
    let all = cases();
    for c in &all {
        let path = tmp.path().join(format!("{}.iso", c.name));
        fs::write(&path, &c.image).expect("writing the image");
        if let Ok(dir) = std::env::var("HOSTILE_KEEP") {
            fs::write(Path::new(&dir).join(format!("{}.iso", c.name)), &c.image)
                .expect("keeping the image");
        }

        // Reader API.
        let api = exercise(c.image.clone(), c.cat.map(|(p, _)| p));
        match (c.want, &api) {
            (Want::Refused, Err(e)) => assert!(e.to_string().contains(c.why), "{}: {e}", c.name),
            (Want::Served, Ok(_)) => {}
            (want, got) => panic!("{}: wanted {want:?} from the reader, got {got:?}", c.name),
        }

        // isomgr ls -R --json.
        let ls = run_measured(
            tmp.path(),
            &[
                OsStr::new("ls"),
                OsStr::new("-R"),
                OsStr::new("--json"),
                path.as_os_str(),
                OsStr::new("/"),
            ],
        );
        max_ms = max_ms.max(ls.ms);
        max_rss = max_rss.max(ls.rss_kib);
        match c.want {
            Want::Refused => {
                assert_clean_failure(c.name, "ls -R", &ls);
                assert!(
                    ls.stderr.contains(c.why),
                    "{}: ls -R says {}",
                    c.name,
                    ls.stderr
                );
                refused += 1;
            }
            Want::Served => {
                assert_eq!(ls.code, Some(0), "{}: ls -R failed: {}", c.name, ls.stderr);
                check_listing(c.name, &ls.stdout);
                served += 1;
            }
        }

        // isomgr cat: the expected bytes, or a clean failure; never a host file.
        if let Some((p, want)) = c.cat {
            let cat = run_measured(
                tmp.path(),
                &[OsStr::new("cat"), path.as_os_str(), OsStr::new(p)],
            );
            max_ms = max_ms.max(cat.ms);
            max_rss = max_rss.max(cat.rss_kib);
            match want {
                Some(bytes) => {
                    assert_eq!(cat.code, Some(0), "{}: cat {p}: {}", c.name, cat.stderr);
                    assert_eq!(cat.stdout, bytes, "{}: cat {p}", c.name);
                }
                None => {
                    assert_clean_failure(c.name, &format!("cat {p}"), &cat);
                    assert!(
                        cat.stdout.len() <= 64 * 1024,
                        "{}: cat {p} printed {} bytes",
                        c.name,
                        cat.stdout.len()
                    );
                }
            }
            for host in ["/etc/shadow", "/etc/passwd"] {
                if let Ok(h) = fs::read(host) {
                    assert!(
                        h.is_empty() || cat.stdout != h,
                        "{}: cat {p} printed the host's {host}",
                        c.name
                    );
                }
            }
        }
        assert!(max_ms < MAX_MS, "{}: took {max_ms} ms", c.name);
        assert!(max_rss < MAX_RSS_KIB, "{}: peak RSS {max_rss} KiB", c.name);
    }
    println!(
        "hostile: cases={} refused={refused} served_safely={served} max_ms={max_ms} max_rss_kib={max_rss}",
        all.len()
    );
}

#[test]
fn hostile_images_through_the_fuse_mount_stay_inside_it() {
    if !can_mount("hostile_images_through_the_fuse_mount_stay_inside_it") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mount point");
    let driver = FuseDriver::mount(&mnt).expect("mounting the FUSE driver");
    let mounted = Mounted {
        root: driver.root().to_owned(),
        driver: Some(driver),
    };
    let mnt = mounted.root.clone();
    let mut opened = Vec::new();
    let pool = FdPool::new(usize::MAX);
    for c in cases() {
        let path = tmp.path().join(format!("{}.iso", c.name));
        fs::write(&path, &c.image).expect("writing the image");
        // Images the reader cannot open at all are not served; every case here opens.
        let file = pool
            .adopt(File::open(&path).expect("image"), &path)
            .expect("inspecting the image");
        let image = Image::open(file).expect("opening the image");
        mounted
            .driver
            .as_ref()
            .expect("driver")
            .add(c.name, Arc::new(image))
            .expect("adding the medium");
        opened.push((c.name, Image::open(c.image).expect("opening the image")));
    }
    let mut summary = Vec::new();
    for (name, image) in &opened {
        let mut w = MountWalk::default();
        walk_mount(name, image, &mnt, &mnt.join(name), 1, &mut w);
        summary.push(format!(
            "{name}: entries={} depth={} errors={:?}",
            w.entries, w.depth, w.errors
        ));
    }
    for line in &summary {
        println!("fuse {line}");
    }
    let mut mounted = mounted;
    let driver = mounted.driver.take().expect("driver");
    driver.unmount().expect("unmounting");
}
