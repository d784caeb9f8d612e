//! Progress of long work, reported to whoever drives the engine: the CLI draws it on a terminal and
//! stays quiet otherwise.

use std::sync::Arc;

/// A step of a backup or restore, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Asking the writers for their metadata (B5, R3).
    GatheringWriters,
    /// PrepareForBackup (B9).
    Preparing,
    /// DoSnapshotSet: writers freeze, providers copy, writers thaw (B11).
    CreatingShadowCopies,
    /// Reading the shadow copies into the repository (B12).
    Copying,
    /// BackupComplete and release (B13–B15).
    Completing,
    /// PreRestore (R5).
    PreparingRestore,
    /// Writing files back (R7).
    Restoring,
    /// PostRestore (R8).
    FinishingRestore,
}

impl Step {
    /// A short description for people.
    pub fn describe(self) -> &'static str {
        match self {
            Step::GatheringWriters => "asking the writers for their metadata",
            Step::Preparing => "preparing the writers for the backup",
            Step::CreatingShadowCopies => "creating the shadow copies",
            Step::Copying => "copying into the repository",
            Step::Completing => "telling the writers the backup is complete",
            Step::PreparingRestore => "preparing the writers for the restore",
            Step::Restoring => "restoring files",
            Step::FinishingRestore => "letting the writers finish the restore",
        }
    }
}

/// Receives progress. Methods are called from several threads.
pub trait Reporter: Send + Sync {
    /// A new step begins.
    fn step(&self, step: Step);
    /// The number of bytes the current step will move, once known.
    fn total_bytes(&self, bytes: u64);
    /// `bytes` more bytes were moved in the current step.
    fn advance(&self, bytes: u64);
    /// `files` more files were taken in hand in the current step.
    fn files(&self, files: u64);
    /// Something the user should know, not an error.
    fn note(&self, message: &str);
}

/// A reporter that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn step(&self, _: Step) {}
    fn total_bytes(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn files(&self, _: u64) {}
    fn note(&self, _: &str) {}
}

/// Hands the repository's byte progress to a [`Reporter`].
pub(crate) struct RepositoryProgress(pub(crate) Arc<dyn Reporter>);

impl shadowcopy_repository::Progress for RepositoryProgress {
    fn set_total(&self, bytes: u64) {
        self.0.total_bytes(bytes);
    }

    fn advance(&self, bytes: u64) {
        self.0.advance(bytes);
    }
}
