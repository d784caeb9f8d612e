//! Backups as they are stored: finding one in the repository by id, reading its manifest, BCD and
//! WMDs back (RST-INIT-1), and the listing behind `shadowcopy backups list`.

use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{BackupComponents, WriterMetadata, codes};
use shadowcopy_repository::{Repository, SnapshotSummary};

use crate::error::BackupError;
use crate::manifest::{self, BCD_FILE, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, TaggedBackup};

/// One backup read back from the repository.
#[derive(Debug, Clone)]
pub struct StoredBackup {
    /// The repository snapshot.
    pub snapshot: SnapshotSummary,
    /// Its manifest.
    pub manifest: Manifest,
    /// The BCD stored after DoSnapshotSet (BK-COPY-5).
    pub bcd: BackupComponents,
    /// The WMDs stored with it, the only source of file specifications for a restore (RST-INIT-2).
    pub writers: Vec<WriterMetadata>,
}

impl StoredBackup {
    /// Reads the backup `id` (a snapshot id or a unique prefix of one) with its documents.
    pub fn load(repository: &Repository, id: &str) -> Result<Self, BackupError> {
        let snapshot = find(repository, id)?;
        let damaged = |message: String| BackupError::Damaged {
            repo: repository.path().to_path_buf(),
            snapshot: snapshot.id.clone(),
            message,
        };
        let read = |name: &str| -> Result<String, BackupError> {
            let bytes = repository
                .metadata_file(&snapshot.id, name)?
                .ok_or_else(|| damaged(format!("it has no {name}")))?;
            String::from_utf8(bytes).map_err(|_| damaged(format!("its {name} is not UTF-8 text")))
        };
        let manifest: Manifest = serde_json::from_str(&read(MANIFEST_FILE)?)
            .map_err(|e| damaged(format!("its {MANIFEST_FILE} does not parse: {e}")))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(damaged(format!(
                "its {MANIFEST_FILE} has format {}, and this shadowcopy reads format \
                 {MANIFEST_FORMAT}; use the shadowcopy version that made it",
                manifest.format
            )));
        }
        let bcd = BackupComponents::from_json(&read(BCD_FILE)?)
            .map_err(|e| damaged(format!("its {BCD_FILE} is not a valid BCD: {e}")))?;
        let mut writers = Vec::new();
        for name in &manifest.wmd_files {
            if name.contains('/') || name.starts_with('.') {
                return Err(damaged(format!("its manifest names a WMD file {name:?}")));
            }
            writers.push(
                WriterMetadata::from_json(&read(name)?)
                    .map_err(|e| damaged(format!("its {name} is not a valid WMD: {e}")))?,
            );
        }
        Ok(StoredBackup {
            snapshot,
            manifest,
            bcd,
            writers,
        })
    }
}

/// A repository snapshot that is a shadowcopy backup, as listed without reading its documents.
#[derive(Debug, Clone)]
pub struct ListedBackup {
    /// The snapshot.
    pub snapshot: SnapshotSummary,
    /// What its tags say.
    pub tagged: TaggedBackup,
}

/// Every shadowcopy backup in the repository, oldest first; snapshots that restic or another tool
/// made are left out.
pub fn list(repository: &Repository) -> Result<Vec<ListedBackup>, BackupError> {
    Ok(repository
        .snapshots()?
        .into_iter()
        .filter_map(|snapshot| {
            let tagged = manifest::parse_tags(&snapshot.tags)?;
            Some(ListedBackup { snapshot, tagged })
        })
        .collect())
}

/// The snapshot `id` names: an exact id, a prefix that only one snapshot has, or `latest`, the
/// newest shadowcopy backup.
fn find(repository: &Repository, id: &str) -> Result<SnapshotSummary, BackupError> {
    if id == "latest" {
        return list(repository)?
            .into_iter()
            .max_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time))
            .map(|b| b.snapshot)
            .ok_or_else(|| {
                BackupError::invalid(
                    &codes::VSS_E_OBJECT_NOT_FOUND,
                    format!("no shadowcopy backups in {}", repository.path().display()),
                )
            });
    }
    if id.len() < 4 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(BackupError::invalid(
            &codes::E_INVALIDARG,
            format!(
                "{id:?} is not a backup id: give `latest`, or at least 4 hex digits of an id \
                 that `shadowcopy backups list` shows"
            ),
        ));
    }
    let id = id.to_ascii_lowercase();
    let mut matching: Vec<SnapshotSummary> = repository
        .snapshots()?
        .into_iter()
        .filter(|s| s.id.starts_with(&id))
        .collect();
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(BackupError::invalid(
            &codes::VSS_E_OBJECT_NOT_FOUND,
            format!(
                "no backup {id} in {}; `shadowcopy backups list` shows the backups",
                repository.path().display()
            ),
        )),
        n => Err(BackupError::invalid(
            &codes::E_INVALIDARG,
            format!("{n} backups have ids starting with {id}; give more digits"),
        )),
    }
}
