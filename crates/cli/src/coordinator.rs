//! Reaching the coordinator for backups and restores: shadowcopyd's socket, or, when no daemon
//! answers, the same coordinator run inside this command (embedded mode): one code path, two hosts
//! (architecture intent §2).
//!
//! Embedded mode loads the daemon's configuration file (providers, hosted writers of
//! `service.writers_dir`, state directory) and serves it on a private socket for the length of the
//! command. It falls back to it only when no socket was named: a socket given with `--socket` or
//! `SHADOWCOPY_SOCKET` that does not answer is an error, never silently replaced. The state
//! directory lock of `shadowcopy-daemon` keeps an embedded coordinator and a daemon (or two
//! embedded ones) from sharing one catalog.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use shadowcopy_daemon::{DEFAULT_CONFIG, DaemonConfig, Service};
use shadowcopy_requester::{Client, RequesterError};

/// How a backup or restore reaches the coordinator.
#[derive(Debug, Clone, Args)]
pub(crate) struct CoordinatorArgs {
    /// shadowcopyd's control socket. Without it, the default socket is tried, and when no daemon
    /// answers there the coordinator runs inside this command (embedded mode).
    #[arg(long, env = "SHADOWCOPY_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Run the coordinator inside this command even if shadowcopyd runs.
    #[arg(long, conflicts_with = "socket")]
    embedded: bool,
    /// The configuration file of the embedded coordinator.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The embedded coordinator's state directory, instead of the configuration's
    /// `service.state_dir`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The embedded coordinator's directory of writer declarations, instead of the configuration's
    /// `service.writers_dir`.
    #[arg(long, value_name = "DIR")]
    writers_dir: Option<PathBuf>,
}

impl CoordinatorArgs {
    /// The state directory that `--state-dir` or the configuration file names.
    pub(crate) fn state_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.state_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(DaemonConfig::load(&self.config)?.service.state_dir),
        }
    }
}

/// A connection to a coordinator, and the embedded one when it runs here.
pub(crate) struct Coordinator {
    pub(crate) client: Client,
    embedded: Option<(Service, PathBuf)>,
    /// The configuration in force (the daemon's defaults when a daemon answered).
    pub(crate) state_dir: PathBuf,
}

impl Coordinator {
    /// Connects as `args` say; `say` receives the line that tells the user embedded mode is used.
    pub(crate) async fn reach(
        args: &CoordinatorArgs,
        say: &dyn Fn(&str),
    ) -> anyhow::Result<Coordinator> {
        let mut config = DaemonConfig::load(&args.config)?;
        if let Some(dir) = &args.state_dir {
            config.service.state_dir = dir.clone();
        }
        if let Some(dir) = &args.writers_dir {
            config.service.writers_dir = dir.clone();
        }
        let state_dir = config.service.state_dir.clone();
        if let Some(socket) = &args.socket {
            return Ok(Coordinator {
                client: Client::connect(socket).await?,
                embedded: None,
                state_dir,
            });
        }
        if !args.embedded {
            match Client::connect(&config.service.socket).await {
                Ok(client) => {
                    return Ok(Coordinator {
                        client,
                        embedded: None,
                        state_dir,
                    });
                }
                Err(RequesterError::Connect(_)) => say(&format!(
                    "no shadowcopyd answers at {}: the coordinator runs inside this command \
                     (embedded mode), with the writers declared in {}",
                    config.service.socket.display(),
                    config.service.writers_dir.display()
                )),
                Err(other) => return Err(other.into()),
            }
        }
        if !nix::unistd::geteuid().is_root() {
            anyhow::bail!(
                "the embedded coordinator needs root (it makes shadowcopies and freezes \
                 applications); run as root, or start shadowcopyd and run as a member of its \
                 backup group"
            );
        }
        let dir = runtime_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the runtime directory {}", dir.display()))?;
        config.service.socket = dir.join("shadowcopyd.sock");
        // Metrics are shadowcopyd's: a command that lives for one backup would only take the
        // port from a daemon started later, and its counts would vanish with it.
        config.metrics.listen = None;
        let service = Service::start(config)
            .await
            .context("cannot start the embedded coordinator")?;
        let client = Client::connect(service.socket()).await?;
        Ok(Coordinator {
            client,
            embedded: Some((service, dir)),
            state_dir,
        })
    }

    /// Stops the embedded coordinator, if one runs: hosted writers are stopped (and thawed) first.
    pub(crate) async fn close(self) {
        drop(self.client);
        if let Some((service, dir)) = self.embedded {
            if let Err(error) = service.stop().await {
                shadowcopy_logging::report(
                    tracing::Level::ERROR,
                    &format!("stopping the embedded coordinator: {error:#}"),
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// A private runtime directory for the embedded coordinator's socket.
fn runtime_dir() -> PathBuf {
    PathBuf::from(shadowcopy_protocol::DEFAULT_SOCKET)
        .parent()
        .map_or_else(std::env::temp_dir, std::path::Path::to_path_buf)
        .join(format!("embedded-{}", std::process::id()))
}
