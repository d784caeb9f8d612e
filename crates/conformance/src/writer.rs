//! Scripted test writers: SDK writers that record every event they handle, with its time, and fail,
//! record a non-fatal failure or hang at the events a scenario chooses.
//!
//! The suite plays the `vswriter` role of TOOL-6 with these: each scenario registers its own writers
//! over the daemon's socket, with a fresh class id, so that scenarios never see each other's writers
//! and never collide with writers somebody else has registered on the daemon (ROLE-7: the class id
//! is the writer's identity). What a writer saw is read back from its [`Journal`]; that is how the
//! suite checks event order (BK-SNAP-2), freeze order (ROLE-9) and who got Abort (BK-SNAP-7,
//! BK-SNAP-8), none of which the requester protocol reports directly.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shadowcopy_metadata::enums::{ApplicationLevel, ComponentFlags, ComponentType};
use shadowcopy_metadata::wmd::{Component, FileDescriptor, WriterMetadata};
use shadowcopy_metadata::{SnapshotSetId, WriterClassId, WriterInstanceId};
use shadowcopy_writer_sdk::{
    AbortCause, EventContext, EventKind, HandlerResult, Writer, WriterFailure, WriterHandle,
    WriterOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;

/// The longest a scripted hang lasts when nobody releases it, so that a writer task never outlives
/// its scenario by much even if the scenario forgets to release it.
pub const HANG_LIMIT: Duration = Duration::from_secs(120);

/// The component every test writer has unless told otherwise.
pub const DATA_COMPONENT: &str = "data";

/// What a scripted writer does at one event instead of succeeding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The handler fails with this failure: a veto at Freeze or Thaw (BK-SNAP-7, ERR-3), a fatal
    /// failure elsewhere (ERR-1).
    Fail(WriterFailure),
    /// The handler succeeds but records this non-fatal failure (ERR-1, third rule).
    RecordFailure(WriterFailure),
    /// The handler never answers, until the writer is released or [`HANG_LIMIT`] passes.
    Hang,
}

/// One event a test writer handled, recorded when its handler started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The event.
    pub event: EventKind,
    /// When the handler started. Handlers run one at a time in event order (ROLE-5), so the order
    /// of these times across writers is the order in which the coordinator sent the events.
    pub at: Instant,
    /// The set id the event carried or the SDK remembered for the session (BK-END-5).
    pub set_id: Option<SnapshotSetId>,
    /// Why `on_abort` ran; `None` for the other events.
    pub abort_cause: Option<AbortCause>,
    /// In BackupShutdown: whether this writer had handled BackupComplete (BK-END-5).
    pub backup_completed: bool,
    /// The full paths of the component records the event carried (BCD-8); empty in volume mode.
    pub components: Vec<String>,
    /// The volumes of the set, from PrepareForSnapshot on.
    pub volumes: Vec<String>,
}

/// The events a test writer handled, shared between the writer and the scenario that checks them.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    records: Arc<Mutex<Vec<Record>>>,
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn push(&self, record: Record) {
        self.lock().push(record);
    }

    /// Every record so far, in order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// The events so far, in order.
    pub fn events(&self) -> Vec<EventKind> {
        self.lock().iter().map(|r| r.event).collect()
    }

    /// The events so far without Identify. Identify may come at any time from any requester
    /// (ROLE-6), so sequences are compared without it.
    pub fn events_without_identify(&self) -> Vec<EventKind> {
        self.lock()
            .iter()
            .map(|r| r.event)
            .filter(|e| *e != EventKind::Identify)
            .collect()
    }

    /// How many times the event was handled.
    pub fn count(&self, event: EventKind) -> usize {
        self.lock().iter().filter(|r| r.event == event).count()
    }

    /// Whether the event was handled at least once.
    pub fn saw(&self, event: EventKind) -> bool {
        self.count(event) > 0
    }

    /// The first record of the event.
    pub fn first(&self, event: EventKind) -> Option<Record> {
        self.lock().iter().find(|r| r.event == event).cloned()
    }

    /// The last record of the event.
    pub fn last(&self, event: EventKind) -> Option<Record> {
        self.lock().iter().rev().find(|r| r.event == event).cloned()
    }

    /// Waits up to `limit` until the event has been handled and returns its first record.
    pub async fn wait_for(&self, event: EventKind, limit: Duration) -> Option<Record> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(record) = self.first(event) {
                return Some(record);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Forgets every record.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// A scripted writer; build it, then [`TestWriter::spawn`] it on a daemon's socket.
#[derive(Debug)]
pub struct TestWriter {
    name: String,
    class_id: WriterClassId,
    level: ApplicationLevel,
    freeze_timeout: Duration,
    script: HashMap<EventKind, Action>,
    unstable_identify: bool,
    components: Vec<Component>,
    journal: Journal,
    identifies: AtomicU64,
    release: Option<watch::Receiver<bool>>,
}

impl TestWriter {
    /// A writer named `name` with a fresh class id, at the FRONT_END level, a 60 s freeze timeout,
    /// and one selectable file-group component, [`DATA_COMPONENT`], that is restored by the
    /// writer (WriterRestore ALWAYS), which answers every event with success.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let component = Component {
            component_type: ComponentType::FileGroup,
            logical_path: String::new(),
            name: DATA_COMPONENT.into(),
            caption: None,
            icon: None,
            restore_metadata: false,
            notify_on_backup_complete: true,
            selectable_for_backup: true,
            selectable_for_restore: true,
            component_flags: ComponentFlags::empty(),
            files: vec![FileDescriptor::new(
                format!("/sim/ok/conformance/{name}"),
                "*",
                true,
            )],
            database_files: Vec::new(),
            database_log_files: Vec::new(),
            dependencies: Vec::new(),
        };
        TestWriter {
            name,
            class_id: WriterClassId::new_random(),
            level: ApplicationLevel::FrontEnd,
            freeze_timeout: Duration::from_secs(60),
            script: HashMap::new(),
            unstable_identify: false,
            components: vec![component],
            journal: Journal::default(),
            identifies: AtomicU64::new(0),
            release: None,
        }
    }

    /// The same writer with this class id.
    #[must_use]
    pub fn with_class_id(mut self, class_id: WriterClassId) -> Self {
        self.class_id = class_id;
        self
    }

    /// The same writer at this application level (ROLE-9).
    #[must_use]
    pub fn at_level(mut self, level: ApplicationLevel) -> Self {
        self.level = level;
        self
    }

    /// The same writer with this freeze timeout (BK-SNAP-5).
    #[must_use]
    pub fn freeze_timeout(mut self, timeout: Duration) -> Self {
        self.freeze_timeout = timeout;
        self
    }

    /// The same writer doing `action` at `event` instead of succeeding.
    #[must_use]
    pub fn on(mut self, event: EventKind, action: Action) -> Self {
        self.script.insert(event, action);
        self
    }

    /// The same writer, broken: every Identify returns a slightly different WMD, which ROLE-6
    /// forbids. For checking that the suite catches a writer written by someone else.
    #[must_use]
    pub fn unstable_identify(mut self) -> Self {
        self.unstable_identify = true;
        self
    }

    /// The writer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The writer's class id.
    pub fn class_id(&self) -> WriterClassId {
        self.class_id
    }

    /// The journal the writer records into.
    pub fn journal(&self) -> Journal {
        self.journal.clone()
    }

    /// The registration options for `socket`: the writer's level and freeze timeout, no reconnect.
    pub fn options(&self, socket: &Path) -> WriterOptions {
        WriterOptions {
            application_level: self.level,
            freeze_timeout: self.freeze_timeout,
            ..WriterOptions::with_socket(socket)
        }
    }

    /// Registers the writer with the daemon at `socket` as a task of the current runtime.
    pub fn spawn(mut self, socket: &Path) -> RunningWriter {
        let (release, released) = watch::channel(false);
        self.release = Some(released);
        let options = self.options(socket);
        let name = self.name.clone();
        let class_id = self.class_id;
        let journal = self.journal.clone();
        RunningWriter {
            name,
            class_id,
            journal,
            instance_id: None,
            release,
            handle: Some(shadowcopy_writer_sdk::spawn(self, options)),
        }
    }

    fn record(&self, ctx: &EventContext, components: Vec<String>) {
        self.journal.push(Record {
            event: ctx.event(),
            at: Instant::now(),
            set_id: ctx.set_id(),
            abort_cause: ctx.abort_cause(),
            backup_completed: ctx.backup_completed(),
            components,
            volumes: ctx
                .volumes()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect(),
        });
    }

    /// Plays the script for the event of `ctx`.
    async fn act(&self, ctx: &EventContext) -> HandlerResult {
        match self.script.get(&ctx.event()) {
            None => Ok(()),
            Some(Action::Fail(failure)) => Err(failure.clone()),
            Some(Action::RecordFailure(failure)) => {
                ctx.record_failure(failure.clone());
                Ok(())
            }
            Some(Action::Hang) => {
                self.hang().await;
                Ok(())
            }
        }
    }

    /// Waits until released; an await point throughout, so that the SDK can cancel it when an
    /// Abort of the session arrives.
    async fn hang(&self) {
        let Some(mut released) = self.release.clone() else {
            tokio::time::sleep(HANG_LIMIT).await;
            return;
        };
        let _ = tokio::time::timeout(HANG_LIMIT, released.wait_for(|released| *released)).await;
    }
}

/// The full paths of a writer's component records.
fn names(components: &shadowcopy_metadata::bcd::WriterComponents) -> Vec<String> {
    components
        .components()
        .iter()
        .map(|c| c.full_path())
        .collect()
}

impl Writer for TestWriter {
    fn metadata(&self) -> WriterMetadata {
        WriterMetadata::simple(self.name.clone(), self.class_id, self.components.clone())
    }

    async fn on_identify(&self, ctx: &EventContext) -> Result<WriterMetadata, WriterFailure> {
        self.record(ctx, Vec::new());
        self.act(ctx).await?;
        let mut wmd = self.metadata();
        if self.unstable_identify {
            // A counter in a caption: valid, but never the same document twice (breaks ROLE-6).
            let n = self.identifies.fetch_add(1, Ordering::Relaxed);
            if let Some(component) = wmd.components.first_mut() {
                component.caption = Some(format!("identified {n} times"));
            }
        }
        Ok(wmd)
    }

    async fn on_prepare_backup(
        &self,
        ctx: &EventContext,
        components: &mut shadowcopy_metadata::bcd::WriterComponents,
    ) -> HandlerResult {
        self.record(ctx, names(components));
        self.act(ctx).await
    }

    async fn on_prepare_snapshot(&self, ctx: &EventContext) -> HandlerResult {
        self.record(ctx, Vec::new());
        self.act(ctx).await
    }

    async fn on_freeze(&self, ctx: &EventContext) -> HandlerResult {
        self.record(ctx, Vec::new());
        self.act(ctx).await
    }

    async fn on_thaw(&self, ctx: &EventContext) -> HandlerResult {
        self.record(ctx, Vec::new());
        self.act(ctx).await
    }

    async fn on_post_snapshot(
        &self,
        ctx: &EventContext,
        components: &mut shadowcopy_metadata::bcd::WriterComponents,
    ) -> HandlerResult {
        self.record(ctx, names(components));
        self.act(ctx).await
    }

    async fn on_abort(&self, ctx: &EventContext) -> HandlerResult {
        self.record(ctx, Vec::new());
        self.act(ctx).await
    }

    async fn on_backup_complete(
        &self,
        ctx: &EventContext,
        components: &shadowcopy_metadata::bcd::WriterComponents,
    ) -> HandlerResult {
        self.record(ctx, names(components));
        self.act(ctx).await
    }

    async fn on_backup_shutdown(&self, ctx: &EventContext) -> HandlerResult {
        self.record(ctx, Vec::new());
        self.act(ctx).await
    }

    async fn on_pre_restore(
        &self,
        ctx: &EventContext,
        components: &mut shadowcopy_metadata::bcd::WriterComponents,
    ) -> HandlerResult {
        self.record(ctx, names(components));
        self.act(ctx).await
    }

    async fn on_post_restore(
        &self,
        ctx: &EventContext,
        components: &mut shadowcopy_metadata::bcd::WriterComponents,
    ) -> HandlerResult {
        self.record(ctx, names(components));
        self.act(ctx).await
    }
}

/// A test writer registered with a daemon, from [`TestWriter::spawn`].
#[derive(Debug)]
pub struct RunningWriter {
    /// The writer's name.
    pub name: String,
    /// The writer's class id.
    pub class_id: WriterClassId,
    /// What the writer handled.
    pub journal: Journal,
    instance_id: Option<WriterInstanceId>,
    release: watch::Sender<bool>,
    handle: Option<WriterHandle>,
}

impl RunningWriter {
    /// Waits up to `limit` until the writer is registered and returns its instance id.
    pub async fn registered(&mut self, limit: Duration) -> Result<WriterInstanceId, String> {
        if let Some(id) = self.instance_id {
            return Ok(id);
        }
        let Some(handle) = self.handle.as_mut() else {
            return Err(format!("test writer {} was stopped", self.name));
        };
        match tokio::time::timeout(limit, handle.registered()).await {
            Ok(Some(id)) => {
                self.instance_id = Some(id);
                Ok(id)
            }
            Ok(None) => {
                let error = match self.handle.take() {
                    Some(handle) => match handle.join().await {
                        Ok(()) => "it stopped".to_owned(),
                        Err(error) => error.to_string(),
                    },
                    None => "it stopped".to_owned(),
                };
                Err(format!(
                    "test writer {} could not register: {error}",
                    self.name
                ))
            }
            Err(_) => Err(format!(
                "test writer {} did not register within {} s",
                self.name,
                limit.as_secs()
            )),
        }
    }

    /// The instance id the daemon assigned (ROLE-7); nil before [`RunningWriter::registered`].
    pub fn instance_id(&self) -> WriterInstanceId {
        self.instance_id.unwrap_or_else(WriterInstanceId::nil)
    }

    /// Ends every scripted hang now.
    pub fn release_hangs(&self) {
        self.release.send_replace(true);
    }

    /// Releases the hangs and stops the writer cleanly: the SDK aborts a backup still in progress
    /// and closes the stream, which unregisters the writer. Waits at most 5 s; after that the task
    /// is left to stop by itself.
    pub async fn stop(mut self) {
        self.release_hangs();
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
        }
    }
}
