//! Restore sessions (spec §4, TS-44..TS-55, TS-18): a backup is taken first, then restored from its
//! stored BCD and WMDs.

mod common;

use std::sync::Arc;

use common::{Behavior, Env, prepared, test_config};
use shadowcopy_coordinator::{ComponentKey, RestoreSession, WriterEvent, WriterEventKind};
use shadowcopy_metadata::WriterMetadata;
use shadowcopy_metadata::bcd::{BackupComponents, Party, Phase};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{
    ApplicationLevel, FileRestoreStatus, RestoreTarget, RestoreType, WriterState,
};

use WriterEventKind as K;

/// Backs up the first component of every writer and returns the stored documents.
async fn backup(env: &Env) -> (BackupComponents, Vec<WriterMetadata>) {
    let mut session = prepared(env, &["/srv"]).await;
    session.do_snapshot_set().await.unwrap();
    for metadata in session.writer_metadata().unwrap() {
        let c = &metadata.components[0];
        session
            .set_backup_succeeded(
                metadata.identity.instance_id,
                &c.logical_path,
                &c.name,
                true,
            )
            .unwrap();
    }
    session.backup_complete().await.unwrap();
    let bcd = session.backup_components().unwrap().clone();
    let wmds = session.writer_metadata().unwrap();
    session.release().await.unwrap();
    (bcd, wmds)
}

async fn restore_session(
    env: &Env,
    bcd: BackupComponents,
    wmds: Vec<WriterMetadata>,
) -> RestoreSession {
    let mut session = env.coord.open_restore_session();
    session.initialize_for_restore(bcd, wmds).unwrap();
    session.gather_writer_metadata().await.unwrap();
    session
}

/// TS-44, TS-49, RST-PREP-5: a restore runs Identify, PreRestore and PostRestore; the writer's
/// restore target set in PreRestore is visible after it; the file restore status reaches PostRestore.
#[tokio::test(start_paused = true)]
async fn restore_happy_path() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("db", ApplicationLevel::BackEnd);
    writer.on(
        K::PreRestore,
        Behavior::Edit(Arc::new(|c| {
            c.edit(Party::Writer, Phase::PreRestore, "", "data")
                .unwrap()
                .set_restore_target(RestoreTarget::Alternate)
                .unwrap();
        })),
    );
    let writer = env.add(writer);
    let (bcd, wmds) = backup(&env).await;
    let restore_from = writer.received().len();

    let mut session = restore_session(&env, bcd, wmds).await;
    let key = ComponentKey::new(writer.class_id, "", "data");
    session.set_restore_type(RestoreType::ByCopy).unwrap();
    session.select_for_restore(&key, true).unwrap();
    session.pre_restore().await.unwrap();
    let record =
        |s: &RestoreSession| s.backup_components().unwrap().writers()[0].components()[0].clone();
    assert_eq!(record(&session).restore_target(), RestoreTarget::Alternate);
    session
        .set_file_restore_status(&key, FileRestoreStatus::All)
        .unwrap();
    session.post_restore().await.unwrap();
    let status = session.gather_writer_status().unwrap();
    assert_eq!(status[0].state, WriterState::Stable);
    assert!(status[0].failure.is_none());
    session.release().await.unwrap();

    let events: Vec<_> = writer.received()[restore_from..]
        .iter()
        .map(|r| r.event.clone())
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0], WriterEvent::Identify);
    match &events[1] {
        WriterEvent::PreRestore {
            components,
            restore_type,
        } => {
            assert_eq!(*restore_type, RestoreType::ByCopy);
            assert!(components.components()[0].selected_for_restore());
        }
        other => panic!("expected PreRestore, got {other:?}"),
    }
    match &events[2] {
        WriterEvent::PostRestore {
            components,
            restore_type,
        } => {
            assert_eq!(*restore_type, RestoreType::ByCopy);
            assert_eq!(
                components.components()[0].file_restore_status(),
                FileRestoreStatus::All
            );
        }
        other => panic!("expected PostRestore, got {other:?}"),
    }
    env.finish().await;
}

/// RST-PREP-3: a writer with no component selected gets no restore events beyond Identify.
#[tokio::test(start_paused = true)]
async fn writer_without_selected_components_gets_no_restore_events() {
    let mut env = Env::new(test_config(), &["sim"]);
    let chosen = env.writer("chosen", ApplicationLevel::FrontEnd);
    let chosen = env.add(chosen);
    let skipped = env.writer("skipped", ApplicationLevel::FrontEnd);
    let skipped = env.add(skipped);
    let (bcd, wmds) = backup(&env).await;
    let chosen_from = chosen.received().len();
    let skipped_from = skipped.received().len();
    let mut session = restore_session(&env, bcd, wmds).await;
    session
        .select_for_restore(&ComponentKey::new(chosen.class_id, "", "data"), true)
        .unwrap();
    session.pre_restore().await.unwrap();
    session.post_restore().await.unwrap();
    session.release().await.unwrap();
    assert_eq!(
        chosen.kinds()[chosen_from..],
        [K::Identify, K::PreRestore, K::PostRestore]
    );
    assert_eq!(skipped.kinds()[skipped_from..], [K::Identify]);
    env.finish().await;
}

/// TS-53, RST-PREP-2: selecting a component whose writer is not running gives
/// VSS_E_OBJECT_NOT_FOUND; a component missing from the stored BCD too.
#[tokio::test(start_paused = true)]
async fn selecting_a_component_of_a_stopped_writer_is_object_not_found() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("gone", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let (bcd, wmds) = backup(&env).await;
    env.disconnect(&writer);
    let mut session = restore_session(&env, bcd, wmds).await;
    let err = session
        .select_for_restore(&ComponentKey::new(writer.class_id, "", "data"), true)
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_OBJECT_NOT_FOUND);
    assert!(err.message().contains("RST-PREP-2"), "{err}");
    let err = session
        .select_for_restore(&ComponentKey::new(writer.class_id, "", "other"), true)
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_OBJECT_NOT_FOUND);
    session.release().await.unwrap();
    env.finish().await;
}

/// TS-18 (second half), BK-ABORT-5: a restore cannot be aborted; and the restore calls keep their
/// order (VSS_E_BAD_STATE).
#[tokio::test(start_paused = true)]
async fn restore_cannot_be_aborted_and_keeps_its_order() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let (bcd, wmds) = backup(&env).await;
    let mut session = env.coord.open_restore_session();
    let err = session.pre_restore().await.unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    session.initialize_for_restore(bcd, wmds).unwrap();
    let key = ComponentKey::new(writer.class_id, "", "data");
    let err = session.select_for_restore(&key, true).unwrap_err();
    assert!(err.message().contains("gather_writer_metadata"), "{err}");
    session.gather_writer_metadata().await.unwrap();
    let err = session.post_restore().await.unwrap_err();
    assert!(err.message().contains("pre_restore"), "{err}");
    let err = session
        .set_file_restore_status(&key, FileRestoreStatus::All)
        .unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    let err = session.abort().unwrap_err();
    assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    assert!(err.message().contains("BK-ABORT-5"), "{err}");
    session.release().await.unwrap();
    env.finish().await;
}

/// RST-END-3: a writer that restarts between PreRestore and PostRestore is a new instance: the old
/// one is reported lost (FAILED_AT_POST_RESTORE, VSS_E_WRITER_NOT_RESPONDING) and the new one gets
/// no PostRestore.
#[tokio::test(start_paused = true)]
async fn writer_restarted_between_pre_and_post_restore_is_reported_lost() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("svc", ApplicationLevel::FrontEnd);
    let writer = env.add(writer);
    let (bcd, wmds) = backup(&env).await;
    let mut session = restore_session(&env, bcd, wmds).await;
    let key = ComponentKey::new(writer.class_id, "", "data");
    session.select_for_restore(&key, true).unwrap();
    session.pre_restore().await.unwrap();
    env.disconnect(&writer);
    let restarted = env
        .writer("svc", ApplicationLevel::FrontEnd)
        .with_class(writer.class_id);
    let restarted = env.add(restarted);
    session.post_restore().await.unwrap();
    let status = session.gather_writer_status().unwrap();
    assert_eq!(status[0].instance_id, writer.id());
    assert_eq!(status[0].state, WriterState::FailedAtPostRestore);
    assert_eq!(
        status[0].failure.as_ref().unwrap().code,
        codes::VSS_E_WRITER_NOT_RESPONDING
    );
    assert!(restarted.kinds().is_empty());
    session.release().await.unwrap();
    env.finish().await;
}

/// TS-52, TS-55, SEL-R-2, RST-PREP-4: restore subcomponents must be selectable for restore and
/// inside the set; restore options may be set once.
#[tokio::test(start_paused = true)]
async fn restore_subcomponents_and_options_follow_their_rules() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env
        .writer("my", ApplicationLevel::FrontEnd)
        .with_components(&[
            ("", "writerData", true, true),
            ("writerData", "Set1", false, true),
            ("writerData\\Set1", "Jan", false, false),
            ("", "Executables", false, false),
        ]);
    let writer = env.add(writer);
    let (bcd, wmds) = backup(&env).await;
    let mut session = restore_session(&env, bcd, wmds).await;
    let key = ComponentKey::new(writer.class_id, "", "writerData");
    session.select_for_restore(&key, true).unwrap();
    session
        .add_restore_subcomponent(&key, "writerData", "Set1", false)
        .unwrap();
    let err = session
        .add_restore_subcomponent(&key, "writerData\\Set1", "Jan", false)
        .unwrap_err();
    assert_eq!(err.code(), codes::E_INVALIDARG);
    assert!(
        err.message().contains("not selectable for restore"),
        "{err}"
    );
    let err = session
        .add_restore_subcomponent(&key, "", "Executables", false)
        .unwrap_err();
    assert!(err.message().contains("not a member"), "{err}");
    session
        .set_restore_options(&key, "\"Set1\":\"fast\"=\"yes\"")
        .unwrap();
    let err = session.set_restore_options(&key, "again").unwrap_err();
    assert!(err.message().contains("RST-PREP-4"), "{err}");
    session.pre_restore().await.unwrap();
    let pre = writer
        .received()
        .into_iter()
        .find_map(|r| match r.event {
            WriterEvent::PreRestore { components, .. } => Some(components),
            _ => None,
        })
        .unwrap();
    let record = &pre.components()[0];
    assert_eq!(record.restore_subcomponents().len(), 1);
    assert_eq!(record.restore_subcomponents()[0].name, "Set1");
    assert_eq!(record.restore_options(), Some("\"Set1\":\"fast\"=\"yes\""));
    session.post_restore().await.unwrap();
    session.release().await.unwrap();
    env.finish().await;
}

/// R5: a veto in PreRestore gives FAILED_AT_PRE_RESTORE; the writer still gets PostRestore.
#[tokio::test(start_paused = true)]
async fn pre_restore_veto_is_reported() {
    let mut env = Env::new(test_config(), &["sim"]);
    let writer = env.writer("w", ApplicationLevel::FrontEnd);
    writer.on(
        K::PreRestore,
        Behavior::Fail(codes::VSS_E_WRITERERROR_NONRETRYABLE, "files in use"),
    );
    let writer = env.add(writer);
    let (bcd, wmds) = backup(&env).await;
    let mut session = restore_session(&env, bcd, wmds).await;
    session
        .select_for_restore(&ComponentKey::new(writer.class_id, "", "data"), true)
        .unwrap();
    session.pre_restore().await.unwrap();
    let status = session.gather_writer_status().unwrap();
    assert_eq!(status[0].state, WriterState::FailedAtPreRestore);
    assert_eq!(status[0].failure.as_ref().unwrap().message, "files in use");
    session.post_restore().await.unwrap();
    assert_eq!(writer.kinds().last(), Some(&K::PostRestore));
    session.release().await.unwrap();
    env.finish().await;
}
