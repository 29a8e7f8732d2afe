//! The executor: carries out the manager's actions through a mount driver and reports each
//! outcome back as an event. It decides nothing about media or names; the only rollback here
//! is undoing the steps of one action that failed half-way (see [`kernel`]).

pub mod kernel;

use std::sync::Arc;

use crate::event::{Event, Medium};
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

    /// A normal stop. FUSE always unmounts (it cannot outlive the process); kernel mounts stay
    /// for the next start to adopt unless `cleanup_on_exit`.
    pub fn shutdown(self, cleanup_on_exit: bool) {
        match self {
            Executor::Fuse(e) => e.shutdown(),
            Executor::Kernel(e) => e.shutdown(cleanup_on_exit),
        }
    }
}

/// Runs actions with the FUSE driver (one FUSE filesystem at the root).
pub struct FuseExecutor {
    driver: FuseDriver,
}

impl FuseExecutor {
    pub fn new(driver: FuseDriver) -> Self {
        FuseExecutor { driver }
    }

    /// Runs one action; the outcome to feed back to the manager, if any. One log line per
    /// thing that happens to a medium.
    pub fn run(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Publish { name, mut medium } => Some(match self.publish(&name, &mut medium) {
                Ok(()) => {
                    tracing::info!(name = %name, origin = %medium.origin.display(), label = medium.label.as_deref().unwrap_or(""), "mounted");
                    Event::Published {
                        id: medium.id,
                        name,
                        loop_device: None,
                    }
                }
                Err(error) => {
                    tracing::error!(origin = %medium.origin.display(), %error, "not served");
                    Event::Failed {
                        id: medium.id,
                        name,
                        error,
                    }
                }
            }),
            Action::Unpublish { name, id } => {
                if self.driver.remove(&name) {
                    tracing::info!(name = %name, medium = %id, "removed");
                }
                None
            }
            Action::SaveState => None,
        }
    }

    fn publish(&mut self, name: &str, medium: &mut Medium) -> Result<(), String> {
        let file = match medium.handle.take() {
            // The action holds the only reference: serve that very descriptor (one per medium).
            Some(h) => match Arc::try_unwrap(h.0) {
                Ok(file) => file,
                Err(shared) => shared
                    .try_clone()
                    .map_err(|e| format!("duplicating the descriptor: {e}"))?,
            },
            None => std::fs::File::open(&medium.origin)
                .map_err(|e| format!("opening {}: {e}", medium.origin.display()))?,
        };
        let image = Image::open(file).map_err(|e| e.to_string())?;
        // Opening reads only the descriptors. A root directory that cannot be read would be
        // served as a directory that fails every listing: refuse it here, once, instead.
        image
            .read_dir(&image.root())
            .map_err(|e| format!("reading the root directory: {e}"))?;
        self.driver
            .add(name, Arc::new(image))
            .map_err(|e| e.to_string())
    }

    /// Unmounts the root (a normal stop).
    pub fn shutdown(self) {
        let root = self.driver.root().to_path_buf();
        if let Err(e) = self.driver.unmount() {
            tracing::error!(root = %root.display(), error = %e, "unmounting");
        }
    }
}
