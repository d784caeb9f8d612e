//! Validation of WMDs and BCDs: every broken rule becomes an error that names the field, the value and the rule.
//!
//! Parsing (in [`crate::json`]) catches what the types catch: bad JSON, unknown enum names, unknown
//! bits, missing required fields. Validation then checks the rules that types cannot express, such as
//! unique components (WMD-9), absolute paths (WMD-11) and logical paths without empty segments (LP-1).
//! Nothing here panics on any input.

use std::collections::HashSet;

use crate::bcd::{BackupComponents, PartialFile};
use crate::codes::{self, ErrorCode};
use crate::enums::{ComponentType, RestoreMethod, SnapshotContext, SourceType, UsageType};
use crate::logical_path::{check_component_name, check_logical_path, check_text};
use crate::wmd::{Component, FileDescriptor, FileSet, WriterMetadata};

/// One broken rule in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where: a JSON path such as `components[2].files[0].path`.
    pub field: String,
    /// The offending value, quoted and shortened for display.
    pub value: String,
    /// The requirement ID of the broken rule.
    pub rule: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} = {}: {} ({})",
            self.field, self.value, self.message, self.rule
        )
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// The text is not a document of this kind: bad JSON, a wrong type, an unknown enum value, a missing field.
    #[error("{document}: {field}: {message} (line {line}, column {column})")]
    Syntax {
        /// Which document.
        document: &'static str,
        /// The JSON path where reading stopped (`.` for the top level).
        field: String,
        /// What the parser said.
        message: String,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// The document has another `schema_version` than this build reads.
    #[error(
        "{document}: schema_version = {found}: this build reads schema version {expected} only; convert the document with a matching shadowcopy version"
    )]
    SchemaVersion {
        /// Which document.
        document: &'static str,
        /// The version found, or a description when it was missing or not a number.
        found: String,
        /// The version this build reads.
        expected: u32,
    },
    /// The document parsed but breaks rules of the spec.
    #[error("{document} breaks {} rule(s): {}", errors.len(), join_errors(errors))]
    Invalid {
        /// Which document.
        document: &'static str,
        /// Every broken rule.
        errors: Vec<ValidationError>,
    },
}

fn join_errors(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DocumentError {
    /// The VSS result code: unreadable documents are corrupt, rule breaks are invalid (R1, ERR-CODE-1).
    pub fn code(&self) -> ErrorCode {
        match self {
            DocumentError::Syntax { .. } => codes::VSS_E_CORRUPT_XML_DOCUMENT,
            DocumentError::SchemaVersion { .. } | DocumentError::Invalid { .. } => {
                codes::VSS_E_INVALID_XML_DOCUMENT
            }
        }
    }

    /// The fields named by this error.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            DocumentError::Syntax { field, .. } => vec![field.as_str()],
            DocumentError::SchemaVersion { .. } => vec!["schema_version"],
            DocumentError::Invalid { errors, .. } => {
                errors.iter().map(|e| e.field.as_str()).collect()
            }
        }
    }
}

/// Collects broken rules with their field paths.
struct Checker {
    errors: Vec<ValidationError>,
}

impl Checker {
    fn new() -> Self {
        Checker { errors: Vec::new() }
    }

    fn fail(
        &mut self,
        field: impl Into<String>,
        value: &str,
        rule: &'static str,
        message: impl Into<String>,
    ) {
        self.errors.push(ValidationError {
            field: field.into(),
            value: display_value(value),
            rule,
            message: message.into(),
        });
    }

    fn text(&mut self, field: &str, value: &str, rule: &'static str) {
        if let Err(message) = check_text(value) {
            self.fail(field, value, rule, message);
        }
    }

    fn non_empty_text(&mut self, field: &str, value: &str, rule: &'static str) {
        if value.trim().is_empty() {
            self.fail(field, value, rule, "must not be empty");
        } else {
            self.text(field, value, rule);
        }
    }

    /// An absolute directory path: starts with `/` or with an environment variable (WMD-11).
    fn directory(&mut self, field: &str, value: &str, rule: &'static str) {
        if let Err(message) = check_text(value) {
            self.fail(field, value, rule, message);
        } else if !(value.starts_with('/') || value.starts_with('$')) {
            self.fail(
                field,
                value,
                rule,
                "must be an absolute path (or start with an environment variable such as $PGDATA)",
            );
        } else if value.contains(['*', '?']) {
            self.fail(
                field,
                value,
                rule,
                "a directory must not contain wildcards; put them in the filespec",
            );
        }
    }

    fn absolute(&mut self, field: &str, value: &str, rule: &'static str) {
        if let Err(message) = check_text(value) {
            self.fail(field, value, rule, message);
        } else if !value.starts_with('/') {
            self.fail(field, value, rule, "must be an absolute path");
        }
    }

    fn filespec(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.fail(
                field,
                value,
                "WMD-11",
                "must not be empty; use `*` for every file",
            );
        } else if let Err(message) = check_text(value) {
            self.fail(field, value, "WMD-11", message);
        } else if value.contains('/') {
            self.fail(
                field,
                value,
                "WMD-11",
                "a filespec must not contain directory separators",
            );
        }
    }

    fn file_set(&mut self, field: &str, set: &FileSet) {
        self.directory(&format!("{field}.path"), &set.path, "WMD-11");
        self.filespec(&format!("{field}.filespec"), &set.filespec);
    }

    fn logical_path(&mut self, field: &str, value: &str, allow_remote: bool) {
        if let Err(message) = check_logical_path(value, allow_remote) {
            self.fail(field, value, "LP-1", message);
        }
    }

    fn component_name(&mut self, field: &str, value: &str) {
        if let Err(message) = check_component_name(value) {
            self.fail(field, value, "WMD-8", message);
        }
    }

    fn finish(self, document: &'static str) -> Result<(), DocumentError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(DocumentError::Invalid {
                document,
                errors: self.errors,
            })
        }
    }
}

/// Quotes a value for messages, escaping control characters and shortening long values.
fn display_value(value: &str) -> String {
    const MAX: usize = 80;
    let shown: String = value.chars().take(MAX).collect();
    let ellipsis = if value.chars().count() > MAX {
        "..."
    } else {
        ""
    };
    format!("{:?}{ellipsis}", shown)
}

impl WriterMetadata {
    /// Checks every rule of spec §6 that the types do not already enforce.
    pub fn validate(&self) -> Result<(), DocumentError> {
        let mut c = Checker::new();
        let id = &self.identity;
        c.non_empty_text("identity.writer_name", &id.writer_name, "WMD-2");
        if id.class_id.is_nil() {
            c.fail(
                "identity.class_id",
                &id.class_id.to_string(),
                "WMD-2",
                "the class id must be a real GUID, not nil",
            );
        }
        if let Some(name) = &id.instance_name {
            c.non_empty_text("identity.instance_name", name, "ROLE-7");
        }
        if id.usage_type == UsageType::Undefined {
            c.fail(
                "identity.usage_type",
                "UNDEFINED",
                "WMD-2",
                "a writer must always specify its usage type",
            );
        }
        if id.source_type == SourceType::Undefined {
            c.fail(
                "identity.source_type",
                "UNDEFINED",
                "WMD-2",
                "a writer must always specify its source type",
            );
        }
        let rm = &self.restore_method;
        if rm.method == RestoreMethod::Undefined {
            c.fail(
                "restore_method.method",
                "UNDEFINED",
                "WMD-3",
                "UNDEFINED is a writer error; pick a restore method",
            );
        }
        match &rm.service {
            Some(service) => c.non_empty_text("restore_method.service", service, "WMD-3"),
            None if rm.method.needs_service() => c.fail(
                "restore_method.service",
                "",
                "WMD-3",
                format!(
                    "{} needs the name of the service to stop and start",
                    rm.method
                ),
            ),
            None => {}
        }
        if let Some(text) = &rm.user_procedure {
            c.non_empty_text("restore_method.user_procedure", text, "WMD-3");
        }
        for (i, set) in self.excludes.iter().enumerate() {
            c.file_set(&format!("excludes[{i}]"), set);
        }
        for (i, set) in self.exclude_from_snapshot.iter().enumerate() {
            c.file_set(&format!("exclude_from_snapshot[{i}]"), set);
        }
        for (i, mapping) in self.alternate_location_mappings.iter().enumerate() {
            let field = format!("alternate_location_mappings[{i}]");
            c.file_set(&format!("{field}.source"), &mapping.source);
            c.absolute(
                &format!("{field}.destination"),
                &mapping.destination,
                "WMD-6",
            );
            if !self.has_file_set(&mapping.source) {
                c.fail(
                    format!("{field}.source"),
                    &format!(
                        "{} {} recursive={}",
                        mapping.source.path, mapping.source.filespec, mapping.source.recursive
                    ),
                    "WMD-6",
                    "must exactly match a file set of one of the writer's components",
                );
            }
        }
        if self.components.is_empty() {
            c.fail(
                "components",
                "[]",
                "WMD-10",
                "a writer must define at least one component",
            );
        }
        let mut seen = HashSet::new();
        for (i, component) in self.components.iter().enumerate() {
            validate_component(&mut c, &format!("components[{i}]"), component);
            if !seen.insert((component.logical_path.as_str(), component.name.as_str())) {
                c.fail(
                    format!("components[{i}]"),
                    &component.full_path(),
                    "WMD-9",
                    "duplicate component: (logical path, name) must be unique within the writer",
                );
            }
        }
        c.finish("writer metadata document")
    }
}

impl WriterMetadata {
    /// Rules the spec states as SHOULD: breaking them is allowed but worth telling the writer's author.
    ///
    /// - WMD-13: dependencies should not link components of the same writer; selection covers that.
    /// - WMD-14: the same file set should not be reported in two components.
    pub fn warnings(&self) -> Vec<ValidationError> {
        let mut c = Checker::new();
        let mut owners: std::collections::HashMap<FileSet, usize> =
            std::collections::HashMap::new();
        for (i, component) in self.components.iter().enumerate() {
            for (j, dependency) in component.dependencies.iter().enumerate() {
                if dependency.writer_class_id == self.identity.class_id {
                    c.fail(
                        format!("components[{i}].dependencies[{j}].writer_class_id"),
                        &dependency.writer_class_id.to_string(),
                        "WMD-13",
                        "a dependency on a component of the same writer; use logical paths instead",
                    );
                }
            }
            for descriptor in component.all_files() {
                let set = descriptor.file_set();
                match owners.get(&set) {
                    Some(&first) if first != i => c.fail(
                        format!("components[{i}]"),
                        &component.full_path(),
                        "WMD-14",
                        format!(
                            "file set ({}, {}) is also reported by components[{first}]",
                            set.path, set.filespec
                        ),
                    ),
                    _ => {
                        owners.insert(set, i);
                    }
                }
            }
        }
        c.errors
    }
}

fn validate_component(c: &mut Checker, field: &str, component: &Component) {
    if component.component_type == ComponentType::Undefined {
        c.fail(
            format!("{field}.component_type"),
            "UNDEFINED",
            "COMP-2",
            "must be DATABASE or FILEGROUP",
        );
    }
    c.logical_path(
        &format!("{field}.logical_path"),
        &component.logical_path,
        false,
    );
    c.component_name(&format!("{field}.name"), &component.name);
    if let Some(caption) = &component.caption {
        c.text(&format!("{field}.caption"), caption, "WMD-8");
    }
    if let Some(icon) = &component.icon
        && !icon
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        c.fail(
            format!("{field}.icon"),
            icon,
            "WMD-8",
            "the icon must be base64-encoded PNG data",
        );
    }
    let database = component.component_type == ComponentType::Database;
    if database && !component.files.is_empty() {
        c.fail(
            format!("{field}.files"),
            &format!("{} file set(s)", component.files.len()),
            "COMP-2",
            "a DATABASE component lists database_files and database_log_files, not files",
        );
    }
    if component.component_type == ComponentType::FileGroup
        && !(component.database_files.is_empty() && component.database_log_files.is_empty())
    {
        c.fail(
            format!("{field}.database_files"),
            "",
            "COMP-2",
            "a FILEGROUP component lists files, not database_files or database_log_files",
        );
    }
    let lists = [
        ("files", &component.files),
        ("database_files", &component.database_files),
        ("database_log_files", &component.database_log_files),
    ];
    for (list, descriptors) in lists {
        for (j, descriptor) in descriptors.iter().enumerate() {
            validate_descriptor(c, &format!("{field}.{list}[{j}]"), descriptor, database);
        }
    }
    for (j, dependency) in component.dependencies.iter().enumerate() {
        let dep = format!("{field}.dependencies[{j}]");
        if dependency.writer_class_id.is_nil() {
            c.fail(
                format!("{dep}.writer_class_id"),
                "nil",
                "WMD-13",
                "must name the target writer's class id",
            );
        }
        c.logical_path(
            &format!("{dep}.logical_path"),
            &dependency.logical_path,
            true,
        );
        c.non_empty_text(
            &format!("{dep}.component_name"),
            &dependency.component_name,
            "WMD-13",
        );
    }
}

fn validate_descriptor(c: &mut Checker, field: &str, descriptor: &FileDescriptor, database: bool) {
    c.directory(&format!("{field}.path"), &descriptor.path, "WMD-11");
    c.filespec(&format!("{field}.filespec"), &descriptor.filespec);
    if let Some(alternate) = &descriptor.alternate_path {
        c.directory(&format!("{field}.alternate_path"), alternate, "ALTP-1");
    }
    if database && descriptor.recursive {
        c.fail(
            format!("{field}.recursive"),
            "true",
            "WMD-11",
            "database file sets cannot be recursive",
        );
    }
    if database && descriptor.alternate_path.is_some() {
        c.fail(
            format!("{field}.alternate_path"),
            descriptor.alternate_path.as_deref().unwrap_or_default(),
            "WMD-11",
            "database file sets cannot have an alternate path",
        );
    }
}

impl BackupComponents {
    /// Checks every rule of spec §7 that the types do not already enforce.
    pub fn validate(&self) -> Result<(), DocumentError> {
        let mut c = Checker::new();
        if self.context == SnapshotContext::All {
            c.fail(
                "context",
                "ALL",
                "CTX-5",
                "ALL only filters queries; a backup needs a creation context",
            );
        }
        let mut volumes = HashSet::new();
        for (i, snapshot) in self.snapshots.iter().enumerate() {
            c.absolute(&format!("snapshots[{i}].volume"), &snapshot.volume, "BCD-5");
            if !volumes.insert(snapshot.volume.trim_end_matches('/')) {
                c.fail(
                    format!("snapshots[{i}].volume"),
                    &snapshot.volume,
                    "BCD-5",
                    "the volume appears twice in the set",
                );
            }
        }
        let mut writers = HashSet::new();
        for (i, writer) in self.writers.iter().enumerate() {
            let wf = format!("writers[{i}]");
            if writer.class_id.is_nil() {
                c.fail(
                    format!("{wf}.class_id"),
                    "nil",
                    "BCD-2",
                    "must be the writer's class id",
                );
            }
            if !writers.insert((writer.class_id, writer.instance_id)) {
                c.fail(
                    format!("{wf}.instance_id"),
                    &writer.instance_id.to_string(),
                    "BCD-2",
                    "the writer instance appears twice",
                );
            }
            if let Some(name) = &writer.instance_name {
                c.non_empty_text(&format!("{wf}.instance_name"), name, "ROLE-7");
            }
            let mut seen = HashSet::new();
            for (j, record) in writer.components().iter().enumerate() {
                let rf = format!("{wf}.components[{j}]");
                if record.component_type == ComponentType::Undefined {
                    c.fail(
                        format!("{rf}.component_type"),
                        "UNDEFINED",
                        "COMP-2",
                        "must be DATABASE or FILEGROUP",
                    );
                }
                c.logical_path(&format!("{rf}.logical_path"), &record.logical_path, false);
                c.component_name(&format!("{rf}.name"), &record.name);
                if !seen.insert((record.logical_path.as_str(), record.name.as_str())) {
                    c.fail(
                        rf.clone(),
                        &record.full_path(),
                        "BCD-3",
                        "duplicate component: it is listed twice for this writer",
                    );
                }
                for (k, partial) in record.partial_files.iter().enumerate() {
                    validate_partial_file(&mut c, &format!("{rf}.partial_files[{k}]"), partial);
                }
                for (k, differenced) in record.differenced_files.iter().enumerate() {
                    c.file_set(
                        &format!("{rf}.differenced_files[{k}]"),
                        &differenced.file_set(),
                    );
                }
                for (k, sub) in record.restore_subcomponents.iter().enumerate() {
                    c.logical_path(
                        &format!("{rf}.restore_subcomponents[{k}].logical_path"),
                        &sub.logical_path,
                        false,
                    );
                    c.component_name(&format!("{rf}.restore_subcomponents[{k}].name"), &sub.name);
                }
                for (k, target) in record.new_targets.iter().enumerate() {
                    c.file_set(&format!("{rf}.new_targets[{k}].source"), &target.source);
                    c.absolute(
                        &format!("{rf}.new_targets[{k}].alternate_path"),
                        &target.alternate_path,
                        "RST-FILE-3",
                    );
                }
                for (k, mapping) in record.alternate_mappings_used.iter().enumerate() {
                    c.file_set(
                        &format!("{rf}.alternate_mappings_used[{k}].source"),
                        &mapping.source,
                    );
                    c.absolute(
                        &format!("{rf}.alternate_mappings_used[{k}].destination"),
                        &mapping.destination,
                        "RST-FILE-3",
                    );
                }
                for (k, target) in record.directed_targets.iter().enumerate() {
                    let tf = format!("{rf}.directed_targets[{k}]");
                    c.absolute(&format!("{tf}.source_path"), &target.source_path, "BCD-6");
                    c.absolute(
                        &format!("{tf}.destination_path"),
                        &target.destination_path,
                        "BCD-6",
                    );
                    c.non_empty_text(
                        &format!("{tf}.source_filename"),
                        &target.source_filename,
                        "BCD-6",
                    );
                    c.non_empty_text(
                        &format!("{tf}.destination_filename"),
                        &target.destination_filename,
                        "BCD-6",
                    );
                    if let Err(message) = parse_ranges(&target.source_ranges) {
                        c.fail(
                            format!("{tf}.source_ranges"),
                            &target.source_ranges,
                            "PF-2",
                            message,
                        );
                    }
                    if let Err(message) = parse_ranges(&target.destination_ranges) {
                        c.fail(
                            format!("{tf}.destination_ranges"),
                            &target.destination_ranges,
                            "PF-2",
                            message,
                        );
                    }
                }
                for (k, ranges) in record.ranges_file_overrides.iter().enumerate() {
                    c.absolute(
                        &format!("{rf}.ranges_file_overrides[{k}].ranges_file"),
                        &ranges.ranges_file,
                        "RST-FILE-4",
                    );
                }
                if let Some(failure) = &record.failure
                    && crate::codes::lookup(failure.code).is_none()
                {
                    c.fail(
                        format!("{rf}.failure.code"),
                        &format!("{:#x}", failure.code),
                        "ERR-2",
                        "not a known VSS result code",
                    );
                }
            }
        }
        c.finish("backup components document")
    }
}

fn validate_partial_file(c: &mut Checker, field: &str, partial: &PartialFile) {
    c.absolute(&format!("{field}.path"), &partial.path, "PF-1");
    c.non_empty_text(&format!("{field}.filename"), &partial.filename, "PF-1");
    if partial.filename.contains('/') {
        c.fail(
            format!("{field}.filename"),
            &partial.filename,
            "PF-1",
            "a file name must not contain `/`",
        );
    }
    if let Err(message) = parse_ranges(&partial.ranges) {
        c.fail(format!("{field}.ranges"), &partial.ranges, "PF-2", message);
    }
}

/// The byte ranges of a partial file (PF-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// An inline list of (offset, length) pairs.
    Inline(Vec<(u64, u64)>),
    /// The path of a binary ranges file (little-endian u64 count, then pairs).
    File(String),
}

/// Parses a ranges string: `offset:length[,offset:length...]` in decimal or `0x` hex, or `File=<absolute path>` (PF-2).
pub fn parse_ranges(text: &str) -> Result<Ranges, String> {
    if let Some(path) = text.strip_prefix("File=") {
        check_text(path)?;
        if !path.starts_with('/') {
            return Err("a ranges file must be given by absolute path".into());
        }
        return Ok(Ranges::File(path.to_owned()));
    }
    if text.is_empty() {
        return Err("no ranges given".into());
    }
    let number = |s: &str| -> Result<u64, String> {
        let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse::<u64>(),
        };
        parsed.map_err(|_| format!("`{s}` is not a 64-bit number in decimal or 0x hex"))
    };
    text.split(',')
        .map(|pair| {
            let (offset, length) = pair
                .split_once(':')
                .ok_or_else(|| format!("`{pair}` is not offset:length"))?;
            let (offset, length) = (number(offset.trim())?, number(length.trim())?);
            offset
                .checked_add(length)
                .ok_or_else(|| format!("range {offset}:{length} runs past 2^64"))?;
            Ok((offset, length))
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Ranges::Inline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_pf_2() {
        assert_eq!(
            parse_ranges("64:448,0x1239E8577A:65536"),
            Ok(Ranges::Inline(vec![(64, 448), (0x1239E8577A, 65536)]))
        );
        assert_eq!(
            parse_ranges("File=/var/tmp/r.bin"),
            Ok(Ranges::File("/var/tmp/r.bin".into()))
        );
        assert!(parse_ranges("File=relative").is_err());
        assert!(parse_ranges("12").is_err());
        assert!(parse_ranges("").is_err());
        assert!(parse_ranges("18446744073709551615:2").is_err());
    }

    #[test]
    fn values_are_escaped_and_shortened() {
        assert_eq!(display_value("a\0b"), "\"a\\0b\"");
        assert!(display_value(&"x".repeat(200)).ends_with("..."));
    }
}
