//! `shadowcopy_providers::expose` on real storage: a directory on a btrfs loop volume is
//! bind-mounted read-only, and xfs and ext4 disk images (the loop-image provider's device objects)
//! are mounted read-only through autoclearing loop devices (EXP-4). Every test checks that
//! nothing stays mounted or attached afterwards.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shadowcopy_metadata::codes;
use shadowcopy_providers::expose::{self, MountKind};
use shadowcopy_test_support::loop_volume::loop_devices_backed_by;
use shadowcopy_test_support::{LoopVolume, MIB, TempDir};

/// Unmounts `0` on drop if it is still mounted (lazily as a last resort), so that a failing
/// assertion leaves no exposure behind. Declared after the volume and the directory it uses, so
/// that it is dropped before them.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if expose::is_mounted(&self.0) && expose::unmount(&self.0).is_err() {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// An empty directory to expose on.
fn target(dir: &TempDir, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir(&path).unwrap();
    path
}

fn write_refused(path: &Path) -> std::io::Error {
    std::fs::write(path, "changed\n").expect_err("the exposure must refuse writes")
}

/// Waits (at most 10 s) until no loop device serves `image`: autoclear detaches the device at the
/// unmount, which the kernel may finish a moment later.
fn no_loop_device_serves(image: &Path) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let devices = loop_devices_backed_by(image);
        if devices.is_empty() || Instant::now() > deadline {
            return devices;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sparse xfs image of `size` bytes holding `hello.txt` ("hello\n") and an empty `sub/`, made by
/// mkfs.xfs from a prototype file, so no file system is mounted read-write to populate it.
fn xfs_image(dir: &TempDir) -> PathBuf {
    let source = dir.join("hello.src");
    std::fs::write(&source, "hello\n").unwrap();
    let proto = dir.join("proto");
    std::fs::write(
        &proto,
        format!(
            "boot\n0 0\nd--755 0 0\nhello.txt ---644 0 0 {}\nsub d--755 0 0\n$\n$\n",
            source.display()
        ),
    )
    .unwrap();
    let image = dir.join("xfs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(300 * MIB)
        .unwrap();
    run(Command::new("mkfs.xfs")
        .args(["-f", "-q", "-p"])
        .arg(&proto)
        .arg(&image));
    image.canonicalize().unwrap()
}

/// A 16 MiB ext4 image holding `hello.txt` ("hello ext4\n"), made with `mkfs.ext4 -d`.
fn ext4_image(dir: &TempDir) -> PathBuf {
    let content = dir.join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("hello.txt"), "hello ext4\n").unwrap();
    let image = dir.join("ext4.img");
    run(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-d"])
        .arg(&content)
        .arg(&image)
        .arg("16M"));
    image.canonicalize().unwrap()
}

fn run(command: &mut Command) {
    let output = command.output().expect("the tool runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A directory device object (a btrfs snapshot, a reflink copy) is bind-mounted read-only; the
/// original stays writable; unmounting leaves nothing; a busy mount is VSS_E_VOLUME_IN_USE.
#[test]
fn loop_btrfs_directory_is_bind_mounted_read_only() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let copy = volume.path("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::write(copy.join("file.txt"), "kept\n").unwrap();
    let dir = TempDir::new("expose-bind");
    let on = target(&dir, "exposed");
    let guard = Unmount(on.clone());

    let mounted = expose::mount_read_only(&copy, &on).expect("the bind mount works");
    assert_eq!(mounted.kind, MountKind::Bind);
    assert_eq!(mounted.target, on.canonicalize().unwrap());
    assert!(expose::is_mounted(&on));
    assert_eq!(
        std::fs::read_to_string(on.join("file.txt")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        write_refused(&on.join("file.txt")).raw_os_error(),
        Some(nix::libc::EROFS)
    );
    assert_eq!(
        write_refused(&on.join("new.txt")).raw_os_error(),
        Some(nix::libc::EROFS)
    );
    // The original is untouched by the read-only view of it.
    std::fs::write(copy.join("other.txt"), "writable\n").unwrap();

    // EXP-4: a directory that is already in use is refused.
    let err = expose::mount_read_only(&copy, &on).unwrap_err();
    assert_eq!(err.code, codes::VSS_E_OBJECT_ALREADY_EXISTS, "{err}");

    // Busy: a file open inside keeps it mounted, and the error says how to find the user.
    let open = std::fs::File::open(on.join("file.txt")).unwrap();
    let err = expose::unmount(&on).unwrap_err();
    assert_eq!(err.code, codes::VSS_E_VOLUME_IN_USE, "{err}");
    assert!(
        err.message.contains("fuser") && err.message.contains("lsof"),
        "{err}"
    );
    assert!(expose::is_mounted(&on), "a busy exposure stays mounted");
    drop(open);

    expose::unmount(&on).expect("the unmount works once the file is closed");
    assert!(!expose::is_mounted(&on));
    let err = expose::unmount(&on).unwrap_err();
    assert_eq!(err.code, codes::VSS_E_OBJECT_NOT_FOUND, "{err}");
    drop(guard);
    drop(dir);
    volume.close().expect("nothing left mounted or attached");
}

/// EXP-4: the target must be an existing, empty directory.
#[test]
fn loop_btrfs_targets_must_be_empty_directories() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("a btrfs loop volume (root and btrfs-progs)");
    let copy = volume.path("copy");
    std::fs::create_dir(&copy).unwrap();
    let dir = TempDir::new("expose-targets");
    let full = target(&dir, "full");
    std::fs::write(full.join("mine.txt"), "do not hide me\n").unwrap();
    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    let guards = [Unmount(full.clone()), Unmount(file.clone())];

    let err = expose::mount_read_only(&copy, &full).unwrap_err();
    assert_eq!(err.code, codes::VSS_E_OBJECT_ALREADY_EXISTS, "{err}");
    assert!(err.message.contains("mine.txt"), "{err}");
    let err = expose::mount_read_only(&copy, &file).unwrap_err();
    assert_eq!(err.code, codes::E_INVALIDARG, "{err}");
    let err = expose::mount_read_only(&copy, &dir.join("missing")).unwrap_err();
    assert_eq!(err.code, codes::VSS_E_OBJECT_NOT_FOUND, "{err}");
    let err = expose::mount_read_only(&volume.path("gone"), &target(&dir, "empty")).unwrap_err();
    assert_eq!(err.code, codes::VSS_E_OBJECT_NOT_FOUND, "{err}");
    assert!(!expose::is_mounted(&full) && !expose::is_mounted(&dir.join("empty")));
    drop(guards);
    drop(dir);
    volume.close().expect("nothing left mounted or attached");
}

/// A cloned xfs image (the loop-image provider's device object) is mounted read-only through a
/// read-only loop device; the device goes away with the unmount (autoclear).
#[test]
fn loop_xfs_image_is_mounted_through_a_read_only_loop_device() {
    let dir = TempDir::new("expose-xfs");
    let image = xfs_image(&dir);
    let on = target(&dir, "exposed");
    let guard = Unmount(on.clone());

    let mounted = expose::mount_read_only(&image, &on).expect("the image mounts");
    let MountKind::LoopImage { device, fs_type } = &mounted.kind else {
        panic!("an image is mounted through a loop device: {mounted:?}");
    };
    assert_eq!(*fs_type, "xfs");
    assert_eq!(loop_devices_backed_by(&image), vec![device.clone()]);
    let name = device.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/sys/block/{name}/ro"))
            .unwrap()
            .trim(),
        "1",
        "the loop device itself is read-only"
    );
    assert_eq!(
        std::fs::read_to_string(on.join("hello.txt")).unwrap(),
        "hello\n"
    );
    assert!(on.join("sub").is_dir());
    assert_eq!(
        write_refused(&on.join("sub/new.txt")).raw_os_error(),
        Some(nix::libc::EROFS)
    );
    let size_before = std::fs::metadata(&image).unwrap().size();

    expose::unmount(&on).expect("the unmount works");
    assert!(!expose::is_mounted(&on));
    assert_eq!(
        no_loop_device_serves(&image),
        Vec::<PathBuf>::new(),
        "autoclear detaches the loop device at the unmount"
    );
    assert_eq!(std::fs::metadata(&image).unwrap().size(), size_before);
    drop(guard);
}

/// An ext4 image is mounted read-only too (with `noload`, no journal replay).
#[test]
fn loop_ext4_image_is_mounted_read_only() {
    let dir = TempDir::new("expose-ext4");
    let image = ext4_image(&dir);
    let on = target(&dir, "exposed");
    let guard = Unmount(on.clone());

    let mounted = expose::mount_read_only(&image, &on).expect("the image mounts");
    assert!(
        matches!(
            mounted.kind,
            MountKind::LoopImage {
                fs_type: "ext4",
                ..
            }
        ),
        "{mounted:?}"
    );
    assert_eq!(
        std::fs::read_to_string(on.join("hello.txt")).unwrap(),
        "hello ext4\n"
    );
    assert_eq!(
        write_refused(&on.join("hello.txt")).raw_os_error(),
        Some(nix::libc::EROFS)
    );
    expose::unmount(&on).expect("the unmount works");
    assert_eq!(no_loop_device_serves(&image), Vec::<PathBuf>::new());
    drop(guard);
}

/// An image with no known file system is refused before any loop device is taken; one whose
/// mount fails is detached again.
#[test]
fn loop_unknown_or_broken_images_leave_nothing_attached() {
    let dir = TempDir::new("expose-bad-image");
    let on = target(&dir, "exposed");
    let guard = Unmount(on.clone());

    let zeros = dir.join("zeros.img");
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let zeros = zeros.canonicalize().unwrap();
    let err = expose::mount_read_only(&zeros, &on).unwrap_err();
    assert_eq!(err.code, codes::VSS_E_VOLUME_NOT_SUPPORTED, "{err}");
    assert!(
        err.message.contains("xfs") && err.message.contains("blkid"),
        "the error names what would work: {err}"
    );
    assert!(loop_devices_backed_by(&zeros).is_empty());

    // An xfs magic with nothing behind it: the loop device is taken, the mount fails, and the
    // device must be detached again.
    let broken = dir.join("broken.img");
    let mut head = vec![0u8; 16 * MIB as usize];
    head[..4].copy_from_slice(b"XFSB");
    std::fs::write(&broken, head).unwrap();
    let broken = broken.canonicalize().unwrap();
    let err = expose::mount_read_only(&broken, &on).unwrap_err();
    assert_eq!(err.code, codes::VSS_E_UNEXPECTED_PROVIDER_ERROR, "{err}");
    assert!(err.message.contains("mount -t xfs"), "{err}");
    assert!(!expose::is_mounted(&on));
    assert_eq!(no_loop_device_serves(&broken), Vec::<PathBuf>::new());
    drop(guard);
}
