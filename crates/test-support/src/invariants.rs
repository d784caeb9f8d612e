//! What no fault may leave behind, checked after every cell of the fault matrix
//! (`crates/faults/tests/matrix.rs`, `docs/RELIABILITY.md`): no file system, cgroup or
//! application left frozen, no shadow copy left on disk, no stray mount and no loop device still
//! serving a copy.
//!
//! [`Watch::leaks`] names each thing left behind in a sentence and repairs what would otherwise
//! hang the test's own teardown (it thaws a frozen file system or cgroup and continues a stopped
//! application), so that a failing cell still cleans up. Nothing here waits on a clock: a file
//! system is probed with FIFREEZE, which answers EBUSY at once when the file system is already
//! frozen, rather than with a write that would block.
//!
//! The file-system probe freezes for an instant; it is only ever pointed at file systems the test
//! made itself on loop devices (`LoopVolume`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::loop_volume::{loop_devices, mounts_at_or_under};

/// What one test watches.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// Mount points of file systems the test made (`LoopVolume`), which must not stay frozen.
    pub filesystems: Vec<PathBuf>,
    /// cgroup directories (v2 or the v1 freezer) that must not stay frozen.
    pub cgroups: Vec<PathBuf>,
    /// Application processes that must not stay stopped (SIGSTOP).
    pub processes: Vec<u32>,
    /// Where shadow copies live on disk, as (directory, name prefix): every entry of the
    /// directory whose name starts with the prefix is a copy left behind. A missing directory
    /// holds none.
    pub copy_areas: Vec<(PathBuf, String)>,
    /// Directories whose files must back no loop device, except [`Watch::allowed_images`].
    pub image_dirs: Vec<PathBuf>,
    /// Images that may back loop devices (the test's own volumes).
    pub allowed_images: Vec<PathBuf>,
    /// Directories under which nothing may be mounted, except [`Watch::allowed_mounts`].
    pub mount_roots: Vec<PathBuf>,
    /// The mounts that belong there (the test's own volumes).
    pub allowed_mounts: Vec<PathBuf>,
}

impl Watch {
    /// Everything left behind, one sentence each; empty when nothing is. Frozen file systems and
    /// cgroups are thawed and stopped processes continued after they are reported.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        for mount in &self.filesystems {
            match probe_frozen(mount) {
                Ok(false) => {}
                Ok(true) => {
                    leaks.push(format!(
                        "the file system at {} was left frozen",
                        mount.display()
                    ));
                    thaw_filesystem(mount);
                }
                Err(error) => leaks.push(error),
            }
        }
        for cgroup in &self.cgroups {
            if cgroup_frozen(cgroup) {
                leaks.push(format!("the cgroup {} was left frozen", cgroup.display()));
                thaw_cgroup(cgroup);
            }
        }
        for &pid in &self.processes {
            if process_stopped(pid) {
                leaks.push(format!("the application process {pid} was left stopped"));
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
        }
        for (dir, prefix) in &self.copy_areas {
            for name in names_in(dir).into_iter().filter(|n| n.starts_with(prefix)) {
                leaks.push(format!(
                    "a shadow copy was left on disk: {}",
                    dir.join(name).display()
                ));
            }
        }
        for (device, backing) in loop_devices() {
            let watched = self.image_dirs.iter().any(|d| backing.starts_with(d));
            if watched && !self.allowed_images.contains(&backing) {
                leaks.push(format!(
                    "{} still serves {}",
                    device.display(),
                    backing.display()
                ));
            }
        }
        for root in &self.mount_roots {
            for mount in mounts_at_or_under(root) {
                if !self.allowed_mounts.contains(&mount) {
                    leaks.push(format!("{} is still mounted", mount.display()));
                }
            }
        }
        leaks
    }
}

/// Whether the file system mounted at `mount` is frozen: FIFREEZE (`fsfreeze --freeze`) answers
/// EBUSY at once when it is; when it is not, the probe's own freeze is undone at once.
pub fn probe_frozen(mount: &Path) -> Result<bool, String> {
    let output = Command::new("fsfreeze")
        .arg("--freeze")
        .arg(mount)
        .output()
        .map_err(|e| format!("cannot run fsfreeze (util-linux): {e}"))?;
    if output.status.success() {
        thaw_filesystem(mount);
        return Ok(false);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("Device or resource busy") {
        Ok(true)
    } else {
        Err(format!(
            "cannot probe whether {} is frozen: fsfreeze --freeze: {}",
            mount.display(),
            stderr.trim()
        ))
    }
}

/// Thaws the file system at `mount` (`fsfreeze --unfreeze`); a file system that is not frozen is
/// left as it is.
pub fn thaw_filesystem(mount: &Path) {
    let _ = Command::new("fsfreeze")
        .arg("--unfreeze")
        .arg(mount)
        .output();
}

/// Whether the cgroup at `dir` is frozen or freezing: `cgroup.freeze` is 1 (v2) or
/// `freezer.state` is not THAWED (v1). A cgroup that is gone is not frozen.
pub fn cgroup_frozen(dir: &Path) -> bool {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.freeze")) {
        return text.trim() == "1";
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("freezer.state")) {
        return text.trim() != "THAWED";
    }
    false
}

/// Thaws the cgroup at `dir` (v2 or v1).
pub fn thaw_cgroup(dir: &Path) {
    if dir.join("cgroup.freeze").exists() {
        let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    } else {
        let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    }
}

/// Whether process `pid` is stopped by a signal (state T in `/proc/PID/status`); a process that
/// is gone is not.
pub fn process_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("State:") && line.contains("stopped"))
}

/// The names in `dir`; none when it is missing or unreadable.
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_watched_leaks_nothing() {
        assert!(Watch::default().leaks().is_empty());
    }

    #[test]
    fn a_stopped_process_is_reported_and_continued() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        assert!(crate::wait_until(
            std::time::Duration::from_secs(10),
            || { process_stopped(pid) }
        ));
        let watch = Watch {
            processes: vec![pid],
            ..Watch::default()
        };
        let leaks = watch.leaks();
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert!(leaks[0].contains("left stopped"), "{leaks:?}");
        assert!(crate::wait_until(
            std::time::Duration::from_secs(10),
            || { !process_stopped(pid) }
        ));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn copies_in_a_copy_area_are_reported() {
        let dir = crate::TempDir::new("invariants-copies");
        std::fs::write(dir.join(".shadowcopy-1234.img"), "").unwrap();
        std::fs::write(dir.join("image"), "").unwrap();
        let watch = Watch {
            copy_areas: vec![(dir.0.clone(), ".shadowcopy-".into())],
            ..Watch::default()
        };
        let leaks = watch.leaks();
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert!(leaks[0].ends_with(".shadowcopy-1234.img"), "{leaks:?}");
    }
}
