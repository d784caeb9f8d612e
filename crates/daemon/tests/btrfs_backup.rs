//! A backup through `shadowcopyd` on a real btrfs volume made on a loop device for this test: the
//! shadow copy holds the data as it was while the writer was frozen, is read-only, and is gone
//! after the session is released (BK-SNAP-2, BK-COPY-1, BK-END-4).

use std::path::{Path, PathBuf};
use std::time::Duration;

use shadowcopy_metadata::WriterClassId;
use shadowcopy_metadata::wmd::WriterMetadata;
use shadowcopy_requester::Client;
use shadowcopy_test_support::sets::{file_group, full_backup, one_file_writer, wait_for};
use shadowcopy_test_support::{DaemonProcess, LoopVolume, MIB};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterOptions};

/// A writer owning one file, which it rewrites when it is thawed: a shadow copy that was cut
/// while the writer was frozen never sees the new content.
struct FileWriter {
    class_id: WriterClassId,
    file: PathBuf,
}

impl Writer for FileWriter {
    fn metadata(&self) -> WriterMetadata {
        one_file_writer("btrfs-file-writer", self.class_id, &self.file)
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
        std::fs::write(&self.file, "after the freeze\n")
            .expect("the live volume is writable again");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_btrfs_backup_through_the_daemon() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let mount = volume.mount_point().to_str().unwrap().to_owned();
    let file = volume.path("data.txt");
    std::fs::write(&file, "before the freeze\n").unwrap();

    // The default configuration: the btrfs provider, no simulated ones.
    let daemon = DaemonProcess::start(
        Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        "btrfs-backup",
        "",
    );
    let class_id = WriterClassId::new_random();
    let writer = FileWriter {
        class_id,
        file: file.clone(),
    };
    let mut handle =
        shadowcopy_writer_sdk::spawn(writer, WriterOptions::with_socket(daemon.socket()));
    handle.registered().await.expect("the writer registers");

    let client = Client::connect(daemon.socket()).await.unwrap();
    let (mut session, writers) = full_backup(&client).await;
    let wmd = writers
        .iter()
        .find(|w| w.identity.class_id == class_id)
        .expect("our writer answered");
    let key = file_group(wmd, "", "data");
    session.add_component(&key).await.unwrap();
    session.start_snapshot_set().await.unwrap();
    let snapshot = session.add_to_snapshot_set(&mount, None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();

    let properties = session.snapshot_properties(snapshot).await.unwrap();
    let copy = properties.snapshot_path.join("data.txt");
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        "before the freeze\n"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "after the freeze\n"
    );
    let write = std::fs::write(&copy, "x");
    assert_eq!(
        write.unwrap_err().raw_os_error(),
        Some(nix::libc::EROFS),
        "the copy is read-only"
    );
    let listed = client
        .admin()
        .list_snapshots(&Default::default())
        .await
        .unwrap();
    assert!(
        listed.iter().any(|s| s.snapshot_id == snapshot),
        "the admin listing shows the copy"
    );

    session.set_backup_succeeded(&key, true).await.unwrap();
    session.backup_complete().await.unwrap();
    session.release().await.unwrap();

    // BACKUP context: auto-release, so the snapshot is deleted at release (BK-END-4).
    wait_for(
        "the shadow copy to be deleted at release",
        Duration::from_secs(10),
        || !properties.snapshot_path.exists(),
    )
    .await;
    handle.stop();
    handle.join().await.ok();
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
