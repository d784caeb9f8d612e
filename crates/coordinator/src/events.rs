//! Event helpers shared by backup and restore sessions: Identify for GatherWriterMetadata
//! (ROLE-6, BK-INIT-6), one event with its timeout (CFG-16), Abort (BK-ABORT-3), and applying the
//! records a writer sends back (BCD-7, BCD-8, BCD-11).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use shadowcopy_metadata::bcd::{BackupComponents, Phase, WriterComponents};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::{SnapshotSetId, WriterMetadata};
use tokio::time::Instant;

use crate::coordinator::Shared;
use crate::registry::{Failed, SessionWriter, WriterEntry, deliver};
use crate::writer::{WriterEvent, WriterEventKind, WriterFailure, WriterReply};

/// The outcome of one event: the reply, or the failure (with the reply if the writer sent one).
pub(crate) type EventResult = std::result::Result<WriterReply, Box<Failed>>;

/// Records one writer's outcome of an event: the state it reaches on success (WST-3), or
/// FAILED_AT_<event> with its failure (WST-4). Returns the reply, which a vetoing writer may
/// still have sent with its records.
pub(crate) fn settle(
    writer: &SessionWriter,
    kind: WriterEventKind,
    success: shadowcopy_metadata::enums::WriterState,
    result: EventResult,
) -> Option<WriterReply> {
    match result {
        Ok(reply) => {
            writer.set_state(success);
            Some(reply)
        }
        Err(failed) => {
            let Failed { failure, reply } = *failed;
            writer.fail(kind, failure);
            reply
        }
    }
}

/// Sends Identify to every writer `wanted` accepts and keeps those that answered with a valid
/// WMD of their own class. Identify changes no writer state anywhere (ROLE-6); a writer whose
/// Identify fails is left out of this session's lists (BK-INIT-6).
pub(crate) async fn gather(
    shared: &Shared,
    session: crate::SessionId,
    wanted: impl Fn(&WriterEntry) -> bool,
) -> Vec<Arc<SessionWriter>> {
    let limit = shared.config.event_timeouts.identify;
    let entries: Vec<Arc<WriterEntry>> = shared
        .registry
        .all()
        .into_iter()
        .filter(|entry| wanted(entry))
        .collect();
    let answers = join_all(entries.iter().map(|entry| async move {
        let deadline = Instant::now() + limit;
        deliver(entry, session, WriterEvent::Identify, deadline)
            .await
            .into_result(
                WriterEventKind::Identify,
                limit,
                codes::VSS_E_WRITER_NOT_RESPONDING,
            )
    }))
    .await;
    let mut writers = Vec::new();
    for (entry, answer) in entries.into_iter().zip(answers) {
        let accepted = match answer {
            Ok(reply) => accept_metadata(&entry, reply),
            Err(failed) => Err(failed.failure.message),
        };
        match accepted {
            Ok(metadata) => writers.push(Arc::new(SessionWriter::new(entry, metadata, session))),
            Err(reason) => {
                tracing::warn!(
                    writer = %entry.name(),
                    instance = %entry.id,
                    "Identify failed; the writer is left out of this session (BK-INIT-6): {reason}"
                );
            }
        }
    }
    writers
}

/// Checks a WMD from Identify and stamps the coordinator's instance id into it (ROLE-7, WMD-2).
fn accept_metadata(
    entry: &WriterEntry,
    reply: WriterReply,
) -> std::result::Result<WriterMetadata, String> {
    let Some(mut metadata) = reply.metadata else {
        return Err("the reply carried no writer metadata document".into());
    };
    if reply.components.is_some() {
        tracing::warn!(writer = %entry.name(), "ignored component records sent with Identify (ROLE-6)");
    }
    if metadata.identity.class_id != entry.registration.class_id {
        return Err(format!(
            "the document names class {} but the writer registered class {}",
            metadata.identity.class_id, entry.registration.class_id
        ));
    }
    if metadata.identity.instance_name != entry.registration.instance_name {
        return Err(format!(
            "the document names instance {:?} but the writer registered instance {:?}",
            metadata.identity.instance_name, entry.registration.instance_name
        ));
    }
    metadata.identity.instance_id = entry.id;
    metadata.validate().map_err(|error| error.to_string())?;
    Ok(metadata)
}

/// Sends one event with a time limit; a missed limit is VSS_E_WRITER_NOT_RESPONDING (CFG-16).
pub(crate) async fn send_event(
    writer: &SessionWriter,
    event: WriterEvent,
    limit: Duration,
) -> EventResult {
    let kind = event.kind();
    deliver(&writer.entry, writer.session, event, Instant::now() + limit)
        .await
        .into_result(kind, limit, codes::VSS_E_WRITER_NOT_RESPONDING)
}

/// Sends Abort to a writer whose right to it was already claimed (`claim_abort` or
/// `take_frozen_for_abort`). A writer whose connection is gone aborts itself (architecture §2).
pub(crate) async fn send_abort(
    shared: &Shared,
    writer: &SessionWriter,
    set: Option<SnapshotSetId>,
) {
    if writer.entry.is_gone() {
        return;
    }
    let result = send_event(
        writer,
        WriterEvent::Abort { set },
        shared.config.event_timeouts.abort,
    )
    .await;
    match result {
        Ok(_) => {
            // The Abort handler puts the writer back into normal operation (BK-ABORT-3).
            let state = writer.status().state;
            if !state.is_failed() {
                writer.set_state(shadowcopy_metadata::enums::WriterState::Stable);
            }
        }
        Err(failed) => {
            let failure = failed.failure;
            if writer.status().failure.is_none() {
                writer.note_failure(WriterFailure {
                    message: format!("Abort failed: {}", failure.message),
                    ..failure
                });
            }
        }
    }
}

/// This writer's entry in the BCD, or an empty one when it has no components (volume mode,
/// BK-DISC-5). Each writer sees only its own entry (BCD-8).
pub(crate) fn components_of(bcd: &BackupComponents, writer: &SessionWriter) -> WriterComponents {
    bcd.writer_instance(writer.id())
        .cloned()
        .unwrap_or_else(|| {
            WriterComponents::new(
                writer.entry.registration.class_id,
                writer.id(),
                writer.entry.registration.instance_name.clone(),
            )
        })
}

/// Applies the records a writer sent back with its reply, through the BCD's own access checks
/// (BCD-7, BCD-11). A refused change leaves the BCD untouched and is recorded in the writer's
/// status; the event itself keeps its outcome.
pub(crate) fn apply_components(
    bcd: &mut BackupComponents,
    phase: Phase,
    kind: WriterEventKind,
    writer: &SessionWriter,
    sent: &WriterComponents,
    reply: Option<&WriterReply>,
) {
    let Some(returned) = reply.and_then(|r| r.components.as_ref()) else {
        return;
    };
    if returned.class_id != sent.class_id || returned.instance_id != sent.instance_id {
        writer.note_failure(WriterFailure::new(
            codes::E_ACCESSDENIED,
            format!(
                "refused the records sent back with {kind}: they belong to writer instance {} of \
                 class {}, not to this writer (BCD-8)",
                returned.instance_id, returned.class_id
            ),
        ));
        return;
    }
    if returned == sent {
        return;
    }
    if sent.components().is_empty() && returned.components().is_empty() {
        return;
    }
    match bcd.apply_writer_changes(phase, returned) {
        Ok(applied) => {
            for (component, field) in applied {
                tracing::debug!(writer = %writer.entry.name(), %component, field = field.name(), "writer changed its record in {kind}");
            }
        }
        Err(error) => {
            tracing::warn!(writer = %writer.entry.name(), "refused the records sent back with {kind}: {error}");
            writer.note_failure(WriterFailure::new(
                error.code(),
                format!("refused the records sent back with {kind}: {error}"),
            ));
        }
    }
}
