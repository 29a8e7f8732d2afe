//! `isomgr ls [-l] [-R] [--json] IMAGE [PATH]`: list inside an image without mounting it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::iso9660::read::join_path;
use crate::iso9660::{ondisk, Entry, Kind};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Long listing: mode, links, owner, group, size, modification time, symlink target.
    #[arg(short = 'l')]
    pub long: bool,
    /// Walk the whole tree below PATH.
    #[arg(short = 'R')]
    pub recursive: bool,
    /// One JSON array of {path, type, size, mode, mtime, target}.
    #[arg(long)]
    pub json: bool,
    /// The image file or block device.
    pub image: PathBuf,
    /// Absolute path inside the image.
    #[arg(default_value = "/")]
    pub path: String,
}

#[derive(Serialize)]
struct JsonEntry<'a> {
    path: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mode: String,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let image = super::open_image(&args.image)?;
    let ctx = || args.image.display().to_string();
    let start = image.lookup(&args.path).with_context(ctx)?;
    let start_path = if args.path.starts_with('/') {
        args.path.clone()
    } else {
        format!("/{}", args.path)
    };
    let mut listed: Vec<(String, Entry)> = Vec::new();
    if start.kind != Kind::Dir {
        listed.push((start_path.clone(), start));
    } else if args.recursive {
        image
            .walk(&start, &start_path, |p, e| {
                listed.push((p.to_owned(), e.clone()));
                Ok(())
            })
            .with_context(ctx)?;
    } else {
        for e in image.read_dir(&start).with_context(ctx)? {
            let p = join_path(&start_path, &e.name.to_string_lossy());
            listed.push((p, e));
        }
    }
    if args.json {
        let rows: Vec<JsonEntry<'_>> = listed
            .iter()
            .map(|(p, e)| JsonEntry {
                path: p,
                kind: e.kind.as_str(),
                size: e.size,
                mode: format!("{:04o}", e.mode),
                mtime: e.mtime.secs,
                target: e.target.as_ref().map(|t| t.to_string_lossy().into_owned()),
            })
            .collect();
        super::write_json(out, &rows)?;
        return Ok(());
    }
    for (path, e) in &listed {
        let shown = if args.recursive || start_path_is_file(&listed, path) {
            path.clone()
        } else {
            e.name.to_string_lossy().into_owned()
        };
        if args.long {
            let target = match &e.target {
                Some(t) => format!(" -> {}", t.to_string_lossy()),
                None => String::new(),
            };
            writeln!(
                out,
                "{} {:>3} {:>5} {:>5} {:>12} {} {shown}{target}",
                mode_string(e),
                e.nlink,
                e.uid,
                e.gid,
                e.size,
                format_time(e.mtime.secs),
            )?;
        } else {
            writeln!(out, "{shown}")?;
        }
    }
    out.flush()?;
    Ok(())
}

fn start_path_is_file(listed: &[(String, Entry)], path: &str) -> bool {
    listed.len() == 1
        && listed
            .first()
            .is_some_and(|(p, e)| p == path && e.kind != Kind::Dir)
}

/// `ls -l` style mode: type letter and rwx triplets with setuid/setgid/sticky.
fn mode_string(e: &Entry) -> String {
    let t = match e.kind {
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::File => '-',
        Kind::Other => '?',
    };
    let m = e.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |x: u32, s: u32, lower: char, upper: char| match (m & x != 0, m & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// UTC "YYYY-MM-DD HH:MM".
fn format_time(secs: i64) -> String {
    let (y, m, d) = ondisk::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem / 60 % 60
    )
}
