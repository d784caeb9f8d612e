//! Coordinator settings: per-event writer timeouts (CFG-16), freeze-timeout caps (CFG-9), the
//! commit window (CFG-10, LIMIT-5), provider call timeouts and the shadow copy limits (LIMIT-1,
//! LIMIT-2, CFG-1, CFG-2).
//!
//! The daemon fills this from its config file; tests shorten the windows. Nothing here is read
//! from disk: the coordinator library does no I/O.

use std::collections::HashMap;
use std::time::Duration;

use shadowcopy_metadata::WriterClassId;

/// The fixed flush-and-hold window (LIMIT-5, CFG-10): 10 s.
pub const COMMIT_WINDOW: Duration = Duration::from_secs(10);

/// The default freeze timeout a writer declares (ROLE-8, LIMIT-6): 60 000 ms.
pub const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_millis(60_000);

/// The most volumes one snapshot set may hold (LIMIT-1, CFG-2).
pub const MAX_VOLUMES_PER_SET: usize = 64;

/// The most shadow copies one volume may hold (LIMIT-2, CFG-2). Fixed: only tests lower it,
/// through [`CoordinatorConfig::max_snapshots_per_volume`], so that they need not make 512 copies.
pub const MAX_SNAPSHOTS_PER_VOLUME: usize = 512;

/// How many client-accessible shadow copies a volume keeps by default before the oldest are
/// deleted (CFG-1, `limits.max_client_accessible_per_volume`, VSS's MaxShadowCopies).
pub const DEFAULT_MAX_CLIENT_ACCESSIBLE_PER_VOLUME: usize = 64;

/// How long the coordinator waits for a writer's reply to each event (CFG-16).
///
/// The docs give no timeouts for these events (CFG-16 is OPEN); the proposal adopted here is one
/// configurable timeout per event, 60 s by default. Freeze has none here: its reply must come within
/// the writer's own freeze timeout (BK-SNAP-5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTimeouts {
    /// Identify (B5, R3).
    pub identify: Duration,
    /// PrepareForBackup (B9).
    pub prepare_for_backup: Duration,
    /// PrepareForSnapshot (B11).
    pub prepare_for_snapshot: Duration,
    /// Thaw (B11).
    pub thaw: Duration,
    /// PostSnapshot (B11).
    pub post_snapshot: Duration,
    /// Abort (BK-ABORT-3).
    pub abort: Duration,
    /// BackupComplete (B13).
    pub backup_complete: Duration,
    /// BackupShutdown (B15).
    pub backup_shutdown: Duration,
    /// PreRestore (R5).
    pub pre_restore: Duration,
    /// PostRestore (R8).
    pub post_restore: Duration,
}

impl EventTimeouts {
    /// The same timeout for every event.
    pub const fn uniform(timeout: Duration) -> Self {
        EventTimeouts {
            identify: timeout,
            prepare_for_backup: timeout,
            prepare_for_snapshot: timeout,
            thaw: timeout,
            post_snapshot: timeout,
            abort: timeout,
            backup_complete: timeout,
            backup_shutdown: timeout,
            pre_restore: timeout,
            post_restore: timeout,
        }
    }
}

impl Default for EventTimeouts {
    fn default() -> Self {
        Self::uniform(Duration::from_secs(60))
    }
}

/// How long the coordinator waits for provider calls outside the commit window.
///
/// The spec sets no limits here; without one a hung provider would hold the set (and its frozen
/// writers' sessions) forever, so every call is bounded and a provider that misses the bound is
/// treated as having failed with VSS_E_UNEXPECTED_PROVIDER_ERROR (PROV-R-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderTimeouts {
    /// EndPrepareSnapshots, which may wait for long preparation such as a plex sync (PROV-SEQ-1).
    pub end_prepare: Duration,
    /// Every other call: support checks, BeginPrepareSnapshot, the final commits, abort, delete, query.
    pub call: Duration,
}

impl Default for ProviderTimeouts {
    fn default() -> Self {
        ProviderTimeouts {
            end_prepare: Duration::from_secs(600),
            call: Duration::from_secs(60),
        }
    }
}

/// Everything the coordinator can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Per-event writer timeouts (CFG-16).
    pub event_timeouts: EventTimeouts,
    /// Provider call timeouts outside the commit window.
    pub provider_timeouts: ProviderTimeouts,
    /// The cap on PreCommit + Commit + PostCommit of all providers (CFG-10, LIMIT-5). Fixed at 10 s
    /// in production; CFG-10 allows a test-only override.
    pub commit_window: Duration,
    /// A cap on every writer's freeze timeout (CFG-9: the config may only lower what a writer declares).
    pub max_freeze_timeout: Option<Duration>,
    /// Per-class caps on the freeze timeout (CFG-9, `writers.<class>.max_freeze_ms`).
    pub max_freeze_timeout_per_class: HashMap<WriterClassId, Duration>,
    /// The most shadow copies of any context one volume may hold; AddToSnapshotSet refuses a
    /// volume that has this many (LIMIT-2). [`MAX_SNAPSHOTS_PER_VOLUME`] in production: CFG-2 makes
    /// it a constant, so the daemon never changes it; tests lower it.
    pub max_snapshots_per_volume: usize,
    /// The most client-accessible shadow copies one volume keeps (CFG-1, 1 to 512): after a
    /// client-accessible set is created, the oldest such copies of each of its volumes are deleted
    /// until this many remain.
    pub max_client_accessible_per_volume: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            event_timeouts: EventTimeouts::default(),
            provider_timeouts: ProviderTimeouts::default(),
            commit_window: COMMIT_WINDOW,
            max_freeze_timeout: None,
            max_freeze_timeout_per_class: HashMap::new(),
            max_snapshots_per_volume: MAX_SNAPSHOTS_PER_VOLUME,
            max_client_accessible_per_volume: DEFAULT_MAX_CLIENT_ACCESSIBLE_PER_VOLUME,
        }
    }
}

impl CoordinatorConfig {
    /// The freeze timeout a writer gets: what it declared, lowered by the caps (CFG-9), never raised.
    pub fn effective_freeze_timeout(&self, class: WriterClassId, declared: Duration) -> Duration {
        let mut timeout = declared;
        if let Some(cap) = self.max_freeze_timeout {
            timeout = timeout.min(cap);
        }
        if let Some(cap) = self.max_freeze_timeout_per_class.get(&class) {
            timeout = timeout.min(*cap);
        }
        timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CFG-9: the config may only lower a writer's freeze timeout.
    #[test]
    fn caps_only_lower_the_freeze_timeout() {
        let class = WriterClassId::new_random();
        let mut config = CoordinatorConfig {
            max_freeze_timeout: Some(Duration::from_secs(30)),
            ..CoordinatorConfig::default()
        };
        assert_eq!(
            config.effective_freeze_timeout(class, Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(
            config.effective_freeze_timeout(class, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        config
            .max_freeze_timeout_per_class
            .insert(class, Duration::from_secs(2));
        assert_eq!(
            config.effective_freeze_timeout(class, Duration::from_secs(60)),
            Duration::from_secs(2)
        );
    }
}
