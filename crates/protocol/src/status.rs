//! VSS result codes on the wire: the in-band [`v1::Status`], and [`tonic::Status`] for refused calls.
//!
//! The protocol has two ways to report an outcome (docs/protocol.md, "Errors"):
//! - Every call that was accepted answers with gRPC OK and carries its VSS outcome, success or
//!   failure, in the `status` field of its reply, a [`v1::Status`] built from an [`ErrorCode`] of
//!   the registry [`shadowcopy_metadata::codes`].
//! - A call or stream refused as a whole (wrong protocol version, caller not allowed, malformed
//!   message, a stream used against its rules) fails with a [`tonic::Status`]. When a VSS code
//!   applies, [`grpc_status`] chooses the gRPC code with [`grpc_code`], writes the VSS name and
//!   number at the start of the message, and puts the number in the binary metadata entry
//!   [`VSS_CODE_HEADER`], where [`error_code_of_grpc`] finds it again.

use std::fmt;

use shadowcopy_metadata::codes::{self, ErrorCode};
use tonic::Code;
use tonic::metadata::BinaryMetadataValue;

use crate::v1;

/// The binary metadata entry of a [`tonic::Status`] that carries the VSS code: the HRESULT as four
/// bytes, big-endian. gRPC requires binary entries to end in `-bin`.
pub const VSS_CODE_HEADER: &str = "x-shadowcopy-vss-code-bin";

impl From<&ErrorCode> for v1::Status {
    /// The status of a code, with the code's registry meaning as message and its action as hint.
    fn from(code: &ErrorCode) -> Self {
        v1::Status {
            code: code.value,
            name: code.name.to_owned(),
            message: code.meaning.to_owned(),
            hint: code.action.to_owned(),
        }
    }
}

impl v1::Status {
    /// The status of `code` with a message about this occurrence, naming the objects involved;
    /// the hint is the code's registry action.
    pub fn from_code(code: &ErrorCode, message: impl Into<String>) -> Self {
        v1::Status {
            message: message.into(),
            ..v1::Status::from(code)
        }
    }

    /// Whether the status means success: the high (severity) bit of the code is clear.
    ///
    /// This holds for codes missing from the registry too, as it does for any HRESULT.
    pub const fn is_success(&self) -> bool {
        self.code & 0x8000_0000 == 0
    }

    /// The registry entry of the status's code; see [`error_code_of`].
    pub fn error_code(&self) -> Option<&'static ErrorCode> {
        error_code_of(self)
    }
}

impl fmt::Display for v1::Status {
    /// Writes `NAME (0xXXXXXXXX): message`, falling back on the registry for an empty name or message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = error_code_of(self);
        let name = match (self.name.as_str(), known) {
            ("", Some(code)) => code.name,
            ("", None) => "unknown result code",
            (name, _) => name,
        };
        write!(f, "{name} (0x{:08X})", self.code)?;
        match (self.message.as_str(), known) {
            ("", Some(code)) => write!(f, ": {}", code.title),
            ("", None) => Ok(()),
            (message, _) => write!(f, ": {message}"),
        }
    }
}

impl std::error::Error for v1::Status {}

/// The success status, [`codes::S_OK`].
pub fn status_ok() -> v1::Status {
    v1::Status::from(&codes::S_OK)
}

/// The registry entry of a status's code, or `None` for a number the registry does not know.
///
/// The number is authoritative: the `name` field is for people and is not compared.
pub fn error_code_of(status: &v1::Status) -> Option<&'static ErrorCode> {
    codes::lookup(status.code)
}

/// Turns the `status` field of a reply into a `Result`.
///
/// A success status is `Ok` (it may still be a code such as `VSS_S_ASYNC_CANCELLED`), a failure
/// status is `Err`, and a reply without a status, which a correct server never sends, is
/// `Err(VSS_E_UNEXPECTED)`.
pub fn reply_status(status: Option<v1::Status>) -> Result<v1::Status, v1::Status> {
    match status {
        Some(status) if status.is_success() => Ok(status),
        Some(status) => Err(status),
        None => Err(v1::Status::from_code(
            &codes::VSS_E_UNEXPECTED,
            "the reply carried no status, which breaks the protocol; the server is faulty",
        )),
    }
}

/// The gRPC code that stands for a VSS code when a call is refused as a whole.
///
/// Success codes map to [`Code::Ok`]; they never become errors. docs/protocol.md lists the whole
/// mapping; the test suite keeps the two in step.
pub fn grpc_code(code: &ErrorCode) -> Code {
    grpc_code_of_value(code.value)
}

/// A [`tonic::Status`] that refuses a call for the VSS reason `code`.
///
/// The message is `NAME (0xXXXXXXXX): message`, and the code is also carried in
/// [`VSS_CODE_HEADER`].
pub fn grpc_status(code: &ErrorCode, message: impl Into<String>) -> tonic::Status {
    to_grpc_status(&v1::Status::from_code(code, message))
}

/// The [`tonic::Status`] for an in-band failure status, for a server that has to end a stream or
/// refuse a call because of it. Codes missing from the registry map to [`Code::Unknown`].
pub fn to_grpc_status(status: &v1::Status) -> tonic::Status {
    let mut grpc = tonic::Status::new(grpc_code_of_value(status.code), status.to_string());
    grpc.metadata_mut().insert_bin(
        VSS_CODE_HEADER,
        BinaryMetadataValue::from_bytes(&status.code.to_be_bytes()),
    );
    grpc
}

/// The VSS code carried in a [`tonic::Status`] made by [`grpc_status`] or [`to_grpc_status`], if
/// any and if the registry knows it.
pub fn error_code_of_grpc(status: &tonic::Status) -> Option<&'static ErrorCode> {
    let bytes = status
        .metadata()
        .get_bin(VSS_CODE_HEADER)?
        .to_bytes()
        .ok()?;
    let value = u32::from_be_bytes(bytes.as_ref().try_into().ok()?);
    codes::lookup(value)
}

/// [`grpc_code`] for a bare number.
fn grpc_code_of_value(value: u32) -> Code {
    if value & 0x8000_0000 == 0 {
        return Code::Ok;
    }
    GRPC_CODES
        .iter()
        .find(|(code, _)| code.value == value)
        .map_or(Code::Unknown, |&(_, grpc)| grpc)
}

/// The gRPC code of every failure code of the registry, in registry order.
///
/// The rule of thumb, from the gRPC status-code guide: `INVALID_ARGUMENT` when the request itself is
/// wrong, `FAILED_PRECONDITION` when the system must change before the call can work, `ABORTED` when
/// the caller should retry the whole operation, `UNAVAILABLE` when it may retry the same call later,
/// `RESOURCE_EXHAUSTED` for limits and space, `INTERNAL` for faults of the service or a writer.
const GRPC_CODES: &[(ErrorCode, Code)] = &[
    (codes::E_NOTIMPL, Code::Unimplemented),
    (codes::VSS_E_BAD_STATE, Code::FailedPrecondition),
    (codes::VSS_E_UNEXPECTED, Code::Internal),
    (
        codes::VSS_E_PROVIDER_ALREADY_REGISTERED,
        Code::AlreadyExists,
    ),
    (codes::VSS_E_PROVIDER_NOT_REGISTERED, Code::NotFound),
    (codes::VSS_E_PROVIDER_VETO, Code::Aborted),
    (codes::VSS_E_PROVIDER_IN_USE, Code::Unavailable),
    (codes::VSS_E_OBJECT_NOT_FOUND, Code::NotFound),
    (codes::VSS_E_VOLUME_NOT_SUPPORTED, Code::FailedPrecondition),
    (codes::VSS_E_OBJECT_ALREADY_EXISTS, Code::AlreadyExists),
    (
        codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
        Code::FailedPrecondition,
    ),
    (codes::VSS_E_UNEXPECTED_PROVIDER_ERROR, Code::Internal),
    (codes::VSS_E_CORRUPT_XML_DOCUMENT, Code::InvalidArgument),
    (codes::VSS_E_INVALID_XML_DOCUMENT, Code::InvalidArgument),
    (
        codes::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED,
        Code::ResourceExhausted,
    ),
    (codes::VSS_E_FLUSH_WRITES_TIMEOUT, Code::Aborted),
    (codes::VSS_E_HOLD_WRITES_TIMEOUT, Code::Aborted),
    (codes::VSS_E_UNEXPECTED_WRITER_ERROR, Code::Internal),
    (codes::VSS_E_SNAPSHOT_SET_IN_PROGRESS, Code::Aborted),
    (
        codes::VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED,
        Code::ResourceExhausted,
    ),
    (codes::VSS_E_WRITER_INFRASTRUCTURE, Code::Internal),
    (codes::VSS_E_WRITER_NOT_RESPONDING, Code::Unavailable),
    (codes::VSS_E_WRITER_ALREADY_SUBSCRIBED, Code::AlreadyExists),
    (codes::VSS_E_UNSUPPORTED_CONTEXT, Code::InvalidArgument),
    (codes::VSS_E_VOLUME_IN_USE, Code::FailedPrecondition),
    (
        codes::VSS_E_MAXIMUM_DIFFAREA_ASSOCIATIONS_REACHED,
        Code::ResourceExhausted,
    ),
    (codes::VSS_E_INSUFFICIENT_STORAGE, Code::ResourceExhausted),
    (codes::VSS_E_NO_SNAPSHOTS_IMPORTED, Code::FailedPrecondition),
    (
        codes::VSS_E_SOME_SNAPSHOTS_NOT_IMPORTED,
        Code::FailedPrecondition,
    ),
    (codes::VSS_E_REVERT_IN_PROGRESS, Code::Aborted),
    (codes::VSS_E_REVERT_VOLUME_LOST, Code::DataLoss),
    (codes::VSS_E_REBOOT_REQUIRED, Code::FailedPrecondition),
    (codes::VSS_E_TRANSACTION_FREEZE_TIMEOUT, Code::Aborted),
    (codes::VSS_E_TRANSACTION_THAW_TIMEOUT, Code::Aborted),
    (codes::VSS_E_UNSELECTED_VOLUME, Code::FailedPrecondition),
    (codes::VSS_E_SNAPSHOT_NOT_IN_SET, Code::InvalidArgument),
    (codes::VSS_E_NESTED_VOLUME_LIMIT, Code::FailedPrecondition),
    (codes::VSS_E_VOLUME_NOT_LOCAL, Code::InvalidArgument),
    (codes::VSS_E_NOT_SUPPORTED, Code::Unimplemented),
    (codes::VSS_E_WRITERERROR_PARTIAL_FAILURE, Code::Aborted),
    (
        codes::VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT,
        Code::FailedPrecondition,
    ),
    (
        codes::VSS_E_WRITERERROR_OUTOFRESOURCES,
        Code::ResourceExhausted,
    ),
    (codes::VSS_E_WRITERERROR_TIMEOUT, Code::Aborted),
    (codes::VSS_E_WRITERERROR_RETRYABLE, Code::Aborted),
    (codes::VSS_E_WRITERERROR_NONRETRYABLE, Code::Internal),
    (codes::VSS_E_WRITERERROR_RECOVERY_FAILED, Code::Internal),
    (
        codes::VSS_E_BREAK_REVERT_ID_FAILED,
        Code::FailedPrecondition,
    ),
    (codes::VSS_E_CANNOT_REVERT_DISKID, Code::FailedPrecondition),
    (codes::VSS_E_RESYNC_IN_PROGRESS, Code::Aborted),
    (codes::VSS_E_WRITER_STATUS_NOT_AVAILABLE, Code::Unavailable),
    (codes::E_ACCESSDENIED, Code::PermissionDenied),
    (codes::E_OUTOFMEMORY, Code::ResourceExhausted),
    (codes::E_INVALIDARG, Code::InvalidArgument),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_code_has_exactly_one_grpc_code() {
        let failures: Vec<&ErrorCode> = codes::REGISTRY
            .iter()
            .filter(|code| !code.is_success())
            .collect();
        let mapped: Vec<&ErrorCode> = GRPC_CODES.iter().map(|(code, _)| code).collect();
        assert_eq!(
            mapped, failures,
            "GRPC_CODES must list the registry's failure codes in order"
        );
        for (_, grpc) in GRPC_CODES {
            assert_ne!(*grpc, Code::Ok);
            assert_ne!(*grpc, Code::Unknown);
        }
    }

    #[test]
    fn unknown_numbers() {
        assert_eq!(grpc_code_of_value(0x8004_2305), Code::Unknown);
        assert_eq!(grpc_code_of_value(0x0004_2305), Code::Ok);
        let status = v1::Status {
            code: 0x8004_2305,
            ..Default::default()
        };
        assert_eq!(status.to_string(), "unknown result code (0x80042305)");
        assert_eq!(error_code_of(&status), None);
        let grpc = to_grpc_status(&status);
        assert_eq!(grpc.code(), Code::Unknown);
        assert_eq!(error_code_of_grpc(&grpc), None);
    }

    #[test]
    fn reply_status_rules() {
        assert_eq!(reply_status(Some(status_ok())), Ok(status_ok()));
        let cancelled = v1::Status::from(&codes::VSS_S_ASYNC_CANCELLED);
        assert_eq!(reply_status(Some(cancelled.clone())), Ok(cancelled));
        let bad = v1::Status::from(&codes::VSS_E_BAD_STATE);
        assert_eq!(reply_status(Some(bad.clone())), Err(bad));
        let missing = reply_status(None).unwrap_err();
        assert_eq!(missing.code, codes::VSS_E_UNEXPECTED.value);
        assert!(missing.message.contains("no status"));
    }
}
