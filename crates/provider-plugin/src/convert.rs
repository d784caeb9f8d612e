//! Conversions between the coordinator's provider types and the messages of the Provider service,
//! used in the same way by both ends so that a value survives the round trip unchanged.

use shadowcopy_coordinator::{ProviderError, ProviderInfo, SnapshotRecord};
use shadowcopy_metadata::VssTimestamp;
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::enums::{ProviderType, SnapshotAttributes, SnapshotState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_protocol::v1;

/// The in-band status of a provider failure: its code, and its message for this occurrence.
pub(crate) fn error_to_status(error: &ProviderError) -> v1::Status {
    v1::Status::from_code(&error.code, error.message.clone())
}

/// The provider failure that an in-band failure status stands for.
///
/// The code travels unchanged, so that the coordinator, not the plug-in adapter, applies the
/// translation of PROV-R-3. A number the registry does not know cannot become an [`ErrorCode`]; it
/// is reported as VSS_E_UNEXPECTED_PROVIDER_ERROR with the number in the message, which is what
/// PROV-R-3 would make of it anyway.
pub(crate) fn status_to_error(status: &v1::Status, plugin: &str, call: &str) -> ProviderError {
    match codes::lookup(status.code) {
        Some(code) => ProviderError::new(*code, status.message.clone()),
        None => ProviderError::new(
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
            format!(
                "provider plug-in {plugin} answered {call} with result code 0x{:08X}, which is not \
                 a VSS code ({}); fix the plug-in to use the codes of PROV-R-3",
                status.code, status.message
            ),
        ),
    }
}

/// A failure of `code` about a malformed field of a request or reply.
pub(crate) fn malformed(code: ErrorCode, what: &str, field: &str, value: &str) -> ProviderError {
    ProviderError::new(
        code,
        format!("{what}: {field} = {value:?} is not valid; it is a bug on the sending side"),
    )
}

/// Parses a GUID field, naming it when malformed.
pub(crate) fn parse_id<T: std::str::FromStr>(
    code: ErrorCode,
    what: &str,
    field: &str,
    value: &str,
) -> Result<T, ProviderError> {
    value
        .parse()
        .map_err(|_| malformed(code, what, field, value))
}

/// A provider's identity as the protocol carries it.
pub(crate) fn info_to_proto(info: &ProviderInfo) -> v1::ProviderInfo {
    v1::ProviderInfo {
        provider_id: info.id.to_string(),
        name: info.name.clone(),
        version: info.version.clone(),
        provider_type: info.provider_type.value(),
    }
}

/// A provider's identity from the protocol; `what` names the plug-in for messages.
pub(crate) fn info_from_proto(
    info: &v1::ProviderInfo,
    what: &str,
) -> Result<ProviderInfo, ProviderError> {
    let code = codes::VSS_E_UNEXPECTED_PROVIDER_ERROR;
    let id = parse_id(code, what, "provider_id", &info.provider_id)?;
    let provider_type = ProviderType::from_value(info.provider_type)
        .ok_or_else(|| malformed(code, what, "provider_type", &info.provider_type.to_string()))?;
    if info.name.is_empty() {
        return Err(malformed(code, what, "name", ""));
    }
    Ok(ProviderInfo {
        id,
        name: info.name.clone(),
        version: info.version.clone(),
        provider_type,
    })
}

/// One shadow copy as the protocol carries it. `snapshots_in_set` and the machine names are left
/// for shadowcopyd to fill (common.proto, SnapshotProperties).
pub(crate) fn record_to_proto(record: &SnapshotRecord) -> v1::SnapshotProperties {
    v1::SnapshotProperties {
        snapshot_id: record.snapshot_id.to_string(),
        set_id: record.set_id.to_string(),
        volume: record.volume.clone(),
        snapshot_path: record.snapshot_path.clone().unwrap_or_default(),
        provider_id: record.provider_id.to_string(),
        attributes: u64::from(record.attributes.bits()),
        creation_timestamp: record.created.0,
        state: record.state.value(),
        ..Default::default()
    }
}

/// One shadow copy from the protocol; `what` names the plug-in for messages.
///
/// The record belongs to `provider`, the plug-in that reported it, whatever its `provider_id`
/// field says: provider.proto (QuerySnapshotsReply) does not require plug-ins to fill it, and the coordinator
/// routes deletions by provider id.
pub(crate) fn record_from_proto(
    properties: &v1::SnapshotProperties,
    provider: ProviderId,
    what: &str,
) -> Result<SnapshotRecord, ProviderError> {
    let code = codes::VSS_E_UNEXPECTED_PROVIDER_ERROR;
    let state = SnapshotState::from_value(properties.state)
        .ok_or_else(|| malformed(code, what, "state", &properties.state.to_string()))?;
    let attributes = u32::try_from(properties.attributes)
        .ok()
        .and_then(|bits| SnapshotAttributes::from_bits(bits).ok())
        .ok_or_else(|| {
            malformed(
                code,
                what,
                "attributes",
                &format!("{:#x}", properties.attributes),
            )
        })?;
    Ok(SnapshotRecord {
        snapshot_id: parse_id(code, what, "snapshot_id", &properties.snapshot_id)?,
        set_id: parse_id(code, what, "set_id", &properties.set_id)?,
        volume: properties.volume.clone(),
        snapshot_path: Some(properties.snapshot_path.clone()).filter(|path| !path.is_empty()),
        state,
        attributes,
        created: VssTimestamp(properties.creation_timestamp),
        provider_id: provider,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shadowcopy_metadata::enums::SnapshotContext;
    use shadowcopy_metadata::{SnapshotId, SnapshotSetId};

    #[test]
    fn records_survive_the_round_trip() {
        for snapshot_path in [None, Some("/store/x".to_owned())] {
            let record = SnapshotRecord {
                snapshot_id: SnapshotId::new_random(),
                set_id: SnapshotSetId::new_random(),
                volume: "/srv/data".into(),
                snapshot_path,
                state: SnapshotState::Postcommitted,
                attributes: SnapshotContext::NasRollback.attributes(),
                created: VssTimestamp::now(),
                provider_id: ProviderId::new_random(),
            };
            let back =
                record_from_proto(&record_to_proto(&record), record.provider_id, "test").unwrap();
            assert_eq!(back, record);
        }
    }

    #[test]
    fn unknown_codes_become_unexpected_provider_error_naming_the_number() {
        let status = v1::Status {
            code: 0x8004_FFFF,
            message: "odd".into(),
            ..Default::default()
        };
        let error = status_to_error(&status, "copy", "CommitSnapshots");
        assert_eq!(error.code, codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);
        assert!(error.message.contains("0x8004FFFF"), "{}", error.message);
        assert!(error.message.contains("copy"), "{}", error.message);
        // A known code, even one PROV-R-3 does not allow, passes unchanged: translating it is
        // the coordinator's job.
        let status = v1::Status::from_code(&codes::VSS_E_BAD_STATE, "out of order");
        let error = status_to_error(&status, "copy", "CommitSnapshots");
        assert_eq!(error.code, codes::VSS_E_BAD_STATE);
        assert_eq!(error.message, "out of order");
    }

    #[test]
    fn malformed_info_is_refused() {
        let info = v1::ProviderInfo {
            provider_id: "nope".into(),
            name: "x".into(),
            version: "1".into(),
            provider_type: 2,
        };
        let error = info_from_proto(&info, "plug-in x").unwrap_err();
        assert!(error.message.contains("provider_id"), "{}", error.message);
        let info = v1::ProviderInfo {
            provider_id: ProviderId::new_random().to_string(),
            provider_type: 99,
            ..info
        };
        let error = info_from_proto(&info, "plug-in x").unwrap_err();
        assert!(error.message.contains("provider_type"), "{}", error.message);
    }
}
