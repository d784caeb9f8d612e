//! The Requester service: one bidirectional stream is one single-use backup or restore session.
//!
//! Calls on a session run one at a time, in order (ROLE-12). When the stream ends, for whatever
//! reason (a normal close, a crash, a SIGKILL), the session is released exactly as for a normal
//! release: BackupShutdown to the writers and deletion of auto-release shadow copies (BK-END-4,
//! BK-END-6). A requester that disappears in the middle of a call is noticed at once: the call is
//! dropped, which makes the coordinator abort any frozen writer, and the session is released.

use std::sync::Arc;

use shadowcopy_coordinator::{
    BackupSession, ComponentKey, CoordinatorError, RestoreSession, WriterSelector,
};
use shadowcopy_metadata::bcd::{BackupComponents, BackupState, RestoreExtensions, Rollforward};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{
    BackupType, FileRestoreStatus, RestoreType, RollforwardType, SnapshotContext,
};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::wmd::{AlternateLocationMapping, FileSet};
use shadowcopy_metadata::{SnapshotId, WriterInstanceId, WriterMetadata};
use shadowcopy_protocol::v1::{
    self, requester_request::Call, requester_response::Result as Payload,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::access::{Action, Peer};
use crate::convert::{parse_id, snapshot_properties, status_of, writer_status};
use crate::state::{Daemon, SessionEntry};

/// The gRPC Requester service.
#[derive(Clone)]
pub(crate) struct RequesterService {
    pub(crate) daemon: Arc<Daemon>,
}

/// A session is a backup or a restore, decided by its first call.
enum Session {
    New,
    Backup(BackupSession),
    Restore(RestoreSession),
}

type CallResult = Result<Option<Payload>, CoordinatorError>;

fn bad_state(message: &str) -> CoordinatorError {
    CoordinatorError::new(codes::VSS_E_BAD_STATE, message)
}

fn invalid(message: String) -> CoordinatorError {
    CoordinatorError::new(codes::E_INVALIDARG, message)
}

fn enum_value<T>(
    field: &str,
    value: Option<T>,
    raw: impl std::fmt::Display,
) -> Result<T, CoordinatorError> {
    value.ok_or_else(|| invalid(format!("{field} = {raw} is not a valid VSS value")))
}

fn key_parts(key: Option<&v1::ComponentKey>) -> Result<&v1::ComponentKey, CoordinatorError> {
    key.ok_or_else(|| invalid("the call needs a component key".into()))
}

fn instance_of(key: &v1::ComponentKey) -> Result<WriterInstanceId, CoordinatorError> {
    parse_id("component.writer_instance_id", &key.writer_instance_id)
}

/// A restore component key: class id plus the instance name the stored BCD has for that instance.
fn restore_key(
    bcd: &BackupComponents,
    key: &v1::ComponentKey,
) -> Result<ComponentKey, CoordinatorError> {
    let class_id = parse_id("component.writer_class_id", &key.writer_class_id)?;
    let instance_name = key
        .writer_instance_id
        .parse::<WriterInstanceId>()
        .ok()
        .and_then(|id| bcd.writer_instance(id))
        .and_then(|w| w.instance_name.clone());
    Ok(ComponentKey {
        class_id,
        instance_name,
        logical_path: key.logical_path.clone(),
        name: key.name.clone(),
    })
}

fn file_set(set: Option<&v1::FileSet>) -> Result<FileSet, CoordinatorError> {
    let set = set.ok_or_else(|| invalid("the call needs a file set".into()))?;
    Ok(FileSet {
        path: set.path.clone(),
        filespec: set.filespec.clone(),
        recursive: set.recursive,
    })
}

fn empty() -> CallResult {
    Ok(Some(Payload::Empty(v1::Empty {})))
}

fn bcd_payload(bcd: &BackupComponents) -> Payload {
    Payload::BackupComponents(v1::BackupComponentsDocument {
        bcd_json: bcd.to_canonical_json(),
    })
}

fn metadata_payload(metadata: Vec<WriterMetadata>) -> Payload {
    Payload::WriterMetadata(v1::WriterMetadataList {
        writers: metadata
            .into_iter()
            .map(|wmd| v1::WriterMetadataEntry {
                writer_instance_id: wmd.identity.instance_id.to_string(),
                wmd_json: wmd.to_canonical_json(),
            })
            .collect(),
    })
}

fn status_payload(status: &[shadowcopy_coordinator::WriterStatus]) -> Payload {
    Payload::WriterStatus(v1::WriterStatusList {
        writers: status.iter().map(writer_status).collect(),
    })
}

fn call_name(call: &Call) -> &'static str {
    match call {
        Call::InitializeForBackup(_) => "InitializeForBackup",
        Call::SetContext(_) => "SetContext",
        Call::SetBackupState(_) => "SetBackupState",
        Call::SetWriterEnabled(_) => "SetWriterEnabled",
        Call::GatherWriterMetadata(_) => "GatherWriterMetadata",
        Call::AddComponent(_) => "AddComponent",
        Call::SetBackupOptions(_) => "SetBackupOptions",
        Call::SetPreviousBackupStamp(_) => "SetPreviousBackupStamp",
        Call::StartSnapshotSet(_) => "StartSnapshotSet",
        Call::AddToSnapshotSet(_) => "AddToSnapshotSet",
        Call::PrepareForBackup(_) => "PrepareForBackup",
        Call::GatherWriterStatus(_) => "GatherWriterStatus",
        Call::DoSnapshotSet(_) => "DoSnapshotSet",
        Call::GetSnapshotProperties(_) => "GetSnapshotProperties",
        Call::SetBackupSucceeded(_) => "SetBackupSucceeded",
        Call::BackupComplete(_) => "BackupComplete",
        Call::AbortBackup(_) => "AbortBackup",
        Call::GetBackupComponents(_) => "GetBackupComponents",
        Call::InitializeForRestore(_) => "InitializeForRestore",
        Call::SetSelectedForRestore(_) => "SetSelectedForRestore",
        Call::AddRestoreSubcomponent(_) => "AddRestoreSubcomponent",
        Call::SetRestoreOptions(_) => "SetRestoreOptions",
        Call::SetAdditionalRestores(_) => "SetAdditionalRestores",
        Call::SetFileRestoreStatus(_) => "SetFileRestoreStatus",
        Call::AddAlternativeLocationMapping(_) => "AddAlternativeLocationMapping",
        Call::AddNewTarget(_) => "AddNewTarget",
        Call::PreRestore(_) => "PreRestore",
        Call::PostRestore(_) => "PostRestore",
        Call::SetRestoreState(_) => "SetRestoreState",
        Call::SetRangesFilePath(_) => "SetRangesFilePath",
        Call::SetRestoreExtensions(_) => "SetRestoreExtensions",
        Call::IsVolumeSupported(_) => "IsVolumeSupported",
        Call::Cancel(_) => "Cancel",
    }
}

impl Session {
    /// Runs one call. The first call decides whether this is a backup or a restore session.
    async fn handle(&mut self, daemon: &Daemon, call: Call) -> CallResult {
        if matches!(self, Session::New) {
            match &call {
                Call::InitializeForBackup(_) => {
                    *self = Session::Backup(daemon.coordinator.open_backup_session());
                }
                Call::InitializeForRestore(_) => {
                    *self = Session::Restore(daemon.coordinator.open_restore_session());
                }
                // A session only for discovery or queries may start straight away (BK-INIT-7).
                Call::GatherWriterMetadata(_) | Call::IsVolumeSupported(_) => {
                    *self = Session::Backup(daemon.coordinator.open_backup_session());
                }
                _ => {
                    return Err(bad_state(
                        "the first call of a session must be InitializeForBackup or InitializeForRestore (BK-INIT-1, RST-INIT-1)",
                    ));
                }
            }
        }
        match self {
            Session::Backup(session) => backup_call(session, daemon, call).await,
            Session::Restore(session) => restore_call(session, call).await,
            Session::New => unreachable!("a session kind was chosen above"),
        }
    }

    async fn release(self) {
        let outcome = match self {
            Session::New => Ok(()),
            Session::Backup(session) => session.release().await,
            Session::Restore(session) => session.release().await,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "session release reported a failure");
        }
    }
}

async fn backup_call(session: &mut BackupSession, daemon: &Daemon, call: Call) -> CallResult {
    match call {
        Call::InitializeForBackup(init) => {
            let stored = init
                .bcd_json
                .filter(|t| !t.is_empty())
                .map(|text| BackupComponents::from_json(&text))
                .transpose()?;
            session.initialize_for_backup(stored)?;
            empty()
        }
        Call::SetContext(set) => {
            let context = enum_value(
                "context",
                SnapshotContext::from_value(set.context),
                set.context,
            )?;
            session.set_context(context)?;
            empty()
        }
        Call::SetBackupState(state) => {
            let backup_type = enum_value(
                "backup_type",
                BackupType::from_value(state.backup_type),
                state.backup_type,
            )?;
            session.set_backup_state(BackupState {
                component_mode: state.component_mode,
                bootable_system_state: state.bootable_system_state,
                backup_type,
                partial_file_support: state.partial_file_support,
            })?;
            empty()
        }
        Call::SetWriterEnabled(set) => {
            let selector = match set.writer {
                Some(v1::set_writer_enabled::Writer::WriterClassId(id)) => {
                    WriterSelector::Class(parse_id("writer_class_id", &id)?)
                }
                Some(v1::set_writer_enabled::Writer::WriterInstanceId(id)) => {
                    WriterSelector::Instance(parse_id("writer_instance_id", &id)?)
                }
                None => {
                    return Err(invalid(
                        "SetWriterEnabled needs a writer class or instance id".into(),
                    ));
                }
            };
            session.set_writer_enabled(selector, set.enabled)?;
            empty()
        }
        Call::GatherWriterMetadata(_) => {
            session.gather_writer_metadata().await?;
            Ok(Some(metadata_payload(session.writer_metadata()?)))
        }
        Call::AddComponent(add) => {
            let key = key_parts(add.component.as_ref())?;
            session.add_component(instance_of(key)?, &key.logical_path, &key.name)?;
            empty()
        }
        Call::SetBackupOptions(set) => {
            let key = key_parts(set.component.as_ref())?;
            session.set_backup_options(
                instance_of(key)?,
                &key.logical_path,
                &key.name,
                &set.options,
            )?;
            empty()
        }
        Call::SetPreviousBackupStamp(set) => {
            let key = key_parts(set.component.as_ref())?;
            session.set_previous_backup_stamp(
                instance_of(key)?,
                &key.logical_path,
                &key.name,
                &set.previous_stamp,
            )?;
            empty()
        }
        Call::StartSnapshotSet(_) => {
            let set = session.start_snapshot_set()?;
            Ok(Some(Payload::SnapshotSetStarted(v1::SnapshotSetStarted {
                set_id: set.to_string(),
            })))
        }
        Call::IsVolumeSupported(query) => {
            let supported = session.is_volume_supported(&query.volume).await?;
            Ok(Some(Payload::VolumeSupport(v1::VolumeSupport {
                supported,
                provider_id: String::new(),
                reason: if supported {
                    String::new()
                } else {
                    format!("no provider can make shadow copies of {}", query.volume)
                },
            })))
        }
        Call::AddToSnapshotSet(add) => {
            let provider = add
                .provider_id
                .filter(|p| !p.is_empty())
                .map(|p| parse_id("provider_id", &p))
                .transpose()?;
            let snapshot = session.add_to_snapshot_set(&add.volume, provider).await?;
            let properties = session.snapshot_properties(snapshot).await.ok();
            Ok(Some(Payload::SnapshotAdded(v1::SnapshotAdded {
                snapshot_id: snapshot.to_string(),
                provider_id: properties
                    .map(|p| p.provider_id.to_string())
                    .unwrap_or_default(),
            })))
        }
        Call::PrepareForBackup(_) => {
            session.prepare_for_backup().await?;
            empty()
        }
        Call::GatherWriterStatus(_) => Ok(Some(status_payload(&session.gather_writer_status()?))),
        Call::DoSnapshotSet(_) => {
            session.do_snapshot_set().await?;
            // New client-accessible copies, and the oldest ones CFG-1 deleted, change the
            // shares' previous versions; they are in step before the requester hears success.
            daemon.previous_versions.sync(&daemon.coordinator).await;
            empty()
        }
        Call::GetSnapshotProperties(get) => {
            let id: SnapshotId = parse_id("snapshot_id", &get.snapshot_id)?;
            let record = session.snapshot_properties(id).await?;
            let in_set = session
                .backup_components()
                .map_or(0, |b| b.snapshots().len());
            Ok(Some(Payload::SnapshotProperties(snapshot_properties(
                &record,
                u32::try_from(in_set).unwrap_or(u32::MAX),
            ))))
        }
        Call::SetBackupSucceeded(set) => {
            let key = key_parts(set.component.as_ref())?;
            session.set_backup_succeeded(
                instance_of(key)?,
                &key.logical_path,
                &key.name,
                set.succeeded,
            )?;
            empty()
        }
        Call::BackupComplete(_) => {
            session.backup_complete().await?;
            empty()
        }
        Call::AbortBackup(_) => {
            session.abort_backup().await?;
            empty()
        }
        Call::GetBackupComponents(_) => Ok(Some(bcd_payload(session.backup_components()?))),
        other => {
            let _ = daemon;
            Err(bad_state(&format!(
                "{} is a restore call; this is a backup session",
                call_name(&other)
            )))
        }
    }
}

async fn restore_call(session: &mut RestoreSession, call: Call) -> CallResult {
    // Component keys of a restore are resolved against the stored BCD (RST-INIT-4).
    match call {
        Call::InitializeForRestore(init) => {
            let bcd = BackupComponents::from_json(&init.bcd_json)?;
            let wmds = init
                .stored_wmd_json
                .iter()
                .map(|text| WriterMetadata::from_json(text))
                .collect::<Result<Vec<_>, _>>()?;
            session.initialize_for_restore(bcd, wmds)?;
            empty()
        }
        Call::GatherWriterMetadata(_) => {
            session.gather_writer_metadata().await?;
            Ok(Some(metadata_payload(session.writer_metadata()?)))
        }
        Call::SetRestoreState(set) => {
            let restore_type = enum_value(
                "restore_type",
                RestoreType::from_value(set.restore_type),
                set.restore_type,
            )?;
            session.set_restore_type(restore_type)?;
            empty()
        }
        Call::SetSelectedForRestore(set) => {
            let key = restore_key(
                session.backup_components()?,
                key_parts(set.component.as_ref())?,
            )?;
            session.select_for_restore(&key, set.selected)?;
            empty()
        }
        Call::AddRestoreSubcomponent(add) => {
            let key = restore_key(
                session.backup_components()?,
                key_parts(add.component.as_ref())?,
            )?;
            session.add_restore_subcomponent(
                &key,
                &add.subcomponent_logical_path,
                &add.subcomponent_name,
                add.repair,
            )?;
            empty()
        }
        Call::SetRestoreOptions(set) => {
            let key = restore_key(
                session.backup_components()?,
                key_parts(set.component.as_ref())?,
            )?;
            session.set_restore_options(&key, &set.options)?;
            empty()
        }
        Call::SetAdditionalRestores(set) => {
            let key = restore_key(
                session.backup_components()?,
                key_parts(set.component.as_ref())?,
            )?;
            session.set_additional_restores(&key, set.additional_restores)?;
            empty()
        }
        Call::SetRestoreExtensions(set) => {
            let key = restore_key(
                session.backup_components()?,
                key_parts(set.component.as_ref())?,
            )?;
            let rollforward = match RollforwardType::from_value(set.rollforward_type) {
                Some(RollforwardType::Undefined) => None,
                Some(rollforward_type) => Some(Rollforward {
                    rollforward_type,
                    point: set.rollforward_point,
                }),
                None => {
                    return Err(invalid(format!(
                        "rollforward_type = {} is not a valid VSS value",
                        set.rollforward_type
                    )));
                }
            };
            let extensions = RestoreExtensions {
                authoritative: set.authoritative,
                rollforward,
                restore_name: set.restore_name,
            };
            session.edit_component(&key, |e| e.set_restore_extensions(extensions).map(|_| ()))?;
            empty()
        }
        Call::PreRestore(_) => {
            session.pre_restore().await?;
            empty()
        }
        Call::GatherWriterStatus(_) => Ok(Some(status_payload(&session.gather_writer_status()?))),
        Call::SetFileRestoreStatus(set) => {
            let key = restore_key(
                session.backup_components()?,
                key_parts(set.component.as_ref())?,
            )?;
            let status = enum_value(
                "status",
                FileRestoreStatus::from_value(set.status),
                set.status,
            )?;
            session.set_file_restore_status(&key, status)?;
            empty()
        }
        Call::AddAlternativeLocationMapping(add) => {
            let key = restore_key(
                session.backup_components()?,
                key_parts(add.component.as_ref())?,
            )?;
            let mapping = AlternateLocationMapping {
                source: file_set(add.source.as_ref())?,
                destination: add.destination,
            };
            session.edit_component(&key, |e| {
                let mut used = e.record().alternate_mappings_used().to_vec();
                used.push(mapping);
                e.set_alternate_mappings_used(used).map(|_| ())
            })?;
            empty()
        }
        Call::AddNewTarget(add) => {
            let key = restore_key(
                session.backup_components()?,
                key_parts(add.component.as_ref())?,
            )?;
            let target = shadowcopy_metadata::bcd::NewTarget {
                source: file_set(add.source.as_ref())?,
                alternate_path: add.alternate_path,
            };
            session.edit_component(&key, |e| {
                let mut targets = e.record().new_targets().to_vec();
                targets.push(target);
                e.set_new_targets(targets).map(|_| ())
            })?;
            empty()
        }
        Call::SetRangesFilePath(set) => {
            let key = restore_key(
                session.backup_components()?,
                key_parts(set.component.as_ref())?,
            )?;
            let entry = shadowcopy_metadata::bcd::RangesFileOverride {
                path: set.path,
                filename: set.filename,
                ranges_file: set.ranges_file,
            };
            session.edit_component(&key, |e| {
                let mut overrides = e.record().ranges_file_overrides().to_vec();
                overrides.push(entry);
                e.set_ranges_file_overrides(overrides).map(|_| ())
            })?;
            empty()
        }
        Call::PostRestore(_) => {
            session.post_restore().await?;
            empty()
        }
        Call::GetBackupComponents(_) => Ok(Some(bcd_payload(session.backup_components()?))),
        Call::AbortBackup(_) => {
            session.abort()?;
            empty()
        }
        other => Err(bad_state(&format!(
            "{} is a backup call; this is a restore session",
            call_name(&other)
        ))),
    }
}

/// `response`, or an in-band failure when it would be larger than a message may be
/// (`MAX_MESSAGE_SIZE`): documents from writers (WMDs, records, failure texts) can add up to more,
/// and an answer that cannot be sent would break the requester's stream without saying why.
fn fit(call: &str, response: v1::RequesterResponse) -> v1::RequesterResponse {
    let size = prost::Message::encoded_len(&response);
    if size <= shadowcopy_protocol::MAX_MESSAGE_SIZE {
        return response;
    }
    let largest = match &response.result {
        Some(Payload::WriterMetadata(list)) => list
            .writers
            .iter()
            .max_by_key(|w| w.wmd_json.len())
            .map(|w| {
                format!(
                    "; the largest WMD is writer instance {}'s, {} bytes: leave that writer out \
                     with SetWriterEnabled before GatherWriterMetadata in a new session",
                    w.writer_instance_id,
                    w.wmd_json.len()
                )
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    tracing::warn!(
        call,
        size,
        "the answer is larger than a protocol message may be"
    );
    v1::RequesterResponse {
        request_id: response.request_id,
        status: Some(crate::convert::error_status(
            &codes::E_OUTOFMEMORY,
            &format!(
                "the answer to {call} would be {size} bytes, more than the {} bytes a protocol \
                 message may carry (MAX_MESSAGE_SIZE){largest}",
                shadowcopy_protocol::MAX_MESSAGE_SIZE
            ),
        )),
        result: None,
    }
}

/// Serves one session stream until it ends, then releases the session.
async fn run_session(
    daemon: Arc<Daemon>,
    peer: Peer,
    mut inbound: Streaming<v1::RequesterRequest>,
    outbound: mpsc::Sender<Result<v1::RequesterResponse, Status>>,
) {
    let local_id = shadowcopy_metadata::Guid::new_v4();
    daemon.sessions.lock().expect("sessions lock").insert(
        local_id,
        SessionEntry {
            restore: false,
            peer,
            phase: "opened".into(),
            opened_at: std::time::SystemTime::now(),
        },
    );
    tracing::info!(session = %local_id, uid = peer.uid, pid = ?peer.pid, "requester session opened");
    let mut session = Session::New;
    let stopping = daemon.stopping();
    tokio::pin!(stopping);
    loop {
        let request = tokio::select! {
            () = &mut stopping => {
                let _ = outbound.send(Err(Status::unavailable("shadowcopyd is shutting down"))).await;
                break;
            }
            message = inbound.message() => match message {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(status) => {
                    // A request that cannot be read (larger than MAX_MESSAGE_SIZE, not protobuf)
                    // ends the session; the requester is told why rather than seeing its stream
                    // end without a reason.
                    tracing::info!(session = %local_id, %status, "requester stream failed");
                    let _ = outbound.send(Err(status)).await;
                    break;
                }
            },
            () = outbound.closed() => break,
        };
        // A call added by a later minor version arrives as no call at all: it is E_NOTIMPL
        // (docs/protocol.md §2, §4.5), like a request that sets none.
        let Some(call) = request.call else {
            let status = crate::convert::error_status(
                &codes::E_NOTIMPL,
                &format!(
                    "the request carries no call this server knows (protocol {}); use only the \
                     calls of the minor version Hello reports",
                    shadowcopy_protocol::PROTOCOL_VERSION
                ),
            );
            let _ = outbound
                .send(Ok(v1::RequesterResponse {
                    request_id: request.request_id,
                    status: Some(status),
                    result: None,
                }))
                .await;
            continue;
        };
        let name = call_name(&call);
        if let Some(entry) = daemon
            .sessions
            .lock()
            .expect("sessions lock")
            .get_mut(&local_id)
        {
            entry.phase = name.to_string();
            entry.restore = matches!(session, Session::Restore(_))
                || matches!(call, Call::InitializeForRestore(_));
        }
        tracing::debug!(session = %local_id, call = name, "requester call");
        if matches!(call, Call::Cancel(_)) {
            // Nothing is running between calls: a Cancel then does nothing (ROLE-3).
            let response = v1::RequesterResponse {
                request_id: request.request_id,
                status: Some(shadowcopy_protocol::status_ok()),
                result: Some(Payload::Empty(v1::Empty {})),
            };
            if outbound.send(Ok(response)).await.is_err() {
                break;
            }
            continue;
        }
        // Restores cannot be cancelled (BK-ABORT-5); a backup call can, by dropping it, which makes
        // the coordinator's guards abort any frozen writer.
        let cancellable = matches!(session, Session::Backup(_) | Session::New)
            && !matches!(call, Call::InitializeForRestore(_));
        let result = {
            let running = session.handle(&daemon, call);
            tokio::pin!(running);
            loop {
                tokio::select! {
                    result = &mut running => break Some(result),
                    // A requester that disappears during a long call (DoSnapshotSet) is noticed at
                    // once: the call is dropped and the session is released (BK-END-6).
                    () = outbound.closed() => break None,
                    // So is a daemon that stops: no call outlives SIGTERM.
                    () = &mut stopping => {
                        let _ = outbound.send(Err(Status::unavailable("shadowcopyd is shutting down"))).await;
                        break None;
                    }
                    message = inbound.message() => match message {
                        Ok(Some(v1::RequesterRequest { request_id, call: Some(Call::Cancel(_)) })) => {
                            let answer = v1::RequesterResponse {
                                request_id,
                                status: Some(shadowcopy_protocol::status_ok()),
                                result: Some(Payload::Empty(v1::Empty {})),
                            };
                            let _ = outbound.send(Ok(answer)).await;
                            if cancellable {
                                tracing::info!(session = %local_id, call = name, "call cancelled by the requester");
                                break Some(Err(CoordinatorError::new(
                                    codes::VSS_S_ASYNC_CANCELLED,
                                    format!("{name} was cancelled by the requester (ROLE-3)"),
                                )));
                            }
                        }
                        Ok(Some(other)) => {
                            let status = crate::convert::error_status(
                                &codes::VSS_E_BAD_STATE,
                                &format!("calls on a session run one at a time; {name} is still running"),
                            );
                            let answer = v1::RequesterResponse { request_id: other.request_id, status: Some(status), result: None };
                            let _ = outbound.send(Ok(answer)).await;
                        }
                        Ok(None) | Err(_) => break None,
                    },
                }
            }
        };
        let Some(result) = result else {
            tracing::warn!(session = %local_id, call = name, "the call was dropped: the requester disappeared or the daemon is stopping");
            break;
        };
        if let Err(error) = &result {
            tracing::info!(
                session = %local_id,
                call = name,
                code = error.code().name,
                message = error.message(),
                "call failed"
            );
        }
        let status = status_of(&result);
        let response = fit(
            name,
            v1::RequesterResponse {
                request_id: request.request_id,
                status: Some(status),
                result: result.ok().flatten(),
            },
        );
        if outbound.send(Ok(response)).await.is_err() {
            break;
        }
    }
    tracing::info!(
        session = %local_id,
        "requester session ended; releasing (BK-END-6)"
    );
    session.release().await;
    daemon
        .sessions
        .lock()
        .expect("sessions lock")
        .remove(&local_id);
}

#[tonic::async_trait]
impl v1::requester_server::Requester for RequesterService {
    async fn hello(
        &self,
        request: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloReply>, Status> {
        shadowcopy_protocol::check_hello(request.get_ref())?;
        Ok(Response::new(shadowcopy_protocol::hello_reply(env!(
            "CARGO_PKG_VERSION"
        ))))
    }

    type SessionStream = ReceiverStream<Result<v1::RequesterResponse, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<v1::RequesterRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = self.daemon.authorize(&request, Action::Requester)?;
        // A session gathers writer metadata soon after it opens: the hosted writers must be
        // there by then, also when this requester's connection is what started the daemon.
        self.daemon.hosted_writers_settled().await;
        let inbound = request.into_inner();
        let (outbound, receiver) = mpsc::channel(16);
        tokio::spawn(run_session(
            Arc::clone(&self.daemon),
            peer,
            inbound,
            outbound,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
