//! The reflink file-set provider on real loop-device file systems made for each test (xfs with
//! reflink=1 and btrfs; ext4 and a private tmpfs for the refusals): directory trees are copied
//! with FICLONE while the writers are frozen, keep contents and metadata, share extents with the
//! source, and do not follow later changes. The provider's commit is proportional to the number
//! of files (one FICLONE per file), which the tests check through its copy statistics.
//!
//! No test freezes anything: the provider never does. Every test ends with `close()`, which fails
//! when a mount or a loop device survives. Root only, like CI.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use shadowcopy_coordinator::{
    BackupSession, Coordinator, CoordinatorConfig, DeleteTarget, Provider, VolumeSupport,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{SnapshotAttributes, SnapshotContext, SnapshotState};
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use shadowcopy_providers::{REFLINK_PROVIDER_ID, ReflinkProvider};
use shadowcopy_test_support::{FsKind, LoopVolume, MIB, TempDir};

/// A fresh loop volume of `kind` (xfs needs at least 300 MiB).
fn volume(kind: FsKind) -> LoopVolume {
    let size = if kind == FsKind::Xfs { 320 } else { 256 } * MIB;
    LoopVolume::new(kind, size).expect("a loop volume (run as root)")
}

fn text(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn coordinator(provider: &Arc<ReflinkProvider>) -> Coordinator {
    Coordinator::new(
        CoordinatorConfig::default(),
        vec![provider.clone() as Arc<dyn Provider>],
    )
}

/// Starts a writerless set in `context` over `volumes`; returns the session and the ids.
async fn start_set(
    coord: &Coordinator,
    context: SnapshotContext,
    volumes: &[&str],
) -> (BackupSession, Vec<SnapshotId>) {
    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.set_context(context).unwrap();
    session.start_snapshot_set().unwrap();
    let mut ids = Vec::new();
    for volume in volumes {
        ids.push(session.add_to_snapshot_set(volume, None).await.unwrap());
    }
    (session, ids)
}

/// Sets the times of `path` without following a link.
fn set_times(path: &Path, seconds: i64) {
    let at = TimeSpec::new(seconds, 123_456_789);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &at,
        &at,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// A tree with nested directories, a 4 MiB file, an empty file, symbolic links (one dangling),
/// files and a directory with other owners and modes, and a FIFO (which is not copied). Returns
/// the number of regular files.
fn make_tree(root: &Path) -> u64 {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir(root.join("private")).unwrap();
    std::fs::write(root.join("a/one.txt"), "one").unwrap();
    std::fs::write(root.join("a/b/c/deep.txt"), "deep").unwrap();
    std::fs::write(root.join("empty.txt"), "").unwrap();
    let big: Vec<u8> = (0..4 * MIB as usize).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(root.join("private/owned.txt"), "someone else's").unwrap();
    std::os::unix::fs::chown(root.join("private/owned.txt"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(
        root.join("private/owned.txt"),
        PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("private"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(root.join("private"), PermissionsExt::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("a/one.txt", root.join("link-to-one")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::os::unix::fs::lchown(root.join("dangling"), Some(4321), Some(8765)).unwrap();
    nix::unistd::mkfifo(
        &root.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // Old, distinct times; directories last, since creating entries changes them.
    for (i, path) in [
        "a/one.txt",
        "a/b/c/deep.txt",
        "empty.txt",
        "big.bin",
        "run.sh",
        "private/owned.txt",
        "link-to-one",
        "dangling",
        "a/b/c",
        "a/b",
        "a",
        "private",
    ]
    .iter()
    .enumerate()
    {
        set_times(&root.join(path), 1_000_000_000 + i as i64 * 1000);
    }
    6
}

/// One entry of a tree: type and mode, owner, group, mtime (s, ns), content or link target.
type Seen = (u32, u32, u32, (i64, i64), Vec<u8>);

/// What a tree holds, by relative path.
fn snapshot_of(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut found = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&relative)).unwrap() {
            let entry = entry.unwrap();
            let path = relative.join(entry.file_name());
            let meta = std::fs::symlink_metadata(root.join(&path)).unwrap();
            let body = if meta.is_dir() {
                stack.push(path.clone());
                Vec::new()
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(root.join(&path))
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_file() {
                std::fs::read(root.join(&path)).unwrap()
            } else {
                b"special".to_vec()
            };
            found.insert(
                path,
                (
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    (meta.mtime(), meta.mtime_nsec()),
                    body,
                ),
            );
        }
    }
    found
}

/// Whether `filefrag -v` reports a shared extent in `path` (FIEMAP_EXTENT_SHARED, platform facts
/// §2 "FIEMAP").
fn has_shared_extents(path: &Path) -> bool {
    let output = Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "filefrag -v {}", path.display());
    String::from_utf8_lossy(&output.stdout).contains("shared")
}

/// A tree copied through the coordinator on xfs and on btrfs: identical contents, modes, owners
/// and mtimes (FIFO skipped), the 4 MiB file shares its extents with the source, later changes to
/// the source do not show in the copy, the copy is read-only 0500 in a 0700 copy area at the
/// mount root, one FICLONE per file (the commit is proportional to the number of files), and
/// release deletes the auto-release copy.
#[tokio::test]
async fn reflink_copies_a_tree_with_contents_metadata_and_shared_extents() {
    for kind in [FsKind::Xfs, FsKind::Btrfs] {
        let vol = volume(kind);
        let data = vol.path("data");
        let files = make_tree(&data);
        let before = snapshot_of(&data);

        let provider = Arc::new(ReflinkProvider::new());
        assert_eq!(
            provider
                .is_volume_supported(&text(&data), SnapshotContext::Backup)
                .await
                .unwrap(),
            VolumeSupport::Supported
        );
        assert!(
            !vol.path(".shadowcopy-files").exists(),
            "the support probe leaves nothing behind"
        );
        let coord = coordinator(&provider);
        let (mut session, ids) =
            start_set(&coord, SnapshotContext::FileShareBackup, &[&text(&data)]).await;
        session.do_snapshot_set().await.unwrap();

        let records = coord.snapshots(SnapshotContext::All).await.unwrap();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.state, SnapshotState::Created);
        assert_eq!(record.provider_id, REFLINK_PROVIDER_ID);
        assert!(
            record.attributes.contains(
                SnapshotAttributes::NO_AUTORECOVERY
                    | SnapshotAttributes::DIFFERENTIAL
                    | SnapshotAttributes::NO_WRITERS
            ),
            "{:?}",
            record.attributes
        );
        let copy = vol.path(format!(".shadowcopy-files/{}", ids[0]));
        assert_eq!(record.snapshot_path.as_deref(), Some(text(&copy).as_str()));
        assert_eq!(provider.copy_of(ids[0]), Some(copy.clone()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&vol.path(".shadowcopy-files")), 0o700, "SNAP-3");
        assert_eq!(mode(&copy), 0o500, "read-only after PostFinalCommit");

        let mut expected = before.clone();
        expected.remove(Path::new("pipe"));
        assert_eq!(
            snapshot_of(&copy),
            expected,
            "{kind}: the copy mirrors the tree"
        );
        assert_eq!(
            std::fs::read_to_string(copy.join("link-to-one")).unwrap(),
            "one"
        );
        assert!(
            has_shared_extents(&copy.join("big.bin")),
            "{kind}: the copy's 4 MiB file shares extents with the source"
        );

        let stats = provider.copy_stats(ids[0]).expect("committed");
        assert_eq!(stats.files, files, "one FICLONE per regular file");
        assert_eq!(stats.directories, 4);
        assert_eq!(stats.symlinks, 2);
        assert_eq!(stats.bytes, 4 * MIB + 3 + 4 + 10 + 14);
        assert_eq!(
            stats
                .skipped
                .iter()
                .map(|(p, _)| p.clone())
                .collect::<Vec<_>>(),
            vec![PathBuf::from("pipe")]
        );
        eprintln!(
            "{kind}: copied {} files, {} directories, {} links in {:.3} ms",
            stats.files,
            stats.directories,
            stats.symlinks,
            stats.took.as_secs_f64() * 1e3
        );

        // Later changes to the source stay out of the copy.
        std::fs::write(data.join("big.bin"), vec![0u8; MIB as usize]).unwrap();
        std::fs::write(data.join("a/one.txt"), "changed").unwrap();
        std::fs::remove_file(data.join("a/b/c/deep.txt")).unwrap();
        std::fs::write(data.join("new.txt"), "new").unwrap();
        assert_eq!(
            snapshot_of(&copy),
            expected,
            "{kind}: the copy did not change"
        );

        session.release().await.unwrap();
        coord.wait_background().await;
        assert!(!copy.exists(), "release deletes the auto-release copy");
        assert!(provider.query_snapshots().await.unwrap().is_empty());
        drop(coord);
        vol.close().expect("volume cleaned up");
    }
}

/// A set over a directory on xfs and one on btrfs: each copy lies on its own file system, both
/// hold the files of the moment of the set, a persistent copy survives release, and
/// DeleteSnapshots by set deletes both (DEL-1).
#[tokio::test]
async fn reflink_two_directory_set_on_xfs_and_btrfs_and_delete_by_set() {
    let (xfs, btrfs) = (volume(FsKind::Xfs), volume(FsKind::Btrfs));
    let (dir_x, dir_b) = (xfs.path("srv/x"), btrfs.path("srv/b"));
    for (dir, name) in [(&dir_x, "xfs"), (&dir_b, "btrfs")] {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/file.txt"), format!("{name} before")).unwrap();
    }
    let provider = Arc::new(ReflinkProvider::new());
    let coord = coordinator(&provider);
    let (mut session, ids) = start_set(
        &coord,
        SnapshotContext::NasRollback,
        &[&text(&dir_x), &text(&dir_b)],
    )
    .await;
    session.do_snapshot_set().await.unwrap();
    let set = session.snapshot_set_id().expect("a set");
    for dir in [&dir_x, &dir_b] {
        std::fs::write(dir.join("sub/file.txt"), "after").unwrap();
    }
    session.release().await.unwrap();
    coord.wait_background().await;

    let copies: Vec<PathBuf> = ids
        .iter()
        .map(|id| provider.copy_of(*id).unwrap())
        .collect();
    for ((copy, vol), name) in copies.iter().zip([&xfs, &btrfs]).zip(["xfs", "btrfs"]) {
        assert!(copy.starts_with(vol.mount_point()), "{}", copy.display());
        assert_eq!(
            std::fs::read_to_string(copy.join("sub/file.txt")).unwrap(),
            format!("{name} before")
        );
        assert!(
            copy.starts_with(vol.path(".shadowcopy-files")),
            "the copy is on the volume's own file system"
        );
    }
    let records = provider.query_snapshots().await.unwrap();
    assert_eq!(
        records.len(),
        2,
        "persistent copies survive release (CTX-2)"
    );
    assert!(records.iter().all(|r| r.state == SnapshotState::Created));

    assert_eq!(
        provider
            .delete_snapshots(DeleteTarget::Set(set))
            .await
            .unwrap(),
        2
    );
    assert!(copies.iter().all(|c| !c.exists()));
    assert!(provider.query_snapshots().await.unwrap().is_empty());
    let err = provider
        .delete_snapshots(DeleteTarget::Snapshot(ids[0]))
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::VSS_E_OBJECT_NOT_FOUND);
    drop(coord);
    xfs.close().expect("xfs cleaned up");
    btrfs.close().expect("btrfs cleaned up");
}

/// A tmpfs of the test's own, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "shadowcopy-test-tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn unsupported(support: VolumeSupport) -> String {
    match support {
        VolumeSupport::Unsupported { reason } => reason,
        VolumeSupport::Supported => panic!("expected a refusal"),
    }
}

/// PROV-R-1: directories on ext4 and tmpfs, a file, a volume that contains the copy area or lies
/// inside it, a copy root on another file system and a client-accessible context are refused
/// with a reason that says what would work; through the coordinator an ext4 directory is
/// VSS_E_VOLUME_NOT_SUPPORTED; nothing is recorded or left behind.
#[tokio::test]
async fn reflink_refuses_what_it_cannot_clone() {
    let (ext4, xfs, btrfs) = (
        volume(FsKind::Ext4),
        volume(FsKind::Xfs),
        volume(FsKind::Btrfs),
    );
    let temp = TempDir::new("reflink-tmpfs");
    let tmpfs = Tmpfs::mount(temp.join("mnt"));
    let provider = ReflinkProvider::new();
    let ask = |volume: PathBuf, context| {
        let provider = &provider;
        async move {
            unsupported(
                provider
                    .is_volume_supported(&text(&volume), context)
                    .await
                    .unwrap(),
            )
        }
    };
    let hint = "use a btrfs or reflink-enabled xfs file system, or put the data on a loop volume";

    std::fs::create_dir(ext4.path("data")).unwrap();
    let reason = ask(ext4.path("data"), SnapshotContext::Backup).await;
    assert!(reason.contains("ext4") && reason.contains(hint), "{reason}");

    std::fs::create_dir(tmpfs.0.join("data")).unwrap();
    let reason = ask(tmpfs.0.join("data"), SnapshotContext::Backup).await;
    assert!(
        reason.contains("tmpfs") && reason.contains(hint),
        "{reason}"
    );

    std::fs::write(xfs.path("file.txt"), "x").unwrap();
    let reason = ask(xfs.path("file.txt"), SnapshotContext::Backup).await;
    assert!(reason.contains("not a directory"), "{reason}");

    let reason = ask(xfs.mount_point().to_path_buf(), SnapshotContext::Backup).await;
    assert!(reason.contains("contains the copy area"), "{reason}");

    std::fs::create_dir_all(xfs.path(".shadowcopy-files/inside")).unwrap();
    let reason = ask(
        xfs.path(".shadowcopy-files/inside"),
        SnapshotContext::Backup,
    )
    .await;
    assert!(reason.contains("lies inside the copy area"), "{reason}");
    std::fs::remove_dir_all(xfs.path(".shadowcopy-files")).unwrap();

    std::fs::create_dir(xfs.path("data")).unwrap();
    let reason = ask(xfs.path("data"), SnapshotContext::ClientAccessible).await;
    assert!(reason.contains("CTX-1"), "{reason}");

    // The copies of an xfs directory cannot live on a btrfs: the probe clone fails with EXDEV.
    let elsewhere = ReflinkProvider::new()
        .with_copy_root(btrfs.path("copies"))
        .unwrap();
    let reason = unsupported(
        elsewhere
            .is_volume_supported(&text(&xfs.path("data")), SnapshotContext::Backup)
            .await
            .unwrap(),
    );
    assert!(reason.contains("cannot cross file systems"), "{reason}");
    assert!(!btrfs.path("copies").exists());

    let err = provider
        .begin_prepare_snapshot(
            SnapshotSetId::new_random(),
            SnapshotId::new_random(),
            &text(&ext4.path("data")),
            SnapshotContext::Backup,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER);
    assert!(
        err.message.contains(&text(&ext4.path("data"))),
        "{}",
        err.message
    );
    assert!(provider.query_snapshots().await.unwrap().is_empty());

    let provider = Arc::new(provider);
    let coord = coordinator(&provider);
    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session
        .set_context(SnapshotContext::FileShareBackup)
        .unwrap();
    session.start_snapshot_set().unwrap();
    let err = session
        .add_to_snapshot_set(&text(&ext4.path("data")), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_VOLUME_NOT_SUPPORTED);
    assert!(err.message().contains("reflink-enabled xfs"), "{err}");
    session.release().await.unwrap();
    drop(coord);
    drop(tmpfs);
    for vol in [ext4, xfs, btrfs] {
        vol.close().expect("volume cleaned up");
    }
}

/// The steps one by one (PROV-SEQ-1): EndPrepare makes the directory skeleton only, Commit clones
/// the files of the moment (a directory made after EndPrepare is copied, one removed after it is
/// not), abort deletes the copy; a new set discards a stale prepared one with its copy
/// (PROV-SEQ-2), and a step out of order is VSS_E_BAD_STATE.
#[tokio::test]
async fn reflink_steps_abort_and_stale_preparation() {
    let vol = volume(FsKind::Btrfs);
    let data = vol.path("data");
    make_tree(&data);
    let volume = text(&data);
    let provider = ReflinkProvider::new();
    let (set, snap) = (SnapshotSetId::new_random(), SnapshotId::new_random());
    provider
        .begin_prepare_snapshot(set, snap, &volume, SnapshotContext::Backup)
        .await
        .unwrap();
    let err = provider.commit_snapshots(set).await.unwrap_err();
    assert_eq!(err.code, codes::VSS_E_BAD_STATE);
    provider.end_prepare_snapshots(set).await.unwrap();
    let copy = vol.path(format!(".shadowcopy-files/{snap}"));
    assert!(
        copy.join("a/b/c").is_dir(),
        "the skeleton exists after EndPrepare"
    );
    assert!(
        !copy.join("a/one.txt").exists(),
        "files wait for the commit"
    );
    assert_eq!(provider.copy_of(snap), None);

    std::fs::create_dir_all(data.join("late/inner")).unwrap();
    std::fs::write(data.join("late/inner/x.txt"), "late").unwrap();
    std::fs::remove_dir_all(data.join("a/b")).unwrap();
    provider.pre_commit_snapshots(set).await.unwrap();
    provider.commit_snapshots(set).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(copy.join("late/inner/x.txt")).unwrap(),
        "late"
    );
    assert!(
        !copy.join("a/b").exists(),
        "a directory removed before the commit"
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("a/one.txt")).unwrap(),
        "one"
    );
    let states = provider.query_snapshots().await.unwrap();
    assert_eq!(states[0].state, SnapshotState::Committed);
    assert_eq!(
        states[0].snapshot_path.as_deref(),
        Some(text(&copy).as_str())
    );

    provider.abort_snapshots(set).await.unwrap();
    assert!(!copy.exists(), "abort deletes the copy");
    assert!(provider.query_snapshots().await.unwrap().is_empty());

    // A prepared set that is never mentioned again is discarded by the next one (PROV-SEQ-2).
    let (stale_set, stale) = (SnapshotSetId::new_random(), SnapshotId::new_random());
    provider
        .begin_prepare_snapshot(stale_set, stale, &volume, SnapshotContext::Backup)
        .await
        .unwrap();
    provider.end_prepare_snapshots(stale_set).await.unwrap();
    let stale_copy = vol.path(format!(".shadowcopy-files/{stale}"));
    assert!(stale_copy.is_dir());
    let next = SnapshotSetId::new_random();
    provider
        .begin_prepare_snapshot(
            next,
            SnapshotId::new_random(),
            &volume,
            SnapshotContext::Backup,
        )
        .await
        .unwrap();
    assert!(!stale_copy.exists(), "the stale copy is deleted");
    let left = provider.query_snapshots().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].set_id, next);
    provider.abort_snapshots(next).await.unwrap();
    assert!(provider.query_snapshots().await.unwrap().is_empty());
    assert_eq!(provider.jobs_in_flight(), 0);
    vol.close().expect("volume cleaned up");
}

/// The commit clones file by file: 1,500 files in 15 directories are 1,500 FICLONEs, every one of
/// them in the copy (the commit time grows with the number of files; it is printed, not
/// asserted).
#[tokio::test]
async fn reflink_commit_is_one_clone_per_file() {
    let vol = volume(FsKind::Xfs);
    let data = vol.path("many");
    for d in 0..15 {
        std::fs::create_dir_all(data.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            std::fs::write(data.join(format!("d{d}/f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let provider = Arc::new(ReflinkProvider::new());
    let coord = coordinator(&provider);
    let (mut session, ids) =
        start_set(&coord, SnapshotContext::FileShareBackup, &[&text(&data)]).await;
    session.do_snapshot_set().await.unwrap();
    let stats = provider.copy_stats(ids[0]).unwrap();
    assert_eq!((stats.files, stats.directories), (1500, 15));
    eprintln!(
        "xfs: 1500 files cloned in {:.3} ms",
        stats.took.as_secs_f64() * 1e3
    );
    let copy = provider.copy_of(ids[0]).unwrap();
    for d in 0..15 {
        for f in 0..100 {
            assert_eq!(
                std::fs::read_to_string(copy.join(format!("d{d}/f{f}"))).unwrap(),
                format!("{d}/{f}")
            );
        }
    }
    session.release().await.unwrap();
    coord.wait_background().await;
    assert!(!copy.exists());
    drop(coord);
    vol.close().expect("volume cleaned up");
}

/// CTX-2 with a catalog: a persistent copy survives a provider restart (same record, same
/// files, still deletable), while an auto-release copy left behind by the "crashed" provider is
/// an orphan that the restart deletes.
#[tokio::test]
async fn reflink_copy_survives_a_restart_with_a_catalog() {
    let vol = volume(FsKind::Xfs);
    let data = vol.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/kept.txt"), "kept").unwrap();
    let state = TempDir::new("reflink-catalog");
    let catalog = state.join("reflink-catalog.json");

    let first = Arc::new(ReflinkProvider::new().with_catalog(&catalog).unwrap());
    let coord = coordinator(&first);
    let (mut session, ids) = start_set(&coord, SnapshotContext::NasRollback, &[&text(&data)]).await;
    session.do_snapshot_set().await.unwrap();
    session.release().await.unwrap();
    coord.wait_background().await;
    drop(coord);
    let persistent = ids[0];
    let record = first.query_snapshots().await.unwrap().remove(0);
    let copy = first.copy_of(persistent).unwrap();

    // An auto-release copy whose session dies with the process.
    let (set, orphan) = (SnapshotSetId::new_random(), SnapshotId::new_random());
    first
        .begin_prepare_snapshot(set, orphan, &text(&data), SnapshotContext::FileShareBackup)
        .await
        .unwrap();
    first.end_prepare_snapshots(set).await.unwrap();
    first.pre_commit_snapshots(set).await.unwrap();
    first.commit_snapshots(set).await.unwrap();
    first.post_commit_snapshots(set).await.unwrap();
    first.pre_final_commit_snapshots(set).await.unwrap();
    first.post_final_commit_snapshots(set).await.unwrap();
    let orphan_copy = first.copy_of(orphan).unwrap();
    assert!(orphan_copy.is_dir());
    drop(first);

    let second = ReflinkProvider::new().with_catalog(&catalog).unwrap();
    assert_eq!(second.recovered().kept, 1);
    assert_eq!(second.recovered().deleted, vec![orphan]);
    assert!(!orphan_copy.exists(), "the orphan's copy is deleted");
    assert_eq!(second.query_snapshots().await.unwrap(), vec![record]);
    assert_eq!(second.copy_of(persistent), Some(copy.clone()));
    assert_eq!(
        std::fs::read_to_string(copy.join("sub/kept.txt")).unwrap(),
        "kept"
    );
    assert_eq!(
        second
            .delete_snapshots(DeleteTarget::Snapshot(persistent))
            .await
            .unwrap(),
        1
    );
    assert!(!copy.exists());
    drop(second);
    let third = ReflinkProvider::new().with_catalog(&catalog).unwrap();
    assert_eq!(third.recovered().kept, 0);
    assert!(third.query_snapshots().await.unwrap().is_empty());
    vol.close().expect("volume cleaned up");
}
