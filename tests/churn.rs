//! Churn: images added (hard-linked or copied in), removed and renamed at full speed, many with
//! equal labels, while a tiny inotify queue (`fs.inotify.max_queued_events`, set only while the
//! watcher creates its inotify instance, then restored) forces overflows and rescans. Once
//! quiet, what is served equals the ground truth: each present image once, under its label or
//! `LABEL-N`, nothing else in the root, no duplicate entries.
//!
//! 100 images and 1,000 events by default; 1,000 and 10,000 with `ISOMGR_FULL=1`. Prints one
//! figure line. Needs root, /dev/fuse, genisoimage.

mod common;
#[path = "common/labelled.rs"]
mod labelled;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::watcher::{wait_within, watch_command, Env};
use serde_json::Value;

const SYSCTL: &str = "/proc/sys/fs/inotify/max_queued_events";

/// Sets the inotify queue limit and puts the old value back when dropped.
struct QueueLimit(String);

impl QueueLimit {
    fn set(n: u32) -> QueueLimit {
        let old = fs::read_to_string(SYSCTL).expect("reading max_queued_events");
        fs::write(SYSCTL, n.to_string()).expect("setting max_queued_events");
        QueueLimit(old.trim().to_owned())
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        let _ = fs::write(SYSCTL, &self.0);
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Whether process `pid` has an inotify watch on the inode `ino` (its fdinfo lists each watch
/// as `inotify wd:N ino:HEX ...`).
fn inotify_watches(pid: u32, ino: u64) -> bool {
    let want = format!(" ino:{ino:x} ");
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    fds.filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
        .any(|info| {
            info.lines()
                .any(|l| l.starts_with("inotify wd:") && l.contains(&want))
        })
}

fn ino(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.ino())
}

#[test]
fn churn_with_queue_overflows_converges_to_the_ground_truth() {
    if !common::watcher::can_run("churn") || !common::have_tool("genisoimage") {
        return;
    }
    let full = std::env::var("ISOMGR_FULL").is_ok_and(|v| v == "1");
    let (images, events) = if full { (1000, 10_000) } else { (100, 1000) };
    let seed = std::env::var("ISOMGR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 0x9e37_79b9);
    eprintln!("churn: ISOMGR_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let env = Env::new("isomgr-churn.");
    // The pool: one file per image, labels from a small set (equal labels are common).
    let imgs = labelled::Labelled::new(&env.scratch);
    let pool = env.scratch.join("pool");
    fs::create_dir(&pool).unwrap();
    let distinct = (images / 4).max(2);
    let mut label_of: BTreeMap<u64, String> = BTreeMap::new();
    let mut pool_files = Vec::new();
    for i in 0..images {
        let label = format!("C{}", i % distinct);
        let p = pool.join(format!("p{i}.iso"));
        fs::write(&p, imgs.image(&label)).unwrap();
        label_of.insert(ino(&p).unwrap(), label);
        pool_files.push(p);
    }

    let limit = QueueLimit::set(64);
    let mut child: Child = watch_command(&env)
        .env("ISOMGR_LOG", "isomgr=info")
        .spawn()
        .expect("starting isomgr watch");
    // The limit applies to inotify instances made from now on: the watcher's is made by the
    // time it watches the drop directory; others' tests get the normal limit back right after.
    let drop_ino = ino(&env.drop).unwrap();
    wait_within("the watcher to start", Duration::from_secs(20), || {
        let pid = fs::read(&env.state)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| v["pid"].clone());
        (pid == Some(child.id().into()) && inotify_watches(child.id(), drop_ino))
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    drop(limit);

    // The events, at full speed.
    let start = Instant::now();
    let mut serial = 0u64;
    for k in 0..events {
        // A quarter of the events while the watcher is stopped: more than its queue holds,
        // so it overflows however fast the watcher reads the rest.
        let signal = match k {
            _ if k == events / 4 => libc::SIGSTOP,
            _ if k == events / 2 => libc::SIGCONT,
            _ => 0,
        };
        if signal != 0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
        let present: Vec<PathBuf> = fs::read_dir(&env.drop)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let r = rng.below(10);
        if present.is_empty() || (r < 4 && present.len() < images) {
            serial += 1;
            let src = &pool_files[rng.below(images as u64) as usize];
            let dst = env.drop.join(format!("a{serial}.iso"));
            if rng.below(2) == 0 {
                // Hard link: the pool file itself (a file present twice is one medium).
                let _ = fs::hard_link(src, &dst);
            } else {
                // A copy: a new medium with the same label, moved in complete.
                let tmp = env.scratch.join(format!("t{serial}.iso"));
                fs::copy(src, &tmp).unwrap();
                label_of.insert(ino(&tmp).unwrap(), label_of[&ino(src).unwrap()].clone());
                fs::rename(&tmp, &dst).unwrap();
            }
        } else if r < 7 {
            let _ = fs::remove_file(&present[rng.below(present.len() as u64) as usize]);
        } else {
            serial += 1;
            let from = &present[rng.below(present.len() as u64) as usize];
            let _ = fs::rename(from, env.drop.join(format!("r{serial}.iso")));
        }
    }
    let events_done = start.elapsed();

    // Ground truth: the media present (one per inode) and their labels.
    let truth: BTreeMap<String, String> = fs::read_dir(&env.drop)
        .unwrap()
        .filter_map(|e| {
            let m = e.ok()?.metadata().ok()?;
            Some((
                format!("file:{}:{}", m.dev(), m.ino()),
                label_of[&m.ino()].clone(),
            ))
        })
        .collect();
    let converged = wait_within("the watcher to converge", Duration::from_secs(120), || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the watcher exited ({st})");
        }
        let doc: Value = fs::read(&env.state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| "no state".to_string())?;
        let served: BTreeMap<String, String> = doc["media"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().into(),
                    m["name"].as_str().unwrap().into(),
                )
            })
            .collect();
        if served.keys().ne(truth.keys()) {
            // Which media differ, and what the watcher logged about them (the log goes with
            // the test's directory).
            let differ: Vec<&String> = truth
                .keys()
                .filter(|k| !served.contains_key(*k))
                .chain(served.keys().filter(|k| !truth.contains_key(*k)))
                .collect();
            let log = fs::read_to_string(&env.log).unwrap_or_default();
            let about: Vec<&str> = log
                .lines()
                .filter(|l| differ.iter().any(|id| l.contains(id.as_str())))
                .take(40)
                .collect();
            return Err(format!(
                "{} served, {} present; differing: {differ:?}; the watcher's log about them:\n{}",
                served.len(),
                truth.len(),
                about.join("\n")
            ));
        }
        Ok(served)
    });
    let converge = start.elapsed() - events_done;

    // Each medium once, under LABEL or LABEL-N; the root lists exactly those names, once each.
    let listed: Vec<String> = fs::read_dir(&env.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let listed_set: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(
        listed.len(),
        listed_set.len(),
        "duplicate entries in the root"
    );
    let names: BTreeSet<&String> = converged.values().collect();
    assert_eq!(names.len(), converged.len(), "a name served twice");
    assert_eq!(listed_set, names, "the root lists exactly the served names");
    for (id, name) in &converged {
        let label = &truth[id];
        let ok = name == label
            || name
                .strip_prefix(&format!("{label}-"))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 2);
        assert!(ok, "{id} with label {label} is served as {name}");
    }
    let labels: BTreeSet<&String> = truth.values().collect();
    let log = env.log_text();
    let overflows = log.matches("inotify queue overflowed").count();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    if common::watcher::is_fuse_mount(&env.root) {
        let _ = Command::new("umount").arg("-l").arg(&env.root).status();
    }
    println!(
        "churn: images={images} events={events} present={} labels={} overflows={overflows} events_secs={:.1} converge_secs={:.1}",
        truth.len(),
        labels.len(),
        events_done.as_secs_f64(),
        converge.as_secs_f64()
    );
    assert!(overflows > 0, "a 64-event queue never overflowed");
}
