//! A private Samba server for tests: Debian's `smbd` on a free loopback port, with a configuration
//! and directories of its own (no system-wide smb.conf is read or changed), serving one share to
//! guests, and `smbclient` to talk to it. Its guard stops smbd and every process it started, also
//! when the test fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::TempDir;
use crate::postgres::free_port;
use crate::wait::wait_until;

/// A running private smbd; stopped on drop.
pub struct Smbd {
    /// The smbd process, leader of its own process group (its workers join that group).
    child: Child,
    /// Its port on 127.0.0.1.
    port: u16,
    /// The share it serves.
    share: String,
    /// Its configuration, state, log and the client's configuration.
    dir: TempDir,
}

/// The path of a Samba program, which Debian puts in /usr/sbin (smbd) or /usr/bin (smbclient);
/// panics with what to install when it is missing.
fn program(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing: install samba, samba-vfs-modules and smbclient \
                 (scripts/install-deps.sh --test)"
            )
        })
}

impl Smbd {
    /// Starts smbd serving `path` as share `share`, read-only to guests, with `settings` (lines
    /// of `key = value`) added to the share's section; returns once it accepts connections.
    pub fn start(name: &str, share: &str, path: &Path, settings: &str) -> Self {
        let dir = TempDir::new(name);
        let port = free_port();
        let d = dir.0.display();
        let mut global = format!(
            "[global]\n\
             workgroup = SHADOWCOPY\n\
             server role = standalone server\n\
             smb ports = {port}\n\
             interfaces = lo\n\
             bind interfaces only = yes\n\
             disable netbios = yes\n\
             map to guest = Bad User\n\
             load printers = no\n\
             printing = bsd\n\
             printcap name = /dev/null\n\
             disable spoolss = yes\n\
             log level = 1\n\
             log file = {d}/smbd.log\n\
             passdb backend = tdbsam:{d}/private/passdb.tdb\n"
        );
        for (setting, sub) in [
            ("lock directory", "lock"),
            ("state directory", "state"),
            ("cache directory", "cache"),
            ("private dir", "private"),
            ("pid directory", "pid"),
            ("ncalrpc dir", "ncalrpc"),
            ("binddns dir", "binddns"),
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            global.push_str(&format!("{setting} = {d}/{sub}\n"));
        }
        let config = format!(
            "{global}\n[{share}]\npath = {}\nread only = yes\nguest ok = yes\n{settings}\n",
            path.display()
        );
        std::fs::write(dir.join("smb.conf"), config).unwrap();
        // The client reads no smb.conf of the system either.
        std::fs::write(dir.join("client.conf"), "[global]\n").unwrap();
        let output = std::fs::File::create(dir.join("smbd.out")).unwrap();
        let child = Command::new(program("smbd"))
            .args(["--foreground", "--no-process-group", "--debug-stdout"])
            .arg("--configfile")
            .arg(dir.join("smb.conf"))
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            // A group of its own, so that the guard stops every process smbd forks.
            .process_group(0)
            .spawn()
            .expect("smbd starts");
        let mut smbd = Smbd {
            child,
            port,
            share: share.to_owned(),
            dir,
        };
        let listening = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                || !matches!(smbd.child.try_wait(), Ok(None))
        });
        assert!(
            listening && matches!(smbd.child.try_wait(), Ok(None)),
            "smbd did not listen on 127.0.0.1:{port}: {}",
            smbd.log_text()
        );
        smbd
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smbclient //127.0.0.1/<share> -c COMMANDS` as a guest.
    pub fn client(&self, commands: &str) -> Output {
        Command::new(program("smbclient"))
            .arg(format!("//127.0.0.1/{}", self.share))
            .args(["--port", &self.port.to_string(), "--no-pass"])
            .arg("--configfile")
            .arg(self.dir.join("client.conf"))
            .args(["--command", commands])
            .stdin(Stdio::null())
            .output()
            .expect("smbclient runs")
    }

    /// [`Smbd::client`], which must succeed; its standard output.
    pub fn client_ok(&self, commands: &str) -> String {
        let output = self.client(commands);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "smbclient -c '{commands}' failed with {}: {stdout}{}\nsmbd: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.log_text()
        );
        stdout
    }

    /// smbd's output and log so far.
    pub fn log_text(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("smbd.out"), read("smbd.log"))
    }

    /// A fresh directory inside smbd's private one, for files a test fetches.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }
}

impl Drop for Smbd {
    fn drop(&mut self) {
        let Ok(group) = i32::try_from(self.child.id()).map(Pid::from_raw) else {
            return;
        };
        // SIGTERM lets smbd end its workers; what is left after that is killed.
        let _ = killpg(group, Signal::SIGTERM);
        let _ = self.child.wait();
        let gone = wait_until(Duration::from_secs(10), || {
            killpg(group, None) == Err(nix::errno::Errno::ESRCH)
        });
        if !gone {
            eprintln!("shadowcopy-test-support: smbd's processes ignored SIGTERM; killing them");
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}
