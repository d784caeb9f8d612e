//! `shadowcopy completions SHELL` and the hidden `shadowcopy man-pages DIR`: shell completions
//! and man pages made from this binary's own clap definition (`shadowcopy-manual` says why the
//! binary is its own generator).

use std::process::ExitCode;

use clap::CommandFactory;
use shadowcopy_manual::{CompletionsArgs, ManPagesArgs, Section};

/// Prints the completion script of `args.shell` on standard output.
pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    shadowcopy_manual::write_completions(
        crate::Cli::command(),
        args.shell,
        &mut std::io::stdout(),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `shadowcopy.1` and one page per subcommand into `args.dir`.
pub(crate) fn man_pages(args: &ManPagesArgs) -> anyhow::Result<ExitCode> {
    shadowcopy_manual::write_man_pages(crate::Cli::command(), Section::Commands, &args.dir)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_page_and_completions() {
        let check = shadowcopy_manual::check(crate::Cli::command(), Section::Commands).unwrap();
        assert_eq!(check.missing, Vec::<String>::new());
        // The commands the user guide documents, each with its page; the hidden generator has none.
        for command in [
            "backup",
            "backups",
            "restore",
            "create",
            "list",
            "expose",
            "unexpose",
            "delete",
            "revert",
            "status",
            "writers",
            "providers",
            "select",
            "document",
            "codes",
            "completions",
        ] {
            let page = format!("shadowcopy-{command}.1");
            assert!(check.pages.contains(&page), "{page}: {:?}", check.pages);
        }
        assert!(
            check
                .pages
                .contains(&"shadowcopy-backups-list.1".to_owned())
        );
        assert!(!check.pages.iter().any(|page| page.contains("man-pages")));
    }
}
