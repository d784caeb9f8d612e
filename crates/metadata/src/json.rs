//! The canonical JSON form of the documents, and their JSON Schema.
//!
//! Canonical means: the fields in declaration order, compact, UTF-8, with `schema_version` first, so
//! the same document always gives the same bytes. On the wire the WMD and BCD travel as these JSON
//! texts inside protocol messages, just as VSS passes its XML documents as strings (ROLE-4).
//!
//! Reading is strict: the `schema_version` is checked before anything else, unknown fields are refused,
//! and then the document is validated (see [`crate::validate`]), so a caller never holds a document
//! that breaks a rule of the spec.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bcd::BackupComponents;
use crate::validate::DocumentError;
use crate::wmd::WriterMetadata;

/// A document type with a canonical JSON form.
pub trait Document: Serialize + DeserializeOwned + schemars::JsonSchema {
    /// The document's name in messages.
    const NAME: &'static str;

    /// Checks the rules the types cannot express.
    fn check(&self) -> Result<(), DocumentError>;

    /// The canonical JSON text of the document.
    fn to_canonical_json(&self) -> String {
        serde_json::to_string(self).expect("documents contain only JSON-representable values")
    }

    /// The document as indented JSON, for people.
    fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("documents contain only JSON-representable values")
    }

    /// Reads and validates a document from JSON text.
    fn from_json(text: &str) -> Result<Self, DocumentError> {
        check_schema_version(Self::NAME, text)?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let document: Self = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|error| syntax_error(Self::NAME, error.path().to_string(), error.inner()))?;
        deserializer
            .end()
            .map_err(|error| syntax_error(Self::NAME, String::new(), &error))?;
        document.check()?;
        Ok(document)
    }

    /// The JSON Schema of the document.
    fn schema_document() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Self)).expect("schemas are JSON")
    }
}

impl Document for WriterMetadata {
    const NAME: &'static str = "writer metadata document";
    fn check(&self) -> Result<(), DocumentError> {
        self.validate()
    }
}

impl Document for BackupComponents {
    const NAME: &'static str = "backup components document";
    fn check(&self) -> Result<(), DocumentError> {
        self.validate()
    }
}

/// Refuses a document whose `schema_version` is missing or not the one this build reads.
fn check_schema_version(document: &'static str, text: &str) -> Result<(), DocumentError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        schema_version: Option<serde_json::Value>,
    }
    // A text that is not even a JSON object is reported by the full parse, with its position.
    let Ok(probe) = serde_json::from_str::<Probe>(text) else {
        return Ok(());
    };
    let expected = crate::SCHEMA_VERSION;
    match probe.schema_version {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(expected)) => Ok(()),
        Some(other) => Err(DocumentError::SchemaVersion {
            document,
            found: other.to_string(),
            expected,
        }),
        None => Err(DocumentError::SchemaVersion {
            document,
            found: "(missing)".into(),
            expected,
        }),
    }
}

fn syntax_error(document: &'static str, path: String, inner: &serde_json::Error) -> DocumentError {
    DocumentError::Syntax {
        document,
        field: if path.is_empty() { ".".into() } else { path },
        message: inner
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_owned(),
        line: inner.line(),
        column: inner.column(),
    }
}

/// The committed schema files under `docs/schema/`, with their generated content.
pub fn schema_files() -> Vec<(&'static str, String)> {
    let pretty = |value: serde_json::Value| {
        let mut text = serde_json::to_string_pretty(&value).expect("schemas are JSON");
        text.push('\n');
        text
    };
    vec![
        (
            "docs/schema/writer-metadata.schema.json",
            pretty(WriterMetadata::schema_document()),
        ),
        (
            "docs/schema/backup-components.schema.json",
            pretty(BackupComponents::schema_document()),
        ),
    ]
}
