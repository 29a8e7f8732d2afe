//! `isomgr man [COMMAND]` (hidden): the manual pages, generated from the command-line
//! definition (clap_mangen) so they never drift from the flags. One page for `isomgr` and one per
//! subcommand (`isomgr-watch(1)`...), as the main page's SUBCOMMANDS section refers to them;
//! `isomgr install` places them all.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The subcommand whose page to print (`watch` prints isomgr-watch(1)); none: isomgr(1).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// Every page: (file name, roff source), `isomgr.1` first, hidden subcommands left out.
pub fn pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = vec![render(cmd.clone())?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push(render(sub.clone())?);
    }
    Ok(out)
}

fn render(cmd: clap::Command) -> anyhow::Result<(String, Vec<u8>)> {
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    man.render(&mut page).context("rendering a manual page")?;
    Ok((man.get_filename(), page))
}

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let want = match &args.command {
        None => "isomgr.1".to_owned(),
        Some(c) => format!("isomgr-{c}.1"),
    };
    let pages = pages()?;
    let Some((_, page)) = pages.iter().find(|(name, _)| *name == want) else {
        let known: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        anyhow::bail!("no manual page {want} (there are {})", known.join(", "));
    };
    out.write_all(page)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_subcommand_and_the_main_page_lists_them() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "isomgr.1");
        for want in ["isomgr-watch.1", "isomgr-completions.1"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(
            !names.contains(&"isomgr-man.1"),
            "the hidden command has no page"
        );
        let main = String::from_utf8_lossy(&pages[0].1);
        assert!(main.contains("\n.TH isomgr 1 "), "{main}");
        assert!(main.contains("isomgr\\-watch(1)"), "{main}");
        let watch =
            String::from_utf8_lossy(&pages.iter().find(|(n, _)| n == "isomgr-watch.1").unwrap().1);
        assert!(watch.contains("\\-\\-root"), "{watch}");
    }
}
