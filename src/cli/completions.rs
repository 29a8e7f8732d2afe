//! `isomgr completions SHELL`: shell completions, generated from the command-line definition
//! (clap_complete), so they never drift from the flags.

use std::io::Write;

use clap::CommandFactory;

/// The shells completions are made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }

    /// Where `isomgr install` places the script, below the prefix: the directories each shell
    /// searches under /usr/local.
    pub fn install_path(self) -> &'static str {
        match self {
            Shell::Bash => "usr/local/share/bash-completion/completions/isomgr",
            Shell::Zsh => "usr/local/share/zsh/site-functions/_isomgr",
            Shell::Fish => "usr/local/share/fish/vendor_completions.d/isomgr.fish",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell: bash, zsh or fish.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell.generator(), &mut cmd, "isomgr", &mut out);
    out
}

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    out.write_all(&script(args.shell))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_completes_the_subcommands() {
        for shell in Shell::ALL {
            let s = String::from_utf8(script(shell)).expect("UTF-8");
            for sub in ["watch", "scan", "install", "completions"] {
                assert!(s.contains(sub), "{shell:?} completions lack {sub}");
            }
        }
    }
}
