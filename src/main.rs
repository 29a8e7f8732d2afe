//! The `isomgr` binary: parse arguments, install logging, run, map the outcome to an exit code.

use clap::Parser;

fn main() {
    let cli = isomgr::cli::Cli::parse();
    isomgr::cli::init_logging(cli.verbose);
    let code = match isomgr::cli::run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => 0,
        Err(e) if isomgr::cli::is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("isomgr: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
