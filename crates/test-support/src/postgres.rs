//! A private PostgreSQL cluster for writer and backup tests: its data directory on one btrfs
//! [`LoopVolume`] and `pg_wal` on a second one (through the `pg_wal` symbolic link, as
//! `initdb --waldir` makes it), loaded with pgbench, on a port and socket directory of its own.
//!
//! Every server runs as `postgres` (PostgreSQL refuses root) with trust authentication on its
//! private Unix socket only, and is stopped by [`Server`]'s guard even when the test fails; pgbench
//! clients started as a [`Workload`] are killed by theirs. The binaries are the newest Debian
//! `/usr/lib/postgresql/<major>/bin` (`scripts/install-deps.sh --test` installs PostgreSQL 15).
//!
//! A test that needs the writer parses [`Fixture::writer_declaration`] with the writers crate's
//! `Declaration::parse`; this crate does not depend on the writers, so that their own tests can
//! use it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::{LoopVolume, TempDir};

/// The PostgreSQL binaries: the newest `/usr/lib/postgresql/<major>/bin` with `initdb`.
pub fn bindir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql; scripts/install-deps.sh)")
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL server with initdb").1
}

/// A port no one listens on now (the servers listen only on their Unix socket, whose name the
/// port gives, so a clash could only come from another test's server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The standard output of a program that must have succeeded; panics with both outputs when it
/// did not.
pub fn check(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed with {}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a PostgreSQL program as the `postgres` user (servers never run as root).
pub fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(program)
        .current_dir("/")
        .stdin(Stdio::null());
    command
}

/// Gives `path` to `postgres:postgres`.
pub fn chown_postgres(path: &Path) {
    check(
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .output()
            .unwrap(),
        "chown",
    );
}

/// A directory `postgres` owns, mode 0700 (what initdb and the server want).
pub fn postgres_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    chown_postgres(path);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path.to_owned()
}

/// Lets `postgres` reach into a loop volume, whose private directory is 0700.
pub fn open_volume(volume: &LoopVolume) {
    let parent = volume.mount_point().parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(volume.mount_point(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A running server on a data directory; stopped (immediately, then killed) on drop.
pub struct Server {
    /// The PostgreSQL binaries.
    pub bin: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// The directory of its Unix socket.
    pub socket_dir: PathBuf,
    /// Its port (which names the socket file).
    pub port: u16,
    /// Its log (`pg_ctl start -l`), shown when a test fails.
    pub log: PathBuf,
}

impl Server {
    /// Starts the cluster in `data` on a free port and the socket directory `socket_dir` (given on
    /// the command line, so that a copy of a cluster does not take the original's).
    pub fn start(bin: &Path, data: &Path, socket_dir: &Path, log: &Path) -> Server {
        let server = Server {
            bin: bin.to_owned(),
            data: data.to_owned(),
            socket_dir: socket_dir.to_owned(),
            port: free_port(),
            log: log.to_owned(),
        };
        std::fs::write(log, "").unwrap();
        chown_postgres(log);
        let output = as_postgres(&bin.join("pg_ctl"))
            .arg("start")
            .arg("-D")
            .arg(data)
            .args(["-w", "-t", "90", "-l"])
            .arg(log)
            .arg("-o")
            .arg(format!("-p {} -k {}", server.port, socket_dir.display()))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        if !output.status.success() {
            panic!(
                "pg_ctl start of {} failed: {}; log: {}",
                data.display(),
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        server
    }

    /// Runs a client program (psql, pgbench, pg_amcheck) against the server, as root with the
    /// `postgres` role (trust authentication on the private socket).
    pub fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres"])
            .stdin(Stdio::null());
        command
    }

    /// Runs `query` in the `postgres` database and returns its unaligned, tuples-only output
    /// (`|` between columns); panics when it fails.
    pub fn sql(&self, query: &str) -> String {
        let output = self
            .client("psql")
            .args([
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
            ])
            .arg(query)
            .output()
            .unwrap();
        check(output, &format!("psql {query:?}")).trim().to_owned()
    }

    /// `pg_amcheck` of every relation of the `postgres` database (installing `amcheck` when
    /// missing); on failure, its output and the server's log.
    pub fn amcheck(&self) -> Result<(), String> {
        let output = self
            .client("pg_amcheck")
            .args(["--install-missing", "-d", "postgres"])
            .output()
            .unwrap();
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "pg_amcheck of the cluster in {} failed: {}{}; the server's log: {}",
            self.data.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        ))
    }

    /// `pg_ctl stop -m <mode>`; whether the server stopped.
    pub fn stop(&self, mode: &str) -> bool {
        as_postgres(&self.bin.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The server's own account of a failure is the first thing to read.
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "log of the server on {} (last 40 lines):\n{}",
                self.data.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        if self.data.join("postmaster.pid").exists() && !self.stop("immediate") {
            // A server that does not stop (a failing test left it frozen) is killed: SIGKILL also
            // ends frozen processes.
            if let Ok(text) = std::fs::read_to_string(self.data.join("postmaster.pid"))
                && let Some(pid) = text.lines().next()
            {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
    }
}

/// pgbench clients running until dropped.
pub struct Workload(
    /// The pgbench process.
    pub Child,
);

impl Workload {
    /// `clients` pgbench clients on `server` for up to an hour, output discarded.
    pub fn start(server: &Server, clients: u32) -> Workload {
        Workload(
            server
                .client("pgbench")
                .args(["-c", &clients.to_string(), "-j", "2", "-T", "3600", "-n"])
                .arg("postgres")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Whether pgbench still runs (its clients abort, and it exits, on any error).
    pub fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh cluster on two volumes (see [`fixture`]). Dropping it stops the server and removes
/// the socket directory.
pub struct Fixture {
    /// The PostgreSQL binaries.
    pub bin: PathBuf,
    /// The running server.
    pub server: Server,
    /// Its socket directory (owned by `postgres`), which also holds `server.log`.
    pub socket_dir: TempDir,
    /// The data directory, on the first volume.
    pub data: PathBuf,
    /// The WAL directory, on the second volume; the data directory's `pg_wal` links to it.
    pub wal: PathBuf,
}

/// The two volumes, a fresh cluster (data in `a/pgdata`, WAL in `b/pgwal`) loaded with pgbench
/// scale 5 and running; `name` names its socket directory.
pub fn fixture(a: &LoopVolume, b: &LoopVolume, name: &str) -> Fixture {
    let bin = bindir();
    open_volume(a);
    open_volume(b);
    let data = a.path("pgdata");
    let wal = postgres_dir(&b.path("pgwal"));
    // initdb fills the data directory; the volume's root is root's, so make it for postgres.
    postgres_dir(&data);
    let output = as_postgres(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .arg("--waldir")
        .arg(&wal)
        .args(["-U", "postgres", "-A", "trust", "-N", "--no-instructions"])
        .output()
        .unwrap();
    check(output, "initdb");
    // Small WAL so that the second volume never fills; frequent checkpoints as in the research.
    let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    conf.push_str(
        "\nlisten_addresses = ''\nmax_wal_size = 64MB\nmin_wal_size = 32MB\n\
         checkpoint_timeout = 30s\nshared_buffers = 32MB\nmax_connections = 30\n",
    );
    std::fs::write(data.join("postgresql.conf"), conf).unwrap();
    let socket_dir = TempDir::new(&format!("{name}-sock"));
    chown_postgres(&socket_dir.0);
    let log = socket_dir.join("server.log");
    let server = Server::start(&bin, &data, &socket_dir.0, &log);
    check(
        server
            .client("pgbench")
            .args(["-i", "-s", "5", "-q", "postgres"])
            .output()
            .unwrap(),
        "pgbench -i",
    );
    Fixture {
        bin,
        server,
        socket_dir,
        data,
        wal,
    }
}

impl Fixture {
    /// The text of a `kind = "postgresql"` writer declaration named `name` for this cluster, with
    /// the logical path root `bench` and the data directory left to discovery. A restore's
    /// `pg_ctl start` logs to the server's log, so that a failing test shows one log.
    pub fn writer_declaration(&self, name: &str) -> String {
        format!(
            "kind = \"postgresql\"\nname = \"{name}\"\nfreeze_timeout_ms = 20000\n\
             [postgresql]\nsocket_dir = \"{}\"\nport = {}\ncluster = \"bench\"\n\
             start_log = \"{}\"\n",
            self.socket_dir.0.display(),
            self.server.port,
            self.server.log.display()
        )
    }
}

/// pgbench's balance sums of a server: accounts, branches, tellers and history deltas (equal
/// while the invariant holds); and the number of history rows.
pub fn invariant(server: &Server) -> (Vec<i64>, i64) {
    let row = server.sql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), \
                (SELECT sum(bbalance) FROM pgbench_branches), \
                (SELECT sum(tbalance) FROM pgbench_tellers), \
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history), \
                (SELECT count(*) FROM pgbench_history)",
    );
    let values: Vec<i64> = row.split('|').map(|v| v.parse().unwrap()).collect();
    (values[..4].to_vec(), values[4])
}

/// Asserts pgbench's balance invariant on `server` (the sums of the balances of accounts,
/// branches and tellers each equal the sum of the history's deltas; `what` names the cluster in
/// the panic); returns the number of history rows.
pub fn assert_balanced(server: &Server, what: &str) -> i64 {
    let (sums, history) = invariant(server);
    assert!(
        sums.iter().all(|s| *s == sums[0]),
        "{what}: pgbench's invariant broke: accounts, branches, tellers, history = {sums:?}"
    );
    history
}
