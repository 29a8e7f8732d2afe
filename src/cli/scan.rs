//! `isomgr scan [--json] PATH...`: identify images in files and directories (recursively)
//! without mounting them. Reads only the few sectors identification needs, in parallel.
//!
//! The walk reads each directory once (getdents64) into one buffer of names, sorts them, and
//! hands out runs of files relative to the directory's descriptor: no path per file. Workers
//! (the main thread joins them once the walk is done) open, probe and, for `--json` to a
//! program, format each record whole, named after its base name; the main thread then checks
//! the names in walk order, copies each chunk's records as they are, and rewrites only a name
//! taken before.

use std::collections::{HashSet, VecDeque};
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{IsTerminal, Write};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::iso9660::{probe, Error as IsoError, VolumeInfo};
use crate::names;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON array of {path, label, name, size, volume_size, fs, extensions, bootable,
    /// complete}.
    #[arg(long)]
    pub json: bool,
    /// Image files, block devices, or directories to search recursively.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// One identified image, as `scan --json` prints it.
#[derive(Debug, Serialize)]
pub struct ScanRecord {
    pub path: String,
    pub label: Option<String>,
    pub name: String,
    pub size: u64,
    pub volume_size: u64,
    pub fs: &'static str,
    pub extensions: Vec<&'static str>,
    pub bootable: bool,
    pub complete: bool,
}

/// Bytes of table or indented JSON output written at a time.
const OUT_CHUNK: usize = 256 * 1024;

/// Compact JSON longer than this goes to the output without being copied first.
const DIRECT_WRITE: usize = 8 * 1024;

/// Files examined between progress updates are counted here.
const PROGRESS_MIN: usize = 2000;

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    // Compact JSON for a program is assembled from the workers' fragments; a person at a
    // terminal (indented JSON) and the table take the records.
    let fragments = args.json && !std::io::stdout().is_terminal();
    let mut failures = 0usize;
    let mut done = scan_all(&args.paths, fragments, &mut failures);
    done.sort_unstable_by_key(|d| d.start);
    let mut records = Vec::new();
    // Compact JSON: each chunk's run of records goes from the worker's buffer straight to the
    // output (a write larger than this buffer bypasses it); the brackets, a renamed name and
    // short runs collect here. The table and indented JSON are written a row at a time
    // (standard output is line-buffered: a write per row otherwise).
    let capacity = if fragments { DIRECT_WRITE } else { OUT_CHUNK };
    let mut doc = std::io::BufWriter::with_capacity(capacity, &mut *out);
    if fragments {
        doc.write_all(b"[")?;
    }
    let mut images = 0usize;
    let mut skipped = 0usize;
    let mut namer = Namer::default();
    namer
        .bases
        .reserve(done.iter().map(|d| d.items.len()).sum());
    for d in &done {
        // The chunk's records lie one after another in its buffer: whatever of them is not
        // yet in `doc`, from here to the end of the last.
        let mut copy_from: Option<usize> = None;
        for (k, item) in d.items.iter().enumerate() {
            match item {
                Item::Json { start, value } => {
                    let base = d
                        .buf
                        .get(value.start + 1..value.end - 1)
                        .unwrap_or_default();
                    let base = std::str::from_utf8(base).unwrap_or_default();
                    // The first record goes out without the comma before it.
                    let from = copy_from.get_or_insert(start + usize::from(images == 0));
                    // Usually free: then the record goes out as the worker wrote it.
                    if let Some(name) = namer.take(base) {
                        doc.write_all(d.buf.get(*from..value.start).unwrap_or_default())?;
                        let mut quoted = Vec::with_capacity(name.len() + 2);
                        json_str(&mut quoted, &name);
                        doc.write_all(&quoted)?;
                        *from = value.end;
                    }
                    images += 1;
                }
                Item::Info(info) => {
                    let path = d.chunk.path(k);
                    let base = names::base_name(info.label.as_deref(), &stem(&path));
                    let name = namer.take_owned(&base);
                    records.push(record(&path, info.clone(), name));
                    images += 1;
                }
                Item::Failed(ProbeError::NotAnImage) if !d.chunk.explicit() => skipped += 1,
                Item::Failed(e) => {
                    eprintln!("isomgr: {}: {e:#}", d.chunk.path(k).display());
                    failures += 1;
                }
            }
        }
        if let Some(from) = copy_from {
            doc.write_all(d.buf.get(from..).unwrap_or_default())?;
        }
    }
    if fragments {
        doc.write_all(b"]\n")?;
    } else if args.json {
        super::write_json(&mut doc, &records)?;
    } else {
        print_table(&records, &mut doc)?;
    }
    doc.flush()?;
    drop(doc);
    out.flush()?;
    if std::io::stderr().is_terminal() || !args.json {
        eprintln!(
            "{} image{}, {skipped} other file{} skipped",
            images,
            if images == 1 { "" } else { "s" },
            if skipped == 1 { "" } else { "s" }
        );
    }
    if failures > 0 {
        anyhow::bail!(
            "{failures} path{} could not be scanned",
            if failures == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// The names a scan gives, in walk order: a base name while it is free, else the first free
/// `base-N`, each base's search resuming where its last one ended ([`names::Suffixes`]).
#[derive(Default)]
struct Namer<'a> {
    /// Base names given as they are, borrowed from the workers' buffers.
    bases: HashSet<&'a str, FxBuild>,
    /// The other names given (suffixed, or base names owned by nobody else).
    owned: HashSet<Box<str>, FxBuild>,
    /// Where the search for a free `base-N` starts (a scan frees no name).
    next: names::Suffixes,
    /// Names looked up, for the tests to count.
    lookups: std::cell::Cell<u64>,
}

impl<'a> Namer<'a> {
    fn taken(&self, name: &str) -> bool {
        self.lookups.set(self.lookups.get() + 1);
        self.bases.contains(name) || self.owned.contains(name)
    }

    /// Takes `base` and returns `None` if it is free (one lookup), else the name given.
    fn take(&mut self, base: &'a str) -> Option<String> {
        self.lookups.set(self.lookups.get() + 1);
        if !self.owned.contains(base) && self.bases.insert(base) {
            return None;
        }
        Some(self.suffixed(base))
    }

    /// [`Namer::take`] for a base name held nowhere else; returns the name given.
    fn take_owned(&mut self, base: &str) -> String {
        if !self.taken(base) {
            self.owned.insert(base.into());
            return base.to_owned();
        }
        self.suffixed(base)
    }

    /// The first free `base-N`, taken (`base` itself is taken).
    fn suffixed(&mut self, base: &str) -> String {
        let mut next = std::mem::take(&mut self.next);
        let name = next.first_free(base, |c| self.taken(c));
        self.next = next;
        self.owned.insert(name.as_str().into());
        name
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn record(path: &Path, info: VolumeInfo, name: String) -> ScanRecord {
    ScanRecord {
        path: path.display().to_string(),
        name,
        size: info.image_size,
        volume_size: info.volume_size,
        fs: info.fs.as_str(),
        extensions: info.extensions(),
        bootable: info.bootable,
        complete: info.complete(),
        label: info.label,
    }
}

/// FxHash (rustc's), finalised: names are short and not chosen by an attacker who could profit from
/// collisions, so SipHash's cost buys nothing here.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        if let Some(dst) = w.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    /// The words are mixed into the high bits only; the table indexes by the low ones, so
    /// fold (MurmurHash3's finaliser) to spread them.
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type FxBuild = BuildHasherDefault<Fx>;

/// A directory being scanned: its regular files (and symlinks to them), sorted by name.
struct Dir {
    /// Device and inode of the directory the walk read: a thread that probes its files opens
    /// it again by its path and checks it is this one.
    dev_ino: Option<(u64, u64)>,
    /// Unique per directory in a scan (an address could be reused once one is dropped).
    id: usize,
    /// The directory's path as given or joined, then a separator unless it ends in one: the
    /// prefix of each file's path.
    prefix: Vec<u8>,
    /// The names, each NUL-terminated.
    names: Vec<u8>,
    /// Start and length (without the NUL) of each file's name in `names`, in name order.
    files: Vec<(u32, u32)>,
}

impl Dir {
    fn name(&self, k: usize) -> &[u8] {
        let Some(&(start, len)) = self.files.get(k) else {
            return &[];
        };
        let (start, len) = (start as usize, len as usize);
        self.names.get(start..start + len).unwrap_or_default()
    }

    fn cname(&self, k: usize) -> Option<&CStr> {
        let &(start, len) = self.files.get(k)?;
        let (start, len) = (start as usize, len as usize);
        CStr::from_bytes_with_nul(self.names.get(start..=start + len)?).ok()
    }
}

/// Files handed to a worker at a time.
const BATCH: usize = 64;

/// A run of files for one worker: `range` of a directory's files, or files named on the
/// command line (then "not an image" is an error rather than a skip).
enum Chunk {
    Dir { dir: Arc<Dir>, range: Range<usize> },
    Explicit(Vec<PathBuf>),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Dir { range, .. } => range.len(),
            Chunk::Explicit(paths) => paths.len(),
        }
    }

    fn explicit(&self) -> bool {
        matches!(self, Chunk::Explicit(_))
    }

    /// The path of the chunk's `k`th file.
    fn path(&self, k: usize) -> PathBuf {
        match self {
            Chunk::Dir { dir, range } => {
                let mut p = dir.prefix.clone();
                p.extend_from_slice(dir.name(range.start + k));
                PathBuf::from(OsStr::from_bytes(&p))
            }
            Chunk::Explicit(paths) => paths.get(k).cloned().unwrap_or_default(),
        }
    }
}

/// What became of one file.
enum Item {
    /// The record as compact JSON, a comma before it, from `buf[start]` on, with the name
    /// before collisions as its value at `buf[value]`, quotes included. Names hold only
    /// `[A-Za-z0-9._+-]` (see [`names`]): nothing in them is escaped.
    Json {
        start: usize,
        value: Range<usize>,
    },
    Info(VolumeInfo),
    Failed(ProbeError),
}

/// A chunk's results; `start` is the walk position of its first file.
struct Done {
    start: usize,
    chunk: Chunk,
    /// The compact JSON records, one after another.
    buf: Vec<u8>,
    items: Vec<Item>,
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("not an ISO9660 or UDF image")]
    NotAnImage,
    #[error("opening: {0}")]
    Open(std::io::Error),
    #[error(transparent)]
    Image(IsoError),
}

const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// A file being probed, read and closed with plain system calls: the C library's wrappers for
/// openat, pread and close are cancellation points, whose bookkeeping costs as much as the
/// rest of their user-space work, and nothing here is ever cancelled.
struct RawFile(libc::c_int);

impl Drop for RawFile {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns, once.
        unsafe { libc::syscall(libc::SYS_close, self.0) };
    }
}

/// A system call's result as `io::Result`.
fn sys_result(rc: libc::c_long) -> std::io::Result<libc::c_long> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl crate::iso9660::ReadAt for RawFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let offset = libc::off64_t::try_from(offset)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // 64-bit targets pass the offset in one register; elsewhere the C library splits it.
        // SAFETY: pread64 writes at most buf.len() bytes into buf.
        #[cfg(target_pointer_width = "64")]
        let n = unsafe {
            libc::syscall(
                libc::SYS_pread64,
                self.0,
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
                offset,
            )
        };
        // SAFETY: as above.
        #[cfg(not(target_pointer_width = "64"))]
        let n = unsafe {
            libc::pread64(
                self.0,
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
                offset,
            ) as libc::c_long
        };
        Ok(sys_result(n)? as usize)
    }

    /// The end offset: the file length, or a block device's capacity.
    fn size(&self) -> std::io::Result<u64> {
        // SAFETY: lseek64 on a descriptor this value owns; it does not touch memory.
        let end = unsafe { libc::lseek64(self.0, 0, libc::SEEK_END) };
        if end < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(end as u64)
    }
}

impl RawFile {
    /// Shorter than the system area plus one descriptor: cannot be an image.
    fn is_short(&self) -> bool {
        stat_at(self.0, c"", libc::AT_EMPTY_PATH)
            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size < 17 * 2048)
    }
}

/// Opens `name` relative to `dir` (or a path when `dir` is `AT_FDCWD`) for probing.
fn open_at(dir: libc::c_int, name: &CStr) -> std::io::Result<RawFile> {
    // O_NOATIME keeps scanning from touching the images' metadata where permitted.
    for flags in [OPEN_FLAGS | libc::O_NOATIME, OPEN_FLAGS] {
        // SAFETY: openat with a directory descriptor (or AT_FDCWD) and a NUL-terminated name.
        let rc = unsafe { libc::syscall(libc::SYS_openat, dir, name.as_ptr(), flags) };
        match sys_result(rc) {
            Ok(fd) => {
                let fd = libc::c_int::try_from(fd)
                    .map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
                return Ok(RawFile(fd));
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EPERM))
}

fn probe_file(file: std::io::Result<RawFile>) -> Result<VolumeInfo, ProbeError> {
    let file = file.map_err(ProbeError::Open)?;
    match probe(&file) {
        Ok(info) => Ok(info),
        Err(IsoError::NotAnImage | IsoError::Truncated { .. }) if file.is_short() => {
            Err(ProbeError::NotAnImage)
        }
        Err(IsoError::NotAnImage) => Err(ProbeError::NotAnImage),
        Err(e) => Err(ProbeError::Image(e)),
    }
}

/// Writes a JSON string as serde_json does.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    // Nothing to escape (the usual path or label): the bytes between quotes. Folded without
    // stopping early, so that the compiler checks many bytes at a time.
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
        return;
    }
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Appends `n` in decimal, as serde_json writes it.
fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.extend_from_slice(digits.get(at..).unwrap_or_default());
}

/// What [`Path::file_stem`] gives for a file name (no '/'; not "." or ".."): the name up to its
/// last '.', unless that is its first byte.
fn file_stem(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'.') {
        Some(0) | None => name,
        Some(i) => name.get(..i).unwrap_or(name),
    }
}

/// Appends a comma and the record's compact JSON to `buf`, named after its base name.
fn fragment(buf: &mut Vec<u8>, path: &[u8], file_name: &[u8], info: &VolumeInfo) -> Item {
    let start = buf.len();
    buf.extend_from_slice(b",{\"path\":");
    match std::str::from_utf8(path) {
        Ok(s) => json_str(buf, s),
        Err(_) => json_str(
            buf,
            &Path::new(OsStr::from_bytes(path)).display().to_string(),
        ),
    }
    buf.extend_from_slice(b",\"label\":");
    match &info.label {
        Some(l) => json_str(buf, l),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"name\":");
    let stem = String::from_utf8_lossy(file_stem(file_name));
    let name = names::base_name(info.label.as_deref(), &stem);
    let v0 = buf.len();
    json_str(buf, &name);
    let value = v0..buf.len();
    debug_assert_eq!(value.len(), name.len() + 2, "a name JSON escapes: {name:?}");
    buf.extend_from_slice(b",\"size\":");
    push_u64(buf, info.image_size);
    buf.extend_from_slice(b",\"volume_size\":");
    push_u64(buf, info.volume_size);
    buf.extend_from_slice(b",\"fs\":");
    json_str(buf, info.fs.as_str());
    buf.extend_from_slice(b",\"extensions\":[");
    for (k, e) in info.extension_names().enumerate() {
        if k > 0 {
            buf.push(b',');
        }
        json_str(buf, e);
    }
    buf.extend_from_slice(b"],\"bootable\":");
    buf.extend_from_slice(if info.bootable { b"true" } else { b"false" });
    buf.extend_from_slice(b",\"complete\":");
    buf.extend_from_slice(if info.complete() { b"true" } else { b"false" });
    buf.push(b'}');
    Item::Json { start, value }
}

/// A prober's descriptor for the directory whose files it opens.
///
/// The walk closes each directory as soon as it has read the entries, so a scan holds one
/// directory descriptor per thread however large the tree. A thread that probes opens the
/// directory again by its path (O_PATH), once per run of its files, and checks that it is the
/// one the walk read (device and inode); a directory replaced in between fails its files with
/// a clear error. The descriptor is the thread's own: worker threads have descriptor tables
/// of their own (see [`own_fd_table`]), and a descriptor closed from another table would
/// close whatever has that number there.
struct Fds {
    /// The last directory opened again: its id and descriptor (chunks of one directory come
    /// one after another).
    current: Option<(usize, std::io::Result<OwnedFd>)>,
}

impl Fds {
    fn new() -> Fds {
        Fds { current: None }
    }

    /// The descriptor to open `dir`'s files relative to, or why there is none.
    fn dir_fd(&mut self, dir: &Dir) -> Result<libc::c_int, &std::io::Error> {
        if self.current.as_ref().map(|c| c.0) != Some(dir.id) {
            self.current = None;
        }
        let (_, fd) = self
            .current
            .get_or_insert_with(|| (dir.id, reopen_same_dir(dir)));
        fd.as_ref().map(AsRawFd::as_raw_fd)
    }
}

/// Gives the calling worker thread a copy of the descriptor table to itself; false where the
/// kernel refuses (the thread then keeps sharing it).
///
/// With a table shared by several threads, every read, seek and close takes and drops a
/// reference on the file and every open and close takes the table's lock, which the threads
/// then fight over. Private tables made the same calls a quarter faster here (10,000 images,
/// 2 threads).
fn own_fd_table() -> bool {
    own_credentials();
    // SAFETY: unshare takes flags only; it changes nothing but this thread's table.
    unsafe { libc::unshare(libc::CLONE_FILES) == 0 }
}

/// Gives the calling thread a copy of its credentials, equal to the one it shares.
///
/// Every open takes a reference on the opener's credentials and every last close drops it:
/// threads sharing one credentials structure bounce its counter between their processors on
/// each file. Setting the keep-capabilities flag to the value it has makes the kernel commit a
/// fresh, equal copy for the calling thread alone (credentials belong to each thread, and
/// prctl changes only the caller's). Nothing changes if the kernel refuses.
fn own_credentials() {
    // SAFETY: PR_GET_KEEPCAPS and PR_SET_KEEPCAPS take integers and touch no memory.
    unsafe {
        let keep = libc::prctl(libc::PR_GET_KEEPCAPS, 0, 0, 0, 0);
        if keep >= 0 {
            libc::prctl(libc::PR_SET_KEEPCAPS, keep, 0, 0, 0);
        }
    }
}

/// Opens `dir` again by its path (O_PATH) and checks that it is the directory the walk read.
fn reopen_same_dir(dir: &Dir) -> std::io::Result<OwnedFd> {
    let fd = open_path(
        &dir.prefix,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )?;
    if dev_ino(&fd) != dir.dev_ino || dir.dev_ino.is_none() {
        return Err(std::io::Error::other(
            "the directory was replaced during the scan",
        ));
    }
    Ok(fd)
}

/// Device and inode of an open file.
fn dev_ino(fd: &OwnedFd) -> Option<(u64, u64)> {
    stat_at(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH).map(|st| (st.st_dev, st.st_ino))
}

/// Probes every file of `chunk`.
fn work(chunk: Chunk, start: usize, fragments: bool, path: &mut Vec<u8>, fds: &mut Fds) -> Done {
    let n = chunk.len();
    let mut buf = Vec::with_capacity(if fragments { n * 256 } else { 0 });
    let mut items = Vec::with_capacity(n);
    let finish =
        |buf: &mut Vec<u8>, r: Result<VolumeInfo, ProbeError>, path: &[u8], name: &[u8]| match r {
            Ok(info) if fragments => fragment(buf, path, name, &info),
            Ok(info) => Item::Info(info),
            Err(e) => Item::Failed(e),
        };
    match &chunk {
        Chunk::Dir { dir, range } => {
            let dir_fd = fds.dir_fd(dir);
            for k in range.clone() {
                let file = match (&dir_fd, dir.cname(k)) {
                    (Ok(fd), Some(name)) => open_at(*fd, name),
                    // Each file gets its own copy of the directory's error.
                    (Err(e), _) => Err(std::io::Error::new(e.kind(), e.to_string())),
                    (_, None) => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
                };
                let r = probe_file(file);
                path.clear();
                if fragments && r.is_ok() {
                    path.extend_from_slice(&dir.prefix);
                    path.extend_from_slice(dir.name(k));
                }
                items.push(finish(&mut buf, r, path, dir.name(k)));
            }
        }
        Chunk::Explicit(paths) => {
            for p in paths {
                let r = match CString::new(p.as_os_str().as_bytes()) {
                    Ok(c) => probe_file(open_at(libc::AT_FDCWD, &c)),
                    Err(_) => Err(ProbeError::Open(std::io::Error::from_raw_os_error(
                        libc::EINVAL,
                    ))),
                };
                let name = p.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                items.push(finish(&mut buf, r, p.as_os_str().as_bytes(), name));
            }
        }
    }
    Done {
        start,
        chunk,
        buf,
        items,
    }
}

/// Chunks waiting for a worker; `closed` once the walk has queued its last.
struct Queue {
    state: Mutex<(VecDeque<(usize, Chunk)>, bool)>,
    ready: Condvar,
}

impl Queue {
    fn push(&self, chunks: impl IntoIterator<Item = (usize, Chunk)>) {
        if let Ok(mut st) = self.state.lock() {
            st.0.extend(chunks);
        }
        self.ready.notify_all();
    }

    fn close(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.1 = true;
        }
        self.ready.notify_all();
    }

    /// The next chunk, waiting for the walk; `None` once all are taken.
    fn pop(&self) -> Option<(usize, Chunk)> {
        let mut st = self.state.lock().ok()?;
        loop {
            if let Some(c) = st.0.pop_front() {
                return Some(c);
            }
            if st.1 {
                return None;
            }
            st = self.ready.wait(st).ok()?;
        }
    }
}

/// A directory's entries as [`read_entries`] returns them.
struct Entries {
    names: Vec<u8>,
    files: Vec<(u32, u32)>,
    dirs: Vec<Vec<u8>>,
}

/// Reads the directory `fd`'s entries; returns its regular files (and symlinks to them) as
/// NUL-terminated names with (start, length) spans, and its subdirectories' names, both
/// sorted by name. Symlinks to directories are not followed, so the walk always ends.
fn read_entries(fd: libc::c_int) -> Entries {
    let mut names = Vec::new();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut raw = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: getdents64 writes at most raw.len() bytes into raw.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd,
                raw.as_mut_ptr().cast::<libc::c_void>(),
                raw.len(),
            )
        };
        if n <= 0 {
            // End of directory, or an error: like read_dir's entries, errors are skipped.
            break;
        }
        let filled = raw.get(..n as usize).unwrap_or_default();
        let mut off = 0usize;
        // struct linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
        while let Some(ent) = filled.get(off..) {
            let Some(&[r0, r1]) = ent.get(16..18) else {
                break;
            };
            let reclen = usize::from(u16::from_ne_bytes([r0, r1]));
            if reclen == 0 {
                break;
            }
            off += reclen;
            let d_type = ent.get(18).copied().unwrap_or(libc::DT_UNKNOWN);
            let Some(cname) = ent
                .get(19..reclen)
                .and_then(|b| CStr::from_bytes_until_nul(b).ok())
            else {
                continue;
            };
            let name = cname.to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let (is_dir, is_file) = match d_type {
                libc::DT_REG => (false, true),
                libc::DT_DIR => (true, false),
                libc::DT_LNK => (false, stat_is_file(fd, cname, 0)),
                libc::DT_UNKNOWN => match fstatat_mode(fd, cname, libc::AT_SYMLINK_NOFOLLOW) {
                    Some(libc::S_IFDIR) => (true, false),
                    Some(libc::S_IFREG) => (false, true),
                    Some(libc::S_IFLNK) => (false, stat_is_file(fd, cname, 0)),
                    _ => (false, false),
                },
                _ => (false, false),
            };
            if is_dir {
                dirs.push(name.to_vec());
            } else if is_file {
                let (Ok(start), Ok(len)) = (u32::try_from(names.len()), u32::try_from(name.len()))
                else {
                    continue;
                };
                names.extend_from_slice(cname.to_bytes_with_nul());
                files.push((start, len));
            }
        }
    }
    let name_of =
        |&(s, l): &(u32, u32)| names.get(s as usize..(s + l) as usize).unwrap_or_default();
    files.sort_unstable_by(|a, b| name_of(a).cmp(name_of(b)));
    dirs.sort_unstable();
    Entries { names, files, dirs }
}

/// What fstatat with `flags` reports for `name` in `dir` (`""` with AT_EMPTY_PATH: `dir`
/// itself).
fn stat_at(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> Option<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstatat fills st on success; the name is NUL-terminated.
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), st.as_mut_ptr(), flags) };
    // SAFETY: rc == 0 means st was written.
    (rc == 0).then(|| unsafe { st.assume_init() })
}

/// The file type bits of `name` in `dir`, as fstatat with `flags` reports them.
fn fstatat_mode(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> Option<libc::mode_t> {
    stat_at(dir, name, flags).map(|st| st.st_mode & libc::S_IFMT)
}

fn stat_is_file(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> bool {
    fstatat_mode(dir, name, flags) == Some(libc::S_IFREG)
}

/// Opens a directory for reading its entries.
fn open_dir(path: &[u8]) -> std::io::Result<OwnedFd> {
    open_path(
        path,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NONBLOCK,
    )
}

/// Opens `path` with `flags`.
fn open_path(path: &[u8], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Walks `paths` and identifies every file found, on all cores: workers start on the first
/// directory while the walk goes on, and the walking thread joins them at its end. Results
/// per chunk, in any order (`start` gives the walk position).
fn scan_all(paths: &[PathBuf], fragments: bool, failures: &mut usize) -> Vec<Done> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let queue = Queue {
        state: Mutex::new((VecDeque::new(), false)),
        ready: Condvar::new(),
    };
    let done = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    let walking = AtomicBool::new(true);
    let show_progress = std::io::stderr().is_terminal();
    let mut results: Vec<Done> = Vec::new();
    std::thread::scope(|s| {
        let worker = |mut fds: Fds| {
            let mut local = Vec::new();
            let mut path = Vec::new();
            while let Some((start, chunk)) = queue.pop() {
                let n = chunk.len();
                local.push(work(chunk, start, fragments, &mut path, &mut fds));
                done.fetch_add(n, Ordering::Relaxed);
            }
            local
        };
        let workers: Vec<_> = (1..threads)
            .map(|_| {
                s.spawn(move || {
                    own_fd_table();
                    worker(Fds::new())
                })
            })
            .collect();
        if show_progress {
            s.spawn(|| {
                // It only writes to stderr: the walk keeps its table to itself.
                own_fd_table();
                loop {
                    let (n, t) = (done.load(Ordering::Relaxed), total.load(Ordering::Relaxed));
                    let still = walking.load(Ordering::Relaxed);
                    if !still && n >= t {
                        eprint!("\r\x1b[K");
                        break;
                    }
                    if t >= PROGRESS_MIN {
                        eprint!("\rscanning {n}/{t}{}", if still { "+" } else { "" });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        let mut next = 0usize;
        let walk = |root: &Path, next: &mut usize, failures: &mut usize| {
            let mut stack = vec![root.as_os_str().as_bytes().to_vec()];
            while let Some(d) = stack.pop() {
                let fd = match open_dir(&d) {
                    Ok(fd) => fd,
                    Err(e) => {
                        eprintln!(
                            "isomgr: {}: {e}",
                            Path::new(OsStr::from_bytes(&d)).display()
                        );
                        *failures += 1;
                        continue;
                    }
                };
                let Entries { names, files, dirs } = read_entries(fd.as_raw_fd());
                let mut prefix = d;
                if prefix.last() != Some(&b'/') {
                    prefix.push(b'/');
                }
                for sub in dirs.into_iter().rev() {
                    let mut p = prefix.clone();
                    p.extend_from_slice(&sub);
                    stack.push(p);
                }
                if files.is_empty() {
                    continue;
                }
                // Closed here: the threads that probe open it again (see Fds).
                let dev_ino = dev_ino(&fd);
                drop(fd);
                let n = files.len();
                let dir = Arc::new(Dir {
                    dev_ino,
                    id: *next,
                    prefix,
                    names,
                    files,
                });
                let chunks: Vec<_> = (0..n)
                    .step_by(BATCH)
                    .map(|a| {
                        let range = a..(a + BATCH).min(n);
                        (
                            *next + a,
                            Chunk::Dir {
                                dir: Arc::clone(&dir),
                                range,
                            },
                        )
                    })
                    .collect();
                drop(dir);
                *next += n;
                total.fetch_add(n, Ordering::Relaxed);
                queue.push(chunks);
            }
        };
        // Files named on the command line go out BATCH at a time, in order with the
        // directories between them.
        let mut files: Vec<PathBuf> = Vec::new();
        let queue_files = |files: &mut Vec<PathBuf>, next: &mut usize| {
            if !files.is_empty() {
                let n = files.len();
                total.fetch_add(n, Ordering::Relaxed);
                queue.push([(*next, Chunk::Explicit(std::mem::take(files)))]);
                *next += n;
            }
        };
        for p in paths {
            match fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    queue_files(&mut files, &mut next);
                    walk(p, &mut next, failures);
                }
                Ok(_) => {
                    files.push(p.clone());
                    if files.len() == BATCH {
                        queue_files(&mut files, &mut next);
                    }
                }
                Err(e) => {
                    eprintln!("isomgr: {}: {e}", p.display());
                    *failures += 1;
                }
            }
        }
        queue_files(&mut files, &mut next);
        queue.close();
        walking.store(false, Ordering::Relaxed);
        results = worker(Fds::new());
        for w in workers {
            if let Ok(local) = w.join() {
                results.extend(local);
            }
        }
    });
    results
}

/// The table `scan` prints without `--json`: a line per image, each column as wide as its
/// widest value, PATH last.
fn print_table(records: &[ScanRecord], out: &mut impl Write) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let extensions: Vec<String> = records
        .iter()
        .map(|r| {
            let mut ext = r.extensions.clone();
            if r.bootable {
                ext.push("bootable");
            }
            ext.join(",")
        })
        .collect();
    let width = |header: &str, values: &mut dyn Iterator<Item = usize>| {
        values.max().unwrap_or(0).max(header.len())
    };
    let w_name = width("NAME", &mut records.iter().map(|r| r.name.chars().count()));
    let w_label = width(
        "LABEL",
        &mut records
            .iter()
            .map(|r| r.label.as_deref().map_or(1, |l| l.chars().count())),
    );
    let w_ext = width("EXTENSIONS", &mut extensions.iter().map(String::len));
    writeln!(
        out,
        "{:<w_name$}  {:<w_label$}  {:<7}  {:>13}  {:<8}  {:<w_ext$}  PATH",
        "NAME", "LABEL", "FS", "SIZE", "COMPLETE", "EXTENSIONS"
    )?;
    for (r, ext) in records.iter().zip(&extensions) {
        let label = r.label.as_deref().unwrap_or("-");
        let pad = w_label.saturating_sub(label.chars().count());
        let ext = if ext.is_empty() { "-" } else { ext };
        writeln!(
            out,
            "{:<w_name$}  {label}{:pad$}  {:<7}  {:>13}  {:<8}  {ext:<w_ext$}  {}",
            r.name,
            "",
            r.fs,
            r.size,
            if r.complete { "yes" } else { "no" },
            r.path
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_table_s_columns_line_up_whatever_their_widths() {
        let rec = |name: &str, label: Option<&str>, ext: Vec<&'static str>, bootable| ScanRecord {
            path: format!("/srv/iso-drop/{name}.iso"),
            label: label.map(str::to_string),
            name: name.to_string(),
            size: 2_097_152,
            volume_size: 2_097_152,
            fs: "iso9660",
            extensions: ext,
            bootable,
            complete: true,
        };
        let records = [
            rec("A", Some("A"), vec![], false),
            rec(
                "MT86PLUS_64",
                Some("MT86PLUS_64"),
                vec!["rockridge", "joliet", "eltorito"],
                true,
            ),
            rec("x", None, vec!["udf"], false),
        ];
        let mut out = Vec::new();
        print_table(&records, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let path_at = lines[0].find("PATH").unwrap();
        for (l, r) in lines[1..].iter().zip(&records) {
            assert_eq!(l.find(&r.path), Some(path_at), "{text}");
        }
        assert!(
            lines[2].contains("  rockridge,joliet,eltorito,bootable  "),
            "{text}"
        );
        assert!(lines[1].contains("  yes       -  "), "{text}");
    }

    fn dir_of(path: &Path) -> Dir {
        let mut prefix = path.as_os_str().as_bytes().to_vec();
        prefix.push(b'/');
        let fd = open_dir(path.as_os_str().as_bytes()).unwrap();
        Dir {
            dev_ino: dev_ino(&fd),
            id: 0,
            prefix,
            names: b"a.iso\0".to_vec(),
            files: vec![(0, 5)],
        }
    }

    /// Equal names get -2, -3... in order, skipping names given as they are, and a base that
    /// is itself such a name gets its own suffix.
    #[test]
    fn names_are_given_in_order_around_literal_suffixes() {
        let mut namer = Namer::default();
        let given: Vec<String> = ["X", "X", "X-3", "X", "X-2", "Y"]
            .into_iter()
            .map(|b| namer.take(b).unwrap_or_else(|| b.to_owned()))
            .collect();
        assert_eq!(given, ["X", "X-2", "X-3", "X-4", "X-2-2", "Y"]);
        assert_eq!(namer.take_owned("X"), "X-5");
        assert_eq!(namer.take_owned("Z"), "Z");
        assert_eq!(namer.take_owned("Z"), "Z-2");
    }

    /// Thousands of equal labels (a drop directory of "CDROM"s) are named with a few lookups
    /// each: trying every suffix from -2 again for each made it quadratic (1,500 equal labels
    /// took 0.2 s).
    #[test]
    fn many_equal_names_cost_a_few_lookups_each() {
        let mut namer = Namer::default();
        let n = 5000u64;
        for k in 0..n {
            let name = namer.take("CDROM");
            assert_eq!(name.is_none(), k == 0);
        }
        assert!(namer.taken("CDROM-5000") && !namer.taken("CDROM-5001"));
        assert!(
            namer.lookups.get() <= 3 * n,
            "{} lookups for {n} names",
            namer.lookups.get()
        );
    }

    /// A worker with a descriptor table of its own opens the walk's directory again by its
    /// path; a directory put in its place since the walk read it is refused, not scanned.
    #[test]
    fn a_worker_opens_the_walks_directory_and_refuses_one_put_in_its_place() {
        // A thread of its own: the private table must not be this test thread's.
        std::thread::spawn(|| {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("d");
            fs::create_dir(&path).unwrap();
            fs::write(path.join("a.iso"), b"x").unwrap();
            let dir = dir_of(&path);
            assert!(own_fd_table(), "unshare(CLONE_FILES) was refused");
            let mut fds = Fds::new();
            let fd = fds.dir_fd(&dir).unwrap();
            assert!(open_at(fd, dir.cname(0).unwrap()).is_ok());

            let mut other = dir_of(&path);
            other.id = 1;
            fs::rename(&path, tmp.path().join("moved")).unwrap();
            fs::create_dir(&path).unwrap();
            let err = fds.dir_fd(&other).unwrap_err();
            assert!(err.to_string().contains("replaced"), "{err}");
            // Opened again now, the first one is refused too: its path names another.
            assert!(fds.dir_fd(&dir).is_err());
        })
        .join()
        .unwrap();
    }
}
