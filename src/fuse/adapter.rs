//! The fuser `Filesystem`: turns kernel requests into table queries and positioned reads from the
//! images, and replies.
//!
//! Every callback replies exactly once, never panics on a request's values, clamps offsets and
//! maps errors to errnos. It owns the open-file handles (each holds its medium's image, so a
//! removed medium keeps serving open files until they are closed). It must not mount, unmount or
//! change the set of media: that is the driver's.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::consts::{FOPEN_CACHE_DIR, FOPEN_KEEP_CACHE, FUSE_CACHE_SYMLINKS, FUSE_PARALLEL_DIROPS};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use tracing::{debug, warn};

use super::iso9660::{Entry, Image, Kind, Timestamp};
use super::reopen::Pooled;
use super::table::{Attr, LinkKey, MediumData, NeedIndex, NodeData, Step, Table, ROOT_INO};
use super::workers::{Job, Workers};

/// The image handle the driver serves from.
pub type Medium = Arc<Image<Pooled>>;
pub type SharedTable = Arc<Mutex<Table<Medium, Entry>>>;

/// Media contents never change while a medium is present, and removal invalidates the root entry
/// explicitly, so the kernel may keep entries and attributes long.
const CONTENT_TTL: Duration = Duration::from_secs(3600);
/// The root's own attributes (nlink, mtime) change with every medium.
const ROOT_TTL: Duration = Duration::from_secs(1);
/// Preferred I/O size reported in st_blksize: tools size their buffers from it (cp, cat).
const BLKSIZE: u32 = 1 << 20;
/// ISO9660 logical block size, for statfs.
const SECTOR: u32 = 2048;
/// Cap on one read's buffer. The kernel asks at most max_pages (256 pages, 1 MiB) at a time.
const MAX_READ: usize = 16 << 20;

impl MediumData<Entry> for Medium {
    /// The image's root, nameless: the root directory shows the medium's name, never the top
    /// node's, so the node need not keep "/" (one heap block per browsed medium).
    fn top(&self) -> Entry {
        let mut root = self.root();
        root.name = std::ffi::OsString::new();
        root
    }
}

impl NodeData for Entry {
    fn name(&self) -> &OsStr {
        &self.name
    }
    fn kind(&self) -> Kind {
        self.kind
    }
    fn dir_key(&self) -> Option<u64> {
        Entry::dir_key(self).filter(|_| self.size > 0)
    }
    /// A file the image gives more than one link (Rock Ridge PX, UDF's link count), with data:
    /// its names are one file where they share the data and every attribute shown. Files an
    /// image merely stores once (equal contents, one link each) stay files of their own.
    fn link_key(&self) -> Option<LinkKey> {
        if self.nlink < 2 || self.size == 0 {
            return None;
        }
        let (start, interleaved, zisofs) = self.data_key()?;
        let flags = u64::from(interleaved) | u64::from(zisofs) << 1;
        Some(LinkKey([
            start,
            self.size,
            u64::from(self.mode) << 32 | u64::from(self.uid),
            u64::from(self.gid) << 32 | u64::from(self.nlink),
            self.mtime.secs as u64,
            u64::from(self.mtime.nanos) << 2 | flags,
        ]))
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct OpenFile {
    image: Medium,
    entry: Entry,
}

/// One read request, answered by a worker thread.
struct ReadJob {
    file: Arc<OpenFile>,
    offset: u64,
    size: u32,
    reply: ReplyData,
}

/// Serves one read: a positioned read from the image into `buf`, then the reply.
fn serve_read(job: ReadJob, buf: &mut Vec<u8>) {
    let ReadJob {
        file,
        offset,
        size,
        reply,
    } = job;
    let file_size = if file.entry.kind == Kind::File {
        file.entry.size
    } else {
        0
    };
    let want = file_size.saturating_sub(offset).min(u64::from(size));
    let want = usize::try_from(want).unwrap_or(MAX_READ).min(MAX_READ);
    if want == 0 {
        return reply.data(&[]);
    }
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let Some(dst) = buf.get_mut(..want) else {
        return reply.error(libc::EIO);
    };
    match file.image.read_at(&file.entry, offset, dst) {
        Ok(n) => reply.data(dst.get(..n).unwrap_or(&[])),
        Err(e) => {
            warn!(file = ?file.entry.name, offset, error = %e, "reading from an image failed");
            reply.error(e.errno());
        }
    }
}

/// Which worker queue a medium's I/O goes to.
fn queue_of(image: &Medium) -> usize {
    Arc::as_ptr(image) as usize
}

/// Reads directory `need.dir` from its image and indexes it in the table. The table lock is
/// not held while reading.
fn index(table: &SharedTable, need: NeedIndex<Medium, Entry>) -> Result<(), i32> {
    let entries = need.image.read_dir(&need.entry);
    install(table, &need, entries)
}

/// Indexes directory `need.dir` in the table with `entries`, as read from its image.
fn install(
    table: &SharedTable,
    need: &NeedIndex<Medium, Entry>,
    entries: crate::iso9660::error::Result<Vec<Entry>>,
) -> Result<(), i32> {
    match entries {
        Ok(entries) => {
            let mut table = lock(table);
            let skipped = table.install_children(need.dir, need.medium, entries);
            if skipped > 0 {
                let medium = table
                    .medium_of(need.dir)
                    .and_then(|(_, n)| n.map(str::to_owned));
                warn!(medium = ?medium, dir = ?need.entry.name, skipped, "left out entries with unusable or duplicate names, or directories listed elsewhere");
            }
            Ok(())
        }
        Err(e) => {
            let medium = lock(table)
                .medium_of(need.dir)
                .and_then(|(_, n)| n.map(str::to_owned));
            warn!(medium = ?medium, dir = ?need.entry.name, error = %e, "reading a directory failed");
            Err(e.errno())
        }
    }
}

/// A reply that can be an errno.
trait ErrorReply {
    fn error(self, errno: i32);
}

impl ErrorReply for ReplyEntry {
    fn error(self, errno: i32) {
        ReplyEntry::error(self, errno);
    }
}

impl ErrorReply for ReplyDirectory {
    fn error(self, errno: i32) {
        ReplyDirectory::error(self, errno);
    }
}

/// Answers a lookup from the table; what must be indexed first is given back.
fn answer_lookup(
    table: &SharedTable,
    parent: u64,
    name: &OsStr,
    reply: ReplyEntry,
) -> Option<(NeedIndex<Medium, Entry>, ReplyEntry)> {
    let step = lock(table).lookup(parent, name);
    match step {
        Step::Done(found) => {
            let attr = entry_attr(found.ino, &found.entry);
            reply.entry(&CONTENT_TTL, &attr, found.generation);
        }
        Step::Err(errno) => reply.error(errno),
        Step::NeedIndex(need) => return Some((need, reply)),
    }
    None
}

/// Fills a readdir reply from the table, from `offset` on; what must be indexed first is given
/// back with where to resume.
fn answer_readdir(
    table: &SharedTable,
    ino: u64,
    mut offset: u64,
    mut reply: ReplyDirectory,
) -> Option<(NeedIndex<Medium, Entry>, u64, ReplyDirectory)> {
    loop {
        let step = lock(table).readdir(ino, offset, READDIR_BATCH);
        match step {
            Step::Done(rows) => {
                if rows.is_empty() {
                    reply.ok();
                    return None;
                }
                for row in rows {
                    let cookie = i64::try_from(row.cookie).unwrap_or(i64::MAX);
                    if reply.add(row.ino, cookie, file_type(row.kind), &row.name) {
                        reply.ok();
                        return None;
                    }
                    offset = row.cookie;
                }
            }
            Step::Err(errno) => {
                reply.error(errno);
                return None;
            }
            Step::NeedIndex(need) => return Some((need, offset, reply)),
        }
    }
}

pub struct Adapter {
    table: SharedTable,
    handles: HashMap<u64, Arc<OpenFile>>,
    next_fh: u64,
    /// Where reads and directory listings run, per medium.
    workers: Workers,
    /// For work run here when no worker thread could start.
    buf: Vec<u8>,
    uid: u32,
    gid: u32,
}

impl Adapter {
    pub fn new(table: SharedTable, uid: u32, gid: u32) -> Self {
        Adapter {
            table,
            handles: HashMap::new(),
            next_fh: 1,
            workers: Workers::default(),
            buf: Vec::new(),
            uid,
            gid,
        }
    }

    /// Off the session thread: indexes `need.dir`, then answers `reply` with `then` (or with
    /// the errno if the directory cannot be read).
    fn index_then<R: ErrorReply + Send + 'static>(
        &mut self,
        need: NeedIndex<Medium, Entry>,
        reply: R,
        then: impl FnOnce(&SharedTable, R) + Send + 'static,
    ) {
        // A small directory whose bytes are all in the page cache is read here: no hop to a
        // worker thread and back for the usual case, and no wait either.
        let here = (need.entry.size <= INDEX_HERE_MAX)
            .then(|| super::reopen::from_cache(|| need.image.read_dir(&need.entry)))
            .flatten();
        if let Some(entries) = here {
            match install(&self.table, &need, entries) {
                Ok(()) => then(&self.table, reply),
                Err(errno) => reply.error(errno),
            }
            return;
        }
        let table = self.table.clone();
        let image = need.image.clone();
        self.off_session(
            &image,
            Box::new(move |_| match index(&table, need) {
                Ok(()) => then(&table, reply),
                Err(errno) => reply.error(errno),
            }),
        );
    }

    /// Runs `job`, which does I/O on `image`, on that medium's worker threads; here if none
    /// could start.
    fn off_session(&mut self, image: &Medium, job: Job) {
        if let Err(job) = self.workers.submit(queue_of(image), job) {
            job(&mut self.buf);
        }
    }
}

fn to_system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    let base = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
    };
    base.and_then(|b| b.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

/// Attributes of an image entry as the kernel sees them. Setuid and setgid are dropped, and
/// anything that is not a file, directory or symlink (Rock Ridge devices, fifos, sockets) is shown
/// as an empty regular file, never as a device.
pub fn entry_attr(ino: u64, e: &Entry) -> FileAttr {
    let (kind, size, perm) = match e.kind {
        Kind::Dir => (FileType::Directory, e.size, e.mode & 0o1777),
        Kind::File => (FileType::RegularFile, e.size, e.mode & 0o1777),
        Kind::Symlink => (
            FileType::Symlink,
            e.target.as_ref().map_or(0, |t| t.len() as u64),
            0o777,
        ),
        Kind::Other => (FileType::RegularFile, 0, e.mode & 0o1777),
    };
    let nlink = match (e.nlink, e.kind) {
        (0, Kind::Dir) => 2,
        (0, _) => 1,
        (n, _) => n,
    };
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: to_system_time(e.atime),
        mtime: to_system_time(e.mtime),
        ctime: to_system_time(e.ctime),
        crtime: to_system_time(e.ctime),
        kind,
        perm: perm as u16,
        nlink,
        uid: e.uid,
        gid: e.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

fn root_attr(media: usize, mtime: SystemTime, uid: u32, gid: u32) -> FileAttr {
    FileAttr {
        ino: ROOT_INO,
        size: 0,
        blocks: 0,
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: FileType::Directory,
        perm: 0o555,
        nlink: u32::try_from(media)
            .unwrap_or(u32::MAX - 2)
            .saturating_add(2),
        uid,
        gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::File | Kind::Other => FileType::RegularFile,
    }
}

/// Directories up to this size are indexed on the session thread when their bytes are in the
/// page cache (a few hundred entries: microseconds); larger ones always on a worker thread, so
/// that indexing one holds up no other request.
const INDEX_HERE_MAX: u64 = 64 << 10;

/// Directory rows fetched per table visit while filling one readdir reply.
const READDIR_BATCH: usize = 256;

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        // Best effort: each is an optimisation the kernel may not offer.
        for cap in [FUSE_CACHE_SYMLINKS, FUSE_PARALLEL_DIROPS] {
            if let Err(missing) = config.add_capabilities(cap) {
                debug!(
                    capability = missing,
                    "kernel does not offer a FUSE capability"
                );
            }
        }
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let Some((need, reply)) = answer_lookup(&self.table, parent, name, reply) else {
            return;
        };
        let name = name.to_owned();
        self.index_then(need, reply, move |table, reply| {
            // The second round finds the index just built.
            if let Some((_, reply)) = answer_lookup(table, parent, &name, reply) {
                reply.error(libc::EIO);
            }
        });
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        lock(&self.table).forget(ino, nlookup);
    }

    fn batch_forget(&mut self, _req: &Request<'_>, nodes: &[fuser::fuse_forget_one]) {
        let mut table = lock(&self.table);
        for n in nodes {
            table.forget(n.nodeid, n.nlookup);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let table = lock(&self.table);
        match table.attr(ino) {
            Some(Attr::Root { media, mtime }) => {
                let attr = root_attr(media, mtime, self.uid, self.gid);
                drop(table);
                reply.attr(&ROOT_TTL, &attr);
            }
            Some(Attr::Node { entry, .. }) => {
                let attr = entry_attr(ino, entry);
                drop(table);
                reply.attr(&CONTENT_TTL, &attr);
            }
            None => {
                drop(table);
                reply.error(libc::ENOENT);
            }
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let table = lock(&self.table);
        match table.entry(ino) {
            Some(e) if e.kind == Kind::Symlink => match &e.target {
                Some(target) => {
                    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec();
                    drop(table);
                    reply.data(&bytes);
                }
                None => {
                    drop(table);
                    reply.error(libc::EIO);
                }
            },
            Some(_) => {
                drop(table);
                reply.error(libc::EINVAL);
            }
            None => {
                drop(table);
                reply.error(libc::ENOENT);
            }
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        let opened = lock(&self.table).open(ino);
        match opened {
            Ok((image, entry)) => {
                let fh = self.next_fh;
                self.next_fh += 1;
                self.handles.insert(fh, Arc::new(OpenFile { image, entry }));
                // Contents never change while a medium exists and a new medium never reuses an
                // inode, so cached pages stay valid across opens.
                reply.opened(fh, FOPEN_KEEP_CACHE);
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(file) = self.handles.get(&fh).cloned() else {
            return reply.error(libc::EBADF);
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(libc::EINVAL);
        };
        let image = file.image.clone();
        let job = ReadJob {
            file,
            offset,
            size,
            reply,
        };
        self.off_session(&image, Box::new(move |buf| serve_read(job, buf)));
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Dropping the handle may drop the last reference to a removed medium's image, which
        // closes the image file.
        self.handles.remove(&fh);
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let table = lock(&self.table);
        let attr = table.attr(ino);
        let flags = match attr {
            // The root changes with the media: never cached.
            Some(Attr::Root { .. }) => Ok(0),
            // A medium's directories never change: let the kernel cache their listings.
            Some(Attr::Node { entry, .. }) if entry.kind == Kind::Dir => Ok(FOPEN_CACHE_DIR),
            Some(Attr::Node { .. }) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        };
        drop(table);
        match flags {
            Ok(flags) => reply.opened(0, flags),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        reply: ReplyDirectory,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(libc::EINVAL);
        };
        let Some((need, offset, reply)) = answer_readdir(&self.table, ino, offset, reply) else {
            return;
        };
        self.index_then(need, reply, move |table, reply| {
            if let Some((_, _, reply)) = answer_readdir(table, ino, offset, reply) {
                reply.error(libc::EIO);
            }
        });
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let table = lock(&self.table);
        let bytes: u64 = table.images().map(|i| i.info().volume_size).sum();
        let files = table.usage().nodes as u64;
        drop(table);
        reply.statfs(
            bytes.div_ceil(u64::from(SECTOR)),
            0,
            0,
            files,
            0,
            SECTOR,
            super::table::MAX_NAME_LEN as u32,
            SECTOR,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_and_absurd_nanos_do_not_panic() {
        let t = to_system_time(Timestamp {
            secs: -86_400,
            nanos: 2_000_000_000,
        });
        assert!(t < UNIX_EPOCH);
        // Whatever the platform can represent; never a panic.
        let _ = to_system_time(Timestamp {
            secs: i64::MAX,
            nanos: 999_999_999,
        });
    }
}
