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
}

impl Cli {
    /// The binary at `binary`, talking to `daemon`.
    pub fn new(binary: impl AsRef<Path>, daemon: &DaemonProcess) -> Self {
        Cli {
            binary: binary.as_ref().to_path_buf(),
            socket: daemon.socket().to_path_buf(),
            log: daemon.log.clone(),
        }
    }

    /// `shadowcopy ARGS --socket SOCKET`, not yet run: for a test that sets the user, pipes or
    /// spawns it in the background.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(args).arg("--socket").arg(&self.socket);
        command
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
