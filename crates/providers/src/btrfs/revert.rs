//! Revert of a btrfs volume to one of its snapshots, in place (REV-1).
//!
//! The volume is the root of a mounted subvolume, which cannot be swapped for the snapshot while
//! it is mounted, so the revert replaces its contents instead:
//! 1. unless forced, refuse with VSS_E_VOLUME_IN_USE while another process has a file open, or its
//!    current or root directory, under the volume (found by scanning /proc/*/fd, cwd and root;
//!    the snapshot directory does not count, reading a copy there does not stop a revert);
//! 2. remove every entry of the volume except the snapshot directory and nested subvolume roots
//!    and mount points (a directory with another st_dev or inode 256): they are not part of the
//!    snapshot (a btrfs snapshot does not descend into nested subvolumes), so they are left as they
//!    are, together with the directories that lead to them;
//! 3. copy the snapshot's tree back: directories are recreated, regular files are FICLONE'd (the
//!    snapshot is on the same file system, so no data is copied, only extents shared), symlinks,
//!    FIFOs and device nodes are recreated; ownership, mode and times follow the snapshot, the
//!    volume's root directory included;
//! 4. syncfs(2) the volume, so that the revert is durable before it is reported finished.
//!
//! Every step can run again from the start over a half-done earlier run: that is how a revert
//! cut short by a crash resumes at the next start (the catalog keeps a marker until step 4 ends).
//! Not carried over: hard links (each name gets a clone of its own, sharing the extents), extended
//! attributes and ACLs, and sockets (which are only meaningful to a live process).

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use shadowcopy_coordinator::ProviderError;
use shadowcopy_metadata::codes;

use super::{io_error, ioctl::SUBVOLUME_ROOT_INODE, syscall_error};
use crate::loop_image::ioctl::ficlone;

/// A process that uses a path under the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct User {
    pub(super) pid: i32,
    pub(super) command: String,
    pub(super) path: PathBuf,
}

/// The processes other than this one that have a file open, or their current or root directory,
/// under `root`, except under `except` (the snapshot directory). One entry per process.
pub(super) fn processes_using(root: &Path, except: Option<&Path>) -> Vec<User> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let own = std::process::id() as i32;
    let mut users = Vec::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return users;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let dir = process.path();
        let mut links = vec![dir.join("cwd"), dir.join("root")];
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            links.extend(fds.flatten().map(|fd| fd.path()));
        }
        // A process that exits meanwhile, or that we may not inspect, just yields no links.
        let hit = links.into_iter().find_map(|link| {
            let target = std::fs::read_link(link).ok()?;
            (target.starts_with(&root) && !except.is_some_and(|e| target.starts_with(e)))
                .then_some(target)
        });
        if let Some(path) = hit {
            let command = std::fs::read_to_string(dir.join("comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            users.push(User { pid, command, path });
        }
    }
    users
}

/// VSS_E_VOLUME_IN_USE naming the processes.
pub(super) fn in_use_error(volume: &str, users: &[User]) -> ProviderError {
    let named: Vec<String> = users
        .iter()
        .map(|u| format!("pid {} ({}) uses {}", u.pid, u.command, u.path.display()))
        .collect();
    ProviderError::new(
        codes::VSS_E_VOLUME_IN_USE,
        format!(
            "btrfs provider cannot revert {volume}: other processes use it ({}); stop them, or \
             revert with force-dismount",
            named.join("; ")
        ),
    )
}

/// Replaces the contents of the volume `root` with the tree of `snapshot` (steps 2 to 4 of the
/// module documentation). `keep` is the name of the top-level entry of the volume that holds the
/// snapshot directory, left alone on both sides.
pub(super) fn revert_in_place(
    volume: &str,
    root: &Path,
    snapshot: &Path,
    keep: Option<&OsStr>,
) -> Result<(), ProviderError> {
    let io = |call: String| move |e: std::io::Error| io_error(e, &call, volume);
    let root_meta =
        std::fs::symlink_metadata(root).map_err(io(format!("stat(2) of {}", root.display())))?;
    let snapshot_meta = std::fs::symlink_metadata(snapshot)
        .map_err(io(format!("stat(2) of {}", snapshot.display())))?;
    let dev = root_meta.dev();
    clear(volume, root, dev, keep)?;
    copy_tree(volume, snapshot, root, dev, keep)?;
    apply_metadata(volume, root, &snapshot_meta)?;
    let file = File::open(root).map_err(io(format!("open(2) of {}", root.display())))?;
    nix::unistd::syncfs(&file)
        .map_err(|errno| syscall_error(errno, &format!("syncfs(2) of {volume}"), volume))
}

/// Whether a directory belongs to something the revert leaves alone: a nested subvolume or a
/// mount point.
fn left_alone(metadata: &std::fs::Metadata, dev: u64) -> bool {
    metadata.dev() != dev || metadata.ino() == SUBVOLUME_ROOT_INODE
}

/// Removes the entries of `dir` except `keep` and what [`left_alone`] says; returns whether it is
/// empty now (so that the caller may remove it).
fn clear(volume: &str, dir: &Path, dev: u64, keep: Option<&OsStr>) -> Result<bool, ProviderError> {
    let io = |call: String| move |e: std::io::Error| io_error(e, &call, volume);
    let mut empty = true;
    let entries = std::fs::read_dir(dir).map_err(io(format!("opendir(3) of {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("readdir(3) of {}", dir.display())))?;
        let name = entry.file_name();
        if keep == Some(name.as_os_str()) {
            empty = false;
            continue;
        }
        let path = entry.path();
        let metadata = std::fs::symlink_metadata(&path)
            .map_err(io(format!("stat(2) of {}", path.display())))?;
        if metadata.is_dir() {
            if left_alone(&metadata, dev) {
                tracing::info!(volume, path = %path.display(), "revert leaves a nested subvolume or mount point alone");
                empty = false;
            } else if clear(volume, &path, dev, None)? {
                std::fs::remove_dir(&path)
                    .map_err(io(format!("rmdir(2) of {}", path.display())))?;
            } else {
                empty = false;
            }
        } else {
            std::fs::remove_file(&path).map_err(io(format!("unlink(2) of {}", path.display())))?;
        }
    }
    Ok(empty)
}

/// Copies the entries of `from` (in the snapshot) into `to` (in the volume), except `keep`.
fn copy_tree(
    volume: &str,
    from: &Path,
    to: &Path,
    dev: u64,
    keep: Option<&OsStr>,
) -> Result<(), ProviderError> {
    let io = |call: String| move |e: std::io::Error| io_error(e, &call, volume);
    let entries =
        std::fs::read_dir(from).map_err(io(format!("opendir(3) of {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("readdir(3) of {}", from.display())))?;
        let name: OsString = entry.file_name();
        if keep == Some(name.as_os_str()) {
            continue;
        }
        let source = entry.path();
        let target = to.join(&name);
        let metadata = std::fs::symlink_metadata(&source)
            .map_err(io(format!("stat(2) of {}", source.display())))?;
        let kind = metadata.file_type();
        let existing = std::fs::symlink_metadata(&target).ok();
        if let Some(existing) = &existing {
            if existing.is_dir() && left_alone(existing, dev) {
                // A nested subvolume or mount point that was left in place: the snapshot holds
                // only its empty placeholder.
                continue;
            }
            if !(existing.is_dir() && kind.is_dir()) {
                if existing.is_dir() {
                    std::fs::remove_dir_all(&target)
                        .map_err(io(format!("removal of {}", target.display())))?;
                } else {
                    std::fs::remove_file(&target)
                        .map_err(io(format!("unlink(2) of {}", target.display())))?;
                }
            }
        }
        if kind.is_dir() {
            if !existing.as_ref().is_some_and(|e| e.is_dir()) {
                std::fs::create_dir(&target)
                    .map_err(io(format!("mkdir(2) of {}", target.display())))?;
            }
            copy_tree(volume, &source, &target, dev, None)?;
        } else if kind.is_file() {
            let input =
                File::open(&source).map_err(io(format!("open(2) of {}", source.display())))?;
            let output = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(io(format!(
                    "open(2) O_CREAT|O_EXCL of {}",
                    target.display()
                )))?;
            ficlone(&output, &input).map_err(|errno| {
                syscall_error(
                    errno,
                    &format!("FICLONE of {} to {}", source.display(), target.display()),
                    volume,
                )
            })?;
        } else if kind.is_symlink() {
            let points_to = std::fs::read_link(&source)
                .map_err(io(format!("readlink(2) of {}", source.display())))?;
            std::os::unix::fs::symlink(&points_to, &target)
                .map_err(io(format!("symlink(2) of {}", target.display())))?;
        } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
            let sflag = if kind.is_fifo() {
                SFlag::S_IFIFO
            } else if kind.is_char_device() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            mknod(
                &target,
                sflag,
                Mode::from_bits_truncate(metadata.mode() & 0o7777),
                metadata.rdev(),
            )
            .map_err(|errno| {
                syscall_error(errno, &format!("mknod(2) of {}", target.display()), volume)
            })?;
        } else {
            tracing::warn!(volume, path = %source.display(), "revert does not recreate sockets");
            continue;
        }
        apply_metadata(volume, &target, &metadata)?;
    }
    Ok(())
}

/// Gives `path` the owner, mode and times of `metadata`: owner first, because chown(2) clears
/// the set-id bits, and times last, because the other two change ctime only.
fn apply_metadata(
    volume: &str,
    path: &Path,
    metadata: &std::fs::Metadata,
) -> Result<(), ProviderError> {
    let io = |call: String| move |e: std::io::Error| io_error(e, &call, volume);
    std::os::unix::fs::lchown(path, Some(metadata.uid()), Some(metadata.gid()))
        .map_err(io(format!("lchown(2) of {}", path.display())))?;
    if !metadata.file_type().is_symlink() {
        std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(metadata.mode() & 0o7777),
        )
        .map_err(io(format!("chmod(2) of {}", path.display())))?;
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or(OsStr::new("."));
    let dir = File::open(parent).map_err(io(format!("open(2) of {}", parent.display())))?;
    utimensat(
        &dir,
        name,
        &TimeSpec::new(metadata.atime(), metadata.atime_nsec()),
        &TimeSpec::new(metadata.mtime(), metadata.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|errno| {
        syscall_error(
            errno,
            &format!("utimensat(2) of {}", path.display()),
            volume,
        )
    })
}
