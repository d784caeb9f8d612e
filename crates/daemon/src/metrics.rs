//! The daemon's Prometheus metrics (`[metrics]`, docs/metrics.md): snapshot sets created and
//! failed, the writers' freeze window, writer states, shadow copies and storage per volume,
//! sessions, served as `GET /metrics` on a TCP port or a Unix socket (`server.rs`), off unless
//! `metrics.listen` is set.
//!
//! Where the facts come from: the coordinator reports every snapshot set once it is over through
//! its observer ([`SetMetrics`] counts them; only the coordinator sees Freeze sent and Thaw
//! answered), and everything that is a state now (writers, sessions, shadow copies, file system
//! usage) is read afresh at each scrape, so that no second copy of it can drift.

mod server;
mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use shadowcopy_coordinator::{SetObserver, SetOutcome, SnapshotSetReport};
use shadowcopy_metadata::SnapshotSetId;

pub(crate) use server::MetricsServer;
use text::{Exposition, Histogram, Kind, seconds};

use crate::config::MetricsListen;
use crate::state::Daemon;

/// Freeze window buckets, 1 ms to 60 s (the longest freeze a writer may declare, LIMIT-6).
static FREEZE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// DoSnapshotSet duration buckets, 10 ms to 10 min (EndPrepareSnapshots may take 600 s).
static SET_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// How long a scrape waits for the providers' listing of shadow copies; Prometheus's own scrape
/// timeout is 10 s by default, and a scrape that answers without the copies beats none.
const LISTING_TIMEOUT: Duration = Duration::from_secs(5);

/// The `code` label of a set cut short, which has no VSS result code.
const INTERRUPTED: &str = "interrupted";

/// Starts the metrics endpoint if `metrics.listen` is set: installs the set observer on the
/// coordinator and serves `GET /metrics`. `None` when metrics are off.
pub(crate) async fn start(
    daemon: &Arc<Daemon>,
) -> Result<Option<MetricsServer>, (MetricsListen, &'static str, std::io::Error)> {
    let Some(listen) = daemon.config.metrics.listen.clone() else {
        return Ok(None);
    };
    let sets = Arc::new(SetMetrics::default());
    let server = MetricsServer::start(&listen, Arc::clone(daemon), Arc::clone(&sets))
        .await
        .map_err(|(what, source)| (listen, what, source))?;
    // Only once the endpoint exists: with metrics off the coordinator reports to nobody.
    daemon.coordinator.observe_snapshot_sets(sets);
    Ok(Some(server))
}

/// What the coordinator reported about snapshot sets since the daemon started.
#[derive(Debug)]
pub(crate) struct SetMetrics {
    counts: Mutex<SetCounts>,
}

#[derive(Debug)]
struct SetCounts {
    created: u64,
    /// Failed (and interrupted) sets by result code name.
    failed: BTreeMap<&'static str, u64>,
    freeze_window: Histogram,
    duration: Histogram,
    last: Option<LastSet>,
}

/// The set reported last, for the `shadowcopy_last_*` series.
#[derive(Debug, Clone)]
struct LastSet {
    set_id: SnapshotSetId,
    context: &'static str,
    outcome: &'static str,
    code: &'static str,
    freeze_window: Option<Duration>,
    duration: Duration,
    finished: SystemTime,
}

impl Default for SetMetrics {
    fn default() -> Self {
        SetMetrics {
            counts: Mutex::new(SetCounts {
                created: 0,
                failed: BTreeMap::new(),
                freeze_window: Histogram::new(FREEZE_BUCKETS),
                duration: Histogram::new(SET_DURATION_BUCKETS),
                last: None,
            }),
        }
    }
}

impl SetMetrics {
    fn counts(&self) -> std::sync::MutexGuard<'_, SetCounts> {
        // A poisoned lock still holds consistent counts (every update is a few plain writes),
        // and this runs from the coordinator's drop guards, where a panic would abort.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SetObserver for SetMetrics {
    fn snapshot_set_finished(&self, report: &SnapshotSetReport) {
        let (outcome, code) = match report.outcome {
            SetOutcome::Created => ("created", "S_OK"),
            SetOutcome::Failed(code) => ("failed", code.name),
            SetOutcome::Interrupted => ("interrupted", INTERRUPTED),
        };
        let mut counts = self.counts();
        if outcome == "created" {
            counts.created += 1;
        } else {
            *counts.failed.entry(code).or_default() += 1;
        }
        if let Some(window) = report.freeze_window {
            counts.freeze_window.observe(seconds(window));
        }
        counts.duration.observe(seconds(report.duration));
        counts.last = Some(LastSet {
            set_id: report.set_id,
            context: report.context.name(),
            outcome,
            code,
            freeze_window: report.freeze_window,
            duration: report.duration,
            finished: SystemTime::now(),
        });
    }
}

/// One scrape: every family, from the set counts and from the daemon's state now.
pub(crate) async fn render(daemon: &Daemon, sets: &SetMetrics) -> String {
    let mut text = Exposition::default();
    text.family(
        "shadowcopy_build_info",
        Kind::Gauge,
        "The running shadowcopyd's version; always 1.",
    );
    text.sample(
        "shadowcopy_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    render_sets(
        &mut text,
        &sets.counts(),
        daemon.coordinator.set_in_creation(),
    );
    render_writers(&mut text, daemon);
    render_sessions(&mut text, daemon);
    render_shadow_copies(&mut text, daemon).await;
    text.finish()
}

fn render_sets(text: &mut Exposition, counts: &SetCounts, in_creation: Option<SnapshotSetId>) {
    text.family(
        "shadowcopy_snapshot_sets_created_total",
        Kind::Counter,
        "Snapshot sets whose DoSnapshotSet succeeded since shadowcopyd started.",
    );
    text.sample(
        "shadowcopy_snapshot_sets_created_total",
        &[],
        counts.created,
    );
    text.family(
        "shadowcopy_snapshot_sets_failed_total",
        Kind::Counter,
        "Snapshot sets whose DoSnapshotSet failed since shadowcopyd started, by VSS result code \
         (code=\"interrupted\": the requester's call ended mid-set).",
    );
    for (code, count) in &counts.failed {
        text.sample(
            "shadowcopy_snapshot_sets_failed_total",
            &[("code", code)],
            count,
        );
    }
    text.histogram(
        "shadowcopy_freeze_window_seconds",
        "Per snapshot set with frozen writers: from the first Freeze sent to the last Thaw \
         answered (to the last Abort answered when the set failed).",
        &counts.freeze_window,
    );
    text.histogram(
        "shadowcopy_snapshot_set_duration_seconds",
        "Per snapshot set: how long DoSnapshotSet ran, provider preparation included.",
        &counts.duration,
    );
    text.family(
        "shadowcopy_snapshot_set_in_creation",
        Kind::Gauge,
        "1 while a snapshot set is between StartSnapshotSet and the end of DoSnapshotSet (one \
         at a time, LIMIT-4).",
    );
    text.sample(
        "shadowcopy_snapshot_set_in_creation",
        &[],
        u8::from(in_creation.is_some()),
    );
    let Some(last) = &counts.last else {
        return;
    };
    let set_id = last.set_id.to_string();
    text.family(
        "shadowcopy_last_snapshot_set_info",
        Kind::Gauge,
        "The snapshot set that finished last: its id, context, outcome (created, failed, \
         interrupted) and result code; always 1.",
    );
    text.sample(
        "shadowcopy_last_snapshot_set_info",
        &[
            ("set_id", &set_id),
            ("context", last.context),
            ("outcome", last.outcome),
            ("code", last.code),
        ],
        1,
    );
    text.family(
        "shadowcopy_last_snapshot_set_timestamp_seconds",
        Kind::Gauge,
        "When the snapshot set that finished last ended, in seconds since the Unix epoch.",
    );
    let finished = last
        .finished
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    text.sample(
        "shadowcopy_last_snapshot_set_timestamp_seconds",
        &[("set_id", &set_id)],
        seconds(finished),
    );
    text.family(
        "shadowcopy_last_snapshot_set_duration_seconds",
        Kind::Gauge,
        "How long DoSnapshotSet ran for the snapshot set that finished last.",
    );
    text.sample(
        "shadowcopy_last_snapshot_set_duration_seconds",
        &[("set_id", &set_id)],
        seconds(last.duration),
    );
    if let Some(window) = last.freeze_window {
        text.family(
            "shadowcopy_last_freeze_window_seconds",
            Kind::Gauge,
            "The freeze window of the snapshot set that finished last (absent when it froze no \
             writer).",
        );
        text.sample(
            "shadowcopy_last_freeze_window_seconds",
            &[("set_id", &set_id)],
            seconds(window),
        );
    }
}

fn render_writers(text: &mut Exposition, daemon: &Daemon) {
    let writers = daemon.coordinator.writers_status();
    text.family(
        "shadowcopy_writers_registered",
        Kind::Gauge,
        "Writers registered with the coordinator now (connected, hosted included).",
    );
    text.sample("shadowcopy_writers_registered", &[], writers.len());
    text.family(
        "shadowcopy_writer_state",
        Kind::Gauge,
        "Each registered writer's current state (the last any session reported, WST-2); 1 for \
         its state.",
    );
    for writer in &writers {
        text.sample(
            "shadowcopy_writer_state",
            &[
                ("writer", &writer.writer_name),
                ("class_id", &writer.class_id.to_string()),
                (
                    "instance_name",
                    writer.instance_name.as_deref().unwrap_or(""),
                ),
                ("state", writer.state.name()),
            ],
            1,
        );
    }
}

fn render_sessions(text: &mut Exposition, daemon: &Daemon) {
    let (restore, backup) = {
        let sessions = daemon
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let restore = sessions.values().filter(|s| s.restore).count();
        (restore, sessions.len() - restore)
    };
    text.family(
        "shadowcopy_sessions_active",
        Kind::Gauge,
        "Requester sessions open now, by kind (backup, restore).",
    );
    text.sample("shadowcopy_sessions_active", &[("kind", "backup")], backup);
    text.sample(
        "shadowcopy_sessions_active",
        &[("kind", "restore")],
        restore,
    );
}

async fn render_shadow_copies(text: &mut Exposition, daemon: &Daemon) {
    let listed =
        tokio::time::timeout(LISTING_TIMEOUT, daemon.coordinator.finished_snapshots()).await;
    let records = match listed {
        Ok(Ok(records)) => Some(records),
        Ok(Err(error)) => {
            tracing::warn!(%error, "metrics: the shadow copies cannot be listed");
            None
        }
        Err(_) => {
            tracing::warn!(
                "metrics: the providers did not list their shadow copies within {} s",
                LISTING_TIMEOUT.as_secs()
            );
            None
        }
    };
    text.family(
        "shadowcopy_shadow_copies_listed",
        Kind::Gauge,
        "1 when the providers listed their shadow copies for this scrape, 0 when none answered \
         in time (the shadow copy and volume series are then missing).",
    );
    text.sample(
        "shadowcopy_shadow_copies_listed",
        &[],
        u8::from(records.is_some()),
    );
    let Some(records) = records else {
        return;
    };
    let names: BTreeMap<_, _> = daemon
        .coordinator
        .providers()
        .into_iter()
        .map(|info| (info.id, info.name))
        .collect();
    let mut per_volume: BTreeMap<(String, String), usize> = BTreeMap::new();
    for record in &records {
        let provider = names
            .get(&record.provider_id)
            .cloned()
            .unwrap_or_else(|| record.provider_id.to_string());
        *per_volume
            .entry((record.volume.clone(), provider))
            .or_default() += 1;
    }
    text.family(
        "shadowcopy_shadow_copies",
        Kind::Gauge,
        "Finished shadow copies now, per volume and provider, of every context.",
    );
    for ((volume, provider), count) in &per_volume {
        text.sample(
            "shadowcopy_shadow_copies",
            &[("volume", volume), ("provider", provider)],
            count,
        );
    }

    // statvfs may block on a sick file system: off the runtime's threads.
    let volumes: BTreeSet<String> = per_volume.into_keys().map(|(volume, _)| volume).collect();
    let usage = tokio::task::spawn_blocking(move || {
        volumes
            .into_iter()
            .filter_map(|volume| {
                let usage = file_system_usage(&volume)?;
                Some((volume, usage))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    text.family(
        "shadowcopy_volume_used_bytes",
        Kind::Gauge,
        "Bytes in use on the file system of each volume with shadow copies (statvfs: size \
         minus free), copies included.",
    );
    for (volume, (used, _)) in &usage {
        text.sample("shadowcopy_volume_used_bytes", &[("volume", volume)], used);
    }
    text.family(
        "shadowcopy_volume_size_bytes",
        Kind::Gauge,
        "The size of the file system of each volume with shadow copies (statvfs).",
    );
    for (volume, (_, size)) in &usage {
        text.sample("shadowcopy_volume_size_bytes", &[("volume", volume)], size);
    }
}

/// The file system's (used, size) bytes under `volume`; `None` for a volume that is not a path
/// here (the simulated provider's `/sim/...`), logged at debug level.
fn file_system_usage(volume: &str) -> Option<(u64, u64)> {
    match nix::sys::statvfs::statvfs(volume) {
        Ok(stats) => {
            let fragment = stats.fragment_size();
            let size = stats.blocks().saturating_mul(fragment);
            let free = stats.blocks_free().saturating_mul(fragment);
            Some((size.saturating_sub(free), size))
        }
        Err(errno) => {
            tracing::debug!(volume, %errno, "metrics: no file system usage for this volume");
            None
        }
    }
}
