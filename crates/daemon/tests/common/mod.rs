//! Requester steps and waits that several of the daemon's integration tests take the same way:
//! a backup session in a given context (a persistent set, as `shadowcopy create` makes one), a
//! component-mode full backup of the writers' `data` components, and waiting inside an async
//! test without blocking its runtime.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use shadowcopy_metadata::bcd::BackupState;
use shadowcopy_metadata::enums::{BackupType, ComponentType, SnapshotAttributes, SnapshotContext};
use shadowcopy_metadata::wmd::WriterMetadata;
use shadowcopy_requester::{BackupSession, Client, ComponentKey};

/// A backup session initialized for backup and set to `context` without extra attributes: how
/// `shadowcopy create` starts a persistent set (NAS_ROLLBACK without writers, APP_ROLLBACK with).
pub(crate) async fn session_in_context(client: &Client, context: SnapshotContext) -> BackupSession {
    let mut session = client.backup_session().await.unwrap();
    session.initialize_for_backup(None).await.unwrap();
    session
        .set_context(context, SnapshotAttributes::empty())
        .await
        .unwrap();
    session
}

/// A backup session set up for a component-mode full backup (context BACKUP, the default), with
/// the writer metadata it gathered; the caller adds the components it wants.
pub(crate) async fn full_backup(client: &Client) -> (BackupSession, Vec<WriterMetadata>) {
    let mut session = client.backup_session().await.unwrap();
    session.initialize_for_backup(None).await.unwrap();
    session
        .set_backup_state(BackupState {
            component_mode: true,
            bootable_system_state: false,
            backup_type: BackupType::Full,
            partial_file_support: false,
        })
        .await
        .unwrap();
    let writers = session.gather_writer_metadata().await.unwrap();
    (session, writers)
}

/// The key of the `data` file group at the root logical path of the writer `wmd` describes: the
/// one component every test writer here declares.
pub(crate) fn data_component(wmd: &WriterMetadata) -> ComponentKey {
    ComponentKey {
        writer_instance_id: wmd.identity.instance_id,
        writer_class_id: wmd.identity.class_id,
        component_type: ComponentType::FileGroup,
        logical_path: String::new(),
        name: "data".into(),
    }
}

/// Polls `done` until it holds, sleeping on the runtime in between so the test's writers keep
/// running; panics with "timed out waiting for {what}" after `limit`, which only bounds a hang.
pub(crate) async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
