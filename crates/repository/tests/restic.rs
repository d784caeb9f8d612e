//! The repository against the real `restic` (Debian's 0.14): what shadowcopy writes, restic lists,
//! checks and restores byte for byte, and a second shadow copy of
//! the same volume backed up under the same recorded path finds its parent.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shadowcopy_repository::{METADATA_DIR, MetadataFile, Password, Repository, RepositoryError};
use shadowcopy_test_support::{LoopVolume, MIB, TempDir};

const PASSWORD: &str = "correct horse battery staple";
const AS_PATH: &str = "/srv/data";

/// Runs `restic -r repo args...` with the password in its environment only.
fn restic(repo: &Path, args: &[&str]) -> Output {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env_remove("RESTIC_PASSWORD_FILE")
        .env("RESTIC_CACHE_DIR", repo.with_extension("restic-cache"))
        .output()
        .expect("restic is installed (scripts/install-deps.sh --test)");
    assert!(
        out.status.success(),
        "restic {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Deterministic bytes, so that files differ from each other and do not deduplicate away.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A tree of 4 × 5 directories with 10 files each (200 files, about 4 MiB: mostly small files
/// and a few of 512 KiB), an empty directory, a relative and a dangling absolute symlink, and
/// names with spaces and commas. Returns the number of files and symlinks (rustic counts both).
fn make_tree(root: &Path) -> u64 {
    let mut files = 0;
    for d in 0..4 {
        for s in 0..5 {
            let dir = root.join(format!("dir {d}")).join(format!("sub,{s}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..10u64 {
                let seed = (d * 100 + s * 10) as u64 + f;
                let len = if f == 0 && s < 2 {
                    512 * 1024
                } else {
                    1000 + seed as usize * 37
                };
                fs::write(dir.join(format!("file-{f}.bin")), pseudo_random(seed, len)).unwrap();
                files += 1;
            }
        }
    }
    fs::create_dir_all(root.join("empty")).unwrap();
    symlink("dir 0/sub,0/file-1.bin", root.join("link-to-file")).unwrap();
    symlink("/nonexistent/shadowcopy-target", root.join("dangling")).unwrap();
    // '+' sorts before '.', so the documents are merged between the source's own entries.
    fs::write(root.join("+sorted-before-documents"), b"first").unwrap();
    files + 3
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

/// Every entry under `root` by relative path: file contents, symlink targets, directories.
fn snapshot_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Symlink(fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(root, &path, out);
            } else {
                out.insert(rel, Entry::File(fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn assert_same_tree(expected: &Path, actual: &Path) {
    let want = snapshot_tree(expected);
    let mut want = want;
    let mut got = snapshot_tree(actual);
    // The documents stored with the backup are checked separately; they replace the source's own.
    want.retain(|p, _| !p.starts_with(METADATA_DIR));
    got.retain(|p, _| !p.starts_with(METADATA_DIR));
    assert_eq!(
        want.len(),
        got.len(),
        "entry count of {} vs {}",
        expected.display(),
        actual.display()
    );
    for (path, entry) in &want {
        assert!(
            got.get(path) == Some(entry),
            "{} differs after restore",
            path.display()
        );
    }
}

fn btrfs_snapshot(from: &Path, to: &Path) {
    let out = Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "btrfs snapshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tags() -> Vec<String> {
    vec![
        "shadowcopy".to_owned(),
        "set=6f1c2a9e-0000-4000-8000-000000000001".to_owned(),
        "type=full".to_owned(),
    ]
}

#[test]
fn restic_lists_checks_and_restores_our_backups_and_the_second_finds_its_parent() {
    let tmp = TempDir::new("repo-restic");
    // Real shadow copies: read-only btrfs snapshots of a live subvolume, as the btrfs provider
    // makes them, so that the second copy is at another path but keeps inode numbers.
    let volume = LoopVolume::btrfs(256 * MIB).expect("btrfs loop volume");
    let live = volume.create_subvolume("data").unwrap();
    let file_count = make_tree(&live);
    // A volume that a whole backup was once restored to has a stale documents directory: it is
    // replaced by this backup's documents, not mixed with them.
    fs::create_dir_all(live.join(METADATA_DIR)).unwrap();
    fs::write(live.join(METADATA_DIR).join("stale.json"), b"{}").unwrap();
    let copy1 = volume.path("copy1");
    btrfs_snapshot(&live, &copy1);

    let repo_path = tmp.join("repo");
    let repo = Repository::open_or_init(&repo_path, Password::new(PASSWORD)).unwrap();
    let bcd = br#"{"schema_version":1,"kind":"bcd"}"#.to_vec();
    let metadata = vec![
        MetadataFile {
            name: "bcd.json".to_owned(),
            contents: bcd.clone(),
        },
        MetadataFile {
            name: "wmd-postgres.json".to_owned(),
            contents: b"{\"wmd\":1}".to_vec(),
        },
    ];
    let first = repo
        .backup_with_metadata(&copy1, Path::new(AS_PATH), &tags(), &metadata)
        .unwrap();
    assert_eq!(first.files_new, file_count + 2, "{first:?}");
    assert_eq!(first.files_unmodified, 0, "{first:?}");
    assert_eq!(first.parent_id, None);
    assert!(first.bytes_added > 3 * MIB, "{first:?}");

    let ours = repo.snapshots().unwrap();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].id, first.snapshot_id);
    assert_eq!(ours[0].paths, vec![AS_PATH.to_owned()]);
    for tag in tags() {
        assert!(
            ours[0].tags.contains(&tag),
            "{tag} missing from {:?}",
            ours[0].tags
        );
    }
    assert_eq!(
        repo.metadata_file(&first.snapshot_id, "bcd.json").unwrap(),
        Some(bcd.clone())
    );
    assert_eq!(
        repo.metadata_file(&first.snapshot_id, "nope.json").unwrap(),
        None
    );

    // restic sees the same snapshot, path and tags.
    let listed: serde_json::Value =
        serde_json::from_slice(&restic(&repo_path, &["snapshots", "--json"]).stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], first.snapshot_id.as_str());
    assert_eq!(listed[0]["paths"], serde_json::json!([AS_PATH]));
    for tag in tags() {
        assert!(
            listed[0]["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == tag.as_str()),
            "restic does not list tag {tag}: {listed:?}"
        );
    }
    let check = restic(&repo_path, &["check", "--read-data"]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("no errors were found"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
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
    let restored1 = target1.join(AS_PATH.trim_start_matches('/'));
    assert_same_tree(&copy1, &restored1);
    assert_eq!(
        fs::read(restored1.join(METADATA_DIR).join("bcd.json")).unwrap(),
        bcd
    );
    let mut documents: Vec<_> = fs::read_dir(restored1.join(METADATA_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    documents.sort();
    assert_eq!(documents, ["bcd.json", "wmd-postgres.json"]);

    // Change the live volume a little, cut a second copy at another path, and back it up under
    // the same recorded path: the first snapshot is found as parent and the rest is not read.
    for (d, s, f) in [(0, 0, 3), (1, 2, 4), (2, 3, 5), (3, 4, 6), (0, 1, 0)] {
        let path = live.join(format!("dir {d}/sub,{s}/file-{f}.bin"));
        fs::write(&path, pseudo_random(9000 + f, 4096)).unwrap();
    }
    fs::write(live.join("dir 3/new-file.bin"), pseudo_random(7777, 20_000)).unwrap();
    fs::remove_file(live.join("dir 2/sub,0/file-9.bin")).unwrap();
    let copy2 = volume.path("copy2");
    btrfs_snapshot(&live, &copy2);
    let second = repo
        .backup_with_metadata(&copy2, Path::new(AS_PATH), &tags(), &metadata)
        .unwrap();
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

    let target2 = tmp.join("restore2");
    restic(
        &repo_path,
        &["restore", "latest", "--target", target2.to_str().unwrap()],
    );
    assert_same_tree(&copy2, &target2.join(AS_PATH.trim_start_matches('/')));
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    restic(&repo_path, &["check"]);
    volume.close().unwrap();
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
fn bad_tags_metadata_names_and_recorded_paths_are_refused_before_writing() {
    let tmp = TempDir::new("repo-bad-input");
    let source = tmp.join("src");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("a"), b"a").unwrap();
    let repo = Repository::open_or_init(&tmp.join("repo"), Password::new(PASSWORD)).unwrap();
    let as_path = Path::new(AS_PATH);
    let doc = |name: &str| {
        vec![MetadataFile {
            name: name.to_owned(),
            contents: vec![],
        }]
    };
    let cases: Vec<(&str, Result<_, _>)> = vec![
        (
            "comma tag",
            repo.backup(&source, as_path, &["a,b".to_owned()]),
        ),
        ("empty tag", repo.backup(&source, as_path, &[String::new()])),
        (
            "relative as_path",
            repo.backup(&source, Path::new("srv/data"), &[]),
        ),
        (
            "nested name",
            repo.backup_with_metadata(&source, as_path, &[], &doc("x/bcd.json")),
        ),
        (
            "dot-dot name",
            repo.backup_with_metadata(&source, as_path, &[], &doc("..")),
        ),
        (
            "missing source",
            repo.backup(&tmp.join("absent"), as_path, &[]),
        ),
    ];
    for (what, result) in cases {
        let err = result.expect_err(what);
        assert!(
            matches!(
                err,
                RepositoryError::InvalidInput { .. } | RepositoryError::Io { .. }
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
