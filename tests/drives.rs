//! The drives source end to end, with a real systemd-udevd and real loop devices standing in
//! for discs (`--drives-any-block`): `isomgr watch` is the built binary, served through the
//! FUSE driver; results are checked through the mounted root and the watcher's JSON log.
//!
//! Needs root, loop devices, /dev/fuse and a running systemd-udevd (scripts/setup.sh starts
//! it); without them each test says so and skips, or fails under CI=true. Loop-device work
//! holds a host-wide flock (/tmp/isomgr-tests-loop.lock) shared with the other test binaries:
//! a watcher taking any block device would otherwise pick up their loop devices too.

mod common;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use isomgr::event::{Event, MediumId};
use isomgr::source::drives::{DrivesConfig, DrivesSource};
use isomgr::source::Source;

/// How long a udev event may take to reach the watcher and be acted on.
const DEADLINE: Duration = Duration::from_secs(20);

fn can_run(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let loops = Path::new("/dev/loop-control").exists();
    let fuse = Path::new("/dev/fuse").exists();
    let udevd = Path::new("/run/udev/control").exists();
    if root && loops && fuse && udevd {
        return true;
    }
    let why = format!(
        "{test}: needs root ({root}), loop devices ({loops}), /dev/fuse ({fuse}) and a running \
         systemd-udevd ({udevd}; scripts/setup.sh starts it)"
    );
    assert!(!common::in_ci(), "{why}");
    eprintln!("SKIPPED {why}");
    false
}

/// The start of most tests here: `None` (skipped, or failed under CI) when `test` cannot run;
/// else the loop-device lock, taken once udev has settled, and a scratch directory.
fn begin(test: &str) -> Option<(LoopLock, tempfile::TempDir)> {
    if !can_run(test) {
        return None;
    }
    let lock = LoopLock::take();
    settle();
    Some((lock, tempfile::tempdir().unwrap()))
}

/// The host-wide lock around loop-device work, held for a whole test.
struct LoopLock(#[allow(dead_code)] File);

impl LoopLock {
    fn take() -> LoopLock {
        let f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open("/tmp/isomgr-tests-loop.lock")
            .expect("opening the loop lock");
        // SAFETY: valid fd; flock blocks until the lock is ours.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock");
        LoopLock(f)
    }
}

/// A loop device this test attached; detached when the test ends, however it ends.
struct Loop(String);

impl Loop {
    fn attach(backing: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(backing)
            .output()
            .expect("running losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    /// `losetup -c`: the kernel re-reads the backing file's size (0 = an empty tray).
    fn set_capacity(&self) {
        let st = Command::new("losetup")
            .args(["-c", &self.0])
            .status()
            .unwrap();
        assert!(st.success(), "losetup -c {}", self.0);
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
        // A detach while udev's blkid still has the device open is deferred to its close:
        // let udev finish, so the next test does not find this medium still attached.
        settle();
    }
}

/// Runs `udevadm ARGS`, which must succeed.
fn udevadm(args: &[&str]) {
    let st = Command::new("udevadm")
        .args(args)
        .status()
        .expect("running udevadm");
    assert!(st.success(), "udevadm {}", args.join(" "));
}

/// What udev holds for the device node `dev` (`udevadm info --query=property`).
fn udev_props(dev: &str) -> String {
    let out = Command::new("udevadm")
        .args(["info", "--query=property", "--name", dev])
        .output()
        .expect("running udevadm info");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 100 ms (a QMP round trip or a udevadm run per look) until it gives `Ok`,
/// for at most [`DEADLINE`]; see [`common::watcher::wait_every`].
fn poll<T>(what: &str, f: impl FnMut() -> Result<T, String>) -> T {
    common::watcher::wait_every(what, DEADLINE, Duration::from_millis(100), f)
}

/// Waits until udev has processed every queued event (udev's own wait, not a sleep).
fn settle() {
    udevadm(&["settle", "--timeout=20"]);
}

/// A running `isomgr watch`, its JSON log lines on a channel; stopped (SIGTERM) on drop.
struct Watcher {
    child: Child,
    root: PathBuf,
    lines: mpsc::Receiver<serde_json::Value>,
    /// Every line seen so far, for failure messages.
    seen: Vec<String>,
}

impl Watcher {
    fn start(dir: &Path) -> Watcher {
        Watcher::start_with(dir, &["--drives-any-block"])
    }

    /// [`Watcher::start`] with `args` instead of `--drives-any-block`.
    fn start_with(dir: &Path, args: &[&str]) -> Watcher {
        let root = dir.join("root");
        let drop = dir.join("drop");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&drop).unwrap();
        let mut child = Command::new(common::bin())
            .args(["watch", "--drives", "--log-format", "json"])
            .args(args)
            .arg("--dir")
            .arg(&drop)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(dir.join("state.json"))
            .env("ISOMGR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting isomgr watch");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "message": line }));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut w = Watcher {
            child,
            root,
            lines,
            seen: Vec::new(),
        };
        w.wait_for("the watcher to start", |v| v["message"] == "watching");
        w
    }

    /// Waits for a log line `pred` accepts; returns it. Fails at the deadline or if the
    /// watcher exits.
    fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.to_string());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(e) => panic!(
                    "waiting for {what}: {e:?}; log so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until the medium from `device` is served; returns its name.
    fn wait_mounted(&mut self, device: &str) -> String {
        let v = self.wait_for(&format!("{device} to be served"), |v| {
            v["message"] == "mounted" && v["origin"] == device
        });
        v["name"].as_str().unwrap().to_owned()
    }

    /// Waits until the medium from `device` is no longer served.
    fn wait_removed(&mut self, device: &str) {
        let prefix = format!("drive:{device}:");
        self.wait_for(&format!("{device} to be removed"), |v| {
            v["message"] == "removed"
                && v["medium"].as_str().is_some_and(|m| m.starts_with(&prefix))
        });
    }

    fn names(&self) -> HashSet<String> {
        fs::read_dir(&self.root)
            .expect("reading the root")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if std::thread::panicking() {
            while let Ok(v) = self.lines.try_recv() {
                self.seen.push(v.to_string());
            }
            eprintln!("--- watcher log ---\n{}", self.seen.join("\n"));
        }
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Last resort: never leave a dead FUSE mount behind.
        let c = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string for the call.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A copy of a fixture image in `dir` (fixtures are never modified).
fn copy_fixture(name: &str, dir: &Path, to: &str) -> PathBuf {
    let path = dir.join(to);
    fs::copy(common::fixtures().join(name), &path).unwrap();
    path
}

/// Writes `fixture`'s bytes over `path` in place (same inode, as the loop device holds it).
fn overwrite(path: &Path, fixture: &str) {
    fs::write(path, fs::read(common::fixtures().join(fixture)).unwrap()).unwrap();
}

/// Every file of a fixture's manifest reads back through `dir` with the recorded sha256.
fn assert_serves(dir: &Path, fixture: &str) {
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(common::fixtures().join(fixture.replace(".iso", ".tree.json"))).unwrap(),
    )
    .unwrap();
    let mut files = 0;
    for e in manifest["entries"].as_array().unwrap() {
        if e["type"] != "file" {
            continue;
        }
        let rel = e["path"].as_str().unwrap().trim_start_matches('/');
        let data = fs::read(dir.join(rel)).unwrap_or_else(|err| {
            panic!("reading {}: {err}", dir.join(rel).display());
        });
        assert_eq!(
            common::sha256_hex(&data),
            e["sha256"].as_str().unwrap(),
            "{rel}"
        );
        files += 1;
    }
    assert!(files > 0, "{fixture} has files");
}

#[test]
fn loop_device_attached_outside_is_served_emptied_refilled_and_swapped() {
    let Some((_lock, tmp)) =
        begin("loop_device_attached_outside_is_served_emptied_refilled_and_swapped")
    else {
        return;
    };
    let mut w = Watcher::start(tmp.path());
    let image = copy_fixture("plain.iso", tmp.path(), "disc.iso");

    // Inserted: attached outside isomgr, it appears under the root.
    let dev = Loop::attach(&image);
    let name = w.wait_mounted(&dev.0);
    assert_eq!(name, "ISOMGR_PLAIN");
    assert_serves(&w.root.join(&name), "plain.iso");

    // Emptied: capacity 0 is how a drive reports an empty tray.
    fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(0)
        .unwrap();
    dev.set_capacity();
    w.wait_removed(&dev.0);
    assert!(!w.names().contains(&name));

    // The same disc back: the same name.
    overwrite(&image, "plain.iso");
    dev.set_capacity();
    assert_eq!(w.wait_mounted(&dev.0), name);
    assert_serves(&w.root.join(&name), "plain.iso");

    // Another disc swapped in with no empty tray between: the old name goes, the new is served.
    overwrite(&image, "joliet.iso");
    dev.set_capacity();
    w.wait_removed(&dev.0);
    let new = w.wait_mounted(&dev.0);
    assert_eq!(new, "_n_c_d_J_liet");
    let names = w.names();
    assert!(!names.contains(&name), "{names:?}");
    assert_serves(&w.root.join(&new), "joliet.iso");
}

#[test]
fn loop_device_present_before_start_is_served() {
    let Some((_lock, tmp)) = begin("loop_device_present_before_start_is_served") else {
        return;
    };
    let image = copy_fixture("rockridge.iso", tmp.path(), "before.iso");
    let dev = Loop::attach(&image);
    // udev has seen the device (and blkid its label) before the watcher starts.
    settle();
    let mut w = Watcher::start(tmp.path());
    let name = w.wait_mounted(&dev.0);
    assert_serves(&w.root.join(&name), "rockridge.iso");
}

/// Sticks or disks formatted with UDF on blocks of 512 bytes (as mkudffs formats a disk) and
/// of 4096: `--drives-any-block` takes them (udev says udf) and the FUSE driver serves each,
/// named after its label, its root listed.
#[test]
fn sticks_formatted_with_udf_on_small_or_large_blocks_are_served() {
    let test = "sticks_formatted_with_udf_on_small_or_large_blocks_are_served";
    let Some((_lock, tmp)) = begin(test) else {
        return;
    };
    if !common::have_tool("mkudffs") {
        return;
    }
    let mut w = Watcher::start(tmp.path());
    for bs in ["512", "4096"] {
        let image = tmp.path().join(format!("stick-{bs}.img"));
        File::create(&image).unwrap().set_len(8 << 20).unwrap();
        let label = format!("UDF_STICK_{bs}");
        let out = Command::new("mkudffs")
            .args(["-b", bs, &format!("--label={label}")])
            .arg(&image)
            .output()
            .unwrap();
        assert!(out.status.success(), "mkudffs -b {bs}: {out:?}");
        let dev = Loop::attach(&image);
        assert_eq!(w.wait_mounted(&dev.0), label);
        assert_eq!(fs::read_dir(w.root.join(&label)).unwrap().count(), 0);
        // Detached (`losetup -d`): isomgr lets it go.
        let node = dev.0.clone();
        drop(dev);
        w.wait_removed(&node);
    }
}

/// A medium whose reads hang (a scratched disc the drive retries on for minutes) holds up no
/// other device: its identification goes on in the background while another device's medium
/// is served, and it is served once its reads answer. Its image lives on a FUSE file system
/// this test serves itself and holds the reads of ([`common::stallfs`]).
#[test]
fn a_device_whose_reads_hang_holds_up_no_other() {
    let test = "a_device_whose_reads_hang_holds_up_no_other";
    if !common::watcher::can_run(test) {
        return;
    }
    let Some((_lock, tmp)) = begin(test) else {
        return;
    };
    let (stall, slow) = stallable_device(tmp.path());
    // udev (blkid) has read it; from now on nothing of it can be read.
    stall.hold("slow.iso");
    let mut w = Watcher::start(tmp.path());
    let _release = stall.release_on_drop();
    poll("isomgr's reads of the held device", || {
        match stall.waiting() {
            0 => Err("none held yet".into()),
            _ => Ok(()),
        }
    });
    let _fast = serve_another(&mut w, tmp.path());

    stall.release();
    let name = w.wait_mounted(&slow.0);
    assert_serves(&w.root.join(&name), "rockridge.iso");
    assert!(
        w.seen
            .iter()
            .any(|l| l.contains("the medium has not answered yet")),
        "{}",
        w.seen.join("\n")
    );
}

/// A device already served whose reads start to hang holds up no other either. udev reports a
/// change on it (its blkid answers from the page cache); isomgr then asks the device itself
/// whether the medium is still the one it serves, and that question waits in the background
/// while another device's medium is served. Once the device answers, the same medium stays
/// served under the same name.
#[test]
fn a_change_on_a_served_device_whose_reads_hang_holds_up_no_other() {
    let test = "a_change_on_a_served_device_whose_reads_hang_holds_up_no_other";
    if !common::watcher::can_run(test) {
        return;
    }
    let Some((_lock, tmp)) = begin(test) else {
        return;
    };
    let (stall, slow) = stallable_device(tmp.path());
    let mut w = Watcher::start(tmp.path());
    let _release = stall.release_on_drop();
    let name = w.wait_mounted(&slow.0);
    assert_serves(&w.root.join(&name), "rockridge.iso");

    stall.hold("slow.iso");
    udevadm(&["trigger", "--action=change", &slow.0]);
    w.wait_for(
        "the served device's answer to be awaited in the background",
        |v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the medium has not answered yet"))
                && v["device"] == slow.0.as_str()
        },
    );
    let _fast = serve_another(&mut w, tmp.path());

    stall.release();
    w.wait_for("the served device's answer", |v| {
        v["message"] == "the device has answered: still the medium it serves"
            && v["device"] == slow.0.as_str()
    });
    assert_serves(&w.root.join(&name), "rockridge.iso");
    let prefix = format!("drive:{}:", slow.0);
    assert!(
        !w.seen
            .iter()
            .any(|l| l.contains("\"removed\"") && l.contains(&prefix)),
        "{}",
        w.seen.join("\n")
    );
}

/// `losetup -d` of a loop device isomgr serves: the kernel defers the detach to the last close
/// and sends no event, it only sets the device's autoclear flag. isomgr notices that, lets go
/// of the device (its directory goes), and the kernel then detaches it.
#[test]
fn losetup_d_of_a_served_loop_device_lets_it_go() {
    let Some((_lock, tmp)) = begin("losetup_d_of_a_served_loop_device_lets_it_go") else {
        return;
    };
    let image = copy_fixture("plain.iso", tmp.path(), "plain.iso");
    let mut w = Watcher::start(tmp.path());
    let dev = Loop::attach(&image);
    let name = w.wait_mounted(&dev.0);
    assert_serves(&w.root.join(&name), "plain.iso");

    let st = Command::new("losetup")
        .args(["-d", &dev.0])
        .status()
        .unwrap();
    assert!(st.success(), "losetup -d {}", dev.0);
    w.wait_removed(&dev.0);
    assert!(!w.names().contains(&name));
    let sysname = dev.0.trim_start_matches("/dev/");
    let backing = PathBuf::from(format!("/sys/class/block/{sysname}/loop/backing_file"));
    poll("the kernel to detach the device", || {
        match backing.exists() {
            true => Err(format!("{} still attached", dev.0)),
            false => Ok(()),
        }
    });
    // Attached again meanwhile (another disc in the same node): served.
    let again = Loop::attach(&image);
    assert_eq!(w.wait_mounted(&again.0), name);
}

/// A loop device attached with autoclear on (as `mount -o loop` and isomgr's kernel driver
/// attach theirs) goes away with its user's last close; serving it would keep it attached, so
/// it is not taken.
#[test]
fn a_loop_device_with_autoclear_on_is_not_taken() {
    use isomgr::sys::{linux::LinuxSys, Sys};
    let Some((_lock, tmp)) = begin("a_loop_device_with_autoclear_on_is_not_taken") else {
        return;
    };
    let mut w = Watcher::start(tmp.path());
    let held = copy_fixture("rockridge.iso", tmp.path(), "held.iso");
    // Attached through a descriptor this test holds: freed by the kernel when it closes.
    let dev = LinuxSys
        .attach_loop(&File::open(&held).unwrap(), &held, true)
        .expect("attaching a loop device with autoclear");
    let node = dev.path.to_str().unwrap().to_owned();
    w.wait_for(&format!("{node} to be passed over"), |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("a loop device with autoclear on"))
            && v["device"] == node.as_str()
    });
    let _other = serve_another(&mut w, tmp.path());
    assert!(
        !w.seen
            .iter()
            .any(|l| l.contains("\"mounted\"") && l.contains(&format!("\"{node}\""))),
        "{}",
        w.seen.join("\n")
    );
    drop(dev);
}

/// A loop device over `rockridge.iso` on a [`common::stallfs`] file system under `dir`, whose
/// reads the test holds and releases (file `slow.iso`). udev has read it when this returns.
fn stallable_device(dir: &Path) -> (common::stallfs::StallFs, Loop) {
    let (backing, at) = (dir.join("backing"), dir.join("stalled"));
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&at).unwrap();
    copy_fixture("rockridge.iso", &backing, "slow.iso");
    let stall = common::stallfs::StallFs::mount(&backing, &at);
    let slow = Loop::attach(&at.join("slow.iso"));
    settle();
    (stall, slow)
}

/// Attaches another device, `plain.iso`, and waits until `w` serves it.
fn serve_another(w: &mut Watcher, dir: &Path) -> Loop {
    let image = copy_fixture("plain.iso", dir, "fast.iso");
    let fast = Loop::attach(&image);
    let name = w.wait_mounted(&fast.0);
    assert_serves(&w.root.join(&name), "plain.iso");
    fast
}

/// The drives source itself, in process: loop devices backed by files isomgr attached are
/// never taken, while another loop device attached after it is.
#[test]
fn own_loop_devices_are_not_picked_up() {
    let Some((_lock, tmp)) = begin("own_loop_devices_are_not_picked_up") else {
        return;
    };
    let own = copy_fixture("plain.iso", tmp.path(), "own.iso");
    let other = copy_fixture("joliet.iso", tmp.path(), "other.iso");
    let cfg = DrivesConfig {
        any_block: true,
        own_loops: Default::default(),
    };
    cfg.own_loops.lock().unwrap().insert(own.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(64);
    let source = Box::new(DrivesSource::spawn(cfg, tx).expect("starting the drives source"));
    // Forwarded to a std channel, to wait with a deadline.
    let (fwd, events) = mpsc::channel();
    let forwarder = std::thread::spawn(move || {
        while let Some(ev) = rx.blocking_recv() {
            if fwd.send(ev).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + DEADLINE;
    let next = || -> Event {
        events
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("an event from the drives source in time")
    };
    // The enumeration at start ends with ScanDone.
    while !matches!(next(), Event::ScanDone { .. }) {}

    let own_dev = Loop::attach(&own);
    // udev has broadcast the first device's event before the second is attached, so the
    // source has received it by the time the second one's arrives.
    settle();
    let other_dev = Loop::attach(&other);
    let own_prefix = format!("drive:{}:", own_dev.0);
    loop {
        match next() {
            Event::Appeared(m) if m.origin == Path::new(&other_dev.0) => {
                assert_eq!(m.label.as_deref(), Some("Ünïcödé Jöliet"));
                break;
            }
            Event::Appeared(m) => assert_ne!(m.origin, Path::new(&own_dev.0), "own loop taken"),
            Event::Vanished(MediumId(id)) => assert!(!id.starts_with(&*own_prefix)),
            _ => {}
        }
    }
    // Close every descriptor the source opened before the loop devices are detached.
    source.stop();
    drop(events);
    forwarder.join().unwrap();
    drop((own_dev, other_dev));
}

/// A udev rules file in /run/udev/rules.d for the length of a test (one there of the same name
/// as one in /lib/udev/rules.d replaces it).
struct RunRules(PathBuf);

impl RunRules {
    fn install(name: &str, rules: &str) -> RunRules {
        let dir = Path::new("/run/udev/rules.d");
        fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, rules).unwrap();
        udevadm(&["control", "--reload"]);
        RunRules(path)
    }
}

impl Drop for RunRules {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
        // No assertion here: a panic while a failed test unwinds would abort the run.
        let _ = Command::new("udevadm")
            .args(["control", "--reload"])
            .status();
    }
}

/// Rules that make loop devices whose backing file is named `*isomgr-fake-drive*` look like
/// optical drives with a disc in (`ID_CDROM=1`, `ID_CDROM_MEDIA=1`), and turn a synthetic
/// uevent carrying `ISOMGREJECT=1` into the eject button (`DISK_EJECT_REQUEST=1`, what the
/// kernel's cdrom layer sends).
const FAKE_DRIVE_RULES: &str = "\
SUBSYSTEM==\"block\", KERNEL==\"loop*\", ACTION!=\"remove\", ATTR{loop/backing_file}==\"*isomgr-fake-drive*\", ENV{ID_CDROM}=\"1\", ENV{ID_CDROM_MEDIA}=\"1\"
SUBSYSTEM==\"block\", KERNEL==\"loop*\", ACTION==\"change\", ENV{SYNTH_ARG_ISOMGREJECT}==\"1\", ENV{DISK_EJECT_REQUEST}=\"1\"
";

/// Sends a synthetic `change` uevent for `dev` (`/sys/block/NAME/uevent`), with `args` as
/// `SYNTH_ARG_` properties.
fn synthetic_change(dev: &str, args: &str) {
    let sys = Path::new("/sys/class/block")
        .join(Path::new(dev).file_name().unwrap())
        .join("uevent");
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    let line = format!("change {} {args}", uuid.trim());
    fs::write(&sys, line.trim_end()).unwrap_or_else(|e| {
        panic!("writing {}: {e}", sys.display());
    });
}

/// The eject button on an optical drive: isomgr takes the disc's directory away at once
/// (a file already open keeps reading), says who still holds it, and asks the drive to open
/// its tray. The same disc back in the drive gets the same name.
#[test]
fn eject_button_unmounts_names_the_holders_and_reinsert_keeps_the_name() {
    if !can_run("eject_button_unmounts_names_the_holders_and_reinsert_keeps_the_name") {
        return;
    }
    let _lock = LoopLock::take();
    let _rule = RunRules::install("99-isomgr-test-fake-drive.rules", FAKE_DRIVE_RULES);
    settle();
    let tmp = tempfile::tempdir().unwrap();
    let image = copy_fixture("plain.iso", tmp.path(), "isomgr-fake-drive-1.iso");
    let dev = Loop::attach(&image);
    settle();
    let props = udev_props(&dev.0);
    assert!(
        props.contains("ID_CDROM=1") && props.contains("ID_FS_LABEL=ISOMGR_PLAIN"),
        "the rule makes {} an optical drive with a disc in:\n{props}",
        dev.0
    );

    let mut w = Watcher::start(tmp.path());
    let name = w.wait_mounted(&dev.0);
    assert_eq!(name, "ISOMGR_PLAIN");
    let served = w.root.join(&name);
    assert_serves(&served, "plain.iso");
    // A download in flight: this process holds a file of the disc open.
    let mut held = File::open(served.join("DOCS/MANUAL.TXT")).unwrap();

    synthetic_change(&dev.0, "ISOMGREJECT=1");
    w.wait_for("the eject button to be seen", |v| {
        v["message"] == "eject button" && v["device"] == dev.0.as_str()
    });
    w.wait_removed(&dev.0);
    assert!(!w.names().contains(&name), "{name} gone after the eject");
    let me = format!("[{}]", std::process::id());
    let busy = w.wait_for("the holders to be named", |v| {
        v["message"] == "still in use after unpublishing" && v["device"] == dev.0.as_str()
    });
    assert!(
        busy["holders"].as_str().is_some_and(|h| h.contains(&me)),
        "this process ({me}) holds a file: {busy}"
    );
    // A loop device has no tray: CDROMEJECT is refused, and said so.
    w.wait_for("the tray to be asked to open", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("eject failed"))
            && v["device"] == dev.0.as_str()
    });
    // The open file reads on, to the end, from the disc that was taken away.
    let mut text = String::new();
    std::io::Read::read_to_string(&mut held, &mut text).unwrap();
    assert!(text.contains("manual"), "{text:?}");
    drop(held);

    // The same disc back in the drive: the same name, served again.
    synthetic_change(&dev.0, "");
    assert_eq!(w.wait_mounted(&dev.0), name);
    assert_serves(&served, "plain.iso");
}

/// A netlink socket on udevd's multicast group, as libudev's monitor makes it (credentials
/// passed), with the receive buffer `rcvbuf` bytes (the kernel's minimum if smaller).
fn udev_socket(rcvbuf: libc::c_int) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain integer arguments; every result is checked; the structs outlive the calls.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_KOBJECT_UEVENT,
        );
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        for (opt, val) in [(libc::SO_PASSCRED, &one), (libc::SO_RCVBUF, &rcvbuf)] {
            let rc = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (val as *const libc::c_int).cast(),
                int,
            );
            assert_eq!(
                rc,
                0,
                "setsockopt {opt}: {}",
                std::io::Error::last_os_error()
            );
        }
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = 2;
        let rc = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        owned
    }
}

/// udevd's broadcasts read with isomgr's own parser (the drives source reads them so, not
/// through libudev's device objects): each carries what udev holds for the device (the node's
/// absolute path, DEVPATH, SUBSYSTEM, ACTION, the arguments of a synthetic event), and a
/// socket that overflowed says so (the source then looks at every drive again) instead of
/// losing events silently.
#[test]
fn udev_broadcasts_parse_and_an_overflowed_socket_says_so() {
    use isomgr::source::uevent::{receive, Received};
    use std::os::fd::AsRawFd;
    if !can_run("udev_broadcasts_parse_and_an_overflowed_socket_says_so") {
        return;
    }
    let _lock = LoopLock::take();
    let dev = fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("loop"))
        .min()
        .expect("a loop device in /sys/block");

    let sock = udev_socket(1 << 20);
    synthetic_change(&dev, "ISOMGRTEST=parse");
    let deadline = Instant::now() + DEADLINE;
    let props = loop {
        assert!(Instant::now() < deadline, "no udev broadcast for {dev}");
        match receive(sock.as_raw_fd()).expect("receiving") {
            Received::Properties(p)
                if p.iter()
                    .any(|(k, v)| k == "SYNTH_ARG_ISOMGRTEST" && v == "parse") =>
            {
                break p
            }
            Received::Empty => std::thread::sleep(Duration::from_millis(5)),
            _ => {}
        }
    };
    let get = |key: &str| {
        props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("ACTION"), Some("change"), "{props:?}");
    assert_eq!(get("SUBSYSTEM"), Some("block"), "{props:?}");
    assert_eq!(
        get("DEVNAME"),
        Some(format!("/dev/{dev}").as_str()),
        "{props:?}"
    );
    assert!(
        get("DEVPATH").is_some_and(|p| p.ends_with(&format!("/{dev}"))),
        "{props:?}"
    );
    assert!(get("SEQNUM").is_some(), "{props:?}");

    // A buffer far smaller than the burst: the kernel drops what does not fit.
    let small = udev_socket(1);
    for i in 0..20 {
        synthetic_change(&dev, &format!("ISOMGRTEST=burst{i}"));
    }
    settle();
    let (mut overflowed, mut taken) = (false, 0);
    loop {
        match receive(small.as_raw_fd()).expect("receiving") {
            Received::Overflowed => overflowed = true,
            Received::Properties(_) => taken += 1,
            Received::Ignored(why) => panic!("a broadcast of udevd's was ignored: {why}"),
            Received::Empty => break,
        }
    }
    assert!(
        overflowed,
        "20 broadcasts into a minimal buffer, {taken} taken, no overflow reported"
    );
    assert!(taken < 20, "all 20 broadcasts fit a minimal buffer");
}

/// QEMU's monitor, reached from the guest of scripts/kernel-vm.sh over its control port
/// (`ISOMGR_VM_CONTROL`: one QMP command per line, its reply back).
struct Qemu {
    port: File,
    replies: BufReader<File>,
}

impl Qemu {
    /// Runs one QMP command; its reply (`{"return": ...}` or `{"error": ...}`).
    fn qmp(&mut self, execute: &str, arguments: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        let cmd = serde_json::json!({ "execute": execute, "arguments": arguments });
        writeln!(self.port, "{cmd}").expect("writing to the control port");
        let mut line = String::new();
        self.replies
            .read_line(&mut line)
            .expect("reading the control port");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{cmd}: reply {line:?}: {e}"))
    }
}

/// A real optical drive: one of the SCSI CD-ROM drives of the QEMU guest scripts/kernel-vm.sh
/// boots (the kernel's sr driver, udev's cdrom_id and blkid, the drive's tray and door lock),
/// its disc changed, its eject button pressed and the drive itself unplugged from outside the
/// guest through QEMU's monitor.
struct RealDrive {
    /// The drive's node (`/dev/srN`).
    dev: String,
    /// The drive's id in QEMU (from `ISOMGR_VM_DRIVES`).
    qdev: String,
    /// Its SCSI target number: the N-th drive of `ISOMGR_VM_DRIVES` is at target N.
    target: usize,
    qemu: std::rc::Rc<std::cell::RefCell<Qemu>>,
}

impl RealDrive {
    /// The guest's first drive, emptied (the others too); see [`RealDrive::take_all`].
    fn take() -> RealDrive {
        RealDrive::take_all().swap_remove(0)
    }

    /// The guest's drives, emptied; fails outside the guest (the tests that take them are
    /// `#[ignore]`d there, and scripts/test.sh runs them in the guest).
    fn take_all() -> Vec<RealDrive> {
        let (Ok(control), Ok(drives)) = (
            std::env::var("ISOMGR_VM_CONTROL"),
            std::env::var("ISOMGR_VM_DRIVES"),
        ) else {
            panic!(
                "a real optical drive is needed: run this in the guest of scripts/kernel-vm.sh \
                 (bash scripts/kernel-vm.sh target/debug/deps/drives-HASH --ignored), as \
                 scripts/test.sh does"
            );
        };
        let port = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&control)
            .unwrap_or_else(|e| panic!("opening the control port {control}: {e}"));
        let replies = BufReader::new(port.try_clone().unwrap());
        let qemu = std::rc::Rc::new(std::cell::RefCell::new(Qemu { port, replies }));
        drives
            .split_whitespace()
            .enumerate()
            .map(|(target, qdev)| {
                let dev = sr_device(target)
                    .unwrap_or_else(|| panic!("an sr device at SCSI target {target} ({qdev})"));
                let d = RealDrive {
                    dev,
                    qdev: qdev.to_owned(),
                    target,
                    qemu: qemu.clone(),
                };
                assert!(
                    d.udev().contains("ID_CDROM=1"),
                    "udev's cdrom_id takes {} for an optical drive:\n{}",
                    d.dev,
                    d.udev()
                );
                d.yank();
                d
            })
            .collect()
    }

    fn qmp(&self, execute: &str, arguments: serde_json::Value) -> serde_json::Value {
        self.qemu.borrow_mut().qmp(execute, arguments)
    }

    /// rr-joliet.iso put in, then `isomgr watch ARGS` started on `dir` (see
    /// [`Watcher::start_with`]); the watcher and the name it serves the disc under.
    fn serve_first(&self, dir: &Path, args: &[&str]) -> (Watcher, String) {
        self.insert(&common::fixtures().join("rr-joliet.iso"));
        self.wait_udev(Some("RR and Joliet long label"));
        let mut w = Watcher::start_with(dir, args);
        let name = w.wait_mounted(&self.dev);
        (w, name)
    }

    /// QEMU's view of the drive (an entry of `query-block`).
    fn state(&self) -> serde_json::Value {
        self.find_state()
            .unwrap_or_else(|| panic!("{} is not in query-block", self.qdev))
    }

    /// QEMU's view of the drive, if QEMU has it.
    fn find_state(&self) -> Option<serde_json::Value> {
        let all = self.qmp("query-block", serde_json::json!({}));
        all["return"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["qdev"] == self.qdev.as_str()))
            .cloned()
    }

    /// The drive unplugged (QMP `device_del`): waits until QEMU and the guest's kernel both
    /// have let it go.
    fn unplug(&self) {
        let r = self.qmp("device_del", serde_json::json!({ "id": self.qdev }));
        assert!(r.get("return").is_some(), "unplugging the drive: {r}");
        poll(
            &format!("{} to go after device_del", self.dev),
            || match self.find_state() {
                Some(s) => Err(format!("QEMU still has it: {s}")),
                None if Path::new(&self.dev).exists() => Err("the node is still there".into()),
                None => Ok(()),
            },
        );
    }

    /// A new, empty drive plugged in (QMP `device_add` of a `scsi-cd` under the same id): waits
    /// until udev has taken it for an optical drive; its node may differ from the old one's.
    fn plug(&mut self) {
        let r = self.qmp(
            "device_add",
            serde_json::json!({
                "driver": "scsi-cd", "bus": "scsi0.0", "id": self.qdev, "scsi-id": self.target,
            }),
        );
        assert!(r.get("return").is_some(), "plugging a drive in: {r}");
        self.dev = poll("an optical drive after device_add", || {
            let dev = sr_device(self.target).ok_or("no sr device at its target")?;
            if udev_props(&dev).contains("ID_CDROM=1") {
                Ok(dev)
            } else {
                Err(format!("udev has not taken {dev} for an optical drive yet"))
            }
        });
    }

    /// A disc with `image`'s bytes put in (the tray opened if need be, then closed).
    fn insert(&self, image: &Path) {
        let r = self.qmp(
            "blockdev-change-medium",
            serde_json::json!({
                "id": self.qdev,
                "filename": image.to_str().unwrap(),
                "format": "raw",
                "read-only-mode": "read-only",
            }),
        );
        assert!(
            r.get("return").is_some(),
            "inserting {}: {r}",
            image.display()
        );
    }

    /// The eject button: the drive opens its tray when its door is not locked, else asks the
    /// host to (the kernel reports DISK_EJECT_REQUEST). Whether the tray opened at once.
    fn press_eject(&self) -> bool {
        let r = self.qmp(
            "eject",
            serde_json::json!({ "id": self.qdev, "force": false }),
        );
        match r.get("error") {
            None => true,
            Some(e) if e["desc"].as_str().is_some_and(|d| d.contains("locked")) => false,
            Some(e) => panic!("eject button: {e}"),
        }
    }

    /// The disc taken out whatever the guest holds (a hypervisor detaching the image).
    fn yank(&self) {
        let r = self.qmp(
            "eject",
            serde_json::json!({ "id": self.qdev, "force": true }),
        );
        assert!(r.get("return").is_some(), "forced eject: {r}");
    }

    /// What udev holds for the drive.
    fn udev(&self) -> String {
        udev_props(&self.dev)
    }

    /// Waits until udev has read the disc now in the drive (`label`) or seen the drive empty
    /// (`None`): the kernel notices a change by polling the drive every two seconds.
    fn wait_udev(&self, label: Option<&str>) {
        poll(&format!("udev on {} to see {label:?}", self.dev), || {
            let props = self.udev();
            let seen = props
                .lines()
                .find_map(|l| l.strip_prefix("ID_FS_LABEL_ENC="))
                .map(isomgr::source::drives::decode_udev_string)
                .filter(|_| props.contains("ID_CDROM_MEDIA=1"));
            if seen.as_deref() == label {
                Ok(())
            } else {
                Err(props)
            }
        })
    }

    /// Polls QEMU until `pred` holds for the drive's state.
    fn wait_state(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        poll(what, || {
            let s = self.state();
            if pred(&s) {
                Ok(())
            } else {
                Err(s.to_string())
            }
        })
    }
}

/// The mounts (as [`common::mountinfo`] gives them) that `pred` takes.
fn mounts_where(
    pred: impl Fn(&(String, String, String, String)) -> bool,
) -> Vec<(String, String, String, String)> {
    common::mountinfo().into_iter().filter(pred).collect()
}

/// The node (`/dev/srN`) of the guest's optical drive at SCSI target `target`, if there is one.
fn sr_device(target: usize) -> Option<String> {
    scsi_node("sr", target)
}

/// The node of the guest's SCSI block device at target `target` whose kernel name starts with
/// `prefix` (`sr`, `sd`), if there is one (its sysfs `device` is `HOST:CHANNEL:TARGET:LUN`).
fn scsi_node(prefix: &str, target: usize) -> Option<String> {
    fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .find(|n| {
            fs::read_link(format!("/sys/block/{n}/device")).is_ok_and(|l| {
                let hctl = l
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                hctl.split(':').nth(2) == Some(&*target.to_string())
            })
        })
        .map(|n| format!("/dev/{n}"))
}

/// A disc in a real drive, through `driver`: served under its label when present at start,
/// taken away by the eject button (a reader still holding a file is named, and the tray
/// opens), the next disc served, a forced removal (the image detached by the hypervisor)
/// cleaned up, the first disc back under its old name, swapped by force for the second, and no
/// mount of the drive left once the watcher stops.
///
/// udev's own eject rule is taken out for the test (udev would open the tray on the button
/// too, whatever isomgr does), so that the tray opens only if isomgr opens it; udev still
/// locks the door of a drive with a disc in, as it does everywhere.
fn real_drive(driver: &str) {
    let _rules = without_udevs_eject();
    let drive = RealDrive::take();
    let dev = drive.dev.clone();
    let tmp = tempfile::tempdir().unwrap();
    let first = common::fixtures().join("rr-joliet.iso");
    let second = common::fixtures().join("xorriso-rr-joliet.iso");

    let (mut w, name) = drive.serve_first(tmp.path(), &["--driver", driver, "--cleanup-on-exit"]);
    assert_eq!(name, "RR_and_Joliet_long_label");
    let served = w.root.join(&name);
    assert_serves(&served, "rr-joliet.iso");
    if driver == "kernel" {
        let m = mounts_where(|m| Path::new(&m.0) == served);
        assert_eq!(m.len(), 1, "one mount at {}: {m:?}", served.display());
        assert_eq!(
            (m[0].2.as_str(), m[0].3.as_str()),
            ("iso9660", dev.as_str())
        );
        assert!(m[0].1.split(',').any(|o| o == "ro"), "{m:?}");
    }
    // udev locks the door of a drive with a disc in (`cdrom_id --lock-media`), so that the
    // button asks instead of opening the tray.
    drive.wait_state("the door to be locked", |s| s["locked"] == true);

    // The eject button with a file open: unpublished at once, the reader named (its reads
    // fail from now on), and the tray opened although udev keeps the door locked.
    let held = File::open(served.join("README")).unwrap();
    assert!(
        !drive.press_eject(),
        "udev keeps the door locked while a disc is in"
    );
    w.wait_for("the eject button to be seen", |v| {
        v["message"] == "eject button" && v["device"] == dev.as_str()
    });
    w.wait_removed(&dev);
    assert!(
        !w.names().contains(&name),
        "{name} gone after the eject button"
    );
    let me = format!("[{}]", std::process::id());
    let busy = w.wait_for("the holders to be named", |v| {
        v["message"] == "still in use after unpublishing" && v["device"] == dev.as_str()
    });
    assert!(
        busy["holders"].as_str().is_some_and(|h| h.contains(&me)),
        "this process ({me}) holds a file: {busy}"
    );
    w.wait_for("the tray to be opened", |v| {
        v["message"] == "ejected" && v["device"] == dev.as_str()
    });
    drive.wait_state("the tray to be open", |s| s["tray_open"] == true);
    drop(held);

    // The next disc.
    drive.insert(&second);
    let other = w.wait_mounted(&dev);
    assert_eq!(other, "xorriso_rr_joliet");
    assert_serves(&w.root.join(&other), "xorriso-rr-joliet.iso");

    // Taken out by force while served and read from: unserved, nothing left behind.
    let other_at = w.root.join(&other);
    let held = File::open(other_at.join("README")).unwrap();
    drive.yank();
    w.wait_removed(&dev);
    assert!(!w.names().contains(&other), "{other} gone after the yank");
    let at = mounts_where(|m| Path::new(&m.0) == other_at);
    assert!(
        at.is_empty(),
        "{} still mounted: {at:?}",
        other_at.display()
    );
    drop(held);

    // The first disc back: its old name.
    drive.insert(&first);
    assert_eq!(w.wait_mounted(&dev), name);
    assert_serves(&served, "rr-joliet.iso");

    // Swapped by force while served (a hypervisor changing the image, faster than isomgr
    // looks at the tray): the old disc goes, the new one is served.
    drive.yank();
    drive.insert(&second);
    w.wait_removed(&dev);
    assert_eq!(w.wait_mounted(&dev), other);
    assert!(!w.names().contains(&name), "{name} gone after the swap");
    assert_serves(&w.root.join(&other), "xorriso-rr-joliet.iso");

    drop(w);
    let root = tmp.path().join("root");
    let left = mounts_where(|m| Path::new(&m.0).starts_with(&root) || m.3 == dev);
    assert!(
        left.is_empty(),
        "mounts left of the root or the drive: {left:?}"
    );
    drive.yank();
}

/// udev's 60-cdrom_id.rules without its eject on the eject button (`cdrom_id --eject-media`):
/// the rest, locking the door of a drive with a disc in included, stays.
fn without_udevs_eject() -> RunRules {
    let name = "60-cdrom_id.rules";
    let stock = ["/usr/lib/udev/rules.d", "/lib/udev/rules.d"]
        .iter()
        .find_map(|d| fs::read_to_string(Path::new(d).join(name)).ok())
        .unwrap_or_else(|| panic!("udev's {name}"));
    let eject = "RUN+=\"cdrom_id --eject-media $devnode\", ";
    assert!(
        stock.contains(eject),
        "{name} ejects on the button:\n{stock}"
    );
    assert!(
        stock.contains("--lock-media"),
        "{name} locks the door:\n{stock}"
    );
    RunRules::install(name, &stock.replace(eject, ""))
}

#[test]
#[ignore = "needs a real optical drive: scripts/test.sh runs it in scripts/kernel-vm.sh's guest"]
fn real_drive_through_the_kernel_driver() {
    if can_run("real_drive_through_the_kernel_driver") {
        real_drive("kernel");
    }
}

#[test]
#[ignore = "needs a real optical drive: scripts/test.sh runs it in scripts/kernel-vm.sh's guest"]
fn real_drive_through_the_fuse_driver() {
    if can_run("real_drive_through_the_fuse_driver") {
        real_drive("fuse");
    }
}

/// A real drive unplugged while it serves a disc that a process reads from (a USB drive pulled,
/// a VM's drive removed): the disc is unserved, its mount gone; a drive plugged in afterwards
/// serves the disc put in it.
fn real_drive_unplugged(driver: &str) {
    let mut drive = RealDrive::take();
    let dev = drive.dev.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, name) = drive.serve_first(tmp.path(), &["--driver", driver, "--cleanup-on-exit"]);
    let served = w.root.join(&name);
    let held = File::open(served.join("README")).unwrap();

    drive.unplug();
    w.wait_removed(&dev);
    assert!(!w.names().contains(&name), "{name} gone with its drive");
    let at = mounts_where(|m| Path::new(&m.0) == served || m.3 == dev);
    assert!(at.is_empty(), "mounts left of the unplugged drive: {at:?}");
    drop(held);

    drive.plug();
    let new_dev = drive.dev.clone();
    drive.insert(&common::fixtures().join("xorriso-rr-joliet.iso"));
    let other = w.wait_mounted(&new_dev);
    assert_eq!(other, "xorriso_rr_joliet");
    assert_serves(&w.root.join(&other), "xorriso-rr-joliet.iso");
    drop(w);
    drive.yank();
}

#[test]
#[ignore = "needs a real optical drive: scripts/test.sh runs it in scripts/kernel-vm.sh's guest"]
fn real_drive_unplugged_through_the_kernel_driver() {
    if can_run("real_drive_unplugged_through_the_kernel_driver") {
        real_drive_unplugged("kernel");
    }
}

#[test]
#[ignore = "needs a real optical drive: scripts/test.sh runs it in scripts/kernel-vm.sh's guest"]
fn real_drive_unplugged_through_the_fuse_driver() {
    if can_run("real_drive_unplugged_through_the_fuse_driver") {
        real_drive_unplugged("fuse");
    }
}

/// The mount ids (mountinfo's first field) at `target`.
fn mount_ids_at(target: &Path) -> Vec<String> {
    let t = target.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*t))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// The kernel driver's mounts outlive a normal stop so that downloads go on; the next start
/// adopts the mount of a disc still in the drive as it is, tears down that of a disc swapped
/// while isomgr was stopped (the new disc is served under its own name), and that of a disc
/// taken out meanwhile.
#[test]
#[ignore = "needs a real optical drive: scripts/test.sh runs it in scripts/kernel-vm.sh's guest"]
fn real_drive_changed_while_the_watcher_was_stopped() {
    if !can_run("real_drive_changed_while_the_watcher_was_stopped") {
        return;
    }
    let drive = RealDrive::take();
    let dev = drive.dev.clone();
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--driver", "kernel"];
    let (w, name) = drive.serve_first(tmp.path(), &args);
    let served = w.root.join(&name);
    let ids = mount_ids_at(&served);
    assert_eq!(ids.len(), 1, "one mount at {}", served.display());
    drop(w);
    assert_eq!(
        mount_ids_at(&served),
        ids,
        "the mount outlives a normal stop"
    );

    // The same disc at the next start: that very mount is adopted.
    let mut w = Watcher::start_with(tmp.path(), &args);
    w.wait_for("the mount to be adopted", |v| {
        v["message"] == "adopted the mount of the previous run" && v["name"] == name.as_str()
    });
    assert_eq!(mount_ids_at(&served), ids, "adopted, not mounted again");
    assert_serves(&served, "rr-joliet.iso");
    drop(w);

    // Another disc put in while isomgr is stopped: the old mount goes, the new disc is served.
    drive.yank();
    drive.insert(&common::fixtures().join("xorriso-rr-joliet.iso"));
    let mut w = Watcher::start_with(tmp.path(), &args);
    let other = w.wait_mounted(&dev);
    assert_eq!(other, "xorriso_rr_joliet");
    assert_serves(&w.root.join(&other), "xorriso-rr-joliet.iso");
    assert!(
        mount_ids_at(&served).is_empty(),
        "the stale mount at {name} is gone"
    );
    assert!(!served.exists(), "{} removed", served.display());
    drop(w);

    // The disc taken out while isomgr is stopped: its mount goes at the next start.
    let other_at = tmp.path().join("root").join(&other);
    assert_eq!(
        mount_ids_at(&other_at).len(),
        1,
        "the mount outlives a normal stop"
    );
    drive.yank();
    let mut w = Watcher::start_with(tmp.path(), &["--driver", "kernel", "--cleanup-on-exit"]);
    w.wait_for("the stale mount to be removed", |v| {
        v["message"] == "removed" && v["name"] == other.as_str()
    });
    assert!(
        mount_ids_at(&other_at).is_empty(),
        "the stale mount at {other} is gone"
    );
    assert!(!other_at.exists(), "{} removed", other_at.display());
    assert!(w.names().is_empty(), "nothing served: {:?}", w.names());
}

/// Two real drives with the same disc: the first served keeps the label's name, the other gets
/// `NAME-2`; the eject button on the first takes only its disc away, and that disc back in
/// gets the label's name again.
///
/// udev's own eject rule is taken out (see [`real_drive`]): it ejects on the button too, up to
/// seconds later, and would throw out the disc put back in meanwhile.
#[test]
#[ignore = "needs a real optical drive: scripts/test.sh runs it in scripts/kernel-vm.sh's guest"]
fn two_real_drives_with_the_same_disc() {
    if !can_run("two_real_drives_with_the_same_disc") {
        return;
    }
    let _rules = without_udevs_eject();
    let drives = RealDrive::take_all();
    let [a, b] = &drives[..] else {
        panic!("two drives in ISOMGR_VM_DRIVES, not {}", drives.len());
    };
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, first) = a.serve_first(tmp.path(), &["--cleanup-on-exit"]);
    assert_eq!(first, "RR_and_Joliet_long_label");
    b.insert(&common::fixtures().join("rr-joliet.iso"));
    let second = w.wait_mounted(&b.dev);
    assert_eq!(second, "RR_and_Joliet_long_label-2");
    for name in [&first, &second] {
        assert_serves(&w.root.join(name), "rr-joliet.iso");
    }

    a.wait_state("the door to be locked", |s| s["locked"] == true);
    assert!(
        !a.press_eject(),
        "udev keeps the door locked while a disc is in"
    );
    w.wait_removed(&a.dev);
    a.wait_state("the tray to be open", |s| s["tray_open"] == true);
    assert_eq!(w.names(), HashSet::from([second.clone()]));
    assert_serves(&w.root.join(&second), "rr-joliet.iso");
    assert_eq!(
        b.state()["tray_open"],
        false,
        "the other drive's tray stays shut"
    );

    a.insert(&common::fixtures().join("rr-joliet.iso"));
    assert_eq!(w.wait_mounted(&a.dev), first);
    assert_eq!(w.names(), HashSet::from([first, second]));
    drop(w);
    for d in &drives {
        d.yank();
    }
}

/// A USB stick written with a hybrid image: a SCSI disk plugged into the guest, holding
/// fixtures/stick-partitioned.iso, whose partition 1 carries the filesystem again (as Debian's
/// images do). `--drives-any-block` serves the disk once and never the partition; unplugged,
/// it goes.
#[test]
#[ignore = "needs a real optical drive: scripts/test.sh runs it in scripts/kernel-vm.sh's guest"]
fn a_stick_with_a_hybrid_image_is_served_once() {
    if !can_run("a_stick_with_a_hybrid_image_is_served_once") {
        return;
    }
    let drives = RealDrive::take_all();
    let drive = &drives[0];
    let image = common::fixtures().join("stick-partitioned.iso");
    let r = drive.qmp(
        "blockdev-add",
        serde_json::json!({
            "driver": "raw", "node-name": "stick", "read-only": true,
            "file": { "driver": "file", "filename": image.to_str().unwrap(), "read-only": true },
        }),
    );
    assert!(r.get("return").is_some(), "blockdev-add: {r}");
    let target = drives.len();
    let r = drive.qmp(
        "device_add",
        serde_json::json!({
            "driver": "scsi-hd", "drive": "stick", "id": "stick0", "bus": "scsi0.0",
            "scsi-id": target,
        }),
    );
    assert!(r.get("return").is_some(), "plugging the stick in: {r}");
    let disk = poll(
        &format!("a disk with a partition at SCSI target {target}"),
        || {
            scsi_node("sd", target)
                .filter(|d| {
                    let name = Path::new(d)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    Path::new(&format!("/sys/block/{name}/{name}1")).exists()
                })
                .ok_or_else(|| "not yet".to_owned())
        },
    );
    settle();
    let partition = format!("{disk}1");
    let props = udev_props(&partition);
    assert!(
        props.contains("ID_FS_TYPE=iso9660"),
        "{partition} holds the filesystem too:\n{props}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let mut w = Watcher::start_with(tmp.path(), &["--drives-any-block", "--cleanup-on-exit"]);
    let name = w.wait_mounted(&disk);
    assert_eq!(name, "isomgr_stick");
    assert_serves(&w.root.join(&name), "stick-partitioned.iso");
    // What udev says of the partition has been said by now: it was not taken.
    settle();
    synthetic_change(&partition, "");
    settle();
    assert_eq!(w.names(), HashSet::from([name.clone()]), "the disk only");
    assert!(
        !w.seen
            .iter()
            .any(|l| l.contains(&format!("\"origin\":\"{partition}\""))),
        "{partition} was taken"
    );

    let r = drive.qmp("device_del", serde_json::json!({ "id": "stick0" }));
    assert!(r.get("return").is_some(), "unplugging the stick: {r}");
    w.wait_removed(&disk);
    assert!(w.names().is_empty(), "{:?}", w.names());
    drop(w);
    poll("blockdev-del of the stick's image", || {
        let r = drive.qmp("blockdev-del", serde_json::json!({ "node-name": "stick" }));
        r.get("return").map(drop).ok_or_else(|| r.to_string())
    });
}

/// The eject button under udev's stock rules, which eject on the button too: the disc is
/// unpublished, its mount goes and the tray opens, whoever of udev and isomgr opens it first.
#[test]
#[ignore = "needs a real optical drive: scripts/test.sh runs it in scripts/kernel-vm.sh's guest"]
fn real_drive_eject_button_with_udevs_stock_rules() {
    if !can_run("real_drive_eject_button_with_udevs_stock_rules") {
        return;
    }
    let drive = RealDrive::take();
    let dev = drive.dev.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, name) = drive.serve_first(tmp.path(), &["--driver", "kernel"]);
    let served = w.root.join(&name);
    drive.wait_state("the door to be locked", |s| s["locked"] == true);
    assert!(
        !drive.press_eject(),
        "udev keeps the door locked while a disc is in"
    );
    w.wait_removed(&dev);
    drive.wait_state("the tray to be open", |s| s["tray_open"] == true);
    w.wait_for("isomgr to find the tray open", |v| {
        v["message"] == "ejected" && v["device"] == dev.as_str()
    });
    assert!(!served.exists(), "{} removed", served.display());
    let left = mounts_where(|m| m.3 == dev);
    assert!(left.is_empty(), "mounts of {dev} left: {left:?}");
    drop(w);
    // udev's eject may still be on its way: let it finish before the next test's disc.
    settle();
}
