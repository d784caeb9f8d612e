//! Fault injection for tests: named fault points in shadowcopy's processes that a test arms
//! through the environment, so that the fault matrix (`docs/RELIABILITY.md`) can crash, hang or
//! fail one party at exactly one phase of a backup or a restore, with the real processes, volumes
//! and repository around it.
//!
//! This is a test hook, not a feature: with `SHADOWCOPY_FAULTS` unset (always, in production) a
//! fault point reads one initialised `OnceLock` and does nothing else.
//!
//! `SHADOWCOPY_FAULTS="POINT=ACTION[,POINT=ACTION...]"` is read once per process. The actions:
//! - `kill`: SIGKILL this process at the point, as a crash would (no destructor, no handler runs);
//! - `hang`: block at the point until the process is killed. An async point ([`point_async`])
//!   awaits forever, so the caller's own timeouts still fire and may drop it; a blocking point
//!   ([`point`]) parks its thread for good;
//! - `fail`: the point returns [`Injected`], which the caller turns into the error the real
//!   failure would give at that place (a provider error, a copy that fails, a command that exits 1);
//! - `kill-pid:FILE`: SIGKILL the process whose pid is in FILE, wait until it is gone, and go on:
//!   another party (the daemon, a writer, the requester) dies at exactly this point.
//!
//! `SHADOWCOPY_FAULTS_ARM=FILE` makes every rule one-shot: a rule fires only if it can delete
//! FILE. Nothing fires before the test creates the file, the first rule that reaches it fires, and
//! no rule fires again, in this process or in any other that shares the file; so a test can make a
//! clean backup first, arm the fault, and check afterwards that the next backup succeeds. Without
//! it, a rule fires at every hit.
//!
//! A malformed variable, or a point that is not in [`POINTS`], ends the process at once with a
//! message naming the variable and the rule: a fault that silently never fires would make a test
//! pass for the wrong reason.
//!
//! Writer scripts reach the same machinery through the `shadowcopy-fault POINT` command of this
//! crate (the `writer:*` points), so that every party is faulted with one syntax.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The variable holding the rules.
pub const FAULTS_ENV: &str = "SHADOWCOPY_FAULTS";

/// The variable naming the arm file that makes rules one-shot.
pub const ARM_ENV: &str = "SHADOWCOPY_FAULTS_ARM";

/// One fault point: its name and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The name rules use (`btrfs:commit`).
    pub name: &'static str,
    /// Where the point is and what happens at it.
    pub place: &'static str,
}

const fn p(name: &'static str, place: &'static str) -> Point {
    Point { name, place }
}

/// Every fault point there is. Rules may name only these.
pub const POINTS: &[Point] = &[
    p(
        "backup:copy",
        "requester (shadowcopy-backup): the first entry the copy into the repository reads, after \
         DoSnapshotSet; `fail` fails the copy, which aborts the backup",
    ),
    p(
        "backup:release",
        "requester: after BackupComplete, before the session is released (BackupShutdown, \
         deletion of the auto-release copies)",
    ),
    p(
        "restore:restoring",
        "requester: after PreRestore, before the first file of a restore with the writers is \
         written; `fail` fails the file copy",
    ),
    p("btrfs:end-prepare", "btrfs provider, EndPrepareSnapshots"),
    p(
        "btrfs:pre-commit",
        "btrfs provider, PreCommitSnapshots (writers frozen)",
    ),
    p(
        "btrfs:commit",
        "btrfs provider, CommitSnapshots, before the snapshot ioctls",
    ),
    p(
        "btrfs:post-commit",
        "btrfs provider, PostCommitSnapshots (writers frozen)",
    ),
    p(
        "btrfs:pre-final-commit",
        "btrfs provider, PreFinalCommitSnapshots (writers thawed)",
    ),
    p(
        "btrfs:post-final-commit",
        "btrfs provider, PostFinalCommitSnapshots (after PostSnapshot)",
    ),
    p(
        "btrfs:delete",
        "btrfs provider, DeleteSnapshots (release of auto-release copies, admin deletion)",
    ),
    p(
        "loop-image:end-prepare",
        "loop-image provider, EndPrepareSnapshots",
    ),
    p(
        "loop-image:pre-commit",
        "loop-image provider, PreCommitSnapshots (writers frozen)",
    ),
    p(
        "loop-image:commit",
        "loop-image provider, CommitSnapshots, while every volume of the set is frozen (FIFREEZE), \
         before the first clone: on the blocking thread that holds the freeze",
    ),
    p(
        "loop-image:post-commit",
        "loop-image provider, PostCommitSnapshots (writers frozen)",
    ),
    p(
        "loop-image:pre-final-commit",
        "loop-image provider, PreFinalCommitSnapshots (writers thawed)",
    ),
    p(
        "loop-image:post-final-commit",
        "loop-image provider, PostFinalCommitSnapshots (after PostSnapshot)",
    ),
    p("loop-image:delete", "loop-image provider, DeleteSnapshots"),
    p("writer:identify", "a writer script's identify command"),
    p(
        "writer:prepare-backup",
        "a writer script's prepare_backup command",
    ),
    p(
        "writer:prepare-snapshot",
        "a writer script's prepare_snapshot command",
    ),
    p("writer:freeze", "a writer script's freeze command"),
    p("writer:thaw", "a writer script's thaw command"),
    p(
        "writer:post-snapshot",
        "a writer script's post_snapshot command",
    ),
    p(
        "writer:backup-complete",
        "a writer script's backup_complete command",
    ),
    p(
        "writer:backup-shutdown",
        "a writer script's backup_shutdown command",
    ),
    p(
        "writer:pre-restore",
        "a writer script's pre_restore command",
    ),
    p(
        "writer:post-restore",
        "a writer script's post_restore command",
    ),
];

/// What a rule does when its point is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL this process.
    Kill,
    /// Block until the process is killed.
    Hang,
    /// Return [`Injected`] to the caller.
    Fail,
    /// SIGKILL the process whose pid is in this file, wait until it is gone, and go on.
    KillPid(PathBuf),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Kill => f.write_str("kill"),
            Action::Hang => f.write_str("hang"),
            Action::Fail => f.write_str("fail"),
            Action::KillPid(file) => write!(f, "kill-pid:{}", file.display()),
        }
    }
}

/// One `POINT=ACTION` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The point's name.
    pub point: String,
    /// What happens there.
    pub action: Action,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.point, self.action)
    }
}

/// The rules of one process and its arm file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The rules, in the order given.
    pub rules: Vec<Rule>,
    /// The arm file ([`ARM_ENV`]), when rules are one-shot.
    pub arm: Option<PathBuf>,
}

/// A `SHADOWCOPY_FAULTS` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{FAULTS_ENV}={text:?}: {message}")]
pub struct ParseError {
    /// The whole value.
    pub text: String,
    /// What is wrong with which rule, and what is allowed.
    pub message: String,
}

/// A `fail` rule fired: the caller returns the error the real failure would give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault injected at {point} ({FAULTS_ENV}, a test hook)")]
pub struct Injected {
    /// The point.
    pub point: String,
}

impl Plan {
    /// Parses the rules of `text` (the value of [`FAULTS_ENV`]); `arm` is the value of
    /// [`ARM_ENV`].
    pub fn parse(text: &str, arm: Option<PathBuf>) -> Result<Plan, ParseError> {
        let fail = |message: String| ParseError {
            text: text.to_owned(),
            message,
        };
        let mut rules = Vec::new();
        for raw in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (point, action) = raw.split_once('=').ok_or_else(|| {
                fail(format!(
                    "rule `{raw}` is not POINT=ACTION (for example `btrfs:commit=fail`)"
                ))
            })?;
            let (point, action) = (point.trim(), action.trim());
            if !POINTS.iter().any(|p| p.name == point) {
                return Err(fail(format!(
                    "rule `{raw}`: there is no fault point `{point}`; the points are {}",
                    POINTS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                )));
            }
            let action = match action {
                "kill" => Action::Kill,
                "hang" => Action::Hang,
                "fail" => Action::Fail,
                other => match other.strip_prefix("kill-pid:") {
                    Some(file) if Path::new(file).is_absolute() => {
                        Action::KillPid(PathBuf::from(file))
                    }
                    Some(file) => {
                        return Err(fail(format!(
                            "rule `{raw}`: the pid file `{file}` must be an absolute path"
                        )));
                    }
                    None => {
                        return Err(fail(format!(
                            "rule `{raw}`: unknown action `{other}`; the actions are kill, hang, \
                             fail and kill-pid:FILE"
                        )));
                    }
                },
            };
            rules.push(Rule {
                point: point.to_owned(),
                action,
            });
        }
        Ok(Plan { rules, arm })
    }

    /// The action to take at `point` now, if any: the first rule for it, when the arm file (if
    /// any) could be claimed.
    pub fn take(&self, point: &str) -> Option<&Action> {
        let rule = self.rules.iter().find(|r| r.point == point)?;
        if let Some(arm) = &self.arm
            && std::fs::remove_file(arm).is_err()
        {
            return None;
        }
        Some(&rule.action)
    }
}

/// This process's plan, read from the environment the first time a point is reached.
fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let text = std::env::var(FAULTS_ENV).ok()?;
        let arm = std::env::var_os(ARM_ENV).map(PathBuf::from);
        match Plan::parse(&text, arm) {
            Ok(plan) => Some(plan),
            Err(error) => {
                eprintln!("shadowcopy-faults: {error}; stopping the process");
                std::process::abort();
            }
        }
    })
    .as_ref()
}

/// Whether any fault rule is set in this process; lets a caller skip building a point's name.
pub fn active() -> bool {
    plan().is_some()
}

/// A blocking fault point: `hang` parks this thread for good. Returns [`Injected`] for `fail`.
pub fn point(name: &str) -> Result<(), Injected> {
    let Some(action) = plan().and_then(|plan| plan.take(name)) else {
        return Ok(());
    };
    if *action == Action::Hang {
        announce(name, action);
        loop {
            std::thread::park();
        }
    }
    act(name, action)
}

/// An async fault point: `hang` awaits forever (the caller's timeouts still run and may drop the
/// future). Returns [`Injected`] for `fail`.
pub async fn point_async(name: &str) -> Result<(), Injected> {
    let Some(action) = plan().and_then(|plan| plan.take(name)) else {
        return Ok(());
    };
    if *action == Action::Hang {
        announce(name, action);
        std::future::pending::<()>().await;
    }
    act(name, action)
}

fn announce(name: &str, action: &Action) {
    eprintln!("shadowcopy-faults: fault point {name}: {action}");
}

/// Every action but `hang`.
fn act(name: &str, action: &Action) -> Result<(), Injected> {
    announce(name, action);
    match action {
        Action::Kill => {
            let _ = kill(Pid::this(), Signal::SIGKILL);
            // SIGKILL to oneself is delivered before kill(2) returns; never reached.
            loop {
                std::thread::park();
            }
        }
        Action::Hang => unreachable!("hang is handled by the point"),
        Action::Fail => Err(Injected {
            point: name.to_owned(),
        }),
        Action::KillPid(file) => {
            kill_pid_in(file, name);
            Ok(())
        }
    }
}

/// How long `kill-pid` waits for its pid file and for the process to be gone.
const KILL_PID_WAIT: Duration = Duration::from_secs(10);

/// SIGKILLs the process whose pid is in `file` and waits until it is gone (exited or a zombie).
/// The test writes the file right after it starts the process, so a missing file is waited for.
fn kill_pid_in(file: &Path, point: &str) {
    let deadline = Instant::now() + KILL_PID_WAIT;
    let pid = loop {
        let read = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        if let Some(pid) = read {
            break pid;
        }
        if Instant::now() > deadline {
            eprintln!(
                "shadowcopy-faults: fault point {point}: {} holds no pid; nothing was killed",
                file.display()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Err(errno) = kill(Pid::from_raw(pid), Signal::SIGKILL) {
        eprintln!("shadowcopy-faults: fault point {point}: kill -9 {pid}: {errno}");
        return;
    }
    while is_alive(pid) {
        if Instant::now() > deadline {
            eprintln!("shadowcopy-faults: fault point {point}: {pid} is still alive after SIGKILL");
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether `pid` is a process that has not yet exited (a zombie has).
fn is_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_with_every_action() {
        let plan = Plan::parse(
            " backup:copy=kill, btrfs:commit=fail,loop-image:commit=hang,writer:freeze=kill-pid:/run/x.pid ",
            None,
        )
        .unwrap();
        let actions: Vec<String> = plan.rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            actions,
            [
                "backup:copy=kill",
                "btrfs:commit=fail",
                "loop-image:commit=hang",
                "writer:freeze=kill-pid:/run/x.pid"
            ]
        );
        assert_eq!(Plan::parse("", None).unwrap().rules, []);
    }

    #[test]
    fn mistakes_name_the_rule_and_what_is_allowed() {
        let error = Plan::parse("btrfs:comit=fail", None).unwrap_err();
        assert!(
            error.message.contains("no fault point `btrfs:comit`")
                && error.message.contains("btrfs:commit"),
            "{error}"
        );
        let error = Plan::parse("btrfs:commit=explode", None).unwrap_err();
        assert!(
            error.message.contains("unknown action `explode`"),
            "{error}"
        );
        let error = Plan::parse("btrfs:commit", None).unwrap_err();
        assert!(error.message.contains("POINT=ACTION"), "{error}");
        let error = Plan::parse("btrfs:commit=kill-pid:daemon.pid", None).unwrap_err();
        assert!(error.message.contains("absolute path"), "{error}");
        assert!(error.to_string().starts_with(FAULTS_ENV), "{error}");
    }

    #[test]
    fn points_are_unique() {
        let mut names: Vec<&str> = POINTS.iter().map(|p| p.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn an_armed_rule_fires_once_and_only_after_arming() {
        let dir = std::env::temp_dir().join(format!("sc-faults-arm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let arm = dir.join("armed");
        let plan = Plan::parse("btrfs:commit=fail", Some(arm.clone())).unwrap();
        assert_eq!(plan.take("btrfs:commit"), None, "not armed yet");
        std::fs::write(&arm, "").unwrap();
        assert_eq!(plan.take("btrfs:delete"), None, "another point");
        assert!(arm.exists(), "another point does not disarm");
        assert_eq!(plan.take("btrfs:commit"), Some(&Action::Fail));
        assert_eq!(plan.take("btrfs:commit"), None, "one-shot");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unarmed_rule_fires_every_time() {
        let plan = Plan::parse("backup:copy=fail", None).unwrap();
        assert_eq!(plan.take("backup:copy"), Some(&Action::Fail));
        assert_eq!(plan.take("backup:copy"), Some(&Action::Fail));
        assert_eq!(plan.take("backup:release"), None);
    }

    #[test]
    fn kill_pid_kills_and_waits() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let file = std::env::temp_dir().join(format!("sc-faults-pid-{}", std::process::id()));
        std::fs::write(&file, child.id().to_string()).unwrap();
        kill_pid_in(&file, "test");
        // A zombie until reaped: no longer alive.
        assert!(!is_alive(child.id() as i32));
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn no_plan_in_this_process_means_no_fault() {
        // The test runner does not set SHADOWCOPY_FAULTS.
        if std::env::var_os(FAULTS_ENV).is_none() {
            assert!(!active());
            assert_eq!(point("backup:copy"), Ok(()));
        }
    }
}
