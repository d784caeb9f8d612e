//! Restores through `Repository::restore` and the repository check: units restored to their
//! original place, to other directories, as single files and through filters come back byte for
//! byte with modes, times and symlinks; crafted snapshots and hostile destinations are refused
//! without anything written outside the target; `check` finds a damaged pack.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use rustic_backend::BackendOptions;
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{
    BackupOptions, Credentials, ParentOptions, ReadSource, ReadSourceEntry, RepositoryOptions,
    RusticResult, SnapshotOptions,
};
use shadowcopy_repository::{
    EntryFilter, EntryKind, METADATA_DIR, Password, Repository, RepositoryError, RestoreUnit,
};
use shadowcopy_test_support::{LoopVolume, MIB, TempDir};

fn unit(source: &Path, destination: &Path, boundary: &Path) -> RestoreUnit {
    RestoreUnit {
        source: source.to_path_buf(),
        destination: destination.to_path_buf(),
        boundary: boundary.to_path_buf(),
        filter: None,
        mirror: false,
    }
}

fn count(tree: &std::collections::BTreeMap<PathBuf, Entry>, f: fn(&Entry) -> bool) -> u64 {
    tree.values().filter(|e| f(e)).count() as u64
}

fn file_bytes(tree: &std::collections::BTreeMap<PathBuf, Entry>) -> u64 {
    tree.values()
        .map(|e| match e {
            Entry::File { contents, .. } => contents.len() as u64,
            _ => 0,
        })
        .sum()
}

#[test]
fn restore_units_bring_back_trees_single_files_and_filtered_subtrees_byte_for_byte() {
    let tmp = TempDir::new("repo-restore-units");
    let disk = LoopVolume::btrfs(200 * MIB).expect("btrfs loop volume");
    let live = disk.create_subvolume("live").unwrap();
    make_tree(&live, 6);
    set_mode(&live, 0o711);
    let copy = disk.path("copy");
    btrfs_snapshot(&live, &copy);
    let copy_tree = read_tree(&copy);

    let repo = Repository::open_or_init(&tmp.join("repo"), Password::new(PASSWORD)).unwrap();
    let (tags, docs) = (tags(), documents());
    // The original is the live volume itself, so "the original place" is one a test may write.
    let original = live.clone();
    let volumes = [volume(original.to_str().unwrap(), &copy)];
    let backup = repo.backup(&request(&volumes, &tags, &docs)).unwrap();

    let elsewhere = tmp.join("elsewhere");
    let single_source = original.join("dir 1/sub,2/file-3.bin");
    let filter: EntryFilter = Arc::new(|rel: &Path, kind: EntryKind| {
        rel != Path::new("dir 0") && !(kind == EntryKind::File && rel.ends_with("file-1.bin"))
    });
    let mut filtered = unit(&original, &elsewhere.join("filtered"), &elsewhere);
    filtered.filter = Some(filter);
    let units = [
        unit(&original, &elsewhere.join("whole"), &elsewhere),
        unit(&single_source, &elsewhere.join("single"), &elsewhere),
        filtered,
        unit(
            &Path::new("/").join(METADATA_DIR),
            &elsewhere.join("documents"),
            &elsewhere,
        ),
    ];
    let progress = Recorder::new();
    let summary = repo
        .restore(&backup.snapshot_id[..8], &units, Some(progress.handle()))
        .unwrap();

    // The whole volume, with its root's mode and time on the destination.
    assert_same_tree(&copy, &elsewhere.join("whole"));
    let (root, restored_root) = (
        fs::metadata(&copy).unwrap(),
        fs::metadata(elsewhere.join("whole")).unwrap(),
    );
    assert_eq!(restored_root.mode() & 0o7777, 0o711);
    assert_eq!(restored_root.mtime(), root.mtime());
    assert_eq!(
        fs::read_link(elsewhere.join("whole/dangling")).unwrap(),
        Path::new("/nonexistent/shadowcopy-target"),
        "symlinks come back as links"
    );
    // One file, at destination/<its name>, with its mode (0o600) and time.
    let single = read_tree(&elsewhere.join("single"));
    assert_eq!(single.len(), 1);
    assert!(
        single.get(Path::new("file-3.bin")) == copy_tree.get(Path::new("dir 1/sub,2/file-3.bin")),
        "the single file differs from the copy's"
    );
    // The filter saw paths relative to the source.
    let mut want = read_tree(&copy);
    want.retain(|p, e| {
        let left_out_file = matches!(e, Entry::File { .. }) && p.ends_with("file-1.bin");
        !(p.starts_with("dir 0") || left_out_file)
    });
    assert_same_entries("filtered", &want, &read_tree(&elsewhere.join("filtered")));
    assert_eq!(
        fs::read(elsewhere.join("documents/bcd.json")).unwrap(),
        docs[0].contents
    );

    let is_file = |e: &Entry| matches!(e, Entry::File { .. });
    let is_link = |e: &Entry| matches!(e, Entry::Symlink(_));
    assert_eq!(
        summary.files,
        count(&copy_tree, is_file) + 1 + count(&want, is_file) + 2,
        "{summary:?}"
    );
    assert_eq!(
        summary.symlinks,
        count(&copy_tree, is_link) + count(&want, is_link)
    );
    let bytes = file_bytes(&copy_tree)
        + file_bytes(&single)
        + file_bytes(&want)
        + docs.iter().map(|d| d.contents.len() as u64).sum::<u64>();
    assert_eq!(summary.bytes, bytes, "{summary:?}");
    assert_eq!(summary.bytes_written, bytes, "nothing was in place yet");
    assert_eq!(summary.replaced, 0);
    assert_eq!((progress.total(), progress.done()), (bytes, bytes));

    // Back to the original place over a damaged live volume: changed, removed and re-moded files
    // come back, symlinks planted where a file and a directory were are replaced (their targets
    // outside are untouched), and a file made after the backup stays.
    let outside = tmp.join("outside");
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("secret.txt"), b"secret").unwrap();
    fs::write(live.join("dir 0/sub,0/file-2.bin"), b"changed").unwrap();
    fs::write(live.join("dir 0/sub,1/file-2.bin"), pseudo_random(5, 3000)).unwrap();
    fs::remove_file(live.join("dir 3/sub,3/file-5.bin")).unwrap();
    set_mode(&live.join("dir 1/sub,2/file-3.bin"), 0o644);
    fs::remove_file(live.join("dir 2/sub,1/file-4.bin")).unwrap();
    symlink(
        outside.join("secret.txt"),
        live.join("dir 2/sub,1/file-4.bin"),
    )
    .unwrap();
    fs::remove_dir_all(live.join("dir 0/sub,4")).unwrap();
    symlink(outside.join("dir"), live.join("dir 0/sub,4")).unwrap();
    fs::write(live.join("made-after-the-backup"), b"keep").unwrap();

    let in_place = repo
        .restore(
            &backup.snapshot_id,
            &[unit(&original, &original, &original)],
            None,
        )
        .unwrap();
    let mut got = read_tree(&live);
    assert_eq!(
        got.remove(Path::new("made-after-the-backup"))
            .map(|e| short_contents(&e)),
        Some(b"keep".to_vec())
    );
    got.retain(|p, _| !p.starts_with(METADATA_DIR));
    assert_same_entries("restored in place", &copy_tree, &got);
    assert_eq!(fs::read(outside.join("secret.txt")).unwrap(), b"secret");
    assert!(is_empty_dir(&outside.join("dir")));
    // The two planted links, and the tree's own two symlinks, which are made afresh.
    assert_eq!(in_place.replaced, 4, "{in_place:?}");
    assert!(
        in_place.bytes_written < MIB,
        "files in place are verified, not rewritten: {in_place:?}"
    );
    disk.close().unwrap();
}

fn short_contents(entry: &Entry) -> Vec<u8> {
    match entry {
        Entry::File { contents, .. } => contents.clone(),
        other => panic!("not a file: {other:?}"),
    }
}

/// What a crafted snapshot holds: a path (for a non-directory, only its parent counts to
/// rustic's archiver), the node as it will be stored, and a file's contents.
type CraftedEntry = (PathBuf, Node, Option<Vec<u8>>);

/// A `ReadSource` that hands rustic whatever nodes it is given: the way to craft a snapshot an
/// attacker holding the password could write.
struct Crafted(Vec<CraftedEntry>);

impl ReadSource for Crafted {
    type Open = io::Cursor<Vec<u8>>;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<io::Cursor<Vec<u8>>>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        self.0
            .iter()
            .map(|(path, node, contents)| {
                Ok(ReadSourceEntry {
                    path: path.clone(),
                    node: node.clone(),
                    open: contents.clone().map(io::Cursor::new),
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

fn crafted_dir(path: &str, name: &str) -> CraftedEntry {
    let meta = Metadata {
        mode: Some((1 << 31) | 0o755),
        ..Metadata::default()
    };
    let node = Node::new_node(OsStr::new(name), NodeType::Dir, meta);
    (PathBuf::from(path), node, None)
}

/// A file entry: at `path` (its directory is what counts to rustic) but named `name`.
fn crafted_file(path: &str, name: &str, contents: &[u8]) -> CraftedEntry {
    let meta = Metadata {
        mode: Some(0o644),
        size: contents.len() as u64,
        ..Metadata::default()
    };
    let node = Node::new_node(OsStr::new(name), NodeType::File, meta);
    (PathBuf::from(path), node, Some(contents.to_vec()))
}

fn crafted_link(path: &str, name: &str, target: &Path) -> CraftedEntry {
    let meta = Metadata {
        mode: Some((1 << 27) | 0o777),
        ..Metadata::default()
    };
    let node = Node::new_node(OsStr::new(name), NodeType::from_link(target), meta);
    (PathBuf::from(path), node, None)
}

/// Archives `entries` as a snapshot of `/t` straight through rustic_core; returns its id.
fn craft(repo: &Path, entries: Vec<CraftedEntry>) -> String {
    let backends = BackendOptions::default()
        .repository(repo.to_str().unwrap())
        .to_backends()
        .unwrap();
    let indexed =
        rustic_core::Repository::new(&RepositoryOptions::default().no_cache(true), &backends)
            .unwrap()
            .open(&Credentials::password(PASSWORD))
            .unwrap()
            .to_indexed_ids()
            .unwrap();
    let opts = BackupOptions::default().parent_opts(ParentOptions::default().force(true));
    let snap = indexed
        .archive(
            &opts,
            &Crafted(entries),
            SnapshotOptions::default().to_snapshot().unwrap(),
            &[PathBuf::from("/t")],
        )
        .unwrap();
    snap.id.to_hex().as_str().to_owned()
}

#[test]
fn crafted_snapshots_are_refused_and_nothing_is_written_outside_the_target() {
    let tmp = TempDir::new("repo-crafted");
    let repo_path = tmp.join("repo");
    let repo = Repository::open_or_init(&repo_path, Password::new(PASSWORD)).unwrap();
    let sentinel = tmp.join("sentinel");
    fs::create_dir(&sentinel).unwrap();

    let escaped_slash = {
        let mut entry = crafted_file("/t/f", "x", b"pwned");
        // restic escapes names Go-style; `\x2f` is a `/` once unescaped.
        entry.1.name = r"..\x2f..\x2fsentinel\x2fpwned".to_owned();
        entry
    };
    let cases: Vec<(&str, Vec<CraftedEntry>)> = vec![
        (
            "`..`",
            vec![crafted_dir("/t", "t"), crafted_file("/t/f", "..", b"pwned")],
        ),
        (
            "`.`",
            vec![crafted_dir("/t", "t"), crafted_file("/t/f", ".", b"pwned")],
        ),
        (
            "a `/`",
            vec![
                crafted_dir("/t", "t"),
                crafted_file("/t/f", "../../sentinel/pwned", b"pwned"),
            ],
        ),
        (
            "an escaped `/`",
            vec![crafted_dir("/t", "t"), escaped_slash],
        ),
        (
            "NUL",
            vec![
                crafted_dir("/t", "t"),
                crafted_file("/t/f", "a\0b", b"pwned"),
            ],
        ),
        (
            "empty",
            vec![crafted_dir("/t", "t"), crafted_file("/t/f", "", b"pwned")],
        ),
        (
            "the same name twice",
            // A symlink `x` to the sentinel and a directory `x` whose file would be written
            // through it.
            vec![
                crafted_dir("/t", "t"),
                crafted_link("/t/x", "x", &sentinel),
                crafted_dir("/t/x", "x"),
                crafted_file("/t/x/f", "pwned", b"pwned"),
            ],
        ),
    ];
    for (what, entries) in cases {
        let id = craft(&repo_path, entries);
        let boundary = tmp.join(&format!("target {what}"));
        for source in ["/t", "/"] {
            let err = repo
                .restore(
                    &id,
                    &[unit(Path::new(source), &boundary.join("dest"), &boundary)],
                    None,
                )
                .expect_err(what);
            match &err {
                RepositoryError::UnsafeTree {
                    snapshot,
                    path,
                    reason,
                } => {
                    assert_eq!(snapshot, &id, "{what}");
                    assert_eq!(path, Path::new("/t"), "{what}");
                    assert!(!reason.is_empty());
                }
                other => panic!("{what}: {other:?}"),
            }
            assert!(err.to_string().contains(&id), "{err}");
        }
        assert!(
            matches!(repo.entries(&id), Err(RepositoryError::UnsafeTree { .. })),
            "{what}: listing refuses it too"
        );
        assert!(
            !boundary.exists(),
            "{what}: nothing was written, not even the target"
        );
        assert!(is_empty_dir(&sentinel), "{what}: wrote outside");
    }

    // A valid tree with a symlink out of the target: restored as a link, never followed, and a
    // later unit whose destination passes through it is refused.
    let id = craft(
        &repo_path,
        vec![
            crafted_dir("/t", "t"),
            crafted_dir("/t/d", "d"),
            crafted_file("/t/d/f", "f", b"data"),
            crafted_link("/t/link", "link", &sentinel),
        ],
    );
    let boundary = tmp.join("target-sneaky");
    let dest = boundary.join("dest");
    let err = repo
        .restore(
            &id,
            &[
                unit(Path::new("/t"), &dest, &boundary),
                unit(Path::new("/t/link"), &boundary.join("leaf"), &boundary),
                unit(Path::new("/t/d"), &dest.join("link/sub"), &boundary),
            ],
            None,
        )
        .unwrap_err();
    match &err {
        RepositoryError::UnsafeDestination { path, reason } => {
            assert_eq!(path, &dest.join("link"));
            assert!(reason.contains("symlink"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read_link(dest.join("link")).unwrap(), sentinel);
    assert_eq!(fs::read_link(boundary.join("leaf/link")).unwrap(), sentinel);
    assert_eq!(fs::read(dest.join("d/f")).unwrap(), b"data");
    assert!(is_empty_dir(&sentinel), "nothing went through the link");
}

#[test]
fn hostile_destinations_are_refused_and_links_in_the_way_are_replaced_not_followed() {
    let tmp = TempDir::new("repo-destinations");
    let src = tmp.join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("a.txt"), b"backed up a").unwrap();
    fs::write(src.join("dir/b.txt"), b"backed up b").unwrap();
    fs::write(src.join("hard.txt"), b"backed up hard").unwrap();
    let repo = Repository::open_or_init(&tmp.join("repo"), Password::new(PASSWORD)).unwrap();
    let tags = tags();
    let volumes = [volume("/data", &src)];
    let id = repo
        .backup(&request(&volumes, &tags, &[]))
        .unwrap()
        .snapshot_id;
    let data = Path::new("/data");

    let outside = tmp.join("outside");
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("target.txt"), b"keep").unwrap();
    fs::write(outside.join("linked.txt"), b"outside data").unwrap();
    let boundary = tmp.join("target");
    fs::create_dir(&boundary).unwrap();

    // A destination reached through a symlink inside the target that points outside.
    symlink(&outside, boundary.join("escape")).unwrap();
    let err = repo
        .restore(
            &id,
            &[unit(data, &boundary.join("escape/x"), &boundary)],
            None,
        )
        .unwrap_err();
    match &err {
        RepositoryError::UnsafeDestination { path, reason } => {
            assert_eq!(path, &boundary.join("escape"));
            assert!(reason.contains("remove the link"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!outside.join("x").exists());
    // Destinations outside the target, with `..`, or relative; sources not in the snapshot.
    let bad = [
        unit(data, &tmp.join("elsewhere"), &boundary),
        unit(data, &boundary.join("../elsewhere"), &boundary),
        unit(data, Path::new("relative"), &boundary),
        unit(Path::new("data"), &boundary.join("x"), &boundary),
        unit(&data.join("nope"), &boundary.join("x"), &boundary),
        unit(&data.join("a.txt/below"), &boundary.join("x"), &boundary),
    ];
    for u in bad {
        let err = repo
            .restore(&id, std::slice::from_ref(&u), None)
            .unwrap_err();
        assert!(
            matches!(
                err,
                RepositoryError::UnsafeDestination { .. }
                    | RepositoryError::InvalidInput { .. }
                    | RepositoryError::NotInSnapshot { .. }
            ),
            "{u:?}: {err:?}"
        );
    }
    assert_eq!(
        fs::read_dir(&boundary).unwrap().count(),
        1,
        "only the planted link is in the target"
    );

    // Existing entries in the way: a symlink at a file's place and at a directory's place, and a
    // file hard-linked to one outside. Each is replaced; what they point to is untouched.
    let dest = boundary.join("d");
    fs::create_dir(&dest).unwrap();
    symlink(outside.join("target.txt"), dest.join("a.txt")).unwrap();
    symlink(outside.join("dir"), dest.join("dir")).unwrap();
    fs::hard_link(outside.join("linked.txt"), dest.join("hard.txt")).unwrap();
    let summary = repo
        .restore(&id, &[unit(data, &dest, &boundary)], None)
        .unwrap();
    assert_eq!(summary.replaced, 3, "{summary:?}");
    assert_same_tree(&src, &dest);
    assert!(fs::symlink_metadata(dest.join("dir")).unwrap().is_dir());
    assert_eq!(fs::read(outside.join("target.txt")).unwrap(), b"keep");
    assert_eq!(
        fs::read(outside.join("linked.txt")).unwrap(),
        b"outside data"
    );
    assert!(is_empty_dir(&outside.join("dir")));

    // A directory where the backup has a file is not deleted.
    let dest2 = boundary.join("d2");
    fs::create_dir_all(dest2.join("a.txt/precious")).unwrap();
    let err = repo
        .restore(&id, &[unit(data, &dest2, &boundary)], None)
        .unwrap_err();
    assert!(
        matches!(err, RepositoryError::DestinationConflict { ref path, .. } if path == &dest2.join("a.txt")),
        "{err:?}"
    );
    assert!(dest2.join("a.txt/precious").is_dir());
}

/// A mirroring unit makes the destination exactly the backed-up directory: files and directories
/// made after the backup are deleted, a symlink that was planted in it is removed without touching
/// what it points to, and a mirror with a filter is refused.
#[test]
fn mirroring_units_delete_what_the_backup_does_not_hold_and_nothing_outside() {
    let tmp = TempDir::new("repo-mirror");
    let src = tmp.join("src");
    fs::create_dir_all(src.join("wal")).unwrap();
    fs::write(src.join("base.dat"), b"backed up").unwrap();
    fs::write(src.join("wal/0001"), b"segment 1").unwrap();
    let repo = Repository::open_or_init(&tmp.join("repo"), Password::new(PASSWORD)).unwrap();
    let tags = tags();
    let volumes = [volume("/db", &src)];
    let id = repo
        .backup(&request(&volumes, &tags, &[]))
        .unwrap()
        .snapshot_id;

    let outside = tmp.join("outside");
    fs::create_dir_all(outside.join("keep")).unwrap();
    fs::write(outside.join("keep/file"), b"outside").unwrap();
    let live = tmp.join("live");
    fs::create_dir_all(live.join("wal")).unwrap();
    fs::create_dir_all(live.join("later/deep")).unwrap();
    fs::write(live.join("base.dat"), b"changed after the backup").unwrap();
    fs::write(live.join("wal/0002"), b"segment written after the backup").unwrap();
    fs::write(live.join("later/deep/x"), b"new").unwrap();
    symlink(outside.join("keep"), live.join("planted")).unwrap();

    let mut mirror = unit(Path::new("/db"), &live, &live);
    mirror.mirror = true;
    repo.restore(&id, &[mirror], None).unwrap();
    assert_same_tree(&src, &live);
    assert_eq!(fs::read(outside.join("keep/file")).unwrap(), b"outside");

    let mut filtered = unit(Path::new("/db"), &live, &live);
    filtered.mirror = true;
    filtered.filter = Some(std::sync::Arc::new(|_: &Path, _| true));
    let err = repo.restore(&id, &[filtered], None).unwrap_err();
    assert!(
        matches!(err, RepositoryError::InvalidInput { .. }),
        "{err:?}"
    );
}

#[test]
fn check_passes_on_a_good_repository_and_reports_a_damaged_pack() {
    let tmp = TempDir::new("repo-check");
    let disk = LoopVolume::btrfs(200 * MIB).expect("btrfs loop volume");
    let live = disk.create_subvolume("live").unwrap();
    make_tree(&live, 7);
    let copy = disk.path("copy");
    btrfs_snapshot(&live, &copy);
    let repo_path = tmp.join("repo");
    let repo = Repository::open_or_init(&repo_path, Password::new(PASSWORD)).unwrap();
    let tags = tags();
    let volumes = [volume("/srv/data", &copy)];
    let id = repo
        .backup(&request(&volumes, &tags, &[]))
        .unwrap()
        .snapshot_id;

    for read_data in [false, true] {
        let report = repo.check(read_data).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.snapshots, 1);
        assert!(report.packs >= 2, "a data and a tree pack: {report:?}");
        assert_eq!(report.read_data, read_data);
    }

    // Damage the largest pack (data) in its middle, as bit rot would.
    let mut packs = Vec::new();
    for sub in fs::read_dir(repo_path.join("data")).unwrap() {
        for pack in fs::read_dir(sub.unwrap().path()).unwrap() {
            let pack = pack.unwrap();
            packs.push((pack.metadata().unwrap().len(), pack.path()));
        }
    }
    packs.sort();
    let (len, pack) = packs.last().unwrap().clone();
    let mut bytes = fs::read(&pack).unwrap();
    let middle = (len / 2) as usize;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5a;
    }
    fs::write(&pack, &bytes).unwrap();

    let report = repo.check(true).unwrap();
    assert!(!report.is_ok(), "{report:?}");
    assert!(!report.problems.is_empty());
    let restic_check = restic_unchecked(&repo_path, &["check", "--read-data"]);
    assert!(
        !restic_check.status.success(),
        "restic agrees it is damaged"
    );

    // A restore that needs the damaged data fails with an error, not a panic.
    let target = tmp.join("target");
    let err = repo
        .restore(&id, &[unit(Path::new("/srv/data"), &target, &target)], None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepositoryError::Aborted { .. } | RepositoryError::Rustic { .. }
        ),
        "{err:?}"
    );
    disk.close().unwrap();
}
