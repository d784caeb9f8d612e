//! What the coordinator tells its host about every snapshot set it ran: the outcome, the set's
//! result code, how long DoSnapshotSet took and how long the writers were frozen.
//!
//! The host installs a [`SetObserver`] with [`crate::Coordinator::observe_snapshot_sets`]; the
//! daemon's Prometheus metrics are one. The coordinator knows these facts first-hand (it sends
//! Freeze and hears Thaw answered), but it must not know about HTTP or any metrics format, so it
//! only hands over a [`SnapshotSetReport`] and the host counts.

use std::time::Duration;

use shadowcopy_metadata::SnapshotSetId;
use shadowcopy_metadata::codes::ErrorCode;
use shadowcopy_metadata::enums::SnapshotContext;

/// Told about every snapshot set once its DoSnapshotSet is over.
///
/// Called synchronously on the task that ran the set, or from a `Drop` when the set was cut short
/// (a dropped future, a panic), so an implementation must be quick, must not block on I/O and
/// must not panic: a panic while another one unwinds aborts the process.
pub trait SetObserver: Send + Sync {
    /// One snapshot set is over, however it ended.
    fn snapshot_set_finished(&self, report: &SnapshotSetReport);
}

/// How a snapshot set ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// Every shadow copy of the set was created.
    Created,
    /// The set failed with this code (BK-SNAP-8); none of its copies survives.
    Failed(ErrorCode),
    /// DoSnapshotSet was cut short before it returned: its requester's call was dropped (the
    /// session ended mid-set) or coordinator code panicked. The guards abort the writers and
    /// providers, so the set is not created.
    Interrupted,
}

/// One volume of a set and the provider that copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetVolume {
    /// The volume (its mount point, as the set holds it).
    pub volume: String,
    /// The provider's name.
    pub provider: String,
}

/// What the coordinator knows about one snapshot set once DoSnapshotSet is over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotSetReport {
    /// The set.
    pub set_id: SnapshotSetId,
    /// Its context.
    pub context: SnapshotContext,
    /// Its volumes, in the order they were added.
    pub volumes: Vec<SetVolume>,
    /// How many writers took part in DoSnapshotSet.
    pub writers: usize,
    /// How it ended.
    pub outcome: SetOutcome,
    /// The freeze window: from the first Freeze sent to the last Thaw answered, or, when the set
    /// failed while writers were frozen, to the last Abort answered. `None` when no writer was
    /// sent Freeze (no writers, none left after PrepareForSnapshot, or a failure before Freeze),
    /// and for an interrupted set, whose writers are aborted in the background.
    pub freeze_window: Option<Duration>,
    /// How long DoSnapshotSet ran, from its first provider call to its end.
    pub duration: Duration,
}
