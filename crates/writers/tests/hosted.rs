//! A database writer in both of its ways of running: one SQLite writer hosted by `shadowcopyd`
//! from its writers directory, another run by the standalone `shadowcopy-writer`, each declared by
//! a TOML file. A probe writer at the SYSTEM level (frozen after both) finds both databases locked
//! inside the freeze window, and after Thaw both are writable again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use shadowcopy_metadata::enums::ApplicationLevel;
use shadowcopy_metadata::wmd::{Component, FileDescriptor};
use shadowcopy_metadata::{WriterClassId, WriterMetadata};
use shadowcopy_requester::Client;
use shadowcopy_test_support::sets::{complete, file_group, full_backup, snapshot_volumes};
use shadowcopy_test_support::{DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterOptions};

/// Whether a second writer can take the database's write lock right now.
fn writable(path: &Path) -> Result<(), String> {
    let connection = Connection::open(path).map_err(|e| e.to_string())?;
    connection
        .busy_timeout(Duration::ZERO)
        .map_err(|e| e.to_string())?;
    match connection.execute_batch("BEGIN IMMEDIATE; ROLLBACK;") {
        Ok(()) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == ErrorCode::DatabaseBusy => {
            Err("locked".into())
        }
        Err(error) => Err(error.to_string()),
    }
}

/// Frozen after the SQLite writers (SYSTEM level); at its Freeze it records whether each database
/// could be written.
struct Probe {
    class_id: WriterClassId,
    databases: Vec<PathBuf>,
    seen: Arc<Mutex<Vec<Result<(), String>>>>,
}

impl Writer for Probe {
    fn metadata(&self) -> WriterMetadata {
        // A component of its own, so that a component-mode backup can include the probe.
        let dir = self.databases[0].parent().unwrap().join("probe");
        let files = vec![FileDescriptor::new(dir.to_str().unwrap(), "*", false)];
        let probe = Component::file_group("", "probe", true, files);
        WriterMetadata::simple("hosted-probe", self.class_id, vec![probe])
    }

    async fn on_freeze(&self, _ctx: &EventContext) -> HandlerResult {
        let seen: Vec<_> = self.databases.iter().map(|d| writable(d)).collect();
        *self.seen.lock().unwrap() = seen;
        Ok(())
    }
}

fn declaration(name: &str, database: &Path) -> String {
    format!(
        "kind = \"sqlite\"\nname = \"{name}\"\n[sqlite]\n[[sqlite.databases]]\npath = \"{}\"\n",
        database.display()
    )
}

fn create_database(path: &Path) {
    let connection = Connection::open(path).unwrap();
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
        )
        .unwrap();
}

/// The standalone writer process, killed at the end whatever happens.
struct Standalone(Child);

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_and_standalone_sqlite_writers_lock_their_databases_for_the_window() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let hosted_db = volume.path("hosted.db");
    let standalone_db = volume.path("standalone.db");
    create_database(&hosted_db);
    create_database(&standalone_db);

    let dir = TempDir::new("hosted-sqlite");
    let writers_dir = dir.join("writers.d");
    std::fs::create_dir_all(&writers_dir).unwrap();
    std::fs::write(
        writers_dir.join("sqlite.toml"),
        declaration("hosted-sqlite", &hosted_db),
    )
    .unwrap();
    let standalone_file = dir.join("standalone.toml");
    std::fs::write(
        &standalone_file,
        declaration("standalone-sqlite", &standalone_db),
    )
    .unwrap();

    let daemon = DaemonProcess::start(
        &workspace_binary("shadowcopyd"),
        "hosted-sqlite-daemon",
        &format!("[service]\nwriters_dir = \"{}\"\n", writers_dir.display()),
    );
    let _standalone = Standalone(
        Command::new(workspace_binary("shadowcopy-writer"))
            .args(["run"])
            .arg(&standalone_file)
            .arg("--socket")
            .arg(daemon.socket())
            .spawn()
            .expect("shadowcopy-writer runs"),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let probe = Probe {
        class_id: WriterClassId::new_random(),
        databases: vec![hosted_db.clone(), standalone_db.clone()],
        seen: seen.clone(),
    };
    let mut probe_handle = shadowcopy_writer_sdk::spawn(
        probe,
        WriterOptions {
            application_level: ApplicationLevel::System,
            ..WriterOptions::with_socket(daemon.socket())
        },
    );
    probe_handle
        .registered()
        .await
        .expect("the probe registers");

    let client = Client::connect(daemon.socket()).await.unwrap();
    let admin = client.admin();
    let names = ["hosted-sqlite", "standalone-sqlite", "hosted-probe"];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = admin.list_writers(false).await.unwrap();
        if names
            .iter()
            .all(|n| listed.iter().any(|w| w.status.writer_name == *n))
        {
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both SQLite writers register: {}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hosted = listed
        .iter()
        .find(|w| w.status.writer_name == "hosted-sqlite")
        .unwrap();
    assert!(hosted.hosted, "declared in the writers directory: hosted");
    let standalone = listed
        .iter()
        .find(|w| w.status.writer_name == "standalone-sqlite")
        .unwrap();
    assert!(
        !standalone.hosted && standalone.pid.is_some(),
        "{standalone:?}"
    );

    // A component-mode full backup of both databases.
    let (mut session, writers) = full_backup(&client).await;
    let mut keys = Vec::new();
    for name in names {
        let wmd = writers
            .iter()
            .find(|w| w.identity.writer_name == name)
            .expect("the writer answered Identify");
        let component = &wmd.components[0];
        keys.push(file_group(wmd, &component.logical_path, &component.name));
    }
    for key in &keys {
        session.add_component(key).await.unwrap();
    }
    snapshot_volumes(&mut session, &[volume.mount_point()]).await;
    let statuses = session.gather_writer_status().await.unwrap();
    for name in &names[..2] {
        let status = statuses.iter().find(|s| s.writer_name == *name).unwrap();
        assert!(!status.state.is_failed(), "{name} ended {}", status.state);
    }
    complete(session, &keys).await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Err("locked".to_string()), Err("locked".to_string())],
        "inside the freeze window both databases were locked by their writers"
    );
    assert_eq!(
        writable(&hosted_db),
        Ok(()),
        "the hosted writer let go at Thaw"
    );
    assert_eq!(
        writable(&standalone_db),
        Ok(()),
        "the standalone writer let go at Thaw"
    );

    probe_handle.stop();
    probe_handle.join().await.ok();
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
