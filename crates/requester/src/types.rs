//! The Rust types of what requester calls take and return, and their conversion from the wire.
//!
//! On the wire ids are GUID strings and enumerations are bare VSS numbers (docs/protocol.md §3);
//! here they are the typed ids and enumerations of `shadowcopy-metadata`, so that a writer class
//! id cannot be passed where an instance id is meant and a writer state prints as its VSS name.
//! Conversion is strict: a peer never sends values newer than our minor version (COMPAT-3), so an
//! unknown enumeration value or a malformed id is a protocol error, reported with the field.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::enums::{ComponentType, SnapshotAttributes, SnapshotState, WriterState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::wmd::{Component, WriterMetadata};
use shadowcopy_metadata::{
    SnapshotId, SnapshotSetId, VssTimestamp, WriterClassId, WriterInstanceId,
};
use shadowcopy_protocol::v1;

/// Names one component of one running writer, as every component call does (BK-DISC-3, COMP-3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentKey {
    /// The instance id of the running writer that owns the component (ROLE-7).
    pub writer_instance_id: WriterInstanceId,
    /// The writer's class id.
    pub writer_class_id: WriterClassId,
    /// Database or file group (COMP-2).
    pub component_type: ComponentType,
    /// The component's logical path, empty at the top level (LP-1).
    pub logical_path: String,
    /// The component's name.
    pub name: String,
}

impl ComponentKey {
    /// The key of `component` of the writer whose WMD is `writer`.
    ///
    /// In a restore, use the WMD the running writer returned from GatherWriterMetadata, not the
    /// stored one: the stored instance id names an instance that is gone (RST-INIT-4).
    pub fn of(writer: &WriterMetadata, component: &Component) -> Self {
        ComponentKey {
            writer_instance_id: writer.identity.instance_id,
            writer_class_id: writer.identity.class_id,
            component_type: component.component_type,
            logical_path: component.logical_path.clone(),
            name: component.name.clone(),
        }
    }

    /// The full path, `logical_path\name` (LP-2), for messages.
    pub fn full_path(&self) -> String {
        shadowcopy_metadata::logical_path::full_path(&self.logical_path, &self.name)
    }

    /// The wire form.
    pub(crate) fn to_proto(&self) -> v1::ComponentKey {
        v1::ComponentKey {
            writer_instance_id: self.writer_instance_id.to_string(),
            writer_class_id: self.writer_class_id.to_string(),
            component_type: self.component_type.value(),
            logical_path: self.logical_path.clone(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for ComponentKey {
    /// `instance=GUID:FULL\PATH`, the selector form of `shadowcopy_metadata::selection`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "instance={}:{}",
            self.writer_instance_id,
            self.full_path()
        )
    }
}

/// Which writers `SetWriterEnabled` is about (BK-INIT-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriterTarget {
    /// Every instance of a writer class.
    Class(WriterClassId),
    /// One writer instance.
    Instance(WriterInstanceId),
}

impl From<WriterClassId> for WriterTarget {
    fn from(id: WriterClassId) -> Self {
        WriterTarget::Class(id)
    }
}

impl From<WriterInstanceId> for WriterTarget {
    fn from(id: WriterInstanceId) -> Self {
        WriterTarget::Instance(id)
    }
}

/// The status of one writer as the requester sees it (WST-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStatus {
    /// The writer's class id.
    pub class_id: WriterClassId,
    /// The writer's instance id, assigned by shadowcopyd (ROLE-7).
    pub instance_id: WriterInstanceId,
    /// The writer's name from its WMD.
    pub writer_name: String,
    /// The persistent instance name, if the writer has one.
    pub instance_name: Option<String>,
    /// The writer state (WST-3, WST-4); a `FAILED_AT_*` state tells at which event it failed.
    pub state: WriterState,
    /// The failure the writer recorded, as an HRESULT: 0 for none, a writer error code of ERR-2,
    /// or `VSS_E_WRITER_NOT_RESPONDING`. Kept as a number because result codes are open-ended.
    pub failure_code: u32,
    /// The application's own result code (ERR-4); 0 when it gave none.
    pub application_code: i64,
    /// The application's own failure text (ERR-4).
    pub application_message: Option<String>,
}

impl WriterStatus {
    /// The registry entry of [`WriterStatus::failure_code`]; `None` when the writer recorded no
    /// failure or the registry does not know the number.
    pub fn failure(&self) -> Option<&'static ErrorCode> {
        if self.failure_code == codes::S_OK.value {
            None
        } else {
            codes::lookup(self.failure_code)
        }
    }

    /// Whether the writer failed in this session: a `FAILED_AT_*` state or a recorded failure
    /// code. A non-fatal failure (ERR-1) keeps the state and sets the code.
    pub fn has_failed(&self) -> bool {
        self.state.is_failed() || self.failure_code & 0x8000_0000 != 0
    }

    /// Reads the wire form.
    pub(crate) fn from_proto(status: v1::WriterStatus) -> Result<Self, String> {
        Ok(WriterStatus {
            class_id: id("writer_class_id", &status.writer_class_id)?,
            instance_id: id("writer_instance_id", &status.writer_instance_id)?,
            writer_name: status.writer_name,
            instance_name: non_empty(status.instance_name),
            state: known(
                "state",
                "VSS_WRITER_STATE",
                status.state,
                WriterState::from_value,
            )?,
            failure_code: status.failure_code,
            application_code: status.application_code,
            application_message: non_empty(status.application_message),
        })
    }
}

/// One shadow copy and its properties (SNAP-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotProperties {
    /// The shadow copy's id.
    pub snapshot_id: SnapshotId,
    /// The set it belongs to.
    pub set_id: SnapshotSetId,
    /// How many shadow copies the set has.
    pub snapshots_in_set: u32,
    /// The original volume, by its mount point (ROLE-16).
    pub volume: String,
    /// The device object (BK-COPY-1): the directory under which the shadow copy's root is read.
    pub snapshot_path: PathBuf,
    /// The provider that made it, when the daemon says.
    pub provider_id: Option<ProviderId>,
    /// The context and state bits (ENUM-13).
    pub attributes: SnapshotAttributes,
    /// When it was committed (ENUM-1).
    pub creation_timestamp: VssTimestamp,
    /// Its state (ENUM-15); `CREATED` once the set is complete.
    pub state: SnapshotState,
    /// The host whose volume was copied.
    pub originating_machine: String,
    /// The host that manages the shadow copy.
    pub service_machine: String,
    /// The name it is exposed under, if it is exposed (EXP-1).
    pub exposed_name: Option<String>,
    /// The exposed subdirectory, if only one is exposed (EXP-1).
    pub exposed_path: Option<String>,
}

impl SnapshotProperties {
    /// Where a file of the original volume is read in the shadow copy (BK-COPY-1): the device
    /// object plus the path with the volume's mount point removed. `None` when `original` is not
    /// on this volume.
    pub fn path_in_snapshot(&self, original: impl AsRef<Path>) -> Option<PathBuf> {
        let relative = original.as_ref().strip_prefix(&self.volume).ok()?;
        Some(self.snapshot_path.join(relative))
    }

    /// Reads the wire form.
    pub(crate) fn from_proto(properties: v1::SnapshotProperties) -> Result<Self, String> {
        let attributes = u32::try_from(properties.attributes)
            .ok()
            .and_then(|bits| SnapshotAttributes::from_bits(bits).ok())
            .ok_or_else(|| {
                format!(
                    "attributes = {:#x} sets bits that VSS_VOLUME_SNAPSHOT_ATTRIBUTES (ENUM-13) \
                     does not define",
                    properties.attributes
                )
            })?;
        Ok(SnapshotProperties {
            snapshot_id: id("snapshot_id", &properties.snapshot_id)?,
            set_id: id("set_id", &properties.set_id)?,
            snapshots_in_set: properties.snapshots_in_set,
            volume: properties.volume,
            snapshot_path: PathBuf::from(properties.snapshot_path),
            provider_id: optional_id("provider_id", &properties.provider_id)?,
            attributes,
            creation_timestamp: VssTimestamp(properties.creation_timestamp),
            state: known(
                "state",
                "VSS_SNAPSHOT_STATE",
                properties.state,
                SnapshotState::from_value,
            )?,
            originating_machine: properties.originating_machine,
            service_machine: properties.service_machine,
            exposed_name: non_empty(properties.exposed_name),
            exposed_path: non_empty(properties.exposed_path),
        })
    }
}

/// Whether a volume can be shadow-copied in the session's context (SNAP-2, PROV-R-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSupport {
    /// Whether some provider, or the one asked, can do it.
    pub supported: bool,
    /// The provider PROV-SEL-1 would choose; `None` when the volume is not supported.
    pub provider_id: Option<ProviderId>,
    /// Why not and what would work; `None` when supported.
    pub reason: Option<String>,
}

impl VolumeSupport {
    /// Reads the wire form.
    pub(crate) fn from_proto(support: v1::VolumeSupport) -> Result<Self, String> {
        Ok(VolumeSupport {
            supported: support.supported,
            provider_id: optional_id("provider_id", &support.provider_id)?,
            reason: non_empty(support.reason),
        })
    }
}

/// A required id field: a GUID, with or without braces, in any case (docs/protocol.md §3).
pub(crate) fn id<T: FromStr>(field: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| {
        if value.is_empty() {
            format!("{field} is empty, but it must be set")
        } else {
            format!("{field} = {value:?} is not a GUID")
        }
    })
}

/// An optional id field: empty means "not set" (docs/protocol.md §3).
pub(crate) fn optional_id<T: FromStr>(field: &str, value: &str) -> Result<Option<T>, String> {
    if value.is_empty() {
        Ok(None)
    } else {
        id(field, value).map(Some)
    }
}

/// An enumeration field, which must hold a value this version knows (COMPAT-3).
pub(crate) fn known<R: Copy + fmt::Display, T>(
    field: &str,
    enumeration: &str,
    value: R,
    from_value: impl FnOnce(R) -> Option<T>,
) -> Result<T, String> {
    from_value(value).ok_or_else(|| {
        format!(
            "{field} = {value} is not a value of {enumeration} in protocol {}",
            shadowcopy_protocol::PROTOCOL_VERSION
        )
    })
}

/// An optional text field: empty means "not set".
pub(crate) fn non_empty(text: String) -> Option<String> {
    if text.is_empty() { None } else { Some(text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_status_converts_and_refuses_unknown_states() {
        let wire = v1::WriterStatus {
            writer_class_id: "A65FAA63-5EA8-4EBC-9DBD-A0C4DB26912A".into(),
            writer_instance_id: "{0b7e5a52-6a3c-4c39-9a43-6f1b33d0c001}".into(),
            writer_name: "Test Writer".into(),
            instance_name: String::new(),
            state: WriterState::FailedAtFreeze.value(),
            failure_code: codes::VSS_E_WRITERERROR_TIMEOUT.value,
            application_code: 7,
            application_message: "slow".into(),
        };
        let status = WriterStatus::from_proto(wire.clone()).unwrap();
        assert_eq!(status.state, WriterState::FailedAtFreeze);
        assert_eq!(status.failure(), Some(&codes::VSS_E_WRITERERROR_TIMEOUT));
        assert!(status.has_failed());
        assert_eq!(status.instance_name, None);
        assert_eq!(status.application_message.as_deref(), Some("slow"));

        let error = WriterStatus::from_proto(v1::WriterStatus { state: 99, ..wire }).unwrap_err();
        assert!(error.contains("state = 99"), "{error}");
    }

    #[test]
    fn paths_in_the_snapshot_follow_bk_copy_1() {
        let properties = SnapshotProperties::from_proto(v1::SnapshotProperties {
            snapshot_id: SnapshotId::new_random().to_string(),
            set_id: SnapshotSetId::new_random().to_string(),
            snapshots_in_set: 1,
            volume: "/srv/db".into(),
            snapshot_path: "/run/shadowcopy/snap/1".into(),
            attributes: 0,
            state: SnapshotState::Created.value(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            properties.path_in_snapshot("/srv/db/base/1"),
            Some(PathBuf::from("/run/shadowcopy/snap/1/base/1"))
        );
        assert_eq!(properties.path_in_snapshot("/srv/dbx/1"), None);
        assert_eq!(properties.provider_id, None);
    }

    #[test]
    fn unknown_attribute_bits_are_refused() {
        let error = SnapshotProperties::from_proto(v1::SnapshotProperties {
            snapshot_id: SnapshotId::new_random().to_string(),
            set_id: SnapshotSetId::new_random().to_string(),
            attributes: 1 << 40,
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.contains("attributes"), "{error}");
    }
}
