//! Freeze markers for writers whose freeze is done by programs (the script and hooks writers): a
//! file that says "this process froze its application", so that a writer restarted after a crash
//! while frozen resumes the application instead of leaving it stopped.
//!
//! A freeze outlives the writer process that made it: a script's `kill -STOP`, a hook's own lock,
//! nothing undoes them when the writer dies. So the writer writes a marker before it freezes
//! (its pid and start time, and what it froze) and removes it once everything is thawed. A writer
//! that starts and finds a marker of a process that is gone (its pid is dead, or reused by a
//! process that started at another time) runs its thaw or abort programs first. The marker is
//! best effort: a writer that cannot write it logs why and still freezes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The freeze marker of one writer.
#[derive(Debug, Clone)]
pub(crate) struct FreezeMarker {
    path: PathBuf,
    /// The setting that moves the marker, for messages.
    setting: &'static str,
}

impl FreezeMarker {
    /// The marker of the writer called `writer` in `runtime_dir`; `setting` names the declaration
    /// key that sets the directory.
    pub(crate) fn new(runtime_dir: &Path, writer: &str, setting: &'static str) -> Self {
        FreezeMarker {
            path: runtime_dir.join(crate::cgroup::file_safe(writer)),
            setting,
        }
    }

    /// Where the marker is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records that this process froze its application; `items` (one per line) say what, for the
    /// recovery: for example the hooks that ran `freeze`. Atomic: a crash never leaves half a
    /// marker.
    pub(crate) fn mark(&self, items: &[String]) {
        let written = (|| {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut text = format!("{}\n", process_identity(std::process::id())?);
            for item in items {
                text.push_str(item);
                text.push('\n');
            }
            let temporary = self.path.with_extension("tmp");
            std::fs::write(&temporary, text)?;
            std::fs::rename(&temporary, &self.path)
        })();
        if let Err(error) = written {
            tracing::warn!(
                marker = %self.path.display(),
                "cannot record the freeze ({error}): if this writer dies while frozen, the \
                 application stays stopped until it is thawed by hand; set {} to a directory the \
                 writer can write",
                self.setting
            );
        }
    }

    /// The freeze is over: everything was thawed.
    pub(crate) fn clear(&self) {
        match std::fs::remove_file(&self.path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => tracing::warn!(
                marker = %self.path.display(),
                "cannot remove the freeze marker: {error}; remove it by hand"
            ),
            _ => {}
        }
    }

    /// What a process that is gone recorded it had frozen, when its marker is still there; `None`
    /// when there is no marker or its process still runs (that writer is frozen right now and
    /// will thaw itself).
    pub(crate) fn left_by_dead_process(&self) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let mut lines = text.lines();
        let recorded = lines.next()?.trim();
        let pid = recorded
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.and_then(|pid| process_identity(pid).ok()).as_deref() == Some(recorded) {
            return None;
        }
        Some(lines.map(str::to_owned).collect())
    }
}

/// `"<pid> <start time>"`: a process's identity that a reused pid does not share.
fn process_identity(pid: u32) -> std::io::Result<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces and parentheses: state is the first,
    // start time the 20th.
    let rest = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or_default();
    let start = rest.split_whitespace().nth(19).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "short /proc/PID/stat")
    })?;
    Ok(format!("{pid} {start}"))
}

/// Runs `program` with `args` (as `user` through runuser) with `env`, outside any runtime,
/// killing its process group after `timeout`: the start-up recovery, before the writer runs.
pub(crate) fn run_blocking(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    user: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut process = match user {
        Some(user) => {
            let mut process = std::process::Command::new("runuser");
            process.args(["-u", user, "--"]).arg(program);
            process
        }
        None => std::process::Command::new(program),
    };
    let mut child = process
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", program.display()))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("it exited with {status}")),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) | Err(_) => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait();
                return Err(format!(
                    "it did not finish within {} ms and was killed",
                    timeout.as_millis()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_of_this_process_is_alive_and_a_stale_one_is_not() {
        let dir = std::env::temp_dir().join(format!("sc-marker-{}", std::process::id()));
        let marker = FreezeMarker::new(&dir, "w", "test.runtime_dir");
        assert_eq!(marker.left_by_dead_process(), None, "no marker");
        marker.mark(&["/hooks/a".into(), "/hooks/b".into()]);
        assert_eq!(
            marker.left_by_dead_process(),
            None,
            "this process still runs"
        );
        std::fs::write(marker.path(), "1 0\n/hooks/a\n").unwrap();
        assert_eq!(
            marker.left_by_dead_process(),
            Some(vec!["/hooks/a".to_owned()]),
            "pid 1 did not start at tick 0"
        );
        marker.clear();
        assert!(!marker.path().exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
