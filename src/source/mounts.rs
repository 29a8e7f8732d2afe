//! Notices the mount table changing, so that a file system mounted on, above or inside a
//! watched directory after the start (a USB disk, an NFS share mounted late, an automount),
//! or unmounted from there, is watched and scanned again.
//!
//! An inotify watch holds an inode, not a path: once a file system is mounted over a watched
//! directory, the path leads to another directory that nobody watches, and the images copied
//! there would never be seen; once it is unmounted (`umount -l`), the media below it would be
//! served from a file system no path reaches any more. `/proc/self/mountinfo` polls
//! `POLLPRI` whenever a mount or unmount happens in this mount namespace (proc(5)).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sys::{MountEntry, StopFd};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// A running watch on the mount table; stopped on drop.
pub struct MountWatch {
    stop: Arc<StopFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MountWatch {
    /// Calls `changed` on the watch's thread after each change of the mount table (several
    /// changes in a row may give one call).
    pub fn start(changed: impl Fn() + Send + 'static) -> std::io::Result<MountWatch> {
        let table = File::open(MOUNTINFO)?;
        let stop = Arc::new(StopFd::new()?);
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("isomgr-mounts".into())
                .spawn(move || wait_for_changes(&table, &stop, &changed))?
        };
        Ok(MountWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for MountWatch {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_for_changes(table: &File, stop: &StopFd, changed: &impl Fn()) {
    // The table is always readable (POLLIN): only POLLPRI (with POLLERR) says it changed; the
    // poll itself takes the change as seen.
    loop {
        match stop.wait(table.as_raw_fd(), libc::POLLPRI) {
            Ok(Some(revents)) if revents & (libc::POLLPRI | libc::POLLERR) != 0 => changed(),
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "poll(2) on {MOUNTINFO}: mounts made after this are not noticed");
                return;
            }
        }
    }
}

/// The mount table now.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    use crate::sys::Sys;
    crate::sys::linux::LinuxSys.mounts()
}

/// A mount as far as a watched directory is concerned: (mount id, mount point).
pub type Bearing = Vec<(u32, PathBuf)>;

/// The mounts that decide what a watched directory shows, known by any of `paths` (as written,
/// and with its symlinks resolved): those at or above it, and those inside it. When this list
/// changes, the directory is another one, or holds other trees, than the ones watched.
pub fn bearing_on(mounts: &[MountEntry], paths: &[&Path]) -> Bearing {
    let mut out: Bearing = mounts
        .iter()
        .filter(|m| {
            paths
                .iter()
                .any(|p| p.starts_with(&m.mount_point) || m.mount_point.starts_with(p))
        })
        .map(|m| (m.id, m.mount_point.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The network and FUSE file systems (see [`super::fstype::remote_fs_named`]) mounted strictly
/// inside a watched directory known by `paths` (as written first, then with its symlinks
/// resolved) and seen there (not covered by another mount): each mount point as reached
/// through `paths[0]`, with its type. inotify misses what other machines change on them.
pub fn remote_inside(mounts: &[MountEntry], paths: &[&Path]) -> Vec<(PathBuf, String)> {
    let Some(written) = paths.first() else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, String)> = mounts
        .iter()
        .filter(|m| super::fstype::remote_fs_named(&m.fstype) && seen(mounts, m))
        .filter_map(|m| {
            paths.iter().find_map(|p| {
                let rel = m.mount_point.strip_prefix(p).ok()?;
                (!rel.as_os_str().is_empty()).then(|| (written.join(rel), m.fstype.clone()))
            })
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// The mount a path at `point` leads to among those mounted exactly there: the one no other
/// is stacked on.
fn top_at<'a>(mounts: &'a [MountEntry], point: &Path) -> Option<&'a MountEntry> {
    let at = || mounts.iter().filter(|m| m.mount_point == point);
    at().find(|m| !at().any(|o| o.parent == m.id && o.id != m.id))
}

/// Whether mount `m` is what its mount point shows: nothing is stacked on it, and it hangs
/// from the mount its parent path leads to, which is seen in turn (a file system mounted over
/// a directory above it hides it).
fn seen(mounts: &[MountEntry], m: &MountEntry) -> bool {
    let mut m = m;
    // (At most one step per path component; the bound guards against a malformed table.)
    for _ in 0..=m.mount_point.components().count() {
        if top_at(mounts, &m.mount_point).map(|t| t.id) != Some(m.id) {
            return false;
        }
        let above = mounts
            .iter()
            .filter(|o| o.mount_point != m.mount_point && m.mount_point.starts_with(&o.mount_point))
            .map(|o| &o.mount_point)
            .max_by_key(|p| p.as_os_str().len());
        let Some(above) = above else {
            return true;
        };
        match top_at(mounts, above) {
            Some(parent) if parent.id == m.parent => m = parent,
            _ => return false,
        }
    }
    false
}

/// What `now` has that `before` had not (mounted), and the other way round (unmounted).
pub fn difference(before: &Bearing, now: &Bearing) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let only = |a: &Bearing, b: &Bearing| -> Vec<PathBuf> {
        a.iter()
            .filter(|m| !b.contains(m))
            .map(|m| m.1.clone())
            .collect()
    };
    (only(now, before), only(before, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn entry(id: u32, at: &str) -> MountEntry {
        MountEntry {
            id,
            parent: 1,
            dev: 0,
            mount_point: at.into(),
            fstype: "ext4".into(),
            source: "/dev/vda1".into(),
        }
    }

    #[test]
    fn the_mounts_at_above_and_inside_a_directory_bear_on_it() {
        let table = [
            entry(1, "/"),
            entry(2, "/srv"),
            entry(3, "/srv/isos"),
            entry(4, "/srv/iso-drop/usb"),
            entry(5, "/srv/iso-drop-old"),
            entry(6, "/mnt/nfs"),
            entry(7, "/mnt/nfs/isos"),
        ];
        let drop = Path::new("/srv/iso-drop");
        let ids = |b: Bearing| b.into_iter().map(|m| m.0).collect::<Vec<_>>();
        // Not a sibling whose name merely starts the same, not the root beside it.
        assert_eq!(ids(bearing_on(&table, &[drop])), [1, 2, 4]);
        // Through a symlink: where it leads counts too.
        let real = Path::new("/mnt/nfs/isos");
        assert_eq!(ids(bearing_on(&table, &[drop, real])), [1, 2, 4, 6, 7]);
        // A mount over the directory itself, and one stacked on it (the same mount point).
        let mut more = table.to_vec();
        more.push(entry(8, "/srv/iso-drop"));
        more.push(entry(9, "/srv/iso-drop"));
        let before = bearing_on(&table, &[drop]);
        let now = bearing_on(&more, &[drop]);
        assert_eq!(ids(now.clone()), [1, 2, 4, 8, 9]);
        let (mounted, unmounted) = difference(&before, &now);
        assert_eq!(
            mounted,
            [PathBuf::from("/srv/iso-drop"), "/srv/iso-drop".into()]
        );
        assert!(unmounted.is_empty());
        // Unmounting the one inside, and the same mount point mounted again (another id).
        let after: Vec<_> = more
            .iter()
            .filter(|m| m.id != 4)
            .cloned()
            .map(|m| {
                if m.id == 9 {
                    entry(10, "/srv/iso-drop")
                } else {
                    m
                }
            })
            .collect();
        let (mounted, unmounted) = difference(&now, &bearing_on(&after, &[drop]));
        assert_eq!(mounted, [PathBuf::from("/srv/iso-drop")]);
        assert_eq!(
            unmounted,
            [PathBuf::from("/srv/iso-drop/usb"), "/srv/iso-drop".into()]
        );
    }

    fn mount(id: u32, parent: u32, at: &str, fstype: &str) -> MountEntry {
        MountEntry {
            parent,
            fstype: fstype.into(),
            ..entry(id, at)
        }
    }

    #[test]
    fn network_and_fuse_mounts_seen_inside_a_directory_are_found() {
        let table = [
            mount(1, 0, "/", "ext4"),
            mount(2, 1, "/srv/iso-drop/nas", "nfs4"),
            mount(3, 1, "/srv/iso-drop/usb", "vfat"),
            mount(4, 3, "/srv/iso-drop/usb/ssh", "fuse.sshfs"),
            mount(5, 1, "/srv/iso-drop-old/smb", "cifs"),
            // Stacked: a tmpfs mounted over a share hides it.
            mount(6, 1, "/srv/iso-drop/hidden", "cifs"),
            mount(7, 6, "/srv/iso-drop/hidden", "tmpfs"),
            // A share below a directory a tmpfs was mounted over later is not seen either.
            mount(8, 1, "/srv/iso-drop/a/nas", "nfs"),
            mount(9, 1, "/srv/iso-drop/a", "tmpfs"),
            // One mounted on the tmpfs is.
            mount(10, 9, "/srv/iso-drop/a/smb", "smb3"),
            // The directory itself: not inside it (its own poll decision covers it).
            mount(11, 1, "/srv/iso-drop", "ext4"),
        ];
        // (Without 11, which would cover everything mounted on 1 below the directory.)
        let drop = Path::new("/srv/iso-drop");
        let found = remote_inside(&table[..10], &[drop]);
        let want: Vec<(PathBuf, String)> = [
            ("/srv/iso-drop/a/smb", "smb3"),
            ("/srv/iso-drop/nas", "nfs4"),
            ("/srv/iso-drop/usb/ssh", "fuse.sshfs"),
        ]
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
        assert_eq!(found, want);
        // Mounted over the directory after them, 11 hides those hanging from 1.
        let found = remote_inside(&table, &[drop]);
        assert!(found.is_empty(), "{found:?}");
        // Reached through a symlink: named by the path as written.
        let link = Path::new("/var/lib/isos");
        let found = remote_inside(&table[..3], &[link, drop]);
        assert_eq!(found, [(PathBuf::from("/var/lib/isos/nas"), "nfs4".into())]);
        // A remote file system mounted on the directory itself is not inside it.
        let on = [
            mount(1, 0, "/", "ext4"),
            mount(2, 1, "/srv/iso-drop", "nfs"),
        ];
        assert!(remote_inside(&on, &[drop]).is_empty());
    }

    #[test]
    fn a_mount_made_and_undone_is_reported() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root: mounting a tmpfs needs it"
            );
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let watch = MountWatch::start(move || {
            let _ = tx.send(());
        })
        .unwrap();
        let at = tmp.path().join("m");
        std::fs::create_dir(&at).unwrap();
        let before = read().unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        let run = |args: &[&std::ffi::OsStr]| {
            let st = std::process::Command::new(args[0])
                .args(&args[1..])
                .status();
            assert!(st.unwrap().success(), "{args:?}");
        };
        run(&[
            "mount".as_ref(),
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "tmpfs".as_ref(),
            at.as_ref(),
        ]);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the mount was reported");
        let now = read().unwrap();
        let (mounted, unmounted) =
            difference(&bearing_on(&before, &[&at]), &bearing_on(&now, &[&at]));
        assert_eq!((mounted, unmounted), (vec![at.clone()], vec![]));
        run(&["umount".as_ref(), at.as_ref()]);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the unmount was reported");
        drop(watch);
    }
}
