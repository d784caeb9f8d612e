//! Component-mode backups and restores through the CLI with writers of the SDK on a btrfs loop
//! volume: backup stamps handed back to the writer in incremental and differential backups
//! (TS-37, INC-3), a writer's veto leaving its component out (BK-SNAP-7, BK-COPY-4), and every
//! restore method of RM-2 with PreRestore and PostRestore: RESTORE_IF_CAN_REPLACE in place and,
//! when a file cannot be replaced, to the alternate location (TS-45), RESTORE_IF_NOT_THERE with
//! and without the files present (TS-46), RESTORE_TO_ALTERNATE_LOCATION, RESTORE_AT_REBOOT staged
//! and applied (TS-48), and CUSTOM refused with the writer's procedure.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use shadowcopy_metadata::WriterClassId;
use shadowcopy_metadata::bcd::{Party, WriterComponents};
use shadowcopy_metadata::enums::{BackupSchema, RestoreMethod};
use shadowcopy_metadata::wmd::{
    AlternateLocationMapping, Component, FileDescriptor, FileSet, WriterMetadata,
};
use shadowcopy_test_support::cli::text;
use shadowcopy_test_support::{Cli, DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure, WriterOptions};

const PASSWORD: &str = "components test password";

/// What the writers saw, in order.
type Events = Arc<Mutex<Vec<String>>>;

/// A writer owning one directory as component `files`, with a restore method, an optional
/// alternate location, stamps and a veto at Freeze when asked.
struct DirWriter {
    name: &'static str,
    class_id: WriterClassId,
    dir: PathBuf,
    method: RestoreMethod,
    alternate: Option<PathBuf>,
    veto_freeze: bool,
    events: Events,
}

impl DirWriter {
    fn log(&self, event: String) {
        self.events
            .lock()
            .unwrap()
            .push(format!("{}: {event}", self.name));
    }
}

impl Writer for DirWriter {
    fn metadata(&self) -> WriterMetadata {
        let dir = self.dir.to_str().unwrap();
        let files =
            Component::file_group("", "files", true, vec![FileDescriptor::new(dir, "*", true)]);
        let mut wmd = WriterMetadata::simple(self.name, self.class_id, vec![files]);
        wmd.restore_method.method = self.method;
        if self.method == RestoreMethod::Custom {
            wmd.restore_method.user_procedure = Some("run `appctl restore` by hand".into());
        }
        wmd.backup_schema =
            BackupSchema::INCREMENTAL | BackupSchema::DIFFERENTIAL | BackupSchema::TIMESTAMPED;
        if self.alternate.is_some() && self.method == RestoreMethod::RestoreIfCanReplace {
            wmd.backup_schema = wmd.backup_schema | BackupSchema::WRITER_SUPPORTS_NEW_TARGET;
        }
        if let Some(alternate) = &self.alternate {
            wmd.alternate_location_mappings
                .push(AlternateLocationMapping {
                    source: FileSet {
                        path: dir.into(),
                        filespec: "*".into(),
                        recursive: true,
                    },
                    destination: alternate.to_str().unwrap().into(),
                });
        }
        wmd
    }

    async fn on_prepare_backup(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        let previous = components
            .component("", "files")
            .and_then(|r| r.previous_backup_stamp().map(str::to_owned));
        let backup_type = ctx.backup_state().map(|s| s.backup_type.to_string());
        self.log(format!(
            "prepare {} previous={}",
            backup_type.unwrap_or_default(),
            previous.unwrap_or_else(|| "none".into())
        ));
        Ok(())
    }

    async fn on_freeze(&self, _ctx: &EventContext) -> HandlerResult {
        if self.veto_freeze {
            return Err(WriterFailure::retryable(
                "the application would not stop writing",
            ));
        }
        Ok(())
    }

    async fn on_post_snapshot(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        let count = self
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with(&format!("{}: stamp", self.name)))
            .count();
        let stamp = format!("stamp-{}", count + 1);
        if components.component("", "files").is_some() {
            components
                .edit(Party::Writer, ctx.phase(), "", "files")
                .map_err(|e| WriterFailure::non_retryable(e.to_string()))?
                .set_backup_stamp(stamp.clone())
                .map_err(|e| WriterFailure::non_retryable(e.to_string()))?;
            self.log(format!("stamp {stamp}"));
        }
        Ok(())
    }

    async fn on_pre_restore(
        &self,
        _ctx: &EventContext,
        _components: &mut WriterComponents,
    ) -> HandlerResult {
        self.log("pre-restore".into());
        Ok(())
    }

    async fn on_post_restore(
        &self,
        _ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        let record = components.component("", "files");
        let mappings: Vec<String> = record
            .map(|r| {
                r.alternate_mappings_used()
                    .iter()
                    .map(|m| m.destination.clone())
                    .collect()
            })
            .unwrap_or_default();
        let status = record.map(|r| r.file_restore_status().to_string());
        let new_targets: Vec<String> = record
            .map(|r| {
                r.new_targets()
                    .iter()
                    .map(|t| t.alternate_path.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.log(format!(
            "post-restore status={} mappings={}{}",
            status.unwrap_or_default(),
            mappings.join(","),
            if new_targets.is_empty() {
                String::new()
            } else {
                format!(" new-targets={}", new_targets.join(","))
            }
        ));
        Ok(())
    }
}

/// Runs the CLI on a blocking thread, so that the writers in this process keep answering.
/// `backups` commands need no daemon and take no `--socket`.
async fn run(cli: &Cli, args: &[&str]) -> Output {
    let mut command = if args[0] == "backups" {
        cli.offline_command(args)
    } else {
        cli.command(args)
    };
    tokio::task::spawn_blocking(move || command.output().expect("the CLI runs"))
        .await
        .unwrap()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e})\nstdout: {}\nstderr: {}",
            text(&output.stdout),
            text(&output.stderr)
        )
    })
}

async fn json_ok(cli: &Cli, args: &[&str]) -> Value {
    let output = run(cli, args).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "shadowcopy {args:?}\nstdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    json_of(&output)
}

fn fill(dir: &Path, tag: &str) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), format!("{tag} a")).unwrap();
    std::fs::write(dir.join("sub/b.txt"), format!("{tag} b")).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
}

/// Makes a file immutable for the length of the guard (`chattr +i`), so that it cannot be
/// replaced, not even by root.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: PathBuf) -> Self {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "chattr +i {}", path.display());
        Immutable(path)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

fn component<'a>(report: &'a Value, writer: &str) -> &'a Value {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["writer_name"] == writer)
        .unwrap_or_else(|| panic!("{writer} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_component_backups_hand_back_stamps_and_restores_follow_each_method() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "cli-components", "");
    let work = TempDir::new("cli-components");
    let state = work.join("state");
    let cli =
        Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon).with_env("RESTIC_PASSWORD", PASSWORD);
    let repo = work.join("repo");
    let repo = repo.to_str().unwrap();
    let events: Events = Arc::default();

    let writer = |name: &'static str, method, alternate: Option<&str>, veto_freeze| DirWriter {
        name,
        class_id: WriterClassId::new_random(),
        dir: volume.path(name),
        method,
        alternate: alternate.map(|a| volume.path(a)),
        veto_freeze,
        events: Arc::clone(&events),
    };
    let writers = [
        writer(
            "replace",
            RestoreMethod::RestoreIfCanReplace,
            Some("replace-alt"),
            false,
        ),
        writer("notthere", RestoreMethod::RestoreIfNotThere, None, false),
        writer(
            "alternate",
            RestoreMethod::RestoreToAlternateLocation,
            Some("alternate-dst"),
            false,
        ),
        writer("reboot", RestoreMethod::RestoreAtReboot, None, false),
        writer("custom", RestoreMethod::Custom, None, false),
        writer("vetoer", RestoreMethod::RestoreIfCanReplace, None, true),
    ];
    let mut handles = Vec::new();
    for writer in writers {
        fill(&writer.dir, "backed-up");
        let mut handle =
            shadowcopy_writer_sdk::spawn(writer, WriterOptions::with_socket(daemon.socket()));
        handle.registered().await.expect("the writer registers");
        handles.push(handle);
    }
    std::fs::write(volume.path("loose.txt"), "no writer owns me").unwrap();
    let components = ["replace", "notthere", "alternate", "reboot", "custom"];
    let mut args = vec!["backup", "--repo", repo, "--json"];
    for c in &components {
        args.push("--component");
        args.push(Box::leak(format!("{c}:files").into_boxed_str()));
    }

    // The full backup; the writer stamps it in PostSnapshot.
    let full = json_ok(&cli, &args).await;
    let full_id = full["backup_id"].as_str().unwrap().to_owned();
    assert_eq!(full["component_mode"], true);
    assert!(
        full["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["succeeded"] == true),
        "{full}"
    );
    let shown = json_ok(
        &cli,
        &["backups", "show", "--repo", repo, &full_id, "--json"],
    )
    .await;
    let replace = shown["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["writer_name"] == "replace")
        .unwrap();
    assert_eq!(replace["backup_stamp"], "stamp-1", "{shown}");

    // The incremental hands stamp-1 back; the differential hands back the FULL's stamp too, not
    // the incremental's (INC-3, BT-1).
    let mut incremental_args = args.clone();
    incremental_args.extend(["--type", "incremental"]);
    let incremental = json_ok(&cli, &incremental_args).await;
    assert_eq!(incremental["base"], full_id.as_str());
    let mut differential_args = args.clone();
    differential_args.extend(["--type", "differential"]);
    let differential = json_ok(&cli, &differential_args).await;
    assert_eq!(differential["backup_type"], "differential");
    assert_eq!(
        differential["base"],
        full_id.as_str(),
        "a differential is based on the last FULL"
    );
    let prepares: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("replace: prepare"))
        .cloned()
        .collect();
    assert_eq!(
        prepares,
        [
            "replace: prepare FULL previous=none",
            "replace: prepare INCREMENTAL previous=stamp-1",
            "replace: prepare DIFFERENTIAL previous=stamp-1",
        ]
    );

    // A writer that vetoes at Freeze: its component is not saved, the others are, exit status 1.
    let veto = run(
        &cli,
        &[
            "backup",
            "--repo",
            repo,
            "--json",
            "--component",
            "vetoer:files",
            "--component",
            "replace:files",
        ],
    )
    .await;
    assert_eq!(veto.status.code(), Some(1), "{}", text(&veto.stderr));
    let veto = json_of(&veto);
    let outcome = |name: &str| {
        veto["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["writer"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(outcome("vetoer")["succeeded"], false, "{veto}");
    assert!(
        outcome("vetoer")["failure"]
            .as_str()
            .unwrap()
            .contains("FAILED_AT_FREEZE"),
        "{veto}"
    );
    assert_eq!(outcome("replace")["succeeded"], true);
    let veto_restore = work.join("veto-restore");
    let restored = json_ok(
        &cli,
        &[
            "restore",
            "--repo",
            repo,
            "--backup",
            veto["backup_id"].as_str().unwrap(),
            "--to",
            veto_restore.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(restored["succeeded"], true, "{restored}");
    let restored_volume = veto_restore.join(volume.mount_point().strip_prefix("/").unwrap());
    assert!(restored_volume.join("replace/a.txt").is_file());
    assert!(
        !restored_volume.join("vetoer/a.txt").exists(),
        "the vetoing writer's files are not in the backup"
    );

    // The live data changes; "notthere" loses its files, "replace" is changed.
    fill(&volume.path("replace"), "changed");
    std::fs::remove_dir_all(volume.path("notthere")).unwrap();
    fill(&volume.path("reboot"), "changed");
    events.lock().unwrap().clear();

    // The whole full backup back to the original places.
    let output = run(
        &cli,
        &[
            "restore",
            "--repo",
            repo,
            "--backup",
            &full_id,
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "CUSTOM is not restored: {}",
        text(&output.stderr)
    );
    let report = json_of(&output);
    assert_eq!(component(&report, "replace")["status"], "ALL", "{report}");
    assert_eq!(read(&volume.path("replace/a.txt")), "backed-up a");
    assert_eq!(component(&report, "notthere")["status"], "ALL");
    assert_eq!(read(&volume.path("notthere/sub/b.txt")), "backed-up b");
    assert_eq!(component(&report, "alternate")["status"], "ALL");
    assert_eq!(read(&volume.path("alternate-dst/a.txt")), "backed-up a");
    assert_eq!(component(&report, "reboot")["status"], "ALL");
    assert_eq!(
        read(&volume.path("reboot/a.txt")),
        "changed a",
        "staged, not yet in place"
    );
    let custom = component(&report, "custom");
    assert_eq!(custom["status"], "NONE");
    assert!(
        custom["message"]
            .as_str()
            .unwrap()
            .contains("appctl restore"),
        "{custom}"
    );
    assert_eq!(read(&volume.path("loose.txt")), "no writer owns me");
    let seen = events.lock().unwrap().clone();
    for name in ["replace", "notthere", "alternate", "reboot", "custom"] {
        assert!(seen.contains(&format!("{name}: pre-restore")), "{seen:?}");
    }
    assert!(
        seen.iter().any(
            |e| e.starts_with("alternate: post-restore status=ALL mappings=")
                && e.ends_with("alternate-dst")
        ),
        "the writer sees the mapping used (ALT-2): {seen:?}"
    );

    // The pending restore goes in place at "boot".
    let applied = json_ok(
        &cli,
        &[
            "restore",
            "--apply-pending",
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(applied["files"], 2, "{applied}");
    assert_eq!(read(&volume.path("reboot/a.txt")), "backed-up a");

    // RESTORE_IF_NOT_THERE with the files present and no alternate location: nothing restored.
    fill(&volume.path("notthere"), "changed");
    let output = run(
        &cli,
        &[
            "restore",
            "--repo",
            repo,
            "--backup",
            &full_id,
            "--component",
            "notthere:files",
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(component(&report, "notthere")["status"], "NONE", "{report}");
    assert_eq!(read(&volume.path("notthere/a.txt")), "changed a");

    // RESTORE_IF_CAN_REPLACE with a file that cannot be replaced: the alternate location.
    fill(&volume.path("replace"), "changed");
    let stuck = Immutable::set(volume.path("replace/a.txt"));
    events.lock().unwrap().clear();
    let report = json_ok(
        &cli,
        &[
            "restore",
            "--repo",
            repo,
            "--backup",
            &full_id,
            "--component",
            "replace:files",
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    drop(stuck);
    assert_eq!(component(&report, "replace")["status"], "ALL", "{report}");
    assert_eq!(read(&volume.path("replace/a.txt")), "changed a");
    assert_eq!(read(&volume.path("replace-alt/a.txt")), "backed-up a");
    assert_eq!(read(&volume.path("replace-alt/sub/b.txt")), "backed-up b");
    let seen = events.lock().unwrap().clone();
    assert!(
        seen.iter().any(
            |e| e.starts_with("replace: post-restore status=ALL") && e.ends_with("replace-alt")
        ),
        "{seen:?}"
    );

    // New targets with the writers (NT-1, TS-51): the writer that accepts them is told where its
    // files went; the one that does not is not restored there.
    let moved = work.join("moved");
    events.lock().unwrap().clear();
    let output = run(
        &cli,
        &[
            "restore",
            "--repo",
            repo,
            "--backup",
            &full_id,
            "--component",
            "replace:files",
            "--component",
            "notthere:files",
            "--to",
            moved.to_str().unwrap(),
            "--with-writers",
            "--json",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let report = json_of(&output);
    assert_eq!(component(&report, "replace")["status"], "ALL", "{report}");
    let notthere = component(&report, "notthere");
    assert_eq!(notthere["status"], "NONE");
    assert!(
        notthere["message"]
            .as_str()
            .unwrap()
            .contains("WRITER_SUPPORTS_NEW_TARGET"),
        "{notthere}"
    );
    let relocated = moved.join(volume.path("replace").strip_prefix("/").unwrap());
    assert_eq!(read(&relocated.join("a.txt")), "backed-up a");
    assert!(
        !moved
            .join(volume.path("notthere").strip_prefix("/").unwrap())
            .exists()
    );
    let seen = events.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|e| e.starts_with("replace: post-restore status=ALL")
                && e.ends_with(&format!("new-targets={}", relocated.display()))),
        "{seen:?}"
    );

    for mut handle in handles {
        handle.stop();
        handle.join().await.ok();
    }
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
