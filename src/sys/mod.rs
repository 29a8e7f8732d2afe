//! The effects the kernel driver has on the system, behind one trait: loop devices, mounts,
//! directories, and the views it reconciles from (`/proc/self/mountinfo`,
//! `/sys/block/loop*/loop/backing_file`, `/proc/filesystems`).
//!
//! [`Sys`] is implemented for Linux ([`linux::LinuxSys`]) and by a recording fake
//! ([`fake::FakeSys`]) that keeps one ordered list of typed calls and can be told to fail the
//! next call of a kind. The executor takes either through its constructor. This module decides
//! nothing: what to mount where, and how to undo it, is the executor's. The parsers of the
//! kernel's text views are pure and live here.

pub mod fake;
pub mod linux;

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Identity of a file: what `stat` calls `st_dev` and `st_ino`, and what `LOOP_GET_STATUS64`
/// reports as `lo_device` / `lo_inode` for a loop's backing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// A loop device attached to an image.
///
/// While `hold` is set the device stays open: a loop attached with autoclear is released at
/// its last close, so the attaching descriptor must stay open until a mount holds the device.
/// [`LoopDev::release`] lets go once it does (or once the attach is undone).
#[derive(Debug)]
pub struct LoopDev {
    /// `/dev/loopN`.
    pub path: PathBuf,
    pub number: u32,
    /// The backing file, so a detach never clears a loop that someone else attached since.
    pub backing: FileId,
    hold: Option<OwnedFd>,
}

impl LoopDev {
    pub fn new(path: PathBuf, number: u32, backing: FileId, hold: Option<OwnedFd>) -> Self {
        LoopDev {
            path,
            number,
            backing,
            hold,
        }
    }

    /// Closes the attaching descriptor. With autoclear, the kernel frees the loop when its
    /// last user (the mount) goes.
    pub fn release(&mut self) {
        self.hold = None;
    }
}

/// Flags for mount(2). Served media are always `ro,nosuid,nodev,noexec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountFlags {
    pub read_only: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

impl MountFlags {
    /// `ro,nosuid,nodev,noexec`: what every medium is mounted with.
    pub const SERVED: MountFlags = MountFlags {
        read_only: true,
        nosuid: true,
        nodev: true,
        noexec: true,
    };
}

/// One line of `/proc/self/mountinfo` (proc(5)), the fields reconciliation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    /// The device its files have (`st_dev`), from the MAJ:MIN field.
    pub dev: u64,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// The mount source: a device node for block filesystems.
    pub source: String,
}

/// A bound loop device, from `/sys/block/loopN/loop/backing_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopEntry {
    pub path: PathBuf,
    pub number: u32,
    pub backing_file: PathBuf,
    /// The backing file was deleted since (sysfs appends ` (deleted)`).
    pub deleted: bool,
}

/// Which kind of call a [`fake::FakeSys`] is told to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    AttachLoop,
    DetachLoop,
    Mount,
    Unmount,
    MakeDir,
    RemoveDir,
    ListDir,
    Mounts,
    Loops,
    Filesystems,
    ProbeLoop,
}

/// Every effect of the kernel driver. Methods take `&self`: the Linux implementation holds no
/// state and the fake records through shared interior state.
/// Send and Sync: the kernel driver runs mount(2) off the daemon thread (see
/// [`crate::offload`]).
pub trait Sys: Send + Sync + 'static {
    /// Attaches `image` (already open; `path` names it for errors and `lo_file_name`) to a free
    /// loop device with autoclear set atomically (`LOOP_CONFIGURE`).
    fn attach_loop(&self, image: &File, path: &Path, read_only: bool) -> io::Result<LoopDev>;
    /// Detaches the loop if it is still backed by the file it was attached to; a loop that is
    /// already free (autoclear) or now backs another file is left alone and is `Ok`.
    fn detach_loop(&self, dev: &LoopDev) -> io::Result<()>;
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
    ) -> io::Result<()>;
    /// umount2(2); `lazy` is `MNT_DETACH`: the mount leaves the tree now and goes away when
    /// its last open file closes.
    fn unmount(&self, target: &Path, lazy: bool) -> io::Result<()>;
    /// mkdir(2) with exactly `mode` (no umask applies to 0).
    fn make_dir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// rmdir(2): only an empty directory goes.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Names in a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// `/proc/self/mountinfo`, in mount order.
    fn mounts(&self) -> io::Result<Vec<MountEntry>>;
    /// Every bound loop device.
    fn loops(&self) -> io::Result<Vec<LoopEntry>>;
    /// Filesystems mount(2) can use: `/proc/filesystems`, plus what the kernel would load as a
    /// module on demand.
    fn filesystems(&self) -> io::Result<Vec<String>>;
    /// Attaches and detaches a loop device on a scratch file: proves loop devices work here.
    fn probe_loop(&self) -> io::Result<()>;
}

/// Parses `/proc/self/mountinfo` (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTS
/// [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS`. Lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split(' ');
            let id = it.next()?.parse().ok()?;
            let parent = it.next()?.parse().ok()?;
            let (major, minor) = it.next()?.split_once(':')?;
            let dev = libc::makedev(major.parse().ok()?, minor.parse().ok()?);
            let _root = it.next()?;
            let mount_point = unescape_octal(it.next()?);
            it.find(|f| *f == "-")?;
            let fstype = it.next()?.to_owned();
            let source =
                String::from_utf8_lossy(unescape_octal(it.next()?).as_os_str().as_encoded_bytes())
                    .into_owned();
            Some(MountEntry {
                id,
                parent,
                dev,
                mount_point,
                fstype,
                source,
            })
        })
        .collect()
}

/// The kernel writes space, tab, newline and backslash in mountinfo as `\ooo`.
fn unescape_octal(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Parses the content of `/sys/block/loopN/loop/backing_file` for loop `number`.
pub fn parse_backing_file(number: u32, content: &[u8]) -> LoopEntry {
    use std::os::unix::ffi::OsStrExt;
    let content = content.strip_suffix(b"\n").unwrap_or(content);
    let (path, deleted) = match content.strip_suffix(b" (deleted)") {
        Some(p) => (p, true),
        None => (content, false),
    };
    LoopEntry {
        path: PathBuf::from(format!("/dev/loop{number}")),
        number,
        backing_file: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        deleted,
    }
}

/// Filesystem names in `/proc/filesystems` (`nodev\tsysfs`, `\text4`).
pub fn parse_filesystems(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split('\t').nth(1))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Filesystems a kernel module list names (`modules.dep`, `modules.builtin`): mount(2) loads
/// `fs-iso9660` / `fs-udf` on demand even when `/proc/filesystems` does not list them yet.
pub fn filesystems_in_module_list(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (module, fs) in [("isofs", "iso9660"), ("udf", "udf")] {
        let listed = text.lines().any(|l| {
            let path = l.split(':').next().unwrap_or("");
            let file = path.rsplit('/').next().unwrap_or("");
            file.split('.').next() == Some(module)
        });
        if listed {
            out.push(fs.to_owned());
        }
    }
    out
}

/// EMFILE or ENFILE: no descriptor to be had now (worth trying again later).
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// How many descriptors one operation may have closed elsewhere in the process (see
/// [`relieve_descriptors`]) before it gives up.
pub const RELIEF_TRIES: usize = 4;

/// Runs `op`; while it fails for lack of descriptors, has one closed elsewhere in the process
/// ([`relieve_descriptors`]) and runs it again, [`RELIEF_TRIES`] times at most.
pub fn relieved<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    for _ in 0..RELIEF_TRIES {
        match op() {
            Err(e) if out_of_descriptors(&e) && relieve_descriptors() => continue,
            other => return other,
        }
    }
    op()
}

/// Something that can close one descriptor it can reopen later; true when it closed one.
type Reliever = Box<dyn Fn() -> bool + Send + Sync>;

static RELIEVERS: std::sync::Mutex<Vec<Reliever>> = std::sync::Mutex::new(Vec::new());

/// Registers a way to close a descriptor on demand (the FUSE driver's shared image
/// descriptors, reopened by path on their next read), for [`relieve_descriptors`].
pub fn add_reliever(f: impl Fn() -> bool + Send + Sync + 'static) {
    RELIEVERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Box::new(f));
}

/// Closes one descriptor that can be reopened later, for code that met EMFILE or ENFILE
/// (a source opening an image to identify it while the served images hold the rest); false
/// when none could be closed.
pub fn relieve_descriptors() -> bool {
    RELIEVERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|f| f())
}

/// The soft RLIMIT_NOFILE now (1024 when it cannot be read): what the descriptor budgets are
/// sized from.
pub fn open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct given, which is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// An eventfd that stops a thread blocked in `poll(2)` on some other descriptor.
pub struct StopFd(OwnedFd);

impl StopFd {
    pub fn new() -> io::Result<StopFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd has no pointer arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(StopFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wakes [`StopFd::wait`], now and every time after.
    pub fn stop(&self) {
        use std::os::fd::AsRawFd;
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to the eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Blocks until `fd` reports one of `events` (its `revents`, which may add POLLERR or
    /// POLLHUP), or until [`StopFd::stop`] (None). Interrupted calls are retried.
    pub fn wait(&self, fd: std::os::fd::RawFd, events: i16) -> io::Result<Option<i16>> {
        use std::os::fd::AsRawFd;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.0.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd structures.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[1].revents != 0 {
                return Ok(None);
            }
            if fds[0].revents != 0 {
                return Ok(Some(fds[0].revents));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_gives_mount_points_types_and_sources() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 7:3 / /srv/isos/My\\040Disc ro,nosuid,nodev,noexec shared:50 master:2 - squashfs /dev/loop3 ro\n\
                    91 22 0:40 / /tmp rw - tmpfs none rw\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].id, 90);
        assert_eq!(m[1].parent, 22);
        assert_eq!(m[1].mount_point, Path::new("/srv/isos/My Disc"));
        assert_eq!(m[1].fstype, "squashfs");
        assert_eq!(m[1].source, "/dev/loop3");
        assert_eq!(m[2].source, "none");
        assert_eq!(m[1].dev, libc::makedev(7, 3));
        assert_eq!(m[2].dev, libc::makedev(0, 40));
    }

    #[test]
    fn unescape_keeps_a_backslash_that_is_not_an_escape() {
        assert_eq!(unescape_octal("a\\b\\134c\\011"), Path::new("a\\b\\c\t"));
        assert_eq!(unescape_octal("end\\07"), Path::new("end\\07"));
    }

    #[test]
    fn backing_file_notes_a_deleted_image() {
        let e = parse_backing_file(7, b"/srv/iso-drop/a.iso (deleted)\n");
        assert_eq!(e.path, Path::new("/dev/loop7"));
        assert_eq!(e.backing_file, Path::new("/srv/iso-drop/a.iso"));
        assert!(e.deleted);
        assert!(!parse_backing_file(0, b"/x.iso\n").deleted);
    }

    #[test]
    fn filesystems_lists_names_with_and_without_nodev() {
        let fs = parse_filesystems("nodev\tsysfs\n\text4\n\tiso9660\n");
        assert_eq!(fs, ["sysfs", "ext4", "iso9660"]);
    }

    #[test]
    fn module_lists_name_isofs_and_udf() {
        let dep =
            "kernel/fs/isofs/isofs.ko.xz:\nkernel/fs/udf/udf.ko.xz: kernel/lib/crc-itu-t.ko.xz\n";
        assert_eq!(filesystems_in_module_list(dep), ["iso9660", "udf"]);
        assert!(filesystems_in_module_list("kernel/fs/ext4/ext4.ko\n").is_empty());
    }
}
