//! The executor: carries out the manager's actions through a mount driver and reports each
//! outcome back as an event. It decides nothing about media or names; the only rollback here
//! is undoing the steps of one action that failed half-way (see [`kernel`]).

pub mod kernel;

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{Event, Handle, Medium, MediumId};
use crate::fuse::reopen::{budget_from_env_or_limit, FdPool, PathSlot, PoolStats, Pooled};
use crate::fuse::FuseDriver;
use crate::iso9660::Image;
use crate::manager::Action;
use crate::sys::linux::LinuxSys;

pub use kernel::KernelExecutor;

/// The mount driver the daemon runs.
pub enum Executor {
    Fuse(FuseExecutor),
    Kernel(KernelExecutor<LinuxSys>),
}

impl Executor {
    /// Runs one action; the outcome to feed back to the manager, if any.
    pub fn run(&mut self, action: Action) -> Option<Event> {
        match self {
            Executor::Fuse(e) => e.run(action),
            Executor::Kernel(e) => e.run(&action),
        }
    }

    /// The driver's name in the state file: "fuse" or "kernel".
    pub fn driver(&self) -> &'static str {
        match self {
            Executor::Fuse(_) => "fuse",
            Executor::Kernel(_) => "kernel",
        }
    }

    /// A medium's file is now at `origin` (a rename the source reported): the FUSE driver
    /// reopens it from there.
    pub fn moved(&mut self, id: &MediumId, origin: &Path) {
        if let Executor::Fuse(e) = self {
            e.moved(id, origin);
        }
    }

    /// When [`Executor::retry_due`] has work next, if ever.
    pub fn next_retry(&self) -> Option<Instant> {
        match self {
            Executor::Fuse(_) => None,
            Executor::Kernel(e) => e.next_retry(),
        }
    }

    /// Retries what waits for a resource (the kernel driver's media waiting for a loop
    /// device); the outcomes to feed back to the manager.
    pub fn retry_due(&mut self, now: Instant) -> Vec<Event> {
        match self {
            Executor::Fuse(_) => Vec::new(),
            Executor::Kernel(e) => e.retry_due(now),
        }
    }

    /// Woken when a publish that went on in the background (see [`OPEN_WAIT`]) has an outcome
    /// for [`Executor::finish_late`]; `None` for a driver that publishes in one go.
    pub fn late_done(&self) -> Option<Arc<tokio::sync::Notify>> {
        match self {
            Executor::Fuse(e) => Some(e.late_done()),
            Executor::Kernel(_) => None,
        }
    }

    /// The outcomes of background publishes that have finished.
    pub fn finish_late(&mut self) -> Vec<Event> {
        match self {
            Executor::Fuse(e) => e.finish_late(),
            Executor::Kernel(_) => Vec::new(),
        }
    }

    /// A normal stop. FUSE always unmounts (it cannot outlive the process); kernel mounts stay
    /// for the next start to adopt unless `cleanup_on_exit`.
    pub fn shutdown(self, cleanup_on_exit: bool) {
        match self {
            Executor::Fuse(e) => e.shutdown(),
            Executor::Kernel(e) => e.shutdown(cleanup_on_exit),
        }
    }
}

/// Runs actions with the FUSE driver (one FUSE filesystem at the root). Image files stay open
/// within a descriptor budget ([`crate::fuse::reopen`]); beyond it they reopen on demand.
pub struct FuseExecutor {
    driver: FuseDriver,
    pool: Arc<FdPool>,
    /// Where each served image file that may be reopened is, to reopen it after a rename
    /// (images that hold their descriptor need no path).
    paths: HashMap<MediumId, Arc<PathSlot>>,
    /// The budget was hit (logged once).
    over_budget_logged: bool,
    /// The thread that opens images for publishing, while it answers.
    opener: Option<std_mpsc::Sender<OpenJob>>,
    /// Media still being opened after [`OPEN_WAIT`]: served once their image answers.
    late: HashMap<MediumId, Late>,
    /// Woken when a late opening has finished.
    late_done: Arc<tokio::sync::Notify>,
}

/// How long publishing waits for a medium's image to be read (its descriptors and root
/// directory) before it goes on with other work and serves the medium once the reads finish.
/// Opening an image takes a millisecond or so; a disc with unreadable sectors (the drive
/// retrying) or an image on a stalled NFS server can take minutes, and must not hold up
/// the other media meanwhile.
pub const OPEN_WAIT: Duration = Duration::from_millis(500);

/// An image opened for publishing, and where to reopen it from.
type Opened = Result<(Arc<Image<Pooled>>, Option<Arc<PathSlot>>), String>;
/// Work for the opener thread.
type OpenJob = Box<dyn FnOnce() + Send>;

/// A publish whose image has not answered within [`OPEN_WAIT`].
struct Late {
    name: String,
    /// Where the image file is now (it may be renamed meanwhile).
    origin: PathBuf,
    label: Option<String>,
    opened: std_mpsc::Receiver<Opened>,
}

impl FuseExecutor {
    /// The budget comes from `ISOMGR_FD_BUDGET`, else from the open-file limit as it is now
    /// (after the daemon raised it).
    pub fn new(driver: FuseDriver) -> Self {
        let (budget, from) = budget_from_env_or_limit();
        tracing::info!(budget, from = %from, "image files kept open at most; more are reopened on demand");
        Self::with_budget(driver, budget)
    }

    pub fn with_budget(driver: FuseDriver, budget: usize) -> Self {
        FuseExecutor {
            driver,
            pool: FdPool::new(budget),
            paths: HashMap::new(),
            over_budget_logged: false,
            opener: None,
            late: HashMap::new(),
            late_done: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The descriptor pool's counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Runs one action; the outcome to feed back to the manager, if any. One log line per
    /// thing that happens to a medium.
    pub fn run(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Publish { name, medium } => self.publish(name, medium),
            Action::Unpublish { name, id } => {
                self.paths.remove(&id);
                if self.late.remove(&id).is_some() {
                    tracing::info!(name = %name, medium = %id, "gone while its image was still being read; not served");
                }
                if self.driver.remove(&name) {
                    tracing::info!(name = %name, medium = %id, "removed");
                }
                None
            }
            Action::SaveState => None,
            Action::Eject { device, name } => {
                let served_at = name.as_ref().map(|n| self.driver.root().join(n));
                eject(&device, served_at.as_deref());
                None
            }
        }
    }

    /// Reads the medium's image on the opener thread, waiting for it at most [`OPEN_WAIT`];
    /// the outcome, or `None` if the image has not answered yet (see [`FuseExecutor::late_done`]).
    fn publish(&mut self, name: String, mut medium: Medium) -> Option<Event> {
        let (tx, opened) = std_mpsc::channel();
        let late = Arc::new(AtomicBool::new(false));
        let job: OpenJob = {
            let (pool, late, wake) = (self.pool.clone(), late.clone(), self.late_done.clone());
            let (handle, origin, id) = (
                medium.handle.take(),
                medium.origin.clone(),
                medium.id.clone(),
            );
            Box::new(move || {
                let _ = tx.send(open_image(&pool, handle, &origin, &id));
                // Sent first: a publish marked late after this finds the outcome waiting.
                if late.load(Ordering::SeqCst) {
                    wake.notify_one();
                }
            })
        };
        if let Err(error) = self.start_opening(job) {
            return Some(self.outcome(
                name,
                medium.id,
                &medium.origin,
                medium.label.as_deref(),
                Err(error),
            ));
        }
        let result = match opened.recv_timeout(OPEN_WAIT) {
            Ok(r) => r,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                late.store(true, Ordering::SeqCst);
                match opened.try_recv() {
                    Ok(r) => r,
                    Err(_) => {
                        // The opener is busy with this image: the next publish starts another.
                        self.opener = None;
                        tracing::warn!(name = %name, origin = %medium.origin.display(), waited_ms = OPEN_WAIT.as_millis() as u64, "its image has not answered yet; served once it does, the other media meanwhile");
                        self.late.insert(
                            medium.id.clone(),
                            Late {
                                name,
                                origin: medium.origin.clone(),
                                label: medium.label.clone(),
                                opened,
                            },
                        );
                        return None;
                    }
                }
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                self.opener = None;
                Err("the thread reading the image ended without an answer".to_owned())
            }
        };
        Some(self.outcome(
            name,
            medium.id,
            &medium.origin,
            medium.label.as_deref(),
            result,
        ))
    }

    /// Hands `job` to the opener thread, starting one if there is none.
    fn start_opening(&mut self, job: OpenJob) -> Result<(), String> {
        let job = match &self.opener {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(std_mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = std_mpsc::channel::<OpenJob>();
        std::thread::Builder::new()
            .name("isomgr-open".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(|e| format!("starting a thread to read the image: {e}"))?;
        tx.send(job)
            .map_err(|_| "the thread reading the image ended".to_owned())?;
        self.opener = Some(tx);
        Ok(())
    }

    /// Serves an opened image under `name`, or reports why not; one log line either way.
    fn outcome(
        &mut self,
        name: String,
        id: MediumId,
        origin: &Path,
        label: Option<&str>,
        opened: Opened,
    ) -> Event {
        let served = opened.and_then(|(image, path)| {
            self.driver.add(&name, image).map_err(|e| e.to_string())?;
            if let Some(path) = path {
                path.set(origin);
                self.paths.insert(id.clone(), path);
            }
            Ok(())
        });
        match served {
            Ok(()) => {
                let stats = self.pool.stats();
                if stats.evictions > 0 && !self.over_budget_logged {
                    self.over_budget_logged = true;
                    tracing::info!(
                        budget = self.pool.budget(),
                        "more images than the descriptor budget: the least recently read are closed and reopened on demand"
                    );
                }
                tracing::info!(name = %name, origin = %origin.display(), label = label.unwrap_or(""), "mounted");
                Event::Published {
                    id,
                    name,
                    loop_device: None,
                }
            }
            Err(error) => {
                tracing::error!(origin = %origin.display(), %error, "not served");
                Event::Failed { id, name, error }
            }
        }
    }

    /// Woken (a permit is kept) when an image that had not answered within [`OPEN_WAIT`] has.
    pub fn late_done(&self) -> Arc<tokio::sync::Notify> {
        self.late_done.clone()
    }

    /// The outcomes of the late publishes whose images have answered.
    pub fn finish_late(&mut self) -> Vec<Event> {
        let answered: Vec<(MediumId, Opened)> = self
            .late
            .iter()
            .filter_map(|(id, l)| match l.opened.try_recv() {
                Ok(r) => Some((id.clone(), r)),
                Err(std_mpsc::TryRecvError::Empty) => None,
                Err(std_mpsc::TryRecvError::Disconnected) => Some((
                    id.clone(),
                    Err("the thread reading the image ended without an answer".to_owned()),
                )),
            })
            .collect();
        let mut events = Vec::with_capacity(answered.len());
        for (id, opened) in answered {
            let Some(late) = self.late.remove(&id) else {
                continue;
            };
            events.push(self.outcome(late.name, id, &late.origin, late.label.as_deref(), opened));
        }
        events
    }

    /// The image file of a served medium is now at `origin` (renamed): it reopens from there.
    pub fn moved(&mut self, id: &MediumId, origin: &Path) {
        if let Some(p) = self.paths.get(id) {
            p.set(origin);
        }
        if let Some(l) = self.late.get_mut(id) {
            l.origin = origin.to_owned();
        }
    }

    /// Unmounts the root (a normal stop).
    pub fn shutdown(self) {
        let stats = self.pool.stats();
        tracing::info!(
            budget = self.pool.budget(),
            open = stats.open,
            evictions = stats.evictions,
            reopens = stats.reopens,
            "image descriptors at stop"
        );
        let root = self.driver.root().to_path_buf();
        if let Err(e) = self.driver.unmount() {
            tracing::error!(root = %root.display(), error = %e, "unmounting");
        }
    }
}

/// What publishing reads of a medium, on the opener thread: the image's descriptors and root
/// directory, from the descriptor the source identified (`handle`) or from the file at
/// `origin`, which must still be the one identified as `id`.
fn open_image(pool: &Arc<FdPool>, handle: Option<Handle>, origin: &Path, id: &MediumId) -> Opened {
    let file = match handle {
        // The action held the only reference: serve that very descriptor (one per medium).
        Some(h) => match Arc::try_unwrap(h.0) {
            Ok(file) => file,
            Err(shared) => shared
                .try_clone()
                .map_err(|e| format!("duplicating the descriptor: {e}"))?,
        },
        // The source closed it (descriptors were short): the file at the path must still be
        // the one it identified.
        None => {
            let file = pool
                .open(origin)
                .map_err(|e| format!("opening {}: {e}", origin.display()))?;
            if let Some(want) = id.as_str().strip_prefix("file:") {
                use std::os::unix::fs::MetadataExt;
                let meta = file
                    .metadata()
                    .map_err(|e| format!("inspecting {}: {e}", origin.display()))?;
                if want != format!("{}:{}", meta.dev(), meta.ino()) {
                    return Err(format!(
                        "{} is no longer the file that was identified (replaced since)",
                        origin.display()
                    ));
                }
            }
            file
        }
    };
    let src = pool
        .adopt(file, origin)
        .map_err(|e| format!("inspecting {}: {e}", origin.display()))?;
    let path = src.path().cloned();
    let image = Image::open(src).map_err(|e| e.to_string())?;
    // Opening reads only the descriptors. A root directory that cannot be read would be
    // served as a directory that fails every listing: refuse it here, once, instead.
    image
        .read_dir(&image.root())
        .map_err(|e| format!("reading the root directory: {e}"))?;
    Ok((Arc::new(image), path))
}

/// Opens the tray of the drive at `device`, as the eject button asked. The medium is already
/// unpublished; processes still reading from it are named, since their reads fail once the
/// tray is open.
///
/// udev locks the door of every drive with a disc in (`cdrom_id --lock-media`), so that the
/// button reports an eject request instead of opening the tray; a bare CDROMEJECT is then
/// refused by the drive while the ioctl still returns 0. So the door is unlocked first, and
/// the drive's own state says whether the tray opened. (udev's rules eject on the request
/// too; whichever comes first, the tray opens once.)
fn eject(device: &Path, served_at: Option<&Path>) {
    let holders = holders(device, served_at);
    if !holders.is_empty() {
        tracing::warn!(device = %device.display(), holders = %holders.join(", "), "still in use after unpublishing");
    }
    let file = match std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(device)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(device = %device.display(), error = %e, "cannot open the drive to eject");
            return;
        }
    };
    if let Err(e) = crate::cdrom::unlock_door(&file) {
        tracing::debug!(device = %device.display(), error = %e, "CDROM_LOCKDOOR 0");
    }
    if let Err(e) = crate::cdrom::eject(&file) {
        if e.raw_os_error() == Some(libc::EBUSY) {
            tracing::warn!(device = %device.display(), holders = %holders.join(", "), "the drive is busy; the tray stays closed until these close (press eject again)");
        } else {
            tracing::warn!(device = %device.display(), error = %e, "eject failed (CDROMEJECT)");
        }
        return;
    }
    match crate::cdrom::tray_empty(&file) {
        Ok(true) => tracing::info!(device = %device.display(), "ejected"),
        Ok(false) => {
            tracing::warn!(device = %device.display(), "the drive kept its tray closed (another program may hold its door locked)")
        }
        Err(e) => {
            tracing::warn!(device = %device.display(), error = %e, "ejected, but the drive does not say whether its tray opened")
        }
    }
}

/// Processes (`comm[pid]`) other than isomgr reading from the medium in `device`: with a file
/// open on it (under `served_at`, or on the device itself, as a kernel mount's files still
/// are once it is detached) or the device open for reading data (not a status probe opened
/// with O_NONBLOCK, as udev's cdrom_id is). From /proc/*/fd; best effort (processes that come
/// and go, or hide their descriptors, are missed).
fn holders(device: &Path, served_at: Option<&Path>) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let rdev = std::fs::metadata(device)
        .ok()
        .filter(|m| m.file_type().is_block_device())
        .map(|m| m.rdev());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let me = std::process::id().to_string();
    for p in procs.flatten() {
        let pid = p.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|s| *s != me && s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                return false;
            };
            if target == device {
                return !opened_nonblocking(&p.path(), &fd.file_name());
            }
            served_at.is_some_and(|s| target.starts_with(s))
                || rdev.is_some_and(|r| std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == r))
        });
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push(format!("{}[{pid}]", comm.trim_end()));
        }
    }
    out
}

/// Whether descriptor `fd` of the process at `proc_dir` was opened with O_NONBLOCK
/// (`flags:` in /proc/PID/fdinfo/FD, octal).
fn opened_nonblocking(proc_dir: &Path, fd: &std::ffi::OsStr) -> bool {
    std::fs::read_to_string(proc_dir.join("fdinfo").join(fd))
        .ok()
        .and_then(|info| {
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            i64::from_str_radix(flags.trim(), 8).ok()
        })
        .is_some_and(|f| f & i64::from(libc::O_NONBLOCK) != 0)
}
