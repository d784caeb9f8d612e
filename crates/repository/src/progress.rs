//! Progress reporting: the [`Progress`] trait callers implement, and the `rustic_core` progress
//! bars that forward rustic's byte counters to it.
//!
//! rustic asks its `ProgressBars` for a bar per phase (spinners, counters, byte counters). Only
//! the byte counters carry what a caller wants to show (bytes read during a backup, bytes written
//! during a restore), so every other kind is hidden. A hidden byte counter also tells rustic not
//! to walk the source a second time just to learn its size.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustic_core::{ProgressBars, ProgressType, RusticProgress};

/// Progress callbacks for a backup or a restore. They are called from rustic's worker threads.
pub trait Progress: Send + Sync {
    /// The total number of bytes the operation will process, once it is known (a backup learns it
    /// from a scan of the sources that runs alongside the backup, so it may come late or never).
    fn set_total(&self, bytes: u64);
    /// `bytes` more bytes were processed.
    fn advance(&self, bytes: u64);
}

/// How rustic's byte counter maps onto the caller's [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forwarding {
    /// rustic's length is the total (a backup: the scan of the sources).
    Total,
    /// Only the increments are passed on; the restore sets the total itself, once for all units,
    /// because rustic sets a length per unit.
    AdvanceOnly,
}

/// `ProgressBars` for `rustic_core::Repository::new_with_progress`.
#[derive(Clone)]
pub(crate) struct Bars {
    target: Option<Arc<dyn Progress>>,
    forwarding: Forwarding,
    /// Bytes passed on so far, so a restore can top up what rustic did not count.
    advanced: Arc<AtomicU64>,
}

impl fmt::Debug for Bars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bars")
            .field("target", &self.target.is_some())
            .field("forwarding", &self.forwarding)
            .finish()
    }
}

impl Bars {
    pub(crate) fn new(target: Option<Arc<dyn Progress>>, forwarding: Forwarding) -> Self {
        Self {
            target,
            forwarding,
            advanced: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes passed on to the caller so far (by rustic's counters and by [`Bars::advance`]).
    pub(crate) fn advanced(&self) -> u64 {
        self.advanced.load(Ordering::Relaxed)
    }

    /// Passes on `bytes` that rustic does not count itself.
    pub(crate) fn advance(&self, bytes: u64) {
        if let Some(target) = &self.target
            && bytes > 0
        {
            self.advanced.fetch_add(bytes, Ordering::Relaxed);
            target.advance(bytes);
        }
    }

    pub(crate) fn set_total(&self, bytes: u64) {
        if let Some(target) = &self.target {
            target.set_total(bytes);
        }
    }
}

impl ProgressBars for Bars {
    fn progress(&self, progress_type: ProgressType, _prefix: &str) -> rustic_core::Progress {
        match (progress_type, &self.target) {
            (ProgressType::Bytes, Some(_)) => rustic_core::Progress::new(Forward(self.clone())),
            _ => rustic_core::Progress::hidden(),
        }
    }
}

/// One of rustic's byte counters, passed on to the caller.
#[derive(Debug)]
struct Forward(Bars);

impl RusticProgress for Forward {
    fn is_hidden(&self) -> bool {
        false
    }

    fn set_length(&self, len: u64) {
        if self.0.forwarding == Forwarding::Total {
            self.0.set_total(len);
        }
    }

    fn set_title(&self, _title: &str) {}

    fn inc(&self, inc: u64) {
        self.0.advance(inc);
    }

    fn finish(&self) {}
}
