//! The restore session: the requester side of spec §4 as an ordered state machine (R1–R9).
//!
//! The stored BCD and WMDs are the only source of file specifications (RST-INIT-2); Identify at
//! restore time only tells which writers are running. Stored writers are matched to running ones by
//! class id and persistent instance name (RST-INIT-4). Restores cannot be aborted (BK-ABORT-5).

use std::sync::Arc;

use futures::future::join_all;
use shadowcopy_metadata::bcd::{
    BackupComponents, BcdError, Party, Phase, RecordEditor, RestoreSubcomponent, WriterComponents,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{FileRestoreStatus, RestoreType, WriterState};
use shadowcopy_metadata::logical_path;
use shadowcopy_metadata::{WriterClassId, WriterInstanceId, WriterMetadata};
use tracing::Instrument;

use crate::backup::SessionId;
use crate::coordinator::Shared;
use crate::error::{CoordinatorError, Result};
use crate::events::settle;
use crate::events::{apply_components, gather, send_event};
use crate::registry::SessionWriter;
use crate::writer::{WriterEvent, WriterEventKind, WriterStatus};

/// Names a component of a stored backup: its writer by class id and persistent instance name
/// (RST-INIT-4; the stored instance id means nothing later), then logical path and name (COMP-3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentKey {
    /// The writer's class id.
    pub class_id: WriterClassId,
    /// The writer's persistent instance name, for multi-instance writers.
    pub instance_name: Option<String>,
    /// The component's logical path.
    pub logical_path: String,
    /// The component's name.
    pub name: String,
}

impl ComponentKey {
    /// A key for a component of a single-instance writer.
    pub fn new(
        class_id: WriterClassId,
        logical_path: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ComponentKey {
            class_id,
            instance_name: None,
            logical_path: logical_path.into(),
            name: name.into(),
        }
    }

    fn full_path(&self) -> String {
        logical_path::full_path(&self.logical_path, &self.name)
    }
}

/// Where a restore session is in the sequence of spec §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    New,
    Initialized,
    Gathered,
    PreRestored,
    PostRestored,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::New => "the session is not initialized yet",
            Step::Initialized => "the session is initialized and has not gathered writer metadata",
            Step::Gathered => "the session has gathered writer metadata",
            Step::PreRestored => "the session has run PreRestore",
            Step::PostRestored => "the session has run PostRestore; release it",
        }
    }
}

struct RestoreInner {
    shared: Arc<Shared>,
    id: SessionId,
    span: tracing::Span,
    step: Step,
    bcd: BackupComponents,
    phase: Phase,
    stored: Vec<WriterMetadata>,
    /// The running writers that answered Identify.
    writers: Vec<Arc<SessionWriter>>,
    /// The writers that got PreRestore, with the stored instance id of their BCD entry.
    participants: Vec<(Arc<SessionWriter>, WriterInstanceId)>,
}

/// One restore (ROLE-12). Methods follow the VSS order of spec §4.
pub struct RestoreSession {
    inner: Option<RestoreInner>,
}

impl std::fmt::Debug for RestoreSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(inner) => f
                .debug_struct("RestoreSession")
                .field("id", &inner.id)
                .field("step", &inner.step)
                .finish(),
            None => f.write_str("RestoreSession(released)"),
        }
    }
}

impl RestoreInner {
    fn check(&self, call: &str, allowed: &[Step], expected: &str) -> Result<()> {
        if allowed.contains(&self.step) {
            Ok(())
        } else {
            Err(CoordinatorError::bad_state(
                call,
                format!("{expected}; {}", self.step.describe()),
            ))
        }
    }

    /// The stored BCD entry of the writer a key names.
    fn stored_entry(&self, key: &ComponentKey) -> Result<&WriterComponents> {
        self.bcd
            .writer(key.class_id, key.instance_name.as_deref())
            .filter(|entry| {
                entry
                    .component(&key.logical_path, &key.name)
                    .is_some()
            })
            .ok_or_else(|| {
                CoordinatorError::new(
                    codes::VSS_E_OBJECT_NOT_FOUND,
                    format!(
                        "component {} of writer class {} (instance {:?}) is not in the stored backup \
                         components document",
                        key.full_path(),
                        key.class_id,
                        key.instance_name
                    ),
                )
            })
    }

    /// The running writer for a stored entry (RST-INIT-4).
    fn running(
        &self,
        class_id: WriterClassId,
        instance_name: Option<&str>,
    ) -> Option<&Arc<SessionWriter>> {
        self.writers.iter().find(|w| {
            w.entry.registration.class_id == class_id
                && w.entry.registration.instance_name.as_deref() == instance_name
                && !w.entry.is_gone()
        })
    }

    /// Checks that the key's component is stored and its writer is running (RST-PREP-2), and
    /// returns the stored instance id that keys the BCD entry.
    fn selectable(&self, call: &str, key: &ComponentKey) -> Result<WriterInstanceId> {
        self.check(
            call,
            &[Step::Gathered],
            "it must come after gather_writer_metadata and before pre_restore (R4)",
        )?;
        let stored = self.stored_entry(key)?.instance_id;
        if self
            .running(key.class_id, key.instance_name.as_deref())
            .is_none()
        {
            return Err(CoordinatorError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!(
                    "the writer of component {} (class {}, instance {:?}) is not running; restore \
                     its data without selecting the component (RST-PREP-2)",
                    key.full_path(),
                    key.class_id,
                    key.instance_name
                ),
            ));
        }
        Ok(stored)
    }

    fn stored_metadata(&self, key: &ComponentKey) -> Option<&WriterMetadata> {
        self.stored.iter().find(|w| {
            w.identity.class_id == key.class_id && w.identity.instance_name == key.instance_name
        })
    }

    fn edit(
        &mut self,
        key: &ComponentKey,
        stored: WriterInstanceId,
        f: impl FnOnce(&mut RecordEditor<'_>) -> std::result::Result<(), BcdError>,
    ) -> Result<()> {
        let phase = self.phase;
        let mut editor = self.bcd.edit(
            Party::Requester,
            phase,
            stored,
            &key.logical_path,
            &key.name,
        )?;
        f(&mut editor)?;
        Ok(())
    }
}

impl RestoreSession {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let id = SessionId::new_v4();
        RestoreSession {
            inner: Some(RestoreInner {
                shared,
                id,
                span: tracing::info_span!("restore_session", session = %id),
                step: Step::New,
                bcd: BackupComponents::new(),
                phase: Phase::RestoreSelection,
                stored: Vec::new(),
                writers: Vec::new(),
                participants: Vec::new(),
            }),
        }
    }

    fn inner(&self) -> Result<&RestoreInner> {
        self.inner.as_ref().ok_or_else(|| {
            CoordinatorError::bad_state("the call", "the session was released (ROLE-12)")
        })
    }

    fn inner_mut(&mut self) -> Result<&mut RestoreInner> {
        self.inner.as_mut().ok_or_else(|| {
            CoordinatorError::bad_state("the call", "the session was released (ROLE-12)")
        })
    }

    /// The session's id, as its log entries carry it.
    pub fn id(&self) -> Option<SessionId> {
        self.inner.as_ref().map(|i| i.id)
    }

    /// R1–R2, InitializeForRestore: loads the BCD and every WMD stored with the backup
    /// (RST-INIT-1). Both are validated; a broken document is refused with its VSS code.
    pub fn initialize_for_restore(
        &mut self,
        bcd: BackupComponents,
        stored_metadata: Vec<WriterMetadata>,
    ) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "initialize_for_restore",
            &[Step::New],
            "it must come once, before any other call (R1)",
        )?;
        bcd.validate()?;
        for metadata in &stored_metadata {
            metadata.validate()?;
        }
        inner.bcd = bcd;
        inner.stored = stored_metadata;
        inner.step = Step::Initialized;
        Ok(())
    }

    /// R3, GatherWriterMetadata: Identify to every writer, to learn which are running (RST-INIT-3).
    pub async fn gather_writer_metadata(&mut self) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "gather_writer_metadata",
            &[Step::Initialized],
            "it must come once, after initialize_for_restore (RST-INIT-3)",
        )?;
        let span = tracing::info_span!(parent: &inner.span, "gather_writer_metadata");
        inner.writers = gather(&inner.shared, inner.id, |_| true)
            .instrument(span)
            .await;
        inner.step = Step::Gathered;
        Ok(())
    }

    /// The WMDs the running writers returned. They say which writers run; their file
    /// specifications must not be used for the restore (RST-INIT-2).
    pub fn writer_metadata(&self) -> Result<Vec<WriterMetadata>> {
        let inner = self.inner()?;
        if inner.step == Step::New || inner.step == Step::Initialized {
            return Err(CoordinatorError::bad_state(
                "writer_metadata",
                "gather_writer_metadata must come first (RST-INIT-3)",
            ));
        }
        Ok(inner.writers.iter().map(|w| w.metadata.clone()).collect())
    }

    /// The WMDs stored with the backup (R2), the only source of file specifications (RST-INIT-2).
    pub fn stored_writer_metadata(&self) -> Result<&[WriterMetadata]> {
        Ok(&self.inner()?.stored)
    }

    /// SetRestoreState (RST-PREP-7): before PreRestore.
    pub fn set_restore_type(&mut self, restore_type: RestoreType) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "set_restore_type",
            &[Step::Initialized, Step::Gathered],
            "it must come before pre_restore (RST-PREP-7)",
        )?;
        let phase = inner.phase;
        inner.bcd.set_restore_type(phase, restore_type)?;
        Ok(())
    }

    /// R4, SetSelectedForRestore (SEL-R-1): the component must be in the stored BCD and its writer
    /// must be running, otherwise VSS_E_OBJECT_NOT_FOUND and its data restores without it (RST-PREP-2).
    pub fn select_for_restore(&mut self, key: &ComponentKey, selected: bool) -> Result<()> {
        let inner = self.inner_mut()?;
        let stored = inner.selectable("select_for_restore", key)?;
        inner.edit(key, stored, |e| {
            e.set_selected_for_restore(selected).map(|_| ())
        })
    }

    /// R4, AddRestoreSubcomponent (SEL-R-2): restores only the named member of the set `key`
    /// defines. The member must be in the stored WMD, inside that set (LP-2), and selectable for
    /// restore.
    pub fn add_restore_subcomponent(
        &mut self,
        key: &ComponentKey,
        sub_logical_path: &str,
        sub_name: &str,
        repair: bool,
    ) -> Result<()> {
        let inner = self.inner_mut()?;
        let stored = inner.selectable("add_restore_subcomponent", key)?;
        let Some(metadata) = inner.stored_metadata(key) else {
            return Err(CoordinatorError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!(
                    "no stored writer metadata for class {} (instance {:?}) (RST-INIT-2)",
                    key.class_id, key.instance_name
                ),
            ));
        };
        let member = metadata
            .component(sub_logical_path, sub_name)
            .ok_or_else(|| {
                CoordinatorError::new(
                    codes::VSS_E_OBJECT_NOT_FOUND,
                    format!(
                        "the stored metadata has no component {}",
                        logical_path::full_path(sub_logical_path, sub_name)
                    ),
                )
            })?;
        let parent = key.full_path();
        let in_set =
            sub_logical_path == parent || sub_logical_path.starts_with(&format!("{parent}\\"));
        if !in_set {
            return Err(CoordinatorError::new(
                codes::E_INVALIDARG,
                format!(
                    "{} is not a member of the component set {parent} (LP-2, SEL-R-2)",
                    logical_path::full_path(sub_logical_path, sub_name)
                ),
            ));
        }
        if !member.selectable_for_restore {
            return Err(CoordinatorError::new(
                codes::E_INVALIDARG,
                format!(
                    "{} is not selectable for restore, so it is restored with its set, never on \
                     its own (SEL-R-2, SEL-R-3)",
                    member.full_path()
                ),
            ));
        }
        let mut subcomponents = inner
            .stored_entry(key)?
            .component(&key.logical_path, &key.name)
            .map(|r| r.restore_subcomponents().to_vec())
            .unwrap_or_default();
        subcomponents.push(RestoreSubcomponent {
            logical_path: sub_logical_path.to_string(),
            name: sub_name.to_string(),
            repair,
        });
        inner.edit(key, stored, |e| {
            e.set_restore_subcomponents(subcomponents).map(|_| ())
        })
    }

    /// R4, SetRestoreOptions (RST-PREP-4): at most once per component, and only for components
    /// that were selectable for backup.
    pub fn set_restore_options(&mut self, key: &ComponentKey, options: &str) -> Result<()> {
        let inner = self.inner_mut()?;
        let stored = inner.selectable("set_restore_options", key)?;
        if let Some(component) = inner
            .stored_metadata(key)
            .and_then(|m| m.component(&key.logical_path, &key.name))
            && !component.selectable_for_backup
        {
            return Err(CoordinatorError::new(
                codes::E_INVALIDARG,
                format!(
                    "component {} was not selectable for backup, so it takes no restore options (RST-PREP-4)",
                    key.full_path()
                ),
            ));
        }
        let already = inner
            .stored_entry(key)?
            .component(&key.logical_path, &key.name)
            .and_then(|r| r.restore_options())
            .is_some();
        if already {
            return Err(CoordinatorError::bad_state(
                "set_restore_options",
                format!(
                    "restore options of component {} were already set; they may be set at most once (RST-PREP-4)",
                    key.full_path()
                ),
            ));
        }
        inner.edit(key, stored, |e| e.set_restore_options(options).map(|_| ()))
    }

    /// SetAdditionalRestores (RST-END-1): before PostRestore.
    pub fn set_additional_restores(&mut self, key: &ComponentKey, additional: bool) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "set_additional_restores",
            &[Step::Gathered, Step::PreRestored],
            "it must come after gather_writer_metadata and before post_restore (RST-END-1)",
        )?;
        let stored = inner.stored_entry(key)?.instance_id;
        inner.edit(key, stored, |e| {
            e.set_additional_restores(additional).map(|_| ())
        })
    }

    /// R5, PreRestore: only to running writers with at least one selected component (RST-PREP-3),
    /// each with its own records (BCD-8); writers may change them now (RST-PREP-5). Writer failures
    /// show in `gather_writer_status` as FAILED_AT_PRE_RESTORE.
    pub async fn pre_restore(&mut self) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "pre_restore",
            &[Step::Gathered],
            "it must come after gather_writer_metadata (R5)",
        )?;
        let restore_type = inner.bcd.restore_type();
        let mut recipients: Vec<(Arc<SessionWriter>, WriterComponents)> = Vec::new();
        for entry in inner.bcd.writers() {
            if !entry.components().iter().any(|c| c.selected_for_restore()) {
                continue;
            }
            let Some(writer) = inner.running(entry.class_id, entry.instance_name.as_deref()) else {
                tracing::warn!(class = %entry.class_id, "the writer of selected components is no longer running");
                continue;
            };
            if WriterEventKind::PreRestore.subscribed(writer.entry.registration.subscribe_mask) {
                recipients.push((writer.clone(), entry.clone()));
            }
        }
        inner.phase = Phase::PreRestore;
        let limit = inner.shared.config.event_timeouts.pre_restore;
        let span = tracing::info_span!(parent: &inner.span, "pre_restore");
        let results = join_all(recipients.iter().map(|(writer, components)| {
            writer.flags().participant = true;
            send_event(
                writer,
                WriterEvent::PreRestore {
                    components: components.clone(),
                    restore_type,
                },
                limit,
            )
        }))
        .instrument(span)
        .await;
        for ((writer, sent), result) in recipients.iter().zip(results) {
            let reply = settle(
                writer,
                WriterEventKind::PreRestore,
                WriterState::Stable,
                result,
            );
            apply_components(
                &mut inner.bcd,
                Phase::PreRestore,
                WriterEventKind::PreRestore,
                writer,
                sent,
                reply.as_ref(),
            );
        }
        inner.participants = recipients
            .into_iter()
            .map(|(writer, sent)| (writer, sent.instance_id))
            .collect();
        inner.phase = Phase::RestoreCopying;
        inner.step = Step::PreRestored;
        Ok(())
    }

    /// R6/R9, GatherWriterStatus: the writers that answered Identify (WST-1).
    pub fn gather_writer_status(&self) -> Result<Vec<WriterStatus>> {
        let inner = self.inner()?;
        if inner.step == Step::New || inner.step == Step::Initialized {
            return Err(CoordinatorError::bad_state(
                "gather_writer_status",
                "writers cannot be listed before gather_writer_metadata (BK-INIT-7)",
            ));
        }
        Ok(inner.writers.iter().map(|w| w.status()).collect())
    }

    /// R7, SetFileRestoreStatus (RST-FILE-3): after PreRestore, before PostRestore.
    pub fn set_file_restore_status(
        &mut self,
        key: &ComponentKey,
        status: FileRestoreStatus,
    ) -> Result<()> {
        self.edit_component(key, |e| e.set_file_restore_status(status).map(|_| ()))
    }

    /// R7, any other requester change to one record while files are copied back (alternate
    /// mappings used, new targets, ranges-file overrides; RST-FILE-3, RST-FILE-4), through the
    /// BCD's checked editor.
    pub fn edit_component(
        &mut self,
        key: &ComponentKey,
        f: impl FnOnce(&mut RecordEditor<'_>) -> std::result::Result<(), BcdError>,
    ) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "edit_component",
            &[Step::PreRestored],
            "restore results are recorded after pre_restore and before post_restore (R7)",
        )?;
        let stored = inner.stored_entry(key)?.instance_id;
        inner.edit(key, stored, f)
    }

    /// R8, PostRestore: to the writers that got PreRestore. A writer whose instance ended since is
    /// reported as lost (FAILED_AT_POST_RESTORE, VSS_E_WRITER_NOT_RESPONDING); a restarted writer is
    /// a new instance and gets nothing (RST-END-3).
    pub async fn post_restore(&mut self) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "post_restore",
            &[Step::PreRestored],
            "it must come after pre_restore (R8)",
        )?;
        inner.phase = Phase::PostRestore;
        let recipients: Vec<(Arc<SessionWriter>, WriterComponents)> = inner
            .participants
            .iter()
            .filter_map(|(writer, stored)| {
                inner
                    .bcd
                    .writers()
                    .iter()
                    .find(|e| e.instance_id == *stored)
                    .map(|e| (writer.clone(), e.clone()))
            })
            .collect();
        let limit = inner.shared.config.event_timeouts.post_restore;
        let restore_type = inner.bcd.restore_type();
        let span = tracing::info_span!(parent: &inner.span, "post_restore");
        let results = join_all(recipients.iter().map(|(writer, components)| {
            send_event(
                writer,
                WriterEvent::PostRestore {
                    components: components.clone(),
                    restore_type,
                },
                limit,
            )
        }))
        .instrument(span)
        .await;
        for ((writer, sent), result) in recipients.iter().zip(results) {
            let reply = settle(
                writer,
                WriterEventKind::PostRestore,
                WriterState::Stable,
                result,
            );
            apply_components(
                &mut inner.bcd,
                Phase::PostRestore,
                WriterEventKind::PostRestore,
                writer,
                sent,
                reply.as_ref(),
            );
        }
        inner.phase = Phase::RestoreDone;
        inner.step = Step::PostRestored;
        Ok(())
    }

    /// The Backup Components Document as it stands; read restore targets only after PreRestore
    /// returned (RST-PREP-5).
    pub fn backup_components(&self) -> Result<&BackupComponents> {
        Ok(&self.inner()?.bcd)
    }

    /// Restores cannot be aborted (BK-ABORT-5): always VSS_E_BAD_STATE. Present so that a protocol
    /// layer with one session type can answer AbortBackup on a restore.
    pub fn abort(&self) -> Result<()> {
        Err(CoordinatorError::bad_state(
            "abort",
            "restores cannot be aborted (BK-ABORT-5); finish with post_restore and release",
        ))
    }

    /// R9, releases the session. A restore sends no BackupShutdown; the requester should have
    /// waited for PostRestore (RST-END-2).
    pub async fn release(mut self) -> Result<()> {
        if let Some(inner) = self.inner.take() {
            let _span = inner.span.enter();
            tracing::info!(step = ?inner.step, "restore session released");
        }
        Ok(())
    }
}

impl Drop for RestoreSession {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && inner.step == Step::PreRestored
        {
            let _span = inner.span.enter();
            tracing::warn!(
                "restore session dropped between PreRestore and PostRestore (RST-END-2)"
            );
        }
    }
}
