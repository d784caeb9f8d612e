//! The loop-image provider on real stacks of loop devices made for each test (architecture intent
//! §8): an outer "host" file system (btrfs or xfs, or ext4 for the refusal) on a loop device holds
//! the image files of inner ext4 volumes, each on a loop device of its own
//! (`LoopVolume::new_in`). Only the inner file systems are ever frozen. Every guard is declared
//! after the volume that holds it, so that it drops first; every test ends with `close()`, which
//! fails when a mount or a loop device survives.
//!
//! Root only, like CI. Never run against a file system these tests did not make.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shadowcopy_coordinator::{
    BackupSession, Coordinator, CoordinatorConfig, Provider, VolumeSupport,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{SnapshotContext, SnapshotState};
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use shadowcopy_providers::{LOOP_IMAGE_PROVIDER_ID, LoopImageProvider};
use shadowcopy_test_support::{FsKind, LoopVolume, MIB, ReadOnlyImage};

/// The host file system that holds the images.
fn host(kind: FsKind) -> LoopVolume {
    LoopVolume::new(kind, 512 * MIB).expect("a host loop volume (run as root)")
}

/// An ext4 volume on a loop device whose image lies in `host`.
fn inner(host: &LoopVolume) -> LoopVolume {
    LoopVolume::new_in(FsKind::Ext4, 64 * MIB, host.mount_point())
        .expect("an inner ext4 loop volume")
}

fn mount(volume: &LoopVolume) -> String {
    volume.mount_point().to_str().unwrap().to_string()
}

fn coordinator(provider: &Arc<LoopImageProvider>) -> Coordinator {
    Coordinator::new(
        CoordinatorConfig::default(),
        vec![provider.clone() as Arc<dyn Provider>],
    )
}

/// Where the provider puts the clone `id` of `volume`'s image.
fn clone_path(volume: &LoopVolume, id: SnapshotId) -> PathBuf {
    volume
        .image()
        .parent()
        .unwrap()
        .join(format!(".shadowcopy-{id}.img"))
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.as_ref().display()))
}

/// Starts a writerless set over `volumes` (FILE_SHARE_BACKUP); returns the session and the ids.
async fn start_set(coord: &Coordinator, volumes: &[&str]) -> (BackupSession, Vec<SnapshotId>) {
    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session
        .set_context(SnapshotContext::FileShareBackup)
        .unwrap();
    session.start_snapshot_set().unwrap();
    let mut ids = Vec::new();
    for volume in volumes {
        ids.push(session.add_to_snapshot_set(volume, None).await.unwrap());
    }
    (session, ids)
}

/// Writes a file on each volume within 2 s: proof that none is left frozen. On failure it thaws
/// them with `fsfreeze -u` before panicking, so that the guards can still unmount.
async fn assert_thawed(volumes: &[&LoopVolume]) {
    for volume in volumes {
        let file = volume.path("thawed.txt");
        let wrote = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::task::spawn_blocking(move || std::fs::write(&file, "thawed")),
        )
        .await;
        if !matches!(wrote, Ok(Ok(Ok(())))) {
            for v in volumes {
                let _ = std::process::Command::new("fsfreeze")
                    .arg("-u")
                    .arg(v.mount_point())
                    .status();
            }
            panic!(
                "{} is still frozen: {wrote:?}",
                volume.mount_point().display()
            );
        }
    }
}

/// (a) A set over two inner ext4 volumes through the coordinator: freeze both, clone both images,
/// thaw. Each clone, attached read-only and mounted `ro,noload`, holds the files written before
/// the set and not those written after; release deletes the clones.
#[tokio::test]
async fn loop_image_two_volume_set_through_the_coordinator() {
    for kind in [FsKind::Btrfs, FsKind::Xfs] {
        let host = host(kind);
        let (vol_a, vol_b) = (inner(&host), inner(&host));
        let (a, b) = (mount(&vol_a), mount(&vol_b));
        std::fs::write(vol_a.path("before.txt"), "a before").unwrap();
        std::fs::write(vol_b.path("before.txt"), "b before").unwrap();
        // Unsynced data, so that EndPrepare's syncfs and the freeze have something to flush.
        std::fs::write(vol_b.path("bulk.bin"), vec![7u8; 8 * MIB as usize]).unwrap();

        let provider = Arc::new(LoopImageProvider::new());
        assert_eq!(
            provider
                .is_volume_supported(&a, SnapshotContext::Backup)
                .await
                .unwrap(),
            VolumeSupport::Supported
        );
        let coord = coordinator(&provider);
        let (mut session, ids) = start_set(&coord, &[&a, &b]).await;
        session.do_snapshot_set().await.unwrap();
        std::fs::write(vol_a.path("after.txt"), "a after").unwrap();
        std::fs::write(vol_b.path("before.txt"), "b changed").unwrap();

        let records = coord.snapshots(SnapshotContext::All).await.unwrap();
        assert_eq!(records.len(), 2);
        for record in &records {
            assert_eq!(record.state, SnapshotState::Created);
            assert_eq!(record.provider_id, LOOP_IMAGE_PROVIDER_ID);
        }
        for (volume, id) in [(&vol_a, ids[0]), (&vol_b, ids[1])] {
            assert_eq!(provider.image_of(id), Some(clone_path(volume, id)));
            // EXP-4: the image file is the copy's device object.
            let record = records.iter().find(|r| r.snapshot_id == id).unwrap();
            assert_eq!(
                record.snapshot_path.as_deref().map(PathBuf::from),
                Some(clone_path(volume, id))
            );
            let window = provider.freeze_window(id).expect("committed");
            eprintln!(
                "{kind} host: freeze window (FIFREEZE of the first volume to FITHAW of the last) \
                 for shadow copy {id}: {:.3} ms",
                window.as_secs_f64() * 1e3
            );
        }

        let view_a = ReadOnlyImage::mount(
            &clone_path(&vol_a, ids[0]),
            FsKind::Ext4,
            &host.path(format!("view-a-{}", ids[0])),
            "ro,noload",
        )
        .expect("the clone of a mounts read-only");
        let view_b = ReadOnlyImage::mount(
            &clone_path(&vol_b, ids[1]),
            FsKind::Ext4,
            &host.path(format!("view-b-{}", ids[1])),
            "ro,noload",
        )
        .expect("the clone of b mounts read-only");
        assert_eq!(read(view_a.path("before.txt")), "a before");
        assert!(!view_a.path("after.txt").exists());
        assert_eq!(read(view_b.path("before.txt")), "b before");
        assert_eq!(
            std::fs::metadata(view_b.path("bulk.bin")).unwrap().len(),
            8 * MIB
        );
        assert_eq!(read(vol_b.path("before.txt")), "b changed");
        view_a.close().expect("view a cleaned up");
        view_b.close().expect("view b cleaned up");

        session.release().await.unwrap();
        coord.wait_background().await;
        assert!(!clone_path(&vol_a, ids[0]).exists() && !clone_path(&vol_b, ids[1]).exists());
        assert!(provider.query_snapshots().await.unwrap().is_empty());
        drop(coord);
        vol_a.close().expect("volume a cleaned up");
        vol_b.close().expect("volume b cleaned up");
        host.close().expect("host cleaned up");
    }
}

/// (b) PROV-R-1: an inner volume whose image is on ext4 (no FICLONE) is refused with a reason,
/// and so are a host volume whose image is not on a reflink file system, a non-loop mount and
/// the root file system; nothing is recorded.
#[tokio::test]
async fn loop_image_unsupported_volumes_are_refused() {
    let host = host(FsKind::Ext4);
    let vol = inner(&host);
    let provider = Arc::new(LoopImageProvider::new());
    let VolumeSupport::Unsupported { reason } = provider
        .is_volume_supported(&mount(&vol), SnapshotContext::Backup)
        .await
        .unwrap()
    else {
        panic!("an image on ext4 cannot be cloned");
    };
    assert!(
        reason.contains("ext4") && reason.contains("FICLONE") && reason.contains("reflink"),
        "{reason}"
    );
    for (volume, needle) in [
        ("/", "root file system"),
        ("/proc", "not from a loop device"),
    ] {
        let VolumeSupport::Unsupported { reason } = provider
            .is_volume_supported(volume, SnapshotContext::Backup)
            .await
            .unwrap()
        else {
            panic!("{volume} is refused");
        };
        assert!(reason.contains(needle), "{reason}");
    }
    let err = provider
        .begin_prepare_snapshot(
            SnapshotSetId::new_random(),
            SnapshotId::new_random(),
            &mount(&vol),
            SnapshotContext::Backup,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER);
    assert!(err.message.contains(&mount(&vol)), "{}", err.message);
    assert!(provider.query_snapshots().await.unwrap().is_empty());

    // Through the coordinator: no provider can.
    let coord = coordinator(&provider);
    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session
        .set_context(SnapshotContext::FileShareBackup)
        .unwrap();
    session.start_snapshot_set().unwrap();
    let err = session
        .add_to_snapshot_set(&mount(&vol), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_VOLUME_NOT_SUPPORTED);
    assert!(err.message().contains("FICLONE"), "{err}");
    session.release().await.unwrap();
    drop(coord);
    vol.close().expect("inner cleaned up");
    host.close().expect("host cleaned up");
}

/// (c) BK-SNAP-8: the clone of the second volume fails (its target already exists): the set
/// fails, both volumes are thawed (a write succeeds within 2 s), the first volume's clone is
/// deleted, and the obstacle, not ours, is left alone.
#[tokio::test]
async fn loop_image_failed_clone_thaws_and_leaves_no_image() {
    let host = host(FsKind::Btrfs);
    let (vol_a, vol_b) = (inner(&host), inner(&host));
    let (a, b) = (mount(&vol_a), mount(&vol_b));
    let provider = Arc::new(LoopImageProvider::new());
    let coord = coordinator(&provider);
    let (mut session, ids) = start_set(&coord, &[&a, &b]).await;
    let obstacle = clone_path(&vol_b, ids[1]);
    std::fs::write(&obstacle, "not an image").unwrap();
    let err = session.do_snapshot_set().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);
    for needle in [b.as_str(), "EEXIST"] {
        assert!(err.message().contains(needle), "{needle} in {err}");
    }
    assert_thawed(&[&vol_a, &vol_b]).await;
    assert!(
        !clone_path(&vol_a, ids[0]).exists(),
        "the made clone was deleted"
    );
    assert_eq!(read(&obstacle), "not an image");
    assert!(provider.query_snapshots().await.unwrap().is_empty());
    std::fs::remove_file(&obstacle).unwrap();
    session.release().await.unwrap();
    coord.wait_background().await;
    drop(coord);
    vol_a.close().expect("volume a cleaned up");
    vol_b.close().expect("volume b cleaned up");
    host.close().expect("host cleaned up");
}

/// The watchdog: a commit that overruns its limit (zero here) thaws the set and fails with
/// VSS_E_HOLD_WRITES_TIMEOUT, leaving no clone; states follow PROV-ST-1 and abort clears them.
#[tokio::test]
async fn loop_image_overrun_commit_thaws_and_fails() {
    let host = host(FsKind::Xfs);
    let vol = inner(&host);
    let volume = mount(&vol);
    let provider = LoopImageProvider::new().with_commit_timeout(Duration::ZERO);
    let (set, snap) = (SnapshotSetId::new_random(), SnapshotId::new_random());
    provider
        .begin_prepare_snapshot(set, snap, &volume, SnapshotContext::Backup)
        .await
        .unwrap();
    let err = provider.commit_snapshots(set).await.unwrap_err();
    assert_eq!(err.code, codes::VSS_E_BAD_STATE);
    provider.end_prepare_snapshots(set).await.unwrap();
    provider.pre_commit_snapshots(set).await.unwrap();
    let states = provider.query_snapshots().await.unwrap();
    assert_eq!(states[0].state, SnapshotState::Precommitted);
    let err = provider.commit_snapshots(set).await.unwrap_err();
    assert_eq!(err.code, codes::VSS_E_HOLD_WRITES_TIMEOUT, "{err}");
    assert_thawed(&[&vol]).await;
    assert!(!clone_path(&vol, snap).exists());
    assert_eq!(provider.image_of(snap), None);
    provider.abort_snapshots(set).await.unwrap();
    assert!(provider.query_snapshots().await.unwrap().is_empty());
    vol.close().expect("inner cleaned up");
    host.close().expect("host cleaned up");
}

/// A volume whose image lies on another volume of the same set is refused: freezing the holder
/// would block the clone (deadlock). Three levels: host btrfs ⊃ middle btrfs ⊃ inner ext4.
#[tokio::test]
async fn loop_image_stacked_volumes_in_one_set_are_refused() {
    let host = host(FsKind::Btrfs);
    let middle = LoopVolume::new_in(FsKind::Btrfs, 256 * MIB, host.mount_point())
        .expect("a middle btrfs loop volume");
    let vol = inner(&middle);
    let provider = LoopImageProvider::new();
    for (first, second) in [(&middle, &vol), (&vol, &middle)] {
        let set = SnapshotSetId::new_random();
        provider
            .begin_prepare_snapshot(
                set,
                SnapshotId::new_random(),
                &mount(first),
                SnapshotContext::Backup,
            )
            .await
            .unwrap();
        let err = provider
            .begin_prepare_snapshot(
                set,
                SnapshotId::new_random(),
                &mount(second),
                SnapshotContext::Backup,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER);
        assert!(err.message.contains("deadlock"), "{}", err.message);
        // The same volume twice is refused as well.
        let err = provider
            .begin_prepare_snapshot(
                set,
                SnapshotId::new_random(),
                &mount(first),
                SnapshotContext::Backup,
            )
            .await
            .unwrap_err();
        assert!(err.message.contains("same file system"), "{}", err.message);
        provider.abort_snapshots(set).await.unwrap();
    }
    assert!(provider.query_snapshots().await.unwrap().is_empty());
    vol.close().expect("inner cleaned up");
    middle.close().expect("middle cleaned up");
    host.close().expect("host cleaned up");
}
