//! Real round trips over a Unix socket: the version handshake, refusals, and the writer stream.
//!
//! A tiny Writer service runs in-process on a socket in a private temporary directory. It checks the
//! version header with the crate's interceptor, answers Hello, answers Register with Registered,
//! and reports when the inbound half of a writer stream ends, which is how shadowcopyd learns that
//! a writer is gone.

use std::hash::{BuildHasher, RandomState};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shadowcopy_metadata::codes;
use shadowcopy_protocol::v1::coordinator_event::Event;
use shadowcopy_protocol::v1::writer_client::WriterClient;
use shadowcopy_protocol::v1::writer_message::Message;
use shadowcopy_protocol::v1::writer_server::{Writer, WriterServer};
use shadowcopy_protocol::v1::{
    CoordinatorEvent, EventResult, HelloReply, HelloRequest, Register, Registered, WriterMessage,
};
use shadowcopy_protocol::{
    ConnectError, MAX_MESSAGE_SIZE, PROTOCOL_VERSION, PeerCredentials, ProtocolVersion,
    VERSION_HEADER, VersionInterceptor, check_hello, check_version_interceptor, connect_unix,
    error_code_of_grpc, grpc_status, hello_reply, hello_request, peer_credentials,
    serve_unix_incoming, versioned,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status, Streaming};

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// The event id a test client answers to ask the test server to end the stream from its side.
const PLEASE_HANG_UP: u64 = 99;

/// The instance id the test server assigns.
const INSTANCE_ID: &str = "0b7e5a52-6a3c-4c39-9a43-6f1b33d0c001";

/// A private directory for one test's socket, removed when dropped, even when the test fails.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let random = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(format!(
            "shadowcopy-protocol-{}-{random:016x}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).expect("create the test's socket directory");
        SocketDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a writer stream ended, as the test server saw its inbound half.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// The client closed its half cleanly.
    Closed,
    /// The client reset the stream or the connection broke.
    Broken,
    /// The server ended the stream itself.
    HungUp,
}

/// What the test server reports to the test.
#[derive(Debug)]
enum Report {
    /// A Hello call arrived from this peer.
    Hello(Option<PeerCredentials>),
    /// A writer stream ended.
    StreamEnded(StreamEnd),
}

/// The Writer service of the tests.
struct TestWriterService {
    reports: mpsc::UnboundedSender<Report>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<CoordinatorEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Writer for TestWriterService {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        check_hello(request.get_ref())?;
        let _ = self.reports.send(Report::Hello(peer_credentials(&request)));
        Ok(Response::new(hello_reply("protocol-test-server 0")))
    }

    type ConnectStream = EventStream;

    async fn connect(
        &self,
        request: Request<Streaming<WriterMessage>>,
    ) -> Result<Response<EventStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.and_then(|message| message.message);
        let Some(Message::Register(_)) = first else {
            return Err(grpc_status(
                &codes::VSS_E_BAD_STATE,
                "the first message on a writer stream must be Register",
            ));
        };
        let (events, outbound) = mpsc::channel(4);
        let registered = CoordinatorEvent {
            event_id: 0,
            session_id: String::new(),
            event: Some(Event::Registered(Registered {
                writer_instance_id: INSTANCE_ID.to_owned(),
            })),
        };
        events
            .send(Ok(registered))
            .await
            .expect("the receiver is still here");
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let end = loop {
                match inbound.message().await {
                    Ok(Some(WriterMessage {
                        message: Some(Message::EventResult(result)),
                    })) if result.event_id == PLEASE_HANG_UP => break StreamEnd::HungUp,
                    Ok(Some(_)) => continue,
                    Ok(None) => break StreamEnd::Closed,
                    Err(_) => break StreamEnd::Broken,
                }
            };
            // Dropping the sender ends the outbound half, as shadowcopyd does for a writer it forgets.
            drop(events);
            let _ = reports.send(Report::StreamEnded(end));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }
}

/// The test server, stopped when dropped.
struct TestServer {
    socket: PathBuf,
    reports: mpsc::UnboundedReceiver<Report>,
    task: tokio::task::JoinHandle<()>,
    // Declared last, so the socket directory goes after the server.
    dir: SocketDir,
}

impl TestServer {
    async fn start() -> Self {
        let dir = SocketDir::new();
        let socket = dir.path("shadowcopyd.sock");
        Self::start_at(dir, socket).await
    }

    async fn start_at(dir: SocketDir, socket: PathBuf) -> Self {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let service = InterceptedService::new(
            WriterServer::new(TestWriterService {
                reports: reports_tx,
            })
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
            check_version_interceptor,
        );
        let incoming = serve_unix_incoming(&socket).expect("listen on the test socket");
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .expect("the test server runs");
        });
        TestServer {
            socket,
            reports,
            task,
            dir,
        }
    }

    async fn next_report(&mut self) -> Report {
        tokio::time::timeout(PATIENCE, self.reports.recv())
            .await
            .expect("the server reports in time")
            .expect("the server is running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn register(wmd_json: String) -> WriterMessage {
    WriterMessage {
        message: Some(Message::Register(Register {
            wmd_json,
            application_level: 3,
            freeze_timeout_ms: 0,
            subscribe_mask: 0,
            instance_name: None,
        })),
    }
}

fn answer(event_id: u64) -> WriterMessage {
    WriterMessage {
        message: Some(Message::EventResult(EventResult {
            event_id,
            success: true,
            ..Default::default()
        })),
    }
}

/// Opens a writer stream, sends Register and checks that the first event is Registered.
async fn open_registered_stream(
    server: &TestServer,
) -> (mpsc::Sender<WriterMessage>, Streaming<CoordinatorEvent>) {
    open_registered_stream_with(server, "{}".to_owned()).await
}

/// [`open_registered_stream`] with a WMD of the caller's choice.
async fn open_registered_stream_with(
    server: &TestServer,
    wmd_json: String,
) -> (mpsc::Sender<WriterMessage>, Streaming<CoordinatorEvent>) {
    let channel = connect_unix(&server.socket).await.expect("connect");
    let mut client = WriterClient::new(versioned(channel));
    let (to_server, outbound) = mpsc::channel(4);
    to_server
        .send(register(wmd_json))
        .await
        .expect("queue Register");
    let mut events = client
        .connect(ReceiverStream::new(outbound))
        .await
        .expect("the server accepts the stream")
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, events.message())
        .await
        .expect("Registered arrives in time")
        .expect("the stream works")
        .expect("the stream has a first event");
    assert_eq!(first.event_id, 0);
    match first.event {
        Some(Event::Registered(Registered { writer_instance_id })) => {
            assert_eq!(writer_instance_id, INSTANCE_ID);
        }
        other => panic!("the first event must be Registered, got {other:?}"),
    }
    (to_server, events)
}

#[tokio::test]
async fn hello_works_with_the_version_header_and_the_server_sees_our_uid() {
    let mut server = TestServer::start().await;
    let channel = connect_unix(&server.socket).await.expect("connect");
    let mut client = WriterClient::new(versioned(channel));
    let reply = client
        .hello(hello_request("protocol-test-client 0"))
        .await
        .expect("hello is accepted")
        .into_inner();
    assert_eq!(
        ProtocolVersion {
            major: reply.protocol_major,
            minor: reply.protocol_minor
        },
        ProtocolVersion::CURRENT
    );
    assert_eq!(reply.server_version, "protocol-test-server 0");

    let Report::Hello(Some(peer)) = server.next_report().await else {
        panic!("the server must see SO_PEERCRED credentials");
    };
    let our_uid = std::fs::metadata(&server.dir.0).expect("stat").uid();
    assert_eq!(peer.uid, our_uid, "the directory we created is ours");
    assert_eq!(peer.pid, Some(std::process::id() as i32));
}

#[tokio::test]
async fn a_client_without_the_header_is_refused_naming_the_versions() {
    let server = TestServer::start().await;
    let channel = connect_unix(&server.socket).await.expect("connect");
    let mut client = WriterClient::new(channel);
    let error = client
        .hello(hello_request("headerless"))
        .await
        .expect_err("a call without the version header is refused");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains(VERSION_HEADER), "{error:?}");
    assert!(
        error
            .message()
            .contains(&format!("protocol {PROTOCOL_VERSION}")),
        "{error:?}"
    );
    assert_eq!(
        error
            .metadata()
            .get(VERSION_HEADER)
            .map(|v| v.to_str().unwrap()),
        Some(PROTOCOL_VERSION),
        "the refusal tells the server's version"
    );

    // The writer stream is refused the same way, before any message is read.
    let mut client = WriterClient::new(connect_unix(&server.socket).await.expect("connect"));
    let (_to_server, outbound) = mpsc::channel::<WriterMessage>(1);
    let error = client
        .connect(ReceiverStream::new(outbound))
        .await
        .expect_err("a stream without the version header is refused");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
}

#[tokio::test]
async fn another_major_version_is_refused_and_another_minor_is_not() {
    let server = TestServer::start().await;
    let channel = connect_unix(&server.socket).await.expect("connect");

    let future = ProtocolVersion {
        major: ProtocolVersion::CURRENT.major + 1,
        minor: 3,
    };
    let mut client =
        WriterClient::with_interceptor(channel.clone(), VersionInterceptor::with_version(future));
    let error = client
        .hello(hello_request("from the future"))
        .await
        .expect_err("another major version is refused");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains(&future.to_string()), "{error:?}");
    assert!(error.message().contains(PROTOCOL_VERSION), "{error:?}");
    assert!(error.message().contains("upgrade the server"), "{error:?}");

    let newer_minor = ProtocolVersion {
        major: ProtocolVersion::CURRENT.major,
        minor: ProtocolVersion::CURRENT.minor + 5,
    };
    let mut client =
        WriterClient::with_interceptor(channel, VersionInterceptor::with_version(newer_minor));
    client
        .hello(hello_request("newer minor"))
        .await
        .expect("a newer minor version of the same major is accepted");
}

#[tokio::test]
async fn a_register_larger_than_the_grpc_default_limit_passes() {
    let server = TestServer::start().await;
    // tonic refuses messages over 4 MiB unless the limit is raised to MAX_MESSAGE_SIZE.
    let big = format!("{{\"padding\":\"{}\"}}", "x".repeat(6 * 1024 * 1024));
    let (_to_server, _events) = open_registered_stream_with(&server, big).await;
}

#[tokio::test]
async fn the_server_notices_when_the_writer_closes_its_half() {
    let mut server = TestServer::start().await;
    let (to_server, mut events) = open_registered_stream(&server).await;
    to_server.send(answer(7)).await.expect("send a result");
    drop(to_server);
    let Report::StreamEnded(end) = server.next_report().await else {
        panic!("expected the end of the stream");
    };
    assert_eq!(end, StreamEnd::Closed);
    // The server then ends its half too, and the writer sees that.
    let next = tokio::time::timeout(PATIENCE, events.message())
        .await
        .expect("the end arrives in time")
        .expect("a clean end, not an error");
    assert!(next.is_none(), "no event after the end: {next:?}");
}

#[tokio::test]
async fn the_server_notices_when_the_writer_drops_the_whole_stream() {
    let mut server = TestServer::start().await;
    let (to_server, events) = open_registered_stream(&server).await;
    // A writer process that dies drops both halves at once.
    drop(events);
    drop(to_server);
    let Report::StreamEnded(end) = server.next_report().await else {
        panic!("expected the end of the stream");
    };
    assert!(
        matches!(end, StreamEnd::Closed | StreamEnd::Broken),
        "{end:?}"
    );
}

#[tokio::test]
async fn the_writer_notices_when_the_coordinator_ends_the_stream() {
    let mut server = TestServer::start().await;
    let (to_server, mut events) = open_registered_stream(&server).await;
    to_server
        .send(answer(PLEASE_HANG_UP))
        .await
        .expect("send a result");
    let next = tokio::time::timeout(PATIENCE, events.message())
        .await
        .expect("the end arrives in time")
        .expect("a clean end, not an error");
    assert!(next.is_none(), "the writer must see the end: {next:?}");
    let Report::StreamEnded(end) = server.next_report().await else {
        panic!("expected the end of the stream");
    };
    assert_eq!(end, StreamEnd::HungUp);
}

#[tokio::test]
async fn a_stream_that_does_not_start_with_register_is_refused_with_the_vss_code() {
    let server = TestServer::start().await;
    let mut client = WriterClient::new(versioned(
        connect_unix(&server.socket).await.expect("connect"),
    ));
    let (to_server, outbound) = mpsc::channel(1);
    to_server.send(answer(1)).await.expect("queue a result");
    let error = client
        .connect(ReceiverStream::new(outbound))
        .await
        .expect_err("the stream is refused");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(
        error
            .message()
            .starts_with("VSS_E_BAD_STATE (0x80042301): the first message"),
        "{error:?}"
    );
    assert_eq!(error_code_of_grpc(&error), Some(&codes::VSS_E_BAD_STATE));
}

#[tokio::test]
async fn connecting_to_a_missing_socket_says_so() {
    let dir = SocketDir::new();
    let path = dir.path("nothing-here.sock");
    let error = connect_unix(&path).await.expect_err("nothing listens");
    assert!(matches!(error, ConnectError::Missing { .. }), "{error:?}");
    assert_eq!(error.path(), path);
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("start shadowcopyd"), "{text}");
    assert!(text.contains("--socket"), "{text}");
}

#[tokio::test]
async fn a_stale_socket_is_refused_then_replaced_by_a_new_server() {
    let dir = SocketDir::new();
    let path = dir.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists(), "a closed listener leaves its socket file");

    let error = connect_unix(&path).await.expect_err("nobody accepts");
    assert!(matches!(error, ConnectError::Refused { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("connection refused"), "{text}");
    assert!(text.contains("start shadowcopyd"), "{text}");

    let server = TestServer::start_at(dir, path).await;
    let mut client = WriterClient::new(versioned(
        connect_unix(&server.socket).await.expect("connect"),
    ));
    client
        .hello(hello_request("after the stale socket"))
        .await
        .expect("the new server answers");

    let error = serve_unix_incoming(&server.socket).expect_err("a live socket is kept");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
}

#[tokio::test]
async fn a_path_that_is_not_a_socket_is_never_removed() {
    let dir = SocketDir::new();
    let path: &Path = &dir.path("precious.txt");
    std::fs::write(path, "keep me").expect("write");
    let error = serve_unix_incoming(path).expect_err("not a socket");
    assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists, "{error}");
    assert_eq!(std::fs::read_to_string(path).expect("read"), "keep me");
}
