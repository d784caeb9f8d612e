//! `LoopVolume`: a real file system (btrfs, xfs with reflink, ext4) on a loop device of its own,
//! made for one test and torn down by its guard, also when the test fails or panics.
//!
//! The safety rules of the provider tests (architecture intent §8) live here:
//! - tests snapshot or freeze only file systems they made themselves on loop devices, so every
//!   volume has its own sparse image, loop device and mount point in a private directory, and
//!   parallel tests (threads or processes) never share one;
//! - teardown unmounts (lazily only as a last resort), detaches and deletes, logs what went wrong
//!   and never panics in `Drop`;
//! - teardown never removes anything recursively: if a mount survives, deleting through its mount
//!   point would empty the file system underneath, so only empty directories are removed;
//! - the loop device is detached only while it still serves this volume's image, because once it
//!   is free a parallel test may already have attached it to its own image.
//!
//! The CLI tools (`losetup`, `mkfs.*`, `btrfs`) do the work where speed does not matter; mounting
//! uses mount(2)/umount2(2) directly, so that EBUSY can be told apart from other failures.

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// One mebibyte, for volume sizes.
pub const MIB: u64 = 1 << 20;

/// The file systems a [`LoopVolume`] can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsKind {
    /// btrfs (`mkfs.btrfs -f -q`): subvolumes and read-only snapshots.
    Btrfs,
    /// xfs with reflink (`mkfs.xfs -f -q -m reflink=1`): FICLONE, no snapshots.
    Xfs,
    /// ext4 (`mkfs.ext4 -F -q`): neither snapshots nor reflinks.
    Ext4,
}

impl FsKind {
    /// The kernel's name of the file system, as mount(2) and /proc/self/mountinfo spell it.
    pub const fn name(self) -> &'static str {
        match self {
            FsKind::Btrfs => "btrfs",
            FsKind::Xfs => "xfs",
            FsKind::Ext4 => "ext4",
        }
    }

    /// The smallest image its mkfs accepts: mkfs.btrfs 6.2 wants 114,294,784 bytes, xfsprogs 5.19
    /// and later refuse file systems under 300 MiB. Images are sparse, so bigger costs nothing.
    pub const fn min_size(self) -> u64 {
        match self {
            FsKind::Btrfs => 114_294_784,
            FsKind::Xfs => 300 * MIB,
            FsKind::Ext4 => 8 * MIB,
        }
    }

    fn mkfs(self) -> (&'static str, &'static [&'static str]) {
        match self {
            FsKind::Btrfs => ("mkfs.btrfs", &["-f", "-q"]),
            FsKind::Xfs => ("mkfs.xfs", &["-f", "-q", "-m", "reflink=1"]),
            FsKind::Ext4 => ("mkfs.ext4", &["-F", "-q"]),
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A [`LoopVolume`] could not be made (or torn down cleanly): what failed, with the tool's output.
#[derive(Debug, Clone)]
pub struct LoopError {
    message: String,
    footprint: Option<Footprint>,
}

impl LoopError {
    fn new(message: impl Into<String>, footprint: Option<Footprint>) -> Self {
        LoopError {
            message: message.into(),
            footprint,
        }
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where the volume's image, device and mount point were, so that a test can check that a
    /// failed construction left nothing behind.
    pub fn footprint(&self) -> Option<&Footprint> {
        self.footprint.as_ref()
    }
}

impl fmt::Display for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoopError {}

/// Where a [`LoopVolume`] lives, kept after the volume is gone to check that nothing is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// The private directory holding the image and the mount point.
    pub dir: PathBuf,
    /// The sparse image file.
    pub image: PathBuf,
    /// The mount point.
    pub mount_point: PathBuf,
    /// The loop device, once one was attached.
    pub device: Option<PathBuf>,
}

impl Footprint {
    /// What is still there: mounts at or under the mount point, loop devices backed by the image,
    /// and the image and directories themselves. Empty when everything was cleaned up.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for mount in mounts_at_or_under(&self.mount_point) {
            left.push(format!("{} is still mounted", mount.display()));
        }
        for device in loop_devices_backed_by(&self.image) {
            left.push(format!(
                "{} still serves {}",
                device.display(),
                self.image.display()
            ));
        }
        for path in [&self.image, &self.mount_point, &self.dir] {
            if path.symlink_metadata().is_ok() {
                left.push(format!("{} still exists", path.display()));
            }
        }
        left
    }
}

/// A file system of its own on a loop device, mounted at a private mount point; unmounted,
/// detached and deleted on drop (see the module documentation for the rules it keeps).
#[derive(Debug)]
pub struct LoopVolume {
    kind: FsKind,
    dir: PathBuf,
    image: PathBuf,
    mount_point: PathBuf,
    /// The loop device, once attached (empty before).
    device: PathBuf,
    attached: bool,
    mounted: bool,
    /// `close` already tore it down; `Drop` has nothing left to do.
    closed: bool,
}

impl LoopVolume {
    /// A btrfs volume of `size` bytes (at least [`FsKind::min_size`]).
    pub fn btrfs(size: u64) -> Result<Self, LoopError> {
        Self::new(FsKind::Btrfs, size)
    }

    /// An xfs volume with reflink of `size` bytes (at least 300 MiB, [`FsKind::min_size`]).
    pub fn xfs(size: u64) -> Result<Self, LoopError> {
        Self::new(FsKind::Xfs, size)
    }

    /// An ext4 volume of `size` bytes.
    pub fn ext4(size: u64) -> Result<Self, LoopError> {
        Self::new(FsKind::Ext4, size)
    }

    /// A volume of `kind` and `size` bytes: a sparse image in a private temp dir, attached to a
    /// free loop device, made into a file system and mounted. Whatever was made before a step
    /// failed is torn down again before the error returns.
    pub fn new(kind: FsKind, size: u64) -> Result<Self, LoopError> {
        Self::new_in(kind, size, &std::env::temp_dir())
    }

    /// Like [`LoopVolume::new`], but its private directory (and so its image) lies in `parent`,
    /// for example inside another `LoopVolume`: a loop volume whose backing file lives on a file
    /// system the test chose. Drop it before the volume that holds it.
    pub fn new_in(kind: FsKind, size: u64, parent: &Path) -> Result<Self, LoopError> {
        let dir = private_dir(kind, parent)?;
        let mut volume = LoopVolume {
            kind,
            image: dir.join("image"),
            mount_point: dir.join("mnt"),
            dir,
            device: PathBuf::new(),
            attached: false,
            mounted: false,
            closed: false,
        };
        // From here on, returning an error drops `volume`, whose Drop undoes the steps done so far.
        volume.build(size).map_err(|message| {
            LoopError::new(
                format!("cannot make a {kind} loop volume of {size} bytes: {message}"),
                Some(volume.footprint()),
            )
        })?;
        Ok(volume)
    }

    fn build(&mut self, size: u64) -> Result<(), String> {
        let image = std::fs::File::create_new(&self.image)
            .map_err(|e| format!("cannot create {}: {e}", self.image.display()))?;
        image
            .set_len(size)
            .map_err(|e| format!("cannot size {}: {e}", self.image.display()))?;
        drop(image);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&self.mount_point)
            .map_err(|e| format!("cannot create {}: {e}", self.mount_point.display()))?;

        self.device = attach(&self.image)?;
        self.attached = true;

        let (mkfs, args) = self.kind.mkfs();
        run(Command::new(mkfs).args(args).arg(&self.device))?;

        mount_retrying(&self.device, &self.mount_point, self.kind)?;
        self.mounted = true;
        Ok(())
    }

    /// The file system on it.
    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// Where it is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// Its loop device (`/dev/loopN`).
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Its sparse image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// A path inside the mounted file system.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.mount_point.join(relative)
    }

    /// Where it lives, to check after it is gone that nothing is left ([`Footprint::leftovers`]).
    pub fn footprint(&self) -> Footprint {
        Footprint {
            dir: self.dir.clone(),
            image: self.image.clone(),
            mount_point: self.mount_point.clone(),
            device: self.attached.then(|| self.device.clone()),
        }
    }

    /// Creates a btrfs subvolume at `relative` (inside the mount point) with `btrfs subvolume
    /// create` and returns its path. Only on btrfs.
    pub fn create_subvolume(&self, relative: impl AsRef<Path>) -> Result<PathBuf, LoopError> {
        let path = self.path(relative);
        if self.kind != FsKind::Btrfs {
            return Err(LoopError::new(
                format!(
                    "cannot create subvolume {}: the volume is {}, not btrfs",
                    path.display(),
                    self.kind
                ),
                None,
            ));
        }
        run(Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(&path))
        .map_err(|e| LoopError::new(format!("cannot create subvolume: {e}"), None))?;
        Ok(path)
    }

    /// Tears the volume down now and checks that nothing is left behind (no mount at or under the
    /// mount point, no loop device serving the image, no files): the end of a test that wants to
    /// fail when its cleanup did not work. `Drop` does the same teardown but can only log.
    pub fn close(mut self) -> Result<(), LoopError> {
        let footprint = self.footprint();
        let mut problems = self.teardown();
        self.closed = true;
        problems.extend(leftovers_after_settling(&footprint));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoopError::new(
                format!(
                    "the {} loop volume at {} was not cleaned up: {}",
                    self.kind,
                    footprint.dir.display(),
                    problems.join("; ")
                ),
                Some(footprint),
            ))
        }
    }

    /// Unmounts, detaches and deletes; returns what went wrong. Never panics.
    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.mounted {
            match unmount(&self.mount_point) {
                Ok(Unmounted::Cleanly) => self.mounted = false,
                Ok(Unmounted::Lazily(why)) => {
                    self.mounted = false;
                    problems.push(format!(
                        "{} was busy ({why}); it was unmounted lazily, so the file system lives \
                         on until its last user goes away",
                        self.mount_point.display()
                    ));
                }
                Err(error) => problems.push(error),
            }
        }
        if self.attached {
            match detach(&self.device, &self.image) {
                Ok(()) => self.attached = false,
                Err(error) => problems.push(error),
            }
        }
        if let Err(error) = std::fs::remove_file(&self.image)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("cannot delete {}: {error}", self.image.display()));
        }
        // Only empty directories, and the mount point only once nothing is mounted on it.
        if !self.mounted {
            remove_empty_dir(&self.mount_point, &mut problems);
            remove_empty_dir(&self.dir, &mut problems);
        }
        problems
    }
}

impl Drop for LoopVolume {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let footprint = self.footprint();
        for problem in self.teardown() {
            eprintln!("shadowcopy-test-support: LoopVolume teardown: {problem}");
        }
        for left in leftovers_after_settling(&footprint) {
            eprintln!("shadowcopy-test-support: LoopVolume left behind: {left}");
        }
    }
}

/// An existing file-system image (a shadow copy, say) attached read-only to a loop device of its
/// own (`losetup --find --show --read-only`) and mounted read-only at a fresh mount point; unmounted
/// and detached by its guard, also on panic. The image itself is left alone.
#[derive(Debug)]
pub struct ReadOnlyImage {
    image: PathBuf,
    device: PathBuf,
    mount_point: PathBuf,
    attached: bool,
    mounted: bool,
    closed: bool,
}

impl ReadOnlyImage {
    /// Attaches `image` read-only and mounts it at `mount_point` (created, must not exist) as
    /// `kind` with `options` (for ext4 `ro,noload`, so that no journal is replayed).
    pub fn mount(
        image: &Path,
        kind: FsKind,
        mount_point: &Path,
        options: &str,
    ) -> Result<Self, LoopError> {
        let mut guard = ReadOnlyImage {
            image: image.to_path_buf(),
            device: PathBuf::new(),
            mount_point: mount_point.to_path_buf(),
            attached: false,
            mounted: false,
            closed: false,
        };
        let fail = |message: String| LoopError::new(message, None);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(mount_point)
            .map_err(|e| fail(format!("cannot create {}: {e}", mount_point.display())))?;
        let stdout = run(Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(image))
        .map_err(fail)?;
        guard.device = PathBuf::from(stdout.trim());
        guard.attached = true;
        run(Command::new("mount")
            .args(["-t", kind.name(), "-o", options])
            .arg(&guard.device)
            .arg(mount_point))
        .map_err(fail)?;
        guard.mounted = true;
        Ok(guard)
    }

    /// Where it is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// A path inside the mounted image.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.mount_point.join(relative)
    }

    /// Unmounts and detaches now; fails when a mount or the loop device survives.
    pub fn close(mut self) -> Result<(), LoopError> {
        let mut problems = self.teardown();
        self.closed = true;
        if !mounts_at_or_under(&self.mount_point).is_empty() {
            problems.push(format!("{} is still mounted", self.mount_point.display()));
        }
        for _ in 0..40 {
            if loop_devices_backed_by(&self.image).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for device in loop_devices_backed_by(&self.image) {
            problems.push(format!(
                "{} still serves {}",
                device.display(),
                self.image.display()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoopError::new(problems.join("; "), None))
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.mounted {
            match unmount(&self.mount_point) {
                Ok(Unmounted::Cleanly) => self.mounted = false,
                Ok(Unmounted::Lazily(why)) => {
                    self.mounted = false;
                    problems.push(format!("{} was busy ({why})", self.mount_point.display()));
                }
                Err(error) => problems.push(error),
            }
        }
        if self.attached {
            match detach(&self.device, &self.image) {
                Ok(()) => self.attached = false,
                Err(error) => problems.push(error),
            }
        }
        if !self.mounted {
            remove_empty_dir(&self.mount_point, &mut problems);
        }
        problems
    }
}

impl Drop for ReadOnlyImage {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for problem in self.teardown() {
            eprintln!("shadowcopy-test-support: ReadOnlyImage teardown: {problem}");
        }
    }
}

fn remove_empty_dir(dir: &Path, problems: &mut Vec<String>) {
    if let Err(error) = std::fs::remove_dir(dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("cannot remove {}: {error}", dir.display()));
    }
}

/// The leftovers of `footprint`, after giving a lazily detached loop device a moment to let go.
fn leftovers_after_settling(footprint: &Footprint) -> Vec<String> {
    let mut left = footprint.leftovers();
    for _ in 0..40 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        left = footprint.leftovers();
    }
    left
}

/// A fresh directory of this process under `base`, mode 0700, canonical (so that it
/// compares equal to the backing-file path the kernel reports).
fn private_dir(kind: FsKind, base: &Path) -> Result<PathBuf, LoopError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = base.join(format!("sc-loop-{kind}-{}-{n}-{nanos}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                return dir.canonicalize().map_err(|e| {
                    LoopError::new(format!("cannot resolve {}: {e}", dir.display()), None)
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(LoopError::new(
                    format!(
                        "cannot create a directory under {}: {error}",
                        base.display()
                    ),
                    None,
                ));
            }
        }
    }
    Err(LoopError::new(
        format!("no fresh directory name under {}", base.display()),
        None,
    ))
}

/// Runs a command; its stdout on success, the command line with its output on failure.
fn run(command: &mut Command) -> Result<String, String> {
    let line = format!("{command:?}");
    let output = command
        .output()
        .map_err(|e| format!("cannot run {line}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{line} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

/// Attaches `image` to a free loop device. `losetup --find` can lose the race for a device to a
/// parallel test; it retries itself, and this retries a few more times on top.
fn attach(image: &Path) -> Result<PathBuf, String> {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20 * attempt));
        }
        match run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image))
        {
            Ok(stdout) => {
                let device = PathBuf::from(stdout.trim());
                if serves(&device, image) {
                    return Ok(device);
                }
                return Err(format!(
                    "losetup reported {} for {}, but the kernel does not show that device serving it",
                    device.display(),
                    image.display()
                ));
            }
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// The backing file the kernel reports for a loop device, without the " (deleted)" it appends
/// once the image is gone; `None` when the device serves nothing.
fn backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let text = text.trim_end_matches('\n');
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(text),
    ))
}

fn serves(device: &Path, image: &Path) -> bool {
    backing_file(device).is_some_and(|backing| backing == image)
}

/// Every loop device that serves a file, with the file (without the " (deleted)" the kernel adds
/// once the file is gone).
pub fn loop_devices() -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            if !name.starts_with("loop") {
                return None;
            }
            let device = PathBuf::from("/dev").join(name);
            let backing = backing_file(&device)?;
            Some((device, backing))
        })
        .collect()
}

/// Every loop device whose backing file is `image`.
pub fn loop_devices_backed_by(image: &Path) -> Vec<PathBuf> {
    loop_devices()
        .into_iter()
        .filter(|(_, backing)| backing == image)
        .map(|(device, _)| device)
        .collect()
}

/// Detaches `device`, but only while it still serves `image`: a device that no longer does may
/// already belong to a parallel test.
fn detach(device: &Path, image: &Path) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..10 {
        if !serves(device, image) {
            return Ok(());
        }
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        // A device still in use is not refused: the kernel detaches it at its last close.
        match run(Command::new("losetup").arg("--detach").arg(device)) {
            Ok(_) => return Ok(()),
            Err(error) => last = error,
        }
    }
    Err(format!("cannot detach {}: {last}", device.display()))
}

/// Mounts the new file system. A freshly made file system is mounted at once; the retries only
/// cover a device node that appears a moment after `losetup` returns.
fn mount_retrying(device: &Path, mount_point: &Path, kind: FsKind) -> Result<(), String> {
    let mut last = Errno::UnknownErrno;
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        match nix::mount::mount(
            Some(device),
            mount_point,
            Some(kind.name()),
            MsFlags::empty(),
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(errno @ (Errno::ENOENT | Errno::ENXIO | Errno::EBUSY)) => last = errno,
            Err(errno) => {
                return Err(format!(
                    "mount -t {kind} {} {}: {errno}",
                    device.display(),
                    mount_point.display()
                ));
            }
        }
    }
    Err(format!(
        "mount -t {kind} {} {}: {last}",
        device.display(),
        mount_point.display()
    ))
}

enum Unmounted {
    Cleanly,
    /// Busy to the end; detached from the tree with MNT_DETACH. Carries the last error.
    Lazily(Errno),
}

/// Unmounts `mount_point`, retrying while it is busy (a file closing in another thread, the btrfs
/// cleaner), and detaches it lazily when it stays busy.
fn unmount(mount_point: &Path) -> Result<Unmounted, String> {
    let mut last = Errno::EBUSY;
    for attempt in 0..20 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        match nix::mount::umount2(mount_point, MntFlags::empty()) {
            Ok(()) => return Ok(Unmounted::Cleanly),
            // EINVAL: not a mount point (any more), which is what we want.
            Err(Errno::EINVAL) if mounts_at_or_under(mount_point).is_empty() => {
                return Ok(Unmounted::Cleanly);
            }
            Err(errno) => last = errno,
        }
    }
    match nix::mount::umount2(mount_point, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(Unmounted::Lazily(last)),
        Err(errno) => Err(format!(
            "cannot unmount {}: {last}, and lazily: {errno}",
            mount_point.display()
        )),
    }
}

/// The mount points in /proc/self/mountinfo that are `path` or lie under it.
pub fn mounts_at_or_under(path: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount| mount.starts_with(path))
        .collect()
}

/// The file system type mounted at exactly `path`, from /proc/self/mountinfo.
pub fn mounted_fs_type(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().rev().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mount = before.split(' ').nth(4)?;
        (Path::new(&unescape_mountinfo(mount)) == path)
            .then(|| after.split(' ').next().map(str::to_string))
            .flatten()
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|b| (b'0'..=b'7').contains(b)));
        let value = escape.map(|d| d.iter().fold(0u16, |v, b| v * 8 + u16::from(b - b'0')));
        if let Some(byte) = value.and_then(|v| u8::try_from(v).ok()) {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The inode number of `path` (256 is the root of a btrfs subvolume).
pub fn inode_of(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
