//! The persistent shadow copy catalog of the built-in providers: one JSON file per provider that
//! lists the copies it left on disk, so that a restarted daemon finds them again (CTX-2:
//! persistent copies "survive the end of the requester session and reboots"), deletes the ones
//! that should not have survived, and resumes an unfinished revert (REV-1).
//!
//! The file is rewritten whole on every change, atomically: write a temporary file next to it,
//! fsync it, rename it over the old one, fsync the directory. A crash leaves either the old or
//! the new catalog, never a torn one. A file that does not parse is an error naming the file and
//! the parse error, never an empty catalog: silently forgetting it would leak every copy it
//! lists, and the next rewrite would destroy the only record of them.
//!
//! Each provider owns its own catalog file; two providers (or two daemons) must not share one,
//! because each rewrites the whole file from its own view.
//!
//! The providers' use of it is shared too, as methods of `common::Store`: recovery at start-up
//! (`open_catalog`), the write of a set's copies at a step (`record`), and the end of
//! PostFinalCommitSnapshots, which puts the states back when the catalog cannot be written.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use shadowcopy_coordinator::{ProviderError, ProviderStep, SnapshotRecord};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{SnapshotAttributes, SnapshotState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, VssTimestamp};

use crate::common::{self, Store, Tracked, lock};

/// The version of the catalog file's layout; a file of another version is refused, not
/// half-read (the same rule as the documents' `schema_version`).
const CATALOG_VERSION: u32 = 1;

/// One shadow copy as the catalog stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CatalogEntry {
    pub(crate) snapshot_id: SnapshotId,
    pub(crate) set_id: SnapshotSetId,
    pub(crate) volume: String,
    pub(crate) snapshot_path: Option<String>,
    /// Stored by its VSS symbolic name ("CREATED"), as the documents store enumerations.
    pub(crate) state: SnapshotState,
    /// Stored as its bits.
    pub(crate) attributes: SnapshotAttributes,
    pub(crate) created: VssTimestamp,
    pub(crate) provider_id: ProviderId,
    /// Where the copy's data is (btrfs: the snapshot subvolume; loop-image: the clone image;
    /// reflink: the copy's directory).
    pub(crate) location: PathBuf,
    /// The original volume's path on disk (btrfs source subvolume, loop-image backing file,
    /// reflink source directory).
    pub(crate) source: PathBuf,
}

impl CatalogEntry {
    /// The entry for `record`, whose data is at `location`, copied from `source`.
    pub(crate) fn from_record(record: &SnapshotRecord, location: PathBuf, source: PathBuf) -> Self {
        CatalogEntry {
            snapshot_id: record.snapshot_id,
            set_id: record.set_id,
            volume: record.volume.clone(),
            snapshot_path: record.snapshot_path.clone(),
            state: record.state,
            attributes: record.attributes,
            created: record.created,
            provider_id: record.provider_id,
            location,
            source,
        }
    }

    /// The record the coordinator sees.
    pub(crate) fn record(&self) -> SnapshotRecord {
        SnapshotRecord {
            snapshot_id: self.snapshot_id,
            set_id: self.set_id,
            volume: self.volume.clone(),
            snapshot_path: self.snapshot_path.clone(),
            state: self.state,
            attributes: self.attributes,
            created: self.created,
            provider_id: self.provider_id,
        }
    }
}

/// What a provider's `with_catalog` found at start-up, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Persistent shadow copies reinstated into the provider's index.
    pub kept: usize,
    /// Orphans whose data was deleted and which left the catalog.
    pub deleted: Vec<SnapshotId>,
    /// Orphans whose data could not be deleted: kept in the index as ABORTED, so that
    /// DeleteSnapshots (or the next start) can retry, with the reason.
    pub not_deleted: Vec<(SnapshotId, String)>,
    /// Volumes whose unfinished revert was redone (REV-1: "it resumes after a reboot").
    pub reverts_resumed: Vec<String>,
    /// Unfinished reverts that could not be redone, with the reason; their markers stay, so the
    /// next start tries again.
    pub reverts_failed: Vec<(String, String)>,
}

/// A revert that was started and not finished (REV-1: "it resumes after a reboot"). It is
/// written before the volume is touched and removed once the volume holds the snapshot's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RevertMarker {
    /// The shadow copy the volume is rolled back to.
    pub(crate) snapshot_id: SnapshotId,
    /// The volume being rolled back.
    pub(crate) volume: String,
    /// When the revert started.
    pub(crate) started: VssTimestamp,
}

/// The file's layout.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    version: u32,
    entries: Vec<CatalogEntry>,
    #[serde(default)]
    reverts: Vec<RevertMarker>,
}

/// What the catalog holds, as last written to disk.
#[derive(Debug, Default, Clone)]
struct Contents {
    entries: BTreeMap<SnapshotId, CatalogEntry>,
    reverts: Vec<RevertMarker>,
}

/// A provider's persistent catalog: one JSON file, rewritten atomically (write temp, fsync,
/// rename, fsync dir).
#[derive(Debug)]
pub(crate) struct Catalog {
    path: PathBuf,
    /// Changed only after the file was written, so memory never claims more than the disk holds.
    contents: Mutex<Contents>,
}

impl Catalog {
    /// Opens (creating the parent directory with mode 0700; a missing file is an empty catalog)
    /// and returns the stored entries.
    pub(crate) fn open(path: &Path) -> Result<(Catalog, Vec<CatalogEntry>), ProviderError> {
        let shown = path.display();
        let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Err(ProviderError::new(
                codes::E_INVALIDARG,
                format!(
                    "shadow copy catalog {shown} has no parent directory; give an absolute file \
                     path such as /var/lib/shadowcopy/btrfs-catalog.json"
                ),
            ));
        };
        // 0700: the catalog names every shadow copy, which are not surfaced to users (SNAP-3).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| {
                catalog_error(format!(
                    "cannot create the directory {} of shadow copy catalog {shown}: {e}; create \
                     it (mode 0700) or configure another catalog path",
                    parent.display()
                ))
            })?;
        let contents = match std::fs::read(path) {
            Ok(bytes) => parse(path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(e) => {
                return Err(catalog_error(format!(
                    "cannot read shadow copy catalog {shown}: {e}"
                )));
            }
        };
        let entries = contents.entries.values().cloned().collect();
        Ok((
            Catalog {
                path: path.to_path_buf(),
                contents: Mutex::new(contents),
            },
            entries,
        ))
    }

    /// The catalog file.
    #[allow(dead_code)] // For tests and providers that look their catalog up.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored entry, in snapshot id order.
    #[allow(dead_code)] // For tests and providers that look their catalog up.
    pub(crate) fn entries(&self) -> Vec<CatalogEntry> {
        lock(&self.contents).entries.values().cloned().collect()
    }

    /// Adds or replaces entries by snapshot id and persists.
    pub(crate) fn upsert(&self, entries: &[CatalogEntry]) -> Result<(), ProviderError> {
        self.change(|contents| {
            for entry in entries {
                contents.entries.insert(entry.snapshot_id, entry.clone());
            }
        })
    }

    /// Removes entries and persists.
    pub(crate) fn remove(&self, ids: &[SnapshotId]) -> Result<(), ProviderError> {
        self.change(|contents| {
            for id in ids {
                contents.entries.remove(id);
            }
        })
    }

    /// Reverts started and not finished, oldest first.
    pub(crate) fn reverts(&self) -> Vec<RevertMarker> {
        lock(&self.contents).reverts.clone()
    }

    /// Records that a revert of `marker.volume` starts, before the volume is touched.
    pub(crate) fn begin_revert(&self, marker: RevertMarker) -> Result<(), ProviderError> {
        self.change(|contents| {
            contents.reverts.retain(|r| r.volume != marker.volume);
            contents.reverts.push(marker.clone());
        })
    }

    /// Records that the revert of `volume` finished.
    pub(crate) fn end_revert(&self, volume: &str) -> Result<(), ProviderError> {
        self.change(|contents| contents.reverts.retain(|r| r.volume != volume))
    }

    /// Applies `edit` to a copy, writes the copy, and only then keeps it: a failed write
    /// leaves memory as the disk is.
    fn change(&self, edit: impl FnOnce(&mut Contents)) -> Result<(), ProviderError> {
        let mut contents = lock(&self.contents);
        let mut next = contents.clone();
        edit(&mut next);
        write_atomically(&self.path, &next)?;
        *contents = next;
        Ok(())
    }
}

/// Parses a catalog file; anything wrong is an error naming the file (never an empty catalog).
fn parse(path: &Path, bytes: &[u8]) -> Result<Contents, ProviderError> {
    let shown = path.display();
    let file: CatalogFile = serde_json::from_slice(bytes).map_err(|e| {
        catalog_error(format!(
            "shadow copy catalog {shown} is corrupt: {e}; it lists the shadow copies left on \
             disk, so it is not discarded: repair the file, or move it aside (the copies it lists \
             are then no longer managed and must be deleted by hand)"
        ))
    })?;
    if file.version != CATALOG_VERSION {
        return Err(catalog_error(format!(
            "shadow copy catalog {shown} has layout version {}, and this build reads version \
             {CATALOG_VERSION}; run the shadowcopy version that wrote it",
            file.version
        )));
    }
    let mut entries = BTreeMap::new();
    for entry in file.entries {
        if let Some(twice) = entries.insert(entry.snapshot_id, entry) {
            return Err(catalog_error(format!(
                "shadow copy catalog {shown} is corrupt: it lists shadow copy {} twice; repair \
                 the file",
                twice.snapshot_id
            )));
        }
    }
    Ok(Contents {
        entries,
        reverts: file.reverts,
    })
}

/// Writes `contents` to `path`: temp file (mode 0600), fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, contents: &Contents) -> Result<(), ProviderError> {
    let shown = path.display();
    let file = CatalogFile {
        version: CATALOG_VERSION,
        entries: contents.entries.values().cloned().collect(),
        reverts: contents.reverts.clone(),
    };
    let mut text = serde_json::to_vec_pretty(&file)
        .map_err(|e| catalog_error(format!("cannot serialise shadow copy catalog {shown}: {e}")))?;
    text.push(b'\n');
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(".{name}.tmp"));
    let failed = |what: &str, e: std::io::Error| {
        let code = match e.raw_os_error() {
            Some(libc_enospc) if libc_enospc == nix::errno::Errno::ENOSPC as i32 => {
                codes::VSS_E_INSUFFICIENT_STORAGE
            }
            _ => codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
        };
        ProviderError::new(
            code,
            format!("cannot write shadow copy catalog {shown}: {what} failed: {e}"),
        )
    };
    let result = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| failed(&format!("open(2) of {}", temp.display()), e))?;
        out.write_all(&text)
            .map_err(|e| failed(&format!("write(2) to {}", temp.display()), e))?;
        out.sync_all()
            .map_err(|e| failed(&format!("fsync(2) of {}", temp.display()), e))?;
        drop(out);
        std::fs::rename(&temp, path)
            .map_err(|e| failed(&format!("rename(2) of {} to {shown}", temp.display()), e))?;
        // The rename is durable only once the directory entry is.
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| failed(&format!("fsync(2) of {}", parent.display()), e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn catalog_error(message: String) -> ProviderError {
    ProviderError::new(codes::VSS_E_UNEXPECTED_PROVIDER_ERROR, message)
}

/// Splits stored entries at start-up: keep = CREATED, not auto-release (NO_AUTO_RELEASE set), and
/// `location` exists; everything else is an orphan: an auto-release copy whose session died with
/// the process, or a set cut short mid-creation (CTX-2, BK-END-6).
pub(crate) fn recover(entries: Vec<CatalogEntry>) -> (Vec<CatalogEntry>, Vec<CatalogEntry>) {
    entries.into_iter().partition(|entry| {
        entry.state == SnapshotState::Created
            && entry
                .attributes
                .contains(SnapshotAttributes::NO_AUTO_RELEASE)
            && entry.location.symlink_metadata().is_ok()
    })
}

impl<E: Tracked, X: Send + 'static> Store<E, X> {
    /// Opens the provider's catalog at `path`, keeps it in the store, and recovers what it lists
    /// (CTX-2): persistent CREATED copies whose data is still on disk go back into the index,
    /// oldest first (so that query, delete and expose work after a restart); every other entry is
    /// an orphan, whose data is deleted and which leaves the catalog, each logged with a warning
    /// naming the copy, the volume and why. An orphan whose data cannot be deleted stays in the
    /// index as ABORTED, so that DeleteSnapshots (or the next start) can retry. A catalog that
    /// cannot be read or parsed is an error naming the file, never an empty catalog.
    pub(crate) fn open_catalog(
        &mut self,
        path: &Path,
    ) -> Result<(Arc<Catalog>, RecoveryReport), ProviderError> {
        let name = E::PROVIDER;
        let (catalog, entries) = Catalog::open(path)?;
        let (mut keep, orphans) = recover(entries);
        let mut report = RecoveryReport::default();
        let mut dropped = Vec::new();
        let mut index = lock(&self.index);
        keep.sort_by_key(|e| (e.created, e.snapshot_id));
        for stored in keep {
            let order = index.take_order();
            index
                .entries
                .insert(stored.snapshot_id, E::from_catalog(&stored, order));
            report.kept += 1;
        }
        for mut orphan in orphans {
            let why = orphan_reason(&orphan);
            match E::delete_orphan(&orphan) {
                Ok(()) => {
                    tracing::warn!(snapshot = %orphan.snapshot_id, volume = %orphan.volume, path = %orphan.location.display(), "{name} provider: deleted an orphaned shadow copy at start-up: {why}");
                    dropped.push(orphan.snapshot_id);
                    report.deleted.push(orphan.snapshot_id);
                }
                Err(error) => {
                    tracing::error!(snapshot = %orphan.snapshot_id, volume = %orphan.volume, "{name} provider: cannot delete an orphaned shadow copy ({why}): {}; it is listed as ABORTED until DeleteSnapshots succeeds", error.message);
                    orphan.state = SnapshotState::Aborted;
                    let order = index.take_order();
                    index
                        .entries
                        .insert(orphan.snapshot_id, E::from_catalog(&orphan, order));
                    report.not_deleted.push((orphan.snapshot_id, error.message));
                }
            }
        }
        drop(index);
        catalog.remove(&dropped)?;
        tracing::info!(catalog = %path.display(), kept = report.kept, deleted = report.deleted.len(), "{name} provider: catalog loaded");
        let catalog = Arc::new(catalog);
        self.catalog = Some(catalog.clone());
        Ok((catalog, report))
    }

    /// Writes the shadow copies of `set` that are in `state` to the catalog, if there is one.
    pub(crate) async fn record(
        &self,
        set: SnapshotSetId,
        state: SnapshotState,
    ) -> Result<(), ProviderError> {
        let Some(catalog) = self.catalog.clone() else {
            return Ok(());
        };
        let entries: Vec<CatalogEntry> = lock(&self.index)
            .entries
            .values()
            .filter(|e| e.record().set_id == set && e.record().state == state)
            .map(Tracked::catalog_entry)
            .collect();
        common::blocking(E::PROVIDER, move || catalog.upsert(&entries)).await
    }

    /// The end of PostFinalCommitSnapshots: the shadow copies of `set` become CREATED, in the
    /// catalog too. If the catalog cannot be written, the step fails and the states go back, so
    /// that the coordinator's abort deletes the copies now: a copy the catalog does not know as
    /// CREATED would be deleted as an orphan at the next start, so it is better not to hand it to
    /// the requester.
    pub(crate) async fn post_final_commit(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let members = self.advance(
            set,
            ProviderStep::PostFinalCommitSnapshots,
            SnapshotState::Prefinalcommitted,
            SnapshotState::Created,
        )?;
        if let Err(error) = self.record(set, SnapshotState::Created).await {
            let mut index = lock(&self.index);
            for id in &members {
                if let Some(entry) = index.entries.get_mut(id) {
                    entry.record_mut().state = SnapshotState::Prefinalcommitted;
                }
            }
            return Err(error);
        }
        Ok(())
    }
}

/// Why `recover` called `entry` an orphan, for the warning that logs its deletion.
pub(crate) fn orphan_reason(entry: &CatalogEntry) -> String {
    if entry.state != SnapshotState::Created {
        format!(
            "its set stopped in state {} before it was created (cut short by a crash or an \
             abort)",
            entry.state
        )
    } else if !entry
        .attributes
        .contains(SnapshotAttributes::NO_AUTO_RELEASE)
    {
        "it is auto-release, and its session ended with the process that made it (CTX-2, \
         BK-END-6)"
            .to_string()
    } else {
        format!("its data {} is gone", entry.location.display())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use shadowcopy_metadata::enums::SnapshotContext;
    use shadowcopy_test_support::TempDir;

    use super::*;

    fn entry(dir: &Path, state: SnapshotState, context: SnapshotContext) -> CatalogEntry {
        let id = SnapshotId::new_random();
        let location = dir.join(id.to_string());
        CatalogEntry {
            snapshot_id: id,
            set_id: SnapshotSetId::new_random(),
            volume: "/srv/a".to_string(),
            snapshot_path: Some(location.to_string_lossy().into_owned()),
            state,
            attributes: context.attributes() | SnapshotAttributes::DIFFERENTIAL,
            created: VssTimestamp::now(),
            provider_id: ProviderId::new_random(),
            location,
            source: PathBuf::from("/srv/a"),
        }
    }

    /// What is upserted comes back from a fresh open, record fields included.
    #[test]
    fn entries_round_trip() {
        let dir = TempDir::new("catalog-round-trip");
        let path = dir.join("state/catalog.json");
        let (catalog, loaded) = Catalog::open(&path).unwrap();
        assert!(loaded.is_empty(), "a missing file is an empty catalog");
        let mode = std::fs::metadata(dir.join("state"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the catalog directory is private");
        let a = entry(&dir.0, SnapshotState::Created, SnapshotContext::AppRollback);
        let mut b = entry(&dir.0, SnapshotState::Prepared, SnapshotContext::Backup);
        b.snapshot_path = None;
        catalog.upsert(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(a.record().snapshot_path, a.snapshot_path);
        assert_eq!(
            CatalogEntry::from_record(&a.record(), a.location.clone(), a.source.clone()),
            a
        );
        drop(catalog);
        let (catalog, mut loaded) = Catalog::open(&path).unwrap();
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort_by_key(|e| e.snapshot_id);
        loaded.sort_by_key(|e| e.snapshot_id);
        assert_eq!(loaded, expected);
        // Upsert replaces by id; remove persists too.
        b.state = SnapshotState::Created;
        catalog.upsert(std::slice::from_ref(&b)).unwrap();
        catalog.remove(&[a.snapshot_id]).unwrap();
        drop(catalog);
        let (_, loaded) = Catalog::open(&path).unwrap();
        assert_eq!(loaded, vec![b]);
        // The state travels as its name and the attributes as their bits.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"CREATED\""), "{text}");
    }

    /// A rewrite replaces the file through a rename (a new inode), leaves no temporary file and
    /// keeps the file private; a failed write leaves both file and memory as they were.
    #[test]
    fn rewrites_are_atomic() {
        let dir = TempDir::new("catalog-atomic");
        let path = dir.join("catalog.json");
        let (catalog, _) = Catalog::open(&path).unwrap();
        let a = entry(&dir.0, SnapshotState::Created, SnapshotContext::AppRollback);
        catalog.upsert(std::slice::from_ref(&a)).unwrap();
        let before = shadowcopy_test_support::loop_volume::inode_of(&path).unwrap();
        let b = entry(&dir.0, SnapshotState::Created, SnapshotContext::AppRollback);
        catalog.upsert(std::slice::from_ref(&b)).unwrap();
        let after = shadowcopy_test_support::loop_volume::inode_of(&path).unwrap();
        assert_ne!(
            before, after,
            "the file was renamed over, not rewritten in place"
        );
        let names: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["catalog.json".to_string()]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A directory where the temporary file goes makes the write fail.
        std::fs::create_dir(dir.join(".catalog.json.tmp")).unwrap();
        let c = entry(&dir.0, SnapshotState::Created, SnapshotContext::AppRollback);
        let error = catalog.upsert(std::slice::from_ref(&c)).unwrap_err();
        assert!(error.message.contains("catalog.json"), "{}", error.message);
        assert_eq!(catalog.entries().len(), 2, "memory follows the disk");
        let (_, loaded) = Catalog::open(&path).unwrap();
        assert_eq!(loaded.len(), 2);
    }

    /// A corrupt file is an error that names the file and the parse error, and it is left alone.
    #[test]
    fn a_corrupt_file_is_named() {
        let dir = TempDir::new("catalog-corrupt");
        let path = dir.join("catalog.json");
        std::fs::write(&path, "{\"version\": 1, \"entries\": [ {\"snapshot_id\": ").unwrap();
        let error = Catalog::open(&path).unwrap_err();
        assert_eq!(error.code, codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);
        assert!(
            error.message.contains(&path.display().to_string()),
            "{}",
            error.message
        );
        assert!(error.message.contains("line 1"), "{}", error.message);
        assert!(error.message.contains("corrupt"), "{}", error.message);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("snapshot_id")
        );
        std::fs::write(&path, "{\"version\": 7, \"entries\": []}").unwrap();
        let error = Catalog::open(&path).unwrap_err();
        assert!(error.message.contains("version 7"), "{}", error.message);
    }

    /// Kept: created, persistent, data present. Orphans: auto-release, not created, data gone.
    #[test]
    fn recover_splits_kept_from_orphans() {
        let dir = TempDir::new("catalog-recover");
        let with_data = |e: CatalogEntry| {
            std::fs::create_dir(&e.location).unwrap();
            e
        };
        let kept = with_data(entry(
            &dir.0,
            SnapshotState::Created,
            SnapshotContext::AppRollback,
        ));
        let auto = with_data(entry(
            &dir.0,
            SnapshotState::Created,
            SnapshotContext::Backup,
        ));
        let cut = with_data(entry(
            &dir.0,
            SnapshotState::Prepared,
            SnapshotContext::AppRollback,
        ));
        let committed = with_data(entry(
            &dir.0,
            SnapshotState::Committed,
            SnapshotContext::NasRollback,
        ));
        let gone = entry(&dir.0, SnapshotState::Created, SnapshotContext::AppRollback);
        let (keep, orphans) = recover(vec![
            kept.clone(),
            auto.clone(),
            cut.clone(),
            committed.clone(),
            gone.clone(),
        ]);
        assert_eq!(keep, vec![kept]);
        assert_eq!(
            orphans,
            vec![auto.clone(), cut.clone(), committed, gone.clone()]
        );
        assert!(orphan_reason(&auto).contains("auto-release"));
        assert!(orphan_reason(&cut).contains("PREPARED"));
        assert!(orphan_reason(&gone).contains("gone"));
    }

    /// Revert markers persist until ended.
    #[test]
    fn revert_markers_persist() {
        let dir = TempDir::new("catalog-revert");
        let path = dir.join("catalog.json");
        let (catalog, _) = Catalog::open(&path).unwrap();
        let marker = RevertMarker {
            snapshot_id: SnapshotId::new_random(),
            volume: "/srv/a".into(),
            started: VssTimestamp::now(),
        };
        catalog.begin_revert(marker.clone()).unwrap();
        drop(catalog);
        let (catalog, _) = Catalog::open(&path).unwrap();
        assert_eq!(catalog.reverts(), vec![marker]);
        catalog.end_revert("/srv/a").unwrap();
        let (catalog, _) = Catalog::open(&path).unwrap();
        assert!(catalog.reverts().is_empty());
        assert_eq!(catalog.path(), path);
    }
}
