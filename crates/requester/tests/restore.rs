//! A restore session against the fake daemon: the calls of spec §4 in order with their fields,
//! and a restore selection applied to the running writers (RST-INIT-4, RST-PREP-2).

mod common;

use common::{
    CLASS_ID, FakeDaemon, INSTANCE_ID, RUNNING_INSTANCE_ID, StreamEnd, assert_fresh_request_ids,
    call_name, happy_answer, wmd,
};
use shadowcopy_metadata::bcd::{RestoreExtensions, Rollforward};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ComponentType, FileRestoreStatus, RestoreType, RollforwardType};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::selection::{
    BackupRequest, RestoreRequest, RestoreSelection, resolve_backup, resolve_restore,
};
use shadowcopy_metadata::wmd::FileSet;
use shadowcopy_metadata::{BackupComponents, WriterInstanceId};
use shadowcopy_protocol::v1;
use shadowcopy_protocol::v1::requester_request::Call;
use shadowcopy_requester::{Client, RequesterError, SkipReason};

/// The stored BCD of a backup of the test writer's `Data`, made while it ran as [`INSTANCE_ID`].
fn stored_bcd() -> BackupComponents {
    let writers = [wmd(INSTANCE_ID)];
    let request = BackupRequest::new(vec!["TestWriter:Data".parse().unwrap()]);
    let selection = resolve_backup(&writers, &request).unwrap();
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    bcd
}

/// A restore of only `Data\Logs`, which becomes a restore subcomponent of `Data` (SEL-R-2).
fn logs_only(bcd: &BackupComponents) -> RestoreSelection {
    let request = RestoreRequest {
        selected: vec!["TestWriter:Data\\Logs".parse().unwrap()],
    };
    resolve_restore(bcd, &[wmd(INSTANCE_ID)], &request).unwrap()
}

#[tokio::test]
async fn full_restore_sends_every_call_in_vss_order_with_its_fields() {
    let bcd = stored_bcd();
    let bcd_json = bcd.to_canonical_json();
    // The writer was restarted since the backup: it runs under a new instance id.
    let mut daemon =
        FakeDaemon::with_responder(move |call| happy_answer(call, RUNNING_INSTANCE_ID, &bcd_json))
            .await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut session = client.restore_session().await.unwrap();

    // R1–R3.
    session
        .initialize_for_restore(&bcd, &[wmd(INSTANCE_ID)])
        .await
        .unwrap();
    let running = session.gather_writer_metadata().await.unwrap();
    assert_eq!(running, vec![wmd(RUNNING_INSTANCE_ID)]);

    // R4: the selection names the backup-time instance; the keys name the running one.
    let selection = logs_only(&bcd);
    let applied = session.apply_restore_selection(&selection).await.unwrap();
    assert!(applied.skipped.is_empty());
    assert_eq!(applied.subcomponents, 1);
    assert_eq!(applied.selected.len(), 1);
    let data = applied.selected[0].clone();
    assert_eq!(
        data.writer_instance_id,
        RUNNING_INSTANCE_ID.parse::<WriterInstanceId>().unwrap()
    );
    assert_eq!(data.name, "Data");
    assert_eq!(
        session
            .component_key(&selection.writers[0], "", "Data")
            .unwrap(),
        data
    );
    session
        .set_restore_options(&data, "mode=replace")
        .await
        .unwrap();
    session.set_additional_restores(&data, false).await.unwrap();
    session
        .set_restore_state(RestoreType::ByCopy)
        .await
        .unwrap();
    session
        .set_restore_extensions(
            &data,
            &RestoreExtensions {
                authoritative: true,
                rollforward: Some(Rollforward {
                    rollforward_type: RollforwardType::Partial,
                    point: Some("lsn:5".to_owned()),
                }),
                restore_name: None,
            },
        )
        .await
        .unwrap();

    // R5, R6.
    session.pre_restore().await.unwrap();
    let status = session.gather_writer_status().await.unwrap();
    assert_eq!(status[0].instance_id, data.writer_instance_id);
    assert_eq!(session.backup_components().await.unwrap(), bcd);

    // R7.
    let source = FileSet {
        path: "/srv/test/data".to_owned(),
        filespec: "*".to_owned(),
        recursive: true,
    };
    session
        .set_file_restore_status(&data, FileRestoreStatus::All)
        .await
        .unwrap();
    session
        .add_alternative_location_mapping(&data, &source, "/srv/test/restored")
        .await
        .unwrap();
    session
        .add_new_target(&data, &source, "/srv/elsewhere")
        .await
        .unwrap();
    session
        .set_ranges_file_path(&data, "/srv/test/data", "big.db", "/tmp/big.ranges")
        .await
        .unwrap();

    // R8, R9.
    session.post_restore().await.unwrap();
    session.gather_writer_status().await.unwrap();
    session.release().await.unwrap();

    let (requests, end) = daemon.session_requests().await;
    assert_eq!(end, StreamEnd::Closed);
    assert_fresh_request_ids(&requests);
    let names: Vec<&str> = requests.iter().map(call_name).collect();
    assert_eq!(
        names,
        [
            "InitializeForRestore",
            "GatherWriterMetadata",
            "SetSelectedForRestore",
            "AddRestoreSubcomponent",
            "SetRestoreOptions",
            "SetAdditionalRestores",
            "SetRestoreState",
            "SetRestoreExtensions",
            "PreRestore",
            "GatherWriterStatus",
            "GetBackupComponents",
            "SetFileRestoreStatus",
            "AddAlternativeLocationMapping",
            "AddNewTarget",
            "SetRangesFilePath",
            "PostRestore",
            "GatherWriterStatus",
        ]
    );

    let key = Some(v1::ComponentKey {
        writer_instance_id: RUNNING_INSTANCE_ID.to_owned(),
        writer_class_id: CLASS_ID.to_owned(),
        component_type: ComponentType::FileGroup.value(),
        logical_path: String::new(),
        name: "Data".to_owned(),
    });
    let wire_source = Some(v1::FileSet {
        path: "/srv/test/data".to_owned(),
        filespec: "*".to_owned(),
        recursive: true,
    });
    let calls: Vec<Call> = requests.into_iter().filter_map(|r| r.call).collect();
    assert_eq!(
        calls[0],
        Call::InitializeForRestore(v1::InitializeForRestore {
            bcd_json: bcd.to_canonical_json(),
            stored_wmd_json: vec![wmd(INSTANCE_ID).to_canonical_json()],
        })
    );
    assert_eq!(
        calls[2],
        Call::SetSelectedForRestore(v1::SetSelectedForRestore {
            component: key.clone(),
            selected: true,
            target_instance_name: None,
        })
    );
    assert_eq!(
        calls[3],
        Call::AddRestoreSubcomponent(v1::AddRestoreSubcomponent {
            component: key.clone(),
            subcomponent_logical_path: "Data".to_owned(),
            subcomponent_name: "Logs".to_owned(),
            repair: false,
        })
    );
    assert_eq!(
        calls[4],
        Call::SetRestoreOptions(v1::SetRestoreOptions {
            component: key.clone(),
            options: "mode=replace".to_owned(),
        })
    );
    assert_eq!(
        calls[5],
        Call::SetAdditionalRestores(v1::SetAdditionalRestores {
            component: key.clone(),
            additional_restores: false,
        })
    );
    assert_eq!(
        calls[6],
        Call::SetRestoreState(v1::SetRestoreState { restore_type: 1 })
    );
    assert_eq!(
        calls[7],
        Call::SetRestoreExtensions(v1::SetRestoreExtensions {
            component: key.clone(),
            authoritative: true,
            rollforward_type: 3,
            rollforward_point: Some("lsn:5".to_owned()),
            restore_name: None,
        })
    );
    assert_eq!(
        calls[11],
        Call::SetFileRestoreStatus(v1::SetFileRestoreStatus {
            component: key.clone(),
            status: 2,
        })
    );
    assert_eq!(
        calls[12],
        Call::AddAlternativeLocationMapping(v1::AddAlternativeLocationMapping {
            component: key.clone(),
            source: wire_source.clone(),
            destination: "/srv/test/restored".to_owned(),
        })
    );
    assert_eq!(
        calls[13],
        Call::AddNewTarget(v1::AddNewTarget {
            component: key.clone(),
            source: wire_source,
            alternate_path: "/srv/elsewhere".to_owned(),
        })
    );
    assert_eq!(
        calls[14],
        Call::SetRangesFilePath(v1::SetRangesFilePath {
            component: key,
            path: "/srv/test/data".to_owned(),
            filename: "big.db".to_owned(),
            ranges_file: "/tmp/big.ranges".to_owned(),
        })
    );
}

#[tokio::test]
async fn a_writer_that_is_not_running_is_skipped_not_selected() {
    let bcd = stored_bcd();
    let mut daemon = FakeDaemon::with_responder(|call| match call {
        // No writer answers Identify: the test writer is not running (RST-PREP-2).
        Call::GatherWriterMetadata(_) => {
            common::Answer::ok(v1::requester_response::Result::WriterMetadata(
                v1::WriterMetadataList { writers: vec![] },
            ))
        }
        _ => common::Answer::empty(),
    })
    .await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut session = client.restore_session().await.unwrap();
    session
        .initialize_for_restore(&bcd, &[wmd(INSTANCE_ID)])
        .await
        .unwrap();
    let selection = logs_only(&bcd);

    // Before R3 the running writers are unknown, and the library says so.
    let error = session
        .apply_restore_selection(&selection)
        .await
        .unwrap_err();
    assert_eq!(error.code(), &codes::VSS_E_BAD_STATE);
    assert!(
        error.to_string().contains("gather_writer_metadata"),
        "{error}"
    );

    assert!(session.gather_writer_metadata().await.unwrap().is_empty());
    let applied = session.apply_restore_selection(&selection).await.unwrap();
    assert!(applied.selected.is_empty());
    assert_eq!(applied.skipped.len(), 1);
    assert_eq!(applied.skipped[0].writer_name, "TestWriter");
    assert_eq!(applied.skipped[0].reason, SkipReason::NotRunning);
    let error = session
        .component_key(&selection.writers[0], "", "Data")
        .unwrap_err();
    assert!(matches!(error, RequesterError::Usage { .. }), "{error:?}");
    assert_eq!(error.code(), &codes::VSS_E_OBJECT_NOT_FOUND);
    session.release().await.unwrap();

    let (requests, _) = daemon.session_requests().await;
    let names: Vec<&str> = requests.iter().map(call_name).collect();
    assert_eq!(names, ["InitializeForRestore", "GatherWriterMetadata"]);
}
