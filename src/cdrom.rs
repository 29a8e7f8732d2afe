//! The few requests isomgr makes of an optical drive (`<linux/cdrom.h>`), on a descriptor
//! opened with O_NONBLOCK (no medium needed, the door not locked by the open).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

const CDROMEJECT: libc::c_ulong = 0x5309;
const CDROM_LOCKDOOR: libc::c_ulong = 0x5329;
const CDROM_DRIVE_STATUS: libc::c_ulong = 0x5326;
/// CDROM_DRIVE_STATUS's slot argument for "the current one".
const CDSL_CURRENT: libc::c_ulong = i32::MAX as libc::c_ulong;
const CDS_NO_DISC: libc::c_int = 1;
const CDS_TRAY_OPEN: libc::c_int = 2;

/// `ioctl(fd, request, arg)`; its non-negative result, or errno.
fn ioctl(drive: &File, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: every request here takes an integer argument; the descriptor is valid.
    let rc = unsafe { libc::ioctl(drive.as_raw_fd(), request, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Whether the drive says its tray is open or holds no disc (CDROM_DRIVE_STATUS: one TEST UNIT
/// READY, answered without spinning a disc up). `Ok(false)` for a disc in or a state the
/// drive does not tell; an error for a device that is no optical drive (ENOTTY, ENOSYS).
pub fn tray_empty(drive: &File) -> io::Result<bool> {
    let status = ioctl(drive, CDROM_DRIVE_STATUS, CDSL_CURRENT)?;
    Ok(status == CDS_NO_DISC || status == CDS_TRAY_OPEN)
}

/// Unlocks the drive's door (CDROM_LOCKDOOR 0), whoever locked it.
pub fn unlock_door(drive: &File) -> io::Result<()> {
    ioctl(drive, CDROM_LOCKDOOR, 0).map(drop)
}

/// Asks the drive to open its tray (CDROMEJECT). A drive whose door is locked refuses while
/// the ioctl still succeeds: [`tray_empty`] says what happened.
pub fn eject(drive: &File) -> io::Result<()> {
    ioctl(drive, CDROMEJECT, 0).map(drop)
}
