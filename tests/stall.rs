//! A medium whose reads hang (a scratched disc the drive retries on for minutes, an image on a
//! stalled NFS server) holds up only itself: with one served by `isomgr watch --driver fuse`
//! and its reads held, the other media still list, read and come and go, and the root still
//! lists. Once its reads go on again, it serves the right bytes.
//!
//! The hanging medium's image lives on a FUSE file system this test serves itself
//! ([`common::stallfs`]), which holds its reads until released. Needs root and /dev/fuse;
//! without them it says so and skips, or fails under CI=true.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::stallfs::StallFs;
use common::watcher::{self, noise, wait_for, Env, Watcher};

/// Longer than anything here takes when it is not held up: reaching it means a hang.
const HANG: Duration = Duration::from_secs(20);

/// Runs `f` on a thread of its own and gives its result, or fails the test if it has not
/// finished within [`HANG`] (the thread is left blocked).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG).unwrap_or_else(|_| {
        panic!("{what}: not done after {HANG:?}, held up by the hanging medium")
    })
}

/// A tree of `files` files of `size` bytes in `dir/`, plus `other/small`.
fn tree(src: &Path, seed: u64, files: usize, size: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    fs::create_dir_all(src.join("data")).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    for i in 0..files {
        let rel = PathBuf::from(format!("data/f{i}"));
        let bytes = noise(size, seed + i as u64);
        fs::write(src.join(&rel), &bytes).unwrap();
        out.push((rel, bytes));
    }
    let rel = PathBuf::from("other/small");
    fs::write(src.join(&rel), b"small\n").unwrap();
    out.push((rel, b"small\n".to_vec()));
    out
}

fn read_all(root: &Path, files: &[(PathBuf, Vec<u8>)]) {
    for (rel, want) in files {
        let got = fs::read(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel:?}: {e}"));
        assert!(got == *want, "{rel:?}: wrong bytes");
    }
}

/// Builds `NAME.iso` labelled `label` in `into` from a tree `make` writes in the scratch dir;
/// the tree's files.
fn image(
    env: &Env,
    name: &str,
    label: &str,
    into: &Path,
    make: impl FnOnce(&Path) -> Vec<(PathBuf, Vec<u8>)>,
) -> Vec<(PathBuf, Vec<u8>)> {
    let src = env.scratch.join(format!("{name}-src"));
    let files = make(&src);
    watcher::mkiso(&src, &into.join(format!("{name}.iso")), label);
    files
}

/// The watcher on the drop dir and on `slow_dir`, which it polls (a FUSE file system) five
/// times a second.
fn watch_polled(env: &Env, slow_dir: &Path) -> Watcher {
    let dir = slow_dir.to_str().unwrap();
    Watcher::start_with(env, &["--dir", dir, "--poll-interval", "0.2"])
}

/// A new image moved into the drop dir meanwhile: served (the root then lists `names`) and
/// read back whole.
fn a_new_image_is_served(env: &Env, names: &[&str]) {
    let files = image(env, "new", "NEW", &env.scratch, |src| {
        tree(src, 200, 2, 1 << 20)
    });
    fs::rename(env.scratch.join("new.iso"), env.drop.join("new.iso")).unwrap();
    env.wait_names(names);
    let n = env.root.join("NEW");
    within("reading a medium added meanwhile", move || {
        read_all(&n, &files)
    });
}

/// Waits until the watcher's log says `line` (`what` names the wait).
fn wait_logged(env: &Env, what: &str, line: &str) {
    wait_for(what, || {
        let log = env.log_text();
        match log.contains(line) {
            true => Ok(()),
            false => Err(log),
        }
    });
}

/// A test's dirs, with a FUSE file system of the test's own at `slow` showing the files of
/// `backing` (see [`common::stallfs`]).
fn stalled_env(prefix: &str) -> (Env, PathBuf, PathBuf, StallFs) {
    let env = Env::new(prefix);
    let backing = env.outside("backing");
    let slow_dir = env.outside("slow");
    let stall = StallFs::mount(&backing, &slow_dir);
    (env, backing, slow_dir, stall)
}

#[test]
fn a_medium_whose_reads_hang_holds_up_no_other() {
    if !watcher::can_run("a_medium_whose_reads_hang_holds_up_no_other") {
        return;
    }
    let (env, backing, slow_dir, stall) = stalled_env("isomgr-stall-");
    let slow_files = image(&env, "slow", "SLOW", &backing, |src| {
        tree(src, 1, 24, 1 << 20)
    });
    let good_files = image(&env, "good", "GOOD", &env.drop, |src| {
        tree(src, 100, 3, 3 << 20)
    });
    let _watcher = Watcher::start_with(&env, &["--dir", slow_dir.to_str().unwrap()]);
    let _release = stall.release_on_drop();
    env.wait_names(&["GOOD", "SLOW"]);
    let slow = env.root.join("SLOW");
    let good = env.root.join("GOOD");
    // Its files are looked up before its reads hang, so that reading them reaches the image.
    for (rel, _) in &slow_files {
        fs::metadata(slow.join(rel)).unwrap();
    }

    stall.hold("slow.iso");
    // Readers of the hanging medium's files, more than isomgr has reader threads, and a
    // listing of a directory of it that was never read.
    let mut stuck = Vec::new();
    for (rel, want) in slow_files.iter().filter(|(r, _)| r.starts_with("data")) {
        let (path, want) = (slow.join(rel), want.clone());
        stuck.push(std::thread::spawn(move || {
            fs::read(&path).is_ok_and(|got| got == want)
        }));
    }
    let other = slow.join("other");
    let listing = std::thread::spawn(move || fs::read_dir(&other).map(|d| d.count()));
    wait_for(
        "the hanging medium's reads to reach its image",
        || match stall.waiting() {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} held")),
        },
    );

    // Everything else goes on.
    let root = env.root.clone();
    let names = within("listing the root", move || {
        let mut n: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    });
    assert_eq!(names, ["GOOD", "SLOW"]);
    let g = good.clone();
    let listed = within("listing a directory of another medium", move || {
        fs::read_dir(g.join("other")).unwrap().count()
    });
    assert_eq!(listed, 1);
    let (g, files) = (good.clone(), good_files.clone());
    within("reading another medium's files", move || {
        read_all(&g, &files)
    });
    fs::metadata(slow.join("data/f0")).expect("the hanging medium still shows");

    a_new_image_is_served(&env, &["GOOD", "NEW", "SLOW"]);
    fs::remove_file(env.drop.join("good.iso")).unwrap();
    env.wait_names(&["NEW", "SLOW"]);

    // Its reads go on: every reader gets the right bytes, the listing its entry.
    stall.release();
    for t in stuck {
        assert!(
            t.join().unwrap(),
            "a held reader of the hanging medium got wrong bytes"
        );
    }
    assert_eq!(listing.join().unwrap().expect("listing after release"), 1);
    let s = slow.clone();
    within("reading the medium whose reads went on", move || {
        read_all(&s, &slow_files)
    });
}

/// Where an image's root directory is: (byte offset, length), from its primary volume
/// descriptor.
fn root_extent(image: &Path) -> (u64, u64) {
    let bytes = fs::read(image).unwrap();
    let record = 16 * 2048 + 156;
    let le = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
    (le(record + 2) * 2048, le(record + 10))
}

/// A source tree whose root directory takes more than one sector.
fn wide_tree(src: &Path, seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = tree(src, seed, 2, 1 << 20);
    for i in 0..60 {
        let rel = PathBuf::from(format!("an-entry-with-a-longer-name-{i:02}.txt"));
        let bytes = format!("entry {i}\n").into_bytes();
        fs::write(src.join(&rel), &bytes).unwrap();
        files.push((rel, bytes));
    }
    files
}

#[test]
fn a_medium_whose_image_hangs_while_being_published_holds_up_no_other() {
    if !watcher::can_run("a_medium_whose_image_hangs_while_being_published_holds_up_no_other") {
        return;
    }
    let (env, backing, slow_dir, stall) = stalled_env("isomgr-stall-publish-");
    let good_files = image(&env, "good", "GOOD", &env.drop, |src| {
        tree(src, 100, 2, 1 << 20)
    });
    let slow_files = image(&env, "slow", "SLOW", &env.scratch, |src| wide_tree(src, 1));
    image(&env, "gone", "GONE", &env.scratch, |src| wide_tree(src, 50));
    let _watcher = watch_polled(&env, &slow_dir);
    let _release = stall.release_on_drop();
    env.wait_names(&["GOOD"]);

    // Its descriptors and the first sector of its root directory read (the watched directory
    // identifies it from those), the rest of its root directory hangs: publishing hangs.
    for image in ["slow.iso", "gone.iso"] {
        let (root, len) = root_extent(&env.scratch.join(image));
        assert!(
            len > 2048,
            "{image}: root directory of {len} bytes, one sector"
        );
        stall.hold_from(image, root + 2048);
        fs::rename(env.scratch.join(image), backing.join(image)).unwrap();
    }
    // Both are being published at once: the first one's hanging reads did not hold up the
    // second's.
    wait_for("both images' reads to hang", || match stall.waiting() {
        2 => Ok(()),
        n => Err(format!("{n} held")),
    });
    wait_for("both publishes to go on in the background", || {
        let log = env.log_text();
        match log.matches("its image has not answered yet").count() {
            2 => Ok(()),
            n => Err(format!("{n} so far; log:\n{log}")),
        }
    });

    // Meanwhile the others come, serve and go.
    a_new_image_is_served(&env, &["GOOD", "NEW"]);
    let (g, files) = (env.root.join("GOOD"), good_files.clone());
    within("reading a medium served before", move || {
        read_all(&g, &files)
    });
    fs::remove_file(env.drop.join("new.iso")).unwrap();
    env.wait_names(&["GOOD"]);

    // One of the hanging images goes before it answers: it is never served.
    fs::remove_file(backing.join("gone.iso")).unwrap();
    wait_logged(
        &env,
        "the medium gone while being read to be dropped",
        "gone while its image was still being read",
    );

    // The other answers: served, with the right bytes.
    stall.release();
    env.wait_status(&["GOOD", "SLOW"]);
    let s = env.root.join("SLOW");
    within("reading the medium that answered late", move || {
        read_all(&s, &slow_files)
    });
    let log = env.log_text();
    let served = |l: &&str| l.contains(" mounted ") && l.contains("name=GONE");
    assert!(!log.lines().any(|l| served(&l)), "GONE was served:\n{log}");
}

#[test]
fn an_image_whose_descriptors_hang_holds_up_no_other_image() {
    if !watcher::can_run("an_image_whose_descriptors_hang_holds_up_no_other_image") {
        return;
    }
    let (env, backing, slow_dir, stall) = stalled_env("isomgr-stall-probe-");
    let slow_files = image(&env, "slow", "SLOW", &env.scratch, |src| {
        tree(src, 1, 2, 1 << 20)
    });
    fs::copy(env.scratch.join("slow.iso"), env.scratch.join("gone.iso")).unwrap();
    let _watcher = watch_polled(&env, &slow_dir);
    let _release = stall.release_on_drop();

    // Not one byte of them can be read: the watched directory cannot even tell what they are.
    for image in ["slow.iso", "gone.iso"] {
        stall.hold(image);
        fs::rename(env.scratch.join(image), backing.join(image)).unwrap();
    }
    wait_for("both images' reads to hang", || match stall.waiting() {
        2 => Ok(()),
        n => Err(format!("{n} held")),
    });

    // Meanwhile the other directory's images come and are served.
    a_new_image_is_served(&env, &["NEW"]);

    // One goes before it answers; the other answers and is served.
    fs::remove_file(backing.join("gone.iso")).unwrap();
    stall.release();
    env.wait_status(&["NEW", "SLOW"]);
    let s = env.root.join("SLOW");
    within("reading the image that answered late", move || {
        read_all(&s, &slow_files)
    });
    let log = env.log_text();
    assert_eq!(
        log.matches("its volume descriptors have not answered yet")
            .count(),
        2,
        "{log}"
    );
    assert!(
        !log.contains("gone.iso label"),
        "the image gone meanwhile was identified:\n{log}"
    );
}

/// A polled directory (a network file system) whose listings hang, as on an NFS server that
/// stops answering, holds up no other directory: the poll waits in the background while an
/// image moved into the drop dir is served, and polling goes on once the listing answers.
#[test]
fn a_polled_directory_whose_listing_hangs_holds_up_no_other() {
    if !watcher::can_run("a_polled_directory_whose_listing_hangs_holds_up_no_other") {
        return;
    }
    let (env, backing, slow_dir, stall) = stalled_env("isomgr-stall-list-");
    let slow_files = image(&env, "slow", "SLOW", &backing, |src| {
        tree(src, 1, 2, 1 << 16)
    });
    let _watcher = watch_polled(&env, &slow_dir);
    let _release = stall.release_on_drop();
    env.wait_names(&["SLOW"]);

    stall.hold_listing();
    wait_for("a poll's listing to hang", || match stall.waiting() {
        0 => Err("none held yet".into()),
        _ => Ok(()),
    });
    wait_logged(
        &env,
        "the watcher to go on without the listing",
        "the polled directory has not answered yet",
    );
    a_new_image_is_served(&env, &["NEW", "SLOW"]);

    // Once it answers, polling goes on: an image added there is served.
    stall.release();
    image(&env, "later", "LATER", &env.scratch, |src| {
        tree(src, 300, 1, 1 << 16)
    });
    fs::rename(env.scratch.join("later.iso"), backing.join("later.iso")).unwrap();
    env.wait_names(&["LATER", "NEW", "SLOW"]);
    let s = env.root.join("SLOW");
    within("reading the polled directory's image", move || {
        read_all(&s, &slow_files)
    });
    assert!(env.log_text().contains("the polled directory has answered"));
}

/// A polled directory whose server stops answering between a listing and an open (NFS) holds
/// up nothing: the open of an image a poll found waits in the background while an image moved
/// into the drop dir is served, and another image in the same polled directory too; the first
/// is served once its open answers.
#[test]
fn a_polled_image_whose_open_hangs_holds_up_no_other() {
    if !watcher::can_run("a_polled_image_whose_open_hangs_holds_up_no_other") {
        return;
    }
    let (env, backing, slow_dir, stall) = stalled_env("isomgr-stall-open-");
    let _watcher = watch_polled(&env, &slow_dir);
    let _release = stall.release_on_drop();

    stall.hold_open("held.iso");
    let held_files = image(&env, "held", "HELD", &env.scratch, |src| {
        tree(src, 1, 2, 1 << 16)
    });
    fs::rename(env.scratch.join("held.iso"), backing.join("held.iso")).unwrap();
    wait_for("an open of the polled image to hang", || {
        match stall.waiting() {
            0 => Err("none held yet".into()),
            _ => Ok(()),
        }
    });
    wait_logged(
        &env,
        "the watcher to go on without the open",
        "opening it has not answered yet",
    );
    a_new_image_is_served(&env, &["NEW"]);
    // The polled directory itself is still looked at.
    image(&env, "other", "OTHER", &env.scratch, |src| {
        tree(src, 300, 1, 1 << 16)
    });
    fs::rename(env.scratch.join("other.iso"), backing.join("other.iso")).unwrap();
    env.wait_names(&["NEW", "OTHER"]);

    // Once the open answers, the image is served.
    stall.release();
    env.wait_names(&["HELD", "NEW", "OTHER"]);
    let h = env.root.join("HELD");
    within("reading the image whose open had hung", move || {
        read_all(&h, &held_files)
    });
}

/// A polled directory that does not answer when the watcher starts (an NFS server down) holds
/// up neither the start nor the other directories: what they hold is served, and what it holds
/// follows once its listing answers.
#[test]
fn a_polled_directory_that_hangs_at_start_holds_up_no_other() {
    if !watcher::can_run("a_polled_directory_that_hangs_at_start_holds_up_no_other") {
        return;
    }
    let (env, backing, slow_dir, stall) = stalled_env("isomgr-stall-start-");
    let slow_files = image(&env, "slow", "SLOW", &backing, |src| {
        tree(src, 1, 2, 1 << 16)
    });
    let good_files = image(&env, "good", "GOOD", &env.drop, |src| {
        tree(src, 100, 2, 1 << 16)
    });
    stall.hold_listing();
    let _watcher = watch_polled(&env, &slow_dir);
    let _release = stall.release_on_drop();
    env.wait_names(&["GOOD"]);
    wait_for("the scan's listing to hang", || match stall.waiting() {
        0 => Err("none held yet".into()),
        _ => Ok(()),
    });
    wait_logged(
        &env,
        "the scan to go on without the polled directory",
        "the watched directory has not answered yet",
    );
    let g = env.root.join("GOOD");
    within(
        "reading an image of the directory that answered",
        move || read_all(&g, &good_files),
    );
    a_new_image_is_served(&env, &["GOOD", "NEW"]);

    stall.release();
    env.wait_names(&["GOOD", "NEW", "SLOW"]);
    let s = env.root.join("SLOW");
    within(
        "reading the image of the directory that answered late",
        move || read_all(&s, &slow_files),
    );
    assert!(env
        .log_text()
        .contains("the watched directory has answered"));
}

/// A watched directory whose file system does not answer at all when the watcher starts (stat
/// and statfs of it hang, as on an NFS mount whose server is down) holds up neither the start
/// nor the other directories: it is polled, and what it holds is served once it answers.
#[test]
fn a_watched_directory_that_does_not_answer_at_start_holds_up_no_other() {
    if !watcher::can_run("a_watched_directory_that_does_not_answer_at_start_holds_up_no_other") {
        return;
    }
    let (env, backing, slow_dir, stall) = stalled_env("isomgr-stall-dead-");
    let slow_files = image(&env, "slow", "SLOW", &backing, |src| {
        tree(src, 1, 2, 1 << 16)
    });
    image(&env, "good", "GOOD", &env.drop, |src| {
        tree(src, 100, 2, 1 << 16)
    });
    stall.hold_root_attr();
    let _watcher = Watcher::start_with(
        &env,
        &[
            "--dir",
            slow_dir.to_str().unwrap(),
            "--poll-interval",
            "0.2",
        ],
    );
    let _release = stall.release_on_drop();
    env.wait_names(&["GOOD"]);
    wait_logged(
        &env,
        "the watcher to go on without the directory",
        "the watched directory does not answer",
    );
    a_new_image_is_served(&env, &["GOOD", "NEW"]);

    stall.release();
    env.wait_names(&["GOOD", "NEW", "SLOW"]);
    let s = env.root.join("SLOW");
    within(
        "reading the image of the directory that answered late",
        move || read_all(&s, &slow_files),
    );
}

/// A FUSE or network file system mounted on a watched directory after the start (a share
/// mounted after isomgr) is looked at again: polled from then on, as its changes made
/// elsewhere give no inotify event. Unmounted, the directory below is watched with inotify
/// again.
#[test]
fn a_share_mounted_on_a_watched_directory_after_the_start_is_polled() {
    if !watcher::can_run("a_share_mounted_on_a_watched_directory_after_the_start_is_polled") {
        return;
    }
    let env = Env::new("isomgr-stall-late-");
    let (backing, share) = (env.outside("backing"), env.outside("share"));
    let _watcher = watch_polled(&env, &share);
    let first = format!("{}: ", share.display());
    wait_logged(&env, "the share's directory looked at", &first);
    assert!(
        env.log_text()
            .lines()
            .any(|l| l.contains(&first) && l.ends_with(": inotify")),
        "{}",
        env.log_text()
    );
    let first_files = image(&env, "first", "FIRST", &backing, |src| {
        tree(src, 300, 2, 1 << 16)
    });
    let stall = StallFs::mount(&backing, &share);
    wait_logged(
        &env,
        "the share to be polled",
        &format!(
            "{}: fuse (0x65735546): no inotify for remote changes; polling every 0.2 s",
            share.display()
        ),
    );
    env.wait_names(&["FIRST"]);
    let f = env.root.join("FIRST");
    within("reading the image on the share", move || {
        read_all(&f, &first_files)
    });
    // Added behind the mount, as another machine adds to a share: no inotify event; a poll
    // finds it.
    image(&env, "second", "SECOND", &backing, |src| {
        tree(src, 400, 1, 1 << 16)
    });
    env.wait_names(&["FIRST", "SECOND"]);
    // Unmounted (lazily: the watcher holds the images open): they go, and what is copied
    // into the directory below is served.
    drop(stall);
    env.wait_names(&[]);
    image(&env, "below", "BELOW", &share, |src| {
        tree(src, 500, 1, 1 << 16)
    });
    env.wait_names(&["BELOW"]);
}

/// A network or FUSE file system mounted inside a watched directory (`DROP/share`), at the
/// start or later, is polled on its own: what another machine adds behind it (no inotify
/// event here) is served, while the rest of the directory keeps inotify. Once unmounted, its
/// images go and the directory below it is watched with the rest again.
#[test]
fn a_share_mounted_inside_a_watched_directory_is_polled_on_its_own() {
    if !watcher::can_run("a_share_mounted_inside_a_watched_directory_is_polled_on_its_own") {
        return;
    }
    let env = Env::new("isomgr-stall-inside-");
    let (early_backing, late_backing) = (env.outside("early-backing"), env.outside("late-backing"));
    let (early, late) = (env.drop.join("early"), env.drop.join("late"));
    fs::create_dir_all(&early).unwrap();
    fs::create_dir_all(&late).unwrap();
    let early_files = image(&env, "early", "EARLY", &early_backing, |src| {
        tree(src, 600, 2, 1 << 16)
    });
    let early_fs = StallFs::mount(&early_backing, &early);
    // `--check-config` says so beforehand.
    let out = watcher::watch_command(&env)
        .args(["--poll-interval", "0.2", "--check-config"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "  {}: fuse.stallfs mounted inside: polled on its own every 0.2 s\n",
        early.display()
    );
    assert!(summary.contains(&want), "want {want:?} in:\n{summary}");
    let _watcher = Watcher::start_with(&env, &["--poll-interval", "0.2"]);
    let polling = |at: &Path| {
        let line = format!(
            "a network or FUSE file system is mounted inside the watched directory: no inotify for remote changes; polling it every 0.2 s dir={}",
            at.display()
        );
        wait_logged(&env, &format!("{} to be polled", at.display()), &line);
    };
    polling(&early);
    env.wait_names(&["EARLY"]);
    let f = env.root.join("EARLY");
    within("reading the image on the share", move || {
        read_all(&f, &early_files)
    });
    // Added behind the mount, as another machine adds to a share: no inotify event; a poll
    // finds it.
    image(&env, "early2", "EARLY2", &early_backing, |src| {
        tree(src, 610, 1, 1 << 12)
    });
    env.wait_names(&["EARLY", "EARLY2"]);

    // Mounted after the start, beside it.
    image(&env, "late", "LATE", &late_backing, |src| {
        tree(src, 620, 1, 1 << 12)
    });
    let late_fs = StallFs::mount(&late_backing, &late);
    polling(&late);
    env.wait_names(&["EARLY", "EARLY2", "LATE"]);
    image(&env, "late2", "LATE2", &late_backing, |src| {
        tree(src, 630, 1, 1 << 12)
    });
    env.wait_names(&["EARLY", "EARLY2", "LATE", "LATE2"]);
    // Removed behind the mount: a poll sees it gone.
    fs::remove_file(early_backing.join("early2.iso")).unwrap();
    env.wait_names(&["EARLY", "LATE", "LATE2"]);
    // The rest of the directory keeps inotify.
    a_new_image_is_served(&env, &["EARLY", "LATE", "LATE2", "NEW"]);

    // Unmounted (lazily: the watcher holds the images open): its images go, it is polled no
    // more, and what is copied into the directory below it is served.
    drop(late_fs);
    env.wait_names(&["EARLY", "NEW"]);
    wait_logged(
        &env,
        "the unmounted share to be polled no more",
        &format!(
            "the network or FUSE file system mounted inside a watched directory is gone: no longer polled on its own dir={}",
            late.display()
        ),
    );
    image(&env, "below", "BELOW", &late, |src| {
        tree(src, 640, 1, 1 << 12)
    });
    env.wait_names(&["EARLY", "NEW", "BELOW"]);
    drop(early_fs);
    env.wait_names(&["NEW", "BELOW"]);
}

/// A share mounted inside a watched directory whose server does not answer when the watcher
/// starts (its listing and the stat of its mount point hang) holds up neither the start nor
/// the rest of the directory: the images beside it are served and new ones are taken. What it
/// holds is served once it answers.
#[test]
fn a_share_inside_a_watched_directory_that_does_not_answer_holds_up_no_other() {
    if !watcher::can_run(
        "a_share_inside_a_watched_directory_that_does_not_answer_holds_up_no_other",
    ) {
        return;
    }
    let env = Env::new("isomgr-stall-inside-dead-");
    let backing = env.outside("backing");
    let share = env.drop.join("share");
    fs::create_dir_all(&share).unwrap();
    let slow_files = image(&env, "slow", "SLOW", &backing, |src| {
        tree(src, 700, 2, 1 << 16)
    });
    image(&env, "good", "GOOD", &env.drop, |src| {
        tree(src, 710, 2, 1 << 16)
    });
    let stall = StallFs::mount(&backing, &share);
    stall.hold_listing();
    stall.hold_root_attr();
    // Released after HANG whatever happens: a watcher stuck in the share could not be
    // stopped, and the test would hang instead of failing.
    let late = stall.release_on_drop();
    std::thread::spawn(move || {
        std::thread::sleep(HANG);
        drop(late);
    });
    let _watcher = Watcher::start_with(&env, &["--poll-interval", "0.2"]);
    let _release = stall.release_on_drop();
    env.wait_names(&["GOOD"]);
    a_new_image_is_served(&env, &["GOOD", "NEW"]);

    stall.release();
    env.wait_names(&["GOOD", "NEW", "SLOW"]);
    let s = env.root.join("SLOW");
    within(
        "reading the image of the share that answered late",
        move || read_all(&s, &slow_files),
    );
}
