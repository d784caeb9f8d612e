//! Hosted writers: shadowcopyd runs every writer declared in its writers
//! directory (`service.writers_dir`, `--writers-dir`) in-process, each on a Tokio task of its own
//! that connects through the writer SDK to the daemon's own socket, exactly as the standalone
//! `shadowcopy-writer` does. Going through the socket keeps one code path for hosted and external
//! writers (same registration, same deadlines, same abort on disconnect); ListWriters tells them
//! apart by the peer pid, which is the daemon's own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shadowcopy_writers::declaration::{self, Declaration};

use crate::state::Daemon;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a hosted writer may take to stop: its running handler finishes and a backup in
/// progress is aborted (thawed) first, which may run a thaw command up to its own timeout.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// The running hosted writers.
pub(crate) struct HostedWriters {
    /// Set to true to stop every writer.
    stop: watch::Sender<bool>,
    /// Each writer's declaration file, name and task.
    tasks: Vec<(PathBuf, String, JoinHandle<()>)>,
}

impl HostedWriters {
    /// Loads every declaration in `dir` and starts each writer against `socket`. A declaration
    /// that cannot be read or parsed is logged with its file and skipped; a writer whose kind
    /// refuses its settings logs the same from its task. Neither keeps the daemon from starting.
    pub(crate) fn start(dir: &Path, socket: &Path) -> HostedWriters {
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let declarations = match declaration::load_dir_each(dir) {
            Ok(declarations) => declarations,
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error,
                    "no hosted writers: the writers directory cannot be read; fix its permissions or service.writers_dir");
                Vec::new()
            }
        };
        for loaded in declarations {
            let declaration: Declaration = match loaded {
                Ok(declaration) => declaration,
                Err(error) => {
                    tracing::error!(file = %error.file().display(), %error,
                        "writer declaration skipped; fix the file and restart shadowcopyd");
                    continue;
                }
            };
            let file = declaration.file.clone();
            let name = declaration.name.clone();
            tracing::info!(file = %file.display(), writer = %name, kind = %declaration.kind, "starting hosted writer");
            let mut stopped = stop.subscribe();
            let socket = socket.to_path_buf();
            let task = tokio::spawn({
                let file = file.clone();
                let name = name.clone();
                async move {
                    let shutdown = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    match declaration::run(declaration, &socket, shutdown).await {
                        Ok(()) => {
                            tracing::info!(file = %file.display(), writer = %name, "hosted writer stopped")
                        }
                        Err(error) => tracing::error!(file = %file.display(), writer = %name,
                            "hosted writer ended: {error:#}"),
                    }
                }
            });
            tasks.push((file, name, task));
        }
        HostedWriters { stop, tasks }
    }

    /// How many writers were started.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until every hosted writer has registered with `daemon` or ended (its declaration
    /// refused, its registration failed), at most `limit`; returns the names of those that did
    /// neither, after logging them. A hosted writer connects from this process, so its
    /// registration is the connection whose peer pid is ours and whose WMD has its name.
    pub(crate) async fn wait_registered(&self, daemon: &Daemon, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let registered: Vec<String> = {
                let own_pid = i32::try_from(std::process::id()).ok();
                let connections = daemon.connections.lock().expect("connections lock");
                connections
                    .values()
                    .filter(|connection| connection.peer.pid == own_pid)
                    .map(|connection| connection.metadata.identity.writer_name.clone())
                    .collect()
            };
            let pending: Vec<String> = self
                .tasks
                .iter()
                .filter(|(_, name, task)| !task.is_finished() && !registered.contains(name))
                .map(|(_, name, _)| name.clone())
                .collect();
            if pending.is_empty() {
                return pending;
            }
            if Instant::now() >= deadline {
                tracing::warn!(writers = ?pending, "hosted writers not registered after {} s; serving without them until they do (a backup started now does not include them)", limit.as_secs());
                return pending;
            }
            // Registration is a local round trip; polling finds it within a few milliseconds.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every hosted writer and waits for each: a backup in progress is aborted (the
    /// application thawed) before its writer returns. Runs before the server stops, so that the
    /// writers leave while the coordinator still hears them go.
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        for (file, name, mut task) in self.tasks {
            if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
                tracing::error!(file = %file.display(), writer = %name,
                    "hosted writer did not stop within {} s; cancelled (its commands are killed)", STOP_TIMEOUT.as_secs());
                task.abort();
            }
        }
    }
}
