//! The persistent catalog of the built-in providers and the btrfs revert, on real file systems
//! made for each test on loop devices of their own (architecture intent §8): persistent copies
//! survive a restart (CTX-2), orphans are deleted at the next start (CTX-2, BK-END-6), loop-image
//! records carry their image as `snapshot_path` (EXP-4), and a btrfs volume is reverted in place
//! (REV-1), refused while another process uses it, and resumed after an interrupted run.
//!
//! A "restart" is dropping the provider and building a new one on the same catalog file, which is
//! what a daemon restart does. Root only, like CI. Never run against a file system these tests
//! did not make; every test ends with `close()`, which fails when a mount or loop device survives.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;

use shadowcopy_coordinator::{
    Coordinator, CoordinatorConfig, DeleteTarget, Provider, SnapshotRecord, VolumeSupport,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{SnapshotContext, SnapshotState};
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use shadowcopy_providers::{BtrfsProvider, LoopImageProvider};
use shadowcopy_test_support::loop_volume::inode_of;
use shadowcopy_test_support::{FsKind, LoopVolume, MIB, TempDir};

fn btrfs() -> LoopVolume {
    LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (run as root, with btrfs-progs)")
}

fn mount(volume: &LoopVolume) -> String {
    volume.mount_point().to_str().unwrap().to_string()
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.as_ref().display()))
}

fn coordinator(provider: Arc<dyn Provider>) -> Coordinator {
    Coordinator::new(CoordinatorConfig::default(), vec![provider])
}

/// How far [`make`] takes a set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// EndPrepareSnapshots only: the catalog has the intent, nothing is on disk.
    Prepared,
    /// Through PostCommitSnapshots: the copy is on disk, the set was never finished (a crash).
    PostCommit,
    /// Every step: a finished shadow copy.
    Created,
}

/// Drives one single-volume set through the provider's steps (PROV-SEQ-1) up to `until`.
async fn make(
    provider: &dyn Provider,
    volume: &str,
    context: SnapshotContext,
    until: Until,
) -> SnapshotId {
    let (set, snapshot) = (SnapshotSetId::new_random(), SnapshotId::new_random());
    provider
        .begin_prepare_snapshot(set, snapshot, volume, context)
        .await
        .unwrap();
    provider.end_prepare_snapshots(set).await.unwrap();
    if until == Until::Prepared {
        return snapshot;
    }
    provider.pre_commit_snapshots(set).await.unwrap();
    provider.commit_snapshots(set).await.unwrap();
    provider.post_commit_snapshots(set).await.unwrap();
    if until == Until::PostCommit {
        return snapshot;
    }
    provider.pre_final_commit_snapshots(set).await.unwrap();
    provider.post_final_commit_snapshots(set).await.unwrap();
    snapshot
}

async fn records(provider: &dyn Provider) -> Vec<SnapshotRecord> {
    provider.query_snapshots().await.unwrap()
}

/// The snapshot subvolumes in a volume's snapshot directory, by name.
fn on_disk(volume: &LoopVolume) -> BTreeSet<String> {
    match std::fs::read_dir(volume.path(".shadowcopy")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// (a) CTX-2: a persistent copy survives dropping the provider; a new provider on the same
/// catalog lists it unchanged and can delete it, through the coordinator too.
#[tokio::test]
async fn btrfs_persistent_copy_survives_a_restart() {
    let vol = btrfs();
    let volume = mount(&vol);
    let state = TempDir::new("catalog-btrfs-restart");
    let catalog = state.join("lib/btrfs.json");
    std::fs::write(vol.path("data.txt"), "kept").unwrap();

    let first = BtrfsProvider::new().with_catalog(&catalog).unwrap();
    assert_eq!(first.recovered().kept, 0);
    let id = make(
        &first,
        &volume,
        SnapshotContext::AppRollback,
        Until::Created,
    )
    .await;
    let before = records(&first).await;
    assert_eq!(before.len(), 1);
    assert!(read(&catalog).contains(&id.to_string()));
    drop(first);

    let second = Arc::new(BtrfsProvider::new().with_catalog(&catalog).unwrap());
    assert_eq!(second.recovered().kept, 1);
    assert!(second.recovered().deleted.is_empty());
    assert_eq!(records(second.as_ref()).await, before, "listed unchanged");
    let path = PathBuf::from(before[0].snapshot_path.clone().unwrap());
    assert_eq!(read(path.join("data.txt")), "kept");

    let coord = coordinator(second.clone());
    assert_eq!(
        coord.snapshot(id).await.unwrap().state,
        SnapshotState::Created
    );
    let outcome = coord
        .delete_snapshots(DeleteTarget::Snapshot(id))
        .await
        .unwrap();
    assert_eq!(outcome.deleted, 1);
    assert!(outcome.first_failure.is_none());
    assert!(!path.exists(), "the snapshot subvolume is deleted");
    drop(coord);
    drop(second);

    let third = BtrfsProvider::new().with_catalog(&catalog).unwrap();
    assert_eq!(third.recovered().kept, 0);
    assert!(
        records(&third).await.is_empty(),
        "the deletion was persisted"
    );
    drop(third);
    vol.close().expect("volume cleaned up");
}

/// (b) CTX-2, BK-END-6: at the next start, an auto-release copy (its session died with the
/// process), a set stopped after commit and a set stopped after EndPrepare are orphans: their
/// snapshots are deleted from disk, and the listing agrees with what is on disk.
#[tokio::test]
async fn btrfs_orphans_are_deleted_at_the_next_start() {
    let vol = btrfs();
    let volume = mount(&vol);
    let state = TempDir::new("catalog-btrfs-orphans");
    let catalog = state.join("btrfs.json");
    std::fs::write(vol.path("data.txt"), "data").unwrap();

    let first = BtrfsProvider::new().with_catalog(&catalog).unwrap();
    let auto = make(&first, &volume, SnapshotContext::Backup, Until::Created).await;
    let kept = make(
        &first,
        &volume,
        SnapshotContext::AppRollback,
        Until::Created,
    )
    .await;
    let cut = make(
        &first,
        &volume,
        SnapshotContext::AppRollback,
        Until::PostCommit,
    )
    .await;
    let intent = make(
        &first,
        &volume,
        SnapshotContext::AppRollback,
        Until::Prepared,
    )
    .await;
    assert_eq!(
        on_disk(&vol),
        [auto, kept, cut].iter().map(|id| id.to_string()).collect(),
        "three snapshots were made"
    );
    let text = read(&catalog);
    for id in [auto, kept, cut, intent] {
        assert!(text.contains(&id.to_string()), "{id} is in the catalog");
    }
    // The process dies: no release, no abort.
    drop(first);

    let second = BtrfsProvider::new().with_catalog(&catalog).unwrap();
    let report = second.recovered();
    assert_eq!(report.kept, 1);
    let deleted: BTreeSet<SnapshotId> = report.deleted.iter().copied().collect();
    assert_eq!(deleted, [auto, cut, intent].into_iter().collect());
    assert!(report.not_deleted.is_empty());
    let listed: BTreeSet<String> = records(&second)
        .await
        .iter()
        .map(|r| r.snapshot_id.to_string())
        .collect();
    assert_eq!(listed, [kept.to_string()].into_iter().collect());
    assert_eq!(on_disk(&vol), listed, "the listing agrees with the disk");
    let text = read(&catalog);
    for id in [auto, cut, intent] {
        assert!(!text.contains(&id.to_string()), "{id} left the catalog");
    }
    drop(second);
    vol.close().expect("volume cleaned up");
}

/// A child process that is killed when dropped, so that a failing test still unmounts.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (c) REV-1: a revert brings back changed, deleted and added files (contents, mode, symlink,
/// directories), keeps the snapshot directory and a nested subvolume, and is refused with
/// VSS_E_VOLUME_IN_USE, naming the process, while a child process holds a file open under the
/// volume. An interrupted revert (its marker still in the catalog) is redone at the next start.
#[tokio::test]
async fn btrfs_revert_restores_the_volume() {
    let vol = btrfs();
    let volume = mount(&vol);
    let state = TempDir::new("catalog-btrfs-revert");
    let catalog = state.join("btrfs.json");
    std::fs::write(vol.path("keep.txt"), "keep").unwrap();
    std::fs::write(vol.path("changed.txt"), "before").unwrap();
    std::fs::set_permissions(
        vol.path("changed.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(vol.path("deleted.txt"), "deleted").unwrap();
    std::os::unix::fs::symlink("keep.txt", vol.path("link")).unwrap();
    std::fs::create_dir(vol.path("sub")).unwrap();
    std::fs::write(vol.path("sub/inner.txt"), "inner").unwrap();
    let nested = vol.create_subvolume("nested").unwrap();
    std::fs::write(nested.join("own.txt"), "nested v1").unwrap();

    let provider = Arc::new(BtrfsProvider::new().with_catalog(&catalog).unwrap());
    let id = make(
        provider.as_ref(),
        &volume,
        SnapshotContext::AppRollback,
        Until::Created,
    )
    .await;
    let snapshot = vol.path(format!(".shadowcopy/{id}"));

    let change = || {
        std::fs::write(vol.path("changed.txt"), "after, and longer").unwrap();
        std::fs::set_permissions(
            vol.path("changed.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let _ = std::fs::remove_file(vol.path("deleted.txt"));
        std::fs::write(vol.path("added.txt"), "added").unwrap();
        let _ = std::fs::remove_file(vol.path("link"));
        std::os::unix::fs::symlink("added.txt", vol.path("link")).unwrap();
        let _ = std::fs::remove_dir_all(vol.path("sub"));
        std::fs::create_dir_all(vol.path("newdir")).unwrap();
        std::fs::write(vol.path("newdir/x"), "x").unwrap();
        std::fs::write(nested.join("own.txt"), "nested v2").unwrap();
    };
    let check = || {
        assert_eq!(read(vol.path("keep.txt")), "keep");
        assert_eq!(read(vol.path("changed.txt")), "before");
        let mode = std::fs::metadata(vol.path("changed.txt")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o640);
        assert_eq!(read(vol.path("deleted.txt")), "deleted");
        assert!(!vol.path("added.txt").exists(), "the added file is gone");
        assert_eq!(
            std::fs::read_link(vol.path("link")).unwrap(),
            PathBuf::from("keep.txt")
        );
        assert_eq!(read(vol.path("sub/inner.txt")), "inner");
        assert!(!vol.path("newdir").exists());
        assert!(snapshot.is_dir(), "the snapshot directory is kept");
        assert_eq!(read(snapshot.join("changed.txt")), "before");
        // The nested subvolume is not part of the snapshot: left alone.
        assert_eq!(inode_of(&nested).unwrap(), 256);
        assert_eq!(read(nested.join("own.txt")), "nested v2");
    };
    change();

    let coord = coordinator(provider.clone());
    {
        let holder = Holder(
            Command::new("sh")
                .arg("-c")
                .arg("exec 3< ../keep.txt; exec sleep 600")
                .current_dir(vol.path("newdir"))
                .spawn()
                .unwrap(),
        );
        let pid = holder.0.id();
        // Its current directory is under the volume from the moment spawn returns.
        let error = coord.revert(id, false).await.unwrap_err();
        assert_eq!(error.code(), codes::VSS_E_VOLUME_IN_USE, "{error}");
        assert!(error.message().contains(&format!("pid {pid}")), "{error}");
        assert!(vol.path("added.txt").exists(), "nothing was touched");
        assert!(coord.reverts_in_progress().is_empty());
    }
    coord.revert(id, false).await.unwrap();
    check();
    let stored: serde_json::Value = serde_json::from_str(&read(&catalog)).unwrap();
    assert_eq!(
        stored["reverts"],
        serde_json::json!([]),
        "no revert marker is left"
    );

    // A revert cut short: the marker is in the catalog when the process dies.
    change();
    drop(coord);
    drop(provider);
    let mut stored: serde_json::Value = serde_json::from_str(&read(&catalog)).unwrap();
    stored["reverts"] = serde_json::json!([{
        "snapshot_id": id.to_string(),
        "volume": volume,
        "started": 0,
    }]);
    std::fs::write(&catalog, serde_json::to_string(&stored).unwrap()).unwrap();
    let restarted = BtrfsProvider::new().with_catalog(&catalog).unwrap();
    assert_eq!(restarted.recovered().reverts_resumed, vec![volume.clone()]);
    assert!(restarted.recovered().reverts_failed.is_empty());
    check();
    let stored: serde_json::Value = serde_json::from_str(&read(&catalog)).unwrap();
    assert_eq!(stored["reverts"], serde_json::json!([]));

    // An auto-release copy cannot be reverted to (REV-1).
    let auto = make(&restarted, &volume, SnapshotContext::Backup, Until::Created).await;
    let error = restarted.revert_to_snapshot(auto, true).await.unwrap_err();
    assert_eq!(error.code, codes::VSS_E_UNSUPPORTED_CONTEXT);
    restarted
        .delete_snapshots(DeleteTarget::Snapshot(auto))
        .await
        .unwrap();
    drop(restarted);
    vol.close().expect("volume cleaned up");
}

/// (d) EXP-4: loop-image records carry the clone image as `snapshot_path`, and a persistent one
/// survives a restart while an auto-release one is deleted; the catalog's file system is never
/// frozen; revert is not implemented (E_NOTIMPL).
#[tokio::test]
async fn loop_image_copies_carry_their_image_and_survive_a_restart() {
    let host = LoopVolume::new(FsKind::Btrfs, 512 * MIB).expect("a host loop volume (root)");
    let vol = LoopVolume::new_in(FsKind::Ext4, 64 * MIB, host.mount_point())
        .expect("an inner ext4 loop volume");
    let volume = mount(&vol);
    let state = TempDir::new("catalog-loop-image");
    let catalog = state.join("loop-image.json");
    std::fs::write(vol.path("data.txt"), "data").unwrap();
    let image_of = |id: SnapshotId| {
        vol.image()
            .parent()
            .unwrap()
            .join(format!(".shadowcopy-{id}.img"))
    };

    let first = LoopImageProvider::new().with_catalog(&catalog).unwrap();
    let kept = make(
        &first,
        &volume,
        SnapshotContext::AppRollback,
        Until::Created,
    )
    .await;
    let auto = make(&first, &volume, SnapshotContext::Backup, Until::Created).await;
    let before = records(&first).await;
    for record in &before {
        assert_eq!(
            record.snapshot_path.as_deref().map(PathBuf::from),
            Some(image_of(record.snapshot_id)),
            "the image is the device object"
        );
        assert!(image_of(record.snapshot_id).is_file());
    }
    drop(first);

    let second = LoopImageProvider::new().with_catalog(&catalog).unwrap();
    assert_eq!(second.recovered().kept, 1);
    assert_eq!(second.recovered().deleted, vec![auto]);
    assert!(
        !image_of(auto).exists(),
        "the auto-release image is deleted"
    );
    let after = records(&second).await;
    assert_eq!(
        after,
        before
            .iter()
            .filter(|r| r.snapshot_id == kept)
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(second.image_of(kept), Some(image_of(kept)));
    let error = second.revert_to_snapshot(kept, true).await.unwrap_err();
    assert_eq!(error.code, codes::E_NOTIMPL);

    // A provider whose catalog lies on the volume never freezes it.
    let on_volume = LoopImageProvider::new()
        .with_catalog(&vol.path("state/catalog.json"))
        .unwrap();
    let VolumeSupport::Unsupported { reason } = on_volume
        .is_volume_supported(&volume, SnapshotContext::Backup)
        .await
        .unwrap()
    else {
        panic!("the catalog's file system must not be frozen");
    };
    assert!(reason.contains("catalog"), "{reason}");
    drop(on_volume);

    assert_eq!(
        second
            .delete_snapshots(DeleteTarget::Snapshot(kept))
            .await
            .unwrap(),
        1
    );
    assert!(!image_of(kept).exists());
    drop(second);
    let third = LoopImageProvider::new().with_catalog(&catalog).unwrap();
    assert_eq!(third.recovered().kept, 0);
    assert!(records(&third).await.is_empty());
    drop(third);
    vol.close().expect("inner cleaned up");
    host.close().expect("host cleaned up");
}
