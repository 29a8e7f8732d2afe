//! The executor: carries out the manager's actions through a mount driver and reports each
//! outcome back as an event. It decides nothing about media or names; the only rollback here
//! is undoing the steps of one action that failed half-way (see [`kernel`]).

pub mod kernel;

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::event::{Event, Handle, Medium, MediumId};
use crate::fuse::reopen::{budget_from_env_or_limit, FdPool, PathSlot, PoolStats, Pooled};
use crate::fuse::FuseDriver;
use crate::iso9660::Image;
use crate::manager::Action;
use crate::sys::linux::LinuxSys;

use crate::offload::{self, Helper, Late, Ran};
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

    /// Woken when a publish that went on in the background (see [`offload`]) has an outcome
    /// for [`Executor::finish_late`].
    pub fn late_done(&self) -> Arc<tokio::sync::Notify> {
        match self {
            Executor::Fuse(e) => e.helper.wake(),
            Executor::Kernel(e) => e.late_done(),
        }
    }

    /// The outcomes of background publishes that have finished.
    pub fn finish_late(&mut self) -> Vec<Event> {
        match self {
            Executor::Fuse(e) => e.finish_late(),
            Executor::Kernel(e) => e.finish_late(),
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
    /// Where each served medium's image is (for the log), and for an image file that may be
    /// reopened, where to reopen it after a rename (images that hold their descriptor need no
    /// path).
    paths: HashMap<MediumId, (PathBuf, Option<Arc<PathSlot>>)>,
    /// The budget was hit (logged once).
    over_budget_logged: bool,
    /// Reads each image being published off the daemon thread (see [`offload`]).
    helper: Helper,
    /// Media whose image had not answered within [`offload::WAIT`]: served once it does.
    late: HashMap<MediumId, LateOpen>,
}

/// An image opened for publishing, and where to reopen it from.
type Opened = Result<(Arc<Image<Pooled>>, Option<Arc<PathSlot>>), String>;

/// A publish whose image had not answered within [`offload::WAIT`].
struct LateOpen {
    name: String,
    /// Where the image file is now (it may be renamed meanwhile).
    origin: PathBuf,
    label: Option<String>,
    opened: Late<Opened>,
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
            pool: FdPool::relieving(budget),
            paths: HashMap::new(),
            over_budget_logged: false,
            helper: Helper::default(),
            late: HashMap::new(),
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
                let origin = self.paths.remove(&id).map(|(origin, _)| origin);
                if let Some(late) = self.late.remove(&id) {
                    tracing::info!(name = %name, origin = %late.origin.display(), medium = %id, "gone while its image was still being read; not served");
                }
                if self.driver.remove(&name) {
                    let origin = origin.unwrap_or_default();
                    tracing::info!(name = %name, origin = %origin.display(), medium = %id, "removed");
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

    /// Reads the medium's image off the daemon thread, waiting for it at most [`offload::WAIT`];
    /// the outcome, or `None` if the image has not answered yet (see [`Executor::late_done`]).
    fn publish(&mut self, name: String, mut medium: Medium) -> Option<Event> {
        let (pool, handle, origin, id) = (
            self.pool.clone(),
            medium.handle.take(),
            medium.origin.clone(),
            medium.id.clone(),
        );
        // The source has just read the descriptors: usually still in the page cache, and then
        // the image is opened here and now.
        let cached = handle.as_ref().and_then(|h| {
            offload::from_cache(&h.0, |r| {
                read_image(Image::open(r)).map(|i| i.with_source(()))
            })
        });
        let ran = match cached {
            Some(image) => Ok(Ran::Done(image.and_then(|image| {
                serve_image(
                    &pool,
                    handle,
                    &origin,
                    &id,
                    |src| Ok(image.with_source(src)),
                )
            }))),
            None => self.helper.run(move || {
                serve_image(&pool, handle, &origin, &id, |src| {
                    read_image(Image::open(src))
                })
            }),
        };
        let opened = match ran {
            Ok(Ran::Done(opened)) => opened,
            Ok(Ran::Late(opened)) => {
                tracing::info!(name = %name, origin = %medium.origin.display(), waited_ms = offload::WAIT.as_millis() as u64, "its image has not answered yet; served once it does, the other media meanwhile");
                self.late.insert(
                    medium.id,
                    LateOpen {
                        name,
                        origin: medium.origin,
                        label: medium.label,
                        opened,
                    },
                );
                return None;
            }
            Err(e) => Err(format!("reading the image: {e}")),
        };
        Some(self.outcome(
            name,
            medium.id,
            &medium.origin,
            medium.label.as_deref(),
            opened,
        ))
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
            if let Some(path) = &path {
                path.set(origin);
            }
            self.paths.insert(id.clone(), (origin.to_owned(), path));
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

    /// The outcomes of the late publishes whose images have answered.
    pub fn finish_late(&mut self) -> Vec<Event> {
        offload::take_answered(&mut self.late, |l| &l.opened)
            .into_iter()
            .map(|(id, late, opened)| {
                let opened = opened.and_then(|o| o);
                self.outcome(late.name, id, &late.origin, late.label.as_deref(), opened)
            })
            .collect()
    }

    /// The image file of a served medium is now at `origin` (renamed): it reopens from there.
    pub fn moved(&mut self, id: &MediumId, origin: &Path) {
        if let Some((was, slot)) = self.paths.get_mut(id) {
            origin.clone_into(was);
            if let Some(p) = slot {
                p.set(origin);
            }
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

/// What publishing reads of a medium: the image's descriptors and root directory (`open`,
/// unless they were read already), from the descriptor the source identified (`handle`) or
/// from the file at `origin`, which must still be the one identified as `id`.
fn serve_image(
    pool: &Arc<FdPool>,
    handle: Option<Handle>,
    origin: &Path,
    id: &MediumId,
    open: impl FnOnce(Pooled) -> Result<Image<Pooled>, String>,
) -> Opened {
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
    let image = open(src)?;
    if let Some(w) = image.udf_fallback() {
        tracing::warn!(origin = %origin.display(), "{w}");
    }
    Ok((Arc::new(image), path))
}

/// An image whose root directory can be read: opening reads only the descriptors, and a root
/// that cannot be read would be served as a directory that fails every listing; refused here,
/// once, instead.
fn read_image<R: crate::iso9660::source::ReadAt>(
    image: Result<Image<R>, crate::iso9660::Error>,
) -> Result<Image<R>, String> {
    let image = image.map_err(|e| e.to_string())?;
    image
        .read_dir(&image.root())
        .map_err(|e| format!("reading the root directory: {e}"))?;
    Ok(image)
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
