//! `isomgr scan [--json] PATH...`: identify images in files and directories (recursively)
//! without mounting them. Reads only the few sectors identification needs, in parallel.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::iso9660::{probe, Error as IsoError, VolumeInfo};
use crate::names;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON array of {path, label, name, size, volume_size, fs, extensions, bootable,
    /// complete}.
    #[arg(long)]
    pub json: bool,
    /// Image files, block devices, or directories to search recursively.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// One identified image, as `scan --json` prints it.
#[derive(Debug, Serialize)]
pub struct ScanRecord {
    pub path: String,
    pub label: Option<String>,
    pub name: String,
    pub size: u64,
    pub volume_size: u64,
    pub fs: &'static str,
    pub extensions: Vec<&'static str>,
    pub bootable: bool,
    pub complete: bool,
}

/// A file to look at; `explicit` when named on the command line (then "not an image" is an
/// error rather than a skip).
struct Candidate {
    path: PathBuf,
    explicit: bool,
}

/// Files examined between progress updates are counted here.
const PROGRESS_MIN: usize = 2000;

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let mut failures = 0usize;
    let scanned = scan_all(&args.paths, &mut failures);
    let mut records = Vec::new();
    let mut skipped = 0usize;
    let mut taken: HashSet<String> = HashSet::new();
    for (c, r) in scanned {
        match r {
            Ok(info) => {
                let stem = c.path.file_stem().map(|s| s.to_string_lossy().into_owned());
                let base = names::base_name(info.label.as_deref(), stem.as_deref().unwrap_or(""));
                let name = names::first_free(&base, |n| taken.contains(n));
                taken.insert(name.clone());
                records.push(record(&c.path, info, name));
            }
            Err(ProbeError::NotAnImage) if !c.explicit => skipped += 1,
            Err(e) => {
                eprintln!("isomgr: {}: {e:#}", c.path.display());
                failures += 1;
            }
        }
    }
    if args.json {
        super::write_json(out, &records)?;
    } else {
        print_table(&records, out)?;
    }
    out.flush()?;
    if std::io::stderr().is_terminal() || !args.json {
        eprintln!(
            "{} image{}, {skipped} other file{} skipped",
            records.len(),
            if records.len() == 1 { "" } else { "s" },
            if skipped == 1 { "" } else { "s" }
        );
    }
    if failures > 0 {
        anyhow::bail!(
            "{failures} path{} could not be scanned",
            if failures == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn record(path: &Path, info: VolumeInfo, name: String) -> ScanRecord {
    ScanRecord {
        path: path.display().to_string(),
        name,
        size: info.image_size,
        volume_size: info.volume_size,
        fs: info.fs.as_str(),
        extensions: info.extensions(),
        bootable: info.bootable,
        complete: info.complete(),
        label: info.label,
    }
}

/// Hands the regular files (and symlinks to them) below `dir` to `found`, one directory at a
/// time, sorted by name. Symlinks to directories are not followed, so the walk always ends.
fn walk(dir: &Path, found: &mut impl FnMut(Vec<Candidate>), failures: &mut usize) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) => {
                eprintln!("isomgr: {}: {e}", d.display());
                *failures += 1;
                continue;
            }
        };
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for ent in rd.flatten() {
            let Ok(ft) = ent.file_type() else { continue };
            let path = ent.path();
            if ft.is_dir() {
                dirs.push(path);
            } else if ft.is_file() || (ft.is_symlink() && path.is_file()) {
                files.push(path);
            }
        }
        // One directory: the paths share their prefix, so byte order is name order.
        files.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
        dirs.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
        if !files.is_empty() {
            found(
                files
                    .into_iter()
                    .map(|path| Candidate {
                        path,
                        explicit: false,
                    })
                    .collect(),
            );
        }
        stack.extend(dirs.into_iter().rev());
    }
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("not an ISO9660 or UDF image")]
    NotAnImage,
    #[error("opening: {0}")]
    Open(std::io::Error),
    #[error(transparent)]
    Image(IsoError),
}

/// The directory the previous file was opened in, kept open so each file is opened relative
/// to it (no path walk per file).
#[derive(Default)]
struct DirCache {
    dir: Option<(PathBuf, File)>,
}

impl DirCache {
    fn open(&mut self, path: &Path) -> std::io::Result<File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::ffi::OsStrExt;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return open_by_path(path);
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if self
            .dir
            .as_ref()
            .is_none_or(|(p, _)| p.as_os_str() != parent.as_os_str())
        {
            let d = File::options()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(parent)?;
            self.dir = Some((parent.to_path_buf(), d));
        }
        let Some((_, dir)) = &self.dir else {
            return open_by_path(path);
        };
        let Ok(cname) = std::ffi::CString::new(name.as_bytes()) else {
            return open_by_path(path);
        };
        let base = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        // O_NOATIME keeps scanning from touching the images' metadata where permitted.
        for flags in [base | libc::O_NOATIME, base] {
            // SAFETY: openat with a valid directory descriptor and a NUL-terminated name.
            let fd = unsafe { libc::openat(dir.as_raw_fd(), cname.as_ptr(), flags) };
            if fd >= 0 {
                // SAFETY: fd is a fresh descriptor that nothing else owns.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
        }
        open_by_path(path)
    }
}

fn open_by_path(path: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

fn probe_one(path: &Path, dirs: &mut DirCache) -> Result<VolumeInfo, ProbeError> {
    let file = dirs.open(path).map_err(ProbeError::Open)?;
    match probe(&file) {
        Ok(info) => Ok(info),
        Err(IsoError::NotAnImage | IsoError::Truncated { .. }) if file_is_short(&file) => {
            Err(ProbeError::NotAnImage)
        }
        Err(IsoError::NotAnImage) => Err(ProbeError::NotAnImage),
        Err(e) => Err(ProbeError::Image(e)),
    }
}

/// Shorter than the system area plus one descriptor: cannot be an image.
fn file_is_short(f: &File) -> bool {
    f.metadata()
        .is_ok_and(|m| m.is_file() && m.len() < 17 * 2048)
}

/// Files handed to a worker at a time.
const BATCH: usize = 64;

type Probed = (Candidate, Result<VolumeInfo, ProbeError>);

/// Walks `paths` and identifies every file found, on all cores: workers start on the first
/// directory while the walk goes on. Results in walk order.
fn scan_all(paths: &[PathBuf], failures: &mut usize) -> Vec<Probed> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<Candidate>)>();
    let rx = std::sync::Mutex::new(rx);
    let done = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    let walking = std::sync::atomic::AtomicBool::new(true);
    let show_progress = std::io::stderr().is_terminal();
    let mut results: Vec<(usize, Candidate, Result<VolumeInfo, ProbeError>)> = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut local = Vec::new();
                    let mut dirs = DirCache::default();
                    loop {
                        let batch = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break,
                        };
                        let Ok((start, files)) = batch else { break };
                        let n = files.len();
                        for (k, c) in files.into_iter().enumerate() {
                            let r = probe_one(&c.path, &mut dirs);
                            local.push((start + k, c, r));
                        }
                        done.fetch_add(n, Ordering::Relaxed);
                    }
                    local
                })
            })
            .collect();
        if show_progress {
            s.spawn(|| loop {
                let (n, t) = (done.load(Ordering::Relaxed), total.load(Ordering::Relaxed));
                let still = walking.load(Ordering::Relaxed);
                if !still && n >= t {
                    eprint!("\r\x1b[K");
                    break;
                }
                if t >= PROGRESS_MIN {
                    eprint!("\rscanning {n}/{t}{}", if still { "+" } else { "" });
                }
                std::thread::sleep(Duration::from_millis(100));
            });
        }
        let mut next = 0usize;
        let mut send = |files: Vec<Candidate>| {
            let mut files = files;
            while !files.is_empty() {
                let rest = files.split_off(files.len().min(BATCH));
                let n = files.len();
                total.fetch_add(n, Ordering::Relaxed);
                let _ = tx.send((next, files));
                next += n;
                files = rest;
            }
        };
        for p in paths {
            match fs::metadata(p) {
                Ok(m) if m.is_dir() => walk(p, &mut send, failures),
                Ok(_) => send(vec![Candidate {
                    path: p.clone(),
                    explicit: true,
                }]),
                Err(e) => {
                    eprintln!("isomgr: {}: {e}", p.display());
                    *failures += 1;
                }
            }
        }
        drop(tx);
        walking.store(false, Ordering::Relaxed);
        for w in workers {
            if let Ok(local) = w.join() {
                results.extend(local);
            }
        }
    });
    results.sort_unstable_by_key(|r| r.0);
    results.into_iter().map(|(_, c, r)| (c, r)).collect()
}

fn print_table(records: &[ScanRecord], out: &mut impl Write) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let w_name = records
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let w_label = records
        .iter()
        .map(|r| r.label.as_deref().map_or(1, |l| l.chars().count()))
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<w_name$}  {:<w_label$}  {:<7}  {:>13}  {:<8}  {:<28}  PATH",
        "NAME", "LABEL", "FS", "SIZE", "COMPLETE", "EXTENSIONS"
    )?;
    for r in records {
        let mut ext = r.extensions.join(",");
        if r.bootable {
            ext.push_str(",bootable");
        }
        let label = r.label.as_deref().unwrap_or("-");
        let pad = w_label.saturating_sub(label.chars().count());
        writeln!(
            out,
            "{:<w_name$}  {label}{:pad$}  {:<7}  {:>13}  {:<8}  {:<28}  {}",
            r.name,
            "",
            r.fs,
            r.size,
            if r.complete { "yes" } else { "no" },
            ext.trim_start_matches(','),
            r.path
        )?;
    }
    Ok(())
}
