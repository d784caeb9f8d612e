//! `SimProvider`: an in-memory provider with fault injection and a shared event log, for tests,
//! the daemon's test mode and benchmarks. It is a test aid, not a stand-in for real providers: its
//! "shadow copies" are records, nothing is copied.
//!
//! It follows PROV-SEQ-1 strictly (a step out of order is refused with VSS_E_BAD_STATE, which
//! catches coordinator bugs), moves each snapshot through the states of PROV-ST-1, discards stale
//! preparation when a new set begins (PROV-SEQ-2), and can fail (with a chosen code), hang (until
//! the coordinator gives up and drops the call) or be slow at any step ([`FaultPlan`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::enums::{ProviderType, SnapshotContext, SnapshotState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, VssTimestamp};
use tokio::time::Instant;

use crate::provider::{
    DeleteTarget, Provider, ProviderError, ProviderInfo, ProviderStep, SnapshotRecord,
    VolumeSupport,
};
use crate::registry::lock;

/// One entry of an [`EventLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When it happened (tokio time, so paused-clock tests see virtual time).
    pub at: Instant,
    /// Who: a provider or writer name.
    pub source: String,
    /// What: a step or event name.
    pub event: String,
}

/// A log shared by providers and test writers, for ordering assertions across all parties.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    entries: Arc<Mutex<Vec<LogEntry>>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        EventLog::default()
    }

    /// Appends an entry stamped with the current tokio time.
    pub fn push(&self, source: impl Into<String>, event: impl Into<String>) {
        lock(&self.entries).push(LogEntry {
            at: Instant::now(),
            source: source.into(),
            event: event.into(),
        });
    }

    /// Every entry so far.
    pub fn entries(&self) -> Vec<LogEntry> {
        lock(&self.entries).clone()
    }

    /// Every entry as `(source, event)`.
    pub fn sequence(&self) -> Vec<(String, String)> {
        lock(&self.entries)
            .iter()
            .map(|e| (e.source.clone(), e.event.clone()))
            .collect()
    }

    /// The events of one source, in order.
    pub fn events_of(&self, source: &str) -> Vec<String> {
        lock(&self.entries)
            .iter()
            .filter(|e| e.source == source)
            .map(|e| e.event.clone())
            .collect()
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        lock(&self.entries).clear();
    }
}

/// What to do at one provider step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Fail with this code.
    Fail(ErrorCode),
    /// Never answer; the coordinator's timeout cancels the call by dropping it.
    Hang,
    /// Answer normally after this long.
    Delay(Duration),
}

/// Faults by step. A fault fires every time its step is called, until it is replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    faults: HashMap<ProviderStep, Fault>,
}

impl FaultPlan {
    /// No faults.
    pub fn new() -> Self {
        FaultPlan::default()
    }

    /// Fails `step` with `code`.
    pub fn fail(mut self, step: ProviderStep, code: ErrorCode) -> Self {
        self.faults.insert(step, Fault::Fail(code));
        self
    }

    /// Makes `step` hang until cancelled.
    pub fn hang(mut self, step: ProviderStep) -> Self {
        self.faults.insert(step, Fault::Hang);
        self
    }

    /// Delays `step` by `delay`.
    pub fn delay(mut self, step: ProviderStep, delay: Duration) -> Self {
        self.faults.insert(step, Fault::Delay(delay));
        self
    }

    fn get(&self, step: ProviderStep) -> Option<&Fault> {
        self.faults.get(&step)
    }
}

/// Which volumes the provider accepts.
#[derive(Debug, Clone)]
enum Support {
    Everything,
    Under(Vec<String>),
}

/// The in-memory provider.
#[derive(Debug)]
pub struct SimProvider {
    info: ProviderInfo,
    support: Support,
    faults: Mutex<FaultPlan>,
    snapshots: Mutex<BTreeMap<SnapshotId, SnapshotRecord>>,
    /// RevertToSnapshot calls that succeeded: the snapshot and the force flag.
    reverts: Mutex<Vec<(SnapshotId, bool)>>,
    log: EventLog,
}

impl SimProvider {
    /// A software provider named `name` that supports every volume, with its own log.
    pub fn new(name: impl Into<String>) -> Self {
        SimProvider {
            info: ProviderInfo {
                id: ProviderId::new_random(),
                name: name.into(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                provider_type: ProviderType::Software,
            },
            support: Support::Everything,
            faults: Mutex::new(FaultPlan::new()),
            snapshots: Mutex::new(BTreeMap::new()),
            reverts: Mutex::new(Vec::new()),
            log: EventLog::new(),
        }
    }

    /// Sets the provider type (PROV-SEL-1 prefers hardware, then software, then system).
    pub fn with_type(mut self, provider_type: ProviderType) -> Self {
        self.info.provider_type = provider_type;
        self
    }

    /// Logs into a shared log instead of its own.
    pub fn with_log(mut self, log: EventLog) -> Self {
        self.log = log;
        self
    }

    /// Supports only volumes at or under these mount points.
    pub fn supporting(mut self, prefixes: &[&str]) -> Self {
        self.support = Support::Under(prefixes.iter().map(|p| p.to_string()).collect());
        self
    }

    /// Starts with these faults.
    pub fn with_faults(self, faults: FaultPlan) -> Self {
        *lock(&self.faults) = faults;
        self
    }

    /// Replaces the faults at run time.
    pub fn set_faults(&self, faults: FaultPlan) {
        *lock(&self.faults) = faults;
    }

    /// The log it writes to.
    pub fn log(&self) -> EventLog {
        self.log.clone()
    }

    /// The provider's id.
    pub fn id(&self) -> ProviderId {
        self.info.id
    }

    /// Every shadow copy it holds now.
    pub fn snapshots(&self) -> Vec<SnapshotRecord> {
        lock(&self.snapshots).values().cloned().collect()
    }

    /// The RevertToSnapshot calls that succeeded, in order: the snapshot and the force flag. The
    /// simulator changes nothing else (it has no volume data to roll back).
    pub fn reverts(&self) -> Vec<(SnapshotId, bool)> {
        lock(&self.reverts).clone()
    }

    /// Logs the step and applies its fault, if any.
    async fn enter(&self, step: ProviderStep, subject: &str) -> Result<(), ProviderError> {
        self.log.push(&self.info.name, step.name());
        let fault = lock(&self.faults).get(step).cloned();
        match fault {
            None => Ok(()),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            Some(Fault::Hang) => {
                self.log
                    .push(&self.info.name, format!("{} hangs", step.name()));
                std::future::pending::<()>().await;
                Ok(())
            }
            Some(Fault::Fail(code)) => Err(ProviderError::new(
                code,
                format!(
                    "simulated failure of {step} for {subject} in provider {}",
                    self.info.name
                ),
            )),
        }
    }

    /// Moves every shadow copy of `set` from `from` to `to`; refuses a step out of order.
    fn advance(
        &self,
        set: SnapshotSetId,
        step: ProviderStep,
        from: SnapshotState,
        to: SnapshotState,
    ) -> Result<(), ProviderError> {
        let mut snapshots = lock(&self.snapshots);
        let members: Vec<&mut SnapshotRecord> =
            snapshots.values_mut().filter(|r| r.set_id == set).collect();
        if members.is_empty() {
            return Err(ProviderError::new(
                codes::VSS_E_BAD_STATE,
                format!("{step} for set {set}, which has no volume with this provider"),
            ));
        }
        if let Some(wrong) = members.iter().find(|r| r.state != from) {
            return Err(ProviderError::new(
                codes::VSS_E_BAD_STATE,
                format!(
                    "{step} out of order: the shadow copy of {} in set {set} is {}, not {}",
                    wrong.volume, wrong.state, from
                ),
            ));
        }
        for record in members {
            record.state = to;
            if to == SnapshotState::Committed {
                record.created = VssTimestamp::now();
                record.snapshot_path = Some(format!(
                    "/run/shadowcopy/sim/{}/{}",
                    self.info.name, record.snapshot_id
                ));
            }
        }
        Ok(())
    }

    async fn set_step(
        &self,
        set: SnapshotSetId,
        step: ProviderStep,
        from: SnapshotState,
        to: SnapshotState,
    ) -> Result<(), ProviderError> {
        self.enter(step, &format!("set {set}")).await?;
        self.advance(set, step, from, to)
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn info(&self) -> ProviderInfo {
        self.info.clone()
    }

    async fn is_volume_supported(
        &self,
        volume: &str,
        _context: SnapshotContext,
    ) -> Result<VolumeSupport, ProviderError> {
        self.enter(ProviderStep::IsVolumeSupported, volume).await?;
        Ok(match &self.support {
            Support::Everything => VolumeSupport::Supported,
            Support::Under(prefixes) => {
                let inside = prefixes.iter().any(|p| {
                    volume == p
                        || volume
                            .strip_prefix(p.as_str())
                            .is_some_and(|rest| rest.starts_with('/') || p.ends_with('/'))
                });
                if inside {
                    VolumeSupport::Supported
                } else {
                    VolumeSupport::Unsupported {
                        reason: format!(
                            "simulated provider {} only snapshots volumes under {}",
                            self.info.name,
                            prefixes.join(", ")
                        ),
                    }
                }
            }
        })
    }

    async fn begin_prepare_snapshot(
        &self,
        set: SnapshotSetId,
        snapshot: SnapshotId,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<(), ProviderError> {
        self.enter(ProviderStep::BeginPrepareSnapshot, volume)
            .await?;
        let mut snapshots = lock(&self.snapshots);
        // PROV-SEQ-2: a new set id means any unfinished preparation is stale.
        let before = snapshots.len();
        snapshots.retain(|_, r| {
            r.set_id == set
                || !matches!(r.state, SnapshotState::Preparing | SnapshotState::Prepared)
        });
        if snapshots.len() != before {
            self.log
                .push(&self.info.name, "discarded stale preparation");
        }
        snapshots.insert(
            snapshot,
            SnapshotRecord {
                snapshot_id: snapshot,
                set_id: set,
                volume: volume.to_string(),
                snapshot_path: None,
                state: SnapshotState::Preparing,
                attributes: context.attributes(),
                created: VssTimestamp::default(),
                provider_id: self.info.id,
            },
        );
        Ok(())
    }

    async fn end_prepare_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.set_step(
            set,
            ProviderStep::EndPrepareSnapshots,
            SnapshotState::Preparing,
            SnapshotState::Prepared,
        )
        .await
    }

    async fn pre_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.set_step(
            set,
            ProviderStep::PreCommitSnapshots,
            SnapshotState::Prepared,
            SnapshotState::Precommitted,
        )
        .await
    }

    async fn commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.set_step(
            set,
            ProviderStep::CommitSnapshots,
            SnapshotState::Precommitted,
            SnapshotState::Committed,
        )
        .await
    }

    async fn post_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.set_step(
            set,
            ProviderStep::PostCommitSnapshots,
            SnapshotState::Committed,
            SnapshotState::Postcommitted,
        )
        .await
    }

    async fn pre_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.set_step(
            set,
            ProviderStep::PreFinalCommitSnapshots,
            SnapshotState::Postcommitted,
            SnapshotState::Prefinalcommitted,
        )
        .await
    }

    async fn post_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.set_step(
            set,
            ProviderStep::PostFinalCommitSnapshots,
            SnapshotState::Prefinalcommitted,
            SnapshotState::Created,
        )
        .await
    }

    async fn abort_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.enter(ProviderStep::AbortSnapshots, &format!("set {set}"))
            .await?;
        // Every shadow copy of the set that is not finished is dropped.
        lock(&self.snapshots).retain(|_, r| r.set_id != set || r.state == SnapshotState::Created);
        Ok(())
    }

    async fn delete_snapshots(&self, target: DeleteTarget) -> Result<usize, ProviderError> {
        let subject = match &target {
            DeleteTarget::Snapshot(id) => format!("shadow copy {id}"),
            DeleteTarget::Set(set) => format!("set {set}"),
        };
        self.enter(ProviderStep::DeleteSnapshots, &subject).await?;
        let mut snapshots = lock(&self.snapshots);
        let before = snapshots.len();
        match target {
            DeleteTarget::Snapshot(id) => {
                if snapshots.remove(&id).is_none() {
                    return Err(ProviderError::new(
                        codes::VSS_E_OBJECT_NOT_FOUND,
                        format!("provider {} has no shadow copy {id}", self.info.name),
                    ));
                }
            }
            DeleteTarget::Set(set) => snapshots.retain(|_, r| r.set_id != set),
        }
        Ok(before - snapshots.len())
    }

    async fn query_snapshots(&self) -> Result<Vec<SnapshotRecord>, ProviderError> {
        self.enter(ProviderStep::QuerySnapshots, "all shadow copies")
            .await?;
        Ok(self.snapshots())
    }

    async fn revert_to_snapshot(
        &self,
        snapshot: SnapshotId,
        force_dismount: bool,
    ) -> Result<(), ProviderError> {
        self.enter(
            ProviderStep::RevertToSnapshot,
            &format!("shadow copy {snapshot}"),
        )
        .await?;
        if !lock(&self.snapshots).contains_key(&snapshot) {
            return Err(ProviderError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!("provider {} has no shadow copy {snapshot}", self.info.name),
            ));
        }
        lock(&self.reverts).push((snapshot, force_dismount));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROV-ST-1 and PROV-SEQ-1: states follow the calls, and a step out of order is refused.
    #[tokio::test]
    async fn states_follow_the_sequence() {
        let sim = SimProvider::new("sim");
        let set = SnapshotSetId::new_random();
        let snap = SnapshotId::new_random();
        sim.begin_prepare_snapshot(set, snap, "/srv", SnapshotContext::Backup)
            .await
            .unwrap();
        let err = sim.commit_snapshots(set).await.unwrap_err();
        assert_eq!(err.code, codes::VSS_E_BAD_STATE);
        assert!(err.message.contains("/srv"), "{}", err.message);
        sim.end_prepare_snapshots(set).await.unwrap();
        sim.pre_commit_snapshots(set).await.unwrap();
        sim.commit_snapshots(set).await.unwrap();
        sim.post_commit_snapshots(set).await.unwrap();
        sim.pre_final_commit_snapshots(set).await.unwrap();
        sim.post_final_commit_snapshots(set).await.unwrap();
        let records = sim.snapshots();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].state, SnapshotState::Created);
        assert!(records[0].snapshot_path.is_some());
    }

    /// PROV-SEQ-2: a new set discards stale preparation.
    #[tokio::test]
    async fn new_set_discards_stale_preparation() {
        let sim = SimProvider::new("sim");
        let old = SnapshotSetId::new_random();
        sim.begin_prepare_snapshot(old, SnapshotId::new_random(), "/a", SnapshotContext::Backup)
            .await
            .unwrap();
        let new = SnapshotSetId::new_random();
        sim.begin_prepare_snapshot(new, SnapshotId::new_random(), "/a", SnapshotContext::Backup)
            .await
            .unwrap();
        assert!(sim.snapshots().iter().all(|r| r.set_id == new));
        assert!(
            sim.log()
                .events_of("sim")
                .contains(&"discarded stale preparation".to_string())
        );
    }

    #[tokio::test]
    async fn faults_fail_with_the_chosen_code() {
        let sim = SimProvider::new("sim").with_faults(FaultPlan::new().fail(
            ProviderStep::BeginPrepareSnapshot,
            codes::VSS_E_INSUFFICIENT_STORAGE,
        ));
        let err = sim
            .begin_prepare_snapshot(
                SnapshotSetId::new_random(),
                SnapshotId::new_random(),
                "/data",
                SnapshotContext::Backup,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::VSS_E_INSUFFICIENT_STORAGE);
        assert!(err.message.contains("/data"));
        assert!(sim.snapshots().is_empty());
    }
}
