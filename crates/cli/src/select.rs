//! `shadowcopy select`: resolves which components a backup includes, and why, from writers' metadata.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::json;
use shadowcopy_metadata::WriterMetadata;
use shadowcopy_metadata::enums::BackupType;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::selection::{
    BackupRequest, BackupSelection, ComponentSelector, CopyMode, DependencyPolicy, Inclusion,
    Reason, resolve_backup,
};

use crate::document::read_input;
use crate::output::Output;

/// The backup types a selection can be resolved for (BT-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TypeArg {
    /// Everything; the base for later backups.
    Full,
    /// Changes since the last full or incremental backup.
    Incremental,
    /// Changes since the last full backup.
    Differential,
    /// Database log files only.
    Log,
    /// Everything, without touching backup history.
    Copy,
}

impl From<TypeArg> for BackupType {
    fn from(value: TypeArg) -> Self {
        match value {
            TypeArg::Full => BackupType::Full,
            TypeArg::Incremental => BackupType::Incremental,
            TypeArg::Differential => BackupType::Differential,
            TypeArg::Log => BackupType::Log,
            TypeArg::Copy => BackupType::Copy,
        }
    }
}

/// Arguments of `shadowcopy select`.
#[derive(Debug, Args)]
pub(crate) struct SelectArgs {
    /// A writer's metadata document (JSON); repeat for several writers.
    #[arg(long = "writer", value_name = "WMD", required = true)]
    writers: Vec<PathBuf>,
    /// The backup type, which decides how each file set is copied (INC-2, SEL-7).
    #[arg(long = "type", value_enum, default_value = "full")]
    backup_type: TypeArg,
    /// Volume mode: ignore selectability and include every writer without components (SEL-6).
    #[arg(long)]
    volume_mode: bool,
    /// Include bootable system state: every system-state writer takes part (SEL-8).
    #[arg(long)]
    system_state: bool,
    /// Refuse a selection whose components depend on unselected ones, instead of adding them (DEP-1).
    #[arg(long)]
    refuse_missing_dependencies: bool,
    /// Components as `WRITER:FULL\PATH` (writer name or class id, then logical path and name).
    components: Vec<String>,
}

fn reason_text(reason: &Reason) -> String {
    match reason {
        Reason::Requested => "requested".into(),
        Reason::Required => "required: not selectable and no selectable ancestor (SEL-2)".into(),
        Reason::InSetOf { set } => format!("member of the set of `{set}` (SEL-3, SEL-4)"),
        Reason::DependencyOf { writer, component } => {
            format!("`{writer}:{component}` depends on it (DEP-1)")
        }
        Reason::SystemState => "part of bootable system state (SEL-8)".into(),
    }
}

fn selection_text(selection: &BackupSelection) -> String {
    let mut text = String::new();
    for writer in &selection.writers {
        text += &format!(
            "writer {} ({}), {} backup\n",
            writer.writer_name, writer.class_id, writer.effective_backup_type
        );
        for note in &writer.notes {
            text += &format!("  note: {note}\n");
        }
        for component in &writer.components {
            let how = match &component.inclusion {
                Inclusion::Explicit => "explicit",
                Inclusion::Implicit { .. } => "implicit",
            };
            text += &format!(
                "  {how:<8} {:<32} {}\n",
                component.full_path(),
                reason_text(&component.reason)
            );
            for file in &component.files {
                let copy = match file.copy {
                    CopyMode::Whole => "copy whole",
                    CopyMode::ChangedOnly => "copy changes",
                    CopyMode::Skip => "skip",
                };
                let recursive = if file.recursive { " (recursive)" } else { "" };
                text += &format!(
                    "             {copy:<12} {}/{}{recursive}\n",
                    file.path, file.filespec
                );
            }
        }
    }
    for remote in &selection.remote_dependencies {
        text += &format!(
            "remote dependency: {}:{} needs {}\\{} on host {} (DEP-2)\n",
            remote.writer_name,
            remote.component,
            remote.target_logical_path,
            remote.target_name,
            remote.host
        );
    }
    if selection.writers.is_empty() {
        text += "no writer takes part\n";
    }
    text
}

pub(crate) fn run(args: SelectArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let writers = args
        .writers
        .iter()
        .map(|path| {
            let text = read_input(path)?;
            WriterMetadata::from_json(&text)
                .with_context(|| format!("{} is not a valid WMD", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let selected = args
        .components
        .iter()
        .map(|text| {
            text.parse::<ComponentSelector>()
                .map_err(|error| anyhow::anyhow!("`{text}`: {error}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = BackupRequest {
        backup_type: args.backup_type.into(),
        component_mode: !args.volume_mode,
        bootable_system_state: args.system_state,
        selected,
        dependencies: if args.refuse_missing_dependencies {
            DependencyPolicy::Refuse
        } else {
            DependencyPolicy::IncludeTargets
        },
    };
    match resolve_backup(&writers, &request) {
        Ok(selection) => {
            out.print(&serde_json::to_value(&selection)?, || {
                selection_text(&selection)
            });
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let code = error.code();
            let problems: Vec<_> = error
                .problems()
                .iter()
                .map(|p| json!({"rule": p.rule, "writer": p.writer, "component": p.component, "message": p.message}))
                .collect();
            let value = json!({"code": code.value, "code_name": code.name, "problems": problems});
            out.print(&value, || {
                let mut text = String::from("the selection is refused:\n");
                for problem in error.problems() {
                    text += &format!("  - {problem}\n");
                }
                text
            });
            Ok(ExitCode::from(1))
        }
    }
}
