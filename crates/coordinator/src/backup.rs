//! The backup session: the requester side of spec §3 as an ordered state machine (B1–B15).
//!
//! Each call checks that it comes in VSS order and refuses the wrong order with VSS_E_BAD_STATE,
//! naming the step that must come first. A session is single-use (ROLE-12). Releasing it, or
//! dropping it (the daemon drops a session when the requester's stream ends), sends BackupShutdown
//! and deletes the auto-release shadow copies (BK-END-4, BK-END-6). A provider that fails or hangs
//! in that deletion gets it again in the background, with a growing pause, until it succeeds: an
//! auto-release copy must not outlive its session for longer than the provider's trouble lasts.

use std::sync::Arc;

use futures::future::join_all;
use shadowcopy_metadata::bcd::{
    BackupComponents, BackupState, ComponentRecord, Party, Phase, WriterComponents,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{SnapshotAttributes, SnapshotContext, WriterState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, WriterInstanceId, WriterMetadata};
use tokio::runtime::Handle;
use tracing::Instrument;

use crate::config::MAX_VOLUMES_PER_SET;
use crate::coordinator::{SetSlot, Shared, call_provider, is_preparation};
use crate::error::{CoordinatorError, Result};
use crate::events::settle;
use crate::events::{apply_components, components_of, gather, send_event};
use crate::provider::{DeleteTarget, ProviderStep, SnapshotRecord};
use crate::registry::SessionWriter;
use crate::snapshot_set::{self, PlannedVolume, abort_writers, providers_of};
use crate::writer::{WriterEvent, WriterEventKind, WriterSelector, WriterStatus};

/// A unique id per session, for logs (ERR-CODE-2: every log entry carries its session).
pub type SessionId = uuid::Uuid;

/// Where a backup session is in the sequence of spec §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// B1 not done.
    New,
    /// InitializeForBackup done (B1–B4).
    Initialized,
    /// GatherWriterMetadata done (B5–B8).
    Gathered,
    /// PrepareForBackup done (B9–B10).
    Prepared,
    /// DoSnapshotSet succeeded (B12).
    SnapshotsDone,
    /// DoSnapshotSet failed or was interrupted (BK-SNAP-9: abort, never complete).
    SnapshotsFailed,
    /// BackupComplete done (B13–B14).
    Completed,
    /// AbortBackup done.
    Aborted,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::New => "the session is not initialized yet",
            Step::Initialized => "the session is initialized and has not gathered writer metadata",
            Step::Gathered => "the session has gathered writer metadata",
            Step::Prepared => "the session has run PrepareForBackup",
            Step::SnapshotsDone => "the session has created its snapshot set",
            Step::SnapshotsFailed => {
                "DoSnapshotSet failed in this session; call abort_backup and release it (BK-SNAP-9)"
            }
            Step::Completed => "the backup was completed",
            Step::Aborted => {
                "the backup was aborted; release the session and start a new one (ROLE-12)"
            }
        }
    }
}

/// The snapshot set of a session.
struct SetState {
    id: SnapshotSetId,
    /// The host-wide set-in-creation lock (LIMIT-4), until DoSnapshotSet ends.
    slot: Option<SetSlot>,
    volumes: Vec<PlannedVolume>,
    /// DoSnapshotSet succeeded: the shadow copies exist.
    created: bool,
}

struct BackupInner {
    shared: Arc<Shared>,
    id: SessionId,
    span: tracing::Span,
    handle: Option<Handle>,
    step: Step,
    gathered: bool,
    bcd: BackupComponents,
    /// Where the BCD is in its life (BCD-6, BCD-7).
    phase: Phase,
    /// Enable/disable calls before GatherWriterMetadata (BK-INIT-4), in call order.
    enable_rules: Vec<(WriterSelector, bool)>,
    /// The writers that answered Identify, in registration order.
    writers: Vec<Arc<SessionWriter>>,
    set: Option<SetState>,
}

/// One backup (ROLE-12). Methods follow the VSS order of spec §3; see the crate documentation.
pub struct BackupSession {
    inner: Option<BackupInner>,
}

impl std::fmt::Debug for BackupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(inner) => f
                .debug_struct("BackupSession")
                .field("id", &inner.id)
                .field("step", &inner.step)
                .field("set", &inner.set.as_ref().map(|s| s.id))
                .finish(),
            None => f.write_str("BackupSession(released)"),
        }
    }
}

impl BackupInner {
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

    fn writer_context(&self) -> bool {
        self.bcd.context().involves_writers()
    }

    fn check_writer_context(&self, call: &str) -> Result<()> {
        if self.writer_context() {
            Ok(())
        } else {
            Err(CoordinatorError::bad_state(
                call,
                format!(
                    "context {} involves no writers, so components, PrepareForBackup and \
                     BackupComplete do not apply (CTX-4)",
                    self.bcd.context()
                ),
            ))
        }
    }

    fn check_gathered(&self, call: &str) -> Result<()> {
        if self.gathered {
            Ok(())
        } else {
            Err(CoordinatorError::bad_state(
                call,
                "writers cannot be listed before gather_writer_metadata (BK-INIT-7)",
            ))
        }
    }

    fn writer(&self, id: WriterInstanceId) -> Result<&Arc<SessionWriter>> {
        self.writers.iter().find(|w| w.id() == id).ok_or_else(|| {
            CoordinatorError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!(
                    "writer instance {id} did not answer Identify in this session (BK-INIT-6, BK-DISC-3)"
                ),
            )
        })
    }

    fn remember_handle(&mut self) {
        if self.handle.is_none() {
            self.handle = Handle::try_current().ok();
        }
    }

    /// The writers that got PrepareForBackup.
    fn participants(&self) -> Vec<Arc<SessionWriter>> {
        self.writers
            .iter()
            .filter(|w| w.flags().participant)
            .cloned()
            .collect()
    }
}

impl BackupSession {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let id = SessionId::new_v4();
        BackupSession {
            inner: Some(BackupInner {
                shared,
                id,
                span: tracing::info_span!("backup_session", session = %id),
                handle: Handle::try_current().ok(),
                step: Step::New,
                gathered: false,
                bcd: BackupComponents::new(),
                phase: Phase::BackupDiscovery,
                enable_rules: Vec::new(),
                writers: Vec::new(),
                set: None,
            }),
        }
    }

    fn inner(&self) -> Result<&BackupInner> {
        self.inner.as_ref().ok_or_else(released)
    }

    fn inner_mut(&mut self) -> Result<&mut BackupInner> {
        self.inner.as_mut().ok_or_else(released)
    }

    /// The session's id, as its log entries carry it.
    pub fn id(&self) -> Option<SessionId> {
        self.inner.as_ref().map(|i| i.id)
    }

    /// B1, InitializeForBackup: starts an empty BCD, or loads a stored one (for backing up an
    /// imported snapshot, BK-INIT-1). Must come first.
    pub fn initialize_for_backup(&mut self, stored: Option<BackupComponents>) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "initialize_for_backup",
            &[Step::New],
            "it must come once, before any other call (BK-INIT-1)",
        )?;
        if let Some(bcd) = stored {
            bcd.validate()?;
            inner.bcd = bcd;
        }
        inner.step = Step::Initialized;
        Ok(())
    }

    /// B2, SetContext (BK-INIT-2): before volumes are added. ALL is refused for creation (CTX-5).
    pub fn set_context(&mut self, context: SnapshotContext) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "set_context",
            &[Step::Initialized, Step::Gathered],
            "it must come after initialize_for_backup and before volumes are added (BK-INIT-2)",
        )?;
        if context == SnapshotContext::All {
            return Err(CoordinatorError::new(
                codes::VSS_E_UNSUPPORTED_CONTEXT,
                "context ALL only filters queries and deletions; a snapshot set needs a creation \
                 context (CTX-5)",
            ));
        }
        let phase = inner.phase;
        inner.bcd.set_context(phase, context)?;
        Ok(())
    }

    /// B3, SetBackupState (BK-INIT-3): before PrepareForBackup.
    pub fn set_backup_state(&mut self, state: BackupState) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "set_backup_state",
            &[Step::Initialized, Step::Gathered],
            "it must come after initialize_for_backup and before prepare_for_backup (BK-INIT-3)",
        )?;
        let phase = inner.phase;
        inner.bcd.set_backup_state(phase, state)?;
        Ok(())
    }

    /// B4, enables or disables writer classes or instances (BK-INIT-4). Every writer is enabled by
    /// default; a call takes effect only before GatherWriterMetadata, later calls have no effect.
    /// Instance rules win over class rules.
    pub fn set_writer_enabled(&mut self, selector: WriterSelector, enabled: bool) -> Result<()> {
        let inner = self.inner_mut()?;
        if inner.step == Step::New {
            return Err(CoordinatorError::bad_state(
                "set_writer_enabled",
                "initialize_for_backup must come first (BK-INIT-1)",
            ));
        }
        if inner.step == Step::Initialized {
            inner.enable_rules.push((selector, enabled));
        } else {
            let _span = inner.span.enter();
            tracing::info!(
                ?selector,
                enabled,
                "set_writer_enabled after GatherWriterMetadata has no effect (BK-INIT-4)"
            );
        }
        Ok(())
    }

    /// B5, GatherWriterMetadata: Identify to every enabled writer (BK-INIT-5). Writers whose Identify
    /// fails are left out of the session (BK-INIT-6). Identify changes no writer state (ROLE-6).
    pub async fn gather_writer_metadata(&mut self) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.remember_handle();
        inner.check(
            "gather_writer_metadata",
            &[Step::Initialized],
            "it must come once, after initialize_for_backup (BK-INIT-5)",
        )?;
        let rules = inner.enable_rules.clone();
        let enabled = move |entry: &crate::registry::WriterEntry| {
            let mut on = true;
            for (selector, value) in &rules {
                if *selector == WriterSelector::Class(entry.registration.class_id) {
                    on = *value;
                }
            }
            for (selector, value) in &rules {
                if *selector == WriterSelector::Instance(entry.id) {
                    on = *value;
                }
            }
            on
        };
        let span = tracing::info_span!(parent: &inner.span, "gather_writer_metadata");
        inner.writers = gather(&inner.shared, inner.id, enabled)
            .instrument(span)
            .await;
        inner.gathered = true;
        inner.step = Step::Gathered;
        Ok(())
    }

    /// The WMDs of the writers that answered Identify (B6), with the coordinator's instance ids.
    pub fn writer_metadata(&self) -> Result<Vec<WriterMetadata>> {
        let inner = self.inner()?;
        inner.check_gathered("writer_metadata")?;
        Ok(inner.writers.iter().map(|w| w.metadata.clone()).collect())
    }

    /// B6, AddComponent (BK-DISC-3): the component must exist in that writer's WMD. Allowed after
    /// GatherWriterMetadata and before PrepareForBackup (BK-DISC-8). Which components may be added
    /// is the selection engine's business (§8); this keeps the BCD consistent.
    pub fn add_component(
        &mut self,
        writer: WriterInstanceId,
        logical_path: &str,
        name: &str,
    ) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check_writer_context("add_component")?;
        inner.check(
            "add_component",
            &[Step::Gathered],
            "it must come after gather_writer_metadata and before prepare_for_backup (BK-DISC-8)",
        )?;
        let sw = inner.writer(writer)?.clone();
        let component = sw.metadata.component(logical_path, name).ok_or_else(|| {
            CoordinatorError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!(
                    "writer {:?} ({writer}) has no component with logical path {logical_path:?} \
                         and name {name:?} in its metadata (BK-DISC-3)",
                    sw.entry.name()
                ),
            )
        })?;
        let entry = WriterComponents::new(
            sw.entry.registration.class_id,
            writer,
            sw.entry.registration.instance_name.clone(),
        );
        let record = ComponentRecord::new(component.component_type, logical_path, name);
        let phase = inner.phase;
        inner.bcd.add_component(phase, &entry, record)?;
        Ok(())
    }

    /// B6, SetBackupOptions for one component (BK-PREP-1).
    pub fn set_backup_options(
        &mut self,
        writer: WriterInstanceId,
        logical_path: &str,
        name: &str,
        options: &str,
    ) -> Result<()> {
        let inner = self.inner_mut()?;
        let phase = inner.phase;
        inner
            .bcd
            .edit(Party::Requester, phase, writer, logical_path, name)?
            .set_backup_options(options)?;
        Ok(())
    }

    /// B6, SetPreviousBackupStamp for one component (BK-PREP-1, INC-3).
    pub fn set_previous_backup_stamp(
        &mut self,
        writer: WriterInstanceId,
        logical_path: &str,
        name: &str,
        stamp: &str,
    ) -> Result<()> {
        let inner = self.inner_mut()?;
        let phase = inner.phase;
        inner
            .bcd
            .edit(Party::Requester, phase, writer, logical_path, name)?
            .set_previous_backup_stamp(stamp)?;
        Ok(())
    }

    /// B7, StartSnapshotSet: only one set can be in creation per host, until DoSnapshotSet ends or
    /// this session ends (LIMIT-4, VSS_E_SNAPSHOT_SET_IN_PROGRESS).
    pub fn start_snapshot_set(&mut self) -> Result<SnapshotSetId> {
        let inner = self.inner_mut()?;
        inner.check(
            "start_snapshot_set",
            &[Step::Initialized, Step::Gathered],
            "it must come after initialize_for_backup and before prepare_for_backup (B7)",
        )?;
        if let Some(set) = &inner.set {
            return Err(CoordinatorError::bad_state(
                "start_snapshot_set",
                format!(
                    "this session already started set {}; a session carries one set (ROLE-12)",
                    set.id
                ),
            ));
        }
        if inner.bcd.context() == SnapshotContext::All {
            return Err(CoordinatorError::new(
                codes::VSS_E_UNSUPPORTED_CONTEXT,
                "context ALL cannot create a snapshot set (CTX-5)",
            ));
        }
        let id = SnapshotSetId::new_random();
        let slot = inner.shared.claim_set(id)?;
        let phase = inner.phase;
        inner.bcd.set_snapshot_set(phase, id, Vec::new())?;
        inner.set = Some(SetState {
            id,
            slot: Some(slot),
            volumes: Vec::new(),
            created: false,
        });
        let _span = inner.span.enter();
        tracing::info!(set = %id, "snapshot set started");
        Ok(id)
    }

    /// IsVolumeSupported (SNAP-2): whether some provider can snapshot `volume` in this session's context.
    pub async fn is_volume_supported(&mut self, volume: &str) -> Result<bool> {
        let inner = self.inner_mut()?;
        inner.remember_handle();
        let context = inner.bcd.context();
        match inner
            .shared
            .choose_provider(&normalize_volume(volume)?, context, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if error.code() == codes::VSS_E_VOLUME_NOT_SUPPORTED => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// B8, AddToSnapshotSet: chooses the provider (PROV-SEL-1) or uses the one named, calls its
    /// BeginPrepareSnapshot (PROV-SEQ-1 step 1) and returns the new shadow copy's id. At most 64
    /// volumes per set (LIMIT-1), and a volume that already holds 512 shadow copies is refused with
    /// VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED (LIMIT-2).
    pub async fn add_to_snapshot_set(
        &mut self,
        volume: &str,
        provider: Option<ProviderId>,
    ) -> Result<SnapshotId> {
        let inner = self.inner_mut()?;
        inner.remember_handle();
        inner.check(
            "add_to_snapshot_set",
            &[Step::Initialized, Step::Gathered],
            "volumes are added after start_snapshot_set and before prepare_for_backup (B8)",
        )?;
        let volume = normalize_volume(volume)?;
        let context = inner.bcd.context();
        let Some(set) = inner.set.as_ref() else {
            return Err(CoordinatorError::bad_state(
                "add_to_snapshot_set",
                "start_snapshot_set must come first (B7)",
            ));
        };
        let set_id = set.id;
        if set.volumes.len() >= MAX_VOLUMES_PER_SET {
            return Err(CoordinatorError::new(
                codes::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED,
                format!(
                    "set {set_id} already holds {MAX_VOLUMES_PER_SET} volumes; cannot add {volume} (LIMIT-1)"
                ),
            ));
        }
        if set.volumes.iter().any(|v| v.volume == volume) {
            return Err(CoordinatorError::new(
                codes::VSS_E_OBJECT_ALREADY_EXISTS,
                format!("volume {volume} is already in set {set_id}"),
            ));
        }
        let span =
            tracing::info_span!(parent: &inner.span, "add_to_snapshot_set", set = %set_id, %volume);
        let shared = inner.shared.clone();
        let snapshot_id = SnapshotId::new_random();
        let chosen = async {
            check_snapshots_per_volume(&shared, &volume).await?;
            let chosen = shared.choose_provider(&volume, context, provider).await?;
            call_provider(
                &chosen,
                ProviderStep::BeginPrepareSnapshot,
                &format!("volume {volume} of set {set_id}"),
                Some(shared.config.provider_timeouts.call),
                chosen
                    .provider
                    .begin_prepare_snapshot(set_id, snapshot_id, &volume, context),
            )
            .await?;
            tracing::info!(provider = %chosen.info.name, snapshot = %snapshot_id, "volume added");
            Ok::<_, CoordinatorError>(chosen)
        }
        .instrument(span)
        .await?;
        let phase = inner.phase;
        let Some(set) = inner.set.as_mut() else {
            return Err(released());
        };
        set.volumes.push(PlannedVolume {
            volume,
            snapshot_id,
            provider: chosen,
        });
        let listed = set
            .volumes
            .iter()
            .map(|v| shadowcopy_metadata::bcd::VolumeSnapshot {
                volume: v.volume.clone(),
                snapshot_id: v.snapshot_id,
            })
            .collect();
        inner.bcd.set_snapshot_set(phase, set_id, listed)?;
        Ok(snapshot_id)
    }

    /// B9, PrepareForBackup: sent to the writers that take part, each with only its own records
    /// (BCD-8): in component mode the writers with at least one added component (SEL-5, BK-DISC-4),
    /// in volume mode every enabled writer that answered Identify (BK-DISC-5). Writer failures do
    /// not fail the call; they show in `gather_writer_status` (BK-PREP-5).
    pub async fn prepare_for_backup(&mut self) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.remember_handle();
        inner.check_writer_context("prepare_for_backup")?;
        inner.check(
            "prepare_for_backup",
            &[Step::Gathered],
            "it must come after gather_writer_metadata (B9)",
        )?;
        let component_mode = inner.bcd.backup_state().component_mode;
        let taking_part: Vec<Arc<SessionWriter>> = inner
            .writers
            .iter()
            .filter(|w| {
                WriterEventKind::PrepareForBackup.subscribed(w.entry.registration.subscribe_mask)
            })
            .filter(|w| {
                !component_mode
                    || inner
                        .bcd
                        .writer_instance(w.id())
                        .is_some_and(|c| !c.components().is_empty())
            })
            .cloned()
            .collect();
        inner.phase = Phase::PrepareForBackup;
        let limit = inner.shared.config.event_timeouts.prepare_for_backup;
        let backup_state = inner.bcd.backup_state();
        let sent: Vec<WriterComponents> = taking_part
            .iter()
            .map(|w| components_of(&inner.bcd, w))
            .collect();
        let span = tracing::info_span!(parent: &inner.span, "prepare_for_backup");
        let (set, context) = (inner.bcd.snapshot_set_id(), inner.bcd.context());
        let results = join_all(taking_part.iter().zip(&sent).map(|(writer, components)| {
            writer.flags().participant = true;
            send_event(
                writer,
                WriterEvent::PrepareForBackup {
                    set,
                    context,
                    backup_state,
                    components: components.clone(),
                },
                limit,
            )
        }))
        .instrument(span)
        .await;
        for ((writer, sent), result) in taking_part.iter().zip(&sent).zip(results) {
            let reply = settle(
                writer,
                WriterEventKind::PrepareForBackup,
                WriterState::Stable,
                result,
            );
            apply_components(
                &mut inner.bcd,
                Phase::PrepareForBackup,
                WriterEventKind::PrepareForBackup,
                writer,
                sent,
                reply.as_ref(),
            );
        }
        // Nobody edits the BCD again until PostSnapshot (BCD-7).
        inner.phase = Phase::SnapshotCreation;
        inner.step = Step::Prepared;
        Ok(())
    }

    /// B10/B14, GatherWriterStatus: the state and last failure of every writer that answered
    /// Identify in this session (WST-1, BK-INIT-6).
    pub fn gather_writer_status(&self) -> Result<Vec<WriterStatus>> {
        let inner = self.inner()?;
        inner.check_gathered("gather_writer_status")?;
        Ok(inner.writers.iter().map(|w| w.status()).collect())
    }

    /// B11, DoSnapshotSet: the sequence of BK-SNAP-2 (see `snapshot_set`). Fails with the
    /// provider's error if any provider step fails (BK-SNAP-8); the requester must then call
    /// `abort_backup` and never `backup_complete` (BK-SNAP-9). Writer vetoes at Freeze or Thaw do not
    /// fail it (BK-SNAP-7). The set-in-creation lock is released when it returns.
    pub async fn do_snapshot_set(&mut self) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.remember_handle();
        if inner.writer_context() {
            if !inner.gathered {
                return Err(CoordinatorError::bad_state(
                    "do_snapshot_set",
                    format!(
                        "gather_writer_metadata is required before DoSnapshotSet in context {} \
                         (BK-INIT-5, CTX-3)",
                        inner.bcd.context()
                    ),
                ));
            }
            inner.check(
                "do_snapshot_set",
                &[Step::Prepared],
                "prepare_for_backup must come first in a writer context (B9, BK-PREP-2)",
            )?;
        } else {
            inner.check(
                "do_snapshot_set",
                &[Step::Initialized, Step::Gathered],
                "it must come after start_snapshot_set and add_to_snapshot_set (B11)",
            )?;
        }
        if inner.bcd.context() == SnapshotContext::All {
            return Err(CoordinatorError::new(
                codes::VSS_E_UNSUPPORTED_CONTEXT,
                "context ALL cannot create a snapshot set (CTX-5)",
            ));
        }
        let writer_context = inner.writer_context();
        let writers: Vec<Arc<SessionWriter>> = if writer_context {
            inner
                .participants()
                .into_iter()
                .filter(|w| {
                    let flags = w.flags();
                    !flags.state.is_failed() && !flags.aborted
                })
                .collect()
        } else {
            Vec::new()
        };
        let Some(set) = inner.set.as_mut() else {
            return Err(CoordinatorError::bad_state(
                "do_snapshot_set",
                "start_snapshot_set must come first (B7)",
            ));
        };
        // The lock lives in this future: it is freed when DoSnapshotSet returns or is dropped (LIMIT-4).
        let _slot = set.slot.take();
        // Pessimistic: if this future is dropped half-way the session counts as failed (BK-SNAP-9).
        inner.step = Step::SnapshotsFailed;
        inner.phase = Phase::SnapshotCreation;
        let span = tracing::info_span!(
            parent: &inner.span,
            "snapshot_set",
            set = %set.id,
            volumes = set.volumes.len(),
            writers = writers.len()
        );
        let result =
            snapshot_set::run(&inner.shared, set.id, &set.volumes, writers, &mut inner.bcd)
                .instrument(span)
                .await;
        if result.is_ok() {
            set.created = true;
            inner.step = Step::SnapshotsDone;
            inner.phase = Phase::BackupCopying;
            // CFG-1 runs only here, after the set succeeded: a failed set must never cost an old
            // copy, so the cap is enforced by deleting after success rather than making room before.
            let context = inner.bcd.context();
            if context
                .attributes()
                .contains(SnapshotAttributes::CLIENT_ACCESSIBLE)
            {
                let span = tracing::info_span!(parent: &inner.span, "client_accessible_cap", set = %set.id);
                enforce_client_accessible_cap(&inner.shared, set.id, &set.volumes)
                    .instrument(span)
                    .await;
            }
        }
        result
    }

    /// The id of this session's set, once started.
    pub fn snapshot_set_id(&self) -> Option<SnapshotSetId> {
        self.inner.as_ref()?.set.as_ref().map(|s| s.id)
    }

    /// The properties of one shadow copy of this session's set (GetSnapshotProperties, SNAP-1).
    pub async fn snapshot_properties(&mut self, snapshot: SnapshotId) -> Result<SnapshotRecord> {
        let inner = self.inner_mut()?;
        inner.remember_handle();
        let planned = inner
            .set
            .as_ref()
            .and_then(|s| s.volumes.iter().find(|v| v.snapshot_id == snapshot))
            .ok_or_else(|| {
                CoordinatorError::new(
                    codes::VSS_E_OBJECT_NOT_FOUND,
                    format!("shadow copy {snapshot} is not in this session's set"),
                )
            })?;
        let records = call_provider(
            &planned.provider,
            ProviderStep::QuerySnapshots,
            &format!("shadow copy {snapshot} of {}", planned.volume),
            Some(inner.shared.config.provider_timeouts.call),
            planned.provider.provider.query_snapshots(),
        )
        .await?;
        records
            .into_iter()
            .find(|r| r.snapshot_id == snapshot)
            .ok_or_else(|| {
                CoordinatorError::new(
                    codes::VSS_E_OBJECT_NOT_FOUND,
                    format!(
                        "provider {} has no shadow copy {snapshot} of {}",
                        planned.provider.info.name, planned.volume
                    ),
                )
            })
    }

    /// B12, SetBackupSucceeded for one component, after copying and before BackupComplete (BK-COPY-4).
    pub fn set_backup_succeeded(
        &mut self,
        writer: WriterInstanceId,
        logical_path: &str,
        name: &str,
        succeeded: bool,
    ) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.check(
            "set_backup_succeeded",
            &[Step::SnapshotsDone],
            "it must come after a successful do_snapshot_set and before backup_complete (BK-COPY-4)",
        )?;
        let phase = inner.phase;
        inner
            .bcd
            .edit(Party::Requester, phase, writer, logical_path, name)?
            .set_backup_succeeded(succeeded)?;
        Ok(())
    }

    /// B13, BackupComplete: sent to the writers that handled PostSnapshot successfully (state
    /// WAITING_FOR_BACKUP_COMPLETE); the BCD is read-only from now on (BCD-7). Refused after a
    /// failed DoSnapshotSet (BK-END-2).
    pub async fn backup_complete(&mut self) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.remember_handle();
        inner.check_writer_context("backup_complete")?;
        if inner.step == Step::SnapshotsFailed {
            return Err(CoordinatorError::bad_state(
                "backup_complete",
                "BackupComplete must not follow a failed DoSnapshotSet; call abort_backup and \
                 release the session (BK-END-2, BK-SNAP-9)",
            ));
        }
        inner.check(
            "backup_complete",
            &[Step::SnapshotsDone],
            "it must come after a successful do_snapshot_set (B13)",
        )?;
        let Some(set) = inner.set.as_ref().map(|s| s.id) else {
            return Err(released());
        };
        inner.phase = Phase::BackupComplete;
        let recipients: Vec<Arc<SessionWriter>> = inner
            .participants()
            .into_iter()
            .filter(|w| w.status().state == WriterState::WaitingForBackupComplete)
            .collect();
        let sent: Vec<WriterComponents> = recipients
            .iter()
            .map(|w| components_of(&inner.bcd, w))
            .collect();
        let limit = inner.shared.config.event_timeouts.backup_complete;
        let span = tracing::info_span!(parent: &inner.span, "backup_complete", set = %set);
        let results = join_all(recipients.iter().zip(&sent).map(|(writer, components)| {
            send_event(
                writer,
                WriterEvent::BackupComplete {
                    set,
                    components: components.clone(),
                },
                limit,
            )
        }))
        .instrument(span)
        .await;
        for ((writer, sent), result) in recipients.iter().zip(&sent).zip(results) {
            let reply = settle(
                writer,
                WriterEventKind::BackupComplete,
                WriterState::Stable,
                result,
            );
            apply_components(
                &mut inner.bcd,
                Phase::BackupComplete,
                WriterEventKind::BackupComplete,
                writer,
                sent,
                reply.as_ref(),
            );
        }
        inner.step = Step::Completed;
        Ok(())
    }

    /// AbortBackup (BK-ABORT-1, BK-ABORT-2): Abort to every writer that got PrepareForBackup, except
    /// those that already handled PostSnapshot (BK-ABORT-4) or were already sent Abort (the
    /// coordinator knows, so a repeated call sends nothing twice). Before PrepareForBackup it only
    /// ends the session's work. A set that was started but not created is dropped without telling
    /// the providers (PROV-SEQ-2).
    pub async fn abort_backup(&mut self) -> Result<()> {
        let inner = self.inner_mut()?;
        inner.remember_handle();
        inner.check(
            "abort_backup",
            &[
                Step::Initialized,
                Step::Gathered,
                Step::Prepared,
                Step::SnapshotsDone,
                Step::SnapshotsFailed,
                Step::Aborted,
            ],
            "there is nothing to abort before initialize_for_backup or after backup_complete (BK-ABORT-2)",
        )?;
        if let Some(set) = inner.set.as_mut() {
            set.slot = None;
        }
        let set = inner.set.as_ref().map(|s| s.id);
        let participants = inner.participants();
        let span = tracing::info_span!(parent: &inner.span, "abort_backup");
        async {
            tracing::info!("backup aborted by the requester");
            match set {
                Some(set) => abort_writers(&inner.shared, set, &participants).await,
                None => abort_writers_without_set(&inner.shared, &participants).await,
            }
        }
        .instrument(span)
        .await;
        inner.step = Step::Aborted;
        Ok(())
    }

    /// The Backup Components Document as it stands (save it after DoSnapshotSet, BK-COPY-5).
    pub fn backup_components(&self) -> Result<&BackupComponents> {
        Ok(&self.inner()?.bcd)
    }

    /// B15, releases the session: BackupShutdown to every writer that took part, then deletion of
    /// the auto-release shadow copies (BK-END-4). Dropping the session does the same in the
    /// background (BK-END-6). Returns the first failure to delete a shadow copy.
    pub async fn release(mut self) -> Result<()> {
        match self.inner.take() {
            Some(inner) => release_inner(inner).await,
            None => Ok(()),
        }
    }
}

impl Drop for BackupSession {
    fn drop(&mut self) {
        if let Some(mut inner) = self.inner.take() {
            // The set-in-creation lock is freed now, not when the background release runs (LIMIT-4).
            if let Some(set) = inner.set.as_mut() {
                set.slot = None;
            }
            let shared = inner.shared.clone();
            let handle = inner.handle.clone();
            {
                let _span = inner.span.enter();
                tracing::info!("session dropped without release; releasing it (BK-END-6)");
            }
            shared.background.spawn(handle.as_ref(), async move {
                if let Err(error) = release_inner(inner).await {
                    tracing::error!("releasing a dropped session failed: {error}");
                }
            });
        }
    }
}

/// Deletes the auto-release copies of `set` that `provider` failed to delete at release, again
/// and again with a pause that doubles from 0.5 s up to a minute, until the provider succeeds. The
/// task is not one the host waits for at shutdown (a stopping daemon need not wait for a broken
/// provider): it ends with the runtime, and a copy still left then is deleted by the provider's
/// catalog recovery at the next start.
fn retry_auto_release(
    provider: crate::coordinator::RegisteredProvider,
    set: SnapshotSetId,
    limit: std::time::Duration,
) {
    let Ok(runtime) = Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut pause = std::time::Duration::from_millis(500);
        loop {
            tokio::time::sleep(pause).await;
            let deleted = call_provider(
                &provider,
                ProviderStep::DeleteSnapshots,
                &format!("auto-release set {set}, again after a failure at release"),
                Some(limit),
                provider.provider.delete_snapshots(DeleteTarget::Set(set)),
            )
            .await;
            match deleted {
                Ok(count) => {
                    tracing::info!(provider = %provider.info.name, %set, count, "auto-release shadow copies deleted after a failure at release");
                    return;
                }
                Err(error) if error.code() == codes::VSS_E_OBJECT_NOT_FOUND => return,
                Err(_) => pause = (pause * 2).min(std::time::Duration::from_secs(60)),
            }
        }
    });
}

fn released() -> CoordinatorError {
    CoordinatorError::bad_state("the call", "the session was released (ROLE-12)")
}

/// A volume as the set records it: an absolute mount point without a trailing `/` (BK-DISC-6
/// allows a trailing separator; it is not part of the name here).
///
/// Volumes are told apart by their names (a volume added twice, LIMIT-2 per volume), so a name
/// must have one spelling: `/srv/./db` or `/srv//db` would otherwise count apart from `/srv/db`,
/// and a NUL byte can name no mount point at all.
fn normalize_volume(volume: &str) -> Result<String> {
    if !volume.starts_with('/') {
        return Err(CoordinatorError::new(
            codes::E_INVALIDARG,
            format!("volume {volume:?} is not an absolute mount point"),
        ));
    }
    let trimmed = volume.trim_end_matches('/');
    if volume.contains('\0')
        || trimmed
            .split('/')
            .skip(1)
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(CoordinatorError::new(
            codes::E_INVALIDARG,
            format!(
                "volume {volume:?} is not a mount point as the kernel names it (a NUL byte, or an \
                 empty, `.` or `..` component); name it as /proc/self/mounts does, for example /srv/db"
            ),
        ));
    }
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

/// LIMIT-2: refuses a volume that already holds the most shadow copies a volume may hold
/// ([`crate::MAX_SNAPSHOTS_PER_VOLUME`], CFG-2), counting every context and provider.
async fn check_snapshots_per_volume(shared: &Shared, volume: &str) -> Result<()> {
    let max = shared.config.max_snapshots_per_volume;
    let count = shared
        .finished_snapshots()
        .await?
        .iter()
        .filter(|r| r.volume == volume)
        .count();
    if count >= max {
        return Err(CoordinatorError::new(
            codes::VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED,
            format!(
                "volume {volume} already holds {count} shadow copies, and a volume may hold at \
                 most {max} (LIMIT-2); delete old ones first, for example the oldest with \
                 `shadowcopy delete --oldest {volume}`"
            ),
        ));
    }
    Ok(())
}

/// CFG-1: after a client-accessible set was created, deletes the oldest client-accessible shadow
/// copies of each of its volumes until at most `max_client_accessible_per_volume` remain. The
/// copies of the new set are never deleted. Failures are logged and do not fail the set, which
/// exists already; the next client-accessible set tries again.
async fn enforce_client_accessible_cap(
    shared: &Shared,
    set: SnapshotSetId,
    volumes: &[PlannedVolume],
) {
    let cap = shared.config.max_client_accessible_per_volume.max(1);
    // Not `finished_snapshots`: the new set still holds the set-in-creation lock here, and its
    // copies count against the cap. Preparations of abandoned sets are no shadow copies.
    let records = match shared.query_all().await {
        Ok(mut records) => {
            records.retain(|r| !is_preparation(r));
            records
        }
        Err(error) => {
            tracing::warn!(
                "cannot list shadow copies to keep at most {cap} client-accessible copies per \
                 volume (CFG-1); none were deleted: {error}"
            );
            return;
        }
    };
    let mut excess_copies = Vec::new();
    for planned in volumes {
        let copies: Vec<&SnapshotRecord> = records
            .iter()
            .filter(|r| {
                r.volume == planned.volume
                    && r.attributes.contains(SnapshotAttributes::CLIENT_ACCESSIBLE)
            })
            .collect();
        let Some(excess) = copies.len().checked_sub(cap).filter(|n| *n > 0) else {
            continue;
        };
        let mut older: Vec<&SnapshotRecord> =
            copies.into_iter().filter(|r| r.set_id != set).collect();
        older.sort_by_key(|r| (r.created, r.snapshot_id));
        for record in older.into_iter().take(excess) {
            tracing::info!(
                snapshot = %record.snapshot_id,
                volume = %record.volume,
                created = record.created.0,
                "deleting the oldest client-accessible shadow copy: volume {} would keep more \
                 than {cap} (CFG-1, limits.max_client_accessible_per_volume)",
                record.volume
            );
            excess_copies.push(record.clone());
        }
    }
    if excess_copies.is_empty() {
        return;
    }
    let outcome = shared.delete_records(&excess_copies).await;
    if let Some((snapshot, error)) = outcome.first_failure {
        tracing::error!(
            %snapshot,
            deleted = outcome.deleted,
            "could not delete every client-accessible shadow copy over the cap (CFG-1): {error}"
        );
    }
}

/// Abort to the writers of a session that never started a set.
async fn abort_writers_without_set(shared: &Shared, writers: &[Arc<SessionWriter>]) {
    let claimed: Vec<&Arc<SessionWriter>> = writers.iter().filter(|w| w.claim_abort()).collect();
    join_all(
        claimed
            .into_iter()
            .map(|writer| crate::events::send_abort(shared, writer, None)),
    )
    .await;
}

/// BK-END-4: BackupShutdown to the writers that took part, then deletion of auto-release shadow
/// copies. Runs for an explicit release and for a dropped session alike.
async fn release_inner(inner: BackupInner) -> Result<()> {
    let span = tracing::info_span!(parent: &inner.span, "release");
    async move {
        let BackupInner {
            shared,
            writers,
            mut set,
            bcd,
            ..
        } = inner;
        if let Some(set) = set.as_mut() {
            set.slot = None;
        }
        let set_id = set.as_ref().map(|s| s.id);
        let participants: Vec<Arc<SessionWriter>> = writers
            .iter()
            .filter(|w| w.flags().participant)
            .cloned()
            .collect();
        let limit = shared.config.event_timeouts.backup_shutdown;
        let results = join_all(participants.iter().map(|writer| {
            send_event(writer, WriterEvent::BackupShutdown { set: set_id }, limit)
        }))
        .await;
        for (writer, result) in participants.iter().zip(results) {
            if let Err(failed) = result {
                let failure = failed.failure;
                writer.fail(WriterEventKind::BackupShutdown, failure);
            }
        }
        let mut outcome = Ok(());
        if let Some(set) = set.filter(|s| s.created) {
            let auto_release = !bcd
                .context()
                .attributes()
                .contains(SnapshotAttributes::NO_AUTO_RELEASE);
            if auto_release {
                for provider in providers_of(&set.volumes) {
                    let deleted = call_provider(
                        &provider,
                        ProviderStep::DeleteSnapshots,
                        &format!("auto-release set {}", set.id),
                        Some(shared.config.provider_timeouts.call),
                        provider.provider.delete_snapshots(DeleteTarget::Set(set.id)),
                    )
                    .await;
                    match deleted {
                        Ok(count) => tracing::info!(provider = %provider.info.name, count, "auto-release shadow copies deleted"),
                        Err(error) => {
                            retry_auto_release(
                                provider.clone(),
                                set.id,
                                shared.config.provider_timeouts.call,
                            );
                            if outcome.is_ok() {
                                outcome = Err(error);
                            }
                        }
                    }
                }
            }
        }
        tracing::info!("session released");
        outcome
    }
    .instrument(span)
    .await
}
