//! The Admin service: listings and shadow copy management for `shadowcopy` and other tools.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use shadowcopy_coordinator::{CoordinatorError, DeleteOutcome, DeleteTarget};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::SnapshotContext;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use shadowcopy_protocol::v1;
use tonic::{Request, Response, Status};

use crate::access::Action;
use crate::convert::{
    error_status, parse_id, provider_info, snapshot_properties, status_of, writer_status,
};
use crate::state::Daemon;

/// The gRPC Admin service.
#[derive(Clone)]
pub(crate) struct AdminService {
    pub(crate) daemon: Arc<Daemon>,
}

fn ok() -> Option<v1::Status> {
    Some(shadowcopy_protocol::status_ok())
}

impl AdminService {
    /// Resolves a DeleteSnapshots target (DEL-1) and deletes it. The coordinator picks what "the
    /// oldest of a volume" and "all" mean, so that every client gets the same answer. Exposed
    /// copies are unexposed first with `force`, and refuse the whole call without it.
    async fn delete(
        &self,
        target: Option<v1::delete_snapshots_request::Target>,
        force: bool,
    ) -> Result<DeleteOutcome, CoordinatorError> {
        use v1::delete_snapshots_request::Target;
        let coordinator = &self.daemon.coordinator;
        // What is deleted, resolved once: the copies checked for exposure are the copies deleted.
        let (target, ids): (Option<DeleteTarget>, Vec<SnapshotId>) = match target {
            Some(Target::SnapshotId(id)) => {
                let id = parse_id("snapshot_id", &id)?;
                (Some(DeleteTarget::Snapshot(id)), vec![id])
            }
            Some(Target::SetId(id)) => {
                let set: SnapshotSetId = parse_id("set_id", &id)?;
                let ids = coordinator
                    .snapshots(SnapshotContext::All)
                    .await?
                    .iter()
                    .filter(|r| r.set_id == set)
                    .map(|r| r.snapshot_id)
                    .collect();
                (Some(DeleteTarget::Set(set)), ids)
            }
            Some(Target::OldestOfVolume(volume)) => {
                if volume.trim().is_empty() {
                    return Err(CoordinatorError::new(
                        codes::E_INVALIDARG,
                        "oldest_of_volume is empty: name the volume by its mount point",
                    ));
                }
                let oldest = coordinator.oldest_snapshot(&volume).await?.snapshot_id;
                (Some(DeleteTarget::Snapshot(oldest)), vec![oldest])
            }
            Some(Target::All(_)) => {
                let ids = coordinator
                    .finished_snapshots()
                    .await?
                    .iter()
                    .map(|r| r.snapshot_id)
                    .collect();
                (None, ids)
            }
            None => {
                return Err(CoordinatorError::new(
                    codes::E_INVALIDARG,
                    "name what to delete: a snapshot id, a set id, the oldest of a volume, or all",
                ));
            }
        };
        // An exposed copy is a mounted, readable volume that someone may be using. Deleting it
        // without force is refused with VSS_E_VOLUME_IN_USE, the code VSS uses for a volume that is
        // busy when force is off (REV-1), and the whole call deletes nothing, so that the caller
        // decides once. With force it is unmounted first, so that a deleted copy never stays
        // readable (SNAP-3).
        for id in &ids {
            let Some(exposure) = self.daemon.exposures.exposure_of(*id).await else {
                continue;
            };
            if force {
                self.daemon.exposures.unexpose(*id).await?;
                tracing::info!(snapshot = %id, directory = %exposure.directory.display(), "unexposed before deletion (force)");
            } else {
                return Err(CoordinatorError::new(
                    codes::VSS_E_VOLUME_IN_USE,
                    format!(
                        "shadow copy {id} of {} is exposed at {}, so it was not deleted (nothing \
                         was); unexpose it first with `shadowcopy unexpose {id}`, or delete with \
                         `--force` to unexpose and delete it",
                        exposure.volume,
                        exposure.directory.display()
                    ),
                ));
            }
        }
        match target {
            Some(target) => coordinator.delete_snapshots(target).await,
            None => coordinator.delete_all().await,
        }
    }
}

/// An optional id filter: empty means "any", anything else must be a GUID.
fn parse_filter_id<T: std::str::FromStr>(
    field: &str,
    text: &str,
) -> Result<Option<T>, CoordinatorError> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse_id(field, text).map(Some)
    }
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
                // A writer whose peer is this very process is one of the hosted writers
                // (service.writers_dir), connected over the daemon's own socket.
                let hosted = connection.is_none_or(|c| {
                    c.peer.pid.and_then(|p| u32::try_from(p).ok()) == Some(std::process::id())
                });
                v1::WriterInfo {
                    status: Some(writer_status(status)),
                    application_level: connection
                        .map_or(0, |c| c.registration.application_level.value()),
                    freeze_timeout_ms: connection.map_or(0, |c| {
                        u32::try_from(c.registration.freeze_timeout.as_millis()).unwrap_or(u32::MAX)
                    }),
                    subscribe_mask: connection.map_or(0, |c| c.registration.subscribe_mask.bits()),
                    hosted,
                    // 0 for hosted writers (admin.proto).
                    pid: connection
                        .filter(|_| !hosted)
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
        let mut reply = v1::ListWritersReply {
            status: ok(),
            writers,
        };
        // The WMDs of many writers can add up to more than a message may carry; the listing then
        // comes without them, saying so, rather than not at all.
        let size = prost::Message::encoded_len(&reply);
        if size > shadowcopy_protocol::MAX_MESSAGE_SIZE {
            for writer in &mut reply.writers {
                writer.wmd_json.clear();
            }
            let mut status = error_status(
                &codes::E_OUTOFMEMORY,
                &format!(
                    "the writers' metadata documents add up to {size} bytes, more than the {} \
                     bytes a protocol message may carry (MAX_MESSAGE_SIZE), so the writers are \
                     listed without them",
                    shadowcopy_protocol::MAX_MESSAGE_SIZE
                ),
            );
            // The registry's action (free memory) does not fit a size limit of the protocol.
            status.hint = "List the writers without their documents (include_metadata false), \
                           and read a writer's document in a requester session that leaves the \
                           largest out (SetWriterEnabled)."
                .into();
            reply.status = Some(status);
        }
        Ok(Response::new(reply))
    }

    async fn list_providers(
        &self,
        request: Request<v1::ListProvidersRequest>,
    ) -> Result<Response<v1::ListProvidersReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        let external = self
            .daemon
            .external_providers
            .lock()
            .expect("external providers lock")
            .clone();
        let providers = self
            .daemon
            .coordinator
            .providers()
            .iter()
            .map(|info| {
                // Plug-ins are the providers with a socket (`[[providers.external]]`).
                let socket = external.get(&info.id);
                v1::ProviderEntry {
                    info: Some(provider_info(info)),
                    builtin: socket.is_none(),
                    socket_path: socket
                        .map(|path| path.display().to_string())
                        .unwrap_or_default(),
                }
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
        // Filters are ids: a malformed one is refused rather than matching nothing, and every
        // spelling docs/protocol.md §3 allows (upper case, braces) matches.
        let ids = parse_filter_id::<SnapshotSetId>("set_id", &filter.set_id).and_then(|set| {
            parse_filter_id::<SnapshotId>("snapshot_id", &filter.snapshot_id).map(|id| (set, id))
        });
        let (set_filter, snapshot_filter) = match ids {
            Ok(ids) => ids,
            Err(e) => {
                return Ok(Response::new(v1::ListSnapshotsReply {
                    status: Some(error_status(&e.code(), e.message())),
                    snapshots: vec![],
                }));
            }
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
        // SNAP-1: exposed copies carry their exposed name and EXPOSED_LOCALLY.
        let exposures = self.daemon.exposures.all().await;
        let snapshots = records
            .iter()
            .filter(|r| set_filter.is_none_or(|set| r.set_id == set))
            .filter(|r| {
                filter.volume.is_empty()
                    || r.volume.trim_end_matches('/') == filter.volume.trim_end_matches('/')
            })
            .filter(|r| snapshot_filter.is_none_or(|id| r.snapshot_id == id))
            .map(|r| {
                let in_set = records.iter().filter(|o| o.set_id == r.set_id).count();
                let mut properties =
                    snapshot_properties(r, u32::try_from(in_set).unwrap_or(u32::MAX));
                if let Some(exposure) = exposures.get(&r.snapshot_id) {
                    crate::exposure::describe(&mut properties, exposure);
                }
                properties
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
        let request = request.into_inner();
        let outcome = self.delete(request.target, request.force).await;
        // Also after a partial or failed deletion: whatever went, its view goes (SNAP-3).
        self.daemon
            .previous_versions
            .sync(&self.daemon.coordinator)
            .await;
        let reply = match outcome {
            // DEL-1: the count, and the first shadow copy that could not be deleted; a partial
            // deletion is a failure status with a non-zero count.
            Ok(outcome) => match outcome.first_failure {
                None => v1::DeleteSnapshotsReply {
                    status: ok(),
                    deleted_count: u32::try_from(outcome.deleted).unwrap_or(u32::MAX),
                    first_failed_snapshot_id: String::new(),
                },
                Some((failed, e)) => v1::DeleteSnapshotsReply {
                    status: Some(error_status(&e.code(), e.message())),
                    deleted_count: u32::try_from(outcome.deleted).unwrap_or(u32::MAX),
                    first_failed_snapshot_id: failed.to_string(),
                },
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
        let outcome = crate::exposure::expose_request(&self.daemon, request.into_inner()).await;
        let reply = match outcome {
            Ok(exposed_name) => v1::ExposeSnapshotReply {
                status: ok(),
                exposed_name,
            },
            Err(e) => v1::ExposeSnapshotReply {
                status: Some(error_status(&e.code(), e.message())),
                exposed_name: String::new(),
            },
        };
        Ok(Response::new(reply))
    }

    async fn unexpose_snapshot(
        &self,
        request: Request<v1::UnexposeSnapshotRequest>,
    ) -> Result<Response<v1::UnexposeSnapshotReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        let outcome = crate::exposure::unexpose_request(&self.daemon, request.into_inner()).await;
        Ok(Response::new(v1::UnexposeSnapshotReply {
            status: Some(crate::convert::status_of(&outcome)),
        }))
    }

    async fn revert_volume(
        &self,
        request: Request<v1::RevertVolumeRequest>,
    ) -> Result<Response<v1::RevertVolumeReply>, Status> {
        self.daemon.authorize(&request, Action::Requester)?;
        let request = request.into_inner();
        // REV-1: the coordinator checks the copy (persistent, created, not in the set in creation,
        // no other revert of its volume) and runs the revert to the end even if this call is
        // dropped. Reverting to an exposed copy is allowed: the exposure reads the copy, which a
        // revert does not change.
        let result = match parse_id::<SnapshotId>("snapshot_id", &request.snapshot_id) {
            Ok(snapshot) => {
                self.daemon
                    .coordinator
                    .revert(snapshot, request.force_dismount)
                    .await
            }
            Err(e) => Err(e),
        };
        Ok(Response::new(v1::RevertVolumeReply {
            status: Some(status_of(&result)),
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
            reverts_in_progress: coordinator.reverts_in_progress(),
        }))
    }
}
