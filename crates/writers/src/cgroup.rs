//! The cgroup-freeze writer and the [`Freezer`] it is built on: for applications
//! with no writer of their own, it holds every process of the application's cgroup still for the
//! freeze window (cgroup v2 `cgroup.freeze`, or the v1 freezer), after syncing the application's
//! volumes at PrepareForSnapshot so that the window is short (BK-SNAP-3), and always thaws.
//!
//! [`Freezer`] is reused by other writers (the PostgreSQL writer holds a cluster's writes with it).

use std::fs;
use std::io::{self, Write as _};
use std::path::{Component as PathComponent, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shadowcopy_metadata::WriterMetadata;
use shadowcopy_metadata::enums::WriterRestore;
use shadowcopy_metadata::wmd::{Component, FileDescriptor};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure};

use crate::declaration::{Declaration, DeclarationError};

/// Where cgroups are mounted on every current distribution; absolute paths given to
/// [`Freezer::open`] must lie under it or under another cgroup mount.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How often [`Freezer::freeze`] looks whether the kernel has finished freezing. Freezing a few
/// processes takes well under a millisecond; the poll keeps the wait cheap without inotify.
const FREEZE_POLL: Duration = Duration::from_millis(2);

/// How long [`Freezer::remove`] keeps retrying `rmdir` while exiting processes leave the cgroup.
const REMOVE_PATIENCE: Duration = Duration::from_secs(5);

/// What went wrong with a cgroup; every message names the cgroup and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FreezerError {
    /// Neither hierarchy with a freezer is mounted.
    #[error(
        "no cgroup freezer is mounted: /proc/self/mountinfo lists neither a cgroup2 filesystem nor \
         a cgroup v1 hierarchy with the freezer controller; mount cgroup2 on {CGROUP_ROOT} \
         (or the v1 freezer on {CGROUP_ROOT}/freezer)"
    )]
    NotMounted,
    /// The path is not a cgroup that can be frozen.
    #[error("{path} is not a freezable cgroup: {reason}")]
    NotACgroup {
        /// The path as resolved.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// A cgroup name for [`Freezer::create`] that is not one plain path component.
    #[error(
        "invalid cgroup name {name:?}: {reason}; use one path component such as \"myapp-backup\""
    )]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading or writing a cgroup control file failed.
    #[error("cgroup {path}: cannot {action}: {source}; {hint}")]
    Io {
        /// The cgroup directory.
        path: PathBuf,
        /// What was being done, e.g. "write 1 to cgroup.freeze".
        action: String,
        /// The error of the kernel.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A process could not be moved into the cgroup.
    #[error(
        "cannot move process {pid} into cgroup {path}: {source}; {}",
        if source.raw_os_error() == Some(nix::libc::ESRCH) {
            "the process does not exist (any more); check the pid or pid file"
        } else {
            "run as root, and on cgroup v2 move it only between cgroups that share a delegated subtree"
        }
    )]
    Adopt {
        /// The process.
        pid: u32,
        /// The cgroup directory.
        path: PathBuf,
        /// The error of the kernel.
        source: io::Error,
    },
    /// The kernel did not report the cgroup frozen in time; it has been thawed again.
    #[error(
        "cgroup {path} was not frozen within {limit:?} (state {state}); it has been thawed \
         again. A process in uninterruptible sleep (state D, e.g. waiting on a slow disk or NFS) \
         delays the freeze: sync the application's volumes first or raise the freeze limit"
    )]
    Timeout {
        /// The cgroup directory.
        path: PathBuf,
        /// The limit that ran out.
        limit: Duration,
        /// The last state the kernel reported.
        state: String,
    },
}

/// The two freezer interfaces of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerVersion {
    /// cgroup v2: `cgroup.freeze` (0/1), progress in `cgroup.events` (`frozen 0/1`).
    V2,
    /// cgroup v1 freezer controller: `freezer.state` (THAWED, FREEZING, FROZEN).
    V1,
}

/// Where the two hierarchies are mounted, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// The cgroup2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` in hybrid mode).
    pub v2: Option<PathBuf>,
    /// The mount point of the v1 hierarchy that carries the freezer controller.
    pub v1_freezer: Option<PathBuf>,
}

impl CgroupMounts {
    /// Reads the mounts of this process's mount namespace.
    pub fn current() -> Result<CgroupMounts, FreezerError> {
        let text =
            fs::read_to_string("/proc/self/mountinfo").map_err(|source| FreezerError::Io {
                path: PathBuf::from(CGROUP_ROOT),
                action: "read /proc/self/mountinfo".into(),
                source,
                hint: "mount /proc",
            })?;
        Ok(CgroupMounts::parse(&text))
    }

    /// Parses the text of a `mountinfo` file (proc(5)): the mount point is field 5, the
    /// filesystem type and super options follow the ` - ` separator. The first mount of each kind
    /// wins, as in the kernel's own lookups.
    pub fn parse(mountinfo: &str) -> CgroupMounts {
        let mut mounts = CgroupMounts::default();
        for line in mountinfo.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = before.split(' ').nth(4) else {
                continue;
            };
            let mut after = after.split(' ');
            let fstype = after.next().unwrap_or("");
            let _source = after.next();
            let options = after.next().unwrap_or("");
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            match fstype {
                "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(mount_point),
                "cgroup"
                    if mounts.v1_freezer.is_none()
                        && options.split(',').any(|option| option == "freezer") =>
                {
                    mounts.v1_freezer = Some(mount_point)
                }
                _ => {}
            }
        }
        mounts
    }

    /// The mount points, v2 first: cgroup v2 is the interface the kernel develops, and in hybrid
    /// mode it freezes just as well.
    fn roots(&self) -> impl Iterator<Item = (&Path, FreezerVersion)> {
        self.v2
            .as_deref()
            .map(|root| (root, FreezerVersion::V2))
            .into_iter()
            .chain(
                self.v1_freezer
                    .as_deref()
                    .map(|root| (root, FreezerVersion::V1)),
            )
    }
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo fields.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that `name` is one plain path component, so that [`Freezer::create`] cannot be led
/// outside the directory it creates in.
fn check_name(name: &str) -> Result<(), FreezerError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains('/') {
        "it contains '/'"
    } else if name == "." || name == ".." {
        "it is . or .."
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else if name.starts_with("cgroup.") {
        "names starting with \"cgroup.\" are the kernel's control files"
    } else {
        return Ok(());
    };
    Err(FreezerError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Parses the `cgroup.events` file of cgroup v2: `frozen 1` once every task is frozen.
fn events_say_frozen(events: &str) -> bool {
    events
        .lines()
        .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["frozen", "1"])
}

/// Parses a `cgroup.procs` file: one pid a line.
fn parse_pids(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// A cgroup whose processes can be frozen: cgroup v2 (`cgroup.freeze`, waiting for `frozen 1` in
/// `cgroup.events`) or the v1 freezer (`freezer.state` FROZEN/THAWED).
///
/// Every method does blocking file I/O on cgroupfs (and [`freeze`](Freezer::freeze) waits); call
/// them from `tokio::task::spawn_blocking` in async code.
#[derive(Debug)]
pub struct Freezer {
    /// The cgroup's directory.
    path: PathBuf,
    /// Which interface it has.
    version: FreezerVersion,
    /// Whether [`Freezer::create`] made it, so [`Freezer::remove`] may delete it.
    created: bool,
}

impl Freezer {
    /// An existing cgroup, given by its path under the cgroup mount (`system.slice/nginx.service`)
    /// or absolute under /sys/fs/cgroup (or another cgroup mount). A relative path is looked up
    /// in the cgroup2 hierarchy first, then in the v1 freezer hierarchy.
    pub fn open(path: &Path) -> Result<Freezer, FreezerError> {
        Freezer::at(Freezer::locate(path)?, false)
    }

    /// The directory of the cgroup `path` names (as for [`open`](Freezer::open)), which may be a
    /// hierarchy's root.
    fn locate(path: &Path) -> Result<PathBuf, FreezerError> {
        if path
            .components()
            .any(|component| matches!(component, PathComponent::ParentDir))
        {
            return Err(FreezerError::NotACgroup {
                path: path.to_owned(),
                reason: "the path contains \"..\"; give the cgroup's path without it".into(),
            });
        }
        let mounts = CgroupMounts::current()?;
        if path.is_absolute() {
            let under_mount = mounts.roots().any(|(root, _)| path.starts_with(root));
            if !under_mount {
                return Err(FreezerError::NotACgroup {
                    path: path.to_owned(),
                    reason: format!(
                        "it lies under no cgroup mount ({mounts:?}); give a path under \
                         {CGROUP_ROOT} or relative to the cgroup mount"
                    ),
                });
            }
            return Ok(path.to_owned());
        }
        let relative: PathBuf = path
            .components()
            .filter(|component| !matches!(component, PathComponent::CurDir))
            .collect();
        let mut tried = Vec::new();
        for (root, _) in mounts.roots() {
            let candidate = root.join(&relative);
            if candidate.is_dir() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
        if tried.is_empty() {
            return Err(FreezerError::NotMounted);
        }
        Err(FreezerError::NotACgroup {
            path: path.to_owned(),
            reason: format!(
                "no such cgroup (looked at {tried:?}); check the name with \
                 `systemd-cgls` or `cat /proc/<pid>/cgroup` of one of its processes"
            ),
        })
    }

    /// Creates a cgroup of our own directly under the root of the cgroup2 hierarchy (or of the v1
    /// freezer hierarchy when there is no cgroup2), so processes can be moved into it. A cgroup of
    /// that name left behind by an earlier run (a crash) is reused rather than refused, so that a
    /// restart is never blocked by its own leftovers.
    pub fn create(name: &str) -> Result<Freezer, FreezerError> {
        check_name(name)?;
        let mounts = CgroupMounts::current()?;
        let (root, _) = mounts.roots().next().ok_or(FreezerError::NotMounted)?;
        Freezer::make(root.join(name))
    }

    /// Like [`create`](Freezer::create), under an existing cgroup `parent` (absolute, or relative
    /// to the cgroup mount as in [`open`](Freezer::open)), e.g. a subtree delegated to us, or the
    /// root of a chosen hierarchy (`/sys/fs/cgroup/freezer` for the v1 freezer on a hybrid host).
    pub fn create_under(parent: &Path, name: &str) -> Result<Freezer, FreezerError> {
        check_name(name)?;
        let parent = Freezer::locate(parent)?;
        if !parent.join("cgroup.procs").is_file() {
            return Err(FreezerError::NotACgroup {
                path: parent,
                reason: "no such cgroup directory (cgroup.procs is missing); check the parent"
                    .into(),
            });
        }
        Freezer::make(parent.join(name))
    }

    fn make(path: PathBuf) -> Result<Freezer, FreezerError> {
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(FreezerError::Io {
                    path,
                    action: "create the cgroup directory".into(),
                    source,
                    hint: "run as root, or create it under a cgroup delegated to this user",
                });
            }
        }
        Freezer::at(path, true)
    }

    /// A cgroup directory, with its interface found from its control files.
    fn at(path: PathBuf, created: bool) -> Result<Freezer, FreezerError> {
        let version = if path.join("cgroup.freeze").is_file() {
            FreezerVersion::V2
        } else if path.join("freezer.state").is_file() {
            FreezerVersion::V1
        } else if path.join("cgroup.procs").is_file() {
            return Err(FreezerError::NotACgroup {
                path,
                reason: "it has neither cgroup.freeze nor freezer.state: the root cgroup cannot \
                         be frozen, and a v1 hierarchy needs the freezer controller; give a \
                         child cgroup"
                    .into(),
            });
        } else {
            return Err(FreezerError::NotACgroup {
                path,
                reason: "no such cgroup directory (cgroup.procs is missing); check the path".into(),
            });
        };
        Ok(Freezer {
            path,
            version,
            created,
        })
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which freezer interface the cgroup has.
    pub fn version(&self) -> FreezerVersion {
        self.version
    }

    fn read(&self, file: &str) -> Result<String, FreezerError> {
        fs::read_to_string(self.path.join(file)).map_err(|source| FreezerError::Io {
            path: self.path.clone(),
            action: format!("read {file}"),
            source,
            hint: "check that the cgroup still exists",
        })
    }

    fn write(&self, file: &str, value: &str) -> Result<(), FreezerError> {
        // One write(2) per value: cgroupfs takes one value per write.
        fs::OpenOptions::new()
            .write(true)
            .open(self.path.join(file))
            .and_then(|mut handle| handle.write_all(value.as_bytes()))
            .map_err(|source| FreezerError::Io {
                path: self.path.clone(),
                action: format!("write {value:?} to {file}"),
                source,
                hint: "run as root, and check that the cgroup still exists",
            })
    }

    /// Moves processes (and, for a pid, every thread: the pid goes to `cgroup.procs`, which moves
    /// the whole thread group) into the cgroup; new children inherit it.
    pub fn adopt(&self, pids: &[u32]) -> Result<(), FreezerError> {
        for &pid in pids {
            write_pid(&self.path, pid)?;
        }
        Ok(())
    }

    /// The processes in the cgroup itself (not in its children).
    pub fn pids(&self) -> Result<Vec<u32>, FreezerError> {
        Ok(parse_pids(&self.read("cgroup.procs")?))
    }

    /// Freezes and waits until the kernel reports the whole cgroup frozen, up to `limit`; on
    /// timeout thaws again and fails. Blocks the thread while it waits.
    pub fn freeze(&self, limit: Duration) -> Result<FrozenGuard<'_>, FreezerError> {
        let started = Instant::now();
        match self.version {
            FreezerVersion::V2 => self.write("cgroup.freeze", "1")?,
            FreezerVersion::V1 => self.write("freezer.state", "FROZEN")?,
        }
        // From here on the guard owns the thaw, so an error below still thaws (thaw is sacred).
        let guard = FrozenGuard {
            freezer: self,
            armed: true,
        };
        loop {
            let (frozen, state) = self.state()?;
            if frozen {
                tracing::debug!(cgroup = %self.path.display(), elapsed = ?started.elapsed(), "cgroup frozen");
                return Ok(guard);
            }
            if started.elapsed() >= limit {
                drop(guard);
                return Err(FreezerError::Timeout {
                    path: self.path.clone(),
                    limit,
                    state,
                });
            }
            if self.version == FreezerVersion::V1 {
                // The v1 freezer gives up on tasks it could not freeze at once and stays in
                // FREEZING; writing FROZEN again retries them (cgroup-v1/freezer-subsystem.rst).
                self.write("freezer.state", "FROZEN")?;
            }
            std::thread::sleep(FREEZE_POLL);
        }
    }

    /// Whether the kernel reports the cgroup frozen, and the state as the kernel wrote it.
    fn state(&self) -> Result<(bool, String), FreezerError> {
        match self.version {
            FreezerVersion::V2 => {
                let events = self.read("cgroup.events")?;
                let frozen = events_say_frozen(&events);
                Ok((
                    frozen,
                    events.split_whitespace().collect::<Vec<_>>().join(" "),
                ))
            }
            FreezerVersion::V1 => {
                let state = self.read("freezer.state")?.trim().to_owned();
                Ok((state == "FROZEN", state))
            }
        }
    }

    /// Thaws the cgroup. Thawing a cgroup that is not frozen does nothing, so this is safe to
    /// call on every path.
    pub fn thaw(&self) -> Result<(), FreezerError> {
        match self.version {
            FreezerVersion::V2 => self.write("cgroup.freeze", "0"),
            FreezerVersion::V1 => self.write("freezer.state", "THAWED"),
        }
    }

    /// Whether the cgroup is frozen (or being frozen: then its processes are already held).
    pub fn is_frozen(&self) -> Result<bool, FreezerError> {
        match self.version {
            FreezerVersion::V2 => Ok(self.read("cgroup.freeze")?.trim() == "1"),
            FreezerVersion::V1 => Ok(self.read("freezer.state")?.trim() != "THAWED"),
        }
    }

    /// Removes a cgroup made by [`create`](Freezer::create) after thawing it and moving its
    /// processes back to the parent. A cgroup opened with [`open`](Freezer::open) belongs to
    /// someone else and is refused.
    pub fn remove(self) -> Result<(), FreezerError> {
        if !self.created {
            return Err(FreezerError::NotACgroup {
                path: self.path.clone(),
                reason: "it was opened, not created, by this freezer; only cgroups made with \
                         Freezer::create are removed"
                    .into(),
            });
        }
        self.thaw()?;
        let parent = self.path.parent().unwrap_or(Path::new("/")).to_owned();
        let started = Instant::now();
        loop {
            for pid in self.pids()? {
                match write_pid(&parent, pid) {
                    Ok(()) => {}
                    // It exited between the listing and the move.
                    Err(FreezerError::Adopt { source, .. })
                        if source.raw_os_error() == Some(nix::libc::ESRCH) => {}
                    Err(error) => return Err(error),
                }
            }
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
                // EBUSY while exiting tasks are still counted in the cgroup.
                Err(source) if started.elapsed() >= REMOVE_PATIENCE => {
                    return Err(FreezerError::Io {
                        path: self.path.clone(),
                        action: "remove the cgroup directory".into(),
                        source,
                        hint: "a process keeps entering it or a child cgroup exists; move the \
                               processes out and remove the children, then rmdir it",
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

/// Writes `pid` to `cgroup.procs` of the cgroup at `path`.
fn write_pid(path: &Path, pid: u32) -> Result<(), FreezerError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path.join("cgroup.procs"))
        .and_then(|mut handle| handle.write_all(pid.to_string().as_bytes()))
        .map_err(|source| FreezerError::Adopt {
            pid,
            path: path.to_owned(),
            source,
        })
}

/// Thaws on drop, so that no path leaves the cgroup frozen (thaw is sacred): an error, an early
/// return or a panic between [`Freezer::freeze`] and the end of the window still thaws.
#[derive(Debug)]
#[must_use = "dropping the guard thaws the cgroup at once"]
pub struct FrozenGuard<'a> {
    /// The frozen cgroup.
    freezer: &'a Freezer,
    /// False once thawed or handed over.
    armed: bool,
}

impl FrozenGuard<'_> {
    /// Thaws now, reporting a failure (the normal end of the window).
    pub fn thaw(mut self) -> Result<(), FreezerError> {
        self.armed = false;
        self.freezer.thaw()
    }

    /// Leaves the cgroup frozen and hands the duty to thaw to the caller, for a freeze that must
    /// outlive this borrow (a writer frozen from its Freeze handler until Thaw or Abort). The
    /// caller must then guarantee the thaw itself on every path, including a crash (a marker
    /// file read at the next start, as [`CgroupWriter`] does).
    pub fn keep_frozen(mut self) {
        self.armed = false;
    }
}

impl Drop for FrozenGuard<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(error) = self.freezer.thaw()
        {
            tracing::error!(%error, "cannot thaw cgroup {}", self.freezer.path.display());
        }
    }
}

/// Where the writer records "I froze this cgroup" while it is frozen, one file per writer name,
/// so that a writer process that dies while frozen thaws its cgroup at its next start. /run is
/// the right home: it is cleared at boot, exactly when frozen cgroups stop existing too.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/shadowcopy/cgroup-frozen";

/// How long the kernel may take to freeze the cgroup, unless `freeze_limit_ms` says otherwise.
/// Freezing takes microseconds unless a process sits in uninterruptible I/O; waiting longer than
/// this eats into the freeze window of every other writer of the set (BK-SNAP-5).
pub const DEFAULT_FREEZE_LIMIT: Duration = Duration::from_secs(5);

/// The `[cgroup]` table of a `kind = "cgroup"` declaration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CgroupSettings {
    /// An existing cgroup to freeze: relative to the cgroup mount or absolute.
    cgroup: Option<PathBuf>,
    /// Processes to move into a cgroup of the writer's own.
    #[serde(default)]
    pids: Vec<u32>,
    /// A file holding the pid of the application's main process, read again before every set
    /// (the application may have restarted); moved into a cgroup of the writer's own.
    pid_file: Option<PathBuf>,
    /// The name of the writer's own cgroup (for `pids`/`pid_file`); default
    /// `shadowcopy-<writer name>`.
    cgroup_name: Option<String>,
    /// Mount points (or any path on them) to syncfs at PrepareForSnapshot; the volumes of the
    /// components' files are synced too.
    #[serde(default)]
    volumes: Vec<PathBuf>,
    /// How long the kernel may take to report the cgroup frozen, in milliseconds.
    freeze_limit_ms: Option<u64>,
    /// Where the frozen marker lives; default [`DEFAULT_RUNTIME_DIR`].
    runtime_dir: Option<PathBuf>,
    /// The application's data, as file-group components.
    #[serde(default)]
    components: Vec<ComponentSettings>,
}

/// One `[[cgroup.components]]` entry.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentSettings {
    /// The component name.
    name: String,
    /// The logical path (LP-1: `\` separates levels); empty by default.
    #[serde(default)]
    logical_path: String,
    /// A caption for backup applications.
    caption: Option<String>,
    /// The file sets.
    files: Vec<FileSettings>,
}

/// One file set of a component (WMD file descriptor: path, filespec, recursive).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    /// The absolute directory (WMD-11).
    path: PathBuf,
    /// The file name pattern; `*` by default.
    #[serde(default = "all_files")]
    filespec: String,
    /// Whether subdirectories count too.
    #[serde(default)]
    recursive: bool,
}

fn all_files() -> String {
    "*".into()
}

/// Which cgroup the writer freezes.
#[derive(Debug, Clone)]
enum Target {
    /// An existing cgroup (`cgroup = ...`).
    Existing(PathBuf),
    /// A cgroup of our own, into which these processes are moved before every set.
    Own {
        /// The cgroup's name under the root.
        name: String,
        /// Fixed pids.
        pids: Vec<u32>,
        /// The pid file, read again each time.
        pid_file: Option<PathBuf>,
    },
}

/// What the writer's handlers share; dropped last, and thaws if it is dropped frozen.
#[derive(Debug)]
struct Shared {
    /// The writer name, for messages.
    name: String,
    /// Which cgroup.
    target: Target,
    /// Paths whose filesystems are synced at PrepareForSnapshot.
    sync_paths: Vec<PathBuf>,
    /// The freeze limit.
    freeze_limit: Duration,
    /// The marker file of this writer.
    marker: PathBuf,
    /// The resolved cgroup and whether we froze it; a std mutex because every use is in
    /// `spawn_blocking`, and the freeze holds it until the kernel answered, so that an Abort
    /// arriving meanwhile thaws after the freeze, never before it.
    state: std::sync::Mutex<State>,
}

/// The mutable part of [`Shared`].
#[derive(Debug, Default)]
struct State {
    /// The cgroup, once resolved at the first PrepareForSnapshot (or Freeze).
    freezer: Option<Freezer>,
    /// True from a successful freeze until the thaw.
    frozen: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere must never keep us from thawing: ignore poisoning.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens or creates the cgroup and, for our own cgroup, moves the processes into it.
    fn resolve(&self, state: &mut State) -> Result<(), String> {
        match &self.target {
            Target::Existing(path) => {
                if state.freezer.is_none() {
                    state.freezer = Some(Freezer::open(path).map_err(|e| e.to_string())?);
                }
            }
            Target::Own {
                name,
                pids,
                pid_file,
            } => {
                if state.freezer.is_none() {
                    state.freezer = Some(Freezer::create(name).map_err(|e| e.to_string())?);
                }
                let mut wanted = pids.clone();
                if let Some(pid_file) = pid_file {
                    let text = fs::read_to_string(pid_file).map_err(|error| {
                        format!(
                            "cannot read the pid file {}: {error}; is the application running?",
                            pid_file.display()
                        )
                    })?;
                    let pid = text.trim().parse::<u32>().map_err(|_| {
                        format!(
                            "the pid file {} holds {:?}, not a process id",
                            pid_file.display(),
                            text.trim()
                        )
                    })?;
                    wanted.push(pid);
                }
                let freezer = state.freezer.as_ref().expect("resolved above");
                // Children forked since the last set are already inside: they inherit it.
                freezer.adopt(&wanted).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Freezes the cgroup: the marker first, so that no instant exists in which the cgroup is
    /// frozen and a crash would leave nothing to thaw it by.
    fn freeze(&self) -> Result<(), String> {
        let mut state = self.lock();
        self.resolve(&mut state)?;
        let freezer = state.freezer.as_ref().expect("resolved");
        write_marker(&self.marker, freezer.path())?;
        // Held until Thaw or Abort: `thaw_always`, `Shared::drop` and the marker take over the
        // guard's duty to thaw.
        let frozen = freezer
            .freeze(self.freeze_limit)
            .map(FrozenGuard::keep_frozen);
        match frozen {
            Ok(()) => {
                tracing::info!(writer = %self.name, cgroup = %freezer.path().display(), "cgroup frozen");
                state.frozen = true;
                Ok(())
            }
            Err(error) => {
                // The freezer thawed already; a failed freeze leaves nothing to recover.
                let _ = fs::remove_file(&self.marker);
                Err(error.to_string())
            }
        }
    }

    /// Thaws if there is anything to thaw and removes the marker; safe to call any number of
    /// times (BK-ABORT-3). The marker stays when the thaw fails, so a restart tries again.
    fn thaw_always(&self) -> Result<(), String> {
        let mut state = self.lock();
        if let Some(freezer) = &state.freezer {
            // Thaw even when we think we are not frozen: thawing a thawed cgroup does nothing.
            freezer.thaw().map_err(|e| e.to_string())?;
            if state.frozen {
                tracing::info!(writer = %self.name, cgroup = %freezer.path().display(), "cgroup thawed");
            }
        }
        state.frozen = false;
        match fs::remove_file(&self.marker) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(format!(
                "thawed, but cannot remove the marker {}: {error}; remove it by hand",
                self.marker.display()
            )),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last line of defence for "thaw is sacred" inside the process: a writer dropped
        // while frozen (hosted writer stopped, runtime torn down) still thaws.
        // Read the flag first: the lock must be released before thaw_always takes it again.
        let frozen = self.lock().frozen;
        if frozen && let Err(error) = self.thaw_always() {
            tracing::error!(writer = %self.name, %error, "cannot thaw the cgroup at shutdown");
        }
    }
}

/// Writes the marker atomically (write then rename): it names the frozen cgroup's directory.
fn write_marker(marker: &Path, cgroup: &Path) -> Result<(), String> {
    let fail = |error: io::Error| {
        format!(
            "cannot record the freeze in {}: {error}; without the marker a crash could leave \
             the cgroup frozen, so the writer refuses to freeze: make the runtime directory \
             writable (runtime_dir)",
            marker.display()
        )
    };
    let dir = marker.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(fail)?;
    let temporary = marker.with_extension("tmp");
    fs::write(&temporary, format!("{}\n", cgroup.display())).map_err(fail)?;
    fs::rename(&temporary, marker).map_err(fail)
}

/// Thaws the cgroup a marker names, left by a writer process that died while frozen, and removes
/// the marker. Returns the cgroup it thawed, if any.
pub fn recover_marker(marker: &Path) -> Result<Option<PathBuf>, FreezerError> {
    let text = match fs::read_to_string(marker) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FreezerError::Io {
                path: marker.to_owned(),
                action: "read the frozen marker".into(),
                source,
                hint: "check the runtime directory's permissions",
            });
        }
    };
    let cgroup = PathBuf::from(text.trim());
    match Freezer::open(&cgroup) {
        Ok(freezer) => freezer.thaw()?,
        // The cgroup is gone, and with it anything frozen.
        Err(FreezerError::NotACgroup { .. }) => {}
        Err(error) => return Err(error),
    }
    let _ = fs::remove_file(marker);
    Ok(Some(cgroup))
}

/// The cgroup-freeze writer (`kind = "cgroup"`): for an application with no writer of its own,
/// it syncs the application's volumes at PrepareForSnapshot, freezes its cgroup at Freeze, and
/// thaws at Thaw and at every Abort (including the SDK's own: freeze timer, lost coordinator,
/// shutdown); a freeze left by a crash is thawed at the next start from the marker file.
#[derive(Debug)]
pub struct CgroupWriter {
    /// The WMD, built once (ROLE-6: the same every time).
    wmd: WriterMetadata,
    /// What the handlers share.
    shared: Arc<Shared>,
}

impl CgroupWriter {
    /// The writer of a `kind = "cgroup"` declaration. Thaws a cgroup left frozen by an earlier
    /// run of the same writer that died while frozen (its marker file).
    pub fn from_declaration(d: &Declaration) -> Result<Self, DeclarationError> {
        let settings: CgroupSettings = d.settings()?;
        let own = !settings.pids.is_empty() || settings.pid_file.is_some();
        let target = match (&settings.cgroup, own) {
            (Some(cgroup), false) => {
                if settings.cgroup_name.is_some() {
                    return Err(DeclarationError::invalid(
                        &d.file,
                        "cgroup.cgroup_name",
                        "cgroup_name names the writer's own cgroup for pids/pid_file; with \
                         `cgroup` set it means nothing: remove it",
                    ));
                }
                Target::Existing(cgroup.clone())
            }
            (None, true) => {
                let name = settings
                    .cgroup_name
                    .clone()
                    .unwrap_or_else(|| format!("shadowcopy-{}", file_safe(&d.name)));
                check_name(&name).map_err(|error| {
                    DeclarationError::invalid(&d.file, "cgroup.cgroup_name", error.to_string())
                })?;
                Target::Own {
                    name,
                    pids: settings.pids.clone(),
                    pid_file: settings.pid_file.clone(),
                }
            }
            (Some(_), true) => {
                return Err(DeclarationError::invalid(
                    &d.file,
                    "cgroup.cgroup",
                    "give either `cgroup` (an existing cgroup) or `pids`/`pid_file` (processes \
                     moved into a cgroup of the writer's own), not both",
                ));
            }
            (None, false) => {
                return Err(DeclarationError::Missing {
                    file: d.file.clone(),
                    key: "cgroup.cgroup (or cgroup.pids / cgroup.pid_file)".into(),
                });
            }
        };
        let mut sync_paths = Vec::new();
        for (index, volume) in settings.volumes.iter().enumerate() {
            if !volume.is_absolute() {
                return Err(DeclarationError::invalid(
                    &d.file,
                    format!("cgroup.volumes[{index}]"),
                    format!("{} is not absolute; give the mount point", volume.display()),
                ));
            }
            sync_paths.push(volume.clone());
        }
        let mut components = Vec::new();
        for (index, component) in settings.components.iter().enumerate() {
            let mut files = Vec::new();
            for file in &component.files {
                if !file.path.is_absolute() {
                    return Err(DeclarationError::invalid(
                        &d.file,
                        format!("cgroup.components[{index}].files.path"),
                        format!(
                            "{} is not absolute (WMD-11); give the full directory",
                            file.path.display()
                        ),
                    ));
                }
                if !sync_paths.contains(&file.path) {
                    sync_paths.push(file.path.clone());
                }
                files.push(FileDescriptor::new(
                    file.path.to_string_lossy(),
                    file.filespec.clone(),
                    file.recursive,
                ));
            }
            let mut wmd_component = Component::file_group(
                component.logical_path.clone(),
                component.name.clone(),
                true,
                files,
            );
            wmd_component.caption = component.caption.clone();
            wmd_component.selectable_for_restore = true;
            components.push(wmd_component);
        }
        let mut wmd = WriterMetadata::simple(d.name.clone(), d.class_id, components);
        // The writer has nothing to do at restore: the files go back while the application is
        // stopped, by whoever restores them (§10).
        wmd.identity.instance_name = d.instance_name.clone();
        wmd.restore_method.writer_restore = WriterRestore::Never;
        wmd.validate().map_err(|error| {
            DeclarationError::invalid(&d.file, "cgroup.components", error.to_string())
        })?;

        let runtime_dir = settings
            .runtime_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR));
        let marker = runtime_dir.join(file_safe(&d.name));
        // A writer process that died while frozen left its marker: thaw now, before anything
        // else, because the application has been standing still since (thaw is sacred).
        match recover_marker(&marker) {
            Ok(Some(cgroup)) => tracing::warn!(
                writer = %d.name,
                cgroup = %cgroup.display(),
                "thawed a cgroup left frozen by an earlier run of this writer"
            ),
            Ok(None) => {}
            Err(error) => tracing::error!(
                writer = %d.name,
                %error,
                "cannot thaw the cgroup left frozen by an earlier run; thaw it by hand"
            ),
        }
        Ok(CgroupWriter {
            wmd,
            shared: Arc::new(Shared {
                name: d.name.clone(),
                target,
                sync_paths,
                freeze_limit: settings
                    .freeze_limit_ms
                    .map_or(DEFAULT_FREEZE_LIMIT, Duration::from_millis),
                marker,
                state: std::sync::Mutex::default(),
            }),
        })
    }

    /// The marker file that records a freeze in progress.
    pub fn marker(&self) -> &Path {
        &self.shared.marker
    }

    /// Runs `work` on the blocking pool with the shared state.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> Result<T, String> + Send + 'static,
    ) -> Result<T, WriterFailure> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|error| {
                WriterFailure::non_retryable(format!("cgroup writer task failed: {error}"))
            })?
            .map_err(WriterFailure::retryable)
    }
}

/// A writer name as one file name: anything but letters, digits, `.`, `_` and `-` becomes `_`.
pub(crate) fn file_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.starts_with('.') {
        format!("_{safe}")
    } else {
        safe
    }
}

/// syncfs(2) on the filesystem holding `path`: pushes the application's dirty data to disk before
/// the freeze, so that the provider's own flush inside the window has little left to do.
fn sync_filesystem(path: &Path) -> Result<(), String> {
    let file = fs::File::open(path).map_err(|error| {
        format!(
            "cannot open {} to sync its filesystem: {error}; check the `volumes` and component paths",
            path.display()
        )
    })?;
    nix::unistd::syncfs(&file)
        .map_err(|errno| format!("syncfs on {} failed: {errno}", path.display()))
}

impl Writer for CgroupWriter {
    fn metadata(&self) -> WriterMetadata {
        self.wmd.clone()
    }

    async fn on_prepare_snapshot(&self, _ctx: &EventContext) -> HandlerResult {
        // The heavy part belongs here, not in Freeze (BK-SNAP-3): find the cgroup, move the
        // processes in, and write the dirty data out while the application still runs.
        self.blocking(|shared| {
            shared.resolve(&mut shared.lock())?;
            for path in &shared.sync_paths {
                sync_filesystem(path)?;
            }
            Ok(())
        })
        .await
    }

    async fn on_freeze(&self, _ctx: &EventContext) -> HandlerResult {
        self.blocking(|shared| shared.freeze()).await
    }

    async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
        self.blocking(|shared| shared.thaw_always()).await
    }

    async fn on_abort(&self, ctx: &EventContext) -> HandlerResult {
        let cause = ctx.abort_cause();
        self.blocking(move |shared| {
            let result = shared.thaw_always();
            tracing::debug!(writer = %shared.name, ?cause, "aborted; cgroup thawed");
            result
        })
        .await
    }
}

/// Thaws the database writer cgroup `name` (see [`writer_cgroup_name`]) if a run of the writer
/// that died while the server was frozen left it frozen; a missing cgroup is fine. Database
/// writers call it when they start, so that a crashed writer never leaves its server frozen until
/// the next backup (thaw is sacred). Only the writer freezes a cgroup of this name, so thawing it
/// at start cannot undo someone else's freeze.
pub(crate) fn thaw_leftover(name: &str) {
    let Ok(freezer) = Freezer::open(Path::new(name)) else {
        return;
    };
    if freezer.is_frozen().unwrap_or(false) {
        tracing::warn!(cgroup = %freezer.path().display(), "thawing a cgroup left frozen by an earlier run");
        if let Err(error) = freezer.thaw() {
            tracing::error!(%error, "cannot thaw a cgroup left frozen by an earlier run");
        }
    }
}

/// The cgroup a database writer makes for its server: `shadowcopy-<kind>-<writer>` with every
/// character of the writer name but letters, digits, `-` and `_` replaced by `_`, so the name
/// is one plain path component.
pub(crate) fn writer_cgroup_name(kind: &str, writer: &str) -> String {
    let safe: String = writer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("shadowcopy-{kind}-{safe}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/freezer rw,nosuid shared:16 - cgroup cgroup rw,freezer
";

    #[test]
    fn parses_hybrid_mountinfo() {
        let mounts = CgroupMounts::parse(HYBRID);
        assert_eq!(mounts.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            mounts.v1_freezer,
            Some(PathBuf::from("/sys/fs/cgroup/freezer"))
        );
        let roots: Vec<_> = mounts.roots().map(|(_, version)| version).collect();
        assert_eq!(roots, [FreezerVersion::V2, FreezerVersion::V1]);
    }

    #[test]
    fn parses_unified_and_v1_only_mountinfo() {
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            CgroupMounts::parse(unified),
            CgroupMounts {
                v2: Some(PathBuf::from("/sys/fs/cgroup")),
                v1_freezer: None
            }
        );
        // "freezer" must be an option of its own, not part of another word.
        let v1 = "36 30 0:32 / /cg/my\\040freezer rw - cgroup cgroup rw,nofreezer\n\
                  37 30 0:33 / /cg/f\\040z rw - cgroup cgroup rw,freezer\n";
        assert_eq!(
            CgroupMounts::parse(v1),
            CgroupMounts {
                v2: None,
                v1_freezer: Some(PathBuf::from("/cg/f z"))
            }
        );
        assert_eq!(CgroupMounts::parse("garbage\n\n"), CgroupMounts::default());
    }

    #[test]
    fn names_must_be_one_component() {
        for bad in ["", "a/b", ".", "..", "cgroup.procs", "x\0y"] {
            assert!(
                matches!(check_name(bad), Err(FreezerError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        check_name("shadowcopy-test-1").unwrap();
    }

    #[test]
    fn reads_the_frozen_flag_and_pids() {
        assert!(events_say_frozen("populated 1\nfrozen 1\n"));
        assert!(!events_say_frozen("populated 1\nfrozen 0\n"));
        assert!(!events_say_frozen("populated 1\n"));
        assert_eq!(parse_pids("12\n345\n\n"), [12, 345]);
    }

    #[test]
    fn open_refuses_parent_components_and_foreign_paths() {
        let error = Freezer::open(Path::new("../etc")).unwrap_err();
        assert!(error.to_string().contains(".."), "{error}");
        if CgroupMounts::current().is_ok_and(|mounts| mounts.roots().next().is_some()) {
            let error = Freezer::open(Path::new("/tmp")).unwrap_err();
            assert!(
                error.to_string().contains("under no cgroup mount"),
                "{error}"
            );
            let error = Freezer::open(Path::new("shadowcopy-no-such-cgroup-for-test")).unwrap_err();
            assert!(error.to_string().contains("no such cgroup"), "{error}");
        }
    }

    /// A declaration whose `[cgroup]` table is `table`, with a runtime dir no test touches.
    fn declared(table: &str) -> Result<CgroupWriter, DeclarationError> {
        let runtime = std::env::temp_dir().join("shadowcopy-cgroup-unit-no-marker");
        let text = format!(
            "kind = \"cgroup\"\nname = \"unit app\"\n[cgroup]\nruntime_dir = \"{}\"\n{table}",
            runtime.display()
        );
        let declaration = Declaration::parse(Path::new("/etc/x/app.toml"), &text).unwrap();
        CgroupWriter::from_declaration(&declaration)
    }

    #[test]
    fn declarations_name_exactly_one_target() {
        let error = declared("volumes = [\"/srv\"]").unwrap_err().to_string();
        assert!(
            error.contains("/etc/x/app.toml") && error.contains("cgroup.cgroup"),
            "{error}"
        );
        let error = declared("cgroup = \"app\"\npids = [1]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not both"), "{error}");
        let error = declared("cgroup = \"app\"\ncgroup_name = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("cgroup_name"), "{error}");
        let error = declared("pids = [1]\ncgroup_name = \"a/b\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("cgroup.cgroup_name"), "{error}");
        let error = declared("cgroup = \"app\"\nfreeze = 1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("freeze"), "{error}");
        let error = declared("cgroup = \"app\"\nvolumes = [\"srv\"]")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cgroup.volumes[0]") && error.contains("absolute"),
            "{error}"
        );
    }

    #[test]
    fn declarations_build_the_wmd_and_the_marker() {
        let writer = declared(
            "pid_file = \"/run/app.pid\"\n[[cgroup.components]]\nname = \"data\"\n\
             files = [{ path = \"/srv/app\", recursive = true }]",
        )
        .unwrap();
        let wmd = writer.metadata();
        assert_eq!(wmd.identity.writer_name, "unit app");
        assert_eq!(wmd.restore_method.writer_restore, WriterRestore::Never);
        let component = &wmd.components[0];
        assert_eq!(component.name, "data");
        assert_eq!(component.files[0].path, "/srv/app");
        assert_eq!(component.files[0].filespec, "*");
        assert!(component.files[0].recursive);
        // The marker is named after the writer, made safe for a file name.
        assert!(
            writer.marker().ends_with("unit_app"),
            "{}",
            writer.marker().display()
        );
        match &writer.shared.target {
            Target::Own { name, pid_file, .. } => {
                assert_eq!(name, "shadowcopy-unit_app");
                assert_eq!(pid_file.as_deref(), Some(Path::new("/run/app.pid")));
            }
            other => panic!("{other:?}"),
        }
        // Synced at PrepareForSnapshot: the component's directory.
        assert_eq!(writer.shared.sync_paths, [PathBuf::from("/srv/app")]);
    }

    #[test]
    fn file_safe_names_cannot_escape_the_runtime_dir() {
        assert_eq!(file_safe("../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_safe(".hidden"), "_.hidden");
        assert_eq!(file_safe("web-app_1.2"), "web-app_1.2");
    }

    #[test]
    fn errors_name_the_cgroup_and_a_remedy() {
        let error = FreezerError::Timeout {
            path: PathBuf::from("/sys/fs/cgroup/app"),
            limit: Duration::from_millis(5),
            state: "FREEZING".into(),
        };
        let text = error.to_string();
        assert!(
            text.contains("/sys/fs/cgroup/app") && text.contains("thawed"),
            "{text}"
        );
        let error = FreezerError::Adopt {
            pid: 7,
            path: PathBuf::from("/sys/fs/cgroup/app"),
            source: io::Error::from_raw_os_error(nix::libc::ESRCH),
        };
        assert!(error.to_string().contains("does not exist"), "{error}");
    }

    /// A database writer's cgroup left frozen by a crashed run is thawed when the writer starts.
    #[test]
    fn a_leftover_frozen_writer_cgroup_is_thawed() {
        let name = writer_cgroup_name("test", &format!("leftover-{}", std::process::id()));
        let freezer = Freezer::create(&name).expect("root can create a cgroup");
        freezer
            .freeze(Duration::from_secs(5))
            .expect("an empty cgroup freezes")
            .keep_frozen();
        assert!(freezer.is_frozen().unwrap());
        thaw_leftover(&name);
        let thawed = !freezer.is_frozen().unwrap();
        freezer.remove().expect("the test cgroup is removed");
        assert!(thawed, "the leftover freeze was thawed");
        // A cgroup that does not exist is no error.
        thaw_leftover("shadowcopy-test-never-made");
    }
}
