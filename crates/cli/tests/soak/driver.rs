//! The soak run: backup cycle after backup cycle through one shadowcopyd, with a database under a
//! transfer workload and random faults, then a count of what leaked.
//!
//! Shared by the CI test (`tests/soak/main.rs`, a short run) and the soak benchmark
//! (`benches/soak.rs`, `cargo bench -p shadowcopy-cli --bench soak -- 500`).
//!
//! The stack: a btrfs loop volume holding an SQLite bank that a Python workload keeps changing
//! (money moves between 1,000 accounts; the total never changes), the SQLite writer declared for
//! it, a script writer whose Freeze vetoes about 6 % of the time and hangs past its freeze window
//! about 2 % of the time (the driver draws the faults from its seed and tells the writer's script
//! through a file), both hosted by one shadowcopyd, and a restic repository. Every cycle
//! runs `shadowcopy backup --type incremental` of both writers' components; in about one cycle in
//! eight the requester is killed with SIGKILL at a random moment of its backup.
//!
//! After every cycle the daemon must have released the set: no shadow copy is left. At the end:
//! the daemon's open file descriptors and memory against a baseline taken after a warm-up, the
//! mount table and the loop devices against the start, `restic check --read-data`, the listing
//! of every backup with its documents, a restore of the last backup whose database passes
//! `PRAGMA integrity_check` and still holds all the money, and the live database's total.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shadowcopy_test_support::loop_volume::{loop_devices, mounts_at_or_under};
use shadowcopy_test_support::restic::restic_unchecked;
use shadowcopy_test_support::{DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};

const PASSWORD: &str = "soak";
/// Accounts in the bank, each starting with 1,000.
const ACCOUNTS: i64 = 1000;

/// What a soak run found.
#[derive(Debug, Clone, Default)]
pub(crate) struct SoakReport {
    /// Backup cycles run.
    pub(crate) cycles: u32,
    /// Backups that saved every component.
    pub(crate) backups_saved: u32,
    /// Backups that ended with a component not saved (a writer's veto or hang), exit status 1.
    pub(crate) backups_partial: u32,
    /// Backups whose requester was killed.
    pub(crate) requesters_killed: u32,
    /// Faults injected, by kind.
    pub(crate) faults: BTreeMap<String, u32>,
    /// Shadow copies still listed a while after a cycle ended (must be 0).
    pub(crate) copies_left: u32,
    /// The daemon's open file descriptors after the warm-up and at the end.
    pub(crate) daemon_fds: (usize, usize),
    /// The daemon's resident memory after the warm-up and at the end, KiB.
    pub(crate) daemon_rss_kib: (u64, u64),
    /// The daemon's resident memory every 100 cycles, KiB: a leak keeps growing, a cache levels
    /// off.
    pub(crate) daemon_rss_series: Vec<(u32, u64)>,
    /// Mounts left below the soak's volume, directories and the backup's mount paths (must be 0).
    pub(crate) mounts_leaked: i64,
    /// Loop devices left with a backing file there (must be 0).
    pub(crate) loops_leaked: i64,
    /// Whether `restic check --read-data` passed.
    pub(crate) repository_clean: bool,
    /// Backups in the repository, and how many of them `shadowcopy backups check` found damaged.
    pub(crate) backups_listed: usize,
    /// Backups whose documents were damaged or missing (must be 0).
    pub(crate) backups_damaged: usize,
    /// Whether the last backup restored to a database that passes `integrity_check` and holds all
    /// the money.
    pub(crate) restore_ok: bool,
    /// Whether the live database still holds all the money.
    pub(crate) live_total_ok: bool,
    /// The whole run's wall time.
    pub(crate) duration: Duration,
}

impl SoakReport {
    /// The problems found; empty when nothing leaked and no data was lost.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.copies_left > 0 {
            problems.push(format!(
                "{} shadow copies outlived their cycle",
                self.copies_left
            ));
        }
        if self.daemon_fds.1 > self.daemon_fds.0 {
            problems.push(format!(
                "the daemon held {} file descriptors after the warm-up and {} at the end",
                self.daemon_fds.0, self.daemon_fds.1
            ));
        }
        if self.mounts_leaked != 0 {
            problems.push(format!("{} mounts more at the end", self.mounts_leaked));
        }
        if self.loops_leaked != 0 {
            problems.push(format!(
                "{} loop devices more at the end",
                self.loops_leaked
            ));
        }
        if !self.repository_clean {
            problems.push("restic check --read-data failed".into());
        }
        if self.backups_damaged > 0 {
            problems.push(format!("{} backups damaged", self.backups_damaged));
        }
        if !self.restore_ok {
            problems.push("the last backup did not restore to a consistent bank".into());
        }
        if !self.live_total_ok {
            problems.push("the live bank lost money".into());
        }
        problems
    }
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "| Measure | Value |")?;
        writeln!(f, "|---|---:|")?;
        writeln!(f, "| backup cycles | {} |", self.cycles)?;
        writeln!(f, "| backups saved whole | {} |", self.backups_saved)?;
        writeln!(
            f,
            "| backups with a component not saved (veto or hang) | {} |",
            self.backups_partial
        )?;
        writeln!(
            f,
            "| requesters killed (SIGKILL) | {} |",
            self.requesters_killed
        )?;
        for (kind, count) in &self.faults {
            writeln!(f, "| faults injected: {kind} | {count} |")?;
        }
        writeln!(
            f,
            "| shadow copies left after a cycle | {} |",
            self.copies_left
        )?;
        writeln!(
            f,
            "| daemon file descriptors, after warm-up / end | {} / {} |",
            self.daemon_fds.0, self.daemon_fds.1
        )?;
        writeln!(
            f,
            "| daemon resident memory, after warm-up / end | {} / {} KiB |",
            self.daemon_rss_kib.0, self.daemon_rss_kib.1
        )?;
        if self.daemon_rss_series.len() > 1 {
            let series: Vec<String> = self
                .daemon_rss_series
                .iter()
                .map(|(cycle, kib)| format!("{cycle}: {kib}"))
                .collect();
            writeln!(
                f,
                "| daemon resident memory by cycle, KiB | {} |",
                series.join(", ")
            )?;
        }
        writeln!(f, "| mounts leaked | {} |", self.mounts_leaked)?;
        writeln!(f, "| loop devices leaked | {} |", self.loops_leaked)?;
        writeln!(
            f,
            "| backups in the repository / damaged | {} / {} |",
            self.backups_listed, self.backups_damaged
        )?;
        writeln!(
            f,
            "| restic check --read-data | {} |",
            if self.repository_clean {
                "passed"
            } else {
                "FAILED"
            }
        )?;
        writeln!(
            f,
            "| last backup restores to a consistent bank | {} |",
            if self.restore_ok { "yes" } else { "NO" }
        )?;
        writeln!(
            f,
            "| live bank's total kept | {} |",
            if self.live_total_ok { "yes" } else { "NO" }
        )?;
        write!(f, "| wall time | {:.0} s |", self.duration.as_secs_f64())
    }
}

/// A xorshift generator: the same seed gives the same faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A process killed and reaped on drop.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python(script: &str, args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs")
}

const CREATE_BANK: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
db.executemany("INSERT INTO accounts VALUES (?, 1000)", [(i,) for i in range(int(sys.argv[2]))])
db.commit()
"#;

const WORKLOAD: &str = r#"
import random, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=60)
n = int(sys.argv[2])
while True:
    a, b = random.sample(range(n), 2)
    amount = random.randint(1, 50)
    with db:
        db.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
        db.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
    time.sleep(0.002)
"#;

/// Prints `ok <count> <total>` for a bank, or what is wrong.
const CHECK_BANK: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=60)
print(db.execute("PRAGMA integrity_check").fetchone()[0],
      *db.execute("SELECT count(*), sum(balance) FROM accounts").fetchone())
"#;

fn bank_is_whole(db: &Path) -> bool {
    let out = python(CHECK_BANK, &[db.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout).trim() == format!("ok {ACCOUNTS} {}", ACCOUNTS * 1000)
}

/// The script the flaky writer's Freeze runs: it does what the driver wrote into `plan` for this
/// cycle: `veto` (exit 1), `hang` (sleep past the freeze window) or nothing.
fn flaky_script(plan: &Path) -> String {
    format!(
        "#!/bin/sh\ncase \"$(cat {plan} 2>/dev/null)\" in\n  veto) exit 1 ;;\n  \
         hang) sleep 4 ;;\nesac\nexit 0\n",
        plan = plan.display()
    )
}

/// The daemon's open file descriptors once it has settled: the fewest of ten looks over a
/// second, since the server closes a finished connection a moment after its client has gone. A
/// leak grows with the cycles and shows all the same.
fn open_fds(pid: u32) -> usize {
    (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
        })
        .min()
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Mounts at or below any of `dirs` (the soak's volume, its directories, the backup's stable
/// mount paths), other than the volume itself. Counting only these keeps the count true while
/// other tests mount and unmount volumes of their own.
fn mounts_below(dirs: &[&Path], volume: &Path) -> i64 {
    dirs.iter()
        .flat_map(|dir| mounts_at_or_under(dir))
        .filter(|m| m != volume)
        .count() as i64
}

/// Loop devices whose backing file lies below any of `dirs`.
fn loops_below(dirs: &[&Path]) -> i64 {
    loop_devices()
        .into_iter()
        .filter(|(_, backing)| dirs.iter().any(|d| backing.starts_with(d)))
        .count() as i64
}

/// Shadow copies the daemon lists.
fn listed_copies(cli: &Path, socket: &Path) -> usize {
    let out = Command::new(cli)
        .args(["--json", "list", "--socket"])
        .arg(socket)
        .output()
        .expect("shadowcopy runs");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(usize::MAX)
}

/// Runs `cycles` backup cycles with faults drawn from `seed`.
pub(crate) fn run(name: &str, cycles: u32, seed: u64) -> SoakReport {
    let started = Instant::now();
    let mut report = SoakReport {
        cycles,
        ..SoakReport::default()
    };
    let mut rng = Rng(seed | 1);
    let volume = LoopVolume::btrfs(512 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
    let work = TempDir::new(name);
    let bank = volume.path("bank/bank.db");
    std::fs::create_dir_all(bank.parent().unwrap()).unwrap();
    std::fs::create_dir_all(volume.path("flaky")).unwrap();
    std::fs::write(volume.path("flaky/state"), "flaky writer's data").unwrap();
    let created = python(
        CREATE_BANK,
        &[bank.to_str().unwrap(), &ACCOUNTS.to_string()],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let workload = Background(
        Command::new("python3")
            .arg("-c")
            .arg(WORKLOAD)
            .args([bank.to_str().unwrap(), &ACCOUNTS.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs"),
    );

    let writers = work.join("writers.d");
    std::fs::create_dir_all(&writers).unwrap();
    let plan = work.join("next-writer-fault");
    let script = work.join("flaky.sh");
    std::fs::write(&script, flaky_script(&plan)).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        writers.join("bank.toml"),
        format!(
            "kind = \"sqlite\"\nname = \"bank\"\n\n[[sqlite.databases]]\npath = \"{}\"\ncomponent = \"accounts\"\n",
            bank.display()
        ),
    )
    .unwrap();
    std::fs::write(
        writers.join("flaky.toml"),
        format!(
            "kind = \"script\"\nname = \"flaky\"\nfreeze_timeout_ms = 1500\n\n[script]\nfreeze = \"{}\"\n\n\
             [[script.components]]\nname = \"files\"\nfiles = [{{ path = \"{}\", recursive = true }}]\n",
            script.display(),
            volume.path("flaky").display()
        ),
    )
    .unwrap();
    let config = format!("[service]\nwriters_dir = \"{}\"\n", writers.display());
    let daemon = DaemonProcess::start(&workspace_binary("shadowcopyd"), name, &config);
    let cli = workspace_binary("shadowcopy");
    let repo = work.join("repo");

    let warm_up = cycles.min(5);
    for cycle in 0..cycles {
        if cycle == warm_up {
            report.daemon_fds.0 = open_fds(daemon.pid());
            report.daemon_rss_kib.0 = rss_kib(daemon.pid());
        }
        if cycle % 100 == 0 {
            report
                .daemon_rss_series
                .push((cycle, rss_kib(daemon.pid())));
        }
        let mut command = Command::new(&cli);
        command
            .args(["backup", "--json", "--type", "incremental"])
            .args(["--component", "bank:accounts", "--component", "flaky:files"])
            .arg("--repo")
            .arg(&repo)
            .arg("--socket")
            .arg(daemon.socket())
            .env("RESTIC_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The writer's fault for this cycle: a veto 6 % of the time, a hang past the freeze window
        // 2 %; and the requester killed in one cycle in eight, at a random moment.
        let writer_fault = match rng.below(100) {
            0..=5 => "veto",
            6..=7 => "hang",
            _ => "none",
        };
        std::fs::write(&plan, writer_fault).unwrap();
        let kill_after = (rng.below(8) == 0).then(|| Duration::from_millis(rng.below(600)));
        let mut child = command.spawn().expect("shadowcopy runs");
        let status = match kill_after {
            Some(delay) => {
                std::thread::sleep(delay);
                let killed = child.try_wait().ok().flatten().is_none();
                if killed {
                    let _ = child.kill();
                    report.requesters_killed += 1;
                    *report.faults.entry("requester SIGKILL".into()).or_default() += 1;
                }
                child.wait().expect("reaped")
            }
            None => child.wait().expect("reaped"),
        };
        match writer_fault {
            "veto" => {
                *report
                    .faults
                    .entry("writer vetoes at Freeze".into())
                    .or_default() += 1
            }
            "hang" => {
                *report
                    .faults
                    .entry("writer hangs past its freeze window".into())
                    .or_default() += 1;
            }
            _ => {}
        }
        match status.code() {
            Some(0) => report.backups_saved += 1,
            Some(1) => report.backups_partial += 1,
            _ => {}
        }
        // The daemon releases the set at the end of the session, also when the requester was
        // killed (BK-END-6); give it a moment, then count what is left.
        let deadline = Instant::now() + Duration::from_secs(10);
        while listed_copies(&cli, daemon.socket()) != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if listed_copies(&cli, daemon.socket()) != 0 {
            report.copies_left += 1;
        }
    }
    report.daemon_fds.1 = open_fds(daemon.pid());
    report.daemon_rss_kib.1 = rss_kib(daemon.pid());
    drop(workload);
    report.live_total_ok = bank_is_whole(&bank);
    report.repository_clean = restic_unchecked(&repo, PASSWORD, &["check", "--read-data"])
        .status
        .success();
    let checked = Command::new(&cli)
        .args(["--json", "backups", "check", "--repo"])
        .arg(&repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .output()
        .expect("shadowcopy runs");
    let checked: serde_json::Value =
        serde_json::from_slice(&checked.stdout).unwrap_or(serde_json::Value::Null);
    report.backups_listed = checked["backups_checked"].as_u64().unwrap_or(0) as usize;
    report.backups_damaged = checked["damaged_backups"]
        .as_array()
        .map_or(usize::MAX, Vec::len);
    let target = work.join("restored");
    let restored = Command::new(&cli)
        .args(["restore", "--backup", "latest", "--json", "--repo"])
        .arg(&repo)
        .arg("--to")
        .arg(&target)
        .env("RESTIC_PASSWORD", PASSWORD)
        .output()
        .expect("shadowcopy runs");
    let restored_bank: PathBuf = target.join(bank.strip_prefix("/").unwrap());
    report.restore_ok = restored.status.success() && bank_is_whole(&restored_bank);

    drop(daemon);
    let watched = [
        volume.mount_point(),
        work.0.as_path(),
        Path::new("/run/shadowcopy/backup"),
    ];
    report.mounts_leaked = mounts_below(&watched, volume.mount_point());
    report.loops_leaked = loops_below(&watched);
    drop(work);
    volume.close().expect("the soak's volume detaches");
    report.duration = started.elapsed();
    report
}
