//! Making a set's shadow copies readable for the backup (BK-COPY-1): a directory copy is read where
//! it is; a disk-image copy (the loop-image provider's device object) is mounted read-only at a
//! stable path per volume and unmounted again when the backup is done.
//!
//! The stable path is `<runtime dir>/volumes/<volume, escaped like systemd-escape --path>`, the same for every backup of a
//! volume. The files are recorded in the repository under the original volume path in any case
//! (so an incremental backup finds its parent by that), and the CLI runs backups in a private mount
//! namespace of their own, so a backup killed halfway leaves no mount behind and two backups never
//! see each other's mounts.

use std::path::{Path, PathBuf};

use shadowcopy_providers::expose;
use shadowcopy_requester::SnapshotProperties;

use crate::error::BackupError;

/// One copy, readable at [`ReadableCopy::root`] until dropped.
#[derive(Debug)]
pub(crate) struct ReadableCopy {
    /// The volume's root as it was at the shadow copy's instant.
    pub(crate) root: PathBuf,
    /// The mount made for it, unmounted on drop.
    mounted: Option<PathBuf>,
}

impl ReadableCopy {
    /// Makes the copy of `properties` readable; images are mounted under `runtime_dir`.
    pub(crate) fn open(
        properties: &SnapshotProperties,
        runtime_dir: &Path,
    ) -> Result<Self, BackupError> {
        let device_object = &properties.snapshot_path;
        let unreadable = |message: String| BackupError::CopyUnreadable {
            volume: properties.volume.clone(),
            device_object: device_object.clone(),
            message,
        };
        let metadata = std::fs::metadata(device_object).map_err(|e| unreadable(e.to_string()))?;
        if metadata.is_dir() {
            return Ok(ReadableCopy {
                root: device_object.clone(),
                mounted: None,
            });
        }
        let target = runtime_dir
            .join("volumes")
            .join(expose::volume_key(&properties.volume));
        std::fs::create_dir_all(&target).map_err(|e| BackupError::Io {
            action: "create the mount point",
            path: target.clone(),
            source: e,
        })?;
        // A mount left at the stable path by a backup that died outside a namespace of its own.
        if expose::is_mounted(&target) {
            let _ = expose::unmount(&target);
        }
        expose::mount_read_only(device_object, &target).map_err(|e| unreadable(e.to_string()))?;
        Ok(ReadableCopy {
            root: target.clone(),
            mounted: Some(target),
        })
    }
}

impl Drop for ReadableCopy {
    fn drop(&mut self) {
        if let Some(target) = self.mounted.take() {
            if let Err(error) = expose::unmount(&target) {
                tracing::warn!(target = %target.display(), %error, "cannot unmount a shadow copy after the backup");
            }
            let _ = std::fs::remove_dir(&target);
        }
    }
}
