//! Property tests of the component selection engine: random writers (logical paths from a small
//! alphabet, so that sets nest and collide; random selectability; dependencies with cycles, dangling
//! and remote targets) and random selections, including nonsense. Whatever the input, nothing
//! panics, and every successful backup selection is consistent with the BCD and the restore side.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::select;

use shadowcopy_metadata::bcd::{ComponentRecord, Party, Phase, WriterComponents};
use shadowcopy_metadata::enums::{
    BackupSchema, BackupType, ComponentFlags, ComponentType, FileSpecBackupType, RestoreMethod,
    SourceType, UsageType, WriterRestore,
};
use shadowcopy_metadata::selection::{
    BackupRequest, ComponentSelector, DependencyPolicy, Inclusion, RestoreRequest, SelectionError,
    WriterSelector, check_bcd, resolve_backup, resolve_restore,
};
use shadowcopy_metadata::wmd::{
    Component, Dependency, FileDescriptor, RestoreMethodSpec, WriterIdentity,
};
use shadowcopy_metadata::{
    BackupComponents, Guid, WriterClassId, WriterInstanceId, WriterMetadata,
};

/// Class ids 1..=3 exist; 99 never does, so dependencies on it dangle.
const CLASSES: [u128; 4] = [1, 2, 3, 99];
const WRITER_NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

fn class(n: u128) -> WriterClassId {
    WriterClassId(Guid::from_u128(n))
}

fn instance(n: u128) -> WriterInstanceId {
    WriterInstanceId(Guid::from_u128(0x1000 + n))
}

/// Mostly one-letter names so that components fall into each other's sets; sometimes empty or
/// with a `\`, which WMD validation would refuse.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => select(vec!["a", "b", "c"]).prop_map(String::from),
        1 => Just(String::new()),
        1 => Just("a\\b".to_string()),
    ]
}

fn logical_path() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::collection::vec(select(vec!["a", "b", "c"]), 0..3).prop_map(|s| s.join("\\")),
        1 => Just("a\\\\b".to_string()),
        1 => Just("\\\\host\\a".to_string()),
    ]
}

fn dependency() -> impl Strategy<Value = Dependency> {
    (
        select(CLASSES.to_vec()),
        logical_path(),
        name(),
        prop::bool::weighted(0.15),
        select(vec!["db1", "10.0.0.7"]),
    )
        .prop_map(|(class_n, path, name, remote, host)| Dependency {
            writer_class_id: class(class_n),
            logical_path: if remote {
                format!("\\\\{host}\\{path}")
            } else {
                path
            },
            component_name: name,
        })
}

fn descriptor() -> impl Strategy<Value = FileDescriptor> {
    (any::<u32>(), any::<bool>()).prop_map(|(bits, recursive)| {
        let mut descriptor = FileDescriptor::new("/srv/data", "*", recursive);
        descriptor.backup_type_mask =
            FileSpecBackupType::from_bits(bits & FileSpecBackupType::KNOWN_BITS).unwrap();
        descriptor
    })
}

fn component() -> impl Strategy<Value = Component> {
    (
        select(vec![
            ComponentType::FileGroup,
            ComponentType::Database,
            ComponentType::Undefined,
        ]),
        logical_path(),
        name(),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::collection::vec(descriptor(), 0..3),
        // Most components have no dependencies, or nearly every case would end in DEP-1.
        prop_oneof![6 => Just(Vec::new()), 1 => prop::collection::vec(dependency(), 1..3)],
    )
        .prop_map(
            |(kind, path, name, backup, restore, not_system, files, dependencies)| Component {
                component_type: kind,
                logical_path: path,
                name,
                caption: None,
                icon: None,
                restore_metadata: false,
                notify_on_backup_complete: false,
                selectable_for_backup: backup,
                selectable_for_restore: restore,
                component_flags: if not_system {
                    ComponentFlags::NOT_SYSTEM_STATE
                } else {
                    ComponentFlags::empty()
                },
                files,
                database_files: Vec::new(),
                database_log_files: Vec::new(),
                dependencies,
            },
        )
}

fn writer() -> impl Strategy<Value = WriterMetadata> {
    (
        0..3usize,
        select(WRITER_NAMES.to_vec()),
        select(vec![None, Some("i1"), Some("i2")]),
        select(vec![
            UsageType::UserData,
            UsageType::BootableSystemState,
            UsageType::SystemService,
            UsageType::Other,
        ]),
        any::<u32>(),
        select(vec![WriterRestore::Always, WriterRestore::Never]),
        prop::collection::vec(component(), 1..9),
    )
        .prop_map(
            |(class_i, name, instance_name, usage, schema, writer_restore, components)| {
                WriterMetadata {
                    schema_version: 1,
                    identity: WriterIdentity {
                        writer_name: name.into(),
                        class_id: class(CLASSES[class_i]),
                        instance_id: instance(0),
                        instance_name: instance_name.map(String::from),
                        usage_type: usage,
                        source_type: SourceType::Other,
                        version: None,
                    },
                    restore_method: RestoreMethodSpec {
                        method: RestoreMethod::RestoreIfCanReplace,
                        service: None,
                        user_procedure: None,
                        writer_restore,
                        reboot_required: false,
                    },
                    backup_schema: BackupSchema::from_bits(schema & BackupSchema::KNOWN_BITS)
                        .unwrap(),
                    excludes: Vec::new(),
                    exclude_from_snapshot: Vec::new(),
                    alternate_location_mappings: Vec::new(),
                    components,
                }
            },
        )
}

/// One to four writers with distinct instance ids, except that now and then one instance is
/// listed twice. Most dependencies are then pointed at real components of the set, which makes
/// cycles and cross-writer chains common; the others keep their random, mostly dangling, targets.
fn writers() -> impl Strategy<Value = Vec<WriterMetadata>> {
    (
        prop::collection::vec(writer(), 1..5),
        prop::bool::weighted(0.05),
        prop::collection::vec(any::<u16>(), 16),
    )
        .prop_map(|(mut list, duplicate, retargets)| {
            for (i, wmd) in list.iter_mut().enumerate() {
                wmd.identity.instance_id = instance(i as u128);
            }
            if duplicate && list.len() > 1 {
                list[1].identity.instance_id = instance(0);
            }
            let targets: Vec<(WriterClassId, String, String)> = list
                .iter()
                .flat_map(|w| {
                    w.components
                        .iter()
                        .map(|c| (w.identity.class_id, c.logical_path.clone(), c.name.clone()))
                })
                .collect();
            let mut retargets = retargets.into_iter().cycle();
            for dependency in list
                .iter_mut()
                .flat_map(|w| &mut w.components)
                .flat_map(|c| &mut c.dependencies)
            {
                let r = usize::from(retargets.next().unwrap_or_default());
                if r % 4 != 0 {
                    let (class_id, path, name) = targets[(r / 4) % targets.len()].clone();
                    *dependency = Dependency {
                        writer_class_id: class_id,
                        logical_path: path,
                        component_name: name,
                    };
                }
            }
            list
        })
}

fn writer_selector() -> impl Strategy<Value = WriterSelector> {
    prop_oneof![
        4 => select(vec!["alpha", "beta", "gamma", "i1", "nobody"]).prop_map(|n| WriterSelector::Name(n.into())),
        2 => select(CLASSES.to_vec()).prop_map(|n| WriterSelector::ClassId(class(n))),
        2 => (0..6u128).prop_map(|n| WriterSelector::InstanceId(instance(n))),
    ]
}

fn selector() -> impl Strategy<Value = ComponentSelector> {
    (writer_selector(), logical_path(), name()).prop_map(|(writer, path, name)| ComponentSelector {
        writer,
        logical_path: path,
        name,
    })
}

/// A selector for a component that exists: by instance, by class or by name.
fn existing_selector(
    writers: &[WriterMetadata],
) -> impl Strategy<Value = ComponentSelector> + use<> {
    let components: Vec<(WriterMetadata, usize)> = writers
        .iter()
        .flat_map(|w| (0..w.components.len()).map(move |c| (w.clone(), c)))
        .collect();
    (select(components), 0..3u8).prop_map(|((wmd, c), how)| {
        let component = &wmd.components[c];
        let writer = match how {
            0 => WriterSelector::InstanceId(wmd.identity.instance_id),
            1 => WriterSelector::ClassId(wmd.identity.class_id),
            _ => WriterSelector::Name(wmd.identity.writer_name.clone()),
        };
        ComponentSelector::new(
            writer,
            component.logical_path.clone(),
            component.name.clone(),
        )
    })
}

/// Writers with a request on them: selectors mostly name real components, some are nonsense.
fn writers_and_request() -> impl Strategy<Value = (Vec<WriterMetadata>, BackupRequest)> {
    writers().prop_flat_map(|writers| {
        let selector = prop_oneof![12 => existing_selector(&writers), 1 => selector()];
        let request = (
            select(BackupType::ALL.to_vec()),
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.3),
            prop::collection::vec(selector, 0..5),
            select(vec![
                DependencyPolicy::IncludeTargets,
                DependencyPolicy::Refuse,
            ]),
        )
            .prop_map(
                |(backup_type, component_mode, bootable_system_state, selected, dependencies)| {
                    BackupRequest {
                        backup_type,
                        component_mode,
                        bootable_system_state,
                        selected,
                        dependencies,
                    }
                },
            );
        (Just(writers), request)
    })
}

/// A record a requester might add: for a writer of the list (or a stranger), any path and name.
#[derive(Debug, Clone)]
struct RandomRecord {
    writer: usize,
    stranger: bool,
    component_type: ComponentType,
    logical_path: String,
    name: String,
    failed: bool,
}

fn record() -> impl Strategy<Value = RandomRecord> {
    (
        0..5usize,
        prop::bool::weighted(0.1),
        select(vec![ComponentType::FileGroup, ComponentType::Database]),
        logical_path(),
        name(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(writer, stranger, component_type, logical_path, name, failed)| RandomRecord {
                writer,
                stranger,
                component_type,
                logical_path,
                name,
                failed,
            },
        )
}

/// Every problem cites its rule in the text, and an error is never empty.
fn assert_well_formed(error: &SelectionError) {
    assert!(!error.problems().is_empty());
    for problem in error.problems() {
        assert!(problem.to_string().contains(problem.rule), "{problem}");
        assert!(!problem.message.is_empty());
    }
    let _ = error.to_string();
}

/// The case counts add up to 5,500 generated cases for this file. Failures are not persisted:
/// proptest cannot place a regressions file next to an integration test, and the shrunk case is
/// printed anyway.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn key(path: &str, name: &str) -> (String, String) {
    (path.to_owned(), name.to_owned())
}

proptest! {
    #![proptest_config(config(3000))]

    /// resolve_backup never panics; when it succeeds, the selection is internally consistent, its
    /// BCD passes the lint, and restoring everything from that BCD restores exactly what was backed up.
    #[test]
    fn backup_selections_are_consistent((writers, request) in writers_and_request()) {
        let selection = match resolve_backup(&writers, &request) {
            Ok(selection) => selection,
            Err(error) => {
                assert_well_formed(&error);
                return Ok(());
            }
        };
        for writer in &selection.writers {
            let wmd = writers.iter().find(|w| w.identity.instance_id == writer.instance_id).unwrap();
            let mut seen = HashSet::new();
            let explicit: HashSet<String> = writer.explicit_components().map(|c| c.full_path()).collect();
            for component in &writer.components {
                prop_assert!(
                    seen.insert(key(&component.logical_path, &component.name)),
                    "{} is listed twice (both explicit and implicit?)", component.full_path()
                );
                prop_assert!(wmd.component(&component.logical_path, &component.name).is_some());
                if let Inclusion::Implicit { set } = &component.inclusion {
                    prop_assert!(explicit.contains(set), "{} is in set {set}, which is not explicit", component.full_path());
                }
            }
            if request.component_mode {
                prop_assert!(writer.explicit_components().next().is_some(), "SEL-5: {} takes part with nothing", writer.writer_name);
            } else {
                prop_assert!(writer.components.is_empty());
            }
        }

        let mut bcd = BackupComponents::new();
        selection.apply_to(&mut bcd).unwrap();
        if let Err(error) = check_bcd(&bcd, &writers) {
            return Err(TestCaseError::fail(format!("the engine's own BCD fails the lint: {error}")));
        }
        let restore = match resolve_restore(&bcd, &writers, &RestoreRequest::default()) {
            Ok(restore) => restore,
            Err(error) => return Err(TestCaseError::fail(format!("restoring everything failed: {error}"))),
        };
        for writer in &restore.writers {
            let backed_up = selection.writer(writer.instance_id).unwrap();
            let expected: HashSet<_> = backed_up.components.iter().map(|c| key(&c.logical_path, &c.name)).collect();
            let restored: HashSet<_> = writer.members.iter().map(|m| key(&m.logical_path, &m.name)).collect();
            prop_assert_eq!(restored, expected);
        }
        let restoring_writers: usize = selection.writers.iter().filter(|w| w.explicit_components().next().is_some()).count();
        prop_assert_eq!(restore.writers.len(), restoring_writers);
        let mut restored_bcd = bcd.clone();
        restore.apply_to(&mut restored_bcd).unwrap();
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// check_bcd and resolve_restore never panic on BCDs that requesters made up, nor on nonsense
    /// restore selections; what they return is well formed.
    #[test]
    fn arbitrary_bcds_never_panic(
        writers in writers(),
        records in prop::collection::vec(record(), 0..10),
        component_mode in prop::bool::weighted(0.9),
        bootable in any::<bool>(),
        wanted in prop::collection::vec(selector(), 0..4),
    ) {
        let mut bcd = BackupComponents::new();
        let mut state = bcd.backup_state();
        state.component_mode = component_mode;
        state.bootable_system_state = bootable;
        bcd.set_backup_state(Phase::BackupDiscovery, state).unwrap();
        for record in &records {
            let entry = match writers.get(record.writer) {
                Some(wmd) if !record.stranger => WriterComponents::new(
                    wmd.identity.class_id,
                    wmd.identity.instance_id,
                    wmd.identity.instance_name.clone(),
                ),
                _ => WriterComponents::new(class(2), instance(77), None),
            };
            let new = ComponentRecord::new(record.component_type, record.logical_path.clone(), record.name.clone());
            // Duplicates are refused by the BCD itself; the rest goes in.
            // With an instance id listed twice the editor may find the other entry; that is fine.
            if bcd.add_component(Phase::BackupDiscovery, &entry, new).is_ok()
                && record.failed
                && let Ok(mut editor) = bcd.edit(
                    Party::Requester,
                    Phase::BackupCopying,
                    entry.instance_id,
                    &record.logical_path,
                    &record.name,
                )
            {
                editor.set_backup_succeeded(false).unwrap();
            }
        }
        if let Err(error) = check_bcd(&bcd, &writers) {
            assert_well_formed(&error);
        }
        for request in [RestoreRequest::default(), RestoreRequest { selected: wanted }] {
            match resolve_restore(&bcd, &writers, &request) {
                Ok(selection) => {
                    for writer in &selection.writers {
                        for selected in &writer.selected {
                            let entry = bcd.writer_instance(writer.instance_id).unwrap();
                            prop_assert!(entry.component(&selected.logical_path, &selected.name).is_some());
                        }
                    }
                    let mut copy = bcd.clone();
                    let _ = selection.apply_to(&mut copy);
                }
                Err(error) => assert_well_formed(&error),
            }
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Parsing any text as a selector never panics, and whatever parses prints back to itself.
    #[test]
    fn selector_text_round_trips(text in prop_oneof![
        ".{0,40}",
        "(alpha|instance=|\\{?[0-9a-f-]{36}\\}?)?:?[a-c\\\\:]{0,12}",
    ]) {
        match text.parse::<ComponentSelector>() {
            Ok(selector) => {
                let printed = selector.to_string();
                prop_assert_eq!(printed.parse::<ComponentSelector>().unwrap(), selector);
            }
            Err(error) => {
                prop_assert!(error.has_rule("LP-2"));
                assert_well_formed(&error);
            }
        }
    }
}
