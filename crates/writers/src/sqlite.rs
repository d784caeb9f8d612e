//! The SQLite writer (`kind = "sqlite"`): for configured database files it
//! checkpoints the WAL before the freeze, holds each database's write lock for the freeze window,
//! and checks every restored database with `PRAGMA integrity_check`.
//!
//! ```toml
//! kind = "sqlite"
//! name = "app-db"
//! [sqlite]
//! busy_timeout_ms = 5000             # optional: how long Freeze waits for the write lock
//! [[sqlite.databases]]
//! path = "/srv/app/app.db"           # absolute path of the database file
//! component = "app"                  # optional: the component name; default the file name
//! logical_path = "sqlite"            # optional: the component's logical path; default ""
//! ```
//!
//! How each event works, and why:
//! - **PrepareForSnapshot** (BK-SNAP-3, the heavy part): `PRAGMA wal_checkpoint(TRUNCATE)` on every
//!   WAL-mode database of the set, so that the copy's WAL is short and its main file is nearly
//!   complete. A checkpoint that could not finish within `busy_timeout_ms` is only logged: the
//!   `-wal` file is part of the component, so the copy is consistent either way.
//! - **Freeze** (BK-SNAP-4): `BEGIN IMMEDIATE` on a dedicated connection per database, held open
//!   until Thaw or Abort, retried at once until `busy_timeout_ms` runs out rather than through
//!   SQLite's sleeping busy handler, which starves behind an application that commits back to
//!   back. That is SQLite's write lock (RESERVED in rollback-journal mode, the WAL write lock in
//!   WAL mode): no other connection can commit a transaction while it is held, and their own busy
//!   timeouts make them wait rather than fail. Readers go on. A PASSIVE checkpoint
//!   started by another connection may still copy committed WAL frames into the main file during
//!   the window; that changes no committed content, and the `-wal` file in the copy holds the
//!   same frames, so the copy stays consistent.
//! - **Thaw / Abort**: `ROLLBACK` and close (the transaction never wrote anything). Both are
//!   idempotent (BK-ABORT-3). A writer process that dies releases the locks anyway: they are POSIX
//!   file locks owned by the process.
//! - Databases on none of the set's volumes are left alone: a set that does not hold a database
//!   cannot be made inconsistent by it, and locking it would only stall its application.
//! - **Restore**: RESTORE_IF_CAN_REPLACE (RM-2). SQLite is a library inside its application, with
//!   no service of its own that the requester could stop, so STOP_RESTORE_START has nothing to
//!   name; the application must have closed the database (be stopped) before the restore (RSV-2).
//!   PreRestore removes the live `-wal`, `-shm` and `-journal` files of each selected database, so
//!   that a stale sidecar the backup did not contain is never replayed into the restored file;
//!   those the backup did contain are copied back with the database. PostRestore runs
//!   `PRAGMA integrity_check` on each restored file and fails the component with SQLite's message
//!   when it is not `ok` (RST-END-1).
//!
//! Each database is one DATABASE component: the main file as its database file set, and the
//! `-wal`, `-shm` and `-journal` files as its log file sets, since SQLite needs them with the main
//! file to open it in the state it had.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;
use shadowcopy_metadata::bcd::{ComponentRecord, Party, WriterComponents};
use shadowcopy_metadata::enums::{ComponentType, SourceType, UsageType, WriterRestore};
use shadowcopy_metadata::wmd::{Component, FileDescriptor};
use shadowcopy_metadata::{WriterClassId, WriterMetadata};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure};

use crate::declaration::{Declaration, DeclarationError};

/// How long Freeze waits for a database's write lock when the declaration does not say: long
/// enough for ordinary transactions to finish, far below the default 60 s freeze window.
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 5_000;

/// The files SQLite keeps next to a database: the write-ahead log, its shared-memory index and
/// the rollback journal.
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The `[sqlite]` table of a declaration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSettings {
    /// The databases, each one component.
    pub databases: Vec<DatabaseSettings>,
    /// How long Freeze and the checkpoint wait for a lock held by the application, in
    /// milliseconds; must be shorter than the freeze timeout.
    #[serde(default = "default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
}

/// One `[[sqlite.databases]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// The database file, absolute.
    pub path: PathBuf,
    /// The component name; default the file name.
    #[serde(default)]
    pub component: Option<String>,
    /// The component's logical path (LP-1); default the top level.
    #[serde(default)]
    pub logical_path: String,
}

fn default_busy_timeout_ms() -> u64 {
    DEFAULT_BUSY_TIMEOUT_MS
}

/// One configured database, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Database {
    /// The main file, absolute.
    path: PathBuf,
    /// The directory holding it (the file sets' path).
    directory: String,
    /// The main file's name (the file sets' filespec prefix).
    file_name: String,
    /// The component name.
    component: String,
    /// The component's logical path.
    logical_path: String,
}

/// A database whose write lock a dedicated connection holds from Freeze until Thaw or Abort.
struct HeldLock {
    path: PathBuf,
    connection: Connection,
}

/// The SQLite writer: see the module documentation.
pub struct SqliteWriter {
    name: String,
    class_id: WriterClassId,
    instance_name: Option<String>,
    databases: Vec<Database>,
    busy_timeout: Duration,
    /// The locks held while frozen; empty otherwise. One slot suffices: one set is in creation
    /// at a time (LIMIT-4).
    held: Mutex<Vec<HeldLock>>,
}

impl SqliteWriter {
    /// The writer a `kind = "sqlite"` declaration describes; refuses relative or pattern-like
    /// paths, duplicate components and a busy timeout that does not fit in the freeze window.
    pub fn from_declaration(declaration: &Declaration) -> Result<Self, DeclarationError> {
        let settings: SqliteSettings = declaration.settings()?;
        let file = &declaration.file;
        if settings.databases.is_empty() {
            return Err(DeclarationError::invalid(
                file,
                "sqlite.databases",
                "no database is declared; add a [[sqlite.databases]] table with its `path`",
            ));
        }
        let freeze_timeout = declaration.freeze_timeout();
        if Duration::from_millis(settings.busy_timeout_ms) >= freeze_timeout {
            return Err(DeclarationError::invalid(
                file,
                "sqlite.busy_timeout_ms",
                format!(
                    "{} ms is not shorter than the freeze timeout of {} ms; Freeze must get the \
                     write lock well inside the freeze window (BK-SNAP-5)",
                    settings.busy_timeout_ms,
                    freeze_timeout.as_millis()
                ),
            ));
        }
        let mut databases: Vec<Database> = Vec::new();
        for (i, entry) in settings.databases.iter().enumerate() {
            let key = format!("sqlite.databases[{i}].path");
            let database = database_of(file, &key, entry)?;
            if let Some(other) = databases.iter().find(|d| {
                d.path == database.path
                    || (d.component == database.component
                        && d.logical_path == database.logical_path)
            }) {
                return Err(DeclarationError::invalid(
                    file,
                    format!("sqlite.databases[{i}]"),
                    format!(
                        "{} (component `{}`) repeats the path or component of {} (component \
                         `{}`); give each database its own path and component name (WMD-9)",
                        database.path.display(),
                        database.component,
                        other.path.display(),
                        other.component
                    ),
                ));
            }
            databases.push(database);
        }
        Ok(SqliteWriter {
            name: declaration.name.clone(),
            class_id: declaration.class_id,
            instance_name: declaration.instance_name.clone(),
            databases,
            busy_timeout: Duration::from_millis(settings.busy_timeout_ms),
            held: Mutex::new(Vec::new()),
        })
    }

    /// The databases that lie on the set's volumes.
    fn affected(&self, ctx: &EventContext) -> Vec<PathBuf> {
        self.databases
            .iter()
            .filter(|d| ctx.is_path_affected(&d.path))
            .map(|d| d.path.clone())
            .collect()
    }

    /// Releases every held lock; idempotent, so Thaw and any number of Aborts may call it.
    fn release(&self) {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()));
        for lock in held {
            // Closing the connection would roll back too; ROLLBACK first so that a failure is
            // logged with the database's name.
            if let Err(error) = lock.connection.execute_batch("ROLLBACK") {
                tracing::warn!(
                    database = %lock.path.display(),
                    "releasing the write lock: ROLLBACK failed ({error}); closing the connection \
                     releases it"
                );
            }
            drop(lock.connection);
        }
    }

    /// The database declared for the component `logical_path\name`.
    fn database_of_record(&self, record: &ComponentRecord) -> Option<&Database> {
        self.databases
            .iter()
            .find(|d| d.logical_path == record.logical_path() && d.component == record.name())
    }
}

/// Checks one `[[sqlite.databases]]` entry.
fn database_of(
    file: &Path,
    key: &str,
    entry: &DatabaseSettings,
) -> Result<Database, DeclarationError> {
    let path = &entry.path;
    if !path.is_absolute() {
        return Err(DeclarationError::invalid(
            file,
            key,
            format!(
                "{} is relative; give the absolute path of the database file",
                path.display()
            ),
        ));
    }
    let (Some(directory), Some(file_name)) = (
        path.parent().and_then(Path::to_str),
        path.file_name().and_then(|n| n.to_str()),
    ) else {
        return Err(DeclarationError::invalid(
            file,
            key,
            format!(
                "{} names no file in a UTF-8 directory; give the path of the database file",
                path.display()
            ),
        ));
    };
    // The file name becomes a WMD filespec, in which `*` and `?` are wildcards (WMD-11).
    if file_name.contains(['*', '?']) {
        return Err(DeclarationError::invalid(
            file,
            key,
            format!(
                "{file_name:?} contains `*` or `?`, which a file set would read as wildcards; \
                 rename the database"
            ),
        ));
    }
    let component = entry
        .component
        .clone()
        .unwrap_or_else(|| file_name.to_owned());
    if component.is_empty() || component.contains('\\') {
        return Err(DeclarationError::invalid(
            file,
            key.replace(".path", ".component"),
            format!(
                "{component:?} is not a component name: it must be non-empty and hold no `\\` \
                 (LP-1)"
            ),
        ));
    }
    Ok(Database {
        path: path.clone(),
        directory: directory.to_owned(),
        file_name: file_name.to_owned(),
        component,
        logical_path: entry.logical_path.clone(),
    })
}

impl Writer for SqliteWriter {
    fn metadata(&self) -> WriterMetadata {
        let components = self
            .databases
            .iter()
            .map(|d| {
                let mut component = Component::file_group(
                    d.logical_path.clone(),
                    d.component.clone(),
                    true,
                    Vec::new(),
                );
                component.component_type = ComponentType::Database;
                component.caption = Some(format!("SQLite database {}", d.path.display()));
                component.selectable_for_restore = true;
                component.database_files = vec![FileDescriptor::new(
                    d.directory.clone(),
                    d.file_name.clone(),
                    false,
                )];
                component.database_log_files = SIDECARS
                    .iter()
                    .map(|suffix| {
                        FileDescriptor::new(
                            d.directory.clone(),
                            format!("{}{suffix}", d.file_name),
                            false,
                        )
                    })
                    .collect();
                component
            })
            .collect();
        let mut wmd = WriterMetadata::simple(self.name.clone(), self.class_id, components);
        wmd.identity.instance_name = self.instance_name.clone();
        wmd.identity.usage_type = UsageType::UserData;
        wmd.identity.source_type = SourceType::TransactedDb;
        // PostRestore must reach the writer: it runs the integrity check (RSV-1).
        wmd.restore_method.writer_restore = WriterRestore::Always;
        wmd
    }

    async fn on_prepare_snapshot(&self, ctx: &EventContext) -> HandlerResult {
        let databases = self.affected(ctx);
        let busy_timeout = self.busy_timeout;
        tokio::task::spawn_blocking(move || {
            for path in &databases {
                checkpoint(path, busy_timeout)?;
            }
            Ok(())
        })
        .await
        .map_err(|error| {
            WriterFailure::non_retryable(format!("the SQLite checkpoint task failed: {error}"))
        })?
    }

    async fn on_freeze(&self, ctx: &EventContext) -> HandlerResult {
        // A lock left from an earlier set (an Abort that never came) must not count for this one.
        self.release();
        let databases = self.affected(ctx);
        let busy_timeout = self.busy_timeout;
        // The blocking task returns the connections instead of storing them: if an Abort cancels
        // this handler while it waits, the returned locks are dropped (released) with the task's
        // result rather than left held after `on_abort` ran.
        let locks = tokio::task::spawn_blocking(move || {
            let mut locks = Vec::with_capacity(databases.len());
            for path in databases {
                let connection = lock(&path, busy_timeout)?;
                locks.push(HeldLock { path, connection });
            }
            Ok::<_, WriterFailure>(locks)
        })
        .await
        .map_err(|error| {
            WriterFailure::non_retryable(format!("the SQLite lock task failed: {error}"))
        })??;
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(locks);
        Ok(())
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
        self.release();
        Ok(())
    }

    async fn on_abort(&self, _ctx: &EventContext) -> HandlerResult {
        self.release();
        Ok(())
    }

    async fn on_pre_restore(
        &self,
        _ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        let mut failures = Vec::new();
        for record in components.components() {
            if !record.selected_for_restore() {
                continue;
            }
            let Some(database) = self.database_of_record(record) else {
                continue;
            };
            for suffix in SIDECARS {
                let sidecar = sidecar_path(&database.path, suffix);
                match std::fs::remove_file(&sidecar) {
                    Ok(()) => tracing::info!(
                        file = %sidecar.display(),
                        "removed the live sidecar before the restore of {}",
                        record.full_path()
                    ),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => failures.push(format!(
                        "cannot remove {} before restoring {}: {error}; remove it by hand, or \
                         stop the application that holds it",
                        sidecar.display(),
                        database.path.display()
                    )),
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(WriterFailure::retryable(failures.join("; ")))
        }
    }

    async fn on_post_restore(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        // Which restored files to check, and where the requester put them.
        let mut checks = Vec::new();
        for record in components.components() {
            if !record.selected_for_restore() {
                continue;
            }
            // RST-END-1: with more restores to follow, the data is not complete yet.
            if record.additional_restores() {
                continue;
            }
            let Some(database) = self.database_of_record(record) else {
                continue;
            };
            checks.push((
                record.logical_path().to_owned(),
                record.name().to_owned(),
                restored_path(database, record),
            ));
        }
        let total = checks.len();
        let results = tokio::task::spawn_blocking(move || {
            checks
                .into_iter()
                .map(|(logical_path, name, path)| {
                    let result = integrity_check(&path);
                    (logical_path, name, path, result)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|error| {
            WriterFailure::non_retryable(format!("the SQLite integrity-check task failed: {error}"))
        })?;
        let mut failures = Vec::new();
        for (logical_path, name, path, result) in results {
            if let Err(problem) = result {
                let message = format!(
                    "the restored SQLite database {} failed PRAGMA integrity_check: {problem}; \
                     restore it again from another backup",
                    path.display()
                );
                components
                    .edit(Party::Writer, ctx.phase(), &logical_path, &name)?
                    .set_post_restore_failure_message(message.clone())?;
                failures.push(message);
            }
        }
        match failures.len() {
            0 => Ok(()),
            n if n < total => Err(WriterFailure::partial_failure(failures.join("; "))),
            _ => Err(WriterFailure::non_retryable(failures.join("; "))),
        }
    }
}

/// `path` with a SQLite sidecar suffix (`-wal`, `-shm`, `-journal`) appended to its file name.
fn sidecar_path(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where the requester restored the database file of `record`: the new target or alternate
/// location recorded for its file set (RST-FILE-3), else the original path.
fn restored_path(database: &Database, record: &ComponentRecord) -> PathBuf {
    let set = FileDescriptor::new(
        database.directory.clone(),
        database.file_name.clone(),
        false,
    )
    .file_set();
    let moved = record
        .new_targets()
        .iter()
        .find(|t| t.source == set)
        .map(|t| t.alternate_path.clone())
        .or_else(|| {
            record
                .alternate_mappings_used()
                .iter()
                .find(|m| m.source == set)
                .map(|m| m.destination.clone())
        });
    match moved {
        Some(directory) => Path::new(&directory).join(&database.file_name),
        None => database.path.clone(),
    }
}

/// Opens an existing database read-write (never creating one: a missing file is an error that
/// names it) with `busy_timeout` for every lock it waits on.
fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, rusqlite::Error> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(busy_timeout)?;
    Ok(connection)
}

/// PrepareForSnapshot's work on one database: a TRUNCATE checkpoint if it is in WAL mode.
fn checkpoint(path: &Path, busy_timeout: Duration) -> Result<(), WriterFailure> {
    let failed = |what: &str, error: rusqlite::Error| {
        WriterFailure::retryable(format!(
            "SQLite database {}: {what} failed: {error}; check that the file exists and is a \
             database this account may write",
            path.display()
        ))
    };
    let mut connection = open(path, Duration::ZERO).map_err(|e| failed("opening", e))?;
    // Asking SQLite needs a SHARED lock, which an application committing back to back in
    // rollback-journal mode (PENDING or EXCLUSIVE most of the time) kept from a sleeping busy
    // handler for the whole busy timeout; the spinning one gets it. Reading the header with a file
    // descriptor of our own instead would be wrong: closing it drops every POSIX lock this process
    // holds on the file, SQLite's included, and SQLite only guards against that for its own.
    let mode = with_spin(&mut connection, busy_timeout, |connection| {
        connection.query_row("PRAGMA journal_mode", [], |row| row.get::<_, String>(0))
    })
    .map_err(|e| failed("setting the busy handler", e))?
    .map_err(|e| failed("PRAGMA journal_mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    // TRUNCATE waits for the write lock and for readers through the busy handler; the spinning
    // one retries at once (see [`spin_busy_handler`]), without redoing the checkpoint's copy.
    let result = with_spin(&mut connection, busy_timeout, |connection| {
        connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
    })
    .map_err(|e| failed("setting the busy handler", e))?;
    let (log, checkpointed) = match result {
        Ok((0, _, _)) => return Ok(()),
        Ok((_, log, checkpointed)) => (log.to_string(), checkpointed.to_string()),
        Err(error) if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            ("?".to_owned(), "?".to_owned())
        }
        Err(error) => return Err(failed("PRAGMA wal_checkpoint(TRUNCATE)", error)),
    };
    // Not a failure: the WAL is part of the component, so the copy holds what the main file
    // lacks; the checkpoint only keeps the copy small.
    tracing::warn!(
        database = %path.display(),
        "the WAL checkpoint could not finish within {} ms ({checkpointed} of {log} frames); the \
         application kept it busy, so the copy carries the rest in its -wal file",
        busy_timeout.as_millis()
    );
    Ok(())
}

/// A busy handler that retries at once (yielding the CPU) until `until`.
///
/// SQLite's own busy handler (`busy_timeout`) sleeps between tries, up to 100 ms at a time, and
/// SQLite grants a lock to whoever asks first after it is released, not to whoever waited
/// longest. An application that starts its next transaction right after each commit therefore
/// wins every time and a sleeping waiter starves: measured with a back-to-back transfer loop, a
/// 5 s busy timeout never got the write lock. The gap between two of the application's
/// transactions is short but real, and a waiter that retries at once lands in it (in every
/// set of the same test).
fn spin_busy_handler(until: Instant) -> impl FnMut(i32) -> bool + Send + 'static {
    move |_tries| {
        std::thread::yield_now();
        Instant::now() < until
    }
}

/// Runs `statement` on `connection` with [`spin_busy_handler`] for at most `budget`, then puts
/// the connection back to failing at once when busy. The outer error is about the handler, the
/// inner one is the statement's.
fn with_spin<T>(
    connection: &mut Connection,
    budget: Duration,
    statement: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<rusqlite::Result<T>> {
    connection.busy_handler(Some(spin_busy_handler(Instant::now() + budget)))?;
    let result = statement(connection);
    connection.busy_handler(None::<fn(i32) -> bool>)?;
    Ok(result)
}

/// Freeze's work on one database: a connection holding `BEGIN IMMEDIATE`, SQLite's write lock,
/// waited for with [`spin_busy_handler`] for at most `busy_timeout`.
fn lock(path: &Path, busy_timeout: Duration) -> Result<Connection, WriterFailure> {
    let failed = |error: rusqlite::Error| {
        WriterFailure::retryable(format!(
            "SQLite database {}: BEGIN IMMEDIATE failed after trying for {} ms to get the write \
             lock: {error}; the application held it all that time, so retry the backup or raise \
             sqlite.busy_timeout_ms",
            path.display(),
            busy_timeout.as_millis()
        ))
    };
    let mut connection = open(path, Duration::ZERO).map_err(|error| {
        WriterFailure::retryable(format!(
            "SQLite database {}: opening it to take the write lock failed: {error}",
            path.display()
        ))
    })?;
    with_spin(&mut connection, busy_timeout, |connection| {
        connection.execute_batch("BEGIN IMMEDIATE")
    })
    .map_err(failed)?
    .map_err(failed)?;
    Ok(connection)
}

/// `PRAGMA integrity_check` on the database at `path`: `Ok` when SQLite answers exactly `ok`,
/// otherwise its messages (or the error that kept it from checking), joined by `; `.
///
/// The file must exist: a missing one is reported, never created.
pub fn integrity_check(path: &Path) -> Result<(), String> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| format!("cannot open it: {error}"))?;
    let rows: Vec<String> = connection
        .prepare("PRAGMA integrity_check")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|error| error.to_string())?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else if rows.is_empty() {
        Err("PRAGMA integrity_check returned nothing".to_owned())
    } else {
        Err(rows.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaration(text: &str) -> Result<Declaration, DeclarationError> {
        Declaration::parse(Path::new("/etc/shadowcopy/writers.d/db.toml"), text)
    }

    fn writer(text: &str) -> Result<SqliteWriter, DeclarationError> {
        SqliteWriter::from_declaration(&declaration(text).unwrap())
    }

    #[test]
    fn declaration_becomes_one_database_component_per_file() {
        let writer = writer(
            r#"
            kind = "sqlite"
            name = "app"
            instance_name = "blue"
            [sqlite]
            busy_timeout_ms = 200
            [[sqlite.databases]]
            path = "/srv/app/main.db"
            [[sqlite.databases]]
            path = "/srv/app/cache.sqlite"
            component = "cache"
            logical_path = "app\\caches"
            "#,
        )
        .unwrap();
        assert_eq!(writer.busy_timeout, Duration::from_millis(200));
        let wmd = writer.metadata();
        wmd.validate().unwrap();
        assert_eq!(wmd.identity.instance_name.as_deref(), Some("blue"));
        assert_eq!(wmd.components.len(), 2);
        let main = wmd.component("", "main.db").expect("named after the file");
        assert_eq!(main.component_type, ComponentType::Database);
        assert_eq!(main.database_files[0].path, "/srv/app");
        assert_eq!(main.database_files[0].filespec, "main.db");
        let logs: Vec<&str> = main
            .database_log_files
            .iter()
            .map(|f| f.filespec.as_str())
            .collect();
        assert_eq!(logs, ["main.db-wal", "main.db-shm", "main.db-journal"]);
        assert!(wmd.component("app\\caches", "cache").is_some());
        assert_eq!(
            wmd.restore_method.method,
            shadowcopy_metadata::enums::RestoreMethod::RestoreIfCanReplace
        );
    }

    #[test]
    fn bad_declarations_name_the_key() {
        let cases = [
            (
                "kind = \"sqlite\"\nname = \"a\"\n[sqlite]\ndatabases = []\n",
                "sqlite.databases",
            ),
            (
                "kind = \"sqlite\"\nname = \"a\"\n[[sqlite.databases]]\npath = \"rel.db\"\n",
                "sqlite.databases[0].path",
            ),
            (
                "kind = \"sqlite\"\nname = \"a\"\nfreeze_timeout_ms = 1000\n[sqlite]\nbusy_timeout_ms = 1000\n[[sqlite.databases]]\npath = \"/a.db\"\n",
                "sqlite.busy_timeout_ms",
            ),
            (
                "kind = \"sqlite\"\nname = \"a\"\n[[sqlite.databases]]\npath = \"/a/x.db\"\n[[sqlite.databases]]\npath = \"/b/x.db\"\n",
                "sqlite.databases[1]",
            ),
            (
                "kind = \"sqlite\"\nname = \"a\"\n[[sqlite.databases]]\npath = \"/a/x*.db\"\n",
                "sqlite.databases[0].path",
            ),
        ];
        for (text, key) in cases {
            let error = writer(text)
                .err()
                .unwrap_or_else(|| panic!("{text} was accepted"));
            assert!(
                matches!(error, DeclarationError::Invalid { key: ref k, .. } if k == key),
                "{text}: {error:?}"
            );
            assert!(error.to_string().contains("db.toml"), "{error}");
        }
        let error = writer(
            "kind = \"sqlite\"\nname = \"a\"\n[[sqlite.databases]]\npath = \"/a.db\"\nfile = \"x\"\n",
        )
        .err()
        .unwrap();
        assert!(
            matches!(error, DeclarationError::UnknownKey { .. }),
            "{error:?}"
        );
    }

    /// A private directory for one unit test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("shadowcopy-sqlite-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn make_db(path: &Path, wal: bool) {
        let connection = Connection::open(path).unwrap();
        if wal {
            connection
                .query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
                .unwrap();
        }
        connection
            .execute_batch(
                "CREATE TABLE t(x INTEGER PRIMARY KEY, y TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO t SELECT i, hex(randomblob(64)) FROM n;
                 CREATE INDEX t_y ON t(y);",
            )
            .unwrap();
    }

    #[test]
    fn integrity_check_passes_a_good_file_and_names_damage() {
        let scratch = Scratch::new("check");
        let good = scratch.0.join("good.db");
        make_db(&good, false);
        assert_eq!(integrity_check(&good), Ok(()));

        // Overwrite a whole b-tree page in the middle of the file, header included.
        let bad = scratch.0.join("bad.db");
        std::fs::copy(&good, &bad).unwrap();
        let mut bytes = std::fs::read(&bad).unwrap();
        let page = 4096;
        let middle = (bytes.len() / page / 2) * page;
        for byte in &mut bytes[middle..middle + page] {
            *byte = 0xA5;
        }
        std::fs::write(&bad, bytes).unwrap();
        let problem = integrity_check(&bad).unwrap_err();
        assert!(!problem.is_empty());

        // Garbage from the first byte is not a database at all.
        let garbage = scratch.0.join("garbage.db");
        std::fs::write(&garbage, vec![0x5Au8; 8192]).unwrap();
        let problem = integrity_check(&garbage).unwrap_err();
        assert!(problem.contains("not a database"), "{problem}");

        // A missing file is reported, not created.
        let missing = scratch.0.join("missing.db");
        assert!(integrity_check(&missing).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn the_lock_blocks_other_writers_until_released() {
        let scratch = Scratch::new("lock");
        for wal in [true, false] {
            let path = scratch.0.join(format!("db-{wal}.db"));
            make_db(&path, wal);
            let held = lock(&path, Duration::from_millis(100)).unwrap();
            let other = open(&path, Duration::from_millis(50)).unwrap();
            let error = other
                .execute("INSERT INTO t(y) VALUES ('blocked')", [])
                .unwrap_err();
            assert_eq!(
                error.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy),
                "wal={wal}: {error}"
            );
            // Readers go on.
            let count: i64 = other
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(count, 2000);
            // A second lock waits its busy timeout and then fails with a message naming the file.
            let failure = lock(&path, Duration::from_millis(50)).err().unwrap();
            assert!(failure.message.contains(&path.display().to_string()));
            held.execute_batch("ROLLBACK").unwrap();
            drop(held);
            other
                .execute("INSERT INTO t(y) VALUES ('free')", [])
                .unwrap();
            assert_eq!(integrity_check(&path), Ok(()));
            checkpoint(&path, Duration::from_millis(50)).unwrap();
            if wal {
                let wal_len = std::fs::metadata(sidecar_path(&path, "-wal"))
                    .unwrap()
                    .len();
                assert_eq!(wal_len, 0, "TRUNCATE empties the WAL");
            }
        }
    }
}
