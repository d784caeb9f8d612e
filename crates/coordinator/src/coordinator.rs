//! The `Coordinator`: the writer registry, the providers, the one-set-in-creation lock (LIMIT-4),
//! snapshot administration (SNAP-2; DEL-1 by id, by set, the oldest of a volume, or all) and the
//! factory for backup and restore sessions.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{ProviderType, SnapshotContext, SnapshotState};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, WriterInstanceId};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backup::BackupSession;
use crate::config::CoordinatorConfig;
use crate::error::{CoordinatorError, Result};
use crate::observer::{SetObserver, SnapshotSetReport};
use crate::provider::{
    DeleteTarget, Provider, ProviderError, ProviderInfo, ProviderStep, SnapshotRecord,
    VolumeSupport, translate_provider_code_at,
};
use crate::registry::{Registry, lock};
use crate::restore::RestoreSession;
use crate::writer::{WriterEndpoint, WriterRegistration, WriterStatus};

/// The coordinator: cheap to clone, shared by every connection of the daemon.
#[derive(Clone)]
pub struct Coordinator {
    shared: Arc<Shared>,
}

/// A provider with the identity it reported when the coordinator started.
#[derive(Clone)]
pub(crate) struct RegisteredProvider {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) info: ProviderInfo,
}

/// Everything sessions share.
pub(crate) struct Shared {
    pub(crate) config: CoordinatorConfig,
    pub(crate) providers: Vec<RegisteredProvider>,
    pub(crate) registry: Registry,
    /// The set in creation on this host, from StartSnapshotSet until DoSnapshotSet ends (LIMIT-4).
    set_in_creation: Mutex<Option<SnapshotSetId>>,
    /// Volumes being reverted (REV-1: a second revert of one volume is VSS_E_REVERT_IN_PROGRESS).
    reverts: Mutex<BTreeSet<String>>,
    pub(crate) background: Background,
    /// Told about every snapshot set once it is over (the daemon's metrics).
    observer: Mutex<Option<Arc<dyn SetObserver>>>,
}

/// Counts tasks spawned so that a Thaw, Abort or release finishes even when the caller is gone
/// (a dropped session or future, BK-END-6), and lets the host wait for them before exiting.
pub(crate) struct Background {
    running: Arc<watch::Sender<usize>>,
}

/// A background task, boxed so that it can wait in a slot until some runtime takes it.
type BoxedTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Decrements the running count when a background task ends, even by panic.
struct Ticket(Arc<watch::Sender<usize>>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

impl Background {
    fn new() -> Self {
        Background {
            running: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Runs `task` to completion independently of the caller: on the current runtime, else on
    /// `handle`, else (no runtime, or only one that is shutting down, so that a task spawned there
    /// would be dropped unpolled) on a thread of its own. A Thaw or Abort must not be lost because
    /// the runtime that started it is going away (architecture §8).
    pub(crate) fn spawn<F>(&self, handle: Option<&Handle>, task: F) -> Option<JoinHandle<()>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.running.send_modify(|count| *count += 1);
        let ticket = Ticket(self.running.clone());
        let task: BoxedTask = Box::pin(async move {
            let _ticket = ticket;
            task.await;
        });
        let slot = Arc::new(Mutex::new(Some(task)));
        let candidates = [Handle::try_current().ok(), handle.cloned()];
        for runtime in candidates.into_iter().flatten() {
            let taken = slot.clone();
            let join = runtime.spawn(async move {
                let task = lock(&taken).take();
                if let Some(task) = task {
                    task.await;
                }
            });
            // A runtime that is shutting down cancels the task at once, without polling it: the
            // task is then still in the slot, and the next candidate runs it.
            if !join.is_finished() || lock(&slot).is_none() {
                return Some(join);
            }
        }
        let task = lock(&slot).take()?;
        let spawned = std::thread::Builder::new()
            .name("shadowcopy-release".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(task),
                    Err(error) => {
                        tracing::error!("cannot start a runtime for background work: {error}")
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::error!("cannot start a thread for background work: {error}");
        }
        None
    }

    async fn wait_idle(&self) {
        let mut running = self.running.subscribe();
        // The sender lives as long as `self`, so this only returns once the count is zero.
        let _ = running.wait_for(|count| *count == 0).await;
    }
}

/// Holds the one-set-in-creation lock (LIMIT-4) and frees it when dropped.
pub(crate) struct SetSlot {
    shared: Arc<Shared>,
    set: SnapshotSetId,
}

impl Drop for SetSlot {
    fn drop(&mut self) {
        let mut current = lock(&self.shared.set_in_creation);
        if *current == Some(self.set) {
            *current = None;
        }
    }
}

/// Holds a volume in `Shared::reverts` and frees it when dropped.
struct RevertSlot {
    shared: Arc<Shared>,
    volume: String,
}

impl Drop for RevertSlot {
    fn drop(&mut self) {
        lock(&self.shared.reverts).remove(&self.volume);
    }
}

/// The outcome of a deletion (DEL-1): how many were deleted and the first that could not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Shadow copies deleted.
    pub deleted: usize,
    /// The first shadow copy that could not be deleted, with the reason.
    pub first_failure: Option<(SnapshotId, CoordinatorError)>,
}

impl Shared {
    /// Claims the set-in-creation lock for `set` (LIMIT-4).
    pub(crate) fn claim_set(self: &Arc<Self>, set: SnapshotSetId) -> Result<SetSlot> {
        let mut current = lock(&self.set_in_creation);
        if let Some(other) = *current {
            return Err(CoordinatorError::new(
                codes::VSS_E_SNAPSHOT_SET_IN_PROGRESS,
                format!(
                    "snapshot set {other} is being created on this host; only one set can be in \
                     creation at a time, from StartSnapshotSet until DoSnapshotSet returns; retry \
                     when it has finished (LIMIT-4)"
                ),
            ));
        }
        *current = Some(set);
        Ok(SetSlot {
            shared: self.clone(),
            set,
        })
    }

    /// Hands a finished set's report to the observer, if one is installed; the lock is not held
    /// while it runs.
    pub(crate) fn report_set(&self, report: &SnapshotSetReport) {
        let observer = lock(&self.observer).clone();
        if let Some(observer) = observer {
            observer.snapshot_set_finished(report);
        }
    }

    pub(crate) fn provider_by_id(&self, id: ProviderId) -> Option<&RegisteredProvider> {
        self.providers.iter().find(|p| p.info.id == id)
    }

    /// Chooses the provider for a volume (PROV-SEL-1): the one named, or else the first that
    /// supports it among hardware, then software, then system providers.
    pub(crate) async fn choose_provider(
        &self,
        volume: &str,
        context: SnapshotContext,
        requested: Option<ProviderId>,
    ) -> Result<RegisteredProvider> {
        if let Some(id) = requested {
            let provider = self.provider_by_id(id).ok_or_else(|| {
                CoordinatorError::new(
                    codes::VSS_E_PROVIDER_NOT_REGISTERED,
                    format!("no provider with id {id} is registered"),
                )
            })?;
            return match self.support_of(provider, volume, context).await {
                VolumeSupport::Supported => Ok(provider.clone()),
                VolumeSupport::Unsupported { reason } => Err(CoordinatorError::new(
                    codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
                    format!(
                        "provider {} cannot snapshot volume {volume} in context {context}: {reason}",
                        provider.info.name
                    ),
                )),
            };
        }
        let mut candidates: Vec<&RegisteredProvider> = self.providers.iter().collect();
        // A stable sort keeps registration order within one provider type.
        candidates.sort_by_key(|p| selection_rank(p.info.provider_type));
        let mut reasons = Vec::new();
        for provider in candidates {
            match self.support_of(provider, volume, context).await {
                VolumeSupport::Supported => return Ok(provider.clone()),
                VolumeSupport::Unsupported { reason } => {
                    reasons.push(format!("{}: {reason}", provider.info.name));
                }
            }
        }
        let detail = if reasons.is_empty() {
            "no provider is registered".to_string()
        } else {
            reasons.join("; ")
        };
        Err(CoordinatorError::new(
            codes::VSS_E_VOLUME_NOT_SUPPORTED,
            format!(
                "no provider can snapshot volume {volume} in context {context} ({detail}). {}",
                codes::VSS_E_VOLUME_NOT_SUPPORTED.action
            ),
        ))
    }

    async fn support_of(
        &self,
        provider: &RegisteredProvider,
        volume: &str,
        context: SnapshotContext,
    ) -> VolumeSupport {
        let result = call_provider(
            provider,
            ProviderStep::IsVolumeSupported,
            volume,
            Some(self.config.provider_timeouts.call),
            provider.provider.is_volume_supported(volume, context),
        )
        .await;
        match result {
            Ok(support) => support,
            // A provider that cannot even answer is treated as not supporting the volume.
            Err(error) => VolumeSupport::Unsupported {
                reason: error.message().to_string(),
            },
        }
    }

    /// Every shadow copy of every provider.
    pub(crate) async fn query_all(&self) -> Result<Vec<SnapshotRecord>> {
        let timeout = Some(self.config.provider_timeouts.call);
        let answers = join_all(self.providers.iter().map(|p| {
            call_provider(
                p,
                ProviderStep::QuerySnapshots,
                "all shadow copies",
                timeout,
                p.provider.query_snapshots(),
            )
        }))
        .await;
        // One provider that cannot answer must not hide every other provider's shadow copies;
        // only when none answers is the query a failure.
        let mut records = Vec::new();
        let mut first_error = None;
        let mut answered = self.providers.is_empty();
        for (provider, answer) in self.providers.iter().zip(answers) {
            match answer {
                Ok(found) => {
                    answered = true;
                    records.extend(found);
                }
                Err(error) => {
                    tracing::warn!(provider = %provider.info.name, %error, "provider query failed; its shadow copies are not listed");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if !answered => Err(error),
            _ => Ok(records),
        }
    }

    /// Every finished shadow copy: neither part of the set in creation, which DoSnapshotSet still
    /// owns (LIMIT-4), nor a preparation left by a set that was never created (PROV-SEQ-2). These
    /// are the copies that count against the limits and that administrators may delete.
    pub(crate) async fn finished_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        let mut records = self.query_all().await?;
        let in_creation = *lock(&self.set_in_creation);
        records.retain(|r| !is_preparation(r) && Some(r.set_id) != in_creation);
        Ok(records)
    }

    /// Runs deletion calls one after another and adds up DEL-1's outcome: how many were deleted,
    /// and the first shadow copy of the first call that failed. Every deletion path (by id, by set,
    /// oldest, all, and the CFG-1 cap) goes through here, so they report alike.
    pub(crate) async fn run_deletions(&self, calls: Vec<DeleteCall<'_>>) -> DeleteOutcome {
        let mut outcome = DeleteOutcome {
            deleted: 0,
            first_failure: None,
        };
        for call in calls {
            let provider = call.provider;
            match call_provider(
                provider,
                ProviderStep::DeleteSnapshots,
                &call.subject,
                Some(self.config.provider_timeouts.call),
                provider.provider.delete_snapshots(call.target),
            )
            .await
            {
                Ok(count) => {
                    tracing::info!(provider = %provider.info.name, count, "deleted {}", call.subject);
                    outcome.deleted += count;
                }
                Err(error) => {
                    if outcome.first_failure.is_none() {
                        outcome.first_failure = Some((call.first, error));
                    }
                }
            }
        }
        outcome
    }

    /// Deletes these shadow copies one at a time, in the order given (DEL-1).
    pub(crate) async fn delete_records(&self, records: &[SnapshotRecord]) -> DeleteOutcome {
        let mut calls = Vec::with_capacity(records.len());
        let mut missing = None;
        for record in records {
            let subject = format!(
                "shadow copy {} of {} (set {})",
                record.snapshot_id, record.volume, record.set_id
            );
            match self.provider_by_id(record.provider_id) {
                Some(provider) => calls.push(DeleteCall {
                    provider,
                    target: DeleteTarget::Snapshot(record.snapshot_id),
                    first: record.snapshot_id,
                    subject,
                }),
                // Records come from the providers' own queries, so this only happens if a
                // provider reports another provider's id; report it rather than skip silently.
                None => {
                    missing.get_or_insert((
                        record.snapshot_id,
                        CoordinatorError::new(
                            codes::VSS_E_PROVIDER_NOT_REGISTERED,
                            format!(
                                "cannot delete {subject}: its provider {} is not registered",
                                record.provider_id
                            ),
                        ),
                    ));
                }
            }
        }
        let mut outcome = self.run_deletions(calls).await;
        if outcome.first_failure.is_none() {
            outcome.first_failure = missing;
        }
        outcome
    }
}

/// One provider call of a deletion.
pub(crate) struct DeleteCall<'a> {
    provider: &'a RegisteredProvider,
    target: DeleteTarget,
    /// The shadow copy reported as DEL-1's "first failed" when this call fails.
    first: SnapshotId,
    /// What is deleted, for logs and messages.
    subject: String,
}

/// Whether a record is still being prepared (PROV-ST-1): not a shadow copy yet.
pub(crate) fn is_preparation(record: &SnapshotRecord) -> bool {
    matches!(
        record.state,
        SnapshotState::Preparing | SnapshotState::ProcessingPrepare | SnapshotState::Prepared
    )
}

/// The order of PROV-SEL-1: hardware, software, system, then anything else.
fn selection_rank(provider_type: ProviderType) -> u8 {
    match provider_type {
        ProviderType::Hardware => 0,
        ProviderType::Software => 1,
        ProviderType::System => 2,
        ProviderType::FileShare | ProviderType::Unknown => 3,
    }
}

/// Calls one provider method with an optional time limit and translates its error (PROV-R-3): an
/// allowed code passes, any other is logged with the provider and method and becomes
/// VSS_E_UNEXPECTED_PROVIDER_ERROR. `subject` names the volume or set for the message.
pub(crate) async fn call_provider<T, F>(
    provider: &RegisteredProvider,
    step: ProviderStep,
    subject: &str,
    limit: Option<Duration>,
    call: F,
) -> Result<T>
where
    F: Future<Output = std::result::Result<T, ProviderError>>,
{
    let name = &provider.info.name;
    let result = match limit {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => {
                tracing::error!(provider = %name, method = step.name(), "no answer within {} ms", limit.as_millis());
                return Err(CoordinatorError::new(
                    codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
                    format!(
                        "provider {name} did not finish {step} for {subject} within {} ms",
                        limit.as_millis()
                    ),
                ));
            }
        },
        None => call.await,
    };
    result.map_err(|error| provider_error(provider, step, subject, error))
}

/// The requester-visible error for a provider's error (PROV-R-3).
pub(crate) fn provider_error(
    provider: &RegisteredProvider,
    step: ProviderStep,
    subject: &str,
    error: ProviderError,
) -> CoordinatorError {
    let name = &provider.info.name;
    let code = translate_provider_code_at(step, error.code);
    if code != error.code {
        tracing::error!(
            provider = %name,
            method = step.name(),
            original = error.code.name,
            "provider returned a code providers may not return (PROV-R-3): {}",
            error.message
        );
    } else {
        tracing::error!(provider = %name, method = step.name(), code = error.code.name, "{}", error.message);
    }
    CoordinatorError::new(
        code,
        format!(
            "provider {name} failed {step} for {subject}: {} (provider code {})",
            error.message, error.code.name
        ),
    )
}

impl Coordinator {
    /// A coordinator with these settings and providers (the providers' order is their registration
    /// order, which breaks ties in PROV-SEL-1).
    pub fn new(config: CoordinatorConfig, providers: Vec<Arc<dyn Provider>>) -> Self {
        let providers = providers
            .into_iter()
            .map(|provider| RegisteredProvider {
                info: provider.info(),
                provider,
            })
            .collect();
        Coordinator {
            shared: Arc::new(Shared {
                config,
                providers,
                registry: Registry::default(),
                set_in_creation: Mutex::new(None),
                reverts: Mutex::new(BTreeSet::new()),
                background: Background::new(),
                observer: Mutex::new(None),
            }),
        }
    }

    /// Installs the observer that is told about every snapshot set once its DoSnapshotSet is
    /// over, however it ended (outcome, result code, freeze window, duration); replaces any
    /// earlier one. The daemon's metrics use it; the coordinator itself keeps no statistics.
    pub fn observe_snapshot_sets(&self, observer: Arc<dyn SetObserver>) {
        *lock(&self.shared.observer) = Some(observer);
    }

    /// The settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.shared.config
    }

    /// Registers a connected writer and returns its new instance id (ROLE-7). The freeze timeout it
    /// declared is lowered by the config, never raised (CFG-9). A second live registration of the
    /// same class and instance name is refused with VSS_E_WRITER_ALREADY_SUBSCRIBED.
    pub fn register_writer(
        &self,
        registration: WriterRegistration,
        endpoint: Arc<dyn WriterEndpoint>,
    ) -> Result<WriterInstanceId> {
        let freeze_timeout = self
            .shared
            .config
            .effective_freeze_timeout(registration.class_id, registration.freeze_timeout);
        let name = registration.writer_name.clone();
        let id = self
            .shared
            .registry
            .register(registration, freeze_timeout, endpoint)?;
        tracing::info!(writer = %name, instance = %id, freeze_timeout_ms = freeze_timeout.as_millis() as u64, "writer registered");
        Ok(id)
    }

    /// Removes a writer whose connection ended. Its in-flight events fail at once with
    /// VSS_E_WRITER_NOT_RESPONDING, and later events of its sessions fail the same way (WST-4,
    /// RST-END-3). Returns whether the writer was registered.
    pub fn unregister_writer(&self, id: WriterInstanceId) -> bool {
        match self.shared.registry.unregister(id) {
            Some(entry) => {
                tracing::info!(writer = %entry.name(), instance = %id, "writer unregistered");
                true
            }
            None => false,
        }
    }

    /// Every registered writer with the last state any session reported, for admin listings
    /// (`vssadmin list writers`). Per WST-2 this is informative only; a requester uses its own
    /// session's `gather_writer_status`.
    pub fn writers_status(&self) -> Vec<WriterStatus> {
        self.shared
            .registry
            .all()
            .iter()
            .map(|entry| entry.status())
            .collect()
    }

    /// The providers, in registration order (SNAP-2).
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.shared
            .providers
            .iter()
            .map(|p| p.info.clone())
            .collect()
    }

    /// The set being created on this host, if any (LIMIT-4), for status displays.
    pub fn set_in_creation(&self) -> Option<SnapshotSetId> {
        *lock(&self.shared.set_in_creation)
    }

    /// Every shadow copy visible in `context` (SNAP-2); ALL lists everything (CTX-5).
    ///
    /// Preparations of a set that is no longer in creation are left out: a requester that released
    /// its session before DoSnapshotSet leaves them with the provider until its next set
    /// (PROV-SEQ-2), but they will never become shadow copies.
    pub async fn snapshots(&self, context: SnapshotContext) -> Result<Vec<SnapshotRecord>> {
        let mut records = self.shared.query_all().await?;
        let in_creation = self.set_in_creation();
        records.retain(|r| {
            r.matches_context(context) && (!is_preparation(r) || Some(r.set_id) == in_creation)
        });
        Ok(records)
    }

    /// One shadow copy (GetSnapshotProperties, SNAP-2).
    pub async fn snapshot(&self, id: SnapshotId) -> Result<SnapshotRecord> {
        self.shared
            .query_all()
            .await?
            .into_iter()
            .find(|r| r.snapshot_id == id)
            .ok_or_else(|| {
                CoordinatorError::new(
                    codes::VSS_E_OBJECT_NOT_FOUND,
                    format!("no shadow copy {id} exists"),
                )
            })
    }

    /// Deletes one shadow copy or a whole set (DEL-1), whatever its context (CTX-5 allows ALL here).
    pub async fn delete_snapshots(&self, target: DeleteTarget) -> Result<DeleteOutcome> {
        let records = self.shared.query_all().await?;
        let matching: Vec<&SnapshotRecord> = records
            .iter()
            .filter(|r| match &target {
                DeleteTarget::Snapshot(id) => r.snapshot_id == *id,
                DeleteTarget::Set(set) => r.set_id == *set,
            })
            .collect();
        if matching.is_empty() {
            return Err(CoordinatorError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                match &target {
                    DeleteTarget::Snapshot(id) => format!("no shadow copy {id} exists"),
                    DeleteTarget::Set(set) => format!("no shadow copy of set {set} exists"),
                },
            ));
        }
        let calls = self
            .shared
            .providers
            .iter()
            .filter_map(|provider| {
                let first = matching
                    .iter()
                    .find(|r| r.provider_id == provider.info.id)?;
                let subject = match &target {
                    DeleteTarget::Snapshot(id) => format!("shadow copy {id} of {}", first.volume),
                    DeleteTarget::Set(set) => format!("set {set}"),
                };
                Some(DeleteCall {
                    provider,
                    target: target.clone(),
                    first: first.snapshot_id,
                    subject,
                })
            })
            .collect();
        Ok(self.shared.run_deletions(calls).await)
    }

    /// Every finished shadow copy, of any context: what [`Coordinator::delete_all`] deletes. The
    /// set in creation is left out, since DoSnapshotSet still owns it (LIMIT-4).
    pub async fn finished_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        self.shared.finished_snapshots().await
    }

    /// The oldest finished shadow copy of `volume` (a mount point; a trailing `/` is ignored) by
    /// creation time, whatever its context: what `shadowcopy delete --oldest` deletes (DEL-1).
    /// VSS_E_OBJECT_NOT_FOUND, naming the volume, when it has none.
    pub async fn oldest_snapshot(&self, volume: &str) -> Result<SnapshotRecord> {
        let wanted = volume_key(volume);
        self.shared
            .finished_snapshots()
            .await?
            .into_iter()
            .filter(|r| volume_key(&r.volume) == wanted)
            // Ties (same timestamp) are broken by id so that the choice is stable between calls.
            .min_by_key(|r| (r.created, r.snapshot_id))
            .ok_or_else(|| {
                CoordinatorError::new(
                    codes::VSS_E_OBJECT_NOT_FOUND,
                    format!(
                        "volume {volume} has no shadow copies; list them with `shadowcopy list` \
                         and check the mount point"
                    ),
                )
            })
    }

    /// Deletes the oldest shadow copy of `volume`, any context (DEL-1, `vshadow -do` style).
    pub async fn delete_oldest(&self, volume: &str) -> Result<DeleteOutcome> {
        let oldest = self.oldest_snapshot(volume).await?;
        Ok(self.shared.delete_records(&[oldest]).await)
    }

    /// Deletes every finished shadow copy, of every context and provider, like `vshadow -da`
    /// (DEL-1). Oldest first, so that a failure part-way leaves the newest copies. Nothing to
    /// delete is a success with a count of 0.
    pub async fn delete_all(&self) -> Result<DeleteOutcome> {
        let mut records = self.shared.finished_snapshots().await?;
        records.sort_by_key(|r| (r.created, r.snapshot_id));
        Ok(self.shared.delete_records(&records).await)
    }

    /// Rolls the volume of `snapshot` back to it (REV-1, RevertToSnapshot).
    ///
    /// Refused with VSS_E_OBJECT_NOT_FOUND when no provider holds the copy, VSS_E_UNSUPPORTED_CONTEXT
    /// when it is not persistent (auto-release), VSS_E_BAD_STATE when it is not fully created,
    /// VSS_E_SNAPSHOT_SET_IN_PROGRESS while the volume is in the set in creation (the revert would
    /// change the volume under the writers' freeze), and VSS_E_REVERT_IN_PROGRESS while another
    /// revert of the same volume runs. The provider is called without a time limit and on a
    /// background task: REV-1 says a revert cannot be cancelled, so a caller that goes away does not
    /// stop it, and the volume stays in [`Coordinator::reverts_in_progress`] until it ends. The
    /// provider's E_NOTIMPL, VSS_E_VOLUME_IN_USE and VSS_E_REVERT_IN_PROGRESS reach the caller as
    /// they are (REV-1).
    pub async fn revert(&self, snapshot: SnapshotId, force_dismount: bool) -> Result<()> {
        let records = self.shared.query_all().await?;
        let Some(record) = records.iter().find(|r| r.snapshot_id == snapshot).cloned() else {
            return Err(CoordinatorError::new(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!(
                    "no shadow copy {snapshot} exists to revert to; list them with `shadowcopy list`"
                ),
            ));
        };
        let volume = record.volume.clone();
        if record.is_auto_release() {
            return Err(CoordinatorError::new(
                codes::VSS_E_UNSUPPORTED_CONTEXT,
                format!(
                    "shadow copy {snapshot} of {volume} is auto-release (attributes {:?}); a volume \
                     can be reverted only to a persistent shadow copy (REV-1), made in a context \
                     with NO_AUTO_RELEASE such as APP_ROLLBACK or NAS_ROLLBACK",
                    record.attributes.names()
                ),
            ));
        }
        if record.state != shadowcopy_metadata::enums::SnapshotState::Created {
            return Err(CoordinatorError::new(
                codes::VSS_E_BAD_STATE,
                format!(
                    "shadow copy {snapshot} of {volume} is {}, not CREATED; a volume can be \
                     reverted only to a finished shadow copy",
                    record.state
                ),
            ));
        }
        if let Some(set) = self.set_in_creation()
            && records
                .iter()
                .any(|r| r.set_id == set && r.volume == volume)
        {
            return Err(CoordinatorError::new(
                codes::VSS_E_SNAPSHOT_SET_IN_PROGRESS,
                format!(
                    "{volume} is in snapshot set {set}, which is being created; revert it once \
                     that set has finished"
                ),
            ));
        }
        let Some(provider) = self.shared.provider_by_id(record.provider_id).cloned() else {
            return Err(CoordinatorError::new(
                codes::VSS_E_PROVIDER_NOT_REGISTERED,
                format!(
                    "shadow copy {snapshot} of {volume} belongs to provider {}, which is not \
                     registered",
                    record.provider_id
                ),
            ));
        };
        let slot = {
            let mut reverts = lock(&self.shared.reverts);
            if !reverts.insert(volume.clone()) {
                return Err(CoordinatorError::new(
                    codes::VSS_E_REVERT_IN_PROGRESS,
                    format!(
                        "{volume} is being reverted already; a revert cannot be cancelled, wait \
                         until it has finished (REV-1)"
                    ),
                ));
            }
            RevertSlot {
                shared: self.shared.clone(),
                volume: volume.clone(),
            }
        };
        tracing::info!(%snapshot, volume = %volume, provider = %provider.info.name, force_dismount, "reverting a volume to a shadow copy");
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.shared.background.spawn(None, async move {
            let _slot = slot;
            let subject = format!("{volume} (to shadow copy {snapshot})");
            let result = call_provider(
                &provider,
                ProviderStep::RevertToSnapshot,
                &subject,
                None,
                provider
                    .provider
                    .revert_to_snapshot(snapshot, force_dismount),
            )
            .await;
            match &result {
                Ok(()) => tracing::info!(%snapshot, volume = %volume, "volume reverted"),
                Err(error) => tracing::error!(%snapshot, volume = %volume, %error, "revert failed"),
            }
            let _ = sender.send(result);
        });
        receiver.await.unwrap_or_else(|_| {
            Err(CoordinatorError::new(
                codes::VSS_E_UNEXPECTED,
                format!("the revert to shadow copy {snapshot} ended without an answer (its task panicked); see the daemon's log"),
            ))
        })
    }

    /// The volumes being reverted now (REV-1), for status displays.
    pub fn reverts_in_progress(&self) -> Vec<String> {
        lock(&self.shared.reverts).iter().cloned().collect()
    }

    /// A new backup session (ROLE-12: one backup, then release).
    pub fn open_backup_session(&self) -> BackupSession {
        BackupSession::new(self.shared.clone())
    }

    /// A new restore session (ROLE-12: one restore, then release).
    pub fn open_restore_session(&self) -> RestoreSession {
        RestoreSession::new(self.shared.clone())
    }

    /// Waits until every background task has finished: releases of dropped sessions, and Thaw or
    /// Abort deliveries that outlive the call that started them. A host calls this before exiting;
    /// tests call it before checking that no writer was left frozen.
    pub async fn wait_background(&self) {
        self.shared.background.wait_idle().await;
    }
}

/// A mount point as records compare it: without a trailing `/` (the coordinator records volumes
/// that way, BK-DISC-6).
fn volume_key(volume: &str) -> &str {
    match volume.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("providers", &self.providers())
            .field("writers", &self.writers_status().len())
            .finish()
    }
}
