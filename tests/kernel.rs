//! The kernel driver on real loop devices and real mounts, checked through an independent view
//! (`losetup -J -l`, `/proc/self/mountinfo`, a reader running as `nobody`).
//!
//! This kernel may have no iso9660: the mechanism (attach, mount flags, lazy unmount, detach,
//! rollback, adoption after a crash) is tested with squashfs and ext4 images made at test time,
//! and the ISO path with what this kernel does: mount(2) fails with ENODEV, and nothing is left.
//! Where the kernel has iso9660 (scripts/test.sh runs this file again in a guest with Debian's
//! kernel when the host has none, see scripts/kernel-vm.sh), the ISO tests mount every fixture
//! image and a mkiso image through the kernel driver and compare them with their manifests and
//! source tree, and run the watcher on the kernel driver end to end.
//!
//! Needs root, loop devices, mksquashfs, mkfs.ext4, losetup and setpriv; without them each test
//! says so and skips, or fails under CI=true. Loop work is serialised across test binaries by
//! a file lock; guards take down whatever a test made, whatever happens.

mod common;
#[path = "mkiso_support/mod.rs"]
mod support;
#[path = "common/tree.rs"]
mod tree;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isomgr::event::{Event, Handle, Medium, MediumId, SourceKind};
use isomgr::exec::kernel::{kernel_usable, KernelExecutor};
use isomgr::manager::{Action, MediumRecord, StateFile};
use isomgr::sys::linux::LinuxSys;
use isomgr::sys::{CallKind, LoopDev, LoopEntry, MountEntry, MountFlags, Sys};

/// Whether this host can run the loop tests; under CI=true a missing piece is a failure.
fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let loops = Path::new("/dev/loop-control").exists();
    if !root || !loops {
        let why = format!("{test}: needs root ({root}) and /dev/loop-control ({loops})");
        assert!(!common::in_ci(), "{why}");
        eprintln!("SKIP {why}");
        return false;
    }
    ["mksquashfs", "mkfs.ext4", "losetup", "setpriv"]
        .iter()
        .all(|t| common::have_tool(t))
}

/// This kernel can mount iso9660 (the ISO tests differ): it lists it in /proc/filesystems, or
/// has it as a module that mount(2) loads on demand, as stock Debian and Ubuntu kernels do.
/// `ISOMGR_EXPECT_ISO9660=1` (set by scripts/kernel-vm.sh) makes its absence a failure.
fn kernel_has_iso9660() -> bool {
    kernel_has("iso9660", "/isofs.ko")
}

/// As [`kernel_has_iso9660`], for udf (a stock kernel with one has the other).
fn kernel_has_udf() -> bool {
    kernel_has("udf", "/udf.ko")
}

fn kernel_has(fs_name: &str, module_file: &str) -> bool {
    let listed = fs::read_to_string("/proc/filesystems")
        .expect("reading /proc/filesystems")
        .lines()
        .any(|l| l.split('\t').nth(1) == Some(fs_name));
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").expect("reading osrelease");
    let modules = Path::new("/lib/modules").join(release.trim());
    let module = ["modules.builtin", "modules.dep"].iter().any(|list| {
        fs::read_to_string(modules.join(list)).is_ok_and(|text| {
            text.lines()
                .any(|l| l.split(':').next().is_some_and(|m| m.contains(module_file)))
        })
    });
    let has = listed || module;
    assert!(
        has || std::env::var_os("ISOMGR_EXPECT_ISO9660").is_none(),
        "ISOMGR_EXPECT_ISO9660 is set, but this kernel ({}) has no {fs_name}",
        release.trim()
    );
    has
}

/// A test's world: a root, images in a temp dir, and a guard that takes down every mount under
/// the root and every loop backed by one of its images, then the lock.
struct World {
    dir: tempfile::TempDir,
    root: PathBuf,
    _lock: common::LoopLock,
}

impl World {
    fn new() -> World {
        let lock = common::loop_lock();
        let dir = tempfile::tempdir().expect("tempdir");
        // Readable by `nobody` down to the root, for the reader that is not root.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("mkdir root");
        World {
            dir,
            root,
            _lock: lock,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A source tree with one file of `size` patterned bytes; its content.
    fn tree(&self, name: &str, size: usize) -> (PathBuf, Vec<u8>) {
        let src = self.path(name);
        fs::create_dir(&src).expect("mkdir src");
        fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).expect("chmod");
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
        fs::write(src.join("file.bin"), &data).expect("write");
        (src, data)
    }

    fn image(&self, kind: &str, size: usize) -> (PathBuf, Vec<u8>) {
        self.image_named(kind, &format!("image.{kind}"), size)
    }

    /// [`World::image`] as the file `name` (its source tree `src-NAME`).
    fn image_named(&self, kind: &str, name: &str, size: usize) -> (PathBuf, Vec<u8>) {
        let (src, data) = self.tree(&format!("src-{name}"), size);
        let image = self.path(name);
        let st = match kind {
            "squashfs" => Command::new("mksquashfs")
                .arg(&src)
                .arg(&image)
                .args(["-quiet", "-noappend", "-no-progress"])
                .status(),
            "ext4" => Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&src)
                .arg(&image)
                .arg(format!("{}k", size / 1024 + 4096))
                .stdout(std::process::Stdio::null())
                .status(),
            "iso9660" => Command::new(common::bin())
                .arg("mkiso")
                .arg(&src)
                .arg("-o")
                .arg(&image)
                .args(["-V", "TESTISO"])
                .status(),
            _ => unreachable!(),
        }
        .expect("running the image maker");
        assert!(st.success(), "making the {kind} image");
        (image, data)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // (Below the root, and any a test made elsewhere in its directory.)
        for m in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        for (dev, back) in common::loops() {
            if Path::new(&back).starts_with(self.dir.path()) {
                let _ = Command::new("losetup").arg("-d").arg(&dev).status();
            }
        }
    }
}

/// The `losetup -J -l` entry of `dev`.
fn loop_info(dev: &Path) -> Option<serde_json::Value> {
    let out = Command::new("losetup")
        .args(["-J", "-l"])
        .arg(dev)
        .output()
        .expect("losetup");
    if !out.status.success() || out.stdout.is_empty() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("losetup JSON");
    v["loopdevices"].get(0).cloned()
}

/// Loop release after the last user goes can trail the syscall a little: wait for it.
fn wait_no_loop(image: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::loops_backed_by(image).is_empty() {
        assert!(
            Instant::now() < deadline,
            "a loop backed by {} is still attached: {:?}",
            image.display(),
            common::loops_backed_by(image)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mounts_at(target: &Path) -> Vec<(String, String, String, String)> {
    let t = target.to_string_lossy();
    common::mountinfo()
        .into_iter()
        .filter(|m| m.0 == t)
        .collect()
}

fn mounts_under(root: &Path) -> Vec<String> {
    let r = root.to_string_lossy().into_owned();
    common::mountinfo()
        .into_iter()
        .map(|m| m.0)
        .filter(|m| m.starts_with(&r))
        .collect()
}

fn medium(image: &Path, fs: &str) -> Medium {
    use std::os::unix::fs::MetadataExt;
    let file = File::open(image).expect("opening the image");
    let meta = file.metadata().expect("stat");
    Medium {
        id: MediumId(format!("file:{}:{}", meta.dev(), meta.ino()).into()),
        source: SourceKind::Dir,
        origin: image.to_owned(),
        label: None,
        fallback: "image".into(),
        fs: Some(fs.into()),
        handle: Some(Handle(Arc::new(file))),
    }
}

fn publish<S: Sys>(e: &mut KernelExecutor<S>, name: &str, m: &Medium) -> Event {
    common::run_kernel(
        e,
        &Action::Publish {
            name: name.into(),
            medium: m.clone(),
        },
    )
    .expect("an outcome")
}

fn unpublish<S: Sys>(e: &mut KernelExecutor<S>, name: &str, m: &Medium) {
    e.run(&Action::Unpublish {
        name: name.into(),
        id: m.id.clone(),
    });
}

fn published_loop(ev: Event) -> PathBuf {
    match ev {
        Event::Published {
            loop_device: Some(d),
            ..
        } => d,
        other => panic!("expected Published with a loop device, got {other:?}"),
    }
}

/// `isomgr watch ARGS --dir DROP --root ROOT --state STATE` with info logs on a piped stderr.
fn watcher(w: &World, args: &[&str], drop_dir: &Path, state: &Path) -> std::process::Child {
    Command::new(common::bin())
        .arg("watch")
        .args(args)
        .arg("--dir")
        .arg(drop_dir)
        .arg("--root")
        .arg(&w.root)
        .arg("--state")
        .arg(state)
        .env("ISOMGR_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the watcher")
}

/// The watcher's stderr, read to its end on a thread of its own: its whole log once it exits.
fn log_of(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    })
}

/// Polls `done` every 50 ms; fails the test after 60 s.
fn wait_for(what: &str, done: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `target` is one mount of `fstype` from `source`, `ro,nosuid,nodev,noexec`, in mountinfo.
fn assert_served_mount(target: &Path, fstype: &str, source: &Path) {
    let at = mounts_at(target);
    assert_eq!(at.len(), 1, "one mount at {}: {at:?}", target.display());
    let (_, opts, got_type, got_source) = &at[0];
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(
            opts.split(',').any(|o| o == flag),
            "{}: {flag} in {opts}",
            target.display()
        );
    }
    assert_eq!(
        (got_type.as_str(), Path::new(got_source)),
        (fstype, source),
        "{}",
        target.display()
    );
}

/// Nothing of a medium is left: no mount, no directory, no loop backed by its image.
fn assert_nothing_left(target: &Path, image: &Path) {
    assert!(
        mounts_at(target).is_empty(),
        "{} is mounted",
        target.display()
    );
    assert!(
        fs::symlink_metadata(target).is_err(),
        "{} still exists",
        target.display()
    );
    wait_no_loop(image);
}

#[test]
fn squashfs_and_ext4_mount_read_only_and_go_without_a_trace() {
    if !can_run("squashfs_and_ext4_mount_read_only_and_go_without_a_trace") {
        return;
    }
    let w = World::new();
    for kind in ["squashfs", "ext4"] {
        let (image, data) = w.image(kind, 3 * 1024 * 1024 + 17);
        let m = medium(&image, kind);
        let mut e = KernelExecutor::new(LinuxSys, w.root.clone());
        let target = w.root.join(kind);
        let dev = published_loop(publish(&mut e, kind, &m));

        // losetup sees a read-only autoclear loop on the image.
        let info = loop_info(&dev).expect("losetup knows the loop");
        assert_eq!(
            info["back-file"],
            image.to_string_lossy().as_ref(),
            "{kind}"
        );
        assert_eq!(info["ro"], true, "{kind}: read-only");
        assert_eq!(info["autoclear"], true, "{kind}: autoclear");

        // mountinfo sees the loop mounted ro,nosuid,nodev,noexec with the right type.
        assert_served_mount(&target, kind, &dev);

        // The content reads back; nothing can be written.
        assert_eq!(fs::read(target.join("file.bin")).expect("read"), data);
        let err = fs::write(target.join("new"), b"x").expect_err("read-only");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{kind}");

        unpublish(&mut e, kind, &m);
        assert_nothing_left(&target, &image);
    }
}

/// A drive's medium is mounted straight from its device node: no loop device of isomgr's own
/// on top, the same flags, and on removal the device is left as it was (isomgr did not attach
/// it). The "drive" is a loop device attached here, holding an ext4 image.
#[test]
fn a_drive_is_mounted_from_its_device_node_and_left_attached() {
    if !can_run("a_drive_is_mounted_from_its_device_node_and_left_attached") {
        return;
    }
    let w = World::new();
    let (image, data) = w.image("ext4", 1024 * 1024 + 5);
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(&image)
        .output()
        .expect("losetup");
    assert!(out.status.success(), "losetup: {out:?}");
    let drive = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let m = Medium {
        id: MediumId("drive:test:1".into()),
        source: SourceKind::Drive,
        origin: drive.clone(),
        label: None,
        fallback: "drive".into(),
        fs: Some("ext4".into()),
        handle: Some(Handle(Arc::new(
            File::open(&drive).expect("opening the drive"),
        ))),
    };
    let mut e = KernelExecutor::new(LinuxSys, w.root.clone());
    match publish(&mut e, "disc", &m) {
        Event::Published {
            loop_device: None, ..
        } => {}
        other => panic!("expected Published without a loop device, got {other:?}"),
    }
    let target = w.root.join("disc");
    // Mounted from the device node itself.
    assert_served_mount(&target, "ext4", &drive);
    assert_eq!(
        common::loops_backed_by(&image),
        [drive.to_string_lossy().into_owned()],
        "no loop of isomgr's own"
    );
    assert_eq!(fs::read(target.join("file.bin")).expect("read"), data);

    unpublish(&mut e, "disc", &m);
    assert!(mounts_at(&target).is_empty(), "unmounted");
    assert!(fs::symlink_metadata(&target).is_err(), "directory removed");
    let info = loop_info(&drive).expect("the drive is still attached");
    assert_eq!(info["back-file"], image.to_string_lossy().as_ref());
    // World's guard detaches it.
}

#[test]
fn lazy_unmount_lets_an_open_file_finish_reading() {
    if !can_run("lazy_unmount_lets_an_open_file_finish_reading") {
        return;
    }
    let w = World::new();
    let (image, data) = w.image("ext4", 8 * 1024 * 1024);
    let m = medium(&image, "ext4");
    let mut e = KernelExecutor::new(LinuxSys, w.root.clone());
    let target = w.root.join("DL");
    let dev = published_loop(publish(&mut e, "DL", &m));

    // A download in flight: half read.
    let mut f = File::open(target.join("file.bin")).expect("open");
    let mut got = vec![0u8; data.len() / 2];
    f.read_exact(&mut got).expect("first half");

    unpublish(&mut e, "DL", &m);
    // Gone from the tree at once...
    assert!(mounts_at(&target).is_empty(), "still in the mount table");
    assert!(fs::symlink_metadata(&target).is_err(), "the dir is gone");
    // ...while the loop stays for the open file (autoclear defers it).
    assert_eq!(common::loops_backed_by(&image), [dev.to_string_lossy()]);

    // The read finishes, byte for byte.
    f.read_to_end(&mut got).expect("the rest");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the content read across the unmount differs");
    drop(f);
    wait_no_loop(&image);
}

/// A [`Sys`] that runs the real thing but fails the first call of one kind, as the kernel
/// would. Proves every rollback on real devices.
struct Failing {
    kind: CallKind,
    errno: i32,
    tripped: std::sync::atomic::AtomicBool,
}

impl Failing {
    fn new(kind: CallKind, errno: i32) -> Failing {
        Failing {
            kind,
            errno,
            tripped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn trip(&self, kind: CallKind) -> io::Result<()> {
        if kind == self.kind && !self.tripped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        Ok(())
    }
}

impl Sys for Failing {
    fn attach_loop(&self, image: &File, path: &Path, ro: bool) -> io::Result<LoopDev> {
        self.trip(CallKind::AttachLoop)?;
        LinuxSys.attach_loop(image, path, ro)
    }
    fn detach_loop(&self, dev: &LoopDev) -> io::Result<()> {
        self.trip(CallKind::DetachLoop)?;
        LinuxSys.detach_loop(dev)
    }
    fn mount(&self, s: &Path, t: &Path, fs: &str, f: MountFlags) -> io::Result<()> {
        self.trip(CallKind::Mount)?;
        LinuxSys.mount(s, t, fs, f)
    }
    fn unmount(&self, t: &Path, lazy: bool) -> io::Result<()> {
        self.trip(CallKind::Unmount)?;
        LinuxSys.unmount(t, lazy)
    }
    fn make_dir(&self, p: &Path, mode: u32) -> io::Result<()> {
        self.trip(CallKind::MakeDir)?;
        LinuxSys.make_dir(p, mode)
    }
    fn remove_dir(&self, p: &Path) -> io::Result<()> {
        self.trip(CallKind::RemoveDir)?;
        LinuxSys.remove_dir(p)
    }
    fn list_dir(&self, p: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        LinuxSys.list_dir(p)
    }
    fn mounts(&self) -> io::Result<Vec<MountEntry>> {
        LinuxSys.mounts()
    }
    fn loops(&self) -> io::Result<Vec<LoopEntry>> {
        LinuxSys.loops()
    }
    fn filesystems(&self) -> io::Result<Vec<String>> {
        LinuxSys.filesystems()
    }
    fn probe_loop(&self) -> io::Result<()> {
        LinuxSys.probe_loop()
    }
}

#[test]
fn a_failure_at_each_publish_step_leaves_nothing_behind() {
    if !can_run("a_failure_at_each_publish_step_leaves_nothing_behind") {
        return;
    }
    let w = World::new();
    let (image, _) = w.image("squashfs", 100_000);
    for (kind, errno) in [
        (CallKind::MakeDir, libc::EACCES),
        // EBUSY and the like are no failure: the medium waits for a loop (tests/limits.rs).
        (CallKind::AttachLoop, libc::EPERM),
        (CallKind::Mount, libc::EINVAL),
        // Rollback steps failing too: the rest of the rollback still runs.
        (CallKind::DetachLoop, libc::EIO),
    ] {
        let mut e = KernelExecutor::new(Failing::new(kind, errno), w.root.clone());
        let m = medium(&image, "squashfs");
        if kind == CallKind::DetachLoop {
            // Make the mount fail for real (wrong type) so the detach is part of a rollback.
            let mut bad = m.clone();
            bad.fs = Some("ext4".into());
            let ev = publish(&mut e, "X", &bad);
            assert!(matches!(ev, Event::Failed { .. }), "{ev:?}");
        } else {
            let ev = publish(&mut e, "X", &m);
            let Event::Failed { error, .. } = ev else {
                panic!("{kind:?}: expected a failure, got {ev:?}");
            };
            assert!(
                error.contains(&*image.to_string_lossy()) || error.contains("/root/X"),
                "{kind:?}: the error names the image or the dir: {error}"
            );
        }
        drop(m);
        assert_nothing_left(&w.root.join("X"), &image);
    }
}

#[test]
fn a_failing_lazy_unmount_keeps_serving_and_a_failing_detach_is_left_to_autoclear() {
    if !can_run("a_failing_lazy_unmount_keeps_serving_and_a_failing_detach_is_left_to_autoclear") {
        return;
    }
    let w = World::new();
    let (image, data) = w.image("squashfs", 100_000);
    let m = medium(&image, "squashfs");
    let target = w.root.join("Y");

    let mut e = KernelExecutor::new(Failing::new(CallKind::Unmount, libc::EBUSY), w.root.clone());
    published_loop(publish(&mut e, "Y", &m));
    unpublish(&mut e, "Y", &m);
    // Nothing was taken down: still mounted and readable.
    assert_eq!(mounts_at(&target).len(), 1);
    assert_eq!(fs::read(target.join("file.bin")).expect("read"), data);
    LinuxSys.unmount(&target, true).expect("unmounting by hand");
    fs::remove_dir(&target).expect("rmdir");
    drop(m);
    wait_no_loop(&image);

    let m = medium(&image, "squashfs");
    let mut e = KernelExecutor::new(
        Failing::new(CallKind::DetachLoop, libc::EIO),
        w.root.clone(),
    );
    published_loop(publish(&mut e, "Y", &m));
    unpublish(&mut e, "Y", &m);
    drop(m);
    assert_nothing_left(&target, &image);
}

/// Runs `ls DIR` as nobody; its output or its error.
fn ls_as_nobody(dir: &Path) -> Result<String, String> {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "ls",
            "-A",
        ])
        .arg(dir)
        .output()
        .expect("setpriv");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Looks at the mount point as a web server would, just before the mount covers it and just
/// before it is removed after the lazy unmount.
struct Spy {
    seen: std::sync::Mutex<Vec<(&'static str, Result<String, String>)>>,
}

impl Sys for Spy {
    fn attach_loop(&self, image: &File, path: &Path, ro: bool) -> io::Result<LoopDev> {
        LinuxSys.attach_loop(image, path, ro)
    }
    fn detach_loop(&self, dev: &LoopDev) -> io::Result<()> {
        LinuxSys.detach_loop(dev)
    }
    fn mount(&self, s: &Path, t: &Path, fs: &str, f: MountFlags) -> io::Result<()> {
        self.seen
            .lock()
            .unwrap()
            .push(("before mount", ls_as_nobody(t)));
        LinuxSys.mount(s, t, fs, f)?;
        self.seen
            .lock()
            .unwrap()
            .push(("after mount", ls_as_nobody(t)));
        Ok(())
    }
    fn unmount(&self, t: &Path, lazy: bool) -> io::Result<()> {
        LinuxSys.unmount(t, lazy)
    }
    fn make_dir(&self, p: &Path, mode: u32) -> io::Result<()> {
        LinuxSys.make_dir(p, mode)
    }
    fn remove_dir(&self, p: &Path) -> io::Result<()> {
        self.seen
            .lock()
            .unwrap()
            .push(("after unmount", ls_as_nobody(p)));
        LinuxSys.remove_dir(p)
    }
    fn list_dir(&self, p: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        LinuxSys.list_dir(p)
    }
    fn mounts(&self) -> io::Result<Vec<MountEntry>> {
        LinuxSys.mounts()
    }
    fn loops(&self) -> io::Result<Vec<LoopEntry>> {
        LinuxSys.loops()
    }
    fn filesystems(&self) -> io::Result<Vec<String>> {
        LinuxSys.filesystems()
    }
    fn probe_loop(&self) -> io::Result<()> {
        LinuxSys.probe_loop()
    }
}

#[test]
fn a_reader_that_is_not_root_never_sees_an_empty_directory() {
    if !can_run("a_reader_that_is_not_root_never_sees_an_empty_directory") {
        return;
    }
    let w = World::new();
    fs::set_permissions(&w.root, fs::Permissions::from_mode(0o755)).expect("chmod");
    let (image, _) = w.image("squashfs", 10_000);
    let m = medium(&image, "squashfs");
    let spy = Spy {
        seen: Default::default(),
    };
    let mut e = KernelExecutor::new(spy, w.root.clone());
    published_loop(publish(&mut e, "W", &m));
    unpublish(&mut e, "W", &m);
    drop(m);
    assert_nothing_left(&w.root.join("W"), &image);
    // The executor is consumed by nothing here; read what the spy saw through a new borrow.
    let seen = std::mem::take(&mut *spy_of(&e).seen.lock().unwrap());
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (when, listing) in &seen {
        match (*when, listing) {
            ("after mount", Ok(names)) => assert_eq!(names.trim(), "file.bin"),
            (_, Err(e)) => assert!(e.contains("Permission denied"), "{when}: {e}"),
            (when, Ok(names)) => panic!("{when}: nobody listed {names:?}"),
        }
    }
}

fn spy_of(e: &KernelExecutor<Spy>) -> &Spy {
    e.sys()
}

#[test]
fn a_restart_adopts_what_the_state_lists_and_clears_what_was_unmounted() {
    if !can_run("a_restart_adopts_what_the_state_lists_and_clears_what_was_unmounted") {
        return;
    }
    let w = World::new();
    let (img_a, data_a) = w.image("squashfs", 50_000);
    let (img_b, _) = w.image("ext4", 50_000);
    let a = medium(&img_a, "squashfs");
    let b = medium(&img_b, "ext4");
    let mut first = KernelExecutor::new(LinuxSys, w.root.clone());
    let dev_a = published_loop(publish(&mut first, "A", &a));
    let dev_b = published_loop(publish(&mut first, "B", &b));
    let record = |name: &str, m: &Medium, dev: &Path| MediumRecord {
        name: name.into(),
        label: None,
        source: SourceKind::Dir,
        origin: m.origin.clone(),
        mounted_at: String::new(),
        loop_device: Some(dev.to_string_lossy().into_owned()),
        id: m.id.clone(),
        mounted_at_unix: 0,
    };
    let state = StateFile {
        root: w.root.clone(),
        driver: "kernel".into(),
        pid: 1,
        media: vec![record("A", &a, &dev_a), record("B", &b, &dev_b)],
    };
    // A crash (nothing torn down); meanwhile someone unmounts B by hand, and a directory
    // isomgr did not make appears.
    std::mem::forget(first);
    LinuxSys
        .unmount(&w.root.join("B"), true)
        .expect("unmounting B");
    fs::create_dir(w.root.join("notes")).expect("mkdir");

    let mut second = KernelExecutor::new(LinuxSys, w.root.clone());
    let seen = (
        common::mountinfo()
            .into_iter()
            .filter(|m| m.0.starts_with(&*w.root.to_string_lossy()))
            .collect::<Vec<_>>(),
        common::loops(),
    );
    let foreign = second.reconcile(Some(&state));
    // Once (a guest run under CI) A came back foreign; what reconcile had before it says why.
    assert_eq!(
        foreign,
        ["notes"],
        "mounts under the root and loop devices before reconcile: {seen:?}; after: {:?}",
        (mounts_under(&w.root), common::loops())
    );
    // B: its empty mount point is gone and its loop freed.
    assert_nothing_left(&w.root.join("B"), &img_b);
    // A: the same medium comes back and keeps its mount and loop.
    let loops_before = common::loops_backed_by(&img_a);
    assert_eq!(published_loop(publish(&mut second, "A", &a)), dev_a);
    assert_eq!(common::loops_backed_by(&img_a), loops_before);
    assert_eq!(fs::read(w.root.join("A/file.bin")).expect("read"), data_a);
    // The foreign directory is never touched; A goes cleanly.
    second.shutdown(true);
    drop(a);
    assert_nothing_left(&w.root.join("A"), &img_a);
    assert!(w.root.join("notes").is_dir());
}

/// An image rewritten in place while isomgr was stopped (the same file, so the same medium)
/// is not adopted: the previous run's mount shows the old volume's metadata over the new
/// bytes. It is torn down (mount, loop) and the new volume mounted, under the same name.
#[test]
fn a_restart_mounts_anew_an_image_rewritten_in_place_while_stopped() {
    if !can_run("a_restart_mounts_anew_an_image_rewritten_in_place_while_stopped") {
        return;
    }
    let w = World::new();
    let (img, _) = w.image_named("squashfs", "c.squashfs", 50_000);
    let (newer, new_data) = w.image_named("squashfs", "c2.squashfs", 90_000);
    let m = medium(&img, "squashfs");
    let mut first = KernelExecutor::new(LinuxSys, w.root.clone());
    let mounted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let dev = published_loop(publish(&mut first, "C", &m));
    let state = StateFile {
        root: w.root.clone(),
        driver: "kernel".into(),
        pid: 1,
        media: vec![MediumRecord {
            name: "C".into(),
            label: None,
            source: SourceKind::Dir,
            origin: img.clone(),
            mounted_at: String::new(),
            loop_device: Some(dev.to_string_lossy().into_owned()),
            id: m.id.clone(),
            mounted_at_unix: mounted_at,
        }],
    };
    // stopped (its mounts left in place); a second later the file is rewritten in place
    first.shutdown(false);
    drop(m);
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(&img, fs::read(&newer).expect("read")).expect("rewriting in place");
    let m = medium(&img, "squashfs");
    assert_eq!(m.id, state.media[0].id, "the same file");

    let mut second = KernelExecutor::new(LinuxSys, w.root.clone());
    assert!(second.reconcile(Some(&state)).is_empty());
    publish(&mut second, "C", &m);
    assert_eq!(
        fs::read(w.root.join("C/file.bin")).expect("read"),
        new_data,
        "the new volume is served"
    );
    assert_eq!(mounts_at(&w.root.join("C")).len(), 1, "one mount, not two");
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::loops_backed_by(&img).len() > 1 {
        assert!(Instant::now() < deadline, "the old loop is let go");
        std::thread::sleep(Duration::from_millis(50));
    }
    second.shutdown(true);
    drop(m);
    assert_nothing_left(&w.root.join("C"), &img);
}

#[test]
fn an_iso_on_a_kernel_without_iso9660_fails_clearly_and_detaches_its_loop() {
    if !can_run("an_iso_on_a_kernel_without_iso9660_fails_clearly_and_detaches_its_loop") {
        return;
    }
    if kernel_has_iso9660() {
        eprintln!(
            "SKIP an_iso_on_a_kernel_without_iso9660_fails_clearly_and_detaches_its_loop: this \
             kernel has iso9660 (mounts_real_isos_where_the_kernel_has_iso9660 covers it)"
        );
        return;
    }
    let w = World::new();
    let (image, _) = w.image("iso9660", 20_000);
    let m = medium(&image, "iso9660");
    let mut e = KernelExecutor::new(LinuxSys, w.root.clone());
    let ev = publish(&mut e, "TESTISO", &m);
    let Event::Failed { error, .. } = ev else {
        panic!("expected a failure, got {ev:?}");
    };
    assert!(
        error.contains(&*image.to_string_lossy()),
        "names the image: {error}"
    );
    assert!(
        error.contains("this kernel has no iso9660 filesystem"),
        "{error}"
    );
    assert!(error.contains("No such device"), "{error}");
    drop(m);
    assert_nothing_left(&w.root.join("TESTISO"), &image);

    // And auto would pick FUSE, saying why.
    let why = kernel_usable(&LinuxSys).expect_err("no iso9660 here");
    assert!(why.contains("no iso9660"), "{why}");
}

#[test]
fn mounts_real_isos_where_the_kernel_has_iso9660() {
    if !kernel_has_iso9660() {
        // Not a failure under CI=true either: the CI machines have no iso9660 (that is why
        // the FUSE driver exists). The ENODEV path is tested above instead.
        eprintln!(
            "SKIP mounts_real_isos_where_the_kernel_has_iso9660: this kernel lists no iso9660 \
             in /proc/filesystems, so it cannot mount an ISO; the test runs on kernels that can"
        );
        return;
    }
    if !can_run("mounts_real_isos_where_the_kernel_has_iso9660") {
        return;
    }
    let w = World::new();
    assert!(kernel_usable(&LinuxSys).is_ok());
    let mut e = KernelExecutor::new(LinuxSys, w.root.clone());
    for (iso, manifest) in common::manifests() {
        let name = iso
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let fs_type = manifest["fs"].as_str().expect("fs");
        let m = medium(&iso, fs_type);
        let dev = published_loop(publish(&mut e, &name, &m));
        assert_served_mount(&w.root.join(&name), fs_type, &dev);
        tree::assert_matches_manifest(&w.root.join(&name), &name, &manifest, tree::View::Kernel);
        unpublish(&mut e, &name, &m);
        drop(m);
        assert_nothing_left(&w.root.join(&name), &iso);
    }
}

/// What `mkiso` writes reads in the kernel as its source tree: modes with set-id and sticky
/// bits, owners, times, symlinks, a hard link, deep directories relocated (and `rr_moved`
/// hidden), non-ASCII names; names of 254 bytes or more show cut to their first NM entry,
/// which ends between characters.
#[test]
fn the_kernel_reads_a_mkiso_image_as_its_source_tree() {
    if !kernel_has_iso9660() {
        eprintln!("SKIP the_kernel_reads_a_mkiso_image_as_its_source_tree: no iso9660 here");
        return;
    }
    if !can_run("the_kernel_reads_a_mkiso_image_as_its_source_tree") {
        return;
    }
    let w = World::new();
    let src = w.path("src");
    support::make_tree(&src);
    fs::write(
        src.join(format!("long/xx{}", "\u{8a9e}".repeat(84))),
        b"cut",
    )
    .expect("write");
    fs::set_permissions(src.join("bin/tool.sh"), fs::Permissions::from_mode(0o4755))
        .expect("chmod");
    let image = w.path("tree.iso");
    support::mkiso_ok(&src, &image, &["-V", "TREE"], None);

    let mut e = KernelExecutor::new(LinuxSys, w.root.clone());
    let m = medium(&image, "iso9660");
    published_loop(publish(&mut e, "TREE", &m));
    let got = support::describe_fs(&w.root.join("TREE"));
    let want: std::collections::BTreeMap<String, support::Desc> = support::describe_fs(&src)
        .into_iter()
        .map(|(path, desc)| {
            let (dir, name) = path.rsplit_once('/').expect("a name");
            if name.len() < 254 {
                return (path, desc);
            }
            let mut cut = 250;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            (format!("{dir}/{}", &name[..cut]), desc)
        })
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, w) in &want {
        assert_eq!(&got[path], w, "{path}");
    }
    unpublish(&mut e, "TREE", &m);
    drop(m);
    assert_nothing_left(&w.root.join("TREE"), &image);
}

/// The whole product on a kernel with iso9660: `watch --driver auto` picks the kernel driver,
/// ISOs dropped in (one by mkiso, one by genisoimage, one in a subdirectory) appear under
/// their labels as `ro,nosuid,nodev,noexec` iso9660 mounts of their own loop devices; a
/// deleted image goes with its mount, directory and loop; `--cleanup-on-exit` leaves nothing.
#[test]
fn the_watcher_serves_isos_through_the_kernel_where_it_has_iso9660() {
    if !kernel_has_iso9660() {
        eprintln!(
            "SKIP the_watcher_serves_isos_through_the_kernel_where_it_has_iso9660: no iso9660"
        );
        return;
    }
    if !can_run("the_watcher_serves_isos_through_the_kernel_where_it_has_iso9660") {
        return;
    }
    let w = World::new();
    let drop_dir = w.path("drop");
    fs::create_dir_all(drop_dir.join("sub")).expect("mkdir");
    let (made, data) = w.image("iso9660", 300_000);
    let gsrc = w.path("gsrc");
    fs::create_dir(&gsrc).expect("mkdir");
    fs::write(gsrc.join("hello.txt"), b"hello from genisoimage\n").expect("write");
    let geniso = w.path("g.iso");
    let out = common::output_ok(
        Command::new("genisoimage")
            .args(["-quiet", "-J", "-r", "-V", "GENISO DISC", "-o"])
            .arg(&geniso)
            .arg(&gsrc),
    );
    assert!(out.stderr.is_empty(), "{out:?}");

    let state = w.path("state.json");
    let mut child = watcher(
        &w,
        &["--driver", "auto", "--no-drives", "--cleanup-on-exit"],
        &drop_dir,
        &state,
    );
    let log = log_of(&mut child);
    wait_for("the state file", &|| {
        matches!(StateFile::load(&state), Ok(Some(_)))
    });
    let a = drop_dir.join("a.iso");
    let b = drop_dir.join("sub/b.iso");
    fs::rename(&made, &a).expect("dropping a.iso");
    fs::rename(&geniso, &b).expect("dropping sub/b.iso");
    let (ta, tb) = (w.root.join("TESTISO"), w.root.join("GENISO_DISC"));
    wait_for("both media", &|| {
        ta.join("file.bin").exists() && tb.join("hello.txt").exists()
    });
    assert_eq!(fs::read(ta.join("file.bin")).expect("read"), data);
    assert_eq!(
        fs::read(tb.join("hello.txt")).expect("read"),
        b"hello from genisoimage\n"
    );
    // The state file follows the mounts.
    wait_for("the state to list both", &|| {
        StateFile::load(&state).is_ok_and(|d| d.is_some_and(|d| d.media.len() == 2))
    });
    let doc = StateFile::load(&state).expect("state").expect("state");
    assert_eq!(
        doc.driver, "kernel",
        "auto picks the kernel where it has iso9660"
    );
    for (target, image) in [(&ta, &a), (&tb, &b)] {
        let rec = doc
            .media
            .iter()
            .find(|r| &r.origin == image)
            .unwrap_or_else(|| panic!("{} in the state: {doc:?}", image.display()));
        let dev = rec.loop_device.clone().expect("a loop device");
        assert_eq!(common::loops_backed_by(image), vec![dev.clone()]);
        assert_served_mount(target, "iso9660", Path::new(&dev));
    }

    // A deleted image goes: mount, directory and loop.
    fs::remove_file(&a).expect("deleting a.iso");
    wait_for("TESTISO to go", &|| fs::symlink_metadata(&ta).is_err());
    assert!(mounts_at(&ta).is_empty());
    wait_no_loop(&a);
    assert!(tb.join("hello.txt").exists(), "the other medium stays");

    // SIGTERM with --cleanup-on-exit: nothing left of b either.
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("waiting for the watcher");
    let log = log.join().expect("log reader");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("mount driver chosen"), "{log}");
    // Each removal is logged with the image it was, the deleted one's and the one cleaned up
    // at exit.
    for (name, image) in [("TESTISO", &a), ("GENISO_DISC", &b)] {
        let line = format!("removed name={name} origin={}", image.display());
        assert!(log.contains(&line), "{line:?} in\n{log}");
    }
    assert!(mounts_under(&w.root).is_empty(), "{log}");
    assert_eq!(fs::read_dir(&w.root).expect("root").count(), 0, "{log}");
    wait_no_loop(&b);
}

/// An image inside a medium the kernel driver serves, reached from the watched directory
/// through a symlink into the root, or into a recursive bind mount of the root (where the path
/// does not show it), is not served: its loop device would keep that medium's file system alive after
/// the medium goes.
#[test]
fn a_symlink_to_an_image_inside_a_kernel_mounted_medium_is_not_served() {
    const TEST: &str = "a_symlink_to_an_image_inside_a_kernel_mounted_medium_is_not_served";
    if !kernel_has_iso9660() {
        eprintln!("SKIP {TEST}: no iso9660");
        return;
    }
    if !can_run(TEST) {
        return;
    }
    let w = World::new();
    let drop_dir = w.path("drop");
    fs::create_dir(&drop_dir).expect("mkdir");
    let (inner, _) = w.image("iso9660", 100_000);
    let outer_src = w.path("outer-src");
    fs::create_dir(&outer_src).expect("mkdir");
    fs::rename(&inner, outer_src.join("inner.iso")).expect("moving inner.iso");
    let mkiso = |src: &Path, out: &Path, label: &str| {
        common::output_ok(
            Command::new(common::bin())
                .arg("mkiso")
                .arg(src)
                .arg("-o")
                .arg(out)
                .args(["-V", label]),
        );
    };
    let outer = w.path("outer.iso");
    mkiso(&outer_src, &outer, "OUTER");
    let state = w.path("state.json");
    let mut child = watcher(
        &w,
        &["--driver", "kernel", "--no-drives", "--cleanup-on-exit"],
        &drop_dir,
        &state,
    );
    let log = log_of(&mut child);
    let names = || -> Vec<String> {
        StateFile::load(&state)
            .ok()
            .flatten()
            .map(|d| d.media.into_iter().map(|m| m.name).collect())
            .unwrap_or_default()
    };
    let dropped = drop_dir.join("outer.iso");
    fs::rename(&outer, &dropped).expect("dropping outer.iso");
    wait_for("OUTER", &|| w.root.join("OUTER/inner.iso").exists());
    let mirror = w.path("mirror");
    fs::create_dir(&mirror).expect("mkdir");
    common::output_ok(
        // Recursive: the media are mounts of their own below the root.
        Command::new("mount")
            .arg("--rbind")
            .arg(&w.root)
            .arg(&mirror),
    );
    // A bind mount of the one medium's directory, not of the root.
    let one = w.path("one");
    fs::create_dir(&one).expect("mkdir");
    common::output_ok(
        Command::new("mount")
            .arg("--bind")
            .arg(w.root.join("OUTER"))
            .arg(&one),
    );
    let links = [
        (drop_dir.join("inner.iso"), w.root.join("OUTER/inner.iso")),
        (
            drop_dir.join("via-mirror.iso"),
            mirror.join("OUTER/inner.iso"),
        ),
        (drop_dir.join("via-one.iso"), one.join("inner.iso")),
    ];
    for (link, target) in &links {
        std::os::unix::fs::symlink(target, link).expect("symlink");
    }
    // A plain image after the links: once it is served, they have been seen and refused.
    let plain_src = w.path("plain-src");
    fs::create_dir(&plain_src).expect("mkdir");
    fs::write(plain_src.join("hello.txt"), b"hello\n").expect("write");
    let plain = w.path("plain.iso");
    mkiso(&plain_src, &plain, "PLAIN");
    fs::rename(&plain, drop_dir.join("plain.iso")).expect("dropping plain.iso");
    wait_for("PLAIN", &|| {
        names().len() == 2 && names().contains(&"PLAIN".into())
    });
    let served = names();
    common::output_ok(Command::new("umount").arg("-R").arg(&mirror));
    common::output_ok(Command::new("umount").arg(&one));
    // Nothing holds OUTER: it goes with its loop device.
    fs::remove_file(&dropped).expect("deleting outer.iso");
    wait_for("OUTER to go", &|| !w.root.join("OUTER").exists());
    wait_no_loop(&dropped);
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("waiting for the watcher");
    let log = log.join().expect("log reader");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(served.contains(&"OUTER".into()), "{served:?}\n{log}");
    assert!(!served.contains(&"TESTISO".into()), "{served:?}\n{log}");
    for (link, _) in &links {
        let image = format!("image={}", link.display());
        assert!(
            log.lines().any(|l| l.contains(&image)
                && l.contains("a symlink to a file inside a medium isomgr serves; not served")),
            "{image} refused, in\n{log}"
        );
    }
    assert!(mounts_under(&w.root).is_empty(), "{log}");
}

#[test]
fn the_watcher_picks_fuse_here_and_says_why() {
    if !can_run("the_watcher_picks_fuse_here_and_says_why") {
        return;
    }
    if kernel_has_iso9660() || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP the_watcher_picks_fuse_here_and_says_why: needs a kernel without iso9660 and with /dev/fuse");
        return;
    }
    let w = World::new();
    let drop_dir = w.path("drop");
    fs::create_dir(&drop_dir).expect("mkdir");
    let state = w.path("state.json");
    let child = watcher(&w, &["--driver", "auto"], &drop_dir, &state);
    let deadline = Instant::now() + Duration::from_secs(20);
    let doc = loop {
        if let Ok(Some(doc)) = StateFile::load(&state) {
            break doc;
        }
        assert!(Instant::now() < deadline, "no state file");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("waiting for the watcher");
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(doc.driver, "fuse", "{log}");
    assert!(log.contains("mount driver chosen"), "{log}");
    assert!(log.contains("no iso9660"), "the reason is logged: {log}");
}

/// `--driver kernel` on this kernel: the daemon runs, an ISO dropped in fails with a clear
/// error naming it, and leaves no directory and no loop.
#[test]
fn the_watcher_with_the_kernel_driver_reports_an_iso_it_cannot_mount() {
    if !can_run("the_watcher_with_the_kernel_driver_reports_an_iso_it_cannot_mount") {
        return;
    }
    if kernel_has_iso9660() {
        eprintln!("SKIP the_watcher_with_the_kernel_driver_reports_an_iso_it_cannot_mount: this kernel mounts ISOs");
        return;
    }
    let w = World::new();
    let drop_dir = w.path("drop");
    fs::create_dir(&drop_dir).expect("mkdir");
    let (made, _) = w.image("iso9660", 5_000);
    let image = drop_dir.join("disc.iso");
    let state = w.path("state.json");
    let mut child = watcher(&w, &["--driver", "kernel"], &drop_dir, &state);
    let mut stderr = child.stderr.take().expect("stderr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(StateFile::load(&state), Ok(Some(_))) {
        assert!(Instant::now() < deadline, "no state file");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::rename(&made, &image).expect("dropping the ISO in");
    // The failure is logged with the image's name: read the log until it is.
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => log.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&log).contains("not served") {
                break;
            }
        }
        (String::from_utf8_lossy(&log).into_owned(), stderr)
    });
    let (log, _stderr) = loop {
        if reader.is_finished() {
            break reader.join().expect("reader");
        }
        assert!(Instant::now() < deadline, "no failure logged");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("waiting for the watcher");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("no iso9660 filesystem"), "{log}");
    assert!(log.contains(&*image.to_string_lossy()), "{log}");
    let doc = StateFile::load(&state).expect("state").expect("state");
    assert_eq!(doc.driver, "kernel");
    assert!(doc.media.is_empty(), "{doc:?}");
    assert_eq!(
        fs::read_dir(&w.root).expect("root").count(),
        0,
        "nothing made in the root"
    );
    wait_no_loop(&image);
}

/// `detach_loop` clears a loop only while it still backs the file it was attached to: a loop
/// number reused by someone else since is left alone.
#[test]
fn detach_leaves_a_loop_that_now_backs_another_file() {
    if !can_run("detach_leaves_a_loop_that_now_backs_another_file") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    let (image, _) = w.image("squashfs", 10_000);
    // Attached by "someone else" (losetup, no autoclear).
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(&image)
        .output()
        .expect("losetup");
    assert!(out.status.success());
    let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let number: u32 = dev.to_string_lossy()["/dev/loop".len()..]
        .parse()
        .expect("loop number");
    let meta = fs::metadata(&image).expect("stat");
    let id = isomgr::sys::FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    };

    let other = LoopDev::new(
        dev.clone(),
        number,
        isomgr::sys::FileId {
            dev: id.dev,
            ino: id.ino + 1,
        },
        None,
    );
    LinuxSys
        .detach_loop(&other)
        .expect("detach of a foreign loop is a no-op");
    assert_eq!(
        common::loops_backed_by(&image),
        [dev.to_string_lossy()],
        "left alone"
    );

    let ours = LoopDev::new(dev.clone(), number, id, None);
    LinuxSys.detach_loop(&ours).expect("detach");
    wait_no_loop(&image);
    // Already free: still Ok.
    LinuxSys.detach_loop(&ours).expect("detaching a free loop");
}

/// Attaches racing each other for the same free device all succeed, each on its own device
/// (the loser of a race asks loop-control again), and all go when released.
#[test]
fn concurrent_attaches_each_get_their_own_loop() {
    if !can_run("concurrent_attaches_each_get_their_own_loop") {
        return;
    }
    let w = World::new();
    let (image, _) = w.image("squashfs", 10_000);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let image = image.clone();
            std::thread::spawn(move || {
                let f = File::open(&image).expect("open");
                LinuxSys.attach_loop(&f, &image, true).expect("attach")
            })
        })
        .collect();
    let mut devs: Vec<LoopDev> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    let mut numbers: Vec<u32> = devs.iter().map(|d| d.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 8, "distinct devices: {numbers:?}");
    assert_eq!(common::loops_backed_by(&image).len(), 8);
    for d in &mut devs {
        d.release();
    }
    wait_no_loop(&image);
}

/// A medium whose reads hang (a scratched disc, an image on a stalled NFS server): its mount(2)
/// does not return, and must hold up no other medium. Its image is served from a FUSE file
/// system this test serves itself and holds the reads of ([`common::stallfs`]).
#[test]
fn a_mount_that_hangs_holds_up_no_other_and_is_undone_if_its_medium_goes() {
    let test = "a_mount_that_hangs_holds_up_no_other_and_is_undone_if_its_medium_goes";
    if !can_run(test) || !common::watcher::can_run(test) {
        return;
    }
    /// Far longer than a publish that is not held up takes.
    const HANG: Duration = Duration::from_secs(20);
    let w = World::new();
    let (image, data) = w.image("squashfs", 100_000);
    let (backing, at) = (w.path("backing"), w.path("stalled"));
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&at).unwrap();
    for name in ["slow.squashfs", "gone.squashfs"] {
        fs::copy(&image, backing.join(name)).unwrap();
    }
    let stall = common::stallfs::StallFs::mount(&backing, &at);
    // Whatever happens, the held reads go on in the end: a thread in mount(2) waiting for
    // them would keep this process from exiting.
    let watchdog = stall.release_on_drop();
    std::thread::spawn(move || {
        std::thread::sleep(HANG);
        drop(watchdog);
    });
    let _release = stall.release_on_drop();
    let slow = medium(&at.join("slow.squashfs"), "squashfs");
    let gone = medium(&at.join("gone.squashfs"), "squashfs");
    let fast = medium(&image, "squashfs");
    stall.hold("slow.squashfs");
    stall.hold("gone.squashfs");

    let mut e = KernelExecutor::new(LinuxSys, w.root.clone());
    let start = Instant::now();
    let ev = e.run(&Action::Publish {
        name: "SLOW".into(),
        medium: slow.clone(),
    });
    assert_eq!(ev, None, "no outcome while the mount has not returned");
    assert!(
        start.elapsed() < HANG / 2,
        "the publish waited for the mount"
    );
    assert!(stall.waiting() > 0, "the mount reads from the held image");
    assert!(
        !common::loops_backed_by(&at.join("slow.squashfs")).is_empty(),
        "its loop device stays while the mount has not returned"
    );

    // Another medium is served meanwhile.
    published_loop(publish(&mut e, "FAST", &fast));
    assert_eq!(fs::read(w.root.join("FAST/file.bin")).unwrap(), data);

    // One whose medium goes while its mount hangs: undone when the mount returns.
    let ev = e.run(&Action::Publish {
        name: "GONE".into(),
        medium: gone.clone(),
    });
    assert_eq!(ev, None);
    unpublish(&mut e, "GONE", &gone);
    assert_eq!(e.mounting(), 2);
    assert!(start.elapsed() < HANG / 2, "held up by a hanging mount");

    stall.release();
    let mut outcomes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.mounting() > 0 {
        assert!(Instant::now() < deadline, "the mounts did not return");
        outcomes.extend(e.finish_late());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        matches!(&outcomes[..], [Event::Published { name, loop_device: Some(_), .. }] if name == "SLOW"),
        "{outcomes:?}"
    );
    assert_eq!(fs::read(w.root.join("SLOW/file.bin")).unwrap(), data);
    drop(gone);
    assert_nothing_left(&w.root.join("GONE"), &at.join("gone.squashfs"));

    unpublish(&mut e, "SLOW", &slow);
    unpublish(&mut e, "FAST", &fast);
    drop((slow, fast));
    assert_nothing_left(&w.root.join("SLOW"), &at.join("slow.squashfs"));
    assert_nothing_left(&w.root.join("FAST"), &image);
}

/// isomgr's reader (what `ls`, `cat` and the FUSE driver show) and the kernel's udf show the
/// same UDF trees: the same paths, types, sizes, modes, owners, mtimes, contents and symlink
/// targets. The images: a Windows-style bridge made by pycdlib (README.TXT alone in its
/// ISO9660 tree; long, 16-bit and spaced names, symlinks with `..` and absolute, an empty
/// directory), the udf-joliet fixture (genisoimage, no owners recorded) and a CD-R image with
/// a VAT (mkudffs), which the kernel mounts as it does the reader, also with three blocks of
/// zeros after its VAT.
#[test]
fn the_kernel_and_the_reader_show_the_same_udf_trees() {
    if !kernel_has_udf() {
        eprintln!(
            "SKIP the_kernel_and_the_reader_show_the_same_udf_trees: this kernel has no udf; \
             the test runs on kernels that have it (scripts/kernel-vm.sh)"
        );
        return;
    }
    if !can_run("the_kernel_and_the_reader_show_the_same_udf_trees") || !common::udf::have_pycdlib()
    {
        return;
    }
    let w = World::new();
    let src = w.path("bridge-src");
    common::udf::bridge_tree(&src);
    let bridge = w.path("bridge.iso");
    common::udf::pycdlib_bridge(&src, &bridge, "Kernel Bridge");
    // A CD-R written incrementally, cut after its VAT as a copy of the disc ends.
    let vat = w.path("vat.img");
    File::create(&vat).unwrap().set_len(10 << 20).unwrap();
    common::output_ok(
        Command::new("mkudffs")
            .args(["-b", "2048", "--media-type=cdr", "--label=VAT"])
            .arg(&vat),
    );
    common::udf::cut_after_last_block(&vat, 0);
    // The same copy read three blocks too far (zeros): both find the VAT before them.
    let padded = w.path("vat-padded.img");
    fs::copy(&vat, &padded).unwrap();
    common::udf::cut_after_last_block(&padded, 3);
    let mut e = KernelExecutor::new(LinuxSys, w.root.clone());
    for iso in [
        bridge,
        common::fixtures().join("udf-joliet.iso"),
        vat,
        padded,
    ] {
        let m = medium(&iso, "udf");
        let dev = published_loop(publish(&mut e, "udf", &m));
        let target = w.root.join("udf");
        assert_served_mount(&target, "udf", &dev);
        assert_kernel_shows_what_the_reader_shows(&target, &iso, &iso.display().to_string());
        unpublish(&mut e, "udf", &m);
        drop(m);
        assert_nothing_left(&target, &iso);
    }
}

/// The kernel's mount of `image` at `target` and isomgr's reader show the same tree; the
/// kernel's, for more checks.
fn assert_kernel_shows_what_the_reader_shows(
    target: &Path,
    image: &Path,
    what: &str,
) -> std::collections::BTreeMap<String, tree::Node> {
    let kernel = tree::snapshot(target);
    let reader = reader_view(image);
    assert_eq!(
        kernel.keys().collect::<Vec<_>>(),
        reader.keys().collect::<Vec<_>>(),
        "{what}: paths"
    );
    for (path, k) in &kernel {
        assert_eq!(Some(k), reader.get(path), "{what}: {path}");
    }
    kernel
}

/// Everything below an image's root as isomgr's reader shows it, in `tree::snapshot`'s form.
fn reader_view(iso: &Path) -> std::collections::BTreeMap<String, tree::Node> {
    use isomgr::iso9660::{Image, Kind};
    use sha2::Digest;
    let img = Image::open(File::open(iso).expect("opening the image")).expect("reading it");
    let mut out = std::collections::BTreeMap::new();
    img.walk(&img.root(), "/", |path, e| {
        let (kind, size, sha256, target) = match e.kind {
            Kind::Dir => ("dir", None, None, None),
            Kind::Symlink => (
                "symlink",
                Some(e.size),
                None,
                e.target.as_ref().map(PathBuf::from),
            ),
            Kind::File => {
                let mut data = vec![0u8; e.size as usize];
                assert_eq!(img.read_at(e, 0, &mut data).expect("reading"), data.len());
                (
                    "file",
                    Some(e.size),
                    Some(format!("{:x}", sha2::Sha256::digest(&data))),
                    None,
                )
            }
            Kind::Other => ("special", None, None, None),
        };
        let node = tree::Node {
            kind,
            size,
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            mtime: Some(e.mtime.secs),
            sha256,
            target,
        };
        out.insert(path.trim_start_matches('/').to_owned(), node);
        Ok(())
    })
    .expect("walking the image");
    out
}

/// UDF images written by the Linux kernel itself (mkudffs, then a read-write udf mount filled
/// with `cp -a`), in every layout mkudffs makes and Linux writes: blocks of 2048, 512 (a
/// stick or disk formatted with UDF) and 4096 bytes, UDF 2.01 and 1.02, short,
/// long and in-ICB allocation descriptors, file entries without extensions, a sparable
/// (CD-RW) partition. Linux puts small files in their ICB, leaves holes of sparse files
/// unrecorded and records owners, modes with set-id bits, times and symlinks: the reader
/// shows each image as the kernel does.
#[test]
fn udf_images_the_kernel_wrote_read_as_the_kernel_reads_them() {
    if !kernel_has_udf() {
        eprintln!(
            "SKIP udf_images_the_kernel_wrote_read_as_the_kernel_reads_them: this kernel has \
             no udf; the test runs on kernels that have it (scripts/kernel-vm.sh)"
        );
        return;
    }
    if !can_run("udf_images_the_kernel_wrote_read_as_the_kernel_reads_them")
        || !common::have_tool("mkudffs")
    {
        return;
    }
    let w = World::new();
    let src = w.path("src");
    common::udf::bridge_tree(&src);
    fs::write(src.join("tiny"), b"in the ICB\n").unwrap();
    let sparse = File::create(src.join("sparse.bin")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    {
        use std::os::unix::fs::FileExt;
        sparse.write_all_at(b"middle", 1 << 20).unwrap();
    }
    drop(sparse);
    fs::write(src.join("setgid-dir-file"), b"modes\n").unwrap();
    fs::set_permissions(
        src.join("setgid-dir-file"),
        fs::Permissions::from_mode(0o2750),
    )
    .unwrap();
    fs::set_permissions(src.join("a"), fs::Permissions::from_mode(0o1751)).unwrap();
    std::os::unix::fs::lchown(src.join("tiny"), Some(1234), Some(5678)).unwrap();
    let mnt = w.path("rw");
    fs::create_dir(&mnt).unwrap();
    let mut e = KernelExecutor::new(LinuxSys, w.root.clone());
    let layouts: [&[&str]; 8] = [
        &[],
        &["-b", "512"],
        &["-b", "4096"],
        &["--udfrev=1.02", "--ad=short"],
        &["--ad=long"],
        &["--ad=inicb", "--noefe"],
        &["--media-type=cdrw"],
        &["--media-type=cdrw", "--udfrev=1.50", "--spartable=4"],
    ];
    for (i, opts) in layouts.iter().enumerate() {
        let img = w.path(&format!("kernel-{i}.udf"));
        File::create(&img).unwrap().set_len(48 << 20).unwrap();
        common::output_ok(
            Command::new("mkudffs")
                .args(["-b", "2048", "--label=written"])
                .args(*opts)
                .arg(&img),
        );
        common::output_ok(
            Command::new("mount")
                .args(["-t", "udf", "-o", "loop,rw"])
                .arg(&img)
                .arg(&mnt),
        );
        let copied = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(&mnt)
            .status();
        common::output_ok(Command::new("umount").arg(&mnt));
        assert!(copied.unwrap().success(), "cp -a into {opts:?}");
        let m = medium(&img, "udf");
        let dev = published_loop(publish(&mut e, "written", &m));
        let target = w.root.join("written");
        assert_served_mount(&target, "udf", &dev);
        let kernel =
            assert_kernel_shows_what_the_reader_shows(&target, &img, &format!("mkudffs {opts:?}"));
        assert_eq!(kernel["tiny"].uid, 1234, "owners are recorded");
        assert_eq!(kernel["setgid-dir-file"].mode, 0o2750);
        unpublish(&mut e, "written", &m);
        drop(m);
        assert_nothing_left(&target, &img);
    }
}
