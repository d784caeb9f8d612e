//! The writer SDK against a scripted fake coordinator: registration, the backup and restore event
//! sequences, component-record edits and their windows (BCD-7), failures and panics (ERR-1),
//! self-abort on a failed Freeze (BK-SNAP-7) and Abort handling (BK-ABORT-3).

mod support;

use shadowcopy_metadata::WriterMetadata;
use shadowcopy_metadata::bcd::Party;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ApplicationLevel, RestoreTarget, SubscribeMask};
use shadowcopy_metadata::json::Document;
use shadowcopy_protocol::ProtocolVersion;
use shadowcopy_writer_sdk::{AbortCause, EventKind, SdkError, WriterFailure, WriterOptions, spawn};
use std::time::Duration;
use support::events::{self, SESSION};
use support::{FakeCoordinator, Journal, TestWriter, test_components, test_wmd};

/// Register carries the WMD and the ROLE-8 parameters, after a Hello with our version.
#[tokio::test(flavor = "multi_thread")]
async fn registration_carries_the_wmd_and_the_role8_parameters() {
    let mut coordinator = FakeCoordinator::start().await;
    let options = WriterOptions {
        application_level: ApplicationLevel::BackEnd,
        freeze_timeout: Duration::from_secs(20),
        subscribe_mask: SubscribeMask::BACKUP_EVENTS,
        instance_name: Some("main".into()),
        ..coordinator.options()
    };
    let mut writer = spawn(TestWriter::default(), options);
    let stream = coordinator.accept().await;
    let register = &stream.register;
    let wmd = WriterMetadata::from_json(&register.wmd_json).expect("the WMD is valid JSON");
    let mut expected = test_wmd();
    expected.identity.instance_name = Some("main".into());
    assert_eq!(wmd, expected);
    assert_eq!(
        register.application_level,
        ApplicationLevel::BackEnd.value()
    );
    assert_eq!(register.freeze_timeout_ms, 20_000);
    assert_eq!(register.subscribe_mask, SubscribeMask::BACKUP_EVENTS.bits());
    assert_eq!(register.instance_name.as_deref(), Some("main"));
    assert_eq!(writer.registered().await, Some(stream.instance_id));
    let hellos = coordinator.hellos.lock().unwrap().clone();
    assert_eq!(hellos.len(), 1);
    assert_eq!(hellos[0].protocol_major, ProtocolVersion::CURRENT.major);
    assert!(
        hellos[0].client_name.contains("TestWriter"),
        "{:?}",
        hellos[0]
    );
    writer.shutdown().await.expect("a clean stop");
}

/// The defaults of ROLE-8 go on the wire: FRONT_END, 60000 ms, backup plus restore events.
#[tokio::test(flavor = "multi_thread")]
async fn registration_defaults_follow_role8() {
    let mut coordinator = FakeCoordinator::start().await;
    let writer = spawn(TestWriter::default(), coordinator.options());
    let stream = coordinator.accept().await;
    assert_eq!(stream.register.application_level, 3);
    assert_eq!(stream.register.freeze_timeout_ms, 60_000);
    assert_eq!(stream.register.subscribe_mask, 0x6);
    assert_eq!(stream.register.instance_name, None);
    writer.shutdown().await.expect("a clean stop");
}

/// Every event of a full backup is answered, in order, by the handler of its kind; Identify
/// answers with the WMD carrying the assigned instance id (ROLE-6, BK-SNAP-2).
#[tokio::test(flavor = "multi_thread")]
async fn full_backup_sequence_is_answered_in_order() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let writer = spawn(TestWriter::new(&journal), coordinator.options());
    let mut stream = coordinator.accept().await;
    let components = test_components(stream.instance_id);

    let identify = stream.call("", events::identify()).await;
    assert!(identify.result.success);
    let wmd = WriterMetadata::from_json(identify.result.wmd_json.as_deref().unwrap()).unwrap();
    assert_eq!(wmd.identity.instance_id, stream.instance_id);
    assert_eq!(wmd.components, test_wmd().components);

    let sequence = [
        events::prepare_for_backup(&components),
        events::prepare_for_snapshot(&["/srv"]),
        events::freeze(0),
        events::thaw(),
        events::post_snapshot(&components),
        events::backup_complete(&components),
        events::backup_shutdown(),
    ];
    for event in sequence {
        let reply = stream.call(SESSION, event).await;
        assert!(reply.result.success, "{:?}", reply.result);
        assert_eq!(reply.result.failure, None);
        assert_eq!(reply.result.wmd_json, None);
        // Nothing was edited, so no records come back (writer.proto EventResult).
        assert_eq!(reply.result.components_json, None);
    }
    assert_eq!(
        journal.kinds(),
        [
            EventKind::Identify,
            EventKind::PrepareForBackup,
            EventKind::PrepareForSnapshot,
            EventKind::Freeze,
            EventKind::Thaw,
            EventKind::PostSnapshot,
            EventKind::BackupComplete,
            EventKind::BackupShutdown,
        ]
    );
    writer.shutdown().await.expect("a clean stop");
}

/// Events sent back to back are handled one at a time, in order (ROLE-5), even when an earlier
/// handler is slow.
#[tokio::test(flavor = "multi_thread")]
async fn queued_events_run_one_at_a_time_in_order() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let test_writer = TestWriter {
        delay_in: Some((EventKind::PrepareForSnapshot, Duration::from_millis(200))),
        ..TestWriter::new(&journal)
    };
    let writer = spawn(test_writer, coordinator.options());
    let mut stream = coordinator.accept().await;
    let first = stream.send(SESSION, events::prepare_for_snapshot(&["/srv"]));
    let second = stream.send("", events::identify());
    assert_eq!(stream.reply().await.result.event_id, first);
    assert_eq!(stream.reply().await.result.event_id, second);
    assert_eq!(
        journal.kinds(),
        [EventKind::PrepareForSnapshot, EventKind::Identify]
    );
    writer.shutdown().await.expect("a clean stop");
}

/// Edits made through the checked editor in PrepareForBackup and PostSnapshot come back in
/// components_json (BCD-6, BCD-7); the handler sees the session's state in its context.
#[tokio::test(flavor = "multi_thread")]
async fn component_edits_come_back_in_components_json() {
    let mut coordinator = FakeCoordinator::start().await;
    let test_writer = TestWriter {
        prepare_backup: Some(Box::new(|ctx, components| {
            assert_eq!(ctx.event(), EventKind::PrepareForBackup);
            assert!(ctx.backup_state().unwrap().component_mode);
            components
                .edit(Party::Writer, ctx.phase(), "", "data")?
                .set_backup_metadata("checkpoint=41")?;
            Ok(())
        })),
        post_snapshot: Some(Box::new(|ctx, components| {
            assert!(ctx.is_path_affected("/srv/test/file"));
            assert_eq!(
                ctx.snapshot_path_of("/srv/test/file").unwrap(),
                std::path::Path::new("/run/shadowcopy/snap/srv/test/file")
            );
            assert_eq!(ctx.set_id().unwrap().to_string(), events::SET);
            components
                .edit(Party::Writer, ctx.phase(), "", "data")?
                .set_backup_stamp("lsn:42")?;
            Ok(())
        })),
        ..TestWriter::default()
    };
    let writer = spawn(test_writer, coordinator.options());
    let mut stream = coordinator.accept().await;
    let components = test_components(stream.instance_id);

    let reply = stream
        .call(SESSION, events::prepare_for_backup(&components))
        .await;
    assert!(reply.result.success, "{:?}", reply.result);
    let after_prepare = reply.components().expect("the edit comes back");
    let record = after_prepare.component("", "data").unwrap();
    assert_eq!(record.backup_metadata(), Some("checkpoint=41"));

    for event in [
        events::prepare_for_snapshot(&["/srv"]),
        events::freeze(0),
        events::thaw(),
    ] {
        assert!(stream.call(SESSION, event).await.result.success);
    }
    let reply = stream
        .call(SESSION, events::post_snapshot(&after_prepare))
        .await;
    assert!(reply.result.success, "{:?}", reply.result);
    let after_post = reply.components().expect("the stamp comes back");
    let record = after_post.component("", "data").unwrap();
    assert_eq!(record.backup_stamp(), Some("lsn:42"));
    assert_eq!(record.backup_metadata(), Some("checkpoint=41"));
    writer.shutdown().await.expect("a clean stop");
}

/// An edit outside its window (a restore target during PrepareForBackup) is refused by the
/// metadata crate's checks, and the refusal is the event's failure (BCD-7, ERR-1).
#[tokio::test(flavor = "multi_thread")]
async fn edit_outside_the_window_is_refused_and_reported() {
    let mut coordinator = FakeCoordinator::start().await;
    let test_writer = TestWriter {
        prepare_backup: Some(Box::new(|ctx, components| {
            components
                .edit(Party::Writer, ctx.phase(), "", "data")?
                .set_restore_target(RestoreTarget::Alternate)?;
            Ok(())
        })),
        ..TestWriter::default()
    };
    let writer = spawn(test_writer, coordinator.options());
    let mut stream = coordinator.accept().await;
    let components = test_components(stream.instance_id);
    let reply = stream
        .call(SESSION, events::prepare_for_backup(&components))
        .await;
    assert!(!reply.result.success);
    assert_eq!(
        reply.failure_code(),
        Some(codes::VSS_E_WRITERERROR_NONRETRYABLE.value)
    );
    let message = &reply.result.application_message;
    assert!(message.contains("restore_target"), "{message}");
    assert!(message.contains("VSS_E_BAD_STATE"), "{message}");
    assert!(message.contains("BCD-7"), "{message}");
    // The refused edit changed nothing, so no records come back.
    assert_eq!(reply.result.components_json, None);
    writer.shutdown().await.expect("a clean stop");
}

/// PreRestore may set the restore target (BCD-6), and it comes back; PostRestore is answered.
#[tokio::test(flavor = "multi_thread")]
async fn restore_events_edit_in_their_windows() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let test_writer = TestWriter {
        pre_restore: Some(Box::new(|ctx, components| {
            components
                .edit(Party::Writer, ctx.phase(), "", "data")?
                .set_restore_target(RestoreTarget::Alternate)?;
            Ok(())
        })),
        ..TestWriter::new(&journal)
    };
    let writer = spawn(test_writer, coordinator.options());
    let mut stream = coordinator.accept().await;
    let components = test_components(stream.instance_id);
    let reply = stream.call(SESSION, events::pre_restore(&components)).await;
    assert!(reply.result.success, "{:?}", reply.result);
    let edited = reply.components().unwrap();
    assert_eq!(
        edited.component("", "data").unwrap().restore_target(),
        RestoreTarget::Alternate
    );
    let reply = stream.call(SESSION, events::post_restore(&edited)).await;
    assert!(reply.result.success, "{:?}", reply.result);
    assert_eq!(
        journal.kinds(),
        [EventKind::PreRestore, EventKind::PostRestore]
    );
    writer.shutdown().await.expect("a clean stop");
}

/// A handler that panics gives a NONRETRYABLE failure answer, and the writer keeps serving
/// (ERR-1: a panic never escapes a handler).
#[tokio::test(flavor = "multi_thread")]
async fn handler_panic_becomes_a_failure_reply() {
    let mut coordinator = FakeCoordinator::start().await;
    let test_writer = TestWriter {
        panic_in: Some(EventKind::PrepareForSnapshot),
        ..TestWriter::default()
    };
    let writer = spawn(test_writer, coordinator.options());
    let mut stream = coordinator.accept().await;
    let reply = stream
        .call(SESSION, events::prepare_for_snapshot(&["/srv"]))
        .await;
    assert!(!reply.result.success);
    assert_eq!(
        reply.failure_code(),
        Some(codes::VSS_E_WRITERERROR_NONRETRYABLE.value)
    );
    assert!(
        reply.result.application_message.contains("panicked")
            && reply
                .result
                .application_message
                .contains("test panic in PrepareForSnapshot"),
        "{}",
        reply.result.application_message
    );
    let identify = stream.call("", events::identify()).await;
    assert!(identify.result.success);
    assert!(!writer.is_finished());
    writer.shutdown().await.expect("a clean stop");
}

/// A fatal failure carries its code and application code; a recorded non-fatal one is reported
/// with success (ERR-1, ERR-4).
#[tokio::test(flavor = "multi_thread")]
async fn failures_carry_their_codes_fatal_or_not() {
    let mut coordinator = FakeCoordinator::start().await;
    let test_writer = TestWriter {
        fail_in: Some((
            EventKind::PrepareForSnapshot,
            WriterFailure::inconsistent_snapshot("/srv/test is not in the set")
                .with_application_code(7),
        )),
        record_in: Some((
            EventKind::BackupShutdown,
            WriterFailure::retryable("could not remove a temporary file"),
        )),
        ..TestWriter::default()
    };
    let writer = spawn(test_writer, coordinator.options());
    let mut stream = coordinator.accept().await;
    let reply = stream
        .call(SESSION, events::prepare_for_snapshot(&["/home"]))
        .await;
    assert!(!reply.result.success);
    let failure = reply.result.failure.as_ref().unwrap();
    assert_eq!(
        failure.code,
        codes::VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT.value
    );
    assert_eq!(failure.name, "VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT");
    assert_eq!(reply.result.application_code, 7);
    assert_eq!(
        reply.result.application_message,
        "/srv/test is not in the set"
    );

    let reply = stream.call(SESSION, events::backup_shutdown()).await;
    assert!(reply.result.success);
    assert_eq!(
        reply.failure_code(),
        Some(codes::VSS_E_WRITERERROR_RETRYABLE.value)
    );
    writer.shutdown().await.expect("a clean stop");
}

/// A failed Freeze makes the writer abort itself, and the veto is answered after the abort ran
/// (BK-SNAP-7).
#[tokio::test(flavor = "multi_thread")]
async fn failed_freeze_aborts_the_writer_before_the_veto_is_answered() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let test_writer = TestWriter {
        fail_in: Some((
            EventKind::Freeze,
            WriterFailure::retryable("writes still pending"),
        )),
        ..TestWriter::new(&journal)
    };
    let writer = spawn(test_writer, coordinator.options());
    let mut stream = coordinator.accept().await;
    let reply = stream.call(SESSION, events::freeze(0)).await;
    assert!(!reply.result.success);
    assert_eq!(
        reply.failure_code(),
        Some(codes::VSS_E_WRITERERROR_RETRYABLE.value)
    );
    let entries = journal.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[1].kind, EventKind::Abort);
    assert_eq!(entries[1].abort_cause, Some(AbortCause::HandlerFailed));
    assert!(entries[1].at <= reply.at);
    writer.shutdown().await.expect("a clean stop");
}

/// Abort is answered, may come again (BK-ABORT-3), and cancels the session's backup handler that
/// is still running, whose event is answered with a failure.
#[tokio::test(flavor = "multi_thread")]
async fn abort_cancels_the_running_backup_handler_and_may_repeat() {
    let mut coordinator = FakeCoordinator::start().await;
    let journal = Journal::default();
    let test_writer = TestWriter {
        delay_in: Some((EventKind::PrepareForSnapshot, Duration::from_secs(3600))),
        ..TestWriter::new(&journal)
    };
    let writer = spawn(test_writer, coordinator.options());
    let mut stream = coordinator.accept().await;
    let prepare = stream.send(SESSION, events::prepare_for_snapshot(&["/srv"]));
    journal.wait_for(EventKind::PrepareForSnapshot).await;
    let abort = stream.send(SESSION, events::abort());
    let first = stream.reply().await;
    let second = stream.reply().await;
    let (prepare_reply, abort_reply) = if first.result.event_id == prepare {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(prepare_reply.result.event_id, prepare);
    assert!(!prepare_reply.result.success);
    assert_eq!(
        prepare_reply.failure_code(),
        Some(codes::VSS_E_WRITERERROR_RETRYABLE.value)
    );
    assert!(
        prepare_reply
            .result
            .application_message
            .contains("cancelled")
    );
    assert_eq!(abort_reply.result.event_id, abort);
    assert!(abort_reply.result.success);

    let again = stream.call(SESSION, events::abort()).await;
    assert!(again.result.success);
    assert_eq!(journal.count(EventKind::Abort), 2);
    assert!(
        journal
            .entries()
            .iter()
            .filter(|e| e.kind == EventKind::Abort)
            .all(|e| e.abort_cause == Some(AbortCause::Requested))
    );
    writer.shutdown().await.expect("a clean stop");
}

/// A coordinator of another major version is refused with advice (COMPAT-3).
#[tokio::test(flavor = "multi_thread")]
async fn another_protocol_major_is_refused() {
    let coordinator = FakeCoordinator::start_speaking(ProtocolVersion {
        major: ProtocolVersion::CURRENT.major + 1,
        minor: 0,
    })
    .await;
    let error = shadowcopy_writer_sdk::run(TestWriter::default(), coordinator.options())
        .await
        .unwrap_err();
    assert!(matches!(error, SdkError::ProtocolVersion { .. }), "{error}");
    assert!(!error.is_transient());
}

/// No socket: the connection error names the path, and is transient.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_socket_is_reported() {
    let dir = support::TempDir::new();
    let options = WriterOptions::with_socket(dir.path().join("none.sock"));
    let error = shadowcopy_writer_sdk::run(TestWriter::default(), options)
        .await
        .unwrap_err();
    assert!(matches!(error, SdkError::Connect(_)), "{error}");
    assert!(error.is_transient());
    assert!(error.to_string().contains("none.sock"), "{error}");
}

/// An instance name in the options that contradicts the WMD's is refused before connecting.
#[tokio::test(flavor = "multi_thread")]
async fn contradicting_instance_names_are_refused() {
    struct Named;
    impl shadowcopy_writer_sdk::Writer for Named {
        fn metadata(&self) -> WriterMetadata {
            let mut wmd = test_wmd();
            wmd.identity.instance_name = Some("a".into());
            wmd
        }
    }
    let options = WriterOptions {
        instance_name: Some("b".into()),
        ..WriterOptions::with_socket("/nonexistent/socket")
    };
    let error = shadowcopy_writer_sdk::run(Named, options)
        .await
        .unwrap_err();
    assert!(matches!(error, SdkError::InvalidOptions(_)), "{error}");
}
