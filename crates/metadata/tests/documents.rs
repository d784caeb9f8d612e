//! Round trips of fully populated documents, and malformed documents that must be refused with the field named.

use serde_json::{Value, json};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{BackupComponents, DocumentError, WriterMetadata, codes};

const FULL_WMD: &str = include_str!("fixtures/full.wmd.json");
const FULL_BCD: &str = include_str!("fixtures/full.bcd.json");

/// Fields and lists seen while walking a document against its schema, by path without indices.
#[derive(Default)]
struct Lists {
    empty: std::collections::BTreeSet<String>,
    filled: std::collections::BTreeSet<String>,
}

/// Every property the schema defines, resolved through `$ref`, is present in `value` (recursively).
///
/// A field may be absent and a list empty in one place (a DATABASE component has no plain `files`
/// and no alternate paths, COMP-2) as long as the same field is set somewhere else in the document.
fn assert_every_field_set(
    value: &Value,
    schema: &Value,
    defs: &Value,
    at: &str,
    lists: &mut Lists,
) {
    // Fields are keyed by the type that declares them, so that a field which one variant may not
    // use (a DATABASE file set has no alternate path, COMP-2) counts as set when another sets it.
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap();
        return assert_every_field_set(value, &defs[name], defs, name, lists);
    }
    // Optional fields appear as `anyOf: [{$ref}, {type: null}]`; follow the non-null branch.
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        for branch in branches {
            if branch.get("type") != Some(&json!("null")) {
                assert_every_field_set(value, branch, defs, at, lists);
            }
        }
        return;
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let path = format!("{at}.{name}");
            match value.get(name).filter(|field| !field.is_null()) {
                Some(field) => {
                    lists.filled.insert(path.clone());
                    assert_every_field_set(field, property, defs, &path, lists);
                }
                None => {
                    lists.empty.insert(path);
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        if array.is_empty() {
            lists.empty.insert(at.to_owned());
        } else {
            lists.filled.insert(at.to_owned());
        }
        for item in array {
            assert_every_field_set(item, items, defs, &format!("{at}[]"), lists);
        }
    }
}

fn round_trip<D: Document + PartialEq + std::fmt::Debug>(text: &str) {
    let document = D::from_json(text).unwrap_or_else(|e| panic!("the fixture is valid: {e}"));
    let canonical = document.to_canonical_json();
    let again = D::from_json(&canonical).expect("canonical output parses");
    assert_eq!(document, again);
    assert_eq!(
        canonical,
        again.to_canonical_json(),
        "canonical JSON is stable"
    );
    // Nothing is lost: the canonical form holds exactly what the fixture held.
    let fixture: Value = serde_json::from_str(text).unwrap();
    let written: Value = serde_json::from_str(&canonical).unwrap();
    assert_eq!(fixture, written);
    let schema = D::schema_document();
    let mut lists = Lists::default();
    assert_every_field_set(&written, &schema, &schema["$defs"], "", &mut lists);
    let never_filled: Vec<_> = lists.empty.difference(&lists.filled).collect();
    assert!(
        never_filled.is_empty(),
        "the fixture never sets {never_filled:?}"
    );
}

/// ROLE-4: a fully populated WMD round-trips through JSON unchanged.
#[test]
fn full_wmd_round_trips() {
    round_trip::<WriterMetadata>(FULL_WMD);
}

/// ROLE-4, BCD-1: a fully populated BCD round-trips through JSON unchanged.
#[test]
fn full_bcd_round_trips() {
    round_trip::<BackupComponents>(FULL_BCD);
}

/// The BCD getters read what the document holds.
#[test]
fn bcd_getters_read_the_document() {
    let bcd = BackupComponents::from_json(FULL_BCD).unwrap();
    assert_eq!(bcd.writer_components_count(), 1);
    let record = &bcd.writers()[0].components()[0];
    assert_eq!(record.full_path(), "clusters\\15\\main");
    assert_eq!(record.backup_stamp(), Some("lsn:0/5000060"));
    assert_eq!(
        record.failure().unwrap().code,
        codes::VSS_E_WRITERERROR_RETRYABLE.value
    );
    assert_eq!(record.restore_subcomponents()[0].name, "wal");
}

/// A case of a malformed document: a change to a valid fixture and the field the error must name.
struct Case {
    name: &'static str,
    kind: Kind,
    mutate: fn(&mut Value),
    field: &'static str,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Wmd,
    Bcd,
}

fn set(pointer: &'static str, value: Value) -> impl Fn(&mut Value) {
    move |doc: &mut Value| *doc.pointer_mut(pointer).expect(pointer) = value.clone()
}

fn remove(doc: &mut Value, pointer: &str, key: &str) {
    doc.pointer_mut(pointer)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
}

fn component0(doc: &mut Value) -> &mut Value {
    doc.pointer_mut("/components/0").unwrap()
}

fn record0(doc: &mut Value) -> &mut Value {
    doc.pointer_mut("/writers/0/components/0").unwrap()
}

macro_rules! case {
    ($name:literal, $kind:ident, $field:literal, |$doc:ident| $body:expr) => {
        Case {
            name: $name,
            kind: Kind::$kind,
            field: $field,
            mutate: |$doc: &mut Value| $body,
        }
    };
}

fn cases() -> Vec<Case> {
    vec![
        case!("wrong schema_version", Wmd, "schema_version", |d| set(
            "/schema_version",
            json!(2)
        )(
            d
        )),
        case!("missing schema_version", Bcd, "schema_version", |d| remove(
            d,
            "",
            "schema_version"
        )),
        case!("schema_version as text", Wmd, "schema_version", |d| set(
            "/schema_version",
            json!("1")
        )(
            d
        )),
        case!("unknown enum value", Wmd, "identity.usage_type", |d| set(
            "/identity/usage_type",
            json!("GAMES")
        )(
            d
        )),
        case!(
            "unknown restore method",
            Wmd,
            "restore_method.method",
            |d| set("/restore_method/method", json!("RESTORE_SOMEHOW"))(d)
        ),
        case!(
            "restore method UNDEFINED",
            Wmd,
            "restore_method.method",
            |d| set("/restore_method/method", json!("UNDEFINED"))(d)
        ),
        case!(
            "stop/start without service",
            Wmd,
            "restore_method.service",
            |d| remove(d, "/restore_method", "service")
        ),
        case!("usage type UNDEFINED", Wmd, "identity.usage_type", |d| set(
            "/identity/usage_type",
            json!("UNDEFINED")
        )(
            d
        )),
        case!("nil class id", Wmd, "identity.class_id", |d| set(
            "/identity/class_id",
            json!("00000000-0000-0000-0000-000000000000")
        )(d)),
        case!("class id not a GUID", Wmd, "identity.class_id", |d| set(
            "/identity/class_id",
            json!("not-a-guid")
        )(
            d
        )),
        case!("empty writer name", Wmd, "identity.writer_name", |d| set(
            "/identity/writer_name",
            json!("")
        )(
            d
        )),
        case!("no components", Wmd, "components", |d| set(
            "/components",
            json!([])
        )(d)),
        case!("duplicate component", Wmd, "components[2]", |d| {
            let first = d["components"][0].clone();
            d["components"].as_array_mut().unwrap().push(first);
        }),
        case!("NUL in a path", Wmd, "components[0].files[0].path", |d| {
            component0(d)["files"][0]["path"] = json!("/var/lib/\u{0}postgresql")
        }),
        case!("relative path", Wmd, "components[0].files[0].path", |d| {
            component0(d)["files"][0]["path"] = json!("var/lib/postgresql")
        }),
        case!(
            "wildcard in a path",
            Wmd,
            "components[0].files[0].path",
            |d| component0(d)["files"][0]["path"] = json!("/var/lib/*/main")
        ),
        case!(
            "separator in a filespec",
            Wmd,
            "components[0].files[0].filespec",
            |d| component0(d)["files"][0]["filespec"] = json!("base/*")
        ),
        case!(
            "empty filespec",
            Wmd,
            "components[0].files[0].filespec",
            |d| component0(d)["files"][0]["filespec"] = json!("")
        ),
        case!(
            "logical path with an empty segment",
            Wmd,
            "components[0].logical_path",
            |d| component0(d)["logical_path"] = json!("clusters\\\\15")
        ),
        case!(
            "logical path with a trailing separator",
            Wmd,
            "components[1].logical_path",
            |d| d["components"][1]["logical_path"] = json!("clusters\\15\\main\\")
        ),
        case!(
            "backslash in a component name",
            Wmd,
            "components[0].name",
            |d| component0(d)["name"] = json!("a\\b")
        ),
        case!("selectable_for_backup missing", Wmd, "components[0]", |d| {
            remove(d, "/components/0", "selectable_for_backup")
        }),
        case!(
            "unknown component flag bits",
            Wmd,
            "components[0].component_flags",
            |d| component0(d)["component_flags"] = json!(64)
        ),
        case!(
            "unknown backup type mask bits",
            Wmd,
            "components[0].files[0].backup_type_mask",
            |d| component0(d)["files"][0]["backup_type_mask"] = json!(0x1000)
        ),
        case!(
            "recursive database file set",
            Wmd,
            "components[1].database_files[0].recursive",
            |d| d["components"][1]["database_files"][0]["recursive"] = json!(true)
        ),
        case!(
            "database component with plain files",
            Wmd,
            "components[1].files",
            |d| d["components"][1]["files"] = d["components"][0]["files"].clone()
        ),
        case!(
            "alternate mapping matching no file set",
            Wmd,
            "alternate_location_mappings[0].source",
            |d| d["alternate_location_mappings"][0]["source"]["filespec"] = json!("*.dat")
        ),
        case!(
            "unknown field",
            Wmd,
            "identity",
            |d| d["identity"]["nickname"] = json!("pg")
        ),
        case!(
            "component name of the wrong type",
            Wmd,
            "components[0].name",
            |d| component0(d)["name"] = json!(17)
        ),
        case!(
            "remote logical path on a component",
            Wmd,
            "components[0].logical_path",
            |d| component0(d)["logical_path"] = json!("\\\\host\\x")
        ),
        case!(
            "empty dependency name",
            Wmd,
            "components[0].dependencies[0].component_name",
            |d| component0(d)["dependencies"][0]["component_name"] = json!("")
        ),
        case!("context ALL", Bcd, "context", |d| set(
            "/context",
            json!("ALL")
        )(d)),
        case!(
            "unknown backup type",
            Bcd,
            "backup_state.backup_type",
            |d| set("/backup_state/backup_type", json!("WEEKLY"))(d)
        ),
        case!(
            "duplicate BCD component",
            Bcd,
            "writers[0].components[1]",
            |d| {
                let first = d["writers"][0]["components"][0].clone();
                d["writers"][0]["components"]
                    .as_array_mut()
                    .unwrap()
                    .push(first);
            }
        ),
        case!(
            "duplicate volume",
            Bcd,
            "snapshots[1].volume",
            |d| d["snapshots"][1]["volume"] = json!("/var/lib/postgresql/")
        ),
        case!(
            "relative volume",
            Bcd,
            "snapshots[0].volume",
            |d| d["snapshots"][0]["volume"] = json!("srv")
        ),
        case!(
            "bad partial ranges",
            Bcd,
            "writers[0].components[0].partial_files[0].ranges",
            |d| record0(d)["partial_files"][0]["ranges"] = json!("0-8192")
        ),
        case!(
            "relative ranges file",
            Bcd,
            "writers[0].components[0].partial_files[0].ranges",
            |d| record0(d)["partial_files"][0]["ranges"] = json!("File=ranges.bin")
        ),
        case!(
            "unknown failure code",
            Bcd,
            "writers[0].components[0].failure.code",
            |d| record0(d)["failure"]["code"] = json!(12345)
        ),
        case!(
            "relative new target",
            Bcd,
            "writers[0].components[0].new_targets[0].alternate_path",
            |d| record0(d)["new_targets"][0]["alternate_path"] = json!("restore")
        ),
        case!(
            "empty subcomponent segment",
            Bcd,
            "writers[0].components[0].restore_subcomponents[0].logical_path",
            |d| record0(d)["restore_subcomponents"][0]["logical_path"] = json!("clusters\\\\main")
        ),
        case!("negative snapshot set id", Bcd, "snapshot_set_id", |d| set(
            "/snapshot_set_id",
            json!(-1)
        )(
            d
        )),
        case!(
            "unknown file restore status",
            Bcd,
            "writers[0].components[0].file_restore_status",
            |d| record0(d)["file_restore_status"] = json!("SOME")
        ),
        case!(
            "NUL in a component name",
            Bcd,
            "writers[0].components[0].name",
            |d| record0(d)["name"] = json!("ma\u{0}in")
        ),
    ]
}

fn parse(kind: Kind, text: &str) -> Result<(), DocumentError> {
    match kind {
        Kind::Wmd => WriterMetadata::from_json(text).map(drop),
        Kind::Bcd => BackupComponents::from_json(text).map(drop),
    }
}

/// Each malformed document is refused, and the error names the field (and the value, for rule breaks).
#[test]
fn malformed_documents_name_the_field() {
    let cases = cases();
    assert!(cases.len() >= 25);
    for case in cases {
        let fixture = if case.kind == Kind::Wmd {
            FULL_WMD
        } else {
            FULL_BCD
        };
        let mut doc: Value = serde_json::from_str(fixture).unwrap();
        (case.mutate)(&mut doc);
        let text = serde_json::to_string(&doc).unwrap();
        let error = parse(case.kind, &text).expect_err(case.name);
        let message = error.to_string();
        assert!(
            error.fields().iter().any(|f| f.starts_with(case.field)),
            "{}: expected field {} in {:?}: {message}",
            case.name,
            case.field,
            error.fields()
        );
        assert!(message.contains(case.field), "{}: {message}", case.name);
        if let DocumentError::Invalid { errors, .. } = &error {
            assert!(
                errors
                    .iter()
                    .all(|e| !e.rule.is_empty() && message.contains(e.rule))
            );
        }
        assert!(
            [
                codes::VSS_E_INVALID_XML_DOCUMENT,
                codes::VSS_E_CORRUPT_XML_DOCUMENT
            ]
            .contains(&error.code()),
            "{}",
            case.name
        );
    }
}

/// Truncated JSON at every position is refused as corrupt, never a panic.
#[test]
fn truncated_documents_are_corrupt() {
    for fixture in [FULL_WMD, FULL_BCD] {
        for end in (0..fixture.len() - 2).step_by(7) {
            let text = &fixture[..end];
            let result = if fixture == FULL_WMD {
                WriterMetadata::from_json(text).map(drop)
            } else {
                BackupComponents::from_json(text).map(drop)
            };
            let error = result.expect_err("a truncated document is refused");
            assert!(
                matches!(
                    error,
                    DocumentError::Syntax { .. } | DocumentError::SchemaVersion { .. }
                ),
                "{error}"
            );
        }
    }
}

/// Trailing garbage after the document is refused.
#[test]
fn trailing_text_is_refused() {
    let text = format!("{} {{}}", FULL_WMD.trim());
    let error = WriterMetadata::from_json(&text).unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_CORRUPT_XML_DOCUMENT, "{error}");
}

/// WMD-13 and WMD-14 are SHOULD rules: reported as warnings, not errors.
#[test]
fn should_rules_are_warnings() {
    let mut wmd = WriterMetadata::from_json(FULL_WMD).unwrap();
    assert!(wmd.warnings().is_empty());
    wmd.components[0].dependencies[0].writer_class_id = wmd.identity.class_id;
    let shared = wmd.components[1].database_files[0].clone();
    wmd.components[0].files.push(shared);
    let rules: Vec<_> = wmd.warnings().iter().map(|w| w.rule).collect();
    assert_eq!(rules, ["WMD-13", "WMD-14"]);
    assert!(
        wmd.validate().is_ok(),
        "warnings do not make a document invalid"
    );
}

/// WMD-18: writer-level include lists are obsolete; a document that has one is refused.
#[test]
fn writer_level_includes_are_refused() {
    let mut doc: Value = serde_json::from_str(FULL_WMD).unwrap();
    doc["includes"] = json!([{ "path": "/srv", "filespec": "*", "recursive": true }]);
    let error = WriterMetadata::from_json(&doc.to_string()).unwrap_err();
    assert!(error.to_string().contains("includes"), "{error}");
}

/// WMD-8 and DEP-3: the component summary counts files, database files, log files and dependencies.
#[test]
fn component_summary_counts() {
    let wmd = WriterMetadata::from_json(FULL_WMD).unwrap();
    let data = wmd.components[0].counts();
    assert_eq!(
        (
            data.files,
            data.database_files,
            data.database_log_files,
            data.dependencies
        ),
        (1, 0, 0, 1)
    );
    let wal = wmd.component("clusters\\15\\main", "wal").unwrap().counts();
    assert_eq!(
        (
            wal.files,
            wal.database_files,
            wal.database_log_files,
            wal.dependencies
        ),
        (0, 1, 1, 0)
    );
    assert!(
        wmd.components[0].dependencies[0].is_remote(),
        "DEP-2: `\\\\storage1\\` is remote"
    );
}
