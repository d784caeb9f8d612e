//! The cgroup-freeze writer against a real application: a shell loop that writes a counter file on
//! a btrfs loop volume made for the test, in a cgroup the test creates under a unique name, backed
//! up through a real `shadowcopyd`. It shows that the application stands still for exactly the
//! freeze window (the shadow copy holds the counter seen while frozen), runs again after Thaw,
//! that the freeze-window timer and the kernel's freeze limit both end in a thaw (BK-SNAP-5,
//! BK-SNAP-8), and that a freeze left by a writer that died is thawed at the writer's next start.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shadowcopy_metadata::enums::ApplicationLevel;
use shadowcopy_metadata::wmd::WriterMetadata;
use shadowcopy_metadata::{SnapshotId, WriterClassId};
use shadowcopy_requester::{BackupSession, Client, ComponentKey};
use shadowcopy_test_support::sets::{
    file_group, full_backup, one_file_writer, start_set, writer_of_class,
};
use shadowcopy_test_support::{DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterHandle, WriterOptions};
use shadowcopy_writers::cgroup::{CgroupWriter, Freezer, FreezerError};
use shadowcopy_writers::declaration::Declaration;

/// Numbers the cgroups of this test process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A cgroup name no other test (or test run) uses: created directly under the cgroup root.
fn unique_name(tag: &str) -> String {
    format!(
        "shadowcopy-test-{}-{}-{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// The application: `sh` writing an ever-growing counter to `<dir>/counter` (write to a
/// temporary file, then rename, as careful applications do) through child processes (`mv`,
/// `sleep`) that inherit its cgroup. The guard thaws the cgroup, kills every process in it and
/// removes it, also when the test fails.
struct App {
    /// The shell.
    child: Child,
    /// Where the counter lives.
    dir: PathBuf,
    /// The cgroup it runs in, removed on drop.
    cgroup: Option<Freezer>,
}

impl App {
    /// Starts the application in `cgroup`: the shell waits for a line on stdin before it writes
    /// anything, so that every child it starts is inside the cgroup.
    fn start(dir: &Path, cgroup: Freezer, script: &str) -> App {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("read go; {script}"))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sh starts");
        // The guard exists before anything can fail, so that the shell is always killed.
        let app = App {
            child,
            dir: dir.to_owned(),
            cgroup: Some(cgroup),
        };
        app.cgroup()
            .adopt(&[app.child.id()])
            .expect("the test moves its app into the cgroup");
        let mut stdin: &ChildStdin = app.child.stdin.as_ref().unwrap();
        stdin.write_all(b"go\n").unwrap();
        app
    }

    /// The counting application.
    fn counting(dir: &Path, cgroup: Freezer) -> App {
        App::start(
            dir,
            cgroup,
            "i=0; while :; do i=$((i+1)); echo $i > counter.tmp; mv counter.tmp counter; sleep 0.01; done",
        )
    }

    fn cgroup(&self) -> &Freezer {
        self.cgroup.as_ref().unwrap()
    }

    /// The counter as the application last wrote it, once it wrote one.
    fn counter(&self) -> Option<u64> {
        read_counter(&self.dir.join("counter"))
    }

    /// Waits until the counter exists and then passes `above`: the application is running.
    fn wait_past(&self, above: u64) -> u64 {
        let start = Instant::now();
        loop {
            if let Some(value) = self.counter().filter(|value| *value > above) {
                return value;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the application never counted past {above} (cgroup frozen: {:?})",
                self.cgroup().is_frozen()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let Some(cgroup) = self.cgroup.take() else {
            return;
        };
        // Thaw first: on the v1 freezer a frozen process does not even die of SIGKILL.
        let _ = cgroup.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in cgroup.pids().unwrap_or_default() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let path = cgroup.path().to_owned();
        if let Err(error) = cgroup.remove() {
            eprintln!("cannot remove test cgroup {}: {error}", path.display());
        }
    }
}

fn read_counter(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The declaration of a cgroup writer named `name` whose `[cgroup]` table holds `target` (the
/// `cgroup = ...` or `pids = ...` line) and the usual rest.
fn declaration(
    name: &str,
    target: &str,
    volume: &Path,
    runtime: &Path,
    extra_top: &str,
) -> Declaration {
    let text = declaration_text(name, target, volume, runtime, extra_top);
    Declaration::parse(Path::new("cgroup-test.toml"), &text).expect("a valid declaration")
}

/// The text of the declaration of [`declaration`].
fn declaration_text(
    name: &str,
    target: &str,
    volume: &Path,
    runtime: &Path,
    extra_top: &str,
) -> String {
    format!(
        r#"
kind = "cgroup"
name = "{name}"
{extra_top}

[cgroup]
{target}
volumes = ["{volume}"]
runtime_dir = "{runtime}"

[[cgroup.components]]
name = "data"
caption = "the counter application"
files = [{{ path = "{volume}/app", filespec = "*", recursive = true }}]
"#,
        volume = volume.display(),
        runtime = runtime.display(),
    )
}

/// What the probe writer saw at its own Freeze, which comes after the cgroup writer's (it is a
/// BACK_END writer, the cgroup writer a FRONT_END one: ROLE-9) and before the providers commit.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// Whether the application's cgroup was frozen.
    frozen: bool,
    /// The counter file's value.
    counter: Option<u64>,
    /// The cgroup writer's marker file, if it existed.
    marker: Option<String>,
    /// At the probe's Thaw (which comes first: thaw goes in reverse level order): still frozen?
    frozen_at_thaw: Option<bool>,
    /// The counter at the probe's Thaw.
    counter_at_thaw: Option<u64>,
}

/// A writer of the test that looks at the application while the set is frozen.
struct Probe {
    class_id: WriterClassId,
    /// A file of the probe's own on the volume, so the probe takes part (component mode).
    file: PathBuf,
    cgroup: PathBuf,
    counter: PathBuf,
    marker: PathBuf,
    /// Instead of looking, wait until the cgroup is thawed (by the abort path) before returning.
    wait_for_thaw: bool,
    /// After looking, SIGKILL this process: the standalone cgroup writer, frozen by now.
    kill: Option<u32>,
    seen: Arc<Mutex<Seen>>,
}

impl Probe {
    fn frozen(&self) -> bool {
        Freezer::open(&self.cgroup)
            .and_then(|freezer| freezer.is_frozen())
            .expect("the probe reads the cgroup")
    }
}

impl Writer for Probe {
    fn metadata(&self) -> WriterMetadata {
        one_file_writer("cgroup-test-probe", self.class_id, &self.file)
    }

    async fn on_freeze(&self, _ctx: &EventContext) -> HandlerResult {
        if self.wait_for_thaw {
            // The window is far shorter than this; only the abort path can thaw the cgroup now,
            // because Thaw is not sent before this Freeze has returned.
            let start = Instant::now();
            while self.frozen() && start.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut seen = self.seen.lock().unwrap();
            seen.frozen = self.frozen();
            return Ok(());
        }
        let mut seen = self.seen.lock().unwrap();
        seen.frozen = self.frozen();
        seen.counter = read_counter(&self.counter);
        seen.marker = std::fs::read_to_string(&self.marker).ok();
        if let Some(pid) = self.kill {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("the probe kills the standalone writer");
        }
        Ok(())
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
        let mut seen = self.seen.lock().unwrap();
        seen.frozen_at_thaw = Some(self.frozen());
        seen.counter_at_thaw = read_counter(&self.counter);
        Ok(())
    }
}

/// The key of the `data` file group of the writer `class_id` among the gathered `writers`.
fn data_key(writers: &[WriterMetadata], class_id: WriterClassId) -> ComponentKey {
    file_group(writer_of_class(writers, class_id), "", "data")
}

/// Everything a set needs: the volume, the app, the daemon, the cgroup writer and the probe.
struct Rig {
    /// Held for the daemon; dropped before the volume closes.
    daemon: Option<DaemonProcess>,
    writers: Vec<WriterHandle>,
    cgroup_class: WriterClassId,
    probe_class: WriterClassId,
    seen: Arc<Mutex<Seen>>,
    marker: PathBuf,
    /// The standalone writer process, when the cgroup writer runs as one.
    standalone: Option<Standalone>,
}

/// A `shadowcopy-writer run FILE --socket S` process, killed on drop.
struct Standalone(Child);

impl Standalone {
    fn start(file: &Path, socket: &Path, log: &Path) -> Standalone {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shadowcopy-writer"))
            .arg("run")
            .arg(file)
            .arg("--socket")
            .arg(socket)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("shadowcopy-writer starts");
        Standalone(child)
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the cgroup writer runs.
enum Host<'a> {
    /// In the test process, through `shadowcopy_writer_sdk::spawn`.
    InProcess,
    /// As `shadowcopy-writer run` of this declaration file, which the probe SIGKILLs at Freeze.
    StandaloneKilledAtFreeze(&'a Path),
}

impl Rig {
    /// Starts the daemon, the cgroup writer of `declaration` and a probe watching `cgroup`.
    async fn start(
        name: &str,
        volume: &LoopVolume,
        declaration: &Declaration,
        cgroup: &Path,
        counter: &Path,
        wait_for_thaw: bool,
        host: Host<'_>,
    ) -> Rig {
        let probe_file = volume.path("probe.txt");
        std::fs::write(&probe_file, "probe\n").unwrap();
        // The default configuration: the btrfs provider.
        let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), name, "");
        let writer = CgroupWriter::from_declaration(declaration).expect("the writer builds");
        let marker = writer.marker().to_owned();
        let mut writers = Vec::new();
        let mut standalone = None;
        match host {
            Host::InProcess => {
                let mut handle =
                    shadowcopy_writer_sdk::spawn(writer, declaration.options(daemon.socket()));
                handle
                    .registered()
                    .await
                    .expect("the cgroup writer registers");
                writers.push(handle);
            }
            Host::StandaloneKilledAtFreeze(file) => {
                drop(writer);
                let log = file.with_extension("log");
                standalone = Some(Standalone::start(file, daemon.socket(), &log));
                let client = Client::connect(daemon.socket()).await.unwrap();
                let start = Instant::now();
                while !client
                    .admin()
                    .list_writers(false)
                    .await
                    .unwrap()
                    .iter()
                    .any(|info| info.status.class_id == declaration.class_id)
                {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "the standalone writer never registered; its log: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let probe_class = WriterClassId::new_random();
        let probe = Probe {
            class_id: probe_class,
            file: probe_file,
            cgroup: cgroup.to_owned(),
            counter: counter.to_owned(),
            marker: marker.clone(),
            wait_for_thaw,
            kill: standalone.as_ref().map(|process| process.0.id()),
            seen: Arc::clone(&seen),
        };
        let mut probe_handle = shadowcopy_writer_sdk::spawn(
            probe,
            WriterOptions {
                application_level: ApplicationLevel::BackEnd,
                ..WriterOptions::with_socket(daemon.socket())
            },
        );
        probe_handle
            .registered()
            .await
            .expect("the probe registers");
        writers.push(probe_handle);
        Rig {
            daemon: Some(daemon),
            writers,
            standalone,
            cgroup_class: declaration.class_id,
            probe_class,
            seen,
            marker,
        }
    }

    fn socket(&self) -> PathBuf {
        self.daemon.as_ref().unwrap().socket().to_owned()
    }

    /// A component-mode full backup of both writers' `data` components on the volume at `mount`,
    /// up to but not including DoSnapshotSet; returns the session and the snapshot id.
    async fn prepared_backup(
        &self,
        client: &Client,
        mount: &str,
    ) -> (BackupSession, ComponentKey, SnapshotId) {
        let (mut session, writers) = full_backup(client).await;
        let key = data_key(&writers, self.cgroup_class);
        session.add_component(&key).await.unwrap();
        session
            .add_component(&data_key(&writers, self.probe_class))
            .await
            .unwrap();
        let (_, snapshots) = start_set(&mut session, &[mount]).await;
        session.prepare_for_backup().await.unwrap();
        let snapshot = snapshots[0];
        (session, key, snapshot)
    }

    async fn stop(mut self) {
        drop(self.standalone.take());
        for mut handle in self.writers.drain(..) {
            handle.stop();
            handle.join().await.ok();
        }
        drop(self.daemon.take());
    }
}

/// Checks that nothing is frozen and the marker is gone, then that the application counts again.
fn assert_thawed_and_running(app: &App, marker: &Path, above: u64) {
    assert!(
        !app.cgroup().is_frozen().unwrap(),
        "the cgroup {} is still frozen",
        app.cgroup().path().display()
    );
    assert!(
        !marker.exists(),
        "the frozen marker {} outlived the thaw",
        marker.display()
    );
    app.wait_past(above);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_stands_still_for_the_set_and_runs_after_thaw() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let mount = volume.mount_point().to_str().unwrap().to_owned();
    let runtime = TempDir::new("cgroup-writer-runtime");
    let cgroup = Freezer::create(&unique_name("set")).expect("the test creates a cgroup (root)");
    let cgroup_path = cgroup.path().to_owned();
    let app = App::counting(&volume.path("app"), cgroup);
    let before = app.wait_past(0);

    let name = unique_name("writer");
    let declaration = declaration(
        &name,
        &format!("cgroup = \"{}\"", cgroup_path.display()),
        volume.mount_point(),
        &runtime.0,
        "",
    );
    let rig = Rig::start(
        "cgroup-writer-set",
        &volume,
        &declaration,
        &cgroup_path,
        &volume.path("app/counter"),
        false,
        Host::InProcess,
    )
    .await;
    let client = Client::connect(rig.socket()).await.unwrap();
    let (mut session, key, snapshot) = rig.prepared_backup(&client, &mount).await;
    session.do_snapshot_set().await.unwrap();

    let seen = rig.seen.lock().unwrap().clone();
    assert!(seen.frozen, "the cgroup was not frozen at Freeze: {seen:?}");
    assert_eq!(
        seen.marker.as_deref().map(str::trim),
        Some(cgroup_path.to_str().unwrap()),
        "while frozen, the marker names the frozen cgroup"
    );
    assert_eq!(
        seen.frozen_at_thaw,
        Some(true),
        "still frozen at the probe's Thaw: {seen:?}"
    );
    let frozen_counter = seen.counter.expect("the counter existed at Freeze");
    assert!(frozen_counter >= before);
    assert_eq!(
        seen.counter_at_thaw,
        Some(frozen_counter),
        "the application wrote while its cgroup was frozen"
    );
    let properties = session.snapshot_properties(snapshot).await.unwrap();
    let copied = read_counter(&properties.snapshot_path.join("app/counter"));
    assert_eq!(
        copied,
        Some(frozen_counter),
        "the shadow copy holds the counter of the frozen instant"
    );
    assert_thawed_and_running(&app, &rig.marker, frozen_counter);

    session.set_backup_succeeded(&key, true).await.unwrap();
    session.backup_complete().await.unwrap();
    session.release().await.unwrap();
    rig.stop().await;
    drop(app);
    volume.close().expect("nothing left mounted or attached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_freeze_window_timer_thaws_the_application() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let mount = volume.mount_point().to_str().unwrap().to_owned();
    let runtime = TempDir::new("cgroup-writer-timer");
    let cgroup = Freezer::create(&unique_name("timer")).expect("the test creates a cgroup (root)");
    let cgroup_path = cgroup.path().to_owned();
    let app = App::counting(&volume.path("app"), cgroup);
    app.wait_past(0);

    // A freeze window of 300 ms, and a probe whose Freeze does not return before the cgroup is
    // thawed: Thaw cannot arrive in time, so the SDK's freeze timer or the coordinator's window
    // must abort the writer, and the abort must thaw (BK-SNAP-5, BK-SNAP-8).
    let declaration = declaration(
        &unique_name("writer"),
        &format!("cgroup = \"{}\"", cgroup_path.display()),
        volume.mount_point(),
        &runtime.0,
        "freeze_timeout_ms = 300",
    );
    let rig = Rig::start(
        "cgroup-writer-timer",
        &volume,
        &declaration,
        &cgroup_path,
        &volume.path("app/counter"),
        true,
        Host::InProcess,
    )
    .await;
    let client = Client::connect(rig.socket()).await.unwrap();
    let (mut session, _key, _snapshot) = rig.prepared_backup(&client, &mount).await;
    let result = session.do_snapshot_set().await;
    eprintln!("DoSnapshotSet with an expired freeze window: {result:?}");
    let seen = rig.seen.lock().unwrap().clone();
    if seen.frozen_at_thaw.is_none() {
        // The probe's Freeze ran to the end (it was not cut short by an Abort): what it saw at the
        // end of its wait is the abort path's thaw.
        assert!(
            !seen.frozen,
            "the cgroup stayed frozen past the window: {seen:?}"
        );
    }
    let after = app.counter().unwrap_or(0);
    assert_thawed_and_running(&app, &rig.marker, after);
    let statuses = session.gather_writer_status().await.unwrap();
    let status = statuses
        .iter()
        .find(|status| status.class_id == rig.cgroup_class)
        .expect("the cgroup writer has a status");
    // Failed, not thawed by a normal Thaw: the thaw above came from the abort path.
    assert_ne!(
        status.failure_code, 0,
        "the cgroup writer was thawed by a normal Thaw: {status:?}"
    );
    session.abort_backup().await.ok();
    session.release().await.ok();
    rig.stop().await;
    drop(app);
    volume.close().expect("nothing left mounted or attached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_while_frozen_thaws_the_application_when_it_starts_again() {
    // The standalone writer adopts the application's process into a cgroup of its own (`pids`),
    // and the probe SIGKILLs it at the probe's Freeze, when the cgroup is frozen: nobody is left
    // to thaw it. Starting the writer again must thaw it from the marker the dead one left.
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let mount = volume.mount_point().to_str().unwrap().to_owned();
    let runtime = TempDir::new("cgroup-writer-crash");
    // The application starts in a scratch cgroup; the writer moves it into its own.
    let scratch = Freezer::create(&unique_name("scratch")).expect("the test creates a cgroup");
    let app = App::counting(&volume.path("app"), scratch);
    app.wait_past(0);
    let own = unique_name("own");
    let own_path = app.cgroup().path().with_file_name(&own);
    // Removes the writer's own cgroup at the end, also when the test fails.
    struct OwnCgroup(PathBuf);
    impl Drop for OwnCgroup {
        fn drop(&mut self) {
            if let Ok(freezer) = Freezer::open(&self.0) {
                let _ = freezer.thaw();
                for pid in freezer.pids().unwrap_or_default() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                // Exiting processes may hold it for a moment.
                let start = Instant::now();
                while std::fs::remove_dir(&self.0).is_err()
                    && start.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    let own_guard = OwnCgroup(own_path.clone());
    let text = declaration_text(
        &unique_name("writer"),
        &format!("pids = [{}]\ncgroup_name = \"{own}\"", app.child.id()),
        volume.mount_point(),
        &runtime.0,
        "",
    );
    let file = runtime.join("writer.toml");
    std::fs::write(&file, &text).unwrap();
    let declaration = Declaration::load(&file).unwrap();

    let mut rig = Rig::start(
        "cgroup-writer-crash",
        &volume,
        &declaration,
        &own_path,
        &volume.path("app/counter"),
        false,
        Host::StandaloneKilledAtFreeze(&file),
    )
    .await;
    let client = Client::connect(rig.socket()).await.unwrap();
    let (mut session, _key, _snapshot) = rig.prepared_backup(&client, &mount).await;
    let result = session.do_snapshot_set().await;
    eprintln!("DoSnapshotSet with the cgroup writer killed while frozen: {result:?}");
    let seen = rig.seen.lock().unwrap().clone();
    assert!(
        seen.frozen,
        "the writer's own cgroup was frozen at Freeze: {seen:?}"
    );
    assert_eq!(
        seen.marker.as_deref().map(str::trim),
        Some(own_path.to_str().unwrap()),
        "while frozen, the marker names the writer's own cgroup"
    );
    let own_freezer = Freezer::open(&own_path).expect("the writer created its cgroup");
    assert!(
        own_freezer.pids().unwrap().contains(&app.child.id()),
        "the writer moved the application into {}",
        own_path.display()
    );
    // What the SIGKILL left: the application frozen, and the marker.
    assert!(
        own_freezer.is_frozen().unwrap(),
        "nobody should have thawed yet"
    );
    assert!(rig.marker.exists());
    let stalled = app.counter().unwrap();

    let restarted = Standalone::start(&file, &rig.socket(), &file.with_extension("log"));
    let start = Instant::now();
    // The writer thaws first and removes its marker after, so that a crash in between thaws
    // again at the next start: wait for both.
    while own_freezer.is_frozen().unwrap() || rig.marker.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the restarted writer did not thaw {} and remove its marker",
            own_path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_thawed_and_running(&app, &rig.marker, stalled);
    drop(restarted);
    rig.standalone.take();
    session.abort_backup().await.ok();
    session.release().await.ok();
    rig.stop().await;
    drop(app);
    drop(own_guard);
    volume.close().expect("nothing left mounted or attached");
}

/// `fsfreeze -f` on the test's own loop volume, undone on drop.
struct FsFrozen(PathBuf);

impl FsFrozen {
    fn freeze(mount: &Path) -> FsFrozen {
        let status = Command::new("fsfreeze")
            .arg("-f")
            .arg(mount)
            .status()
            .unwrap();
        assert!(status.success(), "fsfreeze -f {}", mount.display());
        FsFrozen(mount.to_owned())
    }
}

impl Drop for FsFrozen {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.0).status();
    }
}

#[test]
fn a_freeze_the_kernel_cannot_finish_in_time_is_thawed_again() {
    // A process blocked in uninterruptible sleep (a write to a filesystem frozen with FIFREEZE:
    // our own loop volume) cannot be frozen by the cgroup freezer, so the cgroup never reports
    // frozen, and freeze must give up at its limit and leave the cgroup thawed.
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let cgroup = Freezer::create(&unique_name("limit")).expect("the test creates a cgroup");
    let fs_frozen = FsFrozen::freeze(volume.mount_point());
    let target = volume.path("blocked.txt");
    let app = App::start(
        &std::env::temp_dir(),
        cgroup,
        &format!("echo written > '{}'", target.display()),
    );
    let stat = format!("/proc/{}/stat", app.child.id());
    let start = Instant::now();
    // Field 3 of /proc/<pid>/stat is the state; D is uninterruptible sleep.
    while std::fs::read_to_string(&stat).ok().and_then(|text| {
        text.rsplit(')')
            .next()
            .map(|rest| rest.trim().starts_with('D'))
    }) != Some(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the writing shell never blocked"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let error = app
        .cgroup()
        .freeze(Duration::from_millis(300))
        .expect_err("a cgroup with a task in D state cannot be frozen");
    assert!(matches!(error, FreezerError::Timeout { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(app.cgroup().path().to_str().unwrap()),
        "{error}"
    );
    assert!(
        !app.cgroup().is_frozen().unwrap(),
        "the cgroup was left frozen after the timeout"
    );

    drop(fs_frozen);
    let mut app = app;
    let status = app.child.wait().unwrap();
    assert!(
        status.success(),
        "the blocked write finished after the thaw"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "written\n");
    drop(app);
    volume.close().expect("nothing left mounted or attached");
}

#[test]
fn the_v1_freezer_holds_and_releases_the_application() {
    // Hybrid hosts (like many CI machines) mount the v1 freezer next to cgroup2; the writer's own
    // cgroups go to cgroup2, so this drives the v1 interface directly. Hosts without it have
    // nothing to test here.
    let Some(root) = shadowcopy_writers::cgroup::CgroupMounts::current()
        .unwrap()
        .v1_freezer
    else {
        eprintln!("no v1 freezer hierarchy is mounted; nothing to test");
        return;
    };
    let dir = TempDir::new("cgroup-v1");
    let cgroup = Freezer::create_under(&root, &unique_name("v1")).expect("a v1 freezer cgroup");
    assert_eq!(
        cgroup.version(),
        shadowcopy_writers::cgroup::FreezerVersion::V1
    );
    let app = App::counting(&dir.0, cgroup);
    let before = app.wait_past(0);
    let guard = app
        .cgroup()
        .freeze(Duration::from_secs(10))
        .expect("the v1 freezer freezes");
    assert_eq!(
        std::fs::read_to_string(app.cgroup().path().join("freezer.state"))
            .unwrap()
            .trim(),
        "FROZEN"
    );
    assert!(app.cgroup().is_frozen().unwrap());
    let held = app.counter().unwrap();
    assert!(held >= before);
    // Frozen means not one more line, however long we look.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        app.counter(),
        Some(held),
        "the application wrote while frozen"
    );
    guard.thaw().expect("the v1 freezer thaws");
    assert!(!app.cgroup().is_frozen().unwrap());
    app.wait_past(held);
    // A guard dropped without thaw (an error path) thaws too.
    drop(app.cgroup().freeze(Duration::from_secs(10)).unwrap());
    assert!(!app.cgroup().is_frozen().unwrap());
}
