//! Sources: each turns its world (directories of image files, optical drives) into
//! [`crate::event::Event`]s on one bounded channel. Adding a source never touches the manager.

pub mod dirs;
pub mod drives;
pub mod fstype;
pub mod inotify;
pub mod mounts;
pub mod parents;
pub mod uevent;

/// A running source, as the daemon drives it.
pub trait Source: Send {
    /// Looks at everything again and reconciles (SIGHUP, an inotify overflow).
    fn rescan(&self);
    /// Stops the source and waits until it has.
    fn stop(self: Box<Self>);
}
