//! The protocol is language-neutral in fact: `examples/python-writer/writer.py`, a writer written in
//! Python with grpcio from PyPI and stubs generated from the `.proto` files, takes part in a real
//! backup driven through `shadowcopyd`, and its veto is seen by the requester.
//!
//! The Python side runs in the venv that `scripts/install-deps.sh --test` makes
//! (`/opt/shadowcopy-test-venv`, or `$SHADOWCOPY_TEST_VENV`); without it these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shadowcopy_metadata::enums::WriterState;
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{WriterMetadata, codes};
use shadowcopy_protocol::v1::requester_client::RequesterClient;
use shadowcopy_protocol::v1::requester_request::Call;
use shadowcopy_protocol::v1::requester_response::Result as CallResult;
use shadowcopy_protocol::v1::{self, admin_client::AdminClient};
use shadowcopy_protocol::{MAX_MESSAGE_SIZE, connect_unix, reply_status, versioned};
use shadowcopy_test_support::{DaemonProcess, TEST_CONFIG, TempDir};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long any one step may take before the test gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The volume the simulated provider snapshots successfully.
const VOLUME: &str = "/sim/ok/vol1";

/// The events one writer gets in a successful backup, in order (docs/protocol.md §5.2).
const BACKUP_EVENTS: [&str; 8] = [
    "Identify",
    "PrepareForBackup",
    "PrepareForSnapshot",
    "Freeze",
    "Thaw",
    "PostSnapshot",
    "BackupComplete",
    "BackupShutdown",
];

/// The repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test venv's Python, which has grpcio and grpcio-tools; fails the test when it is missing.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("SHADOWCOPY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/shadowcopy-test-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: the Python writer tests need a venv with grpcio and grpcio-tools; \
         run `scripts/install-deps.sh --test` (set SHADOWCOPY_TEST_VENV to use another venv)",
        python.display()
    );
    python
}

/// Generates the Python stubs from the repository's `.proto` files into `dir/stubs`.
fn generate_stubs(python: &Path, dir: &TempDir) -> PathBuf {
    let stubs = dir.join("stubs");
    let output = Command::new("bash")
        .arg(repo_root().join("examples/python-writer/generate.sh"))
        .arg(&stubs)
        .env("PYTHON", python)
        .output()
        .expect("generate.sh runs");
    assert!(
        output.status.success(),
        "generate.sh failed ({}); does the venv have grpcio-tools? run `scripts/install-deps.sh --test`: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    stubs
}

/// A running `writer.py`; killed on drop, so a failing test leaves no process behind.
struct PythonWriter {
    child: Child,
    name: String,
    events_log: PathBuf,
    output: PathBuf,
}

impl PythonWriter {
    /// Starts `writer.py` against the daemon, with `extra` arguments.
    fn start(daemon: &DaemonProcess, name: &str, extra: &[&str]) -> Self {
        let python = venv_python();
        let stubs = generate_stubs(&python, &daemon.dir);
        let events_log = daemon.dir.join(&format!("{name}.events"));
        let output = daemon.dir.join(&format!("{name}.out"));
        let output_file = std::fs::File::create(&output).unwrap();
        let child = Command::new(&python)
            .arg(repo_root().join("examples/python-writer/writer.py"))
            .arg("--stubs")
            .arg(&stubs)
            .arg("--socket")
            .arg(daemon.socket())
            .arg("--events-log")
            .arg(&events_log)
            .arg("--name")
            .arg(name)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(output_file.try_clone().unwrap())
            .stderr(output_file)
            .spawn()
            .expect("writer.py starts");
        PythonWriter {
            child,
            name: name.to_owned(),
            events_log,
            output,
        }
    }

    /// What the writer printed so far.
    fn output_text(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// The event names in the events log, one per line `<monotonic seconds> <EventName> <set_id>`.
    fn events(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.events_log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                assert_eq!(fields.len(), 3, "events log line {line:?} has three fields");
                fields[0]
                    .parse::<f64>()
                    .expect("the first field is monotonic seconds");
                (fields[1].to_owned(), fields[2].to_owned())
            })
            .collect()
    }

    /// Waits until the events log holds `event`, and returns the whole log.
    async fn wait_for_event(&mut self, event: &str) -> Vec<(String, String)> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let events = self.events();
            if events.iter().any(|(name, _)| name == event) {
                return events;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "the Python writer logged no {event} within {STEP_TIMEOUT:?}; events {events:?}; \
                 output: {}",
                self.output_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "writer.py exited early with {status}: {}",
                self.output_text()
            );
        }
    }

    /// Sends SIGTERM and waits for the writer to close its stream and exit.
    fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "writer.py did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PythonWriter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `Admin.ListWriters` until the Python writer is registered; returns its instance id.
async fn wait_until_registered(daemon: &DaemonProcess, writer: &mut PythonWriter) -> String {
    let channel = connect_unix(daemon.socket())
        .await
        .expect("the daemon's socket answers");
    let mut admin = AdminClient::new(versioned(channel));
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let reply = admin
            .list_writers(v1::ListWritersRequest {
                include_metadata: false,
            })
            .await
            .expect("ListWriters is accepted")
            .into_inner();
        reply_status(reply.status).expect("ListWriters succeeds");
        let registered = reply
            .writers
            .iter()
            .filter_map(|info| info.status.as_ref())
            .find(|status| status.writer_name == writer.name);
        if let Some(status) = registered {
            return status.writer_instance_id.clone();
        }
        writer.assert_running();
        assert!(
            Instant::now() < deadline,
            "the Python writer did not register within {STEP_TIMEOUT:?}: {}\ndaemon log: {}",
            writer.output_text(),
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One requester session: one call at a time, each answered before the next is sent.
struct Session {
    requests: Option<mpsc::Sender<v1::RequesterRequest>>,
    responses: tonic::Streaming<v1::RequesterResponse>,
    next_id: u64,
}

impl Session {
    async fn open(socket: &Path) -> Self {
        let channel = connect_unix(socket)
            .await
            .expect("the daemon's socket answers");
        let mut client =
            RequesterClient::new(versioned(channel)).max_decoding_message_size(MAX_MESSAGE_SIZE);
        let (sender, receiver) = mpsc::channel(8);
        let responses = client
            .session(ReceiverStream::new(receiver))
            .await
            .expect("the session stream is accepted")
            .into_inner();
        Session {
            requests: Some(sender),
            responses,
            next_id: 1,
        }
    }

    /// Sends one call and returns its response.
    async fn call(&mut self, call: Call) -> v1::RequesterResponse {
        let request_id = self.next_id;
        self.next_id += 1;
        let what = format!("{call:?}");
        let sender = self.requests.as_ref().expect("the session is open");
        sender
            .send(v1::RequesterRequest {
                request_id,
                call: Some(call),
            })
            .await
            .expect("the session takes requests");
        let response = tokio::time::timeout(STEP_TIMEOUT, self.responses.message())
            .await
            .unwrap_or_else(|_| panic!("no answer to {what} within {STEP_TIMEOUT:?}"))
            .expect("the session stream stays up")
            .expect("the session answers");
        assert_eq!(response.request_id, request_id, "the answer to {what}");
        response
    }

    /// Sends one call, asserts that it succeeded and returns its result.
    async fn ok(&mut self, call: Call) -> Option<CallResult> {
        let what = format!("{call:?}");
        let response = self.call(call).await;
        if let Err(status) = reply_status(response.status) {
            panic!("{what} failed: {status:?}");
        }
        response.result
    }

    /// Closes the requester's side, which releases the session, and waits for the server's end.
    async fn close(mut self) {
        self.requests = None;
        let drained = tokio::time::timeout(STEP_TIMEOUT, async {
            while let Ok(Some(_)) = self.responses.message().await {}
        });
        drained.await.expect("the daemon ends the session stream");
    }
}

/// Runs a backup up to DoSnapshotSet with the Python writer's "data" component; returns the set id.
async fn backup_through_do_snapshot_set(
    session: &mut Session,
    instance_id: &str,
) -> (String, v1::ComponentKey) {
    session
        .ok(Call::InitializeForBackup(v1::InitializeForBackup {
            bcd_json: None,
        }))
        .await;
    session
        .ok(Call::SetBackupState(v1::SetBackupState {
            component_mode: true,
            bootable_system_state: false,
            backup_type: 1, // FULL
            partial_file_support: false,
        }))
        .await;

    let Some(CallResult::WriterMetadata(list)) = session
        .ok(Call::GatherWriterMetadata(v1::GatherWriterMetadata {}))
        .await
    else {
        panic!("GatherWriterMetadata returns a WriterMetadataList");
    };
    let entry = list
        .writers
        .iter()
        .find(|entry| entry.writer_instance_id == instance_id)
        .unwrap_or_else(|| panic!("the Python writer {instance_id} answered Identify: {list:?}"));
    let wmd = WriterMetadata::from_json(&entry.wmd_json)
        .unwrap_or_else(|error| panic!("the Python writer's WMD is valid: {error}"));
    assert_eq!(wmd.identity.instance_id.to_string(), instance_id);
    assert_eq!(wmd.components.len(), 1);
    let data = &wmd.components[0];
    assert_eq!(data.name, "data");
    assert_eq!(data.component_type.value(), 2, "FILEGROUP");
    assert!(data.selectable_for_backup);
    assert_eq!(data.files[0].path, "/srv/python-writer");

    let component = v1::ComponentKey {
        writer_instance_id: instance_id.to_owned(),
        writer_class_id: wmd.identity.class_id.to_string(),
        component_type: data.component_type.value(),
        logical_path: data.logical_path.clone(),
        name: data.name.clone(),
    };
    session
        .ok(Call::AddComponent(v1::AddComponent {
            component: Some(component.clone()),
        }))
        .await;
    let Some(CallResult::SnapshotSetStarted(started)) = session
        .ok(Call::StartSnapshotSet(v1::StartSnapshotSet {}))
        .await
    else {
        panic!("StartSnapshotSet returns the set id");
    };
    session
        .ok(Call::AddToSnapshotSet(v1::AddToSnapshotSet {
            volume: VOLUME.to_owned(),
            provider_id: None,
        }))
        .await;
    session
        .ok(Call::PrepareForBackup(v1::PrepareForBackup {}))
        .await;
    session.ok(Call::DoSnapshotSet(v1::DoSnapshotSet {})).await;
    (started.set_id, component)
}

/// The Python writer's status in this session.
async fn writer_status(session: &mut Session, instance_id: &str) -> v1::WriterStatus {
    let Some(CallResult::WriterStatus(list)) = session
        .ok(Call::GatherWriterStatus(v1::GatherWriterStatus {}))
        .await
    else {
        panic!("GatherWriterStatus returns a WriterStatusList");
    };
    list.writers
        .into_iter()
        .find(|status| status.writer_instance_id == instance_id)
        .expect("the Python writer is in the session's writer status")
}

#[tokio::test(flavor = "multi_thread")]
async fn python_writer_takes_part_in_a_full_backup() {
    let daemon = DaemonProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        "python-writer",
        TEST_CONFIG,
    );
    let mut writer = PythonWriter::start(&daemon, "python-writer-backup", &[]);
    let instance_id = wait_until_registered(&daemon, &mut writer).await;

    let mut session = Session::open(daemon.socket()).await;
    let (set_id, component) = backup_through_do_snapshot_set(&mut session, &instance_id).await;
    let status = writer_status(&mut session, &instance_id).await;
    assert_eq!(
        status.state,
        WriterState::WaitingForBackupComplete.value(),
        "after DoSnapshotSet: {status:?}"
    );
    assert_eq!(status.failure_code, 0, "{status:?}");
    session
        .ok(Call::SetBackupSucceeded(v1::SetBackupSucceeded {
            component: Some(component),
            succeeded: true,
        }))
        .await;
    session
        .ok(Call::BackupComplete(v1::BackupComplete {}))
        .await;
    session.close().await;

    let events = writer.wait_for_event("BackupShutdown").await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, BACKUP_EVENTS, "the Python writer's events");
    assert_eq!(events[0].1, "-", "Identify belongs to no set");
    for (name, event_set) in &events[1..] {
        // The set was started before PrepareForBackup, so every later event carries its id.
        assert_eq!(event_set, &set_id, "the set id of {name}");
    }

    // SIGTERM makes the writer close its side of the stream; it exits 0 when the stream ends.
    let exit = writer.terminate();
    assert!(
        exit.success(),
        "writer.py exited with {exit}: {}",
        writer.output_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_writer_veto_at_freeze_shows_in_the_writer_status() {
    let daemon = DaemonProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        "python-veto",
        TEST_CONFIG,
    );
    let mut writer = PythonWriter::start(&daemon, "python-writer-veto", &["--veto-at", "Freeze"]);
    let instance_id = wait_until_registered(&daemon, &mut writer).await;

    let mut session = Session::open(daemon.socket()).await;
    backup_through_do_snapshot_set(&mut session, &instance_id).await;
    let status = writer_status(&mut session, &instance_id).await;
    assert_eq!(
        status.state,
        WriterState::FailedAtFreeze.value(),
        "{status:?}"
    );
    assert_eq!(
        status.failure_code,
        codes::VSS_E_WRITERERROR_RETRYABLE.value,
        "{status:?}"
    );
    session.close().await;

    let events = writer.wait_for_event("BackupShutdown").await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "Identify",
            "PrepareForBackup",
            "PrepareForSnapshot",
            "Freeze"
        ],
        "the Python writer's events"
    );
    assert!(
        !names.contains(&"BackupComplete"),
        "no BackupComplete after a veto: {names:?}"
    );
    assert_eq!(names.last(), Some(&"BackupShutdown"), "{names:?}");
}
