//! `shadowcopy document`: validates documents and prints their JSON Schemas.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use serde_json::json;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{BackupComponents, DocumentError, WriterMetadata};

use crate::output::Output;

/// The two document kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Kind {
    /// A Writer Metadata Document.
    Wmd,
    /// A Backup Components Document.
    Bcd,
}

/// `shadowcopy document ...`
#[derive(Debug, Subcommand)]
pub(crate) enum DocumentCommand {
    /// Check documents against the spec's rules; each broken rule is named with its field and value.
    Validate {
        /// The kind of the documents; by default it is recognised from the content.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// The document files (JSON); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of a document kind.
    Schema {
        /// Which document.
        #[arg(value_enum)]
        kind: Kind,
    },
}

/// Reads a file, or standard input for `-`.
pub(crate) fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// Recognises the kind of a document from its top-level fields.
fn detect(text: &str) -> Option<Kind> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if value.get("identity").is_some() || value.get("components").is_some() {
        Some(Kind::Wmd)
    } else if value.get("writers").is_some() || value.get("backup_state").is_some() {
        Some(Kind::Bcd)
    } else {
        None
    }
}

fn error_json(error: &DocumentError) -> serde_json::Value {
    let code = error.code();
    let problems: Vec<_> = match error {
        DocumentError::Invalid { errors, .. } => errors
            .iter()
            .map(|e| json!({"field": e.field, "value": e.value, "rule": e.rule, "message": e.message}))
            .collect(),
        other => vec![json!({"field": other.fields().first(), "message": other.to_string()})],
    };
    json!({"code": code.value, "code_name": code.name, "hint": code.action, "problems": problems})
}

fn error_text(error: &DocumentError) -> String {
    match error {
        DocumentError::Invalid { document, errors } => {
            let mut text = format!("invalid {document}:\n");
            for e in errors {
                text += &format!("  - {e}\n");
            }
            text
        }
        other => format!("{other}\n"),
    }
}

pub(crate) fn run(command: DocumentCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        DocumentCommand::Schema { kind } => {
            let schema = match kind {
                Kind::Wmd => WriterMetadata::schema_document(),
                Kind::Bcd => BackupComponents::schema_document(),
            };
            // A schema is JSON either way.
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        DocumentCommand::Validate { kind, files } => {
            let mut results = Vec::new();
            let mut text = String::new();
            let mut all_valid = true;
            for file in &files {
                let content = read_input(file)?;
                let name = file.display().to_string();
                let kind = kind.or_else(|| detect(&content));
                let outcome = match kind {
                    Some(Kind::Wmd) => WriterMetadata::from_json(&content).map(drop),
                    Some(Kind::Bcd) => BackupComponents::from_json(&content).map(drop),
                    None => {
                        all_valid = false;
                        let message =
                            "not recognised as a WMD or a BCD; pass --kind wmd or --kind bcd";
                        text += &format!("{name}: {message}\n");
                        results.push(json!({"file": name, "valid": false, "message": message}));
                        continue;
                    }
                };
                let kind_name = if kind == Some(Kind::Wmd) {
                    "wmd"
                } else {
                    "bcd"
                };
                match outcome {
                    Ok(()) => {
                        text += &format!("{name}: valid {kind_name}\n");
                        results.push(json!({"file": name, "kind": kind_name, "valid": true}));
                    }
                    Err(error) => {
                        all_valid = false;
                        text += &format!("{name}: {}", error_text(&error));
                        let mut entry = error_json(&error);
                        entry["file"] = json!(name);
                        entry["kind"] = json!(kind_name);
                        entry["valid"] = json!(false);
                        results.push(entry);
                    }
                }
            }
            out.print(&json!(results), || text);
            Ok(if all_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
