//! The one event type every source produces and the manager consumes: owned plain data, no
//! udev or inotify type crosses it. Executor outcomes come back as events too.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Which kind of source a medium came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Dir,
    Drive,
}

/// Identity of a medium, stable while it is present and across restarts: `file:DEV:INO` for an
/// image file (a rename keeps it, an atomic replace changes it), `drive:NODE:SEQ` for a disc.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MediumId(pub Arc<str>);

impl MediumId {
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        MediumId(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MediumId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A medium that is present and complete, identified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Medium {
    pub id: MediumId,
    pub source: SourceKind,
    /// The image file's path or the device node.
    pub origin: PathBuf,
    /// The label blkid would report.
    pub label: Option<String>,
    /// What names the medium when the label cannot: the file stem or the kernel device name.
    pub fallback: String,
    /// The filesystem to mount it as ("iso9660", "udf"), as identified; `None` when unknown.
    pub fs: Option<String>,
    /// The descriptor the source opened and identified: the one that is served.
    pub handle: Option<Handle>,
}

/// An open image or device, shared between the source that opened it and the driver that
/// serves it. Equal when it is the same open file.
#[derive(Clone, Debug)]
pub struct Handle(pub Arc<File>);

impl PartialEq for Handle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Handle {}

/// Something that happened to a medium, or the outcome of an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A medium is present, complete and identified (or was re-identified after a change).
    Appeared(Medium),
    /// The same medium now lives at another path (a rename inside a watched tree).
    Moved { id: MediumId, origin: PathBuf },
    /// The medium is gone (deleted, renamed away, ejected).
    Vanished(MediumId),
    /// A full scan of a source finished: these are all the media it has; any other medium of
    /// that source is gone.
    ScanDone {
        source: SourceKind,
        present: Vec<MediumId>,
    },
    /// The executor published the medium under this name (through this loop device, for
    /// the kernel driver).
    Published {
        id: MediumId,
        name: String,
        loop_device: Option<PathBuf>,
    },
    /// Publishing failed; the medium stays known but is not served until it changes.
    Failed {
        id: MediumId,
        name: String,
        error: String,
    },
    /// Names in the root that isomgr did not make (they count as taken).
    ForeignEntries(Vec<String>),
    /// The eject button of the drive at `device` was pressed while it held this medium: stop
    /// serving it, then open the tray (readers still holding files of it lose the disc).
    EjectRequested { id: MediumId, device: PathBuf },
}
