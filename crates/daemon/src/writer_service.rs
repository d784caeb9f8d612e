//! The Writer service: each connected writer holds one stream, through which the coordinator's
//! events go out and the writer's results come back.
//!
//! The held stream is how both sides learn at once that the other is gone (architecture §2): when
//! the writer's stream ends the writer is unregistered and every event waiting on it fails, and when
//! the daemon dies the writer's SDK sees its stream end and thaws itself.

use std::collections::{HashMap, HashSet};
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
use crate::convert::{bounded, refusal};
use crate::state::{Daemon, WriterConnection};

/// The events sent on one writer's stream whose results are still to come.
#[derive(Default)]
struct Pending {
    /// Events waiting for their result, by event id.
    waiting: HashMap<u64, oneshot::Sender<v1::EventResult>>,
    /// Events the coordinator stopped waiting for (a timeout, a dropped session): their results
    /// may still come and are ignored, once each.
    abandoned: HashSet<u64>,
}

/// What a writer's result refers to.
enum Answered {
    /// An event that waits for it.
    Waiting(oneshot::Sender<v1::EventResult>),
    /// An event the coordinator no longer waits for.
    Late,
    /// Nothing this stream is owed: an event never sent on it, or one already answered.
    Unknown,
}

impl Pending {
    fn take(&mut self, event_id: u64) -> Answered {
        if let Some(sender) = self.waiting.remove(&event_id) {
            Answered::Waiting(sender)
        } else if self.abandoned.remove(&event_id) {
            Answered::Late
        } else {
            Answered::Unknown
        }
    }
}

/// The coordinator's view of one connected writer: events go out on the stream, results come back
/// through `pending`.
struct StreamEndpoint {
    outbound: mpsc::Sender<Result<v1::CoordinatorEvent, Status>>,
    pending: Arc<Mutex<Pending>>,
    next_event: Arc<AtomicU64>,
}

/// Removes a pending entry when a delivery ends, also when the coordinator drops it on a timeout;
/// an entry still waiting then is remembered as abandoned, so that its late result is told apart
/// from a result for an event that never was.
struct PendingGuard<'a> {
    pending: &'a Mutex<Pending>,
    event_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().expect("pending lock");
        if pending.waiting.remove(&self.event_id).is_some() {
            pending.abandoned.insert(self.event_id);
        }
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
        // Bounded: the text is kept in the writer's status and sent to every requester and admin
        // tool that lists writers, in answers that must stay within MAX_MESSAGE_SIZE.
        let message = match (&result.failure, result.application_message.is_empty()) {
            (_, false) => bounded(&result.application_message).into_owned(),
            (Some(status), true) => bounded(&status.message).into_owned(),
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
            .waiting
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
        refusal(
            &e.code(),
            &format!("the Register message's WMD is invalid: {e}"),
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
    // ROLE-7: the registry tells instances of a class apart by this name, and Identify answers are
    // checked against it, so it must be the one the WMD states.
    if let Some(name) = &register.instance_name
        && metadata.identity.instance_name.as_ref() != Some(name)
    {
        return Err(shadowcopy_protocol::grpc_status(
            &codes::VSS_E_INVALID_XML_DOCUMENT,
            format!(
                "Register names instance {name:?} but its WMD names instance {:?}; set the same \
                 persistent instance name in both (ROLE-7)",
                metadata.identity.instance_name
            ),
        ));
    }
    registration.instance_name = metadata.identity.instance_name.clone();
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
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let next_event = Arc::new(AtomicU64::new(1));
        let endpoint = Arc::new(StreamEndpoint {
            outbound: outbound.clone(),
            pending: Arc::clone(&pending),
            next_event: Arc::clone(&next_event),
        });
        let coordinator: &Coordinator = &self.daemon.coordinator;
        let instance = coordinator
            .register_writer(registration.clone(), endpoint)
            .map_err(|e| refusal(&e.code(), e.message()))?;
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
            next_event,
            outbound,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Reads a writer's results until its stream ends, then unregisters it.
///
/// A message that breaks the protocol (docs/protocol.md §5.6) ends the stream with an error that
/// says what was wrong: a second Register, a message with nothing set, a result for an event this
/// stream was never sent or that was already answered, a message that cannot be read. The error
/// is sent without waiting, so a writer that does not read its stream cannot hold this task.
async fn serve_results(
    daemon: Arc<Daemon>,
    instance: WriterInstanceId,
    mut inbound: Streaming<v1::WriterMessage>,
    pending: Arc<Mutex<Pending>>,
    next_event: Arc<AtomicU64>,
    outbound: mpsc::Sender<Result<v1::CoordinatorEvent, Status>>,
) {
    let refuse = |status: Status| {
        tracing::warn!(%instance, %status, "closing the writer's stream");
        let _ = outbound.try_send(Err(status));
    };
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
                let event_id = result.event_id;
                let answered = pending.lock().expect("pending lock").take(event_id);
                match answered {
                    Answered::Waiting(sender) => {
                        let _ = sender.send(result);
                    }
                    Answered::Late => {
                        tracing::debug!(%instance, event = event_id, "late result ignored")
                    }
                    Answered::Unknown => {
                        let what = if event_id == 0
                            || event_id >= next_event.load(Ordering::Relaxed)
                        {
                            "was never sent on this stream (Registered, event 0, is not answered)"
                        } else {
                            "was already answered"
                        };
                        refuse(refusal(
                            &codes::E_INVALIDARG,
                            &format!(
                                "an EventResult for event {event_id}, which {what}; answer each \
                                 event exactly once with its own event_id (docs/protocol.md §5.6)"
                            ),
                        ));
                        break;
                    }
                }
            }
            Ok(Some(v1::WriterMessage {
                message: Some(Message::Register(_)),
            })) => {
                refuse(refusal(
                    &codes::VSS_E_BAD_STATE,
                    "Register came a second time on this stream; a stream registers one writer \
                     instance: reconnect to register again",
                ));
                break;
            }
            Ok(Some(v1::WriterMessage { message: None })) => {
                refuse(refusal(
                    &codes::E_INVALIDARG,
                    "a WriterMessage with nothing set; send an EventResult for each event",
                ));
                break;
            }
            Ok(None) => break,
            Err(status) => {
                // A broken connection, or a message that cannot be read (larger than
                // MAX_MESSAGE_SIZE, not protobuf): the writer is told which, if it still listens.
                tracing::info!(%instance, %status, "writer stream failed");
                let _ = outbound.try_send(Err(status));
                break;
            }
        }
    }
    // Every event still waiting fails as "gone" when its sender is dropped here.
    pending.lock().expect("pending lock").waiting.clear();
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
