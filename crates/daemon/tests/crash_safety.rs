//! Thaw is sacred: writers frozen by a daemon that is killed with SIGKILL thaw at once, and a
//! daemon stopped with SIGTERM ends every held stream and exits.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shadowcopy_metadata::WriterClassId;
use shadowcopy_metadata::enums::ApplicationLevel;
use shadowcopy_metadata::wmd::{Component, FileDescriptor, WriterMetadata};
use shadowcopy_requester::{Canceller, Client, RequesterError};
use shadowcopy_test_support::DaemonProcess;
use shadowcopy_test_support::sets::{file_group, full_backup, wait_for};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterHandle, WriterOptions};

/// What a test writer saw, with the time it saw it.
type Journal = Arc<Mutex<Vec<(&'static str, Instant)>>>;

/// A writer that records Freeze, Thaw and Abort with their times.
struct RecordingWriter {
    name: String,
    class_id: WriterClassId,
    journal: Journal,
}

impl RecordingWriter {
    fn record(&self, event: &'static str) {
        self.journal.lock().unwrap().push((event, Instant::now()));
    }
}

impl Writer for RecordingWriter {
    fn metadata(&self) -> WriterMetadata {
        let data = Component::file_group(
            "",
            "data",
            true,
            vec![FileDescriptor::new("/sim/ok/data", "*", true)],
        );
        WriterMetadata::simple(self.name.clone(), self.class_id, vec![data])
    }

    async fn on_freeze(&self, _ctx: &EventContext) -> HandlerResult {
        self.record("freeze");
        Ok(())
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
        self.record("thaw");
        Ok(())
    }

    async fn on_abort(&self, _ctx: &EventContext) -> HandlerResult {
        self.record("abort");
        Ok(())
    }
}

fn daemon(name: &str, commit_window_ms: u32) -> DaemonProcess {
    let config = format!(
        "[service]\ncommit_window_ms = {commit_window_ms}\n[providers]\nsimulated = true\n"
    );
    DaemonProcess::start(Path::new(env!("CARGO_BIN_EXE_shadowcopyd")), name, &config)
}

/// Writers at the three application levels, each with a 60 s freeze timeout.
async fn three_writers(socket: &Path) -> Vec<(Journal, WriterHandle)> {
    let mut writers = Vec::new();
    for (i, level) in [
        ApplicationLevel::FrontEnd,
        ApplicationLevel::BackEnd,
        ApplicationLevel::System,
    ]
    .into_iter()
    .enumerate()
    {
        let journal = Journal::default();
        let writer = RecordingWriter {
            name: format!("crash-test-{i}"),
            class_id: WriterClassId::new_random(),
            journal: Arc::clone(&journal),
        };
        let options = WriterOptions {
            application_level: level,
            freeze_timeout: Duration::from_secs(60),
            ..WriterOptions::with_socket(socket)
        };
        let mut handle = shadowcopy_writer_sdk::spawn(writer, options);
        assert!(handle.registered().await.is_some(), "writer {i} registers");
        writers.push((journal, handle));
    }
    writers
}

fn saw(journal: &Journal, event: &str) -> Option<Instant> {
    journal
        .lock()
        .unwrap()
        .iter()
        .find(|(e, _)| *e == event)
        .map(|(_, t)| *t)
}

/// Drives a backup of every writer up to DoSnapshotSet on `volume`; DoSnapshotSet runs in a task
/// of its own, which aborts the backup if the call fails (BK-SNAP-9) and returns the call's result.
async fn start_backup(
    socket: &Path,
    volume: &'static str,
) -> (
    tokio::task::JoinHandle<Result<(), RequesterError>>,
    Canceller,
) {
    let client = Client::connect(socket)
        .await
        .expect("the requester connects");
    let (mut session, writers) = full_backup(&client).await;
    for wmd in &writers {
        session
            .add_component(&file_group(wmd, "", "data"))
            .await
            .unwrap();
    }
    session.start_snapshot_set().await.unwrap();
    session.add_to_snapshot_set(volume, None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    let canceller = session.canceller();
    let task = tokio::spawn(async move {
        let result = session.do_snapshot_set().await;
        if result.is_err() {
            let _ = session.abort_backup().await;
        }
        drop(client);
        result
    });
    (task, canceller)
}

/// Whether every writer has seen at least one of `events`.
fn every_writer_saw(writers: &[(Journal, WriterHandle)], events: &[&str]) -> bool {
    writers
        .iter()
        .all(|(journal, _)| events.iter().any(|event| saw(journal, event).is_some()))
}

/// A daemon (10 s commit window) with three writers, frozen in a backup of a simulated volume
/// whose provider hangs in commit; returns what [`start_backup`] returns with them.
async fn frozen_backup(
    name: &str,
) -> (
    DaemonProcess,
    Vec<(Journal, WriterHandle)>,
    tokio::task::JoinHandle<Result<(), RequesterError>>,
    Canceller,
) {
    let daemon = daemon(name, 10_000);
    let writers = three_writers(daemon.socket()).await;
    let (backup, canceller) = start_backup(daemon.socket(), "/sim/hang-at-commit/vol").await;
    wait_for(
        "all three writers to freeze",
        Duration::from_secs(20),
        || every_writer_saw(&writers, &["freeze"]),
    )
    .await;
    (daemon, writers, backup, canceller)
}

/// SIGKILL of the daemon while three writers are frozen: each runs its Abort handler at once,
/// long before its 60 s freeze deadline (architecture §2, BK-SNAP-5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemon_thaws_three_frozen_writers_at_once() {
    let (mut daemon, writers, backup, _canceller) = frozen_backup("kill-frozen").await;
    // The provider hangs in commit: nobody has thawed yet.
    assert!(
        writers
            .iter()
            .all(|(j, _)| saw(j, "thaw").is_none() && saw(j, "abort").is_none())
    );

    let killed = Instant::now();
    daemon.kill();
    wait_for("every writer to abort", Duration::from_secs(30), || {
        every_writer_saw(&writers, &["abort"])
    })
    .await;
    for (i, (journal, _)) in writers.iter().enumerate() {
        let frozen = saw(journal, "freeze").unwrap();
        let aborted = saw(journal, "abort").unwrap();
        let after_kill = aborted.saturating_duration_since(killed);
        let frozen_for = aborted.duration_since(frozen);
        eprintln!(
            "writer {i}: aborted {after_kill:?} after SIGKILL, frozen for {frozen_for:?} of 60 s"
        );
        assert!(
            after_kill < Duration::from_secs(5),
            "writer {i} waited {after_kill:?}"
        );
        assert!(
            frozen_for < Duration::from_secs(30),
            "writer {i} stayed frozen {frozen_for:?}"
        );
    }
    backup.abort();
}

/// SIGTERM ends every held stream: frozen writers are aborted and the daemon exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_and_thaws_writers() {
    let (mut daemon, writers, backup, _canceller) = frozen_backup("sigterm").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for(
        "every writer to thaw or abort",
        Duration::from_secs(30),
        || every_writer_saw(&writers, &["abort", "thaw"]),
    )
    .await;
    let start = Instant::now();
    loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "shadowcopyd exits cleanly: {status}\n{}",
                daemon.log_text()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "shadowcopyd did not exit after SIGTERM:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!daemon.socket().exists(), "the socket is removed at exit");
    backup.abort();
}

/// ROLE-3: a Cancel stops a DoSnapshotSet that hangs in the provider's commit; the frozen writers
/// are aborted at once rather than at the end of the commit window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_do_snapshot_set_aborts_frozen_writers() {
    let (_daemon, writers, backup, canceller) = frozen_backup("cancel").await;
    let cancelled = Instant::now();
    canceller
        .cancel()
        .await
        .expect("the daemon takes the cancel");
    let result = backup.await.unwrap();
    assert!(
        matches!(result, Err(RequesterError::Cancelled { .. })),
        "{result:?}"
    );
    wait_for("every writer to abort", Duration::from_secs(5), || {
        every_writer_saw(&writers, &["abort"])
    })
    .await;
    assert!(
        writers.iter().all(|(j, _)| saw(j, "thaw").is_none()),
        "aborted, not thawed"
    );
    eprintln!("writers aborted {:?} after the cancel", cancelled.elapsed());
}
