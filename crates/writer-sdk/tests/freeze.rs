//! The freeze guarantees of the writer SDK: the freeze timer aborts a writer whose Thaw is late
//! and the Thaw then reports VSS_E_WRITERERROR_TIMEOUT (BK-SNAP-5), and a writer thaws at once
//! when its coordinator goes away or its host stops it (architecture §2 and §8).
//!
//! No test asserts how long something took, only the order of events ("the abort ran before Thaw
//! was sent") or, for "at once", a bound far below the freeze timeout (seconds against a minute).

mod support;

use std::time::Duration;

use shadowcopy_metadata::codes;
use shadowcopy_writer_sdk::{AbortCause, EventKind, SdkError, WriterOptions, spawn};
use support::events::{self, SESSION};
use support::{FakeCoordinator, Journal, TestWriter, test_components};

/// How soon "at once" must happen; far below the 60 s freeze timeout of those tests.
const AT_ONCE: Duration = Duration::from_secs(5);

/// Thaw did not arrive within the freeze timeout: on_abort ran by itself, and the late Thaw is
/// answered with VSS_E_WRITERERROR_TIMEOUT without calling on_thaw (BK-SNAP-5).
#[tokio::test(flavor = "multi_thread")]
async fn freeze_timer_aborts_and_thaw_reports_timeout() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let options = WriterOptions {
        freeze_timeout: Duration::from_millis(200),
        ..coordinator.options()
    };
    let writer = spawn(TestWriter::new(&journal), options);
    let mut stream = coordinator.accept().await;
    assert_eq!(stream.register.freeze_timeout_ms, 200);
    let components = test_components(stream.instance_id);
    assert!(
        stream
            .call(SESSION, events::prepare_for_backup(&components))
            .await
            .result
            .success
    );
    assert!(
        stream
            .call(SESSION, events::prepare_for_snapshot(&["/srv"]))
            .await
            .result
            .success
    );
    assert!(stream.call(SESSION, events::freeze(0)).await.result.success);

    let abort = journal.wait_for(EventKind::Abort).await;
    assert_eq!(abort.abort_cause, Some(AbortCause::FreezeTimeout));
    let thaw = stream.send(SESSION, events::thaw());
    assert!(
        abort.at < stream.sent_at(thaw),
        "on_abort ran before Thaw was sent"
    );
    let reply = stream.reply().await;
    assert_eq!(reply.result.event_id, thaw);
    assert!(!reply.result.success);
    assert_eq!(
        reply.failure_code(),
        Some(codes::VSS_E_WRITERERROR_TIMEOUT.value)
    );
    assert!(reply.result.application_message.contains("BK-SNAP-5"));
    assert_eq!(
        journal.count(EventKind::Thaw),
        0,
        "on_thaw is not called after the abort"
    );
    assert_eq!(journal.count(EventKind::Abort), 1);

    // The writer goes on: PostSnapshot and BackupShutdown are answered normally.
    assert!(
        stream
            .call(SESSION, events::backup_shutdown())
            .await
            .result
            .success
    );
    writer.shutdown().await.expect("a clean stop");
}

/// The event's own deadline counts too when it is shorter than the writer's freeze timeout.
#[tokio::test(flavor = "multi_thread")]
async fn the_events_shorter_deadline_is_enforced() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let writer = spawn(TestWriter::new(&journal), coordinator.options());
    let mut stream = coordinator.accept().await;
    assert!(
        stream
            .call(SESSION, events::freeze(200))
            .await
            .result
            .success
    );
    let abort = journal.wait_for(EventKind::Abort).await;
    assert_eq!(abort.abort_cause, Some(AbortCause::FreezeTimeout));
    let reply = stream.call(SESSION, events::thaw()).await;
    assert_eq!(
        reply.failure_code(),
        Some(codes::VSS_E_WRITERERROR_TIMEOUT.value)
    );
    writer.shutdown().await.expect("a clean stop");
}

/// The freeze timer fires while another handler (here a slow Identify, which may arrive at any
/// time, ROLE-6) is still running: on_abort runs next to it without waiting for it.
#[tokio::test(flavor = "multi_thread")]
async fn freeze_timer_fires_while_a_handler_runs() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let test_writer = TestWriter {
        delay_in: Some((EventKind::Identify, Duration::from_secs(3600))),
        ..TestWriter::new(&journal)
    };
    let options = WriterOptions {
        freeze_timeout: Duration::from_millis(200),
        ..coordinator.options()
    };
    let writer = spawn(test_writer, options);
    let mut stream = coordinator.accept().await;
    assert!(stream.call(SESSION, events::freeze(0)).await.result.success);
    stream.send("", events::identify());
    journal.wait_for(EventKind::Identify).await;
    let abort = journal.wait_for(EventKind::Abort).await;
    assert_eq!(abort.abort_cause, Some(AbortCause::FreezeTimeout));
    assert_eq!(
        journal.kinds(),
        [EventKind::Freeze, EventKind::Identify, EventKind::Abort]
    );
    // Stopping the writer stops the hour-long Identify, which changes no state (ROLE-6).
    tokio::time::timeout(AT_ONCE, writer.shutdown())
        .await
        .expect("the writer stops at once")
        .expect("a clean stop");
}

/// A Thaw in time stops the timer: no abort follows, however long the test then waits.
#[tokio::test(flavor = "multi_thread")]
async fn thaw_in_time_stops_the_timer() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let options = WriterOptions {
        freeze_timeout: Duration::from_millis(300),
        ..coordinator.options()
    };
    let writer = spawn(TestWriter::new(&journal), options);
    let mut stream = coordinator.accept().await;
    assert!(stream.call(SESSION, events::freeze(0)).await.result.success);
    let reply = stream.call(SESSION, events::thaw()).await;
    assert!(reply.result.success, "{:?}", reply.result);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(journal.kinds(), [EventKind::Freeze, EventKind::Thaw]);
    writer.shutdown().await.expect("a clean stop");
}

/// The coordinator drops the stream while the writer is frozen: on_abort runs at once, long
/// before the 60 s freeze timer, and run() ends with CoordinatorGone (architecture §2).
#[tokio::test(flavor = "multi_thread")]
async fn stream_loss_while_frozen_aborts_at_once() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let options = WriterOptions {
        freeze_timeout: Duration::from_secs(60),
        ..coordinator.options()
    };
    let writer = spawn(TestWriter::new(&journal), options);
    let mut stream = coordinator.accept().await;
    let components = test_components(stream.instance_id);
    for event in [
        events::prepare_for_backup(&components),
        events::prepare_for_snapshot(&["/srv"]),
        events::freeze(0),
    ] {
        assert!(stream.call(SESSION, event).await.result.success);
    }
    let dropped = tokio::time::Instant::now();
    stream.drop_stream();
    let abort = journal.wait_for(EventKind::Abort).await;
    assert_eq!(abort.abort_cause, Some(AbortCause::CoordinatorGone));
    assert!(
        abort.at.duration_since(dropped) < AT_ONCE,
        "on_abort ran at once"
    );
    let end = tokio::time::timeout(AT_ONCE, writer.join())
        .await
        .expect("run() returns once the writer is thawed");
    assert!(
        matches!(end, Err(SdkError::CoordinatorGone { .. })),
        "{end:?}"
    );
    assert_eq!(journal.count(EventKind::Abort), 1);
    assert_eq!(journal.count(EventKind::Thaw), 0);
}

/// The coordinator goes away while a Freeze handler hangs: the handler is cancelled and on_abort
/// runs at once, so that a Freeze finishing late cannot leave the writer frozen (architecture §8).
#[tokio::test(flavor = "multi_thread")]
async fn stream_loss_during_a_hung_freeze_cancels_it_and_aborts() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let test_writer = TestWriter {
        delay_in: Some((EventKind::Freeze, Duration::from_secs(3600))),
        ..TestWriter::new(&journal)
    };
    let writer = spawn(test_writer, coordinator.options());
    let mut stream = coordinator.accept().await;
    stream.send(SESSION, events::freeze(0));
    journal.wait_for(EventKind::Freeze).await;
    let dropped = tokio::time::Instant::now();
    stream.drop_stream();
    let abort = journal.wait_for(EventKind::Abort).await;
    assert_eq!(abort.abort_cause, Some(AbortCause::CoordinatorGone));
    assert!(abort.at.duration_since(dropped) < AT_ONCE);
    let end = tokio::time::timeout(AT_ONCE, writer.join()).await.unwrap();
    assert!(
        matches!(end, Err(SdkError::CoordinatorGone { .. })),
        "{end:?}"
    );
}

/// Stopping the writer while it is frozen aborts it first, closes the stream, and is a clean stop.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_while_frozen_aborts_first() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let writer = spawn(TestWriter::new(&journal), coordinator.options());
    let mut stream = coordinator.accept().await;
    assert!(stream.call(SESSION, events::freeze(0)).await.result.success);
    tokio::time::timeout(AT_ONCE, writer.shutdown())
        .await
        .expect("the writer stops at once")
        .expect("a clean stop");
    let entries = journal.entries();
    assert_eq!(entries.last().unwrap().kind, EventKind::Abort);
    assert_eq!(
        entries.last().unwrap().abort_cause,
        Some(AbortCause::Shutdown)
    );
    stream.closed_by_writer().await;
}

/// Stopping an idle writer runs no handler at all.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_when_idle_runs_no_handler() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let writer = spawn(TestWriter::new(&journal), coordinator.options());
    let mut stream = coordinator.accept().await;
    assert!(stream.call("", events::identify()).await.result.success);
    writer.shutdown().await.expect("a clean stop");
    assert_eq!(journal.kinds(), [EventKind::Identify]);
    stream.closed_by_writer().await;
}

/// With `reconnect`, a writer whose coordinator went away thaws, then registers again.
#[tokio::test(flavor = "multi_thread")]
async fn reconnect_registers_again_after_the_abort() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let options = WriterOptions {
        reconnect: true,
        ..coordinator.options()
    };
    let mut writer = spawn(TestWriter::new(&journal), options);
    let mut first = coordinator.accept().await;
    assert_eq!(writer.registered().await, Some(first.instance_id));
    assert!(first.call(SESSION, events::freeze(0)).await.result.success);
    first.drop_stream();
    let mut second = coordinator.accept().await;
    assert_ne!(second.instance_id, first.instance_id);
    assert_eq!(
        journal.count(EventKind::Abort),
        1,
        "thawed before registering again"
    );
    assert!(second.call("", events::identify()).await.result.success);
    writer.shutdown().await.expect("a clean stop");
}
