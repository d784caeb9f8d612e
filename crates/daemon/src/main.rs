//! `shadowcopyd`: the coordinator service, serving requesters, writers and administrators on a
//! Unix socket.

mod access;
mod admin_service;
mod config;
mod convert;
mod exposure;
mod hosted;
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
        // CFG-1; the config check keeps it within 1..=512. The 512 per volume of LIMIT-2 is a
        // constant (CFG-2) and stays at its default.
        max_client_accessible_per_volume: usize::try_from(
            config.limits.max_client_accessible_per_volume,
        )
        .unwrap_or(shadowcopy_coordinator::MAX_SNAPSHOTS_PER_VOLUME),
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

/// Logs what a provider found in its catalog at start-up.
fn log_recovery(provider: &str, report: &shadowcopy_providers::RecoveryReport) {
    tracing::info!(
        provider,
        kept = report.kept,
        deleted = report.deleted.len(),
        "catalog loaded"
    );
    for (snapshot, why) in &report.not_deleted {
        tracing::error!(provider, %snapshot, "an orphaned shadow copy could not be deleted: {why}");
    }
    for (volume, why) in &report.reverts_failed {
        tracing::error!(provider, volume = %volume, "an interrupted revert could not be finished: {why}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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

    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    // Each built-in provider keeps its shadow copies in a catalog of its own under the state
    // directory, so that persistent copies survive a restart and auto-release copies orphaned by
    // a crash are deleted now, before any call can see them (CTX-2, BK-END-6).
    let catalogs = config.service.state_dir.join("catalog");
    let catalog = |name: &str| catalogs.join(format!("{name}.json"));
    if config.providers.btrfs {
        let dir = &config.providers.btrfs_snapshot_dir;
        let dir = if dir.is_absolute() {
            shadowcopy_providers::SnapshotDir::Fixed(dir.clone())
        } else {
            shadowcopy_providers::SnapshotDir::InVolume(dir.clone())
        };
        let provider = shadowcopy_providers::BtrfsProvider::new()
            .with_snapshot_dir(dir)
            .context("providers.btrfs_snapshot_dir")?
            .with_catalog(&catalog(shadowcopy_providers::btrfs::BTRFS_PROVIDER_NAME))
            .context("cannot load the btrfs provider's catalog")?;
        log_recovery("btrfs", provider.recovered());
        providers.push(Arc::new(provider));
    }
    if config.providers.loop_image {
        let provider = shadowcopy_providers::LoopImageProvider::new()
            .with_catalog(&catalog(
                shadowcopy_providers::loop_image::LOOP_IMAGE_PROVIDER_NAME,
            ))
            .context("cannot load the loop-image provider's catalog")?;
        log_recovery("loop-image", provider.recovered());
        providers.push(Arc::new(provider));
    }
    if config.providers.reflink {
        let provider = shadowcopy_providers::ReflinkProvider::new()
            .with_catalog(&catalog(shadowcopy_providers::REFLINK_PROVIDER_NAME))
            .context("cannot load the reflink provider's catalog")?;
        log_recovery("reflink", provider.recovered());
        providers.push(Arc::new(provider));
    }
    if config.providers.simulated {
        providers.extend(simulated::providers());
    }
    // External provider plug-ins come after the built-in providers: PROV-SEL-1 picks by type,
    // then by this registration order. A plug-in that does not answer within about 5 s is left
    // out, so that one broken plug-in cannot keep every backup from running.
    let mut external_sockets = std::collections::HashMap::new();
    for external in &config.providers.external {
        let plugin = shadowcopy_provider_plugin::PluginProvider::connect_retrying(
            &external.name,
            &external.socket,
            Duration::from_secs(5),
        )
        .await;
        let plugin = match plugin {
            Ok(plugin) => plugin,
            Err(error) => {
                tracing::error!(plugin = %external.name, socket = %external.socket.display(), %error,
                    "provider plug-in not loaded; shadowcopyd runs without it: start the plug-in, then restart shadowcopyd");
                continue;
            }
        };
        let info = plugin.info();
        if providers
            .iter()
            .any(|provider| provider.info().id == info.id)
        {
            tracing::error!(plugin = %external.name, socket = %external.socket.display(), id = %info.id,
                "provider plug-in not loaded: a provider with its id is already registered (VSS_E_PROVIDER_ALREADY_REGISTERED); give each plug-in an id of its own");
            continue;
        }
        tracing::info!(plugin = %external.name, socket = %external.socket.display(), id = %info.id,
            provider = %info.name, version = %info.version, "provider plug-in loaded");
        external_sockets.insert(info.id, external.socket.clone());
        providers.push(Arc::new(plugin));
    }
    let coordinator = Coordinator::new(coordinator_config(&config), providers);
    let daemon = Arc::new(Daemon::new(coordinator.clone(), config.clone()));
    *daemon
        .external_providers
        .lock()
        .expect("external providers lock") = external_sockets;
    // Exposures outlive the daemon (they are mounts); square the table with the mounts and with
    // the shadow copies the providers know before any call can see it (SNAP-3).
    daemon.exposures.reconcile(&daemon.coordinator).await;

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

    // The listener is bound, so the hosted writers' connections wait in its backlog until the
    // server below accepts them.
    let hosted = hosted::HostedWriters::start(&config.service.writers_dir, &socket);
    tracing::info!(dir = %config.service.writers_dir.display(), writers = hosted.len(), "hosted writers started");

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
        // Hosted writers go first, while the server still runs: each aborts (thaws) what it
        // holds and closes its stream.
        hosted.stop().await;
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
