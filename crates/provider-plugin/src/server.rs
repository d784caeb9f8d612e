//! The plug-in's side: [`serve`] adapts any implementation of the coordinator's `Provider` trait to
//! the gRPC Provider service on a Unix socket of its own.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shadowcopy_coordinator::{DeleteTarget, Provider, ProviderError, VolumeSupport};
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::enums::SnapshotContext;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use shadowcopy_protocol::v1::provider_server::{Provider as ProviderService, ProviderServer};
use shadowcopy_protocol::{MAX_MESSAGE_SIZE, v1};
use tonic::{Request, Response, Status};

use crate::convert::{error_to_status, info_to_proto, parse_id, record_to_proto};

/// Why [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The socket could not be created: its directory, a live server already on it, or a path
    /// that is not a socket.
    #[error(
        "cannot listen on {}: {source}; choose another --socket, or stop the plug-in already \
         serving it",
        socket.display()
    )]
    Listen {
        /// The socket path.
        socket: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The socket's permissions could not be restricted to its owner.
    #[error("cannot make {} accessible to its owner only (mode 0600): {source}", socket.display())]
    Permissions {
        /// The socket path.
        socket: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The gRPC server failed while serving.
    #[error("the Provider service on {} failed: {source}", socket.display())]
    Serve {
        /// The socket path.
        socket: PathBuf,
        /// The underlying error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Serves `provider` as the Provider service on the Unix socket `socket` until `shutdown`
/// resolves, then removes the socket.
///
/// The socket's directory is created if missing, a stale socket file is replaced (never a live
/// socket or another file), and the socket is made accessible to its owner only (mode 0600):
/// only shadowcopyd, running as root, calls a provider (PROV-REG-1, spec §17). Every call is also
/// checked on its own: the version header (COMPAT-3) and the caller's uid from SO_PEERCRED, which
/// must be root or the plug-in's own uid.
///
/// Calls are handed to `provider` as they come; a call the daemon gives up on (its time limit
/// passed) is cancelled by dropping the provider's future, as for a built-in provider.
/// RevertToSnapshot goes to the trait's `revert_to_snapshot`, whose default answers E_NOTIMPL.
pub async fn serve(
    provider: Arc<dyn Provider>,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listen = |source| ServeError::Listen {
        socket: socket.to_owned(),
        source,
    };
    if let Some(dir) = socket.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(listen)?;
    }
    let incoming = shadowcopy_protocol::serve_unix_incoming(socket).map_err(listen)?;
    // The socket exists for an instant with the umask's mode; the per-call uid check below
    // covers that instant, the mode covers everything else.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ServeError::Permissions {
            socket: socket.to_owned(),
            source,
        }
    })?;
    let info = provider.info();
    tracing::info!(
        socket = %socket.display(),
        provider = %info.name,
        id = %info.id,
        "provider plug-in listening"
    );
    let service = Adapter {
        provider,
        own_uid: nix::unistd::geteuid().as_raw(),
    };
    let server = ProviderServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let result = tonic::transport::Server::builder()
        .add_service(server)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = std::fs::remove_file(socket);
    result.map_err(|source| ServeError::Serve {
        socket: socket.to_owned(),
        source,
    })
}

/// The gRPC service around a `Provider`.
struct Adapter {
    provider: Arc<dyn Provider>,
    /// The plug-in's effective uid, which may call it besides root (a plug-in run by hand).
    own_uid: u32,
}

/// The reply of a call that carries only a status.
fn phase_reply(result: Result<(), ProviderError>) -> Response<v1::CommitPhaseReply> {
    Response::new(v1::CommitPhaseReply {
        status: Some(status_of(&result)),
    })
}

/// The in-band status of a provider result.
fn status_of<T>(result: &Result<T, ProviderError>) -> v1::Status {
    match result {
        Ok(_) => shadowcopy_protocol::status_ok(),
        Err(error) => error_to_status(error),
    }
}

/// Parses the set id of a request: a malformed one is E_INVALIDARG (docs/protocol.md §7.4).
fn set_id(call: &str, text: &str) -> Result<SnapshotSetId, ProviderError> {
    parse_id(codes::E_INVALIDARG, call, "set_id", text)
}

/// The creation context of a request, if it is one the trait can carry.
fn context(call: &str, value: u32) -> Result<SnapshotContext, ProviderError> {
    SnapshotContext::from_value(value)
        .filter(|context| *context != SnapshotContext::All)
        .ok_or_else(|| {
            ProviderError::new(
                codes::E_INVALIDARG,
                format!(
                    "{call}: context {value:#x} is not a VSS snapshot creation context this \
                     provider can honour (modifier bits such as TRANSPORTABLE are not supported)"
                ),
            )
        })
}

impl Adapter {
    /// Checks the version header and the caller (spec §17: only shadowcopyd calls a provider).
    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        shadowcopy_protocol::check_version(request)?;
        let denied = |message: String| {
            tracing::warn!(%message, "call refused");
            shadowcopy_protocol::grpc_status(&codes::E_ACCESSDENIED, message)
        };
        let name = self.provider.info().name;
        match shadowcopy_protocol::peer_credentials(request) {
            Some(peer) if peer.uid == 0 || peer.uid == self.own_uid => Ok(()),
            Some(peer) => Err(denied(format!(
                "uid {} may not call provider plug-in {name}: only shadowcopyd, running as root, \
                 may; register the plug-in in shadowcopyd.toml instead of calling it directly",
                peer.uid
            ))),
            None => Err(denied(format!(
                "the caller of provider plug-in {name} is unknown: it serves only local \
                 Unix-socket peers"
            ))),
        }
    }
}

/// What a provider returns for an error code it must refuse with in-band.
fn refuse(code: &ErrorCode, message: String) -> ProviderError {
    ProviderError::new(*code, message)
}

#[tonic::async_trait]
impl ProviderService for Adapter {
    async fn hello(
        &self,
        request: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloReply>, Status> {
        shadowcopy_protocol::check_hello(request.get_ref())?;
        let info = self.provider.info();
        Ok(Response::new(shadowcopy_protocol::hello_reply(format!(
            "{} {}",
            info.name, info.version
        ))))
    }

    async fn get_provider_info(
        &self,
        request: Request<v1::GetProviderInfoRequest>,
    ) -> Result<Response<v1::GetProviderInfoReply>, Status> {
        self.admit(&request)?;
        Ok(Response::new(v1::GetProviderInfoReply {
            status: Some(shadowcopy_protocol::status_ok()),
            info: Some(info_to_proto(&self.provider.info())),
        }))
    }

    async fn is_volume_supported(
        &self,
        request: Request<v1::IsVolumeSupportedRequest>,
    ) -> Result<Response<v1::IsVolumeSupportedReply>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        let answer = match context("IsVolumeSupported", request.context) {
            Ok(context) => {
                self.provider
                    .is_volume_supported(&request.volume, context)
                    .await
            }
            // PROV-R-1: a context the provider cannot honour makes the volume unsupported.
            Err(error) => Ok(VolumeSupport::Unsupported {
                reason: error.message,
            }),
        };
        let reply = match answer {
            Ok(VolumeSupport::Supported) => v1::IsVolumeSupportedReply {
                status: Some(shadowcopy_protocol::status_ok()),
                supported: true,
                reason: String::new(),
            },
            Ok(VolumeSupport::Unsupported { reason }) => v1::IsVolumeSupportedReply {
                status: Some(shadowcopy_protocol::status_ok()),
                supported: false,
                reason,
            },
            Err(error) => v1::IsVolumeSupportedReply {
                status: Some(error_to_status(&error)),
                supported: false,
                reason: String::new(),
            },
        };
        Ok(Response::new(reply))
    }

    async fn begin_prepare_snapshot(
        &self,
        request: Request<v1::BeginPrepareSnapshotRequest>,
    ) -> Result<Response<v1::CommitPhaseReply>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        const CALL: &str = "BeginPrepareSnapshot";
        let result = async {
            let set = set_id(CALL, &request.set_id)?;
            let snapshot: SnapshotId = parse_id(
                codes::E_INVALIDARG,
                CALL,
                "snapshot_id",
                &request.snapshot_id,
            )?;
            let context = context(CALL, request.context)?;
            if request.volume.is_empty() {
                return Err(refuse(
                    &codes::E_INVALIDARG,
                    format!("{CALL}: the volume is empty"),
                ));
            }
            self.provider
                .begin_prepare_snapshot(set, snapshot, &request.volume, context)
                .await
        }
        .await;
        Ok(phase_reply(result))
    }

    async fn end_prepare_snapshots(
        &self,
        request: Request<v1::EndPrepareSnapshotsRequest>,
    ) -> Result<Response<v1::CommitPhaseReply>, Status> {
        self.admit(&request)?;
        let set = set_id("EndPrepareSnapshots", &request.get_ref().set_id);
        Ok(phase_reply(match set {
            Ok(set) => self.provider.end_prepare_snapshots(set).await,
            Err(error) => Err(error),
        }))
    }

    async fn pre_commit_snapshots(
        &self,
        request: Request<v1::PreCommitSnapshotsRequest>,
    ) -> Result<Response<v1::CommitPhaseReply>, Status> {
        self.admit(&request)?;
        let set = set_id("PreCommitSnapshots", &request.get_ref().set_id);
        Ok(phase_reply(match set {
            Ok(set) => self.provider.pre_commit_snapshots(set).await,
            Err(error) => Err(error),
        }))
    }

    async fn commit_snapshots(
        &self,
        request: Request<v1::CommitSnapshotsRequest>,
    ) -> Result<Response<v1::CommitPhaseReply>, Status> {
        self.admit(&request)?;
        let set = set_id("CommitSnapshots", &request.get_ref().set_id);
        Ok(phase_reply(match set {
            Ok(set) => self.provider.commit_snapshots(set).await,
            Err(error) => Err(error),
        }))
    }

    async fn post_commit_snapshots(
        &self,
        request: Request<v1::PostCommitSnapshotsRequest>,
    ) -> Result<Response<v1::CommitPhaseReply>, Status> {
        self.admit(&request)?;
        // snapshots_count is informative; the trait's provider keeps its own records.
        let set = set_id("PostCommitSnapshots", &request.get_ref().set_id);
        Ok(phase_reply(match set {
            Ok(set) => self.provider.post_commit_snapshots(set).await,
            Err(error) => Err(error),
        }))
    }

    async fn pre_final_commit_snapshots(
        &self,
        request: Request<v1::PreFinalCommitSnapshotsRequest>,
    ) -> Result<Response<v1::CommitPhaseReply>, Status> {
        self.admit(&request)?;
        let set = set_id("PreFinalCommitSnapshots", &request.get_ref().set_id);
        Ok(phase_reply(match set {
            Ok(set) => self.provider.pre_final_commit_snapshots(set).await,
            Err(error) => Err(error),
        }))
    }

    async fn post_final_commit_snapshots(
        &self,
        request: Request<v1::PostFinalCommitSnapshotsRequest>,
    ) -> Result<Response<v1::CommitPhaseReply>, Status> {
        self.admit(&request)?;
        let set = set_id("PostFinalCommitSnapshots", &request.get_ref().set_id);
        Ok(phase_reply(match set {
            Ok(set) => self.provider.post_final_commit_snapshots(set).await,
            Err(error) => Err(error),
        }))
    }

    async fn abort_snapshots(
        &self,
        request: Request<v1::AbortSnapshotsRequest>,
    ) -> Result<Response<v1::CommitPhaseReply>, Status> {
        self.admit(&request)?;
        let set = set_id("AbortSnapshots", &request.get_ref().set_id);
        Ok(phase_reply(match set {
            Ok(set) => self.provider.abort_snapshots(set).await,
            Err(error) => Err(error),
        }))
    }

    async fn delete_snapshots(
        &self,
        request: Request<v1::ProviderDeleteSnapshotsRequest>,
    ) -> Result<Response<v1::ProviderDeleteSnapshotsReply>, Status> {
        self.admit(&request)?;
        use v1::provider_delete_snapshots_request::Target;
        const CALL: &str = "DeleteSnapshots";
        // `force` has no counterpart in the trait: a shadow copy is deleted even if in use.
        let target = match request.into_inner().target {
            Some(Target::SnapshotId(id)) => {
                parse_id(codes::E_INVALIDARG, CALL, "snapshot_id", &id).map(DeleteTarget::Snapshot)
            }
            Some(Target::SetId(id)) => set_id(CALL, &id).map(DeleteTarget::Set),
            None => Err(refuse(
                &codes::E_INVALIDARG,
                format!("{CALL}: name a snapshot_id or a set_id"),
            )),
        };
        let failed = match &target {
            Ok(DeleteTarget::Snapshot(id)) => id.to_string(),
            _ => String::new(),
        };
        let result = match target {
            Ok(target) => self.provider.delete_snapshots(target).await,
            Err(error) => Err(error),
        };
        Ok(Response::new(match result {
            Ok(count) => v1::ProviderDeleteSnapshotsReply {
                status: Some(shadowcopy_protocol::status_ok()),
                deleted_count: u32::try_from(count).unwrap_or(u32::MAX),
                first_failed_snapshot_id: String::new(),
            },
            Err(error) => v1::ProviderDeleteSnapshotsReply {
                status: Some(error_to_status(&error)),
                deleted_count: 0,
                first_failed_snapshot_id: failed,
            },
        }))
    }

    async fn query_snapshots(
        &self,
        request: Request<v1::QuerySnapshotsRequest>,
    ) -> Result<Response<v1::QuerySnapshotsReply>, Status> {
        self.admit(&request)?;
        let filter = request.into_inner().set_id;
        let result: Result<Vec<v1::SnapshotProperties>, ProviderError> = async {
            let set = if filter.is_empty() {
                None
            } else {
                Some(set_id("QuerySnapshots", &filter)?)
            };
            let records = self.provider.query_snapshots().await?;
            Ok(records
                .iter()
                .filter(|record| set.is_none_or(|set| record.set_id == set))
                .map(record_to_proto)
                .collect())
        }
        .await;
        Ok(Response::new(v1::QuerySnapshotsReply {
            status: Some(status_of(&result)),
            snapshots: result.unwrap_or_default(),
        }))
    }

    async fn revert_to_snapshot(
        &self,
        request: Request<v1::RevertToSnapshotRequest>,
    ) -> Result<Response<v1::CommitPhaseReply>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        let snapshot = parse_id(
            codes::E_INVALIDARG,
            "RevertToSnapshot",
            "snapshot_id",
            &request.snapshot_id,
        );
        Ok(phase_reply(match snapshot {
            Ok(snapshot) => {
                self.provider
                    .revert_to_snapshot(snapshot, request.force_dismount)
                    .await
            }
            Err(error) => Err(error),
        }))
    }
}
