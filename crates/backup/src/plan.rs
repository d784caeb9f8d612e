//! The backup plan: which volumes go into the shadow copy set (BK-DISC-6, REPARSE-1), and which
//! entries of those volumes go into the repository snapshot (BK-COPY-2, BK-COPY-3, BK-COPY-6,
//! INC-2).
//!
//! Every entry is judged by its original path, in this order:
//! 1. a writer's exclude list wins over everything (BK-COPY-3), and the providers' own copy areas
//!    (`.shadowcopy/`, `.shadowcopy-files/`, `.shadowcopy-*.img`) are never backed up;
//! 2. a file of a file set that the backup type copies, of an included component, is in; so is a
//!    file named by a differenced-file entry of an included component (DF-2);
//! 3. a file of a file set that is skipped in this backup type (INC-2, a LOG backup's data files) or
//!    of a component that was not selected is out: the data belongs to a writer and was not asked
//!    for;
//! 4. a file no writer owns is in (BK-COPY-6), except in a LOG backup, which holds log files only
//!    (BT-1).
//!
//! Directories are kept unless an exclude removes them entirely, so that the tree of what is kept
//! restores with its directories' owners and modes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use shadowcopy_metadata::enums::BackupType;
use shadowcopy_metadata::selection::{BackupSelection, CopyMode};
use shadowcopy_metadata::wmd::{FileDescriptor, FileSet};
use shadowcopy_metadata::{BackupComponents, WriterMetadata, codes};
use shadowcopy_repository::EntryKind;

use crate::error::BackupError;
use crate::volumes::MountTable;

/// Directories at a volume's root where providers keep their copies.
const PROVIDER_AREAS: &[&str] = &[
    shadowcopy_providers::btrfs::DEFAULT_SNAPSHOT_DIR,
    shadowcopy_providers::reflink::DEFAULT_COPY_AREA,
];

/// What to copy from which volumes.
#[derive(Debug, Clone)]
pub struct BackupPlan {
    /// The volumes of the shadow copy set, by mount point, sorted.
    pub volumes: Vec<PathBuf>,
    excludes: Vec<FileSet>,
    copied: Vec<FileSet>,
    not_copied: Vec<FileSet>,
    unowned: bool,
    /// Partial files: only their ranges are backed up, with the documents (PF-1).
    ranges_only: BTreeSet<PathBuf>,
    /// Files the backup must hold whatever the sets say: ranges files (PF-3).
    always: BTreeSet<PathBuf>,
}

impl BackupPlan {
    /// Plans a backup of `selection` (resolved from `writers`, every writer that answered
    /// Identify) plus the whole of `extra_volumes` (mount points given by the user).
    ///
    /// In component mode the set holds every volume with a file set the backup copies, and every
    /// data volume mounted below a recursive one (REPARSE-1). A path whose volume cannot be found
    /// in the mount table is `VSS_E_OBJECT_NOT_FOUND`.
    pub fn new(
        selection: &BackupSelection,
        writers: &[WriterMetadata],
        extra_volumes: &[PathBuf],
    ) -> Result<Self, BackupError> {
        let mounts = MountTable::read();
        let mut volumes: BTreeSet<PathBuf> = extra_volumes.iter().cloned().collect();
        let mut copied = Vec::new();
        let mut not_copied = Vec::new();
        for writer in &selection.writers {
            for component in &writer.components {
                for plan in &component.files {
                    let set = plan.file_set();
                    if plan.copy == CopyMode::Skip {
                        not_copied.push(set);
                        continue;
                    }
                    let dir = Path::new(&plan.path);
                    let volume = mounts.volume_of(dir).ok_or_else(|| {
                        BackupError::invalid(
                            &codes::VSS_E_OBJECT_NOT_FOUND,
                            format!(
                                "component `{}` of writer `{}` has files in {}, which is on no \
                                 mounted volume; mount it or fix the writer's metadata",
                                component.full_path(),
                                writer.writer_name,
                                dir.display()
                            ),
                        )
                    })?;
                    volumes.insert(volume.mount_point.clone());
                    if plan.recursive {
                        volumes.extend(mounts.mounted_below(dir));
                    }
                    copied.push(set);
                }
            }
        }
        // Components that were not selected: their files are someone's data that was not asked for.
        let included: BTreeSet<(String, String)> = selection
            .writers
            .iter()
            .flat_map(|w| {
                w.components
                    .iter()
                    .map(move |c| (w.instance_id.to_string(), c.full_path()))
            })
            .collect();
        for wmd in writers {
            for component in &wmd.components {
                let key = (wmd.identity.instance_id.to_string(), component.full_path());
                if included.contains(&key) {
                    continue;
                }
                not_copied.extend(component.all_files().map(FileDescriptor::file_set));
            }
        }
        Ok(BackupPlan {
            volumes: volumes.into_iter().collect(),
            excludes: writers.iter().flat_map(|w| w.excludes.clone()).collect(),
            copied,
            not_copied,
            unowned: selection.backup_type != BackupType::Log,
            ranges_only: BTreeSet::new(),
            always: BTreeSet::new(),
        })
    }

    /// Adds what the writers put into the BCD during PrepareForBackup and PostSnapshot: files named
    /// by differenced-file entries of included components are copied (DF-2).
    pub fn add_writer_files(&mut self, bcd: &BackupComponents) {
        for writer in bcd.writers() {
            for record in writer.components() {
                self.copied
                    .extend(record.differenced_files().iter().map(|d| d.file_set()));
            }
        }
    }

    /// Leaves the partial file `path` out of the tree: its ranges travel with the documents.
    pub(crate) fn ranges_only(&mut self, path: PathBuf) {
        self.ranges_only.insert(path);
    }

    /// Keeps `path` in the backup whatever the file sets say (a ranges file, PF-3).
    pub(crate) fn always(&mut self, path: PathBuf) {
        self.always.insert(path);
    }

    /// The plan with these file sets no longer copied (their writer failed; BK-SNAP-7).
    pub fn without(mut self, sets: &[FileSet]) -> Self {
        self.copied.retain(|set| !sets.contains(set));
        self.not_copied.extend(sets.iter().cloned());
        self
    }

    /// Whether the entry at `original` (its path on the live volume) goes into the backup.
    pub fn includes(&self, original: &Path, kind: EntryKind) -> bool {
        let Some(text) = original.to_str() else {
            // A name that is not UTF-8 matches no file set: only unowned data can hold it.
            return kind == EntryKind::Dir || self.unowned;
        };
        if self.is_provider_area(original) {
            return false;
        }
        if kind == EntryKind::Dir {
            return !self
                .excludes
                .iter()
                .any(|set| excludes_directory(set, text));
        }
        if self.ranges_only.contains(original) {
            return false;
        }
        if self.always.contains(original) {
            return true;
        }
        if self.excludes.iter().any(|set| set.contains(text)) {
            return false;
        }
        if self.copied.iter().any(|set| set.contains(text)) {
            return true;
        }
        if self.not_copied.iter().any(|set| set.contains(text)) {
            return false;
        }
        self.unowned
    }

    fn is_provider_area(&self, path: &Path) -> bool {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        if name.starts_with(".shadowcopy-") && name.ends_with(".img") {
            return true;
        }
        PROVIDER_AREAS.contains(&name)
            && path
                .parent()
                .is_some_and(|parent| self.volumes.iter().any(|v| v == parent))
    }
}

/// Whether a recursive exclude of every name removes the directory `dir` and all below it.
fn excludes_directory(set: &FileSet, dir: &str) -> bool {
    set.recursive
        && matches!(set.filespec.as_str(), "*" | "*.*")
        && (shadowcopy_metadata::fileset::same_directory(&set.path, dir)
            || dir.starts_with(&format!("{}/", set.path.trim_end_matches('/'))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(path: &str, filespec: &str, recursive: bool) -> FileSet {
        FileSet {
            path: path.into(),
            filespec: filespec.into(),
            recursive,
        }
    }

    fn sample_plan(unowned: bool) -> BackupPlan {
        BackupPlan {
            volumes: vec![PathBuf::from("/srv")],
            excludes: vec![set("/srv/db", "*.tmp", true), set("/srv/cache", "*", true)],
            copied: vec![set("/srv/db", "*", true)],
            not_copied: vec![set("/srv/other", "*", true), set("/srv/db/log", "*", true)],
            unowned,
            ranges_only: [PathBuf::from("/srv/db/big.dat")].into(),
            always: [PathBuf::from("/srv/other/ranges")].into(),
        }
    }

    #[test]
    fn excludes_win_then_copied_sets_then_unselected_then_unowned() {
        let plan = sample_plan(true);
        let file = |p: &str| plan.includes(Path::new(p), EntryKind::File);
        assert!(file("/srv/db/base/1"), "a copied file set");
        assert!(!file("/srv/db/x.tmp"), "excludes win (BK-COPY-3)");
        assert!(
            file("/srv/db/log/0001"),
            "copied by one included set although another lists it"
        );
        assert!(!file("/srv/other/a"), "a component that was not selected");
        assert!(
            !file("/srv/db/big.dat"),
            "a partial file's ranges go with the documents"
        );
        assert!(
            file("/srv/other/ranges"),
            "a ranges file is always backed up (PF-3)"
        );
        assert!(file("/srv/loose.txt"), "unowned data (BK-COPY-6)");
        assert!(!plan.includes(Path::new("/srv/cache"), EntryKind::Dir));
        assert!(!plan.includes(Path::new("/srv/cache/deep"), EntryKind::Dir));
        assert!(plan.includes(Path::new("/srv/db"), EntryKind::Dir));
        assert!(!plan.includes(Path::new("/srv/.shadowcopy"), EntryKind::Dir));
        assert!(!plan.includes(Path::new("/srv/.shadowcopy-files"), EntryKind::Dir));
        assert!(
            plan.includes(Path::new("/srv/sub/.shadowcopy"), EntryKind::Dir),
            "only at a volume's root is it a provider's area"
        );
        assert!(!file("/srv/images/.shadowcopy-1234.img"));
        assert!(!sample_plan(false).includes(Path::new("/srv/loose.txt"), EntryKind::File));
    }
}
