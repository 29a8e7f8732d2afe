//! The dirs source's inotify watches: one per directory, placed and dropped by the source, and
//! asking only for what changes the set of images: entries made, deleted and moved, files
//! closed after writing, permissions changed (an image refused as not readable by all, made
//! readable), and a watched directory itself going.
//!
//! Not `IN_OPEN`, `IN_MODIFY` or `IN_CLOSE_NOWRITE`, which a general-purpose
//! watcher (the `notify` crate) always takes: every image the watcher opens, every read of the
//! drop directory by a backup or a checksum run, and every write of a copy in progress (tens of
//! thousands for one DVD image) would each wake two threads for nothing.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sys::StopFd;

/// What the source is told, in the order inotify reported it.
#[derive(Debug)]
pub enum Change {
    /// An entry was made at `path`, or moved there; `dir` when it is a directory (not a
    /// symlink to one).
    Arrived { path: PathBuf, dir: bool },
    /// A file was closed after being written.
    Written(PathBuf),
    /// A file's permissions, owner, times or link count changed.
    Attrib(PathBuf),
    /// The entry at `path` was deleted or moved away; `dir` when it was a directory. Also a
    /// directory watched as a top (see [`Inotify::watch`]) deleted or moved itself.
    Left { path: PathBuf, dir: bool },
    /// The kernel's queue overflowed: events were lost.
    Overflow,
    /// Reading the events failed; nothing more comes.
    Failed(std::io::Error),
}

/// The events asked for on every directory.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ATTRIB
    | libc::IN_ONLYDIR;

/// The directory behind each watch descriptor, and the other way round.
#[derive(Default)]
struct Paths {
    by_wd: HashMap<i32, (PathBuf, bool)>,
    by_path: HashMap<PathBuf, i32>,
}

/// A running inotify instance; stopped on drop.
pub struct Inotify {
    fd: Arc<OwnedFd>,
    paths: Arc<Mutex<Paths>>,
    stop: Arc<StopFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Inotify {
    /// Starts the instance with no watch; `back` is called on its thread for each change.
    pub fn start(back: impl Fn(Change) + Send + 'static) -> std::io::Result<Inotify> {
        let fd = Arc::new(init()?);
        let paths = Arc::new(Mutex::new(Paths::default()));
        let stop = Arc::new(StopFd::new()?);
        let thread = {
            let (fd, paths, stop) = (Arc::clone(&fd), Arc::clone(&paths), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("isomgr-inotify".into())
                .spawn(move || read_changes(&fd, &paths, &stop, &back))?
        };
        Ok(Inotify {
            fd,
            paths,
            stop,
            thread: Some(thread),
        })
    }

    /// Watches directory `dir` (not below it). A `top` is a directory the user named: a
    /// symlink there is followed, and the directory deleted or moved away is reported as
    /// [`Change::Left`]; below a top, a symlink is refused (`ENOTDIR`). inotify's watch limit
    /// gives `ENOSPC`.
    pub fn watch(&self, dir: &Path, top: bool) -> std::io::Result<()> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let mask = if top {
            MASK
        } else {
            MASK | libc::IN_DONT_FOLLOW
        };
        // Held across the call: an event for the new watch is not read before its path is known.
        let mut paths = self.lock();
        // SAFETY: a valid inotify descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        paths.by_wd.insert(wd, (dir.to_path_buf(), top));
        paths.by_path.insert(dir.to_path_buf(), wd);
        Ok(())
    }

    /// Drops the watch placed on `dir`, if any (not those below it).
    pub fn unwatch(&self, dir: &Path) {
        let mut paths = self.lock();
        let Some(wd) = paths.by_path.remove(dir) else {
            return;
        };
        // The same directory watched again under another path (a bind mount) keeps its watch.
        if paths.by_wd.get(&wd).is_some_and(|(p, _)| p == dir) {
            paths.by_wd.remove(&wd);
            // SAFETY: a valid inotify descriptor; a watch the kernel dropped gives EINVAL.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
        }
    }

    fn lock(&self) -> MutexGuard<'_, Paths> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Inotify {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_changes(fd: &OwnedFd, paths: &Mutex<Paths>, stop: &StopFd, back: &impl Fn(Change)) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stop.wait(fd.as_raw_fd(), libc::POLLIN) {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => return back(Change::Failed(e)),
        }
        // SAFETY: reads into a valid buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return back(Change::Failed(e));
        }
        let data = buf.get(..n as usize).unwrap_or_default();
        let mut changes = Vec::new();
        {
            let mut paths = paths.lock().unwrap_or_else(|e| e.into_inner());
            for (wd, mask, name) in events(data) {
                if let Some(c) = change(&mut paths, wd, mask, name) {
                    changes.push(c);
                }
            }
        }
        changes.into_iter().for_each(back);
    }
}

/// What one event means for the source, if anything.
fn change(paths: &mut Paths, wd: i32, mask: u32, name: &OsStr) -> Option<Change> {
    if mask & libc::IN_Q_OVERFLOW != 0 {
        return Some(Change::Overflow);
    }
    if mask & libc::IN_IGNORED != 0 {
        // The kernel dropped the watch (its directory was deleted, or its file system
        // unmounted). A later watch may get the number again.
        if let Some((p, _)) = paths.by_wd.remove(&wd) {
            if paths.by_path.get(&p) == Some(&wd) {
                paths.by_path.remove(&p);
            }
        }
        return None;
    }
    // A watch already dropped (events queued before `unwatch`): not the source's any more.
    let (dir, top) = paths.by_wd.get(&wd)?;
    let is_dir = mask & libc::IN_ISDIR != 0;
    if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
        // Below a top, the parent's own event said it already, with the right path.
        return top.then(|| Change::Left {
            path: dir.clone(),
            dir: true,
        });
    }
    let path = dir.join(name);
    if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
        Some(Change::Arrived { path, dir: is_dir })
    } else if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
        Some(Change::Left { path, dir: is_dir })
    } else if mask & libc::IN_CLOSE_WRITE != 0 {
        Some(Change::Written(path))
    } else if mask & libc::IN_ATTRIB != 0 && !is_dir && !name.is_empty() {
        // (Not a directory's, nor the watched directory's own: neither is an image.)
        Some(Change::Attrib(path))
    } else {
        None
    }
}

/// A new inotify instance, with no watch.
pub fn init() -> std::io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags only.
    let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Size of `struct inotify_event` without its name.
const EVENT_HEADER: usize = std::mem::size_of::<libc::inotify_event>();

/// The (wd, mask, name) of each event in a buffer `read` filled.
pub fn events(mut data: &[u8]) -> impl Iterator<Item = (i32, u32, &OsStr)> {
    std::iter::from_fn(move || {
        let head = data.get(..EVENT_HEADER)?;
        let int = |at: usize| -> [u8; 4] {
            let mut b = [0u8; 4];
            b.copy_from_slice(head.get(at..at + 4).unwrap_or(&[0; 4]));
            b
        };
        let wd = i32::from_ne_bytes(int(0));
        let mask = u32::from_ne_bytes(int(4));
        let len = u32::from_ne_bytes(int(12)) as usize;
        let name = data.get(EVENT_HEADER..EVENT_HEADER + len)?;
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        data = data.get(EVENT_HEADER + len..).unwrap_or_default();
        Some((wd, mask, OsStr::from_bytes(name)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc;
    use std::time::Duration;

    fn next(rx: &mpsc::Receiver<Change>) -> String {
        match rx.recv_timeout(Duration::from_secs(5)).expect("a change") {
            Change::Arrived { path, dir } => format!("arrived {} {dir}", name(&path)),
            Change::Written(path) => format!("written {}", name(&path)),
            Change::Attrib(path) => format!("attrib {}", name(&path)),
            Change::Left { path, dir } => format!("left {} {dir}", name(&path)),
            other => format!("{other:?}"),
        }
    }

    fn name(p: &Path) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn entries_made_written_and_gone_are_reported_and_reads_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("drop");
        std::fs::create_dir_all(top.join("sub")).unwrap();
        let (tx, rx) = mpsc::channel();
        let w = Inotify::start(move |c| {
            let _ = tx.send(c);
        })
        .unwrap();
        w.watch(&top, true).unwrap();
        w.watch(&top.join("sub"), false).unwrap();

        let mut f = std::fs::File::create(top.join("a.iso")).unwrap();
        assert_eq!(next(&rx), "arrived a.iso false");
        for _ in 0..10 {
            f.write_all(b"data").unwrap();
        }
        drop(f);
        assert_eq!(next(&rx), "written a.iso");
        // Opened and read: nothing. Made readable by all: said.
        std::fs::read(top.join("a.iso")).unwrap();
        std::fs::set_permissions(top.join("a.iso"), PermissionsExt::from_mode(0o644)).unwrap();
        assert_eq!(next(&rx), "attrib a.iso");
        std::fs::rename(top.join("a.iso"), top.join("sub/b.iso")).unwrap();
        assert_eq!(next(&rx), "left a.iso false");
        assert_eq!(next(&rx), "arrived b.iso false");
        std::fs::create_dir(top.join("new")).unwrap();
        assert_eq!(next(&rx), "arrived new true");

        // A directory moved away and unwatched reports nothing more.
        std::fs::rename(top.join("sub"), tmp.path().join("away")).unwrap();
        assert_eq!(next(&rx), "left sub true");
        w.unwatch(&top.join("sub"));
        std::fs::write(tmp.path().join("away/c.iso"), b"x").unwrap();

        // The top itself going is reported once, as its own path.
        std::fs::remove_dir(top.join("new")).unwrap();
        assert_eq!(next(&rx), "left new true");
        std::fs::rename(&top, tmp.path().join("drop.old")).unwrap();
        assert_eq!(next(&rx), "left drop true");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        // Below a top, a symlink to a directory is not watched.
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("link")).unwrap();
        let e = w.watch(&tmp.path().join("link"), false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        w.watch(&tmp.path().join("link"), true).unwrap();
    }
}
