//! `bench`: the cost of one full backup cycle through the daemon, with N in-process SDK writers
//! registered over its socket.
//!
//! One cycle is what a requester and its writers go through for one backup, from opening the
//! session to the moment every writer has handled BackupShutdown: InitializeForBackup,
//! SetBackupState, GatherWriterMetadata (Identify to every writer), AddComponent for each writer,
//! StartSnapshotSet, AddToSnapshotSet of one `/sim/ok` volume, PrepareForBackup, DoSnapshotSet
//! (PrepareForSnapshot, Freeze, the simulated provider's commit, Thaw, PostSnapshot), BackupComplete
//! and the release (BackupShutdown). The writers answer every event at once, so the figure is the
//! cost of the coordinator, the daemon's transport and the SDK, not of any application.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shadowcopy_metadata::WriterClassId;
use shadowcopy_metadata::bcd::BackupState;
use shadowcopy_metadata::enums::ComponentType;
use shadowcopy_metadata::wmd::{Component, FileDescriptor, WriterMetadata};
use shadowcopy_requester::{Client, ComponentKey};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterHandle, WriterOptions};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The volume every cycle snapshots.
const VOLUME: &str = "/sim/ok/conformance-bench";

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// The daemon's socket.
    pub socket: std::path::PathBuf,
    /// The numbers of writers to measure with, one row each.
    pub writers: Vec<usize>,
    /// Measured cycles per row, after one unmeasured warm-up cycle.
    pub iterations: usize,
}

/// The figures for one number of writers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchRow {
    /// How many writers took part.
    pub writers: usize,
    /// How many cycles were measured.
    pub iterations: usize,
    /// The median cycle.
    pub median: Duration,
    /// The 90th percentile (nearest rank).
    pub p90: Duration,
}

/// Counts BackupShutdown events across the writers of one row.
#[derive(Debug, Default)]
struct Shutdowns {
    count: AtomicUsize,
    notify: Notify,
}

impl Shutdowns {
    /// Waits until at least `target` BackupShutdowns were handled, or `limit` passed.
    async fn wait(&self, target: usize, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let seen = self.count.load(Ordering::SeqCst);
            if seen >= target {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "only {seen} of {target} BackupShutdown events arrived within {} s",
                    limit.as_secs()
                ));
            }
        }
    }
}

/// A writer that answers every event at once and counts BackupShutdown.
struct BenchWriter {
    name: String,
    class_id: WriterClassId,
    shutdowns: Arc<Shutdowns>,
}

impl Writer for BenchWriter {
    fn metadata(&self) -> WriterMetadata {
        let files = vec![FileDescriptor::new(
            format!("{VOLUME}/{}", self.name),
            "*",
            true,
        )];
        let data = Component::file_group("", "data", true, files);
        WriterMetadata::simple(self.name.clone(), self.class_id, vec![data])
    }

    async fn on_backup_shutdown(&self, _ctx: &EventContext) -> HandlerResult {
        self.shutdowns.count.fetch_add(1, Ordering::SeqCst);
        self.shutdowns.notify.notify_waiters();
        Ok(())
    }
}

/// Measures each row of `options`; `on_row` sees each row as soon as it is measured.
pub async fn bench(
    options: &BenchOptions,
    mut on_row: impl FnMut(&BenchRow),
) -> Result<Vec<BenchRow>, String> {
    let client = crate::connect(&options.socket)
        .await
        .map_err(|error| error.to_string())?;
    let mut rows = Vec::new();
    for &count in &options.writers {
        let row = measure(&client, options, count).await?;
        on_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// One row: registers `count` writers, runs a warm-up cycle and the measured ones, stops them.
async fn measure(
    client: &Client,
    options: &BenchOptions,
    count: usize,
) -> Result<BenchRow, String> {
    let shutdowns = Arc::new(Shutdowns::default());
    let mut handles: Vec<WriterHandle> = Vec::with_capacity(count);
    let mut keys = Vec::with_capacity(count);
    let run = shadowcopy_metadata::Guid::new_v4().simple().to_string();
    for index in 0..count {
        let writer = BenchWriter {
            name: format!("conformance-bench-{}-{index}", &run[..8]),
            class_id: WriterClassId::new_random(),
            shutdowns: Arc::clone(&shutdowns),
        };
        let class_id = writer.class_id;
        let mut handle =
            shadowcopy_writer_sdk::spawn(writer, WriterOptions::with_socket(&options.socket));
        let instance = tokio::time::timeout(Duration::from_secs(30), handle.registered())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| format!("bench writer {index} did not register"))?;
        keys.push(ComponentKey {
            writer_instance_id: instance,
            writer_class_id: class_id,
            component_type: ComponentType::FileGroup,
            logical_path: String::new(),
            name: "data".into(),
        });
        handles.push(handle);
    }
    let mut times = Vec::with_capacity(options.iterations);
    let mut expected = 0;
    for iteration in 0..=options.iterations {
        expected += count;
        let started = Instant::now();
        cycle(client, &keys).await?;
        shutdowns.wait(expected, Duration::from_secs(60)).await?;
        // The first cycle warms up connections and caches and is not counted.
        if iteration > 0 {
            times.push(started.elapsed());
        }
    }
    futures::future::join_all(handles.into_iter().map(WriterHandle::shutdown)).await;
    times.sort_unstable();
    Ok(BenchRow {
        writers: count,
        iterations: times.len(),
        median: median(&times),
        p90: percentile(&times, 90),
    })
}

/// A `map_err` adapter that names the failed step.
fn fail(step: &'static str) -> impl Fn(shadowcopy_requester::RequesterError) -> String {
    move |error| format!("{step}: {error}")
}

/// One backup cycle, from opening the session to the release.
async fn cycle(client: &Client, keys: &[ComponentKey]) -> Result<(), String> {
    let mut session = client
        .backup_session()
        .await
        .map_err(fail("open a session"))?;
    session
        .initialize_for_backup(None)
        .await
        .map_err(fail("InitializeForBackup"))?;
    session
        .set_backup_state(BackupState::default())
        .await
        .map_err(fail("SetBackupState"))?;
    session
        .gather_writer_metadata()
        .await
        .map_err(fail("GatherWriterMetadata"))?;
    for key in keys {
        session
            .add_component(key)
            .await
            .map_err(fail("AddComponent"))?;
    }
    session
        .start_snapshot_set()
        .await
        .map_err(fail("StartSnapshotSet"))?;
    session
        .add_to_snapshot_set(VOLUME, None)
        .await
        .map_err(fail("AddToSnapshotSet"))?;
    session
        .prepare_for_backup()
        .await
        .map_err(fail("PrepareForBackup"))?;
    session
        .do_snapshot_set()
        .await
        .map_err(fail("DoSnapshotSet"))?;
    session
        .backup_complete()
        .await
        .map_err(fail("BackupComplete"))?;
    session.release().await.map_err(fail("release"))
}

/// The median of sorted durations; zero for none.
fn median(sorted: &[Duration]) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// The nearest-rank percentile of sorted durations; zero for none.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_follow_their_definitions() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median(&ms(&[1, 2, 3])), Duration::from_millis(2));
        assert_eq!(median(&ms(&[1, 2, 3, 5])), Duration::from_micros(2_500));
        let twenty: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&ms(&twenty), 90), Duration::from_millis(18));
        assert_eq!(percentile(&ms(&[7]), 90), Duration::from_millis(7));
        assert_eq!(median(&[]), Duration::ZERO);
    }
}
