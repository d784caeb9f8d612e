//! `BtrfsProvider`: shadow copies of btrfs subvolumes as read-only btrfs snapshots, made with the
//! snapshot ioctl (a software provider, PROV-1; architecture intent §3; platform facts §2).
//!
//! A set, step by step (PROV-SEQ-1), with the states of PROV-ST-1:
//! - `is_volume_supported` and `begin_prepare_snapshot`: the volume must be the root of a btrfs
//!   subvolume (statfs f_type BTRFS_SUPER_MAGIC, inode 256) on a read-write mount, and its snapshot
//!   directory must be on the same btrfs; otherwise the answer says why and what would work
//!   (PROV-R-1). Beginning a new set discards stale preparation of an older one (PROV-SEQ-2).
//! - `end_prepare_snapshots` creates the snapshot directory, opens the volume and the directory,
//!   and runs syncfs(2) on each volume. The snapshot ioctl flushes the subvolume's dirty data
//!   itself, inside the writers' freeze window: 36 ms with 8 MiB dirty against about 2 ms clean,
//!   0.8 s with 256 MiB (platform facts §2). EndPrepare runs before the writers freeze, so syncing
//!   here keeps that window short (PROV-T-1: do the extra work before PreCommit).
//! - `commit_snapshots` makes one BTRFS_IOC_SNAP_CREATE_V2 with BTRFS_SUBVOL_RDONLY per volume,
//!   one after another: no API snapshots several subvolumes in one transaction, so consistency
//!   across volumes comes from the writers, who are frozen meanwhile (architecture intent §3). The
//!   step logs nothing and does no other I/O (PROV-T-1). Each ioctl runs on a blocking thread, so
//!   the coordinator's commit window can still give up on it; a snapshot that appears after the
//!   set was aborted is deleted by that thread (a snapshot blocked on a frozen btrfs is created
//!   anyway once the file system thaws, platform facts §2).
//! - The provider never freezes a btrfs (FIFREEZE): the snapshot ioctl would block, uninterruptibly,
//!   until someone thaws it.
//! - The snapshots are read-only from their first moment, so there is no auto-recovery window
//!   (CTX-7): records carry NO_AUTORECOVERY, and PreFinalCommit and PostFinalCommit only advance
//!   the states. They are copy-on-write, so records also carry DIFFERENTIAL (CTX-8: the provider
//!   picks the method when none is requested).
//! - `abort_snapshots` deletes every snapshot of the set that is not CREATED; `delete_snapshots`
//!   deletes by snapshot or set (DEL-1); `query_snapshots` lists them with `snapshot_path`, the
//!   read-only snapshot directory where requesters read the files (BK-COPY-1).
//!
//! The index of snapshots is in memory; with [`BtrfsProvider::with_catalog`] it is also kept in a
//! catalog file (`crate::catalog`), so that a restarted daemon finds its persistent copies again
//! (CTX-2). The catalog is written at EndPrepareSnapshots (state PREPARED: a write-ahead intent,
//! before the writers freeze, so that a crash during the commit leaves a trace of the snapshot it
//! may have made), at PostFinalCommitSnapshots (CREATED), and when copies are deleted or aborted;
//! never between PreCommit and PostCommit, while writers are frozen (PROV-T-1). At start-up the
//! persistent CREATED copies are reinstated, and every other entry (an auto-release copy whose
//! session died with the process, a set cut short) is deleted from disk and from the catalog.
//! A catalog write that fails at EndPrepare fails the set before anything is made; one that fails
//! at PostFinalCommit fails the step, and the states go back so that the coordinator's abort
//! deletes the copies: a copy the catalog does not know as CREATED would be deleted as an orphan
//! at the next start, so it is better not to hand it to the requester. A failed removal from the
//! catalog after a deletion is only logged: the next start finds the data gone and drops the
//! entry.
//!
//! `revert_to_snapshot` rolls a volume back to one of its persistent snapshots in place (REV-1;
//! see `revert` for how, and what it leaves alone). With a catalog, a marker is stored before the
//! volume is touched and cleared after, and `with_catalog` redoes a revert that a crash cut short.
//!
//! The client-accessible contexts (CTX-1: "previous versions", for the system provider only) are
//! served too: for btrfs volumes this built-in provider is the platform's own, and the daemon
//! shows these copies to SMB clients as Previous Versions (`docs/previous-versions.md`).
//!
//! Snapshots are named by their snapshot id, in `<volume>/.shadowcopy/` by default
//! ([`SnapshotDir`]), which is created with mode 0700 so that only root can browse the copies
//! (SNAP-3: shadow copies are not surfaced to users by default).

pub(crate) mod ioctl;
mod revert;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::statfs::{BTRFS_SUPER_MAGIC, statfs};
use nix::sys::statvfs::{FsFlags, statvfs};
use shadowcopy_coordinator::{
    DeleteTarget, Provider, ProviderError, ProviderInfo, ProviderStep, SnapshotRecord,
    VolumeSupport,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ProviderType, SnapshotContext, SnapshotState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, VssTimestamp};

use crate::catalog::{Catalog, CatalogEntry, RecoveryReport, RevertMarker};
use crate::common::{self, Store, Tracked, lock};

/// This provider's name in messages.
const PROVIDER: &str = "btrfs";

/// The btrfs provider's fixed id (SNAP-2: providers are listed and chosen by id).
pub const BTRFS_PROVIDER_ID: ProviderId = ProviderId(uuid::Uuid::from_u128(
    0x30401de5_983a_46fd_9ceb_af8edf8cd8ff,
));

/// The btrfs provider's name.
pub const BTRFS_PROVIDER_NAME: &str = "btrfs";

/// The default snapshot directory, relative to each volume.
pub const DEFAULT_SNAPSHOT_DIR: &str = ".shadowcopy";

/// The most software shadow copies of one volume (LIMIT-2).
pub const MAX_SNAPSHOTS_PER_VOLUME: usize = 512;

/// Where the snapshots of a volume go. It must be on the same btrfs file system as the volume,
/// because a btrfs snapshot cannot leave its file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotDir {
    /// A directory inside each volume, given relative to the volume's root (the default:
    /// `.shadowcopy`). Snapshots of the volume then contain this directory, empty.
    InVolume(PathBuf),
    /// One absolute directory for every volume (for subvolumes of one file system).
    Fixed(PathBuf),
}

impl Default for SnapshotDir {
    fn default() -> Self {
        SnapshotDir::InVolume(PathBuf::from(DEFAULT_SNAPSHOT_DIR))
    }
}

/// The btrfs provider. See the module documentation for how it makes a set.
#[derive(Debug)]
pub struct BtrfsProvider {
    info: ProviderInfo,
    snapshot_dir: SnapshotDir,
    /// The index, and the catalog when [`BtrfsProvider::with_catalog`] was used.
    store: Store<Entry, Busy>,
    /// What `with_catalog` found.
    recovered: RecoveryReport,
}

/// Every snapshot this provider knows of, by id, with the order in which volumes were added.
type Index = common::Index<Entry, Busy>;

/// What runs on the snapshots, kept under the index's lock.
#[derive(Debug, Default)]
struct Busy {
    /// Snapshot ioctls running on blocking threads, including ones whose commit was given up.
    commits_in_flight: usize,
    /// Volumes being reverted (REV-1).
    reverting: BTreeSet<String>,
}

/// One shadow copy: its record and what the provider needs to make and delete it.
#[derive(Debug)]
struct Entry {
    record: SnapshotRecord,
    /// The order the volume was added in; commits follow it.
    order: u64,
    /// The volume (the subvolume's root directory).
    source: PathBuf,
    /// The directory the snapshot is made in; its name there is the snapshot id.
    dir: PathBuf,
    /// The volume and snapshot directory, open from EndPrepare until Commit.
    open: Option<OpenVolume>,
    /// The snapshot subvolume exists on disk.
    on_disk: bool,
    /// How long the snapshot ioctl took.
    commit_time: Option<Duration>,
}

#[derive(Debug)]
struct OpenVolume {
    source: File,
    dir: File,
}

impl Entry {
    fn name(&self) -> String {
        self.record.snapshot_id.to_string()
    }

    fn path(&self) -> PathBuf {
        self.dir.join(self.name())
    }
}

impl Default for BtrfsProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl BtrfsProvider {
    /// A provider that puts snapshots in `<volume>/.shadowcopy/`.
    pub fn new() -> Self {
        BtrfsProvider {
            info: ProviderInfo {
                id: BTRFS_PROVIDER_ID,
                name: BTRFS_PROVIDER_NAME.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                provider_type: ProviderType::Software,
            },
            snapshot_dir: SnapshotDir::default(),
            store: Store::default(),
            recovered: RecoveryReport::default(),
        }
    }

    /// Keeps the index in the catalog file `path` as well (see the module documentation), and
    /// recovers what it lists: persistent CREATED copies whose snapshot is still on disk go back
    /// into the index (so that query, delete and expose work after a restart); every other entry
    /// is an orphan, whose snapshot is deleted and which leaves the catalog, each logged with a
    /// warning naming the copy, the volume and why; then unfinished reverts are redone (REV-1).
    /// Call it after [`BtrfsProvider::with_snapshot_dir`]. A catalog that cannot be read or
    /// parsed is an error naming the file, never an empty catalog.
    pub fn with_catalog(mut self, path: &Path) -> Result<Self, ProviderError> {
        let (catalog, mut report) = self.store.open_catalog(path)?;
        for marker in catalog.reverts() {
            let resumed = self.resume_revert(&catalog, &marker);
            match resumed {
                Ok(()) => report.reverts_resumed.push(marker.volume.clone()),
                Err(error) => {
                    tracing::error!(volume = %marker.volume, snapshot = %marker.snapshot_id, "btrfs provider: cannot finish the revert a restart interrupted: {}", error.message);
                    report
                        .reverts_failed
                        .push((marker.volume.clone(), error.message));
                }
            }
        }
        self.recovered = report;
        Ok(self)
    }

    /// What [`BtrfsProvider::with_catalog`] found at start-up.
    pub fn recovered(&self) -> &RecoveryReport {
        &self.recovered
    }

    /// Redoes an interrupted revert from the start (every step of it can run again), forced:
    /// REV-1 says a revert cannot be cancelled, and it was already under way.
    fn resume_revert(&self, catalog: &Catalog, marker: &RevertMarker) -> Result<(), ProviderError> {
        let found = lock(&self.store.index)
            .entries
            .get(&marker.snapshot_id)
            .filter(|e| e.record.state == SnapshotState::Created)
            .map(|e| (e.source.clone(), e.path(), e.dir.clone()));
        let Some((source, location, dir)) = found else {
            // Without its snapshot the revert cannot be finished; the marker is dropped so that
            // it is not retried forever, and the error says what state the volume is in.
            catalog.end_revert(&marker.volume)?;
            return Err(ProviderError::new(
                codes::VSS_E_REVERT_VOLUME_LOST,
                format!(
                    "btrfs provider: the revert of {} to shadow copy {} was interrupted, and that \
                     shadow copy is gone; the volume may be half reverted: restore it from a backup",
                    marker.volume, marker.snapshot_id
                ),
            ));
        };
        tracing::warn!(volume = %marker.volume, snapshot = %marker.snapshot_id, "btrfs provider: redoing a revert that a restart interrupted (REV-1)");
        revert::revert_in_place(
            &marker.volume,
            &source,
            &location,
            top_level_name(&source, &dir).as_deref(),
        )?;
        catalog.end_revert(&marker.volume)
    }

    /// Puts snapshots in `dir` instead. E_INVALIDARG when an in-volume directory is absolute or
    /// climbs out of the volume, or a fixed one is relative.
    pub fn with_snapshot_dir(mut self, dir: SnapshotDir) -> Result<Self, ProviderError> {
        let fine = match &dir {
            SnapshotDir::InVolume(relative) => {
                relative.is_relative()
                    && relative.components().next().is_some()
                    && relative
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
            }
            SnapshotDir::Fixed(absolute) => absolute.is_absolute(),
        };
        if !fine {
            return Err(ProviderError::new(
                codes::E_INVALIDARG,
                format!(
                    "btrfs provider: snapshot directory {dir:?} must be a plain relative path \
                     inside the volume, or an absolute path"
                ),
            ));
        }
        self.snapshot_dir = dir;
        Ok(self)
    }

    /// Where the snapshots of `volume` go.
    pub fn snapshot_dir_for(&self, volume: &str) -> PathBuf {
        match &self.snapshot_dir {
            SnapshotDir::InVolume(relative) => Path::new(volume).join(relative),
            SnapshotDir::Fixed(absolute) => absolute.clone(),
        }
    }

    /// How many snapshot ioctls are still running, including those of a CommitSnapshots the
    /// coordinator gave up on; a host waits for zero before it unmounts anything.
    pub fn commits_in_flight(&self) -> usize {
        lock(&self.store.index).extra.commits_in_flight
    }

    /// How long the snapshot ioctl of `snapshot` took, once it was committed.
    pub fn commit_duration(&self, snapshot: SnapshotId) -> Option<Duration> {
        lock(&self.store.index).entries.get(&snapshot)?.commit_time
    }
}

impl Tracked for Entry {
    const PROVIDER: &'static str = PROVIDER;

    fn record(&self) -> &SnapshotRecord {
        &self.record
    }

    fn record_mut(&mut self) -> &mut SnapshotRecord {
        &mut self.record
    }

    fn order(&self) -> u64 {
        self.order
    }

    fn catalog_entry(&self) -> CatalogEntry {
        CatalogEntry::from_record(&self.record, self.path(), self.source.clone())
    }

    fn from_catalog(stored: &CatalogEntry, order: u64) -> Self {
        Entry {
            record: stored.record(),
            order,
            source: stored.source.clone(),
            dir: stored
                .location
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf(),
            open: None,
            on_disk: true,
            commit_time: None,
        }
    }

    fn delete_data(&mut self) -> Result<(), ProviderError> {
        // Closes the volume and directory if they are still open.
        self.open = None;
        if !self.on_disk {
            // Not made, or its ioctl is still running: that thread finds the entry gone and
            // deletes what it made (see `commit_one`).
            return Ok(());
        }
        destroy(&self.dir, &self.name(), &self.record.volume)?;
        tracing::info!(
            volume = %self.record.volume,
            snapshot = %self.record.snapshot_id,
            path = %self.path().display(),
            "btrfs snapshot deleted"
        );
        Ok(())
    }

    fn delete_orphan(stored: &CatalogEntry) -> Result<(), ProviderError> {
        let dir = stored.location.parent().unwrap_or(Path::new("/"));
        let name = stored
            .location
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        destroy(dir, &name, &stored.volume)
    }
}

/// The name of the top-level entry of `volume` that holds `dir` (the snapshot directory), when
/// `dir` lies inside the volume: a revert leaves it alone.
fn top_level_name(volume: &Path, dir: &Path) -> Option<std::ffi::OsString> {
    match dir.strip_prefix(volume).ok()?.components().next()? {
        std::path::Component::Normal(name) => Some(name.to_os_string()),
        _ => None,
    }
}

#[async_trait]
impl Provider for BtrfsProvider {
    fn info(&self) -> ProviderInfo {
        self.info.clone()
    }

    async fn is_volume_supported(
        &self,
        volume: &str,
        _context: SnapshotContext,
    ) -> Result<VolumeSupport, ProviderError> {
        let (volume, dir) = (PathBuf::from(volume), self.snapshot_dir_for(volume));
        let snapshot_dir = self.snapshot_dir.clone();
        common::blocking(PROVIDER, move || {
            Ok(check_volume(&volume, &dir, &snapshot_dir))
        })
        .await
    }

    async fn begin_prepare_snapshot(
        &self,
        set: SnapshotSetId,
        snapshot: SnapshotId,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<(), ProviderError> {
        let dir = self.snapshot_dir_for(volume);
        let support = {
            let (volume, dir) = (PathBuf::from(volume), dir.clone());
            let snapshot_dir = self.snapshot_dir.clone();
            common::blocking(PROVIDER, move || {
                Ok(check_volume(&volume, &dir, &snapshot_dir))
            })
            .await?
        };
        if let VolumeSupport::Unsupported { reason } = support {
            return Err(ProviderError::new(
                codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
                format!("btrfs provider cannot snapshot {volume}: {reason}"),
            ));
        }
        let mut index = lock(&self.store.index);
        // PROV-SEQ-2: a new set id means any unfinished preparation of another set is stale.
        let before = index.entries.len();
        index.entries.retain(|_, e| {
            e.record.set_id == set
                || !matches!(
                    e.record.state,
                    SnapshotState::Preparing
                        | SnapshotState::ProcessingPrepare
                        | SnapshotState::Prepared
                )
        });
        if index.entries.len() != before {
            tracing::info!(
                discarded = before - index.entries.len(),
                "btrfs provider: discarded stale preparation (PROV-SEQ-2)"
            );
        }
        if index.entries.contains_key(&snapshot) {
            return Err(ProviderError::new(
                codes::E_INVALIDARG,
                format!("btrfs provider: shadow copy {snapshot} of {volume} already exists"),
            ));
        }
        let of_volume = index
            .entries
            .values()
            .filter(|e| e.record.volume == volume)
            .count();
        common::check_room(PROVIDER, volume, of_volume)?;
        let order = index.take_order();
        index.entries.insert(
            snapshot,
            Entry {
                record: common::preparing_record(set, snapshot, volume, context, self.info.id),
                order,
                source: PathBuf::from(volume),
                dir,
                open: None,
                on_disk: false,
                commit_time: None,
            },
        );
        Ok(())
    }

    async fn end_prepare_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        common::fault_point(PROVIDER, "end-prepare").await?;
        let members = self.store.advance(
            set,
            ProviderStep::EndPrepareSnapshots,
            SnapshotState::Preparing,
            SnapshotState::ProcessingPrepare,
        )?;
        for id in members {
            let Some((source, dir, volume)) = lock(&self.store.index)
                .entries
                .get(&id)
                .map(|e| (e.source.clone(), e.dir.clone(), e.record.volume.clone()))
            else {
                // Deleted meanwhile; the set fails at the next step.
                continue;
            };
            let started = Instant::now();
            let open =
                common::blocking(PROVIDER, move || prepare_volume(&source, &dir, &volume)).await?;
            let mut index = lock(&self.store.index);
            if let Some(entry) = index.entries.get_mut(&id)
                && entry.record.state == SnapshotState::ProcessingPrepare
            {
                tracing::info!(volume = %entry.record.volume, sync_ms = started.elapsed().as_secs_f64() * 1e3, "btrfs provider: volume prepared and synced");
                entry.open = Some(open);
                entry.record.state = SnapshotState::Prepared;
            }
        }
        // The write-ahead intent: before the writers freeze, the catalog learns where each
        // snapshot will be, so that one made by a commit a crash cut short is found and deleted at
        // the next start. A failure here fails the set before anything was made.
        self.store.record(set, SnapshotState::Prepared).await
    }

    async fn pre_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        common::fault_point(PROVIDER, "pre-commit").await?;
        // Nothing to do: the volumes were synced before the writers froze.
        self.store
            .advance(
                set,
                ProviderStep::PreCommitSnapshots,
                SnapshotState::Prepared,
                SnapshotState::Precommitted,
            )
            .map(drop)
    }

    async fn commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        // PROV-T-1: nothing here logs or touches the volumes apart from the snapshot ioctl (and
        // the fault point of tests, which does nothing unless a test sets one).
        common::fault_point(PROVIDER, "commit").await?;
        let members = self.store.advance(
            set,
            ProviderStep::CommitSnapshots,
            SnapshotState::Precommitted,
            SnapshotState::Precommitted,
        )?;
        for id in members {
            commit_one(self.store.index.clone(), id).await?;
        }
        Ok(())
    }

    async fn post_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        common::fault_point(PROVIDER, "post-commit").await?;
        self.store
            .advance(
                set,
                ProviderStep::PostCommitSnapshots,
                SnapshotState::Committed,
                SnapshotState::Postcommitted,
            )
            .map(drop)
    }

    async fn pre_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        common::fault_point(PROVIDER, "pre-final-commit").await?;
        let members = self.store.advance(
            set,
            ProviderStep::PreFinalCommitSnapshots,
            SnapshotState::Postcommitted,
            SnapshotState::Prefinalcommitted,
        )?;
        // The writers are thawed now: the commit's figures can be logged.
        let index = lock(&self.store.index);
        for entry in members.iter().filter_map(|id| index.entries.get(id)) {
            tracing::info!(
                volume = %entry.record.volume,
                snapshot = %entry.record.snapshot_id,
                path = %entry.path().display(),
                ioctl_ms = entry.commit_time.unwrap_or_default().as_secs_f64() * 1e3,
                "btrfs snapshot created"
            );
        }
        Ok(())
    }

    async fn post_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        common::fault_point(PROVIDER, "post-final-commit").await?;
        // The snapshots are read-only since their creation; only the catalog is left to update.
        self.store.post_final_commit(set).await
    }

    async fn abort_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.store.abort(set).await
    }

    async fn delete_snapshots(&self, target: DeleteTarget) -> Result<usize, ProviderError> {
        common::fault_point(PROVIDER, "delete").await?;
        self.store.delete(target).await
    }

    async fn query_snapshots(&self) -> Result<Vec<SnapshotRecord>, ProviderError> {
        Ok(self.store.query())
    }

    async fn revert_to_snapshot(
        &self,
        snapshot: SnapshotId,
        force_dismount: bool,
    ) -> Result<(), ProviderError> {
        let (volume, source, location, dir, keep) = {
            let mut index = lock(&self.store.index);
            let Some(entry) = index.entries.get(&snapshot) else {
                return Err(ProviderError::new(
                    codes::VSS_E_OBJECT_NOT_FOUND,
                    format!("btrfs provider has no shadow copy {snapshot} to revert to"),
                ));
            };
            let volume = entry.record.volume.clone();
            if entry.record.state != SnapshotState::Created {
                return Err(ProviderError::new(
                    codes::VSS_E_BAD_STATE,
                    format!(
                        "btrfs provider: shadow copy {snapshot} of {volume} is {}, not CREATED; \
                         only a finished shadow copy can be reverted to",
                        entry.record.state
                    ),
                ));
            }
            if entry.record.is_auto_release() {
                return Err(ProviderError::new(
                    codes::VSS_E_UNSUPPORTED_CONTEXT,
                    format!(
                        "btrfs provider: shadow copy {snapshot} of {volume} is auto-release; only \
                         a persistent shadow copy can be reverted to (REV-1)"
                    ),
                ));
            }
            let found = (
                volume.clone(),
                entry.source.clone(),
                entry.path(),
                entry.dir.clone(),
                top_level_name(&entry.source, &entry.dir),
            );
            if !index.extra.reverting.insert(volume.clone()) {
                return Err(ProviderError::new(
                    codes::VSS_E_REVERT_IN_PROGRESS,
                    format!("btrfs provider: {volume} is being reverted already"),
                ));
            }
            found
        };
        let index = self.store.index.clone();
        let catalog = self.store.catalog.clone();
        // The whole revert runs on one blocking thread, which finishes even if this future is
        // dropped: a revert cannot be cancelled halfway (REV-1).
        common::blocking(PROVIDER, move || {
            let _reverting = Reverting(index, volume.clone());
            if !force_dismount {
                // Reading copies in the snapshot directory does not hold the volume up.
                let users = revert::processes_using(&source, Some(&dir));
                if !users.is_empty() {
                    return Err(revert::in_use_error(&volume, &users));
                }
            }
            if let Some(catalog) = &catalog {
                catalog.begin_revert(RevertMarker {
                    snapshot_id: snapshot,
                    volume: volume.clone(),
                    started: VssTimestamp::now(),
                })?;
            }
            tracing::info!(volume = %volume, %snapshot, force_dismount, "btrfs provider: reverting the volume to its snapshot");
            revert::revert_in_place(&volume, &source, &location, keep.as_deref())?;
            if let Some(catalog) = &catalog
                && let Err(error) = catalog.end_revert(&volume)
            {
                // The volume is reverted; the stale marker only makes the next start redo it.
                tracing::warn!(volume = %volume, "btrfs provider: {}", error.message);
            }
            tracing::info!(volume = %volume, %snapshot, "btrfs provider: volume reverted");
            Ok(())
        })
        .await
    }
}

/// Takes a volume out of `Busy::reverting` when dropped, whatever ended the revert.
struct Reverting(Arc<Mutex<Index>>, String);

impl Drop for Reverting {
    fn drop(&mut self) {
        lock(&self.0).extra.reverting.remove(&self.1);
    }
}

/// Makes the snapshot of one prepared volume. The ioctl runs on a blocking thread that records
/// the outcome itself, so that it is right even when this future is dropped (the coordinator's
/// commit window ran out): if the entry was aborted or deleted meanwhile, the thread deletes the
/// snapshot it made.
async fn commit_one(index: Arc<Mutex<Index>>, id: SnapshotId) -> Result<(), ProviderError> {
    let Some((open, name, source, dir, volume)) = ({
        let mut guard = lock(&index);
        guard.entries.get_mut(&id).map(|entry| {
            entry.record.state = SnapshotState::ProcessingCommit;
            (
                entry.open.take(),
                entry.name(),
                entry.source.clone(),
                entry.dir.clone(),
                entry.record.volume.clone(),
            )
        })
    }) else {
        return Err(ProviderError::new(
            codes::VSS_E_BAD_STATE,
            format!("btrfs provider: shadow copy {id} was deleted during CommitSnapshots"),
        ));
    };
    let Some(open) = open else {
        return Err(ProviderError::new(
            codes::VSS_E_BAD_STATE,
            format!(
                "btrfs provider: {volume} was not prepared (EndPrepareSnapshots did not open it)"
            ),
        ));
    };
    let target = dir.join(&name);
    lock(&index).extra.commits_in_flight += 1;
    let in_flight = InFlight(index.clone());
    common::blocking(PROVIDER, move || {
        // Counts down when the thread is done, whatever happened to the future that started it.
        let _in_flight = in_flight;
        let started = Instant::now();
        let made = ioctl::snapshot_create(&open.dir, &open.source, &name, true);
        let took = started.elapsed();
        if let Err(errno) = made {
            return Err(syscall_error(
                errno,
                &format!(
                    "BTRFS_IOC_SNAP_CREATE_V2 (read-only snapshot of {} as {})",
                    source.display(),
                    target.display()
                ),
                &volume,
            ));
        }
        let mut guard = lock(&index);
        match guard.entries.get_mut(&id) {
            Some(entry) if entry.record.state == SnapshotState::ProcessingCommit => {
                entry.on_disk = true;
                entry.commit_time = Some(took);
                entry.record.state = SnapshotState::Committed;
                entry.record.created = VssTimestamp::now();
                entry.record.snapshot_path = Some(target.to_string_lossy().into_owned());
                Ok(())
            }
            _ => {
                drop(guard);
                // Aborted or deleted while the ioctl ran: this snapshot must not survive.
                let cleanup = ioctl::snapshot_destroy(&open.dir, &name);
                tracing::warn!(
                    volume = %volume,
                    path = %target.display(),
                    ?cleanup,
                    "btrfs snapshot completed after its set was aborted; deleted it"
                );
                Err(ProviderError::new(
                    codes::VSS_E_BAD_STATE,
                    format!(
                        "btrfs provider: the snapshot of {volume} completed after its set was \
                         aborted and was deleted again"
                    ),
                ))
            }
        }
    })
    .await
}

/// One running snapshot ioctl in `Busy::commits_in_flight`, until dropped.
struct InFlight(Arc<Mutex<Index>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).extra.commits_in_flight -= 1;
    }
}

/// EndPrepare work for one volume: create the snapshot directory (mode 0700), open the volume
/// and the directory, check that both are on one btrfs, and syncfs(2) the volume.
fn prepare_volume(source: &Path, dir: &Path, volume: &str) -> Result<OpenVolume, ProviderError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error(e, &format!("mkdir(2) of {}", dir.display()), volume))?;
    let open_dir = |path: &Path| {
        File::open(path).map_err(|e| io_error(e, &format!("open(2) of {}", path.display()), volume))
    };
    let source_file = open_dir(source)?;
    let dir_file = open_dir(dir)?;
    let fsid = |file: &File, path: &Path| {
        ioctl::filesystem_id(file).map_err(|errno| {
            syscall_error(
                errno,
                &format!("BTRFS_IOC_FS_INFO on {}", path.display()),
                volume,
            )
        })
    };
    if fsid(&source_file, source)? != fsid(&dir_file, dir)? {
        return Err(ProviderError::new(
            codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
            format!(
                "btrfs provider cannot snapshot {volume}: its snapshot directory {} is on another \
                 btrfs file system; a snapshot cannot leave its file system",
                dir.display()
            ),
        ));
    }
    nix::unistd::syncfs(&source_file)
        .map_err(|errno| syscall_error(errno, &format!("syncfs(2) of {volume}"), volume))?;
    Ok(OpenVolume {
        source: source_file,
        dir: dir_file,
    })
}

/// Deletes the snapshot `dir/name` of `volume`. One that is already gone counts as deleted.
fn destroy(dir: &Path, name: &str, volume: &str) -> Result<(), ProviderError> {
    let parent = match File::open(dir) {
        Ok(parent) => parent,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(io_error(
                error,
                &format!("open(2) of {}", dir.display()),
                volume,
            ));
        }
    };
    match ioctl::snapshot_destroy(&parent, name) {
        Ok(()) => Ok(()),
        Err(Errno::ENOENT) => {
            tracing::warn!(volume, path = %dir.join(name).display(), "btrfs snapshot was already gone");
            Ok(())
        }
        Err(errno) => Err(syscall_error(
            errno,
            &format!("BTRFS_IOC_SNAP_DESTROY_V2 of {}", dir.join(name).display()),
            volume,
        )),
    }
}

/// Whether the provider can snapshot `volume` (PROV-R-1), and if not, why and what would work.
///
/// In every context, the client-accessible ones included: CTX-1 reserves those for the system
/// provider, and on btrfs this provider is that, the one built into the platform; its read-only
/// snapshots are what Previous Versions shows (docs/previous-versions.md).
fn check_volume(volume: &Path, dir: &Path, snapshot_dir: &SnapshotDir) -> VolumeSupport {
    let shown = volume.display();
    let unsupported = |reason: String| VolumeSupport::Unsupported { reason };
    if !volume.is_absolute() {
        return unsupported(format!("{shown} is not an absolute path"));
    }
    let magic = match statfs(volume) {
        Ok(stats) => stats.filesystem_type(),
        Err(errno) => return unsupported(format!("statfs(2) of {shown} failed: {errno}")),
    };
    if magic != BTRFS_SUPER_MAGIC {
        let raw = magic.0 as u64;
        return unsupported(format!(
            "{shown} is on {} (statfs f_type {raw:#x}), not btrfs; {}",
            common::fs_name(raw),
            not_btrfs_hint(raw)
        ));
    }
    let metadata = match std::fs::metadata(volume) {
        Ok(metadata) => metadata,
        Err(error) => return unsupported(format!("stat(2) of {shown} failed: {error}")),
    };
    if !metadata.is_dir() {
        return unsupported(format!(
            "{shown} is not a directory; add the root of a btrfs subvolume (a mount point or a \
             directory made with `btrfs subvolume create`)"
        ));
    }
    if metadata.ino() != ioctl::SUBVOLUME_ROOT_INODE {
        let holder = containing_subvolume(volume)
            .map(|root| format!(" (it lies in the subvolume at {})", root.display()))
            .unwrap_or_default();
        return unsupported(format!(
            "{shown} is a directory inside a btrfs subvolume (inode {}), not the root of a \
             subvolume (inode 256){holder}; add that subvolume's root instead, or make the data \
             a subvolume of its own with `btrfs subvolume create`",
            metadata.ino()
        ));
    }
    match statvfs(volume) {
        Ok(stats) if stats.flags().contains(FsFlags::ST_RDONLY) => {
            return unsupported(format!(
                "{shown} is mounted read-only, and a snapshot needs write access to its \
                 directory; remount it read-write"
            ));
        }
        Ok(_) => {}
        Err(errno) => return unsupported(format!("statvfs(2) of {shown} failed: {errno}")),
    }
    let source = match File::open(volume) {
        Ok(file) => file,
        Err(error) => return unsupported(format!("open(2) of {shown} failed: {error}")),
    };
    if matches!(snapshot_dir, SnapshotDir::InVolume(_))
        && ioctl::subvolume_read_only(&source).unwrap_or(false)
    {
        return unsupported(format!(
            "{shown} is a read-only subvolume (a snapshot?), so no snapshot directory can be \
             created inside it; configure a snapshot directory elsewhere on the same file system"
        ));
    }
    // The snapshot directory, or the nearest ancestor that exists yet, must be on this btrfs.
    let Some(existing) = dir.ancestors().find(|p| p.exists()) else {
        return unsupported(format!("no part of {} exists", dir.display()));
    };
    if existing == dir && !dir.is_dir() {
        return unsupported(format!(
            "the snapshot directory {} exists but is not a directory",
            dir.display()
        ));
    }
    let same_fs = File::open(existing)
        .ok()
        .and_then(|d| ioctl::filesystem_id(&d).ok())
        .zip(ioctl::filesystem_id(&source).ok())
        .is_some_and(|(a, b)| a == b);
    if !same_fs {
        return unsupported(format!(
            "the snapshot directory {} is not on the same btrfs file system as {shown}, and a \
             snapshot cannot leave its file system; configure a snapshot directory on it",
            dir.display()
        ));
    }
    VolumeSupport::Supported
}

/// The root of the subvolume that holds `path`: btrfs gives each subvolume a device number of
/// its own, so it is the highest ancestor with the same one.
fn containing_subvolume(path: &Path) -> Option<PathBuf> {
    let path = path.canonicalize().ok()?;
    let dev = std::fs::metadata(&path).ok()?.dev();
    let mut root = path.clone();
    for ancestor in path.ancestors().skip(1) {
        match std::fs::metadata(ancestor) {
            Ok(metadata) if metadata.dev() == dev => root = ancestor.to_path_buf(),
            _ => break,
        }
    }
    Some(root)
}

/// What would work instead, for a volume that is not on btrfs (architecture intent §3).
fn not_btrfs_hint(magic: u64) -> &'static str {
    match magic {
        0xEF53 => {
            "ext4 has neither snapshots nor reflinks, so it cannot be shadow-copied in place: \
             keep the data on a btrfs subvolume, or in a file-system image on a reflink-capable \
             file system"
        }
        0x5846_5342 => {
            "xfs has reflinks but no snapshots: this provider needs a btrfs subvolume; a reflink \
             file-set provider can copy xfs data"
        }
        _ => {
            "the btrfs provider snapshots btrfs subvolumes only: keep the data on a btrfs subvolume"
        }
    }
}

/// A failed syscall as this provider's error (`common::syscall_error`).
fn syscall_error(errno: Errno, call: &str, volume: &str) -> ProviderError {
    common::syscall_error(PROVIDER, errno, call, volume)
}

/// A failed I/O call as this provider's error (`common::io_error`).
fn io_error(error: std::io::Error, call: &str, volume: &str) -> ProviderError {
    common::io_error(PROVIDER, error, call, volume)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::code_for;

    /// PROV-R-3: ENOSPC is VSS_E_INSUFFICIENT_STORAGE, other failures are
    /// unexpected provider errors, and the message names the call and the volume.
    #[test]
    fn errno_maps_to_vss_codes() {
        let error = syscall_error(Errno::ENOSPC, "BTRFS_IOC_SNAP_CREATE_V2", "/srv/a");
        assert_eq!(error.code, codes::VSS_E_INSUFFICIENT_STORAGE);
        assert!(error.message.contains("/srv/a"), "{}", error.message);
        assert!(error.message.contains("BTRFS_IOC_SNAP_CREATE_V2"));
        assert!(error.message.contains("ENOSPC"));
        assert_eq!(
            code_for(Errno::EEXIST),
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR
        );
        assert_eq!(code_for(Errno::EDQUOT), codes::VSS_E_INSUFFICIENT_STORAGE);
        assert_eq!(code_for(Errno::EPERM), codes::E_ACCESSDENIED);
    }

    #[test]
    fn snapshot_directories_are_checked() {
        let provider = BtrfsProvider::new();
        assert_eq!(
            provider.snapshot_dir_for("/srv/a"),
            PathBuf::from("/srv/a/.shadowcopy")
        );
        for bad in [
            SnapshotDir::InVolume("/abs".into()),
            SnapshotDir::InVolume("../out".into()),
            SnapshotDir::InVolume("".into()),
            SnapshotDir::Fixed("relative".into()),
        ] {
            let err = BtrfsProvider::new().with_snapshot_dir(bad).unwrap_err();
            assert_eq!(err.code, codes::E_INVALIDARG);
        }
        let fixed = BtrfsProvider::new()
            .with_snapshot_dir(SnapshotDir::Fixed("/pool/snaps".into()))
            .unwrap();
        assert_eq!(
            fixed.snapshot_dir_for("/pool/a"),
            PathBuf::from("/pool/snaps")
        );
    }

    /// The provider's identity is fixed (SNAP-2).
    #[test]
    fn info_is_fixed() {
        let info = BtrfsProvider::new().info();
        assert_eq!(info.id, BTRFS_PROVIDER_ID);
        assert_eq!(info.name, "btrfs");
        assert_eq!(info.provider_type, ProviderType::Software);
    }

    /// Not-btrfs paths are refused with a reason, and nothing is created for them.
    #[tokio::test]
    async fn a_path_off_btrfs_is_unsupported() {
        let provider = BtrfsProvider::new();
        let support = provider
            .is_volume_supported("/proc", SnapshotContext::Backup)
            .await
            .unwrap();
        let VolumeSupport::Unsupported { reason } = support else {
            panic!("/proc is not btrfs");
        };
        assert!(reason.contains("procfs"), "{reason}");
        let missing = provider
            .is_volume_supported("/nonexistent/volume", SnapshotContext::Backup)
            .await
            .unwrap();
        assert!(
            matches!(missing, VolumeSupport::Unsupported { reason } if reason.contains("ENOENT"))
        );
    }
}
