//! Runs a blocking step (reading an image's descriptors, mount(2)) on a helper
//! thread and waits for it a moment ([`WAIT`]). Almost always it answers within that; a
//! medium whose reads hang (a scratched disc the drive retries on for minutes, an image on a
//! stalled NFS server) does not, and must not hold up every other medium meanwhile. Then the
//! step goes on in the background: the caller keeps the [`Late`] receiver, this helper leaves
//! that thread to it and starts another for the next step, and [`Helper::wake`] fires once the
//! late step has answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How long a publish waits for its blocking step before going on with other work. Opening an
/// image or mounting one takes a millisecond or so.
pub const WAIT: Duration = Duration::from_millis(500);

type Job = Box<dyn FnOnce() + Send>;

/// See the module documentation.
pub struct Helper {
    /// The thread that takes the next step, while it is not held by a late one.
    thread: Option<Sender<Job>>,
    wake: Arc<Notify>,
    /// Called when a late step has answered.
    on_late: Arc<dyn Fn() + Send + Sync>,
}

/// The outcome of a step.
pub enum Ran<T> {
    /// It answered within [`WAIT`].
    Done(T),
    /// It goes on in the background; its outcome comes here (see [`Late::answer`]).
    Late(Late<T>),
}

/// A step still running in the background.
pub struct Late<T>(Receiver<T>);

impl<T> Late<T> {
    /// Its outcome, once there is one: `Some(Err)` if its thread ended without one.
    pub fn answer(&self) -> Option<Result<T, String>> {
        match self.0.try_recv() {
            Ok(v) => Some(Ok(v)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(ENDED.to_owned())),
        }
    }
}

/// Takes out of `pending` the entries whose late step (`late` of the entry) has answered,
/// each with its answer.
pub fn take_answered<K: Clone + Eq + std::hash::Hash, V, T>(
    pending: &mut std::collections::HashMap<K, V>,
    late: impl Fn(&V) -> &Late<T>,
) -> Vec<(K, V, Result<T, String>)> {
    let answered: Vec<(K, Result<T, String>)> = pending
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), late(v).answer()?)))
        .collect();
    answered
        .into_iter()
        .filter_map(|(k, answer)| {
            let v = pending.remove(&k)?;
            Some((k, v, answer))
        })
        .collect()
}

/// Why a step has no outcome.
pub const ENDED: &str = "the thread running it ended without an answer";

impl Default for Helper {
    /// Late steps wake [`Helper::wake`].
    fn default() -> Self {
        let wake = Arc::new(Notify::new());
        let notify = wake.clone();
        Helper {
            thread: None,
            wake,
            on_late: Arc::new(move || notify.notify_one()),
        }
    }
}

impl Helper {
    /// Late steps call `on_late` once they have answered (from the step's thread).
    pub fn calling(on_late: impl Fn() + Send + Sync + 'static) -> Helper {
        Helper {
            on_late: Arc::new(on_late),
            ..Helper::default()
        }
    }

    /// Fires (a permit is kept) when a late step has answered.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs `step` on the helper thread and waits for it at most [`WAIT`]. `Err` when no
    /// thread could run it or its thread ended without an answer.
    pub fn run<T: Send + 'static>(
        &mut self,
        step: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Ran<T>, String> {
        let (tx, rx) = mpsc::channel();
        let late = Arc::new(AtomicBool::new(false));
        let job: Job = {
            let (late, on_late) = (late.clone(), self.on_late.clone());
            Box::new(move || {
                let _ = tx.send(step());
                // Sent first: a step marked late after this finds its outcome waiting.
                if late.load(Ordering::SeqCst) {
                    on_late();
                }
            })
        };
        self.start(job)?;
        match rx.recv_timeout(WAIT) {
            Ok(v) => Ok(Ran::Done(v)),
            Err(RecvTimeoutError::Timeout) => {
                late.store(true, Ordering::SeqCst);
                match rx.try_recv() {
                    Ok(v) => Ok(Ran::Done(v)),
                    Err(_) => {
                        // That thread is the late step's now: the next step starts another.
                        self.thread = None;
                        Ok(Ran::Late(Late(rx)))
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.thread = None;
                Err(ENDED.to_owned())
            }
        }
    }

    /// Hands `job` to the helper thread, starting one if there is none.
    fn start(&mut self, job: Job) -> Result<(), String> {
        let job = match &self.thread {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("isomgr-publish".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(|e| format!("starting a thread to run it: {e}"))?;
        tx.send(job).map_err(|_| ENDED.to_owned())?;
        self.thread = Some(tx);
        Ok(())
    }
}

/// A reader of a file that never waits for a disc or a server: each read takes only what is in
/// the page cache (`RWF_NOWAIT`). A read that would have to wait fails (`WouldBlock`), as does
/// one on a file system that cannot tell (FUSE, most network file systems), and is remembered:
/// what was worked out from such a reader counts only if no read failed (see [`from_cache`]).
pub struct NoWait<'a> {
    file: &'a std::fs::File,
    failed: AtomicBool,
}

impl crate::iso9660::source::ReadAt for NoWait<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = libc::off_t::try_from(offset)
            .ok()
            .and_then(|at| read_nowait(self.file, buf, at));
        n.ok_or_else(|| {
            self.failed.store(true, Ordering::Relaxed);
            std::io::ErrorKind::WouldBlock.into()
        })
    }

    fn size(&self) -> std::io::Result<u64> {
        crate::iso9660::source::ReadAt::size(self.file)
    }
}

/// Runs `work` here and now over `file` read from the page cache only; `None` when it needed
/// a read that could wait (or failed), for it to be done again with plain reads, off the
/// caller's thread. The usual case (descriptors a source has just read, an image file copied in
/// a moment ago) costs no thread hop and no read twice.
pub fn from_cache<T>(file: &std::fs::File, work: impl FnOnce(&NoWait) -> T) -> Option<T> {
    let reader = NoWait {
        file,
        failed: AtomicBool::new(false),
    };
    let out = work(&reader);
    (!reader.failed.load(Ordering::Relaxed)).then_some(out)
}

/// Fills `buf` from `file` at `at` if those bytes are all in the page cache (one read with
/// `RWF_NOWAIT`, which cannot wait for a disc or a server). False where they are not, where
/// the file system cannot tell (FUSE, most network file systems), or where the read fails.
pub fn read_cached(file: &std::fs::File, buf: &mut [u8], at: libc::off_t) -> bool {
    read_nowait(file, buf, at) == Some(buf.len())
}

/// One read of `file` at `at` with `RWF_NOWAIT`: the bytes read (fewer where the rest is not
/// in the page cache), or `None` where none could be read without waiting or the read failed.
fn read_nowait(file: &std::fs::File, buf: &mut [u8], at: libc::off_t) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over the whole of `buf`, for the duration of the call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
    usize::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_step_answers_in_line_and_a_slow_one_later_without_holding_up_the_next() {
        let mut h = Helper::default();
        assert!(matches!(h.run(|| 1), Ok(Ran::Done(1))));
        let (go, gate) = mpsc::channel::<()>();
        let Ok(Ran::Late(late)) = h.run(move || {
            let _ = gate.recv();
            2
        }) else {
            panic!("a step that waits is late");
        };
        assert!(late.answer().is_none());
        // The next step runs on another thread, at once.
        assert!(matches!(h.run(|| 3), Ok(Ran::Done(3))));
        let wake = h.wake();
        go.send(()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), wake.notified())
                .await
                .expect("woken once the late step answered");
        });
        assert_eq!(late.answer(), Some(Ok(2)));
    }

    #[test]
    fn work_from_the_page_cache_counts_only_when_no_read_had_to_wait() {
        use crate::iso9660::source::{read_full, ReadAt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 200_000]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // Just written: in the page cache, past the end included.
        let got = from_cache(&f, |r| {
            let mut buf = vec![0u8; 8192];
            let n = read_full(r, &mut buf, 32768).unwrap();
            let past = read_full(r, &mut buf, 1 << 30).unwrap();
            (n, buf[0], past, r.size().unwrap())
        });
        assert_eq!(got, Some((8192, 7, 0, 200_000)));
        // Dropped from the page cache (not possible on tmpfs): the read fails, and so does the
        // whole.
        let tmpfs = crate::source::fstype::statfs_type(dir.path()).ok() == Some(0x0102_1994);
        // SAFETY: fdatasync and posix_fadvise on a descriptor this File owns.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::fdatasync(f.as_raw_fd());
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
        let got = from_cache(&f, |r| {
            let mut buf = vec![0u8; 8192];
            // An error the work swallows still makes it not count.
            read_full(r, &mut buf, 65536).is_err()
        });
        if !tmpfs {
            assert_eq!(got, None);
        }
        // A file system that cannot tell: FUSE or a pipe, here a pipe.
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into the array given.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the read end, owned by nobody else; the write end is closed at once.
        let pipe = unsafe {
            use std::os::fd::FromRawFd;
            libc::close(fds[1]);
            std::fs::File::from_raw_fd(fds[0])
        };
        assert_eq!(
            from_cache(&pipe, |r| r.read_at(&mut [0u8; 16], 0).is_ok()),
            None
        );
    }

    #[test]
    fn a_step_that_panics_is_an_error_not_a_hang() {
        let mut h = Helper::default();
        let r: Result<Ran<u8>, String> = h.run(|| panic!("boom"));
        assert_eq!(r.err().as_deref(), Some(ENDED));
        assert!(matches!(h.run(|| 4), Ok(Ran::Done(4))));
    }
}
