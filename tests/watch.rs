//! `isomgr watch` end to end: the built binary with real inotify and a real FUSE root, driven
//! by copying, moving and deleting image files, and checked through independent views (the
//! root listing, files read through the mount, `/proc/self/mountinfo`, `isomgr status --json`).
//!
//! Needs root, /dev/fuse and genisoimage; without them each test says so and skips, or fails
//! under CI=true. Each test has its own temp dir (drop dir, root, state file, log), so they run
//! in parallel. Nothing sleeps to wait: every wait polls for its condition with a deadline.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::watcher::{is_fuse_mount, wait_for, Env, Watcher};

/// Whether this host can run the watcher; under CI=true a missing piece is a failure.
fn can_run(test: &str) -> bool {
    common::watcher::can_run(test) && common::have_tool("genisoimage")
}

/// Mounts at exactly `path` according to /proc/self/mountinfo.
fn mounts_at(path: &Path) -> usize {
    common::watcher::mounts_under(path)
        .iter()
        .filter(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
        .count()
}

/// Builds an image of `files` with `isomgr mkiso` and label `label`.
fn mkiso(out: &Path, label: &str, files: &[(&str, &[u8])]) {
    let src = tempfile::tempdir().unwrap();
    for (path, data) in files {
        let p = src.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    let out_status = common::isomgr(&[
        "mkiso",
        src.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        &format!("--volume-label={label}"),
    ]);
    assert!(
        out_status.status.success(),
        "mkiso: {}",
        String::from_utf8_lossy(&out_status.stderr)
    );
}

/// Builds an image with genisoimage (which writes any label bytes as given).
fn genisoimage(out: &Path, label: &str) {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("hello.txt"), b"hello\n").unwrap();
    let st = Command::new("genisoimage")
        .args(["-quiet", "-J", "-R", "-V", label, "-o"])
        .arg(out)
        .arg(src.path())
        .stderr(Stdio::null())
        .status()
        .expect("running genisoimage");
    assert!(st.success(), "genisoimage -V {label:?}");
}

/// A small image with one known file, `/hello.txt`, whose content names the label.
fn small_image(dir: &Path, file: &str, label: &str) -> PathBuf {
    let out = dir.join(file);
    let body = format!("hello from {label}\n");
    mkiso(&out, label, &[("hello.txt", body.as_bytes())]);
    out
}

fn hello(env: &Env, name: &str) -> Result<String, String> {
    fs::read_to_string(env.root.join(name).join("hello.txt")).map_err(|e| e.to_string())
}

/// A scratch dir for building images, outside the watched tree.
fn scratch(env: &Env) -> PathBuf {
    env.outside("scratch")
}

#[test]
fn dropped_image_appears_under_its_label_and_reads_byte_exact() {
    if !can_run("drop") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let (fixture, manifest) = common::manifests()
        .into_iter()
        .find(|(p, _)| p.ends_with("rockridge.iso"))
        .expect("rockridge fixture");
    fs::copy(&fixture, env.drop.join("rockridge.iso")).unwrap();
    env.wait_names(&["rockridge"]);
    for e in manifest["entries"].as_array().unwrap() {
        if e["type"] != "file" {
            continue;
        }
        let path = env
            .root
            .join("rockridge")
            .join(&e["path"].as_str().unwrap()[1..]);
        let data = fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!(common::sha256_hex(&data), e["sha256"], "{}", path.display());
    }
}

#[test]
fn image_moved_in_from_the_same_file_system_appears() {
    if !can_run("mv in") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let staged = small_image(&scratch(&env), "moved.iso", "MOVED_IN");
    fs::rename(&staged, env.drop.join("moved.iso")).unwrap();
    env.wait_names(&["MOVED_IN"]);
    assert_eq!(hello(&env, "MOVED_IN").unwrap(), "hello from MOVED_IN\n");
}

/// Writes `data` to `path` in 16 chunks with pauses, keeping the file open; `prepare` runs on
/// the new file first (preallocation). After every chunk, and after a second image dropped
/// behind it has been served (so the watcher has seen every event of the slow file), `name`
/// must still be absent; after close it appears.
fn slow_copy(env: &Env, data: &[u8], path: &Path, name: &str, prepare: impl Fn(&File)) {
    let mut f = File::create(path).unwrap();
    prepare(&f);
    for chunk in data.chunks(data.len().div_ceil(16)) {
        f.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(5)); // a slow writer, not a wait
        assert!(
            !env.names().contains(name),
            "{name} served while it is still being written"
        );
    }
    // Everything is written but the file is still open. Once an image dropped after it is
    // served, the watcher has handled every event of the slow file: it must still wait.
    let sentinel = format!("SENTINEL_{name}");
    small_image(&env.drop, &format!("{sentinel}.iso"), &sentinel);
    wait_for("the sentinel image", || hello(env, &sentinel));
    assert!(
        !env.names().contains(name),
        "{name} served before its writer closed it"
    );
    drop(f);
    wait_for(&format!("{name} after close"), || hello(env, name));
    fs::remove_file(env.drop.join(format!("{sentinel}.iso"))).unwrap();
}

#[test]
fn image_being_copied_is_not_served_before_it_is_complete() {
    if !can_run("slow copy") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let s = scratch(&env);
    let a = fs::read(small_image(&s, "a.iso", "SLOW_PLAIN")).unwrap();
    let b = fs::read(small_image(&s, "b.iso", "SLOW_SETLEN")).unwrap();
    let c = fs::read(small_image(&s, "c.iso", "SLOW_FALLOC")).unwrap();
    slow_copy(&env, &a, &env.drop.join("a.iso"), "SLOW_PLAIN", |_| {});
    slow_copy(&env, &b, &env.drop.join("b.iso"), "SLOW_SETLEN", |f| {
        f.set_len(b.len() as u64).unwrap()
    });
    slow_copy(&env, &c, &env.drop.join("c.iso"), "SLOW_FALLOC", |f| {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor.
        let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, c.len() as libc::off_t) };
        assert_eq!(rc, 0, "posix_fallocate");
    });
    env.wait_names(&["SLOW_FALLOC", "SLOW_PLAIN", "SLOW_SETLEN"]);
}

#[test]
fn preallocated_image_written_while_the_watcher_lags_waits_for_close() {
    if !can_run("slow copy, lagging watcher") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let w = Watcher::start_with(&env, &[]);
    let data = fs::read(small_image(&scratch(&env), "lag.iso", "LAGGING")).unwrap();
    // The watcher is stopped while the file is created, preallocated and filled, so when it
    // looks the file is full size and holds a complete volume, but is still open for writing.
    w.signal(libc::SIGSTOP);
    let mut f = File::create(env.drop.join("lag.iso")).unwrap();
    f.set_len(data.len() as u64).unwrap();
    f.write_all(&data).unwrap();
    w.signal(libc::SIGCONT);
    small_image(&env.drop, "sentinel.iso", "SENTINEL");
    wait_for("the sentinel image", || hello(&env, "SENTINEL"));
    assert!(
        !env.names().contains("LAGGING"),
        "served before its writer closed it"
    );
    drop(f);
    wait_for("LAGGING after close", || hello(&env, "LAGGING"));

    // Written and closed while the watcher is stopped: it then finds a complete file on the
    // creation event, and the close-write after it must not serve it a second time.
    let data = fs::read(small_image(&scratch(&env), "done.iso", "DONE")).unwrap();
    w.signal(libc::SIGSTOP);
    fs::write(env.drop.join("done.iso"), &data).unwrap();
    w.signal(libc::SIGCONT);
    small_image(&env.drop, "sentinel2.iso", "SENTINEL2");
    wait_for("the second sentinel", || hello(&env, "SENTINEL2"));
    env.wait_status(&["DONE", "LAGGING", "SENTINEL", "SENTINEL2"]);
    let log = env.log_text();
    let served = |name: &str| log.matches(&format!(" mounted name={name} ")).count();
    assert_eq!(served("DONE"), 1, "DONE served more than once:\n{log}");
    assert_eq!(
        served("LAGGING"),
        1,
        "LAGGING served more than once:\n{log}"
    );
}

#[test]
fn deleted_image_leaves_nothing_in_the_root() {
    if !can_run("delete") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let img = small_image(&env.drop, "gone.iso", "GONE");
    wait_for("GONE", || hello(&env, "GONE"));
    fs::remove_file(img).unwrap();
    env.wait_status(&[]);
    assert!(!env.root.join("GONE").exists());
}

#[test]
fn delete_and_rename_out_are_noticed_while_another_file_is_being_written() {
    if !can_run("delete during a long copy") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let a = small_image(&env.drop, "a.iso", "BUSY_A");
    let b = small_image(&env.drop, "b.iso", "BUSY_B");
    env.wait_status(&["BUSY_A", "BUSY_B"]);
    // A long download in the drop dir: a write every 2 ms, so inotify events never pause.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), env.drop.join("download.iso.part"));
        std::thread::spawn(move || {
            let mut f = File::create(path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(&[0u8; 512]).unwrap();
                std::thread::sleep(Duration::from_millis(2)); // the pace of the writer
            }
        })
    };
    fs::remove_file(a).unwrap();
    env.wait_status(&["BUSY_B"]);
    fs::rename(b, env.outside("elsewhere").join("b.iso")).unwrap();
    env.wait_status(&[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn rename_inside_the_tree_keeps_the_name_and_updates_the_origin() {
    if !can_run("rename inside") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    small_image(&env.drop, "first.iso", "KEPT");
    env.wait_status(&["KEPT"]);
    let renamed = env.drop.join("second.iso");
    fs::rename(env.drop.join("first.iso"), &renamed).unwrap();
    wait_for("origin second.iso", || {
        let m = env.medium("KEPT");
        (m["origin"] == renamed.to_str().unwrap())
            .then_some(())
            .ok_or(m.to_string())
    });
    let sub = env.drop.join("sub");
    fs::create_dir(&sub).unwrap();
    let deeper = sub.join("third.iso");
    fs::rename(&renamed, &deeper).unwrap();
    wait_for("origin sub/third.iso", || {
        let m = env.medium("KEPT");
        (m["origin"] == deeper.to_str().unwrap())
            .then_some(())
            .ok_or(m.to_string())
    });
    env.wait_status(&["KEPT"]);
    assert_eq!(hello(&env, "KEPT").unwrap(), "hello from KEPT\n");

    // A second hard link, then the first one deleted: the medium is still there. A marker
    // image deleted after it tells when the watcher has settled the first delete (files that
    // left are settled oldest first).
    let marker = small_image(&env.drop, "marker.iso", "MARKER");
    env.wait_status(&["KEPT", "MARKER"]);
    let link = env.drop.join("link.iso");
    fs::hard_link(&deeper, &link).unwrap();
    fs::remove_file(&deeper).unwrap();
    fs::remove_file(&marker).unwrap();
    env.wait_status(&["KEPT"]);
    assert_eq!(env.medium("KEPT")["origin"], link.to_str().unwrap());
    fs::remove_file(&link).unwrap();
    env.wait_status(&[]);
}

#[test]
fn rename_out_of_the_tree_removes_the_medium() {
    if !can_run("rename out") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let img = small_image(&env.drop, "out.iso", "OUTBOUND");
    env.wait_status(&["OUTBOUND"]);
    fs::rename(img, env.outside("elsewhere").join("out.iso")).unwrap();
    env.wait_status(&[]);
}

#[test]
fn equal_labels_get_suffixes_and_keep_them_when_the_first_goes() {
    if !can_run("same label") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let first = small_image(&env.drop, "one.iso", "TWIN");
    env.wait_status(&["TWIN"]);
    let second = small_image(&env.drop, "two.iso", "TWIN");
    env.wait_status(&["TWIN", "TWIN-2"]);
    assert_eq!(env.medium("TWIN")["origin"], first.to_str().unwrap());
    assert_eq!(env.medium("TWIN-2")["origin"], second.to_str().unwrap());
    fs::remove_file(first).unwrap();
    env.wait_status(&["TWIN-2"]);
    assert_eq!(env.medium("TWIN-2")["origin"], second.to_str().unwrap());
    assert_eq!(hello(&env, "TWIN-2").unwrap(), "hello from TWIN\n");
}

#[test]
fn hostile_labels_each_give_one_safe_name_inside_the_root() {
    if !can_run("hostile labels") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let punct: String = "!#$%&()*+,-.:;<=>?@[]^_{|}~'\"/\\"
        .chars()
        .cycle()
        .take(32)
        .collect();
    let cases: &[(&str, &str, &str)] = &[
        ("etc.iso", "a/../../etc", "a_.._.._etc"),
        ("dotdot.iso", "..", "dotdot"),
        ("rf.iso", "-rf", "rf"),
        ("quote.iso", "quote'\"", "quote_"),
        ("trail.iso", "trailing   ", "trailing"),
        ("punct.iso", &punct, "punct"),
    ];
    for (file, label, _) in cases {
        genisoimage(&env.drop.join(file), label);
    }
    let want: Vec<&str> = cases.iter().map(|c| c.2).collect();
    env.wait_status(&want);
    for name in want {
        let hello = fs::read_to_string(env.root.join(name).join("hello.txt")).unwrap();
        assert_eq!(hello, "hello\n", "{name}");
    }
    // Nothing was made beside the root or the drop dir (the scratch dir is the test's).
    let base: BTreeSet<String> = fs::read_dir(env.root.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        base,
        ["drop", "root", "scratch", "state.json", "watch.log"]
            .map(String::from)
            .into()
    );
}

#[test]
fn image_without_a_label_is_named_after_its_file() {
    if !can_run("no label") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    genisoimage(&env.drop.join("Unlabelled Disc.iso"), "");
    genisoimage(&env.drop.join("stars.iso"), "***");
    env.wait_status(&["Unlabelled_Disc", "stars"]);
    assert_eq!(env.medium("stars")["label"], "***");
}

#[test]
fn image_in_a_subdirectory_made_after_start_appears() {
    if !can_run("nested") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let deep = env.drop.join("x/y");
    fs::create_dir_all(&deep).unwrap();
    small_image(&deep, "nested.iso", "NESTED");
    wait_for("NESTED", || hello(&env, "NESTED"));
    env.wait_status(&["NESTED"]);
}

#[test]
fn two_hundred_images_at_once_are_all_served_under_unique_names() {
    if !can_run("200 images") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let one = small_image(&scratch(&env), "many.iso", "MANY");
    for i in 0..200 {
        fs::copy(&one, env.drop.join(format!("many-{i:03}.iso"))).unwrap();
    }
    let want: Vec<String> = std::iter::once("MANY".to_owned())
        .chain((2..=200).map(|i| format!("MANY-{i}")))
        .collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    let doc = env.wait_status(&want);
    let origins: BTreeSet<&str> = doc["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["origin"].as_str().unwrap())
        .collect();
    assert_eq!(origins.len(), 200);
    assert_eq!(hello(&env, "MANY-137").unwrap(), "hello from MANY\n");
}

#[test]
fn malformed_images_beside_good_ones_are_not_served_and_the_watcher_stays_up() {
    if !can_run("malformed") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let w = Watcher::start_with(&env, &[]);
    let s = scratch(&env);
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("f{i}.txt"), vec![b'a' + i as u8; 3000]))
        .collect();
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let bad = s.join("bad.iso");
    mkiso(&bad, "BAD", &files);
    let bytes = fs::read(&bad).unwrap();
    // Cut in the middle of the directories: just past the descriptors (sector 16 on).
    let truncated = &bytes[..19 * 2048 + 100];
    fs::write(env.drop.join("truncated.iso"), truncated).unwrap();
    // Not an image at all.
    let garbage: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(env.drop.join("x.iso"), garbage).unwrap();
    // The root directory's first file record (after "." and "..") flipped to an impossible
    // length: the descriptors are fine, the root cannot be listed.
    let mut at = {
        let pvd = &bytes[16 * 2048..17 * 2048];
        u32::from_le_bytes(pvd[156 + 2..156 + 6].try_into().unwrap()) as usize * 2048
    };
    at += usize::from(bytes[at]);
    at += usize::from(bytes[at]);
    let mut flipped = bytes.clone();
    flipped[at] = 3;
    fs::write(env.drop.join("flipped.iso"), &flipped).unwrap();
    small_image(&env.drop, "good1.iso", "GOOD1");
    small_image(&env.drop, "good2.iso", "GOOD2");
    env.wait_status(&["GOOD1", "GOOD2"]);
    // Still up and still serving new images after all of that.
    small_image(&env.drop, "good3.iso", "GOOD3");
    env.wait_status(&["GOOD1", "GOOD2", "GOOD3"]);
    assert_eq!(hello(&env, "GOOD3").unwrap(), "hello from GOOD3\n");
    assert!(is_fuse_mount(&env.root));
    drop(w);
}

#[test]
fn kill_9_then_restart_gives_the_same_names_and_no_dead_mount() {
    if !can_run("kill -9 restart") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let w = Watcher::start_with(&env, &[]);
    // b.iso is dropped first and holds SAME; a.iso, which a scan sees first, holds SAME-2.
    small_image(&env.drop, "b.iso", "SAME");
    env.wait_status(&["SAME"]);
    small_image(&env.drop, "a.iso", "SAME");
    small_image(&env.drop, "c.iso", "OTHER");
    let before = env.wait_status(&["OTHER", "SAME", "SAME-2"]);
    w.kill9();
    // The root is a dead FUSE mount now.
    assert!(is_fuse_mount(&env.root));
    let err = fs::read_dir(&env.root).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");

    let w = Watcher::start_with(&env, &[]);
    let after = env.wait_status(&["OTHER", "SAME", "SAME-2"]);
    let by_name = |doc: &Value| -> BTreeSet<(String, String)> {
        doc["media"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].to_string(), m["origin"].to_string()))
            .collect()
    };
    assert_eq!(by_name(&after), by_name(&before));
    assert_eq!(mounts_at(&env.root), 1, "exactly one mount at the root");
    assert_eq!(hello(&env, "SAME-2").unwrap(), "hello from SAME\n");
    drop(w);
}

#[test]
fn file_open_while_its_image_is_deleted_reads_to_the_end() {
    if !can_run("open while deleted") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let img = env.drop.join("big.iso");
    mkiso(&img, "BIG", &[("big.bin", &big)]);
    let path = env.root.join("BIG/big.bin");
    let mut f = wait_for("BIG/big.bin", || {
        File::options()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .or_else(|_| File::open(&path))
            .map_err(|e| e.to_string())
    });
    let mut got = vec![0u8; 64 * 1024];
    f.read_exact(&mut got).unwrap();
    fs::remove_file(&img).unwrap();
    env.wait_status(&[]);
    f.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "content read after the delete differs");
}

#[test]
fn status_matches_the_root_at_every_step() {
    if !can_run("status") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let w = Watcher::start_with(&env, &[]);
    let check = |doc: &Value| {
        assert_eq!(doc["root"], env.root.to_str().unwrap());
        assert_eq!(doc["driver"], "fuse");
        assert_eq!(doc["pid"], w.pid());
        for m in doc["media"].as_array().unwrap() {
            let origin = Path::new(m["origin"].as_str().unwrap());
            assert!(origin.starts_with(&env.drop), "{m}");
            assert_eq!(m["source"], "dir", "{m}");
            assert!(m["loop"].is_null(), "{m}");
            let at = m["mounted_at"].as_str().unwrap();
            assert!(
                at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
                "mounted_at {at}"
            );
        }
    };
    check(&env.wait_status(&[]));
    small_image(&env.drop, "one.iso", "STEP_ONE");
    check(&env.wait_status(&["STEP_ONE"]));
    assert_eq!(env.medium("STEP_ONE")["label"], "STEP_ONE");
    small_image(&env.drop, "two.iso", "STEP_TWO");
    check(&env.wait_status(&["STEP_ONE", "STEP_TWO"]));
    fs::rename(env.drop.join("one.iso"), env.drop.join("uno.iso")).unwrap();
    wait_for("renamed origin", || {
        let m = env.medium("STEP_ONE");
        m["origin"]
            .as_str()
            .is_some_and(|o| o.ends_with("/uno.iso"))
            .then_some(())
            .ok_or(m.to_string())
    });
    check(&env.wait_status(&["STEP_ONE", "STEP_TWO"]));
    fs::remove_file(env.drop.join("two.iso")).unwrap();
    check(&env.wait_status(&["STEP_ONE"]));
}

#[test]
fn sighup_rescans_and_sigterm_stops_cleanly() {
    if !can_run("signals") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let mut w = Watcher::start_with(&env, &[]);
    small_image(&env.drop, "h.iso", "HUP");
    env.wait_status(&["HUP"]);
    let before = env.medium("HUP");
    w.signal(libc::SIGHUP);
    env.wait_log("SIGHUP: rescanning");
    // The rescan keeps what is served as it is, and events still flow.
    small_image(&env.drop, "h2.iso", "HUP2");
    env.wait_status(&["HUP", "HUP2"]);
    assert_eq!(env.medium("HUP"), before);
    let status = w.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit status {status}");
    assert_eq!(mounts_at(&env.root), 0, "root unmounted");
    assert!(env.state.exists(), "state file kept");
    assert!(env.names().is_empty());
}

/// The previous run served a disc from a drive; this run watches no drives, so that disc
/// cannot come back: its name is let go at start, and an image with the same label gets it
/// (not `DISC-2`, with `DISC` held for good).
#[test]
fn names_of_a_source_no_longer_watched_are_let_go_at_start() {
    if !can_run("names of a source no longer watched") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let previous = serde_json::json!({
        "root": env.root,
        "driver": "fuse",
        "pid": 1,
        "media": [{
            "name": "DISC",
            "label": "DISC",
            "source": "drive",
            "origin": "/dev/sr7",
            "mounted_at": "2026-01-01T00:00:00Z",
            "loop": null,
            "id": "drive:/dev/sr7",
            "mounted_at_unix": 1_767_225_600
        }]
    });
    fs::write(&env.state, previous.to_string()).unwrap();
    small_image(&env.drop, "d.iso", "DISC");
    let _w = Watcher::start_with(&env, &[]);
    env.wait_status(&["DISC"]);
}

#[test]
fn json_log_is_one_object_per_line_with_mounted_and_removed_lines() {
    if !can_run("json log") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let mut w = Watcher::start_with(&env, &["--log-format", "json"]);
    let image = small_image(&env.drop, "j.iso", "JSON_LOG");
    env.wait_status(&["JSON_LOG"]);
    // renamed, then deleted: the removal names the image where it was last
    let renamed = env.drop.join("j-renamed.iso");
    fs::rename(&image, &renamed).unwrap();
    wait_for("the rename in the status", || {
        (env.medium("JSON_LOG")["origin"] == renamed.to_str().unwrap())
            .then_some(())
            .ok_or("not yet".to_owned())
    });
    fs::remove_file(&renamed).unwrap();
    env.wait_log("\"removed\"");
    w.stop_with(libc::SIGTERM);
    let log = env.log_text();
    let (mut mounted, mut removed) = (0, 0);
    for line in log.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object: {line:?}: {e}"));
        assert!(v.is_object(), "{line}");
        if v["message"] == "mounted" || v["message"] == "removed" {
            // which medium, and which image it is
            assert_eq!(v["name"], "JSON_LOG", "{line}");
            if v["message"] == "mounted" {
                assert_eq!(v["origin"], image.to_str().unwrap(), "{line}");
                mounted += 1;
            } else {
                assert_eq!(v["origin"], renamed.to_str().unwrap(), "{line}");
                removed += 1;
            }
        }
    }
    assert_eq!((mounted, removed), (1, 1), "{log}");
}

#[test]
fn a_second_watcher_on_a_live_root_refuses_and_the_first_keeps_serving() {
    if !can_run("second watcher") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    fs::copy(
        common::fixtures().join("rockridge.iso"),
        env.drop.join("r.iso"),
    )
    .unwrap();
    env.wait_names(&["rockridge"]);
    let other_state = env.outside("state2").with_extension("json");
    let out = Command::new(common::bin())
        .arg("watch")
        .arg("--dir")
        .arg(env.outside("drop2"))
        .arg("--root")
        .arg(&env.root)
        .arg("--state")
        .arg(&other_state)
        .stdin(Stdio::null())
        .output()
        .expect("running a second watcher");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already mounted") && err.contains(&*env.root.to_string_lossy()),
        "{err}"
    );
    assert_eq!(
        mounts_at(&env.root),
        1,
        "no second mount stacked on the root"
    );
    assert_eq!(env.names(), BTreeSet::from(["rockridge".to_owned()]));
}

#[test]
fn symlinks_to_images_are_taken_unless_refused() {
    if !can_run("symlinks") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let img = small_image(&scratch(&env), "linked.iso", "LINKED");
    std::os::unix::fs::symlink(&img, env.drop.join("link.iso")).unwrap();
    env.wait_names(&["LINKED"]);
    assert_eq!(hello(&env, "LINKED").unwrap(), "hello from LINKED\n");

    let env2 = Env::new("isomgr-watch-");
    let _w2 = Watcher::start_with(&env2, &["--no-follow-symlinks"]);
    let img2 = small_image(&scratch(&env2), "linked.iso", "LINKED");
    std::os::unix::fs::symlink(&img2, env2.drop.join("link.iso")).unwrap();
    // A regular image after the link: once it is served, the link has been seen and refused.
    fs::copy(
        small_image(&scratch(&env2), "plain.iso", "PLAIN"),
        env2.drop.join("p.iso"),
    )
    .unwrap();
    env2.wait_names(&["PLAIN"]);
    _w2.signal(libc::SIGHUP);
    env2.wait_status(&["PLAIN"]);
}

/// The inotify watches a process holds (`inotify wd:` lines in its descriptors' fdinfo).
fn inotify_watches(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fdinfo");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

/// A symlink to a directory in the watched tree is not followed, as a scan does not follow
/// it: no inotify watch is placed on the tree it leads to (one to `/usr` would take tens of
/// thousands), and an image written there is not served (a rescan would not find it).
#[test]
fn symlinked_directories_are_neither_watched_nor_followed() {
    if !can_run("symlinked directories") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let elsewhere = env.outside("elsewhere");
    for i in 0..200 {
        fs::create_dir_all(elsewhere.join(format!("d{i}/e"))).unwrap();
    }
    fs::create_dir_all(env.drop.join("sub")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.drop.join("link")).unwrap();
    let w = Watcher::start_with(&env, &[]);
    let watches = inotify_watches(w.pid());
    // The drop dir and its one subdirectory, and the parents' watch: a handful, not 400.
    assert!(watches < 20, "{watches} inotify watches");
    let scratch = scratch(&env);
    fs::copy(
        small_image(&scratch, "via-link.iso", "VIA_LINK"),
        elsewhere.join("d7/e/via-link.iso"),
    )
    .unwrap();
    // A regular image after it: once that is served, the other would have been too.
    fs::copy(
        small_image(&scratch, "plain.iso", "PLAIN"),
        env.drop.join("sub/p.iso"),
    )
    .unwrap();
    env.wait_names(&["PLAIN"]);
    w.signal(libc::SIGHUP);
    env.wait_status(&["PLAIN"]);
    assert_eq!(env.names(), BTreeSet::from(["PLAIN".to_owned()]));

    // A watched directory that is itself a symlink is followed, with the tree below it.
    let env2 = Env::new("isomgr-watch-");
    let real = env2.outside("real-drop");
    fs::create_dir_all(real.join("sub/deeper")).unwrap();
    fs::remove_dir(&env2.drop).unwrap();
    std::os::unix::fs::symlink(&real, &env2.drop).unwrap();
    let _w2 = Watcher::start_with(&env2, &[]);
    fs::copy(
        small_image(&scratch, "deep.iso", "DEEP"),
        real.join("sub/deeper/deep.iso"),
    )
    .unwrap();
    env2.wait_names(&["DEEP"]);
    env2.wait_status(&["DEEP"]);
    assert_eq!(
        env2.medium("DEEP")["origin"],
        env2.drop.join("sub/deeper/deep.iso").to_str().unwrap()
    );
}

/// Whether process `pid` has an inotify watch on `dir`'s inode.
fn watches_inode(pid: u32, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let want = format!(" ino:{:x} ", fs::metadata(dir).unwrap().ino());
    fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .any(|info| {
            info.lines()
                .any(|l| l.starts_with("inotify wd:") && l.contains(&want))
        })
}

/// Each directory of the tree has its own inotify watch, kept right as directories move: one
/// renamed inside the tree, one moved in with a tree below it (watched down to its leaves)
/// and one moved out (watched no more: what is written there afterwards is not served).
#[test]
fn directories_renamed_moved_in_and_moved_out_keep_the_watches_right() {
    if !can_run("directories moving") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    fs::create_dir_all(env.drop.join("a/b")).unwrap();
    let w = Watcher::start_with(&env, &[]);
    let scratch = scratch(&env);
    let pid = w.pid();

    fs::rename(env.drop.join("a"), env.drop.join("c")).unwrap();
    let one = env.drop.join("c/b/one.iso");
    fs::copy(small_image(&scratch, "one.iso", "ONE"), &one).unwrap();
    env.wait_status(&["ONE"]);
    assert_eq!(env.medium("ONE")["origin"], one.to_str().unwrap());

    let outside = env.outside("tree");
    fs::create_dir_all(outside.join("t/u/v")).unwrap();
    fs::rename(outside.join("t"), env.drop.join("t")).unwrap();
    let deep = env.drop.join("t/u/v");
    wait_for("a watch on the moved-in tree's leaf", || {
        watches_inode(pid, &deep)
            .then_some(())
            .ok_or("none".to_owned())
    });
    fs::copy(
        small_image(&scratch, "two.iso", "TWO"),
        deep.join("two.iso"),
    )
    .unwrap();
    env.wait_status(&["ONE", "TWO"]);

    let away = outside.join("t2");
    fs::rename(env.drop.join("t"), &away).unwrap();
    env.wait_status(&["ONE"]);
    wait_for("no watch left on the moved-out tree", || {
        match watches_inode(pid, &away.join("u")) || watches_inode(pid, &away.join("u/v")) {
            true => Err("still watched".to_owned()),
            false => Ok(()),
        }
    });
    fs::copy(
        small_image(&scratch, "three.iso", "THREE"),
        away.join("u/three.iso"),
    )
    .unwrap();
    // A marker after it: once that is served, the other would have been too.
    fs::copy(
        small_image(&scratch, "marker.iso", "MARKER"),
        env.drop.join("c/marker.iso"),
    )
    .unwrap();
    env.wait_status(&["MARKER", "ONE"]);
    assert!(watches_inode(pid, &env.drop.join("c/b")));
}

/// An image inside a served medium, linked into the watched directory, is not served: the
/// watcher would read it through its own mount and keep that medium busy after it goes.
#[test]
fn a_symlink_to_an_image_inside_a_served_medium_is_not_served() {
    if !can_run("symlink into the root") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let mut w = Watcher::start_with(&env, &[]);
    let inner = fs::read(small_image(&scratch(&env), "inner.iso", "INNER")).unwrap();
    let outer = scratch(&env).join("outer.iso");
    mkiso(
        &outer,
        "OUTER",
        &[("inner.iso", &inner), ("hello.txt", b"hi\n")],
    );
    fs::copy(&outer, env.drop.join("outer.iso")).unwrap();
    env.wait_names(&["OUTER"]);
    let link = env.drop.join("inner.iso");
    std::os::unix::fs::symlink(env.root.join("OUTER/inner.iso"), &link).unwrap();
    // Also through a bind mount of the root, where the path does not show it.
    let mirror = scratch(&env).join("mirror");
    fs::create_dir(&mirror).unwrap();
    let bound = Command::new("mount")
        .arg("--bind")
        .arg(&env.root)
        .arg(&mirror)
        .status()
        .unwrap();
    assert!(bound.success(), "mount --bind {:?}", env.root);
    let via_mirror = env.drop.join("inner-via-mirror.iso");
    std::os::unix::fs::symlink(mirror.join("OUTER/inner.iso"), &via_mirror).unwrap();
    // A plain image after the link: once it is served, the link has been seen and refused.
    fs::copy(
        small_image(&scratch(&env), "plain.iso", "PLAIN"),
        env.drop.join("p.iso"),
    )
    .unwrap();
    env.wait_status(&["OUTER", "PLAIN"]);
    w.signal(libc::SIGHUP);
    env.wait_log("SIGHUP: rescanning");
    fs::remove_file(env.drop.join("p.iso")).unwrap();
    env.wait_status(&["OUTER"]);
    let log = env.log_text();
    assert!(
        log.contains("a symlink to a file inside a medium isomgr serves; not served"),
        "{log}"
    );
    assert!(log.contains(&*link.to_string_lossy()), "{log}");
    assert!(log.contains(&*via_mirror.to_string_lossy()), "{log}");
    let unbound = Command::new("umount").arg(&mirror).status().unwrap();
    assert!(unbound.success(), "umount {mirror:?}");
    // Nothing of the watcher's holds the medium: it goes, and the root unmounts at stop.
    fs::remove_file(env.drop.join("outer.iso")).unwrap();
    env.wait_status(&[]);
    w.stop_with(libc::SIGTERM);
    assert!(
        env.log_text().contains("FUSE filesystem unmounted"),
        "{}",
        env.log_text()
    );
}

/// Mounts a test made; each is lazily unmounted on drop (a failed test leaves none behind).
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn mount(&mut self, args: &[&std::ffi::OsStr], at: &Path) {
        let st = Command::new("mount").args(args).arg(at).status().unwrap();
        assert!(st.success(), "mount {args:?} {}", at.display());
        self.0.push(at.to_path_buf());
    }

    /// `umount -l`: the watcher still holds the images below it open.
    fn unmount(&mut self, at: &Path) {
        let st = Command::new("umount").arg("-l").arg(at).status().unwrap();
        assert!(st.success(), "umount -l {}", at.display());
        self.0.retain(|m| m != at);
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(at).status();
        }
    }
}

/// A file system mounted on the watched directory after the start (a USB disk, an NFS share
/// mounted late), one mounted inside it, and their unmounts: each time the directory leads to
/// another tree, whose images are served and followed with inotify, and the images of the tree
/// it left go.
#[test]
fn file_systems_mounted_on_and_inside_the_watched_directory_are_followed() {
    if !can_run("mounts on the watched directory") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let mut mounts = Mounts(Vec::new());
    let _w = Watcher::start_with(&env, &[]);
    let s = scratch(&env);
    fs::copy(
        small_image(&s, "under.iso", "UNDER"),
        env.drop.join("under.iso"),
    )
    .unwrap();
    env.wait_status(&["UNDER"]);
    // Mounted over: UNDER's path leads nowhere now; an image copied onto the new file system
    // is served, here one with the same label.
    mounts.mount(
        &["-t".as_ref(), "tmpfs".as_ref(), "isomgr-test".as_ref()],
        &env.drop,
    );
    env.wait_status(&[]);
    fs::copy(
        small_image(&s, "top.iso", "UNDER"),
        env.drop.join("top.iso"),
    )
    .unwrap();
    env.wait_status(&["UNDER"]);
    let origin = |name: &str| -> Option<String> {
        let doc = env.status().ok()?;
        let m = doc["media"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)?;
        m["origin"].as_str().map(str::to_owned)
    };
    let path = |p: PathBuf| Some(p.to_string_lossy().into_owned());
    assert_eq!(origin("UNDER"), path(env.drop.join("top.iso")));
    // Mounted inside, already holding an image (a bind mount of a directory elsewhere).
    let usb = env.outside("usb");
    fs::copy(small_image(&s, "usb.iso", "USB"), usb.join("usb.iso")).unwrap();
    let inside = env.drop.join("usb");
    fs::create_dir(&inside).unwrap();
    mounts.mount(&["--bind".as_ref(), usb.as_os_str()], &inside);
    env.wait_status(&["UNDER", "USB"]);
    assert_eq!(hello(&env, "USB").unwrap(), "hello from USB\n");
    // Followed there too: an image added and one deleted.
    fs::copy(small_image(&s, "usb2.iso", "USB2"), inside.join("usb2.iso")).unwrap();
    env.wait_status(&["UNDER", "USB", "USB2"]);
    fs::remove_file(inside.join("usb.iso")).unwrap();
    env.wait_status(&["UNDER", "USB2"]);
    // Unmounted inside, then on the directory: UNDER is back under its name, and the
    // directory below is watched again.
    mounts.unmount(&inside);
    env.wait_status(&["UNDER"]);
    // The image on the tmpfs goes before the one below is taken: it gets its name back.
    mounts.unmount(&env.drop);
    wait_for(
        "the image below the tmpfs to be back under its name",
        || match origin("UNDER") {
            o if o == path(env.drop.join("under.iso")) => Ok(()),
            o => Err(format!("UNDER is {o:?}, names {:?}", env.names())),
        },
    );
    env.wait_status(&["UNDER"]);
    fs::copy(
        small_image(&s, "again.iso", "AGAIN"),
        env.drop.join("again.iso"),
    )
    .unwrap();
    env.wait_status(&["AGAIN", "UNDER"]);
    fs::remove_file(env.drop.join("under.iso")).unwrap();
    env.wait_status(&["AGAIN"]);
    let log = env.log_text();
    assert!(
        log.contains("a file system was mounted or unmounted on the watched directory"),
        "{log}"
    );
}

#[test]
fn fifos_sockets_directories_hidden_and_partial_files_are_ignored_without_blocking() {
    if !can_run("ignored files") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let w = Watcher::start_with(&env, &[]);
    let img = small_image(&scratch(&env), "good.iso", "GOOD");
    let fifo = std::ffi::CString::new(env.drop.join("fifo.iso").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(env.drop.join("sock.iso")).unwrap();
    fs::create_dir(env.drop.join("dir.iso")).unwrap();
    for name in [".hidden.iso", "x.iso.part", "y.iso.tmp", "z.iso~", "w.img"] {
        fs::copy(&img, env.drop.join(name)).unwrap();
    }
    fs::copy(&img, env.drop.join("good.iso")).unwrap();
    env.wait_names(&["GOOD"]);
    // A full rescan walks past the FIFO and the socket without hanging, and takes nothing new.
    w.signal(libc::SIGHUP);
    wait_for("the rescan to be logged", || {
        if env.log_text().contains("SIGHUP") {
            Ok(())
        } else {
            Err("no SIGHUP line yet".into())
        }
    });
    fs::copy(
        small_image(&scratch(&env), "after.iso", "AFTER"),
        env.drop.join("after.iso"),
    )
    .unwrap();
    env.wait_status(&["AFTER", "GOOD"]);
}

#[test]
fn include_and_exclude_patterns_choose_the_files() {
    if !can_run("patterns") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(
        &env,
        &["--include", r"(?i)\.(iso|img)$", "--exclude", "^skip"],
    );
    let s = scratch(&env);
    fs::copy(small_image(&s, "a.iso", "AIMG"), env.drop.join("a.img")).unwrap();
    fs::copy(
        small_image(&s, "b.iso", "SKIPPED"),
        env.drop.join("skip-b.iso"),
    )
    .unwrap();
    fs::copy(small_image(&s, "c.iso", "CISO"), env.drop.join("c.ISO")).unwrap();
    env.wait_status(&["AIMG", "CISO"]);
}

#[test]
fn atomic_replace_of_a_path_is_a_new_medium() {
    if !can_run("atomic replace") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let s = scratch(&env);
    fs::copy(small_image(&s, "one.iso", "ONE"), env.drop.join("disc.iso")).unwrap();
    env.wait_names(&["ONE"]);
    // Written under a hidden temporary name (ignored), then renamed over the served path.
    fs::copy(
        small_image(&s, "two.iso", "TWO"),
        env.drop.join(".disc.iso.new"),
    )
    .unwrap();
    fs::rename(env.drop.join(".disc.iso.new"), env.drop.join("disc.iso")).unwrap();
    let doc = env.wait_status(&["TWO"]);
    assert_eq!(
        doc["media"][0]["origin"].as_str(),
        env.drop.join("disc.iso").to_str()
    );
    assert_eq!(hello(&env, "TWO").unwrap(), "hello from TWO\n");
}

#[test]
fn watched_directory_deleted_and_made_again_is_followed() {
    if !can_run("watched dir recreated") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let _w = Watcher::start_with(&env, &[]);
    let s = scratch(&env);
    fs::copy(small_image(&s, "a.iso", "BEFORE"), env.drop.join("a.iso")).unwrap();
    env.wait_names(&["BEFORE"]);
    fs::remove_dir_all(&env.drop).unwrap();
    env.wait_status(&[]);
    fs::create_dir(&env.drop).unwrap();
    fs::create_dir(env.drop.join("sub")).unwrap();
    fs::copy(
        small_image(&s, "b.iso", "AFTER"),
        env.drop.join("sub/b.iso"),
    )
    .unwrap();
    env.wait_status(&["AFTER"]);
}

#[test]
fn inotify_queue_overflow_triggers_a_rescan_that_reconciles() {
    if !can_run("overflow") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    // A tiny queue for this watcher's inotify instance only: the limit is read when the
    // instance is made, so the host setting is restored as soon as the watcher runs.
    let knob = Path::new("/proc/sys/fs/inotify/max_queued_events");
    let saved = fs::read_to_string(knob).expect("reading max_queued_events");
    fs::write(knob, "16").expect("lowering max_queued_events");
    let w = std::panic::catch_unwind(|| Watcher::start_with(&env, &[]));
    fs::write(knob, saved.trim()).expect("restoring max_queued_events");
    let watcher = w.unwrap_or_else(|e| std::panic::resume_unwind(e));

    let s = scratch(&env);
    let img = small_image(&s, "many.iso", "FLOOD");
    let again = env.drop.join("again");
    fs::create_dir(&again).unwrap();
    wait_for("a watch on the new directory", || {
        match watches_inode(watcher.pid(), &again) {
            true => Ok(()),
            false => Err("none yet".to_owned()),
        }
    });
    // Stopped meanwhile, so that the queue is full when the directories are made (one made
    // again): their events are lost with the others.
    watcher.signal(libc::SIGSTOP);
    for i in 0..120 {
        fs::copy(&img, env.drop.join(format!("f{i:03}.iso"))).unwrap();
    }
    for i in 0..60 {
        fs::remove_file(env.drop.join(format!("f{i:03}.iso"))).unwrap();
    }
    let lost = env.drop.join("made/during/overflow");
    fs::create_dir_all(&lost).unwrap();
    fs::remove_dir(&again).unwrap();
    fs::create_dir(&again).unwrap();
    watcher.signal(libc::SIGCONT);
    wait_for("an overflow to be logged", || {
        if env.log_text().contains("overflow") {
            Ok(())
        } else {
            Err("no overflow yet".into())
        }
    });
    // 60 media, each one of the files still there. (A count of 60 alone can be seen on the
    // way, with a deleted file not yet dropped while a copied one is not yet taken.)
    wait_for(
        "the 60 files left, and only those, served after the rescan",
        || {
            let doc = env.status()?;
            let media = doc["media"].as_array().cloned().unwrap_or_default();
            let gone: Vec<&str> = media
                .iter()
                .filter_map(|m| m["origin"].as_str())
                .filter(|o| !Path::new(o).exists())
                .collect();
            if media.len() == 60 && gone.is_empty() && env.names().len() == 60 {
                Ok(())
            } else {
                Err(format!(
                    "status {} (gone but served: {gone:?}), root {}",
                    media.len(),
                    env.names().len()
                ))
            }
        },
    );
    // The rescan watched the directories whose events were lost: an image written there is
    // served.
    let deep = lost.join("deep.iso");
    fs::copy(small_image(&s, "deep.iso", "DEEP"), &deep).unwrap();
    wait_for("DEEP", || hello(&env, "DEEP"));
    fs::copy(
        small_image(&s, "again.iso", "AGAIN"),
        again.join("again.iso"),
    )
    .unwrap();
    wait_for("AGAIN", || hello(&env, "AGAIN"));
}

/// How many times the threads of process `pid` have slept and been woken.
fn wake_ups(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Inside the watched directory, only what changes the set of images wakes the watcher: not
/// the images being opened and read (a backup, a checksum run, the watcher's own opens), nor
/// each write of a file being copied in (only its close). Two files in turn, so that the
/// kernel cannot merge repeated events into one.
#[test]
fn reads_and_writes_inside_the_watched_directory_do_not_wake_the_watcher() {
    if !can_run("reads and writes inside the watched directory") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let scratch = scratch(&env);
    for (file, label) in [("a.iso", "READ_A"), ("b.iso", "READ_B")] {
        fs::copy(small_image(&scratch, file, label), env.drop.join(file)).unwrap();
    }
    let w = Watcher::start_with(&env, &[]);
    env.wait_status(&["READ_A", "READ_B"]);
    std::thread::sleep(Duration::from_millis(300));
    let before = wake_ups(w.pid());
    let mut buf = vec![0u8; 4096];
    for i in 0..1000 {
        let file = if i % 2 == 0 { "a.iso" } else { "b.iso" };
        let mut f = File::open(env.drop.join(file)).unwrap();
        f.read_exact(&mut buf).unwrap();
    }
    let mut logs: Vec<File> = ["one.log", "two.log"]
        .iter()
        .map(|n| File::create(env.drop.join(n)).unwrap())
        .collect();
    for i in 0..1000 {
        writeln!(logs[i % 2], "line {i}").unwrap();
    }
    drop(logs);
    std::thread::sleep(Duration::from_millis(300));
    let woke = wake_ups(w.pid()) - before;
    assert!(
        woke < 50,
        "1,000 opens and 1,000 writes inside the watched directory woke the watcher {woke} times"
    );
    // What changes the set of images still does.
    fs::remove_file(env.drop.join("b.iso")).unwrap();
    env.wait_status(&["READ_A"]);
}

/// An image refused because serving it would give away a root-only file (a hard link to it)
/// is served as soon as it is made readable by all, as the log line says, with no rescan.
#[test]
fn a_refused_image_made_readable_by_all_is_served_at_once() {
    use std::os::unix::fs::PermissionsExt;
    if !can_run("refused image made readable") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let secret = small_image(&scratch(&env), "secret.iso", "SECRET");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(&secret, env.drop.join("link.iso")).unwrap();
    let _w = Watcher::start_with(&env, &[]);
    env.wait_log("a hard link to a file not readable by all; not served");
    env.wait_status(&[]);
    fs::set_permissions(env.drop.join("link.iso"), fs::Permissions::from_mode(0o644)).unwrap();
    env.wait_names(&["SECRET"]);
    env.wait_status(&["SECRET"]);
}

/// The watched directory's parent is watched only for the directory coming back: a log or a
/// state file written beside it (here the watcher's own log lives there too) wakes nothing.
#[test]
fn writes_beside_the_watched_directory_do_not_wake_the_watcher() {
    if !can_run("writes beside the watched directory") {
        return;
    }
    let env = Env::new("isomgr-watch-");
    let w = Watcher::start_with(&env, &[]);
    env.wait_status(&[]);
    let switches = || wake_ups(w.pid());
    let before = switches();
    let beside = env.base.join("app.log");
    for i in 0..1000 {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&beside)
            .unwrap();
        writeln!(f, "line {i}").unwrap();
    }
    fs::rename(&beside, env.base.join("app.log.1")).unwrap();
    // Time for any wake-up to happen (what is counted is wake-ups, not time).
    std::thread::sleep(Duration::from_millis(300));
    let woke = switches() - before;
    assert!(
        woke < 50,
        "1,000 writes beside the watched directory woke the watcher {woke} times"
    );
}
