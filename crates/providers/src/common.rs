//! What every built-in provider shares: the step-by-step state walk of PROV-ST-1, blocking work off
//! the async runtime, and locks that survive a panic elsewhere.

use std::sync::{Mutex, MutexGuard};

use shadowcopy_coordinator::{ProviderError, ProviderStep, SnapshotRecord};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::SnapshotState;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};

/// A provider's index entry for one shadow copy.
pub(crate) trait Tracked {
    /// The record the coordinator sees.
    fn record(&self) -> &SnapshotRecord;
    /// The same, to change its state.
    fn record_mut(&mut self) -> &mut SnapshotRecord;
    /// The order the volume was added in; steps run in it.
    fn order(&self) -> u64;
}

/// Moves every shadow copy of `set` from `from` to `to`, in the order the volumes were added, and
/// returns their ids; refuses a step out of order (VSS_E_BAD_STATE naming the volume, PROV-ST-1).
pub(crate) fn advance<E: Tracked>(
    provider: &str,
    set: SnapshotSetId,
    step: ProviderStep,
    mut members: Vec<&mut E>,
    from: SnapshotState,
    to: SnapshotState,
) -> Result<Vec<SnapshotId>, ProviderError> {
    if members.is_empty() {
        return Err(ProviderError::new(
            codes::VSS_E_BAD_STATE,
            format!("{provider} provider: {step} for set {set}, which has no volume with it"),
        ));
    }
    if let Some(wrong) = members.iter().find(|e| e.record().state != from) {
        return Err(ProviderError::new(
            codes::VSS_E_BAD_STATE,
            format!(
                "{provider} provider: {step} out of order: the shadow copy of {} in set {set} is \
                 {}, not {from}",
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
