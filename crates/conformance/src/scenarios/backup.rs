//! Backup happy path and ordering (spec §22, TS-01 to TS-06, TS-15, TS-31).

use shadowcopy_metadata::bcd::BackupState;
use shadowcopy_metadata::enums::{ApplicationLevel, SnapshotState, WriterState};
use shadowcopy_requester::WriterTarget;
use shadowcopy_writer_sdk::EventKind as E;

use super::full_backup;
use crate::harness::{
    Check, Context, Harness, ensure, expect_events, expect_never, expect_state, find_wmd, first,
    wait_event,
};

/// `to - from` in milliseconds, negative when `to` came first.
fn signed_ms(from: tokio::time::Instant, to: tokio::time::Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1_000.0
    } else {
        -((from - to).as_secs_f64() * 1_000.0)
    }
}

/// The events of a complete backup, Identify left out (TS-01, BK-SNAP-2).
pub(super) const FULL_SEQUENCE: &[E] = &[
    E::PrepareForBackup,
    E::PrepareForSnapshot,
    E::Freeze,
    E::Thaw,
    E::PostSnapshot,
    E::BackupComplete,
    E::BackupShutdown,
];

/// TS-01: every step of a component-mode backup of one writer, with the writer states of WST-3
/// after each step, the shadow copy's states (PROV-ST-1), the BCD, and the auto-release deletion
/// at release (BK-END-4).
pub(super) async fn ts01_full_backup(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let volume = h.volume("ok", "v1");
    let mut s = h.session().await?;
    let gathered = s
        .gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    find_wmd(&gathered, &a)?;
    expect_state(&mut s, &a, WriterState::Stable, None, "after Identify").await?;
    s.add_component(&a.data_key()).await.ctx("AddComponent")?;
    let set = h.start_set(&mut s).await?;
    let snapshot = s
        .add_to_snapshot_set(&volume, None)
        .await
        .ctx("AddToSnapshotSet")?;
    let listed = h.snapshots_of(set).await?;
    ensure!(
        listed.len() == 1
            && listed[0].snapshot_id == snapshot
            && listed[0].state == SnapshotState::Preparing,
        "after AddToSnapshotSet the set must hold one shadow copy {snapshot} in state PREPARING \
         (PROV-ST-1); Admin lists {:?}",
        listed
            .iter()
            .map(|p| (p.snapshot_id, p.state))
            .collect::<Vec<_>>()
    );
    s.prepare_for_backup().await.ctx("PrepareForBackup")?;
    expect_state(
        &mut s,
        &a,
        WriterState::Stable,
        None,
        "after PrepareForBackup",
    )
    .await?;
    s.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    expect_state(
        &mut s,
        &a,
        WriterState::WaitingForBackupComplete,
        None,
        "after DoSnapshotSet",
    )
    .await?;
    let properties = s
        .snapshot_properties(snapshot)
        .await
        .ctx("GetSnapshotProperties")?;
    ensure!(
        properties.set_id == set
            && properties.state == SnapshotState::Created
            && properties.volume == volume,
        "GetSnapshotProperties must show shadow copy {snapshot} of {volume} in set {set} as \
         CREATED after DoSnapshotSet (SNAP-1, PROV-ST-1); it shows {} of {} in set {}",
        properties.state,
        properties.volume,
        properties.set_id
    );
    let bcd = s.backup_components().await.ctx("GetBackupComponents")?;
    ensure!(
        bcd.snapshot_set_id() == Some(set)
            && bcd
                .writer_instance(a.instance)
                .and_then(|w| w.component("", crate::writer::DATA_COMPONENT))
                .is_some(),
        "the BCD must record set {set} and the component added for writer {} (BCD-3, BK-COPY-5)",
        a.name
    );
    s.set_backup_succeeded(&a.data_key(), true)
        .await
        .ctx("SetBackupSucceeded")?;
    s.backup_complete().await.ctx("BackupComplete")?;
    expect_state(
        &mut s,
        &a,
        WriterState::Stable,
        None,
        "after BackupComplete",
    )
    .await?;
    s.release().await.ctx("release")?;
    let shutdown = wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    ensure!(
        shutdown.set_id == Some(set) && shutdown.backup_completed,
        "BackupShutdown must carry set {set} after a completed backup (BK-END-4, BK-END-5); it \
         carried {:?}, completed = {}",
        shutdown.set_id,
        shutdown.backup_completed
    );
    ensure!(
        a.journal.events().first() == Some(&E::Identify),
        "the first event must be Identify (TS-01); writer {} saw {:?}",
        a.name,
        a.journal.events()
    );
    expect_events(&a, FULL_SEQUENCE, "TS-01, BK-SNAP-2")?;
    let prepare = first(&a, E::PrepareForBackup)?;
    ensure!(
        prepare.components == [crate::writer::DATA_COMPONENT],
        "PrepareForBackup must carry exactly the writer's own record `data` (BCD-8); it carried \
         {:?}",
        prepare.components
    );
    let prepare_snapshot = first(&a, E::PrepareForSnapshot)?;
    ensure!(
        prepare_snapshot.volumes.contains(&volume),
        "PrepareForSnapshot must name the set's volume {volume}; it named {:?}",
        prepare_snapshot.volumes
    );
    h.expect_no_snapshots(
        set,
        "BK-END-4: auto-release shadow copies are deleted at release",
    )
    .await
}

/// TS-03: writers at the three application levels are frozen front-end first, then back-end, then
/// system (ROLE-9), and thawed in reverse; every writer's PrepareForSnapshot comes before any
/// Freeze, every Freeze before any Thaw and every Thaw before any PostSnapshot (BK-SNAP-2).
pub(super) async fn ts03_levels(h: &mut Harness) -> Check {
    // Registered in another order than the levels, so that registration order cannot pass for
    // level order.
    let system = h
        .writer("system", |w| w.at_level(ApplicationLevel::System))
        .await?;
    let back = h
        .writer("back-end", |w| w.at_level(ApplicationLevel::BackEnd))
        .await?;
    let front = h
        .writer("front-end", |w| w.at_level(ApplicationLevel::FrontEnd))
        .await?;
    let writers = [&system, &back, &front];
    let mut p = h.prepared(&writers, &[h.volume("ok", "v1")]).await?;
    p.session.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    let at = |w: &crate::harness::W, e: E| first(w, e).map(|r| r.at);
    let (f_front, f_back, f_system) = (
        at(&front, E::Freeze)?,
        at(&back, E::Freeze)?,
        at(&system, E::Freeze)?,
    );
    ensure!(
        f_front < f_back && f_back < f_system,
        "Freeze must reach FRONT_END, then BACK_END, then SYSTEM (ROLE-9, TS-03); relative to \
         the front-end writer it reached the back-end writer at {:+.1} ms and the system writer \
         at {:+.1} ms",
        signed_ms(f_front, f_back),
        signed_ms(f_front, f_system)
    );
    let (t_front, t_back, t_system) = (
        at(&front, E::Thaw)?,
        at(&back, E::Thaw)?,
        at(&system, E::Thaw)?,
    );
    ensure!(
        t_system < t_back && t_back < t_front,
        "Thaw must go in reverse level order: SYSTEM, BACK_END, FRONT_END (ROLE-9 as decided in \
         ARCHITECTURE.md); relative to the system writer it reached the back-end writer at \
         {:+.1} ms and the front-end writer at {:+.1} ms",
        signed_ms(t_system, t_back),
        signed_ms(t_system, t_front)
    );
    for (before, after) in [
        (E::PrepareForSnapshot, E::Freeze),
        (E::Freeze, E::Thaw),
        (E::Thaw, E::PostSnapshot),
    ] {
        let mut last_before = None;
        let mut first_after = None;
        for w in writers {
            let b = at(w, before)?;
            let a = at(w, after)?;
            last_before = Some(last_before.map_or(b, |t: tokio::time::Instant| t.max(b)));
            first_after = Some(first_after.map_or(a, |t: tokio::time::Instant| t.min(a)));
        }
        ensure!(
            last_before < first_after,
            "every writer's {before} must come before any writer's {after} (BK-SNAP-2)"
        );
    }
    for w in writers {
        expect_state(
            &mut p.session,
            w,
            WriterState::WaitingForBackupComplete,
            None,
            "after DoSnapshotSet",
        )
        .await?;
    }
    p.session.backup_complete().await.ctx("BackupComplete")?;
    p.session.release().await.ctx("release")?;
    for w in writers {
        wait_event(w, E::BackupShutdown, "BK-END-4").await?;
        expect_events(w, FULL_SEQUENCE, "BK-SNAP-2")?;
    }
    Ok(())
}

/// TS-05: two full backups back to back get different set ids, and status gathering after
/// BackupComplete works both times (no VSS_E_WRITER_STATUS_NOT_AVAILABLE, WST-5).
pub(super) async fn ts05_back_to_back(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let first = full_backup(h, &[&a], &h.volume("ok", "v1")).await?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    let second = full_backup(h, &[&a], &h.volume("ok", "v1")).await?;
    ensure!(
        first != second,
        "two backups got the same snapshot set id {first} (TS-05)"
    );
    let deadline = tokio::time::Instant::now() + crate::harness::SETTLE;
    while a.journal.count(E::BackupShutdown) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let sets: Vec<_> = a
        .journal
        .records()
        .into_iter()
        .filter(|r| r.event == E::BackupShutdown)
        .map(|r| r.set_id)
        .collect();
    ensure!(
        sets == [Some(first), Some(second)],
        "the two BackupShutdowns must carry sets {first} and {second} in order (BK-END-4); they \
         carried {sets:?}"
    );
    let mut expected = FULL_SEQUENCE.to_vec();
    expected.extend_from_slice(FULL_SEQUENCE);
    expect_events(&a, &expected, "TS-05")?;
    h.expect_no_snapshots(first, "BK-END-4").await?;
    h.expect_no_snapshots(second, "BK-END-4").await
}

/// TS-06: in volume mode no component is added, and every enabled writer that answered Identify
/// still gets the backup events, each with an empty component list (BK-DISC-5, SEL-6). Writers
/// registered by others are disabled for the session (BK-INIT-4) so that the scenario never
/// freezes them.
pub(super) async fn ts06_volume_mode(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h.writer("b", |w| w).await?;
    let volume = h.volume("ok", "v1");
    let mut s = h.client.backup_session().await.ctx("open a session")?;
    s.initialize_for_backup(None)
        .await
        .ctx("InitializeForBackup")?;
    s.set_backup_state(BackupState {
        component_mode: false,
        ..BackupState::default()
    })
    .await
    .ctx("SetBackupState(volume mode)")?;
    let others = h
        .client
        .admin()
        .list_writers(false)
        .await
        .ctx("Admin.ListWriters")?;
    for other in others
        .iter()
        .filter(|o| o.status.class_id != a.class_id && o.status.class_id != b.class_id)
    {
        s.set_writer_enabled(WriterTarget::Class(other.status.class_id), false)
            .await
            .ctx("SetWriterEnabled(false) for a writer outside the scenario")?;
    }
    let gathered = s
        .gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    find_wmd(&gathered, &a)?;
    find_wmd(&gathered, &b)?;
    let set = h.start_set(&mut s).await?;
    s.add_to_snapshot_set(&volume, None)
        .await
        .ctx("AddToSnapshotSet")?;
    s.prepare_for_backup().await.ctx("PrepareForBackup")?;
    s.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    for w in [&a, &b] {
        expect_state(
            &mut s,
            w,
            WriterState::WaitingForBackupComplete,
            None,
            "after DoSnapshotSet in volume mode",
        )
        .await?;
    }
    s.backup_complete().await.ctx("BackupComplete")?;
    s.release().await.ctx("release")?;
    for w in [&a, &b] {
        wait_event(w, E::BackupShutdown, "BK-END-4").await?;
        expect_events(w, FULL_SEQUENCE, "TS-06, BK-DISC-5")?;
        let prepare = first(w, E::PrepareForBackup)?;
        ensure!(
            prepare.components.is_empty(),
            "in volume mode PrepareForBackup must carry no component records (BK-DISC-5); writer \
             {} got {:?}",
            w.name,
            prepare.components
        );
        let snapshot = first(w, E::PrepareForSnapshot)?;
        ensure!(
            snapshot.volumes == [volume.clone()],
            "PrepareForSnapshot must name exactly the set's volume {volume}, so that the writer can \
             judge IsPathAffected (TS-06); writer {} got {:?}",
            w.name,
            snapshot.volumes
        );
    }
    h.expect_no_snapshots(set, "BK-END-4").await
}

/// TS-31: in component mode a writer none of whose components was added gets no PrepareForBackup
/// and no later event (BK-DISC-4, SEL-5), while the selected writer completes.
pub(super) async fn ts31_unselected_writer(h: &mut Harness) -> Check {
    let a = h.writer("selected", |w| w).await?;
    let b = h.writer("unselected", |w| w).await?;
    let set = full_backup(h, &[&a], &h.volume("ok", "v1")).await?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    expect_events(&a, FULL_SEQUENCE, "TS-01")?;
    ensure!(
        b.journal.saw(E::Identify),
        "writer {} must answer Identify (BK-INIT-5)",
        b.name
    );
    expect_events(&b, &[], "TS-31, BK-DISC-4")?;
    h.expect_no_snapshots(set, "BK-END-4").await
}

/// TS-15 without the kill: a session released after DoSnapshotSet and before BackupComplete sends
/// BackupShutdown with the set id to every writer, which handled PostSnapshot and therefore gets
/// no Abort (BK-ABORT-4), and its auto-release shadow copies are deleted (BK-END-4). The writers
/// learn that the backup failed: they never handled BackupComplete (BK-END-5).
pub(super) async fn ts15_release_without_complete(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h.writer("b", |w| w).await?;
    let mut p = h.prepared(&[&a, &b], &[h.volume("ok", "v1")]).await?;
    p.session.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    let listed = h.snapshots_of(p.set).await?;
    ensure!(
        listed.len() == 1 && listed[0].state == SnapshotState::Created,
        "after DoSnapshotSet set {} must hold one CREATED shadow copy; Admin lists {}",
        p.set,
        listed.len()
    );
    p.session.release().await.ctx("release")?;
    for w in [&a, &b] {
        let shutdown = wait_event(w, E::BackupShutdown, "BK-END-4").await?;
        ensure!(
            shutdown.set_id == Some(p.set) && !shutdown.backup_completed,
            "writer {} must get BackupShutdown for set {} without a BackupComplete before it \
             (BK-END-4, BK-END-5); it got set {:?}, completed = {}",
            w.name,
            p.set,
            shutdown.set_id,
            shutdown.backup_completed
        );
        expect_never(w, E::BackupComplete, "BK-END-2")?;
        expect_never(w, E::Abort, "BK-ABORT-4")?;
    }
    h.expect_no_snapshots(p.set, "BK-END-4").await
}
