//! Connecting and opening sessions: missing and stale sockets, version mismatches and refused
//! callers, each with the socket's path, a VSS code and what to do.

mod common;

use common::{FakeDaemon, FakeOptions, SocketDir};
use shadowcopy_metadata::codes;
use shadowcopy_protocol::{ConnectError, grpc_status};
use shadowcopy_requester::{Client, RequesterError};

#[tokio::test]
async fn a_missing_socket_is_reported_with_its_path() {
    let dir = SocketDir::new();
    let socket = dir.path("missing.sock");
    let error = Client::connect(&socket).await.unwrap_err();
    assert!(
        matches!(error, RequesterError::Connect(ConnectError::Missing { .. })),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&socket.display().to_string()), "{text}");
    assert!(text.contains("systemctl start shadowcopyd"), "{text}");
    assert_eq!(error.code(), &codes::VSS_E_UNEXPECTED);
    assert_eq!(error.call(), None);
}

#[tokio::test]
async fn a_stale_socket_file_is_reported_as_refused() {
    let dir = SocketDir::new();
    let socket = dir.path("stale.sock");
    // A socket file whose listener is gone, as a daemon that died leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let error = Client::connect(&socket).await.unwrap_err();
    assert!(
        matches!(error, RequesterError::Connect(ConnectError::Refused { .. })),
        "{error:?}"
    );
    assert!(error.to_string().contains(&socket.display().to_string()));
}

#[tokio::test]
async fn a_daemon_with_another_major_version_is_refused_at_connect() {
    let daemon = FakeDaemon::start_with(FakeOptions {
        hello_major: shadowcopy_protocol::PROTOCOL_MAJOR + 1,
        ..FakeOptions::default()
    })
    .await;
    let error = Client::connect(&daemon.socket).await.unwrap_err();
    assert!(
        matches!(error, RequesterError::VersionMismatch { .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), &codes::VSS_E_UNEXPECTED);
    let text = error.to_string();
    assert!(
        text.contains(&daemon.socket.display().to_string()),
        "{text}"
    );
    assert!(text.contains("2.0"), "{text}");
    assert!(text.contains("upgrade the requester"), "{text}");
}

#[tokio::test]
async fn a_refused_caller_gets_access_denied_when_opening_a_session() {
    let daemon = FakeDaemon::start_with(FakeOptions {
        refuse_sessions: Some(grpc_status(
            &codes::E_ACCESSDENIED,
            "uid 1000 is not root, not in group backup and not granted `requester`",
        )),
        ..FakeOptions::default()
    })
    .await;
    // Hello is open to every local user; the refusal comes with the stream (docs/protocol.md §1.1).
    let client = Client::connect(&daemon.socket).await.unwrap();
    let error = client.backup_session().await.unwrap_err();
    assert!(
        matches!(
            error,
            RequesterError::AccessDenied {
                call: "Session",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.code(), &codes::E_ACCESSDENIED);
    let text = error.to_string();
    assert!(
        text.contains(&daemon.socket.display().to_string()),
        "{text}"
    );
    assert!(text.contains("uid 1000"), "{text}");
    assert!(text.contains("backup group"), "{text}");
    let error = client.restore_session().await.unwrap_err();
    assert_eq!(error.code(), &codes::E_ACCESSDENIED);
}

#[tokio::test]
async fn a_refusal_with_another_vss_code_keeps_it() {
    let daemon = FakeDaemon::start_with(FakeOptions {
        refuse_sessions: Some(grpc_status(
            &codes::VSS_E_WRITER_INFRASTRUCTURE,
            "the writer registry failed",
        )),
        ..FakeOptions::default()
    })
    .await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    let error = client.backup_session().await.unwrap_err();
    assert!(matches!(error, RequesterError::Refused { .. }), "{error:?}");
    assert_eq!(error.code(), &codes::VSS_E_WRITER_INFRASTRUCTURE);
    let text = error.to_string();
    assert!(
        text.contains("VSS_E_WRITER_INFRASTRUCTURE (0x80042318)"),
        "{text}"
    );
    assert!(
        text.contains(codes::VSS_E_WRITER_INFRASTRUCTURE.action),
        "{text}"
    );
}

#[tokio::test]
async fn a_socket_without_the_requester_service_is_named_as_the_wrong_socket() {
    let daemon = FakeDaemon::start_with(FakeOptions {
        serve_requester: false,
        ..FakeOptions::default()
    })
    .await;
    let error = Client::connect(&daemon.socket).await.unwrap_err();
    assert!(
        matches!(error, RequesterError::Refused { call: "Hello", .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), &codes::E_NOTIMPL);
    let text = error.to_string();
    assert!(
        text.contains(&daemon.socket.display().to_string()),
        "{text}"
    );
    assert!(text.contains("socket of shadowcopyd"), "{text}");
}
