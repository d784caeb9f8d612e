//! DoSnapshotSet: the ordered sequence of BK-SNAP-2 between providers and writers, the per-writer
//! freeze windows (BK-SNAP-5, BK-SNAP-7), the commit window (CFG-10, LIMIT-5) and the whole-set
//! failure of BK-SNAP-8.
//!
//! The thaw invariant (architecture §8): every writer that was sent Freeze is sent Thaw or Abort on
//! every path. Three mechanisms together guarantee it:
//! - each writer's freeze slot ([`SessionWriter::take_frozen`]) hands the right to end its freeze to
//!   exactly one party: the Thaw stage, its freeze-window watchdog, or a failure path;
//! - a watchdog task per frozen writer sends Abort when the writer's freeze window (Freeze sent to
//!   Thaw sent) runs out, whatever the main sequence is doing;
//! - [`WritersGuard`] and [`ProvidersGuard`] abort writers and providers from their `Drop` when the
//!   sequence is cut short by a panic or by the caller dropping the future.
//!
//! Every set, however it ends, is reported to the coordinator's observer ([`SetReporter`]) with its
//! freeze window: the first Freeze sent to the last Thaw answered (or the last Abort answered when
//! the set failed with writers frozen), measured here because only here are both ends seen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::join_all;
use shadowcopy_metadata::bcd::{BackupComponents, Phase};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::WriterState;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::coordinator::{RegisteredProvider, Shared, call_provider};
use crate::error::{CoordinatorError, Result};
use crate::events::settle;
use crate::events::{apply_components, components_of, send_abort, send_event};
use crate::observer::{SetOutcome, SetVolume, SnapshotSetReport};
use crate::provider::{DeleteTarget, ProviderStep};
use crate::registry::{Delivery, Failed, SessionWriter, deliver, lock};
use crate::writer::{SnapshotLocation, WriterEvent, WriterEventKind, WriterFailure, WriterReply};

/// One volume of the set with its shadow copy id and provider.
#[derive(Clone)]
pub(crate) struct PlannedVolume {
    pub(crate) volume: String,
    pub(crate) snapshot_id: SnapshotId,
    pub(crate) provider: RegisteredProvider,
}

/// The distinct providers of a set, in the order their first volume was added.
pub(crate) fn providers_of(volumes: &[PlannedVolume]) -> Vec<RegisteredProvider> {
    let mut providers: Vec<RegisteredProvider> = Vec::new();
    for volume in volumes {
        if !providers
            .iter()
            .any(|p| p.info.id == volume.provider.info.id)
        {
            providers.push(volume.provider.clone());
        }
    }
    providers
}

/// Runs DoSnapshotSet for `set`. `writers` are the writers taking part (empty in writerless
/// contexts, CTX-4). On failure every participating writer has been sent Abort, the providers
/// AbortSnapshots (if EndPrepareSnapshots was reached), and no shadow copy of the set survives.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    set: SnapshotSetId,
    volumes: &[PlannedVolume],
    writers: Vec<Arc<SessionWriter>>,
    bcd: &mut BackupComponents,
) -> Result<()> {
    let reporter = SetReporter::new(shared, set, bcd.context(), volumes, writers.len());
    let handle = Handle::current();
    let providers = providers_of(volumes);
    let run = Run {
        shared: shared.clone(),
        set,
        volumes: volumes.iter().map(|v| v.volume.clone()).collect(),
        planned: volumes.to_vec(),
        providers: providers.clone(),
        writers: writers.clone(),
        handle: handle.clone(),
        tasks: Mutex::new(Vec::new()),
        done: watch::Sender::new(false),
        commit_reached: AtomicBool::new(false),
        first_freeze: OnceLock::new(),
        freeze_ended: Mutex::new(None),
    };
    let mut writers_guard = WritersGuard {
        shared: shared.clone(),
        set,
        writers,
        handle: handle.clone(),
        armed: true,
    };
    let mut providers_guard = ProvidersGuard {
        shared: shared.clone(),
        set,
        providers,
        handle,
        end_prepare_reached: false,
        armed: true,
    };
    let result = run.sequence(bcd, &mut providers_guard).await;
    let result = match result {
        Ok(()) => Ok(()),
        Err(error) => Err(run.fail(error, &providers_guard).await),
    };
    // Every path that gets here has thawed or aborted every writer and dealt with the providers.
    run.finish().await;
    writers_guard.armed = false;
    providers_guard.armed = false;
    let outcome = match &result {
        Ok(()) => SetOutcome::Created,
        Err(error) => SetOutcome::Failed(error.code()),
    };
    reporter.finished(outcome, run.freeze_window());
    result
}

/// Reports the set to the coordinator's observer: [`SetReporter::finished`] with its outcome, or,
/// when DoSnapshotSet is cut short (the future dropped, a panic), from `Drop` as interrupted.
struct SetReporter {
    shared: Arc<Shared>,
    /// `None` once reported.
    report: Option<SnapshotSetReport>,
    started: Instant,
}

impl SetReporter {
    fn new(
        shared: &Arc<Shared>,
        set: SnapshotSetId,
        context: shadowcopy_metadata::enums::SnapshotContext,
        volumes: &[PlannedVolume],
        writers: usize,
    ) -> Self {
        let report = SnapshotSetReport {
            set_id: set,
            context,
            volumes: volumes
                .iter()
                .map(|v| SetVolume {
                    volume: v.volume.clone(),
                    provider: v.provider.info.name.clone(),
                })
                .collect(),
            writers,
            outcome: SetOutcome::Interrupted,
            freeze_window: None,
            duration: std::time::Duration::ZERO,
        };
        SetReporter {
            shared: shared.clone(),
            report: Some(report),
            started: Instant::now(),
        }
    }

    fn finished(mut self, outcome: SetOutcome, freeze_window: Option<std::time::Duration>) {
        if let Some(mut report) = self.report.take() {
            report.outcome = outcome;
            report.freeze_window = freeze_window;
            report.duration = self.started.elapsed();
            self.shared.report_set(&report);
        }
    }
}

impl Drop for SetReporter {
    fn drop(&mut self) {
        if let Some(mut report) = self.report.take() {
            report.duration = self.started.elapsed();
            self.shared.report_set(&report);
        }
    }
}

/// The state of one DoSnapshotSet.
struct Run {
    shared: Arc<Shared>,
    set: SnapshotSetId,
    volumes: Vec<String>,
    planned: Vec<PlannedVolume>,
    providers: Vec<RegisteredProvider>,
    writers: Vec<Arc<SessionWriter>>,
    handle: Handle,
    /// Spawned Abort deliveries and freeze watchdogs; joined before DoSnapshotSet returns.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set when the sequence is over, so that watchdogs of thawed writers stop waiting.
    done: watch::Sender<bool>,
    commit_reached: AtomicBool,
    /// When the first Freeze was sent: the freeze window opens.
    first_freeze: OnceLock<Instant>,
    /// When the last writer was thawed (or aborted, on failure): the freeze window closes.
    freeze_ended: Mutex<Option<Instant>>,
}

impl Run {
    /// Closes the freeze window, if one was opened and is still open.
    fn end_freeze(&self) {
        if self.first_freeze.get().is_some() {
            lock(&self.freeze_ended).get_or_insert_with(Instant::now);
        }
    }

    /// The freeze window, if any writer was sent Freeze.
    fn freeze_window(&self) -> Option<std::time::Duration> {
        let opened = *self.first_freeze.get()?;
        let closed = (*lock(&self.freeze_ended)).unwrap_or_else(Instant::now);
        Some(closed.saturating_duration_since(opened))
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        // Keep the set's span, so that a late Abort is logged with its set and writer.
        let task = task.instrument(tracing::Span::current());
        if let Some(handle) = self.shared.background.spawn(Some(&self.handle), task) {
            lock(&self.tasks).push(handle);
        }
    }

    /// Sends Abort in the background, so that one slow writer does not hold the others frozen.
    fn spawn_abort(&self, writer: Arc<SessionWriter>) {
        let shared = self.shared.clone();
        let set = self.set;
        self.spawn(async move { send_abort(&shared, &writer, Some(set)).await });
    }

    /// The steps of BK-SNAP-2, in order.
    async fn sequence(
        &self,
        bcd: &mut BackupComponents,
        providers_guard: &mut ProvidersGuard,
    ) -> Result<()> {
        // 1. Providers: EndPrepareSnapshots. From here on a failure means AbortSnapshots (PROV-SEQ-2).
        providers_guard.end_prepare_reached = true;
        self.provider_step(
            ProviderStep::EndPrepareSnapshots,
            Some(self.shared.config.provider_timeouts.end_prepare),
        )
        .instrument(tracing::info_span!("phase", phase = "end_prepare"))
        .await?;

        // 2. Writers: PrepareForSnapshot. A failure here does not abort (BK-SNAP-6).
        let replies = self
            .prepare_for_snapshot()
            .instrument(tracing::info_span!("phase", phase = "prepare_for_snapshot"))
            .await;
        apply_all(
            bcd,
            Phase::SnapshotCreation,
            WriterEventKind::PrepareForSnapshot,
            replies,
        );

        // 3. Writers: Freeze, by application level, front-end first (ROLE-9).
        let levels = self.levels();
        for level in &levels {
            let replies = self
                .freeze_level(level)
                .instrument(tracing::info_span!("phase", phase = "freeze"))
                .await;
            apply_all(
                bcd,
                Phase::SnapshotCreation,
                WriterEventKind::Freeze,
                replies,
            );
        }

        // 4-8. Providers: PreCommit, Commit, PostCommit inside the commit window (CFG-10).
        self.commit_window()
            .instrument(tracing::info_span!("phase", phase = "commit"))
            .await?;

        // 9. Writers: Thaw, in reverse level order (ROLE-9 OPEN, proposal adopted).
        for level in levels.iter().rev() {
            let replies = self
                .thaw_level(level)
                .instrument(tracing::info_span!("phase", phase = "thaw"))
                .await;
            apply_all(bcd, Phase::SnapshotCreation, WriterEventKind::Thaw, replies);
        }
        // Every Thaw has been answered (or has timed out, which sends Abort).
        self.end_freeze();

        // 11. Providers: PreFinalCommitSnapshots (the copies are still writable for auto-recovery).
        self.provider_step(
            ProviderStep::PreFinalCommitSnapshots,
            Some(self.shared.config.provider_timeouts.call),
        )
        .instrument(tracing::info_span!("phase", phase = "pre_final_commit"))
        .await?;

        // 12. Writers: PostSnapshot; records are editable (BCD-7).
        self.post_snapshot(bcd)
            .instrument(tracing::info_span!("phase", phase = "post_snapshot"))
            .await;

        // 13. Providers: PostFinalCommitSnapshots.
        self.provider_step(
            ProviderStep::PostFinalCommitSnapshots,
            Some(self.shared.config.provider_timeouts.call),
        )
        .instrument(tracing::info_span!("phase", phase = "post_final_commit"))
        .await?;
        Ok(())
    }

    /// One set-level provider step, for every provider in order.
    async fn provider_step(
        &self,
        step: ProviderStep,
        limit: Option<std::time::Duration>,
    ) -> Result<()> {
        for provider in &self.providers {
            if step == ProviderStep::CommitSnapshots {
                self.commit_reached.store(true, Ordering::SeqCst);
            }
            let subject = format!("set {} ({})", self.set, self.volumes_of(provider));
            call_provider(
                provider,
                step,
                &subject,
                limit,
                set_step(provider, step, self.set),
            )
            .await?;
        }
        Ok(())
    }

    /// The volumes one provider snapshots in this set, for messages.
    fn volumes_of(&self, provider: &RegisteredProvider) -> String {
        self.planned
            .iter()
            .filter(|v| v.provider.info.id == provider.info.id)
            .map(|v| v.volume.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// PreCommit, Commit and PostCommit of every provider, capped by the commit window. Overrunning
    /// it fails the set: FLUSH_WRITES_TIMEOUT while flushing (PreCommit), HOLD_WRITES_TIMEOUT while
    /// writes are held (Commit, PostCommit).
    ///
    /// Within one step the providers run concurrently: each step is still a barrier (no provider
    /// commits before every provider has pre-committed, PROV-SEQ-1), but the writers' freeze window
    /// then lasts as long as the slowest provider rather than the sum of all of them.
    async fn commit_window(&self) -> Result<()> {
        let window = self.shared.config.commit_window;
        // The step under way and the providers that have not finished it, for the timeout message.
        let pending = Mutex::new((ProviderStep::PreCommitSnapshots, Vec::<String>::new()));
        let work = async {
            for step in [
                ProviderStep::PreCommitSnapshots,
                ProviderStep::CommitSnapshots,
                ProviderStep::PostCommitSnapshots,
            ] {
                *lock(&pending) = (
                    step,
                    self.providers.iter().map(|p| p.info.name.clone()).collect(),
                );
                if step == ProviderStep::CommitSnapshots {
                    self.commit_reached.store(true, Ordering::SeqCst);
                }
                let results = join_all(self.providers.iter().map(|provider| {
                    let pending = &pending;
                    async move {
                        let subject = format!("set {} ({})", self.set, self.volumes_of(provider));
                        let result = call_provider(
                            provider,
                            step,
                            &subject,
                            None,
                            set_step(provider, step, self.set),
                        )
                        .await;
                        lock(pending).1.retain(|name| *name != provider.info.name);
                        result
                    }
                }))
                .await;
                // The first failure, in the providers' order, fails the set.
                results.into_iter().collect::<Result<Vec<()>>>()?;
            }
            Ok(())
        };
        match tokio::time::timeout(window, work).await {
            Ok(result) => result,
            Err(_) => {
                let (step, providers) = lock(&pending).clone();
                let providers = providers.join(", ");
                let code = if step == ProviderStep::PreCommitSnapshots {
                    codes::VSS_E_FLUSH_WRITES_TIMEOUT
                } else {
                    codes::VSS_E_HOLD_WRITES_TIMEOUT
                };
                tracing::error!(provider = %providers, method = step.name(), "commit window of {} ms exceeded", window.as_millis());
                Err(CoordinatorError::new(
                    code,
                    format!(
                        "provider {providers} did not finish {step} for set {} within the {} ms \
                         commit window (CFG-10, LIMIT-5); the whole set failed",
                        self.set,
                        window.as_millis()
                    ),
                ))
            }
        }
    }

    async fn prepare_for_snapshot(&self) -> Vec<(Arc<SessionWriter>, Option<WriterReply>)> {
        let limit = self.shared.config.event_timeouts.prepare_for_snapshot;
        join_all(self.writers.iter().map(|writer| async move {
            let event = WriterEvent::PrepareForSnapshot {
                set: self.set,
                volumes: self.volumes.clone(),
            };
            let result = send_event(writer, event, limit).await;
            let kind = WriterEventKind::PrepareForSnapshot;
            let reply = settle(writer, kind, WriterState::WaitingForFreeze, result);
            (writer.clone(), reply)
        }))
        .await
    }

    /// The writers that go on to Freeze, grouped by `freeze_rank`, front-end first.
    fn levels(&self) -> Vec<Vec<Arc<SessionWriter>>> {
        let mut ready: Vec<Arc<SessionWriter>> = self
            .writers
            .iter()
            .filter(|w| w.status().state == WriterState::WaitingForFreeze)
            .cloned()
            .collect();
        // A stable sort keeps the session's order within a level.
        ready.sort_by_key(|w| w.entry.registration.application_level.freeze_rank());
        let mut levels: Vec<Vec<Arc<SessionWriter>>> = Vec::new();
        for writer in ready {
            let rank = writer.entry.registration.application_level.freeze_rank();
            match levels.last_mut() {
                Some(level)
                    if level[0].entry.registration.application_level.freeze_rank() == rank =>
                {
                    level.push(writer)
                }
                _ => levels.push(vec![writer]),
            }
        }
        levels
    }

    async fn freeze_level(
        &self,
        level: &[Arc<SessionWriter>],
    ) -> Vec<(Arc<SessionWriter>, Option<WriterReply>)> {
        join_all(level.iter().map(|writer| self.freeze_one(writer.clone()))).await
    }

    /// Sends Freeze; the reply must come within the writer's freeze timeout, and the writer's
    /// freeze window (Freeze sent to Thaw sent) is capped by the same timeout (BK-SNAP-5). A veto or
    /// a timeout makes the writer FAILED_AT_FREEZE and sends it Abort, while the set goes on
    /// (BK-SNAP-7: the veto is advisory).
    async fn freeze_one(
        &self,
        writer: Arc<SessionWriter>,
    ) -> (Arc<SessionWriter>, Option<WriterReply>) {
        let timeout = writer.entry.freeze_timeout;
        let deadline = Instant::now() + timeout;
        writer.mark_frozen();
        self.first_freeze.get_or_init(Instant::now);
        self.spawn_watchdog(writer.clone(), deadline);
        let event = WriterEvent::Freeze {
            set: self.set,
            freeze_timeout: timeout,
        };
        let delivery = deliver(&writer.entry, writer.session, event, deadline).await;
        let gone = matches!(delivery, Delivery::Gone);
        match delivery.into_result(
            WriterEventKind::Freeze,
            timeout,
            codes::VSS_E_WRITERERROR_TIMEOUT,
        ) {
            Ok(reply) => {
                // Only while the window is open: the watchdog may have won the race and made
                // the writer FAILED_AT_FREEZE.
                writer.set_state_if_frozen(WriterState::WaitingForThaw);
                (writer, Some(reply))
            }
            Err(failed) => {
                let Failed { failure, reply } = *failed;
                if writer.take_frozen_for_abort(failure) && !gone {
                    self.spawn_abort(writer.clone());
                }
                (writer, reply)
            }
        }
    }

    /// Ends the writer's freeze with Abort when its window runs out before Thaw was sent
    /// (BK-SNAP-5: FAILED_AT_FREEZE with VSS_E_WRITERERROR_TIMEOUT).
    fn spawn_watchdog(&self, writer: Arc<SessionWriter>, deadline: Instant) {
        let mut done = self.done.subscribe();
        let shared = self.shared.clone();
        let set = self.set;
        self.spawn(async move {
            // Also ends when the sender is dropped: the guards then took over.
            let stop = async move {
                let _ = done.wait_for(|done| *done).await;
            };
            let expired = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => true,
                _ = stop => false,
            };
            if !expired {
                return;
            }
            let failure = WriterFailure::new(
                codes::VSS_E_WRITERERROR_TIMEOUT,
                format!(
                    "the freeze window of {} ms ran out before Thaw was sent (BK-SNAP-5)",
                    writer.entry.freeze_timeout.as_millis()
                ),
            );
            if writer.take_frozen_for_abort(failure) {
                send_abort(&shared, &writer, Some(set)).await;
            }
        });
    }

    async fn thaw_level(
        &self,
        level: &[Arc<SessionWriter>],
    ) -> Vec<(Arc<SessionWriter>, Option<WriterReply>)> {
        let limit = self.shared.config.event_timeouts.thaw;
        let replies = join_all(level.iter().map(|writer| async move {
            if !writer.take_frozen() {
                // Its window ran out or it vetoed: it was sent Abort instead.
                return None;
            }
            let result = send_event(writer, WriterEvent::Thaw { set: self.set }, limit).await;
            Some(match result {
                Ok(reply) => {
                    writer.set_state(WriterState::WaitingForPostSnapshot);
                    (writer.clone(), Some(reply))
                }
                Err(failed) => {
                    let Failed { failure, reply } = *failed;
                    // A failed Thaw makes the writer abort itself (BK-SNAP-7).
                    writer.fail(WriterEventKind::Thaw, failure);
                    if writer.claim_abort() {
                        self.spawn_abort(writer.clone());
                    }
                    (writer.clone(), reply)
                }
            })
        }))
        .await;
        replies.into_iter().flatten().collect()
    }

    async fn post_snapshot(&self, bcd: &mut BackupComponents) {
        let ready: Vec<Arc<SessionWriter>> = self
            .writers
            .iter()
            .filter(|w| {
                let flags = w.flags();
                flags.state == WriterState::WaitingForPostSnapshot && !flags.aborted
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            return;
        }
        let locations = self.locations().await;
        let limit = self.shared.config.event_timeouts.post_snapshot;
        let sent: Vec<_> = ready.iter().map(|w| components_of(bcd, w)).collect();
        let results = join_all(ready.iter().zip(&sent).map(|(writer, components)| {
            let event = WriterEvent::PostSnapshot {
                set: self.set,
                components: components.clone(),
                snapshots: locations.clone(),
            };
            send_event(writer, event, limit)
        }))
        .await;
        for ((writer, sent), result) in ready.iter().zip(&sent).zip(results) {
            let reply = match result {
                Ok(reply) => {
                    writer.flags().post_snapshot_done = true;
                    writer.set_state(WriterState::WaitingForBackupComplete);
                    Some(reply)
                }
                Err(failed) => {
                    let Failed { failure, reply } = *failed;
                    // A writer that answered has handled PostSnapshot, even with a failure, and
                    // gets no Abort (BK-ABORT-4); a failure here does not abort (BK-SNAP-6).
                    if reply.is_some() {
                        writer.flags().post_snapshot_done = true;
                    }
                    writer.fail(WriterEventKind::PostSnapshot, failure);
                    reply
                }
            };
            apply_components(
                bcd,
                Phase::PostSnapshot,
                WriterEventKind::PostSnapshot,
                writer,
                sent,
                reply.as_ref(),
            );
        }
    }

    /// Where each volume's shadow copy can be read, for PostSnapshot.
    async fn locations(&self) -> Vec<SnapshotLocation> {
        let mut records = Vec::new();
        for provider in &self.providers {
            match call_provider(
                provider,
                ProviderStep::QuerySnapshots,
                &format!("set {}", self.set),
                Some(self.shared.config.provider_timeouts.call),
                provider.provider.query_snapshots(),
            )
            .await
            {
                Ok(found) => records.extend(found.into_iter().filter(|r| r.set_id == self.set)),
                Err(error) => tracing::warn!("cannot list the new shadow copies: {error}"),
            }
        }
        records
            .into_iter()
            .map(|r| SnapshotLocation {
                volume: r.volume,
                snapshot_id: r.snapshot_id,
                snapshot_path: r.snapshot_path,
            })
            .collect()
    }

    /// BK-SNAP-8: the whole set fails. Every participating writer that has not handled PostSnapshot
    /// gets Abort (frozen ones included), the providers get AbortSnapshots and anything committed is
    /// deleted, so that no shadow copy of the set survives.
    async fn fail(&self, error: CoordinatorError, providers: &ProvidersGuard) -> CoordinatorError {
        tracing::error!(set = %self.set, code = error.code().name, "snapshot set failed: {}", error.message());
        abort_writers(&self.shared, self.set, &self.writers).await;
        // Frozen writers have now answered their Abort.
        self.end_freeze();
        if providers.end_prepare_reached {
            abort_providers(
                &self.shared,
                self.set,
                &self.providers,
                self.commit_reached.load(Ordering::SeqCst),
            )
            .await;
        }
        error
    }

    /// Stops the watchdogs of thawed writers and waits for every Abort still being delivered.
    async fn finish(&self) {
        self.done.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!("a Thaw/Abort task failed: {error}");
            }
        }
    }
}

/// The future of one set-level provider step.
fn set_step(
    provider: &RegisteredProvider,
    step: ProviderStep,
    set: SnapshotSetId,
) -> futures::future::BoxFuture<'_, std::result::Result<(), crate::provider::ProviderError>> {
    let p = &provider.provider;
    match step {
        ProviderStep::EndPrepareSnapshots => p.end_prepare_snapshots(set),
        ProviderStep::PreCommitSnapshots => p.pre_commit_snapshots(set),
        ProviderStep::CommitSnapshots => p.commit_snapshots(set),
        ProviderStep::PostCommitSnapshots => p.post_commit_snapshots(set),
        ProviderStep::PreFinalCommitSnapshots => p.pre_final_commit_snapshots(set),
        ProviderStep::PostFinalCommitSnapshots => p.post_final_commit_snapshots(set),
        ProviderStep::AbortSnapshots => p.abort_snapshots(set),
        other => unreachable!("{other} is not a set-level step"),
    }
}

/// Applies the records writers sent back in one stage.
fn apply_all(
    bcd: &mut BackupComponents,
    phase: Phase,
    kind: WriterEventKind,
    replies: Vec<(Arc<SessionWriter>, Option<WriterReply>)>,
) {
    for (writer, reply) in replies {
        if reply.as_ref().is_some_and(|r| r.components.is_some()) {
            let sent = components_of(bcd, &writer);
            apply_components(bcd, phase, kind, &writer, &sent, reply.as_ref());
        }
    }
}

/// Sends Abort to every writer that may still get one (BK-ABORT-3, BK-ABORT-4), concurrently.
pub(crate) async fn abort_writers(
    shared: &Shared,
    set: SnapshotSetId,
    writers: &[Arc<SessionWriter>],
) {
    let claimed: Vec<&Arc<SessionWriter>> = writers.iter().filter(|w| w.claim_abort()).collect();
    join_all(
        claimed
            .into_iter()
            .map(|writer| send_abort(shared, writer, Some(set))),
    )
    .await;
}

/// AbortSnapshots to every provider of the set (its result is not translated, PROV-R-3), then
/// deletes whatever was already committed, so that no shadow copy survives (PROV-R-2, BK-SNAP-8).
async fn abort_providers(
    shared: &Shared,
    set: SnapshotSetId,
    providers: &[RegisteredProvider],
    commit_reached: bool,
) {
    let limit = shared.config.provider_timeouts.call;
    for provider in providers {
        let name = &provider.info.name;
        match tokio::time::timeout(limit, provider.provider.abort_snapshots(set)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(
                provider = %name,
                method = "AbortSnapshots",
                code = error.code.name,
                "{}",
                error.message
            ),
            Err(_) => tracing::error!(provider = %name, method = "AbortSnapshots", "no answer"),
        }
        if commit_reached {
            match tokio::time::timeout(
                limit,
                provider.provider.delete_snapshots(DeleteTarget::Set(set)),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(error)) if error.code == codes::VSS_E_OBJECT_NOT_FOUND => {}
                Ok(Err(error)) => tracing::error!(
                    provider = %name,
                    method = "DeleteSnapshots",
                    code = error.code.name,
                    "cannot delete the committed shadow copies of failed set {set}: {}",
                    error.message
                ),
                Err(_) => {
                    tracing::error!(provider = %name, method = "DeleteSnapshots", "no answer")
                }
            }
        }
    }
}

/// Aborts every participating writer if DoSnapshotSet is cut short (panic or dropped future).
struct WritersGuard {
    shared: Arc<Shared>,
    set: SnapshotSetId,
    writers: Vec<Arc<SessionWriter>>,
    handle: Handle,
    armed: bool,
}

impl Drop for WritersGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::error!(set = %self.set, "snapshot set creation was interrupted; aborting its writers");
        // Claim synchronously, so that nothing else can thaw or abort them twice.
        let claimed: Vec<Arc<SessionWriter>> = self
            .writers
            .iter()
            .filter(|w| w.claim_abort())
            .cloned()
            .collect();
        for writer in claimed {
            let shared = self.shared.clone();
            let set = self.set;
            self.shared
                .background
                .spawn(Some(&self.handle), async move {
                    send_abort(&shared, &writer, Some(set)).await;
                });
        }
    }
}

/// Aborts the providers if DoSnapshotSet is cut short after EndPrepareSnapshots was called.
struct ProvidersGuard {
    shared: Arc<Shared>,
    set: SnapshotSetId,
    providers: Vec<RegisteredProvider>,
    handle: Handle,
    end_prepare_reached: bool,
    armed: bool,
}

impl Drop for ProvidersGuard {
    fn drop(&mut self) {
        if !self.armed || !self.end_prepare_reached {
            return;
        }
        let shared = self.shared.clone();
        let set = self.set;
        let providers = self.providers.clone();
        // The sequence may have been cut anywhere after EndPrepareSnapshots: delete whatever may
        // have been committed too; deleting nothing is harmless.
        self.shared
            .background
            .spawn(Some(&self.handle), async move {
                abort_providers(&shared, set, &providers, true).await;
            });
    }
}
