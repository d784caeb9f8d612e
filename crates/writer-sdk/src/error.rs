//! [`SdkError`]: why [`run`](crate::run) returned, and whether trying again could help.

use shadowcopy_metadata::DocumentError;
use shadowcopy_protocol::{ConnectError, PROTOCOL_VERSION, ProtocolVersion};

/// Why a writer stopped serving. A clean stop returns `Ok(())` instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The writer's WMD breaks a rule of the spec, so it was not sent (WMD-1 to WMD-16).
    #[error("the writer's metadata document is invalid: {0}")]
    InvalidMetadata(#[source] DocumentError),
    /// The options contradict the WMD.
    #[error("invalid writer options: {0}")]
    InvalidOptions(String),
    /// The coordinator's socket could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The coordinator speaks another protocol major version (COMPAT-3).
    #[error(
        "shadowcopyd speaks protocol {server} but this writer speaks {PROTOCOL_VERSION}; the major \
         versions must be equal: build the writer against a matching shadowcopy-writer-sdk or \
         upgrade shadowcopyd"
    )]
    ProtocolVersion {
        /// The version the coordinator announced in its Hello reply.
        server: ProtocolVersion,
    },
    /// The coordinator refused a call as a whole: the version header, the caller's rights, the
    /// Register message (an invalid WMD, an instance name already in use).
    #[error("shadowcopyd refused {call}: {status}")]
    Refused {
        /// `"Hello"` or `"Connect"`.
        call: &'static str,
        /// The refusal.
        status: tonic::Status,
    },
    /// The coordinator sent something the protocol does not allow, such as an event before
    /// Registered.
    #[error("shadowcopyd broke the writer protocol: {0}")]
    Protocol(String),
    /// The stream to the coordinator ended or broke: the coordinator stopped, crashed or dropped
    /// this writer. Any backup in progress was aborted (the writer thawed) before this was
    /// returned.
    #[error("the connection to shadowcopyd was lost: {reason}")]
    CoordinatorGone {
        /// What ended the stream.
        reason: String,
    },
    /// The task that ran the writer panicked or was cancelled ([`WriterHandle`](crate::WriterHandle)).
    #[error("the writer task failed: {0}")]
    Task(String),
}

impl SdkError {
    /// Whether connecting again later could succeed: the socket is missing or refused, the stream
    /// broke, or the coordinator is unavailable. Refusals of the writer itself are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            SdkError::Connect(_) | SdkError::CoordinatorGone { .. } => true,
            SdkError::Refused { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Aborted
            ),
            SdkError::InvalidMetadata(_)
            | SdkError::InvalidOptions(_)
            | SdkError::ProtocolVersion { .. }
            | SdkError::Protocol(_)
            | SdkError::Task(_) => false,
        }
    }
}
