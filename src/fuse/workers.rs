//! Threads that do the image I/O of the FUSE driver (file reads, directory listings), so the
//! session thread only looks things up in the table and goes on taking requests.
//!
//! Work is queued per medium, and each medium's queue is worked by threads of its own, at most
//! [`PER_MEDIUM`] at a time. A medium whose reads hang (a scratched disc the drive retries on
//! for minutes, an image on a stalled NFS server) so ties up only its own threads: the other
//! media keep being read and listed. A thread started for a medium lingers a moment once its
//! queue is empty (the kernel sends a file's read-ahead as a run of requests), then ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::warn;

use super::adapter::lock;

/// Threads working one medium's queue at most: the kernel keeps several read-ahead requests of
/// a file in flight, and two threads keep one stream of reads busy (measured by the FUSE read
/// benchmark).
pub const PER_MEDIUM: usize = 2;
/// How long a thread waits for more of its medium's work before it ends.
const LINGER: Duration = Duration::from_secs(2);

/// One piece of work; it gets the thread's reusable buffer.
pub type Job = Box<dyn FnOnce(&mut Vec<u8>) + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads working this queue.
    running: usize,
    /// Of those, how many wait for work.
    idle: usize,
    more: Arc<Condvar>,
}

#[derive(Default)]
struct Inner {
    queues: Mutex<HashMap<usize, Queue>>,
}

/// The per-medium queues. Cloning shares them.
#[derive(Clone, Default)]
pub struct Workers {
    inner: Arc<Inner>,
}

impl Workers {
    /// Queues `job` for the medium `key` (any value that tells media apart, such as the address
    /// of its image). Gives the job back if no thread could be started for it: the caller then
    /// runs it itself.
    pub fn submit(&self, key: usize, job: Job) -> Result<(), Job> {
        let mut queues = lock(&self.inner.queues);
        let q = queues.entry(key).or_default();
        q.jobs.push_back(job);
        if q.idle > 0 {
            q.more.notify_one();
            if q.jobs.len() <= q.idle {
                return Ok(());
            }
        }
        if q.running >= PER_MEDIUM {
            return Ok(());
        }
        let inner = self.inner.clone();
        let more = q.more.clone();
        let started = std::thread::Builder::new()
            .name("isomgr-read".into())
            .spawn(move || work(&inner, key, &more));
        match started {
            Ok(_) => {
                q.running += 1;
                Ok(())
            }
            Err(e) if q.running == 0 => {
                warn!(error = %e, "could not start a thread to read an image; reading on the session thread");
                let job = q.jobs.pop_back();
                if q.jobs.is_empty() {
                    queues.remove(&key);
                }
                // The job pushed above is the last one.
                job.map_or(Ok(()), Err)
            }
            // A thread of this medium's is working its queue already.
            Err(_) => Ok(()),
        }
    }

    /// Threads working media's queues now.
    #[cfg(test)]
    fn threads(&self) -> usize {
        lock(&self.inner.queues).values().map(|q| q.running).sum()
    }
}

/// Works the queue of medium `key` until it has stayed empty for [`LINGER`].
fn work(inner: &Inner, key: usize, more: &Condvar) {
    let mut buf = Vec::new();
    let mut queues = lock(&inner.queues);
    loop {
        let Some(q) = queues.get_mut(&key) else {
            return;
        };
        if let Some(job) = q.jobs.pop_front() {
            drop(queues);
            job(&mut buf);
            queues = lock(&inner.queues);
            continue;
        }
        q.idle += 1;
        let (guard, waited) = more
            .wait_timeout(queues, LINGER)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        queues = guard;
        let Some(q) = queues.get_mut(&key) else {
            return;
        };
        q.idle -= 1;
        if waited.timed_out() && q.jobs.is_empty() {
            q.running -= 1;
            if q.running == 0 {
                queues.remove(&key);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_medium_whose_work_hangs_holds_up_no_other() {
        let workers = Workers::default();
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        // Medium 1: more hanging jobs than it has threads.
        for _ in 0..PER_MEDIUM + 2 {
            let held = held.clone();
            let job: Job = Box::new(move |_| {
                let _ = lock(&held).recv();
            });
            assert!(workers.submit(1, job).is_ok());
        }
        assert_eq!(workers.threads(), PER_MEDIUM);
        // Medium 2 is worked at once, by threads of its own.
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
        assert!(workers.threads() <= 2 * PER_MEDIUM);
        for _ in 0..PER_MEDIUM + 2 {
            release.send(()).unwrap();
        }
    }

    #[test]
    fn threads_end_once_their_queue_stays_empty() {
        let workers = Workers::default();
        let (done, finished) = mpsc::channel();
        let job: Job = Box::new(move |_| done.send(()).unwrap());
        assert!(workers.submit(7, job).is_ok());
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        let start = std::time::Instant::now();
        while workers.threads() > 0 {
            assert!(start.elapsed() < LINGER * 5, "a thread outlived its queue");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(lock(&workers.inner.queues).is_empty());
    }
}
