//! shadowcopyd under systemd's protocols, without systemd as PID 1 (docs/systemd.md):
//!
//! - socket activation through Debian's `systemd-socket-activate`: the daemon serves the socket it
//!   is handed (same file, same inode, systemd's mode) and binds none of its own, and a requester
//!   whose connection started it finds the hosted writers already registered; a passed descriptor
//!   that is no listening Unix stream socket (a datagram socket, /dev/null, two sockets, none) is
//!   refused before anything starts, with what to change;
//! - the notify protocol on a datagram socket of the test, by path and by abstract name: READY=1
//!   arrives only once the control socket answers and the hosted writer is registered, STOPPING=1
//!   on SIGTERM, and neither variable reaches the commands of hosted writers;
//! - the journal format on a datagram socket standing in for journald: entries carry the set id,
//!   writer and phase as fields, and `$JOURNAL_STREAM` naming stderr selects the format.

use std::collections::BTreeMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shadowcopy_requester::Client;
use shadowcopy_test_support::sets::{
    complete, file_group, full_backup, snapshot_volumes, writer_named,
};
use shadowcopy_test_support::{TEST_CONFIG, TempDir, unix_socket_listening, wait_until};

const SHADOWCOPYD: &str = env!("CARGO_BIN_EXE_shadowcopyd");

/// Debian's test tool for socket activation, from the `systemd` package.
fn socket_activate() -> PathBuf {
    let tool = PathBuf::from("/usr/bin/systemd-socket-activate");
    assert!(
        tool.exists(),
        "{} is missing: install Debian's systemd package (scripts/install-deps.sh --test)",
        tool.display()
    );
    tool
}

/// A script writer declaration with a component on the simulated volume `/sim/ok/vol`; its
/// identify command writes its environment to `env_file`.
fn declaration(name: &str, env_file: &Path) -> String {
    format!(
        "kind = \"script\"\nname = \"{name}\"\n[script]\nidentify = \"env > '{}'\"\n\
         freeze = \"true\"\nthaw = \"true\"\n[[script.components]]\nname = \"data\"\n\
         files = [{{ path = \"/sim/ok/vol/data\" }}]\n",
        env_file.display()
    )
}

/// A test's directory: the configuration, a writers directory holding `writer`'s declaration, and
/// the paths the daemon is given.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new(name: &str, writer: &str) -> Setup {
        let dir = TempDir::new(name);
        std::fs::write(dir.join("shadowcopyd.toml"), TEST_CONFIG).unwrap();
        std::fs::create_dir_all(dir.join("writers.d")).unwrap();
        std::fs::write(
            dir.join("writers.d/10-script.toml"),
            declaration(writer, &dir.join("identify.env")),
        )
        .unwrap();
        Setup { dir }
    }

    /// shadowcopyd's arguments, with `socket` as its configured socket.
    fn args(&self, socket: &Path) -> Vec<String> {
        [
            "--config".to_owned(),
            self.dir.join("shadowcopyd.toml").display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--state-dir".into(),
            self.dir.join("state").display().to_string(),
            "--expose-dir".into(),
            self.dir.join("exposed").display().to_string(),
            "--writers-dir".into(),
            self.dir.join("writers.d").display().to_string(),
        ]
        .into()
    }

    fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Starts `command` with stderr into the log; killed when the guard drops.
    fn spawn(&self, mut command: Command) -> Running {
        let child = command
            .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info,tonic=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log()).unwrap())
            .spawn()
            .expect("the daemon starts");
        Running { child }
    }
}

/// A daemon process, killed and reaped when dropped.
struct Running {
    child: Child,
}

impl Running {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_activated_daemon_serves_the_passed_socket_and_binds_none() {
    let setup = Setup::new("socket-activated", "activated-script");
    let socket = setup.dir.join("shadowcopyd.sock");
    let mut command = Command::new(socket_activate());
    command
        .arg("--listen")
        .arg(&socket)
        .arg("--fdname=shadowcopyd")
        .arg(SHADOWCOPYD)
        .args(setup.args(&socket));
    let mut daemon = setup.spawn(command);
    // systemd-socket-activate binds (the file appears) before it listens; a connection in between
    // is refused. Waiting for the listening state, not for the file, leaves the first connection
    // to the requester below.
    assert!(
        wait_until(Duration::from_secs(20), || unix_socket_listening(&socket)),
        "systemd-socket-activate made no listening socket: {}",
        setup.log_text()
    );
    let made = std::fs::metadata(&socket).unwrap();

    // This connection is what starts shadowcopyd. The session gathers the writers at once: the
    // hosted writer is there although the requester connected before the daemon even ran.
    let client = Client::connect(&socket).await.unwrap();
    let (session, writers) = full_backup(&client).await;
    writer_named(&writers, "activated-script");
    drop(session);
    let status = client.admin().get_status().await.unwrap();
    assert!(
        status.daemon_version.contains(env!("CARGO_PKG_VERSION")),
        "{status:?}"
    );

    let log = setup.log_text();
    assert!(
        log.contains("socket-activated") && log.contains("shadowcopyd"),
        "the daemon says it serves the passed socket, with its name: {log}"
    );
    let serving = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        serving.ino(),
        made.ino(),
        "the socket file is still systemd's: the daemon bound no socket of its own there"
    );
    assert_eq!(
        serving.mode() & 0o7777,
        made.mode() & 0o7777,
        "the daemon left the socket's mode to its maker"
    );
    let sockets: Vec<_> = std::fs::read_dir(&setup.dir.0)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_socket())
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(sockets, ["shadowcopyd.sock"], "no other socket was bound");

    drop(client);
    let status = daemon.terminate();
    assert!(status.success(), "{status}: {}", setup.log_text());
    assert!(
        socket.exists(),
        "the daemon does not remove a socket systemd owns"
    );
}

/// Runs shadowcopyd through `sh -c` with `redirections` applied and `LISTEN_PID` set to its pid
/// and `LISTEN_FDS` to `count`; returns its exit status and log once it has exited.
fn run_with_passed_fds(setup: &Setup, count: &str, redirections: &str) -> (ExitStatus, String) {
    let script =
        format!("export LISTEN_PID=$$ LISTEN_FDS={count}; exec \"$0\" \"$@\" {redirections}");
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .arg(SHADOWCOPYD)
        .args(setup.args(&setup.dir.join("configured.sock")));
    let mut daemon = setup.spawn(command);
    let status = daemon.child.wait().unwrap();
    (status, setup.log_text())
}

#[test]
fn an_unusable_passed_socket_is_refused_with_what_to_change() {
    let cases = [
        ("1", "3</dev/null", "/dev/null, not a socket"),
        ("2", "3</dev/null 4</dev/null", "exactly one"),
        ("1", "3<&-", "not open"),
        ("many", "3</dev/null", "not a number"),
    ];
    for (count, redirections, says) in cases {
        let setup = Setup::new("activation-refused", "refused-script");
        let (status, log) = run_with_passed_fds(&setup, count, redirections);
        assert!(
            !status.success(),
            "LISTEN_FDS={count} {redirections}: served: {log}"
        );
        assert!(
            log.contains(says) && log.contains("socket activation"),
            "LISTEN_FDS={count} {redirections}: the refusal says {says:?}: {log}"
        );
        assert!(
            !setup.dir.join("configured.sock").exists() && !setup.dir.join("state").exists(),
            "refused before anything started: nothing bound, no state directory"
        );
    }

    // A datagram socket from systemd-socket-activate --datagram (ListenDatagram=).
    let setup = Setup::new("activation-datagram", "datagram-script");
    let socket = setup.dir.join("datagram.sock");
    let mut command = Command::new(socket_activate());
    command
        .arg("--datagram")
        .arg("--listen")
        .arg(&socket)
        .arg(SHADOWCOPYD)
        .args(setup.args(&setup.dir.join("configured.sock")));
    let mut daemon = setup.spawn(command);
    assert!(
        wait_until(Duration::from_secs(20), || socket.exists()),
        "no datagram socket: {}",
        setup.log_text()
    );
    // A datagram is the "communication attempt" that makes it start the daemon.
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"hello", &socket)
        .unwrap();
    let status = daemon.child.wait().unwrap();
    let log = setup.log_text();
    assert!(!status.success(), "served a datagram socket: {log}");
    assert!(
        log.contains("datagram") && log.contains("ListenStream="),
        "the refusal names the socket's type and the setting: {log}"
    );
    assert!(!setup.dir.join("configured.sock").exists());
}

/// Where the daemon notifies, and how the test reads it.
enum NotifyAt {
    Path(PathBuf),
    Abstract(String),
}

/// Runs the daemon with `NOTIFY_SOCKET` at `at`, and checks READY=1 (only once the socket
/// answers and the hosted writer is registered), the environment of the hosted writer's
/// commands, and STOPPING=1 on SIGTERM.
async fn check_notifications(setup: &Setup, at: NotifyAt) {
    let (receiver, address) = match &at {
        NotifyAt::Path(path) => (
            UnixDatagram::bind(path).unwrap(),
            path.display().to_string(),
        ),
        NotifyAt::Abstract(name) => (
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap(),
            format!("@{name}"),
        ),
    };
    // Bounds a hang only: a daemon that never notifies fails the test after a minute.
    receiver
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let receive = |what: &str| {
        let mut buffer = [0u8; 4096];
        let length = receiver.recv(&mut buffer).unwrap_or_else(|error| {
            panic!("no {what} notification ({error}): {}", setup.log_text())
        });
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    };
    let socket = setup.dir.join("shadowcopyd.sock");
    let mut command = Command::new(SHADOWCOPYD);
    command
        .args(setup.args(&socket))
        .env("NOTIFY_SOCKET", &address);
    let mut daemon = setup.spawn(command);

    let ready = receive("READY=1");
    assert!(
        ready.lines().any(|line| line == "READY=1"),
        "the first notification is READY=1: {ready:?}"
    );
    assert!(
        ready.contains(&format!("STATUS=serving on {}", socket.display()))
            && ready.contains("1 hosted writers"),
        "{ready:?}"
    );
    // READY=1 came after the socket serves and the hosted writer registered: both hold now,
    // without waiting.
    let client = Client::connect(&socket).await.unwrap();
    let listed = client.admin().list_writers(false).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|w| w.status.writer_name == "notified-script"),
        "the hosted writer registered before READY=1: {listed:?}"
    );
    // Identify runs the writer's command: the service manager's variables are not passed on.
    let (session, _) = full_backup(&client).await;
    drop(session);
    let env = std::fs::read_to_string(setup.dir.join("identify.env")).unwrap();
    for variable in ["NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS"] {
        assert!(
            !env.lines()
                .any(|line| line.starts_with(&format!("{variable}="))),
            "{variable} reached a hosted writer's command:\n{env}"
        );
    }
    drop(client);

    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    let stopping = receive("STOPPING=1");
    assert!(
        stopping.lines().any(|line| line == "STOPPING=1"),
        "{stopping:?}"
    );
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", setup.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_stopping_reach_a_path_notify_socket() {
    let setup = Setup::new("notify-path", "notified-script");
    let path = setup.dir.join("notify.sock");
    check_notifications(&setup, NotifyAt::Path(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_stopping_reach_an_abstract_notify_socket() {
    let setup = Setup::new("notify-abstract", "notified-script");
    let name = format!("shadowcopy-test-notify-{}", std::process::id());
    check_notifications(&setup, NotifyAt::Abstract(name)).await;
}

/// A datagram socket standing in for journald, read by a thread of its own into a list of
/// entries, so that the daemon's non-blocking sends find room; the guard shuts the socket down and
/// joins the thread.
struct FakeJournal {
    path: PathBuf,
    entries: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    socket: UnixDatagram,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl FakeJournal {
    fn bind(path: PathBuf) -> FakeJournal {
        let socket = UnixDatagram::bind(&path).unwrap();
        let entries = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&entries);
        let reading = socket.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                match reading.recv(&mut buffer) {
                    // Shut down by the guard (the daemon never sends an empty entry).
                    Ok(0) | Err(_) => break,
                    Ok(length) => {
                        let entry = shadowcopy_logging::parse_journal_entry(&buffer[..length])
                            .expect("entries in the native protocol");
                        kept.lock().unwrap().push(entry);
                    }
                }
            }
        });
        FakeJournal {
            path,
            entries,
            socket,
            reader: Some(reader),
        }
    }

    fn entries(&self) -> Vec<BTreeMap<String, String>> {
        self.entries.lock().unwrap().clone()
    }
}

impl Drop for FakeJournal {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_entries_carry_the_set_id_writer_and_phase() {
    let setup = Setup::new("journal-format", "journal-script");
    let journal = FakeJournal::bind(setup.dir.join("journal.sock"));
    let socket = setup.dir.join("shadowcopyd.sock");
    let mut command = Command::new(SHADOWCOPYD);
    command
        .args(setup.args(&socket))
        .arg("--log-format")
        .arg("journal")
        .env("SHADOWCOPY_JOURNAL_SOCKET", &journal.path);
    let mut daemon = setup.spawn(command);
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }),
        "the daemon did not serve: {}",
        setup.log_text()
    );

    // One set with the hosted writer frozen and thawed.
    let client = Client::connect(&socket).await.unwrap();
    let (mut session, writers) = full_backup(&client).await;
    let key = file_group(writer_named(&writers, "journal-script"), "", "data");
    session.add_component(&key).await.unwrap();
    let (set, _) = snapshot_volumes(&mut session, &["/sim/ok/vol"]).await;
    complete(session, &[key]).await;
    drop(client);
    let status = daemon.terminate();
    assert!(status.success(), "{status}");

    let set = set.to_string();
    let has_all = |entry: &BTreeMap<String, String>| {
        entry.get("SHADOWCOPY_SET_ID") == Some(&set)
            && entry.get("SHADOWCOPY_WRITER").map(String::as_str) == Some("journal-script")
            && entry.contains_key("SHADOWCOPY_PHASE")
    };
    assert!(
        wait_until(Duration::from_secs(20), || journal
            .entries()
            .iter()
            .any(has_all)),
        "no entry names set {set}, the writer and a phase: {:#?}",
        journal.entries()
    );
    let entries = journal.entries();
    let phases: Vec<&str> = entries
        .iter()
        .filter(|entry| has_all(entry))
        .map(|entry| entry["SHADOWCOPY_PHASE"].as_str())
        .collect();
    assert!(
        phases.contains(&"freeze") || phases.contains(&"thaw"),
        "the writer's freeze or thaw is among them: {phases:?}"
    );
    let entry = entries.iter().find(|entry| has_all(entry)).unwrap();
    for field in ["MESSAGE", "PRIORITY", "CODE_FILE", "SHADOWCOPY_TARGET"] {
        assert!(entry.contains_key(field), "{field} in {entry:#?}");
    }
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "shadowcopyd");
    assert!(
        entries
            .iter()
            .any(|entry| entry["MESSAGE"] == "shadowcopyd listening" && entry["PRIORITY"] == "6"),
        "info records are PRIORITY=6"
    );
    assert_eq!(
        setup.log_text(),
        "",
        "in the journal format nothing goes to stderr as well"
    );
}

#[test]
fn journal_stream_naming_stderr_selects_the_journal() {
    for (names_stderr, expect_journal) in [(true, true), (false, false)] {
        let setup = Setup::new("journal-stream", "stream-script");
        let journal = FakeJournal::bind(setup.dir.join("journal.sock"));
        let socket = setup.dir.join("shadowcopyd.sock");
        // The log file is the daemon's stderr; JOURNAL_STREAM names it, or another file.
        let stderr = std::fs::File::create(setup.log()).unwrap();
        let named = if names_stderr {
            stderr.metadata().unwrap()
        } else {
            std::fs::metadata(setup.dir.join("shadowcopyd.toml")).unwrap()
        };
        let mut daemon = Running {
            child: Command::new(SHADOWCOPYD)
                .args(setup.args(&socket))
                .env("JOURNAL_STREAM", format!("{}:{}", named.dev(), named.ino()))
                .env("SHADOWCOPY_JOURNAL_SOCKET", &journal.path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        };
        assert!(
            wait_until(Duration::from_secs(20), || {
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            }),
            "the daemon did not serve: {}",
            setup.log_text()
        );
        assert!(daemon.terminate().success());
        let listening = |entries: &[BTreeMap<String, String>]| {
            entries
                .iter()
                .any(|entry| entry["MESSAGE"] == "shadowcopyd listening")
        };
        if expect_journal {
            assert!(
                wait_until(Duration::from_secs(20), || listening(&journal.entries())),
                "JOURNAL_STREAM names stderr: records go to the journal: {:#?}",
                journal.entries()
            );
            assert_eq!(setup.log_text(), "", "and not to stderr");
        } else {
            assert!(
                setup.log_text().contains("shadowcopyd listening"),
                "JOURNAL_STREAM names another file: text on stderr: {}",
                setup.log_text()
            );
            assert!(journal.entries().is_empty(), "{:#?}", journal.entries());
        }
    }
}
