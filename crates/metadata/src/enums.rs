//! Every enumeration and bit mask of the VSS model (spec §2), with the numeric values VSS gives them.
//!
//! In JSON an enumeration travels as its symbolic name (`"RESTORE_IF_NOT_THERE"`), so that documents stay readable,
//! and a bit mask as its number, exactly as VSS writes `filespecBackupType="3855"`.
//! The numeric value of every enumeration is available through `value()` and `from_value()`, because the
//! numbers are what VSS tools, logs and persisted records use (ENUM-1 to ENUM-18).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares a C-like VSS enumeration with its numeric values, symbolic JSON names and lookups.
macro_rules! vss_enum {
    (
        $(#[$meta:meta])*
        $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr => $json:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $json)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The VSS numeric value.
            pub const fn value(self) -> $repr {
                match self { $($name::$variant => $value),+ }
            }

            /// The value with this VSS number, if there is one.
            pub fn from_value(value: $repr) -> Option<Self> {
                match value { $(v if v == $value => Some($name::$variant),)+ _ => None }
            }

            /// The symbolic name used in JSON documents.
            pub const fn name(self) -> &'static str {
                match self { $($name::$variant => $json),+ }
            }

            /// The value with this symbolic name, if there is one.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($json => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// Declares a VSS bit mask: a `u32` newtype whose unknown bits are refused when a document is read.
macro_rules! vss_mask {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $flag:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        #[serde(try_from = "u32", into = "u32")]
        pub struct $name(u32);

        impl $name {
            $( $(#[$vmeta])* pub const $flag: $name = $name($value); )+

            /// Every named bit with its symbolic name.
            pub const NAMED_BITS: &'static [(&'static str, u32)] = &[$((stringify!($flag), $value)),+];

            /// The union of every bit this mask defines.
            pub const KNOWN_BITS: u32 = 0 $(| $value)+;

            /// A mask with exactly these bits, or the bits that this mask does not define.
            pub const fn from_bits(bits: u32) -> Result<Self, u32> {
                let unknown = bits & !Self::KNOWN_BITS;
                if unknown == 0 { Ok($name(bits)) } else { Err(unknown) }
            }

            /// The empty mask.
            pub const fn empty() -> Self {
                $name(0)
            }

            /// The raw bits.
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// Whether every bit of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any bit of `other` is set in `self`.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// The union of two masks.
            pub const fn union(self, other: Self) -> Self {
                $name(self.0 | other.0)
            }

            /// The symbolic names of the bits that are set, for messages and listings.
            pub fn names(self) -> Vec<&'static str> {
                Self::NAMED_BITS
                    .iter()
                    .filter(|(_, bit)| *bit != 0 && self.0 & bit == *bit)
                    .map(|(name, _)| *name)
                    .collect()
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                self.union(rhs)
            }
        }

        impl TryFrom<u32> for $name {
            type Error = String;
            fn try_from(bits: u32) -> Result<Self, String> {
                Self::from_bits(bits).map_err(|unknown| {
                    format!(
                        "{bits:#x} sets bits {unknown:#x} that {} does not define (known bits: {:#x})",
                        stringify!($name),
                        Self::KNOWN_BITS
                    )
                })
            }
        }

        impl From<$name> for u32 {
            fn from(mask: $name) -> u32 {
                mask.0
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "description": concat!(
                        "VSS bit mask ", stringify!($name), "; known bits: ",
                        $(stringify!($flag), "=", stringify!($value), " ",)+
                    ),
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 4294967295u32,
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

vss_enum! {
    /// `VSS_BACKUP_TYPE` (ENUM-2, BT-1): what a backup copies and what it does to history.
    BackupType: u32 {
        /// No type was set.
        Undefined = 0 => "UNDEFINED",
        /// Everything; may truncate logs; a base for later backups.
        Full = 1 => "FULL",
        /// Changes since the last full or incremental backup.
        Incremental = 2 => "INCREMENTAL",
        /// Changes since the last full backup.
        Differential = 3 => "DIFFERENTIAL",
        /// Only database log files.
        Log = 4 => "LOG",
        /// Everything, without updating history or truncating logs.
        Copy = 5 => "COPY",
        /// Some other kind.
        Other = 6 => "OTHER",
    }
}

vss_enum! {
    /// `VSS_RESTORE_TYPE` (ENUM-3, RST-PREP-7). Writers treat UNDEFINED as BY_COPY.
    RestoreType: u32 {
        /// Not set; means BY_COPY.
        Undefined = 0 => "UNDEFINED",
        /// Files are copied back from backup media.
        ByCopy = 1 => "BY_COPY",
        /// Volumes are imported (transportable shadow copies).
        Import = 2 => "IMPORT",
        /// Some other kind.
        Other = 3 => "OTHER",
    }
}

vss_enum! {
    /// `VSS_WRITER_STATE` (ENUM-4, WST-3, WST-4).
    WriterState: u32 {
        /// A writer-side error.
        Unknown = 0 => "UNKNOWN",
        /// Ready for the next operation.
        Stable = 1 => "STABLE",
        /// PrepareForSnapshot done, waiting for Freeze.
        WaitingForFreeze = 2 => "WAITING_FOR_FREEZE",
        /// Frozen, waiting for Thaw.
        WaitingForThaw = 3 => "WAITING_FOR_THAW",
        /// Thawed, waiting for PostSnapshot.
        WaitingForPostSnapshot = 4 => "WAITING_FOR_POST_SNAPSHOT",
        /// PostSnapshot done, waiting for BackupComplete.
        WaitingForBackupComplete = 5 => "WAITING_FOR_BACKUP_COMPLETE",
        /// Identify failed.
        FailedAtIdentify = 6 => "FAILED_AT_IDENTIFY",
        /// PrepareForBackup failed.
        FailedAtPrepareBackup = 7 => "FAILED_AT_PREPARE_BACKUP",
        /// PrepareForSnapshot failed.
        FailedAtPrepareSnapshot = 8 => "FAILED_AT_PREPARE_SNAPSHOT",
        /// Freeze failed or the freeze window ran out.
        FailedAtFreeze = 9 => "FAILED_AT_FREEZE",
        /// Thaw failed.
        FailedAtThaw = 10 => "FAILED_AT_THAW",
        /// PostSnapshot failed.
        FailedAtPostSnapshot = 11 => "FAILED_AT_POST_SNAPSHOT",
        /// BackupComplete failed.
        FailedAtBackupComplete = 12 => "FAILED_AT_BACKUP_COMPLETE",
        /// PreRestore failed.
        FailedAtPreRestore = 13 => "FAILED_AT_PRE_RESTORE",
        /// PostRestore failed.
        FailedAtPostRestore = 14 => "FAILED_AT_POST_RESTORE",
        /// BackupShutdown failed.
        FailedAtBackupShutdown = 15 => "FAILED_AT_BACKUPSHUTDOWN",
    }
}

impl WriterState {
    /// Whether this is one of the FAILED_AT_* states.
    pub const fn is_failed(self) -> bool {
        self.value() >= WriterState::FailedAtIdentify.value()
    }

    /// The short display name that tools show (WST-3): Stable, Waiting for freeze, Frozen,
    /// Waiting for completion, Failed or Unknown.
    pub const fn short_name(self) -> &'static str {
        match self {
            WriterState::Unknown => "Unknown",
            WriterState::Stable => "Stable",
            WriterState::WaitingForFreeze => "Waiting for freeze",
            WriterState::WaitingForThaw => "Frozen",
            WriterState::WaitingForPostSnapshot | WriterState::WaitingForBackupComplete => {
                "Waiting for completion"
            }
            _ => "Failed",
        }
    }
}

vss_enum! {
    /// `VSS_USAGE_TYPE` (ENUM-5, WMD-2): requesters must respect it because it marks system-state data.
    UsageType: u32 {
        /// Not set (a writer error in a WMD).
        Undefined = 0 => "UNDEFINED",
        /// Data needed to boot the system.
        BootableSystemState = 1 => "BOOTABLESYSTEMSTATE",
        /// A system service's data.
        SystemService = 2 => "SYSTEMSERVICE",
        /// User data.
        UserData = 3 => "USERDATA",
        /// Anything else.
        Other = 4 => "OTHER",
    }
}

vss_enum! {
    /// `VSS_SOURCE_TYPE` (ENUM-5, COMP-2): what kind of store the writer manages.
    SourceType: u32 {
        /// Not set (a writer error in a WMD).
        Undefined = 0 => "UNDEFINED",
        /// A database with transactions and logs.
        TransactedDb = 1 => "TRANSACTEDDB",
        /// A database without transactions.
        NonTransactedDb = 2 => "NONTRANSACTEDDB",
        /// Anything else.
        Other = 3 => "OTHER",
    }
}

vss_enum! {
    /// `VSS_COMPONENT_TYPE` (ENUM-6, COMP-2).
    ComponentType: u32 {
        /// Not set (a writer error in a WMD).
        Undefined = 0 => "UNDEFINED",
        /// Data files plus log files; no recursion, no alternate paths.
        Database = 1 => "DATABASE",
        /// A group of file sets; recursion and alternate paths allowed.
        FileGroup = 2 => "FILEGROUP",
    }
}

vss_enum! {
    /// `VSS_RESTOREMETHOD_ENUM` (ENUM-7, RM-2).
    RestoreMethod: u32 {
        /// Not set: a writer error (WMD-3).
        Undefined = 0 => "UNDEFINED",
        /// Restore to the original place only if none of the files exist there.
        RestoreIfNotThere = 1 => "RESTORE_IF_NOT_THERE",
        /// Restore to the original place if every file can be replaced.
        RestoreIfCanReplace = 2 => "RESTORE_IF_CAN_REPLACE",
        /// Stop the named service, restore, start it again.
        StopRestoreStart = 3 => "STOP_RESTORE_START",
        /// Restore to the writer's alternate location mappings.
        RestoreToAlternateLocation = 4 => "RESTORE_TO_ALTERNATE_LOCATION",
        /// Stage the files and put them in place at the next boot.
        RestoreAtReboot = 5 => "RESTORE_AT_REBOOT",
        /// Restore now if possible, otherwise at the next boot.
        RestoreAtRebootIfCannotReplace = 6 => "RESTORE_AT_REBOOT_IF_CANNOT_REPLACE",
        /// A writer-specific procedure.
        Custom = 7 => "CUSTOM",
        /// Like STOP_RESTORE_START.
        RestoreStopStart = 8 => "RESTORE_STOP_START",
    }
}

impl RestoreMethod {
    /// Whether the method stops and starts a named service (WMD-3 requires the service name then).
    pub const fn needs_service(self) -> bool {
        matches!(
            self,
            RestoreMethod::StopRestoreStart | RestoreMethod::RestoreStopStart
        )
    }
}

vss_enum! {
    /// `VSS_WRITERRESTORE_ENUM` (ENUM-8): whether the writer takes part in a restore.
    WriterRestore: u32 {
        /// Not set.
        Undefined = 0 => "UNDEFINED",
        /// The writer never takes part.
        Never = 1 => "NEVER",
        /// Only when replacing files failed.
        IfReplaceFails = 2 => "IF_REPLACE_FAILS",
        /// Always.
        Always = 3 => "ALWAYS",
    }
}

vss_enum! {
    /// `VSS_RESTORE_TARGET` (ENUM-9, RT-1).
    RestoreTarget: u32 {
        /// Not set; treated as ORIGINAL.
        Undefined = 0 => "UNDEFINED",
        /// Follow the restore method.
        Original = 1 => "ORIGINAL",
        /// Use the alternate location mappings.
        Alternate = 2 => "ALTERNATE",
        /// Use the directed targets the writer set.
        Directed = 3 => "DIRECTED",
        /// The original location, whatever the method says.
        OriginalLocation = 4 => "ORIGINAL_LOCATION",
    }
}

vss_enum! {
    /// `VSS_FILE_RESTORE_STATUS` (ENUM-10, RST-FILE-3).
    FileRestoreStatus: u32 {
        /// Not reported yet.
        Undefined = 0 => "UNDEFINED",
        /// No file was restored.
        None = 1 => "NONE",
        /// Every file was restored.
        All = 2 => "ALL",
        /// Some files were restored and the restore failed.
        Failed = 3 => "FAILED",
    }
}

vss_enum! {
    /// `VSS_SNAPSHOT_STATE` (ENUM-15, PROV-ST-1).
    SnapshotState: u32 {
        /// Not known.
        Unknown = 0 => "UNKNOWN",
        /// Being added to a set.
        Preparing = 1 => "PREPARING",
        /// The provider is preparing.
        ProcessingPrepare = 2 => "PROCESSING_PREPARE",
        /// Prepared.
        Prepared = 3 => "PREPARED",
        /// Pre-commit running.
        ProcessingPrecommit = 4 => "PROCESSING_PRECOMMIT",
        /// Pre-commit done.
        Precommitted = 5 => "PRECOMMITTED",
        /// Commit running.
        ProcessingCommit = 6 => "PROCESSING_COMMIT",
        /// Committed.
        Committed = 7 => "COMMITTED",
        /// Post-commit running.
        ProcessingPostcommit = 8 => "PROCESSING_POSTCOMMIT",
        /// Pre-final-commit running.
        ProcessingPrefinalcommit = 9 => "PROCESSING_PREFINALCOMMIT",
        /// Pre-final-commit done.
        Prefinalcommitted = 10 => "PREFINALCOMMITTED",
        /// Post-final-commit running.
        ProcessingPostfinalcommit = 11 => "PROCESSING_POSTFINALCOMMIT",
        /// The shadow copy exists and is final.
        Created = 12 => "CREATED",
        /// Creation was aborted.
        Aborted = 13 => "ABORTED",
        /// The shadow copy was deleted.
        Deleted = 14 => "DELETED",
        /// Post-commit done.
        Postcommitted = 15 => "POSTCOMMITTED",
    }
}

vss_enum! {
    /// `VSS_OBJECT_TYPE` (ENUM-16): what a query or deletion addresses.
    ObjectType: u32 {
        /// Not known.
        Unknown = 0 => "UNKNOWN",
        /// Nothing.
        None = 1 => "NONE",
        /// A shadow copy set.
        SnapshotSet = 2 => "SNAPSHOT_SET",
        /// A shadow copy.
        Snapshot = 3 => "SNAPSHOT",
        /// A provider.
        Provider = 4 => "PROVIDER",
    }
}

vss_enum! {
    /// `VSS_PROVIDER_TYPE` (ENUM-16, PROV-SEL-1).
    ProviderType: u32 {
        /// Not known.
        Unknown = 0 => "UNKNOWN",
        /// The coordinator's own default provider.
        System = 1 => "SYSTEM",
        /// A software provider.
        Software = 2 => "SOFTWARE",
        /// A storage array provider.
        Hardware = 3 => "HARDWARE",
        /// A file-share provider.
        FileShare = 4 => "FILESHARE",
    }
}

vss_enum! {
    /// `VSS_APPLICATION_LEVEL` (ENUM-17, ROLE-9): the order in which writers receive Freeze.
    ApplicationLevel: i32 {
        /// Not known.
        Unknown = 0 => "UNKNOWN",
        /// System-level writers, frozen last.
        System = 1 => "SYSTEM",
        /// Back-end writers, frozen after front-end ones.
        BackEnd = 2 => "BACK_END",
        /// Front-end writers, frozen first (the default).
        FrontEnd = 3 => "FRONT_END",
        /// System resource managers.
        SystemRm = 4 => "SYSTEM_RM",
        /// Chosen by the system.
        Auto = -1 => "AUTO",
    }
}

impl ApplicationLevel {
    /// The position of this level in the Freeze order (ROLE-9): front-end first, then back-end, then system.
    ///
    /// AUTO and UNKNOWN freeze with front-end writers, the default level; resource managers freeze last,
    /// just as VSS freezes transaction managers before the snapshot is cut (BK-SNAP-10).
    pub const fn freeze_rank(self) -> u8 {
        match self {
            ApplicationLevel::FrontEnd | ApplicationLevel::Auto | ApplicationLevel::Unknown => 0,
            ApplicationLevel::BackEnd => 1,
            ApplicationLevel::System => 2,
            ApplicationLevel::SystemRm => 3,
        }
    }
}

vss_enum! {
    /// `VSS_ROLLFORWARD_TYPE` (ENUM-18).
    RollforwardType: u32 {
        /// Not set.
        Undefined = 0 => "UNDEFINED",
        /// No roll-forward.
        None = 1 => "NONE",
        /// Roll forward through every log.
        All = 2 => "ALL",
        /// Roll forward up to a point.
        Partial = 3 => "PARTIAL",
    }
}

vss_mask! {
    /// `VSS_COMPONENT_FLAGS` (ENUM-6).
    ComponentFlags {
        /// The component supports backup recovery.
        BACKUP_RECOVERY = 0x1,
        /// The component supports application rollback recovery.
        APP_ROLLBACK_RECOVERY = 0x2,
        /// The component is not part of system state (SEL-8).
        NOT_SYSTEM_STATE = 0x4,
    }
}

vss_mask! {
    /// `VSS_BACKUP_SCHEMA` (ENUM-11, WMD-7): the backup types and restore features a writer supports.
    /// The empty mask means full backups only.
    BackupSchema {
        /// Differential backups.
        DIFFERENTIAL = 0x1,
        /// Incremental backups.
        INCREMENTAL = 0x2,
        /// Incremental and differential must not be mixed in one chain (BT-3).
        EXCLUSIVE_INCREMENTAL_DIFFERENTIAL = 0x4,
        /// Log backups.
        LOG = 0x8,
        /// Copy backups.
        COPY = 0x10,
        /// Backup stamps (INC-3).
        TIMESTAMPED = 0x20,
        /// Differenced files with last-modify times (DF-1).
        LAST_MODIFY = 0x40,
        /// Differenced files with LSNs (DF-1).
        LSN = 0x80,
        /// New restore targets.
        WRITER_SUPPORTS_NEW_TARGET = 0x100,
        /// Restore to another instance (RST-PREP-8).
        WRITER_SUPPORTS_RESTORE_WITH_MOVE = 0x200,
        /// System state can be backed up independently.
        INDEPENDENT_SYSTEM_STATE = 0x400,
        /// Roll-forward restores.
        ROLLFORWARD_RESTORE = 0x1000,
        /// Restore under a new name.
        RESTORE_RENAME = 0x2000,
        /// Authoritative restores.
        AUTHORITATIVE_RESTORE = 0x4000,
        /// Several restores in parallel.
        WRITER_SUPPORTS_PARALLEL_RESTORES = 0x8000,
    }
}

impl BackupSchema {
    /// Whether the writer supports a backup of this type (WMD-7: full backups are always supported).
    pub fn supports(self, backup_type: BackupType) -> bool {
        match backup_type {
            BackupType::Full | BackupType::Undefined | BackupType::Other => true,
            BackupType::Incremental => self.contains(Self::INCREMENTAL),
            BackupType::Differential => self.contains(Self::DIFFERENTIAL),
            BackupType::Log => self.contains(Self::LOG),
            BackupType::Copy => self.contains(Self::COPY),
        }
    }
}

vss_mask! {
    /// `VSS_FILE_SPEC_BACKUP_TYPE` (ENUM-12, INC-2): per file set, which backup types must copy it whole
    /// and which must read it from the shadow copy. The default is 0xF0F.
    FileSpecBackupType {
        /// A full backup must copy the set.
        FULL_BACKUP_REQUIRED = 0x1,
        /// A differential backup must copy the whole set.
        DIFFERENTIAL_BACKUP_REQUIRED = 0x2,
        /// An incremental backup must copy the whole set.
        INCREMENTAL_BACKUP_REQUIRED = 0x4,
        /// A log backup must copy the set.
        LOG_BACKUP_REQUIRED = 0x8,
        /// A full backup must read the set from the shadow copy.
        FULL_SNAPSHOT_REQUIRED = 0x100,
        /// A differential backup must read the set from the shadow copy.
        DIFFERENTIAL_SNAPSHOT_REQUIRED = 0x200,
        /// An incremental backup must read the set from the shadow copy.
        INCREMENTAL_SNAPSHOT_REQUIRED = 0x400,
        /// A log backup must read the set from the shadow copy.
        LOG_SNAPSHOT_REQUIRED = 0x800,
        /// The files were created during the backup (header only).
        CREATED_DURING_BACKUP = 0x10000,
    }
}

impl FileSpecBackupType {
    /// Every backup-required bit.
    pub const ALL_BACKUP_REQUIRED: FileSpecBackupType = FileSpecBackupType(0xF);
    /// Every snapshot-required bit.
    pub const ALL_SNAPSHOT_REQUIRED: FileSpecBackupType = FileSpecBackupType(0xF00);
    /// The default mask, 0xF0F ("3855").
    pub const DEFAULT: FileSpecBackupType = FileSpecBackupType(0xF0F);

    /// The backup-required bit for this backup type (COPY and OTHER count as FULL).
    pub const fn backup_required_bit(backup_type: BackupType) -> FileSpecBackupType {
        match backup_type {
            BackupType::Incremental => Self::INCREMENTAL_BACKUP_REQUIRED,
            BackupType::Differential => Self::DIFFERENTIAL_BACKUP_REQUIRED,
            BackupType::Log => Self::LOG_BACKUP_REQUIRED,
            _ => Self::FULL_BACKUP_REQUIRED,
        }
    }

    /// The snapshot-required bit for this backup type (COPY and OTHER count as FULL).
    pub const fn snapshot_required_bit(backup_type: BackupType) -> FileSpecBackupType {
        match backup_type {
            BackupType::Incremental => Self::INCREMENTAL_SNAPSHOT_REQUIRED,
            BackupType::Differential => Self::DIFFERENTIAL_SNAPSHOT_REQUIRED,
            BackupType::Log => Self::LOG_SNAPSHOT_REQUIRED,
            _ => Self::FULL_SNAPSHOT_REQUIRED,
        }
    }
}

/// The default for a file descriptor's backup-type mask, used by serde.
pub(crate) fn default_file_spec_backup_type() -> FileSpecBackupType {
    FileSpecBackupType::DEFAULT
}

vss_mask! {
    /// `VSS_VOLUME_SNAPSHOT_ATTRIBUTES` (ENUM-13, CTX-1).
    SnapshotAttributes {
        /// The shadow copy survives the session.
        PERSISTENT = 0x1,
        /// No auto-recovery in PostSnapshot.
        NO_AUTORECOVERY = 0x2,
        /// Users may see it as a previous version.
        CLIENT_ACCESSIBLE = 0x4,
        /// Not deleted when the session is released.
        NO_AUTO_RELEASE = 0x8,
        /// Created without writers.
        NO_WRITERS = 0x10,
        /// Transportable to another host.
        TRANSPORTABLE = 0x20,
        /// Not surfaced to the system.
        NOT_SURFACED = 0x40,
        /// No transaction-manager integration.
        NOT_TRANSACTED = 0x80,
        /// Made by a storage array.
        HARDWARE_ASSISTED = 0x10000,
        /// Copy-on-write.
        DIFFERENTIAL = 0x20000,
        /// A full mirror.
        PLEX = 0x40000,
        /// Imported from another host.
        IMPORTED = 0x80000,
        /// Exposed at a local path.
        EXPOSED_LOCALLY = 0x100000,
        /// Exposed as a network share.
        EXPOSED_REMOTELY = 0x200000,
        /// Auto-recovered.
        AUTORECOVER = 0x400000,
        /// For rollback recovery.
        ROLLBACK_RECOVERY = 0x800000,
        /// Reserved.
        DELAYED_POSTSNAPSHOT = 0x1000000,
        /// Transactional file-system recovery.
        TXF_RECOVERY = 0x2000000,
        /// A file-share shadow copy.
        FILE_SHARE = 0x4000000,
    }
}

vss_enum! {
    /// `VSS_SNAPSHOT_CONTEXT` (ENUM-14, CTX-1): each context is the OR of its attribute bits.
    SnapshotContext: u32 {
        /// Auto-release, with writers: the default (CFG-15).
        Backup = 0x0 => "BACKUP",
        /// Auto-release, without writers, for file shares.
        FileShareBackup = 0x10 => "FILE_SHARE_BACKUP",
        /// Persistent, without writers, not auto-released.
        NasRollback = 0x19 => "NAS_ROLLBACK",
        /// Persistent, with writers, not auto-released.
        AppRollback = 0x9 => "APP_ROLLBACK",
        /// Persistent, client-accessible, without writers.
        ClientAccessible = 0x1D => "CLIENT_ACCESSIBLE",
        /// Persistent, client-accessible, with writers.
        ClientAccessibleWriters = 0xD => "CLIENT_ACCESSIBLE_WRITERS",
        /// Every context; only for queries (CTX-5).
        All = 0xFFFF_FFFF => "ALL",
    }
}

impl SnapshotContext {
    /// The attribute bits this context stands for (CTX-1). ALL has none: it only filters queries.
    pub fn attributes(self) -> SnapshotAttributes {
        match self {
            SnapshotContext::All => SnapshotAttributes::empty(),
            other => SnapshotAttributes::from_bits(other.value())
                .expect("every creation context is made of attribute bits"),
        }
    }

    /// Whether writers take part in sets of this context.
    pub fn involves_writers(self) -> bool {
        !self.attributes().contains(SnapshotAttributes::NO_WRITERS)
    }
}

vss_mask! {
    /// `VSS_SUBSCRIBE_MASK` (ENUM-17, ROLE-8): which events a writer receives.
    SubscribeMask {
        /// PostSnapshot events.
        POST_SNAPSHOT = 0x1,
        /// Backup events.
        BACKUP_EVENTS = 0x2,
        /// Restore events.
        RESTORE_EVENTS = 0x4,
        /// I/O throttling events.
        IO_THROTTLING = 0x8,
    }
}

impl SubscribeMask {
    /// The default subscription: backup plus restore events (ROLE-8).
    pub const DEFAULT: SubscribeMask = SubscribeMask(0x2 | 0x4);
}

vss_mask! {
    /// `VSS_HARDWARE_OPTIONS` (ENUM-18): break-ex flags and LUN-state notifications.
    HardwareOptions {
        /// Mask the LUNs when breaking.
        BREAKEX_FLAG_MASK_LUNS = 0x1,
        /// Make the LUNs read-write when breaking.
        BREAKEX_FLAG_MAKE_READ_WRITE = 0x2,
        /// Revert the identity of all LUNs.
        BREAKEX_FLAG_REVERT_IDENTITY_ALL = 0x4,
        /// Revert the identity of no LUN.
        BREAKEX_FLAG_REVERT_IDENTITY_NONE = 0x8,
        /// Notify the provider that the LUNs were made read-write.
        ONLUNSTATECHANGE_NOTIFY_READ_WRITE = 0x100,
        /// Notify the provider before the LUNs are recovered.
        ONLUNSTATECHANGE_NOTIFY_LUN_PRE_RECOVERY = 0x200,
        /// Notify the provider after the LUNs were recovered.
        ONLUNSTATECHANGE_NOTIFY_LUN_POST_RECOVERY = 0x400,
        /// Ask the provider to mask the LUNs.
        ONLUNSTATECHANGE_DO_MASK_LUNS = 0x800,
    }
}

vss_mask! {
    /// `VSS_RECOVERY_OPTIONS` (ENUM-18).
    RecoveryOptions {
        /// Revert the identity of every volume.
        REVERT_IDENTITY_ALL = 0x100,
        /// Skip the volume check.
        NO_VOLUME_CHECK = 0x200,
    }
}

vss_mask! {
    /// `VSS_SNAPSHOT_COMPATIBILITY` (ENUM-18).
    SnapshotCompatibility {
        /// Disable defragmentation while the shadow copy exists.
        DISABLE_DEFRAG = 0x1,
        /// Disable content indexing while the shadow copy exists.
        DISABLE_CONTENTINDEX = 0x2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers of spec §2, written out independently of the declarations above.
    #[test]
    fn enum_values_match_the_spec() {
        let backup: Vec<u32> = BackupType::ALL.iter().map(|t| t.value()).collect();
        assert_eq!(backup, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(WriterState::FailedAtBackupShutdown.value(), 15);
        assert_eq!(WriterState::FailedAtFreeze.value(), 9);
        assert_eq!(RestoreMethod::RestoreStopStart.value(), 8);
        assert_eq!(RestoreMethod::Custom.value(), 7);
        assert_eq!(RestoreTarget::OriginalLocation.value(), 4);
        assert_eq!(SnapshotState::Postcommitted.value(), 15);
        assert_eq!(SnapshotState::Created.value(), 12);
        assert_eq!(ApplicationLevel::Auto.value(), -1);
        assert_eq!(ProviderType::FileShare.value(), 4);
        assert_eq!(FileSpecBackupType::DEFAULT.bits(), 3855);
        assert_eq!(SnapshotContext::ClientAccessible.value(), 0x1D);
        assert_eq!(SnapshotAttributes::FILE_SHARE.bits(), 0x400_0000);
        assert_eq!(
            BackupSchema::WRITER_SUPPORTS_PARALLEL_RESTORES.bits(),
            0x8000
        );
    }

    /// CTX-1 / ENUM-14: each creation context is the OR of its attribute bits.
    #[test]
    fn contexts_are_unions_of_attributes() {
        use SnapshotAttributes as A;
        let expect = [
            (SnapshotContext::Backup, A::empty()),
            (SnapshotContext::FileShareBackup, A::NO_WRITERS),
            (
                SnapshotContext::NasRollback,
                A::PERSISTENT | A::NO_AUTO_RELEASE | A::NO_WRITERS,
            ),
            (
                SnapshotContext::AppRollback,
                A::PERSISTENT | A::NO_AUTO_RELEASE,
            ),
            (
                SnapshotContext::ClientAccessible,
                A::PERSISTENT | A::CLIENT_ACCESSIBLE | A::NO_AUTO_RELEASE | A::NO_WRITERS,
            ),
            (
                SnapshotContext::ClientAccessibleWriters,
                A::PERSISTENT | A::CLIENT_ACCESSIBLE | A::NO_AUTO_RELEASE,
            ),
        ];
        for (context, attributes) in expect {
            assert_eq!(context.attributes(), attributes, "{context}");
        }
        assert!(!SnapshotContext::NasRollback.involves_writers());
        assert!(SnapshotContext::AppRollback.involves_writers());
    }

    #[test]
    fn names_and_values_round_trip() {
        for state in WriterState::ALL {
            assert_eq!(WriterState::from_value(state.value()), Some(*state));
            assert_eq!(WriterState::from_name(state.name()), Some(*state));
        }
        assert_eq!(RestoreMethod::from_value(9), None);
        assert_eq!(
            ApplicationLevel::from_value(-1),
            Some(ApplicationLevel::Auto)
        );
    }

    #[test]
    fn masks_refuse_unknown_bits() {
        assert_eq!(ComponentFlags::from_bits(0x8), Err(0x8));
        assert!(FileSpecBackupType::try_from(0x1000).is_err());
        assert_eq!(
            FileSpecBackupType::DEFAULT.names(),
            [
                "FULL_BACKUP_REQUIRED",
                "DIFFERENTIAL_BACKUP_REQUIRED",
                "INCREMENTAL_BACKUP_REQUIRED",
                "LOG_BACKUP_REQUIRED",
                "FULL_SNAPSHOT_REQUIRED",
                "DIFFERENTIAL_SNAPSHOT_REQUIRED",
                "INCREMENTAL_SNAPSHOT_REQUIRED",
                "LOG_SNAPSHOT_REQUIRED"
            ]
        );
    }

    #[test]
    fn freeze_order_is_front_end_first() {
        assert!(ApplicationLevel::FrontEnd.freeze_rank() < ApplicationLevel::BackEnd.freeze_rank());
        assert!(ApplicationLevel::BackEnd.freeze_rank() < ApplicationLevel::System.freeze_rank());
    }

    #[test]
    fn schema_support_always_includes_full() {
        assert!(BackupSchema::empty().supports(BackupType::Full));
        assert!(!BackupSchema::empty().supports(BackupType::Incremental));
        assert!(BackupSchema::INCREMENTAL.supports(BackupType::Incremental));
    }
}
