//! Hosted writers: shadowcopyd runs every declaration of its writers directory
//! in-process; such a writer is listed as hosted, takes part in a set on a real btrfs loop volume,
//! and is stopped before the server at shutdown. A bad declaration is logged with its file and
//! skipped. The standalone `shadowcopy-writer` runs the same kind of declaration as a process of
//! its own, listed with its pid, in the same set.

use std::path::Path;
use std::time::Duration;

use shadowcopy_metadata::enums::WriterState;
use shadowcopy_requester::Client;
use shadowcopy_test_support::sets::{
    complete, file_group, full_backup, snapshot_path, snapshot_volumes, wait_for, writer_named,
};
use shadowcopy_test_support::{DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};

/// A script writer declaration whose freeze and thaw commands append `<event> <set id>` to
/// `record`, with one component `data` over `data`.
fn declaration(name: &str, record: &Path, data: &Path) -> String {
    let line = format!(
        "echo \\\"$SHADOWCOPY_EVENT $SHADOWCOPY_SET_ID\\\" >> '{}'",
        record.display()
    );
    format!(
        "kind = \"script\"\nname = \"{name}\"\n[script]\nfreeze = \"{line}\"\nthaw = \"{line}\"\n\
         [[script.components]]\nname = \"data\"\nfiles = [{{ path = \"{}\" }}]\n",
        data.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_and_standalone_declared_writers_take_part_in_a_set() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let data = volume.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("file"), "content\n").unwrap();
    let dir = TempDir::new("hosted-writers");
    let writers_dir = dir.join("writers.d");
    std::fs::create_dir_all(&writers_dir).unwrap();
    let hosted_record = dir.join("hosted.events");
    let standalone_record = dir.join("standalone.events");
    std::fs::write(
        writers_dir.join("10-hosted.toml"),
        declaration("hosted-script", &hosted_record, &data),
    )
    .unwrap();
    // A bad declaration next to it: logged and skipped, the daemon still starts.
    std::fs::write(
        writers_dir.join("20-bad.toml"),
        "kind = \"script\"\nname = \"bad\"\nfrezee = 1\n",
    )
    .unwrap();
    let standalone_file = dir.join("standalone.toml");
    std::fs::write(
        &standalone_file,
        declaration("standalone-script", &standalone_record, &data),
    )
    .unwrap();

    let mut daemon = DaemonProcess::start(
        Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        "hosted-writers",
        &format!("[service]\nwriters_dir = \"{}\"\n", writers_dir.display()),
    );
    let mut standalone = std::process::Command::new(workspace_binary("shadowcopy-writer"))
        .arg("run")
        .arg(&standalone_file)
        .arg("--socket")
        .arg(daemon.socket())
        .stderr(std::fs::File::create(dir.join("standalone.log")).unwrap())
        .spawn()
        .expect("shadowcopy-writer starts");
    let client = Client::connect(daemon.socket()).await.unwrap();

    let mut listed = Vec::new();
    for _ in 0..300 {
        listed = client.admin().list_writers(false).await.unwrap();
        let names: Vec<_> = listed
            .iter()
            .map(|w| w.status.writer_name.as_str())
            .collect();
        if names.contains(&"hosted-script") && names.contains(&"standalone-script") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hosted = listed
        .iter()
        .find(|w| w.status.writer_name == "hosted-script")
        .expect("the hosted writer is registered");
    assert!(hosted.hosted, "{hosted:?}");
    assert_eq!(hosted.pid, None, "hosted writers have no pid of their own");
    let external = listed
        .iter()
        .find(|w| w.status.writer_name == "standalone-script")
        .expect("the standalone writer is registered");
    assert!(!external.hosted, "{external:?}");
    assert_eq!(external.pid, Some(standalone.id()));
    assert!(
        !listed.iter().any(|w| w.status.writer_name == "bad"),
        "the bad declaration is not hosted"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("20-bad.toml") && log.contains("frezee"),
        "the bad declaration is logged with its file and key:\n{log}"
    );

    // One set with both writers' components.
    let (mut session, writers) = full_backup(&client).await;
    let mut keys = Vec::new();
    for name in ["hosted-script", "standalone-script"] {
        let key = file_group(writer_named(&writers, name), "", "data");
        session.add_component(&key).await.unwrap();
        keys.push(key);
    }
    let (set_id, snapshots) = snapshot_volumes(&mut session, &[volume.mount_point()]).await;
    for status in session.gather_writer_status().await.unwrap() {
        if keys
            .iter()
            .any(|k| k.writer_instance_id == status.instance_id)
        {
            assert_eq!(
                status.state,
                WriterState::WaitingForBackupComplete,
                "{status:?}"
            );
        }
    }
    let copy = snapshot_path(&mut session, snapshots[0]).await;
    assert_eq!(
        std::fs::read_to_string(copy.join("data/file")).unwrap(),
        "content\n"
    );
    for record in [&hosted_record, &standalone_record] {
        assert_eq!(
            std::fs::read_to_string(record).unwrap(),
            format!("freeze {set_id}\nthaw {set_id}\n"),
            "{}",
            record.display()
        );
    }
    complete(session, &keys).await;
    drop(client);

    // SIGTERM: the hosted writers stop before the server does, and the daemon exits cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(standalone.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        standalone.wait().unwrap().success(),
        "shadowcopy-writer stops on SIGTERM"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("shadowcopyd to exit", Duration::from_secs(60), || {
        matches!(daemon.child.try_wait(), Ok(Some(_)))
    })
    .await;
    let log = daemon.log_text();
    let writer_stopped = log
        .find("hosted writer stopped")
        .expect("the hosted writer stopped");
    let server_stopped = log.rfind("stopped").unwrap();
    assert!(writer_stopped <= server_stopped, "{log}");
    assert!(log.contains("hosted-script"), "{log}");
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
