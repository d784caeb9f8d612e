//! Running the `shadowcopy` command-line tool against a [`DaemonProcess`]: the output, exit status
//! and `--json` checks that the CLI's integration tests would otherwise each write again.
//!
//! The binary's path comes from the test (`env!("CARGO_BIN_EXE_shadowcopy")` in the CLI's own
//! package, [`crate::workspace_binary`] elsewhere), so this crate does not depend on the CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::DaemonProcess;

/// The `shadowcopy` binary aimed at one daemon's socket.
///
/// It keeps the daemon's socket and log paths rather than a borrow of the daemon, so a test can
/// still [`DaemonProcess::restart`] it; both paths stay the same across a restart.
#[derive(Clone, Debug)]
pub struct Cli {
    binary: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Cli {
    /// The binary at `binary`, talking to `daemon`.
    pub fn new(binary: impl AsRef<Path>, daemon: &DaemonProcess) -> Self {
        Cli {
            binary: binary.as_ref().to_path_buf(),
            socket: daemon.socket().to_path_buf(),
            log: daemon.log.clone(),
            env: Vec::new(),
        }
    }

    /// The same binary with `key=value` in the environment of every command (for example
    /// `RESTIC_PASSWORD` for the backup commands).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `shadowcopy ARGS --socket SOCKET`, not yet run: for a test that sets the user, pipes or
    /// spawns it in the background.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(args).arg("--socket").arg(&self.socket);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `shadowcopy ARGS` without `--socket`, for the commands that need no daemon (`backups`,
    /// `restore --to`), not yet run.
    pub fn offline_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs an offline `--json` command that must exit 0 and returns the JSON it printed.
    pub fn offline_json_ok(&self, args: &[&str]) -> serde_json::Value {
        let output = self
            .offline_command(args)
            .output()
            .expect("the shadowcopy binary runs");
        assert_eq!(
            output.status.code(),
            Some(0),
            "shadowcopy {args:?} failed\nstdout: {}\nstderr: {}",
            text(&output.stdout),
            text(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "shadowcopy {args:?} printed no JSON ({e}): {}",
                text(&output.stdout)
            )
        })
    }

    /// Runs `shadowcopy ARGS` to the end and returns what it printed and its status, whatever
    /// the status is.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("the shadowcopy binary runs")
    }

    /// Runs a command that must exit 0 and returns its standard output; a failure shows the
    /// arguments, both outputs and the daemon's log.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "shadowcopy {args:?} failed\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            text(&output.stdout),
            text(&output.stderr),
            self.daemon_log()
        );
        text(&output.stdout)
    }

    /// Runs a `--json` command that must exit 0 and returns the JSON it printed.
    pub fn json_ok(&self, args: &[&str]) -> serde_json::Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("shadowcopy {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Runs a command that the daemon must refuse (exit status 1) and returns its standard error,
    /// which names the VSS code and the object.
    pub fn refused(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "shadowcopy {args:?} must be refused\nstdout: {}\nstderr: {}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stderr)
    }

    /// The daemon's log so far, for failure messages.
    fn daemon_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Output bytes as text, with anything that is not UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
