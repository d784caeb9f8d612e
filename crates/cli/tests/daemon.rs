//! The `shadowcopy` commands that talk to a real `shadowcopyd`, including the access check for
//! callers outside root and the backup group (spec §17).

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use shadowcopy_test_support::{DaemonProcess, TEST_CONFIG, workspace_binary};

/// `nobody` on Debian: uid and gid 65534, in no group but `nogroup`.
const NOBODY: u32 = 65534;

fn shadowcopy(daemon: &DaemonProcess, args: &[&str], uid: Option<u32>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shadowcopy"));
    command.args(args).arg("--socket").arg(daemon.socket());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    command.output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn status_and_providers_answer_through_the_daemon() {
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "cli-status", TEST_CONFIG);
    let status = shadowcopy(&daemon, &["--json", "status"], None);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(value["writers"], 0);
    assert!(value["providers"].as_u64().unwrap() >= 1);

    let providers = shadowcopy(&daemon, &["providers"], None);
    assert_eq!(providers.status.code(), Some(0));
    assert!(text(&providers.stdout).contains("Provider name: 'simulated'"));

    let writers = shadowcopy(&daemon, &["writers"], None);
    assert!(text(&writers.stdout).contains("no writer is registered"));
    let list = shadowcopy(&daemon, &["--json", "list"], None);
    assert_eq!(text(&list.stdout).trim(), "[]");
}

/// Spec §17: requester and admin calls only for root and the configured backup group.
#[test]
fn caller_outside_root_and_backup_group_is_refused() {
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "cli-access", TEST_CONFIG);
    let refused = shadowcopy(&daemon, &["status"], Some(NOBODY));
    assert_eq!(refused.status.code(), Some(1));
    let message = text(&refused.stderr);
    assert!(
        message.contains("may not run requester or admin calls"),
        "{message}"
    );
    assert!(
        message.contains("backup_group"),
        "the refusal says what to change: {message}"
    );

    // The same account is let in once its group is the backup group.
    let config = TEST_CONFIG.replacen("[service]\n", "[service]\nbackup_group = \"nogroup\"\n", 1);
    let daemon = DaemonProcess::start(
        &workspace_binary("shadowcopyd"),
        "cli-access-group",
        &config,
    );
    let allowed = shadowcopy(&daemon, &["status"], Some(NOBODY));
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed.stderr));
}

#[test]
fn a_missing_daemon_is_reported_with_the_socket() {
    let output = Command::new(env!("CARGO_BIN_EXE_shadowcopy"))
        .args(["status", "--socket", "/nonexistent/shadowcopyd.sock"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("/nonexistent/shadowcopyd.sock"));
}
