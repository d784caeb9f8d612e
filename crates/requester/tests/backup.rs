//! A backup session against the fake daemon: the calls of spec §3 in order with their fields,
//! typed results, in-band failures, cancel, release and the end of the stream.

mod common;

use common::{
    Answer, CLASS_ID, FakeDaemon, INSTANCE_ID, PROVIDER_ID, SET_ID, SNAPSHOT_ID, StreamEnd,
    assert_fresh_request_ids, call_name, happy_answer, wmd,
};
use shadowcopy_metadata::bcd::BackupState;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{
    BackupType, ComponentType, SnapshotAttributes, SnapshotContext, SnapshotState, WriterState,
};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::selection::{BackupRequest, resolve_backup};
use shadowcopy_metadata::{BackupComponents, SnapshotId, WriterClassId, WriterInstanceId};
use shadowcopy_protocol::v1::requester_request::Call;
use shadowcopy_protocol::v1::requester_response::Result as Reply;
use shadowcopy_protocol::v1::{self, set_writer_enabled};
use shadowcopy_requester::{Client, ComponentKey, RequesterError, WriterTarget};

/// The BCD the fake daemon returns: the test writer's `Data` selected, as a daemon would hold it
/// after AddComponent.
fn selected_bcd() -> BackupComponents {
    let writers = [wmd(INSTANCE_ID)];
    let request = BackupRequest::new(vec!["TestWriter:Data".parse().unwrap()]);
    let selection = resolve_backup(&writers, &request).unwrap();
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    bcd
}

#[tokio::test]
async fn full_backup_sends_every_call_in_vss_order_with_its_fields() {
    let bcd_json = selected_bcd().to_canonical_json();
    let mut daemon =
        FakeDaemon::with_responder(move |call| happy_answer(call, INSTANCE_ID, &bcd_json)).await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    assert_eq!(client.server().server_version, "fake-shadowcopyd 0.0.1");
    assert_eq!(client.socket(), daemon.socket.as_path());
    match daemon.next_event().await {
        common::Event::Hello(name) => assert!(name.starts_with("shadowcopy-requester "), "{name}"),
        other => panic!("expected Hello, got {other:?}"),
    }

    let mut session = client.backup_session().await.unwrap();
    let class: WriterClassId = CLASS_ID.parse().unwrap();
    let other_class = WriterClassId::new_random();

    // B1–B4.
    session.initialize_for_backup(None).await.unwrap();
    session
        .set_context(
            SnapshotContext::AppRollback,
            SnapshotAttributes::TRANSPORTABLE,
        )
        .await
        .unwrap();
    session
        .set_backup_state(BackupState {
            backup_type: BackupType::Incremental,
            partial_file_support: true,
            ..BackupState::default()
        })
        .await
        .unwrap();
    session
        .set_writer_enabled(other_class, false)
        .await
        .unwrap();

    // B5: the WMD arrives parsed and validated, and the session keeps it for BK-COPY-5.
    let writers = session.gather_writer_metadata().await.unwrap();
    assert_eq!(writers, vec![wmd(INSTANCE_ID)]);
    assert_eq!(session.writers(), writers.as_slice());

    // B6: the selection's explicit components, then options and stamp.
    let request = BackupRequest::new(vec!["TestWriter:Data".parse().unwrap()]);
    let selection = resolve_backup(&writers, &request).unwrap();
    let added = session.apply_selection(&selection).await.unwrap();
    let explicit: Vec<String> = selection
        .writers
        .iter()
        .flat_map(|w| w.explicit_components())
        .map(|c| c.full_path())
        .collect();
    assert_eq!(
        added
            .iter()
            .map(ComponentKey::full_path)
            .collect::<Vec<_>>(),
        explicit
    );
    let data = added
        .iter()
        .find(|key| key.name == "Data")
        .expect("Data was added")
        .clone();
    assert_eq!(data.writer_class_id, class);
    assert_eq!(data.writer_instance_id, INSTANCE_ID.parse().unwrap());
    assert_eq!(data.component_type, ComponentType::FileGroup);
    session.set_backup_options(&data, "fast=1").await.unwrap();
    session
        .set_previous_backup_stamp(&data, "stamp-41")
        .await
        .unwrap();

    // B7, B8: typed ids; the daemon's uppercase snapshot id parses too (docs/protocol.md §3).
    let set_id = session.start_snapshot_set().await.unwrap();
    assert_eq!(set_id.to_string(), SET_ID);
    let support = session
        .is_volume_supported("/srv/test", None)
        .await
        .unwrap();
    assert!(support.supported);
    assert_eq!(support.provider_id.unwrap().to_string(), PROVIDER_ID);
    assert_eq!(support.reason, None);
    let provider = PROVIDER_ID.parse().unwrap();
    let snapshot = session
        .add_to_snapshot_set("/srv/test", Some(provider))
        .await
        .unwrap();
    assert_eq!(snapshot, SNAPSHOT_ID.parse::<SnapshotId>().unwrap());
    assert_eq!(session.snapshot_set_id(), Some(set_id));
    assert_eq!(session.snapshots().len(), 1);
    assert_eq!(session.snapshots()[0].volume, "/srv/test");

    // B9–B12.
    session.prepare_for_backup().await.unwrap();
    let status = session.gather_writer_status().await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].state, WriterState::Stable);
    assert_eq!(status[0].class_id, class);
    assert_eq!(status[0].failure(), None);
    assert!(!status[0].has_failed());
    session.do_snapshot_set().await.unwrap();
    let properties = session.snapshot_properties(snapshot).await.unwrap();
    assert_eq!(properties.state, SnapshotState::Created);
    assert_eq!(properties.set_id, set_id);
    assert_eq!(
        properties.attributes,
        SnapshotAttributes::PERSISTENT | SnapshotAttributes::NO_AUTO_RELEASE
    );
    assert_eq!(
        properties.path_in_snapshot("/srv/test/data/x"),
        Some("/run/shadowcopy/snapshots/1/data/x".into())
    );
    let bcd = session.backup_components().await.unwrap();
    assert_eq!(bcd, selected_bcd());
    for key in &added {
        session.set_backup_succeeded(key, true).await.unwrap();
    }

    // B13–B15.
    session.backup_complete().await.unwrap();
    session.gather_writer_status().await.unwrap();
    session.release().await.unwrap();

    let (requests, end) = daemon.session_requests().await;
    assert_eq!(end, StreamEnd::Closed, "release closes our half cleanly");
    assert_fresh_request_ids(&requests);
    let mut expected = vec![
        "InitializeForBackup",
        "SetContext",
        "SetBackupState",
        "SetWriterEnabled",
        "GatherWriterMetadata",
    ];
    expected.extend(added.iter().map(|_| "AddComponent"));
    expected.extend([
        "SetBackupOptions",
        "SetPreviousBackupStamp",
        "StartSnapshotSet",
        "IsVolumeSupported",
        "AddToSnapshotSet",
        "PrepareForBackup",
        "GatherWriterStatus",
        "DoSnapshotSet",
        "GetSnapshotProperties",
        "GetBackupComponents",
    ]);
    expected.extend(added.iter().map(|_| "SetBackupSucceeded"));
    expected.extend(["BackupComplete", "GatherWriterStatus"]);
    let names: Vec<&str> = requests.iter().map(call_name).collect();
    assert_eq!(names, expected);

    // The fields of the calls.
    let call = |name: &str| {
        requests
            .iter()
            .find(|r| call_name(r) == name)
            .and_then(|r| r.call.clone())
            .unwrap_or_else(|| panic!("{name} was sent"))
    };
    assert_eq!(
        call("InitializeForBackup"),
        Call::InitializeForBackup(v1::InitializeForBackup { bcd_json: None })
    );
    assert_eq!(
        call("SetContext"),
        Call::SetContext(v1::SetContext {
            context: 0x9 | 0x20
        })
    );
    assert_eq!(
        call("SetBackupState"),
        Call::SetBackupState(v1::SetBackupState {
            component_mode: true,
            bootable_system_state: false,
            backup_type: 2,
            partial_file_support: true,
        })
    );
    assert_eq!(
        call("SetWriterEnabled"),
        Call::SetWriterEnabled(v1::SetWriterEnabled {
            writer: Some(set_writer_enabled::Writer::WriterClassId(
                other_class.to_string()
            )),
            enabled: false,
        })
    );
    let data_key = v1::ComponentKey {
        writer_instance_id: INSTANCE_ID.to_owned(),
        writer_class_id: CLASS_ID.to_owned(),
        component_type: 2,
        logical_path: String::new(),
        name: "Data".to_owned(),
    };
    assert!(requests.iter().any(|r| r.call
        == Some(Call::AddComponent(v1::AddComponent {
            component: Some(data_key.clone()),
        }))));
    assert_eq!(
        call("SetBackupOptions"),
        Call::SetBackupOptions(v1::SetBackupOptions {
            component: Some(data_key.clone()),
            options: "fast=1".to_owned(),
        })
    );
    assert_eq!(
        call("SetPreviousBackupStamp"),
        Call::SetPreviousBackupStamp(v1::SetPreviousBackupStamp {
            component: Some(data_key.clone()),
            previous_stamp: "stamp-41".to_owned(),
        })
    );
    assert_eq!(
        call("AddToSnapshotSet"),
        Call::AddToSnapshotSet(v1::AddToSnapshotSet {
            volume: "/srv/test".to_owned(),
            provider_id: Some(PROVIDER_ID.to_owned()),
        })
    );
    assert_eq!(
        call("IsVolumeSupported"),
        Call::IsVolumeSupported(v1::IsVolumeSupported {
            volume: "/srv/test".to_owned(),
            provider_id: None,
        })
    );
    assert_eq!(
        call("GetSnapshotProperties"),
        Call::GetSnapshotProperties(v1::GetSnapshotProperties {
            snapshot_id: SNAPSHOT_ID.to_owned(),
        })
    );
    assert!(requests.iter().any(|r| r.call
        == Some(Call::SetBackupSucceeded(v1::SetBackupSucceeded {
            component: Some(data_key.clone()),
            succeeded: true,
        }))));
}

#[tokio::test]
async fn release_returns_only_after_the_daemon_saw_the_session_end() {
    let mut daemon = FakeDaemon::start().await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut session = client.backup_session().await.unwrap();
    session.initialize_for_backup(None).await.unwrap();
    session.release().await.unwrap();
    // The fake daemon reports the end before it ends its own half, which is what release waits
    // for; so the report must already be there, without waiting.
    let mut ended = None;
    while let Some(event) = daemon.try_event() {
        if let common::Event::SessionEnded(end) = event {
            ended = Some(end);
        }
    }
    assert_eq!(ended, Some(StreamEnd::Closed));
}

#[tokio::test]
async fn stored_bcd_travels_in_initialize_for_backup() {
    let mut daemon = FakeDaemon::start().await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut session = client.backup_session().await.unwrap();
    let stored = selected_bcd();
    session.initialize_for_backup(Some(&stored)).await.unwrap();
    session
        .set_writer_enabled(
            WriterTarget::Instance(INSTANCE_ID.parse::<WriterInstanceId>().unwrap()),
            true,
        )
        .await
        .unwrap();
    drop(session);
    let (requests, _) = daemon.session_requests().await;
    assert_eq!(
        requests[0].call,
        Some(Call::InitializeForBackup(v1::InitializeForBackup {
            bcd_json: Some(stored.to_canonical_json()),
        }))
    );
    assert_eq!(
        requests[1].call,
        Some(Call::SetWriterEnabled(v1::SetWriterEnabled {
            writer: Some(set_writer_enabled::Writer::WriterInstanceId(
                INSTANCE_ID.to_owned()
            )),
            enabled: true,
        }))
    );
}

#[tokio::test]
async fn a_failure_status_becomes_a_vss_error_with_code_and_hint() {
    let mut daemon = FakeDaemon::with_responder(|call| match call {
        Call::DoSnapshotSet(_) => Answer::fail(
            &codes::VSS_E_INSUFFICIENT_STORAGE,
            "no space left for a shadow copy of /srv/test",
        ),
        other => happy_answer(other, INSTANCE_ID, &common::empty_bcd_json()),
    })
    .await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut session = client.backup_session().await.unwrap();
    session.initialize_for_backup(None).await.unwrap();
    session.gather_writer_metadata().await.unwrap();
    session.start_snapshot_set().await.unwrap();
    session.prepare_for_backup().await.unwrap();

    let error = session.do_snapshot_set().await.unwrap_err();
    match &error {
        RequesterError::Vss {
            call,
            code,
            message,
            hint,
        } => {
            assert_eq!(*call, "DoSnapshotSet");
            assert_eq!(*code, &codes::VSS_E_INSUFFICIENT_STORAGE);
            assert_eq!(message, "no space left for a shadow copy of /srv/test");
            assert_eq!(hint, codes::VSS_E_INSUFFICIENT_STORAGE.action);
        }
        other => panic!("expected a VSS error, got {other:?}"),
    }
    assert_eq!(error.code(), &codes::VSS_E_INSUFFICIENT_STORAGE);
    assert_eq!(error.call(), Some("DoSnapshotSet"));
    let text = error.to_string();
    assert!(text.contains("VSS_E_INSUFFICIENT_STORAGE"), "{text}");
    assert!(text.contains("0x8004231F"), "{text}");
    assert!(text.contains("no space left"), "{text}");
    assert!(
        text.contains(codes::VSS_E_INSUFFICIENT_STORAGE.action),
        "{text}"
    );

    // The session goes on: AbortBackup after a failed DoSnapshotSet (BK-SNAP-9).
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    let (requests, end) = daemon.session_requests().await;
    assert_eq!(end, StreamEnd::Closed);
    assert_eq!(call_name(requests.last().unwrap()), "AbortBackup");
}

#[tokio::test]
async fn an_unreadable_wmd_from_the_daemon_is_a_clear_error() {
    for (wmd_json, code) in [
        (
            "{\"schema_version\": 1, ".to_owned(),
            &codes::VSS_E_CORRUPT_XML_DOCUMENT,
        ),
        (
            common::wmd_json(INSTANCE_ID).replace("\"schema_version\": 1", "\"schema_version\": 2"),
            &codes::VSS_E_INVALID_XML_DOCUMENT,
        ),
    ] {
        let daemon = FakeDaemon::with_responder(move |call| match call {
            Call::GatherWriterMetadata(_) => {
                Answer::ok(Reply::WriterMetadata(v1::WriterMetadataList {
                    writers: vec![v1::WriterMetadataEntry {
                        writer_instance_id: INSTANCE_ID.to_owned(),
                        wmd_json: wmd_json.clone(),
                    }],
                }))
            }
            _ => Answer::empty(),
        })
        .await;
        let client = Client::connect(&daemon.socket).await.unwrap();
        let mut session = client.backup_session().await.unwrap();
        session.initialize_for_backup(None).await.unwrap();
        let error = session.gather_writer_metadata().await.unwrap_err();
        assert!(
            matches!(error, RequesterError::InvalidDocument { .. }),
            "{error:?}"
        );
        assert_eq!(error.code(), code);
        let text = error.to_string();
        assert!(text.contains("GatherWriterMetadata"), "{text}");
        assert!(text.contains(INSTANCE_ID), "{text}");
        assert!(text.contains(code.name), "{text}");
        let source = std::error::Error::source(&error).expect("the document error is the source");
        assert!(!source.to_string().is_empty());
        assert!(session.writers().is_empty());
        // A bad answer is not a broken session.
        session.abort_backup().await.unwrap();
    }
}

#[tokio::test]
async fn a_wmd_whose_instance_id_differs_from_its_entry_is_a_protocol_error() {
    let daemon = FakeDaemon::with_responder(|call| match call {
        Call::GatherWriterMetadata(_) => {
            Answer::ok(Reply::WriterMetadata(v1::WriterMetadataList {
                writers: vec![v1::WriterMetadataEntry {
                    writer_instance_id: common::RUNNING_INSTANCE_ID.to_owned(),
                    wmd_json: common::wmd_json(INSTANCE_ID),
                }],
            }))
        }
        Call::StartSnapshotSet(_) => Answer::empty(),
        _ => Answer::empty(),
    })
    .await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut session = client.backup_session().await.unwrap();
    let error = session.gather_writer_metadata().await.unwrap_err();
    assert!(
        matches!(error, RequesterError::Protocol { .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), &codes::VSS_E_UNEXPECTED);
    // A success answer without the call's result is a protocol error too, naming both.
    let error = session.start_snapshot_set().await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("StartSnapshotSet"), "{text}");
    assert!(text.contains("SnapshotSetStarted"), "{text}");
    assert!(
        text.contains(&daemon.socket.display().to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn dropping_a_session_ends_the_stream_on_the_daemon() {
    let mut daemon = FakeDaemon::start().await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut session = client.backup_session().await.unwrap();
    session.initialize_for_backup(None).await.unwrap();
    session.gather_writer_metadata().await.unwrap();
    drop(session);
    // The daemon releases a session whose stream ends (BK-END-6); a dropped session must end it,
    // cleanly or by reset, without any further call.
    let end = daemon.session_end().await;
    assert!(
        matches!(end, StreamEnd::Closed | StreamEnd::Broken),
        "{end:?}"
    );
    // The client stays usable for a new session.
    let mut again = client.backup_session().await.unwrap();
    again.initialize_for_backup(None).await.unwrap();
}

#[tokio::test]
async fn a_daemon_that_ends_the_stream_gives_disconnected_with_a_hint() {
    let mut daemon = FakeDaemon::with_responder(|call| match call {
        Call::PrepareForBackup(_) => {
            Answer::EndStream(tonic::Status::unavailable("shadowcopyd is shutting down"))
        }
        other => happy_answer(other, INSTANCE_ID, &common::empty_bcd_json()),
    })
    .await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut session = client.backup_session().await.unwrap();
    session.initialize_for_backup(None).await.unwrap();
    let error = session.prepare_for_backup().await.unwrap_err();
    assert!(
        matches!(
            error,
            RequesterError::Disconnected {
                call: "PrepareForBackup",
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("shutting down"), "{text}");
    assert!(
        text.contains(&daemon.socket.display().to_string()),
        "{text}"
    );
    assert!(text.contains("new session"), "{text}");
    assert_eq!(daemon.session_end().await, StreamEnd::HungUp);
    // Later calls on the dead session fail the same way instead of hanging.
    let error = session.gather_writer_status().await.unwrap_err();
    assert!(
        matches!(error, RequesterError::Disconnected { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn cancel_makes_the_running_call_report_cancelled() {
    let mut daemon = FakeDaemon::with_responder(|call| match call {
        Call::DoSnapshotSet(_) => Answer::HoldUntilCancel,
        other => happy_answer(other, INSTANCE_ID, &common::empty_bcd_json()),
    })
    .await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut session = client.backup_session().await.unwrap();
    session.initialize_for_backup(None).await.unwrap();
    let canceller = session.canceller();

    let (result, ()) = tokio::join!(session.do_snapshot_set(), async {
        daemon
            .wait_for_call(|call| matches!(call, Call::DoSnapshotSet(_)))
            .await;
        canceller.cancel().await.unwrap();
    });
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            RequesterError::Cancelled {
                call: "DoSnapshotSet"
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.code(), &codes::VSS_S_ASYNC_CANCELLED);

    // The Cancel's own answer came first and was skipped; the next call gets its own answer.
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    // A canceller does not keep a released session alive.
    assert!(matches!(
        canceller.cancel().await,
        Err(RequesterError::Disconnected { call: "Cancel", .. })
    ));
}
