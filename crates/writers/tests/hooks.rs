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
