//! Test support: a fake coordinator that serves the generated Writer service on a Unix socket in a
//! temporary directory, scripts events and records the writer's answers with timestamps, and a
//! test writer that journals every handler call.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shadowcopy_metadata::bcd::{BackupComponents, ComponentRecord, Phase, WriterComponents};
use shadowcopy_metadata::enums::ComponentType;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{WriterInstanceId, WriterMetadata};
use shadowcopy_protocol::v1::coordinator_event::Event;
use shadowcopy_protocol::v1::writer_message::Message;
use shadowcopy_protocol::v1::writer_server::{Writer as WriterService, WriterServer};
use shadowcopy_protocol::v1::{
    self, CoordinatorEvent, EventResult, HelloReply, HelloRequest, Registered, WriterMessage,
};
use shadowcopy_protocol::{ProtocolVersion, check_hello, check_version, serve_unix_incoming};
use shadowcopy_writer_sdk::{
    AbortCause, EventContext, EventKind, HandlerResult, Writer, WriterFailure, WriterOptions,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for anything the writer should do promptly before it fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A temporary directory, removed with everything in it when dropped (also when a test fails).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Short, because a Unix socket path must fit in 108 bytes.
        let path = std::env::temp_dir().join(format!(
            "scw-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the temporary directory");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fake coordinator: one Writer service on `socket`; every registered stream is handed to
/// the test through [`FakeCoordinator::accept`].
pub(crate) struct FakeCoordinator {
    pub(crate) socket: PathBuf,
    pub(crate) hellos: Arc<Mutex<Vec<HelloRequest>>>,
    streams: mpsc::UnboundedReceiver<WriterStream>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    // Last, so that the socket's directory goes after the server stopped.
    _dir: TempDir,
}

impl FakeCoordinator {
    /// A fake coordinator that speaks the current protocol version.
    pub(crate) async fn start() -> Self {
        Self::start_speaking(ProtocolVersion::CURRENT).await
    }

    /// A fake coordinator whose Hello announces `version`.
    pub(crate) async fn start_speaking(version: ProtocolVersion) -> Self {
        let dir = TempDir::new();
        let socket = dir.path().join("d.sock");
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let service = FakeService {
            streams: streams_tx,
            hellos: Arc::clone(&hellos),
            version,
        };
        let incoming = serve_unix_incoming(&socket).expect("listen on the test socket");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(WriterServer::new(service))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .expect("the fake coordinator serves");
        });
        FakeCoordinator {
            socket,
            hellos,
            streams,
            stop: Some(stop),
            server,
            _dir: dir,
        }
    }

    /// Options for a writer of this coordinator.
    pub(crate) fn options(&self) -> WriterOptions {
        WriterOptions::with_socket(&self.socket)
    }

    /// The next writer stream that registered.
    pub(crate) async fn accept(&mut self) -> WriterStream {
        tokio::time::timeout(PATIENCE, self.streams.recv())
            .await
            .expect("a writer registers in time")
            .expect("the fake coordinator is running")
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

struct FakeService {
    streams: mpsc::UnboundedSender<WriterStream>,
    hellos: Arc<Mutex<Vec<HelloRequest>>>,
    version: ProtocolVersion,
}

#[tonic::async_trait]
impl WriterService for FakeService {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        check_version(&request)?;
        let hello = request.into_inner();
        check_hello(&hello)?;
        self.hellos.lock().unwrap().push(hello);
        Ok(Response::new(HelloReply {
            protocol_major: self.version.major,
            protocol_minor: self.version.minor,
            server_version: "fake-coordinator".into(),
        }))
    }

    type ConnectStream = UnboundedReceiverStream<Result<CoordinatorEvent, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<WriterMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        check_version(&request)?;
        let mut replies = request.into_inner();
        let first = replies
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before Register"))?;
        let Some(Message::Register(register)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message must be Register",
            ));
        };
        let instance_id = WriterInstanceId::new_random();
        let (events, outgoing) = mpsc::unbounded_channel();
        let _ = events.send(Ok(CoordinatorEvent {
            event_id: 0,
            session_id: String::new(),
            event: Some(Event::Registered(Registered {
                writer_instance_id: instance_id.to_string(),
            })),
        }));
        let _ = self.streams.send(WriterStream {
            register,
            instance_id,
            events: Some(events),
            replies,
            next_event_id: 1,
            sent: Vec::new(),
        });
        Ok(Response::new(UnboundedReceiverStream::new(outgoing)))
    }
}

/// One writer answer, with the time it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) at: Instant,
    pub(crate) result: EventResult,
}

impl Reply {
    /// The failure's code, if any.
    pub(crate) fn failure_code(&self) -> Option<u32> {
        self.result.failure.as_ref().map(|f| f.code)
    }

    /// The changed component records, if the answer carried any.
    pub(crate) fn components(&self) -> Option<WriterComponents> {
        self.result
            .components_json
            .as_deref()
            .map(|json| serde_json::from_str(json).expect("components_json parses"))
    }
}

/// The coordinator's side of one registered writer stream.
pub(crate) struct WriterStream {
    pub(crate) register: v1::Register,
    pub(crate) instance_id: WriterInstanceId,
    events: Option<mpsc::UnboundedSender<Result<CoordinatorEvent, Status>>>,
    replies: Streaming<WriterMessage>,
    next_event_id: u64,
    /// Every event sent: (event id, kind, time).
    pub(crate) sent: Vec<(u64, EventKind, Instant)>,
}

impl WriterStream {
    /// Sends one event of `session` and returns its event id.
    pub(crate) fn send(&mut self, session: &str, event: Event) -> u64 {
        let event_id = self.next_event_id;
        self.next_event_id += 1;
        self.sent.push((event_id, kind_of(&event), Instant::now()));
        self.events
            .as_ref()
            .expect("the stream is open")
            .send(Ok(CoordinatorEvent {
                event_id,
                session_id: session.to_owned(),
                event: Some(event),
            }))
            .expect("the writer's stream is open");
        event_id
    }

    /// The writer's next answer.
    pub(crate) async fn reply(&mut self) -> Reply {
        let message = tokio::time::timeout(PATIENCE, self.replies.message())
            .await
            .expect("the writer answers in time")
            .expect("the writer's stream is healthy")
            .expect("the writer's stream is open");
        match message.message {
            Some(Message::EventResult(result)) => Reply {
                at: Instant::now(),
                result,
            },
            other => panic!("expected an EventResult, got {other:?}"),
        }
    }

    /// Sends one event and waits for its answer, which must be the next message.
    pub(crate) async fn call(&mut self, session: &str, event: Event) -> Reply {
        let event_id = self.send(session, event);
        let reply = self.reply().await;
        assert_eq!(
            reply.result.event_id, event_id,
            "answers come in event order"
        );
        reply
    }

    /// When the event with this id was sent.
    pub(crate) fn sent_at(&self, event_id: u64) -> Instant {
        self.sent
            .iter()
            .find(|(id, _, _)| *id == event_id)
            .map(|(_, _, at)| *at)
            .expect("the event was sent")
    }

    /// Ends the coordinator's half of the stream, as a coordinator that goes away does.
    pub(crate) fn drop_stream(&mut self) {
        self.events = None;
    }

    /// Waits until the writer has closed its half of the stream.
    pub(crate) async fn closed_by_writer(&mut self) {
        let end = tokio::time::timeout(PATIENCE, async {
            loop {
                match self.replies.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return,
                }
            }
        })
        .await;
        end.expect("the writer closes its stream in time");
    }
}

fn kind_of(event: &Event) -> EventKind {
    match event {
        Event::Registered(_) => panic!("tests do not send Registered"),
        Event::Identify(_) => EventKind::Identify,
        Event::PrepareForBackup(_) => EventKind::PrepareForBackup,
        Event::PrepareForSnapshot(_) => EventKind::PrepareForSnapshot,
        Event::Freeze(_) => EventKind::Freeze,
        Event::Thaw(_) => EventKind::Thaw,
        Event::PostSnapshot(_) => EventKind::PostSnapshot,
        Event::Abort(_) => EventKind::Abort,
        Event::BackupComplete(_) => EventKind::BackupComplete,
        Event::BackupShutdown(_) => EventKind::BackupShutdown,
        Event::PreRestore(_) => EventKind::PreRestore,
        Event::PostRestore(_) => EventKind::PostRestore,
    }
}

/// Events, built the way the coordinator sends them.
pub(crate) mod events {
    use super::*;

    pub(crate) const SESSION: &str = "0b6f2c52-8f3c-4d55-9a39-3c1d2a7e5f10";
    pub(crate) const SET: &str = "a65faa63-5ea8-4ebc-9dbd-a0c4db26912a";

    pub(crate) fn identify() -> Event {
        Event::Identify(v1::IdentifyEvent {})
    }

    pub(crate) fn prepare_for_backup(components: &WriterComponents) -> Event {
        Event::PrepareForBackup(v1::PrepareForBackupEvent {
            component_mode: true,
            bootable_system_state: false,
            backup_type: 1,
            partial_file_support: false,
            context: 0,
            set_id: SET.into(),
            components_json: serde_json::to_string(components).unwrap(),
        })
    }

    pub(crate) fn prepare_for_snapshot(volumes: &[&str]) -> Event {
        Event::PrepareForSnapshot(v1::PrepareForSnapshotEvent {
            set_id: SET.into(),
            volumes: volumes.iter().map(|v| (*v).to_owned()).collect(),
        })
    }

    pub(crate) fn freeze(deadline_ms: u32) -> Event {
        Event::Freeze(v1::FreezeEvent {
            set_id: SET.into(),
            deadline_ms,
        })
    }

    pub(crate) fn thaw() -> Event {
        Event::Thaw(v1::ThawEvent { set_id: SET.into() })
    }

    pub(crate) fn post_snapshot(components: &WriterComponents) -> Event {
        Event::PostSnapshot(v1::PostSnapshotEvent {
            set_id: SET.into(),
            components_json: serde_json::to_string(components).unwrap(),
            snapshots: vec![v1::SnapshotLocation {
                volume: "/srv".into(),
                snapshot_path: "/run/shadowcopy/snap/srv".into(),
            }],
            writable: true,
        })
    }

    pub(crate) fn abort() -> Event {
        Event::Abort(v1::AbortEvent { set_id: SET.into() })
    }

    pub(crate) fn backup_complete(components: &WriterComponents) -> Event {
        Event::BackupComplete(v1::BackupCompleteEvent {
            set_id: SET.into(),
            components_json: serde_json::to_string(components).unwrap(),
        })
    }

    pub(crate) fn backup_shutdown() -> Event {
        Event::BackupShutdown(v1::BackupShutdownEvent { set_id: SET.into() })
    }

    pub(crate) fn pre_restore(components: &WriterComponents) -> Event {
        Event::PreRestore(v1::PreRestoreEvent {
            components_json: serde_json::to_string(components).unwrap(),
            restore_type: 1,
        })
    }

    pub(crate) fn post_restore(components: &WriterComponents) -> Event {
        Event::PostRestore(v1::PostRestoreEvent {
            components_json: serde_json::to_string(components).unwrap(),
            restore_type: 1,
        })
    }
}

/// The test writer's WMD: one file-group component `data`.
pub(crate) fn test_wmd() -> WriterMetadata {
    WriterMetadata::from_json(
        r#"{
          "schema_version": 1,
          "identity": {
            "writer_name": "TestWriter",
            "class_id": "5b0c4d7e-1f2a-4b3c-8d4e-5f6a7b8c9d0e",
            "instance_id": "00000000-0000-0000-0000-000000000000",
            "usage_type": "USERDATA",
            "source_type": "NONTRANSACTEDDB"
          },
          "restore_method": { "method": "RESTORE_IF_CAN_REPLACE" },
          "components": [
            {
              "component_type": "FILEGROUP",
              "name": "data",
              "selectable_for_backup": true,
              "files": [ { "path": "/srv/test", "filespec": "*", "recursive": true } ]
            }
          ]
        }"#,
    )
    .expect("the test WMD is valid")
}

/// This writer's part of a BCD that includes component `data` (BCD-8).
pub(crate) fn test_components(instance_id: WriterInstanceId) -> WriterComponents {
    let wmd = test_wmd();
    let entry = WriterComponents::new(wmd.identity.class_id, instance_id, None);
    let mut bcd = BackupComponents::new();
    bcd.add_component(
        Phase::BackupDiscovery,
        &entry,
        ComponentRecord::new(ComponentType::FileGroup, "", "data"),
    )
    .unwrap();
    bcd.writers()[0].clone()
}

/// One handler call.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) at: Instant,
    pub(crate) kind: EventKind,
    pub(crate) abort_cause: Option<AbortCause>,
}

/// Every handler call of a test writer, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal(Arc<Mutex<Vec<Entry>>>);

impl Journal {
    fn record(&self, ctx: &EventContext) {
        self.0.lock().unwrap().push(Entry {
            at: Instant::now(),
            kind: ctx.event(),
            abort_cause: ctx.abort_cause(),
        });
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.0.lock().unwrap().clone()
    }

    pub(crate) fn kinds(&self) -> Vec<EventKind> {
        self.entries().iter().map(|e| e.kind).collect()
    }

    pub(crate) fn count(&self, kind: EventKind) -> usize {
        self.entries().iter().filter(|e| e.kind == kind).count()
    }

    /// Waits until a handler of `kind` has started `n` times in all; the `n`th entry.
    pub(crate) async fn wait_for_nth(&self, kind: EventKind, n: usize) -> Entry {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(entry) = self
                .entries()
                .into_iter()
                .filter(|e| e.kind == kind)
                .nth(n - 1)
            {
                return entry;
            }
            assert!(Instant::now() < deadline, "{kind} did not run in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until a handler of `kind` has started.
    pub(crate) async fn wait_for(&self, kind: EventKind) -> Entry {
        self.wait_for_nth(kind, 1).await
    }
}

/// A component-record edit a test handler makes.
pub(crate) type Edit =
    Box<dyn Fn(&EventContext, &mut WriterComponents) -> HandlerResult + Send + Sync>;

/// A writer whose behaviour each test chooses; it journals every handler call first.
#[derive(Default)]
pub(crate) struct TestWriter {
    pub(crate) journal: Journal,
    pub(crate) prepare_backup: Option<Edit>,
    pub(crate) post_snapshot: Option<Edit>,
    pub(crate) pre_restore: Option<Edit>,
    pub(crate) panic_in: Option<EventKind>,
    pub(crate) fail_in: Option<(EventKind, WriterFailure)>,
    pub(crate) delay_in: Option<(EventKind, Duration)>,
    /// A non-fatal failure to record in this event (ERR-1).
    pub(crate) record_in: Option<(EventKind, WriterFailure)>,
}

impl TestWriter {
    pub(crate) fn new(journal: &Journal) -> Self {
        TestWriter {
            journal: journal.clone(),
            ..TestWriter::default()
        }
    }

    async fn step(&self, ctx: &EventContext) -> HandlerResult {
        self.journal.record(ctx);
        let kind = ctx.event();
        if self.panic_in == Some(kind) {
            panic!("test panic in {kind}");
        }
        if let Some((_, delay)) = self.delay_in.filter(|(k, _)| *k == kind) {
            tokio::time::sleep(delay).await;
        }
        if let Some((_, failure)) = self.record_in.as_ref().filter(|(k, _)| *k == kind) {
            ctx.record_failure(failure.clone());
        }
        match &self.fail_in {
            Some((k, failure)) if *k == kind => Err(failure.clone()),
            _ => Ok(()),
        }
    }

    fn edit(edit: Option<&Edit>, ctx: &EventContext, c: &mut WriterComponents) -> HandlerResult {
        edit.map_or(Ok(()), |edit| edit(ctx, c))
    }
}

impl Writer for TestWriter {
    fn metadata(&self) -> WriterMetadata {
        test_wmd()
    }

    async fn on_identify(&self, ctx: &EventContext) -> Result<WriterMetadata, WriterFailure> {
        self.step(ctx).await?;
        Ok(self.metadata())
    }

    async fn on_prepare_backup(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        self.step(ctx).await?;
        Self::edit(self.prepare_backup.as_ref(), ctx, components)
    }

    async fn on_prepare_snapshot(&self, ctx: &EventContext) -> HandlerResult {
        self.step(ctx).await
    }

    async fn on_freeze(&self, ctx: &EventContext) -> HandlerResult {
        self.step(ctx).await
    }

    async fn on_thaw(&self, ctx: &EventContext) -> HandlerResult {
        self.step(ctx).await
    }

    async fn on_post_snapshot(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        self.step(ctx).await?;
        Self::edit(self.post_snapshot.as_ref(), ctx, components)
    }

    async fn on_abort(&self, ctx: &EventContext) -> HandlerResult {
        self.step(ctx).await
    }

    async fn on_backup_complete(
        &self,
        ctx: &EventContext,
        _components: &WriterComponents,
    ) -> HandlerResult {
        self.step(ctx).await
    }

    async fn on_backup_shutdown(&self, ctx: &EventContext) -> HandlerResult {
        self.step(ctx).await
    }

    async fn on_pre_restore(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        self.step(ctx).await?;
        Self::edit(self.pre_restore.as_ref(), ctx, components)
    }

    async fn on_post_restore(
        &self,
        ctx: &EventContext,
        _components: &mut WriterComponents,
    ) -> HandlerResult {
        self.step(ctx).await
    }
}
