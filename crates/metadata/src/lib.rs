//! The documents that writers and requesters exchange, and the rules that decide what a backup includes.
//!
//! This crate is the bottom of the workspace: it does no I/O and has no async code.
//! It holds
//! - the enumerations of the VSS model with their numeric values ([`enums`], spec §2),
//! - identifiers and timestamps ([`ids`]),
//! - the Writer Metadata Document ([`wmd`], spec §6) and the Backup Components Document ([`bcd`], spec §7),
//!   with their canonical JSON form ([`json`]) and validation ([`validate`]),
//! - the component selection engine ([`selection`], spec §8 and §10),
//! - file-set matching ([`fileset`], WMD-11, WMD-12),
//! - the registry of VSS result codes ([`codes`], spec §13).

pub mod bcd;
pub mod codes;
pub mod enums;
pub mod fileset;
pub mod ids;
pub mod json;
pub mod logical_path;
pub mod selection;
pub mod validate;
pub mod wmd;

pub use bcd::BackupComponents;
pub use codes::ErrorCode;
pub use ids::{Guid, SnapshotId, SnapshotSetId, VssTimestamp, WriterClassId, WriterInstanceId};
pub use validate::{DocumentError, ValidationError};
pub use wmd::WriterMetadata;

/// The `schema_version` that this build writes and accepts for both documents.
///
/// A document with any other version is refused with a [`DocumentError::SchemaVersion`] rather than half-read.
pub const SCHEMA_VERSION: u32 = 1;
