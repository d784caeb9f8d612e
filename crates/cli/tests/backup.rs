//! `shadowcopy backup`, `backups` and `restore --to` on real volumes: a btrfs loop volume and an
//! xfs volume whose loop image lives on an xfs host (loop-image provider), backed up in volume
//! mode through shadowcopyd into one repository snapshot that Debian's `restic` 0.14 lists, checks
//! with `--read-data` and restores byte for byte; an incremental backup after 1 % of the files
//! changed finds the full one as its base and adds about as much data as changed; and a private
//! restore gives the same trees again, with absolute links pointed into the restore directory.

use std::path::{Path, PathBuf};

use serde_json::Value;
use shadowcopy_test_support::tree::{TreeEntry, assert_same_tree, pseudo_random, read_tree};
use shadowcopy_test_support::{
    Cli, DaemonProcess, FsKind, LoopVolume, MIB, TempDir, workspace_binary,
};

const PASSWORD: &str = "shadowcopy test password";

/// What the provider keeps on a live btrfs volume, which the backup leaves out.
const PROVIDER_AREAS: &[&str] = &[".shadowcopy"];

fn restic(repo: &Path, args: &[&str]) -> String {
    shadowcopy_test_support::restic::restic(repo, PASSWORD, args)
}

/// `count` files in nested directories under `root`, mostly small, every 50th of 256 KiB; plus an
/// empty directory, a private file, a relative link and an absolute link into the volume.
fn populate(root: &Path, count: u64, seed: u64) {
    for i in 0..count {
        let dir = root.join(format!("d{}", i % 7)).join(format!("s{}", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let len = if i % 50 == 0 {
            256 * 1024
        } else {
            2000 + (i as usize * 13) % 9000
        };
        std::fs::write(dir.join(format!("f{i}.bin")), pseudo_random(seed + i, len)).unwrap();
    }
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("secret"), b"only for root").unwrap();
    std::fs::set_permissions(
        root.join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("d0/s0/f0.bin", root.join("relative-link")).unwrap();
    std::os::unix::fs::symlink(root.join("d1/s1/f1.bin"), root.join("absolute-link")).unwrap();
}

fn backup(cli: &Cli, args: &[&str]) -> Value {
    let mut all = vec!["backup", "--json"];
    all.extend_from_slice(args);
    cli.json_ok(&all)
}

fn str_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is a list"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn loop_volume_backups_are_read_by_restic_and_restore_byte_identical() {
    let a = LoopVolume::btrfs(512 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let host = LoopVolume::xfs(768 * MIB).expect("an xfs host volume (xfsprogs)");
    let b = LoopVolume::new_in(FsKind::Xfs, 320 * MIB, host.mount_point())
        .expect("an xfs loop volume whose image is on the host");
    populate(a.mount_point(), 300, 1);
    populate(b.mount_point(), 100, 10_000);
    let a_path = a.mount_point().to_str().unwrap().to_owned();
    let b_path = b.mount_point().to_str().unwrap().to_owned();

    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "cli-backup", "");
    let cli =
        Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon).with_env("RESTIC_PASSWORD", PASSWORD);
    let work = TempDir::new("cli-backup-repo");
    let repo = work.join("repo");
    let repo_arg = repo.to_str().unwrap();

    // The full backup, in volume mode.
    let full = backup(
        &cli,
        &["--repo", repo_arg, "--volume", &a_path, "--volume", &b_path],
    );
    let full_id = full["backup_id"].as_str().unwrap().to_owned();
    assert_eq!(full["backup_type"], "full");
    assert_eq!(full["component_mode"], false);
    let mut volumes: Vec<String> = full["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["volume"].as_str().unwrap().to_owned())
        .collect();
    volumes.sort();
    let mut want = vec![a_path.clone(), b_path.clone()];
    want.sort();
    assert_eq!(volumes, want, "both volumes are in the backup");
    assert!(
        full["set_id"].is_string(),
        "the files came from a shadow copy set"
    );
    // 300 + 100 files, 2 × (secret + 2 links), and the documents (manifest, BCD; no writers).
    assert_eq!(full["files"]["new"], 400 + 6 + 2, "{full}");

    // Debian's restic lists, checks and restores it.
    let snapshots: Value = serde_json::from_str(&restic(&repo, &["snapshots", "--json"])).unwrap();
    let snapshot = &snapshots.as_array().unwrap()[0];
    assert_eq!(snapshot["id"], full_id.as_str());
    let mut paths = str_list(&snapshot["paths"]);
    paths.sort();
    assert_eq!(paths, want);
    let tags = str_list(&snapshot["tags"]);
    assert!(
        tags.contains(&"shadowcopy".to_owned()) && tags.contains(&"type=full".to_owned()),
        "{tags:?}"
    );
    restic(&repo, &["check", "--read-data"]);
    let restored = work.join("restic-restore");
    restic(
        &repo,
        &["restore", &full_id, "--target", restored.to_str().unwrap()],
    );
    assert_same_tree(
        a.mount_point(),
        &restored.join(a_path.trim_start_matches('/')),
        PROVIDER_AREAS,
    );
    assert_same_tree(
        b.mount_point(),
        &restored.join(b_path.trim_start_matches('/')),
        &[],
    );
    assert!(
        restored.join(".shadowcopy-backup/backup.json").is_file(),
        "the documents travel with the backup"
    );

    // The listing, the stored documents and the check.
    let listed = cli.offline_json_ok(&["backups", "list", "--repo", repo_arg, "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["backup_type"], "full");
    let shown = cli.offline_json_ok(&[
        "backups",
        "show",
        "--repo",
        repo_arg,
        &full_id[..8],
        "--json",
    ]);
    assert_eq!(shown["backup_id"], full_id.as_str());
    assert_eq!(shown["files"], 408, "{shown}");
    let checked = cli.offline_json_ok(&[
        "backups",
        "check",
        "--repo",
        repo_arg,
        "--read-data",
        "--json",
    ]);
    assert_eq!(checked["ok"], true, "{checked}");

    // 1 % of the files change; the incremental backup finds the full one as its base.
    let mut changed_bytes = 0;
    for i in [3u64, 150, 299] {
        let file = a.path(format!("d{}/s{}/f{i}.bin", i % 7, i % 3));
        let data = pseudo_random(777 + i, 5000);
        changed_bytes += data.len() as u64;
        std::fs::write(file, data).unwrap();
    }
    let file = b.path("d5/s2/f5.bin");
    std::fs::write(file, pseudo_random(999, 6000)).unwrap();
    changed_bytes += 6000;
    let incremental = backup(
        &cli,
        &[
            "--repo",
            repo_arg,
            "--volume",
            &a_path,
            "--volume",
            &b_path,
            "--type",
            "incremental",
        ],
    );
    assert_eq!(incremental["backup_type"], "incremental", "{incremental}");
    assert_eq!(incremental["base"], full_id.as_str());
    assert_eq!(incremental["parent"], full_id.as_str());
    // The four files, and the manifest and BCD, which differ in every backup.
    assert_eq!(incremental["files"]["changed"], 4 + 2, "{incremental}");
    assert_eq!(incremental["files"]["new"], 0, "{incremental}");
    let added = incremental["bytes"]["added"].as_u64().unwrap();
    assert!(
        added < changed_bytes + 64 * 1024,
        "the incremental added {added} bytes for {changed_bytes} changed"
    );
    restic(&repo, &["check"]);

    // A private restore of the incremental: the trees as they are now, and the absolute link
    // points into the restore directory, not at the live volume.
    let target = work.join("private");
    let inc_id = incremental["backup_id"].as_str().unwrap();
    let restore = cli.offline_json_ok(&[
        "restore",
        "--repo",
        repo_arg,
        "--backup",
        inc_id,
        "--to",
        target.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(restore["succeeded"], true, "{restore}");
    assert_eq!(restore["relinked"], 2, "{restore}");
    let restored_a = target.join(a_path.trim_start_matches('/'));
    let mut live = read_tree(a.mount_point(), PROVIDER_AREAS);
    let got = read_tree(&restored_a, &[]);
    live.insert(
        PathBuf::from("absolute-link"),
        TreeEntry::Symlink(restored_a.join("d1/s1/f1.bin")),
    );
    assert_eq!(live.len(), got.len());
    for (path, entry) in &live {
        assert_eq!(
            got.get(path),
            Some(entry),
            "{} after the private restore",
            path.display()
        );
    }

    drop(daemon);
    b.close().expect("the xfs volume detaches");
    host.close().expect("the host volume detaches");
    a.close().expect("the btrfs volume detaches");
}
