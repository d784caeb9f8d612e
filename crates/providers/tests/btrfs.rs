//! The btrfs provider on real btrfs file systems, each made for its test on a loop device of its
//! own (`LoopVolume`, architecture intent §8), driven directly and through the real coordinator
//! library in-process: two-volume sets with a writer (BK-SNAP-2, BK-COPY-1), refused volumes
//! (PROV-R-1), auto-release and persistent contexts (CTX-2, DEL-1), and failure paths that must
//! leave no shadow copy behind (PROV-SEQ-1 "on failure", BK-SNAP-8). Every test ends with
//! `LoopVolume::close`, which fails when a mount or loop device survives; on a panic the volumes'
//! `Drop` cleans up instead.
//!
//! Root only, like CI. Never run against a file system these tests did not make.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use shadowcopy_coordinator::{
    Coordinator, CoordinatorConfig, DeleteTarget, EndpointError, Provider, SnapshotLocation,
    VolumeSupport, WriterEndpoint, WriterEvent, WriterEventKind, WriterRegistration, WriterReply,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{SnapshotContext, SnapshotState};
use shadowcopy_metadata::wmd::{Component, FileDescriptor};
use shadowcopy_metadata::{
    SnapshotId, SnapshotSetId, WriterClassId, WriterInstanceId, WriterMetadata,
};
use shadowcopy_providers::{BTRFS_PROVIDER_ID, BtrfsProvider, SnapshotDir};
use shadowcopy_test_support::loop_volume::inode_of;
use shadowcopy_test_support::{LoopVolume, MIB};

/// A btrfs of its own for one test. Sparse: 256 MiB costs nothing until written.
fn btrfs() -> LoopVolume {
    LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (run as root, with btrfs-progs)")
}

fn mount(volume: &LoopVolume) -> String {
    volume.mount_point().to_str().unwrap().to_string()
}

fn coordinator(provider: &Arc<BtrfsProvider>) -> Coordinator {
    Coordinator::new(
        CoordinatorConfig::default(),
        vec![provider.clone() as Arc<dyn Provider>],
    )
}

/// Where the provider puts the snapshot `id` of `volume` by default.
fn snapshot_path(volume: &str, id: SnapshotId) -> PathBuf {
    Path::new(volume).join(".shadowcopy").join(id.to_string())
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.as_ref().display()))
}

fn assert_erofs(result: std::io::Result<impl Sized>, what: &str) {
    match result {
        Ok(_) => panic!("{what} succeeded inside a read-only snapshot"),
        Err(error) => assert_eq!(
            error.raw_os_error(),
            Some(Errno::EROFS as i32),
            "{what}: {error}"
        ),
    }
}

/// An application writer in-process: it owns one data file per volume, records every event, and
/// keeps writing after Thaw, as a live application would.
struct FileWriter {
    class_id: WriterClassId,
    files: Vec<PathBuf>,
    events: Mutex<Vec<WriterEvent>>,
}

impl FileWriter {
    fn new(files: Vec<PathBuf>) -> Arc<Self> {
        Arc::new(FileWriter {
            class_id: WriterClassId::new_random(),
            files,
            events: Mutex::new(Vec::new()),
        })
    }

    fn register(self: &Arc<Self>, coord: &Coordinator) -> WriterInstanceId {
        coord
            .register_writer(
                WriterRegistration::new(self.class_id, "file-writer"),
                self.clone(),
            )
            .expect("registration")
    }

    fn kinds(&self) -> Vec<WriterEventKind> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.kind())
            .collect()
    }

    fn post_snapshot_locations(&self) -> Vec<SnapshotLocation> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find_map(|e| match e {
                WriterEvent::PostSnapshot { snapshots, .. } => Some(snapshots.clone()),
                _ => None,
            })
            .expect("PostSnapshot was delivered")
    }

    fn metadata(&self) -> WriterMetadata {
        let files = self
            .files
            .iter()
            .map(|f| {
                let dir = f.parent().unwrap().to_str().unwrap();
                let name = f.file_name().unwrap().to_str().unwrap();
                FileDescriptor::new(dir, name, false)
            })
            .collect();
        let data = Component::file_group("", "data", true, files);
        WriterMetadata::simple("file-writer", self.class_id, vec![data])
    }
}

#[async_trait]
impl WriterEndpoint for FileWriter {
    async fn deliver(&self, event: WriterEvent) -> Result<WriterReply, EndpointError> {
        self.events.lock().unwrap().push(event.clone());
        Ok(match event {
            WriterEvent::Identify => WriterReply::identified(self.metadata()),
            WriterEvent::Thaw { .. } => {
                // Writes resume the moment the writer is thawed: the shadow copies must not see them.
                for file in &self.files {
                    std::fs::write(file, "after thaw").expect("the writer writes after Thaw");
                }
                WriterReply::ok()
            }
            _ => WriterReply::ok(),
        })
    }
}

/// (a) BK-SNAP-2, BK-COPY-1, PROV-ST-1: a set over two btrfs volumes through the coordinator, with
/// a writer, gives two read-only snapshots holding each volume as it was when the writer froze.
#[tokio::test]
async fn loop_btrfs_two_volume_set_through_the_coordinator() {
    let (vol_a, vol_b) = (btrfs(), btrfs());
    let (a, b) = (mount(&vol_a), mount(&vol_b));
    std::fs::write(vol_a.path("data.txt"), "a before").unwrap();
    std::fs::create_dir(vol_a.path("dir")).unwrap();
    std::fs::write(vol_a.path("dir/nested.txt"), "nested before").unwrap();
    std::fs::write(vol_b.path("data.txt"), "b before").unwrap();
    // 8 MiB of unsynced data, so that EndPrepare's syncfs has something to do.
    std::fs::write(vol_b.path("bulk.bin"), vec![7u8; 8 * MIB as usize]).unwrap();

    let provider = Arc::new(BtrfsProvider::new());
    let coord = coordinator(&provider);
    let writer = FileWriter::new(vec![vol_a.path("data.txt"), vol_b.path("data.txt")]);
    let writer_id = writer.register(&coord);

    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.gather_writer_metadata().await.unwrap();
    session.add_component(writer_id, "", "data").unwrap();
    let set = session.start_snapshot_set().unwrap();
    let snap_a = session.add_to_snapshot_set(&a, None).await.unwrap();
    let snap_b = session
        .add_to_snapshot_set(&format!("{b}/"), Some(BTRFS_PROVIDER_ID))
        .await
        .unwrap();
    let preparing = provider.query_snapshots().await.unwrap();
    assert!(
        preparing
            .iter()
            .all(|r| r.state == SnapshotState::Preparing && r.snapshot_path.is_none())
    );
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();

    assert_eq!(
        writer.kinds(),
        [
            WriterEventKind::Identify,
            WriterEventKind::PrepareForBackup,
            WriterEventKind::PrepareForSnapshot,
            WriterEventKind::Freeze,
            WriterEventKind::Thaw,
            WriterEventKind::PostSnapshot,
        ]
    );
    // PostSnapshot told the writer where each copy can be read: the read-only snapshot directories.
    let mut locations = writer.post_snapshot_locations();
    locations.sort_by_key(|l| l.volume.clone());
    let mut expected = vec![
        (a.clone(), snap_a, snapshot_path(&a, snap_a)),
        (b.clone(), snap_b, snapshot_path(&b, snap_b)),
    ];
    expected.sort();
    let got: Vec<_> = locations
        .iter()
        .map(|l| {
            (
                l.volume.clone(),
                l.snapshot_id,
                PathBuf::from(l.snapshot_path.clone().unwrap()),
            )
        })
        .collect();
    assert_eq!(got, expected);

    let records = coord.snapshots(SnapshotContext::Backup).await.unwrap();
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(record.set_id, set);
        assert_eq!(record.state, SnapshotState::Created);
        assert_eq!(record.provider_id, BTRFS_PROVIDER_ID);
        assert!(record.is_auto_release());
        assert_ne!(record.created, Default::default());
    }

    // The application keeps changing its files after the set was made.
    std::fs::write(vol_a.path("data.txt"), "a later").unwrap();
    std::fs::remove_file(vol_a.path("dir/nested.txt")).unwrap();
    std::fs::write(vol_b.path("new.txt"), "new").unwrap();

    let (copy_a, copy_b) = (snapshot_path(&a, snap_a), snapshot_path(&b, snap_b));
    assert_eq!(read(vol_b.path("data.txt")), "after thaw");
    assert_eq!(read(copy_a.join("data.txt")), "a before");
    assert_eq!(read(copy_a.join("dir/nested.txt")), "nested before");
    assert_eq!(read(copy_b.join("data.txt")), "b before");
    assert_eq!(
        std::fs::metadata(copy_b.join("bulk.bin")).unwrap().len(),
        8 * MIB
    );
    assert!(!copy_b.join("new.txt").exists());
    // Each copy is a subvolume of its own, and read-only (EROFS).
    assert_eq!(inode_of(&copy_a).unwrap(), 256);
    assert_erofs(
        std::fs::write(copy_a.join("data.txt"), "x"),
        "overwriting a file",
    );
    assert_erofs(
        std::fs::File::create(copy_b.join("another.txt")),
        "creating a file",
    );
    assert_erofs(
        std::fs::create_dir(copy_b.join("d")),
        "creating a directory",
    );

    for id in [snap_a, snap_b] {
        let took = provider.commit_duration(id).expect("committed");
        eprintln!(
            "BTRFS_IOC_SNAP_CREATE_V2 of shadow copy {id}: {:.3} ms",
            took.as_secs_f64() * 1e3
        );
    }

    session
        .set_backup_succeeded(writer_id, "", "data", true)
        .unwrap();
    session.backup_complete().await.unwrap();
    session.release().await.unwrap();
    coord.wait_background().await;
    assert!(!copy_a.exists() && !copy_b.exists());
    drop(coord);
    vol_a.close().expect("volume a cleaned up");
    vol_b.close().expect("volume b cleaned up");
}

/// (b) PROV-R-1, architecture intent §3: an ext4 volume and a plain directory on btrfs are refused
/// with VSS_E_VOLUME_NOT_SUPPORTED, and the reason says what would work; subvolume roots are taken,
/// in the client-accessible contexts too.
#[tokio::test]
async fn loop_btrfs_unsupported_volumes_are_refused() {
    let ext4 = LoopVolume::ext4(64 * MIB).expect("an ext4 loop volume");
    let vol = btrfs();
    let plain = vol.path("plain");
    std::fs::create_dir(&plain).unwrap();
    let subvolume = vol.create_subvolume("sub").unwrap();
    let (ext4_path, plain_path) = (mount(&ext4), plain.to_str().unwrap().to_string());

    let provider = Arc::new(BtrfsProvider::new());
    let support = |volume: String, context| {
        let provider = provider.clone();
        async move {
            provider
                .is_volume_supported(&volume, context)
                .await
                .unwrap()
        }
    };
    let VolumeSupport::Unsupported { reason } =
        support(ext4_path.clone(), SnapshotContext::Backup).await
    else {
        panic!("ext4 is not btrfs");
    };
    assert!(
        reason.contains("ext4") && reason.contains("btrfs subvolume"),
        "{reason}"
    );
    let VolumeSupport::Unsupported { reason } =
        support(plain_path.clone(), SnapshotContext::Backup).await
    else {
        panic!("a plain directory is not a subvolume");
    };
    assert!(reason.contains("not the root of a subvolume"), "{reason}");
    assert!(
        reason.contains(&mount(&vol)),
        "names the subvolume: {reason}"
    );
    assert!(reason.contains("btrfs subvolume create"), "{reason}");
    // CTX-1 keeps the client-accessible contexts for the system provider, which on btrfs this is.
    for context in [
        SnapshotContext::ClientAccessible,
        SnapshotContext::ClientAccessibleWriters,
    ] {
        assert_eq!(
            support(mount(&vol), context).await,
            VolumeSupport::Supported,
            "{context:?}"
        );
    }
    for supported in [mount(&vol), subvolume.to_str().unwrap().to_string()] {
        assert_eq!(
            support(supported, SnapshotContext::Backup).await,
            VolumeSupport::Supported
        );
    }

    // Through the coordinator: no provider can (VSS_E_VOLUME_NOT_SUPPORTED), or the named one
    // cannot (VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER); the reason travels with the error.
    let coord = coordinator(&provider);
    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session
        .set_context(SnapshotContext::FileShareBackup)
        .unwrap();
    session.start_snapshot_set().unwrap();
    assert!(!session.is_volume_supported(&ext4_path).await.unwrap());
    let err = session
        .add_to_snapshot_set(&ext4_path, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_VOLUME_NOT_SUPPORTED);
    assert!(err.message().contains("ext4"), "{err}");
    let err = session
        .add_to_snapshot_set(&plain_path, Some(BTRFS_PROVIDER_ID))
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER);
    assert!(
        err.message().contains("not the root of a subvolume"),
        "{err}"
    );
    session.release().await.unwrap();

    // Called directly, BeginPrepareSnapshot refuses too, and records nothing.
    let err = provider
        .begin_prepare_snapshot(
            SnapshotSetId::new_random(),
            SnapshotId::new_random(),
            &ext4_path,
            SnapshotContext::Backup,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER);
    assert!(err.message.contains(&ext4_path), "{}", err.message);
    assert!(provider.query_snapshots().await.unwrap().is_empty());
    assert!(!ext4.path(".shadowcopy").exists());

    // A read-only mount cannot take a snapshot (the ioctl needs write access to its directory).
    let status = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(vol.mount_point())
        .status()
        .unwrap();
    assert!(status.success());
    let VolumeSupport::Unsupported { reason } = support(mount(&vol), SnapshotContext::Backup).await
    else {
        panic!("a read-only mount is refused");
    };
    assert!(
        reason.contains("read-only") && reason.contains("remount"),
        "{reason}"
    );
    drop(coord);
    ext4.close().expect("ext4 cleaned up");
    vol.close().expect("btrfs cleaned up");
}

/// SnapshotDir::Fixed: one snapshot directory for the subvolumes of one file system works; one on
/// another btrfs is refused up front, since a snapshot cannot leave its file system.
#[tokio::test]
async fn loop_btrfs_fixed_snapshot_directory() {
    let (vol, other) = (btrfs(), btrfs());
    let sub = vol.create_subvolume("sub").unwrap();
    let sub = sub.to_str().unwrap().to_string();
    let fixed = vol.path("snapshots");
    let provider = BtrfsProvider::new()
        .with_snapshot_dir(SnapshotDir::Fixed(fixed.clone()))
        .unwrap();
    let set = SnapshotSetId::new_random();
    let snap = SnapshotId::new_random();
    provider
        .begin_prepare_snapshot(set, snap, &sub, SnapshotContext::FileShareBackup)
        .await
        .unwrap();
    provider.end_prepare_snapshots(set).await.unwrap();
    provider.pre_commit_snapshots(set).await.unwrap();
    provider.commit_snapshots(set).await.unwrap();
    let record = provider.query_snapshots().await.unwrap().remove(0);
    let path = fixed.join(snap.to_string());
    assert_eq!(
        record.snapshot_path,
        Some(path.to_str().unwrap().to_string())
    );
    assert!(path.is_dir());
    assert_eq!(
        provider
            .delete_snapshots(DeleteTarget::Set(set))
            .await
            .unwrap(),
        1
    );
    assert!(!path.exists());

    let elsewhere = BtrfsProvider::new()
        .with_snapshot_dir(SnapshotDir::Fixed(other.path("snapshots")))
        .unwrap();
    let VolumeSupport::Unsupported { reason } = elsewhere
        .is_volume_supported(&sub, SnapshotContext::Backup)
        .await
        .unwrap()
    else {
        panic!("a snapshot directory on another file system is refused");
    };
    assert!(
        reason.contains("not on the same btrfs file system"),
        "{reason}"
    );
    let err = elsewhere
        .begin_prepare_snapshot(set, snap, &sub, SnapshotContext::Backup)
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER);
    vol.close().expect("volume cleaned up");
    other.close().expect("other volume cleaned up");
}

/// Runs a writerless or writer-context set over `volumes` and returns its id and snapshot ids.
async fn make_set(
    coord: &Coordinator,
    context: SnapshotContext,
    volumes: &[&str],
) -> (
    shadowcopy_coordinator::BackupSession,
    SnapshotSetId,
    Vec<SnapshotId>,
) {
    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.set_context(context).unwrap();
    if context.involves_writers() {
        session.gather_writer_metadata().await.unwrap();
    }
    let set = session.start_snapshot_set().unwrap();
    let mut ids = Vec::new();
    for volume in volumes {
        ids.push(session.add_to_snapshot_set(volume, None).await.unwrap());
    }
    if context.involves_writers() {
        session.prepare_for_backup().await.unwrap();
    }
    session.do_snapshot_set().await.unwrap();
    (session, set, ids)
}

/// (c) CTX-2, BK-END-4, DEL-1: releasing a BACKUP session deletes its snapshots from disk; an
/// APP_ROLLBACK set outlives its session until DeleteSnapshots, by set or by snapshot.
#[tokio::test]
async fn loop_btrfs_release_deletes_backup_copies_and_app_rollback_keeps_them() {
    let vol = btrfs();
    let top = mount(&vol);
    // A nested subvolume is a volume of its own; its copies go in its own .shadowcopy.
    let sub = vol.create_subvolume("sub").unwrap();
    let sub = sub.to_str().unwrap().to_string();
    std::fs::write(vol.path("sub/file"), "in sub").unwrap();
    let provider = Arc::new(BtrfsProvider::new());
    let coord = coordinator(&provider);

    let (session, _, ids) = make_set(&coord, SnapshotContext::Backup, &[&top, &sub]).await;
    let copies = [snapshot_path(&top, ids[0]), snapshot_path(&sub, ids[1])];
    assert!(copies.iter().all(|c| c.is_dir()));
    assert_eq!(read(copies[1].join("file")), "in sub");
    // The nested subvolume shows as an empty directory in the top-level copy: snapshots do not
    // descend into subvolumes.
    assert_eq!(std::fs::read_dir(copies[0].join("sub")).unwrap().count(), 0);
    session.release().await.unwrap();
    assert!(
        copies.iter().all(|c| !c.exists()),
        "auto-release copies were deleted"
    );
    assert!(
        coord
            .snapshots(SnapshotContext::All)
            .await
            .unwrap()
            .is_empty()
    );

    let (session, set, ids) = make_set(&coord, SnapshotContext::AppRollback, &[&top, &sub]).await;
    session.release().await.unwrap();
    let kept = [snapshot_path(&top, ids[0]), snapshot_path(&sub, ids[1])];
    assert!(
        kept.iter().all(|c| c.is_dir()),
        "persistent copies survive release"
    );
    let listed = coord.snapshots(SnapshotContext::AppRollback).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|r| r.set_id == set && !r.is_auto_release())
    );
    assert!(
        coord
            .snapshots(SnapshotContext::Backup)
            .await
            .unwrap()
            .is_empty()
    );

    // One snapshot, then the rest of the set.
    let outcome = coord
        .delete_snapshots(DeleteTarget::Snapshot(ids[1]))
        .await
        .unwrap();
    assert_eq!((outcome.deleted, outcome.first_failure), (1, None));
    assert!(kept[0].is_dir() && !kept[1].exists());
    let outcome = coord
        .delete_snapshots(DeleteTarget::Set(set))
        .await
        .unwrap();
    assert_eq!((outcome.deleted, outcome.first_failure), (1, None));
    assert!(!kept[0].exists());
    let err = coord
        .delete_snapshots(DeleteTarget::Set(set))
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_OBJECT_NOT_FOUND);
    let err = provider
        .delete_snapshots(DeleteTarget::Snapshot(ids[0]))
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::VSS_E_OBJECT_NOT_FOUND);
    drop(coord);
    vol.close().expect("volume cleaned up");
}

/// (d) PROV-SEQ-1, PROV-SEQ-2, PROV-ST-1: called step by step, stale preparation is discarded, the
/// states follow the calls, a step out of order is VSS_E_BAD_STATE, and AbortSnapshots after CommitSnapshots removes the snapshots that
/// were made.
#[tokio::test]
async fn loop_btrfs_abort_removes_committed_snapshots() {
    let (vol_a, vol_b) = (btrfs(), btrfs());
    let (a, b) = (mount(&vol_a), mount(&vol_b));
    let provider = BtrfsProvider::new();
    let states = || async {
        let mut records = provider.query_snapshots().await.unwrap();
        records.sort_by_key(|r| r.volume.clone());
        records.into_iter().map(|r| r.state).collect::<Vec<_>>()
    };
    // A set abandoned before EndPrepare is never mentioned again; the next set discards it
    // (PROV-SEQ-2).
    let stale = SnapshotSetId::new_random();
    provider
        .begin_prepare_snapshot(stale, SnapshotId::new_random(), &a, SnapshotContext::Backup)
        .await
        .unwrap();
    let set = SnapshotSetId::new_random();
    let (snap_a, snap_b) = (SnapshotId::new_random(), SnapshotId::new_random());
    provider
        .begin_prepare_snapshot(set, snap_a, &a, SnapshotContext::Backup)
        .await
        .unwrap();
    provider
        .begin_prepare_snapshot(set, snap_b, &b, SnapshotContext::Backup)
        .await
        .unwrap();
    assert_eq!(states().await, [SnapshotState::Preparing; 2]);
    let records = provider.query_snapshots().await.unwrap();
    assert!(
        records.iter().all(|r| r.set_id == set),
        "stale set discarded"
    );
    let err = provider.commit_snapshots(set).await.unwrap_err();
    assert_eq!(err.code, codes::VSS_E_BAD_STATE);
    assert!(err.message.contains("out of order"), "{}", err.message);
    provider.end_prepare_snapshots(set).await.unwrap();
    assert_eq!(states().await, [SnapshotState::Prepared; 2]);
    // SNAP-3: the snapshot directory is root's alone.
    let mode = std::fs::metadata(vol_a.path(".shadowcopy"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    provider.pre_commit_snapshots(set).await.unwrap();
    assert_eq!(states().await, [SnapshotState::Precommitted; 2]);
    provider.commit_snapshots(set).await.unwrap();
    assert_eq!(states().await, [SnapshotState::Committed; 2]);
    let made = [snapshot_path(&a, snap_a), snapshot_path(&b, snap_b)];
    assert!(made.iter().all(|p| p.is_dir()));

    provider.abort_snapshots(set).await.unwrap();
    assert!(
        made.iter().all(|p| !p.exists()),
        "abort deleted the snapshots"
    );
    assert!(provider.query_snapshots().await.unwrap().is_empty());
    vol_a.close().expect("volume a cleaned up");
    vol_b.close().expect("volume b cleaned up");
}

/// (d) BK-SNAP-8, PROV-R-2: a snapshot ioctl that fails on the second volume fails the whole set;
/// the coordinator aborts the writer and the provider, and the first volume's snapshot, already
/// made, is deleted. The error names the volume and the syscall.
#[tokio::test]
async fn loop_btrfs_failed_commit_leaves_no_snapshot() {
    let (vol_a, vol_b) = (btrfs(), btrfs());
    let (a, b) = (mount(&vol_a), mount(&vol_b));
    let provider = Arc::new(BtrfsProvider::new());
    let coord = coordinator(&provider);
    let writer = FileWriter::new(vec![vol_a.path("data.txt")]);
    let writer_id = writer.register(&coord);

    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.gather_writer_metadata().await.unwrap();
    session.add_component(writer_id, "", "data").unwrap();
    session.start_snapshot_set().unwrap();
    let snap_a = session.add_to_snapshot_set(&a, None).await.unwrap();
    let snap_b = session.add_to_snapshot_set(&b, None).await.unwrap();
    // Something already sits where the second snapshot must go: its ioctl fails with EEXIST.
    std::fs::create_dir_all(snapshot_path(&b, snap_b)).unwrap();
    session.prepare_for_backup().await.unwrap();
    let err = session.do_snapshot_set().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);
    for needle in [b.as_str(), "BTRFS_IOC_SNAP_CREATE_V2", "EEXIST"] {
        assert!(err.message().contains(needle), "{needle} in {err}");
    }
    let kinds = writer.kinds();
    assert!(kinds.contains(&WriterEventKind::Freeze), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&WriterEventKind::Abort), "{kinds:?}");
    assert!(!kinds.contains(&WriterEventKind::Thaw));

    assert!(
        !snapshot_path(&a, snap_a).exists(),
        "the made snapshot was deleted"
    );
    assert!(provider.query_snapshots().await.unwrap().is_empty());
    // The obstacle was not a snapshot of ours, and it is still there, untouched.
    assert!(snapshot_path(&b, snap_b).is_dir());
    session.abort_backup().await.unwrap();
    session.release().await.unwrap();
    coord.wait_background().await;
    drop(coord);
    vol_a.close().expect("volume a cleaned up");
    vol_b.close().expect("volume b cleaned up");
}

/// (d) A CommitSnapshots the coordinator gives up on (its future is dropped while the ioctl runs)
/// followed by AbortSnapshots leaves no snapshot: either abort deletes it, or the ioctl's thread
/// does when it finds its set aborted (platform facts §2: a snapshot may appear late).
#[tokio::test]
async fn loop_btrfs_cancelled_commit_leaves_no_snapshot() {
    let vol = btrfs();
    let volume = mount(&vol);
    let provider = BtrfsProvider::new();
    let set = SnapshotSetId::new_random();
    let snap = SnapshotId::new_random();
    provider
        .begin_prepare_snapshot(set, snap, &volume, SnapshotContext::Backup)
        .await
        .unwrap();
    provider.end_prepare_snapshots(set).await.unwrap();
    provider.pre_commit_snapshots(set).await.unwrap();
    // Dirty data makes the snapshot ioctl flush it first (platform facts: about 36 ms at 8 MiB
    // dirty), so the commit is surely still running when its future is dropped; on a clean file
    // system the ioctl can finish before the first poll.
    std::fs::write(
        Path::new(&volume).join("dirty.bin"),
        vec![0x5a; 64 * 1024 * 1024],
    )
    .unwrap();
    let cut = tokio::time::timeout(Duration::ZERO, provider.commit_snapshots(set)).await;
    assert!(
        cut.is_err(),
        "the commit was still running when it was dropped"
    );
    provider.abort_snapshots(set).await.unwrap();
    assert!(provider.query_snapshots().await.unwrap().is_empty());
    // Wait for the ioctl's thread, which outlives the dropped future.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while provider.commits_in_flight() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(provider.commits_in_flight(), 0);
    assert!(
        !snapshot_path(&volume, snap).exists(),
        "the late snapshot was deleted"
    );
    vol.close().expect("volume cleaned up");
}
