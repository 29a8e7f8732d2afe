//! `isomgr mkiso`: builds an ISO9660 image (Rock Ridge, Joliet) from a directory tree.
//!
//! The shell around [`crate::iso9660::write`]: reads `SOURCE_DATE_EPOCH`, shows progress on a
//! terminal, prints warnings to stderr. Nothing goes to stdout.

use crate::iso9660::write::{self, Options, Progress};
use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Build an ISO image from a directory tree (what `genisoimage -J -r` does).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Directory whose contents become the image's root.
    pub src_dir: PathBuf,
    /// Image to write (written to a temporary name beside it, then renamed).
    #[arg(short = 'o', long = "output", value_name = "OUT.iso")]
    pub output: PathBuf,
    /// Volume label (default: the source directory's name).
    #[arg(short = 'V', long = "volume-label", value_name = "LABEL")]
    pub label: Option<String>,
    /// Leave out the Joliet tree.
    #[arg(long)]
    pub no_joliet: bool,
    /// Leave out Rock Ridge (POSIX names, modes, owners, times, symlinks).
    #[arg(long)]
    pub no_rock_ridge: bool,
    /// Owners 0, everything readable, no write bits (genisoimage's -r).
    #[arg(long)]
    pub rational: bool,
    /// Fail on FIFOs, sockets and devices instead of skipping them.
    #[arg(long)]
    pub strict: bool,
}

fn default_label(src: &Path) -> String {
    let canon = std::fs::canonicalize(src).unwrap_or_else(|_| src.to_path_buf());
    canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "CDROM".to_string())
}

fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse::<i64>().map(Some).with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds")
            })
        }
        _ => Ok(None),
    }
}

/// Runs `mkiso`; `_out` gets nothing (the image is the output).
pub fn run(args: &Args, _out: &mut impl Write) -> anyhow::Result<()> {
    let opts = Options {
        label: args
            .label
            .clone()
            .unwrap_or_else(|| default_label(&args.src_dir)),
        joliet: !args.no_joliet,
        rock_ridge: !args.no_rock_ridge,
        rational: args.rational,
        strict: args.strict,
        source_date_epoch: source_date_epoch()?,
    };
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = started;
    let mut shown = false;
    let mut progress = |p: Progress| {
        if !tty {
            return;
        }
        let now = Instant::now();
        let finished = p.done >= p.total;
        if now.duration_since(started) < Duration::from_millis(500) && !(finished && shown) {
            return;
        }
        if !finished && now.duration_since(last) < Duration::from_millis(100) {
            return;
        }
        last = now;
        shown = true;
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
        eprint!(
            "\rmkiso: {} / {} MiB ({pct}%)   ",
            p.done >> 20,
            p.total >> 20
        );
    };
    let result = write::build(&args.src_dir, &args.output, &opts, &mut progress);
    if shown {
        eprintln!();
    }
    let report = result.with_context(|| format!("building {}", args.output.display()))?;
    for w in &report.warnings {
        eprintln!("isomgr: warning: {w}");
    }
    Ok(())
}
