//! `isomgr mkiso` keeps its memory bounded by the tree's metadata, never by the data size, and
//! holds that metadata once.
//!
//! A test binary of its own: a child's `ru_maxrss` also counts the high-water mark of the
//! process that started it (Linux carries the old memory map's peak over `exec`, and std
//! spawns with `vfork`), so beside the other mkiso tests, which hold tens of MiB of test data,
//! the figure measured the test harness as much as mkiso.

mod common;
#[path = "mkiso_support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;
use support::*;

/// Peak resident memory, in KiB, of `isomgr mkiso SRC -o OUT`, which must succeed.
// The child is reaped by wait4, which std's Child cannot do with resource usage.
#[allow(clippy::zombie_processes)]
fn mkiso_peak_kib(src: &Path, out: &Path) -> i64 {
    let child = std::process::Command::new(bin())
        .arg("mkiso")
        .arg(src)
        .arg("-o")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers point to live locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "mkiso {} failed: status {status:#x}",
        src.display()
    );
    usage.ru_maxrss
}

#[test]
fn memory_does_not_grow_with_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = |name: &str, mib: usize| {
        let dir = dir_with(&tmp.path().join(name), &[("small.txt", b"small")]);
        write_data(&dir.join("data.bin"), mib);
        dir
    };
    let (little, big) = (tree("little", 1), tree("big", 256));
    // Output beside the source: the kernel copies (copy_file_range). Output on another file
    // system (a tmpfs of its own): isomgr reads and writes through its own buffer.
    let mut outs = vec![(tmp.path().to_path_buf(), "same file system")];
    let shm = tmp.path().join("tmpfs");
    let _shm = common::root_for("the copy fallback (a tmpfs of its own)").then(|| {
        outs.push((shm.clone(), "another file system"));
        Tmpfs::mount(&shm, "size=600m")
    });
    for (dir, how) in outs {
        let out = dir.join("out.iso");
        let base = mkiso_peak_kib(&little, &out);
        fs::remove_file(&out).unwrap();
        let peak = mkiso_peak_kib(&big, &out);
        let len = fs::metadata(&out).unwrap().len() >> 20;
        assert!((256..=258).contains(&len), "{how}: a {len} MiB image");
        fs::remove_file(&out).unwrap();
        // 255 MiB more data may cost no more than a few MiB (buffers are at most 8 MiB, and
        // both builds have them).
        assert!(
            peak <= base + 4096,
            "{how}: peak {peak} KiB for 256 MiB of data, {base} KiB for 1 MiB"
        );
        eprintln!("{how}: peak {peak} KiB for 256 MiB of data, {base} KiB for 1 MiB");
    }
}

#[test]
fn the_metadata_is_held_once() {
    // 12,000 directories and no file data: the image is all metadata, about 48 MiB.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..12_000 {
        fs::create_dir_all(src.join(format!("d{:02}/e{i:05}", i / 200))).unwrap();
    }
    let out = tmp.path().join("out.iso");
    let peak = mkiso_peak_kib(&src, &out);
    let image = (fs::metadata(&out).unwrap().len() >> 10) as i64;
    eprintln!("peak {peak} KiB for a {image} KiB image of metadata only");
    // The metadata once, and the tree and the program (24 MiB here); building every
    // directory's bytes apart and then copying them in held it three times.
    assert!(
        peak <= image * 5 / 4 + 24 * 1024,
        "peak {peak} KiB for a {image} KiB image of metadata only"
    );
}
