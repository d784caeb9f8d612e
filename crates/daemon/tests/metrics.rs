//! The Prometheus endpoint (`[metrics]`, docs/metrics.md), scraped with Debian's `curl` as an
//! operator would: a backup of a btrfs loop volume with an SDK writer shows its set, the writer and
//! a freeze window that contains the writer's own; a set the simulated provider fails counts under
//! its code; only GET /metrics is served; and without `[metrics]` the daemon listens on nothing but
//! its control socket.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shadowcopy_metadata::WriterClassId;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::SnapshotContext;
use shadowcopy_metadata::wmd::WriterMetadata;
use shadowcopy_requester::Client;
use shadowcopy_test_support::proc_net::listening_unix_sockets;
use shadowcopy_test_support::sets::{
    file_group, full_backup, one_file_writer, session_in_context, wait_for,
};
use shadowcopy_test_support::{DaemonProcess, LoopVolume, MIB, TempDir};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterOptions};

fn shadowcopyd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shadowcopyd"))
}

/// Where a test's endpoint listens, and how curl reaches it.
enum Endpoint {
    Unix(PathBuf),
    Tcp(u16),
}

impl Endpoint {
    fn config(&self) -> String {
        match self {
            Endpoint::Unix(path) => format!("[metrics]\nlisten = \"unix:{}\"\n", path.display()),
            Endpoint::Tcp(port) => format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        }
    }

    /// `curl` with `args`, aimed at `path`: (HTTP status, content type, body).
    fn curl(&self, path: &str, args: &[&str]) -> (u16, String, String) {
        let mut command = Command::new("curl");
        command.args(["--silent", "--show-error", "--max-time", "30"]);
        command.args(["--write-out", "\n%{http_code} %{content_type}"]);
        let url = match self {
            Endpoint::Unix(socket) => {
                command.arg("--unix-socket").arg(socket);
                format!("http://localhost{path}")
            }
            Endpoint::Tcp(port) => format!("http://127.0.0.1:{port}{path}"),
        };
        let output = command
            .args(args)
            .arg(url)
            .output()
            .expect("curl runs (scripts/install-deps.sh --test installs it)");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "curl {path} failed: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (body, trailer) = stdout.rsplit_once('\n').unwrap();
        let (status, content_type) = trailer.split_once(' ').unwrap();
        // The body ends with its own line feed, before the one --write-out adds.
        (
            status.parse().unwrap(),
            content_type.to_owned(),
            body.to_owned(),
        )
    }

    /// A scrape: checks status and content type and returns the text.
    fn scrape(&self) -> Scrape {
        let (status, content_type, body) = self.curl("/metrics", &[]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        Scrape(body)
    }
}

/// A free TCP port on loopback: bound and released, so a daemon started next can take it.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One scrape's text.
struct Scrape(String);

impl Scrape {
    /// The value of the series written exactly as `series` (name and labels, in the daemon's
    /// label order), if present.
    fn value(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
    }

    /// The value of `series`; panics with the scrape when it is missing.
    fn get(&self, series: &str) -> f64 {
        self.value(series)
            .unwrap_or_else(|| panic!("no {series} in the scrape:\n{}", self.0))
    }

    /// The series lines that start with `prefix`.
    fn lines_starting(&self, prefix: &str) -> Vec<&str> {
        self.0.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    /// Every family has help and type lines before its samples.
    fn assert_well_formed(&self) {
        let mut typed = BTreeSet::new();
        for line in self.0.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| typed.contains(*base))
                    .unwrap_or(name);
                assert!(typed.contains(family), "{line} has no TYPE line before it");
                assert!(name.starts_with("shadowcopy_"), "{line}");
            }
        }
    }
}

/// When the writer's own freeze began and its thaw ended.
#[derive(Default)]
struct Observed {
    frozen: Option<Instant>,
    thawed: Option<Instant>,
}

/// A writer owning one file that notes when it froze and when its Thaw handler finished.
struct TimingWriter {
    class_id: WriterClassId,
    file: PathBuf,
    observed: Arc<Mutex<Observed>>,
}

impl Writer for TimingWriter {
    fn metadata(&self) -> WriterMetadata {
        one_file_writer("metrics-writer", self.class_id, &self.file)
    }

    async fn on_freeze(&self, _ctx: &EventContext) -> HandlerResult {
        self.observed.lock().unwrap().frozen = Some(Instant::now());
        Ok(())
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
        std::fs::write(&self.file, "after the freeze\n").expect("the volume is writable again");
        self.observed.lock().unwrap().thawed = Some(Instant::now());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_shows_its_set_and_freeze_window() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let mount = volume.mount_point().to_str().unwrap().to_owned();
    let file = volume.path("data.txt");
    std::fs::write(&file, "before the freeze\n").unwrap();
    let sockets = TempDir::new("metrics-backup-endpoint");
    let endpoint = Endpoint::Unix(sockets.join("metrics.sock"));
    // The default providers (btrfs), no simulated ones.
    let daemon = DaemonProcess::start(shadowcopyd(), "metrics-backup", &endpoint.config());

    // Before any set: the counters are there at zero, the per-set series are not.
    let before = endpoint.scrape();
    before.assert_well_formed();
    assert_eq!(before.get("shadowcopy_snapshot_sets_created_total"), 0.0);
    assert_eq!(before.get("shadowcopy_freeze_window_seconds_count"), 0.0);
    assert!(
        before
            .lines_starting("shadowcopy_snapshot_sets_failed_total")
            .is_empty()
    );
    assert!(before.lines_starting("shadowcopy_last_").is_empty());
    assert_eq!(before.get("shadowcopy_writers_registered"), 0.0);
    assert_eq!(
        before.get(&format!(
            "shadowcopy_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );

    let class_id = WriterClassId::new_random();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let writer = TimingWriter {
        class_id,
        file: file.clone(),
        observed: Arc::clone(&observed),
    };
    let mut handle =
        shadowcopy_writer_sdk::spawn(writer, WriterOptions::with_socket(daemon.socket()));
    handle.registered().await.expect("the writer registers");

    let client = Client::connect(daemon.socket()).await.unwrap();
    let (mut session, writers) = full_backup(&client).await;
    let wmd = writers
        .iter()
        .find(|w| w.identity.class_id == class_id)
        .expect("our writer answered");
    let key = file_group(wmd, "", "data");
    session.add_component(&key).await.unwrap();
    let set = session.start_snapshot_set().await.unwrap();
    session.add_to_snapshot_set(&mount, None).await.unwrap();
    session.prepare_for_backup().await.unwrap();
    let called = Instant::now();
    session.do_snapshot_set().await.unwrap();
    let call = called.elapsed();
    let writer_window = {
        let observed = observed.lock().unwrap();
        observed.thawed.expect("thawed") - observed.frozen.expect("frozen")
    };

    // The session is still open: its copy exists and the writer waits for BackupComplete.
    let after = endpoint.scrape();
    after.assert_well_formed();
    assert_eq!(after.get("shadowcopy_snapshot_sets_created_total"), 1.0);
    assert_eq!(
        after.get(&format!(
            "shadowcopy_last_snapshot_set_info{{set_id=\"{set}\",context=\"BACKUP\",\
             outcome=\"created\",code=\"S_OK\"}}"
        )),
        1.0
    );
    // The coordinator's window runs from sending Freeze to hearing Thaw answered, so it holds
    // the writer's own (Freeze handled to Thaw handled) and lies inside the requester's call.
    let window = after.get(&format!(
        "shadowcopy_last_freeze_window_seconds{{set_id=\"{set}\"}}"
    ));
    assert!(
        window >= writer_window.as_secs_f64(),
        "the coordinator's freeze window {window} s is shorter than the writer's own {writer_window:?}"
    );
    assert!(
        window <= call.as_secs_f64(),
        "the freeze window {window} s outlasts the DoSnapshotSet call ({call:?})"
    );
    assert_eq!(after.get("shadowcopy_freeze_window_seconds_count"), 1.0);
    assert_eq!(after.get("shadowcopy_freeze_window_seconds_sum"), window);
    assert_eq!(
        after.get("shadowcopy_freeze_window_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    assert_eq!(
        after.get("shadowcopy_freeze_window_seconds_bucket{le=\"60\"}"),
        1.0,
        "a freeze inside the 60 s bucket"
    );
    assert_eq!(
        after.get("shadowcopy_snapshot_set_duration_seconds_count"),
        1.0
    );
    let duration = after.get(&format!(
        "shadowcopy_last_snapshot_set_duration_seconds{{set_id=\"{set}\"}}"
    ));
    assert!(
        window <= duration && duration <= call.as_secs_f64(),
        "{duration}"
    );
    assert!(
        after
            .value(&format!(
                "shadowcopy_last_snapshot_set_timestamp_seconds{{set_id=\"{set}\"}}"
            ))
            .is_some()
    );
    assert_eq!(after.get("shadowcopy_snapshot_set_in_creation"), 0.0);

    assert_eq!(after.get("shadowcopy_writers_registered"), 1.0);
    let states = after.lines_starting(&format!(
        "shadowcopy_writer_state{{writer=\"metrics-writer\",class_id=\"{class_id}\",instance_name=\"\",state="
    ));
    assert_eq!(states.len(), 1, "one state per writer: {states:?}");
    assert!(
        states[0].ends_with(" 1"),
        "the writer's current state: {states:?}"
    );
    assert_eq!(
        after.get("shadowcopy_sessions_active{kind=\"backup\"}"),
        1.0
    );
    assert_eq!(
        after.get("shadowcopy_sessions_active{kind=\"restore\"}"),
        0.0
    );

    assert_eq!(after.get("shadowcopy_shadow_copies_listed"), 1.0);
    assert_eq!(
        after.get(&format!(
            "shadowcopy_shadow_copies{{volume=\"{mount}\",provider=\"btrfs\"}}"
        )),
        1.0
    );
    let used = after.get(&format!(
        "shadowcopy_volume_used_bytes{{volume=\"{mount}\"}}"
    ));
    let size = after.get(&format!(
        "shadowcopy_volume_size_bytes{{volume=\"{mount}\"}}"
    ));
    let stats = nix::sys::statvfs::statvfs(volume.mount_point()).unwrap();
    assert_eq!(
        size,
        (stats.blocks() * stats.fragment_size()) as f64,
        "the file system's size"
    );
    assert!(0.0 < used && used <= size, "used {used} of {size}");

    session.set_backup_succeeded(&key, true).await.unwrap();
    session.backup_complete().await.unwrap();
    session.release().await.unwrap();

    // Auto-release: the copy goes with the session, and so do its series; the counts stay.
    let copy = format!("shadowcopy_shadow_copies{{volume=\"{mount}\",provider=\"btrfs\"}}");
    wait_for(
        "the copy to leave the metrics after release",
        Duration::from_secs(10),
        || endpoint.scrape().value(&copy).is_none(),
    )
    .await;
    let released = endpoint.scrape();
    assert_eq!(released.get("shadowcopy_snapshot_sets_created_total"), 1.0);
    assert_eq!(
        released.get("shadowcopy_sessions_active{kind=\"backup\"}"),
        0.0
    );
    assert!(
        released
            .lines_starting("shadowcopy_volume_used_bytes")
            .is_empty()
    );

    handle.stop();
    handle.join().await.ok();
    // An orderly stop takes the metrics socket with it.
    let mut daemon = daemon;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", daemon.log_text());
    assert!(
        !sockets.join("metrics.sock").exists(),
        "the metrics socket goes with the daemon"
    );
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_set_counts_under_its_code() {
    let endpoint = Endpoint::Tcp(free_port());
    let config = format!("[providers]\nsimulated = true\n{}", endpoint.config());
    let daemon = DaemonProcess::start(shadowcopyd(), "metrics-failed", &config);
    let client = Client::connect(daemon.socket()).await.unwrap();

    // One set that works, then one the simulated provider fails at CommitSnapshots; writerless
    // and persistent, so no writer or prepare step is needed.
    let mut ok = session_in_context(&client, SnapshotContext::NasRollback).await;
    ok.start_snapshot_set().await.unwrap();
    ok.add_to_snapshot_set("/sim/ok/metrics", None)
        .await
        .unwrap();
    ok.do_snapshot_set().await.unwrap();
    ok.release().await.unwrap();

    let mut failing = session_in_context(&client, SnapshotContext::NasRollback).await;
    let set = failing.start_snapshot_set().await.unwrap();
    failing
        .add_to_snapshot_set("/sim/fail-at-commit/metrics", None)
        .await
        .unwrap();
    let error = failing.do_snapshot_set().await.unwrap_err();
    assert_eq!(
        error.code().name,
        codes::VSS_E_UNEXPECTED_PROVIDER_ERROR.name
    );
    failing.abort_backup().await.unwrap();
    failing.release().await.unwrap();

    let scrape = endpoint.scrape();
    scrape.assert_well_formed();
    assert_eq!(scrape.get("shadowcopy_snapshot_sets_created_total"), 1.0);
    assert_eq!(
        scrape
            .get("shadowcopy_snapshot_sets_failed_total{code=\"VSS_E_UNEXPECTED_PROVIDER_ERROR\"}"),
        1.0
    );
    assert_eq!(
        scrape
            .lines_starting("shadowcopy_snapshot_sets_failed_total")
            .len(),
        1,
        "one code failed"
    );
    assert_eq!(
        scrape.get(&format!(
            "shadowcopy_last_snapshot_set_info{{set_id=\"{set}\",context=\"NAS_ROLLBACK\",\
             outcome=\"failed\",code=\"VSS_E_UNEXPECTED_PROVIDER_ERROR\"}}"
        )),
        1.0
    );
    // No writer took part in either set: no freeze window was measured.
    assert_eq!(scrape.get("shadowcopy_freeze_window_seconds_count"), 0.0);
    assert!(
        scrape
            .lines_starting("shadowcopy_last_freeze_window_seconds")
            .is_empty()
    );
    assert_eq!(
        scrape.get("shadowcopy_snapshot_set_duration_seconds_count"),
        2.0
    );
    // The persistent copy of the first set is listed; a simulated volume has no file system.
    assert_eq!(
        scrape.get("shadowcopy_shadow_copies{volume=\"/sim/ok/metrics\",provider=\"simulated\"}"),
        1.0
    );
    assert!(scrape.lines_starting("shadowcopy_volume_").is_empty());
}

#[test]
fn only_get_metrics_is_served() {
    let endpoint = Endpoint::Tcp(free_port());
    let _daemon = DaemonProcess::start(shadowcopyd(), "metrics-refusals", &endpoint.config());
    let (status, _, body) = endpoint.curl("/", &[]);
    assert_eq!(status, 404);
    assert!(body.contains("only GET /metrics"), "{body}");
    let (status, _, body) = endpoint.curl("/metrics/extra", &[]);
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = endpoint.curl("/metrics", &["--request", "POST"]);
    assert_eq!(status, 405);
    assert!(body.contains("POST is not allowed"), "{body}");
    let (status, _, body) = endpoint.curl("/metrics", &["--include", "--request", "DELETE"]);
    assert_eq!(status, 405);
    assert!(body.contains("allow: GET"), "the Allow header: {body}");
    // A query string is what some scrapers add; it is ignored.
    let (status, _, body) = endpoint.curl("/metrics?debug=1", &[]);
    assert_eq!(status, 200, "{body}");
}

/// Every listening socket of process `pid`: `tcp <hex address>` and `unix <path>` entries, from
/// the socket inodes among its descriptors and the kernel's socket tables.
fn listening_sockets(pid: u32) -> Vec<String> {
    let mut inodes = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let Ok(target) = std::fs::read_link(entry.unwrap().path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut listening = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // st 0A is LISTEN; the inode is the tenth field.
            if fields[3] == "0A" && inodes.contains(fields[9]) {
                listening.push(format!("tcp {}", fields[1]));
            }
        }
    }
    let table = PathBuf::from(format!("/proc/{pid}/net/unix"));
    for socket in listening_unix_sockets(&table) {
        if inodes.contains(&socket.inode) {
            let path = socket.path.unwrap_or_default();
            listening.push(format!("unix {}", path.display()));
        }
    }
    listening.sort();
    listening
}

#[test]
fn without_metrics_nothing_listens_but_the_control_socket() {
    let daemon = DaemonProcess::start(shadowcopyd(), "metrics-off", "");
    assert_eq!(
        listening_sockets(daemon.pid()),
        vec![format!("unix {}", daemon.socket().display())],
        "metrics are off by default"
    );
    drop(daemon);

    // The same check sees the endpoint when it is on.
    let sockets = TempDir::new("metrics-on-endpoint");
    let endpoint = sockets.join("metrics.sock");
    let daemon = DaemonProcess::start(
        shadowcopyd(),
        "metrics-on",
        &Endpoint::Unix(endpoint.clone()).config(),
    );
    let mut want = vec![
        format!("unix {}", daemon.socket().display()),
        format!("unix {}", endpoint.display()),
    ];
    want.sort();
    assert_eq!(listening_sockets(daemon.pid()), want);
}

#[test]
fn a_metrics_address_in_use_stops_the_daemon_with_the_setting_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("metrics-in-use");
    let config = dir.join("shadowcopyd.toml");
    std::fs::write(&config, Endpoint::Tcp(port).config()).unwrap();
    let output = Command::new(shadowcopyd())
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.join("shadowcopyd.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--expose-dir")
        .arg(dir.join("exposed"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("the metrics endpoint 127.0.0.1:{port}"))
            && stderr.contains("metrics.listen"),
        "{stderr}"
    );
    assert!(
        !dir.join("shadowcopyd.sock").exists(),
        "a daemon that did not start leaves no control socket"
    );
}
