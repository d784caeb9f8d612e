//! The event loop of one registered stream: it answers every event with the writer's handler, runs
//! the freeze deadline (BK-SNAP-5) and thaws the writer itself when the coordinator goes away
//! (architecture §2).
//!
//! One task, the *loop*, owns all state. Every handler runs on a task of its own, so that the loop
//! keeps reading the stream, watching the freeze deadline and noticing a lost coordinator while a
//! handler runs (a handler that blocks its thread cannot stop the loop on a multi-threaded
//! runtime). Handlers still run one at a time in event order (ROLE-5): the loop starts the next
//! only when the previous one has finished. Aborts are the exception the protocol makes: an Abort
//! may arrive while another event is being handled (writer.proto `AbortEvent`), so aborts have a
//! queue of their own and run next to the current handler, one abort at a time. An abort of a
//! session first cancels that session's backup handler, so that a Freeze that completes late can
//! never leave the writer frozen after its Abort (architecture §8: a thaw is never skipped).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shadowcopy_metadata::bcd::{BackupState, WriterComponents};
use shadowcopy_metadata::enums::{BackupType, RestoreType, SnapshotContext};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{SnapshotSetId, WriterInstanceId, WriterMetadata};
use shadowcopy_protocol::v1::coordinator_event::Event;
use shadowcopy_protocol::v1::writer_message::Message;
use shadowcopy_protocol::v1::{self, CoordinatorEvent, EventResult, WriterMessage};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinError};
use tokio::time::Instant;
use tracing::{Instrument, Span};

use crate::context::{AbortCause, EventContext, EventKind, SnapshotLocation};
use crate::failure::{HandlerResult, WriterFailure};
use crate::options::WriterOptions;
use crate::runtime::{Connection, Shutdown, apply_instance_name};
use crate::writer::Writer;

/// The protocol name of an event, for messages.
pub(crate) fn event_name(event: Option<&Event>) -> &'static str {
    match event {
        None => "an empty or unknown event",
        Some(event) => kind_of(event).map_or("Registered", EventKind::name),
    }
}

/// The handler kind of an event; `None` for Registered, which no handler answers.
fn kind_of(event: &Event) -> Option<EventKind> {
    Some(match event {
        Event::Registered(_) => return None,
        Event::Identify(_) => EventKind::Identify,
        Event::PrepareForBackup(_) => EventKind::PrepareForBackup,
        Event::PrepareForSnapshot(_) => EventKind::PrepareForSnapshot,
        Event::Freeze(_) => EventKind::Freeze,
        Event::Thaw(_) => EventKind::Thaw,
        Event::PostSnapshot(_) => EventKind::PostSnapshot,
        Event::Abort(_) => EventKind::Abort,
        Event::BackupComplete(_) => EventKind::BackupComplete,
        Event::BackupShutdown(_) => EventKind::BackupShutdown,
        Event::PreRestore(_) => EventKind::PreRestore,
        Event::PostRestore(_) => EventKind::PostRestore,
    })
}

/// How a served stream ended.
pub(crate) enum End {
    /// The hosting process asked the writer to stop.
    Shutdown,
    /// The stream ended or broke.
    Gone(String),
}

/// What the SDK remembers about one requester session (ROLE-5), keyed by session id.
#[derive(Debug, Default)]
struct Session {
    set_id: Option<SnapshotSetId>,
    backup_state: Option<BackupState>,
    snapshot_context: Option<SnapshotContext>,
    volumes: Vec<PathBuf>,
    snapshots: Vec<SnapshotLocation>,
    snapshots_writable: bool,
    restore_type: Option<RestoreType>,
    /// BackupComplete was handled (BK-END-5).
    backup_completed: bool,
    /// Between PrepareForBackup and the end of PostSnapshot, Abort or BackupShutdown: the writer
    /// may hold per-backup state that an abort must undo when the coordinator goes away
    /// (BK-ABORT-2, BK-ABORT-4).
    in_backup: bool,
    /// Freeze arrived and neither Thaw nor Abort has arrived since.
    freeze_open: bool,
    /// When the writer aborts itself unless Thaw or Abort arrives first (BK-SNAP-5).
    deadline: Option<Instant>,
    /// The freeze window that `deadline` enforces, for the failure message.
    window: Duration,
    /// The failure the next Thaw must report because the SDK already aborted (BK-SNAP-5).
    thaw_failure: Option<WriterFailure>,
}

/// An event waiting for its turn (ROLE-5).
struct Pending {
    event_id: u64,
    session: String,
    kind: EventKind,
    event: Event,
    received: Instant,
}

/// The handler that is running.
struct Current {
    job: u64,
    event_id: u64,
    session: String,
    kind: EventKind,
    received: Instant,
    /// Freeze only: the event's own deadline, counted from `received`.
    freeze_deadline: Option<Duration>,
    abort: AbortHandle,
    /// An abort of this session asked the handler to stop.
    cancelled: bool,
    span: Span,
}

/// A request to run `on_abort` for a session.
struct AbortRequest {
    session: String,
    cause: AbortCause,
    reply: AbortReply,
}

/// What to send when an abort has run.
enum AbortReply {
    /// Answer this Abort event with the handler's result.
    Event(u64),
    /// Send this answer of a failed Freeze or Thaw, held back until the abort ran (BK-SNAP-7).
    Deferred(Box<WriterMessage>),
    /// Nothing: the SDK started the abort itself.
    Nothing,
}

/// The abort that is running.
struct RunningAbort {
    job: u64,
    request: AbortRequest,
    span: Span,
}

/// A finished handler or abort task.
struct Done {
    job: u64,
    result: Result<HandlerOutput, JoinError>,
}

/// What a handler task hands back.
struct HandlerOutput {
    result: HandlerResult,
    /// A failure recorded with [`EventContext::record_failure`].
    recorded: Option<WriterFailure>,
    /// The component records, when the handler changed them.
    changed: Option<WriterComponents>,
    /// Identify's WMD.
    wmd: Option<WriterMetadata>,
}

impl HandlerOutput {
    fn failed(failure: WriterFailure) -> Self {
        HandlerOutput {
            result: Err(failure),
            recorded: None,
            changed: None,
            wmd: None,
        }
    }
}

/// What a handler task is given besides its context.
enum Input {
    /// No component records.
    Plain,
    /// Records the handler may edit (BCD-7 windows).
    Editable(WriterComponents),
    /// Records the handler may only read (BackupComplete, BCD-7).
    ReadOnly(WriterComponents),
}

/// The loop's state for one registered stream.
pub(crate) struct Server<W: Writer> {
    writer: Arc<W>,
    name: String,
    instance_id: WriterInstanceId,
    options: WriterOptions,
    /// The registered WMD, with the assigned instance id, to check Identify against (ROLE-6).
    wmd: WriterMetadata,
    replies: mpsc::UnboundedSender<WriterMessage>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: Option<mpsc::UnboundedReceiver<Done>>,
    sessions: HashMap<String, Session>,
    queue: VecDeque<Pending>,
    current: Option<Current>,
    aborts: VecDeque<AbortRequest>,
    running_abort: Option<RunningAbort>,
    closing: Option<End>,
    next_job: u64,
}

impl<W: Writer> Server<W> {
    pub(crate) fn new(
        writer: Arc<W>,
        options: &WriterOptions,
        mut wmd: WriterMetadata,
        connection: &Connection,
    ) -> Self {
        wmd.identity.instance_id = connection.instance_id;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Server {
            writer,
            name: wmd.identity.writer_name.clone(),
            instance_id: connection.instance_id,
            options: options.clone(),
            wmd,
            replies: connection.replies.clone(),
            done_tx,
            done_rx: Some(done_rx),
            sessions: HashMap::new(),
            queue: VecDeque::new(),
            current: None,
            aborts: VecDeque::new(),
            running_abort: None,
            closing: None,
            next_job: 0,
        }
    }

    /// Serves the stream until it ends or `shutdown` fires, and until every handler and abort
    /// that the end started has finished.
    pub(crate) async fn serve(
        mut self,
        mut connection: Connection,
        shutdown: &mut Shutdown,
    ) -> End {
        let mut done_rx = self.done_rx.take().expect("serve runs once");
        loop {
            self.pump();
            if self.closing.is_some()
                && self.current.is_none()
                && self.running_abort.is_none()
                && self.aborts.is_empty()
            {
                return self.closing.take().unwrap_or(End::Shutdown);
            }
            let deadline = self.sessions.values().filter_map(|s| s.deadline).min();
            let open = self.closing.is_none();
            tokio::select! {
                biased;
                Some(done) = done_rx.recv() => self.on_done(done),
                () = &mut *shutdown, if open => {
                    tracing::info!("shutting down");
                    self.begin_close(End::Shutdown);
                }
                message = connection.events.message(), if open => match message {
                    Ok(Some(event)) => self.on_event(event),
                    Ok(None) => self.begin_close(End::Gone(
                        "shadowcopyd ended the event stream".into(),
                    )),
                    Err(status) => self.begin_close(End::Gone(format!(
                        "the event stream broke: {status}"
                    ))),
                },
                () = wait_until(deadline) => self.on_deadline(),
            }
        }
    }

    fn job(&mut self) -> u64 {
        self.next_job += 1;
        self.next_job
    }

    /// Sends one message; a closed stream means the coordinator is gone.
    fn send(&mut self, message: WriterMessage) {
        if self.replies.send(message).is_err() && self.closing.is_none() {
            self.begin_close(End::Gone("the stream to shadowcopyd closed".into()));
        }
    }

    /// Takes in one event: remembers what it says about its session, then queues it, or starts the
    /// abort at once for Abort.
    fn on_event(&mut self, message: CoordinatorEvent) {
        let CoordinatorEvent {
            event_id,
            session_id,
            event,
        } = message;
        let Some(event) = event else {
            // A newer coordinator may send events this SDK does not know; VSS handlers succeed by
            // default, so the answer is success.
            tracing::warn!(
                event_id,
                "answering an event of an unknown kind with success"
            );
            self.send(reply(event_id, &Ok(()), None));
            return;
        };
        let Some(kind) = kind_of(&event) else {
            tracing::warn!(event_id, "ignoring a second Registered");
            return;
        };
        let received = Instant::now();
        if kind != EventKind::Identify {
            self.note(&session_id, &event);
        }
        if kind == EventKind::Abort {
            tracing::info!(event_id, session = %session_id, "Abort arrived");
            self.request_abort(
                session_id,
                AbortCause::Requested,
                AbortReply::Event(event_id),
            );
        } else {
            self.queue.push_back(Pending {
                event_id,
                session: session_id,
                kind,
                event,
                received,
            });
        }
    }

    /// Updates the session from an event as it arrives. Thaw and Abort stop the freeze timer on
    /// arrival: BK-SNAP-5 asks whether they *arrived* in time, not whether their turn came.
    fn note(&mut self, key: &str, event: &Event) {
        let session = self.sessions.entry(key.to_owned()).or_default();
        let set = |session: &mut Session, id: &str| {
            if let Some(id) = parse_set(id) {
                session.set_id = Some(id);
            }
        };
        match event {
            Event::PrepareForBackup(e) => {
                set(session, &e.set_id);
                session.backup_state = Some(BackupState {
                    component_mode: e.component_mode,
                    bootable_system_state: e.bootable_system_state,
                    backup_type: BackupType::from_value(e.backup_type)
                        .unwrap_or(BackupType::Undefined),
                    partial_file_support: e.partial_file_support,
                });
                session.snapshot_context = SnapshotContext::from_value(e.context);
                session.in_backup = true;
                session.backup_completed = false;
            }
            Event::PrepareForSnapshot(e) => {
                set(session, &e.set_id);
                session.volumes = e.volumes.iter().map(PathBuf::from).collect();
                session.in_backup = true;
            }
            Event::Freeze(e) => {
                set(session, &e.set_id);
                session.in_backup = true;
                session.freeze_open = true;
                session.deadline = None;
                session.thaw_failure = None;
            }
            Event::Thaw(e) => {
                set(session, &e.set_id);
                session.freeze_open = false;
                session.deadline = None;
            }
            Event::PostSnapshot(e) => {
                set(session, &e.set_id);
                session.snapshots = e
                    .snapshots
                    .iter()
                    .map(|s| SnapshotLocation {
                        volume: PathBuf::from(&s.volume),
                        snapshot_path: PathBuf::from(&s.snapshot_path),
                    })
                    .collect();
                session.snapshots_writable = e.writable;
            }
            Event::Abort(e) => {
                set(session, &e.set_id);
                session.freeze_open = false;
                session.deadline = None;
            }
            Event::BackupComplete(e) => set(session, &e.set_id),
            Event::BackupShutdown(e) => set(session, &e.set_id),
            Event::PreRestore(e) => {
                session.restore_type = RestoreType::from_value(e.restore_type);
            }
            Event::PostRestore(e) => {
                session.restore_type = RestoreType::from_value(e.restore_type);
            }
            Event::Registered(_) | Event::Identify(_) => {}
        }
    }

    /// Queues an abort of `session`. Its freeze timer stops: the abort is what the timer is for.
    fn request_abort(&mut self, session: String, cause: AbortCause, reply: AbortReply) {
        if let Some(state) = self.sessions.get_mut(&session) {
            state.deadline = None;
        }
        self.aborts.push_back(AbortRequest {
            session,
            cause,
            reply,
        });
    }

    /// Starts whatever may start now: the next abort (after cancelling the session's backup
    /// handler), then the next event, unless an abort of its session is still due, so that for
    /// example a Thaw is answered only after the abort the freeze timer started (BK-SNAP-5).
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            if self.running_abort.is_none()
                && let Some(request) = self.aborts.front()
            {
                match &mut self.current {
                    Some(current)
                        if current.session == request.session
                            && current.kind.cancelled_by_abort() =>
                    {
                        if !current.cancelled {
                            current.cancelled = true;
                            current.abort.abort();
                            current.span.in_scope(|| {
                                tracing::info!("cancelling the handler: its session is aborted");
                            });
                        }
                    }
                    _ => {
                        let request = self.aborts.pop_front().expect("checked above");
                        self.start_abort(request);
                        progressed = true;
                    }
                }
            }
            if self.current.is_none()
                && self.closing.is_none()
                && let Some(next) = self.queue.front()
            {
                let session = &next.session;
                let aborting = self
                    .running_abort
                    .as_ref()
                    .is_some_and(|running| &running.request.session == session)
                    || self
                        .aborts
                        .iter()
                        .any(|request| &request.session == session);
                if !aborting {
                    let next = self.queue.pop_front().expect("checked above");
                    self.start_event(next);
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// A context for `kind` in `session`, filled from what the session's events said.
    fn context(&self, kind: EventKind, session: &str, event_id: u64) -> EventContext {
        let mut ctx = EventContext::new(kind, self.name.clone(), self.instance_id);
        ctx.event_id = event_id;
        ctx.session_id = (!session.is_empty()).then(|| session.to_owned());
        if let Some(state) = self.sessions.get(session) {
            ctx.set_id = state.set_id;
            ctx.backup_state = state.backup_state;
            ctx.snapshot_context = state.snapshot_context;
            ctx.volumes = state.volumes.clone();
            ctx.snapshots = state.snapshots.clone();
            ctx.snapshots_writable = state.snapshots_writable;
            ctx.restore_type = state.restore_type;
            ctx.backup_completed = state.backup_completed;
        }
        ctx
    }

    /// The tracing span of one event (or SDK-started abort): writer, event, session and set.
    fn span(&self, kind: EventKind, event_id: u64, ctx: &EventContext) -> Span {
        let set = ctx.set_id.map(|id| id.to_string()).unwrap_or_default();
        tracing::info_span!(
            "event",
            writer = %self.name,
            event = kind.name(),
            event_id,
            session = ctx.session_id().unwrap_or(""),
            set = %set,
        )
    }

    /// Starts the handler of one event, or answers it at once when no handler may run.
    fn start_event(&mut self, pending: Pending) {
        let Pending {
            event_id,
            session,
            kind,
            event,
            received,
        } = pending;
        let ctx = self.context(kind, &session, event_id);
        let span = self.span(kind, event_id, &ctx);
        let components = match &event {
            Event::PrepareForBackup(e) => Some(&e.components_json),
            Event::PostSnapshot(e) => Some(&e.components_json),
            Event::BackupComplete(e) => Some(&e.components_json),
            Event::PreRestore(e) => Some(&e.components_json),
            Event::PostRestore(e) => Some(&e.components_json),
            _ => None,
        };
        let input = match components.map(|json| self.parse_components(json)) {
            None => Input::Plain,
            Some(Ok(records)) if kind == EventKind::BackupComplete => Input::ReadOnly(records),
            Some(Ok(records)) => Input::Editable(records),
            Some(Err(failure)) => {
                span.in_scope(|| tracing::error!(%failure, "cannot hand the event to the writer"));
                self.send(reply(event_id, &Err(failure), None));
                return;
            }
        };
        if kind == EventKind::Thaw
            && let Some(failure) = self
                .sessions
                .get_mut(&session)
                .and_then(|state| state.thaw_failure.take())
        {
            // The freeze timer already aborted the writer; Thaw reports that (BK-SNAP-5).
            span.in_scope(|| tracing::warn!(%failure, "answering Thaw with the freeze timeout"));
            self.send(reply(event_id, &Err(failure), None));
            return;
        }
        let freeze_deadline = match &event {
            Event::Freeze(e) if e.deadline_ms > 0 => {
                Some(Duration::from_millis(u64::from(e.deadline_ms)))
            }
            _ => None,
        };
        span.in_scope(|| tracing::debug!("handler starts"));
        let task =
            tokio::spawn(handler(Arc::clone(&self.writer), ctx, input).instrument(span.clone()));
        let job = self.job();
        self.current = Some(Current {
            job,
            event_id,
            session,
            kind,
            received,
            freeze_deadline,
            abort: task.abort_handle(),
            cancelled: false,
            span,
        });
        self.watch(job, task);
    }

    /// Starts `on_abort` for one request.
    fn start_abort(&mut self, request: AbortRequest) {
        let event_id = match request.reply {
            AbortReply::Event(id) => id,
            _ => 0,
        };
        let mut ctx = self.context(EventKind::Abort, &request.session, event_id);
        ctx.abort_cause = Some(request.cause);
        let span = self.span(EventKind::Abort, event_id, &ctx);
        span.in_scope(|| tracing::info!(cause = ?request.cause, "on_abort starts"));
        let task = tokio::spawn(
            handler(Arc::clone(&self.writer), ctx, Input::Plain).instrument(span.clone()),
        );
        let job = self.job();
        self.running_abort = Some(RunningAbort { job, request, span });
        self.watch(job, task);
    }

    /// Reports the end of `task`, however it ends (success, panic, cancellation), to the loop.
    fn watch(&self, job: u64, task: tokio::task::JoinHandle<HandlerOutput>) {
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = task.await;
            let _ = done.send(Done { job, result });
        });
    }

    /// A handler or abort task ended.
    fn on_done(&mut self, done: Done) {
        if self.current.as_ref().is_some_and(|c| c.job == done.job) {
            let current = self.current.take().expect("checked above");
            self.finish_event(current, done.result);
        } else if self
            .running_abort
            .as_ref()
            .is_some_and(|a| a.job == done.job)
        {
            let running = self.running_abort.take().expect("checked above");
            self.finish_abort(running, done.result);
        }
    }

    /// Answers an event whose handler ended, and applies what the end means for the session.
    fn finish_event(&mut self, current: Current, result: Result<HandlerOutput, JoinError>) {
        let Current {
            event_id,
            session,
            kind,
            received,
            freeze_deadline,
            cancelled,
            span,
            ..
        } = current;
        let _entered = span.enter();
        let output = match result {
            Ok(output) => output,
            Err(error) if error.is_panic() => {
                let failure = WriterFailure::non_retryable(format!(
                    "the {kind} handler panicked: {} (ERR-1: a panic must not escape a handler)",
                    panic_message(error)
                ));
                tracing::error!(%failure, "handler panicked");
                HandlerOutput::failed(failure)
            }
            Err(_) => HandlerOutput::failed(WriterFailure::retryable(format!(
                "{kind} was cancelled before its handler finished, because its session was \
                 aborted (BK-ABORT-3) or the writer is stopping; retry the whole operation"
            ))),
        };
        let HandlerOutput {
            result,
            mut recorded,
            changed,
            wmd,
        } = output;
        match &result {
            Ok(()) => tracing::debug!("handler succeeded"),
            Err(failure) => tracing::warn!(%failure, "handler failed"),
        }
        if kind == EventKind::Identify {
            if let Some(failure) = recorded.take() {
                tracing::warn!(%failure, "dropping a failure recorded in Identify (ERR-1)");
            }
        } else if let Some(failure) = &recorded {
            tracing::warn!(%failure, "handler recorded a non-fatal failure");
        }
        let mut message = reply(event_id, &result, recorded);
        if let Some(wmd) = wmd {
            match self.identify_wmd(wmd) {
                Ok(json) => set_wmd(&mut message, json),
                Err(failure) => {
                    tracing::error!(%failure, "Identify built an invalid WMD");
                    message = reply(event_id, &Err(failure), None);
                }
            }
        }
        if let Some(records) = changed {
            set_components(&mut message, &records);
        }
        let failed = result.is_err() && !cancelled;
        match kind {
            EventKind::Freeze if result.is_ok() => self.arm(&session, received, freeze_deadline),
            // A failed Freeze or Thaw makes the writer abort itself before it answers (BK-SNAP-7).
            EventKind::Freeze | EventKind::Thaw if failed => {
                tracing::warn!("aborting the writer because {kind} failed (BK-SNAP-7)");
                self.request_abort(
                    session,
                    AbortCause::HandlerFailed,
                    AbortReply::Deferred(Box::new(message)),
                );
                return;
            }
            // After PostSnapshot no Abort comes (BK-ABORT-4).
            EventKind::PostSnapshot => {
                if let Some(state) = self.sessions.get_mut(&session) {
                    state.in_backup = false;
                }
            }
            EventKind::BackupComplete => {
                if let Some(state) = self.sessions.get_mut(&session) {
                    state.backup_completed = true;
                }
            }
            // The end of a session: forget it (BK-END-4, RST-END-1).
            EventKind::BackupShutdown | EventKind::PostRestore => {
                self.sessions.remove(&session);
            }
            _ => {}
        }
        self.send(message);
    }

    /// Starts the freeze timer of a session whose Freeze succeeded (BK-SNAP-5): the smaller of the
    /// writer's freeze timeout, from now, and the event's deadline, from its arrival. Not if Thaw
    /// or Abort already arrived while Freeze was running.
    fn arm(&mut self, session: &str, received: Instant, event_deadline: Option<Duration>) {
        let timeout = self.options.effective_freeze_timeout();
        let Some(state) = self.sessions.get_mut(session) else {
            return;
        };
        if !state.freeze_open {
            return;
        }
        let now = Instant::now();
        let mut deadline = now + timeout;
        let mut window = timeout;
        if let Some(limit) = event_deadline
            && received + limit < deadline
        {
            deadline = received + limit;
            window = limit;
        }
        state.deadline = Some(deadline);
        state.window = window;
        tracing::debug!(window_ms = window.as_millis(), "frozen; freeze timer armed");
    }

    /// The freeze timer of one or more sessions ran out: the writer aborts itself and the next
    /// Thaw reports VSS_E_WRITERERROR_TIMEOUT (BK-SNAP-5).
    fn on_deadline(&mut self) {
        let now = Instant::now();
        let mut expired: Vec<String> = Vec::new();
        for (key, state) in &mut self.sessions {
            if state.deadline.is_some_and(|deadline| deadline <= now) {
                state.deadline = None;
                state.thaw_failure = Some(WriterFailure::timeout(format!(
                    "Thaw did not arrive within {} ms of Freeze, so the writer aborted itself \
                     (BK-SNAP-5)",
                    state.window.as_millis()
                )));
                expired.push(key.clone());
            }
        }
        expired.sort();
        for key in expired {
            tracing::warn!(session = %key, "the freeze window ran out; aborting the writer");
            self.request_abort(key, AbortCause::FreezeTimeout, AbortReply::Nothing);
        }
    }

    /// An abort ran: the session is back to normal, and whatever waited for the abort is sent.
    fn finish_abort(&mut self, running: RunningAbort, result: Result<HandlerOutput, JoinError>) {
        let RunningAbort { request, span, .. } = running;
        let _entered = span.enter();
        if let Some(state) = self.sessions.get_mut(&request.session) {
            state.in_backup = false;
            state.freeze_open = false;
            state.deadline = None;
        }
        let (result, recorded) = match result {
            Ok(output) => (output.result, output.recorded),
            Err(error) if error.is_panic() => {
                let failure = WriterFailure::non_retryable(format!(
                    "the Abort handler panicked: {} (ERR-1)",
                    panic_message(error)
                ));
                (Err(failure), None)
            }
            Err(_) => {
                let failure = WriterFailure::non_retryable("the Abort handler was cancelled");
                (Err(failure), None)
            }
        };
        match &result {
            Ok(()) => tracing::info!("on_abort succeeded"),
            // The writer may still be frozen: this is worth the loudest log (ERR-1).
            Err(failure) => tracing::error!(%failure, "on_abort failed"),
        }
        match request.reply {
            AbortReply::Event(event_id) => self.send(reply(event_id, &result, recorded)),
            AbortReply::Deferred(message) => self.send(*message),
            AbortReply::Nothing => {}
        }
    }

    /// Stops taking events: drops the queued ones (nobody can be answered, or the writer is
    /// leaving), stops a running Identify, and aborts every backup in progress, frozen or not, at
    /// once. On stream loss this is the rule of architecture §2: the writer thaws itself without
    /// waiting for its freeze timer.
    fn begin_close(&mut self, end: End) {
        if self.closing.is_some() {
            return;
        }
        let cause = match &end {
            End::Shutdown => AbortCause::Shutdown,
            End::Gone(reason) => {
                tracing::warn!(%reason, "lost the coordinator");
                AbortCause::CoordinatorGone
            }
        };
        if !self.queue.is_empty() {
            tracing::warn!(
                dropped = self.queue.len(),
                "dropping events that can no longer run"
            );
            self.queue.clear();
        }
        let mut open: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, state)| state.in_backup || state.freeze_open)
            .map(|(key, _)| key.clone())
            .filter(|key| {
                !self.aborts.iter().any(|request| &request.session == key)
                    && self
                        .running_abort
                        .as_ref()
                        .is_none_or(|running| &running.request.session != key)
            })
            .collect();
        open.sort();
        for key in open {
            tracing::warn!(session = %key, "aborting the backup in progress");
            self.request_abort(key, cause, AbortReply::Nothing);
        }
        // Identify changes no state (ROLE-6), so it is the one handler that is safe to stop
        // half-way; the others finish, so that the writer's own state stays whole.
        if let Some(current) = &mut self.current
            && current.kind == EventKind::Identify
            && !current.cancelled
        {
            current.cancelled = true;
            current.abort.abort();
        }
        self.closing = Some(end);
    }

    /// Reads the WriterComponents JSON of an event; a failure is answered without running the
    /// handler. An empty text means no records (volume mode, BK-DISC-5): the handler gets an entry
    /// without components.
    fn parse_components(&self, json: &str) -> Result<WriterComponents, WriterFailure> {
        if json.trim().is_empty() {
            return Ok(WriterComponents::new(
                self.wmd.identity.class_id,
                self.instance_id,
                self.wmd.identity.instance_name.clone(),
            ));
        }
        serde_json::from_str(json).map_err(|error| {
            WriterFailure::non_retryable(format!(
                "the component records sent by shadowcopyd are not a WriterComponents document: \
                 {error}; the coordinator and the writer SDK disagree about the BCD schema"
            ))
        })
    }

    /// Identify's WMD, checked and completed like the registered one; it should equal it (ROLE-6).
    fn identify_wmd(&self, mut wmd: WriterMetadata) -> Result<String, WriterFailure> {
        apply_instance_name(&mut wmd, &self.options)
            .map_err(|error| WriterFailure::non_retryable(error.to_string()))?;
        wmd.identity.instance_id = self.instance_id;
        wmd.check().map_err(|error| {
            WriterFailure::non_retryable(format!("Identify built an invalid WMD: {error}"))
        })?;
        if wmd != self.wmd {
            tracing::warn!(
                "Identify returned another WMD than the one registered; the WMD must be built \
                 by the same deterministic algorithm every time (ROLE-6)"
            );
        }
        Ok(wmd.to_canonical_json())
    }
}

/// Runs the writer's handler for `ctx.event()`; the task that the loop watches.
async fn handler<W: Writer>(writer: Arc<W>, ctx: EventContext, input: Input) -> HandlerOutput {
    let mut wmd = None;
    let mut changed = None;
    let result = match (ctx.event(), input) {
        (EventKind::Identify, _) => match writer.on_identify(&ctx).await {
            Ok(built) => {
                wmd = Some(built);
                Ok(())
            }
            Err(failure) => Err(failure),
        },
        (EventKind::PrepareForSnapshot, _) => writer.on_prepare_snapshot(&ctx).await,
        (EventKind::Freeze, _) => writer.on_freeze(&ctx).await,
        (EventKind::Thaw, _) => writer.on_thaw(&ctx).await,
        (EventKind::Abort, _) => writer.on_abort(&ctx).await,
        (EventKind::BackupShutdown, _) => writer.on_backup_shutdown(&ctx).await,
        (EventKind::BackupComplete, Input::ReadOnly(records)) => {
            writer.on_backup_complete(&ctx, &records).await
        }
        (kind, Input::Editable(mut records)) => {
            let sent = records.clone();
            let result = match kind {
                EventKind::PrepareForBackup => writer.on_prepare_backup(&ctx, &mut records).await,
                EventKind::PostSnapshot => writer.on_post_snapshot(&ctx, &mut records).await,
                EventKind::PreRestore => writer.on_pre_restore(&ctx, &mut records).await,
                EventKind::PostRestore => writer.on_post_restore(&ctx, &mut records).await,
                other => Err(WriterFailure::non_retryable(format!(
                    "internal error: {other} was given component records"
                ))),
            };
            // Only changed records go back (writer.proto EventResult.components_json); a failing
            // handler's changes go back too, since they may be its failure messages (ERR-4).
            if records != sent {
                changed = Some(records);
            }
            result
        }
        (kind, _) => Err(WriterFailure::non_retryable(format!(
            "internal error: {kind} reached the handler without its component records"
        ))),
    };
    HandlerOutput {
        result,
        recorded: ctx.take_recorded(),
        changed,
        wmd,
    }
}

/// A set id, or `None` when the field is empty or not a GUID.
fn parse_set(id: &str) -> Option<SnapshotSetId> {
    if id.is_empty() {
        return None;
    }
    id.parse()
        .inspect_err(
            |error| tracing::warn!(set = id, %error, "ignoring a set id that is not a GUID"),
        )
        .ok()
}

/// An EventResult for `result`.
fn reply(event_id: u64, result: &HandlerResult, recorded: Option<WriterFailure>) -> WriterMessage {
    let failure = match result {
        Ok(()) => recorded,
        Err(failure) => Some(failure.clone()),
    };
    WriterMessage {
        message: Some(Message::EventResult(EventResult {
            event_id,
            success: result.is_ok(),
            failure: failure
                .as_ref()
                .map(|f| v1::Status::from_code(f.code, f.message.clone())),
            application_code: failure.as_ref().map_or(0, |f| f.application_code),
            application_message: failure.map(|f| f.message).unwrap_or_default(),
            wmd_json: None,
            components_json: None,
        })),
    }
}

fn set_wmd(message: &mut WriterMessage, json: String) {
    if let Some(Message::EventResult(result)) = &mut message.message {
        result.wmd_json = Some(json);
    }
}

fn set_components(message: &mut WriterMessage, records: &WriterComponents) {
    if let Some(Message::EventResult(result)) = &mut message.message {
        result.components_json = Some(
            serde_json::to_string(records).expect("component records are representable in JSON"),
        );
    }
}

/// The text of a caught panic.
fn panic_message(error: JoinError) -> String {
    let payload = error.into_panic();
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Completes at `deadline`, or never.
async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
