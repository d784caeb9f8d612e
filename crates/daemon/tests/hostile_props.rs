//! Property-based hostile input over the wire against a real `shadowcopyd` (issue 7): generated
//! and damaged WMDs at writer registration, generated and damaged BCDs and stored WMDs at
//! InitializeForRestore with generated restore selections, and generated component keys at
//! AddComponent.
//!
//! Every case gets either success or a clear error: a refused registration carries a gRPC code
//! with the VSS code and a message, a refused requester call a VSS failure code with a message
//! and a hint. No case crashes or hangs the daemon (every answer is bounded, and the daemon's log
//! shows no panic), and after every case the daemon answers and its observable state is what it
//! was: the same writers, no session, no set in creation, no shadow copy.
//!
//! The generators live here rather than being shared with crates/metadata/tests/document_props.rs
//! and selection_props.rs, which check the parser and the selection engine in-process with
//! thousands of cases; these send fewer cases (CI time) through the whole daemon. Failures are
//! not persisted (an integration test has no place for a regressions file); the shrunk case is
//! printed.

mod raw;

use shadowcopy_test_support::damage::damage;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use raw::{
    Observed, RawSession, RawWriter, assert_no_panic, assert_unchanged, plain_writer, settled,
    small_wmd,
};
use shadowcopy_metadata::enums::{ComponentType, RestoreMethod, SourceType, UsageType};
use shadowcopy_metadata::wmd::{Component, FileDescriptor, WriterMetadata};
use shadowcopy_metadata::{Guid, WriterClassId, WriterInstanceId, codes};
use shadowcopy_protocol::v1::{self, requester_request::Call};
use shadowcopy_test_support::{DaemonProcess, TEST_CONFIG};

fn daemon(name: &str) -> DaemonProcess {
    DaemonProcess::start(
        Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        name,
        TEST_CONFIG,
    )
}

/// Few cases, since each crosses the socket several times; no shrinking beyond a few steps, since
/// each step is another round of calls to the daemon.
fn config(cases: u32) -> Config {
    Config {
        cases,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings drawn mostly from the characters that matter to the rules: separators, wildcards,
/// dots, NUL and other control characters, and non-ASCII text.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => prop::sample::select(vec!['a', 'b', 'z', 'X', '0', '7', '_', '-', ' ']),
            2 => prop::sample::select(vec!['\\', '/', '*', '?', '.', '$', ':', ',']),
            1 => prop::sample::select(vec!['\0', '\n', '\u{7f}', 'é', '中', '\u{202e}']),
        ],
        0..10,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-c]{1,2}", 1 => text()]
}

fn logical_path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..3)
            .prop_map(|parts| parts.join("\\")),
        1 => text(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec("[a-z]{1,4}", 1..3).prop_map(|p| format!("/sim/ok/{}", p.join("/"))),
        1 => text(),
    ]
}

fn component() -> impl Strategy<Value = Component> {
    (
        prop::sample::select(vec![ComponentType::FileGroup, ComponentType::Database]),
        logical_path(),
        name(),
        any::<(bool, bool)>(),
        prop::collection::vec(
            (
                path(),
                prop_oneof![3 => Just("*".to_owned()), 1 => text()],
                any::<bool>(),
            ),
            0..3,
        ),
    )
        .prop_map(|(kind, logical_path, name, (backup, restore), files)| {
            let files: Vec<FileDescriptor> = files
                .into_iter()
                .map(|(path, spec, recursive)| FileDescriptor::new(path, spec, recursive))
                .collect();
            let mut component = Component::file_group(logical_path, name, backup, Vec::new());
            component.component_type = kind;
            component.selectable_for_restore = restore;
            if kind == ComponentType::Database {
                component.database_files = files;
            } else {
                component.files = files;
            }
            component
        })
}

/// A WMD of a fresh class: about half valid, the others breaking a rule somewhere.
fn wmd() -> impl Strategy<Value = WriterMetadata> {
    prop_oneof![1 => valid_wmd(), 1 => wild_wmd()]
}

/// A WMD that follows the rules, unless two generated components happen to collide.
fn valid_wmd() -> impl Strategy<Value = WriterMetadata> {
    let component = (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..3),
        "[a-c]{1,2}",
        any::<(bool, bool)>(),
        prop::collection::vec("[a-z]{1,4}", 0..3),
    )
        .prop_map(|(parts, name, (backup, restore), dirs)| {
            let files = dirs
                .iter()
                .map(|d| FileDescriptor::new(format!("/sim/ok/{d}"), "*", true))
                .collect();
            let mut component = Component::file_group(parts.join("\\"), name, backup, files);
            component.selectable_for_restore = restore;
            component
        });
    (
        "[a-c]{1,3}",
        prop::option::of("[a-c]{1,2}"),
        prop::collection::vec(component, 0..4),
    )
        .prop_map(|(writer_name, instance_name, components)| {
            let mut wmd =
                WriterMetadata::simple(writer_name, WriterClassId::new_random(), components);
            wmd.identity.instance_name = instance_name;
            wmd
        })
}

/// A WMD with generated text and enumeration values anywhere: mostly breaking a rule.
fn wild_wmd() -> impl Strategy<Value = WriterMetadata> {
    (
        name(),
        prop::option::of(name()),
        prop::sample::select(UsageType::ALL.to_vec()),
        prop::sample::select(SourceType::ALL.to_vec()),
        prop::sample::select(RestoreMethod::ALL.to_vec()),
        prop::collection::vec(component(), 0..4),
    )
        .prop_map(
            |(writer_name, instance_name, usage, source, method, components)| {
                let mut wmd =
                    WriterMetadata::simple(writer_name, WriterClassId::new_random(), components);
                wmd.identity.instance_name = instance_name;
                wmd.identity.usage_type = usage;
                wmd.identity.source_type = source;
                wmd.restore_method.method = method;
                wmd
            },
        )
}

/// A document's text: whole with probability `whole`, otherwise damaged.
fn maybe_damaged(text: String, whole: f64) -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(whole),
        any::<u8>(),
        any::<usize>(),
        any::<u8>(),
    )
        .prop_map(move |(whole, how, at, byte)| {
            if whole {
                text.clone()
            } else {
                damage(&text, how % 4, at, byte)
            }
        })
}

/// The Register message of a generated, possibly damaged WMD, with generated numbers.
fn registration() -> impl Strategy<Value = v1::Register> {
    (
        wmd(),
        prop_oneof![4 => Just(0i32), 1 => -2i32..6],
        prop_oneof![4 => Just(0u32), 1 => any::<u32>()],
        prop_oneof![4 => Just(0u32), 1 => 0u32..16],
        any::<bool>(),
    )
        .prop_flat_map(|(wmd, level, freeze, mask, name_in_register)| {
            let instance_name = wmd
                .identity
                .instance_name
                .clone()
                .filter(|_| name_in_register);
            maybe_damaged(serde_json::to_string(&wmd).expect("JSON"), 0.5).prop_map(
                move |wmd_json| v1::Register {
                    wmd_json,
                    application_level: level,
                    freeze_timeout_ms: freeze,
                    subscribe_mask: mask,
                    instance_name: instance_name.clone(),
                },
            )
        })
}

/// Asserts that an in-band status is a success, or a failure with a registered VSS code, a
/// message and a hint.
fn assert_clear(status: &v1::Status, what: &str) {
    if status.is_success() {
        return;
    }
    let code = status
        .error_code()
        .unwrap_or_else(|| panic!("{what}: an unregistered code: {status}"));
    assert_eq!(status.name, code.name, "{what}: {status}");
    assert!(!status.message.is_empty(), "{what}: no message: {status}");
    assert!(!status.hint.is_empty(), "{what}: no hint: {status}");
    assert_ne!(
        code.value,
        codes::VSS_E_UNEXPECTED.value,
        "{what}: an internal error: {status}"
    );
}

/// Generated and damaged WMDs at Register: each is registered or refused with a gRPC code that
/// carries a VSS code and a message; a registered one goes away with its stream; the daemon's
/// state is then as before.
#[test]
fn generated_registrations_are_accepted_or_refused_clearly() {
    let daemon = daemon("props-register");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = daemon.socket();
    let (_victim, before) = runtime.block_on(async {
        let victim = plain_writer(
            socket,
            small_wmd("victim", WriterClassId::new_random()),
            None,
        )
        .await;
        (victim, settled(socket).await)
    });
    let accepted = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(config(256));
    runner
        .run(&registration(), |register| {
            runtime.block_on(async {
                match RawWriter::register(socket, register).await {
                    Ok(writer) => {
                        accepted.set(accepted.get() + 1);
                        drop(writer);
                    }
                    Err(status) => {
                        let code = shadowcopy_protocol::error_code_of_grpc(&status)
                            .unwrap_or_else(|| panic!("a refusal without a VSS code: {status:?}"));
                        assert_eq!(
                            status.code(),
                            shadowcopy_protocol::grpc_code(code),
                            "{status:?}"
                        );
                        assert!(status.message().contains(code.name), "{status:?}");
                    }
                }
                assert_unchanged(socket, &before, "a generated registration").await;
            });
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!(
        "{} of 256 generated registrations were accepted",
        accepted.get()
    );
    assert!(accepted.get() > 0, "the generator makes some valid WMDs");
    assert_no_panic(&daemon);
}

/// One writer of a generated BCD: whether it is the running writer's class, its instance id and
/// name, and its records (type, logical path, name, backup stamp).
type BcdWriter = (
    bool,
    Guid,
    Option<String>,
    Vec<(String, String, String, Option<String>)>,
);

fn bcd_writer() -> impl Strategy<Value = BcdWriter> {
    let kind = prop_oneof![
        8 => Just("FILEGROUP".to_owned()),
        4 => Just("DATABASE".to_owned()),
        1 => Just("UNDEFINED".to_owned()),
        1 => text(),
    ];
    // Mostly records a BCD may hold, so that selections reach the running writer.
    let logical_path = prop_oneof![
        6 => prop::collection::vec(prop::sample::select(vec!["a", "b"]), 0..2)
            .prop_map(|parts| parts.join("\\")),
        1 => text(),
    ];
    let record_name = prop_oneof![6 => "[a-c]{1,2}", 1 => text()];
    let record = (kind, logical_path, record_name, prop::option::of(text()));
    (
        prop::bool::weighted(0.7),
        any::<u128>().prop_map(Guid::from_u128),
        prop_oneof![3 => Just(None), 1 => prop::option::of(name())],
        prop::collection::vec(record, 0..4),
    )
}

/// A restore case: the BCD's text (whole or damaged), the stored WMDs, and the component keys to
/// select, mostly the BCD's own records, some made up.
type RestoreCase = (String, Vec<String>, Vec<(String, String, String, String)>);

fn restore_case(class: WriterClassId) -> impl Strategy<Value = RestoreCase> {
    (
        prop::collection::vec(bcd_writer(), 0..3),
        prop::bool::weighted(0.8),
        prop_oneof![4 => Just("FULL"), 1 => Just("COPY"), 1 => Just("UNDEFINED")],
    )
        .prop_flat_map(move |(writers, component_mode, backup_type)| {
            let writers_json: Vec<serde_json::Value> = writers
                .iter()
                .map(|(running, instance_id, instance_name, records)| {
                    let class = if *running {
                        class
                    } else {
                        WriterClassId::new_random()
                    };
                    let records: Vec<serde_json::Value> = records
                        .iter()
                        .map(|(kind, logical_path, name, stamp)| {
                            let mut record = serde_json::json!({
                                "component_type": kind,
                                "logical_path": logical_path,
                                "name": name,
                            });
                            if let Some(stamp) = stamp {
                                record["backup_stamp"] = stamp.clone().into();
                            }
                            record
                        })
                        .collect();
                    let mut writer = serde_json::json!({
                        "class_id": class.to_string(),
                        "instance_id": instance_id.to_string(),
                        "components": records,
                    });
                    if let Some(name) = instance_name {
                        writer["instance_name"] = name.clone().into();
                    }
                    writer
                })
                .collect();
            let document = serde_json::json!({
                "schema_version": 1,
                "backup_state": {
                    "component_mode": component_mode,
                    "bootable_system_state": false,
                    "backup_type": backup_type,
                    "partial_file_support": false,
                },
                "context": "BACKUP",
                "writers": writers_json,
            });
            // The running writer's stored WMD, under each instance id the BCD gives it.
            let stored: Vec<String> = writers
                .iter()
                .filter(|(running, ..)| *running)
                .map(|(_, instance_id, instance_name, _)| {
                    let mut wmd = small_wmd("victim", class);
                    wmd.identity.instance_id = WriterInstanceId(*instance_id);
                    wmd.identity.instance_name = instance_name.clone();
                    serde_json::to_string(&wmd).expect("JSON")
                })
                .collect();
            let real_keys: Vec<(String, String, String, String)> = writers
                .iter()
                .flat_map(|(running, instance_id, _, records)| {
                    let class = if *running {
                        class.to_string()
                    } else {
                        Guid::new_v4().to_string()
                    };
                    records.iter().map(move |(_, logical_path, name, _)| {
                        (
                            instance_id.to_string(),
                            class.clone(),
                            logical_path.clone(),
                            name.clone(),
                        )
                    })
                })
                .collect();
            let key = if real_keys.is_empty() {
                (text(), text(), logical_path(), name()).boxed()
            } else {
                prop_oneof![
                    3 => prop::sample::select(real_keys),
                    1 => (text(), text(), logical_path(), name()),
                ]
                .boxed()
            };
            let stored_damaged: Vec<_> =
                stored.into_iter().map(|t| maybe_damaged(t, 0.8)).collect();
            (
                maybe_damaged(document.to_string(), 0.6),
                stored_damaged,
                prop::collection::vec(key, 0..4),
            )
        })
}

/// Generated BCDs and stored WMDs at InitializeForRestore, and generated selections after it:
/// every call is answered in-band with success or a clear failure; nothing outlives the session.
#[test]
fn generated_restore_documents_and_selections_are_answered_clearly() {
    let daemon = daemon("props-restore");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = daemon.socket();
    let class = WriterClassId::new_random();
    let (_victim, before) = runtime.block_on(async {
        let victim = plain_writer(socket, small_wmd("victim", class), None).await;
        (victim, settled(socket).await)
    });
    let initialized = std::cell::Cell::new(0);
    let selected = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(config(192));
    runner
        .run(&restore_case(class), |(bcd_json, stored_wmd_json, keys)| {
            runtime.block_on(async {
                let mut s = RawSession::open(socket).await.expect("a session opens");
                let status = s
                    .call(Call::InitializeForRestore(v1::InitializeForRestore {
                        bcd_json,
                        stored_wmd_json,
                    }))
                    .await;
                assert_clear(&status, "InitializeForRestore");
                if status.is_success() {
                    initialized.set(initialized.get() + 1);
                    let status = s
                        .call(Call::GatherWriterMetadata(v1::GatherWriterMetadata {}))
                        .await;
                    assert_clear(&status, "GatherWriterMetadata");
                    for (instance, class, logical_path, name) in keys {
                        let status = s
                            .call(Call::SetSelectedForRestore(v1::SetSelectedForRestore {
                                component: Some(v1::ComponentKey {
                                    writer_instance_id: instance,
                                    writer_class_id: class,
                                    component_type: 0,
                                    logical_path,
                                    name,
                                }),
                                selected: true,
                                target_instance_name: None,
                            }))
                            .await;
                        assert_clear(&status, "SetSelectedForRestore");
                        if status.is_success() {
                            selected.set(selected.get() + 1);
                        }
                    }
                    // PreRestore and PostRestore reach only the running writer, with whatever was
                    // selected; the restore copies no files.
                    let status = s.call(Call::PreRestore(v1::PreRestore {})).await;
                    assert_clear(&status, "PreRestore");
                    if status.is_success() {
                        let status = s.call(Call::PostRestore(v1::PostRestore {})).await;
                        assert_clear(&status, "PostRestore");
                    }
                }
                s.close();
                assert_unchanged(socket, &before, "a generated restore").await;
            });
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!(
        "{} of 192 generated restores were initialized, {} components selected",
        initialized.get(),
        selected.get()
    );
    assert!(
        initialized.get() > 0,
        "the generator makes some readable BCDs"
    );
    assert_no_panic(&daemon);
}

/// A component key for AddComponent: the running writer's instance (or a generated id) with a
/// generated logical path and name, or one of its real components.
fn component_keys() -> impl Strategy<Value = Vec<(u8, String, String, String)>> {
    prop::collection::vec((any::<u8>(), text(), logical_path(), name()), 1..6)
}

/// Generated component keys at AddComponent in a backup session of a writer with a generated
/// WMD: every call is answered in-band with success or a clear failure; after release no set
/// is in creation and no shadow copy exists.
#[test]
fn generated_backup_selections_are_answered_clearly() {
    let daemon = daemon("props-select");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = daemon.socket();
    // A writer whose WMD has the components the keys aim at: nested logical paths, both types.
    let mut wmd = small_wmd("victim", WriterClassId::new_random());
    for (logical_path, name) in [("a", "b"), ("a\\b", "c"), ("", "a"), ("c", "a")] {
        let files = vec![FileDescriptor::new(format!("/sim/ok/{name}"), "*", true)];
        wmd.components
            .push(Component::file_group(logical_path, name, true, files));
    }
    let (_victim, before): (_, Observed) = runtime.block_on(async {
        let victim = plain_writer(socket, wmd, None).await;
        (victim, settled(socket).await)
    });
    let mut runner = TestRunner::new(config(192));
    runner
        .run(&component_keys(), |keys| {
            runtime.block_on(async {
                let mut s = RawSession::open(socket).await.expect("a session opens");
                s.ok(Call::InitializeForBackup(v1::InitializeForBackup {
                    bcd_json: None,
                }))
                .await;
                s.ok(Call::SetBackupState(v1::SetBackupState {
                    component_mode: true,
                    bootable_system_state: false,
                    backup_type: 1,
                    partial_file_support: false,
                }))
                .await;
                let answer = s
                    .answer(Call::GatherWriterMetadata(v1::GatherWriterMetadata {}))
                    .await;
                let Some(v1::requester_response::Result::WriterMetadata(list)) = answer.result
                else {
                    panic!("GatherWriterMetadata returns the writers");
                };
                let running = list.writers[0].writer_instance_id.clone();
                for (pick, instance, logical_path, name) in keys {
                    let instance = if pick % 4 == 0 {
                        instance
                    } else {
                        running.clone()
                    };
                    let status = s
                        .call(Call::AddComponent(v1::AddComponent {
                            component: Some(v1::ComponentKey {
                                writer_instance_id: instance,
                                writer_class_id: String::new(),
                                component_type: u32::from(pick % 3),
                                logical_path,
                                name,
                            }),
                        }))
                        .await;
                    assert_clear(&status, "AddComponent");
                }
                let status = s
                    .call(Call::GetBackupComponents(v1::GetBackupComponents {}))
                    .await;
                assert_clear(&status, "GetBackupComponents");
                s.close();
                assert_unchanged(socket, &before, "a generated selection").await;
            });
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_no_panic(&daemon);
}
