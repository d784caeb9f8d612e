//! Sequencing, contexts and limits (spec §22, TS-04, TS-17 to TS-25, TS-57), and enabling and
//! disabling writers (BK-INIT-4).

use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{SnapshotAttributes, SnapshotContext, SnapshotState, WriterState};
use shadowcopy_metadata::json::Document;
use shadowcopy_requester::{DeleteTarget, SnapshotFilter, WriterTarget};
use shadowcopy_writer_sdk::EventKind as E;

use super::backup::FULL_SEQUENCE;
use crate::harness::{
    Check, Context, Harness, ensure, expect_code, expect_events, expect_state, find_wmd, wait_event,
};

/// TS-18 and TS-21: calls out of VSS order are refused with VSS_E_BAD_STATE, and a refused call
/// does not end the session, which then completes normally.
pub(super) async fn ts18_bad_state(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let bad = &codes::VSS_E_BAD_STATE;

    // BK-INIT-1: InitializeForBackup comes first.
    let mut s = h.client.backup_session().await.ctx("open a session")?;
    expect_code(
        s.add_component(&a.data_key()).await,
        bad,
        "AddComponent as the first call of a session (BK-INIT-1)",
    )?;
    drop(s);

    // BK-INIT-1: only once.
    let mut s = h.session().await?;
    expect_code(
        s.initialize_for_backup(None).await,
        bad,
        "a second InitializeForBackup (BK-INIT-1)",
    )?;
    // TS-21, BK-INIT-5: DoSnapshotSet in the BACKUP context without GatherWriterMetadata.
    expect_code(
        s.do_snapshot_set().await,
        bad,
        "DoSnapshotSet without GatherWriterMetadata in the BACKUP context (TS-21, BK-INIT-5)",
    )?;
    // B9 needs B5.
    expect_code(
        s.prepare_for_backup().await,
        bad,
        "PrepareForBackup without GatherWriterMetadata (B9)",
    )?;
    drop(s);

    let mut s = h.session().await?;
    s.gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    expect_code(
        s.gather_writer_metadata().await,
        bad,
        "a second GatherWriterMetadata (BK-INIT-5)",
    )?;
    expect_code(
        s.backup_complete().await,
        bad,
        "BackupComplete before DoSnapshotSet (B13)",
    )?;
    s.add_component(&a.data_key()).await.ctx("AddComponent")?;
    expect_code(
        s.set_backup_succeeded(&a.data_key(), true).await,
        bad,
        "SetBackupSucceeded before DoSnapshotSet (BK-COPY-4)",
    )?;
    let set = h.start_set(&mut s).await?;
    s.add_to_snapshot_set(&h.volume("ok", "v1"), None)
        .await
        .ctx("AddToSnapshotSet")?;
    s.prepare_for_backup().await.ctx("PrepareForBackup")?;
    // BK-DISC-8: components only until PrepareForBackup; B8: volumes too.
    expect_code(
        s.add_component(&a.data_key()).await,
        bad,
        "AddComponent after PrepareForBackup (BK-DISC-8)",
    )?;
    expect_code(
        s.add_to_snapshot_set(&h.volume("ok", "v2"), None).await,
        bad,
        "AddToSnapshotSet after PrepareForBackup (B8, BK-SNAP-1)",
    )?;
    expect_code(
        s.prepare_for_backup().await,
        bad,
        "a second PrepareForBackup (B9)",
    )?;
    // The refusals did not end the session.
    s.do_snapshot_set()
        .await
        .ctx("DoSnapshotSet after refused calls (a refused call does not end the session)")?;
    s.backup_complete().await.ctx("BackupComplete")?;
    expect_code(
        s.backup_complete().await,
        bad,
        "a second BackupComplete (B13)",
    )?;
    s.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    expect_events(&a, FULL_SEQUENCE, "BK-SNAP-2")?;
    h.expect_no_snapshots(set, "BK-END-4").await
}

/// TS-19: while one session's set is between StartSnapshotSet and the end of DoSnapshotSet, another
/// session's StartSnapshotSet fails with VSS_E_SNAPSHOT_SET_IN_PROGRESS, and the daemon reports
/// the set in creation (LIMIT-4); the retry succeeds once the first set is done.
pub(super) async fn ts19_set_in_progress(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let mut first = h.session().await?;
    first
        .gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    first
        .add_component(&a.data_key())
        .await
        .ctx("AddComponent")?;
    let set = h.start_set(&mut first).await?;
    first
        .add_to_snapshot_set(&h.volume("ok", "v1"), None)
        .await
        .ctx("AddToSnapshotSet")?;
    let status = h.client.admin().get_status().await.ctx("Admin.GetStatus")?;
    ensure!(
        status.set_in_creation == Some(set),
        "Admin.GetStatus must report set {set} in creation (LIMIT-4); it reports {:?}",
        status.set_in_creation
    );
    let mut second = h.session().await?;
    expect_code(
        second.start_snapshot_set().await,
        &codes::VSS_E_SNAPSHOT_SET_IN_PROGRESS,
        "StartSnapshotSet while another set is in creation (TS-19, LIMIT-4)",
    )?;
    first.prepare_for_backup().await.ctx("PrepareForBackup")?;
    first.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    let retried = second
        .start_snapshot_set()
        .await
        .ctx("StartSnapshotSet retried after the first set was created (TS-19)")?;
    ensure!(
        retried != set,
        "the retried set got the id of the first set"
    );
    second
        .release()
        .await
        .ctx("release of the second session")?;
    first.backup_complete().await.ctx("BackupComplete")?;
    first.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    expect_events(&a, FULL_SEQUENCE, "BK-SNAP-2")?;
    Ok(())
}

/// BK-INIT-4: enabling and disabling writer classes and instances takes effect before
/// GatherWriterMetadata, an instance rule wins over a class rule, and later calls have no effect.
pub(super) async fn enable_disable(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let b = h.writer("class-disabled", |w| w).await?;
    let c = h.writer("instance-enabled", |w| w).await?;
    for w in [&a, &b, &c] {
        w.journal.clear();
    }
    let mut s = h.session().await?;
    s.set_writer_enabled(WriterTarget::Class(b.class_id), false)
        .await
        .ctx("SetWriterEnabled(class, false)")?;
    s.set_writer_enabled(WriterTarget::Class(c.class_id), false)
        .await
        .ctx("SetWriterEnabled(class, false)")?;
    s.set_writer_enabled(WriterTarget::Instance(c.instance), true)
        .await
        .ctx("SetWriterEnabled(instance, true)")?;
    let gathered = s
        .gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    find_wmd(&gathered, &a)?;
    find_wmd(&gathered, &c)
        .map_err(|e| format!("{e}; an instance rule must win over a class rule"))?;
    ensure!(
        gathered
            .iter()
            .all(|w| w.identity.instance_id != b.instance),
        "writer {} was disabled by class but GatherWriterMetadata lists it (BK-INIT-4)",
        b.name
    );
    ensure!(
        !b.journal.saw(E::Identify),
        "writer {} was disabled but was sent Identify (BK-INIT-4)",
        b.name
    );
    // BK-INIT-4: from now on enabling and disabling have no effect.
    s.set_writer_enabled(WriterTarget::Class(a.class_id), false)
        .await
        .ctx("SetWriterEnabled after GatherWriterMetadata (accepted, without effect)")?;
    s.add_component(&a.data_key())
        .await
        .ctx("AddComponent for a writer disabled after GatherWriterMetadata")?;
    let set = h.start_set(&mut s).await?;
    s.add_to_snapshot_set(&h.volume("ok", "v1"), None)
        .await
        .ctx("AddToSnapshotSet")?;
    s.prepare_for_backup().await.ctx("PrepareForBackup")?;
    s.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    s.backup_complete().await.ctx("BackupComplete")?;
    s.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    expect_events(&a, FULL_SEQUENCE, "BK-INIT-4: a late disable has no effect")?;
    expect_events(&b, &[], "BK-INIT-4")?;
    expect_events(&c, &[], "SEL-5: enabled but not selected")?;
    h.expect_no_snapshots(set, "BK-END-4").await
}

/// TS-04 and TS-17: while writer A waits for BackupComplete in session 1, a second requester's
/// GatherWriterMetadata gets a byte-identical WMD from it (ROLE-6) and changes nothing: releasing
/// that discovery-only session sends no Abort and no BackupShutdown (TS-17, BK-INIT-7), and
/// session 1 still sees A waiting and completes.
pub(super) async fn ts04_identify_elsewhere(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let mut p = h.prepared(&[&a], &[h.volume("ok", "v1")]).await?;
    p.session.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    let first_wmd = find_wmd(p.session.writers(), &a)?.clone();
    let identifies = a.journal.count(E::Identify);

    let other = shadowcopy_requester::Client::connect(&h.socket)
        .await
        .ctx("connect a second requester")?;
    let mut discovery = other.backup_session().await.ctx("open a second session")?;
    discovery
        .initialize_for_backup(None)
        .await
        .ctx("InitializeForBackup")?;
    let gathered = discovery
        .gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata in the second session")?;
    let second_wmd = find_wmd(&gathered, &a)?;
    ensure!(
        a.journal.count(E::Identify) == identifies + 1,
        "the second session's GatherWriterMetadata must send Identify to writer {} (BK-INIT-5)",
        a.name
    );
    ensure!(
        first_wmd.to_canonical_json() == second_wmd.to_canonical_json(),
        "writer {} answered the second Identify with another WMD (ROLE-6, TS-04)",
        a.name
    );
    discovery
        .release()
        .await
        .ctx("release of the discovery-only session (TS-17)")?;
    expect_state(
        &mut p.session,
        &a,
        WriterState::WaitingForBackupComplete,
        None,
        "in session 1 after another session's Identify (TS-04)",
    )
    .await?;
    ensure!(
        a.journal.events_without_identify()
            == [
                E::PrepareForBackup,
                E::PrepareForSnapshot,
                E::Freeze,
                E::Thaw,
                E::PostSnapshot
            ],
        "the discovery-only session must send no Abort and no BackupShutdown (TS-17); writer {} \
         saw {:?}",
        a.name,
        a.journal.events()
    );
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
    expect_events(&a, FULL_SEQUENCE, "TS-04")?;
    h.expect_no_snapshots(p.set, "BK-END-4").await
}

/// TS-20: a session that added a volume and was released without DoSnapshotSet frees the
/// set-in-creation slot at once (LIMIT-4), and when the next set begins on the same provider the
/// stale preparation is discarded (PROV-SEQ-2): nothing of the first set is left.
pub(super) async fn ts20_released_set(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let mut s = h.session().await?;
    let stale = h.start_set(&mut s).await?;
    s.add_to_snapshot_set(&h.volume("ok", "v1"), None)
        .await
        .ctx("AddToSnapshotSet")?;
    s.release().await.ctx("release without DoSnapshotSet")?;
    let mut p = h.prepared(&[&a], &[h.volume("ok", "v2")]).await?;
    p.session.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    let left = h.snapshots_of(stale).await?;
    ensure!(
        left.is_empty(),
        "set {stale} was released before DoSnapshotSet, but after the next set began {} of its \
         shadow copies are still listed (PROV-SEQ-2, TS-20)",
        left.len()
    );
    let created = h.snapshots_of(p.set).await?;
    ensure!(
        created.len() == 1 && created[0].state == SnapshotState::Created,
        "the next set must be created normally (TS-20)"
    );
    p.session.backup_complete().await.ctx("BackupComplete")?;
    p.session.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    h.expect_no_snapshots(p.set, "BK-END-4").await
}

/// TS-22: in FILE_SHARE_BACKUP and NAS_ROLLBACK writers get no events, and AddComponent,
/// PrepareForBackup and BackupComplete are refused (CTX-4); FILE_SHARE_BACKUP shadow copies are
/// deleted at release, NAS_ROLLBACK ones survive it (CTX-1, CTX-2) until deleted through Admin.
pub(super) async fn ts22_writerless_contexts(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let mut survivors = Vec::new();
    for (context, persistent) in [
        (SnapshotContext::FileShareBackup, false),
        (SnapshotContext::NasRollback, true),
    ] {
        let mut s = h.client.backup_session().await.ctx("open a session")?;
        s.initialize_for_backup(None)
            .await
            .ctx("InitializeForBackup")?;
        s.set_context(context, SnapshotAttributes::empty())
            .await
            .ctx(&format!("SetContext({context})"))?;
        if !persistent {
            // GatherWriterMetadata is optional here (CTX-4); exercise both ways.
            s.gather_writer_metadata()
                .await
                .ctx("GatherWriterMetadata in a writerless context")?;
            ensure!(
                s.add_component(&a.data_key()).await.is_err(),
                "AddComponent must be refused in context {context} (CTX-4)"
            );
        }
        let set = h.start_set(&mut s).await?;
        s.add_to_snapshot_set(&h.volume("ok", &format!("{context}")), None)
            .await
            .ctx("AddToSnapshotSet")?;
        ensure!(
            s.prepare_for_backup().await.is_err(),
            "PrepareForBackup must be refused in context {context} (CTX-4)"
        );
        s.do_snapshot_set()
            .await
            .ctx(&format!("DoSnapshotSet in context {context}"))?;
        ensure!(
            s.backup_complete().await.is_err(),
            "BackupComplete must be refused in context {context} (CTX-4)"
        );
        s.release().await.ctx("release")?;
        if persistent {
            let left = h.snapshots_of(set).await?;
            ensure!(
                left.len() == 1
                    && left[0].attributes.contains(
                        SnapshotAttributes::PERSISTENT | SnapshotAttributes::NO_AUTO_RELEASE
                    ),
                "the {context} shadow copy must survive the release, PERSISTENT and \
                 NO_AUTO_RELEASE (CTX-1, CTX-2); Admin lists {} of set {set}",
                left.len()
            );
            survivors.push(set);
        } else {
            h.expect_no_snapshots(set, "CTX-1: FILE_SHARE_BACKUP is auto-release")
                .await?;
        }
    }
    ensure!(
        a.journal.events_without_identify().is_empty(),
        "writers get no events in writerless contexts (CTX-4, TS-22); writer {} saw {:?}",
        a.name,
        a.journal.events()
    );
    for set in survivors {
        let deleted = h
            .client
            .admin()
            .delete_snapshots(&DeleteTarget::Set(set), false)
            .await
            .ctx("Admin.DeleteSnapshots")?;
        ensure!(
            deleted == 1,
            "DeleteSnapshots of set {set} deleted {deleted}, not 1 (DEL-1)"
        );
        h.expect_no_snapshots(set, "SNAP-3: a deleted shadow copy never comes back")
            .await?;
    }
    Ok(())
}

/// TS-57, the parts without real storage: an APP_ROLLBACK backup (a writer context, CTX-3) makes
/// persistent shadow copies that survive the release (CTX-1, CTX-2); Admin deletes them by id and
/// by set, reports the counts (DEL-1), and a deleted shadow copy is never listed again (SNAP-3).
pub(super) async fn ts57_app_rollback(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let mut s = h.session().await?;
    s.set_context(SnapshotContext::AppRollback, SnapshotAttributes::empty())
        .await
        .ctx("SetContext(APP_ROLLBACK)")?;
    s.gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    s.add_component(&a.data_key()).await.ctx("AddComponent")?;
    let set = h.start_set(&mut s).await?;
    let first = s
        .add_to_snapshot_set(&h.volume("ok", "v1"), None)
        .await
        .ctx("AddToSnapshotSet")?;
    s.add_to_snapshot_set(&h.volume("ok", "v2"), None)
        .await
        .ctx("AddToSnapshotSet")?;
    s.prepare_for_backup().await.ctx("PrepareForBackup")?;
    s.do_snapshot_set().await.ctx("DoSnapshotSet")?;
    s.backup_complete().await.ctx("BackupComplete")?;
    s.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    expect_events(&a, FULL_SEQUENCE, "CTX-3: APP_ROLLBACK involves writers")?;
    let left = h.snapshots_of(set).await?;
    ensure!(
        left.len() == 2
            && left.iter().all(|p| {
                p.state == SnapshotState::Created
                    && p.attributes.contains(
                        SnapshotAttributes::PERSISTENT | SnapshotAttributes::NO_AUTO_RELEASE,
                    )
            }),
        "both APP_ROLLBACK shadow copies of set {set} must survive the release as CREATED, \
         PERSISTENT and NO_AUTO_RELEASE (CTX-1, CTX-2); Admin lists {}",
        left.len()
    );
    let by_context = h
        .client
        .admin()
        .list_snapshots(&SnapshotFilter {
            set_id: Some(set),
            context: Some(SnapshotContext::AppRollback),
            ..SnapshotFilter::default()
        })
        .await
        .ctx("Admin.ListSnapshots(context APP_ROLLBACK)")?;
    ensure!(
        by_context.len() == 2,
        "listing with context APP_ROLLBACK must show both shadow copies of set {set} (SNAP-2); it \
         shows {}",
        by_context.len()
    );
    let admin = h.client.admin();
    let deleted = admin
        .delete_snapshots(&DeleteTarget::Snapshot(first), false)
        .await
        .ctx("Admin.DeleteSnapshots(snapshot)")?;
    ensure!(
        deleted == 1,
        "deleting shadow copy {first} reported {deleted} deleted (DEL-1)"
    );
    let deleted = admin
        .delete_snapshots(&DeleteTarget::Set(set), false)
        .await
        .ctx("Admin.DeleteSnapshots(set)")?;
    ensure!(
        deleted == 1,
        "deleting the rest of set {set} reported {deleted} deleted, not 1 (DEL-1)"
    );
    h.expect_no_snapshots(set, "SNAP-3: a deleted shadow copy never comes back")
        .await?;
    // A second delete finds nothing and says so (docs/protocol.md §6): zero, or not found.
    match admin.delete_snapshots(&DeleteTarget::Set(set), false).await {
        Ok(0) => Ok(()),
        Err(error) if error.code().value == codes::VSS_E_OBJECT_NOT_FOUND.value => Ok(()),
        Ok(count) => Err(format!(
            "a second DeleteSnapshots of set {set} reported {count} deleted (SNAP-3)"
        )),
        Err(error) => Err(format!(
            "a second DeleteSnapshots of set {set} must report 0 or VSS_E_OBJECT_NOT_FOUND: {error}"
        )),
    }
}

/// TS-23: the context ALL is refused for creation, at SetContext or at StartSnapshotSet, with
/// VSS_E_UNSUPPORTED_CONTEXT (CTX-5), and accepted by the Admin queries.
pub(super) async fn ts23_context_all(h: &mut Harness) -> Check {
    let mut s = h.session().await?;
    match s
        .set_context(SnapshotContext::All, SnapshotAttributes::empty())
        .await
    {
        Err(error) => expect_code::<()>(
            Err(error),
            &codes::VSS_E_UNSUPPORTED_CONTEXT,
            "SetContext(ALL) (CTX-5)",
        )?,
        Ok(()) => expect_code(
            s.start_snapshot_set().await,
            &codes::VSS_E_UNSUPPORTED_CONTEXT,
            "StartSnapshotSet in context ALL (CTX-5, TS-23)",
        )?,
    }
    s.release().await.ctx("release")?;
    h.client
        .admin()
        .list_snapshots(&SnapshotFilter {
            context: Some(SnapshotContext::All),
            ..SnapshotFilter::default()
        })
        .await
        .ctx("Admin.ListSnapshots with context ALL (CTX-5: the admin operations accept it)")?;
    Ok(())
}

/// TS-25: the 65th AddToSnapshotSet fails with VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED (LIMIT-1),
/// and an empty set in a writer context succeeds (BK-DISC-7).
pub(super) async fn ts25_limits(h: &mut Harness) -> Check {
    let a = h.writer("a", |w| w).await?;
    let mut s = h.session().await?;
    h.start_set(&mut s).await?;
    for i in 1..=64 {
        s.add_to_snapshot_set(&h.volume("ok", &format!("v{i:02}")), None)
            .await
            .ctx(&format!("AddToSnapshotSet of volume {i} of 64 (LIMIT-1)"))?;
    }
    expect_code(
        s.add_to_snapshot_set(&h.volume("ok", "v65"), None).await,
        &codes::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED,
        "the 65th AddToSnapshotSet (LIMIT-1, TS-25)",
    )?;
    s.release().await.ctx("release")?;

    let mut s = h.session().await?;
    s.gather_writer_metadata()
        .await
        .ctx("GatherWriterMetadata")?;
    s.add_component(&a.data_key()).await.ctx("AddComponent")?;
    let set = h.start_set(&mut s).await?;
    s.prepare_for_backup().await.ctx("PrepareForBackup")?;
    s.do_snapshot_set()
        .await
        .ctx("DoSnapshotSet of an empty set in a writer context (BK-DISC-7, TS-25)")?;
    expect_state(
        &mut s,
        &a,
        WriterState::WaitingForBackupComplete,
        None,
        "after DoSnapshotSet of an empty set",
    )
    .await?;
    s.backup_complete().await.ctx("BackupComplete")?;
    s.release().await.ctx("release")?;
    wait_event(&a, E::BackupShutdown, "BK-END-4").await?;
    h.expect_no_snapshots(set, "BK-DISC-7").await
}
