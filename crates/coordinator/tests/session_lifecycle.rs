//! Session release and its side effects (BK-END-4, BK-END-6, TS-15, TS-20, CTX-2) and the windows
//! in which writers may edit their BCD records (BCD-7, BCD-8, BCD-11).

mod common;

use std::sync::Arc;

use common::{Behavior, Env, gathered, prepared, status_of, test_config};
use shadowcopy_coordinator::WriterEventKind;
use shadowcopy_metadata::bcd::{Party, Phase};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ApplicationLevel, SnapshotContext, SnapshotState, WriterState};

use WriterEventKind as K;

/// TS-15, BK-END-4, BK-END-6: a requester that disappears after DoSnapshotSet (the daemon drops
/// its session) still causes BackupShutdown with the set id and no BackupComplete, and its
/// auto-release copies are deleted; APP_ROLLBACK copies are persistent and survive (CTX-2).
#[tokio::test(start_paused = true)]
async fn dropped_session_releases_auto_release_copies_and_keeps_persistent_ones() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);

    let mut session = prepared(&env, &["/srv"]).await;
    let auto_set = session.snapshot_set_id().unwrap();
    session.do_snapshot_set().await.unwrap();
    drop(session);
    env.coord.wait_background().await;
    assert_eq!(writer.count(K::BackupComplete), 0);
    assert_eq!(
        writer.received().last().unwrap().event,
        shadowcopy_coordinator::WriterEvent::BackupShutdown {
            set: Some(auto_set)
        }
    );
    assert_eq!(env.surviving_snapshots(), 0);

    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.set_context(SnapshotContext::AppRollback).unwrap();
    session.gather_writer_metadata().await.unwrap();
    common::add_first_components(&mut session);
    let persistent_set = session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();
    drop(session);
    env.coord.wait_background().await;
    assert_eq!(writer.count(K::BackupShutdown), 2);
    let left = env
        .coord
        .snapshots(SnapshotContext::AppRollback)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].set_id, persistent_set);
    assert_eq!(left[0].state, SnapshotState::Created);
    env.finish().await;
}

/// BK-END-6: a session dropped outside any runtime is still released, on a thread of its own.
#[test]
fn session_dropped_outside_a_runtime_is_still_released() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let session = runtime.block_on(async {
        let mut session = prepared(&env, &["/srv"]).await;
        session.do_snapshot_set().await.unwrap();
        session
    });
    drop(runtime);
    drop(session);
    let fresh = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    fresh.block_on(env.finish());
    assert_eq!(writer.kinds().last(), Some(&K::BackupShutdown));
    assert_eq!(env.surviving_snapshots(), 0);
}

/// TS-20, PROV-SEQ-2: a set abandoned after AddToSnapshotSet is never mentioned to the provider
/// (no AbortSnapshots); the next set's BeginPrepareSnapshot carries a new id and the stale
/// preparation is discarded.
#[tokio::test(start_paused = true)]
async fn abandoned_set_is_not_aborted_at_the_provider() {
    let env = Env::new(test_config(), &["sim"]);
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    let first = session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    session.release().await.unwrap();
    let events = env.log.events_of("sim");
    assert!(!events.contains(&"AbortSnapshots".into()), "{events:?}");
    assert!(!events.contains(&"DeleteSnapshots".into()), "{events:?}");
    // The provider still holds the preparation, but it will never be a shadow copy: not listed.
    assert!(!env.providers[0].snapshots().is_empty());
    assert!(
        env.coord
            .snapshots(SnapshotContext::All)
            .await
            .unwrap()
            .is_empty()
    );

    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    let second = session.start_snapshot_set().unwrap();
    assert_ne!(first, second);
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    assert!(
        env.log
            .events_of("sim")
            .contains(&"discarded stale preparation".into())
    );
    assert!(
        env.providers[0]
            .snapshots()
            .iter()
            .all(|r| r.set_id == second)
    );
    session.release().await.unwrap();
    env.finish().await;
}

/// BCD-7, BCD-11: a writer's edits in PrepareForBackup and PostSnapshot are applied; the same kind
/// of edit sent back with Freeze or BackupComplete is refused with VSS_E_BAD_STATE and changes
/// nothing, even when the writer's own editor was told the wrong phase.
#[tokio::test(start_paused = true)]
async fn writer_bcd_edits_outside_their_windows_are_refused() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    writer.on(
        K::PrepareForBackup,
        Behavior::Edit(Arc::new(|c| {
            c.edit(Party::Writer, Phase::PrepareForBackup, "", "data")
                .unwrap()
                .set_backup_stamp("lsn:100")
                .unwrap();
        })),
    );
    writer.on(
        K::Freeze,
        Behavior::Edit(Arc::new(|c| {
            // A writer that lies to its own editor about the phase.
            c.edit(Party::Writer, Phase::PostSnapshot, "", "data")
                .unwrap()
                .set_backup_metadata("written while frozen")
                .unwrap();
        })),
    );
    writer.on(
        K::PostSnapshot,
        Behavior::Edit(Arc::new(|c| {
            c.edit(Party::Writer, Phase::PostSnapshot, "", "data")
                .unwrap()
                .set_backup_stamp("lsn:200")
                .unwrap();
        })),
    );
    writer.on(
        K::BackupComplete,
        Behavior::Edit(Arc::new(|c| {
            c.edit(Party::Writer, Phase::PostSnapshot, "", "data")
                .unwrap()
                .set_backup_metadata("too late")
                .unwrap();
        })),
    );
    let writer = env.add(writer);
    let mut session = prepared(&env, &["/srv"]).await;
    let record = |s: &shadowcopy_coordinator::BackupSession| {
        s.backup_components()
            .unwrap()
            .writer_instance(writer.id())
            .unwrap()
            .components()[0]
            .clone()
    };
    assert_eq!(record(&session).backup_stamp(), Some("lsn:100"));

    session.do_snapshot_set().await.unwrap();
    let after = record(&session);
    assert_eq!(after.backup_stamp(), Some("lsn:200"));
    assert_eq!(after.backup_metadata(), None, "the Freeze edit was refused");
    // The refusal is recorded; the Freeze itself succeeded, so the writer is not failed.
    let status = status_of(&session, &writer);
    assert_eq!(status.state, WriterState::WaitingForBackupComplete);
    let failure = status.failure.unwrap();
    assert_eq!(failure.code, codes::VSS_E_BAD_STATE);
    assert!(failure.message.contains("Freeze"), "{}", failure.message);

    session
        .set_backup_succeeded(writer.id(), "", "data", true)
        .unwrap();
    session.backup_complete().await.unwrap();
    assert_eq!(record(&session).backup_metadata(), None);
    let failure = status_of(&session, &writer).failure.unwrap();
    assert_eq!(failure.code, codes::VSS_E_BAD_STATE);
    assert!(failure.message.contains("BCD-7"), "{}", failure.message);
    assert!(
        failure.message.contains("BackupComplete"),
        "{}",
        failure.message
    );
    assert_eq!(record(&session).backup_succeeded(), Some(true));
    session.release().await.unwrap();
    env.finish().await;
}

/// BCD-6, BCD-8: a writer cannot set the requester's fields, nor send back another writer's
/// records.
#[tokio::test(start_paused = true)]
async fn writer_cannot_forge_requester_fields_or_other_writers_records() {
    let mut env = Env::new(test_config(), &["sim"]);
    let forger = env.writer("forger", ApplicationLevel::FrontEnd);
    forger.on(
        K::PostSnapshot,
        Behavior::Edit(Arc::new(|c| {
            c.edit(Party::Requester, Phase::BackupCopying, "", "data")
                .unwrap()
                .set_backup_succeeded(true)
                .unwrap();
        })),
    );
    let forger = env.add(forger);
    let impostor = env.writer("impostor", ApplicationLevel::FrontEnd);
    impostor.on(
        K::PrepareForBackup,
        Behavior::Edit(Arc::new(|c| {
            c.instance_id = shadowcopy_metadata::WriterInstanceId::new_random();
        })),
    );
    let impostor = env.add(impostor);
    let mut session = prepared(&env, &["/srv"]).await;
    let failure = status_of(&session, &impostor).failure.unwrap();
    assert_eq!(failure.code, codes::E_ACCESSDENIED);
    assert!(failure.message.contains("BCD-8"), "{}", failure.message);
    session.do_snapshot_set().await.unwrap();
    let failure = status_of(&session, &forger).failure.unwrap();
    assert_eq!(failure.code, codes::E_ACCESSDENIED);
    let record = session
        .backup_components()
        .unwrap()
        .writer_instance(forger.id())
        .unwrap()
        .components()[0]
        .clone();
    assert_eq!(record.backup_succeeded(), None);
    session.release().await.unwrap();
    env.finish().await;
}

/// BK-DISC-3: AddComponent names a component of that writer's WMD, or fails with
/// VSS_E_OBJECT_NOT_FOUND.
#[tokio::test(start_paused = true)]
async fn unknown_component_is_object_not_found() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let mut session = gathered(&env).await;
    let err = session.add_component(writer.id(), "", "nope").unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_OBJECT_NOT_FOUND);
    assert!(err.message().contains("BK-DISC-3"), "{err}");
    let err = session
        .add_component(
            shadowcopy_metadata::WriterInstanceId::new_random(),
            "",
            "data",
        )
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_OBJECT_NOT_FOUND);
    session.add_component(writer.id(), "", "data").unwrap();
    let err = session.add_component(writer.id(), "", "data").unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_OBJECT_ALREADY_EXISTS);
    session.release().await.unwrap();
    env.finish().await;
}

/// DEL-1, SNAP-2: administrative queries and deletion of one shadow copy.
#[tokio::test(start_paused = true)]
async fn snapshots_can_be_listed_and_deleted_one_by_one() {
    let env = Env::new(test_config(), &["sim"]);
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.set_context(SnapshotContext::NasRollback).unwrap();
    session.start_snapshot_set().unwrap();
    let one = session.add_to_snapshot_set("/one", None).await.unwrap();
    let two = session.add_to_snapshot_set("/two", None).await.unwrap();
    session.do_snapshot_set().await.unwrap();
    let properties = session.snapshot_properties(one).await.unwrap();
    assert_eq!(properties.volume, "/one");
    assert_eq!(properties.state, SnapshotState::Created);
    session.release().await.unwrap();
    assert_eq!(env.coord.snapshot(two).await.unwrap().volume, "/two");
    let outcome = env
        .coord
        .delete_snapshots(shadowcopy_coordinator::DeleteTarget::Snapshot(one))
        .await
        .unwrap();
    assert_eq!(outcome.deleted, 1);
    let err = env
        .coord
        .delete_snapshots(shadowcopy_coordinator::DeleteTarget::Snapshot(one))
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_OBJECT_NOT_FOUND);
    assert_eq!(env.surviving_snapshots(), 1);
    env.finish().await;
}

/// A provider that cannot answer a query does not hide the other providers' shadow copies.
#[tokio::test(start_paused = true)]
async fn one_failing_provider_does_not_hide_the_others() {
    let env = Env::new(test_config(), &["sim", "broken"]);
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.set_context(SnapshotContext::NasRollback).unwrap();
    session.start_snapshot_set().unwrap();
    let kept = session.add_to_snapshot_set("/one", None).await.unwrap();
    session.do_snapshot_set().await.unwrap();
    session.release().await.unwrap();
    let broken = env
        .providers
        .iter()
        .find(|p| p.snapshots().is_empty())
        .unwrap();
    broken.set_faults(shadowcopy_coordinator::sim::FaultPlan::new().fail(
        shadowcopy_coordinator::ProviderStep::QuerySnapshots,
        codes::E_OUTOFMEMORY,
    ));
    let listed = env.coord.snapshots(SnapshotContext::All).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.snapshot_id).collect::<Vec<_>>(),
        [kept]
    );
    env.finish().await;
}
