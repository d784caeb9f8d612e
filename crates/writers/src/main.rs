//! `shadowcopy-writer`: runs one declared writer on its own, connected to `shadowcopyd`, or
//! checks declarations and prints the WMD they produce.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use shadowcopy_metadata::json::Document as _;
use shadowcopy_writers::declaration::{self, Declaration};

/// The example declaration shown by `--help`.
const EXAMPLE: &str = r#"Example declaration (/etc/shadowcopy/writers.d/webapp.toml):

  kind = "script"                    # script | hooks | cgroup | postgresql | mariadb | sqlite
  name = "webapp"
  freeze_timeout_ms = 10000          # optional; default 60000
  [script]
  freeze = "systemctl kill -s STOP webapp.service"
  thaw = "systemctl kill -s CONT webapp.service"
  [[script.components]]
  name = "data"
  files = [{ path = "/srv/webapp", filespec = "*", recursive = true }]

shadowcopyd hosts every declaration in its writers directory (service.writers_dir, default
/etc/shadowcopy/writers.d); this program runs one of them as a process of its own instead.
The format and every kind are described in docs/writers.md."#;

/// shadowcopy-writer: run or check a declared shadowcopy writer.
#[derive(Debug, Parser)]
#[command(name = "shadowcopy-writer", version, max_term_width = 100, after_help = EXAMPLE)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the writer declared in FILE until SIGTERM or SIGINT; a backup in progress is aborted
    /// (the application thawed) before it exits.
    #[command(after_help = EXAMPLE)]
    Run {
        /// The declaration file.
        #[arg(value_name = "FILE.toml")]
        file: PathBuf,
        /// The coordinator's socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The log format: `text`, `json` (one object per line, with set_id, writer and phase as
        /// keys) or `journal` (journal entries with SHADOWCOPY_SET_ID, SHADOWCOPY_WRITER and
        /// SHADOWCOPY_PHASE fields). Default: journal when stderr is connected to the journal (a
        /// systemd unit), text otherwise.
        #[arg(long, value_enum, value_name = "FORMAT")]
        log_format: Option<shadowcopy_logging::LogFormat>,
    },
    /// Validate declarations and print the Writer Metadata Document each produces, as JSON.
    #[command(after_help = EXAMPLE)]
    Check {
        /// The declaration files.
        #[arg(value_name = "FILE.toml", required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a shell completion script, for example `shadowcopy-writer completions bash`.
    Completions(shadowcopy_manual::CompletionsArgs),
    /// Write the man pages of shadowcopy-writer and its subcommands into DIR
    /// (packaging/deb/build.sh).
    #[command(hide = true)]
    ManPages(shadowcopy_manual::ManPagesArgs),
}

/// The default socket of shadowcopyd: `shadowcopy_protocol::DEFAULT_SOCKET`, the SDK's default
/// (a test in this file keeps the two equal).
const DEFAULT_SOCKET: &str = "/run/shadowcopy/shadowcopyd.sock";

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(error) => {
                tracing::error!("cannot handle SIGTERM ({error}); stop with SIGINT");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: aborting any backup in progress first");
}

async fn run(file: PathBuf, socket: PathBuf) -> ExitCode {
    let declaration = match Declaration::load(&file) {
        Ok(declaration) => declaration,
        Err(error) => {
            shadowcopy_logging::report(tracing::Level::ERROR, &error.to_string());
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(file = %file.display(), writer = %declaration.name, kind = %declaration.kind,
        socket = %socket.display(), "starting");
    match declaration::run(declaration, &socket, terminated()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // As a record in the log format, so that a unit's journal has it with the others.
            shadowcopy_logging::report(tracing::Level::ERROR, &format!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for file in files {
        let result = Declaration::load(file)
            .map_err(anyhow::Error::from)
            .and_then(|declaration| declaration::metadata(&declaration));
        match result {
            Ok(wmd) => println!("{}", wmd.to_canonical_json()),
            Err(error) => {
                eprintln!("shadowcopy-writer: {error:#}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The exit status of a completions or man-pages command.
fn manual(result: Result<(), shadowcopy_manual::ManualError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shadowcopy-writer: {error}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Run {
            file,
            socket,
            log_format,
        } => {
            shadowcopy_logging::init(
                "shadowcopy-writer",
                shadowcopy_logging::LogFormat::resolve(log_format),
                "info",
            );
            run(file, socket).await
        }
        Command::Check { files } => check(&files),
        Command::Completions(args) => manual(shadowcopy_manual::write_completions(
            Args::command(),
            args.shell,
            &mut std::io::stdout(),
        )),
        Command::ManPages(args) => manual(
            shadowcopy_manual::write_man_pages(
                Args::command(),
                shadowcopy_manual::Section::Commands,
                &args.dir,
            )
            .map(drop),
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_subcommand_has_a_page_and_completions() {
        let check =
            shadowcopy_manual::check(super::Args::command(), shadowcopy_manual::Section::Commands)
                .unwrap();
        assert_eq!(check.missing, Vec::<String>::new());
        for page in [
            "shadowcopy-writer.1",
            "shadowcopy-writer-run.1",
            "shadowcopy-writer-check.1",
            "shadowcopy-writer-completions.1",
        ] {
            assert!(
                check.pages.contains(&page.to_owned()),
                "{page}: {:?}",
                check.pages
            );
        }
    }

    #[test]
    fn default_socket_is_the_sdks() {
        assert_eq!(
            shadowcopy_writer_sdk::WriterOptions::default().socket,
            std::path::PathBuf::from(super::DEFAULT_SOCKET)
        );
    }
}
