//! What every scenario uses: the connection, its own writers and volume names, the common steps of a
//! backup, and checks that say what was expected and what was seen.
//!
//! A scenario returns `Err(reason)` at its first failed check; the reason names the requirement,
//! the writer, the state or code expected and the one seen, so that a failure can be acted on from
//! the one-line report.

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use shadowcopy_metadata::bcd::BackupState;
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::enums::{ComponentType, WriterState};
use shadowcopy_metadata::{SnapshotSetId, WriterMetadata};
use shadowcopy_requester::{
    BackupSession, Client, ComponentKey, RequesterError, SnapshotFilter, SnapshotProperties,
    WriterStatus,
};
use tokio::time::Instant;

use crate::writer::{DATA_COMPONENT, Journal, RunningWriter, TestWriter};

/// What a check returns: `Err` carries the reason of the failure.
pub(crate) type Check = Result<(), String>;

/// How long a test writer may take to register.
const REGISTER_LIMIT: Duration = Duration::from_secs(10);

/// How long to retry StartSnapshotSet while another requester's set is in creation (LIMIT-4): the
/// suite may share the daemon, and a scenario's dropped session is released in the background.
const SET_RETRY_LIMIT: Duration = Duration::from_secs(15);

/// How long to wait for something that follows a call asynchronously, such as BackupShutdown
/// after a release or the deletion of auto-release shadow copies.
pub(crate) const SETTLE: Duration = Duration::from_secs(5);

/// Returns `Err(format!(...))` from the enclosing function unless the condition holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}
pub(crate) use ensure;

/// Turns any error into a scenario failure that says which step failed.
pub(crate) trait Context<T> {
    /// `Err(e)` becomes `Err("what: e")`.
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|error| format!("{what}: {error}"))
    }
}

/// Checks that a call failed with exactly `code`.
pub(crate) fn expect_code<T>(
    result: Result<T, RequesterError>,
    code: &ErrorCode,
    what: &str,
) -> Check {
    match result {
        Ok(_) => Err(format!(
            "{what} succeeded, but it must fail with {} (0x{:08X})",
            code.name, code.value
        )),
        Err(error) if error.code().value == code.value => Ok(()),
        Err(error) => Err(format!(
            "{what} must fail with {} (0x{:08X}) but failed with {} (0x{:08X}): {error}",
            code.name,
            code.value,
            error.code().name,
            error.code().value
        )),
    }
}

/// A test writer as a scenario sees it: its identity and its journal.
#[derive(Debug, Clone)]
pub(crate) struct W {
    /// The writer's name.
    pub(crate) name: String,
    /// The instance id the daemon assigned.
    pub(crate) instance: shadowcopy_metadata::WriterInstanceId,
    /// What it handled.
    pub(crate) journal: Journal,
    /// Its WMD's class id.
    pub(crate) class_id: shadowcopy_metadata::WriterClassId,
}

impl W {
    /// The key of its [`DATA_COMPONENT`].
    pub(crate) fn data_key(&self) -> ComponentKey {
        ComponentKey {
            writer_instance_id: self.instance,
            writer_class_id: self.class_id,
            component_type: ComponentType::FileGroup,
            logical_path: String::new(),
            name: DATA_COMPONENT.into(),
        }
    }
}

/// A backup session driven up to PrepareForBackup, with its set.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The session.
    pub(crate) session: BackupSession,
    /// Its set.
    pub(crate) set: SnapshotSetId,
    /// The components added, one per writer.
    pub(crate) keys: Vec<ComponentKey>,
}

/// One scenario's view of the daemon.
pub(crate) struct Harness {
    /// The daemon's socket.
    pub(crate) socket: PathBuf,
    /// The connection all sessions of the scenario share.
    pub(crate) client: Client,
    /// Unique per run and scenario; goes into writer names and volume paths.
    pub(crate) tag: String,
    /// The daemon's commit window, when the caller said what it is (CFG-10).
    pub(crate) commit_window: Option<Duration>,
    /// The writer under test in `run --writer`: its name, instance name, class id or instance id.
    pub(crate) subject: Option<String>,
    writers: Vec<RunningWriter>,
}

impl Harness {
    /// A harness for one scenario.
    pub(crate) fn new(
        socket: PathBuf,
        client: Client,
        tag: String,
        commit_window: Option<Duration>,
        subject: Option<String>,
    ) -> Self {
        Harness {
            socket,
            client,
            tag,
            commit_window,
            subject,
            writers: Vec::new(),
        }
    }

    /// Registers a test writer named after the scenario and `label`, shaped by `shape`, and waits
    /// until it is registered.
    pub(crate) async fn writer(
        &mut self,
        label: &str,
        shape: impl FnOnce(TestWriter) -> TestWriter,
    ) -> Result<W, String> {
        let writer = shape(TestWriter::new(format!("conformance-{}-{label}", self.tag)));
        let class_id = writer.class_id();
        let mut running = writer.spawn(&self.socket);
        let registered = running.registered(REGISTER_LIMIT).await;
        let view = W {
            name: running.name.clone(),
            instance: running.instance_id(),
            journal: running.journal.clone(),
            class_id,
        };
        self.writers.push(running);
        registered?;
        Ok(view)
    }

    /// A volume of the simulated providers: `/sim/<kind>/conformance-<tag>/<label>`, where kind is
    /// `ok`, `fail-at-<step>` or `hang-at-<step>`.
    pub(crate) fn volume(&self, kind: &str, label: &str) -> String {
        format!("/sim/{kind}/conformance-{}/{label}", self.tag)
    }

    /// A backup session after InitializeForBackup and SetBackupState (full, component mode).
    pub(crate) async fn session(&self) -> Result<BackupSession, String> {
        let mut session = self.client.backup_session().await.ctx("open a session")?;
        session
            .initialize_for_backup(None)
            .await
            .ctx("InitializeForBackup")?;
        session
            .set_backup_state(BackupState::default())
            .await
            .ctx("SetBackupState")?;
        Ok(session)
    }

    /// StartSnapshotSet, retried while another set is in creation (LIMIT-4).
    pub(crate) async fn start_set(
        &self,
        session: &mut BackupSession,
    ) -> Result<SnapshotSetId, String> {
        let deadline = Instant::now() + SET_RETRY_LIMIT;
        loop {
            match session.start_snapshot_set().await {
                Err(error)
                    if error.code().value == codes::VSS_E_SNAPSHOT_SET_IN_PROGRESS.value
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other.ctx("StartSnapshotSet"),
            }
        }
    }

    /// A backup of the [`DATA_COMPONENT`] of each of `writers` on `volumes`, driven through
    /// GatherWriterMetadata, AddComponent, StartSnapshotSet, AddToSnapshotSet and PrepareForBackup.
    pub(crate) async fn prepared(
        &self,
        writers: &[&W],
        volumes: &[String],
    ) -> Result<Prepared, String> {
        let mut session = self.session().await?;
        let gathered = session
            .gather_writer_metadata()
            .await
            .ctx("GatherWriterMetadata")?;
        for writer in writers {
            find_wmd(&gathered, writer)?;
        }
        let mut keys = Vec::new();
        for writer in writers {
            let key = writer.data_key();
            session
                .add_component(&key)
                .await
                .ctx(&format!("AddComponent for {}", writer.name))?;
            keys.push(key);
        }
        let set = self.start_set(&mut session).await?;
        for volume in volumes {
            session
                .add_to_snapshot_set(volume, None)
                .await
                .ctx(&format!("AddToSnapshotSet({volume})"))?;
        }
        session.prepare_for_backup().await.ctx("PrepareForBackup")?;
        Ok(Prepared { session, set, keys })
    }

    /// The shadow copies of `set` that the Admin service lists.
    pub(crate) async fn snapshots_of(
        &self,
        set: SnapshotSetId,
    ) -> Result<Vec<SnapshotProperties>, String> {
        self.client
            .admin()
            .list_snapshots(&SnapshotFilter {
                set_id: Some(set),
                ..SnapshotFilter::default()
            })
            .await
            .ctx("Admin.ListSnapshots")
    }

    /// Checks that no shadow copy of `set` exists, waiting up to [`SETTLE`] for a release that runs
    /// in the background.
    pub(crate) async fn expect_no_snapshots(&self, set: SnapshotSetId, rule: &str) -> Check {
        let deadline = Instant::now() + SETTLE;
        loop {
            let left = self.snapshots_of(set).await?;
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let ids: Vec<String> = left
                    .iter()
                    .map(|s| format!("{} of {} ({})", s.snapshot_id, s.volume, s.state))
                    .collect();
                return Err(format!(
                    "shadow copies of set {set} still exist: {} ({rule})",
                    ids.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every writer of the scenario, releasing their hangs first.
    pub(crate) async fn teardown(self) {
        futures::future::join_all(self.writers.into_iter().map(RunningWriter::stop)).await;
    }
}

/// The WMD of `writer` among those gathered.
pub(crate) fn find_wmd<'a>(
    gathered: &'a [WriterMetadata],
    writer: &W,
) -> Result<&'a WriterMetadata, String> {
    gathered
        .iter()
        .find(|wmd| wmd.identity.instance_id == writer.instance)
        .ok_or_else(|| {
            format!(
                "GatherWriterMetadata did not return writer {} ({}) although it is registered \
                 and healthy (BK-INIT-5)",
                writer.name, writer.instance
            )
        })
}

/// The status of `writer` in this session (WST-1).
pub(crate) async fn status(
    session: &mut BackupSession,
    writer: &W,
) -> Result<WriterStatus, String> {
    let statuses = session
        .gather_writer_status()
        .await
        .ctx("GatherWriterStatus")?;
    statuses
        .into_iter()
        .find(|s| s.instance_id == writer.instance)
        .ok_or_else(|| {
            format!(
                "GatherWriterStatus does not list writer {} ({}) (WST-1)",
                writer.name, writer.instance
            )
        })
}

/// Checks a writer's state, and that its failure code is `failure` (0 for none).
pub(crate) async fn expect_state(
    session: &mut BackupSession,
    writer: &W,
    state: WriterState,
    failure: Option<&ErrorCode>,
    when: &str,
) -> Check {
    let seen = status(session, writer).await?;
    ensure!(
        seen.state == state,
        "{when}, writer {} is {} but must be {} (WST-3, WST-4)",
        writer.name,
        seen.state,
        state
    );
    let expected = failure.map_or(codes::S_OK.value, |code| code.value);
    ensure!(
        seen.failure_code == expected,
        "{when}, writer {} reports failure 0x{:08X} ({}) but must report 0x{expected:08X} ({}) \
         (WST-1, ERR-2)",
        writer.name,
        seen.failure_code,
        seen.failure().map_or("none", |c| c.name),
        failure.map_or("none", |c| c.name)
    );
    Ok(())
}

/// Waits up to [`SETTLE`] for `writer` to handle `event` and returns its record.
pub(crate) async fn wait_event(
    writer: &W,
    event: shadowcopy_writer_sdk::EventKind,
    rule: &str,
) -> Result<crate::writer::Record, String> {
    writer.journal.wait_for(event, SETTLE).await.ok_or_else(|| {
        format!(
            "writer {} did not get {event} within {} s ({rule}); it saw {:?}",
            writer.name,
            SETTLE.as_secs(),
            writer.journal.events()
        )
    })
}

/// The first record of `event` in the writer's journal.
pub(crate) fn first(
    writer: &W,
    event: shadowcopy_writer_sdk::EventKind,
) -> Result<crate::writer::Record, String> {
    writer.journal.first(event).ok_or_else(|| {
        format!(
            "writer {} never got {event}; it saw {:?}",
            writer.name,
            writer.journal.events()
        )
    })
}

/// Checks that the writer handled exactly these events, in this order, Identify left out.
pub(crate) fn expect_events(
    writer: &W,
    expected: &[shadowcopy_writer_sdk::EventKind],
    rule: &str,
) -> Check {
    let seen = writer.journal.events_without_identify();
    ensure!(
        seen == expected,
        "writer {} handled {:?} but must handle exactly {:?} ({rule})",
        writer.name,
        seen,
        expected
    );
    Ok(())
}

/// Checks that the writer never handled `event`.
pub(crate) fn expect_never(
    writer: &W,
    event: shadowcopy_writer_sdk::EventKind,
    rule: &str,
) -> Check {
    ensure!(
        !writer.journal.saw(event),
        "writer {} got {event} but must not ({rule}); it saw {:?}",
        writer.name,
        writer.journal.events()
    );
    Ok(())
}
