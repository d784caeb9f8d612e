//! The shadow copy catalog across a daemon crash: after SIGKILL and a restart, persistent copies
//! are still there and usable, auto-release copies that the crash orphaned are deleted from disk
//! (CTX-2, BK-END-6), and `shadowcopy list --json` agrees with what is on disk, for the btrfs and
//! the loop-image providers alike.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use shadowcopy_test_support::{
    Cli, DaemonProcess, FsKind, LoopVolume, MIB, wait_until, workspace_binary,
};

/// The listed shadow copies as (snapshot id, snapshot path).
fn listed(cli: &Cli) -> BTreeSet<(String, String)> {
    cli.json_ok(&["--json", "list"])
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["snapshot_id"].as_str().unwrap().to_owned(),
                s["snapshot_path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// What is on disk: the btrfs provider's snapshots in `<volume>/.shadowcopy/` and the loop-image
/// provider's clones `.shadowcopy-<id>.img` next to the backing image.
fn on_disk(btrfs: &Path, image_dir: &Path) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let snapshots = btrfs.join(".shadowcopy");
    if let Ok(entries) = std::fs::read_dir(&snapshots) {
        for entry in entries {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            found.insert((name, entry.path().to_str().unwrap().to_owned()));
        }
    }
    for entry in std::fs::read_dir(image_dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if let Some(id) = name
            .strip_prefix(".shadowcopy-")
            .and_then(|rest| rest.strip_suffix(".img"))
        {
            found.insert((id.to_owned(), entry.path().to_str().unwrap().to_owned()));
        }
    }
    found
}

/// A `shadowcopy create --auto-release --exec` that holds its session open until killed.
struct HeldSession(Child);

impl Drop for HeldSession {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn loop_restart_keeps_persistent_copies_and_deletes_orphaned_auto_release_ones() {
    let btrfs = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let host = LoopVolume::btrfs(768 * MIB).expect("a btrfs host volume for the xfs image");
    let xfs = LoopVolume::new_in(FsKind::Xfs, 320 * MIB, host.mount_point())
        .expect("an xfs loop volume whose image is on the host");
    let image_dir: PathBuf = xfs.image().parent().unwrap().to_path_buf();
    std::fs::write(btrfs.path("data.txt"), "persistent\n").unwrap();
    std::fs::write(xfs.path("data.txt"), "persistent\n").unwrap();
    let volumes = [
        btrfs.mount_point().to_str().unwrap().to_owned(),
        xfs.mount_point().to_str().unwrap().to_owned(),
    ];

    let mut daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "cli-restart", "");
    let cli = Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon);
    let persistent = cli.json_ok(&[
        "--json",
        "create",
        "--no-writers",
        "--volume",
        &volumes[0],
        "--volume",
        &volumes[1],
    ]);
    let persistent_ids: BTreeSet<String> = persistent["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(persistent_ids.len(), 2, "{persistent}");

    // An auto-release set whose session is still open when the daemon dies.
    let ready = daemon.state_dir().with_file_name("held-session.env");
    let script = format!(
        "env | grep ^SHADOWCOPY_ > {0}.tmp && mv {0}.tmp {0} && sleep 120",
        ready.display()
    );
    let held = HeldSession(
        cli.command(&[
            "create",
            "--no-writers",
            "--auto-release",
            "--exec",
            &script,
            "--volume",
            &volumes[0],
            "--volume",
            &volumes[1],
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs"),
    );
    assert!(
        wait_until(Duration::from_secs(30), || ready.exists()),
        "the auto-release set was not made: {}",
        daemon.log_text()
    );
    let environment = std::fs::read_to_string(&ready).unwrap();
    let orphan_paths: Vec<PathBuf> = environment
        .lines()
        .filter(|l| l.starts_with("SHADOWCOPY_SNAPSHOT_PATH_"))
        .map(|l| PathBuf::from(l.split_once('=').unwrap().1))
        .collect();
    assert_eq!(orphan_paths.len(), 2, "{environment}");
    assert!(orphan_paths.iter().all(|p| p.exists()), "{environment}");
    let before = listed(&cli);
    assert_eq!(before.len(), 4, "{before:?}");
    assert_eq!(before, on_disk(btrfs.mount_point(), &image_dir));

    // The crash: SIGKILL, so nothing is released; then the requester goes too.
    daemon.restart();
    drop(held);

    let after = listed(&cli);
    let after_ids: BTreeSet<String> = after.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        after_ids,
        persistent_ids,
        "only the persistent copies are listed: {}",
        daemon.log_text()
    );
    assert_eq!(
        after,
        on_disk(btrfs.mount_point(), &image_dir),
        "the listing agrees with the disk"
    );
    for path in &orphan_paths {
        assert!(!path.exists(), "{} was deleted at start", path.display());
    }
    // The persistent copies are still usable: the btrfs one is read directly, the xfs image
    // through an exposure.
    let btrfs_copy = after
        .iter()
        .find(|(_, path)| Path::new(path).is_dir())
        .expect("the btrfs copy is a directory");
    assert_eq!(
        std::fs::read_to_string(Path::new(&btrfs_copy.1).join("data.txt")).unwrap(),
        "persistent\n"
    );
    let xfs_copy = after
        .iter()
        .find(|(_, path)| Path::new(path).is_file())
        .expect("the loop-image copy is an image file");
    let exposed = cli.json_ok(&["--json", "expose", &xfs_copy.0]);
    let exposed = PathBuf::from(exposed["exposed_name"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(exposed.join("data.txt")).unwrap(),
        "persistent\n"
    );
    cli.json_ok(&["--json", "unexpose", &xfs_copy.0]);

    let set = persistent["set_id"].as_str().unwrap();
    cli.json_ok(&["--json", "delete", "--set", set]);
    assert!(listed(&cli).is_empty());
    assert!(on_disk(btrfs.mount_point(), &image_dir).is_empty());
    drop(daemon);
    xfs.close().expect("the xfs volume detaches");
    host.close().expect("the host volume detaches");
    btrfs.close().expect("nothing left on the btrfs volume");
}
