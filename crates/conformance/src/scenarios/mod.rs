//! The built-in scenarios of `shadowcopy-conformance run`: the test scenarios of spec §22 that need
//! no real storage, run against a live `shadowcopyd` whose configuration loads the simulated
//! providers (`[providers] simulated = true`).
//!
//! Every scenario registers its own scripted writers (TOOL-6's role, see `writer.rs`), drives one
//! or more sessions through the requester library (TOOL-5's role) and checks what the writers saw,
//! what the daemon answered and which shadow copies the Admin service lists. Scenarios run one
//! after another, because only one snapshot set can be in creation per host (LIMIT-4).

mod backup;
mod external;
mod failures;
mod providers;
mod restore;
mod sequencing;

use futures::future::BoxFuture;
use shadowcopy_metadata::SnapshotSetId;

use crate::harness::{Check, Context, Harness, W};

/// A scenario's body.
pub(crate) type Run = for<'a> fn(&'a mut Harness) -> BoxFuture<'a, Check>;

/// One scenario: its label, what it does, the requirement IDs it checks, and its body.
pub(crate) struct Scenario {
    /// The TS number of §22 (with a letter for variants), or the requirement ID when §22 has no
    /// scenario for the check.
    pub(crate) id: &'static str,
    /// What it does.
    pub(crate) name: &'static str,
    /// The requirement IDs it checks.
    pub(crate) requirements: &'static [&'static str],
    /// The body.
    pub(crate) run: Run,
}

/// Builds a [`Scenario`] from an `async fn(&mut Harness) -> Check`.
macro_rules! scenario {
    ($id:literal, $name:literal, [$($requirement:literal),* $(,)?], $body:path) => {{
        fn run(h: &mut Harness) -> BoxFuture<'_, Check> {
            Box::pin($body(h))
        }
        Scenario {
            id: $id,
            name: $name,
            requirements: &[$($requirement),*],
            run,
        }
    }};
}

/// Every built-in scenario, in the order they run.
pub(crate) fn all() -> Vec<Scenario> {
    vec![
        // Backup happy path and ordering.
        scenario!(
            "TS-01",
            "full backup of one writer: events, states, shadow copy life",
            [
                "TS-01",
                "TS-02",
                "BK-SNAP-2",
                "WST-3",
                "PROV-ST-1",
                "BK-END-4"
            ],
            backup::ts01_full_backup
        ),
        scenario!(
            "TS-03",
            "Freeze by application level, Thaw in reverse",
            ["TS-03", "ROLE-9", "BK-SNAP-2"],
            backup::ts03_levels
        ),
        scenario!(
            "TS-05",
            "two backups back to back",
            ["TS-05", "BK-END-3", "WST-5"],
            backup::ts05_back_to_back
        ),
        scenario!(
            "TS-06",
            "volume mode: writers get the events with no components",
            ["TS-06", "BK-DISC-5", "SEL-6", "BK-INIT-4"],
            backup::ts06_volume_mode
        ),
        scenario!(
            "TS-31",
            "component mode: a writer with nothing selected gets no events",
            ["TS-31", "BK-DISC-4", "SEL-5"],
            backup::ts31_unselected_writer
        ),
        scenario!(
            "TS-15a",
            "release without BackupComplete: BackupShutdown with the set id",
            ["TS-15", "BK-END-4", "BK-END-5", "BK-ABORT-4"],
            backup::ts15_release_without_complete
        ),
        // Writer failures, vetoes, timeouts, aborts.
        scenario!(
            "TS-07",
            "a writer whose Identify fails is left out",
            ["TS-07", "BK-INIT-6", "WST-1"],
            failures::ts07_identify_fails
        ),
        scenario!(
            "TS-08",
            "veto at PrepareForBackup, then AbortBackup",
            ["TS-08", "BK-PREP-5", "BK-ABORT-2", "WST-4", "ERR-4"],
            failures::ts08_prepare_backup_veto
        ),
        scenario!(
            "TS-14a",
            "failure at PrepareForSnapshot: no Abort, the set is created",
            ["TS-14", "BK-SNAP-6", "WST-4"],
            failures::ts14_prepare_snapshot_fails
        ),
        scenario!(
            "TS-09a",
            "veto at Freeze: Abort for the vetoing writer, the others complete",
            ["TS-09", "BK-SNAP-7", "WST-4"],
            failures::ts09_freeze_veto_ignored
        ),
        scenario!(
            "TS-09b",
            "veto at Freeze, then AbortBackup: no BackupComplete, nothing left",
            ["TS-09", "BK-ABORT-3", "BK-ABORT-4", "BK-ABORT-6"],
            failures::ts09_freeze_veto_aborted
        ),
        scenario!(
            "TS-09c",
            "veto at Thaw: FAILED_AT_THAW and Abort, no PostSnapshot",
            ["BK-SNAP-7", "WST-4"],
            failures::ts09_thaw_veto
        ),
        scenario!(
            "TS-14b",
            "failure at PostSnapshot: no Abort, the set is created",
            ["TS-14", "BK-SNAP-6", "BK-ABORT-4", "WST-4"],
            failures::ts14_post_snapshot_fails
        ),
        scenario!(
            "WST-4a",
            "failure at BackupComplete is FAILED_AT_BACKUP_COMPLETE",
            ["WST-4", "BK-END-1"],
            failures::backup_complete_fails
        ),
        scenario!(
            "WST-4b",
            "failure at BackupShutdown is reported, the others unaffected",
            ["WST-4", "BK-END-4", "WST-1"],
            failures::backup_shutdown_fails
        ),
        scenario!(
            "TS-10a",
            "a writer that never answers Freeze times out alone",
            ["BK-SNAP-5", "BK-SNAP-7", "ERR-2"],
            failures::ts10_freeze_never_answered
        ),
        scenario!(
            "TS-10b",
            "the freeze window runs out while the provider hangs in Commit",
            ["TS-10", "BK-SNAP-5", "BK-SNAP-8", "LIMIT-6"],
            failures::ts10_freeze_window_expires
        ),
        scenario!(
            "TS-16",
            "AbortBackup after DoSnapshotSet: no Abort after PostSnapshot",
            ["TS-16", "BK-ABORT-2", "BK-ABORT-4", "BK-END-5"],
            failures::ts16_abort_after_snapshot
        ),
        // Provider failures and the commit window.
        scenario!(
            "TS-12a",
            "provider fails at EndPrepareSnapshots",
            [
                "TS-12",
                "TS-13",
                "BK-SNAP-8",
                "BK-SNAP-9",
                "TS-18",
                "PROV-SEQ-2"
            ],
            providers::fail_at_end_prepare
        ),
        scenario!(
            "TS-12b",
            "provider fails at PreCommitSnapshots",
            ["TS-12", "TS-13", "BK-SNAP-8", "BK-SNAP-9", "TS-18"],
            providers::fail_at_pre_commit
        ),
        scenario!(
            "TS-12c",
            "provider fails at CommitSnapshots (no partial commit)",
            [
                "TS-12",
                "TS-13",
                "BK-SNAP-8",
                "BK-SNAP-9",
                "TS-18",
                "PROV-R-2"
            ],
            providers::fail_at_commit
        ),
        scenario!(
            "TS-12d",
            "provider fails at PostCommitSnapshots",
            ["TS-12", "TS-13", "BK-SNAP-8", "BK-SNAP-9", "TS-18"],
            providers::fail_at_post_commit
        ),
        scenario!(
            "TS-12e",
            "provider fails at PostFinalCommitSnapshots",
            ["TS-12", "TS-13", "BK-SNAP-8", "BK-ABORT-4", "TS-18"],
            providers::fail_at_post_final_commit
        ),
        scenario!(
            "TS-11a",
            "commit window: provider hangs in PreCommitSnapshots",
            ["TS-11", "LIMIT-5", "CFG-10", "BK-SNAP-8", "BK-SNAP-11"],
            providers::hang_at_pre_commit
        ),
        scenario!(
            "TS-11b",
            "commit window: provider hangs in CommitSnapshots",
            ["TS-11", "LIMIT-5", "CFG-10", "BK-SNAP-8", "BK-SNAP-11"],
            providers::hang_at_commit
        ),
        scenario!(
            "TS-11c",
            "commit window: provider hangs in PostCommitSnapshots",
            ["TS-11", "LIMIT-5", "CFG-10", "BK-SNAP-8", "BK-SNAP-11"],
            providers::hang_at_post_commit
        ),
        // Sequencing, contexts, limits.
        scenario!(
            "TS-18",
            "calls out of order are VSS_E_BAD_STATE",
            [
                "TS-18",
                "TS-21",
                "BK-INIT-1",
                "BK-INIT-5",
                "BK-DISC-8",
                "BK-END-2"
            ],
            sequencing::ts18_bad_state
        ),
        scenario!(
            "TS-19",
            "a second StartSnapshotSet is VSS_E_SNAPSHOT_SET_IN_PROGRESS",
            ["TS-19", "LIMIT-4"],
            sequencing::ts19_set_in_progress
        ),
        scenario!(
            "BK-INIT-4",
            "writers enabled and disabled before GatherWriterMetadata",
            ["BK-INIT-4", "BK-INIT-5"],
            sequencing::enable_disable
        ),
        scenario!(
            "TS-04",
            "Identify during another session has no side effects",
            ["TS-04", "TS-17", "ROLE-6", "BK-INIT-7"],
            sequencing::ts04_identify_elsewhere
        ),
        scenario!(
            "TS-20",
            "a set released before DoSnapshotSet leaves nothing behind",
            ["TS-20", "PROV-SEQ-2", "LIMIT-4"],
            sequencing::ts20_released_set
        ),
        scenario!(
            "TS-22",
            "writerless contexts FILE_SHARE_BACKUP and NAS_ROLLBACK",
            ["TS-22", "CTX-1", "CTX-2", "CTX-4"],
            sequencing::ts22_writerless_contexts
        ),
        scenario!(
            "TS-57",
            "APP_ROLLBACK shadow copies survive release and are deleted through Admin",
            ["CTX-1", "CTX-2", "DEL-1", "SNAP-3", "TS-57"],
            sequencing::ts57_app_rollback
        ),
        scenario!(
            "TS-23",
            "context ALL is refused for creation and accepted for queries",
            ["TS-23", "CTX-5", "BK-INIT-2"],
            sequencing::ts23_context_all
        ),
        scenario!(
            "TS-25",
            "the 65th volume is refused; an empty set succeeds",
            ["TS-25", "LIMIT-1", "BK-DISC-7"],
            sequencing::ts25_limits
        ),
        // Restore.
        scenario!(
            "TS-44",
            "restore: PreRestore and PostRestore only to writers with selected components",
            ["TS-44", "RST-PREP-3", "WST-3", "SEL-R-1"],
            restore::ts44_restore
        ),
    ]
}

/// The scenarios of `run --writer`, about a writer written by someone else.
pub(crate) fn external() -> Vec<Scenario> {
    vec![
        scenario!(
            "WR-1",
            "Identify is deterministic and matches the registration",
            ["ROLE-6", "TS-04", "TS-17"],
            external::identify_is_deterministic
        ),
        scenario!(
            "WR-2",
            "the WMD validates and its components can be selected",
            ["WMD-1", "WMD-2", "WMD-8", "SEL-2", "SEL-4"],
            external::wmd_validates
        ),
        scenario!(
            "WR-3",
            "full backup: WAITING_FOR_BACKUP_COMPLETE, then STABLE",
            ["TS-01", "WST-3", "BK-END-1", "BK-END-4"],
            external::full_backup
        ),
        scenario!(
            "WR-4",
            "an aborted backup leaves it STABLE and ready for the next",
            ["BK-SNAP-8", "BK-ABORT-3", "BK-SNAP-9"],
            external::recovers_from_abort
        ),
        scenario!(
            "WR-5",
            "a freeze held until the commit window closes, then the next backup",
            ["BK-SNAP-5", "LIMIT-5", "BK-ABORT-3"],
            external::recovers_from_held_freeze
        ),
    ]
}

/// Whether a scenario matches one of the comma-separated, case-insensitive patterns of `--only`:
/// a substring of its label, its name or one of its requirement IDs.
pub(crate) fn matches(scenario: &Scenario, patterns: &[String]) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let haystacks: Vec<String> = std::iter::once(scenario.id)
        .chain(std::iter::once(scenario.name))
        .chain(scenario.requirements.iter().copied())
        .map(str::to_lowercase)
        .collect();
    patterns.iter().any(|pattern| {
        let pattern = pattern.to_lowercase();
        haystacks.iter().any(|h| h.contains(&pattern))
    })
}

/// A complete backup of the data components of `writers` on `volume`: through DoSnapshotSet,
/// SetBackupSucceeded, BackupComplete, GatherWriterStatus and release (B1–B15). Returns the set.
pub(crate) async fn full_backup(
    h: &Harness,
    writers: &[&W],
    volume: &str,
) -> Result<SnapshotSetId, String> {
    let mut prepared = h.prepared(writers, &[volume.to_owned()]).await?;
    prepared
        .session
        .do_snapshot_set()
        .await
        .ctx("DoSnapshotSet")?;
    for key in &prepared.keys {
        prepared
            .session
            .set_backup_succeeded(key, true)
            .await
            .ctx("SetBackupSucceeded")?;
    }
    prepared
        .session
        .backup_complete()
        .await
        .ctx("BackupComplete")?;
    prepared
        .session
        .gather_writer_status()
        .await
        .ctx("GatherWriterStatus after BackupComplete (B14)")?;
    prepared.session.release().await.ctx("release")?;
    Ok(prepared.set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_every_scenario_names_requirements() {
        let scenarios = all();
        let mut ids: Vec<&str> = scenarios.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), scenarios.len(), "duplicate scenario labels");
        assert!(scenarios.len() >= 20);
        assert!(scenarios.iter().all(|s| !s.requirements.is_empty()));
    }

    #[test]
    fn only_patterns_match_labels_names_and_requirements() {
        let scenarios = all();
        let count = |patterns: &[&str]| {
            let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
            scenarios.iter().filter(|s| matches(s, &patterns)).count()
        };
        assert_eq!(count(&[]), scenarios.len());
        assert_eq!(count(&["ts-01"]), 1);
        assert_eq!(count(&["TS-11"]), 3);
        assert!(count(&["LIMIT-4"]) >= 2);
        assert_eq!(count(&["TS-01", "TS-03"]), 2);
        assert_eq!(count(&["no such scenario"]), 0);
    }
}
