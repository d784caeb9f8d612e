//! The one error type of the requester library: what went wrong, where, and what to do about it.
//!
//! Every failure a requester can meet maps onto a VSS result code of the registry
//! [`shadowcopy_metadata::codes`] (ERR-CODE-1), so that a backup program can report one number
//! whatever layer failed: an in-band status of the daemon (docs/protocol.md §3.1, layer 1), a call
//! or stream refused as a whole (layer 2), a socket that cannot be reached, or an answer this
//! library cannot use. Messages are lowercase, name the socket or the call, and end with the
//! action, as the style guide asks (style anchors §3.4).

use std::path::{Path, PathBuf};

use shadowcopy_metadata::DocumentError;
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_protocol::{
    ConnectError, PROTOCOL_MAJOR, PROTOCOL_VERSION, ProtocolVersion, VERSION_HEADER,
    error_code_of_grpc, v1,
};
use tonic::Code;

/// What the user should do when the daemon refused a caller (SEC-1, CFG-8, SEC-2).
const ACCESS_HINT: &str = "run as root or as a member of the backup group configured for \
     shadowcopyd, or have the administrator grant this user the `requester` role in \
     `access_control` of /etc/shadowcopy/shadowcopyd.toml (SEC-1, CFG-8); a `deny` entry \
     overrides both (SEC-2)";

/// What the user should do when the session's stream was lost (BK-END-6, docs/protocol.md §4.1).
const DISCONNECTED_HINT: &str = "shadowcopyd releases a session whose stream ends, so this \
     backup or restore is over (BK-END-6): check that the daemon runs \
     (`systemctl status shadowcopyd`, `journalctl -u shadowcopyd`), then start again in a new \
     session";

/// Why a requester operation failed.
///
/// [`RequesterError::code`] gives the VSS result code of every variant, and
/// [`RequesterError::hint`] what to do; the Display text contains both the facts and the hint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequesterError {
    /// The daemon's socket could not be reached: missing, refused, denied, or not speaking gRPC.
    /// The message names the socket and what to do.
    #[error(transparent)]
    Connect(#[from] ConnectError),

    /// The daemon speaks another protocol major version (COMPAT-3).
    #[error(
        "shadowcopyd at {} speaks shadowcopy protocol {server} but this requester library speaks \
         {PROTOCOL_VERSION}, and the major versions must be equal: {}{}",
        socket.display(),
        version_advice(server),
        detail_suffix(detail)
    )]
    VersionMismatch {
        /// The daemon's socket.
        socket: PathBuf,
        /// The daemon's version as it stated it, or `unknown` when it did not.
        server: String,
        /// The daemon's own explanation, if it refused the call; may be empty.
        detail: String,
    },

    /// The daemon refused the caller: not root, not in the backup group, not granted the role
    /// (SEC-1).
    #[error(
        "shadowcopyd at {} refused {call}: access denied{}; {ACCESS_HINT}",
        socket.display(),
        detail_suffix(message)
    )]
    AccessDenied {
        /// The daemon's socket.
        socket: PathBuf,
        /// The call or stream that was refused, for example `Session`.
        call: &'static str,
        /// The daemon's message, which names the uid.
        message: String,
    },

    /// The daemon refused a call or stream as a whole, or ended a session with a gRPC error
    /// (docs/protocol.md §3.1, layer 2); the call had no effect.
    #[error(
        "shadowcopyd at {} refused {call}: {message}; what to do: {hint}",
        socket.display()
    )]
    Refused {
        /// The daemon's socket.
        socket: PathBuf,
        /// The call or stream that was refused.
        call: &'static str,
        /// The VSS code the refusal carried, or the nearest one for its gRPC code.
        code: &'static ErrorCode,
        /// The daemon's message, which starts with the code's name and number when it has one.
        message: String,
        /// What to do: the code's registry action, unless the library knows better.
        hint: String,
    },

    /// The connection or the session's stream was lost, or the daemon shut down (`UNAVAILABLE`);
    /// the daemon has released the session (BK-END-6).
    #[error(
        "lost the connection to shadowcopyd at {} during {call}: {detail}; {DISCONNECTED_HINT}",
        socket.display()
    )]
    Disconnected {
        /// The daemon's socket.
        socket: PathBuf,
        /// The call in flight.
        call: &'static str,
        /// What was observed, for example the transport error.
        detail: String,
    },

    /// The call was accepted and failed: its in-band status is a VSS failure code
    /// (docs/protocol.md §3.1, layer 1).
    #[error(
        "{call} failed: {} (0x{:08X}): {message}; what to do: {hint}",
        code.name,
        code.value
    )]
    Vss {
        /// The call, by its protocol name, for example `DoSnapshotSet`.
        call: &'static str,
        /// The registry entry of the status code. A number the registry does not know becomes
        /// `VSS_E_UNEXPECTED`, and the message then gives the number.
        code: &'static ErrorCode,
        /// What happened this time, naming the objects, as the daemon said it.
        message: String,
        /// What to do: the daemon's hint, or the code's registry action when it sent none.
        hint: String,
    },

    /// `Admin.DeleteSnapshots` deleted some shadow copies and then failed (DEL-1).
    #[error(
        "DeleteSnapshots deleted {deleted_count} shadow cop{} and then failed{}: {} (0x{:08X}): \
         {message}; what to do: {hint}",
        if *deleted_count == 1 { "y" } else { "ies" },
        first_failed.map(|id| format!(" at {id}")).unwrap_or_default(),
        code.name,
        code.value
    )]
    DeleteIncomplete {
        /// How many shadow copies were deleted.
        deleted_count: u32,
        /// The first shadow copy that could not be deleted, if the daemon named it.
        first_failed: Option<shadowcopy_metadata::SnapshotId>,
        /// The failure code.
        code: &'static ErrorCode,
        /// The daemon's message.
        message: String,
        /// What to do.
        hint: String,
    },

    /// An asynchronous call was cancelled through [`Canceller::cancel`](crate::Canceller::cancel)
    /// (ROLE-3): the daemon answered `VSS_S_ASYNC_CANCELLED`, a success code that nonetheless
    /// means the call did not do its work.
    #[error(
        "{call} was cancelled (VSS_S_ASYNC_CANCELLED); a cancelled call cannot be resumed: abort \
         the backup if PrepareForBackup was sent, then release the session and start over"
    )]
    Cancelled {
        /// The asynchronous call that was cancelled.
        call: &'static str,
    },

    /// A document the daemon returned, a WMD or the BCD, does not parse or breaks a rule of the
    /// spec (docs/protocol.md §3: the receiver validates every document).
    #[error(
        "{call}: shadowcopyd returned {what} that is {} ({}); the writer or daemon that wrote it is \
         faulty: find it with `shadowcopy list writers` and `journalctl -u shadowcopyd`, and \
         report it",
        if source.code() == codes::VSS_E_CORRUPT_XML_DOCUMENT { "unreadable" } else { "invalid" },
        source.code().name
    )]
    InvalidDocument {
        /// The call that returned the document.
        call: &'static str,
        /// Which document, for example `the writer metadata document of writer instance ...`.
        what: String,
        /// What is wrong with it, naming the field.
        #[source]
        source: DocumentError,
    },

    /// The daemon's answer breaks the protocol: a wrong request id, a missing result, a malformed
    /// id, or an enumeration value this version does not know although the daemon must not send
    /// newer values (COMPAT-3).
    #[error(
        "shadowcopyd at {} broke the protocol in its answer to {call}: {message}; this is a bug \
         in shadowcopyd or in this library: report it with the `journalctl -u shadowcopyd` \
         excerpt",
        socket.display()
    )]
    Protocol {
        /// The daemon's socket.
        socket: PathBuf,
        /// The call whose answer was wrong.
        call: &'static str,
        /// What was wrong.
        message: String,
    },

    /// The library found a problem before asking the daemon, for example a restore selection
    /// applied before the running writers are known.
    #[error("{call}: {message}")]
    Usage {
        /// The method that was called.
        call: &'static str,
        /// The result code the daemon would have answered.
        code: &'static ErrorCode,
        /// What is wrong and what to do.
        message: String,
    },
}

impl RequesterError {
    /// The VSS result code of the error (ERR-CODE-1).
    ///
    /// A socket the caller may not open and a refused caller are `E_ACCESSDENIED`; a daemon that
    /// cannot be reached, speaks another major version, lost the stream or broke the protocol is
    /// `VSS_E_UNEXPECTED`; a cancelled call is the success code `VSS_S_ASYNC_CANCELLED`, because
    /// that is what the daemon answered.
    pub fn code(&self) -> &'static ErrorCode {
        match self {
            RequesterError::Connect(ConnectError::PermissionDenied { .. })
            | RequesterError::AccessDenied { .. } => &codes::E_ACCESSDENIED,
            RequesterError::Connect(_)
            | RequesterError::VersionMismatch { .. }
            | RequesterError::Disconnected { .. }
            | RequesterError::Protocol { .. } => &codes::VSS_E_UNEXPECTED,
            RequesterError::Refused { code, .. }
            | RequesterError::Vss { code, .. }
            | RequesterError::DeleteIncomplete { code, .. }
            | RequesterError::Usage { code, .. } => code,
            RequesterError::Cancelled { .. } => &codes::VSS_S_ASYNC_CANCELLED,
            RequesterError::InvalidDocument { source, .. } => {
                codes::lookup(source.code().value).unwrap_or(&codes::VSS_E_INVALID_XML_DOCUMENT)
            }
        }
    }

    /// What the user or the calling program should do about the error.
    pub fn hint(&self) -> &str {
        match self {
            RequesterError::AccessDenied { .. } => ACCESS_HINT,
            RequesterError::Disconnected { .. } => DISCONNECTED_HINT,
            RequesterError::Refused { hint, .. }
            | RequesterError::Vss { hint, .. }
            | RequesterError::DeleteIncomplete { hint, .. } => hint,
            _ => self.code().action,
        }
    }

    /// The call the error is about, by its protocol name, when there is one.
    pub fn call(&self) -> Option<&'static str> {
        match self {
            RequesterError::Connect(_) | RequesterError::VersionMismatch { .. } => None,
            RequesterError::DeleteIncomplete { .. } => Some("DeleteSnapshots"),
            RequesterError::AccessDenied { call, .. }
            | RequesterError::Refused { call, .. }
            | RequesterError::Disconnected { call, .. }
            | RequesterError::Vss { call, .. }
            | RequesterError::Cancelled { call }
            | RequesterError::InvalidDocument { call, .. }
            | RequesterError::Protocol { call, .. }
            | RequesterError::Usage { call, .. } => Some(call),
        }
    }

    /// The error for a failure status of an accepted call.
    pub(crate) fn vss(call: &'static str, status: v1::Status) -> Self {
        let (code, message) = match status.error_code() {
            Some(code) => (code, status.message),
            // The number is authoritative (docs/protocol.md §3.1), so an unknown one is kept in
            // the message rather than replaced silently.
            None => (
                &codes::VSS_E_UNEXPECTED,
                format!(
                    "the daemon answered result code 0x{:08X} ({}), which this library does not \
                     know: {}",
                    status.code,
                    if status.name.is_empty() {
                        "no name"
                    } else {
                        &status.name
                    },
                    status.message
                ),
            ),
        };
        let message = if message.is_empty() {
            code.title.to_owned()
        } else {
            message
        };
        let hint = if status.hint.is_empty() {
            code.action.to_owned()
        } else {
            status.hint
        };
        RequesterError::Vss {
            call,
            code,
            message,
            hint,
        }
    }

    /// The error for a gRPC failure of a call or a stream: a refusal, a lost connection, or a
    /// version the daemon does not speak.
    pub(crate) fn from_grpc(socket: &Path, call: &'static str, status: tonic::Status) -> Self {
        let socket = socket.to_owned();
        let vss = error_code_of_grpc(&status);
        let message = status.message().to_owned();
        match (status.code(), vss) {
            (Code::PermissionDenied, _) => RequesterError::AccessDenied {
                socket,
                call,
                message,
            },
            // A version refusal carries the daemon's version in the version header and no VSS
            // code (docs/protocol.md §2).
            (Code::FailedPrecondition, None) if status.metadata().get(VERSION_HEADER).is_some() => {
                let server = status
                    .metadata()
                    .get(VERSION_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("unknown")
                    .to_owned();
                RequesterError::VersionMismatch {
                    socket,
                    server,
                    detail: message,
                }
            }
            // Without a VSS code these are the transport's own failures, or the daemon going
            // away (UNAVAILABLE on shutdown, docs/protocol.md §4.1), not a decision about the call.
            (Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal, None) => {
                RequesterError::Disconnected {
                    socket,
                    call,
                    detail: if message.is_empty() {
                        format!("the stream failed with gRPC status {:?}", status.code())
                    } else {
                        message
                    },
                }
            }
            (grpc, vss) => {
                let code = vss.unwrap_or_else(|| nearest_code(grpc));
                RequesterError::Refused {
                    socket,
                    call,
                    code,
                    message: if message.is_empty() {
                        format!("gRPC status {grpc:?}")
                    } else {
                        message
                    },
                    hint: code.action.to_owned(),
                }
            }
        }
    }

    /// The error for an answer that breaks the protocol.
    pub(crate) fn protocol(socket: &Path, call: &'static str, message: impl Into<String>) -> Self {
        RequesterError::Protocol {
            socket: socket.to_owned(),
            call,
            message: message.into(),
        }
    }

    /// The error for a lost stream.
    pub(crate) fn disconnected(
        socket: &Path,
        call: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        RequesterError::Disconnected {
            socket: socket.to_owned(),
            call,
            detail: detail.into(),
        }
    }
}

/// The registry code nearest to a gRPC code, for refusals that carry no VSS code.
fn nearest_code(code: Code) -> &'static ErrorCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange => &codes::E_INVALIDARG,
        Code::Unimplemented => &codes::E_NOTIMPL,
        Code::NotFound => &codes::VSS_E_OBJECT_NOT_FOUND,
        Code::AlreadyExists => &codes::VSS_E_OBJECT_ALREADY_EXISTS,
        Code::PermissionDenied | Code::Unauthenticated => &codes::E_ACCESSDENIED,
        Code::FailedPrecondition => &codes::VSS_E_BAD_STATE,
        _ => &codes::VSS_E_UNEXPECTED,
    }
}

/// Which side to upgrade, from the daemon's stated version.
fn version_advice(server: &str) -> String {
    match server.parse::<ProtocolVersion>() {
        Ok(version) if version.major > PROTOCOL_MAJOR => format!(
            "upgrade the requester to one built for protocol {}.x",
            version.major
        ),
        Ok(version) if version.major < PROTOCOL_MAJOR => {
            format!("upgrade shadowcopyd to one that speaks protocol {PROTOCOL_MAJOR}.x")
        }
        _ => format!(
            "use a shadowcopyd and a requester built for the same protocol major version \
             ({PROTOCOL_MAJOR}.x here)"
        ),
    }
}

/// `: detail` when there is a detail, nothing otherwise.
fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vss_errors_show_name_number_message_and_hint() {
        let status = v1::Status::from_code(&codes::VSS_E_BAD_STATE, "PrepareForBackup came first");
        let error = RequesterError::vss("AddComponent", status);
        assert_eq!(error.code(), &codes::VSS_E_BAD_STATE);
        let text = error.to_string();
        assert!(text.starts_with("AddComponent failed: VSS_E_BAD_STATE (0x80042301)"));
        assert!(text.contains("PrepareForBackup came first"));
        assert!(text.contains(codes::VSS_E_BAD_STATE.action));
        assert_eq!(error.hint(), codes::VSS_E_BAD_STATE.action);
        assert_eq!(error.call(), Some("AddComponent"));
    }

    #[test]
    fn unknown_numbers_are_kept_in_the_message() {
        let status = v1::Status {
            code: 0x8004_2305,
            name: "VSS_E_FUTURE".into(),
            message: "something new".into(),
            hint: String::new(),
        };
        let error = RequesterError::vss("DoSnapshotSet", status);
        assert_eq!(error.code(), &codes::VSS_E_UNEXPECTED);
        let text = error.to_string();
        assert!(text.contains("0x80042305"));
        assert!(text.contains("VSS_E_FUTURE"));
        assert!(text.contains("something new"));
    }

    #[test]
    fn grpc_refusals_map_to_codes() {
        let socket = Path::new("/run/test.sock");
        let denied = RequesterError::from_grpc(
            socket,
            "Session",
            tonic::Status::permission_denied("uid 1000 is not in the backup group"),
        );
        assert_eq!(denied.code(), &codes::E_ACCESSDENIED);
        assert!(denied.to_string().contains("/run/test.sock"));
        assert!(denied.to_string().contains("uid 1000"));

        let gone = RequesterError::from_grpc(
            socket,
            "DoSnapshotSet",
            tonic::Status::unavailable("shadowcopyd is shutting down"),
        );
        assert!(matches!(gone, RequesterError::Disconnected { .. }));
        assert!(gone.to_string().contains("BK-END-6"));

        let coded = RequesterError::from_grpc(
            socket,
            "Session",
            shadowcopy_protocol::grpc_status(&codes::VSS_E_BAD_STATE, "no"),
        );
        assert_eq!(coded.code(), &codes::VSS_E_BAD_STATE);

        let mut version = tonic::Status::failed_precondition("the client speaks 2.0");
        version
            .metadata_mut()
            .insert(VERSION_HEADER, "1.0".parse().unwrap());
        let version = RequesterError::from_grpc(socket, "Hello", version);
        assert!(matches!(version, RequesterError::VersionMismatch { .. }));
        assert_eq!(version.code(), &codes::VSS_E_UNEXPECTED);
    }
}
