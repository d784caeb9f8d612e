//! What shadowcopy stores with every backup besides the files: the manifest, the BCD and every WMD
//! (BK-COPY-5), and the repository tags that let backups be found without reading them.
//!
//! All of it lives in the backup's own repository snapshot, under `/.shadowcopy-backup/` at the root
//! of the snapshot's tree (`shadowcopy_repository::METADATA_DIR`), so a backup and its documents
//! are committed together or not at all, and `restic restore` brings the documents back too:
//! - `backup.json`: the [`Manifest`], the backup state (type, component mode, partial-file support:
//!   BK-COPY-5 says to record it because a stored BCD cannot tell), the volumes and their shadow
//!   copies, every component with its stamp, and the writers' states;
//! - `bcd.json`: the Backup Components Document as it was after DoSnapshotSet (BK-COPY-5);
//! - `wmd-<n>.json`: the Writer Metadata Document of every writer that took part, the only source
//!   of file specifications for a restore (RST-INIT-2).
//!
//! Tags (restic's `--tag` filters split on `,`, so values are %-encoded): `shadowcopy`,
//! `type=<backup type>`, `set=<snapshot set id>`, and one `component=<writer>:<full path>` per
//! explicitly included component.

use serde::{Deserialize, Serialize};
use shadowcopy_metadata::enums::BackupType;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, WriterClassId};

/// The tag every shadowcopy backup carries.
pub const TAG: &str = "shadowcopy";
/// The manifest's file name in the metadata directory.
pub const MANIFEST_FILE: &str = "backup.json";
/// The BCD's file name in the metadata directory.
pub const BCD_FILE: &str = "bcd.json";
/// The version of the manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// The manifest of one backup (`backup.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`]; a manifest of another format is refused, never half-read.
    pub format: u32,
    /// The backup type this backup is (BT-1): the requested one, or FULL when no base existed.
    pub backup_type: BackupType,
    /// The type that was asked for.
    pub requested_type: BackupType,
    /// Component mode, or volume mode (BK-INIT-3).
    pub component_mode: bool,
    /// Whether partial files were allowed (BK-INIT-3, PF-1).
    pub partial_file_support: bool,
    /// The shadow copy set the files were read from; `None` when no set was needed (BK-PREP-6).
    pub set_id: Option<SnapshotSetId>,
    /// The host that was backed up.
    pub hostname: String,
    /// When the backup started, RFC 3339.
    pub started: String,
    /// The backup this one was based on (INCREMENTAL: the last FULL or INCREMENTAL; DIFFERENTIAL:
    /// the last FULL), whose stamps were handed to the writers (INC-3).
    pub base: Option<BaseBackup>,
    /// The volumes, with their shadow copies.
    pub volumes: Vec<VolumeRecord>,
    /// Every component of the backup, explicit and implicit.
    pub components: Vec<ComponentRecord>,
    /// The writers that took part, with their state after DoSnapshotSet.
    pub writers: Vec<WriterRecord>,
    /// The WMD file names, in the order of [`Manifest::writers`].
    pub wmd_files: Vec<String>,
    /// What the user should know about this backup (type fall-backs, vetoes, ...).
    pub notes: Vec<String>,
    /// The partial files whose ranges were backed up instead of the whole file (PF-1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial_files: Vec<PartialRecord>,
}

/// One partial file of a backup: which ranges were backed up and where they are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialRecord {
    /// The writer's name.
    pub writer_name: String,
    /// The writer's class id.
    pub class_id: WriterClassId,
    /// The full path of the explicit component whose record named the file.
    pub component: String,
    /// The file's original path.
    pub path: String,
    /// The (offset, length) ranges backed up, resolved from the writer's ranges string.
    pub ranges: Vec<(u64, u64)>,
    /// The ranges file the ranges came from (`File=` form), backed up as a file of its own.
    pub ranges_file: Option<String>,
    /// The metadata file holding the ranges' bytes, one range after the other.
    pub data: String,
}

/// The base of an incremental or differential backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseBackup {
    /// The base's repository snapshot id.
    pub snapshot_id: String,
    /// The base's backup type.
    pub backup_type: BackupType,
}

/// One volume of a backup and the shadow copy it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRecord {
    /// The volume's mount point, as recorded in the repository snapshot.
    pub volume: String,
    /// Its shadow copy; `None` when it was read live (no set, BK-PREP-6).
    pub snapshot_id: Option<SnapshotId>,
    /// The provider that made the copy, by name.
    pub provider: Option<String>,
}

/// One component of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRecord {
    /// The writer's name.
    pub writer_name: String,
    /// The writer's class id.
    pub class_id: WriterClassId,
    /// The writer's persistent instance name, if any.
    pub instance_name: Option<String>,
    /// The component's full path (LP-2).
    pub full_path: String,
    /// Whether it has a BCD record (explicitly included, BCD-3).
    pub explicit: bool,
    /// Whether its files are in this backup: false when its writer failed (a veto, BK-SNAP-7) or
    /// every file set is skipped by the backup type (INC-2).
    pub backed_up: bool,
    /// Why not, when [`ComponentRecord::backed_up`] is false.
    pub failure: Option<String>,
    /// The writer's backup stamp for this backup (INC-3), stored unmodified.
    pub backup_stamp: Option<String>,
}

/// One writer of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterRecord {
    /// The writer's name.
    pub writer_name: String,
    /// Its class id.
    pub class_id: WriterClassId,
    /// Its persistent instance name, if any.
    pub instance_name: Option<String>,
    /// Its state after DoSnapshotSet (WST-3), by name.
    pub state: String,
    /// Its failure, if it recorded one.
    pub failure: Option<String>,
}

/// The tags of a backup.
pub fn tags(manifest: &Manifest) -> Vec<String> {
    let mut tags = vec![
        TAG.to_owned(),
        format!("type={}", type_tag(manifest.backup_type)),
    ];
    if let Some(set) = manifest.set_id {
        tags.push(format!("set={set}"));
    }
    for component in manifest.components.iter().filter(|c| c.explicit) {
        tags.push(format!(
            "component={}",
            encode(&format!(
                "{}:{}",
                component.writer_name, component.full_path
            ))
        ));
    }
    tags
}

/// The lowercase type name used in tags and on the command line.
pub fn type_tag(backup_type: BackupType) -> String {
    backup_type.name().to_ascii_lowercase()
}

/// What the tags of a repository snapshot say about it, when it is a shadowcopy backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedBackup {
    /// The backup type.
    pub backup_type: Option<BackupType>,
    /// The set id.
    pub set_id: Option<String>,
    /// The explicitly included components, as `writer:full path`.
    pub components: Vec<String>,
}

/// Reads the tags of a repository snapshot; `None` when it is not a shadowcopy backup.
pub fn parse_tags(tags: &[String]) -> Option<TaggedBackup> {
    if !tags.iter().any(|t| t == TAG) {
        return None;
    }
    let mut parsed = TaggedBackup {
        backup_type: None,
        set_id: None,
        components: Vec::new(),
    };
    for tag in tags {
        if let Some(value) = tag.strip_prefix("type=") {
            parsed.backup_type = BackupType::from_name(&value.to_ascii_uppercase());
        } else if let Some(value) = tag.strip_prefix("set=") {
            parsed.set_id = Some(value.to_owned());
        } else if let Some(value) = tag.strip_prefix("component=") {
            parsed.components.push(decode(value));
        }
    }
    Some(parsed)
}

/// %-encodes the characters a restic tag cannot hold (`,`) and `%` itself.
fn encode(text: &str) -> String {
    text.replace('%', "%25").replace(',', "%2C")
}

/// Reverses [`encode`].
fn decode(text: &str) -> String {
    text.replace("%2C", ",").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            backup_type: BackupType::Incremental,
            requested_type: BackupType::Incremental,
            component_mode: true,
            partial_file_support: true,
            set_id: Some(SnapshotSetId::new_random()),
            hostname: "h".into(),
            started: "2026-01-01T00:00:00Z".into(),
            base: None,
            volumes: Vec::new(),
            components: vec![ComponentRecord {
                writer_name: "Odd, Writer".into(),
                class_id: WriterClassId::new_random(),
                instance_name: None,
                full_path: r"db\50%,x".into(),
                explicit: true,
                backed_up: true,
                failure: None,
                backup_stamp: None,
            }],
            writers: Vec::new(),
            wmd_files: Vec::new(),
            notes: Vec::new(),
            partial_files: Vec::new(),
        }
    }

    #[test]
    fn tags_round_trip_and_hold_no_commas() {
        let manifest = manifest();
        let tags = tags(&manifest);
        assert!(tags.iter().all(|t| !t.contains(',')), "{tags:?}");
        let parsed = parse_tags(&tags).expect("a shadowcopy backup");
        assert_eq!(parsed.backup_type, Some(BackupType::Incremental));
        assert_eq!(parsed.components, vec![r"Odd, Writer:db\50%,x".to_owned()]);
        assert_eq!(
            parsed.set_id,
            manifest.set_id.map(|s| s.to_string()),
            "the set id"
        );
        assert_eq!(parse_tags(&["other".to_owned()]), None);
    }

    #[test]
    fn manifests_refuse_unknown_fields() {
        let mut value = serde_json::to_value(manifest()).unwrap();
        value["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Manifest>(value).is_err());
    }
}
