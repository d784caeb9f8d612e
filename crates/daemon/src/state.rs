//! The daemon's shared state: the coordinator, the configuration, who is connected, and the
//! access check every call goes through.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use shadowcopy_coordinator::{Coordinator, WriterRegistration};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::{WriterInstanceId, WriterMetadata};
use tonic::{Request, Status};

use crate::access::{self, Action, Peer};
use crate::config::DaemonConfig;

/// What the daemon knows about a connected writer beyond the coordinator's registry.
#[derive(Debug, Clone)]
pub(crate) struct WriterConnection {
    /// What the writer registered with.
    pub(crate) registration: WriterRegistration,
    /// The WMD it sent with Register.
    pub(crate) metadata: WriterMetadata,
    /// Who connected.
    pub(crate) peer: Peer,
    /// When.
    pub(crate) registered_at: SystemTime,
}

/// An open requester session, for `GetStatus`.
#[derive(Debug, Clone)]
pub(crate) struct SessionEntry {
    /// Whether it is a restore.
    pub(crate) restore: bool,
    /// Who opened it.
    pub(crate) peer: Peer,
    /// The last call it made.
    pub(crate) phase: String,
    /// When it was opened.
    pub(crate) opened_at: SystemTime,
}

/// Everything the services share.
pub(crate) struct Daemon {
    /// The coordinator library.
    pub(crate) coordinator: Coordinator,
    /// The configuration the daemon started with.
    pub(crate) config: DaemonConfig,
    /// Connected writers.
    pub(crate) connections: Mutex<HashMap<WriterInstanceId, WriterConnection>>,
    /// Open requester sessions, by session id.
    pub(crate) sessions: Mutex<HashMap<shadowcopy_metadata::Guid, SessionEntry>>,
    /// The socket of every external provider plug-in, by provider id, for `Admin.ListProviders`
    /// (`[[providers.external]]`); built-in providers are not in it.
    pub(crate) external_providers:
        Mutex<HashMap<shadowcopy_metadata::ids::ProviderId, std::path::PathBuf>>,
    /// When the daemon started.
    pub(crate) started: Instant,
    /// Set to `true` when the daemon stops: requester sessions drop their running call and are
    /// released, which thaws or aborts every frozen writer.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// Set to `true` once every session is released: writer streams end last, so that writers
    /// hear Thaw, Abort and BackupShutdown from the coordinator before their streams close.
    pub(crate) writers_shutdown: tokio::sync::watch::Sender<bool>,
    /// Set to `true` once the hosted writers have registered (or given up): requester sessions
    /// wait for it, so that a requester that connects as soon as the socket accepts (a socket-
    /// activated start) does not back up without them.
    pub(crate) hosted_settled: tokio::sync::watch::Sender<bool>,
    /// The exposed shadow copies (EXP-1, EXP-4), persisted in the state directory.
    pub(crate) exposures: crate::exposure::ExposureTable,
    /// The Previous Versions views of the shares of `[[previous_versions]]`.
    pub(crate) previous_versions: crate::previous_versions::PreviousVersions,
}

impl Daemon {
    /// A daemon around a coordinator.
    pub(crate) fn new(coordinator: Coordinator, config: DaemonConfig) -> Self {
        let exposures = crate::exposure::ExposureTable::new(
            &config.service.state_dir,
            &config.service.expose_dir,
        );
        let previous_versions =
            crate::previous_versions::PreviousVersions::new(&config.previous_versions);
        Daemon {
            coordinator,
            config,
            connections: Mutex::default(),
            sessions: Mutex::default(),
            external_providers: Mutex::default(),
            started: Instant::now(),
            shutdown: tokio::sync::watch::Sender::new(false),
            writers_shutdown: tokio::sync::watch::Sender::new(false),
            hosted_settled: tokio::sync::watch::Sender::new(false),
            exposures,
            previous_versions,
        }
    }

    /// Resolves once the daemon is stopping (for requester sessions).
    pub(crate) fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        wait_true(self.shutdown.subscribe())
    }

    /// Resolves once every session is released and writer streams may end.
    pub(crate) fn writers_stopping(
        &self,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        wait_true(self.writers_shutdown.subscribe())
    }

    /// Resolves once the hosted writers have registered or given up (for requester sessions).
    pub(crate) fn hosted_writers_settled(
        &self,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        wait_true(self.hosted_settled.subscribe())
    }

    /// Stops in order: sessions first (their calls are dropped, frozen writers aborted, sessions
    /// released), then, once the coordinator's background work is done, the writer streams.
    pub(crate) async fn stop(&self) {
        self.shutdown.send_replace(true);
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        while !self.sessions.lock().expect("sessions lock").is_empty() && Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.coordinator.wait_background().await;
        self.writers_shutdown.send_replace(true);
    }

    /// Checks the caller's credentials (SO_PEERCRED) against the access rules (spec §17).
    ///
    /// A refusal is E_ACCESSDENIED with a message that says what to change.
    pub(crate) fn authorize<T>(
        &self,
        request: &Request<T>,
        action: Action,
    ) -> Result<Peer, Status> {
        shadowcopy_protocol::check_version(request)?;
        let credentials = shadowcopy_protocol::peer_credentials(request).ok_or_else(|| {
            shadowcopy_protocol::grpc_status(
                &codes::E_ACCESSDENIED,
                "the caller's credentials are unknown: shadowcopyd only serves local Unix-socket peers",
            )
        })?;
        let peer = Peer {
            uid: credentials.uid,
            gid: credentials.gid,
            pid: credentials.pid,
        };
        access::check(&self.config, peer, action).map_err(|denied| {
            tracing::warn!(uid = peer.uid, pid = ?peer.pid, %denied, "caller refused");
            shadowcopy_protocol::grpc_status(&codes::E_ACCESSDENIED, denied.to_string())
        })?;
        Ok(peer)
    }
}

/// Resolves once the watched flag is `true` (or its sender is gone).
async fn wait_true(mut receiver: tokio::sync::watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stopping| *stopping).await;
}
