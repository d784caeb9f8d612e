//! The script writer through a real shadowcopyd on a btrfs loop volume: its freeze and thaw
//! commands see the event's environment and pause and resume an application, so the shadow copy
//! holds exactly what the application had written when it was paused; a failing freeze command
//! fails the writer at Freeze with its stderr, and the application runs again (BK-SNAP-7).

mod declared;

use std::path::Path;
use std::time::Duration;

use declared::{
    App, backup, client_when_registered, daemon, env_file, lines, run_in_process, wait,
};
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::WriterState;
use shadowcopy_test_support::{LoopVolume, MIB, TempDir};

/// Writes the declaration of a script writer called `name` with the `[script]` lines `commands`
/// and one component `app\data` holding the application's directory.
fn declare(dir: &TempDir, name: &str, commands: &str, data: &Path) -> std::path::PathBuf {
    let file = dir.join(&format!("{name}.toml"));
    let text = format!(
        "kind = \"script\"\nname = \"{name}\"\nfreeze_timeout_ms = 20000\n[script]\n{commands}\n\
         [[script.components]]\nname = \"data\"\nlogical_path = \"app\"\n\
         files = [{{ path = \"{}\", recursive = true }}]\n",
        data.display()
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_script_writer_pauses_its_application_for_the_copy() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let data = volume.path("app");
    std::fs::create_dir_all(&data).unwrap();
    let app = App::start(&data.join("app.log"));
    let dir = TempDir::new("script-writer");
    let record = |name: &str| dir.join(name).display().to_string();
    let commands = format!(
        "freeze = {}\nthaw = {}\npost_snapshot = {}\n",
        toml_string(&format!(
            "{} && wc -l < '{}' > '{}' && env > '{}'",
            app.stop_command(),
            app.log.display(),
            record("frozen-lines"),
            record("freeze.env")
        )),
        toml_string(&format!(
            "env > '{}' && {}",
            record("thaw.env"),
            app.resume_command()
        )),
        toml_string(&format!("env > '{}'", record("post.env"))),
    );
    let file = declare(&dir, "script-app", &commands, &data);

    let daemon = daemon("script-writer");
    // The standalone binary, as an administrator would run it.
    let mut writer = std::process::Command::new(env!("CARGO_BIN_EXE_shadowcopy-writer"))
        .arg("run")
        .arg(&file)
        .arg("--socket")
        .arg(daemon.socket())
        .stderr(std::fs::File::create(dir.join("writer.log")).unwrap())
        .spawn()
        .expect("shadowcopy-writer starts");
    let client = client_when_registered(&daemon, "script-app").await;

    let mut done = backup(&client, "script-app", "app", "data", volume.mount_point()).await;
    let status = done.status().await;
    assert_eq!(
        status.state,
        WriterState::WaitingForBackupComplete,
        "{status:?}"
    );

    // The copy holds exactly the lines written before the freeze command paused the loop.
    let frozen: usize = std::fs::read_to_string(dir.join("frozen-lines"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let copied = std::fs::read_to_string(done.copy.join("app/app.log")).unwrap();
    assert_eq!(
        copied.lines().count(),
        frozen,
        "the copy was cut while the application was paused"
    );
    assert_eq!(
        copied.lines().last(),
        Some(format!("line {frozen}").as_str())
    );
    // After the thaw command the application runs again.
    assert!(
        wait(Duration::from_secs(10), || lines(&app.log) > frozen + 2),
        "the application resumed after Thaw"
    );

    // What the commands saw (module documentation of script.rs).
    let set = done.set_id.to_string();
    let freeze = env_file(&dir.join("freeze.env"));
    assert_eq!(freeze["SHADOWCOPY_EVENT"], "freeze");
    assert_eq!(freeze["SHADOWCOPY_SET_ID"], set);
    assert_eq!(freeze["SHADOWCOPY_BACKUP_TYPE"], "FULL");
    assert_eq!(freeze["SHADOWCOPY_COMPONENTS"], "app\\data");
    assert_eq!(freeze["SHADOWCOPY_WRITER"], "script-app");
    assert_eq!(
        freeze["SHADOWCOPY_VOLUMES"].trim_end_matches('/'),
        volume.mount_point().to_str().unwrap().trim_end_matches('/')
    );
    let thaw = env_file(&dir.join("thaw.env"));
    assert_eq!(thaw["SHADOWCOPY_EVENT"], "thaw");
    assert_eq!(thaw["SHADOWCOPY_SET_ID"], set);
    let post = env_file(&dir.join("post.env"));
    assert_eq!(post["SHADOWCOPY_EVENT"], "post_snapshot");
    assert_eq!(post["SHADOWCOPY_SNAPSHOT_COUNT"], "1");
    assert_eq!(
        post["SHADOWCOPY_SNAPSHOT_0"],
        done.copy.display().to_string()
    );

    done.finish().await;
    // SIGTERM stops the standalone writer cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(writer.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = writer.wait().unwrap();
    assert!(
        exit.success(),
        "shadowcopy-writer exited with {exit}: {}",
        std::fs::read_to_string(dir.join("writer.log")).unwrap_or_default()
    );
    drop(app);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_freeze_command_fails_the_writer_and_resumes_the_application() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let data = volume.path("app");
    std::fs::create_dir_all(&data).unwrap();
    let app = App::start(&data.join("app.log"));
    let dir = TempDir::new("script-veto");
    // The command pauses the application and then fails: the abort must resume it.
    let commands = format!(
        "freeze = {}\nthaw = {}\n",
        toml_string(&format!(
            "{}; echo 'warming up' >&2; echo 'cannot quiesce: journal is full' >&2; exit 3",
            app.stop_command()
        )),
        toml_string(&format!(
            "echo \"$SHADOWCOPY_EVENT\" > '{}'; {}",
            dir.join("resumed-by").display(),
            app.resume_command()
        )),
    );
    let file = declare(&dir, "script-veto", &commands, &data);

    let daemon = daemon("script-veto");
    // In-process, through the same entry point shadowcopyd uses for hosted writers.
    let (stop, writer) = run_in_process(&file, daemon.socket());
    let client = client_when_registered(&daemon, "script-veto").await;

    // The veto is advisory (BK-SNAP-7): the set is still made.
    let mut done = backup(&client, "script-veto", "app", "data", volume.mount_point()).await;
    let status = done.status().await;
    assert_eq!(status.state, WriterState::FailedAtFreeze, "{status:?}");
    assert_eq!(
        status.failure_code,
        codes::VSS_E_WRITERERROR_RETRYABLE.value,
        "{status:?}"
    );
    assert_eq!(status.application_code, 3, "the exit code: {status:?}");
    let message = status.application_message.clone().unwrap_or_default();
    assert!(
        message.contains("cannot quiesce: journal is full"),
        "{message}"
    );
    assert!(message.contains("freeze command"), "{message}");
    // The SDK aborted the writer, and Abort ran the thaw command, which resumed the application.
    assert_eq!(
        std::fs::read_to_string(dir.join("resumed-by"))
            .unwrap()
            .trim(),
        "abort"
    );
    assert!(!app.is_stopped(), "the application is not left stopped");
    let before = lines(&app.log);
    assert!(
        wait(Duration::from_secs(10), || lines(&app.log) > before + 2),
        "the application writes again"
    );

    done.session.release().await.unwrap();
    stop.send(()).unwrap();
    writer.await.unwrap().expect("the writer stops cleanly");
    drop(app);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_freeze_command_is_killed_and_the_thaw_command_still_runs() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let data = volume.path("app");
    std::fs::create_dir_all(&data).unwrap();
    let app = App::start(&data.join("app.log"));
    let dir = TempDir::new("script-hang");
    let sleeper = dir.join("sleeper.pid");
    // The command pauses the application and then hangs in a child; its timeout is 1 s.
    let commands = format!(
        "timeouts = {{ freeze = 1000 }}\nfreeze = {}\nthaw = {}\n",
        toml_string(&format!(
            "{}; echo 'waiting for the lock' >&2; sleep 300 & echo $! > '{}'; wait",
            app.stop_command(),
            sleeper.display()
        )),
        toml_string(&app.resume_command()),
    );
    let file = declare(&dir, "script-hang", &commands, &data);

    let daemon = daemon("script-hang");
    let (stop, writer) = run_in_process(&file, daemon.socket());
    let client = client_when_registered(&daemon, "script-hang").await;

    let mut done = backup(&client, "script-hang", "app", "data", volume.mount_point()).await;
    let status = done.status().await;
    assert_eq!(status.state, WriterState::FailedAtFreeze, "{status:?}");
    assert_eq!(
        status.failure_code,
        codes::VSS_E_WRITERERROR_TIMEOUT.value,
        "{status:?}"
    );
    let message = status.application_message.clone().unwrap_or_default();
    assert!(
        message.contains("1000 ms") && message.contains("waiting for the lock"),
        "{message}"
    );
    // The hung command's child was killed with its process group.
    let pid: i32 = std::fs::read_to_string(&sleeper)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait(Duration::from_secs(10), || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
            matches!(state, None | Some('Z') | Some('X'))
        }),
        "the hung freeze command's sleep {pid} is gone"
    );
    // Abort ran the thaw command.
    assert!(!app.is_stopped(), "the application is not left stopped");
    let before = lines(&app.log);
    assert!(
        wait(Duration::from_secs(10), || lines(&app.log) > before + 2),
        "the application writes again"
    );

    done.session.release().await.unwrap();
    stop.send(()).unwrap();
    writer.await.unwrap().expect("the writer stops cleanly");
    drop(app);
    drop(daemon);
    volume.close().expect("nothing left mounted or attached");
}
