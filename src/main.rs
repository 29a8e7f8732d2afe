use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = isomgr::cli::Cli::parse();
    let mut out = std::io::stdout().lock();
    match isomgr::cli::run(cli, &mut out) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("isomgr: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
