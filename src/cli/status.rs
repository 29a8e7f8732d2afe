//! `isomgr status [--json] [--state FILE]`: what a running watcher serves, from its state file.

use std::io::Write;
use std::path::PathBuf;

use crate::manager::StateFile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The status document as JSON: {root, driver, pid, media: [...]}.
    #[arg(long)]
    pub json: bool,
    /// The watcher's state file.
    #[arg(long, value_name = "FILE", default_value = "/run/isomgr/state.json")]
    pub state: PathBuf,
}

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let Some(doc) = StateFile::load(&args.state)? else {
        anyhow::bail!(
            "{}: no state file: no watcher has run with this state file",
            args.state.display()
        );
    };
    if !process_alive(doc.pid) {
        anyhow::bail!(
            "{}: the watcher (pid {}) is not running; nothing is served",
            args.state.display(),
            doc.pid
        );
    }
    if args.json {
        return super::write_json(out, &doc);
    }
    writeln!(
        out,
        "root {} (driver {}, pid {}), {} medi{}",
        doc.root.display(),
        doc.driver,
        doc.pid,
        doc.media.len(),
        if doc.media.len() == 1 { "um" } else { "a" }
    )?;
    for m in &doc.media {
        writeln!(
            out,
            "{}  {}  {}  {}  {}",
            m.name,
            m.label.as_deref().unwrap_or("-"),
            match m.source {
                crate::event::SourceKind::Dir => "dir",
                crate::event::SourceKind::Drive => "drive",
            },
            m.origin.display(),
            m.mounted_at
        )?;
    }
    Ok(())
}

/// Whether a process with this pid exists and is an isomgr.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "isomgr")
}
