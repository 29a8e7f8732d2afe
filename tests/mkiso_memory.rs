//! `isomgr mkiso` keeps its memory bounded by the tree's metadata, never by the data size.
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
    if is_root() {
        fs::create_dir(&shm).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=600m", "tmpfs"])
            .arg(&shm)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs");
        outs.push((shm.clone(), "another file system"));
    } else {
        assert!(
            !common::in_ci(),
            "the copy fallback needs root (tmpfs) under CI"
        );
        eprintln!("SKIP (part): the copy fallback needs root to mount a tmpfs");
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = is_root().then(|| Unmount(shm.clone()));
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
