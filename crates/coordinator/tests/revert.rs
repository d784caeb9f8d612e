//! RevertToSnapshot in the coordinator (REV-1): the checks it makes before it calls the provider
//! (the copy exists, is persistent and created, its volume is not in the set in creation and not
//! being reverted already), and the provider codes that reach the requester untranslated.

mod common;

use std::time::Duration;

use common::{Env, gathered, test_config};
use shadowcopy_coordinator::ProviderStep;
use shadowcopy_coordinator::sim::FaultPlan;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::SnapshotContext;
use shadowcopy_metadata::{SnapshotId, SnapshotSetId};

/// Makes one finished set of `volumes` in `context` and releases the session (persistent copies
/// survive it, CTX-2); returns the set and its shadow copy ids.
async fn make_set(
    env: &Env,
    context: SnapshotContext,
    volumes: &[&str],
) -> (SnapshotSetId, Vec<SnapshotId>) {
    let mut session = gathered(env).await;
    session.set_context(context).unwrap();
    let set = session.start_snapshot_set().unwrap();
    let mut ids = Vec::new();
    for volume in volumes {
        ids.push(session.add_to_snapshot_set(volume, None).await.unwrap());
    }
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();
    session.release().await.unwrap();
    (set, ids)
}

/// A persistent copy is reverted by its provider, with the force flag passed on; nothing is left
/// in progress afterwards.
#[tokio::test(start_paused = true)]
async fn a_persistent_copy_is_reverted_by_its_provider() {
    let env = Env::new(test_config(), &["sim"]);
    let (_, ids) = make_set(&env, SnapshotContext::AppRollback, &["/srv"]).await;
    env.coord.revert(ids[0], true).await.unwrap();
    env.coord.revert(ids[0], false).await.unwrap();
    assert_eq!(
        env.providers[0].reverts(),
        vec![(ids[0], true), (ids[0], false)]
    );
    assert!(env.coord.reverts_in_progress().is_empty());
    assert!(
        env.log
            .events_of("sim")
            .contains(&"RevertToSnapshot".to_string())
    );
    env.finish().await;
}

/// An unknown copy is VSS_E_OBJECT_NOT_FOUND; an auto-release one VSS_E_UNSUPPORTED_CONTEXT
/// (REV-1: "only for snapshots in persistent contexts"). The provider is not called.
#[tokio::test(start_paused = true)]
async fn unknown_and_auto_release_copies_are_refused() {
    let env = Env::new(test_config(), &["sim"]);
    let unknown = SnapshotId::new_random();
    let error = env.coord.revert(unknown, false).await.unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_OBJECT_NOT_FOUND);
    assert!(error.message().contains(&unknown.to_string()), "{error}");

    // An auto-release copy lives only while its session does.
    let mut session = gathered(&env).await;
    session.set_context(SnapshotContext::Backup).unwrap();
    session.start_snapshot_set().unwrap();
    let auto = session.add_to_snapshot_set("/srv", None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    session.do_snapshot_set().await.unwrap();
    let error = env.coord.revert(auto, true).await.unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_UNSUPPORTED_CONTEXT);
    assert!(error.message().contains("/srv"), "{error}");
    session.release().await.unwrap();

    assert!(env.providers[0].reverts().is_empty());
    assert!(
        !env.log
            .events_of("sim")
            .contains(&"RevertToSnapshot".to_string())
    );
    env.finish().await;
}

/// A second revert of a volume while the first runs is VSS_E_REVERT_IN_PROGRESS; the volume is
/// listed as in progress meanwhile, and a revert of another volume is not held up.
#[tokio::test(start_paused = true)]
async fn a_second_revert_of_one_volume_is_refused_while_the_first_runs() {
    let env = Env::new(test_config(), &["sim"]);
    let (_, ids) = make_set(&env, SnapshotContext::AppRollback, &["/srv", "/data"]).await;
    env.providers[0].set_faults(
        FaultPlan::new().delay(ProviderStep::RevertToSnapshot, Duration::from_secs(30)),
    );
    let coord = env.coord.clone();
    let srv = ids[0];
    let first = tokio::spawn(async move { coord.revert(srv, false).await });
    while env.coord.reverts_in_progress().is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(env.coord.reverts_in_progress(), vec!["/srv".to_string()]);
    let error = env.coord.revert(ids[0], false).await.unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_REVERT_IN_PROGRESS);
    assert!(error.message().contains("/srv"), "{error}");
    // Another volume can be reverted meanwhile.
    env.coord.revert(ids[1], false).await.unwrap();
    first.await.unwrap().unwrap();
    assert!(env.coord.reverts_in_progress().is_empty());
    let mut reverted = env.providers[0].reverts();
    reverted.sort();
    let mut expected = vec![(ids[0], false), (ids[1], false)];
    expected.sort();
    assert_eq!(reverted, expected);
    // Done: the volume can be reverted again.
    env.providers[0].set_faults(FaultPlan::new());
    env.coord.revert(ids[0], true).await.unwrap();
    env.finish().await;
}

/// A volume in the set in creation is not reverted (the revert would change it between the
/// writers' freeze and the commit); a volume outside that set is.
#[tokio::test(start_paused = true)]
async fn a_volume_in_the_set_in_creation_is_not_reverted() {
    let env = Env::new(test_config(), &["sim"]);
    let (_, ids) = make_set(&env, SnapshotContext::AppRollback, &["/srv", "/data"]).await;
    let mut session = gathered(&env).await;
    session.set_context(SnapshotContext::AppRollback).unwrap();
    let set = session.start_snapshot_set().unwrap();
    session.add_to_snapshot_set("/srv", None).await.unwrap();
    let error = env.coord.revert(ids[0], false).await.unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_SNAPSHOT_SET_IN_PROGRESS);
    assert!(error.message().contains(&set.to_string()), "{error}");
    env.coord.revert(ids[1], false).await.unwrap();
    session.release().await.unwrap();
    // The set is gone: the volume can be reverted.
    env.coord.revert(ids[0], false).await.unwrap();
    assert_eq!(
        env.providers[0].reverts(),
        vec![(ids[1], false), (ids[0], false)]
    );
    env.finish().await;
}

/// REV-1 names E_NOTIMPL, VSS_E_VOLUME_IN_USE and VSS_E_REVERT_IN_PROGRESS as what the requester
/// sees: they pass untranslated; any other unlisted code is still translated (PROV-R-3).
#[tokio::test(start_paused = true)]
async fn revert_codes_reach_the_requester() {
    let env = Env::new(test_config(), &["sim"]);
    let (_, ids) = make_set(&env, SnapshotContext::AppRollback, &["/srv"]).await;
    for code in [
        codes::E_NOTIMPL,
        codes::VSS_E_VOLUME_IN_USE,
        codes::VSS_E_REVERT_IN_PROGRESS,
    ] {
        env.providers[0].set_faults(FaultPlan::new().fail(ProviderStep::RevertToSnapshot, code));
        let error = env.coord.revert(ids[0], false).await.unwrap_err();
        assert_eq!(error.code(), code, "{error}");
        assert!(error.message().contains("RevertToSnapshot"), "{error}");
        assert!(env.coord.reverts_in_progress().is_empty());
    }
    env.providers[0]
        .set_faults(FaultPlan::new().fail(ProviderStep::RevertToSnapshot, codes::VSS_E_UNEXPECTED));
    let error = env.coord.revert(ids[0], false).await.unwrap_err();
    assert_eq!(error.code(), codes::VSS_E_UNEXPECTED_PROVIDER_ERROR);
    assert!(env.providers[0].reverts().is_empty());
    env.finish().await;
}
