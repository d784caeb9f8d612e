//! The daemon's side of a provider plug-in: [`PluginProvider`] implements the coordinator's
//! `Provider` trait by calling the plug-in's Provider service on its Unix socket.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use shadowcopy_coordinator::{
    DeleteTarget, Provider, ProviderError, ProviderInfo, SnapshotRecord, VolumeSupport,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::SnapshotContext;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use shadowcopy_protocol::v1::provider_client::ProviderClient;
use shadowcopy_protocol::{MAX_MESSAGE_SIZE, PROTOCOL_MAJOR, VersionedChannel, v1};

use crate::convert::{info_from_proto, record_from_proto, status_to_error};

/// A generated client on a versioned channel: every call carries the protocol version header.
type Client = ProviderClient<VersionedChannel>;

/// A provider plug-in process, reached over its Unix socket and used like a built-in provider.
///
/// Every trait method is one call of the Provider service. A failure status in a reply comes back
/// as a [`ProviderError`] with the plug-in's code unchanged, since the coordinator applies the
/// translation of PROV-R-3 and the time limits itself; a call the plug-in could not be reached
/// for, or refused as a whole, is VSS_E_UNEXPECTED_PROVIDER_ERROR naming the plug-in and its
/// socket (docs/protocol.md §7.4).
///
/// The plug-in may restart at any time: a call that fails on the transport drops the connection,
/// and the next call connects afresh and repeats the version handshake. The calls that
/// docs/protocol.md §7.2 lets shadowcopyd retry (IsVolumeSupported, BeginPrepareSnapshot,
/// AbortSnapshots, DeleteSnapshots, QuerySnapshots) are retried once on a fresh connection at
/// once; the calls of the commit sequence and RevertToSnapshot never are, so a plug-in that dies
/// inside them fails the set or the revert.
pub struct PluginProvider {
    /// The name the plug-in is registered under in the daemon's configuration.
    name: String,
    /// Its socket.
    socket: PathBuf,
    /// What it said it is when it was connected.
    info: ProviderInfo,
    /// The open connection; `None` after a transport failure, until the next call reconnects.
    client: Mutex<Option<Client>>,
    /// The shadow copies prepared per set, for the `snapshots_count` of PostCommitSnapshots,
    /// which the trait does not pass.
    prepared: Mutex<HashMap<SnapshotSetId, HashSet<SnapshotId>>>,
}

impl std::fmt::Debug for PluginProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginProvider")
            .field("name", &self.name)
            .field("socket", &self.socket)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Whether a call may be repeated on a fresh connection after a transport failure (§7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Once,
    Never,
}

impl PluginProvider {
    /// Connects to the plug-in listening on `socket`, checks that it speaks our protocol major
    /// version (Hello) and asks what it is (GetProviderInfo).
    ///
    /// `name_for_messages` is the name the plug-in is registered under; every error message names
    /// it with the socket. Fails with VSS_E_UNEXPECTED_PROVIDER_ERROR when the plug-in cannot be
    /// reached, speaks another major version or describes itself wrongly.
    pub async fn connect(name_for_messages: &str, socket: &Path) -> Result<Self, ProviderError> {
        let name = name_for_messages.to_owned();
        let client = open(&name, socket).await?;
        let what = format!("provider plug-in {name} at {}", socket.display());
        let reply = client
            .clone()
            .get_provider_info(v1::GetProviderInfoRequest {})
            .await
            .map_err(|status| transport_error(&name, socket, "GetProviderInfo", &status))?
            .into_inner();
        shadowcopy_protocol::reply_status(reply.status)
            .map_err(|status| status_to_error(&status, &name, "GetProviderInfo"))?;
        let info = reply.info.ok_or_else(|| {
            ProviderError::new(
                codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
                format!("{what} answered GetProviderInfo without info; fix the plug-in"),
            )
        })?;
        let info = info_from_proto(&info, &what)?;
        Ok(PluginProvider {
            name,
            socket: socket.to_owned(),
            info,
            client: Mutex::new(Some(client)),
            prepared: Mutex::default(),
        })
    }

    /// [`PluginProvider::connect`], tried again every 100 ms for up to `within`, for a daemon
    /// that starts at the same time as its plug-ins. The error is the last attempt's, saying how
    /// long it waited.
    pub async fn connect_retrying(
        name_for_messages: &str,
        socket: &Path,
        within: Duration,
    ) -> Result<Self, ProviderError> {
        const PAUSE: Duration = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match Self::connect(name_for_messages, socket).await {
                Ok(provider) => return Ok(provider),
                Err(error) if tokio::time::Instant::now() + PAUSE < deadline => {
                    tracing::debug!(plugin = name_for_messages, %error, "provider plug-in not ready yet");
                    tokio::time::sleep(PAUSE).await;
                }
                Err(mut error) => {
                    error.message = format!(
                        "{} (gave up after trying for {} ms)",
                        error.message,
                        within.as_millis()
                    );
                    return Err(error);
                }
            }
        }
    }

    /// The name the plug-in is registered under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plug-in's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The open connection, or a new one after a transport failure.
    async fn client(&self) -> Result<Client, ProviderError> {
        if let Some(client) = lock(&self.client).clone() {
            return Ok(client);
        }
        let client = open(&self.name, &self.socket).await?;
        *lock(&self.client) = Some(client.clone());
        Ok(client)
    }

    /// Makes one call of the Provider service with `request`, reconnecting first if needed, and
    /// returns the reply. A transport failure drops the connection; with [`Retry::Once`] the call
    /// is repeated once on a fresh connection.
    async fn call<R, F, Fut>(
        &self,
        name: &str,
        retry: Retry,
        request: F,
    ) -> Result<R, ProviderError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut retried = false;
        loop {
            let outcome = match self.client().await {
                Ok(client) => request(client)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| transport_error(&self.name, &self.socket, name, &status)),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(reply) => return Ok(reply),
                Err(error) => {
                    // Whatever broke, the next call starts from a fresh connection: the plug-in
                    // may have restarted behind the same socket path.
                    *lock(&self.client) = None;
                    if retry == Retry::Never || retried {
                        return Err(error);
                    }
                    tracing::debug!(plugin = %self.name, call = name, %error, "retrying on a new connection");
                    retried = true;
                }
            }
        }
    }

    /// A call of the commit sequence or AbortSnapshots: only a status comes back.
    async fn phase<F, Fut>(&self, name: &str, retry: Retry, request: F) -> Result<(), ProviderError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<v1::CommitPhaseReply>, tonic::Status>>,
    {
        let reply = self.call(name, retry, request).await?;
        self.status(reply.status, name).map(drop)
    }

    /// The in-band status of a reply as a `Result`.
    fn status(&self, status: Option<v1::Status>, call: &str) -> Result<v1::Status, ProviderError> {
        shadowcopy_protocol::reply_status(status)
            .map_err(|status| status_to_error(&status, &self.name, call))
    }

    /// A description of the plug-in for messages.
    fn what(&self) -> String {
        format!(
            "provider plug-in {} at {}",
            self.name,
            self.socket.display()
        )
    }
}

/// Opens a connection to the plug-in and checks its protocol version with Hello (COMPAT-3).
async fn open(name: &str, socket: &Path) -> Result<Client, ProviderError> {
    let channel = shadowcopy_protocol::connect_unix(socket)
        .await
        .map_err(|error| {
            ProviderError::new(
                codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
                format!(
                    "cannot reach provider plug-in {name} at {}: {error}. Start the plug-in, or \
                     correct its socket in the [[providers.external]] entry of shadowcopyd.toml",
                    socket.display()
                ),
            )
        })?;
    let mut client = ProviderClient::new(shadowcopy_protocol::versioned(channel))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let hello =
        shadowcopy_protocol::hello_request(concat!("shadowcopyd ", env!("CARGO_PKG_VERSION")));
    let reply = client
        .hello(hello)
        .await
        .map_err(|status| transport_error(name, socket, "Hello", &status))?
        .into_inner();
    if reply.protocol_major != PROTOCOL_MAJOR {
        return Err(ProviderError::new(
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
            format!(
                "provider plug-in {name} at {} ({}) speaks shadowcopy protocol {}.{} but \
                 shadowcopyd speaks {}; install a plug-in built for protocol {PROTOCOL_MAJOR}.x",
                socket.display(),
                reply.server_version,
                reply.protocol_major,
                reply.protocol_minor,
                shadowcopy_protocol::PROTOCOL_VERSION,
            ),
        ));
    }
    Ok(client)
}

/// A call that failed as a whole: the plug-in could not be reached, broke the connection, or
/// refused the call with a gRPC error. docs/protocol.md §7.4 treats all of these as an unexpected
/// provider error.
fn transport_error(name: &str, socket: &Path, call: &str, status: &tonic::Status) -> ProviderError {
    ProviderError::new(
        codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
        format!(
            "provider plug-in {name} at {} failed {call}: {} ({:?}); check that the plug-in is \
             running and listening on that socket, and read its log",
            socket.display(),
            status.message(),
            status.code(),
        ),
    )
}

/// Locks a mutex; a panic elsewhere while it was held leaves nothing half-changed here.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[async_trait]
impl Provider for PluginProvider {
    fn info(&self) -> ProviderInfo {
        self.info.clone()
    }

    async fn is_volume_supported(
        &self,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<VolumeSupport, ProviderError> {
        const NAME: &str = "IsVolumeSupported";
        let request = v1::IsVolumeSupportedRequest {
            volume: volume.to_owned(),
            context: context.value(),
        };
        let reply = self
            .call(NAME, Retry::Once, |mut client| {
                let request = request.clone();
                async move { client.is_volume_supported(request).await }
            })
            .await?;
        self.status(reply.status, NAME)?;
        Ok(if reply.supported {
            VolumeSupport::Supported
        } else {
            let reason = if reply.reason.is_empty() {
                format!("{} gave no reason", self.what())
            } else {
                reply.reason
            };
            VolumeSupport::Unsupported { reason }
        })
    }

    async fn begin_prepare_snapshot(
        &self,
        set: SnapshotSetId,
        snapshot: SnapshotId,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<(), ProviderError> {
        let request = v1::BeginPrepareSnapshotRequest {
            set_id: set.to_string(),
            snapshot_id: snapshot.to_string(),
            volume: volume.to_owned(),
            context: context.value(),
        };
        // §7.2: a BeginPrepareSnapshot for a snapshot that is already prepared succeeds without
        // preparing twice, so repeating it after a broken connection is safe.
        self.phase("BeginPrepareSnapshot", Retry::Once, |mut client| {
            let request = request.clone();
            async move { client.begin_prepare_snapshot(request).await }
        })
        .await?;
        let mut prepared = lock(&self.prepared);
        // PROV-SEQ-2: a new set means the others are stale; forget them here too.
        prepared.retain(|other, _| *other == set);
        prepared.entry(set).or_default().insert(snapshot);
        Ok(())
    }

    async fn end_prepare_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let request = v1::EndPrepareSnapshotsRequest {
            set_id: set.to_string(),
        };
        self.phase("EndPrepareSnapshots", Retry::Never, |mut client| {
            let request = request.clone();
            async move { client.end_prepare_snapshots(request).await }
        })
        .await
    }

    async fn pre_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let request = v1::PreCommitSnapshotsRequest {
            set_id: set.to_string(),
        };
        self.phase("PreCommitSnapshots", Retry::Never, |mut client| {
            let request = request.clone();
            async move { client.pre_commit_snapshots(request).await }
        })
        .await
    }

    async fn commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let request = v1::CommitSnapshotsRequest {
            set_id: set.to_string(),
        };
        self.phase("CommitSnapshots", Retry::Never, |mut client| {
            let request = request.clone();
            async move { client.commit_snapshots(request).await }
        })
        .await
    }

    async fn post_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let count = lock(&self.prepared).get(&set).map_or(0, HashSet::len);
        let request = v1::PostCommitSnapshotsRequest {
            set_id: set.to_string(),
            snapshots_count: u32::try_from(count).unwrap_or(u32::MAX),
        };
        self.phase("PostCommitSnapshots", Retry::Never, |mut client| {
            let request = request.clone();
            async move { client.post_commit_snapshots(request).await }
        })
        .await
    }

    async fn pre_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let request = v1::PreFinalCommitSnapshotsRequest {
            set_id: set.to_string(),
        };
        self.phase("PreFinalCommitSnapshots", Retry::Never, |mut client| {
            let request = request.clone();
            async move { client.pre_final_commit_snapshots(request).await }
        })
        .await
    }

    async fn post_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let request = v1::PostFinalCommitSnapshotsRequest {
            set_id: set.to_string(),
        };
        let result = self
            .phase("PostFinalCommitSnapshots", Retry::Never, |mut client| {
                let request = request.clone();
                async move { client.post_final_commit_snapshots(request).await }
            })
            .await;
        lock(&self.prepared).remove(&set);
        result
    }

    async fn abort_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let request = v1::AbortSnapshotsRequest {
            set_id: set.to_string(),
        };
        lock(&self.prepared).remove(&set);
        self.phase("AbortSnapshots", Retry::Once, |mut client| {
            let request = request.clone();
            async move { client.abort_snapshots(request).await }
        })
        .await
    }

    async fn delete_snapshots(&self, target: DeleteTarget) -> Result<usize, ProviderError> {
        const NAME: &str = "DeleteSnapshots";
        use v1::provider_delete_snapshots_request::Target;
        let request = v1::ProviderDeleteSnapshotsRequest {
            target: Some(match target {
                DeleteTarget::Snapshot(id) => Target::SnapshotId(id.to_string()),
                DeleteTarget::Set(set) => Target::SetId(set.to_string()),
            }),
            force: false,
        };
        let reply = self
            .call(NAME, Retry::Once, |mut client| {
                let request = request.clone();
                async move { client.delete_snapshots(request).await }
            })
            .await?;
        self.status(reply.status, NAME).map_err(|mut error| {
            if !reply.first_failed_snapshot_id.is_empty() {
                error.message = format!(
                    "{} (first shadow copy not deleted: {}, {} deleted before it)",
                    error.message, reply.first_failed_snapshot_id, reply.deleted_count
                );
            }
            error
        })?;
        Ok(usize::try_from(reply.deleted_count).unwrap_or(usize::MAX))
    }

    async fn revert_to_snapshot(
        &self,
        snapshot: SnapshotId,
        force_dismount: bool,
    ) -> Result<(), ProviderError> {
        let request = v1::RevertToSnapshotRequest {
            snapshot_id: snapshot.to_string(),
            force_dismount,
        };
        // A revert changes the volume and cannot be undone halfway (REV-1): never repeated.
        self.phase("RevertToSnapshot", Retry::Never, |mut client| {
            let request = request.clone();
            async move { client.revert_to_snapshot(request).await }
        })
        .await
    }

    async fn query_snapshots(&self) -> Result<Vec<SnapshotRecord>, ProviderError> {
        const NAME: &str = "QuerySnapshots";
        let reply = self
            .call(NAME, Retry::Once, |mut client| async move {
                client
                    .query_snapshots(v1::QuerySnapshotsRequest {
                        set_id: String::new(),
                    })
                    .await
            })
            .await?;
        self.status(reply.status, NAME)?;
        let what = self.what();
        reply
            .snapshots
            .iter()
            .map(|properties| record_from_proto(properties, self.info.id, &what))
            .collect()
    }
}
