//! Provider failures at each step of DoSnapshotSet and the commit window (spec §22, TS-11 to TS-13),
//! reached over the wire through the daemon's simulated providers: a volume under
//! `/sim/fail-at-<step>/` fails at that step with VSS_E_UNEXPECTED_PROVIDER_ERROR, one under
//! `/sim/hang-at-<step>/` never answers it.
//!
//! Every set here has two volumes on two providers, a healthy one first, so that each scenario is
//! also TS-12: no shadow copy of the healthy volume may survive either (no partial commit, PROV-R-2).

use std::time::Duration;

use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_writer_sdk::EventKind as E;
use tokio::time::Instant;

use crate::harness::{
    Check, Context, Harness, ensure, expect_code, expect_never, first, wait_event,
};

/// Where in DoSnapshotSet a provider step lies, which decides what the writers must have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// EndPrepareSnapshots: before any writer event of DoSnapshotSet.
    BeforeWriters,
    /// PreCommit, Commit, PostCommit: the writers are frozen.
    WhileFrozen,
    /// PostFinalCommit: the writers have handled PostSnapshot.
    AfterPostSnapshot,
}

/// TS-12/TS-13 at one step: DoSnapshotSet fails with VSS_E_UNEXPECTED_PROVIDER_ERROR; every writer
/// that has not handled PostSnapshot gets Abort and no Thaw (BK-SNAP-8), one that has gets none
/// (BK-ABORT-4); no shadow copy of either volume survives (BK-SNAP-8, PROV-R-2); BackupComplete is
/// refused (BK-SNAP-9, TS-18); AbortBackup, repeated, sends nothing twice; the release sends
/// BackupShutdown to a failed backup (BK-END-5).
async fn provider_fails(h: &mut Harness, step: &str, stage: Stage) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h
        .writer("b", |w| {
            w.at_level(shadowcopy_metadata::enums::ApplicationLevel::BackEnd)
        })
        .await?;
    let volumes = [
        h.volume("ok", "v1"),
        h.volume(&format!("fail-at-{step}"), "v2"),
    ];
    let mut p = h.prepared(&[&a, &b], &volumes).await?;
    expect_code(
        p.session.do_snapshot_set().await,
        &codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
        &format!("DoSnapshotSet with a provider that fails at {step} (TS-13)"),
    )?;
    h.expect_no_snapshots(
        p.set,
        "BK-SNAP-8, PROV-R-2: no shadow copy of any volume survives a failed set",
    )
    .await?;
    for w in [&a, &b] {
        match stage {
            Stage::BeforeWriters => {
                wait_event(
                    w,
                    E::Abort,
                    "BK-SNAP-8: every participating writer gets Abort",
                )
                .await?;
                expect_never(
                    w,
                    E::Freeze,
                    "BK-SNAP-2: EndPrepareSnapshots comes before Freeze",
                )?;
            }
            Stage::WhileFrozen => {
                first(w, E::Freeze)?;
                wait_event(w, E::Abort, "BK-SNAP-8: every frozen writer gets Abort").await?;
                expect_never(w, E::Thaw, "BK-SNAP-8: a failed set aborts, it never thaws")?;
            }
            Stage::AfterPostSnapshot => {
                first(w, E::PostSnapshot)?;
            }
        }
    }
    let aborts_before: Vec<usize> = [&a, &b].iter().map(|w| w.journal.count(E::Abort)).collect();
    expect_code(
        p.session.backup_complete().await,
        &codes::VSS_E_BAD_STATE,
        "BackupComplete after a failed DoSnapshotSet (BK-SNAP-9, BK-END-2, TS-18)",
    )?;
    p.session
        .abort_backup()
        .await
        .ctx("AbortBackup after a failed DoSnapshotSet (BK-SNAP-9)")?;
    p.session.abort_backup().await.ctx("a second AbortBackup")?;
    p.session.release().await.ctx("release")?;
    for (w, before) in [&a, &b].into_iter().zip(aborts_before) {
        let shutdown = wait_event(w, E::BackupShutdown, "BK-END-4").await?;
        ensure!(
            !shutdown.backup_completed && shutdown.set_id == Some(p.set),
            "writer {} must get BackupShutdown for the failed set {} (BK-END-5)",
            w.name,
            p.set
        );
        ensure!(
            w.journal.count(E::Abort) == before,
            "AbortBackup after the failed set sent writer {} another Abort; Abort goes at most once \
             per writer and session (BK-ABORT-3)",
            w.name
        );
        expect_never(w, E::BackupComplete, "BK-END-2")?;
        if stage == Stage::AfterPostSnapshot {
            expect_never(w, E::Abort, "BK-ABORT-4: no Abort after PostSnapshot")?;
        }
    }
    Ok(())
}

/// TS-12a.
pub(super) async fn fail_at_end_prepare(h: &mut Harness) -> Check {
    provider_fails(h, "end-prepare", Stage::BeforeWriters).await
}

/// TS-12b.
pub(super) async fn fail_at_pre_commit(h: &mut Harness) -> Check {
    provider_fails(h, "pre-commit", Stage::WhileFrozen).await
}

/// TS-12c.
pub(super) async fn fail_at_commit(h: &mut Harness) -> Check {
    provider_fails(h, "commit", Stage::WhileFrozen).await
}

/// TS-12d.
pub(super) async fn fail_at_post_commit(h: &mut Harness) -> Check {
    provider_fails(h, "post-commit", Stage::WhileFrozen).await
}

/// TS-12e.
pub(super) async fn fail_at_post_final_commit(h: &mut Harness) -> Check {
    provider_fails(h, "post-final-commit", Stage::AfterPostSnapshot).await
}

/// TS-11 at one step: a provider that never answers inside the commit window (PreCommit, Commit or
/// PostCommit) fails the set when the window closes, with `code` (FLUSH_WRITES_TIMEOUT while
/// flushing, HOLD_WRITES_TIMEOUT while holding, as ARCHITECTURE.md decides); the window is at most
/// 10 s (LIMIT-5), or the configured one when the caller gave it (CFG-10). Every frozen writer is
/// aborted, not thawed, no shadow copy survives, and BackupComplete is refused.
async fn provider_hangs(h: &mut Harness, step: &str, code: &ErrorCode) -> Check {
    let window = h.commit_window.unwrap_or(crate::LIMIT_COMMIT_WINDOW);
    // Longer than the window, so that the commit window, not a freeze window, ends the freeze.
    let freeze = window + Duration::from_secs(20);
    let a = h.writer("a", |w| w.freeze_timeout(freeze)).await?;
    let b = h
        .writer("b", |w| {
            w.freeze_timeout(freeze)
                .at_level(shadowcopy_metadata::enums::ApplicationLevel::BackEnd)
        })
        .await?;
    let volumes = [
        h.volume("ok", "v1"),
        h.volume(&format!("hang-at-{step}"), "v2"),
    ];
    let mut p = h.prepared(&[&a, &b], &volumes).await?;
    let started = Instant::now();
    expect_code(
        p.session.do_snapshot_set().await,
        code,
        &format!("DoSnapshotSet with a provider that hangs in {step} (TS-11, LIMIT-5)"),
    )?;
    let elapsed = started.elapsed();
    let bound = window + Duration::from_secs(3);
    ensure!(
        elapsed <= bound,
        "DoSnapshotSet took {} ms with a provider hanging in {step}; the commit window of {} ms \
         must end it (LIMIT-5{})",
        elapsed.as_millis(),
        window.as_millis(),
        if h.commit_window.is_some() {
            ", CFG-10"
        } else {
            ": at most 10 s"
        }
    );
    if let Some(configured) = h.commit_window {
        ensure!(
            elapsed >= configured.mul_f32(0.95),
            "DoSnapshotSet failed after {} ms, before the configured commit window of {} ms closed \
             (CFG-10)",
            elapsed.as_millis(),
            configured.as_millis()
        );
    }
    for w in [&a, &b] {
        wait_event(w, E::Abort, "TS-11: every frozen writer gets Abort").await?;
        expect_never(w, E::Thaw, "BK-SNAP-8: a failed set aborts, it never thaws")?;
    }
    h.expect_no_snapshots(p.set, "TS-11: no shadow copy exists on any volume")
        .await?;
    expect_code(
        p.session.backup_complete().await,
        &codes::VSS_E_BAD_STATE,
        "BackupComplete after the commit window closed (TS-11, BK-SNAP-9)",
    )?;
    p.session.abort_backup().await.ctx("AbortBackup")?;
    p.session.release().await.ctx("release")?;
    for w in [&a, &b] {
        wait_event(w, E::BackupShutdown, "BK-END-4").await?;
    }
    Ok(())
}

/// TS-11a.
pub(super) async fn hang_at_pre_commit(h: &mut Harness) -> Check {
    provider_hangs(h, "pre-commit", &codes::VSS_E_FLUSH_WRITES_TIMEOUT).await
}

/// TS-11b.
pub(super) async fn hang_at_commit(h: &mut Harness) -> Check {
    provider_hangs(h, "commit", &codes::VSS_E_HOLD_WRITES_TIMEOUT).await
}

/// TS-11c.
pub(super) async fn hang_at_post_commit(h: &mut Harness) -> Check {
    provider_hangs(h, "post-commit", &codes::VSS_E_HOLD_WRITES_TIMEOUT).await
}
