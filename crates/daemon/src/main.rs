//! `shadowcopyd`: the coordinator service, serving requesters, writers and administrators on a
//! Unix socket. The service itself is the library ([`shadowcopy_daemon::Service`]); this binary
//! reads the command line and the configuration, installs logging and runs the service until a
//! signal.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};
use shadowcopy_daemon::{DEFAULT_CONFIG, DaemonConfig, Service};
use shadowcopy_manual::Section;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the span fields (set, writer, phase) as keys.
    Json,
}

/// shadowcopyd: sequences writers and providers for requesters over a Unix socket.
///
/// Settings come from the configuration file; `--socket` overrides `service.socket`.
/// The log level is taken from `RUST_LOG` (default `info`). SIGTERM or SIGINT stop the daemon after
/// every session has been released.
#[derive(Debug, Parser)]
#[command(name = "shadowcopyd", version, max_term_width = 100)]
struct Args {
    /// The configuration file; a missing file means every default.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The control socket, instead of the configuration's `service.socket`.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The state directory (catalogs, exposure table), instead of `service.state_dir`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where shadow copies are exposed by default, instead of `service.expose_dir`.
    #[arg(long, value_name = "DIR")]
    expose_dir: Option<PathBuf>,
    /// The directory of writer declarations to host, instead of `service.writers_dir`.
    #[arg(long, value_name = "DIR")]
    writers_dir: Option<PathBuf>,
    /// Check the configuration file, print the effective settings and exit.
    #[arg(long)]
    check_config: bool,
    /// The log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Print a shell completion script and exit (packaging; `shadowcopy-manual`).
    #[arg(long, value_enum, value_name = "SHELL", hide = true)]
    completions: Option<shadowcopy_manual::Shell>,
    /// Write the man page shadowcopyd.8 into DIR and exit (packaging/deb/build.sh).
    #[arg(long, value_name = "DIR", hide = true)]
    man_pages: Option<PathBuf>,
}

/// Installs the global subscriber; the binary's job, since a library must not.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        shadowcopy_manual::write_completions(Args::command(), shell, &mut std::io::stdout())?;
        return Ok(());
    }
    if let Some(dir) = &args.man_pages {
        shadowcopy_manual::write_man_pages(Args::command(), Section::Daemons, dir)?;
        return Ok(());
    }
    let mut config = DaemonConfig::load(&args.config)?;
    if let Some(socket) = args.socket {
        config.service.socket = socket;
    }
    if let Some(dir) = args.state_dir {
        config.service.state_dir = dir;
    }
    if let Some(dir) = args.expose_dir {
        config.service.expose_dir = dir;
    }
    if let Some(dir) = args.writers_dir {
        config.service.writers_dir = dir;
    }
    if args.check_config {
        println!("{}: ok\n{config:#?}", args.config.display());
        return Ok(());
    }
    init_logging(args.log_format);

    let mut service = Service::start(config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        // Only a failure ends the server on its own; stop still releases what is held, then
        // reports it.
        () = service.server_ended() => {}
    }
    service.stop().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_page_and_completions_are_complete() {
        let check =
            shadowcopy_manual::check(super::Args::command(), shadowcopy_manual::Section::Daemons)
                .unwrap();
        assert_eq!(check.missing, Vec::<String>::new());
        assert_eq!(check.pages, ["shadowcopyd.8"]);
    }
}
