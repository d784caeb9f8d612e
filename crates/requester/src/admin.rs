//! A thin typed wrapper over the Admin service (docs/protocol.md §6): what `vssadmin` and
//! `vshadow` do outside a backup session (TOOL-1 to TOOL-3).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shadowcopy_metadata::enums::{
    ApplicationLevel, ProviderType, SnapshotAttributes, SnapshotContext, SubscribeMask,
};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{Guid, SnapshotId, SnapshotSetId, VssTimestamp, WriterMetadata};
use shadowcopy_protocol::v1::admin_client::AdminClient;
use shadowcopy_protocol::v1::{self, delete_snapshots_request};
use shadowcopy_protocol::{ProtocolVersion, VersionedChannel, reply_status};

use crate::error::RequesterError;
use crate::types::{self, SnapshotProperties, WriterStatus, known, non_empty, optional_id};

/// The Admin service of `shadowcopyd`, from [`Client::admin`](crate::Client::admin).
///
/// Every call is unary and outside any session. Listings never change anything and may be
/// retried freely; deletion, exposure and unexposure may be retried with the same arguments.
/// Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    client: AdminClient<VersionedChannel>,
    socket: Arc<Path>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// One registered writer instance (WST-1, TOOL-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterInfo {
    /// Identity and last known state and failure. The state is the one left by the writer's last
    /// event in any session; it can be stale and must not drive decisions (WST-2).
    pub status: WriterStatus,
    /// The application level it registered with (ROLE-9).
    pub application_level: ApplicationLevel,
    /// Its freeze timeout, after defaults (ROLE-8).
    pub freeze_timeout: Duration,
    /// Its subscription, after defaults (ROLE-8).
    pub subscribe_mask: SubscribeMask,
    /// Whether it is hosted inside shadowcopyd rather than an external process.
    pub hosted: bool,
    /// The process id of an external writer; `None` for hosted writers.
    pub pid: Option<u32>,
    /// The user id of an external writer (SO_PEERCRED).
    pub uid: u32,
    /// When it registered.
    pub registered_at: VssTimestamp,
    /// Its WMD, when asked for with `include_metadata`.
    pub metadata: Option<WriterMetadata>,
}

/// One provider shadowcopyd can use (SNAP-2, PROV-SEL-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEntry {
    /// The provider's id.
    pub id: ProviderId,
    /// Its name, for example `btrfs`.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its type (ENUM-16).
    pub provider_type: ProviderType,
    /// Whether it is built into shadowcopyd.
    pub builtin: bool,
    /// The socket of an external plug-in; `None` for built-in providers.
    pub socket_path: Option<PathBuf>,
}

/// The filters of [`Admin::list_snapshots`]; they combine with AND, and the default lists every
/// shadow copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Only shadow copies of this set.
    pub set_id: Option<SnapshotSetId>,
    /// Only shadow copies of this volume (mount point).
    pub volume: Option<String>,
    /// Only shadow copies of this context; `None` means `ALL` (CTX-5).
    pub context: Option<SnapshotContext>,
    /// Only this one shadow copy.
    pub snapshot_id: Option<SnapshotId>,
}

/// What [`Admin::delete_snapshots`] deletes (DEL-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteTarget {
    /// One shadow copy.
    Snapshot(SnapshotId),
    /// Every shadow copy of one set.
    Set(SnapshotSetId),
    /// The oldest shadow copy of a volume (mount point).
    OldestOfVolume(String),
    /// Every shadow copy, like `vshadow -da`.
    All,
}

/// How [`Admin::expose_snapshot`] exposes a shadow copy (EXP-1, EXP-2, EXP-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// A read-only mount of the whole shadow copy on an empty directory; `None` lets the daemon
    /// choose the directory.
    Locally {
        /// The empty directory to mount on.
        directory: Option<PathBuf>,
    },
    /// A read-only network share, optionally of one subdirectory.
    Remotely {
        /// The share name; `None` lets the daemon choose.
        share_name: Option<String>,
        /// The subdirectory to expose; `None` for the whole volume.
        path_from_root: Option<String>,
    },
}

/// The daemon's state, from [`Admin::get_status`] (LIMIT-4, LOG-5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonStatus {
    /// The daemon's name and version.
    pub daemon_version: String,
    /// The protocol version it speaks.
    pub protocol: ProtocolVersion,
    /// How long it has been running.
    pub uptime: Duration,
    /// The set between StartSnapshotSet and the end of DoSnapshotSet, if any (LIMIT-4).
    pub set_in_creation: Option<SnapshotSetId>,
    /// Every open requester session.
    pub sessions: Vec<SessionInfo>,
    /// How many writer instances are registered.
    pub writer_count: u32,
    /// How many providers are available.
    pub provider_count: u32,
    /// The volumes with a revert in progress.
    pub reverts_in_progress: Vec<String>,
}

/// One open requester session, as [`Admin::get_status`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's id, as writers see it.
    pub session_id: Guid,
    /// Whether it is a restore session.
    pub restore: bool,
    /// The requester's process id (SO_PEERCRED).
    pub pid: u32,
    /// The requester's user id (SO_PEERCRED).
    pub uid: u32,
    /// The step it is in, for people only; not a stable value.
    pub phase: String,
    /// Its shadow copy set, once started.
    pub set_id: Option<SnapshotSetId>,
    /// When it was opened.
    pub opened_at: VssTimestamp,
}

impl Admin {
    pub(crate) fn new(client: AdminClient<VersionedChannel>, socket: Arc<Path>) -> Self {
        Admin { client, socket }
    }

    /// Every registered writer with its identity, last known status and registration, like
    /// `vssadmin list writers` (WST-1, WST-3, TOOL-1); with `include_metadata`, also each WMD,
    /// parsed and validated.
    pub async fn list_writers(
        &self,
        include_metadata: bool,
    ) -> Result<Vec<WriterInfo>, RequesterError> {
        const NAME: &str = "ListWriters";
        let reply = self
            .client
            .clone()
            .list_writers(v1::ListWritersRequest { include_metadata })
            .await
            .map_err(|status| self.refused(NAME, status))?
            .into_inner();
        check(NAME, reply.status)?;
        let mut writers = Vec::with_capacity(reply.writers.len());
        for info in reply.writers {
            let status = info.status.ok_or_else(|| {
                self.protocol(NAME, "a writer entry carries no status".to_owned())
            })?;
            let status = WriterStatus::from_proto(status).map_err(|m| self.protocol(NAME, m))?;
            let metadata = match non_empty(info.wmd_json) {
                None => None,
                Some(json) => Some(WriterMetadata::from_json(&json).map_err(|source| {
                    RequesterError::InvalidDocument {
                        call: NAME,
                        what: format!(
                            "the writer metadata document of writer instance {}",
                            status.instance_id
                        ),
                        source,
                    }
                })?),
            };
            let application_level = known(
                "application_level",
                "VSS_APPLICATION_LEVEL",
                info.application_level,
                ApplicationLevel::from_value,
            )
            .map_err(|m| self.protocol(NAME, m))?;
            let subscribe_mask = SubscribeMask::from_bits(info.subscribe_mask).map_err(|_| {
                self.protocol(
                    NAME,
                    format!(
                        "subscribe_mask = {:#x} sets bits that VSS_SUBSCRIBE_MASK does not define",
                        info.subscribe_mask
                    ),
                )
            })?;
            writers.push(WriterInfo {
                status,
                application_level,
                freeze_timeout: Duration::from_millis(u64::from(info.freeze_timeout_ms)),
                subscribe_mask,
                hosted: info.hosted,
                pid: (info.pid != 0).then_some(info.pid),
                uid: info.uid,
                registered_at: VssTimestamp(info.registered_at),
                metadata,
            });
        }
        Ok(writers)
    }

    /// Every provider, in PROV-SEL-1 preference order (SNAP-2, TOOL-1).
    pub async fn list_providers(&self) -> Result<Vec<ProviderEntry>, RequesterError> {
        const NAME: &str = "ListProviders";
        let reply = self
            .client
            .clone()
            .list_providers(v1::ListProvidersRequest {})
            .await
            .map_err(|status| self.refused(NAME, status))?
            .into_inner();
        check(NAME, reply.status)?;
        reply
            .providers
            .into_iter()
            .map(|entry| {
                let info = entry
                    .info
                    .ok_or_else(|| "a provider entry carries no info".to_owned())?;
                Ok(ProviderEntry {
                    id: types::id("provider_id", &info.provider_id)?,
                    name: info.name,
                    version: info.version,
                    provider_type: known(
                        "provider_type",
                        "VSS_PROVIDER_TYPE",
                        info.provider_type,
                        ProviderType::from_value,
                    )?,
                    builtin: entry.builtin,
                    socket_path: non_empty(entry.socket_path).map(PathBuf::from),
                })
            })
            .collect::<Result<_, String>>()
            .map_err(|m| self.protocol(NAME, m))
    }

    /// The shadow copies that match every filter given, oldest first (SNAP-1, SNAP-2).
    pub async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
    ) -> Result<Vec<SnapshotProperties>, RequesterError> {
        const NAME: &str = "ListSnapshots";
        let request = v1::ListSnapshotsRequest {
            set_id: text_of(filter.set_id),
            volume: filter.volume.clone().unwrap_or_default(),
            context: filter.context.map(SnapshotContext::value),
            snapshot_id: text_of(filter.snapshot_id),
        };
        let reply = self
            .client
            .clone()
            .list_snapshots(request)
            .await
            .map_err(|status| self.refused(NAME, status))?
            .into_inner();
        check(NAME, reply.status)?;
        reply
            .snapshots
            .into_iter()
            .map(SnapshotProperties::from_proto)
            .collect::<Result<_, String>>()
            .map_err(|m| self.protocol(NAME, m))
    }

    /// Deletes shadow copies (DEL-1, SNAP-3) and returns how many were deleted. `force` also
    /// deletes exposed ones, unexposing them first. A deletion that stops part-way fails with
    /// [`RequesterError::DeleteIncomplete`], which says how many were deleted and where it
    /// stopped.
    pub async fn delete_snapshots(
        &self,
        target: &DeleteTarget,
        force: bool,
    ) -> Result<u32, RequesterError> {
        const NAME: &str = "DeleteSnapshots";
        let target = match target {
            DeleteTarget::Snapshot(id) => {
                delete_snapshots_request::Target::SnapshotId(id.to_string())
            }
            DeleteTarget::Set(id) => delete_snapshots_request::Target::SetId(id.to_string()),
            DeleteTarget::OldestOfVolume(volume) => {
                delete_snapshots_request::Target::OldestOfVolume(volume.clone())
            }
            DeleteTarget::All => delete_snapshots_request::Target::All(v1::Empty {}),
        };
        let reply = self
            .client
            .clone()
            .delete_snapshots(v1::DeleteSnapshotsRequest {
                target: Some(target),
                force,
            })
            .await
            .map_err(|status| self.refused(NAME, status))?
            .into_inner();
        match check(NAME, reply.status) {
            Ok(()) => Ok(reply.deleted_count),
            // A partial deletion keeps its count: the caller must know what is gone (SNAP-3:
            // a deleted shadow copy never comes back).
            Err(RequesterError::Vss {
                code,
                message,
                hint,
                ..
            }) if reply.deleted_count > 0 => Err(RequesterError::DeleteIncomplete {
                deleted_count: reply.deleted_count,
                first_failed: optional_id(
                    "first_failed_snapshot_id",
                    &reply.first_failed_snapshot_id,
                )
                .map_err(|m| self.protocol(NAME, m))?,
                code,
                message,
                hint,
            }),
            Err(error) => Err(error),
        }
    }

    /// Exposes a persistent shadow copy read-only (EXP-1, EXP-2, EXP-4) and returns the name it
    /// is exposed under: the mount directory or the share name.
    pub async fn expose_snapshot(
        &self,
        snapshot_id: SnapshotId,
        exposure: &Exposure,
    ) -> Result<String, RequesterError> {
        const NAME: &str = "ExposeSnapshot";
        let (attribute, path_from_root, expose_name) = match exposure {
            Exposure::Locally { directory } => (
                SnapshotAttributes::EXPOSED_LOCALLY,
                String::new(),
                directory
                    .as_ref()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            Exposure::Remotely {
                share_name,
                path_from_root,
            } => (
                SnapshotAttributes::EXPOSED_REMOTELY,
                path_from_root.clone().unwrap_or_default(),
                share_name.clone().unwrap_or_default(),
            ),
        };
        let reply = self
            .client
            .clone()
            .expose_snapshot(v1::ExposeSnapshotRequest {
                snapshot_id: snapshot_id.to_string(),
                expose_attribute: attribute.bits(),
                path_from_root,
                expose_name,
            })
            .await
            .map_err(|status| self.refused(NAME, status))?
            .into_inner();
        check(NAME, reply.status)?;
        Ok(reply.exposed_name)
    }

    /// Reverses [`Admin::expose_snapshot`] (EXP-1).
    pub async fn unexpose_snapshot(&self, snapshot_id: SnapshotId) -> Result<(), RequesterError> {
        const NAME: &str = "UnexposeSnapshot";
        let reply = self
            .client
            .clone()
            .unexpose_snapshot(v1::UnexposeSnapshotRequest {
                snapshot_id: snapshot_id.to_string(),
            })
            .await
            .map_err(|status| self.refused(NAME, status))?
            .into_inner();
        check(NAME, reply.status)
    }

    /// Rolls the volume back to a persistent shadow copy and returns when done (REV-1). The revert
    /// cannot be cancelled and goes on if the caller disconnects. `force_dismount` unmounts the
    /// volume even if it is in use.
    pub async fn revert_volume(
        &self,
        snapshot_id: SnapshotId,
        force_dismount: bool,
    ) -> Result<(), RequesterError> {
        const NAME: &str = "RevertVolume";
        let reply = self
            .client
            .clone()
            .revert_volume(v1::RevertVolumeRequest {
                snapshot_id: snapshot_id.to_string(),
                force_dismount,
            })
            .await
            .map_err(|status| self.refused(NAME, status))?
            .into_inner();
        check(NAME, reply.status)
    }

    /// The daemon's version, uptime, the set in creation, the open sessions and reverts in
    /// progress (LIMIT-4, LOG-5).
    pub async fn get_status(&self) -> Result<DaemonStatus, RequesterError> {
        const NAME: &str = "GetStatus";
        let reply = self
            .client
            .clone()
            .get_status(v1::GetStatusRequest {})
            .await
            .map_err(|status| self.refused(NAME, status))?
            .into_inner();
        check(NAME, reply.status)?;
        let convert = || -> Result<DaemonStatus, String> {
            Ok(DaemonStatus {
                daemon_version: reply.daemon_version,
                protocol: ProtocolVersion {
                    major: reply.protocol_major,
                    minor: reply.protocol_minor,
                },
                uptime: Duration::from_secs(reply.uptime_seconds),
                set_in_creation: optional_id("set_in_creation", &reply.set_in_creation)?,
                sessions: reply
                    .sessions
                    .into_iter()
                    .map(|session| {
                        Ok(SessionInfo {
                            session_id: types::id("session_id", &session.session_id)?,
                            restore: session.restore,
                            pid: session.pid,
                            uid: session.uid,
                            phase: session.phase,
                            set_id: optional_id("set_id", &session.set_id)?,
                            opened_at: VssTimestamp(session.opened_at),
                        })
                    })
                    .collect::<Result<_, String>>()?,
                writer_count: reply.writer_count,
                provider_count: reply.provider_count,
                reverts_in_progress: reply.reverts_in_progress,
            })
        };
        convert().map_err(|m| self.protocol(NAME, m))
    }

    /// The error for a refused call.
    fn refused(&self, call: &'static str, status: tonic::Status) -> RequesterError {
        RequesterError::from_grpc(&self.socket, call, status)
    }

    /// The error for an answer that breaks the protocol.
    fn protocol(&self, call: &'static str, message: String) -> RequesterError {
        RequesterError::protocol(&self.socket, call, message)
    }
}

/// The in-band status of a reply as a `Result` (docs/protocol.md §3.1).
fn check(call: &'static str, status: Option<v1::Status>) -> Result<(), RequesterError> {
    match reply_status(status) {
        Ok(_) => Ok(()),
        Err(status) => Err(RequesterError::vss(call, status)),
    }
}

/// An optional id as its wire text: empty for "not set".
fn text_of(id: Option<impl fmt::Display>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}
