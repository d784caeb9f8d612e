//! The application impact of the PostgreSQL writer: pgbench TPS and p99
//! latency for N seconds without shadow copy sets and N seconds with one set every 10 s through a
//! real `shadowcopyd`, and the writer's freeze window (Freeze received to Thaw received).
//!
//! ```text
//! cargo build -p shadowcopy-daemon
//! cargo bench -p shadowcopy-writers --bench pgbench_impact --profile dev -- 60
//! ```
//!
//! (With `--release` instead of `--profile dev`, build the daemon with `--release` too.) The
//! argument is N in seconds (60 by default). Needs root, btrfs-progs and PostgreSQL, like
//! `tests/postgres.rs`: the cluster has its data directory on one btrfs loop volume and `pg_wal`
//! on a second, pgbench scale 10 with 4 clients; every set covers both volumes and selects the
//! cluster component (a component-mode full backup, released at once). Prints a Markdown table
//! for docs/PERFORMANCE.md.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shadowcopy_metadata::WriterMetadata;
use shadowcopy_metadata::bcd::WriterComponents;
use shadowcopy_requester::Client;
use shadowcopy_test_support::postgres::{as_postgres, bindir};
use shadowcopy_test_support::sets::{
    complete, file_group, full_backup, snapshot_volumes, writer_of_class,
};
use shadowcopy_test_support::{DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure};
use shadowcopy_writers::declaration::Declaration;
use shadowcopy_writers::postgres::PostgresWriter;

/// Seconds between two sets in the measured run (the issue's "one set per 10 s").
const SET_INTERVAL: Duration = Duration::from_secs(10);

/// The PostgreSQL writer, timing its freeze windows: Freeze received to Thaw received.
struct Timed {
    writer: PostgresWriter,
    frozen_at: Mutex<Option<Instant>>,
    windows: Arc<Mutex<Vec<Duration>>>,
}

impl Writer for Timed {
    fn metadata(&self) -> WriterMetadata {
        self.writer.metadata()
    }
    async fn on_identify(&self, ctx: &EventContext) -> Result<WriterMetadata, WriterFailure> {
        self.writer.on_identify(ctx).await
    }
    async fn on_prepare_snapshot(&self, ctx: &EventContext) -> HandlerResult {
        self.writer.on_prepare_snapshot(ctx).await
    }
    async fn on_freeze(&self, ctx: &EventContext) -> HandlerResult {
        *self.frozen_at.lock().unwrap() = Some(Instant::now());
        self.writer.on_freeze(ctx).await
    }
    async fn on_thaw(&self, ctx: &EventContext) -> HandlerResult {
        if let Some(start) = self.frozen_at.lock().unwrap().take() {
            self.windows.lock().unwrap().push(start.elapsed());
        }
        self.writer.on_thaw(ctx).await
    }
    async fn on_abort(&self, ctx: &EventContext) -> HandlerResult {
        self.writer.on_abort(ctx).await
    }
    async fn on_post_snapshot(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        self.writer.on_post_snapshot(ctx, components).await
    }
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn postgres_owns(path: &Path, mode: u32) {
    run(
        Command::new("chown").arg("postgres:postgres").arg(path),
        "chown",
    );
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Stops the cluster when the bench ends or fails.
struct Server {
    pg_ctl: PathBuf,
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_postgres(&self.pg_ctl)
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One pgbench run's figures.
struct Figures {
    tps: f64,
    p99_ms: f64,
    transactions: usize,
}

/// Runs pgbench for `seconds` with a per-transaction log under `dir`, and reads TPS from its
/// summary and p99 from the log (the third field of every line is the latency in µs).
fn pgbench(bin: &Path, socket: &Path, port: u16, seconds: u64, dir: &Path) -> Figures {
    std::fs::create_dir_all(dir).unwrap();
    let out = run(
        Command::new(bin.join("pgbench"))
            .arg("-h")
            .arg(socket)
            .args(["-p", &port.to_string(), "-U", "postgres"])
            .args(["-c", "4", "-j", "2", "-n", "-T", &seconds.to_string()])
            .arg("--log")
            .arg(format!("--log-prefix={}", dir.join("tx").display()))
            .arg("postgres"),
        "pgbench",
    );
    let tps = out
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .expect("pgbench prints tps");
    let mut latencies: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        latencies.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
        );
    }
    latencies.sort_unstable();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    Figures {
        tps,
        p99_ms: p99 as f64 / 1000.0,
        transactions: latencies.len(),
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let bin = bindir();
    let a = LoopVolume::btrfs(2048 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let b = LoopVolume::btrfs(1024 * MIB).expect("a second btrfs loop volume");
    for volume in [&a, &b] {
        std::fs::set_permissions(
            volume.mount_point().parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let data = a.path("pgdata");
    let wal = b.path("pgwal");
    for dir in [&data, &wal] {
        std::fs::create_dir(dir).unwrap();
        postgres_owns(dir, 0o700);
    }
    run(
        as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .arg("--waldir")
            .arg(&wal)
            .args(["-U", "postgres", "-A", "trust", "-N"]),
        "initdb",
    );
    let socket = TempDir::new("pgbench-impact");
    postgres_owns(&socket.0, 0o755);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    conf.push_str(&format!(
        "\nlisten_addresses = ''\nport = {port}\nunix_socket_directories = '{}'\n\
         max_wal_size = 256MB\nshared_buffers = 64MB\n",
        socket.0.display()
    ));
    std::fs::write(data.join("postgresql.conf"), conf).unwrap();
    let log = socket.join("server.log");
    run(
        as_postgres(&bin.join("pg_ctl"))
            .arg("start")
            .arg("-D")
            .arg(&data)
            .args(["-w", "-l"])
            .arg(&log)
            .stdout(Stdio::null()),
        "pg_ctl start",
    );
    let _server = Server {
        pg_ctl: bin.join("pg_ctl"),
        data: data.clone(),
    };
    run(
        Command::new(bin.join("pgbench"))
            .arg("-h")
            .arg(&socket.0)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-i",
                "-s",
                "10",
                "-q",
            ])
            .arg("postgres"),
        "pgbench -i",
    );

    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), "pgbench-impact", "");
    let text = format!(
        "kind = \"postgresql\"\nname = \"pgbench-impact-{}\"\n[postgresql]\n\
         socket_dir = \"{}\"\nport = {port}\ncluster = \"bench\"\n",
        std::process::id(),
        socket.0.display()
    );
    let decl = Declaration::parse(Path::new("pgbench-impact.toml"), &text).unwrap();
    let writer = PostgresWriter::from_declaration(&decl).unwrap();
    let keeper = writer.clone();
    let windows = Arc::new(Mutex::new(Vec::new()));
    let timed = Timed {
        writer,
        frozen_at: Mutex::new(None),
        windows: Arc::clone(&windows),
    };
    let mut handle = shadowcopy_writer_sdk::spawn(timed, decl.options(daemon.socket()));
    handle.registered().await.expect("the writer registers");

    let logs = TempDir::new("pgbench-impact-logs");
    // Warm-up, so that both measured runs start from a warm cache.
    let _ = pgbench(&bin, &socket.0, port, 5, &logs.join("warmup"));
    let baseline = {
        let (bin, socket, dir) = (bin.clone(), socket.0.clone(), logs.join("baseline"));
        tokio::task::spawn_blocking(move || pgbench(&bin, &socket, port, seconds, &dir))
            .await
            .unwrap()
    };
    let measured = {
        let (bin, socket, dir) = (bin.clone(), socket.0.clone(), logs.join("with-sets"));
        tokio::task::spawn_blocking(move || pgbench(&bin, &socket, port, seconds, &dir))
    };
    let client = Client::connect(daemon.socket()).await.unwrap();
    let volumes = [a.mount_point().to_owned(), b.mount_point().to_owned()];
    let mut set_times = Vec::new();
    let started = Instant::now();
    let mut next = started + Duration::from_secs(2);
    while next + Duration::from_secs(3) < started + Duration::from_secs(seconds) {
        tokio::time::sleep_until(next.into()).await;
        next += SET_INTERVAL;
        let set_started = Instant::now();
        let (mut session, writers) = full_backup(&client).await;
        let key = file_group(writer_of_class(&writers, decl.class_id), "", "bench");
        session.add_component(&key).await.unwrap();
        snapshot_volumes(&mut session, &volumes).await;
        complete(session, &[key]).await;
        set_times.push(set_started.elapsed());
    }
    let measured = measured.await.unwrap();
    let mut windows = windows.lock().unwrap().clone();
    let sets = set_times.len();
    let max_window = windows.iter().max().copied().unwrap_or_default();
    let median_window = median(&mut windows);
    let median_set = median(&mut set_times);

    println!(
        "pgbench -c 4 -j 2, scale 10, {seconds} s per run; data and pg_wal on two btrfs loop volumes\n"
    );
    println!("| Run | Transactions | TPS | p99 latency |");
    println!("|---|---|---|---|");
    println!(
        "| no sets | {} | {:.0} | {:.2} ms |",
        baseline.transactions, baseline.tps, baseline.p99_ms
    );
    println!(
        "| one set per 10 s ({sets} sets) | {} | {:.0} | {:.2} ms |",
        measured.transactions, measured.tps, measured.p99_ms
    );
    println!(
        "\nFreeze window (Freeze received to Thaw received), {} windows: median {:.1} ms, max {:.1} ms; \
         whole set (Identify to release) median {:.0} ms",
        windows.len(),
        median_window.as_secs_f64() * 1000.0,
        max_window.as_secs_f64() * 1000.0,
        median_set.as_secs_f64() * 1000.0
    );

    handle.stop();
    handle.join().await.ok();
    drop(_server);
    drop(keeper);
    drop(daemon);
    b.close().expect("the WAL volume detaches");
    a.close().expect("the data volume detaches");
}
