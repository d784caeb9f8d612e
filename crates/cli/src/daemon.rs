//! Commands that ask `shadowcopyd`: `writers`, `providers`, `list`, `delete` and `status`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, logical_path};
use shadowcopy_requester::{Admin, Client, DeleteTarget, SnapshotFilter};

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
    /// Delete a shadow copy, or every shadow copy of a set.
    Delete {
        /// The shadow copy to delete.
        #[arg(long, conflicts_with = "set", required_unless_present = "set")]
        snapshot: Option<SnapshotId>,
        /// The set whose shadow copies to delete.
        #[arg(long)]
        set: Option<SnapshotSetId>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Create a persistent shadow copy set over mount points, with the writers taking part.
    ///
    /// Every registered writer is asked to freeze around the snapshots (volume mode, SEL-6) unless
    /// `--no-writers` is given; the backup type is COPY, so no writer truncates its logs (BT-1).
    /// The shadow copies stay until `shadowcopy delete`; their paths are printed.
    Create {
        /// A mount point to copy; repeat for a multi-volume set (at most 64, LIMIT-1).
        #[arg(long = "volume", value_name = "MOUNT_POINT", required = true)]
        volumes: Vec<String>,
        /// Make the set without writers (crash-consistent, context NAS_ROLLBACK).
        #[arg(long)]
        no_writers: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show the daemon's version, uptime, open sessions and the set in creation.
    Status {
        #[command(flatten)]
        socket: SocketArg,
    },
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
                    })
                })
                .collect();
            out.print(&json!(value), || {
                snapshots
                    .iter()
                    .map(|s| format!("Shadow copy {}\n   Set: {}\n   Volume: {}\n   Path: {}\n   State: {}\n   Attributes: {}\n\n", s.snapshot_id, s.set_id, s.volume, s.snapshot_path.display(), s.state, s.attributes.names().join(", ")))
                    .collect::<String>()
                    + if snapshots.is_empty() { "no shadow copies\n" } else { "" }
            });
        }
        DaemonCommand::Delete {
            snapshot,
            set,
            socket,
        } => {
            let target = match (snapshot, set) {
                (Some(id), _) => DeleteTarget::Snapshot(id),
                (None, Some(set)) => DeleteTarget::Set(set),
                (None, None) => unreachable!("clap requires one of --snapshot and --set"),
            };
            let deleted = admin(&socket)
                .await?
                .delete_snapshots(&target, false)
                .await?;
            out.print(&json!({"deleted": deleted}), || {
                format!("deleted {deleted} shadow copies\n")
            });
        }
        DaemonCommand::Create {
            volumes,
            no_writers,
            socket,
        } => {
            return create(&socket, &volumes, no_writers, out).await;
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
                text
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `shadowcopy create`: one persistent set through the whole backup sequence (B1 to B15).
async fn create(
    socket: &SocketArg,
    volumes: &[String],
    no_writers: bool,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    use shadowcopy_metadata::bcd::BackupState;
    use shadowcopy_metadata::enums::{BackupType, SnapshotAttributes, SnapshotContext};

    let client = Client::connect(&socket.socket).await?;
    let mut session = client.backup_session().await?;
    let context = if no_writers {
        SnapshotContext::NasRollback
    } else {
        SnapshotContext::AppRollback
    };
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
    if !no_writers {
        session.backup_complete().await?;
    }
    let mut listed = Vec::new();
    for (volume, id) in &snapshots {
        let properties = session.snapshot_properties(*id).await?;
        listed.push(
            json!({"volume": volume, "snapshot_id": id, "snapshot_path": properties.snapshot_path}),
        );
    }
    session.release().await?;
    let writers_failed: Vec<_> = failed
        .iter()
        .map(|w| json!({"writer": w.writer_name, "state": w.state.name()}))
        .collect();
    out.print(
        &json!({"set_id": set, "snapshots": listed, "writers_failed": writers_failed}),
        || {
            let mut text = format!("Shadow copy set {set}\n");
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
            text
        },
    );
    Ok(ExitCode::SUCCESS)
}
