//! The drives source: discs in optical drives (and, with `any_block`, any whole block device
//! holding an ISO9660 or UDF filesystem), through the udev monitor socket.
//!
//! Two halves. [`classify`] is pure: udev properties in, a [`DriveChange`] out; no udev type
//! crosses it, and it is tested with recorded property sets (`fixtures/udev/`). The shell is
//! one thread blocked in `poll(2)` on the monitor socket and a wake-up eventfd: it enumerates
//! the devices present at start, turns each udev event into properties, keeps which medium
//! each device node holds, opens and identifies a new medium, and emits [`Event`]s. It never
//! mounts, ejects or writes anything: the manager and the executor do.
//!
//! A thread rather than a task on the daemon's runtime: identifying a disc reads from the
//! drive, which can block for seconds while it spins up, and must not stall other sources.
//! That read itself runs on a helper thread ([`crate::offload`]) and is waited for at most
//! half a second, so a disc whose reads hang holds up no other drive either.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::event::{Event, Handle, Medium, MediumId, SourceKind};
use crate::iso9660::{probe, VolumeInfo};
use crate::offload::{self, Helper, Late, Ran};

use super::uevent::{self, Received};

/// Backing files of the loop devices isomgr attached itself. A loop device backed by one of
/// these is never taken as a medium (it would be served twice). Whoever attaches a loop device
/// inserts the backing file here before attaching, and removes it after detaching.
pub type OwnLoops = Arc<Mutex<HashSet<PathBuf>>>;

/// What the drives source takes.
#[derive(Clone, Debug, Default)]
pub struct DrivesConfig {
    /// Also take non-optical block devices whose filesystem is iso9660 or udf.
    pub any_block: bool,
    pub own_loops: OwnLoops,
}

/// Filesystems the reader serves.
const SERVABLE_FS: [&str; 2] = ["iso9660", "udf"];

/// One udev device as plain data: its properties (as `udevadm info --query=property` prints
/// them) and the few sysfs values the decision needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Props {
    /// `add`, `change`, `remove`...; empty for a device enumerated at start.
    pub action: String,
    pub devnode: Option<PathBuf>,
    /// The kernel name (`sr0`, `loop3`).
    pub sysname: String,
    pub props: BTreeMap<String, String>,
    /// sysfs `size` in 512-byte sectors, where it could be read (0: no medium).
    pub size: Option<u64>,
    /// sysfs `loop/backing_file` of a loop device.
    pub backing_file: Option<PathBuf>,
}

impl Props {
    /// Parses `KEY=VALUE` lines (`udevadm info --query=property`, `udevadm monitor
    /// --property`); `ACTION`, `DEVNAME` and `DEVPATH` fill the fields. Other lines are ignored.
    pub fn parse(text: &str) -> Props {
        Props::from_pairs(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
    }

    /// Properties as udev holds them; `ACTION`, `DEVNAME` (the node's path in udev's
    /// properties) and `DEVPATH` fill the fields. Keys that are not udev keys are dropped.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Props {
        let mut p = Props::default();
        for (k, v) in pairs {
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                p.props.insert(k, v);
            }
        }
        p.action = p.get("ACTION").unwrap_or_default().to_owned();
        p.devnode = p.get("DEVNAME").map(PathBuf::from);
        p.sysname = p
            .get("DEVPATH")
            .and_then(|d| d.rsplit('/').next())
            .unwrap_or_default()
            .to_owned();
        p
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    fn is(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }
}

/// What a udev report means for the medium in one device node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriveChange {
    /// A servable medium is in the device (inserted, already there, or re-reported).
    Medium(MediumProps),
    /// No servable medium: tray empty, blank or audio disc, capacity 0, another filesystem.
    NoMedium { devnode: PathBuf },
    /// The drive's eject button was pressed.
    EjectRequest { devnode: PathBuf },
    /// The device itself went away (drive unplugged, loop device removed).
    Removed { devnode: PathBuf },
}

/// What udev says about a medium. Two reports of the same device describe the same medium
/// when every field is equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediumProps {
    pub devnode: PathBuf,
    pub sysname: String,
    /// `ID_FS_LABEL_ENC` decoded (what blkid reports), else `ID_FS_LABEL`.
    pub label: Option<String>,
    /// `ID_FS_TYPE`; empty for a disk udev saw only a partition table on (see
    /// [`maybe_hybrid`]), which the device itself then says.
    pub fs: String,
    /// `ID_FS_UUID`: for ISO9660 the volume creation time.
    pub uuid: Option<String>,
    /// `DISKSEQ`: the kernel's per-medium sequence number (Linux 5.15+), new on every insert.
    pub diskseq: Option<u64>,
    pub size: Option<u64>,
    pub optical: bool,
}

/// Turns one udev report into what it means for the device's medium; `None` when the device
/// is none of this source's business (a partition, a disk that is not optical without
/// `any_block`, a loop device isomgr attached itself).
pub fn classify(p: &Props, any_block: bool, own_loops: &HashSet<PathBuf>) -> Option<DriveChange> {
    if p.get("SUBSYSTEM").is_some_and(|s| s != "block") || !p.is("DEVTYPE", "disk") {
        return None;
    }
    let devnode = p
        .devnode
        .clone()
        .or_else(|| p.get("DEVNAME").map(PathBuf::from))?;
    let optical = p.is("ID_CDROM", "1");
    if !optical && !any_block {
        return None;
    }
    if p.backing_file
        .as_ref()
        .is_some_and(|b| own_loops.contains(b))
    {
        return None;
    }
    if p.action == "remove" {
        return Some(DriveChange::Removed { devnode });
    }
    if optical && p.is("DISK_EJECT_REQUEST", "1") {
        return Some(DriveChange::EjectRequest { devnode });
    }
    let no_medium = Some(DriveChange::NoMedium {
        devnode: devnode.clone(),
    });
    if p.size == Some(0) || (optical && !p.is("ID_CDROM_MEDIA", "1")) {
        return no_medium;
    }
    let fs = p.get("ID_FS_TYPE").unwrap_or_default();
    if !(SERVABLE_FS.contains(&fs) || any_block && maybe_hybrid(p)) {
        return no_medium;
    }
    let label = p
        .get("ID_FS_LABEL_ENC")
        .map(decode_udev_string)
        .or_else(|| p.get("ID_FS_LABEL").map(str::to_owned))
        .filter(|l| !l.is_empty());
    Some(DriveChange::Medium(MediumProps {
        devnode,
        sysname: p.sysname.clone(),
        label,
        fs: fs.to_owned(),
        uuid: p.get("ID_FS_UUID").map(str::to_owned),
        diskseq: p.get("DISKSEQ").and_then(|s| s.parse().ok()),
        size: p.size,
        optical,
    }))
}

/// A whole disk for which udev reports a partition table and no filesystem. udev's blkid stops
/// at the table when a partition starts past the volume descriptors (an image made with
/// xorriso's `-partition_offset 16`, written to a stick; seen with systemd 252), although the
/// disk holds the volume from sector 0: such a disk is probed by isomgr itself
/// ([`MediumProps::fs`] empty until then).
fn maybe_hybrid(p: &Props) -> bool {
    p.get("ID_FS_TYPE").is_none_or(str::is_empty) && p.get("ID_PART_TABLE_TYPE").is_some()
}

/// Undoes udev's `\xNN` escaping (`ID_FS_LABEL_ENC`); invalid UTF-8 is replaced.
pub fn decode_udev_string(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let Some(v) = b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Requests to the source thread.
enum Input {
    Rescan,
    Stop,
    /// A medium's identification, or a drive's tray check, that had not answered within
    /// [`offload::WAIT`] has.
    Answered,
}

/// A running drives source.
pub struct DrivesSource {
    input: std_mpsc::Sender<Input>,
    wake: Arc<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why the drives source cannot run (udev is not there).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("systemd-udevd is not running ({control} is missing)")]
    NoUdevd { control: PathBuf },
    #[error("listening on the udev monitor socket")]
    Monitor(#[source] std::io::Error),
    #[error("creating the drives source's wake-up eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("starting the drives source thread")]
    Thread(#[source] std::io::Error),
}

/// udevd's control socket: present exactly while udevd runs (libudev's own test).
const UDEV_CONTROL: &str = "/run/udev/control";

impl DrivesSource {
    /// Starts listening: the monitor first, then the devices present are enumerated (a disc
    /// already in a drive is served at once, then `ScanDone`), then events as they come.
    pub fn spawn(cfg: DrivesConfig, out: mpsc::Sender<Event>) -> Result<DrivesSource, Error> {
        if !Path::new(UDEV_CONTROL).exists() {
            return Err(Error::NoUdevd {
                control: UDEV_CONTROL.into(),
            });
        }
        // SAFETY: eventfd has no pointer arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::EventFd(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, rx) = std_mpsc::channel();
        let helper = Helper::calling({
            let (tx, wake) = (tx.clone(), wake.clone());
            move || {
                let _ = tx.send(Input::Answered);
                poke(&wake);
            }
        });
        let mut state = State {
            cfg,
            out,
            tracked: HashMap::new(),
            generations: HashMap::new(),
            helper,
            identifying: HashMap::new(),
            tray_checks: HashMap::new(),
        };
        let thread_wake = wake.clone();
        // The monitor cannot move between threads: the thread makes it and says how it went.
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("isomgr-drives".into())
            .spawn(move || {
                let monitor = udev::MonitorBuilder::new()
                    .and_then(|b| b.match_subsystem_devtype("block", "disk"))
                    .and_then(|b| b.listen());
                match monitor {
                    Ok(monitor) => {
                        let _ = ready_tx.send(Ok(()));
                        state.run(&monitor, &thread_wake, &rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(Error::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Monitor(e)),
            Err(_) => {
                return Err(Error::Monitor(std::io::Error::other(
                    "the drives source thread ended while starting",
                )))
            }
        }
        Ok(DrivesSource {
            input: tx,
            wake,
            thread: Some(thread),
        })
    }

    fn send(&self, input: Input) {
        if self.input.send(input).is_ok() {
            poke(&self.wake);
        }
    }
}

impl super::Source for DrivesSource {
    fn rescan(&self) {
        self.send(Input::Rescan);
    }

    fn stop(mut self: Box<Self>) {
        self.send(Input::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The medium a device node holds, as emitted.
#[derive(Debug)]
struct Tracked {
    id: MediumId,
    diskseq: Option<u64>,
    /// Hash of the primary volume descriptor sector as read from the device.
    fingerprint: u64,
    /// An optical drive's node, opened without waiting for a medium (no door lock), to ask
    /// the drive whether the disc is still in (see [`TRAY_CHECK`]).
    drive: Option<Arc<File>>,
    /// A loop device's `loop/autoclear` attribute (off when taken), looked at with the tray
    /// checks. `losetup -d` of a device isomgr holds open turns it on and does nothing else:
    /// the kernel defers the detach to the last close and sends no event.
    autoclear: Option<PathBuf>,
}

/// How often a drive serving a disc is asked whether the disc is still in
/// ([`crate::cdrom::tray_empty`]). While the disc is mounted or held open, the kernel reports
/// a new disc but not a removal (Linux 6.1, sr, QEMU's SCSI CD-ROM): a disc taken out by
/// force, as a hypervisor detaching the image does, would stay served, every read failing,
/// until it is unmounted.
const TRAY_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

struct State {
    cfg: DrivesConfig,
    out: mpsc::Sender<Event>,
    tracked: HashMap<PathBuf, Tracked>,
    /// Per device node: the last disk sequence seen and how many media it has held under it
    /// (a loop device given new contents by `losetup -c` keeps its sequence number).
    generations: HashMap<PathBuf, (Option<u64>, u32)>,
    /// Reads each new medium off this thread, so that a disc whose reads hang (scratched, the
    /// drive retrying for minutes) holds up no other drive.
    helper: Helper,
    /// Media whose identification has not answered yet, by device node.
    identifying: HashMap<PathBuf, Identifying>,
    /// Drives that have not answered yet whether their tray is empty.
    tray_checks: HashMap<PathBuf, Late<std::io::Result<bool>>>,
}

/// What identifying a medium finds, or why it could not.
type Identity = Result<Seen, Unread>;

/// What a device holds, as read from it.
enum Seen {
    /// The medium it is already serving (udev reported a change, nothing changed).
    Same,
    /// A medium.
    New(Found),
}

/// A medium read from its device.
struct Found {
    /// The descriptor it was read through: the one that is served.
    file: Arc<File>,
    /// An optical drive's node opened again, for the tray checks ([`Tracked::drive`]).
    drive: Option<Arc<File>>,
    fingerprint: u64,
    info: VolumeInfo,
}

/// Why a device could not be identified.
enum Unread {
    /// open(2) of the node failed (ENOMEDIUM: there is no medium after all).
    Open(std::io::Error),
    /// Reading the medium failed.
    Read(std::io::Error),
}

/// A medium whose identification had not answered within [`offload::WAIT`].
struct Identifying {
    props: MediumProps,
    answer: Late<Identity>,
}

impl State {
    fn run(
        &mut self,
        monitor: &udev::MonitorSocket,
        wake: &OwnedFd,
        rx: &std_mpsc::Receiver<Input>,
    ) {
        self.enumerate();
        let mut next_check = std::time::Instant::now() + TRAY_CHECK;
        loop {
            // Tray checks for optical drives, autoclear checks for loop devices.
            let checking = self
                .tracked
                .values()
                .any(|t| t.drive.is_some() || t.autoclear.is_some());
            let timeout = if checking {
                let left = next_check.saturating_duration_since(std::time::Instant::now());
                libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX)
            } else {
                -1
            };
            let mut fds = [
                libc::pollfd {
                    fd: monitor.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "polling the udev monitor; drives are no longer watched");
                return;
            }
            if std::time::Instant::now() >= next_check {
                self.check_trays();
                self.check_detached();
                next_check = std::time::Instant::now() + TRAY_CHECK;
            }
            if fds[1].revents != 0 {
                let mut buf = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a valid buffer from our eventfd.
                unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                while let Ok(input) = rx.try_recv() {
                    match input {
                        Input::Stop => return,
                        Input::Rescan => self.enumerate(),
                        Input::Answered => self.late_answers(),
                    }
                }
            }
            if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                tracing::error!("the udev monitor socket failed; drives are no longer watched");
                return;
            }
            if fds[0].revents != 0 {
                self.drain(monitor.as_raw_fd());
            }
        }
    }

    /// Acts on every message waiting on the monitor socket.
    fn drain(&mut self, fd: std::os::fd::RawFd) {
        loop {
            match uevent::receive(fd) {
                Ok(Received::Properties(pairs)) => {
                    let props = with_sysfs(Props::from_pairs(pairs), self.own_loops_empty());
                    tracing::trace!(?props, "udev event");
                    self.on_report(&props);
                }
                Ok(Received::Ignored(why)) => tracing::debug!(why, "udev monitor message ignored"),
                Ok(Received::Empty) => return,
                Ok(Received::Overflowed) => {
                    // Events were dropped by the kernel: what they said is asked again.
                    tracing::warn!("udev events were lost (the monitor socket overflowed); looking at every drive again");
                    self.enumerate();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "receiving from the udev monitor socket");
                    return;
                }
            }
        }
    }

    /// Looks at every block device present; what is tracked but no longer holds a medium is
    /// gone. Ends with `ScanDone`.
    fn enumerate(&mut self) {
        let devices = udev::Enumerator::new().and_then(|mut e| {
            e.match_subsystem("block")?;
            e.match_property("DEVTYPE", "disk")?;
            e.match_is_initialized()?;
            Ok(e.scan_devices()?.collect::<Vec<udev::Device>>())
        });
        let devices = match devices {
            Ok(d) => d,
            Err(e) => {
                // The monitor still reports what changes from now on. The scan counts as done
                // with what is known (nothing is taken for gone), or readiness would wait for
                // it forever.
                tracing::error!(error = %e, "enumerating block devices through udev; drives present now are served when udev next reports them");
                self.scan_done();
                return;
            }
        };
        let mut seen = HashSet::new();
        for dev in devices {
            let props = props_of(&dev, self.own_loops_empty());
            if let Some(DriveChange::Medium(m)) = self.on_report(&props) {
                seen.insert(m.devnode);
            }
        }
        let lost: Vec<PathBuf> = self
            .tracked
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for node in lost {
            self.gone(&node, "no medium any more");
        }
        self.scan_done();
    }

    /// Ends a scan: what is tracked now is what is present.
    fn scan_done(&self) {
        let present = self.tracked.values().map(|t| t.id.clone()).collect();
        self.emit(Event::ScanDone {
            source: SourceKind::Drive,
            present,
        });
    }

    /// Acts on one report; returns what it meant.
    fn on_report(&mut self, props: &Props) -> Option<DriveChange> {
        let change = {
            let own = self
                .cfg
                .own_loops
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            classify(props, self.cfg.any_block, &own)?
        };
        tracing::debug!(?change, action = %props.action, "udev");
        match &change {
            DriveChange::Medium(m) => {
                // Its detach asked (`losetup -d`: the kernel detaches it at the last close), or
                // set up to go with its user (`mount -o loop`): holding it open would keep it.
                if loop_autoclear(&m.sysname).is_some_and(|(_, on)| on) {
                    if self.tracked.contains_key(&m.devnode) {
                        self.let_go(&m.devnode);
                    } else {
                        tracing::info!(device = %m.devnode.display(), "a loop device with autoclear on (being detached, or set up by mount -o loop): not taken");
                    }
                    return Some(change);
                }
                if self
                    .tracked
                    .get(&m.devnode)
                    .is_some_and(|t| t.diskseq != m.diskseq)
                {
                    self.gone(&m.devnode.clone(), "another medium is in the device");
                }
                self.identify(m);
            }
            DriveChange::NoMedium { devnode } => self.gone(devnode, "medium removed"),
            DriveChange::Removed { devnode } => {
                self.gone(devnode, "device removed");
                self.generations.remove(devnode);
            }
            DriveChange::EjectRequest { devnode } => match self.tracked.remove(devnode) {
                Some(t) => {
                    tracing::info!(device = %devnode.display(), medium = %t.id, "eject button");
                    self.emit(Event::EjectRequested {
                        id: t.id,
                        device: devnode.clone(),
                    });
                }
                None => {
                    tracing::debug!(device = %devnode.display(), "eject button on a drive isomgr does not serve")
                }
            },
        }
        Some(change)
    }

    /// Asks each drive serving a disc whether its tray is empty (off this thread, waiting at
    /// most [`offload::WAIT`]: a drive that stops answering holds up no other); a disc whose
    /// tray is empty is gone.
    fn check_trays(&mut self) {
        let drives: Vec<(PathBuf, Arc<File>)> = self
            .tracked
            .iter()
            .filter(|(node, _)| !self.tray_checks.contains_key(*node))
            .filter_map(|(node, t)| Some((node.clone(), t.drive.clone()?)))
            .collect();
        for (node, drive) in drives {
            match self.helper.run(move || crate::cdrom::tray_empty(&drive)) {
                Ok(Ran::Done(empty)) => self.tray_answered(&node, empty),
                Ok(Ran::Late(answer)) => {
                    tracing::info!(device = %node.display(), waited_ms = offload::WAIT.as_millis() as u64, "the drive has not said yet whether its tray is empty; the other drives meanwhile");
                    self.tray_checks.insert(node, answer);
                }
                Err(e) => tracing::debug!(device = %node.display(), error = %e, "tray check"),
            }
        }
    }

    /// Lets go of each loop device served whose detach was asked (`losetup -d`): the kernel
    /// detaches it once the last reader closes.
    fn check_detached(&mut self) {
        let asked: Vec<PathBuf> = self
            .tracked
            .iter()
            .filter(|(_, t)| {
                let on = t.autoclear.as_deref().and_then(read_sysfs);
                on.is_some_and(|v| v == "1")
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in asked {
            self.let_go(&node);
        }
    }

    /// Lets go of a loop device served whose detach was asked.
    fn let_go(&mut self, node: &Path) {
        tracing::info!(device = %node.display(), "losetup -d: letting go of the loop device (the kernel detaches it once the last reader closes)");
        self.gone(node, "detach asked");
    }

    fn tray_answered(&mut self, node: &Path, empty: std::io::Result<bool>) {
        if empty.unwrap_or(false) && self.tracked.contains_key(node) {
            tracing::info!(device = %node.display(), "the drive says its tray is empty (the kernel reported no change); the disc is gone");
            self.gone(node, "tray empty");
        }
    }

    fn gone(&mut self, devnode: &Path, why: &str) {
        if self.identifying.remove(devnode).is_some() {
            tracing::debug!(device = %devnode.display(), "{why} before it was identified");
        }
        if let Some(t) = self.tracked.remove(devnode) {
            tracing::debug!(device = %devnode.display(), medium = %t.id, "{why}");
            self.emit(Event::Vanished(t.id));
        }
    }

    /// Opens and identifies a medium udev reported, and emits it. Both are done off this
    /// thread, waiting for them at most [`offload::WAIT`]: opening a drive's node asks the
    /// drive whether a disc is in, and reading a disc can take minutes. For a device already
    /// serving a medium, it first asks the device whether that medium is still the one in it.
    fn identify(&mut self, m: &MediumProps) {
        let node = &m.devnode;
        match self.identifying.get(node) {
            // Reported again while its reads hang: still the same medium.
            Some(i) if i.props == *m => return,
            Some(_) => {
                self.identifying.remove(node);
            }
            None => {}
        }
        let (at, prefetching, optical) = (node.clone(), !m.fs.is_empty(), m.optical);
        let serving = self.tracked.get(node).map(|t| t.fingerprint);
        let ran = self.helper.run(move || -> Identity {
            let file = open_device(&at).map_err(Unread::Open)?;
            if let Some(served) = serving {
                // udev's properties can be stale (blkid read the old medium's cached
                // sectors): the device itself says whether the medium changed.
                drop_page_cache(&file);
                if fingerprint(&file).map_err(Unread::Read)? == served {
                    return Ok(Seen::Same);
                }
            } else if prefetching {
                prefetch(&file);
            }
            let info =
                probe(&file).map_err(|e| Unread::Read(std::io::Error::other(e.to_string())))?;
            Ok(Seen::New(Found {
                fingerprint: fingerprint(&file).map_err(Unread::Read)?,
                info,
                file: Arc::new(file),
                drive: optical
                    .then(|| open_device(&at).ok().map(Arc::new))
                    .flatten(),
            }))
        });
        match ran {
            Ok(Ran::Done(identity)) => self.identified(m, identity),
            Ok(Ran::Late(answer)) => {
                tracing::info!(device = %node.display(), waited_ms = offload::WAIT.as_millis() as u64, "the medium has not answered yet; identified once it does, the other drives meanwhile");
                self.identifying.insert(
                    node.clone(),
                    Identifying {
                        props: m.clone(),
                        answer,
                    },
                );
            }
            Err(e) => {
                tracing::error!(device = %node.display(), error = %e, "cannot identify the medium; not served")
            }
        }
    }

    /// Goes on with each medium whose late identification, and each drive whose late tray
    /// check, has answered.
    fn late_answers(&mut self) {
        for (node, _, answer) in offload::take_answered(&mut self.tray_checks, |late| late) {
            let empty = answer.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            self.tray_answered(&node, empty);
        }
        for (node, i, answer) in offload::take_answered(&mut self.identifying, |i| &i.answer) {
            let identity = answer.unwrap_or_else(|e| Err(Unread::Read(std::io::Error::other(e))));
            if let Ok(Seen::Same) = identity {
                tracing::info!(device = %node.display(), "the device has answered: still the medium it serves");
            }
            self.identified(&i.props, identity);
        }
    }

    /// Emits a medium identified as `identity`, or says why it is not served.
    fn identified(&mut self, m: &MediumProps, identity: Identity) {
        let node = &m.devnode;
        let found = match identity {
            Ok(Seen::Same) => {
                tracing::debug!(device = %node.display(), "reported again, the same medium");
                return;
            }
            Ok(Seen::New(found)) => Ok(found),
            Err(e) => Err(e),
        };
        // Same node, another medium (swapped fast, or new contents), or none that can be read
        // any more.
        self.gone(node, "the medium changed or cannot be read any more");
        let Found {
            file,
            drive,
            fingerprint,
            info,
        } = match found {
            Ok(found) => found,
            Err(Unread::Open(e)) if e.raw_os_error() == Some(libc::ENOMEDIUM) => {
                tracing::debug!(device = %node.display(), "no medium after all");
                return;
            }
            Err(Unread::Open(e)) => {
                tracing::error!(device = %node.display(), error = %e, "cannot open the device; not served");
                return;
            }
            // A disk udev saw only a partition table on: most are just that.
            Err(Unread::Read(e)) if m.fs.is_empty() => {
                tracing::debug!(device = %node.display(), error = %e, "a partitioned disk without iso9660 or udf from sector 0");
                return;
            }
            Err(Unread::Read(e)) => {
                tracing::error!(device = %node.display(), fs = %m.fs, error = %e, "cannot identify the medium; not served");
                return;
            }
        };
        if !info.complete() {
            tracing::warn!(device = %node.display(), volume_size = info.volume_size, device_size = info.image_size, "the device holds less than the volume declares; not served");
            return;
        }
        if info.label != m.label && !m.fs.is_empty() {
            tracing::warn!(device = %node.display(), udev = ?m.label, device_label = ?info.label, "udev's label differs from the device's; using the device's");
        }
        let id = self.next_id(m);
        tracing::debug!(device = %node.display(), medium = %id, label = ?info.label, "medium identified");
        self.tracked.insert(
            node.clone(),
            Tracked {
                id: id.clone(),
                diskseq: m.diskseq,
                fingerprint,
                drive,
                autoclear: loop_autoclear(&m.sysname).map(|(path, _)| path),
            },
        );
        self.emit(Event::Appeared(Medium {
            id,
            source: SourceKind::Drive,
            origin: node.clone(),
            fs: Some(info.fs.as_str().to_owned()),
            label: info.label,
            fallback: m.sysname.clone(),
            handle: Some(Handle(file)),
        }));
    }

    /// `drive:NODE:DISKSEQ`, with `.N` appended for the N-th further medium seen under the
    /// same sequence number (no DISKSEQ: `0`). Stable across restarts while a disc stays in.
    fn next_id(&mut self, m: &MediumProps) -> MediumId {
        let gen = match self.generations.get(&m.devnode) {
            Some((seq, gen)) if *seq == m.diskseq => gen + 1,
            _ => 0,
        };
        self.generations.insert(m.devnode.clone(), (m.diskseq, gen));
        let seq = m.diskseq.map_or_else(|| "0".to_owned(), |s| s.to_string());
        let mut id = format!("drive:{}:{seq}", m.devnode.display());
        if gen > 0 {
            id.push_str(&format!(".{gen}"));
        }
        MediumId(id.into())
    }

    fn own_loops_empty(&self) -> bool {
        self.cfg
            .own_loops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    fn emit(&self, ev: Event) {
        let _ = self.out.blocking_send(ev);
    }
}

/// Opens a device node the way it is served: read-only, without waiting for a medium.
fn open_device(node: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(node)
}

/// How much of a new medium is read ahead at once: the descriptors, path tables and, on most
/// discs, the directories that the first lookups need.
const PREFETCH: i64 = 2 << 20;

/// Starts reading the head of the medium into the page cache in the background, so the probe
/// and the first lookups through the FUSE driver wait for one batch of I/O, not one each.
/// Wakes the source thread from poll(2).
fn poke(wake: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
    unsafe {
        libc::write(
            wake.as_raw_fd(),
            (&one as *const u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
}

fn prefetch(file: &File) {
    // SAFETY: plain integer arguments; the descriptor is valid for the call.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, PREFETCH, libc::POSIX_FADV_WILLNEED) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::from_raw_os_error(rc), "POSIX_FADV_WILLNEED");
    }
}

/// BLKFLSBUF from `<linux/fs.h>`: write back and drop the device's page cache.
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// Drops the device's cached sectors.
///
/// Needed where the medium may have changed while the device stayed open (isomgr serving it):
/// the kernel keeps a block device's page cache until its last close, so a loop device given
/// new contents by `losetup -c` would still read the old ones (and so did udev's blkid).
/// Optical drives invalidate on a media change themselves. A device isomgr did not hold open
/// had its cache dropped at the last close, so a first identification needs no drop.
fn drop_page_cache(file: &File) {
    // SAFETY: BLKFLSBUF takes no argument; the descriptor is valid for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKFLSBUF, 0) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "BLKFLSBUF");
    }
}

/// A hash of the primary volume descriptor sector: two reads that differ are two media.
fn fingerprint(file: &File) -> std::io::Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut pvd = [0u8; 2048];
    let n = crate::iso9660::source::read_full(file, &mut pvd, 16 * 2048)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pvd.get(..n).hash(&mut h);
    Ok(h.finish())
}

/// A udev device found by enumeration as plain [`Props`] (the only place a udev type is
/// looked at; events come off the socket as properties already, see [`super::uevent`]).
fn props_of(dev: &udev::Device, own_loops_empty: bool) -> Props {
    let mut p = Props::from_pairs(dev.properties().map(|e| {
        (
            e.name().to_string_lossy().into_owned(),
            e.value().to_string_lossy().into_owned(),
        )
    }));
    p.sysname = dev.sysname().to_string_lossy().into_owned();
    p.devnode = dev.devnode().map(Path::to_path_buf).or(p.devnode);
    with_sysfs(p, own_loops_empty)
}

/// Adds what sysfs says where it can change the outcome: the backing file of a loop device
/// while isomgr has loop devices of its own; the size of what would be taken as a medium.
fn with_sysfs(mut p: Props, own_loops_empty: bool) -> Props {
    // The device's own directory (`/sys` + DEVPATH) needs no symlink followed.
    let dir = match p.get("DEVPATH") {
        Some(d) if d.starts_with('/') && !d.contains("/../") => PathBuf::from(format!("/sys{d}")),
        _ => Path::new("/sys/class/block").join(&p.sysname),
    };
    if p.action != "remove" && p.sysname.starts_with("loop") && !own_loops_empty {
        p.backing_file = read_sysfs(&dir.join("loop/backing_file")).map(PathBuf::from);
    }
    if may_be_taken(&p) {
        p.size = read_sysfs(&dir.join("size")).and_then(|s| s.to_str()?.parse().ok());
    }
    p
}

/// For an attached loop device, its `loop/autoclear` attribute and whether it is on.
fn loop_autoclear(sysname: &str) -> Option<(PathBuf, bool)> {
    if !sysname.starts_with("loop") {
        return None;
    }
    let path = Path::new("/sys/class/block")
        .join(sysname)
        .join("loop/autoclear");
    let on = read_sysfs(&path)? == "1";
    Some((path, on))
}

/// A sysfs attribute's value without its newline (one open, one read: attributes are at most
/// a page, and their size is not known beforehand). Bytes, as a backing file's path may be.
fn read_sysfs(path: &Path) -> Option<std::ffi::OsString> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = [0u8; 4096];
    let n = File::open(path).and_then(|mut f| f.read(&mut buf)).ok()?;
    let value = buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n]);
    Some(std::ffi::OsStr::from_bytes(value).to_owned())
}

/// Whether a report could be taken as a medium (then the device's size is worth reading).
fn may_be_taken(p: &Props) -> bool {
    p.action != "remove"
        && (matches!(p.props.get("ID_FS_TYPE"), Some(fs) if SERVABLE_FS.contains(&fs.as_str()))
            || maybe_hybrid(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Props {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/udev")
            .join(format!("{name}.txt"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Props::parse(&text)
    }

    /// What a change means, compactly: `medium LABEL seq N`, `no medium`, `eject`, `removed`,
    /// or `-` (not this source's business).
    fn what(c: Option<DriveChange>) -> String {
        match c {
            None => "-".into(),
            Some(DriveChange::Medium(m)) => format!(
                "medium {} {} seq {}",
                m.fs,
                m.label.as_deref().unwrap_or("(none)"),
                m.diskseq.map_or("-".into(), |s| s.to_string())
            ),
            Some(DriveChange::NoMedium { .. }) => "no medium".into(),
            Some(DriveChange::EjectRequest { .. }) => "eject".into(),
            Some(DriveChange::Removed { .. }) => "removed".into(),
        }
    }

    #[test]
    fn recorded_property_sets_classify_as_expected() {
        // (fixture, any_block, expected for optical-only, expected with any_block)
        let table = [
            (
                "inserted",
                "medium iso9660 Debian 12.2.0 amd64 1 seq 14",
                None,
            ),
            (
                "present-at-start",
                "medium iso9660 Debian 12.2.0 amd64 1 seq 14",
                None,
            ),
            (
                "swapped",
                "medium iso9660 Rocky-9-2-x86_64-dvd seq 16",
                None,
            ),
            ("udf-dvd", "medium udf FAMILY 2019 seq 19", None),
            ("empty", "no medium", None),
            ("audio-cd", "no medium", None),
            ("blank-dvd", "no medium", None),
            ("drive-added-empty", "no medium", None),
            ("eject-request", "eject", None),
            ("drive-removed", "removed", None),
            (
                "loop-attached",
                "-",
                Some("medium iso9660 ISOMGR_PLAIN seq 51"),
            ),
            ("loop-capacity-zero", "-", Some("no medium")),
            (
                "loop-new-contents",
                "-",
                Some("medium iso9660 Ünïcödé Jöliet seq 51"),
            ),
            ("loop-detached", "-", Some("no medium")),
            (
                "usb-isohybrid",
                "-",
                Some("medium iso9660 Debian 12.2.0 amd64 n seq 21"),
            ),
            ("usb-isohybrid-partition", "-", Some("-")),
            ("ext4-disk", "-", Some("no medium")),
            // Recorded in scripts/kernel-vm.sh's guest: fixtures/stick-partitioned.iso on a
            // SCSI disk; the device is probed to tell.
            ("stick-partition-offset", "-", Some("medium  (none) seq 13")),
        ];
        let none = HashSet::new();
        for (name, optical_only, any) in table {
            let p = fixture(name);
            assert_eq!(what(classify(&p, false, &none)), optical_only, "{name}");
            let any = any.unwrap_or(optical_only);
            assert_eq!(what(classify(&p, true, &none)), any, "{name} (any block)");
        }
    }

    #[test]
    fn inserted_disc_carries_node_kernel_name_and_identity() {
        let Some(DriveChange::Medium(m)) = classify(&fixture("inserted"), false, &HashSet::new())
        else {
            panic!("a medium");
        };
        assert_eq!(m.devnode, Path::new("/dev/sr0"));
        assert_eq!(m.sysname, "sr0");
        assert!(m.optical);
        assert_eq!(m.uuid.as_deref(), Some("2023-10-07-10-32-09-00"));
        // The swap is another medium by every account: sequence, label, uuid.
        let Some(DriveChange::Medium(s)) = classify(&fixture("swapped"), false, &HashSet::new())
        else {
            panic!("a medium");
        };
        assert_ne!(m, s);
        // The same disc reported again (enumeration at start) is the same medium.
        let Some(DriveChange::Medium(again)) =
            classify(&fixture("present-at-start"), false, &HashSet::new())
        else {
            panic!("a medium");
        };
        assert_eq!(m, again);
    }

    #[test]
    fn capacity_zero_is_no_medium_whatever_udev_still_says() {
        let mut p = fixture("inserted");
        p.size = Some(0);
        assert_eq!(what(classify(&p, false, &HashSet::new())), "no medium");
    }

    #[test]
    fn loop_devices_isomgr_attached_are_ignored() {
        let mut p = fixture("loop-attached");
        p.backing_file = Some("/srv/iso-drop/plain.iso".into());
        let own: HashSet<PathBuf> = [PathBuf::from("/srv/iso-drop/plain.iso")].into();
        assert_eq!(classify(&p, true, &own), None);
        p.backing_file = Some("/home/me/other.iso".into());
        assert_eq!(
            what(classify(&p, true, &own)),
            "medium iso9660 ISOMGR_PLAIN seq 51"
        );
    }

    #[test]
    fn other_subsystems_and_hostile_properties_are_harmless() {
        let none = HashSet::new();
        let mut p = fixture("inserted");
        p.props.insert("SUBSYSTEM".into(), "scsi_generic".into());
        assert_eq!(classify(&p, true, &none), None);
        let mut p = fixture("inserted");
        p.devnode = None;
        p.props.remove("DEVNAME");
        assert_eq!(classify(&p, true, &none), None);
        // Garbage never panics.
        for text in [
            "",
            "=",
            "ACTION",
            "DEVTYPE=disk\nID_CDROM=1\nDEVNAME=",
            "\\x\\xZZ=1",
        ] {
            let _ = classify(&Props::parse(text), true, &none);
        }
    }

    #[test]
    fn udev_escapes_decode_and_bad_ones_stay() {
        assert_eq!(decode_udev_string(r"Debian\x2012"), "Debian 12");
        assert_eq!(decode_udev_string(r"a\x2fb\x5c"), "a/b\\");
        assert_eq!(decode_udev_string(r"bad\xZZ\x4"), r"bad\xZZ\x4");
        assert_eq!(decode_udev_string(r"\xc3\xa9"), "é");
        assert_eq!(decode_udev_string(r"\xff"), "\u{fffd}");
    }
}
