//! The state directory's lock: one coordinator per `service.state_dir`, since two would load,
//! rewrite and prune the same providers' catalogs and exposure table behind each other's backs.
//!
//! The lock is an exclusive `flock` on `<state_dir>/lock`, taken without waiting. `flock` and not
//! `fcntl` locks, because `flock` belongs to the open file: a second coordinator in the same
//! process (the CLI embedding one while a test or a tool embeds another) is refused as well, and
//! the kernel drops the lock when the holder dies, so a crash never leaves a stale lock behind.
//! The holder writes its pid into the file only so that the refusal can name it; the file itself
//! is never removed, since removing a lock file races with the next process opening it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::ServiceError;

/// The name of the lock file inside the state directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// The held lock; dropping it releases the state directory.
#[derive(Debug)]
pub(crate) struct StateDirLock {
    file: Flock<File>,
}

impl StateDirLock {
    /// Creates `state_dir` if needed and locks it, or fails at once naming the pid that holds it.
    pub(crate) fn acquire(state_dir: &Path) -> Result<Self, ServiceError> {
        let path = state_dir.join(LOCK_FILE);
        let failed = |what: &'static str, source: std::io::Error| ServiceError::StateDir {
            state_dir: state_dir.to_path_buf(),
            what,
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(|source| ServiceError::StateDir {
            state_dir: state_dir.to_path_buf(),
            what: "create",
            path: state_dir.to_path_buf(),
            source,
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|source| failed("open", source))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(ServiceError::StateDirInUse {
                    state_dir: state_dir.to_path_buf(),
                    lock: path.clone(),
                    pid: holder_pid(&mut file),
                });
            }
            Err((_, errno)) => return Err(failed("lock", errno.into())),
        };
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|source| failed("write the pid into", source))?;
        Ok(StateDirLock { file })
    }
}

impl Drop for StateDirLock {
    fn drop(&mut self) {
        // Emptied before the unlock, so that a coordinator refused in the moment between the next
        // holder's lock and its write does not name this pid, which is gone by then.
        let _ = self.file.set_len(0);
    }
}

/// The pid the holder wrote, if it has written one yet.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// How a refusal names the holder.
pub(crate) fn describe_holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "a process that has not yet written its pid".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn lock_path(state_dir: &Path) -> PathBuf {
        state_dir.join(LOCK_FILE)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sc-state-lock-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn second_lock_in_one_process_is_refused_until_the_first_is_dropped() {
        let dir = temp_dir("twice");
        let state = dir.join("state");
        let first =
            StateDirLock::acquire(&state).expect("the state directory is created and locked");
        assert_eq!(
            std::fs::read_to_string(lock_path(&state)).unwrap(),
            format!("{}\n", std::process::id())
        );
        match StateDirLock::acquire(&state) {
            Err(ServiceError::StateDirInUse {
                state_dir,
                lock,
                pid,
            }) => {
                assert_eq!(state_dir, state);
                assert_eq!(lock, lock_path(&state));
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("a second lock must be refused: {other:?}"),
        }
        drop(first);
        assert_eq!(std::fs::read_to_string(lock_path(&state)).unwrap(), "");
        let again = StateDirLock::acquire(&state).expect("released on drop");
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_dir_that_cannot_be_created_is_named() {
        let dir = temp_dir("file");
        let blocker = dir.join("not-a-dir");
        std::fs::write(&blocker, "").unwrap();
        let error = StateDirLock::acquire(&blocker.join("state")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&blocker.display().to_string()),
            "{message}"
        );
        assert!(message.contains("--state-dir"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
