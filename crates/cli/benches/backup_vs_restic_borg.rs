//! Benchmark: `shadowcopy backup` and `shadowcopy restore` against restic 0.14 and borg 1.2 on one
//! 1 GiB / 10,000-file data set, and the incremental backup after 1 % of the files changed
//! (docs/PERFORMANCE.md).
//!
//! The data set: 10,000 files of incompressible pseudo-random bytes, 1 GiB in all, in 300
//! directories (20 × 15), on a 3 GiB btrfs loop volume of the benchmark's own; sizes follow a
//! fixed mix (about 60 % under 16 KiB, 30 % of 16–128 KiB, 9 % of 128 KiB–1 MiB, 1 % of 1–8 MiB,
//! then scaled so that the total is exactly 1 GiB), all generated from fixed seeds.
//!
//! Each round, with fresh repositories and caches, every tool does three phases, one after the
//! other: the first backup, a second backup of the unchanged volume, and a restore of the second
//! backup into an empty directory. The order of the tools rotates from round to round, and before
//! every phase the page cache is dropped (`sync`, `echo 3 > /proc/sys/vm/drop_caches`), so every
//! phase starts cold.
//!
//! - shadowcopy: through a `shadowcopyd` started by the benchmark (real btrfs provider), in volume
//!   mode: `shadowcopy backup --repo R --volume V --json`, then the same with `--type incremental`,
//!   then `shadowcopy restore --repo R --backup ID --to DIR`. Its time includes the shadow copy
//!   set, which the others do not make.
//! - restic: `restic -r R backup V` from the live volume, twice, then
//!   `restic -r R restore latest --target DIR`.
//! - borg: `borg init -e repokey R` (not timed), `borg create R::first V`, `borg create R::second
//!   V`, then `borg extract R::second` in DIR.
//!
//! Times are wall-clock times of the command, from spawn to exit (a restore's dirty pages are
//! written back afterwards, outside the time, for every tool alike), with the command's user and
//! system CPU time beside them. After the second backups, each repository is also opened and
//! listed (`shadowcopy backups list`, `restic snapshots`, `borg list`): the fixed cost of every
//! command of the tool (process start, key derivation, index). Every restore is checked: each
//! file there with its length, every 97th byte for byte. After each round, 100 files
//! (1 %) get new contents of the same length and `shadowcopy backup --type incremental` runs once
//! more against that round's repository: bytes added against bytes changed, and its time against
//! the round's full backup.
//!
//! Run as root, with btrfs-progs, restic and borgbackup (`scripts/install-deps.sh --bench`):
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo bench -p shadowcopy-cli --bench backup_vs_restic_borg -- 5
//! ```
//!
//! The argument is the number of rounds (5 by default, at least 3). The benchmark starts the
//! release `shadowcopyd` next to it, so build that first. For a quick trial on a smaller data set,
//! `BACKUP_BENCH_FILES` and `BACKUP_BENCH_MIB` change the number of files and the total size; the
//! published figures use the defaults. Prints Markdown tables for docs/PERFORMANCE.md on stdout and
//! each round's figures on stderr. Volumes, repositories, restores and the daemon are removed by
//! guards, also when a step fails.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use shadowcopy_test_support::{Cli, DaemonProcess, LoopVolume, MIB, TempDir, workspace_binary};

/// The same password for every tool's repository.
const PASSWORD: &str = "shadowcopy benchmark password";
/// Directories of the data set: `dNN/sNN`, 20 × 15.
const TOP_DIRS: usize = 20;
const SUB_DIRS: usize = 15;
/// Share of the files changed before the incremental backup: 1 %.
const CHANGED_PER_MILLE: usize = 10;

// ---------------------------------------------------------------------------------------------
// Deterministic data.

/// SplitMix64: the generator behind every size, choice and byte of the data set.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `low..high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

/// One file of the data set.
struct DataFile {
    relative: PathBuf,
    len: u64,
}

/// The data set's files, sizes scaled so that they add up to exactly `total` bytes.
fn plan(files: usize, total: u64) -> Vec<DataFile> {
    let mut rng = Rng::new(0x5EED_0001);
    let mut sizes: Vec<u64> = (0..files)
        .map(|_| match rng.range(0, 100) {
            0..60 => rng.range(512, 16 << 10),
            60..90 => rng.range(16 << 10, 128 << 10),
            90..99 => rng.range(128 << 10, 1 << 20),
            _ => rng.range(1 << 20, 8 << 20),
        })
        .collect();
    let sum: u64 = sizes.iter().sum();
    let scale = total as f64 / sum as f64;
    for size in &mut sizes {
        *size = ((*size as f64 * scale) as u64).max(1);
    }
    // Rounding leaves a few bytes over or under: the largest file absorbs them.
    let scaled: u64 = sizes.iter().sum();
    let largest = (0..files).max_by_key(|&i| sizes[i]).unwrap();
    sizes[largest] = (sizes[largest] + total).checked_sub(scaled).unwrap();
    sizes
        .into_iter()
        .enumerate()
        .map(|(i, len)| DataFile {
            relative: PathBuf::from(format!(
                "d{:02}/s{:02}/f{i:05}.bin",
                i % TOP_DIRS,
                (i / TOP_DIRS) % SUB_DIRS
            )),
            len,
        })
        .collect()
}

/// Writes `len` pseudo-random (incompressible) bytes made from `seed` to `path`.
fn write_random(path: &Path, seed: u64, len: u64) {
    let mut rng = Rng::new(seed);
    let mut file = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())),
    );
    let mut left = len;
    let mut block = vec![0u8; 64 << 10];
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

/// Writes the whole data set under `root`.
fn populate(root: &Path, files: &[DataFile]) {
    for (i, file) in files.iter().enumerate() {
        let path = root.join(&file.relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random(&path, 1_000_000 + i as u64, file.len);
    }
}

/// Gives 1 % of the files (chosen by `round`) new contents of the same length; returns how many
/// files and bytes changed.
fn change_one_percent(root: &Path, files: &[DataFile], round: usize) -> (usize, u64) {
    let count = (files.len() * CHANGED_PER_MILLE / 1000).max(1);
    let mut rng = Rng::new(0xC4A9_0000 + round as u64);
    let mut chosen = BTreeSet::new();
    while chosen.len() < count {
        chosen.insert(rng.range(0, files.len() as u64) as usize);
    }
    let mut bytes = 0;
    for &i in &chosen {
        let file = &files[i];
        write_random(
            &root.join(&file.relative),
            (round as u64 + 1) << 40 | i as u64,
            file.len,
        );
        bytes += file.len;
    }
    (count, bytes)
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// Writes dirty pages back and drops the page cache, dentries and inodes, so the next phase
/// starts cold.
fn drop_caches() {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .expect("drop the page cache (the benchmark runs as root)");
}

/// One command's times.
#[derive(Default, Clone, Copy)]
struct Measure {
    /// From spawn to exit.
    wall: Duration,
    /// User and system CPU time of the command (and of its own children).
    cpu: Duration,
}

impl Measure {
    fn wall_s(&self) -> f64 {
        self.wall.as_secs_f64()
    }
    fn cpu_s(&self) -> f64 {
        self.cpu.as_secs_f64()
    }
}

/// The CPU time of this process's children that have been waited for (`cutime` + `cstime` in
/// /proc/self/stat).
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which ends with the last `)`: state is field 3, cutime
    // field 16 and cstime field 17.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[13].parse::<u64>().unwrap() + fields[14].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Runs `command` cold and returns its times and output; panics with its output on failure.
fn timed(what: &str, command: &mut Command) -> (Measure, Output) {
    drop_caches();
    let cpu_before = children_cpu();
    let start = Instant::now();
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let elapsed = Measure {
        wall: start.elapsed(),
        cpu: children_cpu() - cpu_before,
    };
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (elapsed, output)
}

/// Runs an untimed setup command that must succeed.
fn run(what: &str, command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

/// restic's `--json` backup output: the summary line.
fn restic_summary(output: &Output) -> Value {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["message_type"] == "summary")
        .expect("restic printed a summary")
}

/// Bytes of all files under `dir` (apparent sizes).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// Checks a restore: every file of the data set is there with its length, and a sample of them
/// byte for byte equal to the live volume's.
fn verify_restore(tool: Tool, restored: &Path, live: &Path, files: &[DataFile]) {
    for (i, file) in files.iter().enumerate() {
        let path = restored.join(&file.relative);
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{tool}: {} not restored: {e}", path.display()))
            .len();
        assert_eq!(
            len,
            file.len,
            "{tool}: {} has the wrong length",
            path.display()
        );
        if i % 97 == 0 {
            assert!(
                std::fs::read(&path).unwrap() == std::fs::read(live.join(&file.relative)).unwrap(),
                "{tool}: {} differs from the live file",
                path.display()
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Shadowcopy,
    Restic,
    Borg,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tool::Shadowcopy => "shadowcopy",
            Tool::Restic => "restic",
            Tool::Borg => "borg",
        })
    }
}

const TOOLS: [Tool; 3] = [Tool::Shadowcopy, Tool::Restic, Tool::Borg];

/// Picks one figure, in seconds or bytes, from a tool's round.
type Pick = fn(&ToolRound) -> f64;

/// One tool's figures of one round.
#[derive(Default, Clone)]
struct ToolRound {
    first: Measure,
    second: Measure,
    restore: Measure,
    /// Opening the repository and listing its snapshots, after the second backup: the fixed cost
    /// of every command (process start, key derivation, index).
    list: Measure,
    repo_bytes: u64,
}

/// shadowcopy's own account of its backups (`--json`), and the incremental experiment.
#[derive(Default, Clone)]
struct ShadowcopyRound {
    first_set_s: f64,
    first_copy_s: f64,
    first_duration_s: f64,
    second_set_s: f64,
    second_copy_s: f64,
    second_duration_s: f64,
    restore_duration_s: f64,
    changed_files: usize,
    changed_bytes: u64,
    incremental: Measure,
    incremental_added: u64,
    incremental_files_changed: u64,
    incremental_set_s: f64,
    incremental_copy_s: f64,
}

/// Everything one round needs.
struct Bench<'a> {
    cli: &'a Cli,
    volume: &'a Path,
    files: &'a [DataFile],
}

impl Bench<'_> {
    /// The volume's path inside a restore target.
    fn restored(&self, target: &Path) -> PathBuf {
        target.join(self.volume.strip_prefix("/").unwrap())
    }

    fn shadowcopy(&self, work: &TempDir, figures: &mut ShadowcopyRound) -> ToolRound {
        let repo = work.join("shadowcopy-repo");
        let repo_arg = repo.to_str().unwrap();
        let volume = self.volume.to_str().unwrap();
        let mut round = ToolRound::default();

        let (time, out) = timed(
            "shadowcopy backup (first)",
            &mut self
                .cli
                .command(&["backup", "--json", "--repo", repo_arg, "--volume", volume]),
        );
        let first = json(&out);
        assert_eq!(first["backup_type"], "full", "{first}");
        round.first = time;
        round.repo_bytes = dir_bytes(&repo);
        figures.first_set_s = first["snapshot_set_s"].as_f64().unwrap();
        figures.first_copy_s = first["copy_s"].as_f64().unwrap();
        figures.first_duration_s = first["duration_s"].as_f64().unwrap();

        let (time, out) = timed(
            "shadowcopy backup (second, unchanged)",
            &mut self.cli.command(&[
                "backup",
                "--json",
                "--repo",
                repo_arg,
                "--volume",
                volume,
                "--type",
                "incremental",
            ]),
        );
        let second = json(&out);
        assert_eq!(second["backup_type"], "incremental", "{second}");
        assert_eq!(
            second["files"]["new"], 0,
            "the unchanged backup found its parent: {second}"
        );
        round.second = time;
        figures.second_set_s = second["snapshot_set_s"].as_f64().unwrap();
        figures.second_copy_s = second["copy_s"].as_f64().unwrap();
        figures.second_duration_s = second["duration_s"].as_f64().unwrap();
        let id = second["backup_id"].as_str().unwrap();
        round.list = timed(
            "shadowcopy backups list",
            &mut self
                .cli
                .offline_command(&["backups", "list", "--json", "--repo", repo_arg]),
        )
        .0;

        let target = work.join("shadowcopy-restore");
        let (time, out) = timed(
            "shadowcopy restore",
            &mut self.cli.offline_command(&[
                "restore",
                "--json",
                "--repo",
                repo_arg,
                "--backup",
                id,
                "--to",
                target.to_str().unwrap(),
            ]),
        );
        let restore = json(&out);
        assert_eq!(restore["succeeded"], true, "{restore}");
        figures.restore_duration_s = restore["duration_s"].as_f64().unwrap_or_default();
        round.restore = time;
        verify_restore(
            Tool::Shadowcopy,
            &self.restored(&target),
            self.volume,
            self.files,
        );
        // Not needed any more; the repository stays for the incremental experiment.
        std::fs::remove_dir_all(&target).unwrap();
        round
    }

    fn restic(&self, work: &TempDir) -> ToolRound {
        let repo = work.join("restic-repo");
        let cache = work.join("restic-cache");
        let restic = |args: &[&str]| {
            let mut command = Command::new("restic");
            command
                .arg("-r")
                .arg(&repo)
                .args(args)
                .env("RESTIC_PASSWORD", PASSWORD)
                .env("RESTIC_CACHE_DIR", &cache);
            command
        };
        let volume = self.volume.to_str().unwrap();
        let exclude = self.volume.join(".shadowcopy");
        let exclude = exclude.to_str().unwrap();
        let mut round = ToolRound::default();
        run("restic init", &mut restic(&["init"]));

        let (time, out) = timed(
            "restic backup (first)",
            &mut restic(&["backup", "--json", "--exclude", exclude, volume]),
        );
        let summary = restic_summary(&out);
        assert_eq!(
            summary["files_new"].as_u64(),
            Some(self.files.len() as u64),
            "{summary}"
        );
        round.first = time;
        round.repo_bytes = dir_bytes(&repo);

        let (time, out) = timed(
            "restic backup (second, unchanged)",
            &mut restic(&["backup", "--json", "--exclude", exclude, volume]),
        );
        let summary = restic_summary(&out);
        assert_eq!(
            summary["files_unmodified"].as_u64(),
            Some(self.files.len() as u64),
            "restic found its parent: {summary}"
        );
        round.second = time;
        round.list = timed("restic snapshots", &mut restic(&["snapshots", "--json"])).0;

        let target = work.join("restic-restore");
        let (time, _) = timed(
            "restic restore",
            &mut restic(&["restore", "latest", "--target", target.to_str().unwrap()]),
        );
        round.restore = time;
        verify_restore(
            Tool::Restic,
            &self.restored(&target),
            self.volume,
            self.files,
        );
        std::fs::remove_dir_all(&target).unwrap();
        std::fs::remove_dir_all(&repo).unwrap();
        let _ = std::fs::remove_dir_all(&cache);
        round
    }

    fn borg(&self, work: &TempDir) -> ToolRound {
        let repo = work.join("borg-repo");
        let base = work.join("borg-base");
        let borg = |args: &[&str]| {
            let mut command = Command::new("borg");
            command
                .args(args)
                .env("BORG_PASSPHRASE", PASSWORD)
                // Cache, keys and security records of this round only.
                .env("BORG_BASE_DIR", &base);
            command
        };
        let repo_arg = repo.to_str().unwrap();
        let volume = self.volume.to_str().unwrap();
        let exclude = self.volume.join(".shadowcopy");
        let exclude = exclude.to_str().unwrap();
        let mut round = ToolRound::default();
        run("borg init", &mut borg(&["init", "-e", "repokey", repo_arg]));

        let (time, out) = timed(
            "borg create (first)",
            &mut borg(&[
                "create",
                "--json",
                "--exclude",
                exclude,
                &format!("{repo_arg}::first"),
                volume,
            ]),
        );
        let stats = &json(&out)["archive"]["stats"];
        assert_eq!(
            stats["nfiles"].as_u64(),
            Some(self.files.len() as u64),
            "{stats}"
        );
        round.first = time;
        round.repo_bytes = dir_bytes(&repo);

        let (time, out) = timed(
            "borg create (second, unchanged)",
            &mut borg(&[
                "create",
                "--json",
                "--exclude",
                exclude,
                &format!("{repo_arg}::second"),
                volume,
            ]),
        );
        let stats = &json(&out)["archive"]["stats"];
        assert!(
            stats["deduplicated_size"].as_u64().unwrap() < 1 << 20,
            "borg's second archive deduplicated everything: {stats}"
        );
        round.second = time;
        round.list = timed("borg list", &mut borg(&["list", "--json", repo_arg])).0;

        let target = work.join("borg-restore");
        std::fs::create_dir_all(&target).unwrap();
        let (time, _) = timed(
            "borg extract",
            borg(&["extract", &format!("{repo_arg}::second")]).current_dir(&target),
        );
        round.restore = time;
        verify_restore(Tool::Borg, &self.restored(&target), self.volume, self.files);
        std::fs::remove_dir_all(&target).unwrap();
        std::fs::remove_dir_all(&repo).unwrap();
        let _ = std::fs::remove_dir_all(&base);
        round
    }

    /// 1 % of the files change; one more incremental backup into the round's shadowcopy
    /// repository.
    fn incremental(&self, work: &TempDir, round: usize, figures: &mut ShadowcopyRound) {
        let repo = work.join("shadowcopy-repo");
        let (files, bytes) = change_one_percent(self.volume, self.files, round);
        figures.changed_files = files;
        figures.changed_bytes = bytes;
        let (time, out) = timed(
            "shadowcopy backup (incremental after 1 % changed)",
            &mut self.cli.command(&[
                "backup",
                "--json",
                "--repo",
                repo.to_str().unwrap(),
                "--volume",
                self.volume.to_str().unwrap(),
                "--type",
                "incremental",
            ]),
        );
        let report = json(&out);
        assert_eq!(report["backup_type"], "incremental", "{report}");
        figures.incremental = time;
        figures.incremental_added = report["bytes"]["added"].as_u64().unwrap();
        figures.incremental_files_changed = report["files"]["changed"].as_u64().unwrap();
        figures.incremental_set_s = report["snapshot_set_s"].as_f64().unwrap();
        figures.incremental_copy_s = report["copy_s"].as_f64().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting.

fn median_f64(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median, minimum and maximum of some seconds.
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(values: impl IntoIterator<Item = f64>) -> Stats {
    let v: Vec<f64> = values.into_iter().collect();
    Stats {
        median: median_f64(v.iter().copied()),
        min: v.iter().copied().fold(f64::INFINITY, f64::min),
        max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / MIB as f64)
}

fn tool_version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| format!("{program}: not found"))
}

fn machine() -> String {
    let kernel = tool_version("uname", "-r");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let kib: u64 = text
                .lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.0} GiB", kib as f64 / (1 << 20) as f64))
        })
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let restic = tool_version("restic", "version");
    let restic = restic
        .split(" compiled")
        .next()
        .unwrap_or(&restic)
        .to_owned();
    format!(
        "{date}, kernel {kernel}, {cores} cores, {memory}; {restic}; {}",
        tool_version("borg", "--version")
    )
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| a.parse().expect("the argument is the number of rounds"))
        .unwrap_or(5);
    assert!(rounds >= 3, "at least 3 rounds, for medians");
    let file_count: usize = std::env::var("BACKUP_BENCH_FILES")
        .ok()
        .map(|v| v.parse().expect("BACKUP_BENCH_FILES is a number"))
        .unwrap_or(10_000);
    let total_mib: u64 = std::env::var("BACKUP_BENCH_MIB")
        .ok()
        .map(|v| v.parse().expect("BACKUP_BENCH_MIB is a number"))
        .unwrap_or(1024);
    let shadowcopyd = workspace_binary("shadowcopyd");
    let machine = machine();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("machine: {machine}");

    let files = plan(file_count, total_mib * MIB);
    let total: u64 = files.iter().map(|f| f.len).sum();
    // Room for the data, one snapshot's metadata and the 1 % rewrites: three times the data.
    let volume = LoopVolume::btrfs((3 * total).max(1024 * MIB))
        .expect("a btrfs loop volume (root, btrfs-progs)");
    let start = Instant::now();
    populate(volume.mount_point(), &files);
    nix::unistd::sync();
    eprintln!(
        "data set: {} files, {} in {} directories, written in {:.1} s",
        files.len(),
        mib(total as f64),
        TOP_DIRS * SUB_DIRS,
        start.elapsed().as_secs_f64()
    );
    let classes = [
        ("< 16 KiB", 0, 16 << 10),
        ("16–128 KiB", 16 << 10, 128 << 10),
        ("128 KiB–1 MiB", 128 << 10, 1 << 20),
        (">= 1 MiB", 1 << 20, u64::MAX),
    ];
    let mix: Vec<String> = classes
        .iter()
        .map(|(name, low, high)| {
            let inside: Vec<u64> = files
                .iter()
                .map(|f| f.len)
                .filter(|l| l >= low && l < high)
                .collect();
            format!(
                "{name}: {} files, {}",
                inside.len(),
                mib(inside.iter().sum::<u64>() as f64)
            )
        })
        .collect();
    eprintln!("size mix: {}", mix.join("; "));

    let daemon = DaemonProcess::start(&shadowcopyd, "bench-backup-vs-restic-borg", "");
    let cli =
        Cli::new(env!("CARGO_BIN_EXE_shadowcopy"), &daemon).with_env("RESTIC_PASSWORD", PASSWORD);
    let bench = Bench {
        cli: &cli,
        volume: volume.mount_point(),
        files: &files,
    };

    let mut results: Vec<Vec<(Tool, ToolRound)>> = Vec::new();
    let mut shadowcopy_rounds: Vec<ShadowcopyRound> = Vec::new();
    for round in 0..rounds {
        let work = TempDir::new("bench-backup-round");
        let mut order = TOOLS;
        order.rotate_left(round % TOOLS.len());
        let mut figures = ShadowcopyRound::default();
        let mut measured = Vec::new();
        for tool in order {
            let r = match tool {
                Tool::Shadowcopy => bench.shadowcopy(&work, &mut figures),
                Tool::Restic => bench.restic(&work),
                Tool::Borg => bench.borg(&work),
            };
            eprintln!(
                "round {}: {tool:<10} first {:7.2} s  second {:6.2} s  restore {:6.2} s  \
                 list {:5.2} s  repo {}",
                round + 1,
                r.first.wall_s(),
                r.second.wall_s(),
                r.restore.wall_s(),
                r.list.wall_s(),
                mib(r.repo_bytes as f64)
            );
            measured.push((tool, r));
        }
        bench.incremental(&work, round, &mut figures);
        eprintln!(
            "round {}: shadowcopy duration {:.3}/{:.3} s, set {:.3}/{:.3} s, copy {:.3}/{:.3} s \
             (first/second); incremental after {} files ({}) changed: {:.2} s, {} added, \
             set {:.3} s, copy {:.3} s",
            round + 1,
            figures.first_duration_s,
            figures.second_duration_s,
            figures.first_set_s,
            figures.second_set_s,
            figures.first_copy_s,
            figures.second_copy_s,
            figures.changed_files,
            mib(figures.changed_bytes as f64),
            figures.incremental.wall_s(),
            mib(figures.incremental_added as f64),
            figures.incremental_set_s,
            figures.incremental_copy_s,
        );
        results.push(measured);
        shadowcopy_rounds.push(figures);
        drop(work);
    }
    drop(daemon);

    // The tables.
    let of = |tool: Tool, pick: Pick| -> Stats {
        stats(results.iter().map(|round| {
            round
                .iter()
                .find(|(t, _)| *t == tool)
                .map(|(_, r)| pick(r))
                .unwrap()
        }))
    };
    let phases: [(&str, Pick); 4] = [
        ("first backup", |r| r.first.wall_s()),
        ("second backup, unchanged", |r| r.second.wall_s()),
        ("restore", |r| r.restore.wall_s()),
        ("open and list the repository", |r| r.list.wall_s()),
    ];
    println!(
        "{} files, {} in {} directories, btrfs loop volume; {rounds} rounds, medians (min–max)",
        files.len(),
        mib(total as f64),
        TOP_DIRS * SUB_DIRS
    );
    println!("{machine}");
    println!();
    println!("| Phase | shadowcopy | restic | borg | shadowcopy / restic | borg / restic |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, pick) in phases {
        let s = of(Tool::Shadowcopy, pick);
        let r = of(Tool::Restic, pick);
        let b = of(Tool::Borg, pick);
        let cell = |x: &Stats| format!("{:.2} s ({:.2}–{:.2})", x.median, x.min, x.max);
        println!(
            "| {name} | {} | {} | {} | {:.2} | {:.2} |",
            cell(&s),
            cell(&r),
            cell(&b),
            s.median / r.median,
            b.median / r.median
        );
    }
    let size = |tool: Tool| of(tool, |r| r.repo_bytes as f64).median;
    println!(
        "| repository after the first backup | {} | {} | {} | {:.3} | {:.3} |",
        mib(size(Tool::Shadowcopy)),
        mib(size(Tool::Restic)),
        mib(size(Tool::Borg)),
        size(Tool::Shadowcopy) / size(Tool::Restic),
        size(Tool::Borg) / size(Tool::Restic)
    );

    println!();
    println!("CPU time (user + system) of the same commands, medians; {cores} cores:");
    println!();
    println!("| Phase | shadowcopy | restic | borg |");
    println!("|---|---:|---:|---:|");
    let cpu_phases: [(&str, Pick); 4] = [
        ("first backup", |r| r.first.cpu_s()),
        ("second backup, unchanged", |r| r.second.cpu_s()),
        ("restore", |r| r.restore.cpu_s()),
        ("open and list the repository", |r| r.list.cpu_s()),
    ];
    for (name, pick) in cpu_phases {
        println!(
            "| {name} | {:.2} s | {:.2} s | {:.2} s |",
            of(Tool::Shadowcopy, pick).median,
            of(Tool::Restic, pick).median,
            of(Tool::Borg, pick).median
        );
    }

    let sc = &shadowcopy_rounds;
    let med = |pick: fn(&ShadowcopyRound) -> f64| median_f64(sc.iter().map(pick));
    let wall_first = of(Tool::Shadowcopy, phases[0].1).median;
    let wall_second = of(Tool::Shadowcopy, phases[1].1).median;
    let wall_restore = of(Tool::Shadowcopy, phases[2].1).median;
    println!();
    println!("Where shadowcopy's time goes (medians, seconds, from `--json`):");
    println!();
    println!("| shadowcopy | wall | duration_s | snapshot_set_s | copy_s |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| first backup | {wall_first:.2} | {:.2} | {:.3} | {:.2} |",
        med(|r| r.first_duration_s),
        med(|r| r.first_set_s),
        med(|r| r.first_copy_s)
    );
    println!(
        "| second backup, unchanged | {wall_second:.2} | {:.2} | {:.3} | {:.2} |",
        med(|r| r.second_duration_s),
        med(|r| r.second_set_s),
        med(|r| r.second_copy_s)
    );
    println!(
        "| restore | {wall_restore:.2} | {:.2} | | |",
        med(|r| r.restore_duration_s)
    );

    let changed = med(|r| r.changed_bytes as f64);
    let added = med(|r| r.incremental_added as f64);
    let incremental = med(|r| r.incremental.wall_s());
    let ratio_added = median_f64(
        sc.iter()
            .map(|r| r.incremental_added as f64 / r.changed_bytes as f64),
    );
    println!();
    println!(
        "Incremental after 1 % of the files changed ({} files per round, new contents of the same length):",
        sc[0].changed_files
    );
    println!();
    println!("| Measure | Median | Min–max |");
    println!("|---|---:|---:|");
    let row = |name: &str, values: Vec<f64>, show: &dyn Fn(f64) -> String| {
        let s = stats(values);
        println!(
            "| {name} | {} | {}–{} |",
            show(s.median),
            show(s.min),
            show(s.max)
        );
    };
    let secs = |x: f64| format!("{x:.2} s");
    let bytes = |x: f64| mib(x);
    let plain = |x: f64| format!("{x:.3}");
    row(
        "bytes changed",
        sc.iter().map(|r| r.changed_bytes as f64).collect(),
        &bytes,
    );
    row(
        "bytes added by the incremental",
        sc.iter().map(|r| r.incremental_added as f64).collect(),
        &bytes,
    );
    row(
        "added / changed",
        sc.iter()
            .map(|r| r.incremental_added as f64 / r.changed_bytes as f64)
            .collect(),
        &plain,
    );
    row(
        "files changed (as the backup counted them)",
        sc.iter()
            .map(|r| r.incremental_files_changed as f64)
            .collect(),
        &|x| format!("{x:.0}"),
    );
    row(
        "incremental backup, wall",
        sc.iter().map(|r| r.incremental.wall_s()).collect(),
        &secs,
    );
    row(
        "its shadow copy set (snapshot_set_s)",
        sc.iter().map(|r| r.incremental_set_s).collect(),
        &|x| format!("{:.1} ms", x * 1000.0),
    );
    row(
        "its copy (copy_s)",
        sc.iter().map(|r| r.incremental_copy_s).collect(),
        &secs,
    );
    row(
        "full backup, wall (same rounds)",
        results
            .iter()
            .map(|round| {
                round
                    .iter()
                    .find(|(t, _)| *t == Tool::Shadowcopy)
                    .unwrap()
                    .1
                    .first
                    .wall_s()
            })
            .collect(),
        &secs,
    );
    row(
        "incremental / full time",
        sc.iter()
            .zip(&results)
            .map(|(r, round)| {
                let full = round
                    .iter()
                    .find(|(t, _)| *t == Tool::Shadowcopy)
                    .unwrap()
                    .1
                    .first;
                r.incremental.wall_s() / full.wall_s()
            })
            .collect(),
        &plain,
    );
    eprintln!(
        "incremental: {} added for {} changed ({ratio_added:.3}), {incremental:.2} s against a \
         {wall_first:.2} s full backup",
        mib(added),
        mib(changed)
    );

    volume.close().expect("the btrfs volume detaches");
}
