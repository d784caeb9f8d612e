//! End-to-end tests of the `shadowcopy` binary: exit statuses, text and `--json` output.

use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../metadata/tests/fixtures");

fn shadowcopy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shadowcopy"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn validate_accepts_valid_documents() {
    let output = shadowcopy(&[
        "document",
        "validate",
        &fixture("full.wmd.json"),
        &fixture("full.bcd.json"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("valid wmd"));
    assert!(stdout(&output).contains("valid bcd"));
}

#[test]
fn validate_names_the_broken_rule_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("shadowcopy-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.wmd.json");
    let text = std::fs::read_to_string(fixture("full.wmd.json"))
        .unwrap()
        .replace("\"STOP_RESTORE_START\"", "\"UNDEFINED\"");
    std::fs::write(&broken, text).unwrap();
    let output = shadowcopy(&["--json", "document", "validate", broken.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(1));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let problem = &result[0]["problems"][0];
    assert_eq!(problem["field"], "restore_method.method");
    assert_eq!(problem["rule"], "WMD-3");
    assert_eq!(result[0]["code_name"], "VSS_E_INVALID_XML_DOCUMENT");
}

#[test]
fn select_reports_reasons_as_json() {
    let output = shadowcopy(&[
        "--json",
        "select",
        "--writer",
        &fixture("mywriter.wmd.json"),
        "MyWriter:LicenseInfo",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let selection: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let components = selection["writers"][0]["components"].as_array().unwrap();
    let names: Vec<_> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // SEL-2: the required Executables and ConfigFiles come with any selection of the writer.
    assert_eq!(names, ["Executables", "ConfigFiles", "LicenseInfo"]);
    assert_eq!(components[0]["reason"], "required");
}

#[test]
fn illegal_selection_exits_1_with_the_rule() {
    let output = shadowcopy(&[
        "select",
        "--writer",
        &fixture("mywriter.wmd.json"),
        "MyWriter:writerData",
        "MyWriter:writerData\\Usage",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("SEL-4"), "{}", stdout(&output));
}

#[test]
fn unknown_component_is_refused() {
    let output = shadowcopy(&[
        "select",
        "--writer",
        &fixture("mywriter.wmd.json"),
        "MyWriter:Nope",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("BK-DISC-3"), "{}", stdout(&output));
}

#[test]
fn codes_explain_by_number_and_name() {
    let by_number = shadowcopy(&["codes", "0x80042316"]);
    let by_name = shadowcopy(&["codes", "vss_e_snapshot_set_in_progress"]);
    assert_eq!(by_number.status.code(), Some(0));
    assert_eq!(stdout(&by_number), stdout(&by_name));
    assert!(stdout(&by_number).contains("What to do:"));
    let unknown = shadowcopy(&["codes", "0x1234"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not a known VSS result code"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(shadowcopy(&["select"]).status.code(), Some(2));
    assert_eq!(shadowcopy(&["no-such-command"]).status.code(), Some(2));
}
