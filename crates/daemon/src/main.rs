//! `shadowcopyd`: the coordinator service, serving requesters, writers and administrators on a
//! Unix socket.

mod access;
mod admin_service;
mod config;
mod convert;
mod requester_service;
mod simulated;
mod state;
mod writer_service;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use shadowcopy_coordinator::{
    Coordinator, CoordinatorConfig, EventTimeouts, Provider, ProviderTimeouts,
};
use shadowcopy_protocol::v1;
use tonic::transport::Server;

use crate::config::DaemonConfig;
use crate::state::Daemon;

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
    #[arg(long, default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// The control socket, instead of the configuration's `service.socket`.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Check the configuration file, print the effective settings and exit.
    #[arg(long)]
    check_config: bool,
    /// The log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn coordinator_config(config: &DaemonConfig) -> CoordinatorConfig {
    let seconds = Duration::from_secs;
    let events = &config.events;
    let event_timeouts = EventTimeouts {
        identify: seconds(events.identify_timeout_s),
        prepare_for_backup: seconds(events.prepare_for_backup_timeout_s),
        prepare_for_snapshot: seconds(events.prepare_for_snapshot_timeout_s),
        thaw: seconds(events.thaw_timeout_s),
        post_snapshot: seconds(events.post_snapshot_timeout_s),
        abort: seconds(events.backup_shutdown_timeout_s),
        backup_complete: seconds(events.backup_complete_timeout_s),
        backup_shutdown: seconds(events.backup_shutdown_timeout_s),
        pre_restore: seconds(events.pre_restore_timeout_s),
        post_restore: seconds(events.post_restore_timeout_s),
    };
    let max_freeze_timeout_per_class = config
        .writers
        .iter()
        .filter_map(|(class, writer)| {
            Some((
                class.parse().ok()?,
                Duration::from_millis(writer.max_freeze_ms),
            ))
        })
        .collect();
    let provider_timeouts = ProviderTimeouts {
        end_prepare: seconds(config.providers.end_prepare_timeout_s),
        call: seconds(config.providers.call_timeout_s),
    };
    CoordinatorConfig {
        event_timeouts,
        provider_timeouts,
        commit_window: config.commit_window(),
        max_freeze_timeout_per_class,
        ..CoordinatorConfig::default()
    }
}

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
    let mut config = DaemonConfig::load(&args.config)?;
    if let Some(socket) = args.socket {
        config.service.socket = socket;
    }
    if args.check_config {
        println!("{}: ok\n{config:#?}", args.config.display());
        return Ok(());
    }
    init_logging(args.log_format);

    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    if config.providers.btrfs {
        providers.push(Arc::new(shadowcopy_providers::BtrfsProvider::new()));
    }
    if config.providers.loop_image {
        providers.push(Arc::new(shadowcopy_providers::LoopImageProvider::new()));
    }
    if config.providers.simulated {
        providers.extend(simulated::providers());
    }
    let coordinator = Coordinator::new(coordinator_config(&config), providers);
    let daemon = Arc::new(Daemon::new(coordinator.clone(), config.clone()));

    let socket = config.service.socket.clone();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let incoming = shadowcopy_protocol::serve_unix_incoming(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    // Every local account may connect (writers run as their application's user); each call is
    // then checked against SO_PEERCRED (spec §17).
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .with_context(|| format!("cannot set the permissions of {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "shadowcopyd listening");

    let limit = shadowcopy_protocol::MAX_MESSAGE_SIZE;
    let requester =
        v1::requester_server::RequesterServer::new(requester_service::RequesterService {
            daemon: Arc::clone(&daemon),
        })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let writer = v1::writer_server::WriterServer::new(writer_service::WriterService {
        daemon: Arc::clone(&daemon),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let admin = v1::admin_server::AdminServer::new(admin_service::AdminService {
        daemon: Arc::clone(&daemon),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);

    let stopping = Arc::clone(&daemon);
    let shutdown = async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        // Held streams never end on their own; ending them lets the server stop.
        stopping.stop().await;
    };
    Server::builder()
        .add_service(requester)
        .add_service(writer)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("the server failed")?;
    // Releases of dropped sessions and Aborts still in flight finish before the process exits.
    coordinator.wait_background().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}
