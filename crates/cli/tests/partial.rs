//! Partial files through the CLI (TS-39, PF-1 to PF-5): a writer names byte ranges of two files,
//! inline (`0:5,100:20,0x40:0x10`) and through a binary ranges file (`File=`); the backup holds
//! exactly those bytes and the ranges file, not the files; a restore writes the ranges back into
//! the files in place, leaving every other byte as it is.

use shadowcopy_metadata::WriterClassId;
use shadowcopy_metadata::bcd::{PartialFile, Party, WriterComponents};
use shadowcopy_metadata::wmd::{Component, FileDescriptor, WriterMetadata};
use shadowcopy_test_support::restic::restic;
use shadowcopy_test_support::tree::pseudo_random;
use shadowcopy_test_support::{Cli, DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure, WriterOptions};

const PASSWORD: &str = "partial files";

/// A writer owning `dir`, naming two partial files of it in PrepareForBackup.
struct RangesWriter {
    class_id: WriterClassId,
    dir: String,
}

impl Writer for RangesWriter {
    fn metadata(&self) -> WriterMetadata {
        let files = Component::file_group(
            "",
            "db",
            true,
            vec![FileDescriptor::new(&self.dir, "*", true)],
        );
        WriterMetadata::simple("ranges", self.class_id, vec![files])
    }

    async fn on_prepare_backup(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        let supported = ctx.backup_state().is_some_and(|s| s.partial_file_support);
        if !supported {
            return Err(WriterFailure::non_retryable(
                "the requester does not support partial files",
            ));
        }
        let partial = |filename: &str, ranges: String| PartialFile {
            path: self.dir.clone(),
            filename: filename.into(),
            ranges,
            metadata: None,
        };
        let mut record = components
            .edit(Party::Writer, ctx.phase(), "", "db")
            .map_err(|e| WriterFailure::non_retryable(e.to_string()))?;
        record
            .set_partial_files(vec![
                partial("big.bin", "0:5,100:20,0x40:0x10".into()),
                partial("huge.bin", format!("File={}/huge.ranges", self.dir)),
            ])
            .map_err(|e| WriterFailure::non_retryable(e.to_string()))?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_partial_files_back_up_and_restore_exactly_their_ranges() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let dir = volume.path("db");
    std::fs::create_dir_all(&dir).unwrap();
    let big = pseudo_random(1, 4096);
    let huge = pseudo_random(2, 1 << 20);
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    std::fs::write(dir.join("huge.bin"), &huge).unwrap();
    std::fs::write(dir.join("other.txt"), "a whole file").unwrap();
    let mut ranges_file = 2u64.to_le_bytes().to_vec();
    for v in [4096u64, 8192, 900_000, 100] {
        ranges_file.extend(v.to_le_bytes());
    }
    std::fs::write(dir.join("huge.ranges"), &ranges_file).unwrap();

    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "cli-partial", "");
    let writer = RangesWriter {
        class_id: WriterClassId::new_random(),
        dir: dir.to_str().unwrap().to_owned(),
    };
    let mut handle =
        shadowcopy_writer_sdk::spawn(writer, WriterOptions::with_socket(daemon.socket()));
    handle.registered().await.expect("the writer registers");
    let cli =
        Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon).with_env("RESTIC_PASSWORD", PASSWORD);
    let work = TempDir::new("cli-partial");
    let repo = work.join("repo");
    let repo_arg = repo.to_str().unwrap().to_owned();

    let run = |args: Vec<String>| {
        let cli = cli.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if args[0] == "backups" {
                cli.offline_json_ok(&args)
            } else {
                cli.json_ok(&args)
            }
        })
    };
    let backup = run(vec![
        "backup".into(),
        "--repo".into(),
        repo_arg.clone(),
        "--component".into(),
        "ranges:db".into(),
        "--json".into(),
    ])
    .await
    .unwrap();
    let id = backup["backup_id"].as_str().unwrap().to_owned();
    let shown = run(vec![
        "backups".into(),
        "show".into(),
        "--repo".into(),
        repo_arg.clone(),
        id.clone(),
        "--json".into(),
    ])
    .await
    .unwrap();
    let partials = shown["partial_files"].as_array().unwrap();
    assert_eq!(partials.len(), 2, "{shown}");
    assert_eq!(
        partials[0]["ranges"],
        serde_json::json!([[0, 5], [100, 20], [64, 16]])
    );
    assert_eq!(
        partials[1]["ranges"],
        serde_json::json!([[4096, 8192], [900000, 100]])
    );

    // The tree holds the ranges file and the whole file, not the partial files; the documents
    // hold exactly the ranges' bytes.
    let listed = restic(&repo, PASSWORD, &["ls", &id]);
    let db = dir.to_str().unwrap();
    assert!(listed.contains(&format!("{db}/huge.ranges")), "{listed}");
    assert!(listed.contains(&format!("{db}/other.txt")), "{listed}");
    assert!(!listed.contains(&format!("{db}/big.bin")), "{listed}");
    assert!(!listed.contains(&format!("{db}/huge.bin")), "{listed}");
    let target = work.join("documents");
    restic(
        &repo,
        PASSWORD,
        &[
            "restore",
            &id,
            "--include",
            "/.shadowcopy-backup",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    let stored = std::fs::read(target.join(".shadowcopy-backup/partial-1.bin")).unwrap();
    let mut want = big[0..5].to_vec();
    want.extend(&big[100..120]);
    want.extend(&big[64..80]);
    assert_eq!(stored, want, "exactly the ranges' bytes, in order");
    let stored = std::fs::read(target.join(".shadowcopy-backup/partial-2.bin")).unwrap();
    assert_eq!(stored.len(), 8192 + 100);

    // The files are damaged; the restore writes the ranges back and leaves the rest alone.
    std::fs::write(dir.join("big.bin"), vec![0u8; 4096]).unwrap();
    std::fs::write(dir.join("huge.bin"), vec![0u8; 1 << 20]).unwrap();
    let restored = run(vec![
        "restore".into(),
        "--repo".into(),
        repo_arg.clone(),
        "--backup".into(),
        id.clone(),
        "--state-dir".into(),
        work.join("state").to_str().unwrap().into(),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert_eq!(restored["succeeded"], true, "{restored}");
    let back = std::fs::read(dir.join("big.bin")).unwrap();
    for (offset, length) in [(0usize, 5usize), (100, 20), (64, 16)] {
        assert_eq!(back[offset..offset + length], big[offset..offset + length]);
    }
    assert_eq!(
        back[5..64],
        vec![0u8; 59][..],
        "bytes outside the ranges are not written"
    );
    let back = std::fs::read(dir.join("huge.bin")).unwrap();
    assert_eq!(back[4096..4096 + 8192], huge[4096..4096 + 8192]);
    assert_eq!(back[900_000..900_100], huge[900_000..900_100]);
    assert!(back[..4096].iter().all(|&b| b == 0));
    assert_eq!(std::fs::read(dir.join("huge.ranges")).unwrap(), ranges_file);

    handle.stop();
    handle.join().await.ok();
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
