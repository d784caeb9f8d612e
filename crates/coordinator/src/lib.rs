//! The coordinator library: the writer registry, the backup and restore session state machines,
//! and the sequencing of writers and providers through a snapshot set, with no sockets.
//!
//! The daemon (`shadowcopyd`) and the CLI's embedded mode adapt it to their transports: a writer's
//! connection implements [`WriterEndpoint`], a provider implements [`Provider`], and a requester's
//! calls map onto [`BackupSession`] and [`RestoreSession`].
//!
//! A backup, as calls on a [`BackupSession`] (spec §3):
//!
//! | Step | Call | Events to writers |
//! |---|---|---|
//! | B1 | [`BackupSession::initialize_for_backup`] | |
//! | B2–B4 | [`BackupSession::set_context`], [`BackupSession::set_backup_state`], [`BackupSession::set_writer_enabled`] | |
//! | B5 | [`BackupSession::gather_writer_metadata`] | Identify |
//! | B6 | [`BackupSession::add_component`], [`BackupSession::set_backup_options`], [`BackupSession::set_previous_backup_stamp`] | |
//! | B7–B8 | [`BackupSession::start_snapshot_set`], [`BackupSession::add_to_snapshot_set`] | |
//! | B9 | [`BackupSession::prepare_for_backup`] | PrepareForBackup |
//! | B10 | [`BackupSession::gather_writer_status`] | |
//! | B11 | [`BackupSession::do_snapshot_set`] | PrepareForSnapshot, Freeze, Thaw, PostSnapshot |
//! | B12 | [`BackupSession::set_backup_succeeded`], [`BackupSession::backup_components`] | |
//! | B13 | [`BackupSession::backup_complete`] | BackupComplete |
//! | B15 | [`BackupSession::release`] or drop | BackupShutdown |
//!
//! Guarantees the rest of the system relies on:
//! - every writer that was sent Freeze is sent Thaw or Abort on every path: a veto, a writer or
//!   provider timeout, a provider failure, a panic in coordinator code, a dropped future or session
//!   (architecture §8);
//! - every writer event has a deadline (CFG-16; Freeze: the writer's own freeze timeout,
//!   BK-SNAP-5), and the providers' PreCommit to PostCommit has the 10 s commit window (CFG-10);
//! - one snapshot set is in creation per coordinator at a time (LIMIT-4);
//! - every error carries a VSS result code from `shadowcopy_metadata::codes` (ERR-CODE-1).
//!
//! Tracing: one span per session, one per snapshot set (with the set id), child spans per phase
//! and per writer event.
//!
//! Statistics are the host's: [`Coordinator::observe_snapshot_sets`] installs a [`SetObserver`]
//! that gets a [`SnapshotSetReport`] (outcome, result code, freeze window, duration) for every set
//! once DoSnapshotSet is over, also one cut short; the daemon turns these into its Prometheus
//! metrics, so that this crate stays free of HTTP and metrics formats.
//!
//! Where the spec leaves a choice, this crate decides as follows:
//! - Thaw goes in reverse application-level order (ROLE-9 and OPEN-3: the proposal is adopted).
//! - Every event has its own configurable timeout, 60 s by default (CFG-16); a missed one is
//!   FAILED_AT_<event> with VSS_E_WRITER_NOT_RESPONDING. Freeze is bounded by the writer's freeze
//!   timeout instead, and a missed Freeze, or a freeze window (Freeze sent to Thaw sent) that runs
//!   out, is FAILED_AT_FREEZE with VSS_E_WRITERERROR_TIMEOUT plus Abort (BK-SNAP-5).
//! - Freeze and Thaw vetoes are advisory: the set completes (BK-SNAP-7, OPEN-4 without strict mode).
//! - Any provider failure in DoSnapshotSet, EndPrepareSnapshots included, fails the set and sends
//!   Abort to every participating writer that has not handled PostSnapshot (BK-SNAP-8); Abort is
//!   sent at most once per writer and session, so the AbortBackup the requester must still call
//!   (BK-SNAP-9) sends nothing twice.
//! - Overrunning the commit window in PreCommitSnapshots is VSS_E_FLUSH_WRITES_TIMEOUT, in
//!   CommitSnapshots or PostCommitSnapshots VSS_E_HOLD_WRITES_TIMEOUT (LIMIT-5).
//! - In writer contexts PrepareForBackup is required before DoSnapshotSet (BK-PREP-2 says SHOULD):
//!   it fixes which writers take part (SEL-5, BK-DISC-4) and closes the BCD's discovery phase.
//! - Writers that failed an earlier event of the session get no further snapshot events; BackupComplete
//!   goes only to writers in WAITING_FOR_BACKUP_COMPLETE, so a writer whose PostSnapshot failed does
//!   not truncate logs for data that may not be usable.
//! - A writer gets backup events only with BACKUP_EVENTS in its subscription and restore events
//!   only with RESTORE_EVENTS; Identify goes to every enabled writer; PostSnapshot is part of the
//!   backup events.
//! - A BCD change a writer sends back outside its window (BCD-7) is refused with the BCD's own code
//!   (VSS_E_BAD_STATE, or E_ACCESSDENIED for another party's field or records) and recorded as the
//!   writer's last failure; the event keeps its outcome.
//! - An auto-release copy that a provider fails, or does not answer, to delete at release is
//!   deleted again in the background with a doubling pause (0.5 s to a minute) until the provider
//!   succeeds (BK-END-4); the host does not wait for that at shutdown, since the provider's catalog
//!   recovery deletes what is left at the next start.

mod backup;
mod config;
mod coordinator;
mod error;
mod events;
mod observer;
mod provider;
mod registry;
mod restore;
pub mod sim;
mod snapshot_set;
mod writer;

pub use backup::{BackupSession, SessionId};
pub use config::{
    COMMIT_WINDOW, CoordinatorConfig, DEFAULT_FREEZE_TIMEOUT,
    DEFAULT_MAX_CLIENT_ACCESSIBLE_PER_VOLUME, EventTimeouts, MAX_SNAPSHOTS_PER_VOLUME,
    MAX_VOLUMES_PER_SET, ProviderTimeouts,
};
pub use coordinator::{Coordinator, DeleteOutcome};
pub use error::{CoordinatorError, Result};
pub use observer::{SetObserver, SetOutcome, SetVolume, SnapshotSetReport};
pub use provider::{
    ALLOWED_PROVIDER_CODES, DeleteTarget, Provider, ProviderError, ProviderInfo, ProviderStep,
    REVERT_PROVIDER_CODES, SnapshotRecord, VolumeSupport, translate_provider_code,
    translate_provider_code_at,
};
pub use restore::{ComponentKey, RestoreSession};
pub use writer::{
    EndpointError, SnapshotLocation, WriterEndpoint, WriterEvent, WriterEventKind, WriterFailure,
    WriterRegistration, WriterReply, WriterSelector, WriterStatus,
};
