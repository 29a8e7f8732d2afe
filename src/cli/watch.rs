//! `isomgr watch`: the daemon. Watches directories of image files and serves each image as a
//! directory named after its label under the root.

use std::path::PathBuf;

use regex::Regex;

use crate::daemon;
use crate::source::dirs::DirsConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    /// The kernel where it can mount ISO9660 images, FUSE otherwise.
    Auto,
    /// Loop devices and mount(2).
    Kernel,
    /// isomgr's own read-only FUSE filesystem at the root.
    Fuse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A directory tree of image files to watch (repeatable; default /srv/iso-drop).
    #[arg(long = "dir", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where each medium appears as a directory.
    #[arg(long, value_name = "DIR", default_value = "/srv/isos")]
    pub root: PathBuf,
    /// How media are mounted.
    #[arg(long, value_enum, default_value_t = Driver::Auto)]
    pub driver: Driver,
    /// The state file: which medium holds which name.
    #[arg(long, value_name = "FILE", default_value = "/run/isomgr/state.json")]
    pub state: PathBuf,
    /// Also write the status document here on every change (for a web page or a boot menu).
    #[arg(long, value_name = "FILE")]
    pub index_file: Option<PathBuf>,
    /// File names taken from watched directories (a regex; default: ending in .iso, any case).
    #[arg(long, value_name = "REGEX")]
    pub include: Option<String>,
    /// File names refused even when included (a regex).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Option<String>,
    /// Refuse symlinks in watched directories (by default a symlink to a regular file is taken).
    #[arg(long)]
    pub no_follow_symlinks: bool,
    /// At a normal stop, unmount kernel mounts too (by default they stay for the next start
    /// to adopt, so downloads are not cut; FUSE always unmounts).
    #[arg(long)]
    pub cleanup_on_exit: bool,
    /// Log lines as text or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let include = match &args.include {
        Some(p) => Regex::new(p).map_err(|e| anyhow::anyhow!("--include {p:?}: {e}"))?,
        None => DirsConfig::default_include(),
    };
    let exclude = match &args.exclude {
        Some(p) => Some(Regex::new(p).map_err(|e| anyhow::anyhow!("--exclude {p:?}: {e}"))?),
        None => None,
    };
    let dirs = if args.dirs.is_empty() {
        vec![PathBuf::from("/srv/iso-drop")]
    } else {
        args.dirs.clone()
    };
    let dirs = dirs
        .into_iter()
        .map(|d| std::path::absolute(&d).unwrap_or(d))
        .collect();
    daemon::run(daemon::Config {
        dirs: DirsConfig {
            dirs,
            include,
            exclude,
            follow_symlinks: !args.no_follow_symlinks,
        },
        root: args.root.clone(),
        state: args.state.clone(),
        index_file: args.index_file.clone(),
        driver: match args.driver {
            Driver::Auto => daemon::DriverChoice::Auto,
            Driver::Kernel => daemon::DriverChoice::Kernel,
            Driver::Fuse => daemon::DriverChoice::Fuse,
        },
        cleanup_on_exit: args.cleanup_on_exit,
    })
}
