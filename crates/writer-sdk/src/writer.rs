//! The [`Writer`] trait: one handler per VSS writer event, with the defaults of the spec.

use std::future::Future;

use shadowcopy_metadata::WriterMetadata;
use shadowcopy_metadata::bcd::WriterComponents;

use crate::context::EventContext;
use crate::failure::{HandlerResult, WriterFailure};

/// An application that owns data and makes it consistent when asked (ROLE-1).
///
/// Implement [`metadata`](Writer::metadata) and the handlers your application needs, then hand the
/// writer to [`run`](crate::run) or [`spawn`](crate::spawn). Handlers are written as `async fn` in
/// the `impl`; their futures must be `Send`, because the SDK runs each on a Tokio task so that the
/// freeze timer and the watch on the coordinator keep working while a handler runs.
///
/// How handlers are called:
/// - One at a time, in the order the coordinator sent the events (ROLE-5). The exception is
///   `on_abort`, which may run while a handler of another session, or an Identify, is still
///   running: Abort can arrive at any time (writer.proto `AbortEvent`).
/// - An Abort of a session cancels that session's backup handler (PrepareForBackup to
///   PostSnapshot) at its next `.await`, and `on_abort` runs once it has stopped; the cancelled
///   event is answered with a RETRYABLE failure. So `on_abort` must undo whatever such a handler
///   may have done half-way, and it must tolerate being called again (BK-ABORT-3).
/// - A handler that panics does not bring the writer down: the panic is caught and the event is
///   answered with VSS_E_WRITERERROR_NONRETRYABLE (ERR-1: never let a panic escape a handler).
/// - A handler must not block its thread for long: do blocking I/O with
///   `tokio::task::spawn_blocking`, and run the writer on a multi-threaded runtime.
///
/// Component records: the handlers that may change them receive this writer's part of the BCD
/// (BCD-8). Edit a record with `components.edit(Party::Writer, ctx.phase(), logical_path,
/// name)?.set_backup_stamp(...)?`; the metadata crate refuses edits outside the writer windows of
/// BCD-7 and fields the requester owns (BCD-6), and `?` turns the refusal into a NONRETRYABLE
/// failure. The SDK sends the changed records back with the event's answer.
pub trait Writer: Send + Sync + 'static {
    /// The Writer Metadata Document: identity, restore method, components and file sets (§6).
    ///
    /// Used for registration and, by default, for Identify. It must be built by the same
    /// deterministic algorithm every time and must not change any state, because Identify may
    /// arrive at any time from any requester (ROLE-6). The identity's instance id is assigned by the
    /// coordinator and may be left nil.
    fn metadata(&self) -> WriterMetadata;

    /// Identify (ROLE-6, WMD-1): returns the WMD. The default returns
    /// [`metadata`](Writer::metadata). Must not change any operation state; a failure recorded
    /// with [`EventContext::record_failure`] is dropped here (ERR-1).
    fn on_identify(
        &self,
        ctx: &EventContext,
    ) -> impl Future<Output = Result<WriterMetadata, WriterFailure>> + Send {
        let _ = ctx;
        async move { Ok(self.metadata()) }
    }

    /// PrepareForBackup (BK-PREP-3): read the backup state and options, and set backup stamps,
    /// private backup metadata, partial and differenced files in the records (BCD-6). Succeeds by
    /// default.
    fn on_prepare_backup(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (ctx, components);
        async { Ok(()) }
    }

    /// PrepareForSnapshot (BK-SNAP-3): the heavy preparation: drain queues, create temporary
    /// files, pause background work; check with [`EventContext::is_path_affected`] that the set
    /// holds your data.
    ///
    /// VSS gives this handler no default; real writers implement it. The default here succeeds
    /// and does nothing, which is right only for a writer that has nothing to prepare.
    fn on_prepare_snapshot(
        &self,
        ctx: &EventContext,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Freeze (BK-SNAP-3, BK-SNAP-4): hold all writes to your data and return at once. Only short
    /// checks belong here; it is the last point to veto.
    ///
    /// From a successful Freeze on, the SDK runs a timer (the smaller of
    /// [`WriterOptions::freeze_timeout`](crate::WriterOptions::freeze_timeout) and the event's
    /// deadline). If neither Thaw nor Abort has arrived when it fires, the SDK calls `on_abort`
    /// itself and answers the Thaw with VSS_E_WRITERERROR_TIMEOUT (BK-SNAP-5). If the coordinator
    /// goes away while the writer is frozen, `on_abort` runs at once. If this handler fails, the
    /// SDK calls `on_abort` before it answers (BK-SNAP-7).
    ///
    /// VSS gives this handler no default; real writers implement it.
    fn on_freeze(&self, ctx: &EventContext) -> impl Future<Output = HandlerResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Thaw (BK-SNAP-3): resume normal I/O. Temporary files stay until PostSnapshot. If this
    /// handler fails, the SDK calls `on_abort` before it answers (BK-SNAP-7). It is not called
    /// when the freeze timer already aborted the writer.
    ///
    /// VSS gives this handler no default; real writers implement it.
    fn on_thaw(&self, ctx: &EventContext) -> impl Future<Output = HandlerResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// PostSnapshot (BK-SNAP-2 step 12): the shadow copies exist ([`EventContext::snapshots`]);
    /// run auto-recovery in them while they are writable, remove temporary files, set the backup
    /// stamp (INC-3). A failure here does not abort the backup (BK-SNAP-6). After it, no Abort
    /// comes for this session (BK-ABORT-4). Succeeds by default.
    fn on_post_snapshot(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (ctx, components);
        async { Ok(()) }
    }

    /// Abort (BK-ABORT-3, BK-SNAP-8): put the writer back into normal operation: thaw if frozen,
    /// resume paused work, remove temporary files.
    ///
    /// It must tolerate repeated calls and calls when nothing is frozen: the coordinator may send
    /// several Aborts, and the SDK calls it itself when the freeze timer fires, when Freeze or Thaw
    /// failed, and when the coordinator goes away ([`EventContext::abort_cause`]).
    ///
    /// VSS gives this handler no default; every writer that holds anything during Freeze must
    /// implement it. The default succeeds and does nothing.
    fn on_abort(&self, ctx: &EventContext) -> impl Future<Output = HandlerResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// BackupComplete (BK-END-1): the backup is secured; read each component's backup result and
    /// truncate logs if you wish. The records are read-only now (BCD-7). Succeeds by default.
    fn on_backup_complete(
        &self,
        ctx: &EventContext,
        components: &WriterComponents,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (ctx, components);
        async { Ok(()) }
    }

    /// BackupShutdown (BK-END-4, BK-END-5): the requester released its session. If
    /// [`EventContext::backup_completed`] is false the backup failed: clean up and do not truncate
    /// logs. The set id may belong to a set this writer never froze. Succeeds by default.
    fn on_backup_shutdown(&self, ctx: &EventContext) -> impl Future<Output = HandlerResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// PreRestore (RST-PREP-6): prepare for the restore of the selected components; the writer
    /// may set restore targets, directed targets and restore metadata. Succeeds by default.
    fn on_pre_restore(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (ctx, components);
        async { Ok(()) }
    }

    /// PostRestore (RST-END-1): the files are back; read the restore status and targets used, run
    /// recovery unless additional restores follow, set the post-restore failure message. Succeeds
    /// by default. Restores cannot be aborted (BK-ABORT-5), so this handler is never cancelled.
    fn on_post_restore(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (ctx, components);
        async { Ok(()) }
    }
}
