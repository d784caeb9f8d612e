//! The Backup Components Document (spec §7): the requester's record of one backup or restore.
//!
//! The BCD lists the explicitly included components of each writer (BCD-2, BCD-3) and the operation
//! state that requester and writers exchange through them. Who may change which field, and when, is
//! the table of BCD-6 and the windows of BCD-7. Here that table is [`RecordField::access`], and every
//! change goes through it:
//! - the requester and the writers edit a record through a [`RecordEditor`], which checks the field's
//!   owner and window before it writes;
//! - the coordinator applies the records a writer sends back with
//!   [`BackupComponents::apply_writer_changes`], which compares them field by field and refuses any
//!   change the writer was not allowed to make (BCD-11), so a writer cannot bypass the editor.
//!
//! Fields are private; readers use the getters.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::codes::{self, ErrorCode};
use crate::enums::{
    BackupType, ComponentType, FileRestoreStatus, RestoreTarget, RestoreType, RollforwardType,
    SnapshotContext,
};
use crate::ids::{SnapshotId, SnapshotSetId, VssTimestamp, WriterClassId, WriterInstanceId};
use crate::logical_path;
use crate::wmd::{AlternateLocationMapping, FileSet};

/// The steps of a backup or restore during which the BCD may change (BCD-6, BCD-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Backup, after GatherWriterMetadata and before PrepareForBackup (B4–B8): the requester
    /// adds components, options and previous stamps.
    BackupDiscovery,
    /// The PrepareForBackup event (B9): writers may edit their records.
    PrepareForBackup,
    /// PrepareForSnapshot, Freeze and Thaw (B11): nobody edits the BCD.
    SnapshotCreation,
    /// The PostSnapshot event (B11): writers may edit their records.
    PostSnapshot,
    /// After DoSnapshotSet (B12): the requester copies files and records success.
    BackupCopying,
    /// BackupComplete and after (B13–B15): the BCD is read-only.
    BackupComplete,
    /// Restore, before PreRestore (R4): the requester selects and sets options.
    RestoreSelection,
    /// The PreRestore event (R5): writers may edit their records.
    PreRestore,
    /// Between PreRestore and PostRestore (R7): the requester copies files and records results.
    RestoreCopying,
    /// The PostRestore event (R8): writers may edit their records.
    PostRestore,
    /// After PostRestore (R9): the BCD is read-only.
    RestoreDone,
}

impl Phase {
    /// The phases in which writers may edit their records at all (BCD-7).
    pub const WRITER_WINDOWS: &'static [Phase] = &[
        Phase::PrepareForBackup,
        Phase::PostSnapshot,
        Phase::PreRestore,
        Phase::PostRestore,
    ];

    /// Whether this phase belongs to a restore.
    pub const fn is_restore(self) -> bool {
        matches!(
            self,
            Phase::RestoreSelection
                | Phase::PreRestore
                | Phase::RestoreCopying
                | Phase::PostRestore
                | Phase::RestoreDone
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Phase::BackupDiscovery => "backup discovery (before PrepareForBackup)",
            Phase::PrepareForBackup => "PrepareForBackup",
            Phase::SnapshotCreation => "snapshot creation (PrepareForSnapshot, Freeze, Thaw)",
            Phase::PostSnapshot => "PostSnapshot",
            Phase::BackupCopying => "backup copying (after DoSnapshotSet)",
            Phase::BackupComplete => "BackupComplete",
            Phase::RestoreSelection => "restore selection (before PreRestore)",
            Phase::PreRestore => "PreRestore",
            Phase::RestoreCopying => "restore copying (between PreRestore and PostRestore)",
            Phase::PostRestore => "PostRestore",
            Phase::RestoreDone => "after PostRestore",
        };
        f.write_str(text)
    }
}

/// Who is editing the BCD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// The requester that owns the session.
    Requester,
    /// A writer, editing its own components.
    Writer,
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Party::Requester => "the requester",
            Party::Writer => "a writer",
        })
    }
}

/// Every field of a component record that can change after the record exists (BCD-6).
///
/// The identity fields (type, logical path, name) are set when the record is created and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordField {
    /// Writer-specific backup options (BK-PREP-1).
    BackupOptions,
    /// The stamp of the base backup, handed back to the writer (INC-3).
    PreviousBackupStamp,
    /// The writer's stamp for this backup (INC-3).
    BackupStamp,
    /// Private backup metadata.
    BackupMetadata,
    /// Partial files (PF-1).
    PartialFiles,
    /// Differenced files (DF-1).
    DifferencedFiles,
    /// The prepare-for-backup failure message (ERR-4).
    PrepareForBackupFailureMessage,
    /// The post-snapshot failure message (ERR-4).
    PostSnapshotFailureMessage,
    /// Whether the component was backed up (BK-COPY-4).
    BackupSucceeded,
    /// Whether the component is selected for restore (SEL-R-1).
    SelectedForRestore,
    /// Restore subcomponents (SEL-R-2).
    RestoreSubcomponents,
    /// Writer-specific restore options (RST-PREP-4).
    RestoreOptions,
    /// Authoritative restore, roll-forward and restore name (extended API).
    RestoreExtensions,
    /// Whether more restores follow (RST-END-1).
    AdditionalRestores,
    /// The restore target (RT-1).
    RestoreTarget,
    /// Directed targets.
    DirectedTargets,
    /// Restore metadata.
    RestoreMetadata,
    /// The pre-restore failure message.
    PreRestoreFailureMessage,
    /// New targets used (RST-FILE-3).
    NewTargets,
    /// Alternate mappings used (RST-FILE-3).
    AlternateMappingsUsed,
    /// Ranges-file path overrides (RST-FILE-4).
    RangesFileOverrides,
    /// The file restore status (RST-FILE-3).
    FileRestoreStatus,
    /// The post-restore failure message.
    PostRestoreFailureMessage,
    /// A failure with code, application code and text (extended API).
    Failure,
}

/// The owner of a field and the phases in which it may change (one row of BCD-6).
#[derive(Debug, Clone, Copy)]
pub struct FieldAccess {
    /// Who writes the field.
    pub owner: Party,
    /// When.
    pub windows: &'static [Phase],
}

impl RecordField {
    /// Every field, in the order of the BCD-6 table.
    pub const ALL: &'static [RecordField] = &[
        RecordField::BackupOptions,
        RecordField::PreviousBackupStamp,
        RecordField::BackupStamp,
        RecordField::BackupMetadata,
        RecordField::PartialFiles,
        RecordField::DifferencedFiles,
        RecordField::PrepareForBackupFailureMessage,
        RecordField::PostSnapshotFailureMessage,
        RecordField::BackupSucceeded,
        RecordField::SelectedForRestore,
        RecordField::RestoreSubcomponents,
        RecordField::RestoreOptions,
        RecordField::RestoreExtensions,
        RecordField::AdditionalRestores,
        RecordField::RestoreTarget,
        RecordField::DirectedTargets,
        RecordField::RestoreMetadata,
        RecordField::PreRestoreFailureMessage,
        RecordField::NewTargets,
        RecordField::AlternateMappingsUsed,
        RecordField::RangesFileOverrides,
        RecordField::FileRestoreStatus,
        RecordField::PostRestoreFailureMessage,
        RecordField::Failure,
    ];

    /// Who may write this field and when: the BCD-6 table, narrowed by the windows of BCD-7.
    pub const fn access(self) -> FieldAccess {
        use Party::{Requester, Writer};
        use Phase::*;
        let (owner, windows): (Party, &'static [Phase]) = match self {
            RecordField::BackupOptions | RecordField::PreviousBackupStamp => {
                (Requester, &[BackupDiscovery])
            }
            // A stamp is set in PostSnapshot, or in PrepareForBackup when no snapshot is taken (INC-3).
            RecordField::BackupStamp
            | RecordField::BackupMetadata
            | RecordField::PartialFiles
            | RecordField::DifferencedFiles => (Writer, &[PrepareForBackup, PostSnapshot]),
            RecordField::PrepareForBackupFailureMessage => (Writer, &[PrepareForBackup]),
            RecordField::PostSnapshotFailureMessage => (Writer, &[PostSnapshot]),
            RecordField::BackupSucceeded => (Requester, &[BackupCopying]),
            RecordField::SelectedForRestore
            | RecordField::RestoreSubcomponents
            | RecordField::RestoreOptions
            | RecordField::RestoreExtensions => (Requester, &[RestoreSelection]),
            // "Before PostRestore" (BCD-6): during selection and while copying.
            RecordField::AdditionalRestores => (Requester, &[RestoreSelection, RestoreCopying]),
            RecordField::RestoreTarget
            | RecordField::DirectedTargets
            | RecordField::RestoreMetadata
            | RecordField::PreRestoreFailureMessage => (Writer, &[PreRestore]),
            RecordField::NewTargets
            | RecordField::AlternateMappingsUsed
            | RecordField::RangesFileOverrides
            | RecordField::FileRestoreStatus => (Requester, &[RestoreCopying]),
            RecordField::PostRestoreFailureMessage => (Writer, &[PostRestore]),
            RecordField::Failure => (Writer, Phase::WRITER_WINDOWS),
        };
        FieldAccess { owner, windows }
    }

    /// The field's name in JSON documents.
    pub const fn name(self) -> &'static str {
        match self {
            RecordField::BackupOptions => "backup_options",
            RecordField::PreviousBackupStamp => "previous_backup_stamp",
            RecordField::BackupStamp => "backup_stamp",
            RecordField::BackupMetadata => "backup_metadata",
            RecordField::PartialFiles => "partial_files",
            RecordField::DifferencedFiles => "differenced_files",
            RecordField::PrepareForBackupFailureMessage => "prepare_for_backup_failure_message",
            RecordField::PostSnapshotFailureMessage => "post_snapshot_failure_message",
            RecordField::BackupSucceeded => "backup_succeeded",
            RecordField::SelectedForRestore => "selected_for_restore",
            RecordField::RestoreSubcomponents => "restore_subcomponents",
            RecordField::RestoreOptions => "restore_options",
            RecordField::RestoreExtensions => "restore_extensions",
            RecordField::AdditionalRestores => "additional_restores",
            RecordField::RestoreTarget => "restore_target",
            RecordField::DirectedTargets => "directed_targets",
            RecordField::RestoreMetadata => "restore_metadata",
            RecordField::PreRestoreFailureMessage => "pre_restore_failure_message",
            RecordField::NewTargets => "new_targets",
            RecordField::AlternateMappingsUsed => "alternate_mappings_used",
            RecordField::RangesFileOverrides => "ranges_file_overrides",
            RecordField::FileRestoreStatus => "file_restore_status",
            RecordField::PostRestoreFailureMessage => "post_restore_failure_message",
            RecordField::Failure => "failure",
        }
    }
}

/// Why a change to the BCD was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BcdError {
    /// The field belongs to the other party (BCD-6).
    #[error(
        "{party} may not change `{}` of component `{component}`: only {} writes it (BCD-6)",
        field.name(), field.access().owner
    )]
    NotOwner {
        /// Who tried.
        party: Party,
        /// The field.
        field: RecordField,
        /// The component's full path.
        component: String,
    },
    /// The field may not change in this phase (BCD-7, BCD-11).
    #[error(
        "`{}` of component `{component}` may not change during {phase}; it may change only during {} (BCD-7)",
        field.name(), phases_text(field.access().windows)
    )]
    OutsideWindow {
        /// The field.
        field: RecordField,
        /// The phase of the attempt.
        phase: Phase,
        /// The component's full path.
        component: String,
    },
    /// A document-level setting may not change in this phase (BK-INIT-2, BK-INIT-3).
    #[error("{what} may be set only during {allowed}, not during {phase} ({rule})")]
    DocumentOutsideWindow {
        /// The setting.
        what: &'static str,
        /// The phase of the attempt.
        phase: Phase,
        /// When it may be set.
        allowed: Phase,
        /// The rule.
        rule: &'static str,
    },
    /// The component has no record in this BCD.
    #[error("no component `{component}` of writer {writer} is in the backup components document")]
    UnknownComponent {
        /// The writer's class id.
        writer: WriterClassId,
        /// The component's full path.
        component: String,
    },
    /// The component already has a record (SEL-4: must not be added again).
    #[error(
        "component `{component}` of writer {writer} is already in the backup components document"
    )]
    DuplicateComponent {
        /// The writer's class id.
        writer: WriterClassId,
        /// The component's full path.
        component: String,
    },
    /// A writer sent back records that are not its own, or added or removed records (BCD-8).
    #[error(
        "writer {writer} sent back records it does not own or changed the component list: {detail} (BCD-8)"
    )]
    ForeignRecords {
        /// The writer's class id.
        writer: WriterClassId,
        /// What was wrong.
        detail: String,
    },
    /// A file set does not exactly match one of the writer's WMD file sets (BCD-10).
    #[error(
        "`{field}` of component `{component}` names file set ({}, {}, recursive={}) which matches no file set of the writer's metadata exactly (BCD-10)",
        set.path, set.filespec, set.recursive
    )]
    FileSetMismatch {
        /// The field.
        field: &'static str,
        /// The component's full path.
        component: String,
        /// The offending triple.
        set: FileSet,
    },
}

impl BcdError {
    /// The VSS result code of this error (ERR-CODE-1).
    pub fn code(&self) -> ErrorCode {
        match self {
            BcdError::NotOwner { .. } => codes::E_ACCESSDENIED,
            BcdError::OutsideWindow { .. } | BcdError::DocumentOutsideWindow { .. } => {
                codes::VSS_E_BAD_STATE
            }
            BcdError::UnknownComponent { .. } => codes::VSS_E_OBJECT_NOT_FOUND,
            BcdError::DuplicateComponent { .. } => codes::VSS_E_OBJECT_ALREADY_EXISTS,
            BcdError::ForeignRecords { .. } => codes::E_ACCESSDENIED,
            BcdError::FileSetMismatch { .. } => codes::E_INVALIDARG,
        }
    }
}

fn phases_text(phases: &[Phase]) -> String {
    phases
        .iter()
        .map(Phase::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The backup state the requester sets before PrepareForBackup (BK-INIT-3, BCD-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupState {
    /// Component mode (honour selectability) rather than volume mode (SEL-6).
    pub component_mode: bool,
    /// Whether bootable system state is included (SEL-8).
    pub bootable_system_state: bool,
    /// The backup type.
    pub backup_type: BackupType,
    /// Whether the requester supports partial files (PF-1).
    pub partial_file_support: bool,
}

impl Default for BackupState {
    fn default() -> Self {
        BackupState {
            component_mode: true,
            bootable_system_state: false,
            backup_type: BackupType::Full,
            partial_file_support: false,
        }
    }
}

/// The shadow copy of one volume in the set (BCD-5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSnapshot {
    /// The volume's mount point, as added to the set.
    pub volume: String,
    /// The shadow copy's id.
    pub snapshot_id: SnapshotId,
}

/// A partial file (PF-1, PF-2): byte ranges of one file to back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartialFile {
    /// The directory.
    pub path: String,
    /// The file name.
    pub filename: String,
    /// `offset:length[,offset:length...]`, or `File=<absolute path>` of a ranges file (PF-2).
    pub ranges: String,
    /// Writer metadata used to verify the restore (PF-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// A differenced file entry (DF-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DifferencedFile {
    /// The directory.
    pub path: String,
    /// The file-name pattern.
    pub filespec: String,
    /// Whether it reaches below `path`.
    #[serde(default)]
    pub recursive: bool,
    /// The LSN, under the LSN schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// The last-modify time, under the LAST_MODIFY schema; zero means "work it out" (DF-3).
    #[serde(default)]
    pub last_modify_time: VssTimestamp,
}

impl DifferencedFile {
    /// The (path, filespec, recursive) triple.
    pub fn file_set(&self) -> FileSet {
        FileSet {
            path: self.path.clone(),
            filespec: self.filespec.clone(),
            recursive: self.recursive,
        }
    }
}

/// A restore subcomponent (SEL-R-2): a member of a set to restore on its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreSubcomponent {
    /// Its logical path.
    pub logical_path: String,
    /// Its name.
    pub name: String,
    /// Whether this is a repair (extended API).
    #[serde(default)]
    pub repair: bool,
}

/// Roll-forward settings of a restore (extended API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollforward {
    /// The kind of roll-forward.
    pub rollforward_type: RollforwardType,
    /// The point to roll forward to, in the writer's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<String>,
}

/// The requester's extended restore settings (BCD-6 "Authoritative flag, roll-forward type and point, restore name").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreExtensions {
    /// An authoritative restore.
    #[serde(default)]
    pub authoritative: bool,
    /// Roll-forward settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollforward: Option<Rollforward>,
    /// A new name for the restored data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_name: Option<String>,
}

/// A directed target (BCD-6): where the writer wants ranges of a file restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectedTarget {
    /// The source directory.
    pub source_path: String,
    /// The source file name.
    pub source_filename: String,
    /// The source ranges (PF-2 form).
    pub source_ranges: String,
    /// The destination directory.
    pub destination_path: String,
    /// The destination file name.
    pub destination_filename: String,
    /// The destination ranges (PF-2 form).
    pub destination_ranges: String,
}

/// A new target the requester used (RST-FILE-3): a file set restored somewhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTarget {
    /// The file set; must match a WMD file set exactly (BCD-10).
    pub source: FileSet,
    /// Where it went.
    pub alternate_path: String,
}

/// A ranges-file path override (RST-FILE-4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangesFileOverride {
    /// The partial file's directory.
    pub path: String,
    /// The partial file's name.
    pub filename: String,
    /// Where its ranges file was restored.
    pub ranges_file: String,
}

/// A failure recorded by a writer for a component (ERR-4, extended API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentFailure {
    /// The VSS result code (ERR-2).
    pub code: u32,
    /// The application's own code.
    #[serde(default)]
    pub application_code: i64,
    /// A message for people.
    pub message: String,
}

/// The record of one explicitly included component (BCD-2, BCD-6). It never holds file specifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentRecord {
    pub(crate) component_type: ComponentType,
    #[serde(default)]
    pub(crate) logical_path: String,
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backup_options: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) previous_backup_stamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backup_stamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backup_metadata: Option<String>,
    #[serde(default)]
    pub(crate) partial_files: Vec<PartialFile>,
    #[serde(default)]
    pub(crate) differenced_files: Vec<DifferencedFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prepare_for_backup_failure_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) post_snapshot_failure_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backup_succeeded: Option<bool>,
    #[serde(default)]
    pub(crate) selected_for_restore: bool,
    #[serde(default)]
    pub(crate) restore_subcomponents: Vec<RestoreSubcomponent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) restore_options: Option<String>,
    #[serde(default)]
    pub(crate) restore_extensions: RestoreExtensions,
    #[serde(default)]
    pub(crate) additional_restores: bool,
    #[serde(default = "default_restore_target")]
    pub(crate) restore_target: RestoreTarget,
    #[serde(default)]
    pub(crate) directed_targets: Vec<DirectedTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) restore_metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pre_restore_failure_message: Option<String>,
    #[serde(default)]
    pub(crate) new_targets: Vec<NewTarget>,
    #[serde(default)]
    pub(crate) alternate_mappings_used: Vec<AlternateLocationMapping>,
    #[serde(default)]
    pub(crate) ranges_file_overrides: Vec<RangesFileOverride>,
    #[serde(default = "default_file_restore_status")]
    pub(crate) file_restore_status: FileRestoreStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) post_restore_failure_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failure: Option<ComponentFailure>,
}

fn default_restore_target() -> RestoreTarget {
    RestoreTarget::Original
}

fn default_file_restore_status() -> FileRestoreStatus {
    FileRestoreStatus::Undefined
}

impl ComponentRecord {
    /// A fresh record with only its identity set.
    pub fn new(
        component_type: ComponentType,
        logical_path: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ComponentRecord {
            component_type,
            logical_path: logical_path.into(),
            name: name.into(),
            backup_options: None,
            previous_backup_stamp: None,
            backup_stamp: None,
            backup_metadata: None,
            partial_files: Vec::new(),
            differenced_files: Vec::new(),
            prepare_for_backup_failure_message: None,
            post_snapshot_failure_message: None,
            backup_succeeded: None,
            selected_for_restore: false,
            restore_subcomponents: Vec::new(),
            restore_options: None,
            restore_extensions: RestoreExtensions::default(),
            additional_restores: false,
            restore_target: RestoreTarget::Original,
            directed_targets: Vec::new(),
            restore_metadata: None,
            pre_restore_failure_message: None,
            new_targets: Vec::new(),
            alternate_mappings_used: Vec::new(),
            ranges_file_overrides: Vec::new(),
            file_restore_status: FileRestoreStatus::Undefined,
            post_restore_failure_message: None,
            failure: None,
        }
    }

    /// The component type.
    pub fn component_type(&self) -> ComponentType {
        self.component_type
    }
    /// The logical path.
    pub fn logical_path(&self) -> &str {
        &self.logical_path
    }
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The full path, `logical_path\name`.
    pub fn full_path(&self) -> String {
        logical_path::full_path(&self.logical_path, &self.name)
    }
    /// Backup options.
    pub fn backup_options(&self) -> Option<&str> {
        self.backup_options.as_deref()
    }
    /// The previous backup stamp.
    pub fn previous_backup_stamp(&self) -> Option<&str> {
        self.previous_backup_stamp.as_deref()
    }
    /// The backup stamp.
    pub fn backup_stamp(&self) -> Option<&str> {
        self.backup_stamp.as_deref()
    }
    /// Private backup metadata.
    pub fn backup_metadata(&self) -> Option<&str> {
        self.backup_metadata.as_deref()
    }
    /// Partial files.
    pub fn partial_files(&self) -> &[PartialFile] {
        &self.partial_files
    }
    /// Differenced files.
    pub fn differenced_files(&self) -> &[DifferencedFile] {
        &self.differenced_files
    }
    /// The prepare-for-backup failure message.
    pub fn prepare_for_backup_failure_message(&self) -> Option<&str> {
        self.prepare_for_backup_failure_message.as_deref()
    }
    /// The post-snapshot failure message.
    pub fn post_snapshot_failure_message(&self) -> Option<&str> {
        self.post_snapshot_failure_message.as_deref()
    }
    /// Whether the backup of this component succeeded; `None` before the requester said.
    pub fn backup_succeeded(&self) -> Option<bool> {
        self.backup_succeeded
    }
    /// Whether the component is selected for restore.
    pub fn selected_for_restore(&self) -> bool {
        self.selected_for_restore
    }
    /// Restore subcomponents.
    pub fn restore_subcomponents(&self) -> &[RestoreSubcomponent] {
        &self.restore_subcomponents
    }
    /// Restore options.
    pub fn restore_options(&self) -> Option<&str> {
        self.restore_options.as_deref()
    }
    /// Extended restore settings.
    pub fn restore_extensions(&self) -> &RestoreExtensions {
        &self.restore_extensions
    }
    /// Whether more restores follow.
    pub fn additional_restores(&self) -> bool {
        self.additional_restores
    }
    /// The restore target.
    pub fn restore_target(&self) -> RestoreTarget {
        self.restore_target
    }
    /// Directed targets.
    pub fn directed_targets(&self) -> &[DirectedTarget] {
        &self.directed_targets
    }
    /// Restore metadata.
    pub fn restore_metadata(&self) -> Option<&str> {
        self.restore_metadata.as_deref()
    }
    /// The pre-restore failure message.
    pub fn pre_restore_failure_message(&self) -> Option<&str> {
        self.pre_restore_failure_message.as_deref()
    }
    /// New targets used.
    pub fn new_targets(&self) -> &[NewTarget] {
        &self.new_targets
    }
    /// Alternate mappings used.
    pub fn alternate_mappings_used(&self) -> &[AlternateLocationMapping] {
        &self.alternate_mappings_used
    }
    /// Ranges-file overrides.
    pub fn ranges_file_overrides(&self) -> &[RangesFileOverride] {
        &self.ranges_file_overrides
    }
    /// The file restore status.
    pub fn file_restore_status(&self) -> FileRestoreStatus {
        self.file_restore_status
    }
    /// The post-restore failure message.
    pub fn post_restore_failure_message(&self) -> Option<&str> {
        self.post_restore_failure_message.as_deref()
    }
    /// The recorded failure.
    pub fn failure(&self) -> Option<&ComponentFailure> {
        self.failure.as_ref()
    }

    /// The fields whose values differ between two records of the same component.
    pub fn changed_fields(&self, other: &ComponentRecord) -> Vec<RecordField> {
        RecordField::ALL
            .iter()
            .copied()
            .filter(|field| !self.field_equals(other, *field))
            .collect()
    }

    fn field_equals(&self, o: &ComponentRecord, field: RecordField) -> bool {
        match field {
            RecordField::BackupOptions => self.backup_options == o.backup_options,
            RecordField::PreviousBackupStamp => {
                self.previous_backup_stamp == o.previous_backup_stamp
            }
            RecordField::BackupStamp => self.backup_stamp == o.backup_stamp,
            RecordField::BackupMetadata => self.backup_metadata == o.backup_metadata,
            RecordField::PartialFiles => self.partial_files == o.partial_files,
            RecordField::DifferencedFiles => self.differenced_files == o.differenced_files,
            RecordField::PrepareForBackupFailureMessage => {
                self.prepare_for_backup_failure_message == o.prepare_for_backup_failure_message
            }
            RecordField::PostSnapshotFailureMessage => {
                self.post_snapshot_failure_message == o.post_snapshot_failure_message
            }
            RecordField::BackupSucceeded => self.backup_succeeded == o.backup_succeeded,
            RecordField::SelectedForRestore => self.selected_for_restore == o.selected_for_restore,
            RecordField::RestoreSubcomponents => {
                self.restore_subcomponents == o.restore_subcomponents
            }
            RecordField::RestoreOptions => self.restore_options == o.restore_options,
            RecordField::RestoreExtensions => self.restore_extensions == o.restore_extensions,
            RecordField::AdditionalRestores => self.additional_restores == o.additional_restores,
            RecordField::RestoreTarget => self.restore_target == o.restore_target,
            RecordField::DirectedTargets => self.directed_targets == o.directed_targets,
            RecordField::RestoreMetadata => self.restore_metadata == o.restore_metadata,
            RecordField::PreRestoreFailureMessage => {
                self.pre_restore_failure_message == o.pre_restore_failure_message
            }
            RecordField::NewTargets => self.new_targets == o.new_targets,
            RecordField::AlternateMappingsUsed => {
                self.alternate_mappings_used == o.alternate_mappings_used
            }
            RecordField::RangesFileOverrides => {
                self.ranges_file_overrides == o.ranges_file_overrides
            }
            RecordField::FileRestoreStatus => self.file_restore_status == o.file_restore_status,
            RecordField::PostRestoreFailureMessage => {
                self.post_restore_failure_message == o.post_restore_failure_message
            }
            RecordField::Failure => self.failure == o.failure,
        }
    }

    fn same_identity(&self, other: &ComponentRecord) -> bool {
        self.component_type == other.component_type
            && self.logical_path == other.logical_path
            && self.name == other.name
    }
}

/// One writer's explicitly included components (BCD-2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterComponents {
    /// The writer's class id.
    pub class_id: WriterClassId,
    /// The writer's instance id at backup time.
    pub instance_id: WriterInstanceId,
    /// The writer's persistent instance name, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// The records, in the order they were added.
    components: Vec<ComponentRecord>,
}

impl WriterComponents {
    /// A writer entry with no components yet.
    pub fn new(
        class_id: WriterClassId,
        instance_id: WriterInstanceId,
        instance_name: Option<String>,
    ) -> Self {
        WriterComponents {
            class_id,
            instance_id,
            instance_name,
            components: Vec::new(),
        }
    }

    /// The records.
    pub fn components(&self) -> &[ComponentRecord] {
        &self.components
    }

    /// The record with this logical path and name.
    pub fn component(&self, logical_path: &str, name: &str) -> Option<&ComponentRecord> {
        self.components
            .iter()
            .find(|c| c.logical_path == logical_path && c.name == name)
    }

    /// An editor for one record, checked for `party` in `phase`.
    ///
    /// Writers edit the copy of their own entry that the coordinator sent them with this.
    pub fn edit(
        &mut self,
        party: Party,
        phase: Phase,
        logical_path: &str,
        name: &str,
    ) -> Result<RecordEditor<'_>, BcdError> {
        let writer = self.class_id;
        let record = self
            .components
            .iter_mut()
            .find(|c| c.logical_path == logical_path && c.name == name)
            .ok_or_else(|| BcdError::UnknownComponent {
                writer,
                component: logical_path::full_path(logical_path, name),
            })?;
        Ok(RecordEditor {
            record,
            party,
            phase,
        })
    }
}

/// A Backup Components Document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupComponents {
    pub(crate) schema_version: u32,
    #[serde(default)]
    pub(crate) backup_state: BackupState,
    #[serde(default = "default_restore_type")]
    pub(crate) restore_type: RestoreType,
    #[serde(default = "default_context")]
    pub(crate) context: SnapshotContext,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot_set_id: Option<SnapshotSetId>,
    #[serde(default)]
    pub(crate) snapshots: Vec<VolumeSnapshot>,
    #[serde(default)]
    pub(crate) writers: Vec<WriterComponents>,
}

fn default_restore_type() -> RestoreType {
    RestoreType::Undefined
}

fn default_context() -> SnapshotContext {
    SnapshotContext::Backup
}

impl Default for BackupComponents {
    fn default() -> Self {
        Self::new()
    }
}

impl BackupComponents {
    /// An empty BCD for a new backup (BK-INIT-1): context BACKUP (CFG-15), full backup, component mode.
    pub fn new() -> Self {
        BackupComponents {
            schema_version: crate::SCHEMA_VERSION,
            backup_state: BackupState::default(),
            restore_type: RestoreType::Undefined,
            context: SnapshotContext::Backup,
            snapshot_set_id: None,
            snapshots: Vec::new(),
            writers: Vec::new(),
        }
    }

    /// The schema version the document was written with.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }
    /// The backup state (BK-INIT-3).
    pub fn backup_state(&self) -> BackupState {
        self.backup_state
    }
    /// The restore type (RST-PREP-7).
    pub fn restore_type(&self) -> RestoreType {
        self.restore_type
    }
    /// The snapshot context (BK-INIT-2).
    pub fn context(&self) -> SnapshotContext {
        self.context
    }
    /// The snapshot set id, once a set was started.
    pub fn snapshot_set_id(&self) -> Option<SnapshotSetId> {
        self.snapshot_set_id
    }
    /// The shadow copy of each volume in the set.
    pub fn snapshots(&self) -> &[VolumeSnapshot] {
        &self.snapshots
    }
    /// Every writer with stored components.
    pub fn writers(&self) -> &[WriterComponents] {
        &self.writers
    }
    /// The number of writers that have stored components (BCD-4).
    pub fn writer_components_count(&self) -> usize {
        self.writers
            .iter()
            .filter(|w| !w.components.is_empty())
            .count()
    }
    /// The entry of one writer, by class id and, when several instances exist, instance name.
    pub fn writer(
        &self,
        class_id: WriterClassId,
        instance_name: Option<&str>,
    ) -> Option<&WriterComponents> {
        self.writers
            .iter()
            .find(|w| w.class_id == class_id && w.instance_name.as_deref() == instance_name)
    }
    /// The entry of one writer instance.
    pub fn writer_instance(&self, instance_id: WriterInstanceId) -> Option<&WriterComponents> {
        self.writers.iter().find(|w| w.instance_id == instance_id)
    }

    fn check_document_phase(
        what: &'static str,
        phase: Phase,
        allowed: Phase,
        rule: &'static str,
    ) -> Result<(), BcdError> {
        if phase == allowed {
            Ok(())
        } else {
            Err(BcdError::DocumentOutsideWindow {
                what,
                phase,
                allowed,
                rule,
            })
        }
    }

    /// Sets the backup state; only before PrepareForBackup (BK-INIT-3).
    pub fn set_backup_state(&mut self, phase: Phase, state: BackupState) -> Result<(), BcdError> {
        Self::check_document_phase(
            "the backup state",
            phase,
            Phase::BackupDiscovery,
            "BK-INIT-3",
        )?;
        self.backup_state = state;
        Ok(())
    }

    /// Sets the snapshot context; only before volumes are added (BK-INIT-2).
    pub fn set_context(&mut self, phase: Phase, context: SnapshotContext) -> Result<(), BcdError> {
        Self::check_document_phase(
            "the snapshot context",
            phase,
            Phase::BackupDiscovery,
            "BK-INIT-2",
        )?;
        if !self.snapshots.is_empty() {
            return Err(BcdError::DocumentOutsideWindow {
                what: "the snapshot context (volumes were already added)",
                phase,
                allowed: Phase::BackupDiscovery,
                rule: "BK-INIT-2",
            });
        }
        self.context = context;
        Ok(())
    }

    /// Sets the restore type; only before PreRestore (RST-PREP-7).
    pub fn set_restore_type(
        &mut self,
        phase: Phase,
        restore_type: RestoreType,
    ) -> Result<(), BcdError> {
        Self::check_document_phase(
            "the restore type",
            phase,
            Phase::RestoreSelection,
            "RST-PREP-7",
        )?;
        self.restore_type = restore_type;
        Ok(())
    }

    /// Records the snapshot set id and the shadow copy of each volume (BCD-5), before PrepareForBackup.
    pub fn set_snapshot_set(
        &mut self,
        phase: Phase,
        set: SnapshotSetId,
        snapshots: Vec<VolumeSnapshot>,
    ) -> Result<(), BcdError> {
        Self::check_document_phase(
            "the snapshot set",
            phase,
            Phase::BackupDiscovery,
            "BK-SNAP-1",
        )?;
        self.snapshot_set_id = Some(set);
        self.snapshots = snapshots;
        Ok(())
    }

    /// Adds an explicitly included component (BK-DISC-3); only during backup discovery.
    ///
    /// The selection engine decides which components may be added; this only keeps the document
    /// consistent (no duplicates, one entry per writer instance).
    pub fn add_component(
        &mut self,
        phase: Phase,
        writer: &WriterComponents,
        record: ComponentRecord,
    ) -> Result<(), BcdError> {
        Self::check_document_phase("components", phase, Phase::BackupDiscovery, "BK-DISC-8")?;
        let index = match self
            .writers
            .iter()
            .position(|w| w.class_id == writer.class_id && w.instance_id == writer.instance_id)
        {
            Some(index) => index,
            None => {
                self.writers.push(WriterComponents::new(
                    writer.class_id,
                    writer.instance_id,
                    writer.instance_name.clone(),
                ));
                self.writers.len() - 1
            }
        };
        let entry = &mut self.writers[index];
        if entry
            .component(&record.logical_path, &record.name)
            .is_some()
        {
            return Err(BcdError::DuplicateComponent {
                writer: writer.class_id,
                component: record.full_path(),
            });
        }
        entry.components.push(record);
        Ok(())
    }

    /// An editor for the record of one component, checked for `party` in `phase`.
    pub fn edit(
        &mut self,
        party: Party,
        phase: Phase,
        writer: WriterInstanceId,
        logical_path: &str,
        name: &str,
    ) -> Result<RecordEditor<'_>, BcdError> {
        let entry = self
            .writers
            .iter_mut()
            .find(|w| w.instance_id == writer)
            .ok_or_else(|| BcdError::UnknownComponent {
                writer: WriterClassId::nil(),
                component: logical_path::full_path(logical_path, name),
            })?;
        entry.edit(party, phase, logical_path, name)
    }

    /// Applies the records a writer sent back after an event, refusing anything it may not change
    /// (BCD-7, BCD-8, BCD-11). Nothing is changed unless every change is allowed.
    pub fn apply_writer_changes(
        &mut self,
        phase: Phase,
        changed: &WriterComponents,
    ) -> Result<Vec<(String, RecordField)>, BcdError> {
        let writer = changed.class_id;
        let entry = self
            .writers
            .iter_mut()
            .find(|w| w.instance_id == changed.instance_id && w.class_id == changed.class_id)
            .ok_or_else(|| BcdError::ForeignRecords {
                writer,
                detail: format!(
                    "instance {} has no components in this session",
                    changed.instance_id
                ),
            })?;
        if entry.components.len() != changed.components.len()
            || entry
                .components
                .iter()
                .zip(&changed.components)
                .any(|(a, b)| !a.same_identity(b))
        {
            return Err(BcdError::ForeignRecords {
                writer,
                detail: "the records do not match the components the requester added".into(),
            });
        }
        let mut applied = Vec::new();
        for (current, proposed) in entry.components.iter().zip(&changed.components) {
            for field in current.changed_fields(proposed) {
                check_access(field, Party::Writer, phase, current)?;
                applied.push((current.full_path(), field));
            }
        }
        entry.components.clone_from(&changed.components);
        Ok(applied)
    }
}

impl BackupComponents {
    /// Checks that every file set a record names where the spec demands an exact match (new targets and
    /// alternate mappings used) matches a file set of the writer's stored metadata exactly (BCD-10).
    pub fn check_file_sets(&self, writers: &[crate::wmd::WriterMetadata]) -> Result<(), BcdError> {
        for entry in &self.writers {
            let Some(wmd) = writers.iter().find(|w| {
                w.identity.class_id == entry.class_id
                    && w.identity.instance_name == entry.instance_name
            }) else {
                continue;
            };
            for record in &entry.components {
                let sets = record
                    .new_targets
                    .iter()
                    .map(|t| ("new_targets", &t.source))
                    .chain(
                        record
                            .alternate_mappings_used
                            .iter()
                            .map(|m| ("alternate_mappings_used", &m.source)),
                    );
                for (field, set) in sets {
                    if !wmd.has_file_set(set) {
                        return Err(BcdError::FileSetMismatch {
                            field,
                            component: record.full_path(),
                            set: set.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_access(
    field: RecordField,
    party: Party,
    phase: Phase,
    record: &ComponentRecord,
) -> Result<(), BcdError> {
    let access = field.access();
    if access.owner != party {
        return Err(BcdError::NotOwner {
            party,
            field,
            component: record.full_path(),
        });
    }
    if !access.windows.contains(&phase) {
        return Err(BcdError::OutsideWindow {
            field,
            phase,
            component: record.full_path(),
        });
    }
    Ok(())
}

/// A checked handle on one component record: every setter verifies the owner and window of its
/// field (BCD-6, BCD-7) before it writes.
#[derive(Debug)]
pub struct RecordEditor<'a> {
    record: &'a mut ComponentRecord,
    party: Party,
    phase: Phase,
}

/// Declares editor setters that check the field's access rule first.
macro_rules! setters {
    ($( $(#[$doc:meta])* $fn:ident($value:ident: $ty:ty) => $field:ident: $target:ident = $expr:expr; )+) => {
        $(
            $(#[$doc])*
            pub fn $fn(&mut self, $value: $ty) -> Result<&mut Self, BcdError> {
                check_access(RecordField::$field, self.party, self.phase, self.record)?;
                self.record.$target = $expr;
                Ok(self)
            }
        )+
    };
}

impl RecordEditor<'_> {
    /// The record as it is now.
    pub fn record(&self) -> &ComponentRecord {
        self.record
    }

    setters! {
        /// Sets the backup options (requester, before PrepareForBackup).
        set_backup_options(value: impl Into<String>) => BackupOptions: backup_options = Some(value.into());
        /// Sets the previous backup stamp (requester, before PrepareForBackup; INC-3).
        set_previous_backup_stamp(value: impl Into<String>) => PreviousBackupStamp: previous_backup_stamp = Some(value.into());
        /// Sets the backup stamp (writer, PrepareForBackup or PostSnapshot; INC-3).
        set_backup_stamp(value: impl Into<String>) => BackupStamp: backup_stamp = Some(value.into());
        /// Sets private backup metadata (writer).
        set_backup_metadata(value: impl Into<String>) => BackupMetadata: backup_metadata = Some(value.into());
        /// Replaces the partial files (writer; PF-1).
        set_partial_files(value: Vec<PartialFile>) => PartialFiles: partial_files = value;
        /// Replaces the differenced files (writer; DF-1).
        set_differenced_files(value: Vec<DifferencedFile>) => DifferencedFiles: differenced_files = value;
        /// Sets the prepare-for-backup failure message (writer).
        set_prepare_for_backup_failure_message(value: impl Into<String>) => PrepareForBackupFailureMessage: prepare_for_backup_failure_message = Some(value.into());
        /// Sets the post-snapshot failure message (writer).
        set_post_snapshot_failure_message(value: impl Into<String>) => PostSnapshotFailureMessage: post_snapshot_failure_message = Some(value.into());
        /// Records whether the component was backed up (requester, after copying; BK-COPY-4).
        set_backup_succeeded(value: bool) => BackupSucceeded: backup_succeeded = Some(value);
        /// Selects the component for restore (requester; SEL-R-1).
        set_selected_for_restore(value: bool) => SelectedForRestore: selected_for_restore = value;
        /// Replaces the restore subcomponents (requester; SEL-R-2).
        set_restore_subcomponents(value: Vec<RestoreSubcomponent>) => RestoreSubcomponents: restore_subcomponents = value;
        /// Sets the restore options (requester; RST-PREP-4).
        set_restore_options(value: impl Into<String>) => RestoreOptions: restore_options = Some(value.into());
        /// Sets the extended restore settings (requester).
        set_restore_extensions(value: RestoreExtensions) => RestoreExtensions: restore_extensions = value;
        /// Sets the additional-restores flag (requester, before PostRestore).
        set_additional_restores(value: bool) => AdditionalRestores: additional_restores = value;
        /// Sets the restore target (writer, PreRestore; RT-1).
        set_restore_target(value: RestoreTarget) => RestoreTarget: restore_target = value;
        /// Replaces the directed targets (writer, PreRestore).
        set_directed_targets(value: Vec<DirectedTarget>) => DirectedTargets: directed_targets = value;
        /// Sets restore metadata (writer, PreRestore).
        set_restore_metadata(value: impl Into<String>) => RestoreMetadata: restore_metadata = Some(value.into());
        /// Sets the pre-restore failure message (writer).
        set_pre_restore_failure_message(value: impl Into<String>) => PreRestoreFailureMessage: pre_restore_failure_message = Some(value.into());
        /// Replaces the new targets used (requester, while copying; RST-FILE-3).
        set_new_targets(value: Vec<NewTarget>) => NewTargets: new_targets = value;
        /// Replaces the alternate mappings used (requester, while copying; RST-FILE-3).
        set_alternate_mappings_used(value: Vec<AlternateLocationMapping>) => AlternateMappingsUsed: alternate_mappings_used = value;
        /// Replaces the ranges-file overrides (requester, while copying; RST-FILE-4).
        set_ranges_file_overrides(value: Vec<RangesFileOverride>) => RangesFileOverrides: ranges_file_overrides = value;
        /// Sets the file restore status (requester, after copying; RST-FILE-3).
        set_file_restore_status(value: FileRestoreStatus) => FileRestoreStatus: file_restore_status = value;
        /// Sets the post-restore failure message (writer).
        set_post_restore_failure_message(value: impl Into<String>) => PostRestoreFailureMessage: post_restore_failure_message = Some(value.into());
        /// Records a failure (writer, in any of its events).
        set_failure(value: ComponentFailure) => Failure: failure = Some(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_component_bcd() -> (BackupComponents, WriterInstanceId) {
        let mut bcd = BackupComponents::new();
        let writer = WriterComponents::new(
            WriterClassId::new_random(),
            WriterInstanceId::new_random(),
            None,
        );
        let instance = writer.instance_id;
        bcd.add_component(
            Phase::BackupDiscovery,
            &writer,
            ComponentRecord::new(ComponentType::Database, "db", "main"),
        )
        .unwrap();
        (bcd, instance)
    }

    /// BCD-6: the requester sets options before PrepareForBackup, the writer sets the stamp in PostSnapshot.
    #[test]
    fn owners_write_in_their_windows() {
        let (mut bcd, w) = one_component_bcd();
        bcd.edit(Party::Requester, Phase::BackupDiscovery, w, "db", "main")
            .unwrap()
            .set_backup_options("fast")
            .unwrap()
            .set_previous_backup_stamp("lsn:10")
            .unwrap();
        bcd.edit(Party::Writer, Phase::PostSnapshot, w, "db", "main")
            .unwrap()
            .set_backup_stamp("lsn:20")
            .unwrap();
        let record = &bcd.writers()[0].components()[0];
        assert_eq!(record.backup_options(), Some("fast"));
        assert_eq!(record.backup_stamp(), Some("lsn:20"));
    }

    /// BCD-6: a writer may not set the requester's fields, and vice versa.
    #[test]
    fn wrong_owner_is_refused() {
        let (mut bcd, w) = one_component_bcd();
        let err = bcd
            .edit(Party::Writer, Phase::PrepareForBackup, w, "db", "main")
            .unwrap()
            .set_backup_succeeded(true)
            .unwrap_err();
        assert!(matches!(
            err,
            BcdError::NotOwner {
                field: RecordField::BackupSucceeded,
                ..
            }
        ));
        assert_eq!(err.code(), codes::E_ACCESSDENIED);
        let err = bcd
            .edit(Party::Requester, Phase::PostSnapshot, w, "db", "main")
            .unwrap()
            .set_backup_stamp("x")
            .unwrap_err();
        assert!(err.to_string().contains("backup_stamp"), "{err}");
    }

    /// BCD-7: BackupComplete handlers cannot change the BCD; Freeze cannot either.
    #[test]
    fn writer_edits_outside_windows_are_bad_state() {
        let (mut bcd, w) = one_component_bcd();
        for phase in [
            Phase::BackupComplete,
            Phase::SnapshotCreation,
            Phase::BackupCopying,
        ] {
            let err = bcd
                .edit(Party::Writer, phase, w, "db", "main")
                .unwrap()
                .set_backup_metadata("m")
                .unwrap_err();
            assert_eq!(err.code(), codes::VSS_E_BAD_STATE, "{phase}");
            assert!(err.to_string().contains("BCD-7"));
        }
    }

    /// BCD-11: the coordinator refuses writer changes outside the windows, and changes nothing then.
    #[test]
    fn apply_writer_changes_checks_every_field() {
        let (mut bcd, _) = one_component_bcd();
        let mut copy = bcd.writers()[0].clone();
        copy.edit(Party::Writer, Phase::PrepareForBackup, "db", "main")
            .unwrap()
            .set_backup_metadata("meta")
            .unwrap();
        // The same change arriving in the wrong phase is refused.
        let before = bcd.clone();
        let err = bcd
            .apply_writer_changes(Phase::BackupComplete, &copy)
            .unwrap_err();
        assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
        assert_eq!(bcd, before);
        let applied = bcd
            .apply_writer_changes(Phase::PrepareForBackup, &copy)
            .unwrap();
        assert_eq!(
            applied,
            vec![("db\\main".to_string(), RecordField::BackupMetadata)]
        );
        // A writer that forges a requester field is refused even in its own window.
        let mut forged = bcd.writers()[0].clone();
        forged.components[0].backup_succeeded = Some(true);
        let err = bcd
            .apply_writer_changes(Phase::PostSnapshot, &forged)
            .unwrap_err();
        assert!(matches!(err, BcdError::NotOwner { .. }));
        // A writer that adds a record is refused (BCD-8).
        let mut grown = bcd.writers()[0].clone();
        grown
            .components
            .push(ComponentRecord::new(ComponentType::FileGroup, "", "extra"));
        assert!(matches!(
            bcd.apply_writer_changes(Phase::PostSnapshot, &grown),
            Err(BcdError::ForeignRecords { .. })
        ));
    }

    #[test]
    fn duplicate_components_are_refused() {
        let (mut bcd, _) = one_component_bcd();
        let writer = bcd.writers()[0].clone();
        let err = bcd
            .add_component(
                Phase::BackupDiscovery,
                &writer,
                ComponentRecord::new(ComponentType::Database, "db", "main"),
            )
            .unwrap_err();
        assert_eq!(err.code(), codes::VSS_E_OBJECT_ALREADY_EXISTS);
        assert!(
            bcd.add_component(
                Phase::PrepareForBackup,
                &writer,
                ComponentRecord::new(ComponentType::Database, "db", "other"),
            )
            .is_err()
        );
    }

    /// BK-INIT-2 and BK-INIT-3: document settings only before PrepareForBackup.
    #[test]
    fn document_settings_have_windows() {
        let mut bcd = BackupComponents::new();
        assert!(
            bcd.set_context(Phase::BackupDiscovery, SnapshotContext::AppRollback)
                .is_ok()
        );
        let err = bcd
            .set_backup_state(Phase::PrepareForBackup, BackupState::default())
            .unwrap_err();
        assert!(err.to_string().contains("BK-INIT-3"));
        bcd.set_snapshot_set(
            Phase::BackupDiscovery,
            SnapshotSetId::new_random(),
            vec![VolumeSnapshot {
                volume: "/srv".into(),
                snapshot_id: SnapshotId::new_random(),
            }],
        )
        .unwrap();
        assert!(
            bcd.set_context(Phase::BackupDiscovery, SnapshotContext::Backup)
                .is_err()
        );
    }

    /// BCD-10: new targets must name a WMD file set exactly.
    #[test]
    fn new_targets_must_match_a_wmd_file_set() {
        use crate::json::Document;
        let wmd =
            crate::wmd::WriterMetadata::from_json(include_str!("../tests/fixtures/full.wmd.json"))
                .unwrap();
        let mut bcd =
            BackupComponents::from_json(include_str!("../tests/fixtures/full.bcd.json")).unwrap();
        bcd.check_file_sets(std::slice::from_ref(&wmd)).unwrap();
        bcd.writers[0].components[0].new_targets[0].source.filespec = "*.dat".into();
        let err = bcd.check_file_sets(&[wmd]).unwrap_err();
        assert_eq!(err.code(), codes::E_INVALIDARG);
        assert!(err.to_string().contains("BCD-10"), "{err}");
    }

    /// Every field has an owner and at least one window, and writer windows are inside BCD-7's.
    #[test]
    fn access_table_is_complete() {
        for field in RecordField::ALL {
            let access = field.access();
            assert!(!access.windows.is_empty(), "{}", field.name());
            if access.owner == Party::Writer {
                assert!(
                    access
                        .windows
                        .iter()
                        .all(|p| Phase::WRITER_WINDOWS.contains(p))
                );
            }
        }
    }
}
