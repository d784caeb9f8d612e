//! `shadowcopy expose` and `unexpose` through a real `shadowcopyd` on btrfs loop volumes made for
//! each test (EXP-1, EXP-2, EXP-4, SNAP-1): the stable per-volume directory, read-only mounts,
//! refusals that name what is in the way, and exposures across a daemon crash.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shadowcopy_test_support::cli::text;
use shadowcopy_test_support::loop_volume::mounts_at_or_under;
use shadowcopy_test_support::{Cli, DaemonProcess, LoopVolume, MIB, wait_until, workspace_binary};

/// A daemon with the default configuration (its btrfs and loop-image providers) and the
/// `shadowcopy` binary aimed at it.
fn start(name: &str) -> (DaemonProcess, Cli) {
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), name, "");
    let cli = Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon);
    (daemon, cli)
}

/// A persistent shadow copy of `mount` (NAS_ROLLBACK): its id and device object.
fn create(cli: &Cli, mount: &str) -> (String, PathBuf) {
    let value = cli.json_ok(&["--json", "create", "--volume", mount, "--no-writers"]);
    let snapshot = &value["snapshots"][0];
    (
        snapshot["snapshot_id"].as_str().unwrap().to_owned(),
        PathBuf::from(snapshot["snapshot_path"].as_str().unwrap()),
    )
}

fn expose(cli: &Cli, id: &str, dir: Option<&Path>) -> PathBuf {
    let mut args = vec!["--json", "expose", id];
    let dir_text;
    if let Some(dir) = dir {
        dir_text = dir.to_str().unwrap().to_owned();
        args.push(&dir_text);
    }
    let value = cli.json_ok(&args);
    assert_eq!(value["snapshot_id"], id);
    PathBuf::from(value["exposed_name"].as_str().unwrap())
}

/// The `list --json` entry of shadow copy `id`, if listed.
fn listed(cli: &Cli, id: &str) -> Option<serde_json::Value> {
    cli.json_ok(&["--json", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot_id"] == id)
        .cloned()
}

fn has_attribute(entry: &serde_json::Value, name: &str) -> bool {
    entry["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == name)
}

fn is_mounted(path: &Path) -> bool {
    mounts_at_or_under(path).iter().any(|m| m == path)
}

/// Every shadowcopyd-made mount is gone: nothing under the daemon's private directory (its
/// expose directory and the test's own directories) and nothing on the volume.
fn assert_nothing_mounted(daemon: &DaemonProcess, volume: &LoopVolume) {
    assert_eq!(mounts_at_or_under(&daemon.dir.0), Vec::<PathBuf>::new());
    assert_eq!(
        mounts_at_or_under(volume.mount_point()),
        vec![volume.mount_point().to_path_buf()]
    );
}

/// The whole local exposure cycle on a btrfs volume (EXP-1, EXP-2, EXP-4, SNAP-1).
#[test]
fn loop_btrfs_expose_list_unexpose() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    std::fs::write(volume.path("file.txt"), "first\n").unwrap();
    let (daemon, cli) = start("cli-expose");
    let mount = volume.mount_point().to_str().unwrap();
    let (first, _) = create(&cli, mount);
    std::fs::write(volume.path("file.txt"), "second\n").unwrap();
    let (second, _) = create(&cli, mount);

    // Without a directory: the volume's stable directory under the daemon's expose directory.
    let stable = expose(&cli, &first, None);
    let expose_dir = daemon.expose_dir().canonicalize().unwrap();
    assert_eq!(stable.parent(), Some(expose_dir.as_path()), "{stable:?}");
    let key = stable.file_name().unwrap().to_str().unwrap();
    assert!(
        key.ends_with("-mnt") && !key.contains('/'),
        "the volume's path, escaped like systemd-escape --path: {key}"
    );
    assert!(is_mounted(&stable));
    assert_eq!(
        std::fs::read_to_string(stable.join("file.txt")).unwrap(),
        "first\n",
        "the exposure shows the first copy, not the live volume"
    );
    let write = std::fs::write(stable.join("file.txt"), "changed\n").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(nix::libc::EROFS), "{write}");

    // SNAP-1: the listing names the exposure and sets EXPOSED_LOCALLY.
    let entry = listed(&cli, &first).expect("the first copy is listed");
    assert_eq!(entry["exposed_name"], stable.to_str().unwrap());
    assert!(has_attribute(&entry, "EXPOSED_LOCALLY"), "{entry}");
    let other = listed(&cli, &second).expect("the second copy is listed");
    assert!(other["exposed_name"].is_null(), "{other}");
    assert!(!has_attribute(&other, "EXPOSED_LOCALLY"), "{other}");
    let text_list = cli.run(&["list"]);
    assert!(
        text(&text_list.stdout).contains(&format!("Exposed: {}", stable.display())),
        "{}",
        text(&text_list.stdout)
    );

    // One copy per volume at the stable directory; the refusal names the copy in the way.
    let message = cli.refused(&["expose", &second]);
    assert!(message.contains("VSS_E_OBJECT_ALREADY_EXISTS"), "{message}");
    assert!(
        message.contains(&first),
        "names the exposed copy: {message}"
    );
    assert!(
        message.contains(&format!("shadowcopy unexpose {first}")),
        "{message}"
    );
    // A copy is exposed once.
    let message = cli.refused(&["expose", &first]);
    assert!(
        message.contains("VSS_E_OBJECT_ALREADY_EXISTS")
            && message.contains(stable.to_str().unwrap()),
        "{message}"
    );

    // On a directory of the caller's: it must be empty (EXP-4).
    let mine = daemon.dir.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("keep.txt"), "mine\n").unwrap();
    let message = cli.refused(&["expose", &second, mine.to_str().unwrap()]);
    assert!(message.contains("not empty"), "{message}");
    std::fs::remove_file(mine.join("keep.txt")).unwrap();
    let exposed = expose(&cli, &second, Some(&mine));
    assert_eq!(exposed, mine.canonicalize().unwrap());
    assert_eq!(
        std::fs::read_to_string(mine.join("file.txt")).unwrap(),
        "second\n"
    );
    let write = std::fs::write(mine.join("new.txt"), "x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(nix::libc::EROFS), "{write}");

    // Unexpose: the stable directory (made by shadowcopyd) goes, the caller's stays.
    let value = cli.json_ok(&["--json", "unexpose", &first]);
    assert_eq!(value["unexposed"], true);
    assert!(!is_mounted(&stable));
    assert!(
        !stable.exists(),
        "shadowcopyd removes the directory it made"
    );
    let value = cli.json_ok(&["--json", "unexpose", &second]);
    assert_eq!(value["unexposed"], true);
    assert!(!is_mounted(&mine));
    assert!(mine.is_dir(), "the caller's directory is left alone");
    let message = cli.refused(&["unexpose", &first]);
    assert!(message.contains("VSS_E_OBJECT_NOT_FOUND"), "{message}");
    let entry = listed(&cli, &first).unwrap();
    assert!(!has_attribute(&entry, "EXPOSED_LOCALLY"), "{entry}");

    // The stable directory is the same for the next copy of the volume.
    assert_eq!(expose(&cli, &second, None), stable);
    cli.json_ok(&["--json", "unexpose", &second]);

    assert_nothing_mounted(&daemon, &volume);
    cli.json_ok(&["--json", "delete", "--snapshot", &first]);
    cli.json_ok(&["--json", "delete", "--snapshot", &second]);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

/// EXP-2: a copy that lives only as long as its backup session cannot be exposed. The session is
/// held open by `create --auto-release --exec`, whose command tries to expose the copy.
#[test]
fn loop_btrfs_auto_release_copy_cannot_be_exposed() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    std::fs::write(volume.path("file.txt"), "data\n").unwrap();
    let (daemon, cli) = start("cli-expose-auto");
    let mount = volume.mount_point().to_str().unwrap();
    let errors = daemon.dir.join("expose.err");
    let script = format!(
        "'{}' expose \"$SHADOWCOPY_SNAPSHOT_ID_1\" --socket '{}' 2>'{}'",
        env!("CARGO_BIN_EXE_shadowcopy"),
        daemon.socket().display(),
        errors.display()
    );
    let output = cli.run(&[
        "create",
        "--volume",
        mount,
        "--no-writers",
        "--auto-release",
        "--exec",
        &script,
    ]);
    let message = std::fs::read_to_string(&errors).unwrap_or_default();
    assert_eq!(
        output.status.code(),
        Some(1),
        "the expose inside the session fails: {message}{}",
        text(&output.stderr)
    );
    assert!(message.contains("VSS_E_UNSUPPORTED_CONTEXT"), "{message}");
    assert!(message.contains("EXP-2"), "{message}");
    assert_nothing_mounted(&daemon, &volume);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

/// An exposure survives a daemon crash (SIGKILL) and restart with the same state directory: the
/// btrfs provider finds the persistent copy in its catalog again, the mount stays, and the
/// restarted daemon lists the copy as exposed and can unexpose it.
#[test]
fn loop_btrfs_exposure_survives_a_daemon_crash() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    std::fs::write(volume.path("file.txt"), "kept\n").unwrap();
    let (mut daemon, cli) = start("cli-expose-restart");
    let mount = volume.mount_point().to_str().unwrap();
    let (id, _) = create(&cli, mount);
    let stable = expose(&cli, &id, None);
    assert!(daemon.state_dir().join("exposures.json").is_file());

    daemon.restart();
    let entry = listed(&cli, &id).unwrap_or_else(|| {
        panic!(
            "the persistent copy is listed after the restart: {}",
            daemon.log_text()
        )
    });
    assert_eq!(entry["exposed_name"], stable.to_str().unwrap(), "{entry}");
    assert!(has_attribute(&entry, "EXPOSED_LOCALLY"), "{entry}");
    assert!(is_mounted(&stable));
    assert_eq!(
        std::fs::read_to_string(stable.join("file.txt")).unwrap(),
        "kept\n"
    );
    cli.json_ok(&["--json", "unexpose", &id]);
    assert!(!is_mounted(&stable) && !stable.exists());
    cli.json_ok(&["--json", "delete", "--snapshot", &id]);
    assert_nothing_mounted(&daemon, &volume);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

/// EXP-4 for the loop-image provider: its device object is the cloned disk image (a regular file),
/// which the daemon exposes through a read-only loop device that goes away at unexpose. The xfs
/// volume's image lives on a btrfs host volume, both made for this test.
#[test]
fn loop_xfs_image_copy_is_exposed_through_a_loop_device() {
    use shadowcopy_test_support::FsKind;
    use shadowcopy_test_support::loop_volume::loop_devices_backed_by;

    let host = LoopVolume::btrfs(512 * MIB).expect("a btrfs host loop volume (run as root)");
    let inner = LoopVolume::new_in(FsKind::Xfs, 300 * MIB, host.mount_point())
        .expect("an xfs loop volume whose image lives on the host");
    std::fs::write(inner.path("file.txt"), "image\n").unwrap();
    let (daemon, cli) = start("cli-expose-xfs");
    let (id, image) = create(&cli, inner.mount_point().to_str().unwrap());
    assert!(
        image.is_file(),
        "the loop-image copy's device object is its image file: {image:?}"
    );
    std::fs::write(inner.path("file.txt"), "changed after the copy\n").unwrap();

    let stable = expose(&cli, &id, None);
    assert!(is_mounted(&stable));
    assert_eq!(
        std::fs::read_to_string(stable.join("file.txt")).unwrap(),
        "image\n"
    );
    let write = std::fs::write(stable.join("file.txt"), "x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(nix::libc::EROFS), "{write}");
    assert_eq!(
        loop_devices_backed_by(&image).len(),
        1,
        "one read-only loop device serves the clone"
    );
    let entry = listed(&cli, &id).unwrap();
    assert!(has_attribute(&entry, "EXPOSED_LOCALLY"), "{entry}");

    cli.json_ok(&["--json", "unexpose", &id]);
    assert!(!is_mounted(&stable));
    // Autoclear detaches the device at the unmount; the kernel may finish a moment later.
    wait_until(Duration::from_secs(10), || {
        loop_devices_backed_by(&image).is_empty()
    });
    assert_eq!(loop_devices_backed_by(&image), Vec::<PathBuf>::new());
    assert_eq!(mounts_at_or_under(&daemon.dir.0), Vec::<PathBuf>::new());

    cli.json_ok(&["--json", "delete", "--snapshot", &id]);
    assert!(!image.exists());
    drop(daemon);
    inner.close().expect("the xfs volume is cleaned up");
    host.close().expect("the host volume is cleaned up");
}

/// A test that fails while a copy is exposed leaves nothing mounted: dropping `DaemonProcess`
/// unmounts whatever is mounted under its private directory.
#[test]
fn loop_btrfs_dropping_the_daemon_unmounts_its_exposures() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let (daemon, cli) = start("cli-expose-drop");
    let (id, _) = create(&cli, volume.mount_point().to_str().unwrap());
    let stable = expose(&cli, &id, None);
    let mine = daemon.dir.join("mine");
    std::fs::create_dir(&mine).unwrap();
    let (other, _) = create(&cli, volume.mount_point().to_str().unwrap());
    expose(&cli, &other, Some(&mine));
    let dir = daemon.dir.0.clone();
    drop(daemon);
    assert!(!is_mounted(&stable) && !is_mounted(&mine.canonicalize().unwrap_or(mine)));
    assert_eq!(mounts_at_or_under(&dir), Vec::<PathBuf>::new());
    assert!(
        !dir.exists(),
        "the daemon's directory is removed once nothing is mounted"
    );
    volume.close().expect("nothing left mounted or attached");
}
