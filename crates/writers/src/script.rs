//! The script writer (kind = "script"): a bridge for applications without a writer of their own.
//! The declaration lists the application's components and one shell command per VSS event; the
//! writer runs the command when the event arrives and turns a failing command into the veto the
//! spec gives that event.
//!
//! ```toml
//! kind = "script"
//! name = "webapp"
//! [script]
//! freeze = "systemctl kill -s STOP webapp.service"
//! thaw = "systemctl kill -s CONT webapp.service"
//! timeout_ms = 10000            # per command; default 60000
//! user = "webapp"               # optional; commands run as this user (through runuser)
//! [[script.components]]
//! name = "data"
//! logical_path = "webapp"       # optional
//! [[script.components.files]]
//! path = "/srv/webapp"
//! filespec = "*"
//! recursive = true
//! ```
//!
//! Each command runs as `/bin/sh -c <command>` in a process group of its own, with stdin from
//! /dev/null and these variables in its environment:
//! - `SHADOWCOPY_EVENT`: the event (`identify`, `prepare_backup`, `prepare_snapshot`, `freeze`,
//!   `thaw`, `post_snapshot`, `backup_complete`, `backup_shutdown`, `abort`, `pre_restore`,
//!   `post_restore`);
//! - `SHADOWCOPY_WRITER`: the writer name;
//! - `SHADOWCOPY_SET_ID`: the shadow copy set id, where the event has one;
//! - `SHADOWCOPY_BACKUP_TYPE`: `FULL`, `INCREMENTAL`, `DIFFERENTIAL`, `LOG` or `COPY` (backup);
//! - `SHADOWCOPY_RESTORE_TYPE`: the restore type (restore events);
//! - `SHADOWCOPY_COMPONENTS`: the full paths (`logical\path\name`, LP-2) of the selected
//!   components, one per line: newline, not space, because names and logical paths may contain
//!   spaces. Events without a component list (freeze, thaw, abort, ...) see the selection of their
//!   session's PrepareForBackup;
//! - `SHADOWCOPY_VOLUMES`: the set's volumes (mount points), one per line;
//! - `SHADOWCOPY_SNAPSHOT_COUNT` and, for n = 0.., `SHADOWCOPY_SNAPSHOT_<n>` (where the shadow
//!   copy of a volume can be read) and `SHADOWCOPY_SNAPSHOT_<n>_VOLUME` (the volume), from
//!   PostSnapshot on;
//! - `SHADOWCOPY_ABORT_CAUSE`: why Abort runs (`Requested`, `FreezeTimeout`, `HandlerFailed`,
//!   `CoordinatorGone`, `Shutdown`).
//!
//! Failures (ERR-1, ERR-3): a command that exits non-zero, or runs longer than its timeout (then
//! its whole process group is killed, so `sleep` children do not linger), fails its event with the
//! exit status and the tail of its stderr in the message and the log. A failing PrepareForBackup
//! or PrepareForSnapshot command vetoes the backup (RETRYABLE); a failing Freeze or Thaw command
//! fails the writer at that event and the SDK aborts it (BK-SNAP-7); a failing PostSnapshot does
//! not abort the backup (BK-SNAP-6). Abort runs the `abort` command, or, when none is declared,
//! the `thaw` command if a freeze was started and not thawed: so an application stopped by a
//! Freeze command that then hung or failed is resumed (the hung command is killed first).
//!
//! A writer process that dies while frozen (SIGKILL, a crash) can run no Abort, and the
//! application it stopped would stay stopped. So, as the cgroup writer does, the freeze is
//! recorded in a marker file (`<runtime_dir>/<writer name>`, holding the writer's pid) from the
//! start of the freeze command until a thaw or abort command succeeds, and a writer that starts
//! and finds a marker of a process that is gone runs its `abort` command (or `thaw`), with
//! `SHADOWCOPY_EVENT=abort` and `SHADOWCOPY_ABORT_CAUSE=WriterRestarted`, before it registers.
//! The marker is best effort: a writer that cannot write it (no access to the runtime directory)
//! says so in its log and freezes all the same.
//!
//! Restore method (spec §10, RM-1, RM-2): RESTORE_IF_CAN_REPLACE by default, the method that puts
//! the files back in place when they can be replaced and otherwise falls back to alternate
//! locations or an error, which suits an application that tolerates its files being replaced
//! (it was quiesced by these same commands). When `service` is set and no method is,
//! STOP_RESTORE_START: the requester stops the service around the copy (WMD-3). The writer takes
//! part in restores (writer_restore ALWAYS) so that `pre_restore` and `post_restore` run (RSV-2).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use shadowcopy_metadata::WriterMetadata;
use shadowcopy_metadata::bcd::WriterComponents;
use shadowcopy_metadata::enums::{RestoreMethod, WriterRestore};
use shadowcopy_metadata::wmd::{Component, FileDescriptor};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure};
use tokio::io::AsyncReadExt;

use crate::declaration::{Declaration, DeclarationError};
use crate::marker::{FreezeMarker, run_blocking};

/// Where freeze markers live unless `runtime_dir` says otherwise.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/shadowcopy/script-frozen";

/// The timeout of a command when the declaration gives none.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How many bytes of a command's stderr go into a failure message: enough for the error lines
/// of a script, short enough for a status line.
const STDERR_TAIL_BYTES: usize = 1500;

/// How much of each output stream is kept in memory; the rest goes only to the log.
const OUTPUT_KEEP_BYTES: usize = 64 * 1024;

/// How long to keep reading a command's output after it exited: a command that started a
/// background process (`app &`) leaves the pipe open, and the writer must not wait for that.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// The event names a command can be declared for, as they appear in the `[script]` table and in
/// `SHADOWCOPY_EVENT`.
pub const EVENTS: [&str; 11] = [
    "identify",
    "prepare_backup",
    "prepare_snapshot",
    "freeze",
    "thaw",
    "post_snapshot",
    "backup_complete",
    "backup_shutdown",
    "abort",
    "pre_restore",
    "post_restore",
];

/// One file set of a declared component (WMD-11).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// An absolute directory.
    pub path: String,
    /// A file-name pattern with `*` and `?`; `*` by default.
    #[serde(default = "star")]
    pub filespec: String,
    /// Whether the pattern also matches below `path`; false by default.
    #[serde(default)]
    pub recursive: bool,
}

fn star() -> String {
    "*".into()
}

fn yes() -> bool {
    true
}

/// One declared component: a file group (COMP-2) of the writer's data.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ComponentSettings {
    /// The component name.
    pub name: String,
    /// The `\`-separated logical path (LP-1); empty (top level) by default.
    #[serde(default)]
    pub logical_path: String,
    /// A caption for people.
    #[serde(default)]
    pub caption: Option<String>,
    /// Whether the requester may choose it for backup (SEL-1); true by default.
    #[serde(default = "yes")]
    pub selectable: bool,
    /// Whether it may be restored on its own (SEL-1); false by default.
    #[serde(default)]
    pub selectable_for_restore: bool,
    /// Its file sets.
    #[serde(default)]
    pub files: Vec<FileSettings>,
}

impl ComponentSettings {
    /// The WMD component.
    pub fn component(&self) -> Component {
        let files = self
            .files
            .iter()
            .map(|f| FileDescriptor::new(f.path.clone(), f.filespec.clone(), f.recursive))
            .collect();
        let mut component = Component::file_group(
            self.logical_path.clone(),
            self.name.clone(),
            self.selectable,
            files,
        );
        component.caption = self.caption.clone();
        component.selectable_for_restore = self.selectable_for_restore;
        component
    }
}

/// The restore part of a declaration (spec §10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoreSettings {
    /// The method; see the module documentation for the default.
    pub method: Option<RestoreMethod>,
    /// The service a stop/start method stops (WMD-3).
    pub service: Option<String>,
    /// The procedure for CUSTOM.
    pub user_procedure: Option<String>,
    /// Whether the writer takes part in restores; ALWAYS by default.
    pub writer_restore: Option<WriterRestore>,
}

/// Builds and validates the WMD of a declared writer from its components and restore settings;
/// an invalid document is refused with the file and the `<kind>` table named.
pub fn declared_metadata(
    declaration: &Declaration,
    components: &[ComponentSettings],
    restore: &RestoreSettings,
) -> Result<WriterMetadata, DeclarationError> {
    let mut wmd = WriterMetadata::simple(
        declaration.name.clone(),
        declaration.class_id,
        components
            .iter()
            .map(ComponentSettings::component)
            .collect(),
    );
    wmd.identity.instance_name = declaration.instance_name.clone();
    wmd.restore_method.method = restore.method.unwrap_or(if restore.service.is_some() {
        RestoreMethod::StopRestoreStart
    } else {
        RestoreMethod::RestoreIfCanReplace
    });
    wmd.restore_method.service = restore.service.clone();
    wmd.restore_method.user_procedure = restore.user_procedure.clone();
    wmd.restore_method.writer_restore = restore.writer_restore.unwrap_or(WriterRestore::Always);
    wmd.validate().map_err(|error| {
        DeclarationError::invalid(
            &declaration.file,
            declaration.kind.as_str(),
            format!("the declared components and restore settings make an invalid WMD: {error}"),
        )
    })?;
    Ok(wmd)
}

/// The `[script]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScriptSettings {
    /// The components.
    #[serde(default)]
    pub components: Vec<ComponentSettings>,
    /// The restore method (`RESTORE_IF_CAN_REPLACE`, `STOP_RESTORE_START`, ...).
    #[serde(default)]
    pub restore_method: Option<RestoreMethod>,
    /// The service of a stop/start restore method.
    #[serde(default)]
    pub service: Option<String>,
    /// The procedure of a CUSTOM restore method.
    #[serde(default)]
    pub user_procedure: Option<String>,
    /// `NEVER`, `IF_REPLACE_FAILS` or `ALWAYS` (default).
    #[serde(default)]
    pub writer_restore: Option<WriterRestore>,
    /// The timeout of every command, in milliseconds; 60000 by default.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Timeouts of single events' commands, in milliseconds (`timeouts = { freeze = 5000 }`).
    #[serde(default)]
    pub timeouts: HashMap<String, u64>,
    /// The user the commands run as; the writer's own user by default.
    #[serde(default)]
    pub user: Option<String>,
    /// Where the freeze marker lives (module documentation); [`DEFAULT_RUNTIME_DIR`] by default.
    #[serde(default)]
    pub runtime_dir: Option<PathBuf>,
    /// Identify's command.
    #[serde(default)]
    pub identify: Option<String>,
    /// PrepareForBackup's command.
    #[serde(default)]
    pub prepare_backup: Option<String>,
    /// PrepareForSnapshot's command.
    #[serde(default)]
    pub prepare_snapshot: Option<String>,
    /// Freeze's command.
    #[serde(default)]
    pub freeze: Option<String>,
    /// Thaw's command.
    #[serde(default)]
    pub thaw: Option<String>,
    /// PostSnapshot's command.
    #[serde(default)]
    pub post_snapshot: Option<String>,
    /// BackupComplete's command.
    #[serde(default)]
    pub backup_complete: Option<String>,
    /// BackupShutdown's command: the session of a set ended, after BackupComplete or without it
    /// (a failed or abandoned backup, BK-END-5); clean up what was kept for that set.
    #[serde(default)]
    pub backup_shutdown: Option<String>,
    /// Abort's command; the thaw command stands in when it is missing.
    #[serde(default)]
    pub abort: Option<String>,
    /// PreRestore's command.
    #[serde(default)]
    pub pre_restore: Option<String>,
    /// PostRestore's command.
    #[serde(default)]
    pub post_restore: Option<String>,
}

impl ScriptSettings {
    fn command(&self, event: &str) -> Option<&str> {
        match event {
            "identify" => self.identify.as_deref(),
            "prepare_backup" => self.prepare_backup.as_deref(),
            "prepare_snapshot" => self.prepare_snapshot.as_deref(),
            "freeze" => self.freeze.as_deref(),
            "thaw" => self.thaw.as_deref(),
            "post_snapshot" => self.post_snapshot.as_deref(),
            "backup_complete" => self.backup_complete.as_deref(),
            "backup_shutdown" => self.backup_shutdown.as_deref(),
            "abort" => self.abort.as_deref(),
            "pre_restore" => self.pre_restore.as_deref(),
            "post_restore" => self.post_restore.as_deref(),
            _ => None,
        }
    }
}

/// Checks that `user` exists, so that a typo is refused at load time and not at the first freeze.
pub fn check_user(file: &Path, key: &str, user: &str) -> Result<(), DeclarationError> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(DeclarationError::invalid(
            file,
            key,
            format!("no user {user:?} on this host; create it or remove the key"),
        )),
        Err(error) => Err(DeclarationError::invalid(
            file,
            key,
            format!("cannot look up user {user:?}: {error}"),
        )),
    }
}

/// What the writer remembers between the events of one backup.
#[derive(Debug, Default)]
pub(crate) struct Selections {
    /// The selected components' full paths per requester session, from PrepareForBackup (or
    /// PreRestore), for the events that carry no component list.
    by_session: Mutex<HashMap<String, Vec<String>>>,
}

impl Selections {
    /// Remembers the selection of the context's session.
    pub(crate) fn remember(&self, ctx: &EventContext, components: &WriterComponents) {
        if let Some(session) = ctx.session_id() {
            let paths = components
                .components()
                .iter()
                .map(|c| c.full_path())
                .collect();
            lock(&self.by_session).insert(session.to_owned(), paths);
        }
    }

    /// The selection of the context's session, or an empty one.
    pub(crate) fn of(&self, ctx: &EventContext) -> Vec<String> {
        ctx.session_id()
            .and_then(|session| lock(&self.by_session).get(session).cloned())
            .unwrap_or_default()
    }

    /// Forgets the session's selection (BackupShutdown).
    pub(crate) fn forget(&self, ctx: &EventContext) {
        if let Some(session) = ctx.session_id() {
            lock(&self.by_session).remove(session);
        }
    }
}

/// Locks a mutex, recovering it when a panicking handler poisoned it: the data is plain state
/// that stays meaningful (ERR-1: a panic must not take the writer down).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `SHADOWCOPY_*` environment of a command for `event` (module documentation).
pub(crate) fn event_env(
    event: &str,
    ctx: &EventContext,
    components: &[String],
) -> Vec<(String, String)> {
    let mut env = vec![
        ("SHADOWCOPY_EVENT".to_owned(), event.to_owned()),
        ("SHADOWCOPY_WRITER".to_owned(), ctx.writer_name().to_owned()),
        ("SHADOWCOPY_COMPONENTS".to_owned(), components.join("\n")),
    ];
    if let Some(set) = ctx.set_id() {
        env.push(("SHADOWCOPY_SET_ID".into(), set.to_string()));
    }
    if let Some(state) = ctx.backup_state() {
        env.push((
            "SHADOWCOPY_BACKUP_TYPE".into(),
            state.backup_type.name().into(),
        ));
    }
    if let Some(restore) = ctx.restore_type() {
        env.push(("SHADOWCOPY_RESTORE_TYPE".into(), restore.name().into()));
    }
    let volumes: Vec<_> = ctx
        .volumes()
        .iter()
        .map(|v| v.display().to_string())
        .collect();
    env.push(("SHADOWCOPY_VOLUMES".into(), volumes.join("\n")));
    env.push((
        "SHADOWCOPY_SNAPSHOT_COUNT".into(),
        ctx.snapshots().len().to_string(),
    ));
    for (n, snapshot) in ctx.snapshots().iter().enumerate() {
        env.push((
            format!("SHADOWCOPY_SNAPSHOT_{n}"),
            snapshot.snapshot_path.display().to_string(),
        ));
        env.push((
            format!("SHADOWCOPY_SNAPSHOT_{n}_VOLUME"),
            snapshot.volume.display().to_string(),
        ));
    }
    if let Some(cause) = ctx.abort_cause() {
        env.push(("SHADOWCOPY_ABORT_CAUSE".into(), format!("{cause:?}")));
    }
    env
}

/// How a command ended when it did not succeed.
#[derive(Debug)]
pub(crate) enum CommandError {
    /// It could not be started.
    Spawn(std::io::Error),
    /// It exited non-zero or was killed by a signal.
    Exit {
        /// The exit status as text.
        status: String,
        /// The exit code, if it exited.
        code: Option<i32>,
        /// The end of its stderr.
        stderr: String,
    },
    /// It ran longer than its timeout; its process group was killed.
    Timeout {
        /// The timeout.
        after: Duration,
        /// The end of its stderr so far.
        stderr: String,
    },
}

impl CommandError {
    /// The failure for a handler: `what` names the command (`freeze command "..." of writer w`).
    /// Timeouts at Freeze and Thaw are VSS_E_WRITERERROR_TIMEOUT (ERR-2: the freeze window was
    /// exceeded); a command that cannot even start is NONRETRYABLE (retrying will not install
    /// it); anything else is RETRYABLE, the veto the requester may retry (ERR-3).
    pub(crate) fn failure(&self, what: &str, event: &str) -> WriterFailure {
        match self {
            CommandError::Spawn(error) => WriterFailure::non_retryable(format!(
                "{what} could not be started: {error}; check the command and the user in the declaration"
            )),
            CommandError::Exit {
                status,
                code,
                stderr,
            } => {
                let failure = WriterFailure::retryable(format!(
                    "{what} failed ({status}){}",
                    stderr_suffix(stderr)
                ));
                match code {
                    Some(code) => failure.with_application_code(i64::from(*code)),
                    None => failure,
                }
            }
            CommandError::Timeout { after, stderr } => {
                let message = format!(
                    "{what} did not finish within {} ms and was killed with its process group{}; \
                     raise its timeout in the declaration or make it faster",
                    after.as_millis(),
                    stderr_suffix(stderr)
                );
                if event == "freeze" || event == "thaw" {
                    WriterFailure::timeout(message)
                } else {
                    WriterFailure::retryable(message)
                }
            }
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", stderr.trim())
    }
}

/// Kills a command's process group when dropped while armed: on timeout, and when the SDK
/// cancels the handler (an Abort cancels a running Freeze at its next await), so a hung command
/// and its children never outlive their event.
struct GroupKiller {
    pgid: Option<nix::unistd::Pid>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (already gone) is the good case; nothing else can usefully be done here.
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `max` bytes of `bytes` as text, starting at a line if one starts within the tail.
fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
    if start > 0 {
        match text.find('\n') {
            Some(i) if i + 1 < text.len() => format!("...{}", &text[i + 1..]),
            _ => format!("...{text}"),
        }
    } else {
        text
    }
}

/// Reads a stream into a bounded buffer (keeping its end).
async fn collect(mut stream: impl tokio::io::AsyncRead + Unpin, into: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut buffer = lock(&into);
                buffer.extend_from_slice(&chunk[..n]);
                if buffer.len() > OUTPUT_KEEP_BYTES {
                    let excess = buffer.len() - OUTPUT_KEEP_BYTES;
                    buffer.drain(..excess);
                }
            }
        }
    }
}

/// Runs `program args...` (as `user` through runuser when given) with `env`, killing its process
/// group after `timeout`; logs its output under `label`. Returns its stdout on success.
pub(crate) async fn run_program(
    label: &str,
    program: &Path,
    args: &[&str],
    env: &[(String, String)],
    user: Option<&str>,
    timeout: Duration,
) -> Result<String, CommandError> {
    let mut command = match user {
        Some(user) => {
            // runuser sets the user's groups and environment basics properly, which a bare
            // setuid in the child would not (it would keep root's supplementary groups).
            let mut command = tokio::process::Command::new("runuser");
            command.arg("-u").arg(user).arg("--").arg(program);
            command
        }
        None => tokio::process::Command::new(program),
    };
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(CommandError::Spawn)?;
    let mut killer = GroupKiller {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(nix::unistd::Pid::from_raw),
    };
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(collect(out, Arc::clone(&stdout)));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(collect(err, Arc::clone(&stderr)));
    }
    tracing::info!(command = label, "running");
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let outcome = match waited {
        Err(_) => {
            killer.kill();
            let _ = child.wait().await;
            None
        }
        Ok(status) => Some(status),
    };
    // The group's other members may hold the pipes open (a backgrounded `app &`): read what
    // comes within the grace period and no longer.
    let _ = tokio::time::timeout(OUTPUT_GRACE, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    readers.abort_all();
    let out = String::from_utf8_lossy(&lock(&stdout)).into_owned();
    let err_bytes = lock(&stderr).clone();
    for line in out.lines() {
        tracing::info!(command = label, "stdout: {line}");
    }
    for line in String::from_utf8_lossy(&err_bytes).lines() {
        tracing::warn!(command = label, "stderr: {line}");
    }
    let err_tail = tail(&err_bytes, STDERR_TAIL_BYTES);
    match outcome {
        None => {
            tracing::error!(
                command = label,
                timeout_ms = timeout.as_millis() as u64,
                "timed out; process group killed"
            );
            Err(CommandError::Timeout {
                after: timeout,
                stderr: err_tail,
            })
        }
        Some(Err(error)) => Err(CommandError::Spawn(error)),
        Some(Ok(status)) if status.success() => {
            // The command finished; members it left in the background are its business (a
            // `thaw` that restarts a service must not have that service killed).
            killer.pgid = None;
            Ok(out)
        }
        Some(Ok(status)) => {
            killer.pgid = None;
            tracing::error!(command = label, %status, "failed");
            Err(CommandError::Exit {
                status: status.to_string(),
                code: status.code(),
                stderr: err_tail,
            })
        }
    }
}

/// A writer that runs one declared shell command per event.
pub struct ScriptWriter {
    /// The declaration's file, for messages.
    file: PathBuf,
    /// The settings.
    settings: ScriptSettings,
    /// The WMD, built and validated once (ROLE-6: the same every time).
    wmd: WriterMetadata,
    /// The declaration's freeze timeout, which also bounds the freeze command.
    freeze_timeout: Duration,
    /// True from the start of the freeze command until a thaw or abort command succeeded: tells
    /// Abort whether the thaw command must stand in for a missing abort command.
    frozen: Mutex<bool>,
    /// The marker that records a freeze in progress, for a restart after a crash.
    marker: FreezeMarker,
    /// The selection per session.
    selections: Selections,
}

impl ScriptWriter {
    /// The writer of a `kind = "script"` declaration.
    pub fn from_declaration(d: &Declaration) -> Result<Self, DeclarationError> {
        let settings: ScriptSettings = d.settings()?;
        for event in settings.timeouts.keys() {
            if !EVENTS.contains(&event.as_str()) {
                return Err(DeclarationError::UnknownKey {
                    file: d.file.clone(),
                    key: format!("script.timeouts.{event}"),
                    hint: format!("timeouts are per event: {}", EVENTS.join(", ")),
                });
            }
        }
        if settings.timeout_ms == Some(0) || settings.timeouts.values().any(|ms| *ms == 0) {
            return Err(DeclarationError::invalid(
                &d.file,
                "script.timeout_ms",
                "a timeout of 0 ms would fail every command; give a positive number",
            ));
        }
        if let Some(user) = &settings.user {
            check_user(&d.file, "script.user", user)?;
        }
        let restore = RestoreSettings {
            method: settings.restore_method,
            service: settings.service.clone(),
            user_procedure: settings.user_procedure.clone(),
            writer_restore: settings.writer_restore,
        };
        let wmd = declared_metadata(d, &settings.components, &restore)?;
        let marker = FreezeMarker::new(
            settings
                .runtime_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_RUNTIME_DIR)),
            &d.name,
            "script.runtime_dir",
        );
        let writer = ScriptWriter {
            file: d.file.clone(),
            settings,
            wmd,
            freeze_timeout: d.freeze_timeout(),
            frozen: Mutex::new(false),
            marker,
            selections: Selections::default(),
        };
        writer.recover_after_crash();
        Ok(writer)
    }

    /// The marker file that records a freeze in progress.
    pub fn marker(&self) -> &Path {
        self.marker.path()
    }

    /// Runs the abort (or thaw) command when a marker says that an earlier process of this
    /// writer died while frozen (module documentation). A marker of a process that still runs is
    /// left alone: that writer is frozen right now and will thaw itself.
    fn recover_after_crash(&self) {
        if self.marker.left_by_dead_process().is_none() {
            return;
        }
        let name = &self.wmd.identity.writer_name;
        let Some((event, command)) = self
            .settings
            .abort
            .as_deref()
            .map(|c| ("abort", c))
            .or_else(|| self.settings.thaw.as_deref().map(|c| ("thaw", c)))
        else {
            self.marker.clear();
            return;
        };
        tracing::warn!(writer = %name, marker = %self.marker.path().display(), "an earlier run of this writer died while frozen; running its {event} command");
        let env = [
            ("SHADOWCOPY_EVENT", "abort"),
            ("SHADOWCOPY_WRITER", name.as_str()),
            ("SHADOWCOPY_ABORT_CAUSE", "WriterRestarted"),
        ];
        match run_blocking(
            Path::new("/bin/sh"),
            &["-c", command],
            &env,
            self.settings.user.as_deref(),
            self.timeout(event),
        ) {
            Ok(()) => {
                tracing::warn!(writer = %name, "the application left frozen by a crashed run was resumed");
                self.marker.clear();
            }
            Err(why) => tracing::error!(
                writer = %name,
                "the {event} command for the freeze a crashed run left failed: {why}; resume the \
                 application by hand and remove {}",
                self.marker.path().display()
            ),
        }
    }

    /// The settings, as declared.
    pub fn settings(&self) -> &ScriptSettings {
        &self.settings
    }

    fn timeout(&self, event: &str) -> Duration {
        let timeout = self
            .settings
            .timeouts
            .get(event)
            .copied()
            .or(self.settings.timeout_ms)
            .map_or(DEFAULT_COMMAND_TIMEOUT, Duration::from_millis);
        if event == "freeze" {
            // A freeze command that outlives the freeze window is useless (BK-SNAP-5).
            timeout.min(self.freeze_timeout)
        } else {
            timeout
        }
    }

    /// Runs the command declared for `event`, if any, with the event's environment.
    async fn run_event(
        &self,
        event: &str,
        ctx: &EventContext,
        components: &[String],
    ) -> HandlerResult {
        let Some(command) = self.settings.command(event) else {
            return Ok(());
        };
        self.run_command(event, event, command, ctx, components)
            .await
    }

    async fn run_command(
        &self,
        event: &str,
        env_event: &str,
        command: &str,
        ctx: &EventContext,
        components: &[String],
    ) -> HandlerResult {
        let env = event_env(env_event, ctx, components);
        let label = format!("{}:{event}", self.wmd.identity.writer_name);
        let what = format!(
            "{event} command {command:?} of writer {:?} ({})",
            self.wmd.identity.writer_name,
            self.file.display()
        );
        run_program(
            &label,
            Path::new("/bin/sh"),
            &["-c", command],
            &env,
            self.settings.user.as_deref(),
            self.timeout(event),
        )
        .await
        .map(drop)
        .map_err(|error| error.failure(&what, event))
    }
}

impl Writer for ScriptWriter {
    fn metadata(&self) -> WriterMetadata {
        self.wmd.clone()
    }

    async fn on_identify(&self, ctx: &EventContext) -> Result<WriterMetadata, WriterFailure> {
        self.run_event("identify", ctx, &[]).await?;
        Ok(self.metadata())
    }

    async fn on_prepare_backup(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        self.selections.remember(ctx, components);
        let selected = self.selections.of(ctx);
        self.run_event("prepare_backup", ctx, &selected).await
    }

    async fn on_prepare_snapshot(&self, ctx: &EventContext) -> HandlerResult {
        let selected = self.selections.of(ctx);
        self.run_event("prepare_snapshot", ctx, &selected).await
    }

    async fn on_freeze(&self, ctx: &EventContext) -> HandlerResult {
        let selected = self.selections.of(ctx);
        if self.settings.freeze.is_some() {
            // Set before the command starts: a command that stops the application and then
            // hangs or fails still needs the thaw command in Abort, and a writer that dies
            // meanwhile needs it at its next start.
            *lock(&self.frozen) = true;
            self.marker.mark(&[]);
        }
        self.run_event("freeze", ctx, &selected).await
    }

    async fn on_thaw(&self, ctx: &EventContext) -> HandlerResult {
        let selected = self.selections.of(ctx);
        self.run_event("thaw", ctx, &selected).await?;
        *lock(&self.frozen) = false;
        self.marker.clear();
        Ok(())
    }

    async fn on_post_snapshot(
        &self,
        ctx: &EventContext,
        _components: &mut WriterComponents,
    ) -> HandlerResult {
        let selected = self.selections.of(ctx);
        self.run_event("post_snapshot", ctx, &selected).await
    }

    async fn on_abort(&self, ctx: &EventContext) -> HandlerResult {
        let selected = self.selections.of(ctx);
        let result = if let Some(abort) = self.settings.abort.as_deref() {
            self.run_command("abort", "abort", abort, ctx, &selected)
                .await
        } else if *lock(&self.frozen) {
            match self.settings.thaw.as_deref() {
                // The thaw command sees SHADOWCOPY_EVENT=abort, so it can tell the two apart.
                Some(thaw) => {
                    self.run_command("thaw", "abort", thaw, ctx, &selected)
                        .await
                }
                None => Ok(()),
            }
        } else {
            Ok(())
        };
        if result.is_ok() {
            *lock(&self.frozen) = false;
            self.marker.clear();
        }
        result
    }

    async fn on_backup_complete(
        &self,
        ctx: &EventContext,
        components: &WriterComponents,
    ) -> HandlerResult {
        let selected: Vec<String> = components
            .components()
            .iter()
            .map(|c| c.full_path())
            .collect();
        self.run_event("backup_complete", ctx, &selected).await
    }

    async fn on_backup_shutdown(&self, ctx: &EventContext) -> HandlerResult {
        let selected = self.selections.of(ctx);
        let result = self.run_event("backup_shutdown", ctx, &selected).await;
        self.selections.forget(ctx);
        result
    }

    async fn on_pre_restore(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        self.selections.remember(ctx, components);
        let selected = self.selections.of(ctx);
        self.run_event("pre_restore", ctx, &selected).await
    }

    async fn on_post_restore(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        let selected: Vec<String> = components
            .components()
            .iter()
            .map(|c| c.full_path())
            .collect();
        let result = self.run_event("post_restore", ctx, &selected).await;
        self.selections.forget(ctx);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaration(text: &str) -> Declaration {
        Declaration::parse(Path::new("/etc/shadowcopy/writers.d/app.toml"), text).unwrap()
    }

    #[test]
    fn components_and_restore_method_make_the_wmd() {
        let d = declaration(
            r#"
            kind = "script"
            name = "app"
            [script]
            freeze = "true"
            [[script.components]]
            name = "data"
            logical_path = "app"
            [[script.components.files]]
            path = "/srv/app"
            recursive = true
            [[script.components]]
            name = "conf"
            selectable = false
            files = [{ path = "/etc/app", filespec = "*.conf" }]
            "#,
        );
        let writer = ScriptWriter::from_declaration(&d).unwrap();
        let wmd = writer.metadata();
        assert_eq!(wmd.identity.writer_name, "app");
        assert_eq!(wmd.identity.class_id, d.class_id);
        assert_eq!(
            wmd.restore_method.method,
            RestoreMethod::RestoreIfCanReplace
        );
        assert_eq!(wmd.components.len(), 2);
        assert_eq!(wmd.components[0].full_path(), "app\\data");
        assert_eq!(wmd.components[0].files[0].filespec, "*");
        assert!(wmd.components[0].files[0].recursive);
        assert!(!wmd.components[1].selectable_for_backup);
        assert_eq!(wmd.components[1].files[0].filespec, "*.conf");
        // With a service, the default becomes STOP_RESTORE_START (WMD-3).
        const ONE: &str = "[[script.components]]\nname = \"c\"\nfiles = [{ path = \"/srv\" }]\n";
        let d = declaration(&format!(
            "kind = \"script\"\nname = \"a\"\n[script]\nservice = \"app.service\"\n{ONE}"
        ));
        let wmd = ScriptWriter::from_declaration(&d).unwrap().metadata();
        assert_eq!(wmd.restore_method.method, RestoreMethod::StopRestoreStart);
        let d = declaration(&format!(
            "kind = \"script\"\nname = \"a\"\n[script]\nrestore_method = \"RESTORE_IF_NOT_THERE\"\n{ONE}"
        ));
        let wmd = ScriptWriter::from_declaration(&d).unwrap().metadata();
        assert_eq!(wmd.restore_method.method, RestoreMethod::RestoreIfNotThere);
    }

    #[test]
    fn bad_settings_name_file_and_key() {
        for (text, needle) in [
            ("[script]\nfrezee = \"x\"\n", "script.frezee"),
            (
                "[script]\ntimeouts = { frezee = 3 }\n",
                "script.timeouts.frezee",
            ),
            (
                "[script]\nuser = \"no-such-user-shadowcopy\"\n",
                "script.user",
            ),
            ("[script]\nrestore_method = \"SOMETIMES\"\n", "script"),
            (
                "[script]\n[[script.components]]\nname = \"c\"\nfiles = [{ path = \"relative\" }]\n",
                "script",
            ),
        ] {
            let d = declaration(&format!("kind = \"script\"\nname = \"a\"\n{text}"));
            let error = ScriptWriter::from_declaration(&d)
                .err()
                .expect(text)
                .to_string();
            assert!(error.contains("app.toml"), "{error}");
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[tokio::test]
    async fn failing_command_reports_status_and_stderr_tail() {
        let error = run_program(
            "t",
            Path::new("/bin/sh"),
            &["-c", "echo first >&2; echo 'disk is full' >&2; exit 7"],
            &[],
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        let failure = error.failure("freeze command", "freeze");
        let text = format!("{failure:?}");
        assert!(text.contains("disk is full"), "{text}");
        assert!(text.contains('7'), "{text}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = std::env::temp_dir().join(format!("shadowcopy-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("child.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let error = run_program(
            "t",
            Path::new("/bin/sh"),
            &["-c", &script],
            &[],
            None,
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, CommandError::Timeout { .. }), "{error:?}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // The background `sleep` was in the group and is gone (or a zombie about to be reaped).
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = status
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim()
            .chars()
            .next();
        assert!(
            matches!(state, None | Some('Z') | Some('X')),
            "sleep {pid} still runs: {status}"
        );
    }
}
