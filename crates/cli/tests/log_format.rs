//! `--log-format json`: the command's diagnostics on stderr are JSON lines, one object each, the
//! notice that the coordinator runs in-process and the coordinator's own records among them, with
//! the set id, writer and phase as keys; the result on stdout is unchanged, and an error is a
//! JSON line too.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use shadowcopy_test_support::cli::text;
use shadowcopy_test_support::{LoopVolume, MIB, TempDir};

const PASSWORD: &str = "shadowcopy test password";

/// Runs the command with `rust_log` as RUST_LOG, or the default level without it.
fn shadowcopy(args: &[&str], rust_log: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shadowcopy"));
    command
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("SHADOWCOPY_SOCKET");
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    command.output().expect("shadowcopy runs")
}

/// Every line of `stderr` as a JSON object; panics naming a line that is not one.
fn json_lines(stderr: &[u8]) -> Vec<Value> {
    text(stderr)
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
            assert!(value.is_object(), "not an object: {line}");
            for key in ["timestamp", "level", "program", "target", "message"] {
                assert!(value.get(key).is_some(), "no {key}: {line}");
            }
            assert_eq!(value["program"], "shadowcopy", "{line}");
            value
        })
        .collect()
}

/// A script writer declaration with one component `data` over `data`.
fn declaration(name: &str, data: &Path) -> String {
    format!(
        "kind = \"script\"\nname = \"{name}\"\n[script]\nfreeze = \"true\"\nthaw = \"true\"\n\
         [[script.components]]\nname = \"data\"\nfiles = [{{ path = \"{}\", recursive = true }}]\n",
        data.display()
    )
}

#[test]
fn json_log_format_writes_json_lines_with_set_id_writer_and_phase() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let data = volume.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("file"), "content\n").unwrap();
    let work = TempDir::new("log-format-json");
    let writers = work.join("writers.d");
    std::fs::create_dir_all(&writers).unwrap();
    std::fs::write(
        writers.join("10-script.toml"),
        declaration("logged-script", &data),
    )
    .unwrap();
    let repo = work.join("repo");
    // No shadowcopyd answers at the configured socket: the command runs the coordinator itself
    // and says so.
    let config = work.join("shadowcopyd.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nsocket = \"{}\"\n",
            work.join("none.sock").display()
        ),
    )
    .unwrap();

    // The coordinator records each writer's answer to each event at debug, in the set's phase.
    let output = shadowcopy(
        &[
            "--log-format",
            "json",
            "backup",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            work.join("state").to_str().unwrap(),
            "--writers-dir",
            writers.to_str().unwrap(),
            "--repo",
            repo.to_str().unwrap(),
            "--component",
            "logged-script:data",
        ],
        Some("info,shadowcopy_coordinator=debug"),
    );
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let records = json_lines(&output.stderr);
    assert!(
        records.iter().any(|record| record["level"] == "INFO"
            && record["message"]
                .as_str()
                .unwrap()
                .contains("embedded mode")),
        "the embedded-mode notice is a record: {records:#?}"
    );
    let set_records: Vec<&Value> = records
        .iter()
        .filter(|record| {
            record.get("set_id").is_some_and(Value::is_string)
                && record["writer"] == "logged-script"
                && record.get("phase").is_some_and(Value::is_string)
        })
        .collect();
    assert!(
        !set_records.is_empty(),
        "the embedded coordinator's records name the set, the writer and the phase: {records:#?}"
    );
    assert!(
        set_records
            .iter()
            .any(|record| record["phase"] == "freeze" || record["phase"] == "thaw"),
        "{set_records:#?}"
    );
    // The result is still text on stdout, as without --log-format.
    assert!(
        serde_json::from_slice::<Value>(&output.stdout).is_err(),
        "{}",
        text(&output.stdout)
    );
    assert!(!text(&output.stdout).trim().is_empty());
}

#[test]
fn an_error_is_a_json_line_and_text_stays_as_it_was() {
    let work = TempDir::new("log-format-error");
    let missing = work.join("missing.sock");
    let output = shadowcopy(
        &[
            "--log-format",
            "json",
            "status",
            "--socket",
            missing.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let records = json_lines(&output.stderr);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["level"], "ERROR");
    let message = records[0]["message"].as_str().unwrap();
    assert!(
        message.contains(missing.to_str().unwrap()) && message.contains("does not exist"),
        "{message}"
    );

    let output = shadowcopy(&["status", "--socket", missing.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr).trim_end(),
        format!("shadowcopy: {message}"),
        "the text format is the one the command always had"
    );
}
