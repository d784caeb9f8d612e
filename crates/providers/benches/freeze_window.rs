//! Benchmark: the freeze window of one shadow copy set over two btrfs volumes and one xfs
//! loop-image volume, with each provider's commit time, next to the bare ioctls measured in the
//! same run (docs/PERFORMANCE.md).
//!
//! Each round makes one BACKUP set through the coordinator with the real providers and one
//! in-process writer, then, on the same volumes, the bare syscalls that set is made of: one
//! BTRFS_IOC_SNAP_CREATE_V2 per btrfs volume, and FIFREEZE + FICLONE + FITHAW of the xfs volume.
//! Before both, every volume gets the same small write, so both start with a little dirty data;
//! the two alternate in which runs first.
//!
//! - freeze window: from the writer receiving Freeze to it receiving Thaw (first Freeze to last
//!   Thaw, with one writer these are the same);
//! - commit: each provider's CommitSnapshots as the coordinator sees it.
//!
//! Run with `cargo bench -p shadowcopy-providers --bench freeze_window` (root, btrfs-progs and
//! xfsprogs; it makes its own loop volumes and removes them). `FREEZE_WINDOW_ROUNDS` sets the
//! number of rounds (default 30).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shadowcopy_coordinator::{
    Coordinator, CoordinatorConfig, DeleteTarget, EndpointError, Provider, ProviderError,
    ProviderInfo, SnapshotRecord, VolumeSupport, WriterEndpoint, WriterEvent, WriterRegistration,
    WriterReply,
};
use shadowcopy_metadata::enums::SnapshotContext;
use shadowcopy_metadata::wmd::{Component, FileDescriptor};
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, WriterClassId, WriterMetadata};
use shadowcopy_providers::{BtrfsProvider, LoopImageProvider, bare};
use shadowcopy_test_support::{FsKind, LoopVolume, MIB};

/// Wraps a provider and records how long each CommitSnapshots took.
struct Timed {
    inner: Arc<dyn Provider>,
    commits: Mutex<Vec<Duration>>,
}

#[async_trait]
impl Provider for Timed {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }
    async fn is_volume_supported(
        &self,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<VolumeSupport, ProviderError> {
        self.inner.is_volume_supported(volume, context).await
    }
    async fn begin_prepare_snapshot(
        &self,
        set: SnapshotSetId,
        snapshot: SnapshotId,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<(), ProviderError> {
        self.inner
            .begin_prepare_snapshot(set, snapshot, volume, context)
            .await
    }
    async fn end_prepare_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.inner.end_prepare_snapshots(set).await
    }
    async fn pre_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.inner.pre_commit_snapshots(set).await
    }
    async fn commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        let start = Instant::now();
        let result = self.inner.commit_snapshots(set).await;
        self.commits.lock().unwrap().push(start.elapsed());
        result
    }
    async fn post_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.inner.post_commit_snapshots(set).await
    }
    async fn pre_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.inner.pre_final_commit_snapshots(set).await
    }
    async fn post_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.inner.post_final_commit_snapshots(set).await
    }
    async fn abort_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError> {
        self.inner.abort_snapshots(set).await
    }
    async fn delete_snapshots(&self, target: DeleteTarget) -> Result<usize, ProviderError> {
        self.inner.delete_snapshots(target).await
    }
    async fn query_snapshots(&self) -> Result<Vec<SnapshotRecord>, ProviderError> {
        self.inner.query_snapshots().await
    }
}

/// A writer that answers at once and records when Freeze and Thaw reached it.
struct StopwatchWriter {
    metadata: WriterMetadata,
    freeze: Mutex<Option<Instant>>,
    windows: Mutex<Vec<Duration>>,
}

#[async_trait]
impl WriterEndpoint for StopwatchWriter {
    async fn deliver(&self, event: WriterEvent) -> Result<WriterReply, EndpointError> {
        match event {
            WriterEvent::Identify => return Ok(WriterReply::identified(self.metadata.clone())),
            WriterEvent::Freeze { .. } => *self.freeze.lock().unwrap() = Some(Instant::now()),
            WriterEvent::Thaw { .. } => {
                if let Some(start) = self.freeze.lock().unwrap().take() {
                    self.windows.lock().unwrap().push(start.elapsed());
                }
            }
            _ => {}
        }
        Ok(WriterReply::ok())
    }
}

/// The bare syscalls of one round.
#[derive(Default)]
struct BareRound {
    btrfs_snapshot: Vec<Duration>,
    xfs_freeze_clone_thaw: Duration,
}

fn dirty(volumes: &[PathBuf], round: usize) {
    for volume in volumes {
        std::fs::write(volume.join("dirty"), vec![round as u8; 64 * 1024]).unwrap();
    }
}

fn syncfs(path: &Path) {
    let dir = File::open(path).unwrap();
    nix::unistd::syncfs(&dir).unwrap();
}

/// The bare ioctls on the same volumes: freeze, clone and thaw the xfs; snapshot each btrfs.
///
/// The xfs volume goes first on purpose: right after two btrfs snapshots (each a transaction
/// commit whose flushes go through the loop devices to the host), FIFREEZE waits for that I/O and
/// takes about 28 ms instead of 2 ms on these machines. This order gives the lowest bare figure,
/// the strictest baseline.
fn bare_round(
    btrfs: &[&Path],
    xfs: &Path,
    xfs_image: &Path,
    host: &Path,
    round: usize,
) -> BareRound {
    let mut measured = BareRound::default();
    let root = File::open(xfs).unwrap();
    let image = File::open(xfs_image).unwrap();
    let clone_path = host.join(format!("bare-clone-{round}.img"));
    let clone = File::create(&clone_path).unwrap();
    let start = Instant::now();
    bare::freeze(&root).unwrap();
    let cloned = bare::ficlone(&clone, &image);
    bare::thaw(&root).unwrap();
    measured.xfs_freeze_clone_thaw = start.elapsed();
    cloned.unwrap();
    std::fs::remove_file(&clone_path).unwrap();
    for volume in btrfs {
        let source = File::open(volume).unwrap();
        let name = format!("bare-{round}");
        let start = Instant::now();
        bare::btrfs_snapshot(&source, &source, &name).unwrap();
        measured.btrfs_snapshot.push(start.elapsed());
        bare::btrfs_delete_snapshot(&source, &name).unwrap();
    }
    measured
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn main() {
    let rounds: usize = std::env::var("FREEZE_WINDOW_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let btrfs_a = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let btrfs_b = LoopVolume::btrfs(256 * MIB).expect("a second btrfs loop volume");
    let host = LoopVolume::xfs(768 * MIB).expect("an xfs host volume (xfsprogs)");
    let xfs = LoopVolume::new_in(FsKind::Xfs, 320 * MIB, host.mount_point())
        .expect("an xfs loop volume whose image is on the host");
    let volumes: Vec<PathBuf> = [&btrfs_a, &btrfs_b, &xfs]
        .iter()
        .map(|v| v.mount_point().to_path_buf())
        .collect();

    let btrfs = Arc::new(Timed {
        inner: Arc::new(BtrfsProvider::new()),
        commits: Mutex::new(Vec::new()),
    });
    let loop_image = Arc::new(Timed {
        inner: Arc::new(LoopImageProvider::new()),
        commits: Mutex::new(Vec::new()),
    });
    let coordinator = Coordinator::new(
        CoordinatorConfig::default(),
        vec![btrfs.clone(), loop_image.clone()],
    );
    let class_id = WriterClassId::new_random();
    let files = volumes
        .iter()
        .map(|v| FileDescriptor::new(v.to_str().unwrap(), "dirty", false))
        .collect();
    let writer = Arc::new(StopwatchWriter {
        metadata: WriterMetadata::simple(
            "freeze-window",
            class_id,
            vec![Component::file_group("", "data", true, files)],
        ),
        freeze: Mutex::new(None),
        windows: Mutex::new(Vec::new()),
    });
    coordinator
        .register_writer(
            WriterRegistration::new(class_id, "freeze-window"),
            writer.clone(),
        )
        .expect("the writer registers");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut sets = Vec::new();
    let mut bare_btrfs: Vec<Duration> = Vec::new();
    let mut bare_xfs: Vec<Duration> = Vec::new();
    let mut bare_total: Vec<Duration> = Vec::new();
    let btrfs_paths = [btrfs_a.mount_point(), btrfs_b.mount_point()];
    // One warm-up round of each, not measured.
    for round in 0..=rounds {
        let run_set = || {
            dirty(&volumes, round);
            let start = Instant::now();
            runtime.block_on(async {
                let mut session = coordinator.open_backup_session();
                session.initialize_for_backup(None).expect("initialize");
                session.gather_writer_metadata().await.expect("gather");
                for metadata in session.writer_metadata().expect("metadata") {
                    session
                        .add_component(metadata.identity.instance_id, "", "data")
                        .expect("add component");
                }
                session.start_snapshot_set().expect("start set");
                for volume in &volumes {
                    session
                        .add_to_snapshot_set(volume.to_str().unwrap(), None)
                        .await
                        .expect("add volume");
                }
                session.prepare_for_backup().await.expect("prepare");
                session.do_snapshot_set().await.expect("snapshot set");
                session.backup_complete().await.expect("complete");
                // BACKUP context: the copies are deleted at release.
                session.release().await.expect("release");
            });
            start.elapsed()
        };
        let run_bare = || {
            dirty(&volumes, round);
            for volume in &volumes {
                syncfs(volume);
            }
            bare_round(
                &btrfs_paths,
                xfs.mount_point(),
                xfs.image(),
                host.mount_point(),
                round,
            )
        };
        // Alternate which goes first, so that neither always runs in the other's wake (the
        // deletion of the previous copies, the file systems' background work).
        let (set_time, measured) = if round % 2 == 0 {
            let set_time = run_set();
            (set_time, run_bare())
        } else {
            let measured = run_bare();
            (run_set(), measured)
        };
        if round == 0 {
            btrfs.commits.lock().unwrap().clear();
            loop_image.commits.lock().unwrap().clear();
            writer.windows.lock().unwrap().clear();
            continue;
        }
        sets.push(set_time);
        let btrfs_sum: Duration = measured.btrfs_snapshot.iter().sum();
        bare_btrfs.extend(measured.btrfs_snapshot);
        bare_xfs.push(measured.xfs_freeze_clone_thaw);
        bare_total.push(btrfs_sum + measured.xfs_freeze_clone_thaw);
    }
    runtime.block_on(coordinator.wait_background());

    let mut windows = writer.windows.lock().unwrap().clone();
    assert_eq!(
        windows.len(),
        rounds,
        "every round froze and thawed the writer"
    );
    let mut btrfs_commits = btrfs.commits.lock().unwrap().clone();
    let mut loop_commits = loop_image.commits.lock().unwrap().clone();
    let window = median(&mut windows);
    let total = median(&mut bare_total);
    println!("three-volume set (2 btrfs + 1 xfs loop-image), {rounds} rounds, medians");
    println!("{:<52} {:>10}", "measure", "median");
    println!(
        "{:<52} {:>10}",
        "freeze window (first Freeze to last Thaw)",
        ms(window)
    );
    println!(
        "{:<52} {:>10}",
        "btrfs provider CommitSnapshots (2 volumes)",
        ms(median(&mut btrfs_commits))
    );
    println!(
        "{:<52} {:>10}",
        "loop-image provider CommitSnapshots (1 volume)",
        ms(median(&mut loop_commits))
    );
    println!(
        "{:<52} {:>10}",
        "bare BTRFS_IOC_SNAP_CREATE_V2 (one volume)",
        ms(median(&mut bare_btrfs))
    );
    println!(
        "{:<52} {:>10}",
        "bare FIFREEZE + FICLONE + FITHAW (xfs volume)",
        ms(median(&mut bare_xfs))
    );
    println!(
        "{:<52} {:>10}",
        "bare total (2 snapshots + freeze/clone/thaw)",
        ms(total)
    );
    println!(
        "{:<52} {:>10}",
        "whole set (gather to release)",
        ms(median(&mut sets))
    );
    println!(
        "freeze window / bare total: {:.2}",
        window.as_secs_f64() / total.as_secs_f64()
    );

    drop(coordinator);
    xfs.close().expect("the xfs volume detaches");
    host.close().expect("the host volume detaches");
    btrfs_a.close().expect("the first btrfs detaches");
    btrfs_b.close().expect("the second btrfs detaches");
}
