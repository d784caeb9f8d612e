//! What a handler knows about the event it handles: its kind, session, shadow copy set, backup
//! state, volumes and snapshot locations, and the BCD phase that decides which edits are allowed.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use shadowcopy_metadata::bcd::{BackupState, Phase};
use shadowcopy_metadata::enums::{RestoreType, SnapshotContext};
use shadowcopy_metadata::{SnapshotSetId, WriterInstanceId};

use crate::failure::WriterFailure;

/// The writer events of the protocol (writer.proto), one per [`Writer`](crate::Writer) handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// Build and return the WMD (ROLE-6).
    Identify,
    /// B9: prepare for the backup (BK-PREP-3).
    PrepareForBackup,
    /// B11: heavy preparation before the freeze (BK-SNAP-3).
    PrepareForSnapshot,
    /// B11: quiesce and hold writes (BK-SNAP-3, BK-SNAP-5).
    Freeze,
    /// B11: resume normal I/O.
    Thaw,
    /// B11: the shadow copies exist (BK-SNAP-2 step 12).
    PostSnapshot,
    /// Undo everything of this set (BK-ABORT-3).
    Abort,
    /// B13: the backup is secured (BK-END-1).
    BackupComplete,
    /// B15: the requester released its session (BK-END-4, BK-END-5).
    BackupShutdown,
    /// R5: prepare for the restore.
    PreRestore,
    /// R8: the files are back.
    PostRestore,
}

impl EventKind {
    /// The event's VSS name, for logs: `"Freeze"`, `"PostSnapshot"`, ...
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Identify => "Identify",
            EventKind::PrepareForBackup => "PrepareForBackup",
            EventKind::PrepareForSnapshot => "PrepareForSnapshot",
            EventKind::Freeze => "Freeze",
            EventKind::Thaw => "Thaw",
            EventKind::PostSnapshot => "PostSnapshot",
            EventKind::Abort => "Abort",
            EventKind::BackupComplete => "BackupComplete",
            EventKind::BackupShutdown => "BackupShutdown",
            EventKind::PreRestore => "PreRestore",
            EventKind::PostRestore => "PostRestore",
        }
    }

    /// The BCD phase the event belongs to (BCD-6, BCD-7). A writer may edit its component records
    /// only in PrepareForBackup, PostSnapshot, PreRestore and PostRestore; the other events map to
    /// phases in which the metadata crate refuses every writer edit.
    pub const fn phase(self) -> Phase {
        match self {
            EventKind::Identify => Phase::BackupDiscovery,
            EventKind::PrepareForBackup => Phase::PrepareForBackup,
            // Abort mostly arises during DoSnapshotSet (BK-ABORT-1); it never edits the BCD.
            EventKind::PrepareForSnapshot
            | EventKind::Freeze
            | EventKind::Thaw
            | EventKind::Abort => Phase::SnapshotCreation,
            EventKind::PostSnapshot => Phase::PostSnapshot,
            EventKind::BackupComplete | EventKind::BackupShutdown => Phase::BackupComplete,
            EventKind::PreRestore => Phase::PreRestore,
            EventKind::PostRestore => Phase::PostRestore,
        }
    }

    /// Whether an Abort of the same session cancels a handler of this kind that is still running:
    /// the backup events up to PostSnapshot, after which no Abort comes (BK-ABORT-4). Restore
    /// events are never cancelled, since restores cannot be aborted (BK-ABORT-5).
    pub(crate) const fn cancelled_by_abort(self) -> bool {
        matches!(
            self,
            EventKind::PrepareForBackup
                | EventKind::PrepareForSnapshot
                | EventKind::Freeze
                | EventKind::Thaw
                | EventKind::PostSnapshot
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why `on_abort` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortCause {
    /// The coordinator sent Abort (BK-ABORT-1, first and third cases).
    Requested,
    /// Thaw had not arrived when the freeze deadline ran out; the SDK aborted the writer itself
    /// and will answer the Thaw with VSS_E_WRITERERROR_TIMEOUT (BK-SNAP-5).
    FreezeTimeout,
    /// The writer's own Freeze or Thaw handler failed, so the writer aborts itself (BK-SNAP-7).
    HandlerFailed,
    /// The stream to the coordinator broke: the coordinator died or closed it. The writer must
    /// thaw at once without waiting for its freeze timer (architecture §2, writer.proto Connect).
    CoordinatorGone,
    /// The hosting process stopped the writer ([`WriterHandle::shutdown`](crate::WriterHandle::shutdown)
    /// or the shutdown future of [`run_until`](crate::run_until)) while a backup was in progress.
    Shutdown,
}

/// Where the shadow copy of one volume can be read (PostSnapshot, BK-COPY-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotLocation {
    /// The original volume's mount point.
    pub volume: PathBuf,
    /// Where the shadow copy's root can be read: a file at `volume/x` is at `snapshot_path/x`.
    pub snapshot_path: PathBuf,
}

/// What a handler knows about its event.
///
/// The SDK remembers, per requester session, what earlier events said (the backup state of
/// PrepareForBackup, the volumes of PrepareForSnapshot, the set id), so that later handlers of the
/// same session see it too. Only the handler's own context may record a failure (ROLE-5, ERR-1).
#[derive(Debug)]
pub struct EventContext {
    pub(crate) event: EventKind,
    pub(crate) event_id: u64,
    pub(crate) session_id: Option<String>,
    pub(crate) set_id: Option<SnapshotSetId>,
    pub(crate) backup_state: Option<BackupState>,
    pub(crate) snapshot_context: Option<SnapshotContext>,
    pub(crate) volumes: Vec<PathBuf>,
    pub(crate) snapshots: Vec<SnapshotLocation>,
    pub(crate) snapshots_writable: bool,
    pub(crate) restore_type: Option<RestoreType>,
    pub(crate) backup_completed: bool,
    pub(crate) abort_cause: Option<AbortCause>,
    pub(crate) writer_name: String,
    pub(crate) instance_id: WriterInstanceId,
    pub(crate) recorded: Mutex<Option<WriterFailure>>,
}

impl EventContext {
    /// A context with nothing but the event kind, filled in by the runtime.
    pub(crate) fn new(
        event: EventKind,
        writer_name: String,
        instance_id: WriterInstanceId,
    ) -> Self {
        EventContext {
            event,
            event_id: 0,
            session_id: None,
            set_id: None,
            backup_state: None,
            snapshot_context: None,
            volumes: Vec::new(),
            snapshots: Vec::new(),
            snapshots_writable: false,
            restore_type: None,
            backup_completed: false,
            abort_cause: None,
            writer_name,
            instance_id,
            recorded: Mutex::new(None),
        }
    }

    /// The event being handled.
    pub fn event(&self) -> EventKind {
        self.event
    }

    /// The coordinator's id of the event on this stream; 0 for an abort the SDK started itself.
    pub fn event_id(&self) -> u64 {
        self.event_id
    }

    /// The requester session the event belongs to (ROLE-5); `None` for an Identify sent outside
    /// a session.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The shadow copy set id, once the session has one. Record it during Freeze, Thaw or
    /// PostSnapshot to tell sessions apart in BackupShutdown (BK-END-5).
    pub fn set_id(&self) -> Option<SnapshotSetId> {
        self.set_id
    }

    /// The session's backup state (backup type, component mode, bootable state, partial-file
    /// support), from PrepareForBackup on (BK-INIT-3).
    pub fn backup_state(&self) -> Option<BackupState> {
        self.backup_state
    }

    /// The session's snapshot context, from PrepareForBackup on (ENUM-14).
    pub fn snapshot_context(&self) -> Option<SnapshotContext> {
        self.snapshot_context
    }

    /// The mount points of the volumes in the set, from PrepareForSnapshot on.
    pub fn volumes(&self) -> &[PathBuf] {
        &self.volumes
    }

    /// Where each volume's shadow copy can be read; set in PostSnapshot.
    pub fn snapshots(&self) -> &[SnapshotLocation] {
        &self.snapshots
    }

    /// Whether the shadow copies are still writable in PostSnapshot, so that auto-recovery and
    /// snapshot exclusions may run in them (CTX-7, EXCL-2).
    pub fn snapshots_writable(&self) -> bool {
        self.snapshots_writable
    }

    /// The restore type, in PreRestore and PostRestore (ENUM-3); UNDEFINED means BY_COPY
    /// (RST-PREP-7).
    pub fn restore_type(&self) -> Option<RestoreType> {
        self.restore_type
    }

    /// Whether this writer has handled BackupComplete in this session. In BackupShutdown, `false`
    /// means the backup failed: clean up and do not truncate logs (BK-END-5).
    pub fn backup_completed(&self) -> bool {
        self.backup_completed
    }

    /// Why `on_abort` runs; `None` in every other handler.
    pub fn abort_cause(&self) -> Option<AbortCause> {
        self.abort_cause
    }

    /// The writer's name from its WMD, for logs.
    pub fn writer_name(&self) -> &str {
        &self.writer_name
    }

    /// The instance id the coordinator assigned at registration (ROLE-7).
    pub fn instance_id(&self) -> WriterInstanceId {
        self.instance_id
    }

    /// The BCD phase of this event: pass it to
    /// `components.edit(Party::Writer, ctx.phase(), logical_path, name)`, so that the metadata
    /// crate refuses edits outside the writer windows of BCD-7.
    pub fn phase(&self) -> Phase {
        self.event.phase()
    }

    /// Records a non-fatal failure: the handler still returns `Ok` and the event succeeds, but the
    /// requester sees the failure in the writer status (ERR-1, third rule). A later call replaces an
    /// earlier one; a failure returned as the handler's `Err` wins over a recorded one.
    ///
    /// Recording a failure in Identify is not allowed (ERR-1); the SDK logs and drops it there.
    pub fn record_failure(&self, failure: WriterFailure) {
        let mut slot = self
            .recorded
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *slot = Some(failure);
    }

    /// Takes the recorded non-fatal failure.
    pub(crate) fn take_recorded(&self) -> Option<WriterFailure> {
        self.recorded
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
    }

    /// Whether `path` lies on a volume of the set, so that the snapshot will hold a consistent copy
    /// of it (use it in PrepareForSnapshot or Freeze to veto with
    /// [`WriterFailure::inconsistent_snapshot`] when data the writer needs is missing, ERR-3).
    ///
    /// An existing path is resolved first (symbolic links decide where data really lives); a
    /// missing one is normalised lexically. The path is on a volume when the volume's mount point
    /// is its closest ancestor among the set's volumes and the host's mount points: a file under
    /// `/srv` is not affected when `/srv/db` is a separate mount that the set lacks.
    pub fn is_path_affected(&self, path: impl AsRef<Path>) -> bool {
        let path = resolve(path.as_ref());
        let volumes: Vec<PathBuf> = self.volumes.iter().map(|v| resolve(v)).collect();
        let Some(volume) = closest_volume(&path, volumes.iter().map(PathBuf::as_path)) else {
            return false;
        };
        let depth = volume.components().count();
        !mount_points()
            .iter()
            .any(|mount| path.starts_with(mount) && mount.components().count() > depth)
    }

    /// Where `path` can be read in the shadow copies (PostSnapshot): the snapshot path of the
    /// closest volume joined with the rest of `path`; `None` when no volume of the set holds it.
    pub fn snapshot_path_of(&self, path: impl AsRef<Path>) -> Option<PathBuf> {
        let path = normalize(path.as_ref());
        let volume = closest_volume(
            &path,
            self.snapshots
                .iter()
                .map(|location| location.volume.as_path()),
        )?;
        let location = self
            .snapshots
            .iter()
            .find(|location| normalize(&location.volume) == volume)?;
        let rest = path.strip_prefix(&volume).ok()?;
        Some(if rest.as_os_str().is_empty() {
            location.snapshot_path.clone()
        } else {
            location.snapshot_path.join(rest)
        })
    }
}

/// The deepest of `volumes` that is an ancestor of, or equal to, `path` (both normalised).
fn closest_volume<'a>(path: &Path, volumes: impl Iterator<Item = &'a Path>) -> Option<PathBuf> {
    volumes
        .map(normalize)
        .filter(|volume| path.starts_with(volume))
        .max_by_key(|volume| volume.components().count())
}

/// The canonical path when it exists, the lexically normalised absolute path otherwise.
fn resolve(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| normalize(path))
}

/// Makes `path` absolute (against the current directory) and removes `.` and `..` lexically.
fn normalize(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_owned())
    };
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The mount points of this process's mount namespace, from `/proc/self/mountinfo`; empty when it
/// cannot be read (then only the set's volumes decide).
fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect()
}

/// Decodes the octal escapes (`\040` for a space, ...) of a mountinfo field.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match escape {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(volumes: &[&str]) -> EventContext {
        let mut ctx = EventContext::new(
            EventKind::PrepareForSnapshot,
            "test".into(),
            WriterInstanceId::nil(),
        );
        ctx.volumes = volumes.iter().map(PathBuf::from).collect();
        ctx
    }

    #[test]
    fn paths_under_a_volume_are_affected_and_prefix_lookalikes_are_not() {
        let ctx = context(&["/nonexistent-vol/data"]);
        assert!(ctx.is_path_affected("/nonexistent-vol/data"));
        assert!(ctx.is_path_affected("/nonexistent-vol/data/db/file"));
        assert!(ctx.is_path_affected("/nonexistent-vol/other/../data/x"));
        assert!(!ctx.is_path_affected("/nonexistent-vol/database/x"));
        assert!(!ctx.is_path_affected("/nonexistent-vol"));
        assert!(!context(&[]).is_path_affected("/nonexistent-vol/data/x"));
    }

    #[test]
    fn a_nested_mount_outside_the_set_is_not_affected() {
        // /proc is a separate mount below /, so a set holding only / does not hold /proc.
        let ctx = context(&["/"]);
        if mount_points().iter().any(|m| m == Path::new("/proc")) {
            assert!(!ctx.is_path_affected("/proc/self"));
        }
        let ctx = context(&["/", "/proc"]);
        assert!(ctx.is_path_affected("/proc/self"));
    }

    #[test]
    fn snapshot_paths_map_below_the_closest_volume() {
        let mut ctx = context(&[]);
        ctx.snapshots = vec![
            SnapshotLocation {
                volume: "/srv".into(),
                snapshot_path: "/run/snap/a".into(),
            },
            SnapshotLocation {
                volume: "/srv/db".into(),
                snapshot_path: "/run/snap/b".into(),
            },
        ];
        assert_eq!(
            ctx.snapshot_path_of("/srv/db/x/y"),
            Some(PathBuf::from("/run/snap/b/x/y"))
        );
        assert_eq!(
            ctx.snapshot_path_of("/srv/www"),
            Some(PathBuf::from("/run/snap/a/www"))
        );
        assert_eq!(
            ctx.snapshot_path_of("/srv"),
            Some(PathBuf::from("/run/snap/a"))
        );
        assert_eq!(ctx.snapshot_path_of("/home"), None);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/x\\y"), r"/x\\y");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn phases_allow_edits_only_in_the_writer_windows() {
        for kind in [
            EventKind::PrepareForBackup,
            EventKind::PostSnapshot,
            EventKind::PreRestore,
            EventKind::PostRestore,
        ] {
            assert!(Phase::WRITER_WINDOWS.contains(&kind.phase()), "{kind}");
        }
        for kind in [
            EventKind::Identify,
            EventKind::PrepareForSnapshot,
            EventKind::Freeze,
            EventKind::Thaw,
            EventKind::Abort,
            EventKind::BackupComplete,
            EventKind::BackupShutdown,
        ] {
            assert!(!Phase::WRITER_WINDOWS.contains(&kind.phase()), "{kind}");
        }
    }
}
