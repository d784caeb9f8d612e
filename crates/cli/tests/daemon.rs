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

/// `create`, `list` and `delete` on a real btrfs volume made on a loop device for this test.
#[test]
fn loop_btrfs_create_list_delete() {
    use shadowcopy_test_support::{LoopVolume, MIB};

    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    std::fs::write(volume.path("file.txt"), "kept\n").unwrap();
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "cli-create", "");
    let mount = volume.mount_point().to_str().unwrap();

    let created = shadowcopy(&daemon, &["--json", "create", "--volume", mount], None);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let value: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let set = value["set_id"].as_str().unwrap().to_owned();
    let path = std::path::PathBuf::from(value["snapshots"][0]["snapshot_path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(path.join("file.txt")).unwrap(),
        "kept\n"
    );

    // Persistent: the copy outlives the session that made it.
    let listed = shadowcopy(&daemon, &["--json", "list", "--set", &set], None);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["state"], "CREATED");

    let deleted = shadowcopy(&daemon, &["delete", "--set", &set], None);
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted.stderr));
    assert!(text(&deleted.stdout).contains("deleted 1"));
    assert!(!path.exists(), "the snapshot is gone from disk");
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

/// A volume no provider can copy is refused with VSS_E_VOLUME_NOT_SUPPORTED and a hint.
#[test]
fn loop_ext4_create_is_refused_with_a_hint() {
    use shadowcopy_test_support::{LoopVolume, MIB};

    let volume = LoopVolume::ext4(64 * MIB).expect("an ext4 loop volume");
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "cli-ext4", "");
    let mount = volume.mount_point().to_str().unwrap();
    let refused = shadowcopy(
        &daemon,
        &["create", "--no-writers", "--volume", mount],
        None,
    );
    assert_eq!(refused.status.code(), Some(1));
    let message = text(&refused.stderr);
    assert!(message.contains("VSS_E_VOLUME_NOT_SUPPORTED"), "{message}");
    assert!(
        message.contains("btrfs"),
        "the message says what would work: {message}"
    );
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
