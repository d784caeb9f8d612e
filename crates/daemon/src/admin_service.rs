//! The Admin service: listings and shadow copy management for `shadowcopy` and other tools.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use shadowcopy_coordinator::DeleteTarget;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::SnapshotContext;
use shadowcopy_metadata::json::Document;
use shadowcopy_protocol::v1;
use tonic::{Request, Response, Status};

use crate::access::Action;
use crate::convert::{error_status, parse_id, provider_info, snapshot_properties, writer_status};
use crate::state::Daemon;

/// The gRPC Admin service.
#[derive(Clone)]
pub(crate) struct AdminService {
    pub(crate) daemon: Arc<Daemon>,
}

fn ok() -> Option<v1::Status> {
    Some(shadowcopy_protocol::status_ok())
}

fn not_yet(what: &str) -> Option<v1::Status> {
    Some(error_status(
        &codes::VSS_E_NOT_SUPPORTED,
        &format!(
            "{what} needs a provider that can expose or revert shadow copies; none of the loaded providers can"
        ),
    ))
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn hello(
        &self,
        request: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloReply>, Status> {
        shadowcopy_protocol::check_hello(request.get_ref())?;
        Ok(Response::new(shadowcopy_protocol::hello_reply(env!(
            "CARGO_PKG_VERSION"
        ))))
    }

    async fn list_writers(
        &self,
        request: Request<v1::ListWritersRequest>,
    ) -> Result<Response<v1::ListWritersReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        let include_metadata = request.get_ref().include_metadata;
        let connections = self
            .daemon
            .connections
            .lock()
            .expect("connections lock")
            .clone();
        let writers = self
            .daemon
            .coordinator
            .writers_status()
            .iter()
            .map(|status| {
                let connection = connections.get(&status.instance_id);
                v1::WriterInfo {
                    status: Some(writer_status(status)),
                    application_level: connection
                        .map_or(0, |c| c.registration.application_level.value()),
                    freeze_timeout_ms: connection.map_or(0, |c| {
                        u32::try_from(c.registration.freeze_timeout.as_millis()).unwrap_or(u32::MAX)
                    }),
                    subscribe_mask: connection.map_or(0, |c| c.registration.subscribe_mask.bits()),
                    hosted: connection.is_none(),
                    pid: connection
                        .and_then(|c| c.peer.pid)
                        .and_then(|p| u32::try_from(p).ok())
                        .unwrap_or(0),
                    uid: connection.map_or(0, |c| c.peer.uid),
                    registered_at: connection
                        .and_then(|c| c.registered_at.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                    wmd_json: if include_metadata {
                        connection
                            .map(|c| c.metadata.to_canonical_json())
                            .unwrap_or_default()
                    } else {
                        String::new()
                    },
                }
            })
            .collect();
        Ok(Response::new(v1::ListWritersReply {
            status: ok(),
            writers,
        }))
    }

    async fn list_providers(
        &self,
        request: Request<v1::ListProvidersRequest>,
    ) -> Result<Response<v1::ListProvidersReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        let providers = self
            .daemon
            .coordinator
            .providers()
            .iter()
            .map(|info| v1::ProviderEntry {
                info: Some(provider_info(info)),
                builtin: true,
                socket_path: String::new(),
            })
            .collect();
        Ok(Response::new(v1::ListProvidersReply {
            status: ok(),
            providers,
        }))
    }

    async fn list_snapshots(
        &self,
        request: Request<v1::ListSnapshotsRequest>,
    ) -> Result<Response<v1::ListSnapshotsReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        let filter = request.into_inner();
        let context = match filter.context {
            Some(value) => match SnapshotContext::from_value(value) {
                Some(context) => context,
                None => {
                    let status = error_status(
                        &codes::E_INVALIDARG,
                        &format!("context {value:#x} is not a VSS snapshot context"),
                    );
                    return Ok(Response::new(v1::ListSnapshotsReply {
                        status: Some(status),
                        snapshots: vec![],
                    }));
                }
            },
            None => SnapshotContext::All,
        };
        let records = match self.daemon.coordinator.snapshots(context).await {
            Ok(records) => records,
            Err(e) => {
                let status = error_status(&e.code(), e.message());
                return Ok(Response::new(v1::ListSnapshotsReply {
                    status: Some(status),
                    snapshots: vec![],
                }));
            }
        };
        let snapshots = records
            .iter()
            .filter(|r| filter.set_id.is_empty() || r.set_id.to_string() == filter.set_id)
            .filter(|r| {
                filter.volume.is_empty()
                    || r.volume.trim_end_matches('/') == filter.volume.trim_end_matches('/')
            })
            .filter(|r| {
                filter.snapshot_id.is_empty() || r.snapshot_id.to_string() == filter.snapshot_id
            })
            .map(|r| {
                let in_set = records.iter().filter(|o| o.set_id == r.set_id).count();
                snapshot_properties(r, u32::try_from(in_set).unwrap_or(u32::MAX))
            })
            .collect();
        Ok(Response::new(v1::ListSnapshotsReply {
            status: ok(),
            snapshots,
        }))
    }

    async fn delete_snapshots(
        &self,
        request: Request<v1::DeleteSnapshotsRequest>,
    ) -> Result<Response<v1::DeleteSnapshotsReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        let target = match request.into_inner().target {
            Some(v1::delete_snapshots_request::Target::SnapshotId(id)) => {
                parse_id("snapshot_id", &id).map(DeleteTarget::Snapshot)
            }
            Some(v1::delete_snapshots_request::Target::SetId(id)) => {
                parse_id("set_id", &id).map(DeleteTarget::Set)
            }
            Some(_) => Err(shadowcopy_coordinator::CoordinatorError::new(
                codes::VSS_E_NOT_SUPPORTED,
                "deleting the oldest or all shadow copies arrives with the persistent catalog; delete by snapshot or set id",
            )),
            None => Err(shadowcopy_coordinator::CoordinatorError::new(
                codes::E_INVALIDARG,
                "name a snapshot id or a set id to delete",
            )),
        };
        let outcome = match target {
            Ok(target) => self.daemon.coordinator.delete_snapshots(target).await,
            Err(e) => Err(e),
        };
        let reply = match outcome {
            Ok(outcome) => v1::DeleteSnapshotsReply {
                status: ok(),
                deleted_count: u32::try_from(outcome.deleted).unwrap_or(u32::MAX),
                first_failed_snapshot_id: String::new(),
            },
            Err(e) => v1::DeleteSnapshotsReply {
                status: Some(error_status(&e.code(), e.message())),
                deleted_count: 0,
                first_failed_snapshot_id: String::new(),
            },
        };
        Ok(Response::new(reply))
    }

    async fn expose_snapshot(
        &self,
        request: Request<v1::ExposeSnapshotRequest>,
    ) -> Result<Response<v1::ExposeSnapshotReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        Ok(Response::new(v1::ExposeSnapshotReply {
            status: not_yet("exposing a shadow copy"),
            exposed_name: String::new(),
        }))
    }

    async fn unexpose_snapshot(
        &self,
        request: Request<v1::UnexposeSnapshotRequest>,
    ) -> Result<Response<v1::UnexposeSnapshotReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        Ok(Response::new(v1::UnexposeSnapshotReply {
            status: not_yet("unexposing a shadow copy"),
        }))
    }

    async fn revert_volume(
        &self,
        request: Request<v1::RevertVolumeRequest>,
    ) -> Result<Response<v1::RevertVolumeReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        Ok(Response::new(v1::RevertVolumeReply {
            status: not_yet("reverting a volume"),
        }))
    }

    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        let coordinator = &self.daemon.coordinator;
        let sessions = self
            .daemon
            .sessions
            .lock()
            .expect("sessions lock")
            .iter()
            .map(|(id, entry)| v1::SessionInfo {
                session_id: id.to_string(),
                restore: entry.restore,
                pid: entry
                    .peer
                    .pid
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0),
                uid: entry.peer.uid,
                phase: entry.phase.clone(),
                set_id: String::new(),
                opened_at: entry
                    .opened_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            })
            .collect();
        Ok(Response::new(v1::GetStatusReply {
            status: ok(),
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            protocol_major: shadowcopy_protocol::PROTOCOL_MAJOR,
            protocol_minor: shadowcopy_protocol::PROTOCOL_MINOR,
            uptime_seconds: self.daemon.started.elapsed().as_secs(),
            set_in_creation: coordinator
                .set_in_creation()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            sessions,
            writer_count: u32::try_from(coordinator.writers_status().len()).unwrap_or(u32::MAX),
            provider_count: u32::try_from(coordinator.providers().len()).unwrap_or(u32::MAX),
            reverts_in_progress: Vec::new(),
        }))
    }
}
