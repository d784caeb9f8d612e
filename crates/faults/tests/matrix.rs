//! The fault matrix (issue 7; `docs/RELIABILITY.md`, "Fault matrix"): every phase of a backup and
//! a restore crossed with every fault, each applicable cell a test of its own that runs the whole
//! stack for real (see `rig`): real volumes and providers, writers and a daemon as processes of
//! their own, the `shadowcopy` command as the requester, and a restic repository.
//!
//! Every cell makes a clean backup first, arms one fault (a rule of `shadowcopy-faults` for the
//! party that fails, or a volume filled up for real), runs the backup or restore of its phase,
//! puts back what died as a supervisor would (a killed daemon or writer is started again), and
//! then checks:
//! - the outcome the spec prescribes for that phase and fault (the table below, which the
//!   document renders: `SHADOWCOPY_BLESS=1` rewrites it);
//! - nothing left behind: no file system, cgroup or application frozen, no shadow copy listed or
//!   on disk, no stray mount or loop device (`invariants::Watch`);
//! - no data lost: `restic check` passes, every backup made before is still listed and restores
//!   byte for byte, and BackupComplete (on which writers truncate logs) was heard only for
//!   backups the repository holds;
//! - recovery: the next restore (restore cells) and the next backup succeed, and leave nothing.

mod rig;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use rig::{Rig, Rules, Run};
use shadowcopy_test_support::tree::read_tree;

/// The phases, in the order of a backup and then a restore (spec §3, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Identify,
    PrepareForBackup,
    PrepareForSnapshot,
    Freeze,
    Commit,
    Thaw,
    PostSnapshot,
    Copying,
    BackupComplete,
    Release,
    PreRestore,
    Restoring,
    PostRestore,
}

const PHASES: [Phase; 13] = [
    Phase::Identify,
    Phase::PrepareForBackup,
    Phase::PrepareForSnapshot,
    Phase::Freeze,
    Phase::Commit,
    Phase::Thaw,
    Phase::PostSnapshot,
    Phase::Copying,
    Phase::BackupComplete,
    Phase::Release,
    Phase::PreRestore,
    Phase::Restoring,
    Phase::PostRestore,
];

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Identify => "Identify",
            Phase::PrepareForBackup => "PrepareForBackup",
            Phase::PrepareForSnapshot => "PrepareForSnapshot",
            Phase::Freeze => "Freeze",
            Phase::Commit => "provider commit",
            Phase::Thaw => "Thaw",
            Phase::PostSnapshot => "PostSnapshot",
            Phase::Copying => "copying",
            Phase::BackupComplete => "BackupComplete",
            Phase::Release => "release",
            Phase::PreRestore => "PreRestore",
            Phase::Restoring => "restoring",
            Phase::PostRestore => "PostRestore",
        }
    }

    fn is_restore(self) -> bool {
        matches!(
            self,
            Phase::PreRestore | Phase::Restoring | Phase::PostRestore
        )
    }

    /// The script writer's fault point, for the phases that are writer events.
    fn writer_point(self) -> Option<&'static str> {
        Some(match self {
            Phase::Identify => "writer:identify",
            Phase::PrepareForBackup => "writer:prepare-backup",
            Phase::PrepareForSnapshot => "writer:prepare-snapshot",
            Phase::Freeze => "writer:freeze",
            Phase::Thaw => "writer:thaw",
            Phase::PostSnapshot => "writer:post-snapshot",
            Phase::BackupComplete => "writer:backup-complete",
            Phase::Release => "writer:backup-shutdown",
            Phase::PreRestore => "writer:pre-restore",
            Phase::PostRestore => "writer:post-restore",
            Phase::Commit | Phase::Copying | Phase::Restoring => return None,
        })
    }

    /// The point where something other than a writer event happens in the phases that have none:
    /// inside the loop-image provider's freeze, at the first entry of the copy, before the first
    /// file of the restore.
    fn other_point(self) -> Option<(&'static str, Party)> {
        match self {
            Phase::Commit => Some(("loop-image:commit", Party::Daemon)),
            Phase::Copying => Some(("backup:copy", Party::Requester)),
            Phase::Restoring => Some(("restore:restoring", Party::Requester)),
            _ => None,
        }
    }

    /// The provider step a provider fault of this phase hits.
    fn provider_point(self) -> Option<&'static str> {
        Some(match self {
            Phase::PrepareForSnapshot => "btrfs:end-prepare",
            Phase::Freeze => "btrfs:pre-commit",
            Phase::Commit => "loop-image:commit",
            Phase::Thaw => "btrfs:pre-final-commit",
            Phase::PostSnapshot => "btrfs:post-final-commit",
            Phase::Release => "btrfs:delete",
            _ => return None,
        })
    }
}

/// The faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    WriterCrash,
    WriterHang,
    WriterError,
    ProviderFails,
    ProviderHangs,
    DaemonKill,
    RequesterKill,
    SnapshotStorageFull,
    RepositoryFull,
}

const FAULTS: [Fault; 9] = [
    Fault::WriterCrash,
    Fault::WriterHang,
    Fault::WriterError,
    Fault::ProviderFails,
    Fault::ProviderHangs,
    Fault::DaemonKill,
    Fault::RequesterKill,
    Fault::SnapshotStorageFull,
    Fault::RepositoryFull,
];

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::WriterCrash => "writer crashes",
            Fault::WriterHang => "writer hangs",
            Fault::WriterError => "writer returns an error",
            Fault::ProviderFails => "provider fails",
            Fault::ProviderHangs => "provider hangs",
            Fault::DaemonKill => "daemon SIGKILL",
            Fault::RequesterKill => "requester SIGKILL",
            Fault::SnapshotStorageFull => "snapshot storage full",
            Fault::RepositoryFull => "repository storage full",
        }
    }
}

/// Which process gets a cell's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Daemon,
    Writer,
    Requester,
}

/// Stands for the cell's directory in rules; `Rig::new` fills it in.
const CELL: &str = rig::CELL_DIR;

/// The rule that injects `fault` at `phase`, and the party it goes to; `None` for the
/// storage-full faults, which fill a volume for real instead.
fn rule(phase: Phase, fault: Fault) -> Option<(Party, String)> {
    let kill_pid = |who: &str| format!("kill-pid:{CELL}/{who}.pid");
    let at_event = |action: String| phase.writer_point().map(|p| (Party::Writer, p, action));
    let elsewhere = |action: String| phase.other_point().map(|(p, party)| (party, p, action));
    let (party, point, action) = match fault {
        Fault::WriterCrash => {
            at_event(kill_pid("writer")).or_else(|| elsewhere(kill_pid("writer")))?
        }
        Fault::WriterHang => at_event("hang".into())?,
        Fault::WriterError => at_event("fail".into())?,
        Fault::ProviderFails => (Party::Daemon, phase.provider_point()?, "fail".into()),
        Fault::ProviderHangs => (Party::Daemon, phase.provider_point()?, "hang".into()),
        Fault::DaemonKill => at_event(kill_pid("daemon")).or_else(|| match phase {
            // The provider runs in the daemon: the daemon kills itself inside the freeze.
            Phase::Commit => Some((Party::Daemon, "loop-image:commit", "kill".into())),
            _ => elsewhere(kill_pid("daemon")),
        })?,
        Fault::RequesterKill => at_event(kill_pid("requester")).or_else(|| match phase {
            Phase::Commit => elsewhere(kill_pid("requester")),
            // The requester kills itself.
            _ => elsewhere("kill".into()),
        })?,
        Fault::SnapshotStorageFull | Fault::RepositoryFull => return None,
    };
    Some((party, format!("{point}={action}")))
}

/// How the faulted backup or restore ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// It succeeded in full: the fault was absorbed.
    Succeeded,
    /// It ran to the end with the script writer's part left out: a backup with that component
    /// not saved (BK-SNAP-7, BK-COPY-4), or a restore with a component not restored or a writer
    /// failed; exit status 1 with the report.
    Partial,
    /// It failed with this VSS code; exit status 1.
    Failed(&'static str),
    /// The requester was killed.
    Killed,
}

/// A cell's prescribed outcome, asserted by the cell and rendered in the document.
#[derive(Debug, Clone, Copy)]
struct Expect {
    ends: Ends,
    /// Whether the repository holds a new backup afterwards.
    stored: bool,
    /// What the writers got and what the coordinator did, for the document.
    note: &'static str,
}

const fn ends(ends: Ends, stored: bool, note: &'static str) -> Expect {
    Expect { ends, stored, note }
}

/// Every applicable cell: its test name, phase, fault and prescribed outcome.
macro_rules! matrix {
    ($( $name:ident : $phase:ident x $fault:ident => $expect:expr ; )*) => {
        /// Every cell, in table order.
        fn cells() -> Vec<(&'static str, Phase, Fault, Expect)> {
            vec![$( (stringify!($name), Phase::$phase, Fault::$fault, $expect), )*]
        }
        $(
            #[test]
            fn $name() {
                run_cell(stringify!($name), Phase::$phase, Fault::$fault, $expect);
            }
        )*
    };
}

use Ends::{Failed, Killed, Partial, Succeeded};

matrix! {
    identify_writer_crash: Identify x WriterCrash => ends(Failed(""), false,
        "the writer dies inside Identify, so it is not among the writers that answered; its \
         component names nothing (BK-DISC-3) and the backup stops before PrepareForBackup; \
         nothing was frozen");
    identify_writer_hang: Identify x WriterHang => ends(Failed(""), false,
        "Identify times out (2 s) and the writer is left out of the metadata (BK-INIT-6); its \
         component names nothing and the backup stops before PrepareForBackup");
    identify_writer_error: Identify x WriterError => ends(Failed(""), false,
        "a failed Identify leaves the writer out of the metadata (BK-INIT-6); its component names \
         nothing and the backup stops before PrepareForBackup");
    identify_daemon_kill: Identify x DaemonKill => ends(Failed(""), false,
        "the requester reports the lost connection during GatherWriterMetadata; the writers' \
         streams end and they exit (restarted, as a supervisor would)");
    identify_requester_kill: Identify x RequesterKill => ends(Killed, false,
        "the daemon sees the stream end and releases the session; the writers got Identify only");

    prepare_backup_writer_crash: PrepareForBackup x WriterCrash => ends(Partial, true,
        "the writer is gone after PrepareForBackup: its component is not saved (exit 1), the \
         other writer's is");
    prepare_backup_writer_hang: PrepareForBackup x WriterHang => ends(Partial, true,
        "PrepareForBackup times out (2 s): FAILED_AT_PREPARE_BACKUP, no further event but \
         BackupShutdown; its component is not saved, the other writer's is");
    prepare_backup_writer_error: PrepareForBackup x WriterError => ends(Partial, true,
        "a veto (FAILED_AT_PREPARE_BACKUP, RETRYABLE): no further event but BackupShutdown; its \
         component is not saved, the other writer's is");
    prepare_backup_daemon_kill: PrepareForBackup x DaemonKill => ends(Failed(""), false,
        "the writers' SDK runs Abort on the lost stream; the requester reports the lost \
         connection");
    prepare_backup_requester_kill: PrepareForBackup x RequesterKill => ends(Killed, false,
        "the daemon releases the session: BackupShutdown without BackupComplete (BK-END-5, \
         BK-END-6)");

    prepare_snapshot_writer_crash: PrepareForSnapshot x WriterCrash => ends(Partial, true,
        "the writer is gone before Freeze; the set is made without it and its component is not \
         saved");
    prepare_snapshot_writer_hang: PrepareForSnapshot x WriterHang => ends(Partial, true,
        "PrepareForSnapshot times out (2 s): FAILED_AT_PREPARE_SNAPSHOT, no Abort (BK-SNAP-6) and \
         no Freeze; the set completes without it; BackupShutdown");
    prepare_snapshot_writer_error: PrepareForSnapshot x WriterError => ends(Partial, true,
        "FAILED_AT_PREPARE_SNAPSHOT, no Abort (BK-SNAP-6) and no Freeze; the set completes \
         without it; BackupShutdown");
    prepare_snapshot_provider_fails: PrepareForSnapshot x ProviderFails => ends(Failed("VSS_E_UNEXPECTED_PROVIDER_ERROR"), false,
        "btrfs EndPrepareSnapshots fails: the set fails before any writer freezes; every writer \
         gets Abort and BackupShutdown; the requester sends AbortBackup (BK-SNAP-9)");
    prepare_snapshot_provider_hangs: PrepareForSnapshot x ProviderHangs => ends(Failed("VSS_E_UNEXPECTED_PROVIDER_ERROR"), false,
        "btrfs EndPrepareSnapshots does not answer within providers.end_prepare_timeout_s (2 s): \
         as above");
    prepare_snapshot_daemon_kill: PrepareForSnapshot x DaemonKill => ends(Failed(""), false,
        "the writers' SDK runs Abort on the lost stream; the restarted daemon deletes the set's \
         PREPARED catalog entries");
    prepare_snapshot_requester_kill: PrepareForSnapshot x RequesterKill => ends(Killed, false,
        "the daemon drops the DoSnapshotSet call and releases the session: Abort and \
         BackupShutdown");

    freeze_writer_crash: Freeze x WriterCrash => ends(Partial, true,
        "the writer dies with its application stopped; the set completes without it; restarted, \
         it finds its freeze marker and runs its abort command, which resumes the application \
         (fixed: it stayed stopped)");
    freeze_writer_hang: Freeze x WriterHang => ends(Partial, true,
        "the writer's freeze window (3 s) runs out: it aborts itself (BK-SNAP-5) and resumes the \
         application; the set completes without its component");
    freeze_writer_error: Freeze x WriterError => ends(Partial, true,
        "FAILED_AT_FREEZE: it aborts itself (BK-SNAP-7); Abort runs twice, harmlessly (the \
         SDK's and the coordinator's, BK-ABORT-3); the set completes without its component");
    freeze_provider_fails: Freeze x ProviderFails => ends(Failed("VSS_E_UNEXPECTED_PROVIDER_ERROR"), false,
        "btrfs PreCommitSnapshots fails with the writers frozen: every writer gets Abort \
         (BK-SNAP-8), then BackupShutdown; AbortBackup, no BackupComplete");
    freeze_provider_hangs: Freeze x ProviderHangs => ends(Failed("VSS_E_FLUSH_WRITES_TIMEOUT"), false,
        "btrfs PreCommitSnapshots overruns the commit window (2 s); every writer gets Abort");
    freeze_daemon_kill: Freeze x DaemonKill => ends(Failed(""), false,
        "the writers' SDK aborts at once on the lost stream: the application resumes and the \
         cgroup thaws without waiting for the freeze window");
    freeze_requester_kill: Freeze x RequesterKill => ends(Killed, false,
        "the dropped DoSnapshotSet aborts the frozen writers; BackupShutdown on release");

    commit_writer_crash: Commit x WriterCrash => ends(Partial, true,
        "the writer dies frozen while the loop-image provider holds the xfs volume frozen; the \
         set completes without it; restarted, it resumes the application from its freeze marker \
         (fixed: it stayed stopped)");
    commit_provider_fails: Commit x ProviderFails => ends(Failed("VSS_E_UNEXPECTED_PROVIDER_ERROR"), false,
        "loop-image CommitSnapshots fails inside FIFREEZE: the guard thaws the volume, the btrfs \
         copy of the same set is deleted (no partial commit, BK-SNAP-8), every writer gets Abort");
    commit_provider_hangs: Commit x ProviderHangs => ends(Failed("VSS_E_HOLD_WRITES_TIMEOUT"), false,
        "loop-image CommitSnapshots hangs inside FIFREEZE: the commit window (2 s) fails the set \
         and AbortSnapshots thaws the volume at once (fixed: it stayed frozen until the \
         provider's own 10 s watchdog)");
    commit_daemon_kill: Commit x DaemonKill => ends(Failed(""), false,
        "the daemon dies with the xfs volume frozen (FIFREEZE outlives its process); the \
         writers' SDK aborts; the restarted daemon's loop-image recovery thaws the volume and \
         deletes the orphans (fixed: it stayed frozen)");
    commit_requester_kill: Commit x RequesterKill => ends(Killed, false,
        "the dropped DoSnapshotSet fails the set: Abort, AbortSnapshots, BackupShutdown; no copy \
         survives");
    commit_snapshot_storage_full: Commit x SnapshotStorageFull => ends(Failed("VSS_E_INSUFFICIENT_STORAGE"), false,
        "the xfs host holding the loop image is full for real: the clone cannot be created \
         (ENOSPC); the volume is thawed, every writer gets Abort; once space is freed the next \
         backup succeeds (BK-SNAP-11)");

    thaw_writer_crash: Thaw x WriterCrash => ends(Partial, true,
        "the writer dies in Thaw (its command still resumes the application, as a command of a \
         dead writer runs on); it is missing after the set, so its component is not saved");
    thaw_writer_hang: Thaw x WriterHang => ends(Partial, true,
        "Thaw times out (2 s): the coordinator's Abort cancels the hung command and the abort \
         command resumes the application; FAILED_AT_THAW, component not saved");
    thaw_writer_error: Thaw x WriterError => ends(Partial, true,
        "FAILED_AT_THAW: the writer aborts itself and the abort command resumes the application \
         (BK-SNAP-7); component not saved");
    thaw_provider_fails: Thaw x ProviderFails => ends(Failed("VSS_E_UNEXPECTED_PROVIDER_ERROR"), false,
        "btrfs PreFinalCommitSnapshots fails after Thaw: the set fails, every writer gets Abort \
         (none had handled PostSnapshot, BK-ABORT-4), the copies are deleted");
    thaw_provider_hangs: Thaw x ProviderHangs => ends(Failed("VSS_E_UNEXPECTED_PROVIDER_ERROR"), false,
        "btrfs PreFinalCommitSnapshots does not answer within providers.call_timeout_s (2 s): as \
         above");
    thaw_daemon_kill: Thaw x DaemonKill => ends(Failed(""), false,
        "the writers' SDK aborts on the lost stream; the restarted daemon deletes the set's \
         orphaned copies");
    thaw_requester_kill: Thaw x RequesterKill => ends(Killed, false,
        "the dropped DoSnapshotSet aborts the writers; the copies are deleted on release");

    post_snapshot_writer_crash: PostSnapshot x WriterCrash => ends(Partial, true,
        "the writer dies in PostSnapshot; the set is made; its component is not saved");
    post_snapshot_writer_hang: PostSnapshot x WriterHang => ends(Partial, true,
        "PostSnapshot times out (2 s): FAILED_AT_POST_SNAPSHOT, no Abort (BK-SNAP-6); the \
         requester leaves the component out");
    post_snapshot_writer_error: PostSnapshot x WriterError => ends(Partial, true,
        "FAILED_AT_POST_SNAPSHOT, no Abort (BK-SNAP-6); the requester leaves the component out");
    post_snapshot_provider_fails: PostSnapshot x ProviderFails => ends(Failed("VSS_E_UNEXPECTED_PROVIDER_ERROR"), false,
        "btrfs PostFinalCommitSnapshots fails: the set fails and its copies are deleted; writers \
         that handled PostSnapshot get no Abort (BK-ABORT-4), only BackupShutdown");
    post_snapshot_provider_hangs: PostSnapshot x ProviderHangs => ends(Failed("VSS_E_UNEXPECTED_PROVIDER_ERROR"), false,
        "btrfs PostFinalCommitSnapshots does not answer within 2 s: as above");
    post_snapshot_daemon_kill: PostSnapshot x DaemonKill => ends(Failed(""), false,
        "the writers' SDK aborts on the lost stream; the restarted daemon deletes the orphans");
    post_snapshot_requester_kill: PostSnapshot x RequesterKill => ends(Killed, false,
        "the daemon releases the session; the copies are deleted");

    copying_writer_crash: Copying x WriterCrash => ends(Succeeded, true,
        "the writer had thawed; its data is in the copy; gone, it misses BackupComplete, which \
         only means it truncates no log");
    copying_daemon_kill: Copying x DaemonKill => ends(Failed(""), true,
        "the copy finishes and the repository commits it; SetBackupSucceeded then finds the \
         daemon gone: the requester says the backup is stored but the writers were not told \
         (no BackupComplete, BK-END-2); the restarted daemon deletes the copies");
    copying_requester_kill: Copying x RequesterKill => ends(Killed, false,
        "killed inside the copy: nothing is committed (restic check sees at most unreferenced \
         packs); the copies' mounts die with the requester's mount namespace; the daemon \
         releases the session");
    copying_repository_full: Copying x RepositoryFull => ends(Failed(""), false,
        "the repository's ext4 volume is full for real (ENOSPC): the copy fails, AbortBackup, \
         no BackupComplete (no log truncated); restic check passes; once space is freed the \
         next backup succeeds");

    backup_complete_writer_crash: BackupComplete x WriterCrash => ends(Succeeded, true,
        "the backup is stored before BackupComplete; the writer dies in it; nothing else is \
         affected");
    backup_complete_writer_hang: BackupComplete x WriterHang => ends(Succeeded, true,
        "BackupComplete times out (2 s): FAILED_AT_BACKUP_COMPLETE in the writers' status; the \
         backup is stored");
    backup_complete_writer_error: BackupComplete x WriterError => ends(Succeeded, true,
        "FAILED_AT_BACKUP_COMPLETE in the writers' status; the backup is stored");
    backup_complete_daemon_kill: BackupComplete x DaemonKill => ends(Failed(""), true,
        "the backup is stored; the requester says so and that BackupComplete did not complete; \
         the restarted daemon deletes the copies");
    backup_complete_requester_kill: BackupComplete x RequesterKill => ends(Killed, true,
        "the backup is stored; the daemon releases the session and deletes the copies");

    release_writer_crash: Release x WriterCrash => ends(Succeeded, true,
        "the writer dies in BackupShutdown; the copies are deleted");
    release_writer_hang: Release x WriterHang => ends(Succeeded, true,
        "BackupShutdown times out (2 s): FAILED_AT_BACKUPSHUTDOWN; the copies are deleted");
    release_writer_error: Release x WriterError => ends(Succeeded, true,
        "FAILED_AT_BACKUPSHUTDOWN; the copies are deleted");
    release_provider_fails: Release x ProviderFails => ends(Succeeded, true,
        "btrfs DeleteSnapshots of the auto-release copy fails at release; the coordinator \
         deletes it again in the background (fixed: it stayed until a daemon restart)");
    release_provider_hangs: Release x ProviderHangs => ends(Succeeded, true,
        "btrfs DeleteSnapshots hangs at release (2 s limit); deleted again in the background \
         (fixed: it stayed until a daemon restart)");
    release_daemon_kill: Release x DaemonKill => ends(Failed(""), true,
        "the backup is stored and the writers heard BackupComplete; the requester says so and \
         that the release failed; the restarted daemon deletes the copies");
    release_requester_kill: Release x RequesterKill => ends(Killed, true,
        "the backup is stored; the daemon releases the session as for a normal release");

    pre_restore_writer_crash: PreRestore x WriterCrash => ends(Partial, false,
        "the writer's connection is lost in PreRestore (FAILED_AT_PRE_RESTORE): nothing of its \
         component is restored (NONE), as for a veto; restarted, the writer takes the next \
         restore");
    pre_restore_writer_hang: PreRestore x WriterHang => ends(Partial, false,
        "PreRestore times out (2 s): FAILED_AT_PRE_RESTORE, nothing of its component is \
         restored (NONE), PostRestore still follows (BK-ABORT-5)");
    pre_restore_writer_error: PreRestore x WriterError => ends(Partial, false,
        "FAILED_AT_PRE_RESTORE: nothing of its component is restored (NONE), PostRestore still \
         follows (BK-ABORT-5)");
    pre_restore_daemon_kill: PreRestore x DaemonKill => ends(Failed(""), false,
        "the requester reports the lost connection before writing a file; the live data is as \
         it was");
    pre_restore_requester_kill: PreRestore x RequesterKill => ends(Killed, false,
        "the daemon releases the restore session; no file was written");

    restoring_writer_crash: Restoring x WriterCrash => ends(Partial, false,
        "the files are restored; the writer is gone for PostRestore, so the restore reports \
         it");
    restoring_daemon_kill: Restoring x DaemonKill => ends(Failed(""), false,
        "the files are written, then SetFileRestoreStatus finds the daemon gone; PostRestore \
         never runs; restoring again puts everything right");
    restoring_requester_kill: Restoring x RequesterKill => ends(Killed, false,
        "killed before the first file: the daemon releases the session without PostRestore; \
         restoring again puts everything right");

    post_restore_writer_crash: PostRestore x WriterCrash => ends(Partial, false,
        "the files are restored; the writer dies in PostRestore and the restore reports it");
    post_restore_writer_hang: PostRestore x WriterHang => ends(Partial, false,
        "PostRestore times out (2 s): FAILED_AT_POST_RESTORE; the files are restored");
    post_restore_writer_error: PostRestore x WriterError => ends(Partial, false,
        "FAILED_AT_POST_RESTORE; the files are restored");
    post_restore_daemon_kill: PostRestore x DaemonKill => ends(Failed(""), false,
        "the files are restored; the requester reports the lost connection in PostRestore");
    post_restore_requester_kill: PostRestore x RequesterKill => ends(Killed, false,
        "the files are restored; the daemon releases the session");
}

/// The pairs without a cell, and why.
fn not_applicable(phase: Phase, fault: Fault) -> Option<&'static str> {
    use Fault::*;
    use Phase::*;
    Some(match (phase, fault) {
        (Commit | Copying | Restoring, WriterHang | WriterError) => {
            "no writer event in this phase: a writer that stops answering or fails now does so at \
             its next event, which is that event's cell"
        }
        (Identify | PrepareForBackup | BackupComplete, ProviderFails | ProviderHangs) => {
            "no provider call in this phase (AddToSnapshotSet's BeginPrepareSnapshot comes before \
             PrepareForBackup; BackupComplete involves writers only)"
        }
        (Copying, ProviderFails | ProviderHangs) => {
            "no provider call while copying: the requester reads the finished copies"
        }
        (PreRestore | Restoring | PostRestore, ProviderFails | ProviderHangs) => {
            "a restore involves no provider"
        }
        (Commit, SnapshotStorageFull) | (Copying, RepositoryFull) => return None,
        (_, SnapshotStorageFull) => {
            "shadow copy storage is taken only when the copy is cut, in CommitSnapshots (the \
             loop-image clone, the btrfs snapshot)"
        }
        (_, RepositoryFull) => {
            "the repository is written only while copying; a restore only reads it"
        }
        _ => return None,
    })
}

/// One cell, end to end (module documentation).
fn run_cell(name: &str, phase: Phase, fault: Fault, expect: Expect) {
    let rule = rule(phase, fault);
    let mut rules = Rules::default();
    if let Some((party, rule)) = &rule {
        let slot = match party {
            Party::Daemon => &mut rules.daemon,
            Party::Writer => &mut rules.writer,
            Party::Requester => &mut rules.requester,
        };
        *slot = Some(rule.clone());
    }
    let mut rig = Rig::new(name, rules, fault == Fault::RepositoryFull);

    let baseline = rig.backup_ok();
    rig.recover();
    let clean = rig.leaks();
    assert!(clean.is_empty(), "the first backup left {clean:?}");
    let expected = rig.data();
    // The repository holds exactly the first backup (listing it again would cost a key
    // derivation).
    let before = vec![baseline.clone()];

    match fault {
        Fault::SnapshotStorageFull => rig.fill_snapshot_storage(),
        Fault::RepositoryFull => rig.add_too_much_data(),
        _ => rig.arm(),
    }
    if phase.is_restore() {
        rig.damage_data();
    }
    let journal_before = rig.journal().len();
    let run = if phase.is_restore() {
        rig.restore(&baseline, rig.requester_rules())
    } else {
        rig.backup(rig.requester_rules())
    };
    rig.recover();
    match fault {
        Fault::SnapshotStorageFull => rig.free_snapshot_storage(),
        Fault::RepositoryFull => rig.remove_too_much_data(),
        _ => assert!(
            rig.fired(),
            "the fault {rule:?} never fired: {run:?}\n{}",
            rig.log("daemon")
        ),
    }
    let events: Vec<String> = rig.journal()[journal_before..].to_vec();
    let after = rig.backups();
    let stored = ids(&after).iter().any(|id| !before.contains(id));
    let ends = classify(&run, phase.is_restore());
    let components: Vec<String> = run
        .json()
        .and_then(|report| report["components"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let writer = c["writer"].as_str().or(c["writer_name"].as_str());
            let outcome = c.get("succeeded").unwrap_or(&c["status"]);
            let why = c["failure"].as_str().or(c["message"].as_str());
            format!("{}: {outcome} {}", writer.unwrap_or("?"), why.unwrap_or(""))
        })
        .collect();
    eprintln!(
        "cell {name}: {} x {}: ended {ends:?}, stored {stored}, code {:?}\n  script writer \
         events: {events:?}\n  components: {components:?}\n  stderr: {}",
        phase.label(),
        fault.label(),
        run.code(),
        run.stderr.lines().last().unwrap_or_default()
    );

    if ends == Partial && !phase.is_restore() {
        // Exactly the faulted writer's component is not saved.
        let report = run.json().unwrap_or_default();
        for component in report["components"].as_array().into_iter().flatten() {
            let faulted = component["writer"] == rig.script_name().as_str();
            assert_eq!(
                component["succeeded"], !faulted,
                "cell {name}: {component} (only the faulted writer's component is not saved)"
            );
        }
    }

    // Nothing left behind.
    let leaks = rig.leaks();
    assert!(
        leaks.is_empty(),
        "cell {name} left {leaks:#?}\n{}\n{}",
        rig.log("daemon"),
        rig.log("script.log")
    );

    // No data lost.
    for id in &before {
        assert!(
            ids(&after).contains(id),
            "backup {id} is gone from the repository"
        );
    }
    let check =
        shadowcopy_test_support::restic::restic_unchecked(&rig.repo, rig::PASSWORD, &["check"]);
    assert!(
        check.status.success(),
        "restic check failed after cell {name}: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_restores(&rig, &baseline, &expected);
    let stored_sets: BTreeSet<String> = after
        .iter()
        .filter_map(|b| b["set_id"].as_str().map(str::to_owned))
        .collect();
    for line in rig.journal() {
        if let Some(set) = line.strip_prefix("backup_complete ") {
            assert!(
                stored_sets.contains(set.trim()),
                "the writer heard BackupComplete for set {set}, which no stored backup holds"
            );
        }
    }

    // The outcome.
    assert_eq!(
        (ends, stored),
        (expect.ends, expect.stored),
        "cell {name}: {} x {} ended otherwise than prescribed: {run:?}\n{}",
        phase.label(),
        fault.label(),
        rig.log("daemon")
    );

    // Recovery: the next restore and the next backup succeed and leave nothing.
    if phase.is_restore() {
        let again = rig.restore(&baseline, None);
        assert!(
            again.status.success(),
            "the restore after the fault failed: {again:?}"
        );
        assert!(
            rig.data() == expected,
            "the restore after the fault did not put the data back as it was backed up"
        );
    }
    rig.backup_ok();
    rig.recover();
    let leaks = rig.leaks();
    assert!(
        leaks.is_empty(),
        "the backup after cell {name} left {leaks:#?}"
    );
}

/// The backup ids of a listing.
fn ids(backups: &[serde_json::Value]) -> Vec<String> {
    backups
        .iter()
        .filter_map(|b| b["backup_id"].as_str().map(str::to_owned))
        .collect()
}

/// How a backup or restore command ended.
fn classify(run: &Run, restore: bool) -> Ends {
    if run.killed() {
        return Killed;
    }
    if run.status.success() {
        return Succeeded;
    }
    let report = run.json();
    let ran_to_the_end = match report {
        Some(report) if restore => report["components"].is_array(),
        Some(report) => report["backup_id"].is_string(),
        None => false,
    };
    if ran_to_the_end {
        return Partial;
    }
    // "" when the message names no VSS code (a lost connection, a usage error).
    Failed(run.code().map_or("", leak))
}

/// A code seen at run time as the `&'static str` the table holds (a test process leaks a few).
fn leak(code: String) -> &'static str {
    Box::leak(code.into_boxed_str())
}

/// The baseline backup restores privately, byte for byte.
fn assert_restores(
    rig: &Rig,
    backup: &str,
    expected: &std::collections::BTreeMap<
        std::path::PathBuf,
        shadowcopy_test_support::tree::TreeEntry,
    >,
) {
    let target = rig.dir.join(&format!("restore-{}", rand_suffix()));
    let repo = rig.repo.display().to_string();
    let run = rig.offline(&[
        "restore",
        "--json",
        "--repo",
        &repo,
        "--backup",
        backup,
        "--to",
        target.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "backup {backup} does not restore: {run:?}"
    );
    let restored = target.join(rig.data_dir().strip_prefix("/").unwrap_or(Path::new("")));
    assert!(
        read_tree(&restored, &[]) == *expected,
        "backup {backup} does not restore byte for byte"
    );
    let _ = std::fs::remove_dir_all(&target);
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
}

/// Every (phase, fault) pair is a cell or has a reason to be none, never both; every cell has a
/// rule (or fills a volume).
#[test]
fn every_pair_is_a_cell_or_not_applicable() {
    let cells = cells();
    let mut problems = Vec::new();
    for phase in PHASES {
        for fault in FAULTS {
            let cell = cells.iter().find(|c| c.1 == phase && c.2 == fault);
            match (cell, not_applicable(phase, fault)) {
                (Some(_), Some(_)) => problems.push(format!("{phase:?} x {fault:?} is both")),
                (None, None) => problems.push(format!("{phase:?} x {fault:?} is neither")),
                _ => {}
            }
            if cell.is_some()
                && rule(phase, fault).is_none()
                && !matches!(fault, Fault::SnapshotStorageFull | Fault::RepositoryFull)
            {
                problems.push(format!("{phase:?} x {fault:?} has no rule"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The short text of an outcome in the grid.
fn short(expect: &Expect, restore: bool) -> String {
    let stored = if expect.stored { ", stored" } else { "" };
    match expect.ends {
        Succeeded if restore => "restored".into(),
        Succeeded => "saved".into(),
        Partial if restore => "partly restored".into(),
        Partial => "saved without it".into(),
        Failed("") => format!("fails{stored}"),
        Failed(code) => format!("{}{stored}", code.trim_start_matches("VSS_E_")),
        Killed => format!("killed{stored}"),
    }
}

/// The outcome in words, for the list of cells.
fn long(expect: &Expect, restore: bool) -> String {
    let what = if restore { "the restore" } else { "the backup" };
    let ends = match expect.ends {
        Succeeded => format!("{what} succeeds (exit 0)"),
        Partial if restore => {
            "the restore runs to the end and reports what it could not do (exit 1)".into()
        }
        Partial => "the backup is stored without the faulted writer's component, which is \
                    reported as not saved (exit 1)"
            .into(),
        Failed("") => format!("{what} fails (exit 1)"),
        Failed(code) => format!("{what} fails with {code} (exit 1)"),
        Killed => "the requester is killed".into(),
    };
    let stored = match (restore, expect.stored, expect.ends) {
        (true, _, _) | (false, true, Succeeded | Partial) => String::new(),
        (false, true, _) => "; the backup is in the repository".into(),
        (false, false, _) => "; nothing new is in the repository".into(),
    };
    format!("{ends}{stored}")
}

/// The generated part of `docs/RELIABILITY.md` about the matrix.
fn render_matrix() -> String {
    let cells = cells();
    let mut out = String::new();
    let not_applicable_count = PHASES
        .iter()
        .flat_map(|p| FAULTS.iter().map(move |f| (*p, *f)))
        .filter(|(p, f)| not_applicable(*p, *f).is_some())
        .count();
    let _ = writeln!(
        out,
        "Cases run: **{}** (every applicable cell, each a test); not applicable: {}.  \n\
         Resources leaked: **0**. Data lost: **0**. Every cell fails when it finds a frozen file \
         system, cgroup or application, a shadow copy listed or on disk, a stray mount or loop \
         device (resources), or a backup made before the fault that is gone, does not restore \
         byte for byte, or a repository that `restic check` rejects (data); so a passing run \
         has found none.\n",
        cells.len(),
        not_applicable_count
    );
    let _ = write!(out, "| Phase |");
    for fault in FAULTS {
        let _ = write!(out, " {} |", fault.label());
    }
    let _ = write!(out, "\n|---|");
    for _ in FAULTS {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for phase in PHASES {
        let _ = write!(out, "| {} |", phase.label());
        for fault in FAULTS {
            let text = match cells.iter().find(|c| c.1 == phase && c.2 == fault) {
                Some(cell) => short(&cell.3, phase.is_restore()),
                None => "n/a".into(),
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out.push_str(
        "\nIn the grid, a code is the VSS result code without its `VSS_E_` prefix; \"fails\" is a \
         failure whose message names no code (a lost connection, a component that names \
         nothing); \"stored\" means the repository holds the backup all the same; \"saved \
         without it\" is a backup stored with the faulted writer's component reported as not \
         saved.\n\n### The cells\n\n",
    );
    for (name, phase, fault, expect) in &cells {
        let injected = match rule(*phase, *fault) {
            Some((party, rule)) => format!(
                "`{}` in the {}",
                rule.replace(CELL, "<cell>"),
                match party {
                    Party::Daemon => "daemon",
                    Party::Writer => "script writer's command",
                    Party::Requester => "requester",
                }
            ),
            None if *fault == Fault::SnapshotStorageFull => {
                "the loop image's host volume filled up".into()
            }
            None => "the repository's volume too small for the data".into(),
        };
        let _ = writeln!(
            out,
            "- **{} × {}** (`{name}`; {injected}): {}. {}.",
            phase.label(),
            fault.label(),
            long(expect, phase.is_restore()),
            expect.note.trim_end_matches('.')
        );
    }
    out.push_str("\n### Not applicable\n\n");
    let mut reasons: Vec<(&str, Vec<String>)> = Vec::new();
    for phase in PHASES {
        for fault in FAULTS {
            if let Some(reason) = not_applicable(phase, fault) {
                let pair = format!("{} × {}", phase.label(), fault.label());
                match reasons.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, pairs)) => pairs.push(pair),
                    None => reasons.push((reason, vec![pair])),
                }
            }
        }
    }
    for (reason, pairs) in reasons {
        let _ = writeln!(out, "- {}: {reason}.", pairs.join(", "));
    }
    out
}

/// The generated list of fault points.
fn render_points() -> String {
    let mut out = String::from("| Point | Where |\n|---|---|\n");
    for point in shadowcopy_faults::POINTS {
        let _ = writeln!(out, "| `{}` | {} |", point.name, point.place);
    }
    out
}

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`.
fn replace_block(document: &str, name: &str, body: &str) -> String {
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let from = document
        .find(&start)
        .unwrap_or_else(|| panic!("docs/RELIABILITY.md lacks the marker {start}"))
        + start.len();
    let to = document
        .find(&end)
        .unwrap_or_else(|| panic!("docs/RELIABILITY.md lacks the marker {end}"));
    format!("{}\n{}{}", &document[..from], body, &document[to..])
}

/// `docs/RELIABILITY.md` shows the points and the matrix as this file has them, so the document
/// says what CI asserts. `SHADOWCOPY_BLESS=1` rewrites the generated parts.
#[test]
fn reliability_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/RELIABILITY.md");
    let document = std::fs::read_to_string(&path).expect("docs/RELIABILITY.md exists");
    let current = replace_block(&document, "fault-points", &render_points());
    let current = replace_block(&current, "fault-matrix", &render_matrix());
    if std::env::var_os("SHADOWCOPY_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    assert!(
        current == document,
        "docs/RELIABILITY.md is stale: run `SHADOWCOPY_BLESS=1 cargo test -p shadowcopy-faults \
         --test matrix reliability_document_is_current` and commit the result"
    );
}
