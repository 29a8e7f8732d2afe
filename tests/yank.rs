//! Yank under load: 16 threads stream files of a served medium while its image file is deleted
//! from the watched dir, cycle after cycle, against one `isomgr watch --driver fuse`.
//!
//! Each reader must finish byte-exact or fail with EIO or an early EOF within [`FINISH`] of the
//! delete (a reader that is still blocked then is stuck); never read wrong bytes. After the
//! readers close, nothing of the medium is left: not its name in the root, not the watcher's
//! descriptor of the deleted image, not a node in its table (statfs), not a mount under the
//! test's dir. The watcher stays up,
//! serves a new image after the last cycle, and its RSS drifts less than [`MAX_DRIFT`] from
//! cycle 10 (half-way in a short run) to the end.
//!
//! 100 cycles with ISOMGR_FULL=1, 10 otherwise. Prints one line of figures. Needs root and
//! /dev/fuse; without them it says so and skips, or fails under CI=true.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use common::watcher::{self, statfs_files, wait_for, Env, Watcher};

const READERS: usize = 16;
/// Each reader's file.
const FILE_SIZE: usize = 2 << 20;
/// One read.
const CHUNK: usize = 32 << 10;
/// Between two reads: a reader needs about 64 x PACE for its file, so the delete comes while
/// every reader is mid-file.
const PACE: Duration = Duration::from_millis(4);
/// From the delete until every reader has finished or failed.
const FINISH: Duration = Duration::from_secs(5);
/// Largest accepted RSS change of the watcher from the baseline cycle to the end.
const MAX_DRIFT: f64 = 0.10;
const LABEL: &str = "YANK";

fn cycles() -> usize {
    if std::env::var("ISOMGR_FULL").is_ok_and(|v| v == "1") {
        100
    } else {
        10
    }
}

/// How one reader ended.
enum Outcome {
    /// Read the whole file, every byte as in the source.
    Complete,
    /// A read failed with EIO.
    Eio,
    /// End of file before the file's size.
    ShortEof(usize),
    /// Bytes that differ from the source, at this offset: always a failure.
    Mismatch(usize),
    /// Anything else (open failed, another errno): always a failure.
    Failed(String),
}

/// Opens `path`, reads one chunk, meets the others at `barrier` (the delete follows), then
/// streams the rest at [`PACE`], comparing with `want`. With `random`, read-ahead is off
/// (POSIX_FADV_RANDOM), so every read is a request to the watcher.
fn stream(path: &Path, want: &[u8], random: bool, barrier: &Barrier) -> Outcome {
    let mut buf = vec![0u8; CHUNK];
    let first = File::open(path).and_then(|mut f| {
        if random {
            // SAFETY: advice on an open descriptor; no memory is touched.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        }
        let n = f.read(&mut buf)?;
        Ok((f, n))
    });
    barrier.wait();
    let (mut f, mut n) = match first {
        Ok(x) => x,
        Err(e) => return Outcome::Failed(format!("open or first read: {e}")),
    };
    let mut pos = 0;
    loop {
        if n == 0 {
            return if pos == want.len() {
                Outcome::Complete
            } else {
                Outcome::ShortEof(pos)
            };
        }
        if want.get(pos..pos + n) != buf.get(..n) {
            return Outcome::Mismatch(pos);
        }
        pos += n;
        std::thread::sleep(PACE);
        n = loop {
            match f.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return Outcome::Eio,
                Err(e) => return Outcome::Failed(format!("read at {pos}: {e}")),
            }
        };
    }
}

/// Counts of reader outcomes over all cycles.
#[derive(Default, Debug)]
struct Tally {
    complete: usize,
    eio: usize,
    short_eof: usize,
    /// Time from the delete to the last reader's end, worst cycle.
    max_finish: Duration,
}

#[test]
fn readers_of_a_yanked_image_end_in_time_and_nothing_is_left() {
    if !watcher::can_run("yank") {
        return;
    }
    let cycles = cycles();
    let baseline_cycle = 10.min(cycles / 2);
    let env = Env::new("isomgr-yank-");
    let mut w = Watcher::start(&env);
    let mounts = watcher::mounts_under(&env.base);

    // One image of 16 files, each with its own bytes; a fresh copy of it is dropped per cycle.
    let src = env.scratch.join("src");
    fs::create_dir(&src).unwrap();
    let files: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..READERS)
            .map(|i| watcher::noise(FILE_SIZE, 0x9e37_79b9 + i as u64))
            .collect(),
    );
    for (i, data) in files.iter().enumerate() {
        fs::write(src.join(format!("f{i:02}.bin")), data).unwrap();
    }
    let master = env.scratch.join("master.iso");
    watcher::mkiso(&src, &master, LABEL);

    let mut tally = Tally::default();
    let mut rss_base = 0;
    for cycle in 1..=cycles {
        let file = format!("yank-{cycle}.iso");
        let staged = env.scratch.join(&file);
        fs::copy(&master, &staged).unwrap();
        let image = env.drop.join(&file);
        fs::rename(&staged, &image).unwrap();
        env.wait_names(&[LABEL]);

        let barrier = Arc::new(Barrier::new(READERS + 1));
        let (tx, rx) = mpsc::channel();
        let threads: Vec<_> = (0..READERS)
            .map(|i| {
                let path = env.root.join(LABEL).join(format!("f{i:02}.bin"));
                let (files, barrier, tx) = (files.clone(), barrier.clone(), tx.clone());
                std::thread::Builder::new()
                    .name(format!("reader-{i}"))
                    .spawn(move || {
                        let outcome = stream(&path, &files[i], i % 2 == 1, &barrier);
                        let _ = tx.send((i, outcome, Instant::now()));
                    })
                    .expect("starting a reader")
            })
            .collect();
        drop(tx);
        barrier.wait();
        fs::remove_file(&image).unwrap();
        let deleted = Instant::now();

        // Every reader ends within FINISH of the delete; a missing one is stuck.
        let mut ended = [false; READERS];
        for _ in 0..READERS {
            let left = (deleted + FINISH).saturating_duration_since(Instant::now());
            let (i, outcome, at) = rx.recv_timeout(left).unwrap_or_else(|_| {
                let stuck: Vec<usize> = (0..READERS).filter(|i| !ended[*i]).collect();
                panic!("cycle {cycle}: readers {stuck:?} still blocked {FINISH:?} after the delete")
            });
            ended[i] = true;
            tally.max_finish = tally.max_finish.max(at - deleted);
            match outcome {
                Outcome::Complete => tally.complete += 1,
                Outcome::Eio => tally.eio += 1,
                Outcome::ShortEof(at) => {
                    eprintln!("cycle {cycle}: reader {i}: end of file at {at} of {FILE_SIZE}");
                    tally.short_eof += 1
                }
                Outcome::Mismatch(at) => {
                    panic!("cycle {cycle}: reader {i} read wrong bytes at offset {at}")
                }
                Outcome::Failed(why) => panic!("cycle {cycle}: reader {i}: {why}"),
            }
        }
        for t in threads {
            t.join().expect("a reader panicked");
        }

        // Nothing left once the readers closed.
        env.wait_names(&[]);
        assert!(
            !env.root.join(LABEL).exists(),
            "cycle {cycle}: {LABEL} still reachable"
        );
        wait_for("the watcher to close the deleted image", || {
            let held: Vec<String> = w
                .open_files()
                .into_iter()
                .filter(|t| t.contains(&file))
                .collect();
            if held.is_empty() {
                Ok(())
            } else {
                Err(format!("{held:?}"))
            }
        });
        // statfs counts the watcher's nodes: the kernel forgets the medium's once unused.
        wait_for(
            "the watcher to forget the medium's nodes",
            || match statfs_files(&env.root) {
                0 => Ok(()),
                n => Err(format!("{n} nodes")),
            },
        );
        assert_eq!(
            watcher::mounts_under(&env.base),
            mounts,
            "cycle {cycle}: mounts under the test dir changed"
        );
        assert!(w.alive(), "cycle {cycle}: the watcher died");
        if cycle == baseline_cycle {
            rss_base = w.rss_kib();
        }
    }
    let rss_end = w.rss_kib();

    // Still serving: a new image appears and reads.
    let src2 = env.scratch.join("src2");
    fs::create_dir(&src2).unwrap();
    fs::write(src2.join("hello.txt"), b"after the yanks\n").unwrap();
    let staged = env.scratch.join("after.iso");
    watcher::mkiso(&src2, &staged, "AFTER");
    fs::rename(&staged, env.drop.join("after.iso")).unwrap();
    let hello = wait_for("a new image after the cycles", || {
        fs::read(env.root.join("AFTER/hello.txt")).map_err(|e| e.to_string())
    });
    assert_eq!(hello, b"after the yanks\n");

    let drift = (rss_end as f64 - rss_base as f64) / rss_base as f64;
    println!(
        "yank: cycles={cycles} readers={READERS} file={FILE_SIZE} outcomes complete={} eio={} \
         short_eof={} stuck=0; max finish after delete={:.0} ms; rss cycle {baseline_cycle}={rss_base} \
         KiB end={rss_end} KiB drift={:+.1}%; after each cycle: name, image fd, nodes, mounts gone",
        tally.complete,
        tally.eio,
        tally.short_eof,
        tally.max_finish.as_secs_f64() * 1e3,
        drift * 100.0,
    );
    assert_eq!(
        tally.complete + tally.eio + tally.short_eof,
        cycles * READERS
    );
    assert!(
        drift.abs() < MAX_DRIFT,
        "watcher RSS drifted {:+.1}% ({rss_base} -> {rss_end} KiB)",
        drift * 100.0
    );
    assert!(w.alive(), "the watcher died");
}
