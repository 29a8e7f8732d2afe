//! udev's broadcasts, read off the monitor socket directly.
//!
//! libudev's `udev_monitor_receive_device` builds a whole device object per message (a few
//! dozen allocations and string copies, about 0.1 ms here) only for the drives source to copy
//! its properties out again; that was a fifth of the time from udev's event to a readable
//! directory. The socket itself is still made and filtered by libudev (its in-kernel filter
//! passes only `block`/`disk` messages); this module receives from it and parses the message:
//!
//! ```text
//! "libudev\0"  magic (0xfeedcafe, big-endian)  header_size  properties_off  properties_len
//! subsystem hash  devtype hash  tag bloom (2 words)   ...   KEY=VALUE\0KEY=VALUE\0...
//! ```
//!
//! (all header words after the magic in host order). A message is taken only as libudev would
//! take it: from udevd's multicast group, sent by root (the credentials the kernel attaches),
//! not truncated, with the magic and in-bounds offsets.

use std::io;
use std::os::fd::RawFd;

/// The netlink multicast group udevd sends processed events to (the kernel's own is 1).
const UDEV_GROUP: u32 = 2;
/// `UDEV_MONITOR_MAGIC` in systemd's device-monitor.c.
const MAGIC: u32 = 0xfeed_cafe;
/// The header: prefix (8 bytes) and eight 32-bit words.
const HEADER_LEN: usize = 40;
/// libudev's own receive buffer; udevd never sends more.
const MESSAGE_MAX: usize = 8192;

/// One receive from the monitor socket.
#[derive(Debug)]
pub enum Received {
    /// A udev message's `KEY=VALUE` properties.
    Properties(Vec<(String, String)>),
    /// A message that is not one to take (wrong sender, group, format); why, for a debug line.
    Ignored(&'static str),
    /// Nothing more to read now.
    Empty,
    /// The socket's buffer overflowed: messages were lost (ENOBUFS).
    Overflowed,
}

/// Receives one message from the monitor socket `fd` without blocking.
pub fn receive(fd: RawFd) -> io::Result<Received> {
    let mut buf = [0u8; MESSAGE_MAX];
    // SAFETY: zeroed sockaddr_nl and msghdr are valid (all-integer/pointer structs).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    // Room for one SCM_CREDENTIALS message, 8-byte aligned.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points at a live local of the stated size.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Received::Empty),
            Some(libc::ENOBUFS) => Ok(Received::Overflowed),
            _ => Err(e),
        };
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Ok(Received::Ignored("truncated"));
    }
    if addr.nl_groups != UDEV_GROUP {
        return Ok(Received::Ignored("not from udevd's multicast group"));
    }
    // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG_* walk stays in it.
    let uid = unsafe {
        let mut uid = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == libc::SCM_CREDENTIALS
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<libc::ucred>() as u32) as usize
            {
                let cred = libc::CMSG_DATA(c).cast::<libc::ucred>().read_unaligned();
                uid = Some(cred.uid);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        uid
    };
    match uid {
        None => return Ok(Received::Ignored("no sender credentials")),
        Some(0) => {}
        Some(_) => return Ok(Received::Ignored("not sent by root")),
    }
    Ok(match parse(&buf[..n as usize]) {
        Ok(props) => Received::Properties(props),
        Err(why) => Received::Ignored(why),
    })
}

/// The properties of one udev message.
pub fn parse(msg: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    if msg.len() < HEADER_LEN || &msg[..8] != b"libudev\0" {
        return Err("not a udev message");
    }
    let word = |i: usize| {
        [
            msg[8 + 4 * i],
            msg[9 + 4 * i],
            msg[10 + 4 * i],
            msg[11 + 4 * i],
        ]
    };
    if u32::from_be_bytes(word(0)) != MAGIC {
        return Err("wrong udev message magic");
    }
    let off = u32::from_ne_bytes(word(2)) as usize;
    let len = u32::from_ne_bytes(word(3)) as usize;
    let Some(body) = off
        .checked_add(len)
        .filter(|&end| off >= HEADER_LEN && end <= msg.len())
        .map(|end| &msg[off..end])
    else {
        return Err("udev message properties out of bounds");
    };
    let mut props = Vec::with_capacity(32);
    for entry in body.split(|&b| b == 0) {
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (k, v) = (&entry[..eq], &entry[eq + 1..]);
        if k.is_empty() {
            continue;
        }
        props.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message laid out as udevd's `device_monitor_send_device` does.
    fn message(props: &[&str]) -> Vec<u8> {
        let body: Vec<u8> = props.iter().flat_map(|p| p.bytes().chain([0])).collect();
        let mut m = b"libudev\0".to_vec();
        m.extend(MAGIC.to_be_bytes());
        m.extend((HEADER_LEN as u32).to_ne_bytes());
        m.extend((HEADER_LEN as u32).to_ne_bytes());
        m.extend((body.len() as u32).to_ne_bytes());
        m.extend([0u8; 16]);
        m.extend(body);
        m
    }

    #[test]
    fn properties_come_out_in_order() {
        let m = message(&[
            "ACTION=change",
            "DEVPATH=/devices/virtual/block/loop3",
            "DEVNAME=/dev/loop3",
            "ID_FS_LABEL=A=B",
        ]);
        let p = parse(&m).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], ("ACTION".into(), "change".into()));
        assert_eq!(p[3], ("ID_FS_LABEL".into(), "A=B".into()));
    }

    #[test]
    fn kernel_messages_bad_magic_and_bad_offsets_are_refused() {
        assert!(parse(b"change@/devices/virtual/block/loop3\0ACTION=change\0").is_err());
        let mut m = message(&["ACTION=add"]);
        m[8] ^= 1;
        assert!(parse(&m).is_err());
        for (off, len) in [(0u32, 4u32), (40, 4096), (u32::MAX, 2), (40, u32::MAX)] {
            let mut m = message(&["ACTION=add"]);
            m[16..20].copy_from_slice(&off.to_ne_bytes());
            m[20..24].copy_from_slice(&len.to_ne_bytes());
            assert!(parse(&m).is_err(), "off {off} len {len}");
        }
        assert!(parse(&message(&[])[..HEADER_LEN - 1]).is_err());
    }

    #[test]
    fn entries_without_a_key_are_skipped() {
        let p = parse(&message(&["=x", "noequals", "A=", "B=1"])).unwrap();
        assert_eq!(p, vec![("A".into(), "".into()), ("B".into(), "1".into())]);
    }
}
