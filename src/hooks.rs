//! Hooks: the operator's commands (`--exec CMD`, config key `exec`), run on each medium
//! mounted or removed, with what happened in the environment.
//!
//! Each command runs as `/bin/sh -c CMD` in its own process group, stdin `/dev/null`,
//! stdout and stderr the daemon's. A hook never blocks the daemon: it is spawned and reaped
//! by a task on the daemon's runtime; one that exits non-zero is logged in one line; one that
//! outlives the timeout is killed (its whole process group) and logged. At most
//! [`MAX_RUNNING`] run at once; up to [`MAX_WAITING`] more wait their turn in order, and any
//! beyond that are dropped with a log line. When the watcher stops, hooks still running are
//! killed with their process groups. [`environment`] is pure; the rest spawns.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::event::SourceKind;

/// The default time a hook may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Hooks running at once at most.
pub const MAX_RUNNING: usize = 4;
/// Hooks waiting for a free slot at most; more are dropped.
pub const MAX_WAITING: usize = 256;

/// What to run and for how long at most.
#[derive(Clone, Debug)]
pub struct HookConfig {
    pub commands: Vec<String>,
    pub timeout: Duration,
}

/// What happened to a medium.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookEvent {
    Mounted,
    Removed,
}

impl HookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Mounted => "mounted",
            HookEvent::Removed => "removed",
        }
    }
}

/// The medium a hook is told about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookMedium {
    /// The directory name under the root.
    pub name: String,
    pub label: Option<String>,
    /// The directory under the root (`ROOT/NAME`).
    pub path: PathBuf,
    pub source: SourceKind,
    /// The image file or the device node.
    pub origin: PathBuf,
}

/// The environment a hook runs with: `ISOMGR_EVENT` (mounted|removed), `ISOMGR_NAME`,
/// `ISOMGR_LABEL` (empty without a label), `ISOMGR_PATH`, `ISOMGR_SOURCE` (dir|drive),
/// `ISOMGR_ORIGIN`.
pub fn environment(ev: HookEvent, m: &HookMedium) -> Vec<(&'static str, OsString)> {
    vec![
        ("ISOMGR_EVENT", ev.as_str().into()),
        ("ISOMGR_NAME", m.name.clone().into()),
        ("ISOMGR_LABEL", m.label.clone().unwrap_or_default().into()),
        ("ISOMGR_PATH", m.path.clone().into_os_string()),
        (
            "ISOMGR_SOURCE",
            match m.source {
                SourceKind::Dir => "dir",
                SourceKind::Drive => "drive",
            }
            .into(),
        ),
        ("ISOMGR_ORIGIN", m.origin.clone().into_os_string()),
    ]
}

/// Runs hooks on the daemon's runtime. See the module documentation.
pub struct Hooks {
    cfg: Arc<HookConfig>,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// Process groups of the hooks running now.
    running: Running,
}

type Running = Arc<Mutex<HashSet<libc::pid_t>>>;

impl Hooks {
    pub fn new(cfg: HookConfig) -> Hooks {
        Hooks {
            cfg: Arc::new(cfg),
            slots: Arc::new(Semaphore::new(MAX_RUNNING)),
            waiting: Arc::new(AtomicUsize::new(0)),
            running: Running::default(),
        }
    }

    /// Kills every hook still running, with its process group (the watcher stops).
    pub fn shutdown(&self) {
        let groups: Vec<libc::pid_t> = self
            .running
            .lock()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default();
        for pgid in groups {
            tracing::info!(pgid, "stopping: killing a hook still running");
            // SAFETY: signals a process group made for one of our hooks.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    /// Starts every hook command for `ev` (in the background; returns at once). Must be
    /// called on the daemon's tokio runtime.
    pub fn fire(&self, ev: HookEvent, medium: &HookMedium) {
        for (index, _) in self.cfg.commands.iter().enumerate() {
            if self.waiting.load(Ordering::Relaxed) >= MAX_WAITING {
                tracing::warn!(event = ev.as_str(), name = %medium.name, hook = %self.cfg.commands[index], "too many hooks waiting; this one is dropped");
                continue;
            }
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let env = environment(ev, medium);
            let (cfg, slots, waiting, running) = (
                Arc::clone(&self.cfg),
                Arc::clone(&self.slots),
                Arc::clone(&self.waiting),
                Arc::clone(&self.running),
            );
            let name = medium.name.clone();
            tokio::spawn(async move {
                let permit = slots.acquire_owned().await;
                waiting.fetch_sub(1, Ordering::Relaxed);
                run_one(&cfg.commands[index], env, cfg.timeout, ev, &name, &running).await;
                drop(permit);
            });
        }
    }
}

/// Runs one hook to its end or its timeout, and logs how it went.
async fn run_one(
    cmd: &str,
    env: Vec<(&'static str, OsString)>,
    timeout: Duration,
    ev: HookEvent,
    name: &str,
    running: &Running,
) {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(cmd)
        .envs(env)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(event = ev.as_str(), %name, hook = %cmd, error = %e, "hook could not start");
            return;
        }
    };
    let pid = child.id().map(|p| p as libc::pid_t);
    if let (Some(pid), Ok(mut r)) = (pid, running.lock()) {
        r.insert(pid);
    }
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::debug!(event = ev.as_str(), %name, hook = %cmd, ms = started.elapsed().as_millis() as u64, "hook done");
        }
        Ok(Ok(status)) => {
            tracing::warn!(event = ev.as_str(), %name, hook = %cmd, %status, "hook failed");
        }
        Ok(Err(e)) => {
            tracing::warn!(event = ev.as_str(), %name, hook = %cmd, error = %e, "waiting for the hook");
        }
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: signals the hook's own process group (it was made its leader).
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill().await;
            tracing::warn!(event = ev.as_str(), %name, hook = %cmd, timeout_s = timeout.as_secs_f64(), "hook timed out; killed");
        }
    }
    if let (Some(pid), Ok(mut r)) = (pid, running.lock()) {
        r.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn medium() -> HookMedium {
        HookMedium {
            name: "Rocky-9".into(),
            label: Some("Rocky 9".into()),
            path: "/srv/isos/Rocky-9".into(),
            source: SourceKind::Dir,
            origin: "/srv/iso-drop/rocky.iso".into(),
        }
    }

    #[test]
    fn environment_names_the_event_and_the_medium() {
        let env = environment(HookEvent::Mounted, &medium());
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ISOMGR_EVENT").unwrap(), "mounted");
        assert_eq!(get("ISOMGR_NAME").unwrap(), "Rocky-9");
        assert_eq!(get("ISOMGR_LABEL").unwrap(), "Rocky 9");
        assert_eq!(get("ISOMGR_PATH").unwrap(), "/srv/isos/Rocky-9");
        assert_eq!(get("ISOMGR_SOURCE").unwrap(), "dir");
        assert_eq!(get("ISOMGR_ORIGIN").unwrap(), "/srv/iso-drop/rocky.iso");
        let m = HookMedium {
            label: None,
            source: SourceKind::Drive,
            ..medium()
        };
        let env = environment(HookEvent::Removed, &m);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ISOMGR_EVENT").unwrap(), "removed");
        assert_eq!(get("ISOMGR_LABEL").unwrap(), "");
        assert_eq!(get("ISOMGR_SOURCE").unwrap(), "drive");
    }

    #[test]
    fn a_slow_hook_is_killed_at_its_timeout_and_others_still_run() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let hooks = Hooks::new(HookConfig {
                commands: vec![
                    "sleep 100".into(),
                    "exit 3".into(),
                    format!("echo \"$ISOMGR_EVENT $ISOMGR_NAME\" >> {}", out.display()),
                ],
                timeout: Duration::from_millis(300),
            });
            let start = std::time::Instant::now();
            hooks.fire(HookEvent::Mounted, &medium());
            // Firing returns at once.
            assert!(start.elapsed() < Duration::from_millis(100));
            // All slots free again once the slow one is killed.
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if hooks.slots.available_permits() == MAX_RUNNING
                        && hooks.waiting.load(Ordering::Relaxed) == 0
                        && out.exists()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("hooks finished");
            assert!(start.elapsed() < Duration::from_secs(5));
        });
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "mounted Rocky-9\n");
    }
}
