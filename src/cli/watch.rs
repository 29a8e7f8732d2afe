//! `isomgr watch`: the daemon. Watches directories of image files and serves each image as a
//! directory named after its label under the root.

use std::path::PathBuf;

use regex::Regex;

use crate::daemon;
use crate::source::dirs::DirsConfig;
use crate::source::drives::DrivesConfig;

/// The directories to watch, and whether drives are watched (`Some(true)`: asked for, so udev
/// must be there; `Some(false)`: only by default). No source named: /srv/iso-drop and drives.
fn sources(args: &Args) -> (Vec<PathBuf>, Option<bool>) {
    let asked = args.drives || args.drives_any_block;
    let dirs = if args.dirs.is_empty() && !asked {
        vec![PathBuf::from("/srv/iso-drop")]
    } else {
        args.dirs.clone()
    };
    let drives = if asked {
        Some(true)
    } else if args.dirs.is_empty() && !args.no_drives {
        Some(false)
    } else {
        None
    };
    (dirs, drives)
}

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
    /// A directory tree of image files to watch (repeatable). With no --dir and no --drives:
    /// /srv/iso-drop and the drives.
    #[arg(long = "dir", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Watch optical drives through udev (a disc inserted appears, ejected goes); fails when
    /// udev is not running. On by default when no --dir is given (then udev missing is a
    /// warning).
    #[arg(long, conflicts_with = "no_drives")]
    pub drives: bool,
    /// Do not watch drives.
    #[arg(long)]
    pub no_drives: bool,
    /// Also take any whole block device whose filesystem is iso9660 or udf (USB sticks written
    /// with an image, loop devices attached by someone else); implies --drives.
    #[arg(long, conflicts_with = "no_drives")]
    pub drives_any_block: bool,
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
    let (dirs, drives) = sources(args);
    let dirs = dirs
        .into_iter()
        .map(|d| std::path::absolute(&d).unwrap_or(d))
        .collect::<Vec<_>>();
    daemon::run(daemon::Config {
        dirs: (!dirs.is_empty()).then(|| DirsConfig {
            dirs,
            include,
            exclude,
            follow_symlinks: !args.no_follow_symlinks,
        }),
        drives: drives.map(|required| daemon::DrivesSetup {
            cfg: DrivesConfig {
                any_block: args.drives_any_block,
                own_loops: Default::default(),
            },
            required,
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &[&str]) -> Args {
        let mut argv = vec!["isomgr", "watch"];
        argv.extend_from_slice(line);
        match crate::cli::Cli::try_parse_from(argv)
            .expect("valid command line")
            .command
        {
            crate::cli::Command::Watch(a) => a,
            _ => unreachable!("parsed as watch"),
        }
    }

    #[test]
    fn sources_follow_the_flags() {
        let drop = || vec![PathBuf::from("/srv/iso-drop")];
        let table: Vec<(&[&str], Vec<PathBuf>, Option<bool>)> = vec![
            (&[], drop(), Some(false)),
            (&["--no-drives"], drop(), None),
            (&["--dir", "/a"], vec!["/a".into()], None),
            (&["--dir", "/a", "--drives"], vec!["/a".into()], Some(true)),
            (&["--drives"], vec![], Some(true)),
            (&["--drives-any-block"], vec![], Some(true)),
            (
                &["--dir", "/a", "--drives-any-block"],
                vec!["/a".into()],
                Some(true),
            ),
        ];
        for (line, dirs, drives) in table {
            assert_eq!(sources(&args(line)), (dirs, drives), "{line:?}");
        }
    }

    #[test]
    fn drives_and_no_drives_conflict() {
        for line in [
            ["watch", "--drives", "--no-drives"],
            ["watch", "--drives-any-block", "--no-drives"],
        ] {
            let argv = std::iter::once("isomgr").chain(line);
            assert!(crate::cli::Cli::try_parse_from(argv).is_err(), "{line:?}");
        }
    }
}
