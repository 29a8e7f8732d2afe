//! `isomgr watch`: the daemon. Watches directories of image files (and drives) and serves
//! each medium as a directory named after its label under the root.
//!
//! The effective configuration is the configuration file (`/etc/isomgr/config.toml` where
//! present, or `--config FILE`) with the command line on top: a flag given wins over the key.
//! `--check-config` stops after validating and prints what would run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, FileConfig};
pub use crate::config::{Driver, LogFormat};
use crate::daemon;
use crate::hooks::{self, HookConfig};
use crate::source::dirs::{self, DirSpec, DirsConfig, PollMode};
use crate::source::drives::DrivesConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A directory tree of image files to watch (repeatable; replaces the config file's
    /// [[dir]] tables). With no --dir and no --drives: /srv/iso-drop and the drives.
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
    /// Where each medium appears as a directory [default: /srv/isos]; outside every watched
    /// directory, and none inside it.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// How media are mounted [default: auto].
    #[arg(long, value_enum)]
    pub driver: Option<Driver>,
    /// The configuration file (TOML) [default: /etc/isomgr/config.toml where present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration file and the flags, print the effective configuration,
    /// and exit (nothing is mounted or written).
    #[arg(long)]
    pub check_config: bool,
    /// The state file: which medium holds which name [default: /run/isomgr/state.json].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Also write the status document here on every change (for a web page or a boot menu).
    #[arg(long, value_name = "FILE")]
    pub index_file: Option<PathBuf>,
    /// A command run (with /bin/sh -c) on each medium mounted or removed, with ISOMGR_EVENT,
    /// ISOMGR_NAME, ISOMGR_LABEL, ISOMGR_PATH, ISOMGR_SOURCE, ISOMGR_ORIGIN set (repeatable;
    /// replaces the config file's `exec`).
    #[arg(long = "exec", value_name = "CMD")]
    pub exec: Vec<String>,
    /// Seconds a hook may run before it is killed [default: 30].
    #[arg(long, value_name = "SECS")]
    pub hook_timeout: Option<f64>,
    /// File names taken from watched directories (a regex; default: ending in .iso, any case).
    #[arg(long, value_name = "REGEX")]
    pub include: Option<String>,
    /// File names refused even when included (a regex).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Option<String>,
    /// Take symlinks to regular files in watched directories (the default).
    #[arg(long, conflicts_with = "no_follow_symlinks")]
    pub follow_symlinks: bool,
    /// Refuse symlinks in watched directories.
    #[arg(long)]
    pub no_follow_symlinks: bool,
    /// Poll watched directories on a timer: auto (on network and FUSE file systems), always,
    /// never [default: auto].
    #[arg(long, value_enum, value_name = "MODE")]
    pub poll: Option<PollMode>,
    /// Seconds between two rescans of a polled directory [default: 10].
    #[arg(long, value_name = "SECS")]
    pub poll_interval: Option<f64>,
    /// At a normal stop, unmount kernel mounts too (by default they stay for the next start
    /// to adopt, so downloads are not cut; FUSE always unmounts).
    #[arg(long)]
    pub cleanup_on_exit: bool,
    /// Log lines as text or as JSON objects [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The configuration `watch` runs with: the file, the flags on top, the defaults below.
#[derive(Clone, Debug)]
pub struct Effective {
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    pub dirs: Vec<DirSpec>,
    /// Drives watched: `Some(true)` asked for (udev missing is fatal), `Some(false)` by
    /// default only (a warning), `None` not watched.
    pub drives: Option<bool>,
    pub any_block: bool,
    pub root: PathBuf,
    pub driver: Driver,
    pub state: PathBuf,
    pub index_file: Option<PathBuf>,
    pub exec: Vec<String>,
    pub hook_timeout: Duration,
    pub poll_interval: Duration,
    pub cleanup_on_exit: bool,
    pub log_format: LogFormat,
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Merges the configuration file (if any) with the flags: a flag given wins.
pub fn merge(args: &Args, file: Option<(PathBuf, FileConfig)>) -> Result<Effective, config::Error> {
    let (path, f) = match file {
        Some((p, f)) => (Some(p), f),
        None => (None, FileConfig::default()),
    };
    let include = args
        .include
        .as_deref()
        .map(|v| config::flag_regex("--include", v))
        .transpose()?;
    let exclude = args
        .exclude
        .as_deref()
        .map(|v| config::flag_regex("--exclude", v))
        .transpose()?;
    let follow = if args.no_follow_symlinks {
        Some(false)
    } else if args.follow_symlinks {
        Some(true)
    } else {
        None
    };
    let spec = |path: PathBuf, e: Option<&config::DirEntry>| DirSpec {
        path,
        include: include
            .clone()
            .or_else(|| e.and_then(|e| e.include.clone()))
            .or_else(|| f.include.clone())
            .unwrap_or_else(DirsConfig::default_include),
        exclude: exclude
            .clone()
            .or_else(|| e.and_then(|e| e.exclude.clone()))
            .or_else(|| f.exclude.clone()),
        follow_symlinks: follow
            .or_else(|| e.and_then(|e| e.follow_symlinks))
            .or(f.follow_symlinks)
            .unwrap_or(true),
        poll: args
            .poll
            .or_else(|| e.and_then(|e| e.poll))
            .or(f.poll)
            .unwrap_or_default(),
    };
    let mut dirs: Vec<DirSpec> = if args.dirs.is_empty() {
        f.dirs
            .iter()
            .map(|e| spec(e.path.clone(), Some(e)))
            .collect()
    } else {
        args.dirs.iter().map(|d| spec(absolute(d), None)).collect()
    };

    // Drives: a flag wins over the file's `drives` / `drives_any_block`.
    let file_asked =
        f.drives == Some(true) || (f.drives_any_block == Some(true) && f.drives != Some(false));
    let flag_asked = args.drives || args.drives_any_block;
    let asked = flag_asked || (file_asked && !args.no_drives);
    let no_drives = args.no_drives || (!flag_asked && f.drives == Some(false));
    let any_block = args.drives_any_block
        || (!args.no_drives && f.drives_any_block == Some(true) && f.drives != Some(false));
    let dirs_given = !dirs.is_empty();
    if !dirs_given && !asked {
        dirs.push(spec(PathBuf::from("/srv/iso-drop"), None));
    }
    let drives = if asked {
        Some(true)
    } else if !dirs_given && !no_drives {
        Some(false)
    } else {
        None
    };

    let root = args
        .root
        .as_deref()
        .map(absolute)
        .or(f.root)
        .unwrap_or_else(|| "/srv/isos".into());
    let state = args
        .state
        .as_deref()
        .map(absolute)
        .or(f.state)
        .unwrap_or_else(|| "/run/isomgr/state.json".into());
    let index_file = args.index_file.as_deref().map(absolute).or(f.index_file);
    let mut files = vec![("state file", state.as_path())];
    files.extend(index_file.as_deref().map(|i| ("index file", i)));
    apart(&root, &dirs, &files)?;
    let seconds = |flag: &'static str, v: Option<f64>, poll: bool| {
        v.map(|v| config::flag_seconds(flag, v, poll)).transpose()
    };
    Ok(Effective {
        file: path,
        dirs,
        drives,
        any_block: any_block && drives.is_some(),
        root,
        driver: args.driver.or(f.driver).unwrap_or_default(),
        state,
        index_file,
        exec: if args.exec.is_empty() {
            f.exec
        } else {
            args.exec.clone()
        },
        hook_timeout: seconds("--hook-timeout", args.hook_timeout, false)?
            .or(f.hook_timeout)
            .unwrap_or(hooks::DEFAULT_TIMEOUT),
        poll_interval: seconds("--poll-interval", args.poll_interval, true)?
            .or(f.poll_interval)
            .unwrap_or(dirs::DEFAULT_POLL_INTERVAL),
        cleanup_on_exit: args.cleanup_on_exit || f.cleanup_on_exit.unwrap_or(false),
        log_format: args.log_format.or(f.log_format).unwrap_or_default(),
    })
}

/// Refuses a watched directory that is the root or lies inside it (the FUSE mount would hide
/// it, and a medium could be named like it), a root that lies inside a watched directory
/// (isomgr would take the images inside the media it serves for images to serve, and watch
/// every directory of every mounted medium), and a file isomgr writes (`files`: what it is,
/// and where) inside the root (the FUSE root is read-only; a medium could be named like it)
/// or inside a watched directory (isomgr writes nothing there), and a directory watched twice
/// (which of its two entries' patterns would apply?). Paths are compared with their symlinks
/// resolved.
fn apart(root: &Path, dirs: &[DirSpec], files: &[(&str, &Path)]) -> Result<(), config::Error> {
    let mut given: Vec<&Path> = vec![root];
    given.extend(dirs.iter().map(|d| d.path.as_path()));
    given.extend(files.iter().map(|(_, f)| *f));
    let real = resolved(&given);
    let shown = |i: usize| {
        if given[i] == real[i] {
            given[i].display().to_string()
        } else {
            format!("{} ({})", given[i].display(), real[i].display())
        }
    };
    let (real_root, root_s) = (&real[0], shown(0));
    let files_at = 1 + dirs.len();
    for (d, dir) in real.iter().enumerate().take(files_at).skip(1) {
        let dir_s = shown(d);
        let message = if dir == real_root {
            format!("the watched directory {dir_s} is the root, where isomgr serves the media: watch a directory outside the root")
        } else if dir.starts_with(real_root) {
            format!("the watched directory {dir_s} lies inside the root {root_s}, where isomgr serves the media (a FUSE root would hide it; a medium could be named like it): watch a directory outside the root")
        } else if real_root.starts_with(dir) {
            format!("the root {root_s} lies inside the watched directory {dir_s}: isomgr would take the images inside the media it serves for images to serve; put the root outside the watched directories")
        } else {
            continue;
        };
        return Err(config::Error::Places(message));
    }
    for (d, dir) in real.iter().enumerate().take(files_at).skip(1) {
        if let Some(e) = (d + 1..files_at).find(|&e| real[e] == *dir) {
            return Err(config::Error::Places(format!(
                "the watched directories {} and {} are one directory: give it once",
                shown(d),
                shown(e)
            )));
        }
    }
    for (k, (what, _)) in files.iter().enumerate() {
        let f = files_at + k;
        let message = if real[f].starts_with(real_root) {
            format!("the {what} {} lies inside the root {root_s}, where isomgr serves the media (a FUSE root is read-only; a medium could be named like it): put it outside the root", shown(f))
        } else if let Some(d) = (1..files_at).find(|&d| real[f].starts_with(&real[d])) {
            format!("the {what} {} lies inside the watched directory {}: isomgr writes nothing into a watched directory; put it outside", shown(f), shown(d))
        } else {
            continue;
        };
        return Err(config::Error::Places(message));
    }
    Ok(())
}

/// `paths` resolved ([`resolve`]) on a thread of their own: a directory on a network file
/// system whose server is down must not hold up the start (after [`crate::offload::WAIT`]
/// they are taken as written, only `.` and `..` taken out).
fn resolved(paths: &[&Path]) -> Vec<PathBuf> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    let spawned = std::thread::Builder::new()
        .name("resolve paths".into())
        .spawn(move || {
            let real = owned
                .iter()
                .map(|p| resolve(p, |p| std::fs::read_link(p).ok()))
                .collect::<Vec<_>>();
            let _ = tx.send(real);
        });
    spawned
        .ok()
        .and_then(|_| rx.recv_timeout(crate::offload::WAIT).ok())
        .unwrap_or_else(|| paths.iter().map(|p| resolve(p, |_| None)).collect())
}

/// Absolute path `p` with its symlinks resolved (`read_link`) and `.` and `..` taken out, as
/// far as it exists (the rest as written, a dangling symlink followed): where it is, or will
/// be once made.
fn resolve(p: &Path, read_link: impl Fn(&Path) -> Option<PathBuf>) -> PathBuf {
    fn push_parts(todo: &mut Vec<std::ffi::OsString>, p: &Path) {
        for c in p.components().rev() {
            match c {
                std::path::Component::Normal(n) => todo.push(n.to_owned()),
                std::path::Component::ParentDir => todo.push("..".into()),
                _ => {}
            }
        }
    }
    let mut real = PathBuf::from("/");
    let mut todo = Vec::new();
    push_parts(&mut todo, p);
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            real.pop();
            continue;
        }
        let next = real.join(&part);
        match read_link(&next) {
            // (At most 40 links, as the kernel follows: a loop ends as a path.)
            Some(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    real = PathBuf::from("/");
                }
                push_parts(&mut todo, &target);
            }
            _ => real = next,
        }
    }
    real
}

/// The log format before anything else runs (logging is set up first): the flag, else the
/// configuration file's key where it can be read (its errors are reported by [`run`]).
pub fn log_format(args: &Args) -> LogFormat {
    args.log_format
        .or_else(|| {
            config::load(args.config.as_deref())
                .ok()
                .flatten()
                .and_then(|(_, f)| f.log_format)
        })
        .unwrap_or_default()
}

/// The effective configuration in a few lines (`--check-config`).
pub fn summary(e: &Effective, out: &mut impl Write) -> std::io::Result<()> {
    let or_none = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
    };
    match &e.file {
        Some(p) => writeln!(out, "config: {}", p.display())?,
        None => writeln!(out, "config: none ({} absent)", config::DEFAULT_PATH)?,
    }
    writeln!(out, "root: {}", e.root.display())?;
    writeln!(out, "driver: {}", e.driver.as_str())?;
    writeln!(out, "state: {}", e.state.display())?;
    writeln!(out, "index_file: {}", or_none(&e.index_file))?;
    writeln!(out, "log_format: {}", e.log_format.as_str())?;
    writeln!(out, "cleanup_on_exit: {}", e.cleanup_on_exit)?;
    let drives = match e.drives {
        Some(true) => "on (udev required)",
        Some(false) => "on where udev runs",
        None => "off",
    };
    writeln!(out, "drives: {drives}; any block device: {}", e.any_block)?;
    writeln!(out, "poll_interval: {} s", dirs::secs(e.poll_interval))?;
    let table = crate::source::mounts::read().unwrap_or_default();
    for (i, d) in e.dirs.iter().enumerate() {
        let decision = dirs::poll_decision(d, e.poll_interval);
        writeln!(
            out,
            "dir {}: include {}, exclude {}, follow_symlinks {}, poll {} ({})",
            d.path.display(),
            d.include.as_str(),
            d.exclude.as_ref().map_or("none", |x| x.as_str()),
            d.follow_symlinks,
            d.poll.as_str(),
            decision.why
        )?;
        if decision.poll {
            continue;
        }
        let real = std::fs::canonicalize(&d.path).ok();
        for (at, fs) in dirs::shares_inside(&e.dirs, i, real.as_deref(), &table) {
            writeln!(
                out,
                "  {}: {fs} mounted inside: polled on its own every {} s",
                at.display(),
                dirs::secs(e.poll_interval)
            )?;
        }
    }
    if e.exec.is_empty() {
        writeln!(out, "exec: none")?;
    }
    for cmd in &e.exec {
        writeln!(
            out,
            "exec (timeout {} s): {cmd}",
            dirs::secs(e.hook_timeout)
        )?;
    }
    writeln!(out, "configuration OK")
}

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let file = config::load(args.config.as_deref())?;
    let e = merge(args, file)?;
    if args.check_config {
        summary(&e, out)?;
        return Ok(());
    }
    if let Some(p) = &e.file {
        tracing::info!(config = %p.display(), "configuration read");
    }
    daemon::run(daemon::Config {
        dirs: (!e.dirs.is_empty()).then(|| DirsConfig {
            dirs: e.dirs.clone(),
            root: e.root.clone(),
            poll_interval: e.poll_interval,
        }),
        drives: e.drives.map(|required| daemon::DrivesSetup {
            cfg: DrivesConfig {
                any_block: e.any_block,
                own_loops: Default::default(),
            },
            required,
        }),
        root: e.root.clone(),
        state: e.state.clone(),
        index_file: e.index_file.clone(),
        driver: match e.driver {
            Driver::Auto => daemon::DriverChoice::Auto,
            Driver::Kernel => daemon::DriverChoice::Kernel,
            Driver::Fuse => daemon::DriverChoice::Fuse,
        },
        cleanup_on_exit: e.cleanup_on_exit,
        hooks: (!e.exec.is_empty()).then(|| HookConfig {
            commands: e.exec.clone(),
            timeout: e.hook_timeout,
        }),
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

    fn merged(line: &[&str], file: &str) -> Effective {
        let f = (!file.is_empty()).then(|| {
            let p = PathBuf::from("/c.toml");
            (p.clone(), config::parse(&p, file).expect("valid config"))
        });
        merge(&args(line), f).expect("valid configuration")
    }

    fn sources(line: &[&str], file: &str) -> (Vec<PathBuf>, Option<bool>) {
        let e = merged(line, file);
        (e.dirs.into_iter().map(|d| d.path).collect(), e.drives)
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
            assert_eq!(sources(line, ""), (dirs, drives), "{line:?}");
        }
    }

    #[test]
    fn sources_follow_the_file_and_flags_win() {
        let two = "[[dir]]\npath = \"/a\"\n[[dir]]\npath = \"/b\"\n";
        let ab = || vec![PathBuf::from("/a"), PathBuf::from("/b")];
        let with = |extra: &str| format!("[watch]\n{extra}\n{two}");
        type Case<'a> = (&'a [&'a str], String, Vec<PathBuf>, Option<bool>);
        let table: Vec<Case> = vec![
            (&[], two.into(), ab(), None),
            (&[], with("drives = true"), ab(), Some(true)),
            (&["--no-drives"], with("drives = true"), ab(), None),
            (&["--dir", "/c"], two.into(), vec!["/c".into()], None),
            (&[], "[watch]\ndrives = true\n".into(), vec![], Some(true)),
            (
                &[],
                "[watch]\ndrives = false\n".into(),
                vec!["/srv/iso-drop".into()],
                None,
            ),
            (
                &["--drives"],
                "[watch]\ndrives = false\n".into(),
                vec![],
                Some(true),
            ),
            (
                &[],
                "[watch]\ndrives_any_block = true\n".into(),
                vec![],
                Some(true),
            ),
        ];
        for (line, file, dirs, drives) in table {
            assert_eq!(sources(line, &file), (dirs, drives), "{line:?} {file}");
        }
        assert!(merged(&[], "[watch]\ndrives_any_block = true").any_block);
        assert!(!merged(&["--no-drives"], "[watch]\ndrives_any_block = true").any_block);
    }

    #[test]
    fn flags_override_the_file_key_by_key() {
        let file = r#"
[watch]
root = "/file/root"
driver = "kernel"
state = "/file/state.json"
exec = "file-hook"
hook_timeout = 5
cleanup_on_exit = true
log_format = "json"
include = "file-inc"
follow_symlinks = false
poll = "never"
poll_interval = 7

[[dir]]
path = "/d1"

[[dir]]
path = "/d2"
include = "d2-inc"
exclude = "d2-exc"
follow_symlinks = true
poll = "always"
"#;
        let e = merged(&[], file);
        assert_eq!(e.root, PathBuf::from("/file/root"));
        assert_eq!(e.driver, Driver::Kernel);
        assert_eq!(e.state, PathBuf::from("/file/state.json"));
        assert_eq!(e.exec, ["file-hook"]);
        assert_eq!(e.hook_timeout, Duration::from_secs(5));
        assert!(e.cleanup_on_exit);
        assert_eq!(e.log_format, LogFormat::Json);
        assert_eq!(e.poll_interval, Duration::from_secs(7));
        let (d1, d2) = (&e.dirs[0], &e.dirs[1]);
        assert_eq!(
            (
                d1.include.as_str(),
                d1.exclude.is_none(),
                d1.follow_symlinks,
                d1.poll
            ),
            ("file-inc", true, false, PollMode::Never)
        );
        assert_eq!(
            (
                d2.include.as_str(),
                d2.exclude.as_ref().unwrap().as_str(),
                d2.follow_symlinks,
                d2.poll
            ),
            ("d2-inc", "d2-exc", true, PollMode::Always)
        );

        let e = merged(
            &[
                "--root",
                "/flag/root",
                "--driver",
                "fuse",
                "--state",
                "/flag/state.json",
                "--exec",
                "h1",
                "--exec",
                "h2",
                "--hook-timeout",
                "0.5",
                "--log-format",
                "text",
                "--include",
                "flag-inc",
                "--follow-symlinks",
                "--poll",
                "auto",
                "--poll-interval",
                "0.2",
            ],
            file,
        );
        assert_eq!(e.root, PathBuf::from("/flag/root"));
        assert_eq!(e.driver, Driver::Fuse);
        assert_eq!(e.state, PathBuf::from("/flag/state.json"));
        assert_eq!(e.exec, ["h1", "h2"]);
        assert_eq!(e.hook_timeout, Duration::from_millis(500));
        assert_eq!(e.log_format, LogFormat::Text);
        assert_eq!(e.poll_interval, Duration::from_millis(200));
        for d in &e.dirs {
            assert_eq!(d.include.as_str(), "flag-inc");
            assert!(d.follow_symlinks);
            assert_eq!(d.poll, PollMode::Auto);
        }
        // Not overridden: the per-dir exclude stays.
        assert_eq!(e.dirs[1].exclude.as_ref().unwrap().as_str(), "d2-exc");
    }

    #[test]
    fn defaults_without_file_or_flags() {
        let e = merged(&[], "");
        assert_eq!(e.root, PathBuf::from("/srv/isos"));
        assert_eq!(e.state, PathBuf::from("/run/isomgr/state.json"));
        assert_eq!(e.driver, Driver::Auto);
        assert_eq!(e.hook_timeout, hooks::DEFAULT_TIMEOUT);
        assert_eq!(e.poll_interval, dirs::DEFAULT_POLL_INTERVAL);
        assert!(e.exec.is_empty() && !e.cleanup_on_exit && e.index_file.is_none());
        assert!(e.dirs[0].include.is_match("x.ISO") && e.dirs[0].follow_symlinks);
    }

    #[test]
    fn bad_flag_values_are_usage_errors() {
        for line in [
            &["--include", "("][..],
            &["--exclude", "[z-a]"],
            &["--poll-interval", "0"],
            &["--hook-timeout=-1"],
        ] {
            let e = merge(&args(line), None).expect_err("invalid");
            assert!(e.is_usage(), "{line:?}");
            let flag = line[0].split('=').next().unwrap();
            assert!(e.to_string().starts_with(flag), "{e}");
        }
    }

    #[test]
    fn summary_lists_the_effective_configuration() {
        let e = merged(
            &["--exec", "logger x"],
            "[[dir]]\npath = \"/d1\"\npoll = \"always\"\n",
        );
        let mut out = Vec::new();
        summary(&e, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("config: /c.toml\n"), "{text}");
        assert!(text.contains("dir /d1: include (?i)\\.iso$, exclude none, follow_symlinks true, poll always (poll = always: polling every 10 s, no inotify)"), "{text}");
        assert!(text.contains("exec (timeout 30 s): logger x"), "{text}");
        assert!(text.ends_with("configuration OK\n"), "{text}");
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

    #[test]
    fn resolve_follows_links_and_takes_dots_out() {
        let links: std::collections::HashMap<&str, &str> = [
            ("/srv", "/data/srv"),
            ("/data/srv/www", "../web"),
            ("/loop", "/loop"),
        ]
        .into();
        let r = |p: &str| {
            resolve(Path::new(p), |p| {
                links.get(p.to_str().unwrap()).map(PathBuf::from)
            })
        };
        assert_eq!(r("/srv/isos"), Path::new("/data/srv/isos"));
        assert_eq!(r("/srv/www/new/x"), Path::new("/data/web/new/x"));
        assert_eq!(r("/srv/isos/../drop/./y"), Path::new("/data/srv/drop/y"));
        assert_eq!(r("/srv/www/.."), Path::new("/data"));
        assert_eq!(r("/a/../../b"), Path::new("/b"));
        assert_eq!(r("/loop/x"), Path::new("/loop/x"));
    }

    #[test]
    fn a_watched_directory_and_the_root_must_lie_apart() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        let p = |s: &str| base.join(s).to_str().unwrap().to_owned();
        std::fs::create_dir_all(base.join("srv/isos")).unwrap();
        std::os::unix::fs::symlink(base.join("srv"), base.join("srv-link")).unwrap();
        std::os::unix::fs::symlink(base.join("not-yet"), base.join("dangling")).unwrap();
        let refused = |dir: &str, root: &str, says: &str| {
            let e = merge(&args(&["--dir", dir, "--root", root]), None)
                .map(|_| ())
                .expect_err(&format!("--dir {dir} --root {root}"));
            assert!(e.is_usage(), "{e}");
            let text = e.to_string();
            assert!(text.contains(says), "{text}");
            assert!(text.contains(dir) && text.contains(root), "{text}");
        };
        let taken = |dir: &str, root: &str| {
            merge(&args(&["--dir", dir, "--root", root]), None)
                .map(|_| ())
                .unwrap_or_else(|e| panic!("--dir {dir} --root {root}: {e}"));
        };
        refused(&p("srv/isos"), &p("srv/isos"), "is the root");
        refused(&p("srv/isos/drop"), &p("srv/isos"), "lies inside the root");
        refused(
            &p("srv"),
            &p("srv/isos"),
            "lies inside the watched directory",
        );
        // Through a symlink, and below a dangling one (made later).
        refused(
            &p("srv-link/isos/drop"),
            &p("srv/isos"),
            "lies inside the root",
        );
        refused(
            &p("srv-link"),
            &p("srv/isos"),
            "lies inside the watched directory",
        );
        refused(&p("dangling/drop"), &p("not-yet"), "lies inside the root");
        taken(&p("srv/iso-drop"), &p("srv/isos"));
        // One directory twice (through a symlink); nested ones are two.
        let twice = |a: &str, b: &str| {
            merge(
                &args(&["--dir", a, "--dir", b, "--root", "/elsewhere"]),
                None,
            )
            .map(|_| ())
        };
        let e = twice(&p("srv/iso-drop"), &p("srv-link/iso-drop")).expect_err("twice");
        assert!(e.to_string().contains("are one directory"), "{e}");
        twice(&p("srv/iso-drop"), &p("srv/iso-drop/sub")).expect("nested");
        taken(&p("srv/isos/../drop"), &p("srv/isos"));
        taken(&p("srv-link/drop"), &p("srv/isos"));
        // The files isomgr writes: neither in the root nor in a watched directory.
        let with = |extra: &[&str]| {
            let (drop, root) = (p("srv/drop"), p("srv/isos"));
            let mut line = vec!["--dir", &drop, "--root", &root];
            line.extend_from_slice(extra);
            merge(&args(&line), None).map(|_| ())
        };
        let (state, index) = (p("srv/isos/state.json"), p("srv/isos/x/i.json"));
        let in_drop = p("srv/drop/i.json");
        for (extra, says) in [
            (["--state", &state], format!("the state file {state} lies inside the root {}", p("srv/isos"))),
            (["--index-file", &index], format!("the index file {index} lies inside the root")),
            (["--index-file", &in_drop], format!("the index file {in_drop} lies inside the watched directory {}: isomgr writes nothing", p("srv/drop"))),
        ] {
            let e = with(&extra).expect_err(&format!("{extra:?}"));
            assert!(e.is_usage() && e.to_string().contains(&says), "{e}");
        }
        with(&[
            "--index-file",
            &p("srv/isos.json"),
            "--state",
            &p("srv/state.json"),
        ])
        .expect("beside");
        // The defaults, and the file's paths too.
        merge(&args(&[]), None).expect("the defaults lie apart");
        let f = config::parse(
            Path::new("/c.toml"),
            &format!(
                "[watch]\nroot = \"{}\"\n[[dir]]\npath = \"{}\"\n",
                p("srv"),
                p("srv/isos")
            ),
        )
        .unwrap();
        let e = merge(&args(&[]), Some((PathBuf::from("/c.toml"), f))).map(|_| ());
        assert!(e.is_err_and(|e| e.to_string().contains("lies inside the root")));
    }
}
