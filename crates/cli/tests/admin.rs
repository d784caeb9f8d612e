//! The administration commands of `shadowcopy` through a real `shadowcopyd`: `delete --oldest`,
//! `delete --all` (DEL-1), the client-accessible cap (CFG-1), `create --auto-release --exec` on a
//! btrfs loop volume (CTX-2), `revert` (REV-1) and `status`, with their exit statuses and `--json`
//! shapes. The fast cases use the daemon's simulated provider (`/sim/ok/...` volumes).

use shadowcopy_test_support::cli::text;
use shadowcopy_test_support::{Cli, DaemonProcess, TEST_CONFIG, TempDir, workspace_binary};

/// A daemon with `config` and the `shadowcopy` binary aimed at it; the daemon lives as long as
/// the test holds it.
fn start(name: &str, config: &str) -> (DaemonProcess, Cli) {
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), name, config);
    let cli = Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon);
    (daemon, cli)
}

/// Creates a one-volume set and returns its shadow copy's id.
fn create(cli: &Cli, volume: &str, extra: &[&str]) -> String {
    let mut args = vec!["--json", "create", "--volume", volume];
    args.extend_from_slice(extra);
    let value = cli.json_ok(&args);
    value["snapshots"][0]["snapshot_id"]
        .as_str()
        .expect("create prints the snapshot id")
        .to_owned()
}

/// The ids `list` prints for a volume, sorted.
fn listed(cli: &Cli, volume: Option<&str>) -> Vec<String> {
    let mut args = vec!["--json", "list"];
    if let Some(volume) = volume {
        args.extend_from_slice(&["--volume", volume]);
    }
    let mut ids: Vec<String> = cli
        .json_ok(&args)
        .as_array()
        .expect("list prints an array")
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// DEL-1: `delete --oldest VOLUME` deletes the oldest copy of that volume only, whatever its
/// context, and prints `{"deleted": 1, "first_failed_snapshot_id": null}`.
#[test]
fn delete_oldest_picks_the_oldest_copy_of_the_volume() {
    let (_daemon, cli) = start("cli-oldest", TEST_CONFIG);
    let first = create(&cli, "/sim/ok/a", &["--no-writers"]);
    let other = create(&cli, "/sim/ok/b", &["--no-writers"]);
    let second = create(&cli, "/sim/ok/a", &[]);
    let third = create(&cli, "/sim/ok/a", &["--no-writers"]);

    let value = cli.json_ok(&["--json", "delete", "--oldest", "/sim/ok/a"]);
    assert_eq!(
        value,
        serde_json::json!({"deleted": 1, "first_failed_snapshot_id": null})
    );
    assert_eq!(
        listed(&cli, Some("/sim/ok/a")),
        sorted(vec![second.clone(), third.clone()])
    );
    assert!(!listed(&cli, None).contains(&first));

    // A trailing slash names the same volume; text output says what was deleted.
    let deleted = cli.ok(&["delete", "--oldest", "/sim/ok/a/"]);
    assert_eq!(deleted.trim(), "deleted 1 shadow copy");
    assert_eq!(listed(&cli, Some("/sim/ok/a")), vec![third]);
    assert_eq!(listed(&cli, Some("/sim/ok/b")), vec![other]);
}

/// DEL-1: `delete --all` deletes every copy of every volume and context; with none left it
/// deletes 0 and still succeeds.
#[test]
fn delete_all_deletes_every_copy() {
    let (_daemon, cli) = start("cli-all", TEST_CONFIG);
    create(&cli, "/sim/ok/a", &["--no-writers"]);
    create(&cli, "/sim/ok/b", &[]);
    create(&cli, "/sim/ok/c", &["--client-accessible", "--no-writers"]);
    assert_eq!(listed(&cli, None).len(), 3);

    assert_eq!(
        cli.ok(&["delete", "--all"]).trim(),
        "deleted 3 shadow copies"
    );
    assert!(listed(&cli, None).is_empty());

    let value = cli.json_ok(&["--json", "delete", "--all"]);
    assert_eq!(value["deleted"], 0);
}

/// CFG-1: with `limits.max_client_accessible_per_volume = 2`, three client-accessible sets of a
/// volume leave the two newest; persistent copies of the same volume are not capped, and the
/// daemon logs each deletion.
#[test]
fn client_accessible_copies_are_capped_per_volume() {
    // TEST_CONFIG has [service], [events] and [providers] but no [limits]: appending the table
    // keeps every table once.
    let config = format!("{TEST_CONFIG}[limits]\nmax_client_accessible_per_volume = 2\n");
    let (daemon, cli) = start("cli-cap", &config);
    let persistent = create(&cli, "/sim/ok/ca", &["--no-writers"]);
    let first = create(&cli, "/sim/ok/ca", &["--client-accessible", "--no-writers"]);
    let second = create(&cli, "/sim/ok/ca", &["--client-accessible", "--no-writers"]);
    let value = cli.json_ok(&[
        "--json",
        "create",
        "--client-accessible",
        "--volume",
        "/sim/ok/ca",
    ]);
    assert_eq!(value["context"], "CLIENT_ACCESSIBLE_WRITERS");
    assert_eq!(value["auto_release"], false);
    let third = value["snapshots"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_eq!(
        listed(&cli, Some("/sim/ok/ca")),
        sorted(vec![persistent, second, third])
    );
    let list = cli.json_ok(&["--json", "list", "--volume", "/sim/ok/ca"]);
    let client_accessible = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "CLIENT_ACCESSIBLE")
        })
        .count();
    assert_eq!(client_accessible, 2);
    let log = daemon.log_text();
    assert!(
        log.contains(&first) && log.contains("CFG-1"),
        "the deletion is logged with the copy and the reason: {log}"
    );
}

/// Bad input: unknown ids and volumes without copies are VSS_E_OBJECT_NOT_FOUND (exit 1) with the
/// object named; missing or conflicting arguments are usage errors (exit 2).
#[test]
fn bad_input_is_refused_with_the_code_and_exit_status() {
    let (_daemon, cli) = start("cli-bad", TEST_CONFIG);
    let unknown = "6a9d0f52-3c2e-4c61-9a53-5b1c1f0e8d21";

    let message = cli.refused(&["delete", "--snapshot", unknown]);
    assert!(message.contains("VSS_E_OBJECT_NOT_FOUND"), "{message}");
    assert!(message.contains(unknown), "{message}");

    let output = cli.run(&["--json", "delete", "--oldest", "/sim/ok/empty"]);
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output.stderr);
    assert!(message.contains("VSS_E_OBJECT_NOT_FOUND"), "{message}");
    assert!(message.contains("/sim/ok/empty"), "{message}");
    assert!(
        output.stdout.is_empty(),
        "a refusal prints nothing on stdout"
    );

    assert!(
        cli.refused(&["revert", unknown])
            .contains("VSS_E_OBJECT_NOT_FOUND")
    );

    for usage in [
        &["delete"][..],
        &["delete", "--all", "--oldest", "/sim/ok/a"],
        &["delete", "--snapshot", "not-a-guid"],
        &["create", "--volume", "/sim/ok/a", "--exec", "true"],
        &["create", "--volume", "/sim/ok/a", "--auto-release"],
        &[
            "create",
            "--volume",
            "/sim/ok/a",
            "--auto-release",
            "--exec",
            "true",
            "--client-accessible",
        ],
        &["revert"],
    ] {
        assert_eq!(cli.run(usage).status.code(), Some(2), "{usage:?}");
    }
    assert!(
        listed(&cli, None).is_empty(),
        "nothing was created by refused commands"
    );
}

/// REV-1 and `status`: a revert to a persistent copy succeeds through the daemon and `status`
/// shows the reverts in progress (none once it has returned).
#[test]
fn revert_and_status() {
    let (_daemon, cli) = start("cli-revert", TEST_CONFIG);
    let id = create(&cli, "/sim/ok/r", &["--no-writers"]);

    let help = cli.run(&["revert", "--help"]);
    assert!(text(&help.stdout).contains("cannot be undone"));

    let value = cli.json_ok(&["--json", "revert", &id]);
    assert_eq!(
        value,
        serde_json::json!({"reverted": true, "snapshot_id": id, "volume": "/sim/ok/r"})
    );
    let status = cli.json_ok(&["--json", "status"]);
    assert_eq!(status["reverts_in_progress"], serde_json::json!([]));
    let output = cli.run(&["status"]);
    assert!(text(&output.stdout).contains("reverts in progress: none"));
}

/// CTX-2 and `vshadow -exec`: the auto-release set exists while COMMAND runs, with the paths in
/// COMMAND's environment, and is gone afterwards; shadowcopy exits with COMMAND's status.
#[test]
fn loop_btrfs_create_auto_release_exec() {
    use shadowcopy_test_support::{LoopVolume, MIB};

    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    std::fs::write(volume.path("file.txt"), "in the copy\n").unwrap();
    let (daemon, cli) = start("cli-exec", "");
    let mount = volume.mount_point().to_str().unwrap().to_owned();
    let scratch = TempDir::new("cli-exec-out");
    let out = scratch.join("seen");

    // With writers (context BACKUP); the command checks the copy and records what it saw.
    let command = format!(
        "test \"$(cat \"$SHADOWCOPY_SNAPSHOT_PATH_1/file.txt\")\" = 'in the copy' && \
         test \"$SHADOWCOPY_VOLUME_1\" = '{mount}' && test \"$SHADOWCOPY_VOLUME_COUNT\" = 1 && \
         printf '%s\\n%s\\n' \"$SHADOWCOPY_SNAPSHOT_PATH_1\" \"$SHADOWCOPY_SET_ID\" > '{}'",
        out.display()
    );
    let value = cli.json_ok(&[
        "--json",
        "create",
        "--volume",
        &mount,
        "--auto-release",
        "--exec",
        &command,
    ]);
    assert_eq!(value["context"], "BACKUP");
    assert_eq!(value["auto_release"], true);
    assert_eq!(value["exec"]["exit_status"], 0);
    let seen = std::fs::read_to_string(&out).expect("the command ran and wrote what it saw");
    let mut lines = seen.lines();
    let path = std::path::PathBuf::from(lines.next().unwrap());
    assert_eq!(
        path.to_str(),
        value["snapshots"][0]["snapshot_path"].as_str()
    );
    assert_eq!(lines.next(), value["set_id"].as_str());
    assert!(!path.exists(), "the auto-release copy is gone from disk");
    assert!(listed(&cli, None).is_empty(), "and from the listing");

    // Without writers (FILE_SHARE_BACKUP): COMMAND's status is shadowcopy's, and the copy is
    // still deleted.
    let output = cli.run(&[
        "create",
        "--no-writers",
        "--volume",
        &mount,
        "--auto-release",
        "--exec",
        "test -f \"$SHADOWCOPY_SNAPSHOT_PATH_1/file.txt\" && exit 7",
    ]);
    assert_eq!(output.status.code(), Some(7), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("FILE_SHARE_BACKUP"));
    assert!(listed(&cli, None).is_empty());
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

/// DEL-1 with exposure (EXP-1, SNAP-3): an exposed copy is not deleted without `--force`
/// (VSS_E_VOLUME_IN_USE, nothing deleted, with the way out in the message); with `--force` it is
/// unexposed first and then deleted, so it is readable nowhere afterwards.
#[test]
fn loop_btrfs_delete_of_an_exposed_copy_needs_force() {
    use shadowcopy_test_support::loop_volume::mounts_at_or_under;
    use shadowcopy_test_support::{LoopVolume, MIB};

    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    std::fs::write(volume.path("file.txt"), "data\n").unwrap();
    let (daemon, cli) = start("cli-delete-exposed", "");
    let mount = volume.mount_point().to_str().unwrap().to_owned();
    let exposed = create(&cli, &mount, &["--no-writers"]);
    let plain = create(&cli, &mount, &["--no-writers"]);
    let value = cli.json_ok(&["--json", "expose", &exposed]);
    let directory = std::path::PathBuf::from(value["exposed_name"].as_str().unwrap());
    assert!(directory.join("file.txt").exists());

    for args in [
        &["delete", "--snapshot", exposed.as_str()][..],
        &["delete", "--oldest", mount.as_str()],
        &["delete", "--all"],
    ] {
        let message = cli.refused(args);
        assert!(message.contains("VSS_E_VOLUME_IN_USE"), "{message}");
        assert!(
            message.contains(&format!("shadowcopy unexpose {exposed}"))
                && message.contains("--force"),
            "the message says what to do: {message}"
        );
    }
    assert_eq!(
        listed(&cli, None),
        sorted(vec![exposed.clone(), plain.clone()]),
        "a refused deletion deletes nothing"
    );
    assert!(mounts_at_or_under(&directory).contains(&directory));

    let value = cli.json_ok(&["--json", "delete", "--oldest", &mount, "--force"]);
    assert_eq!(value["deleted"], 1);
    assert!(
        !mounts_at_or_under(&directory).contains(&directory),
        "the exposure was unmounted"
    );
    assert_eq!(listed(&cli, None), vec![plain]);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
