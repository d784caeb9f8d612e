//! Which volume holds a path, and which volumes are mounted below it (BK-DISC-6, REPARSE-1), from
//! the mount table.
//!
//! A volume is named by its mount point (ROLE-16). A backup in component mode must add every volume
//! that holds files of its components, including volumes mounted below a recursive file set's
//! directory; pseudo file systems (`proc`, `sysfs`, `tmpfs`, ...) hold nothing to back up and are
//! never added (EXCL-5).

use std::path::{Path, PathBuf};

use shadowcopy_providers::expose::{MountEntry, mounts};

/// File system types that hold no data worth a backup and cannot be shadow-copied (EXCL-5).
const PSEUDO_FILE_SYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "securityfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Whether `fs_type` is a pseudo file system.
pub(crate) fn is_pseudo(fs_type: &str) -> bool {
    PSEUDO_FILE_SYSTEMS.contains(&fs_type)
}

/// The mount table, read once for one plan.
#[derive(Debug, Clone)]
pub(crate) struct MountTable {
    mounts: Vec<MountEntry>,
}

impl MountTable {
    /// This process's mount table.
    pub(crate) fn read() -> Self {
        MountTable { mounts: mounts() }
    }

    /// The mount point of the volume that holds `path`: the longest mount point that is `path` or
    /// one of its ancestors (the later mount wins when two are stacked on one point).
    pub(crate) fn volume_of(&self, path: &Path) -> Option<&MountEntry> {
        self.mounts
            .iter()
            .rev()
            .filter(|m| path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.components().count())
    }

    /// The data volumes mounted strictly below `dir` (REPARSE-1), each once.
    pub(crate) fn mounted_below(&self, dir: &Path) -> Vec<PathBuf> {
        let mut below: Vec<PathBuf> = self
            .mounts
            .iter()
            .filter(|m| m.mount_point != dir && m.mount_point.starts_with(dir))
            .filter(|m| !is_pseudo(&m.fs_type))
            .map(|m| m.mount_point.clone())
            .collect();
        below.sort();
        below.dedup();
        below
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> MountTable {
        MountTable {
            mounts: entries
                .iter()
                .map(|(point, fs)| MountEntry {
                    mount_point: PathBuf::from(point),
                    fs_type: (*fs).to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_longest_mount_point_holds_a_path() {
        let mounts = table(&[
            ("/", "ext4"),
            ("/srv", "btrfs"),
            ("/srv/db", "xfs"),
            ("/proc", "proc"),
        ]);
        let volume = |p: &str| {
            mounts
                .volume_of(Path::new(p))
                .map(|m| m.mount_point.clone())
        };
        assert_eq!(volume("/srv/db/base/1"), Some(PathBuf::from("/srv/db")));
        assert_eq!(volume("/srv/dbx/1"), Some(PathBuf::from("/srv")));
        assert_eq!(volume("/etc/passwd"), Some(PathBuf::from("/")));
        assert_eq!(
            mounts.mounted_below(Path::new("/")),
            vec![PathBuf::from("/srv"), PathBuf::from("/srv/db")],
            "pseudo file systems are never volumes of a backup"
        );
        assert!(mounts.mounted_below(Path::new("/srv/db")).is_empty());
    }
}
