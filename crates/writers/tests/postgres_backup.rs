//! A PostgreSQL cluster through the backup application end to end: the cluster of
//! `shadowcopy_test_support::postgres` (data on one btrfs loop volume, `pg_wal` on a second one)
//! under pgbench, its writer registered with a real `shadowcopyd` (default configuration, real
//! providers), and the real `shadowcopy` binary making a component-mode backup into a restic
//! repository. The one backup is then restored twice:
//!
//! - privately, with `--to DIR` and no writer: the copy's `pg_wal` link is re-pointed into `DIR`,
//!   and the copy starts as a cluster of its own (crash recovery), passes `pg_amcheck` and keeps
//!   pgbench's balance invariant;
//! - to the original place, after more work on the live cluster: the writer's STOP_RESTORE_START
//!   stops the cluster at PreRestore, the data and WAL directories are mirrored back (so WAL
//!   written after the backup is gone), and PostRestore starts the cluster and waits for recovery;
//!   the work done after the backup is gone, and the cluster passes the same checks.
//!
//! Needs root, btrfs-progs and PostgreSQL (`scripts/install-deps.sh --test`), and the workspace's
//! binaries built (`cargo build --workspace --bins`).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shadowcopy_test_support::postgres::{
    Server, Workload, assert_balanced, chown_postgres, fixture,
};
use shadowcopy_test_support::sets::wait_for;
use shadowcopy_test_support::{Cli, DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};
use shadowcopy_writers::declaration::Declaration;
use shadowcopy_writers::postgres::PostgresWriter;

const PASSWORD: &str = "shadowcopy postgres test password";

/// Runs `work` (a `shadowcopy` command, which waits for the writer) on the blocking pool, so that
/// the writer's handlers keep running on the test's runtime meanwhile.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("the shadowcopy command's thread does not panic")
}

/// `path` below `dir`, as a private restore places it.
fn restored(dir: &Path, path: &Path) -> PathBuf {
    dir.join(path.strip_prefix("/").unwrap())
}

/// The WAL segment files in `dir`, by name, with their inode numbers.
fn segments(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let segment = name.len() == 24 && name.bytes().all(|c| c.is_ascii_hexdigit());
            segment.then(|| (name, entry.metadata().unwrap().ino()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_pgbench_restores_to_a_directory_and_in_place() {
    let a = LoopVolume::btrfs(1024 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let b = LoopVolume::btrfs(768 * MIB).expect("a second btrfs loop volume");
    let fx = fixture(&a, &b, "pg-backup");
    fx.server
        .sql("CREATE TABLE marker (v int); INSERT INTO marker VALUES (1)");
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "pg-backup", "");

    let name = format!("pg-backup-{}", std::process::id());
    let decl = Declaration::parse(
        Path::new("postgres-backup-test.toml"),
        &fx.writer_declaration(&name),
    )
    .expect("a valid declaration");
    let writer = PostgresWriter::from_declaration(&decl).expect("the writer finds the cluster");
    // Once the cluster is gone, dropping the last handle removes the writer's cgroup.
    let keeper = writer.clone();
    let mut handle = shadowcopy_writer_sdk::spawn(writer, decl.options(daemon.socket()));
    handle
        .registered()
        .await
        .expect("the PostgreSQL writer registers");

    let cli =
        Cli::new(workspace_binary("shadowcopy"), &daemon).with_env("RESTIC_PASSWORD", PASSWORD);
    // The component to back up, as the CLI lists it: the cluster, whose data and WAL
    // subcomponents come with it.
    let listed = off_runtime({
        let cli = cli.clone();
        move || cli.json_ok(&["writers", "--components", "--json"])
    })
    .await;
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name.as_str())
        .unwrap_or_else(|| panic!("writer {name} is listed: {listed}"));
    let component = format!("{name}:bench");
    let components: Vec<&str> = ours["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for wanted in [&component, &format!("{name}:bench\\data")] {
        assert!(
            components.contains(&wanted.as_str()),
            "{wanted} in {components:?}"
        );
    }

    // pgbench writes the whole time the backup runs.
    let mut workload = Workload::start(&fx.server, 4);
    let history_count = || -> i64 {
        fx.server
            .sql("SELECT count(*) FROM pgbench_history")
            .parse()
            .unwrap()
    };
    wait_for(
        "pgbench's first transactions",
        Duration::from_secs(60),
        || history_count() > 0,
    )
    .await;
    let history_before = history_count();

    let work = TempDir::new("pg-backup-work");
    let repo = work.join("repo");
    let repo_arg = repo.to_str().unwrap().to_owned();
    let backup = off_runtime({
        let (cli, repo, component) = (cli.clone(), repo_arg.clone(), component.clone());
        move || {
            cli.json_ok(&[
                "backup",
                "--repo",
                &repo,
                "--component",
                &component,
                "--json",
            ])
        }
    })
    .await;
    assert!(
        workload.running(),
        "pgbench stopped during the backup (its clients abort on any error)"
    );
    let backup_id = backup["backup_id"].as_str().unwrap().to_owned();
    assert_eq!(backup["component_mode"], true, "{backup}");
    assert_eq!(backup["backup_type"], "full", "{backup}");
    assert!(backup["set_id"].is_string(), "made from a set: {backup}");
    assert_eq!(
        backup["components"].as_array().unwrap().len(),
        1,
        "one explicit component: {backup}"
    );
    let outcome = &backup["components"][0];
    assert_eq!(outcome["component"], "bench", "{backup}");
    assert_eq!(outcome["succeeded"], true, "{backup}");
    let mut volumes: Vec<&str> = backup["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert!(v["snapshot_id"].is_string(), "{v} was read from a copy");
            v["volume"].as_str().unwrap()
        })
        .collect();
    volumes.sort();
    let mut want = vec![
        a.mount_point().to_str().unwrap(),
        b.mount_point().to_str().unwrap(),
    ];
    want.sort();
    assert_eq!(
        volumes, want,
        "the data and the WAL volume are in the backup"
    );
    let writer_after = backup["writers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name.as_str())
        .unwrap_or_else(|| panic!("the writer took part: {backup}"));
    assert_eq!(writer_after["failed"], false, "{backup}");
    // The WAL position the writer stamped the cluster with, from the stored documents.
    let shown =
        cli.offline_json_ok(&["backups", "show", "--repo", &repo_arg, &backup_id, "--json"]);
    let stamp = shown["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["full_path"] == "bench")
        .and_then(|c| c["backup_stamp"].as_str())
        .unwrap_or_else(|| panic!("the cluster component has a backup stamp: {shown}"))
        .to_owned();

    // Work after the backup, which neither restore may bring back.
    fx.server.sql("INSERT INTO marker VALUES (2)");

    // 1. A private restore, while the live cluster keeps running; no writer takes part.
    let target = TempDir::new("pg-backup-to");
    let private = cli.offline_json_ok(&[
        "restore",
        "--repo",
        &repo_arg,
        "--backup",
        &backup_id,
        "--to",
        target.0.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(private["succeeded"], true, "{private}");
    assert!(
        private["relinked"].as_u64().unwrap() >= 1,
        "pg_wal was re-pointed: {private}"
    );
    for c in private["components"].as_array().unwrap() {
        assert_eq!(c["status"], "ALL", "{private}");
        assert_eq!(c["writer_involved"], false, "{private}");
    }
    let copy_data = restored(&target.0, &fx.data);
    let copy_wal = restored(&target.0, &fx.wal);
    // The WAL segments of the backup, before the copy's recovery adds any.
    let backup_segments = segments(&copy_wal);
    assert!(!backup_segments.is_empty(), "the backup holds WAL");
    let link = std::fs::read_link(copy_data.join("pg_wal")).unwrap();
    assert_eq!(link, copy_wal, "the copy's pg_wal points into the restore");
    assert!(
        !link.starts_with(b.mount_point()),
        "the copy's pg_wal must not point at the live WAL volume: {}",
        link.display()
    );
    assert!(
        !copy_data.join("postmaster.pid").exists(),
        "the writer excludes postmaster.pid from its backups"
    );
    {
        let copy_sock = TempDir::new("pg-backup-copy");
        chown_postgres(&copy_sock.0);
        let copy = Server::start(
            &fx.bin,
            &copy_data,
            &copy_sock.0,
            &copy_sock.join("copy.log"),
        );
        copy.amcheck().unwrap_or_else(|failure| panic!("{failure}"));
        let copy_history = assert_balanced(&copy, "the private restore");
        assert!(
            copy_history > history_before,
            "the copy holds {copy_history} history rows, no more than the {history_before} \
             before the backup started: pgbench was not running"
        );
        assert_eq!(
            copy.sql("SELECT array_agg(v ORDER BY v) FROM marker"),
            "{1}",
            "the copy holds the backup's data"
        );
        assert!(copy.stop("fast"), "the private copy stops");
    }
    // The live cluster never saw the copy: it still has its own WAL directory and data.
    assert_eq!(
        std::fs::read_link(fx.data.join("pg_wal")).unwrap(),
        fx.wal,
        "the live cluster's pg_wal is untouched"
    );

    // 2. More work, then the restore to the original place through the writer.
    drop(workload);
    let more = fx
        .server
        .client("pgbench")
        .args(["-c", "2", "-t", "200", "-n", "postgres"])
        .output()
        .unwrap();
    assert!(more.status.success(), "pgbench after the backup: {more:?}");
    assert_eq!(
        fx.server.sql("SELECT array_agg(v ORDER BY v) FROM marker"),
        "{1,2}"
    );
    // WAL in segments the backup does not have: switch segments (each after a write, or the
    // switch is a no-op) until the current one lies beyond every segment of the backup, including
    // the ones the server had recycled ahead of its position.
    let last_in_backup = backup_segments.keys().next_back().unwrap().clone();
    fx.server.sql("CREATE TABLE after_backup (v int)");
    let mut switches = 0;
    while fx
        .server
        .sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        <= last_in_backup
    {
        assert!(switches < 64, "the WAL does not move past {last_in_backup}");
        fx.server.sql(&format!(
            "INSERT INTO after_backup VALUES ({switches}); SELECT pg_switch_wal()"
        ));
        switches += 1;
    }
    let written_after: BTreeMap<String, u64> = segments(&fx.wal)
        .into_iter()
        .filter(|(name, _)| !backup_segments.contains_key(name))
        .collect();
    assert!(
        !written_after.is_empty(),
        "segments beyond the backup's: {:?}",
        segments(&fx.wal)
    );
    eprintln!(
        "{} segments in the backup (the last {last_in_backup}); {switches} switches; {} segments \
         written after it",
        backup_segments.len(),
        written_after.len()
    );
    let live_lsn = fx.server.sql("SELECT pg_current_wal_lsn()");
    let in_place = off_runtime({
        let (cli, repo, id) = (cli.clone(), repo_arg.clone(), backup_id.clone());
        move || cli.json_ok(&["restore", "--repo", &repo, "--backup", &id, "--json"])
    })
    .await;
    assert_eq!(in_place["succeeded"], true, "{in_place}");
    let restored_components = in_place["components"].as_array().unwrap();
    assert!(!restored_components.is_empty(), "{in_place}");
    for c in restored_components {
        assert_eq!(c["status"], "ALL", "{in_place}");
        assert_eq!(c["method"], "STOP_RESTORE_START", "{in_place}");
        assert_eq!(c["placement"], "original", "{in_place}");
        assert_eq!(c["writer_involved"], true, "{in_place}");
    }
    let writer_status = in_place["writers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name.as_str())
        .unwrap_or_else(|| panic!("the writer took part in the restore: {in_place}"));
    assert_eq!(writer_status["failed"], false, "{in_place}");

    // PostRestore started the cluster (same port and socket) and waited for recovery.
    assert_eq!(fx.server.sql("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        fx.server.sql("SELECT array_agg(v ORDER BY v) FROM marker"),
        "{1}",
        "the marker row written after the backup is gone: the data is the backup's"
    );
    assert_eq!(
        fx.server.sql("SELECT to_regclass('after_backup') IS NULL"),
        "t",
        "the table made after the backup is gone"
    );
    // The WAL directory was mirrored: every segment written after the backup was deleted (a
    // segment of that name now is a new file, made or recycled by the restarted server), so no
    // stale WAL of the discarded history is left for a later crash recovery to read.
    let now = segments(&fx.wal);
    for (name, inode) in &written_after {
        assert_ne!(
            now.get(name),
            Some(inode),
            "{name}, written after the backup, survived the restore"
        );
    }
    // Recovery replayed the backup's WAL and stopped at its end.
    let position = fx.server.sql(&format!(
        "SELECT pg_current_wal_lsn() >= '{stamp}'::pg_lsn, \
                pg_current_wal_lsn() < '{live_lsn}'::pg_lsn"
    ));
    assert_eq!(
        position, "t|t",
        "the restored cluster's WAL position lies between the backup's stamp {stamp} and the \
         position {live_lsn} before the restore"
    );
    fx.server
        .amcheck()
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_balanced(&fx.server, "the restore in place");
    assert_eq!(
        std::fs::read_link(fx.data.join("pg_wal")).unwrap(),
        fx.wal,
        "the restored pg_wal link points at the WAL volume again"
    );

    handle.stop();
    handle.join().await.ok();
    drop(fx);
    drop(keeper);
    drop(daemon);
    drop((target, work));
    b.close().expect("nothing left on the WAL volume");
    a.close().expect("nothing left on the data volume");
}
