//! The FUSE driver end to end: real FUSE mounts of images made by genisoimage and xorriso,
//! checked with std::fs against the source trees (lstat + sha256) and /proc/self/mountinfo.
//!
//! Needs root, /dev/fuse and genisoimage; without them each test says so and skips, or fails
//! under CI=true. Every mount is taken down by a guard, lazily if need be.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{symlink, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use isomgr::fuse::reopen::{FdPool, Pooled};
use isomgr::fuse::FuseDriver;
use isomgr::iso9660::Image;
use sha2::{Digest, Sha256};

#[path = "common/tree.rs"]
mod tree;
use tree::{sha256, snapshot, Node};

/// Whether this host can run FUSE tests; under CI=true a missing piece is a failure.
fn can_run(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    let tools = which("genisoimage");
    if root && fuse && tools {
        return true;
    }
    let why = format!("{test}: needs root ({root}), /dev/fuse ({fuse}) and genisoimage ({tools})");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIPPED {why}");
    false
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Mounted driver plus a last-resort lazy unmount, so a failing test leaves no mount behind.
struct Mounted {
    driver: Option<FuseDriver>,
    root: PathBuf,
}

impl Mounted {
    fn new(root: &Path) -> Mounted {
        let driver = FuseDriver::mount(root).expect("mounting the FUSE driver");
        Mounted {
            root: driver.root().to_owned(),
            driver: Some(driver),
        }
    }
    fn driver(&self) -> &FuseDriver {
        self.driver.as_ref().expect("driver present until drop")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        drop(self.driver.take());
        if mounts_at(&self.root) > 0 {
            lazy_unmount(&self.root);
        }
    }
}

fn lazy_unmount(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: valid C string for the call.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

fn statfs(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: valid C string; `buf` is plain data the call fills in.
    let rc = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Mounts at `path` according to /proc/self/mountinfo (an independent view).
fn mounts_at(path: &Path) -> usize {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let want = path.to_string_lossy();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*want))
        .count()
}

fn open_image(path: &Path) -> Arc<Image<Pooled>> {
    let file = File::open(path).expect("opening image");
    // The driver serves images through the descriptor pool; here each has one of its own.
    let file = FdPool::new(1).adopt(file, path).expect("inspecting image");
    Arc::new(Image::open(file).expect("reading image"))
}

fn mkiso(tool: &str, args: &[&str], src: &Path, out: &Path) {
    let mut cmd = Command::new(tool);
    if tool == "xorriso" {
        cmd.args(["-as", "mkisofs"]);
    }
    let status = cmd
        .args(["-quiet"])
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(src)
        .stderr(Stdio::null())
        .status()
        .expect("running the image tool");
    assert!(status.success(), "{tool} {args:?} failed");
}

fn write(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect();
    fs::write(path, data).expect("writing a source file");
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn set_times_and_owner(path: &Path, secs: i64, uid: u32, gid: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    unsafe {
        assert_eq!(libc::lchown(c.as_ptr(), uid, gid), 0);
        assert_eq!(
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW
            ),
            0
        );
    }
}

/// A tree with what Rock Ridge must carry: modes (setuid/setgid too), owners, times, symlinks,
/// a FIFO, sizes around sector boundaries, long and non-ASCII names, nesting.
fn rock_ridge_tree(src: &Path) {
    fs::create_dir_all(src.join("deep/er/still/deeper")).expect("mkdir");
    fs::create_dir(src.join("private")).expect("mkdir");
    for (name, len) in [
        ("empty", 0),
        ("one", 1),
        ("sector-1", 2047),
        ("sector", 2048),
        ("sector+1", 2049),
        ("big.bin", (3 << 20) + 7),
    ] {
        write(&src.join(name), len, len as u8);
    }
    write(&src.join("deep/er/still/deeper/leaf.txt"), 100, 7);
    write(&src.join("private/secret"), 10, 9);
    write(&src.join("With Spaces & ünïcödé.txt"), 33, 1);
    write(&src.join("l".repeat(180)), 5, 2);
    write(&src.join("setuid"), 12, 3);
    write(&src.join("setgid"), 12, 4);
    set_mode(&src.join("setuid"), 0o4755);
    set_mode(&src.join("setgid"), 0o2750);
    set_mode(&src.join("private/secret"), 0o600);
    set_mode(&src.join("private"), 0o700);
    set_mode(&src.join("one"), 0o640);
    symlink("deep/er/still/deeper/leaf.txt", src.join("rel-link")).expect("symlink");
    symlink("/etc/hostname", src.join("abs-link")).expect("symlink");
    symlink("nowhere", src.join("deep/dangling")).expect("symlink");
    let fifo = std::ffi::CString::new(src.join("fifo").as_os_str().as_encoded_bytes()).expect("p");
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    set_times_and_owner(&src.join("one"), 1_000_000_000, 1234, 5678);
    set_times_and_owner(&src.join("private/secret"), 1_600_000_000, 42, 43);
    set_times_and_owner(&src.join("rel-link"), 1_500_000_000, 7, 8);
}

/// A tree Joliet can carry without Rock Ridge: files and directories, names up to 64 chars.
fn joliet_tree(src: &Path) {
    fs::create_dir_all(src.join("Dir One/Sub")).expect("mkdir");
    write(&src.join("Mixed Case Name.TXT"), 5000, 1);
    write(&src.join("Dir One/file.with.dots.dat"), 70_000, 2);
    write(&src.join("Dir One/Sub/ünï.txt"), 3, 3);
    write(&src.join("zero"), 0, 4);
}

/// What the mount must show for a source entry under Rock Ridge: the same, except that
/// setuid/setgid are dropped and a FIFO is an empty read-only regular file.
fn expected_rock_ridge(mut src: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    for node in src.values_mut() {
        if node.kind == "symlink" {
            node.mode = 0o777;
        } else {
            node.mode &= 0o1777;
        }
        if node.kind == "special" {
            node.kind = "file";
            node.size = Some(0);
            node.sha256 = Some(format!("{:x}", Sha256::digest(b"")));
        }
    }
    src
}

#[test]
fn serves_rock_ridge_images_exactly_like_their_source_tree() {
    if !can_run("serves_rock_ridge_images_exactly_like_their_source_tree") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    rock_ridge_tree(&src);
    let expected = expected_rock_ridge(snapshot(&src));
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let m = Mounted::new(&mnt);
    let mut tools = vec![("genisoimage", "geniso")];
    if which("xorriso") {
        tools.push(("xorriso", "xorriso"));
    }
    for (tool, name) in &tools {
        let iso = tmp.path().join(format!("{name}.iso"));
        mkiso(tool, &["-R", "-J", "-V", "RRTEST"], &src, &iso);
        m.driver().add(name, open_image(&iso)).expect("adding");
    }
    let names: Vec<String> = fs::read_dir(&mnt)
        .expect("listing root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), tools.len());
    for (_, name) in &tools {
        let mut got = snapshot(&mnt.join(name));
        // Directory sizes and times are the image's own; compare the rest.
        for (path, node) in got.iter_mut() {
            if node.kind == "dir" {
                let want = &expected[path];
                node.mtime = want.mtime;
            }
        }
        for (path, want) in &expected {
            let Some(have) = got.get(path) else {
                panic!("{name}: {path} missing from the mount");
            };
            assert_eq!(have, want, "{name}: {path}");
        }
        assert_eq!(got.len(), expected.len(), "{name}: extra entries");
        // Symlinks resolve through the mount.
        assert_eq!(
            sha256(&mnt.join(name).join("rel-link")),
            expected["deep/er/still/deeper/leaf.txt"]
                .sha256
                .clone()
                .expect("hash")
        );
    }
}

#[test]
fn serves_joliet_names_with_read_only_defaults() {
    if !can_run("serves_joliet_names_with_read_only_defaults") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    joliet_tree(&src);
    let iso = tmp.path().join("j.iso");
    mkiso("genisoimage", &["-J", "-V", "JOLIET"], &src, &iso);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let m = Mounted::new(&mnt);
    m.driver().add("j", open_image(&iso)).expect("adding");
    let got = snapshot(&mnt.join("j"));
    let want = snapshot(&src);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, w) in &want {
        let g = &got[path];
        assert_eq!(g.kind, w.kind, "{path}");
        assert_eq!(g.sha256, w.sha256, "{path}");
        assert_eq!(g.size, w.size, "{path}");
        let mode = if g.kind == "dir" { 0o555 } else { 0o444 };
        assert_eq!(g.mode, mode, "{path}");
    }
    // Read-only, for root too.
    let err = fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("j/zero"))
        .expect_err("writing must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = fs::create_dir(mnt.join("j/new")).expect_err("mkdir must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
}

/// A file with several names (hard links) in an image that says so (Rock Ridge link counts:
/// genisoimage, `xorriso --hardlinks`, isomgr's mkiso) is one inode under every name, as on the
/// disc it was made from: `cp -a` keeps the names linked and `isomgr mkiso` of the served tree
/// stores the data once. An image without Rock Ridge shares the data too, but says nothing of
/// links: its names stay files of their own, as do files of equal content.
#[test]
fn hard_links_are_served_as_one_inode() {
    if !can_run("hard_links_are_served_as_one_inode") || !which("xorriso") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("images/pxeboot")).expect("mkdir");
    write(&src.join("images/pxeboot/vmlinuz"), 700_000, 3);
    fs::hard_link(src.join("images/pxeboot/vmlinuz"), src.join("vmlinuz")).expect("link");
    fs::copy(src.join("vmlinuz"), src.join("a-copy")).expect("copy");
    let bin = env!("CARGO_BIN_EXE_isomgr");
    let made: [(&str, Vec<&str>, bool); 4] = [
        ("genisoimage", vec!["-J", "-r"], true),
        ("xorriso", vec!["-J", "-r", "--hardlinks"], true),
        (bin, vec![], true),
        ("genisoimage", vec!["-J"], false),
    ];
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let m = Mounted::new(&mnt);
    for (i, (tool, args, linked)) in made.iter().enumerate() {
        let iso = tmp.path().join(format!("{i}.iso"));
        if *tool == bin {
            let out = Command::new(bin)
                .args(["mkiso", src.to_str().unwrap(), "-o", iso.to_str().unwrap()])
                .output()
                .expect("mkiso");
            assert!(out.status.success(), "{out:?}");
        } else {
            mkiso(tool, args, &src, &iso);
        }
        let name = format!("m{i}");
        m.driver().add(&name, open_image(&iso)).expect("adding");
        let top = mnt.join(&name);
        let what = format!("{tool} {args:?}");
        let md = |p: &str| fs::metadata(top.join(p)).expect(p);
        let (a, b, copy) = (md("vmlinuz"), md("images/pxeboot/vmlinuz"), md("a-copy"));
        assert_ne!(copy.ino(), a.ino(), "{what}: a copy is a file of its own");
        if *linked {
            assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "{what}");
        } else {
            assert_ne!(a.ino(), b.ino(), "{what}");
        }
        // what readdir says agrees with stat
        let d_ino = |dir: &Path, n: &str| {
            fs::read_dir(dir)
                .expect("readdir")
                .map(|e| e.expect("entry"))
                .find(|e| e.file_name() == n)
                .map(|e| std::os::unix::fs::DirEntryExt::ino(&e))
        };
        assert_eq!(d_ino(&top, "vmlinuz"), Some(a.ino()), "{what}");
        assert_eq!(
            d_ino(&top.join("images/pxeboot"), "vmlinuz"),
            Some(b.ino()),
            "{what}"
        );
        assert_eq!(
            sha256(&top.join("images/pxeboot/vmlinuz")),
            sha256(&src.join("vmlinuz")),
            "{what}"
        );
        if !*linked {
            continue;
        }
        let copied = tmp.path().join(format!("cp{i}"));
        let st = Command::new("cp")
            .arg("-a")
            .arg(&top)
            .arg(&copied)
            .status()
            .expect("cp");
        assert!(st.success());
        let c = |p: &str| fs::metadata(copied.join(p)).expect(p);
        assert_eq!(
            c("vmlinuz").ino(),
            c("images/pxeboot/vmlinuz").ino(),
            "{what}: cp -a keeps the link"
        );
        let again = tmp.path().join(format!("again{i}.iso"));
        let out = Command::new(bin)
            .args([
                "mkiso",
                top.to_str().unwrap(),
                "-o",
                again.to_str().unwrap(),
            ])
            .output()
            .expect("mkiso");
        assert!(out.status.success(), "{out:?}");
        let size = fs::metadata(&again).expect("again").len();
        assert!(
            size < 2 * 700_000 + 500_000,
            "{what}: mkiso of the served tree stored the linked file once ({size} bytes)"
        );
    }
}

/// Whether this process still has `path` open.
fn holds_open(path: &Path) -> bool {
    fs::read_dir("/proc/self/fd")
        .expect("listing fds")
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .any(|p| p == path)
}

#[test]
fn media_come_and_go_while_a_reader_holds_a_file_open() {
    if !can_run("media_come_and_go_while_a_reader_holds_a_file_open") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a_src, b_src, c_src) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    for (dir, seed) in [(&a_src, 1u8), (&b_src, 2), (&c_src, 3)] {
        fs::create_dir(dir).expect("mkdir");
        write(&dir.join("data.bin"), 5 << 20, seed);
    }
    let a_iso = tmp.path().join("a.iso");
    let b_iso = tmp.path().join("b.iso");
    let c_iso = tmp.path().join("c.iso");
    mkiso("genisoimage", &["-R"], &a_src, &a_iso);
    mkiso("genisoimage", &["-R"], &b_src, &b_iso);
    mkiso("genisoimage", &["-R"], &c_src, &c_iso);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let m = Mounted::new(&mnt);
    let d = m.driver();
    let list = || {
        let mut v: Vec<String> = fs::read_dir(&mnt)
            .expect("listing root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(list().is_empty());
    d.add("A", open_image(&a_iso)).expect("adding A");
    d.add("B", open_image(&b_iso)).expect("adding B");
    assert!(
        d.add("B", open_image(&c_iso)).is_err(),
        "a taken name is refused"
    );
    assert_eq!(list(), ["A", "B"]);
    assert_eq!(d.names(), ["A", "B"]);

    let mut reader = File::open(mnt.join("A/data.bin")).expect("opening A's file");
    let mut head = vec![0u8; 1 << 20];
    reader.read_exact(&mut head).expect("reading the head");
    let ino_before = fs::metadata(mnt.join("A/data.bin")).expect("stat").ino();
    assert!(holds_open(&a_iso));

    assert!(d.remove("A"));
    assert!(!d.remove("A"));
    // Gone at once, in the listing and by name.
    assert_eq!(list(), ["B"]);
    let err = fs::metadata(mnt.join("A")).expect_err("A must be gone");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    // Another medium under the same name shows its own content at once.
    d.add("A", open_image(&c_iso)).expect("re-adding A");
    assert_eq!(
        sha256(&mnt.join("A/data.bin")),
        sha256(&c_src.join("data.bin"))
    );
    assert_ne!(
        fs::metadata(mnt.join("A/data.bin")).expect("stat").ino(),
        ino_before
    );

    // The open file still reads the removed medium, to the end.
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .expect("reading after removal");
    head.extend_from_slice(&rest);
    let mut h = Sha256::new();
    h.update(&head);
    assert_eq!(
        format!("{:x}", h.finalize()),
        sha256(&a_src.join("data.bin"))
    );
    assert!(holds_open(&a_iso), "the image stays open while a file is");
    drop(reader);
    // RELEASE reaches the daemon asynchronously after close.
    let start = Instant::now();
    while holds_open(&a_iso) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "image still open after the last close"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        sha256(&mnt.join("B/data.bin")),
        sha256(&b_src.join("data.bin"))
    );
}

/// A name looked up before a medium takes it (a client polling for it) must be visible at once
/// after the add, also to a lookup that was in flight while it was added: nothing the kernel
/// cached about the name may hide the new medium.
#[test]
fn a_name_looked_up_before_its_medium_arrives_is_there_at_once() {
    if !can_run("a_name_looked_up_before_its_medium_arrives_is_there_at_once") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    write(&src.join("data.bin"), 4096, 7);
    let iso = tmp.path().join("x.iso");
    mkiso("genisoimage", &["-R"], &src, &iso);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let m = Mounted::new(&mnt);
    let d = m.driver();
    /// Stops the polling client however the loop below ends (a panic included): the scope
    /// waits for it before it lets a panic through.
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stopped = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = Stop(&stopped);
        // Another client polls the names all along, so lookups are in flight during adds.
        s.spawn(|| {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..50 {
                    let _ = fs::metadata(mnt.join(format!("M{i}/data.bin")));
                }
            }
        });
        for i in 0..50 {
            let name = format!("M{i}");
            let err = fs::metadata(mnt.join(&name)).expect_err("not added yet");
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
            d.add(&name, open_image(&iso)).expect("adding");
            // No retry: the missing entry the kernel kept must be gone with the add.
            let data = fs::read(mnt.join(&name).join("data.bin"))
                .unwrap_or_else(|e| panic!("{name}/data.bin right after the add: {e}"));
            assert_eq!(data.len(), 4096);
            // A name missing inside a medium stays missing, asked twice.
            for _ in 0..2 {
                let err = fs::metadata(mnt.join(&name).join("nope.html")).expect_err("absent");
                assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
            }
            // Removed and added again under the same name: the new medium at once.
            assert!(d.remove(&name));
            assert!(fs::metadata(mnt.join(&name)).is_err());
            d.add(&name, open_image(&iso)).expect("adding again");
            assert!(
                fs::metadata(mnt.join(&name).join("data.bin")).is_ok(),
                "{name} right after adding it again"
            );
        }
        drop(stop);
    });
}

#[test]
fn a_malformed_medium_fails_alone_while_the_others_serve() {
    if !can_run("a_malformed_medium_fails_alone_while_the_others_serve") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    write(&src.join("sub/inner.txt"), 10, 1);
    write(&src.join("zz-big"), 4 << 20, 2);
    let good = tmp.path().join("good.iso");
    mkiso("genisoimage", &["-R", "-J"], &src, &good);
    // One image with a directory whose records are garbage, one cut in the middle of a file.
    let bad_dir = tmp.path().join("bad-dir.iso");
    fs::copy(&good, &bad_dir).expect("copy");
    let sector = {
        let image = open_image(&good);
        let sub = image.lookup("/sub").expect("finding /sub");
        sub.dir_sector().expect("a directory has a sector")
    };
    let mut garbage = vec![0u8; 2048];
    for rec in garbage.chunks_mut(64) {
        rec[0] = 64; // record length
        rec[2..6].copy_from_slice(&u32::MAX.to_le_bytes()); // extent far past the image
        rec[10..14].copy_from_slice(&u32::MAX.to_le_bytes()); // absurd size
        rec[32] = 200; // name longer than the record
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&bad_dir)
        .expect("opening copy");
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(sector * 2048)).expect("seek");
    f.write_all(&garbage).expect("corrupting");
    drop(f);
    let cut = tmp.path().join("cut.iso");
    fs::copy(&good, &cut).expect("copy");
    let len = fs::metadata(&cut).expect("stat").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .expect("open")
        .set_len(len - (2 << 20))
        .expect("truncating");
    let junk = tmp.path().join("junk.iso");
    write(&junk, 1 << 20, 9);
    assert!(
        Image::open(File::open(&junk).expect("open")).is_err(),
        "junk is refused before it reaches the driver"
    );

    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let m = Mounted::new(&mnt);
    m.driver().add("good1", open_image(&good)).expect("add");
    m.driver()
        .add("bad-dir", open_image(&bad_dir))
        .expect("add");
    m.driver().add("cut", open_image(&cut)).expect("add");
    m.driver().add("good2", open_image(&good)).expect("add");

    let err = fs::read_dir(mnt.join("bad-dir/sub"))
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .expect_err("a garbage directory must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Whichever file lies past the cut fails with EIO; what lies before it reads right.
    let mut failed = 0;
    for file in ["zz-big", "sub/inner.txt"] {
        match fs::read(mnt.join("cut").join(file)) {
            Ok(bytes) => assert_eq!(bytes, fs::read(src.join(file)).expect("source"), "{file}"),
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(libc::EIO), "{file}: {err}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "nothing read past the cut failed");
    assert_eq!(
        fs::read_dir(mnt.join("cut/sub")).expect("listing").count(),
        1
    );
    // The broken media's other parts and the other media still serve.
    assert_eq!(
        sha256(&mnt.join("bad-dir/zz-big")),
        sha256(&src.join("zz-big"))
    );
    for name in ["good1", "good2"] {
        assert_eq!(
            sha256(&mnt.join(name).join("sub/inner.txt")),
            sha256(&src.join("sub/inner.txt")),
            "{name}"
        );
    }
    for name in ["good1", "good2"] {
        assert_eq!(
            sha256(&mnt.join(name).join("zz-big")),
            sha256(&src.join("zz-big"))
        );
    }
}

/// Not a test by itself: the child the stale-mount test starts and kills. Serves one image at
/// `ISOMGR_TEST_SERVE_ROOT` until killed.
#[test]
fn stale_mount_child() {
    let (Ok(root), Ok(iso)) = (
        std::env::var("ISOMGR_TEST_SERVE_ROOT"),
        std::env::var("ISOMGR_TEST_SERVE_IMAGE"),
    ) else {
        return;
    };
    let driver = FuseDriver::mount(Path::new(&root)).expect("child: mounting");
    driver
        .add("m", open_image(Path::new(&iso)))
        .expect("child: adding");
    println!("ready");
    std::io::stdout().flush().expect("flush");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn restarts_over_a_stale_enotconn_mount() {
    if !can_run("restarts_over_a_stale_enotconn_mount") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    write(&src.join("f"), 100_000, 5);
    let iso = tmp.path().join("s.iso");
    mkiso("genisoimage", &["-R"], &src, &iso);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let mnt = mnt.canonicalize().expect("canonical");

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "stale_mount_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ISOMGR_TEST_SERVE_ROOT", &mnt)
        .env("ISOMGR_TEST_SERVE_IMAGE", &iso)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the child");
    // Whatever happens below, the child goes and its mount with it.
    struct Reap(std::process::Child, PathBuf);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            while mounts_at(&self.1) > 0 {
                lazy_unmount(&self.1);
            }
        }
    }
    let stdout = child.stdout.take().expect("piped stdout");
    let mut child = Reap(child, mnt.clone());
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.any(|l| l.is_ok_and(|l| l.trim_end().ends_with("ready")));
    assert!(ready, "the child never got ready");
    assert_eq!(sha256(&mnt.join("m/f")), sha256(&src.join("f")));

    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaping");
    // statfs always reaches the daemon (stat may be answered from cached attributes).
    let err = statfs(&mnt).expect_err("a dead mount must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    assert_eq!(mounts_at(&mnt), 1);

    let m = Mounted::new(&mnt);
    assert_eq!(
        mounts_at(&mnt),
        1,
        "the stale mount was replaced, not stacked"
    );
    m.driver().add("m", open_image(&iso)).expect("adding");
    assert_eq!(sha256(&mnt.join("m/f")), sha256(&src.join("f")));
    drop(m);
    assert_eq!(mounts_at(&mnt), 0, "a normal stop unmounts");
    fs::metadata(&mnt).expect("the root is a plain directory again");
}

/// Serialises tests that attach loop devices (a host-wide resource) across test binaries.
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
        assert_eq!(
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) },
            0
        );
        LoopLock(f)
    }
}

#[test]
fn serves_a_block_device_source() {
    if !can_run("serves_a_block_device_source") {
        return;
    }
    if !Path::new("/dev/loop-control").exists() || !which("losetup") {
        let why = "serves_a_block_device_source: needs loop devices and losetup";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    write(&src.join("on-a-device"), 1_234_567, 6);
    let iso = tmp.path().join("dev.iso");
    mkiso("genisoimage", &["-R"], &src, &iso);
    let _lock = LoopLock::take();
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(&iso)
        .output()
        .expect("running losetup");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    struct Detach(PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _detach = Detach(dev.clone());
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let m = Mounted::new(&mnt);
    m.driver()
        .add("dev", open_image(&dev))
        .expect("adding the device");
    assert_eq!(
        sha256(&mnt.join("dev/on-a-device")),
        sha256(&src.join("on-a-device"))
    );
    drop(m);
}

/// Every fixture image with a manifest, served at once, matches its manifest through the mount.
#[test]
fn serves_the_fixture_images_as_their_manifests_say() {
    if !can_run("serves_the_fixture_images_as_their_manifests_say") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut fixtures = Vec::new();
    for entry in fs::read_dir(&dir).expect("listing fixtures") {
        let path = entry.expect("entry").path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".tree.json"))
        else {
            continue;
        };
        let manifest: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("manifest")).expect("json");
        fixtures.push((stem.to_owned(), manifest));
    }
    assert!(!fixtures.is_empty(), "no fixtures in {}", dir.display());
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let m = Mounted::new(&mnt);
    for (name, _) in &fixtures {
        m.driver()
            .add(name, open_image(&dir.join(format!("{name}.iso"))))
            .expect("adding a fixture");
    }
    for (name, manifest) in &fixtures {
        tree::assert_matches_manifest(&mnt.join(name), name, manifest, tree::View::Fuse);
    }
}

/// The stored size of `path` in `iso` as isoinfo lists it (compressed, for zisofs), and its
/// first sector.
fn isoinfo_stored(iso: &Path, dir: &str, name: &str) -> (u64, u64) {
    let out = Command::new("isoinfo")
        .arg("-i")
        .arg(iso)
        .args(["-R", "-l"])
        .output()
        .expect("running isoinfo");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut in_dir = false;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("Directory listing of ") {
            in_dir = d.trim_end() == dir;
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if in_dir && fields.last() == Some(&name) {
            let size = fields[4].parse().expect("size");
            let lba = line
                .split('[')
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|l| l.parse().ok())
                .expect("extent");
            return (size, lba);
        }
    }
    panic!("{name} not in {dir} of isoinfo's listing:\n{text}");
}

/// zisofs (files compressed in blocks, which Linux's iso9660 inflates as it reads; made here
/// by xorriso's -zisofs in each block size) and zisofs2: the mount shows each file at its size with its
/// bytes, any range of it reads as the source has it, and bsdtar (libarchive's reader; xorriso
/// for zisofs2) reads the image the same. A damaged block fails that file's reads (EIO) and nothing else.
#[test]
fn serves_zisofs_compressed_files_as_they_were() {
    if !can_run("serves_zisofs_compressed_files_as_they_were") {
        return;
    }
    for tool in ["xorriso", "isoinfo", "bsdtar"] {
        if !which(tool) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{tool} missing"
            );
            eprintln!("SKIPPED: {tool} missing");
            return;
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    let text: Vec<u8> = (0..5_000_000u32)
        .map(|i| b"abcdefgh ijk\n"[(i.wrapping_mul(2_654_435_761) >> 28) as usize % 13])
        .collect();
    fs::write(src.join("text.txt"), &text).expect("write");
    fs::write(src.join("zeros.bin"), vec![0u8; 300_000]).expect("write");
    let mut mixed = text[..3 * 32768].to_vec();
    mixed[32768..65536].fill(0);
    fs::write(src.join("sub/three-blocks.bin"), &mixed).expect("write");
    fs::write(src.join("sub/one"), b"x").expect("write");
    fs::write(src.join("sub/empty"), b"").expect("write");
    write(&src.join("random.bin"), 100_000, 5);
    let source = snapshot(&src);

    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let m = Mounted::new(&mnt);
    let mut images = Vec::new();
    // zisofs in its three block sizes, and zisofs2 (Z2 entries, 64-bit pointers) in 1 MiB ones
    for (name, params) in [
        ("z32", "block_size=32k"),
        ("z64", "block_size=64k"),
        ("z128", "block_size=128k"),
        ("zisofs2", "version_2=on:susp_z2=on:block_size_v2=1m"),
    ] {
        let iso = tmp.path().join(format!("{name}.iso"));
        let status = Command::new("xorriso")
            .arg("-outdev")
            .arg(&iso)
            .arg("-map")
            .arg(&src)
            .arg("/")
            .args(["-zisofs", params])
            .args(["-set_filter_r", "--zisofs", "/", "--", "-commit"])
            .stderr(Stdio::null())
            .status()
            .expect("running xorriso");
        assert!(status.success());
        let (stored, _) = isoinfo_stored(&iso, "/", "text.txt");
        assert!(
            stored < text.len() as u64 / 2,
            "{name}: not compressed ({stored})"
        );
        m.driver().add(name, open_image(&iso)).expect("adding");
        images.push((iso, name));
    }
    for (iso, name) in &images {
        let got = snapshot(&mnt.join(name));
        for (path, want) in &source {
            let have = got
                .get(path)
                .unwrap_or_else(|| panic!("{name}: {path} missing"));
            assert_eq!(
                (have.kind, have.size, &have.sha256),
                (want.kind, want.size, &want.sha256),
                "{name}: {path}"
            );
        }
        let f = File::open(mnt.join(name).join("text.txt")).expect("open");
        for (offset, len) in [
            (0u64, 10usize),
            (32_767, 3),
            (65_530, 200_000),
            (4_999_990, 100),
        ] {
            let mut buf = vec![0u8; len];
            let n = f.read_at(&mut buf, offset).expect("pread");
            let want = &text[offset as usize..(offset as usize + len).min(text.len())];
            assert!(buf[..n] == *want, "{name}: {offset}+{len}");
        }
        // bsdtar (libarchive 3.6) reads zisofs but not zisofs2; xorriso reads both.
        let out = tmp.path().join(format!("{name}-extracted"));
        let mut extract = if *name == "zisofs2" {
            let mut c = Command::new("xorriso");
            c.args(["-osirrox", "on", "-indev"])
                .arg(iso)
                .args(["-extract", "/"])
                .arg(&out);
            c
        } else {
            fs::create_dir(&out).expect("mkdir");
            let mut c = Command::new("bsdtar");
            c.arg("-xf").arg(iso).arg("-C").arg(&out);
            c
        };
        let status = extract.stderr(Stdio::null()).status().expect("extracting");
        assert!(status.success(), "{name}: {extract:?}");
        assert_eq!(
            sha256(&out.join("text.txt")),
            sha256(&src.join("text.txt")),
            "{name}: {extract:?}"
        );
    }

    // A damaged first block of text.txt: reading it fails, the rest of the image reads.
    let (iso, _) = &images[0];
    let mut bytes = fs::read(iso).expect("read");
    let (_, lba) = isoinfo_stored(iso, "/", "text.txt");
    let at = lba as usize * 2048;
    let first = u32::from_le_bytes(bytes[at + 16..at + 20].try_into().expect("4")) as usize;
    bytes[at + first..at + first + 32].fill(0xFF);
    let damaged = tmp.path().join("damaged.iso");
    fs::write(&damaged, &bytes).expect("write");
    m.driver()
        .add("damaged", open_image(&damaged))
        .expect("adding");
    let err = fs::read(mnt.join("damaged/text.txt")).expect_err("a damaged block reads");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let mut tail = vec![0u8; 100];
    let f = File::open(mnt.join("damaged/text.txt")).expect("open");
    f.read_at(&mut tail, 4_999_900)
        .expect("the last block reads");
    assert!(tail == text[4_999_900..], "the last block");
    assert_eq!(
        sha256(&mnt.join("damaged/sub/three-blocks.bin")),
        sha256(&src.join("sub/three-blocks.bin"))
    );
    assert_eq!(
        sha256(&mnt.join("z32/text.txt")),
        sha256(&src.join("text.txt"))
    );

    // text.txt's Z2 entry claiming 2^64 - 1 bytes: the size shown is what its stored
    // pointers can cover (a few MiB), not that, and its first block still reads.
    let (iso2, _) = &images[3];
    let mut bytes = fs::read(iso2).expect("read");
    let at = bytes
        .windows(16)
        .position(|w| w[..6] == *b"Z2\x10\x02PZ" && w[8..] == (text.len() as u64).to_le_bytes())
        .expect("text.txt's Z2 entry");
    bytes[at + 8..at + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    let huge = tmp.path().join("huge.iso");
    fs::write(&huge, &bytes).expect("write");
    m.driver().add("huge", open_image(&huge)).expect("adding");
    let len = fs::metadata(mnt.join("huge/text.txt")).expect("stat").len();
    let (stored, _) = isoinfo_stored(&huge, "/", "text.txt");
    assert!(
        len > text.len() as u64 && len <= stored / 8 * (1 << 20),
        "{len} from {stored} stored bytes"
    );
    let mut head = vec![0u8; 4096];
    let f = File::open(mnt.join("huge/text.txt")).expect("open");
    let n = f.read_at(&mut head, 0).expect("the start reads");
    assert!(head[..n] == text[..n]);
}
