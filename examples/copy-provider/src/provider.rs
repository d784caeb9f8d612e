//! `CopyProvider`: the example's implementation of the coordinator's `Provider` trait. It makes a
//! "shadow copy" of a directory by copying its tree into the store during CommitSnapshots.
//!
//! Read it next to docs/protocol.md §7: every method says which step of PROV-SEQ-1 it is and what
//! a real provider would do there instead. The shape to copy is:
//! - one record per shadow copy, whose `state` follows the calls (PROV-ST-1), and a step that
//!   finds a record in the wrong state answers VSS_E_BAD_STATE;
//! - long work out of the freeze window: a snapshotting provider does it in EndPrepareSnapshots
//!   and keeps CommitSnapshots short; this one cannot, see [`CopyProvider::commit_snapshots`];
//! - abort and delete succeed when repeated (docs/protocol.md §7.2);
//! - finished shadow copies are written to a file, so that they are still listed, and can be
//!   deleted, after the plug-in restarts.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shadowcopy_coordinator::{
    DeleteTarget, Provider, ProviderError, ProviderInfo, SnapshotRecord, VolumeSupport,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{
    ProviderType, SnapshotAttributes, SnapshotContext, SnapshotState,
};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{Guid, SnapshotId, SnapshotSetId, VssTimestamp};

use crate::tree;

/// The provider's id. Every provider has its own, fixed by its author, so that shadowcopyd and
/// requesters can name it (PROV-SEL-1); generate a new one for your provider.
pub(crate) const PROVIDER_ID: ProviderId =
    ProviderId(Guid::from_u128(0x4d6bdbc7_93cf_4869_9375_a2afb47c4e77));

/// The file in the store that holds the finished shadow copies.
const RECORDS_FILE: &str = "records.json";

/// One shadow copy, as the provider keeps it in memory and in [`RECORDS_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    snapshot_id: SnapshotId,
    set_id: SnapshotSetId,
    /// The volume as shadowcopyd named it, reported back unchanged.
    volume: String,
    /// The same directory, resolved (no symbolic links), which is what is copied.
    source: PathBuf,
    state: SnapshotState,
    attributes: SnapshotAttributes,
    created: VssTimestamp,
}

/// Snapshots directories under `root` by copying them into `store/<snapshot id>/`.
pub(crate) struct CopyProvider {
    /// The only tree this provider copies from (resolved).
    root: PathBuf,
    /// Where the copies and [`RECORDS_FILE`] live (resolved).
    store: PathBuf,
    /// Every shadow copy, finished or in creation.
    records: Mutex<BTreeMap<SnapshotId, Record>>,
    /// Held by whoever writes or removes trees in the store, so that an abort waits for a
    /// cancelled copy to stop before it removes what the copy made.
    tree_lock: Arc<Mutex<()>>,
}

/// Sets a cancel flag when dropped: shadowcopyd cancels a call that runs out of time by dropping
/// it, and the copy running on a blocking thread must then stop too.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The VSS code for a failed copy: a full store is the requester's to fix (BK-SNAP-11).
fn copy_error(error: &io::Error, what: &str) -> ProviderError {
    let code = if error.kind() == io::ErrorKind::StorageFull {
        codes::VSS_E_INSUFFICIENT_STORAGE
    } else {
        codes::VSS_E_UNEXPECTED_PROVIDER_ERROR
    };
    ProviderError::new(code, format!("copy provider: {what}: {error}"))
}

impl CopyProvider {
    /// A provider for `root` keeping its copies in `store`, with the finished shadow copies the
    /// store's [`RECORDS_FILE`] lists.
    ///
    /// Directories in the store that no record names are what a copy left when the plug-in died
    /// in the middle of a set; that set failed in shadowcopyd, so they are removed.
    pub(crate) fn open(root: &Path, store: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let root = root
            .canonicalize()
            .with_context(|| format!("--root {}: cannot resolve it", root.display()))?;
        std::fs::create_dir_all(store)
            .with_context(|| format!("--store {}: cannot create it", store.display()))?;
        let store = store
            .canonicalize()
            .with_context(|| format!("--store {}: cannot resolve it", store.display()))?;
        let path = store.join(RECORDS_FILE);
        let records: Vec<Record> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; move it away to start with no shadow copies",
                    path.display()
                )
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let records: BTreeMap<SnapshotId, Record> = records
            .into_iter()
            .map(|record| (record.snapshot_id, record))
            .collect();
        for entry in std::fs::read_dir(&store)? {
            let entry = entry?;
            let known = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<SnapshotId>().ok())
                .map(|id| records.contains_key(&id));
            if known == Some(false) {
                tracing::info!(path = %entry.path().display(), "removing a copy left by an unfinished set");
                tree::remove_tree(&entry.path())?;
            }
        }
        Ok(CopyProvider {
            root,
            store,
            records: Mutex::new(records),
            tree_lock: Arc::default(),
        })
    }

    /// Where the copy of `snapshot` goes.
    fn copy_path(&self, snapshot: SnapshotId) -> PathBuf {
        self.store.join(snapshot.to_string())
    }

    /// Whether `volume` is a directory this provider can copy, resolved; `Err` says why not and
    /// what would work, as PROV-R-1 asks.
    fn check_volume(&self, volume: &str) -> Result<PathBuf, String> {
        let path = Path::new(volume);
        if !path.is_absolute() {
            return Err(format!(
                "{volume} is not an absolute path; name the directory from /"
            ));
        }
        let source = path
            .canonicalize()
            .map_err(|error| format!("cannot resolve {volume}: {error}"))?;
        if !source.is_dir() {
            return Err(format!("{volume} is not a directory"));
        }
        if !source.starts_with(&self.root) {
            return Err(format!(
                "{volume} is not under {}, the only tree this copy provider serves; start it \
                 with another --root, or use a provider for that filesystem",
                self.root.display()
            ));
        }
        if self.store.starts_with(&source) || source.starts_with(&self.store) {
            return Err(format!(
                "{volume} contains, or lies in, this provider's store {}, which cannot be copied \
                 into itself; choose a --store outside --root",
                self.store.display()
            ));
        }
        Ok(source)
    }

    /// Writes the finished shadow copies to [`RECORDS_FILE`], replacing it in one rename so that a
    /// crash leaves the old file or the new one, never half of one.
    fn save(&self) -> Result<(), ProviderError> {
        let finished: Vec<Record> = lock(&self.records)
            .values()
            .filter(|record| record.state == SnapshotState::Created)
            .cloned()
            .collect();
        let path = self.store.join(RECORDS_FILE);
        let temporary = self.store.join(format!("{RECORDS_FILE}.new"));
        let text = serde_json::to_vec_pretty(&finished).expect("records serialize");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|error| copy_error(&error, &format!("cannot write {}", path.display())))
    }

    /// Moves every record of `set` from `from` to `to` (PROV-ST-1); a set with no records is
    /// VSS_E_OBJECT_NOT_FOUND and a record in another state VSS_E_BAD_STATE (docs/protocol.md §7.4).
    fn advance(
        &self,
        set: SnapshotSetId,
        step: &str,
        from: SnapshotState,
        to: SnapshotState,
    ) -> Result<(), ProviderError> {
        let mut records = lock(&self.records);
        let mut of_set = records
            .values_mut()
            .filter(|record| record.set_id == set)
            .peekable();
        if of_set.peek().is_none() {
            return Err(ProviderError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!("copy provider: {step}: set {set} has no shadow copy here"),
            ));
        }
        let of_set: Vec<&mut Record> = of_set.collect();
        if let Some(wrong) = of_set.iter().find(|record| record.state != from) {
            return Err(ProviderError::new(
                codes::VSS_E_BAD_STATE,
                format!(
                    "copy provider: {step}: the shadow copy of {} in set {set} is {}, not {}",
                    wrong.volume,
                    wrong.state.name(),
                    from.name()
                ),
            ));
        }
        for record in of_set {
            record.state = to;
        }
        Ok(())
    }

    /// Removes the records `doomed` picks and their trees in the store; returns how many.
    async fn remove(&self, doomed: impl Fn(&Record) -> bool) -> Result<usize, ProviderError> {
        let removed: Vec<Record> = {
            let mut records = lock(&self.records);
            let ids: Vec<SnapshotId> = records
                .values()
                .filter(|record| doomed(record))
                .map(|record| record.snapshot_id)
                .collect();
            ids.iter().filter_map(|id| records.remove(id)).collect()
        };
        let paths: Vec<PathBuf> = removed
            .iter()
            .map(|record| self.copy_path(record.snapshot_id))
            .collect();
        let tree_lock = Arc::clone(&self.tree_lock);
        tokio::task::spawn_blocking(move || {
            let _trees = lock(&tree_lock);
            paths.iter().try_for_each(|path| tree::remove_tree(path))
        })
        .await
        .expect("removing trees does not panic")
        .map_err(|error| copy_error(&error, "cannot remove a shadow copy"))?;
        Ok(removed.len())
    }
}

#[async_trait]
impl Provider for CopyProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: PROVIDER_ID,
            name: "copy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // PROV-SEL-1 prefers hardware, then software, then system providers.
            provider_type: ProviderType::Software,
        }
    }

    /// SNAP-2, PROV-R-1: answer from what the volume is, quickly and without side effects; a
    /// volume the provider cannot copy is `Unsupported` with a reason, not an error.
    async fn is_volume_supported(
        &self,
        volume: &str,
        _context: SnapshotContext,
    ) -> Result<VolumeSupport, ProviderError> {
        // Every creation context works: a copy is independent of its source, so it can be
        // persistent, and shadowcopyd itself deletes auto-release copies at release.
        Ok(match self.check_volume(volume) {
            Ok(_) => VolumeSupport::Supported,
            Err(reason) => VolumeSupport::Unsupported { reason },
        })
    }

    /// PROV-SEQ-1 step 1, once per volume. A real provider starts slow preparation here (for
    /// example reserving space) and returns.
    async fn begin_prepare_snapshot(
        &self,
        set: SnapshotSetId,
        snapshot: SnapshotId,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<(), ProviderError> {
        let source = self.check_volume(volume).map_err(|reason| {
            ProviderError::new(codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER, reason)
        })?;
        // PROV-SEQ-2: a set that died before EndPrepareSnapshots is never aborted, so a new set
        // id is the sign to drop its preparations.
        self.remove(|record| {
            record.set_id != set
                && matches!(
                    record.state,
                    SnapshotState::Preparing | SnapshotState::Prepared
                )
        })
        .await?;
        let mut records = lock(&self.records);
        if let Some(existing) = records.get(&snapshot) {
            // §7.2: the same call again (shadowcopyd retried it) prepares nothing twice.
            return if existing.set_id == set && existing.volume == volume {
                Ok(())
            } else {
                Err(ProviderError::new(
                    codes::E_INVALIDARG,
                    format!("copy provider: snapshot id {snapshot} is already in use"),
                ))
            };
        }
        records.insert(
            snapshot,
            Record {
                snapshot_id: snapshot,
                set_id: set,
                volume: volume.to_owned(),
                source,
                state: SnapshotState::Preparing,
                attributes: context.attributes(),
                created: VssTimestamp::default(),
            },
        );
        Ok(())
    }

    /// PROV-SEQ-1 step 2: the last moment for slow work before writers freeze.
    async fn end_prepare_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.advance(
            set,
            "EndPrepareSnapshots",
            SnapshotState::Preparing,
            SnapshotState::Prepared,
        )
    }

    /// PROV-SEQ-1 step 4: writers are frozen; nothing to get ready for a copy.
    async fn pre_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.advance(
            set,
            "PreCommitSnapshots",
            SnapshotState::Prepared,
            SnapshotState::Precommitted,
        )
    }

    /// PROV-SEQ-1 step 6: cuts the shadow copies, here by copying every tree of the set.
    ///
    /// This breaks the rule of PROV-T-1 on purpose, to keep the example small: a snapshot must be
    /// quick and do no I/O to the volumes, and a copy takes as long as the tree is big while
    /// writers stay frozen. shadowcopyd's commit window (10 s at most, CFG-10) bounds it: a copy
    /// that runs over fails the set, which then gets AbortSnapshots. So a copy provider suits
    /// small trees only; real providers cut a snapshot (btrfs, reflinks, LVM) here.
    async fn commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.advance(
            set,
            "CommitSnapshots",
            SnapshotState::Precommitted,
            SnapshotState::ProcessingCommit,
        )?;
        let jobs: Vec<(SnapshotId, PathBuf, PathBuf)> = lock(&self.records)
            .values()
            .filter(|record| record.set_id == set)
            .map(|record| {
                let target = self.copy_path(record.snapshot_id);
                (record.snapshot_id, record.source.clone(), target)
            })
            .collect();
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = Arc::clone(&cancel.0);
        let tree_lock = Arc::clone(&self.tree_lock);
        let copied = tokio::task::spawn_blocking(move || {
            let _trees = lock(&tree_lock);
            for (_, source, target) in &jobs {
                tree::copy_tree(source, target, &flag).map_err(|error| {
                    (
                        error,
                        format!("cannot copy {} into {}", source.display(), target.display()),
                    )
                })?;
            }
            Ok(jobs)
        })
        .await
        .expect("copying does not panic");
        drop(cancel);
        let jobs = match copied {
            Ok(jobs) => jobs,
            // The partial copies stay until AbortSnapshots, which shadowcopyd sends next.
            Err((error, what)) => return Err(copy_error(&error, &what)),
        };
        let now = VssTimestamp::now();
        let mut records = lock(&self.records);
        for (snapshot, _, _) in jobs {
            if let Some(record) = records.get_mut(&snapshot) {
                record.state = SnapshotState::Committed;
                record.created = now;
            }
        }
        Ok(())
    }

    /// PROV-SEQ-1 step 8: writers are still frozen; keep it short.
    async fn post_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.advance(
            set,
            "PostCommitSnapshots",
            SnapshotState::Committed,
            SnapshotState::Postcommitted,
        )
    }

    /// PROV-SEQ-1 step 10: writers have thawed; the copies stay writable for auto-recovery.
    async fn pre_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.advance(
            set,
            "PreFinalCommitSnapshots",
            SnapshotState::Postcommitted,
            SnapshotState::Prefinalcommitted,
        )
    }

    /// PROV-SEQ-1 step 12: makes the copies read-only, marks them created and records them.
    async fn post_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.advance(
            set,
            "PostFinalCommitSnapshots",
            SnapshotState::Prefinalcommitted,
            SnapshotState::ProcessingPostfinalcommit,
        )?;
        let paths: Vec<PathBuf> = lock(&self.records)
            .values()
            .filter(|record| record.set_id == set)
            .map(|record| self.copy_path(record.snapshot_id))
            .collect();
        tokio::task::spawn_blocking(move || {
            paths.iter().try_for_each(|path| tree::make_read_only(path))
        })
        .await
        .expect("chmod does not panic")
        .map_err(|error| copy_error(&error, "cannot make the copy read-only"))?;
        self.advance(
            set,
            "PostFinalCommitSnapshots",
            SnapshotState::ProcessingPostfinalcommit,
            SnapshotState::Created,
        )?;
        self.save()
    }

    /// Drops every unfinished shadow copy of the set. Succeeds for a set it does not know, and
    /// when called again (docs/protocol.md §7.2).
    async fn abort_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.remove(|record| record.set_id == set && record.state != SnapshotState::Created)
            .await
            .map(drop)
    }

    /// DEL-1: deletes one shadow copy or a whole set; an unknown shadow copy is
    /// VSS_E_OBJECT_NOT_FOUND, a set with nothing left deletes nothing.
    async fn delete_snapshots(&self, target: DeleteTarget) -> Result<usize, ProviderError> {
        let deleted = match target {
            DeleteTarget::Snapshot(id) => {
                let deleted = self.remove(|record| record.snapshot_id == id).await?;
                if deleted == 0 {
                    return Err(ProviderError::new(
                        codes::VSS_E_OBJECT_NOT_FOUND,
                        format!("copy provider has no shadow copy {id}"),
                    ));
                }
                deleted
            }
            DeleteTarget::Set(set) => self.remove(|record| record.set_id == set).await?,
        };
        self.save()?;
        Ok(deleted)
    }

    /// SNAP-2: every shadow copy, finished or in creation.
    async fn query_snapshots(&self) -> Result<Vec<SnapshotRecord>, ProviderError> {
        Ok(lock(&self.records)
            .values()
            .map(|record| SnapshotRecord {
                snapshot_id: record.snapshot_id,
                set_id: record.set_id,
                volume: record.volume.clone(),
                snapshot_path: matches!(
                    record.state,
                    SnapshotState::Committed
                        | SnapshotState::Postcommitted
                        | SnapshotState::Prefinalcommitted
                        | SnapshotState::ProcessingPostfinalcommit
                        | SnapshotState::Created
                )
                .then(|| self.copy_path(record.snapshot_id).display().to_string()),
                state: record.state,
                attributes: record.attributes,
                created: record.created,
                provider_id: PROVIDER_ID,
            })
            .collect())
    }
}
