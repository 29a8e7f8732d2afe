//! The image plan: both hierarchies, every LBA, and the metadata bytes.
//!
//! Pure: takes a [`Tree`] and options, returns a [`Plan`] holding the metadata region (system
//! area, descriptors, path tables, directories, continuation areas) and where each file's data
//! goes. Sector map: 0-15 zero, 16 PVD, (17 Joliet SVD), terminator, path tables (L and M for
//! each tree), primary directories in path-table order each followed by its continuation
//! areas (libarchive reads them only there), Joliet directories, then file data in walk
//! order, each file once and shared by both trees.
//!
//! The primary tree keeps at most 8 levels (ECMA-119 6.8.2.1): a directory deeper than that
//! moves to `/rr_moved` and leaves a placeholder with RRIP CL; it carries RE, and its `..` a
//! PL. `rr_moved`'s own record carries RE too, so that Rock Ridge readers hide it. The Joliet
//! tree keeps the real hierarchy; it has no symlinks (it cannot express them).
//!
//! Directory records are encoded twice: once with every LBA zero to learn the sizes, once with
//! the real LBAs. Field widths never depend on values, so the sizes agree (checked).

use super::names::{self, Source};
use super::susp::{self, CeArea};
use super::tree::{Kind, Meta, NodeId, Tree};
use super::{Error, Options, Warning};
use crate::iso9660::ondisk::{
    self, encode_dec_datetime, encode_dir_time, file_flags, mode, put_be16, put_be32, put_both16,
    put_both32, put_bytes, put_le16, put_le32, put_padded, pvd, vd_type, DirectoryRecordFields,
    DEC_DATETIME_UNSET, FIRST_DESCRIPTOR_SECTOR, JOLIET_ESCAPES, MAX_RECORD_LEN, SECTOR_SIZE,
    STANDARD_ID,
};

const SECTOR: usize = SECTOR_SIZE as usize;
/// Deepest level of the primary hierarchy; the root is level 1 (ECMA-119 6.8.2.1).
pub const MAX_LEVEL: u32 = 8;
/// Largest extent of a multi-extent file: the largest whole number of sectors below 4 GiB.
pub const MAX_EXTENT: u64 = 0xFFFF_F800;
/// Path tables number directories with 16 bits (ECMA-119 9.4.5).
const MAX_DIRS: usize = 65_535;
/// Symlink targets this long or longer are written (Rock Ridge has no limit, and the kernel,
/// bsdtar and isomgr read them), but libisofs (xorriso 1.5.4) refuses the whole image over one:
/// "Rock Ridge path too long". So they are warned about.
const LIBISOFS_MAX_TARGET: usize = 1024;

/// Files the writer copies with `copy_file_range` (larger than this) start on a file-system
/// block boundary, so the kernel can clone them (see below).
const REFLINK_MIN: u64 = super::stream::SMALL_FILE;
/// Sectors per 4 KiB file-system block.
const SECTORS_PER_BLOCK: u64 = 4096 / SECTOR_SIZE;
/// Files at least this large start on a 2 MiB boundary. The page cache holds a large file in
/// folios of up to 2 MiB; where a copy's source and target offsets agree modulo that size, the
/// kernel copies whole folios (on ext4 here, 1 GiB in 0.30 s instead of 0.35 s, as fast as
/// `cp`, which copies to offset 0). The padding is a hole, so it takes no space, and adds at
/// most 2 MiB, 3%, to the image's length.
const FOLIO_ALIGN_MIN: u64 = 64 << 20;
/// Sectors per 2 MiB.
const SECTORS_PER_FOLIO: u64 = (2 << 20) / SECTOR_SIZE;
const SYSTEM_ID: &[u8] = b"LINUX";
/// Zero sectors ending the volume (300 KiB, what genisoimage and xorriso add): readers that
/// fetch a medium in blocks past what they asked for fail on the last sectors without them.
/// GRUB booted from a CD is one: it reads a file in the image's last 16 sectors from 8
/// sectors before it.
pub const PAD_SECTORS: u64 = 150;
const APPLICATION_ID: &[u8] = b"ISOMGR MKISO";

/// What one record of a primary directory stands for.
#[derive(Clone, Copy, Debug)]
enum Rec {
    Dir(usize),
    File(NodeId),
    Symlink(NodeId),
    /// A deep directory's place in its real parent; it lives at primary dir `.1`.
    Placeholder(NodeId, usize),
    /// A relocated directory inside `rr_moved`.
    Relocated(usize),
}

#[derive(Debug)]
struct Dir {
    /// Source directory, `None` for `rr_moved`.
    node: Option<NodeId>,
    parent: usize,
    /// Identifier in the path table (a single 0 byte for the root).
    id: Vec<u8>,
    /// Rock Ridge name (used for `rr_moved`, whose name is not in the tree).
    name: Vec<u8>,
    /// Real parent (primary dir index) of a relocated directory.
    relocated_from: Option<usize>,
    /// Records after `.` and `..`, sorted.
    recs: Vec<(Vec<u8>, Rec)>,
}

#[derive(Debug)]
struct JDir {
    node: NodeId,
    parent: usize,
    id: Vec<u8>,
    /// (UCS-2 identifier, node, Joliet dir index for subdirectories)
    recs: Vec<(Vec<u8>, NodeId, Option<usize>)>,
}

/// Where things landed.
#[derive(Clone, Debug, Default)]
struct Addrs {
    dir: Vec<(u32, u32)>,
    /// First sector of each primary directory's continuation areas (right after its extent).
    dir_ce: Vec<u32>,
    jdir: Vec<(u32, u32)>,
    file: Vec<u32>,
}

/// The complete plan of an image.
#[derive(Debug)]
pub struct Plan {
    /// Sectors 0 up to the first data sector.
    pub metadata: Vec<u8>,
    /// Byte offset in the image of each [`Tree::data`] entry, in the same order.
    pub data_offsets: Vec<u64>,
    /// Image size in sectors: the volume and the partitions appended after it.
    pub total_sectors: u32,
    /// The ISO 9660 volume's size in sectors (what its descriptors say).
    pub volume_sectors: u32,
    /// The partitions appended after the volume, where they go.
    pub appended: Vec<super::partition::Placed>,
    /// [`Tree::data`] entries made here rather than read from the source (the boot catalog),
    /// with their bytes.
    pub generated: Vec<(usize, Vec<u8>)>,
    /// What goes into the image's copy of the BIOS boot image (a boot info table, GRUB's
    /// core image sector).
    pub patch: super::boot::Patch,
    /// The BIOS boot image's [`Tree::data`] entry and first sector, for a hybrid MBR.
    pub bios_boot: Option<(usize, u32)>,
    /// The UEFI boot image's first sector and size in bytes (a file of the image or an
    /// appended partition), for a hybrid MBR.
    pub efi_boot: Option<(u32, u64)>,
    /// What ends the image, in place of zeros (the backup GPT).
    pub tail: Vec<u8>,
}

impl Plan {
    pub fn image_bytes(&self) -> u64 {
        u64::from(self.total_sectors) * SECTOR_SIZE
    }
}

/// Attributes as written, after `--rational` and `SOURCE_DATE_EPOCH`.
fn attrs(m: &Meta, opts: &Options) -> (u32, u32, u32, [i64; 3]) {
    let mut mode_bits = m.mode;
    let (mut uid, mut gid) = (m.uid, m.gid);
    if opts.rational {
        uid = 0;
        gid = 0;
        let ty = mode_bits & mode::S_IFMT;
        if ty != mode::S_IFLNK {
            let mut perm = 0o444;
            if ty == mode::S_IFDIR || mode_bits & 0o111 != 0 {
                perm |= 0o111;
            }
            mode_bits = ty | perm;
        }
    }
    let times = if opts.source_date_epoch.is_some() {
        [m.mtime, m.mtime, m.mtime]
    } else {
        [m.mtime, m.atime, m.ctime]
    };
    (mode_bits, uid, gid, times)
}

fn rr_base(tree: &Tree, id: NodeId, opts: &Options, nlink_override: Option<u32>) -> Vec<Vec<u8>> {
    let Some(n) = tree.nodes.get(id) else {
        return Vec::new();
    };
    let (m, uid, gid, [mt, at, ct]) = attrs(&n.meta, opts);
    vec![
        susp::px(m, nlink_override.unwrap_or(n.nlink), uid, gid, n.serial),
        susp::tf(mt, at, ct),
    ]
}

fn name_of(tree: &Tree, id: NodeId) -> &[u8] {
    tree.nodes.get(id).map_or(&[], |n| &n.name)
}

fn is_dir(tree: &Tree, id: NodeId) -> bool {
    matches!(tree.nodes.get(id).map(|n| &n.kind), Some(Kind::Dir { .. }))
}

/// Builds the primary hierarchy: directories in path-table order (breadth first, children
/// sorted), deep ones relocated.
fn primary(
    tree: &Tree,
    opts: &Options,
    warnings: &mut Vec<Warning>,
    root: &std::path::Path,
) -> Vec<Dir> {
    // Unordered dirs first: (node, parent tmp idx, level, relocated_from, records).
    struct T {
        node: Option<NodeId>,
        parent: usize,
        level: u32,
        relocated_from: Option<usize>,
        name: Vec<u8>,
        recs: Vec<(Vec<u8>, Rec, bool)>, // (raw name, rec, is_dir) before naming
    }
    let mut t: Vec<T> = vec![T {
        node: Some(0),
        parent: 0,
        level: 1,
        relocated_from: None,
        name: Vec::new(),
        recs: Vec::new(),
    }];
    let mut rr_moved: Option<usize> = None;
    let mut k = 0;
    while k < t.len() {
        let Some(node) = t.get(k).and_then(|d| d.node) else {
            k += 1;
            continue;
        };
        let level = t.get(k).map_or(1, |d| d.level);
        for &c in tree.children(node) {
            let Some(cn) = tree.nodes.get(c) else {
                continue;
            };
            let name = name_of(tree, c);
            if opts.rock_ridge && name.len() > susp::LINUX_NAME_MAX {
                warnings.push(Warning::NameCutByLinux {
                    path: super::tree::node_path(tree, root, c),
                    len: name.len(),
                    shown: susp::linux_shown_len(name),
                });
            }
            let rec = match &cn.kind {
                Kind::File { .. } => (Rec::File(c), false),
                Kind::Symlink { target } => {
                    if !opts.rock_ridge {
                        warnings.push(Warning::SkippedSymlink {
                            path: super::tree::node_path(tree, root, c),
                        });
                        continue;
                    }
                    if target.len() >= LIBISOFS_MAX_TARGET {
                        warnings.push(Warning::LongSymlinkTarget {
                            path: super::tree::node_path(tree, root, c),
                            len: target.len(),
                        });
                    }
                    (Rec::Symlink(c), false)
                }
                Kind::Dir { .. } => {
                    let idx = t.len();
                    if level < MAX_LEVEL {
                        t.push(T {
                            node: Some(c),
                            parent: k,
                            level: level + 1,
                            relocated_from: None,
                            name: cn.name.clone(),
                            recs: Vec::new(),
                        });
                        (Rec::Dir(idx), true)
                    } else {
                        let mv = match rr_moved {
                            Some(m) => m,
                            None => {
                                let m = t.len();
                                let taken = tree
                                    .children(0)
                                    .iter()
                                    .any(|&x| name_of(tree, x) == b"rr_moved");
                                t.push(T {
                                    node: None,
                                    parent: 0,
                                    level: 2,
                                    relocated_from: None,
                                    name: if taken {
                                        b".rr_moved".to_vec()
                                    } else {
                                        b"rr_moved".to_vec()
                                    },
                                    recs: Vec::new(),
                                });
                                rr_moved = Some(m);
                                m
                            }
                        };
                        let idx = t.len();
                        t.push(T {
                            node: Some(c),
                            parent: mv,
                            level: 3,
                            relocated_from: Some(k),
                            name: cn.name.clone(),
                            recs: Vec::new(),
                        });
                        if let Some(m) = t.get_mut(mv) {
                            m.recs.push((cn.name.clone(), Rec::Relocated(idx), true));
                        }
                        (Rec::Placeholder(c, idx), true)
                    }
                }
            };
            if let Some(d) = t.get_mut(k) {
                d.recs.push((cn.name.clone(), rec.0, rec.1));
            }
        }
        k += 1;
    }
    if let Some(m) = rr_moved {
        let name = t.get(m).map(|d| d.name.clone()).unwrap_or_default();
        if let Some(r) = t.get_mut(0) {
            r.recs.push((name, Rec::Dir(m), true));
        }
    }
    // Name and sort each directory's records.
    let mut named: Vec<Vec<(Vec<u8>, Rec)>> = Vec::with_capacity(t.len());
    for d in &t {
        let srcs: Vec<Source<'_>> = d
            .recs
            .iter()
            .map(|(n, _, is_dir)| Source {
                name: n,
                is_dir: *is_dir,
            })
            .collect();
        let ids = names::iso_identifiers(&srcs);
        let mut recs: Vec<(Vec<u8>, Rec)> =
            ids.into_iter().zip(d.recs.iter().map(|r| r.1)).collect();
        recs.sort_by(|a, b| names::iso_sort_key(&a.0).cmp(&names::iso_sort_key(&b.0)));
        named.push(recs);
    }
    // Breadth-first order from the root gives the path-table order.
    let mut order = vec![0usize];
    let mut ids: Vec<Vec<u8>> = vec![vec![0]];
    let mut i = 0;
    while let Some(&d) = order.get(i) {
        for (id, rec) in named.get(d).map(Vec::as_slice).unwrap_or_default() {
            if let Rec::Dir(c) | Rec::Relocated(c) = rec {
                order.push(*c);
                ids.push(id.clone());
            }
        }
        i += 1;
    }
    let mut new_index = vec![0usize; t.len()];
    for (new, &old) in order.iter().enumerate() {
        if let Some(slot) = new_index.get_mut(old) {
            *slot = new;
        }
    }
    let remap = |x: usize| new_index.get(x).copied().unwrap_or(0);
    order
        .iter()
        .zip(ids)
        .map(|(&old, id)| {
            let d = t.get(old);
            let recs = named
                .get(old)
                .map(|r| {
                    r.iter()
                        .map(|(id, rec)| {
                            let rec = match *rec {
                                Rec::Dir(c) => Rec::Dir(remap(c)),
                                Rec::Relocated(c) => Rec::Relocated(remap(c)),
                                Rec::Placeholder(n, c) => Rec::Placeholder(n, remap(c)),
                                other => other,
                            };
                            (id.clone(), rec)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Dir {
                node: d.and_then(|d| d.node),
                parent: remap(d.map_or(0, |d| d.parent)),
                id,
                name: d.map(|d| d.name.clone()).unwrap_or_default(),
                relocated_from: d.and_then(|d| d.relocated_from).map(remap),
                recs,
            }
        })
        .collect()
}

/// Builds the Joliet hierarchy: the real tree without symlinks, breadth first.
fn joliet(tree: &Tree) -> Vec<JDir> {
    let mut dirs = vec![JDir {
        node: 0,
        parent: 0,
        id: vec![0],
        recs: Vec::new(),
    }];
    let mut k = 0;
    while let Some(node) = dirs.get(k).map(|d| d.node) {
        let kids: Vec<NodeId> = tree
            .children(node)
            .iter()
            .copied()
            .filter(|&c| {
                !matches!(
                    tree.nodes.get(c).map(|n| &n.kind),
                    Some(Kind::Symlink { .. })
                )
            })
            .collect();
        let srcs: Vec<Source<'_>> = kids
            .iter()
            .map(|&c| Source {
                name: name_of(tree, c),
                is_dir: is_dir(tree, c),
            })
            .collect();
        let ids = names::joliet_identifiers(&srcs);
        let mut recs: Vec<(Vec<u16>, NodeId)> = ids.into_iter().zip(kids).collect();
        recs.sort();
        let mut out = Vec::with_capacity(recs.len());
        for (units, c) in recs {
            let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_be_bytes()).collect();
            let sub = if is_dir(tree, c) {
                let idx = dirs.len();
                dirs.push(JDir {
                    node: c,
                    parent: k,
                    id: bytes.clone(),
                    recs: Vec::new(),
                });
                Some(idx)
            } else {
                None
            };
            out.push((bytes, c, sub));
        }
        if let Some(d) = dirs.get_mut(k) {
            d.recs = out;
        }
        k += 1;
    }
    dirs
}

/// Appends a record to a directory extent, starting a new sector when it would not fit
/// (ECMA-119 6.8.1.1: records never cross a sector).
fn push_record(buf: &mut Vec<u8>, f: &DirectoryRecordFields<'_>) {
    let len = ondisk::record_len(f.identifier.len(), f.system_use.len());
    let used = buf.len() % SECTOR;
    if used + len > SECTOR {
        buf.resize(buf.len() + SECTOR - used, 0);
    }
    ondisk::encode_directory_record(f, buf);
}

fn pad_sector(buf: &mut Vec<u8>) {
    let used = buf.len() % SECTOR;
    if used != 0 || buf.is_empty() {
        buf.resize(buf.len() + SECTOR - used, 0);
    }
}

/// Room for system use in a record with an identifier of `id_len` bytes.
fn su_room(id_len: usize) -> usize {
    MAX_RECORD_LEN.saturating_sub(ondisk::record_len(id_len, 0))
}

/// One directory's bytes as [`emit`] makes them, handed on at once so that the metadata is
/// held once (in the plan), not also per directory.
enum Emitted<'a> {
    /// Primary directory `i`: its extent and the continuation areas that follow it; libarchive
    /// reads a continuation area only when it directly follows the directory being read.
    Primary {
        i: usize,
        records: &'a [u8],
        ce: &'a [u8],
    },
    /// Joliet directory `i`'s extent.
    Joliet { i: usize, records: &'a [u8] },
}

fn file_extents(size: u64, lba: u32) -> Vec<(u32, u32, bool)> {
    let mut out = Vec::new();
    let mut rest = size;
    let mut at = lba;
    loop {
        let part = rest.min(MAX_EXTENT);
        rest -= part;
        out.push((at, part as u32, rest > 0));
        if rest == 0 {
            break;
        }
        at = at.saturating_add((MAX_EXTENT / SECTOR_SIZE) as u32);
    }
    out
}

/// The (extent, length, flags) of each directory record a file needs: one, or several with the
/// multi-extent flag on all but the last (ECMA-119 9.1.6, level 3).
fn file_records(tree: &Tree, a: &Addrs, node: NodeId) -> Vec<(u32, u32, u8)> {
    let data = match tree.nodes.get(node).map(|x| &x.kind) {
        Some(Kind::File { data }) => *data,
        _ => 0,
    };
    let size = tree.data.get(data).map_or(0, |x| x.size);
    let lba = a.file.get(data).copied().unwrap_or(0);
    file_extents(size, lba)
        .into_iter()
        .map(|(l, s, more)| (l, s, if more { file_flags::MULTI_EXTENT } else { 0 }))
        .collect()
}

fn emit(
    tree: &Tree,
    opts: &Options,
    dirs: &[Dir],
    jdirs: &[JDir],
    a: &Addrs,
    out: &mut dyn FnMut(Emitted<'_>),
) {
    let rr = opts.rock_ridge;
    let dir_addr = |i: usize| a.dir.get(i).copied().unwrap_or((0, 0));
    let time_of = |id: Option<NodeId>| {
        let n = tree.nodes.get(id.unwrap_or(0));
        encode_dir_time(n.map_or(0, |n| n.meta.mtime))
    };
    let rr_moved_nlink = |i: usize| {
        let subs = dirs.get(i).map_or(0, |d| {
            d.recs
                .iter()
                .filter(|r| matches!(r.1, Rec::Dir(_) | Rec::Relocated(_)))
                .count()
        });
        2 + subs as u32
    };
    // Rock Ridge entries describing primary directory `i` itself (`rr_moved` borrows the root's
    // attributes with its own link count and serial).
    let dir_rr = |i: usize| -> Vec<Vec<u8>> {
        match dirs.get(i).and_then(|d| d.node) {
            Some(n) => rr_base(tree, n, opts, None),
            None => {
                let mut v = rr_base(tree, 0, opts, Some(rr_moved_nlink(i)));
                if let Some(px) = v.first_mut() {
                    let serial = u32::try_from(tree.nodes.len() + 1).unwrap_or(u32::MAX);
                    put_both32(px, 36, serial);
                }
                v
            }
        }
    };
    for (i, d) in dirs.iter().enumerate() {
        let mut buf = Vec::new();
        let mut ce = CeArea {
            base: a.dir_ce.get(i).copied().unwrap_or(0),
            bytes: Vec::new(),
        };
        let (lba, size) = dir_addr(i);
        // "."
        let mut su = Vec::new();
        if rr {
            let mut e = Vec::new();
            if i == 0 {
                e.push(susp::sp());
            }
            e.extend(dir_rr(i));
            if i == 0 {
                e.push(susp::er());
            }
            su = susp::pack(&e, su_room(1), &mut ce);
        }
        push_record(
            &mut buf,
            &DirectoryRecordFields {
                extent: lba,
                data_length: size,
                recorded: time_of(d.node),
                flags: file_flags::DIRECTORY,
                identifier: &[0],
                system_use: &su,
            },
        );
        // ".."
        let (plba, psize) = dir_addr(d.parent);
        let mut su = Vec::new();
        if rr {
            let mut e = dir_rr(d.parent);
            if let Some(from) = d.relocated_from {
                e.push(susp::pl(dir_addr(from).0));
            }
            su = susp::pack(&e, su_room(1), &mut ce);
        }
        push_record(
            &mut buf,
            &DirectoryRecordFields {
                extent: plba,
                data_length: psize,
                recorded: time_of(dirs.get(d.parent).and_then(|p| p.node)),
                flags: file_flags::DIRECTORY,
                identifier: &[1],
                system_use: &su,
            },
        );
        for (id, rec) in &d.recs {
            let node = match *rec {
                Rec::Dir(c) | Rec::Relocated(c) => dirs.get(c).and_then(|x| x.node),
                Rec::File(n) | Rec::Symlink(n) | Rec::Placeholder(n, _) => Some(n),
            };
            let mut entries = Vec::new();
            if rr {
                match (*rec, node) {
                    (Rec::Dir(c), None) => {
                        // `rr_moved` itself carries RE, as libisofs marks it: Linux's isofs
                        // and libisofs then hide it (without, the kernel shows it empty).
                        entries = dir_rr(c);
                        entries.extend(susp::nm(dirs.get(c).map_or(&[][..], |x| &x.name)));
                        entries.push(susp::re());
                    }
                    (_, Some(n)) => {
                        entries = rr_base(tree, n, opts, None);
                        entries.extend(susp::nm(name_of(tree, n)));
                        match *rec {
                            Rec::Symlink(_) => {
                                if let Some(Kind::Symlink { target }) =
                                    tree.nodes.get(n).map(|x| &x.kind)
                                {
                                    entries.extend(susp::sl(target));
                                }
                            }
                            Rec::Placeholder(_, c) => entries.push(susp::cl(dir_addr(c).0)),
                            Rec::Relocated(_) => entries.push(susp::re()),
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            let time = time_of(node);
            let parts: Vec<(u32, u32, u8)> = match *rec {
                Rec::Dir(c) | Rec::Relocated(c) => {
                    let (l, s) = dir_addr(c);
                    vec![(l, s, file_flags::DIRECTORY)]
                }
                Rec::Placeholder(_, c) => vec![(dir_addr(c).0, 0, 0)],
                Rec::Symlink(_) => vec![(0, 0, 0)],
                Rec::File(n) => file_records(tree, a, n),
            };
            for (l, s, flags) in parts {
                let su = if rr {
                    susp::pack(&entries, su_room(id.len()), &mut ce)
                } else {
                    Vec::new()
                };
                push_record(
                    &mut buf,
                    &DirectoryRecordFields {
                        extent: l,
                        data_length: s,
                        recorded: time,
                        flags,
                        identifier: id,
                        system_use: &su,
                    },
                );
            }
        }
        pad_sector(&mut buf);
        out(Emitted::Primary {
            i,
            records: &buf,
            ce: &ce.finish(),
        });
    }
    let jaddr = |i: usize| a.jdir.get(i).copied().unwrap_or((0, 0));
    for (i, d) in jdirs.iter().enumerate() {
        let mut buf = Vec::new();
        let (lba, size) = jaddr(i);
        let (plba, psize) = jaddr(d.parent);
        for (id, l, s, node) in [
            (0u8, lba, size, d.node),
            (1u8, plba, psize, jdirs.get(d.parent).map_or(0, |p| p.node)),
        ] {
            push_record(
                &mut buf,
                &DirectoryRecordFields {
                    extent: l,
                    data_length: s,
                    recorded: time_of(Some(node)),
                    flags: file_flags::DIRECTORY,
                    identifier: &[id],
                    system_use: &[],
                },
            );
        }
        for (id, node, sub) in &d.recs {
            let time = time_of(Some(*node));
            let parts: Vec<(u32, u32, u8)> = match sub {
                Some(c) => {
                    let (l, s) = jaddr(*c);
                    vec![(l, s, file_flags::DIRECTORY)]
                }
                None => file_records(tree, a, *node),
            };
            for (l, s, flags) in parts {
                push_record(
                    &mut buf,
                    &DirectoryRecordFields {
                        extent: l,
                        data_length: s,
                        recorded: time,
                        flags,
                        identifier: id,
                        system_use: &[],
                    },
                );
            }
        }
        pad_sector(&mut buf);
        out(Emitted::Joliet { i, records: &buf });
    }
}

/// Path table (ECMA-119 9.4): `entries` are (identifier, extent, parent number) in order.
fn path_table(entries: &[(Vec<u8>, u32, u16)], big_endian: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, lba, parent) in entries {
        let at = out.len();
        out.resize(at + 8 + id.len() + id.len() % 2, 0);
        if let Some(r) = out.get_mut(at..) {
            put_bytes(r, 0, &[id.len() as u8, 0]);
            if big_endian {
                put_be32(r, 2, *lba);
                put_be16(r, 6, *parent);
            } else {
                put_le32(r, 2, *lba);
                put_le16(r, 6, *parent);
            }
            put_bytes(r, 8, id);
        }
    }
    out
}

fn sectors(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(SECTOR_SIZE)
}

fn root_record(lba: u32, size: u32, recorded: [u8; 7]) -> Vec<u8> {
    let mut r = Vec::new();
    ondisk::encode_directory_record(
        &DirectoryRecordFields {
            extent: lba,
            data_length: size,
            recorded,
            flags: file_flags::DIRECTORY,
            identifier: &[0],
            system_use: &[],
        },
        &mut r,
    );
    r
}

struct Descriptor {
    ty: u8,
    /// The whole field, as [`names::volume_id_field`] gives it.
    volume_id: [u8; 32],
    volume_sectors: u32,
    pt_size: u32,
    l_pt: u32,
    m_pt: u32,
    root: Vec<u8>,
    time: i64,
    joliet: bool,
}

/// A primary (ECMA-119 8.4) or Joliet supplementary (8.5) volume descriptor.
fn descriptor(d: &Descriptor) -> Vec<u8> {
    let mut v = vec![0u8; SECTOR];
    put_bytes(&mut v, 0, &[d.ty]);
    put_bytes(&mut v, 1, STANDARD_ID);
    put_bytes(&mut v, 6, &[1]);
    let text = |s: &[u8]| -> Vec<u8> {
        if d.joliet {
            s.iter().flat_map(|&c| [0, c]).collect()
        } else {
            s.to_vec()
        }
    };
    let fill = |v: &mut Vec<u8>, r: std::ops::Range<usize>, s: &[u8]| {
        if d.joliet {
            let units = (r.end - r.start) / 2;
            let mut b: Vec<u8> = s.to_vec();
            while b.len() / 2 < units {
                b.extend_from_slice(&[0, b' ']);
            }
            put_padded(v, r, &b, 0);
        } else {
            put_padded(v, r, s, b' ');
        }
    };
    fill(&mut v, pvd::SYSTEM_ID, &text(SYSTEM_ID));
    put_bytes(&mut v, pvd::VOLUME_ID.start, &d.volume_id);
    put_both32(&mut v, pvd::VOLUME_SPACE_SIZE, d.volume_sectors);
    if d.joliet {
        if let Some(esc) = JOLIET_ESCAPES.get(2) {
            put_bytes(&mut v, pvd::ESCAPE_SEQUENCES.start, *esc);
        }
    }
    put_both16(&mut v, pvd::VOLUME_SET_SIZE, 1);
    put_both16(&mut v, pvd::VOLUME_SEQUENCE_NUMBER, 1);
    put_both16(&mut v, pvd::LOGICAL_BLOCK_SIZE, SECTOR as u16);
    put_both32(&mut v, pvd::PATH_TABLE_SIZE, d.pt_size);
    put_le32(&mut v, pvd::L_PATH_TABLE, d.l_pt);
    put_be32(&mut v, pvd::M_PATH_TABLE, d.m_pt);
    put_bytes(&mut v, pvd::ROOT_DIRECTORY_RECORD, &d.root);
    fill(&mut v, pvd::VOLUME_SET_ID, &[]);
    fill(&mut v, pvd::PUBLISHER_ID, &[]);
    fill(&mut v, pvd::DATA_PREPARER_ID, &[]);
    fill(&mut v, pvd::APPLICATION_ID, &text(APPLICATION_ID));
    fill(&mut v, pvd::COPYRIGHT_FILE_ID, &[]);
    fill(&mut v, pvd::ABSTRACT_FILE_ID, &[]);
    fill(&mut v, pvd::BIBLIOGRAPHIC_FILE_ID, &[]);
    let t = encode_dec_datetime(d.time);
    put_bytes(&mut v, pvd::CREATION_TIME, &t);
    put_bytes(&mut v, pvd::MODIFICATION_TIME, &t);
    put_bytes(&mut v, pvd::EXPIRATION_TIME, &DEC_DATETIME_UNSET);
    put_bytes(&mut v, pvd::EFFECTIVE_TIME, &DEC_DATETIME_UNSET);
    put_bytes(&mut v, pvd::FILE_STRUCTURE_VERSION, &[1]);
    v
}

fn to_u32(v: u64) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::TooLarge { sectors: v })
}

/// Where one volume's directory tree lies (the primary one with its Joliet twin): its path
/// tables (L and M, primary then Joliet) and directories, in sectors as that volume counts
/// them.
struct TreeAt {
    pt: [u64; 4],
    addrs: Addrs,
}

/// Places a directory tree from `lba` on: the path tables (`pt_sizes`, primary and Joliet, in
/// bytes), then each primary directory (`sizes`: its records and continuation area) and each
/// Joliet one (`jsizes`). The files' sectors are left for the caller.
fn place_tree(
    lba: &mut u64,
    sizes: &[(usize, usize)],
    jsizes: &[usize],
    (p_pt_size, j_pt_size): (usize, usize),
    joliet: bool,
) -> Result<TreeAt, Error> {
    let mut pt = [0u64; 4];
    pt[0] = *lba;
    *lba += sectors(p_pt_size);
    pt[1] = *lba;
    *lba += sectors(p_pt_size);
    if joliet {
        pt[2] = *lba;
        *lba += sectors(j_pt_size);
        pt[3] = *lba;
        *lba += sectors(j_pt_size);
    }
    let mut a = Addrs::default();
    for &(d, ce) in sizes {
        a.dir.push((to_u32(*lba)?, d as u32));
        *lba += sectors(d);
        a.dir_ce.push(to_u32(*lba)?);
        *lba += sectors(ce);
    }
    for &d in jsizes {
        a.jdir.push((to_u32(*lba)?, d as u32));
        *lba += sectors(d);
    }
    Ok(TreeAt { pt, addrs: a })
}

impl TreeAt {
    /// This tree as the volume that starts `offset` sectors into the image counts it, with the
    /// files at `files` (image sectors).
    fn shifted(&self, offset: u64, files: &[u32]) -> TreeAt {
        let o = u32::try_from(offset).unwrap_or(u32::MAX);
        let s = |v: u32| v.saturating_sub(o);
        TreeAt {
            pt: self.pt.map(|l| l.saturating_sub(offset)),
            addrs: Addrs {
                dir: self.addrs.dir.iter().map(|&(l, n)| (s(l), n)).collect(),
                dir_ce: self.addrs.dir_ce.iter().map(|&l| s(l)).collect(),
                jdir: self.addrs.jdir.iter().map(|&(l, n)| (s(l), n)).collect(),
                file: files.iter().map(|&l| s(l)).collect(),
            },
        }
    }
}

/// A directory's path table identifier and its parent's index.
type PathId = (Vec<u8>, usize);

/// What writing a volume's descriptors and trees takes, for each volume of the image.
struct VolumeSet<'a> {
    tree: &'a Tree,
    opts: &'a Options,
    dirs: &'a [Dir],
    jdirs: &'a [JDir],
    /// The primary directories' sizes (records, continuation area) and the Joliet ones'.
    sizes: (&'a [(usize, usize)], &'a [usize]),
    /// Each directory's path table identifier and parent, primary and Joliet.
    ids: (&'a [PathId], &'a [PathId]),
    /// Path table sizes in bytes, primary and Joliet.
    pt_sizes: (usize, usize),
    /// The descriptors' time, and the root directory's recorded time.
    time: (i64, [u8; 7]),
}

impl VolumeSet<'_> {
    /// Writes the directories into `meta` with the addresses `a` (as their volume counts
    /// them), each at its sector plus `shift` (where that volume starts in the image).
    fn put_tree(&self, meta: &mut [u8], a: &Addrs, shift: u64) -> Result<(), Error> {
        let at = |l: u32| ((u64::from(l) + shift) * SECTOR_SIZE) as usize;
        let mut same_sizes = true;
        let (sizes, jsizes) = self.sizes;
        emit(
            self.tree,
            self.opts,
            self.dirs,
            self.jdirs,
            a,
            &mut |e| match e {
                Emitted::Primary { i, records, ce } => {
                    same_sizes &= sizes.get(i) == Some(&(records.len(), ce.len()));
                    let (l, _) = a.dir.get(i).copied().unwrap_or_default();
                    let cl = a.dir_ce.get(i).copied().unwrap_or_default();
                    put_bytes(meta, at(l), records);
                    put_bytes(meta, at(cl), ce);
                }
                Emitted::Joliet { i, records } => {
                    same_sizes &= jsizes.get(i) == Some(&records.len());
                    let (l, _) = a.jdir.get(i).copied().unwrap_or_default();
                    put_bytes(meta, at(l), records);
                }
            },
        );
        if same_sizes {
            Ok(())
        } else {
            Err(Error::Layout("directory sizes differ between passes"))
        }
    }

    /// The primary (`ty` PRIMARY) or Joliet descriptor of the volume of `volume` sectors whose
    /// tree lies at `t`.
    fn descriptor(&self, t: &TreeAt, ty: u8, volume: u32) -> Vec<u8> {
        let joliet = ty != vd_type::PRIMARY;
        let (root, pt_size, l, m) = if joliet {
            (t.addrs.jdir.first(), self.pt_sizes.1, t.pt[2], t.pt[3])
        } else {
            (t.addrs.dir.first(), self.pt_sizes.0, t.pt[0], t.pt[1])
        };
        let (rl, rs) = root.copied().unwrap_or((0, 0));
        descriptor(&Descriptor {
            ty,
            volume_id: names::volume_id_field(&self.opts.label, joliet),
            volume_sectors: volume,
            pt_size: pt_size as u32,
            l_pt: l as u32,
            m_pt: m as u32,
            root: root_record(rl, rs, self.time.1),
            time: self.time.0,
            joliet,
        })
    }

    /// Writes the descriptors after the primary one from sector `next` (the Joliet one, the
    /// terminator) and the path tables, of the volume of `volume` sectors whose tree lies at
    /// `t` and which starts `shift` sectors into the image.
    fn put_rest(&self, meta: &mut [u8], mut next: u64, t: &TreeAt, volume: u32, shift: u64) {
        let mut put = |l: u64, b: &[u8]| put_bytes(meta, ((l + shift) * SECTOR_SIZE) as usize, b);
        if self.opts.joliet {
            put(next, &self.descriptor(t, vd_type::SUPPLEMENTARY, volume));
            next += 1;
        }
        let mut term = vec![vd_type::TERMINATOR];
        term.extend_from_slice(STANDARD_ID);
        term.push(1);
        put(next, &term);
        let with_lbas =
            |ids: &[(Vec<u8>, usize)], addrs: &[(u32, u32)]| -> Vec<(Vec<u8>, u32, u16)> {
                ids.iter()
                    .zip(addrs)
                    .map(|((id, p), (l, _))| (id.clone(), *l, (*p + 1) as u16))
                    .collect()
            };
        let p_pt = with_lbas(self.ids.0, &t.addrs.dir);
        put(t.pt[0], &path_table(&p_pt, false));
        put(t.pt[1], &path_table(&p_pt, true));
        if self.opts.joliet {
            let j_pt = with_lbas(self.ids.1, &t.addrs.jdir);
            put(t.pt[2], &path_table(&j_pt, false));
            put(t.pt[3], &path_table(&j_pt, true));
        }
    }
}

/// Plans the image of `tree`. `now` is the descriptors' time (`SOURCE_DATE_EPOCH` when set);
/// `root` is the source path, for warnings only.
pub fn plan(
    tree: &Tree,
    opts: &Options,
    now: i64,
    warnings: &mut Vec<Warning>,
    root: &std::path::Path,
) -> Result<Plan, Error> {
    let boot = super::boot::resolve(tree, &opts.boot, root, warnings)?;
    let dirs = primary(tree, opts, warnings, root);
    let jdirs = if opts.joliet {
        joliet(tree)
    } else {
        Vec::new()
    };
    let count = dirs.len().max(jdirs.len());
    if count > MAX_DIRS {
        return Err(Error::TooManyDirectories { count });
    }
    let zero = Addrs {
        dir: vec![(0, 0); dirs.len()],
        dir_ce: vec![0; dirs.len()],
        jdir: vec![(0, 0); jdirs.len()],
        file: vec![0; tree.data.len()],
    };
    // Sizes first (addresses zero: a record's size does not depend on them), then the bytes.
    let mut sizes = vec![(0, 0); dirs.len()];
    let mut jsizes = vec![0; jdirs.len()];
    emit(tree, opts, &dirs, &jdirs, &zero, &mut |e| match e {
        Emitted::Primary { i, records, ce } => {
            if let Some(s) = sizes.get_mut(i) {
                *s = (records.len(), ce.len());
            }
        }
        Emitted::Joliet { i, records } => {
            if let Some(s) = jsizes.get_mut(i) {
                *s = records.len();
            }
        }
    });
    let pt_entries = |dirs: &[(Vec<u8>, usize)]| -> Vec<(Vec<u8>, u32, u16)> {
        dirs.iter()
            .map(|(id, p)| (id.clone(), 0, (*p + 1) as u16))
            .collect()
    };
    let p_ids: Vec<(Vec<u8>, usize)> = dirs.iter().map(|d| (d.id.clone(), d.parent)).collect();
    let j_ids: Vec<(Vec<u8>, usize)> = jdirs.iter().map(|d| (d.id.clone(), d.parent)).collect();
    let p_pt_size = path_table(&pt_entries(&p_ids), false).len();
    let j_pt_size = path_table(&pt_entries(&j_ids), false).len();

    // Assign sectors.
    // The primary descriptor, the boot record, the Joliet one, the terminator.
    let descriptors = 1 + u64::from(boot.is_some()) + u64::from(opts.joliet) + 1;
    let mut lba: u64 = FIRST_DESCRIPTOR_SECTOR + descriptors;
    // With a partition offset, the volume that starts there (xorriso's -partition_offset) has
    // its own descriptors 16 sectors in (no boot record) and its own tree, after the first.
    let offset = u64::from(opts.boot.partition_offset);
    if offset > 0 {
        lba = lba.max(offset + FIRST_DESCRIPTOR_SECTOR + descriptors - u64::from(boot.is_some()));
    }
    let pt_sizes = (p_pt_size, j_pt_size);
    let mut a = place_tree(&mut lba, &sizes, &jsizes, pt_sizes, opts.joliet)?;
    let second = if offset > 0 {
        Some(place_tree(
            &mut lba,
            &sizes,
            &jsizes,
            pt_sizes,
            opts.joliet,
        )?)
    } else {
        None
    };
    let data_start = lba;
    let mut data_offsets = Vec::with_capacity(tree.data.len());
    for f in &tree.data {
        if f.size == 0 {
            // Empty files point at the first data sector, never at LBA 0: libarchive rejects
            // a file whose continuation area lies after its data.
            a.addrs.file.push(to_u32(data_start)?);
            data_offsets.push(data_start * SECTOR_SIZE);
            continue;
        }
        // Large files start on a 4 KiB boundary: where the output's file system shares blocks
        // (XFS, btrfs), the kernel then clones the data instead of copying it. The largest
        // start on a 2 MiB one, where the kernel copies them faster.
        if f.size >= FOLIO_ALIGN_MIN {
            lba = lba.next_multiple_of(SECTORS_PER_FOLIO);
        } else if f.size > REFLINK_MIN {
            lba = lba.next_multiple_of(SECTORS_PER_BLOCK);
        }
        a.addrs.file.push(to_u32(lba)?);
        data_offsets.push(lba * SECTOR_SIZE);
        lba += f.size.div_ceil(SECTOR_SIZE);
    }
    if lba == data_start {
        // no data at all: one zero sector so empty files still point inside the volume
        lba += 1;
    }
    let content_end = lba;
    if opts.pad {
        lba += PAD_SECTORS;
    }
    let appending = !opts.boot.appended.is_empty();
    if opts.boot.gpt && !appending {
        // the backup GPT goes at the end, where nothing of the volume is
        lba = lba.max(content_end + super::hybrid::GPT_BACKUP_SECTORS);
    }
    if opts.boot.isohybrid_mbr.is_some() {
        // whole cylinders of the disk the image becomes, as isohybrid pads it
        lba = lba.next_multiple_of(super::hybrid::CYLINDER_SECTORS);
    }
    let total = to_u32(lba)?;
    // Appended partitions follow the volume (from a cylinder in an isohybrid image, as
    // xorriso puts them); then, in a GPT, the backup GPT.
    let align = if opts.boot.isohybrid_mbr.is_some() {
        super::hybrid::CYLINDER_SECTORS
    } else {
        1
    };
    let appended = super::partition::place(&opts.boot.appended, lba, align)?;
    let mut image_end = appended.last().map_or(lba, |p| p.start + p.image_sectors());
    if appending && (opts.boot.gpt || opts.boot.appended_gpt) {
        image_end += super::hybrid::GPT_BACKUP_SECTORS;
    }
    let image_sectors = to_u32(image_end)?;

    let mut meta = vec![0u8; (data_start * SECTOR_SIZE) as usize];
    let root_time = encode_dir_time(tree.nodes.first().map_or(0, |n| n.meta.mtime));
    let set = VolumeSet {
        tree,
        opts,
        dirs: &dirs,
        jdirs: &jdirs,
        sizes: (&sizes, &jsizes),
        ids: (&p_ids, &j_ids),
        pt_sizes,
        time: (now, root_time),
    };
    set.put_tree(&mut meta, &a.addrs, 0)?;
    let mut put = |l: u64, b: &[u8]| put_bytes(&mut meta, (l * SECTOR_SIZE) as usize, b);
    put(
        FIRST_DESCRIPTOR_SECTOR,
        &set.descriptor(&a, vd_type::PRIMARY, total),
    );
    let mut next = FIRST_DESCRIPTOR_SECTOR + 1;
    let mut generated = Vec::new();
    let mut bios_boot = None;
    let mut efi_boot = None;
    if let Some(b) = boot {
        let lba_of = |data: usize| a.addrs.file.get(data).copied().unwrap_or(0);
        let size_of = |data: usize| tree.data.get(data).map_or(0, |d| d.size);
        let bios = b.bios.map(|(data, load)| (lba_of(data), load));
        efi_boot = match opts.boot.efi_partition {
            Some(n) => match appended.iter().find(|p| p.number == n) {
                Some(p) => Some((to_u32(p.start)?, p.size)),
                None => return Err(Error::Layout("the EFI boot partition is not appended")),
            },
            None => b.efi.map(|data| (lba_of(data), size_of(data))),
        };
        let efi = efi_boot.map(|(lba, size)| (lba, super::boot::efi_sectors(size)));
        put(next, &super::boot::record(lba_of(b.catalog)));
        next += 1;
        generated.push((b.catalog, super::boot::catalog(bios, efi)));
        bios_boot = b.bios.map(|(data, _)| (data, lba_of(data)));
    }
    set.put_rest(&mut meta, next, &a, total, 0);
    if let Some(b) = second {
        // the second volume counts its sectors from the partition's start
        let rel = b.shifted(offset, &a.addrs.file);
        set.put_tree(&mut meta, &rel.addrs, offset)?;
        let volume = total.saturating_sub(offset as u32);
        let pvd = set.descriptor(&rel, vd_type::PRIMARY, volume);
        let first = offset + FIRST_DESCRIPTOR_SECTOR;
        put_bytes(&mut meta, (first * SECTOR_SIZE) as usize, &pvd);
        set.put_rest(&mut meta, FIRST_DESCRIPTOR_SECTOR + 1, &rel, volume, offset);
    }
    Ok(Plan {
        metadata: meta,
        data_offsets,
        total_sectors: image_sectors,
        generated,
        patch: super::boot::Patch {
            info_table: opts.boot.info_table,
            grub2_boot_info: opts.boot.grub2_boot_info,
        },
        bios_boot,
        efi_boot,
        tail: Vec::new(),
        volume_sectors: total,
        appended,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn large_files_start_on_block_or_folio_boundaries() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        // Sparse files: only their sizes matter here. Names sort in this order.
        let sizes: [(&str, u64); 6] = [
            ("a-odd.txt", 3),
            ("b-small.bin", 1 << 20),
            ("c-block.bin", (1 << 20) + 1),
            ("d-below.bin", (64 << 20) - 1),
            ("e-folio.bin", 64 << 20),
            ("f-folio.bin", (300 << 20) + 7),
        ];
        for (name, size) in sizes {
            fs::File::create(src.join(name))
                .unwrap()
                .set_len(size)
                .unwrap();
        }
        let (t, plan) = crate::iso9660::write::plan_for_tests(&src);
        let mut placed: Vec<_> = t
            .data
            .iter()
            .zip(&plan.data_offsets)
            .map(|(f, &off)| (f.path.file_name().unwrap().to_str().unwrap(), f.size, off))
            .collect();
        placed.sort_by_key(|&(_, _, off)| off);
        let names: Vec<_> = placed.iter().map(|p| p.0).collect();
        assert_eq!(names, sizes.map(|s| s.0));
        // Each file starts at the first boundary its size asks for after the one before.
        for pair in placed.windows(2) {
            let ((_, size, off), (name, next_size, next)) = (pair[0], pair[1]);
            let end = off + size.div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
            let align = match next_size {
                s if s >= 64 << 20 => 2 << 20,
                s if s > 1 << 20 => 4096,
                _ => SECTOR_SIZE,
            };
            assert_eq!(next, end.next_multiple_of(align), "{name}");
        }
    }
}
