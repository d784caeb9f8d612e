//! A fake `shadowcopyd` for the requester tests: the Requester and Admin services on a Unix socket
//! in a private temporary directory, answering from a script and reporting what it received.
//!
//! Every Requester request and every end of a session stream is reported to the test as an
//! [`Event`], in order, so a test can check the exact calls and fields the library sent. The
//! services check the version header with the protocol crate's interceptor, so every passing test
//! also shows that the library sends it (docs/protocol.md §2).

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::enums::{SnapshotState, WriterState};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{BackupComponents, WriterMetadata};
use shadowcopy_protocol::v1::admin_server::{Admin, AdminServer};
use shadowcopy_protocol::v1::requester_request::Call;
use shadowcopy_protocol::v1::requester_response::Result as Reply;
use shadowcopy_protocol::v1::requester_server::{Requester, RequesterServer};
use shadowcopy_protocol::v1::{self, RequesterRequest, RequesterResponse};
use shadowcopy_protocol::{
    MAX_MESSAGE_SIZE, check_hello, check_version_interceptor, hello_reply, serve_unix_incoming,
    status_ok,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for something that should happen at once.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// The test writer's class id.
pub(crate) const CLASS_ID: &str = "5b3d6b9e-6a4a-4f4e-9c8a-1d2e3f4a5b6c";
/// The test writer's instance id during the backup.
pub(crate) const INSTANCE_ID: &str = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
/// The test writer's instance id during the restore: a restarted writer is a new instance.
pub(crate) const RUNNING_INSTANCE_ID: &str = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d";
/// The set id the fake daemon hands out.
pub(crate) const SET_ID: &str = "4b0e7c1a-77aa-4f8e-9f6d-2d0c1e5a9b10";
/// The snapshot id the fake daemon hands out.
pub(crate) const SNAPSHOT_ID: &str = "9e1d2c3b-4a59-4687-a7b6-c5d4e3f20110";
/// The provider the fake daemon chooses.
pub(crate) const PROVIDER_ID: &str = "b5946137-7b9f-4925-af80-51abd60b20d5";
/// The session id the fake daemon reports.
pub(crate) const SESSION_ID: &str = "c0ffee00-1234-4abc-8def-0123456789ab";

/// The WMD of the test writer: a required component `Config` (SEL-2), a selectable component
/// `Data`, and its subcomponent `Data\Logs`, which is selectable for restore (SEL-R-2).
pub(crate) fn wmd_json(instance_id: &str) -> String {
    format!(
        r#"{{
  "schema_version": 1,
  "identity": {{
    "writer_name": "TestWriter",
    "class_id": "{CLASS_ID}",
    "instance_id": "{instance_id}",
    "usage_type": "USERDATA",
    "source_type": "OTHER"
  }},
  "restore_method": {{ "method": "RESTORE_IF_CAN_REPLACE", "writer_restore": "ALWAYS" }},
  "backup_schema": 256,
  "alternate_location_mappings": [
    {{
      "source": {{ "path": "/srv/test/data", "filespec": "*", "recursive": true }},
      "destination": "/srv/test/restored"
    }}
  ],
  "components": [
    {{
      "component_type": "FILEGROUP",
      "name": "Config",
      "selectable_for_backup": false,
      "files": [{{ "path": "/srv/test/etc", "filespec": "*.conf" }}]
    }},
    {{
      "component_type": "FILEGROUP",
      "name": "Data",
      "selectable_for_backup": true,
      "selectable_for_restore": true,
      "files": [{{ "path": "/srv/test/data", "filespec": "*", "recursive": true }}]
    }},
    {{
      "component_type": "FILEGROUP",
      "logical_path": "Data",
      "name": "Logs",
      "selectable_for_backup": false,
      "selectable_for_restore": true,
      "files": [{{ "path": "/srv/test/data/logs", "filespec": "*.log" }}]
    }}
  ]
}}"#
    )
}

/// [`wmd_json`], parsed.
pub(crate) fn wmd(instance_id: &str) -> WriterMetadata {
    WriterMetadata::from_json(&wmd_json(instance_id)).expect("the test WMD is valid")
}

/// A private directory for one test's socket, removed when dropped, even when the test fails.
pub(crate) struct SocketDir(PathBuf);

impl SocketDir {
    /// A new, empty directory with a name no other test or process uses.
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let random = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(format!(
            "shadowcopy-requester-{}-{random:016x}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).expect("create the test's socket directory");
        SocketDir(dir)
    }

    /// A path inside the directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a session stream ended, as the fake daemon saw its inbound half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The requester closed its half cleanly.
    Closed,
    /// The requester reset the stream or the connection broke.
    Broken,
    /// The fake daemon ended the stream itself, with an error.
    HungUp,
}

/// What the fake daemon reports to the test, in the order it happened.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A Requester Hello arrived with this client name.
    Hello(String),
    /// A session stream was opened.
    SessionOpened,
    /// A request arrived on a session.
    Request(RequesterRequest),
    /// A session stream ended; the fake daemon ends its half right after reporting this.
    SessionEnded(StreamEnd),
}

/// How the fake daemon answers one call.
pub(crate) enum Answer {
    /// Answer with this status and result.
    Reply(v1::Status, Box<Option<Reply>>),
    /// Answer only when a Cancel arrives, with `VSS_S_ASYNC_CANCELLED`, after answering the
    /// Cancel itself, as the daemon does for a cancelled asynchronous call (ROLE-3).
    HoldUntilCancel,
    /// End the stream with this gRPC error instead of answering.
    EndStream(Status),
}

impl Answer {
    /// Success with a result.
    pub(crate) fn ok(result: Reply) -> Self {
        Answer::Reply(status_ok(), Box::new(Some(result)))
    }

    /// Success with `Empty`.
    pub(crate) fn empty() -> Self {
        Answer::ok(Reply::Empty(v1::Empty {}))
    }

    /// A failure status with a message; the hint is the registry's action.
    pub(crate) fn fail(code: &ErrorCode, message: &str) -> Self {
        Answer::Reply(v1::Status::from_code(code, message), Box::new(None))
    }
}

/// Decides the answer to each call.
pub(crate) type Responder = Arc<dyn Fn(&Call) -> Answer + Send + Sync>;

/// The answers of a daemon that lets everything succeed, with the test writer running as
/// `running_instance` and `bcd_json` as the session's BCD.
pub(crate) fn happy_answer(call: &Call, running_instance: &str, bcd_json: &str) -> Answer {
    match call {
        Call::GatherWriterMetadata(_) => {
            Answer::ok(Reply::WriterMetadata(v1::WriterMetadataList {
                writers: vec![v1::WriterMetadataEntry {
                    writer_instance_id: running_instance.to_owned(),
                    wmd_json: wmd(running_instance).to_canonical_json(),
                }],
            }))
        }
        Call::GatherWriterStatus(_) => Answer::ok(Reply::WriterStatus(v1::WriterStatusList {
            writers: vec![writer_status(running_instance)],
        })),
        Call::StartSnapshotSet(_) => {
            Answer::ok(Reply::SnapshotSetStarted(v1::SnapshotSetStarted {
                set_id: SET_ID.to_owned(),
            }))
        }
        Call::AddToSnapshotSet(_) => Answer::ok(Reply::SnapshotAdded(v1::SnapshotAdded {
            snapshot_id: SNAPSHOT_ID.to_uppercase(),
            provider_id: PROVIDER_ID.to_owned(),
        })),
        Call::IsVolumeSupported(_) => Answer::ok(Reply::VolumeSupport(v1::VolumeSupport {
            supported: true,
            provider_id: PROVIDER_ID.to_owned(),
            reason: String::new(),
        })),
        Call::GetSnapshotProperties(_) => {
            Answer::ok(Reply::SnapshotProperties(snapshot_properties()))
        }
        Call::GetBackupComponents(_) => {
            Answer::ok(Reply::BackupComponents(v1::BackupComponentsDocument {
                bcd_json: bcd_json.to_owned(),
            }))
        }
        _ => Answer::empty(),
    }
}

/// The status the fake daemon reports for the test writer.
pub(crate) fn writer_status(instance_id: &str) -> v1::WriterStatus {
    v1::WriterStatus {
        writer_class_id: CLASS_ID.to_owned(),
        writer_instance_id: instance_id.to_owned(),
        writer_name: "TestWriter".to_owned(),
        instance_name: String::new(),
        state: WriterState::Stable.value(),
        failure_code: 0,
        application_code: 0,
        application_message: String::new(),
    }
}

/// The shadow copy the fake daemon reports.
pub(crate) fn snapshot_properties() -> v1::SnapshotProperties {
    v1::SnapshotProperties {
        snapshot_id: SNAPSHOT_ID.to_owned(),
        set_id: SET_ID.to_owned(),
        snapshots_in_set: 1,
        volume: "/srv/test".to_owned(),
        snapshot_path: "/run/shadowcopy/snapshots/1".to_owned(),
        provider_id: PROVIDER_ID.to_owned(),
        attributes: 0x9,
        creation_timestamp: 133_450_560_000_000_000,
        state: SnapshotState::Created.value(),
        originating_machine: "host".to_owned(),
        service_machine: "host".to_owned(),
        exposed_name: String::new(),
        exposed_path: String::new(),
    }
}

/// An empty BCD, for tests that do not look at it.
pub(crate) fn empty_bcd_json() -> String {
    BackupComponents::new().to_canonical_json()
}

/// A request to the Admin service, as the fake daemon received it.
#[derive(Debug, Clone)]
pub(crate) enum AdminRequest {
    /// ListWriters.
    ListWriters(v1::ListWritersRequest),
    /// ListProviders.
    ListProviders,
    /// ListSnapshots.
    ListSnapshots(v1::ListSnapshotsRequest),
    /// DeleteSnapshots.
    DeleteSnapshots(v1::DeleteSnapshotsRequest),
    /// ExposeSnapshot.
    ExposeSnapshot(v1::ExposeSnapshotRequest),
    /// UnexposeSnapshot.
    UnexposeSnapshot(v1::UnexposeSnapshotRequest),
    /// RevertVolume.
    RevertVolume(v1::RevertVolumeRequest),
    /// GetStatus.
    GetStatus,
}

/// How the fake daemon behaves.
pub(crate) struct FakeOptions {
    /// The answer to each Requester call.
    pub(crate) responder: Responder,
    /// Refuse every session stream with this error.
    pub(crate) refuse_sessions: Option<Status>,
    /// The protocol major version the fake daemon states in Hello.
    pub(crate) hello_major: u32,
    /// Whether the socket serves the Requester service at all; without it, it looks like the
    /// socket of something else.
    pub(crate) serve_requester: bool,
}

impl Default for FakeOptions {
    fn default() -> Self {
        let bcd = empty_bcd_json();
        FakeOptions {
            responder: Arc::new(move |call| happy_answer(call, INSTANCE_ID, &bcd)),
            refuse_sessions: None,
            hello_major: shadowcopy_protocol::PROTOCOL_MAJOR,
            serve_requester: true,
        }
    }
}

/// The fake daemon, stopped when dropped.
pub(crate) struct FakeDaemon {
    /// Its socket.
    pub(crate) socket: PathBuf,
    events: mpsc::UnboundedReceiver<Event>,
    admin_log: Arc<Mutex<Vec<AdminRequest>>>,
    task: tokio::task::JoinHandle<()>,
    // Declared last, so that the socket directory goes after the server.
    dir: SocketDir,
}

impl FakeDaemon {
    /// Starts a daemon that lets everything succeed.
    pub(crate) async fn start() -> Self {
        Self::start_with(FakeOptions::default()).await
    }

    /// Starts a daemon that answers Requester calls with `responder`.
    pub(crate) async fn with_responder(
        responder: impl Fn(&Call) -> Answer + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(FakeOptions {
            responder: Arc::new(responder),
            ..FakeOptions::default()
        })
        .await
    }

    /// Starts a daemon with these options.
    pub(crate) async fn start_with(options: FakeOptions) -> Self {
        let dir = SocketDir::new();
        let socket = dir.path("shadowcopyd.sock");
        let (events_tx, events) = mpsc::unbounded_channel();
        let admin_log = Arc::new(Mutex::new(Vec::new()));
        let requester = InterceptedService::new(
            RequesterServer::new(FakeRequester {
                events: events_tx,
                responder: options.responder,
                refuse_sessions: options.refuse_sessions,
                hello_major: options.hello_major,
            })
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
            check_version_interceptor,
        );
        let admin = InterceptedService::new(
            AdminServer::new(FakeAdmin {
                log: Arc::clone(&admin_log),
            })
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
            check_version_interceptor,
        );
        let incoming = serve_unix_incoming(&socket).expect("listen on the test socket");
        let requester = options.serve_requester.then_some(requester);
        let task = tokio::spawn(async move {
            Server::builder()
                .add_optional_service(requester)
                .add_service(admin)
                .serve_with_incoming(incoming)
                .await
                .expect("the fake daemon runs");
        });
        FakeDaemon {
            socket,
            events,
            admin_log,
            task,
            dir,
        }
    }

    /// The socket's directory guard, for tests that need other paths in it.
    pub(crate) fn dir(&self) -> &Path {
        self.socket
            .parent()
            .expect("the socket is in the directory")
    }

    /// The next event, waiting at most [`PATIENCE`].
    pub(crate) async fn next_event(&mut self) -> Event {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("the fake daemon reports in time")
            .expect("the fake daemon is running")
    }

    /// The next event if there is one already, without waiting.
    pub(crate) fn try_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The requests of one session, until it ended, and how it ended. Skips Hello and the opening.
    pub(crate) async fn session_requests(&mut self) -> (Vec<RequesterRequest>, StreamEnd) {
        let mut requests = Vec::new();
        loop {
            match self.next_event().await {
                Event::Request(request) => requests.push(request),
                Event::SessionEnded(end) => return (requests, end),
                Event::Hello(_) | Event::SessionOpened => {}
            }
        }
    }

    /// Waits for the end of a session, skipping everything else.
    pub(crate) async fn session_end(&mut self) -> StreamEnd {
        self.session_requests().await.1
    }

    /// Waits until the fake daemon received a request with this call.
    pub(crate) async fn wait_for_call(
        &mut self,
        matches: impl Fn(&Call) -> bool,
    ) -> RequesterRequest {
        loop {
            if let Event::Request(request) = self.next_event().await
                && request.call.as_ref().is_some_and(&matches)
            {
                return request;
            }
        }
    }

    /// Every Admin request so far.
    pub(crate) fn admin_requests(&self) -> Vec<AdminRequest> {
        self.admin_log.lock().unwrap().clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The protocol name of a call, for comparing sequences.
pub(crate) fn call_name(request: &RequesterRequest) -> &'static str {
    match request.call.as_ref() {
        None => "(none)",
        Some(Call::InitializeForBackup(_)) => "InitializeForBackup",
        Some(Call::SetContext(_)) => "SetContext",
        Some(Call::SetBackupState(_)) => "SetBackupState",
        Some(Call::SetWriterEnabled(_)) => "SetWriterEnabled",
        Some(Call::GatherWriterMetadata(_)) => "GatherWriterMetadata",
        Some(Call::AddComponent(_)) => "AddComponent",
        Some(Call::SetBackupOptions(_)) => "SetBackupOptions",
        Some(Call::SetPreviousBackupStamp(_)) => "SetPreviousBackupStamp",
        Some(Call::StartSnapshotSet(_)) => "StartSnapshotSet",
        Some(Call::AddToSnapshotSet(_)) => "AddToSnapshotSet",
        Some(Call::PrepareForBackup(_)) => "PrepareForBackup",
        Some(Call::GatherWriterStatus(_)) => "GatherWriterStatus",
        Some(Call::DoSnapshotSet(_)) => "DoSnapshotSet",
        Some(Call::GetSnapshotProperties(_)) => "GetSnapshotProperties",
        Some(Call::SetBackupSucceeded(_)) => "SetBackupSucceeded",
        Some(Call::BackupComplete(_)) => "BackupComplete",
        Some(Call::AbortBackup(_)) => "AbortBackup",
        Some(Call::GetBackupComponents(_)) => "GetBackupComponents",
        Some(Call::InitializeForRestore(_)) => "InitializeForRestore",
        Some(Call::SetSelectedForRestore(_)) => "SetSelectedForRestore",
        Some(Call::AddRestoreSubcomponent(_)) => "AddRestoreSubcomponent",
        Some(Call::SetRestoreOptions(_)) => "SetRestoreOptions",
        Some(Call::SetAdditionalRestores(_)) => "SetAdditionalRestores",
        Some(Call::SetFileRestoreStatus(_)) => "SetFileRestoreStatus",
        Some(Call::AddAlternativeLocationMapping(_)) => "AddAlternativeLocationMapping",
        Some(Call::AddNewTarget(_)) => "AddNewTarget",
        Some(Call::PreRestore(_)) => "PreRestore",
        Some(Call::PostRestore(_)) => "PostRestore",
        Some(Call::SetRestoreState(_)) => "SetRestoreState",
        Some(Call::SetRangesFilePath(_)) => "SetRangesFilePath",
        Some(Call::SetRestoreExtensions(_)) => "SetRestoreExtensions",
        Some(Call::IsVolumeSupported(_)) => "IsVolumeSupported",
        Some(Call::Cancel(_)) => "Cancel",
    }
}

/// Checks that request ids are unique and grow, as the library promises (docs/protocol.md §4.1).
pub(crate) fn assert_fresh_request_ids(requests: &[RequesterRequest]) {
    for pair in requests.windows(2) {
        assert!(
            pair[0].request_id < pair[1].request_id,
            "request ids must grow: {} then {}",
            pair[0].request_id,
            pair[1].request_id
        );
    }
    assert!(requests.iter().all(|request| request.request_id != 0));
}

/// The Requester service of the fake daemon.
struct FakeRequester {
    events: mpsc::UnboundedSender<Event>,
    responder: Responder,
    refuse_sessions: Option<Status>,
    hello_major: u32,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<RequesterResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Requester for FakeRequester {
    async fn hello(
        &self,
        request: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloReply>, Status> {
        check_hello(request.get_ref())?;
        let _ = self
            .events
            .send(Event::Hello(request.get_ref().client_name.clone()));
        let mut reply = hello_reply("fake-shadowcopyd 0.0.1");
        reply.protocol_major = self.hello_major;
        Ok(Response::new(reply))
    }

    type SessionStream = ResponseStream;

    async fn session(
        &self,
        request: Request<Streaming<RequesterRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        if let Some(refusal) = &self.refuse_sessions {
            return Err(refusal.clone());
        }
        let _ = self.events.send(Event::SessionOpened);
        let mut inbound = request.into_inner();
        let (outbound, responses) = mpsc::channel(8);
        let events = self.events.clone();
        let responder = Arc::clone(&self.responder);
        tokio::spawn(async move {
            let respond = |request_id, status, result| RequesterResponse {
                request_id,
                status: Some(status),
                result,
            };
            let mut held: Option<u64> = None;
            let end = loop {
                let request = match inbound.message().await {
                    Ok(Some(request)) => request,
                    Ok(None) => break StreamEnd::Closed,
                    Err(_) => break StreamEnd::Broken,
                };
                let _ = events.send(Event::Request(request.clone()));
                let id = request.request_id;
                let Some(call) = request.call else {
                    let status = v1::Status::from_code(&codes::E_NOTIMPL, "no call is set");
                    let _ = outbound.send(Ok(respond(id, status, None))).await;
                    continue;
                };
                if let Call::Cancel(_) = call {
                    let empty = Some(Reply::Empty(v1::Empty {}));
                    let _ = outbound.send(Ok(respond(id, status_ok(), empty))).await;
                    if let Some(held_id) = held.take() {
                        let cancelled = v1::Status::from(&codes::VSS_S_ASYNC_CANCELLED);
                        let _ = outbound.send(Ok(respond(held_id, cancelled, None))).await;
                    }
                    continue;
                }
                match responder(&call) {
                    Answer::Reply(status, result) => {
                        let _ = outbound.send(Ok(respond(id, status, *result))).await;
                    }
                    Answer::HoldUntilCancel => held = Some(id),
                    Answer::EndStream(status) => {
                        let _ = outbound.send(Err(status)).await;
                        break StreamEnd::HungUp;
                    }
                }
            };
            // Reported before the outbound half ends, so a test that saw the requester's release
            // return can expect this event to be there already.
            let _ = events.send(Event::SessionEnded(end));
            drop(outbound);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }
}

/// The Admin service of the fake daemon: fixed answers, every request logged.
struct FakeAdmin {
    log: Arc<Mutex<Vec<AdminRequest>>>,
}

impl FakeAdmin {
    fn record(&self, request: AdminRequest) {
        self.log.lock().unwrap().push(request);
    }
}

#[tonic::async_trait]
impl Admin for FakeAdmin {
    async fn hello(
        &self,
        request: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloReply>, Status> {
        check_hello(request.get_ref())?;
        Ok(Response::new(hello_reply("fake-shadowcopyd 0.0.1")))
    }

    async fn list_writers(
        &self,
        request: Request<v1::ListWritersRequest>,
    ) -> Result<Response<v1::ListWritersReply>, Status> {
        let request = request.into_inner();
        self.record(AdminRequest::ListWriters(request));
        let writer = |instance: &str, hosted: bool| v1::WriterInfo {
            status: Some(writer_status(instance)),
            application_level: 3,
            freeze_timeout_ms: 60_000,
            subscribe_mask: 0x6,
            hosted,
            pid: if hosted { 0 } else { 4242 },
            uid: 1000,
            registered_at: 133_450_560_000_000_000,
            wmd_json: if request.include_metadata {
                wmd_json(instance)
            } else {
                String::new()
            },
        };
        Ok(Response::new(v1::ListWritersReply {
            status: Some(status_ok()),
            writers: vec![
                writer(INSTANCE_ID, false),
                writer(RUNNING_INSTANCE_ID, true),
            ],
        }))
    }

    async fn list_providers(
        &self,
        _: Request<v1::ListProvidersRequest>,
    ) -> Result<Response<v1::ListProvidersReply>, Status> {
        self.record(AdminRequest::ListProviders);
        Ok(Response::new(v1::ListProvidersReply {
            status: Some(status_ok()),
            providers: vec![v1::ProviderEntry {
                info: Some(v1::ProviderInfo {
                    provider_id: PROVIDER_ID.to_owned(),
                    name: "btrfs".to_owned(),
                    version: "1.0.0".to_owned(),
                    provider_type: 2,
                }),
                builtin: true,
                socket_path: String::new(),
            }],
        }))
    }

    async fn list_snapshots(
        &self,
        request: Request<v1::ListSnapshotsRequest>,
    ) -> Result<Response<v1::ListSnapshotsReply>, Status> {
        self.record(AdminRequest::ListSnapshots(request.into_inner()));
        Ok(Response::new(v1::ListSnapshotsReply {
            status: Some(status_ok()),
            snapshots: vec![snapshot_properties()],
        }))
    }

    async fn delete_snapshots(
        &self,
        request: Request<v1::DeleteSnapshotsRequest>,
    ) -> Result<Response<v1::DeleteSnapshotsReply>, Status> {
        self.record(AdminRequest::DeleteSnapshots(request.into_inner()));
        // A partial deletion: two deleted, then one that is exposed and no force (DEL-1).
        Ok(Response::new(v1::DeleteSnapshotsReply {
            status: Some(v1::Status::from_code(
                &codes::VSS_E_BAD_STATE,
                format!("shadow copy {SNAPSHOT_ID} is exposed; unexpose it or pass force"),
            )),
            deleted_count: 2,
            first_failed_snapshot_id: SNAPSHOT_ID.to_owned(),
        }))
    }

    async fn expose_snapshot(
        &self,
        request: Request<v1::ExposeSnapshotRequest>,
    ) -> Result<Response<v1::ExposeSnapshotReply>, Status> {
        let request = request.into_inner();
        self.record(AdminRequest::ExposeSnapshot(request.clone()));
        Ok(Response::new(v1::ExposeSnapshotReply {
            status: Some(status_ok()),
            exposed_name: if request.expose_name.is_empty() {
                "/run/shadowcopy/exposed/1".to_owned()
            } else {
                request.expose_name
            },
        }))
    }

    async fn unexpose_snapshot(
        &self,
        request: Request<v1::UnexposeSnapshotRequest>,
    ) -> Result<Response<v1::UnexposeSnapshotReply>, Status> {
        self.record(AdminRequest::UnexposeSnapshot(request.into_inner()));
        Ok(Response::new(v1::UnexposeSnapshotReply {
            status: Some(v1::Status::from_code(
                &codes::VSS_E_OBJECT_NOT_FOUND,
                format!("shadow copy {SNAPSHOT_ID} is not exposed"),
            )),
        }))
    }

    async fn revert_volume(
        &self,
        request: Request<v1::RevertVolumeRequest>,
    ) -> Result<Response<v1::RevertVolumeReply>, Status> {
        self.record(AdminRequest::RevertVolume(request.into_inner()));
        Ok(Response::new(v1::RevertVolumeReply {
            status: Some(status_ok()),
        }))
    }

    async fn get_status(
        &self,
        _: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusReply>, Status> {
        self.record(AdminRequest::GetStatus);
        Ok(Response::new(v1::GetStatusReply {
            status: Some(status_ok()),
            daemon_version: "fake-shadowcopyd 0.0.1".to_owned(),
            protocol_major: 1,
            protocol_minor: 0,
            uptime_seconds: 90,
            set_in_creation: SET_ID.to_owned(),
            sessions: vec![v1::SessionInfo {
                session_id: SESSION_ID.to_owned(),
                restore: false,
                pid: 77,
                uid: 0,
                phase: "DoSnapshotSet".to_owned(),
                set_id: SET_ID.to_owned(),
                opened_at: 133_450_560_000_000_000,
            }],
            writer_count: 2,
            provider_count: 1,
            reverts_in_progress: vec!["/srv/old".to_owned()],
        }))
    }
}
