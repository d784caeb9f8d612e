//! Previous Versions through a real Samba: the client-accessible shadow copies of a btrfs share
//! (CTX-1) appear to `smbclient`, through Debian's `smbd` with vfs_shadow_copy2 configured by
//! `shadowcopy previous-versions smb-conf`, as `@GMT-...` previous versions of a file with the
//! contents it had; they go when their copies go (CFG-1's oldest-first deletion, `shadowcopy
//! delete`), and a restarted daemon puts back a view that was lost meanwhile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shadowcopy_test_support::samba::Smbd;
use shadowcopy_test_support::{
    Cli, DaemonProcess, LoopVolume, MIB, TEST_CONFIG, TempDir, unmount_everything_under,
    workspace_binary,
};

/// The directory of the views, outside the share; every view in it is unmounted when the test
/// ends, before the volume whose snapshots they show is torn down.
struct Views(TempDir);

impl Drop for Views {
    fn drop(&mut self) {
        unmount_everything_under(&self.0.0);
    }
}

/// One client-accessible shadow copy: its id, creation time and the view name Samba shows.
struct Copy {
    id: String,
    created_unix_ns: u128,
    name: String,
}

/// `@GMT-YYYY.MM.DD-HH.MM.SS` of a Unix time, as vfs_shadow_copy2's manual page makes it with
/// date(1): an oracle independent of shadowcopyd's own formatting.
fn gmt_name(unix_ns: u128) -> String {
    let seconds = (unix_ns / 1_000_000_000).to_string();
    let output = Command::new("date")
        .env("TZ", "GMT")
        .args(["-d", &format!("@{seconds}"), "+@GMT-%Y.%m.%d-%H.%M.%S"])
        .output()
        .expect("date runs");
    assert!(output.status.success(), "date failed: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `shadowcopy create --client-accessible` of `volume`; then waits until the clock is in a later
/// second, so that the next copy gets a name of its own (names have one-second resolution).
fn create(cli: &Cli, volume: &Path) -> Copy {
    let volume = volume.to_str().unwrap();
    let value = cli.json_ok(&[
        "--json",
        "create",
        "--client-accessible",
        "--no-writers",
        "--volume",
        volume,
    ]);
    assert_eq!(value["context"], "CLIENT_ACCESSIBLE", "{value}");
    let id = value["snapshots"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = cli.json_ok(&["--json", "list", "--volume", volume]);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} is listed: {listed}"));
    let created_unix_ns: u128 = entry["created_unix_ns"].as_str().unwrap().parse().unwrap();
    let second = created_unix_ns / 1_000_000_000;
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= u64::try_from(second).unwrap()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    Copy {
        id,
        created_unix_ns,
        name: gmt_name(created_unix_ns),
    }
}

/// The `@GMT-...` entries of the view directory, sorted.
fn views(snapdir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(snapdir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("@GMT-"))
        .collect();
    names.sort();
    names
}

fn names(copies: &[&Copy]) -> Vec<String> {
    let mut names: Vec<String> = copies.iter().map(|c| c.name.clone()).collect();
    names.sort();
    names
}

/// The previous versions `smbclient allinfo` lists for `file`, in the order listed.
fn previous_versions(smbd: &Smbd, file: &str) -> Vec<String> {
    let allinfo = smbd.client_ok(&format!("allinfo {file}"));
    eprintln!("allinfo {file}:\n{allinfo}");
    allinfo
        .lines()
        .filter(|line| line.starts_with("@GMT-"))
        .map(|line| line.trim().to_owned())
        .collect()
}

/// The contents of `remote` fetched over SMB with `get`.
fn fetch(smbd: &Smbd, remote: &str, local: &Path) -> String {
    let _ = std::fs::remove_file(local);
    smbd.client_ok(&format!("get \"{remote}\" {}", local.display()));
    std::fs::read_to_string(local).unwrap()
}

/// The share's settings from `shadowcopy previous-versions smb-conf`, without the section header
/// and `path`, which the private smbd writes itself.
fn share_settings(cli: &Cli, daemon: &DaemonProcess, share: &Path) -> String {
    let config = daemon.dir.join("shadowcopyd.toml");
    let value = cli.offline_json_ok(&[
        "--json",
        "previous-versions",
        "smb-conf",
        "--config",
        config.to_str().unwrap(),
        "--name",
        "share",
        share.to_str().unwrap(),
    ]);
    assert_eq!(value[0]["path"], share.to_str().unwrap(), "{value}");
    let section = value[0]["smb_conf"].as_str().unwrap();
    eprintln!("shadowcopy previous-versions smb-conf:\n{section}");
    assert!(section.contains("[share]"), "{section}");
    section
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('['))
        .filter(|line| !line.starts_with("path ="))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The whole cycle on a btrfs volume shared by a private smbd: two client-accessible copies are
/// two previous versions with their contents; a third copy over the cap of 2 removes the oldest
/// version (CFG-1), deleting a copy removes its version, and a view lost while the daemon was
/// down comes back at its start while a stray one goes.
#[test]
fn loop_btrfs_previous_versions_through_samba() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let share = volume.mount_point().to_path_buf();
    // smbd serves guests as `nobody`, who must reach the share through the volume's private
    // directory (made 0700).
    std::fs::set_permissions(
        share.parent().unwrap(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let views_dir = Views(TempDir::new("pv-views"));
    let snapdir: PathBuf = views_dir.0.join("share");
    let config = format!(
        "{TEST_CONFIG}[limits]\nmax_client_accessible_per_volume = 2\n\
         [[previous_versions]]\npath = \"{}\"\nsnapdir = \"{}\"\n",
        share.display(),
        snapdir.display()
    );
    let mut daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "pv", &config);
    let cli = Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon);
    assert_eq!(views(&snapdir), Vec::<String>::new(), "no copies, no views");

    std::fs::write(volume.path("file.txt"), "v1\n").unwrap();
    let first = create(&cli, &share);
    assert_eq!(views(&snapdir), names(&[&first]), "{}", daemon.log_text());
    std::fs::write(volume.path("file.txt"), "v2\n").unwrap();
    let second = create(&cli, &share);
    assert_eq!(views(&snapdir), names(&[&first, &second]));
    std::fs::write(volume.path("file.txt"), "v3\n").unwrap();

    // The views are read-only, whoever writes.
    let write = std::fs::write(snapdir.join(&first.name).join("file.txt"), "changed\n");
    assert_eq!(
        write.unwrap_err().raw_os_error(),
        Some(nix::libc::EROFS),
        "a view is a read-only mount"
    );

    let smbd = Smbd::start(
        "pv-smbd",
        "share",
        &share,
        &share_settings(&cli, &daemon, &share),
    );
    let got = smbd.scratch("got").join("file.txt");
    assert_eq!(
        previous_versions(&smbd, "file.txt"),
        vec![second.name.clone(), first.name.clone()],
        "newest first (shadow:sort = desc)"
    );
    assert_eq!(
        fetch(&smbd, &format!("{}/file.txt", first.name), &got),
        "v1\n"
    );
    assert_eq!(
        fetch(&smbd, &format!("{}/file.txt", second.name), &got),
        "v2\n"
    );
    assert_eq!(fetch(&smbd, "file.txt", &got), "v3\n");
    assert!(first.created_unix_ns < second.created_unix_ns);

    // CFG-1: a third copy over the cap of 2 deletes the oldest, and its previous version goes.
    let third = create(&cli, &share);
    assert_eq!(views(&snapdir), names(&[&second, &third]));
    assert_eq!(
        previous_versions(&smbd, "file.txt"),
        vec![third.name.clone(), second.name.clone()]
    );
    assert_eq!(
        fetch(&smbd, &format!("{}/file.txt", third.name), &got),
        "v3\n"
    );
    let gone = smbd.client(&format!(
        "get \"{}/file.txt\" {}",
        first.name,
        got.display()
    ));
    assert!(
        !gone.status.success() || String::from_utf8_lossy(&gone.stdout).contains("NT_STATUS"),
        "the deleted copy is no longer readable: {gone:?}"
    );

    // Deleting a copy removes its view.
    cli.ok(&["delete", "--snapshot", &third.id]);
    assert_eq!(views(&snapdir), names(&[&second]));
    assert_eq!(
        previous_versions(&smbd, "file.txt"),
        vec![second.name.clone()]
    );

    // Start-up: a view lost while shadowcopyd was down is put back, a stray one removed.
    daemon.kill();
    unmount_everything_under(&snapdir.join(&second.name));
    std::fs::remove_dir(snapdir.join(&second.name)).unwrap();
    let stray = "@GMT-2000.01.01-00.00.00";
    std::fs::create_dir(snapdir.join(stray)).unwrap();
    daemon.start_again();
    assert_eq!(views(&snapdir), names(&[&second]), "{}", daemon.log_text());
    assert_eq!(
        previous_versions(&smbd, "file.txt"),
        vec![second.name.clone()]
    );
    assert_eq!(
        fetch(&smbd, &format!("{}/file.txt", second.name), &got),
        "v2\n"
    );
}
