//! `run --writer`: checks a writer written by someone else that is already registered with the
//! daemon, through what the protocol shows of it: its Identify answers and registered WMD, and its
//! states across a full backup, an aborted one and one whose freeze is held until the commit window
//! closes. The writer takes part alone (component mode with only its components, SEL-5) on
//! `/sim/...` volumes, so that the checks need no storage; a writer that insists on its data's
//! volumes being in the set (INCONSISTENTSNAPSHOT, ERR-3) will fail the backups here, and the
//! reason says so.

use std::time::Duration;

use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::WriterState;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::selection::{
    BackupRequest, ComponentSelector, WriterSelector, resolve_backup,
};
use shadowcopy_metadata::wmd::Component;
use shadowcopy_metadata::{SnapshotSetId, WriterMetadata};
use shadowcopy_requester::{BackupSession, WriterInfo};
use tokio::time::Instant;

use crate::harness::{Check, Context, Harness, W, ensure, expect_code, expect_state, status};
use crate::writer::Journal;

/// The registered writer the run is about.
async fn target(h: &Harness) -> Result<WriterInfo, String> {
    let subject = h
        .subject
        .as_deref()
        .ok_or("no writer to test was named (--writer)")?;
    let writers = h
        .client
        .admin()
        .list_writers(true)
        .await
        .ctx("Admin.ListWriters")?;
    let matches = |info: &WriterInfo| {
        let status = &info.status;
        status.writer_name == subject
            || status.instance_name.as_deref() == Some(subject)
            || subject.parse() == Ok(status.class_id)
            || subject.parse() == Ok(status.instance_id)
    };
    writers.into_iter().find(matches).ok_or_else(|| {
        format!(
            "no registered writer has the name, instance name, class id or instance id \
             {subject:?}; list the registered writers with Admin.ListWriters"
        )
    })
}

/// The writer as the harness's checks see it (no journal: it is not ours).
fn view(info: &WriterInfo) -> W {
    W {
        name: info.status.writer_name.clone(),
        instance: info.status.instance_id,
        journal: Journal::default(),
        class_id: info.status.class_id,
    }
}

/// The components that select everything the writer has: every selectable component with no
/// selectable ancestor (naming a component together with its selectable ancestor breaks SEL-4;
/// the others come implicitly, SEL-3, SEL-4), or, when none is selectable, its first component,
/// which brings in every required one (SEL-2).
fn select_all(wmd: &WriterMetadata) -> Vec<ComponentSelector> {
    let inside = |set: &Component, c: &Component| {
        let path = set.full_path();
        c.logical_path == path || c.logical_path.starts_with(&format!("{path}\\"))
    };
    let selectable: Vec<&Component> = wmd
        .components
        .iter()
        .filter(|c| c.selectable_for_backup)
        .collect();
    let mut chosen: Vec<&Component> = selectable
        .iter()
        .copied()
        .filter(|c| !selectable.iter().any(|s| inside(s, c)))
        .collect();
    if chosen.is_empty() {
        chosen.extend(wmd.components.first());
    }
    chosen
        .into_iter()
        .map(|c| {
            ComponentSelector::new(
                WriterSelector::InstanceId(wmd.identity.instance_id),
                c.logical_path.clone(),
                c.name.clone(),
            )
        })
        .collect()
}

/// A session through PrepareForBackup with everything of the writer selected (resolved with the
/// selection engine) and `volumes` in the set.
async fn prepared(
    h: &Harness,
    writer: &W,
    volumes: &[String],
) -> Result<
    (
        BackupSession,
        SnapshotSetId,
        Vec<shadowcopy_requester::ComponentKey>,
    ),
    String,
> {
    let mut s = h.session().await?;
    let gathered = s
        .gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    let wmd = crate::harness::find_wmd(&gathered, writer)?;
    let request = BackupRequest::new(select_all(wmd));
    let selection = resolve_backup(&gathered, &request).map_err(|error| {
        format!("the writer's components cannot be selected (spec §8): {error}")
    })?;
    let keys = s
        .apply_selection(&selection)
        .await
        .ctx("AddComponent for the writer's components")?;
    let set = h.start_set(&mut s).await?;
    for volume in volumes {
        s.add_to_snapshot_set(volume, None)
            .await
            .ctx(&format!("AddToSnapshotSet({volume})"))?;
    }
    s.prepare_for_backup().await.ctx("PrepareForBackup")?;
    expect_state(
        &mut s,
        writer,
        WriterState::Stable,
        None,
        "after PrepareForBackup",
    )
    .await?;
    Ok((s, set, keys))
}

/// A full backup that must take the writer to WAITING_FOR_BACKUP_COMPLETE and then STABLE
/// (WST-3, BK-END-1).
async fn backup(h: &Harness, writer: &W, when: &str) -> Check {
    let (mut s, set, keys) = prepared(h, writer, &[h.volume("ok", "v1")]).await?;
    s.do_snapshot_set()
        .await
        .ctx(&format!("DoSnapshotSet ({when})"))?;
    expect_state(
        &mut s,
        writer,
        WriterState::WaitingForBackupComplete,
        None,
        &format!("after DoSnapshotSet ({when})"),
    )
    .await?;
    for key in &keys {
        s.set_backup_succeeded(key, true)
            .await
            .ctx("SetBackupSucceeded")?;
    }
    s.backup_complete().await.ctx("BackupComplete")?;
    expect_state(
        &mut s,
        writer,
        WriterState::Stable,
        None,
        &format!("after BackupComplete ({when})"),
    )
    .await?;
    s.release().await.ctx("release")?;
    h.expect_no_snapshots(set, "BK-END-4").await
}

/// ROLE-6: Identify returns the same WMD every time, byte for byte in canonical JSON, and the same
/// one the writer registered with.
pub(super) async fn identify_is_deterministic(h: &mut Harness) -> Check {
    let info = target(h).await?;
    let writer = view(&info);
    let mut documents = Vec::new();
    for round in ["first", "second"] {
        let mut s = h.client.backup_session().await.ctx("open a session")?;
        s.initialize_for_backup(None)
            .await
            .ctx("InitializeForBackup")?;
        let gathered = s
            .gather_writer_metadata()
            .await
            .ctx(&format!("{round} GatherWriterMetadata"))?;
        documents.push(crate::harness::find_wmd(&gathered, &writer)?.clone());
        s.release()
            .await
            .ctx("release of a discovery-only session")?;
    }
    ensure!(
        documents[0].to_canonical_json() == documents[1].to_canonical_json(),
        "writer {} answered two Identify events with different WMDs; it must build its WMD by the \
         same deterministic algorithm every time (ROLE-6, TS-04)",
        writer.name
    );
    if let Some(mut registered) = info.metadata {
        // The registration may leave the instance id to the daemon (ROLE-7).
        registered.identity.instance_id = writer.instance;
        ensure!(
            registered.to_canonical_json() == documents[0].to_canonical_json(),
            "writer {} answers Identify with another WMD than the one it registered with (ROLE-6)",
            writer.name
        );
    }
    Ok(())
}

/// WMD-1 to WMD-16 and §8: the WMD validates, and its components can be selected for a full
/// backup by the selection engine.
pub(super) async fn wmd_validates(h: &mut Harness) -> Check {
    let info = target(h).await?;
    let writer = view(&info);
    let mut s = h.session().await?;
    let gathered = s
        .gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    let wmd = crate::harness::find_wmd(&gathered, &writer)?;
    wmd.validate()
        .map_err(|error| format!("the WMD breaks a rule of spec §6: {error}"))?;
    let reparsed = WriterMetadata::from_json(&wmd.to_canonical_json())
        .map_err(|error| format!("the WMD does not survive its canonical JSON: {error}"))?;
    ensure!(
        &reparsed == wmd,
        "the WMD changes when written as canonical JSON and read back"
    );
    let selection =
        resolve_backup(&gathered, &BackupRequest::new(select_all(wmd))).map_err(|error| {
            format!("the writer's components cannot be selected (spec §8): {error}")
        })?;
    let selected = selection
        .writer(writer.instance)
        .map_or(0, |w| w.components.len());
    ensure!(
        selected > 0,
        "selecting every component of writer {} includes none of them (SEL-2)",
        writer.name
    );
    s.release().await.ctx("release")
}

/// TS-01, WST-3: a full backup of all the writer's components takes it to
/// WAITING_FOR_BACKUP_COMPLETE, then STABLE after BackupComplete, without failures.
pub(super) async fn full_backup(h: &mut Harness) -> Check {
    let info = target(h).await?;
    let writer = view(&info);
    backup(h, &writer, "a full backup").await
}

/// BK-SNAP-8, BK-ABORT-3: after a backup that fails in CommitSnapshots the writer has been aborted
/// back to STABLE without a failure of its own, and the next backup succeeds.
pub(super) async fn recovers_from_abort(h: &mut Harness) -> Check {
    let info = target(h).await?;
    let writer = view(&info);
    let (mut s, set, _) = prepared(
        h,
        &writer,
        &[h.volume("ok", "v1"), h.volume("fail-at-commit", "v2")],
    )
    .await?;
    expect_code(
        s.do_snapshot_set().await,
        &codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
        "DoSnapshotSet with a provider that fails at CommitSnapshots",
    )?;
    let seen = status(&mut s, &writer).await?;
    ensure!(
        seen.state == WriterState::Stable && seen.failure_code == 0,
        "after the failed set writer {} must have handled Abort and be STABLE without a failure \
         (BK-SNAP-8, BK-ABORT-3); it is {} with 0x{:08X} {:?}",
        writer.name,
        seen.state,
        seen.failure_code,
        seen.application_message
    );
    s.abort_backup().await.ctx("AbortBackup")?;
    s.release().await.ctx("release")?;
    h.expect_no_snapshots(set, "BK-SNAP-8").await?;
    backup(h, &writer, "the backup after an aborted one").await
}

/// BK-SNAP-5, LIMIT-5: a backup whose provider holds the freeze until the commit window closes
/// fails with VSS_E_HOLD_WRITES_TIMEOUT; the writer ends either aborted back to STABLE, or, when its
/// freeze timeout is shorter than the hold, FAILED_AT_FREEZE with VSS_E_WRITERERROR_TIMEOUT; either
/// way the next backup succeeds.
pub(super) async fn recovers_from_held_freeze(h: &mut Harness) -> Check {
    let info = target(h).await?;
    let writer = view(&info);
    let window = h.commit_window.unwrap_or(crate::LIMIT_COMMIT_WINDOW);
    let (mut s, set, _) = prepared(h, &writer, &[h.volume("hang-at-commit", "v1")]).await?;
    let started = Instant::now();
    expect_code(
        s.do_snapshot_set().await,
        &codes::VSS_E_HOLD_WRITES_TIMEOUT,
        "DoSnapshotSet with a provider that hangs in CommitSnapshots",
    )?;
    ensure!(
        started.elapsed() <= window + Duration::from_secs(3),
        "the commit window must end the held freeze within {} ms (LIMIT-5)",
        window.as_millis()
    );
    let seen = status(&mut s, &writer).await?;
    let timed_out = seen.state == WriterState::FailedAtFreeze
        && seen.failure_code == codes::VSS_E_WRITERERROR_TIMEOUT.value;
    let aborted = seen.state == WriterState::Stable && seen.failure_code == 0;
    ensure!(
        timed_out || aborted,
        "after a freeze held for the whole commit window writer {} must be STABLE (aborted) or \
         FAILED_AT_FREEZE with VSS_E_WRITERERROR_TIMEOUT (BK-SNAP-5); it is {} with 0x{:08X} {:?}",
        writer.name,
        seen.state,
        seen.failure_code,
        seen.application_message
    );
    s.abort_backup().await.ctx("AbortBackup")?;
    s.release().await.ctx("release")?;
    h.expect_no_snapshots(set, "BK-SNAP-8").await?;
    backup(h, &writer, "the backup after a held freeze").await
}
