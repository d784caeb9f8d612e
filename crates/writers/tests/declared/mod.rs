//! What the script and hook-directory writer tests share: a small application (a shell loop that
//! appends numbered lines to a file on the test's volume) that a writer pauses and resumes, a
//! shadowcopyd with the btrfs provider, and a component-mode full backup of one writer's
//! component through the requester library.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shadowcopy_metadata::{SnapshotSetId, WriterMetadata};
use shadowcopy_requester::{BackupSession, Client, ComponentKey, WriterStatus};
use shadowcopy_test_support::sets::{
    complete, file_group, full_backup, snapshot_path, snapshot_volumes, writer_named,
};
use shadowcopy_test_support::{DaemonProcess, workspace_binary};
use shadowcopy_writers::declaration::{self, Declaration};

/// A shell loop appending `n` lines to `log` every 10 ms; killed (after a SIGCONT, in case a
/// test failed while it was stopped) with its process group on drop.
pub(crate) struct App {
    child: Child,
    /// The file it appends to.
    pub(crate) log: PathBuf,
}

impl App {
    /// Starts the loop on `log`.
    pub(crate) fn start(log: &Path) -> App {
        use std::os::unix::process::CommandExt;
        let script = format!(
            "i=0; while :; do i=$((i+1)); echo \"line $i\" >> '{}'; sleep 0.01; done",
            log.display()
        );
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("/bin/sh starts");
        let app = App {
            child,
            log: log.to_path_buf(),
        };
        assert!(
            wait(Duration::from_secs(10), || lines(log) > 2),
            "the application writes"
        );
        app
    }

    /// The loop's pid (the shell that appends; its group id too).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Shell code that stops the application and returns once it is really stopped: SIGSTOP is
    /// asynchronous, and a line being appended finishes first.
    pub(crate) fn stop_command(&self) -> String {
        let pid = self.pid();
        format!(
            "kill -STOP {pid} && while ! grep -q '^State:.*stopped' /proc/{pid}/status; do sleep 0.01; done"
        )
    }

    /// Shell code that resumes the application.
    pub(crate) fn resume_command(&self) -> String {
        format!("kill -CONT {}", self.pid())
    }

    /// Whether the application is stopped right now.
    pub(crate) fn is_stopped(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("stopped"))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The number of lines in `file` (0 when it is missing).
pub(crate) fn lines(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

pub(crate) use shadowcopy_test_support::wait_until as wait;

/// A shadowcopyd with the default configuration (btrfs provider) and short event timeouts.
pub(crate) fn daemon(name: &str) -> DaemonProcess {
    DaemonProcess::start(
        &workspace_binary("shadowcopyd"),
        name,
        "[events]\nidentify_timeout_s = 20\nprepare_for_backup_timeout_s = 20\n\
         prepare_for_snapshot_timeout_s = 20\nthaw_timeout_s = 20\npost_snapshot_timeout_s = 20\n",
    )
}

/// Runs the declaration in `file` in-process, through the entry point shadowcopyd uses for
/// hosted writers, until the returned sender is used or dropped.
pub(crate) fn run_in_process(
    file: &Path,
    socket: &Path,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let declaration = Declaration::load(file).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let socket = socket.to_path_buf();
    let task = tokio::spawn(async move {
        declaration::run(declaration, &socket, async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, task)
}

/// A requester client of `daemon`, once the writer called `name` is registered with it.
pub(crate) async fn client_when_registered(daemon: &DaemonProcess, name: &str) -> Client {
    let client = Client::connect(daemon.socket()).await.unwrap();
    registered(&client, name).await;
    client
}

/// Waits until a writer named `name` is registered; returns its status.
pub(crate) async fn registered(client: &Client, name: &str) -> WriterStatus {
    let start = Instant::now();
    loop {
        let writers = client.admin().list_writers(false).await.unwrap();
        if let Some(info) = writers.into_iter().find(|w| w.status.writer_name == name) {
            return info.status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "writer {name} never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A backup that went through DoSnapshotSet.
pub(crate) struct Backup {
    /// The session, before BackupComplete.
    pub(crate) session: BackupSession,
    /// The set.
    pub(crate) set_id: SnapshotSetId,
    /// Where the copy of the volume can be read.
    pub(crate) copy: PathBuf,
    /// The selected component.
    pub(crate) key: ComponentKey,
    /// The writer's WMD as gathered.
    pub(crate) wmd: WriterMetadata,
}

/// A component-mode full backup of `mount` with the component `logical_path\name` of the writer
/// called `writer`, up to and including DoSnapshotSet.
pub(crate) async fn backup(
    client: &Client,
    writer: &str,
    logical_path: &str,
    name: &str,
    mount: &Path,
) -> Backup {
    let (mut session, writers) = full_backup(client).await;
    let wmd = writer_named(&writers, writer).clone();
    let key = file_group(&wmd, logical_path, name);
    session.add_component(&key).await.unwrap();
    let (set_id, snapshots) = snapshot_volumes(&mut session, &[mount]).await;
    let copy = snapshot_path(&mut session, snapshots[0]).await;
    Backup {
        session,
        set_id,
        copy,
        key,
        wmd,
    }
}

impl Backup {
    /// The writer's status in this session.
    pub(crate) async fn status(&mut self) -> WriterStatus {
        let instance = self.wmd.identity.instance_id;
        self.session
            .gather_writer_status()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.instance_id == instance)
            .expect("the writer is in the session's status")
    }

    /// Marks the component backed up, completes and releases the session.
    pub(crate) async fn finish(self) {
        complete(self.session, &[self.key]).await;
    }
}

/// The `KEY=value` lines of an `env` dump, as a map (values of one line only).
pub(crate) fn env_file(path: &Path) -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
