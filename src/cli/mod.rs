//! The command line: one module per subcommand. This is the only layer that prints; each
//! subcommand writes its results to the writer it is given and returns errors with context.

use std::io::{self, Write};

use clap::{Parser, Subcommand};

pub mod cat;
pub mod completions;
pub mod install;
pub mod ls;
pub mod man;
pub mod mkiso;
pub mod scan;
pub mod status;
pub mod watch;

/// Makes optical-disc images appear as directories by themselves.
#[derive(Debug, Parser)]
#[command(name = "isomgr", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); ISOMGR_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Identify images in files and directories without mounting them.
    Scan(scan::Args),
    /// List inside an image without mounting it.
    Ls(ls::Args),
    /// Write one file of an image to standard output.
    Cat(cat::Args),
    /// Watch directories of images and serve each as a directory under the root.
    Watch(watch::Args),
    /// What a running watcher serves (from its state file).
    Status(status::Args),
    /// Build an ISO image from a directory tree (what `genisoimage -J -r` does).
    // -V is the volume label here, as in genisoimage; `isomgr --version` still works.
    #[command(
        disable_version_flag = true,
        after_help = "Environment:\n  SOURCE_DATE_EPOCH      fixed times: the same tree gives the same bytes\n  \
                      ISOMGR_PROGRESS_DELAY  seconds before progress shows on a terminal (0.5)"
    )]
    Mkiso(mkiso::Args),
    /// Place the binary, the systemd unit, the tmpfiles entry, the example configuration, the
    /// manual pages and the shell completions; make the root and the drop directory.
    Install(install::Args),
    /// Print shell completions (bash, zsh, fish).
    Completions(completions::Args),
    /// Print a manual page (roff), generated from this command line.
    #[command(hide = true)]
    Man(man::Args),
}

/// Runs a parsed command line, writing results to `out`.
pub fn run(cli: Cli, out: &mut impl Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Scan(args) => scan::run(&args, out),
        Command::Ls(args) => ls::run(&args, out),
        Command::Cat(args) => cat::run(&args, out),
        Command::Watch(args) => watch::run(&args, out),
        Command::Status(args) => status::run(&args, out),
        Command::Mkiso(args) => mkiso::run(&args, out),
        Command::Install(args) => install::run(&args, out),
        Command::Completions(args) => completions::run(&args, out),
        Command::Man(args) => man::run(&args, out),
    }
}

/// Installs the log subscriber (stderr). `ISOMGR_LOG` takes a tracing filter; otherwise
/// warnings (the watcher: lifecycle), or more with each `-v`.
pub fn init_logging(cli: &Cli) {
    let (watching, json) = match &cli.command {
        Command::Watch(a) => (true, watch::log_format(a) == watch::LogFormat::Json),
        _ => (false, false),
    };
    let verbose = cli.verbose + u8::from(watching);
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ISOMGR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The exit code for an error: 2 for a usage error (an invalid configuration file or flag
/// value), 0 for a closed pipe, 1 for anything else.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if is_broken_pipe(e) {
        0
    } else if e.chain().any(|c| {
        c.downcast_ref::<crate::config::Error>()
            .is_some_and(crate::config::Error::is_usage)
    }) {
        2
    } else {
        1
    }
}

/// A write to a closed pipe (`isomgr ls x.iso | head`) is not a failure, except for an image
/// (`mkiso -o - | ...`): one cut short is.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    }) && !e.chain().any(|c| c.is::<crate::iso9660::write::Error>())
}

/// Writes one JSON document and a newline. Serialised first, so a closed pipe shows up
/// as the plain I/O error it is.
pub(crate) fn write_json(
    out: &mut impl Write,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    // Indented for a person at a terminal; compact for programs (a scan of 10,000 images is
    // megabytes of JSON).
    let mut doc = if io::IsTerminal::is_terminal(&io::stdout()) {
        serde_json::to_vec_pretty(value)?
    } else {
        serde_json::to_vec(value)?
    };
    doc.push(b'\n');
    out.write_all(&doc)?;
    Ok(())
}

/// Opens an image file or block device read-only, with the path in every error.
pub(crate) fn open_image(
    path: &std::path::Path,
) -> anyhow::Result<crate::iso9660::Image<std::fs::File>> {
    use anyhow::Context;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let image = crate::iso9660::Image::open(file).with_context(|| path.display().to_string())?;
    if let Some(w) = image.udf_fallback() {
        eprintln!("isomgr: {}: warning: {w}", path.display());
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
