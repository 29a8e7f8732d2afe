//! The dirs source: image files in watched directory trees (inotify through `notify`).
//!
//! A file counts once it is complete: taken at close-after-write, when moved in, or found by a
//! scan; an image shorter than the volume it declares waits. A rename inside the trees keeps
//! the medium (identity is device and inode); an atomic replace is a new medium. The source
//! only translates: it opens and identifies files, and emits [`Event`]s. It never writes into
//! a watched directory.
//!
//! Each directory has its own patterns and poll mode. A directory on a network or FUSE file
//! system ([`super::fstype`]) gets no inotify event for changes made elsewhere: it is polled
//! instead (rescanned every `poll_interval`, compared with what is known, the same events
//! emitted). A file found new or changed by a poll is taken only once two polls in a row see
//! the same size and mtime (a file still growing is not served). Local directories keep pure
//! inotify: no timer is armed for them. A network or FUSE file system mounted inside a
//! directory watched with inotify in auto mode (found in the mount table, at the start or
//! later) is polled as a directory of its own, with its directory's patterns.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inotify::{Change, Inotify};
use regex::Regex;
use tokio::sync::mpsc;

use crate::event::{Event, Handle, Medium, MediumId, SourceKind};
use crate::iso9660::{probe, Error as IsoError, VolumeInfo};
use crate::offload::{self, Helper, Late, Ran};

use super::mounts;

/// How long a file that left its place may take to show up elsewhere in the trees before it
/// counts as gone (the two halves of a rename arrive together; this is slack).
const MOVE_GRACE: Duration = Duration::from_millis(25);

/// First wait before images that could not be opened for lack of descriptors (EMFILE,
/// ENFILE) are looked at again; it doubles up to [`FD_RETRY_MAX`] while descriptors stay short.
const FD_RETRY_FIRST: Duration = Duration::from_millis(100);
const FD_RETRY_MAX: Duration = Duration::from_secs(5);

/// The default time between two polls of a polled directory.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Whether a directory is rescanned on a timer instead of watched with inotify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Poll where the file system is remote or FUSE (statfs at start), inotify elsewhere.
    #[default]
    Auto,
    /// Always poll (no inotify for this directory).
    Always,
    /// Never poll: inotify only, even on a network share.
    Never,
}

impl PollMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PollMode::Auto => "auto",
            PollMode::Always => "always",
            PollMode::Never => "never",
        }
    }
}

/// One watched directory tree and what is taken from it.
#[derive(Clone, Debug)]
pub struct DirSpec {
    pub path: PathBuf,
    /// File names taken (default: ending in `.iso`, any case).
    pub include: Regex,
    /// File names refused even when included.
    pub exclude: Option<Regex>,
    /// Take symlinks to regular files (the default); when false they are refused (O_NOFOLLOW).
    pub follow_symlinks: bool,
    pub poll: PollMode,
}

impl DirSpec {
    /// A directory with the default patterns, following symlinks, poll mode auto.
    pub fn new(path: PathBuf) -> DirSpec {
        DirSpec {
            path,
            include: DirsConfig::default_include(),
            exclude: None,
            follow_symlinks: true,
            poll: PollMode::Auto,
        }
    }
}

/// What the dirs source watches and takes.
#[derive(Clone, Debug)]
pub struct DirsConfig {
    pub dirs: Vec<DirSpec>,
    /// The watcher's root (symlinks resolved): a file inside it, reached through a symlink in
    /// a watched directory, is a file of a medium isomgr serves, and is not taken.
    pub root: PathBuf,
    /// Time between two rescans of a polled directory.
    pub poll_interval: Duration,
}

impl DirsConfig {
    /// The default include pattern: names ending in `.iso`, any case.
    pub fn default_include() -> Regex {
        Regex::new(r"(?i)\.iso$").expect("a constant, valid pattern")
    }
}

/// How a directory will be watched, and why (one log line at start, `--check-config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollDecision {
    pub poll: bool,
    pub why: String,
}

/// Decides whether `spec` is polled: by its mode, and in auto mode by the file system type of
/// the directory (or of its nearest existing ancestor).
pub fn poll_decision(spec: &DirSpec, interval: Duration) -> PollDecision {
    let every = format!("polling every {} s", secs(interval));
    match spec.poll {
        PollMode::Always => PollDecision {
            poll: true,
            why: format!("poll = always: {every}, no inotify"),
        },
        PollMode::Never => PollDecision {
            poll: false,
            why: "poll = never: inotify".into(),
        },
        PollMode::Auto => {
            let probe_at = spec.path.ancestors().find(|p| p.exists());
            match probe_at.map(super::fstype::statfs_type) {
                Some(Ok(t)) => match super::fstype::remote_fs(t) {
                    Some(name) => PollDecision {
                        poll: true,
                        why: format!("{name} ({t:#x}): no inotify for remote changes; {every}"),
                    },
                    None => PollDecision {
                        poll: false,
                        why: format!("{} ({t:#x}): inotify", super::fstype::fs_name(t)),
                    },
                },
                Some(Err(e)) => PollDecision {
                    poll: false,
                    why: format!("statfs failed ({e}): inotify"),
                },
                None => PollDecision {
                    poll: false,
                    why: "inotify".into(),
                },
            }
        }
    }
}

/// A watched directory as looked at when the watcher starts, or again after a mount changed
/// what its path leads to.
struct DirLook {
    /// It did not exist and was made.
    created: bool,
    /// It does not exist (looked at again without making it).
    missing: bool,
    decision: PollDecision,
    /// On a network or FUSE file system.
    remote: bool,
    /// Its path with symlinks resolved.
    real: Option<PathBuf>,
    /// The device of the file system it is on.
    dev: Option<u64>,
}

/// Makes the watched directory `spec` if it does not exist (when `create`), and decides how it
/// is watched.
fn look_at_dir(spec: &DirSpec, interval: Duration, create: bool) -> anyhow::Result<DirLook> {
    use anyhow::Context;
    let dir = &spec.path;
    let absent = !dir.exists();
    if absent && create {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the watched directory {}", dir.display()))?;
    }
    let decision = poll_decision(spec, interval);
    // (A polled one is treated as remote anyway; auto mode asked statfs already.)
    let remote = !decision.poll
        && spec.poll != PollMode::Auto
        && super::fstype::statfs_type(dir).is_ok_and(|t| super::fstype::remote_fs(t).is_some());
    Ok(DirLook {
        created: absent && create,
        missing: absent && !create,
        decision,
        remote,
        real: std::fs::canonicalize(dir).ok(),
        dev: std::fs::metadata(dir).ok().map(|m| m.dev()),
    })
}

/// The network and FUSE file systems mounted inside watched directory `i` of `dirs` (known
/// also by `real`, its path with symlinks resolved) in `table` that are polled on their own
/// where `i` is watched with inotify: mount point and type. None unless its poll mode is
/// auto; none inside a deeper directory of `dirs` (that one decides).
pub fn shares_inside(
    dirs: &[DirSpec],
    i: usize,
    real: Option<&Path>,
    table: &[crate::sys::MountEntry],
) -> Vec<(PathBuf, String)> {
    if dirs[i].poll != PollMode::Auto {
        return Vec::new();
    }
    let paths: Vec<&Path> = std::iter::once(dirs[i].path.as_path())
        .chain(real)
        .collect();
    let mut found = mounts::remote_inside(table, &paths);
    found.retain(|(at, _)| spec_index(dirs, at) == Some(i));
    found
}

/// Seconds as a person writes them: `10`, `0.2`.
pub fn secs(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Whether the dirs source takes a file with this name: not hidden, not partial, included and
/// not excluded.
pub fn wanted(name: &OsStr, cfg: &DirSpec) -> bool {
    let Some(name) = name.to_str() else {
        // Non-UTF-8 names can still match a byte-agnostic suffix test.
        let lossy = name.to_string_lossy();
        return !is_hidden_or_partial(&lossy) && cfg.include.is_match(&lossy);
    };
    !is_hidden_or_partial(name)
        && cfg.include.is_match(name)
        && !cfg.exclude.as_ref().is_some_and(|x| x.is_match(name))
}

fn is_hidden_or_partial(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.ends_with('~')
}

/// Requests to the source thread.
enum Input {
    Inotify(Change),
    Rescan,
    Stop,
    /// A probe that had not answered within [`offload::WAIT`] has.
    Probed,
    /// The mount table changed.
    Mounts,
}

/// A running dirs source.
pub struct DirsSource {
    input: std_mpsc::Sender<Input>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DirsSource {
    /// Starts watching: a full scan first (everything already present is taken, then
    /// `ScanDone`), then events as they come.
    pub fn spawn(cfg: DirsConfig, out: mpsc::Sender<Event>) -> anyhow::Result<DirsSource> {
        use anyhow::Context;
        let (tx, rx) = std_mpsc::channel::<Input>();
        let inotify = {
            let tx = tx.clone();
            Inotify::start(move |c| {
                let _ = tx.send(Input::Inotify(c));
            })
            .context("starting inotify")?
        };
        let polled = vec![false; cfg.dirs.len()];
        let user_dirs = cfg.dirs.len();
        let root_dev = mount_dev(&cfg.root);
        // The mount table is watched before it is read, and read before the directories are
        // looked at: a mount made in between is seen as a change and the directory is
        // watched again.
        let mounts_pending = Arc::new(AtomicBool::new(false));
        let mount_watch = mounts::MountWatch::start({
            let (tx, pending) = (tx.clone(), mounts_pending.clone());
            move || {
                if !pending.swap(true, Ordering::SeqCst) {
                    let _ = tx.send(Input::Mounts);
                }
            }
        })
        .inspect_err(|e| tracing::warn!(error = %e, "watching /proc/self/mountinfo; a file system mounted on a watched directory later is found by the next rescan (SIGHUP)"))
        .ok();
        let table = mounts::read().unwrap_or_default();
        let served_devs = served_devs(&table, &cfg.root, root_dev);
        let mut state = State {
            root_dev,
            served_devs,
            input: tx.clone(),
            real: vec![None; cfg.dirs.len()],
            devs: vec![None; cfg.dirs.len()],
            bearing: Vec::new(),
            missing: vec![false; user_dirs],
            watched: std::collections::BTreeMap::new(),
            user_dirs,
            mounts_pending,
            _mount_watch: mount_watch,
            cfg,
            out,
            inotify,
            tracked: TrackedFiles::default(),
            pending_gone: Vec::new(),
            waiting_logged: HashSet::new(),
            may_hang: polled.clone(),
            polled,
            next_poll: None,
            observed: HashMap::new(),
            poll_errors: HashSet::new(),
            fd_short: FdShort::default(),
            parents: None,
            helper: Helper::calling({
                let tx = tx.clone();
                move || {
                    let _ = tx.send(Input::Probed);
                }
            }),
            probing: HashMap::new(),
            listing: HashMap::new(),
            answered: HashMap::new(),
            opening: HashMap::new(),
            opened: HashMap::new(),
        };
        // Each directory is looked at, then the shares inside are known (they are polled), then
        // the rest of each tree is watched with inotify.
        for i in 0..state.user_dirs {
            state.look_again(i, true)?;
        }
        state.bearing = state.bearings(&table);
        state.poll_remote_inside(&table);
        for i in 0..state.user_dirs {
            state.place_watch(i)?;
        }
        state.watch_parents();
        let thread = std::thread::Builder::new()
            .name("isomgr-dirs".into())
            .spawn(move || state.run(rx))
            .context("starting the dirs source thread")?;
        Ok(DirsSource {
            input: tx,
            thread: Some(thread),
        })
    }
}

impl super::Source for DirsSource {
    fn rescan(&self) {
        let _ = self.input.send(Input::Rescan);
    }

    fn stop(mut self: Box<Self>) {
        let _ = self.input.send(Input::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The files the source knows, by path, with an index from identity to the paths where the
/// medium is present (hard links, a rename seen before the old path's event).
#[derive(Default)]
struct TrackedFiles {
    /// Paths are shared with `present` (one allocation per path).
    by_path: HashMap<Arc<Path>, Tracked>,
    /// Usually one path per medium; more for hard links.
    present: HashMap<MediumId, Vec<Arc<Path>>>,
}

impl TrackedFiles {
    fn insert(&mut self, path: PathBuf, t: Tracked) {
        self.remove(&path);
        let path: Arc<Path> = path.into();
        if t.present {
            self.present
                .entry(t.id.clone())
                .or_default()
                .push(Arc::clone(&path));
        }
        self.by_path.insert(path, t);
    }

    fn remove(&mut self, path: &Path) -> Option<Tracked> {
        let t = self.by_path.remove(path)?;
        if let Some(paths) = self.present.get_mut(&t.id) {
            paths.retain(|p| &**p != path);
            if paths.is_empty() {
                self.present.remove(&t.id);
            }
        }
        Some(t)
    }

    fn get(&self, path: &Path) -> Option<&Tracked> {
        self.by_path.get(path)
    }

    fn contains_key(&self, path: &Path) -> bool {
        self.by_path.contains_key(path)
    }

    fn keys(&self) -> impl Iterator<Item = &Path> {
        self.by_path.keys().map(|p| &**p)
    }

    fn values(&self) -> impl Iterator<Item = &Tracked> {
        self.by_path.values()
    }

    /// A path where this medium is present, if any.
    fn present_at(&self, id: &MediumId) -> Option<PathBuf> {
        self.present
            .get(id)
            .and_then(|paths| paths.iter().min().map(|p| p.to_path_buf()))
    }
}

#[derive(Clone, Debug)]
struct Tracked {
    id: MediumId,
    /// An `Appeared` was emitted for it (it is complete and identified).
    present: bool,
    /// Size and times when it was identified (present only).
    stamp: Option<Stamp>,
}

/// What changes when a file is written: its size, mtime and ctime (nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Why a path is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Scan,
    Written,
    Arrived,
}

/// A path in a polled directory whose opening had not answered within [`offload::WAIT`].
struct Opening {
    reason: Reason,
    answer: Late<Opened>,
}

/// An image whose volume descriptors had not answered within [`offload::WAIT`].
struct Probing {
    id: MediumId,
    reason: Reason,
    answer: Late<Result<VolumeInfo, IsoError>>,
}

struct State {
    /// Reads each image's volume descriptors off this thread, so that one whose reads hang
    /// (a stalled NFS server, a network file system fetching it) holds up no other.
    helper: Helper,
    /// Images whose descriptors have not answered yet, by path.
    probing: HashMap<PathBuf, Probing>,
    /// Polled directories (indexes into `cfg.dirs`) whose listing has not answered yet.
    listing: HashMap<usize, PendingListing>,
    /// Paths in polled directories whose opening has not answered yet.
    opening: HashMap<PathBuf, Opening>,
    /// A late opening's answer, for the look at its path it triggers.
    opened: HashMap<PathBuf, Opened>,
    /// A late probe's answer, for the look at its path it triggers.
    answered: HashMap<PathBuf, (MediumId, Result<VolumeInfo, IsoError>)>,
    cfg: DirsConfig,
    /// The root's device where the root is a mount of its own (the FUSE driver's): a file on
    /// it is inside a medium isomgr serves, whatever path reaches it (a bind mount).
    root_dev: Option<u64>,
    /// The devices of the mounts at and below the root (the FUSE root, or the kernel driver's
    /// media), as of the last change of the mount table: a file on one of them is inside a
    /// medium isomgr serves, whatever path reaches it (a bind mount of the root).
    served_devs: HashSet<u64>,
    out: mpsc::Sender<Event>,
    inotify: Inotify,
    /// The watched directories' parents, for a directory made again.
    parents: Option<super::parents::ParentWatch>,
    /// This thread's own input (for the parents' watch, restarted after a mount).
    input: std_mpsc::Sender<Input>,
    /// The mount table's watch, held for as long as the source runs (stopped on drop).
    _mount_watch: Option<mounts::MountWatch>,
    /// Set while an [`Input::Mounts`] is queued: a burst of mounts (the kernel driver's)
    /// reads the table once.
    mounts_pending: Arc<AtomicBool>,
    /// Per directory given to watch (the first `user_dirs` entries of `cfg.dirs`): the mounts
    /// that bore on it when it was last watched.
    bearing: Vec<mounts::Bearing>,
    /// How many of `cfg.dirs` were given to watch. The entries after them are network and FUSE
    /// file systems mounted inside those (found in the mount table), polled as directories of
    /// their own: inotify misses what other machines change there.
    user_dirs: usize,
    /// Per directory given to watch: not there when last looked at (nothing to watch).
    missing: Vec<bool>,
    /// The directories watched with inotify (one watch each, see [`State::watch_tree`]), with
    /// the directory each path led to then.
    watched: std::collections::BTreeMap<PathBuf, DirIdentity>,
    /// Per entry of `cfg.dirs`: its path with symlinks resolved, when it was last looked at.
    real: Vec<Option<PathBuf>>,
    /// Per entry of `cfg.dirs`: the device of its file system, when it was last looked at.
    devs: Vec<Option<u64>>,
    tracked: TrackedFiles,
    /// Files that left their path, and when; gone unless they show up elsewhere within
    /// [`MOVE_GRACE`].
    pending_gone: Vec<(PathBuf, Tracked, Instant)>,
    waiting_logged: HashSet<PathBuf>,
    /// Per entry of `cfg.dirs`: rescanned on a timer instead of watched with inotify.
    polled: Vec<bool>,
    /// Per entry of `cfg.dirs`: polled, or on a network or FUSE file system (whose server may
    /// stop answering): its listing by a scan and the opening of its images run off this
    /// thread.
    may_hang: Vec<bool>,
    /// When polled directories are rescanned next; `None` when none is polled (no timer).
    next_poll: Option<Instant>,
    /// Files in polled directories that are new or changed since they were last taken, as the
    /// last poll saw them; taken when the next poll sees them unchanged.
    observed: HashMap<PathBuf, Observed>,
    /// Polled directories whose listing failed (logged once until it works again).
    poll_errors: HashSet<PathBuf>,
    /// Images and directories that could not be opened for lack of descriptors.
    fd_short: FdShort,
}

/// Paths (image files, or directories a scan could not list) that could not be opened for
/// lack of descriptors, looked at again with backoff until they can. Logged once per shortage.
#[derive(Default)]
struct FdShort {
    waiting: HashMap<PathBuf, Reason>,
    /// Directories a full scan could not list: what is known below them is kept.
    unlisted: Vec<PathBuf>,
    retry_at: Option<Instant>,
    backoff: Duration,
    logged: bool,
}

/// Whether the descriptor of an identified image travels with its event (the driver then
/// serves that very descriptor) or is closed (the driver reopens the file by path and checks
/// its identity). Events wait in a queue: with descriptors short, handles held there would
/// starve everything else. The kernel gives the lowest free number, so a descriptor numbered
/// `n` means at least `n` are open: kept only below the open-file limit less 128 (or half).
fn keep_handle(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    use std::sync::OnceLock;
    static CEILING: OnceLock<u64> = OnceLock::new();
    let ceiling = *CEILING.get_or_init(|| {
        let soft = crate::sys::open_file_limit();
        soft.saturating_sub(128).max(soft / 2)
    });
    u64::try_from(file.as_raw_fd()).is_ok_and(|fd| fd < ceiling)
}

/// The identity of the image file with this device and inode.
fn file_id(dev: u64, ino: u64) -> MediumId {
    MediumId(format!("file:{dev}:{ino}").into())
}

/// Which directory a path leads to: device, inode and birth time (an inode number freed by a
/// directory removed is given at once to the next one made); zeros where it cannot be looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirIdentity(u64, u64, Option<std::time::SystemTime>);

impl DirIdentity {
    fn of(d: &Path) -> DirIdentity {
        std::fs::symlink_metadata(d).map_or(DirIdentity(0, 0, None), |m| {
            DirIdentity(m.dev(), m.ino(), m.created().ok())
        })
    }
}

/// A directory that could not be watched with inotify.
struct WatchFailed {
    error: std::io::Error,
    /// inotify's watch limit is reached.
    is_limit: bool,
}

/// A file as one poll saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Observed {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    /// Looked at (identified) since it last changed.
    checked: bool,
}

impl State {
    /// Decides how watched directory `i` is watched (made first if missing, when `create`):
    /// polled or not, and whether looking at it may hang. [`State::place_watch`] then watches
    /// it with inotify unless it is polled.
    fn look_again(&mut self, i: usize, create: bool) -> anyhow::Result<()> {
        let spec = self.cfg.dirs[i].clone();
        let dir = spec.path.clone();
        let interval = self.cfg.poll_interval;
        // Off this thread: a network file system whose server is down at start must hold
        // up neither the start nor the other directories.
        let look = match self
            .helper
            .run(move || look_at_dir(&spec, interval, create))
        {
            Ok(Ran::Done(look)) => look?,
            Ok(Ran::Late(_)) => {
                tracing::warn!(dir = %dir.display(), waited_ms = offload::WAIT.as_millis() as u64, "the watched directory does not answer (a network file system whose server is down?): polled until it does, whatever its poll mode");
                self.polled[i] = true;
                self.may_hang[i] = true;
                self.real[i] = None;
                self.devs[i] = None;
                self.missing[i] = false;
                return Ok(());
            }
            Err(_) => look_at_dir(&self.cfg.dirs[i], interval, create)?,
        };
        if look.created {
            tracing::info!(dir = %dir.display(), "created the watched directory");
        }
        self.real[i] = look.real;
        self.devs[i] = look.dev;
        self.missing[i] = look.missing;
        if look.missing {
            tracing::warn!(dir = %dir.display(), "the watched directory is not there: watched again once a mount or its parent brings it back");
            self.polled[i] = false;
            self.may_hang[i] = false;
            return Ok(());
        }
        tracing::info!("{}: {}", dir.display(), look.decision.why);
        self.polled[i] = look.decision.poll;
        self.may_hang[i] = look.decision.poll || look.remote;
        Ok(())
    }

    /// Watches watched directory `i` with inotify, where it is looked at that way and there.
    fn place_watch(&mut self, i: usize) -> anyhow::Result<()> {
        use anyhow::Context;
        if self.missing[i] || self.polled[i] {
            return Ok(());
        }
        let dir = self.cfg.dirs[i].path.clone();
        self.watch_tree(&dir)
            .with_context(|| format!("watching {} (inotify)", dir.display()))
    }

    /// Watches `top` and every directory below it with inotify, one watch each, but not below
    /// a symlink (a scan does not follow them) nor below another watched directory (a share
    /// mounted inside, polled; a nested one, watched on its own): a share whose server is down
    /// is never walked into. Each directory is watched before it is listed, so one made
    /// meanwhile is found. Only the failure to watch `top` itself is an error; a directory
    /// below that goes meanwhile is skipped, and once inotify's watch limit is reached the
    /// rest is left to rescans (logged).
    fn watch_tree(&mut self, top: &Path) -> std::io::Result<()> {
        let mut stack = vec![top.to_path_buf()];
        while let Some(d) = stack.pop() {
            match self.watch_one(&d) {
                Ok(()) => {}
                Err(e) if d == top => return Err(e.error),
                Err(e) if e.is_limit => return Ok(()),
                Err(_) => continue,
            }
            let Ok(rd) = crate::sys::relieved(|| std::fs::read_dir(&d)) else {
                continue;
            };
            for ent in rd.flatten() {
                let path = ent.path();
                if ent.file_type().is_ok_and(|t| t.is_dir()) && !self.is_other_root(&path, top) {
                    stack.push(path);
                }
            }
        }
        Ok(())
    }

    /// Watches directory `d` (not below it) with inotify. Failures are logged: at debug level
    /// (gone meanwhile), or as a warning when inotify's watch limit is reached.
    fn watch_one(&mut self, d: &Path) -> Result<(), WatchFailed> {
        // (Looked at first: a directory that replaces it meanwhile is watched again by a rescan.)
        let was = DirIdentity::of(d);
        // A directory named by the user may be a symlink (followed); below it, symlinked
        // directories are not followed, as a scan does not follow them (`/usr`: 15,000
        // watches, and images there that no scan finds).
        let top = self.cfg.dirs[..self.user_dirs].iter().any(|s| s.path == d);
        match self.inotify.watch(d, top) {
            Ok(()) => {
                self.watched.insert(d.to_path_buf(), was);
                Ok(())
            }
            Err(error) => {
                let is_limit = error.raw_os_error() == Some(libc::ENOSPC);
                if is_limit {
                    tracing::warn!(dir = %d.display(), "inotify's watch limit is reached (sysctl fs.inotify.max_user_watches): this directory and those below it are not watched; changes there are found by the next rescan (SIGHUP)");
                } else {
                    tracing::debug!(dir = %d.display(), error = %error, "not watched (gone meanwhile?)");
                }
                Err(WatchFailed { error, is_limit })
            }
        }
    }

    /// Drops the inotify watches of watched directory `i`'s tree (not those of a directory
    /// nested in it, watched on its own).
    fn unwatch_tree(&mut self, i: usize) {
        let mine: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|p| spec_index(&self.cfg.dirs[..self.user_dirs], p) == Some(i))
            .cloned()
            .collect();
        for p in mine {
            self.inotify.unwatch(&p);
            self.watched.remove(&p);
        }
    }

    /// The mounts bearing on each watched directory now (see [`mounts::bearing_on`]).
    fn bearings(&self, table: &[crate::sys::MountEntry]) -> Vec<mounts::Bearing> {
        self.cfg.dirs[..self.user_dirs]
            .iter()
            .zip(&self.real)
            .map(|(d, real)| {
                let paths: Vec<&Path> = std::iter::once(d.path.as_path())
                    .chain(real.as_deref())
                    .collect();
                mounts::bearing_on(table, &paths)
            })
            .collect()
    }

    /// The mount table changed: each watched directory on which a file system was mounted or
    /// unmounted (at it, above it or inside it) is another tree than the one watched. It is
    /// looked at and watched again, and everything is scanned: the images of the old tree are
    /// gone, the new tree's are taken.
    fn mounts_changed(&mut self) {
        self.mounts_pending.store(false, Ordering::SeqCst);
        let table = match mounts::read() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading /proc/self/mountinfo; mounts on the watched directories are not followed");
                return;
            }
        };
        self.served_devs = served_devs(&table, &self.cfg.root, self.root_dev);
        let now = self.bearings(&table);
        let mut changed = Vec::new();
        for (i, now) in now.iter().enumerate() {
            if *now == self.bearing[i] {
                continue;
            }
            let dir = self.cfg.dirs[i].path.clone();
            let (mounted, unmounted) = mounts::difference(&self.bearing[i], now);
            let list = |v: Vec<PathBuf>| {
                v.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            tracing::info!(dir = %dir.display(), mounted = %list(mounted), unmounted = %list(unmounted), "a file system was mounted or unmounted on the watched directory: watching it again and rescanning");
            self.unwatch_tree(i);
            let was_hanging = self.may_hang[i];
            if let Err(e) = self.look_again(i, false) {
                tracing::warn!(dir = %dir.display(), error = format!("{e:#}"), "cannot look at the watched directory again; found by the next rescan (SIGHUP)");
            }
            changed.push((i, was_hanging));
        }
        if changed.is_empty() {
            return;
        }
        // A symlink's target may have moved with the mount.
        self.bearing = self.bearings(&table);
        self.poll_remote_inside(&table);
        for &(i, _) in &changed {
            if let Err(e) = self.place_watch(i) {
                let dir = self.cfg.dirs[i].path.display();
                tracing::warn!(%dir, error = format!("{e:#}"), "cannot watch the watched directory again; found by the next rescan (SIGHUP)");
            }
        }
        for (i, was_hanging) in changed {
            // (Where a stat may hang, the rescan finds them gone instead.)
            if !was_hanging && !self.may_hang[i] {
                self.drop_stale(i);
            }
        }
        if self.polled.contains(&true) && self.next_poll.is_none() {
            self.next_poll = Some(Instant::now() + self.cfg.poll_interval);
        }
        self.watch_parents();
        self.full_scan();
    }

    /// Polls, as directories of their own, the network and FUSE file systems mounted inside
    /// the directories watched with inotify in auto poll mode (entries of `cfg.dirs` after
    /// `user_dirs`, with their parent's patterns); the entries of those no longer mounted
    /// there go. One log line per share found or gone.
    fn poll_remote_inside(&mut self, table: &[crate::sys::MountEntry]) {
        let user = self.user_dirs;
        let mut want: Vec<(usize, PathBuf, String)> = Vec::new();
        for i in 0..user {
            if self.polled[i] {
                continue;
            }
            let dirs = &self.cfg.dirs[..user];
            for (at, fs) in shares_inside(dirs, i, self.real[i].as_deref(), table) {
                want.push((i, at, fs));
            }
        }
        let had: Vec<PathBuf> = self.cfg.dirs[user..]
            .iter()
            .map(|d| d.path.clone())
            .collect();
        if !had.iter().eq(want.iter().map(|w| &w.1)) {
            self.rebuild_remote_inside(&had, want);
        }
        // What a poll saw below a directory watched with inotify now is of no use.
        let (dirs, polled) = (&self.cfg.dirs, &self.polled);
        self.observed
            .retain(|p, _| spec_index(dirs, p).is_some_and(|i| polled[i]));
    }

    /// Replaces the entries after `user_dirs` (`had`, their paths) with `want` (parent index,
    /// mount point, type).
    fn rebuild_remote_inside(&mut self, had: &[PathBuf], want: Vec<(usize, PathBuf, String)>) {
        let user = self.user_dirs;
        for gone in had.iter().filter(|p| !want.iter().any(|w| w.1 == **p)) {
            tracing::info!(dir = %gone.display(), "the network or FUSE file system mounted inside a watched directory is gone: no longer polled on its own");
        }
        self.cfg.dirs.truncate(user);
        self.polled.truncate(user);
        self.may_hang.truncate(user);
        self.real.truncate(user);
        self.devs.truncate(user);
        self.listing.retain(|i, _| *i < user);
        let every = secs(self.cfg.poll_interval);
        for (i, at, fs) in want {
            if !had.contains(&at) {
                tracing::info!(dir = %at.display(), inside = %self.cfg.dirs[i].path.display(), fs = %fs, "a network or FUSE file system is mounted inside the watched directory: no inotify for remote changes; polling it every {every} s");
            }
            let spec = DirSpec {
                path: at,
                poll: PollMode::Always,
                ..self.cfg.dirs[i].clone()
            };
            self.cfg.dirs.push(spec);
            self.polled.push(true);
            self.may_hang.push(true);
            self.real.push(None);
            self.devs.push(None);
        }
    }

    /// Every image tracked below watched directory `i` whose path no longer leads to it (a
    /// file system was mounted over it, or unmounted from under it) is gone, before the rescan
    /// takes what the paths lead to now: the names the old tree's media free are there for
    /// the new tree's.
    fn drop_stale(&mut self, i: usize) {
        let stale: Vec<PathBuf> = self
            .tracked
            .by_path
            .iter()
            .filter(|(p, _)| self.spec_index(p) == Some(i))
            .filter(|(p, t)| {
                std::fs::metadata(p).map_or(true, |m| file_id(m.dev(), m.ino()) != t.id)
            })
            .map(|(p, _)| p.to_path_buf())
            .collect();
        for p in stale {
            self.left(&p);
        }
        self.finalize_gone(Duration::ZERO);
    }

    /// Watches the parents of the directories watched with inotify, to notice one deleted and
    /// made again (the polled ones are noticed by their next poll). Replaces the previous
    /// parents' watch: after a mount, a parent's path may lead to another directory.
    fn watch_parents(&mut self) {
        let watched: Vec<PathBuf> = self
            .cfg
            .dirs
            .iter()
            .zip(&self.polled)
            .filter(|(_, polled)| !**polled)
            .map(|(d, _)| d.path.clone())
            .collect();
        self.parents = None;
        let back_tx = self.input.clone();
        match super::parents::ParentWatch::start(&watched, move |dir| {
            let _ = back_tx.send(Input::Inotify(Change::Arrived {
                path: dir,
                dir: true,
            }));
        }) {
            Ok(w) => self.parents = Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "watching the watched directories' parents (inotify); a directory made again is found by the next rescan (SIGHUP)")
            }
        }
    }

    fn run(mut self, rx: std_mpsc::Receiver<Input>) {
        self.full_scan();
        if self.polled.contains(&true) {
            self.next_poll = Some(Instant::now() + self.cfg.poll_interval);
        }
        loop {
            // Block for the next input, but not past the moment the oldest file that left
            // its place counts as gone.
            let deadline = self
                .pending_gone
                .iter()
                .map(|p| p.2 + MOVE_GRACE)
                .chain(self.next_poll)
                .chain(self.fd_short.retry_at)
                .min();
            let next = match deadline {
                None => rx
                    .recv()
                    .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match next {
                Ok(input) => {
                    if !self.handle(input) {
                        return;
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
            // Take everything already queued (the other half of a rename comes with the
            // first) before deciding what left for good.
            while let Ok(input) = rx.try_recv() {
                if !self.handle(input) {
                    return;
                }
            }
            if self
                .fd_short
                .retry_at
                .is_some_and(|at| Instant::now() >= at)
            {
                self.retry_fd_short();
            }
            if self.next_poll.is_some_and(|at| Instant::now() >= at) {
                self.poll_all();
                self.next_poll = Some(Instant::now() + self.cfg.poll_interval);
            }
            self.finalize_gone(MOVE_GRACE);
        }
    }

    /// Handles one input; false to stop.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Stop => return false,
            Input::Rescan => self.full_scan(),
            Input::Inotify(Change::Failed(e)) => {
                tracing::error!(error = %e, "reading inotify's events failed: changes are found by rescans only (SIGHUP); rescanning");
                self.full_scan();
            }
            Input::Inotify(Change::Overflow) => {
                tracing::warn!("inotify queue overflowed; rescanning");
                self.full_scan();
            }
            Input::Inotify(c) => self.on_change(c),
            Input::Probed => self.probes_answered(),
            Input::Mounts => self.mounts_changed(),
        }
        true
    }

    /// Goes on with each directory whose late listing has answered, and looks again at
    /// each path whose late probe has answered, with that answer if the path still holds the
    /// same file.
    fn probes_answered(&mut self) {
        for (index, p, answer) in offload::take_answered(&mut self.listing, |p| &p.answer) {
            match answer {
                Ok(listing) => {
                    let (dir, waited_ms) = (
                        &self.cfg.dirs[index].path,
                        p.since.elapsed().as_millis() as u64,
                    );
                    let what = match p.scan {
                        true => "the watched directory has answered",
                        false => "the polled directory has answered",
                    };
                    if p.logged {
                        tracing::info!(dir = %dir.display(), waited_ms, "{what}");
                    } else {
                        tracing::debug!(dir = %dir.display(), waited_ms, "{what}");
                    }
                    match p.scan {
                        true => self.apply_scan(index, listing),
                        false => self.apply_listing(index, listing),
                    }
                }
                Err(e) => {
                    tracing::warn!(dir = %self.cfg.dirs[index].path.display(), error = %e, "listing a polled directory failed; keeping what is known")
                }
            }
        }
        for (path, p, answer) in offload::take_answered(&mut self.opening, |p| &p.answer) {
            let opened = answer.unwrap_or_else(|e| Opened::Unopenable(std::io::Error::other(e)));
            tracing::debug!(image = %path.display(), "opening it answered");
            self.opened.insert(path.clone(), opened);
            if !self.check(&path, p.reason) {
                // Still open for writing, or moving: looked at again at the next poll.
                if let Some(o) = self.observed.get_mut(&path) {
                    o.checked = false;
                }
            }
            self.opened.remove(&path);
        }
        for (path, p, answer) in offload::take_answered(&mut self.probing, |p| &p.answer) {
            let info = answer.unwrap_or_else(|e| {
                Err(IsoError::Io {
                    offset: 0,
                    len: 0,
                    source: std::io::Error::other(e),
                })
            });
            tracing::debug!(image = %path.display(), "its volume descriptors answered");
            self.answered.insert(path.clone(), (p.id, info));
            self.check(&path, p.reason);
            self.answered.remove(&path);
        }
    }

    /// What is at `path` in a watched directory, opened (see [`open_image`]). Where that may
    /// hang (see `State::may_hang`) it runs off this thread, waited for at most
    /// [`offload::WAIT`]; `None` while it has not answered (the path is looked at again when
    /// it does).
    fn open(
        &mut self,
        path: &Path,
        reason: Reason,
        follow_symlinks: bool,
        may_hang: bool,
    ) -> Option<Opened> {
        if let Some(opened) = self.opened.remove(path) {
            return Some(opened);
        }
        if !may_hang {
            return Some(open_image(path, follow_symlinks));
        }
        if self.opening.contains_key(path) {
            return None;
        }
        let p = path.to_path_buf();
        match self.helper.run(move || open_image(&p, follow_symlinks)) {
            Ok(Ran::Done(opened)) => Some(opened),
            Ok(Ran::Late(answer)) => {
                tracing::info!(image = %path.display(), waited_ms = offload::WAIT.as_millis() as u64, "opening it has not answered yet; looked at again once it does, the other images meanwhile");
                self.opening
                    .insert(path.to_path_buf(), Opening { reason, answer });
                None
            }
            // No thread to run it on: here, then.
            Err(_) => Some(open_image(path, follow_symlinks)),
        }
    }

    /// The volume of the image `file` at `path` (identified as `id`): probed off this thread,
    /// waiting at most [`offload::WAIT`]; `None` while it has not answered (the path is looked
    /// at again when it does).
    fn probe(
        &mut self,
        path: &Path,
        id: &MediumId,
        reason: Reason,
        file: &Arc<File>,
    ) -> Option<Result<VolumeInfo, IsoError>> {
        if let Some((was, info)) = self.answered.remove(path) {
            if was == *id {
                return Some(info);
            }
        }
        match self.probing.get(path) {
            Some(p) if p.id == *id => return None,
            // Another file holds the path now: the old one's answer is of no use.
            Some(_) => {
                self.probing.remove(path);
            }
            None => {}
        }
        if let Some(info) = offload::from_cache(file, |r| probe(r)) {
            return Some(info);
        }
        let f = file.clone();
        match self.helper.run(move || probe(&*f)) {
            Ok(Ran::Done(info)) => Some(info),
            Ok(Ran::Late(answer)) => {
                tracing::info!(image = %path.display(), waited_ms = offload::WAIT.as_millis() as u64, "its volume descriptors have not answered yet; looked at again once they do, the other images meanwhile");
                self.probing.insert(
                    path.to_path_buf(),
                    Probing {
                        id: id.clone(),
                        reason,
                        answer,
                    },
                );
                None
            }
            // No thread to run it on: here, then.
            Err(_) => Some(probe(&**file)),
        }
    }

    fn on_change(&mut self, c: Change) {
        tracing::trace!(?c, "inotify");
        match c {
            Change::Written(path) if self.inside_watched(&path) => {
                self.check(&path, Reason::Written);
            }
            Change::Arrived { path, dir: true } => {
                if self
                    .cfg
                    .dirs
                    .iter()
                    .zip(&self.polled)
                    .any(|(d, polled)| d.path == path && !polled)
                {
                    tracing::info!(dir = %path.display(), "watched directory is back");
                }
                if self.inside_watched(&path) {
                    self.arrived_dir(path);
                }
            }
            Change::Arrived { path, dir: false } if self.inside_watched(&path) => {
                self.check(&path, Reason::Arrived);
            }
            // A file not taken (refused as not readable by all, say) may be taken now; what
            // is served, or waits for its writer, stays as it is.
            Change::Attrib(path)
                if self.inside_watched(&path) && !self.tracked.contains_key(&path) =>
            {
                self.check(&path, Reason::Arrived);
            }
            Change::Left { path, dir } => {
                if dir {
                    // Its watches and those below it go: a directory moved away is no longer
                    // in the tree (moved inside it, it is watched again where it arrived).
                    let below: Vec<PathBuf> = self
                        .watched
                        .range(path.clone()..)
                        .map(|(p, _)| p)
                        .take_while(|p| p.starts_with(&path))
                        .cloned()
                        .collect();
                    for p in below {
                        self.inotify.unwatch(&p);
                        self.watched.remove(&p);
                    }
                }
                self.left(&path);
            }
            _ => {}
        }
    }

    /// A directory made in, or moved into, a tree watched with inotify: watched with its tree,
    /// then scanned. A file that landed in it before its watch was in place is found by that
    /// scan.
    fn arrived_dir(&mut self, path: PathBuf) {
        if let Err(e) = self.watch_tree(&path) {
            tracing::debug!(dir = %path.display(), error = %e, "not watched (gone meanwhile?)");
        }
        self.scan_dir(&path, Reason::Arrived, &mut HashSet::new());
    }

    /// Whether an inotify event for `path` counts: it is inside a directory watched with
    /// inotify (the innermost watched directory holding it is not polled).
    fn inside_watched(&self, path: &Path) -> bool {
        self.spec_index(path).is_some_and(|i| !self.polled[i])
    }

    /// The innermost watched directory holding `path` (an index into `cfg.dirs`).
    fn spec_index(&self, path: &Path) -> Option<usize> {
        spec_index(&self.cfg.dirs, path)
    }

    /// Whether `dir` is a watched directory other than `from` (scanned on its own).
    fn is_other_root(&self, dir: &Path, from: &Path) -> bool {
        is_other_root(&self.cfg.dirs, dir, from)
    }

    /// A path (file or directory) left: everything tracked at or below it may be gone.
    fn left(&mut self, path: &Path) {
        // A tracked file: no need to look at every other path.
        if let Some(t) = self.tracked.remove(path) {
            self.pending_gone
                .push((path.to_path_buf(), t, Instant::now()));
            return;
        }
        let under: Vec<PathBuf> = self
            .tracked
            .keys()
            .filter(|p| p.starts_with(path))
            .map(Path::to_path_buf)
            .collect();
        for p in under {
            if let Some(t) = self.tracked.remove(&p) {
                self.pending_gone.push((p, t, Instant::now()));
            }
        }
    }

    /// Emits `Vanished` for every file that left its place at least `grace` ago.
    fn finalize_gone(&mut self, grace: Duration) {
        let (gone, waiting) = std::mem::take(&mut self.pending_gone)
            .into_iter()
            .partition(|p| p.2.elapsed() >= grace);
        self.pending_gone = waiting;
        for (path, t, _) in gone {
            self.waiting_logged.remove(&path);
            // Already seen at its new path (a scan of a directory it was moved into ran
            // before the event for its old path), or another hard link: still present.
            let elsewhere = self.tracked.present_at(&t.id);
            match elsewhere {
                _ if !t.present => {}
                Some(origin) => self.emit(Event::Moved { id: t.id, origin }),
                None => {
                    tracing::debug!(image = %path.display(), "image left the watched trees");
                    self.vanish(t.id);
                }
            }
        }
    }

    fn emit(&self, ev: Event) {
        let _ = self.out.blocking_send(ev);
    }

    /// Emits `Vanished` for `id`. The manager then no longer holds it, so another path it
    /// left a moment ago (a hard link, still waiting out its grace in `pending_gone`) must not
    /// pass it on as a rename when the file shows up again: that would move a medium the
    /// manager dropped, and the file would never be served. It is announced anew instead.
    fn vanish(&mut self, id: MediumId) {
        for (_, t, _) in &mut self.pending_gone {
            if t.id == id {
                t.present = false;
            }
        }
        self.emit(Event::Vanished(id));
    }

    /// Scans every watched tree; whatever is tracked but no longer found is gone. Ends with
    /// `ScanDone` listing every medium present.
    fn full_scan(&mut self) {
        let (mut seen, mut unlisted) = (HashSet::new(), Vec::new());
        self.fd_short.unlisted.clear();
        for (index, spec) in self.cfg.dirs.clone().into_iter().enumerate() {
            if self.may_hang[index] {
                self.scan_off_thread(index, &mut seen, &mut unlisted);
            } else {
                self.scan_dir(&spec.path, Reason::Scan, &mut seen);
            }
        }
        unlisted.append(&mut self.fd_short.unlisted);
        self.left_unseen(None, |p| seen.contains(p), &unlisted);
        self.finalize_gone(Duration::ZERO);
        let present = self
            .tracked
            .values()
            .filter(|t| t.present)
            .map(|t| t.id.clone())
            .collect();
        self.emit(Event::ScanDone {
            source: SourceKind::Dir,
            present,
        });
    }

    /// Scans directory `index` (one that may hang): listed off this thread as a poll lists it
    /// (see [`State::poll_dir`]), so that a network file system that does not answer holds up
    /// no other directory; what it lists is taken at once. Directories not listed go to
    /// `unlisted` (what is known below them is kept). A listing that has not answered within
    /// [`offload::WAIT`] is gone on with once it answers ([`State::apply_scan`]).
    fn scan_off_thread(
        &mut self,
        index: usize,
        seen: &mut HashSet<PathBuf>,
        unlisted: &mut Vec<PathBuf>,
    ) {
        let root = self.cfg.dirs[index].path.clone();
        if self.listing.contains_key(&index) {
            unlisted.push(root);
            return;
        }
        match self.list_off_thread(index, true) {
            Some(listing) => self.take_listed(listing, seen, unlisted),
            None => unlisted.push(root),
        }
    }

    /// Lists directory `index` (see [`list_polled`]) off this thread, waiting at most
    /// [`offload::WAIT`]. `None` when it has not answered by then: it goes on in the background
    /// and is gone on with once it answers, as a scan's listing or a poll's (`scan`).
    fn list_off_thread(&mut self, index: usize, scan: bool) -> Option<Listing> {
        let (dirs, since) = (self.cfg.dirs.clone(), Instant::now());
        match self.helper.run(move || list_polled(&dirs, index)) {
            Ok(Ran::Done(listing)) => Some(listing),
            Ok(Ran::Late(answer)) => {
                let dir = self.cfg.dirs[index].path.display();
                // A scan's is logged at once; a poll's once the next poll is due.
                if scan {
                    tracing::info!(%dir, waited_ms = offload::WAIT.as_millis() as u64, "the watched directory has not answered yet; what is known below it is kept, the other directories are scanned meanwhile");
                } else {
                    tracing::debug!(%dir, "listing the polled directory goes on in the background");
                }
                let pending = PendingListing {
                    answer,
                    since,
                    logged: scan,
                    scan,
                };
                self.listing.insert(index, pending);
                None
            }
            // No thread to run it on: here, then.
            Err(_) => Some(list_polled(&self.cfg.dirs, index)),
        }
    }

    /// Looks at every file a scan's `listing` found (into `seen`); the directories it could
    /// not list go to `unlisted`.
    fn take_listed(
        &mut self,
        listing: Listing,
        seen: &mut HashSet<PathBuf>,
        unlisted: &mut Vec<PathBuf>,
    ) {
        for (d, e) in listing.unlisted {
            tracing::warn!(dir = %d.display(), error = %e, "cannot list a watched directory; keeping what is known");
            unlisted.push(d);
        }
        let mut found = listing.found;
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, _) in found {
            seen.insert(path.clone());
            self.check(&path, Reason::Scan);
        }
    }

    /// Goes on with a scan of directory `index` whose listing answered late: what it found is
    /// taken, what is known below the directory and was not found is gone.
    fn apply_scan(&mut self, index: usize, listing: Listing) {
        let (mut seen, mut unlisted) = (HashSet::new(), Vec::new());
        self.take_listed(listing, &mut seen, &mut unlisted);
        self.left_unseen(Some(index), |p| seen.contains(p), &unlisted);
    }

    /// Everything tracked (below watched directory `index`, or anywhere) that `seen` does not
    /// hold and that is not below one of the directories `unlisted` has left.
    fn left_unseen(
        &mut self,
        index: Option<usize>,
        seen: impl Fn(&Path) -> bool,
        unlisted: &[PathBuf],
    ) {
        let lost: Vec<PathBuf> = self
            .tracked
            .keys()
            .filter(|p| index.is_none() || self.spec_index(p) == index)
            .filter(|p| !seen(p) && !unlisted.iter().any(|d| p.starts_with(d)))
            .map(Path::to_path_buf)
            .collect();
        for p in lost {
            self.left(&p);
        }
    }

    /// Looks at every file below `dir` (not following symlinked directories). A directory of
    /// a tree watched with inotify that has no watch yet (made, or made again, while inotify's
    /// queue overflowed, its events lost) is watched before it is listed.
    fn scan_dir(&mut self, dir: &Path, reason: Reason, seen: &mut HashSet<PathBuf>) {
        let mut stack = vec![dir.to_path_buf()];
        let mut watch_limit = false;
        while let Some(d) = stack.pop() {
            if !watch_limit
                && self.inside_watched(&d)
                && self.watched.get(&d) != Some(&DirIdentity::of(&d))
            {
                watch_limit = self.watch_one(&d).is_err_and(|e| e.is_limit);
            }
            let rd = match crate::sys::relieved(|| std::fs::read_dir(&d)) {
                Ok(rd) => rd,
                Err(e) if crate::sys::out_of_descriptors(&e) => {
                    self.fd_short.unlisted.push(d.clone());
                    self.fd_shortage(&d, reason, &e);
                    continue;
                }
                Err(_) => continue,
            };
            let mut entries: Vec<_> = rd.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for ent in entries {
                let path = ent.path();
                match ent.file_type() {
                    Ok(ft) if ft.is_dir() => {
                        if !self.is_other_root(&path, dir) {
                            stack.push(path);
                        }
                    }
                    Ok(_) => {
                        let spec = self.spec_index(&path).map(|i| &self.cfg.dirs[i]);
                        if spec.is_some_and(|s| wanted(&ent.file_name(), s)) {
                            seen.insert(path.clone());
                            self.check(&path, reason);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// Opens and identifies one file, and emits what changed. False when it waits for a
    /// writer to close it (a polled directory looks at it again at the next poll). Where
    /// opening it or reading its descriptors has not answered in time, it is looked at again
    /// once they do.
    fn check(&mut self, path: &Path, reason: Reason) -> bool {
        let Some(name) = path.file_name() else {
            return true;
        };
        let Some(index) = self.spec_index(path) else {
            return true;
        };
        let spec = &self.cfg.dirs[index];
        let (follow_symlinks, may_hang) = (spec.follow_symlinks, self.may_hang[index]);
        if !wanted(name, spec) {
            // Renamed to a name that is not taken (e.g. x.iso -> x.iso.bak): it left.
            if self.tracked.contains_key(path) {
                self.left(path);
            }
            return true;
        }
        let Some(opened) = self.open(path, reason, follow_symlinks, may_hang) else {
            return true;
        };
        let (file, meta, writing) = match opened {
            Opened::File {
                file,
                meta,
                writing,
            } => (file, meta, writing),
            Opened::Gone => {
                self.left(path);
                return true;
            }
            Opened::NoDescriptor(e) => {
                self.fd_shortage(path, reason, &e);
                return true;
            }
            Opened::Unopenable(e) => {
                tracing::debug!(image = %path.display(), error = %e, "cannot open; ignored");
                self.replaced(path);
                return true;
            }
            Opened::NoMetadata => return true,
            Opened::NotRegular => {
                tracing::debug!(path = %path.display(), "not a regular file; ignored");
                self.replaced(path);
                return true;
            }
            // (false: a polled directory looks again at its next poll.)
            Opened::Moving => return false,
            Opened::Exposes(why) => {
                tracing::warn!(image = %path.display(), "{why}; not served (make it readable by all to serve it)");
                self.replaced(path);
                return true;
            }
            Opened::Unreopenable(e) => {
                tracing::warn!(image = %path.display(), error = %e, "cannot open through /proc/self/fd; ignored");
                return true;
            }
        };
        if let Some(real) = inside(
            &file,
            &meta,
            self.devs[index],
            &self.cfg.root,
            &self.served_devs,
        ) {
            tracing::warn!(image = %path.display(), target = %real.display(), root = %self.cfg.root.display(), "a symlink to a file inside a medium isomgr serves; not served (it would keep that medium busy after it goes)");
            self.replaced(path);
            return true;
        }
        let id = file_id(meta.dev(), meta.ino());
        // What left this path a moment ago (deleted, or replaced by something not taken) is
        // gone for good now that another file holds it: its removal comes first, so the new
        // file gets its name back.
        if let Some(i) = self
            .pending_gone
            .iter()
            .position(|(p, t, _)| p == path && t.id != id)
        {
            let (_, t, _) = self.pending_gone.swap_remove(i);
            if t.present {
                match self.tracked.present_at(&t.id) {
                    Some(origin) => self.emit(Event::Moved { id: t.id, origin }),
                    None => self.vanish(t.id),
                }
            }
        }

        // The same file seen under a new path: a rename inside the trees.
        if let Some(i) = self.pending_gone.iter().position(|(_, t, _)| t.id == id) {
            let (old, t, _) = self.pending_gone.swap_remove(i);
            if t.present {
                tracing::debug!(from = %old.display(), to = %path.display(), "image renamed");
                self.emit(Event::Moved {
                    id: id.clone(),
                    origin: path.to_path_buf(),
                });
                self.tracked.insert(path.to_path_buf(), t);
                if reason != Reason::Written {
                    return true;
                }
            }
        }
        match self.tracked.get(path) {
            Some(t) if t.id != id => {
                // Replaced by another file (atomic replace): the old medium is gone.
                let old = t.clone();
                self.tracked.remove(path);
                if old.present {
                    self.vanish(old.id);
                }
            }
            Some(t) if t.present && reason != Reason::Written => return true,
            // The close-write of the copy that was already taken (the watcher handled its
            // creation late, after the writer had finished): nothing changed since.
            Some(t) if t.present && t.stamp == Some(Stamp::of(&meta)) => return true,
            Some(t) if t.present => {
                // Rewritten in place: served again from the new content.
                let old = t.id.clone();
                self.tracked.remove(path);
                self.vanish(old);
            }
            _ => {}
        }
        // A writer may still have it open: a lagging watcher handling the creation late, a
        // scan during a copy, a preallocated file already full size. Its close comes later.
        if writing {
            tracing::debug!(image = %path.display(), "still open for writing; waiting for close");
            self.tracked.insert(
                path.to_path_buf(),
                Tracked {
                    id,
                    present: false,
                    stamp: None,
                },
            );
            return false;
        }
        let file = Arc::new(file);
        let Some(info) = self.probe(path, &id, reason, &file) else {
            return true;
        };
        let info = match info {
            Ok(info) => info,
            Err(IsoError::NotAnImage | IsoError::Truncated { .. }) => {
                // Still being written (or not an image at all): wait for the next write.
                tracing::debug!(image = %path.display(), "not (yet) an image");
                self.tracked.insert(
                    path.to_path_buf(),
                    Tracked {
                        id,
                        present: false,
                        stamp: None,
                    },
                );
                return true;
            }
            Err(e) => {
                tracing::error!(image = %path.display(), error = %e, "cannot identify image; not served");
                self.tracked.insert(
                    path.to_path_buf(),
                    Tracked {
                        id,
                        present: false,
                        stamp: None,
                    },
                );
                return true;
            }
        };
        if !info.complete() {
            self.wait(path, id, "waiting for the rest of the image");
            return true;
        }
        self.waiting_logged.remove(path);
        let fallback = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::debug!(image = %path.display(), label = ?info.label, "image complete");
        self.tracked.insert(
            path.to_path_buf(),
            Tracked {
                id: id.clone(),
                present: true,
                stamp: Some(Stamp::of(&meta)),
            },
        );
        self.emit(Event::Appeared(Medium {
            id,
            source: SourceKind::Dir,
            origin: path.to_path_buf(),
            label: info.label,
            fallback,
            fs: Some(info.fs.as_str().to_owned()),
            handle: keep_handle(&file).then(|| Handle(file)),
        }));
        true
    }

    /// Rescans every polled directory.
    fn poll_all(&mut self) {
        for i in 0..self.cfg.dirs.len() {
            if self.polled[i] {
                self.poll_dir(i);
            }
        }
    }

    /// Rescans one polled directory: lists it off this thread (waiting at most
    /// [`offload::WAIT`], so that a network file system that stops answering holds up no
    /// other directory), then goes on with what it lists. A directory whose listing has not
    /// answered yet is not listed again until it does.
    fn poll_dir(&mut self, index: usize) {
        let dir = &self.cfg.dirs[index].path;
        if let Some(p) = self.listing.get_mut(&index) {
            // Logged once the next poll is due, not at once: a large directory on a slow
            // share can take longer than the wait and still answer in time.
            if !p.logged {
                p.logged = true;
                tracing::info!(dir = %dir.display(), waited_ms = p.since.elapsed().as_millis() as u64, "the polled directory has not answered yet; looked at once it does, the other directories meanwhile");
            }
            return;
        }
        if let Some(listing) = self.list_off_thread(index, false) {
            self.apply_listing(index, listing);
        }
    }

    /// Emits what changed in polled directory `index` since the last poll, as `listing` shows
    /// it: files gone, files that are new or changed and have stayed the same since the
    /// previous poll, files renamed (same device and inode at another path).
    fn apply_listing(&mut self, index: usize, listing: Listing) {
        let root = self.cfg.dirs[index].path.clone();
        let root = root.as_path();
        let Listing {
            mut found,
            unlisted,
            listed,
        } = listing;
        for d in listed {
            self.poll_errors.remove(&d);
        }
        let mut unsure = Vec::with_capacity(unlisted.len());
        for (d, e) in unlisted {
            if !self.poll_errors.contains(&d) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot list a polled directory; keeping what is known");
                self.poll_errors.insert(d.clone());
            }
            unsure.push(d);
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let seen: HashSet<&Path> = found.iter().map(|(p, _)| p.as_path()).collect();
        // What left first, so that a file found at a new path is matched as a rename.
        self.left_unseen(Some(index), |p| seen.contains(p), &unsure);
        self.observed
            .retain(|p, _| seen.contains(p.as_path()) || !p.starts_with(root));
        for (path, meta) in found {
            let now = Observed {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.size(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                checked: false,
            };
            let id = file_id(now.dev, now.ino);
            let unchanged = |t: &Tracked| {
                t.id == id
                    && t.present
                    && t.stamp
                        .is_some_and(|s| s.size == now.size && s.mtime == now.mtime)
            };
            if self.tracked.get(&path).is_some_and(unchanged) {
                self.observed.remove(&path);
                continue;
            }
            // A medium already served, found at another path with the same content: renamed
            // (or another hard link). Taken at once.
            let known = self.pending_gone.iter().any(|(_, t, _)| unchanged(t))
                || self
                    .tracked
                    .present_at(&id)
                    .and_then(|p| self.tracked.get(&p))
                    .is_some_and(unchanged);
            if known {
                self.observed.remove(&path);
                self.check(&path, Reason::Arrived);
                continue;
            }
            // New or changed: taken once two polls in a row see it the same.
            match self.observed.get_mut(&path) {
                Some(o)
                    if Observed {
                        checked: o.checked,
                        ..now
                    } == *o =>
                {
                    if !o.checked {
                        o.checked = true;
                        if !self.check(&path, Reason::Written) {
                            // Still open for writing: look again at the next poll.
                            if let Some(o) = self.observed.get_mut(&path) {
                                o.checked = false;
                            }
                        }
                    }
                }
                _ => {
                    self.observed.insert(path, now);
                }
            }
        }
    }

    /// Something not taken (not a regular file, refused, unreadable) now holds `path`: what
    /// was taken there is gone, as for an atomic replace, unless present at another path.
    fn replaced(&mut self, path: &Path) {
        self.waiting_logged.remove(path);
        if let Some(old) = self.tracked.remove(path) {
            if old.present && self.tracked.present_at(&old.id).is_none() {
                self.vanish(old.id);
            }
        }
    }

    /// `path` (an image, or a directory to scan) could not be opened for lack of descriptors:
    /// looked at again later. One warning per shortage, not one per image or retry.
    fn fd_shortage(&mut self, path: &Path, reason: Reason, e: &std::io::Error) {
        let s = &mut self.fd_short;
        if !s.logged {
            s.logged = true;
            tracing::warn!(image = %path.display(), error = %e, "out of file descriptors: images that cannot be opened now are looked at again shortly");
        } else {
            tracing::debug!(path = %path.display(), error = %e, "no descriptor; retried later");
        }
        s.waiting.entry(path.to_path_buf()).or_insert(reason);
        if s.retry_at.is_none() {
            s.backoff = FD_RETRY_FIRST;
            s.retry_at = Some(Instant::now() + s.backoff);
        }
    }

    /// Looks again at what could not be opened for lack of descriptors, in path order; stops
    /// at the first that still cannot and backs off.
    fn retry_fd_short(&mut self) {
        let mut todo: Vec<(PathBuf, Reason)> = std::mem::take(&mut self.fd_short.waiting)
            .into_iter()
            .collect();
        todo.sort_by(|a, b| a.0.cmp(&b.0));
        let total = todo.len();
        let backoff = self.fd_short.backoff;
        self.fd_short.retry_at = None;
        let mut rest = todo.into_iter();
        for (path, reason) in rest.by_ref() {
            if path.is_dir() {
                self.scan_dir(&path, reason, &mut HashSet::new());
            } else {
                self.check(&path, reason);
            }
            if !self.fd_short.waiting.is_empty() {
                break;
            }
        }
        let s = &mut self.fd_short;
        if s.waiting.is_empty() {
            s.logged = false;
            tracing::info!(
                images = total,
                "file descriptors available again: every image that waited was looked at"
            );
            return;
        }
        s.waiting.extend(rest);
        s.backoff = (backoff * 2).clamp(FD_RETRY_FIRST, FD_RETRY_MAX);
        s.retry_at = Some(Instant::now() + s.backoff);
    }

    fn wait(&mut self, path: &Path, id: MediumId, why: &str) {
        if self.waiting_logged.insert(path.to_path_buf()) {
            tracing::info!(image = %path.display(), "{why}");
        }
        self.tracked.insert(
            path.to_path_buf(),
            Tracked {
                id,
                present: false,
                stamp: None,
            },
        );
    }
}

/// The innermost of the watched directories `dirs` holding `path` (an index into `dirs`).
fn spec_index(dirs: &[DirSpec], path: &Path) -> Option<usize> {
    dirs.iter()
        .enumerate()
        .filter(|(_, d)| path.starts_with(&d.path))
        .max_by_key(|(_, d)| d.path.as_os_str().len())
        .map(|(i, _)| i)
}

/// Whether `dir` is one of the watched directories `dirs` other than `from` (scanned on its
/// own).
fn is_other_root(dirs: &[DirSpec], dir: &Path, from: &Path) -> bool {
    dir != from && dirs.iter().any(|d| d.path == dir)
}

/// What one poll of a polled directory lists.
struct Listing {
    /// Every wanted file below the directory, with its metadata.
    found: Vec<(PathBuf, std::fs::Metadata)>,
    /// Directories that could not be listed (other than gone): what is known below them is
    /// kept.
    unlisted: Vec<(PathBuf, std::io::Error)>,
    /// Directories that were listed.
    listed: Vec<PathBuf>,
}

/// A polled directory's listing that had not answered within [`offload::WAIT`].
struct PendingListing {
    answer: Late<Listing>,
    /// When the listing started.
    since: Instant,
    /// That it has not answered yet was logged (once the next poll was due).
    logged: bool,
    /// A scan's listing (at start or on SIGHUP), not a poll's.
    scan: bool,
}

/// Lists polled directory `index` of `dirs` and the directories below it (not those watched
/// on their own).
fn list_polled(dirs: &[DirSpec], index: usize) -> Listing {
    let spec = &dirs[index];
    let root = spec.path.as_path();
    let mut out = Listing {
        found: Vec::new(),
        unlisted: Vec::new(),
        listed: Vec::new(),
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.unlisted.push((d, e));
                continue;
            }
        };
        out.listed.push(d);
        for ent in rd.flatten() {
            let path = ent.path();
            let Ok(ft) = ent.file_type() else { continue };
            if ft.is_dir() {
                if !is_other_root(dirs, &path, root) {
                    stack.push(path);
                }
                continue;
            }
            if spec_index(dirs, &path) != Some(index) || !wanted(&ent.file_name(), spec) {
                continue;
            }
            let meta = if ft.is_symlink() && spec.follow_symlinks {
                std::fs::metadata(&path)
            } else {
                ent.metadata()
            };
            if let Some(meta) = meta.ok().filter(|m| m.file_type().is_file()) {
                out.found.push((path, meta));
            }
        }
    }
    out
}

/// What opening a path in a watched directory found.
enum Opened {
    /// An open regular file, and whether some process has it open for writing.
    File {
        file: File,
        meta: std::fs::Metadata,
        writing: bool,
    },
    /// Nothing is at the path.
    Gone,
    /// No descriptor to open it with (EMFILE, ENFILE).
    NoDescriptor(std::io::Error),
    /// It cannot be looked at (O_PATH open failed: permissions, a loop of symlinks...).
    Unopenable(std::io::Error),
    /// fstat of what was opened failed.
    NoMetadata,
    /// Something other than a regular file (a directory, a device, a FIFO...).
    NotRegular,
    /// The name changed between two looks: its own event follows.
    Moving,
    /// An image not to be served (see [`exposes`]).
    Exposes(&'static str),
    /// Opening it for reading through /proc/self/fd failed.
    Unreopenable(std::io::Error),
}

/// Opens what is at `path` for reading, if it is a regular file that may be served.
///
/// Looked at through O_PATH first: opening a device node or a FIFO reaches its driver (a
/// watchdog starts, a tape rewinds, a FIFO's waiting writer is let go), which a root daemon
/// must not do for whoever can write into a watched directory. Only a regular file is then
/// opened, through /proc/self/fd: the same inode, even if the name has been swapped meanwhile.
fn open_image(path: &Path, follow_symlinks: bool) -> Opened {
    // Out of descriptors: the served images' shared descriptors are closed one at a time
    // (they are reopened on their next read) before the image waits for a retry.
    for _ in 0..crate::sys::RELIEF_TRIES {
        match open_image_then(path, follow_symlinks, || {}) {
            Opened::NoDescriptor(_) if crate::sys::relieve_descriptors() => continue,
            other => return other,
        }
    }
    open_image_then(path, follow_symlinks, || {})
}

/// [`open_image`], running `meanwhile` between the first look and the check for writers
/// (tests put a writer's last write and close there).
fn open_image_then(path: &Path, follow_symlinks: bool, meanwhile: impl FnOnce()) -> Opened {
    let link = std::fs::symlink_metadata(path);
    let mut flags = libc::O_PATH;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match File::options().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Opened::Gone,
        Err(e) if crate::sys::out_of_descriptors(&e) => return Opened::NoDescriptor(e),
        Err(e) => return Opened::Unopenable(e),
    };
    let Ok(meta) = file.metadata() else {
        return Opened::NoMetadata;
    };
    if !meta.file_type().is_file() {
        return Opened::NotRegular;
    }
    let same = |l: &std::fs::Metadata| {
        l.file_type().is_symlink() || (l.dev(), l.ino()) == (meta.dev(), meta.ino())
    };
    let Ok(Some(link)) = link.and_then(|l| {
        let after = std::fs::symlink_metadata(path)?;
        Ok(((l.dev(), l.ino()) == (after.dev(), after.ino()) && same(&l)).then_some(l))
    }) else {
        return Opened::Moving;
    };
    if let Some(why) = exposes(&link, &meta) {
        return Opened::Exposes(why);
    }
    meanwhile();
    let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
    match File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&reopen)
    {
        Ok(file) => {
            let writing = open_for_writing(&file);
            // Looked at again once no writer holds it: one that closed it since the first
            // look has written all it will, and the size and times kept for the medium (its
            // stamp) must be the finished file's. Else its close-write, handled next, finds
            // another stamp and serves the file a second time (seen with a writer closing in
            // between: 327,680 bytes at the first look, 362,496 at the close).
            let meta = if writing {
                meta
            } else {
                file.metadata().unwrap_or(meta)
            };
            Opened::File {
                writing,
                file,
                meta,
            }
        }
        Err(e) if crate::sys::out_of_descriptors(&e) => Opened::NoDescriptor(e),
        Err(e) => Opened::Unreopenable(e),
    }
}

/// Where open `file` (whose metadata is `meta`) is, if that is inside `root`: its path as the
/// kernel knows it, or its device where that is one of the root's mounts (`served`).
///
/// A file on the file system of the watched directory it was found in (`home`), which is not
/// one of those mounts, is inside no medium: each medium is a file system of its own (the FUSE
/// root, or the kernel driver's loop and drive mounts). Its path is not asked for (a readlink
/// of /proc/self/fd, a tenth of the time a start takes with 10,000 images).
fn inside(
    file: &File,
    meta: &std::fs::Metadata,
    home: Option<u64>,
    root: &Path,
    served: &HashSet<u64>,
) -> Option<PathBuf> {
    if home == Some(meta.dev()) && !served.contains(&meta.dev()) {
        return None;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    let real = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    (real.starts_with(root) || served.contains(&meta.dev())).then_some(real)
}

/// The devices of the mounts at and below `root` in `table`, and `root_dev` (the root's own
/// device where it is a mount point, seen without the table).
fn served_devs(
    table: &[crate::sys::MountEntry],
    root: &Path,
    root_dev: Option<u64>,
) -> HashSet<u64> {
    table
        .iter()
        .filter(|m| m.mount_point.starts_with(root))
        .map(|m| m.dev)
        .chain(root_dev)
        .collect()
}

/// The device of `dir` where it is a mount point (its parent is on another device).
fn mount_dev(dir: &Path) -> Option<u64> {
    let here = std::fs::metadata(dir).ok()?.dev();
    let parent = std::fs::metadata(dir.join("..")).ok()?.dev();
    (here != parent).then_some(here)
}

/// Why a regular file must not be served although it is an image, if so. The watcher runs as
/// root and what it serves is readable by all: a file not readable by all is served only when
/// whoever put it in the watched directory could read it. A hard link (more than one link) may
/// have been made by anyone to anyone's file (as far as fs.protected_hardlinks allows), a
/// symlink by its owner to anything; a file readable by all gives nothing away.
fn exposes(link: &std::fs::Metadata, file: &std::fs::Metadata) -> Option<&'static str> {
    if file.mode() & 0o004 != 0 {
        return None;
    }
    if file.nlink() > 1 {
        return Some("a hard link to a file not readable by all");
    }
    if link.file_type().is_symlink() && link.uid() != 0 && link.uid() != file.uid() {
        return Some("a symlink by another user to a file not readable by all");
    }
    None
}

/// Whether some process has the file open for writing. A read lease cannot be taken on such
/// a file (fcntl(2) F_SETLEASE: EAGAIN); it is released at once, and with no F_SETOWN no
/// lease-break signal is ever sent. Where leases are refused for another reason (not the
/// owner without CAP_LEASE, a file system without leases) the answer is false: the file is
/// taken as before, on its size.
fn open_for_writing(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is open for the duration of both calls; F_SETLEASE takes an int argument.
    unsafe {
        if libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) == 0 {
            libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK);
            return false;
        }
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DirSpec {
        DirSpec {
            exclude: Some(Regex::new("^skip").unwrap()),
            ..DirSpec::new(PathBuf::from("/srv/iso-drop"))
        }
    }

    #[test]
    fn poll_mode_decides_and_auto_asks_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let every = Duration::from_millis(200);
        let spec = |poll| DirSpec {
            poll,
            ..DirSpec::new(dir.path().join("not-yet"))
        };
        let d = poll_decision(&spec(PollMode::Always), every);
        assert!(d.poll);
        assert_eq!(d.why, "poll = always: polling every 0.2 s, no inotify");
        assert!(!poll_decision(&spec(PollMode::Never), every).poll);
        // Auto looks at the nearest existing ancestor; a temp dir is local here unless the
        // host keeps /tmp on a network file system.
        let t = super::super::fstype::statfs_type(dir.path()).unwrap();
        let d = poll_decision(&spec(PollMode::Auto), every);
        assert_eq!(
            d.poll,
            super::super::fstype::remote_fs(t).is_some(),
            "{}",
            d.why
        );
        assert!(d.why.contains(&format!("({t:#x})")), "{}", d.why);
        assert_eq!(secs(Duration::from_secs(10)), "10");
        assert_eq!(secs(Duration::from_millis(2500)), "2.5");
    }

    #[test]
    fn a_file_closed_during_the_look_is_described_as_its_writer_left_it() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.iso");
        let mut w = File::create(&path).unwrap();
        w.write_all(&[1u8; 8192]).unwrap();
        // Still open for writing during the look: said so, with the size seen then.
        match open_image(&path, false) {
            Opened::File { writing, meta, .. } => {
                assert!(writing);
                assert_eq!(meta.len(), 8192);
            }
            _ => panic!("not opened"),
        }
        // The writer writes the rest and closes between the first look and the check.
        let o = open_image_then(&path, false, move || {
            w.write_all(&[2u8; 4096]).unwrap();
            drop(w);
        });
        match o {
            Opened::File { writing, meta, .. } => {
                assert!(!writing);
                assert_eq!(
                    meta.len(),
                    12_288,
                    "the size of the unfinished file was kept"
                );
            }
            _ => panic!("not opened"),
        }
    }

    #[test]
    fn tells_a_file_still_open_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.iso");
        let writer = File::create(&path).unwrap();
        let reader = File::open(&path).unwrap();
        // As root or as the owner the lease probe answers; otherwise it says false.
        assert!(open_for_writing(&reader));
        drop(writer);
        assert!(!open_for_writing(&reader));
    }

    #[test]
    fn takes_iso_names_in_any_case_and_refuses_hidden_partial_and_excluded() {
        let c = cfg();
        for yes in ["a.iso", "B.ISO", "rocky 9.Iso"] {
            assert!(wanted(OsStr::new(yes), &c), "{yes}");
        }
        for no in [
            ".a.iso",
            "a.iso.part",
            "a.iso.tmp",
            "a.iso~",
            "a.img",
            "skip-me.iso",
            "iso",
        ] {
            assert!(!wanted(OsStr::new(no), &c), "{no}");
        }
    }
}
