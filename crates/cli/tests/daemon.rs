//! The `shadowcopy` commands that talk to a real `shadowcopyd`, including the access check for
//! callers outside root and the backup group (spec §17).

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use shadowcopy_test_support::cli::text;
use shadowcopy_test_support::{Cli, DaemonProcess, TEST_CONFIG, workspace_binary};

/// `nobody` on Debian: uid and gid 65534, in no group but `nogroup`.
const NOBODY: u32 = 65534;

/// A daemon with `config` and the `shadowcopy` binary aimed at it.
fn start(name: &str, config: &str) -> (DaemonProcess, Cli) {
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), name, config);
    let cli = Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon);
    (daemon, cli)
}

/// `shadowcopy ARGS` run as `nobody`, outside root and (by default) the backup group.
fn as_nobody(cli: &Cli, args: &[&str]) -> Output {
    cli.command(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("the binary runs")
}

#[test]
fn status_and_providers_answer_through_the_daemon() {
    let (_daemon, cli) = start("cli-status", TEST_CONFIG);
    let value = cli.json_ok(&["--json", "status"]);
    assert_eq!(value["writers"], 0);
    assert!(value["providers"].as_u64().unwrap() >= 1);

    assert!(
        cli.ok(&["providers"])
            .contains("Provider name: 'simulated'")
    );

    let writers = cli.run(&["writers"]);
    assert!(text(&writers.stdout).contains("no writer is registered"));
    let list = cli.run(&["--json", "list"]);
    assert_eq!(text(&list.stdout).trim(), "[]");
}

/// Spec §17: requester and admin calls only for root and the configured backup group.
#[test]
fn caller_outside_root_and_backup_group_is_refused() {
    let (_daemon, cli) = start("cli-access", TEST_CONFIG);
    let refused = as_nobody(&cli, &["status"]);
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
    let (_daemon, cli) = start("cli-access-group", &config);
    let allowed = as_nobody(&cli, &["status"]);
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
    let (daemon, cli) = start("cli-create", "");
    let mount = volume.mount_point().to_str().unwrap();

    let value = cli.json_ok(&["--json", "create", "--volume", mount]);
    let set = value["set_id"].as_str().unwrap().to_owned();
    let path = std::path::PathBuf::from(value["snapshots"][0]["snapshot_path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(path.join("file.txt")).unwrap(),
        "kept\n"
    );

    // Persistent: the copy outlives the session that made it.
    let listed = cli.json_ok(&["--json", "list", "--set", &set]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["state"], "CREATED");

    assert!(cli.ok(&["delete", "--set", &set]).contains("deleted 1"));
    assert!(!path.exists(), "the snapshot is gone from disk");
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

/// `providers.btrfs_snapshot_dir` decides where the btrfs provider keeps its snapshots.
#[test]
fn loop_btrfs_snapshot_dir_is_configurable() {
    use shadowcopy_test_support::{LoopVolume, MIB};

    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let (daemon, cli) = start(
        "cli-snapshot-dir",
        "[providers]\nbtrfs_snapshot_dir = \"snapshots/shadowcopy\"\n",
    );
    let mount = volume.mount_point().to_str().unwrap();
    let value = cli.json_ok(&["--json", "create", "--no-writers", "--volume", mount]);
    let path = std::path::PathBuf::from(value["snapshots"][0]["snapshot_path"].as_str().unwrap());
    assert_eq!(
        path.parent(),
        Some(volume.path("snapshots/shadowcopy").as_path()),
        "{value}"
    );
    assert!(!volume.path(".shadowcopy").exists());
    assert!(cli.ok(&["delete", "--all"]).contains("deleted 1"));
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

/// A volume no provider can copy is refused with VSS_E_VOLUME_NOT_SUPPORTED and a hint.
#[test]
fn loop_ext4_create_is_refused_with_a_hint() {
    use shadowcopy_test_support::{LoopVolume, MIB};

    let volume = LoopVolume::ext4(64 * MIB).expect("an ext4 loop volume");
    let (daemon, cli) = start("cli-ext4", "");
    let mount = volume.mount_point().to_str().unwrap();
    let message = cli.refused(&["create", "--no-writers", "--volume", mount]);
    assert!(message.contains("VSS_E_VOLUME_NOT_SUPPORTED"), "{message}");
    assert!(
        message.contains("btrfs"),
        "the message says what would work: {message}"
    );
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
