//! The PostgreSQL writer end to end: a private cluster with its data directory on
//! one btrfs loop volume and `pg_wal` on a second one, pgbench writing the whole time, the writer
//! registered with a real `shadowcopyd`, and 20 consecutive shadow copy sets over both volumes;
//! every set's copy is started as a cluster of its own and must pass `pg_amcheck` and keep
//! pgbench's balance invariant. A second test restores through STOP_RESTORE_START: PreRestore
//! stops the cluster, the files go back, PostRestore starts it and waits for recovery.
//!
//! Needs root, btrfs-progs and PostgreSQL (`scripts/install-deps.sh`), and `shadowcopyd` built
//! (`cargo build -p shadowcopy-daemon`). The cluster fixture is `shadowcopy_test_support::postgres`:
//! every server runs as `postgres` on its own port and socket directory, and is stopped by a guard
//! when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shadowcopy_metadata::{SnapshotId, WriterClassId};
use shadowcopy_requester::{BackupSession, Client, ComponentKey, DeleteTarget, SnapshotFilter};
use shadowcopy_test_support::postgres::{
    Fixture, Server, Workload, assert_balanced, check, chown_postgres, fixture,
};
use shadowcopy_test_support::sets::{
    complete, file_group, full_backup, start_set, writer_of_class,
};
use shadowcopy_test_support::{DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};
use shadowcopy_writer_sdk::{Writer as _, WriterHandle};
use shadowcopy_writers::declaration::Declaration;
use shadowcopy_writers::postgres::PostgresWriter;

/// How many consecutive sets (the issue asks for 20).
const SETS: usize = 20;

/// The writer's declaration for the fixture's cluster; the data directory is left to discovery.
fn declaration(fixture: &Fixture, name: &str) -> Declaration {
    Declaration::parse(
        Path::new("postgres-test.toml"),
        &fixture.writer_declaration(name),
    )
    .expect("a valid declaration")
}

/// Starts the writer against the daemon and waits until it is registered.
async fn start_writer(
    writer: PostgresWriter,
    decl: &Declaration,
    daemon: &DaemonProcess,
) -> WriterHandle {
    let mut handle = shadowcopy_writer_sdk::spawn(writer, decl.options(daemon.socket()));
    handle
        .registered()
        .await
        .expect("the PostgreSQL writer registers");
    handle
}

/// A component-mode full backup of the `bench` cluster component, snapshotting both volumes;
/// returns the session after DoSnapshotSet with the ids of the copies of `volumes`.
async fn snapshot(
    client: &Client,
    volumes: &[&Path],
    class_id: WriterClassId,
    round: usize,
) -> (BackupSession, Vec<SnapshotId>, ComponentKey) {
    let (mut session, writers) = full_backup(client).await;
    let key = file_group(writer_of_class(&writers, class_id), "", "bench");
    session.add_component(&key).await.unwrap();
    let (_, ids) = start_set(&mut session, volumes).await;
    session.prepare_for_backup().await.unwrap();
    session
        .do_snapshot_set()
        .await
        .unwrap_or_else(|e| panic!("round {round}: DoSnapshotSet failed: {e}"));
    let statuses = session.gather_writer_status().await.unwrap();
    let ours = statuses
        .iter()
        .find(|s| s.class_id == class_id)
        .expect("the writer took part");
    assert!(
        !ours.state.is_failed(),
        "round {round}: the PostgreSQL writer ended {} ({:?})",
        ours.state,
        ours.application_message
    );
    (session, ids, key)
}

fn btrfs(args: &[&Path], what: &str) {
    let mut command = Command::new("btrfs");
    command.args(args);
    check(command.output().unwrap(), what);
}

/// A writable copy of a read-only btrfs snapshot, deleted on drop.
struct WritableCopy(PathBuf);

impl WritableCopy {
    fn of(snapshot: &Path, dest: PathBuf) -> WritableCopy {
        btrfs(
            &[
                Path::new("subvolume"),
                Path::new("snapshot"),
                snapshot,
                &dest,
            ],
            "btrfs subvolume snapshot",
        );
        WritableCopy(dest)
    }
}

impl Drop for WritableCopy {
    fn drop(&mut self) {
        let _ = Command::new("btrfs")
            .args(["subvolume", "delete"])
            .arg(&self.0)
            .stdout(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sets_under_pgbench_start_as_consistent_clusters() {
    let a = LoopVolume::btrfs(1536 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let b = LoopVolume::btrfs(1024 * MIB).expect("a second btrfs loop volume");
    let fx = fixture(&a, &b, "pg-sets");
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "pg-sets", "");

    let name = format!("pg-sets-{}", std::process::id());
    let decl = declaration(&fx, &name);
    let writer = PostgresWriter::from_declaration(&decl).expect("the writer finds the cluster");
    // Discovery: the data directory from the server, pg_wal through its link on the other volume.
    assert_eq!(writer.data_directory(), fx.data.canonicalize().unwrap());
    let wmd = writer.metadata();
    let wal = wmd.component("bench", "wal").expect("a wal component");
    assert_eq!(
        Path::new(&wal.files[0].path),
        fx.wal.canonicalize().unwrap(),
        "the WAL component names the directory on the second volume"
    );
    assert!(wmd.component("bench", "data").is_some());
    assert!(wmd.component("", "bench").unwrap().selectable_for_backup);
    // A second handle on the writer: once the cluster is gone, dropping it removes the cgroup.
    let keeper = writer.clone();
    let mut handle = start_writer(writer, &decl, &daemon).await;

    let mut workload = Workload::start(&fx.server, 4);
    // Let pgbench get going, so that the first set already cuts through running transactions.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let client = Client::connect(daemon.socket()).await.unwrap();
    let volumes = [a.mount_point(), b.mount_point()];
    let copies_dir = TempDir::new("pg-sets-copies");
    chown_postgres(&copies_dir.0);
    let started = Instant::now();
    let mut previous_history = -1i64;
    let mut previous_stamp = String::new();
    for round in 0..SETS {
        let (mut session, ids, key) = snapshot(&client, &volumes, decl.class_id, round).await;
        let bcd = session.backup_components().await.unwrap();
        let stamp = bcd
            .writers()
            .iter()
            .find(|w| w.class_id == decl.class_id)
            .and_then(|w| w.component("", "bench"))
            .and_then(|r| r.backup_stamp())
            .expect("the writer stamped the cluster component with the WAL position")
            .to_owned();
        assert_ne!(stamp, previous_stamp, "round {round}: the WAL moved on");
        previous_stamp = stamp;

        let mut snapshot_paths = Vec::new();
        for id in &ids {
            snapshot_paths.push(
                session
                    .snapshot_properties(*id)
                    .await
                    .unwrap()
                    .snapshot_path,
            );
        }
        // Writable copies of both snapshots, on their own volumes (btrfs snapshots of snapshots).
        let data_copy = WritableCopy::of(&snapshot_paths[0], a.path(format!("copy-{round}")));
        let wal_copy = WritableCopy::of(&snapshot_paths[1], b.path(format!("copy-{round}")));
        let copy_data = data_copy.0.join("pgdata");
        let copy_wal = wal_copy.0.join("pgwal");
        std::fs::remove_file(copy_data.join("pg_wal")).unwrap();
        std::os::unix::fs::symlink(&copy_wal, copy_data.join("pg_wal")).unwrap();
        // The copy was running when it was cut; its pid file would name the original server.
        std::fs::remove_file(copy_data.join("postmaster.pid")).unwrap();

        let log = copies_dir.join(&format!("copy-{round}.log"));
        let copy = Server::start(&fx.bin, &copy_data, &copies_dir.0, &log);
        if let Err(failure) = copy.amcheck() {
            panic!("round {round}: {failure}");
        }
        let history = assert_balanced(&copy, &format!("round {round}: the copy"));
        assert!(
            history > previous_history,
            "round {round}: the copy holds {history} history rows, not more than the last \
             set's {previous_history}: pgbench was not running"
        );
        previous_history = history;
        assert!(copy.stop("fast"), "round {round}: the copy stops");
        drop(copy);
        drop((data_copy, wal_copy));

        complete(session, &[key]).await;
    }
    let elapsed = started.elapsed();
    eprintln!("{SETS} sets with copies checked in {elapsed:?}");

    // pgbench ran the whole time: its clients abort (and it exits) on any error.
    assert!(workload.running(), "pgbench stopped during the sets");
    drop(workload);
    // The sets were not persistent: nothing is left once the sessions are released.
    let admin = client.admin();
    let left = admin
        .list_snapshots(&SnapshotFilter::default())
        .await
        .unwrap();
    for snapshot in &left {
        let _ = admin
            .delete_snapshots(&DeleteTarget::Set(snapshot.set_id), false)
            .await;
    }
    assert!(left.is_empty(), "shadow copies left behind: {left:?}");

    // The writer held the cluster through a cgroup of its own, where the postmaster now lives.
    let cgroup = keeper.cgroup().expect("the writer made its cgroup");
    let postmaster = std::fs::read_to_string(fx.data.join("postmaster.pid")).unwrap();
    let postmaster = postmaster.lines().next().unwrap().trim().to_owned();
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|pid| pid.trim() == postmaster),
        "the postmaster {postmaster} is in {}",
        cgroup.display()
    );
    handle.stop();
    handle.join().await.ok();
    drop(fx);
    drop(keeper);
    assert!(
        !cgroup.exists(),
        "{} is removed with the writer",
        cgroup.display()
    );
    drop(daemon);
    b.close().expect("nothing left on the WAL volume");
    a.close().expect("nothing left on the data volume");
}

/// Copies the contents of `from` over `to` (emptied first), keeping owners, modes and links.
fn replace_contents(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(to).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    check(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", from.display()))
            .arg(to)
            .output()
            .unwrap(),
        "cp -a",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_stops_the_cluster_and_starts_it_after_the_files_are_back() {
    let a = LoopVolume::btrfs(1024 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let b = LoopVolume::btrfs(768 * MIB).expect("a second btrfs loop volume");
    let fx = fixture(&a, &b, "pg-restore");
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "pg-restore", "");
    let name = format!("pg-restore-{}", std::process::id());
    let decl = declaration(&fx, &name);
    let writer = PostgresWriter::from_declaration(&decl).expect("the writer finds the cluster");
    let keeper = writer.clone();
    let mut handle = start_writer(writer, &decl, &daemon).await;
    fx.server
        .sql("CREATE TABLE marker (v int); INSERT INTO marker VALUES (1)");

    // The backup: one set, its copies kept as writable subvolumes (the "backup media"), and the
    // BCD and WMDs stored with it (RST-INIT-1).
    let client = Client::connect(daemon.socket()).await.unwrap();
    let volumes = [a.mount_point(), b.mount_point()];
    let (mut session, ids, key) = snapshot(&client, &volumes, decl.class_id, 0).await;
    let data_snapshot = session
        .snapshot_properties(ids[0])
        .await
        .unwrap()
        .snapshot_path;
    let wal_snapshot = session
        .snapshot_properties(ids[1])
        .await
        .unwrap()
        .snapshot_path;
    let data_backup = WritableCopy::of(&data_snapshot, a.path("backup"));
    let wal_backup = WritableCopy::of(&wal_snapshot, b.path("backup"));
    let stored_writers = session.writers().to_vec();
    session.set_backup_succeeded(&key, true).await.unwrap();
    session.backup_complete().await.unwrap();
    let bcd = session.backup_components().await.unwrap();
    session.release().await.unwrap();

    // Work after the backup, which the restore must take away.
    fx.server.sql("INSERT INTO marker VALUES (2)");
    check(
        fx.server
            .client("pgbench")
            .args(["-c", "2", "-t", "200", "-n", "postgres"])
            .output()
            .unwrap(),
        "pgbench after the backup",
    );

    let mut restore = client.restore_session().await.unwrap();
    restore
        .initialize_for_restore(&bcd, &stored_writers)
        .await
        .unwrap();
    restore.gather_writer_metadata().await.unwrap();
    restore.select_for_restore(&key, true, None).await.unwrap();
    restore.pre_restore().await.unwrap();
    // PreRestore stopped the cluster (STOP_RESTORE_START): no postmaster, no socket.
    assert!(
        !fx.data.join("postmaster.pid").exists(),
        "PreRestore stopped the cluster"
    );

    // The requester puts the files back (its own business, RST-FILE-1): data and WAL. The data
    // copy's pg_wal is the original link, pointing at the WAL directory on the other volume.
    replace_contents(&data_backup.0.join("pgdata"), &fx.data);
    std::fs::remove_file(fx.data.join("postmaster.pid")).unwrap();
    replace_contents(&wal_backup.0.join("pgwal"), &fx.wal);

    restore.post_restore().await.unwrap();
    let statuses = restore.gather_writer_status().await.unwrap();
    let ours = statuses
        .iter()
        .find(|s| s.class_id == decl.class_id)
        .expect("the writer took part in the restore");
    assert!(
        !ours.state.is_failed(),
        "the writer ended {} ({:?})",
        ours.state,
        ours.application_message
    );
    restore.release().await.unwrap();

    // PostRestore started the cluster and waited for recovery: it answers at once, with the
    // data of the backup.
    assert_eq!(fx.server.sql("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(fx.server.sql("SELECT array_agg(v) FROM marker"), "{1}");
    assert_balanced(&fx.server, "the restored cluster");

    handle.stop();
    handle.join().await.ok();
    drop((data_backup, wal_backup));
    drop(fx);
    drop(keeper);
    drop(daemon);
    b.close().expect("nothing left on the WAL volume");
    a.close().expect("nothing left on the data volume");
}
