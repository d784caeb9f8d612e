//! The snapshot-set observer: every set is reported once, however it ends (created, failed with
//! its code, cut short), with its freeze window measured from the first Freeze sent to the last
//! Thaw (or Abort) answered. On a paused clock, so the windows are exact virtual times.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Behavior, Env, prepared, test_config};
use shadowcopy_coordinator::sim::{EventLog, FaultPlan, SimProvider};
use shadowcopy_coordinator::{
    ProviderStep, SetObserver, SetOutcome, SetVolume, SnapshotSetReport, WriterEventKind,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ApplicationLevel, SnapshotContext};

/// Keeps every report it is handed.
#[derive(Default)]
struct Reports(Mutex<Vec<SnapshotSetReport>>);

impl SetObserver for Reports {
    fn snapshot_set_finished(&self, report: &SnapshotSetReport) {
        self.0.lock().unwrap().push(report.clone());
    }
}

impl Reports {
    fn all(&self) -> Vec<SnapshotSetReport> {
        self.0.lock().unwrap().clone()
    }
}

/// One provider for `/a` with `faults`, one writer, and an observer installed.
fn env_with(faults: FaultPlan) -> (Env, Arc<Reports>) {
    let log = EventLog::new();
    let provider = Arc::new(
        SimProvider::new("sim-a")
            .supporting(&["/a"])
            .with_log(log.clone())
            .with_faults(faults),
    );
    let mut env = Env::with_providers(test_config(), vec![provider], log);
    let writer = env.writer("app", ApplicationLevel::FrontEnd);
    env.add(writer);
    let reports = Arc::new(Reports::default());
    env.coord.observe_snapshot_sets(reports.clone());
    (env, reports)
}

#[tokio::test(start_paused = true)]
async fn a_created_set_is_reported_with_its_freeze_window() {
    let (env, reports) =
        env_with(FaultPlan::new().delay(ProviderStep::CommitSnapshots, Duration::from_millis(100)));
    env.writers[0].on(
        WriterEventKind::Thaw,
        Behavior::Delay(Duration::from_millis(30)),
    );
    let mut session = prepared(&env, &["/a"]).await;
    let set = session.snapshot_set_id().unwrap();
    assert!(
        reports.all().is_empty(),
        "nothing is reported before DoSnapshotSet"
    );
    session.do_snapshot_set().await.unwrap();

    let all = reports.all();
    assert_eq!(all.len(), 1, "{all:?}");
    let report = &all[0];
    assert_eq!(report.set_id, set);
    assert_eq!(report.outcome, SetOutcome::Created);
    assert_eq!(report.context, SnapshotContext::Backup);
    assert_eq!(report.writers, 1);
    assert_eq!(
        report.volumes,
        vec![SetVolume {
            volume: "/a".into(),
            provider: "sim-a".into()
        }]
    );
    // Freeze answered at once, the commit took 100 ms, the Thaw answer 30 ms more.
    assert_eq!(report.freeze_window, Some(Duration::from_millis(130)));
    let writer = &env.writers[0];
    let frozen = writer.time_of(WriterEventKind::Freeze).unwrap();
    let thawed = writer.time_of(WriterEventKind::Thaw).unwrap() + Duration::from_millis(30);
    assert_eq!(report.freeze_window, Some(thawed - frozen));
    assert!(report.duration >= Duration::from_millis(130), "{report:?}");

    session.release().await.unwrap();
    env.finish().await;
    assert_eq!(reports.all().len(), 1, "release reports nothing more");
}

#[tokio::test(start_paused = true)]
async fn a_failed_set_is_reported_with_its_code_and_the_window_until_abort() {
    let (env, reports) = env_with(FaultPlan::new().fail(
        ProviderStep::CommitSnapshots,
        codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
    ));
    env.writers[0].on(
        WriterEventKind::Abort,
        Behavior::Delay(Duration::from_millis(20)),
    );
    let mut session = prepared(&env, &["/a"]).await;
    let error = session.do_snapshot_set().await.unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);

    let all = reports.all();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        all[0].outcome,
        SetOutcome::Failed(codes::VSS_E_UNEXPECTED_PROVIDER_ERROR)
    );
    // The writers stay frozen until their Abort is answered, 20 ms after the failure.
    assert_eq!(all[0].freeze_window, Some(Duration::from_millis(20)));
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    env.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_freeze_has_no_freeze_window() {
    let (env, reports) = env_with(FaultPlan::new().fail(
        ProviderStep::EndPrepareSnapshots,
        codes::VSS_E_INSUFFICIENT_STORAGE,
    ));
    let mut session = prepared(&env, &["/a"]).await;
    session.do_snapshot_set().await.unwrap_err();
    let all = reports.all();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        all[0].outcome,
        SetOutcome::Failed(codes::VSS_E_INSUFFICIENT_STORAGE)
    );
    assert_eq!(all[0].freeze_window, None, "no writer was frozen");
    session.release().await.unwrap();
    env.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_set_cut_short_is_reported_as_interrupted() {
    let (env, reports) = env_with(FaultPlan::new().hang(ProviderStep::CommitSnapshots));
    let mut session = prepared(&env, &["/a"]).await;
    // The requester gives up mid-commit: its call is dropped, as when its stream ends.
    let cut = tokio::time::timeout(Duration::from_secs(1), session.do_snapshot_set()).await;
    assert!(cut.is_err(), "the commit hangs");
    let all = reports.all();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].outcome, SetOutcome::Interrupted);
    assert_eq!(all[0].freeze_window, None);
    assert_eq!(all[0].duration, Duration::from_secs(1));
    drop(session);
    env.finish().await;
}
