//! The failure a handler reports: one of the writer error codes of ERR-2, an application code and a
//! message (ERR-1, ERR-4).

use std::fmt;

use shadowcopy_metadata::bcd::BcdError;
use shadowcopy_metadata::codes::{self, ErrorCode};

/// What every handler returns: `Ok(())` unless the error is fatal (ERR-1).
pub type HandlerResult = Result<(), WriterFailure>;

/// A failure recorded by a writer (SetWriterFailure in VSS, ERR-1, ERR-2, ERR-4).
///
/// Returned as the `Err` of a handler it is fatal: the event is answered with `success = false`,
/// which for Freeze and Thaw is a veto (BK-SNAP-7). Recorded with
/// [`EventContext::record_failure`](crate::EventContext::record_failure) while the handler still
/// returns `Ok`, it is non-fatal: the event succeeds and the requester sees the failure in the
/// writer status (ERR-1, third rule).
///
/// `code` should be one of the writer codes of ERR-2; the constructors choose it for you. The
/// requester reads the code to decide what to do (retry the whole backup, add volumes, give up on
/// this writer), so pick the constructor by what the requester should do, and say the exact cause
/// in `message` (ERR-1: always log the exact cause).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterFailure {
    /// The VSS writer error code, for example [`codes::VSS_E_WRITERERROR_RETRYABLE`].
    pub code: &'static ErrorCode,
    /// The application's own result code (ERR-4); 0 when it has none.
    pub application_code: i64,
    /// What went wrong in this occurrence, naming the objects involved.
    pub message: String,
}

impl WriterFailure {
    /// A failure with any code; prefer the named constructors, which pick an ERR-2 writer code.
    pub fn new(code: &'static ErrorCode, message: impl Into<String>) -> Self {
        WriterFailure {
            code,
            application_code: 0,
            message: message.into(),
        }
    }

    /// VSS_E_WRITERERROR_RETRYABLE: a transient problem; the requester should retry the whole
    /// operation (ERR-1: "for transient problems, record RETRYABLE").
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(&codes::VSS_E_WRITERERROR_RETRYABLE, message)
    }

    /// VSS_E_WRITERERROR_NONRETRYABLE: retrying will not help; the requester should give up on
    /// this writer for now.
    pub fn non_retryable(message: impl Into<String>) -> Self {
        Self::new(&codes::VSS_E_WRITERERROR_NONRETRYABLE, message)
    }

    /// VSS_E_WRITERERROR_OUTOFRESOURCES: memory, disk space or another resource ran short; the
    /// requester should reduce the load and retry.
    pub fn out_of_resources(message: impl Into<String>) -> Self {
        Self::new(&codes::VSS_E_WRITERERROR_OUTOFRESOURCES, message)
    }

    /// VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT: the set lacks volumes the writer's data lives on
    /// (see [`EventContext::is_path_affected`](crate::EventContext::is_path_affected)); the
    /// requester should add them and retry.
    pub fn inconsistent_snapshot(message: impl Into<String>) -> Self {
        Self::new(&codes::VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT, message)
    }

    /// VSS_E_WRITERERROR_TIMEOUT: the freeze window was exceeded (BK-SNAP-5). The SDK reports
    /// this itself when its freeze timer fires; a handler may use it for its own time limits.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(&codes::VSS_E_WRITERERROR_TIMEOUT, message)
    }

    /// VSS_E_WRITERERROR_RECOVERY_FAILED: auto-recovery in the shadow copy failed (PostSnapshot).
    pub fn recovery_failed(message: impl Into<String>) -> Self {
        Self::new(&codes::VSS_E_WRITERERROR_RECOVERY_FAILED, message)
    }

    /// VSS_E_WRITERERROR_PARTIAL_FAILURE: only some components failed; set the per-component
    /// failure messages in the component records too (ERR-4).
    pub fn partial_failure(message: impl Into<String>) -> Self {
        Self::new(&codes::VSS_E_WRITERERROR_PARTIAL_FAILURE, message)
    }

    /// The same failure with the application's own result code (ERR-4).
    #[must_use]
    pub fn with_application_code(mut self, application_code: i64) -> Self {
        self.application_code = application_code;
        self
    }
}

impl fmt::Display for WriterFailure {
    /// `NAME (0xXXXXXXXX): message`, plus the application code when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (0x{:08X}): {}",
            self.code.name, self.code.value, self.message
        )?;
        if self.application_code != 0 {
            write!(f, " (application code {})", self.application_code)?;
        }
        Ok(())
    }
}

impl std::error::Error for WriterFailure {}

impl From<BcdError> for WriterFailure {
    /// A refused component-record edit (BCD-6, BCD-7, BCD-8) is a bug in the writer, not a
    /// condition that a retry would change, so it becomes NONRETRYABLE. The metadata crate's own
    /// code (for example VSS_E_BAD_STATE for an edit outside its window) and its explanation are
    /// kept in the message, so that `components.edit(...)?.set_...(...)?` in a handler reports the
    /// exact cause (ERR-1).
    fn from(error: BcdError) -> Self {
        let code = error.code();
        WriterFailure::non_retryable(format!(
            "the writer's component-record edit was refused with {} (0x{:08X}): {error}",
            code.name, code.value
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_pick_the_err2_codes() {
        let cases = [
            (
                WriterFailure::retryable("x"),
                codes::VSS_E_WRITERERROR_RETRYABLE,
            ),
            (
                WriterFailure::non_retryable("x"),
                codes::VSS_E_WRITERERROR_NONRETRYABLE,
            ),
            (
                WriterFailure::out_of_resources("x"),
                codes::VSS_E_WRITERERROR_OUTOFRESOURCES,
            ),
            (
                WriterFailure::inconsistent_snapshot("x"),
                codes::VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT,
            ),
            (
                WriterFailure::timeout("x"),
                codes::VSS_E_WRITERERROR_TIMEOUT,
            ),
        ];
        for (failure, code) in cases {
            assert_eq!(failure.code.value, code.value);
            assert_eq!(failure.application_code, 0);
            assert_eq!(failure.message, "x");
        }
        let failure = WriterFailure::retryable("busy").with_application_code(-7);
        assert_eq!(
            failure.to_string(),
            "VSS_E_WRITERERROR_RETRYABLE (0x800423F3): busy (application code -7)"
        );
    }
}
