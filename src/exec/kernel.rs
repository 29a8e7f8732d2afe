//! The kernel driver's executor: each medium is a mount(2) at `ROOT/NAME`, through a read-only
//! autoclear loop device for an image file, directly for a drive. Every effect goes through
//! [`Sys`], so the order of steps and every rollback are tested against the recording fake.
//!
//! Publish: `mkdir ROOT/NAME` with mode 000, attach, mount `ro,nosuid,nodev,noexec` over it.
//! A directory that is a mount point cannot be renamed (rename(2) gives EBUSY), so "mount
//! hidden, then rename into place" is not possible; instead the mount point is made
//! unreadable: until the mount covers it (and again between a lazy unmount and its removal) a
//! web server running as any user but root gets EACCES, never an empty listing. Once mounted,
//! the directory seen is the medium's root with the medium's own permissions.
//!
//! Unpublish: `umount2(MNT_DETACH)` (a download in flight finishes on the detached mount),
//! detach the loop (autoclear frees it when that download ends, if it has not already), rmdir.
//! Any failing step of a publish undoes the steps before it, in reverse order.
//!
//! No loop device to be had (every one busy and none can be added, or no descriptor left to
//! ask with): the medium is not failed but waits, with one error line naming the image and the
//! cause. Waiting media are retried in order when a loop device this executor used is freed,
//! or on a timer backing off from [`LOOP_RETRY_FIRST`] to [`LOOP_RETRY_MAX`]; the manager
//! sees them publishing until the outcome comes. A waiting medium holds no descriptor (it is
//! reopened by path and must still be the same file) and nothing on the system.
//!
//! It decides nothing about names or media: that is the manager's. It never touches a mount,
//! loop or directory it did not make: at start it adopts only what the previous state file and
//! the [`journal`] list and the mount table and loop devices confirm. The journal covers a
//! crash between a mount and the next state write.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod journal;

use crate::crashpoint;
use crate::event::{Event, Medium, MediumId, SourceKind};
use crate::manager::{Action, MediumRecord, StateFile};
use crate::offload::{self, Helper, Late, Ran};
use crate::source::drives::OwnLoops;
use crate::sys::{FileId, LoopDev, LoopEntry, MountEntry, MountFlags, Sys};
use journal::{Journal, Made};

/// Mode of a mount point before the medium covers it: nobody but root can list it.
pub const MOUNT_POINT_MODE: u32 = 0o000;
/// What a medium is mounted as when its source did not say.
const FALLBACK_FS: [&str; 2] = ["iso9660", "udf"];
/// The FUSE driver's filesystem type, as it appears in the mount table.
const FUSE_FSTYPE: &str = "fuse.isomgr";
/// First wait before media that found no loop device are tried again (doubling each time).
pub const LOOP_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two tries.
pub const LOOP_RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("medium name {name:?} cannot be a directory name")]
    InvalidName { name: String },
    #[error("{target} is already served")]
    AlreadyServed { target: PathBuf },
    #[error("opening {image}")]
    Open { image: PathBuf, source: io::Error },
    #[error("{image} is no longer the file that was identified (replaced since)")]
    Replaced { image: PathBuf },
    #[error("creating the mount point {dir}")]
    MakeDir { dir: PathBuf, source: io::Error },
    #[error("attaching a loop device to {image}")]
    LoopAttach { image: PathBuf, source: io::Error },
    #[error("mounting {image} ({device}) at {target} as {fstype}{}", enodev_hint(.source, .fstype))]
    Mount {
        image: PathBuf,
        device: PathBuf,
        target: PathBuf,
        fstype: String,
        source: io::Error,
    },
    #[error("unmounting {target}")]
    Unmount { target: PathBuf, source: io::Error },
    #[error("detaching {device} from {image}")]
    LoopDetach {
        device: PathBuf,
        image: PathBuf,
        source: io::Error,
    },
    #[error("removing the mount point {dir}")]
    RemoveDir { dir: PathBuf, source: io::Error },
}

/// ENODEV from mount(2): the kernel has no such filesystem. Said plainly, with the way out.
fn enodev_hint(e: &io::Error, fstype: &str) -> String {
    if e.raw_os_error() == Some(libc::ENODEV) {
        format!(" (this kernel has no {fstype} filesystem; --driver fuse serves it)")
    } else {
        String::new()
    }
}

impl Error {
    /// No loop device (or no descriptor to get one) right now: worth trying again later.
    /// Attaching asks loop-control for a free device, adding one when all are bound; it fails
    /// when none can be added (ENOSPC, ENOMEM, ENODEV, ENXIO), when the device node does not
    /// appear (ENOENT: containers without the node), when every device it was given stayed
    /// busy (EBUSY, EAGAIN), or for lack of descriptors (EMFILE, ENFILE).
    pub fn waits_for_resources(&self) -> bool {
        match self {
            Error::LoopAttach { source, .. } => matches!(
                source.raw_os_error(),
                Some(
                    libc::ENOSPC
                        | libc::ENOMEM
                        | libc::ENODEV
                        | libc::ENXIO
                        | libc::ENOENT
                        | libc::EBUSY
                        | libc::EAGAIN
                        | libc::EMFILE
                        | libc::ENFILE
                )
            ),
            Error::Open { source, .. } => crate::sys::out_of_descriptors(source),
            _ => false,
        }
    }
}

/// An error with its causes, one line: `mounting ...: No such device (os error 19)`.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What isomgr made for one medium.
#[derive(Debug)]
struct Served {
    id: MediumId,
    source: SourceKind,
    origin: PathBuf,
    target: PathBuf,
    loop_dev: Option<LoopDev>,
    label: Option<String>,
    /// When it was mounted (Unix seconds; 0 unknown): an image file changed after that (its
    /// ctime) is not the volume the mount shows.
    mounted_at: i64,
}

impl Served {
    fn made(&self, name: &str) -> Made {
        Made {
            name: name.to_owned(),
            id: self.id.clone(),
            source: self.source,
            origin: self.origin.clone(),
            label: self.label.clone(),
        }
    }
}

/// Runs actions with loop devices and mount(2). See the module documentation.
pub struct KernelExecutor<S: Sys> {
    sys: Arc<S>,
    root: PathBuf,
    served: BTreeMap<String, Served>,
    /// What the previous run left mounted, vouched for by its state file and confirmed by the
    /// mount table, until the manager publishes the same medium under the same name again
    /// (adopted as it is) or unpublishes it (torn down).
    previous: BTreeMap<String, Served>,
    /// Backing files of the loop devices this executor attached, shared with the drives source
    /// so it never takes isomgr's own loops for foreign media (no double mounts).
    own_loops: OwnLoops,
    /// Where each mount point made and removed is recorded first (none in unit tests).
    journal: Option<Journal>,
    /// What the previous run left, as the manager must see it (state and journal merged).
    previous_records: Vec<MediumRecord>,
    /// Media waiting for a loop device, in the order they came (see the module documentation).
    waiting: VecDeque<Waiting>,
    /// When the waiting media are tried next.
    retry_at: Option<Instant>,
    /// The wait after the next failed try.
    backoff: Duration,
    /// Runs mount(2) off the daemon thread (see [`offload`]).
    helper: Helper,
    /// Media whose mount(2) had not returned within [`offload::WAIT`], by name: served once it
    /// returns (or undone then, if unpublished meanwhile).
    mounting: HashMap<String, Mounting>,
}

/// A publish whose mount(2) has not returned yet: what it made so far.
struct Mounting {
    medium: Medium,
    served: Served,
    mounted: Late<Result<(), Error>>,
    /// Unpublished meanwhile: undone once the mount returns.
    cancelled: bool,
}

/// What a publish came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Publish {
    /// Served, through this loop device (none for a drive).
    Served(Option<PathBuf>),
    /// Its mount(2) goes on in the background (see [`offload`]).
    Mounting,
}

/// What mount_new came to.
enum Mount {
    Done(Served),
    Late(Served, Late<Result<(), Error>>),
}

/// A medium waiting for a loop device: what to publish it as.
#[derive(Debug)]
struct Waiting {
    name: String,
    medium: Medium,
}

impl<S: Sys> std::fmt::Debug for KernelExecutor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelExecutor")
            .field("root", &self.root)
            .field("served", &self.served.keys().collect::<Vec<_>>())
            .field("previous", &self.previous.keys().collect::<Vec<_>>())
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

/// Whether the kernel driver can work here: `Ok(why)` or `Err(why not)`. The kernel must
/// know iso9660 (listed in `/proc/filesystems`, or a module mount(2) loads on demand) and a
/// loop device must attach.
pub fn kernel_usable(sys: &impl Sys) -> Result<String, String> {
    let fs = sys
        .filesystems()
        .map_err(|e| format!("cannot read /proc/filesystems: {e}"))?;
    if !fs.iter().any(|f| f == "iso9660") {
        return Err(
            "this kernel has no iso9660 filesystem (not in /proc/filesystems, no isofs module)"
                .into(),
        );
    }
    sys.probe_loop()
        .map_err(|e| format!("no loop device can be attached: {e}"))?;
    let udf = if fs.iter().any(|f| f == "udf") {
        ""
    } else {
        " (no udf: UDF-only discs will fail to mount; --driver fuse serves them)"
    };
    Ok(format!(
        "the kernel has iso9660 and loop devices attach{udf}"
    ))
}

/// The `Failed` outcome of a publish, logged once.
fn failed(name: &str, medium: &Medium, e: &Error) -> Event {
    let error = describe(e);
    tracing::error!(origin = %medium.origin.display(), %error, "not served");
    Event::Failed {
        id: medium.id.clone(),
        name: name.to_owned(),
        error,
    }
}

/// `name` is one plain path component.
fn valid_name(name: &str) -> bool {
    let mut c = Path::new(name).components();
    matches!((c.next(), c.next()), (Some(Component::Normal(n)), None) if n == name)
}

/// `file:DEV:INO` as the dirs source writes a medium's identity.
fn file_id(id: &MediumId) -> FileId {
    let mut it = id.0.strip_prefix("file:").unwrap_or("").split(':');
    let dev = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let ino = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    FileId { dev, ino }
}

fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

impl<S: Sys> KernelExecutor<S> {
    pub fn new(sys: S, root: PathBuf) -> Self {
        KernelExecutor {
            sys: Arc::new(sys),
            root,
            served: BTreeMap::new(),
            previous: BTreeMap::new(),
            own_loops: OwnLoops::default(),
            waiting: VecDeque::new(),
            retry_at: None,
            backoff: LOOP_RETRY_FIRST,
            journal: None,
            previous_records: Vec::new(),
            helper: Helper::default(),
            mounting: HashMap::new(),
        }
    }

    /// Records every mount point made and removed in the journal at `path` (see [`journal`]).
    pub fn with_journal(mut self, path: PathBuf) -> Self {
        self.journal = Some(Journal::new(path));
        self
    }

    /// After [`Self::reconcile`]: the previous run's media, from its state file and journal;
    /// the names the manager keeps for them.
    pub fn previous_records(&self) -> &[MediumRecord] {
        &self.previous_records
    }

    fn journal_gone(&mut self, name: &str) {
        if let Some(j) = &mut self.journal {
            j.gone(name);
            if j.wants_rewrite(self.served.len() + self.previous.len()) {
                let live: Vec<Made> = self
                    .served
                    .iter()
                    .chain(&self.previous)
                    .map(|(name, s)| s.made(name))
                    .collect();
                j.rewrite(&live);
            }
        }
    }

    /// Shares the set of backing files of isomgr's own loop devices (see [`OwnLoops`]).
    pub fn with_own_loops(mut self, own_loops: OwnLoops) -> Self {
        self.own_loops = own_loops;
        self
    }

    /// Marks (or unmarks) `image` as backing one of isomgr's own loop devices, by the path
    /// the kernel shows in /sys/block/loopN/loop/backing_file.
    fn own_loop(&self, image: &Path, ours: bool) {
        let path = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_owned());
        if let Ok(mut set) = self.own_loops.lock() {
            if ours {
                set.insert(path);
            } else {
                set.remove(&path);
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The effects implementation it was given.
    pub fn sys(&self) -> &S {
        &self.sys
    }

    /// Runs one action; the outcome to feed back to the manager, if any. A medium that must
    /// wait for a loop device has no outcome yet: it comes from [`KernelExecutor::retry_due`].
    pub fn run(&mut self, action: &Action) -> Option<Event> {
        match action {
            Action::Publish { name, medium } => match self.publish(name, medium) {
                Ok(Publish::Served(loop_device)) => Some(Event::Published {
                    id: medium.id.clone(),
                    name: name.clone(),
                    loop_device,
                }),
                Ok(Publish::Mounting) => None,
                Err(e) if e.waits_for_resources() && medium.source == SourceKind::Dir => {
                    self.wait(name, medium, &e);
                    None
                }
                Err(e) => Some(failed(name, medium, &e)),
            },
            Action::Unpublish { name, .. } => {
                if let Some(m) = self.mounting.get_mut(name) {
                    m.cancelled = true;
                    tracing::info!(name = %name, origin = %m.medium.origin.display(), medium = %m.medium.id, "gone while its mount(2) had not returned; undone when it does");
                    return None;
                }
                let waited = self.waiting.iter().position(|w| &w.name == name);
                if let Some(w) = waited.and_then(|i| self.waiting.remove(i)) {
                    tracing::info!(name = %name, origin = %w.medium.origin.display(), medium = %w.medium.id, "removed while waiting for a loop device");
                    if self.waiting.is_empty() {
                        self.retry_at = None;
                    }
                    return None;
                }
                let s = self
                    .served
                    .remove(name)
                    .or_else(|| self.previous.remove(name));
                if let Some(s) = s {
                    match self.teardown(name, &s) {
                        Ok(()) => {
                            tracing::info!(name = %name, origin = %s.origin.display(), medium = %s.id, "removed")
                        }
                        Err(e) => {
                            tracing::error!(name = %name, error = %describe(&e), "removing")
                        }
                    }
                    // A loop device went back to the kernel: the first waiting medium may
                    // take it at once.
                    if s.loop_dev.is_some() && !self.waiting.is_empty() {
                        self.retry_at = Some(Instant::now());
                    }
                }
                None
            }
            Action::SaveState => None,
            Action::Eject { device, name } => {
                let served_at = name.as_ref().map(|n| self.root.join(n));
                super::eject(device, served_at.as_deref());
                None
            }
        }
    }

    /// Puts a medium that found no loop device in the queue: one error line for it, no
    /// descriptor kept.
    fn wait(&mut self, name: &str, medium: &Medium, e: &Error) {
        let retry_in = self.retry_at.map_or(self.backoff, |at| {
            at.saturating_duration_since(Instant::now())
        });
        tracing::error!(
            image = %medium.origin.display(),
            name = %name,
            error = %describe(e),
            waiting = self.waiting.len() + 1,
            "no loop device can be had now; waiting (tried again when one is freed, or in {} s)",
            retry_in.as_secs_f32().ceil()
        );
        self.waiting.push_back(Waiting {
            name: name.to_owned(),
            medium: Medium {
                handle: None,
                ..medium.clone()
            },
        });
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.backoff);
        }
    }

    /// Media waiting for a loop device.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// When [`KernelExecutor::retry_due`] has work next, if ever.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Tries the waiting media again, in order, if their time has come (`now`); stops at the
    /// first one that still finds no loop device and backs off. The outcomes, in order.
    pub fn retry_due(&mut self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        if self.retry_at.is_none_or(|at| at > now) {
            return out;
        }
        while let Some(w) = self.waiting.pop_front() {
            match self.publish(&w.name, &w.medium) {
                Ok(Publish::Served(loop_device)) => {
                    self.backoff = LOOP_RETRY_FIRST;
                    out.push(Event::Published {
                        id: w.medium.id.clone(),
                        name: w.name,
                        loop_device,
                    });
                }
                Ok(Publish::Mounting) => self.backoff = LOOP_RETRY_FIRST,
                Err(e) if e.waits_for_resources() => {
                    tracing::debug!(image = %w.medium.origin.display(), error = %describe(&e), waiting = self.waiting.len() + 1, "still no loop device");
                    self.waiting.push_front(w);
                    self.retry_at = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(LOOP_RETRY_MAX);
                    return out;
                }
                Err(e) => out.push(failed(&w.name, &w.medium, &e)),
            }
        }
        self.retry_at = None;
        out
    }

    /// Serves `medium` at `ROOT/name`.
    pub fn publish(&mut self, name: &str, medium: &Medium) -> Result<Publish, Error> {
        if !valid_name(name) {
            return Err(Error::InvalidName {
                name: name.to_owned(),
            });
        }
        let target = self.root.join(name);
        if let Some(prev) = self.previous.remove(name) {
            let changed = changed_since(medium, prev.mounted_at);
            if let Some(ctime) = changed {
                tracing::info!(name = %name, origin = %medium.origin.display(), changed_at = ctime, mounted_at = prev.mounted_at, "the image changed after the previous run mounted it: mounted anew");
            }
            if prev.id == medium.id && prev.origin == medium.origin && changed.is_none() {
                let dev = prev.loop_dev.as_ref().map(|l| l.path.clone());
                tracing::info!(name = %name, origin = %medium.origin.display(), device = ?dev, "adopted the mount of the previous run");
                self.served.insert(name.to_owned(), prev);
                return Ok(Publish::Served(dev));
            }
            // Another medium now: what the previous run made goes first.
            if let Err(e) = self.teardown(name, &prev) {
                tracing::error!(name = %name, error = %describe(&e), "removing the previous run's mount");
            }
        }
        if self.served.contains_key(name) || self.mounting.contains_key(name) {
            return Err(Error::AlreadyServed { target });
        }
        if let Some(j) = &mut self.journal {
            j.made(&Made {
                name: name.to_owned(),
                id: medium.id.clone(),
                source: medium.source,
                origin: medium.origin.clone(),
                label: medium.label.clone(),
            });
        }
        match self.mount_new(&target, medium) {
            Ok(Mount::Done(served)) => Ok(Publish::Served(self.mounted(name, medium, served))),
            Ok(Mount::Late(served, mounted)) => {
                tracing::info!(name = %name, origin = %medium.origin.display(), waited_ms = offload::WAIT.as_millis() as u64, "mount(2) has not returned yet; served once it does, the other media meanwhile");
                self.mounting.insert(
                    name.to_owned(),
                    Mounting {
                        medium: Medium {
                            handle: None,
                            ..medium.clone()
                        },
                        served,
                        mounted,
                        cancelled: false,
                    },
                );
                Ok(Publish::Mounting)
            }
            Err(e) => {
                self.journal_gone(name);
                Err(e)
            }
        }
    }

    /// Records a medium whose mount returned: one log line; the loop device, if any.
    fn mounted(&mut self, name: &str, medium: &Medium, mut served: Served) -> Option<PathBuf> {
        crashpoint::reached("after-mount");
        // The mount holds the device now; with autoclear it frees itself when unmounted.
        if let Some(l) = served.loop_dev.as_mut() {
            l.release();
        }
        let dev = served.loop_dev.as_ref().map(|l| l.path.clone());
        // The block device mounted: the loop device attached to an image, else the drive.
        let device = dev.as_deref().unwrap_or(&medium.origin).display();
        tracing::info!(name = %name, origin = %medium.origin.display(), label = medium.label.as_deref().unwrap_or(""), device = %device, "mounted");
        self.served.insert(name.to_owned(), served);
        dev
    }

    /// Undoes what a publish made before its mount failed: the loop and the mount point.
    fn undo_unmounted(&self, served: &mut Served) {
        self.undo(&served.target, served.loop_dev.as_mut());
        if served.loop_dev.is_some() {
            self.own_loop(&served.origin, false);
        }
    }

    /// Woken when a mount that had not returned within [`offload::WAIT`] has.
    pub fn late_done(&self) -> Arc<tokio::sync::Notify> {
        self.helper.wake()
    }

    /// Media whose mount(2) has not returned yet.
    pub fn mounting(&self) -> usize {
        self.mounting.len()
    }

    /// The outcomes of the mounts that returned after [`offload::WAIT`]: served, or failed and
    /// undone; one unpublished meanwhile is undone either way, with no outcome.
    pub fn finish_late(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        for (name, mut m, answer) in offload::take_answered(&mut self.mounting, |m| &m.mounted) {
            let result = answer.and_then(|r| r.map_err(|e| describe(&e)));
            match (result, m.cancelled) {
                (Ok(()), false) => {
                    let loop_device = self.mounted(&name, &m.medium, m.served);
                    out.push(Event::Published {
                        id: m.medium.id,
                        name,
                        loop_device,
                    });
                }
                (Ok(()), true) => {
                    if let Some(l) = m.served.loop_dev.as_mut() {
                        l.release();
                    }
                    match self.teardown(&name, &m.served) {
                        Ok(()) => {
                            tracing::info!(name = %name, origin = %m.served.origin.display(), medium = %m.served.id, "removed")
                        }
                        Err(e) => {
                            tracing::error!(name = %name, error = %describe(&e), "removing")
                        }
                    }
                }
                (Err(error), cancelled) => {
                    self.undo_unmounted(&mut m.served);
                    self.journal_gone(&name);
                    if !cancelled {
                        tracing::error!(origin = %m.medium.origin.display(), %error, "not served");
                        out.push(Event::Failed {
                            id: m.medium.id,
                            name,
                            error,
                        });
                    }
                }
            }
        }
        out
    }

    /// mkdir, attach, mount; each failure undoes the steps before it. A mount that has not
    /// returned within [`offload::WAIT`] goes on in the background.
    fn mount_new(&mut self, target: &Path, medium: &Medium) -> Result<Mount, Error> {
        let image = &medium.origin;
        // Open before making anything: nothing to undo if the image is gone.
        let opened;
        let file: Option<&File> = match (medium.source, &medium.handle) {
            (SourceKind::Drive, _) => None,
            (SourceKind::Dir, Some(h)) => Some(h.0.as_ref()),
            (SourceKind::Dir, None) => {
                opened = File::open(image).map_err(|source| Error::Open {
                    image: image.clone(),
                    source,
                })?;
                // Reopened by path (after a wait): it must still be the identified file.
                if let Some(want) = medium
                    .id
                    .0
                    .strip_prefix("file:")
                    .map(|_| file_id(&medium.id))
                {
                    let meta = opened.metadata().map_err(|source| Error::Open {
                        image: image.clone(),
                        source,
                    })?;
                    if (meta.dev(), meta.ino()) != (want.dev, want.ino) {
                        return Err(Error::Replaced {
                            image: image.clone(),
                        });
                    }
                }
                Some(&opened)
            }
        };
        self.sys
            .make_dir(target, MOUNT_POINT_MODE)
            .map_err(|source| Error::MakeDir {
                dir: target.to_owned(),
                source,
            })?;
        crashpoint::reached("after-mkdir");
        let loop_dev = match file {
            None => None,
            Some(f) => {
                // Before attaching: udev announces the new loop device at once.
                self.own_loop(image, true);
                let attached = self.sys.attach_loop(f, image, true);
                match attached {
                    Ok(l) => {
                        crashpoint::reached("after-attach");
                        Some(l)
                    }
                    Err(source) => {
                        self.own_loop(image, false);
                        self.undo(target, None);
                        return Err(Error::LoopAttach {
                            image: image.clone(),
                            source,
                        });
                    }
                }
            }
        };
        let device = loop_dev
            .as_ref()
            .map_or_else(|| image.clone(), |l| l.path.clone());
        let candidates: Vec<String> = match &medium.fs {
            Some(fs) => vec![fs.clone()],
            None => FALLBACK_FS.iter().map(|f| (*f).to_owned()).collect(),
        };
        let served = Served {
            id: medium.id.clone(),
            source: medium.source,
            origin: image.clone(),
            target: target.to_owned(),
            loop_dev,
            label: medium.label.clone(),
            mounted_at: crate::unix_now(),
        };
        let (sys, target, image) = (self.sys.clone(), target.to_owned(), image.clone());
        let ran = self.helper.run(move || {
            let mut failure = None;
            for fstype in candidates {
                match sys.mount(&device, &target, &fstype, MountFlags::SERVED) {
                    Ok(()) => return Ok(()),
                    Err(source) => {
                        failure = Some(Error::Mount {
                            image: image.clone(),
                            device: device.clone(),
                            target: target.clone(),
                            fstype,
                            source,
                        })
                    }
                }
            }
            Err(failure.unwrap_or(Error::AlreadyServed { target }))
        });
        let mut served = served;
        let mounted = match ran {
            Ok(Ran::Done(r)) => r,
            Ok(Ran::Late(late)) => return Ok(Mount::Late(served, late)),
            Err(e) => Err(Error::Mount {
                image: served.origin.clone(),
                device: served
                    .loop_dev
                    .as_ref()
                    .map_or_else(|| served.origin.clone(), |l| l.path.clone()),
                target: served.target.clone(),
                fstype: String::new(),
                source: io::Error::other(e),
            }),
        };
        match mounted {
            Ok(()) => Ok(Mount::Done(served)),
            Err(e) => {
                self.undo_unmounted(&mut served);
                Err(e)
            }
        }
    }

    /// Undoes a publish that got as far as the mount point (and the loop): detach, rmdir.
    /// Failures here are logged: the original error is the one reported.
    fn undo(&self, target: &Path, loop_dev: Option<&mut LoopDev>) {
        if let Some(l) = loop_dev {
            if let Err(e) = self.sys.detach_loop(l) {
                tracing::warn!(device = %l.path.display(), error = %e, "detaching after a failed mount (autoclear frees it)");
            }
            l.release();
        }
        if let Err(e) = self.sys.remove_dir(target) {
            tracing::error!(dir = %target.display(), error = %e, "removing the mount point after a failure");
        }
    }

    /// Lazy unmount, detach, rmdir. An unmount that fails leaves everything as it is (still
    /// served); a failed detach is logged (autoclear frees the loop when its users go).
    fn teardown(&mut self, name: &str, s: &Served) -> Result<(), Error> {
        match self.sys.unmount(&s.target, true) {
            Ok(()) => crashpoint::reached("after-unmount"),
            // Not mounted (any more): go on with the rest.
            Err(e) if errno(&e) == Some(libc::EINVAL) => {}
            Err(source) => {
                return Err(Error::Unmount {
                    target: s.target.clone(),
                    source,
                })
            }
        }
        if let Some(l) = &s.loop_dev {
            if let Err(source) = self.sys.detach_loop(l) {
                let e = Error::LoopDetach {
                    device: l.path.clone(),
                    image: s.origin.clone(),
                    source,
                };
                tracing::warn!(error = %describe(&e), "autoclear frees it when its last user goes");
            }
            self.own_loop(&s.origin, false);
        }
        crashpoint::reached("before-rmdir");
        match self.sys.remove_dir(&s.target) {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::ENOENT) => {}
            Err(source) => {
                return Err(Error::RemoveDir {
                    dir: s.target.clone(),
                    source,
                })
            }
        }
        self.journal_gone(name);
        Ok(())
    }

    /// At start: takes over what the previous run made and its state file lists (only that),
    /// and clears what it made that is no longer mounted. Returns the root's entries that
    /// isomgr did not make (names the manager must treat as taken).
    pub fn reconcile(&mut self, previous: Option<&StateFile>) -> Vec<String> {
        let (mounts, loops) = match (self.sys.mounts(), self.sys.loops()) {
            (Ok(m), Ok(l)) => (m, l),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot read the mount table or loop devices; adopting nothing");
                (Vec::new(), Vec::new())
            }
        };
        let top = |path: &Path| mounts.iter().rev().find(|m| m.mount_point == path);
        if let Some(m) = top(&self.root).filter(|m| m.fstype == FUSE_FSTYPE) {
            // A FUSE root isomgr left behind (a crash): it hides the root.
            tracing::info!(root = %self.root.display(), "unmounting a stale isomgr FUSE mount");
            if let Err(e) = self.sys.unmount(&m.mount_point, true) {
                tracing::error!(root = %self.root.display(), error = %e, "unmounting the stale FUSE mount");
            }
        }
        let mut records: Vec<MediumRecord> = match previous {
            Some(s) if s.driver == "kernel" && s.root == self.root => s.media.clone(),
            Some(s) if !s.media.is_empty() => {
                tracing::info!(driver = %s.driver, root = %s.root.display(), "the previous state is another driver's or root's: nothing to adopt");
                Vec::new()
            }
            _ => Vec::new(),
        };
        // The journal is newer than the state file: it says what is still made for each
        // name it has seen (the mount's loop is the one the mount table shows).
        if let Some(j) = &self.journal {
            let live = j.read();
            let mut journal_only = Vec::new();
            for (name, m) in &live {
                if records.iter().any(|r| r.name == *name && r.id == m.id) {
                    continue;
                }
                let loop_device = top(&self.root.join(name))
                    .map(|mnt| mnt.source.clone())
                    .filter(|src| src.starts_with("/dev/loop"));
                tracing::info!(name = %name, origin = %m.origin.display(), "the journal lists what the state file missed");
                journal_only.push(MediumRecord {
                    name: name.clone(),
                    label: m.label.clone(),
                    source: m.source,
                    origin: m.origin.clone(),
                    mounted_at: String::new(),
                    loop_device,
                    id: m.id.clone(),
                    mounted_at_unix: 0,
                });
            }
            // Once there is a journal, a state record it does not confirm was removed since.
            if j.exists() {
                records.retain(|r| live.get(&r.name).is_some_and(|m| m.id == r.id));
            }
            records.splice(0..0, journal_only);
        }
        for r in &records {
            if !valid_name(&r.name) {
                tracing::warn!(name = %r.name, "ignoring an invalid name in the previous state");
                continue;
            }
            let target = self.root.join(&r.name);
            let ours: Option<&LoopEntry> = r.loop_device.as_deref().and_then(|dev| {
                loops
                    .iter()
                    .find(|l| l.path == Path::new(dev) && l.backing_file == r.origin)
            });
            let source_ok = |m: &MountEntry| match (r.source, ours) {
                (SourceKind::Drive, _) => Path::new(&m.source) == r.origin,
                (SourceKind::Dir, Some(l)) => Path::new(&m.source) == l.path,
                (SourceKind::Dir, None) => false,
            };
            match top(&target) {
                Some(m) if source_ok(m) => {
                    tracing::debug!(name = %r.name, source = %m.source, "previous mount found");
                    self.previous.insert(
                        r.name.clone(),
                        Served {
                            id: r.id.clone(),
                            source: r.source,
                            origin: r.origin.clone(),
                            target,
                            loop_dev: ours.map(|l| {
                                LoopDev::new(l.path.clone(), l.number, file_id(&r.id), None)
                            }),
                            label: r.label.clone(),
                            mounted_at: r.mounted_at_unix,
                        },
                    );
                    if ours.is_some() {
                        self.own_loop(&r.origin, true);
                    }
                }
                Some(m) => {
                    tracing::warn!(dir = %target.display(), source = %m.source, "mounted, but not as the previous state says: left alone");
                }
                None => {
                    // Unmounted since (by hand, or a crash mid-removal): clear the rest.
                    if let Some(l) = ours {
                        if !mounts.iter().any(|m| Path::new(&m.source) == l.path) {
                            let dev = LoopDev::new(l.path.clone(), l.number, file_id(&r.id), None);
                            if let Err(e) = self.sys.detach_loop(&dev) {
                                tracing::warn!(device = %l.path.display(), error = %e, "detaching a loop of the previous run");
                            }
                        }
                    }
                    match self.sys.remove_dir(&target) {
                        Ok(()) => {
                            tracing::info!(dir = %target.display(), "removed an empty mount point of the previous run")
                        }
                        Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ENOTEMPTY)) => {}
                        Err(e) => {
                            tracing::warn!(dir = %target.display(), error = %e, "removing a mount point of the previous run")
                        }
                    }
                }
            }
        }
        if let Some(j) = &mut self.journal {
            let live: Vec<Made> = self.previous.iter().map(|(n, s)| s.made(n)).collect();
            j.rewrite(&live);
        }
        let entries = match self.sys.list_dir(&self.root) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(root = %self.root.display(), error = %e, "listing the root");
                Vec::new()
            }
        };
        let foreign = entries
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !self.previous.contains_key(n))
            .collect();
        self.previous_records = records;
        foreign
    }

    /// A normal stop. By default kernel mounts stay (the next start adopts them, downloads go
    /// on); with `cleanup` everything isomgr made is torn down.
    pub fn shutdown(mut self, cleanup: bool) {
        if !self.mounting.is_empty() {
            let names: Vec<&String> = self.mounting.keys().collect();
            tracing::warn!(?names, "stopping while their mount(2) has not returned; the next start adopts or clears what they leave");
        }
        if !self.waiting.is_empty() {
            tracing::info!(
                waiting = self.waiting.len(),
                "stopping with media still waiting for a loop device"
            );
        }
        let all: Vec<(String, Served)> = std::mem::take(&mut self.served)
            .into_iter()
            .chain(std::mem::take(&mut self.previous))
            .collect();
        if !cleanup {
            if !all.is_empty() {
                tracing::info!(mounts = all.len(), "leaving the mounts for the next start");
            }
            return;
        }
        for (name, s) in all {
            match self.teardown(&name, &s) {
                Ok(()) => {
                    tracing::info!(name = %name, origin = %s.origin.display(), medium = %s.id, "removed")
                }
                Err(e) => tracing::error!(name = %name, error = %describe(&e), "removing"),
            }
        }
    }
}

/// For an image file mounted at `mounted_at` (Unix seconds, 0 unknown): its change time, if
/// it changed after that (rewritten in place while isomgr was stopped: the same file, so the
/// same medium, but the mount shows the old volume's metadata over the new bytes). The open
/// descriptor is asked, else the path.
fn changed_since(medium: &Medium, mounted_at: i64) -> Option<i64> {
    if medium.source != SourceKind::Dir || mounted_at <= 0 {
        return None;
    }
    let md = match &medium.handle {
        Some(h) => h.0.metadata(),
        None => std::fs::metadata(&medium.origin),
    };
    let ctime = std::os::unix::fs::MetadataExt::ctime(&md.ok()?);
    (ctime > mounted_at).then_some(ctime)
}

#[cfg(test)]
mod tests;
