//! Writer failures, vetoes, timeouts and aborts (spec §22, TS-07 to TS-10, TS-14, TS-16), and the
//! failure states of WST-4 at the events §22 has no scenario for.

use std::time::Duration;

use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ApplicationLevel, SnapshotState, WriterState};
use shadowcopy_writer_sdk::{AbortCause, EventKind as E, WriterFailure};
use tokio::time::Instant;

use super::backup::FULL_SEQUENCE;
use crate::harness::{
    Check, Context, Harness, SETTLE, W, ensure, expect_code, expect_events, expect_never,
    expect_state, find_wmd, first, status, wait_event,
};
use crate::writer::Action;

/// A scripted fatal failure that says it is one.
fn scripted(failure: fn(String) -> WriterFailure, event: &str) -> Action {
    Action::Fail(failure(format!("conformance: scripted {event} failure")))
}

/// How many of the writer's Aborts came from the coordinator (rather than from its own SDK, which
/// aborts the writer itself after a failed Freeze or Thaw or a missed freeze deadline).
fn requested_aborts(w: &W) -> usize {
    w.journal
        .records()
        .iter()
        .filter(|r| r.event == E::Abort && r.abort_cause == Some(AbortCause::Requested))
        .count()
}

/// TS-07: a writer whose Identify fails is missing from the metadata and status lists and gets no
/// further event, while the backup of the others succeeds (BK-INIT-6, WST-1).
pub(super) async fn ts07_identify_fails(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h
        .writer("identify-fails", |w| {
            w.on(
                E::Identify,
                scripted(WriterFailure::non_retryable, "Identify"),
            )
        })
        .await?;
    let mut s = h.session().await?;
    let gathered = s
        .gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    find_wmd(&gathered, &a)?;
    ensure!(
        b.journal.saw(E::Identify),
        "writer {} was never sent Identify (BK-INIT-5)",
        b.name
    );
    ensure!(
        gathered
            .iter()
            .all(|w| w.identity.instance_id != b.instance),
        "writer {} failed Identify but GatherWriterMetadata lists it (BK-INIT-6)",
        b.name
    );
    let statuses = s.gather_writer_status().await.ctx("GatherWriterStatus")?;
    ensure!(
        statuses.iter().all(|st| st.instance_id != b.instance),
        "writer {} failed Identify but GatherWriterStatus lists it (BK-INIT-6, WST-1)",
        b.name
    );
    expect_code(
        s.add_component(&b.data_key()).await,
        &codes::VSS_E_OBJECT_NOT_FOUND,
        "AddComponent for a writer that failed Identify (BK-DISC-3)",
    )?;
    s.add_component(&a.data_key()).await.ctx("AddComponent")?;
    let set = h.start_set(&mut s).await?;
    s.add_to_snapshot_set(&h.volume("ok", "v1"), None)
        .await
        .ctx("AddToSnapshotSet")?;
    s.prepare_for_backup().await.ctx("PrepareForBackup")?;
    s.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    s.backup_complete().await.ctx("BackupComplete")?;
    s.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    expect_events(&a, FULL_SEQUENCE, "TS-07")?;
    expect_events(&b, &[], "TS-07: no event after a failed Identify")?;
    h.expect_no_snapshots(set, "BK-END-4").await
}

/// TS-08: a RETRYABLE veto with a message at PrepareForBackup leaves the writer
/// FAILED_AT_PREPARE_BACKUP with the code and message readable in the status (BK-PREP-5, ERR-4);
/// the PrepareForBackup call itself succeeds. AbortBackup then sends Abort to every writer that got
/// PrepareForBackup, and the release BackupShutdown (BK-ABORT-2).
pub(super) async fn ts08_prepare_backup_veto(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h
        .writer("prepare-veto", |w| {
            w.on(
                E::PrepareForBackup,
                scripted(WriterFailure::retryable, "PrepareForBackup"),
            )
        })
        .await?;
    let mut p = h.prepared(&[&a, &b], &[h.volume("ok", "v1")]).await?;
    let seen = status(&mut p.session, &b).await?;
    ensure!(
        seen.state == WriterState::FailedAtPrepareBackup
            && seen.failure_code == codes::VSS_E_WRITERERROR_RETRYABLE.value,
        "writer {} vetoed PrepareForBackup with RETRYABLE and must be FAILED_AT_PREPARE_BACKUP \
         with 0x{:08X} (WST-4, BK-PREP-5); it is {} with 0x{:08X}",
        b.name,
        codes::VSS_E_WRITERERROR_RETRYABLE.value,
        seen.state,
        seen.failure_code
    );
    ensure!(
        seen.application_message
            .as_deref()
            .is_some_and(|m| m.contains("scripted PrepareForBackup failure")),
        "the writer's failure message must be readable in its status (ERR-4, TS-08); it is {:?}",
        seen.application_message
    );
    expect_state(
        &mut p.session,
        &a,
        WriterState::Stable,
        None,
        "after PrepareForBackup",
    )
    .await?;
    p.session.abort_backup().await.ctx("AbortBackup")?;
    for w in [&a, &b] {
        wait_event(
            w,
            E::Abort,
            "TS-08: every writer that got PrepareForBackup gets Abort",
        )
        .await?;
    }
    p.session.release().await.ctx("release")?;
    for w in [&a, &b] {
        let shutdown = wait_event(w, E::BackupShutdown, "BK-END-4").await?;
        ensure!(
            !shutdown.backup_completed,
            "writer {} must learn from BackupShutdown that the backup failed (BK-END-5)",
            w.name
        );
        expect_never(
            w,
            E::PrepareForSnapshot,
            "BK-ABORT-3: no events after Abort",
        )?;
        expect_never(w, E::Freeze, "BK-ABORT-3")?;
    }
    Ok(())
}

/// TS-14, first half: a failed PrepareForSnapshot makes the writer FAILED_AT_PREPARE_SNAPSHOT but
/// sends it no Abort, and the set is created for the others (BK-SNAP-6).
pub(super) async fn ts14_prepare_snapshot_fails(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h
        .writer("prepare-snapshot-fails", |w| {
            w.on(
                E::PrepareForSnapshot,
                scripted(WriterFailure::non_retryable, "PrepareForSnapshot"),
            )
        })
        .await?;
    let mut p = h.prepared(&[&a, &b], &[h.volume("ok", "v1")]).await?;
    p.session.do_snapshot_set().await.ctx(
        "DoSnapshotSet (a writer failure at PrepareForSnapshot must not fail the set, BK-SNAP-6)",
    )?;
    expect_state(
        &mut p.session,
        &b,
        WriterState::FailedAtPrepareSnapshot,
        Some(&codes::VSS_E_WRITERERROR_NONRETRYABLE),
        "after DoSnapshotSet",
    )
    .await?;
    expect_state(
        &mut p.session,
        &a,
        WriterState::WaitingForBackupComplete,
        None,
        "after DoSnapshotSet",
    )
    .await?;
    let listed = h.snapshots_of(p.set).await?;
    ensure!(
        listed.len() == 1 && listed[0].state == SnapshotState::Created,
        "the set must be created although a writer failed PrepareForSnapshot (BK-SNAP-6)"
    );
    p.session.backup_complete().await.ctx("BackupComplete")?;
    p.session.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    wait_event(&b, E::BackupShutdown, "BK-END-4").await?;
    expect_events(&a, FULL_SEQUENCE, "TS-14")?;
    expect_never(
        &b,
        E::Abort,
        "BK-SNAP-6: no Abort for a PrepareForSnapshot failure",
    )?;
    expect_never(
        &b,
        E::Freeze,
        "a writer that failed an earlier event is not frozen",
    )?;
    Ok(())
}

/// A backup of a healthy writer and one that vetoes Freeze with NONRETRYABLE, through
/// DoSnapshotSet, with the checks of TS-09 common to both branches.
async fn freeze_veto(h: &mut Harness) -> Result<(W, W, crate::harness::Prepared), String> {
    let a = h.writer("a", |w| w).await?;
    let b = h
        .writer("freeze-veto", |w| {
            w.on(E::Freeze, scripted(WriterFailure::non_retryable, "Freeze"))
        })
        .await?;
    let mut p = h.prepared(&[&a, &b], &[h.volume("ok", "v1")]).await?;
    p.session
        .do_snapshot_set()
        .await
        .ctx("DoSnapshotSet (a Freeze veto is advisory, BK-SNAP-7)")?;
    expect_state(
        &mut p.session,
        &b,
        WriterState::FailedAtFreeze,
        Some(&codes::VSS_E_WRITERERROR_NONRETRYABLE),
        "after a Freeze veto",
    )
    .await?;
    expect_state(
        &mut p.session,
        &a,
        WriterState::WaitingForBackupComplete,
        None,
        "after DoSnapshotSet",
    )
    .await?;
    wait_event(&b, E::Abort, "BK-SNAP-7: a vetoing writer is aborted").await?;
    ensure!(
        requested_aborts(&b) == 1,
        "the coordinator must send Abort to writer {} once after its Freeze veto (BK-SNAP-7); it \
         sent it {} times",
        b.name,
        requested_aborts(&b)
    );
    expect_never(&b, E::Thaw, "BK-SNAP-7: Abort replaces Thaw")?;
    expect_never(&b, E::PostSnapshot, "BK-ABORT-3: no events after Abort")?;
    first(&a, E::Thaw)?;
    first(&a, E::PostSnapshot)?;
    Ok((a, b, p))
}

/// TS-09, branch a: the requester ignores the veto, and the healthy writer completes; the vetoing
/// writer gets Abort, no Thaw and no BackupComplete (BK-SNAP-7).
pub(super) async fn ts09_freeze_veto_ignored(h: &mut Harness) -> Check {
    let (a, b, mut p) = freeze_veto(h).await?;
    p.session
        .set_backup_succeeded(&a.data_key(), true)
        .await
        .ctx("SetBackupSucceeded")?;
    p.session.backup_complete().await.ctx("BackupComplete")?;
    expect_state(
        &mut p.session,
        &a,
        WriterState::Stable,
        None,
        "after BackupComplete",
    )
    .await?;
    p.session.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    wait_event(&b, E::BackupShutdown, "BK-END-4").await?;
    expect_events(&a, FULL_SEQUENCE, "TS-09")?;
    expect_never(
        &b,
        E::BackupComplete,
        "TS-09: a vetoing writer gets no BackupComplete",
    )?;
    h.expect_no_snapshots(p.set, "BK-END-4").await
}

/// TS-09, branch b: after the veto the requester calls AbortBackup (BK-ABORT-6). The writer that
/// handled PostSnapshot gets no Abort (BK-ABORT-4), the aborted one no second Abort, nobody gets
/// BackupComplete, and no shadow copy remains after the release.
pub(super) async fn ts09_freeze_veto_aborted(h: &mut Harness) -> Check {
    let (a, b, mut p) = freeze_veto(h).await?;
    p.session.abort_backup().await.ctx("AbortBackup")?;
    p.session.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    wait_event(&b, E::BackupShutdown, "BK-END-4").await?;
    expect_never(&a, E::Abort, "BK-ABORT-4: no Abort after PostSnapshot")?;
    ensure!(
        requested_aborts(&b) == 1,
        "AbortBackup must not send a second Abort to writer {} (BK-ABORT-3); it got {}",
        b.name,
        requested_aborts(&b)
    );
    for w in [&a, &b] {
        expect_never(w, E::BackupComplete, "TS-09 branch b")?;
    }
    h.expect_no_snapshots(p.set, "TS-09 branch b: nothing remains after release")
        .await
}

/// A Thaw veto makes the writer FAILED_AT_THAW and aborts it; it gets no PostSnapshot, and the set
/// completes for the others (BK-SNAP-7, WST-4).
pub(super) async fn ts09_thaw_veto(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h
        .writer("thaw-veto", |w| {
            w.on(E::Thaw, scripted(WriterFailure::retryable, "Thaw"))
        })
        .await?;
    let mut p = h.prepared(&[&a, &b], &[h.volume("ok", "v1")]).await?;
    p.session
        .do_snapshot_set()
        .await
        .ctx("DoSnapshotSet (a Thaw veto is advisory, BK-SNAP-7)")?;
    expect_state(
        &mut p.session,
        &b,
        WriterState::FailedAtThaw,
        Some(&codes::VSS_E_WRITERERROR_RETRYABLE),
        "after a Thaw veto",
    )
    .await?;
    expect_state(
        &mut p.session,
        &a,
        WriterState::WaitingForBackupComplete,
        None,
        "after DoSnapshotSet",
    )
    .await?;
    wait_event(
        &b,
        E::Abort,
        "BK-SNAP-7: a writer whose Thaw fails is aborted",
    )
    .await?;
    expect_never(&b, E::PostSnapshot, "BK-ABORT-3: no events after Abort")?;
    p.session.backup_complete().await.ctx("BackupComplete")?;
    p.session.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    expect_events(&a, FULL_SEQUENCE, "BK-SNAP-2")?;
    wait_event(&b, E::BackupShutdown, "BK-END-4").await?;
    Ok(())
}

/// TS-14, second half: a failed PostSnapshot (with its message) makes the writer
/// FAILED_AT_POST_SNAPSHOT without an Abort, now or after AbortBackup, since it handled PostSnapshot
/// (BK-SNAP-6, BK-ABORT-4); the set is created.
pub(super) async fn ts14_post_snapshot_fails(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h
        .writer("post-snapshot-fails", |w| {
            w.on(
                E::PostSnapshot,
                scripted(WriterFailure::non_retryable, "PostSnapshot"),
            )
        })
        .await?;
    let mut p = h.prepared(&[&a, &b], &[h.volume("ok", "v1")]).await?;
    p.session
        .do_snapshot_set()
        .await
        .ctx("DoSnapshotSet (a writer failure at PostSnapshot must not fail the set, BK-SNAP-6)")?;
    let seen = status(&mut p.session, &b).await?;
    ensure!(
        seen.state == WriterState::FailedAtPostSnapshot
            && seen.failure_code == codes::VSS_E_WRITERERROR_NONRETRYABLE.value
            && seen
                .application_message
                .as_deref()
                .is_some_and(|m| m.contains("scripted PostSnapshot failure")),
        "writer {} must be FAILED_AT_POST_SNAPSHOT with NONRETRYABLE and its message (WST-4, \
         ERR-4); it is {} with 0x{:08X} and message {:?}",
        b.name,
        seen.state,
        seen.failure_code,
        seen.application_message
    );
    let listed = h.snapshots_of(p.set).await?;
    ensure!(
        listed.len() == 1 && listed[0].state == SnapshotState::Created,
        "the set must be created although a writer failed PostSnapshot (BK-SNAP-6)"
    );
    p.session.abort_backup().await.ctx("AbortBackup")?;
    p.session.release().await.ctx("release")?;
    for w in [&a, &b] {
        wait_event(w, E::BackupShutdown, "BK-END-4").await?;
        expect_never(
            w,
            E::Abort,
            "BK-ABORT-4: no Abort after PostSnapshot was handled",
        )?;
    }
    Ok(())
}

/// A failed BackupComplete makes the writer FAILED_AT_BACKUP_COMPLETE (WST-4) while the others
/// become STABLE, and the release still sends BackupShutdown.
pub(super) async fn backup_complete_fails(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h
        .writer("complete-fails", |w| {
            w.on(
                E::BackupComplete,
                scripted(WriterFailure::retryable, "BackupComplete"),
            )
        })
        .await?;
    let mut p = h.prepared(&[&a, &b], &[h.volume("ok", "v1")]).await?;
    p.session.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    p.session
        .backup_complete()
        .await
        .ctx("BackupComplete (a writer's failure is reported in its status, not by the call)")?;
    expect_state(
        &mut p.session,
        &b,
        WriterState::FailedAtBackupComplete,
        Some(&codes::VSS_E_WRITERERROR_RETRYABLE),
        "after BackupComplete",
    )
    .await?;
    expect_state(
        &mut p.session,
        &a,
        WriterState::Stable,
        None,
        "after BackupComplete",
    )
    .await?;
    p.session.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    wait_event(&b, E::BackupShutdown, "BK-END-4").await?;
    Ok(())
}

/// A failed BackupShutdown is recorded as FAILED_AT_BACKUPSHUTDOWN (spec §3, B15; WST-4). No
/// session status exists after the release, so it is read from the Admin service's writer list,
/// which shows each writer's last known state (WST-1, TOOL-1); the other writer is unaffected.
pub(super) async fn backup_shutdown_fails(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h
        .writer("shutdown-fails", |w| {
            w.on(
                E::BackupShutdown,
                scripted(WriterFailure::non_retryable, "BackupShutdown"),
            )
        })
        .await?;
    super::full_backup(h, &[&a, &b], &h.volume("ok", "v1")).await?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    wait_event(&b, E::BackupShutdown, "BK-END-4").await?;
    let deadline = Instant::now() + SETTLE;
    loop {
        let writers = h
            .client
            .admin()
            .list_writers(false)
            .await
            .ctx("Admin.ListWriters")?;
        let state_of = |w: &W| {
            writers
                .iter()
                .find(|info| info.status.instance_id == w.instance)
                .map(|info| (info.status.state, info.status.failure_code))
        };
        let (b_state, a_state) = (state_of(&b), state_of(&a));
        let b_ok = b_state
            == Some((
                WriterState::FailedAtBackupShutdown,
                codes::VSS_E_WRITERERROR_NONRETRYABLE.value,
            ));
        let a_ok = a_state.is_some_and(|(state, _)| !state.is_failed());
        if b_ok && a_ok {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "after a failed BackupShutdown Admin.ListWriters must show writer {} as \
             FAILED_AT_BACKUPSHUTDOWN with NONRETRYABLE and writer {} not failed (WST-4); it shows \
             {:?} and {:?}",
            b.name,
            a.name,
            b_state,
            a_state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A writer that never answers Freeze: at the end of its freeze timeout the coordinator makes it
/// FAILED_AT_FREEZE with VSS_E_WRITERERROR_TIMEOUT and sends it Abort (BK-SNAP-5), while the set
/// completes and every other writer, at its level and at later levels, is frozen and thawed
/// (BK-SNAP-7).
pub(super) async fn ts10_freeze_never_answered(h: &mut Harness) -> Check {
    const TIMEOUT: Duration = Duration::from_millis(1_000);
    let hung = h
        .writer("freeze-hangs", |w| {
            w.freeze_timeout(TIMEOUT).on(E::Freeze, Action::Hang)
        })
        .await?;
    let same_level = h.writer("front-end", |w| w).await?;
    let later_level = h
        .writer("back-end", |w| w.at_level(ApplicationLevel::BackEnd))
        .await?;
    let mut p = h
        .prepared(&[&hung, &same_level, &later_level], &[h.volume("ok", "v1")])
        .await?;
    p.session
        .do_snapshot_set()
        .await
        .ctx("DoSnapshotSet (a writer's freeze timeout is advisory, BK-SNAP-7)")?;
    expect_state(
        &mut p.session,
        &hung,
        WriterState::FailedAtFreeze,
        Some(&codes::VSS_E_WRITERERROR_TIMEOUT),
        "after its Freeze went unanswered",
    )
    .await?;
    let frozen = first(&hung, E::Freeze)?.at;
    let aborted = wait_event(&hung, E::Abort, "BK-SNAP-5").await?.at;
    let window = aborted.saturating_duration_since(frozen);
    ensure!(
        window >= TIMEOUT.mul_f32(0.9) && window <= TIMEOUT + Duration::from_secs(2),
        "writer {} must be aborted when its {} ms freeze timeout runs out (BK-SNAP-5); it was \
         aborted {} ms after Freeze",
        hung.name,
        TIMEOUT.as_millis(),
        window.as_millis()
    );
    expect_never(&hung, E::Thaw, "BK-SNAP-5: Abort replaces Thaw")?;
    for w in [&same_level, &later_level] {
        expect_state(
            &mut p.session,
            w,
            WriterState::WaitingForBackupComplete,
            None,
            "after DoSnapshotSet",
        )
        .await?;
        first(w, E::Thaw)?;
        expect_never(w, E::Abort, "BK-SNAP-7: only the failing writer is aborted")?;
    }
    p.session.backup_complete().await.ctx("BackupComplete")?;
    p.session.release().await.ctx("release")?;
    for w in [&same_level, &later_level] {
        wait_event(w, E::BackupShutdown, "BK-END-4").await?;
        expect_events(w, FULL_SEQUENCE, "BK-SNAP-2")?;
    }
    expect_never(&hung, E::BackupComplete, "WST-4")?;
    Ok(())
}

/// TS-10: a writer with a short freeze timeout is aborted when it runs out while the provider hangs
/// in CommitSnapshots (BK-SNAP-5); when the commit window closes the set fails with
/// VSS_E_HOLD_WRITES_TIMEOUT and the other frozen writer is aborted too (BK-SNAP-8). Nobody is
/// thawed, no shadow copy survives, and BackupComplete is refused (BK-SNAP-9).
pub(super) async fn ts10_freeze_window_expires(h: &mut Harness) -> Check {
    let window = h.commit_window.unwrap_or(crate::LIMIT_COMMIT_WINDOW);
    let short = Duration::from_millis(1_000).min(window / 2);
    let long = window + Duration::from_secs(20);
    let a = h
        .writer("short-window", |w| w.freeze_timeout(short))
        .await?;
    let b = h.writer("long-window", |w| w.freeze_timeout(long)).await?;
    let mut p = h
        .prepared(&[&a, &b], &[h.volume("hang-at-commit", "v1")])
        .await?;
    let started = Instant::now();
    expect_code(
        p.session.do_snapshot_set().await,
        &codes::VSS_E_HOLD_WRITES_TIMEOUT,
        "DoSnapshotSet with a provider that hangs in CommitSnapshots (LIMIT-5)",
    )?;
    let elapsed = started.elapsed();
    expect_state(
        &mut p.session,
        &a,
        WriterState::FailedAtFreeze,
        Some(&codes::VSS_E_WRITERERROR_TIMEOUT),
        "after its freeze window ran out",
    )
    .await?;
    let a_frozen = first(&a, E::Freeze)?.at;
    let a_aborted = wait_event(&a, E::Abort, "BK-SNAP-5").await?.at;
    let b_aborted = wait_event(&b, E::Abort, "BK-SNAP-8").await?.at;
    let a_window = a_aborted.saturating_duration_since(a_frozen);
    ensure!(
        a_window >= short.mul_f32(0.9) && a_window < short + Duration::from_millis(1_500),
        "writer {} must be aborted when its {} ms freeze window runs out, while the provider still \
         hangs (BK-SNAP-5); it was aborted {} ms after Freeze",
        a.name,
        short.as_millis(),
        a_window.as_millis()
    );
    ensure!(
        a_aborted < b_aborted,
        "the writer with the short freeze window must be aborted before the commit window closes \
         and the other writer is aborted (BK-SNAP-5)"
    );
    ensure!(
        elapsed < window + Duration::from_secs(3),
        "DoSnapshotSet took {} ms; the commit window of {} ms must end it (LIMIT-5)",
        elapsed.as_millis(),
        window.as_millis()
    );
    for w in [&a, &b] {
        expect_never(w, E::Thaw, "BK-SNAP-8: a failed set aborts, it never thaws")?;
        expect_never(w, E::PostSnapshot, "BK-SNAP-8")?;
    }
    h.expect_no_snapshots(p.set, "BK-SNAP-8: no shadow copy survives a failed set")
        .await?;
    expect_code(
        p.session.backup_complete().await,
        &codes::VSS_E_BAD_STATE,
        "BackupComplete after a failed DoSnapshotSet (BK-SNAP-9, TS-18)",
    )?;
    p.session.abort_backup().await.ctx("AbortBackup")?;
    p.session.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    wait_event(&b, E::BackupShutdown, "BK-END-4").await?;
    Ok(())
}

/// TS-16: AbortBackup after a successful DoSnapshotSet sends no Abort to writers that handled
/// PostSnapshot (BK-ABORT-4); a second AbortBackup is accepted and changes nothing; BackupComplete
/// is refused afterwards; the release sends BackupShutdown and deletes the shadow copies.
pub(super) async fn ts16_abort_after_snapshot(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h.writer("b", |w| w).await?;
    let mut p = h.prepared(&[&a, &b], &[h.volume("ok", "v1")]).await?;
    p.session.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    p.session.abort_backup().await.ctx("AbortBackup")?;
    p.session
        .abort_backup()
        .await
        .ctx("a second AbortBackup (BK-ABORT-3: aborts may repeat)")?;
    expect_code(
        p.session.backup_complete().await,
        &codes::VSS_E_BAD_STATE,
        "BackupComplete after AbortBackup",
    )?;
    p.session.release().await.ctx("release")?;
    for w in [&a, &b] {
        let shutdown = wait_event(w, E::BackupShutdown, "BK-END-4").await?;
        ensure!(
            !shutdown.backup_completed && shutdown.set_id == Some(p.set),
            "writer {} must get BackupShutdown for set {} without BackupComplete (BK-END-5)",
            w.name,
            p.set
        );
        expect_never(w, E::Abort, "BK-ABORT-4: no Abort after PostSnapshot")?;
        expect_never(w, E::BackupComplete, "BK-ABORT-2")?;
    }
    h.expect_no_snapshots(p.set, "BK-END-4").await
}
