//! The Admin wrapper against the fake daemon: requests carry the right fields and replies arrive as
//! Rust types.

mod common;

use std::time::Duration;

use common::{
    AdminRequest, FakeDaemon, INSTANCE_ID, PROVIDER_ID, SESSION_ID, SET_ID, SNAPSHOT_ID, wmd,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{
    ApplicationLevel, ProviderType, SnapshotContext, SnapshotState, SubscribeMask, WriterState,
};
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use shadowcopy_protocol::v1::{self, delete_snapshots_request};
use shadowcopy_requester::{Client, DeleteTarget, Exposure, RequesterError, SnapshotFilter};

#[tokio::test]
async fn admin_listings_arrive_as_rust_types() {
    let daemon = FakeDaemon::start().await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let admin = client.admin();

    let writers = admin.list_writers(true).await.unwrap();
    assert_eq!(writers.len(), 2);
    let external = &writers[0];
    assert_eq!(external.status.state, WriterState::Stable);
    assert_eq!(external.status.writer_name, "TestWriter");
    assert_eq!(external.application_level, ApplicationLevel::FrontEnd);
    assert_eq!(external.freeze_timeout, Duration::from_secs(60));
    assert_eq!(external.subscribe_mask, SubscribeMask::DEFAULT);
    assert_eq!(external.pid, Some(4242));
    assert_eq!(external.metadata, Some(wmd(INSTANCE_ID)));
    assert!(writers[1].hosted);
    assert_eq!(writers[1].pid, None);
    let without = admin.list_writers(false).await.unwrap();
    assert_eq!(without[0].metadata, None);

    let providers = admin.list_providers().await.unwrap();
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].id.to_string(), PROVIDER_ID);
    assert_eq!(providers[0].provider_type, ProviderType::Software);
    assert!(providers[0].builtin);
    assert_eq!(providers[0].socket_path, None);

    let set_id: SnapshotSetId = SET_ID.parse().unwrap();
    let snapshots = admin
        .list_snapshots(&SnapshotFilter {
            set_id: Some(set_id),
            context: Some(SnapshotContext::AppRollback),
            ..SnapshotFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].state, SnapshotState::Created);
    assert_eq!(snapshots[0].snapshot_id.to_string(), SNAPSHOT_ID);
    admin
        .list_snapshots(&SnapshotFilter::default())
        .await
        .unwrap();

    let status = admin.get_status().await.unwrap();
    assert_eq!(status.daemon_version, "fake-shadowcopyd 0.0.1");
    assert_eq!(status.uptime, Duration::from_secs(90));
    assert_eq!(status.set_in_creation, Some(set_id));
    assert_eq!(status.sessions.len(), 1);
    assert_eq!(status.sessions[0].session_id.to_string(), SESSION_ID);
    assert_eq!(status.sessions[0].set_id, Some(set_id));
    assert_eq!(status.reverts_in_progress, ["/srv/old"]);

    let requests = daemon.admin_requests();
    let listed: Vec<&v1::ListSnapshotsRequest> = requests
        .iter()
        .filter_map(|r| match r {
            AdminRequest::ListSnapshots(request) => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(
        listed,
        [
            &v1::ListSnapshotsRequest {
                set_id: SET_ID.to_owned(),
                volume: String::new(),
                context: Some(0x9),
                snapshot_id: String::new(),
            },
            // No context means ALL (CTX-5): the field is absent, not 0 (BACKUP).
            &v1::ListSnapshotsRequest::default(),
        ]
    );
    assert!(matches!(
        requests[0],
        AdminRequest::ListWriters(v1::ListWritersRequest {
            include_metadata: true
        })
    ));
}

#[tokio::test]
async fn admin_changes_send_their_arguments_and_report_failures() {
    let daemon = FakeDaemon::start().await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let admin = client.admin();
    let snapshot: SnapshotId = SNAPSHOT_ID.parse().unwrap();

    // A partial deletion keeps its count and where it stopped (DEL-1, SNAP-3).
    let error = admin
        .delete_snapshots(&DeleteTarget::Set(SET_ID.parse().unwrap()), false)
        .await
        .unwrap_err();
    match &error {
        RequesterError::DeleteIncomplete {
            deleted_count,
            first_failed,
            code,
            ..
        } => {
            assert_eq!(*deleted_count, 2);
            assert_eq!(*first_failed, Some(snapshot));
            assert_eq!(*code, &codes::VSS_E_BAD_STATE);
        }
        other => panic!("expected DeleteIncomplete, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains("deleted 2 shadow copies"), "{text}");
    assert!(text.contains(SNAPSHOT_ID), "{text}");
    assert!(text.contains("VSS_E_BAD_STATE (0x80042301)"), "{text}");

    let exposed = admin
        .expose_snapshot(
            snapshot,
            &Exposure::Locally {
                directory: Some("/mnt/snap".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(exposed, "/mnt/snap");
    let exposed = admin
        .expose_snapshot(
            snapshot,
            &Exposure::Remotely {
                share_name: None,
                path_from_root: Some("data".to_owned()),
            },
        )
        .await
        .unwrap();
    assert_eq!(exposed, "/run/shadowcopy/exposed/1");

    let error = admin.unexpose_snapshot(snapshot).await.unwrap_err();
    assert!(
        matches!(
            error,
            RequesterError::Vss {
                call: "UnexposeSnapshot",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.code(), &codes::VSS_E_OBJECT_NOT_FOUND);
    assert_eq!(error.hint(), codes::VSS_E_OBJECT_NOT_FOUND.action);

    admin.revert_volume(snapshot, true).await.unwrap();

    let requests = daemon.admin_requests();
    assert!(matches!(
        &requests[0],
        AdminRequest::DeleteSnapshots(v1::DeleteSnapshotsRequest {
            target: Some(delete_snapshots_request::Target::SetId(set)),
            force: false,
        }) if set == SET_ID
    ));
    assert!(matches!(
        &requests[1],
        AdminRequest::ExposeSnapshot(v1::ExposeSnapshotRequest {
            expose_attribute: 0x10_0000,
            path_from_root,
            expose_name,
            ..
        }) if path_from_root.is_empty() && expose_name == "/mnt/snap"
    ));
    assert!(matches!(
        &requests[2],
        AdminRequest::ExposeSnapshot(v1::ExposeSnapshotRequest {
            expose_attribute: 0x20_0000,
            path_from_root,
            expose_name,
            ..
        }) if path_from_root == "data" && expose_name.is_empty()
    ));
    assert!(matches!(
        &requests[4],
        AdminRequest::RevertVolume(v1::RevertVolumeRequest {
            snapshot_id,
            force_dismount: true,
        }) if snapshot_id == SNAPSHOT_ID
    ));
}
