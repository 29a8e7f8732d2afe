//! Threads that do the image I/O of the FUSE driver (file reads, directory listings), so the
//! session thread only looks things up in the table and goes on taking requests.
//!
//! Work is queued per medium, and one medium's work runs on at most [`PER_MEDIUM`] threads at
//! a time. A medium whose reads hang (a scratched disc the drive retries on for minutes, an
//! image on a stalled NFS server) so ties up at most that many threads; while every thread is
//! busy and other media have work, another thread starts (up to [`MAX_THREADS`]), so the other
//! media keep being read and listed. Threads stay once started, waiting without a timer (an
//! idle daemon wakes for nothing); those beyond the first [`KEPT`] give their read buffer back
//! while they wait.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use tracing::warn;

use super::adapter::lock;

/// Threads one medium's work runs on at most: the kernel keeps several read-ahead requests of
/// a file in flight, and two threads keep one stream of reads busy (measured by the FUSE read
/// benchmark).
pub const PER_MEDIUM: usize = 2;
/// Threads that keep their read buffer between jobs: enough for one stream of reads.
const KEPT: usize = 2;
/// Threads at most: as many media whose reads hang as half of this leave none for the others.
const MAX_THREADS: usize = 64;

/// One piece of work; it gets the thread's reusable buffer.
pub type Job = Box<dyn FnOnce(&mut Vec<u8>) + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads running this medium's work.
    running: usize,
    /// Listed in [`State::ready`].
    ready: bool,
}

#[derive(Default)]
struct State {
    queues: HashMap<usize, Queue>,
    /// Media with work and fewer than [`PER_MEDIUM`] threads on it, in turn.
    ready: VecDeque<usize>,
    threads: usize,
    /// Threads started that have not looked for work yet.
    starting: usize,
    /// Threads waiting for work, and how many of those were woken already.
    idle: usize,
    woken: usize,
}

impl State {
    /// Lists medium `key` as ready if it has work and room for another thread.
    fn offer(&mut self, key: usize) {
        if let Some(q) = self.queues.get_mut(&key) {
            if !q.ready && !q.jobs.is_empty() && q.running < PER_MEDIUM {
                q.ready = true;
                self.ready.push_back(key);
            }
        }
    }

    /// The next job to run and its medium, counted as running.
    fn take(&mut self) -> Option<(usize, Job)> {
        while let Some(key) = self.ready.pop_front() {
            let Some(q) = self.queues.get_mut(&key) else {
                continue;
            };
            q.ready = false;
            let Some(job) = q.jobs.pop_front() else {
                continue;
            };
            q.running += 1;
            self.offer(key);
            return Some((key, job));
        }
        None
    }

    /// A job of medium `key` has ended.
    fn done(&mut self, key: usize) {
        let Some(q) = self.queues.get_mut(&key) else {
            return;
        };
        q.running -= 1;
        if q.jobs.is_empty() && q.running == 0 {
            self.queues.remove(&key);
        } else {
            self.offer(key);
        }
    }
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    more: Condvar,
}

/// The queues and their threads. Cloning shares them.
#[derive(Clone, Default)]
pub struct Workers {
    inner: Arc<Inner>,
}

impl Workers {
    /// Queues `job` for the medium `key` (any value that tells media apart, such as the address
    /// of its image). Gives the job back if no thread could be started for it: the caller then
    /// runs it itself.
    pub fn submit(&self, key: usize, job: Job) -> Result<(), Job> {
        let mut st = lock(&self.inner.state);
        st.queues.entry(key).or_default().jobs.push_back(job);
        st.offer(key);
        match staff(&mut st, &self.inner) {
            Ok(()) => Ok(()),
            Err(e) if st.threads == 0 => {
                warn!(error = %e, "could not start a thread to read an image; reading on the session thread");
                let job = st.queues.get_mut(&key).and_then(|q| q.jobs.pop_back());
                if st.queues.get(&key).is_some_and(|q| q.jobs.is_empty()) {
                    st.queues.remove(&key);
                    st.ready.retain(|k| *k != key);
                }
                // The job pushed above is the last one.
                job.map_or(Ok(()), Err)
            }
            // The threads there are take it in turn.
            Err(_) => Ok(()),
        }
    }

    /// Threads now.
    #[cfg(test)]
    fn threads(&self) -> usize {
        lock(&self.inner.state).threads
    }
}

/// Sees that each medium listed as ready has a thread coming for it: an idle one woken, or a
/// new one started (up to [`MAX_THREADS`]).
fn staff(st: &mut State, inner: &Arc<Inner>) -> std::io::Result<()> {
    loop {
        // Threads already on their way to look for work.
        let coming = st.woken + st.starting;
        if st.ready.len() <= coming {
            return Ok(());
        }
        if st.idle > st.woken {
            st.woken += 1;
            inner.more.notify_one();
            continue;
        }
        if st.threads >= MAX_THREADS {
            return Ok(());
        }
        let for_thread = inner.clone();
        std::thread::Builder::new()
            .name("isomgr-read".into())
            .spawn(move || work(&for_thread))?;
        st.threads += 1;
        st.starting += 1;
    }
}

/// Runs ready work; between jobs it waits without a timer (an idle daemon wakes for nothing).
/// A thread beyond the first [`KEPT`] gives its buffer back whenever it waits.
fn work(inner: &Arc<Inner>) {
    let mut buf = Vec::new();
    let mut st = lock(&inner.state);
    st.starting -= 1;
    let extra = st.threads > KEPT;
    loop {
        if let Some((key, job)) = st.take() {
            // What is left ready (this medium's second slot, others) gets its own thread.
            let _ = staff(&mut st, inner);
            drop(st);
            job(&mut buf);
            st = lock(&inner.state);
            st.done(key);
            continue;
        }
        if extra {
            buf = Vec::new();
        }
        st.idle += 1;
        st = inner
            .more
            .wait(st)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.idle -= 1;
        st.woken = st.woken.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_medium_whose_work_hangs_holds_up_no_other() {
        let workers = Workers::default();
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        // Two media, each with more hanging jobs than it may have threads.
        for key in [1, 3] {
            for _ in 0..PER_MEDIUM + 2 {
                let held = held.clone();
                let job: Job = Box::new(move |_| {
                    let _ = lock(&held).recv();
                });
                assert!(workers.submit(key, job).is_ok());
            }
        }
        // Medium 2 is worked at once, by threads started for it.
        let (done, finished) = mpsc::channel();
        for i in 0..10 {
            let done = done.clone();
            let job: Job = Box::new(move |buf| {
                buf.push(i);
                done.send(i).unwrap();
            });
            assert!(workers.submit(2, job).is_ok());
        }
        let mut got: Vec<u8> = (0..10)
            .map(|_| finished.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        // The hanging media hold two threads each, no more.
        assert!(workers.threads() <= 3 * PER_MEDIUM, "{}", workers.threads());
        for _ in 0..2 * (PER_MEDIUM + 2) {
            release.send(()).unwrap();
        }
    }

    #[test]
    fn an_idle_thread_is_woken_for_new_work() {
        let workers = Workers::default();
        let (done, finished) = mpsc::channel();
        for round in 0..20 {
            let done = done.clone();
            let job: Job = Box::new(move |_| done.send(round).unwrap());
            assert!(workers.submit(round % 3, job).is_ok());
            assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok(round));
            // Let the thread go idle before the next job comes.
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(workers.threads() <= KEPT);
    }

    #[test]
    fn threads_started_while_all_were_busy_take_later_work() {
        let workers = Workers::default();
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let (done, finished) = mpsc::channel();
        for key in 0..4 {
            let (held, done) = (held.clone(), done.clone());
            let job: Job = Box::new(move |_| {
                let _ = lock(&held).recv();
                done.send(()).unwrap();
            });
            assert!(workers.submit(key, job).is_ok());
        }
        // One thread per medium while all are busy.
        assert_eq!(workers.threads(), 4);
        for _ in 0..4 {
            release.send(()).unwrap();
            finished.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        // Later work runs on the threads there are.
        for key in 0..8 {
            let done = done.clone();
            let job: Job = Box::new(move |_| done.send(()).unwrap());
            assert!(workers.submit(key, job).is_ok());
            finished.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(workers.threads(), 4);
        let start = std::time::Instant::now();
        while !lock(&workers.inner.state).queues.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "queues left");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
