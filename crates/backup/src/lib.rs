//! The backup application: application-consistent backups of components or volumes into a restic
//! repository, and restores through the writers, driven through the coordinator with the
//! requester library (ROLE-1: this is the requester people run).
//!
//! - [`run_backup`] is the backup sequence of spec §3: gather the writers' metadata, resolve the
//!   selection, plan the volumes (BK-DISC-6), hand back the base backup's stamps (INC-3),
//!   PrepareForBackup, DoSnapshotSet, read the shadow copies into one repository snapshot with the
//!   BCD, every WMD and a manifest (BK-COPY-5), record success per component (BK-COPY-4), and only
//!   then BackupComplete (BK-END-2).
//! - [`run_restore`] is the restore sequence of spec §4 with every restore method of §10, or a
//!   private restore into a directory.
//! - [`stored`] reads backups back; [`manifest`] is what is stored with each.
//!
//! How backup types map onto a deduplicating repository is explained in `backup.rs`; how files are
//! routed at restore, and why nothing is written outside a restore's targets, in `restore.rs`.

mod backup;
mod copies;
mod error;
pub mod manifest;
mod partial;
mod plan;
mod progress;
mod restore;
pub mod stored;
mod volumes;

pub use backup::{BackupOptions, BackupReport, ComponentOutcome, run_backup};
pub use error::BackupError;
pub use plan::BackupPlan;
pub use progress::{Reporter, Silent, Step};
pub use restore::{
    AppliedPending, ComponentRestore, PendingRestore, Placement, RestoreOptions, RestoreReport,
    apply_pending, run_restore,
};
pub use stored::{ListedBackup, StoredBackup};
