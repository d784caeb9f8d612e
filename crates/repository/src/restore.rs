//! Restores that stay inside their targets (the spec's rule: a restore never writes outside its
//! targets; `..` segments, absolute paths and symlinks that lead out of a target are refused).
//!
//! The writing is rustic's (`prepare_restore` and `restore`, so a restore is as fast as restic's),
//! fed with a node stream of our own: validated ([`crate::tree`]), filtered, and re-rooted so that
//! every path is relative to the unit's destination and made of plain names only. What rustic's
//! `LocalDestination` does not do is guard the paths it writes to: it opens files with
//! `open(O_CREAT)` and creates directories with `create_dir_all`, both of which follow symlinks.
//! So, for each unit, right before rustic writes it:
//!
//! 1. every existing component from the boundary down to the destination must be a real
//!    directory, not a symlink (missing ones are created one by one);
//! 2. every position the unit will write is looked at, in stream order, so that a directory's
//!    own position is dealt with before anything inside it: an existing symlink there is removed
//!    (it is inside the target and the restore replaces it), as is any other non-directory that
//!    is in the way of a node of another kind, a regular file that has other hard links (writing
//!    into it would change a file that may lie outside), and whatever occupies the name of a
//!    restored hard link; a directory in the way of a non-directory is refused rather than deleted.
//!
//! Positions below a directory of the stream are checked only after that directory's position
//! is, so no check ever resolves through a symlink. Symlinks from the backup are created by
//! rustic only after all file contents are written, and since names in a directory are unique a
//! symlink node has nothing below it in the stream; a later unit whose destination passes through
//! a symlink an earlier unit restored is refused by step 1, which is why it runs per unit.
//!
//! Not defended against: another process changing the target while the restore runs (swapping a
//! checked directory for a symlink). That needs `openat2(RESOLVE_BENEATH)` for every write, which
//! rustic's `LocalDestination` does not offer.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustic_core::repofile::{Node, NodeType};
use rustic_core::{
    ErrorKind, IndexedFullStatus, LocalDestination, RestoreOptions, RusticError, RusticResult,
};

use crate::progress::Bars;
use crate::tree::{Reader, Walk, kind_of};
use crate::{EntryFilter, EntryKind, RepositoryError, rustic_error};

/// One part of a restore: the subtree `source` of the snapshot, restored so that its contents land
/// in `destination`.
///
/// A directory source's children become the destination's children, and the destination takes
/// the source directory's own mode, owner and times. A source that is not a directory (a single
/// file, a symlink) lands at `destination/<its name>`. `/` is the snapshot's whole tree.
#[derive(Clone)]
pub struct RestoreUnit {
    /// The absolute path of the subtree in the snapshot (an original path, for example
    /// `/srv/db/main`, or `/.shadowcopy-backup`).
    pub source: PathBuf,
    /// Where its contents go: absolute, without `..`, inside `boundary`; created if missing.
    pub destination: PathBuf,
    /// The restore target that must contain everything written. Nothing between it and any path
    /// written may be a symlink; the boundary itself is the caller's choice and may be one.
    pub boundary: PathBuf,
    /// Decides per entry, by its path relative to `source` (for a source that is not a directory:
    /// its name), whether it is restored; `false` on a directory leaves out its whole subtree.
    pub filter: Option<EntryFilter>,
    /// Make the destination exactly the source: entries below the destination that the source
    /// does not hold are deleted (rustic's `delete`). For restoring a component's whole
    /// directory as it was backed up, where a file left from after the backup (a newer database
    /// log segment) would be read as if it belonged to it. Refused together with a filter, which
    /// would make everything it leaves out a deletion.
    pub mirror: bool,
}

impl std::fmt::Debug for RestoreUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreUnit")
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("boundary", &self.boundary)
            .field("filter", &self.filter.is_some())
            .field("mirror", &self.mirror)
            .finish()
    }
}

/// What a restore did, over all its units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreSummary {
    /// Regular files restored (written, or found identical and left as they were).
    pub files: u64,
    /// Directories restored, counting a directory source's own (applied to its destination).
    pub dirs: u64,
    /// Symlinks restored (as links, never followed).
    pub symlinks: u64,
    /// Device nodes, FIFOs and sockets restored.
    pub others: u64,
    /// Total size of the restored files.
    pub bytes: u64,
    /// Bytes that had to be written; the rest was already in place, verified chunk by chunk.
    pub bytes_written: u64,
    /// Existing entries removed to make room for a restored one: every symlink at a restored
    /// entry's place (a restored symlink is made afresh), other non-directories where the backup
    /// has something of another kind, and files with other hard links.
    pub replaced: u64,
}

/// Lexically clean: absolute, no `..`, no `.` (the latter are dropped by `components()` anyway,
/// except a leading one, which an absolute path cannot have).
fn clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

pub(crate) struct Restorer<'a> {
    pub(crate) repo: &'a rustic_core::Repository<IndexedFullStatus>,
    pub(crate) repo_path: &'a Path,
    pub(crate) snapshot: &'a str,
    pub(crate) root: rustic_core::TreeId,
    pub(crate) bars: Bars,
}

/// A unit checked before anything is written.
struct Planned<'u> {
    unit: &'u RestoreUnit,
    destination: String,
    counts: RestoreSummary,
}

impl Restorer<'_> {
    fn reader(&self) -> Reader<'_, IndexedFullStatus> {
        Reader {
            repo: self.repo,
            repo_path: self.repo_path,
            snapshot: self.snapshot,
        }
    }

    fn invalid(&self, message: String) -> RepositoryError {
        RepositoryError::InvalidInput {
            repo: self.repo_path.to_path_buf(),
            message,
        }
    }

    /// A fresh walk of the unit's source.
    fn walk(&self, unit: &RestoreUnit) -> Result<Walk<'_, IndexedFullStatus>, RepositoryError> {
        let reader = self.reader();
        let start = crate::tree::locate(&reader, self.root, &unit.source)?.ok_or_else(|| {
            RepositoryError::NotInSnapshot {
                repo: self.repo_path.to_path_buf(),
                snapshot: self.snapshot.to_owned(),
                path: unit.source.clone(),
            }
        })?;
        Walk::new(reader, unit.source.clone(), start, unit.filter.clone())
    }

    /// Checks a unit's paths and its whole subtree, writing nothing.
    fn plan<'u>(&self, unit: &'u RestoreUnit) -> Result<Planned<'u>, RepositoryError> {
        for (what, path) in [
            ("source", &unit.source),
            ("destination", &unit.destination),
            ("boundary", &unit.boundary),
        ] {
            if !clean_absolute(path) {
                return Err(self.invalid(format!(
                    "restore {what} {} is not an absolute path free of `..`; give the full path",
                    path.display()
                )));
            }
        }
        if unit.mirror && unit.filter.is_some() {
            return Err(self.invalid(format!(
                "restore unit {} mirrors its source and has a filter, which would delete \
                 everything the filter leaves out; mirror only whole subtrees",
                unit.source.display()
            )));
        }
        if !unit.destination.starts_with(&unit.boundary) {
            return Err(RepositoryError::UnsafeDestination {
                path: unit.destination.clone(),
                reason: format!(
                    "it is not inside the restore target {}; choose a destination inside the target or widen the target",
                    unit.boundary.display()
                ),
            });
        }
        let destination = unit.destination.to_str().ok_or_else(|| {
            self.invalid(format!(
                "restore destination {} is not valid UTF-8, which rustic's restore needs; choose another destination",
                unit.destination.display()
            ))
        })?;
        let mut counts = RestoreSummary::default();
        for item in self.walk(unit)? {
            let (_, node) = item?;
            match kind_of(&node) {
                EntryKind::Dir => counts.dirs += 1,
                EntryKind::File => {
                    counts.files += 1;
                    counts.bytes += node.meta.size;
                }
                EntryKind::Symlink => counts.symlinks += 1,
                EntryKind::Other => counts.others += 1,
            }
        }
        // A trailing `/` keeps rustic's `LocalDestination` from ever treating it as a file.
        let destination = format!("{}/", destination.trim_end_matches('/'));
        Ok(Planned {
            unit,
            destination,
            counts,
        })
    }

    /// Restores every unit, in order. Every unit is checked (paths and the whole of its subtree)
    /// before the first one is written.
    pub(crate) fn run(&self, units: &[RestoreUnit]) -> Result<RestoreSummary, RepositoryError> {
        let planned = units
            .iter()
            .map(|unit| self.plan(unit))
            .collect::<Result<Vec<_>, _>>()?;
        let mut total = RestoreSummary::default();
        for p in &planned {
            total.files += p.counts.files;
            total.dirs += p.counts.dirs;
            total.symlinks += p.counts.symlinks;
            total.others += p.counts.others;
            total.bytes += p.counts.bytes;
        }
        self.bars.set_total(total.bytes);
        for p in &planned {
            let before = self.bars.advanced();
            let (written, replaced) = self.restore_unit(p)?;
            total.bytes_written += written;
            total.replaced += replaced;
            // Hard links and files already in place are not counted by rustic: top up, so the
            // caller's progress reaches its total.
            let counted = self.bars.advanced() - before;
            self.bars.advance(p.counts.bytes.saturating_sub(counted));
        }
        Ok(total)
    }

    fn restore_unit(&self, p: &Planned<'_>) -> Result<(u64, u64), RepositoryError> {
        let unit = p.unit;
        prepare_destination(&unit.boundary, &unit.destination)?;
        let replaced = self.clear_positions(unit)?;

        let dest = LocalDestination::new(&p.destination, false, false).map_err(rustic_error(
            self.repo_path,
            format!("open restore destination {}", unit.destination.display()),
        ))?;
        // Numeric owners, as restic restores them (names could map to other accounts here);
        // existing files are verified chunk by chunk rather than trusted by size and mtime, so a
        // file damaged in place is repaired; nothing at the destination is deleted unless the unit
        // mirrors its source.
        let opts = RestoreOptions::default()
            .numeric_id(true)
            .verify_existing(true)
            .delete(unit.mirror);
        let action = format!(
            "restore {} of snapshot {} to {}",
            unit.source.display(),
            self.snapshot,
            unit.destination.display()
        );
        let failure = Arc::new(Mutex::new(None));
        let plan = self.guarded(&action, &failure, || {
            self.repo
                .prepare_restore(&opts, self.stream(unit, &failure)?, &dest, false)
        })?;
        let written = plan.restore_size;
        self.bars.advance(plan.matched_size);
        self.guarded(&action, &failure, || {
            self.repo
                .restore(plan, &opts, self.stream(unit, &failure)?, &dest)
        })?;
        Ok((written, replaced))
    }

    /// Runs a rustic restore step: a panic in it (rustic unwraps I/O errors in its writer
    /// threads) becomes an error, and an error of our stream is reported as itself.
    fn guarded<T>(
        &self,
        action: &str,
        failure: &Arc<Mutex<Option<RepositoryError>>>,
        step: impl FnOnce() -> RusticResult<T>,
    ) -> Result<T, RepositoryError> {
        let result = catch_unwind(AssertUnwindSafe(step));
        if let Some(e) = failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(e);
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(rustic_error(self.repo_path, action.to_owned())(e)),
            Err(panic) => Err(RepositoryError::Aborted {
                repo: self.repo_path.to_path_buf(),
                action: action.to_owned(),
                reason: panic_message(panic.as_ref()),
            }),
        }
    }

    /// The unit's nodes as rustic wants them; an error of ours is kept in `failure` and rustic
    /// gets a stand-in.
    fn stream<'s>(
        &'s self,
        unit: &RestoreUnit,
        failure: &'s Arc<Mutex<Option<RepositoryError>>>,
    ) -> RusticResult<impl Iterator<Item = RusticResult<(PathBuf, Node)>> + 's> {
        let walk = self.walk(unit).map_err(|e| stash(failure, e))?;
        Ok(walk.map(move |item| item.map_err(|e| stash(failure, e))))
    }

    /// Step 2 of the module documentation: makes every position the unit writes safe to write.
    /// Returns how many existing entries were removed.
    fn clear_positions(&self, unit: &RestoreUnit) -> Result<u64, RepositoryError> {
        let mut replaced = 0;
        let mut hardlinks = BTreeSet::new();
        for item in self.walk(unit)? {
            let (rel, node) = item?;
            if rel.as_os_str().is_empty() {
                // The destination itself, checked by `prepare_destination`.
                continue;
            }
            let path = unit.destination.join(&rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(&path, "look at", e)),
            };
            let existing = meta.file_type();
            let follower = hardlink_key(&node).is_some_and(|key| !hardlinks.insert(key));
            let remove = if existing.is_symlink() {
                true
            } else if existing.is_dir() {
                if !node.is_dir() {
                    return Err(RepositoryError::DestinationConflict {
                        path,
                        reason: format!(
                            "the backup has a {} here, but a directory exists; move the directory away or restore to another destination",
                            kind_name(&node)
                        ),
                    });
                }
                false
            } else if existing.is_file() {
                // A regular file stays only where a file is restored, rustic then rewrites what
                // differs in place; not when it has other links, which may lie outside.
                !node.is_file() || follower || meta.nlink() > 1
            } else {
                // A FIFO or device would block or take the file's contents.
                true
            };
            if remove {
                fs::remove_file(&path).map_err(|e| io_at(&path, "remove", e))?;
                replaced += 1;
            }
        }
        Ok(replaced)
    }
}

fn stash(failure: &Mutex<Option<RepositoryError>>, e: RepositoryError) -> Box<RusticError> {
    let mut slot = failure.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(e);
    }
    RusticError::new(
        ErrorKind::InputOutput,
        "the snapshot tree could not be read safely",
    )
}

/// The key rustic restores hard links by (see its `restore.rs`).
fn hardlink_key(node: &Node) -> Option<(u64, u64)> {
    (node.is_file() && node.meta.links > 1 && node.meta.device_id != 0 && node.meta.inode != 0)
        .then_some((node.meta.device_id, node.meta.inode))
}

fn kind_name(node: &Node) -> &'static str {
    match node.node_type {
        NodeType::Dir => "directory",
        NodeType::File => "file",
        NodeType::Symlink { .. } => "symlink",
        _ => "special file",
    }
}

fn io_at(path: &Path, action: &'static str, source: io::Error) -> RepositoryError {
    RepositoryError::RestoreIo {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Step 1 of the module documentation: the path from `boundary` to `destination` holds only
/// real directories, created where missing.
fn prepare_destination(boundary: &Path, destination: &Path) -> Result<(), RepositoryError> {
    fs::create_dir_all(boundary).map_err(|e| io_at(boundary, "create", e))?;
    if !boundary.is_dir() {
        return Err(RepositoryError::UnsafeDestination {
            path: boundary.to_path_buf(),
            reason: "the restore target is not a directory; give a directory as the target"
                .to_owned(),
        });
    }
    let rel = destination.strip_prefix(boundary).unwrap_or(Path::new(""));
    let mut path = boundary.to_path_buf();
    for component in rel.components() {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&path).unwrap_or_default();
                return Err(RepositoryError::UnsafeDestination {
                    path: path.clone(),
                    reason: format!(
                        "it is a symlink (to {}) between the restore target {} and the destination {}, and writing through it could leave the target; remove the link or restore elsewhere",
                        target.display(),
                        boundary.display(),
                        destination.display()
                    ),
                });
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(RepositoryError::UnsafeDestination {
                    path: path.clone(),
                    reason: format!(
                        "it is not a directory, so the destination {} cannot be made under it; move it away or restore elsewhere",
                        destination.display()
                    ),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Not `create_dir_all`: each new level is made by us and is a real directory.
                fs::create_dir(&path).map_err(|e| io_at(&path, "create", e))?;
            }
            Err(e) => return Err(io_at(&path, "look at", e)),
        }
    }
    Ok(())
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "rustic_core panicked".to_owned())
}
