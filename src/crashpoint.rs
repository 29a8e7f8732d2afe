//! A testing aid: `ISOMGR_CRASH_AT=STEP` (or `STEP:N`, the Nth time that step is reached) makes
//! the process kill itself with SIGKILL at that exact point, as `kill -9` would, so tests can
//! prove that a restart cleans up after a crash at every step that leaves something behind.
//! The variable is read only when set; unset, a crash point costs one atomic load.
//!
//! Steps: `after-mkdir`, `after-attach`, `after-mount` (kernel driver, publishing),
//! `after-unmount`, `before-rmdir` (kernel driver, removing: after the lazy unmount, after the
//! loop detach), `before-state-rename`, `after-state-rename` (state file write).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The step to crash at and on which of its occurrences (1-based).
fn target() -> Option<&'static (String, u64)> {
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let v = std::env::var("ISOMGR_CRASH_AT").ok()?;
            Some(match v.split_once(':') {
                Some((step, n)) => (step.to_owned(), n.parse().unwrap_or(1)),
                None => (v, 1),
            })
        })
        .as_ref()
}

/// Dies at once (SIGKILL to itself) when `ISOMGR_CRASH_AT` names `step` and this is the
/// occurrence it asks for; otherwise does nothing.
pub fn reached(step: &str) {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let Some((want, nth)) = target() else {
        return;
    };
    if want != step || SEEN.fetch_add(1, Ordering::SeqCst) + 1 != *nth {
        return;
    }
    // SAFETY: signalling this process; _exit only if SIGKILL somehow did not end it.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
        libc::_exit(137);
    }
}
