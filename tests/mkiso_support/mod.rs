//! Helpers shared by the mkiso integration tests (included with `#[path]`; no tests here).
#![allow(dead_code)]

use isomgr::iso9660::{Image, Kind};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What a comparison between two trees looks at, per path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desc {
    pub kind: &'static str,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Not compared for symlinks (their times cannot be set portably).
    pub mtime: Option<i64>,
    pub size: u64,
    pub target: Option<Vec<u8>>,
    pub sha: Option<String>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every entry below `root` (not `root` itself), keyed by "/rel/path".
pub fn describe_fs(root: &Path) -> BTreeMap<String, Desc> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for ent in fs::read_dir(&dir).expect("read_dir") {
            let ent = ent.expect("dir entry");
            let name = ent.file_name();
            let path = ent.path();
            let key = format!("{rel}/{}", name.to_string_lossy());
            let md = fs::symlink_metadata(&path).expect("lstat");
            let ft = md.file_type();
            let (kind, size, target, sha, mtime) = if ft.is_symlink() {
                let t = fs::read_link(&path).expect("readlink");
                (
                    "symlink",
                    0,
                    Some(t.as_os_str().as_bytes().to_vec()),
                    None,
                    None,
                )
            } else if ft.is_dir() {
                stack.push((path.clone(), key.clone()));
                ("dir", 0, None, None, Some(md.mtime()))
            } else {
                let data = fs::read(&path).expect("read file");
                (
                    "file",
                    md.len(),
                    None,
                    Some(sha256_hex(&data)),
                    Some(md.mtime()),
                )
            };
            out.insert(
                key,
                Desc {
                    kind,
                    perm: if kind == "symlink" {
                        0o777
                    } else {
                        md.permissions().mode() & 0o7777
                    },
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime,
                    size,
                    target,
                    sha,
                },
            );
        }
    }
    out
}

/// Every entry of the image as isomgr's own reader shows it.
pub fn describe_image(image: &Path) -> BTreeMap<String, Desc> {
    let img = Image::open(fs::File::open(image).expect("open image")).expect("reader opens image");
    let root = img.root();
    let mut out = BTreeMap::new();
    img.walk(&root, "/", |path, e| {
        let (kind, sha, target) = match e.kind {
            Kind::File => {
                let mut data = vec![0u8; e.size as usize];
                let mut got = 0;
                while got < data.len() {
                    let n = img.read_at(e, got as u64, &mut data[got..])?;
                    assert!(n > 0, "short read in {path}");
                    got += n;
                }
                ("file", Some(sha256_hex(&data)), None)
            }
            Kind::Dir => ("dir", None, None),
            Kind::Symlink => (
                "symlink",
                None,
                e.target.as_ref().map(|t| t.as_bytes().to_vec()),
            ),
            Kind::Other => ("other", None, None),
        };
        out.insert(
            path.to_string(),
            Desc {
                kind,
                perm: if kind == "symlink" {
                    0o777
                } else {
                    e.mode & 0o7777
                },
                uid: e.uid,
                gid: e.gid,
                mtime: if kind == "symlink" {
                    None
                } else {
                    Some(e.mtime.secs)
                },
                size: if kind == "file" { e.size } else { 0 },
                target,
                sha,
            },
        );
        Ok(())
    })
    .expect("reader walks the image");
    out
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_isomgr"))
}

/// Runs `isomgr mkiso SRC -o OUT ARGS...` with `SOURCE_DATE_EPOCH` as given.
pub fn mkiso(src: &Path, out: &Path, args: &[&str], sde: Option<&str>) -> Output {
    let mut c = Command::new(bin());
    c.arg("mkiso").arg(src).arg("-o").arg(out).args(args);
    match sde {
        Some(v) => c.env("SOURCE_DATE_EPOCH", v),
        None => c.env_remove("SOURCE_DATE_EPOCH"),
    };
    c.output().expect("running isomgr mkiso")
}

pub fn mkiso_ok(src: &Path, out: &Path, args: &[&str], sde: Option<&str>) {
    let o = mkiso(src, out, args, sde);
    assert!(
        o.status.success(),
        "mkiso failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().expect("running tool");
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Sets a file's or directory's mtime (and atime) to `secs`.
pub fn set_mtime(path: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let f = fs::File::open(path).expect("open for set_times");
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .expect("set_times");
}

/// The tree most tests use: nested and deep dirs, symlinks, modes, owners, long and non-ASCII
/// names, empty files and dirs, a hard link, a name that needs Joliet shortening.
pub fn make_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
    };
    fs::create_dir_all(root).unwrap();
    w("hello.txt", b"hello\n");
    w("docs/readme.md", b"# readme\n");
    w("docs/a.tar.gz", &[7u8; 3000]);
    w("docs/A.TAR.GZ", &[8u8; 10]);
    w("docs/chapter 1.txt", b"one");
    w("empty-file", b"");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    w("bin/tool.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("bin/tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    w("private/secret", b"s3cret");
    fs::set_permissions(
        root.join("private/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    w("sticky/x", b"x");
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    w("non-ascii/héllo wörld ✓.txt", "unicode".as_bytes());
    w("non-ascii/日本語のファイル名.txt", "ja".as_bytes());
    w("non-ascii/emoji-😀.txt", b"smile");
    let long255 = "n".repeat(255);
    w(&format!("long/{long255}"), b"255 bytes of name");
    let long_multi = "é".repeat(127); // 254 bytes, 127 characters
    w(&format!("long/{long_multi}"), b"long multibyte");
    w(&format!("long/{}-a.txt", "x".repeat(70)), b"a");
    w(&format!("long/{}-b.txt", "x".repeat(70)), b"b");
    let mut deep = String::from("deep");
    for i in 0..11 {
        deep.push_str(&format!("/level{i}"));
    }
    w(&format!("{deep}/bottom.txt"), b"at the bottom");
    w(&format!("{deep}/../sibling.txt"), b"sibling");
    std::os::unix::fs::symlink("../hello.txt", root.join("docs/link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("docs", root.join("link-dir")).unwrap();
    let long_target = format!(
        "{}/{}/../{}",
        "a".repeat(200),
        "b".repeat(250),
        "c".repeat(100)
    );
    std::os::unix::fs::symlink(&long_target, root.join("link-long")).unwrap();
    fs::hard_link(root.join("hello.txt"), root.join("docs/hello-hardlink.txt")).unwrap();
    let mut big = Vec::with_capacity(3 << 20);
    for i in 0..(3u32 << 18) {
        big.extend_from_slice(&i.to_le_bytes());
    }
    w("data/big.bin", &big);
    if is_root() {
        std::os::unix::fs::chown(root.join("docs/readme.md"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(root.join("private"), Some(42), Some(43)).unwrap();
    }
    // fixed times on everything but symlinks, dirs last (writing files changes them)
    let mut all: Vec<(PathBuf, bool)> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
                all.push((p, true));
            } else if md.is_file() {
                all.push((p, false));
            }
        }
    }
    for (i, (p, _)) in all.iter().filter(|(_, d)| !d).enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 3600);
    }
    for (i, (p, _)) in all.iter().filter(|(_, d)| *d).enumerate() {
        set_mtime(p, 1_500_000_000 + i as i64 * 60);
    }
}

/// A new directory `dir` holding `files` (name, contents).
pub fn dir_with(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    fs::create_dir(dir).unwrap();
    for (name, data) in files {
        fs::write(dir.join(name), data).unwrap();
    }
    dir.to_path_buf()
}

/// Writes each (path, bytes) of `files` under `root`, making the directories on the way.
pub fn tree_with(root: &Path, files: &[(&str, &[u8])]) {
    for (path, data) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
}

/// Writes `mib` MiB of data to a new file `path`: real blocks, as holes are never copied.
pub fn write_data(path: &Path, mib: usize) {
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut f = fs::File::create(path).unwrap();
    for _ in 0..mib {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
}

/// A new pseudo-terminal: (master, slave).
pub fn openpty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: two valid out-pointers; name, termios and window size may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty just returned both descriptors, owned by nobody else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}

/// A tmpfs mounted (as root) at the new directory `dir` with `options`; unmounted on drop.
pub struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    pub fn mount(dir: &'a Path, options: &str) -> Tmpfs<'a> {
        fs::create_dir(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs ({options}) at {}",
            dir.display()
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// The start sector and size of every file, as `xorriso -find / -type f -exec report_lba`
/// shows them.
pub fn xorriso_lbas(iso: &Path) -> BTreeMap<String, (u64, u64)> {
    let out = run(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-find",
            "/",
            "-type",
            "f",
            "-exec",
            "report_lba",
        ],
    );
    out.lines()
        .filter_map(|l| l.strip_prefix("File data lba:"))
        .map(|l| {
            // xt , Startlba , Blocks , Filesize , 'path'
            let f: Vec<&str> = l.splitn(5, ',').map(str::trim).collect();
            (
                f[4].trim_matches('\'').to_string(),
                (f[1].parse().unwrap(), f[3].parse().unwrap()),
            )
        })
        .collect()
}
