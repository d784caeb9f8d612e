//! `LoopImageProvider`: block-level shadow copies of file systems that live on loop devices whose
//! backing image file is on a reflink-capable file system (xfs with reflink, or btrfs): freeze
//! every volume of the set, reflink-clone each backing image, thaw (architecture intent §3).
//!
//! A set, step by step (PROV-SEQ-1), with the states of PROV-ST-1:
//! - `is_volume_supported` and `begin_prepare_snapshot`: the volume must be a mount point whose
//!   source (in /proc/self/mountinfo) is `/dev/loopN`; its backing file (from
//!   `/sys/block/loopN/loop/backing_file`) must be on xfs or btrfs (statfs magic), which have
//!   FICLONE. The root file system, and the file systems holding the process's current directory,
//!   `/run/shadowcopy` (the coordinator's state) or the provider's catalog (with
//!   [`LoopImageProvider::with_catalog`]) are refused: freezing them would hang the coordinator,
//!   whose catalog write at PostFinalCommit would block on the frozen file system. A volume whose backing file lives on another volume of the same set is refused
//!   too: freezing the holder would block the clone of the held image until thaw (a deadlock).
//! - `end_prepare_snapshots` checks every volume again (still the same loop device and backing
//!   file), opens the volume and its backing file, and runs syncfs(2) on the volume, so that the
//!   freeze inside the commit flushes little.
//! - `commit_snapshots` runs on one blocking thread: FIFREEZE every volume of the set, FICLONE each
//!   backing file to `<backing file's directory>/.shadowcopy-<snapshot id>.img` (created with
//!   O_CREAT|O_EXCL, mode 0600), FITHAW every volume. Thaw is never skipped: a guard thaws
//!   whatever was frozen when it drops (also on an error or a panic), and a watchdog thread thaws
//!   the set when the step overruns its limit (10 s by default, [`LoopImageProvider::with_commit_timeout`]);
//!   a step that overran fails with VSS_E_HOLD_WRITES_TIMEOUT and deletes its clones. A failed
//!   clone deletes the clones already made. Nothing is logged inside the freeze. AbortSnapshots
//!   thaws at once whatever a commit of the set still holds frozen: a coordinator that gave up on
//!   a commit hanging inside the freeze (its commit window ran out) must not leave the volumes
//!   frozen until the watchdog fires.
//! - The copy is the cloned image file. Once committed, its path is the record's `snapshot_path`:
//!   the image file is the copy's device object (EXP-4, "the snapshot's block-device path"). It is
//!   not mounted; to read it, a host attaches it read-only to a loop device and mounts that
//!   read-only (the daemon's exposure does this for a `snapshot_path` that is a regular file).
//!   [`LoopImageProvider::image_of`] gives the same path. Records carry NO_AUTORECOVERY and
//!   DIFFERENTIAL (the clone shares extents copy-on-write).
//! - `abort_snapshots` and `delete_snapshots` delete the image files.
//!
//! The index is in memory; with [`LoopImageProvider::with_catalog`] it is also kept in a catalog
//! file, written and recovered by the code all built-in providers share (`crate::catalog`), at the
//! same steps as in the btrfs provider (see `crate::btrfs`): PREPARED at EndPrepare (before the
//! freeze), CREATED at PostFinalCommit, removed on delete and abort, never inside the freeze; at
//! start-up persistent CREATED copies whose image exists come back, other entries have their image
//! deleted. An entry of a set that was still in creation also has its volume thawed: a daemon
//! killed inside the freeze leaves the file system frozen (a freeze outlives the process that
//! made it), and only the next start can thaw it.
//!
//! Revert (REV-1) is not implemented (the trait's default, E_NOTIMPL). It would need the volume
//! unmounted and its loop device detached (the mounted file system cannot be swapped under its
//! users), the backing file replaced by a reflink clone of the copy's image (FICLONE, then
//! rename over the backing file), and the device re-attached and remounted with the original
//! options, with a catalog marker to resume after a crash; the provider does not own the mount's
//! configuration (fstab, systemd units), so that is left to a later task.

pub(crate) mod ioctl;

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::statfs::{BTRFS_SUPER_MAGIC, XFS_SUPER_MAGIC, statfs};
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

/// This provider's name in messages.
const PROVIDER: &str = "loop-image";

/// The loop-image provider's fixed id (SNAP-2).
pub const LOOP_IMAGE_PROVIDER_ID: ProviderId = ProviderId(uuid::Uuid::from_u128(
    0x6c1f_0a3e_5b7d_4e21_9a8c_2f4d_1e6b_7c90,
));

/// The loop-image provider's name.
pub const LOOP_IMAGE_PROVIDER_NAME: &str = "loop-image";

/// How long CommitSnapshots may keep the set frozen before the watchdog thaws it (CFG-10).
pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The coordinator's state directory: its file system is never frozen.
const COORDINATOR_STATE_DIR: &str = "/run/shadowcopy";

/// The loop-image provider. See the module documentation for how it makes a set.
#[derive(Debug)]
pub struct LoopImageProvider {
    info: ProviderInfo,
    commit_timeout: Duration,
    /// The index, and the catalog when [`LoopImageProvider::with_catalog`] was used.
    store: Store<Entry, InFlight>,
    /// Directories whose file systems are never frozen besides the fixed ones: the catalog's.
    protected: Vec<PathBuf>,
    /// What `with_catalog` found.
    recovered: RecoveryReport,
}

/// Every copy this provider knows of, by id, with the order in which volumes were added.
type Index = common::Index<Entry, InFlight>;

/// The freezes of commits in progress, by set, so that AbortSnapshots can thaw them.
#[derive(Debug, Default)]
struct InFlight(Vec<(SnapshotSetId, Arc<Mutex<Frozen>>)>);

#[derive(Debug)]
struct Entry {
    record: SnapshotRecord,
    order: u64,
    loop_volume: LoopBacked,
    /// `<backing dir>/.shadowcopy-<id>.img`.
    image: PathBuf,
    /// The volume and backing file, open from EndPrepare until Commit.
    open: Option<OpenVolume>,
    /// The image exists on disk.
    on_disk: bool,
    /// Freeze to thaw, once committed.
    freeze_window: Option<Duration>,
}

#[derive(Debug)]
struct OpenVolume {
    volume: File,
    backing: File,
}

/// What the checks found out about a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoopBacked {
    /// The mount point (canonical).
    mount: PathBuf,
    /// `/dev/loopN`.
    device: PathBuf,
    /// The backing image.
    backing: PathBuf,
    /// st_dev of the mounted file system.
    dev: u64,
    /// st_dev of the file system holding the backing image.
    backing_dev: u64,
}

impl Default for LoopImageProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl LoopImageProvider {
    /// A provider with the default commit limit of 10 s.
    pub fn new() -> Self {
        LoopImageProvider {
            info: ProviderInfo {
                id: LOOP_IMAGE_PROVIDER_ID,
                name: LOOP_IMAGE_PROVIDER_NAME.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                provider_type: ProviderType::Software,
            },
            commit_timeout: DEFAULT_COMMIT_TIMEOUT,
            store: Store::default(),
            protected: Vec::new(),
            recovered: RecoveryReport::default(),
        }
    }

    /// Keeps the index in the catalog file `path` as well, and recovers what it lists (module
    /// documentation): persistent CREATED copies whose image exists go back into the index;
    /// every other entry has its image deleted and leaves the catalog, each logged with a warning
    /// naming the copy, the volume and why. The file system holding the catalog's directory is
    /// never frozen from now on. A catalog that cannot be read or parsed is an error naming the
    /// file.
    pub fn with_catalog(mut self, path: &Path) -> Result<Self, ProviderError> {
        let (_, report) = self.store.open_catalog(path)?;
        if let Some(dir) = path.parent() {
            self.protected.push(dir.to_path_buf());
        }
        self.recovered = report;
        Ok(self)
    }

    /// What [`LoopImageProvider::with_catalog`] found at start-up.
    pub fn recovered(&self) -> &RecoveryReport {
        &self.recovered
    }

    /// Thaws the set and fails CommitSnapshots when it runs longer than `limit` (for tests).
    pub fn with_commit_timeout(mut self, limit: Duration) -> Self {
        self.commit_timeout = limit;
        self
    }

    /// The cloned image of `snapshot`, once it was committed.
    pub fn image_of(&self, snapshot: SnapshotId) -> Option<PathBuf> {
        let index = lock(&self.store.index);
        let entry = index.entries.get(&snapshot)?;
        entry.on_disk.then(|| entry.image.clone())
    }

    /// How long the volumes of `snapshot`'s set stayed frozen (FIFREEZE of the first to FITHAW
    /// of the last), once it was committed.
    pub fn freeze_window(&self, snapshot: SnapshotId) -> Option<Duration> {
        lock(&self.store.index)
            .entries
            .get(&snapshot)?
            .freeze_window
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
        CatalogEntry::from_record(
            &self.record,
            self.image.clone(),
            self.loop_volume.backing.clone(),
        )
    }

    /// The loop device and device numbers are not stored: they change across reboots, and they
    /// are only compared between members of a set in creation, which a recovered copy never is.
    fn from_catalog(stored: &CatalogEntry, order: u64) -> Self {
        Entry {
            record: stored.record(),
            order,
            loop_volume: LoopBacked {
                mount: PathBuf::from(&stored.volume),
                device: PathBuf::new(),
                backing: stored.source.clone(),
                dev: 0,
                backing_dev: 0,
            },
            image: stored.location.clone(),
            open: None,
            on_disk: true,
            freeze_window: None,
        }
    }

    fn delete_data(&mut self) -> Result<(), ProviderError> {
        self.open = None;
        if !self.on_disk {
            // Not made, or its commit is still running: that thread finds the entry gone and
            // deletes what it made.
            return Ok(());
        }
        delete_image(&self.image).map_err(|error| {
            io_error(
                error,
                &format!("unlink(2) of {}", self.image.display()),
                &self.record.volume,
            )
        })?;
        tracing::info!(volume = %self.record.volume, image = %self.image.display(), "loop image shadow copy deleted");
        Ok(())
    }

    fn delete_orphan(stored: &CatalogEntry) -> Result<(), ProviderError> {
        if stored.record().state != SnapshotState::Created {
            thaw_after_crash(Path::new(&stored.volume));
        }
        delete_image(&stored.location).map_err(|error| {
            io_error(
                error,
                &format!("unlink(2) of {}", stored.location.display()),
                &stored.volume,
            )
        })
    }
}

/// Thaws `mount`, the volume of a set whose creation a crash cut short, in case the crash came
/// inside the freeze; only while it is still a loop-device mount (never the file system that
/// happens to hold the path now). A volume that is not frozen answers EINVAL, which is fine.
fn thaw_after_crash(mount: &Path) {
    if !mount_source(mount).is_some_and(|source| source.starts_with("/dev/loop")) {
        return;
    }
    match File::open(mount).map(ioctl::thaw) {
        Ok(Ok(())) => tracing::warn!(
            volume = %mount.display(),
            "loop-image provider: thawed a volume that a set cut short by a crash left frozen"
        ),
        Ok(Err(Errno::EINVAL)) => {}
        Ok(Err(errno)) => tracing::error!(
            volume = %mount.display(),
            "loop-image provider: cannot thaw a volume a crashed set may have left frozen: \
             FITHAW: {errno}; run `fsfreeze --unfreeze {}`",
            mount.display()
        ),
        Err(error) => tracing::error!(
            volume = %mount.display(),
            "loop-image provider: cannot open a volume a crashed set may have left frozen: \
             {error}; run `fsfreeze --unfreeze {}` if it is",
            mount.display()
        ),
    }
}

fn delete_image(image: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(image) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[async_trait]
impl Provider for LoopImageProvider {
    fn info(&self) -> ProviderInfo {
        self.info.clone()
    }

    async fn is_volume_supported(
        &self,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<VolumeSupport, ProviderError> {
        let volume = PathBuf::from(volume);
        let protected = self.protected.clone();
        common::blocking(PROVIDER, move || {
            Ok(match check_volume(&volume, context, &protected) {
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
        let checked = {
            let volume = PathBuf::from(volume);
            let protected = self.protected.clone();
            common::blocking(PROVIDER, move || {
                Ok(check_volume(&volume, context, &protected))
            })
            .await?
        };
        let found = checked.map_err(|reason| {
            ProviderError::new(
                codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
                format!("loop-image provider cannot snapshot {volume}: {reason}"),
            )
        })?;
        let mut index = lock(&self.store.index);
        // PROV-SEQ-2: a new set id means any unfinished preparation of another set is stale.
        index.entries.retain(|_, e| {
            e.record.set_id == set
                || !matches!(
                    e.record.state,
                    SnapshotState::Preparing | SnapshotState::ProcessingPrepare
                )
        });
        if index.entries.contains_key(&snapshot) {
            return Err(ProviderError::new(
                codes::E_INVALIDARG,
                format!("loop-image provider: shadow copy {snapshot} of {volume} already exists"),
            ));
        }
        let others: Vec<LoopBacked> = index
            .entries
            .values()
            .filter(|e| e.record.set_id == set)
            .map(|e| e.loop_volume.clone())
            .collect();
        check_set(&found, &others, volume)?;
        let order = index.take_order();
        let image = found
            .backing
            .parent()
            .unwrap_or(Path::new("/"))
            .join(format!(".shadowcopy-{snapshot}.img"));
        index.entries.insert(
            snapshot,
            Entry {
                record: common::preparing_record(set, snapshot, volume, context, self.info.id),
                order,
                loop_volume: found,
                image,
                open: None,
                on_disk: false,
                freeze_window: None,
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
        let recorded: Vec<(SnapshotId, String, LoopBacked)> = {
            let index = lock(&self.store.index);
            members
                .iter()
                .filter_map(|id| index.entries.get(id))
                .map(|e| {
                    (
                        e.record.snapshot_id,
                        e.record.volume.clone(),
                        e.loop_volume.clone(),
                    )
                })
                .collect()
        };
        let protected = self.protected.clone();
        let prepared = common::blocking(PROVIDER, move || {
            // Check the whole set again: devices may have been swapped since BeginPrepare.
            let mut seen: Vec<LoopBacked> = Vec::new();
            let mut opened = Vec::new();
            for (id, volume, before) in recorded {
                let now = check_volume(Path::new(&volume), SnapshotContext::Backup, &protected)
                    .map_err(|reason| {
                        ProviderError::new(
                            codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
                            format!("loop-image provider cannot snapshot {volume}: {reason}"),
                        )
                    })?;
                if now != before {
                    return Err(ProviderError::new(
                        codes::VSS_E_BAD_STATE,
                        format!(
                            "loop-image provider: {volume} changed since it was added to the set \
                             (was {} backed by {}, now {} backed by {})",
                            before.device.display(),
                            before.backing.display(),
                            now.device.display(),
                            now.backing.display()
                        ),
                    ));
                }
                check_set(&now, &seen, &volume)?;
                let open = |path: &Path| {
                    File::open(path).map_err(|e| {
                        io_error(e, &format!("open(2) of {}", path.display()), &volume)
                    })
                };
                let volume_file = open(&now.mount)?;
                let backing = open(&now.backing)?;
                nix::unistd::syncfs(&volume_file).map_err(|errno| {
                    syscall_error(errno, &format!("syncfs(2) of {volume}"), &volume)
                })?;
                seen.push(now);
                opened.push((
                    id,
                    OpenVolume {
                        volume: volume_file,
                        backing,
                    },
                ));
            }
            Ok(opened)
        })
        .await?;
        {
            let mut index = lock(&self.store.index);
            for (id, open) in prepared {
                if let Some(entry) = index.entries.get_mut(&id)
                    && entry.record.state == SnapshotState::ProcessingPrepare
                {
                    entry.open = Some(open);
                    entry.record.state = SnapshotState::Prepared;
                }
            }
        }
        // The write-ahead intent, before the freeze: a clone a crash leaves behind is found.
        self.store.record(set, SnapshotState::Prepared).await
    }

    async fn pre_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        common::fault_point(PROVIDER, "pre-commit").await?;
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
        let members = self.store.advance(
            set,
            ProviderStep::CommitSnapshots,
            SnapshotState::Precommitted,
            SnapshotState::ProcessingCommit,
        )?;
        let mut items = Vec::new();
        {
            let mut index = lock(&self.store.index);
            for id in &members {
                let Some(entry) = index.entries.get_mut(id) else {
                    continue;
                };
                let Some(open) = entry.open.take() else {
                    return Err(ProviderError::new(
                        codes::VSS_E_BAD_STATE,
                        format!(
                            "loop-image provider: {} was not prepared (EndPrepareSnapshots did \
                             not open it)",
                            entry.record.volume
                        ),
                    ));
                };
                items.push(CommitItem {
                    id: *id,
                    volume: entry.record.volume.clone(),
                    open,
                    image: entry.image.clone(),
                });
            }
        }
        let (index, limit) = (self.store.index.clone(), self.commit_timeout);
        let frozen = Arc::new(Mutex::new(Frozen::default()));
        lock(&index).extra.0.push((set, frozen.clone()));
        let result = common::blocking(PROVIDER, {
            let index = index.clone();
            let frozen = frozen.clone();
            move || commit_set(&index, items, limit, frozen)
        })
        .await;
        lock(&index)
            .extra
            .0
            .retain(|(_, f)| !Arc::ptr_eq(f, &frozen));
        result
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
        // Thawed now: the commit's figures can be logged.
        let index = lock(&self.store.index);
        for entry in members.iter().filter_map(|id| index.entries.get(id)) {
            tracing::info!(
                volume = %entry.record.volume,
                snapshot = %entry.record.snapshot_id,
                image = %entry.image.display(),
                freeze_ms = entry.freeze_window.unwrap_or_default().as_secs_f64() * 1e3,
                "loop image cloned"
            );
        }
        Ok(())
    }

    async fn post_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        common::fault_point(PROVIDER, "post-final-commit").await?;
        self.store.post_final_commit(set).await
    }

    async fn abort_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        // A commit of this set that is still running (the coordinator gave up on it and dropped
        // the call, so the commit's own clean-up after it never runs) may hold the volumes frozen:
        // thaw them now, as the watchdog would; the commit then fails.
        let in_flight: Vec<Arc<Mutex<Frozen>>> = {
            let mut index = lock(&self.store.index);
            let (of_set, others) = std::mem::take(&mut index.extra.0)
                .into_iter()
                .partition(|(s, _)| *s == set);
            index.extra.0 = others;
            of_set.into_iter().map(|(_, frozen)| frozen).collect()
        };
        for frozen in in_flight {
            let mut frozen = lock(&frozen);
            if !frozen.volumes.is_empty() {
                tracing::warn!(%set, "loop-image provider: AbortSnapshots thaws the volumes a commit still held frozen");
            }
            frozen.watchdog_fired = true;
            thaw_locked(&mut frozen);
        }
        self.store.abort(set).await
    }

    async fn delete_snapshots(&self, target: DeleteTarget) -> Result<usize, ProviderError> {
        common::fault_point(PROVIDER, "delete").await?;
        self.store.delete(target).await
    }

    async fn query_snapshots(&self) -> Result<Vec<SnapshotRecord>, ProviderError> {
        Ok(self.store.query())
    }
}

/// One volume of a commit.
struct CommitItem {
    id: SnapshotId,
    volume: String,
    open: OpenVolume,
    image: PathBuf,
}

/// The frozen volumes of one commit, shared by the committing thread, its watchdog and
/// AbortSnapshots.
#[derive(Debug, Default)]
struct Frozen {
    /// Frozen and not yet thawed: the volume's open root and its name.
    volumes: Vec<(File, String)>,
    /// The watchdog (or AbortSnapshots) thawed the set: whatever is frozen from now on is thawed
    /// at once.
    watchdog_fired: bool,
    /// Thaws that failed, for the error.
    thaw_failures: Vec<String>,
}

/// Thaws every volume it holds when dropped (or when [`FreezeGuard::thaw_all`] runs first),
/// whatever happened: an error, a panic, or the watchdog.
struct FreezeGuard(Arc<Mutex<Frozen>>);

impl FreezeGuard {
    /// Freezes the file system of `file`, or refuses when the watchdog already fired.
    fn freeze(&self, file: File, volume: &str) -> Result<(), ProviderError> {
        ioctl::freeze(&file).map_err(|errno| syscall_error(errno, "FIFREEZE", volume))?;
        let mut frozen = lock(&self.0);
        frozen.volumes.push((file, volume.to_string()));
        if frozen.watchdog_fired {
            thaw_locked(&mut frozen);
            return Err(hold_timeout());
        }
        Ok(())
    }

    fn thaw_all(&self) {
        thaw_locked(&mut lock(&self.0));
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        self.thaw_all();
    }
}

fn thaw_locked(frozen: &mut Frozen) {
    for (file, volume) in frozen.volumes.drain(..).rev() {
        if let Err(errno) = ioctl::thaw(&file) {
            frozen
                .thaw_failures
                .push(format!("FITHAW of {volume} failed: {errno}"));
        }
    }
}

fn hold_timeout() -> ProviderError {
    ProviderError::new(
        codes::VSS_E_HOLD_WRITES_TIMEOUT,
        "loop-image provider: CommitSnapshots overran its limit; the volumes were thawed and \
         the set failed",
    )
}

/// Stops the watchdog when dropped.
struct Done(Arc<(Mutex<bool>, Condvar)>);

impl Drop for Done {
    fn drop(&mut self) {
        *self.0.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.1.notify_all();
    }
}

/// Freeze all, clone each, thaw all (see the module documentation). Runs on a blocking thread
/// and records the outcome itself, so that it is right even when the coordinator dropped the
/// future: clones of entries aborted or deleted meanwhile are deleted again.
fn commit_set(
    index: &Arc<Mutex<Index>>,
    items: Vec<CommitItem>,
    limit: Duration,
    frozen: Arc<Mutex<Frozen>>,
) -> Result<(), ProviderError> {
    let started = Instant::now();
    let guard = FreezeGuard(frozen.clone());
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let _done = Done(done.clone());
    {
        let (frozen, done) = (frozen.clone(), done.clone());
        std::thread::spawn(move || {
            let (lock_done, condvar) = &*done;
            let finished = lock_done.lock().unwrap_or_else(|p| p.into_inner());
            let (finished, _) = condvar
                .wait_timeout_while(finished, limit, |finished| !*finished)
                .unwrap_or_else(|p| p.into_inner());
            if !*finished {
                let mut frozen = lock(&frozen);
                frozen.watchdog_fired = true;
                thaw_locked(&mut frozen);
            }
        });
    }
    let mut made: Vec<PathBuf> = Vec::new();
    let outcome = (|| {
        let mut sources = Vec::with_capacity(items.len());
        let frozen_at = Instant::now();
        for item in &items {
            let root = item
                .open
                .volume
                .try_clone()
                .map_err(|e| io_error(e, "dup(2) of the volume's descriptor", &item.volume))?;
            guard.freeze(root, &item.volume)?;
            sources.push(&item.open.backing);
        }
        // The fault point of tests, inside the freeze: a hang here is what the watchdog is for.
        common::fault_point_blocking(PROVIDER, "commit")?;
        for (item, backing) in items.iter().zip(sources) {
            if lock(&frozen).watchdog_fired {
                return Err(hold_timeout());
            }
            let target = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&item.image)
                .map_err(|e| {
                    io_error(
                        e,
                        &format!("open(2) O_CREAT|O_EXCL of {}", item.image.display()),
                        &item.volume,
                    )
                })?;
            made.push(item.image.clone());
            ioctl::ficlone(&target, backing).map_err(|errno| {
                syscall_error(
                    errno,
                    &format!("FICLONE to {}", item.image.display()),
                    &item.volume,
                )
            })?;
        }
        guard.thaw_all();
        let window = frozen_at.elapsed();
        let frozen = lock(&frozen);
        if frozen.watchdog_fired || started.elapsed() > limit {
            return Err(hold_timeout());
        }
        if !frozen.thaw_failures.is_empty() {
            return Err(ProviderError::new(
                codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
                format!("loop-image provider: {}", frozen.thaw_failures.join("; ")),
            ));
        }
        Ok(window)
    })();
    // Thaw before anything else happens on any path (the guard's Drop would do it too).
    guard.thaw_all();
    drop(guard);
    let window = match outcome {
        Ok(window) => window,
        Err(error) => {
            for image in &made {
                if let Err(e) = delete_image(image) {
                    tracing::error!(image = %image.display(), "cannot delete a failed clone: {e}");
                }
            }
            let mut index = lock(index);
            for item in &items {
                if let Some(entry) = index.entries.get_mut(&item.id)
                    && entry.record.state == SnapshotState::ProcessingCommit
                {
                    entry.record.state = SnapshotState::Precommitted;
                }
            }
            return Err(error);
        }
    };
    let mut index = lock(index);
    let mut lost = Vec::new();
    for item in &items {
        match index.entries.get_mut(&item.id) {
            Some(entry) if entry.record.state == SnapshotState::ProcessingCommit => {
                entry.on_disk = true;
                entry.freeze_window = Some(window);
                entry.record.state = SnapshotState::Committed;
                entry.record.created = VssTimestamp::now();
                // EXP-4: the image file is the copy's device object.
                entry.record.snapshot_path = Some(entry.image.to_string_lossy().into_owned());
            }
            _ => lost.push(item),
        }
    }
    drop(index);
    if lost.is_empty() {
        return Ok(());
    }
    for item in &lost {
        let cleanup = delete_image(&item.image);
        tracing::warn!(volume = %item.volume, image = %item.image.display(), ?cleanup, "loop image clone completed after its set was aborted; deleted it");
    }
    Err(ProviderError::new(
        codes::VSS_E_BAD_STATE,
        "loop-image provider: the clones completed after their set was aborted and were deleted \
         again",
    ))
}

/// A volume may not be frozen together with the one that holds its backing image (or the one
/// whose image it holds), nor twice.
fn check_set(new: &LoopBacked, others: &[LoopBacked], volume: &str) -> Result<(), ProviderError> {
    for other in others {
        let reason = if other.dev == new.dev {
            Some(format!(
                "it is the same file system as {} ({}), already in the set",
                other.mount.display(),
                other.device.display()
            ))
        } else if new.backing_dev == other.dev {
            Some(format!(
                "its backing file {} lies on {}, another volume of the set; freezing that volume \
                 would block the clone until thaw (a deadlock): snapshot them in separate sets",
                new.backing.display(),
                other.mount.display()
            ))
        } else if other.backing_dev == new.dev {
            Some(format!(
                "it holds the backing file {} of {}, another volume of the set; freezing it \
                 would block that clone until thaw (a deadlock): snapshot them in separate sets",
                other.backing.display(),
                other.mount.display()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ProviderError::new(
                codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
                format!("loop-image provider cannot snapshot {volume} in this set: {reason}"),
            ));
        }
    }
    Ok(())
}

/// Whether `volume` is a loop-backed mount this provider can freeze and clone (PROV-R-1); if not,
/// why and what would work.
/// `protected` lists more directories whose file systems must never be frozen (the catalog's).
fn check_volume(
    volume: &Path,
    context: SnapshotContext,
    protected: &[PathBuf],
) -> Result<LoopBacked, String> {
    let shown = volume.display();
    if matches!(
        context,
        SnapshotContext::ClientAccessible | SnapshotContext::ClientAccessibleWriters
    ) {
        return Err(format!(
            "context {context} is reserved for the system provider (CTX-1), which on Linux is the \
             btrfs provider: make client-accessible copies of a btrfs subvolume"
        ));
    }
    if !volume.is_absolute() {
        return Err(format!("{shown} is not an absolute path"));
    }
    let mount = volume
        .canonicalize()
        .map_err(|e| format!("cannot resolve {shown}: {e}"))?;
    let Some(source) = mount_source(&mount) else {
        return Err(format!(
            "{shown} is not a mount point; add the mount point of a file system on a loop device"
        ));
    };
    let dev = std::fs::metadata(&mount)
        .map_err(|e| format!("stat(2) of {shown} failed: {e}"))?
        .dev();
    let fixed = [
        ("the root file system", Path::new("/")),
        ("the file system of the current directory", Path::new(".")),
        (
            "the file system of the coordinator's state",
            Path::new(COORDINATOR_STATE_DIR),
        ),
    ];
    let catalogs = protected
        .iter()
        .map(|dir| ("the file system of the provider's catalog", dir.as_path()));
    for (what, path) in fixed.into_iter().chain(catalogs) {
        if std::fs::metadata(path).is_ok_and(|m| m.dev() == dev) {
            return Err(format!(
                "{shown} is {what} ({}); the loop-image provider never freezes it",
                path.display()
            ));
        }
    }
    let name = source
        .strip_prefix("/dev/")
        .filter(|n| {
            n.strip_prefix("loop")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .ok_or_else(|| {
            format!(
                "{shown} is mounted from {source}, not from a loop device (/dev/loopN); the \
                 loop-image provider snapshots file systems kept in image files"
            )
        })?;
    let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .map_err(|e| format!("{source} has no backing file ({e})"))?;
    let backing = backing.trim_end_matches('\n');
    if backing.ends_with(" (deleted)") {
        return Err(format!(
            "the backing file of {source} was deleted ({backing})"
        ));
    }
    let backing = PathBuf::from(backing);
    let magic = statfs(&backing)
        .map_err(|e| format!("statfs(2) of {} failed: {e}", backing.display()))?
        .filesystem_type();
    if magic != XFS_SUPER_MAGIC && magic != BTRFS_SUPER_MAGIC {
        let raw = magic.0 as u64;
        return Err(format!(
            "the backing file {} of {shown} is on {} (statfs f_type {raw:#x}), which cannot \
             clone files (no FICLONE); keep the image on xfs with reflink=1 or on btrfs",
            backing.display(),
            common::fs_name(raw)
        ));
    }
    let backing_dev = std::fs::metadata(&backing)
        .map_err(|e| format!("stat(2) of {} failed: {e}", backing.display()))?
        .dev();
    if backing_dev == dev {
        return Err(format!(
            "the backing file {} lies on {shown} itself",
            backing.display()
        ));
    }
    Ok(LoopBacked {
        mount,
        device: PathBuf::from(source),
        backing,
        dev,
        backing_dev,
    })
}

/// The source device of the mount at exactly `mount` (the topmost one), from
/// /proc/self/mountinfo.
fn mount_source(mount: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().rev().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let point = before.split(' ').nth(4)?;
        (Path::new(&unescape_mountinfo(point)) == mount)
            .then(|| after.split(' ').nth(1).map(unescape_mountinfo))
            .flatten()
    })
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
        let info = LoopImageProvider::new().info();
        assert_eq!(info.id, LOOP_IMAGE_PROVIDER_ID);
        assert_eq!(info.name, "loop-image");
    }

    /// Thaw is sacred: a panic while the set is frozen still thaws it (the guard's Drop runs
    /// during unwinding). Freezes only an ext4 made for this test on a loop device.
    #[test]
    fn a_panic_while_frozen_thaws() {
        use shadowcopy_test_support::{FsKind, LoopVolume, MIB};
        let host = LoopVolume::new(FsKind::Xfs, 512 * MIB).expect("a host loop volume (root)");
        let vol = LoopVolume::new_in(FsKind::Ext4, 64 * MIB, host.mount_point())
            .expect("an inner ext4 loop volume");
        let checked = check_volume(vol.mount_point(), SnapshotContext::Backup, &[]).unwrap();
        assert_eq!(checked.device, vol.device());
        let root = File::open(vol.mount_point()).unwrap();
        let panicked = std::panic::catch_unwind(|| {
            let guard = FreezeGuard(Arc::default());
            guard.freeze(root, "inner").unwrap();
            panic!("a bug while frozen");
        });
        assert!(panicked.is_err());
        let file = vol.path("after-panic.txt");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(std::fs::write(file, "thawed")));
        match receiver.recv_timeout(Duration::from_secs(2)) {
            Ok(Ok(())) => {}
            other => {
                let _ = std::process::Command::new("fsfreeze")
                    .arg("-u")
                    .arg(vol.mount_point())
                    .status();
                panic!("still frozen after the panic: {other:?}");
            }
        }
        vol.close().expect("inner cleaned up");
        host.close().expect("host cleaned up");
    }

    /// The root file system, a non-mount point and a non-loop mount are refused with a reason.
    #[test]
    fn non_loop_volumes_are_refused() {
        let root = check_volume(Path::new("/"), SnapshotContext::Backup, &[]).unwrap_err();
        assert!(root.contains("root file system"), "{root}");
        let proc_ = check_volume(Path::new("/proc"), SnapshotContext::Backup, &[]).unwrap_err();
        assert!(proc_.contains("not from a loop device"), "{proc_}");
        let missing =
            check_volume(Path::new("/nonexistent/x"), SnapshotContext::Backup, &[]).unwrap_err();
        assert!(missing.contains("cannot resolve"), "{missing}");
        let relative = check_volume(Path::new("rel"), SnapshotContext::Backup, &[]).unwrap_err();
        assert!(relative.contains("absolute"), "{relative}");
    }
}
