//! systemd's service notification protocol (sd_notify(3)), for `Type=notify`: one datagram of
//! `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET` (a path, or an abstract name
//! written with a leading `@`). Also decides when the watcher is ready: once every source it
//! started has finished its first full scan and the media found were published.
//!
//! It never fails the daemon: without `$NOTIFY_SOCKET` (not started by systemd) every call does
//! nothing, and a send that fails is returned for the caller to log.

use std::collections::HashSet;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::event::{Event, SourceKind};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// As given in the environment, for messages.
    name: String,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; `Ok(None)` when it is unset or empty (not run by
    /// systemd, or not as `Type=notify`).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(v) if !v.is_empty() => {
                let name = v.to_string_lossy().into_owned();
                Notifier::new(&name).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// A notifier for the socket `name`: an absolute path, or `@` and an abstract name.
    pub fn new(name: &str) -> io::Result<Notifier> {
        let addr = parse_address(name)?;
        let sock = UnixDatagram::unbound()?;
        Ok(Notifier {
            sock,
            addr,
            name: name.to_owned(),
        })
    }

    /// The socket as named in the environment.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one message: newline-separated `KEY=VALUE` assignments, all in one datagram.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let n = self.sock.send_to_addr(message.as_bytes(), &self.addr)?;
        if n == message.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to {}: {n} of {} bytes",
                    self.name,
                    message.len()
                ),
            ))
        }
    }
}

/// The daemon's side of the protocol. Does nothing when not run by systemd; a send that fails
/// is logged and the watcher goes on (serving matters more than being reported).
#[derive(Debug)]
pub struct ServiceManager {
    notifier: Option<Notifier>,
}

impl ServiceManager {
    /// From `$NOTIFY_SOCKET`; a name that cannot be used is logged and ignored.
    pub fn from_env() -> ServiceManager {
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "not notifying systemd");
            None
        });
        ServiceManager { notifier }
    }

    fn send(&self, message: &str) {
        if let Some(n) = &self.notifier {
            match n.send(message) {
                Ok(()) => tracing::debug!(socket = %n.name(), message, "notified systemd"),
                Err(e) => {
                    tracing::warn!(socket = %n.name(), message, error = %e, "notifying systemd")
                }
            }
        }
    }

    /// Everything present at start is served.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// What is served now (`systemctl status` shows it).
    pub fn status(&self, media: usize) {
        self.send(&format!("STATUS={}", status_line(media)));
    }

    /// SIGTERM or SIGINT was received: the watcher is stopping.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// `serving 1 medium`, `serving 3 media`.
pub fn status_line(media: usize) -> String {
    let noun = if media == 1 { "medium" } else { "media" };
    format!("serving {media} {noun}")
}

/// sd_notify(3): an absolute path, or `@` for the abstract namespace (the `@` stands for the
/// leading NUL byte). Other forms (`vsock:`) are not supported.
fn parse_address(name: &str) -> io::Result<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(abstract_name.as_bytes())
    } else if name.starts_with('/') {
        SocketAddr::from_pathname(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NOTIFY_SOCKET}={name:?}: neither an absolute path nor an abstract name (@...)"
            ),
        ))
    }
}

/// Whether the watcher has finished starting: each source it started ends its first full scan
/// with `ScanDone`, sent after the media it found; once those events were applied, every medium
/// present at start is served. Pure: fed the events the daemon applies.
#[derive(Debug)]
pub struct Readiness {
    waiting: HashSet<SourceKind>,
    announced: bool,
}

impl Readiness {
    /// Waits for the first scan of each of `sources`.
    pub fn new(sources: impl IntoIterator<Item = SourceKind>) -> Readiness {
        Readiness {
            waiting: sources.into_iter().collect(),
            announced: false,
        }
    }

    /// Notes one event the daemon is about to apply.
    pub fn observe(&mut self, ev: &Event) {
        if let Event::ScanDone { source, .. } = ev {
            self.waiting.remove(source);
        }
    }

    /// True exactly once: the first time it is asked after every first scan was observed.
    /// Ask after the observed events were applied.
    pub fn take_ready(&mut self) -> bool {
        if self.announced || !self.waiting.is_empty() {
            return false;
        }
        self.announced = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MediumId;
    use std::time::Duration;

    fn scan_done(source: SourceKind) -> Event {
        Event::ScanDone {
            source,
            present: vec![],
        }
    }

    #[test]
    fn ready_once_after_the_first_scan_of_every_source() {
        let mut r = Readiness::new([SourceKind::Dir, SourceKind::Drive]);
        assert!(!r.take_ready());
        r.observe(&Event::Vanished(MediumId::new("file:1:2")));
        r.observe(&scan_done(SourceKind::Dir));
        assert!(!r.take_ready(), "drives have not finished");
        r.observe(&scan_done(SourceKind::Drive));
        assert!(r.take_ready());
        assert!(!r.take_ready(), "announced once");
        r.observe(&scan_done(SourceKind::Dir));
        assert!(!r.take_ready(), "a rescan does not announce again");
    }

    #[test]
    fn ready_at_once_without_sources() {
        let mut r = Readiness::new([]);
        assert!(r.take_ready());
        assert!(!r.take_ready());
    }

    #[test]
    fn status_line_counts_media() {
        assert_eq!(status_line(0), "serving 0 media");
        assert_eq!(status_line(1), "serving 1 medium");
        assert_eq!(status_line(3), "serving 3 media");
    }

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.send("READY=1\nSTATUS=serving 2 media").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=serving 2 media");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("isomgr-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.send("STATUS=serving 1 medium").unwrap();
        assert_eq!(recv(&server), "STATUS=serving 1 medium");
    }

    #[test]
    fn refuses_a_relative_socket_name() {
        let e = Notifier::new("notify.sock").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("notify.sock"), "{e}");
    }
}
