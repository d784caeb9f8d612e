//! A restore session: the requester calls of spec §4 (R1–R9), one typed method per call.

use shadowcopy_metadata::bcd::RestoreExtensions;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{FileRestoreStatus, RestoreType, RollforwardType};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::selection::{RestoreSelection, RestoreWriter};
use shadowcopy_metadata::wmd::FileSet;
use shadowcopy_metadata::{BackupComponents, WriterClassId, WriterMetadata};
use shadowcopy_protocol::v1;
use shadowcopy_protocol::v1::requester_request::Call;

use crate::error::RequesterError;
use crate::session::{Canceller, SessionCore};
use crate::types::{ComponentKey, WriterStatus};

/// One restore (ROLE-12): a `Requester.Session` stream driven through the steps of spec §4.
///
/// The methods are listed in VSS order; each sends one request, waits for its answer and takes
/// `&mut self`. The daemon enforces the order (docs/protocol.md §4.3). A restore cannot be
/// aborted (BK-ABORT-5): wait for [`RestoreSession::post_restore`], check the writer status, then
/// [`RestoreSession::release`] (RST-END-2). Dropping the session ends its stream, and the daemon
/// then releases it; writers in the middle of PreRestore or PostRestore finish them.
///
/// Component keys name the running writer instance (`writer_instance_id`), which the daemon
/// matches to the stored BCD by class id and persistent instance name (RST-INIT-4); the instance
/// ids in the stored documents name instances that are gone. [`RestoreSession::apply_restore_selection`]
/// and [`RestoreSession::component_key`] build such keys from the running writers of R3.
#[derive(Debug)]
pub struct RestoreSession {
    core: SessionCore,
    running: Option<Vec<WriterMetadata>>,
}

/// What [`RestoreSession::apply_restore_selection`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedRestoreSelection {
    /// The components selected for restore, keyed by their running writer instance; use these
    /// keys for the calls of R7 (`set_file_restore_status` and the others).
    pub selected: Vec<ComponentKey>,
    /// How many restore subcomponents were added (SEL-R-2).
    pub subcomponents: usize,
    /// Writers of the selection whose components were not selected, and why. Their files are
    /// restored without the writer (RST-PREP-2, RSV-1).
    pub skipped: Vec<SkippedWriter>,
}

/// A writer of a restore selection that takes no part in the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedWriter {
    /// The writer's name, from the stored WMD.
    pub writer_name: String,
    /// The writer's class id.
    pub class_id: WriterClassId,
    /// The persistent instance name, if any.
    pub instance_name: Option<String>,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Why a writer of a restore selection takes no part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// No running writer has its class id and persistent instance name, so selecting its
    /// components would fail with `VSS_E_OBJECT_NOT_FOUND` (RST-PREP-2).
    NotRunning,
    /// Its restore condition is NEVER: its data is restored without it (RSV-1).
    NotInvolved,
}

impl RestoreSession {
    pub(crate) fn new(core: SessionCore) -> Self {
        RestoreSession {
            core,
            running: None,
        }
    }

    /// R1, R2 (RST-INIT-1, RST-INIT-2): makes the session a restore session from the BCD stored
    /// with the backup and every WMD stored with it; the first call. The stored WMDs are the only
    /// source of file specifications.
    pub async fn initialize_for_restore(
        &mut self,
        bcd: &BackupComponents,
        stored_writers: &[WriterMetadata],
    ) -> Result<(), RequesterError> {
        let call = Call::InitializeForRestore(v1::InitializeForRestore {
            bcd_json: bcd.to_canonical_json(),
            stored_wmd_json: stored_writers
                .iter()
                .map(Document::to_canonical_json)
                .collect(),
        });
        self.core.call_empty("InitializeForRestore", call).await
    }

    /// R3 (RST-INIT-3): sends Identify to every writer and returns the WMDs of the running
    /// writers, parsed and validated. They say which writers run; their file specifications must
    /// not be used for the restore (RST-INIT-2).
    pub async fn gather_writer_metadata(&mut self) -> Result<Vec<WriterMetadata>, RequesterError> {
        let writers = self.core.gather_writer_metadata().await?;
        self.running = Some(writers.clone());
        Ok(writers)
    }

    /// R4 (SEL-R-1, RST-PREP-2, RST-PREP-8): selects or deselects a component of the stored BCD
    /// for restore. `target_instance_name` restores into another instance of the writer, named
    /// by its persistent instance name, which needs `WRITER_SUPPORTS_RESTORE_WITH_MOVE`.
    pub async fn select_for_restore(
        &mut self,
        component: &ComponentKey,
        selected: bool,
        target_instance_name: Option<&str>,
    ) -> Result<(), RequesterError> {
        let call = Call::SetSelectedForRestore(v1::SetSelectedForRestore {
            component: Some(component.to_proto()),
            selected,
            target_instance_name: target_instance_name.map(str::to_owned),
        });
        self.core.call_empty("SetSelectedForRestore", call).await
    }

    /// R4 (SEL-R-2): restores only this subcomponent of the selected set-defining `component`;
    /// it must be selectable for restore.
    pub async fn add_restore_subcomponent(
        &mut self,
        component: &ComponentKey,
        subcomponent_logical_path: &str,
        subcomponent_name: &str,
        repair: bool,
    ) -> Result<(), RequesterError> {
        let call = Call::AddRestoreSubcomponent(v1::AddRestoreSubcomponent {
            component: Some(component.to_proto()),
            subcomponent_logical_path: subcomponent_logical_path.to_owned(),
            subcomponent_name: subcomponent_name.to_owned(),
            repair,
        });
        self.core.call_empty("AddRestoreSubcomponent", call).await
    }

    /// Selects what a selection worked out by `shadowcopy_metadata::selection::resolve_restore`
    /// says, after [`RestoreSession::gather_writer_metadata`]: for every writer that takes part,
    /// [`RestoreSession::select_for_restore`] for each selected component and
    /// [`RestoreSession::add_restore_subcomponent`] for each of its restore subcomponents.
    ///
    /// Each writer of the selection is matched to a running writer by class id and persistent
    /// instance name (RST-INIT-4). A writer that is not running, or whose restore condition is
    /// NEVER, is skipped and listed in the result, because its data is restored without it
    /// (RST-PREP-2, RSV-1). Several running instances of one class without instance names cannot
    /// be told apart and fail the call with `E_INVALIDARG` (ROLE-7).
    pub async fn apply_restore_selection(
        &mut self,
        selection: &RestoreSelection,
    ) -> Result<AppliedRestoreSelection, RequesterError> {
        const NAME: &str = "apply_restore_selection";
        let mut applied = AppliedRestoreSelection::default();
        for writer in &selection.writers {
            let skipped = |reason| SkippedWriter {
                writer_name: writer.writer_name.clone(),
                class_id: writer.class_id,
                instance_name: writer.instance_name.clone(),
                reason,
            };
            if !writer.involve_writer {
                applied.skipped.push(skipped(SkipReason::NotInvolved));
                continue;
            }
            let Some(running) = self.running_instance(NAME, writer)? else {
                applied.skipped.push(skipped(SkipReason::NotRunning));
                continue;
            };
            for component in &writer.selected {
                let key = ComponentKey {
                    writer_instance_id: running,
                    writer_class_id: writer.class_id,
                    component_type: component.component_type,
                    logical_path: component.logical_path.clone(),
                    name: component.name.clone(),
                };
                self.select_for_restore(&key, true, None).await?;
                for sub in &component.subcomponents {
                    self.add_restore_subcomponent(&key, &sub.logical_path, &sub.name, sub.repair)
                        .await?;
                    applied.subcomponents += 1;
                }
                applied.selected.push(key);
            }
        }
        Ok(applied)
    }

    /// The key of a component of a writer of a restore selection (a selected component or a
    /// restored member), naming the running instance that restores it (RST-INIT-4). Fails when [`RestoreSession::gather_writer_metadata`] has
    /// not run yet, or when the writer is not running (`VSS_E_OBJECT_NOT_FOUND`).
    pub fn component_key(
        &self,
        writer: &RestoreWriter,
        logical_path: &str,
        name: &str,
    ) -> Result<ComponentKey, RequesterError> {
        const NAME: &str = "component_key";
        // A selected component keys the calls of R7 for its whole set; a member restored on its
        // own (a restore subcomponent, SEL-R-2) may be named too.
        let component_type = writer
            .selected_component(logical_path, name)
            .map(|c| c.component_type)
            .or_else(|| writer.member(logical_path, name).map(|m| m.component_type));
        let Some(component_type) = component_type else {
            return Err(RequesterError::Usage {
                call: NAME,
                code: &codes::VSS_E_OBJECT_NOT_FOUND,
                message: format!(
                    "writer `{}` restores no component `{}` in this selection",
                    writer.writer_name,
                    shadowcopy_metadata::logical_path::full_path(logical_path, name)
                ),
            });
        };
        let Some(running) = self.running_instance(NAME, writer)? else {
            return Err(RequesterError::Usage {
                call: NAME,
                code: &codes::VSS_E_OBJECT_NOT_FOUND,
                message: format!(
                    "writer `{}` (class {}{}) is not running, so its components are restored \
                     without it and take no component calls (RST-PREP-2)",
                    writer.writer_name,
                    writer.class_id,
                    instance_text(writer.instance_name.as_deref())
                ),
            });
        };
        Ok(ComponentKey {
            writer_instance_id: running,
            writer_class_id: writer.class_id,
            component_type,
            logical_path: logical_path.to_owned(),
            name: name.to_owned(),
        })
    }

    /// R4 (RST-PREP-4, RO-1): sets a component's restore options, at most once per component.
    pub async fn set_restore_options(
        &mut self,
        component: &ComponentKey,
        options: &str,
    ) -> Result<(), RequesterError> {
        let call = Call::SetRestoreOptions(v1::SetRestoreOptions {
            component: Some(component.to_proto()),
            options: options.to_owned(),
        });
        self.core.call_empty("SetRestoreOptions", call).await
    }

    /// R4, R7 (RST-END-1): says whether more restores of the component follow, for example later
    /// incremental backups; the writer runs no recovery while it is true.
    pub async fn set_additional_restores(
        &mut self,
        component: &ComponentKey,
        additional_restores: bool,
    ) -> Result<(), RequesterError> {
        let call = Call::SetAdditionalRestores(v1::SetAdditionalRestores {
            component: Some(component.to_proto()),
            additional_restores,
        });
        self.core.call_empty("SetAdditionalRestores", call).await
    }

    /// R4 (RST-PREP-7): sets the restore type; without it writers assume `BY_COPY`.
    pub async fn set_restore_state(
        &mut self,
        restore_type: RestoreType,
    ) -> Result<(), RequesterError> {
        let call = Call::SetRestoreState(v1::SetRestoreState {
            restore_type: restore_type.value(),
        });
        self.core.call_empty("SetRestoreState", call).await
    }

    /// R4 (BCD-6): sets the authoritative flag, roll-forward and restore name of a component;
    /// each needs its schema bit in the writer's WMD.
    pub async fn set_restore_extensions(
        &mut self,
        component: &ComponentKey,
        extensions: &RestoreExtensions,
    ) -> Result<(), RequesterError> {
        let (rollforward_type, rollforward_point) = match &extensions.rollforward {
            Some(rollforward) => (rollforward.rollforward_type, rollforward.point.clone()),
            None => (RollforwardType::Undefined, None),
        };
        let call = Call::SetRestoreExtensions(v1::SetRestoreExtensions {
            component: Some(component.to_proto()),
            authoritative: extensions.authoritative,
            rollforward_type: rollforward_type.value(),
            rollforward_point,
            restore_name: extensions.restore_name.clone(),
        });
        self.core.call_empty("SetRestoreExtensions", call).await
    }

    /// R5 (RST-PREP-5, RST-PREP-6): sends PreRestore to the writers with a selected component and
    /// waits. Writers may change restore targets and add directed targets: read
    /// [`RestoreSession::backup_components`] again afterwards.
    pub async fn pre_restore(&mut self) -> Result<(), RequesterError> {
        let call = Call::PreRestore(v1::PreRestore {});
        self.core.call_empty("PreRestore", call).await
    }

    /// R7 (RST-FILE-3): records how the restore of the component's files went.
    pub async fn set_file_restore_status(
        &mut self,
        component: &ComponentKey,
        status: FileRestoreStatus,
    ) -> Result<(), RequesterError> {
        let call = Call::SetFileRestoreStatus(v1::SetFileRestoreStatus {
            component: Some(component.to_proto()),
            status: status.value(),
        });
        self.core.call_empty("SetFileRestoreStatus", call).await
    }

    /// R7 (RST-FILE-3, WMD-6): records that an alternate location mapping of the stored WMD was
    /// used; `source` must match the mapping's file set exactly (BCD-10).
    pub async fn add_alternative_location_mapping(
        &mut self,
        component: &ComponentKey,
        source: &FileSet,
        destination: &str,
    ) -> Result<(), RequesterError> {
        let call = Call::AddAlternativeLocationMapping(v1::AddAlternativeLocationMapping {
            component: Some(component.to_proto()),
            source: Some(file_set(source)),
            destination: destination.to_owned(),
        });
        self.core
            .call_empty("AddAlternativeLocationMapping", call)
            .await
    }

    /// R7 (RST-FILE-3, NT-1): records that a file set of the stored WMD was restored to
    /// `alternate_path`; needs `WRITER_SUPPORTS_NEW_TARGET` (BCD-10).
    pub async fn add_new_target(
        &mut self,
        component: &ComponentKey,
        source: &FileSet,
        alternate_path: &str,
    ) -> Result<(), RequesterError> {
        let call = Call::AddNewTarget(v1::AddNewTarget {
            component: Some(component.to_proto()),
            source: Some(file_set(source)),
            alternate_path: alternate_path.to_owned(),
        });
        self.core.call_empty("AddNewTarget", call).await
    }

    /// R7 (RST-FILE-4): records that the ranges file of the partial file `path`/`filename` was
    /// restored to `ranges_file`.
    pub async fn set_ranges_file_path(
        &mut self,
        component: &ComponentKey,
        path: &str,
        filename: &str,
        ranges_file: &str,
    ) -> Result<(), RequesterError> {
        let call = Call::SetRangesFilePath(v1::SetRangesFilePath {
            component: Some(component.to_proto()),
            path: path.to_owned(),
            filename: filename.to_owned(),
            ranges_file: ranges_file.to_owned(),
        });
        self.core.call_empty("SetRangesFilePath", call).await
    }

    /// R8 (RST-END-1, RST-END-2): sends PostRestore to the writers and waits.
    pub async fn post_restore(&mut self) -> Result<(), RequesterError> {
        let call = Call::PostRestore(v1::PostRestore {});
        self.core.call_empty("PostRestore", call).await
    }

    /// R6, R9 (WST-2, RST-END-2): the status of every writer that answered Identify in this
    /// session. After PostRestore it also frees the writers' session slots.
    pub async fn gather_writer_status(&mut self) -> Result<Vec<WriterStatus>, RequesterError> {
        self.core.gather_writer_status().await
    }

    /// R6 (RST-PREP-5): the session's BCD, parsed and validated, with the writers' changes of
    /// PreRestore.
    pub async fn backup_components(&mut self) -> Result<BackupComponents, RequesterError> {
        self.core.backup_components().await
    }

    /// R9: ends the session and waits for the daemon to acknowledge; call it only after
    /// PostRestore has returned (RST-END-2).
    ///
    /// Closing the session's stream is the release (docs/protocol.md §4.1). When this returns
    /// `Ok`, the daemon has answered every call, has read the end of the session and has closed
    /// the stream cleanly. An `Err` means the connection broke first; the daemon releases the
    /// session all the same (BK-END-6).
    pub async fn release(self) -> Result<(), RequesterError> {
        self.core.release().await
    }

    /// A handle to cancel the asynchronous call running in this session from another task
    /// (ROLE-3).
    pub fn canceller(&self) -> Canceller {
        self.core.canceller()
    }

    /// The running writers' WMDs from the last [`RestoreSession::gather_writer_metadata`];
    /// empty before it.
    pub fn writers(&self) -> &[WriterMetadata] {
        self.running.as_deref().unwrap_or_default()
    }

    /// The instance id of the running writer that restores `writer`'s data: same class id and
    /// persistent instance name (RST-INIT-4). `None` when none runs.
    fn running_instance(
        &self,
        call: &'static str,
        writer: &RestoreWriter,
    ) -> Result<Option<shadowcopy_metadata::WriterInstanceId>, RequesterError> {
        let Some(running) = &self.running else {
            return Err(RequesterError::Usage {
                call,
                code: &codes::VSS_E_BAD_STATE,
                message: "the running writers are not known yet: call gather_writer_metadata \
                          first, after initialize_for_restore (R3, RST-INIT-3)"
                    .to_owned(),
            });
        };
        let matching: Vec<&WriterMetadata> = running
            .iter()
            .filter(|wmd| {
                wmd.identity.class_id == writer.class_id
                    && wmd.identity.instance_name == writer.instance_name
            })
            .collect();
        match matching.as_slice() {
            [] => Ok(None),
            [only] => Ok(Some(only.identity.instance_id)),
            several => several
                .iter()
                .find(|wmd| wmd.identity.instance_id == writer.instance_id)
                .map(|wmd| Some(wmd.identity.instance_id))
                .ok_or_else(|| RequesterError::Usage {
                    call,
                    code: &codes::E_INVALIDARG,
                    message: format!(
                        "{} running instances of writer `{}` (class {}{}) match, so the one that \
                         restores its data cannot be chosen; give each instance of the class its \
                         own persistent instance name (ROLE-7, RST-INIT-4)",
                        several.len(),
                        writer.writer_name,
                        writer.class_id,
                        instance_text(writer.instance_name.as_deref())
                    ),
                }),
        }
    }
}

/// The wire form of a file set.
fn file_set(set: &FileSet) -> v1::FileSet {
    v1::FileSet {
        path: set.path.clone(),
        filespec: set.filespec.clone(),
        recursive: set.recursive,
    }
}

/// `, instance "name"` for messages, or nothing.
fn instance_text(instance_name: Option<&str>) -> String {
    instance_name
        .map(|name| format!(", instance `{name}`"))
        .unwrap_or_default()
}
