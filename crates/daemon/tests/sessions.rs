//! Every writer event names the session it belongs to (ROLE-5): the events of one backup share
//! one session id, and an Identify from another session carries that other session's id.

use std::path::Path;
use std::sync::{Arc, Mutex};

use shadowcopy_metadata::WriterClassId;
use shadowcopy_metadata::wmd::{Component, FileDescriptor, WriterMetadata};
use shadowcopy_requester::Client;
use shadowcopy_test_support::sets::{file_group, full_backup};
use shadowcopy_test_support::{DaemonProcess, TEST_CONFIG};
use shadowcopy_writer_sdk::{EventContext, EventKind, HandlerResult, Writer, WriterOptions};

type Seen = Arc<Mutex<Vec<(EventKind, Option<String>)>>>;

/// A writer that records each event with its session id.
struct SessionRecorder {
    class_id: WriterClassId,
    seen: Seen,
}

impl SessionRecorder {
    fn record(&self, ctx: &EventContext) {
        let session = ctx.session_id().map(str::to_owned);
        self.seen.lock().unwrap().push((ctx.event(), session));
    }
}

impl Writer for SessionRecorder {
    fn metadata(&self) -> WriterMetadata {
        let files = vec![FileDescriptor::new("/sim/ok/data", "*", true)];
        let data = Component::file_group("", "data", true, files);
        WriterMetadata::simple("session-recorder", self.class_id, vec![data])
    }

    async fn on_identify(
        &self,
        ctx: &EventContext,
    ) -> Result<WriterMetadata, shadowcopy_writer_sdk::WriterFailure> {
        self.record(ctx);
        Ok(self.metadata())
    }

    async fn on_freeze(&self, ctx: &EventContext) -> HandlerResult {
        self.record(ctx);
        Ok(())
    }

    async fn on_thaw(&self, ctx: &EventContext) -> HandlerResult {
        self.record(ctx);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_name_their_session() {
    let daemon = DaemonProcess::start(
        Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        "sessions",
        TEST_CONFIG,
    );
    let seen = Seen::default();
    let class_id = WriterClassId::new_random();
    let writer = SessionRecorder {
        class_id,
        seen: Arc::clone(&seen),
    };
    let mut handle =
        shadowcopy_writer_sdk::spawn(writer, WriterOptions::with_socket(daemon.socket()));
    handle.registered().await.expect("the writer registers");

    let client = Client::connect(daemon.socket()).await.unwrap();
    let (mut backup, writers) = full_backup(&client).await;
    let wmd = writers
        .iter()
        .find(|w| w.identity.class_id == class_id)
        .unwrap();
    backup
        .add_component(&file_group(wmd, "", "data"))
        .await
        .unwrap();
    backup.start_snapshot_set().await.unwrap();
    backup
        .add_to_snapshot_set("/sim/ok/vol", None)
        .await
        .unwrap();
    backup.prepare_for_backup().await.unwrap();
    backup.do_snapshot_set().await.unwrap();

    // Identify from a second session while the first is still open (ROLE-6).
    let mut other = client.backup_session().await.unwrap();
    other.initialize_for_backup(None).await.unwrap();
    other.gather_writer_metadata().await.unwrap();
    other.release().await.unwrap();
    backup.release().await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let kinds: Vec<EventKind> = seen.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Identify,
            EventKind::Freeze,
            EventKind::Thaw,
            EventKind::Identify
        ]
    );
    let first = seen[0].1.clone().expect("Identify names its session");
    assert!(!first.is_empty());
    assert!(
        seen[..3]
            .iter()
            .all(|(_, s)| s.as_deref() == Some(first.as_str())),
        "{seen:?}"
    );
    let second = seen[3]
        .1
        .clone()
        .expect("the second Identify names its session");
    assert_ne!(first, second, "each session has its own id");
    handle.stop();
    let _ = handle.join().await;
}
