//! Helpers shared by the repository's test binaries: running Debian's `restic`, deterministic
//! trees to back up, btrfs read-only snapshots as shadow copies, and tree comparisons.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shadowcopy_repository::{
    BackupRequest, METADATA_DIR, MetadataFile, ParentChoice, Progress, VolumeSource,
};

pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// Runs `restic -r repo args...` with the password in its environment only.
pub(crate) fn restic_unchecked(repo: &Path, args: &[&str]) -> Output {
    shadowcopy_test_support::restic::restic_unchecked(repo, PASSWORD, args)
}

/// Runs `restic -r repo args...` and asserts that it succeeded.
pub(crate) fn restic(repo: &Path, args: &[&str]) -> Output {
    let out = restic_unchecked(repo, args);
    assert!(
        out.status.success(),
        "restic {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `restic check --read-data` passes.
pub(crate) fn restic_check_read_data(repo: &Path) {
    let check = restic(repo, &["check", "--read-data"]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("no errors were found"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

pub(crate) use shadowcopy_test_support::tree::pseudo_random;

/// A tree of 4 × 5 directories with 10 files each (200 files, about 4 MiB: mostly small files
/// and a few of 512 KiB), an empty directory, a relative and a dangling absolute symlink, names
/// with spaces and commas, and a few modes of its own. `seed` makes trees differ. Returns the
/// number of files and symlinks (rustic counts both).
pub(crate) fn make_tree(root: &Path, seed: u64) -> u64 {
    let mut files = 0;
    for d in 0..4u64 {
        for s in 0..5u64 {
            let dir = root.join(format!("dir {d}")).join(format!("sub,{s}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..10u64 {
                let n = seed * 1000 + d * 100 + s * 10 + f;
                let len = if f == 0 && s < 2 {
                    512 * 1024
                } else {
                    1000 + (n % 1000) as usize * 37
                };
                fs::write(dir.join(format!("file-{f}.bin")), pseudo_random(n, len)).unwrap();
                files += 1;
            }
        }
    }
    fs::create_dir_all(root.join("empty")).unwrap();
    symlink("dir 0/sub,0/file-1.bin", root.join("link-to-file")).unwrap();
    symlink("/nonexistent/shadowcopy-target", root.join("dangling")).unwrap();
    // '+' sorts before '.', so documents and volumes interleave with the tree's own entries.
    fs::write(root.join("+sorted-first"), b"first").unwrap();
    set_mode(&root.join("dir 1/sub,2/file-3.bin"), 0o600);
    set_mode(&root.join("dir 2"), 0o750);
    set_mode(&root.join("dir 3/sub,4/file-9.bin"), 0o4755);
    files + 3
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// What a tree entry is, with what makes it equal after a restore.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        contents: Vec<u8>,
    },
    Symlink(PathBuf),
}

/// Every entry under `root` by relative path: file contents, modes and mtimes, symlink targets,
/// directory modes and mtimes.
pub(crate) fn read_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Symlink(fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                out.insert(
                    rel,
                    Entry::Dir {
                        mode: meta.mode() & 0o7777,
                        mtime: (meta.mtime(), meta.mtime_nsec()),
                    },
                );
                walk(root, &path, out);
            } else {
                out.insert(
                    rel,
                    Entry::File {
                        mode: meta.mode() & 0o7777,
                        mtime: (meta.mtime(), meta.mtime_nsec()),
                        contents: fs::read(&path).unwrap(),
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `actual` holds the same entries as `expected`, leaving out the documents directory.
pub(crate) fn assert_same_tree(expected: &Path, actual: &Path) {
    let mut want = read_tree(expected);
    let mut got = read_tree(actual);
    want.retain(|p, _| !p.starts_with(METADATA_DIR));
    got.retain(|p, _| !p.starts_with(METADATA_DIR));
    assert_same_entries(
        &format!("{} vs {}", expected.display(), actual.display()),
        &want,
        &got,
    );
}

/// The two trees are equal; on failure, says which paths differ and how (not the contents).
pub(crate) fn assert_same_entries(
    what: &str,
    want: &BTreeMap<PathBuf, Entry>,
    got: &BTreeMap<PathBuf, Entry>,
) {
    let missing: Vec<_> = want.keys().filter(|p| !got.contains_key(*p)).collect();
    let extra: Vec<_> = got.keys().filter(|p| !want.contains_key(*p)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, extra {extra:?}"
    );
    for (path, entry) in want {
        assert!(
            got.get(path) == Some(entry),
            "{what}: {} differs: want {}, got {:?}",
            path.display(),
            short(entry),
            got.get(path).map(short)
        );
    }
}

fn short(entry: &Entry) -> String {
    match entry {
        Entry::File {
            mode,
            mtime,
            contents,
        } => format!(
            "file mode {mode:o} mtime {mtime:?} {} bytes",
            contents.len()
        ),
        other => format!("{other:?}"),
    }
}

pub(crate) fn btrfs_snapshot(from: &Path, to: &Path) {
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

pub(crate) fn tags() -> Vec<String> {
    vec![
        "shadowcopy".to_owned(),
        "set=6f1c2a9e-0000-4000-8000-000000000001".to_owned(),
        "type=full".to_owned(),
    ]
}

pub(crate) fn documents() -> Vec<MetadataFile> {
    vec![
        MetadataFile {
            name: "bcd.json".to_owned(),
            contents: br#"{"schema_version":1,"kind":"bcd"}"#.to_vec(),
        },
        MetadataFile {
            name: "wmd-postgres.json".to_owned(),
            contents: b"{\"wmd\":1}".to_vec(),
        },
    ]
}

pub(crate) fn volume(original: &str, read_from: &Path) -> VolumeSource {
    VolumeSource {
        original: PathBuf::from(original),
        read_from: read_from.to_path_buf(),
    }
}

/// A request with the defaults: latest parent, no filter, no progress.
pub(crate) fn request<'a>(
    volumes: &'a [VolumeSource],
    tags: &'a [String],
    metadata: &'a [MetadataFile],
) -> BackupRequest<'a> {
    BackupRequest {
        volumes,
        tags,
        metadata,
        filter: None,
        parent: ParentChoice::Latest,
        ignore_ctime: false,
        progress: None,
    }
}

/// A [`Progress`] that remembers what it was told.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) total: AtomicU64,
    pub(crate) done: AtomicU64,
}

impl Progress for Recorder {
    fn set_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::SeqCst);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::SeqCst);
    }
}

impl Recorder {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub(crate) fn handle(self: &Arc<Self>) -> Arc<dyn Progress> {
        self.clone()
    }
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }
    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }
}

/// Files directly or indirectly under `dir` (an empty directory: none).
pub(crate) fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().next().is_none()
}
