//! The Writer Metadata Document (spec §6): what a writer is, what data it owns and how to restore it.
//!
//! A writer builds its WMD in Identify and never changes it afterwards (WMD-1). The coordinator keeps
//! each registered writer's WMD, requesters read it to choose components, and every WMD is stored with
//! the backup because only the WMD holds the file specifications (WMD-16, RST-INIT-2).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::enums::{
    BackupSchema, ComponentFlags, ComponentType, FileSpecBackupType, RestoreMethod, SourceType,
    UsageType, WriterRestore,
};
use crate::ids::{WriterClassId, WriterInstanceId};
use crate::logical_path;

/// A Writer Metadata Document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterMetadata {
    /// The document format version; this build reads and writes [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Who the writer is (WMD-2).
    pub identity: WriterIdentity,
    /// How the writer's data is restored; mandatory (WMD-3).
    pub restore_method: RestoreMethodSpec,
    /// The backup types and restore features the writer supports (WMD-7).
    #[serde(default)]
    pub backup_schema: BackupSchema,
    /// File sets that must never be backed up; they win over every component (WMD-4, BK-COPY-3).
    #[serde(default)]
    pub excludes: Vec<FileSet>,
    /// File sets the writer deletes from the shadow copy during PostSnapshot (WMD-5, EXCL-2).
    #[serde(default)]
    pub exclude_from_snapshot: Vec<FileSet>,
    /// Where files go when they cannot be restored in place (WMD-6).
    #[serde(default)]
    pub alternate_location_mappings: Vec<AlternateLocationMapping>,
    /// The writer's components; at least one (WMD-8, WMD-10).
    pub components: Vec<Component>,
}

/// The identity block of a WMD (WMD-2, ROLE-7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterIdentity {
    /// The writer's name; not localized.
    pub writer_name: String,
    /// The class id, shared by every instance of the writer.
    pub class_id: WriterClassId,
    /// The instance id the coordinator assigned at registration; meaningless once stored (WMD-2).
    pub instance_id: WriterInstanceId,
    /// A name unique per class on the host, needed when several instances need restore events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// What kind of data the writer owns; requesters must respect system-state usage (SEL-8).
    pub usage_type: UsageType,
    /// What kind of store the writer manages.
    pub source_type: SourceType,
    /// The writer's version, major.minor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<WriterVersion>,
}

/// A writer version (WMD-2, extended API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

/// The writer-wide restore method block (WMD-3, RM-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreMethodSpec {
    /// The method; UNDEFINED is a writer error.
    pub method: RestoreMethod,
    /// The service to stop and start; required by the stop/start methods. On Linux this is the
    /// name the init system knows (a systemd unit, or an `/etc/init.d` script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The procedure a user follows for a CUSTOM restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_procedure: Option<String>,
    /// Whether the writer takes part in the restore.
    #[serde(default = "default_writer_restore")]
    pub writer_restore: WriterRestore,
    /// Whether a reboot is needed after the restore.
    #[serde(default)]
    pub reboot_required: bool,
}

fn default_writer_restore() -> WriterRestore {
    WriterRestore::Always
}

/// A set of files: a directory, a file-name pattern and whether it reaches into subdirectories.
///
/// This triple is how excludes, alternate mappings, new targets and differenced files name files, and
/// it must match a component's file set exactly where the spec says so (BCD-10).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct FileSet {
    /// An absolute directory; may start with an environment variable (`$PGDATA/...`); no wildcards.
    pub path: String,
    /// A file-name pattern with `*` and `?`; no `/`.
    pub filespec: String,
    /// Whether the pattern also matches in every directory below `path`.
    #[serde(default)]
    pub recursive: bool,
}

/// A file descriptor of a component (WMD-11): a file set with its backup-time options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileDescriptor {
    /// An absolute directory; may start with an environment variable; no wildcards.
    pub path: String,
    /// A file-name pattern with `*` and `?`; no `/`.
    pub filespec: String,
    /// Whether the pattern also matches below `path`.
    #[serde(default)]
    pub recursive: bool,
    /// Where the writer keeps a stable copy to back up instead (ALTP-1); file groups only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternate_path: Option<String>,
    /// Which backup types must copy the set whole and read it from the shadow copy (ENUM-12).
    #[serde(default = "crate::enums::default_file_spec_backup_type")]
    pub backup_type_mask: FileSpecBackupType,
}

impl FileDescriptor {
    /// A descriptor with the default backup-type mask and no alternate path.
    pub fn new(path: impl Into<String>, filespec: impl Into<String>, recursive: bool) -> Self {
        FileDescriptor {
            path: path.into(),
            filespec: filespec.into(),
            recursive,
            alternate_path: None,
            backup_type_mask: FileSpecBackupType::DEFAULT,
        }
    }

    /// The (path, filespec, recursive) triple of this descriptor.
    pub fn file_set(&self) -> FileSet {
        FileSet {
            path: self.path.clone(),
            filespec: self.filespec.clone(),
            recursive: self.recursive,
        }
    }

    /// Whether this descriptor has exactly the triple of `set` (BCD-10).
    pub fn matches_set(&self, set: &FileSet) -> bool {
        crate::fileset::same_directory(&self.path, &set.path)
            && self.filespec == set.filespec
            && self.recursive == set.recursive
    }
}

/// An alternate location mapping (WMD-6): where files of one of the writer's file sets may be restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlternateLocationMapping {
    /// A triple that must exactly match a file set of one of the writer's components.
    pub source: FileSet,
    /// The absolute destination directory.
    pub destination: String,
}

/// A component record of a WMD (WMD-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Database or file group (COMP-2).
    pub component_type: ComponentType,
    /// The `\`-separated logical path; empty at the top level (LP-1).
    #[serde(default)]
    pub logical_path: String,
    /// The component's name; unique together with the logical path (WMD-9).
    pub name: String,
    /// A caption for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// An icon, as base64-encoded PNG data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// Whether the writer stores restore metadata in the BCD at backup time.
    #[serde(default)]
    pub restore_metadata: bool,
    /// Whether the writer wants BackupComplete for this component.
    #[serde(default)]
    pub notify_on_backup_complete: bool,
    /// Whether the component may be selected for backup; must always be given (SEL-1).
    pub selectable_for_backup: bool,
    /// Whether the component may be selected for restore on its own; defaults to false (SEL-1).
    #[serde(default)]
    pub selectable_for_restore: bool,
    /// Component flags (ENUM-6).
    #[serde(default)]
    pub component_flags: ComponentFlags,
    /// The file sets of a file-group component.
    #[serde(default)]
    pub files: Vec<FileDescriptor>,
    /// The data file sets of a database component.
    #[serde(default)]
    pub database_files: Vec<FileDescriptor>,
    /// The log file sets of a database component.
    #[serde(default)]
    pub database_log_files: Vec<FileDescriptor>,
    /// Components of other writers that must be backed up and restored with this one (WMD-13, DEP-1).
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

impl Component {
    /// The full path, `logical_path\name` (LP-2).
    pub fn full_path(&self) -> String {
        logical_path::full_path(&self.logical_path, &self.name)
    }

    /// Every file descriptor of the component: files, database files and log files.
    pub fn all_files(&self) -> impl Iterator<Item = &FileDescriptor> {
        self.files
            .iter()
            .chain(&self.database_files)
            .chain(&self.database_log_files)
    }

    /// The component summary counts (WMD-8): files, database files, log files, dependencies.
    pub fn counts(&self) -> ComponentCounts {
        ComponentCounts {
            files: self.files.len(),
            database_files: self.database_files.len(),
            database_log_files: self.database_log_files.len(),
            dependencies: self.dependencies.len(),
        }
    }
}

/// The counts of a component summary (WMD-8, DEP-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentCounts {
    /// File-group file sets.
    pub files: usize,
    /// Database data file sets.
    pub database_files: usize,
    /// Database log file sets.
    pub database_log_files: usize,
    /// Dependencies.
    pub dependencies: usize,
}

/// A dependency of one component on a component of another writer (WMD-13).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// The class id of the writer that owns the target.
    pub writer_class_id: WriterClassId,
    /// The target's logical path; starts with `\\host\` for a component on another host (DEP-2).
    #[serde(default)]
    pub logical_path: String,
    /// The target's name.
    pub component_name: String,
}

impl Dependency {
    /// Whether the target lives on another host (DEP-2).
    pub fn is_remote(&self) -> bool {
        logical_path::is_remote(&self.logical_path) || logical_path::is_remote(&self.component_name)
    }
}

impl WriterMetadata {
    /// The component with this logical path and name (COMP-3).
    pub fn component(&self, logical_path: &str, name: &str) -> Option<&Component> {
        self.components
            .iter()
            .find(|c| c.logical_path == logical_path && c.name == name)
    }

    /// The component whose full path (`logical_path\name`) is `full_path`.
    pub fn component_by_full_path(&self, full_path: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.full_path() == full_path)
    }

    /// Whether some component has exactly this file set (BCD-10).
    pub fn has_file_set(&self, set: &FileSet) -> bool {
        self.components
            .iter()
            .flat_map(Component::all_files)
            .any(|f| f.matches_set(set))
    }
}

impl Component {
    /// A file-group component with default flags and no dependencies (COMP-2).
    pub fn file_group(
        logical_path: impl Into<String>,
        name: impl Into<String>,
        selectable_for_backup: bool,
        files: Vec<FileDescriptor>,
    ) -> Self {
        Component {
            component_type: ComponentType::FileGroup,
            logical_path: logical_path.into(),
            name: name.into(),
            caption: None,
            icon: None,
            restore_metadata: false,
            notify_on_backup_complete: true,
            selectable_for_backup,
            selectable_for_restore: false,
            component_flags: ComponentFlags::empty(),
            files,
            database_files: Vec::new(),
            database_log_files: Vec::new(),
            dependencies: Vec::new(),
        }
    }
}

impl WriterMetadata {
    /// The WMD of a simple writer: user data, restored in place when the files can be replaced,
    /// full backups only, and the given components. The instance id is left nil: the coordinator
    /// assigns it at registration (ROLE-7).
    pub fn simple(
        writer_name: impl Into<String>,
        class_id: WriterClassId,
        components: Vec<Component>,
    ) -> Self {
        WriterMetadata {
            schema_version: crate::SCHEMA_VERSION,
            identity: WriterIdentity {
                writer_name: writer_name.into(),
                class_id,
                instance_id: WriterInstanceId::nil(),
                instance_name: None,
                usage_type: UsageType::UserData,
                source_type: SourceType::Other,
                version: None,
            },
            restore_method: RestoreMethodSpec {
                method: RestoreMethod::RestoreIfCanReplace,
                service: None,
                user_procedure: None,
                writer_restore: WriterRestore::Always,
                reboot_required: false,
            },
            backup_schema: BackupSchema::empty(),
            excludes: Vec::new(),
            exclude_from_snapshot: Vec::new(),
            alternate_location_mappings: Vec::new(),
            components,
        }
    }
}
