//! An example writer: it owns one file, appends a counter line to it every 100 ms from a
//! background task, holds those writes from Freeze until Thaw or Abort, and describes the file as
//! one FILEGROUP component whose backup stamp is the counter value at the freeze.
//!
//! ```text
//! cargo run -p shadowcopy-writer-sdk --example counter_writer -- \
//!     --socket /run/shadowcopy/shadowcopyd.sock --file /srv/counter/counter.log
//! ```
//!
//! Stop it with Ctrl-C; a backup in progress is aborted first, so the file is never left frozen.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use shadowcopy_metadata::bcd::{Party, WriterComponents};
use shadowcopy_metadata::enums::{
    BackupSchema, ComponentFlags, ComponentType, RestoreMethod, SourceType, UsageType,
    WriterRestore,
};
use shadowcopy_metadata::wmd::{
    Component, FileDescriptor, RestoreMethodSpec, WriterIdentity, WriterVersion,
};
use shadowcopy_metadata::{WriterClassId, WriterInstanceId, WriterMetadata};
use shadowcopy_writer_sdk::{
    EventContext, HandlerResult, Writer, WriterFailure, WriterOptions, run_until,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, watch};

/// The class id of every counter writer, chosen once by its developer (ROLE-7).
const CLASS_ID: &str = "3f6c2d1e-8a47-4b59-9c0d-1e2f3a4b5c6d";

/// The component that holds the file.
const COMPONENT: &str = "counter";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "An example shadowcopy writer that appends a counter to one file")]
struct Args {
    /// The coordinator's socket.
    #[arg(long, default_value = shadowcopy_protocol::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The file the writer owns and appends to; created if missing.
    #[arg(long)]
    file: PathBuf,
    /// Reconnect when shadowcopyd goes away, instead of exiting.
    #[arg(long)]
    reconnect: bool,
    /// Milliseconds between two appended lines.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
}

/// What the writer and its background appender share.
struct Shared {
    /// The owned file, absolute.
    file: PathBuf,
    /// True from Freeze until Thaw or Abort: the appender waits while it is set.
    paused: watch::Sender<bool>,
    /// Held by the appender while it writes one line, so that Freeze can wait for a write in
    /// progress to finish before it reports the file quiesced (BK-SNAP-4).
    io: Mutex<()>,
    /// The last value appended.
    counter: AtomicU64,
    /// The counter value when the file was frozen: the backup stamp (INC-3).
    frozen_at: AtomicU64,
}

/// The writer.
struct CounterWriter {
    shared: Arc<Shared>,
}

impl CounterWriter {
    fn resume(&self) {
        // send_replace never fails, even without receivers, which makes Thaw and Abort idempotent.
        self.shared.paused.send_replace(false);
    }
}

impl Writer for CounterWriter {
    fn metadata(&self) -> WriterMetadata {
        let file = &self.shared.file;
        let directory = file.parent().unwrap_or(Path::new("/"));
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        WriterMetadata {
            schema_version: shadowcopy_metadata::SCHEMA_VERSION,
            identity: WriterIdentity {
                writer_name: "CounterWriter".into(),
                class_id: CLASS_ID.parse::<WriterClassId>().expect("a GUID"),
                // Assigned by the coordinator (ROLE-7).
                instance_id: WriterInstanceId::nil(),
                instance_name: None,
                usage_type: UsageType::UserData,
                source_type: SourceType::NonTransactedDb,
                version: Some(WriterVersion { major: 1, minor: 0 }),
            },
            restore_method: RestoreMethodSpec {
                method: RestoreMethod::RestoreIfCanReplace,
                service: None,
                user_procedure: None,
                writer_restore: WriterRestore::Never,
                reboot_required: false,
            },
            backup_schema: BackupSchema::default(),
            excludes: Vec::new(),
            exclude_from_snapshot: Vec::new(),
            alternate_location_mappings: Vec::new(),
            components: vec![Component {
                component_type: ComponentType::FileGroup,
                logical_path: String::new(),
                name: COMPONENT.into(),
                caption: Some(format!("The counter file {}", file.display())),
                icon: None,
                restore_metadata: false,
                notify_on_backup_complete: true,
                selectable_for_backup: true,
                selectable_for_restore: true,
                component_flags: ComponentFlags::default(),
                files: vec![FileDescriptor::new(
                    directory.to_string_lossy(),
                    name.unwrap_or_default(),
                    false,
                )],
                database_files: Vec::new(),
                database_log_files: Vec::new(),
                dependencies: Vec::new(),
            }],
        }
    }

    async fn on_prepare_snapshot(&self, ctx: &EventContext) -> HandlerResult {
        // A set without our volume cannot hold a consistent copy of our file (ERR-3).
        if !ctx.is_path_affected(&self.shared.file) {
            return Err(WriterFailure::inconsistent_snapshot(format!(
                "{} is on none of the set's volumes {:?}; add its volume to the set",
                self.shared.file.display(),
                ctx.volumes()
            )));
        }
        // The heavy part happens now, not in Freeze (BK-SNAP-3): push the data to disk.
        let file = self.shared.file.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(file)?.sync_all())
            .await
            .map_err(|error| WriterFailure::retryable(format!("fsync task failed: {error}")))?
            .map_err(|error| WriterFailure::retryable(format!("fsync failed: {error}")))?;
        Ok(())
    }

    async fn on_freeze(&self, _ctx: &EventContext) -> HandlerResult {
        self.shared.paused.send_replace(true);
        // Wait for a line being written to finish; no new one starts while `paused` is set.
        let _quiet = self.shared.io.lock().await;
        let value = self.shared.counter.load(Ordering::SeqCst);
        self.shared.frozen_at.store(value, Ordering::SeqCst);
        eprintln!("frozen at {value}");
        Ok(())
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
        self.resume();
        eprintln!("thawed");
        Ok(())
    }

    async fn on_abort(&self, ctx: &EventContext) -> HandlerResult {
        // Called again and again is fine: resuming twice is resuming once (BK-ABORT-3).
        self.resume();
        eprintln!("aborted ({:?}); writing again", ctx.abort_cause());
        Ok(())
    }

    async fn on_post_snapshot(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        // The stamp belongs in PostSnapshot (BCD-6, INC-3); only if the requester chose us.
        if components.component("", COMPONENT).is_some() {
            let stamp = format!("counter={}", self.shared.frozen_at.load(Ordering::SeqCst));
            components
                .edit(Party::Writer, ctx.phase(), "", COMPONENT)?
                .set_backup_stamp(stamp)?;
        }
        Ok(())
    }

    async fn on_backup_complete(
        &self,
        _ctx: &EventContext,
        components: &WriterComponents,
    ) -> HandlerResult {
        for record in components.components() {
            eprintln!(
                "backup of {} succeeded: {:?}",
                record.full_path(),
                record.backup_succeeded()
            );
        }
        Ok(())
    }
}

/// Appends the next counter value every `interval`, except while paused.
async fn append_forever(shared: Arc<Shared>, interval: Duration) -> std::io::Result<()> {
    let mut paused = shared.paused.subscribe();
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&shared.file)
        .await?;
    loop {
        tokio::time::sleep(interval).await;
        // Hold writes during the freeze (BK-SNAP-4).
        if paused.wait_for(|paused| !*paused).await.is_err() {
            return Ok(());
        }
        let _writing = shared.io.lock().await;
        if *paused.borrow() {
            // Freeze arrived between the check and the lock.
            continue;
        }
        let value = shared.counter.load(Ordering::SeqCst) + 1;
        file.write_all(format!("{value}\n").as_bytes()).await?;
        file.flush().await?;
        shared.counter.store(value, Ordering::SeqCst);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(error) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.file)
    {
        eprintln!("cannot open {}: {error}", args.file.display());
        return ExitCode::FAILURE;
    }
    // The WMD needs an absolute directory (WMD-11).
    let file = match std::fs::canonicalize(&args.file) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("cannot resolve {}: {error}", args.file.display());
            return ExitCode::FAILURE;
        }
    };
    let shared = Arc::new(Shared {
        file,
        paused: watch::channel(false).0,
        io: Mutex::new(()),
        counter: AtomicU64::new(0),
        frozen_at: AtomicU64::new(0),
    });
    let interval = Duration::from_millis(args.interval_ms);
    let appender = tokio::spawn({
        let shared = Arc::clone(&shared);
        async move {
            if let Err(error) = append_forever(Arc::clone(&shared), interval).await {
                eprintln!("cannot append to {}: {error}", shared.file.display());
            }
        }
    });
    let options = WriterOptions {
        reconnect: args.reconnect,
        ..WriterOptions::with_socket(args.socket)
    };
    let writer = CounterWriter { shared };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let result = run_until(writer, options, stop).await;
    appender.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("counter_writer: {error}");
            ExitCode::FAILURE
        }
    }
}
