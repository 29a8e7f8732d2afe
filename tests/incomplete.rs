//! Incomplete images under a running watcher: throttled copies into the watched dir, several at
//! once, in every way a copy is made (appended, preallocated with fallocate, sized first with
//! ftruncate or `truncate -s` then filled, filled back to front, appended in separate sessions).
//! Some writers pause longer than any settling time the watcher might use.
//!
//! No image may be taken before its last writer starts closing it: just before that close the
//! test appends a marker line to the watcher's own log (the log file is opened for appending by
//! both, so its order is the order of the writes), and no `image complete` or `mounted` line for
//! that image may come before its marker. Independently, after every chunk the test looks the
//! name up through the mount. Once closed, each image is served within the deadline, once,
//! with its payload byte-exact.
//!
//! What cannot be told apart from a finished copy is not tested here: a file already full size
//! (preallocated or sparse) whose volume descriptors are written, and that nobody holds open
//! for writing, between two separate writing sessions. The watcher takes it on the first close
//! and serves the new content again after the next one.
//!
//! 100 copies with ISOMGR_FULL=1, 10 otherwise, [`PARALLEL`] at a time. Prints one line of
//! figures. Needs root and /dev/fuse; without them it says so and skips, or fails under CI=true.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::watcher::{self, wait_for, Env, Watcher};

/// One write.
const CHUNK: usize = 64 << 10;
/// The file inside each image; the image is about 1 MiB.
const PAYLOAD: usize = 960 << 10;
/// Copies running at once.
const PARALLEL: usize = 4;
/// A writer's pause now and then: longer than any debounce or settling time.
const LONG_PAUSE: Duration = Duration::from_millis(300);

fn copies() -> usize {
    if std::env::var("ISOMGR_FULL").is_ok_and(|v| v == "1") {
        100
    } else {
        10
    }
}

/// How a copy is written.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// Created empty, appended chunk by chunk.
    Append,
    /// posix_fallocate to full size first, then filled.
    Fallocate,
    /// ftruncate to full size (sparse) by the writer, then filled.
    SetLen,
    /// `truncate -s` by another process (which closes it), then opened and filled.
    TruncateTool,
    /// Sparse full size, filled from the last chunk to the first (descriptors last).
    Reverse,
    /// Appended in separate sessions: open, write one chunk, close; the size is short until
    /// the last one.
    Sessions,
}

const WAYS: [Way; 6] = [
    Way::Append,
    Way::Fallocate,
    Way::SetLen,
    Way::TruncateTool,
    Way::Reverse,
    Way::Sessions,
];

/// A small deterministic generator for the writers' pacing.
struct Pace(u64);

impl Pace {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Between two chunks: 1 to 6 ms, and one time in 12 a [`LONG_PAUSE`].
    fn sleep(&mut self) {
        let r = self.next();
        let d = if r % 12 == 0 {
            LONG_PAUSE
        } else {
            Duration::from_millis(1 + r % 6)
        };
        std::thread::sleep(d); // the pace of a slow writer, not a wait
    }
}

/// What the copies saw, summed.
#[derive(Default)]
struct Tally {
    /// The name found through the mount while its copy was still open.
    early_lookups: usize,
    /// Close to served, worst copy.
    max_ready: Duration,
}

/// Appends `line` to the watcher's log in one write.
fn mark(log: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(log)
        .expect("opening the watcher's log");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("writing a marker into the log");
}

/// Writes `data` to `dst` the way `way` says, looking `name` up through the mount after each
/// chunk; the marker goes into the log just before the last writer's close. Returns the
/// number of times the name was found early.
fn copy(env: &Env, data: &[u8], dst: &Path, name: &str, way: Way, pace: &mut Pace) -> usize {
    let len = data.len() as u64;
    let chunks: Vec<(u64, &[u8])> = data
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, c)| ((i * CHUNK) as u64, c))
        .collect();
    let mut early = 0;
    let mut look = || {
        if env.root.join(name).exists() {
            early += 1;
        }
    };
    let marker = format!("TEST closing {}", dst.display());
    if let Way::Sessions = way {
        for (i, (_, c)) in chunks.iter().enumerate() {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dst)
                .unwrap();
            f.write_all(c).unwrap();
            look();
            if i + 1 == chunks.len() {
                mark(&env.log, &marker);
            }
            drop(f);
            pace.sleep();
        }
        return early;
    }
    let f = match way {
        Way::TruncateTool => {
            let st = Command::new("truncate")
                .arg("-s")
                .arg(len.to_string())
                .arg(dst)
                .status()
                .expect("running truncate");
            assert!(st.success(), "truncate -s {len} {}", dst.display());
            pace.sleep();
            OpenOptions::new().write(true).open(dst).unwrap()
        }
        _ => File::create(dst).unwrap(),
    };
    match way {
        Way::Fallocate => {
            // SAFETY: a valid open descriptor.
            let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len as libc::off_t) };
            assert_eq!(rc, 0, "posix_fallocate");
        }
        Way::SetLen | Way::Reverse => f.set_len(len).unwrap(),
        _ => {}
    }
    let order: Vec<&(u64, &[u8])> = match way {
        Way::Reverse => chunks.iter().rev().collect(),
        _ => chunks.iter().collect(),
    };
    for (off, c) in order {
        f.write_all_at(c, *off).unwrap();
        look();
        pace.sleep();
    }
    look();
    mark(&env.log, &marker);
    drop(f);
    early
}

#[test]
fn images_are_served_only_once_their_copy_is_complete() {
    if !watcher::can_run("incomplete") || !common::have_tool("truncate") {
        return;
    }
    let n = copies();
    let env = Env::new("isomgr-incomplete-");
    let mut w = Watcher::start(&env);

    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    let ways_used = Mutex::new(std::collections::BTreeSet::new());
    std::thread::scope(|s| {
        for t in 0..PARALLEL {
            let (env, next, tally, ways_used) = (&env, &next, &tally, &ways_used);
            s.spawn(move || {
                let mut pace = Pace(0x2545_f491 + t as u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let way = WAYS[i % WAYS.len()];
                    ways_used.lock().unwrap().insert(format!("{way:?}"));
                    let name = format!("INC_{i:03}");
                    let src = env.scratch.join(format!("src-{i:03}"));
                    fs::create_dir(&src).unwrap();
                    let payload = watcher::noise(PAYLOAD, 0x51ed + i as u64);
                    fs::write(src.join("payload.bin"), &payload).unwrap();
                    let image = env.scratch.join(format!("inc-{i:03}.iso"));
                    watcher::mkiso(&src, &image, &name);
                    let data = fs::read(&image).unwrap();
                    let dst = env.drop.join(format!("inc-{i:03}.iso"));

                    let early = copy(env, &data, &dst, &name, way, &mut pace);
                    let closed = Instant::now();
                    let inside = env.root.join(&name).join("payload.bin");
                    let got = wait_for(&format!("{name} ({way:?}) served after close"), || {
                        fs::read(&inside).map_err(|e| e.to_string())
                    });
                    let ready = closed.elapsed();
                    assert!(
                        got == payload,
                        "{name} ({way:?}): the served payload differs from the copy's"
                    );
                    let mut t = tally.lock().unwrap();
                    t.early_lookups += early;
                    t.max_ready = t.max_ready.max(ready);
                }
            });
        }
    });
    assert!(w.alive(), "the watcher exited:\n{}", env.log_text());

    // The log: for each copy, nothing taken before its marker, and served exactly once.
    let log = env.log_text();
    let lines: Vec<&str> = log.lines().collect();
    let (mut premature, mut served_twice) = (Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("INC_{i:03}");
        let path = env.drop.join(format!("inc-{i:03}.iso"));
        let path = path.to_string_lossy();
        let marker = format!("TEST closing {path}");
        let at = lines
            .iter()
            .position(|l| *l == marker)
            .unwrap_or_else(|| panic!("no marker for {name} in the log"));
        let mounted = format!(" mounted name={name} ");
        let taken = |l: &&str| {
            l.contains(&mounted)
                || (l.contains("image complete") && l.contains(&format!("image={path} ")))
        };
        if lines[..at].iter().any(taken) {
            premature.push(name.clone());
        }
        if lines.iter().filter(|l| l.contains(&mounted)).count() != 1 {
            served_twice.push(name);
        }
    }
    // How often the watcher looked at a copy and held it back: the lease said a writer had it
    // open, or the bytes were not (yet) an image, or shorter than the volume.
    let held_open = log
        .matches("still open for writing; waiting for close")
        .count();
    let held_short = log.matches("not (yet) an image").count()
        + log.matches("waiting for the rest of the image").count();
    let t = tally.into_inner().unwrap();
    let ways = ways_used.into_inner().unwrap();
    println!(
        "incomplete: copies={n} parallel={PARALLEL} ways={} premature_serves={} early_lookups={} \
         served_once={} held_open={held_open} held_short={held_short} max_ready_ms={}",
        ways.len(),
        premature.len(),
        t.early_lookups,
        n - served_twice.len(),
        t.max_ready.as_millis()
    );
    assert!(
        premature.is_empty(),
        "taken before their copy finished: {premature:?}"
    );
    assert_eq!(
        t.early_lookups, 0,
        "a name was found while its copy was open"
    );
    assert!(
        served_twice.is_empty(),
        "not served exactly once: {served_twice:?}"
    );
    assert_eq!(env.names().len(), n, "every copy served under its own name");
}
