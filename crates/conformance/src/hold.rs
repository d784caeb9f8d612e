//! `hold-session`: a backup of every registered writer driven up to and including DoSnapshotSet and
//! then held open, for tests that kill the requester (TS-15, BK-END-6): the daemon must notice the
//! lost stream, send BackupShutdown with the set id and delete the auto-release shadow copies.

use serde::Serialize;
use shadowcopy_metadata::bcd::BackupState;
use shadowcopy_metadata::enums::{SnapshotAttributes, SnapshotContext};
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};
use shadowcopy_requester::{BackupSession, Client, RequesterError};

/// The context of the held set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HoldContext {
    /// BACKUP: auto-release shadow copies, deleted when the session ends (CTX-1).
    #[default]
    Backup,
    /// APP_ROLLBACK: persistent shadow copies that survive the session (CTX-1, CTX-2).
    AppRollback,
}

impl HoldContext {
    /// The VSS context.
    pub fn context(self) -> SnapshotContext {
        match self {
            HoldContext::Backup => SnapshotContext::Backup,
            HoldContext::AppRollback => SnapshotContext::AppRollback,
        }
    }
}

/// What `hold-session` prints, as one JSON line, once DoSnapshotSet has succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldSet {
    /// The set's id.
    pub set_id: SnapshotSetId,
    /// The id of each volume's shadow copy, in the order the volumes were added.
    pub snapshot_ids: Vec<SnapshotId>,
}

/// A session held after DoSnapshotSet. Keep it alive: dropping it releases the session.
#[derive(Debug)]
pub struct HeldSession {
    /// The connection.
    pub client: Client,
    /// The session, after DoSnapshotSet.
    pub session: BackupSession,
    /// The set and its shadow copies.
    pub set: HeldSet,
}

/// Runs a volume-mode backup of every registered writer (SEL-6, BK-DISC-5: every writer that
/// answers Identify takes part) on `volumes`, in `context`, up to and including DoSnapshotSet,
/// and returns the open session. Registers no writer of its own.
pub async fn hold_session(
    socket: &std::path::Path,
    volumes: &[String],
    context: HoldContext,
) -> Result<HeldSession, RequesterError> {
    let client = crate::connect(socket).await?;
    let mut session = client.backup_session().await?;
    session.initialize_for_backup(None).await?;
    if context != HoldContext::Backup {
        session
            .set_context(context.context(), SnapshotAttributes::empty())
            .await?;
    }
    session
        .set_backup_state(BackupState {
            component_mode: false,
            ..BackupState::default()
        })
        .await?;
    session.gather_writer_metadata().await?;
    let set_id = session.start_snapshot_set().await?;
    let mut snapshot_ids = Vec::new();
    for volume in volumes {
        snapshot_ids.push(session.add_to_snapshot_set(volume, None).await?);
    }
    session.prepare_for_backup().await?;
    session.do_snapshot_set().await?;
    Ok(HeldSession {
        client,
        session,
        set: HeldSet {
            set_id,
            snapshot_ids,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_line_has_the_documented_fields() {
        let set = HeldSet {
            set_id: SnapshotSetId::nil(),
            snapshot_ids: vec![SnapshotId::nil()],
        };
        let json: serde_json::Value = serde_json::to_value(&set).unwrap();
        assert_eq!(json["set_id"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(json["snapshot_ids"].as_array().unwrap().len(), 1);
    }
}
