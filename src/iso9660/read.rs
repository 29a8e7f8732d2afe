//! Reading an image: identify it ([`probe`]), then browse its tree and read its files
//! ([`Image`]). Positioned reads only, no caching, no locks: one `Image` serves many threads.
//!
//! Input is untrusted. Every offset and length read from the image is checked against the
//! record, the directory and the image size before it is used; allocations are capped by the
//! constants below and by the image size; directory loops are errors.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::descriptor::{
    catalog_is_bootable, iso_label, read_descriptors, read_udf, Descriptors, Fs, VolumeDescriptor,
};
use super::error::{Error, Result};
use super::ondisk::{
    both32, decode_dir_time, decode_ucs2be, dr, file_flags, mode, Timestamp,
    FIRST_DESCRIPTOR_SECTOR, SECTOR_SIZE,
};
use super::source::{read_full, ReadAt};
use super::susp::{parse_system_use, RockRidge, SuspError};
use super::udf::{Udf, HOLE};

/// Largest directory accepted (a directory of 100,000 entries with long Rock Ridge names is
/// about 20 MiB).
pub const MAX_DIR_BYTES: u64 = 64 * 1024 * 1024;
/// Continuation-area bytes one directory read may fetch, per byte of the directory: a real
/// record carries at most a few KiB there (a 4 KiB symlink target) for its 100 or so bytes; a
/// hostile one points 64 KiB of chained areas at a 62-byte record, and every record at the same
/// chain, to make reading a directory a thousand times its size.
pub const MAX_CE_BYTES_PER_DIR_BYTE: u64 = 64;
/// Deepest directory nesting followed by walks and lookups.
pub const MAX_DIR_DEPTH: usize = 1024;
/// Most extents one file may have (a 1 TiB file needs 256 multi-extent records).
pub const MAX_EXTENTS: usize = 65_536;
/// Symlinks followed by [`Image::lookup_follow`] before giving up (as Linux's ELOOP).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// Path components [`Image::lookup_follow`] resolves in all, over all its symlink hops: as
/// many as the deepest path. Each may cost a directory read (a lookup keeps the listings it
/// read only up to a cap), and 40 hops of 1,024-component targets would otherwise be 40,000.
/// Real paths through real links take a few dozen.
pub const MAX_FOLLOW_COMPONENTS: usize = MAX_DIR_DEPTH;

/// Which names the chosen directory tree shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Names {
    RockRidge,
    /// The UDF tree: a UDF-only image, or a UDF bridge without Rock Ridge.
    Udf,
    Joliet,
    Iso9660,
}

/// What identifies a medium: everything `scan` reports, read from a few sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeInfo {
    pub fs: Fs,
    /// The label blkid reports, or `None` when it reports none.
    pub label: Option<String>,
    /// Bytes the volume declares (the ISO9660 volume space, or the end of the UDF partition).
    pub volume_size: u64,
    /// Bytes the source holds.
    pub image_size: u64,
    pub rock_ridge: bool,
    pub joliet: bool,
    pub el_torito: bool,
    pub udf: bool,
    pub bootable: bool,
    /// The El Torito boot catalog's sector, from the boot record.
    pub boot_catalog: Option<u32>,
    /// Anomalies that did not stop identification (bad both-endian fields, unreadable root).
    pub warnings: Vec<String>,
}

impl VolumeInfo {
    /// The source holds at least the bytes the volume declares.
    pub fn complete(&self) -> bool {
        self.image_size >= self.volume_size
    }

    /// The extensions present, as `scan --json` names them.
    pub fn extensions(&self) -> Vec<&'static str> {
        self.extension_names().collect()
    }

    /// [`VolumeInfo::extensions`] without the vector.
    pub fn extension_names(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.rock_ridge, "rockridge"),
            (self.joliet, "joliet"),
            (self.el_torito, "eltorito"),
            (self.udf, "udf"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }
}

/// What an entry is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    File,
    Dir,
    Symlink,
    /// A device, FIFO or socket according to Rock Ridge; never served as such.
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Other => "other",
        }
    }
}

/// A contiguous run of an entry's bytes in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Extent {
    /// Byte offset in the image, or [`super::udf::HOLE`]: bytes never recorded, read as zeros.
    pub(super) start: u64,
    pub(super) len: u64,
}

/// An entry's extents: almost always one, kept inline (a FUSE table holds an entry per node
/// the kernel knows; a heap block per entry for one 16-byte extent would double its cost).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Extents {
    #[default]
    None,
    One(Extent),
    Many(Vec<Extent>),
}

impl Extents {
    pub(super) fn as_slice(&self) -> &[Extent] {
        match self {
            Extents::None => &[],
            Extents::One(e) => std::slice::from_ref(e),
            Extents::Many(v) => v,
        }
    }

    fn first(&self) -> Option<&Extent> {
        self.as_slice().first()
    }

    pub(super) fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// [`Extents::push`], refused past [`MAX_EXTENTS`].
    pub(super) fn push_checked(&mut self, e: Extent) -> Result<()> {
        if self.len() >= MAX_EXTENTS {
            return Err(Error::Limit {
                what: "extents of one file",
                value: self.len() as u64 + 1,
                limit: MAX_EXTENTS as u64,
            });
        }
        self.push(e);
        Ok(())
    }

    pub(super) fn push(&mut self, e: Extent) {
        *self = match std::mem::take(self) {
            Extents::None => Extents::One(e),
            Extents::One(first) => Extents::Many(vec![first, e]),
            Extents::Many(mut v) => {
                v.push(e);
                Extents::Many(v)
            }
        };
    }
}

/// One file, directory or symlink, as shown by the chosen tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits (0o7777): Rock Ridge PX where present, else 0o444 files, 0o555 dirs.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    /// Symlink target (Rock Ridge SL).
    pub target: Option<OsString>,
    /// Unique and stable within the image: the byte offset of the entry's directory record.
    pub id: u64,
    pub(super) extents: Extents,
    pub(super) interleaved: bool,
    /// The data is compressed (zisofs); `size` is the uncompressed size.
    pub(super) zisofs: Option<super::susp::ZisofsParams>,
}

impl Entry {
    /// The sector its data starts at (its first extent's); `None` without data.
    pub fn start_sector(&self) -> Option<u64> {
        self.extents
            .first()
            .filter(|e| e.start != super::udf::HOLE)
            .map(|e| e.start / SECTOR_SIZE)
    }

    /// For a file whose data is one recorded extent: where it starts (bytes into the image),
    /// and whether it is stored interleaved or compressed. Two files with equal keys and
    /// sizes read the same bytes.
    pub fn data_key(&self) -> Option<(u64, bool, bool)> {
        match (&self.extents, self.kind) {
            (Extents::One(e), Kind::File) if e.start != super::udf::HOLE => {
                Some((e.start, self.interleaved, self.zisofs.is_some()))
            }
            _ => None,
        }
    }

    /// For a directory, the sector its records start at.
    pub fn dir_sector(&self) -> Option<u64> {
        self.dir_key().map(|at| at / SECTOR_SIZE)
    }

    /// For a directory, the byte offset its records start at: its identity, for loop
    /// detection (two UDF directories with 512-byte blocks may start in one sector).
    pub fn dir_key(&self) -> Option<u64> {
        match (self.kind, self.extents.first()) {
            (Kind::Dir, Some(e)) => Some(e.start),
            _ => None,
        }
    }

    fn name_lossy(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }
}

/// The fixed part of a directory record (ECMA-119 9.1), checked against its length.
#[derive(Clone, Copy, Debug)]
struct Record<'a> {
    ext_attr_len: u8,
    extent: u32,
    data_len: u32,
    /// The 7-byte recording time, decoded where it is used (identification never needs it).
    recorded: Option<&'a [u8]>,
    flags: u8,
    file_unit_size: u8,
    identifier: &'a [u8],
    system_use: &'a [u8],
}

fn parse_record(b: &[u8]) -> std::result::Result<Record<'_>, String> {
    let len = usize::from(*b.first().ok_or("empty record")?);
    if len < dr::MIN_LEN {
        return Err(format!("length {len} is below {}", dr::MIN_LEN));
    }
    let b = b
        .get(..len)
        .ok_or_else(|| format!("length {len} runs past the end of the directory"))?;
    let name_len = usize::from(*b.get(dr::NAME_LENGTH).ok_or("too short")?);
    if name_len == 0 {
        return Err("file identifier length is 0".into());
    }
    let identifier = b
        .get(dr::NAME..dr::NAME + name_len)
        .ok_or_else(|| format!("identifier of {name_len} bytes does not fit in length {len}"))?;
    // A pad byte follows an identifier of even length (ECMA-119 9.1.12).
    let su_start = dr::NAME + name_len + usize::from(name_len % 2 == 0);
    let system_use = b.get(su_start..).unwrap_or_default();
    let field = |at| b.get(at).copied().unwrap_or(0);
    Ok(Record {
        ext_attr_len: field(dr::EXT_ATTR_LENGTH),
        extent: both32(b, dr::EXTENT).map(|v| v.0).ok_or("too short")?,
        data_len: both32(b, dr::DATA_LENGTH).map(|v| v.0).ok_or("too short")?,
        recorded: b.get(dr::RECORDING_TIME..dr::RECORDING_TIME + 7),
        flags: field(dr::FLAGS),
        file_unit_size: field(dr::FILE_UNIT_SIZE),
        identifier,
        system_use,
    })
}

/// Walks the records of a directory's bytes (ECMA-119 6.8.1.1): a zero length byte means the
/// rest of the sector is padding. Yields each record with its sector, offset in the sector,
/// and position in `data`; a malformed record ends the walk with its error.
fn records(
    data: &[u8],
    dir_sector: u64,
) -> impl Iterator<Item = Result<(u64, usize, usize, Record<'_>)>> + '_ {
    let mut pos = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        while !failed && pos < data.len() {
            let len = usize::from(data.get(pos).copied().unwrap_or(0));
            if len == 0 {
                pos = (pos / SECTOR_SIZE as usize + 1) * SECTOR_SIZE as usize;
                continue;
            }
            let sector = dir_sector + (pos as u64) / SECTOR_SIZE;
            let offset = pos % SECTOR_SIZE as usize;
            let at = pos;
            return Some(match parse_record(data.get(pos..).unwrap_or_default()) {
                Ok(rec) => {
                    pos += len;
                    Ok((sector, offset, at, rec))
                }
                Err(why) => {
                    failed = true;
                    Err(Error::record(sector, offset, why))
                }
            });
        }
        None
    })
}

/// Identifies a medium from its first sectors: descriptors, Rock Ridge presence (the root's
/// "." record), El Torito, UDF. Reads a handful of sectors, never the tree.
pub fn probe(src: &(impl ReadAt + ?Sized)) -> Result<VolumeInfo> {
    Ok(probe_full(src)?.0)
}

/// What `probe` finds, plus what opening the tree needs.
struct Probed {
    desc: Descriptors,
    /// What detection read of the root's "." record (SP, ER, whether Rock Ridge entries are
    /// there; nothing decoded) and the SP skip, when Rock Ridge is present.
    root_rr: Option<(RockRidge, usize)>,
}

fn probe_full(src: &(impl ReadAt + ?Sized)) -> Result<(VolumeInfo, Probed)> {
    // One read covers the usual descriptor set; the root directory's first record is a second.
    // The buffer is reused per thread (scan probes thousands).
    thread_local! {
        static HEAD: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; PREFETCH_BYTES]);
    }
    HEAD.with(|head| match head.try_borrow_mut() {
        Ok(mut buf) => probe_with(src, &mut buf),
        Err(_) => probe_with(src, &mut vec![0u8; PREFETCH_BYTES]),
    })
}

fn probe_with(src: &(impl ReadAt + ?Sized), buf: &mut [u8]) -> Result<(VolumeInfo, Probed)> {
    let image_size = src.size().map_err(|source| Error::Io {
        offset: 0,
        len: 0,
        source,
    })?;
    let start = FIRST_DESCRIPTOR_SECTOR * SECTOR_SIZE;
    let n = read_full(src, buf, start).map_err(|source| Error::Io {
        offset: start,
        len: buf.len(),
        source,
    })?;
    let prefetched = Prefetched {
        inner: src,
        start,
        data: buf.get(..n).unwrap_or_default(),
    };
    let src = &prefetched;
    let desc = read_descriptors(src, prefetched.data, image_size)?;
    let mut warnings = Vec::new();
    let udf = if desc.udf_nsr { read_udf(src)? } else { None };
    let primary = desc.primary.as_ref();
    if primary.is_none() && udf.is_none() {
        return Err(Error::NotAnImage);
    }
    for vd in [desc.primary.as_ref(), desc.joliet.as_ref()]
        .into_iter()
        .flatten()
    {
        if vd.endian_mismatch {
            warnings.push(format!(
                "volume descriptor at sector {}: both-endian fields disagree; using little-endian",
                vd.sector
            ));
        }
    }
    let iso_size = primary
        .map(|p| u64::from(p.volume_space_size) * block_size(p))
        .unwrap_or(0);
    let volume_size = iso_size.max(udf.as_ref().map_or(0, |u| u.partition_end));
    let (fs, label) = match &udf {
        Some(u) => (Fs::Udf, u.logical_volume_id.clone()),
        None => (
            Fs::Iso9660,
            primary
                .and_then(|p| iso_label(&p.volume_id, desc.joliet.as_ref().map(|j| &j.volume_id))),
        ),
    };
    let root_rr = match primary {
        Some(p) => detect_rock_ridge(src, p, image_size).unwrap_or_else(|e| {
            warnings.push(format!("root directory: {e}"));
            None
        }),
        None => None,
    };
    let bootable = match desc.boot_catalog {
        Some(lba) => {
            let mut cat = vec![0u8; SECTOR_SIZE as usize];
            match read_full(src, &mut cat, u64::from(lba) * SECTOR_SIZE) {
                Ok(n) if n == cat.len() => catalog_is_bootable(&cat),
                Ok(_) => false,
                Err(e) => {
                    warnings.push(format!("El Torito boot catalog at sector {lba}: {e}"));
                    false
                }
            }
        }
        None => false,
    };
    let info = VolumeInfo {
        fs,
        label,
        volume_size,
        image_size,
        rock_ridge: root_rr.is_some(),
        joliet: desc.joliet.is_some(),
        el_torito: desc.boot_catalog.is_some(),
        udf: udf.is_some(),
        bootable,
        boot_catalog: desc.boot_catalog,
        warnings,
    };
    Ok((info, Probed { desc, root_rr }))
}

/// Bytes read at sector 16 when identifying an image.
const PREFETCH_BYTES: usize = super::descriptor::HEAD_BYTES;

/// A source with one range already in memory; reads inside it are served from there.
struct Prefetched<'a, S: ?Sized> {
    inner: &'a S,
    start: u64,
    data: &'a [u8],
}

impl<S: ReadAt + ?Sized> ReadAt for Prefetched<'_, S> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let end = offset.saturating_add(buf.len() as u64);
        if offset >= self.start && end <= self.start + self.data.len() as u64 {
            let at = (offset - self.start) as usize;
            if let Some(src) = self.data.get(at..at + buf.len()) {
                buf.copy_from_slice(src);
                return Ok(buf.len());
            }
        }
        self.inner.read_at(buf, offset)
    }

    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }
}

fn block_size(vd: &VolumeDescriptor) -> u64 {
    match vd.logical_block_size {
        512 | 1024 | 2048 => u64::from(vd.logical_block_size),
        _ => SECTOR_SIZE,
    }
}

/// Rock Ridge is present when the root's "." record starts its system use field with SP
/// (SUSP 5.3) and carries an RRIP ER entry or RRIP entries (old images omit ER). The
/// continuation area is only read when the record itself does not settle it.
fn detect_rock_ridge(
    src: &(impl ReadAt + ?Sized),
    vd: &VolumeDescriptor,
    image_size: u64,
) -> Result<Option<(RockRidge, usize)>> {
    for follow_ce in [false, true] {
        let Some(rr) = root_dot_rock_ridge(src, vd, image_size, follow_ce, false)? else {
            return Ok(None);
        };
        if let Some(skip) = rr.sp_skip.filter(|_| rr.er_rrip || rr.any_rrip) {
            return Ok(Some((rr, usize::from(skip))));
        }
    }
    Ok(None)
}

/// The SUSP fields of the root's "." record, if its system use field starts with SP; with
/// `full` false, only SP, ER and whether Rock Ridge entries are there.
fn root_dot_rock_ridge(
    src: &(impl ReadAt + ?Sized),
    vd: &VolumeDescriptor,
    image_size: u64,
    follow_ce: bool,
    full: bool,
) -> Result<Option<RockRidge>> {
    let root = parse_record(&vd.root_record).map_err(|why| Error::descriptor(vd.sector, why))?;
    let start = u64::from(root.extent) * SECTOR_SIZE;
    // The "." record comes first and is at most 255 bytes long.
    let mut sector = [0u8; 256];
    let n = read_full(src, &mut sector, start).map_err(|source| Error::Io {
        offset: start,
        len: sector.len(),
        source,
    })?;
    let sector = sector.get(..n).unwrap_or_default();
    let dot = parse_record(sector).map_err(|why| Error::record(u64::from(root.extent), 0, why))?;
    if !dot.system_use.starts_with(b"SP") {
        return Ok(None);
    }
    let fetch = |ce| {
        if follow_ce {
            fetch_ce(src, ce, image_size)
        } else {
            Ok(Vec::new())
        }
    };
    let rr = if full {
        parse_system_use(dot.system_use, fetch)
    } else {
        super::susp::detect_rock_ridge(dot.system_use, fetch)
    }
    .map_err(|e| susp_error(u64::from(root.extent), 0, e))?;
    Ok(Some(rr))
}

fn fetch_ce(
    src: &(impl ReadAt + ?Sized),
    ce: super::susp::ContinuationArea,
    image_size: u64,
) -> std::result::Result<Vec<u8>, String> {
    let start = u64::from(ce.block) * SECTOR_SIZE + u64::from(ce.offset);
    let end = start + u64::from(ce.len);
    if u64::from(ce.offset) + u64::from(ce.len) > SECTOR_SIZE || end > image_size {
        return Err(format!(
            "continuation area at block {} offset {} length {} lies outside its sector or the image",
            ce.block, ce.offset, ce.len
        ));
    }
    let mut buf = vec![0u8; ce.len as usize];
    let n = read_full(src, &mut buf, start).map_err(|e| e.to_string())?;
    buf.truncate(n);
    Ok(buf)
}

fn susp_error(sector: u64, offset: usize, e: SuspError) -> Error {
    let why = match e {
        SuspError::Continuation(m) | SuspError::Fetch(m) => m,
    };
    Error::Susp {
        sector,
        offset,
        why,
    }
}

/// How the warning of an unreadable UDF tree begins (see [`Image::udf_fallback`]).
const UDF_FALLBACK: &str = "UDF tree: ";

/// An opened image: its identity and the directory tree chosen for names (Rock Ridge, else
/// UDF, else Joliet, else plain ISO9660).
pub struct Image<R> {
    src: R,
    info: VolumeInfo,
    names: Names,
    /// SP skip of the Rock Ridge tree; `None` when Rock Ridge is not used.
    rr_skip: Option<usize>,
    /// The UDF tree, when it is the one shown (boxed: a watcher holds thousands of images).
    udf: Option<Box<Udf>>,
    root: Entry,
}

impl<R> Image<R> {
    /// The same image read through `src` instead (another reader of the same bytes).
    pub fn with_source<S>(self, src: S) -> Image<S> {
        Image {
            src,
            info: self.info,
            names: self.names,
            rr_skip: self.rr_skip,
            udf: self.udf,
            root: self.root,
        }
    }
}

impl<R: ReadAt> Image<R> {
    /// Identifies the image and prepares its tree: Rock Ridge where the ISO9660 tree has it
    /// (the fullest POSIX view), else the UDF tree (what the kernel mounts for a bridge:
    /// Windows media hold only a README in their ISO9660 tree), else Joliet, else ISO9660. A
    /// UDF tree that cannot be read gives way to the ISO9660 one, with a warning. Fails on a
    /// logical block size other than 2048.
    pub fn open(src: R) -> Result<Self> {
        let (mut info, probed) = probe_full(&src)?;
        if probed.root_rr.is_none() && info.udf {
            match Udf::open(&src, info.image_size) {
                Ok((udf, root)) => {
                    return Ok(Image {
                        src,
                        info,
                        names: Names::Udf,
                        rr_skip: None,
                        udf: Some(Box::new(udf)),
                        root,
                    });
                }
                Err(e) if probed.desc.primary.is_some() => {
                    info.warnings.push(format!(
                        "{UDF_FALLBACK}{e}; showing the ISO9660 tree instead"
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        let (names, vd) = match (&probed.root_rr, &probed.desc.joliet, &probed.desc.primary) {
            (Some(_), _, Some(p)) => (Names::RockRidge, p),
            (None, Some(j), _) => (Names::Joliet, j),
            (None, None, Some(p)) => (Names::Iso9660, p),
            _ => return Err(Error::NoIsoTree),
        };
        if u64::from(vd.logical_block_size) != SECTOR_SIZE {
            return Err(Error::descriptor(
                vd.sector,
                format!(
                    "logical block size {} is not supported (only 2048)",
                    vd.logical_block_size
                ),
            ));
        }
        let rec = parse_record(&vd.root_record).map_err(|why| Error::descriptor(vd.sector, why))?;
        if rec.flags & file_flags::DIRECTORY == 0 {
            return Err(Error::descriptor(
                vd.sector,
                "root record is not a directory",
            ));
        }
        let root_rr = match &probed.root_rr {
            Some((_, skip)) => {
                root_dot_rock_ridge(&src, vd, info.image_size, true, true)?.map(|rr| (rr, *skip))
            }
            None => None,
        };
        let rr = root_rr.as_ref();
        let mut root = make_entry(
            &rec,
            OsString::from("/"),
            rr.map(|r| &r.0),
            vd.sector * SECTOR_SIZE + super::ondisk::pvd::ROOT_DIRECTORY_RECORD as u64,
        );
        root.kind = Kind::Dir;
        Ok(Image {
            src,
            info,
            names,
            rr_skip: rr.map(|r| r.1),
            udf: None,
            root,
        })
    }

    pub fn info(&self) -> &VolumeInfo {
        &self.info
    }

    pub fn names(&self) -> Names {
        self.names
    }

    /// Why the UDF tree is not the one shown, when the image has one that could not be read.
    pub fn udf_fallback(&self) -> Option<&str> {
        self.info
            .warnings
            .iter()
            .find(|w| w.starts_with(UDF_FALLBACK))
            .map(String::as_str)
    }

    pub fn root(&self) -> Entry {
        self.root.clone()
    }

    pub fn source(&self) -> &R {
        &self.src
    }

    /// The symlink target of an entry.
    pub fn readlink<'e>(&self, e: &'e Entry) -> Option<&'e OsStr> {
        e.target.as_deref()
    }

    /// The entries of a directory, in image order: no "." or "..", relocated directories
    /// where they belong, the relocation directory hidden, entries with unusable names
    /// (empty, ".", "..", containing '/' or NUL) left out.
    pub fn read_dir(&self, dir: &Entry) -> Result<Vec<Entry>> {
        if dir.kind != Kind::Dir {
            return Err(Error::NotADirectory {
                path: dir.name_lossy(),
            });
        }
        if let Some(udf) = &self.udf {
            return udf.read_dir(&self.src, dir);
        }
        let mut entries = self.read_dir_raw(dir)?;
        if self.rr_skip.is_some() && dir.id == self.root.id {
            self.hide_relocation_dir(&mut entries)?;
        }
        Ok(entries)
    }

    fn read_dir_raw(&self, dir: &Entry) -> Result<Vec<Entry>> {
        let Some(ext) = dir.extents.first().copied() else {
            return Ok(Vec::new());
        };
        let data = self.read_extent("directory", ext, MAX_DIR_BYTES)?;
        let dir_sector = ext.start / SECTOR_SIZE;
        let mut ce_budget = (data.len() as u64).saturating_mul(MAX_CE_BYTES_PER_DIR_BYTE);
        let mut out: Vec<Entry> = Vec::new();
        // A multi-extent file being assembled: its identifier and the entry so far.
        let mut pending: Option<(Vec<u8>, Entry)> = None;
        for item in records(&data, dir_sector) {
            let (sector, offset, pos, rec) = item?;
            let id = ext.start + pos as u64;
            if rec.identifier == [0] || rec.identifier == [1] {
                continue;
            }
            let rr = match self.rr_skip {
                Some(skip) => Some(
                    parse_system_use(rec.system_use.get(skip..).unwrap_or_default(), |ce| {
                        ce_budget = ce_budget.checked_sub(u64::from(ce.len)).ok_or_else(|| {
                            format!(
                                "continuation areas of this directory exceed {MAX_CE_BYTES_PER_DIR_BYTE} times its {} bytes",
                                data.len()
                            )
                        })?;
                        fetch_ce(&self.src, ce, self.info.image_size)
                    })
                    .map_err(|e| susp_error(sector, offset, e))?,
                ),
                None => None,
            };
            if rr.as_ref().is_some_and(|r| r.relocated) {
                continue;
            }
            // Continue or finish a multi-extent file.
            if let Some((ident, mut entry)) = pending.take() {
                if ident == rec.identifier {
                    let e = file_extent(&rec);
                    entry.extents.push_checked(e)?;
                    if entry.zisofs.is_none() {
                        entry.size += e.len;
                    }
                    if rec.flags & file_flags::MULTI_EXTENT != 0 {
                        pending = Some((ident, entry));
                    } else {
                        out.push(entry);
                    }
                    continue;
                }
                // The chain ended without a final record: keep what it had.
                out.push(entry);
            }
            let Some(name) = self.entry_name(&rec, rr.as_ref()) else {
                tracing::debug!(
                    sector,
                    offset,
                    "directory record with an unusable name left out"
                );
                continue;
            };
            let mut entry = make_entry(&rec, name, rr.as_ref(), id);
            if let Some(child) = rr.as_ref().and_then(|r| r.child_link) {
                self.resolve_child_link(&mut entry, child, sector, offset)?;
            }
            if rec.flags & file_flags::MULTI_EXTENT != 0 && entry.kind != Kind::Dir {
                pending = Some((rec.identifier.to_vec(), entry));
            } else {
                out.push(entry);
            }
        }
        if let Some((_, entry)) = pending {
            out.push(entry);
        }
        Ok(out)
    }

    /// Hides the Rock Ridge relocation directory ("rr_moved", xorriso's ".rr_moved") when
    /// everything in it was relocated elsewhere, as the kernel and bsdtar show trees.
    fn hide_relocation_dir(&self, entries: &mut Vec<Entry>) -> Result<()> {
        let mut hide = None;
        for (i, e) in entries.iter().enumerate() {
            let n = e.name.as_bytes();
            if e.kind == Kind::Dir && (n == b"rr_moved" || n == b".rr_moved") {
                let raw = self.read_dir_raw(e)?;
                if raw.is_empty() && self.dir_had_relocations(e)? {
                    hide = Some(i);
                }
            }
        }
        if let Some(i) = hide {
            entries.remove(i);
        }
        Ok(())
    }

    /// True when the directory's records include RE (relocated) entries.
    fn dir_had_relocations(&self, dir: &Entry) -> Result<bool> {
        let (Some(ext), Some(skip)) = (dir.extents.first().copied(), self.rr_skip) else {
            return Ok(false);
        };
        let data = self.read_extent("directory", ext, MAX_DIR_BYTES)?;
        for item in records(&data, ext.start / SECTOR_SIZE) {
            let Ok((_, _, _, rec)) = item else {
                return Ok(false);
            };
            if rec.identifier == [0] || rec.identifier == [1] {
                continue;
            }
            let rr = parse_system_use(rec.system_use.get(skip..).unwrap_or_default(), |ce| {
                fetch_ce(&self.src, ce, self.info.image_size)
            });
            if rr.is_ok_and(|r| r.relocated) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A CL record stands for a directory relocated to `child`: take the directory's extent
    /// and attributes from its "." record (RRIP 4.1.5.1).
    fn resolve_child_link(
        &self,
        entry: &mut Entry,
        child: u32,
        sector: u64,
        offset: usize,
    ) -> Result<()> {
        let start = u64::from(child) * SECTOR_SIZE;
        let data = self.read_extent(
            "relocated directory",
            Extent {
                start,
                len: SECTOR_SIZE,
            },
            SECTOR_SIZE,
        )?;
        let dot = parse_record(&data).map_err(|why| Error::record(u64::from(child), 0, why))?;
        if dot.identifier != [0] || dot.flags & file_flags::DIRECTORY == 0 {
            return Err(Error::record(
                sector,
                offset,
                format!("child link to sector {child}, which does not start a directory"),
            ));
        }
        let rr = match self.rr_skip {
            Some(skip) => Some(
                parse_system_use(dot.system_use.get(skip..).unwrap_or_default(), |ce| {
                    fetch_ce(&self.src, ce, self.info.image_size)
                })
                .map_err(|e| susp_error(u64::from(child), 0, e))?,
            ),
            None => None,
        };
        let name = std::mem::take(&mut entry.name);
        let mut dir = make_entry(&dot, name, rr.as_ref(), entry.id);
        dir.kind = Kind::Dir;
        *entry = dir;
        Ok(())
    }

    /// Reads one extent whole, after checking it against `cap` and the image size.
    fn read_extent(&self, what: &'static str, ext: Extent, cap: u64) -> Result<Vec<u8>> {
        if ext.len > cap {
            return Err(Error::Limit {
                what,
                value: ext.len,
                limit: cap,
            });
        }
        let need = ext.start.saturating_add(ext.len);
        if need > self.info.image_size {
            return Err(Error::Truncated {
                what,
                offset: ext.start,
                need: ext.len,
                size: self.info.image_size,
            });
        }
        let mut data = vec![0u8; ext.len as usize];
        let n = read_full(&self.src, &mut data, ext.start).map_err(|source| Error::Io {
            offset: ext.start,
            len: data.len(),
            source,
        })?;
        if n < data.len() {
            return Err(Error::Truncated {
                what,
                offset: ext.start,
                need: ext.len,
                size: ext.start + n as u64,
            });
        }
        Ok(data)
    }

    /// The name this tree shows for a record, or `None` if it is unusable.
    fn entry_name(&self, rec: &Record<'_>, rr: Option<&RockRidge>) -> Option<OsString> {
        let raw: Vec<u8> = match (self.names, rr.and_then(|r| r.name.as_ref())) {
            (Names::RockRidge, Some(n)) if rr.is_some_and(|r| r.name_flags == 0) => n.clone(),
            (Names::RockRidge, Some(_)) => return None,
            (Names::Joliet, _) => strip_version(&decode_ucs2be(rec.identifier)).into_bytes(),
            _ => strip_version_bytes(rec.identifier),
        };
        let usable = !raw.is_empty()
            && raw != b"."
            && raw != b".."
            && !raw.contains(&b'/')
            && !raw.contains(&0);
        usable.then(|| OsString::from_vec(raw))
    }

    /// Looks an absolute path up without following symlinks ("/" is the root).
    pub fn lookup(&self, path: &str) -> Result<Entry> {
        let mut cur = self.root.clone();
        let mut walked = String::new();
        let mut seen = Listings::default();
        for (depth, comp) in path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .enumerate()
        {
            cur = self.child(&cur, &walked, comp, depth, &mut seen)?;
            walked.push('/');
            walked.push_str(comp);
        }
        Ok(cur)
    }

    /// The entry `name` of directory `dir`, which is `depth` levels below the root at
    /// `dir_path` ("" for the root). `seen` keeps the listings read so far, so a path through
    /// the same directories again and again (a hostile image's loops) reads each once.
    fn child(
        &self,
        dir: &Entry,
        dir_path: &str,
        name: &str,
        depth: usize,
        seen: &mut Listings,
    ) -> Result<Entry> {
        if depth >= MAX_DIR_DEPTH {
            return Err(Error::Limit {
                what: "path depth",
                value: depth as u64,
                limit: MAX_DIR_DEPTH as u64,
            });
        }
        if dir.kind != Kind::Dir {
            return Err(Error::NotADirectory {
                path: if dir_path.is_empty() {
                    "/".into()
                } else {
                    dir_path.to_owned()
                },
            });
        }
        // What read_dir lists depends on the extent and on whether it is the root's.
        let key = (dir.extents.first().copied(), dir.id == self.root.id);
        let find = |entries: &[Entry]| {
            entries
                .iter()
                .find(|e| e.name.as_bytes() == name.as_bytes())
                .cloned()
        };
        let found = match seen.map.get(&key) {
            Some(entries) => find(entries),
            None => {
                let entries = self.read_dir(dir)?;
                let found = find(&entries);
                seen.keep(key, entries);
                found
            }
        };
        found.ok_or_else(|| Error::NotFound {
            path: format!("{dir_path}/{name}"),
        })
    }

    /// Looks a path up following symlinks inside the image, as `cat` needs. Absolute targets
    /// resolve from the image root; a target can never leave the image. Each hop walks its
    /// path once, from the root; all hops together resolve at most [`MAX_FOLLOW_COMPONENTS`].
    pub fn lookup_follow(&self, path: &str) -> Result<Entry> {
        let mut path = path.to_owned();
        let mut resolved = 0usize;
        let mut seen = Listings::default();
        for _ in 0..MAX_SYMLINK_HOPS {
            // Resolve component by component so links in the middle are followed too.
            let comps: Vec<&str> = path
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            let mut walked = String::new();
            let mut next: Option<String> = None;
            let mut cur = self.root.clone();
            for (i, comp) in comps.iter().enumerate() {
                resolved += 1;
                if resolved > MAX_FOLLOW_COMPONENTS {
                    return Err(Error::Limit {
                        what: "path components resolved following symlinks",
                        value: resolved as u64,
                        limit: MAX_FOLLOW_COMPONENTS as u64,
                    });
                }
                cur = self.child(&cur, &walked, comp, i, &mut seen)?;
                if cur.kind == Kind::Symlink {
                    let target = cur
                        .target
                        .as_ref()
                        .map(|t| t.to_string_lossy().into_owned());
                    let target = target.unwrap_or_default();
                    let base = if target.starts_with('/') {
                        ""
                    } else {
                        walked.as_str()
                    };
                    let rest = comps.get(i + 1..).unwrap_or_default().join("/");
                    next = Some(normalize(&format!("{base}/{target}/{rest}")));
                    break;
                }
                walked.push('/');
                walked.push_str(comp);
            }
            match next {
                Some(p) => path = p,
                None => return Ok(cur),
            }
        }
        Err(Error::Loop {
            path: path.clone(),
            sector: 0,
        })
    }

    /// Reads file bytes at `offset` into `buf`, across multi-extent parts. Returns fewer bytes
    /// than asked only at the end of the file; 0 at or after it.
    pub fn read_at(&self, file: &Entry, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if file.kind == Kind::Dir {
            return Err(Error::IsADirectory {
                path: file.name_lossy(),
            });
        }
        if file.interleaved {
            return Err(Error::Interleaved {
                path: file.name_lossy(),
            });
        }
        match file.zisofs {
            Some(z) => super::zisofs::read_at(
                z,
                file.size,
                &file.name_lossy(),
                |at, b| self.read_stored(file, at, b),
                offset,
                buf,
            ),
            None => self.read_stored(file, offset, buf),
        }
    }

    /// Reads the bytes stored for `file` at `offset` (compressed ones as they are).
    fn read_stored(&self, file: &Entry, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0usize;
        let mut logical = 0u64;
        for ext in file.extents.as_slice() {
            if done == buf.len() {
                break;
            }
            let pos = offset + done as u64;
            if pos < logical + ext.len {
                let within = pos - logical;
                let n = ((ext.len - within) as usize).min(buf.len() - done);
                let Some(dst) = buf.get_mut(done..done + n) else {
                    break;
                };
                if ext.start == HOLE {
                    dst.fill(0);
                    done += n;
                    logical += ext.len;
                    continue;
                }
                let at = ext.start + within;
                let got = read_full(&self.src, dst, at).map_err(|source| Error::Io {
                    offset: at,
                    len: n,
                    source,
                })?;
                if got < n {
                    return Err(Error::Truncated {
                        what: "file data",
                        offset: at,
                        need: n as u64,
                        size: at + got as u64,
                    });
                }
                done += n;
            }
            logical += ext.len;
        }
        Ok(done)
    }

    /// Visits `start` and everything below it, depth first, in image order, with each entry's
    /// absolute path. A directory met twice (a loop, or an extent shared by two directories)
    /// is an error, so the walk always ends.
    pub fn walk(
        &self,
        start: &Entry,
        start_path: &str,
        mut visit: impl FnMut(&str, &Entry) -> Result<()>,
    ) -> Result<()> {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut stack: Vec<(String, Entry, usize)> =
            vec![(start_path.to_owned(), start.clone(), 0)];
        let mut first = true;
        while let Some((path, entry, depth)) = stack.pop() {
            if !first {
                visit(&path, &entry)?;
            }
            first = false;
            if entry.kind != Kind::Dir {
                continue;
            }
            if depth >= MAX_DIR_DEPTH {
                return Err(Error::Limit {
                    what: "directory depth",
                    value: depth as u64,
                    limit: MAX_DIR_DEPTH as u64,
                });
            }
            if let Some(at) = entry.dir_key() {
                if entry.size > 0 && !seen.insert(at) {
                    return Err(Error::Loop {
                        path,
                        sector: at / SECTOR_SIZE,
                    });
                }
            }
            let children = self.read_dir(&entry)?;
            for child in children.into_iter().rev() {
                let p = join_path(&path, &child.name.to_string_lossy());
                stack.push((p, child, depth + 1));
            }
        }
        Ok(())
    }
}

/// Most bytes of directory listings one lookup keeps (about 50,000 entries with short names).
const MAX_LISTINGS_BYTES: usize = 16 << 20;

/// The directory listings one lookup has read, by what identifies a listing (the extent, and
/// whether it is the root's), up to [`MAX_LISTINGS_BYTES`]; listings past that are not kept.
#[derive(Default)]
struct Listings {
    map: HashMap<(Option<Extent>, bool), Vec<Entry>>,
    bytes: usize,
}

impl Listings {
    fn keep(&mut self, key: (Option<Extent>, bool), entries: Vec<Entry>) {
        let bytes: usize = entries
            .iter()
            .map(|e| {
                std::mem::size_of::<Entry>()
                    + e.name.len()
                    + e.target.as_ref().map_or(0, |t| t.len())
                    + e.extents.len() * std::mem::size_of::<Extent>()
            })
            .sum();
        if self.bytes + bytes <= MAX_LISTINGS_BYTES {
            self.bytes += bytes;
            self.map.insert(key, entries);
        }
    }
}

/// Builds an entry from a record and its Rock Ridge fields.
fn make_entry(rec: &Record<'_>, name: OsString, rr: Option<&RockRidge>, id: u64) -> Entry {
    let is_dir = rec.flags & file_flags::DIRECTORY != 0;
    let rr_type = rr.and_then(|r| r.mode).map(|m| m & mode::S_IFMT);
    let kind = if is_dir {
        Kind::Dir
    } else if rr_type == Some(mode::S_IFLNK) || rr.is_some_and(|r| r.target.is_some()) {
        Kind::Symlink
    } else {
        match rr_type {
            Some(mode::S_IFCHR | mode::S_IFBLK | mode::S_IFIFO | mode::S_IFSOCK) => Kind::Other,
            _ => Kind::File,
        }
    };
    let recorded = rec.recorded.and_then(decode_dir_time).unwrap_or_default();
    let mtime = rr.and_then(|r| r.mtime).unwrap_or(recorded);
    let perm = rr.and_then(|r| r.mode).map(|m| m & 0o7777);
    let default_perm = match kind {
        Kind::Dir => 0o555,
        Kind::Symlink => 0o777,
        _ => 0o444,
    };
    let ext = file_extent(rec);
    let target = match kind {
        Kind::Symlink => rr.and_then(|r| r.target.clone()).map(OsString::from_vec),
        _ => None,
    };
    let zisofs = rr.and_then(|r| r.zisofs).filter(|_| kind == Kind::File);
    Entry {
        name,
        kind,
        size: match (kind, zisofs) {
            (Kind::Symlink, _) => target.as_ref().map_or(0, |t| t.len() as u64),
            (Kind::Other, _) => 0,
            (_, Some(z)) => z.size.min(z.params.max_size(ext.len)),
            _ => ext.len,
        },
        mode: perm.unwrap_or(default_perm),
        uid: rr.and_then(|r| r.uid).unwrap_or(0),
        gid: rr.and_then(|r| r.gid).unwrap_or(0),
        nlink: rr
            .and_then(|r| r.nlink)
            .unwrap_or(if kind == Kind::Dir { 2 } else { 1 }),
        mtime,
        atime: rr.and_then(|r| r.atime).unwrap_or(mtime),
        ctime: rr.and_then(|r| r.ctime).unwrap_or(mtime),
        target,
        id,
        extents: match kind {
            Kind::File | Kind::Dir => Extents::One(ext),
            _ => Extents::None,
        },
        interleaved: rec.file_unit_size != 0,
        zisofs: zisofs.map(|z| z.params),
    }
}

fn file_extent(rec: &Record<'_>) -> Extent {
    Extent {
        start: (u64::from(rec.extent) + u64::from(rec.ext_attr_len)) * SECTOR_SIZE,
        len: u64::from(rec.data_len),
    }
}

/// ISO9660 identifier as shown: the ";1" version and one trailing dot removed.
fn strip_version_bytes(id: &[u8]) -> Vec<u8> {
    let base = match id.iter().rposition(|&b| b == b';') {
        Some(i) => id.get(..i).unwrap_or(id),
        None => id,
    };
    base.strip_suffix(b".").unwrap_or(base).to_vec()
}

/// Joliet name as shown: the ";1" version and trailing dots removed.
fn strip_version(s: &str) -> String {
    let base = match s.rfind(';') {
        Some(i)
            if s.get(i + 1..)
                .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit())) =>
        {
            s.get(..i).unwrap_or(s)
        }
        _ => s,
    };
    base.trim_end_matches('.').to_owned()
}

/// Joins an absolute directory path and a name.
pub fn join_path(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Resolves "." and ".." lexically; ".." at the root stays at the root.
fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// An image in memory that counts the reads made of it.
    struct Counting {
        data: Vec<u8>,
        reads: std::sync::atomic::AtomicUsize,
        bytes: std::sync::atomic::AtomicUsize,
    }

    impl ReadAt for Counting {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            let at = (offset as usize).min(self.data.len());
            let n = buf.len().min(self.data.len() - at);
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.bytes
                .fetch_add(buf.len(), std::sync::atomic::Ordering::Relaxed);
            Ok(n)
        }

        fn size(&self) -> std::io::Result<u64> {
            Ok(self.data.len() as u64)
        }
    }

    /// Identifying reads one run of sectors 16-18 and the start of 19, then the root's first
    /// record where that is elsewhere; more only for a longer descriptor set.
    #[test]
    fn identifying_an_image_reads_little() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        // (image, reads, bytes at most, Rock Ridge)
        let cases = [
            // xorriso: the root directory right after the terminator, in the first read.
            ("xorriso-rr-joliet.iso", 1, 6400, true),
            // genisoimage: the root after the path tables.
            ("rr-joliet.iso", 2, 6400 + 256, true),
            // A boot record makes four descriptors: the sector after the terminator is read
            // too (a sector and the next header), and the boot catalog.
            ("eltorito.iso", 4, 6400 + 2054 + 256 + 2048, true),
        ];
        for (name, reads, bytes, rr) in cases {
            let img = Counting {
                data: std::fs::read(fixtures.join(name)).unwrap(),
                reads: Default::default(),
                bytes: Default::default(),
            };
            let info = probe(&img).unwrap();
            assert_eq!(info.rock_ridge, rr, "{name}");
            let (got_reads, got_bytes) = (img.reads.into_inner(), img.bytes.into_inner());
            assert_eq!(got_reads, reads, "{name}: reads");
            assert!(got_bytes <= bytes, "{name}: {got_bytes} bytes read");
        }
    }

    #[test]
    fn iso_names_lose_version_and_one_trailing_dot() {
        assert_eq!(strip_version_bytes(b"README.TXT;1"), b"README.TXT");
        assert_eq!(strip_version_bytes(b"MAKEFILE.;1"), b"MAKEFILE");
        assert_eq!(strip_version_bytes(b"DIR"), b"DIR");
        assert_eq!(strip_version("long name.txt;1"), "long name.txt");
        assert_eq!(strip_version("a;b"), "a;b");
    }

    #[test]
    fn normalize_never_climbs_above_root() {
        assert_eq!(normalize("/a/../../etc/./x"), "/etc/x");
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn record_below_minimum_length_names_the_cause() {
        let err = parse_record(&[3, 0, 0]).unwrap_err();
        assert_eq!(err, "length 3 is below 34");
    }
}
