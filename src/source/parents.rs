//! Watches the parents of the watched directories for one thing only: a watched directory made
//! (or moved) there again after it went.
//!
//! A watch like those of the watched trees (see `inotify.rs`) also takes files closed after
//! writing and entries deleted, so on a parent such as /srv or a home directory every log or
//! state file written beside the watched directory (shell history, a log rotation) would wake
//! isomgr. This inotify instance asks for directory entries appearing (`IN_CREATE`,
//! `IN_MOVED_TO`) and nothing else.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::sys::StopFd;

/// A running parent watch; stopped on drop.
pub struct ParentWatch {
    stop: Arc<StopFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ParentWatch {
    /// Watches the parent of each of `dirs`; `back(dir)` is called on the watch's thread when
    /// one of `dirs` appears in its parent. Parents that cannot be watched are logged and left
    /// out (the directory is then not noticed coming back until a rescan).
    pub fn start(
        dirs: &[PathBuf],
        back: impl Fn(PathBuf) + Send + 'static,
    ) -> std::io::Result<ParentWatch> {
        let fd = super::inotify::init()?;
        let mut by_wd: HashMap<i32, (PathBuf, Vec<PathBuf>)> = HashMap::new();
        for dir in dirs {
            let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
                continue;
            };
            let Ok(c) = CString::new(parent.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: a valid inotify descriptor and a NUL-terminated path.
            let wd = unsafe {
                libc::inotify_add_watch(
                    fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ONLYDIR,
                )
            };
            if wd < 0 {
                let e = std::io::Error::last_os_error();
                tracing::warn!(dir = %dir.display(), parent = %parent.display(), error = %e, "cannot watch the parent; the directory is not followed if it is made again");
                continue;
            }
            let entry = by_wd
                .entry(wd)
                .or_insert_with(|| (parent.to_path_buf(), Vec::new()));
            entry.1.push(dir.clone());
        }
        let stop = Arc::new(StopFd::new()?);
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("isomgr-parents".into())
                .spawn(move || read_events(&fd, &stop, &by_wd, &back))?
        };
        Ok(ParentWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ParentWatch {
    // (Woken through the eventfd: removing the watches would wake a blocked read only where
    // there is a watch left to remove. With none, a parent that could not be watched or that
    // was deleted, stopping hung for good, and with it the watcher's stop and every restart
    // of this watch after a mount.)
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_events(
    fd: &OwnedFd,
    stop: &StopFd,
    by_wd: &HashMap<i32, (PathBuf, Vec<PathBuf>)>,
    back: &impl Fn(PathBuf),
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stop.wait(fd.as_raw_fd(), libc::POLLIN) {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "poll(2) on the parent directories' inotify events");
                return;
            }
        }
        // SAFETY: reads into a valid buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "reading the parent directories' inotify events");
            return;
        }
        let data = buf.get(..n as usize).unwrap_or_default();
        for (wd, mask, name) in super::inotify::events(data) {
            if mask & libc::IN_ISDIR == 0 || mask & libc::IN_Q_OVERFLOW != 0 {
                continue;
            }
            let Some((parent, dirs)) = by_wd.get(&wd) else {
                continue;
            };
            let path = parent.join(name);
            if dirs.contains(&path) {
                back(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_watched_directory_made_again_is_reported_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("drop");
        let (tx, rx) = mpsc::channel();
        let w = ParentWatch::start(std::slice::from_ref(&dir), move |p| {
            let _ = tx.send(p);
        })
        .unwrap();
        // Files and other directories beside it are none of its business.
        std::fs::write(tmp.path().join("state.json"), b"{}").unwrap();
        std::fs::create_dir(tmp.path().join("other")).unwrap();
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), dir);
        // Moved away and back.
        std::fs::rename(&dir, tmp.path().join("away")).unwrap();
        std::fs::rename(tmp.path().join("away"), &dir).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), dir);
        drop(w);
        assert!(rx.try_recv().is_err(), "nothing else was reported");
    }

    /// With no watch in place (the parent cannot be watched: missing, or inotify's limit),
    /// stopping still returns: it once waited for an event that never came.
    #[test]
    fn a_watch_that_holds_no_watch_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("no/such/parent/drop");
        let w = ParentWatch::start(std::slice::from_ref(&dir), |_| {}).unwrap();
        // Its thread is waiting for events by now.
        std::thread::sleep(Duration::from_millis(200));
        let (done, stopped) = mpsc::channel();
        std::thread::spawn(move || {
            drop(w);
            let _ = done.send(());
        });
        stopped
            .recv_timeout(Duration::from_secs(5))
            .expect("the watch stopped within 5 s");
    }
}
