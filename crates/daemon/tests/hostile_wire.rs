//! Hostile input over the wire against a real `shadowcopyd` (issue 7): malformed, oversized and
//! out-of-order protocol messages, and writers that claim another writer's identity. Each case
//! gets a clear error (a VSS code with a message that names the field, step or object, or a
//! refused call with its gRPC and VSS code), the daemon keeps serving, and its observable state
//! (writers, shadow copies, set in creation, sessions) is checked to be what it was before.
//!
//! The clients are raw tonic clients built from the generated protocol types (`raw`), so the
//! tests send what the requester library and the writer SDK would refuse to build. Every test
//! starts its own daemon with `TEST_CONFIG` (simulated providers); the guard kills it on failure.
//! Documents from a property-based generator are in `hostile_props.rs`, callers outside the
//! allowed users in `hostile_callers.rs`; docs/RELIABILITY.md ("Hostile input") lists every class.

mod raw;

use std::path::Path;

use raw::{
    RawSession, RawWriter, assert_grpc_refused, assert_refused, assert_unchanged, plain_writer,
    register_message, settled, small_wmd,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::wmd::WriterMetadata;
use shadowcopy_metadata::{Guid, WriterClassId};
use shadowcopy_protocol::v1::{self, requester_request::Call};
use shadowcopy_test_support::{DaemonProcess, TEST_CONFIG};

fn daemon(name: &str) -> DaemonProcess {
    DaemonProcess::start(
        Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        name,
        TEST_CONFIG,
    )
}

/// A component key with every field as given.
fn key(instance: &str, class: &str, logical_path: &str, name: &str) -> Option<v1::ComponentKey> {
    Some(v1::ComponentKey {
        writer_instance_id: instance.into(),
        writer_class_id: class.into(),
        component_type: 0,
        logical_path: logical_path.into(),
        name: name.into(),
    })
}

/// JSON nested `depth` arrays deep: what a parser without a recursion limit would overflow its
/// stack on.
fn deeply_nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Malformed requester calls: no call, unreadable, invalid and deeply nested documents, unknown
/// enumeration values, malformed GUIDs, empty required fields, NUL bytes and invalid logical paths.
/// Each is answered in-band with the code of docs/protocol.md §4.5 and a message naming the field;
/// none ends the session, and afterwards the daemon's state is what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requester_calls_are_refused_in_band_and_change_nothing() {
    let daemon = daemon("hostile-malformed");
    let socket = daemon.socket();
    let class = WriterClassId::new_random();
    let _writer = plain_writer(socket, small_wmd("victim", class), None).await;
    let before = settled(socket).await;

    let mut s = RawSession::open(socket).await.expect("the session opens");
    // A request that carries no call.
    let answer = s.send(None).await.unwrap().unwrap();
    assert_refused(
        &answer.status.unwrap(),
        &codes::E_NOTIMPL,
        &["no call"],
        "a request without a call (or with one of a later minor version)",
    );
    // Documents that cannot be read, or break the schema.
    for (bcd, code, what) in [
        ("not json", &codes::VSS_E_CORRUPT_XML_DOCUMENT, "not JSON"),
        ("{", &codes::VSS_E_CORRUPT_XML_DOCUMENT, "truncated JSON"),
        ("[]", &codes::VSS_E_CORRUPT_XML_DOCUMENT, "a JSON array"),
        (
            "{\"schema_version\": 99}",
            &codes::VSS_E_INVALID_XML_DOCUMENT,
            "another schema version",
        ),
        (
            "{\"schema_version\": 1, \"surprise\": true}",
            &codes::VSS_E_CORRUPT_XML_DOCUMENT,
            "an unknown field",
        ),
    ] {
        let status = s
            .call(Call::InitializeForBackup(v1::InitializeForBackup {
                bcd_json: Some(bcd.into()),
            }))
            .await;
        assert_refused(
            &status,
            code,
            &[],
            &format!("InitializeForBackup with {what}"),
        );
    }
    // Nesting at the top, inside an unknown field and inside a known one: the parser must stop
    // at its depth limit, never overflow its stack.
    for (bcd, what) in [
        (deeply_nested(100_000), "a BCD nested 100,000 arrays deep"),
        (
            format!(
                "{{\"schema_version\":1,\"extra\":{}}}",
                deeply_nested(100_000)
            ),
            "100,000 arrays deep in an unknown field",
        ),
        (
            format!(
                "{{\"schema_version\":1,\"writers\":[{{\"class_id\":{}}}]}}",
                "{\"a\":".repeat(100_000) + &"}".repeat(100_000)
            ),
            "100,000 objects deep in a writer's class id",
        ),
    ] {
        let status = s
            .call(Call::InitializeForBackup(v1::InitializeForBackup {
                bcd_json: Some(bcd),
            }))
            .await;
        assert_refused(&status, &codes::VSS_E_CORRUPT_XML_DOCUMENT, &[], what);
    }
    s.ok(Call::InitializeForBackup(v1::InitializeForBackup {
        bcd_json: None,
    }))
    .await;

    // Unknown enumeration values.
    let status = s
        .call(Call::SetContext(v1::SetContext {
            context: 0xDEAD_BEEF,
        }))
        .await;
    assert_refused(
        &status,
        &codes::E_INVALIDARG,
        &["context", "3735928559"],
        "context 0xDEADBEEF",
    );
    let status = s
        .call(Call::SetBackupState(v1::SetBackupState {
            component_mode: true,
            bootable_system_state: false,
            backup_type: 77,
            partial_file_support: false,
        }))
        .await;
    assert_refused(
        &status,
        &codes::E_INVALIDARG,
        &["backup_type", "77"],
        "backup type 77",
    );
    // Malformed and missing writer ids.
    let status = s
        .call(Call::SetWriterEnabled(v1::SetWriterEnabled {
            writer: Some(v1::set_writer_enabled::Writer::WriterClassId(
                "not-a-guid".into(),
            )),
            enabled: false,
        }))
        .await;
    assert_refused(
        &status,
        &codes::E_INVALIDARG,
        &["writer_class_id"],
        "a malformed writer class id",
    );
    let status = s
        .call(Call::SetWriterEnabled(v1::SetWriterEnabled {
            writer: None,
            enabled: false,
        }))
        .await;
    assert_refused(
        &status,
        &codes::E_INVALIDARG,
        &[],
        "SetWriterEnabled naming no writer",
    );
    s.ok(Call::SetBackupState(v1::SetBackupState {
        component_mode: true,
        bootable_system_state: false,
        backup_type: 1,
        partial_file_support: false,
    }))
    .await;
    let gathered = s
        .answer(Call::GatherWriterMetadata(v1::GatherWriterMetadata {}))
        .await;
    let Some(v1::requester_response::Result::WriterMetadata(list)) = gathered.result else {
        panic!("GatherWriterMetadata returns the writers");
    };
    let instance = list
        .writers
        .iter()
        .map(|w| w.writer_instance_id.clone())
        .next()
        .expect("the victim answered Identify");

    // Component keys: missing, malformed, and naming nothing (NUL, invalid logical paths).
    let status = s
        .call(Call::AddComponent(v1::AddComponent { component: None }))
        .await;
    assert_refused(
        &status,
        &codes::E_INVALIDARG,
        &["component"],
        "AddComponent without a key",
    );
    let status = s
        .call(Call::AddComponent(v1::AddComponent {
            component: key("{zzzz}", "", "", "data"),
        }))
        .await;
    assert_refused(
        &status,
        &codes::E_INVALIDARG,
        &["writer_instance_id"],
        "a malformed writer instance id",
    );
    for (logical_path, name) in [
        ("", "da\0ta"),
        ("\0", "data"),
        ("\\\\", "data"),
        ("..\\..", "data"),
        ("", ""),
        ("", &"x".repeat(100_000)),
    ] {
        let status = s
            .call(Call::AddComponent(v1::AddComponent {
                component: key(&instance, "", logical_path, name),
            }))
            .await;
        assert!(
            status.code == codes::VSS_E_OBJECT_NOT_FOUND.value
                || status.code == codes::E_INVALIDARG.value,
            "AddComponent {logical_path:?} {:?}: {status}",
            name.get(..20).unwrap_or(name)
        );
        assert!(!status.message.is_empty() && !status.hint.is_empty());
    }
    let status = s
        .call(Call::SetBackupOptions(v1::SetBackupOptions {
            component: key(&instance, "", "", "data"),
            options: "\0".into(),
        }))
        .await;
    assert!(
        !status.is_success(),
        "options for a component never added: {status}"
    );

    // Volumes and ids of the set.
    let status = s
        .call(Call::GetSnapshotProperties(v1::GetSnapshotProperties {
            snapshot_id: "garbage".into(),
        }))
        .await;
    assert_refused(
        &status,
        &codes::E_INVALIDARG,
        &["snapshot_id"],
        "a malformed snapshot id",
    );
    s.ok(Call::StartSnapshotSet(v1::StartSnapshotSet {})).await;
    // A volume is an absolute mount point with one spelling: anything else would let one volume
    // count as several (a volume added twice, LIMIT-2).
    for volume in [
        "",
        "relative/path",
        "/sim/ok/\0nul",
        "/sim/ok/../../etc",
        "/sim/ok/./v",
        "/sim//ok/v",
    ] {
        for call in [
            Call::AddToSnapshotSet(v1::AddToSnapshotSet {
                volume: volume.into(),
                provider_id: None,
            }),
            Call::IsVolumeSupported(v1::IsVolumeSupported {
                volume: volume.into(),
                provider_id: None,
            }),
        ] {
            let status = s.call(call).await;
            assert_refused(
                &status,
                &codes::E_INVALIDARG,
                &["volume"],
                &format!("volume {volume:?}"),
            );
        }
    }
    let status = s
        .call(Call::AddToSnapshotSet(v1::AddToSnapshotSet {
            volume: "/sim/ok/v".into(),
            provider_id: Some("nope".into()),
        }))
        .await;
    assert_refused(
        &status,
        &codes::E_INVALIDARG,
        &["provider_id"],
        "a malformed provider id",
    );
    let status = s
        .call(Call::AddToSnapshotSet(v1::AddToSnapshotSet {
            volume: "/sim/ok/v".into(),
            provider_id: Some(Guid::new_v4().to_string()),
        }))
        .await;
    assert_refused(
        &status,
        &codes::VSS_E_PROVIDER_NOT_REGISTERED,
        &[],
        "a provider that is not registered",
    );
    let status = s
        .call(Call::GetSnapshotProperties(v1::GetSnapshotProperties {
            snapshot_id: Guid::new_v4().to_string(),
        }))
        .await;
    assert!(!status.is_success(), "an unknown snapshot id: {status}");
    // A malformed id of 8 MiB of NUL bytes: the message quotes it, cut to a readable size, and
    // the answer fits in a message.
    let status = s
        .call(Call::GetSnapshotProperties(v1::GetSnapshotProperties {
            snapshot_id: "\0".repeat(8 << 20),
        }))
        .await;
    assert_refused(
        &status,
        &codes::E_INVALIDARG,
        &["snapshot_id", "bytes left out"],
        "a snapshot id of 8 MiB",
    );
    // Restore calls in a backup session.
    let status = s
        .call(Call::SetFileRestoreStatus(v1::SetFileRestoreStatus {
            component: key(&instance, "", "", "data"),
            status: 99,
        }))
        .await;
    assert!(
        !status.is_success(),
        "a restore call in a backup session: {status}"
    );
    s.close();
    assert_unchanged(socket, &before, "malformed requester calls").await;
    raw::assert_no_panic(&daemon);
}

/// Malformed admin calls: malformed ids, unknown enumeration values, empty required fields and
/// NUL bytes are refused in-band with E_INVALIDARG naming the field (docs/protocol.md §6), unknown
/// ids with VSS_E_OBJECT_NOT_FOUND, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_admin_calls_are_refused_in_band_and_change_nothing() {
    use v1::delete_snapshots_request::Target;
    let daemon = daemon("hostile-admin");
    let socket = daemon.socket();
    let before = settled(socket).await;
    let mut admin = raw::admin(socket).await;
    let invalid = &codes::E_INVALIDARG;

    for (filter, field) in [
        (
            v1::ListSnapshotsRequest {
                set_id: "not-a-guid".into(),
                ..Default::default()
            },
            "set_id",
        ),
        (
            v1::ListSnapshotsRequest {
                snapshot_id: "\0".into(),
                ..Default::default()
            },
            "snapshot_id",
        ),
        (
            v1::ListSnapshotsRequest {
                context: Some(0xDEAD),
                ..Default::default()
            },
            "context",
        ),
    ] {
        let reply = admin.list_snapshots(filter).await.unwrap().into_inner();
        assert_refused(
            &reply.status.unwrap(),
            invalid,
            &[field],
            &format!("ListSnapshots with a malformed {field}"),
        );
        assert!(reply.snapshots.is_empty());
    }
    // Ids are read in every form docs/protocol.md §3 allows: an unknown set in upper case and
    // braces is a valid filter that matches nothing.
    let braced = format!("{{{}}}", Guid::new_v4().to_string().to_uppercase());
    let reply = admin
        .list_snapshots(v1::ListSnapshotsRequest {
            set_id: braced,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.status.unwrap().is_success());

    for (target, code, what) in [
        (None, invalid, "DeleteSnapshots without a target"),
        (
            Some(Target::SnapshotId("x".into())),
            invalid,
            "DeleteSnapshots with a malformed snapshot id",
        ),
        (
            Some(Target::SetId("{".into())),
            invalid,
            "DeleteSnapshots with a malformed set id",
        ),
        (
            Some(Target::OldestOfVolume(String::new())),
            invalid,
            "DeleteSnapshots of the oldest copy of no volume",
        ),
        (
            Some(Target::SnapshotId(Guid::new_v4().to_string())),
            &codes::VSS_E_OBJECT_NOT_FOUND,
            "DeleteSnapshots of an unknown snapshot",
        ),
        (
            Some(Target::OldestOfVolume("/sim/ok/\0".into())),
            &codes::VSS_E_OBJECT_NOT_FOUND,
            "DeleteSnapshots of the oldest copy of a volume with none",
        ),
    ] {
        let reply = admin
            .delete_snapshots(v1::DeleteSnapshotsRequest {
                target,
                force: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_refused(&reply.status.unwrap(), code, &[], what);
        assert_eq!(reply.deleted_count, 0, "{what} deleted nothing");
    }
    let status = admin
        .expose_snapshot(v1::ExposeSnapshotRequest {
            snapshot_id: "x".into(),
            expose_attribute: 99,
            path_from_root: "\0".into(),
            expose_name: "../../etc".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_refused(
        &status,
        invalid,
        &["snapshot_id"],
        "ExposeSnapshot of a malformed id",
    );
    let status = admin
        .expose_snapshot(v1::ExposeSnapshotRequest {
            snapshot_id: Guid::new_v4().to_string(),
            expose_attribute: 99,
            path_from_root: String::new(),
            expose_name: "../../etc".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert!(
        !status.is_success(),
        "ExposeSnapshot of an unknown copy: {status}"
    );
    let status = admin
        .unexpose_snapshot(v1::UnexposeSnapshotRequest {
            snapshot_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_refused(
        &status,
        invalid,
        &["snapshot_id"],
        "UnexposeSnapshot of an empty id",
    );
    let status = admin
        .revert_volume(v1::RevertVolumeRequest {
            snapshot_id: "../../".into(),
            force_dismount: true,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_refused(
        &status,
        invalid,
        &["snapshot_id"],
        "RevertVolume to a malformed id",
    );
    let status = admin
        .revert_volume(v1::RevertVolumeRequest {
            snapshot_id: Guid::new_v4().to_string(),
            force_dismount: true,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_refused(
        &status,
        &codes::VSS_E_OBJECT_NOT_FOUND,
        &[],
        "RevertVolume to an unknown copy",
    );
    assert_unchanged(socket, &before, "malformed admin calls").await;
    raw::assert_no_panic(&daemon);
}

/// Malformed writer registrations end the stream with the gRPC and VSS codes of
/// docs/protocol.md §5.6 and register nothing: a first message that is not Register, WMDs that
/// cannot be read or break the rules, unknown application levels and subscription bits, and an
/// instance name that differs from the WMD's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_writer_registrations_are_refused_and_register_nothing() {
    use v1::writer_message::Message;
    let daemon = daemon("hostile-register");
    let socket = daemon.socket();
    let class = WriterClassId::new_random();
    let _writer = plain_writer(socket, small_wmd("victim", class), None).await;
    let before = settled(socket).await;
    let good = small_wmd("hostile", WriterClassId::new_random());

    let refused = |result: Result<RawWriter, tonic::Status>| match result {
        Ok(writer) => panic!("registered as {}", writer.instance_id),
        Err(status) => status,
    };
    let status = refused(RawWriter::connect_with(socket, None).await);
    assert_grpc_refused(
        &status,
        &codes::VSS_E_BAD_STATE,
        &["Register"],
        "an empty first message",
    );
    let status = refused(
        RawWriter::connect_with(
            socket,
            Some(Message::EventResult(v1::EventResult {
                event_id: 1,
                success: true,
                ..Default::default()
            })),
        )
        .await,
    );
    assert_grpc_refused(
        &status,
        &codes::VSS_E_BAD_STATE,
        &["Register"],
        "an EventResult first",
    );

    let mut unknown_field: serde_json::Value =
        serde_json::from_str(&good.to_canonical_json()).unwrap();
    unknown_field["identity"]["extra"] = serde_json::Value::Bool(true);
    let mut nul_name = good.clone();
    nul_name.identity.writer_name = "evil\0name".into();
    let mut bad_path = good.clone();
    bad_path.components[0].logical_path = "\\\\..\\".into();
    for (wmd_json, code, what) in [
        (
            String::new(),
            &codes::VSS_E_CORRUPT_XML_DOCUMENT,
            "an empty WMD",
        ),
        (
            "{".into(),
            &codes::VSS_E_CORRUPT_XML_DOCUMENT,
            "truncated JSON",
        ),
        (
            deeply_nested(100_000),
            &codes::VSS_E_CORRUPT_XML_DOCUMENT,
            "JSON nested 100,000 arrays deep",
        ),
        (
            unknown_field.to_string(),
            &codes::VSS_E_CORRUPT_XML_DOCUMENT,
            "an unknown field",
        ),
        (
            good.to_canonical_json()
                .replace("\"schema_version\":1", "\"schema_version\":2"),
            &codes::VSS_E_INVALID_XML_DOCUMENT,
            "another schema version",
        ),
        (
            serde_json::to_string(&nul_name).unwrap(),
            &codes::VSS_E_INVALID_XML_DOCUMENT,
            "a writer name with a NUL byte",
        ),
        (
            serde_json::to_string(&bad_path).unwrap(),
            &codes::VSS_E_INVALID_XML_DOCUMENT,
            "an invalid logical path",
        ),
    ] {
        let status = refused(RawWriter::register(socket, register_message(wmd_json)).await);
        assert_grpc_refused(&status, code, &["WMD"], &format!("Register with {what}"));
    }
    let mut register = register_message(good.to_canonical_json());
    register.application_level = 99;
    let status = refused(RawWriter::register(socket, register).await);
    assert_grpc_refused(
        &status,
        &codes::E_INVALIDARG,
        &["application_level"],
        "application level 99",
    );
    let mut register = register_message(good.to_canonical_json());
    register.subscribe_mask = 0xF000;
    let status = refused(RawWriter::register(socket, register).await);
    assert_grpc_refused(
        &status,
        &codes::E_INVALIDARG,
        &["subscribe_mask"],
        "unknown subscription bits",
    );
    // ROLE-7: the persistent instance name in Register must be the WMD's.
    let mut named = good.clone();
    named.identity.instance_name = Some("alpha".into());
    let mut register = register_message(named.to_canonical_json());
    register.instance_name = Some("beta".into());
    let status = refused(RawWriter::register(socket, register).await);
    assert_grpc_refused(
        &status,
        &codes::VSS_E_INVALID_XML_DOCUMENT,
        &["alpha", "beta"],
        "an instance name that differs from the WMD's",
    );
    assert_unchanged(socket, &before, "malformed writer registrations").await;
    raw::assert_no_panic(&daemon);
}

/// The JSON of a BCD for restore whose one writer has `count` components, built as text (the
/// document types would refuse, or take long, to build the damaged ones); `record` gives the
/// logical path and name of component `i`.
fn big_bcd(
    class: WriterClassId,
    count: usize,
    record: impl Fn(usize) -> (String, String),
) -> String {
    let components: Vec<String> = (0..count)
        .map(|i| {
            let (logical_path, name) = record(i);
            serde_json::json!({
                "component_type": "FILEGROUP",
                "logical_path": logical_path,
                "name": name,
            })
            .to_string()
        })
        .collect();
    format!(
        "{{\"schema_version\":1,\"backup_state\":{{\"component_mode\":true,\"bootable_system_state\":false,\
         \"backup_type\":\"FULL\",\"partial_file_support\":false}},\"context\":\"BACKUP\",\"writers\":[{{\
         \"class_id\":\"{class}\",\"instance_id\":\"{}\",\"components\":[{}]}}]}}",
        Guid::new_v4(),
        components.join(",")
    )
}

/// A valid WMD of `name` of about `size` bytes: its one component has a caption that long.
fn big_wmd(name: &str, size: usize) -> WriterMetadata {
    let mut wmd = small_wmd(name, WriterClassId::new_random());
    wmd.components[0].caption = Some("p".repeat(size));
    wmd
}

/// Messages larger than `MAX_MESSAGE_SIZE` are refused with OUT_OF_RANGE naming the size and the
/// limit, on unary calls, on a requester session and on a writer stream, and the daemon keeps
/// serving. Large documents within the limit (a WMD of several MiB, a BCD of 100,000 components)
/// are read; answers that would exceed the limit (the WMDs of several large writers, the
/// message of a document that breaks 200,000 rules) come as an in-band error naming the size,
/// never as a broken stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_messages_are_refused_and_the_daemon_keeps_serving() {
    use shadowcopy_protocol::MAX_MESSAGE_SIZE;
    let daemon = daemon("hostile-oversized");
    let socket = daemon.socket();
    let class = WriterClassId::new_random();
    let wmd = small_wmd("victim", class);
    let _writer = plain_writer(socket, wmd.clone(), None).await;
    let before = settled(socket).await;
    let too_large = |status: &tonic::Status, what: &str| {
        eprintln!("{what}: {:?} {}", status.code(), status.message());
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{what}: {status:?}");
        assert!(
            status.message().contains(&MAX_MESSAGE_SIZE.to_string()),
            "{what}: the refusal names the limit: {status:?}"
        );
    };

    let mut admin = raw::admin(socket).await;
    let status = admin
        .list_snapshots(v1::ListSnapshotsRequest {
            volume: "x".repeat(MAX_MESSAGE_SIZE + 1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    too_large(&status, "an admin call over the limit");

    let mut session = RawSession::open(socket).await.unwrap();
    let status = session
        .send(Some(Call::InitializeForRestore(v1::InitializeForRestore {
            bcd_json: "x".repeat(MAX_MESSAGE_SIZE + 1),
            stored_wmd_json: vec![],
        })))
        .await
        .unwrap_err();
    too_large(&status, "a requester call over the limit");
    drop(session);

    let status = RawWriter::register(socket, register_message("y".repeat(MAX_MESSAGE_SIZE + 1)))
        .await
        .err()
        .expect("the registration is refused");
    too_large(&status, "a Register over the limit");
    let mut writer = RawWriter::register(
        socket,
        register_message(small_wmd("w", WriterClassId::new_random()).to_canonical_json()),
    )
    .await
    .unwrap();
    writer.send(Some(v1::writer_message::Message::EventResult(
        v1::EventResult {
            event_id: 1,
            application_message: "z".repeat(MAX_MESSAGE_SIZE + 1),
            ..Default::default()
        },
    )));
    let status = writer.next().await.unwrap_err();
    too_large(&status, "an EventResult over the limit");
    assert_unchanged(socket, &before, "messages over the limit").await;

    // A BCD of 100,000 components is read; one whose 100,000 components break 200,000 rules is
    // refused with a message cut to a readable size.
    let mut session = RawSession::open(socket).await.unwrap();
    session
        .ok(Call::InitializeForRestore(v1::InitializeForRestore {
            bcd_json: big_bcd(class, 100_000, |i| (String::new(), format!("c{i}"))),
            stored_wmd_json: vec![wmd.to_canonical_json()],
        }))
        .await;
    drop(session);
    let mut session = RawSession::open(socket).await.unwrap();
    let status = session
        .call(Call::InitializeForRestore(v1::InitializeForRestore {
            bcd_json: big_bcd(class, 100_000, |_| ("\\\\bad\\".into(), "dup".into())),
            stored_wmd_json: vec![wmd.to_canonical_json()],
        }))
        .await;
    assert_refused(
        &status,
        &codes::VSS_E_INVALID_XML_DOCUMENT,
        &["components[0].logical_path", "bytes left out"],
        "a BCD whose 100,000 components break 200,000 rules",
    );
    assert!(status.message.len() < 16 * 1024, "the message is cut");
    drop(session);

    // Two writers with WMDs of about 8 MiB each: each registers, but together they do not fit
    // in one answer.
    let (first, second) = (big_wmd("big1", 8 << 20), big_wmd("big2", 8 << 20));
    assert!(first.to_canonical_json().len() > MAX_MESSAGE_SIZE / 2);
    let mut big1 = RawWriter::register(socket, register_message(first.to_canonical_json()))
        .await
        .expect("a WMD of 8 MiB registers");
    let mut big2 = RawWriter::register(socket, register_message(second.to_canonical_json()))
        .await
        .expect("a second WMD of 8 MiB registers");
    let mut session = RawSession::open(socket).await.unwrap();
    session
        .ok(Call::InitializeForBackup(v1::InitializeForBackup {
            bcd_json: None,
        }))
        .await;
    let identify = async {
        for (writer, wmd) in [(&mut big1, &first), (&mut big2, &second)] {
            let event = writer.next().await.unwrap().expect("Identify");
            writer.answer(event.event_id, Some(wmd));
        }
    };
    let (status, ()) = tokio::join!(
        session.call(Call::GatherWriterMetadata(v1::GatherWriterMetadata {})),
        identify
    );
    assert_refused(
        &status,
        &codes::E_OUTOFMEMORY,
        &[
            "GatherWriterMetadata",
            "MAX_MESSAGE_SIZE",
            "SetWriterEnabled",
        ],
        "GatherWriterMetadata of two 8 MiB WMDs",
    );
    // The session is still there to say so: GetBackupComponents answers.
    session
        .ok(Call::GetBackupComponents(v1::GetBackupComponents {}))
        .await;
    let reply = admin
        .list_writers(v1::ListWritersRequest {
            include_metadata: true,
        })
        .await
        .expect("ListWriters answers")
        .into_inner();
    assert_refused(
        &reply.status.unwrap(),
        &codes::E_OUTOFMEMORY,
        &["MAX_MESSAGE_SIZE"],
        "ListWriters with two 8 MiB WMDs",
    );
    assert_eq!(
        reply.writers.len(),
        3,
        "the writers are listed without their WMDs"
    );
    drop((session, big1, big2));
    assert_unchanged(socket, &before, "large documents").await;
    raw::assert_no_panic(&daemon);
}

/// Every call of both sessions with valid arguments for the writer `instance` of `class` (its
/// component `data`), by name, so that a refusal can only be about the order.
fn every_call(instance: &str, class: &str) -> Vec<(&'static str, Call)> {
    let component = || key(instance, class, "", "data");
    let file_set = || {
        Some(v1::FileSet {
            path: "/sim/ok/victim".into(),
            filespec: "*".into(),
            recursive: true,
        })
    };
    vec![
        (
            "InitializeForBackup",
            Call::InitializeForBackup(v1::InitializeForBackup { bcd_json: None }),
        ),
        (
            "SetContext",
            Call::SetContext(v1::SetContext { context: 0 }),
        ),
        (
            "SetBackupState",
            Call::SetBackupState(v1::SetBackupState {
                component_mode: true,
                bootable_system_state: false,
                backup_type: 1,
                partial_file_support: false,
            }),
        ),
        (
            "SetWriterEnabled",
            Call::SetWriterEnabled(v1::SetWriterEnabled {
                writer: Some(v1::set_writer_enabled::Writer::WriterClassId(class.into())),
                enabled: true,
            }),
        ),
        (
            "GatherWriterMetadata",
            Call::GatherWriterMetadata(v1::GatherWriterMetadata {}),
        ),
        (
            "AddComponent",
            Call::AddComponent(v1::AddComponent {
                component: component(),
            }),
        ),
        (
            "SetBackupOptions",
            Call::SetBackupOptions(v1::SetBackupOptions {
                component: component(),
                options: "o".into(),
            }),
        ),
        (
            "SetPreviousBackupStamp",
            Call::SetPreviousBackupStamp(v1::SetPreviousBackupStamp {
                component: component(),
                previous_stamp: "s".into(),
            }),
        ),
        (
            "StartSnapshotSet",
            Call::StartSnapshotSet(v1::StartSnapshotSet {}),
        ),
        (
            "AddToSnapshotSet",
            Call::AddToSnapshotSet(v1::AddToSnapshotSet {
                volume: "/sim/ok/victim".into(),
                provider_id: None,
            }),
        ),
        (
            "PrepareForBackup",
            Call::PrepareForBackup(v1::PrepareForBackup {}),
        ),
        (
            "GatherWriterStatus",
            Call::GatherWriterStatus(v1::GatherWriterStatus {}),
        ),
        ("DoSnapshotSet", Call::DoSnapshotSet(v1::DoSnapshotSet {})),
        (
            "SetBackupSucceeded",
            Call::SetBackupSucceeded(v1::SetBackupSucceeded {
                component: component(),
                succeeded: true,
            }),
        ),
        (
            "BackupComplete",
            Call::BackupComplete(v1::BackupComplete {}),
        ),
        ("AbortBackup", Call::AbortBackup(v1::AbortBackup {})),
        (
            "GetBackupComponents",
            Call::GetBackupComponents(v1::GetBackupComponents {}),
        ),
        (
            "InitializeForRestore",
            Call::InitializeForRestore(v1::InitializeForRestore {
                bcd_json: "{}".into(),
                stored_wmd_json: vec![],
            }),
        ),
        (
            "SetSelectedForRestore",
            Call::SetSelectedForRestore(v1::SetSelectedForRestore {
                component: component(),
                selected: true,
                target_instance_name: None,
            }),
        ),
        (
            "AddRestoreSubcomponent",
            Call::AddRestoreSubcomponent(v1::AddRestoreSubcomponent {
                component: component(),
                subcomponent_logical_path: "data".into(),
                subcomponent_name: "sub".into(),
                repair: false,
            }),
        ),
        (
            "SetRestoreOptions",
            Call::SetRestoreOptions(v1::SetRestoreOptions {
                component: component(),
                options: "o".into(),
            }),
        ),
        (
            "SetAdditionalRestores",
            Call::SetAdditionalRestores(v1::SetAdditionalRestores {
                component: component(),
                additional_restores: false,
            }),
        ),
        (
            "SetRestoreState",
            Call::SetRestoreState(v1::SetRestoreState { restore_type: 1 }),
        ),
        (
            "SetRestoreExtensions",
            Call::SetRestoreExtensions(v1::SetRestoreExtensions {
                component: component(),
                authoritative: false,
                rollforward_type: 0,
                rollforward_point: None,
                restore_name: None,
            }),
        ),
        ("PreRestore", Call::PreRestore(v1::PreRestore {})),
        (
            "SetFileRestoreStatus",
            Call::SetFileRestoreStatus(v1::SetFileRestoreStatus {
                component: component(),
                status: 1,
            }),
        ),
        (
            "AddAlternativeLocationMapping",
            Call::AddAlternativeLocationMapping(v1::AddAlternativeLocationMapping {
                component: component(),
                source: file_set(),
                destination: "/sim/ok/elsewhere".into(),
            }),
        ),
        (
            "AddNewTarget",
            Call::AddNewTarget(v1::AddNewTarget {
                component: component(),
                source: file_set(),
                alternate_path: "/sim/ok/new".into(),
            }),
        ),
        (
            "SetRangesFilePath",
            Call::SetRangesFilePath(v1::SetRangesFilePath {
                component: component(),
                path: "/sim/ok/victim".into(),
                filename: "f".into(),
                ranges_file: "/sim/ok/r".into(),
            }),
        ),
        ("PostRestore", Call::PostRestore(v1::PostRestore {})),
    ]
}

/// The call called `name` from [`every_call`].
fn the_call(calls: &[(&'static str, Call)], name: &str) -> Call {
    calls
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no call {name}"))
        .1
        .clone()
}

/// Sends each call of `names` and asserts VSS_E_BAD_STATE whose message contains `mentions`, or
/// the call's own step when `mentions` is empty.
async fn expect_bad_state(
    s: &mut RawSession,
    calls: &[(&'static str, Call)],
    names: &[&str],
    mentions: &[&str],
    when: &str,
) {
    for name in names {
        let status = s.call(the_call(calls, name)).await;
        assert_refused(
            &status,
            &codes::VSS_E_BAD_STATE,
            mentions,
            &format!("{name} {when}"),
        );
    }
}

/// The first instance id GatherWriterMetadata returned.
fn first_instance(answer: v1::RequesterResponse) -> (String, String) {
    let Some(v1::requester_response::Result::WriterMetadata(list)) = answer.result else {
        panic!("GatherWriterMetadata returns the writers");
    };
    let entry = list
        .writers
        .into_iter()
        .next()
        .expect("the victim answered Identify");
    (entry.writer_instance_id, entry.wmd_json)
}

/// Out-of-order backup calls (spec §3, docs/protocol.md §4.2): every call before the step it
/// needs, repeated calls, restore calls in a backup session, and every call after AbortBackup
/// are refused in-band with VSS_E_BAD_STATE naming the step; none ends the session, the backup
/// then completes, and after release nothing is left (no set in creation, no shadow copy).
/// AbortBackup itself is allowed at any point after InitializeForBackup, and again (BK-ABORT-2,
/// BK-ABORT-3), and SetWriterEnabled after GatherWriterMetadata is accepted with no effect
/// (BK-INIT-4), so they are not among the refused calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_backup_calls_are_bad_state_and_change_nothing() {
    let daemon = daemon("hostile-order-backup");
    let socket = daemon.socket();
    let class = WriterClassId::new_random();
    let _writer = plain_writer(socket, small_wmd("victim", class), None).await;
    let before = settled(socket).await;
    // The instance id is only known after GatherWriterMetadata; before it, any id does.
    let placeholder = every_call(&Guid::new_v4().to_string(), &class.to_string());
    let all: Vec<&str> = placeholder.iter().map(|(n, _)| *n).collect();

    // The first call of a session must initialize it; GatherWriterMetadata alone opens a
    // discovery session (BK-INIT-7), which is not out of order.
    let mut s = RawSession::open(socket).await.unwrap();
    let first: Vec<&str> = all
        .iter()
        .copied()
        .filter(|n| {
            ![
                "InitializeForBackup",
                "InitializeForRestore",
                "GatherWriterMetadata",
            ]
            .contains(n)
        })
        .collect();
    expect_bad_state(
        &mut s,
        &placeholder,
        &first,
        &["first call"],
        "as the first call",
    )
    .await;
    s.ok(the_call(&placeholder, "InitializeForBackup")).await;
    expect_bad_state(
        &mut s,
        &placeholder,
        &["InitializeForBackup", "InitializeForRestore"],
        &[],
        "after InitializeForBackup",
    )
    .await;
    // Restore calls are refused by kind.
    let restore_only = [
        "SetSelectedForRestore",
        "AddRestoreSubcomponent",
        "SetRestoreOptions",
        "SetAdditionalRestores",
        "SetRestoreState",
        "SetRestoreExtensions",
        "PreRestore",
        "SetFileRestoreStatus",
        "AddAlternativeLocationMapping",
        "AddNewTarget",
        "SetRangesFilePath",
        "PostRestore",
    ];
    expect_bad_state(
        &mut s,
        &placeholder,
        &restore_only,
        &["restore call"],
        "in a backup session",
    )
    .await;
    // B5 comes before B6, B9 and B10; B7 before B8 and B11; B11 before B12 and B13.
    expect_bad_state(
        &mut s,
        &placeholder,
        &[
            "AddComponent",
            "PrepareForBackup",
            "GatherWriterStatus",
            "AddToSnapshotSet",
            "DoSnapshotSet",
            "SetBackupSucceeded",
            "BackupComplete",
        ],
        &["not allowed now"],
        "before GatherWriterMetadata",
    )
    .await;
    // Options and stamps are edits of a component's record, which is not in the BCD yet.
    for name in ["SetBackupOptions", "SetPreviousBackupStamp"] {
        let status = s.call(the_call(&placeholder, name)).await;
        assert_refused(
            &status,
            &codes::VSS_E_OBJECT_NOT_FOUND,
            &["data"],
            &format!("{name} before AddComponent"),
        );
    }
    s.ok(the_call(&placeholder, "SetBackupState")).await;
    let gathered = s
        .answer(the_call(&placeholder, "GatherWriterMetadata"))
        .await;
    let (instance, _) = first_instance(gathered);
    let calls = every_call(&instance, &class.to_string());
    expect_bad_state(
        &mut s,
        &calls,
        &["GatherWriterMetadata"],
        &["gather_writer_metadata"],
        "a second time",
    )
    .await;
    s.ok(the_call(&calls, "AddComponent")).await;
    let status = s.call(the_call(&calls, "AddComponent")).await;
    assert_refused(
        &status,
        &codes::VSS_E_OBJECT_ALREADY_EXISTS,
        &["data"],
        "AddComponent a second time (SEL-4)",
    );
    expect_bad_state(
        &mut s,
        &calls,
        &["AddToSnapshotSet", "DoSnapshotSet"],
        &["must come first"],
        "before StartSnapshotSet",
    )
    .await;
    s.ok(the_call(&calls, "StartSnapshotSet")).await;
    expect_bad_state(&mut s, &calls, &["StartSnapshotSet"], &[], "a second time").await;
    s.ok(the_call(&calls, "AddToSnapshotSet")).await;
    expect_bad_state(
        &mut s,
        &calls,
        &["DoSnapshotSet", "BackupComplete", "SetBackupSucceeded"],
        &["not allowed now"],
        "before PrepareForBackup",
    )
    .await;
    s.ok(the_call(&calls, "PrepareForBackup")).await;
    expect_bad_state(
        &mut s,
        &calls,
        &[
            "PrepareForBackup",
            "AddComponent",
            "AddToSnapshotSet",
            "SetBackupState",
            "SetContext",
            "BackupComplete",
        ],
        &["not allowed now"],
        "after PrepareForBackup",
    )
    .await;
    s.ok(the_call(&calls, "DoSnapshotSet")).await;
    expect_bad_state(
        &mut s,
        &calls,
        &[
            "DoSnapshotSet",
            "StartSnapshotSet",
            "PrepareForBackup",
            "GatherWriterMetadata",
        ],
        &["not allowed now"],
        "after DoSnapshotSet",
    )
    .await;
    s.ok(the_call(&calls, "SetBackupSucceeded")).await;
    s.ok(the_call(&calls, "BackupComplete")).await;
    expect_bad_state(
        &mut s,
        &calls,
        &[
            "BackupComplete",
            "DoSnapshotSet",
            "SetBackupSucceeded",
            "AddComponent",
        ],
        &["not allowed now"],
        "after BackupComplete",
    )
    .await;
    s.close();
    assert_unchanged(socket, &before, "out-of-order backup calls").await;

    // After AbortBackup every call but the read-only ones is refused.
    let mut s = RawSession::open(socket).await.unwrap();
    s.ok(the_call(&calls, "InitializeForBackup")).await;
    s.ok(the_call(&calls, "SetBackupState")).await;
    let gathered = s.answer(the_call(&calls, "GatherWriterMetadata")).await;
    let (instance, _) = first_instance(gathered);
    let calls = every_call(&instance, &class.to_string());
    s.ok(the_call(&calls, "AddComponent")).await;
    s.ok(the_call(&calls, "StartSnapshotSet")).await;
    s.ok(the_call(&calls, "AddToSnapshotSet")).await;
    s.ok(the_call(&calls, "PrepareForBackup")).await;
    s.ok(the_call(&calls, "AbortBackup")).await;
    expect_bad_state(
        &mut s,
        &calls,
        &[
            "DoSnapshotSet",
            "BackupComplete",
            "PrepareForBackup",
            "AddComponent",
            "SetBackupSucceeded",
            "StartSnapshotSet",
            "AddToSnapshotSet",
        ],
        &["not allowed now"],
        "after AbortBackup",
    )
    .await;
    s.close();
    assert_unchanged(socket, &before, "calls after AbortBackup").await;
    raw::assert_no_panic(&daemon);
}

/// A component-mode full backup of the writer's component `data` over a raw session; returns the
/// stored BCD and WMD a restore starts from.
async fn backup_documents(socket: &Path, class: WriterClassId) -> (String, String) {
    let placeholder = every_call(&Guid::new_v4().to_string(), &class.to_string());
    let mut s = RawSession::open(socket).await.unwrap();
    s.ok(the_call(&placeholder, "InitializeForBackup")).await;
    s.ok(the_call(&placeholder, "SetBackupState")).await;
    let (instance, wmd_json) = first_instance(
        s.answer(the_call(&placeholder, "GatherWriterMetadata"))
            .await,
    );
    let calls = every_call(&instance, &class.to_string());
    for name in [
        "AddComponent",
        "StartSnapshotSet",
        "AddToSnapshotSet",
        "PrepareForBackup",
        "DoSnapshotSet",
        "SetBackupSucceeded",
    ] {
        s.ok(the_call(&calls, name)).await;
    }
    let answer = s.answer(the_call(&calls, "GetBackupComponents")).await;
    let Some(v1::requester_response::Result::BackupComponents(bcd)) = answer.result else {
        panic!("GetBackupComponents returns the BCD");
    };
    s.ok(the_call(&calls, "BackupComplete")).await;
    s.close();
    // The release deletes the set's auto-release copy in the background (BK-END-4); the caller's
    // "before" must not catch it on its way out.
    let deadline = tokio::time::Instant::now() + raw::ANSWER_LIMIT;
    let mut now = settled(socket).await;
    while !now.snapshots.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        now = settled(socket).await;
    }
    assert!(
        now.snapshots.is_empty(),
        "the backup's copies were released: {now:?}"
    );
    (bcd.bcd_json, wmd_json)
}

/// Out-of-order restore calls (spec §4, docs/protocol.md §4.3): every call before the step it
/// needs, repeated calls, backup calls in a restore session, AbortBackup (BK-ABORT-5) and every
/// call after PostRestore are refused in-band with VSS_E_BAD_STATE; the restore then completes
/// and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_restore_calls_are_bad_state_and_change_nothing() {
    let daemon = daemon("hostile-order-restore");
    let socket = daemon.socket();
    let class = WriterClassId::new_random();
    let _writer = plain_writer(socket, small_wmd("victim", class), None).await;
    let (bcd_json, wmd_json) = backup_documents(socket, class).await;
    let before = settled(socket).await;
    // Restore keys name the stored instance (RST-INIT-4).
    let stored = shadowcopy_metadata::WriterMetadata::from_json(&wmd_json).unwrap();
    let calls = every_call(&stored.identity.instance_id.to_string(), &class.to_string());
    let initialize = Call::InitializeForRestore(v1::InitializeForRestore {
        bcd_json: bcd_json.clone(),
        stored_wmd_json: vec![wmd_json.clone()],
    });
    let r4 = [
        "SetSelectedForRestore",
        "AddRestoreSubcomponent",
        "SetRestoreOptions",
        "SetRestoreState",
        "SetRestoreExtensions",
    ];
    let r7 = [
        "SetFileRestoreStatus",
        "AddAlternativeLocationMapping",
        "AddNewTarget",
        "SetRangesFilePath",
    ];
    let backup_only = [
        "SetContext",
        "SetBackupState",
        "AddComponent",
        "StartSnapshotSet",
        "AddToSnapshotSet",
        "PrepareForBackup",
        "DoSnapshotSet",
        "SetBackupSucceeded",
        "BackupComplete",
    ];

    let mut s = RawSession::open(socket).await.unwrap();
    s.ok(initialize.clone()).await;
    expect_bad_state(
        &mut s,
        &calls,
        &backup_only,
        &["backup call"],
        "in a restore session",
    )
    .await;
    expect_bad_state(
        &mut s,
        &calls,
        &["InitializeForBackup"],
        &[],
        "in a restore session",
    )
    .await;
    let status = s.call(initialize.clone()).await;
    assert_refused(
        &status,
        &codes::VSS_E_BAD_STATE,
        &[],
        "InitializeForRestore a second time",
    );
    let status = s.call(the_call(&calls, "AbortBackup")).await;
    assert_refused(
        &status,
        &codes::VSS_E_BAD_STATE,
        &["BK-ABORT-5"],
        "AbortBackup in a restore",
    );
    // R3 comes before R4 to R9 (SetRestoreState only needs to precede PreRestore, RST-PREP-7).
    let mut before_gather: Vec<&str> = r4
        .iter()
        .copied()
        .filter(|n| *n != "SetRestoreState")
        .collect();
    before_gather.extend(r7);
    before_gather.extend(["PreRestore", "PostRestore", "GatherWriterStatus"]);
    expect_bad_state(
        &mut s,
        &calls,
        &before_gather,
        &[],
        "before GatherWriterMetadata",
    )
    .await;
    s.answer(the_call(&calls, "GatherWriterMetadata")).await;
    expect_bad_state(
        &mut s,
        &calls,
        &["GatherWriterMetadata"],
        &[],
        "a second time",
    )
    .await;
    // R5 comes before R7 and R8.
    let mut before_pre: Vec<&str> = r7.to_vec();
    before_pre.push("PostRestore");
    expect_bad_state(&mut s, &calls, &before_pre, &[], "before PreRestore").await;
    s.ok(the_call(&calls, "SetSelectedForRestore")).await;
    s.ok(the_call(&calls, "PreRestore")).await;
    // R4 ends with R5.
    let mut after_pre: Vec<&str> = r4.to_vec();
    after_pre.push("PreRestore");
    expect_bad_state(&mut s, &calls, &after_pre, &[], "after PreRestore").await;
    s.ok(the_call(&calls, "SetFileRestoreStatus")).await;
    s.ok(the_call(&calls, "PostRestore")).await;
    let mut after_post: Vec<&str> = r4.to_vec();
    after_post.extend(r7);
    after_post.extend(["PreRestore", "PostRestore"]);
    expect_bad_state(&mut s, &calls, &after_post, &[], "after PostRestore").await;
    s.close();
    assert_unchanged(socket, &before, "out-of-order restore calls").await;
    raw::assert_no_panic(&daemon);
}

/// The GatherWriterStatus entry of `instance`.
fn status_of(answer: &v1::RequesterResponse, instance: &str) -> v1::WriterStatus {
    let Some(v1::requester_response::Result::WriterStatus(list)) = &answer.result else {
        panic!("GatherWriterStatus returns the writers' status");
    };
    list.writers
        .iter()
        .find(|w| w.writer_instance_id == instance)
        .unwrap_or_else(|| panic!("writer {instance} has a status: {list:?}"))
        .clone()
}

/// A writer cannot take or act for another writer's identity (ROLE-7, BCD-8, docs/protocol.md
/// §1.1 and §5.6): registering the class and instance name of a running writer is refused with
/// VSS_E_WRITER_ALREADY_SUBSCRIBED; an Identify answer naming another instance leaves the
/// answering writer out of the session; records sent back for another writer's instance are
/// refused with E_ACCESSDENIED and change nothing in the BCD; results for events a stream never
/// got or already answered, a second Register and an empty message end that stream with their
/// error. The writer whose identity was claimed keeps its registration and backs up normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_cannot_take_or_act_for_another_writers_identity() {
    use v1::writer_message::Message;
    let daemon = daemon("hostile-identity");
    let socket = daemon.socket();
    let class = WriterClassId::new_random();
    let mut victim_wmd = small_wmd("victim", class);
    victim_wmd.identity.instance_name = Some("main".into());
    let _victim = plain_writer(socket, victim_wmd.clone(), Some("main")).await;
    let before = settled(socket).await;
    let victim_instance = before.writers[0].1.clone();

    // The same class and instance name as the running writer.
    let mut register = register_message(victim_wmd.to_canonical_json());
    register.instance_name = Some("main".into());
    let status = RawWriter::register(socket, register)
        .await
        .err()
        .expect("refused");
    assert_grpc_refused(
        &status,
        &codes::VSS_E_WRITER_ALREADY_SUBSCRIBED,
        &[&victim_instance, "main"],
        "Register with the class and instance name of a running writer",
    );
    assert_unchanged(socket, &before, "a registration under a taken identity").await;

    // Another instance of the class may register (ROLE-7), but its Identify answer must describe
    // itself: one naming the running instance's name leaves it out of the session.
    let mut other_wmd = victim_wmd.clone();
    other_wmd.identity.instance_name = Some("other".into());
    let mut register = register_message(other_wmd.to_canonical_json());
    register.instance_name = Some("other".into());
    let mut twin = RawWriter::register(socket, register)
        .await
        .expect("a second instance registers");
    // A writer of its own class that will send back the victim's records.
    let forger_wmd = small_wmd("forger", WriterClassId::new_random());
    let mut forger = RawWriter::register(socket, register_message(forger_wmd.to_canonical_json()))
        .await
        .unwrap();

    let mut s = RawSession::open(socket).await.unwrap();
    let calls = every_call(&victim_instance, &class.to_string());
    s.ok(the_call(&calls, "InitializeForBackup")).await;
    s.ok(the_call(&calls, "SetBackupState")).await;
    let identify = async {
        let event = twin.next().await.unwrap().expect("Identify");
        twin.answer(event.event_id, Some(&victim_wmd));
        let event = forger.next().await.unwrap().expect("Identify");
        forger.answer(event.event_id, Some(&forger_wmd));
        event.event_id
    };
    let (gathered, forger_identify) =
        tokio::join!(s.answer(the_call(&calls, "GatherWriterMetadata")), identify);
    let Some(v1::requester_response::Result::WriterMetadata(list)) = gathered.result else {
        panic!("GatherWriterMetadata returns the writers");
    };
    let ids: Vec<&str> = list
        .writers
        .iter()
        .map(|w| w.writer_instance_id.as_str())
        .collect();
    assert!(ids.contains(&victim_instance.as_str()), "{ids:?}");
    assert!(
        !ids.contains(&twin.instance_id.as_str()),
        "the writer that answered Identify with another instance's WMD is left out: {ids:?}"
    );
    let forger_instance = forger.instance_id.clone();
    assert!(ids.contains(&forger_instance.as_str()), "{ids:?}");

    // The forger sends back the victim's records, with a stamp, in its PrepareForBackup answer.
    s.ok(the_call(&calls, "AddComponent")).await;
    s.ok(Call::AddComponent(v1::AddComponent {
        component: key(&forger_instance, "", "", "data"),
    }))
    .await;
    let answer = s.answer(the_call(&calls, "GetBackupComponents")).await;
    let Some(v1::requester_response::Result::BackupComponents(bcd)) = answer.result else {
        panic!("GetBackupComponents returns the BCD");
    };
    let bcd_before: serde_json::Value = serde_json::from_str(&bcd.bcd_json).unwrap();
    let mut forged = bcd_before["writers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["instance_id"] == victim_instance.as_str())
        .expect("the victim's records are in the BCD")
        .clone();
    forged["components"][0]["backup_stamp"] = "forged".into();
    let prepare = async {
        let event = forger.next().await.unwrap().expect("PrepareForBackup");
        assert!(matches!(
            event.event,
            Some(v1::coordinator_event::Event::PrepareForBackup(_))
        ));
        forger.send(Some(Message::EventResult(v1::EventResult {
            event_id: event.event_id,
            success: true,
            components_json: Some(forged.to_string()),
            ..Default::default()
        })));
    };
    let (status, ()) = tokio::join!(s.call(the_call(&calls, "PrepareForBackup")), prepare);
    assert!(status.is_success(), "{status}");
    let answer = s.answer(the_call(&calls, "GatherWriterStatus")).await;
    let forger_status = status_of(&answer, &forger_instance);
    eprintln!("records of another writer: {forger_status:?}");
    assert_eq!(forger_status.failure_code, codes::E_ACCESSDENIED.value);
    assert!(
        forger_status.application_message.contains("BCD-8"),
        "{forger_status:?}"
    );
    assert_eq!(status_of(&answer, &victim_instance).failure_code, 0);
    let answer = s.answer(the_call(&calls, "GetBackupComponents")).await;
    let Some(v1::requester_response::Result::BackupComponents(bcd)) = answer.result else {
        panic!("GetBackupComponents returns the BCD");
    };
    assert!(
        !bcd.bcd_json.contains("forged"),
        "the victim's records did not change: {}",
        bcd.bcd_json
    );

    // Results for events the forger never got, or already answered, end its stream.
    forger.answer(forger_identify, None);
    let status = forger.next().await.unwrap_err();
    assert_grpc_refused(
        &status,
        &codes::E_INVALIDARG,
        &["already answered"],
        "an EventResult for an event already answered",
    );
    for (message, code, mentions, what) in [
        (
            Some(Message::EventResult(v1::EventResult {
                event_id: 424_242,
                success: true,
                ..Default::default()
            })),
            &codes::E_INVALIDARG,
            "never sent",
            "an EventResult for an event never sent",
        ),
        (
            Some(Message::EventResult(v1::EventResult {
                event_id: 0,
                success: true,
                ..Default::default()
            })),
            &codes::E_INVALIDARG,
            "never sent",
            "an EventResult for Registered (event 0)",
        ),
        (
            Some(Message::Register(register_message(
                victim_wmd.to_canonical_json(),
            ))),
            &codes::VSS_E_BAD_STATE,
            "second time",
            "a second Register",
        ),
        (
            None,
            &codes::E_INVALIDARG,
            "nothing set",
            "a message with nothing set",
        ),
    ] {
        let wmd = small_wmd("stray", WriterClassId::new_random());
        let mut stray = RawWriter::register(socket, register_message(wmd.to_canonical_json()))
            .await
            .unwrap();
        stray.send(message);
        let status = stray.next().await.unwrap_err();
        assert_grpc_refused(&status, code, &[mentions], what);
    }
    drop((twin, forger));
    s.close();
    assert_unchanged(socket, &before, "writers acting for another writer").await;
    // The victim backs up as before.
    let (bcd_json, _) = backup_documents(socket, class).await;
    assert!(bcd_json.contains(&victim_instance));
    assert_unchanged(socket, &before, "a backup after the hostile writers left").await;
    raw::assert_no_panic(&daemon);
}

/// Calls without the version header, with a header that is not `MAJOR.MINOR`, or with another
/// major version are refused by the daemon with FAILED_PRECONDITION naming the versions, on every
/// service and before any call runs (docs/protocol.md §2); another minor version is accepted.
/// crates/protocol/tests/uds.rs checks the same rules on a test server; this is the real daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatches_are_refused_before_any_call() {
    use shadowcopy_protocol::{ProtocolVersion, VERSION_HEADER, VersionInterceptor};
    use tonic::service::interceptor::InterceptedService;
    let daemon = daemon("hostile-version");
    let socket = daemon.socket();
    let _writer = plain_writer(
        socket,
        small_wmd("victim", WriterClassId::new_random()),
        None,
    )
    .await;
    let before = settled(socket).await;
    let header = |value: &'static str| {
        move |mut request: tonic::Request<()>| {
            if !value.is_empty() {
                request
                    .metadata_mut()
                    .insert(VERSION_HEADER, value.parse().unwrap());
            }
            Ok(request)
        }
    };
    for (value, mentions) in [
        ("", VERSION_HEADER),
        ("1.x", "not MAJOR.MINOR"),
        ("2.0", "2.0"),
        ("0.9", "0.9"),
    ] {
        let channel = shadowcopy_protocol::connect_unix(socket).await.unwrap();
        let channel = InterceptedService::new(channel, header(value));
        let what = format!("version header {value:?}");
        let status = v1::admin_client::AdminClient::new(channel.clone())
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap_err();
        eprintln!("{what}: {:?} {}", status.code(), status.message());
        assert_eq!(
            status.code(),
            tonic::Code::FailedPrecondition,
            "{what}: {status:?}"
        );
        assert!(status.message().contains(mentions), "{what}: {status:?}");
        let (_requests, receiver) = tokio::sync::mpsc::unbounded_channel::<v1::RequesterRequest>();
        let status = v1::requester_client::RequesterClient::new(channel.clone())
            .session(tokio_stream::wrappers::UnboundedReceiverStream::new(
                receiver,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::FailedPrecondition,
            "{what}: {status:?}"
        );
        let wmd = small_wmd("w", WriterClassId::new_random());
        let first = v1::WriterMessage {
            message: Some(v1::writer_message::Message::Register(register_message(
                wmd.to_canonical_json(),
            ))),
        };
        let status = v1::writer_client::WriterClient::new(channel)
            .connect(tokio_stream::iter([first]))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::FailedPrecondition,
            "{what}: {status:?}"
        );
    }
    // Hello states the version in its body too.
    let mut hello = shadowcopy_protocol::hello_request("hostile");
    hello.protocol_major = 2;
    let status = v1::admin_client::AdminClient::new(raw::channel(socket).await)
        .hello(hello)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    // Another minor version of the same major is accepted.
    let channel = shadowcopy_protocol::connect_unix(socket).await.unwrap();
    let newer = VersionInterceptor::with_version(ProtocolVersion { major: 1, minor: 7 });
    let reply = v1::admin_client::AdminClient::with_interceptor(channel, newer)
        .get_status(v1::GetStatusRequest {})
        .await
        .expect("a newer minor version is served");
    assert!(reply.into_inner().status.unwrap().is_success());
    assert_unchanged(socket, &before, "version mismatches").await;
    raw::assert_no_panic(&daemon);
}
