//! Restore (spec §22, TS-44): the event side of a restore, without files, since the simulated
//! providers hold no data.

use shadowcopy_metadata::enums::{FileRestoreStatus, WriterState};
use shadowcopy_writer_sdk::EventKind as E;

use crate::harness::{Check, Context, Harness, ensure, expect_events, find_wmd, wait_event};
use crate::writer::DATA_COMPONENT;

/// TS-44 and RST-PREP-3: after a backup of two writers, a restore that selects only the first
/// writer's component sends PreRestore and PostRestore to that writer alone, each with its record
/// (BCD-8); writers stay STABLE throughout a restore (WST-3).
pub(super) async fn ts44_restore(h: &mut Harness) -> Check {
    let a = h.writer("restored", |w| w).await?;
    let b = h.writer("not-restored", |w| w).await?;

    // The backup whose BCD and WMDs the restore starts from (BK-COPY-5).
    let mut p = h.prepared(&[&a, &b], &[h.volume("ok", "v1")]).await?;
    p.session.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    for key in &p.keys {
        p.session
            .set_backup_succeeded(key, true)
            .await
            .ctx("SetBackupSucceeded")?;
    }
    p.session.backup_complete().await.ctx("BackupComplete")?;
    let bcd = p
        .session
        .backup_components()
        .await
        .ctx("GetBackupComponents")?;
    let stored: Vec<_> = p
        .session
        .writers()
        .iter()
        .filter(|wmd| [a.instance, b.instance].contains(&wmd.identity.instance_id))
        .cloned()
        .collect();
    ensure!(stored.len() == 2, "the backup must hold both writers' WMDs");
    p.session.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    wait_event(&b, E::BackupShutdown, "BK-END-4").await?;
    a.journal.clear();
    b.journal.clear();

    let mut r = h
        .client
        .restore_session()
        .await
        .ctx("open a restore session")?;
    r.initialize_for_restore(&bcd, &stored)
        .await
        .ctx("InitializeForRestore")?;
    let running = r
        .gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata (R3)")?;
    find_wmd(&running, &a)?;
    find_wmd(&running, &b)?;
    let key = a.data_key();
    r.select_for_restore(&key, true, None)
        .await
        .ctx("SetSelectedForRestore (SEL-R-1)")?;
    r.pre_restore().await.ctx("PreRestore")?;
    let stable = |statuses: &[shadowcopy_requester::WriterStatus], when: &str| -> Check {
        for w in [&a, &b] {
            let seen = statuses
                .iter()
                .find(|s| s.instance_id == w.instance)
                .ok_or_else(|| format!("GatherWriterStatus does not list writer {}", w.name))?;
            ensure!(
                seen.state == WriterState::Stable && seen.failure_code == 0,
                "{when}, writer {} is {} with 0x{:08X}; writers stay STABLE throughout a restore \
                 (WST-3)",
                w.name,
                seen.state,
                seen.failure_code
            );
        }
        Ok(())
    };
    let statuses = r
        .gather_writer_status()
        .await
        .ctx("GatherWriterStatus (R6)")?;
    stable(&statuses, "after PreRestore")?;
    let pre = a
        .journal
        .first(E::PreRestore)
        .ok_or_else(|| format!("writer {} got no PreRestore (TS-44)", a.name))?;
    ensure!(
        pre.components == [DATA_COMPONENT],
        "PreRestore must carry the writer's own record `{DATA_COMPONENT}` (BCD-8); it carried {:?}",
        pre.components
    );
    r.set_file_restore_status(&key, FileRestoreStatus::All)
        .await
        .ctx("SetFileRestoreStatus (RST-FILE-3)")?;
    r.post_restore().await.ctx("PostRestore")?;
    let statuses = r
        .gather_writer_status()
        .await
        .ctx("GatherWriterStatus (R9)")?;
    stable(&statuses, "after PostRestore")?;
    let restored = r.backup_components().await.ctx("GetBackupComponents")?;
    let status = restored
        .writers()
        .iter()
        .find_map(|w| {
            w.component("", DATA_COMPONENT)
                .filter(|_| w.class_id == a.class_id)
        })
        .map(|c| c.file_restore_status());
    ensure!(
        status == Some(FileRestoreStatus::All),
        "the BCD must record the file restore status ALL for the restored component (RST-FILE-3, \
         TS-44); it records {status:?}"
    );
    r.release().await.ctx("release of the restore session")?;
    expect_events(&a, &[E::PreRestore, E::PostRestore], "TS-44")?;
    expect_events(
        &b,
        &[],
        "RST-PREP-3: no restore events for a writer without selected components",
    )?;
    Ok(())
}
