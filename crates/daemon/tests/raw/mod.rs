//! Raw protocol clients for the hostile-input tests: requester sessions, writer streams and admin
//! calls built straight from the generated types, so that a test can send what the requester
//! library and the writer SDK would refuse to build, and a snapshot of the daemon's observable
//! state to show that a refused call changed nothing.

#![allow(dead_code, unreachable_pub)] // Each test file uses its own part of this module.

use std::path::Path;
use std::time::Duration;

use shadowcopy_metadata::ErrorCode;
use shadowcopy_metadata::WriterClassId;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::wmd::{Component, FileDescriptor, WriterMetadata};
use shadowcopy_protocol::v1::{self, requester_request::Call};
use shadowcopy_protocol::{MAX_MESSAGE_SIZE, VersionedChannel, connect_unix, versioned};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;

/// How long a raw client waits for one answer before the test reports a hang. Only a bound on
/// a hang, never an assertion about how long something took.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// A versioned channel to the daemon's socket.
pub async fn channel(socket: &Path) -> VersionedChannel {
    let channel = connect_unix(socket)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    versioned(channel)
}

/// An admin client that accepts the largest replies the protocol allows.
pub async fn admin(socket: &Path) -> v1::admin_client::AdminClient<VersionedChannel> {
    v1::admin_client::AdminClient::new(channel(socket).await)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
}

/// Waits for `future`, panicking with `what` if it does not finish within [`ANSWER_LIMIT`]: the
/// daemon hung on hostile input.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(ANSWER_LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("no answer to {what} within {ANSWER_LIMIT:?}: the daemon hangs"))
}

/// One requester session on a raw stream: each call is sent as it is, whatever it contains.
pub struct RawSession {
    requests: mpsc::UnboundedSender<v1::RequesterRequest>,
    responses: Streaming<v1::RequesterResponse>,
    next_id: u64,
}

impl RawSession {
    /// Opens a session stream; a refused stream is the daemon's gRPC status.
    pub async fn open(socket: &Path) -> Result<Self, tonic::Status> {
        let (requests, receiver) = mpsc::unbounded_channel();
        let mut client = v1::requester_client::RequesterClient::new(channel(socket).await)
            .max_decoding_message_size(MAX_MESSAGE_SIZE);
        let responses = within(
            "opening a requester session",
            client.session(UnboundedReceiverStream::new(receiver)),
        )
        .await?
        .into_inner();
        Ok(RawSession {
            requests,
            responses,
            next_id: 1,
        })
    }

    /// Sends a request with `call` (or none) and returns the answer, or the status that ended the
    /// stream, or `None` when the stream ended without one.
    pub async fn send(
        &mut self,
        call: Option<Call>,
    ) -> Result<Option<v1::RequesterResponse>, tonic::Status> {
        let request_id = self.next_id;
        self.next_id += 1;
        self.requests
            .send(v1::RequesterRequest { request_id, call })
            .expect("the request stream is open");
        let answer = within("a requester call", self.responses.message()).await?;
        if let Some(answer) = &answer {
            assert_eq!(
                answer.request_id, request_id,
                "the answer carries the request's id"
            );
        }
        Ok(answer)
    }

    /// Sends `call` and returns its in-band status; panics if the stream broke instead, since every
    /// accepted call must be answered in-band (docs/protocol.md §3.1).
    pub async fn call(&mut self, call: Call) -> v1::Status {
        let name = format!("{call:?}");
        let name = name.split('(').next().unwrap_or_default().to_owned();
        match self.send(Some(call)).await {
            Ok(Some(answer)) => answer
                .status
                .unwrap_or_else(|| panic!("the answer to {name} has no status")),
            Ok(None) => panic!("the session stream ended instead of answering {name}"),
            Err(status) => {
                panic!("the session stream failed instead of answering {name}: {status:?}")
            }
        }
    }

    /// Sends `call` and panics unless it succeeded.
    pub async fn ok(&mut self, call: Call) -> v1::Status {
        let status = self.call(call).await;
        assert!(status.is_success(), "the call failed: {status}");
        status
    }

    /// Sends `call` and returns the whole answer; panics unless it succeeded.
    pub async fn answer(&mut self, call: Call) -> v1::RequesterResponse {
        let answer = self
            .send(Some(call))
            .await
            .expect("the stream stays up")
            .expect("the call is answered");
        let status = answer.status.clone().expect("the answer has a status");
        assert!(status.is_success(), "the call failed: {status}");
        answer
    }

    /// Ends the session (releases it, BK-END-6).
    pub fn close(self) {
        drop(self);
    }
}

/// Asserts that `status` carries `code` and a message and hint a person can act on; `mentions`
/// must all appear in the message (the step, the field, the object).
pub fn assert_refused(status: &v1::Status, code: &ErrorCode, mentions: &[&str], what: &str) {
    eprintln!("{what}: {}", clip(&status.to_string()));
    assert_eq!(
        status.code, code.value,
        "{what}: expected {} but got {status}",
        code.name
    );
    assert_eq!(status.name, code.name, "{what}: the status names its code");
    assert!(
        !status.message.is_empty(),
        "{what}: the status has a message"
    );
    assert!(!status.hint.is_empty(), "{what}: the status has a hint");
    for word in mentions {
        assert!(
            status.message.contains(word),
            "{what}: the message should mention {word:?}: {status}"
        );
    }
}

/// Asserts that a refused gRPC call or stream carries `code` (also in the VSS code header) and
/// `mentions` in its message.
pub fn assert_grpc_refused(
    status: &tonic::Status,
    code: &ErrorCode,
    mentions: &[&str],
    what: &str,
) {
    eprintln!("{what}: {:?} {}", status.code(), clip(status.message()));
    assert_eq!(
        status.code(),
        shadowcopy_protocol::grpc_code(code),
        "{what}: gRPC code of {}: {status:?}",
        code.name
    );
    assert_eq!(
        shadowcopy_protocol::error_code_of_grpc(status).map(|c| c.name),
        Some(code.name),
        "{what}: the refusal carries the VSS code: {status:?}"
    );
    for word in mentions {
        assert!(
            status.message().contains(word),
            "{what}: the refusal should mention {word:?}: {status:?}"
        );
    }
}

/// The first 300 characters of `text`, for the test's output (which docs/RELIABILITY.md
/// quotes) when a message echoes a huge input.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// A writer on a raw stream: it registers with whatever `Register` it is given and answers only
/// what the test tells it to.
pub struct RawWriter {
    pub messages: mpsc::UnboundedSender<v1::WriterMessage>,
    pub events: Streaming<v1::CoordinatorEvent>,
    /// The instance id the daemon assigned.
    pub instance_id: String,
}

/// The `Register` message of a WMD with every number at its default.
pub fn register_message(wmd_json: String) -> v1::Register {
    v1::Register {
        wmd_json,
        application_level: 0,
        freeze_timeout_ms: 0,
        subscribe_mask: 0,
        instance_name: None,
    }
}

/// A small valid WMD: writer `name` of `class_id` with one selectable file group `data` under
/// `/sim/ok/<name>`, a volume the simulated provider accepts.
pub fn small_wmd(name: &str, class_id: WriterClassId) -> WriterMetadata {
    let files = vec![FileDescriptor::new(format!("/sim/ok/{name}"), "*", true)];
    WriterMetadata::simple(
        name,
        class_id,
        vec![Component::file_group("", "data", true, files)],
    )
}

impl RawWriter {
    /// Opens a writer stream and sends `first` (or nothing but an empty message when `None`),
    /// then waits for `Registered`; a refused registration is the daemon's gRPC status.
    pub async fn connect_with(
        socket: &Path,
        first: Option<v1::writer_message::Message>,
    ) -> Result<Self, tonic::Status> {
        let (messages, receiver) = mpsc::unbounded_channel();
        messages
            .send(v1::WriterMessage { message: first })
            .expect("the channel is open");
        let mut client = v1::writer_client::WriterClient::new(channel(socket).await)
            .max_decoding_message_size(MAX_MESSAGE_SIZE);
        let mut events = within(
            "opening a writer stream",
            client.connect(UnboundedReceiverStream::new(receiver)),
        )
        .await?
        .into_inner();
        let first = within("the Registered event", events.message())
            .await?
            .expect("the daemon sends Registered or an error");
        let Some(v1::coordinator_event::Event::Registered(registered)) = first.event else {
            panic!("the first event is Registered, not {first:?}");
        };
        assert_eq!(first.event_id, 0, "Registered has event id 0");
        Ok(RawWriter {
            messages,
            events,
            instance_id: registered.writer_instance_id,
        })
    }

    /// Registers `register`.
    pub async fn register(socket: &Path, register: v1::Register) -> Result<Self, tonic::Status> {
        Self::connect_with(
            socket,
            Some(v1::writer_message::Message::Register(register)),
        )
        .await
    }

    /// Sends one message on the stream.
    pub fn send(&self, message: Option<v1::writer_message::Message>) {
        let _ = self.messages.send(v1::WriterMessage { message });
    }

    /// The next event, or the status that ended the stream, or `None` for a clean end.
    pub async fn next(&mut self) -> Result<Option<v1::CoordinatorEvent>, tonic::Status> {
        within("the next writer event", self.events.message()).await
    }

    /// Answers `event_id` with success and, for Identify, `wmd`.
    pub fn answer(&self, event_id: u64, wmd: Option<&WriterMetadata>) {
        self.send(Some(v1::writer_message::Message::EventResult(
            v1::EventResult {
                event_id,
                success: true,
                wmd_json: wmd.map(Document::to_canonical_json),
                ..v1::EventResult::default()
            },
        )));
    }
}

/// What a caller can see of the daemon, for "the refused call changed nothing".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Every registered writer: class id, instance id, name, instance name, uid.
    pub writers: Vec<(String, String, String, String, u32)>,
    /// Every shadow copy id, of every context.
    pub snapshots: Vec<String>,
    /// The set in creation, empty when none.
    pub set_in_creation: String,
    /// How many requester sessions are open.
    pub sessions: usize,
    /// The counts of `GetStatus`.
    pub writer_count: u32,
    /// The providers.
    pub providers: Vec<String>,
    /// Reverts running.
    pub reverts: Vec<String>,
}

/// Reads the daemon's observable state through the admin service (as root).
pub async fn observe(socket: &Path) -> Observed {
    let mut admin = admin(socket).await;
    let writers = within(
        "ListWriters",
        admin.list_writers(v1::ListWritersRequest {
            include_metadata: false,
        }),
    )
    .await
    .expect("ListWriters answers")
    .into_inner();
    let snapshots = within(
        "ListSnapshots",
        admin.list_snapshots(v1::ListSnapshotsRequest::default()),
    )
    .await
    .expect("ListSnapshots answers")
    .into_inner();
    let status = within("GetStatus", admin.get_status(v1::GetStatusRequest {}))
        .await
        .expect("GetStatus answers")
        .into_inner();
    let providers = within(
        "ListProviders",
        admin.list_providers(v1::ListProvidersRequest {}),
    )
    .await
    .expect("ListProviders answers")
    .into_inner();
    let mut writers: Vec<_> = writers
        .writers
        .into_iter()
        .map(|w| {
            let s = w.status.unwrap_or_default();
            (
                s.writer_class_id,
                s.writer_instance_id,
                s.writer_name,
                s.instance_name,
                w.uid,
            )
        })
        .collect();
    writers.sort();
    let mut snapshots: Vec<_> = snapshots
        .snapshots
        .into_iter()
        .map(|s| s.snapshot_id)
        .collect();
    snapshots.sort();
    Observed {
        writers,
        snapshots,
        set_in_creation: status.set_in_creation,
        sessions: status.sessions.len(),
        writer_count: status.writer_count,
        providers: providers
            .providers
            .into_iter()
            .map(|p| p.info.map(|i| i.provider_id).unwrap_or_default())
            .collect(),
        reverts: status.reverts_in_progress,
    }
}

/// The daemon's observable state once every requester session is released (the daemon releases
/// a session in the background after its stream ends), for the "before" of a comparison.
pub async fn settled(socket: &Path) -> Observed {
    let deadline = tokio::time::Instant::now() + ANSWER_LIMIT;
    loop {
        let now = observe(socket).await;
        if now.sessions == 0 || tokio::time::Instant::now() >= deadline {
            assert_eq!(now.sessions, 0, "the sessions were not released: {now:?}");
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that the daemon's state comes back to `before` once the hostile session or stream
/// has been released (the daemon releases it in the background after the stream ends); `what`
/// names the hostile input for the failure message.
pub async fn assert_unchanged(socket: &Path, before: &Observed, what: &str) {
    let mut now = observe(socket).await;
    let deadline = tokio::time::Instant::now() + ANSWER_LIMIT;
    while now != *before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        now = observe(socket).await;
    }
    assert_eq!(&now, before, "{what} changed the daemon's state");
}

/// A well-behaved writer built on the SDK: it answers every event with the defaults and its
/// fixed WMD. The hostile tests check that it is unaffected by what others send.
pub struct PlainWriter(pub WriterMetadata);

impl shadowcopy_writer_sdk::Writer for PlainWriter {
    fn metadata(&self) -> WriterMetadata {
        self.0.clone()
    }
}

/// Starts a [`PlainWriter`] with `wmd` and waits until it is registered.
pub async fn plain_writer(
    socket: &Path,
    wmd: WriterMetadata,
    instance_name: Option<&str>,
) -> shadowcopy_writer_sdk::WriterHandle {
    let mut options = shadowcopy_writer_sdk::WriterOptions::with_socket(socket);
    options.instance_name = instance_name.map(str::to_owned);
    let mut handle = shadowcopy_writer_sdk::spawn(PlainWriter(wmd), options);
    within("the plain writer's registration", handle.registered())
        .await
        .expect("the plain writer registers");
    handle
}

/// Asserts that the daemon's log shows no panic: a panic in one of its tasks would not end the
/// process, but would leave a caller without an answer or a lock poisoned.
pub fn assert_no_panic(daemon: &shadowcopy_test_support::DaemonProcess) {
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "the daemon panicked: {log}");
}
