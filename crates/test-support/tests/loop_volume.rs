//! `LoopVolume` on real loop devices (root only, like CI): each file system is made, mounted and
//! used, and nothing is left behind afterwards, whether the volume is dropped, closed, dropped
//! while busy or failed half-way through construction (architecture intent §8).

use std::io::Write;
use std::path::Path;
use std::process::Command;

use shadowcopy_test_support::loop_volume::{inode_of, mounted_fs_type, mounts_at_or_under};
use shadowcopy_test_support::{Footprint, FsKind, LoopVolume, MIB};

/// `losetup -a` lists every attached loop device with its backing file; the image must not be there.
fn losetup_lists(image: &Path) -> bool {
    let output = Command::new("losetup")
        .arg("-a")
        .output()
        .expect("losetup runs");
    String::from_utf8_lossy(&output.stdout).contains(image.to_str().unwrap())
}

fn mountinfo_lists(mount_point: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(mount_point.to_str().unwrap()))
}

fn assert_gone(footprint: &Footprint) {
    assert!(
        !losetup_lists(&footprint.image),
        "losetup -a still lists {}",
        footprint.image.display()
    );
    assert!(
        !mountinfo_lists(&footprint.mount_point),
        "{} is still in /proc/self/mountinfo",
        footprint.mount_point.display()
    );
    assert_eq!(footprint.leftovers(), Vec::<String>::new());
}

/// Dropping a btrfs volume unmounts it, detaches its loop device and deletes its files.
#[test]
fn loop_volume_btrfs_leaves_nothing_after_drop() {
    let volume = LoopVolume::btrfs(256 * MIB).expect("btrfs loop volume");
    let footprint = volume.footprint();
    assert_eq!(volume.kind(), FsKind::Btrfs);
    assert!(volume.device().starts_with("/dev"), "{:?}", volume.device());
    assert!(losetup_lists(volume.image()));
    assert!(mountinfo_lists(volume.mount_point()));
    assert_eq!(
        mounted_fs_type(volume.mount_point()).as_deref(),
        Some("btrfs")
    );
    // The mount point is the top-level subvolume; a created subvolume is a root too (inode 256).
    assert_eq!(inode_of(volume.mount_point()).unwrap(), 256);
    let subvolume = volume.create_subvolume("data").expect("subvolume");
    assert_eq!(inode_of(&subvolume).unwrap(), 256);
    std::fs::write(subvolume.join("file"), b"hello").unwrap();
    drop(volume);
    assert_gone(&footprint);
}

/// xfs (with reflink) and ext4 are made and mounted; `close` checks the cleanup and says so.
#[test]
fn loop_volume_xfs_and_ext4_close_cleanly() {
    let xfs = LoopVolume::xfs(FsKind::Xfs.min_size()).expect("xfs loop volume");
    let ext4 = LoopVolume::ext4(64 * MIB).expect("ext4 loop volume");
    assert_eq!(mounted_fs_type(xfs.mount_point()).as_deref(), Some("xfs"));
    assert_eq!(mounted_fs_type(ext4.mount_point()).as_deref(), Some("ext4"));
    assert_ne!(xfs.device(), ext4.device());
    std::fs::write(xfs.path("f"), b"x").unwrap();
    std::fs::write(ext4.path("f"), b"x").unwrap();
    let err = ext4.create_subvolume("nope").unwrap_err();
    assert!(err.message().contains("not btrfs"), "{err}");
    let (a, b) = (xfs.footprint(), ext4.footprint());
    xfs.close().expect("xfs cleaned up");
    ext4.close().expect("ext4 cleaned up");
    assert_gone(&a);
    assert_gone(&b);
}

/// A volume still in use when dropped is unmounted lazily (the last resort); once its last user
/// goes away the kernel lets go of the loop device too, and nothing is left.
#[test]
fn loop_volume_busy_at_drop_is_unmounted_lazily() {
    let volume = LoopVolume::ext4(32 * MIB).expect("ext4 loop volume");
    let footprint = volume.footprint();
    let mut busy = std::fs::File::create(volume.path("open")).unwrap();
    let closer = std::thread::spawn(move || {
        // Longer than the unmount retries, so that the lazy unmount is what happens.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        busy.write_all(b"still here").unwrap();
        drop(busy);
    });
    drop(volume);
    assert!(mounts_at_or_under(&footprint.mount_point).is_empty());
    closer.join().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !footprint.leftovers().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_gone(&footprint);
}

/// A construction that fails half-way (mkfs.btrfs refuses a 64 MiB device after the image was
/// attached) undoes what it did: the loop device is detached and the files are gone.
#[test]
fn loop_volume_failed_construction_leaves_nothing() {
    let err = LoopVolume::btrfs(64 * MIB).unwrap_err();
    assert!(err.message().contains("mkfs.btrfs"), "{err}");
    let footprint = err
        .footprint()
        .expect("the error says where the volume was");
    assert!(footprint.device.is_some(), "the image was attached first");
    assert_gone(footprint);
}
