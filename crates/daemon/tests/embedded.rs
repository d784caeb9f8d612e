//! Embedded mode: the coordinator service runs in the test's own process from a `DaemonConfig`,
//! answers requesters and hosts declared writers through its socket exactly as shadowcopyd does,
//! and releases its socket and state directory on stop. One coordinator per state directory: a
//! second one, in-process or a shadowcopyd, is refused naming the directory and the holder's pid,
//! while the first keeps serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shadowcopy_daemon::{DaemonConfig, Service, ServiceError};
use shadowcopy_requester::Client;
use shadowcopy_test_support::sets::{
    complete, file_group, full_backup, snapshot_volumes, wait_for,
};
use shadowcopy_test_support::{DaemonProcess, TEST_CONFIG, TempDir};

/// The tests' configuration with every path inside `dir`: socket `<dir>/<socket>`, state
/// `<dir>/state`, exposures `<dir>/exposed`, declarations `<dir>/writers.d`.
fn config_in(dir: &TempDir, socket: &str) -> DaemonConfig {
    let mut config = DaemonConfig::parse(Path::new("TEST_CONFIG"), TEST_CONFIG).unwrap();
    config.service.socket = dir.join(socket);
    config.service.state_dir = dir.join("state");
    config.service.expose_dir = dir.join("exposed");
    config.service.writers_dir = dir.join("writers.d");
    config
}

/// A script writer declaration whose freeze and thaw append `<event>` to `record`, with one
/// component `data` on the simulated volume.
fn declaration(record: &Path) -> String {
    let line = format!("echo \\\"$SHADOWCOPY_EVENT\\\" >> '{}'", record.display());
    format!(
        "kind = \"script\"\nname = \"embedded-script\"\n[script]\nfreeze = \"{line}\"\n\
         thaw = \"{line}\"\n[[script.components]]\nname = \"data\"\n\
         files = [{{ path = \"/sim/ok/vol/data\" }}]\n"
    )
}

/// The names of the writers the service at `socket` lists.
async fn writer_names(socket: &Path) -> Vec<String> {
    let client = Client::connect(socket).await.unwrap();
    let listed = client.admin().list_writers(false).await.unwrap();
    listed.into_iter().map(|w| w.status.writer_name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_service_serves_a_backup_and_releases_its_state_dir_on_stop() {
    let dir = TempDir::new("embedded");
    let record = dir.join("script.events");
    std::fs::create_dir_all(dir.join("writers.d")).unwrap();
    std::fs::write(dir.join("writers.d/10-script.toml"), declaration(&record)).unwrap();
    let config = config_in(&dir, "embedded.sock");

    let service = Service::start(config.clone())
        .await
        .expect("the service starts");
    assert_eq!(service.socket(), dir.join("embedded.sock"));
    assert!(
        dir.join("state/lock").exists(),
        "the state directory is locked"
    );
    let client = Client::connect(service.socket()).await.unwrap();
    let mut names = Vec::new();
    for _ in 0..300 {
        names = writer_names(service.socket()).await;
        if names.iter().any(|name| name == "embedded-script") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        names.iter().any(|name| name == "embedded-script"),
        "the declared writer is hosted in-process: {names:?}"
    );

    // A whole backup through the embedded coordinator, with the hosted writer frozen and thawed.
    let (mut session, writers) = full_backup(&client).await;
    let wmd = shadowcopy_test_support::sets::writer_named(&writers, "embedded-script");
    let key = file_group(wmd, "", "data");
    session.add_component(&key).await.unwrap();
    snapshot_volumes(&mut session, &["/sim/ok/vol"]).await;
    complete(session, &[key]).await;
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "freeze\nthaw\n");
    drop(client);

    service.stop().await.expect("a clean stop");
    assert!(
        !dir.join("embedded.sock").exists(),
        "stop removes the socket file"
    );

    // The lock went with the service: the same state directory starts again, and serves.
    let again = Service::start(config)
        .await
        .expect("the state directory was released");
    writer_names(again.socket()).await;
    again.stop().await.expect("a clean stop");
}

/// The refusal of a second coordinator on `state_dir` held by `pid`, checked for what it names.
fn assert_names_holder(message: &str, state_dir: &Path, pid: u32) {
    assert!(
        message.contains(&state_dir.display().to_string()),
        "names the state directory: {message}"
    );
    assert!(
        message.contains(&format!("pid {pid}")),
        "names the pid: {message}"
    );
    assert!(
        message.contains("stop that shadowcopyd") && message.contains("--state-dir"),
        "says what to do: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_on_one_state_dir_is_refused_while_the_first_serves() {
    let dir = TempDir::new("embedded-twice");
    let first = Service::start(config_in(&dir, "first.sock"))
        .await
        .expect("the first service starts");
    let state_dir = dir.join("state");

    // In the same process, on another socket.
    let second = Service::start(config_in(&dir, "second.sock")).await;
    let error = second.expect_err("a second coordinator on the same state directory");
    assert!(
        matches!(&error, ServiceError::StateDirInUse { pid: Some(pid), .. } if *pid == std::process::id()),
        "{error:?}"
    );
    assert_names_holder(&error.to_string(), &state_dir, std::process::id());
    assert!(
        !dir.join("second.sock").exists(),
        "the refused service never bound its socket"
    );

    // A shadowcopyd process on the same state directory exits with the same refusal.
    std::fs::write(dir.join("shadowcopyd.toml"), TEST_CONFIG).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shadowcopyd"))
        .arg("--config")
        .arg(dir.join("shadowcopyd.toml"))
        .arg("--socket")
        .arg(dir.join("process.sock"))
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--expose-dir")
        .arg(dir.join("exposed"))
        .arg("--writers-dir")
        .arg(dir.join("writers.d"))
        .output()
        .expect("shadowcopyd runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "shadowcopyd must refuse: {stderr}"
    );
    assert_names_holder(&stderr, &state_dir, std::process::id());
    assert!(!dir.join("process.sock").exists());

    // The first one never noticed.
    let client = Client::connect(first.socket()).await.unwrap();
    let (session, _) = full_backup(&client).await;
    session.release().await.unwrap();
    drop(client);
    first.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_service_is_refused_the_state_dir_of_a_running_shadowcopyd() {
    let daemon = DaemonProcess::start(
        Path::new(env!("CARGO_BIN_EXE_shadowcopyd")),
        "embedded-behind-daemon",
        TEST_CONFIG,
    );
    let mut config = config_in(&daemon.dir, "embedded.sock");
    config.service.state_dir = daemon.state_dir();
    let error = Service::start(config)
        .await
        .expect_err("the daemon holds the state directory");
    assert_names_holder(&error.to_string(), &daemon.state_dir(), daemon.child.id());
    assert!(!daemon.dir.join("embedded.sock").exists());
    let client = Client::connect(daemon.socket()).await.unwrap();
    client
        .admin()
        .list_writers(false)
        .await
        .expect("the daemon still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_service_stops_in_the_background_and_releases_its_state_dir() {
    let dir = TempDir::new("embedded-dropped");
    let config = config_in(&dir, "dropped.sock");
    let socket: PathBuf = config.service.socket.clone();
    let service = Service::start(config.clone()).await.unwrap();
    let client = Client::connect(service.socket()).await.unwrap();
    let (session, _) = full_backup(&client).await;
    drop(service);
    // The open session is released by the background stop, which then frees the socket and
    // the state directory.
    drop(session);
    drop(client);
    wait_for(
        "the dropped service to remove its socket",
        Duration::from_secs(60),
        || !socket.exists(),
    )
    .await;
    let mut again = None;
    for _ in 0..500 {
        match Service::start(config.clone()).await {
            Ok(service) => {
                again = Some(service);
                break;
            }
            Err(ServiceError::StateDirInUse { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(other) => panic!("{other}"),
        }
    }
    again
        .expect("the lock is released once the background stop ends")
        .stop()
        .await
        .unwrap();
}
