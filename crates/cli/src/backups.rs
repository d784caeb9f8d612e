//! `shadowcopy backup`, `shadowcopy backups list|show|check` and `shadowcopy restore`: the
//! backup application of `shadowcopy-backup` on the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use shadowcopy_backup::{
    BackupOptions, BackupReport, RestoreOptions, RestoreReport, StoredBackup, manifest, stored,
};
use shadowcopy_metadata::selection::ComponentSelector;

use crate::coordinator::{Coordinator, CoordinatorArgs};
use crate::output::Output;
use crate::progress::{TerminalReporter, bytes};
use crate::repo::RepoArgs;
use crate::select::TypeArg;

/// Where copies that are disk images are mounted while a backup reads them (in the backup's own
/// mount namespace).
const BACKUP_RUNTIME_DIR: &str = "/run/shadowcopy/backup";

/// Back up components or volumes into a restic repository, application-consistently.
///
/// The whole VSS backup sequence runs: the writers describe their data, the selected components'
/// writers prepare and freeze, every volume holding their files (and every volume named with
/// --volume) is shadow-copied at one instant, the writers thaw, and the files are read from the
/// shadow copies into one repository snapshot, together with the Backup Components Document and
/// every Writer Metadata Document. Files on those volumes that no writer owns are backed up too.
/// The writers hear that the backup completed (and may truncate their logs) only after the
/// repository has committed it.
///
/// Components are named `WRITER:FULL\PATH` (`shadowcopy writers --components` lists them). With
/// no --component the backup is in volume mode: every writer takes part and the volumes are backed
/// up whole.
///
/// Each backup is one restic snapshot tagged `shadowcopy`, `type=...`, `set=...` and
/// `component=...`; `restic snapshots`, `restic check` and `restic restore` work on it.
///
/// Exit status: 0 when every component was saved; 1 when the backup failed or a component was not
/// saved (its writer vetoed); 2 for a usage error.
#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The backup type.
    #[arg(long = "type", value_enum, default_value = "full")]
    backup_type: TypeArg,
    /// A component to back up, as `WRITER:FULL\PATH`; repeat for more.
    #[arg(long = "component", value_name = "WRITER:PATH")]
    components: Vec<ComponentSelector>,
    /// A volume (mount point) to back up whole; repeat for more.
    #[arg(long = "volume", value_name = "MOUNT_POINT")]
    volumes: Vec<PathBuf>,
    #[command(flatten)]
    coordinator: CoordinatorArgs,
}

/// Look into a repository's backups.
#[derive(Debug, Subcommand)]
pub(crate) enum BackupsCommand {
    /// List the shadowcopy backups of a repository, oldest first.
    List {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Show one backup: type, times, volumes, components with their stamps and results, writers,
    /// sizes, from its stored documents.
    Show {
        #[command(flatten)]
        repo: RepoArgs,
        /// The backup's id, a unique prefix of it (at least 4 hex digits), or `latest`.
        id: String,
    },
    /// Check the repository's structure (and with --read-data every stored byte), and that every
    /// shadowcopy backup's documents are present and valid.
    ///
    /// Exit status: 0 when nothing is wrong, 1 when a problem was found.
    Check {
        #[command(flatten)]
        repo: RepoArgs,
        /// Read and verify every data pack too (slow).
        #[arg(long)]
        read_data: bool,
    },
}

/// Restore a backup: the VSS restore sequence with the writers, or a private copy elsewhere.
///
/// Without --to, the files go back to their original places as each writer's restore method says:
/// the writers are told before (PreRestore: they stop services, close files) and after
/// (PostRestore: they recover, restart). RESTORE_IF_NOT_THERE and RESTORE_IF_CAN_REPLACE fall back
/// to the writer's alternate locations when the original files cannot be replaced;
/// RESTORE_AT_REBOOT stages the files and records a pending restore that
/// `shadowcopy restore --apply-pending` puts in place at the next boot; CUSTOM is not done for the
/// writer, and its procedure is printed. Files no writer owns go back to their places when the
/// whole backup is restored.
///
/// With --to DIR, no writer takes part: every file goes to DIR followed by its original path, and
/// absolute symbolic links into the backup's volumes are pointed into DIR, so the copy never
/// refers to live data. With --to DIR --with-writers, writers that accept new targets take part
/// and are told where their files went (AddNewTarget).
///
/// A restore never writes outside its targets: `..` segments, absolute paths and symbolic links
/// that would lead out of a target are refused.
///
/// Exit status: 0 when every component was restored and every writer finished well; 1 otherwise.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["backup", "apply_pending"])))]
pub(crate) struct RestoreArgs {
    /// The repository (not needed with --apply-pending).
    #[arg(long, short = 'r', env = "RESTIC_REPOSITORY", value_name = "DIR")]
    repo: Option<PathBuf>,
    /// The backup to restore: its id, a unique prefix of it (`shadowcopy backups list`), or
    /// `latest`.
    #[arg(long, value_name = "ID")]
    backup: Option<String>,
    /// Restore only this component (`WRITER:FULL\PATH`); repeat for more.
    #[arg(long = "component", value_name = "WRITER:PATH")]
    components: Vec<ComponentSelector>,
    /// Restore into this directory instead, without the writers.
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    /// With --to: restore to new targets with the writers that accept them
    /// (WRITER_SUPPORTS_NEW_TARGET): they get PreRestore, the new places, and PostRestore; the
    /// components of other writers are not restored.
    #[arg(long, requires = "to")]
    with_writers: bool,
    /// The services of STOP_RESTORE_START writers that are not running have been stopped by hand.
    #[arg(long)]
    services_stopped: bool,
    /// Put the restores staged for the next boot (RESTORE_AT_REBOOT) in place, and exit.
    #[arg(long, conflicts_with_all = ["backup", "to", "components"])]
    apply_pending: bool,
    #[command(flatten)]
    coordinator: CoordinatorArgs,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// `shadowcopy backup`.
pub(crate) fn backup(args: BackupArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let repository = args.repo.open()?;
    let reporter = Arc::new(TerminalReporter::new(out.is_json()));
    let options = BackupOptions {
        backup_type: args.backup_type.into(),
        components: args.components,
        volumes: args.volumes,
        runtime_dir: PathBuf::from(BACKUP_RUNTIME_DIR),
    };
    let report = runtime()?.block_on(async {
        let say = |line: &str| out.notice(line);
        let coordinator = Coordinator::reach(&args.coordinator, &say).await?;
        let result = shadowcopy_backup::run_backup(
            &coordinator.client,
            repository,
            &options,
            reporter.clone(),
        )
        .await;
        coordinator.close().await;
        anyhow::Ok(result?)
    });
    reporter.finish();
    let report = report?;
    out.print(&backup_json(&report), || backup_text(&report));
    Ok(if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn backup_json(report: &BackupReport) -> Value {
    let m = &report.manifest;
    let s = &report.summary;
    json!({
        "backup_id": report.snapshot_id,
        "backup_type": manifest::type_tag(m.backup_type),
        "requested_type": manifest::type_tag(m.requested_type),
        "base": m.base.as_ref().map(|b| &b.snapshot_id),
        "parent": s.parent_id,
        "set_id": m.set_id,
        "component_mode": m.component_mode,
        "volumes": m.volumes,
        "components": report.components.iter().map(|c| json!({
            "writer": c.writer_name,
            "component": c.full_path,
            "succeeded": c.succeeded,
            "failure": c.failure,
        })).collect::<Vec<_>>(),
        "files": {"new": s.files_new, "changed": s.files_changed, "unmodified": s.files_unmodified},
        "bytes": {"processed": s.bytes_processed, "added": s.bytes_added, "stored": s.bytes_stored},
        "duration_s": report.duration.as_secs_f64(),
        "snapshot_set_s": report.snapshot_set_duration.as_secs_f64(),
        "copy_s": s.duration.as_secs_f64(),
        "writers": report.writers.iter().map(|w| json!({
            "name": w.writer_name,
            "state": w.state.name(),
            "failed": w.has_failed(),
            "failure": w.failure().map(|c| c.name),
        })).collect::<Vec<_>>(),
        "notes": m.notes,
    })
}

fn backup_text(report: &BackupReport) -> String {
    let m = &report.manifest;
    let s = &report.summary;
    let volumes: Vec<&str> = m.volumes.iter().map(|v| v.volume.as_str()).collect();
    let mut text = format!(
        "backup {} of {} ({}{})\n",
        report.snapshot_id,
        volumes.join(", "),
        m.backup_type,
        m.base
            .as_ref()
            .map(|b| format!(
                ", based on {}",
                &b.snapshot_id[..12.min(b.snapshot_id.len())]
            ))
            .unwrap_or_default()
    );
    for c in &report.components {
        text.push_str(&format!(
            "  {}:{}  {}\n",
            c.writer_name,
            c.full_path,
            if c.succeeded {
                "saved".to_owned()
            } else {
                format!("NOT SAVED: {}", c.failure.as_deref().unwrap_or("failed"))
            }
        ));
    }
    text.push_str(&format!(
        "  files: {} new, {} changed, {} unmodified; {} read, {} added ({} stored)\n",
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        bytes(s.bytes_processed),
        bytes(s.bytes_added),
        bytes(s.bytes_stored)
    ));
    if let Some(set) = m.set_id {
        text.push_str(&format!(
            "  shadow copy set {set} made in {:.2} s; backup took {:.2} s\n",
            report.snapshot_set_duration.as_secs_f64(),
            report.duration.as_secs_f64()
        ));
    }
    text
}

/// `shadowcopy backups ...`.
pub(crate) fn backups(command: BackupsCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        BackupsCommand::List { repo } => {
            let repository = repo.open()?;
            let listed = stored::list(&repository)?;
            let value: Vec<Value> = listed
                .iter()
                .map(|b| {
                    json!({
                        "backup_id": b.snapshot.id,
                        "time": b.snapshot.time,
                        "host": b.snapshot.hostname,
                        "backup_type": b.tagged.backup_type.map(manifest::type_tag),
                        "set_id": b.tagged.set_id,
                        "volumes": b.snapshot.paths,
                        "components": b.tagged.components,
                    })
                })
                .collect();
            out.print(&Value::Array(value), || {
                if listed.is_empty() {
                    return format!("no shadowcopy backups in {}", repo.repo.display());
                }
                let mut text = format!(
                    "{:<12}  {:<25}  {:<12}  VOLUMES / COMPONENTS\n",
                    "ID", "TIME", "TYPE"
                );
                for b in &listed {
                    let what = if b.tagged.components.is_empty() {
                        b.snapshot.paths.join(", ")
                    } else {
                        b.tagged.components.join(", ")
                    };
                    text.push_str(&format!(
                        "{:<12}  {:<20}  {:<12}  {what}\n",
                        &b.snapshot.id[..12.min(b.snapshot.id.len())],
                        to_seconds(&b.snapshot.time),
                        b.tagged
                            .backup_type
                            .map(manifest::type_tag)
                            .unwrap_or_else(|| "?".into()),
                    ));
                }
                text
            });
            Ok(ExitCode::SUCCESS)
        }
        BackupsCommand::Show { repo, id } => {
            let repository = repo.open()?;
            let backup = StoredBackup::load(&repository, &id)?;
            let value = show_json(&backup);
            out.print(&value, || show_text(&backup));
            Ok(ExitCode::SUCCESS)
        }
        BackupsCommand::Check { repo, read_data } => {
            let repository = repo.open()?;
            let report = repository.check(read_data)?;
            let mut damaged = Vec::new();
            let listed = stored::list(&repository)?;
            for backup in &listed {
                if let Err(error) = StoredBackup::load(&repository, &backup.snapshot.id) {
                    damaged.push(
                        json!({"backup_id": backup.snapshot.id, "problem": error.to_string()}),
                    );
                }
            }
            let ok = report.problems.is_empty() && damaged.is_empty();
            let value = json!({
                "ok": ok,
                "read_data": read_data,
                "snapshots": report.snapshots,
                "packs": report.packs,
                "problems": report.problems,
                "backups_checked": listed.len(),
                "damaged_backups": damaged,
            });
            out.print(&value, || {
                let mut text = format!(
                    "checked {} snapshots, {} packs{}, {} shadowcopy backups: {}\n",
                    report.snapshots,
                    report.packs,
                    if read_data { " (all data read)" } else { "" },
                    listed.len(),
                    if ok { "no problems" } else { "PROBLEMS FOUND" }
                );
                for problem in &report.problems {
                    text.push_str(&format!("  repository: {problem}\n"));
                }
                for d in &damaged {
                    text.push_str(&format!("  backup {}: {}\n", d["backup_id"], d["problem"]));
                }
                text
            });
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// An RFC 3339 time without its fraction of a second, for tables: `2026-12-07T04:27:48Z`.
fn to_seconds(time: &str) -> String {
    match time.split_once('.') {
        Some((seconds, rest)) => {
            let zone = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{seconds}{zone}")
        }
        None => time.to_owned(),
    }
}

fn show_json(backup: &StoredBackup) -> Value {
    let m = &backup.manifest;
    json!({
        "backup_id": backup.snapshot.id,
        "time": backup.snapshot.time,
        "host": m.hostname,
        "started": m.started,
        "backup_type": manifest::type_tag(m.backup_type),
        "requested_type": manifest::type_tag(m.requested_type),
        "component_mode": m.component_mode,
        "base": m.base,
        "set_id": m.set_id,
        "volumes": m.volumes,
        "components": m.components,
        "writers": m.writers,
        "files": backup.snapshot.files_total,
        "bytes": backup.snapshot.bytes_total,
        "bytes_added": backup.snapshot.data_added,
        "parent": backup.snapshot.parent,
        "partial_files": m.partial_files,
        "notes": m.notes,
    })
}

fn show_text(backup: &StoredBackup) -> String {
    let m = &backup.manifest;
    let mut text = format!(
        "backup {}\n  time: {} on {}\n  type: {}{}\n  mode: {}\n",
        backup.snapshot.id,
        to_seconds(&backup.snapshot.time),
        m.hostname,
        m.backup_type,
        m.base
            .as_ref()
            .map(|b| format!(" (based on {} {})", b.backup_type, b.snapshot_id))
            .unwrap_or_default(),
        if m.component_mode {
            "components"
        } else {
            "volumes"
        }
    );
    if let Some(set) = m.set_id {
        text.push_str(&format!("  shadow copy set: {set}\n"));
    }
    if let (Some(files), Some(total), Some(added)) = (
        backup.snapshot.files_total,
        backup.snapshot.bytes_total,
        backup.snapshot.data_added,
    ) {
        text.push_str(&format!(
            "  size: {files} files, {} ({} added)\n",
            bytes(total),
            bytes(added)
        ));
    }
    text.push_str("  volumes:\n");
    for v in &m.volumes {
        text.push_str(&format!(
            "    {}{}\n",
            v.volume,
            v.provider
                .as_ref()
                .map(|p| format!(" (provider {p})"))
                .unwrap_or_default()
        ));
    }
    if !m.components.is_empty() {
        text.push_str("  components:\n");
        for c in &m.components {
            text.push_str(&format!(
                "    {}:{}{}  {}{}\n",
                c.writer_name,
                c.full_path,
                if c.explicit { "" } else { " (implicit)" },
                if c.backed_up { "saved" } else { "NOT SAVED" },
                c.backup_stamp
                    .as_ref()
                    .map(|s| format!(", stamp {s}"))
                    .unwrap_or_default()
            ));
        }
    }
    if !m.writers.is_empty() {
        text.push_str("  writers:\n");
        for w in &m.writers {
            text.push_str(&format!(
                "    {}  {}{}\n",
                w.writer_name,
                w.state,
                w.failure
                    .as_ref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            ));
        }
    }
    for note in &m.notes {
        text.push_str(&format!("  note: {note}\n"));
    }
    text
}

/// `shadowcopy restore`.
pub(crate) fn restore(args: RestoreArgs, out: &Output) -> anyhow::Result<ExitCode> {
    if args.apply_pending {
        let dir = pending_dir(&args.coordinator.state_dir()?);
        let applied = shadowcopy_backup::apply_pending(&dir)?;
        out.print(&serde_json::to_value(&applied)?, || {
            format!(
                "{} pending restores applied, {} files put in place",
                applied.restores.len(),
                applied.files
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    let Some(repo) = args.repo.clone() else {
        anyhow::bail!("--repo (or RESTIC_REPOSITORY) names the repository to restore from");
    };
    let repository = RepoArgs { repo }.open()?;
    let reporter = Arc::new(TerminalReporter::new(out.is_json()));
    let report = runtime()?.block_on(async {
        let say = |line: &str| out.notice(line);
        let (coordinator, state_dir) = if args.to.is_some() && !args.with_writers {
            (None, args.coordinator.state_dir()?)
        } else {
            let coordinator = Coordinator::reach(&args.coordinator, &say).await?;
            let state_dir = coordinator.state_dir.clone();
            (Some(coordinator), state_dir)
        };
        let options = RestoreOptions {
            backup: args.backup.clone().unwrap_or_default(),
            components: args.components.clone(),
            to: args.to.clone(),
            with_writers: args.with_writers,
            services_stopped: args.services_stopped,
            pending_dir: pending_dir(&state_dir),
        };
        let result = shadowcopy_backup::run_restore(
            coordinator.as_ref().map(|c| &c.client),
            repository,
            &options,
            reporter.clone(),
        )
        .await;
        if let Some(coordinator) = coordinator {
            coordinator.close().await;
        }
        anyhow::Ok(result?)
    });
    reporter.finish();
    let report = report?;
    out.print(&restore_json(&report), || restore_text(&report));
    Ok(if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Where reboot-time restores are staged.
fn pending_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("pending-restores")
}

fn restore_json(report: &RestoreReport) -> Value {
    let mut value = serde_json::to_value(report).expect("reports serialize");
    value["succeeded"] = json!(report.succeeded());
    value["duration_s"] = json!(report.duration.as_secs_f64());
    value["writers"] = report
        .writers
        .iter()
        .map(|w| {
            json!({
                "name": w.writer_name,
                "state": w.state.name(),
                "failed": w.has_failed(),
                "failure": w.failure().map(|c| c.name),
                "message": w.application_message,
            })
        })
        .collect();
    value
}

fn restore_text(report: &RestoreReport) -> String {
    let mut text = format!(
        "restored backup {}: {} files, {}\n",
        report.backup,
        report.files,
        bytes(report.bytes)
    );
    for c in &report.components {
        let placement = match &c.placement {
            shadowcopy_backup::Placement::Original => "original place".to_owned(),
            shadowcopy_backup::Placement::Alternate(d) => {
                format!("alternate location {}", d.join(", "))
            }
            shadowcopy_backup::Placement::Directed => "directed targets".to_owned(),
            shadowcopy_backup::Placement::Pending(d) => format!("staged for the next boot in {d}"),
            shadowcopy_backup::Placement::Relocated(d) => format!("under {d}"),
            shadowcopy_backup::Placement::NotRestored => "not restored".to_owned(),
        };
        text.push_str(&format!(
            "  {}:{}  {} -> {}  {} ({} files{})\n",
            c.writer_name,
            c.full_path,
            c.method,
            placement,
            c.status,
            c.files,
            if c.writer_involved {
                ", with its writer"
            } else {
                ""
            }
        ));
        if let Some(message) = &c.message {
            text.push_str(&format!("    {message}\n"));
        }
    }
    if report.unowned_files > 0 {
        text.push_str(&format!(
            "  files no writer owns: {}\n",
            report.unowned_files
        ));
    }
    for w in report.writers.iter().filter(|w| w.has_failed()) {
        text.push_str(&format!(
            "  writer {} ended {}{}\n",
            w.writer_name,
            w.state,
            w.application_message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    for note in &report.notes {
        text.push_str(&format!("  note: {note}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_times_drop_the_fraction_and_keep_the_zone() {
        assert_eq!(
            to_seconds("2026-12-07T04:27:48.552713316Z"),
            "2026-12-07T04:27:48Z"
        );
        assert_eq!(
            to_seconds("2026-12-07T04:27:48+01:00"),
            "2026-12-07T04:27:48+01:00"
        );
    }
}
