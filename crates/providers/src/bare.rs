//! The bare ioctls the built-in providers are made of, for benchmarks that set a provider's commit
//! time next to the syscalls it wraps (docs/PERFORMANCE.md). Not for use outside measurements:
//! these do none of the checks, state keeping or thaw guarantees of the providers.

use std::os::fd::AsFd;

use nix::errno::Errno;

/// BTRFS_IOC_SNAP_CREATE_V2 of the subvolume `source` into `dest_dir/name`, read-only.
pub fn btrfs_snapshot(dest_dir: impl AsFd, source: impl AsFd, name: &str) -> Result<(), Errno> {
    crate::btrfs::ioctl::snapshot_create(dest_dir, source, name, true)
}

/// BTRFS_IOC_SNAP_DESTROY_V2 of `parent_dir/name`.
pub fn btrfs_delete_snapshot(parent_dir: impl AsFd, name: &str) -> Result<(), Errno> {
    crate::btrfs::ioctl::snapshot_destroy(parent_dir, name)
}

/// FIFREEZE of the file system `file` is on. The caller must thaw it: only ever on a file system
/// made for the measurement.
pub fn freeze(file: impl AsFd) -> Result<(), Errno> {
    crate::loop_image::ioctl::freeze(file)
}

/// FITHAW of the file system `file` is on.
pub fn thaw(file: impl AsFd) -> Result<(), Errno> {
    crate::loop_image::ioctl::thaw(file)
}

/// FICLONE: makes `dest` share all of `source`'s extents.
pub fn ficlone(dest: impl AsFd, source: impl AsFd) -> Result<(), Errno> {
    crate::loop_image::ioctl::ficlone(dest, source)
}
