//! The coordinator service, one code path for its two hosts: `shadowcopyd` runs it until a
//! signal, and the `shadowcopy` CLI runs it in-process when no daemon answers (embedded mode).
//!
//! [`Service::start`] does everything before serving, in the order crash safety needs: lock the
//! state directory, load the providers with their catalogs (which delete what a crash orphaned),
//! the plug-ins, the coordinator, square the exposure table with the mounts, and only then bind the
//! socket, so that no call can see half-recovered state. [`Service::stop`] is the orderly shutdown
//! shadowcopyd does on SIGTERM.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shadowcopy_coordinator::{
    Coordinator, CoordinatorConfig, EventTimeouts, Provider, ProviderError, ProviderTimeouts,
};
use shadowcopy_protocol::v1;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};
use tonic::transport::Server;

use crate::config::DaemonConfig;
use crate::hosted::HostedWriters;
use crate::state::Daemon;
use crate::state_lock::{StateDirLock, describe_holder};
use crate::{admin_service, requester_service, simulated, writer_service};

/// Why the service could not start, or failed while it served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Another coordinator (a shadowcopyd, or a `shadowcopy` command running one in-process)
    /// holds the state directory.
    #[error(
        "the state directory {} is in use by another coordinator ({}, holding {}): two \
         coordinators on one state directory would corrupt the providers' catalogs; stop that \
         shadowcopyd (or let that shadowcopy command finish), or give this one another \
         --state-dir (service.state_dir)",
        state_dir.display(), describe_holder(*pid), lock.display()
    )]
    StateDirInUse {
        /// The state directory.
        state_dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// The pid the holder wrote into the lock file, if it has written one yet.
        pid: Option<u32>,
    },
    /// The state directory or its lock file cannot be created, opened, locked or written.
    #[error(
        "cannot lock the state directory {}: cannot {what} {}: {source}; make it a directory \
         this process can write (shadowcopyd runs as root), or give another --state-dir \
         (service.state_dir)",
        state_dir.display(), path.display()
    )]
    StateDir {
        /// The state directory.
        state_dir: PathBuf,
        /// What failed: "create", "open", "lock", "write the pid into".
        what: &'static str,
        /// The directory or file it failed on.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A built-in provider cannot start: a setting of its own is refused or its catalog (under
    /// `<state_dir>/catalog/`) cannot be loaded.
    #[error("the {provider} provider cannot start: {what}: {source}")]
    Provider {
        /// The provider: "btrfs", "loop-image" or "reflink".
        provider: &'static str,
        /// The setting or the catalog file.
        what: String,
        /// What the provider said (boxed: an `ErrorCode` carries its whole registry entry).
        source: Box<ProviderError>,
    },
    /// The control socket cannot be made.
    #[error(
        "cannot {what} {}: {source}; give another socket with --socket (service.socket)",
        socket.display()
    )]
    Socket {
        /// The socket.
        socket: PathBuf,
        /// What failed: "create the directory of", "listen on", "set the permissions of".
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics endpoint (`metrics.listen`) cannot be made.
    #[error(
        "cannot {what} the metrics endpoint {listen}: {source}; give metrics.listen another \
         address or socket, or leave it out to turn metrics off"
    )]
    Metrics {
        /// The configured endpoint.
        listen: crate::config::MetricsListen,
        /// What failed: "listen on", "create the directory of", "set the permissions of".
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server stopped serving with an error.
    #[error("the server on {} failed: {source}", socket.display())]
    Server {
        /// The socket it served.
        socket: PathBuf,
        /// What tonic reported.
        source: tonic::transport::Error,
    },
    /// The server task panicked or was cancelled (its runtime shut down).
    #[error("the server task on {} ended abnormally: {source}", socket.display())]
    ServerTask {
        /// The socket it served.
        socket: PathBuf,
        /// The panic or cancellation.
        source: JoinError,
    },
}

/// A running coordinator service: the coordinator, its providers, hosted writers and the gRPC
/// server on [`Service::socket`], holding the state directory's lock.
///
/// Start one with [`Service::start`] inside a Tokio runtime (multi-threaded, as shadowcopyd's),
/// and end it with [`Service::stop`].
///
/// Dropping a `Service` without `stop` does not leave any writer frozen and does not stop at
/// once: it starts the same orderly stop as [`Service::stop`] as a task on the runtime the service
/// was started on, without waiting for it. Until that task ends the socket may still answer and
/// the state directory stays locked, so a new service on the same socket or state directory may
/// be refused for a while. If that runtime is already shutting down, its tasks (the server, the
/// sessions, the hosted writers) are dropped with it: every writer stream then closes, and the
/// writer SDK thaws a frozen writer when its stream is lost; the coordinator's guards send Abort
/// for sessions dropped mid-set on a thread of their own. The lock is released when its file is
/// closed, the socket file is removed. Call `stop` to know when everything is done.
pub struct Service {
    /// `None` only once `stop` or `Drop` has taken it.
    inner: Option<Inner>,
}

/// What a running service holds; field order is drop order for the fallback in [`Service`]'s
/// `Drop`: the writers and the server go before the socket file and the lock.
struct Inner {
    /// The control socket.
    socket: PathBuf,
    /// The state shared by the gRPC services.
    daemon: Arc<Daemon>,
    /// Hosted writers, until `stop` stops them.
    hosted: Option<HostedWriters>,
    /// The metrics endpoint, when `metrics.listen` is set.
    metrics: Option<crate::metrics::MetricsServer>,
    /// Tells the server to shut down gracefully (also when dropped).
    stop_server: Option<oneshot::Sender<()>>,
    /// The server task, or how it ended.
    server: ServerTask,
    /// The runtime the service runs on, for the stop a drop starts.
    runtime: Handle,
    /// Removes the socket file when dropped; `None` for a socket systemd passed, whose file is
    /// systemd's.
    _socket_file: Option<SocketFile>,
    /// The state directory's lock, released last.
    _lock: StateDirLock,
}

/// The server task's progress: `Service::server_ended` may see it end before `stop` does.
enum ServerTask {
    /// Still serving.
    Running(JoinHandle<Result<(), tonic::transport::Error>>),
    /// Ended, with what it returned.
    Ended(Result<Result<(), tonic::transport::Error>, JoinError>),
}

impl ServerTask {
    /// Waits until the server has ended; cancel-safe.
    async fn ended(&mut self) {
        if let ServerTask::Running(task) = self {
            let result = task.await;
            *self = ServerTask::Ended(result);
        }
    }
}

/// The longest [`Service::start`] waits for the hosted writers to register: the writer SDK's own
/// registration timeout, after which a writer that has not registered has failed.
const HOSTED_REGISTRATION_WAIT: Duration = Duration::from_secs(30);

/// Where the service's control socket comes from ([`Service::start_with_socket`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceSocket {
    /// Bind `service.socket`: a stale socket file is replaced, the socket made mode 0666 (every
    /// call is checked by SO_PEERCRED), and the file removed when the service stops. What
    /// [`Service::start`] does.
    Bind,
    /// Serve a socket that is already listening, the one systemd passed to a socket-activated
    /// shadowcopyd ([`crate::systemd::take_environment`]). Its mode and its file are left to
    /// whoever made it; `path` replaces `service.socket` as [`Service::socket`] and is where
    /// the hosted writers connect.
    Inherited {
        /// The listening Unix stream socket.
        listener: std::os::unix::net::UnixListener,
        /// Its path.
        path: PathBuf,
    },
}

/// The socket file, removed on drop so that a stopped or dropped service leaves none behind.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Service");
        if let Some(inner) = &self.inner {
            debug
                .field("socket", &inner.socket)
                .field("state_dir", &inner.daemon.config.service.state_dir)
                .field("running", &matches!(inner.server, ServerTask::Running(_)));
        }
        debug.finish_non_exhaustive()
    }
}

impl Service {
    /// Starts the coordinator service described by `config` and returns once its socket
    /// (`config.service.socket`) accepts connections.
    ///
    /// In order: takes the state directory's lock (`<service.state_dir>/lock`, refused at once
    /// with [`ServiceError::StateDirInUse`] while another coordinator holds it), loads the
    /// built-in providers with their catalogs under `<state_dir>/catalog/` (persistent copies
    /// kept, orphans deleted), connects the external plug-ins of `[[providers.external]]` (one
    /// that does not answer within about 5 s is logged and left out), reconciles the exposure
    /// table, binds the socket (mode 0666; every call is checked by SO_PEERCRED), spawns the
    /// gRPC server, and starts the writers declared in `service.writers_dir` against the socket.
    ///
    /// Requester sessions opened before the hosted writers have registered (or given up, or
    /// about 30 s passed) wait for them, so that a backup never starts without a writer that
    /// merely was slower to connect than its requester; `start` returns after the same wait.
    ///
    /// Must run inside a Tokio runtime; the service's tasks run on it. Logs through `tracing`
    /// and installs no subscriber.
    pub async fn start(config: DaemonConfig) -> Result<Service, ServiceError> {
        Self::start_with_socket(config, ServiceSocket::Bind).await
    }

    /// [`Service::start`] on the socket `socket` says: bound from `service.socket`, or one the
    /// caller already listens on (shadowcopyd's socket activation, [`crate::systemd`]).
    pub async fn start_with_socket(
        config: DaemonConfig,
        socket: ServiceSocket,
    ) -> Result<Service, ServiceError> {
        // Before any catalog is read: a second coordinator must not even recover (delete
        // orphans from) the catalogs the first one is using.
        let lock = StateDirLock::acquire(&config.service.state_dir)?;
        let (providers, external_sockets) = load_providers(&config).await?;
        let coordinator = Coordinator::new(coordinator_config(&config), providers);
        let daemon = Arc::new(Daemon::new(coordinator, config.clone()));
        *daemon
            .external_providers
            .lock()
            .expect("external providers lock") = external_sockets;
        // Exposures outlive the daemon (they are mounts); square the table with the mounts and
        // with the shadow copies the providers know before any call can see it (SNAP-3).
        daemon.exposures.reconcile(&daemon.coordinator).await;
        // Views are mounts too: those of copies the catalogs dropped go, lost ones come back.
        daemon.previous_versions.sync(&daemon.coordinator).await;

        let listen = socket;
        let socket = match &listen {
            ServiceSocket::Bind => config.service.socket.clone(),
            ServiceSocket::Inherited { path, .. } => path.clone(),
        };
        let socket_error = |what: &'static str| {
            let socket = socket.clone();
            move |source| ServiceError::Socket {
                socket,
                what,
                source,
            }
        };
        let (incoming, socket_file) = match listen {
            ServiceSocket::Bind => {
                if let Some(dir) = socket.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(socket_error("create the directory of"))?;
                }
                let incoming = shadowcopy_protocol::serve_unix_incoming(&socket)
                    .map_err(socket_error("listen on"))?;
                let socket_file = SocketFile(socket.clone());
                // Every local account may connect (writers run as their application's user);
                // each call is then checked against SO_PEERCRED (spec §17).
                std::fs::set_permissions(
                    &socket,
                    std::os::unix::fs::PermissionsExt::from_mode(0o666),
                )
                .map_err(socket_error("set the permissions of"))?;
                (incoming, Some(socket_file))
            }
            // systemd's socket: its mode is the socket unit's SocketMode= and its file is
            // systemd's to remove, so neither is touched.
            ServiceSocket::Inherited { listener, .. } => {
                listener
                    .set_nonblocking(true)
                    .map_err(socket_error("serve the inherited socket"))?;
                let listener = tokio::net::UnixListener::from_std(listener)
                    .map_err(socket_error("serve the inherited socket"))?;
                if socket != config.service.socket {
                    tracing::warn!(socket = %socket.display(), configured = %config.service.socket.display(),
                        "the activated socket is not service.socket: clients that use the configured path will not find this daemon; make ListenStream= in shadowcopyd.socket and service.socket agree");
                }
                (
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    None,
                )
            }
        };
        tracing::info!(socket = %socket.display(), activated = socket_file.is_none(), version = env!("CARGO_PKG_VERSION"), "shadowcopyd listening");
        let metrics = crate::metrics::start(&daemon)
            .await
            .map_err(|(listen, what, source)| ServiceError::Metrics {
                listen,
                what,
                source,
            })?;

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
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            Server::builder()
                .add_service(requester)
                .add_service(writer)
                .add_service(admin)
                .serve_with_incoming_shutdown(incoming, async move {
                    // A dropped sender stops the server as well.
                    let _ = stopped.await;
                }),
        );

        // The listener is bound, so the hosted writers' connections are accepted as soon as the
        // server task runs.
        let hosted = HostedWriters::start(&config.service.writers_dir, &socket);
        tracing::info!(dir = %config.service.writers_dir.display(), writers = hosted.len(), "hosted writers started");

        // Made before the wait below, so that dropping this future from here on stops what runs.
        let service = Service {
            inner: Some(Inner {
                socket,
                daemon,
                hosted: Some(hosted),
                metrics,
                stop_server: Some(stop_server),
                server: ServerTask::Running(server),
                runtime: Handle::current(),
                _socket_file: socket_file,
                _lock: lock,
            }),
        };
        let inner = service.inner();
        if let Some(hosted) = &inner.hosted {
            hosted
                .wait_registered(&inner.daemon, HOSTED_REGISTRATION_WAIT)
                .await;
        }
        inner.daemon.hosted_settled.send_replace(true);
        Ok(service)
    }

    /// How many hosted writers were started from `service.writers_dir` (declarations that could
    /// not be read are not counted).
    pub fn hosted_writers(&self) -> usize {
        self.inner().hosted.as_ref().map_or(0, HostedWriters::len)
    }

    /// The control socket the service listens on (`service.socket`).
    pub fn socket(&self) -> &Path {
        &self.inner().socket
    }

    /// Resolves if the server stops serving on its own, which only a failure makes it do; call
    /// [`Service::stop`] then, which returns the failure. Cancel-safe, so it can wait in a
    /// `select!` beside the signals that stop the service.
    pub async fn server_ended(&mut self) {
        self.inner_mut().server.ended().await;
    }

    /// Stops in order, as shadowcopyd does on SIGTERM: the hosted writers first, while the
    /// server still runs (each aborts, so thaws, what it holds and closes its stream); then every
    /// requester session is released (frozen writers are thawed or sent Abort) and the held
    /// writer streams are ended; then the server, the coordinator's background work (releases and
    /// Aborts still in flight), and last the socket file and the state directory's lock.
    ///
    /// Returns the server's failure if it had one.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        let inner = self.inner.take().expect("a running service");
        inner.stop().await
    }

    fn inner(&self) -> &Inner {
        self.inner.as_ref().expect("a running service")
    }

    fn inner_mut(&mut self) -> &mut Inner {
        self.inner.as_mut().expect("a running service")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            // On a runtime that has shut down the task is dropped unpolled, and with it every
            // part of the service (see the type's docs).
            let runtime = inner.runtime.clone();
            runtime.spawn(async move {
                if let Err(error) = inner.stop().await {
                    tracing::error!(
                        "the dropped coordinator service stopped with an error: {error}"
                    );
                }
            });
        }
    }
}

impl Inner {
    async fn stop(mut self) -> Result<(), ServiceError> {
        tracing::info!("shutting down");
        if let Some(hosted) = self.hosted.take() {
            hosted.stop().await;
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.stop().await;
        }
        // Held streams never end on their own; ending them lets the server stop.
        self.daemon.stop().await;
        if let Some(stop_server) = self.stop_server.take() {
            let _ = stop_server.send(());
        }
        self.server.ended().await;
        // Releases of dropped sessions and Aborts still in flight finish before the lock goes.
        self.daemon.coordinator.wait_background().await;
        let socket = self.socket.clone();
        let ServerTask::Ended(served) =
            std::mem::replace(&mut self.server, ServerTask::Ended(Ok(Ok(()))))
        else {
            unreachable!("the server task has ended");
        };
        // The socket file, then the lock.
        drop(self);
        tracing::info!("stopped");
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ServiceError::Server { socket, source }),
            Err(source) => Err(ServiceError::ServerTask { socket, source }),
        }
    }
}

/// The built-in providers with their catalogs, then the simulated ones if asked for, then the
/// external plug-ins; with the socket of each plug-in by provider id.
async fn load_providers(
    config: &DaemonConfig,
) -> Result<
    (
        Vec<Arc<dyn Provider>>,
        std::collections::HashMap<shadowcopy_metadata::ids::ProviderId, PathBuf>,
    ),
    ServiceError,
> {
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    // Each built-in provider keeps its shadow copies in a catalog of its own under the state
    // directory, so that persistent copies survive a restart and auto-release copies orphaned by
    // a crash are deleted now, before any call can see them (CTX-2, BK-END-6).
    let catalogs = config.service.state_dir.join("catalog");
    let catalog = |name: &str| catalogs.join(format!("{name}.json"));
    let catalog_error = |provider: &'static str, file: &Path| {
        let what = format!("cannot load its catalog {}", file.display());
        move |source| ServiceError::Provider {
            provider,
            what,
            source: Box::new(source),
        }
    };
    if config.providers.btrfs {
        let dir = &config.providers.btrfs_snapshot_dir;
        let dir = if dir.is_absolute() {
            shadowcopy_providers::SnapshotDir::Fixed(dir.clone())
        } else {
            shadowcopy_providers::SnapshotDir::InVolume(dir.clone())
        };
        let file = catalog(shadowcopy_providers::btrfs::BTRFS_PROVIDER_NAME);
        let provider = shadowcopy_providers::BtrfsProvider::new()
            .with_snapshot_dir(dir)
            .map_err(|source| ServiceError::Provider {
                provider: "btrfs",
                what: "providers.btrfs_snapshot_dir".into(),
                source: Box::new(source),
            })?
            .with_catalog(&file)
            .map_err(catalog_error("btrfs", &file))?;
        log_recovery("btrfs", provider.recovered());
        providers.push(Arc::new(provider));
    }
    if config.providers.loop_image {
        let file = catalog(shadowcopy_providers::loop_image::LOOP_IMAGE_PROVIDER_NAME);
        // Its watchdog thaws at the commit window, not later: the window is the longest the
        // configuration lets writes be held (CFG-10).
        let provider = shadowcopy_providers::LoopImageProvider::new()
            .with_commit_timeout(config.commit_window())
            .with_catalog(&file)
            .map_err(catalog_error("loop-image", &file))?;
        log_recovery("loop-image", provider.recovered());
        providers.push(Arc::new(provider));
    }
    if config.providers.reflink {
        let file = catalog(shadowcopy_providers::REFLINK_PROVIDER_NAME);
        let provider = shadowcopy_providers::ReflinkProvider::new()
            .with_catalog(&file)
            .map_err(catalog_error("reflink", &file))?;
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
    Ok((providers, external_sockets))
}

/// The coordinator's settings from the configuration file's.
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
