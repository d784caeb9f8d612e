//! The writer registry (one entry per connected writer), each session's view of a writer, and the
//! one function that delivers an event with a deadline.
//!
//! A writer's state is kept per session (WST-2: status read by another session can show leftovers,
//! and Identify from one session must not disturb another, ROLE-6); the registry also keeps the
//! last state any session reported, for admin listings (`vssadmin list writers`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::WriterState;
use shadowcopy_metadata::{WriterInstanceId, WriterMetadata};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{CoordinatorError, Result};
use crate::writer::{
    EndpointError, WriterEndpoint, WriterEvent, WriterEventKind, WriterFailure, WriterRegistration,
    WriterReply, WriterStatus,
};

/// Locks a mutex, ignoring poisoning: the data behind these locks stays consistent at every await
/// point, and a panic elsewhere must not stop Thaw or Abort from being sent (architecture §8).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One connected writer.
pub(crate) struct WriterEntry {
    pub(crate) id: WriterInstanceId,
    pub(crate) registration: WriterRegistration,
    /// The declared freeze timeout lowered by the config (CFG-9).
    pub(crate) freeze_timeout: Duration,
    pub(crate) endpoint: Arc<dyn WriterEndpoint>,
    /// Becomes true when the connection ends; in-flight deliveries then fail at once.
    gone: watch::Sender<bool>,
    /// The last state and failure any session reported, for admin listings.
    last: Mutex<(WriterState, Option<WriterFailure>)>,
}

impl WriterEntry {
    pub(crate) fn is_gone(&self) -> bool {
        *self.gone.borrow()
    }

    fn mark_gone(&self) {
        self.gone.send_replace(true);
    }

    pub(crate) fn name(&self) -> &str {
        &self.registration.writer_name
    }

    fn record_last(&self, state: WriterState, failure: Option<WriterFailure>) {
        *lock(&self.last) = (state, failure);
    }

    pub(crate) fn status(&self) -> WriterStatus {
        let (state, failure) = lock(&self.last).clone();
        WriterStatus {
            instance_id: self.id,
            class_id: self.registration.class_id,
            writer_name: self.registration.writer_name.clone(),
            instance_name: self.registration.instance_name.clone(),
            state,
            failure,
        }
    }
}

/// Every connected writer, in registration order.
#[derive(Default)]
pub(crate) struct Registry {
    writers: Mutex<Vec<Arc<WriterEntry>>>,
}

impl Registry {
    /// Adds a writer; refuses a second live instance with the same class and instance name.
    pub(crate) fn register(
        &self,
        registration: WriterRegistration,
        freeze_timeout: Duration,
        endpoint: Arc<dyn WriterEndpoint>,
    ) -> Result<WriterInstanceId> {
        if registration.freeze_timeout.is_zero() {
            return Err(CoordinatorError::new(
                codes::E_INVALIDARG,
                format!(
                    "writer {:?} declared a freeze timeout of 0 ms; it must be positive (ROLE-8)",
                    registration.writer_name
                ),
            ));
        }
        let mut writers = lock(&self.writers);
        if let Some(existing) = writers.iter().find(|w| {
            w.registration.class_id == registration.class_id
                && w.registration.instance_name == registration.instance_name
        }) {
            return Err(CoordinatorError::new(
                codes::VSS_E_WRITER_ALREADY_SUBSCRIBED,
                format!(
                    "writer {:?} (class {}, instance name {:?}) is already registered as instance {}; \
                     every instance of a class needs its own persistent instance name (ROLE-7)",
                    registration.writer_name,
                    registration.class_id,
                    registration.instance_name,
                    existing.id
                ),
            ));
        }
        let id = WriterInstanceId::new_random();
        writers.push(Arc::new(WriterEntry {
            id,
            registration,
            freeze_timeout,
            endpoint,
            gone: watch::Sender::new(false),
            last: Mutex::new((WriterState::Stable, None)),
        }));
        Ok(id)
    }

    /// Removes a writer and fails its in-flight deliveries (WST-1, RST-END-3).
    pub(crate) fn unregister(&self, id: WriterInstanceId) -> Option<Arc<WriterEntry>> {
        let mut writers = lock(&self.writers);
        let index = writers.iter().position(|w| w.id == id)?;
        let entry = writers.remove(index);
        entry.mark_gone();
        Some(entry)
    }

    pub(crate) fn all(&self) -> Vec<Arc<WriterEntry>> {
        lock(&self.writers).clone()
    }
}

/// A failed event: the failure, and the reply if the writer sent one (a veto can carry records).
pub(crate) struct Failed {
    pub(crate) failure: WriterFailure,
    pub(crate) reply: Option<WriterReply>,
}

/// The result of delivering one event.
pub(crate) enum Delivery {
    /// The writer answered (success or veto).
    Replied(Box<WriterReply>),
    /// No answer before the deadline.
    TimedOut,
    /// The connection is gone.
    Gone,
    /// The answer could not be understood.
    Protocol(String),
}

impl Delivery {
    /// The failure this delivery means, or the reply; a timeout becomes `timeout_code`.
    pub(crate) fn into_result(
        self,
        kind: WriterEventKind,
        limit: Duration,
        timeout_code: shadowcopy_metadata::ErrorCode,
    ) -> std::result::Result<WriterReply, Box<Failed>> {
        let failed = |failure| {
            Err(Box::new(Failed {
                failure,
                reply: None,
            }))
        };
        match self {
            Delivery::Replied(reply) => match reply.failure.clone() {
                None => Ok(*reply),
                Some(failure) => Err(Box::new(Failed {
                    failure,
                    reply: Some(*reply),
                })),
            },
            Delivery::TimedOut => failed(WriterFailure::new(
                timeout_code,
                format!("no answer to {kind} within {} ms", limit.as_millis()),
            )),
            Delivery::Gone => failed(WriterFailure::new(
                codes::VSS_E_WRITER_NOT_RESPONDING,
                format!("the writer's connection was lost during {kind}"),
            )),
            Delivery::Protocol(message) => failed(WriterFailure::new(
                codes::VSS_E_UNEXPECTED_WRITER_ERROR,
                format!("unreadable answer to {kind}: {message}"),
            )),
        }
    }
}

/// Sends one event and waits for the reply until `deadline`, or until the writer's connection ends.
pub(crate) async fn deliver(
    entry: &WriterEntry,
    session: crate::SessionId,
    event: WriterEvent,
    deadline: Instant,
) -> Delivery {
    let kind = event.kind();
    let span = tracing::info_span!(
        "writer_event",
        writer = %entry.name(),
        instance = %entry.id,
        event = kind.name()
    );
    async move {
        if entry.is_gone() {
            tracing::warn!("not delivered: the writer's connection is gone");
            return Delivery::Gone;
        }
        let mut gone = entry.gone.subscribe();
        let outcome = tokio::select! {
            result = tokio::time::timeout_at(deadline, entry.endpoint.deliver_in_session(session, event)) => match result {
                Ok(Ok(reply)) => Delivery::Replied(Box::new(reply)),
                Ok(Err(EndpointError::Gone)) => Delivery::Gone,
                Ok(Err(EndpointError::Protocol(message))) => Delivery::Protocol(message),
                Err(_) => Delivery::TimedOut,
            },
            _ = gone.wait_for(|gone| *gone) => Delivery::Gone,
        };
        match &outcome {
            Delivery::Replied(reply) => match &reply.failure {
                None => tracing::debug!("succeeded"),
                Some(failure) => tracing::warn!(
                    code = failure.code.name,
                    application_code = failure.application_code,
                    "writer reported failure: {}",
                    failure.message
                ),
            },
            Delivery::TimedOut => tracing::warn!("no answer before the deadline"),
            Delivery::Gone => tracing::warn!("the writer's connection ended"),
            Delivery::Protocol(message) => tracing::warn!("unreadable answer: {message}"),
        }
        outcome
    }
    .instrument(span)
    .await
}

/// Where a writer stands in the freeze of the set being created (the thaw invariant, architecture §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FreezeSlot {
    /// Freeze was not sent.
    Idle,
    /// Freeze was sent; neither Thaw nor Abort yet.
    Frozen,
    /// Thaw or Abort was sent (or the writer is gone).
    Released,
}

/// What a session knows of one writer.
pub(crate) struct SessionFlags {
    pub(crate) state: WriterState,
    pub(crate) failure: Option<WriterFailure>,
    /// The writer got an event after Identify in this session (PrepareForBackup or PreRestore).
    pub(crate) participant: bool,
    pub(crate) freeze: FreezeSlot,
    /// Abort was sent (BK-ABORT-3: no more events for the operation).
    pub(crate) aborted: bool,
    /// The writer handled PostSnapshot (BK-ABORT-4: it gets no Abort).
    pub(crate) post_snapshot_done: bool,
}

/// One writer as one session sees it: its WMD from this session's Identify and its state here.
pub(crate) struct SessionWriter {
    pub(crate) entry: Arc<WriterEntry>,
    pub(crate) metadata: WriterMetadata,
    /// The session this writer takes part in; every event carries it (ROLE-5).
    pub(crate) session: crate::SessionId,
    flags: Mutex<SessionFlags>,
}

impl SessionWriter {
    pub(crate) fn new(
        entry: Arc<WriterEntry>,
        metadata: WriterMetadata,
        session: crate::SessionId,
    ) -> Self {
        SessionWriter {
            entry,
            metadata,
            session,
            flags: Mutex::new(SessionFlags {
                state: WriterState::Stable,
                failure: None,
                participant: false,
                freeze: FreezeSlot::Idle,
                aborted: false,
                post_snapshot_done: false,
            }),
        }
    }

    pub(crate) fn flags(&self) -> MutexGuard<'_, SessionFlags> {
        lock(&self.flags)
    }

    pub(crate) fn id(&self) -> WriterInstanceId {
        self.entry.id
    }

    pub(crate) fn status(&self) -> WriterStatus {
        let flags = self.flags();
        WriterStatus {
            instance_id: self.entry.id,
            class_id: self.entry.registration.class_id,
            writer_name: self.entry.registration.writer_name.clone(),
            instance_name: self.entry.registration.instance_name.clone(),
            state: flags.state,
            failure: flags.failure.clone(),
        }
    }

    /// Sets the state after a step (WST-3) and publishes it to the registry for admin listings.
    pub(crate) fn set_state(&self, state: WriterState) {
        let mut flags = self.flags();
        flags.state = state;
        self.entry.record_last(state, flags.failure.clone());
    }

    /// Sets the state only while the writer is still in its freeze slot (a Freeze reply that
    /// arrives as the window closes must not overwrite FAILED_AT_FREEZE).
    pub(crate) fn set_state_if_frozen(&self, state: WriterState) {
        let mut flags = self.flags();
        if flags.freeze == FreezeSlot::Frozen {
            flags.state = state;
            self.entry.record_last(state, flags.failure.clone());
        }
    }

    /// Records a failure of `kind`: state FAILED_AT_<kind> (WST-4) with the failure.
    pub(crate) fn fail(&self, kind: WriterEventKind, failure: WriterFailure) {
        let mut flags = self.flags();
        if let Some(state) = kind.failed_state() {
            flags.state = state;
        }
        tracing::warn!(
            writer = %self.entry.name(),
            instance = %self.entry.id,
            state = flags.state.name(),
            code = failure.code.name,
            "writer failed at {kind}: {}",
            failure.message
        );
        flags.failure = Some(failure);
        self.entry.record_last(flags.state, flags.failure.clone());
    }

    /// Records a failure without changing the state (a refused BCD edit, a failed Abort).
    pub(crate) fn note_failure(&self, failure: WriterFailure) {
        let mut flags = self.flags();
        flags.failure = Some(failure);
        self.entry.record_last(flags.state, flags.failure.clone());
    }

    /// Marks Freeze as sent: from now on the writer must get Thaw or Abort.
    pub(crate) fn mark_frozen(&self) {
        self.flags().freeze = FreezeSlot::Frozen;
    }

    /// Takes the writer out of the frozen slot; true for exactly one caller, who must then send
    /// Thaw or Abort. Everything that ends a freeze goes through here, so a writer is never sent
    /// both, nor neither.
    pub(crate) fn take_frozen(&self) -> bool {
        let mut flags = self.flags();
        if flags.freeze == FreezeSlot::Frozen {
            flags.freeze = FreezeSlot::Released;
            true
        } else {
            false
        }
    }

    /// Like [`Self::take_frozen`], and on success records the failure that ends the freeze
    /// (FAILED_AT_FREEZE) and marks Abort as sent, in one step.
    pub(crate) fn take_frozen_for_abort(&self, failure: WriterFailure) -> bool {
        {
            let mut flags = self.flags();
            if flags.freeze != FreezeSlot::Frozen {
                return false;
            }
            flags.freeze = FreezeSlot::Released;
            flags.aborted = true;
        }
        self.fail(WriterEventKind::Freeze, failure);
        true
    }

    /// Claims the right to send Abort: false if it was sent already or the writer handled
    /// PostSnapshot (BK-ABORT-3, BK-ABORT-4). A frozen writer leaves its slot.
    pub(crate) fn claim_abort(&self) -> bool {
        let mut flags = self.flags();
        if flags.aborted || flags.post_snapshot_done {
            return false;
        }
        flags.aborted = true;
        if flags.freeze == FreezeSlot::Frozen {
            flags.freeze = FreezeSlot::Released;
        }
        true
    }
}
