//! The one error type of the backup application: what failed, where, and what to do, with the VSS
//! result code a user or a program can act on (ERR-CODE-1).

use std::path::PathBuf;

use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_repository::RepositoryError;
use shadowcopy_requester::RequesterError;

/// Why a backup, a restore or a look into the repository failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The coordinator refused or failed a call, or could not be reached.
    #[error(transparent)]
    Requester(#[from] RequesterError),

    /// The repository could not be opened, written or read.
    #[error(transparent)]
    Repository(#[from] RepositoryError),

    /// What was asked for cannot be done as asked; the message says what to give instead.
    #[error("{message}")]
    Invalid {
        /// The VSS code that fits best (`E_INVALIDARG`, `VSS_E_OBJECT_NOT_FOUND`, ...).
        code: &'static ErrorCode,
        /// What is wrong and what to do.
        message: String,
    },

    /// A backup in the repository lacks what shadowcopy stores with every backup, or holds a
    /// document that does not parse; it was not made by shadowcopy or it was damaged.
    #[error(
        "backup {snapshot} in {repo}: {message}; it was not made by `shadowcopy backup` or it is \
         damaged: run `shadowcopy backups check --repo {repo}`",
        repo = repo.display()
    )]
    Damaged {
        /// The repository.
        repo: PathBuf,
        /// The repository snapshot.
        snapshot: String,
        /// What is missing or wrong.
        message: String,
    },

    /// A shadow copy could not be made readable (mounted) for the backup.
    #[error(
        "cannot read the shadow copy of {volume} at {device_object}: {message}; loop-image copies \
         are mounted read-only for the backup, which needs root",
        device_object = device_object.display()
    )]
    CopyUnreadable {
        /// The original volume.
        volume: String,
        /// The copy's device object (BK-COPY-1).
        device_object: PathBuf,
        /// Why.
        message: String,
    },

    /// A file-system operation outside the repository failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },

    /// The repository holds the backup, but a later step with the coordinator failed (it went
    /// away, say): the backup is stored and restores; `completed` says whether the writers heard
    /// BackupComplete (without it none of them truncated its logs).
    #[error(
        "backup {snapshot_id} is stored in the repository and can be restored, but {}: {cause}",
        if *completed {
            "releasing the session afterwards failed (its writers heard BackupComplete; shadowcopyd \
             deletes the shadow copies once it notices the session is gone, or at its next start)"
        } else {
            "the writers could not be told that it completed (no BackupComplete: none of them \
             truncated its logs, BK-END-2)"
        }
    )]
    Stored {
        /// The repository snapshot.
        snapshot_id: String,
        /// Whether BackupComplete reached the writers.
        completed: bool,
        /// What failed; part of the message (not a `source`, so that it is not printed twice).
        cause: Box<BackupError>,
    },

    /// A fault point of a test made this step fail (`SHADOWCOPY_FAULTS`, crate
    /// `shadowcopy-faults`); never seen in production.
    #[error(transparent)]
    Injected(#[from] shadowcopy_faults::Injected),

    /// A task of the backup engine ended unexpectedly (a panic in repository code).
    #[error(
        "the {what} task ended unexpectedly: {detail}; this is a bug in shadowcopy, please report it"
    )]
    Internal {
        /// Which task.
        what: &'static str,
        /// What is known.
        detail: String,
    },
}

impl BackupError {
    /// The VSS result code of this failure (ERR-CODE-1).
    pub fn code(&self) -> &'static ErrorCode {
        match self {
            BackupError::Requester(error) => error.code(),
            BackupError::Repository(_) | BackupError::Io { .. } => &codes::VSS_E_UNEXPECTED,
            BackupError::Invalid { code, .. } => code,
            BackupError::Damaged { .. } => &codes::VSS_E_CORRUPT_XML_DOCUMENT,
            BackupError::CopyUnreadable { .. } => &codes::E_ACCESSDENIED,
            BackupError::Internal { .. } | BackupError::Injected(_) => &codes::VSS_E_UNEXPECTED,
            BackupError::Stored { cause, .. } => cause.code(),
        }
    }

    /// A usage problem with `code`.
    pub(crate) fn invalid(code: &'static ErrorCode, message: impl Into<String>) -> Self {
        BackupError::Invalid {
            code,
            message: message.into(),
        }
    }
}
