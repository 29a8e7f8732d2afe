//! Command line: one file per subcommand.

pub mod mkiso;

use clap::{Parser, Subcommand};
use std::io::Write;

/// isomgr: serve ISO9660 images as directories, and build them.
#[derive(Parser, Debug)]
#[command(name = "isomgr", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an ISO image from a directory tree.
    Mkiso(mkiso::Args),
}

/// Runs one parsed command line.
pub fn run(cli: Cli, out: &mut impl Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Mkiso(args) => mkiso::run(&args, out),
    }
}
