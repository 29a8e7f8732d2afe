//! The watcher's wiring: sources feed one bounded channel; the loop applies each event to the
//! manager, runs the resulting actions through the executor, feeds outcomes back, and writes
//! the state file once the queue is drained. Signals: SIGTERM/SIGINT stop, SIGHUP rescans.
//! Hooks fire here, where outcomes are known: `mounted` once the manager took a medium's
//! `Published`, `removed` once its `Unpublish` ran.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::event::{Event, SourceKind};
use crate::exec::kernel::journal::journal_path;
use crate::exec::kernel::kernel_usable;
use crate::exec::{Executor, FuseExecutor, KernelExecutor};
use crate::fuse::FuseDriver;
use crate::hooks::{HookConfig, HookEvent, HookMedium, Hooks};
use crate::manager::{save_json, Action, Manager, Phase, StateDoc, StateFile};
use crate::notify::{Readiness, ServiceManager};
use crate::source::dirs::{DirsConfig, DirsSource};
use crate::source::drives::{DrivesConfig, DrivesSource};
use crate::source::Source;
use crate::sys::linux::LinuxSys;

/// Events queued between sources and the manager at most (back-pressure beyond).
const EVENT_QUEUE: usize = 256;
/// Shortest time between two writes of the state file while changes keep coming.
const SAVE_INTERVAL: Duration = Duration::from_millis(100);

/// Which mount driver to run (`--driver`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverChoice {
    /// The kernel where it has iso9660 and loop devices attach, FUSE otherwise.
    Auto,
    Kernel,
    Fuse,
}

/// Everything `isomgr watch` needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The dirs source, when directories are watched.
    pub dirs: Option<DirsConfig>,
    /// The drives source, when drives are watched.
    pub drives: Option<DrivesSetup>,
    pub root: PathBuf,
    pub state: PathBuf,
    pub index_file: Option<PathBuf>,
    pub driver: DriverChoice,
    /// Unmount kernel mounts at a normal stop too (FUSE always unmounts).
    pub cleanup_on_exit: bool,
    /// Commands run on each medium mounted or removed.
    pub hooks: Option<HookConfig>,
}

/// Picks the driver and says why (logged at start).
fn choose(choice: DriverChoice) -> (DriverChoice, String) {
    match choice {
        DriverChoice::Fuse => (DriverChoice::Fuse, "--driver fuse".into()),
        DriverChoice::Kernel => match kernel_usable(&LinuxSys) {
            Ok(why) => (DriverChoice::Kernel, format!("--driver kernel; {why}")),
            Err(why) => {
                tracing::warn!(reason = %why, "--driver kernel: media may fail to mount");
                (
                    DriverChoice::Kernel,
                    format!("--driver kernel, although {why}"),
                )
            }
        },
        DriverChoice::Auto => match kernel_usable(&LinuxSys) {
            Ok(why) => (DriverChoice::Kernel, why),
            Err(why) => (DriverChoice::Fuse, why),
        },
    }
}

/// The drives source and whether it was asked for explicitly: then udev missing is fatal;
/// when drives are only a default, it is a warning and the watcher goes on without them.
#[derive(Clone, Debug)]
pub struct DrivesSetup {
    pub cfg: DrivesConfig,
    pub required: bool,
}

/// Runs the watcher until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: Config) -> anyhow::Result<()> {
    let previous_state = match StateFile::load(&cfg.state) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "ignoring the previous state");
            None
        }
    };
    let previous = previous_state
        .as_ref()
        .map(|s| s.media.clone())
        .unwrap_or_default();
    let (driver, reason) = choose(cfg.driver);
    raise_fd_limit();
    crate::fuse::detach_dead_mount(&cfg.root)?;
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("creating the root {}", cfg.root.display()))?;
    let root = std::fs::canonicalize(&cfg.root)
        .with_context(|| format!("resolving the root {}", cfg.root.display()))?;
    let mut manager = Manager::new(&previous);
    let mut hooks = cfg.hooks.clone().map(|h| Served {
        hooks: Hooks::new(h),
        root: root.clone(),
        media: HashMap::new(),
    });
    let mut exec = match driver {
        DriverChoice::Kernel => {
            tracing::info!(driver = "kernel", %reason, "mount driver chosen");
            let own_loops = cfg
                .drives
                .as_ref()
                .map(|d| d.cfg.own_loops.clone())
                .unwrap_or_default();
            let mut k = KernelExecutor::new(LinuxSys, root.clone())
                .with_own_loops(own_loops)
                .with_journal(journal_path(&cfg.state));
            let foreign = k.reconcile(previous_state.as_ref());
            manager = Manager::new(k.previous_records());
            let mut exec = Executor::Kernel(k);
            process(
                &mut manager,
                &mut exec,
                &mut hooks,
                Event::ForeignEntries(foreign),
            );
            exec
        }
        _ => {
            tracing::info!(driver = "fuse", %reason, "mount driver chosen");
            let journal = journal_path(&cfg.state);
            if journal.exists()
                || previous_state
                    .as_ref()
                    .is_some_and(|s| s.driver == "kernel")
            {
                // The previous run mounted with the kernel: take that down before the FUSE
                // root hides it.
                let mut k = KernelExecutor::new(LinuxSys, root.clone()).with_journal(journal);
                k.reconcile(previous_state.as_ref());
                k.shutdown(true);
            }
            let driver = FuseDriver::mount(&root)
                .with_context(|| format!("mounting the FUSE root at {}", root.display()))?;
            Executor::Fuse(FuseExecutor::new(driver))
        }
    };
    // The previous run's records served the manager and the executor, which kept what they
    // need; with 10,000 media they are megabytes.
    drop(previous);
    drop(previous_state);
    let driver_name = exec.driver();

    let (tx, mut rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let mut drives_on = false;
    let mut scanning = Vec::new();
    if let Some(d) = &cfg.drives {
        match DrivesSource::spawn(d.cfg.clone(), tx.clone()) {
            Ok(s) => {
                sources.push(Box::new(s));
                drives_on = true;
                scanning.push(SourceKind::Drive);
            }
            Err(e) if !d.required => {
                tracing::warn!(error = %format!("{:#}", anyhow::Error::from(e)), "drives are not watched");
            }
            Err(e) => {
                exec.shutdown(cfg.cleanup_on_exit);
                return Err(anyhow::Error::from(e).context("--drives"));
            }
        }
    }
    if let Some(dirs) = &cfg.dirs {
        let dirs = DirsConfig {
            root: root.clone(),
            ..dirs.clone()
        };
        sources.push(Box::new(DirsSource::spawn(dirs, tx.clone())?));
        scanning.push(SourceKind::Dir);
    }
    drop(tx);
    // The previous run's media of a source not running now (drives not watched this time)
    // will not come back: their names come free, and what was made for them goes.
    for source in [SourceKind::Drive, SourceKind::Dir] {
        if !scanning.contains(&source) {
            let none = Event::ScanDone {
                source,
                present: Vec::new(),
            };
            process(&mut manager, &mut exec, &mut hooks, none);
        }
    }
    // Ready (systemd `Type=notify`) once each source's first scan was applied: everything
    // present at start is served by then.
    let mut readiness = Readiness::new(scanning);
    let systemd = ServiceManager::from_env();

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let dirs: Vec<&std::path::Path> = cfg.dirs.as_ref().map_or(Vec::new(), |d| {
        d.dirs.iter().map(|s| s.path.as_path()).collect()
    });
    tracing::info!(root = %root.display(), ?dirs, drives = drives_on, any_block = cfg.drives.as_ref().is_some_and(|d| d.cfg.any_block), "watching");

    let save = |manager: &Manager| {
        let doc = StateDoc {
            root: &root,
            driver: driver_name,
            pid: std::process::id(),
            media: manager.record_refs(),
        };
        // Out of descriptors (a low open-file limit, every one held by served images), one of
        // theirs is closed for the write: a state file left behind would mislead `status` and
        // the next start.
        if let Err(e) = crate::sys::relieved(|| save_json(&doc, &cfg.state)) {
            tracing::error!(state = %cfg.state.display(), error = %e, "writing the state file");
        }
        if let Some(index) = &cfg.index_file {
            if let Err(e) = crate::sys::relieved(|| save_json(&doc, index)) {
                tracing::error!(index = %index.display(), error = %e, "writing the index file");
            }
        }
        systemd.status(doc.media.len());
        drop(doc);
        // Give the document's memory back to the system: with thousands of media it is the
        // largest allocation the daemon makes, and it is made again only on the next change.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            libc::malloc_trim(0);
        }
    };
    save(&manager);
    if readiness.take_ready() {
        systemd.ready();
    }

    // The state is written once per burst of changes, at most every SAVE_INTERVAL; with
    // nothing changing no timer is armed.
    let mut dirty = false;
    let mut last_save = Instant::now();
    let late_done = exec.late_done();
    loop {
        let save_at = dirty.then(|| last_save + SAVE_INTERVAL);
        // Media waiting for a resource (the kernel driver's loop devices) are tried again then.
        let retry_at = exec.next_retry();
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                readiness.observe(&ev);
                dirty |= process(&mut manager, &mut exec, &mut hooks, ev);
                // Take what is already queued before writing anything.
                while let Ok(ev) = rx.try_recv() {
                    readiness.observe(&ev);
                    dirty |= process(&mut manager, &mut exec, &mut hooks, ev);
                }
                // Ready: the state file is written first, so it is current when anyone looks.
                let ready = readiness.take_ready();
                if ready || (dirty && last_save.elapsed() >= SAVE_INTERVAL) {
                    save(&manager);
                    dirty = false;
                    last_save = Instant::now();
                }
                if ready {
                    systemd.ready();
                }
            }
            _ = tokio::time::sleep_until(save_at.unwrap_or_else(Instant::now).into()), if save_at.is_some() => {
                save(&manager);
                dirty = false;
                last_save = Instant::now();
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now).into()), if retry_at.is_some() => {
                for ev in exec.retry_due(Instant::now()) {
                    dirty |= process(&mut manager, &mut exec, &mut hooks, ev);
                }
            }
            _ = late_done.notified() => {
                for ev in exec.finish_late() {
                    dirty |= process(&mut manager, &mut exec, &mut hooks, ev);
                }
            }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: rescanning");
                for s in &sources { s.rescan(); }
            }
        }
    }
    systemd.stopping();
    if dirty {
        save(&manager);
    }
    // Close the channel first so no source blocks on a full queue while it stops.
    drop(rx);
    for s in sources.drain(..) {
        s.stop();
    }
    if let Some(s) = &hooks {
        s.hooks.shutdown();
    }
    exec.shutdown(cfg.cleanup_on_exit);
    Ok(())
}

/// Each served image keeps one descriptor open: lift the soft limit on open files to the hard
/// limit (systemd's default soft limit of 1024 would stop at about a thousand images).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given, which is valid.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let want = lim.rlim_max;
            lim.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(limit = want, "raised the open-file limit");
            }
        }
    }
}

/// The hooks, and what each served name holds (for the `removed` hook, which runs after the
/// manager has forgotten the medium). Kept only when hooks are configured.
struct Served {
    hooks: Hooks,
    root: PathBuf,
    media: HashMap<String, HookMedium>,
}

/// Applies one event and everything it leads to; true when the state changed.
fn process(
    manager: &mut Manager,
    exec: &mut Executor,
    hooks: &mut Option<Served>,
    ev: Event,
) -> bool {
    let mut dirty = false;
    let mut queue = VecDeque::from([ev]);
    while let Some(ev) = queue.pop_front() {
        // A served image file renamed: the FUSE driver reopens it from its new path.
        match &ev {
            Event::Moved { id, origin } => exec.moved(id, origin),
            Event::Appeared(m) => exec.moved(&m.id, &m.origin),
            _ => {}
        }
        let published = match (&ev, hooks.is_some()) {
            (Event::Published { id, name, .. }, true) => Some((id.clone(), name.clone())),
            (Event::Moved { id, origin }, true) => {
                if let Some(s) = hooks.as_mut() {
                    if let Some(m) = manager.name_of(id).and_then(|n| s.media.get_mut(n)) {
                        m.origin = origin.clone();
                    }
                }
                None
            }
            _ => None,
        };
        let actions = manager.apply(crate::unix_now(), ev);
        if let (Some((id, name)), Some(s)) = (published, hooks.as_mut()) {
            let taken = matches!(manager.phase_of(&id), Some(Phase::Published { .. }))
                && manager.name_of(&id) == Some(name.as_str());
            if let Some(m) = manager.medium(&id).filter(|_| taken) {
                let m = HookMedium {
                    path: s.root.join(&name),
                    name: name.clone(),
                    label: m.label.clone(),
                    source: m.source,
                    origin: m.origin.clone(),
                };
                s.hooks.fire(HookEvent::Mounted, &m);
                s.media.insert(name, m);
            }
        }
        for action in actions {
            match action {
                Action::SaveState => dirty = true,
                Action::Unpublish { name, id } => {
                    queue.extend(exec.run(Action::Unpublish {
                        name: name.clone(),
                        id,
                    }));
                    if let Some(s) = hooks.as_mut() {
                        if let Some(m) = s.media.remove(&name) {
                            s.hooks.fire(HookEvent::Removed, &m);
                        }
                    }
                }
                a => queue.extend(exec.run(a)),
            }
        }
    }
    dirty
}
