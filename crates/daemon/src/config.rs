//! The daemon's configuration file, `/etc/shadowcopy/shadowcopyd.toml` (spec §15).
//!
//! Every setting has a default, so an absent file means the defaults. Unknown keys are refused,
//! because a misspelt setting that is silently ignored is worse than a daemon that does not start.
//!
//! `shadowcopyd` and an embedding program (the `shadowcopy` CLI running the coordinator in-process)
//! read the same file with [`DaemonConfig::load`]; both may then override fields, as shadowcopyd's
//! `--socket` and `--state-dir` do, before handing it to [`crate::Service::start`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::previous_versions::{DEFAULT_SNAPDIR_ROOT, PreviousVersionsShare, SHADOW_FORMAT};

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/shadowcopy/shadowcopyd.toml";

/// Everything `shadowcopyd.toml` can set.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where the daemon listens and who may call it.
    pub service: ServiceConfig,
    /// Per-account roles (CFG-8).
    pub access_control: BTreeMap<String, Role>,
    /// Limits (CFG-1, CFG-2).
    pub limits: LimitsConfig,
    /// Per-event writer timeouts (CFG-16).
    pub events: EventsConfig,
    /// Per-writer-class settings, keyed by class id (CFG-9).
    pub writers: BTreeMap<String, WriterClassConfig>,
    /// Which providers to load.
    pub providers: ProvidersConfig,
    /// Shared directories whose client-accessible shadow copies SMB clients see as Previous
    /// Versions, `[[previous_versions]]` (docs/previous-versions.md); none by default.
    pub previous_versions: Vec<PreviousVersionsShare>,
    /// The Prometheus metrics endpoint; off by default.
    pub metrics: MetricsConfig,
}

/// `[service]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// The control socket.
    pub socket: PathBuf,
    /// A group whose members may run requester and admin calls besides root (spec §17).
    pub backup_group: Option<String>,
    /// The provider commit window in milliseconds; 10 s by default (CFG-10). Lowering it is for tests.
    pub commit_window_ms: u64,
    /// Where shadowcopyd keeps what must survive a restart: the providers' catalogs
    /// (`<state_dir>/catalog/`) and the exposure table (`<state_dir>/exposures.json`).
    pub state_dir: PathBuf,
    /// Where shadow copies are exposed when no directory is given (EXP-4): each volume always at
    /// `<expose_dir>/<volume key>`, so that backup tools find it at the same path every time.
    pub expose_dir: PathBuf,
    /// The directory of writer declarations (`*.toml`) that shadowcopyd hosts in-process
    ///; a missing directory means no hosted writers.
    pub writers_dir: PathBuf,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            socket: PathBuf::from("/run/shadowcopy/shadowcopyd.sock"),
            backup_group: None,
            commit_window_ms: 10_000,
            state_dir: PathBuf::from("/var/lib/shadowcopy"),
            expose_dir: PathBuf::from("/run/shadowcopy/volumes"),
            writers_dir: PathBuf::from(shadowcopy_writers::declaration::DEFAULT_WRITERS_DIR),
        }
    }
}

/// A role granted to an account (CFG-8: 0 deny, 1 writer, 2 requester, 3 both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Neither role.
    Deny,
    /// May register writers.
    Writer,
    /// May run requester and admin calls.
    Requester,
    /// Both.
    Both,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Client-accessible shadow copies kept per volume before the oldest is deleted (CFG-1: 1 to 512).
    pub max_client_accessible_per_volume: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_client_accessible_per_volume: 64,
        }
    }
}

/// `[events]`: how long a writer may take to answer each event (CFG-16), in seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Identify.
    pub identify_timeout_s: u64,
    /// PrepareForBackup.
    pub prepare_for_backup_timeout_s: u64,
    /// PrepareForSnapshot.
    pub prepare_for_snapshot_timeout_s: u64,
    /// Thaw.
    pub thaw_timeout_s: u64,
    /// PostSnapshot.
    pub post_snapshot_timeout_s: u64,
    /// BackupComplete.
    pub backup_complete_timeout_s: u64,
    /// BackupShutdown and Abort.
    pub backup_shutdown_timeout_s: u64,
    /// PreRestore.
    pub pre_restore_timeout_s: u64,
    /// PostRestore.
    pub post_restore_timeout_s: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            identify_timeout_s: 60,
            prepare_for_backup_timeout_s: 60,
            prepare_for_snapshot_timeout_s: 60,
            thaw_timeout_s: 60,
            post_snapshot_timeout_s: 60,
            backup_complete_timeout_s: 60,
            backup_shutdown_timeout_s: 60,
            pre_restore_timeout_s: 600,
            post_restore_timeout_s: 600,
        }
    }
}

/// `[writers."<class id>"]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterClassConfig {
    /// The longest freeze window this writer class gets; may only lower the writer's own (CFG-9).
    pub max_freeze_ms: u64,
}

/// `[providers]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// Load the btrfs provider: read-only snapshots of btrfs subvolumes (on by default).
    pub btrfs: bool,
    /// Where the btrfs provider keeps its snapshots: a relative path is a directory inside each
    /// volume (default `.shadowcopy`), an absolute path one directory for every volume, which must
    /// then be on the same btrfs file system as the volumes (a snapshot cannot leave it).
    pub btrfs_snapshot_dir: PathBuf,
    /// Load the loop-image provider: volumes on loop devices whose image files live on xfs or
    /// btrfs are frozen together and their images cloned (on by default).
    pub loop_image: bool,
    /// Load the reflink file-set provider: directories on btrfs or reflink-enabled xfs are
    /// copied file by file with FICLONE while their writers are frozen (on by default).
    pub reflink: bool,
    /// Load the simulated provider, for conformance tests; it claims volumes under `/sim/`.
    pub simulated: bool,
    /// How long a provider may take to end its preparation (EndPrepareSnapshots), in seconds.
    pub end_prepare_timeout_s: u64,
    /// How long a provider may take for any other call, in seconds; the commit window caps
    /// PreCommit to PostCommit anyway (CFG-10).
    pub call_timeout_s: u64,
    /// External provider plug-ins, `[[providers.external]]`: registered after the built-in
    /// providers, in this order (PROV-SEL-1 breaks ties by registration order).
    pub external: Vec<ExternalProviderConfig>,
}

/// One `[[providers.external]]` entry: a provider plug-in process serving the Provider service on
/// its own socket (PROV-REG-1, docs/protocol.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalProviderConfig {
    /// The name the plug-in is known by in logs and messages; unique among external providers.
    pub name: String,
    /// The plug-in's socket, an absolute path.
    pub socket: PathBuf,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        ProvidersConfig {
            btrfs: true,
            btrfs_snapshot_dir: PathBuf::from(".shadowcopy"),
            loop_image: true,
            reflink: true,
            simulated: false,
            end_prepare_timeout_s: 600,
            call_timeout_s: 60,
            external: Vec::new(),
        }
    }
}

/// `[metrics]`: `GET /metrics` in the Prometheus text format (docs/metrics.md). Off unless
/// `listen` is set, because an open port is something an administrator should choose.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the endpoint listens: an IP address and port (`"127.0.0.1:9466"`, `"[::1]:9466"`),
    /// or `"unix:"` and an absolute socket path (`"unix:/run/shadowcopy/metrics.sock"`, mode
    /// 0666 like the control socket). Unset (the default): nothing listens. The endpoint has no
    /// authentication; it shows volume paths and writer names, so keep it on loopback or a socket
    /// unless the network is trusted.
    pub listen: Option<MetricsListen>,
}

/// Where the metrics endpoint listens (`metrics.listen`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MetricsListen {
    /// A TCP address and port.
    Tcp(std::net::SocketAddr),
    /// A Unix socket, an absolute path.
    Unix(PathBuf),
}

impl TryFrom<String> for MetricsListen {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        const FORMS: &str = "give an IP address and port (\"127.0.0.1:9466\", \"[::1]:9466\"; \
                             host names are not resolved) or \"unix:\" and an absolute socket \
                             path (\"unix:/run/shadowcopy/metrics.sock\"), or leave metrics.listen \
                             out to turn metrics off";
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "metrics.listen = {text:?}: the socket path must be absolute, for example \
                     \"unix:/run/shadowcopy/metrics.sock\""
                ));
            }
            return Ok(MetricsListen::Unix(path));
        }
        let address: std::net::SocketAddr = text
            .parse()
            .map_err(|_| format!("metrics.listen = {text:?} is not an address: {FORMS}"))?;
        if address.port() == 0 {
            return Err(format!(
                "metrics.listen = {text:?}: the port must not be 0, since Prometheus must know \
                 where to scrape; the usual port is 9466"
            ));
        }
        Ok(MetricsListen::Tcp(address))
    }
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Tcp(address) => write!(f, "{address}"),
            MetricsListen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped settings.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line and the key.
        message: String,
    },
    /// A setting is out of range.
    #[error("{path}: {key} = {value}: {rule}")]
    Range {
        /// The file.
        path: PathBuf,
        /// The setting.
        key: String,
        /// Its value.
        value: String,
        /// The allowed range.
        rule: String,
    },
}

impl DaemonConfig {
    /// Loads `path`; a missing file gives the defaults, since every setting has one.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        Self::parse(path, &text)
    }

    /// Parses and checks a configuration text.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: DaemonConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.into(),
            message: error.to_string(),
        })?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let range = |key: &str, value: String, rule: &str| ConfigError::Range {
            path: path.into(),
            key: key.into(),
            value,
            rule: rule.into(),
        };
        let max = self.limits.max_client_accessible_per_volume;
        if !(1..=512).contains(&max) {
            return Err(range(
                "limits.max_client_accessible_per_volume",
                max.to_string(),
                "must be between 1 and 512 (CFG-1)",
            ));
        }
        if !(1..=10_000).contains(&self.service.commit_window_ms) {
            return Err(range(
                "service.commit_window_ms",
                self.service.commit_window_ms.to_string(),
                "must be between 1 and 10000: the commit window may only be shortened (CFG-10)",
            ));
        }
        for (key, value) in [
            (
                "providers.end_prepare_timeout_s",
                self.providers.end_prepare_timeout_s,
            ),
            ("providers.call_timeout_s", self.providers.call_timeout_s),
        ] {
            if value == 0 {
                return Err(range(key, "0".into(), "must be at least 1 second"));
            }
        }
        for (index, external) in self.providers.external.iter().enumerate() {
            let key = |field: &str| format!("providers.external[{index}].{field}");
            if external.name.trim().is_empty() {
                return Err(range(
                    &key("name"),
                    format!("{:?}", external.name),
                    "must not be empty: name the plug-in for logs and messages",
                ));
            }
            if self.providers.external[..index]
                .iter()
                .any(|earlier| earlier.name == external.name)
            {
                return Err(range(
                    &key("name"),
                    format!("{:?}", external.name),
                    "is already the name of an earlier [[providers.external]] entry; names must be unique",
                ));
            }
            if !external.socket.is_absolute() {
                return Err(range(
                    &key("socket"),
                    format!("{:?}", external.socket.display().to_string()),
                    "must be an absolute path, for example \"/run/shadowcopy/providers/copy.sock\"",
                ));
            }
        }
        if let Some(MetricsListen::Unix(path)) = &self.metrics.listen
            && *path == self.service.socket
        {
            return Err(range(
                "metrics.listen",
                format!("unix:{}", path.display()),
                "is the control socket (service.socket); give the metrics endpoint a socket of \
                 its own",
            ));
        }
        crate::previous_versions::check_config(&self.previous_versions)
            .map_err(|(key, value, rule)| range(&key, value, &rule))?;
        let snapshot_dir = &self.providers.btrfs_snapshot_dir;
        if !snapshot_dir.is_absolute()
            && (snapshot_dir.components().next().is_none()
                || !snapshot_dir
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))))
        {
            return Err(range(
                "providers.btrfs_snapshot_dir",
                snapshot_dir.display().to_string(),
                "must be an absolute path, or a relative path that stays inside the volume \
                 (no `..`, not empty)",
            ));
        }
        for (class, writer) in &self.writers {
            if class.parse::<shadowcopy_metadata::WriterClassId>().is_err() {
                return Err(range(
                    &format!("writers.\"{class}\""),
                    class.clone(),
                    "the key must be a writer class id (GUID)",
                ));
            }
            if writer.max_freeze_ms == 0 {
                return Err(range(
                    &format!("writers.\"{class}\".max_freeze_ms"),
                    "0".into(),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// The commit window.
    pub fn commit_window(&self) -> Duration {
        Duration::from_millis(self.service.commit_window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config = DaemonConfig::parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(config, DaemonConfig::default());
        assert_eq!(config.commit_window(), Duration::from_secs(10));
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
            [service]
            socket = "/tmp/x.sock"
            backup_group = "backup"
            commit_window_ms = 500
            writers_dir = "/srv/writers.d"
            [access_control]
            postgres = "writer"
            bacula = "both"
            [limits]
            max_client_accessible_per_volume = 16
            [events]
            identify_timeout_s = 5
            [writers."6a9d0f52-3c2e-4c61-9a53-5b1c1f0e8d21"]
            max_freeze_ms = 20000
            [providers]
            simulated = true
            btrfs = false
            end_prepare_timeout_s = 30
        "#;
        let config = DaemonConfig::parse(Path::new("t.toml"), text).unwrap();
        assert_eq!(config.service.backup_group.as_deref(), Some("backup"));
        assert_eq!(config.service.writers_dir, Path::new("/srv/writers.d"));
        assert_eq!(
            DaemonConfig::default().service.writers_dir,
            Path::new("/etc/shadowcopy/writers.d")
        );
        assert_eq!(config.access_control["bacula"], Role::Both);
        assert_eq!(config.events.identify_timeout_s, 5);
        assert_eq!(config.events.post_snapshot_timeout_s, 60);
        assert!(config.providers.simulated);
        assert!(!config.providers.btrfs);
        assert_eq!(config.providers.end_prepare_timeout_s, 30);
        assert_eq!(config.providers.call_timeout_s, 60);
        assert!(
            DaemonConfig::default().providers.btrfs,
            "real storage by default"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err =
            DaemonConfig::parse(Path::new("t.toml"), "[service]\nsoket = \"/x\"\n").unwrap_err();
        assert!(err.to_string().contains("soket"), "{err}");
        let err = DaemonConfig::parse(
            Path::new("t.toml"),
            "[limits]\nmax_client_accessible_per_volume = 600\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("CFG-1"), "{err}");
        let err = DaemonConfig::parse(Path::new("t.toml"), "[service]\ncommit_window_ms = 60000\n")
            .unwrap_err();
        assert!(err.to_string().contains("CFG-10"), "{err}");
        let err = DaemonConfig::parse(Path::new("t.toml"), "[access_control]\nbob = \"admin\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("admin"), "{err}");
        let err = DaemonConfig::parse(Path::new("t.toml"), "[writers.nope]\nmax_freeze_ms = 5\n")
            .unwrap_err();
        assert!(err.to_string().contains("writer class id"), "{err}");
        let err = DaemonConfig::parse(
            Path::new("t.toml"),
            "[providers]\nbtrfs_snapshot_dir = \"../outside\"\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("providers.btrfs_snapshot_dir"),
            "{err}"
        );
        let err = DaemonConfig::parse(Path::new("t.toml"), "[providers]\ncall_timeout_s = 0\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("providers.call_timeout_s"),
            "{err}"
        );
    }

    #[test]
    fn metrics_are_off_by_default_and_their_address_is_checked() {
        assert_eq!(
            DaemonConfig::default().metrics.listen,
            None,
            "off by default"
        );
        let parse = |listen: &str| {
            DaemonConfig::parse(
                Path::new("t.toml"),
                &format!("[metrics]\nlisten = \"{listen}\"\n"),
            )
        };
        let tcp = parse("127.0.0.1:9466").unwrap().metrics.listen.unwrap();
        assert_eq!(tcp, MetricsListen::Tcp("127.0.0.1:9466".parse().unwrap()));
        assert_eq!(tcp.to_string(), "127.0.0.1:9466");
        let v6 = parse("[::1]:9466").unwrap().metrics.listen.unwrap();
        assert_eq!(v6.to_string(), "[::1]:9466");
        let unix = parse("unix:/run/shadowcopy/metrics.sock")
            .unwrap()
            .metrics
            .listen
            .unwrap();
        assert_eq!(
            unix,
            MetricsListen::Unix("/run/shadowcopy/metrics.sock".into())
        );
        assert_eq!(unix.to_string(), "unix:/run/shadowcopy/metrics.sock");

        for (listen, says) in [
            ("localhost:9466", "host names are not resolved"),
            ("9466", "is not an address"),
            ("", "is not an address"),
            ("127.0.0.1:0", "must not be 0"),
            ("unix:run/metrics.sock", "must be absolute"),
        ] {
            let message = parse(listen).unwrap_err().to_string();
            assert!(message.contains("metrics.listen"), "{listen}: {message}");
            assert!(message.contains(says), "{listen}: {message}");
        }
        let err = DaemonConfig::parse(
            Path::new("t.toml"),
            "[metrics]\nlisten = \"unix:/run/shadowcopy/shadowcopyd.sock\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("control socket"), "{err}");
        let err = DaemonConfig::parse(Path::new("t.toml"), "[metrics]\nport = 9466\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn external_providers_are_read_and_checked() {
        let text = r#"
            [providers]
            btrfs = false
            [[providers.external]]
            name = "copy"
            socket = "/run/shadowcopy/providers/copy.sock"
            [[providers.external]]
            name = "other"
            socket = "/run/other.sock"
        "#;
        let config = DaemonConfig::parse(Path::new("t.toml"), text).unwrap();
        assert_eq!(
            config.providers.external,
            vec![
                ExternalProviderConfig {
                    name: "copy".into(),
                    socket: "/run/shadowcopy/providers/copy.sock".into(),
                },
                ExternalProviderConfig {
                    name: "other".into(),
                    socket: "/run/other.sock".into(),
                },
            ]
        );
        assert!(DaemonConfig::default().providers.external.is_empty());

        let entry = |name: &str, socket: &str| {
            format!("[[providers.external]]\nname = \"{name}\"\nsocket = \"{socket}\"\n")
        };
        let err = DaemonConfig::parse(Path::new("t.toml"), &entry(" ", "/run/x.sock")).unwrap_err();
        assert!(
            err.to_string().contains("providers.external[0].name"),
            "{err}"
        );
        let twice = entry("copy", "/run/a.sock") + &entry("copy", "/run/b.sock");
        let err = DaemonConfig::parse(Path::new("t.toml"), &twice).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("providers.external[1].name"), "{message}");
        assert!(message.contains("unique"), "{message}");
        let err =
            DaemonConfig::parse(Path::new("t.toml"), &entry("copy", "run/copy.sock")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("providers.external[0].socket"),
            "{message}"
        );
        assert!(message.contains("absolute"), "{message}");
        let err = DaemonConfig::parse(
            Path::new("t.toml"),
            "[[providers.external]]\nname = \"copy\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("socket"), "{err}");
    }
}
