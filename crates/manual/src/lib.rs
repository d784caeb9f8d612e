//! Man pages and shell completions of shadowcopy's binaries, generated from each binary's own clap
//! definition, so that the manual says what `--help` says and cannot drift from it.
//!
//! Every binary is its own generator: `shadowcopy` and `shadowcopy-writer` have a public
//! `completions SHELL` subcommand and a hidden `man-pages DIR` one, and `shadowcopyd` has hidden
//! `--completions SHELL` and `--man-pages DIR` flags; each hands its `clap::Command` to
//! [`write_completions`] or [`write_man_pages`]. The clap definitions stay where they are, beside
//! the code that runs them, and nothing repeats them. Moving them into libraries for a separate
//! generator binary would have split every command module of the CLI in two for no other reader;
//! the price of this way is that generating needs binaries that run on the build machine, which
//! `packaging/deb/build.sh` has anyway.
//!
//! [`missing`] is what the binaries' tests use: it names every subcommand without a page, every
//! option a page does not show, and every subcommand or option a completion script leaves out.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Command;
pub use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

/// The manual section of a program's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Section 1, user commands: `shadowcopy`, `shadowcopy-writer`.
    Commands,
    /// Section 8, system administration commands and daemons: `shadowcopyd`, in /usr/sbin.
    Daemons,
}

impl Section {
    /// The section's number, which is also the pages' file extension.
    pub fn number(self) -> &'static str {
        match self {
            Section::Commands => "1",
            Section::Daemons => "8",
        }
    }
}

/// The programs every page names under SEE ALSO, but for itself.
const PROGRAMS: [(&str, Section); 3] = [
    ("shadowcopy", Section::Commands),
    ("shadowcopyd", Section::Daemons),
    ("shadowcopy-writer", Section::Commands),
];

/// Where the Debian package puts the user guide (`docs/guide/`), named under SEE ALSO.
pub const GUIDE: &str = "/usr/share/doc/shadowcopy/guide/";

/// The shells [`missing`] checks, those the Debian package ships completions for.
pub const PACKAGED_SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Arguments of a `completions` subcommand.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Arguments of a hidden `man-pages` subcommand.
#[derive(Debug, clap::Args)]
pub struct ManPagesArgs {
    /// The directory to write the pages into; created if missing.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// A page or a completion script that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// The output directory could not be created.
    #[error("cannot create the man page directory {path}: {source}; name a writable directory")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A page could not be written.
    #[error("cannot write the man page {path}: {source}; check the space and permissions there")]
    WritePage {
        /// The page's file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A completion script could not be written to its output.
    #[error("cannot write the {shell} completion script: {source}")]
    WriteCompletions {
        /// The shell.
        shell: Shell,
        /// Why.
        source: io::Error,
    },
}

/// The command after clap has filled in what it derives (display and binary names of the
/// subcommands, the help and version flags), without the `help` subcommand, which needs no page.
fn built(cmd: Command) -> Command {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `cmd` and every visible subcommand under it, depth first; each gets a page.
fn pages(cmd: &Command) -> Vec<&Command> {
    let mut all = vec![cmd];
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        all.extend(pages(sub));
    }
    all
}

/// A page's name: `shadowcopy-backups-list` for `shadowcopy backups list`.
fn page_name(cmd: &Command) -> &str {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name())
}

/// The page's file name in `section`.
fn file_name(cmd: &Command, section: Section) -> String {
    format!("{}.{}", page_name(cmd), section.number())
}

/// Renders one page: clap_mangen's sections, then SEE ALSO.
fn render(cmd: &Command, parent: Option<&Command>, root: &Command, section: Section) -> Vec<u8> {
    let version = root.get_version().unwrap_or_default();
    let man = Man::new(cmd.clone())
        .section(section.number())
        .source(format!("shadowcopy {version}"))
        .manual("shadowcopy manual");
    let mut page = Vec::new();
    man.render(&mut page)
        .expect("rendering into memory cannot fail");
    let mut page = String::from_utf8(page).expect("clap_mangen writes UTF-8");
    // clap_mangen heads `after_help` (the exit statuses, the example declaration) EXTRA, a heading
    // no man page has, and fills it as prose; it is laid out by hand for `--help`, so it goes
    // under NOTES unfilled.
    if let Some(start) = page.find("\n.SH EXTRA\n") {
        let body = start + "\n.SH EXTRA\n".len();
        let end = page[body..]
            .find("\n.SH ")
            .map_or(page.len(), |next| body + next + 1);
        page.insert_str(end, ".fi\n");
        page.replace_range(start..body, "\n.SH NOTES\n.nf\n");
    }

    // The programs' abouts begin with their names ("shadowcopyd: sequences ..."), which NAME gives
    // already.
    let name = page_name(cmd).replace('-', "\\-");
    page = page.replacen(
        &format!("\n{name} \\- {name}: "),
        &format!("\n{name} \\- "),
        1,
    );

    let mut refs: Vec<(String, Section)> = Vec::new();
    if let Some(parent) = parent {
        refs.push((page_name(parent).to_owned(), section));
    }
    for (program, program_section) in PROGRAMS {
        if program != page_name(cmd) && !refs.iter().any(|(name, _)| name == program) {
            refs.push((program.to_owned(), program_section));
        }
    }
    let mut inlines = Vec::new();
    for (i, (name, ref_section)) in refs.iter().enumerate() {
        if i > 0 {
            inlines.push(roman(", "));
        }
        inlines.push(bold(name.as_str()));
        inlines.push(roman(format!("({})", ref_section.number())));
    }
    inlines.push(roman(format!(
        "; the user guide in {GUIDE} (docs/guide/ in the source)."
    )));
    let mut see_also = Roff::new();
    see_also.control("SH", ["SEE ALSO"]).text(inlines);
    // to_roff leaves out the apostrophe preamble, which the page above already has.
    page.push_str(&see_also.to_roff());
    page.into_bytes()
}

/// Writes the page of `cmd` and one of each visible subcommand at every depth into `dir`
/// (`shadowcopy.1`, `shadowcopy-backup.1`, `shadowcopy-backups-list.1`, ...) and returns their
/// paths.
pub fn write_man_pages(
    cmd: Command,
    section: Section,
    dir: &Path,
) -> Result<Vec<PathBuf>, ManualError> {
    std::fs::create_dir_all(dir).map_err(|source| ManualError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let root = built(cmd);
    let mut written = Vec::new();
    write_pages(&root, None, &root, section, dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    cmd: &Command,
    parent: Option<&Command>,
    root: &Command,
    section: Section,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), ManualError> {
    let path = dir.join(file_name(cmd, section));
    std::fs::write(&path, render(cmd, parent, root, section)).map_err(|source| {
        ManualError::WritePage {
            path: path.clone(),
            source,
        }
    })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, Some(cmd), root, section, dir, written)?;
    }
    Ok(())
}

/// The completion script of `cmd` for `shell`.
pub fn completions(cmd: Command, shell: Shell) -> String {
    let mut cmd = built(cmd);
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    String::from_utf8(script).expect("clap_complete writes UTF-8")
}

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn write_completions(
    cmd: Command,
    shell: Shell,
    out: &mut dyn Write,
) -> Result<(), ManualError> {
    // Generated into memory first: clap_complete panics when its writer fails (a closed pipe).
    out.write_all(completions(cmd, shell).as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| ManualError::WriteCompletions { shell, source })
}

/// The visible long options of `cmd`, `--help` and `--version` included.
fn long_options(cmd: &Command) -> Vec<&str> {
    cmd.get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .filter_map(|arg| arg.get_long())
        .collect()
}

/// What the pages in `man_dir` and the completion scripts of [`PACKAGED_SHELLS`] leave out of
/// `cmd`, one line each; empty when they are complete.
///
/// Every visible subcommand at every depth must have its page, each page must show every visible
/// long option of its command and name every subcommand under it, and each completion script must
/// mention every subcommand and long option.
pub fn missing(cmd: Command, section: Section, man_dir: &Path) -> Vec<String> {
    let root = built(cmd);
    let mut problems = Vec::new();
    for command in pages(&root) {
        let path = man_dir.join(file_name(command, section));
        let page = match std::fs::read_to_string(&path) {
            // roff escapes every hyphen.
            Ok(page) => page.replace("\\-", "-"),
            Err(error) => {
                problems.push(format!(
                    "{}: no man page {} ({error})",
                    command.get_name(),
                    path.display()
                ));
                continue;
            }
        };
        for long in long_options(command) {
            if !page.contains(&format!("--{long}")) {
                problems.push(format!("{}: --{long} is not shown", path.display()));
            }
        }
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            if !page.contains(page_name(sub)) {
                problems.push(format!(
                    "{}: {} is not named",
                    path.display(),
                    page_name(sub)
                ));
            }
        }
    }
    for shell in PACKAGED_SHELLS {
        let script = completions(root.clone(), shell);
        for command in pages(&root) {
            if !script.contains(command.get_name()) {
                problems.push(format!("{shell} completions: no {}", page_name(command)));
            }
            for long in long_options(command) {
                if !script.contains(long) {
                    problems.push(format!(
                        "{shell} completions: no --{long} of {}",
                        page_name(command)
                    ));
                }
            }
        }
    }
    problems
}

/// What [`check`] found: the page files written, and what they and the completions leave out.
#[derive(Debug)]
pub struct Check {
    /// The file names of the pages, `shadowcopy.1` first.
    pub pages: Vec<String>,
    /// What [`missing`] found; empty when the manual is complete.
    pub missing: Vec<String>,
}

/// Writes the pages of `cmd` into a scratch directory, checks them and the completion scripts
/// with [`missing`], and removes the directory again: the binaries' tests.
pub fn check(cmd: Command, section: Section) -> Result<Check, ManualError> {
    /// Removes the scratch directory also when writing failed half-way.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "shadowcopy-manual-check-{}-{}-{}",
        cmd.get_name(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )));
    let written = write_man_pages(cmd.clone(), section, &scratch.0)?;
    let pages = written
        .iter()
        .filter_map(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    Ok(Check {
        pages,
        missing: missing(cmd, section, &scratch.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    /// A directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("shadowcopy-manual-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tool() -> Command {
        Command::new("tool")
            .version("1.2.3")
            .about("tool: a tool.")
            .after_help("Exit status:\n  0  success")
            .arg(Arg::new("json").long("json").action(ArgAction::SetTrue))
            .subcommand(
                Command::new("backups")
                    .about("Backups.")
                    .subcommand(
                        Command::new("list").arg(Arg::new("repo").long("repo").required(true)),
                    )
                    .subcommand(Command::new("check")),
            )
            .subcommand(Command::new("man-pages").hide(true))
            .arg(Arg::new("secret").long("secret").hide(true))
    }

    #[test]
    fn every_visible_subcommand_gets_a_page_named_after_its_path() {
        let dir = Scratch::new("pages");
        let written = write_man_pages(tool(), Section::Commands, &dir.0).unwrap();
        let mut names: Vec<String> = written
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "tool-backups-check.1",
                "tool-backups-list.1",
                "tool-backups.1",
                "tool.1"
            ]
        );
        assert_eq!(
            missing(tool(), Section::Commands, &dir.0),
            Vec::<String>::new()
        );

        let list = std::fs::read_to_string(dir.0.join("tool-backups-list.1")).unwrap();
        assert!(list.contains("\\-\\-repo"), "{list}");
        assert!(list.contains(".SH \"SEE ALSO\""), "{list}");
        assert!(
            list.contains("tool\\-backups"),
            "the parent is referred to: {list}"
        );
        let top = std::fs::read_to_string(dir.0.join("tool.1")).unwrap();
        assert!(
            top.contains(".SH NAME\ntool \\- a tool.\n"),
            "NAME does not repeat the name: {top}"
        );
        assert!(
            top.contains(".SH NOTES"),
            "after_help is under NOTES: {top}"
        );
        assert!(!top.contains("secret"), "hidden options stay hidden: {top}");
    }

    #[test]
    fn a_missing_page_and_a_section_mismatch_are_named() {
        let dir = Scratch::new("missing");
        write_man_pages(tool(), Section::Commands, &dir.0).unwrap();
        std::fs::remove_file(dir.0.join("tool-backups-list.1")).unwrap();
        let problems = missing(tool(), Section::Commands, &dir.0);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("tool-backups-list.1"), "{problems:?}");

        // Pages of section 1 are not those of section 8.
        assert_eq!(missing(tool(), Section::Daemons, &dir.0).len(), 4);
    }

    #[test]
    fn check_writes_checks_and_cleans_up() {
        let check = check(tool(), Section::Daemons).unwrap();
        assert_eq!(check.pages[0], "tool.8");
        assert_eq!(check.pages.len(), 4);
        assert_eq!(check.missing, Vec::<String>::new());
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|entry| {
                entry.file_name().to_string_lossy().starts_with(&format!(
                    "shadowcopy-manual-check-tool-{}-",
                    std::process::id()
                ))
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn completions_name_every_subcommand_and_option() {
        for shell in PACKAGED_SHELLS {
            let script = completions(tool(), shell);
            for word in ["backups", "list", "check", "repo", "json"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
        }
        let mut out = Vec::new();
        write_completions(tool(), Shell::Bash, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("complete -F"));
    }
}
