//! [`Sys`] for Linux: loop devices through raw ioctls on `/dev/loop-control` and
//! `/dev/loopN`, mount(2) and umount2(2) through libc, and the kernel's text views.
//!
//! Raw ioctls rather than `loopdev-3`: its attach is `LOOP_SET_FD` then `LOOP_SET_STATUS64`,
//! two steps, so a crash between them leaves a loop without autoclear, and it needs bindgen
//! (libclang) to build. `LOOP_CONFIGURE` (Linux 5.8) sets the file, read-only and autoclear in
//! one call. Raw mount(2) rather than `sys-mount`: one call each way, and `sys-mount` pulls in
//! the old `loopdev` crate by default.

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{
    filesystems_in_module_list, parse_backing_file, parse_filesystems, parse_mountinfo, FileId,
    LoopDev, LoopEntry, MountEntry, MountFlags, Sys,
};

// include/uapi/linux/loop.h
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// How often an attach asks loop-control for a free device again when another process took
/// the one it was given (`EBUSY`) or the device was mid-teardown (`EAGAIN`).
const ATTACH_TRIES: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

impl LoopInfo64 {
    fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The real thing.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxSys;

impl LinuxSys {
    fn configure(dev: &File, image: &File, path: &Path, read_only: bool) -> io::Result<()> {
        let mut info = LoopInfo64::zeroed();
        info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        let name = path.as_os_str().as_bytes();
        let n = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..n].copy_from_slice(&name[..n]);
        let cfg = LoopConfig {
            fd: u32::try_from(image.as_raw_fd())
                .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        // SAFETY: valid descriptor; `cfg` is a live `struct loop_config` the kernel only reads.
        check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) })
            .map(drop)
    }

    fn status(dev: &File) -> io::Result<LoopInfo64> {
        let mut info = LoopInfo64::zeroed();
        // SAFETY: valid descriptor; `info` is a writable `struct loop_info64`.
        check(unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_GET_STATUS64,
                &mut info as *mut LoopInfo64,
            )
        })?;
        Ok(info)
    }
}

impl Sys for LinuxSys {
    fn attach_loop(&self, image: &File, path: &Path, read_only: bool) -> io::Result<LoopDev> {
        let meta = image.metadata()?;
        let backing = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/loop-control")?;
        let mut last = io::Error::from_raw_os_error(libc::EBUSY);
        for _ in 0..ATTACH_TRIES {
            // SAFETY: valid descriptor; LOOP_CTL_GET_FREE takes no argument. It returns a free
            // device's number, adding a device when every existing one is bound.
            let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })?;
            let number = n as u32;
            let dev_path = PathBuf::from(format!("/dev/loop{number}"));
            let dev = match OpenOptions::new()
                .read(true)
                .write(!read_only)
                .custom_flags(libc::O_CLOEXEC)
                .open(&dev_path)
            {
                Ok(f) => f,
                // The node is not there yet, or was just removed: ask again.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    last = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match Self::configure(&dev, image, path, read_only) {
                Ok(()) => {
                    return Ok(LoopDev::new(
                        dev_path,
                        number,
                        backing,
                        Some(OwnedFd::from(dev)),
                    ))
                }
                // Another process bound it between GET_FREE and CONFIGURE, or it is being
                // torn down: ask for another.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn detach_loop(&self, dev: &LoopDev) -> io::Result<()> {
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&dev.path)
        {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let info = match Self::status(&f) {
            Ok(i) => i,
            // Not bound: autoclear already freed it.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(()),
            Err(e) => return Err(e),
        };
        if info.lo_device != dev.backing.dev || info.lo_inode != dev.backing.ino {
            tracing::debug!(device = %dev.path.display(), "loop now backs another file; left alone");
            return Ok(());
        }
        // SAFETY: valid descriptor; LOOP_CLR_FD takes no argument.
        match check(unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) }) {
            Ok(_) => Ok(()),
            // Freed meanwhile, or still held by a lazily unmounted filesystem: autoclear frees
            // it when that goes.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
    ) -> io::Result<()> {
        let src = cstr(source)?;
        let dst = cstr(target)?;
        let fs = CString::new(fstype)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "fstype contains NUL"))?;
        let mut f: libc::c_ulong = 0;
        for (on, bit) in [
            (flags.read_only, libc::MS_RDONLY),
            (flags.nosuid, libc::MS_NOSUID),
            (flags.nodev, libc::MS_NODEV),
            (flags.noexec, libc::MS_NOEXEC),
        ] {
            if on {
                f |= bit;
            }
        }
        // SAFETY: NUL-terminated strings that outlive the call; no data argument.
        check(unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), f, std::ptr::null()) })
            .map(drop)
    }

    fn unmount(&self, target: &Path, lazy: bool) -> io::Result<()> {
        let dst = cstr(target)?;
        let flags = libc::UMOUNT_NOFOLLOW | if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: NUL-terminated string that outlives the call.
        check(unsafe { libc::umount2(dst.as_ptr(), flags) }).map(drop)
    }

    fn make_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::DirBuilder::new().mode(mode).create(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    fn mounts(&self) -> io::Result<Vec<MountEntry>> {
        Ok(parse_mountinfo(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    fn loops(&self) -> io::Result<Vec<LoopEntry>> {
        let mut out = Vec::new();
        for ent in std::fs::read_dir("/sys/block")? {
            let ent = ent?;
            let name = ent.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_prefix("loop"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Only a bound loop has `loop/backing_file`.
            match std::fs::read(ent.path().join("loop/backing_file")) {
                Ok(content) => out.push(parse_backing_file(number, &content)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|l| l.number);
        Ok(out)
    }

    fn filesystems(&self) -> io::Result<Vec<String>> {
        let mut fs = parse_filesystems(&std::fs::read_to_string("/proc/filesystems")?);
        // SAFETY: `uts` is a writable utsname.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut uts) } == 0 {
            // SAFETY: the kernel NUL-terminates `release`.
            let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
            let dir = Path::new("/lib/modules").join(release.to_string_lossy().as_ref());
            for list in ["modules.builtin", "modules.dep"] {
                if let Ok(text) = std::fs::read_to_string(dir.join(list)) {
                    fs.extend(filesystems_in_module_list(&text));
                }
            }
        }
        fs.sort();
        fs.dedup();
        Ok(fs)
    }

    fn probe_loop(&self) -> io::Result<()> {
        // SAFETY: a NUL-terminated name; the returned descriptor is owned below.
        let fd =
            check(unsafe { libc::memfd_create(c"isomgr-loop-probe".as_ptr(), libc::MFD_CLOEXEC) })?;
        // SAFETY: a descriptor just returned to us and owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(4096)?;
        let mut dev = self.attach_loop(&file, Path::new("isomgr-loop-probe"), true)?;
        let detached = self.detach_loop(&dev);
        dev.release();
        detached
    }
}
