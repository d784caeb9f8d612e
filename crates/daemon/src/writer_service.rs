//! The Writer service: each connected writer holds one stream, through which the coordinator's
//! events go out and the writer's results come back.
//!
//! The held stream is how both sides learn at once that the other is gone (architecture §2): when
//! the writer's stream ends the writer is unregistered and every event waiting on it fails, and when
//! the daemon dies the writer's SDK sees its stream end and thaws itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shadowcopy_coordinator::{
    Coordinator, EndpointError, WriterEndpoint, WriterEvent, WriterFailure, WriterRegistration,
    WriterReply,
};
use shadowcopy_metadata::bcd::WriterComponents;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ApplicationLevel, SubscribeMask};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{WriterInstanceId, WriterMetadata};
use shadowcopy_protocol::v1::{self, coordinator_event::Event, writer_message::Message};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::access::Action;
use crate::state::{Daemon, WriterConnection};

/// Events waiting for a writer's result, by event id.
type Pending = Mutex<HashMap<u64, oneshot::Sender<v1::EventResult>>>;

/// The coordinator's view of one connected writer: events go out on the stream, results come back
/// through `pending`.
struct StreamEndpoint {
    outbound: mpsc::Sender<Result<v1::CoordinatorEvent, Status>>,
    pending: Arc<Pending>,
    next_event: AtomicU64,
}

/// Removes a pending entry when a delivery ends, also when the coordinator drops it on a timeout.
struct PendingGuard<'a> {
    pending: &'a Pending,
    event_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .expect("pending lock")
            .remove(&self.event_id);
    }
}

fn components_json(components: &WriterComponents) -> String {
    serde_json::to_string(components).expect("records are JSON")
}

fn event_message(event: &WriterEvent) -> Event {
    let set_text = |set: &Option<shadowcopy_metadata::SnapshotSetId>| {
        set.map(|s| s.to_string()).unwrap_or_default()
    };
    match event {
        WriterEvent::Identify => Event::Identify(v1::IdentifyEvent {}),
        WriterEvent::PrepareForBackup {
            set,
            context,
            backup_state,
            components,
        } => Event::PrepareForBackup(v1::PrepareForBackupEvent {
            component_mode: backup_state.component_mode,
            bootable_system_state: backup_state.bootable_system_state,
            backup_type: backup_state.backup_type.value(),
            partial_file_support: backup_state.partial_file_support,
            context: context.value(),
            set_id: set_text(set),
            components_json: components_json(components),
        }),
        WriterEvent::PrepareForSnapshot { set, volumes } => {
            Event::PrepareForSnapshot(v1::PrepareForSnapshotEvent {
                set_id: set.to_string(),
                volumes: volumes.clone(),
            })
        }
        WriterEvent::Freeze {
            set,
            freeze_timeout,
        } => Event::Freeze(v1::FreezeEvent {
            set_id: set.to_string(),
            deadline_ms: u32::try_from(freeze_timeout.as_millis()).unwrap_or(u32::MAX),
        }),
        WriterEvent::Thaw { set } => Event::Thaw(v1::ThawEvent {
            set_id: set.to_string(),
        }),
        WriterEvent::PostSnapshot {
            set,
            components,
            snapshots,
        } => Event::PostSnapshot(v1::PostSnapshotEvent {
            set_id: set.to_string(),
            components_json: components_json(components),
            snapshots: snapshots
                .iter()
                .map(|s| v1::SnapshotLocation {
                    volume: s.volume.clone(),
                    snapshot_path: s.snapshot_path.clone().unwrap_or_default(),
                })
                .collect(),
            writable: false,
        }),
        WriterEvent::Abort { set } => Event::Abort(v1::AbortEvent {
            set_id: set_text(set),
        }),
        WriterEvent::BackupComplete { set, components } => {
            Event::BackupComplete(v1::BackupCompleteEvent {
                set_id: set.to_string(),
                components_json: components_json(components),
            })
        }
        WriterEvent::BackupShutdown { set } => Event::BackupShutdown(v1::BackupShutdownEvent {
            set_id: set_text(set),
        }),
        WriterEvent::PreRestore {
            components,
            restore_type,
        } => Event::PreRestore(v1::PreRestoreEvent {
            components_json: components_json(components),
            restore_type: restore_type.value(),
        }),
        WriterEvent::PostRestore {
            components,
            restore_type,
        } => Event::PostRestore(v1::PostRestoreEvent {
            components_json: components_json(components),
            restore_type: restore_type.value(),
        }),
    }
}

/// Turns a writer's result into the coordinator's reply; malformed documents are protocol errors.
fn reply_of(result: v1::EventResult) -> Result<WriterReply, EndpointError> {
    let mut reply = WriterReply::ok();
    if !result.success {
        let code = result
            .failure
            .as_ref()
            .and_then(shadowcopy_protocol::error_code_of)
            .copied()
            .unwrap_or(codes::VSS_E_WRITERERROR_NONRETRYABLE);
        let message = match (&result.failure, result.application_message.is_empty()) {
            (_, false) => result.application_message.clone(),
            (Some(status), true) => status.message.clone(),
            (None, true) => "the writer reported a failure without a message".into(),
        };
        reply.failure = Some(WriterFailure {
            code,
            application_code: result.application_code,
            message,
        });
    }
    if let Some(text) = result.wmd_json.filter(|t| !t.is_empty()) {
        let metadata = WriterMetadata::from_json(&text)
            .map_err(|e| EndpointError::Protocol(format!("the writer sent an invalid WMD: {e}")))?;
        reply.metadata = Some(metadata);
    }
    if let Some(text) = result.components_json.filter(|t| !t.is_empty()) {
        let components: WriterComponents = serde_json::from_str(&text).map_err(|e| {
            EndpointError::Protocol(format!("the writer sent unreadable component records: {e}"))
        })?;
        reply.components = Some(components);
    }
    Ok(reply)
}

impl StreamEndpoint {
    /// Sends one event on the writer's stream and waits for its result.
    async fn send(
        &self,
        session_id: String,
        event: WriterEvent,
    ) -> Result<WriterReply, EndpointError> {
        let event_id = self.next_event.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending lock")
            .insert(event_id, sender);
        let _guard = PendingGuard {
            pending: &self.pending,
            event_id,
        };
        let message = v1::CoordinatorEvent {
            event_id,
            session_id,
            event: Some(event_message(&event)),
        };
        self.outbound
            .send(Ok(message))
            .await
            .map_err(|_| EndpointError::Gone)?;
        // The sender is dropped when the writer's stream ends: that is "gone", not a hang.
        let result = receiver.await.map_err(|_| EndpointError::Gone)?;
        reply_of(result)
    }
}

#[async_trait]
impl WriterEndpoint for StreamEndpoint {
    async fn deliver(&self, event: WriterEvent) -> Result<WriterReply, EndpointError> {
        self.send(String::new(), event).await
    }

    /// The writer keeps its per-backup state by session (ROLE-5), so every event names its own.
    async fn deliver_in_session(
        &self,
        session: shadowcopy_coordinator::SessionId,
        event: WriterEvent,
    ) -> Result<WriterReply, EndpointError> {
        self.send(session.to_string(), event).await
    }
}

/// The gRPC Writer service.
#[derive(Clone)]
pub(crate) struct WriterService {
    pub(crate) daemon: Arc<Daemon>,
}

fn registration_of(
    register: &v1::Register,
) -> Result<(WriterRegistration, WriterMetadata), Status> {
    let metadata = WriterMetadata::from_json(&register.wmd_json).map_err(|e| {
        shadowcopy_protocol::grpc_status(
            &e.code(),
            format!("the Register message's WMD is invalid: {e}"),
        )
    })?;
    let mut registration = WriterRegistration::new(
        metadata.identity.class_id,
        metadata.identity.writer_name.clone(),
    );
    // Zero means "the VSS default" for each of these (docs/protocol.md).
    if register.application_level != 0 {
        registration.application_level = ApplicationLevel::from_value(register.application_level)
            .ok_or_else(|| {
            shadowcopy_protocol::grpc_status(
                &codes::E_INVALIDARG,
                format!(
                    "application_level {} is not a VSS application level",
                    register.application_level
                ),
            )
        })?;
    }
    if register.freeze_timeout_ms != 0 {
        registration.freeze_timeout = Duration::from_millis(u64::from(register.freeze_timeout_ms));
    }
    if register.subscribe_mask != 0 {
        registration.subscribe_mask =
            SubscribeMask::from_bits(register.subscribe_mask).map_err(|bits| {
                shadowcopy_protocol::grpc_status(
                    &codes::E_INVALIDARG,
                    format!("subscribe_mask sets unknown bits {bits:#x}"),
                )
            })?;
    }
    registration.instance_name = register
        .instance_name
        .clone()
        .or_else(|| metadata.identity.instance_name.clone());
    Ok((registration, metadata))
}

#[tonic::async_trait]
impl v1::writer_server::Writer for WriterService {
    async fn hello(
        &self,
        request: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloReply>, Status> {
        shadowcopy_protocol::check_hello(request.get_ref())?;
        Ok(Response::new(shadowcopy_protocol::hello_reply(env!(
            "CARGO_PKG_VERSION"
        ))))
    }

    type ConnectStream = ReceiverStream<Result<v1::CoordinatorEvent, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<v1::WriterMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = self.daemon.authorize(&request, Action::Writer)?;
        let mut inbound = request.into_inner();
        let register = match inbound.message().await? {
            Some(v1::WriterMessage {
                message: Some(Message::Register(register)),
            }) => register,
            _ => {
                return Err(shadowcopy_protocol::grpc_status(
                    &codes::VSS_E_BAD_STATE,
                    "the first message on a writer stream must be Register",
                ));
            }
        };
        let (registration, metadata) = registration_of(&register)?;
        let (outbound, receiver) = mpsc::channel(64);
        let pending: Arc<Pending> = Arc::default();
        let endpoint = Arc::new(StreamEndpoint {
            outbound: outbound.clone(),
            pending: Arc::clone(&pending),
            next_event: AtomicU64::new(1),
        });
        let coordinator: &Coordinator = &self.daemon.coordinator;
        let instance = coordinator
            .register_writer(registration.clone(), endpoint)
            .map_err(|e| shadowcopy_protocol::grpc_status(&e.code(), e.message()))?;
        tracing::info!(
            writer = %registration.writer_name,
            class = %registration.class_id,
            instance = %instance,
            uid = peer.uid,
            pid = ?peer.pid,
            "writer registered"
        );
        self.daemon
            .connections
            .lock()
            .expect("connections lock")
            .insert(
                instance,
                WriterConnection {
                    registration,
                    metadata,
                    peer,
                    registered_at: std::time::SystemTime::now(),
                },
            );
        let registered = v1::CoordinatorEvent {
            event_id: 0,
            session_id: String::new(),
            event: Some(Event::Registered(v1::Registered {
                writer_instance_id: instance.to_string(),
            })),
        };
        outbound
            .send(Ok(registered))
            .await
            .map_err(|_| Status::unavailable("the writer closed its stream during registration"))?;
        tokio::spawn(serve_results(
            Arc::clone(&self.daemon),
            instance,
            inbound,
            pending,
            outbound,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Reads a writer's results until its stream ends, then unregisters it.
async fn serve_results(
    daemon: Arc<Daemon>,
    instance: WriterInstanceId,
    mut inbound: Streaming<v1::WriterMessage>,
    pending: Arc<Pending>,
    outbound: mpsc::Sender<Result<v1::CoordinatorEvent, Status>>,
) {
    let stopping = daemon.writers_stopping();
    tokio::pin!(stopping);
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            () = &mut stopping => {
                // Ending the stream makes the writer's SDK thaw at once if it is frozen.
                let _ = outbound.send(Err(Status::unavailable("shadowcopyd is shutting down"))).await;
                break;
            }
        };
        match message {
            Ok(Some(v1::WriterMessage {
                message: Some(Message::EventResult(result)),
            })) => {
                let waiting = pending
                    .lock()
                    .expect("pending lock")
                    .remove(&result.event_id);
                match waiting {
                    Some(sender) => {
                        let _ = sender.send(result);
                    }
                    None => {
                        tracing::debug!(%instance, event = result.event_id, "late result ignored")
                    }
                }
            }
            Ok(Some(other)) => {
                tracing::warn!(%instance, ?other, "unexpected message from writer; closing its stream");
                break;
            }
            Ok(None) => break,
            Err(status) => {
                tracing::info!(%instance, %status, "writer stream failed");
                break;
            }
        }
    }
    // Every event still waiting fails as "gone" when its sender is dropped here.
    pending.lock().expect("pending lock").clear();
    daemon.coordinator.unregister_writer(instance);
    daemon
        .connections
        .lock()
        .expect("connections lock")
        .remove(&instance);
    tracing::info!(%instance, "writer disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_code_and_message() {
        let result = v1::EventResult {
            event_id: 3,
            success: false,
            failure: Some(v1::Status::from_code(
                &codes::VSS_E_WRITERERROR_RETRYABLE,
                "busy",
            )),
            application_code: 7,
            application_message: "checkpoint running".into(),
            wmd_json: None,
            components_json: None,
        };
        let reply = reply_of(result).unwrap();
        let failure = reply.failure.unwrap();
        assert_eq!(failure.code, codes::VSS_E_WRITERERROR_RETRYABLE);
        assert_eq!(failure.application_code, 7);
        assert_eq!(failure.message, "checkpoint running");
    }

    #[test]
    fn malformed_documents_are_protocol_errors() {
        let result = v1::EventResult {
            event_id: 1,
            success: true,
            wmd_json: Some("{\"schema_version\": 1}".into()),
            ..v1::EventResult::default()
        };
        assert!(matches!(reply_of(result), Err(EndpointError::Protocol(_))));
    }
}
