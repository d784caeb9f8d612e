//! The PostgreSQL writer: publishes a cluster (data directory, `pg_wal` even when
//! it is a symbolic link to another volume, and every tablespace) as one component set, makes
//! every shadow copy set one crash-consistent instant of the whole cluster by holding all of its
//! processes still with the cgroup freezer for the freeze window, and restores with
//! STOP_RESTORE_START.
//!
//! Declared as (docs/writers.md, "postgresql"):
//!
//! ```toml
//! kind = "postgresql"
//! name = "postgresql"
//! [postgresql]
//! socket_dir = "/var/run/postgresql"   # the server's Unix socket directory (default)
//! port = 5432                          # default
//! user = "postgres"                    # the database role (default; peer or trust auth)
//! # database = "postgres"              # default
//! # data_directory = "/var/lib/postgresql/15/main"   # default: SHOW data_directory
//! # cluster = "main"                   # the root of the logical paths; default: the writer name
//! # service = "postgresql@15-main"     # stop/start with systemctl instead of pg_ctl
//! # pg_ctl = "/usr/lib/postgresql/15/bin/pg_ctl"    # default: from PG_VERSION, then PATH
//! # os_user = "postgres"               # runs pg_ctl; default: the data directory's owner
//! # freeze_cgroup = "system.slice/postgresql@15-main.service"   # freeze it instead of adopting
//! # start_log = "/var/log/postgresql/shadowcopy-start.log"     # pg_ctl start -l
//! # recovery_timeout_s = 300           # PostRestore waits this long for recovery to end
//! ```
//!
//! Components (LP-2, SEL-3): the selectable top-level component `<cluster>` with the
//! non-selectable subcomponents `<cluster>\data`, `<cluster>\wal` and
//! `<cluster>\tablespaces\<name>`, so that selecting the cluster always brings in all of its
//! files and none can be backed up alone. `postmaster.pid` and `postmaster.opts` are excluded
//! (WMD-4): a restored `postmaster.pid` would keep the cluster from starting.
//!
//! # Why the cgroup freeze, and not backup mode
//!
//! `../shared/research/postgres-two-volumes.md` measured, with `pg_wal` on a second btrfs volume
//! and pgbench running, what makes a copy of two sequentially snapshotted volumes recoverable:
//! - no coordination: 4 of 30, 1 of 60, 2 of 30 and 4 of 20 copies failed (depending on the
//!   order and the gap), some silently (they started but broke pgbench's invariants);
//! - `pg_backup_start` held across the set and `pg_backup_stop` at Thaw (the obvious mapping onto
//!   Freeze and Thaw): 30 of 30 copies never started (`WAL ends before end of online backup`),
//!   because the WAL volume was cut before the backup's end record existed;
//! - backup mode is correct only when the WAL up to the stop position is captured after
//!   `pg_backup_stop` and pinned meanwhile (0 of 30 failed with the WAL snapshotted at once after
//!   the stop, 8 of 20 failed 2 s later unless a replication slot pinned the WAL).
//!
//! A shadow copy set cuts all volumes inside one freeze window, before any Thaw, so backup mode
//! cannot fit it. This writer instead holds every process of the cluster (the postmaster and all
//! of its descendants, adopted into a cgroup of the writer's own, where new backends inherit it)
//! frozen from Freeze to Thaw, after a `CHECKPOINT` at PrepareForSnapshot that keeps crash
//! recovery of the copy short. While frozen, no process of the cluster issues a write, so the
//! snapshots of the data, WAL and tablespace volumes, taken one after the other, all show the
//! same instant: the state a crash at that instant would leave (every completed write present),
//! from which PostgreSQL's crash recovery starts without a `backup_label`.
//! `crates/writers/tests/postgres.rs` proves it with 20 consecutive sets under pgbench, each copy
//! started as a cluster of its own, passing `pg_amcheck` and pgbench's balance invariant.
//!
//! The backup stamp (INC-3) is the WAL insert position read just before the freeze: the copy
//! holds at least the WAL up to it.
//!
//! The freeze needs root (or a delegated cgroup). Without `freeze_cgroup` the cluster's processes
//! move into `shadowcopy-postgresql-<name>` at PrepareForSnapshot and stay there (a restarted
//! cluster is adopted again); on a systemd host with cgroup v2, set `freeze_cgroup` to the
//! service's own cgroup so that the cluster never leaves its unit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use shadowcopy_metadata::bcd::{Party, WriterComponents};
use shadowcopy_metadata::enums::{RestoreMethod, SourceType, WriterRestore};
use shadowcopy_metadata::wmd::{Component, FileDescriptor, FileSet, RestoreMethodSpec};
use shadowcopy_metadata::{WriterClassId, WriterMetadata};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure};

use crate::cgroup::{Freezer, writer_cgroup_name};
use crate::declaration::{Declaration, DeclarationError};
use crate::script::lock;

/// How long Freeze waits for the kernel to report every process of the cluster frozen; a
/// backend stuck in uninterruptible I/O longer than this vetoes the set instead of stretching the
/// window.
const FREEZE_WAIT: Duration = Duration::from_secs(5);

/// How long a connection attempt to the cluster may take before the event fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[postgresql]` table of a declaration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// The directory of the server's Unix socket (`unix_socket_directories`).
    #[serde(default = "default_socket_dir")]
    pub socket_dir: PathBuf,
    /// The server's port (it names the socket file `.s.PGSQL.<port>`).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The database role the writer connects as; it must be allowed `CHECKPOINT` (superuser or
    /// `pg_checkpoint`) and to read `data_directory` unless that is given.
    #[serde(default = "default_user")]
    pub user: String,
    /// The database to connect to.
    #[serde(default = "default_database")]
    pub database: String,
    /// The data directory; asked from the server (`SHOW data_directory`) when missing.
    pub data_directory: Option<PathBuf>,
    /// The first element of every logical path; the writer name when missing.
    pub cluster: Option<String>,
    /// A systemd unit to stop and start for a restore instead of `pg_ctl`; also the service the
    /// WMD names for STOP_RESTORE_START (RM-2).
    pub service: Option<String>,
    /// The `pg_ctl` to run; by default `/usr/lib/postgresql/<PG_VERSION>/bin/pg_ctl` when it
    /// exists, else `pg_ctl` from PATH.
    pub pg_ctl: Option<PathBuf>,
    /// The system user that runs `pg_ctl`; the owner of the data directory by default.
    pub os_user: Option<String>,
    /// An existing cgroup to freeze instead of adopting the cluster into one of the writer's own;
    /// it must hold nothing but the cluster.
    pub freeze_cgroup: Option<PathBuf>,
    /// The server log of a restore's `pg_ctl start` (`-l`); by default
    /// `<temp dir>/shadowcopy-postgresql-<name>-start.log`.
    pub start_log: Option<PathBuf>,
    /// How long PostRestore waits for the started cluster to end recovery.
    #[serde(default = "default_recovery_timeout")]
    pub recovery_timeout_s: u64,
}

fn default_socket_dir() -> PathBuf {
    PathBuf::from("/var/run/postgresql")
}

fn default_port() -> u16 {
    5432
}

fn default_user() -> String {
    "postgres".into()
}

fn default_database() -> String {
    "postgres".into()
}

fn default_recovery_timeout() -> u64 {
    300
}

/// A tablespace of the cluster: the link in `pg_tblspc` and where it points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tablespace {
    /// The OID, the link's name in `pg_tblspc`.
    oid: String,
    /// The directory the link points at, resolved.
    location: PathBuf,
}

/// Where the cluster's files are, read from the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    /// The WAL directory, resolved (outside the data directory when `pg_wal` is a link).
    wal: PathBuf,
    /// Every tablespace, in OID order.
    tablespaces: Vec<Tablespace>,
}

/// The PostgreSQL writer; see the module documentation.
#[derive(Debug, Clone)]
pub struct PostgresWriter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    class_id: WriterClassId,
    cluster: String,
    settings: PostgresSettings,
    /// The data directory, resolved.
    data: PathBuf,
    pg_ctl: PathBuf,
    os_user: String,
    /// Tablespace names by OID, from `pg_tablespace`; a tablespace missing here is named by OID.
    tablespace_names: Mutex<BTreeMap<String, String>>,
    /// The freezer, made at the first PrepareForSnapshot (so that describing the writer needs no
    /// root).
    freezer: Mutex<Option<Arc<Freezer>>>,
    /// Bumped by every Abort and Thaw: a freeze started before it must not freeze any more
    /// (a cancelled Freeze handler's blocking task may still be running).
    epoch: AtomicU64,
    /// Serialises freezing and thawing, so that the epoch check and the freeze are one step.
    freeze_lock: Arc<Mutex<()>>,
    /// The connection opened at PrepareForSnapshot and used once more at Freeze (reading the WAL
    /// position there must not pay for a new backend inside the window).
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// Whether the current set holds the cluster (decided at PrepareForSnapshot).
    involved: Mutex<bool>,
    /// The WAL insert position read just before the freeze: the backup stamp.
    stamp: Mutex<Option<String>>,
}

impl PostgresWriter {
    /// The writer a `kind = "postgresql"` declaration describes. Asks the server for its data
    /// directory and tablespace names when the declaration does not give the directory.
    pub fn from_declaration(d: &Declaration) -> Result<Self, DeclarationError> {
        crate::cgroup::thaw_leftover(&cgroup_name(&d.name));
        let settings: PostgresSettings = d.settings()?;
        for (key, path) in [
            ("postgresql.socket_dir", Some(&settings.socket_dir)),
            (
                "postgresql.data_directory",
                settings.data_directory.as_ref(),
            ),
        ] {
            if let Some(path) = path
                && !path.is_absolute()
            {
                return Err(DeclarationError::invalid(
                    &d.file,
                    key,
                    format!("{} is not absolute; give the absolute path", path.display()),
                ));
            }
        }
        let (data, names) = match &settings.data_directory {
            Some(data) => {
                // Names are a nicety: a server that is down now still gets a writer.
                let names = discover_blocking(&settings)
                    .map(|(_, names)| names)
                    .unwrap_or_default();
                (data.clone(), names)
            }
            None => discover_blocking(&settings).map_err(|error| {
                DeclarationError::invalid(
                    &d.file,
                    "postgresql.socket_dir",
                    format!(
                        "cannot ask the server at {}/.s.PGSQL.{} for its data directory: \
                         {error}; start the server, or set postgresql.data_directory",
                        settings.socket_dir.display(),
                        settings.port
                    ),
                )
            })?,
        };
        let data = std::fs::canonicalize(&data).map_err(|error| {
            DeclarationError::invalid(
                &d.file,
                "postgresql.data_directory",
                format!(
                    "cannot resolve the data directory {}: {error}; check the path",
                    data.display()
                ),
            )
        })?;
        if !data.join("PG_VERSION").is_file() {
            return Err(DeclarationError::invalid(
                &d.file,
                "postgresql.data_directory",
                format!(
                    "{} holds no PG_VERSION, so it is not a PostgreSQL data directory",
                    data.display()
                ),
            ));
        }
        let pg_ctl = settings
            .pg_ctl
            .clone()
            .unwrap_or_else(|| default_pg_ctl(&data));
        let os_user = match &settings.os_user {
            Some(user) => user.clone(),
            None => owner_of(&data).map_err(|message| {
                DeclarationError::invalid(&d.file, "postgresql.os_user", message)
            })?,
        };
        let cluster = settings.cluster.clone().unwrap_or_else(|| d.name.clone());
        if cluster.is_empty() || cluster.contains('\\') {
            return Err(DeclarationError::invalid(
                &d.file,
                "postgresql.cluster",
                format!("{cluster:?} must be one non-empty logical path element without `\\`"),
            ));
        }
        Ok(PostgresWriter {
            inner: Arc::new(Inner {
                name: d.name.clone(),
                class_id: d.class_id,
                cluster,
                settings,
                data,
                pg_ctl,
                os_user,
                tablespace_names: Mutex::new(names),
                freezer: Mutex::new(None),
                epoch: AtomicU64::new(0),
                freeze_lock: Arc::new(Mutex::new(())),
                client: tokio::sync::Mutex::new(None),
                involved: Mutex::new(false),
                stamp: Mutex::new(None),
            }),
        })
    }

    /// The resolved data directory.
    pub fn data_directory(&self) -> &Path {
        &self.inner.data
    }

    /// The cgroup the writer freezes, once the first PrepareForSnapshot made it.
    pub fn cgroup(&self) -> Option<PathBuf> {
        lock(&self.inner.freezer)
            .as_ref()
            .map(|f| f.path().to_owned())
    }
}

/// `/usr/lib/postgresql/<major>/bin/pg_ctl` (the Debian layout) when it exists, else `pg_ctl`.
fn default_pg_ctl(data: &Path) -> PathBuf {
    let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{}/bin/pg_ctl", version.trim()));
    if debian.is_file() {
        debian
    } else {
        PathBuf::from("pg_ctl")
    }
}

/// The name of the user owning `path`.
fn owner_of(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .uid();
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => Ok(user.name),
        _ => Err(format!(
            "the owner (uid {uid}) of {} has no user name; set postgresql.os_user",
            path.display()
        )),
    }
}

/// Opens a connection to the cluster and drives it on a task of the current runtime.
async fn connect(settings: &PostgresSettings) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&settings.socket_dir)
        .port(settings.port)
        .user(&settings.user)
        .dbname(&settings.database)
        .application_name("shadowcopy-postgresql-writer")
        .connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// A tokio-postgres error with the server's message when there is one (the plain Display says
/// only "db error").
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => error.to_string(),
    }
}

/// Asks the server for its data directory and tablespace names.
async fn discover(
    settings: &PostgresSettings,
) -> Result<(PathBuf, BTreeMap<String, String>), String> {
    let client = connect(settings).await?;
    let data: String = client
        .query_one("SHOW data_directory", &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    let names = tablespace_names(&client).await?;
    Ok((PathBuf::from(data), names))
}

async fn tablespace_names(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<String, String>, String> {
    let rows = client
        .query("SELECT oid::text, spcname::text FROM pg_tablespace", &[])
        .await
        .map_err(|e| describe(&e))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// [`discover`] from synchronous code, inside or outside a Tokio runtime: on a thread of its own
/// with a runtime of its own, since `from_declaration` is not async.
fn discover_blocking(
    settings: &PostgresSettings,
) -> Result<(PathBuf, BTreeMap<String, String>), String> {
    let settings = settings.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        runtime.block_on(discover(&settings))
    })
    .join()
    .map_err(|_| "the discovery thread panicked".to_owned())?
}

/// Reads the data directory: where `pg_wal` really is and what `pg_tblspc` links to.
fn read_layout(data: &Path) -> Layout {
    let wal_link = data.join("pg_wal");
    let wal = std::fs::canonicalize(&wal_link).unwrap_or(wal_link);
    let mut tablespaces: Vec<Tablespace> = std::fs::read_dir(data.join("pg_tblspc"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let location = std::fs::canonicalize(entry.path()).ok()?;
            Some(Tablespace {
                oid: entry.file_name().to_string_lossy().into_owned(),
                location,
            })
        })
        .collect();
    tablespaces.sort_by(|a, b| a.oid.cmp(&b.oid));
    Layout { wal, tablespaces }
}

/// The postmaster's pid, from the first line of `postmaster.pid`; `None` when the cluster is
/// not running (no file, or the process is gone).
fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Every descendant of `root` (children, their children, ...), from the parent pids in
/// `/proc/<pid>/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: the ppid is the second field
        // after the last ')'.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            out.push(child);
            queue.push(child);
        }
    }
    out
}

/// The cgroup name of a writer: `shadowcopy-postgresql-<name>` (see [`writer_cgroup_name`]).
fn cgroup_name(name: &str) -> String {
    writer_cgroup_name("postgresql", name)
}

impl Inner {
    /// The freezer, made (or opened) on first use. A cgroup of the same name left frozen by a
    /// crashed run is thawed here, before anything else (thaw is sacred).
    fn freezer(&self) -> Result<Arc<Freezer>, String> {
        let mut slot = lock(&self.freezer);
        if let Some(freezer) = slot.as_ref() {
            return Ok(Arc::clone(freezer));
        }
        let freezer = match &self.settings.freeze_cgroup {
            Some(path) => Freezer::open(path),
            None => Freezer::create(&cgroup_name(&self.name)),
        }
        .map_err(|e| e.to_string())?;
        freezer.thaw().map_err(|e| e.to_string())?;
        let freezer = Arc::new(freezer);
        *slot = Some(Arc::clone(&freezer));
        Ok(freezer)
    }

    /// Puts the postmaster and all of its descendants into the writer's cgroup (or, with
    /// `freeze_cgroup`, checks that the postmaster is in it). The postmaster goes first, so that
    /// a backend forked meanwhile inherits the cgroup, and the descendants are listed after it.
    /// Writing a pid already in the cgroup changes nothing, so this runs at every set: a
    /// restarted cluster is adopted again.
    fn adopt_cluster(&self, freezer: &Freezer) -> Result<(), String> {
        let pid = postmaster_pid(&self.data).ok_or_else(|| {
            format!(
                "the cluster in {} is not running (no live postmaster in postmaster.pid); start \
                 it, or leave its volumes out of the set",
                self.data.display()
            )
        })?;
        if self.settings.freeze_cgroup.is_some() {
            let pids = freezer.pids().map_err(|e| e.to_string())?;
            if !pids.contains(&pid) {
                return Err(format!(
                    "the postmaster (pid {pid}) is not in postgresql.freeze_cgroup {}; set it to \
                     the cgroup of the cluster's service (see /proc/{pid}/cgroup)",
                    freezer.path().display()
                ));
            }
            return Ok(());
        }
        freezer.adopt(&[pid]).map_err(|e| e.to_string())?;
        for child in descendants(pid) {
            match freezer.adopt(&[child]) {
                Ok(()) => {}
                // A backend that exited between the listing and the move.
                Err(crate::cgroup::FreezerError::Adopt { source, .. })
                    if source.raw_os_error() == Some(nix::libc::ESRCH) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(())
    }

    /// Thaws (if the freezer exists) and invalidates any freeze still under way. Idempotent.
    async fn thaw(&self) -> Result<(), String> {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let freezer = lock(&self.freezer).clone();
        let Some(freezer) = freezer else {
            return Ok(());
        };
        let serial = Arc::clone(&self.freeze_lock);
        tokio::task::spawn_blocking(move || {
            let _serial = lock(&serial);
            freezer.thaw().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the thaw task failed: {e}"))?
    }

    /// Stops the cluster for a restore: `systemctl stop <service>`, or `pg_ctl stop -m fast`
    /// as the cluster's user when it runs.
    async fn stop_cluster(&self) -> Result<(), String> {
        if let Some(service) = &self.settings.service {
            return run_command("systemctl", &["stop".into(), service.clone()], None).await;
        }
        if postmaster_pid(&self.data).is_none() {
            return Ok(());
        }
        let args = vec![
            "stop".into(),
            "-D".into(),
            self.data.display().to_string(),
            "-m".into(),
            "fast".into(),
            "-w".into(),
            "-t".into(),
            "120".into(),
        ];
        self.run_pg_ctl(args).await
    }

    /// Starts the cluster after a restore: `systemctl start <service>`, or `pg_ctl start -w` as
    /// the cluster's user with the socket directory and port the writer connects to.
    async fn start_cluster(&self) -> Result<(), String> {
        if let Some(service) = &self.settings.service {
            return run_command("systemctl", &["start".into(), service.clone()], None).await;
        }
        let log = self.settings.start_log.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("{}-start.log", cgroup_name(&self.name)))
        });
        // pg_ctl runs as the cluster's user, who must be able to write the log.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot create the start log {}: {e}", log.display()))?;
        if let Ok(Some(user)) = nix::unistd::User::from_name(&self.os_user) {
            let _ = nix::unistd::chown(&log, Some(user.uid), Some(user.gid));
        }
        let args = vec![
            "start".into(),
            "-D".into(),
            self.data.display().to_string(),
            "-w".into(),
            "-t".into(),
            self.settings.recovery_timeout_s.to_string(),
            "-l".into(),
            log.display().to_string(),
            "-o".into(),
            format!(
                "-p {} -k {}",
                self.settings.port,
                self.settings.socket_dir.display()
            ),
        ];
        self.run_pg_ctl(args).await.map_err(|error| {
            let tail = std::fs::read_to_string(&log)
                .map(|text| {
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(5)..].join(" | ")
                })
                .unwrap_or_default();
            format!("{error}; server log {}: {tail}", log.display())
        })
    }

    /// Runs `pg_ctl` with `args` as the cluster's user (through `runuser` when the writer runs
    /// as another user, normally root).
    async fn run_pg_ctl(&self, args: Vec<String>) -> Result<(), String> {
        let pg_ctl = self.pg_ctl.display().to_string();
        let same_user = nix::unistd::User::from_name(&self.os_user)
            .ok()
            .flatten()
            .is_some_and(|u| u.uid == nix::unistd::geteuid());
        if same_user {
            run_command(&pg_ctl, &args, Some(&self.data)).await
        } else {
            let mut all = vec!["-u".into(), self.os_user.clone(), "--".into(), pg_ctl];
            all.extend(args);
            run_command("runuser", &all, Some(&self.data)).await
        }
    }

    /// Waits until the cluster accepts connections and `pg_is_in_recovery()` is false.
    async fn wait_for_recovery(&self) -> Result<(), String> {
        let limit = Duration::from_secs(self.settings.recovery_timeout_s);
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < limit {
            match connect(&self.settings).await {
                Ok(client) => match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
                    Ok(row) if !row.get::<_, bool>(0) => return Ok(()),
                    Ok(_) => last = "still in recovery".into(),
                    Err(error) => last = describe(&error),
                },
                Err(error) => last = error,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "the cluster in {} did not finish recovery within {} s ({last}); a restored \
             standby.signal or recovery.signal keeps it in recovery: check the server log",
            self.data.display(),
            limit.as_secs()
        ))
    }
}

/// Runs a command with its output captured; an error names the command, its status and stderr.
/// stdin and stdout are closed and stderr goes to a pipe that only the command itself holds:
/// `pg_ctl start` is given `-l`, so the server it leaves running keeps no pipe of ours open.
async fn run_command(program: &str, args: &[String], dir: Option<&Path>) -> Result<(), String> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = dir {
        // runuser keeps the working directory, which the cluster's user must be able to enter.
        command.current_dir(dir);
    }
    let output = command
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}; check that it is installed"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Writer for PostgresWriter {
    fn metadata(&self) -> WriterMetadata {
        let inner = &self.inner;
        let layout = read_layout(&inner.data);
        let names = lock(&inner.tablespace_names).clone();
        let cluster = inner.cluster.as_str();
        let all = |dir: &Path| vec![FileDescriptor::new(dir.display().to_string(), "*", true)];

        let mut top = Component::file_group("", cluster, true, Vec::new());
        top.caption = Some(format!("PostgreSQL cluster in {}", inner.data.display()));
        let mut data = Component::file_group(cluster, "data", false, all(&inner.data));
        data.caption = Some("The data directory".into());
        let mut wal = Component::file_group(cluster, "wal", false, all(&layout.wal));
        wal.caption = Some("The write-ahead log (pg_wal)".into());
        let mut components = vec![top, data, wal];
        let mut used = BTreeSet::new();
        for tablespace in &layout.tablespaces {
            let mut name = names
                .get(&tablespace.oid)
                .cloned()
                .unwrap_or_else(|| tablespace.oid.clone());
            // Two names may not collide (WMD-9); fall back to the OID, which is unique.
            if !used.insert(name.clone()) {
                name = tablespace.oid.clone();
            }
            let mut component = Component::file_group(
                format!("{cluster}\\tablespaces"),
                name,
                false,
                all(&tablespace.location),
            );
            component.caption = Some(format!("Tablespace OID {}", tablespace.oid));
            components.push(component);
        }

        let mut wmd = WriterMetadata::simple(inner.name.clone(), inner.class_id, components);
        wmd.identity.source_type = SourceType::TransactedDb;
        wmd.restore_method = RestoreMethodSpec {
            method: RestoreMethod::StopRestoreStart,
            service: Some(
                inner
                    .settings
                    .service
                    .clone()
                    .unwrap_or_else(|| "postgresql".into()),
            ),
            user_procedure: None,
            writer_restore: WriterRestore::Always,
            reboot_required: false,
        };
        wmd.excludes = ["postmaster.pid", "postmaster.opts"]
            .into_iter()
            .map(|file| FileSet {
                path: inner.data.display().to_string(),
                filespec: file.into(),
                recursive: false,
            })
            .collect();
        wmd
    }

    async fn on_identify(&self, _ctx: &EventContext) -> Result<WriterMetadata, WriterFailure> {
        // Tablespaces may have been created since the last Identify; their names are a nicety,
        // so a server that does not answer still gets the WMD (named by OID).
        if let Ok(client) = connect(&self.inner.settings).await
            && let Ok(names) = tablespace_names(&client).await
        {
            *lock(&self.inner.tablespace_names) = names;
        }
        Ok(self.metadata())
    }

    async fn on_prepare_snapshot(&self, ctx: &EventContext) -> HandlerResult {
        let inner = &self.inner;
        let layout = read_layout(&inner.data);
        let mut paths = vec![inner.data.clone(), layout.wal.clone()];
        paths.extend(layout.tablespaces.iter().map(|t| t.location.clone()));
        let (held, missing): (Vec<&PathBuf>, Vec<&PathBuf>) =
            paths.iter().partition(|p| ctx.is_path_affected(p));
        *lock(&inner.involved) = !held.is_empty();
        if held.is_empty() {
            // The set holds none of the cluster: nothing to hold still.
            return Ok(());
        }
        if !missing.is_empty() {
            // A copy of the data without its WAL (or the reverse) cannot be recovered (ERR-3).
            return Err(WriterFailure::inconsistent_snapshot(format!(
                "the set holds {held:?} of the PostgreSQL cluster {} but not {missing:?}; add \
                 the volumes of {missing:?} to the set",
                inner.cluster
            )));
        }
        let freezer = inner.freezer().map_err(|error| {
            WriterFailure::non_retryable(format!(
                "cannot set up the cgroup freezer for the PostgreSQL cluster {}: {error}",
                inner.cluster
            ))
        })?;
        let adopt = {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.inner.adopt_cluster(&freezer))
        };
        adopt
            .await
            .map_err(|e| WriterFailure::retryable(format!("the adopt task failed: {e}")))?
            .map_err(WriterFailure::retryable)?;
        // The checkpoint is the heavy part (BK-SNAP-3): afterwards the copy's crash recovery
        // replays only the WAL written in the few seconds up to the freeze.
        let client = connect(&inner.settings).await.map_err(|error| {
            WriterFailure::retryable(format!(
                "cannot connect to the PostgreSQL cluster at {}/.s.PGSQL.{}: {error}",
                inner.settings.socket_dir.display(),
                inner.settings.port
            ))
        })?;
        client.batch_execute("CHECKPOINT").await.map_err(|error| {
            WriterFailure::retryable(format!(
                "CHECKPOINT failed on the cluster {}: {}; the role {} needs superuser or \
                 pg_checkpoint",
                inner.cluster,
                describe(&error),
                inner.settings.user
            ))
        })?;
        *inner.client.lock().await = Some(client);
        Ok(())
    }

    async fn on_freeze(&self, _ctx: &EventContext) -> HandlerResult {
        let inner = &self.inner;
        if !*lock(&inner.involved) {
            return Ok(());
        }
        let epoch = inner.epoch.load(Ordering::SeqCst);
        // Read before the freeze: the frozen backend could not answer after it.
        let lsn = {
            let client = inner.client.lock().await;
            let client = client.as_ref().ok_or_else(|| {
                WriterFailure::retryable("Freeze without PrepareForSnapshot's connection; retry")
            })?;
            client
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .map_err(|error| {
                    WriterFailure::retryable(format!(
                        "cannot read the WAL position of the cluster {}: {}",
                        inner.cluster,
                        describe(&error)
                    ))
                })?
                .get::<_, String>(0)
        };
        *lock(&inner.stamp) = Some(lsn);
        let freezer = inner.freezer().map_err(WriterFailure::non_retryable)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let inner = &this.inner;
            let _serial = lock(&inner.freeze_lock);
            if inner.epoch.load(Ordering::SeqCst) != epoch {
                return Err(WriterFailure::retryable(
                    "the set was aborted while the PostgreSQL writer was freezing",
                ));
            }
            // Backends forked since PrepareForSnapshot inherited the cgroup; a cluster restarted
            // since then is adopted again here (cheap when nothing changed).
            inner
                .adopt_cluster(&freezer)
                .map_err(WriterFailure::retryable)?;
            freezer
                .freeze(FREEZE_WAIT)
                .map_err(|error| {
                    WriterFailure::retryable(format!(
                        "cannot freeze the PostgreSQL cluster {}: {error}",
                        inner.cluster
                    ))
                })?
                // Held until Thaw or Abort; the SDK calls on_abort on every other path
                // (BK-SNAP-5, BK-SNAP-7), and a crashed writer's cgroup is thawed at the next
                // start (Inner::freezer).
                .keep_frozen();
            Ok(())
        })
        .await
        .map_err(|e| WriterFailure::retryable(format!("the freeze task failed: {e}")))?
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
        self.inner.thaw().await.map_err(|error| {
            WriterFailure::non_retryable(format!(
                "cannot thaw the PostgreSQL cluster {}: {error}",
                self.inner.cluster
            ))
        })
    }

    async fn on_abort(&self, _ctx: &EventContext) -> HandlerResult {
        let result = self.inner.thaw().await;
        *self.inner.client.lock().await = None;
        result.map_err(|error| {
            WriterFailure::non_retryable(format!(
                "cannot thaw the PostgreSQL cluster {}: {error}; write 0 to cgroup.freeze of {:?}",
                self.inner.cluster,
                self.cgroup()
            ))
        })
    }

    async fn on_post_snapshot(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        *self.inner.client.lock().await = None;
        let stamp = lock(&self.inner.stamp).take();
        let cluster = self.inner.cluster.as_str();
        // The stamp belongs to the cluster component when the requester chose it (INC-3, BCD-6).
        if let Some(stamp) = stamp
            && components.component("", cluster).is_some()
        {
            components
                .edit(Party::Writer, ctx.phase(), "", cluster)?
                .set_backup_stamp(stamp)?;
        }
        Ok(())
    }

    async fn on_pre_restore(
        &self,
        _ctx: &EventContext,
        _components: &mut WriterComponents,
    ) -> HandlerResult {
        // A frozen cluster cannot stop.
        let _ = self.inner.thaw().await;
        *self.inner.client.lock().await = None;
        self.inner.stop_cluster().await.map_err(|error| {
            WriterFailure::non_retryable(format!(
                "cannot stop the PostgreSQL cluster {} for the restore: {error}",
                self.inner.cluster
            ))
        })
    }

    async fn on_post_restore(
        &self,
        _ctx: &EventContext,
        _components: &mut WriterComponents,
    ) -> HandlerResult {
        let inner = &self.inner;
        inner.start_cluster().await.map_err(|error| {
            WriterFailure::recovery_failed(format!(
                "cannot start the restored PostgreSQL cluster {}: {error}",
                inner.cluster
            ))
        })?;
        inner
            .wait_for_recovery()
            .await
            .map_err(WriterFailure::recovery_failed)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Thaw is sacred; an empty cgroup of our own is removed so that nothing is left behind.
        let Some(freezer) = lock(&self.freezer).take() else {
            return;
        };
        if let Err(error) = freezer.thaw() {
            tracing::error!(%error, "cannot thaw the PostgreSQL cluster {}", self.cluster);
        }
        if self.settings.freeze_cgroup.is_none()
            && let Ok(freezer) = Arc::try_unwrap(freezer)
            && freezer.pids().is_ok_and(|pids| pids.is_empty())
        {
            let _ = freezer.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_names_are_one_plain_component() {
        assert_eq!(cgroup_name("main"), "shadowcopy-postgresql-main");
        assert_eq!(cgroup_name("a/b c"), "shadowcopy-postgresql-a_b_c");
    }

    #[test]
    fn settings_have_the_documented_defaults() {
        let settings: PostgresSettings = toml::from_str("").unwrap();
        assert_eq!(settings.socket_dir, Path::new("/var/run/postgresql"));
        assert_eq!(settings.port, 5432);
        assert_eq!(settings.user, "postgres");
        assert_eq!(settings.recovery_timeout_s, 300);
        assert!(toml::from_str::<PostgresSettings>("bogus = 1").is_err());
    }

    #[test]
    fn descendants_of_this_process_include_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = descendants(std::process::id()).contains(&child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found);
    }
}
