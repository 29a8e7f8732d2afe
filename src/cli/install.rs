//! `isomgr install [--dry-run] [--prefix DIR]`: places the binary, the systemd unit, the
//! tmpfiles entry, the example configuration, the manual pages and the shell completions, and
//! makes the root and the drop directory. Prints one line per step; idempotent (what is already
//! in place is not rewritten); a configuration the operator changed is never replaced.
//!
//! The plan (what should be where) is built first, then each item is compared with what is on
//! disk and written only when it differs: atomically (a temporary file in the same directory,
//! renamed over), with its mode set before the rename.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::completions::{self, Shell};

/// The unit; its `ExecStart=` names [`BINARY`].
pub const UNIT: &str = include_str!("../../contrib/isomgr.service");
/// `/run/isomgr`, made at boot.
pub const TMPFILES: &str = include_str!("../../contrib/isomgr.tmpfiles");
/// Placed as `/etc/isomgr/config.toml` when there is none.
pub const CONFIG_EXAMPLE: &str = include_str!("../../contrib/config.example.toml");

/// Where the binary goes, below the prefix; the unit's `ExecStart=` names it as `/` + this.
pub const BINARY: &str = "usr/local/bin/isomgr";
const UNIT_PATH: &str = "etc/systemd/system/isomgr.service";
const TMPFILES_PATH: &str = "etc/tmpfiles.d/isomgr.conf";
const CONFIG_PATH: &str = "etc/isomgr/config.toml";
const MAN_DIR: &str = "usr/local/share/man/man1";
/// The watcher's default root and drop directory (`isomgr watch` with no flags).
const DIRS: [&str; 2] = ["srv/isos", "srv/iso-drop"];

/// systemd's own test for "booted with systemd" (sd_booted(3)).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Install below DIR as if it were / (a staging root for a package or an image). The unit
    /// still names /usr/local/bin/isomgr, and systemd is not told.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub prefix: PathBuf,
}

/// What one installed file holds.
#[derive(Debug)]
enum Content {
    Bytes(Vec<u8>),
    /// The executable of this process (`/proc/self/exe`: still the right file if it was
    /// replaced on disk meanwhile).
    RunningBinary,
}

/// What to do when the file is there with other content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnChange {
    /// Ours: replace it (an upgrade).
    Replace,
    /// The operator's: keep it.
    Keep,
}

#[derive(Debug)]
enum Item {
    Dir {
        path: PathBuf,
    },
    File {
        path: PathBuf,
        content: Content,
        mode: u32,
        on_change: OnChange,
    },
}

/// What a step found, and so what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Create,
    Write,
    Unchanged,
    KeepChanged,
}

/// Everything `install` places, with paths below the prefix.
fn plan(prefix: &Path) -> anyhow::Result<Vec<Item>> {
    let at = |rel: &str| prefix.join(rel);
    let file = |rel: &str, content: Content, mode: u32| Item::File {
        path: at(rel),
        content,
        mode,
        on_change: OnChange::Replace,
    };
    let mut items = vec![
        file(BINARY, Content::RunningBinary, 0o755),
        file(UNIT_PATH, Content::Bytes(UNIT.into()), 0o644),
        file(TMPFILES_PATH, Content::Bytes(TMPFILES.into()), 0o644),
        Item::File {
            path: at(CONFIG_PATH),
            content: Content::Bytes(CONFIG_EXAMPLE.into()),
            mode: 0o644,
            on_change: OnChange::Keep,
        },
    ];
    for (name, page) in super::man::pages()? {
        items.push(file(
            &format!("{MAN_DIR}/{name}"),
            Content::Bytes(page),
            0o644,
        ));
    }
    for shell in Shell::ALL {
        items.push(file(
            shell.install_path(),
            Content::Bytes(completions::script(shell)),
            0o644,
        ));
    }
    for d in DIRS {
        items.push(Item::Dir { path: at(d) });
    }
    Ok(items)
}

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let prefix = if args.prefix.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        args.prefix.clone()
    };
    let real = prefix == Path::new("/");
    let mut changed = 0;
    let mut unit_changed = false;
    for item in plan(&prefix)? {
        let (path, verdict) = match &item {
            Item::Dir { path } => (path, judge_dir(path)?),
            Item::File {
                path,
                content,
                mode,
                on_change,
            } => (path, judge_file(path, content, *mode, *on_change)?),
        };
        let shown = path.display();
        match verdict {
            Verdict::Create => writeln!(out, "create {shown}")?,
            Verdict::Write => writeln!(out, "write {shown}")?,
            Verdict::Unchanged => writeln!(out, "unchanged {shown}")?,
            Verdict::KeepChanged => writeln!(out, "keep {shown} (changed by the operator)")?,
        }
        if !matches!(verdict, Verdict::Create | Verdict::Write) {
            continue;
        }
        changed += 1;
        unit_changed |= path.ends_with(UNIT_PATH);
        if args.dry_run {
            continue;
        }
        match &item {
            Item::Dir { path } => make_dir(path, 0o755)?,
            Item::File {
                path,
                content,
                mode,
                ..
            } => write_atomically(path, content, *mode)?,
        }
    }
    if real && unit_changed {
        if !Path::new(SYSTEMD_RUNNING).is_dir() {
            writeln!(
                out,
                "skip systemctl daemon-reload (systemd is not running: no {SYSTEMD_RUNNING})"
            )?;
        } else {
            writeln!(out, "run systemctl daemon-reload")?;
            if !args.dry_run {
                daemon_reload()?;
            }
        }
    }
    match (changed, args.dry_run) {
        (0, _) => writeln!(out, "nothing to change: everything is in place")?,
        (n, true) => writeln!(out, "dry run: {n} changes not made")?,
        (n, false) => {
            writeln!(out, "{n} changes made")?;
            if real && unit_changed {
                writeln!(out, "start the watcher: systemctl enable --now isomgr")?;
            }
        }
    }
    Ok(())
}

fn judge_dir(path: &Path) -> anyhow::Result<Verdict> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(Verdict::Unchanged),
        Ok(_) => anyhow::bail!("{}: exists and is not a directory", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Verdict::Create),
        Err(e) => Err(e).with_context(|| format!("looking at {}", path.display())),
    }
}

fn judge_file(
    path: &Path,
    content: &Content,
    mode: u32,
    on_change: OnChange,
) -> anyhow::Result<Verdict> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verdict::Write),
        Err(e) => return Err(e).with_context(|| format!("looking at {}", path.display())),
    };
    let same = meta.is_file()
        && same_content(path, &meta, content)
            .with_context(|| format!("comparing {}", path.display()))?;
    Ok(match (same, on_change) {
        // The operator's mode (a config made private) is theirs too.
        (true, OnChange::Keep) => Verdict::Unchanged,
        (true, OnChange::Replace) if meta.mode() & 0o7777 == mode => Verdict::Unchanged,
        (_, OnChange::Keep) => Verdict::KeepChanged,
        (_, OnChange::Replace) => Verdict::Write,
    })
}

/// Whether the regular file at `path` (whose metadata is `meta`) holds `content`.
fn same_content(path: &Path, meta: &fs::Metadata, content: &Content) -> io::Result<bool> {
    match content {
        Content::Bytes(b) => {
            if meta.len() != b.len() as u64 {
                return Ok(false);
            }
            Ok(fs::read(path)? == *b)
        }
        Content::RunningBinary => {
            let exe = File::open("/proc/self/exe")?;
            let exe_meta = exe.metadata()?;
            if (exe_meta.dev(), exe_meta.ino()) == (meta.dev(), meta.ino()) {
                return Ok(true);
            }
            if exe_meta.len() != meta.len() {
                return Ok(false);
            }
            same_stream(exe, File::open(path)?)
        }
    }
}

/// Compares two readers of equal length chunk by chunk.
fn same_stream(mut a: impl Read, mut b: impl Read) -> io::Result<bool> {
    let mut ba = vec![0u8; 1 << 16];
    let mut bb = vec![0u8; 1 << 16];
    loop {
        let n = read_full(&mut a, &mut ba)?;
        let m = read_full(&mut b, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Makes `path` and its missing parents, `path` itself with exactly `mode`.
fn make_dir(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Writes `content` to `path` through a temporary file in the same directory renamed over it,
/// so a reader (or a crash) sees the old file or the new one, never a part.
fn write_atomically(path: &Path, content: &Content, mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{}: no parent directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{}: no file name", path.display()))?;
    if !dir.is_dir() {
        make_dir(dir, 0o755)?;
    }
    let tmp = dir.join(format!(
        ".{}.isomgr-install-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> anyhow::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        match content {
            Content::Bytes(b) => f.write_all(b),
            Content::RunningBinary => File::open("/proc/self/exe")
                .and_then(|mut exe| io::copy(&mut exe, &mut f))
                .map(drop),
        }
        .with_context(|| format!("writing {}", tmp.display()))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("flushing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn daemon_reload() -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .arg("daemon-reload")
        .status()
        .context("running systemctl daemon-reload")?;
    anyhow::ensure!(status.success(), "systemctl daemon-reload: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_installed_binary() {
        let exec = UNIT
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("the unit has ExecStart=");
        assert_eq!(exec.split(' ').next(), Some(&*format!("/{BINARY}")));
        assert!(UNIT.contains("\nType=notify\n"), "{UNIT}");
    }

    fn bytes(s: &str) -> Content {
        Content::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn a_changed_config_is_kept_and_our_own_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert_eq!(
            judge_file(&p, &bytes("a"), 0o644, OnChange::Keep).unwrap(),
            Verdict::Write
        );
        write_atomically(&p, &bytes("a"), 0o644).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o644);
        for on_change in [OnChange::Keep, OnChange::Replace] {
            assert_eq!(
                judge_file(&p, &bytes("a"), 0o644, on_change).unwrap(),
                Verdict::Unchanged
            );
        }
        fs::write(&p, "b").unwrap();
        assert_eq!(
            judge_file(&p, &bytes("a"), 0o644, OnChange::Keep).unwrap(),
            Verdict::KeepChanged
        );
        assert_eq!(
            judge_file(&p, &bytes("a"), 0o644, OnChange::Replace).unwrap(),
            Verdict::Write
        );
        fs::write(&p, "a").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            judge_file(&p, &bytes("a"), 0o644, OnChange::Keep).unwrap(),
            Verdict::Unchanged,
            "a private config is still the example"
        );
        assert_eq!(
            judge_file(&p, &bytes("a"), 0o644, OnChange::Replace).unwrap(),
            Verdict::Write,
            "our file gets its mode back"
        );
    }

    #[test]
    fn streams_compare_by_content() {
        let long = vec![7u8; 200_000];
        let mut other = long.clone();
        other[150_000] = 8;
        assert!(same_stream(&long[..], &long[..]).unwrap());
        assert!(!same_stream(&long[..], &other[..]).unwrap());
        assert!(!same_stream(&long[..], &long[..10]).unwrap());
    }

    #[test]
    fn the_running_binary_is_unchanged_against_itself() {
        let exe = PathBuf::from("/proc/self/exe");
        let meta = fs::metadata(&exe).unwrap();
        assert!(same_content(&exe, &meta, &Content::RunningBinary).unwrap());
    }
}
