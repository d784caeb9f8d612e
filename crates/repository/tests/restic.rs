//! Backups against the real `restic` (Debian's 0.14): what shadowcopy writes, restic lists,
//! checks and restores byte for byte; a set of volumes is one snapshot recorded under the original
//! mount points, nested volumes own their subtrees, filters leave entries out, and the next backup
//! of other shadow copies of the same volumes finds its parent.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use shadowcopy_repository::{
    EntryFilter, EntryKind, METADATA_DIR, MetadataFile, ParentChoice, Password, Repository,
    RepositoryError, VolumeSource,
};
use shadowcopy_test_support::{LoopVolume, MIB, TempDir};

/// The snapshot `restic snapshots --json` lists with this id.
fn restic_snapshot(repo: &Path, id: &str) -> serde_json::Value {
    let listed: serde_json::Value =
        serde_json::from_slice(&restic(repo, &["snapshots", "--json"]).stdout).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("restic does not list {id}: {listed}"))
        .clone()
}

fn documents_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir.join(METADATA_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn one_volume_restic_lists_checks_and_restores_it_and_the_second_backup_finds_its_parent() {
    let tmp = TempDir::new("repo-restic");
    // Real shadow copies: read-only btrfs snapshots of a live subvolume, as the btrfs provider
    // makes them, so that the second copy is at another path but keeps inode numbers.
    let disk = LoopVolume::btrfs(256 * MIB).expect("btrfs loop volume");
    let live = disk.create_subvolume("data").unwrap();
    let file_count = make_tree(&live, 0);
    let copy1 = disk.path("copy1");
    btrfs_snapshot(&live, &copy1);

    let repo_path = tmp.join("repo");
    let repo = Repository::open_or_init(&repo_path, Password::new(PASSWORD)).unwrap();
    let docs = documents();
    let tags = tags();
    let volumes = [volume("/srv/data", &copy1)];
    let first = repo.backup(&request(&volumes, &tags, &docs)).unwrap();
    assert_eq!(first.files_new, file_count + 2, "{first:?}");
    assert_eq!(first.files_unmodified, 0, "{first:?}");
    assert_eq!(first.parent_id, None);
    assert!(first.bytes_added > 3 * MIB, "{first:?}");

    let ours = repo.snapshots().unwrap();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].id, first.snapshot_id);
    assert_eq!(ours[0].paths, vec!["/srv/data".to_owned()]);
    assert_eq!(ours[0].parent, None);
    assert_eq!(ours[0].files_total, Some(file_count + 2));
    assert_eq!(ours[0].bytes_total, Some(first.bytes_processed));
    assert_eq!(ours[0].data_added, Some(first.bytes_added));
    assert!(
        ours[0].time.contains('T') && ours[0].time.ends_with('Z'),
        "RFC 3339: {}",
        ours[0].time
    );
    for tag in &tags {
        assert!(
            ours[0].tags.contains(tag),
            "{tag} missing: {:?}",
            ours[0].tags
        );
    }
    // The documents are at the root of the tree, beside the volume.
    assert_eq!(
        repo.metadata_file(&first.snapshot_id, "bcd.json").unwrap(),
        Some(docs[0].contents.clone())
    );
    assert_eq!(
        repo.metadata_file(&first.snapshot_id[..10], "wmd-postgres.json")
            .unwrap(),
        Some(docs[1].contents.clone())
    );
    assert_eq!(
        repo.metadata_file(&first.snapshot_id, "nope.json").unwrap(),
        None
    );

    // restic sees the same snapshot, path and tags.
    let listed = restic_snapshot(&repo_path, &first.snapshot_id);
    assert_eq!(listed["paths"], serde_json::json!(["/srv/data"]));
    for tag in &tags {
        assert!(
            listed["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == tag.as_str()),
            "restic does not list tag {tag}: {listed}"
        );
    }
    restic_check_read_data(&repo_path);
    let target1 = tmp.join("restore1");
    restic(
        &repo_path,
        &[
            "restore",
            &first.snapshot_id,
            "--target",
            target1.to_str().unwrap(),
        ],
    );
    assert_same_tree(&copy1, &target1.join("srv/data"));
    assert_eq!(documents_in(&target1), ["bcd.json", "wmd-postgres.json"]);
    assert_eq!(
        fs::read(target1.join(METADATA_DIR).join("bcd.json")).unwrap(),
        docs[0].contents
    );

    // Change the live volume a little, cut a second copy at another path, and back it up under
    // the same original path: the first snapshot is found as parent and the rest is not read.
    for (d, s, f) in [(0, 0, 3), (1, 2, 4), (2, 3, 5), (3, 4, 6), (0, 1, 0)] {
        let path = live.join(format!("dir {d}/sub,{s}/file-{f}.bin"));
        fs::write(&path, pseudo_random(9000 + f, 4096)).unwrap();
    }
    fs::write(live.join("dir 3/new-file.bin"), pseudo_random(7777, 20_000)).unwrap();
    fs::remove_file(live.join("dir 2/sub,0/file-9.bin")).unwrap();
    let copy2 = disk.path("copy2");
    btrfs_snapshot(&live, &copy2);
    let volumes = [volume("/srv/data", &copy2)];
    let second = repo.backup(&request(&volumes, &tags, &docs)).unwrap();
    assert_eq!(
        second.parent_id.as_deref(),
        Some(first.snapshot_id.as_str()),
        "{second:?}"
    );
    // 200 files - 1 deleted - 5 changed; the two documents are written afresh every time.
    assert_eq!(second.files_unmodified, file_count - 6, "{second:?}");
    assert_eq!(second.files_changed, 5 + 2, "{second:?}");
    assert_eq!(second.files_new, 1, "{second:?}");
    assert!(
        second.bytes_added < MIB,
        "only the changed files are added: {second:?}"
    );
    let listed = repo.snapshots().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[1].parent.as_deref(),
        Some(first.snapshot_id.as_str())
    );

    let target2 = tmp.join("restore2");
    restic(
        &repo_path,
        &["restore", "latest", "--target", target2.to_str().unwrap()],
    );
    assert_same_tree(&copy2, &target2.join("srv/data"));
    restic(&repo_path, &["check"]);
    disk.close().unwrap();
}

#[test]
fn two_volumes_are_one_snapshot_under_their_original_paths_and_the_next_backup_finds_its_parent() {
    let tmp = TempDir::new("repo-two-volumes");
    let alpha = LoopVolume::btrfs(200 * MIB).expect("btrfs loop volume");
    let beta = LoopVolume::btrfs(200 * MIB).expect("btrfs loop volume");
    let alpha_live = alpha.create_subvolume("live").unwrap();
    let beta_live = beta.create_subvolume("live").unwrap();
    let files = make_tree(&alpha_live, 1) + make_tree(&beta_live, 2);
    let (alpha1, beta1) = (alpha.path("copy1"), beta.path("copy1"));
    btrfs_snapshot(&alpha_live, &alpha1);
    btrfs_snapshot(&beta_live, &beta1);

    let repo_path = tmp.join("repo");
    let repo = Repository::open_or_init(&repo_path, Password::new(PASSWORD)).unwrap();
    let (tags, docs) = (tags(), documents());
    let volumes = [
        volume("/srv/alpha", &alpha1),
        volume("/var/lib/beta", &beta1),
    ];
    let progress = Recorder::new();
    let mut req = request(&volumes, &tags, &docs);
    req.progress = Some(progress.handle());
    let first = repo.backup(&req).unwrap();
    assert_eq!(first.files_new, files + 2, "{first:?}");
    // The scan's total and the bytes read both reach the snapshot's size.
    assert_eq!(progress.total(), first.bytes_processed, "{first:?}");
    assert_eq!(progress.done(), first.bytes_processed, "{first:?}");

    let listed = restic_snapshot(&repo_path, &first.snapshot_id);
    assert_eq!(
        listed["paths"],
        serde_json::json!(["/srv/alpha", "/var/lib/beta"])
    );
    restic_check_read_data(&repo_path);
    let target = tmp.join("restore");
    restic(
        &repo_path,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&alpha1, &target.join("srv/alpha"));
    assert_same_tree(&beta1, &target.join("var/lib/beta"));
    assert_eq!(documents_in(&target), ["bcd.json", "wmd-postgres.json"]);
    assert!(
        !target.join("srv/alpha").join(METADATA_DIR).exists(),
        "documents are at the root, not in a volume"
    );

    // A few changes on each volume; new copies at new paths.
    fs::write(
        alpha_live.join("dir 0/sub,0/file-3.bin"),
        pseudo_random(1, 5000),
    )
    .unwrap();
    fs::write(
        beta_live.join("dir 3/sub,1/file-2.bin"),
        pseudo_random(2, 5000),
    )
    .unwrap();
    fs::write(beta_live.join("added.bin"), pseudo_random(3, 5000)).unwrap();
    let (alpha2, beta2) = (alpha.path("copy2"), beta.path("copy2"));
    btrfs_snapshot(&alpha_live, &alpha2);
    btrfs_snapshot(&beta_live, &beta2);
    let volumes2 = [
        volume("/srv/alpha", &alpha2),
        volume("/var/lib/beta", &beta2),
    ];
    let progress = Recorder::new();
    let mut req = request(&volumes2, &tags, &docs);
    req.progress = Some(progress.handle());
    let second = repo.backup(&req).unwrap();
    assert_eq!(
        second.parent_id.as_deref(),
        Some(first.snapshot_id.as_str()),
        "{second:?}"
    );
    assert_eq!(second.files_unmodified, files - 2, "{second:?}");
    assert_eq!(second.files_changed, 2 + 2, "{second:?}");
    assert_eq!(second.files_new, 1, "{second:?}");
    assert!(second.bytes_added < MIB, "{second:?}");
    assert!(progress.done() > 0 && progress.total() > 0);

    // The parent can be named (a differential backup against the first, full one), by prefix.
    let mut req = request(&volumes2, &tags, &docs);
    req.parent = ParentChoice::Snapshot(first.snapshot_id[..12].to_owned());
    let third = repo.backup(&req).unwrap();
    assert_eq!(
        third.parent_id.as_deref(),
        Some(first.snapshot_id.as_str()),
        "{third:?}"
    );
    assert_eq!(third.files_unmodified, files - 2, "{third:?}");
    // Or left out: every file is read again.
    let mut req = request(&volumes2, &tags, &docs);
    req.parent = ParentChoice::None;
    let full = repo.backup(&req).unwrap();
    assert_eq!(full.parent_id, None, "{full:?}");
    assert_eq!(full.files_unmodified, 0, "{full:?}");
    assert_eq!(full.files_new, files + 1 + 2, "{full:?}");

    // A snapshot of other volumes cannot be the parent: rustic would silently ignore it.
    let only_alpha = [volume("/srv/alpha", &alpha2)];
    let other = repo.backup(&request(&only_alpha, &tags, &docs)).unwrap();
    assert_eq!(other.parent_id, None);
    let mut req = request(&volumes2, &tags, &docs);
    req.parent = ParentChoice::Snapshot(other.snapshot_id.clone());
    let err = repo.backup(&req).unwrap_err();
    assert!(
        matches!(err, RepositoryError::ParentUnusable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("/var/lib/beta"), "{err}");
    req.parent = ParentChoice::Snapshot("0123456789abcdef".to_owned());
    let err = repo.backup(&req).unwrap_err();
    assert!(
        matches!(err, RepositoryError::ParentUnusable { .. }),
        "{err:?}"
    );
    assert_eq!(
        repo.snapshots().unwrap().len(),
        5,
        "refused backups add nothing"
    );

    restic(&repo_path, &["check"]);
    let target = tmp.join("restore-latest");
    restic(
        &repo_path,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&alpha2, &target.join("srv/alpha"));
    alpha.close().unwrap();
    beta.close().unwrap();
}

#[test]
fn a_nested_volume_owns_its_mount_point_in_the_outer_volume() {
    let tmp = TempDir::new("repo-nested");
    let disk = LoopVolume::btrfs(200 * MIB).expect("btrfs loop volume");
    let outer = disk.create_subvolume("srv").unwrap();
    let inner = disk.create_subvolume("db").unwrap();
    make_tree(&outer, 3);
    // The outer volume's mount point directory, with something underneath that the mount hides.
    fs::create_dir(outer.join("db")).unwrap();
    fs::write(outer.join("db/hidden-under-the-mount"), b"hidden").unwrap();
    // Names that sort around the mount point.
    fs::write(outer.join("da"), b"before").unwrap();
    fs::create_dir(outer.join("db-other")).unwrap();
    fs::write(outer.join("db-other/x"), b"after").unwrap();
    make_tree(&inner, 4);
    set_mode(&inner, 0o750);
    let (outer_copy, inner_copy) = (disk.path("srv-copy"), disk.path("db-copy"));
    btrfs_snapshot(&outer, &outer_copy);
    btrfs_snapshot(&inner, &inner_copy);

    let repo_path = tmp.join("repo");
    let repo = Repository::open_or_init(&repo_path, Password::new(PASSWORD)).unwrap();
    let (tags, docs) = (tags(), documents());
    // The inner volume is given first: the order of the volumes does not matter.
    let volumes = [volume("/srv/db", &inner_copy), volume("/srv", &outer_copy)];
    let summary = repo.backup(&request(&volumes, &tags, &docs)).unwrap();

    let entries = repo.entries(&summary.snapshot_id).unwrap();
    let paths: Vec<&Path> = entries.iter().map(|e| e.path.as_path()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries come in Path::cmp order");
    assert!(!paths.contains(&Path::new("/srv/db/hidden-under-the-mount")));
    assert!(paths.contains(&Path::new("/srv/db/dir 0/sub,0/file-0.bin")));
    assert!(paths.contains(&Path::new("/srv/db-other/x")));
    assert!(paths.contains(&Path::new("/.shadowcopy-backup/bcd.json")));
    assert_eq!(
        paths.iter().filter(|p| **p == Path::new("/srv/db")).count(),
        1
    );

    restic_check_read_data(&repo_path);
    let target = tmp.join("restore");
    restic(
        &repo_path,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    // The inner volume, with its root's own mode, in place of the mount point.
    assert_same_tree(&inner_copy, &target.join("srv/db"));
    let meta = fs::metadata(target.join("srv/db")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o750
    );
    // The outer volume, apart from what lies under the mount point.
    fs::remove_dir_all(target.join("srv/db")).unwrap();
    let outer_view = tmp.join("outer-view");
    fs::create_dir(&outer_view).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", outer_copy.display()))
        .arg(&outer_view)
        .status()
        .unwrap();
    assert!(cp.success());
    fs::remove_dir_all(outer_view.join("db")).unwrap();
    assert_same_tree(&outer_view, &target.join("srv"));
    disk.close().unwrap();
}

#[test]
fn a_filter_leaves_out_files_and_whole_subtrees_by_original_path() {
    let tmp = TempDir::new("repo-filter");
    let disk = LoopVolume::btrfs(200 * MIB).expect("btrfs loop volume");
    let live = disk.create_subvolume("live").unwrap();
    make_tree(&live, 5);
    let copy = disk.path("copy");
    btrfs_snapshot(&live, &copy);

    let repo = Repository::open_or_init(&tmp.join("repo"), Password::new(PASSWORD)).unwrap();
    let (tags, docs) = (tags(), documents());
    let volumes = [volume("/srv/app", &copy)];
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let filter: EntryFilter = Arc::new(move |path: &Path, kind: EntryKind| {
        seen.lock().unwrap().push((path.to_path_buf(), kind));
        !(path == Path::new("/srv/app/dir 1")
            || (kind == EntryKind::File && path.ends_with("file-7.bin"))
            || path == Path::new("/srv/app/dangling"))
    });
    let mut req = request(&volumes, &tags, &docs);
    req.filter = Some(filter);
    let summary = repo.backup(&req).unwrap();

    let entries = repo.entries(&summary.snapshot_id).unwrap();
    let has = |p: &str| entries.iter().any(|e| e.path == Path::new(p));
    assert!(!has("/srv/app/dir 1"));
    assert!(!entries.iter().any(|e| e.path.starts_with("/srv/app/dir 1")));
    assert!(!entries.iter().any(|e| e.path.ends_with("file-7.bin")));
    assert!(!has("/srv/app/dangling"));
    assert!(has("/srv/app/dir 0/sub,0/file-6.bin"));
    assert!(has("/srv/app/link-to-file"));
    assert!(
        has("/.shadowcopy-backup/bcd.json"),
        "documents are not filtered"
    );
    let kinds: Vec<_> = [
        "/srv/app/empty",
        "/srv/app/link-to-file",
        "/srv/app/+sorted-first",
    ]
    .iter()
    .map(|p| {
        entries
            .iter()
            .find(|e| e.path == Path::new(p))
            .unwrap()
            .kind
    })
    .collect();
    assert_eq!(kinds, [EntryKind::Dir, EntryKind::Symlink, EntryKind::File]);
    let file = entries
        .iter()
        .find(|e| e.path == Path::new("/srv/app/dir 0/sub,0/file-0.bin"))
        .unwrap();
    assert_eq!(file.size, 512 * 1024);
    assert!(file.mtime.is_some());

    // The filter saw original paths only, and never what lies under a directory it left out.
    let asked = asked.lock().unwrap();
    assert!(
        asked.iter().all(|(p, _)| p.starts_with("/srv/app")),
        "{asked:?}"
    );
    assert!(asked.contains(&(PathBuf::from("/srv/app"), EntryKind::Dir)));
    let left_out = Path::new("/srv/app/dir 1");
    assert!(
        !asked
            .iter()
            .any(|(p, _)| p.starts_with(left_out) && p != left_out)
    );
    drop(asked);
    disk.close().unwrap();
}

#[test]
fn a_volume_recorded_as_root_has_its_documents_directory_replaced_by_the_backups() {
    let tmp = TempDir::new("repo-root-volume");
    let copy = tmp.join("copy");
    fs::create_dir_all(copy.join(METADATA_DIR)).unwrap();
    fs::write(copy.join(METADATA_DIR).join("stale.json"), b"{}").unwrap();
    fs::write(copy.join("etc-file"), b"data").unwrap();
    let repo = Repository::open_or_init(&tmp.join("repo"), Password::new(PASSWORD)).unwrap();
    let tags = tags();
    let volumes = [volume("/", &copy)];
    let docs = documents();
    let with_docs = repo.backup(&request(&volumes, &tags, &docs)).unwrap();
    let names = |id: &str| -> Vec<PathBuf> {
        repo.entries(id)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect()
    };
    assert_eq!(
        names(&with_docs.snapshot_id),
        [
            "/.shadowcopy-backup",
            "/.shadowcopy-backup/bcd.json",
            "/.shadowcopy-backup/wmd-postgres.json",
            "/etc-file"
        ]
        .map(PathBuf::from)
    );
    // Without documents, the volume's own directory is backed up like any other.
    let without = repo.backup(&request(&volumes, &tags, &[])).unwrap();
    assert_eq!(
        names(&without.snapshot_id),
        [
            "/.shadowcopy-backup",
            "/.shadowcopy-backup/stale.json",
            "/etc-file"
        ]
        .map(PathBuf::from)
    );
}

/// A bind mount made for one test, unmounted when dropped.
struct BindMount(PathBuf);

impl BindMount {
    fn new(source: &Path, target: &Path) -> Self {
        let status = Command::new("mount")
            .arg("--bind")
            .arg(source)
            .arg(target)
            .status()
            .unwrap();
        assert!(status.success(), "mount --bind {}", source.display());
        Self(target.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn an_entry_that_cannot_be_read_fails_the_backup_naming_the_saved_snapshot() {
    let tmp = TempDir::new("repo-unreadable");
    let src = tmp.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("fine.txt"), b"fine").unwrap();
    // This process's memory at offset 0 is unmapped: reading the file fails with EIO even as
    // root, which no permission bit can arrange.
    fs::write(src.join("unreadable"), b"").unwrap();
    let _mount = BindMount::new(
        &PathBuf::from(format!("/proc/{}/mem", std::process::id())),
        &src.join("unreadable"),
    );
    let repo = Repository::open_or_init(&tmp.join("repo"), Password::new(PASSWORD)).unwrap();
    let tags = tags();
    let volumes = [volume("/srv/data", &src)];
    let err = repo.backup(&request(&volumes, &tags, &[])).unwrap_err();
    let RepositoryError::SourceUnreadable {
        snapshot_id,
        errors,
        volumes,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(volumes, &[PathBuf::from("/srv/data")]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("unreadable"), "{errors:?}");
    let message = err.to_string();
    assert!(
        message.contains(snapshot_id.as_str()) && message.contains("/srv/data"),
        "{message}"
    );
    // The snapshot was saved (without the file), so it can be inspected or forgotten.
    let entries = repo.entries(snapshot_id).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.path == Path::new("/srv/data/fine.txt"))
    );
    assert!(
        !entries
            .iter()
            .any(|e| e.path == Path::new("/srv/data/unreadable"))
    );
}

#[test]
fn a_wrong_password_is_refused_naming_the_repository() {
    let tmp = TempDir::new("repo-wrong-password");
    let repo_path = tmp.join("repo");
    Repository::open_or_init(&repo_path, Password::new(PASSWORD)).unwrap();
    // Reopening with the right password works and does not initialise again.
    Repository::open_or_init(&repo_path, Password::new(PASSWORD)).unwrap();
    let err = Repository::open_or_init(&repo_path, Password::new("not the password")).unwrap_err();
    assert!(
        matches!(err, RepositoryError::WrongPassword { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(repo_path.to_str().unwrap()), "{message}");
    assert!(message.contains("RESTIC_PASSWORD"), "{message}");

    // A non-empty directory that is not a repository is not initialised over.
    let other = tmp.join("not-a-repo");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("precious.txt"), b"keep me").unwrap();
    let err = Repository::open_or_init(&other, Password::new(PASSWORD)).unwrap_err();
    assert!(
        matches!(err, RepositoryError::NotARepository { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(other.to_str().unwrap()));
    assert_eq!(fs::read_dir(&other).unwrap().count(), 1);
}

#[test]
fn bad_requests_are_refused_before_writing() {
    let tmp = TempDir::new("repo-bad-input");
    let source = tmp.join("src");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("a"), b"a").unwrap();
    let repo = Repository::open_or_init(&tmp.join("repo"), Password::new(PASSWORD)).unwrap();
    let good = [volume("/srv/data", &source)];
    let tags = tags();
    let doc = |name: &str| {
        vec![MetadataFile {
            name: name.to_owned(),
            contents: vec![],
        }]
    };
    let comma = vec!["a,b".to_owned()];
    let empty_tag = vec![String::new()];
    let relative = [volume("srv/data", &source)];
    let dotdot = [volume("/srv/../etc", &source)];
    let twice = [volume("/srv/data", &source), volume("/srv//data/", &source)];
    let in_documents = [volume("/.shadowcopy-backup/x", &source)];
    let missing = [volume("/srv/data", &tmp.join("absent"))];
    let file_copy = [volume("/srv/data", &source.join("a"))];
    let too_many: Vec<VolumeSource> = (0..65)
        .map(|i| volume(&format!("/v{i}"), &source))
        .collect();
    let nested_name = doc("x/bcd.json");
    let dot_dot_name = doc("..");
    let same_names = [doc("a.json"), doc("a.json")].concat();
    let mut unknown_parent = request(&good, &tags, &[]);
    unknown_parent.parent = ParentChoice::Snapshot("deadbeef".to_owned());
    let cases = [
        ("comma tag", request(&good, &comma, &[])),
        ("empty tag", request(&good, &empty_tag, &[])),
        ("no volumes", request(&[], &tags, &[])),
        ("65 volumes", request(&too_many, &tags, &[])),
        ("relative original", request(&relative, &tags, &[])),
        ("`..` in original", request(&dotdot, &tags, &[])),
        ("same original twice", request(&twice, &tags, &[])),
        ("original in documents", request(&in_documents, &tags, &[])),
        ("missing copy", request(&missing, &tags, &[])),
        ("copy is a file", request(&file_copy, &tags, &[])),
        ("nested document name", request(&good, &tags, &nested_name)),
        ("`..` document name", request(&good, &tags, &dot_dot_name)),
        ("same document twice", request(&good, &tags, &same_names)),
        ("unknown parent", unknown_parent),
    ];
    for (what, req) in cases {
        let err = repo.backup(&req).expect_err(what);
        assert!(
            matches!(
                err,
                RepositoryError::InvalidInput { .. }
                    | RepositoryError::Io { .. }
                    | RepositoryError::ParentUnusable { .. }
            ),
            "{what}: {err:?}"
        );
        assert!(
            err.to_string().contains(tmp.join("repo").to_str().unwrap()),
            "{what}: {err}"
        );
    }
    assert!(repo.snapshots().unwrap().is_empty(), "nothing was written");
}

/// `Password::from_env` reads the process environment, so it is checked in a child process of
/// this test binary with an environment of its own (changing this process's would race the
/// other tests).
#[test]
fn password_comes_from_restic_password_then_restic_password_file() {
    if let Ok(expect) = std::env::var("SC_REPO_TEST_EXPECT") {
        let got = Password::from_env();
        match (expect.as_str(), got) {
            ("missing", Err(e @ RepositoryError::PasswordMissing)) => {
                assert!(e.to_string().contains("RESTIC_PASSWORD_FILE"));
            }
            ("file-error", Err(RepositoryError::PasswordFile { .. })) => {}
            (want, Ok(pw)) => {
                // The password opens a repository made with the expected one.
                let dir = PathBuf::from(std::env::var("SC_REPO_TEST_DIR").unwrap());
                Repository::open_or_init(&dir.join("repo"), Password::new(want)).unwrap();
                Repository::open_or_init(&dir.join("repo"), pw).unwrap();
            }
            (want, other) => panic!("expected {want}, got {other:?}"),
        }
        return;
    }
    let tmp = TempDir::new("repo-password-env");
    let file = tmp.join("pw");
    fs::write(&file, "from the file\n").unwrap();
    let empty = tmp.join("empty");
    let absent = tmp.join("absent");
    fs::write(&empty, "\n").unwrap();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a Path)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "env",
            vec![
                ("RESTIC_PASSWORD", Path::new("from env")),
                ("RESTIC_PASSWORD_FILE", &file),
            ],
            "from env",
        ),
        (
            "file",
            vec![("RESTIC_PASSWORD_FILE", &file)],
            "from the file",
        ),
        (
            "empty file",
            vec![("RESTIC_PASSWORD_FILE", &empty)],
            "file-error",
        ),
        (
            "absent file",
            vec![("RESTIC_PASSWORD_FILE", &absent)],
            "file-error",
        ),
        ("nothing", vec![], "missing"),
    ];
    for (i, (what, vars, expect)) in cases.into_iter().enumerate() {
        let dir = tmp.join(&format!("case{i}"));
        fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "password_comes_from_restic_password_then_restic_password_file",
        ])
        .env_remove("RESTIC_PASSWORD")
        .env_remove("RESTIC_PASSWORD_FILE")
        .env("SC_REPO_TEST_EXPECT", expect)
        .env("SC_REPO_TEST_DIR", &dir);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{what}: child ran no test"
        );
    }
}
