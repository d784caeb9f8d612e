//! Property tests: generated and damaged documents never make the parser or the validator panic,
//! and every document the parser accepts round-trips unchanged.

use proptest::prelude::*;
use shadowcopy_metadata::enums::{
    BackupSchema, ComponentFlags, ComponentType, FileSpecBackupType, RestoreMethod, SourceType,
    UsageType, WriterRestore,
};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::wmd::{
    AlternateLocationMapping, Component, Dependency, FileDescriptor, FileSet, RestoreMethodSpec,
    WriterIdentity, WriterVersion,
};
use shadowcopy_metadata::{
    BackupComponents, Guid, WriterClassId, WriterInstanceId, WriterMetadata,
};
use shadowcopy_test_support::damage::damage;

/// Strings drawn mostly from the characters that matter to the rules: separators, wildcards,
/// dots, NUL and other control characters, and non-ASCII text.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec!['a', 'b', 'z', 'X', '0', '7', '_', '-', ' ']),
            2 => prop::sample::select(vec!['\\', '/', '*', '?', '.', '$', ':', ',']),
            1 => prop::sample::select(vec!['\0', '\n', '\u{7f}', 'é', '中', '\u{202e}']),
        ],
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec("[a-z]{1,4}", 1..4).prop_map(|parts| format!("/{}", parts.join("/"))),
        1 => text(),
    ]
}

fn file_set() -> impl Strategy<Value = FileSet> {
    (
        path(),
        prop_oneof![3 => Just("*".to_string()), 1 => text()],
        any::<bool>(),
    )
        .prop_map(|(path, filespec, recursive)| FileSet {
            path,
            filespec,
            recursive,
        })
}

fn descriptor() -> impl Strategy<Value = FileDescriptor> {
    (file_set(), prop::option::of(path()), any::<u32>()).prop_map(|(set, alternate, mask)| {
        FileDescriptor {
            path: set.path,
            filespec: set.filespec,
            recursive: set.recursive,
            alternate_path: alternate,
            backup_type_mask: FileSpecBackupType::from_bits(mask & 0x10F0F)
                .unwrap_or(FileSpecBackupType::DEFAULT),
        }
    })
}

fn logical_path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..3)
            .prop_map(|parts| parts.join("\\")),
        1 => text(),
    ]
}

fn component() -> impl Strategy<Value = Component> {
    (
        prop::sample::select(ComponentType::ALL.to_vec()),
        logical_path(),
        prop_oneof![3 => "[a-c]{1,2}", 1 => text()],
        any::<(bool, bool, bool, bool)>(),
        0u32..8,
        prop::collection::vec(descriptor(), 0..3),
        prop::collection::vec(descriptor(), 0..2),
        prop::collection::vec((logical_path(), "[a-c]{0,2}"), 0..2),
    )
        .prop_map(|(kind, lp, name, flags, bits, files, db, deps)| Component {
            component_type: kind,
            logical_path: lp,
            name,
            caption: Some("caption".into()),
            icon: None,
            restore_metadata: flags.0,
            notify_on_backup_complete: flags.1,
            selectable_for_backup: flags.2,
            selectable_for_restore: flags.3,
            component_flags: ComponentFlags::from_bits(bits & 0x7).unwrap_or_default(),
            files: if kind == ComponentType::Database {
                Vec::new()
            } else {
                files
            },
            database_files: if kind == ComponentType::Database {
                db
            } else {
                Vec::new()
            },
            database_log_files: Vec::new(),
            dependencies: deps
                .into_iter()
                .map(|(logical_path, component_name)| Dependency {
                    writer_class_id: WriterClassId(Guid::from_u128(7)),
                    logical_path,
                    component_name,
                })
                .collect(),
        })
}

fn wmd() -> impl Strategy<Value = WriterMetadata> {
    (
        text(),
        any::<u128>(),
        prop::sample::select(UsageType::ALL.to_vec()),
        prop::sample::select(SourceType::ALL.to_vec()),
        prop::sample::select(RestoreMethod::ALL.to_vec()),
        prop::option::of(text()),
        any::<u16>(),
        prop::collection::vec(file_set(), 0..2),
        prop::collection::vec(component(), 0..5),
        prop::option::of(path()),
    )
        .prop_map(
            |(
                name,
                class,
                usage,
                source,
                method,
                service,
                schema,
                excludes,
                components,
                mapping,
            )| {
                let mapping_source = components
                    .iter()
                    .flat_map(|c| c.files.iter())
                    .next()
                    .map(FileDescriptor::file_set);
                WriterMetadata {
                    schema_version: shadowcopy_metadata::SCHEMA_VERSION,
                    identity: WriterIdentity {
                        writer_name: name,
                        class_id: WriterClassId(Guid::from_u128(class)),
                        instance_id: WriterInstanceId(Guid::from_u128(class ^ 1)),
                        instance_name: None,
                        usage_type: usage,
                        source_type: source,
                        version: Some(WriterVersion { major: 1, minor: 0 }),
                    },
                    restore_method: RestoreMethodSpec {
                        method,
                        service,
                        user_procedure: None,
                        writer_restore: WriterRestore::Always,
                        reboot_required: false,
                    },
                    backup_schema: BackupSchema::from_bits(u32::from(schema) & 0xF7FF)
                        .unwrap_or_default(),
                    excludes: excludes.clone(),
                    exclude_from_snapshot: excludes,
                    alternate_location_mappings: match (mapping_source, mapping) {
                        (Some(source), Some(destination)) => {
                            vec![AlternateLocationMapping {
                                source,
                                destination,
                            }]
                        }
                        _ => Vec::new(),
                    },
                    components,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Generated WMDs: validation never panics, and every accepted document round-trips.
    #[test]
    fn generated_wmds_validate_or_explain(doc in wmd()) {
        let text = doc.to_canonical_json();
        match WriterMetadata::from_json(&text) {
            Ok(parsed) => {
                prop_assert_eq!(&parsed, &doc);
                prop_assert_eq!(parsed.to_canonical_json(), text);
            }
            Err(error) => {
                prop_assert!(!error.fields().is_empty());
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }

    /// Damaged WMD texts never panic the parser, and anything accepted round-trips.
    #[test]
    fn damaged_wmds_never_panic(doc in wmd(), how in any::<u8>(), at in any::<usize>(), byte in any::<u8>()) {
        let text = damage(&doc.to_canonical_json(), how, at, byte);
        if let Ok(parsed) = WriterMetadata::from_json(&text) {
            let again = WriterMetadata::from_json(&parsed.to_canonical_json());
            prop_assert_eq!(again.as_ref().ok(), Some(&parsed));
        }
    }

    /// Damaged BCD texts never panic the parser, and anything accepted round-trips.
    #[test]
    fn damaged_bcds_never_panic(how in any::<u8>(), at in any::<usize>(), byte in any::<u8>()) {
        let text = damage(include_str!("fixtures/full.bcd.json"), how, at, byte);
        if let Ok(parsed) = BackupComponents::from_json(&text) {
            let again = BackupComponents::from_json(&parsed.to_canonical_json());
            prop_assert_eq!(again.as_ref().ok(), Some(&parsed));
        }
    }
}
