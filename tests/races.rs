//! Swaps under a running watcher: one name in the watched dir, `x.iso`, is replaced over and over
//! (rename over it, so the watcher often looks at the name after it changed again) by something
//! that must never be served, and back to a regular image:
//!
//! - a block device (a loop device attached to an image labelled BLOCKDEV): the node itself and
//!   a symlink to it; a character device (1:3, /dev/null): the node and a symlink; a FIFO with
//!   no writer; a directory;
//! - a hard link to a root-only file (mode 0600): an image labelled SECRET, and non-image bytes;
//!   a symlink made by another user (nobody) to that root-only image. The watcher runs as root:
//!   serving those would publish a file their maker could not read.
//!
//! Measured: nothing but REGULAR (and FRESH at the end) ever listed in the root by a thread
//! that lists it all along, nor in a `mounted` line of the log; no device or FIFO ever opened by
//! the watcher (an inotify watch for IN_OPEN on their nodes; the test itself never opens them;
//! an O_PATH look does not count, it does not reach the driver); at sync points every
//! [`SYNC_EVERY`] swaps, the root shows what is in place (REGULAR with its bytes, or nothing);
//! after the loop an image dropped beside it is served within [`FRESH_WITHIN`] (no hang), the
//! process answers, and the watcher holds no descriptor of any of those things.
//!
//! 2,000 swaps with ISOMGR_FULL=1, 200 otherwise. Prints one line of figures. Needs root and
//! /dev/fuse; without them it says so and skips, or fails under CI=true.

mod common;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::watcher::{self, statfs_files, Env, Watcher, DEADLINE, POLL};

/// Between two checks of the root against what is in place.
const SYNC_EVERY: usize = 25;
/// How soon an image dropped after the loop must be readable.
const FRESH_WITHIN: Duration = Duration::from_secs(2);
/// The user that makes the foreign symlink.
const NOBODY: u32 = 65534;

fn swaps() -> usize {
    if std::env::var("ISOMGR_FULL").is_ok_and(|v| v == "1") {
        2000
    } else {
        200
    }
}

/// What can be put at `x.iso`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Regular,
    BlockNode,
    SymlinkToBlock,
    CharNode,
    SymlinkToChar,
    Fifo,
    Directory,
    HardlinkToSecretImage,
    HardlinkToSecretBytes,
    ForeignSymlinkToSecret,
}

const UNSERVABLE: [Kind; 9] = [
    Kind::BlockNode,
    Kind::SymlinkToBlock,
    Kind::CharNode,
    Kind::SymlinkToChar,
    Kind::Fifo,
    Kind::Directory,
    Kind::HardlinkToSecretImage,
    Kind::HardlinkToSecretBytes,
    Kind::ForeignSymlinkToSecret,
];

/// A loop device attached read-only to an image, detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) {
    // SAFETY: a valid C string path.
    let rc = unsafe { libc::mknod(cpath(p).as_ptr(), mode, dev) };
    assert_eq!(rc, 0, "mknod {}", p.display());
}

/// Counts IN_OPEN on a few inodes (the nodes of the devices and the FIFO).
struct OpenWatch {
    fd: libc::c_int,
    opens: usize,
}

impl OpenWatch {
    fn new(paths: &[&Path]) -> OpenWatch {
        // SAFETY: plain syscalls on our own descriptor and valid C strings.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0, "inotify_init1");
            for p in paths {
                let wd = libc::inotify_add_watch(fd, cpath(p).as_ptr(), libc::IN_OPEN);
                assert!(wd >= 0, "inotify_add_watch {}", p.display());
            }
            OpenWatch { fd, opens: 0 }
        }
    }

    /// Reads what is queued; the opens seen so far.
    fn drain(&mut self) -> usize {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer we own, of its length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return self.opens;
            }
            let mut off = 0;
            while off < n as usize {
                let ev = &buf[off..];
                let mask = u32::from_ne_bytes(ev[4..8].try_into().unwrap());
                let len = u32::from_ne_bytes(ev[12..16].try_into().unwrap()) as usize;
                assert_eq!(mask & libc::IN_Q_OVERFLOW, 0, "the open watch overflowed");
                if mask & libc::IN_OPEN != 0 {
                    self.opens += 1;
                }
                off += 16 + len;
            }
        }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// The things that are swapped in, kept at home in the scratch dir (hard links of them are
/// moved in, so the homes stay and an inotify watch on them sees every open).
struct Homes {
    scratch: PathBuf,
    target: PathBuf,
    regular: PathBuf,
    block: PathBuf,
    chr: PathBuf,
    fifo: PathBuf,
    secret_image: PathBuf,
    secret_bytes: PathBuf,
}

impl Homes {
    fn put(&self, kind: Kind, current: Kind) {
        let stage = self.scratch.join("stage");
        match kind {
            Kind::Regular => {
                fs::copy(&self.regular, &stage).unwrap();
            }
            Kind::BlockNode => fs::hard_link(&self.block, &stage).unwrap(),
            Kind::SymlinkToBlock => std::os::unix::fs::symlink(&self.block, &stage).unwrap(),
            Kind::CharNode => fs::hard_link(&self.chr, &stage).unwrap(),
            Kind::SymlinkToChar => std::os::unix::fs::symlink(&self.chr, &stage).unwrap(),
            Kind::Fifo => fs::hard_link(&self.fifo, &stage).unwrap(),
            Kind::Directory => {
                fs::create_dir(&stage).unwrap();
                fs::write(stage.join("readme.txt"), b"not an image\n").unwrap();
            }
            Kind::HardlinkToSecretImage => fs::hard_link(&self.secret_image, &stage).unwrap(),
            Kind::HardlinkToSecretBytes => fs::hard_link(&self.secret_bytes, &stage).unwrap(),
            Kind::ForeignSymlinkToSecret => {
                std::os::unix::fs::symlink(&self.secret_image, &stage).unwrap();
                std::os::unix::fs::lchown(&stage, Some(NOBODY), Some(NOBODY)).unwrap();
            }
        }
        // rename(2) replaces a file atomically, but neither puts a directory over a file nor
        // anything over a directory: those go first.
        if current == Kind::Directory {
            fs::remove_dir_all(&self.target).unwrap();
        } else if kind == Kind::Directory {
            fs::remove_file(&self.target).unwrap();
        }
        fs::rename(&stage, &self.target).unwrap();
    }

    /// (device, inode) of every home that must never be opened or held.
    fn forbidden(&self) -> BTreeSet<(u64, u64)> {
        [
            &self.block,
            &self.chr,
            &self.fifo,
            &self.secret_image,
            &self.secret_bytes,
        ]
        .iter()
        .map(|p| {
            let m = fs::symlink_metadata(p).unwrap();
            (m.dev(), m.ino())
        })
        .collect()
    }
}

/// What the lister saw: names other than the regular ones, and REGULAR with other bytes.
#[derive(Default)]
struct Seen {
    listings: usize,
    /// Every name listed other than REGULAR and FRESH.
    foreign: BTreeSet<String>,
    /// Listings with a name of something that is not a regular image.
    foreign_listings: usize,
    /// Listings with REGULAR-2 or the like.
    dup_listings: usize,
    wrong_bytes: usize,
}

const REGULAR_HELLO: &str = "regular\n";

fn hello(root: &Path, name: &str) -> Result<String, String> {
    fs::read_to_string(root.join(name).join("hello.txt")).map_err(|e| e.to_string())
}

/// Polls until `ok` or `within`; whether it came true and how long it took.
fn settle(within: Duration, mut ok: impl FnMut() -> bool) -> (bool, Duration) {
    let start = Instant::now();
    loop {
        if ok() {
            return (true, start.elapsed());
        }
        if start.elapsed() > within {
            return (false, start.elapsed());
        }
        std::thread::sleep(POLL);
    }
}

#[test]
fn swapped_in_devices_fifos_dirs_and_foreign_links_are_never_served() {
    if !watcher::can_run("races") || !common::have_tool("losetup") {
        return;
    }
    let n = swaps();
    let env = Env::new("isomgr-races-");
    let mut w = Watcher::start(&env);

    let image = |label: &str, file: &str, body: &[u8]| {
        let src = env.scratch.join(format!("src-{label}"));
        fs::create_dir(&src).unwrap();
        fs::write(src.join("hello.txt"), body).unwrap();
        let out = env.scratch.join(file);
        watcher::mkiso(&src, &out, label);
        out
    };
    let regular = image("REGULAR", "regular.iso", REGULAR_HELLO.as_bytes());
    let fresh = image("FRESH", "fresh.iso", b"fresh\n");
    let blockdev_image = image("BLOCKDEV", "blockdev.iso", b"on a block device\n");
    let secret_image = image("SECRET", "secret.iso", b"root only\n");
    fs::set_permissions(&secret_image, fs::Permissions::from_mode(0o600)).unwrap();
    let secret_bytes = env.scratch.join("secret.bin");
    fs::write(&secret_bytes, watcher::noise(64 << 10, 7)).unwrap();
    fs::set_permissions(&secret_bytes, fs::Permissions::from_mode(0o600)).unwrap();

    // The block device: a loop device on BLOCKDEV, and a node of our own for it (so that the
    // only opens of that node are the watcher's: udev also opens /dev/loopN).
    let _lock = common::loop_lock();
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(&blockdev_image)
        .output()
        .expect("running losetup");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lo = Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    let rdev = fs::metadata(&lo.0).unwrap().rdev();
    let homes = Homes {
        scratch: env.scratch.clone(),
        target: env.drop.join("x.iso"),
        regular,
        block: env.scratch.join("block.node"),
        chr: env.scratch.join("null.node"),
        fifo: env.scratch.join("fifo"),
        secret_image,
        secret_bytes,
    };
    mknod(&homes.block, libc::S_IFBLK | 0o600, rdev);
    mknod(&homes.chr, libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    // SAFETY: a valid C string path.
    assert_eq!(
        unsafe { libc::mkfifo(cpath(&homes.fifo).as_ptr(), 0o644) },
        0,
        "mkfifo"
    );
    let mut opens = OpenWatch::new(&[&homes.block, &homes.chr, &homes.fifo]);

    // The lister: the root, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let lister = {
        let (stop, seen, root) = (stop.clone(), seen.clone(), env.root.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let names: Vec<String> = match fs::read_dir(&root) {
                    Ok(rd) => rd
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect(),
                    Err(_) => continue,
                };
                let mut s = seen.lock().unwrap();
                s.listings += 1;
                // REGULAR-2 and the like: a regular image under another name because the one
                // before it was still listed (stale); anything else: what must not be served.
                let (dup, foreign): (Vec<&String>, Vec<&String>) = names
                    .iter()
                    .filter(|n| *n != "REGULAR" && *n != "FRESH")
                    .partition(|n| n.starts_with("REGULAR-") || n.starts_with("FRESH-"));
                if !foreign.is_empty() {
                    s.foreign_listings += 1;
                }
                if !dup.is_empty() {
                    s.dup_listings += 1;
                }
                s.foreign.extend(foreign.into_iter().chain(dup).cloned());
                drop(s);
                if names.iter().any(|n| n == "REGULAR") {
                    if let Ok(text) = hello(&root, "REGULAR") {
                        if text != REGULAR_HELLO {
                            seen.lock().unwrap().wrong_bytes += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // The swaps: even ones put a regular image back, odd ones one of the others in turn.
    let mut pace = 0x9e37_79b9_7f4a_7c15_u64;
    let mut current = Kind::Regular;
    homes.put(Kind::Regular, Kind::Regular);
    let (mut syncs, mut stale, mut max_sync) = (0, Vec::new(), Duration::ZERO);
    let started = Instant::now();
    for i in 1..=n {
        let kind = if i % 2 == 0 {
            Kind::Regular
        } else {
            UNSERVABLE[(i / 2) % UNSERVABLE.len()]
        };
        homes.put(kind, current);
        current = kind;
        if i % SYNC_EVERY == 0 {
            syncs += 1;
            let (ok, took) = settle(DEADLINE, || {
                let names = env.names();
                if kind == Kind::Regular {
                    names.len() == 1 && hello(&env.root, "REGULAR").as_deref() == Ok(REGULAR_HELLO)
                } else {
                    names.is_empty()
                }
            });
            max_sync = max_sync.max(took);
            if !ok {
                stale.push(format!("swap {i} ({kind:?}): root {:?}", env.names()));
            }
        } else {
            // Mostly a short pause, sometimes none: the watcher often looks at a name that
            // has already changed again.
            pace ^= pace << 13;
            pace ^= pace >> 7;
            pace ^= pace << 17;
            std::thread::sleep(Duration::from_micros(pace % 3000)); // the pace of the swapper
        }
    }
    let swap_time = started.elapsed();
    if current != Kind::Regular {
        homes.put(Kind::Regular, current);
    }

    // No hang: a fresh image beside it is served at once, and the process answers.
    let staged = env.scratch.join("fresh-stage.iso");
    fs::copy(&fresh, &staged).unwrap();
    let dropped = Instant::now();
    fs::rename(&staged, env.drop.join("fresh.iso")).unwrap();
    let (fresh_ok, _) = settle(FRESH_WITHIN, || hello(&env.root, "FRESH").is_ok());
    let fresh_ms = dropped.elapsed().as_millis();
    let hangs = usize::from(!fresh_ok) + usize::from(!w.alive());
    assert!(statfs_files(&env.root) > 0, "statfs of the root answers");
    let want: BTreeSet<String> = ["FRESH", "REGULAR"].map(String::from).into();
    let (final_ok, _) = settle(DEADLINE, || {
        env.names() == want && hello(&env.root, "REGULAR").as_deref() == Ok(REGULAR_HELLO)
    });
    let final_names = env.names();
    stop.store(true, Ordering::Relaxed);
    lister.join().unwrap();

    // The watcher holds nothing of what it must not serve.
    let forbidden = homes.forbidden();
    let held = fs::read_dir(format!("/proc/{}/fd", w.pid()))
        .unwrap()
        .flatten()
        .filter_map(|e| fs::metadata(e.path()).ok())
        .filter(|m| forbidden.contains(&(m.dev(), m.ino())))
        .count();
    let device_opens = opens.drain();
    let log = env.log_text();
    let mounted_foreign: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(" mounted name=")
                && !l.contains(" mounted name=REGULAR ")
                && !l.contains(" mounted name=FRESH ")
        })
        .collect();
    let s = seen.lock().unwrap();
    println!(
        "races: swaps={n} kinds={} served_nonregular={} mounted_nonregular={} device_opens={device_opens} \
         held={held} wrong_bytes={} renamed_regular={} stale={}/{syncs} hangs={hangs} fresh_ms={fresh_ms} \
         final={} max_sync_ms={} listings={} swap_s={:.1}",
        UNSERVABLE.len() + 1,
        s.foreign_listings,
        mounted_foreign.len(),
        s.wrong_bytes,
        s.dup_listings,
        stale.len(),
        if final_ok { "ok" } else { "wrong" },
        max_sync.as_millis(),
        s.listings,
        swap_time.as_secs_f64(),
    );
    assert!(
        s.foreign.is_empty(),
        "listed in the root while swapping: {:?}",
        s.foreign
    );
    assert!(mounted_foreign.is_empty(), "{mounted_foreign:#?}");
    assert_eq!(device_opens, 0, "the watcher opened a device or FIFO node");
    assert_eq!(
        held, 0,
        "the watcher holds a descriptor of a device, FIFO or secret"
    );
    assert_eq!(s.wrong_bytes, 0, "REGULAR read with other bytes");
    assert!(
        stale.is_empty(),
        "the root lagged what is in place: {stale:#?}"
    );
    assert_eq!(hangs, 0, "FRESH not served within {FRESH_WITHIN:?}");
    assert!(final_ok, "final root {final_names:?}, want {want:?}");
}
