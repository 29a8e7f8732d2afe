//! The configuration file of `isomgr watch` (TOML, `/etc/isomgr/config.toml` by default):
//! parsed and validated here, pure (text in, typed values or an error naming the line out).
//! Reading the file and merging it with the command line (flags win) is `cli::watch`'s job.
//!
//! Layout: a `[watch]` table with one key per `watch` flag, and any number of `[[dir]]`
//! tables, each a watched directory with its own patterns, symlink rule and poll mode. Every
//! key is optional; an unknown key, a value of the wrong type, an invalid regex, a relative
//! path, a non-positive duration are errors that name the key and the line.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::source::dirs::PollMode;

/// The default configuration file, read when present.
pub const DEFAULT_PATH: &str = "/etc/isomgr/config.toml";

/// Hook commands at most, and the longest hook timeout taken (a day).
const MAX_HOOKS: usize = 64;
const MAX_SECONDS: f64 = 86_400.0;
/// The shortest poll interval taken.
const MIN_POLL_INTERVAL: f64 = 0.05;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid: a usage error (exit code 2).
    #[error("{}: line {line}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// A command-line value is not valid: a usage error (exit code 2).
    #[error("{flag} {value:?}: {message}")]
    Flag {
        flag: &'static str,
        value: String,
        message: String,
    },
    /// Paths that cannot go together (the root and a watched directory inside each other, a
    /// directory watched twice, a file isomgr writes inside either): a usage error (exit
    /// code 2).
    #[error("{0}")]
    Places(String),
}

impl Error {
    /// Whether this is a usage error (exit code 2) rather than a failure to read (1).
    pub fn is_usage(&self) -> bool {
        !matches!(self, Error::Read { .. })
    }
}

/// How media are mounted (`driver`, `--driver`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// The kernel where it can mount ISO9660 images, FUSE otherwise.
    #[default]
    Auto,
    /// Loop devices and mount(2).
    Kernel,
    /// isomgr's own read-only FUSE filesystem at the root.
    Fuse,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Auto => "auto",
            Driver::Kernel => "kernel",
            Driver::Fuse => "fuse",
        }
    }
}

/// How log lines are written (`log_format`, `--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// What a configuration file says, validated. `None` (or empty): the key is not set.
#[derive(Clone, Debug, Default)]
pub struct FileConfig {
    pub root: Option<PathBuf>,
    pub driver: Option<Driver>,
    pub state: Option<PathBuf>,
    pub index_file: Option<PathBuf>,
    pub exec: Vec<String>,
    pub hook_timeout: Option<Duration>,
    pub cleanup_on_exit: Option<bool>,
    pub log_format: Option<LogFormat>,
    /// `true`: drives asked for (udev missing is fatal); `false`: not watched (`--no-drives`).
    pub drives: Option<bool>,
    pub drives_any_block: Option<bool>,
    /// Defaults for every watched directory.
    pub include: Option<Regex>,
    pub exclude: Option<Regex>,
    pub follow_symlinks: Option<bool>,
    pub poll: Option<PollMode>,
    pub poll_interval: Option<Duration>,
    /// The `[[dir]]` tables, in file order.
    pub dirs: Vec<DirEntry>,
}

/// One `[[dir]]` table: a watched directory; unset keys fall back to `[watch]`.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub path: PathBuf,
    pub include: Option<Regex>,
    pub exclude: Option<Regex>,
    pub follow_symlinks: Option<bool>,
    pub poll: Option<PollMode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    watch: RawWatch,
    #[serde(default)]
    dir: Vec<RawDir>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    root: Option<Spanned<String>>,
    driver: Option<Driver>,
    state: Option<Spanned<String>>,
    index_file: Option<Spanned<String>>,
    exec: Option<Spanned<Commands>>,
    hook_timeout: Option<Spanned<f64>>,
    cleanup_on_exit: Option<bool>,
    log_format: Option<LogFormat>,
    drives: Option<bool>,
    drives_any_block: Option<bool>,
    include: Option<Spanned<String>>,
    exclude: Option<Spanned<String>>,
    follow_symlinks: Option<bool>,
    poll: Option<PollMode>,
    poll_interval: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    path: Spanned<String>,
    include: Option<Spanned<String>>,
    exclude: Option<Spanned<String>>,
    follow_symlinks: Option<bool>,
    poll: Option<PollMode>,
}

/// `exec`: one command or a list of them.
struct Commands(Vec<String>);

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Commands;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a command (string) or a list of commands")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Commands, E> {
                Ok(Commands(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Commands, A::Error> {
                let mut out = Vec::new();
                while let Some(c) = seq.next_element::<String>()? {
                    out.push(c);
                }
                Ok(Commands(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A regex error's cause on one line (the regex crate's own message draws a caret under the
/// pattern over several lines).
fn regex_cause(e: &regex::Error) -> String {
    let text = e.to_string();
    let why = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().last().unwrap_or_default());
    why.to_owned()
}

/// The 1-based line holding byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()
        .get(..at)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// The table a line belongs to: the last `[name]` or `[[name]]` header above it.
fn table_at(text: &str, line: usize) -> String {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            l.starts_with('[').then(|| {
                l.split('#')
                    .next()
                    .unwrap_or(l)
                    .trim()
                    .replace(char::is_whitespace, "")
            })
        })
        .last()
        .unwrap_or_else(|| "the top level".into())
}

/// The key on a `key = value` line.
fn key_on(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (key, _) = l.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

/// Rewords a TOML/serde message to name the key.
fn reword(text: &str, line: usize, message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .replace('`', "");
        return format!(
            "unknown key `{key}` in {} (known keys: {expected})",
            table_at(text, line)
        );
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        return format!("missing key `{key}` in {}", table_at(text, line));
    }
    match key_on(text, line) {
        Some(key) => format!("`{key}`: {message}"),
        None => message.to_owned(),
    }
}

/// Parses and validates a configuration file's text; `file` names it in errors.
pub fn parse(file: &Path, text: &str) -> Result<FileConfig, Error> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        Error::Invalid {
            file: file.to_path_buf(),
            line,
            message: reword(text, line, e.message()),
        }
    })?;
    let invalid = |span: Range<usize>, key: &str, message: String| Error::Invalid {
        file: file.to_path_buf(),
        line: line_of(text, span.start),
        message: format!("`{key}`: {message}"),
    };
    let regex = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<Regex>, Error> {
        v.as_ref()
            .map(|s| {
                Regex::new(s.get_ref()).map_err(|e| {
                    invalid(
                        s.span(),
                        key,
                        format!("invalid regex {:?}: {}", s.get_ref(), regex_cause(&e)),
                    )
                })
            })
            .transpose()
    };
    let abs = |v: &Spanned<String>, key: &str| -> Result<PathBuf, Error> {
        let p = PathBuf::from(v.get_ref());
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(invalid(
                v.span(),
                key,
                format!("must be an absolute path, not {:?}", v.get_ref()),
            ))
        }
    };
    let abs_opt =
        |v: &Option<Spanned<String>>, key: &str| v.as_ref().map(|v| abs(v, key)).transpose();
    let seconds =
        |v: &Option<Spanned<f64>>, key: &str, min: f64| -> Result<Option<Duration>, Error> {
            v.as_ref()
                .map(|s| {
                    let x = *s.get_ref();
                    if x.is_finite() && (min..=MAX_SECONDS).contains(&x) {
                        Ok(Duration::from_secs_f64(x))
                    } else {
                        Err(invalid(
                            s.span(),
                            key,
                            format!("{x} seconds is out of range ({min} to {MAX_SECONDS})"),
                        ))
                    }
                })
                .transpose()
        };
    let w = &raw.watch;
    let exec = match &w.exec {
        None => Vec::new(),
        Some(c) => {
            let cmds = &c.get_ref().0;
            if cmds.len() > MAX_HOOKS {
                return Err(invalid(
                    c.span(),
                    "exec",
                    format!("{} commands; at most {MAX_HOOKS}", cmds.len()),
                ));
            }
            if cmds.iter().any(|c| c.trim().is_empty()) {
                return Err(invalid(c.span(), "exec", "an empty command".into()));
            }
            cmds.clone()
        }
    };
    let mut dirs = Vec::with_capacity(raw.dir.len());
    for d in &raw.dir {
        let path = abs(&d.path, "path")?;
        if let Some(prev) = dirs.iter().find(|e: &&DirEntry| e.path == path) {
            return Err(invalid(
                d.path.span(),
                "path",
                format!("{} is listed twice", prev.path.display()),
            ));
        }
        dirs.push(DirEntry {
            path,
            include: regex(&d.include, "include")?,
            exclude: regex(&d.exclude, "exclude")?,
            follow_symlinks: d.follow_symlinks,
            poll: d.poll,
        });
    }
    Ok(FileConfig {
        root: abs_opt(&w.root, "root")?,
        driver: w.driver,
        state: abs_opt(&w.state, "state")?,
        index_file: abs_opt(&w.index_file, "index_file")?,
        exec,
        hook_timeout: seconds(&w.hook_timeout, "hook_timeout", 0.001)?,
        cleanup_on_exit: w.cleanup_on_exit,
        log_format: w.log_format,
        drives: w.drives,
        drives_any_block: w.drives_any_block,
        include: regex(&w.include, "include")?,
        exclude: regex(&w.exclude, "exclude")?,
        follow_symlinks: w.follow_symlinks,
        poll: w.poll,
        poll_interval: seconds(&w.poll_interval, "poll_interval", MIN_POLL_INTERVAL)?,
        dirs,
    })
}

/// Reads and parses the configuration: `explicit` (`--config`) must exist; otherwise
/// [`DEFAULT_PATH`] is read where present. `Ok(None)`: no configuration file.
pub fn load(explicit: Option<&Path>) -> Result<Option<(PathBuf, FileConfig)>, Error> {
    let file = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text).map(|c| Some((file, c)))
}

/// A regex given on the command line.
pub fn flag_regex(flag: &'static str, value: &str) -> Result<Regex, Error> {
    Regex::new(value).map_err(|e| Error::Flag {
        flag,
        value: value.to_owned(),
        message: format!("invalid regex: {}", regex_cause(&e)),
    })
}

/// Seconds given on the command line (`--poll-interval`, `--hook-timeout`).
pub fn flag_seconds(flag: &'static str, value: f64, poll: bool) -> Result<Duration, Error> {
    let min = if poll { MIN_POLL_INTERVAL } else { 0.001 };
    if value.is_finite() && (min..=MAX_SECONDS).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(Error::Flag {
            flag,
            value: value.to_string(),
            message: format!("out of range ({min} to {MAX_SECONDS} seconds)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("/etc/isomgr/config.toml"), text)
            .expect_err("an invalid configuration")
            .to_string()
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        let c = parse(Path::new("c.toml"), "").unwrap();
        assert!(c.root.is_none() && c.dirs.is_empty() && c.exec.is_empty());
        assert!(c.poll_interval.is_none() && c.drives.is_none());
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            Path::new("c.toml"),
            r#"
[watch]
root = "/srv/isos"
driver = "fuse"
state = "/run/isomgr/state.json"
index_file = "/var/www/isos.json"
exec = ["logger a", "logger b"]
hook_timeout = 2.5
cleanup_on_exit = true
log_format = "json"
drives = false
drives_any_block = true
include = '(?i)\.(iso|img)$'
exclude = "^skip"
follow_symlinks = false
poll = "never"
poll_interval = 3

[[dir]]
path = "/srv/iso-drop"

[[dir]]
path = "/mnt/nfs/isos"
include = 'x\.iso$'
exclude = "y"
follow_symlinks = true
poll = "always"
"#,
        )
        .unwrap();
        assert_eq!(c.root.as_deref(), Some(Path::new("/srv/isos")));
        assert_eq!(c.driver, Some(Driver::Fuse));
        assert_eq!(
            c.index_file.as_deref(),
            Some(Path::new("/var/www/isos.json"))
        );
        assert_eq!(c.exec, ["logger a", "logger b"]);
        assert_eq!(c.hook_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.cleanup_on_exit, Some(true));
        assert_eq!(c.log_format, Some(LogFormat::Json));
        assert_eq!((c.drives, c.drives_any_block), (Some(false), Some(true)));
        assert!(c.include.unwrap().is_match("a.IMG"));
        assert!(c.exclude.unwrap().is_match("skip.iso"));
        assert_eq!(c.follow_symlinks, Some(false));
        assert_eq!(c.poll, Some(PollMode::Never));
        assert_eq!(c.poll_interval, Some(Duration::from_secs(3)));
        assert_eq!(c.dirs.len(), 2);
        assert_eq!(c.dirs[0].path, Path::new("/srv/iso-drop"));
        assert!(c.dirs[0].include.is_none() && c.dirs[0].poll.is_none());
        assert!(c.dirs[1].include.as_ref().unwrap().is_match("ax.iso"));
        assert_eq!(c.dirs[1].poll, Some(PollMode::Always));
        assert_eq!(c.dirs[1].follow_symlinks, Some(true));
    }

    #[test]
    fn exec_may_be_one_command() {
        let c = parse(Path::new("c.toml"), "[watch]\nexec = \"logger hi\"\n").unwrap();
        assert_eq!(c.exec, ["logger hi"]);
    }

    #[test]
    fn unknown_key_names_the_key_the_table_and_the_line() {
        let text = "# isomgr\n\n[watch]\nroot = \"/srv/isos\"\n\n\nrooot = \"/x\"\n";
        let e = err(text);
        assert!(
            e.starts_with("/etc/isomgr/config.toml: line 7: unknown key `rooot` in [watch]"),
            "{e}"
        );
        assert!(e.contains("root"), "{e}");
        let e = err("[[dir]]\npath = \"/a\"\n\n[[dir]]\npath = \"/b\"\npoll_intervall = 1\n");
        assert!(
            e.contains("line 6: unknown key `poll_intervall` in [[dir]]"),
            "{e}"
        );
        let e = err("roots = 1\n");
        assert!(
            e.contains("line 1: unknown key `roots` in the top level"),
            "{e}"
        );
        let e = err("[watcher]\nroot = \"/a\"\n");
        assert!(e.contains("line 1: unknown key `watcher`"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key_and_the_line() {
        let e = err("[watch]\ndrives = true\ncleanup_on_exit = \"yes\"\n");
        assert!(e.contains("line 3: `cleanup_on_exit`: invalid type"), "{e}");
        let e = err("[watch]\n\ndriver = \"kernal\"\n");
        assert!(
            e.contains("line 3: `driver`: unknown variant `kernal`"),
            "{e}"
        );
        let e = err("[watch]\npoll_interval = \"10s\"\n");
        assert!(e.contains("line 2: `poll_interval`: invalid type"), "{e}");
        let e = err("[watch]\nexec = 3\n");
        assert!(e.contains("line 2: `exec`: invalid type"), "{e}");
        let e = err("[[dir]]\npath = \"/a\"\npoll = \"sometimes\"\n");
        assert!(
            e.contains("line 3: `poll`: unknown variant `sometimes`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_line() {
        let e = err("[watch]\ninclude = \"(unclosed\"\n");
        assert!(
            e.ends_with("line 2: `include`: invalid regex \"(unclosed\": unclosed group"),
            "{e}"
        );
        let e = err("[[dir]]\npath = \"/a\"\n\nexclude = \"[z-a]\"\n");
        assert!(e.contains("line 4: `exclude`: invalid regex"), "{e}");
        let e = err("[watch]\nroot = \"isos\"\n");
        assert!(
            e.contains("line 2: `root`: must be an absolute path"),
            "{e}"
        );
        let e = err("[[dir]]\npath = \"drop\"\n");
        assert!(
            e.contains("line 2: `path`: must be an absolute path"),
            "{e}"
        );
        let e = err("[watch]\npoll_interval = 0\n");
        assert!(
            e.contains("line 2: `poll_interval`: 0 seconds is out of range"),
            "{e}"
        );
        let e = err("[watch]\nhook_timeout = -1\n");
        assert!(e.contains("line 2: `hook_timeout`"), "{e}");
        let e = err("[watch]\nexec = [\"ok\", \"\"]\n");
        assert!(e.contains("line 2: `exec`: an empty command"), "{e}");
        let e = err("[[dir]]\npath = \"/a\"\n[[dir]]\npath = \"/a\"\n");
        assert!(e.contains("line 4: `path`: /a is listed twice"), "{e}");
        let e = err("[[dir]]\ninclude = \"x\"\n");
        assert!(e.contains("missing key `path` in [[dir]]"), "{e}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = err("[watch]\nroot = \"/a\"\nroot = \"/b\"\n");
        assert!(e.contains("line 3:"), "{e}");
        let e = err("[watch]\n\nroot = \n");
        assert!(e.contains("line 3:"), "{e}");
    }

    #[test]
    fn errors_that_are_usage_errors() {
        assert!(parse(Path::new("c"), "x = 1").unwrap_err().is_usage());
        assert!(flag_regex("--include", "(").unwrap_err().is_usage());
        let read = load(Some(Path::new("/nonexistent/isomgr.toml"))).unwrap_err();
        assert!(!read.is_usage());
        assert!(format!("{:#}", anyhow::Error::from(read)).contains("/nonexistent/isomgr.toml"));
    }
}
