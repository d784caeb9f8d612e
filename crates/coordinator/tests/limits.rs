//! Shadow copy limits and administrative deletion in the coordinator: 64 volumes per set
//! (LIMIT-1), 512 shadow copies per volume (LIMIT-2, CFG-2), the client-accessible cap (CFG-1),
//! and deleting the oldest copy of a volume or every copy (DEL-1), with the simulated provider.

use std::sync::Arc;

use shadowcopy_coordinator::sim::{FaultPlan, SimProvider};
use shadowcopy_coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorError, MAX_SNAPSHOTS_PER_VOLUME,
    MAX_VOLUMES_PER_SET, Provider, ProviderStep, SnapshotRecord,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::SnapshotContext;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};

/// A coordinator over one simulated provider that supports every volume.
fn coordinator(config: CoordinatorConfig) -> (Coordinator, Arc<SimProvider>) {
    let sim = Arc::new(SimProvider::new("sim"));
    let coord = Coordinator::new(config, vec![sim.clone() as Arc<dyn Provider>]);
    (coord, sim)
}

/// One whole session that creates a set of `volumes` in `context` and releases it; returns the
/// set and its shadow copies, or the first error (after aborting, as BK-SNAP-9 asks).
async fn create_set(
    coord: &Coordinator,
    context: SnapshotContext,
    volumes: &[&str],
) -> Result<(SnapshotSetId, Vec<SnapshotId>), CoordinatorError> {
    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None)?;
    session.set_context(context)?;
    let writers = context.involves_writers();
    if writers {
        session.gather_writer_metadata().await?;
    }
    let set = session.start_snapshot_set()?;
    let mut ids = Vec::new();
    for volume in volumes {
        ids.push(session.add_to_snapshot_set(volume, None).await?);
    }
    if writers {
        session.prepare_for_backup().await?;
    }
    let created = session.do_snapshot_set().await;
    if created.is_err() {
        session.abort_backup().await?;
    }
    session.release().await?;
    created.map(|()| (set, ids))
}

fn ids_of(records: &[SnapshotRecord]) -> Vec<SnapshotId> {
    let mut ids: Vec<SnapshotId> = records.iter().map(|r| r.snapshot_id).collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<SnapshotId>) -> Vec<SnapshotId> {
    ids.sort();
    ids
}

/// LIMIT-1: a set takes 64 volumes; the 65th is refused and the message names it.
#[tokio::test]
async fn the_65th_volume_of_a_set_is_refused() {
    let (coord, _sim) = coordinator(CoordinatorConfig::default());
    let mut session = coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.set_context(SnapshotContext::NasRollback).unwrap();
    session.start_snapshot_set().unwrap();
    assert_eq!(MAX_VOLUMES_PER_SET, 64);
    for n in 0..MAX_VOLUMES_PER_SET {
        session
            .add_to_snapshot_set(&format!("/vol/{n}"), None)
            .await
            .unwrap_or_else(|e| panic!("volume {n} of 64: {e}"));
    }
    let error = session
        .add_to_snapshot_set("/vol/64", None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED);
    assert!(error.message().contains("/vol/64"), "{error}");
    assert!(error.message().contains("64 volumes"), "{error}");
    session.release().await.unwrap();
}

/// LIMIT-2, CFG-2: a volume holding 512 shadow copies refuses another, naming the volume and the
/// count and saying how to make room; other volumes are not affected, and deleting the oldest
/// copy makes room again. Runs the real 512 with the production default.
#[tokio::test]
async fn a_volume_with_512_copies_refuses_another() {
    assert_eq!(MAX_SNAPSHOTS_PER_VOLUME, 512);
    let config = CoordinatorConfig::default();
    assert_eq!(config.max_snapshots_per_volume, MAX_SNAPSHOTS_PER_VOLUME);
    let (coord, sim) = coordinator(config);
    let mut first = None;
    for n in 0..MAX_SNAPSHOTS_PER_VOLUME {
        let (_, ids) = create_set(&coord, SnapshotContext::NasRollback, &["/srv"])
            .await
            .unwrap_or_else(|e| panic!("copy {n} of 512: {e}"));
        first.get_or_insert(ids[0]);
    }
    assert_eq!(sim.snapshots().len(), 512);

    let error = create_set(&coord, SnapshotContext::NasRollback, &["/srv/"])
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        codes::VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED
    );
    let message = error.message();
    assert!(message.contains("/srv"), "{message}");
    assert!(message.contains("512"), "{message}");
    assert!(
        message.contains("shadowcopy delete --oldest /srv"),
        "{message}"
    );
    assert_eq!(sim.snapshots().len(), 512, "the refused set left nothing");
    assert!(
        coord.set_in_creation().is_none(),
        "the refusal freed the set lock (LIMIT-4)"
    );

    // Another volume is not limited by this one's copies.
    create_set(&coord, SnapshotContext::NasRollback, &["/other"])
        .await
        .unwrap();

    let outcome = coord.delete_oldest("/srv").await.unwrap();
    assert_eq!(outcome.deleted, 1);
    assert!(outcome.first_failure.is_none());
    assert!(
        sim.snapshots().iter().all(|r| Some(r.snapshot_id) != first),
        "the oldest copy was the one deleted"
    );
    create_set(&coord, SnapshotContext::NasRollback, &["/srv"])
        .await
        .unwrap();
}

/// LIMIT-2 counts shadow copies of every context, and the refusal comes before the provider is
/// asked to prepare anything. The test-only override keeps this small.
#[tokio::test]
async fn the_per_volume_limit_counts_every_context() {
    let (coord, sim) = coordinator(CoordinatorConfig {
        max_snapshots_per_volume: 3,
        ..CoordinatorConfig::default()
    });
    create_set(&coord, SnapshotContext::NasRollback, &["/srv"])
        .await
        .unwrap();
    create_set(&coord, SnapshotContext::AppRollback, &["/srv"])
        .await
        .unwrap();
    create_set(&coord, SnapshotContext::ClientAccessible, &["/srv"])
        .await
        .unwrap();
    sim.log().clear();
    let error = create_set(&coord, SnapshotContext::ClientAccessible, &["/srv"])
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        codes::VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED
    );
    assert!(error.message().contains("3 shadow copies"), "{error}");
    assert!(
        !sim.log()
            .events_of("sim")
            .contains(&"BeginPrepareSnapshot".to_string()),
        "nothing was prepared for the refused volume"
    );
    // Auto-release copies are gone at release and do not count afterwards.
    let (coord, _sim) = coordinator(CoordinatorConfig {
        max_snapshots_per_volume: 1,
        ..CoordinatorConfig::default()
    });
    create_set(&coord, SnapshotContext::FileShareBackup, &["/srv"])
        .await
        .unwrap();
    create_set(&coord, SnapshotContext::FileShareBackup, &["/srv"])
        .await
        .unwrap();
}

/// CFG-1: with a cap of 2, three client-accessible sets leave the two newest; copies of other
/// contexts and other volumes are not touched, and the new copy is never the one deleted.
#[tokio::test]
async fn client_accessible_copies_are_capped_oldest_first() {
    let (coord, sim) = coordinator(CoordinatorConfig {
        max_client_accessible_per_volume: 2,
        ..CoordinatorConfig::default()
    });
    let (_, persistent) = create_set(&coord, SnapshotContext::NasRollback, &["/srv"])
        .await
        .unwrap();
    let (_, a) = create_set(
        &coord,
        SnapshotContext::ClientAccessible,
        &["/srv", "/home"],
    )
    .await
    .unwrap();
    let (_, b) = create_set(&coord, SnapshotContext::ClientAccessible, &["/srv"])
        .await
        .unwrap();
    assert_eq!(sim.snapshots().len(), 4, "nothing over the cap yet");
    let (_, c) = create_set(&coord, SnapshotContext::ClientAccessible, &["/srv"])
        .await
        .unwrap();

    let srv_ca: Vec<SnapshotRecord> = coord
        .snapshots(SnapshotContext::ClientAccessible)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.volume == "/srv")
        .collect();
    assert_eq!(ids_of(&srv_ca), sorted(vec![b[0], c[0]]));
    // a's copy of /home is under its own volume's cap and stays.
    let all = ids_of(&sim.snapshots());
    assert!(all.contains(&a[1]), "/home keeps its only copy");
    assert!(all.contains(&persistent[0]), "NAS_ROLLBACK is not capped");
    assert_eq!(all.len(), 4);

    // A cap of 1: the new copy survives even though it is the only one allowed.
    let (coord, sim) = coordinator(CoordinatorConfig {
        max_client_accessible_per_volume: 1,
        ..CoordinatorConfig::default()
    });
    create_set(&coord, SnapshotContext::ClientAccessibleWriters, &["/srv"])
        .await
        .unwrap();
    let (_, newest) = create_set(&coord, SnapshotContext::ClientAccessibleWriters, &["/srv"])
        .await
        .unwrap();
    assert_eq!(ids_of(&sim.snapshots()), newest);
}

/// CFG-1: a client-accessible set that fails deletes no old copy (deletion happens only after
/// success).
#[tokio::test]
async fn a_failed_client_accessible_set_deletes_nothing() {
    let (coord, sim) = coordinator(CoordinatorConfig {
        max_client_accessible_per_volume: 1,
        ..CoordinatorConfig::default()
    });
    let (_, kept) = create_set(&coord, SnapshotContext::ClientAccessible, &["/srv"])
        .await
        .unwrap();
    sim.set_faults(FaultPlan::new().fail(
        ProviderStep::CommitSnapshots,
        codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
    ));
    let error = create_set(&coord, SnapshotContext::ClientAccessible, &["/srv"])
        .await
        .unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);
    assert_eq!(ids_of(&sim.snapshots()), kept, "the old copy survives");
}

/// DEL-1: the oldest copy of a volume, in any context and across providers; a trailing `/` names
/// the same volume; a volume without copies is VSS_E_OBJECT_NOT_FOUND naming it.
#[tokio::test]
async fn delete_oldest_picks_the_oldest_of_the_volume() {
    let one = Arc::new(SimProvider::new("one").supporting(&["/a"]));
    let two = Arc::new(SimProvider::new("two").supporting(&["/b"]));
    let coord = Coordinator::new(
        CoordinatorConfig::default(),
        vec![one.clone() as Arc<dyn Provider>, two.clone()],
    );
    let (_, first) = create_set(&coord, SnapshotContext::AppRollback, &["/a", "/b"])
        .await
        .unwrap();
    let (_, second) = create_set(&coord, SnapshotContext::NasRollback, &["/a"])
        .await
        .unwrap();

    let oldest = coord.oldest_snapshot("/a/").await.unwrap();
    assert_eq!(oldest.snapshot_id, first[0]);
    let outcome = coord.delete_oldest("/a/").await.unwrap();
    assert_eq!(outcome.deleted, 1);
    assert_eq!(ids_of(&one.snapshots()), second);
    assert_eq!(ids_of(&two.snapshots()), vec![first[1]], "/b is untouched");

    coord.delete_oldest("/a").await.unwrap();
    let error = coord.delete_oldest("/a").await.unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_OBJECT_NOT_FOUND);
    assert!(error.message().contains("volume /a "), "{error}");
}

/// DEL-1: delete everything, across providers and contexts; a provider that fails is reported as
/// the first failure while the others' copies are still deleted; with nothing left the count is 0.
#[tokio::test]
async fn delete_all_deletes_every_copy_and_reports_the_first_failure() {
    let one = Arc::new(SimProvider::new("one").supporting(&["/a"]));
    let two = Arc::new(SimProvider::new("two").supporting(&["/b"]));
    let coord = Coordinator::new(
        CoordinatorConfig::default(),
        vec![one.clone() as Arc<dyn Provider>, two.clone()],
    );
    create_set(&coord, SnapshotContext::AppRollback, &["/a", "/b"])
        .await
        .unwrap();
    let (_, b_only) = create_set(&coord, SnapshotContext::ClientAccessible, &["/b"])
        .await
        .unwrap();
    create_set(&coord, SnapshotContext::NasRollback, &["/a"])
        .await
        .unwrap();

    two.set_faults(FaultPlan::new().fail(
        ProviderStep::DeleteSnapshots,
        codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
    ));
    let outcome = coord.delete_all().await.unwrap();
    assert_eq!(outcome.deleted, 2, "both copies of /a");
    let (failed, error) = outcome.first_failure.expect("provider two failed");
    assert_ne!(failed, b_only[0], "the oldest of /b is the first to fail");
    assert_eq!(two.snapshots().len(), 2);
    assert_eq!(failed, {
        let mut b = two.snapshots();
        b.sort_by_key(|r| r.created);
        b[0].snapshot_id
    });
    assert_eq!(error.code(), codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);
    assert!(one.snapshots().is_empty());

    two.set_faults(FaultPlan::new());
    let outcome = coord.delete_all().await.unwrap();
    assert_eq!(outcome.deleted, 2);
    assert!(outcome.first_failure.is_none());
    let outcome = coord.delete_all().await.unwrap();
    assert_eq!(outcome.deleted, 0, "nothing to delete is not an error");
}
