//! Crafted backups whose documents or tree try to make a restore write outside its targets: each
//! restore is refused or restores only what is safe, reports why, and writes nothing outside.
//!
//! The backups are written directly with the repository crate, as an attacker with write access
//! to a repository could: a WMD whose alternate location climbs out with `..`, a WMD whose file
//! set path does, a manifest naming a document outside the metadata directory, and a tree holding
//! an absolute symbolic link to a file outside (restored as a link, never followed or re-pointed).
//! Restores to the original places run with the embedded coordinator (no daemon), which also shows
//! embedded mode at work. Hostile trees (`..` names, duplicate names, a link and a directory of one
//! name) are refused by the repository itself: crates/repository/tests/restore.rs.

use std::path::{Path, PathBuf};
use std::process::Output;

use shadowcopy_backup::manifest::{
    BCD_FILE, ComponentRecord, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, VolumeRecord,
};
use shadowcopy_metadata::enums::{BackupType, RestoreMethod};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::selection::{BackupRequest, resolve_backup};
use shadowcopy_metadata::wmd::{
    AlternateLocationMapping, Component, FileDescriptor, FileSet, WriterMetadata,
};
use shadowcopy_metadata::{BackupComponents, WriterClassId, WriterInstanceId};
use shadowcopy_repository::{
    BackupRequest as RepoBackup, MetadataFile, ParentChoice, Password, Repository, VolumeSource,
};
use shadowcopy_test_support::TempDir;
use shadowcopy_test_support::cli::text;

const PASSWORD: &str = "crafted";
/// The volume the crafted backups claim to come from; it never exists on this machine.
const VOLUME: &str = "/shadowcopy-crafted-volume";

/// The documents of a component-mode backup of one writer owning `VOLUME/app`.
struct Documents {
    wmd: WriterMetadata,
    wmd_name: String,
}

impl Documents {
    fn new() -> Self {
        let mut wmd = WriterMetadata::simple(
            "app",
            WriterClassId::new_random(),
            vec![Component::file_group(
                "",
                "files",
                true,
                vec![FileDescriptor::new(format!("{VOLUME}/app"), "*", true)],
            )],
        );
        wmd.identity.instance_id = WriterInstanceId::new_random();
        Documents {
            wmd,
            wmd_name: "wmd-1.json".into(),
        }
    }

    fn files(&self) -> Vec<MetadataFile> {
        let request = BackupRequest::new(vec!["app:files".parse().unwrap()]);
        let selection = resolve_backup(std::slice::from_ref(&self.wmd), &request)
            .expect("the crafted writer's selection resolves");
        let mut bcd = BackupComponents::new();
        selection.apply_to(&mut bcd).unwrap();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            backup_type: BackupType::Full,
            requested_type: BackupType::Full,
            component_mode: true,
            partial_file_support: false,
            set_id: None,
            hostname: "crafted".into(),
            started: "2026-01-01T00:00:00Z".into(),
            base: None,
            volumes: vec![VolumeRecord {
                volume: VOLUME.into(),
                snapshot_id: None,
                provider: None,
            }],
            components: vec![ComponentRecord {
                writer_name: "app".into(),
                class_id: self.wmd.identity.class_id,
                instance_name: None,
                full_path: "files".into(),
                explicit: true,
                backed_up: true,
                failure: None,
                backup_stamp: None,
            }],
            writers: Vec::new(),
            wmd_files: vec![self.wmd_name.clone()],
            notes: Vec::new(),
            partial_files: Vec::new(),
        };
        vec![
            MetadataFile {
                name: MANIFEST_FILE.into(),
                contents: serde_json::to_vec(&manifest).unwrap(),
            },
            MetadataFile {
                name: BCD_FILE.into(),
                contents: bcd.to_canonical_json().into_bytes(),
            },
            MetadataFile {
                name: "wmd-1.json".into(),
                // Written as JSON without the validation a WMD gets when it is parsed.
                contents: serde_json::to_vec(&self.wmd).unwrap(),
            },
        ]
    }
}

/// Backs `source` up as `VOLUME` with `documents` and returns the backup's id.
fn craft(repo: &Path, source: &Path, documents: &Documents) -> String {
    let repository = Repository::open_or_init(repo, Password::new(PASSWORD)).unwrap();
    let volumes = [VolumeSource {
        original: PathBuf::from(VOLUME),
        read_from: source.to_path_buf(),
    }];
    let tags = vec!["shadowcopy".to_owned(), "type=full".to_owned()];
    repository
        .backup(&RepoBackup {
            volumes: &volumes,
            tags: &tags,
            metadata: &documents.files(),
            filter: None,
            parent: ParentChoice::None,
            ignore_ctime: false,
            progress: None,
        })
        .unwrap()
        .snapshot_id
}

fn shadowcopy(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shadowcopy"))
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .output()
        .unwrap()
}

/// Every path under `dir`, to show that nothing appeared.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn crafted_backups_write_nothing_outside_their_targets() {
    let work = TempDir::new("crafted");
    let source = work.join("source");
    std::fs::create_dir_all(source.join("app/sub")).unwrap();
    std::fs::write(source.join("app/a.txt"), b"data").unwrap();
    std::fs::write(source.join("app/sub/b.txt"), b"data").unwrap();
    let outside = work.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep me").unwrap();
    std::os::unix::fs::symlink(outside.join("precious"), source.join("app/link-out")).unwrap();
    let state = work.join("state");
    let writers = work.join("writers.d");
    std::fs::create_dir_all(&writers).unwrap();
    let embedded = [
        "--embedded",
        "--config",
        "/nonexistent/shadowcopyd.toml",
        "--state-dir",
        state.to_str().unwrap(),
        "--writers-dir",
        writers.to_str().unwrap(),
    ];
    let before = listing(&outside);

    // 1. An alternate location that climbs out of its directory with `..`: the component is not
    //    restored, with the reason; nothing is written there or anywhere else.
    let mut climbing = Documents::new();
    climbing.wmd.restore_method.method = RestoreMethod::RestoreToAlternateLocation;
    climbing
        .wmd
        .alternate_location_mappings
        .push(AlternateLocationMapping {
            source: FileSet {
                path: format!("{VOLUME}/app"),
                filespec: "*".into(),
                recursive: true,
            },
            destination: format!("{}/../outside/planted", work.join("x").display()),
        });
    let repo = work.join("repo-climbing");
    let id = craft(&repo, &source, &climbing);
    let mut args = vec![
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        "--backup",
        &id,
        "--json",
    ];
    args.extend(embedded);
    let output = shadowcopy(&args);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("embedded mode") || text(&output.stdout).contains("NONE"),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(
        said.contains("WMD-11") || said.contains("alternate location"),
        "the refusal names the problem: {said}"
    );
    assert_eq!(listing(&outside), before, "nothing appeared outside");
    assert!(
        !Path::new(VOLUME).exists(),
        "the claimed volume was not created either"
    );

    // 2. A file set whose path climbs out: refused before anything is written.
    let mut escaping = Documents::new();
    escaping.wmd.components[0].files[0].path = format!("{VOLUME}/../{}", outside.display());
    let repo = work.join("repo-escaping");
    let id = craft(&repo, &source, &escaping);
    let target = work.join("target-escaping");
    let output = shadowcopy(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        "--backup",
        &id,
        "--to",
        target.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let said = text(&output.stderr);
    assert!(said.contains("..") || said.contains("WMD-11"), "{said}");
    assert!(!target.exists(), "nothing was restored");
    assert_eq!(listing(&outside), before);

    // 3. A manifest naming a WMD file outside the metadata directory.
    let mut sneaky = Documents::new();
    sneaky.wmd_name = "../../etc/passwd".into();
    let repo = work.join("repo-sneaky");
    let id = craft(&repo, &source, &sneaky);
    let output = shadowcopy(&["backups", "show", "--repo", repo.to_str().unwrap(), &id]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("../../etc/passwd"),
        "{}",
        text(&output.stderr)
    );

    // 4. A tree with an absolute link to a file outside: restored as the same link, never followed
    //    (the file outside keeps its content) and not re-pointed (it does not lead into the
    //    backup's volumes).
    let fine = Documents::new();
    let repo = work.join("repo-link");
    let id = craft(&repo, &source, &fine);
    let target = work.join("target-link");
    let output = shadowcopy(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        "--backup",
        &id,
        "--to",
        target.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let restored = target.join(VOLUME.trim_start_matches('/')).join("app");
    assert_eq!(
        std::fs::read_link(restored.join("link-out")).unwrap(),
        outside.join("precious")
    );
    assert_eq!(std::fs::read(restored.join("a.txt")).unwrap(), b"data");
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me");
    assert_eq!(listing(&outside), before);
}
