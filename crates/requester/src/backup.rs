//! A backup session: the requester calls of spec §3 (B1–B15), one typed method per call.

use shadowcopy_metadata::bcd::{BackupState, VolumeSnapshot};
use shadowcopy_metadata::enums::{SnapshotAttributes, SnapshotContext};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::selection::BackupSelection;
use shadowcopy_metadata::{BackupComponents, SnapshotId, SnapshotSetId, WriterMetadata};
use shadowcopy_protocol::v1::requester_request::Call;
use shadowcopy_protocol::v1::requester_response::Result as Reply;
use shadowcopy_protocol::v1::{self, set_writer_enabled};

use crate::error::RequesterError;
use crate::session::{Canceller, SessionCore};
use crate::types::{
    self, ComponentKey, SnapshotProperties, VolumeSupport, WriterStatus, WriterTarget,
};

/// One backup (ROLE-12): a `Requester.Session` stream driven through the steps of spec §3.
///
/// The methods are listed in VSS order. Each sends one request and waits for its answer, and
/// takes `&mut self`, so calls never overlap on a session. The daemon enforces the call order
/// (docs/protocol.md §4.2) and answers a call out of order with `VSS_E_BAD_STATE`, which arrives
/// here as [`RequesterError::Vss`] with the hint. A failed call does not end the session: after a
/// failed `DoSnapshotSet` call [`BackupSession::abort_backup`] (BK-SNAP-9), then release.
///
/// End the session with [`BackupSession::release`]. Dropping it ends the stream too, and the
/// daemon then releases the session in the same way (BK-END-6): it aborts what runs, sends
/// BackupShutdown and deletes the auto-release shadow copies.
#[derive(Debug)]
pub struct BackupSession {
    core: SessionCore,
    writers: Vec<WriterMetadata>,
    set_id: Option<SnapshotSetId>,
    snapshots: Vec<VolumeSnapshot>,
}

impl BackupSession {
    pub(crate) fn new(core: SessionCore) -> Self {
        BackupSession {
            core,
            writers: Vec::new(),
            set_id: None,
            snapshots: Vec::new(),
        }
    }

    /// B1 (BK-INIT-1): makes the session a backup session; the first call.
    ///
    /// `stored` is a stored BCD, only for backing up an imported transportable shadow copy set;
    /// pass `None` for an ordinary backup, which starts with an empty BCD.
    pub async fn initialize_for_backup(
        &mut self,
        stored: Option<&BackupComponents>,
    ) -> Result<(), RequesterError> {
        let call = Call::InitializeForBackup(v1::InitializeForBackup {
            bcd_json: stored.map(Document::to_canonical_json),
        });
        self.core.call_empty("InitializeForBackup", call).await
    }

    /// B2 (BK-INIT-2, CTX-1, CTX-6): sets the shadow copy context, with the modifier bits CTX-6
    /// allows (for example `SnapshotAttributes::TRANSPORTABLE`), before the first
    /// `AddToSnapshotSet`. Without this call the context is `BACKUP`.
    pub async fn set_context(
        &mut self,
        context: SnapshotContext,
        modifiers: SnapshotAttributes,
    ) -> Result<(), RequesterError> {
        let call = Call::SetContext(v1::SetContext {
            context: context.value() | modifiers.bits(),
        });
        self.core.call_empty("SetContext", call).await
    }

    /// B3 (BK-INIT-3): records component or volume mode, bootable system state, the backup type
    /// and partial-file support; required before `PrepareForBackup`.
    pub async fn set_backup_state(&mut self, state: BackupState) -> Result<(), RequesterError> {
        let call = Call::SetBackupState(v1::SetBackupState {
            component_mode: state.component_mode,
            bootable_system_state: state.bootable_system_state,
            backup_type: state.backup_type.value(),
            partial_file_support: state.partial_file_support,
        });
        self.core.call_empty("SetBackupState", call).await
    }

    /// B4 (BK-INIT-4): leaves a writer class or instance out of the session, or takes it back in;
    /// only before `GatherWriterMetadata`.
    pub async fn set_writer_enabled(
        &mut self,
        writer: impl Into<WriterTarget>,
        enabled: bool,
    ) -> Result<(), RequesterError> {
        let writer = match writer.into() {
            WriterTarget::Class(id) => set_writer_enabled::Writer::WriterClassId(id.to_string()),
            WriterTarget::Instance(id) => {
                set_writer_enabled::Writer::WriterInstanceId(id.to_string())
            }
        };
        let call = Call::SetWriterEnabled(v1::SetWriterEnabled {
            writer: Some(writer),
            enabled,
        });
        self.core.call_empty("SetWriterEnabled", call).await
    }

    /// B5 (BK-INIT-5, BK-INIT-6): sends Identify to every enabled writer and returns their WMDs,
    /// each parsed and validated. Writers whose Identify failed are not in the list.
    ///
    /// The session keeps a copy ([`BackupSession::writers`]): store every one of them with the
    /// backup, because only they hold the file specifications for the restore (BK-COPY-5, WMD-16).
    pub async fn gather_writer_metadata(&mut self) -> Result<Vec<WriterMetadata>, RequesterError> {
        let writers = self.core.gather_writer_metadata().await?;
        self.writers.clone_from(&writers);
        Ok(writers)
    }

    /// B6 (BK-DISC-3): adds a component of a writer's WMD to the BCD; in component mode a writer
    /// with no component added takes no further part (BK-DISC-4).
    pub async fn add_component(&mut self, component: &ComponentKey) -> Result<(), RequesterError> {
        let call = Call::AddComponent(v1::AddComponent {
            component: Some(component.to_proto()),
        });
        self.core.call_empty("AddComponent", call).await
    }

    /// Calls [`BackupSession::add_component`] for every explicitly included component of a
    /// selection worked out by `shadowcopy_metadata::selection::resolve_backup`, in its order:
    /// exactly the components that get BCD records (BCD-3). Returns their keys, for
    /// [`BackupSession::set_backup_succeeded`] later (BK-COPY-4).
    ///
    /// The selection's backup state is not sent; call [`BackupSession::set_backup_state`] with
    /// the same backup type, component mode and bootable-system-state flag (BK-INIT-3). In volume
    /// mode the selection has no components and nothing is added (SEL-6).
    pub async fn apply_selection(
        &mut self,
        selection: &BackupSelection,
    ) -> Result<Vec<ComponentKey>, RequesterError> {
        let mut added = Vec::new();
        for writer in &selection.writers {
            for component in writer.explicit_components() {
                let key = ComponentKey {
                    writer_instance_id: writer.instance_id,
                    writer_class_id: writer.class_id,
                    component_type: component.component_type,
                    logical_path: component.logical_path.clone(),
                    name: component.name.clone(),
                };
                self.add_component(&key).await?;
                added.push(key);
            }
        }
        Ok(added)
    }

    /// B6 (BK-PREP-1): sets a component's writer-specific backup options.
    pub async fn set_backup_options(
        &mut self,
        component: &ComponentKey,
        options: &str,
    ) -> Result<(), RequesterError> {
        let call = Call::SetBackupOptions(v1::SetBackupOptions {
            component: Some(component.to_proto()),
            options: options.to_owned(),
        });
        self.core.call_empty("SetBackupOptions", call).await
    }

    /// B6 (INC-3): hands the component's stamp from the base backup back to its writer, for an
    /// incremental or differential backup.
    pub async fn set_previous_backup_stamp(
        &mut self,
        component: &ComponentKey,
        previous_stamp: &str,
    ) -> Result<(), RequesterError> {
        let call = Call::SetPreviousBackupStamp(v1::SetPreviousBackupStamp {
            component: Some(component.to_proto()),
            previous_stamp: previous_stamp.to_owned(),
        });
        self.core.call_empty("SetPreviousBackupStamp", call).await
    }

    /// B7 (LIMIT-4): starts the session's shadow copy set. Another set in creation on the host
    /// makes it fail with `VSS_E_SNAPSHOT_SET_IN_PROGRESS`; retry later.
    pub async fn start_snapshot_set(&mut self) -> Result<SnapshotSetId, RequesterError> {
        const NAME: &str = "StartSnapshotSet";
        let call = Call::StartSnapshotSet(v1::StartSnapshotSet {});
        let started = match self.core.call(NAME, call).await? {
            Some(Reply::SnapshotSetStarted(started)) => started,
            other => return Err(self.core.wrong_result(NAME, "SnapshotSetStarted", &other)),
        };
        let set_id = types::id("set_id", &started.set_id)
            .map_err(|message| RequesterError::protocol(self.core.socket(), NAME, message))?;
        self.set_id = Some(set_id);
        Ok(set_id)
    }

    /// B8 (SNAP-2, PROV-R-1): asks whether a volume, named by its mount point, can be
    /// shadow-copied in the session's context, by `provider` or by any provider.
    pub async fn is_volume_supported(
        &mut self,
        volume: &str,
        provider: Option<ProviderId>,
    ) -> Result<VolumeSupport, RequesterError> {
        const NAME: &str = "IsVolumeSupported";
        let call = Call::IsVolumeSupported(v1::IsVolumeSupported {
            volume: volume.to_owned(),
            provider_id: provider.map(|id| id.to_string()),
        });
        let support = match self.core.call(NAME, call).await? {
            Some(Reply::VolumeSupport(support)) => support,
            other => return Err(self.core.wrong_result(NAME, "VolumeSupport", &other)),
        };
        VolumeSupport::from_proto(support)
            .map_err(|message| RequesterError::protocol(self.core.socket(), NAME, message))
    }

    /// B8 (BK-DISC-6, PROV-SEL-1): adds a volume, named by its mount point, to the set and
    /// returns the id its shadow copy will have. `provider` picks the provider; `None` lets the
    /// daemon choose. Add every volume that holds files of selected components, including volumes
    /// reached through mount points.
    pub async fn add_to_snapshot_set(
        &mut self,
        volume: &str,
        provider: Option<ProviderId>,
    ) -> Result<SnapshotId, RequesterError> {
        const NAME: &str = "AddToSnapshotSet";
        let call = Call::AddToSnapshotSet(v1::AddToSnapshotSet {
            volume: volume.to_owned(),
            provider_id: provider.map(|id| id.to_string()),
        });
        let added = match self.core.call(NAME, call).await? {
            Some(Reply::SnapshotAdded(added)) => added,
            other => return Err(self.core.wrong_result(NAME, "SnapshotAdded", &other)),
        };
        let snapshot_id = types::id("snapshot_id", &added.snapshot_id)
            .map_err(|message| RequesterError::protocol(self.core.socket(), NAME, message))?;
        self.snapshots.push(VolumeSnapshot {
            volume: volume.to_owned(),
            snapshot_id,
        });
        Ok(snapshot_id)
    }

    /// B9 (BK-PREP-1 to BK-PREP-6): sends PrepareForBackup to the writers that take part and
    /// waits. A writer's veto does not fail the call: check
    /// [`BackupSession::gather_writer_status`] afterwards (BK-PREP-5). From now on, stopping the
    /// backup needs [`BackupSession::abort_backup`] (BK-ABORT-2).
    pub async fn prepare_for_backup(&mut self) -> Result<(), RequesterError> {
        let call = Call::PrepareForBackup(v1::PrepareForBackup {});
        self.core.call_empty("PrepareForBackup", call).await
    }

    /// B10, B14 (WST-1, WST-2, BK-END-3): the status of every writer that answered Identify in
    /// this session. Call it after `PrepareForBackup`, `DoSnapshotSet` and `BackupComplete`; after
    /// `BackupComplete` it also frees the writers' session slots (WST-5).
    pub async fn gather_writer_status(&mut self) -> Result<Vec<WriterStatus>, RequesterError> {
        self.core.gather_writer_status().await
    }

    /// B11 (BK-SNAP-1 to BK-SNAP-12): creates the shadow copy set and waits until it is complete
    /// or has failed. Writer vetoes in Freeze or Thaw do not fail it (BK-SNAP-7); check the
    /// writer status. If it fails, call [`BackupSession::abort_backup`] and never
    /// [`BackupSession::backup_complete`] (BK-SNAP-9).
    pub async fn do_snapshot_set(&mut self) -> Result<(), RequesterError> {
        let call = Call::DoSnapshotSet(v1::DoSnapshotSet {});
        self.core.call_empty("DoSnapshotSet", call).await
    }

    /// B12 (SNAP-1, BK-COPY-1): the properties of one shadow copy of the session's set, with the
    /// device object ([`SnapshotProperties::snapshot_path`]) to read files from.
    pub async fn snapshot_properties(
        &mut self,
        snapshot_id: SnapshotId,
    ) -> Result<SnapshotProperties, RequesterError> {
        const NAME: &str = "GetSnapshotProperties";
        let call = Call::GetSnapshotProperties(v1::GetSnapshotProperties {
            snapshot_id: snapshot_id.to_string(),
        });
        let properties = match self.core.call(NAME, call).await? {
            Some(Reply::SnapshotProperties(properties)) => properties,
            other => return Err(self.core.wrong_result(NAME, "SnapshotProperties", &other)),
        };
        SnapshotProperties::from_proto(properties)
            .map_err(|message| RequesterError::protocol(self.core.socket(), NAME, message))
    }

    /// B12 (BK-COPY-4): records whether a component and its implicit subcomponents were saved
    /// completely; required for every explicitly included component before `BackupComplete`.
    pub async fn set_backup_succeeded(
        &mut self,
        component: &ComponentKey,
        succeeded: bool,
    ) -> Result<(), RequesterError> {
        let call = Call::SetBackupSucceeded(v1::SetBackupSucceeded {
            component: Some(component.to_proto()),
            succeeded,
        });
        self.core.call_empty("SetBackupSucceeded", call).await
    }

    /// B13 (BK-END-1, BK-END-2): sends BackupComplete to the writers and waits. Writers may
    /// truncate logs now, so call it only once the data is really secured, and never after a
    /// failed `DoSnapshotSet`.
    pub async fn backup_complete(&mut self) -> Result<(), RequesterError> {
        let call = Call::BackupComplete(v1::BackupComplete {});
        self.core.call_empty("BackupComplete", call).await
    }

    /// BK-ABORT-1 to BK-ABORT-6: aborts the backup; writers that have not handled PostSnapshot get
    /// Abort. Required to stop a backup after `PrepareForBackup` and after a failed
    /// `DoSnapshotSet`; before `PrepareForBackup`, releasing is enough.
    pub async fn abort_backup(&mut self) -> Result<(), RequesterError> {
        let call = Call::AbortBackup(v1::AbortBackup {});
        self.core.call_empty("AbortBackup", call).await
    }

    /// BK-COPY-5: the session's BCD, parsed and validated. The BCD to store with the backup must
    /// be read after `DoSnapshotSet`, because PostSnapshot may still change it; store it with
    /// every WMD of [`BackupSession::writers`].
    pub async fn backup_components(&mut self) -> Result<BackupComponents, RequesterError> {
        self.core.backup_components().await
    }

    /// B15 (BK-END-4, BK-END-6): ends the session and waits for the daemon to acknowledge.
    ///
    /// Closes the session's stream, which is how the protocol releases a session: the daemon
    /// aborts a backup that is still running, sends BackupShutdown with the set id to the writers
    /// and deletes the auto-release shadow copies (docs/protocol.md §4.1). `release` then waits
    /// until the daemon has ended its side of the stream as well. When it returns `Ok`, the daemon
    /// has answered every call, has read the end of the session and has closed the stream
    /// cleanly; the protocol does not state whether the daemon ends its side before or after the
    /// BackupShutdown events are delivered, so a requester must not rely on the writers having
    /// handled BackupShutdown by then. An `Err` means the connection broke first; the daemon
    /// releases the session all the same (BK-END-6). There is no time limit: wrap the call in
    /// `tokio::time::timeout` to bound it, and dropping the future still ends the session.
    pub async fn release(self) -> Result<(), RequesterError> {
        self.core.release().await
    }

    /// A handle to cancel the asynchronous call running in this session from another task
    /// (ROLE-3).
    pub fn canceller(&self) -> Canceller {
        self.core.canceller()
    }

    /// The WMDs of the last [`BackupSession::gather_writer_metadata`]; empty before it.
    pub fn writers(&self) -> &[WriterMetadata] {
        &self.writers
    }

    /// The set id [`BackupSession::start_snapshot_set`] returned, if it was called.
    pub fn snapshot_set_id(&self) -> Option<SnapshotSetId> {
        self.set_id
    }

    /// The volumes added with [`BackupSession::add_to_snapshot_set`], with their snapshot ids, in
    /// the order added.
    pub fn snapshots(&self) -> &[VolumeSnapshot] {
        &self.snapshots
    }
}
