//! `serve` and `PluginProvider` end to end over a real Unix socket: a provider written against the
//! `Provider` trait and served as a plug-in receives every call of PROV-SEQ-1 with its arguments,
//! its error codes reach the daemon's side unchanged, and a restart of the plug-in is survived.
//!
//! Each plug-in runs on a Tokio runtime of its own, so that dropping the runtime ends its
//! listener and every connection at once, as the death of a plug-in process does.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shadowcopy_coordinator::{
    DeleteTarget, Provider, ProviderError, ProviderInfo, SnapshotRecord, VolumeSupport,
};
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::enums::{ProviderType, SnapshotContext, SnapshotState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, VssTimestamp};
use shadowcopy_provider_plugin::PluginProvider;
use shadowcopy_test_support::TempDir;

/// A small provider that keeps its shadow copies in memory, writes down every call it receives,
/// and fails CommitSnapshots with a chosen code when asked to.
struct RecordingProvider {
    info: ProviderInfo,
    /// Which instance this is, so that a test can tell a restarted plug-in from the first one.
    instance: u32,
    calls: Arc<Mutex<Vec<String>>>,
    records: Mutex<Vec<SnapshotRecord>>,
    fail_commit: Option<(ErrorCode, String)>,
}

impl RecordingProvider {
    fn new(id: ProviderId, instance: u32) -> Self {
        RecordingProvider {
            info: ProviderInfo {
                id,
                name: "recording".into(),
                version: "9.8.7".into(),
                provider_type: ProviderType::Software,
            },
            instance,
            calls: Arc::default(),
            records: Mutex::default(),
            fail_commit: None,
        }
    }

    fn note(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn set_state(&self, set: SnapshotSetId, state: SnapshotState) -> Result<(), ProviderError> {
        let mut records = self.records.lock().unwrap();
        let mut found = false;
        for record in records.iter_mut().filter(|r| r.set_id == set) {
            record.state = state;
            if state == SnapshotState::Committed {
                record.snapshot_path = Some(format!("/copies/{}", record.snapshot_id));
                record.created = VssTimestamp::now();
            }
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(ProviderError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!("no set {set}"),
            ))
        }
    }
}

#[async_trait]
impl Provider for RecordingProvider {
    fn info(&self) -> ProviderInfo {
        self.info.clone()
    }

    async fn is_volume_supported(
        &self,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<VolumeSupport, ProviderError> {
        self.note(format!("IsVolumeSupported {volume} {context}"));
        Ok(if volume.starts_with("/ok") {
            VolumeSupport::Supported
        } else {
            VolumeSupport::Unsupported {
                reason: format!("instance {} copies only /ok", self.instance),
            }
        })
    }

    async fn begin_prepare_snapshot(
        &self,
        set: SnapshotSetId,
        snapshot: SnapshotId,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<(), ProviderError> {
        self.note(format!(
            "BeginPrepareSnapshot {set} {snapshot} {volume} {context}"
        ));
        self.records.lock().unwrap().push(SnapshotRecord {
            snapshot_id: snapshot,
            set_id: set,
            volume: volume.into(),
            snapshot_path: None,
            state: SnapshotState::Preparing,
            attributes: context.attributes(),
            created: VssTimestamp::default(),
            provider_id: self.info.id,
        });
        Ok(())
    }

    async fn end_prepare_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.note(format!("EndPrepareSnapshots {set}"));
        self.set_state(set, SnapshotState::Prepared)
    }

    async fn pre_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.note(format!("PreCommitSnapshots {set}"));
        self.set_state(set, SnapshotState::Precommitted)
    }

    async fn commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.note(format!("CommitSnapshots {set}"));
        if let Some((code, message)) = &self.fail_commit {
            return Err(ProviderError::new(*code, message.clone()));
        }
        self.set_state(set, SnapshotState::Committed)
    }

    async fn post_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.note(format!("PostCommitSnapshots {set}"));
        self.set_state(set, SnapshotState::Postcommitted)
    }

    async fn pre_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.note(format!("PreFinalCommitSnapshots {set}"));
        self.set_state(set, SnapshotState::Prefinalcommitted)
    }

    async fn post_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.note(format!("PostFinalCommitSnapshots {set}"));
        self.set_state(set, SnapshotState::Created)
    }

    async fn abort_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.note(format!("AbortSnapshots {set}"));
        self.records
            .lock()
            .unwrap()
            .retain(|r| r.set_id != set || r.state == SnapshotState::Created);
        Ok(())
    }

    async fn delete_snapshots(&self, target: DeleteTarget) -> Result<usize, ProviderError> {
        self.note(format!("DeleteSnapshots {target:?}"));
        let mut records = self.records.lock().unwrap();
        let before = records.len();
        match &target {
            DeleteTarget::Snapshot(id) => records.retain(|r| r.snapshot_id != *id),
            DeleteTarget::Set(set) => records.retain(|r| r.set_id != *set),
        }
        match before - records.len() {
            0 => Err(ProviderError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!("nothing matches {target:?}"),
            )),
            deleted => Ok(deleted),
        }
    }

    async fn query_snapshots(&self) -> Result<Vec<SnapshotRecord>, ProviderError> {
        self.note("QuerySnapshots".into());
        Ok(self.records.lock().unwrap().clone())
    }
}

/// A plug-in served on a runtime of its own; dropping it kills the plug-in.
struct Plugin {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Plugin {
    fn start(provider: RecordingProvider, socket: &Path) -> Plugin {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let socket = socket.to_owned();
        runtime.spawn(async move {
            shadowcopy_provider_plugin::serve(Arc::new(provider), &socket, std::future::pending())
                .await
                .expect("the plug-in serves");
        });
        Plugin {
            runtime: Some(runtime),
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Waits until every task of the plug-in, its connections included, is dropped.
            tokio::task::block_in_place(|| runtime.shutdown_timeout(Duration::from_secs(5)));
        }
    }
}

/// Connects the daemon's side, waiting for the plug-in to listen.
async fn connect(socket: &Path) -> PluginProvider {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match PluginProvider::connect("test-plugin", socket).await {
            Ok(provider) => return provider,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("the plug-in did not answer: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sequence_reaches_the_plugin_in_order_with_its_arguments() {
    let dir = TempDir::new("plugin-sequence");
    let socket = dir.join("providers/recording.sock");
    let id = ProviderId::new_random();
    let served = RecordingProvider::new(id, 1);
    let calls = Arc::clone(&served.calls);
    let _plugin = Plugin::start(served, &socket);
    let provider = connect(&socket).await;

    // GetProviderInfo at connect time: the identity crosses unchanged.
    let info = provider.info();
    assert_eq!(info.id, id);
    assert_eq!(info.name, "recording");
    assert_eq!(info.version, "9.8.7");
    assert_eq!(info.provider_type, ProviderType::Software);
    // Only the owner (root, shadowcopyd) may connect; the directory was created for it.
    let metadata = std::fs::metadata(&socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);

    let context = SnapshotContext::NasRollback;
    assert_eq!(
        provider
            .is_volume_supported("/ok/data", context)
            .await
            .unwrap(),
        VolumeSupport::Supported
    );
    assert_eq!(
        provider
            .is_volume_supported("/elsewhere", context)
            .await
            .unwrap(),
        VolumeSupport::Unsupported {
            reason: "instance 1 copies only /ok".into()
        }
    );

    // PROV-SEQ-1, steps 1 to 12, as the coordinator makes them.
    let set = SnapshotSetId::new_random();
    let snapshot = SnapshotId::new_random();
    provider
        .begin_prepare_snapshot(set, snapshot, "/ok/data", context)
        .await
        .unwrap();
    provider.end_prepare_snapshots(set).await.unwrap();
    provider.pre_commit_snapshots(set).await.unwrap();
    provider.commit_snapshots(set).await.unwrap();
    provider.post_commit_snapshots(set).await.unwrap();
    provider.pre_final_commit_snapshots(set).await.unwrap();
    provider.post_final_commit_snapshots(set).await.unwrap();

    let records = provider.query_snapshots().await.unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.snapshot_id, snapshot);
    assert_eq!(record.set_id, set);
    assert_eq!(record.volume, "/ok/data");
    assert_eq!(record.state, SnapshotState::Created);
    assert_eq!(record.attributes, context.attributes());
    assert_eq!(record.provider_id, id);
    assert_eq!(
        record.snapshot_path.as_deref(),
        Some(format!("/copies/{snapshot}").as_str())
    );
    assert!(!record.created.is_zero());

    assert_eq!(
        provider
            .delete_snapshots(DeleteTarget::Snapshot(snapshot))
            .await
            .unwrap(),
        1
    );
    assert!(provider.query_snapshots().await.unwrap().is_empty());

    let expected = vec![
        "IsVolumeSupported /ok/data NAS_ROLLBACK".to_string(),
        "IsVolumeSupported /elsewhere NAS_ROLLBACK".to_string(),
        format!("BeginPrepareSnapshot {set} {snapshot} /ok/data NAS_ROLLBACK"),
        format!("EndPrepareSnapshots {set}"),
        format!("PreCommitSnapshots {set}"),
        format!("CommitSnapshots {set}"),
        format!("PostCommitSnapshots {set}"),
        format!("PreFinalCommitSnapshots {set}"),
        format!("PostFinalCommitSnapshots {set}"),
        "QuerySnapshots".to_string(),
        format!("DeleteSnapshots {:?}", DeleteTarget::Snapshot(snapshot)),
        "QuerySnapshots".to_string(),
    ];
    assert_eq!(*calls.lock().unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_cross_the_wire_unchanged() {
    let dir = TempDir::new("plugin-errors");
    let socket = dir.join("recording.sock");
    let mut served = RecordingProvider::new(ProviderId::new_random(), 1);
    served.fail_commit = Some((
        codes::VSS_E_PROVIDER_VETO,
        "the copy store is being scrubbed; retry in ten minutes".into(),
    ));
    let _plugin = Plugin::start(served, &socket);
    let provider = connect(&socket).await;

    let set = SnapshotSetId::new_random();
    provider
        .begin_prepare_snapshot(
            set,
            SnapshotId::new_random(),
            "/ok",
            SnapshotContext::Backup,
        )
        .await
        .unwrap();
    provider.end_prepare_snapshots(set).await.unwrap();
    provider.pre_commit_snapshots(set).await.unwrap();
    let error = provider.commit_snapshots(set).await.unwrap_err();
    assert_eq!(error.code, codes::VSS_E_PROVIDER_VETO);
    assert_eq!(
        error.message,
        "the copy store is being scrubbed; retry in ten minutes"
    );
    provider.abort_snapshots(set).await.unwrap();

    // An unknown set, and an unknown shadow copy: the provider's own code, not a transport error.
    let error = provider
        .end_prepare_snapshots(SnapshotSetId::new_random())
        .await
        .unwrap_err();
    assert_eq!(error.code, codes::VSS_E_OBJECT_NOT_FOUND);
    let error = provider
        .delete_snapshots(DeleteTarget::Snapshot(SnapshotId::new_random()))
        .await
        .unwrap_err();
    assert_eq!(error.code, codes::VSS_E_OBJECT_NOT_FOUND);
    assert!(
        error.message.contains("first shadow copy not deleted"),
        "{}",
        error.message
    );
    // The trait's default revert (REV-1) answers E_NOTIMPL, and that code arrives too.
    let error = provider
        .revert_to_snapshot(SnapshotId::new_random(), false)
        .await
        .unwrap_err();
    assert_eq!(error.code, codes::E_NOTIMPL);
    assert!(error.message.contains("recording"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_plugin_is_reached_again() {
    let dir = TempDir::new("plugin-restart");
    let socket = dir.join("recording.sock");
    let id = ProviderId::new_random();
    let plugin = Plugin::start(RecordingProvider::new(id, 1), &socket);
    let provider = connect(&socket).await;
    let support = provider
        .is_volume_supported("/x", SnapshotContext::Backup)
        .await
        .unwrap();
    assert_eq!(
        support,
        VolumeSupport::Unsupported {
            reason: "instance 1 copies only /ok".into()
        }
    );

    // The plug-in dies: its listener and connection go, its socket file stays behind.
    drop(plugin);
    let error = provider.query_snapshots().await.unwrap_err();
    assert_eq!(error.code, codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);
    assert!(error.message.contains("test-plugin"), "{}", error.message);
    assert!(
        error.message.contains(socket.to_str().unwrap()),
        "{}",
        error.message
    );

    // It comes back on the same socket (replacing the stale file): the same PluginProvider
    // reaches the new instance on its next call.
    let _plugin = Plugin::start(RecordingProvider::new(id, 2), &socket);
    let deadline = Instant::now() + Duration::from_secs(10);
    let support = loop {
        match provider
            .is_volume_supported("/x", SnapshotContext::Backup)
            .await
        {
            Ok(support) => break support,
            Err(error) => {
                assert!(Instant::now() < deadline, "never reconnected: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(
        support,
        VolumeSupport::Unsupported {
            reason: "instance 2 copies only /ok".into()
        }
    );
    assert!(provider.query_snapshots().await.unwrap().is_empty());
}
