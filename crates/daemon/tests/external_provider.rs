//! An external provider plug-in through `shadowcopyd`: the example `shadowcopy-copy-provider`,
//! registered with `[[providers.external]]`, is listed as a plug-in with its socket, makes the
//! shadow copy of a directory under its root on a real ext4 volume, keeps it across its own
//! restart, deletes it, and refuses a directory outside its root with its own reason
//! (PROV-REG-1, PROV-SEL-1, PROV-R-1, DEL-1).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{SnapshotContext, SnapshotState};
use shadowcopy_requester::{Client, DeleteTarget, SnapshotFilter};
use shadowcopy_test_support::sets::session_in_context;
use shadowcopy_test_support::{DaemonProcess, LoopVolume, MIB, TEST_CONFIG, TempDir, wait_until};

/// The example plug-in. `cargo test --workspace` (and `scripts/test.sh`) builds it with every
/// other binary of the workspace; `workspace_binary` says what to run when it is missing.
fn copy_provider_binary() -> PathBuf {
    shadowcopy_test_support::workspace_binary("shadowcopy-copy-provider")
}

/// The running plug-in; killed on drop.
struct Plugin {
    child: Child,
    log: PathBuf,
}

impl Plugin {
    /// Starts the plug-in and waits until its socket accepts connections.
    fn start(binary: &Path, root: &Path, store: &Path, socket: &Path, log: &Path) -> Plugin {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(binary)
            .arg("--root")
            .arg(root)
            .arg("--store")
            .arg(store)
            .arg("--socket")
            .arg(socket)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("the copy provider starts");
        let mut plugin = Plugin {
            child,
            log: log.to_owned(),
        };
        let listening = wait_until(Duration::from_secs(20), || {
            if let Ok(Some(status)) = plugin.child.try_wait() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("the copy provider exited with {status}: {log}");
            }
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        });
        assert!(
            listening,
            "the copy provider did not listen within 20 s: {}",
            plugin.log_text()
        );
        plugin
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every regular file under `dir`, relative, with its content.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_dir() {
                walk(base, &path, out);
            } else if kind.is_file() {
                let relative = path.strip_prefix(base).unwrap().to_owned();
                out.push((relative, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_provider_plugin_through_the_daemon() {
    let binary = copy_provider_binary();
    let volume = LoopVolume::ext4(64 * MIB).expect("an ext4 loop volume (root and e2fsprogs)");
    let data = volume.path("data");
    std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
    std::fs::write(data.join("a.txt"), "first file\n").unwrap();
    std::fs::write(data.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    std::fs::write(data.join("sub/deeper/c.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("a.txt", data.join("link")).unwrap();
    let store = TempDir::new("copy-store");
    let run = TempDir::new("copy-plugin");
    let socket = run.join("providers/copy.sock");
    let log = run.join("copy-provider.log");
    let root = volume.mount_point().to_owned();
    let plugin = Plugin::start(&binary, &root, &store.0, &socket, &log);

    // TEST_CONFIG ends with its [providers] table, so the array of tables may follow it.
    let config = format!(
        "{TEST_CONFIG}\n[[providers.external]]\nname = \"copy\"\nsocket = \"{}\"\n",
        socket.display()
    );
    let daemon = DaemonProcess::start(
        Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        "external-provider",
        &config,
    );
    let client = Client::connect(daemon.socket()).await.unwrap();
    let admin = client.admin();

    // Listed as a plug-in with its socket, after every built-in provider (PROV-SEL-1 order).
    let providers = admin.list_providers().await.unwrap();
    let position = providers
        .iter()
        .position(|p| p.name == "copy")
        .unwrap_or_else(|| panic!("copy is not listed: {providers:?}\n{}", daemon.log_text()));
    let copy = &providers[position];
    assert!(!copy.builtin, "{copy:?}");
    assert_eq!(copy.socket_path.as_deref(), Some(socket.as_path()));
    assert!(
        providers[..position].iter().all(|p| p.builtin),
        "{providers:?}"
    );
    assert!(
        providers[position + 1..].iter().all(|p| !p.builtin),
        "{providers:?}"
    );
    let copy_id = copy.id;

    // A persistent set without writers, as `shadowcopy create --no-writers` makes it.
    let mut session = session_in_context(&client, SnapshotContext::NasRollback).await;
    let set = session.start_snapshot_set().await.unwrap();
    let snapshot = session
        .add_to_snapshot_set(data.to_str().unwrap(), None)
        .await
        .unwrap();
    session.do_snapshot_set().await.unwrap_or_else(|error| {
        panic!(
            "{error}\n{}\nplug-in: {}",
            daemon.log_text(),
            plugin.log_text()
        )
    });
    let properties = session.snapshot_properties(snapshot).await.unwrap();
    session.release().await.unwrap();

    assert_eq!(properties.provider_id, Some(copy_id));
    assert_eq!(properties.set_id, set);
    let copy_dir = store.0.join(snapshot.to_string());
    assert_eq!(properties.snapshot_path, copy_dir);
    assert_eq!(files(&copy_dir), files(&data), "the copy holds the files");
    assert_eq!(
        std::fs::read_link(copy_dir.join("link")).unwrap(),
        Path::new("a.txt")
    );
    // Changes after the set do not reach the copy.
    std::fs::write(data.join("a.txt"), "changed later\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(copy_dir.join("a.txt")).unwrap(),
        "first file\n"
    );

    // The plug-in dies and comes back: its record file brings the shadow copy back, and the
    // daemon reaches the new process on the same socket.
    drop(plugin);
    let plugin = Plugin::start(&binary, &root, &store.0, &socket, &log);
    let listed = admin
        .list_snapshots(&SnapshotFilter::default())
        .await
        .unwrap();
    let entry = listed
        .iter()
        .find(|s| s.snapshot_id == snapshot)
        .unwrap_or_else(|| panic!("not listed after the plug-in restarted: {listed:?}"));
    assert_eq!(entry.provider_id, Some(copy_id));
    assert_eq!(entry.state, SnapshotState::Created);
    assert_eq!(entry.volume, data.to_str().unwrap());
    assert_eq!(entry.snapshot_path, copy_dir);

    // Deleting it through the daemon removes it from the store and from the listing.
    let deleted = admin
        .delete_snapshots(&DeleteTarget::Snapshot(snapshot), false)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(!copy_dir.exists(), "the copy is gone from the store");
    let listed = admin
        .list_snapshots(&SnapshotFilter::default())
        .await
        .unwrap();
    assert!(
        listed.iter().all(|s| s.snapshot_id != snapshot),
        "{listed:?}"
    );
    let records = std::fs::read_to_string(store.join("records.json")).unwrap();
    assert!(!records.contains(&snapshot.to_string()), "{records}");

    // A directory outside --root: no provider takes it, and the plug-in's reason is in the error.
    let outside = TempDir::new("copy-outside");
    let mut session = session_in_context(&client, SnapshotContext::NasRollback).await;
    session.start_snapshot_set().await.unwrap();
    let error = session
        .add_to_snapshot_set(outside.0.to_str().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(*error.code(), codes::VSS_E_VOLUME_NOT_SUPPORTED, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("copy: ") && message.contains("is not under"),
        "{message}"
    );
    assert!(message.contains(root.to_str().unwrap()), "{message}");
    session.release().await.unwrap();

    drop(daemon);
    drop(plugin);
    volume.close().expect("nothing left mounted or attached");
}
