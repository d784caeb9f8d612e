//! Conversions between the coordinator's Rust types and the protocol's messages.

use shadowcopy_coordinator::{CoordinatorError, ProviderInfo, SnapshotRecord, WriterStatus};
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_protocol::v1;

/// Parses a GUID field of a request, naming the field when it is malformed.
pub(crate) fn parse_id<T: std::str::FromStr>(
    field: &str,
    text: &str,
) -> Result<T, CoordinatorError> {
    text.parse().map_err(|_| {
        CoordinatorError::new(
            codes::E_INVALIDARG,
            format!("{field} = {text:?} is not a GUID"),
        )
    })
}

/// The protocol status of a coordinator result.
pub(crate) fn status_of<T>(result: &Result<T, CoordinatorError>) -> v1::Status {
    match result {
        Ok(_) => shadowcopy_protocol::status_ok(),
        Err(error) => error_status(&error.code(), error.message()),
    }
}

/// The longest message a status carries, in bytes. Messages name what was wrong, and a document
/// with 100,000 broken records or a huge malformed id would otherwise give a message larger than
/// the whole answer may be (`MAX_MESSAGE_SIZE`), or than a gRPC status header may be, which would
/// break the caller's stream instead of telling it what went wrong.
pub(crate) const MAX_STATUS_MESSAGE: usize = 8 * 1024;

/// `message`, cut at [`MAX_STATUS_MESSAGE`] bytes (on a character boundary) with a note of how much
/// was left out.
pub(crate) fn bounded(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message.into();
    }
    let mut end = MAX_STATUS_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{} ... ({} more bytes left out)",
        &message[..end],
        message.len() - end
    )
    .into()
}

/// A failure status: code, name, the message (bounded) and the code's hint.
pub(crate) fn error_status(code: &ErrorCode, message: &str) -> v1::Status {
    v1::Status::from_code(code, bounded(message))
}

/// A refused call: [`shadowcopy_protocol::grpc_status`] with a bounded message.
pub(crate) fn refusal(code: &ErrorCode, message: &str) -> tonic::Status {
    shadowcopy_protocol::grpc_status(code, bounded(message))
}

/// A writer's status as the protocol carries it (WST-1).
pub(crate) fn writer_status(status: &WriterStatus) -> v1::WriterStatus {
    let failure = status.failure.as_ref();
    v1::WriterStatus {
        writer_class_id: status.class_id.to_string(),
        writer_instance_id: status.instance_id.to_string(),
        writer_name: status.writer_name.clone(),
        instance_name: status.instance_name.clone().unwrap_or_default(),
        state: status.state.value(),
        failure_code: failure.map_or(0, |f| f.code.value),
        application_code: failure.map_or(0, |f| f.application_code),
        application_message: failure.map(|f| f.message.clone()).unwrap_or_default(),
    }
}

/// A shadow copy's properties (spec §11).
pub(crate) fn snapshot_properties(record: &SnapshotRecord, in_set: u32) -> v1::SnapshotProperties {
    v1::SnapshotProperties {
        snapshot_id: record.snapshot_id.to_string(),
        set_id: record.set_id.to_string(),
        snapshots_in_set: in_set,
        volume: record.volume.clone(),
        snapshot_path: record.snapshot_path.clone().unwrap_or_default(),
        provider_id: record.provider_id.to_string(),
        attributes: u64::from(record.attributes.bits()),
        creation_timestamp: record.created.0,
        state: record.state.value(),
        originating_machine: hostname(),
        service_machine: hostname(),
        exposed_name: String::new(),
        exposed_path: String::new(),
    }
}

/// A provider's identity.
pub(crate) fn provider_info(info: &ProviderInfo) -> v1::ProviderInfo {
    v1::ProviderInfo {
        provider_id: info.id.to_string(),
        name: info.name.clone(),
        version: info.version.clone(),
        provider_type: info.provider_type.value(),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_default()
}
