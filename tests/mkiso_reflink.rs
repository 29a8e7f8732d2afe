//! Where the output's file system shares blocks between files (XFS, btrfs), `mkiso` puts large
//! files on block boundaries in the image, and the kernel clones their data instead of copying
//! it: building the image of a large tree takes next to no time and no space.
//!
//! Runs on a scratch XFS file system in a sparse file, mounted through a loop device. Needs
//! root, loop devices and mkfs.xfs (xfsprogs; scripts/setup.sh installs it); without them the
//! test says so and skips, or fails under CI=true.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch XFS mounted at `dir/mnt`; unmounted (and its loop device freed) on drop.
struct Scratch {
    mnt: PathBuf,
    _lock: common::LoopLock,
}

impl Scratch {
    fn new(dir: &Path) -> Scratch {
        let lock = common::loop_lock();
        let image = dir.join("xfs.img");
        fs::File::create(&image).unwrap().set_len(1 << 30).unwrap();
        let st = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&image)
            .status()
            .expect("running mkfs.xfs");
        assert!(st.success(), "mkfs.xfs");
        let mnt = dir.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let st = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .status()
            .expect("running mount");
        assert!(st.success(), "mounting the scratch XFS");
        Scratch { mnt, _lock: lock }
    }

    /// Free bytes, from statvfs.
    fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.mnt.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills the zeroed struct for a valid C string.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0, "statvfs");
        s.f_bfree * s.f_frsize
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The loop device was attached with autoclear by mount: it goes with the unmount.
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn can_run() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let loops = Path::new("/dev/loop-control").exists();
    let xfs = fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\txfs\n"));
    if !(root && loops && xfs) {
        let why =
            format!("needs root ({root}), loop devices ({loops}) and xfs in the kernel ({xfs})");
        assert!(!common::in_ci(), "{why}");
        eprintln!("SKIP: {why}");
        return false;
    }
    common::have_tool("mkfs.xfs")
}

#[test]
fn large_files_are_cloned_where_the_file_system_shares_blocks() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let x = Scratch::new(tmp.path());
    let src = x.mnt.join("src");
    fs::create_dir(&src).unwrap();
    // A small file first, so the large ones would start mid-block without the alignment.
    fs::write(
        src.join("a-small.txt"),
        b"odd sectors before the large files",
    )
    .unwrap();
    let mut files = Vec::new();
    // Cloned by the writer itself (FICLONERANGE); the 5 MiB one as one piece per thread would
    // be copied.
    for (i, len) in [(1u8, (48 << 20) + 3), (2, 40 << 20), (3, 5 << 20)] {
        let data: Vec<u8> = (0..len)
            .map(|k: usize| (k as u8).wrapping_mul(31).wrapping_add(i) ^ (k >> 12) as u8)
            .collect();
        let path = src.join(format!("big-{i}.bin"));
        fs::write(&path, &data).unwrap();
        files.push((path, data));
    }
    let st = Command::new("sync").status().unwrap();
    assert!(st.success());
    let before = x.free();

    let out = x.mnt.join("out.iso");
    let run = common::isomgr(&["mkiso", src.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(run.status.success(), "mkiso: {run:?}");
    let st = Command::new("sync").status().unwrap();
    assert!(st.success());
    let used = before.saturating_sub(x.free());
    // 93 MiB of data in the image, but the blocks are the source files' own: what the image
    // takes of its own is its metadata and the small file (XFS log traffic aside).
    assert!(
        used < 8 << 20,
        "the image took {used} bytes of new space: the data was copied, not cloned"
    );
    let frag = Command::new("filefrag")
        .arg("-v")
        .arg(&out)
        .output()
        .unwrap();
    let frag = String::from_utf8_lossy(&frag.stdout);
    assert!(frag.contains("shared"), "no shared extents:\n{frag}");

    // And the image reads back exactly.
    for (path, data) in &files {
        let name = format!("/{}", path.file_name().unwrap().to_str().unwrap());
        let got = common::isomgr(&["cat", out.to_str().unwrap(), &name]);
        assert!(got.status.success(), "cat {name}: {got:?}");
        assert!(got.stdout == *data, "{name} differs");
    }
}
