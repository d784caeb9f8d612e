//! How the coordinator talks to writers: the events it sends (spec §3, §4), the replies it expects
//! (ERR-1, ERR-2), the `WriterEndpoint` trait a connection implements, registration (ROLE-7,
//! ROLE-8) and the status a requester or admin sees (WST-1).

use std::time::Duration;

use async_trait::async_trait;
use shadowcopy_metadata::bcd::{BackupState, WriterComponents};
use shadowcopy_metadata::codes::ErrorCode;
use shadowcopy_metadata::enums::{
    ApplicationLevel, RestoreType, SnapshotContext, SubscribeMask, WriterState,
};
use shadowcopy_metadata::{
    SnapshotId, SnapshotSetId, WriterClassId, WriterInstanceId, WriterMetadata,
};

use crate::config::DEFAULT_FREEZE_TIMEOUT;

/// Where the shadow copy of one volume can be read, as PostSnapshot tells writers (BK-COPY-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotLocation {
    /// The original volume.
    pub volume: String,
    /// The shadow copy's id.
    pub snapshot_id: SnapshotId,
    /// The device object: where the copy can be read, if the provider reported it.
    pub snapshot_path: Option<String>,
}

/// A VSS event for one writer. Each writer sees only its own components (BCD-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterEvent {
    /// Build and return the WMD; change no state (ROLE-6).
    Identify,
    /// The backup is being prepared; the writer may edit its records (BK-PREP-3, BCD-7).
    PrepareForBackup {
        /// The set, when the requester started one before PrepareForBackup (B7).
        set: Option<SnapshotSetId>,
        /// The snapshot context (BK-INIT-2).
        context: SnapshotContext,
        /// Component mode, bootable state, backup type, partial-file support (BK-INIT-3).
        backup_state: BackupState,
        /// This writer's records; empty in volume mode (BK-DISC-5).
        components: WriterComponents,
    },
    /// Heavy preparation before the freeze (BK-SNAP-3).
    PrepareForSnapshot {
        /// The set being created.
        set: SnapshotSetId,
        /// The volumes in the set.
        volumes: Vec<String>,
    },
    /// Quiesce now; Thaw or Abort follows within `freeze_timeout` (BK-SNAP-5).
    Freeze {
        /// The set being created.
        set: SnapshotSetId,
        /// How long after this event the writer may stay frozen; if neither Thaw nor Abort has
        /// arrived by then, the writer aborts itself.
        freeze_timeout: Duration,
    },
    /// Resume normal I/O (BK-SNAP-3).
    Thaw {
        /// The set being created.
        set: SnapshotSetId,
    },
    /// The set exists; auto-recovery and exclusions run now; records are editable (BK-SNAP-2 step 12).
    PostSnapshot {
        /// The set.
        set: SnapshotSetId,
        /// This writer's records.
        components: WriterComponents,
        /// Where each volume's shadow copy can be read.
        snapshots: Vec<SnapshotLocation>,
    },
    /// Undo everything for this operation and return to normal work (BK-ABORT-3); may repeat.
    Abort {
        /// The set, if one was started.
        set: Option<SnapshotSetId>,
    },
    /// The data was secured; the writer may truncate logs (BK-END-1). The BCD is read-only.
    BackupComplete {
        /// The set.
        set: SnapshotSetId,
        /// This writer's records, with the requester's backup-succeeded flags.
        components: WriterComponents,
    },
    /// The session ended; without a preceding BackupComplete the backup failed (BK-END-5).
    BackupShutdown {
        /// The set, if one was started.
        set: Option<SnapshotSetId>,
    },
    /// A restore is about to copy files back; records are editable (RST-PREP-6).
    PreRestore {
        /// This writer's records, with the selection and options.
        components: WriterComponents,
        /// The restore type (RST-PREP-7).
        restore_type: RestoreType,
    },
    /// The files are back; recover and clean up (RST-END-1).
    PostRestore {
        /// This writer's records, with the restore status and targets used.
        components: WriterComponents,
        /// The restore type (RST-PREP-7).
        restore_type: RestoreType,
    },
}

/// The kind of a [`WriterEvent`], for logs, timeouts and states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WriterEventKind {
    /// Identify.
    Identify,
    /// PrepareForBackup.
    PrepareForBackup,
    /// PrepareForSnapshot.
    PrepareForSnapshot,
    /// Freeze.
    Freeze,
    /// Thaw.
    Thaw,
    /// PostSnapshot.
    PostSnapshot,
    /// Abort.
    Abort,
    /// BackupComplete.
    BackupComplete,
    /// BackupShutdown.
    BackupShutdown,
    /// PreRestore.
    PreRestore,
    /// PostRestore.
    PostRestore,
}

impl WriterEventKind {
    /// The VSS event name.
    pub const fn name(self) -> &'static str {
        match self {
            WriterEventKind::Identify => "Identify",
            WriterEventKind::PrepareForBackup => "PrepareForBackup",
            WriterEventKind::PrepareForSnapshot => "PrepareForSnapshot",
            WriterEventKind::Freeze => "Freeze",
            WriterEventKind::Thaw => "Thaw",
            WriterEventKind::PostSnapshot => "PostSnapshot",
            WriterEventKind::Abort => "Abort",
            WriterEventKind::BackupComplete => "BackupComplete",
            WriterEventKind::BackupShutdown => "BackupShutdown",
            WriterEventKind::PreRestore => "PreRestore",
            WriterEventKind::PostRestore => "PostRestore",
        }
    }

    /// The state a writer ends in when it fails this event (WST-4), if there is one.
    ///
    /// Abort has no FAILED_AT state: a failed Abort leaves the state as it was.
    pub const fn failed_state(self) -> Option<WriterState> {
        Some(match self {
            WriterEventKind::Identify => WriterState::FailedAtIdentify,
            WriterEventKind::PrepareForBackup => WriterState::FailedAtPrepareBackup,
            WriterEventKind::PrepareForSnapshot => WriterState::FailedAtPrepareSnapshot,
            WriterEventKind::Freeze => WriterState::FailedAtFreeze,
            WriterEventKind::Thaw => WriterState::FailedAtThaw,
            WriterEventKind::PostSnapshot => WriterState::FailedAtPostSnapshot,
            WriterEventKind::BackupComplete => WriterState::FailedAtBackupComplete,
            WriterEventKind::BackupShutdown => WriterState::FailedAtBackupShutdown,
            WriterEventKind::PreRestore => WriterState::FailedAtPreRestore,
            WriterEventKind::PostRestore => WriterState::FailedAtPostRestore,
            WriterEventKind::Abort => return None,
        })
    }

    /// Whether the writer needs BACKUP_EVENTS or RESTORE_EVENTS in its subscription to get this
    /// event; Identify goes to every writer.
    pub(crate) fn subscribed(self, mask: SubscribeMask) -> bool {
        match self {
            WriterEventKind::Identify => true,
            WriterEventKind::PreRestore | WriterEventKind::PostRestore => {
                mask.contains(SubscribeMask::RESTORE_EVENTS)
            }
            _ => mask.contains(SubscribeMask::BACKUP_EVENTS),
        }
    }
}

impl std::fmt::Display for WriterEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl WriterEvent {
    /// The kind of this event.
    pub fn kind(&self) -> WriterEventKind {
        match self {
            WriterEvent::Identify => WriterEventKind::Identify,
            WriterEvent::PrepareForBackup { .. } => WriterEventKind::PrepareForBackup,
            WriterEvent::PrepareForSnapshot { .. } => WriterEventKind::PrepareForSnapshot,
            WriterEvent::Freeze { .. } => WriterEventKind::Freeze,
            WriterEvent::Thaw { .. } => WriterEventKind::Thaw,
            WriterEvent::PostSnapshot { .. } => WriterEventKind::PostSnapshot,
            WriterEvent::Abort { .. } => WriterEventKind::Abort,
            WriterEvent::BackupComplete { .. } => WriterEventKind::BackupComplete,
            WriterEvent::BackupShutdown { .. } => WriterEventKind::BackupShutdown,
            WriterEvent::PreRestore { .. } => WriterEventKind::PreRestore,
            WriterEvent::PostRestore { .. } => WriterEventKind::PostRestore,
        }
    }
}

/// A failure a writer records in a handler (ERR-1, ERR-4): a VSS writer error code (ERR-2), the
/// application's own code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterFailure {
    /// One of the writer error codes of ERR-2, or a coordinator code such as
    /// VSS_E_WRITER_NOT_RESPONDING.
    pub code: ErrorCode,
    /// The application's own result code (extended API).
    pub application_code: i64,
    /// What happened, for people.
    pub message: String,
}

impl WriterFailure {
    /// A failure with no application code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WriterFailure {
            code,
            application_code: 0,
            message: message.into(),
        }
    }
}

/// A writer's answer to one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriterReply {
    /// `None` when the handler succeeded; a failure (a veto) otherwise (ERR-1, ERR-3).
    pub failure: Option<WriterFailure>,
    /// The WMD, in reply to Identify.
    pub metadata: Option<WriterMetadata>,
    /// The writer's records as it left them, in reply to an event that lets it edit them (BCD-7).
    /// The coordinator applies them through `BackupComponents::apply_writer_changes` (BCD-11).
    pub components: Option<WriterComponents>,
}

impl WriterReply {
    /// A plain success.
    pub fn ok() -> Self {
        WriterReply::default()
    }

    /// A success to Identify, carrying the WMD.
    pub fn identified(metadata: WriterMetadata) -> Self {
        WriterReply {
            metadata: Some(metadata),
            ..WriterReply::default()
        }
    }

    /// A failure (veto).
    pub fn failed(failure: WriterFailure) -> Self {
        WriterReply {
            failure: Some(failure),
            ..WriterReply::default()
        }
    }
}

/// Why an event could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The writer's connection is gone; it will get no more events.
    #[error("the writer's connection is gone")]
    Gone,
    /// The writer answered something the coordinator cannot understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// How the coordinator reaches one connected writer.
///
/// The daemon implements it over the writer's held stream; tests implement it in-process.
/// `deliver` may be called concurrently (Identify can arrive from another session at any time,
/// ROLE-6, and Abort may be sent while a Freeze is still outstanding). The coordinator enforces all
/// timeouts itself by dropping the returned future.
#[async_trait]
pub trait WriterEndpoint: Send + Sync {
    /// Sends one event and waits for the writer's reply.
    async fn deliver(&self, event: WriterEvent) -> Result<WriterReply, EndpointError>;

    /// Sends one event of the session `session`. Every callback belongs to one session (ROLE-5),
    /// and a writer serving concurrent sessions keeps its per-backup state by session, so
    /// transports that can carry the id override this; the default ignores it.
    async fn deliver_in_session(
        &self,
        session: crate::SessionId,
        event: WriterEvent,
    ) -> Result<WriterReply, EndpointError> {
        let _ = session;
        self.deliver(event).await
    }
}

/// What a writer tells the coordinator when it connects (ROLE-7, ROLE-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterRegistration {
    /// The class id, shared by every instance.
    pub class_id: WriterClassId,
    /// The writer's name; not localized.
    pub writer_name: String,
    /// The persistent instance name, unique per class on the host.
    pub instance_name: Option<String>,
    /// Orders Freeze (ROLE-9).
    pub application_level: ApplicationLevel,
    /// The longest time the writer tolerates between Freeze and Thaw (BK-SNAP-5); 60 s by default.
    pub freeze_timeout: Duration,
    /// Which events the writer wants (ROLE-8).
    pub subscribe_mask: SubscribeMask,
}

impl WriterRegistration {
    /// A registration with the defaults of ROLE-8: front-end level, 60 s freeze timeout, backup and
    /// restore events.
    pub fn new(class_id: WriterClassId, writer_name: impl Into<String>) -> Self {
        WriterRegistration {
            class_id,
            writer_name: writer_name.into(),
            instance_name: None,
            application_level: ApplicationLevel::FrontEnd,
            freeze_timeout: DEFAULT_FREEZE_TIMEOUT,
            subscribe_mask: SubscribeMask::DEFAULT,
        }
    }
}

/// A writer's status as `GatherWriterStatus` or `vssadmin list writers` shows it (WST-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStatus {
    /// The instance id the coordinator assigned.
    pub instance_id: WriterInstanceId,
    /// The class id.
    pub class_id: WriterClassId,
    /// The writer's name.
    pub writer_name: String,
    /// The persistent instance name.
    pub instance_name: Option<String>,
    /// The state (ENUM-4).
    pub state: WriterState,
    /// The last failure, `None` meaning S_OK.
    pub failure: Option<WriterFailure>,
}

/// Which writers a `set_writer_enabled` call addresses (BK-INIT-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriterSelector {
    /// Every instance of a class.
    Class(WriterClassId),
    /// One instance.
    Instance(WriterInstanceId),
}
