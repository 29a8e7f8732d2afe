//! The FUSE mount driver: one read-only FUSE filesystem at the root, each medium a top-level
//! directory served by isomgr's own ISO9660 reader.
//!
//! Owns the mount at the root (stale-mount recovery, mount options, unmount) and the session
//! thread. Adding or removing a medium is a table update plus a kernel cache invalidation; it
//! never remounts. It does not choose names or decide what is a medium: that is the manager's.
//!
//! - `table`: the pure inode table (no I/O), unit-tested.
//! - `adapter`: the fuser `Filesystem` implementation over the table and the images.
//! - `reopen`: the image files, kept open within a descriptor budget, reopened on demand.

mod adapter;

pub mod reopen;
pub mod table;
mod workers;

use crate::iso9660;

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use fuser::{Notifier, Session, SessionACL};
use tracing::{debug, info, warn};

use self::adapter::{lock, Adapter, SharedTable};
use self::iso9660::Image;
use self::table::{AddError, Table, ROOT_INO};

/// Read-ahead for the mount's backing device (KiB): two FUSE requests of max_pages (256 pages,
/// 1 MiB) in flight, one per reader thread. The kernel starts FUSE mounts at 128 KiB. Measured
/// on the 2-core test VM: 128 KiB ~1.1-1.5 GB/s, 2 MiB ~1.6-2.1 GB/s, 8 MiB and more ~1 GB/s.
const READ_AHEAD_KB: u32 = 2048;
/// How long `unmount` waits for the session thread to finish after the kernel let go.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("inspecting the mount root {path}")]
    Root { path: PathBuf, source: io::Error },
    #[error("a FUSE filesystem is already mounted and alive at {path} (another isomgr watch?)")]
    AlreadyMounted { path: PathBuf },
    #[error("the mount root {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("lazily unmounting the stale FUSE mount at {path}")]
    StaleUnmount { path: PathBuf, source: io::Error },
    #[error("opening /dev/fuse")]
    OpenDevice { source: io::Error },
    #[error("mounting FUSE at {path}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("starting the FUSE session thread for {path}")]
    Spawn { path: PathBuf, source: io::Error },
    #[error("unmounting FUSE at {path}")]
    Unmount { path: PathBuf, source: io::Error },
    #[error("medium name {name:?} cannot be a directory name")]
    InvalidName { name: String },
    #[error("medium name {name:?} is already in use")]
    NameTaken { name: String },
}

/// A running FUSE filesystem at one root. Dropping it unmounts (see [`FuseDriver::unmount`]).
pub struct FuseDriver {
    root: PathBuf,
    table: SharedTable,
    notifier: Notifier,
    thread: Option<JoinHandle<io::Result<()>>>,
    mounted: bool,
}

impl std::fmt::Debug for FuseDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseDriver")
            .field("root", &self.root)
            .field("mounted", &self.mounted)
            .finish_non_exhaustive()
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The filesystem type magic of `path` (statfs(2) `f_type`).
fn statfs(path: &Path) -> io::Result<i64> {
    let c = cstring(path)?;
    // SAFETY: `buf` is plain data the call fills in; `c` is a valid C string.
    let (rc, kind) = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        let rc = libc::statfs(c.as_ptr(), &mut buf);
        (rc, buf.f_type as i64)
    };
    if rc == 0 {
        Ok(kind)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `path` is itself a mount point (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    let parent = path.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// `f_type` of a FUSE filesystem.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Mount options: read-only, shared with every user (permissions checked by the kernel from the
/// modes shown), no setuid, devices or execution.
fn mount_fuse(root: &Path, fd: &OwnedFd) -> io::Result<()> {
    let mode = std::fs::metadata(root)?.mode() & libc::S_IFMT;
    // SAFETY: geteuid/getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let data = format!(
        "fd={},rootmode={:o},user_id={uid},group_id={gid},allow_other,default_permissions",
        fd.as_raw_fd(),
        mode
    );
    let data = CString::new(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let target = cstring(root)?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"isomgr".as_ptr(),
            target.as_ptr(),
            c"fuse.isomgr".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Detaches a dead FUSE mount (its daemon was killed: every access fails with ENOTCONN) at
/// `root`, if there is one; true when it did. Before anything else looks at the root: even
/// mkdir and realpath on it fail while it is there.
pub fn detach_dead_mount(root: &Path) -> Result<bool, Error> {
    match statfs(root) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            warn!(root = %root.display(), "found a dead FUSE mount (ENOTCONN); detaching it");
            umount2(root, libc::MNT_DETACH).map_err(|source| Error::StaleUnmount {
                path: root.to_owned(),
                source,
            })?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Makes `root` usable as a mount point: a dead FUSE mount (its daemon was killed, every access
/// fails with ENOTCONN) is detached lazily first.
fn prepare_root(root: &Path) -> Result<(), Error> {
    // statfs always reaches a FUSE daemon (stat may be answered from cached attributes), so it
    // tells a dead mount at once.
    detach_dead_mount(root)?;
    let meta = match statfs(root) {
        // A live FUSE filesystem already there (another watcher on the same root): mounting on
        // top would hide it, and our unmount would later take the wrong one.
        Ok(FUSE_SUPER_MAGIC) if is_mount_point(root) => {
            return Err(Error::AlreadyMounted {
                path: root.to_owned(),
            })
        }
        Ok(_) => std::fs::metadata(root),
        Err(e) => Err(e),
    }
    .map_err(|source| Error::Root {
        path: root.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: root.to_owned(),
        });
    }
    match std::fs::read_dir(root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                warn!(root = %root.display(), "mount root is not empty; the FUSE mount hides what is in it");
            }
        }
        Err(e) => debug!(root = %root.display(), error = %e, "could not list the mount root"),
    }
    Ok(())
}

/// Raises the read-ahead of the mount's backing device so the kernel asks for large reads.
/// Best effort: only logged when it fails.
fn raise_read_ahead(root: &Path) {
    let dev = match std::fs::metadata(root) {
        Ok(m) => m.dev(),
        Err(e) => return debug!(root = %root.display(), error = %e, "cannot stat the new mount"),
    };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&path, READ_AHEAD_KB.to_string()) {
        Ok(()) => debug!(path = %path, kb = READ_AHEAD_KB, "raised read-ahead"),
        Err(e) => debug!(path = %path, error = %e, "could not raise read-ahead"),
    }
}

impl FuseDriver {
    /// Mounts an empty FUSE filesystem at `root` and serves it from a background thread.
    /// A dead FUSE mount left at `root` by a killed daemon is detached first.
    pub fn mount(root: &Path) -> Result<FuseDriver, Error> {
        prepare_root(root)?;
        let root = root.canonicalize().map_err(|source| Error::Root {
            path: root.to_owned(),
            source,
        })?;
        let device: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|source| Error::OpenDevice { source })?
            .into();
        mount_fuse(&root, &device).map_err(|source| Error::Mount {
            path: root.clone(),
            source,
        })?;
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let table: SharedTable = Arc::new(Mutex::new(Table::new(SystemTime::now())));
        let session = Session::from_fd(
            Adapter::new(table.clone(), uid, gid),
            device,
            SessionACL::All,
        );
        let notifier = session.notifier();
        let spawned = std::thread::Builder::new()
            .name("isomgr-fuse".into())
            .spawn(move || {
                let mut session = session;
                session.run()
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(source) => {
                // Nobody will answer the kernel: take the mount down again.
                if let Err(e) = umount2(&root, libc::MNT_DETACH) {
                    warn!(root = %root.display(), error = %e, "could not detach the unserved mount");
                }
                return Err(Error::Spawn { path: root, source });
            }
        };
        // The first request waits for the session's INIT answer, so after this the mount serves.
        raise_read_ahead(&root);
        info!(root = %root.display(), "FUSE filesystem mounted");
        Ok(FuseDriver {
            root,
            table,
            notifier,
            thread: Some(thread),
            mounted: true,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Shows `image` as directory `name` in the root, at once.
    pub fn add(&self, name: &str, image: Arc<Image<reopen::Pooled>>) -> Result<(), Error> {
        let added = lock(&self.table).add(name, image, SystemTime::now());
        match added {
            Ok(id) => {
                debug!(name, medium = id.0, "medium added");
                // Drop a cached negative entry for the name, and the root's attributes.
                self.invalidate(ROOT_INO, OsStr::new(name));
                Ok(())
            }
            Err(AddError::InvalidName) => Err(Error::InvalidName {
                name: name.to_owned(),
            }),
            Err(AddError::NameTaken) => Err(Error::NameTaken {
                name: name.to_owned(),
            }),
        }
    }

    /// Takes directory `name` out of the root at once. Files already open keep reading until
    /// closed; the image is closed when the last of them is. Returns whether `name` was there.
    pub fn remove(&self, name: &str) -> bool {
        let removed = lock(&self.table).remove(name, SystemTime::now());
        match removed {
            Some(removed) => {
                debug!(
                    name,
                    medium = removed.id.0,
                    held = removed.held.len(),
                    "medium removed"
                );
                self.invalidate(ROOT_INO, OsStr::new(name));
                // Entries below the top still in use (open files, working directories) survive
                // the top's invalidation and would stay cached after their last user, keeping
                // their nodes in the table. Dropped now, the kernel forgets each one as soon as
                // it is unused; open files keep reading meanwhile.
                for (parent, child) in &removed.held {
                    self.invalidate(*parent, child);
                }
                true
            }
            None => false,
        }
    }

    /// Names in the root, in the order they were added.
    pub fn names(&self) -> Vec<String> {
        lock(&self.table).names()
    }

    /// Tells the kernel to forget what it cached about entry `name` of directory `parent` (a
    /// negative root entry after a lookup before it existed, a positive one after removal). The
    /// root's own attributes expire by themselves within a second; its listing is never cached.
    /// Called without the table lock: the kernel may need the session meanwhile.
    fn invalidate(&self, parent: u64, name: &OsStr) {
        if let Err(e) = self.notifier.inval_entry(parent, name) {
            // ENOENT: the kernel had nothing cached under that name (or forgot the parent).
            if e.raw_os_error() != Some(libc::ENOENT) {
                debug!(parent, name = ?name, error = %e, "invalidating an entry failed");
            }
        }
    }

    /// Unmounts the root. If files are still open under it, it is detached lazily: those files
    /// keep reading until closed and the session thread ends with the last of them.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), Error> {
        if !self.mounted {
            return Ok(());
        }
        self.mounted = false;
        let lazily = match umount2(&self.root, 0) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                umount2(&self.root, libc::MNT_DETACH).map_err(|source| Error::Unmount {
                    path: self.root.clone(),
                    source,
                })?;
                true
            }
            Err(source) => {
                return Err(Error::Unmount {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        if lazily {
            info!(root = %self.root.display(), "FUSE filesystem detached; open files keep reading until closed");
            // The thread ends by itself when the kernel lets go of the last file.
            self.thread = None;
            return Ok(());
        }
        info!(root = %self.root.display(), "FUSE filesystem unmounted");
        if let Some(thread) = self.thread.take() {
            let start = Instant::now();
            while !thread.is_finished() && start.elapsed() < JOIN_TIMEOUT {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                match thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        warn!(root = %self.root.display(), error = %e, "FUSE session ended with an error")
                    }
                    Err(_) => warn!(root = %self.root.display(), "FUSE session thread panicked"),
                }
            } else {
                warn!(root = %self.root.display(), "FUSE session thread still running after unmount; leaving it");
            }
        }
        Ok(())
    }
}

impl Drop for FuseDriver {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            warn!(error = %format!("{e:#}"), "unmounting on drop failed");
        }
    }
}
