//! Comparing directory trees after a backup and restore: every entry by relative path, with file
//! contents, permission bits, symbolic link targets and directories, so that a test can say
//! "byte-identical" and mean it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A directory, with its permission bits.
    Dir(u32),
    /// A regular file: permission bits and contents.
    File(u32, Vec<u8>),
    /// A symbolic link and its target.
    Symlink(PathBuf),
}

/// Every entry under `root` by path relative to it, skipping entries whose first component is in
/// `skip` (for example a provider's `.shadowcopy` directory on the live volume).
pub fn read_tree(root: &Path, skip: &[&str]) -> BTreeMap<PathBuf, TreeEntry> {
    fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<PathBuf, TreeEntry>) {
        let entries = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read the directory {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let first = relative.components().next().unwrap().as_os_str();
            if skip.iter().any(|s| first == *s) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                out.insert(
                    relative,
                    TreeEntry::Symlink(std::fs::read_link(&path).unwrap()),
                );
            } else if meta.is_dir() {
                out.insert(relative, TreeEntry::Dir(mode));
                walk(root, &path, skip, out);
            } else {
                out.insert(
                    relative,
                    TreeEntry::File(mode, std::fs::read(&path).unwrap()),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

/// Panics with the first difference when the trees under `expected` and `actual` differ, skipping
/// `skip` on both sides.
pub fn assert_same_tree(expected: &Path, actual: &Path, skip: &[&str]) {
    let want = read_tree(expected, skip);
    let got = read_tree(actual, skip);
    for (path, entry) in &want {
        match got.get(path) {
            None => panic!(
                "{} is missing under {} (from {})",
                path.display(),
                actual.display(),
                expected.display()
            ),
            Some(found) if found != entry => panic!(
                "{} differs under {}: {} vs {}",
                path.display(),
                actual.display(),
                describe(entry),
                describe(found)
            ),
            Some(_) => {}
        }
    }
    if let Some(extra) = got.keys().find(|p| !want.contains_key(*p)) {
        panic!(
            "{} is under {} but not under {}",
            extra.display(),
            actual.display(),
            expected.display()
        );
    }
}

fn describe(entry: &TreeEntry) -> String {
    match entry {
        TreeEntry::Dir(mode) => format!("directory {mode:o}"),
        TreeEntry::File(mode, bytes) => format!("file {mode:o}, {} bytes", bytes.len()),
        TreeEntry::Symlink(target) => format!("symlink to {}", target.display()),
    }
}

/// Deterministic bytes, so that files differ from each other and do not deduplicate away.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
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
