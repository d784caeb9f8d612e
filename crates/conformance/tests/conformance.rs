//! The conformance binary against real `shadowcopyd` processes: the whole suite passes, a requester
//! killed after DoSnapshotSet has its set released (TS-15, BK-END-6), and `run --writer` tells a
//! healthy writer written by someone else from a broken one.
//!
//! Each test starts its own daemon with `TEST_CONFIG` (simulated providers, 5 s event timeouts, a
//! 2 s commit window) in its own directory; the guards kill the daemon, the child processes and the
//! writers, and remove the directory, also when the test fails. `shadowcopyd` must be built first
//! (`cargo build --workspace`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use shadowcopy_conformance::writer::{Action, RunningWriter, TestWriter};
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use shadowcopy_requester::{Client, SnapshotFilter};
use shadowcopy_test_support::{DaemonProcess, TEST_CONFIG, workspace_binary};
use shadowcopy_writer_sdk::{EventKind, WriterFailure};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The conformance binary built for this test run.
const CONFORMANCE: &str = env!("CARGO_BIN_EXE_shadowcopy-conformance");

/// `service.commit_window_ms` of `TEST_CONFIG`, so that the commit-window scenarios check it exactly.
const TEST_COMMIT_WINDOW_MS: &str = "2000";

fn daemon(name: &str) -> DaemonProcess {
    DaemonProcess::start(&workspace_binary("shadowcopyd"), name, TEST_CONFIG)
}

/// The last lines of the daemon's log, for failure messages.
fn log_tail(daemon: &DaemonProcess) -> String {
    let log = daemon.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Registers a test writer and waits for its registration.
async fn register(writer: TestWriter, socket: &Path) -> RunningWriter {
    let name = writer.name().to_owned();
    let mut running = writer.spawn(socket);
    running
        .registered(Duration::from_secs(10))
        .await
        .unwrap_or_else(|error| panic!("writer {name} registers: {error}"));
    running
}

/// Parses `N passed, M failed`.
fn summary(line: &str) -> Option<(usize, usize)> {
    let (passed, failed) = line.split_once(" passed, ")?;
    let failed = failed.strip_suffix(" failed")?;
    Some((passed.parse().ok()?, failed.parse().ok()?))
}

/// Runs `shadowcopy-conformance run` with `args` and returns its exit status and stdout.
async fn run_conformance(socket: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let output = tokio::process::Command::new(CONFORMANCE)
        .arg("run")
        .arg("--socket")
        .arg(socket)
        .args(["--commit-window-ms", TEST_COMMIT_WINDOW_MS])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("the conformance binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status, format!("{stdout}{stderr}"))
}

/// Every built-in scenario passes against a fresh daemon, and the summary line says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_against_the_daemon() {
    let daemon = daemon("conformance-suite");
    let (status, output) = run_conformance(daemon.socket(), &[]).await;
    let last = output
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    let counts = summary(last);
    assert!(
        status.success() && matches!(counts, Some((passed, 0)) if passed >= 20),
        "the suite must pass with at least 20 scenarios; exit {status}, summary {last:?}\n\
         {output}\n--- shadowcopyd log ---\n{}",
        log_tail(&daemon)
    );
}

/// What `hold-session` prints.
#[derive(Debug, serde::Deserialize)]
struct Held {
    set_id: SnapshotSetId,
    snapshot_ids: Vec<SnapshotId>,
}

/// TS-15, BK-END-6: a requester killed with SIGKILL after DoSnapshotSet, before BackupComplete:
/// both writers get BackupShutdown with the set id and no BackupComplete, and the auto-release
/// shadow copies are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_killed_after_do_snapshot_set_releases_the_set() {
    let daemon = daemon("kill-requester");
    let socket = daemon.socket().to_owned();
    let mut writers = Vec::new();
    for name in ["kill-test-a", "kill-test-b"] {
        writers.push(register(TestWriter::new(name), &socket).await);
    }

    let mut child = tokio::process::Command::new(CONFORMANCE)
        .arg("hold-session")
        .arg("--socket")
        .arg(&socket)
        .args(["--volume", "/sim/ok/x"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("hold-session starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        BufReader::new(stdout).lines().next_line().await
    })
    .await
    .expect("hold-session prints its set within 30 s")
    .expect("hold-session's stdout is readable")
    .unwrap_or_else(|| panic!("hold-session exited early\n{}", log_tail(&daemon)));
    let held: Held = serde_json::from_str(&line)
        .unwrap_or_else(|error| panic!("hold-session printed {line:?}: {error}"));
    assert_eq!(held.snapshot_ids.len(), 1, "{line}");

    let admin = Client::connect(&socket).await.expect("connect").admin();
    let listed = admin
        .list_snapshots(&SnapshotFilter::default())
        .await
        .expect("ListSnapshots");
    assert!(
        held.snapshot_ids
            .iter()
            .all(|id| listed.iter().any(|s| s.snapshot_id == *id)),
        "the held set's shadow copies exist before the kill"
    );
    for writer in &writers {
        assert!(
            writer.journal.saw(EventKind::PostSnapshot),
            "writer {} took part in the held backup: {:?}",
            writer.name,
            writer.journal.events()
        );
        assert!(!writer.journal.saw(EventKind::BackupShutdown));
    }

    // std and tokio kill with SIGKILL: the requester gets no chance to release its session.
    child.kill().await.expect("SIGKILL the requester");

    for writer in &writers {
        let shutdown = writer
            .journal
            .wait_for(EventKind::BackupShutdown, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "writer {} got no BackupShutdown within 5 s of the kill (BK-END-6): {:?}\n{}",
                    writer.name,
                    writer.journal.events(),
                    log_tail(&daemon)
                )
            });
        assert_eq!(shutdown.set_id, Some(held.set_id), "BK-END-5: the set id");
        assert!(
            !shutdown.backup_completed,
            "no BackupComplete came, so the writer must not truncate its log (TS-15)"
        );
        assert!(!writer.journal.saw(EventKind::BackupComplete));
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let listed = admin
            .list_snapshots(&SnapshotFilter::default())
            .await
            .expect("ListSnapshots");
        let left: Vec<_> = listed
            .iter()
            .filter(|s| held.snapshot_ids.contains(&s.snapshot_id))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the auto-release shadow copies of the killed requester's set survive (BK-END-6): \
             {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for writer in writers {
        writer.stop().await;
    }
}

/// `run --writer` on a healthy writer written by someone else: every writer check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_writer_passes_the_writer_checks() {
    let daemon = daemon("healthy-writer");
    let writer = register(TestWriter::new("healthy-writer"), daemon.socket()).await;
    let (status, output) = run_conformance(daemon.socket(), &["--writer", "healthy-writer"]).await;
    assert!(
        status.success() && output.lines().any(|l| l == "5 passed, 0 failed"),
        "a healthy writer must pass every writer check; exit {status}\n{output}\n{}",
        log_tail(&daemon)
    );
    writer.stop().await;
}

/// `run --writer` on a writer that vetoes every Freeze: the report has failures, names the broken
/// state, and the exit status is non-zero, while the checks that do not freeze still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_writer_is_caught() {
    let daemon = daemon("broken-writer");
    let broken = TestWriter::new("broken-writer").on(
        EventKind::Freeze,
        Action::Fail(WriterFailure::non_retryable(
            "this writer vetoes every Freeze",
        )),
    );
    let class_id = broken.class_id();
    let writer = register(broken, daemon.socket()).await;
    // By class id, the other way of naming a writer.
    let (status, output) = run_conformance(
        daemon.socket(),
        &["--writer", &class_id.to_string(), "--json"],
    )
    .await;
    assert!(
        !status.success(),
        "a broken writer must fail the run\n{output}"
    );
    let json_start = output.find('{').expect("a JSON report");
    let report: serde_json::Value = serde_json::Deserializer::from_str(&output[json_start..])
        .into_iter()
        .next()
        .expect("one JSON document")
        .expect("the report is JSON");
    assert!(
        report["failed"].as_u64().unwrap_or(0) > 0,
        "the report must count failures: {report:#}"
    );
    let scenario = |id: &str| {
        report["scenarios"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["id"] == id))
            .unwrap_or_else(|| panic!("scenario {id} in {report:#}"))
            .clone()
    };
    let full = scenario("WR-3");
    assert_eq!(full["passed"], false, "{full:#}");
    assert!(
        full["reason"]
            .as_str()
            .is_some_and(|r| r.contains("FAILED_AT_FREEZE")),
        "the reason names the state the veto left: {full:#}"
    );
    assert_eq!(
        scenario("WR-1")["passed"],
        true,
        "Identify is fine: {report:#}"
    );
    assert_eq!(
        scenario("WR-2")["passed"],
        true,
        "the WMD is fine: {report:#}"
    );
    writer.stop().await;
}
