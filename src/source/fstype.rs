//! Which file system a watched directory lives on, and whether inotify can be trusted there.
//!
//! inotify reports changes made through this kernel's VFS only. On a network or FUSE file
//! system, files added, removed or renamed by another machine (or by the FUSE server itself)
//! send no event: such a directory has to be rescanned on a timer. [`remote_fs`] is the pure
//! classification of statfs(2) `f_type` magic numbers (`<linux/magic.h>`, and the few that
//! file systems keep in their own headers); [`statfs_type`] is the one system call.

use std::path::Path;

/// File systems whose content can change without an inotify event here: network and cluster
/// file systems, and FUSE (the server may change what it shows at any time).
const REMOTE: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x517B, "smb"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x0102_1997, "9p"),
    (0x6573_5546, "fuse"),
    (0x00C3_6400, "ceph"),
    (0x5346_414F, "afs"),
    (0x6B41_4653, "kafs"),
    (0x7375_7245, "coda"),
    (0x0116_1970, "gfs2"),
    (0x7461_636F, "ocfs2"),
    (0x564C, "ncpfs"),
];

/// Local file systems, named for the log line only.
const LOCAL: &[(i64, &str)] = &[
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x794C_7630, "overlay"),
    (0x2FC1_2FC1, "zfs"),
    (0xF2F5_2010, "f2fs"),
    (0x4d44, "vfat"),
    (0x5346_544E, "ntfs"),
    (0x7366_746E, "ntfs3"),
    (0x7371_7368, "squashfs"),
];

/// The name of a file system whose changes inotify may miss, from its statfs `f_type`;
/// `None` for a local one (or one not known to be remote).
pub fn remote_fs(f_type: i64) -> Option<&'static str> {
    REMOTE.iter().find(|(m, _)| *m == f_type).map(|(_, n)| *n)
}

/// Whether a file system named `fstype` as `/proc/self/mountinfo` names it (`nfs4`, `cifs`,
/// `fuse.sshfs`...) is one whose changes inotify may miss: the types of [`REMOTE`], by name.
/// Read from the mount table, it needs no statfs(2), which a dead server would hold up.
pub fn remote_fs_named(fstype: &str) -> bool {
    let base = fstype.split('.').next().unwrap_or(fstype);
    matches!(
        base,
        "nfs"
            | "nfs4"
            | "smbfs"
            | "smb3"
            | "cifs"
            | "9p"
            | "fuse"
            | "fuseblk"
            | "ceph"
            | "afs"
            | "coda"
            | "gfs2"
            | "ocfs2"
            | "ncpfs"
            | "glusterfs"
    )
}

/// A name for any `f_type`, for log lines: the known name or `unknown`.
pub fn fs_name(f_type: i64) -> &'static str {
    remote_fs(f_type)
        .or_else(|| LOCAL.iter().find(|(m, _)| *m == f_type).map(|(_, n)| *n))
        .unwrap_or("unknown")
}

/// statfs(2) `f_type` of the file system holding `path`, as an unsigned 32-bit value (the
/// kernel's magic numbers; `f_type` is signed on some architectures).
pub fn statfs_type(path: &Path) -> std::io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs writes into the zeroed struct it is given; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(magic(&st))
}

/// [`statfs_type`] of the file system holding an open file (fstatfs(2)).
pub fn fstatfs_type(file: &std::fs::File) -> std::io::Result<i64> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: fstatfs writes into the zeroed struct it is given; the descriptor is open.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(magic(&st))
}

fn magic(st: &libc::statfs) -> i64 {
    #[allow(clippy::unnecessary_cast)]
    let t = st.f_type as i64;
    t & 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_cluster_and_fuse_file_systems_are_remote() {
        for (magic, name) in [
            (0x6969, "nfs"),
            (0xFF53_4D42, "cifs"),
            (0xFE53_4D42, "smb2"),
            (0x517B, "smb"),
            (0x0102_1997, "9p"),
            (0x6573_5546, "fuse"),
            (0x00C3_6400, "ceph"),
            (0x5346_414F, "afs"),
            (0x6B41_4653, "kafs"),
        ] {
            assert_eq!(remote_fs(magic), Some(name), "{magic:#x}");
            assert_eq!(fs_name(magic), name);
        }
    }

    #[test]
    fn local_file_systems_keep_inotify() {
        for magic in [
            0xEF53,
            0x5846_5342,
            0x9123_683E,
            0x0102_1994,
            0x794C_7630,
            0x1234,
        ] {
            assert_eq!(remote_fs(magic), None, "{magic:#x}");
        }
        assert_eq!(fs_name(0xEF53), "ext4");
        assert_eq!(fs_name(0x1234), "unknown");
    }

    #[test]
    fn mount_table_names_of_network_and_fuse_file_systems_are_remote() {
        for name in [
            "nfs",
            "nfs4",
            "cifs",
            "smb3",
            "9p",
            "fuse",
            "fuse.sshfs",
            "fuse.rclone",
            "fuseblk",
            "ceph",
            "glusterfs",
        ] {
            assert!(remote_fs_named(name), "{name}");
        }
        for name in [
            "ext4", "xfs", "tmpfs", "overlay", "iso9660", "nfsd", "fusectl", "",
        ] {
            assert!(!remote_fs_named(name), "{name}");
        }
    }

    #[test]
    fn statfs_reads_the_magic_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let t = statfs_type(dir.path()).unwrap();
        assert!(t > 0 && t <= 0xFFFF_FFFF, "{t:#x}");
        assert!(statfs_type(&dir.path().join("missing")).is_err());
        // /proc is procfs everywhere Linux runs.
        assert_eq!(statfs_type(Path::new("/proc")).unwrap(), 0x9FA0);
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(fstatfs_type(&f).unwrap(), 0x9FA0);
    }
}
