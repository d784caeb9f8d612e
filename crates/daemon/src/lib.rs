//! The coordinator service: the coordinator with its providers and hosted writers, served to
//! requesters, writers and administrators over gRPC on a Unix socket.
//!
//! One code path, two hosts. The `shadowcopyd` binary (`src/main.rs`) reads its configuration,
//! installs logging, runs a [`Service`] until SIGTERM or SIGINT and stops it; the `shadowcopy` CLI
//! runs the same [`Service`] in-process when no daemon answers (embedded mode), with the hosted
//! writers of its configuration. Both reach it only through its socket, so a requester cannot
//! tell the hosts apart.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use shadowcopy_daemon::{DaemonConfig, Service, DEFAULT_CONFIG};
//!
//! let mut config = DaemonConfig::load(std::path::Path::new(DEFAULT_CONFIG))?;
//! config.service.socket = "/run/user/0/shadowcopy.sock".into();
//! let service = Service::start(config).await?;
//! // ... requesters connect to service.socket() ...
//! service.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! What it serves:
//! - every call is checked against the caller's SO_PEERCRED (`access.rs`, spec §17): requester and
//!   admin calls for root, the backup group and accounts with the requester role; writer
//!   registrations for root, the backup group and accounts with the writer role; `deny` wins
//!   over everything (SEC-2);
//! - `writer_service.rs` turns a writer's held stream into a `WriterEndpoint`;
//!   `requester_service.rs` turns a requester's stream into one session and releases it when the
//!   stream ends, also in the middle of a call (BK-END-6); `admin_service.rs` serves listings,
//!   deletion, exposure, revert and status;
//! - the btrfs, loop-image and reflink providers, each with its catalog in
//!   `<service.state_dir>/catalog/`, then the plug-ins of `[[providers.external]]`, and with
//!   `providers.simulated = true` the simulated providers under `/sim/` (`simulated.rs`);
//! - the exposure table (`exposure.rs`, `<state_dir>/exposures.json`), reconciled at start;
//! - the Previous Versions of the shares of `[[previous_versions]]`: a read-only `@GMT-...` view
//!   per client-accessible copy for Samba's vfs_shadow_copy2 (`previous_versions.rs`), brought in
//!   step at start, after DoSnapshotSet and after DeleteSnapshots;
//! - the writers declared in `service.writers_dir`, hosted in-process over the service's own
//!   socket (`hosted.rs`);
//! - with `metrics.listen` set, `GET /metrics` in the Prometheus text format on a TCP port or a
//!   Unix socket (`metrics.rs`, docs/metrics.md), fed by the coordinator's set observer.
//!
//! Under systemd, `shadowcopyd` reports readiness and stopping through `$NOTIFY_SOCKET` and can be
//! socket-activated: [`systemd`] reads what the service manager passed, and
//! [`Service::start_with_socket`] serves the passed socket ([`ServiceSocket::Inherited`]) instead
//! of binding one. Embedded hosts keep [`Service::start`], which binds `service.socket`.
//!
//! One coordinator per state directory: [`Service::start`] takes an exclusive `flock` on
//! `<state_dir>/lock` before it reads any catalog and holds it until the service has stopped
//! (`state_lock.rs`), so a second one, in this process or another, is refused with
//! [`ServiceError::StateDirInUse`] naming the holder's pid.

mod access;
mod admin_service;
pub mod config;
mod convert;
mod exposure;
mod hosted;
mod metrics;
mod previous_versions;
mod requester_service;
mod service;
mod simulated;
mod state;
mod state_lock;
pub mod systemd;
mod writer_service;

pub use config::{DEFAULT_CONFIG, DaemonConfig};
pub use service::{Service, ServiceError, ServiceSocket};
