//! Directed targets through the CLI (TS-50, DT-1): a writer sets its restore target to DIRECTED
//! in PreRestore and names (source file, ranges) → (destination file, ranges) pairs; the restore
//! writes exactly those ranges, and a destination reached through a symbolic link that leads out
//! of the volume is refused, with nothing written outside and the component FAILED.

use std::path::Path;

use shadowcopy_metadata::WriterClassId;
use shadowcopy_metadata::bcd::{DirectedTarget, Party, WriterComponents};
use shadowcopy_metadata::enums::RestoreTarget;
use shadowcopy_metadata::wmd::{Component, FileDescriptor, WriterMetadata};
use shadowcopy_test_support::tree::pseudo_random;
use shadowcopy_test_support::{Cli, DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure, WriterOptions};

const PASSWORD: &str = "directed targets";

/// A writer owning `dir`, which in PreRestore directs `Index.dat` to `OldIndex.dat` and, when
/// `escape` is set, also to `link/escaped` where `link` leads out of the volume.
struct Indexer {
    class_id: WriterClassId,
    dir: String,
    escape: bool,
}

impl Writer for Indexer {
    fn metadata(&self) -> WriterMetadata {
        let files = Component::file_group(
            "",
            "index",
            true,
            vec![FileDescriptor::new(&self.dir, "*", true)],
        );
        WriterMetadata::simple("indexer", self.class_id, vec![files])
    }

    async fn on_pre_restore(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        let target = |destination_path: String, destination_filename: &str| DirectedTarget {
            source_path: self.dir.clone(),
            source_filename: "Index.dat".into(),
            source_ranges: "0:4096".into(),
            destination_path,
            destination_filename: destination_filename.into(),
            destination_ranges: "0:4096".into(),
        };
        let mut targets = vec![target(self.dir.clone(), "OldIndex.dat")];
        if self.escape {
            targets.push(target(format!("{}/link", self.dir), "escaped"));
        }
        let failure =
            |e: shadowcopy_metadata::bcd::BcdError| WriterFailure::non_retryable(e.to_string());
        let mut record = components
            .edit(Party::Writer, ctx.phase(), "", "index")
            .map_err(failure)?;
        record
            .set_restore_target(RestoreTarget::Directed)
            .map_err(failure)?;
        record.set_directed_targets(targets).map_err(failure)?;
        Ok(())
    }
}

fn restore(cli: &Cli, repo: &Path, id: &str, state: &Path) -> (Option<i32>, serde_json::Value) {
    let output = cli
        .command(&[
            "restore",
            "--repo",
            repo.to_str().unwrap(),
            "--backup",
            id,
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_directed_targets_write_their_ranges_and_never_through_a_link() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let dir = volume.path("idx");
    std::fs::create_dir_all(&dir).unwrap();
    let index = pseudo_random(7, 4096);
    std::fs::write(dir.join("Index.dat"), &index).unwrap();
    let work = TempDir::new("cli-directed");
    let outside = work.join("outside");
    std::fs::create_dir_all(&outside).unwrap();

    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "cli-directed", "");
    let cli =
        Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon).with_env("RESTIC_PASSWORD", PASSWORD);
    let repo = work.join("repo");
    let state = work.join("state");
    let class_id = WriterClassId::new_random();
    let dir_text = dir.to_str().unwrap().to_owned();
    let start = |escape| {
        shadowcopy_writer_sdk::spawn(
            Indexer {
                class_id,
                dir: dir_text.clone(),
                escape,
            },
            WriterOptions::with_socket(daemon.socket()),
        )
    };
    let mut writer = start(false);
    writer.registered().await.expect("the writer registers");
    let backup = {
        let cli = cli.clone();
        let repo = repo.clone();
        tokio::task::spawn_blocking(move || {
            cli.json_ok(&[
                "backup",
                "--repo",
                repo.to_str().unwrap(),
                "--component",
                "indexer:index",
                "--json",
            ])
        })
        .await
        .unwrap()
    };
    let id = backup["backup_id"].as_str().unwrap().to_owned();

    // DIRECTED: Index.dat's bytes go to OldIndex.dat; Index.dat itself is not restored.
    std::fs::write(dir.join("Index.dat"), b"changed").unwrap();
    let (code, report) = {
        let (cli, repo, id, state) = (cli.clone(), repo.clone(), id.clone(), state.clone());
        tokio::task::spawn_blocking(move || restore(&cli, &repo, &id, &state))
            .await
            .unwrap()
    };
    assert_eq!(code, Some(0), "{report}");
    let component = &report["components"][0];
    assert_eq!(component["target"], "DIRECTED", "{report}");
    assert_eq!(component["status"], "ALL", "{report}");
    assert_eq!(std::fs::read(dir.join("OldIndex.dat")).unwrap(), index);
    assert_eq!(std::fs::read(dir.join("Index.dat")).unwrap(), b"changed");

    // A destination through a link that leads out of the volume: refused, nothing written there.
    writer.stop();
    writer.join().await.ok();
    std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
    let mut writer = start(true);
    writer
        .registered()
        .await
        .expect("the writer registers again");
    let (code, report) = {
        let (cli, repo, id, state) = (cli.clone(), repo.clone(), id.clone(), state.clone());
        tokio::task::spawn_blocking(move || restore(&cli, &repo, &id, &state))
            .await
            .unwrap()
    };
    assert_eq!(code, Some(1), "{report}");
    let component = &report["components"][0];
    assert_eq!(component["status"], "FAILED", "{report}");
    assert!(
        component["message"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{report}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was written through the link"
    );

    writer.stop();
    writer.join().await.ok();
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
