//! Mounting a shadow copy's device object read-only on an empty directory: the storage half of
//! local exposure (EXP-1, EXP-4), used by `shadowcopyd`'s ExposeSnapshot and UnexposeSnapshot.
//!
//! A device object (`snapshot_path`, SNAP-1) is one of two things:
//! - a directory (a btrfs provider's read-only snapshot subvolume, a reflink copy directory): it is
//!   bind-mounted (MS_BIND) and the bind mount is then remounted read-only (MS_REMOUNT | MS_BIND |
//!   MS_RDONLY), because the kernel ignores MS_RDONLY on the first bind call;
//! - a regular file (the loop-image provider's cloned disk image): it is attached read-only to a
//!   free loop device with LO_FLAGS_AUTOCLEAR and that device is mounted read-only, with the file
//!   system read from the image's superblock. Autoclear ties the loop device's life to the mount:
//!   unmounting detaches it, so nothing is left attached even when shadowcopyd is gone by then.
//!   A cloned xfs carries its original's UUID (so `nouuid`) and must not replay a log into a
//!   read-only image (so `norecovery`); ext4 gets `noload` for the same reason.
//!
//! Every exposure is also `nosuid,nodev`: an exposed copy is for reading data, and a set-uid binary
//! or device node inside a backup must not become usable through it (SEC-7: exposed snapshots are
//! read-only, and so is what they grant).
//!
//! The mount outlives the process that made it, on purpose: a persistent shadow copy stays exposed
//! across daemon restarts until it is unexposed, so [`MountedCopy`] has no `Drop`.

mod ioctl;

use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use shadowcopy_coordinator::ProviderError;
use shadowcopy_metadata::codes;

/// How a [`MountedCopy`] is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A read-only bind mount of a directory.
    Bind,
    /// A read-only mount of a disk image through a read-only, autoclearing loop device.
    LoopImage {
        /// The loop device (`/dev/loopN`); it goes away when the mount is unmounted.
        device: PathBuf,
        /// The file system found in the image (`xfs` or `ext4`).
        fs_type: &'static str,
    },
}

/// A device object mounted read-only on a directory by [`mount_read_only`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedCopy {
    /// What was mounted: the device object.
    pub source: PathBuf,
    /// Where: the (canonical) mount directory.
    pub target: PathBuf,
    /// How.
    pub kind: MountKind,
}

/// The file systems a disk image can be exposed with, found from its superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageFs {
    Xfs,
    Ext4,
}

impl ImageFs {
    fn name(self) -> &'static str {
        match self {
            ImageFs::Xfs => "xfs",
            ImageFs::Ext4 => "ext4",
        }
    }

    /// Mount options for a read-only look at a clone: the clone has its original's UUID, and
    /// its journal must not be replayed into a read-only device.
    fn options(self) -> &'static str {
        match self {
            ImageFs::Xfs => "nouuid,norecovery",
            ImageFs::Ext4 => "noload",
        }
    }
}

/// Flags every exposure carries (see the module documentation).
fn read_only_flags() -> MsFlags {
    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
}

fn error(code: shadowcopy_metadata::codes::ErrorCode, message: String) -> ProviderError {
    ProviderError::new(code, message)
}

/// Mounts `device_object` (a directory or a disk image file) read-only on `target`, which must be
/// an existing, empty directory (EXP-4).
///
/// Errors: the device object is missing (VSS_E_OBJECT_NOT_FOUND) or neither a directory nor a
/// regular file, or an image holds neither xfs nor ext4 (VSS_E_VOLUME_NOT_SUPPORTED); the target is
/// missing (VSS_E_OBJECT_NOT_FOUND), relative or not a directory (E_INVALIDARG), or not empty or
/// already a mount point (VSS_E_OBJECT_ALREADY_EXISTS); the mount itself failed
/// (VSS_E_UNEXPECTED_PROVIDER_ERROR with the errno). On failure nothing stays mounted or attached.
pub fn mount_read_only(device_object: &Path, target: &Path) -> Result<MountedCopy, ProviderError> {
    let target = check_target(target)?;
    let metadata = std::fs::metadata(device_object).map_err(|e| {
        error(
            codes::VSS_E_OBJECT_NOT_FOUND,
            format!(
                "cannot expose {}: {e}; the shadow copy's device object is gone, check it with \
                 `shadowcopy list`",
                device_object.display()
            ),
        )
    })?;
    if metadata.is_dir() {
        bind_read_only(device_object, &target)?;
        Ok(MountedCopy {
            source: device_object.to_path_buf(),
            target,
            kind: MountKind::Bind,
        })
    } else if metadata.is_file() {
        let (device, fs) = mount_image(device_object, &target)?;
        Ok(MountedCopy {
            source: device_object.to_path_buf(),
            target,
            kind: MountKind::LoopImage {
                device,
                fs_type: fs.name(),
            },
        })
    } else {
        Err(error(
            codes::VSS_E_VOLUME_NOT_SUPPORTED,
            format!(
                "cannot expose {}: it is a {}, not a directory or a disk image file; only those \
                 device objects can be mounted",
                device_object.display(),
                describe(metadata.file_type())
            ),
        ))
    }
}

fn describe(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// EXP-4: an absolute path to an existing, empty directory that is not a mount point yet.
/// Returns its canonical form, which is what /proc/self/mountinfo will show.
fn check_target(target: &Path) -> Result<PathBuf, ProviderError> {
    if !target.is_absolute() {
        return Err(error(
            codes::E_INVALIDARG,
            format!(
                "cannot expose on {}: the directory must be given as an absolute path",
                target.display()
            ),
        ));
    }
    let canonical = target.canonicalize().map_err(|e| {
        error(
            codes::VSS_E_OBJECT_NOT_FOUND,
            format!(
                "cannot expose on {}: {e}; create an empty directory there first (EXP-4)",
                target.display()
            ),
        )
    })?;
    if !canonical.is_dir() {
        return Err(error(
            codes::E_INVALIDARG,
            format!(
                "cannot expose on {}: it is not a directory; give an empty directory (EXP-4)",
                target.display()
            ),
        ));
    }
    if is_mounted(&canonical) {
        return Err(error(
            codes::VSS_E_OBJECT_ALREADY_EXISTS,
            format!(
                "cannot expose on {}: something is already mounted there (`findmnt {}` shows \
                 what); choose another empty directory",
                target.display(),
                canonical.display()
            ),
        ));
    }
    let mut entries = std::fs::read_dir(&canonical).map_err(|e| {
        error(
            codes::E_INVALIDARG,
            format!("cannot expose on {}: cannot list it: {e}", target.display()),
        )
    })?;
    if let Some(entry) = entries.next() {
        let name = entry
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(error(
            codes::VSS_E_OBJECT_ALREADY_EXISTS,
            format!(
                "cannot expose on {}: the directory is not empty (it holds {name:?}, among \
                 others perhaps); mounting there would hide its files, so give an empty \
                 directory (EXP-4)",
                target.display()
            ),
        ));
    }
    Ok(canonical)
}

fn bind_read_only(source: &Path, target: &Path) -> Result<(), ProviderError> {
    let failed = |step: &str, errno: Errno| {
        error(
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
            format!(
                "cannot expose {} on {}: {step} failed: {errno}",
                source.display(),
                target.display()
            ),
        )
    };
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| failed("the bind mount", errno))?;
    // The first call ignores MS_RDONLY for a bind mount; only the remount makes it read-only.
    if let Err(errno) = nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | read_only_flags(),
        None::<&str>,
    ) {
        // Never leave a writable view of a shadow copy behind.
        let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
        return Err(failed("the read-only remount", errno));
    }
    Ok(())
}

/// Which file system the image holds: xfs has "XFSB" at byte 0, ext2/3/4 the magic 0xEF53
/// (little-endian) at byte 1080, 56 bytes into the superblock at 1024.
fn detect_fs(image: &Path) -> Result<ImageFs, ProviderError> {
    let mut head = [0u8; 1082];
    let mut file = File::open(image).map_err(|e| {
        error(
            codes::VSS_E_OBJECT_NOT_FOUND,
            format!("cannot expose {}: cannot open it: {e}", image.display()),
        )
    })?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(error(
                    codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
                    format!("cannot expose {}: cannot read it: {e}", image.display()),
                ));
            }
        }
    }
    if filled >= 4 && &head[..4] == b"XFSB" {
        return Ok(ImageFs::Xfs);
    }
    if filled >= 1082 && head[1080..1082] == [0x53, 0xEF] {
        return Ok(ImageFs::Ext4);
    }
    Err(error(
        codes::VSS_E_VOLUME_NOT_SUPPORTED,
        format!(
            "cannot expose {}: the image holds neither an xfs nor an ext4 file system (no xfs \
             superblock at byte 0, no ext4 magic at byte 1080); `blkid {}` shows what it holds, \
             and it can be attached with `losetup --read-only` and mounted by hand",
            image.display(),
            image.display()
        ),
    ))
}

/// Attaches `image` read-only with autoclear to a free loop device and mounts that read-only on
/// `target`. Returns the device and the file system.
fn mount_image(image: &Path, target: &Path) -> Result<(PathBuf, ImageFs), ProviderError> {
    let fs = detect_fs(image)?;
    let (device_path, device) = attach_read_only(image)?;
    let mounted = nix::mount::mount(
        Some(device_path.as_path()),
        target,
        Some(fs.name()),
        read_only_flags(),
        Some(fs.options()),
    );
    match mounted {
        // Dropping `device` now is the last close apart from the mount's own reference, so the
        // unmount will be the last close, and autoclear detaches the device then.
        Ok(()) => Ok((device_path, fs)),
        Err(errno) => {
            // Autoclear would also detach it when `device` closes; detach explicitly so that the
            // error path does not depend on that.
            let _ = ioctl::clear(&device);
            drop(device);
            Err(error(
                codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
                format!(
                    "cannot expose {}: mount -t {} -o ro,{} {} {} failed: {errno}; the kernel log \
                     (`dmesg | tail`) says why the file system was refused",
                    image.display(),
                    fs.name(),
                    fs.options(),
                    device_path.display(),
                    target.display()
                ),
            ))
        }
    }
}

/// Binds `image` (opened read-only, so the device is read-only) to a free loop device with
/// LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR. A device another process takes between
/// LOOP_CTL_GET_FREE and LOOP_CONFIGURE gives EBUSY: then another free one is asked for.
fn attach_read_only(image: &Path) -> Result<(PathBuf, File), ProviderError> {
    let failed = |what: String| {
        error(
            codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
            format!(
                "cannot expose {}: {what}; `losetup -a` lists the loop devices in use",
                image.display()
            ),
        )
    };
    let backing = File::open(image).map_err(|e| failed(format!("cannot open it: {e}")))?;
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| failed(format!("cannot open /dev/loop-control: {e}")))?;
    let name = image.as_os_str().as_bytes();
    let mut last = Errno::EBUSY;
    for attempt in 0..20u64 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(5 * attempt));
        }
        let number = ioctl::get_free(&control)
            .map_err(|errno| failed(format!("LOOP_CTL_GET_FREE failed: {errno}")))?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        // devtmpfs creates the node when the kernel adds the device; give it a moment.
        let device = match File::options().read(true).write(true).open(&path) {
            Ok(device) => device,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last = Errno::ENOENT;
                continue;
            }
            Err(e) => return Err(failed(format!("cannot open {}: {e}", path.display()))),
        };
        match ioctl::configure(
            &device,
            &backing,
            ioctl::LO_FLAGS_READ_ONLY | ioctl::LO_FLAGS_AUTOCLEAR,
            name,
        ) {
            Ok(()) => return Ok((path, device)),
            Err(Errno::EBUSY) => last = Errno::EBUSY,
            Err(errno) => {
                return Err(failed(format!(
                    "LOOP_CONFIGURE of {} failed: {errno}",
                    path.display()
                )));
            }
        }
    }
    Err(failed(format!(
        "no free loop device could be taken after 20 attempts (last: {last})"
    )))
}

/// Unmounts an exposure at `target`. For a disk image the loop device detaches itself
/// (autoclear) once the mount is gone.
///
/// Errors: something still uses the mount (VSS_E_VOLUME_IN_USE, naming `fuser -m` and `lsof`);
/// nothing is mounted there (VSS_E_OBJECT_NOT_FOUND); anything else
/// (VSS_E_UNEXPECTED_PROVIDER_ERROR).
pub fn unmount(target: &Path) -> Result<(), ProviderError> {
    let mut last = Errno::EBUSY;
    // A file closed a moment ago in another process can keep the mount busy briefly; a user who
    // really holds it open gets the error after these few tries.
    for attempt in 0..5u64 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20 * attempt));
        }
        match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => return Ok(()),
            Err(Errno::EBUSY) => last = Errno::EBUSY,
            Err(Errno::EINVAL | Errno::ENOENT) if !is_mounted(target) => {
                return Err(error(
                    codes::VSS_E_OBJECT_NOT_FOUND,
                    format!(
                        "cannot unmount {}: nothing is mounted there",
                        target.display()
                    ),
                ));
            }
            Err(errno) => {
                return Err(error(
                    codes::VSS_E_UNEXPECTED_PROVIDER_ERROR,
                    format!("cannot unmount {}: {errno}", target.display()),
                ));
            }
        }
    }
    Err(error(
        codes::VSS_E_VOLUME_IN_USE,
        format!(
            "cannot unmount {}: {last}: a process has a file open or its working directory in \
             it; `fuser -vm {}` or `lsof +f -- {}` lists them. Stop them and retry",
            target.display(),
            target.display(),
            target.display()
        ),
    ))
}

/// Whether something is mounted exactly at `target` (after resolving symbolic links), from
/// /proc/self/mountinfo.
pub fn is_mounted(target: &Path) -> bool {
    let target = target
        .canonicalize()
        .unwrap_or_else(|_| target.to_path_buf());
    mount_points().iter().any(|mount| mount.as_path() == target)
}

/// `systemd-escape --path`: a volume's mount point as one path component, so that each volume has
/// its own stable directory under an expose root ("/srv/db" -> "srv-db", "/" -> "-",
/// "/var/lib/my-app" -> "var-lib-my\\x2dapp"); distinct volumes never share a key.
pub fn volume_key(volume: &str) -> String {
    let trimmed: Vec<&str> = volume.split('/').filter(|part| !part.is_empty()).collect();
    if trimmed.is_empty() {
        return "-".into();
    }
    let path = trimmed.join("/");
    let mut key = String::with_capacity(path.len());
    for (i, byte) in path.bytes().enumerate() {
        match byte {
            b'/' => key.push('-'),
            b'.' if i == 0 => key.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => {
                key.push(char::from(byte));
            }
            other => key.push_str(&format!("\\x{other:02x}")),
        }
    }
    key
}

/// Every mount point in /proc/self/mountinfo, in mount order.
pub fn mount_points() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .map(|mount| mount.mount_point)
        .collect()
}

/// One line of /proc/self/mountinfo: where a file system is mounted and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point.
    pub mount_point: PathBuf,
    /// The file system type (`btrfs`, `xfs`, `proc`, ...).
    pub fs_type: String,
}

/// Every mount of this process's mount namespace, in mount order (proc(5): the mount point is
/// field 5, the file system type the first field after the ` - ` separator).
pub fn mounts() -> Vec<MountEntry> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let field = line.split(' ').nth(4)?;
            let (_, after) = line.split_once(" - ")?;
            Some(MountEntry {
                mount_point: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(field))),
                fs_type: after.split(' ').next()?.to_owned(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        let value = digits.map(|d| d.iter().fold(0u16, |v, b| v * 8 + u16::from(b - b'0')));
        match value.and_then(|v| u8::try_from(v).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_keys_escape_like_systemd() {
        assert_eq!(volume_key("/srv/db"), "srv-db");
        assert_eq!(volume_key("/"), "-");
        assert_eq!(volume_key("/srv/db/"), "srv-db");
        assert_eq!(volume_key("//srv//db"), "srv-db");
        assert_eq!(volume_key("/var/lib/my-app"), "var-lib-my\\x2dapp");
        assert_eq!(volume_key("/.hidden/x y"), "\\x2ehidden-x\\x20y");
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/tmp/a\040b"), b"/tmp/a b");
        assert_eq!(unescape(r"/x\134y"), br"/x\y");
        assert_eq!(unescape(r"/end\04"), br"/end\04");
    }

    #[test]
    fn relative_and_missing_targets_are_refused() {
        let err = mount_read_only(Path::new("/"), Path::new("relative/dir")).unwrap_err();
        assert_eq!(err.code, codes::E_INVALIDARG, "{err}");
        let err =
            mount_read_only(Path::new("/"), Path::new("/nonexistent/shadowcopy/x")).unwrap_err();
        assert_eq!(err.code, codes::VSS_E_OBJECT_NOT_FOUND, "{err}");
        assert!(err.message.contains("EXP-4"), "{err}");
    }

    #[test]
    fn the_root_is_mounted() {
        assert!(is_mounted(Path::new("/")));
        assert!(!is_mounted(Path::new("/nonexistent/shadowcopy")));
    }
}
