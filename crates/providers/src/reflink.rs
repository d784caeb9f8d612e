//! `ReflinkProvider`: shadow copies of directory trees on file systems with reflinks (xfs made
//! with reflink=1, btrfs), as a tree of FICLONE clones of their files made while the writers are
//! frozen: the reflink file-set provider of architecture intent §3 (platform facts §2, "Reflink
//! copies of the 10k-file tree").
//!
//! A "volume" of this provider is a directory (an absolute path, not necessarily a mount point).
//! A set, step by step (PROV-SEQ-1), with the states of PROV-ST-1:
//! - `is_volume_supported` and `begin_prepare_snapshot`: the volume must be a directory on xfs or
//!   btrfs (statfs magic) on a read-write mount; a probe FICLONE between two unnamed O_TMPFILE
//!   files, one in the volume and one in the copy area, proves that the file system clones and
//!   that the copy area is on it (an xfs made with reflink=0 fails with EOPNOTSUPP, a copy area on
//!   another file system with EXDEV); the unnamed files vanish when closed, so the probe leaves
//!   nothing behind. A volume that contains the copy area, or lies inside it, is refused, and so
//!   are the client-accessible contexts (CTX-1, PROV-R-1). A btrfs subvolume root is supported
//!   too: the daemon registers the btrfs provider first, so it wins there (PROV-SEL-1). Beginning
//!   a new set discards stale preparation of an older one and deletes its copy (PROV-SEQ-2).
//! - `end_prepare_snapshots` creates the copy directory `<copy area>/<snapshot id>` (mode 0700),
//!   walks the volume and pre-creates its directory skeleton, so that the commit only clones, and
//!   runs syncfs(2) on the volume, so that FICLONE inside the freeze finds no dirty data to flush
//!   (PROV-T-1: do the extra work before PreCommit).
//! - `commit_snapshots` (writers are frozen) walks the tree again and FICLONEs every regular file
//!   into the copy, creates the directories that appeared meanwhile and removes skeleton
//!   directories that went away, copies symbolic links, and keeps mode, owner and timestamps of
//!   files, links and directories. Sockets, FIFOs and device nodes are skipped (listed in the log
//!   once, after thaw); so are mount points and nested btrfs subvolumes inside the tree (another
//!   file system: add it as a volume of its own), which appear as empty directories, as in a
//!   btrfs snapshot. Hard links become separate clones; extended attributes and ACLs are not
//!   copied.
//! - **This is the one provider whose commit is proportional to the number of files** (about
//!   0.5–0.8 s per 10,000 files, platform facts §2): it is not one atomic operation and cannot run
//!   under FIFREEZE (it creates files), so its consistency comes from the writers' freeze, and its
//!   commit does synchronous I/O on the volume, which PROV-T-1 otherwise forbids. It runs on the
//!   blocking pool (`common::blocking`), so the coordinator's 10 s commit window still applies: a
//!   commit the coordinator gives up on is cancelled (checked before every entry) and its partial
//!   copy deleted by the thread that made it. [`ReflinkProvider::copy_stats`] tells how many
//!   entries a commit copied and how long it took.
//! - `post_final_commit_snapshots` makes the copy read-only in the sense available: its root
//!   becomes mode 0500 (the copy area stays 0700, SNAP-3); exposure bind-mounts it read-only
//!   (EXP-4). Records carry NO_AUTORECOVERY (a copy is never written for auto-recovery, CTX-7)
//!   and DIFFERENTIAL (the clones share extents copy-on-write, CTX-8).
//! - `abort_snapshots` deletes every copy of the set that is not CREATED; `delete_snapshots`
//!   deletes by snapshot or set (DEL-1); `query_snapshots` lists them with `snapshot_path`, the
//!   copy directory: the file `<volume>/x` is at `<snapshot_path>/x` (BK-COPY-1).
//!
//! Copies live on the file system of their volume, because a reflink cannot cross file systems:
//! in `<mount root of the volume's file system>/.shadowcopy-files/` by default (created with mode
//! 0700, so that only root can browse the copies, SNAP-3), or in one absolute directory for every
//! volume ([`ReflinkProvider::with_copy_root`]).
//!
//! The index is in memory; with [`ReflinkProvider::with_catalog`] it is also kept in a catalog
//! file (`crate::catalog`), as in the btrfs provider: written at EndPrepareSnapshots (PREPARED, a
//! write-ahead intent before the writers freeze), at PostFinalCommitSnapshots (CREATED) and when
//! copies are deleted or aborted, never between PreCommit and PostCommit (PROV-T-1). At start-up
//! persistent CREATED copies whose directory still exists are reinstated; every other entry is an
//! orphan whose copy is deleted. A catalog write that fails at PostFinalCommit fails the step and
//! puts the states back, so that the coordinator's abort deletes the copies.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat,
    futimens, mkdirat, utimensat,
};
use nix::sys::statfs::{BTRFS_SUPER_MAGIC, XFS_SUPER_MAGIC, statfs};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, symlinkat, unlinkat};
use shadowcopy_coordinator::{
    DeleteTarget, Provider, ProviderError, ProviderInfo, ProviderStep, SnapshotRecord,
    VolumeSupport,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ProviderType, SnapshotContext, SnapshotState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, VssTimestamp};

use crate::catalog::{CatalogEntry, RecoveryReport};
use crate::common::{self, Store, Tracked, lock, unescape_mountinfo};
use crate::loop_image::ioctl;

/// This provider's name in messages.
const PROVIDER: &str = "reflink";

/// The reflink provider's fixed id (SNAP-2).
pub const REFLINK_PROVIDER_ID: ProviderId = ProviderId(uuid::Uuid::from_u128(
    0x9b2e_47d1_0c6a_4f38_b5e9_73a1_d48c_2e16,
));

/// The reflink provider's name.
pub const REFLINK_PROVIDER_NAME: &str = "reflink";

/// The default copy area, relative to the mount root of each volume's file system.
pub const DEFAULT_COPY_AREA: &str = ".shadowcopy-files";

/// The copy root's mode while it is built (only root may enter, SNAP-3).
const BUILDING_MODE: u32 = 0o700;

/// The copy root's mode once it is created: read-only, for root (PostFinalCommit).
const CREATED_MODE: u32 = 0o500;

/// What one CommitSnapshots copied. The commit is proportional to the number of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files cloned with FICLONE.
    pub files: u64,
    /// Directories copied (the root not counted).
    pub directories: u64,
    /// Symbolic links copied.
    pub symlinks: u64,
    /// The size of the cloned files; shared with the volume, not written.
    pub bytes: u64,
    /// Entries not copied, relative to the volume, with the reason: sockets, FIFOs, device nodes,
    /// other file systems.
    pub skipped: Vec<(PathBuf, &'static str)>,
    /// How long the clone walk took (inside the writers' freeze).
    pub took: Duration,
}

/// The reflink file-set provider. See the module documentation for how it makes a set.
#[derive(Debug)]
pub struct ReflinkProvider {
    info: ProviderInfo,
    /// One copy area for every volume; `None`: `<mount root>/.shadowcopy-files`.
    copy_root: Option<PathBuf>,
    /// The index, and the catalog when [`ReflinkProvider::with_catalog`] was used.
    store: Store<Entry, Busy>,
    /// What `with_catalog` found.
    recovered: RecoveryReport,
}

/// Every copy this provider knows of, by id, with the order in which volumes were added.
type Index = common::Index<Entry, Busy>;

/// What runs on the copies, kept under the index's lock.
#[derive(Debug, Default)]
struct Busy {
    /// Blocking jobs (skeleton or clone walks) still running, including given-up ones.
    jobs_in_flight: usize,
}

#[derive(Debug)]
struct Entry {
    record: SnapshotRecord,
    order: u64,
    /// The volume, canonical.
    source: PathBuf,
    /// The copy area; the copy is `<area>/<snapshot id>`.
    area: PathBuf,
    /// The volume and the copy root, open from EndPrepare until Commit.
    open: Option<OpenCopy>,
    /// The directories EndPrepare created in the copy, relative, parents first.
    skeleton: Vec<PathBuf>,
    /// The copy directory exists on disk.
    on_disk: bool,
    /// A blocking job works on the copy; storing `true` cancels it, and it then deletes the copy
    /// itself if the entry is gone.
    job: Option<Arc<AtomicBool>>,
    /// What the commit copied.
    stats: Option<CopyStats>,
}

#[derive(Debug)]
struct OpenCopy {
    source: OwnedFd,
    copy: OwnedFd,
}

impl Entry {
    fn copy(&self) -> PathBuf {
        self.area.join(self.record.snapshot_id.to_string())
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
        CatalogEntry::from_record(&self.record, self.copy(), self.source.clone())
    }

    fn from_catalog(stored: &CatalogEntry, order: u64) -> Self {
        Entry {
            record: stored.record(),
            order,
            source: stored.source.clone(),
            area: stored
                .location
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf(),
            open: None,
            skeleton: Vec::new(),
            on_disk: true,
            job: None,
            stats: None,
        }
    }

    /// A copy a blocking job still works on is left to that job, which is cancelled and deletes
    /// it when it finds its entry gone.
    fn delete_data(&mut self) -> Result<(), ProviderError> {
        self.open = None;
        if let Some(cancel) = &self.job {
            cancel.store(true, Ordering::SeqCst);
            return Ok(());
        }
        if !self.on_disk {
            return Ok(());
        }
        let copy = self.copy();
        delete_copy(&copy).map_err(|error| {
            io_error(
                error,
                &format!("deleting the copy {}", copy.display()),
                &self.record.volume,
            )
        })?;
        tracing::info!(volume = %self.record.volume, copy = %copy.display(), "reflink shadow copy deleted");
        Ok(())
    }

    fn delete_orphan(stored: &CatalogEntry) -> Result<(), ProviderError> {
        delete_copy(&stored.location).map_err(|error| {
            io_error(
                error,
                &format!("deleting the orphaned copy {}", stored.location.display()),
                &stored.volume,
            )
        })
    }
}

/// What the checks found out about a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    /// The volume, canonical.
    source: PathBuf,
    /// Its copy area.
    area: PathBuf,
}

impl Default for ReflinkProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl ReflinkProvider {
    /// A provider that puts the copies in `<mount root>/.shadowcopy-files/` of each volume's file
    /// system.
    pub fn new() -> Self {
        ReflinkProvider {
            info: ProviderInfo {
                id: REFLINK_PROVIDER_ID,
                name: REFLINK_PROVIDER_NAME.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                provider_type: ProviderType::Software,
            },
            copy_root: None,
            store: Store::default(),
            recovered: RecoveryReport::default(),
        }
    }

    /// Keeps the index in the catalog file `path` as well (see the module documentation), and
    /// recovers what it lists: persistent CREATED copies whose directory still exists go back
    /// into the index (so that query, delete and expose work after a restart); every other entry
    /// is an orphan, whose copy is deleted and which leaves the catalog, each logged with a
    /// warning naming the copy, the volume and why. A catalog that cannot be read or parsed is
    /// an error naming the file, never an empty catalog. Each provider needs a file of its own.
    pub fn with_catalog(mut self, path: &Path) -> Result<Self, ProviderError> {
        let (_, report) = self.store.open_catalog(path)?;
        self.recovered = report;
        Ok(self)
    }

    /// What [`ReflinkProvider::with_catalog`] found at start-up.
    pub fn recovered(&self) -> &RecoveryReport {
        &self.recovered
    }

    /// Puts the copies of every volume in `root` instead; it must be on the same file system as
    /// the volumes (checked per volume). E_INVALIDARG when `root` is not absolute.
    pub fn with_copy_root(mut self, root: impl Into<PathBuf>) -> Result<Self, ProviderError> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(ProviderError::new(
                codes::E_INVALIDARG,
                format!(
                    "reflink provider: copy root {} must be an absolute path on the file system \
                     of the volumes",
                    root.display()
                ),
            ));
        }
        self.copy_root = Some(root);
        Ok(self)
    }

    /// The copy directory of `snapshot`, once it was committed.
    pub fn copy_of(&self, snapshot: SnapshotId) -> Option<PathBuf> {
        let index = lock(&self.store.index);
        let entry = index.entries.get(&snapshot)?;
        entry.record.snapshot_path.is_some().then(|| entry.copy())
    }

    /// What the commit of `snapshot` copied and how long it took, once it was committed.
    pub fn copy_stats(&self, snapshot: SnapshotId) -> Option<CopyStats> {
        lock(&self.store.index)
            .entries
            .get(&snapshot)?
            .stats
            .clone()
    }

    /// How many skeleton or clone walks are still running, including those of a step the
    /// coordinator gave up on; a host waits for zero before it unmounts anything.
    pub fn jobs_in_flight(&self) -> usize {
        lock(&self.store.index).extra.jobs_in_flight
    }

    async fn check(
        &self,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<Checked, ProviderError> {
        let (path, root) = (PathBuf::from(volume), self.copy_root.clone());
        let checked = common::blocking(PROVIDER, move || {
            Ok(check_volume(&path, root.as_deref(), context))
        })
        .await?;
        checked.map_err(|reason| {
            ProviderError::new(
                codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
                format!("reflink provider cannot snapshot {volume}: {reason}"),
            )
        })
    }
}

/// Deletes a copy tree; one that is already gone counts as deleted. `remove_dir_all` does not
/// follow symbolic links, so links in the copy never lead it out of the copy.
fn delete_copy(copy: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(copy) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// One running blocking job in `Busy::jobs_in_flight`, until dropped.
struct InFlight(Arc<Mutex<Index>>);

impl InFlight {
    fn start(index: &Arc<Mutex<Index>>) -> Self {
        lock(index).extra.jobs_in_flight += 1;
        InFlight(index.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).extra.jobs_in_flight -= 1;
    }
}

/// Cancels a blocking job when the future waiting for it is dropped (the coordinator gave up on
/// the step): the result would be thrown away anyway.
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = &self.0 {
            cancel.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Provider for ReflinkProvider {
    fn info(&self) -> ProviderInfo {
        self.info.clone()
    }

    async fn is_volume_supported(
        &self,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<VolumeSupport, ProviderError> {
        let (path, root) = (PathBuf::from(volume), self.copy_root.clone());
        common::blocking(PROVIDER, move || {
            Ok(match check_volume(&path, root.as_deref(), context) {
                Ok(_) => VolumeSupport::Supported,
                Err(reason) => VolumeSupport::Unsupported { reason },
            })
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
        let checked = self.check(volume, context).await?;
        // PROV-SEQ-2: a new set id means any unfinished preparation of another set is stale; a
        // prepared one already has a copy directory, which goes too.
        let stale: Vec<SnapshotId> = lock(&self.store.index)
            .entries
            .values()
            .filter(|e| {
                e.record.set_id != set
                    && matches!(
                        e.record.state,
                        SnapshotState::Preparing
                            | SnapshotState::ProcessingPrepare
                            | SnapshotState::Prepared
                    )
            })
            .map(|e| e.record.snapshot_id)
            .collect();
        if !stale.is_empty() {
            let (removed, failure) = self.store.remove(stale, true).await;
            tracing::info!(
                removed,
                ?failure,
                "reflink provider: discarded stale preparation (PROV-SEQ-2)"
            );
        }
        let mut index = lock(&self.store.index);
        if index.entries.contains_key(&snapshot) {
            return Err(ProviderError::new(
                codes::E_INVALIDARG,
                format!("reflink provider: shadow copy {snapshot} of {volume} already exists"),
            ));
        }
        if let Some(other) = index
            .entries
            .values()
            .find(|e| e.record.set_id == set && e.source == checked.source)
        {
            return Err(ProviderError::new(
                codes::E_INVALIDARG,
                format!(
                    "reflink provider: {volume} is already in set {set} (as {})",
                    other.record.volume
                ),
            ));
        }
        let of_volume = index
            .entries
            .values()
            .filter(|e| e.source == checked.source)
            .count();
        common::check_room(PROVIDER, volume, of_volume)?;
        let order = index.take_order();
        index.entries.insert(
            snapshot,
            Entry {
                record: common::preparing_record(set, snapshot, volume, context, self.info.id),
                order,
                source: checked.source,
                area: checked.area,
                open: None,
                skeleton: Vec::new(),
                on_disk: false,
                job: None,
                stats: None,
            },
        );
        Ok(())
    }

    async fn end_prepare_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let members = self.store.advance(
            set,
            ProviderStep::EndPrepareSnapshots,
            SnapshotState::Preparing,
            SnapshotState::ProcessingPrepare,
        )?;
        for id in members {
            let cancel = Arc::new(AtomicBool::new(false));
            let Some((volume, before, copy)) = ({
                let mut index = lock(&self.store.index);
                index.entries.get_mut(&id).map(|e| {
                    e.job = Some(cancel.clone());
                    let before = Checked {
                        source: e.source.clone(),
                        area: e.area.clone(),
                    };
                    (e.record.volume.clone(), before, e.copy())
                })
            }) else {
                // Deleted meanwhile; the set fails at the next step.
                continue;
            };
            let started = Instant::now();
            let (index, root) = (self.store.index.clone(), self.copy_root.clone());
            let guard = CancelOnDrop(Some(cancel.clone()));
            let job = InFlight::start(&index);
            let outcome = common::blocking(PROVIDER, move || {
                let _job = job;
                let made = prepare_copy(&volume, &before, root.as_deref(), &copy, &cancel);
                let mut guard = lock(&index);
                let entry = guard
                    .entries
                    .get_mut(&id)
                    .filter(|e| e.record.state == SnapshotState::ProcessingPrepare);
                match (made, entry) {
                    (Ok((open, skeleton)), Some(entry)) => {
                        entry.job = None;
                        entry.open = Some(open);
                        entry.skeleton = skeleton;
                        entry.on_disk = true;
                        entry.record.state = SnapshotState::Prepared;
                        Ok(())
                    }
                    (made, entry) => {
                        if let Some(entry) = entry {
                            entry.job = None;
                        }
                        drop(guard);
                        // Failed, or aborted meanwhile: nothing of this copy may survive.
                        if let Err(error) = delete_copy(&copy) {
                            tracing::error!(copy = %copy.display(), "cannot delete a copy whose preparation failed: {error}");
                        }
                        Err(made.err().unwrap_or_else(|| {
                            ProviderError::new(
                                codes::VSS_E_BAD_STATE,
                                format!(
                                    "reflink provider: {volume} was aborted or deleted during \
                                     EndPrepareSnapshots"
                                ),
                            )
                        }))
                    }
                }
            })
            .await;
            guard.defuse();
            outcome?;
            tracing::info!(%id, prepare_ms = started.elapsed().as_secs_f64() * 1e3, "reflink provider: copy skeleton made and volume synced");
        }
        // The write-ahead intent: before the writers freeze, the catalog learns where each copy
        // is, so that one a crash cut short is found and deleted at the next start.
        self.store.record(set, SnapshotState::Prepared).await
    }

    async fn pre_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        // Nothing to do: the volumes were synced and the skeletons made before the writers froze.
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
        // Writers are frozen: nothing here logs (PROV-T-1). The clone walk itself is I/O on the
        // volume, which this provider cannot avoid (see the module documentation).
        let members = self.store.advance(
            set,
            ProviderStep::CommitSnapshots,
            SnapshotState::Precommitted,
            SnapshotState::ProcessingCommit,
        )?;
        for id in members {
            let cancel = Arc::new(AtomicBool::new(false));
            let taken = {
                let mut index = lock(&self.store.index);
                index.entries.get_mut(&id).map(|e| {
                    e.job = Some(cancel.clone());
                    (
                        e.open.take(),
                        std::mem::take(&mut e.skeleton),
                        e.record.volume.clone(),
                        e.copy(),
                    )
                })
            };
            let Some((open, skeleton, volume, copy)) = taken else {
                return Err(ProviderError::new(
                    codes::VSS_E_BAD_STATE,
                    format!(
                        "reflink provider: shadow copy {id} was deleted during CommitSnapshots"
                    ),
                ));
            };
            let Some(open) = open else {
                if let Some(entry) = lock(&self.store.index).entries.get_mut(&id) {
                    entry.job = None;
                }
                return Err(ProviderError::new(
                    codes::VSS_E_BAD_STATE,
                    format!(
                        "reflink provider: {volume} was not prepared (EndPrepareSnapshots did not \
                         open it)"
                    ),
                ));
            };
            let index = self.store.index.clone();
            let guard = CancelOnDrop(Some(cancel.clone()));
            let job = InFlight::start(&index);
            let outcome = common::blocking(PROVIDER, move || {
                let _job = job;
                let made = clone_tree(&open, &skeleton, &volume, &cancel);
                drop(open);
                let mut guard = lock(&index);
                let entry = guard
                    .entries
                    .get_mut(&id)
                    .filter(|e| e.record.state == SnapshotState::ProcessingCommit);
                match (made, entry) {
                    (Ok(stats), Some(entry)) => {
                        entry.job = None;
                        entry.stats = Some(stats);
                        entry.record.state = SnapshotState::Committed;
                        entry.record.created = VssTimestamp::now();
                        entry.record.snapshot_path = Some(copy.to_string_lossy().into_owned());
                        Ok(())
                    }
                    (made, entry) => {
                        let gone = entry.is_none();
                        if let Some(entry) = entry {
                            // The copy is deleted below; AbortSnapshots finds nothing on disk.
                            entry.job = None;
                            entry.on_disk = false;
                            entry.record.state = SnapshotState::Precommitted;
                        }
                        drop(guard);
                        let cleanup = delete_copy(&copy);
                        if gone {
                            tracing::warn!(volume = %volume, copy = %copy.display(), ?cleanup, "reflink copy given up after its set was aborted; deleted it");
                        }
                        Err(made.err().unwrap_or_else(|| {
                            ProviderError::new(
                                codes::VSS_E_BAD_STATE,
                                format!(
                                    "reflink provider: the copy of {volume} was aborted or \
                                     deleted during CommitSnapshots and was deleted again"
                                ),
                            )
                        }))
                    }
                }
            })
            .await;
            guard.defuse();
            outcome?;
        }
        Ok(())
    }

    async fn post_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
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
        let members = self.store.advance(
            set,
            ProviderStep::PreFinalCommitSnapshots,
            SnapshotState::Postcommitted,
            SnapshotState::Prefinalcommitted,
        )?;
        // The writers are thawed now: the commit's figures, and what it skipped, can be logged.
        let index = lock(&self.store.index);
        for entry in members.iter().filter_map(|id| index.entries.get(id)) {
            let stats = entry.stats.clone().unwrap_or_default();
            tracing::info!(
                volume = %entry.record.volume,
                snapshot = %entry.record.snapshot_id,
                copy = %entry.copy().display(),
                files = stats.files,
                directories = stats.directories,
                symlinks = stats.symlinks,
                bytes = stats.bytes,
                commit_ms = stats.took.as_secs_f64() * 1e3,
                "reflink copy made"
            );
            for (path, why) in &stats.skipped {
                tracing::warn!(volume = %entry.record.volume, path = %path.display(), "reflink provider did not copy this entry: {why}");
            }
        }
        Ok(())
    }

    async fn post_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        // Check the order first, so that nothing is changed on disk for a step out of order.
        let members = self.store.advance(
            set,
            ProviderStep::PostFinalCommitSnapshots,
            SnapshotState::Prefinalcommitted,
            SnapshotState::Prefinalcommitted,
        )?;
        let copies: Vec<(String, PathBuf)> = {
            let index = lock(&self.store.index);
            members
                .iter()
                .filter_map(|id| index.entries.get(id))
                .map(|e| (e.record.volume.clone(), e.copy()))
                .collect()
        };
        common::blocking(PROVIDER, move || {
            for (volume, copy) in copies {
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(CREATED_MODE))
                    .map_err(|e| {
                        io_error(
                            e,
                            &format!("chmod(2) 0500 of the copy {}", copy.display()),
                            &volume,
                        )
                    })?;
            }
            Ok(())
        })
        .await?;
        self.store.post_final_commit(set).await
    }

    async fn abort_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.store.abort(set).await
    }

    async fn delete_snapshots(&self, target: DeleteTarget) -> Result<usize, ProviderError> {
        self.store.delete(target).await
    }

    async fn query_snapshots(&self) -> Result<Vec<SnapshotRecord>, ProviderError> {
        Ok(self.store.query())
    }
}

/// EndPrepare work for one volume: check it again, create the copy area (0700) and the copy
/// directory (0700, O_EXCL semantics), open both ends, pre-create the directory skeleton and
/// syncfs(2) the volume. On failure the caller deletes the copy directory.
fn prepare_copy(
    volume: &str,
    before: &Checked,
    copy_root: Option<&Path>,
    copy: &Path,
    cancel: &AtomicBool,
) -> Result<(OpenCopy, Vec<PathBuf>), ProviderError> {
    let now =
        check_volume(Path::new(volume), copy_root, SnapshotContext::Backup).map_err(|reason| {
            ProviderError::new(
                codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
                format!("reflink provider cannot snapshot {volume}: {reason}"),
            )
        })?;
    if &now != before {
        return Err(ProviderError::new(
            codes::VSS_E_BAD_STATE,
            format!(
                "reflink provider: {volume} changed since it was added to the set (was {} with \
                 copies in {}, now {} with copies in {})",
                before.source.display(),
                before.area.display(),
                now.source.display(),
                now.area.display()
            ),
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(BUILDING_MODE)
        .create(&now.area)
        .map_err(|e| io_error(e, &format!("mkdir(2) of {}", now.area.display()), volume))?;
    std::fs::DirBuilder::new()
        .mode(BUILDING_MODE)
        .create(copy)
        .map_err(|e| io_error(e, &format!("mkdir(2) of {}", copy.display()), volume))?;
    let open_dir = |path: &Path| {
        nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| syscall_error(errno, &format!("open(2) of {}", path.display()), volume))
    };
    let open = OpenCopy {
        source: open_dir(&now.source)?,
        copy: open_dir(copy)?,
    };
    let mut walk = Walk::new(Pass::Skeleton, &open, volume, cancel)?;
    walk.run(&open)?;
    nix::unistd::syncfs(&open.source)
        .map_err(|errno| syscall_error(errno, &format!("syncfs(2) of {volume}"), volume))?;
    let skeleton = walk.dirs.into_iter().map(|(path, _)| path).collect();
    Ok((open, skeleton))
}

/// Commit work for one volume: the clone walk, directory metadata, and the removal of skeleton
/// directories that no longer exist in the volume.
fn clone_tree(
    open: &OpenCopy,
    skeleton: &[PathBuf],
    volume: &str,
    cancel: &AtomicBool,
) -> Result<CopyStats, ProviderError> {
    let started = Instant::now();
    let mut walk = Walk::new(Pass::Clone, open, volume, cancel)?;
    walk.run(open)?;
    let seen: BTreeSet<&PathBuf> = walk.dirs.iter().map(|(path, _)| path).collect();
    for gone in skeleton.iter().rev().filter(|p| !seen.contains(p)) {
        match unlinkat(&open.copy, gone.as_path(), UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => {
                return Err(syscall_error(
                    errno,
                    &format!(
                        "rmdir(2) of the vanished directory {} in the copy",
                        gone.display()
                    ),
                    volume,
                ));
            }
        }
    }
    // Children first, so that nothing changes a directory after its times are set.
    for (path, stat) in walk.dirs.iter().rev() {
        set_metadata_at(&open.copy, path, stat, volume)?;
    }
    // The copy root keeps the volume's times but stays root's, 0700 until PostFinalCommit.
    let (atime, mtime) = times(&walk.root_stat);
    futimens(&open.copy, &atime, &mtime)
        .map_err(|errno| syscall_error(errno, "utimensat(2) of the copy root", volume))?;
    let mut stats = walk.stats;
    stats.took = started.elapsed();
    Ok(stats)
}

/// Which walk: EndPrepare's makes directories only, Commit's copies everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Skeleton,
    Clone,
}

/// One walk of a volume into its copy, through directory descriptors (openat with O_NOFOLLOW), so
/// that a path swapped for a symbolic link meanwhile cannot lead it outside the volume.
struct Walk<'a> {
    pass: Pass,
    volume: &'a str,
    cancel: &'a AtomicBool,
    /// The volume's root; entries on another device are other file systems.
    root_stat: FileStat,
    /// Directories made or found in the copy, relative, parents first, with the volume's stat.
    dirs: Vec<(PathBuf, FileStat)>,
    stats: CopyStats,
}

impl<'a> Walk<'a> {
    fn new(
        pass: Pass,
        open: &OpenCopy,
        volume: &'a str,
        cancel: &'a AtomicBool,
    ) -> Result<Self, ProviderError> {
        let root_stat = fstat(&open.source)
            .map_err(|errno| syscall_error(errno, "fstat(2) of the volume", volume))?;
        Ok(Walk {
            pass,
            volume,
            cancel,
            root_stat,
            dirs: Vec::new(),
            stats: CopyStats::default(),
        })
    }

    fn run(&mut self, open: &OpenCopy) -> Result<(), ProviderError> {
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| io_error(e, "dup(2) of a directory descriptor", self.volume))
        };
        let mut stack = vec![(dup(&open.source)?, dup(&open.copy)?, PathBuf::new())];
        while let Some((source, copy, relative)) = stack.pop() {
            for name in self.list(&source, &relative)? {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(ProviderError::new(
                        codes::VSS_E_BAD_STATE,
                        format!(
                            "reflink provider: the copy of {} was cancelled (the set was aborted \
                             or the coordinator gave up on the step)",
                            self.volume
                        ),
                    ));
                }
                let path = relative.join(OsStr::from_bytes(name.as_bytes()));
                let stat = match fstatat(&source, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(stat) => stat,
                    // Removed since the listing: it is not part of the copy.
                    Err(Errno::ENOENT) => continue,
                    Err(errno) => return Err(self.failed(errno, "fstatat(2)", &path)),
                };
                match (file_type(&stat), self.pass) {
                    (SFlag::S_IFDIR, _) => {
                        if let Some(next) = self.directory(&source, &copy, &name, &path, stat)? {
                            stack.push((next.0, next.1, path));
                        }
                    }
                    (_, Pass::Skeleton) => {}
                    (SFlag::S_IFREG, Pass::Clone) => self.file(&source, &copy, &name, &path)?,
                    (SFlag::S_IFLNK, Pass::Clone) => self.symlink(&source, &copy, &name, &path)?,
                    (kind, Pass::Clone) => {
                        let why = match kind {
                            SFlag::S_IFSOCK => "a socket: not copied",
                            SFlag::S_IFIFO => "a FIFO: not copied",
                            SFlag::S_IFCHR | SFlag::S_IFBLK => "a device node: not copied",
                            _ => "an unknown file type: not copied",
                        };
                        self.stats.skipped.push((path, why));
                    }
                }
            }
        }
        Ok(())
    }

    /// The names in a directory, without `.` and `..`. It is read through the descriptor's
    /// /proc/self/fd link, which is the open directory itself, not whatever its path names now.
    fn list(&self, dir: &OwnedFd, relative: &Path) -> Result<Vec<CString>, ProviderError> {
        let failed = |e: std::io::Error| {
            io_error(
                e,
                &format!(
                    "reading the directory {}",
                    Path::new(self.volume).join(relative).display()
                ),
                self.volume,
            )
        };
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(failed)?
        {
            let name = entry.map_err(failed)?.file_name();
            // A name from readdir has no NUL byte.
            names.extend(CString::new(name.as_bytes()).ok());
        }
        Ok(names)
    }

    /// Makes the directory in the copy (it may exist from the skeleton) and opens both sides to
    /// descend, unless it is another file system, which stays an empty directory.
    fn directory(
        &mut self,
        source: &OwnedFd,
        copy: &OwnedFd,
        name: &CString,
        path: &Path,
        stat: FileStat,
    ) -> Result<Option<(OwnedFd, OwnedFd)>, ProviderError> {
        match mkdirat(
            copy,
            name.as_c_str(),
            Mode::from_bits_truncate(BUILDING_MODE),
        ) {
            Ok(()) => {}
            Err(Errno::EEXIST) if self.pass == Pass::Clone => {
                // A skeleton directory, or a file the walk made in an earlier pass cannot exist:
                // only skeleton directories exist before the clone walk. Make sure it is one.
                let there = fstatat(copy, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|errno| self.failed(errno, "fstatat(2) in the copy", path))?;
                if file_type(&there) != SFlag::S_IFDIR {
                    return Err(self.failed(Errno::EEXIST, "mkdir(2) in the copy", path));
                }
            }
            Err(errno) => return Err(self.failed(errno, "mkdir(2) in the copy", path)),
        }
        self.dirs.push((path.to_path_buf(), stat));
        if self.pass == Pass::Clone {
            self.stats.directories += 1;
        }
        if stat.st_dev != self.root_stat.st_dev {
            if self.pass == Pass::Clone {
                self.stats.skipped.push((
                    path.to_path_buf(),
                    "another file system or btrfs subvolume (kept as an empty directory): add \
                     it as a volume of its own",
                ));
            }
            return Ok(None);
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let next_source = match openat(source, name.as_c_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            // Removed or replaced since the listing: it stays an empty directory, or goes when
            // the walk removes vanished skeleton directories.
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(None),
            Err(errno) => return Err(self.failed(errno, "open(2)", path)),
        };
        let next_copy = openat(copy, name.as_c_str(), flags, Mode::empty())
            .map_err(|errno| self.failed(errno, "open(2) in the copy", path))?;
        Ok(Some((next_source, next_copy)))
    }

    /// Clones one regular file (FICLONE) and gives the clone the file's owner, mode and times.
    fn file(
        &mut self,
        source: &OwnedFd,
        copy: &OwnedFd,
        name: &CString,
        path: &Path,
    ) -> Result<(), ProviderError> {
        // O_NONBLOCK: if the name became a FIFO since the listing, opening it must not hang.
        let from = match openat(
            source,
            name.as_c_str(),
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(()),
            Err(errno) => return Err(self.failed(errno, "open(2)", path)),
        };
        let stat = fstat(&from).map_err(|errno| self.failed(errno, "fstat(2)", path))?;
        if file_type(&stat) != SFlag::S_IFREG {
            self.stats
                .skipped
                .push((path.to_path_buf(), "replaced by a non-file during the copy"));
            return Ok(());
        }
        let to = self.create_in_copy(copy, name, path)?;
        if stat.st_size > 0 {
            ioctl::ficlone(&to, &from).map_err(|errno| self.failed(errno, "FICLONE", path))?;
        }
        fchown(
            &to,
            Some(Uid::from_raw(stat.st_uid)),
            Some(Gid::from_raw(stat.st_gid)),
        )
        .map_err(|errno| self.failed(errno, "fchown(2) in the copy", path))?;
        // After chown, which clears the set-id bits.
        fchmod(&to, mode_of(&stat))
            .map_err(|errno| self.failed(errno, "fchmod(2) in the copy", path))?;
        let (atime, mtime) = times(&stat);
        futimens(&to, &atime, &mtime)
            .map_err(|errno| self.failed(errno, "futimens(2) in the copy", path))?;
        self.stats.files += 1;
        self.stats.bytes += u64::try_from(stat.st_size).unwrap_or(0);
        Ok(())
    }

    /// Creates a new file in the copy with O_EXCL. A directory in its place is a skeleton
    /// directory whose source became a file since EndPrepare: it is removed first.
    fn create_in_copy(
        &self,
        copy: &OwnedFd,
        name: &CString,
        path: &Path,
    ) -> Result<OwnedFd, ProviderError> {
        let create = || {
            openat(
                copy,
                name.as_c_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        };
        match create() {
            Err(Errno::EEXIST) | Err(Errno::EISDIR) => {
                self.clear_skeleton(copy, name, path)?;
                create()
            }
            other => other,
        }
        .map_err(|errno| self.failed(errno, "open(2) O_CREAT|O_EXCL in the copy", path))
    }

    fn clear_skeleton(
        &self,
        copy: &OwnedFd,
        name: &CString,
        path: &Path,
    ) -> Result<(), ProviderError> {
        match unlinkat(copy, name.as_c_str(), UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(self.failed(errno, "rmdir(2) of a stale skeleton directory", path)),
        }
    }

    /// Copies one symbolic link (its target, owner and times; Linux links have no mode).
    fn symlink(
        &mut self,
        source: &OwnedFd,
        copy: &OwnedFd,
        name: &CString,
        path: &Path,
    ) -> Result<(), ProviderError> {
        let target = match readlinkat(source, name.as_c_str()) {
            Ok(target) => target,
            Err(Errno::ENOENT | Errno::EINVAL) => return Ok(()),
            Err(errno) => return Err(self.failed(errno, "readlink(2)", path)),
        };
        let stat = match fstatat(source, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(()),
            Err(errno) => return Err(self.failed(errno, "fstatat(2)", path)),
        };
        let link = || symlinkat(target.as_os_str(), copy, name.as_c_str());
        match link() {
            Err(Errno::EEXIST) => {
                self.clear_skeleton(copy, name, path)?;
                link()
            }
            other => other,
        }
        .map_err(|errno| self.failed(errno, "symlink(2) in the copy", path))?;
        fchownat(
            copy,
            name.as_c_str(),
            Some(Uid::from_raw(stat.st_uid)),
            Some(Gid::from_raw(stat.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| self.failed(errno, "lchown(2) in the copy", path))?;
        let (atime, mtime) = times(&stat);
        utimensat(
            copy,
            name.as_c_str(),
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|errno| self.failed(errno, "utimensat(2) in the copy", path))?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn failed(&self, errno: Errno, call: &str, path: &Path) -> ProviderError {
        syscall_error(
            errno,
            &format!("{call} of {}", Path::new(self.volume).join(path).display()),
            self.volume,
        )
    }
}

/// Gives the directory `path` (relative to the copy root) the owner, mode and times of `stat`.
fn set_metadata_at(
    copy: &OwnedFd,
    path: &Path,
    stat: &FileStat,
    volume: &str,
) -> Result<(), ProviderError> {
    let failed = |errno: Errno, call: &str| {
        syscall_error(
            errno,
            &format!("{call} of {} in the copy", path.display()),
            volume,
        )
    };
    fchownat(
        copy,
        path,
        Some(Uid::from_raw(stat.st_uid)),
        Some(Gid::from_raw(stat.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|errno| failed(errno, "lchown(2)"))?;
    fchmodat(copy, path, mode_of(stat), FchmodatFlags::FollowSymlink)
        .map_err(|errno| failed(errno, "chmod(2)"))?;
    let (atime, mtime) = times(stat);
    utimensat(copy, path, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|errno| failed(errno, "utimensat(2)"))
}

fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

/// The permission bits, with set-id and sticky bits.
fn mode_of(stat: &FileStat) -> Mode {
    Mode::from_bits_truncate(stat.st_mode & 0o7777)
}

fn times(stat: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(stat.st_atime, stat.st_atime_nsec),
        TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec),
    )
}

/// Whether `volume` is a directory this provider can copy with reflinks (PROV-R-1); if not, why
/// and what would work.
fn check_volume(
    volume: &Path,
    copy_root: Option<&Path>,
    context: SnapshotContext,
) -> Result<Checked, String> {
    let shown = volume.display();
    if matches!(
        context,
        SnapshotContext::ClientAccessible | SnapshotContext::ClientAccessibleWriters
    ) {
        return Err(format!(
            "context {context} is reserved for the system provider (CTX-1), which on Linux is the \
             btrfs provider: make client-accessible copies of the btrfs subvolume that holds the \
             directory; the reflink provider makes BACKUP, FILE_SHARE_BACKUP, APP_ROLLBACK and \
             NAS_ROLLBACK shadow copies"
        ));
    }
    if !volume.is_absolute() {
        return Err(format!("{shown} is not an absolute path"));
    }
    let source = volume
        .canonicalize()
        .map_err(|e| format!("cannot resolve {shown}: {e}"))?;
    let metadata =
        std::fs::metadata(&source).map_err(|e| format!("stat(2) of {shown} failed: {e}"))?;
    if !metadata.is_dir() {
        return Err(format!(
            "{shown} is not a directory; the reflink provider copies directory trees: add the \
             directory that holds the files"
        ));
    }
    let magic = statfs(&source)
        .map_err(|errno| format!("statfs(2) of {shown} failed: {errno}"))?
        .filesystem_type();
    if magic != XFS_SUPER_MAGIC && magic != BTRFS_SUPER_MAGIC {
        let raw = magic.0 as u64;
        return Err(format!(
            "{shown} is on {} (statfs f_type {raw:#x}), which cannot clone files (no FICLONE); \
             use a btrfs or reflink-enabled xfs file system, or put the data on a loop volume",
            common::fs_name(raw)
        ));
    }
    match statvfs(&source) {
        Ok(stats) if stats.flags().contains(FsFlags::ST_RDONLY) => {
            return Err(format!(
                "{shown} is mounted read-only, and its copies must be made on the same file \
                 system; remount it read-write"
            ));
        }
        Ok(_) => {}
        Err(errno) => return Err(format!("statvfs(2) of {shown} failed: {errno}")),
    }
    let area = match copy_root {
        Some(root) => root.to_path_buf(),
        None => mount_root(&source)
            .ok_or_else(|| format!("no mount in /proc/self/mountinfo holds {shown}"))?
            .join(DEFAULT_COPY_AREA),
    };
    // Compare resolved paths: the area, or its nearest existing ancestor plus the rest.
    let Some(existing) = area.ancestors().find(|p| p.exists()) else {
        return Err(format!(
            "no part of the copy area {} exists",
            area.display()
        ));
    };
    let resolved = existing
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", existing.display()))?
        .join(area.strip_prefix(existing).unwrap_or(Path::new("")));
    if resolved.starts_with(&source) {
        return Err(format!(
            "{shown} contains the copy area {}, so each copy would contain the earlier ones; add \
             a subdirectory that holds the data, or configure a copy root outside it on the same \
             file system",
            area.display()
        ));
    }
    if source.starts_with(&resolved) {
        return Err(format!(
            "{shown} lies inside the copy area {}, which holds shadow copies, not data",
            area.display()
        ));
    }
    if !existing.is_dir() {
        return Err(format!(
            "the copy area {} (or its parent {}) is not a directory",
            area.display(),
            existing.display()
        ));
    }
    probe_reflink(&source, existing).map_err(|(step, errno)| match errno {
        Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EINVAL if magic == XFS_SUPER_MAGIC => format!(
            "{shown} is on an xfs without reflink (a probe FICLONE failed with {errno}; the file \
             system was made with reflink=0); use a btrfs or reflink-enabled xfs file system \
             (mkfs.xfs -m reflink=1), or put the data on a loop volume"
        ),
        Errno::EXDEV => format!(
            "the copy area {} is not on the file system of {shown}, and reflinks cannot cross \
             file systems; configure a copy root on that file system",
            area.display()
        ),
        Errno::EROFS => format!(
            "the copy area {} is on a read-only mount; make it writable",
            area.display()
        ),
        _ => format!(
            "a probe clone from {shown} into {} failed ({step}: {errno})",
            existing.display()
        ),
    })?;
    Ok(Checked { source, area })
}

/// Proves that a file in `source` can be cloned into `target_dir`: FICLONE between two unnamed
/// O_TMPFILE files, which vanish when closed. Returns the failed step and its errno.
fn probe_reflink(source: &Path, target_dir: &Path) -> Result<(), (String, Errno)> {
    let unnamed = |dir: &Path| {
        nix::fcntl::open(
            dir,
            OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|errno| (format!("open(2) O_TMPFILE in {}", dir.display()), errno))
    };
    let mut from = File::from(unnamed(source)?);
    from.write_all(b"shadowcopy reflink probe\n").map_err(|e| {
        (
            format!("write(2) to a probe file in {}", source.display()),
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    let to = unnamed(target_dir)?;
    ioctl::ficlone(&to, from.as_fd()).map_err(|errno| ("FICLONE".to_string(), errno))
}

/// The mount point that holds `path` (canonical): the longest mount point in
/// /proc/self/mountinfo that is an ancestor of it.
fn mount_root(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines()
        .filter_map(|line| line.split(' ').nth(4).map(unescape_mountinfo))
        .map(PathBuf::from)
        .filter(|point| path.starts_with(point))
        .max_by_key(|point| point.components().count())
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

    #[test]
    fn info_is_fixed() {
        let info = ReflinkProvider::new().info();
        assert_eq!(info.id, REFLINK_PROVIDER_ID);
        assert_eq!(info.name, "reflink");
        assert_eq!(info.provider_type, ProviderType::Software);
    }

    #[test]
    fn copy_root_must_be_absolute() {
        let err = ReflinkProvider::new()
            .with_copy_root("relative/copies")
            .unwrap_err();
        assert_eq!(err.code, codes::E_INVALIDARG);
        assert!(err.message.contains("relative/copies"), "{}", err.message);
        assert!(
            ReflinkProvider::new()
                .with_copy_root("/pool/copies")
                .is_ok()
        );
    }

    /// The mount root of a path is the longest mount point above it.
    #[test]
    fn mount_root_is_the_longest_mount_above() {
        assert_eq!(mount_root(Path::new("/")), Some(PathBuf::from("/")));
        assert_eq!(
            mount_root(Path::new("/proc/self")),
            Some(PathBuf::from("/proc"))
        );
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
    }

    /// Paths that are not reflink directories are refused with a reason.
    #[test]
    fn non_reflink_paths_are_refused() {
        let relative = check_volume(Path::new("rel"), None, SnapshotContext::Backup).unwrap_err();
        assert!(relative.contains("absolute"), "{relative}");
        let proc_ = check_volume(Path::new("/proc"), None, SnapshotContext::Backup).unwrap_err();
        assert!(
            proc_.contains("procfs") && proc_.contains("loop volume"),
            "{proc_}"
        );
        let missing =
            check_volume(Path::new("/nonexistent/x"), None, SnapshotContext::Backup).unwrap_err();
        assert!(missing.contains("cannot resolve"), "{missing}");
        let context =
            check_volume(Path::new("/"), None, SnapshotContext::ClientAccessible).unwrap_err();
        assert!(context.contains("CTX-1"), "{context}");
    }
}
