//! Scenario tests of the component selection engine (spec §8, TS-28 to TS-36, TS-41 to TS-43, TS-52),
//! on the SEL-EX-1 "MyWriter" fixture, a dependency-target writer and a system-state writer.

use shadowcopy_metadata::bcd::{
    ComponentRecord, Party, Phase, RestoreSubcomponent, WriterComponents,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{
    BackupType, ComponentType, FileSpecBackupType, UsageType, WriterRestore,
};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::selection::{
    BackupRequest, BackupSelection, ComponentSelector, CopyMode, DependencyPolicy, Inclusion,
    Participation, Reason, RestoreReason, RestoreRequest, RestoreSelection, SelectedWriter,
    SelectionError, WriterSelector, check_bcd, resolve_backup, resolve_restore,
};
use shadowcopy_metadata::wmd::{Component, Dependency};
use shadowcopy_metadata::{
    BackupComponents, Guid, WriterClassId, WriterInstanceId, WriterMetadata,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> WriterMetadata {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    <WriterMetadata as Document>::from_json(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn mywriter() -> WriterMetadata {
    fixture("mywriter.wmd.json")
}

fn writer_x() -> WriterMetadata {
    fixture("writer-x.wmd.json")
}

fn system_writer() -> WriterMetadata {
    fixture("system-state.wmd.json")
}

fn selectors(texts: &[&str]) -> Vec<ComponentSelector> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

fn request(texts: &[&str]) -> BackupRequest {
    BackupRequest::new(selectors(texts))
}

fn backup(writers: &[WriterMetadata], texts: &[&str]) -> BackupSelection {
    resolve_backup(writers, &request(texts)).unwrap_or_else(|e| panic!("{e}"))
}

fn refused(writers: &[WriterMetadata], request: &BackupRequest) -> SelectionError {
    match resolve_backup(writers, request) {
        Ok(selection) => panic!("expected a refusal, got {selection:#?}"),
        Err(error) => error,
    }
}

fn component_mut<'a>(wmd: &'a mut WriterMetadata, full_path: &str) -> &'a mut Component {
    wmd.components
        .iter_mut()
        .find(|c| c.full_path() == full_path)
        .unwrap_or_else(|| panic!("no component {full_path}"))
}

/// The explicitly included components with their reasons, in WMD order.
fn explicit(writer: &SelectedWriter) -> Vec<(String, Reason)> {
    writer
        .explicit_components()
        .map(|c| (c.full_path(), c.reason.clone()))
        .collect()
}

/// The implicitly included components with the set that brings each in, in WMD order.
fn implicit(writer: &SelectedWriter) -> Vec<(String, String)> {
    writer
        .implicit_components()
        .map(|c| match &c.inclusion {
            Inclusion::Implicit { set } => {
                assert_eq!(
                    c.reason,
                    Reason::InSetOf { set: set.clone() },
                    "{}",
                    c.full_path()
                );
                (c.full_path(), set.clone())
            }
            Inclusion::Explicit => unreachable!(),
        })
        .collect()
}

fn owned(pairs: &[(&str, Reason)]) -> Vec<(String, Reason)> {
    pairs
        .iter()
        .map(|(p, r)| (p.to_string(), r.clone()))
        .collect()
}

fn in_set(set: &str, members: &[&str]) -> Vec<(String, String)> {
    members
        .iter()
        .map(|m| (m.to_string(), set.to_string()))
        .collect()
}

const WRITER_DATA_SET: [&str; 10] = [
    "writerData\\Set1",
    "writerData\\Set1\\Jan",
    "writerData\\Set1\\Dec",
    "writerData\\Set2",
    "writerData\\Set2\\Jan",
    "writerData\\Set2\\Dec",
    "writerData\\QueryLogs\\Query",
    "writerData\\Usage",
    "writerData\\Usage\\Jan",
    "writerData\\Usage\\Dec",
];

/// The full paths of the records of each writer entry in a BCD.
fn records(bcd: &BackupComponents) -> Vec<Vec<String>> {
    bcd.writers()
        .iter()
        .map(|w| {
            w.components()
                .iter()
                .map(ComponentRecord::full_path)
                .collect()
        })
        .collect()
}

/// A BCD made by hand, as a careless requester would: these records for one writer.
fn hand_made_bcd(wmd: &WriterMetadata, full_paths: &[&str]) -> BackupComponents {
    let mut bcd = BackupComponents::new();
    let entry = WriterComponents::new(
        wmd.identity.class_id,
        wmd.identity.instance_id,
        wmd.identity.instance_name.clone(),
    );
    for full in full_paths {
        let (path, name) = full.rsplit_once('\\').unwrap_or(("", full));
        let kind = wmd
            .component(path, name)
            .map_or(ComponentType::FileGroup, |c| c.component_type);
        bcd.add_component(
            Phase::BackupDiscovery,
            &entry,
            ComponentRecord::new(kind, path, name),
        )
        .unwrap();
    }
    bcd
}

fn rules(error: &SelectionError) -> Vec<(&'static str, Option<String>)> {
    error
        .problems()
        .iter()
        .map(|p| (p.rule, p.component.clone()))
        .collect()
}

/// Asserts the error has exactly one problem, of this rule and code, and returns its message.
fn single_problem(error: &SelectionError, rule: &str, code: codes::ErrorCode) -> String {
    assert_eq!(error.problems().len(), 1, "{error}");
    let problem = &error.problems()[0];
    assert_eq!(problem.rule, rule, "{error}");
    assert_eq!(problem.code(), code, "{error}");
    assert_eq!(error.code(), code);
    let text = error.to_string();
    assert!(text.contains(rule), "the message must cite {rule}: {text}");
    text
}

/// writerData depends on WriterX's `Connections\internetData` (TS-36).
fn mywriter_depending_on_x() -> WriterMetadata {
    let x = writer_x();
    let mut my = mywriter();
    component_mut(&mut my, "writerData")
        .dependencies
        .push(Dependency {
            writer_class_id: x.identity.class_id,
            logical_path: "Connections".into(),
            component_name: "internetData".into(),
        });
    my
}

fn backed_up_bcd(writers: &[WriterMetadata], texts: &[&str]) -> BackupComponents {
    let selection = backup(writers, texts);
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    bcd
}

fn restore(bcd: &BackupComponents, stored: &[WriterMetadata], texts: &[&str]) -> RestoreSelection {
    let request = RestoreRequest {
        selected: selectors(texts),
    };
    resolve_restore(bcd, stored, &request).unwrap_or_else(|e| panic!("{e}"))
}

fn restore_refused(
    bcd: &BackupComponents,
    stored: &[WriterMetadata],
    texts: &[&str],
) -> SelectionError {
    let request = RestoreRequest {
        selected: selectors(texts),
    };
    match resolve_restore(bcd, stored, &request) {
        Ok(selection) => panic!("expected a refusal, got {selection:#?}"),
        Err(error) => error,
    }
}

fn members(selection: &RestoreSelection) -> Vec<(String, RestoreReason)> {
    selection.writers[0]
        .members
        .iter()
        .map(|m| (m.full_path(), m.reason.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The fixture and the selector syntax
// ---------------------------------------------------------------------------------------------

/// SEL-EX-1: the fixture is the table of spec §8, row by row.
#[test]
fn sel_ex_1_fixture_is_the_spec_table() {
    let expected = [
        ("Executables", "", false, false),
        ("ConfigFiles", "Executables", false, false),
        ("LicenseInfo", "", true, false),
        ("Security", "", true, false),
        ("UserInfo", "Security", false, false),
        ("Certificates", "Security", false, false),
        ("writerData", "", true, true),
        ("Set1", "writerData", false, true),
        ("Jan", "writerData\\Set1", false, false),
        ("Dec", "writerData\\Set1", false, false),
        ("Set2", "writerData", false, true),
        ("Jan", "writerData\\Set2", false, false),
        ("Dec", "writerData\\Set2", false, false),
        ("Query", "writerData\\QueryLogs", false, false),
        ("Usage", "writerData", true, true),
        ("Jan", "writerData\\Usage", false, false),
        ("Dec", "writerData\\Usage", false, false),
    ];
    let wmd = mywriter();
    let actual: Vec<_> = wmd
        .components
        .iter()
        .map(|c| {
            assert!(!c.files.is_empty(), "{} has a file set", c.full_path());
            (
                c.name.as_str(),
                c.logical_path.as_str(),
                c.selectable_for_backup,
                c.selectable_for_restore,
            )
        })
        .collect();
    assert_eq!(actual, expected);
    writer_x();
    system_writer();
}

#[test]
fn selectors_have_a_text_form() {
    let selector: ComponentSelector = "MyWriter:writerData\\Set1".parse().unwrap();
    assert_eq!(selector.writer, WriterSelector::Name("MyWriter".into()));
    assert_eq!(
        (selector.logical_path.as_str(), selector.name.as_str()),
        ("writerData", "Set1")
    );
    assert_eq!(selector.to_string(), "MyWriter:writerData\\Set1");

    let top: ComponentSelector = "MyWriter:writerData".parse().unwrap();
    assert_eq!(
        (top.logical_path.as_str(), top.name.as_str()),
        ("", "writerData")
    );

    let class = "{5B3D6B9E-6A4A-4F4E-9C8A-1D2E3F4A5B6C}:Security\\UserInfo";
    let by_class: ComponentSelector = class.parse().unwrap();
    assert_eq!(
        by_class.writer,
        WriterSelector::ClassId(mywriter().identity.class_id)
    );
    assert_eq!(
        by_class.to_string(),
        "5b3d6b9e-6a4a-4f4e-9c8a-1d2e3f4a5b6c:Security\\UserInfo"
    );
    assert_eq!(
        by_class.to_string().parse::<ComponentSelector>().unwrap(),
        by_class
    );

    let instance = mywriter().identity.instance_id;
    let by_instance = ComponentSelector::new(instance, "", "LicenseInfo");
    assert_eq!(
        by_instance.to_string(),
        format!("instance={instance}:LicenseInfo")
    );
    assert_eq!(
        by_instance
            .to_string()
            .parse::<ComponentSelector>()
            .unwrap(),
        by_instance
    );

    for bad in [
        "",
        "MyWriter",
        "MyWriter:",
        ":writerData",
        "MyWriter:writerData\\",
        "instance=xyz:a",
    ] {
        let error = bad.parse::<ComponentSelector>().unwrap_err();
        single_problem(&error, "LP-2", codes::E_INVALIDARG);
    }
}

// ---------------------------------------------------------------------------------------------
// Backup selection (TS-28 to TS-31, SEL-EX-1)
// ---------------------------------------------------------------------------------------------

/// TS-28: writerData plus the required Executables. The BCD lists writerData, Executables and
/// ConfigFiles (NOTE-5: SEL-2 makes ConfigFiles required, as it has no selectable ancestor), and
/// the backup set is the union of the file sets of writerData's whole set.
#[test]
fn ts_28_writer_data_with_required_executables() {
    let wmd = mywriter();
    let selection = backup(
        std::slice::from_ref(&wmd),
        &["MyWriter:writerData", "MyWriter:Executables"],
    );
    assert_eq!(selection.writers.len(), 1);
    let writer = &selection.writers[0];
    assert_eq!(writer.participation, Participation::Components);
    assert_eq!(
        explicit(writer),
        owned(&[
            ("Executables", Reason::Requested),
            ("Executables\\ConfigFiles", Reason::Required),
            ("writerData", Reason::Requested),
        ])
    );
    assert_eq!(implicit(writer), in_set("writerData", &WRITER_DATA_SET));
    assert!(writer.component("", "LicenseInfo").is_none());
    assert!(writer.component("", "Security").is_none());

    // The backup set: every file set of writerData and its members, read whole from the snapshot.
    let mut copied: Vec<String> = writer
        .components
        .iter()
        .filter(|c| c.full_path().starts_with("writerData"))
        .flat_map(|c| &c.files)
        .map(|f| {
            assert_eq!(
                (f.copy, f.from_snapshot),
                (CopyMode::Whole, true),
                "{}",
                f.path
            );
            f.path.clone()
        })
        .collect();
    copied.sort();
    let mut expected: Vec<String> = std::iter::once("writerData")
        .chain(WRITER_DATA_SET)
        .flat_map(|full| wmd.component_by_full_path(full).unwrap().all_files())
        .map(|f| f.path.clone())
        .collect();
    expected.sort();
    assert_eq!(copied, expected);
    assert_eq!(
        writer.excludes, wmd.excludes,
        "excludes travel with the plan (BK-COPY-3)"
    );

    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    assert_eq!(
        records(&bcd),
        [["Executables", "Executables\\ConfigFiles", "writerData"]]
    );
    check_bcd(&bcd, &[wmd]).unwrap();
}

/// SEL-2: the required components come in whenever any component of the writer is included.
#[test]
fn sel_2_required_components_follow_any_selection() {
    let selection = backup(&[mywriter()], &["MyWriter:writerData"]);
    let writer = &selection.writers[0];
    assert_eq!(
        explicit(writer),
        owned(&[
            ("Executables", Reason::Required),
            ("Executables\\ConfigFiles", Reason::Required),
            ("writerData", Reason::Requested),
        ])
    );
}

/// TS-29: Usage alone brings in its Jan and Dec; Set1, Set2 and Query stay out.
#[test]
fn ts_29_usage_alone() {
    let selection = backup(&[mywriter()], &["MyWriter:writerData\\Usage"]);
    let writer = &selection.writers[0];
    assert_eq!(
        explicit(writer),
        owned(&[
            ("Executables", Reason::Required),
            ("Executables\\ConfigFiles", Reason::Required),
            ("writerData\\Usage", Reason::Requested),
        ])
    );
    assert_eq!(
        implicit(writer),
        in_set(
            "writerData\\Usage",
            &["writerData\\Usage\\Jan", "writerData\\Usage\\Dec"]
        )
    );
    for absent in [
        "writerData",
        "writerData\\Set1",
        "writerData\\Set2",
        "writerData\\QueryLogs\\Query",
    ] {
        assert!(
            !writer.components.iter().any(|c| c.full_path() == absent),
            "{absent}"
        );
    }
}

/// TS-29, SEL-4: Usage must not be added when writerData is; the resolver and the lint both say so.
#[test]
fn ts_29_usage_with_writer_data_is_refused() {
    let wmd = mywriter();
    let error = refused(
        std::slice::from_ref(&wmd),
        &request(&["MyWriter:writerData", "MyWriter:writerData\\Usage"]),
    );
    let text = single_problem(&error, "SEL-4", codes::E_INVALIDARG);
    assert!(
        text.contains("writerData\\Usage") && text.contains("MyWriter"),
        "{text}"
    );
    assert_eq!(
        error.problems()[0].component.as_deref(),
        Some("writerData\\Usage")
    );

    let bcd = hand_made_bcd(
        &wmd,
        &[
            "Executables",
            "Executables\\ConfigFiles",
            "writerData",
            "writerData\\Usage",
        ],
    );
    let lint = check_bcd(&bcd, &[wmd]).unwrap_err();
    assert_eq!(rules(&lint), [("SEL-4", Some("writerData\\Usage".into()))]);
}

/// TS-30: LicenseInfo without the required Executables (and ConfigFiles) is non-conforming.
#[test]
fn ts_30_license_info_without_required_executables_is_flagged() {
    let wmd = mywriter();
    let bcd = hand_made_bcd(&wmd, &["LicenseInfo"]);
    let error = check_bcd(&bcd, std::slice::from_ref(&wmd)).unwrap_err();
    assert_eq!(
        rules(&error),
        [
            ("SEL-2", Some("Executables".into())),
            ("SEL-2", Some("Executables\\ConfigFiles".into())),
        ]
    );
    assert_eq!(error.code(), codes::E_INVALIDARG);
    assert!(error.to_string().contains("SEL-2"));

    // The resolver adds them instead, and its BCD passes the lint.
    let selection = backup(std::slice::from_ref(&wmd), &["MyWriter:LicenseInfo"]);
    assert_eq!(
        explicit(&selection.writers[0]),
        owned(&[
            ("Executables", Reason::Required),
            ("Executables\\ConfigFiles", Reason::Required),
            ("LicenseInfo", Reason::Requested),
        ])
    );
    assert!(
        selection.writers[0].implicit_components().next().is_none(),
        "LicenseInfo stands alone"
    );
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    check_bcd(&bcd, &[wmd]).unwrap();
}

/// TS-30, BK-DISC-3: unknown writers and components are refused with VSS_E_OBJECT_NOT_FOUND.
#[test]
fn ts_30_unknown_component_is_refused() {
    let writers = [mywriter()];
    let error = refused(&writers, &request(&["MyWriter:writerData\\NoSuchSet"]));
    let text = single_problem(&error, "BK-DISC-3", codes::VSS_E_OBJECT_NOT_FOUND);
    assert!(
        text.contains("MyWriter") && text.contains("writerData\\NoSuchSet"),
        "{text}"
    );

    let error = refused(&writers, &request(&["NoSuchWriter:writerData"]));
    let text = single_problem(&error, "BK-DISC-3", codes::VSS_E_OBJECT_NOT_FOUND);
    assert!(text.contains("NoSuchWriter"), "{text}");

    // All problems are reported together.
    let error = refused(
        &writers,
        &request(&["MyWriter:Nope", "Other:Nope", "MyWriter:writerData\\Set1"]),
    );
    let found: Vec<_> = error.problems().iter().map(|p| p.rule).collect();
    assert_eq!(found, ["BK-DISC-3", "BK-DISC-3", "SEL-3"]);
    assert!(error.to_string().starts_with("3 problems"), "{error}");
}

/// TS-30: the lint names unknown records, implicitly included records and wrong types.
#[test]
fn ts_30_check_bcd_flags_unknown_and_implicit_records() {
    let wmd = mywriter();
    let mut bcd = hand_made_bcd(
        &wmd,
        &[
            "Executables",
            "Executables\\ConfigFiles",
            "writerData",
            "writerData\\Set1",
            "writerData\\Usage",
            "Bogus",
        ],
    );
    let entry = WriterComponents::new(wmd.identity.class_id, wmd.identity.instance_id, None);
    bcd.add_component(
        Phase::BackupDiscovery,
        &entry,
        ComponentRecord::new(ComponentType::Database, "", "LicenseInfo"),
    )
    .unwrap();
    let stranger = WriterComponents::new(
        WriterClassId::new_random(),
        WriterInstanceId::new_random(),
        None,
    );
    bcd.add_component(
        Phase::BackupDiscovery,
        &stranger,
        ComponentRecord::new(ComponentType::FileGroup, "", "x"),
    )
    .unwrap();
    let error = check_bcd(&bcd, &[wmd]).unwrap_err();
    let found: Vec<_> = error
        .problems()
        .iter()
        .map(|p| (p.rule, p.code().name))
        .collect();
    assert_eq!(
        found,
        [
            ("SEL-3", "E_INVALIDARG"),
            ("BK-DISC-3", "VSS_E_OBJECT_NOT_FOUND"),
            ("BK-DISC-3", "E_INVALIDARG"),
            ("BK-DISC-3", "VSS_E_OBJECT_NOT_FOUND"),
            ("SEL-4", "E_INVALIDARG"),
        ]
    );
    let sel_3 = &error.problems()[0];
    assert!(
        sel_3.message.contains("select `writerData` instead") && sel_3.message.contains("BCD-3")
    );
}

/// SEL-EX-1: Security brings in UserInfo and Certificates.
#[test]
fn sel_ex_1_security_brings_in_userinfo_and_certificates() {
    let selection = backup(&[mywriter()], &["MyWriter:Security"]);
    let writer = &selection.writers[0];
    assert_eq!(
        explicit(writer),
        owned(&[
            ("Executables", Reason::Required),
            ("Executables\\ConfigFiles", Reason::Required),
            ("Security", Reason::Requested),
        ])
    );
    assert_eq!(
        implicit(writer),
        in_set(
            "Security",
            &["Security\\UserInfo", "Security\\Certificates"]
        )
    );
}

/// SEL-3: a non-selectable subcomponent cannot be requested; the message names its set.
#[test]
fn sel_3_non_selectable_subcomponent_names_the_set_to_select() {
    let writers = [mywriter()];
    for (asked, set) in [
        ("MyWriter:writerData\\Set1", "writerData"),
        ("MyWriter:Security\\UserInfo", "Security"),
        ("MyWriter:writerData\\Usage\\Jan", "writerData\\Usage"),
    ] {
        let error = refused(&writers, &request(&[asked]));
        let text = single_problem(&error, "SEL-3", codes::E_INVALIDARG);
        assert!(text.contains(&format!("select `{set}` instead")), "{text}");
    }
}

/// SEL-5 / TS-31: a writer with nothing selected takes no part.
#[test]
fn sel_5_writers_with_nothing_selected_take_no_part() {
    let selection = backup(
        &[mywriter(), writer_x(), system_writer()],
        &["MyWriter:LicenseInfo"],
    );
    let names: Vec<_> = selection
        .writers
        .iter()
        .map(|w| w.writer_name.as_str())
        .collect();
    assert_eq!(names, ["MyWriter"]);
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    assert_eq!(bcd.writer_components_count(), 1);
}

/// ROLE-7: a name that matches two instances that both have the component is ambiguous.
#[test]
fn role_7_ambiguous_writer_needs_an_instance() {
    let first = mywriter();
    let mut second = mywriter();
    second.identity.instance_id = WriterInstanceId::new_random();
    let writers = [first, second.clone()];
    let error = refused(&writers, &request(&["MyWriter:writerData"]));
    let text = single_problem(&error, "ROLE-7", codes::E_INVALIDARG);
    assert!(
        text.contains(&second.identity.instance_id.to_string()),
        "{text}"
    );

    let chosen = format!("instance={}:writerData", second.identity.instance_id);
    let selection = backup(&writers, &[&chosen]);
    assert_eq!(selection.writers.len(), 1);
    assert_eq!(
        selection.writers[0].instance_id,
        second.identity.instance_id
    );

    // Listing the same instance twice is refused outright.
    let error = refused(
        &[mywriter(), mywriter()],
        &request(&["MyWriter:writerData"]),
    );
    single_problem(&error, "ROLE-7", codes::E_INVALIDARG);
}

// ---------------------------------------------------------------------------------------------
// Volume mode, backup types, system state
// ---------------------------------------------------------------------------------------------

/// SEL-6, BK-DISC-5: in volume mode every writer takes part, with no components.
#[test]
fn sel_6_volume_mode_includes_every_writer_without_components() {
    let writers = [mywriter(), writer_x()];
    let request = BackupRequest {
        component_mode: false,
        ..BackupRequest::default()
    };
    let selection = resolve_backup(&writers, &request).unwrap();
    assert_eq!(selection.writers.len(), 2);
    for writer in &selection.writers {
        assert_eq!(writer.participation, Participation::VolumeMode);
        assert!(writer.components.is_empty());
    }
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    assert!(bcd.writers().is_empty());
    assert!(!bcd.backup_state().component_mode);
    check_bcd(&bcd, &writers).unwrap();
}

/// SEL-6: components cannot be chosen in volume mode, and a volume-mode BCD lists none.
#[test]
fn sel_6_volume_mode_refuses_components() {
    let wmd = mywriter();
    let request = BackupRequest {
        component_mode: false,
        ..request(&["MyWriter:writerData"])
    };
    let error = refused(std::slice::from_ref(&wmd), &request);
    single_problem(&error, "SEL-6", codes::E_INVALIDARG);

    let mut bcd = hand_made_bcd(
        &wmd,
        &["Executables", "Executables\\ConfigFiles", "LicenseInfo"],
    );
    let mut state = bcd.backup_state();
    state.component_mode = false;
    bcd.set_backup_state(Phase::BackupDiscovery, state).unwrap();
    let error = check_bcd(&bcd, &[wmd]).unwrap_err();
    single_problem(&error, "BK-DISC-5", codes::E_INVALIDARG);
}

/// SEL-7 / TS-42: a component whose files are all LOG_BACKUP_REQUIRED contributes nothing to a full
/// backup although it is included, and all of them to a log backup.
#[test]
fn sel_7_log_only_component_contributes_nothing_to_full() {
    let mut wmd = mywriter();
    let log_only =
        FileSpecBackupType::LOG_BACKUP_REQUIRED | FileSpecBackupType::LOG_SNAPSHOT_REQUIRED;
    component_mut(&mut wmd, "writerData\\QueryLogs\\Query").files[0].backup_type_mask = log_only;
    let full_only =
        FileSpecBackupType::FULL_BACKUP_REQUIRED | FileSpecBackupType::FULL_SNAPSHOT_REQUIRED;
    component_mut(&mut wmd, "writerData").files[0].backup_type_mask = full_only;
    let writers = [wmd];

    let full = backup(&writers, &["MyWriter:writerData"]);
    let query = full.writers[0]
        .component("writerData\\QueryLogs", "Query")
        .unwrap();
    assert_eq!(
        query.inclusion,
        Inclusion::Implicit {
            set: "writerData".into()
        }
    );
    assert_eq!(query.files[0].copy, CopyMode::Skip);
    assert_eq!(
        full.writers[0].component("", "writerData").unwrap().files[0].copy,
        CopyMode::Whole
    );

    let log_request = BackupRequest {
        backup_type: BackupType::Log,
        ..request(&["MyWriter:writerData"])
    };
    let log = resolve_backup(&writers, &log_request).unwrap();
    let writer = &log.writers[0];
    assert_eq!(writer.effective_backup_type, BackupType::Log);
    let query = writer.component("writerData\\QueryLogs", "Query").unwrap();
    assert_eq!(
        (query.files[0].copy, query.files[0].from_snapshot),
        (CopyMode::Whole, true)
    );
    assert_eq!(
        writer.component("", "writerData").unwrap().files[0].copy,
        CopyMode::Skip
    );
    // Default masks (0xF0F) copy every other set whole in a log backup too.
    assert_eq!(
        writer.component("writerData", "Set1").unwrap().files[0].copy,
        CopyMode::Whole
    );
}

/// INC-2 / TS-43: in an incremental a set without its backup-required bit copies changes only; a set
/// without the snapshot bit may be read live, and with none left the snapshot can be skipped.
#[test]
fn inc_2_incremental_copies_changes_unless_the_set_is_required() {
    let mut wmd = mywriter();
    let changes_only = FileSpecBackupType::from_bits(0xF0F & !0x4).unwrap();
    component_mut(&mut wmd, "writerData\\Set1").files[0].backup_type_mask = changes_only;
    let live = FileSpecBackupType::from_bits(0xF0F & !0x400).unwrap();
    component_mut(&mut wmd, "writerData\\Set2").files[0].backup_type_mask = live;
    let writers = [wmd];
    let incremental = BackupRequest {
        backup_type: BackupType::Incremental,
        ..request(&["MyWriter:writerData"])
    };
    let selection = resolve_backup(&writers, &incremental).unwrap();
    let writer = &selection.writers[0];
    let plan = |path: &str, name: &str| {
        let file = &writer.component(path, name).unwrap().files[0];
        (file.copy, file.from_snapshot)
    };
    assert_eq!(plan("writerData", "Set1"), (CopyMode::ChangedOnly, true));
    assert_eq!(plan("writerData", "Set2"), (CopyMode::Whole, false));
    assert_eq!(plan("", "writerData"), (CopyMode::Whole, true));
    assert!(selection.needs_snapshot());

    // A log backup in which no copied set needs the snapshot.
    let mut wmd = mywriter();
    for component in &mut wmd.components {
        for file in &mut component.files {
            file.backup_type_mask = FileSpecBackupType::LOG_BACKUP_REQUIRED;
        }
    }
    let log = BackupRequest {
        backup_type: BackupType::Log,
        ..request(&["MyWriter:LicenseInfo"])
    };
    let selection = resolve_backup(&[wmd], &log).unwrap();
    assert!(!selection.needs_snapshot());
}

/// BT-2 / TS-41: a writer whose schema lacks the requested type is planned as FULL and says so;
/// the BCD still carries the requested type.
#[test]
fn bt_2_writer_without_incremental_schema_is_planned_full() {
    let partial_mask = FileSpecBackupType::from_bits(0xF0F & !0x4).unwrap();
    let mut x = writer_x();
    component_mut(&mut x, "Connections").files[0].backup_type_mask = partial_mask;
    let mut my = mywriter();
    component_mut(&mut my, "LicenseInfo").files[0].backup_type_mask = partial_mask;
    let incremental = BackupRequest {
        backup_type: BackupType::Incremental,
        ..request(&["MyWriter:LicenseInfo", "WriterX:Connections"])
    };
    let selection = resolve_backup(&[my, x], &incremental).unwrap();
    let my = selection.writer_named("MyWriter").unwrap();
    let x = selection.writer_named("WriterX").unwrap();
    assert_eq!(my.effective_backup_type, BackupType::Incremental);
    assert!(my.notes.is_empty(), "{:?}", my.notes);
    assert_eq!(
        my.component("", "LicenseInfo").unwrap().files[0].copy,
        CopyMode::ChangedOnly
    );
    assert_eq!(x.effective_backup_type, BackupType::Full);
    assert!(
        x.notes
            .iter()
            .any(|n| n.contains("BT-2") && n.contains("INCREMENTAL")),
        "{:?}",
        x.notes
    );
    assert_eq!(
        x.component("", "Connections").unwrap().files[0].copy,
        CopyMode::Whole
    );

    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    assert_eq!(bcd.backup_state().backup_type, BackupType::Incremental);
}

/// SEL-8: bootable system state includes the system writer whole, less NOT_SYSTEM_STATE components
/// and their sets; other writers stay out unless selected.
#[test]
fn sel_8_system_state_includes_system_writers_except_not_system_state() {
    let writers = [mywriter(), system_writer()];
    let request = BackupRequest {
        bootable_system_state: true,
        ..BackupRequest::default()
    };
    let selection = resolve_backup(&writers, &request).unwrap();
    assert_eq!(selection.writers.len(), 1);
    let system = &selection.writers[0];
    assert_eq!(system.writer_name, "System Writer");
    assert_eq!(
        explicit(system),
        owned(&[
            ("Boot", Reason::SystemState),
            ("Drivers", Reason::SystemState),
            ("Config", Reason::SystemState),
            ("Packages", Reason::SystemState),
        ])
    );
    assert_eq!(implicit(system), in_set("Config", &["Config\\Network"]));
    assert!(system.component("", "Diagnostics").is_none());
    assert!(system.component("Diagnostics", "Dumps").is_none());

    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    assert!(bcd.backup_state().bootable_system_state);
    check_bcd(&bcd, &writers).unwrap();

    // Requested components keep their reason; the system writer still comes.
    let request = BackupRequest {
        bootable_system_state: true,
        ..self::request(&["System Writer:Boot"])
    };
    let selection = resolve_backup(&writers, &request).unwrap();
    assert_eq!(
        selection.writers[0].component("", "Boot").unwrap().reason,
        Reason::Requested
    );
}

/// SEL-8: SYSTEMSERVICE writers count too, even though their components are selectable; a
/// flagged required component still comes (SEL-2) with reason Required.
#[test]
fn sel_8_system_service_writer_is_included_too() {
    let mut x = writer_x();
    x.identity.usage_type = UsageType::SystemService;
    component_mut(&mut x, "Catalog").component_flags =
        shadowcopy_metadata::enums::ComponentFlags::NOT_SYSTEM_STATE;
    let request = BackupRequest {
        bootable_system_state: true,
        ..BackupRequest::default()
    };
    let selection = resolve_backup(&[mywriter(), x], &request).unwrap();
    assert_eq!(selection.writers.len(), 1);
    let writer = &selection.writers[0];
    assert_eq!(
        explicit(writer),
        owned(&[
            ("Catalog", Reason::Required),
            ("Connections", Reason::SystemState),
            ("Archive", Reason::SystemState),
        ])
    );
    assert_eq!(
        implicit(writer),
        in_set(
            "Connections",
            &["Connections\\internetData", "Connections\\intranetData"]
        )
    );
}

/// SEL-8: the lint notices system-state components that are left out.
#[test]
fn sel_8_check_bcd_flags_missing_system_state() {
    let system = system_writer();
    let mut bcd = hand_made_bcd(&system, &["Boot", "Drivers"]);
    let mut state = bcd.backup_state();
    state.bootable_system_state = true;
    bcd.set_backup_state(Phase::BackupDiscovery, state).unwrap();
    let error = check_bcd(&bcd, &[system]).unwrap_err();
    assert_eq!(
        rules(&error),
        [
            ("SEL-8", Some("Config".into())),
            ("SEL-8", Some("Packages".into()))
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Dependencies (DEP-1, DEP-2, TS-36)
// ---------------------------------------------------------------------------------------------

/// TS-36, DEP-1: the target `Connections\internetData` is non-selectable, so its set Connections is
/// added, and WriterX's required Catalog with it.
#[test]
fn dep_1_targets_are_included_through_their_selectable_ancestor() {
    let writers = [mywriter_depending_on_x(), writer_x()];
    let selection = backup(&writers, &["MyWriter:writerData"]);
    assert_eq!(selection.writers.len(), 2);
    let x = selection.writer_named("WriterX").unwrap();
    let because = Reason::DependencyOf {
        writer: "MyWriter".into(),
        component: "writerData".into(),
    };
    assert_eq!(
        explicit(x),
        owned(&[("Catalog", Reason::Required), ("Connections", because)])
    );
    assert_eq!(
        implicit(x),
        in_set(
            "Connections",
            &["Connections\\internetData", "Connections\\intranetData"]
        )
    );
    assert!(x.component("", "Archive").is_none());

    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    assert_eq!(
        records(&bcd),
        [
            vec!["Executables", "Executables\\ConfigFiles", "writerData"],
            vec!["Catalog", "Connections"],
        ]
    );
    check_bcd(&bcd, &writers).unwrap();
}

/// DEP-1: with the Refuse policy a missing target refuses the dependent, naming both.
#[test]
fn dep_1_refuse_policy_names_dependent_and_target() {
    let writers = [mywriter_depending_on_x(), writer_x()];
    let mut request = request(&["MyWriter:writerData"]);
    request.dependencies = DependencyPolicy::Refuse;
    let error = refused(&writers, &request);
    let text = single_problem(&error, "DEP-1", codes::E_INVALIDARG);
    assert!(
        text.contains("writerData") && text.contains("Connections\\internetData"),
        "{text}"
    );
    assert!(
        text.contains("WriterX") && text.contains("MyWriter"),
        "{text}"
    );

    // Selecting the target's set too satisfies the dependency.
    request.selected = selectors(&["MyWriter:writerData", "WriterX:Connections"]);
    resolve_backup(&writers, &request).unwrap();
}

/// DEP-1: a target whose writer or component does not exist is VSS_E_OBJECT_NOT_FOUND.
#[test]
fn dep_1_missing_target_is_not_found() {
    let error = refused(
        &[mywriter_depending_on_x()],
        &request(&["MyWriter:writerData"]),
    );
    let text = single_problem(&error, "DEP-1", codes::VSS_E_OBJECT_NOT_FOUND);
    assert!(
        text.contains("writerData") && text.contains("Connections\\internetData"),
        "{text}"
    );

    let mut x = writer_x();
    x.components.retain(|c| c.name != "internetData");
    let error = refused(
        &[mywriter_depending_on_x(), x],
        &request(&["MyWriter:writerData"]),
    );
    let text = single_problem(&error, "DEP-1", codes::VSS_E_OBJECT_NOT_FOUND);
    assert!(text.contains("has no such component"), "{text}");
}

/// DEP-1: dependencies of implicitly included components count too.
#[test]
fn dep_1_dependency_of_an_implicit_component_counts() {
    let x = writer_x();
    let mut my = mywriter();
    component_mut(&mut my, "writerData\\Set1\\Jan")
        .dependencies
        .push(Dependency {
            writer_class_id: x.identity.class_id,
            logical_path: String::new(),
            component_name: "Archive".into(),
        });
    let selection = backup(&[my, x], &["MyWriter:writerData"]);
    let x = selection.writer_named("WriterX").unwrap();
    let because = Reason::DependencyOf {
        writer: "MyWriter".into(),
        component: "writerData\\Set1\\Jan".into(),
    };
    assert_eq!(
        explicit(x),
        owned(&[("Catalog", Reason::Required), ("Archive", because)])
    );
}

/// DEP-1: a dependency cycle across writers terminates, with both sides included.
#[test]
fn dep_1_cycles_terminate() {
    let my = mywriter_depending_on_x();
    let mut x = writer_x();
    component_mut(&mut x, "Connections\\internetData")
        .dependencies
        .push(Dependency {
            writer_class_id: my.identity.class_id,
            logical_path: String::new(),
            component_name: "writerData".into(),
        });
    let writers = [my, x];
    let selection = backup(&writers, &["WriterX:Connections"]);
    let my = selection.writer_named("MyWriter").unwrap();
    assert_eq!(
        my.component("", "writerData").unwrap().reason,
        Reason::DependencyOf {
            writer: "WriterX".into(),
            component: "Connections\\internetData".into()
        }
    );
    let x = selection.writer_named("WriterX").unwrap();
    assert_eq!(
        x.component("", "Connections").unwrap().reason,
        Reason::Requested
    );
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    check_bcd(&bcd, &writers).unwrap();
}

/// SEL-4 with DEP-1: when a dependency brings in the ancestor of a requested selectable
/// subcomponent, the subcomponent loses its record and the requester is told why.
#[test]
fn dep_1_dependency_target_absorbs_a_requested_subcomponent() {
    let my = mywriter();
    let mut x = writer_x();
    x.components
        .iter_mut()
        .find(|c| c.name == "Connections")
        .unwrap()
        .dependencies
        .push(Dependency {
            writer_class_id: my.identity.class_id,
            logical_path: String::new(),
            component_name: "writerData".into(),
        });
    let writers = [my, x];
    let selection = backup(
        &writers,
        &["MyWriter:writerData\\Usage", "WriterX:Connections"],
    );
    let my = selection.writer_named("MyWriter").unwrap();
    assert_eq!(
        my.component("writerData", "Usage").unwrap().inclusion,
        Inclusion::Implicit {
            set: "writerData".into()
        }
    );
    assert!(my.component("", "writerData").unwrap().is_explicit());
    assert!(
        my.notes
            .iter()
            .any(|n| n.contains("SEL-4") && n.contains("writerData\\Usage"))
    );
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    check_bcd(&bcd, &writers).unwrap();
}

/// DEP-2 / TS-36: a `\\host\` target is not resolved locally but listed with its host.
#[test]
fn dep_2_remote_dependency_is_listed_with_its_host() {
    let x = writer_x();
    let mut my = mywriter();
    component_mut(&mut my, "writerData")
        .dependencies
        .push(Dependency {
            writer_class_id: x.identity.class_id,
            logical_path: "\\\\db1.example.net\\Connections".into(),
            component_name: "internetData".into(),
        });
    let writers = [my];
    let selection = backup(&writers, &["MyWriter:writerData"]);
    assert_eq!(
        selection.writers.len(),
        1,
        "the remote writer is not looked for locally"
    );
    let [remote] = selection.remote_dependencies.as_slice() else {
        panic!("{:?}", selection.remote_dependencies)
    };
    assert_eq!(remote.host, "db1.example.net");
    assert_eq!(
        (remote.writer_name.as_str(), remote.component.as_str()),
        ("MyWriter", "writerData")
    );
    assert_eq!(remote.target_class_id, x.identity.class_id);
    assert_eq!(remote.target_name, "internetData");
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    check_bcd(&bcd, &writers).unwrap();
}

/// DEP-1: the lint notices an included dependent whose target is not in the BCD.
#[test]
fn dep_1_check_bcd_flags_missing_targets() {
    let my = mywriter_depending_on_x();
    let bcd = hand_made_bcd(
        &my,
        &["Executables", "Executables\\ConfigFiles", "writerData"],
    );
    let error = check_bcd(&bcd, &[my, writer_x()]).unwrap_err();
    let text = single_problem(&error, "DEP-1", codes::E_INVALIDARG);
    assert!(text.contains("Connections\\internetData"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Restore (SEL-R-1 to SEL-R-3, TS-52, RST-INIT-4, RSV-1)
// ---------------------------------------------------------------------------------------------

/// The BCD of TS-28, as stored with the backup.
fn ts_28_bcd() -> BackupComponents {
    backed_up_bcd(&[mywriter()], &["MyWriter:writerData"])
}

/// SEL-R-1: an explicitly included component is selected whole, with its set.
#[test]
fn sel_r_1_explicit_component_is_selected_whole() {
    let bcd = ts_28_bcd();
    let selection = restore(&bcd, &[mywriter()], &["MyWriter:writerData"]);
    let writer = &selection.writers[0];
    assert_eq!(writer.selected.len(), 1);
    assert_eq!(writer.selected[0].full_path(), "writerData");
    assert!(writer.selected[0].subcomponents.is_empty());
    let mut expected = vec![("writerData".to_string(), RestoreReason::Selected)];
    expected.extend(WRITER_DATA_SET.iter().map(|m| {
        (
            m.to_string(),
            RestoreReason::InSetOf {
                set: "writerData".into(),
            },
        )
    }));
    assert_eq!(members(&selection), expected);

    // A required component restores on its own whatever its selectability for restore.
    let selection = restore(&bcd, &[mywriter()], &["MyWriter:Executables"]);
    assert_eq!(
        members(&selection),
        [("Executables".to_string(), RestoreReason::Selected)]
    );
}

/// SEL-R-2 / TS-52: Set1 becomes a restore subcomponent of writerData; only Set1 and its own set
/// are restored, and the BCD records it on writerData's record.
#[test]
fn sel_r_2_set1_becomes_a_restore_subcomponent_of_writer_data() {
    let mut bcd = ts_28_bcd();
    let selection = restore(&bcd, &[mywriter()], &["MyWriter:writerData\\Set1"]);
    let writer = &selection.writers[0];
    let set1 = RestoreSubcomponent {
        logical_path: "writerData".into(),
        name: "Set1".into(),
        repair: false,
    };
    assert_eq!(writer.selected.len(), 1);
    assert_eq!(writer.selected[0].full_path(), "writerData");
    assert_eq!(
        writer.selected[0].subcomponents,
        std::slice::from_ref(&set1)
    );
    let in_set1 = RestoreReason::InSetOf {
        set: "writerData\\Set1".into(),
    };
    assert_eq!(
        members(&selection),
        [
            (
                "writerData\\Set1".to_string(),
                RestoreReason::Subcomponent {
                    of: "writerData".into()
                }
            ),
            ("writerData\\Set1\\Jan".to_string(), in_set1.clone()),
            ("writerData\\Set1\\Dec".to_string(), in_set1),
        ]
    );

    selection.apply_to(&mut bcd).unwrap();
    let entry = &bcd.writers()[0];
    let record = entry.component("", "writerData").unwrap();
    assert!(record.selected_for_restore());
    assert_eq!(record.restore_subcomponents(), [set1]);
    assert!(
        !entry
            .component("", "Executables")
            .unwrap()
            .selected_for_restore()
    );
    assert_eq!(
        entry.components().len(),
        3,
        "no record is created for a subcomponent (SEL-R-2)"
    );
}

/// SEL-R-2: Usage, itself a set, restores with its Jan and Dec.
#[test]
fn sel_r_2_usage_restores_with_its_own_set() {
    let selection = restore(&ts_28_bcd(), &[mywriter()], &["MyWriter:writerData\\Usage"]);
    let in_usage = RestoreReason::InSetOf {
        set: "writerData\\Usage".into(),
    };
    assert_eq!(
        members(&selection),
        [
            (
                "writerData\\Usage".to_string(),
                RestoreReason::Subcomponent {
                    of: "writerData".into()
                }
            ),
            ("writerData\\Usage\\Jan".to_string(), in_usage.clone()),
            ("writerData\\Usage\\Dec".to_string(), in_usage),
        ]
    );
}

/// SEL-R-2: asking for writerData and Set1 restores writerData whole, and says so.
#[test]
fn sel_r_2_whole_component_wins_over_its_subcomponents() {
    let selection = restore(
        &ts_28_bcd(),
        &[mywriter()],
        &["MyWriter:writerData\\Set1", "MyWriter:writerData"],
    );
    let writer = &selection.writers[0];
    assert!(writer.selected[0].subcomponents.is_empty());
    assert_eq!(writer.members.len(), 11);
    assert!(
        writer.notes.iter().any(|n| n.contains("SEL-R-2")),
        "{:?}",
        writer.notes
    );
}

/// SEL-R-3 / TS-52: Jan is not selectable for restore; the error names Set1, its nearest set that is.
#[test]
fn sel_r_3_jan_is_refused_and_names_set1() {
    let error = restore_refused(
        &ts_28_bcd(),
        &[mywriter()],
        &["MyWriter:writerData\\Set1\\Jan"],
    );
    let text = single_problem(&error, "SEL-R-3", codes::E_INVALIDARG);
    assert!(text.contains("select `writerData\\Set1` instead"), "{text}");
}

/// SEL-R-3: Query has no selectable-for-restore ancestor below writerData, so writerData is named.
#[test]
fn sel_r_3_query_names_the_explicit_ancestor() {
    let error = restore_refused(
        &ts_28_bcd(),
        &[mywriter()],
        &["MyWriter:writerData\\QueryLogs\\Query"],
    );
    let text = single_problem(&error, "SEL-R-3", codes::E_INVALIDARG);
    assert!(text.contains("select `writerData` instead"), "{text}");
}

/// A component that was not backed up cannot be restored: VSS_E_OBJECT_NOT_FOUND.
#[test]
fn sel_r_component_not_in_the_backup_is_not_found() {
    let bcd = ts_28_bcd();
    for missing in [
        "MyWriter:LicenseInfo",
        "MyWriter:Security\\UserInfo",
        "MyWriter:NoSuch",
        "Nobody:x",
    ] {
        let error = restore_refused(&bcd, &[mywriter()], &[missing]);
        single_problem(&error, "SEL-R-1", codes::VSS_E_OBJECT_NOT_FOUND);
    }
    // Usage backed up on its own: writerData is not in that backup.
    let bcd = backed_up_bcd(&[mywriter()], &["MyWriter:writerData\\Usage"]);
    let error = restore_refused(&bcd, &[mywriter()], &["MyWriter:writerData"]);
    single_problem(&error, "SEL-R-1", codes::VSS_E_OBJECT_NOT_FOUND);
    // ...but its Jan, not selectable for restore, names Usage.
    let error = restore_refused(&bcd, &[mywriter()], &["MyWriter:writerData\\Usage\\Jan"]);
    let text = single_problem(&error, "SEL-R-3", codes::E_INVALIDARG);
    assert!(
        text.contains("select `writerData\\Usage` instead"),
        "{text}"
    );
}

/// An empty request restores every backed-up component, less those whose backup failed.
#[test]
fn sel_r_empty_request_restores_everything_backed_up() {
    let writers = [mywriter_depending_on_x(), writer_x()];
    let mut bcd = backed_up_bcd(&writers, &["MyWriter:writerData"]);
    let selection = resolve_restore(&bcd, &writers, &RestoreRequest::default()).unwrap();
    let selected: Vec<Vec<String>> = selection
        .writers
        .iter()
        .map(|w| w.selected.iter().map(|c| c.full_path()).collect())
        .collect();
    assert_eq!(selected, records(&bcd));
    let x = selection.writer_named("WriterX").unwrap();
    let x_members: Vec<String> = x.members.iter().map(|m| m.full_path()).collect();
    assert_eq!(
        x_members,
        [
            "Catalog",
            "Connections",
            "Connections\\internetData",
            "Connections\\intranetData"
        ]
    );
    let internet = x.member("Connections", "internetData").unwrap();
    assert_eq!(
        internet.files.len(),
        2,
        "data and log file sets come from the stored WMD"
    );

    let instance = writers[0].identity.instance_id;
    bcd.edit(
        Party::Requester,
        Phase::BackupCopying,
        instance,
        "",
        "writerData",
    )
    .unwrap()
    .set_backup_succeeded(false)
    .unwrap();
    let selection = resolve_restore(&bcd, &writers, &RestoreRequest::default()).unwrap();
    let my = selection.writer_named("MyWriter").unwrap();
    let names: Vec<String> = my.selected.iter().map(|c| c.full_path()).collect();
    assert_eq!(names, ["Executables", "Executables\\ConfigFiles"]);
    assert!(
        my.notes.iter().any(|n| n.contains("BK-COPY-4")),
        "{:?}",
        my.notes
    );
}

/// RST-INIT-4: stored WMDs are matched by class id and instance name, whatever their instance id.
#[test]
fn rst_init_4_stored_writers_match_by_class_and_instance_name() {
    let mut blue = mywriter();
    blue.identity.instance_name = Some("blue".into());
    let mut green = mywriter();
    green.identity.instance_name = Some("green".into());
    green.identity.instance_id = WriterInstanceId::new_random();
    let bcd = backed_up_bcd(
        &[blue.clone(), green.clone()],
        &[&format!(
            "instance={}:LicenseInfo",
            green.identity.instance_id
        )],
    );

    // The stored documents as another tool wrote them: different instance ids.
    let mut stored_blue = blue;
    stored_blue.identity.instance_id = WriterInstanceId::new_random();
    let mut stored_green = green.clone();
    stored_green.identity.instance_id = WriterInstanceId::new_random();
    let stored = [stored_green, stored_blue];
    let selection = restore(&bcd, &stored, &["green:LicenseInfo"]);
    assert_eq!(selection.writers.len(), 1);
    let writer = &selection.writers[0];
    assert_eq!(writer.instance_name.as_deref(), Some("green"));
    assert_eq!(
        writer.instance_id, green.identity.instance_id,
        "the BCD entry keeps its own id"
    );
    assert_eq!(writer.selected[0].full_path(), "LicenseInfo");

    // Without a stored WMD for the writer, nothing can be restored from it.
    let error = resolve_restore(&bcd, &[mywriter()], &RestoreRequest::default()).unwrap_err();
    assert!(error.has_rule("RST-INIT-4"), "{error}");
    assert_eq!(error.code(), codes::VSS_E_OBJECT_NOT_FOUND);
}

/// RSV-1 / TS-53: a NEVER writer's data is restored without selecting its components.
#[test]
fn rsv_1_never_writer_is_not_selected_in_the_bcd() {
    let mut bcd = ts_28_bcd();
    let mut stored = mywriter();
    stored.restore_method.writer_restore = WriterRestore::Never;
    let selection = restore(&bcd, &[stored], &["MyWriter:writerData"]);
    let writer = &selection.writers[0];
    assert!(!writer.involve_writer);
    assert_eq!(writer.members.len(), 11, "its data is still restored");
    assert!(writer.notes.iter().any(|n| n.contains("RSV-1")));
    selection.apply_to(&mut bcd).unwrap();
    assert!(
        bcd.writers()[0]
            .components()
            .iter()
            .all(|c| !c.selected_for_restore())
    );
}

/// BCD-3 and SEL-R-5 end to end: the backup selection and the restore selection both survive the
/// BCD's JSON form, and the lint accepts what the engine wrote.
#[test]
fn apply_to_round_trips_through_bcd_json() {
    let writers = [mywriter_depending_on_x(), writer_x(), system_writer()];
    let request = BackupRequest {
        bootable_system_state: true,
        backup_type: BackupType::Differential,
        ..request(&["MyWriter:Security", "MyWriter:writerData"])
    };
    let selection = resolve_backup(&writers, &request).unwrap();
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    let json = bcd.to_canonical_json();
    let stored = <BackupComponents as Document>::from_json(&json).unwrap();
    assert_eq!(stored, bcd);
    assert_eq!(stored.backup_state().backup_type, BackupType::Differential);
    check_bcd(&stored, &writers).unwrap();
    let explicit_count: usize = selection
        .writers
        .iter()
        .map(|w| w.explicit_components().count())
        .sum();
    let record_count: usize = stored.writers().iter().map(|w| w.components().len()).sum();
    assert_eq!(record_count, explicit_count);

    // The selection itself serializes, for tools that print it.
    let text = serde_json::to_string(&selection).unwrap();
    assert!(text.contains("\"dependency_of\""), "{text}");

    // Restore the stored BCD: everything, then Set1 only.
    let mut restored = stored.clone();
    let everything = resolve_restore(&restored, &writers, &RestoreRequest::default()).unwrap();
    everything.apply_to(&mut restored).unwrap();
    let reread = <BackupComponents as Document>::from_json(&restored.to_canonical_json()).unwrap();
    assert!(
        reread
            .writers()
            .iter()
            .flat_map(|w| w.components())
            .all(|c| c.selected_for_restore())
    );

    let mut restored = reread;
    let set1 = resolve_restore(
        &restored,
        &writers,
        &RestoreRequest {
            selected: selectors(&["MyWriter:writerData\\Set1"]),
        },
    )
    .unwrap();
    set1.apply_to(&mut restored).unwrap();
    let reread = <BackupComponents as Document>::from_json(&restored.to_canonical_json()).unwrap();
    let selected: Vec<(String, usize)> = reread
        .writers()
        .iter()
        .flat_map(|w| w.components())
        .filter(|c| c.selected_for_restore())
        .map(|c| (c.full_path(), c.restore_subcomponents().len()))
        .collect();
    assert_eq!(selected, [("writerData".to_string(), 1)]);
}

// ---------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------

/// Duplicated components and empty names neither panic nor confuse the sets.
#[test]
fn broken_metadata_does_not_panic() {
    let mut wmd = mywriter();
    let duplicate = wmd.components[6].clone();
    wmd.components.push(duplicate);
    let mut nameless = wmd.components[2].clone();
    nameless.name = String::new();
    wmd.components.push(nameless);
    let selection = backup(std::slice::from_ref(&wmd), &["MyWriter:writerData"]);
    let writer = &selection.writers[0];
    assert!(
        writer.notes.iter().any(|n| n.contains("WMD-9")),
        "{:?}",
        writer.notes
    );
    assert_eq!(implicit(writer).len(), WRITER_DATA_SET.len());
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    check_bcd(&bcd, std::slice::from_ref(&wmd)).unwrap();
    resolve_restore(&bcd, &[wmd], &RestoreRequest::default()).unwrap();
}

/// Thousands of components in deep sets and a dependency cycle through hundreds of writers resolve
/// quickly and completely.
#[test]
fn huge_inputs_resolve() {
    let writers: Vec<WriterMetadata> = (0..300u128)
        .map(|i| {
            let mut wmd = mywriter();
            wmd.identity.writer_name = format!("W{i}");
            wmd.identity.class_id = WriterClassId(Guid::from_u128(i + 1));
            wmd.identity.instance_id = WriterInstanceId(Guid::from_u128(i + 1));
            let mut path = String::from("writerData");
            for depth in 0..40 {
                let mut component = wmd.components[7].clone();
                component.logical_path = path.clone();
                component.name = format!("n{depth}");
                path = component.full_path();
                wmd.components.push(component);
            }
            component_mut(&mut wmd, "writerData")
                .dependencies
                .push(Dependency {
                    writer_class_id: WriterClassId(Guid::from_u128((i + 1) % 300 + 1)),
                    logical_path: String::new(),
                    component_name: "writerData".into(),
                });
            wmd
        })
        .collect();
    let started = std::time::Instant::now();
    let selection = backup(&writers, &["W0:writerData"]);
    assert_eq!(selection.writers.len(), 300);
    assert!(
        selection
            .writers
            .iter()
            .all(|w| w.components.len() == 3 + 10 + 40)
    );
    let mut bcd = BackupComponents::new();
    selection.apply_to(&mut bcd).unwrap();
    check_bcd(&bcd, &writers).unwrap();
    resolve_restore(&bcd, &writers, &RestoreRequest::default()).unwrap();
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}
