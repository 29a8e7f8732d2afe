//! The `isomgr` binary: parse arguments, install logging, run, map the outcome to an exit code.

use clap::Parser;

fn main() {
    let cli = isomgr::cli::Cli::parse();
    isomgr::cli::init_logging(&cli);
    let code = match isomgr::cli::run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => 0,
        Err(e) => match isomgr::cli::exit_code(&e) {
            0 => 0,
            code => {
                eprintln!("isomgr: {e:#}");
                code
            }
        },
    };
    std::process::exit(code);
}
