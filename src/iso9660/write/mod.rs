//! Building ISO9660 images (with Rock Ridge and Joliet) from directory trees: `isomgr mkiso`.
//!
//! Split in a pure core and a thin shell, so the format logic is tested without touching disks:
//! - [`tree`]: the source tree's metadata as plain data, and [`tree::walk`] that reads it (lstat
//!   and readdir only, never file contents);
//! - [`names`]: ISO9660 and Joliet identifiers, unique in each directory (pure);
//! - [`susp`]: SUSP/RRIP entries and their packing into records and continuation areas (pure);
//! - [`layout`]: the whole image plan: hierarchy with deep directories relocated, every LBA,
//!   and the metadata bytes (pure; memory bounded by the tree's metadata);
//! - [`boot`]: El Torito: the boot record, the catalog (a file of the image) and the boot info
//!   table;
//! - [`target`]: where the image goes: a file (written unnamed, then renamed over it), or
//!   standard output, a pipe or a device (written in place, in order);
//! - [`stream`]: writes the plan there, copying file data sparse-aware.
//!
//! Nothing here prints: warnings come back in the [`Report`], progress through a callback.

pub mod boot;
mod copy;
pub mod hybrid;
pub mod layout;
pub mod names;
pub mod partition;
pub mod stream;
pub mod susp;
pub mod target;
pub mod tree;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What to build and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// Volume label as given; the PVD gets its d-character form, Joliet the label itself.
    pub label: String,
    /// Write a Joliet supplementary volume descriptor and tree.
    pub joliet: bool,
    /// Write Rock Ridge (RRIP 1.12) entries in the primary tree.
    pub rock_ridge: bool,
    /// genisoimage's `-r`: owners 0, everything readable, no write bits, no set-id bits.
    pub rational: bool,
    /// FIFOs, sockets and devices in the tree are errors instead of skipped with a warning.
    pub strict: bool,
    /// `SOURCE_DATE_EPOCH`: descriptor times, and volatile atime/ctime replaced by mtime.
    pub source_date_epoch: Option<i64>,
    /// El Torito boot images (none: the image does not boot).
    pub boot: boot::Boot,
    /// End the volume with [`layout::PAD_SECTORS`] zero sectors, as genisoimage and xorriso
    /// do.
    pub pad: bool,
    /// Entries of the source tree left out.
    pub exclude: tree::Exclude,
    /// Files and directories from elsewhere put into the image, in order.
    pub grafts: Vec<tree::Graft>,
}

#[cfg(test)]
impl Options {
    /// Label "T", Rock Ridge and Joliet, times fixed at 0: what this module's tests build.
    pub(crate) fn for_tests() -> Self {
        Options {
            label: "T".into(),
            joliet: true,
            rock_ridge: true,
            rational: false,
            strict: false,
            source_date_epoch: Some(0),
            boot: boot::Boot::default(),
            pad: true,
            exclude: tree::Exclude::default(),
            grafts: Vec::new(),
        }
    }
}

/// The tree at `src` and its layout with [`Options::for_tests`]: what a build writes.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn plan_for_tests(src: &Path) -> (tree::Tree, layout::Plan) {
    let mut w = Vec::new();
    let t = tree::walk(src, false, &tree::Exclude::default(), &mut w).unwrap();
    let plan = layout::plan(&t, &Options::for_tests(), 0, &mut w, src).unwrap();
    (t, plan)
}

/// A recovered anomaly the caller should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// A FIFO, socket or device: an ISO image cannot hold it, so it was left out.
    SkippedSpecial { path: PathBuf, kind: &'static str },
    /// A symlink without Rock Ridge has nowhere to go, so it was left out.
    SkippedSymlink { path: PathBuf },
    /// A symlink whose target libisofs-based readers (xorriso) refuse; written all the same.
    LongSymlinkTarget { path: PathBuf, len: usize },
    /// A Rock Ridge name Linux's isofs shows cut to `shown` bytes; written whole all the same.
    NameCutByLinux {
        path: PathBuf,
        len: usize,
        shown: usize,
    },
    /// The label cannot be stored as given; blkid and the watcher will read `read_back`.
    LabelChanged {
        label: String,
        read_back: Option<String>,
    },
    /// A boot image that will not boot as it is given (which, and why).
    BootImage { path: PathBuf, why: String },
    /// A hard disk image to emulate that is not whole cylinders of the geometry a BIOS takes
    /// from its partition's CHS end.
    HardDiskGeometry {
        path: PathBuf,
        cylinders: u64,
        heads: u64,
        per_track: u64,
        size: u64,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::SkippedSpecial { path, kind } => {
                write!(
                    f,
                    "skipped {}: a {kind} cannot be stored in an ISO image",
                    path.display()
                )
            }
            Warning::SkippedSymlink { path } => write!(
                f,
                "skipped symlink {}: symlinks need Rock Ridge",
                path.display()
            ),
            Warning::LongSymlinkTarget { path, len } => write!(
                f,
                "symlink {} has a target of {len} bytes: stored as it is (the kernel and bsdtar \
                 read it), but xorriso and other libisofs readers refuse an image with a \
                 target of 1024 bytes or more",
                path.display()
            ),
            Warning::NameCutByLinux { path, len, shown } => write!(
                f,
                "{} has a name of {len} bytes: stored whole (bsdtar, xorriso and isomgr's FUSE \
                 driver read it), but Linux's isofs shows names of 254 bytes or more cut to \
                 their first {shown} bytes",
                path.display()
            ),
            Warning::LabelChanged { label, read_back } => write!(
                f,
                "label {label:?} reads back as {}: past Joliet's 16 characters (or without \
                 Joliet) a label holds printable ASCII only, and no trailing spaces",
                read_back
                    .as_ref()
                    .map_or_else(|| "none".to_string(), |l| format!("{l:?}"))
            ),
            Warning::BootImage { path, why } => {
                write!(f, "boot image {}: {why}", path.display())
            }
            Warning::HardDiskGeometry {
                path,
                cylinders,
                heads,
                per_track,
                size,
            } => write!(
                f,
                "hard disk image {} has {size} bytes, but its partition's CHS end gives a disk \
                 of {cylinders} cylinders, {heads} heads and {per_track} sectors a track ({} \
                 bytes), which is what a BIOS emulates: what lies past it cannot be read, and \
                 a boot loader that checks the size may fail",
                path.display(),
                cylinders * heads * per_track * 512
            ),
        }
    }
}

/// Progress of the data phase: bytes of file data done out of the total known up front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// What a successful build made.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub warnings: Vec<Warning>,
    pub files: usize,
    pub dirs: usize,
    pub image_bytes: u64,
}

/// Errors of `mkiso`; each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("--graft {at}={source_path}: {why}")]
    Graft {
        at: String,
        source_path: PathBuf,
        why: String,
    },
    #[error("reading metadata of {path}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("reading directory {path}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("reading symlink {path}")]
    ReadLink { path: PathBuf, source: io::Error },
    #[error("{path} is a {kind}, which an ISO image cannot hold (--strict)")]
    Special { path: PathBuf, kind: &'static str },
    #[error("output {output} is inside the source tree {source_dir}")]
    OutputInsideSource {
        output: PathBuf,
        source_dir: PathBuf,
    },
    #[error("opening {path}")]
    Open { path: PathBuf, source: io::Error },
    #[error("output {path} is a {kind}; an image can go to a file, a pipe or a device")]
    OutputUnusable { path: PathBuf, kind: &'static str },
    #[error("{path} is a terminal; send the image to a file or a pipe")]
    OutputTerminal { path: PathBuf },
    #[error(
        "output {path} is a symlink to {target}, which does not exist; not writing through it"
    )]
    OutputDangling { path: PathBuf, target: PathBuf },
    #[error("{path} holds {size} bytes; the image needs {needed}")]
    DeviceTooSmall {
        path: PathBuf,
        size: u64,
        needed: u64,
    },
    #[error("reading {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} changed size while being written: {expected} bytes when listed, {actual} now")]
    SizeChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path} was replaced while the image was built: it is no longer a regular file")]
    NotRegular { path: PathBuf },
    #[error("creating {path}")]
    Create { path: PathBuf, source: io::Error },
    #[error("writing {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("renaming {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("the tree has {count} directories; ISO9660 path tables number at most 65535")]
    TooManyDirectories { count: usize },
    #[error("the image would need {sectors} sectors; ISO9660 counts at most 4294967295")]
    TooLarge { sectors: u64 },
    #[error("{what} {path}: {why}")]
    Boot {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("internal layout error: {0}")]
    Layout(&'static str),
}

/// Builds `output` from the tree at `src`: walks it, plans the image and streams it to where
/// [`target::Target`] says: a file (then on error nothing is left at `output` or beside it),
/// or standard output, a pipe or a device.
pub fn build(
    src: &Path,
    output: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, Error> {
    // (a graft source that is not there is reported by its graft, below)
    let mut sources = vec![src];
    sources.extend(
        opts.grafts
            .iter()
            .map(|g| g.source.as_path())
            .filter(|p| p.exists()),
    );
    let target = target::Target::prepare(&sources, output)?;
    let mut warnings = Vec::new();
    let read_back = names::label_read_back(&opts.label, opts.joliet);
    if read_back.as_deref().unwrap_or("") != opts.label {
        warnings.push(Warning::LabelChanged {
            label: opts.label.clone(),
            read_back,
        });
    }
    let mbr_code = match &opts.boot.isohybrid_mbr {
        Some(path) => Some(hybrid::read_mbr_code(path, hybrid::MbrKind::Isohybrid)?),
        None => None,
    };
    let grub2_mbr_code = match &opts.boot.grub2_mbr {
        Some(path) => Some(hybrid::read_mbr_code(path, hybrid::MbrKind::Grub2)?),
        None => None,
    };
    let now = opts.source_date_epoch.unwrap_or_else(crate::unix_now);
    let mut tree = tree::walk(src, opts.strict, &opts.exclude, &mut warnings)?;
    if !opts.grafts.is_empty() {
        for g in &opts.grafts {
            tree::graft(&mut tree, g, opts.strict, &opts.exclude, now, &mut warnings)?;
        }
        tree = tree::compact(&tree);
    }
    boot::add_catalog(&mut tree, &opts.boot, src, now)?;
    let mut plan = layout::plan(&tree, opts, now, &mut warnings, src)?;
    hybrid::put_system_area(
        &mut plan,
        &opts.boot,
        (mbr_code.as_deref(), grub2_mbr_code.as_deref()),
        &tree,
        (&opts.label, now),
    )?;
    boot::check_info_table(&plan, &tree, &opts.boot, &mut warnings)?;
    target.write(&tree, &plan, progress)?;
    Ok(Report {
        warnings,
        files: tree.file_count(),
        dirs: tree.dir_count(),
        image_bytes: plan.image_bytes(),
    })
}
