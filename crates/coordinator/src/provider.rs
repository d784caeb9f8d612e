//! The `Provider` trait: how the coordinator drives a snapshot backend through one set (PROV-SEQ-1),
//! plus the records providers report and the error translation of PROV-R-3.
//!
//! The coordinator knows no concrete provider (architecture §7); btrfs, loop-image, reflink and
//! plug-in providers implement this trait in their own crates, [`crate::sim::SimProvider`] in tests.

use async_trait::async_trait;
use shadowcopy_metadata::codes::{self, ErrorCode};
use shadowcopy_metadata::enums::{
    ProviderType, SnapshotAttributes, SnapshotContext, SnapshotState,
};
use shadowcopy_metadata::ids::ProviderId;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId, VssTimestamp};

/// Who a provider is (SNAP-2: id, name, type, version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The provider's id.
    pub id: ProviderId,
    /// Its name, for listings and messages.
    pub name: String,
    /// Its version string.
    pub version: String,
    /// Hardware, software or system; decides the selection order of PROV-SEL-1.
    pub provider_type: ProviderType,
}

/// A provider's answer to "can you snapshot this volume in this context?" (SNAP-2, PROV-R-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSupport {
    /// The provider can make the shadow copy with the requested attributes.
    Supported,
    /// It cannot; `reason` says why and, where it can, what would work (architecture §3: "report
    /// the volume as unsupported with a message that says what would work").
    Unsupported {
        /// Why not, and what would work.
        reason: String,
    },
}

/// One shadow copy as a provider reports it (SNAP-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The shadow copy's id.
    pub snapshot_id: SnapshotId,
    /// The set it belongs to.
    pub set_id: SnapshotSetId,
    /// The original volume (its mount point).
    pub volume: String,
    /// Where the read-only copy can be read (the device object of BK-COPY-1); `None` until committed.
    pub snapshot_path: Option<String>,
    /// Where it is in the creation sequence (PROV-ST-1).
    pub state: SnapshotState,
    /// The context bits plus state bits (SNAP-1).
    pub attributes: SnapshotAttributes,
    /// When it was created.
    pub created: VssTimestamp,
    /// The provider that owns it.
    pub provider_id: ProviderId,
}

impl SnapshotRecord {
    /// Whether the shadow copy is deleted when its session is released (CTX-2).
    pub fn is_auto_release(&self) -> bool {
        !self
            .attributes
            .contains(SnapshotAttributes::NO_AUTO_RELEASE)
    }

    /// Whether a query in `context` lists this shadow copy (SNAP-2): ALL lists everything, any other
    /// context lists the shadow copies whose context bits are exactly its own.
    pub fn matches_context(&self, context: SnapshotContext) -> bool {
        if context == SnapshotContext::All {
            return true;
        }
        let context_bits = SnapshotAttributes::PERSISTENT
            | SnapshotAttributes::CLIENT_ACCESSIBLE
            | SnapshotAttributes::NO_AUTO_RELEASE
            | SnapshotAttributes::NO_WRITERS;
        self.attributes.bits() & context_bits.bits() == context.attributes().bits()
    }
}

/// What to delete (DEL-1: a snapshot or a whole set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteTarget {
    /// One shadow copy.
    Snapshot(SnapshotId),
    /// Every shadow copy of a set.
    Set(SnapshotSetId),
}

/// A provider call failed: the provider's result code and a message naming the volume or set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.name)]
pub struct ProviderError {
    /// The result code the provider returned.
    pub code: ErrorCode,
    /// What failed, naming the volume or set.
    pub message: String,
}

impl ProviderError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProviderError {
            code,
            message: message.into(),
        }
    }
}

/// The codes a provider may return (PROV-R-3). Anything else becomes VSS_E_UNEXPECTED_PROVIDER_ERROR.
pub const ALLOWED_PROVIDER_CODES: &[ErrorCode] = &[
    codes::E_OUTOFMEMORY,
    codes::E_INVALIDARG,
    codes::E_ACCESSDENIED,
    codes::VSS_E_BAD_STATE,
    codes::VSS_E_OBJECT_NOT_FOUND,
    codes::VSS_E_INSUFFICIENT_STORAGE,
    codes::VSS_E_VOLUME_NOT_SUPPORTED,
    codes::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER,
    codes::VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED,
    codes::VSS_E_PROVIDER_VETO,
    codes::VSS_E_CANNOT_REVERT_DISKID,
    // The code every other failure is translated to: a provider may say it directly.
    codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
];

/// The code a requester sees for a provider's code (PROV-R-3): allowed codes pass, others are
/// translated to VSS_E_UNEXPECTED_PROVIDER_ERROR (the caller logs the original).
pub fn translate_provider_code(code: ErrorCode) -> ErrorCode {
    if ALLOWED_PROVIDER_CODES.contains(&code) {
        code
    } else {
        codes::VSS_E_UNEXPECTED_PROVIDER_ERROR
    }
}

/// The codes RevertToSnapshot may return besides [`ALLOWED_PROVIDER_CODES`]: REV-1 names them as
/// what the requester sees, so they pass untranslated for that step only.
pub const REVERT_PROVIDER_CODES: &[ErrorCode] = &[
    codes::E_NOTIMPL,
    codes::VSS_E_VOLUME_IN_USE,
    codes::VSS_E_REVERT_IN_PROGRESS,
    codes::VSS_E_UNSUPPORTED_CONTEXT,
];

/// The code a requester sees for a provider's code at `step`: [`translate_provider_code`], except
/// that RevertToSnapshot also passes [`REVERT_PROVIDER_CODES`] (REV-1).
pub fn translate_provider_code_at(step: ProviderStep, code: ErrorCode) -> ErrorCode {
    if step == ProviderStep::RevertToSnapshot && REVERT_PROVIDER_CODES.contains(&code) {
        code
    } else {
        translate_provider_code(code)
    }
}

/// The steps of PROV-SEQ-1, for logs, messages and fault plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderStep {
    /// IsVolumeSupported.
    IsVolumeSupported,
    /// BeginPrepareSnapshot (once per volume, during AddToSnapshotSet).
    BeginPrepareSnapshot,
    /// EndPrepareSnapshots: the rendezvous at the start of DoSnapshotSet.
    EndPrepareSnapshots,
    /// PreCommitSnapshots (writers are frozen).
    PreCommitSnapshots,
    /// CommitSnapshots (inside the flush-and-hold window).
    CommitSnapshots,
    /// PostCommitSnapshots (writers still frozen).
    PostCommitSnapshots,
    /// PreFinalCommitSnapshots (after Thaw; the copy is still writable for auto-recovery).
    PreFinalCommitSnapshots,
    /// PostFinalCommitSnapshots (after PostSnapshot; the copy becomes read-only).
    PostFinalCommitSnapshots,
    /// AbortSnapshots.
    AbortSnapshots,
    /// DeleteSnapshots.
    DeleteSnapshots,
    /// Query.
    QuerySnapshots,
    /// RevertToSnapshot (REV-1).
    RevertToSnapshot,
}

impl ProviderStep {
    /// The VSS method name, as logs and messages show it.
    pub const fn name(self) -> &'static str {
        match self {
            ProviderStep::IsVolumeSupported => "IsVolumeSupported",
            ProviderStep::BeginPrepareSnapshot => "BeginPrepareSnapshot",
            ProviderStep::EndPrepareSnapshots => "EndPrepareSnapshots",
            ProviderStep::PreCommitSnapshots => "PreCommitSnapshots",
            ProviderStep::CommitSnapshots => "CommitSnapshots",
            ProviderStep::PostCommitSnapshots => "PostCommitSnapshots",
            ProviderStep::PreFinalCommitSnapshots => "PreFinalCommitSnapshots",
            ProviderStep::PostFinalCommitSnapshots => "PostFinalCommitSnapshots",
            ProviderStep::AbortSnapshots => "AbortSnapshots",
            ProviderStep::DeleteSnapshots => "DeleteSnapshots",
            ProviderStep::QuerySnapshots => "Query",
            ProviderStep::RevertToSnapshot => "RevertToSnapshot",
        }
    }
}

impl std::fmt::Display for ProviderStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A snapshot backend, called only by the coordinator, in the order of PROV-SEQ-1.
///
/// For one set the coordinator calls `is_volume_supported` and `begin_prepare_snapshot` once per
/// volume during AddToSnapshotSet, then the set-level steps once each, in order, during
/// DoSnapshotSet. On failure after `end_prepare_snapshots` was called it calls `abort_snapshots`
/// (PROV-SEQ-2); a set abandoned before that is never mentioned again, so `begin_prepare_snapshot`
/// with a new set id must discard stale preparation. A call that takes too long is cancelled by
/// dropping its future.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider's identity.
    fn info(&self) -> ProviderInfo;

    /// Whether the provider can snapshot `volume` with the attributes of `context` (PROV-R-1).
    async fn is_volume_supported(
        &self,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<VolumeSupport, ProviderError>;

    /// Starts preparing the shadow copy `snapshot` of `volume` for `set`; returns quickly (PROV-SEQ-1 step 1).
    async fn begin_prepare_snapshot(
        &self,
        set: SnapshotSetId,
        snapshot: SnapshotId,
        volume: &str,
        context: SnapshotContext,
    ) -> Result<(), ProviderError>;

    /// Waits for the preparation to finish and does the time-critical work (step 2).
    async fn end_prepare_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError>;

    /// Gets ready to commit; writers are frozen (step 4).
    async fn pre_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError>;

    /// Cuts the shadow copies; must be quick, no synchronous I/O to the set's volumes (step 6, PROV-T-1).
    async fn commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError>;

    /// Short work after commit; writers are still frozen (step 8).
    async fn post_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError>;

    /// After Thaw: the copies must be writable for auto-recovery (step 10).
    async fn pre_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError>;

    /// After PostSnapshot: make the copies read-only as appropriate (step 12).
    async fn post_final_commit_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError>;

    /// Drops every shadow copy of the set that is not yet fully created (PROV-SEQ-1 "on failure").
    async fn abort_snapshots(&self, set: SnapshotSetId) -> Result<(), ProviderError>;

    /// Deletes shadow copies; returns how many were deleted (DEL-1).
    async fn delete_snapshots(&self, target: DeleteTarget) -> Result<usize, ProviderError>;

    /// Every shadow copy the provider holds (SNAP-2).
    async fn query_snapshots(&self) -> Result<Vec<SnapshotRecord>, ProviderError>;

    /// Rolls the volume of `snapshot` back to it (REV-1). The default says the provider cannot
    /// (E_NOTIMPL). The coordinator has checked that the copy is persistent and that no other
    /// revert of the volume runs; it calls this without a time limit, because a revert cannot be
    /// cancelled halfway (REV-1). `force_dismount` lets the provider go ahead while other
    /// processes use the volume, where it would otherwise refuse with VSS_E_VOLUME_IN_USE.
    async fn revert_to_snapshot(
        &self,
        snapshot: SnapshotId,
        force_dismount: bool,
    ) -> Result<(), ProviderError> {
        let _ = force_dismount;
        Err(ProviderError::new(
            codes::E_NOTIMPL,
            format!(
                "provider {} cannot revert a volume to a shadow copy (asked for {snapshot});                  restore the files from the shadow copy instead",
                self.info().name
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROV-R-3: allowed codes pass through, anything else is translated.
    #[test]
    fn provider_codes_are_translated() {
        assert_eq!(
            translate_provider_code(codes::VSS_E_PROVIDER_VETO),
            codes::VSS_E_PROVIDER_VETO
        );
        assert_eq!(
            translate_provider_code(codes::VSS_E_UNEXPECTED),
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR
        );
        assert_eq!(
            translate_provider_code(codes::VSS_E_WRITERERROR_TIMEOUT),
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR
        );
    }

    /// REV-1: the revert codes pass at RevertToSnapshot only.
    #[test]
    fn revert_codes_pass_only_for_revert() {
        for code in REVERT_PROVIDER_CODES {
            assert_eq!(
                translate_provider_code_at(ProviderStep::RevertToSnapshot, *code),
                *code
            );
            assert_eq!(
                translate_provider_code_at(ProviderStep::CommitSnapshots, *code),
                codes::VSS_E_UNEXPECTED_PROVIDER_ERROR
            );
        }
        assert_eq!(
            translate_provider_code_at(ProviderStep::RevertToSnapshot, codes::VSS_E_UNEXPECTED),
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR
        );
    }

    /// SNAP-2: queries filter by the context bits.
    #[test]
    fn records_match_their_context() {
        let record = SnapshotRecord {
            snapshot_id: SnapshotId::new_random(),
            set_id: SnapshotSetId::new_random(),
            volume: "/srv".into(),
            snapshot_path: None,
            state: SnapshotState::Created,
            attributes: SnapshotContext::AppRollback.attributes() | SnapshotAttributes::PLEX,
            created: VssTimestamp::default(),
            provider_id: ProviderId::new_random(),
        };
        assert!(record.matches_context(SnapshotContext::AppRollback));
        assert!(record.matches_context(SnapshotContext::All));
        assert!(!record.matches_context(SnapshotContext::Backup));
        assert!(!record.is_auto_release());
    }
}
