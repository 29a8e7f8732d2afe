//! Where `isomgr mkiso -o` writes: a file is replaced by rename (a symlink written through);
//! standard output, pipes and devices are written in place and in order, with the same bytes,
//! and never replaced; directories, sockets, terminals and dangling symlinks are refused
//! before anything is read.

mod common;
#[path = "mkiso_support/mod.rs"]
mod support;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

const SDE: &str = "1700000000";

/// A tree with small files, a dense 2 MiB file and a 5 MiB file that is mostly holes, and the
/// image of it written to a plain file, to compare the other outputs with.
fn tree_and_reference(tmp: &Path) -> (PathBuf, Vec<u8>) {
    let src = dir_with(
        &tmp.join("src"),
        &[("a.txt", b"alpha\n"), ("b.txt", &[b'b'; 5000])],
    );
    write_data(&src.join("dense.bin"), 2);
    let sparse = fs::File::create(src.join("sparse.bin")).unwrap();
    sparse.set_len(5 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"in the middle", 3 << 20).unwrap();
    let reference = tmp.join("reference.iso");
    mkiso_ok(&src, &reference, &[], Some(SDE));
    (src, fs::read(&reference).unwrap())
}

fn mkiso_cmd(src: &Path, out: &Path) -> Command {
    let mut c = Command::new(bin());
    c.arg("mkiso")
        .arg(src)
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", SDE)
        .stdin(Stdio::null());
    c
}

/// Runs mkiso with stdout to a pipe and returns what came through it.
fn through_a_pipe(src: &Path, out: &Path) -> Vec<u8> {
    let o = mkiso_cmd(src, out).output().unwrap();
    assert!(
        o.status.success(),
        "-o {}: {}",
        out.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got == want, "{what}: bytes differ from the file build");
}

#[test]
fn standard_output_and_pipes_get_the_bytes_a_file_gets() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, want) = tree_and_reference(tmp.path());

    assert_same(&through_a_pipe(&src, Path::new("-")), &want, "-o -");
    // /dev/stdout names the pipe: written into, never replaced by a file
    assert_same(
        &through_a_pipe(&src, Path::new("/dev/stdout")),
        &want,
        "-o /dev/stdout",
    );
    assert!(
        fs::symlink_metadata("/dev/stdout")
            .unwrap()
            .file_type()
            .is_symlink(),
        "/dev/stdout is no longer a symlink"
    );

    // a named pipe, read as it is written
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    let o = mkiso_cmd(&src, &fifo).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same(&reader.join().unwrap(), &want, "-o FIFO");
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // nothing but the tree, the reference and the FIFO
    let mut names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["fifo", "reference.iso", "src"]);
}

#[test]
fn an_image_cut_short_by_a_closed_pipe_is_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, _) = tree_and_reference(tmp.path());
    let mut child = mkiso_cmd(&src, Path::new("-"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then close: the image (over 2 MiB) cannot all fit in the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("standard output") && err.contains("Broken pipe"),
        "{err}"
    );
}

#[test]
fn character_devices_are_written_in_place_and_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, _) = tree_and_reference(tmp.path());
    let o = mkiso_cmd(&src, Path::new("/dev/null")).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // /dev/full: every write fails with ENOSPC
    let o = mkiso_cmd(&src, Path::new("/dev/full")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("writing /dev/full") && err.contains("No space left on device"),
        "{err}"
    );
    for dev in ["/dev/null", "/dev/full"] {
        let md = fs::symlink_metadata(dev).unwrap();
        assert!(md.file_type().is_char_device(), "{dev} was replaced");
    }
}

/// A loop device over a file of 0xFF bytes, `len` long; detached on drop.
struct Loop {
    dev: PathBuf,
    backing: PathBuf,
    _lock: common::LoopLock,
}

impl Loop {
    fn new(dir: &Path, name: &str, len: usize) -> Loop {
        let lock = common::loop_lock();
        let backing = dir.join(name);
        fs::write(&backing, vec![0xff; len]).unwrap();
        let o = common::output_ok(Command::new("losetup").args(["-f", "--show"]).arg(&backing));
        let dev = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
        Loop {
            dev,
            backing,
            _lock: lock,
        }
    }

    /// What the device holds (through the device, not the page cache of the backing file).
    fn contents(&self) -> Vec<u8> {
        fs::read(&self.dev).unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = fs::remove_file(&self.backing);
    }
}

#[test]
fn a_block_device_gets_the_image_in_place_with_holes_written_as_zeros() {
    if !common::root_for("writing to a loop device") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, want) = tree_and_reference(tmp.path());

    // Larger than the image: the image at the start (its holes as zeros, not the old 0xFF),
    // the rest untouched.
    let dev = Loop::new(tmp.path(), "big.img", 12 << 20);
    let o = mkiso_cmd(&src, &dev.dev).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = dev.contents();
    assert_same(&got[..want.len()], &want, "loop device");
    assert!(got[want.len()..].iter().all(|&b| b == 0xff));
    assert!(fs::metadata(&dev.dev)
        .unwrap()
        .file_type()
        .is_block_device());
    drop(dev);

    // Too small: refused before a byte is written.
    let dev = Loop::new(tmp.path(), "small.img", 1 << 20);
    let o = mkiso_cmd(&src, &dev.dev).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let needed = format!("holds {} bytes; the image needs {}", 1 << 20, want.len());
    assert!(err.contains(&needed), "{err}");
    assert!(dev.contents().iter().all(|&b| b == 0xff), "written into");
    drop(dev);

    // Held exclusively (as a mounted device is): refused, untouched.
    let dev = Loop::new(tmp.path(), "held.img", 12 << 20);
    let _held = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&dev.dev)
        .unwrap();
    let o = mkiso_cmd(&src, &dev.dev).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Device or resource busy"), "{err}");
    assert!(dev.contents().iter().all(|&b| b == 0xff), "written into");
}

#[test]
fn a_symlink_to_an_image_is_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, want) = tree_and_reference(tmp.path());
    let images = tmp.path().join("images");
    fs::create_dir(&images).unwrap();
    fs::write(images.join("2026-12.iso"), b"last month's").unwrap();
    let link = tmp.path().join("latest.iso");
    std::os::unix::fs::symlink("images/2026-12.iso", &link).unwrap();
    mkiso_ok(&src, &link, &[], Some(SDE));
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("images/2026-12.iso")
    );
    assert_same(
        &fs::read(images.join("2026-12.iso")).unwrap(),
        &want,
        "link",
    );
    assert_eq!(
        fs::read_dir(&images).unwrap().count(),
        1,
        "left a file behind"
    );
}

/// Runs mkiso from a source that does not exist: an error about the output shows the output
/// was checked before the tree was read.
fn refused(out: &Path, stdout: Stdio) -> String {
    let o = Command::new(bin())
        .arg("mkiso")
        .arg("/nonexistent/source")
        .arg("-o")
        .arg(out)
        .stdout(stdout)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn directories_sockets_terminals_and_dangling_symlinks_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    fs::create_dir(&dir).unwrap();
    let err = refused(&dir, Stdio::null());
    assert!(
        err.contains(&format!("output {} is a directory", dir.display())),
        "{err}"
    );
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);

    let sock = tmp.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = refused(&sock, Stdio::null());
    assert!(err.contains("is a socket"), "{err}");

    let dangling = tmp.path().join("dangling.iso");
    std::os::unix::fs::symlink("missing/x.iso", &dangling).unwrap();
    let err = refused(&dangling, Stdio::null());
    assert!(
        err.contains("is a symlink to missing/x.iso, which does not exist"),
        "{err}"
    );
    assert!(!tmp.path().join("missing").exists());

    // standard output on a terminal: nothing is written to it
    let (master, slave) = openpty();
    let err = refused(Path::new("-"), Stdio::from(slave));
    assert!(
        err.contains("standard output is a terminal; send the image to a file or a pipe"),
        "{err}"
    );
    let mut master = fs::File::from(master);
    set_nonblocking(&master);
    let mut shown = Vec::new();
    let _ = master.read_to_end(&mut shown);
    assert!(
        shown.is_empty(),
        "wrote {} bytes to the terminal",
        shown.len()
    );
}

fn set_nonblocking(f: &fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

#[test]
fn a_read_only_directory_is_an_error_naming_the_output() {
    if !common::root_for("mounting a read-only tmpfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = dir_with(&tmp.path().join("src"), &[("a.txt", b"a")]);
    let ro = tmp.path().join("ro");
    let _ro = Tmpfs::mount(&ro, "ro,size=1m");
    let out = ro.join("x.iso");
    let o = mkiso(&src, &out, &[], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!("creating {}: Read-only file system", out.display());
    assert!(err.contains(&want), "{err}");
}
