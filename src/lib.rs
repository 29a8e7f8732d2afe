//! isomgr: makes optical-disc images appear as directories by themselves.
//!
//! Crate map:
//! - [`iso9660`]: the pure ISO9660 / Rock Ridge / Joliet / El Torito reader and the UDF label,
//!   with the on-disk types the writer shares. Bytes in, typed values or errors out; and the
//!   writer behind `mkiso` (`iso9660::write`).
//! - [`event`]: the one event type sources produce and the manager consumes.
//! - [`manager`]: the pure mount manager (event in, actions out), names and persisted state.
//! - [`names`]: volume labels made into safe directory names, collisions resolved.
//! - [`source`]: event sources (directories of images through inotify).
//! - [`exec`], [`daemon`]: the executors (FUSE, kernel) and the watcher's wiring (tokio,
//!   signals, state file).
//! - [`notify`]: systemd readiness notification (sd_notify) and when the watcher is ready.
//! - [`sys`]: every effect of the kernel driver behind one trait (Linux, recording fake).
//! - [`cdrom`]: the requests made of an optical drive (tray state, door, eject).
//! - [`cli`]: one module per subcommand; the only layer that prints.
//! - [`config`]: the watcher's configuration file (TOML), parsed and validated (pure).
//! - [`hooks`]: the operator's commands run on each medium mounted or removed.
//! - [`crashpoint`]: `ISOMGR_CRASH_AT`, a testing aid that kills the process at a named step.
//! - [`fuse`]: the FUSE mount driver (one read-only FUSE filesystem at the root) and its pure
//!   inode table.

pub mod cdrom;
pub mod cli;
pub mod config;
pub mod crashpoint;
pub mod daemon;
pub mod event;
pub mod exec;
pub mod fuse;
pub mod hooks;
pub mod iso9660;
pub mod manager;
pub mod names;
pub mod notify;
pub mod offload;
pub mod source;
pub mod sys;

/// The time now as Unix seconds (0 before 1970), what the state file and image timestamps use.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
