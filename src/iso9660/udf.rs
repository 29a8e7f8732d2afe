//! The UDF directory tree (ECMA-167 3rd edition, OSTA UDF 1.02 to 2.60), read-only: what the
//! FUSE driver and `ls`/`cat` show for a UDF-only image and for a UDF bridge without Rock
//! Ridge (Windows installation media: their ISO9660 tree holds only a README).
//!
//! Supported: type 1 partitions, sparable partitions (packets read where the sparing table
//! moved them), metadata partitions (UDF 2.50 and later, main file,
//! then mirror), file entries and extended file entries, short, long and embedded allocation
//! descriptors, allocation extent chains, unrecorded extents (read as zeros), symlinks,
//! logical blocks of 512 to 32768 bytes (sticks and disks formatted with UDF), and virtual
//! partitions of discs written incrementally, through the VAT at the image's end (its last
//! block or one of the three before, where Linux looks).
//! Not supported, an error naming it: extended allocation descriptors.
//!
//! Input is untrusted: every location is checked against its partition and the image, every
//! descriptor's tag (identifier, checksum, location) is verified, chains and sizes are capped.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::ffi::OsString;

use super::error::{Error, Result};
use super::ondisk::{days_from_civil, decode_ucs2be, le16, le32, Timestamp, SECTOR_SIZE};
use super::read::{Entry, Extent, Extents, Kind, MAX_DIR_BYTES};
use super::source::{read_full, ReadAt};

/// Block sizes tried, in this order: optical media's first, then what disks and sticks use.
const BLOCK_SIZES: [u64; 7] = [SECTOR_SIZE, 512, 1024, 4096, 8192, 16384, 32768];
const ANCHOR_SECTOR: u64 = 256;
/// Volume descriptor sequence entries examined at most.
const MAX_VDS: u64 = 64;
/// Allocation extent descriptors followed for one file, and indirect entries for one ICB.
const MAX_AED_HOPS: usize = 4096;
const MAX_INDIRECT_HOPS: usize = 8;
/// Bytes of a symlink's path component records read at most (Linux's PATH_MAX).
const MAX_SYMLINK_BYTES: u64 = 4096;
/// An extent start that is no place in the image: bytes never recorded, read as zeros.
pub(super) const HOLE: u64 = u64::MAX;

mod tag {
    pub const PRIMARY_VOLUME: u16 = 1;
    pub const ANCHOR: u16 = 2;
    pub const POINTER: u16 = 3;
    pub const IMPLEMENTATION_USE: u16 = 4;
    pub const PARTITION: u16 = 5;
    pub const LOGICAL_VOLUME: u16 = 6;
    pub const UNALLOCATED_SPACE: u16 = 7;
    pub const TERMINATOR: u16 = 8;
    pub const FILE_SET: u16 = 256;
    pub const FILE_ID: u16 = 257;
    pub const ALLOC_EXTENT: u16 = 258;
    pub const INDIRECT: u16 = 259;
    pub const FILE_ENTRY: u16 = 261;
    pub const EXT_FILE_ENTRY: u16 = 266;
}

/// An address in a partition (ECMA-167 4/7.1 lb_addr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LbAddr {
    block: u32,
    part: u16,
}

fn long_ad(b: &[u8], at: usize) -> Option<(u32, LbAddr)> {
    Some((
        le32(b, at)?,
        LbAddr {
            block: le32(b, at + 4)?,
            part: le16(b, at + 8)?,
        },
    ))
}

/// How a partition reference number's blocks map to the image.
#[derive(Debug)]
enum Part {
    /// Blocks `0..blocks` start at byte `start`.
    Physical { start: u64, blocks: u64 },
    /// Its bytes are at these places, in order: a metadata partition's are its metadata
    /// file's, a virtual partition's the physical blocks its VAT lists (a hole where none).
    Mapped(Runs),
}

/// A partition's bytes as places in the image, in order, found by binary search (a VAT or a
/// sparing table can make many).
#[derive(Debug)]
struct Runs {
    runs: Vec<Extent>,
    /// Where each run starts in the partition's bytes.
    starts: Vec<u64>,
}

impl Runs {
    fn new(runs: Vec<Extent>) -> Runs {
        let runs: Vec<Extent> = runs.into_iter().filter(|r| r.len > 0).collect();
        let starts = runs
            .iter()
            .scan(0u64, |at, r| {
                let start = *at;
                *at = at.saturating_add(r.len);
                Some(start)
            })
            .collect();
        Runs { runs, starts }
    }

    /// The index of the run holding partition byte `at` (or `runs.len()` past the end).
    fn index_of(&self, at: u64) -> usize {
        let i = self.starts.partition_point(|&s| s <= at).saturating_sub(1);
        match (self.starts.get(i), self.runs.get(i)) {
            (Some(&s), Some(r)) if at >= s && at - s < r.len => i,
            _ => self.runs.len(),
        }
    }

    /// The run holding partition byte `at`, and `at`'s offset in it.
    fn find(&self, at: u64) -> Option<(&Extent, u64)> {
        let i = self.index_of(at);
        let r = self.runs.get(i)?;
        Some((r, at - self.starts.get(i)?))
    }
}

/// The UDF tree of an image: how its partitions map to the image (the root is the image's).
#[derive(Debug)]
pub(super) struct Udf {
    /// The logical block size.
    bs: u64,
    parts: Vec<Part>,
}

/// The anchor volume descriptor pointer (ECMA-167 3/10.2) and the block size it was found
/// with: at block 256 for each size in [`BLOCK_SIZES`], then at the last block and 256 before
/// it. Its identifier and location are checked, as blkid checks them (not its checksum).
pub(super) fn find_anchor(
    src: &(impl ReadAt + ?Sized),
    image_size: u64,
) -> Result<Option<(u64, Vec<u8>)>> {
    let is_anchor = |b: &[u8], sector: u64| {
        le16(b, 0) == Some(tag::ANCHOR) && u64::from(le32(b, 12).unwrap_or(0)) == sector
    };
    let at_end = |bs: u64| {
        let last = (image_size / bs).saturating_sub(1);
        [last, last.saturating_sub(256)]
            .into_iter()
            .filter(|&s| s > ANCHOR_SECTOR && s <= u64::from(u32::MAX))
            .map(move |s| (bs, s))
    };
    let candidates = BLOCK_SIZES
        .iter()
        .map(|&bs| (bs, ANCHOR_SECTOR))
        .chain(BLOCK_SIZES.iter().flat_map(|&bs| at_end(bs)));
    for (bs, sector) in candidates {
        let mut b = vec![0u8; bs as usize];
        let at = sector * bs;
        if at + bs > image_size {
            continue;
        }
        let n = read_full(src, &mut b, at).map_err(|source| Error::Io {
            offset: at,
            len: b.len(),
            source,
        })?;
        if n == b.len() && is_anchor(&b, sector) {
            return Ok(Some((bs, b)));
        }
    }
    Ok(None)
}

/// A fixed-size block and where it sits in the image.
struct Block {
    at: u64,
    data: Vec<u8>,
}

fn err(at: u64, why: impl Into<String>) -> Error {
    Error::Udf {
        offset: at,
        why: why.into(),
    }
}

fn read_block_at(src: &(impl ReadAt + ?Sized), at: u64, bs: u64) -> Result<Block> {
    let mut data = vec![0u8; bs as usize];
    let n = read_full(src, &mut data, at).map_err(|source| Error::Io {
        offset: at,
        len: data.len(),
        source,
    })?;
    if n < data.len() {
        return Err(Error::Truncated {
            what: "UDF descriptor",
            offset: at,
            need: bs,
            size: at + n as u64,
        });
    }
    Ok(Block { at, data })
}

/// Checks a descriptor tag (ECMA-167 3/7.2): identifier among `want`, checksum, and the
/// location it says it was recorded at. Returns the identifier.
fn check_tag(b: &Block, want: &[u16], location: u32) -> Result<u16> {
    let head = b
        .data
        .get(..16)
        .ok_or_else(|| err(b.at, "short descriptor"))?;
    let id = le16(head, 0).unwrap_or(0);
    if !want.contains(&id) {
        return Err(err(
            b.at,
            format!("descriptor tag {id} where one of {want:?} was expected"),
        ));
    }
    let sum = head
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .fold(0u8, |s, (_, &v)| s.wrapping_add(v));
    // A fuzzer's mutations get past the one-byte sum (cargo fuzz builds with cfg(fuzzing)).
    if head.get(4) != Some(&sum) && !cfg!(fuzzing) {
        return Err(err(b.at, format!("descriptor tag {id}: bad checksum")));
    }
    let recorded = le32(head, 12).unwrap_or(0);
    if recorded != location {
        return Err(err(
            b.at,
            format!("descriptor tag {id} says it is at block {recorded}, found at {location}"),
        ));
    }
    Ok(id)
}

/// A partition descriptor's number, first sector and length in blocks.
#[derive(Clone, Copy)]
struct PartitionDesc {
    number: u16,
    start: u32,
    blocks: u32,
}

/// The descriptors of a volume descriptor sequence the tree needs.
#[derive(Default)]
struct Sequence {
    partitions: Vec<PartitionDesc>,
    /// The prevailing logical volume descriptor (highest sequence number).
    volume: Option<(u32, Block)>,
}

fn read_sequence(src: &(impl ReadAt + ?Sized), start: u32, len: u32, bs: u64) -> Result<Sequence> {
    let mut seq = Sequence::default();
    let mut sector = u64::from(start);
    let mut end = sector + (u64::from(len) / bs).min(MAX_VDS);
    let mut examined = 0;
    while sector < end && examined < MAX_VDS {
        examined += 1;
        let b = read_block_at(src, sector * bs, bs)?;
        let Ok(id) = check_tag(
            &b,
            &[
                tag::PRIMARY_VOLUME,
                tag::POINTER,
                tag::IMPLEMENTATION_USE,
                tag::PARTITION,
                tag::LOGICAL_VOLUME,
                tag::UNALLOCATED_SPACE,
                tag::TERMINATOR,
            ],
            sector as u32,
        ) else {
            break;
        };
        match id {
            tag::TERMINATOR => break,
            tag::POINTER => {
                // The sequence goes on elsewhere (ECMA-167 3/10.3).
                let (Some(l), Some(at)) = (le32(&b.data, 20), le32(&b.data, 24)) else {
                    break;
                };
                sector = u64::from(at);
                end = sector + (u64::from(l) / bs).min(MAX_VDS);
                continue;
            }
            tag::PARTITION => {
                if let (Some(number), Some(start), Some(blocks)) =
                    (le16(&b.data, 22), le32(&b.data, 188), le32(&b.data, 192))
                {
                    seq.partitions.push(PartitionDesc {
                        number,
                        start,
                        blocks,
                    });
                }
            }
            tag::LOGICAL_VOLUME => {
                let number = le32(&b.data, 16).unwrap_or(0);
                if seq.volume.as_ref().is_none_or(|(n, _)| number >= *n) {
                    seq.volume = Some((number, b));
                }
            }
            _ => {}
        }
        sector += 1;
    }
    Ok(seq)
}

impl Udf {
    /// Reads the anchor, the volume descriptors, the partition maps and the file set
    /// descriptor; gives the tree and its root directory's entry.
    pub(super) fn open(src: &(impl ReadAt + ?Sized), image_size: u64) -> Result<(Udf, Entry)> {
        let (bs, anchor) = find_anchor(src, image_size)?.ok_or_else(|| {
            err(
                ANCHOR_SECTOR * SECTOR_SIZE,
                "no anchor volume descriptor pointer at block 256 or at the end",
            )
        })?;
        let ad = |at| {
            (
                le32(&anchor, at).unwrap_or(0),
                le32(&anchor, at + 4).unwrap_or(0),
            )
        };
        let (main_len, main_at) = ad(16);
        let (reserve_len, reserve_at) = ad(24);
        let mut seq = read_sequence(src, main_at, main_len, bs)?;
        if seq.volume.is_none() || seq.partitions.is_empty() {
            seq = read_sequence(src, reserve_at, reserve_len, bs)?;
        }
        let Some((_, lvd)) = seq.volume else {
            return Err(err(
                u64::from(main_at) * bs,
                "no logical volume descriptor in the volume descriptor sequences",
            ));
        };
        let block_size = le32(&lvd.data, 212).unwrap_or(0);
        if u64::from(block_size) != bs {
            return Err(err(
                lvd.at,
                format!(
                    "logical block size {block_size}, but the anchor is at block 256 of {bs} bytes"
                ),
            ));
        }
        let physical = |number: u16| -> Result<Part> {
            let pd = seq
                .partitions
                .iter()
                .find(|p| p.number == number)
                .ok_or_else(|| err(lvd.at, format!("partition {number} has no descriptor")))?;
            Ok(Part::Physical {
                start: u64::from(pd.start) * bs,
                blocks: u64::from(pd.blocks),
            })
        };
        let table_len = le32(&lvd.data, 264).unwrap_or(0) as usize;
        let count = le32(&lvd.data, 268).unwrap_or(0);
        let table = lvd
            .data
            .get(440..440usize.saturating_add(table_len))
            .ok_or_else(|| err(lvd.at, format!("partition map table of {table_len} bytes")))?;
        let mut parts = Vec::new();
        let mut pos = 0usize;
        for i in 0..count {
            let (Some(&ty), Some(&len)) = (table.get(pos), table.get(pos + 1)) else {
                return Err(err(
                    lvd.at,
                    format!("partition map {i} runs past its table"),
                ));
            };
            let map = table
                .get(pos..pos + usize::from(len))
                .filter(|_| len >= 2)
                .ok_or_else(|| err(lvd.at, format!("partition map {i} of {len} bytes")))?;
            pos += usize::from(len);
            let part = match ty {
                1 => physical(le16(map, 4).unwrap_or(0))?,
                2 => {
                    let ident = map.get(5..28).unwrap_or_default();
                    let number = le16(map, 38).unwrap_or(0);
                    if ident.starts_with(b"*UDF Sparable Partition") {
                        sparable(src, physical(number)?, map, bs)?
                    } else if ident.starts_with(b"*UDF Metadata Partition") {
                        let phys = physical(number)?;
                        let main = le32(map, 40).unwrap_or(0);
                        let mirror = le32(map, 44).unwrap_or(0);
                        match metadata_runs(src, &phys, main, bs) {
                            Ok(runs) => Part::Mapped(Runs::new(runs)),
                            Err(e) => {
                                tracing::debug!(error = %e, "UDF metadata file unreadable; reading its mirror");
                                Part::Mapped(Runs::new(metadata_runs(src, &phys, mirror, bs)?))
                            }
                        }
                    } else if ident.starts_with(b"*UDF Virtual Partition") {
                        Part::Mapped(Runs::new(vat_runs(
                            src,
                            &physical(number)?,
                            image_size,
                            bs,
                        )?))
                    } else {
                        let shown = String::from_utf8_lossy(ident);
                        return Err(err(
                            lvd.at,
                            format!("partition map type {shown:?} is not supported"),
                        ));
                    }
                }
                _ => return Err(err(lvd.at, format!("partition map {i} has type {ty}"))),
            };
            parts.push(part);
        }
        let udf = Udf { bs, parts };
        let (_, fsd_at) = long_ad(&lvd.data, 248).unwrap_or_default();
        let fsd = udf.read_block(src, fsd_at)?;
        check_tag(&fsd, &[tag::FILE_SET], fsd_at.block)?;
        let (_, root_at) = long_ad(&fsd.data, 400).unwrap_or_default();
        let mut root = udf.read_node(src, root_at)?;
        if root.kind != Kind::Dir {
            return Err(err(fsd.at, "the root ICB is not a directory"));
        }
        root.name = OsString::from("/");
        Ok((udf, root))
    }

    /// A reader of `phys` alone (as partition 0), for the files that map other partitions
    /// (a metadata file, a VAT); with the partition's first byte and length in blocks.
    fn over(phys: &Part, bs: u64, what: &str) -> Result<(Udf, u64, u64)> {
        let Part::Physical { start, blocks } = *phys else {
            return Err(err(
                0,
                format!("{what} on a partition that is not physical"),
            ));
        };
        let host = Udf {
            bs,
            parts: vec![Part::Physical { start, blocks }],
        };
        Ok((host, start, blocks))
    }

    /// The byte offset of a block of a partition.
    fn offset_of(&self, at: LbAddr) -> Result<u64> {
        let fail = |why: &str| {
            err(
                0,
                format!("block {} of partition {}: {why}", at.block, at.part),
            )
        };
        match self.parts.get(usize::from(at.part)) {
            None => Err(fail("no such partition")),
            Some(Part::Physical { start, blocks }) => {
                if u64::from(at.block) >= *blocks {
                    return Err(fail("past the end of the partition"));
                }
                Ok(start + u64::from(at.block) * self.bs)
            }
            Some(Part::Mapped(runs)) => match runs.find(u64::from(at.block) * self.bs) {
                Some((r, _)) if r.start == HOLE => Err(fail("not recorded")),
                Some((r, within)) => Ok(r.start + within),
                None => Err(fail("past the end of the partition")),
            },
        }
    }

    fn read_block(&self, src: &(impl ReadAt + ?Sized), at: LbAddr) -> Result<Block> {
        read_block_at(src, self.offset_of(at)?, self.bs)
    }

    /// Appends the image places of `len` bytes from block `at` on to `out`.
    fn map_run(&self, at: LbAddr, len: u64, out: &mut Extents) -> Result<()> {
        let fail = |why: String| {
            err(
                0,
                format!(
                    "extent at block {} of partition {}: {why}",
                    at.block, at.part
                ),
            )
        };
        match self.parts.get(usize::from(at.part)) {
            None => Err(fail("no such partition".into())),
            Some(Part::Physical { start, blocks }) => {
                let need = len.div_ceil(self.bs);
                if u64::from(at.block) + need > *blocks {
                    return Err(fail(format!(
                        "{len} bytes run past the partition's {blocks} blocks"
                    )));
                }
                out.push_checked(Extent {
                    start: start + u64::from(at.block) * self.bs,
                    len,
                })
            }
            Some(Part::Mapped(runs)) => {
                let at_byte = u64::from(at.block) * self.bs;
                let first = runs.index_of(at_byte);
                let Some(&run_start) = runs.starts.get(first) else {
                    return Err(fail("past the end of the partition".into()));
                };
                let mut skip = at_byte - run_start;
                let mut left = len;
                for r in runs.runs.get(first..).unwrap_or_default() {
                    if left == 0 {
                        break;
                    }
                    if r.start == HOLE {
                        return Err(fail("not recorded".into()));
                    }
                    let n = (r.len - skip).min(left);
                    out.push_checked(Extent {
                        start: r.start + skip,
                        len: n,
                    })?;
                    left -= n;
                    skip = 0;
                }
                if left > 0 {
                    return Err(fail("runs past the end of the partition".into()));
                }
                Ok(())
            }
        }
    }

    /// Reads the file entry at `at` (following indirect entries) into an unnamed entry.
    fn read_node(&self, src: &(impl ReadAt + ?Sized), mut at: LbAddr) -> Result<Entry> {
        let mut hops = 0;
        let b = loop {
            let b = self.read_block(src, at)?;
            let id = check_tag(
                &b,
                &[tag::FILE_ENTRY, tag::EXT_FILE_ENTRY, tag::INDIRECT],
                at.block,
            )?;
            if id != tag::INDIRECT {
                break b;
            }
            hops += 1;
            if hops > MAX_INDIRECT_HOPS {
                return Err(err(b.at, "too many indirect entries"));
            }
            at = long_ad(&b.data, 36).map(|a| a.1).unwrap_or(at);
        };
        let extended = le16(&b.data, 0) == Some(tag::EXT_FILE_ENTRY);
        self.parse_entry(src, &b, at, extended)
    }

    fn parse_entry(
        &self,
        src: &(impl ReadAt + ?Sized),
        b: &Block,
        at: LbAddr,
        extended: bool,
    ) -> Result<Entry> {
        let d = &b.data;
        let u32_at = |o| le32(d, o).unwrap_or(0);
        let u64_at = |o: usize| {
            d.get(o..o + 8)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let file_type = d.get(27).copied().unwrap_or(0);
        let flags = le16(d, 34).unwrap_or(0);
        let (atime, mtime, ctime, ea_len_at, base) = if extended {
            (80, 92, 116, 208, 216)
        } else {
            (72, 84, 96, 168, 176)
        };
        let ea_len = u32_at(ea_len_at) as usize;
        let ad_len = u32_at(ea_len_at + 4) as usize;
        let ads_at = base + ea_len;
        let ads = d
            .get(ads_at..ads_at.saturating_add(ad_len))
            .ok_or_else(|| {
                err(
                    b.at,
                    format!("extended attributes ({ea_len} bytes) and allocation descriptors ({ad_len} bytes) do not fit in the entry"),
                )
            })?;
        let size = u64_at(56);
        let kind = match file_type {
            4 => Kind::Dir,
            0 | 5 => Kind::File,
            12 => Kind::Symlink,
            _ => Kind::Other,
        };
        let mut extents = Extents::None;
        // Data to place: files, directories, symlinks, the VAT (248) and the metadata files
        // (250 to 252).
        let data = kind != Kind::Other || matches!(file_type, 248 | 250..=252);
        if data {
            match flags & 7 {
                3 => {
                    let inline = (ad_len as u64).min(size);
                    extents.push(Extent {
                        start: b.at + ads_at as u64,
                        len: inline,
                    });
                    if size > inline {
                        extents.push(Extent {
                            start: HOLE,
                            len: size - inline,
                        });
                    }
                }
                ty @ (0 | 1) => self.allocation(src, ads, ty == 1, at.part, size, &mut extents)?,
                ty => {
                    return Err(err(
                        b.at,
                        format!("allocation descriptor type {ty} is not supported"),
                    ))
                }
            }
        }
        let p = u32_at(44);
        let mut mode = (p & 0o7) | ((p >> 2) & 0o70) | ((p >> 4) & 0o700);
        for (bit, m) in [(0x40, 0o4000), (0x80, 0o2000), (0x100, 0o1000)] {
            if flags & bit != 0 {
                mode |= m;
            }
        }
        // Unset (-1) shows as the overflow id, as under Linux.
        let id_of = |v: u32| if v == u32::MAX { 65_534 } else { v };
        let time = |o: usize| {
            d.get(o..o + 12)
                .and_then(decode_timestamp)
                .unwrap_or_default()
        };
        let mut entry = Entry {
            name: OsString::new(),
            kind,
            size: if data { size } else { 0 },
            mode,
            uid: id_of(u32_at(36)),
            gid: id_of(u32_at(40)),
            nlink: u32::from(le16(d, 48).unwrap_or(1)).max(1),
            mtime: time(mtime),
            atime: time(atime),
            ctime: time(ctime),
            target: None,
            id: b.at,
            extents,
            interleaved: false,
            zisofs: None,
        };
        if kind == Kind::Symlink {
            let target = self.symlink_target(src, &entry)?;
            // Linux shows every UDF symlink as 0777, whatever it records.
            entry.mode = 0o777;
            entry.size = target.len() as u64;
            entry.target = Some(target);
            entry.extents = Extents::None;
        }
        Ok(entry)
    }

    /// Decodes short (`long == false`) or long allocation descriptors, following allocation
    /// extent descriptors, into the places of a file's `size` bytes.
    fn allocation(
        &self,
        src: &(impl ReadAt + ?Sized),
        ads: &[u8],
        long: bool,
        part: u16,
        size: u64,
        out: &mut Extents,
    ) -> Result<()> {
        let step = if long { 16 } else { 8 };
        let mut area = ads.to_vec();
        let mut left = size;
        let mut hops = 0;
        'areas: loop {
            let mut next = None;
            for ad in area.chunks_exact(step) {
                let raw = le32(ad, 0).unwrap_or(0);
                let len = u64::from(raw & 0x3FFF_FFFF);
                let ty = raw >> 30;
                let addr = if long {
                    long_ad(ad, 0)
                        .map(|a| a.1)
                        .unwrap_or(LbAddr { block: 0, part })
                } else {
                    LbAddr {
                        block: le32(ad, 4).unwrap_or(0),
                        part,
                    }
                };
                if len == 0 {
                    break;
                }
                if ty == 3 {
                    next = Some(addr);
                    break;
                }
                if left == 0 {
                    continue;
                }
                let n = len.min(left);
                if ty == 0 {
                    self.map_run(addr, n, out)?;
                } else {
                    out.push_checked(Extent {
                        start: HOLE,
                        len: n,
                    })?;
                }
                left -= n;
            }
            let Some(at) = next else {
                break 'areas;
            };
            hops += 1;
            if hops > MAX_AED_HOPS {
                return Err(err(0, "too many allocation extent descriptors"));
            }
            let b = self.read_block(src, at)?;
            check_tag(&b, &[tag::ALLOC_EXTENT], at.block)?;
            let n = le32(&b.data, 20).unwrap_or(0) as usize;
            area = b
                .data
                .get(24..24usize.saturating_add(n))
                .ok_or_else(|| err(b.at, format!("allocation extent of {n} bytes")))?
                .to_vec();
        }
        if left > 0 {
            // Bytes the descriptors do not place read as zeros, as a hole.
            out.push(Extent {
                start: HOLE,
                len: left,
            });
        }
        Ok(())
    }

    /// Reads all of a directory's or symlink's bytes, at most `cap`.
    fn read_all(
        &self,
        src: &(impl ReadAt + ?Sized),
        e: &Entry,
        what: &'static str,
        cap: u64,
    ) -> Result<Vec<u8>> {
        if e.size > cap {
            return Err(Error::Limit {
                what,
                value: e.size,
                limit: cap,
            });
        }
        let mut out = vec![0u8; e.size as usize];
        let mut pos = 0usize;
        for ext in e.extents.as_slice() {
            let n = (ext.len as usize).min(out.len() - pos);
            let Some(dst) = out.get_mut(pos..pos + n) else {
                break;
            };
            if ext.start != HOLE {
                let got = read_full(src, dst, ext.start).map_err(|source| Error::Io {
                    offset: ext.start,
                    len: n,
                    source,
                })?;
                if got < n {
                    return Err(Error::Truncated {
                        what,
                        offset: ext.start,
                        need: n as u64,
                        size: ext.start + got as u64,
                    });
                }
            }
            pos += n;
        }
        Ok(out)
    }

    /// A symlink's target from its path component records (ECMA-167 4/14.16).
    fn symlink_target(&self, src: &(impl ReadAt + ?Sized), e: &Entry) -> Result<OsString> {
        let data = self.read_all(src, e, "symlink target", MAX_SYMLINK_BYTES)?;
        let mut out = String::new();
        let mut pos = 0usize;
        while let (Some(&ty), Some(&len)) = (data.get(pos), data.get(pos + 1)) {
            let ident = data
                .get(pos + 4..pos + 4 + usize::from(len))
                .ok_or_else(|| err(e.id, "symlink component runs past its data"))?;
            pos += 4 + usize::from(len);
            let comp = match ty {
                1 if len > 0 => continue,
                1 | 2 => {
                    out.clear();
                    out.push('/');
                    continue;
                }
                3 => "..".to_owned(),
                4 => ".".to_owned(),
                5 => decode_cs0(ident).ok_or_else(|| err(e.id, "symlink component name"))?,
                _ => return Err(err(e.id, format!("symlink component type {ty}"))),
            };
            if !out.is_empty() && !out.ends_with('/') {
                out.push('/');
            }
            out.push_str(&comp);
        }
        Ok(OsString::from(out))
    }

    /// The entries of a directory, in recorded order; deleted, hidden and parent entries and
    /// unusable names (empty, ".", "..", with '/' or NUL) left out, as Linux shows them.
    pub(super) fn read_dir(&self, src: &(impl ReadAt + ?Sized), dir: &Entry) -> Result<Vec<Entry>> {
        let data = self.read_all(src, dir, "directory", MAX_DIR_BYTES)?;
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos + 38 <= data.len() {
            let fid = data.get(pos..).unwrap_or_default();
            let at = place_of(dir, pos as u64);
            let id = le16(fid, 0).unwrap_or(0);
            if id != tag::FILE_ID {
                // Directory data ends at the first block that holds no more identifiers.
                if fid.iter().take(16).all(|&b| b == 0) {
                    break;
                }
                return Err(err(
                    at,
                    format!("tag {id} where a file identifier was expected"),
                ));
            }
            let chars = fid.get(18).copied().unwrap_or(0);
            let name_len = usize::from(fid.get(19).copied().unwrap_or(0));
            let iu_len = usize::from(le16(fid, 36).unwrap_or(0));
            let total = (38 + iu_len + name_len).div_ceil(4) * 4;
            let raw_name = fid
                .get(38 + iu_len..38 + iu_len + name_len)
                .ok_or_else(|| err(at, "file identifier runs past the directory"))?;
            let (_, icb) = long_ad(fid, 20).unwrap_or_default();
            pos += total;
            // Hidden, deleted, parent.
            if chars & (0x01 | 0x04 | 0x08) != 0 {
                continue;
            }
            let Some(name) = decode_cs0(raw_name)
                .filter(|n| !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\0']))
            else {
                tracing::debug!(
                    offset = at,
                    "UDF file identifier with an unusable name left out"
                );
                continue;
            };
            match self.read_node(src, icb) {
                Ok(mut e) => {
                    e.name = OsString::from(name);
                    e.id = at;
                    out.push(e);
                }
                Err(e @ (Error::Io { .. } | Error::Limit { .. })) => return Err(e),
                Err(e) => {
                    tracing::warn!(name, error = %e, "UDF entry left out: its file entry is unreadable");
                }
            }
        }
        Ok(out)
    }
}

/// The image offset of byte `pos` of an entry's data (its identity), or the entry's own.
fn place_of(e: &Entry, mut pos: u64) -> u64 {
    for ext in e.extents.as_slice() {
        if pos < ext.len && ext.start != HOLE {
            return ext.start + pos;
        }
        pos = pos.saturating_sub(ext.len);
    }
    e.id
}

/// The metadata file's places (UDF 2.50 2.2.13): its file entry is at block `at` of the
/// physical partition, its short allocation descriptors relative to that partition.
fn metadata_runs(
    src: &(impl ReadAt + ?Sized),
    phys: &Part,
    at: u32,
    bs: u64,
) -> Result<Vec<Extent>> {
    let (host, _, _) = Udf::over(phys, bs, "metadata partition")?;
    let addr = LbAddr { block: at, part: 0 };
    let b = host.read_block(src, addr)?;
    let id = check_tag(&b, &[tag::FILE_ENTRY, tag::EXT_FILE_ENTRY], at)?;
    if !matches!(b.data.get(27), Some(250 | 251)) {
        return Err(err(
            b.at,
            "the metadata file's entry is not of type 250 or 251",
        ));
    }
    let node = host.parse_entry(src, &b, addr, id == tag::EXT_FILE_ENTRY)?;
    Ok(node.extents.as_slice().to_vec())
}

/// A sparable partition (UDF 2.2.12): its physical partition, with the packets its sparing
/// table moved (after write errors on a CD-RW or DVD-RW) read where they went. The table with
/// the highest sequence number among the copies the map lists is used; none readable, or no
/// packet moved: the partition as written.
fn sparable(src: &(impl ReadAt + ?Sized), phys: Part, map: &[u8], bs: u64) -> Result<Part> {
    let Part::Physical { start, blocks } = phys else {
        return Ok(phys);
    };
    let packet = u64::from(le16(map, 40).unwrap_or(0));
    let copies = usize::from(map.get(42).copied().unwrap_or(0)).min(4);
    let size = u64::from(le32(map, 44).unwrap_or(0)).min(56 + 8 * 65_535);
    if packet == 0 || !packet.is_power_of_two() {
        return Ok(phys);
    }
    let mut best: Option<(u32, Vec<(u64, u64)>)> = None;
    for i in 0..copies {
        let Some(loc) = le32(map, 48 + 4 * i) else {
            continue;
        };
        let at = u64::from(loc) * bs;
        let mut table = vec![0u8; size.max(56) as usize];
        let Ok(n) = read_full(src, &mut table, at) else {
            continue;
        };
        table.truncate(n);
        let head = Block {
            at,
            data: table.get(..16).unwrap_or_default().to_vec(),
        };
        if check_tag(&head, &[0], loc).is_err()
            || table.get(17..35) != Some(b"*UDF Sparing Table".as_slice())
        {
            continue;
        }
        let sequence = le32(&table, 52).unwrap_or(0);
        let len = usize::from(le16(&table, 48).unwrap_or(0));
        let moved: Vec<(u64, u64)> = table
            .get(56..)
            .unwrap_or_default()
            .chunks_exact(8)
            .take(len)
            .filter_map(|e| Some((le32(e, 0)?, le32(e, 4)?)))
            .filter(|&(orig, _)| orig < 0xFFFF_FFF0)
            .map(|(orig, mapped)| (u64::from(orig), u64::from(mapped)))
            .collect();
        if best.as_ref().is_none_or(|(seq, _)| sequence > *seq) {
            best = Some((sequence, moved));
        }
    }
    let Some((_, mut moved)) = best.filter(|(_, m)| !m.is_empty()) else {
        return Ok(phys);
    };
    moved.sort_unstable();
    let mut runs = Vec::new();
    let mut pos = 0u64;
    for (orig, mapped) in moved {
        if orig % packet != 0 || orig < pos || orig >= blocks {
            continue;
        }
        runs.push(Extent {
            start: start + pos * bs,
            len: (orig - pos) * bs,
        });
        let len = packet.min(blocks - orig);
        runs.push(Extent {
            start: mapped * bs,
            len: len * bs,
        });
        pos = orig + len;
    }
    runs.push(Extent {
        start: start + pos * bs,
        len: (blocks - pos) * bs,
    });
    Ok(Part::Mapped(Runs::new(runs)))
}

/// Bytes of a virtual allocation table read at most (1 Mi virtual blocks: the ICBs and
/// directories of a million files).
const MAX_VAT_BYTES: u64 = 4 << 20;

/// How many blocks before the image's last the VAT is looked for, as Linux does: a copy of a
/// disc may end with a few blocks read past the last one written (run-out, padding).
const VAT_LOOKBACK: u64 = 3;

/// The VAT's file entry (UDF 2.2.11) in the image's last block, or failing that in one of the
/// [`VAT_LOOKBACK`] blocks before it (the last that holds one wins): its entry and type. The
/// physical partition starts at byte `start`.
fn vat_entry(
    src: &(impl ReadAt + ?Sized),
    host: &Udf,
    start: u64,
    image_size: u64,
) -> Result<(Entry, u8)> {
    let bs = host.bs;
    let last = (image_size / bs).saturating_sub(1);
    let last_rel = last
        .checked_sub(start / bs)
        .ok_or_else(|| err(last * bs, "the image ends before its virtual partition"))?;
    let mut first_error = None;
    for rel in (last_rel.saturating_sub(VAT_LOOKBACK)..=last_rel).rev() {
        let Ok(rel) = u32::try_from(rel) else {
            continue;
        };
        let addr = LbAddr {
            block: rel,
            part: 0,
        };
        let found = host.read_block(src, addr).and_then(|b| {
            let id = check_tag(&b, &[tag::FILE_ENTRY, tag::EXT_FILE_ENTRY], rel)?;
            let file_type = b.data.get(27).copied().unwrap_or(0);
            if file_type != 248 && file_type != 0 {
                return Err(err(b.at, format!("a file entry of type {file_type}")));
            }
            Ok((b, id, file_type))
        });
        match found {
            Ok((b, id, file_type)) => {
                let entry = host.parse_entry(src, &b, addr, id == tag::EXT_FILE_ENTRY)?;
                return Ok((entry, file_type));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let why = match first_error {
        Some(Error::Udf { why, .. }) => why,
        Some(e) => e.to_string(),
        None => "no block there".to_string(),
    };
    Err(err(
        last * bs,
        format!(
            "no virtual allocation table in the image's last {} blocks (last block: {why}): a disc written incrementally is read from its last written block",
            VAT_LOOKBACK + 1
        ),
    ))
}

/// Whether the image ends with the VAT (in its last few blocks) of a virtual partition whose physical
/// partition starts at block `start` and has `blocks` blocks of `bs` bytes: a disc written
/// incrementally is whole when it ends with its VAT (its partition descriptor declares the
/// whole medium, written or not).
pub(super) fn vat_at_end(
    src: &(impl ReadAt + ?Sized),
    image_size: u64,
    bs: u64,
    start: u32,
    blocks: u32,
) -> bool {
    let phys = Part::Physical {
        start: u64::from(start) * bs,
        blocks: u64::from(blocks),
    };
    let Ok((host, _, _)) = Udf::over(&phys, bs, "virtual partition") else {
        return false;
    };
    vat_entry(src, &host, u64::from(start) * bs, image_size).is_ok()
}

/// A virtual partition's places (UDF 2.2.11): virtual block n is the physical block the VAT's
/// entry n names, in the physical partition `phys`; the VAT is the file whose entry ends the
/// image ([`vat_entry`]; type 248, after a header; or, UDF 1.50, type 0 ending with its
/// identifier and the previous VAT's place).
fn vat_runs(
    src: &(impl ReadAt + ?Sized),
    phys: &Part,
    image_size: u64,
    bs: u64,
) -> Result<Vec<Extent>> {
    let (host, start, blocks) = Udf::over(phys, bs, "virtual partition")?;
    let (entry, file_type) = vat_entry(src, &host, start, image_size)?;
    let data = host.read_all(src, &entry, "virtual allocation table", MAX_VAT_BYTES)?;
    let table = match file_type {
        248 => {
            let header = usize::from(le16(&data, 0).unwrap_or(0));
            data.get(header..)
        }
        0 => data
            .len()
            .checked_sub(36)
            .filter(|&end| {
                data.get(end + 1..end + 23)
                    .is_some_and(|id| id == b"*UDF Virtual Alloc Tbl")
            })
            .and_then(|end| data.get(..end)),
        _ => None,
    }
    .ok_or_else(|| {
        err(
            entry.id,
            format!("the last block's file (type {file_type}) is not a virtual allocation table"),
        )
    })?;
    let mut runs: Vec<Extent> = Vec::new();
    for raw in table.chunks_exact(4) {
        let block = le32(raw, 0).unwrap_or(u32::MAX);
        let at = if u64::from(block) < blocks {
            start + u64::from(block) * bs
        } else {
            HOLE
        };
        match runs.last_mut() {
            Some(r) if r.start != HOLE && at != HOLE && r.start + r.len == at => r.len += bs,
            Some(r) if r.start == HOLE && at == HOLE => r.len += bs,
            _ => runs.push(Extent { start: at, len: bs }),
        }
    }
    Ok(runs)
}

/// An OSTA CS0 string (UDF 2.1.1): compression 8 (or 254) is one byte a character, 16 (or
/// 255) UTF-16 big-endian.
fn decode_cs0(b: &[u8]) -> Option<String> {
    let (&cid, rest) = b.split_first()?;
    match cid {
        8 | 254 => Some(rest.iter().map(|&c| char::from(c)).collect()),
        16 | 255 => Some(decode_ucs2be(rest)),
        _ => None,
    }
}

/// A UDF timestamp (ECMA-167 1/7.3): local time with its offset from UTC in minutes (-2047:
/// none given, taken as UTC). `None` when a field is out of range.
fn decode_timestamp(b: &[u8]) -> Option<Timestamp> {
    let tz_raw = le16(b, 0)?;
    let mut tz = i64::from(tz_raw & 0x0FFF);
    if tz >= 0x800 {
        tz -= 0x1000;
    }
    if tz == -2047 || !(-1440..=1440).contains(&tz) {
        tz = 0;
    }
    let year = i64::from(le16(b, 2)? as i16);
    let [month, day, hour, minute, second, cs, hus, us] = *b.get(4..12)? else {
        return None;
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, u32::from(month), u32::from(day));
    let secs =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second.min(60))
            - tz * 60;
    let nanos = u32::from(cs.min(99)) * 10_000_000
        + u32::from(hus.min(99)) * 100_000
        + u32::from(us.min(99)) * 1000;
    Some(Timestamp { secs, nanos })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::iso9660::{Image, Names};

    #[test]
    fn timestamps_take_their_offset_from_utc() {
        let mut b = [0u8; 12];
        // 2023-11-14 23:13:20.5 at UTC+01:00 is 1700000000.5 UTC.
        b[0..2].copy_from_slice(&(0x1000u16 | 60).to_le_bytes());
        b[2..4].copy_from_slice(&2023i16.to_le_bytes());
        b[4..12].copy_from_slice(&[11, 14, 23, 13, 20, 50, 0, 0]);
        assert_eq!(
            decode_timestamp(&b),
            Some(Timestamp {
                secs: 1_700_000_000,
                nanos: 500_000_000
            })
        );
        // -2047: no offset given.
        b[0..2].copy_from_slice(&(0x1000u16 | (0x1000 - 2047)).to_le_bytes());
        assert_eq!(decode_timestamp(&b).unwrap().secs, 1_700_003_600);
        b[4] = 13;
        assert_eq!(decode_timestamp(&b), None);
    }

    #[test]
    fn runs_find_each_byte_by_binary_search() {
        let e = |start, len| Extent { start, len };
        let runs = Runs::new(vec![e(1000, 10), e(0, 0), e(HOLE, 5), e(50, 20)]);
        assert_eq!(runs.find(0), Some((&e(1000, 10), 0)));
        assert_eq!(runs.find(9), Some((&e(1000, 10), 9)));
        assert_eq!(runs.find(10), Some((&e(HOLE, 5), 0)));
        assert_eq!(runs.find(15), Some((&e(50, 20), 0)));
        assert_eq!(runs.find(34), Some((&e(50, 20), 19)));
        assert_eq!(runs.find(35), None);
        assert_eq!(runs.index_of(35), 3);
        // A million one-block runs: each found at once.
        let many = Runs::new((0..1_000_000u64).map(|i| e(i * 4096, 2048)).collect());
        assert_eq!(
            many.find(2048 * 999_999 + 7),
            Some((&e(999_999 * 4096, 2048), 7))
        );
    }

    #[test]
    fn cs0_names_are_latin1_or_utf16() {
        assert_eq!(decode_cs0(b"\x08caf\xe9").as_deref(), Some("café"));
        assert_eq!(
            decode_cs0(&[16, 0, b'a', 0x04, 0x16]).as_deref(),
            Some("aЖ")
        );
        assert_eq!(decode_cs0(&[3, b'a']), None);
        assert_eq!(decode_cs0(&[]), None);
    }

    // A UDF 2.50 image built by hand, as no tool on a test machine writes one: a physical
    // partition at block PART, a metadata partition whose file (and mirror) maps metadata
    // blocks 0..META_BLOCKS to physical blocks META_AT.., the file set descriptor, every file
    // entry and the directories in the metadata partition, file data in the physical one.
    const PART: u32 = 100;
    const META_AT: u32 = 10;
    const META_BLOCKS: u32 = 8;
    const MTIME: i64 = 1_700_000_000;

    fn at(img: &mut [u8], block: u32) -> &mut [u8] {
        let s = block as usize * 2048;
        &mut img[s..s + 2048]
    }

    fn phys(block: u32) -> u32 {
        PART + block
    }

    fn meta(block: u32) -> u32 {
        PART + META_AT + block
    }

    fn put_tag(b: &mut [u8], id: u16, loc: u32) {
        b[0..2].copy_from_slice(&id.to_le_bytes());
        b[2..4].copy_from_slice(&3u16.to_le_bytes());
        b[12..16].copy_from_slice(&loc.to_le_bytes());
        b[4] = 0;
        b[4] = b[..16].iter().fold(0u8, |s, &v| s.wrapping_add(v));
    }

    fn long(len: u32, block: u32, part: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&block.to_le_bytes());
        v.extend_from_slice(&part.to_le_bytes());
        v.extend_from_slice(&[0; 6]);
        v
    }

    fn short(len: u32, block: u32) -> Vec<u8> {
        [len.to_le_bytes(), block.to_le_bytes()].concat()
    }

    /// A file entry: type, allocation flags, size, descriptors (or embedded data).
    fn file_entry(b: &mut [u8], loc: u32, ty: u8, flags: u16, size: u64, ads: &[u8]) {
        b.fill(0);
        b[20..22].copy_from_slice(&4u16.to_le_bytes());
        b[27] = ty;
        b[34..36].copy_from_slice(&flags.to_le_bytes());
        b[36..40].copy_from_slice(&1234u32.to_le_bytes());
        b[40..44].copy_from_slice(&5678u32.to_le_bytes());
        // Owner rwx (read 4, write 2, exec 1 at bit 10), group r-x, other r--.
        let perms: u32 = (0b00111 << 10) | (0b00101 << 5) | 0b00100;
        b[44..48].copy_from_slice(&perms.to_le_bytes());
        b[48..50].copy_from_slice(&1u16.to_le_bytes());
        b[56..64].copy_from_slice(&size.to_le_bytes());
        // Modification time 2023-11-14 22:13:20 UTC.
        b[84..86].copy_from_slice(&0x1000u16.to_le_bytes());
        b[86..88].copy_from_slice(&2023u16.to_le_bytes());
        b[88..96].copy_from_slice(&[11, 14, 22, 13, 20, 0, 0, 0]);
        b[172..176].copy_from_slice(&(ads.len() as u32).to_le_bytes());
        b[176..176 + ads.len()].copy_from_slice(ads);
        put_tag(b, tag::FILE_ENTRY, loc);
    }

    /// A file identifier descriptor: characteristics, name (8-bit CS0), ICB in the
    /// metadata partition.
    fn fid(chars: u8, name: &str, icb: u32) -> Vec<u8> {
        let ident: Vec<u8> = if name.is_empty() {
            Vec::new()
        } else {
            [&[8u8][..], name.as_bytes()].concat()
        };
        let mut v = vec![0u8; 38];
        v[16] = 1;
        v[18] = chars;
        v[19] = ident.len() as u8;
        v[20..36].copy_from_slice(&long(2048, icb, 1));
        v.extend_from_slice(&ident);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        put_tag(&mut v, tag::FILE_ID, 0);
        v
    }

    fn symlink_to_file() -> Vec<u8> {
        // Root, then "file.bin".
        let mut v = vec![2, 0, 0, 0, 5, 9, 0, 0, 8];
        v.extend_from_slice(b"file.bin");
        v
    }

    fn image() -> Vec<u8> {
        build(false)
    }

    /// The same tree on a virtual partition: the VAT, in the image's last block, maps virtual
    /// block n to physical block META_AT + n (where the metadata file put metadata block n).
    fn vat_image() -> Vec<u8> {
        build(true)
    }

    fn build(vat: bool) -> Vec<u8> {
        let mut img = vec![0u8; 300 * 2048];
        for (sector, id) in [(16, b"BEA01"), (17, b"NSR02"), (18, b"TEA01")] {
            let b = at(&mut img, sector);
            b[1..6].copy_from_slice(id);
            b[6] = 1;
        }
        let pd = at(&mut img, 32);
        pd[22..24].copy_from_slice(&0u16.to_le_bytes());
        pd[188..192].copy_from_slice(&PART.to_le_bytes());
        let blocks: u32 = if vat { 200 } else { 150 };
        pd[192..196].copy_from_slice(&blocks.to_le_bytes());
        put_tag(pd, tag::PARTITION, 32);
        let lvd = at(&mut img, 33);
        lvd[16..20].copy_from_slice(&1u32.to_le_bytes());
        lvd[84] = 8;
        lvd[85..89].copy_from_slice(b"META");
        lvd[211] = 5;
        lvd[212..216].copy_from_slice(&2048u32.to_le_bytes());
        lvd[248..264].copy_from_slice(&long(2048, 0, 1));
        lvd[264..268].copy_from_slice(&70u32.to_le_bytes());
        lvd[268..272].copy_from_slice(&2u32.to_le_bytes());
        lvd[440..446].copy_from_slice(&[1, 6, 1, 0, 0, 0]);
        let map = &mut lvd[446..510];
        map[0] = 2;
        map[1] = 64;
        if vat {
            map[5..27].copy_from_slice(b"*UDF Virtual Partition");
        } else {
            map[5..28].copy_from_slice(b"*UDF Metadata Partition");
        }
        map[36..38].copy_from_slice(&1u16.to_le_bytes());
        map[38..40].copy_from_slice(&0u16.to_le_bytes());
        map[40..44].copy_from_slice(&0u32.to_le_bytes());
        map[44..48].copy_from_slice(&1u32.to_le_bytes());
        put_tag(lvd, tag::LOGICAL_VOLUME, 33);
        put_tag(at(&mut img, 34), tag::TERMINATOR, 34);
        let avdp = at(&mut img, 256);
        avdp[16..20].copy_from_slice(&(16u32 * 2048).to_le_bytes());
        avdp[20..24].copy_from_slice(&32u32.to_le_bytes());
        avdp[24..28].copy_from_slice(&(16u32 * 2048).to_le_bytes());
        avdp[28..32].copy_from_slice(&32u32.to_le_bytes());
        put_tag(avdp, tag::ANCHOR, 256);
        // The metadata file and its mirror: metadata blocks 0.. at physical META_AT...
        let runs = short(META_BLOCKS * 2048, META_AT);
        let size = u64::from(META_BLOCKS) * 2048;
        file_entry(at(&mut img, phys(0)), 0, 250, 0, size, &runs);
        file_entry(at(&mut img, phys(1)), 1, 251, 0, size, &runs);
        // m0: the file set descriptor; the root is m1.
        let fsd = at(&mut img, meta(0));
        fsd[400..416].copy_from_slice(&long(2048, 1, 1));
        put_tag(fsd, tag::FILE_SET, 0);
        // m1: the root, its identifiers embedded.
        let root: Vec<u8> = [
            fid(0x0A, "", 1),
            fid(0, "file.bin", 2),
            fid(0x01, "hidden", 2),
            fid(0x04, "gone", 2),
            fid(0, "hole.bin", 3),
            fid(0x02, "sub", 4),
            fid(0, "big.bin", 7),
        ]
        .concat();
        file_entry(at(&mut img, meta(1)), 1, 4, 3, root.len() as u64, &root);
        // m2: file.bin, 2048 bytes at physical 20, then (through an allocation extent
        // descriptor at physical 22) 952 at physical 21; long descriptors.
        let ads = [long(2048, 20, 0), long((3 << 30) | 16, 22, 0)].concat();
        file_entry(at(&mut img, meta(2)), 2, 5, 1, 3000, &ads);
        at(&mut img, phys(20)).fill(b'a');
        at(&mut img, phys(21)).fill(b'b');
        let aed = at(&mut img, phys(22));
        aed[20..24].copy_from_slice(&16u32.to_le_bytes());
        aed[24..40].copy_from_slice(&long(952, 21, 0));
        put_tag(aed, tag::ALLOC_EXTENT, 22);
        // m3: hole.bin, 4096 bytes never recorded then 100 at metadata block 5 (short
        // descriptors are in the entry's own partition).
        let ads = [short((1 << 30) | 4096, 0), short(100, 5)].concat();
        file_entry(at(&mut img, meta(3)), 3, 5, 0, 4196, &ads);
        at(&mut img, meta(5)).fill(b'c');
        // m4: sub, holding "link" (m6), a symlink to /file.bin.
        let sub: Vec<u8> = [fid(0x0A, "", 1), fid(0, "link", 6)].concat();
        file_entry(at(&mut img, meta(4)), 4, 4, 3, sub.len() as u64, &sub);
        // m7: big.bin, five unrecorded extents of almost 1 GiB each (past 4 GiB), then the
        // 100 bytes at metadata block 5.
        let gib = 0x3FFF_F800u32;
        let mut ads: Vec<u8> = (0..5).flat_map(|_| short((1 << 30) | gib, 0)).collect();
        ads.extend(short(100, 5));
        file_entry(
            at(&mut img, meta(7)),
            7,
            5,
            0,
            5 * u64::from(gib) + 100,
            &ads,
        );
        let target = symlink_to_file();
        file_entry(
            at(&mut img, meta(6)),
            6,
            12,
            3,
            target.len() as u64,
            &target,
        );
        if vat {
            // Type 248: a 152-byte header, then one physical block per virtual block.
            let mut table = vec![0u8; 152];
            table[0..2].copy_from_slice(&152u16.to_le_bytes());
            for n in 0..META_BLOCKS {
                table.extend_from_slice(&(META_AT + n).to_le_bytes());
            }
            file_entry(at(&mut img, 299), 199, 248, 3, table.len() as u64, &table);
        }
        img
    }

    fn names(img: &Image<Vec<u8>>, path: &str) -> Vec<String> {
        let dir = img.lookup(path).unwrap();
        let mut v: Vec<String> = img
            .read_dir(&dir)
            .unwrap()
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn content(img: &Image<Vec<u8>>, path: &str) -> Vec<u8> {
        let e = img.lookup_follow(path).unwrap();
        let mut buf = vec![0u8; e.size as usize + 10];
        let n = img.read_at(&e, 0, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_metadata_partition_image_reads_through_its_metadata_file() {
        let img = Image::open(image()).unwrap();
        assert_eq!(img.names(), Names::Udf);
        assert_eq!(img.info().label.as_deref(), Some("META"));
        // Hidden, deleted and parent entries are not shown.
        assert_eq!(names(&img, "/"), ["big.bin", "file.bin", "hole.bin", "sub"]);
        let file = img.lookup("/file.bin").unwrap();
        assert_eq!((file.kind, file.size), (Kind::File, 3000));
        assert_eq!((file.mode, file.uid, file.gid), (0o754, 1234, 5678));
        assert_eq!(file.mtime.secs, MTIME);
        // Across the allocation extent descriptor.
        let data = content(&img, "/file.bin");
        assert_eq!(data.len(), 3000);
        assert!(data[..2048].iter().all(|&b| b == b'a'));
        assert!(data[2048..].iter().all(|&b| b == b'b'));
        // An unrecorded extent reads as zeros; a read across its end too.
        let hole = content(&img, "/hole.bin");
        assert_eq!(hole.len(), 4196);
        assert!(hole[..4096].iter().all(|&b| b == 0));
        assert!(hole[4096..].iter().all(|&b| b == b'c'));
        let e = img.lookup("/hole.bin").unwrap();
        let mut buf = [1u8; 8];
        assert_eq!(img.read_at(&e, 4092, &mut buf).unwrap(), 8);
        assert_eq!(buf, [0, 0, 0, 0, b'c', b'c', b'c', b'c']);
        // Past 4 GiB, across the end of the unrecorded extents.
        let big = img.lookup("/big.bin").unwrap();
        let end = 5 * 0x3FFF_F800u64;
        assert_eq!(big.size, end + 100);
        let mut buf = [1u8; 8];
        assert_eq!(img.read_at(&big, end - 4, &mut buf).unwrap(), 8);
        assert_eq!(buf, [0, 0, 0, 0, b'c', b'c', b'c', b'c']);
        assert_eq!(img.read_at(&big, end + 96, &mut buf).unwrap(), 4);
        let link = img.lookup("/sub/link").unwrap();
        assert_eq!((link.kind, link.mode), (Kind::Symlink, 0o777));
        assert_eq!(
            link.target.as_deref(),
            Some(std::ffi::OsStr::new("/file.bin"))
        );
        assert_eq!(content(&img, "/sub/link"), data);
        let mut walked = Vec::new();
        img.walk(&img.root(), "/", |p, _| {
            walked.push(p.to_owned());
            Ok(())
        })
        .unwrap();
        walked.sort();
        assert_eq!(
            walked,
            ["/big.bin", "/file.bin", "/hole.bin", "/sub", "/sub/link"]
        );
    }

    #[test]
    fn a_virtual_partition_reads_through_the_vat_in_the_last_block() {
        let data = vat_image();
        // The partition descriptor declares blocks never written; ending with the VAT, the
        // image is whole.
        let info = crate::iso9660::probe(&data).unwrap();
        assert_eq!(info.volume_size, data.len() as u64);
        assert!(info.complete());
        let img = Image::open(data.clone()).unwrap();
        assert_eq!(names(&img, "/"), ["big.bin", "file.bin", "hole.bin", "sub"]);
        assert_eq!(names(&img, "/sub"), ["link"]);
        let file = content(&img, "/file.bin");
        assert_eq!(file.len(), 3000);
        assert!(file[2048..].iter().all(|&b| b == b'b'));
        assert_eq!(content(&img, "/sub/link"), file);
        // Cut short, the image ends without its VAT: an error that says so, and incomplete.
        let mut cut = data;
        cut.truncate(299 * 2048);
        assert!(!crate::iso9660::probe(&cut).unwrap().complete());
        let e = Image::open(cut).err().unwrap().to_string();
        assert!(e.contains("no virtual allocation table"), "{e}");
    }

    /// [`image`] on a sparable partition (a CD-RW's) whose sparing table, at block 50, moved
    /// packet 0 (physical blocks 0 to 31) to blocks 260 to 291, where block 20 now holds 'z'.
    fn spared_image() -> Vec<u8> {
        let mut img = image();
        let lvd = at(&mut img, 33);
        let metadata_map = lvd[446..510].to_vec();
        lvd[440..].fill(0);
        let map = &mut lvd[440..504];
        map[0] = 2;
        map[1] = 64;
        map[5..28].copy_from_slice(b"*UDF Sparable Partition");
        map[36..38].copy_from_slice(&1u16.to_le_bytes());
        map[40..42].copy_from_slice(&32u16.to_le_bytes());
        map[42] = 1;
        map[44..48].copy_from_slice(&2048u32.to_le_bytes());
        map[48..52].copy_from_slice(&50u32.to_le_bytes());
        lvd[504..568].copy_from_slice(&metadata_map);
        lvd[264..268].copy_from_slice(&128u32.to_le_bytes());
        put_tag(lvd, tag::LOGICAL_VOLUME, 33);
        let table = at(&mut img, 50);
        table[17..35].copy_from_slice(b"*UDF Sparing Table");
        table[48..50].copy_from_slice(&1u16.to_le_bytes());
        table[52..56].copy_from_slice(&1u32.to_le_bytes());
        table[56..60].copy_from_slice(&0u32.to_le_bytes());
        table[60..64].copy_from_slice(&260u32.to_le_bytes());
        put_tag(table, 0, 50);
        let packet = img[phys(0) as usize * 2048..phys(32) as usize * 2048].to_vec();
        img[260 * 2048..292 * 2048].copy_from_slice(&packet);
        at(&mut img, 280).fill(b'z');
        img
    }

    #[test]
    fn a_sparable_partition_reads_moved_packets_where_they_went() {
        let img = Image::open(spared_image()).unwrap();
        assert_eq!(names(&img, "/"), ["big.bin", "file.bin", "hole.bin", "sub"]);
        let file = content(&img, "/file.bin");
        assert!(file[..2048].iter().all(|&b| b == b'z'), "the moved block");
        assert!(file[2048..].iter().all(|&b| b == b'b'));
        // A table that fails its checksum is not used: the packet is read where written.
        let mut data = spared_image();
        at(&mut data, 50)[4] ^= 1;
        let img = Image::open(data).unwrap();
        assert!(content(&img, "/file.bin")[..2048]
            .iter()
            .all(|&b| b == b'a'));
    }

    #[test]
    fn the_mirror_serves_when_the_metadata_file_is_damaged() {
        let mut data = image();
        at(&mut data, phys(0))[4] ^= 0xFF;
        let img = Image::open(data.clone()).unwrap();
        assert_eq!(names(&img, "/"), ["big.bin", "file.bin", "hole.bin", "sub"]);
        at(&mut data, phys(1))[4] ^= 0xFF;
        let err = Image::open(data).err().unwrap().to_string();
        assert!(err.contains("bad checksum"), "{err}");
    }

    /// Damaged or hostile structures are errors (or an entry left out), never a panic, a
    /// hang or a read outside the partition.
    #[test]
    fn hostile_structures_are_errors() {
        // An allocation extent descriptor that continues into itself: file.bin is left out.
        let mut data = image();
        let aed = at(&mut data, phys(22));
        aed[24..40].copy_from_slice(&long((3 << 30) | 16, 22, 0));
        put_tag(aed, tag::ALLOC_EXTENT, 22);
        let img = Image::open(data).unwrap();
        assert_eq!(names(&img, "/"), ["big.bin", "hole.bin", "sub"]);

        // A directory that holds its own ancestor: the walk ends with a loop error.
        let mut data = image();
        let sub: Vec<u8> = [fid(0x0A, "", 1), fid(0x02, "up", 1)].concat();
        file_entry(at(&mut data, meta(4)), 4, 4, 3, sub.len() as u64, &sub);
        let img = Image::open(data).unwrap();
        let walked = img.walk(&img.root(), "/", |_, _| Ok(()));
        assert!(matches!(walked, Err(Error::Loop { .. })), "{walked:?}");

        // Data past the end of the partition, or in a partition that does not exist.
        for ad in [long(4096, 149, 0), long(10, 20, 9)] {
            let mut data = image();
            file_entry(at(&mut data, meta(2)), 2, 5, 1, 3000, &ad);
            let img = Image::open(data).unwrap();
            assert_eq!(names(&img, "/"), ["big.bin", "hole.bin", "sub"]);
        }

        // A file set descriptor recorded for another place.
        let mut data = image();
        put_tag(at(&mut data, meta(0)), tag::FILE_SET, 7);
        let err = Image::open(data).err().unwrap().to_string();
        assert!(err.contains("says it is at block 7"), "{err}");

        // A VAT naming a block outside its partition: what is there is left out.
        let mut data = vat_image();
        let vat = at(&mut data, 299);
        vat[176 + 152 + 12..176 + 152 + 16].copy_from_slice(&5000u32.to_le_bytes());
        put_tag(vat, tag::FILE_ENTRY, 199);
        let img = Image::open(data).unwrap();
        assert_eq!(names(&img, "/"), ["big.bin", "file.bin", "sub"]);
    }

    /// Every byte of every structure set to 0x00, 0x80 and 0xFF in turn: never a panic.
    #[test]
    fn any_byte_of_the_structures_changed_never_panics() {
        let metadata: Vec<u32> = [32, 33, 256, phys(0), phys(22)]
            .into_iter()
            .chain((0..META_BLOCKS).map(meta))
            .collect();
        let cases = [
            (image(), metadata),
            (vat_image(), vec![33, 299]),
            (spared_image(), vec![33, 50]),
        ];
        for (base, blocks) in &cases {
            for (block, i) in blocks
                .iter()
                .flat_map(|&b| (0..512usize).map(move |i| (b, i)))
            {
                for v in [0x00, 0x80, 0xFF] {
                    let mut data = base.clone();
                    at(&mut data, block)[i] = v;
                    let Ok(img) = Image::open(data) else { continue };
                    let mut files = Vec::new();
                    let _ = img.walk(&img.root(), "/", |_, e| {
                        files.push(e.clone());
                        Ok(())
                    });
                    let mut buf = [0u8; 64];
                    for f in files.iter().filter(|f| f.kind == Kind::File) {
                        let _ = img.read_at(f, f.size.saturating_sub(10), &mut buf);
                    }
                }
            }
        }
    }
}
