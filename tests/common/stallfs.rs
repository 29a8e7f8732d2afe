//! A FUSE file system served by the test process itself: the files of a backing directory,
//! read-only, whose reads (and listings, opens, and stats of its root) can be held until
//! released, as a disc with unreadable sectors (the drive retrying for minutes) or a stalled
//! NFS server hold them. Reads bypass the page cache (direct I/O), so each one reaches it; each
//! is answered from a thread of its own, so a held read holds up nothing else here.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::consts::FOPEN_DIRECT_IO;
use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    Request, Session, SessionACL,
};

const TTL: Duration = Duration::from_secs(0);
const ROOT: u64 = 1;
/// The name under which listings of the root are held (no file can have it).
const LISTING: &str = "/";
/// What opens of a file are held under: this, then its name (no file can have it).
const OPENS: &str = "open/";
/// What the root's attributes (stat of the mount point) are held under (no file can have it).
const ROOT_ATTR: &str = "attr/";

/// Which files' reads are held (those that reach past the byte offset given), and how many
/// reads wait.
#[derive(Default)]
struct Gate {
    held: Mutex<HashMap<OsString, u64>>,
    changed: Condvar,
    waiting: AtomicUsize,
}

impl Gate {
    /// Blocks while reads of `name` that reach past `end` are held.
    fn pass(&self, name: &OsStr, end: u64) {
        let is_held =
            |held: &HashMap<OsString, u64>| held.get(name).is_some_and(|from| end > *from);
        let mut held = self.held.lock().unwrap();
        if is_held(&held) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while is_held(&held) {
                held = self.changed.wait(held).unwrap();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

struct Fs {
    backing: PathBuf,
    gate: Arc<Gate>,
    /// Inode numbers by file name, stable while mounted.
    inos: HashMap<OsString, u64>,
    names: HashMap<u64, OsString>,
}

impl Fs {
    fn ino(&mut self, name: &OsStr) -> u64 {
        if let Some(ino) = self.inos.get(name) {
            return *ino;
        }
        let ino = self.inos.len() as u64 + 2;
        self.inos.insert(name.to_owned(), ino);
        self.names.insert(ino, name.to_owned());
        ino
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (meta, kind, perm) = if ino == ROOT {
            (
                std::fs::metadata(&self.backing).ok()?,
                FileType::Directory,
                0o755,
            )
        } else {
            let name = self.names.get(&ino)?;
            let meta = std::fs::metadata(self.backing.join(name)).ok()?;
            (meta, FileType::RegularFile, 0o644)
        };
        let mtime = UNIX_EPOCH + Duration::from_secs(meta.mtime().max(0) as u64);
        Some(FileAttr {
            ino,
            size: meta.len(),
            blocks: meta.len().div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for Fs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent != ROOT || !self.backing.join(name).is_file() {
            return reply.error(libc::ENOENT);
        }
        let ino = self.ino(name);
        match self.attr(ino) {
            Some(attr) => reply.entry(&TTL, &attr, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let attr = self.attr(ino);
        let held = ino == ROOT
            && self
                .gate
                .held
                .lock()
                .unwrap()
                .contains_key(OsStr::new(ROOT_ATTR));
        let gate = held.then(|| self.gate.clone());
        let answer = move || match attr {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(libc::ENOENT),
        };
        match gate {
            Some(gate) => {
                std::thread::spawn(move || {
                    gate.pass(OsStr::new(ROOT_ATTR), 1);
                    answer();
                });
            }
            None => answer(),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        let Some(name) = self.names.get(&ino) else {
            return reply.error(libc::ENOENT);
        };
        let mut key = OsString::from(OPENS);
        key.push(name);
        let gate = self.gate.clone();
        std::thread::spawn(move || {
            gate.pass(&key, 1);
            reply.opened(0, FOPEN_DIRECT_IO);
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(name) = self.names.get(&ino).cloned() else {
            return reply.error(libc::ENOENT);
        };
        let path = self.backing.join(&name);
        let gate = self.gate.clone();
        std::thread::spawn(move || {
            gate.pass(&name, offset as u64 + u64::from(size));
            let mut buf = vec![0; size as usize];
            let read = File::open(&path).and_then(|f| f.read_at(&mut buf, offset as u64));
            match read {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        });
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let mut names: Vec<OsString> = std::fs::read_dir(&self.backing)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        let mut rows = vec![
            (ROOT, FileType::Directory, OsString::from(".")),
            (ROOT, FileType::Directory, OsString::from("..")),
        ];
        for n in names {
            rows.push((self.ino(&n), FileType::RegularFile, n));
        }
        let gate = self.gate.clone();
        std::thread::spawn(move || {
            gate.pass(OsStr::new(LISTING), 1);
            for (i, (ino, kind, name)) in rows.into_iter().enumerate().skip(offset as usize) {
                if reply.add(ino, i as i64 + 1, kind, &name) {
                    break;
                }
            }
            reply.ok();
        });
    }
}

/// The mounted file system; dropping it releases every held read and detaches the mount.
pub struct StallFs {
    at: PathBuf,
    gate: Arc<Gate>,
}

impl StallFs {
    /// Shows the files of `backing` at `at` (an existing directory).
    pub fn mount(backing: &Path, at: &Path) -> StallFs {
        let device: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("opening /dev/fuse")
            .into();
        let data = CString::new(format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            device.as_raw_fd()
        ))
        .unwrap();
        let target = CString::new(at.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                c"stallfs".as_ptr(),
                target.as_ptr(),
                c"fuse.stallfs".as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting the test FUSE file system at {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
        let gate = Arc::new(Gate::default());
        let fs = Fs {
            backing: backing.to_owned(),
            gate: gate.clone(),
            inos: HashMap::new(),
            names: HashMap::new(),
        };
        let mut session = Session::from_fd(fs, device, SessionACL::All);
        std::thread::spawn(move || session.run());
        StallFs {
            at: at.to_owned(),
            gate,
        }
    }

    /// From now on, reads of `name` wait until [`StallFs::release`].
    pub fn hold(&self, name: &str) {
        self.hold_from(name, 0);
    }

    /// From now on, reads of `name` that reach past byte `from` wait until
    /// [`StallFs::release`], as if the sectors from there on were unreadable.
    pub fn hold_from(&self, name: &str, from: u64) {
        self.gate.held.lock().unwrap().insert(name.into(), from);
    }

    /// Holds every listing of the root from now on, as a stalled NFS server does.
    pub fn hold_listing(&self) {
        self.hold_from(LISTING, 0);
    }

    /// Holds every open(2) of `name` from now on (a stat still answers), as an NFS server
    /// that stops answering between a listing and an open does.
    pub fn hold_open(&self, name: &str) {
        self.hold_from(&format!("{OPENS}{name}"), 0);
    }

    /// Holds every stat of the root (the mount point) from now on, as an NFS server that is
    /// down holds a stat of its mount.
    pub fn hold_root_attr(&self) {
        self.hold_from(ROOT_ATTR, 0);
    }

    /// Lets every held read go on.
    pub fn release(&self) {
        self.gate.held.lock().unwrap().clear();
        self.gate.changed.notify_all();
    }

    /// A guard that releases every held read when dropped. Declared after the watcher, it is
    /// dropped first: a process stopped while its FUSE request waits here cannot exit until
    /// the request is answered, so the watcher would never be reaped.
    pub fn release_on_drop(&self) -> Release {
        Release(self.gate.clone())
    }

    /// How many reads are held now.
    pub fn waiting(&self) -> usize {
        self.gate.waiting.load(Ordering::SeqCst)
    }
}

impl Drop for StallFs {
    fn drop(&mut self) {
        self.release();
        let target = CString::new(self.at.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// See [`StallFs::release_on_drop`].
pub struct Release(Arc<Gate>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.held.lock().unwrap().clear();
        self.0.changed.notify_all();
    }
}
