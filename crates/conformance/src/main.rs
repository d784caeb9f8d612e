//! `shadowcopy-conformance`: runs the conformance scenarios against a live `shadowcopyd`, checks a
//! writer written by someone else, holds a session open for crash tests, and benchmarks the backup
//! cycle through the daemon. See the library's documentation for what each does.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use shadowcopy_conformance::bench::{BenchOptions, BenchRow, bench};
use shadowcopy_conformance::hold::{HoldContext, hold_session};
use shadowcopy_conformance::report::format_duration;
use shadowcopy_conformance::{RunOptions, run_suite, run_writer_suite};

/// The conformance suite of shadowcopy (spec §22), run against a live shadowcopyd.
#[derive(Debug, Parser)]
#[command(name = "shadowcopy-conformance", version, max_term_width = 100)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the scenarios against a daemon whose configuration has `[providers] simulated = true`.
    ///
    /// Prints one line per scenario, `ok|FAILED  ID name [requirement IDs]  (duration)`, with the
    /// reason under a failed one, and then `N passed, M failed`. Exits with 0 only when nothing
    /// failed.
    Run {
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        /// Runs only the scenarios whose label, name or requirement IDs contain PATTERN
        /// (case-insensitive); repeat or separate with commas for several.
        #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
        only: Vec<String>,
        /// Checks the registered writer with this name, instance name, class id or instance id
        /// instead of running the built-in scenarios.
        #[arg(long, value_name = "NAME_OR_CLASS_ID")]
        writer: Option<String>,
        /// The daemon's `service.commit_window_ms` (CFG-10), so that the commit-window scenarios
        /// check it exactly; without it they check the 10 s cap of LIMIT-5.
        #[arg(long, value_name = "MS")]
        commit_window_ms: Option<u64>,
        /// Prints a JSON report instead of the lines.
        #[arg(long)]
        json: bool,
    },
    /// Runs a volume-mode backup of every registered writer up to and including DoSnapshotSet,
    /// prints `{"set_id": ..., "snapshot_ids": [...]}` on one line and then waits forever, holding
    /// the session (for tests that kill the requester, TS-15). Registers no writer.
    HoldSession {
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        /// A volume to add to the set; repeat for several.
        #[arg(long, required = true)]
        volume: Vec<String>,
        /// The snapshot context.
        #[arg(long, value_enum, default_value = "backup")]
        context: ContextArg,
    },
    /// Measures one full backup cycle through the daemon with N in-process writers, and prints the
    /// median and 90th percentile per N as a Markdown table.
    Bench {
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        /// The numbers of writers, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        writers: Vec<usize>,
        /// Measured cycles per number of writers (after one warm-up cycle).
        #[arg(long, default_value_t = 20)]
        iterations: usize,
    },
}

/// The contexts `hold-session` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ContextArg {
    /// BACKUP: auto-release shadow copies.
    Backup,
    /// APP_ROLLBACK: persistent shadow copies.
    AppRollback,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("shadowcopy-conformance: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Run {
            socket,
            only,
            writer,
            commit_window_ms,
            json,
        } => {
            let options = RunOptions {
                socket,
                only: only.into_iter().filter(|p| !p.is_empty()).collect(),
                commit_window: commit_window_ms.map(Duration::from_millis),
            };
            // Lines are printed as scenarios end, so that a long run shows progress.
            let print = |result: &shadowcopy_conformance::report::ScenarioResult| {
                if !json {
                    println!("{}", result.line());
                }
            };
            let report = match &writer {
                Some(writer) => run_writer_suite(&options, writer, print).await,
                None => run_suite(&options, print).await,
            }
            .context("cannot run the conformance suite")?;
            if json {
                println!("{}", report.to_json());
            } else {
                println!("{}", report.summary());
            }
            Ok(if report.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::HoldSession {
            socket,
            volume,
            context,
        } => {
            let context = match context {
                ContextArg::Backup => HoldContext::Backup,
                ContextArg::AppRollback => HoldContext::AppRollback,
            };
            let held = hold_session(&socket, &volume, context)
                .await
                .context("cannot hold a backup session")?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", serde_json::to_string(&held.set)?)?;
            stdout.flush()?;
            drop(stdout);
            // Keep the session (and its stream) alive until the process is killed.
            std::future::pending::<()>().await;
            drop(held);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            socket,
            writers,
            iterations,
        } => {
            anyhow::ensure!(iterations > 0, "--iterations must be at least 1");
            println!("| Writers | Median | p90 |");
            println!("|---:|---:|---:|");
            let options = BenchOptions {
                socket,
                writers,
                iterations,
            };
            bench(&options, |row: &BenchRow| {
                println!(
                    "| {} | {} | {} |",
                    row.writers,
                    format_duration(row.median),
                    format_duration(row.p90)
                );
            })
            .await
            .map_err(anyhow::Error::msg)
            .context("the benchmark failed")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
