//! The hook-directory writer through a real shadowcopyd on a btrfs loop volume: hooks written in
//! the qemu-guest-agent `fsfreeze-hook.d` convention freeze their application around a set, in
//! lexical order, and thaw it in reverse order; a failing hook fails the Freeze with its name and
//! stderr (not swallowed as qemu-ga does), and the hooks already frozen are thawed.

mod declared;

use std::path::{Path, PathBuf};
use std::time::Duration;

use declared::{App, backup, client_when_registered, daemon, lines, run_in_process, wait};
use shadowcopy_metadata::enums::WriterState;
use shadowcopy_test_support::{LoopVolume, MIB, TempDir};

/// Writes an executable hook `name` into `dir` with `body` as its `case "$1"` arms.
fn hook(dir: &Path, name: &str, freeze: &str, thaw: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    // The shape of the hooks in qemu-guest-agent's fsfreeze-hook.d.
    let text = format!(
        "#!/bin/sh\ncase \"$1\" in\n    freeze)\n        {freeze}\n        ;;\n    thaw)\n        {thaw}\n        ;;\nesac\n"
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A declaration of a hooks writer called `name` over `hooks`, with one component `data`.
fn declare(dir: &TempDir, name: &str, hooks: &Path, data: &Path) -> PathBuf {
    let file = dir.join(&format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "kind = \"hooks\"\nname = \"{name}\"\nfreeze_timeout_ms = 20000\n[hooks]\ndir = \"{}\"\n\
             timeout_ms = 15000\n[[hooks.components]]\nname = \"data\"\n\
             files = [{{ path = \"{}\", recursive = true }}]\n",
            hooks.display(),
            data.display()
        ),
    )
    .unwrap();
    file
}

fn order(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_ga_style_hooks_freeze_and_thaw_their_application_around_a_set() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let data = volume.path("app");
    std::fs::create_dir_all(&data).unwrap();
    let app = App::start(&data.join("app.log"));
    let dir = TempDir::new("hooks-writer");
    let hooks = dir.join("fsfreeze-hook.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let log = dir.join("order");
    let frozen_lines = dir.join("frozen-lines");
    hook(
        &hooks,
        "10-app",
        &format!(
            "{} || exit 1\n        wc -l < '{}' > '{}'\n        echo \"freeze 10-app\" >> '{}'",
            app.stop_command(),
            app.log.display(),
            frozen_lines.display(),
            log.display()
        ),
        &format!(
            "echo \"thaw 10-app\" >> '{}'\n        {}",
            log.display(),
            app.resume_command()
        ),
    );
    hook(
        &hooks,
        "20-cache",
        &format!(
            "echo \"freeze 20-cache $SHADOWCOPY_EVENT\" >> '{}'",
            log.display()
        ),
        &format!("echo \"thaw 20-cache\" >> '{}'", log.display()),
    );
    // Not hooks by the convention: not executable, or a package manager's leftover.
    std::fs::write(hooks.join("30-disabled"), "#!/bin/sh\nexit 1\n").unwrap();
    hook(&hooks, "40-old.dpkg-old", "exit 1", "exit 1");
    let file = declare(&dir, "hooks-app", &hooks, &data);

    let daemon = daemon("hooks-writer");
    let (stop, task) = run_in_process(&file, daemon.socket());
    let client = client_when_registered(&daemon, "hooks-app").await;

    let mut done = backup(&client, "hooks-app", "", "data", volume.mount_point()).await;
    let status = done.status().await;
    assert_eq!(
        status.state,
        WriterState::WaitingForBackupComplete,
        "{status:?}"
    );
    assert_eq!(
        order(&log),
        [
            "freeze 10-app",
            "freeze 20-cache freeze",
            "thaw 20-cache",
            "thaw 10-app"
        ],
        "lexical order on freeze, reverse on thaw"
    );
    let frozen: usize = std::fs::read_to_string(&frozen_lines)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let copied = std::fs::read_to_string(done.copy.join("app/app.log")).unwrap();
    assert_eq!(
        copied.lines().count(),
        frozen,
        "the copy was cut while the application was frozen"
    );
    assert!(
        wait(Duration::from_secs(10), || lines(&app.log) > frozen + 2),
        "the application runs again after the thaw hooks"
    );
    done.finish().await;

    stop.send(()).unwrap();
    task.await.unwrap().expect("the writer stops cleanly");
    drop(app);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hook_is_reported_and_frozen_hooks_are_thawed() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let data = volume.path("app");
    std::fs::create_dir_all(&data).unwrap();
    let app = App::start(&data.join("app.log"));
    let dir = TempDir::new("hooks-fail");
    let hooks = dir.join("fsfreeze-hook.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let log = dir.join("order");
    hook(
        &hooks,
        "10-app",
        &format!(
            "{} || exit 1\n        echo \"freeze 10-app\" >> '{}'",
            app.stop_command(),
            log.display()
        ),
        &format!(
            "echo \"thaw 10-app\" >> '{}'\n        {}",
            log.display(),
            app.resume_command()
        ),
    );
    hook(
        &hooks,
        "20-broken",
        "echo 'flushing' >&2\n        echo 'cannot lock tables: server gone' >&2\n        exit 1",
        &format!("echo \"thaw 20-broken\" >> '{}'", log.display()),
    );
    hook(
        &hooks,
        "30-never",
        &format!("echo \"freeze 30-never\" >> '{}'", log.display()),
        &format!("echo \"thaw 30-never\" >> '{}'", log.display()),
    );
    let file = declare(&dir, "hooks-fail", &hooks, &data);

    let daemon = daemon("hooks-fail");
    let (stop, task) = run_in_process(&file, daemon.socket());
    let client = client_when_registered(&daemon, "hooks-fail").await;

    let mut done = backup(&client, "hooks-fail", "", "data", volume.mount_point()).await;
    let status = done.status().await;
    assert_eq!(status.state, WriterState::FailedAtFreeze, "{status:?}");
    let message = status.application_message.clone().unwrap_or_default();
    assert!(
        message.contains("20-broken"),
        "the hook is named: {message}"
    );
    assert!(
        message.contains("cannot lock tables: server gone"),
        "its stderr: {message}"
    );
    // The hook after the failing one never ran; the one before was thawed; the failing one was
    // not frozen, so it gets no thaw.
    assert_eq!(order(&log), ["freeze 10-app", "thaw 10-app"]);
    assert!(!app.is_stopped(), "the application is not left stopped");
    let before = lines(&app.log);
    assert!(
        wait(Duration::from_secs(10), || lines(&app.log) > before + 2),
        "the application writes again"
    );
    done.session.release().await.unwrap();

    stop.send(()).unwrap();
    task.await.unwrap().expect("the writer stops cleanly");
    drop(app);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

/// A standalone hooks writer killed (SIGKILL) while its hook holds the application stopped: the
/// freeze marker names the hook, and the writer started again thaws it before it registers, so
/// the application does not stay stopped until someone notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hooks_writer_killed_while_frozen_thaws_its_hooks_when_it_starts_again() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let data = volume.path("app");
    std::fs::create_dir_all(&data).unwrap();
    let app = App::start(&data.join("app.log"));
    let dir = TempDir::new("hooks-crash");
    let hooks = dir.join("fsfreeze-hook.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let log = dir.join("order");
    // The freeze hook stops the application, then kills the writer that runs it ($PPID): the
    // writer dies with the application frozen.
    hook(
        &hooks,
        "10-app",
        &format!(
            "{} || exit 1\n        echo \"freeze 10-app\" >> '{}'\n        kill -9 $PPID\n        sleep 5",
            app.stop_command(),
            log.display()
        ),
        &format!(
            "echo \"thaw 10-app $SHADOWCOPY_ABORT_CAUSE\" >> '{}'\n        {}",
            log.display(),
            app.resume_command()
        ),
    );
    let file = declare(&dir, "hooks-crash", &hooks, &data);
    let markers = dir.join("markers");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text = text.replace(
        "[hooks]\n",
        &format!("[hooks]\nruntime_dir = \"{}\"\n", markers.display()),
    );
    std::fs::write(&file, text).unwrap();
    let marker = markers.join("hooks-crash");

    let daemon = daemon("hooks-crash");
    let start_writer = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shadowcopy-writer"))
            .arg("run")
            .arg(&file)
            .arg("--socket")
            .arg(daemon.socket())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("shadowcopy-writer runs")
    };
    let mut writer = start_writer();
    let client = client_when_registered(&daemon, "hooks-crash").await;
    let done = backup(&client, "hooks-crash", "", "data", volume.mount_point()).await;
    let status = writer.wait().expect("the writer is reaped");
    assert!(!status.success(), "the hook killed the writer: {status}");
    assert!(
        app.is_stopped(),
        "the dead writer left the application stopped"
    );
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .contains("10-app"),
        "the marker names the frozen hook"
    );

    let mut restarted = start_writer();
    assert!(
        wait(Duration::from_secs(20), || !app.is_stopped()
            && !marker.exists()),
        "the restarted writer thawed the hook and removed its marker"
    );
    assert_eq!(
        order(&log),
        ["freeze 10-app", "thaw 10-app WriterRestarted"],
        "only the frozen hook is thawed, once, told why"
    );
    let before = lines(&app.log);
    assert!(
        wait(Duration::from_secs(10), || lines(&app.log) > before + 2),
        "the application writes again"
    );

    let _ = restarted.kill();
    let _ = restarted.wait();
    drop(done);
    drop(app);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
