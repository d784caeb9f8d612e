//! The stack one cell of the fault matrix runs on, built fresh for each cell so that cells run in
//! parallel: a btrfs volume and an xfs volume on a loop device whose image lives on an xfs host
//! volume (so that both the btrfs and the loop-image provider take part, and the loop-image one
//! FIFREEZEs for real), two applications, a `shadowcopyd`, a script writer and a cgroup writer as
//! processes of their own, and a restic repository; with the fault rules of `shadowcopy-faults`
//! given to the party that is to fail, and every piece torn down by its guard.
//!
//! - Application A appends lines to a file on the btrfs volume; the script writer (`script-<cell>`)
//!   stops it with SIGSTOP at Freeze and continues it at Thaw or Abort. Its component `data` is
//!   `<btrfs>/app/data`. Each of its commands notes its event in a journal, then reaches the fault
//!   point of the event (`shadowcopy-fault writer:<event>`).
//! - Application B appends lines to a file on the xfs volume, in a cgroup the cgroup writer
//!   (`cgroup-<cell>`) freezes; its component `data` is `<xfs>/data`.
//! - The daemon's event timeouts, provider call limits and commit window are 2 s, the script
//!   writer's freeze window 3 s and its commands' timeout 4 s: a hang costs seconds, and the
//!   coordinator's limits are met before the writer's own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use shadowcopy_test_support::invariants::Watch;
use shadowcopy_test_support::tree::{TreeEntry, pseudo_random, read_tree};
use shadowcopy_test_support::{
    DaemonProcess, FsKind, LoopVolume, MIB, TempDir, wait_until, workspace_binary,
};

/// The repository password of every cell.
pub(crate) const PASSWORD: &str = "fault matrix";

/// Short limits everywhere, so that a hang costs seconds (module documentation).
const DAEMON_CONFIG: &str = "\
[service]
commit_window_ms = 2000
[events]
identify_timeout_s = 2
prepare_for_backup_timeout_s = 2
prepare_for_snapshot_timeout_s = 2
thaw_timeout_s = 2
post_snapshot_timeout_s = 2
backup_complete_timeout_s = 2
backup_shutdown_timeout_s = 2
pre_restore_timeout_s = 2
post_restore_timeout_s = 2
[providers]
end_prepare_timeout_s = 2
call_timeout_s = 2
";

/// Stands for the cell's directory in rules (its pid files); [`Rig::new`] puts the directory in.
pub(crate) const CELL_DIR: &str = "/@cell@";

/// How long a command of the test may run before the test gives up on it as hung.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// The fault rules of one cell (`SHADOWCOPY_FAULTS`), per process.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    /// For `shadowcopyd` (the providers' points).
    pub(crate) daemon: Option<String>,
    /// For the script writer (its commands' points).
    pub(crate) writer: Option<String>,
    /// For the `shadowcopy` command that runs the faulted backup or restore.
    pub(crate) requester: Option<String>,
}

/// A process of the test, killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A shell loop appending a numbered line to a file every 10 ms, in a process group of its own;
/// continued (in case it was left stopped) and killed with its group on drop.
pub(crate) struct App {
    child: Child,
}

impl App {
    fn start(log: &Path) -> App {
        use std::os::unix::process::CommandExt;
        let script = format!(
            "i=0; while :; do i=$((i+1)); echo \"line $i\" >> '{}'; sleep 0.01; done",
            log.display()
        );
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("/bin/sh starts");
        App { child }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The cgroup writer's own cgroup, removed (thawed first) once application B is gone.
struct CgroupDir(Option<PathBuf>);

impl Drop for CgroupDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            shadowcopy_test_support::invariants::thaw_cgroup(dir);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// How a `shadowcopy` command ended.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Whether SIGKILL ended it.
    pub(crate) fn killed(&self) -> bool {
        std::os::unix::process::ExitStatusExt::signal(&self.status) == Some(9)
    }

    /// What it printed with `--json`, if it printed JSON.
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.stdout).ok()
    }

    /// The first VSS result code named on standard error (`VSS_E_...` or `E_...`).
    pub(crate) fn code(&self) -> Option<String> {
        self.stderr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|word| {
                (word.starts_with("VSS_E_") || word.starts_with("E_"))
                    && word.len() > 3
                    && word.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
            .map(str::to_owned)
    }

    fn describe(&self) -> String {
        format!(
            "{}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            tail(&self.stderr, 3000)
        )
    }
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}

/// Everything one cell runs on. Fields drop in order: the processes, then the daemon, then the
/// cgroup, the volumes (the xfs volume before the host holding its image) and the directory.
pub(crate) struct Rig {
    /// The cell's name, in writer names and messages.
    pub(crate) name: String,
    script: Option<Proc>,
    cgroup_writer: Option<Proc>,
    app_a: App,
    app_b: App,
    pub(crate) daemon: DaemonProcess,
    cgroup: CgroupDir,
    /// The repository's own small volume, for the repository-full cell; held for its guard.
    _repo_volume: Option<LoopVolume>,
    pub(crate) xfs: LoopVolume,
    pub(crate) host: LoopVolume,
    pub(crate) btrfs: LoopVolume,
    pub(crate) dir: TempDir,
    rules: Rules,
    /// The repository.
    pub(crate) repo: PathBuf,
}

impl Rig {
    /// Builds the stack for the cell `name` with `rules` for its parties; `small_repository`
    /// puts the repository on an ext4 volume of 16 MiB of its own.
    pub(crate) fn new(name: &str, rules: Rules, small_repository: bool) -> Rig {
        let dir = TempDir::new(&format!("fault-{name}"));
        let place =
            |rule: Option<String>| rule.map(|r| r.replace(CELL_DIR, &dir.0.display().to_string()));
        let rules = Rules {
            daemon: place(rules.daemon),
            writer: place(rules.writer),
            requester: place(rules.requester),
        };
        let btrfs = LoopVolume::btrfs(128 * MIB).expect("a btrfs loop volume (root, btrfs-progs)");
        // Room for the xfs volume's image fully allocated (the snapshot-storage cell) besides
        // the host's own log.
        let host = LoopVolume::xfs(600 * MIB).expect("an xfs host volume (xfsprogs)");
        let xfs = LoopVolume::new_in(FsKind::Xfs, 300 * MIB, host.mount_point())
            .expect("an xfs loop volume whose image is on the host");
        let repo_volume = small_repository
            .then(|| LoopVolume::ext4(16 * MIB).expect("an ext4 loop volume for the repository"));
        let repo = match &repo_volume {
            Some(volume) => volume.path("repo"),
            None => dir.join("repo"),
        };

        // The data: static files in each component, and each application's own log beside it.
        let data = btrfs.path("app/data");
        std::fs::create_dir_all(&data).unwrap();
        for i in 0..8u64 {
            std::fs::write(
                data.join(format!("f{i}")),
                pseudo_random(i, 3000 + 500 * i as usize),
            )
            .unwrap();
        }
        std::fs::create_dir_all(xfs.path("data")).unwrap();
        std::fs::write(xfs.path("data/b"), pseudo_random(99, 5000)).unwrap();
        let app_a = App::start(&btrfs.path("app/a.log"));
        let app_b = App::start(&xfs.path("b.log"));

        // Info, not the debug level DaemonProcess sets: the gRPC frames logged at debug level
        // cost a cell more CPU than its work.
        let mut daemon_env: Vec<(&str, String)> = vec![("RUST_LOG", "info".to_owned())];
        daemon_env.extend(fault_env(&dir, rules.daemon.as_deref()));
        let daemon_env: Vec<(&str, &str)> =
            daemon_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let daemon = DaemonProcess::start_with_env(
            &workspace_binary("shadowcopyd"),
            &format!("fault-{name}"),
            DAEMON_CONFIG,
            &daemon_env,
        );
        std::fs::write(dir.join("daemon.pid"), daemon.pid().to_string()).unwrap();

        let mut rig = Rig {
            name: name.to_owned(),
            script: None,
            cgroup_writer: None,
            app_a,
            app_b,
            daemon,
            cgroup: CgroupDir(None),
            _repo_volume: repo_volume,
            xfs,
            host,
            btrfs,
            dir,
            rules,
            repo,
        };
        rig.declare_writers();
        rig.start_writers();
        rig
    }

    /// The requester's fault rules, for the faulted backup or restore.
    pub(crate) fn requester_rules(&self) -> Option<&str> {
        self.rules.requester.as_deref()
    }

    /// The script writer's name.
    pub(crate) fn script_name(&self) -> String {
        format!("script-{}", self.name)
    }

    /// The cgroup writer's name.
    pub(crate) fn cgroup_name(&self) -> String {
        format!("cgroup-{}", self.name)
    }

    /// The script writer's data, which its component holds.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.btrfs.path("app/data")
    }

    /// The journal of the script writer's commands: one `EVENT SET_ID` line each.
    pub(crate) fn journal(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("journal"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn declare_writers(&self) {
        let fault = workspace_binary("shadowcopy-fault");
        let journal = self.dir.join("journal");
        let note = format!(
            "echo \"$SHADOWCOPY_EVENT ${{SHADOWCOPY_SET_ID:-}}\" >> '{}'",
            journal.display()
        );
        let point = |event: &str| format!("'{}' writer:{event}", fault.display());
        let a = self.app_a.pid();
        let stop = format!(
            "kill -STOP {a} && while ! grep -q '^State:.*stopped' /proc/{a}/status; do sleep 0.01; done"
        );
        let resume = format!("kill -CONT {a}");
        let mut commands = String::new();
        for (event, point_name) in [
            ("identify", "identify"),
            ("prepare_backup", "prepare-backup"),
            ("prepare_snapshot", "prepare-snapshot"),
            ("post_snapshot", "post-snapshot"),
            ("backup_complete", "backup-complete"),
            ("backup_shutdown", "backup-shutdown"),
            ("pre_restore", "pre-restore"),
            ("post_restore", "post-restore"),
        ] {
            commands.push_str(&format!(
                "{event} = {}\n",
                toml_string(&format!("{note}; {}", point(point_name)))
            ));
        }
        // Freeze stops the application first, so that a fault at Freeze finds it stopped; Thaw
        // reaches its fault point before it continues the application, so that a failed or hung
        // Thaw leaves it to Abort.
        commands.push_str(&format!(
            "freeze = {}\n",
            toml_string(&format!("{note}; {stop} && {}", point("freeze")))
        ));
        commands.push_str(&format!(
            "thaw = {}\n",
            toml_string(&format!("{note}; {} && {resume}", point("thaw")))
        ));
        commands.push_str(&format!(
            "abort = {}\n",
            toml_string(&format!("{note}; {resume}"))
        ));
        let script = format!(
            "kind = \"script\"\nname = \"{}\"\nfreeze_timeout_ms = 3000\n[script]\n\
             timeout_ms = 4000\n{commands}\
             [[script.components]]\nname = \"data\"\n\
             files = [{{ path = \"{}\", recursive = true }}]\n",
            self.script_name(),
            self.data_dir().display()
        );
        std::fs::write(self.dir.join("script.toml"), script).unwrap();

        let cgroup = format!(
            "kind = \"cgroup\"\nname = \"{}\"\nfreeze_timeout_ms = 20000\n[cgroup]\n\
             pids = [{}]\ncgroup_name = \"{}\"\nruntime_dir = \"{}\"\n\
             [[cgroup.components]]\nname = \"data\"\n\
             files = [{{ path = \"{}\", recursive = true }}]\n",
            self.cgroup_name(),
            self.app_b.pid(),
            self.cgroup_dir_name(),
            self.dir.join("cgroup-frozen").display(),
            self.xfs.path("data").display()
        );
        std::fs::write(self.dir.join("cgroup.toml"), cgroup).unwrap();
    }

    fn cgroup_dir_name(&self) -> String {
        format!("sc-fault-{}-{}", std::process::id(), self.name)
    }

    fn spawn_writer(&self, declaration: &str, log: &str, rules: Option<&str>) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))
            .unwrap();
        let child = Command::new(workspace_binary("shadowcopy-writer"))
            .arg("run")
            .arg(self.dir.join(declaration))
            .arg("--socket")
            .arg(self.daemon.socket())
            .envs(fault_env(&self.dir, rules))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("shadowcopy-writer starts");
        Proc(child)
    }

    /// Starts whichever writer is not running (as a supervisor would restart a writer that
    /// died) and waits until both are registered.
    pub(crate) fn start_writers(&mut self) {
        let names = [self.script_name(), self.cgroup_name()];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            // A writer whose daemon died exits a moment later (it does not reconnect): checked
            // on every round, so that one that was still going away is started again too.
            if !alive(&mut self.script) {
                let writer =
                    self.spawn_writer("script.toml", "script.log", self.rules.writer.as_deref());
                std::fs::write(self.dir.join("writer.pid"), writer.0.id().to_string()).unwrap();
                self.script = Some(writer);
            }
            if !alive(&mut self.cgroup_writer) {
                self.cgroup_writer = Some(self.spawn_writer("cgroup.toml", "cgroup.log", None));
            }
            let listed = self.writers();
            if names
                .iter()
                .all(|n| listed.iter().any(|w| w["name"] == n.as_str()))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the writers did not register:\n{}\n{}",
                self.log("script.log"),
                self.log("cgroup.log")
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// `shadowcopy writers --json`; empty when the daemon does not answer.
    pub(crate) fn writers(&self) -> Vec<Value> {
        let output = self.cli(&["writers", "--json"], None).output().unwrap();
        serde_json::from_slice::<Value>(&output.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// A log of the cell's directory (writers), or the daemon's.
    pub(crate) fn log(&self, name: &str) -> String {
        let path = if name == "daemon" {
            self.daemon.log.clone()
        } else {
            self.dir.join(name)
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // The daemon logs at debug level; the failure messages want its info and above.
        let text: String = text
            .lines()
            .filter(|line| !line.contains("DEBUG"))
            .map(|line| format!("{line}\n"))
            .collect();
        format!("--- {name} ---\n{}", tail(&text, 8000))
    }

    /// The `shadowcopy` command with `args`, aimed at the daemon, with `rules` for it.
    pub(crate) fn cli(&self, args: &[&str], rules: Option<&str>) -> Command {
        let mut command = Command::new(workspace_binary("shadowcopy"));
        command
            .args(args)
            .arg("--socket")
            .arg(self.daemon.socket())
            .env("RESTIC_PASSWORD", PASSWORD)
            .env_remove("RESTIC_PASSWORD_FILE")
            .env_remove("RUST_BACKTRACE")
            .envs(fault_env(&self.dir, rules))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// `shadowcopy ARGS` without `--socket` (the `backups` commands and `restore --to`).
    pub(crate) fn offline(&self, args: &[&str]) -> Run {
        let output = Command::new(workspace_binary("shadowcopy"))
            .args(args)
            .env("RESTIC_PASSWORD", PASSWORD)
            .env_remove("RESTIC_PASSWORD_FILE")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        Run {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `command` to its end (writing its pid to `requester.pid` first, for `kill-pid`
    /// rules); a command that outlives [`COMMAND_LIMIT`] is killed and fails the test.
    fn run(&self, mut command: Command) -> Run {
        let mut child = command.spawn().expect("shadowcopy starts");
        std::fs::write(self.dir.join("requester.pid"), child.id().to_string()).unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let read = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
        let mut status = None;
        let finished = wait_until(COMMAND_LIMIT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        if !finished {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{:?} did not end within {COMMAND_LIMIT:?}\n{}\n{}",
                command,
                self.log("daemon"),
                self.log("script.log")
            );
        }
        Run {
            status: status.unwrap(),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }

    /// The component selectors of a backup or restore of both writers' components.
    fn components(&self, both: bool) -> Vec<String> {
        let mut selectors = vec![format!("{}:data", self.script_name())];
        if both {
            selectors.push(format!("{}:data", self.cgroup_name()));
        }
        selectors
    }

    /// `shadowcopy backup` of both components, with `rules` for the requester.
    pub(crate) fn backup(&self, rules: Option<&str>) -> Run {
        let repo = self.repo.display().to_string();
        let selectors = self.components(true);
        let mut args = vec!["backup", "--json", "--repo", &repo];
        for selector in &selectors {
            args.extend(["--component", selector.as_str()]);
        }
        self.run(self.cli(&args, rules))
    }

    /// A backup that must succeed with every component saved; returns its id.
    pub(crate) fn backup_ok(&self) -> String {
        let run = self.backup(None);
        let report = run.json();
        let saved = run.status.success()
            && report.as_ref().is_some_and(|r| {
                r["components"]
                    .as_array()
                    .is_some_and(|c| c.iter().all(|c| c["succeeded"] == true))
            });
        assert!(
            saved,
            "the backup did not succeed: {}\n{}\n{}",
            run.describe(),
            self.log("daemon"),
            self.log("script.log")
        );
        report.unwrap()["backup_id"].as_str().unwrap().to_owned()
    }

    /// `shadowcopy restore` of the script writer's component of `backup`, through the writers,
    /// with `rules` for the requester.
    pub(crate) fn restore(&self, backup: &str, rules: Option<&str>) -> Run {
        let repo = self.repo.display().to_string();
        let selector = format!("{}:data", self.script_name());
        let args = [
            "restore",
            "--json",
            "--repo",
            &repo,
            "--backup",
            backup,
            "--component",
            &selector,
        ];
        self.run(self.cli(&args, rules))
    }

    /// The backups in the repository, as `shadowcopy backups list --json` gives them.
    pub(crate) fn backups(&self) -> Vec<Value> {
        let repo = self.repo.display().to_string();
        let run = self.offline(&["backups", "list", "--json", "--repo", &repo]);
        assert!(
            run.status.success(),
            "backups list failed: {}",
            run.describe()
        );
        run.json()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Arms the cell's one-shot fault (`SHADOWCOPY_FAULTS_ARM`).
    pub(crate) fn arm(&self) {
        std::fs::write(self.dir.join("armed"), "").unwrap();
    }

    /// Whether the fault has fired (a rule deleted the arm file).
    pub(crate) fn fired(&self) -> bool {
        !self.dir.join("armed").exists()
    }

    /// Puts everything that died back, as a supervisor would: the daemon, then the writers; then
    /// waits until the daemon holds no session and no fault command of this cell still runs.
    pub(crate) fn recover(&mut self) {
        if !self.daemon.is_running() {
            self.daemon.start_again();
            std::fs::write(self.dir.join("daemon.pid"), self.daemon.pid().to_string()).unwrap();
        }
        self.start_writers();
        let arm = self.dir.join("armed");
        let settled = poll(Duration::from_secs(60), || {
            self.sessions() == Some(0) && fault_commands_running(&arm) == 0
        });
        assert!(
            settled,
            "the daemon still holds a session, or a fault command still runs: {:?} sessions, {} \
             commands\n{}",
            self.sessions(),
            fault_commands_running(&arm),
            self.log("daemon")
        );
        if self.cgroup.0.is_none() {
            self.cgroup.0 = cgroup_of(self.app_b.pid());
        }
    }

    /// The number of sessions the daemon holds, when it answers.
    fn sessions(&self) -> Option<usize> {
        let output = self.cli(&["status", "--json"], None).output().ok()?;
        let status: Value = serde_json::from_slice(&output.stdout).ok()?;
        status["sessions"].as_array().map(Vec::len)
    }

    /// The shadow copies the daemon lists.
    pub(crate) fn listed_copies(&self) -> Vec<Value> {
        let output = self.cli(&["list", "--json"], None).output().unwrap();
        assert!(
            output.status.success(),
            "shadowcopy list failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// What this cell may not leave behind (`invariants::Watch`).
    pub(crate) fn watch(&self) -> Watch {
        let xfs_image_dir = self.xfs.image().parent().unwrap().to_path_buf();
        Watch {
            filesystems: vec![
                self.btrfs.mount_point().to_path_buf(),
                self.xfs.mount_point().to_path_buf(),
                self.host.mount_point().to_path_buf(),
            ],
            cgroups: self.cgroup.0.iter().cloned().collect(),
            processes: vec![self.app_a.pid(), self.app_b.pid()],
            copy_areas: vec![
                (self.btrfs.path(".shadowcopy"), String::new()),
                (xfs_image_dir.clone(), ".shadowcopy-".into()),
            ],
            image_dirs: vec![self.host.mount_point().to_path_buf()],
            allowed_images: vec![self.xfs.image().to_path_buf()],
            mount_roots: vec![
                self.btrfs.mount_point().to_path_buf(),
                self.host.mount_point().to_path_buf(),
                self.daemon.dir.0.clone(),
            ],
            allowed_mounts: vec![
                self.btrfs.mount_point().to_path_buf(),
                self.host.mount_point().to_path_buf(),
                self.xfs.mount_point().to_path_buf(),
            ],
        }
    }

    /// Everything left behind: the watch's findings and the copies the daemon still lists. A
    /// copy whose deletion failed at release is deleted again in the background, so the copies
    /// get a moment to go before they count.
    pub(crate) fn leaks(&self) -> Vec<String> {
        poll(Duration::from_secs(30), || self.listed_copies().is_empty());
        let mut leaks = self.watch().leaks();
        for copy in self.listed_copies() {
            leaks.push(format!("the daemon still lists a shadow copy: {copy}"));
        }
        leaks
    }

    /// The script writer's data as it is now.
    pub(crate) fn data(&self) -> std::collections::BTreeMap<PathBuf, TreeEntry> {
        read_tree(&self.data_dir(), &[])
    }

    /// Changes the script writer's data (one file rewritten, one deleted), so that a restore
    /// has something to put back.
    pub(crate) fn damage_data(&self) {
        std::fs::write(self.data_dir().join("f1"), b"changed after the backup").unwrap();
        std::fs::remove_file(self.data_dir().join("f2")).unwrap();
    }

    /// Fills the host volume that holds the xfs volume's image, after making that image fully
    /// allocated, so that the next loop-image copy finds no space for its clone while the xfs
    /// volume itself keeps working.
    pub(crate) fn fill_snapshot_storage(&self) {
        let status = Command::new("fallocate")
            .arg("-l")
            .arg((300 * MIB).to_string())
            .arg(self.xfs.image())
            .status()
            .unwrap();
        assert!(status.success(), "fallocate of the xfs volume's image");
        let mut size = 1u64 << 30;
        let mut n = 0;
        while size >= 4096 {
            let file = self.host.path(format!("filler-{n}"));
            let filled = Command::new("fallocate")
                .arg("-l")
                .arg(size.to_string())
                .arg(&file)
                .output()
                .unwrap()
                .status
                .success();
            if filled {
                n += 1;
            } else {
                let _ = std::fs::remove_file(&file);
                size /= 2;
            }
        }
    }

    /// Deletes what [`Rig::fill_snapshot_storage`] wrote.
    pub(crate) fn free_snapshot_storage(&self) {
        for entry in std::fs::read_dir(self.host.mount_point())
            .unwrap()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with("filler-") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }

    /// Adds 24 MiB that cannot be compressed to the script writer's data: more than the 16 MiB
    /// repository volume holds.
    pub(crate) fn add_too_much_data(&self) {
        std::fs::write(
            self.data_dir().join("big"),
            pseudo_random(7, 24 * MIB as usize),
        )
        .unwrap();
    }

    /// Deletes what [`Rig::add_too_much_data`] wrote.
    pub(crate) fn remove_too_much_data(&self) {
        std::fs::remove_file(self.data_dir().join("big")).unwrap();
    }
}

/// [`wait_until`] at a slower pace, for conditions that start a command or read all of /proc to
/// answer: the cells run in parallel on two cores, and polling must not eat them.
fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Whether the process in `slot` is still running.
fn alive(slot: &mut Option<Proc>) -> bool {
    slot.as_mut()
        .is_some_and(|proc| matches!(proc.0.try_wait(), Ok(None)))
}

/// The fault variables for a party with `rules`: the rules and the cell's arm file.
fn fault_env(dir: &TempDir, rules: Option<&str>) -> Vec<(&'static str, String)> {
    match rules {
        Some(rules) => vec![
            (shadowcopy_faults::FAULTS_ENV, rules.to_owned()),
            (
                shadowcopy_faults::ARM_ENV,
                dir.join("armed").display().to_string(),
            ),
        ],
        None => Vec::new(),
    }
}

/// How many `shadowcopy-fault` commands with this cell's arm file are still running (a hung one
/// runs until its writer kills it).
fn fault_commands_running(arm: &Path) -> usize {
    let needle = format!("{}={}", shadowcopy_faults::ARM_ENV, arm.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        })
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let is_fault = String::from_utf8_lossy(&cmdline).contains("shadowcopy-fault\0");
            let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
            let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = state
                .rfind(')')
                .is_some_and(|i| state[i + 1..].trim_start().starts_with('Z'));
            is_fault
                && !zombie
                && environ
                    .split(|b| *b == 0)
                    .any(|var| var == needle.as_bytes())
        })
        .count()
}

/// The v2 (or v1 freezer) cgroup directory of `pid`, other than the root.
fn cgroup_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if path == "/" {
            continue;
        }
        let relative = path.trim_start_matches('/');
        let candidates: &[&str] = match controllers {
            "" => &["/sys/fs/cgroup/unified", "/sys/fs/cgroup"],
            "freezer" => &["/sys/fs/cgroup/freezer"],
            _ => continue,
        };
        for root in candidates {
            let dir = Path::new(root).join(relative);
            if dir.join("cgroup.procs").exists() {
                return Some(dir);
            }
        }
    }
    None
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
