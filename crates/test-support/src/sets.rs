//! Requester steps that writer and daemon tests (and the writers' bench) take the same way: a
//! backup session in a context or for a component-mode full backup, the set over some volumes up
//! to DoSnapshotSet, the end of the session, and waiting inside an async test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shadowcopy_metadata::bcd::BackupState;
use shadowcopy_metadata::enums::{BackupType, ComponentType, SnapshotAttributes, SnapshotContext};
use shadowcopy_metadata::wmd::{Component, FileDescriptor, WriterMetadata};
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, WriterClassId};
use shadowcopy_requester::{BackupSession, Client, ComponentKey};

/// The backup state of a component-mode full backup (component mode, type FULL).
pub fn full_backup_state() -> BackupState {
    BackupState {
        component_mode: true,
        bootable_system_state: false,
        backup_type: BackupType::Full,
        partial_file_support: false,
    }
}

/// A backup session initialized for backup and set to `context` without extra attributes: how
/// `shadowcopy create` starts a persistent set (NAS_ROLLBACK without writers, APP_ROLLBACK with).
pub async fn session_in_context(client: &Client, context: SnapshotContext) -> BackupSession {
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
pub async fn full_backup(client: &Client) -> (BackupSession, Vec<WriterMetadata>) {
    let mut session = client.backup_session().await.unwrap();
    session.initialize_for_backup(None).await.unwrap();
    session.set_backup_state(full_backup_state()).await.unwrap();
    let writers = session.gather_writer_metadata().await.unwrap();
    (session, writers)
}

/// The metadata of a test writer named `writer_name` whose one selectable file group `data` is
/// the single file `file` (an absolute path).
pub fn one_file_writer(writer_name: &str, class_id: WriterClassId, file: &Path) -> WriterMetadata {
    let dir = file
        .parent()
        .and_then(Path::to_str)
        .expect("a UTF-8 parent");
    let name = file
        .file_name()
        .and_then(std::ffi::OsStr::to_str)
        .expect("a UTF-8 name");
    let data = Component::file_group(
        "",
        "data",
        true,
        vec![FileDescriptor::new(dir, name, false)],
    );
    WriterMetadata::simple(writer_name, class_id, vec![data])
}

/// The gathered metadata of the writer called `name`; panics when it did not answer Identify.
pub fn writer_named<'a>(writers: &'a [WriterMetadata], name: &str) -> &'a WriterMetadata {
    writers
        .iter()
        .find(|w| w.identity.writer_name == name)
        .unwrap_or_else(|| panic!("writer {name} answered Identify"))
}

/// The gathered metadata of the writer of class `class_id`; panics when it did not answer.
pub fn writer_of_class(writers: &[WriterMetadata], class_id: WriterClassId) -> &WriterMetadata {
    writers
        .iter()
        .find(|w| w.identity.class_id == class_id)
        .unwrap_or_else(|| panic!("the writer of class {class_id:?} answered Identify"))
}

/// The key of the file group `logical_path\name` of the writer `wmd` describes.
pub fn file_group(wmd: &WriterMetadata, logical_path: &str, name: &str) -> ComponentKey {
    ComponentKey {
        writer_instance_id: wmd.identity.instance_id,
        writer_class_id: wmd.identity.class_id,
        component_type: ComponentType::FileGroup,
        logical_path: logical_path.into(),
        name: name.into(),
    }
}

/// StartSnapshotSet and AddToSnapshotSet for each of `volumes` (default provider); returns the
/// set and its copies in the order of `volumes`.
pub async fn start_set(
    session: &mut BackupSession,
    volumes: &[impl AsRef<Path>],
) -> (SnapshotSetId, Vec<SnapshotId>) {
    let set = session.start_snapshot_set().await.unwrap();
    let mut snapshots = Vec::with_capacity(volumes.len());
    for volume in volumes {
        let volume = volume.as_ref().to_str().unwrap();
        snapshots.push(session.add_to_snapshot_set(volume, None).await.unwrap());
    }
    (set, snapshots)
}

/// [`start_set`], then PrepareForBackup and DoSnapshotSet: the copies exist when it returns.
pub async fn snapshot_volumes(
    session: &mut BackupSession,
    volumes: &[impl AsRef<Path>],
) -> (SnapshotSetId, Vec<SnapshotId>) {
    let started = start_set(session, volumes).await;
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();
    started
}

/// Where the copy `snapshot` of this session's set can be read.
pub async fn snapshot_path(session: &mut BackupSession, snapshot: SnapshotId) -> PathBuf {
    session
        .snapshot_properties(snapshot)
        .await
        .unwrap()
        .snapshot_path
}

/// Marks each of `keys` backed up, then BackupComplete and release.
pub async fn complete(mut session: BackupSession, keys: &[ComponentKey]) {
    for key in keys {
        session.set_backup_succeeded(key, true).await.unwrap();
    }
    session.backup_complete().await.unwrap();
    session.release().await.unwrap();
}

/// One persistent set with writers (APP_ROLLBACK, non-component COPY backup) over `volumes`,
/// made the way `shadowcopy create` makes it, and released; the writer of `class_id` must have
/// taken part without failing (`round` names the attempt in the panic). Returns the set and its
/// copies in the order of `volumes`.
pub async fn app_rollback_set(
    client: &Client,
    volumes: &[impl AsRef<Path>],
    class_id: WriterClassId,
    round: usize,
) -> (SnapshotSetId, Vec<SnapshotId>) {
    let (session, set, snapshots) = app_rollback_session(client, volumes, class_id, round).await;
    complete(session, &[]).await;
    (set, snapshots)
}

/// [`app_rollback_set`] up to and including the check of the writer's state, with the session
/// still open (the copies' paths can be asked for); the caller completes it.
pub async fn app_rollback_session(
    client: &Client,
    volumes: &[impl AsRef<Path>],
    class_id: WriterClassId,
    round: usize,
) -> (BackupSession, SnapshotSetId, Vec<SnapshotId>) {
    let mut session = session_in_context(client, SnapshotContext::AppRollback).await;
    session
        .set_backup_state(BackupState {
            component_mode: false,
            bootable_system_state: false,
            backup_type: BackupType::Copy,
            partial_file_support: false,
        })
        .await
        .unwrap();
    session.gather_writer_metadata().await.unwrap();
    let made = snapshot_volumes(&mut session, volumes).await;
    let statuses = session.gather_writer_status().await.unwrap();
    let ours = statuses
        .iter()
        .find(|s| s.class_id == class_id)
        .expect("our writer took part");
    assert!(
        !ours.state.is_failed(),
        "round {round}: the writer ended {} ({:?})",
        ours.state,
        ours.application_message
    );
    (session, made.0, made.1)
}

/// Polls `done` until it holds, sleeping on the runtime in between so the test's writers keep
/// running; panics with "timed out waiting for {what}" after `limit`, which only bounds a hang.
pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
