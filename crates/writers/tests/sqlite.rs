//! The SQLite writer against a real `shadowcopyd`: a WAL-mode database on a btrfs
//! loop volume and a rollback-journal database on an xfs loop volume (loop-image provider), each
//! under a continuous transfer workload, through 20 consecutive shadow copy sets; every copy passes
//! `PRAGMA integrity_check` and the workload's invariant, and the workload moves on between sets
//! without a single error. A restore through a RestoreSession then shows that PostRestore passes a
//! good restored file and fails the component of a damaged one with SQLite's message (RST-END-1).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use shadowcopy_metadata::WriterMetadata;
use shadowcopy_metadata::enums::{FileRestoreStatus, WriterState};
use shadowcopy_requester::{Client, ComponentKey, DeleteTarget, Exposure, SnapshotFilter};
use shadowcopy_test_support::sets::{
    app_rollback_set, full_backup, snapshot_path, snapshot_volumes, writer_of_class,
};
use shadowcopy_test_support::{DaemonProcess, FsKind, LoopVolume, MIB, TempDir, workspace_binary};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer};
use shadowcopy_writers::declaration::Declaration;
use shadowcopy_writers::sqlite::{SqliteWriter, integrity_check};

/// How many consecutive sets (the issue asks for 20).
const SETS: usize = 20;
/// Accounts per database.
const ACCOUNTS: i64 = 50;
/// Every account's opening balance; the total never changes.
const OPENING: i64 = 1_000;
/// The SQLite sidecar files a copy of a database must carry with it.
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Creates a bank database: `accounts` with the opening balances and an empty `history`.
fn create_bank(path: &Path, wal: bool) {
    let connection = Connection::open(path).unwrap();
    let mode: String = connection
        .query_row(
            if wal {
                "PRAGMA journal_mode=WAL"
            } else {
                "PRAGMA journal_mode=DELETE"
            },
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(mode, if wal { "wal" } else { "delete" });
    connection
        .execute_batch(&format!(
            "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE TABLE history(id INTEGER PRIMARY KEY, src INTEGER NOT NULL,
                                  dst INTEGER NOT NULL, amount INTEGER NOT NULL);
             CREATE INDEX history_src ON history(src);
             CREATE INDEX history_dst ON history(dst);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ACCOUNTS})
             INSERT INTO accounts SELECT i, {OPENING} FROM n;"
        ))
        .unwrap();
}

/// The workload's invariant in a database: the total is unchanged and every balance equals the
/// opening balance plus what `history` says came in minus what went out. Returns the number of
/// transfers, or what is wrong.
fn check_bank(path: &Path) -> Result<i64, String> {
    let connection = Connection::open(path).map_err(|e| e.to_string())?;
    let total: i64 = connection
        .query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if total != ACCOUNTS * OPENING {
        return Err(format!("total {total}, expected {}", ACCOUNTS * OPENING));
    }
    let wrong: i64 = connection
        .query_row(
            &format!(
                "SELECT count(*) FROM accounts a WHERE balance != {OPENING}
                   - (SELECT coalesce(sum(amount), 0) FROM history WHERE src = a.id)
                   + (SELECT coalesce(sum(amount), 0) FROM history WHERE dst = a.id)"
            ),
            [],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    if wrong != 0 {
        return Err(format!("{wrong} balances disagree with the history"));
    }
    connection
        .query_row("SELECT count(*) FROM history", [], |r| r.get(0))
        .map_err(|e| e.to_string())
}

/// The number of committed transfers in the live database at `path`, read with a plain
/// connection: allowed while the SQLite writer holds the write lock, since readers go on.
fn live_transfers(path: &Path) -> i64 {
    let connection = Connection::open(path).unwrap();
    connection.busy_timeout(Duration::from_secs(10)).unwrap();
    connection
        .query_row("SELECT count(*) FROM history", [], |r| r.get(0))
        .unwrap()
}

/// The transfers committed in each database when a set's freeze began and when it ended.
type Window = (Vec<i64>, Vec<i64>);

/// The SQLite writer, observed: right after its Freeze and right before its Thaw, while it holds
/// the locks, it reads how many transfers each live database has committed. Equal numbers mean
/// no transaction of the application committed during the window, and the copy must hold exactly
/// that many.
struct Observed {
    inner: SqliteWriter,
    databases: Vec<PathBuf>,
    at_freeze: Mutex<Vec<i64>>,
    /// (at Freeze, at Thaw) of every set, in order.
    windows: Arc<Mutex<Vec<Window>>>,
}

impl Writer for Observed {
    fn metadata(&self) -> WriterMetadata {
        self.inner.metadata()
    }

    async fn on_prepare_snapshot(&self, ctx: &EventContext) -> HandlerResult {
        self.inner.on_prepare_snapshot(ctx).await
    }

    async fn on_freeze(&self, ctx: &EventContext) -> HandlerResult {
        self.inner.on_freeze(ctx).await?;
        *self.at_freeze.lock().unwrap() =
            self.databases.iter().map(|d| live_transfers(d)).collect();
        Ok(())
    }

    async fn on_thaw(&self, ctx: &EventContext) -> HandlerResult {
        let at_thaw: Vec<i64> = self.databases.iter().map(|d| live_transfers(d)).collect();
        let at_freeze = self.at_freeze.lock().unwrap().clone();
        self.windows.lock().unwrap().push((at_freeze, at_thaw));
        self.inner.on_thaw(ctx).await
    }

    async fn on_abort(&self, ctx: &EventContext) -> HandlerResult {
        self.inner.on_abort(ctx).await
    }
}

/// The application: one thread per database doing transfers back to back, each with a busy
/// timeout long enough to wait through a freeze window instead of failing.
struct Workload {
    stop: Arc<AtomicBool>,
    /// Transfers committed so far, per database (never more than the database holds).
    commits: Arc<Vec<AtomicU64>>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    fn start(databases: &[PathBuf]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let commits: Arc<Vec<AtomicU64>> =
            Arc::new(databases.iter().map(|_| AtomicU64::new(0)).collect());
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = databases
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let (path, stop, commits, errors) =
                    (path.clone(), stop.clone(), commits.clone(), errors.clone());
                std::thread::spawn(move || {
                    if let Err(error) = transfer_until(&path, i as u64, &stop, &commits[i]) {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("{}: {error}", path.display()));
                    }
                })
            })
            .collect();
        Workload {
            stop,
            commits,
            errors,
            threads,
        }
    }

    /// The transfers committed so far in each database.
    fn committed(&self) -> Vec<i64> {
        self.commits
            .iter()
            .map(|c| c.load(Ordering::SeqCst) as i64)
            .collect()
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Transfers between random accounts of the database at `path` until `stop`.
fn transfer_until(
    path: &Path,
    seed: u64,
    stop: &AtomicBool,
    commits: &AtomicU64,
) -> rusqlite::Result<()> {
    let mut connection = Connection::open(path)?;
    // Far above a freeze window: the workload must wait for the writer's lock, never fail.
    connection.busy_timeout(Duration::from_secs(60))?;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |bound: i64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % bound as u64) as i64
    };
    while !stop.load(Ordering::SeqCst) {
        let src = next(ACCOUNTS) + 1;
        let dst = next(ACCOUNTS) + 1;
        let amount = next(100) + 1;
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        transaction.execute(
            "UPDATE accounts SET balance = balance - ?1 WHERE id = ?2",
            (amount, src),
        )?;
        transaction.execute(
            "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2",
            (amount, dst),
        )?;
        transaction.execute(
            "INSERT INTO history(src, dst, amount) VALUES (?1, ?2, ?3)",
            (src, dst, amount),
        )?;
        transaction.commit()?;
        commits.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

/// Writes the declaration of a SQLite writer for `databases` (component names `bank`, `ledger`,
/// ...) into `dir` and parses it, as `shadowcopyd` or `shadowcopy-writer run` would.
fn declare(dir: &TempDir, name: &str, databases: &[(&str, &Path)]) -> Declaration {
    let mut text = format!(
        "kind = \"sqlite\"\nname = \"{name}\"\nfreeze_timeout_ms = 20000\n\
         [sqlite]\nbusy_timeout_ms = 5000\n"
    );
    for (component, path) in databases {
        text.push_str(&format!(
            "[[sqlite.databases]]\npath = \"{}\"\ncomponent = \"{component}\"\nlogical_path = \"sqlite\"\n",
            path.display()
        ));
    }
    let file = dir.join(&format!("{name}.toml"));
    std::fs::write(&file, &text).unwrap();
    Declaration::load(&file).unwrap()
}

/// Copies the database `name` and whichever sidecars exist from `from` into `to`, as a backup tool
/// copies the component's file sets out of a shadow copy.
fn copy_database(from: &Path, name: &str, to: &Path) {
    std::fs::copy(from.join(name), to.join(name))
        .unwrap_or_else(|e| panic!("copying {name} from {}: {e}", from.display()));
    for suffix in SIDECARS {
        let file = format!("{name}{suffix}");
        if from.join(&file).exists() {
            std::fs::copy(from.join(&file), to.join(&file)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sets_under_load_hold_consistent_databases() {
    let btrfs = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    // The xfs volume's image lives on a reflink-capable host, so the loop-image provider clones it.
    let host = LoopVolume::xfs(768 * MIB).expect("an xfs host volume (xfsprogs)");
    let xfs = LoopVolume::new_in(FsKind::Xfs, 320 * MIB, host.mount_point())
        .expect("an xfs loop volume whose image is on the host");
    let volumes = vec![
        btrfs.mount_point().to_path_buf(),
        xfs.mount_point().to_path_buf(),
    ];
    let bank = btrfs.path("bank.db");
    let ledger = xfs.path("ledger.db");
    create_bank(&bank, true);
    create_bank(&ledger, false);

    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "sqlite-writer", "");
    let scratch = TempDir::new("sqlite-writer-sets");
    let declaration = declare(
        &scratch,
        "sqlite-bank",
        &[("bank", &bank), ("ledger", &ledger)],
    );
    let class_id = declaration.class_id;
    let windows = Arc::new(Mutex::new(Vec::new()));
    let writer = Observed {
        inner: SqliteWriter::from_declaration(&declaration).unwrap(),
        databases: vec![bank.clone(), ledger.clone()],
        at_freeze: Mutex::new(Vec::new()),
        windows: windows.clone(),
    };
    let mut handle = shadowcopy_writer_sdk::spawn(writer, declaration.options(daemon.socket()));
    handle
        .registered()
        .await
        .expect("the SQLite writer registers");

    let workload = Workload::start(&[bank.clone(), ledger.clone()]);
    let client = Client::connect(daemon.socket()).await.unwrap();
    let admin = client.admin();
    let mut previous = [0i64; 2];
    for round in 0..SETS {
        // The workload must commit in both databases between two sets; wait until it has (the
        // limit only bounds a hang), so that each copy must hold more than the one before.
        let start = std::time::Instant::now();
        while workload
            .committed()
            .iter()
            .zip(&previous)
            .any(|(now, before)| now <= before)
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "round {round}: the workload made no progress after the last set: {:?}",
                workload.errors()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (set, snapshots) = app_rollback_set(&client, &volumes, class_id, round).await;
        let listed = admin
            .list_snapshots(&SnapshotFilter {
                set_id: Some(set),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 2, "round {round}: {listed:?}");
        let window = windows
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the writer was frozen");
        assert_eq!(windows.lock().unwrap().len(), round + 1);
        assert_eq!(
            window.0, window.1,
            "round {round}: the application committed while the databases were frozen"
        );
        let copies = scratch.join(&format!("round-{round}"));
        std::fs::create_dir_all(&copies).unwrap();
        for (id, name) in snapshots.iter().zip(["bank.db", "ledger.db"]) {
            let exposed = admin
                .expose_snapshot(*id, &Exposure::Locally { directory: None })
                .await
                .unwrap_or_else(|e| panic!("round {round}: exposing {id} failed: {e}"));
            copy_database(Path::new(&exposed), name, &copies);
            admin.unexpose_snapshot(*id).await.unwrap();
        }
        for (i, (name, mode)) in [("bank.db", "wal"), ("ledger.db", "delete")]
            .into_iter()
            .enumerate()
        {
            let copy = copies.join(name);
            assert_eq!(
                integrity_check(&copy),
                Ok(()),
                "round {round}: the copy of {name} is damaged"
            );
            let transfers = check_bank(&copy).unwrap_or_else(|e| {
                panic!("round {round}: the copy of {name} breaks the invariant: {e}")
            });
            let journal: String = Connection::open(&copy)
                .unwrap()
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(
                journal, mode,
                "round {round}: {name} keeps its journal mode"
            );
            assert_eq!(
                transfers, window.1[i],
                "round {round}: the copy of {name} holds exactly what was committed when it was cut"
            );
            assert!(
                transfers > previous[i],
                "round {round}: no transfer in {name} since the last set ({} then {transfers})",
                previous[i]
            );
            previous[i] = transfers;
        }
        std::fs::remove_dir_all(&copies).unwrap();
        let deleted = admin
            .delete_snapshots(&DeleteTarget::Set(set), false)
            .await
            .unwrap();
        assert_eq!(deleted, 2, "round {round}");
        assert_eq!(workload.errors(), Vec::<String>::new(), "round {round}");
    }
    // The workload ran on after the last set, and never failed: the freeze made it wait.
    let commits = workload.committed();
    let start = std::time::Instant::now();
    while workload
        .committed()
        .iter()
        .zip(&commits)
        .any(|(now, before)| now <= before)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the workload stopped after the sets"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(workload);
    assert!(check_bank(&bank).unwrap() >= previous[0]);
    assert!(check_bank(&ledger).unwrap() >= previous[1]);

    handle.stop();
    handle.join().await.ok();
    drop(daemon);
    xfs.close().expect("the xfs volume detaches");
    host.close().expect("the host volume detaches");
    btrfs.close().expect("nothing left on the btrfs volume");
}

/// The component key of `name` (logical path `sqlite`) of the running writer `wmd`.
fn key(wmd: &WriterMetadata, name: &str) -> ComponentKey {
    let component = wmd
        .component("sqlite", name)
        .expect("the writer declares it");
    ComponentKey::of(wmd, component)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_restore_fails_the_component_of_a_damaged_database() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let good = volume.path("good.db");
    let bad = volume.path("bad.db");
    create_bank(&good, true);
    create_bank(&bad, false);
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "sqlite-restore", "");
    let scratch = TempDir::new("sqlite-writer-restore");
    let declaration = declare(
        &scratch,
        "sqlite-restore",
        &[("good", &good), ("bad", &bad)],
    );
    let class_id = declaration.class_id;
    let writer = SqliteWriter::from_declaration(&declaration).unwrap();
    let mut handle = shadowcopy_writer_sdk::spawn(writer, declaration.options(daemon.socket()));
    handle
        .registered()
        .await
        .expect("the SQLite writer registers");
    let client = Client::connect(daemon.socket()).await.unwrap();

    // A component-mode full backup of both databases, copied out of the shadow copy.
    let (mut session, writers) = full_backup(&client).await;
    let stored = writer_of_class(&writers, class_id).clone();
    for name in ["good", "bad"] {
        session.add_component(&key(&stored, name)).await.unwrap();
    }
    let (_, snapshots) = snapshot_volumes(&mut session, &[volume.mount_point()]).await;
    let copy_root = snapshot_path(&mut session, snapshots[0]).await;
    let media = scratch.join("media");
    std::fs::create_dir_all(&media).unwrap();
    for name in ["good.db", "bad.db"] {
        copy_database(&copy_root, name, &media);
    }
    for name in ["good", "bad"] {
        session
            .set_backup_succeeded(&key(&stored, name), true)
            .await
            .unwrap();
    }
    session.backup_complete().await.unwrap();
    let bcd = session.backup_components().await.unwrap();
    session.release().await.unwrap();

    // The live databases move on after the backup; the restore must bring back the old state.
    for path in [&good, &bad] {
        Connection::open(path)
            .unwrap()
            .execute("INSERT INTO history(src, dst, amount) VALUES (1, 1, 0)", [])
            .unwrap();
    }

    let mut restore = client.restore_session().await.unwrap();
    restore
        .initialize_for_restore(&bcd, std::slice::from_ref(&stored))
        .await
        .unwrap();
    let running = restore.gather_writer_metadata().await.unwrap();
    let running = running
        .iter()
        .find(|w| w.identity.class_id == class_id)
        .expect("our writer runs")
        .clone();
    for name in ["good", "bad"] {
        restore
            .select_for_restore(&key(&running, name), true, None)
            .await
            .unwrap();
    }
    // Sidecars the stopped application left behind, which the backup does not hold: a hot
    // journal like this one would be rolled back into the restored file.
    for stale in ["good.db-wal", "good.db-shm", "bad.db-journal"] {
        std::fs::write(volume.path(stale), b"stale").unwrap();
    }
    restore.pre_restore().await.unwrap();
    for stale in ["good.db-wal", "good.db-shm", "bad.db-journal"] {
        assert!(
            !volume.path(stale).exists(),
            "PreRestore removes the live {stale} before the files come back"
        );
    }

    // Copy the files back; the backup of bad.db turns out damaged (a whole page overwritten).
    copy_database(&media, "good.db", volume.mount_point());
    copy_database(&media, "bad.db", volume.mount_point());
    let mut bytes = std::fs::read(&bad).unwrap();
    let page = 4096;
    assert!(
        bytes.len() >= 3 * page,
        "bad.db has a b-tree page to damage"
    );
    for byte in &mut bytes[page..2 * page] {
        *byte = 0xA5;
    }
    std::fs::write(&bad, bytes).unwrap();
    for name in ["good", "bad"] {
        restore
            .set_file_restore_status(&key(&running, name), FileRestoreStatus::All)
            .await
            .unwrap();
    }
    restore.post_restore().await.unwrap();
    let statuses = restore.gather_writer_status().await.unwrap();
    let ours = statuses
        .iter()
        .find(|s| s.class_id == class_id)
        .expect("our writer reports");
    assert_eq!(ours.state, WriterState::FailedAtPostRestore, "{ours:?}");
    let message = ours.application_message.clone().unwrap_or_default();
    assert!(
        message.contains("bad.db") && message.contains("integrity_check"),
        "the failure names the file and the check: {ours:?}"
    );
    assert!(!message.contains("good.db"), "good.db passed: {message}");
    let after = restore.backup_components().await.unwrap();
    let records = after
        .writers()
        .iter()
        .find(|w| w.class_id == class_id)
        .expect("our writer's records");
    let bad_record = records.component("sqlite", "bad").unwrap();
    assert!(
        bad_record
            .post_restore_failure_message()
            .is_some_and(|m| m.contains("integrity_check")),
        "{bad_record:?}"
    );
    assert_eq!(
        records
            .component("sqlite", "good")
            .unwrap()
            .post_restore_failure_message(),
        None
    );
    restore.release().await.unwrap();

    // The good database is back as it was at the backup: the later insert is gone.
    assert_eq!(check_bank(&good), Ok(0));
    assert!(integrity_check(&bad).is_err());

    handle.stop();
    handle.join().await.ok();
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
