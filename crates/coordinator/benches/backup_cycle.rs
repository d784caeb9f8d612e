//! Benchmark: one full backup cycle (GatherWriterMetadata to release) through the coordinator with
//! a `SimProvider` and N in-process writers that answer at once, for N = 1, 10 and 100.
//!
//! It measures the coordinator's own overhead (event fan-out, state bookkeeping, BCD handling),
//! not providers or writers. Run with `cargo bench -p shadowcopy-coordinator --bench backup_cycle`;
//! it prints the median and 90th percentile of 30 cycles per N.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shadowcopy_coordinator::sim::SimProvider;
use shadowcopy_coordinator::{
    Coordinator, CoordinatorConfig, EndpointError, Provider, WriterEndpoint, WriterEvent,
    WriterRegistration, WriterReply,
};
use shadowcopy_metadata::enums::ApplicationLevel;
use shadowcopy_metadata::wmd::{Component, FileDescriptor};
use shadowcopy_metadata::{WriterClassId, WriterMetadata};

const ITERATIONS: usize = 30;

/// A writer that succeeds at every event at once.
struct InstantWriter {
    metadata: WriterMetadata,
}

#[async_trait]
impl WriterEndpoint for InstantWriter {
    async fn deliver(&self, event: WriterEvent) -> Result<WriterReply, EndpointError> {
        Ok(match event {
            WriterEvent::Identify => WriterReply::identified(self.metadata.clone()),
            _ => WriterReply::ok(),
        })
    }
}

fn metadata(index: usize, class_id: WriterClassId) -> WriterMetadata {
    let files = vec![FileDescriptor::new(
        format!("/srv/bench-{index}"),
        "*",
        true,
    )];
    let data = Component::file_group("", "data", true, files);
    WriterMetadata::simple(format!("bench-{index}"), class_id, vec![data])
}

fn coordinator(writers: usize) -> Coordinator {
    let provider: Arc<dyn Provider> = Arc::new(SimProvider::new("sim"));
    let coordinator = Coordinator::new(CoordinatorConfig::default(), vec![provider]);
    let levels = [
        ApplicationLevel::FrontEnd,
        ApplicationLevel::BackEnd,
        ApplicationLevel::System,
    ];
    for index in 0..writers {
        let class_id = WriterClassId::new_random();
        let registration = WriterRegistration {
            application_level: levels[index % levels.len()],
            ..WriterRegistration::new(class_id, format!("bench-{index}"))
        };
        let endpoint = Arc::new(InstantWriter {
            metadata: metadata(index, class_id),
        });
        coordinator
            .register_writer(registration, endpoint)
            .expect("registration");
    }
    coordinator
}

async fn cycle(coordinator: &Coordinator) {
    let mut session = coordinator.open_backup_session();
    session.initialize_for_backup(None).expect("initialize");
    session.gather_writer_metadata().await.expect("gather");
    for metadata in session.writer_metadata().expect("metadata") {
        session
            .add_component(metadata.identity.instance_id, "", "data")
            .expect("add component");
    }
    session.start_snapshot_set().expect("start set");
    session
        .add_to_snapshot_set("/srv", None)
        .await
        .expect("add volume");
    session.prepare_for_backup().await.expect("prepare");
    session.do_snapshot_set().await.expect("snapshot set");
    session.backup_complete().await.expect("complete");
    session.release().await.expect("release");
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("backup cycle (gather to release), SimProvider, {ITERATIONS} iterations per N");
    println!("{:>5}  {:>12}  {:>12}", "N", "median", "p90");
    for writers in [1, 10, 100] {
        let coordinator = coordinator(writers);
        let mut samples: Vec<Duration> = runtime.block_on(async {
            // One warm-up cycle, not measured.
            cycle(&coordinator).await;
            let mut samples = Vec::with_capacity(ITERATIONS);
            for _ in 0..ITERATIONS {
                let start = Instant::now();
                cycle(&coordinator).await;
                samples.push(start.elapsed());
            }
            samples
        });
        samples.sort();
        println!(
            "{writers:>5}  {:>12.3?}  {:>12.3?}",
            percentile(&samples, 0.5),
            percentile(&samples, 0.9)
        );
    }
}
