//! Callers outside the allowed users against a real `shadowcopyd` (issue 7, spec §17,
//! docs/protocol.md §1.1): an account that is not root, not in the backup group and has no role,
//! a member of the backup group whom `access_control` denies, an account granted only the writer
//! role, and root itself when `access_control` denies it (SEC-2).
//!
//! Each refused call fails with PERMISSION_DENIED, the VSS code E_ACCESSDENIED, and a message that
//! names the account and says what would let it in; `Hello` stays open to every local user.
//! Afterwards the daemon's writers, shadow copies and status are what they were.
//!
//! A caller of another uid is this test binary run again as `nobody` (uid 65534), with the daemon's
//! socket in `SHADOWCOPY_HOSTILE_CALLER_SOCKET`: `std::process::Command::uid` switches the user
//! without unsafe code, and the child runs only the test it was started for (`--exact`), which
//! then makes the raw calls as that user and asserts on them; the parent asserts that the child
//! passed and that the daemon's state did not change. The CLI's own check (`shadowcopy status` as
//! `nobody`) is in crates/cli/tests/daemon.rs.

mod raw;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use raw::{
    RawSession, RawWriter, assert_grpc_refused, assert_unchanged, plain_writer, register_message,
    settled, small_wmd,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::SnapshotContext;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{WriterClassId, WriterMetadata};
use shadowcopy_protocol::v1::{self, requester_request::Call};
use shadowcopy_test_support::{DaemonProcess, TEST_CONFIG};

/// `nobody` on Debian: uid and gid 65534, in no group but `nogroup`.
const NOBODY: u32 = 65534;
/// Set in the child: the daemon's socket.
const SOCKET_VAR: &str = "SHADOWCOPY_HOSTILE_CALLER_SOCKET";
/// Set in the child: the snapshot id its admin calls aim at.
const SNAPSHOT_VAR: &str = "SHADOWCOPY_HOSTILE_CALLER_SNAPSHOT";
/// Set in the child: the WMD of the root writer whose identity it claims.
const WMD_VAR: &str = "SHADOWCOPY_HOSTILE_CALLER_WMD";

/// What the child finds in its environment, or `None` in the parent.
struct Child {
    socket: std::path::PathBuf,
    snapshot: String,
    root_wmd: WriterMetadata,
}

fn child() -> Option<Child> {
    let socket = std::env::var_os(SOCKET_VAR)?;
    Some(Child {
        socket: socket.into(),
        snapshot: std::env::var(SNAPSHOT_VAR).expect("the parent names the snapshot"),
        root_wmd: WriterMetadata::from_json(
            &std::env::var(WMD_VAR).expect("the parent names the WMD"),
        )
        .expect("the parent's WMD"),
    })
}

/// A daemon with `config`, a writer of root's with instance name `main`, and a persistent shadow
/// copy (NAS_ROLLBACK, writerless), so that refused deletions and registrations have something to
/// change; returns the daemon, the writer's handle and WMD, and the copy's id.
async fn daemon_with_state(
    name: &str,
    config: &str,
) -> (
    DaemonProcess,
    shadowcopy_writer_sdk::WriterHandle,
    WriterMetadata,
    String,
) {
    let daemon = DaemonProcess::start(Path::new(env!("CARGO_BIN_EXE_shadowcopyd")), name, config);
    let socket = daemon.socket();
    let mut wmd = small_wmd("root-writer", WriterClassId::new_random());
    wmd.identity.instance_name = Some("main".into());
    let writer = plain_writer(socket, wmd.clone(), Some("main")).await;
    let mut s = RawSession::open(socket).await.unwrap();
    s.ok(Call::InitializeForBackup(v1::InitializeForBackup {
        bcd_json: None,
    }))
    .await;
    s.ok(Call::SetContext(v1::SetContext {
        context: SnapshotContext::NasRollback.value(),
    }))
    .await;
    s.ok(Call::StartSnapshotSet(v1::StartSnapshotSet {})).await;
    let added = s
        .answer(Call::AddToSnapshotSet(v1::AddToSnapshotSet {
            volume: "/sim/ok/data".into(),
            provider_id: None,
        }))
        .await;
    let Some(v1::requester_response::Result::SnapshotAdded(added)) = added.result else {
        panic!("AddToSnapshotSet returns the snapshot id");
    };
    s.ok(Call::DoSnapshotSet(v1::DoSnapshotSet {})).await;
    s.close();
    (daemon, writer, wmd, added.snapshot_id)
}

/// Runs this test again as `nobody` and returns once it passed; its output is shown either way.
fn run_as_nobody(test: &str, socket: &Path, snapshot: &str, root_wmd: &WriterMetadata) {
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(SOCKET_VAR, socket)
        .env(SNAPSHOT_VAR, snapshot)
        .env(WMD_VAR, root_wmd.to_canonical_json())
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("the test binary runs as nobody");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    eprintln!(
        "--- {test} as nobody ---\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the calls as nobody did not go as expected: {}",
        text(&output.stderr)
    );
    assert!(
        text(&output.stdout).contains("1 passed"),
        "the child ran the test: {}",
        text(&output.stdout)
    );
}

/// `Hello` of every service answers every local user (docs/protocol.md §1.1).
async fn hello_answers(socket: &Path) {
    let hello = shadowcopy_protocol::hello_request("hostile-caller");
    let channel = raw::channel(socket).await;
    v1::requester_client::RequesterClient::new(channel.clone())
        .hello(hello.clone())
        .await
        .expect("Requester.Hello answers anyone");
    v1::writer_client::WriterClient::new(channel.clone())
        .hello(hello.clone())
        .await
        .expect("Writer.Hello answers anyone");
    v1::admin_client::AdminClient::new(channel)
        .hello(hello)
        .await
        .expect("Admin.Hello answers anyone");
}

/// Every admin call and a requester session, each as a caller who may not: E_ACCESSDENIED with
/// `mentions` in the message.
async fn requester_and_admin_refused(socket: &Path, snapshot: &str, mentions: &[&str]) {
    use v1::delete_snapshots_request::Target;
    fn refused<T: std::fmt::Debug>(
        result: Result<tonic::Response<T>, tonic::Status>,
        call: &str,
        mentions: &[&str],
    ) {
        let status = result.expect_err(call);
        assert_grpc_refused(&status, &codes::E_ACCESSDENIED, mentions, call);
    }
    let mut admin = raw::admin(socket).await;
    refused(
        admin
            .list_writers(v1::ListWritersRequest {
                include_metadata: true,
            })
            .await,
        "ListWriters",
        mentions,
    );
    refused(
        admin.list_providers(v1::ListProvidersRequest {}).await,
        "ListProviders",
        mentions,
    );
    refused(
        admin
            .list_snapshots(v1::ListSnapshotsRequest::default())
            .await,
        "ListSnapshots",
        mentions,
    );
    refused(
        admin
            .delete_snapshots(v1::DeleteSnapshotsRequest {
                target: Some(Target::All(v1::Empty {})),
                force: true,
            })
            .await,
        "DeleteSnapshots of all",
        mentions,
    );
    refused(
        admin
            .delete_snapshots(v1::DeleteSnapshotsRequest {
                target: Some(Target::SnapshotId(snapshot.into())),
                force: true,
            })
            .await,
        "DeleteSnapshots of one",
        mentions,
    );
    refused(
        admin
            .expose_snapshot(v1::ExposeSnapshotRequest {
                snapshot_id: snapshot.into(),
                expose_attribute: 0,
                path_from_root: String::new(),
                expose_name: String::new(),
            })
            .await,
        "ExposeSnapshot",
        mentions,
    );
    refused(
        admin
            .unexpose_snapshot(v1::UnexposeSnapshotRequest {
                snapshot_id: snapshot.into(),
            })
            .await,
        "UnexposeSnapshot",
        mentions,
    );
    refused(
        admin
            .revert_volume(v1::RevertVolumeRequest {
                snapshot_id: snapshot.into(),
                force_dismount: true,
            })
            .await,
        "RevertVolume",
        mentions,
    );
    refused(
        admin.get_status(v1::GetStatusRequest {}).await,
        "GetStatus",
        mentions,
    );
    let status = RawSession::open(socket)
        .await
        .err()
        .expect("the session is refused");
    assert_grpc_refused(
        &status,
        &codes::E_ACCESSDENIED,
        mentions,
        "Requester.Session",
    );
}

/// A registration as a caller who may not register writers: E_ACCESSDENIED, also when it claims
/// the identity of root's running writer.
async fn writer_refused(socket: &Path, root_wmd: &WriterMetadata, mentions: &[&str]) {
    let own = small_wmd("hostile", WriterClassId::new_random());
    let status = RawWriter::register(socket, register_message(own.to_canonical_json()))
        .await
        .err()
        .expect("the registration is refused");
    assert_grpc_refused(&status, &codes::E_ACCESSDENIED, mentions, "Writer.Connect");
    let mut register = register_message(root_wmd.to_canonical_json());
    register.instance_name = root_wmd.identity.instance_name.clone();
    let status = RawWriter::register(socket, register)
        .await
        .err()
        .expect("the registration is refused");
    assert_grpc_refused(
        &status,
        &codes::E_ACCESSDENIED,
        mentions,
        "Writer.Connect with root's writer's identity",
    );
}

/// An account that is not root, not in the backup group and has no role may call only `Hello`:
/// every admin call, a requester session and a writer registration are refused with
/// E_ACCESSDENIED naming the account and what would let it in; nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_group_or_role_is_refused_everything_but_hello() {
    const TEST: &str = "an_account_without_group_or_role_is_refused_everything_but_hello";
    if let Some(child) = child() {
        hello_answers(&child.socket).await;
        let mentions = ["uid 65534", "backup_group", "requester role"];
        requester_and_admin_refused(&child.socket, &child.snapshot, &mentions).await;
        writer_refused(
            &child.socket,
            &child.root_wmd,
            &["uid 65534", "writer role"],
        )
        .await;
        return;
    }
    let (daemon, _writer, wmd, snapshot) = daemon_with_state("callers-outsider", TEST_CONFIG).await;
    let before = settled(daemon.socket()).await;
    assert_eq!(before.snapshots, std::slice::from_ref(&snapshot));
    run_as_nobody(TEST, daemon.socket(), &snapshot, &wmd);
    assert_unchanged(
        daemon.socket(),
        &before,
        "calls of an account without a role",
    )
    .await;
    raw::assert_no_panic(&daemon);
}

/// A member of the backup group whom `access_control` denies is refused everything but `Hello`:
/// the deny wins over the group (SEC-2), and the message says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_member_of_the_backup_group_is_refused_everything_but_hello() {
    const TEST: &str = "a_denied_member_of_the_backup_group_is_refused_everything_but_hello";
    if let Some(child) = child() {
        hello_answers(&child.socket).await;
        let mentions = ["uid 65534", "deny"];
        requester_and_admin_refused(&child.socket, &child.snapshot, &mentions).await;
        writer_refused(&child.socket, &child.root_wmd, &mentions).await;
        return;
    }
    let config = TEST_CONFIG.replacen("[service]\n", "[service]\nbackup_group = \"nogroup\"\n", 1)
        + "[access_control]\nnobody = \"deny\"\n";
    let (daemon, _writer, wmd, snapshot) = daemon_with_state("callers-denied", &config).await;
    let before = settled(daemon.socket()).await;
    run_as_nobody(TEST, daemon.socket(), &snapshot, &wmd);
    assert_unchanged(daemon.socket(), &before, "calls of a denied account").await;
    raw::assert_no_panic(&daemon);
}

/// An account granted only the writer role registers writers of its own, but cannot take the
/// class and instance name of root's running writer (VSS_E_WRITER_ALREADY_SUBSCRIBED), and every
/// requester and admin call is refused with E_ACCESSDENIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_the_writer_role_is_a_writer_only_and_only_itself() {
    const TEST: &str = "an_account_with_the_writer_role_is_a_writer_only_and_only_itself";
    if let Some(child) = child() {
        let own = small_wmd("granted", WriterClassId::new_random());
        let writer = RawWriter::register(&child.socket, register_message(own.to_canonical_json()))
            .await
            .expect("an account with the writer role registers a writer");
        let mut register = register_message(child.root_wmd.to_canonical_json());
        register.instance_name = child.root_wmd.identity.instance_name.clone();
        let status = RawWriter::register(&child.socket, register)
            .await
            .err()
            .expect("root's writer's identity is taken");
        assert_grpc_refused(
            &status,
            &codes::VSS_E_WRITER_ALREADY_SUBSCRIBED,
            &["main"],
            "Writer.Connect with root's writer's class and instance name",
        );
        requester_and_admin_refused(
            &child.socket,
            &child.snapshot,
            &["uid 65534", "requester role"],
        )
        .await;
        drop(writer);
        return;
    }
    let config = format!("{TEST_CONFIG}[access_control]\nnobody = \"writer\"\n");
    let (daemon, _writer, wmd, snapshot) = daemon_with_state("callers-writer", &config).await;
    let before = settled(daemon.socket()).await;
    run_as_nobody(TEST, daemon.socket(), &snapshot, &wmd);
    // The child's own writer went with its stream.
    assert_unchanged(
        daemon.socket(),
        &before,
        "calls of an account with the writer role",
    )
    .await;
    raw::assert_no_panic(&daemon);
}

/// SEC-2: `access_control` can deny root too; root then gets E_ACCESSDENIED for every call but
/// `Hello`, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_denied_by_access_control_is_refused_everything_but_hello() {
    let config = format!("{TEST_CONFIG}[access_control]\nroot = \"deny\"\n");
    let daemon = DaemonProcess::start(
        Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        "callers-root-denied",
        &config,
    );
    let socket = daemon.socket();
    hello_answers(socket).await;
    let snapshot = shadowcopy_metadata::Guid::new_v4().to_string();
    let mentions = ["`root` (uid 0)", "deny"];
    requester_and_admin_refused(socket, &snapshot, &mentions).await;
    let wmd = small_wmd("root-writer", WriterClassId::new_random());
    writer_refused(socket, &wmd, &mentions).await;
    raw::assert_no_panic(&daemon);
}
