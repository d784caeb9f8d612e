//! Commands that ask `shadowcopyd`: `writers`, `providers`, `list`, `delete`, `create`, `revert`,
//! `status`, `expose` and `unexpose`; and `previous-versions`, which reads its configuration file.

mod previous_versions;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, logical_path};
use shadowcopy_requester::{Admin, Client, DeleteTarget, RequesterError, SnapshotFilter};

use crate::output::Output;

/// Where the daemon listens.
#[derive(Debug, Args)]
pub(crate) struct SocketArg {
    /// The daemon's control socket.
    #[arg(long, env = "SHADOWCOPY_SOCKET", default_value = shadowcopy_protocol::DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// Commands answered by the daemon.
#[derive(Debug, Subcommand)]
pub(crate) enum DaemonCommand {
    /// List the registered writers with their state and last error, like `vssadmin list writers`.
    Writers {
        /// Also list each writer's components as `WRITER:FULL\PATH`, the names `select` and backups take.
        #[arg(long)]
        components: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// List the loaded providers.
    Providers {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// List shadow copies, optionally of one set or one volume.
    List {
        /// Only the shadow copies of this set.
        #[arg(long)]
        set: Option<SnapshotSetId>,
        /// Only the shadow copies of this volume (mount point).
        #[arg(long)]
        volume: Option<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Delete shadow copies: one, a set, the oldest of a volume, or all (DEL-1).
    ///
    /// Exactly one of --snapshot, --set, --oldest and --all is required. A deleted shadow copy
    /// cannot be brought back (SNAP-3). An exposed shadow copy is not deleted unless --force is
    /// given; unexpose it first with `shadowcopy unexpose ID`.
    ///
    /// Prints how many shadow copies were deleted. If the deletion stops part-way, the count and
    /// the first shadow copy that could not be deleted are printed too (with --json, as
    /// `{"deleted": N, "first_failed_snapshot_id": ID}`), the error goes to standard error and the
    /// exit status is 1.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["snapshot", "set", "oldest", "all"])))]
    Delete {
        /// The shadow copy to delete.
        #[arg(long)]
        snapshot: Option<SnapshotId>,
        /// The set whose shadow copies to delete.
        #[arg(long)]
        set: Option<SnapshotSetId>,
        /// The oldest shadow copy of this volume (mount point), by creation time, of any context.
        #[arg(long, value_name = "VOLUME")]
        oldest: Option<String>,
        /// Every shadow copy of every volume, like `vshadow -da`. Asks for no confirmation: spelling
        /// out --all is the confirmation.
        #[arg(long)]
        all: bool,
        /// Also delete exposed shadow copies, unexposing them first.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Create a shadow copy set over mount points, with the writers taking part.
    ///
    /// Every registered writer is asked to freeze around the snapshots (volume mode, SEL-6) unless
    /// `--no-writers` is given; the backup type is COPY, so no writer truncates its logs (BT-1).
    ///
    /// By default the set is persistent (context APP_ROLLBACK, or NAS_ROLLBACK without writers):
    /// the shadow copies stay until `shadowcopy delete`, and their paths are printed.
    ///
    /// With `--auto-release --exec COMMAND` (like `vshadow -exec`) the set lives only while COMMAND
    /// runs (context BACKUP, or FILE_SHARE_BACKUP without writers). COMMAND is run by `/bin/sh -c`
    /// with these variables in its environment: SHADOWCOPY_SET_ID; SHADOWCOPY_VOLUME_COUNT; and
    /// for each volume n = 1, 2, ... in the order given, SHADOWCOPY_VOLUME_<n> (the mount point),
    /// SHADOWCOPY_SNAPSHOT_ID_<n> and SHADOWCOPY_SNAPSHOT_PATH_<n> (where the read-only copy can
    /// be read). When COMMAND exits the session is released, which deletes the copies, and
    /// shadowcopy exits with COMMAND's exit status (128 + N if a signal N ended it).
    ///
    /// With `--client-accessible` the set is persistent and client-accessible (context
    /// CLIENT_ACCESSIBLE, or CLIENT_ACCESSIBLE_WRITERS with writers): each volume keeps at most
    /// `limits.max_client_accessible_per_volume` such copies (CFG-1, 64 by default), and after the
    /// new set is made the oldest beyond that are deleted. Such copies cannot be exposed (EXP-2);
    /// SMB clients see them as Previous Versions of the shared directories of the daemon's
    /// `[[previous_versions]]` entries (`shadowcopy previous-versions smb-conf`).
    Create {
        /// A mount point to copy; repeat for a multi-volume set (at most 64, LIMIT-1).
        #[arg(long = "volume", value_name = "MOUNT_POINT", required = true)]
        volumes: Vec<String>,
        /// Make the set without writers (crash-consistent).
        #[arg(long)]
        no_writers: bool,
        /// Delete the set when COMMAND (given with --exec) has finished.
        #[arg(long, requires = "exec", conflicts_with = "client_accessible")]
        auto_release: bool,
        /// The command to run while the auto-release set exists (with --auto-release).
        #[arg(long, value_name = "COMMAND", requires = "auto_release")]
        exec: Option<String>,
        /// Make the set client-accessible (persistent, capped per volume by CFG-1).
        #[arg(long)]
        client_accessible: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Roll a volume back to one of its persistent shadow copies (REV-1).
    ///
    /// WARNING: this cannot be undone or cancelled. Every change made to the volume since the
    /// shadow copy was created is lost, and the revert goes on even if this command is
    /// interrupted. Only shadow copies of persistent contexts can be reverted to. The volume must
    /// not be in use unless --force-dismount is given.
    Revert {
        /// The shadow copy to roll its volume back to.
        #[arg(value_name = "SNAPSHOT_ID")]
        snapshot: SnapshotId,
        /// Go ahead even if the volume is in use (its users lose their open files).
        #[arg(long)]
        force_dismount: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show the daemon's version, uptime, open sessions, the set in creation and reverts in
    /// progress.
    Status {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Expose a persistent shadow copy read-only on a directory (EXP-1, EXP-4) and print the
    /// directory.
    ///
    /// Only persistent shadow copies (made by `shadowcopy create` without --auto-release) can be
    /// exposed, and client-accessible ones never can (EXP-2): a copy that lives only as long as a
    /// backup session, or that users reach as previous versions, must not also be mounted.
    ///
    /// Without DIR the copy is mounted on the volume's stable directory under the daemon's
    /// `service.expose_dir` (by default /run/shadowcopy/volumes/<volume as systemd-escape --path>,
    /// for example /run/shadowcopy/volumes/srv-db for /srv/db), so backup tools find each volume
    /// at the same path every time; only one copy of a volume can be exposed there at once. DIR
    /// must be an existing, empty directory. The mount stays across daemon restarts until
    /// `shadowcopy unexpose`.
    Expose {
        /// The shadow copy to expose.
        #[arg(value_name = "SNAPSHOT_ID")]
        snapshot: SnapshotId,
        /// The empty directory to mount it on; the volume's stable directory if omitted.
        #[arg(value_name = "DIR")]
        directory: Option<PathBuf>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Unmount an exposed shadow copy (EXP-1); the shadow copy itself stays.
    Unexpose {
        /// The exposed shadow copy.
        #[arg(value_name = "SNAPSHOT_ID")]
        snapshot: SnapshotId,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show client-accessible shadow copies to SMB clients as Previous Versions, through Samba.
    #[command(subcommand)]
    PreviousVersions(previous_versions::PreviousVersionsCommand),
}

async fn admin(socket: &SocketArg) -> anyhow::Result<Admin> {
    let client = Client::connect(&socket.socket).await?;
    Ok(client.admin())
}

pub(crate) fn run(command: DaemonCommand, out: &Output) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(command, out))
}

async fn run_async(command: DaemonCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        DaemonCommand::Writers { components, socket } => {
            let writers = admin(&socket).await?.list_writers(components).await?;
            let value: Vec<_> = writers
                .iter()
                .map(|w| {
                    let s = &w.status;
                    let names: Vec<String> = w
                        .metadata
                        .iter()
                        .flat_map(|m| m.components.iter())
                        .map(|c| format!("{}:{}", s.writer_name, logical_path::full_path(&c.logical_path, &c.name)))
                        .collect();
                    json!({
                        "name": s.writer_name,
                        "class_id": s.class_id,
                        "instance_id": s.instance_id,
                        "instance_name": s.instance_name,
                        "state": s.state.name(),
                        "state_value": s.state.value(),
                        "last_error": shadowcopy_metadata::codes::lookup(s.failure_code).map_or("S_OK", |c| c.name),
                        "last_error_value": s.failure_code,
                        "application_message": s.application_message,
                        "application_level": w.application_level.name(),
                        "freeze_timeout_ms": w.freeze_timeout.as_millis(),
                        "pid": w.pid,
                        "uid": w.uid,
                        "components": names,
                    })
                })
                .collect();
            out.print(&json!(value), || {
                let mut text = String::new();
                for (w, v) in writers.iter().zip(&value) {
                    let s = &w.status;
                    text += &format!(
                        "Writer name: '{}'\n   Writer Id: {}\n   Writer Instance Id: {}\n   State: [{}] {}\n   Last error: {}\n",
                        s.writer_name,
                        s.class_id,
                        s.instance_id,
                        s.state.value(),
                        s.state.short_name(),
                        v["last_error"].as_str().unwrap_or_default(),
                    );
                    for name in v["components"].as_array().into_iter().flatten() {
                        text += &format!("   Component: {}\n", name.as_str().unwrap_or_default());
                    }
                    text += "\n";
                }
                if writers.is_empty() {
                    text += "no writer is registered\n";
                }
                text
            });
        }
        DaemonCommand::Providers { socket } => {
            let providers = admin(&socket).await?.list_providers().await?;
            let value: Vec<_> = providers
                .iter()
                .map(|p| json!({"id": p.id, "name": p.name, "version": p.version, "type": p.provider_type.name(), "builtin": p.builtin}))
                .collect();
            out.print(&json!(value), || {
                providers
                    .iter()
                    .map(|p| format!("Provider name: '{}'\n   Provider type: {}\n   Provider Id: {}\n   Version: {}\n\n", p.name, p.provider_type, p.id, p.version))
                    .collect::<String>()
                    + if providers.is_empty() { "no provider is loaded\n" } else { "" }
            });
        }
        DaemonCommand::List {
            set,
            volume,
            socket,
        } => {
            let filter = SnapshotFilter {
                set_id: set,
                volume,
                context: None,
                snapshot_id: None,
            };
            let snapshots = admin(&socket).await?.list_snapshots(&filter).await?;
            let value: Vec<_> = snapshots
                .iter()
                .map(|s| {
                    json!({
                        "snapshot_id": s.snapshot_id,
                        "set_id": s.set_id,
                        "volume": s.volume,
                        "snapshot_path": s.snapshot_path,
                        "state": s.state.name(),
                        "attributes": s.attributes.names(),
                        "created_unix_ns": s.creation_timestamp.to_unix_nanos().to_string(),
                        "exposed_name": s.exposed_name,
                        "exposed_path": s.exposed_path,
                    })
                })
                .collect();
            out.print(&json!(value), || {
                snapshots
                    .iter()
                    .map(|s| format!("Shadow copy {}\n   Set: {}\n   Volume: {}\n   Path: {}\n   State: {}\n   Attributes: {}\n   Exposed: {}\n\n", s.snapshot_id, s.set_id, s.volume, s.snapshot_path.display(), s.state, s.attributes.names().join(", "), s.exposed_name.as_deref().unwrap_or("no")))
                    .collect::<String>()
                    + if snapshots.is_empty() { "no shadow copies\n" } else { "" }
            });
        }
        DaemonCommand::Delete {
            snapshot,
            set,
            oldest,
            all,
            force,
            socket,
        } => {
            let target = match (snapshot, set, oldest) {
                (Some(id), _, _) => DeleteTarget::Snapshot(id),
                (None, Some(set), _) => DeleteTarget::Set(set),
                (None, None, Some(volume)) => DeleteTarget::OldestOfVolume(volume),
                (None, None, None) if all => DeleteTarget::All,
                (None, None, None) => {
                    unreachable!("clap requires one of --snapshot, --set, --oldest and --all")
                }
            };
            return delete(&socket, &target, force, out).await;
        }
        DaemonCommand::Create {
            volumes,
            no_writers,
            auto_release,
            exec,
            client_accessible,
            socket,
        } => {
            let lifetime = match exec {
                Some(command) if auto_release => Lifetime::AutoRelease { command },
                _ if client_accessible => Lifetime::ClientAccessible,
                _ => Lifetime::Persistent,
            };
            return create(&socket, &volumes, no_writers, lifetime, out).await;
        }
        DaemonCommand::Revert {
            snapshot,
            force_dismount,
            socket,
        } => {
            let admin = admin(&socket).await?;
            // The volume, for the message only; the daemon checks everything itself.
            let filter = SnapshotFilter {
                snapshot_id: Some(snapshot),
                ..SnapshotFilter::default()
            };
            let volume = admin
                .list_snapshots(&filter)
                .await?
                .into_iter()
                .next()
                .map(|s| s.volume);
            admin.revert_volume(snapshot, force_dismount).await?;
            out.print(
                &json!({"reverted": true, "snapshot_id": snapshot, "volume": volume}),
                || match &volume {
                    Some(volume) => format!("{volume} was reverted to shadow copy {snapshot}\n"),
                    None => format!("the volume was reverted to shadow copy {snapshot}\n"),
                },
            );
        }
        DaemonCommand::Expose {
            snapshot,
            directory,
            socket,
        } => {
            // The daemon resolves nothing against the caller's working directory.
            let directory = directory.map(std::path::absolute).transpose()?;
            let exposed = admin(&socket)
                .await?
                .expose_snapshot(
                    snapshot,
                    &shadowcopy_requester::Exposure::Locally { directory },
                )
                .await?;
            out.print(
                &json!({"snapshot_id": snapshot, "exposed_name": exposed}),
                || format!("{exposed}\n"),
            );
        }
        DaemonCommand::PreviousVersions(command) => previous_versions::run(command, out)?,
        DaemonCommand::Unexpose { snapshot, socket } => {
            admin(&socket).await?.unexpose_snapshot(snapshot).await?;
            out.print(&json!({"snapshot_id": snapshot, "unexposed": true}), || {
                format!("shadow copy {snapshot} is no longer exposed\n")
            });
        }
        DaemonCommand::Status { socket } => {
            let status = admin(&socket).await?.get_status().await?;
            let value = json!({
                "daemon_version": status.daemon_version,
                "uptime_seconds": status.uptime.as_secs(),
                "set_in_creation": status.set_in_creation,
                "writers": status.writer_count,
                "providers": status.provider_count,
                "sessions": status.sessions.iter().map(|s| json!({"id": s.session_id, "restore": s.restore, "pid": s.pid, "uid": s.uid, "phase": s.phase})).collect::<Vec<_>>(),
                "reverts_in_progress": status.reverts_in_progress,
            });
            out.print(&value, || {
                let mut text = format!(
                    "shadowcopyd {} (up {} s)\n{} writers, {} providers\nset in creation: {}\n",
                    status.daemon_version,
                    status.uptime.as_secs(),
                    status.writer_count,
                    status.provider_count,
                    status
                        .set_in_creation
                        .map_or("none".into(), |s| s.to_string()),
                );
                for s in &status.sessions {
                    text += &format!(
                        "session {} ({}), pid {}, uid {}, last call {}\n",
                        s.session_id,
                        if s.restore { "restore" } else { "backup" },
                        s.pid,
                        s.uid,
                        s.phase
                    );
                }
                if status.reverts_in_progress.is_empty() {
                    text += "reverts in progress: none\n";
                }
                for volume in &status.reverts_in_progress {
                    text +=
                        &format!("revert in progress: {volume} (REV-1: it cannot be cancelled)\n");
                }
                text
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `shadowcopy delete` (DEL-1): a partial deletion still prints what was deleted, so that a
/// script knows what is gone (SNAP-3), and exits 1 with the daemon's error on standard error.
async fn delete(
    socket: &SocketArg,
    target: &DeleteTarget,
    force: bool,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    match admin(socket).await?.delete_snapshots(target, force).await {
        Ok(deleted) => {
            out.print(
                &json!({"deleted": deleted, "first_failed_snapshot_id": null}),
                || format!("deleted {}\n", copies(deleted)),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let RequesterError::DeleteIncomplete {
                deleted_count,
                first_failed,
                ..
            } = &error
            else {
                return Err(error.into());
            };
            out.print(
                &json!({"deleted": deleted_count, "first_failed_snapshot_id": first_failed}),
                || {
                    format!(
                        "deleted {}; the first that could not be deleted: {}\n",
                        copies(*deleted_count),
                        first_failed.map_or("unknown".to_owned(), |id| id.to_string())
                    )
                },
            );
            shadowcopy_logging::report(tracing::Level::ERROR, &error.to_string());
            Ok(ExitCode::from(1))
        }
    }
}

/// How long the shadow copies of `shadowcopy create` live (CTX-1, CTX-2).
#[derive(Debug)]
enum Lifetime {
    /// Until deleted: APP_ROLLBACK, or NAS_ROLLBACK without writers.
    Persistent,
    /// Persistent and client-accessible, capped per volume by the daemon (CFG-1).
    ClientAccessible,
    /// Until the session is released, after `command` has run: BACKUP, or FILE_SHARE_BACKUP
    /// without writers.
    AutoRelease {
        /// The `/bin/sh -c` command to run while the copies exist.
        command: String,
    },
}

impl Lifetime {
    fn context(&self, writers: bool) -> shadowcopy_metadata::enums::SnapshotContext {
        use shadowcopy_metadata::enums::SnapshotContext as C;
        match (self, writers) {
            (Lifetime::Persistent, true) => C::AppRollback,
            (Lifetime::Persistent, false) => C::NasRollback,
            (Lifetime::ClientAccessible, true) => C::ClientAccessibleWriters,
            (Lifetime::ClientAccessible, false) => C::ClientAccessible,
            (Lifetime::AutoRelease { .. }, true) => C::Backup,
            (Lifetime::AutoRelease { .. }, false) => C::FileShareBackup,
        }
    }
}

/// `shadowcopy create`: one set through the whole backup sequence (B1 to B15), persistent,
/// client-accessible, or auto-release around a command (`vshadow -exec`).
async fn create(
    socket: &SocketArg,
    volumes: &[String],
    no_writers: bool,
    lifetime: Lifetime,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    use shadowcopy_metadata::bcd::BackupState;
    use shadowcopy_metadata::enums::{BackupType, SnapshotAttributes};

    let client = Client::connect(&socket.socket).await?;
    let mut session = client.backup_session().await?;
    let context = lifetime.context(!no_writers);
    session.initialize_for_backup(None).await?;
    session
        .set_context(context, SnapshotAttributes::empty())
        .await?;
    if !no_writers {
        session
            .set_backup_state(BackupState {
                component_mode: false,
                bootable_system_state: false,
                backup_type: BackupType::Copy,
                partial_file_support: false,
            })
            .await?;
        session.gather_writer_metadata().await?;
    }
    let set = session.start_snapshot_set().await?;
    let mut snapshots = Vec::new();
    for volume in volumes {
        snapshots.push((
            volume.clone(),
            session.add_to_snapshot_set(volume, None).await?,
        ));
    }
    if !no_writers {
        session.prepare_for_backup().await?;
    }
    if let Err(error) = session.do_snapshot_set().await {
        // BK-SNAP-9: after a failed DoSnapshotSet the requester still aborts.
        let _ = session.abort_backup().await;
        return Err(error.into());
    }
    let failed: Vec<_> = if no_writers {
        Vec::new()
    } else {
        session
            .gather_writer_status()
            .await?
            .into_iter()
            .filter(|w| w.state.is_failed())
            .collect()
    };
    let mut listed = Vec::new();
    for (volume, id) in &snapshots {
        let properties = session.snapshot_properties(*id).await?;
        listed.push(
            json!({"volume": volume, "snapshot_id": id, "snapshot_path": properties.snapshot_path}),
        );
    }
    // The command runs while the copies exist, before BackupComplete, as `vshadow -exec` does.
    let executed = match &lifetime {
        Lifetime::AutoRelease { command } => Some(run_exec(command, set, &listed).await),
        _ => None,
    };
    if !no_writers {
        session.backup_complete().await?;
    }
    // For an auto-release set this deletes the copies (BK-END-4); a failure to delete is an error
    // even when the command succeeded, since copies are left behind.
    session.release().await?;
    let exit_status = match executed {
        Some(result) => Some(result?),
        None => None,
    };
    let writers_failed: Vec<_> = failed
        .iter()
        .map(|w| json!({"writer": w.writer_name, "state": w.state.name()}))
        .collect();
    let exec = match (&lifetime, exit_status) {
        (Lifetime::AutoRelease { command }, Some(status)) => {
            json!({"command": command, "exit_status": status})
        }
        _ => serde_json::Value::Null,
    };
    out.print(
        &json!({
            "set_id": set,
            "context": context.name(),
            "auto_release": matches!(lifetime, Lifetime::AutoRelease { .. }),
            "snapshots": listed,
            "writers_failed": writers_failed,
            "exec": exec,
        }),
        || {
            let mut text = format!("Shadow copy set {set} ({})\n", context.name());
            for entry in &listed {
                text += &format!(
                    "   {} -> {} ({})\n",
                    entry["volume"].as_str().unwrap_or_default(),
                    entry["snapshot_path"].as_str().unwrap_or_default(),
                    entry["snapshot_id"].as_str().unwrap_or_default()
                );
            }
            for w in &failed {
                text += &format!(
                    "warning: writer {} ended {}; its data in this set is only crash-consistent\n",
                    w.writer_name, w.state
                );
            }
            if let Some(status) = exit_status {
                text += &format!(
                    "the command exited with status {status}; the auto-release shadow copies were deleted\n"
                );
            }
            text
        },
    );
    Ok(exit_status.map_or(ExitCode::SUCCESS, ExitCode::from))
}

/// Runs `command` with `/bin/sh -c`, with the set and each volume's copy in its environment, and
/// returns its exit status (128 + N for a signal N, as shells report it). It runs on a blocking
/// thread so that the session's connection keeps being served while it runs.
async fn run_exec(
    command: &str,
    set: SnapshotSetId,
    listed: &[serde_json::Value],
) -> anyhow::Result<u8> {
    use std::os::unix::process::ExitStatusExt;

    let mut child = std::process::Command::new("/bin/sh");
    child
        .arg("-c")
        .arg(command)
        .env("SHADOWCOPY_SET_ID", set.to_string())
        .env("SHADOWCOPY_VOLUME_COUNT", listed.len().to_string());
    for (n, entry) in listed.iter().enumerate() {
        let n = n + 1;
        let field = |name: &str| entry[name].as_str().unwrap_or_default().to_owned();
        child
            .env(format!("SHADOWCOPY_VOLUME_{n}"), field("volume"))
            .env(format!("SHADOWCOPY_SNAPSHOT_ID_{n}"), field("snapshot_id"))
            .env(
                format!("SHADOWCOPY_SNAPSHOT_PATH_{n}"),
                field("snapshot_path"),
            );
    }
    let status = tokio::task::spawn_blocking(move || child.status())
        .await?
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot run the --exec command {command:?} with /bin/sh: {error}; the shadow \
                 copies are deleted as the session is released"
            )
        })?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(u8::MAX),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        (None, None) => u8::MAX,
    })
}

/// "1 shadow copy", "2 shadow copies".
fn copies(count: u32) -> String {
    if count == 1 {
        "1 shadow copy".to_string()
    } else {
        format!("{count} shadow copies")
    }
}
