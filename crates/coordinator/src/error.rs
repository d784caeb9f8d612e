//! The error type of every coordinator call: a VSS result code plus a message with the context.
//!
//! Every failure a requester, writer or admin sees carries a code from the registry in
//! `shadowcopy_metadata::codes` (ERR-CODE-1) and a message that names the session, set, writer,
//! provider or volume involved (ERR-CODE-2), so that the protocol layer can pass both on unchanged.

use shadowcopy_metadata::bcd::BcdError;
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::validate::DocumentError;

/// A failed coordinator call: the VSS result code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.name)]
pub struct CoordinatorError {
    code: ErrorCode,
    message: String,
}

impl CoordinatorError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CoordinatorError {
            code,
            message: message.into(),
        }
    }

    /// VSS_E_BAD_STATE for a call made out of order: names the call and the step that must come first.
    pub(crate) fn bad_state(call: &str, expected: impl std::fmt::Display) -> Self {
        Self::new(
            codes::VSS_E_BAD_STATE,
            format!("{call} is not allowed now: {expected}"),
        )
    }

    /// The VSS result code (ERR-CODE-1).
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message, naming what failed and where.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<BcdError> for CoordinatorError {
    fn from(error: BcdError) -> Self {
        CoordinatorError::new(error.code(), error.to_string())
    }
}

impl From<DocumentError> for CoordinatorError {
    fn from(error: DocumentError) -> Self {
        CoordinatorError::new(error.code(), error.to_string())
    }
}

/// The result type of coordinator calls.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
