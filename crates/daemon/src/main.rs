//! `shadowcopyd`: the coordinator service, serving requesters, writers and administrators on a
//! Unix socket. The service itself is the library ([`shadowcopy_daemon::Service`]); this binary
//! reads the command line and the configuration, installs logging and runs the service until a
//! signal.
//!
//! Under systemd (`packaging/systemd/`, docs/systemd.md) it serves the socket of
//! `shadowcopyd.socket` when socket-activated, tells the service manager READY=1 once it serves
//! and its hosted writers are registered and STOPPING=1 when a signal stops it, and logs to the
//! journal with the set, writer and phase as fields.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{CommandFactory, Parser};
use shadowcopy_daemon::systemd::{self, Notifier};
use shadowcopy_daemon::{DEFAULT_CONFIG, DaemonConfig, Service, ServiceSocket};
use shadowcopy_logging::LogFormat;
use shadowcopy_manual::Section;

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
    /// The log format: `text`, `json` (one object per line, with set_id, writer and phase as
    /// keys) or `journal` (journal entries with SHADOWCOPY_SET_ID, SHADOWCOPY_WRITER and
    /// SHADOWCOPY_PHASE fields). Default: journal when stderr is connected to the journal, text
    /// otherwise.
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Print a shell completion script and exit (packaging; `shadowcopy-manual`).
    #[arg(long, value_enum, value_name = "SHELL", hide = true)]
    completions: Option<shadowcopy_manual::Shell>,
    /// Write the man page shadowcopyd.8 into DIR and exit (packaging/deb/build.sh).
    #[arg(long, value_name = "DIR", hide = true)]
    man_pages: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The service manager's variables are read, and removed, before the runtime's threads exist.
    #[allow(unsafe_code)]
    // SAFETY: called once, and no thread but this one exists yet: the Tokio runtime is built on
    // the next line, and nothing before this point starts a thread.
    let systemd = unsafe { systemd::take_environment() };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?
        .block_on(serve(args, systemd))
}

/// Sends a notification, if the service manager asked for them; a failure is logged, since the
/// daemon serves all the same.
fn notify(notifier: &Notifier, state: &str) {
    if let Err(error) = notifier.notify(state) {
        tracing::warn!(socket = ?notifier.address(), %error, "cannot notify the service manager ({state:?})");
    }
}

async fn serve(args: Args, systemd: systemd::Environment) -> anyhow::Result<()> {
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
    // Logging is the binary's job, since a library must not install a subscriber.
    shadowcopy_logging::init("shadowcopyd", LogFormat::resolve(args.log_format), "info");
    let notifier = systemd.notifier.unwrap_or_else(|error| {
        tracing::warn!("{error}");
        Notifier::disabled()
    });
    let socket = match systemd.activation {
        Ok(Some(activated)) => {
            tracing::info!(socket = %activated.path.display(), name = ?activated.name,
                "socket-activated: serving the socket the service manager passed");
            ServiceSocket::Inherited {
                listener: activated.listener,
                path: activated.path,
            }
        }
        Ok(None) => ServiceSocket::Bind,
        Err(error) => {
            tracing::error!("{error}");
            notify(&notifier, &format!("STATUS={error}"));
            return Err(error.into());
        }
    };
    // Before the start, which may take a while (catalogs, plug-ins, hosted writers): a SIGTERM
    // that arrives meanwhile is kept and stops the service in order once it has started, rather
    // than killing the process half-way.
    let signal = |kind| {
        tokio::signal::unix::signal(kind).context("cannot install the SIGTERM and SIGINT handlers")
    };
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut service = match Service::start_with_socket(config, socket).await {
        Ok(service) => service,
        Err(error) => {
            tracing::error!("cannot start: {error}");
            notify(&notifier, &format!("STATUS=cannot start: {error}"));
            return Err(error.into());
        }
    };
    // The socket serves and the hosted writers have registered: a requester the service manager
    // starts after this (After=shadowcopyd.service) finds them all.
    notify(
        &notifier,
        &format!(
            "READY=1\nSTATUS=serving on {} with {} hosted writers",
            service.socket().display(),
            service.hosted_writers()
        ),
    );
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        // Only a failure ends the server on its own; stop still releases what is held, then
        // reports it.
        () = service.server_ended() => {}
    }
    notify(
        &notifier,
        "STOPPING=1\nSTATUS=stopping: aborting backups in progress and thawing writers",
    );
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
