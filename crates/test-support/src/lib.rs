//! Test support: a real `shadowcopyd` process per test, with its own socket, runtime directory
//! and configuration, killed and cleaned up by a guard even when the test fails.
//!
//! Tests of the daemon's own package pass `env!("CARGO_BIN_EXE_shadowcopyd")`; tests of other
//! packages use [`workspace_binary`], which finds the binary that `cargo test --workspace` built.
//!
//! Provider tests get real file systems from [`LoopVolume`] (module [`loop_volume`]): btrfs, xfs
//! or ext4 on a loop device of their own, torn down by a guard (architecture intent §8).
//!
//! CLI tests run the `shadowcopy` binary against a daemon through [`Cli`] (module [`cli`]).
//!
//! Writer and daemon tests drive backup sessions through the requester with [`sets`].
//!
//! PostgreSQL writer and backup tests run a private cluster on two loop volumes with [`postgres`].
//!
//! Previous Versions tests serve a share with a private `smbd` and read it with `smbclient`
//! ([`samba`]).
//!
//! The fault matrix checks what a fault may not leave behind (frozen file systems, cgroups and
//! applications, shadow copies, mounts, loop devices) with [`invariants`].
//!
//! Socket-activation and metrics tests see which Unix sockets listen, without connecting, with
//! [`proc_net`].

pub mod cli;
pub mod damage;
pub mod invariants;
pub mod loop_volume;
pub mod postgres;
pub mod proc_net;
pub mod restic;
pub mod samba;
pub mod sets;
pub mod tree;
pub mod wait;

pub use cli::Cli;
pub use loop_volume::{Footprint, FsKind, LoopError, LoopVolume, MIB, ReadOnlyImage};
pub use proc_net::unix_socket_listening;
pub use wait::wait_until;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private runtime directory removed on drop.
pub struct TempDir(
    /// The directory.
    pub PathBuf,
);

impl TempDir {
    /// A fresh directory under the system temp dir, named after the test.
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("sc-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Processes running as other users (access tests) must reach the socket inside.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running daemon; killed on drop, after which anything still mounted under its private
/// directory (exposed shadow copies) is unmounted, so a failing test leaves no mount behind.
pub struct DaemonProcess {
    /// The daemon process.
    pub child: Child,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its log file (stderr, at debug level).
    pub log: PathBuf,
    /// Its private directory, holding the socket, configuration, log, state directory (`state/`)
    /// and default expose directory (`exposed/`).
    pub dir: TempDir,
    /// The binary, for [`DaemonProcess::restart`].
    binary: PathBuf,
    /// Variables added to its environment (fault rules), kept for [`DaemonProcess::restart`].
    env: Vec<(String, String)>,
}

/// The configuration the tests use: simulated providers, short event timeouts, a 2 s commit window.
pub const TEST_CONFIG: &str = r#"
[service]
commit_window_ms = 2000
[events]
identify_timeout_s = 5
prepare_for_backup_timeout_s = 5
prepare_for_snapshot_timeout_s = 5
thaw_timeout_s = 5
post_snapshot_timeout_s = 5
backup_complete_timeout_s = 5
backup_shutdown_timeout_s = 5
pre_restore_timeout_s = 5
post_restore_timeout_s = 5
[providers]
simulated = true
"#;

impl DaemonProcess {
    /// Starts the `shadowcopyd` at `binary` with `config` and waits until its socket answers.
    ///
    /// Its state directory is `<dir>/state` and its expose directory `<dir>/exposed` (see
    /// [`DaemonProcess::state_dir`], [`DaemonProcess::expose_dir`]), so parallel tests never share
    /// a catalog, an exposure table or an exposure.
    pub fn start(binary: &Path, name: &str, config: &str) -> Self {
        Self::start_with_env(binary, name, config, &[])
    }

    /// [`DaemonProcess::start`] with `env` added to the daemon's environment, also after a
    /// [`DaemonProcess::restart`]: the fault rules of `shadowcopy-faults`, say.
    pub fn start_with_env(binary: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new(name);
        let socket = dir.join("shadowcopyd.sock");
        std::fs::write(dir.join("shadowcopyd.toml"), config).unwrap();
        let log = dir.join("shadowcopyd.log");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let child = Self::spawn(binary, &dir, &socket, &log, &env);
        let mut daemon = DaemonProcess {
            child,
            socket,
            log,
            dir,
            binary: binary.to_path_buf(),
            env,
        };
        daemon.wait_for_socket();
        daemon
    }

    fn spawn(
        binary: &Path,
        dir: &TempDir,
        socket: &Path,
        log: &Path,
        env: &[(String, String)],
    ) -> Child {
        // Appending keeps the log of an earlier run of the same daemon (restart).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(binary)
            .arg("--config")
            .arg(dir.join("shadowcopyd.toml"))
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--expose-dir")
            .arg(dir.join("exposed"))
            .env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("shadowcopyd starts")
    }

    /// Kills the daemon with SIGKILL, as a crash would, and starts it again with the same
    /// configuration, socket, state and expose directories; waits until it answers. Mounts it
    /// left (exposures) stay, as they would after a crash.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        self.start_again();
    }

    /// Starts the daemon again after it died (killed by a fault, say), with the same
    /// configuration, environment, socket, state and expose directories; reaps the dead one first
    /// and waits until the new one answers.
    pub fn start_again(&mut self) {
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        self.child = Self::spawn(&self.binary, &self.dir, &self.socket, &self.log, &self.env);
        self.wait_for_socket();
    }

    /// Whether the daemon process is still running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's state directory (`--state-dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The daemon's default expose directory (`--expose-dir`).
    pub fn expose_dir(&self) -> PathBuf {
        self.dir.join("exposed")
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("shadowcopyd exited with {status}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "shadowcopyd did not listen within 20 s: {}",
            self.log_text()
        );
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill();
        unmount_everything_under(&self.dir.0);
    }
}

/// Unmounts every mount at or under `dir`, deepest first, lazily when one stays busy: the
/// exposures a daemon (or a failed test) left in its private directory. `TempDir` then removes
/// the directory, which must not reach into a mounted file system.
pub fn unmount_everything_under(dir: &Path) {
    use nix::mount::{MntFlags, umount2};
    let mut mounts = loop_volume::mounts_at_or_under(dir);
    // Later mounts may sit on earlier ones; longer paths lie deeper.
    mounts.reverse();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for mount in mounts {
        let mut done = false;
        for attempt in 0..10 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            match umount2(&mount, MntFlags::empty()) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {
                    done = true;
                    break;
                }
                Err(_) => {}
            }
        }
        if !done {
            match umount2(&mount, MntFlags::MNT_DETACH) {
                Ok(()) => eprintln!(
                    "shadowcopy-test-support: {} stayed busy and was unmounted lazily",
                    mount.display()
                ),
                Err(errno) => eprintln!(
                    "shadowcopy-test-support: cannot unmount {}: {errno}",
                    mount.display()
                ),
            }
        }
    }
}

/// A binary of the workspace, built by `cargo build --workspace --bins` next to the running test.
///
/// Panics with what to run when the binary is missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test knows its path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (scripts/test.sh does)",
        binary.display()
    );
    binary
}
