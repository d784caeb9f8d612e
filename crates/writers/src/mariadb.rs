//! The MariaDB writer: quiesces a MariaDB server with `BACKUP STAGE` on one
//! dedicated connection, holds the whole server still with the cgroup freezer for the freeze
//! window, records the binary log position as the backup stamp, and restores with
//! STOP_RESTORE_START.
//!
//! Declared as (docs/writers.md, "mariadb"):
//!
//! ```toml
//! kind = "mariadb"
//! name = "mariadb"
//! [mariadb]
//! socket = "/run/mysqld/mysqld.sock"   # required: the server's Unix socket
//! user = "root"                        # default root (unix_socket authentication as root)
//! # password = "..."                   # only for password accounts
//! # datadir = "/var/lib/mysql"         # default: discovered with SELECT @@datadir
//! # log_dirs = ["/srv/redo"]           # default: discovered (redo log, binary log, data home)
//! freeze_server = true                 # cgroup-freeze mariadbd for the window (see below)
//! # freeze_cgroup = "system.slice/mariadb.service"   # freeze this cgroup instead of adopting
//! service = "mariadb"                  # the service name in the WMD (STOP_RESTORE_START)
//! stop_command = "systemctl stop mariadb"
//! start_command = "systemctl start mariadb"
//! start_timeout_s = 120
//! ```
//!
//! The protocol, one connection for the whole backup (the stages belong to the connection that
//! took them, so a lost connection ends them too, and the server is never left blocked):
//! - PrepareForSnapshot: check that the set holds the data directory and every log directory
//!   (ERR-3), connect, `BACKUP STAGE START`;
//! - Freeze: `BACKUP STAGE FLUSH`, `BLOCK_DDL`, `BLOCK_COMMIT`, read `SHOW MASTER STATUS` (the
//!   backup stamp, INC-3), then freeze the server's cgroup;
//! - Thaw and Abort: thaw the cgroup, `BACKUP STAGE END`, close the connection. Thaw fails when
//!   the connection was lost while frozen, since the commit block may have lapsed early.
//!
//! Why the cgroup freeze, and not `BLOCK_COMMIT` alone. `BLOCK_COMMIT` stops commits and binary
//! log writes, but InnoDB keeps writing: transactions that have not reached COMMIT go on
//! modifying pages and writing redo, the page cleaner flushes dirty pages and advances the
//! checkpoint, and purge runs. When the redo log (`innodb_log_group_home_dir`) or the binary log
//! lives on another volume than the data files, the btrfs provider snapshots the volumes one
//! after the other, so the data copy and the log copy are of two different instants: a
//! checkpoint written to the log copy after the data copy was cut can claim pages the data copy
//! does not hold, and a page written after the log copy was cut can carry an LSN the log copy
//! never reached. Freezing every thread of `mariadbd` after `BLOCK_COMMIT` makes the set one
//! crash-consistent instant: no page, redo or checkpoint write is issued while the volumes are
//! cut, and a write issued before the freeze had its redo made durable first (write-ahead
//! logging), so every volume's copy is at least as new as what the others depend on.
//! `crates/writers/tests/mariadb.rs` measures it. The data directory is on one btrfs volume,
//! the redo log and the binary log on another, four clients move money between 20 000 InnoDB
//! accounts the whole time, and a probe writer at the SYSTEM level (frozen after this writer,
//! thawed before it) watches the server's files for 300 ms inside each freeze window:
//! - `BLOCK_COMMIT` alone (`freeze_server = false`): in 5 of 12 windows the server wrote to
//!   `bank/accounts.ibd`, `ibdata1` and `ib_logfile0` while commits were blocked, and the two
//!   snapshot ioctls of a set were 3 to 30 ms apart (once 300 ms). The copies still recovered
//!   in all 64 sets tried (two runs of 12, one of 40), because a page flush and the checkpoint
//!   that covers it rarely both fall into those few milliseconds; but nothing prevents it.
//! - With the cgroup freeze: no file changed in any window, and every copy recovered, passed
//!   `CHECK TABLE` and kept the total balance.
//!
//! The freeze needs root (or a delegated cgroup). Without `freeze_cgroup`, the writer moves the
//! server process (from `@@pid_file`) into a cgroup of its own (`shadowcopy-mariadb-<name>`)
//! for the window and back into the cgroup it came from after it; on a systemd host with cgroup v2 set `freeze_cgroup` to
//! the service's own cgroup instead, so that the server never leaves its unit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use shadowcopy_metadata::bcd::{Party, WriterComponents};
use shadowcopy_metadata::enums::{
    BackupSchema, RestoreMethod, SourceType, UsageType, WriterRestore,
};
use shadowcopy_metadata::wmd::{
    Component, FileDescriptor, RestoreMethodSpec, WriterIdentity, WriterVersion,
};
use shadowcopy_metadata::{WriterClassId, WriterInstanceId, WriterMetadata};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure};
use tokio::sync::Mutex;

use crate::cgroup::{Freezer, FreezerError, FreezerVersion, writer_cgroup_name};
use crate::declaration::{Declaration, DeclarationError};

/// The logical path of the writer's one component (LP-1: top level).
pub const COMPONENT_LOGICAL_PATH: &str = "";

/// The name of the writer's selectable component: the whole server, with the data directory.
/// InnoDB's system tablespace, undo logs and redo log belong to every database at once, so no
/// database can be copied or restored on its own.
pub const COMPONENT_NAME: &str = "server";

/// The logical path of the logs subcomponent: below the server component (LP-2).
pub const LOGS_LOGICAL_PATH: &str = "server";

/// The name of the subcomponent with the redo and binary logs that live outside the data
/// directory; present only when some do.
pub const LOGS_NAME: &str = "logs";

/// How long Freeze may wait for the cgroup freezer to report every thread of the server frozen.
const FREEZE_LIMIT: Duration = Duration::from_secs(5);

/// The longest a `BACKUP STAGE` statement may wait for a lock (`lock_wait_timeout`), so that a
/// long DDL or a table lock makes Freeze fail fast instead of running into the freeze window.
const STAGE_LOCK_WAIT_S: u64 = 10;

/// The `[mariadb]` table of a declaration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MariadbSettings {
    /// The server's Unix socket.
    pub socket: PathBuf,
    /// The account to connect as; `root` by default (unix_socket authentication when the writer
    /// runs as root). It needs the RELOAD privilege for `BACKUP STAGE` and BINLOG MONITOR for
    /// `SHOW MASTER STATUS`.
    #[serde(default = "default_user")]
    pub user: String,
    /// The account's password, for password accounts.
    #[serde(default)]
    pub password: Option<String>,
    /// The data directory; discovered with `SELECT @@datadir` when missing.
    #[serde(default)]
    pub datadir: Option<PathBuf>,
    /// Directories outside the data directory holding the server's logs (redo log, binary log)
    /// or data (`innodb_data_home_dir`); discovered from the server's variables when missing.
    #[serde(default)]
    pub log_dirs: Option<Vec<PathBuf>>,
    /// Whether to freeze the server's processes with the cgroup freezer for the freeze window;
    /// true by default, and needed whenever the logs live on another volume than the data.
    #[serde(default = "default_true")]
    pub freeze_server: bool,
    /// An existing cgroup to freeze (the server's systemd unit, e.g.
    /// `system.slice/mariadb.service`) instead of moving the server into a cgroup of our own.
    #[serde(default)]
    pub freeze_cgroup: Option<PathBuf>,
    /// The service name the WMD gives for STOP_RESTORE_START (RM-1).
    #[serde(default = "default_service")]
    pub service: String,
    /// The shell command that stops the server before a restore (PreRestore).
    #[serde(default)]
    pub stop_command: Option<String>,
    /// The shell command that starts the server after a restore (PostRestore).
    #[serde(default)]
    pub start_command: Option<String>,
    /// How long PostRestore waits for the started server to answer.
    #[serde(default = "default_start_timeout")]
    pub start_timeout_s: u64,
}

fn default_user() -> String {
    "root".into()
}

fn default_true() -> bool {
    true
}

fn default_service() -> String {
    "mariadb".into()
}

fn default_start_timeout() -> u64 {
    120
}

/// Where the server keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The data directory (`@@datadir`).
    pub datadir: PathBuf,
    /// Directories outside the data directory that hold the redo log, the binary log or InnoDB
    /// data files.
    pub outside: Vec<OutsideDir>,
}

/// A directory outside the data directory that the server writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideDir {
    /// The directory.
    pub dir: PathBuf,
    /// The file pattern of the server's files there (`ib_logfile*`, `mariadb-bin.*`, `*`).
    pub pattern: String,
    /// Whether it holds logs (redo, binary log) rather than data files.
    pub log: bool,
}

impl OutsideDir {
    fn new(dir: PathBuf, pattern: &str, log: bool) -> Self {
        OutsideDir {
            dir,
            pattern: pattern.to_owned(),
            log,
        }
    }
}

impl Layout {
    /// Every directory the copy needs: the data directory and the ones outside it.
    pub fn directories(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.datadir.as_path()).chain(self.outside.iter().map(|o| o.dir.as_path()))
    }
}

/// What one backup holds from PrepareForSnapshot until Thaw or Abort.
struct Backup {
    /// The requester session it belongs to.
    session: Option<String>,
    /// The dedicated connection that holds the backup stages.
    conn: Option<mysql_async::Conn>,
    /// The frozen cgroup, from Freeze until Thaw or Abort.
    frozen: Option<Arc<Freezer>>,
    /// When we moved the server into `frozen` ourselves: its pid and the cgroup it came from
    /// (`None` for the hierarchy's root), to move it back after the thaw.
    adopted: Option<(u32, Option<PathBuf>)>,
}

/// The MariaDB writer.
pub struct MariadbWriter {
    name: String,
    class_id: WriterClassId,
    settings: MariadbSettings,
    layout: Layout,
    /// The backup in progress; one at a time (LIMIT-4: one set in creation per coordinator).
    backup: Mutex<Option<Backup>>,
    /// The binary log position at the last freeze, per set: the backup stamp (INC-3).
    stamp: std::sync::Mutex<Option<String>>,
    /// Held by the blocking task that freezes the server and by the one that thaws it: a Freeze
    /// handler cancelled by an Abort leaves its freeze task running (the v1 freezer retries
    /// FROZEN until the whole cgroup is frozen), and the thaw must come after it, never before.
    freezing: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for MariadbWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariadbWriter")
            .field("name", &self.name)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl MariadbWriter {
    /// The writer of a `kind = "mariadb"` declaration. When the declaration names no
    /// `datadir`/`log_dirs`, the server is asked for them now (it must be running); this blocks
    /// the calling thread for that one query.
    pub fn from_declaration(d: &Declaration) -> Result<Self, DeclarationError> {
        crate::cgroup::thaw_leftover(&cgroup_name(&d.name));
        let settings: MariadbSettings = d.settings()?;
        for (key, dir) in settings
            .datadir
            .iter()
            .map(|p| ("mariadb.datadir", p))
            .chain(
                settings
                    .log_dirs
                    .iter()
                    .flatten()
                    .map(|p| ("mariadb.log_dirs", p)),
            )
        {
            if !dir.is_absolute() {
                return Err(DeclarationError::invalid(
                    &d.file,
                    key,
                    format!(
                        "{} is not absolute; give the absolute directory",
                        dir.display()
                    ),
                ));
            }
        }
        let layout = match (&settings.datadir, &settings.log_dirs) {
            (Some(datadir), Some(log_dirs)) => Layout {
                datadir: datadir.clone(),
                outside: log_dirs
                    .iter()
                    .map(|d| OutsideDir::new(d.clone(), "*", true))
                    .collect(),
            },
            _ => {
                let discovered = discover_blocking(&settings).map_err(|error| {
                    DeclarationError::invalid(
                        &d.file,
                        "mariadb.socket",
                        format!(
                            "cannot ask the server at {} where its files are: {error}; start \
                             the server, or set mariadb.datadir and mariadb.log_dirs",
                            settings.socket.display()
                        ),
                    )
                })?;
                Layout {
                    datadir: settings.datadir.clone().unwrap_or(discovered.datadir),
                    outside: match &settings.log_dirs {
                        Some(dirs) => dirs
                            .iter()
                            .map(|d| OutsideDir::new(d.clone(), "*", true))
                            .collect(),
                        None => discovered.outside,
                    },
                }
            }
        };
        Ok(MariadbWriter::new(
            d.name.clone(),
            d.class_id,
            settings,
            layout,
        ))
    }

    /// A writer with a known layout (no discovery).
    pub fn new(
        name: String,
        class_id: WriterClassId,
        settings: MariadbSettings,
        layout: Layout,
    ) -> Self {
        MariadbWriter {
            name,
            class_id,
            settings,
            layout,
            backup: Mutex::new(None),
            stamp: std::sync::Mutex::new(None),
            freezing: Arc::new(std::sync::Mutex::new(())),
        }
    }

    /// Where the server keeps its files, as the WMD describes them.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Ends the backup in progress, if any: thaws the server, moves it back out of our cgroup,
    /// and ends the backup stages. Returns the failures it met, after doing every step.
    async fn finish(&self) -> Vec<String> {
        let Some(mut backup) = self.backup.lock().await.take() else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        if let Some(freezer) = backup.frozen.take() {
            let adopted = backup.adopted.take();
            let freezing = Arc::clone(&self.freezing);
            let result = tokio::task::spawn_blocking(move || -> Result<(), FreezerError> {
                let _busy = freezing.lock().unwrap_or_else(|p| p.into_inner());
                freezer.thaw()?;
                if let Some((pid, original)) = adopted {
                    // Back where it came from; remove() moves whatever is left to the root.
                    if let Some(original) = original
                        && let Err(error) = Freezer::open(&original).and_then(|o| o.adopt(&[pid]))
                    {
                        tracing::warn!(
                            "cannot move MariaDB (pid {pid}) back to {}: {error}",
                            original.display()
                        );
                    }
                    if let Ok(freezer) = Arc::try_unwrap(freezer) {
                        freezer.remove()?;
                    }
                }
                Ok(())
            })
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => problems.push(format!("cannot thaw the server: {error}")),
                Err(error) => problems.push(format!("the thaw task failed: {error}")),
            }
        }
        if let Some(mut conn) = backup.conn.take() {
            if let Err(error) = conn.query_drop("BACKUP STAGE END").await {
                problems.push(format!(
                    "BACKUP STAGE END failed on {}: {error}; the connection ends the stage when \
                     it closes",
                    self.settings.socket.display()
                ));
            }
            // Closing ends any stage still held; a broken connection is dropped the same way.
            let _ = conn.disconnect().await;
        }
        problems
    }

    async fn connect(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        connect(&self.settings).await
    }
}

/// Opens a connection over the server's Unix socket.
async fn connect(settings: &MariadbSettings) -> Result<mysql_async::Conn, mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .socket(Some(settings.socket.to_string_lossy().into_owned()))
        .user(Some(settings.user.clone()))
        .pass(settings.password.clone())
        .prefer_socket(true);
    mysql_async::Conn::new(opts).await
}

/// `@@datadir`, `@@innodb_log_group_home_dir`, `@@innodb_data_home_dir` and the binary log's
/// base name (NULL when the binary log is off).
type ServerPaths = (String, Option<String>, Option<String>, Option<String>);

/// Asks the server where its files are: the data directory, and the directories outside it that
/// hold the redo log, the binary log or InnoDB data files.
pub async fn discover(settings: &MariadbSettings) -> Result<Layout, mysql_async::Error> {
    let mut conn = connect(settings).await?;
    let row: Option<ServerPaths> = conn
        .query_first(
            "SELECT @@datadir, @@innodb_log_group_home_dir, @@innodb_data_home_dir, \
             IF(@@log_bin, @@log_bin_basename, NULL)",
        )
        .await?;
    let _ = conn.disconnect().await;
    let (datadir, redo, data_home, binlog) = row.unwrap_or_default();
    Ok(layout_from_variables(
        &datadir,
        redo.as_deref(),
        data_home.as_deref(),
        binlog.as_deref(),
    ))
}

/// The layout the server variables describe; relative directories are relative to the data
/// directory, as the server reads them.
pub fn layout_from_variables(
    datadir: &str,
    redo: Option<&str>,
    data_home: Option<&str>,
    binlog_basename: Option<&str>,
) -> Layout {
    let datadir = clean(Path::new(datadir));
    let resolve = |dir: &str| clean(&datadir.join(dir));
    let mut outside: Vec<OutsideDir> = Vec::new();
    let mut add = |dir: PathBuf, pattern: String, log: bool| {
        if !dir.starts_with(&datadir)
            && !outside.iter().any(|o| o.dir == dir && o.pattern == pattern)
        {
            outside.push(OutsideDir { dir, pattern, log });
        }
    };
    if let Some(redo) = redo.filter(|r| !r.is_empty()) {
        add(resolve(redo), "ib_logfile*".into(), true);
    }
    if let Some(home) = data_home.filter(|h| !h.is_empty()) {
        add(resolve(home), "*".into(), false);
    }
    if let Some(base) = binlog_basename.filter(|b| !b.is_empty()) {
        let base = resolve(base);
        if let (Some(dir), Some(stem)) = (base.parent(), base.file_name()) {
            // The binary logs and their index: <base>.000001, <base>.index.
            add(
                dir.to_owned(),
                format!("{}.*", stem.to_string_lossy()),
                true,
            );
        }
    }
    Layout { datadir, outside }
}

/// Removes `.` and `..` lexically and the trailing slash MariaDB puts on `@@datadir`.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// [`discover`] from synchronous code, on a runtime of its own in a thread of its own, so that it
/// works both inside and outside a Tokio runtime.
fn discover_blocking(settings: &MariadbSettings) -> Result<Layout, String> {
    let settings = settings.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start a runtime: {error}"))?;
        runtime
            // The timer must be made inside the runtime, so the whole timeout runs in block_on.
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), discover(&settings)).await
            })
            .map_err(|_| "no answer within 10 s".to_owned())?
            .map_err(|error| error.to_string())
    })
    .join()
    .map_err(|_| "the discovery thread panicked".to_owned())?
}

/// The pid in the server's pid file.
async fn server_pid(conn: &mut mysql_async::Conn) -> Result<u32, String> {
    let pid_file: Option<String> = conn
        .query_first("SELECT @@pid_file")
        .await
        .map_err(|error| format!("cannot read @@pid_file: {error}"))?;
    let pid_file = pid_file.ok_or("the server reports no @@pid_file")?;
    let text = tokio::fs::read_to_string(&pid_file)
        .await
        .map_err(|error| format!("cannot read the pid file {pid_file}: {error}"))?;
    text.trim()
        .parse()
        .map_err(|_| format!("the pid file {pid_file} holds {text:?}, not a pid"))
}

/// The cgroup `pid` is in, in the hierarchy of `freezer` (a cgroup directly under that
/// hierarchy's root), as an absolute directory; `None` for the root or when it cannot be read.
fn original_cgroup(pid: u32, freezer: &Freezer) -> Option<PathBuf> {
    let root = freezer.path().parent()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let relative = text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let ours = match freezer.version() {
            FreezerVersion::V2 => id == "0" && controllers.is_empty(),
            FreezerVersion::V1 => controllers.split(',').any(|c| c == "freezer"),
        };
        ours.then(|| path.trim_start_matches('/').to_owned())
    })?;
    (!relative.is_empty()).then(|| root.join(relative))
}

/// A name for our cgroup made of the writer name: `shadowcopy-mariadb-<name>` (see
/// [`writer_cgroup_name`]).
fn cgroup_name(writer: &str) -> String {
    writer_cgroup_name("mariadb", writer)
}

fn server_failure(
    settings: &MariadbSettings,
    what: &str,
    error: impl std::fmt::Display,
) -> WriterFailure {
    WriterFailure::retryable(format!(
        "MariaDB at {}: {what} failed: {error}; check that the server runs and that {} has the \
         RELOAD and BINLOG MONITOR privileges",
        settings.socket.display(),
        settings.user
    ))
}

impl Writer for MariadbWriter {
    fn metadata(&self) -> WriterMetadata {
        // File groups, not DATABASE components: the data directory holds one subdirectory per
        // database, and database file sets cannot be recursive (WMD-11).
        let datadir = self.layout.datadir.to_string_lossy().into_owned();
        let mut data_files = vec![FileDescriptor::new(datadir, "*", true)];
        let mut log_files = Vec::new();
        for outside in &self.layout.outside {
            // A plain directory (`*`) is taken whole; a pattern names the server's files only.
            let descriptor = FileDescriptor::new(
                outside.dir.to_string_lossy(),
                outside.pattern.clone(),
                outside.pattern == "*",
            );
            if outside.log {
                log_files.push(descriptor);
            } else {
                data_files.push(descriptor);
            }
        }
        let caption = format!(
            "MariaDB server at {} (data {})",
            self.settings.socket.display(),
            self.layout.datadir.display()
        );
        let mut server =
            Component::file_group(COMPONENT_LOGICAL_PATH, COMPONENT_NAME, true, data_files);
        server.caption = Some(caption);
        server.selectable_for_restore = true;
        server.notify_on_backup_complete = false;
        let mut components = vec![server];
        if !log_files.is_empty() {
            // The logs outside the data directory form a non-selectable subcomponent of the
            // server: always backed up and restored with it (SEL-3), never without it.
            let mut logs = Component::file_group(LOGS_LOGICAL_PATH, LOGS_NAME, false, log_files);
            logs.caption = Some("MariaDB redo and binary logs outside the data directory".into());
            logs.notify_on_backup_complete = false;
            components.push(logs);
        }
        WriterMetadata {
            schema_version: shadowcopy_metadata::SCHEMA_VERSION,
            identity: WriterIdentity {
                writer_name: self.name.clone(),
                class_id: self.class_id,
                instance_id: WriterInstanceId::nil(),
                instance_name: None,
                usage_type: UsageType::UserData,
                source_type: SourceType::TransactedDb,
                version: Some(WriterVersion { major: 1, minor: 0 }),
            },
            restore_method: RestoreMethodSpec {
                method: RestoreMethod::StopRestoreStart,
                service: Some(self.settings.service.clone()),
                user_procedure: None,
                writer_restore: WriterRestore::Always,
                reboot_required: false,
            },
            backup_schema: BackupSchema::default(),
            excludes: Vec::new(),
            exclude_from_snapshot: Vec::new(),
            alternate_location_mappings: Vec::new(),
            components,
        }
    }

    async fn on_prepare_snapshot(&self, ctx: &EventContext) -> HandlerResult {
        // A set that holds some but not all of the directories cannot hold a copy that starts
        // (ERR-3).
        let missing: Vec<String> = self
            .layout
            .directories()
            .filter(|dir| !ctx.is_path_affected(dir))
            .map(|dir| dir.display().to_string())
            .collect();
        // A backup left over from a session that never reached Thaw or Abort ends now.
        for problem in self.finish().await {
            tracing::warn!(writer = %self.name, "ending a stale backup: {problem}");
        }
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if missing.len() == self.layout.directories().count() {
            // A set of other volumes only: none of the server's files is copied, so the server
            // is left alone (Freeze and Thaw find no backup and do nothing).
            return Ok(());
        }
        if !missing.is_empty() {
            return Err(WriterFailure::inconsistent_snapshot(format!(
                "MariaDB keeps files in {} but the set's volumes {:?} do not hold them; add \
                 their volumes to the set",
                missing.join(", "),
                ctx.volumes()
            )));
        }
        let mut conn = self
            .connect()
            .await
            .map_err(|error| server_failure(&self.settings, "connecting", error))?;
        conn.query_drop(format!(
            "SET SESSION lock_wait_timeout = {STAGE_LOCK_WAIT_S}"
        ))
        .await
        .map_err(|error| server_failure(&self.settings, "SET lock_wait_timeout", error))?;
        conn.query_drop("BACKUP STAGE START")
            .await
            .map_err(|error| server_failure(&self.settings, "BACKUP STAGE START", error))?;
        *self.backup.lock().await = Some(Backup {
            session: ctx.session_id().map(str::to_owned),
            conn: Some(conn),
            frozen: None,
            adopted: None,
        });
        Ok(())
    }

    async fn on_freeze(&self, ctx: &EventContext) -> HandlerResult {
        let mut guard = self.backup.lock().await;
        let Some(backup) = guard.as_mut() else {
            // PrepareForSnapshot found none of the server's files in the set.
            return Ok(());
        };
        if backup.session.as_deref() != ctx.session_id() {
            tracing::warn!(writer = %self.name, "Freeze of another session than the prepared one");
        }
        let conn = backup.conn.as_mut().ok_or_else(|| {
            WriterFailure::retryable("the MariaDB backup connection is gone; retry the backup")
        })?;
        for stage in ["FLUSH", "BLOCK_DDL", "BLOCK_COMMIT"] {
            conn.query_drop(format!("BACKUP STAGE {stage}"))
                .await
                .map_err(|error| {
                    server_failure(&self.settings, &format!("BACKUP STAGE {stage}"), error)
                })?;
        }
        // With commits blocked the binary log stands still: its position names the copy.
        let status: Option<mysql_async::Row> = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .map_err(|error| server_failure(&self.settings, "SHOW MASTER STATUS", error))?;
        let stamp = status.and_then(|row| {
            let file: Option<String> = row.get(0);
            let position: Option<u64> = row.get(1);
            Some(format!("binlog={}:{}", file?, position?))
        });
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(stamp.unwrap_or_else(|| "binlog=off".into()));

        if self.settings.freeze_server {
            let (freezer, adopted) = match &self.settings.freeze_cgroup {
                Some(cgroup) => (
                    Freezer::open(cgroup).map_err(|error| {
                        WriterFailure::non_retryable(format!(
                            "mariadb.freeze_cgroup {}: {error}",
                            cgroup.display()
                        ))
                    })?,
                    None,
                ),
                None => {
                    let pid = server_pid(conn).await.map_err(|error| {
                        WriterFailure::non_retryable(format!(
                            "cannot find the MariaDB server process to freeze: {error}; set \
                             mariadb.freeze_cgroup, or freeze_server = false when the data and \
                             logs share one volume"
                        ))
                    })?;
                    let name = cgroup_name(&self.name);
                    tokio::task::spawn_blocking(move || {
                        let freezer = Freezer::create(&name)?;
                        let original = original_cgroup(pid, &freezer);
                        freezer.adopt(&[pid])?;
                        Ok::<_, FreezerError>((freezer, Some((pid, original))))
                    })
                    .await
                    .map_err(|error| WriterFailure::retryable(format!("freezer task: {error}")))?
                    .map_err(|error| WriterFailure::non_retryable(error.to_string()))?
                }
            };
            let freezer = Arc::new(freezer);
            // Recorded before freezing, so that Abort thaws even if this handler is cancelled.
            backup.frozen = Some(Arc::clone(&freezer));
            backup.adopted = adopted;
            let freezing = Arc::clone(&self.freezing);
            tokio::task::spawn_blocking(move || {
                let busy = freezing.lock().unwrap_or_else(|p| p.into_inner());
                // Thaw or Abort own the thaw from here on (backup.frozen); FREEZE_LIMIT
                // bounds the wait, and a timeout thaws again inside freeze().
                let result = freezer
                    .freeze(FREEZE_LIMIT)
                    .map(|guard| guard.keep_frozen());
                // Our reference goes before the lock, so that the thaw may remove the cgroup.
                drop(freezer);
                drop(busy);
                result
            })
            .await
            .map_err(|error| WriterFailure::retryable(format!("freezer task: {error}")))?
            .map_err(|error| WriterFailure::retryable(format!("cannot freeze MariaDB: {error}")))?;
        }
        Ok(())
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
        let problems = self.finish().await;
        if problems.is_empty() {
            Ok(())
        } else {
            // A lost connection may have ended BLOCK_COMMIT before the copies were cut.
            Err(WriterFailure::retryable(format!(
                "the MariaDB backup did not end cleanly, so the copy may not be consistent: {}",
                problems.join("; ")
            )))
        }
    }

    async fn on_abort(&self, ctx: &EventContext) -> HandlerResult {
        for problem in self.finish().await {
            tracing::warn!(writer = %self.name, cause = ?ctx.abort_cause(), "abort: {problem}");
        }
        Ok(())
    }

    async fn on_post_snapshot(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        let stamp = self.stamp.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Only when the requester chose the server component (component mode).
        if let Some(stamp) = stamp
            && components
                .component(COMPONENT_LOGICAL_PATH, COMPONENT_NAME)
                .is_some()
        {
            components
                .edit(
                    Party::Writer,
                    ctx.phase(),
                    COMPONENT_LOGICAL_PATH,
                    COMPONENT_NAME,
                )?
                .set_backup_stamp(stamp)?;
        }
        Ok(())
    }

    async fn on_pre_restore(
        &self,
        _ctx: &EventContext,
        _components: &mut WriterComponents,
    ) -> HandlerResult {
        // STOP_RESTORE_START (RM-1): the server must be down before its files are replaced.
        if let Some(command) = &self.settings.stop_command {
            run_shell(command, "stop_command").await?;
        }
        Ok(())
    }

    async fn on_post_restore(
        &self,
        _ctx: &EventContext,
        _components: &mut WriterComponents,
    ) -> HandlerResult {
        if let Some(command) = &self.settings.start_command {
            run_shell(command, "start_command").await?;
        }
        // The restore is done when the server answers again (crash recovery has run).
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.settings.start_timeout_s);
        loop {
            let error = match self.connect().await {
                Ok(mut conn) => match conn.query_drop("SELECT 1").await {
                    Ok(()) => {
                        let _ = conn.disconnect().await;
                        return Ok(());
                    }
                    Err(error) => error,
                },
                Err(error) => error,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(WriterFailure::recovery_failed(format!(
                    "the restored MariaDB server did not answer at {} within {} s: {error}; \
                     read its error log",
                    self.settings.socket.display(),
                    self.settings.start_timeout_s
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs a restore command through `sh -c`; fails with its exit status and output.
async fn run_shell(command: &str, key: &str) -> HandlerResult {
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .await
        .map_err(|error| {
            WriterFailure::non_retryable(format!(
                "mariadb.{key} `{command}` did not start: {error}"
            ))
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(WriterFailure::non_retryable(format!(
            "mariadb.{key} `{command}` failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_lists_only_directories_outside_the_data_directory() {
        let layout = layout_from_variables(
            "/var/lib/mysql/",
            Some("/srv/redo"),
            None,
            Some("/srv/binlog/mariadb-bin"),
        );
        assert_eq!(layout.datadir, PathBuf::from("/var/lib/mysql"));
        assert_eq!(
            layout.outside,
            vec![
                OutsideDir::new(PathBuf::from("/srv/redo"), "ib_logfile*", true),
                OutsideDir::new(PathBuf::from("/srv/binlog"), "mariadb-bin.*", true),
            ]
        );
        // The defaults: everything in the data directory, relative paths resolved against it.
        let layout = layout_from_variables(
            "/var/lib/mysql/",
            Some("./"),
            Some(""),
            Some("/var/lib/mysql/bin"),
        );
        assert!(layout.outside.is_empty(), "{layout:?}");
        let layout = layout_from_variables("/d/", Some("../redo"), None, None);
        assert_eq!(
            layout.outside,
            vec![OutsideDir::new(PathBuf::from("/redo"), "ib_logfile*", true)]
        );
    }

    #[test]
    fn declaration_without_server_names_file_and_key() {
        let d = Declaration::parse(
            Path::new("/etc/shadowcopy/writers.d/db.toml"),
            "kind = \"mariadb\"\nname = \"db\"\n[mariadb]\nsocket = \"/nonexistent/mysqld.sock\"\n",
        )
        .unwrap();
        let error = MariadbWriter::from_declaration(&d).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("db.toml") && text.contains("mariadb.socket"),
            "{text}"
        );
        assert!(text.contains("/nonexistent/mysqld.sock"), "{text}");
        // With the paths given, no server is needed, and the WMD is valid.
        let d = Declaration::parse(
            Path::new("/etc/shadowcopy/writers.d/db.toml"),
            "kind = \"mariadb\"\nname = \"db\"\n[mariadb]\nsocket = \"/run/m.sock\"\n\
             datadir = \"/var/lib/mysql\"\nlog_dirs = [\"/srv/logs\"]\n",
        )
        .unwrap();
        let writer = MariadbWriter::from_declaration(&d).unwrap();
        let wmd = writer.metadata();
        wmd.validate().expect("a valid WMD");
        assert_eq!(wmd.restore_method.method, RestoreMethod::StopRestoreStart);
        assert_eq!(wmd.restore_method.service.as_deref(), Some("mariadb"));
        assert_eq!(wmd.components[0].files.len(), 1);
        let logs = wmd
            .component(LOGS_LOGICAL_PATH, LOGS_NAME)
            .expect("a logs subcomponent");
        assert!(
            !logs.selectable_for_backup,
            "the logs go with the server (SEL-3)"
        );
        assert_eq!(logs.files[0].path, "/srv/logs");
        // An unknown key is refused with its name.
        let d = Declaration::parse(
            Path::new("/x.toml"),
            "kind = \"mariadb\"\nname = \"db\"\n[mariadb]\nsocket = \"/s\"\nfreez = true\n",
        )
        .unwrap();
        let error = MariadbWriter::from_declaration(&d).unwrap_err();
        assert!(error.to_string().contains("mariadb.freez"), "{error}");
    }
}
