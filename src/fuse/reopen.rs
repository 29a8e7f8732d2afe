//! Image files served within a descriptor budget: every served image is a [`Pooled`] source,
//! and one [`FdPool`] keeps at most `budget` of their descriptors open. While fewer images
//! than the budget less a window are served, each keeps its descriptor for as long as it is
//! served ("held": a plain descriptor, no lock on the read path, no bookkeeping). Images
//! beyond that share the window: least recently used closed first, an image whose descriptor
//! was closed reopens by path on its next read.
//!
//! A reopened file must be the file that was identified: same device and inode, same size and
//! mtime. Anything else (the file was replaced, rewritten or deleted since) fails the read with
//! ESTALE and is never served in its place; the dirs source reports the change on its own.
//!
//! The path to reopen follows renames: the executor updates the shared [`PathSlot`] when the
//! source reports a medium moved. Owns the descriptors of served images and nothing else: it
//! never decides what is served.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::iso9660::ReadAt;

/// Descriptors kept for everything but served images (sockets, inotify, /dev/fuse, the state
/// file, images being identified and queued), when the budget comes from the open-file limit:
/// this many, or a tenth of the limit when that is more.
pub const RESERVE: u64 = 256;
/// The budget is never below this (nor below a quarter of the limit, when that is less).
pub const MIN_BUDGET: usize = 16;
/// Environment variable that sets the budget (a number of descriptors) instead.
pub const BUDGET_ENV: &str = "ISOMGR_FD_BUDGET";
/// How many descriptors a reopen that fails with EMFILE/ENFILE closes before it waits.
const EMFILE_EVICTIONS: usize = 8;
/// How long a reopen still out of descriptors after that (none of the pool's left to close:
/// the process's others are images being identified, a rescan's burst) waits for some to be
/// closed before the read fails with EMFILE. Those are held for moments; the read waits on
/// one of the driver's threads, and the pool grows while every thread is busy.
const EMFILE_WAIT: Duration = Duration::from_secs(5);
/// Longest pause between two tries while waiting.
const EMFILE_PAUSE: Duration = Duration::from_millis(50);
/// Descriptors left free below the open-file limit by the held images (whose descriptors are
/// never closed): beyond it, images are shared, so that they can be closed when the sources
/// need descriptors (see [`FdPool::relieving`]).
pub const HOLD_HEADROOM: u64 = 16;
/// Descriptors of the budget kept for images beyond the held ones, at most (a quarter of the
/// budget when that is less, at least one).
const SHARED_WINDOW: usize = 64;

/// The budget for an open-file limit `soft` (RLIMIT_NOFILE after raising): `soft` less
/// [`RESERVE`] or a tenth, never below [`MIN_BUDGET`] or a quarter of `soft`, whichever is
/// less (a budget the limit cannot hold would starve the source of descriptors for good).
pub fn budget_for_limit(soft: u64) -> usize {
    let reserve = RESERVE.max(soft / 10);
    let floor = (MIN_BUDGET as u64).min(soft / 4).max(1);
    usize::try_from(soft.saturating_sub(reserve).max(floor)).unwrap_or(usize::MAX)
}

/// The budget and where it comes from (logged at start): [`BUDGET_ENV`] when set to a number,
/// else from the soft RLIMIT_NOFILE.
pub fn budget_from_env_or_limit() -> (usize, String) {
    let soft = crate::sys::open_file_limit();
    if let Some(n) = std::env::var(BUDGET_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        // Never more than half the limit: the rest must stay free for identifying images.
        let b = n.clamp(1, (soft / 2).max(1));
        let b = usize::try_from(b).unwrap_or(usize::MAX);
        return (b, format!("{BUDGET_ENV}={n}, open-file limit {soft}"));
    }
    let b = budget_for_limit(soft);
    (b, format!("open-file limit {soft}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Descriptors open now.
    pub open: usize,
    /// Descriptors closed to stay within the budget, since the start.
    pub evictions: u64,
    /// Images reopened by path, since the start.
    pub reopens: u64,
}

struct Slot {
    file: Arc<File>,
    tick: u64,
}

#[derive(Default)]
struct PoolInner {
    /// Open descriptors by source key.
    open: HashMap<u64, Slot>,
    /// Last use -> source key, oldest first.
    lru: BTreeMap<u64, u64>,
    tick: u64,
    evictions: u64,
    reopens: u64,
}

impl PoolInner {
    fn touch(&mut self, key: u64) -> Option<Arc<File>> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.open.get_mut(&key)?;
        self.lru.remove(&slot.tick);
        slot.tick = tick;
        self.lru.insert(tick, key);
        Some(slot.file.clone())
    }

    fn insert(&mut self, key: u64, file: Arc<File>) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(old) = self.open.insert(key, Slot { file, tick }) {
            self.lru.remove(&old.tick);
        }
        self.lru.insert(tick, key);
    }

    fn remove(&mut self, key: u64) -> Option<Arc<File>> {
        let slot = self.open.remove(&key)?;
        self.lru.remove(&slot.tick);
        Some(slot.file)
    }

    /// Takes the least recently used descriptor out (the caller drops it outside the lock).
    fn evict_one(&mut self) -> Option<Arc<File>> {
        let (_, key) = self.lru.pop_first()?;
        self.evictions += 1;
        self.open.remove(&key).map(|s| s.file)
    }
}

/// The descriptor budget shared by every served image. See the module documentation.
pub struct FdPool {
    budget: usize,
    /// An image is held (its descriptor kept for as long as it is served) only when its
    /// descriptor's number is below this.
    hold_below: u64,
    /// Images that keep their descriptor while served.
    held: AtomicUsize,
    inner: Mutex<PoolInner>,
    next_key: AtomicU64,
}

impl std::fmt::Debug for FdPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdPool")
            .field("budget", &self.budget)
            .field("stats", &self.stats())
            .finish()
    }
}

impl FdPool {
    pub fn new(budget: usize) -> Arc<FdPool> {
        Self::build(budget, u64::MAX)
    }

    fn build(budget: usize, hold_below: u64) -> Arc<FdPool> {
        Arc::new(FdPool {
            budget: budget.max(1),
            hold_below,
            held: AtomicUsize::new(0),
            inner: Mutex::new(PoolInner::default()),
            next_key: AtomicU64::new(1),
        })
    }

    /// [`FdPool::new`], and the pool closes its least recently used shared descriptor when
    /// another part of the process runs out of descriptors ([`crate::sys::relieve_descriptors`]):
    /// the sources need a few to identify new images, and with a low open-file limit the
    /// served images could otherwise hold every one for good. For the same reason only
    /// descriptors numbered below the open-file limit less [`HOLD_HEADROOM`] are held (the
    /// held ones are never closed).
    pub fn relieving(budget: usize) -> Arc<FdPool> {
        let limit = crate::sys::open_file_limit();
        Self::build(budget, limit.saturating_sub(HOLD_HEADROOM)).relieves()
    }

    /// Registers the pool with [`crate::sys::relieve_descriptors`].
    fn relieves(self: Arc<Self>) -> Arc<FdPool> {
        let weak = Arc::downgrade(&self);
        crate::sys::add_reliever(move || {
            let Some(pool) = weak.upgrade() else {
                return false;
            };
            // Dropped outside the lock; a read that holds it closes it when it ends.
            let evicted = lock(&pool.inner).evict_one();
            evicted.is_some()
        });
        self
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn stats(&self) -> PoolStats {
        let p = lock(&self.inner);
        PoolStats {
            open: p.open.len() + self.held.load(Ordering::Relaxed),
            evictions: p.evictions,
            reopens: p.reopens,
        }
    }

    /// Adds `file` (open, at `path`) to the pool: held while there is room outside the shared
    /// window, else shared (closing the least recently used shared descriptors beyond the
    /// budget).
    pub fn adopt(self: &Arc<Self>, file: File, path: &Path) -> io::Result<Pooled> {
        use std::os::fd::AsRawFd;
        let size = ReadAt::size(&file)?;
        let window = SHARED_WINDOW.min(self.budget / 4).max(1);
        let room = self.budget.saturating_sub(window);
        // The kernel gives the lowest free number: a descriptor numbered this high means the
        // process is near its limit, and one held for good would leave the sources none.
        let low = u64::try_from(file.as_raw_fd()).is_ok_and(|fd| fd < self.hold_below);
        let took = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (low && n < room).then_some(n + 1)
            });
        if took.is_ok() {
            return Ok(Pooled(Kind::Held {
                file,
                size,
                pool: Arc::clone(self),
            }));
        }
        // Only an image that may be reopened needs its identity.
        let ident = Ident::with_size(&file, size)?;
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let src = Shared {
            pool: Arc::clone(self),
            key,
            path: Arc::new(PathSlot(Mutex::new(path.to_owned()))),
            ident,
        };
        let evicted = {
            let mut p = lock(&self.inner);
            p.insert(key, Arc::new(file));
            self.over_budget(&mut p)
        };
        drop(evicted);
        Ok(Pooled(Kind::Shared(Box::new(src))))
    }

    /// Opens an image file read-only. Out of descriptors (images queued for identification,
    /// a burst elsewhere), it closes served images' descriptors, least recently used first,
    /// and tries again; with none left to close, it waits up to [`EMFILE_WAIT`] for others
    /// to be closed.
    pub fn open(&self, path: &Path) -> io::Result<File> {
        self.open_with(EMFILE_WAIT, || {
            File::options()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(path)
        })
    }

    fn open_with(
        &self,
        wait: Duration,
        mut open: impl FnMut() -> io::Result<File>,
    ) -> io::Result<File> {
        let mut evictions = 0;
        let mut since: Option<Instant> = None;
        let mut pause = Duration::from_millis(1);
        loop {
            match open() {
                Err(e) if crate::sys::out_of_descriptors(&e) => {
                    if evictions < EMFILE_EVICTIONS {
                        evictions += 1;
                        // Dropped outside the lock. A descriptor a read still holds closes
                        // when that read ends.
                        let evicted = lock(&self.inner).evict_one();
                        if evicted.is_some() {
                            continue;
                        }
                    }
                    let start = *since.get_or_insert_with(Instant::now);
                    if start.elapsed() >= wait {
                        return Err(e);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(EMFILE_PAUSE);
                }
                other => return other,
            }
        }
    }

    fn over_budget(&self, p: &mut PoolInner) -> Vec<Arc<File>> {
        let mut out = Vec::new();
        let shared = self
            .budget
            .saturating_sub(self.held.load(Ordering::Acquire))
            .max(1);
        while p.open.len() > shared {
            match p.evict_one() {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }
}

/// What a reopened file must still be: the identified file, unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ident {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl Ident {
    /// The size is the end offset (lseek), so a block device gets its capacity, not 0.
    fn of(file: &File) -> io::Result<Ident> {
        Self::with_size(file, ReadAt::size(file)?)
    }

    fn with_size(file: &File, size: u64) -> io::Result<Ident> {
        let m = file.metadata()?;
        Ok(Ident {
            dev: m.dev(),
            ino: m.ino(),
            size,
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// Where an image file is now, shared between its [`Pooled`] source and whoever learns of
/// renames.
#[derive(Debug)]
pub struct PathSlot(Mutex<PathBuf>);

impl PathSlot {
    pub fn get(&self) -> PathBuf {
        lock(&self.0).clone()
    }

    pub fn set(&self, path: &Path) {
        *lock(&self.0) = path.to_owned();
    }
}

/// One served image file: its own descriptor while held, else its descriptor while the pool
/// keeps it and its path and identity to reopen it otherwise. Dropping it closes its
/// descriptor.
pub struct Pooled(Kind);

enum Kind {
    Held {
        file: File,
        size: u64,
        pool: Arc<FdPool>,
    },
    /// Boxed: most images are held, and the image struct is sized for either.
    Shared(Box<Shared>),
}

/// An image beyond the held ones: reopened on demand.
struct Shared {
    pool: Arc<FdPool>,
    key: u64,
    path: Arc<PathSlot>,
    ident: Ident,
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Held { file, .. } => f.debug_struct("Pooled").field("held", file).finish(),
            Kind::Shared(s) => f
                .debug_struct("Pooled")
                .field("path", &s.path)
                .field("ident", &s.ident)
                .finish_non_exhaustive(),
        }
    }
}

impl Pooled {
    /// The path it reopens from, for an image that may be reopened (set it when the file is
    /// renamed); `None` for a held one, whose descriptor follows the file.
    pub fn path(&self) -> Option<&Arc<PathSlot>> {
        match &self.0 {
            Kind::Held { .. } => None,
            Kind::Shared(s) => Some(&s.path),
        }
    }
}

impl Shared {
    /// The open descriptor, reopening the file when the pool had closed it.
    fn file(&self) -> io::Result<Arc<File>> {
        if let Some(f) = lock(&self.pool.inner).touch(self.key) {
            return Ok(f);
        }
        let file = Arc::new(self.reopen()?);
        let evicted = {
            let mut p = lock(&self.pool.inner);
            p.reopens += 1;
            // Another reader may have reopened it meanwhile: keep one.
            let file = match p.touch(self.key) {
                Some(f) => f,
                None => {
                    p.insert(self.key, file.clone());
                    file
                }
            };
            (self.pool.over_budget(&mut p), file)
        };
        let (closed, file) = evicted;
        drop(closed);
        Ok(file)
    }

    fn reopen(&self) -> io::Result<File> {
        let path = self.path.get();
        let file = match self.pool.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(io::Error::from_raw_os_error(libc::ESTALE))
            }
            Err(e) => return Err(e),
        };
        let now = Ident::of(&file)?;
        if now != self.ident {
            tracing::debug!(image = %path.display(), "reopened file is not the one served (replaced or changed): ESTALE");
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
        }
        Ok(file)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        match &self.0 {
            Kind::Held { pool, .. } => {
                pool.held.fetch_sub(1, Ordering::AcqRel);
            }
            Kind::Shared(s) => {
                let closed = lock(&s.pool.inner).remove(s.key);
                drop(closed);
            }
        }
    }
}

thread_local! {
    /// Set while [`from_cache`] runs on this thread: reads take only what is in the page cache.
    static CACHE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// A read under [`from_cache`] would have had to wait.
    static WOULD_WAIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `step` with every [`Pooled`] read on this thread taking only what is in the page cache
/// already (`RWF_NOWAIT`; an image whose descriptor the pool had closed is not reopened): such
/// a step cannot wait for a disc or a server. `None` when some read would have had to wait
/// (or the file system cannot tell): then nothing of `step`'s outcome is of use.
pub fn from_cache<T>(step: impl FnOnce() -> T) -> Option<T> {
    /// Ends the cache-only mode however `step` ends.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CACHE_ONLY.set(false);
        }
    }
    CACHE_ONLY.set(true);
    WOULD_WAIT.set(false);
    let reset = Reset;
    let out = step();
    drop(reset);
    (!WOULD_WAIT.replace(false)).then_some(out)
}

/// One read of `file` from the page cache only (see [`crate::offload::read_cached`]).
fn read_cached(file: &File, buf: &mut [u8], offset: u64, size: u64) -> io::Result<usize> {
    let want = usize::try_from(size.saturating_sub(offset))
        .unwrap_or(usize::MAX)
        .min(buf.len());
    if want == 0 {
        return Ok(0);
    }
    let read = match (libc::off_t::try_from(offset), buf.get_mut(..want)) {
        (Ok(at), Some(buf)) => crate::offload::read_cached(file, buf, at),
        _ => false,
    };
    // Not read: part of it is not cached, RWF_NOWAIT is refused here, or the read failed; the
    // step is run again where it may wait, and that read tells.
    if read {
        Ok(want)
    } else {
        would_wait()
    }
}

/// A read under [`from_cache`] that would have had to wait: marked, and failed with EAGAIN.
fn would_wait() -> io::Result<usize> {
    WOULD_WAIT.set(true);
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

impl ReadAt for Pooled {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let cache_only = CACHE_ONLY.get();
        match &self.0 {
            Kind::Held { file, size, .. } if cache_only => read_cached(file, buf, offset, *size),
            Kind::Held { file, .. } => ReadAt::read_at(file, buf, offset),
            Kind::Shared(s) if cache_only => match lock(&s.pool.inner).touch(s.key) {
                Some(file) => read_cached(&file, buf, offset, s.ident.size),
                None => would_wait(),
            },
            Kind::Shared(s) => {
                let file = s.file()?;
                ReadAt::read_at(&*file, buf, offset)
            }
        }
    }

    /// The size when identified: the file is never served once it differs.
    fn size(&self) -> io::Result<u64> {
        match &self.0 {
            Kind::Held { size, .. } => Ok(*size),
            Kind::Shared(s) => Ok(s.ident.size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().write_all(data).unwrap();
        p
    }

    fn read(src: &Pooled, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        let n = src.read_at(&mut buf, 0)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn a_reopen_out_of_descriptors_closes_the_pool_s_then_waits_for_others() {
        let dir = tempfile::tempdir().unwrap();
        let p = file_with(dir.path(), "a.iso", b"abc");
        let emfile = || Err(io::Error::from_raw_os_error(libc::EMFILE));
        // A shared descriptor in the pool (a budget of one has no room for held ones): closed
        // first, then it opens, without waiting.
        let pool = FdPool::new(1);
        let a = pool.adopt(File::open(&p).unwrap(), &p).unwrap();
        assert!(matches!(a.0, Kind::Shared(_)));
        let before = pool.stats();
        assert_eq!(before.open, 1);
        let mut calls = 0;
        let got = pool.open_with(Duration::ZERO, || {
            calls += 1;
            if calls == 1 {
                emfile()
            } else {
                File::open(&p)
            }
        });
        assert!(got.is_ok(), "{got:?}");
        assert_eq!(pool.stats().evictions, before.evictions + 1);
        assert_eq!(pool.stats().open, 0);
        // Nothing left to close: it waits for the process's other descriptors to go.
        let start = Instant::now();
        let mut calls = 0;
        let got = pool.open_with(Duration::from_secs(10), || {
            calls += 1;
            if start.elapsed() < Duration::from_millis(200) {
                emfile()
            } else {
                File::open(&p)
            }
        });
        assert!(got.is_ok(), "{got:?}");
        assert!(calls > 2 && calls < 100, "{calls} tries in 200 ms");
        // Not forever: EMFILE after the wait. Other errors at once.
        let start = Instant::now();
        let e = pool
            .open_with(Duration::from_millis(150), emfile)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
        assert!(start.elapsed() >= Duration::from_millis(150));
        let mut calls = 0;
        let e = pool
            .open_with(Duration::from_secs(10), || {
                calls += 1;
                Err(io::Error::from_raw_os_error(libc::EACCES))
            })
            .unwrap_err();
        assert_eq!((e.raw_os_error(), calls), (Some(libc::EACCES), 1));
    }

    #[test]
    fn budget_keeps_a_reserve_and_a_floor() {
        assert_eq!(budget_for_limit(20_000), 18_000);
        assert_eq!(budget_for_limit(1024), 768);
        assert_eq!(budget_for_limit(300), 44);
        assert_eq!(budget_for_limit(100), MIN_BUDGET);
        assert_eq!(budget_for_limit(24), 6);
        assert_eq!(budget_for_limit(0), 1);
    }

    #[test]
    fn from_cache_takes_only_what_the_page_cache_holds_and_never_reopens() {
        use std::os::fd::AsRawFd;
        // On disk, not tmpfs, whose pages cannot be dropped.
        let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
        let data = vec![7u8; 1 << 20];
        let p = file_with(dir.path(), "held.iso", &data);
        let pool = FdPool::new(100);
        let held = pool.adopt(File::open(&p).unwrap(), &p).unwrap();
        assert!(matches!(held.0, Kind::Held { .. }));
        // Just written: in the page cache.
        let got = from_cache(|| read(&held, data.len())).expect("cached");
        assert_eq!(got.unwrap(), data);
        // Written back and dropped from the cache: a read would wait. (The kernel keeps a
        // page it finds busy at that moment, so the drop is asked again until it took: it
        // failed once in CI with a single try.)
        let f = File::open(&p).unwrap();
        let dropped = (0..100).any(|_| {
            f.sync_all().unwrap();
            // SAFETY: advice on a descriptor we own.
            let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(rc, 0);
            let none = from_cache(|| read(&held, data.len())).is_none();
            if !none {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            none
        });
        assert!(dropped, "from_cache read pages dropped from the page cache");
        // Outside, reads wait again as they must.
        assert_eq!(read(&held, data.len()).unwrap(), data);

        // A shared image whose descriptor the pool closed is not reopened.
        let small = FdPool::new(2);
        let srcs: Vec<Pooled> = (0..4)
            .map(|i| {
                let p = file_with(dir.path(), &format!("{i}.iso"), b"image");
                small.adopt(File::open(&p).unwrap(), &p).unwrap()
            })
            .collect();
        // The first is held; of the other three the oldest were closed.
        let closed = &srcs[1];
        assert!(matches!(closed.0, Kind::Shared(_)));
        let reopens = small.stats().reopens;
        assert!(from_cache(|| read(closed, 5)).is_none());
        assert_eq!(small.stats().reopens, reopens);
        assert_eq!(read(closed, 5).unwrap(), b"image");
        assert_eq!(small.stats().reopens, reopens + 1);
    }

    /// `n` images `DIR/I.iso` holding `image I`, adopted by `pool`.
    fn adopt_images(pool: &Arc<FdPool>, dir: &Path, n: usize) -> Vec<Pooled> {
        (0..n)
            .map(|i| {
                let p = file_with(dir, &format!("{i}.iso"), format!("image {i}").as_bytes());
                pool.adopt(File::open(&p).unwrap(), &p).unwrap()
            })
            .collect()
    }

    #[test]
    fn near_the_limit_images_are_shared_and_closed_when_the_process_runs_short() {
        let dir = tempfile::tempdir().unwrap();
        // As near the open-file limit as can be: no descriptor is numbered low enough to hold.
        let pool = FdPool::build(8, 0).relieves();
        let srcs = adopt_images(&pool, dir.path(), 3);
        assert!(srcs.iter().all(|s| matches!(s.0, Kind::Shared(_))));
        assert_eq!(pool.stats().open, 3);
        // Another part of the process ran out: the least recently used is closed, and its
        // next read reopens it.
        assert!(crate::sys::relieve_descriptors());
        assert_eq!((pool.stats().open, pool.stats().evictions), (2, 1));
        assert_eq!(read(&srcs[0], 7).unwrap(), b"image 0");
        assert_eq!(pool.stats().reopens, 1);
        // Far from the limit, the same images are held, and nothing is closed for others.
        let far = FdPool::new(8);
        let held = (0..3)
            .map(|i| {
                let p = dir.path().join(format!("{i}.iso"));
                far.adopt(File::open(&p).unwrap(), &p).unwrap()
            })
            .collect::<Vec<_>>();
        assert!(held.iter().all(|s| matches!(s.0, Kind::Held { .. })));
        drop((srcs, pool));
        assert!(
            !crate::sys::relieve_descriptors(),
            "a pool that went closes nothing"
        );
        assert_eq!(far.stats().open, 3);
    }

    #[test]
    fn keeps_at_most_the_budget_open_and_reopens_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FdPool::new(2);
        let srcs = adopt_images(&pool, dir.path(), 5);
        assert_eq!(pool.stats().open, 2);
        assert_eq!(pool.stats().evictions, 3);
        for round in 0..3 {
            for (i, s) in srcs.iter().enumerate() {
                assert_eq!(
                    read(s, 64).unwrap(),
                    format!("image {i}").as_bytes(),
                    "round {round}"
                );
                assert!(pool.stats().open <= 2);
            }
        }
        assert!(pool.stats().reopens >= 5);
        drop(srcs);
        assert_eq!(pool.stats().open, 0);
    }

    #[test]
    fn within_the_budget_nothing_is_ever_closed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FdPool::new(8);
        let srcs: Vec<Pooled> = (0..8)
            .map(|i| {
                let p = file_with(dir.path(), &format!("{i}.iso"), b"x");
                pool.adopt(File::open(&p).unwrap(), &p).unwrap()
            })
            .collect();
        for s in &srcs {
            read(s, 1).unwrap();
        }
        assert_eq!(
            pool.stats(),
            PoolStats {
                open: 8,
                evictions: 0,
                reopens: 0
            }
        );
    }

    #[test]
    fn a_replaced_or_changed_file_is_never_served_in_place_of_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FdPool::new(1);
        let a = file_with(dir.path(), "a.iso", b"original");
        let b = file_with(dir.path(), "b.iso", b"other");
        let sa = pool.adopt(File::open(&a).unwrap(), &a).unwrap();
        let sb = pool.adopt(File::open(&b).unwrap(), &b).unwrap();
        // `sa` was evicted. Atomically replace a.iso by another file of the same size.
        let tmp = file_with(dir.path(), "new.tmp", b"replaced");
        std::fs::rename(&tmp, &a).unwrap();
        let e = read(&sa, 64).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
        // Deleted: ESTALE too.
        std::fs::remove_file(&a).unwrap();
        assert_eq!(
            read(&sa, 64).unwrap_err().raw_os_error(),
            Some(libc::ESTALE)
        );
        // Changed in place (same inode, other size): refused as well.
        assert_eq!(read(&sb, 64).unwrap(), b"other");
        let c = file_with(dir.path(), "c.iso", b"c");
        let _sc = pool.adopt(File::open(&c).unwrap(), &c).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&b)
            .unwrap()
            .write_all(b" grown")
            .unwrap();
        assert_eq!(
            read(&sb, 64).unwrap_err().raw_os_error(),
            Some(libc::ESTALE)
        );
    }

    #[test]
    fn a_renamed_file_reopens_at_its_new_path_once_told() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FdPool::new(1);
        let a = file_with(dir.path(), "a.iso", b"aaaa");
        let sa = pool.adopt(File::open(&a).unwrap(), &a).unwrap();
        let b = file_with(dir.path(), "b.iso", b"bbbb");
        let _sb = pool.adopt(File::open(&b).unwrap(), &b).unwrap();
        let moved = dir.path().join("sub-a.iso");
        std::fs::rename(&a, &moved).unwrap();
        assert_eq!(read(&sa, 8).unwrap_err().raw_os_error(), Some(libc::ESTALE));
        sa.path().expect("shared").set(&moved);
        assert_eq!(read(&sa, 8).unwrap(), b"aaaa");
    }

    #[test]
    fn a_descriptor_in_use_stays_valid_while_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FdPool::new(1);
        let a = file_with(dir.path(), "a.iso", b"aaaa");
        let sa = pool.adopt(File::open(&a).unwrap(), &a).unwrap();
        let Kind::Shared(shared) = &sa.0 else {
            panic!("a budget of 1 holds nothing")
        };
        let held = shared.file().unwrap();
        let b = file_with(dir.path(), "b.iso", b"bbbb");
        let _sb = pool.adopt(File::open(&b).unwrap(), &b).unwrap();
        let mut buf = [0; 4];
        assert_eq!(ReadAt::read_at(&*held, &mut buf, 0).unwrap(), 4);
        assert_eq!(&buf, b"aaaa");
    }
}
