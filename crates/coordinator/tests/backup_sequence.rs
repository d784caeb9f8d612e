//! Backup happy path and ordering (TS-01..TS-06), sequencing, contexts and limits (TS-17..TS-25),
//! and the call-order rules of spec §3, against simulated providers and scripted writers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Env, add_first_components, gathered, prepared, status_of, test_config};
use shadowcopy_coordinator::sim::{EventLog, SimProvider};
use shadowcopy_coordinator::{CoordinatorConfig, WriterEvent, WriterEventKind, WriterSelector};
use shadowcopy_metadata::bcd::BackupState;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{
    ApplicationLevel, ProviderType, SnapshotContext, SnapshotState, WriterState,
};

use WriterEventKind as K;

fn pair(source: &str, event: &str) -> (String, String) {
    (source.to_string(), event.to_string())
}

/// Two providers, one per volume, and three writers at different application levels.
fn two_providers_three_levels() -> Env {
    let log = EventLog::new();
    let a = Arc::new(
        SimProvider::new("sim-a")
            .supporting(&["/a"])
            .with_log(log.clone()),
    );
    let b = Arc::new(
        SimProvider::new("sim-b")
            .supporting(&["/b"])
            .with_log(log.clone()),
    );
    let mut env = Env::with_providers(test_config(), vec![a, b], log);
    // Registered in the opposite order of their freeze order: the order must come from the levels.
    let sys = env.writer("sys", ApplicationLevel::System);
    env.add(sys);
    let be = env.writer("be", ApplicationLevel::BackEnd);
    env.add(be);
    let fe = env.writer("fe", ApplicationLevel::FrontEnd);
    env.add(fe);
    env
}

/// TS-01, TS-02, TS-03, BK-SNAP-2, WST-3: the exact interleaving of providers and writers in a full
/// backup, Freeze by level (front-end, back-end, system), Thaw in reverse, the writer states after
/// each step, the snapshot states, and the auto-release copies gone after release.
#[tokio::test(start_paused = true)]
async fn full_backup_follows_bk_snap_2_across_providers_and_levels() {
    let env = two_providers_three_levels();
    let mut session = gathered(&env).await;
    for writer in &env.writers {
        assert_eq!(status_of(&session, writer).state, WriterState::Stable);
    }
    add_first_components(&mut session);
    let set = session.start_snapshot_set().unwrap();
    let snap_a = session.add_to_snapshot_set("/a/", None).await.unwrap();
    let snap_b = session.add_to_snapshot_set("/b", None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    for writer in &env.writers {
        assert_eq!(status_of(&session, writer).state, WriterState::Stable);
    }
    env.log.clear();
    session.do_snapshot_set().await.unwrap();

    let seq = env.sequence();
    let writers = ["sys", "be", "fe"];
    let mut expected = vec![
        pair("sim-a", "EndPrepareSnapshots"),
        pair("sim-b", "EndPrepareSnapshots"),
    ];
    // PrepareForSnapshot goes to all writers at once; their relative order is not specified.
    let mut prepare: Vec<_> = seq[2..5].to_vec();
    prepare.sort();
    let mut want: Vec<_> = writers
        .iter()
        .map(|w| pair(w, "PrepareForSnapshot"))
        .collect();
    want.sort();
    assert_eq!(prepare, want, "{seq:#?}");
    expected.extend(seq[2..5].iter().cloned());
    expected.extend([
        pair("fe", "Freeze"),
        pair("be", "Freeze"),
        pair("sys", "Freeze"),
        pair("sim-a", "PreCommitSnapshots"),
        pair("sim-b", "PreCommitSnapshots"),
        pair("sim-a", "CommitSnapshots"),
        pair("sim-b", "CommitSnapshots"),
        pair("sim-a", "PostCommitSnapshots"),
        pair("sim-b", "PostCommitSnapshots"),
        pair("sys", "Thaw"),
        pair("be", "Thaw"),
        pair("fe", "Thaw"),
        pair("sim-a", "PreFinalCommitSnapshots"),
        pair("sim-b", "PreFinalCommitSnapshots"),
    ]);
    let mut post: Vec<_> = seq[expected.len()..expected.len() + 3].to_vec();
    post.sort();
    let mut want: Vec<_> = writers.iter().map(|w| pair(w, "PostSnapshot")).collect();
    want.sort();
    assert_eq!(post, want, "{seq:#?}");
    expected.extend(seq[expected.len()..expected.len() + 3].iter().cloned());
    expected.extend([
        pair("sim-a", "PostFinalCommitSnapshots"),
        pair("sim-b", "PostFinalCommitSnapshots"),
    ]);
    assert_eq!(seq, expected);

    // WST-3 after DoSnapshotSet; PostSnapshot told each writer where both copies can be read.
    for writer in &env.writers {
        assert_eq!(
            status_of(&session, writer).state,
            WriterState::WaitingForBackupComplete
        );
        let post = writer
            .received()
            .into_iter()
            .find_map(|r| match r.event {
                WriterEvent::PostSnapshot {
                    snapshots, set: s, ..
                } => Some((s, snapshots)),
                _ => None,
            })
            .unwrap();
        assert_eq!(post.0, set);
        let mut ids: Vec<_> = post.1.iter().map(|l| l.snapshot_id).collect();
        ids.sort();
        let mut want = vec![snap_a, snap_b];
        want.sort();
        assert_eq!(ids, want);
        assert!(post.1.iter().all(|l| l.snapshot_path.is_some()));
    }
    // PROV-ST-1: the copies are CREATED; the BCD records the set (BCD-5).
    let created = env.coord.snapshots(SnapshotContext::Backup).await.unwrap();
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|r| r.state == SnapshotState::Created));
    let bcd = session.backup_components().unwrap();
    assert_eq!(bcd.snapshot_set_id(), Some(set));
    assert_eq!(bcd.snapshots().len(), 2);
    assert_eq!(bcd.snapshots()[0].volume, "/a");

    for writer in &env.writers {
        session
            .set_backup_succeeded(writer.id(), "", "data", true)
            .unwrap();
    }
    session.backup_complete().await.unwrap();
    for writer in &env.writers {
        assert_eq!(status_of(&session, writer).state, WriterState::Stable);
    }
    session.release().await.unwrap();

    // TS-01: the whole event sequence of every writer, and the auto-release copies are gone.
    for writer in &env.writers {
        assert_eq!(
            writer.kinds(),
            [
                K::Identify,
                K::PrepareForBackup,
                K::PrepareForSnapshot,
                K::Freeze,
                K::Thaw,
                K::PostSnapshot,
                K::BackupComplete,
                K::BackupShutdown
            ],
            "{}",
            writer.name
        );
        let shutdown = writer.received().last().unwrap().event.clone();
        assert_eq!(shutdown, WriterEvent::BackupShutdown { set: Some(set) });
    }
    assert_eq!(env.surviving_snapshots(), 0);
    assert!(
        env.log
            .events_of("sim-a")
            .contains(&"DeleteSnapshots".into())
    );
    env.finish().await;
}

/// TS-31, SEL-5, BK-DISC-4: in component mode a writer with nothing selected gets Identify and
/// nothing else, not even BackupShutdown.
#[tokio::test(start_paused = true)]
async fn component_mode_writer_without_selection_gets_no_further_events() {
    let mut env = Env::new(test_config(), &["sim"]);
    let chosen = env.writer("chosen", ApplicationLevel::FrontEnd);
    let chosen = env.add(chosen);
    let idle = env.writer("idle", ApplicationLevel::FrontEnd);
    let idle = env.add(idle);
    let mut session = gathered(&env).await;
    session.add_component(chosen.id(), "", "data").unwrap();
    session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();
    session.backup_complete().await.unwrap();
    session.release().await.unwrap();
    assert_eq!(idle.kinds(), [K::Identify]);
    assert_eq!(chosen.kinds().len(), 8);
    env.finish().await;
}

/// TS-06, BK-DISC-5: in volume mode every enabled writer gets the backup events with an empty
/// component list.
#[tokio::test(start_paused = true)]
async fn volume_mode_sends_every_writer_the_backup_events() {
    let mut env = Env::new(test_config(), &["sim"]);
    let one = env.writer("one", ApplicationLevel::FrontEnd);
    let one = env.add(one);
    let two = env.writer("two", ApplicationLevel::BackEnd);
    let two = env.add(two);
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session
        .set_backup_state(BackupState {
            component_mode: false,
            ..BackupState::default()
        })
        .unwrap();
    session.gather_writer_metadata().await.unwrap();
    session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();
    for writer in [&one, &two] {
        let prepare = writer.received()[1].event.clone();
        match prepare {
            WriterEvent::PrepareForBackup {
                components,
                backup_state,
                ..
            } => {
                assert!(components.components().is_empty());
                assert_eq!(components.instance_id, writer.id());
                assert!(!backup_state.component_mode);
            }
            other => panic!("expected PrepareForBackup, got {other:?}"),
        }
        assert_eq!(writer.count(K::Freeze), 1);
        assert_eq!(
            status_of(&session, writer).state,
            WriterState::WaitingForBackupComplete
        );
    }
    session.release().await.unwrap();
    env.finish().await;
}

/// Spec §3 order: each call out of order is refused with VSS_E_BAD_STATE naming the expected step.
#[tokio::test(start_paused = true)]
async fn wrong_call_order_is_bad_state() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let mut session = env.coord.open_backup_session();

    let err = session.gather_writer_metadata().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    assert!(err.message().contains("initialize_for_backup"), "{err}");
    let err = session.start_snapshot_set().unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);

    session.initialize_for_backup(None).unwrap();
    let err = session.initialize_for_backup(None).unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    let err = session.add_component(writer.id(), "", "data").unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    assert!(err.message().contains("gather_writer_metadata"), "{err}");
    let err = session.prepare_for_backup().await.unwrap_err();
    assert!(err.message().contains("gather_writer_metadata"), "{err}");
    let err = session.gather_writer_status().unwrap_err();
    assert!(err.message().contains("BK-INIT-7"), "{err}");
    let err = session.add_to_snapshot_set("/srv", None).await.unwrap_err();
    assert!(err.message().contains("start_snapshot_set"), "{err}");

    session.gather_writer_metadata().await.unwrap();
    session.add_component(writer.id(), "", "data").unwrap();
    let err = session.do_snapshot_set().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    assert!(err.message().contains("prepare_for_backup"), "{err}");
    let err = session.backup_complete().await.unwrap_err();
    assert!(err.message().contains("do_snapshot_set"), "{err}");
    let err = session
        .set_backup_succeeded(writer.id(), "", "data", true)
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);

    session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    let err = session
        .set_backup_state(BackupState::default())
        .unwrap_err();
    assert!(err.message().contains("BK-INIT-3"), "{err}");
    let err = session
        .add_to_snapshot_set("/other", None)
        .await
        .unwrap_err();
    assert!(err.message().contains("prepare_for_backup"), "{err}");
    let err = session.start_snapshot_set().unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    let err = session.add_component(writer.id(), "", "data").unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    env.finish().await;
}

/// TS-21, BK-INIT-5: DoSnapshotSet in the BACKUP context without GatherWriterMetadata.
#[tokio::test(start_paused = true)]
async fn do_snapshot_set_without_gather_is_bad_state() {
    let env = Env::new(test_config(), &["sim"]);
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    let err = session.do_snapshot_set().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    assert!(err.message().contains("BK-INIT-5"), "{err}");
    session.release().await.unwrap();
    env.finish().await;
}

/// BK-INIT-4: enabling or disabling writers takes effect only before GatherWriterMetadata.
#[tokio::test(start_paused = true)]
async fn set_writer_enabled_after_gather_has_no_effect() {
    let mut env = Env::new(test_config(), &["sim"]);
    let off = env.writer("off", ApplicationLevel::FrontEnd);
    let off = env.add(off);
    let late = env.writer("late", ApplicationLevel::FrontEnd);
    let late = env.add(late);
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session
        .set_writer_enabled(WriterSelector::Class(off.class_id), false)
        .unwrap();
    session.gather_writer_metadata().await.unwrap();
    // Too late: no effect.
    session
        .set_writer_enabled(WriterSelector::Instance(late.id()), false)
        .unwrap();
    add_first_components(&mut session);
    session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();
    assert!(
        off.kinds().is_empty(),
        "a disabled writer gets not even Identify"
    );
    let listed: Vec<_> = session
        .gather_writer_status()
        .unwrap()
        .iter()
        .map(|s| s.instance_id)
        .collect();
    assert_eq!(listed, [late.id()]);
    assert_eq!(late.count(K::Freeze), 1);
    session.release().await.unwrap();
    env.finish().await;
}

/// TS-04, ROLE-6: Identify from another session changes nothing: the writer answers the same WMD,
/// session 1 keeps its state, and its BackupComplete goes ahead.
#[tokio::test(start_paused = true)]
async fn identify_from_another_session_has_no_side_effects() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let mut first = prepared(&env, &["/srv"]).await;
    first.do_snapshot_set().await.unwrap();
    let wmd_first = first.writer_metadata().unwrap();
    let before = env.coord.writers_status();
    assert_eq!(before[0].state, WriterState::WaitingForBackupComplete);

    let second = gathered(&env).await;
    assert_eq!(second.writer_metadata().unwrap(), wmd_first);
    assert_eq!(
        status_of(&first, &writer).state,
        WriterState::WaitingForBackupComplete
    );
    assert_eq!(env.coord.writers_status(), before);
    second.release().await.unwrap();

    first.backup_complete().await.unwrap();
    assert_eq!(status_of(&first, &writer).state, WriterState::Stable);
    first.release().await.unwrap();
    assert_eq!(writer.count(K::Identify), 2);
    env.finish().await;
}

/// TS-07, BK-INIT-6: a writer whose Identify fails is missing from the lists, gets no further
/// events, and the others back up normally.
#[tokio::test(start_paused = true)]
async fn failed_identify_leaves_the_writer_out() {
    let mut env = Env::new(test_config(), &["sim"]);
    let broken = env.writer("broken", ApplicationLevel::FrontEnd);
    broken.on(
        K::Identify,
        common::Behavior::Fail(codes::VSS_E_WRITERERROR_RETRYABLE, "not ready"),
    );
    let broken = env.add(broken);
    let good = env.writer("good", ApplicationLevel::FrontEnd);
    let good = env.add(good);
    let mut session = prepared(&env, &["/srv"]).await;
    session.do_snapshot_set().await.unwrap();
    let listed: Vec<_> = session
        .gather_writer_status()
        .unwrap()
        .iter()
        .map(|s| s.instance_id)
        .collect();
    assert_eq!(listed, [good.id()]);
    assert_eq!(session.writer_metadata().unwrap().len(), 1);
    session.backup_complete().await.unwrap();
    session.release().await.unwrap();
    assert_eq!(broken.kinds(), [K::Identify]);
    assert_eq!(good.kinds().len(), 8);
    env.finish().await;
}

/// TS-19, LIMIT-4: a second StartSnapshotSet while a set is in creation gets
/// VSS_E_SNAPSHOT_SET_IN_PROGRESS; the retry succeeds once DoSnapshotSet has returned.
#[tokio::test(start_paused = true)]
async fn second_concurrent_start_snapshot_set_is_refused() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    env.add(writer);
    let mut first = prepared(&env, &["/srv"]).await;
    let set = first.snapshot_set_id().unwrap();
    assert_eq!(env.coord.set_in_creation(), Some(set));

    let mut second = env.coord.open_backup_session();
    second.initialize_for_backup(None).unwrap();
    let err = second.start_snapshot_set().unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_SNAPSHOT_SET_IN_PROGRESS);
    assert!(err.message().contains(&set.to_string()), "{err}");

    first.do_snapshot_set().await.unwrap();
    assert_eq!(env.coord.set_in_creation(), None);
    second.start_snapshot_set().unwrap();
    second.release().await.unwrap();

    // A session that ends without DoSnapshotSet frees the slot too.
    let mut third = env.coord.open_backup_session();
    third.initialize_for_backup(None).unwrap();
    third.start_snapshot_set().unwrap();
    drop(third);
    assert_eq!(env.coord.set_in_creation(), None);
    first.release().await.unwrap();
    env.finish().await;
}

/// TS-25, LIMIT-1: the 65th volume is refused; an empty set in a writer context succeeds.
#[tokio::test(start_paused = true)]
async fn sixty_fifth_volume_hits_the_limit_and_an_empty_set_succeeds() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let mut session = gathered(&env).await;
    session.start_snapshot_set().unwrap();
    for i in 0..64 {
        session
            .add_to_snapshot_set(&format!("/vol{i}"), None)
            .await
            .unwrap();
    }
    let err = session
        .add_to_snapshot_set("/vol64", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED);
    assert!(err.message().contains("/vol64"), "{err}");
    let err = session
        .add_to_snapshot_set("/vol3/", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED);
    session.release().await.unwrap();

    // BK-DISC-7: an empty set; the writers still go through the snapshot events.
    let mut session = gathered(&env).await;
    add_first_components(&mut session);
    session.start_snapshot_set().unwrap();
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();
    assert_eq!(writer.count(K::Thaw), 1);
    session.release().await.unwrap();
    env.finish().await;
}

/// PROV-SEL-1: hardware before software before system; a named provider that cannot do the
/// volume gives VOLUME_NOT_SUPPORTED_BY_PROVIDER; no provider at all gives VOLUME_NOT_SUPPORTED
/// with the reasons and what would work.
#[tokio::test(start_paused = true)]
async fn provider_selection_follows_prov_sel_1() {
    let log = EventLog::new();
    let system = Arc::new(
        SimProvider::new("system")
            .with_type(ProviderType::System)
            .supporting(&["/"])
            .with_log(log.clone()),
    );
    let software = Arc::new(
        SimProvider::new("software")
            .supporting(&["/data", "/srv"])
            .with_log(log.clone()),
    );
    let hardware = Arc::new(
        SimProvider::new("hardware")
            .with_type(ProviderType::Hardware)
            .supporting(&["/srv"])
            .with_log(log.clone()),
    );
    let env = Env::with_providers(
        test_config(),
        vec![system.clone(), software.clone(), hardware.clone()],
        log,
    );
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session
        .set_context(SnapshotContext::FileShareBackup)
        .unwrap();
    session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    session.add_to_snapshot_set("/data", None).await.unwrap();
    session.add_to_snapshot_set("/home", None).await.unwrap();
    assert_eq!(hardware.snapshots()[0].volume, "/srv");
    assert_eq!(software.snapshots()[0].volume, "/data");
    assert_eq!(system.snapshots()[0].volume, "/home");
    let err = session
        .add_to_snapshot_set("/data/sub", Some(hardware.id()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER);
    session.release().await.unwrap();

    let only_srv = Arc::new(SimProvider::new("btrfs-sim").supporting(&["/srv"]));
    let env = Env::with_providers(test_config(), vec![only_srv], EventLog::new());
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.start_snapshot_set().unwrap();
    assert!(!session.is_volume_supported("/home").await.unwrap());
    let err = session
        .add_to_snapshot_set("/home", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_VOLUME_NOT_SUPPORTED);
    assert!(err.message().contains("/home"), "{err}");
    assert!(
        err.message().contains("only snapshots volumes under /srv"),
        "{err}"
    );
    assert!(err.message().contains("btrfs subvolume"), "{err}");
    session.release().await.unwrap();
    env.finish().await;
}

/// TS-17, BK-ABORT-2: a session used only for GatherWriterMetadata and released gets no Abort and
/// no BackupShutdown.
#[tokio::test(start_paused = true)]
async fn discovery_only_session_releases_quietly() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let session = gathered(&env).await;
    session.release().await.unwrap();
    assert_eq!(writer.kinds(), [K::Identify]);
    env.finish().await;
}

/// TS-22, CTX-4: writerless contexts send writers nothing and refuse AddComponent,
/// PrepareForBackup and BackupComplete; NAS_ROLLBACK copies survive release, FILE_SHARE_BACKUP
/// copies do not.
#[tokio::test(start_paused = true)]
async fn writerless_contexts_involve_no_writers() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    for (context, survives) in [
        (SnapshotContext::FileShareBackup, false),
        (SnapshotContext::NasRollback, true),
    ] {
        let mut session = env.coord.open_backup_session();
        session.initialize_for_backup(None).unwrap();
        session.set_context(context).unwrap();
        session.gather_writer_metadata().await.unwrap();
        let err = session.add_component(writer.id(), "", "data").unwrap_err();
        assert!(err.message().contains("CTX-4"), "{err}");
        let err = session.prepare_for_backup().await.unwrap_err();
        assert!(err.message().contains("CTX-4"), "{err}");
        let set = session.start_snapshot_set().unwrap();
        session.add_to_snapshot_set("/share", None).await.unwrap();
        session.do_snapshot_set().await.unwrap();
        let err = session.backup_complete().await.unwrap_err();
        assert!(err.message().contains("CTX-4"), "{err}");
        session.release().await.unwrap();
        let left = env
            .coord
            .snapshots(SnapshotContext::All)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.set_id == set)
            .count();
        assert_eq!(left == 1, survives, "{context}");
    }
    assert_eq!(writer.kinds(), [K::Identify, K::Identify]);
    env.finish().await;
}

/// TS-23, CTX-5, BK-INIT-2: ALL is refused for creation but accepted by queries and deletion.
#[tokio::test(start_paused = true)]
async fn context_all_is_refused_for_creation() {
    let env = Env::new(test_config(), &["sim"]);
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    let err = session.set_context(SnapshotContext::All).unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_UNSUPPORTED_CONTEXT);
    session.set_context(SnapshotContext::NasRollback).unwrap();
    let set = session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    // BK-INIT-2: the context cannot change once volumes are in the set.
    assert_eq!(
        session
            .set_context(SnapshotContext::Backup)
            .unwrap_err()
            .code(),
        codes::VSS_E_BAD_STATE
    );
    session.do_snapshot_set().await.unwrap();
    session.release().await.unwrap();
    assert_eq!(
        env.coord
            .snapshots(SnapshotContext::All)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        env.coord
            .snapshots(SnapshotContext::Backup)
            .await
            .unwrap()
            .is_empty()
    );
    let outcome = env
        .coord
        .delete_snapshots(shadowcopy_coordinator::DeleteTarget::Set(set))
        .await
        .unwrap();
    assert_eq!(outcome.deleted, 1);
    assert!(outcome.first_failure.is_none());
    assert_eq!(env.surviving_snapshots(), 0);
    env.finish().await;
}

/// CFG-9: the config lowers a writer's freeze timeout, never raises it; Freeze carries it.
#[tokio::test(start_paused = true)]
async fn config_caps_the_freeze_timeout() {
    let config = CoordinatorConfig {
        max_freeze_timeout: Some(Duration::from_secs(20)),
        ..CoordinatorConfig::default()
    };
    let mut env = Env::new(config, &["sim"]);
    let long = env.writer("long", ApplicationLevel::FrontEnd);
    let long = env.add(long);
    let short = env
        .writer("short", ApplicationLevel::FrontEnd)
        .with_freeze_timeout(Duration::from_secs(5));
    let short = env.add(short);
    let mut session = prepared(&env, &["/srv"]).await;
    session.do_snapshot_set().await.unwrap();
    for (writer, want) in [(&long, 20), (&short, 5)] {
        let timeout = writer
            .received()
            .into_iter()
            .find_map(|r| match r.event {
                WriterEvent::Freeze { freeze_timeout, .. } => Some(freeze_timeout),
                _ => None,
            })
            .unwrap();
        assert_eq!(timeout, Duration::from_secs(want));
    }
    session.release().await.unwrap();
    env.finish().await;
}

/// ROLE-7: a second live registration of the same class and instance name is refused, and the
/// admin listing shows name, ids, state and last failure.
#[tokio::test(start_paused = true)]
async fn duplicate_registration_is_refused() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let err = env
        .coord
        .register_writer(writer.registration(), writer.clone())
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_WRITER_ALREADY_SUBSCRIBED);
    let status = env.coord.writers_status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].writer_name, "w");
    assert_eq!(status[0].class_id, writer.class_id);
    assert_eq!(status[0].state, WriterState::Stable);
    assert!(status[0].failure.is_none());
    assert!(env.coord.unregister_writer(writer.id()));
    let again = env
        .coord
        .register_writer(writer.registration(), writer.clone())
        .unwrap();
    assert_ne!(again, writer.id());
    env.finish().await;
}
