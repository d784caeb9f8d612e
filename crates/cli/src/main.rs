//! `shadowcopy`: the command-line tool for shadow copies, writers, backups and restores, documents,
//! selections and result codes.

mod backups;
mod codes;
mod coordinator;
mod daemon;
mod document;
mod manual;
mod namespace;
mod output;
mod progress;
mod repo;
mod select;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit statuses, shown after the top-level help (kept verbatim: clap would reflow a doc
/// comment into one paragraph).
const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  the input was read but breaks a rule (an invalid document, an illegal selection, an unknown
     code), the daemon cannot be reached, or the daemon refused or failed the request; the VSS
     code's name and number (for example VSS_E_OBJECT_NOT_FOUND) and what to do are printed on
     standard error; `backup` and `restore` also exit 1 when a component was not saved or not
     restored, and `backups check` when it found a problem
  2  usage error: an unknown option, a missing or conflicting argument
  `create --auto-release --exec COMMAND` exits with COMMAND's exit status once the set was made";

/// shadowcopy: application-consistent shadow copies and backups for Linux, after the Volume
/// Shadow Copy Service model.
///
/// Commands that talk to the daemon (`writers`, `providers`, `list`, `create`, `delete`, `revert`,
/// `status`, `expose`, `unexpose`) use the socket given by `--socket` or `SHADOWCOPY_SOCKET`, by
/// default /run/shadowcopy/shadowcopyd.sock. `backup` and `restore` use it too, and when no socket
/// is named and no daemon answers they run the coordinator themselves (embedded mode).
///
/// Backups go into restic repositories: `--repo` or RESTIC_REPOSITORY names one, and the password
/// comes from RESTIC_PASSWORD, RESTIC_PASSWORD_FILE or a prompt.
///
/// Diagnostics (errors, notices, and the logs of a coordinator running inside the command) go to
/// standard error in the format of `--log-format`, at the level of RUST_LOG (default: warn for
/// text, info for json and journal).
#[derive(Debug, Parser)]
#[command(
    name = "shadowcopy",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = EXIT_STATUS
)]
struct Cli {
    /// Print the result as JSON on standard output instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// How diagnostics are written on standard error: `text`, `json` (one object per line, with
    /// set_id, writer and phase as keys) or `journal` (journal entries). Default: journal when
    /// standard error is connected to the journal, text otherwise.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<shadowcopy_logging::LogFormat>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check and inspect Writer Metadata Documents and Backup Components Documents.
    #[command(subcommand)]
    Document(document::DocumentCommand),
    /// Resolve which components a backup includes, and why, from writers' metadata documents.
    ///
    /// Components are named `WRITER:FULL\PATH`, where WRITER is the writer's name or class id and
    /// FULL\PATH is the component's logical path and name joined with `\` (for example
    /// `MyWriter:writerData\Set1`). Required components are added and implicit members listed, with
    /// the rule that brought each one in (spec §8).
    Select(select::SelectArgs),
    /// Explain VSS result codes: `shadowcopy codes 0x80042316` or `shadowcopy codes VSS_E_BAD_STATE`.
    ///
    /// Without an argument, lists every code.
    Codes(codes::CodesArgs),
    #[command(flatten)]
    Daemon(daemon::DaemonCommand),
    Backup(backups::BackupArgs),
    /// List, show and check the backups of a repository.
    #[command(subcommand)]
    Backups(backups::BackupsCommand),
    Restore(backups::RestoreArgs),
    /// Print a shell completion script, for example `shadowcopy completions bash`.
    ///
    /// The Debian package installs the scripts for bash, zsh and fish. Elsewhere, put it where the
    /// shell looks: `shadowcopy completions bash > /usr/share/bash-completion/completions/shadowcopy`,
    /// `shadowcopy completions zsh > /usr/local/share/zsh/site-functions/_shadowcopy` or
    /// `shadowcopy completions fish > ~/.config/fish/completions/shadowcopy.fish`.
    Completions(shadowcopy_manual::CompletionsArgs),
    /// Write the man pages of shadowcopy and every subcommand into DIR (packaging/deb/build.sh).
    #[command(hide = true)]
    ManPages(shadowcopy_manual::ManPagesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Installed before any command runs (and before `backup` enters its mount namespace, which
    // needs a single thread: this starts none).
    let log_format = shadowcopy_logging::LogFormat::resolve(cli.log_format);
    let default_level = match log_format {
        shadowcopy_logging::LogFormat::Text => "warn",
        _ => "info",
    };
    let log_format = shadowcopy_logging::init("shadowcopy", log_format, default_level);
    let out = output::Output::new(cli.json, log_format);
    let result = match cli.command {
        Command::Document(command) => document::run(command, &out),
        Command::Select(args) => select::run(args, &out),
        Command::Codes(args) => codes::run(args, &out),
        Command::Daemon(command) => daemon::run(command, &out),
        Command::Backup(args) => {
            namespace::enter_private().and_then(|()| backups::backup(args, &out))
        }
        Command::Backups(command) => backups::backups(command, &out),
        Command::Restore(args) => backups::restore(args, &out),
        Command::Completions(args) => manual::completions(&args),
        Command::ManPages(args) => manual::man_pages(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            // `shadowcopy: ...` as text, a record at level ERROR otherwise.
            shadowcopy_logging::report(tracing::Level::ERROR, &format!("{error:#}"));
            ExitCode::from(1)
        }
    }
}
