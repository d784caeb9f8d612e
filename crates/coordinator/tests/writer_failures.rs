//! Writer failures, vetoes, timeouts and aborts (spec §5, BK-SNAP-5..9, BK-ABORT-*, TS-07..TS-18):
//! every test ends by checking that no writer was left frozen.

mod common;

use std::time::Duration;

use common::{Behavior, Env, prepared, status_of, test_config};
use shadowcopy_coordinator::{CoordinatorConfig, EventTimeouts, WriterEventKind};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ApplicationLevel, SnapshotState, WriterState};
use tokio::time::Instant;

use WriterEventKind as K;

/// TS-09 (branch a), BK-SNAP-7: a veto at Freeze makes that writer FAILED_AT_FREEZE with its code
/// and sends it Abort; the set still completes, the other writer is thawed, and BackupComplete
/// goes only to the healthy writer.
#[tokio::test(start_paused = true)]
async fn veto_at_freeze_fails_that_writer_and_the_set_completes() {
    let mut env = Env::new(test_config(), &["sim"]);
    let healthy = env.writer("a", ApplicationLevel::FrontEnd);
    let healthy = env.add(healthy);
    let vetoing = env.writer("b", ApplicationLevel::BackEnd);
    vetoing.on(
        K::Freeze,
        Behavior::Fail(codes::VSS_E_WRITERERROR_NONRETRYABLE, "cannot stop writes"),
    );
    let vetoing = env.add(vetoing);
    let mut session = prepared(&env, &["/srv"]).await;
    session.do_snapshot_set().await.unwrap();

    let status = status_of(&session, &vetoing);
    assert_eq!(status.state, WriterState::FailedAtFreeze);
    let failure = status.failure.unwrap();
    assert_eq!(failure.code, codes::VSS_E_WRITERERROR_NONRETRYABLE);
    assert_eq!(failure.message, "cannot stop writes");
    assert_eq!(failure.application_code, 42);
    assert_eq!(
        vetoing.kinds(),
        [
            K::Identify,
            K::PrepareForBackup,
            K::PrepareForSnapshot,
            K::Freeze,
            K::Abort
        ]
    );
    assert_eq!(
        status_of(&session, &healthy).state,
        WriterState::WaitingForBackupComplete
    );
    assert_eq!(env.surviving_snapshots(), 1);

    // Branch a: the requester ignores the veto.
    session.backup_complete().await.unwrap();
    session.release().await.unwrap();
    assert_eq!(healthy.count(K::BackupComplete), 1);
    assert_eq!(vetoing.count(K::BackupComplete), 0);
    assert_eq!(vetoing.count(K::BackupShutdown), 1);
    env.finish().await;
}

/// TS-09 (branch b), TS-16, BK-ABORT-4: after the veto the requester aborts: writers that handled
/// PostSnapshot get no Abort, the vetoing one gets no second Abort, no BackupComplete is sent, and
/// no shadow copy remains after release.
#[tokio::test(start_paused = true)]
async fn abort_after_a_freeze_veto_sends_no_duplicate_abort() {
    let mut env = Env::new(test_config(), &["sim"]);
    let healthy = env.writer("a", ApplicationLevel::FrontEnd);
    let healthy = env.add(healthy);
    let vetoing = env.writer("b", ApplicationLevel::FrontEnd);
    vetoing.on(
        K::Freeze,
        Behavior::Fail(codes::VSS_E_WRITERERROR_NONRETRYABLE, "no"),
    );
    let vetoing = env.add(vetoing);
    let mut session = prepared(&env, &["/srv"]).await;
    session.do_snapshot_set().await.unwrap();
    session.abort_backup().await.unwrap();
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    assert_eq!(healthy.count(K::Abort), 0);
    assert_eq!(vetoing.count(K::Abort), 1);
    for writer in [&healthy, &vetoing] {
        assert_eq!(writer.count(K::BackupComplete), 0);
        assert_eq!(writer.kinds().last(), Some(&K::BackupShutdown));
    }
    assert_eq!(env.surviving_snapshots(), 0);
    env.finish().await;
}

/// BK-SNAP-5, BK-SNAP-7: a writer that never answers Freeze is cut off at its freeze timeout:
/// FAILED_AT_FREEZE with VSS_E_WRITERERROR_TIMEOUT and Abort, while every other writer is thawed
/// and the set completes.
#[tokio::test(start_paused = true)]
async fn writer_never_answering_freeze_times_out_and_others_are_thawed() {
    let mut env = Env::new(test_config(), &["sim"]);
    let front = env.writer("front", ApplicationLevel::FrontEnd);
    let front = env.add(front);
    // A shorter window than the front-end writer's, so that the front-end writer (frozen first)
    // is still inside its own 60 s window when this one gives up.
    let stuck = env
        .writer("stuck", ApplicationLevel::BackEnd)
        .with_freeze_timeout(Duration::from_secs(5));
    stuck.on(K::Freeze, Behavior::Hang);
    let stuck = env.add(stuck);
    let system = env.writer("system", ApplicationLevel::System);
    let system = env.add(system);
    let mut session = prepared(&env, &["/srv"]).await;
    let start = Instant::now();
    session.do_snapshot_set().await.unwrap();

    let status = status_of(&session, &stuck);
    assert_eq!(status.state, WriterState::FailedAtFreeze);
    assert_eq!(
        status.failure.unwrap().code,
        codes::VSS_E_WRITERERROR_TIMEOUT
    );
    assert_eq!(stuck.count(K::Thaw), 0);
    assert_eq!(stuck.count(K::Abort), 1);
    let frozen_at = stuck.time_of(K::Freeze).unwrap();
    assert_eq!(
        stuck.time_of(K::Abort).unwrap() - frozen_at,
        Duration::from_secs(5)
    );
    for writer in [&front, &system] {
        assert_eq!(
            status_of(&session, writer).state,
            WriterState::WaitingForBackupComplete
        );
        assert_eq!(writer.count(K::Thaw), 1);
    }
    // The system writer was frozen only after the back-end level was settled (ROLE-9).
    assert_eq!(
        system.time_of(K::Freeze).unwrap() - start,
        Duration::from_secs(5)
    );
    session.release().await.unwrap();
    env.finish().await;
}

/// TS-10, BK-SNAP-5: a writer with a 2 s freeze timeout while PreCommit takes 3 s gets Abort
/// automatically, FAILED_AT_FREEZE with VSS_E_WRITERERROR_TIMEOUT; the other writer is unaffected.
#[tokio::test(start_paused = true)]
async fn freeze_window_runs_out_while_providers_commit() {
    let mut env = Env::new(test_config(), &["sim"]);
    env.providers[0].set_faults(shadowcopy_coordinator::sim::FaultPlan::new().delay(
        shadowcopy_coordinator::ProviderStep::PreCommitSnapshots,
        Duration::from_secs(3),
    ));
    let short = env
        .writer("short", ApplicationLevel::FrontEnd)
        .with_freeze_timeout(Duration::from_secs(2));
    let short = env.add(short);
    let patient = env.writer("patient", ApplicationLevel::FrontEnd);
    let patient = env.add(patient);
    let mut session = prepared(&env, &["/srv"]).await;
    session.do_snapshot_set().await.unwrap();

    let status = status_of(&session, &short);
    assert_eq!(status.state, WriterState::FailedAtFreeze);
    assert_eq!(
        status.failure.unwrap().code,
        codes::VSS_E_WRITERERROR_TIMEOUT
    );
    assert_eq!(
        short.time_of(K::Abort).unwrap() - short.time_of(K::Freeze).unwrap(),
        Duration::from_secs(2)
    );
    assert_eq!(short.count(K::Thaw), 0);
    assert_eq!(short.count(K::PostSnapshot), 0);
    assert_eq!(
        status_of(&session, &patient).state,
        WriterState::WaitingForBackupComplete
    );
    assert_eq!(
        patient.time_of(K::Thaw).unwrap() - patient.time_of(K::Freeze).unwrap(),
        Duration::from_secs(3)
    );
    assert_eq!(env.surviving_snapshots(), 1);
    session.release().await.unwrap();
    env.finish().await;
}

/// TS-12, BK-SNAP-8, BK-SNAP-9, BK-END-2, PROV-R-2: provider 2 fails CommitSnapshots: the set
/// fails with its error, every writer gets Abort (not Thaw), both providers get AbortSnapshots, no
/// copy of either volume survives, BackupComplete is refused and AbortBackup sends nothing twice.
#[tokio::test(start_paused = true)]
async fn provider_failing_at_commit_fails_the_whole_set() {
    let log = shadowcopy_coordinator::sim::EventLog::new();
    let one = std::sync::Arc::new(
        shadowcopy_coordinator::sim::SimProvider::new("p1")
            .supporting(&["/one"])
            .with_log(log.clone()),
    );
    let two = std::sync::Arc::new(
        shadowcopy_coordinator::sim::SimProvider::new("p2")
            .supporting(&["/two"])
            .with_log(log.clone())
            .with_faults(shadowcopy_coordinator::sim::FaultPlan::new().fail(
                shadowcopy_coordinator::ProviderStep::CommitSnapshots,
                codes::VSS_E_PROVIDER_VETO,
            )),
    );
    let mut env = Env::with_providers(test_config(), vec![one, two], log);
    let a = env.writer("a", ApplicationLevel::FrontEnd);
    let a = env.add(a);
    let b = env.writer("b", ApplicationLevel::BackEnd);
    let b = env.add(b);
    let c = env.writer("c", ApplicationLevel::System);
    let c = env.add(c);
    let mut session = prepared(&env, &["/one", "/two"]).await;
    let err = session.do_snapshot_set().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_PROVIDER_VETO);
    assert!(err.message().contains("p2"), "{err}");
    assert!(err.message().contains("CommitSnapshots"), "{err}");
    assert!(err.message().contains("/two"), "{err}");
    assert_eq!(env.coord.set_in_creation(), None);

    for writer in [&a, &b, &c] {
        assert_eq!(writer.count(K::Abort), 1, "{}", writer.name);
        assert_eq!(writer.count(K::Thaw), 0, "{}", writer.name);
        assert_eq!(writer.count(K::PostSnapshot), 0, "{}", writer.name);
    }
    for provider in ["p1", "p2"] {
        assert!(
            env.log
                .events_of(provider)
                .contains(&"AbortSnapshots".into())
        );
    }
    assert_eq!(env.surviving_snapshots(), 0);

    let err = session.backup_complete().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    assert!(err.message().contains("BK-END-2"), "{err}");
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    for writer in [&a, &b, &c] {
        assert_eq!(writer.count(K::Abort), 1);
        assert_eq!(writer.count(K::BackupComplete), 0);
        assert_eq!(writer.kinds().last(), Some(&K::BackupShutdown));
    }
    env.finish().await;
}

/// TS-11, CFG-10, LIMIT-5: a provider hangs in CommitSnapshots: the 10 s commit window fires,
/// DoSnapshotSet fails with HOLD_WRITES_TIMEOUT, every frozen writer gets Abort and the provider
/// AbortSnapshots, nothing survives.
#[tokio::test(start_paused = true)]
async fn provider_hanging_in_commit_hits_the_commit_window() {
    let mut env = Env::new(test_config(), &["sim"]);
    env.providers[0].set_faults(
        shadowcopy_coordinator::sim::FaultPlan::new()
            .hang(shadowcopy_coordinator::ProviderStep::CommitSnapshots),
    );
    let a = env.writer("a", ApplicationLevel::FrontEnd);
    let a = env.add(a);
    let b = env.writer("b", ApplicationLevel::BackEnd);
    let b = env.add(b);
    let mut session = prepared(&env, &["/srv"]).await;
    let start = Instant::now();
    let err = session.do_snapshot_set().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_HOLD_WRITES_TIMEOUT);
    assert!(err.message().contains("CommitSnapshots"), "{err}");
    assert_eq!(
        a.time_of(K::Abort).unwrap() - start,
        shadowcopy_coordinator::COMMIT_WINDOW
    );
    for writer in [&a, &b] {
        assert_eq!(writer.count(K::Abort), 1);
        assert_eq!(writer.count(K::Thaw), 0);
    }
    assert!(env.log.events_of("sim").contains(&"AbortSnapshots".into()));
    assert_eq!(env.surviving_snapshots(), 0);
    assert_eq!(
        session.backup_complete().await.unwrap_err().code(),
        codes::VSS_E_BAD_STATE
    );
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    env.finish().await;
}

/// CFG-10: the commit window can be shortened for tests; overrunning it during PreCommit is a
/// flush timeout.
#[tokio::test(start_paused = true)]
async fn shortened_commit_window_fires_during_pre_commit() {
    let config = CoordinatorConfig {
        commit_window: Duration::from_secs(1),
        ..test_config()
    };
    let mut env = Env::new(config, &["sim"]);
    env.providers[0].set_faults(shadowcopy_coordinator::sim::FaultPlan::new().delay(
        shadowcopy_coordinator::ProviderStep::PreCommitSnapshots,
        Duration::from_secs(2),
    ));
    let a = env.writer("a", ApplicationLevel::FrontEnd);
    let a = env.add(a);
    let mut session = prepared(&env, &["/srv"]).await;
    let err = session.do_snapshot_set().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_FLUSH_WRITES_TIMEOUT);
    assert_eq!(a.count(K::Abort), 1);
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    env.finish().await;
}

/// TS-13, PROV-R-3: a provider code providers may not return reaches the requester as
/// VSS_E_UNEXPECTED_PROVIDER_ERROR, with the provider and method named.
#[tokio::test(start_paused = true)]
async fn unexpected_provider_code_is_translated() {
    let mut env = Env::new(test_config(), &["sim"]);
    env.providers[0].set_faults(shadowcopy_coordinator::sim::FaultPlan::new().fail(
        shadowcopy_coordinator::ProviderStep::PreCommitSnapshots,
        codes::VSS_E_UNEXPECTED,
    ));
    let a = env.writer("a", ApplicationLevel::FrontEnd);
    let a = env.add(a);
    let mut session = prepared(&env, &["/srv"]).await;
    let err = session.do_snapshot_set().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);
    assert!(err.message().contains("sim"), "{err}");
    assert!(err.message().contains("PreCommitSnapshots"), "{err}");
    assert!(err.message().contains("VSS_E_UNEXPECTED"), "{err}");
    assert_eq!(a.count(K::Abort), 1);
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    env.finish().await;
}

/// TS-14, BK-SNAP-6: a failure in PrepareForSnapshot or in PostSnapshot produces no Abort; the
/// writers become FAILED_AT_PREPARE_SNAPSHOT / FAILED_AT_POST_SNAPSHOT and the set is created.
#[tokio::test(start_paused = true)]
async fn prepare_snapshot_and_post_snapshot_failures_do_not_abort() {
    let mut env = Env::new(test_config(), &["sim"]);
    let early = env.writer("early", ApplicationLevel::FrontEnd);
    early.on(
        K::PrepareForSnapshot,
        Behavior::Fail(
            codes::VSS_E_WRITERERROR_OUTOFRESOURCES,
            "no space for temp files",
        ),
    );
    let early = env.add(early);
    let late = env.writer("late", ApplicationLevel::FrontEnd);
    late.on(
        K::PostSnapshot,
        Behavior::Fail(codes::VSS_E_WRITERERROR_RECOVERY_FAILED, "recovery failed"),
    );
    let late = env.add(late);
    let mut session = prepared(&env, &["/srv"]).await;
    session.do_snapshot_set().await.unwrap();

    let status = status_of(&session, &early);
    assert_eq!(status.state, WriterState::FailedAtPrepareSnapshot);
    assert_eq!(status.failure.unwrap().message, "no space for temp files");
    assert_eq!(
        early.kinds(),
        [K::Identify, K::PrepareForBackup, K::PrepareForSnapshot]
    );
    let status = status_of(&session, &late);
    assert_eq!(status.state, WriterState::FailedAtPostSnapshot);
    assert_eq!(
        status.failure.unwrap().code,
        codes::VSS_E_WRITERERROR_RECOVERY_FAILED
    );
    assert_eq!(late.count(K::Abort), 0);
    assert_eq!(env.surviving_snapshots(), 1);

    // TS-16: an abort now skips the writer that handled PostSnapshot (BK-ABORT-4).
    session.abort_backup().await.unwrap();
    assert_eq!(late.count(K::Abort), 0);
    assert_eq!(early.count(K::Abort), 1);
    session.release().await.unwrap();
    assert_eq!(late.kinds().last(), Some(&K::BackupShutdown));
    env.finish().await;
}

/// TS-08, BK-ABORT-2: a veto at PrepareForBackup gives FAILED_AT_PREPARE_BACKUP with a readable
/// message; AbortBackup then reaches every writer that got PrepareForBackup, and BackupShutdown
/// follows on release.
#[tokio::test(start_paused = true)]
async fn veto_at_prepare_for_backup_then_abort() {
    let mut env = Env::new(test_config(), &["sim"]);
    let vetoing = env.writer("vetoing", ApplicationLevel::FrontEnd);
    vetoing.on(
        K::PrepareForBackup,
        Behavior::Fail(codes::VSS_E_WRITERERROR_RETRYABLE, "checkpoint in progress"),
    );
    let vetoing = env.add(vetoing);
    let other = env.writer("other", ApplicationLevel::FrontEnd);
    let other = env.add(other);
    let mut session = prepared(&env, &["/srv"]).await;
    let status = status_of(&session, &vetoing);
    assert_eq!(status.state, WriterState::FailedAtPrepareBackup);
    let failure = status.failure.unwrap();
    assert_eq!(failure.code, codes::VSS_E_WRITERERROR_RETRYABLE);
    assert_eq!(failure.message, "checkpoint in progress");
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    for writer in [&vetoing, &other] {
        assert_eq!(
            writer.kinds(),
            [
                K::Identify,
                K::PrepareForBackup,
                K::Abort,
                K::BackupShutdown
            ]
        );
    }
    // PROV-SEQ-2: the set died before DoSnapshotSet, so the provider heard nothing and only holds
    // a stale preparation, which it discards at its next BeginPrepareSnapshot.
    let left = env.providers[0].snapshots();
    assert!(left.iter().all(|r| r.state == SnapshotState::Preparing));
    assert!(!env.log.events_of("sim").contains(&"AbortSnapshots".into()));
    env.finish().await;
}

/// CFG-16: an event that is not answered within its configured timeout makes the writer
/// FAILED_AT_<event> with VSS_E_WRITER_NOT_RESPONDING.
#[tokio::test(start_paused = true)]
async fn unanswered_event_is_writer_not_responding() {
    let config = CoordinatorConfig {
        event_timeouts: EventTimeouts {
            prepare_for_backup: Duration::from_secs(5),
            ..EventTimeouts::default()
        },
        ..test_config()
    };
    let mut env = Env::new(config, &["sim"]);
    let slow = env.writer("slow", ApplicationLevel::FrontEnd);
    slow.on(K::PrepareForBackup, Behavior::Hang);
    let slow = env.add(slow);
    let start = Instant::now();
    let mut session = prepared(&env, &["/srv"]).await;
    assert_eq!(Instant::now() - start, Duration::from_secs(5));
    let status = status_of(&session, &slow);
    assert_eq!(status.state, WriterState::FailedAtPrepareBackup);
    assert_eq!(
        status.failure.unwrap().code,
        codes::VSS_E_WRITER_NOT_RESPONDING
    );
    // The failed writer takes no part in the set.
    session.do_snapshot_set().await.unwrap();
    assert_eq!(slow.count(K::Freeze), 0);
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    env.finish().await;
}

/// A writer whose connection drops mid-freeze: FAILED_AT_FREEZE with VSS_E_WRITER_NOT_RESPONDING,
/// no events are sent to it any more (it thaws itself when its stream ends), the set completes and
/// the others are thawed.
#[tokio::test(start_paused = true)]
async fn writer_endpoint_gone_mid_freeze() {
    let mut env = Env::new(test_config(), &["sim"]);
    let steady = env.writer("steady", ApplicationLevel::FrontEnd);
    let steady = env.add(steady);
    let vanishing = env.writer("vanishing", ApplicationLevel::FrontEnd);
    vanishing.on(K::Freeze, Behavior::Gone);
    let vanishing = env.add(vanishing);
    let mut session = prepared(&env, &["/srv"]).await;
    session.do_snapshot_set().await.unwrap();
    let status = status_of(&session, &vanishing);
    assert_eq!(status.state, WriterState::FailedAtFreeze);
    assert_eq!(
        status.failure.unwrap().code,
        codes::VSS_E_WRITER_NOT_RESPONDING
    );
    assert_eq!(steady.count(K::Thaw), 1);
    session.backup_complete().await.unwrap();
    session.release().await.unwrap();
    assert_eq!(vanishing.kinds().last(), Some(&K::Freeze));
    env.finish().await;
}

/// WST-4: a writer that is unregistered while it hangs in Freeze fails at once; the set does not
/// wait for its 60 s freeze timeout.
#[tokio::test(start_paused = true)]
async fn writer_unregistered_while_hanging_in_freeze_fails_at_once() {
    let mut env = Env::new(test_config(), &["sim"]);
    let steady = env.writer("steady", ApplicationLevel::FrontEnd);
    let steady = env.add(steady);
    let hanging = env.writer("hanging", ApplicationLevel::BackEnd);
    hanging.on(K::Freeze, Behavior::Hang);
    let hanging = env.add(hanging);
    let mut session = prepared(&env, &["/srv"]).await;
    let coordinator = env.coord.clone();
    let victim = hanging.clone();
    let disconnect = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        victim.mark_disconnected();
        assert!(coordinator.unregister_writer(victim.id()));
    });
    let start = Instant::now();
    session.do_snapshot_set().await.unwrap();
    disconnect.await.unwrap();
    assert_eq!(
        steady.time_of(K::Thaw).unwrap() - start,
        Duration::from_secs(1)
    );
    let status = status_of(&session, &hanging);
    assert_eq!(status.state, WriterState::FailedAtFreeze);
    assert_eq!(
        status.failure.unwrap().code,
        codes::VSS_E_WRITER_NOT_RESPONDING
    );
    session.release().await.unwrap();
    assert_eq!(hanging.count(K::BackupShutdown), 0);
    env.finish().await;
}

/// The thaw invariant when the caller gives up: a DoSnapshotSet future dropped while writers are
/// frozen still sends them Abort, and the providers AbortSnapshots; the session counts as failed.
#[tokio::test(start_paused = true)]
async fn dropped_do_snapshot_set_future_aborts_frozen_writers() {
    let mut env = Env::new(test_config(), &["sim"]);
    let frozen = env.writer("frozen", ApplicationLevel::FrontEnd);
    let frozen = env.add(frozen);
    let hanging = env.writer("hanging", ApplicationLevel::BackEnd);
    hanging.on(K::Freeze, Behavior::Hang);
    let hanging = env.add(hanging);
    let mut session = prepared(&env, &["/srv"]).await;
    let cut = tokio::time::timeout(Duration::from_secs(1), session.do_snapshot_set()).await;
    assert!(cut.is_err(), "the call was cut short");
    env.coord.wait_background().await;
    assert_eq!(frozen.count(K::Abort), 1);
    assert_eq!(hanging.count(K::Abort), 1);
    assert_eq!(frozen.count(K::Thaw), 0);
    assert!(env.log.events_of("sim").contains(&"AbortSnapshots".into()));
    assert_eq!(env.surviving_snapshots(), 0);
    assert_eq!(env.coord.set_in_creation(), None);
    assert_eq!(
        session.backup_complete().await.unwrap_err().code(),
        codes::VSS_E_BAD_STATE
    );
    session.release().await.unwrap();
    env.finish().await;
}

/// The thaw invariant under a panic in coordinator code (here raised by a provider inside the
/// commit window): the frozen writers still get Abort, the providers AbortSnapshots, and the
/// dropped session is released.
#[tokio::test(start_paused = true)]
async fn panic_inside_the_sequence_still_aborts_frozen_writers() {
    let log = shadowcopy_coordinator::sim::EventLog::new();
    let sim = std::sync::Arc::new(
        shadowcopy_coordinator::sim::SimProvider::new("sim").with_log(log.clone()),
    );
    let panicking: std::sync::Arc<dyn shadowcopy_coordinator::Provider> =
        std::sync::Arc::new(PanicsAtCommit(sim.clone()));
    let coord = shadowcopy_coordinator::Coordinator::new(test_config(), vec![panicking]);
    let mut env = Env {
        coord,
        log,
        providers: vec![sim],
        writers: Vec::new(),
    };
    let a = env.writer("a", ApplicationLevel::FrontEnd);
    let a = env.add(a);
    let b = env.writer("b", ApplicationLevel::System);
    let b = env.add(b);
    let mut session = prepared(&env, &["/srv"]).await;
    let task = tokio::spawn(async move { session.do_snapshot_set().await });
    let joined = task.await;
    assert!(joined.unwrap_err().is_panic());
    env.coord.wait_background().await;
    for writer in [&a, &b] {
        assert_eq!(writer.count(K::Freeze), 1);
        assert_eq!(writer.count(K::Abort), 1);
        assert_eq!(writer.kinds().last(), Some(&K::BackupShutdown));
    }
    assert!(env.log.events_of("sim").contains(&"AbortSnapshots".into()));
    assert_eq!(env.surviving_snapshots(), 0);
    assert_eq!(env.coord.set_in_creation(), None);
    env.finish().await;
}

/// A provider that panics in CommitSnapshots and otherwise delegates to a `SimProvider`.
struct PanicsAtCommit(std::sync::Arc<shadowcopy_coordinator::sim::SimProvider>);

#[async_trait::async_trait]
impl shadowcopy_coordinator::Provider for PanicsAtCommit {
    fn info(&self) -> shadowcopy_coordinator::ProviderInfo {
        self.0.info()
    }
    async fn is_volume_supported(
        &self,
        volume: &str,
        context: shadowcopy_metadata::enums::SnapshotContext,
    ) -> Result<shadowcopy_coordinator::VolumeSupport, shadowcopy_coordinator::ProviderError> {
        self.0.is_volume_supported(volume, context).await
    }
    async fn begin_prepare_snapshot(
        &self,
        set: shadowcopy_metadata::SnapshotSetId,
        snapshot: shadowcopy_metadata::SnapshotId,
        volume: &str,
        context: shadowcopy_metadata::enums::SnapshotContext,
    ) -> Result<(), shadowcopy_coordinator::ProviderError> {
        self.0
            .begin_prepare_snapshot(set, snapshot, volume, context)
            .await
    }
    async fn end_prepare_snapshots(
        &self,
        set: shadowcopy_metadata::SnapshotSetId,
    ) -> Result<(), shadowcopy_coordinator::ProviderError> {
        self.0.end_prepare_snapshots(set).await
    }
    async fn pre_commit_snapshots(
        &self,
        set: shadowcopy_metadata::SnapshotSetId,
    ) -> Result<(), shadowcopy_coordinator::ProviderError> {
        self.0.pre_commit_snapshots(set).await
    }
    async fn commit_snapshots(
        &self,
        _set: shadowcopy_metadata::SnapshotSetId,
    ) -> Result<(), shadowcopy_coordinator::ProviderError> {
        panic!("simulated bug inside the commit window");
    }
    async fn post_commit_snapshots(
        &self,
        set: shadowcopy_metadata::SnapshotSetId,
    ) -> Result<(), shadowcopy_coordinator::ProviderError> {
        self.0.post_commit_snapshots(set).await
    }
    async fn pre_final_commit_snapshots(
        &self,
        set: shadowcopy_metadata::SnapshotSetId,
    ) -> Result<(), shadowcopy_coordinator::ProviderError> {
        self.0.pre_final_commit_snapshots(set).await
    }
    async fn post_final_commit_snapshots(
        &self,
        set: shadowcopy_metadata::SnapshotSetId,
    ) -> Result<(), shadowcopy_coordinator::ProviderError> {
        self.0.post_final_commit_snapshots(set).await
    }
    async fn abort_snapshots(
        &self,
        set: shadowcopy_metadata::SnapshotSetId,
    ) -> Result<(), shadowcopy_coordinator::ProviderError> {
        self.0.abort_snapshots(set).await
    }
    async fn delete_snapshots(
        &self,
        target: shadowcopy_coordinator::DeleteTarget,
    ) -> Result<usize, shadowcopy_coordinator::ProviderError> {
        self.0.delete_snapshots(target).await
    }
    async fn query_snapshots(
        &self,
    ) -> Result<Vec<shadowcopy_coordinator::SnapshotRecord>, shadowcopy_coordinator::ProviderError>
    {
        self.0.query_snapshots().await
    }
}
