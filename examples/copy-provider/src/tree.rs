//! Copying and removing directory trees with plain `std::fs`, so that the example works on any
//! filesystem (ext4, tmpfs, ...) and needs no ioctl.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Copies the tree at `from` into the new directory `to`: directories, regular files (contents and
/// permission bits, through `std::fs::copy`) and symbolic links (as links, never followed).
///
/// Sockets, FIFOs and device nodes are skipped: they hold no data to back up. Ownership, times and
/// extended attributes are not copied; a real provider would keep them. The copy checks `cancel`
/// before every entry, so that a commit the daemon gave up on stops soon (PROV-T-1).
pub(crate) fn copy_tree(from: &Path, to: &Path, cancel: &AtomicBool) -> io::Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the copy was cancelled because shadowcopyd gave up on the commit",
        ));
    }
    fs::create_dir(to).map_err(|error| annotate(error, "create", to))?;
    for entry in fs::read_dir(from).map_err(|error| annotate(error, "read", from))? {
        let entry = entry.map_err(|error| annotate(error, "read", from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|error| annotate(error, "inspect", &source))?;
        if cancel.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the copy was cancelled because shadowcopyd gave up on the commit",
            ));
        }
        if kind.is_dir() {
            copy_tree(&source, &target, cancel)?;
        } else if kind.is_file() {
            fs::copy(&source, &target).map_err(|error| annotate(error, "copy", &source))?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(|error| annotate(error, "read", &source))?;
            std::os::unix::fs::symlink(link, &target)
                .map_err(|error| annotate(error, "create", &target))?;
        }
    }
    // The directory's own permission bits last, so that a read-only source directory does not
    // stop its entries from being copied in.
    let mode = fs::metadata(from)
        .map_err(|error| annotate(error, "inspect", from))?
        .permissions();
    fs::set_permissions(to, mode).map_err(|error| annotate(error, "chmod", to))
}

/// Removes every write permission bit in the tree at `path` (PostFinalCommitSnapshots: the
/// shadow copy becomes read-only). Root can still write, so this guards against mistakes, not
/// against an attacker; a real provider would use a read-only mount or snapshot.
pub(crate) fn make_read_only(path: &Path) -> io::Result<()> {
    let metadata = fs::symlink_metadata(path).map_err(|error| annotate(error, "inspect", path))?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    if metadata.is_dir() {
        for entry in fs::read_dir(path).map_err(|error| annotate(error, "read", path))? {
            make_read_only(&entry.map_err(|error| annotate(error, "read", path))?.path())?;
        }
    }
    let mode = metadata.permissions().mode() & !0o222;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|error| annotate(error, "chmod", path))
}

/// Removes the tree at `path`, giving its directories back their owner's write bit first so that
/// a read-only copy can be removed by a plug-in that does not run as root. A missing tree is fine:
/// deletion and abort must succeed when repeated (docs/protocol.md §7.2).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    fn writable(path: &Path) -> io::Result<()> {
        let metadata = fs::symlink_metadata(path)?;
        if metadata.is_dir() {
            let mode = metadata.permissions().mode() | 0o700;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            for entry in fs::read_dir(path)? {
                writable(&entry?.path())?;
            }
        }
        Ok(())
    }
    match writable(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        result => result.map_err(|error| annotate(error, "make writable", path))?,
    }
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result.map_err(|error| annotate(error, "remove", path)),
    }
}

/// Adds what was done and where to an I/O error, keeping its kind (ENOSPC decides the VSS code).
fn annotate(error: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("cannot {action} {}: {error}", path.display()),
    )
}
