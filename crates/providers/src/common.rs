//! What every built-in provider shares: its [`Store`] of shadow copies (the index, and the catalog
//! when there is one) with the step-by-step state walk of PROV-ST-1, the steps that only read or
//! shrink the index (AbortSnapshots, DeleteSnapshots, QuerySnapshots) and the removal of copies
//! behind them; blocking work off the async runtime, locks that survive a panic elsewhere, and
//! failed syscalls as errors that name the provider. The catalog's part of the store (recovery at
//! start-up, the writes at EndPrepare and PostFinalCommit) is in `crate::catalog`. Each provider
//! keeps only how it makes, deletes and checks its copies, and tells the store through
//! [`Tracked`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use shadowcopy_coordinator::{DeleteTarget, ProviderError, ProviderStep, SnapshotRecord};
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::enums::{SnapshotAttributes, SnapshotContext, SnapshotState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, VssTimestamp};

use crate::catalog::{Catalog, CatalogEntry};

/// A provider's index entry for one shadow copy.
pub(crate) trait Tracked: Send + 'static {
    /// The provider's name in messages ("btrfs").
    const PROVIDER: &'static str;
    /// The record the coordinator sees.
    fn record(&self) -> &SnapshotRecord;
    /// The same, to change its state.
    fn record_mut(&mut self) -> &mut SnapshotRecord;
    /// The order the volume was added in; steps run in it.
    fn order(&self) -> u64;
    /// The entry the catalog stores for this copy.
    fn catalog_entry(&self) -> CatalogEntry;
    /// The index entry for a copy the catalog lists (its data is on disk), added in `order`.
    fn from_catalog(stored: &CatalogEntry, order: u64) -> Self;
    /// Deletes the copy's data, after the entry left the index; data that was never made, or is
    /// already gone, counts as deleted. Runs on a blocking thread.
    fn delete_data(&mut self) -> Result<(), ProviderError>;
    /// Deletes the data of an orphan the catalog lists (see `Store::open_catalog`).
    fn delete_orphan(stored: &CatalogEntry) -> Result<(), ProviderError>;
}

/// A provider's index of shadow copies, with what else it keeps under the same lock (`extra`).
#[derive(Debug)]
pub(crate) struct Index<E, X> {
    /// The shadow copies by snapshot id.
    pub(crate) entries: BTreeMap<SnapshotId, E>,
    /// The order the next volume is added in.
    next_order: u64,
    /// The provider's own state.
    pub(crate) extra: X,
}

impl<E, X: Default> Default for Index<E, X> {
    fn default() -> Self {
        Index {
            entries: BTreeMap::new(),
            next_order: 0,
            extra: X::default(),
        }
    }
}

impl<E, X> Index<E, X> {
    /// The order of the next volume added, counted up.
    pub(crate) fn take_order(&mut self) -> u64 {
        self.next_order += 1;
        self.next_order - 1
    }
}

/// A provider's shadow copies: the index in memory and the catalog on disk.
#[derive(Debug)]
pub(crate) struct Store<E, X> {
    /// The index, shared with the blocking threads that work on it.
    pub(crate) index: Arc<Mutex<Index<E, X>>>,
    /// The persistent catalog, when the provider was given one (`with_catalog`).
    pub(crate) catalog: Option<Arc<Catalog>>,
}

impl<E, X: Default> Default for Store<E, X> {
    fn default() -> Self {
        Store {
            index: Arc::default(),
            catalog: None,
        }
    }
}

impl<E: Tracked, X: Send + 'static> Store<E, X> {
    /// Moves every shadow copy of `set` from `from` to `to`, in the order the volumes were added,
    /// and returns their ids; refuses a step out of order (VSS_E_BAD_STATE naming the volume,
    /// PROV-ST-1).
    pub(crate) fn advance(
        &self,
        set: SnapshotSetId,
        step: ProviderStep,
        from: SnapshotState,
        to: SnapshotState,
    ) -> Result<Vec<SnapshotId>, ProviderError> {
        let name = E::PROVIDER;
        let mut index = lock(&self.index);
        let mut members: Vec<&mut E> = index
            .entries
            .values_mut()
            .filter(|e| e.record().set_id == set)
            .collect();
        if members.is_empty() {
            return Err(ProviderError::new(
                codes::VSS_E_BAD_STATE,
                format!("{name} provider: {step} for set {set}, which has no volume with it"),
            ));
        }
        if let Some(wrong) = members.iter().find(|e| e.record().state != from) {
            return Err(ProviderError::new(
                codes::VSS_E_BAD_STATE,
                format!(
                    "{name} provider: {step} out of order: the shadow copy of {} in set {set} \
                     is {}, not {from}",
                    wrong.record().volume,
                    wrong.record().state
                ),
            ));
        }
        members.sort_by_key(|e| e.order());
        Ok(members
            .into_iter()
            .map(|entry| {
                let record = entry.record_mut();
                record.state = to;
                record.snapshot_id
            })
            .collect())
    }

    /// AbortSnapshots: deletes every shadow copy of `set` that is not CREATED.
    pub(crate) async fn abort(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let ids: Vec<SnapshotId> = lock(&self.index)
            .entries
            .values()
            .filter(|e| e.record().set_id == set && e.record().state != SnapshotState::Created)
            .map(|e| e.record().snapshot_id)
            .collect();
        let (removed, failure) = self.remove(ids, true).await;
        tracing::info!(%set, removed, "{} provider: set aborted", E::PROVIDER);
        failure.map_or(Ok(()), Err)
    }

    /// DeleteSnapshots by snapshot or set (DEL-1); returns how many were deleted. An unknown
    /// snapshot is VSS_E_OBJECT_NOT_FOUND; a failure tells how many others were deleted.
    pub(crate) async fn delete(&self, target: DeleteTarget) -> Result<usize, ProviderError> {
        let ids: Vec<SnapshotId> = {
            let index = lock(&self.index);
            match &target {
                DeleteTarget::Snapshot(id) => {
                    if !index.entries.contains_key(id) {
                        return Err(ProviderError::new(
                            codes::VSS_E_OBJECT_NOT_FOUND,
                            format!("{} provider has no shadow copy {id}", E::PROVIDER),
                        ));
                    }
                    vec![*id]
                }
                DeleteTarget::Set(set) => index
                    .entries
                    .values()
                    .filter(|e| e.record().set_id == *set)
                    .map(|e| e.record().snapshot_id)
                    .collect(),
            }
        };
        let (removed, failure) = self.remove(ids, false).await;
        match failure {
            None => Ok(removed),
            Some(error) => Err(ProviderError::new(
                error.code,
                format!(
                    "{} ({removed} other shadow copies were deleted)",
                    error.message
                ),
            )),
        }
    }

    /// QuerySnapshots: every shadow copy, in the order the volumes were added.
    pub(crate) fn query(&self) -> Vec<SnapshotRecord> {
        let index = lock(&self.index);
        let mut entries: Vec<&E> = index.entries.values().collect();
        entries.sort_by_key(|e| e.order());
        entries.into_iter().map(|e| e.record().clone()).collect()
    }

    /// Removes `ids` from the index and deletes their data, on one blocking thread that finishes
    /// even if this future is dropped, so that no copy is lost track of. An entry whose data
    /// cannot be deleted goes back into the index (state ABORTED when `aborting`), so that a later
    /// DeleteSnapshots can retry. Those that left the index leave the catalog too; a failure to
    /// write it is only logged, as the next start finds the data gone and drops the entries.
    /// Returns how many were removed and the first failure.
    pub(crate) async fn remove(
        &self,
        ids: Vec<SnapshotId>,
        aborting: bool,
    ) -> (usize, Option<ProviderError>) {
        let (index, catalog) = (self.index.clone(), self.catalog.clone());
        blocking(E::PROVIDER, move || {
            let taken: Vec<E> = {
                let mut index = lock(&index);
                ids.iter()
                    .filter_map(|id| index.entries.remove(id))
                    .collect()
            };
            let mut first_failure = None;
            let mut gone = Vec::new();
            for mut entry in taken {
                match entry.delete_data() {
                    Ok(()) => gone.push(entry.record().snapshot_id),
                    Err(error) => {
                        tracing::error!(volume = %entry.record().volume, "{}", error.message);
                        if aborting {
                            entry.record_mut().state = SnapshotState::Aborted;
                        }
                        let id = entry.record().snapshot_id;
                        lock(&index).entries.insert(id, entry);
                        first_failure.get_or_insert(error);
                    }
                }
            }
            if let Some(catalog) = catalog
                && !gone.is_empty()
                && let Err(error) = catalog.remove(&gone)
            {
                tracing::warn!(
                    removed = gone.len(),
                    "{} provider: {}",
                    E::PROVIDER,
                    error.message
                );
            }
            Ok((gone.len(), first_failure))
        })
        .await
        .unwrap_or_else(|error| (0, Some(error)))
    }
}

/// The fault point `<provider>:<step>` of a test (crate `shadowcopy-faults`, the fault matrix of
/// `docs/RELIABILITY.md`): nothing unless `SHADOWCOPY_FAULTS` names it. An injected failure is the
/// error an unexpected failure of the step gives; `hang` awaits forever, so the coordinator's
/// timeouts decide, as they would for a provider that really hangs.
pub(crate) async fn fault_point(provider: &str, step: &str) -> Result<(), ProviderError> {
    if !shadowcopy_faults::active() {
        return Ok(());
    }
    shadowcopy_faults::point_async(&format!("{provider}:{step}"))
        .await
        .map_err(|injected| injected_error(provider, &injected))
}

/// [`fault_point`] on a blocking thread: `hang` parks the thread for good.
pub(crate) fn fault_point_blocking(provider: &str, step: &str) -> Result<(), ProviderError> {
    if !shadowcopy_faults::active() {
        return Ok(());
    }
    shadowcopy_faults::point(&format!("{provider}:{step}"))
        .map_err(|injected| injected_error(provider, &injected))
}

fn injected_error(provider: &str, injected: &shadowcopy_faults::Injected) -> ProviderError {
    ProviderError::new(
        codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
        format!("{provider} provider: {injected}"),
    )
}

/// Runs blocking work (syscalls, ioctls) on tokio's blocking pool, so that the coordinator's
/// timeouts keep working while it runs.
pub(crate) async fn blocking<T, F>(provider: &str, work: F) -> Result<T, ProviderError>
where
    F: FnOnce() -> Result<T, ProviderError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => Err(ProviderError::new(
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
            format!("{provider} provider: a blocking task failed: {error}"),
        )),
    }
}

/// Locks a provider's state, also after a panic elsewhere poisoned it: every change to it is
/// made whole under the lock, so it stays consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A failed syscall as a provider error (PROV-R-3): no space is VSS_E_INSUFFICIENT_STORAGE, a
/// refused privilege E_ACCESSDENIED, no memory E_OUTOFMEMORY, anything else
/// VSS_E_UNEXPECTED_PROVIDER_ERROR. The message names the provider, the call and the volume.
pub(crate) fn syscall_error(
    provider: &str,
    errno: Errno,
    call: &str,
    volume: &str,
) -> ProviderError {
    ProviderError::new(
        code_for(errno),
        format!("{provider} provider, volume {volume}: {call} failed: {errno}"),
    )
}

/// The VSS code for a failed syscall's errno (see [`syscall_error`]).
pub(crate) fn code_for(errno: Errno) -> ErrorCode {
    match errno {
        Errno::ENOSPC | Errno::EDQUOT => codes::VSS_E_INSUFFICIENT_STORAGE,
        Errno::EPERM | Errno::EACCES => codes::E_ACCESSDENIED,
        Errno::ENOMEM => codes::E_OUTOFMEMORY,
        _ => codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
    }
}

/// A failed I/O call as a provider error: [`syscall_error`] when it carries an errno.
pub(crate) fn io_error(
    provider: &str,
    error: std::io::Error,
    call: &str,
    volume: &str,
) -> ProviderError {
    match error.raw_os_error() {
        Some(raw) => syscall_error(provider, Errno::from_raw(raw), call, volume),
        None => ProviderError::new(
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
            format!("{provider} provider, volume {volume}: {call} failed: {error}"),
        ),
    }
}

/// A readable name for a statfs magic number.
pub(crate) fn fs_name(magic: u64) -> &'static str {
    match magic {
        0xEF53 => "ext2/ext3/ext4",
        0x5846_5342 => "xfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0x6573_5546 => "a FUSE file system",
        0x9FA0 => "procfs",
        _ => "another file system",
    }
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
pub(crate) fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let value = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u16, |v, b| v * 8 + u16::from(b - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(byte) = value {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The record of a shadow copy that BeginPrepareSnapshot starts (PROV-ST-1: PREPARING). Every
/// built-in provider makes copies that are read-only from their first moment (CTX-7: no
/// auto-recovery window) and share blocks with the original (CTX-8: the provider picks
/// DIFFERENTIAL when no method is requested).
pub(crate) fn preparing_record(
    set: SnapshotSetId,
    snapshot: SnapshotId,
    volume: &str,
    context: SnapshotContext,
    provider_id: ProviderId,
) -> SnapshotRecord {
    SnapshotRecord {
        snapshot_id: snapshot,
        set_id: set,
        volume: volume.to_string(),
        snapshot_path: None,
        state: SnapshotState::Preparing,
        attributes: context.attributes()
            | SnapshotAttributes::NO_AUTORECOVERY
            | SnapshotAttributes::DIFFERENTIAL,
        created: VssTimestamp::default(),
        provider_id,
    }
}

/// LIMIT-2 as a provider sees it: refuses a new copy of `volume`, which already has `existing`.
pub(crate) fn check_room(
    provider: &str,
    volume: &str,
    existing: usize,
) -> Result<(), ProviderError> {
    if existing >= crate::btrfs::MAX_SNAPSHOTS_PER_VOLUME {
        return Err(ProviderError::new(
            codes::VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED,
            format!(
                "{provider} provider: {volume} already has {existing} shadow copies, the most a \
                 volume may have (LIMIT-2); delete some first"
            ),
        ));
    }
    Ok(())
}
