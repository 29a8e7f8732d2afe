//! Shared helpers for the integration tests: the built binary, fixture paths, external tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod stallfs;
pub mod udf;
pub mod watcher;

/// `e.run(a)`; if its mount goes on in the background (slower than `offload::WAIT`, as in a
/// slow guest or on a loaded machine), the outcome once it has returned.
pub fn run_kernel<S: isomgr::sys::Sys>(
    e: &mut isomgr::exec::KernelExecutor<S>,
    a: &isomgr::manager::Action,
) -> Option<isomgr::event::Event> {
    let before = e.mounting();
    if let Some(ev) = e.run(a) {
        return Some(ev);
    }
    if e.mounting() <= before {
        return None;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(ev) = e.finish_late().pop() {
            return Some(ev);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a mount has not returned in 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_isomgr"))
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn isomgr(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("running isomgr")
}

/// Runs `cmd` and returns its output; fails the test, with its standard error, if it did not
/// succeed.
pub fn output_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running a command");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// True under CI, where a test that cannot run must fail instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether the test runs as root. If not, a test that needs root for `what` says why it
/// skips (false); under CI that is a failure.
pub fn root_for(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(!in_ci(), "{what} needs root under CI");
    eprintln!("SKIP: {what} needs root");
    false
}

/// Whether an external tool is on PATH. Missing under CI is a failure; elsewhere the test says
/// why it skips and returns false.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !in_ci(),
            "{tool} is required under CI=true but is not installed"
        );
        eprintln!("SKIP: {tool} is not installed (scripts/setup.sh installs it)");
    }
    found
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every fixture manifest: (image path, parsed manifest).
pub fn manifests() -> Vec<(PathBuf, serde_json::Value)> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(fixtures()).expect("fixtures/ exists") {
        let p = ent.expect("reading fixtures/").path();
        if p.to_string_lossy().ends_with(".tree.json") {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).expect("reading manifest"))
                    .expect("manifest is JSON");
            let image = fixtures().join(m["image"].as_str().expect("manifest names its image"));
            out.push((image, m));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 13,
        "expected the fixture images, found {}",
        out.len()
    );
    out
}

/// Serialises tests that attach loop devices (a host-wide resource) across test binaries:
/// an exclusive flock on one file, released when the guard drops.
pub struct LoopLock(#[allow(dead_code)] std::fs::File);

pub fn loop_lock() -> LoopLock {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open("/tmp/isomgr-tests-loop.lock")
        .expect("opening the loop lock");
    // SAFETY: a valid descriptor; flock blocks until the lock is ours.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
    assert_eq!(rc, 0, "taking the loop lock");
    LoopLock(f)
}

/// (device, backing file) of every loop device, from `losetup -J -l`.
pub fn loops() -> Vec<(String, String)> {
    let out = std::process::Command::new("losetup")
        .args(["-J", "-l"])
        .output()
        .expect("losetup");
    assert!(out.status.success(), "losetup -J -l");
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("losetup JSON");
    v["loopdevices"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["name"].as_str().unwrap_or("").to_owned(),
                        d["back-file"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The loop devices whose backing file is `image` (also once the file was deleted).
pub fn loops_backed_by(image: &Path) -> Vec<String> {
    let image = image.to_string_lossy();
    loops()
        .into_iter()
        .filter(|(_, b)| b.trim_end_matches(" (deleted)") == image)
        .map(|(d, _)| d)
        .collect()
}

/// (mount point, options, fstype, source) of every mount, read from mountinfo by hand.
pub fn mountinfo() -> Vec<(String, String, String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some((
                pre.get(4)?.replace("\\040", " "),
                pre.get(5)?.to_string(),
                post.first()?.to_string(),
                post.get(1)?.to_string(),
            ))
        })
        .collect()
}
