//! A running `isomgr watch --driver fuse` on a temp dir of its own (drop dir, root, state file,
//! log, scratch dir), for the end-to-end tests that drive it from outside (`web`, `yank`).
//! Every wait polls for its condition with a deadline; nothing sleeps to wait.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any one condition may take to come true.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Between two looks at a condition.
pub const POLL: Duration = Duration::from_millis(10);

/// Whether this host can run the watcher with the FUSE driver; under CI=true a missing piece
/// is a failure, elsewhere the test says why it skips.
pub fn can_run(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if !(root && fuse) {
        let why = format!("{test}: needs root ({root}) and /dev/fuse ({fuse})");
        assert!(!super::in_ci(), "{why}");
        eprintln!("SKIPPED {why}");
        return false;
    }
    true
}

/// Polls `f` until it gives `Ok`; panics at `deadline` with the last `Err` (what was seen).
pub fn wait_within<T>(what: &str, deadline: Duration, f: impl FnMut() -> Result<T, String>) -> T {
    wait_every(what, deadline, POLL, f)
}

/// [`wait_within`], looking every `every` (for looks that cost more than a file read).
pub fn wait_every<T>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(seen) if start.elapsed() > deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// [`wait_within`] the default [`DEADLINE`].
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Result<T, String>) -> T {
    wait_within(what, DEADLINE, f)
}

/// The lines of /proc/self/mountinfo whose mount point is `dir` or below it. Other tests on the
/// same host mount and unmount elsewhere meanwhile, so only this subtree is comparable.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let dir = dir.to_string_lossy().into_owned();
    let below = format!("{dir}/");
    info.lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m == dir || m.starts_with(&below))
        })
        .map(str::to_owned)
        .collect()
}

/// Inode count statfs(2) reports for `path`: for the FUSE root, the nodes in the watcher's
/// table (those of present media, and of removed ones the kernel still references).
pub fn statfs_files(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.to_str().expect("UTF-8 path")).unwrap();
    // SAFETY: `buf` is plain data the call fills in; `c` is a valid C string.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        assert_eq!(
            libc::statfs(c.as_ptr(), &mut buf),
            0,
            "statfs {}",
            path.display()
        );
        buf.f_files
    }
}

/// Whether a FUSE filesystem is mounted exactly at `path`.
pub fn is_fuse_mount(path: &Path) -> bool {
    mounts_under(path).iter().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.get(4).is_some_and(|m| Path::new(m) == path)
            && f.iter()
                .skip_while(|x| **x != "-")
                .nth(1)
                .is_some_and(|t| t.starts_with("fuse"))
    })
}

/// One test's directories: the drop dir (watched), the root, the state file, the log, and a
/// scratch dir on the same file system that is not watched (images are built there and moved in).
pub struct Env {
    _tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub drop: PathBuf,
    pub root: PathBuf,
    pub scratch: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
}

impl Env {
    pub fn new(prefix: &str) -> Env {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir");
        let base = tmp.path().canonicalize().expect("canonical temp dir");
        let [drop, root, scratch] = ["drop", "root", "scratch"].map(|d| base.join(d));
        for d in [&drop, &root, &scratch] {
            fs::create_dir(d).expect("making a test dir");
        }
        Env {
            state: base.join("state.json"),
            log: base.join("watch.log"),
            drop,
            root,
            scratch,
            base,
            _tmp: tmp,
        }
    }

    /// A directory in the same file system as the drop dir, not watched.
    pub fn outside(&self, name: &str) -> PathBuf {
        let p = self.base.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// `isomgr status --json` for this state file.
    pub fn status(&self) -> Result<Value, String> {
        let out = super::isomgr(&["status", "--json", "--state", self.state.to_str().unwrap()]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Waits until status lists exactly the names the root lists, and those are `want`;
    /// returns the status document.
    pub fn wait_status(&self, want: &[&str]) -> Value {
        self.wait_names(want);
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        wait_for(&format!("status listing {want:?}"), || {
            let doc = self.status()?;
            let got: BTreeSet<String> = doc["media"]
                .as_array()
                .ok_or("no media array")?
                .iter()
                .map(|m| m["name"].as_str().unwrap_or("?").to_owned())
                .collect();
            if got == want && self.names() == want {
                Ok(doc)
            } else {
                Err(format!("status {got:?}, root {:?}", self.names()))
            }
        })
    }

    /// The status record for `name`.
    pub fn medium(&self, name: &str) -> Value {
        let doc = self.status().expect("status");
        doc["media"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in status {doc}"))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the watcher's log holds `what`.
    pub fn wait_log(&self, what: &str) {
        wait_for(&format!("{what:?} in the log"), || {
            self.log_text()
                .contains(what)
                .then_some(())
                .ok_or("not yet".to_owned())
        });
    }

    /// The names in the root, as a listing through the mount shows them.
    pub fn names(&self) -> BTreeSet<String> {
        fs::read_dir(&self.root)
            .expect("listing the root")
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    /// Waits until the root lists exactly `want`.
    pub fn wait_names(&self, want: &[&str]) {
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        wait_for(&format!("root listing {want:?}"), || {
            let got = self.names();
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        })
    }
}

/// `isomgr watch --driver fuse` on an [`Env`]'s drop dir, root and state file, its log
/// (ISOMGR_LOG: WATCH_TEST_LOG, else isomgr=debug) appended to the env's log file; more
/// arguments and environment can follow before it is spawned.
pub fn watch_command(env: &Env) -> Command {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&env.log)
        .expect("log file");
    let mut cmd = Command::new(super::bin());
    cmd.arg("watch")
        .arg("--dir")
        .arg(&env.drop)
        .arg("--root")
        .arg(&env.root)
        .arg("--state")
        .arg(&env.state)
        .args(["--driver", "fuse"])
        .env(
            "ISOMGR_LOG",
            std::env::var("WATCH_TEST_LOG").unwrap_or("isomgr=debug".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

/// A running `isomgr watch --driver fuse` on an [`Env`]; dropping it stops the watcher
/// (SIGTERM, then SIGKILL) and lazily unmounts the root if it is still mounted.
pub struct Watcher {
    child: Child,
    root: PathBuf,
    log: PathBuf,
    /// Leave a mount at the root on drop (to test what a restart does with it).
    keep_mount: bool,
}

impl Watcher {
    /// Starts the watcher and waits until it serves: the root is a FUSE mount and the state
    /// file is this process's (written once the sources are running).
    pub fn start(env: &Env) -> Watcher {
        Self::start_with(env, &[])
    }

    /// [`Watcher::start`] with more arguments after the test's own.
    pub fn start_with(env: &Env, extra: &[&str]) -> Watcher {
        let child = watch_command(env)
            .args(extra)
            .spawn()
            .expect("starting isomgr watch");
        let mut w = Watcher {
            child,
            root: env.root.clone(),
            log: env.log.clone(),
            keep_mount: false,
        };
        let pid = w.pid();
        wait_for("the watcher to mount its root and write its state", || {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!("isomgr watch exited early ({status}):\n{}", env.log_text());
            }
            let state: Value = fs::read(&env.state)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or("no state file yet")?;
            if is_fuse_mount(&env.root) && state["pid"] == pid {
                Ok(())
            } else {
                Err(format!("state pid {}", state["pid"]))
            }
        });
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: sending a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, sig) }, 0);
    }

    /// `kill -9`: the process dies and leaves its dead FUSE mount at the root.
    pub fn kill9(mut self) {
        self.stop_with(libc::SIGKILL);
        self.keep_mount = true;
    }

    /// Sends `sig` and waits for the process to end; its exit status.
    pub fn stop_with(&mut self, sig: libc::c_int) -> std::process::ExitStatus {
        self.signal(sig);
        let child = &mut self.child;
        wait_for("the watcher to exit", || {
            child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_owned())
        })
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Resident set size (VmRSS, KiB) from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading the watcher's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The targets of the watcher's open descriptors (/proc/PID/fd), e.g. "/x/a.iso (deleted)".
    pub fn open_files(&self) -> Vec<String> {
        let Ok(dir) = fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return Vec::new();
        };
        dir.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .map(|t| t.to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.alive() {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
            let start = Instant::now();
            while self.alive() && start.elapsed() < DEADLINE {
                std::thread::sleep(POLL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.keep_mount && !mounts_under(&self.root).is_empty() {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- watcher log {} ---\n{}",
                self.log.display(),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Builds an image at `out` with `isomgr mkiso` and volume label `label` from `src`.
pub fn mkiso(src: &Path, out: &Path, label: &str) {
    let made = super::isomgr(&[
        "mkiso",
        src.to_str().expect("UTF-8 path"),
        "-o",
        out.to_str().expect("UTF-8 path"),
        &format!("--volume-label={label}"),
    ]);
    assert!(
        made.status.success(),
        "mkiso {}: {}",
        out.display(),
        String::from_utf8_lossy(&made.stderr)
    );
}

/// Deterministic pseudo-random bytes (xorshift64*), incompressible enough for transfer tests.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}
