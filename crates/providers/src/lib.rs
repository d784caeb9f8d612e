//! Snapshot providers: the backends that cut shadow copies of volumes for the coordinator
//! (ROLE-1, PROV-1), each implementing `shadowcopy_coordinator::Provider`.
//!
//! - [`btrfs`]: [`BtrfsProvider`], read-only snapshots of btrfs subvolumes through the btrfs
//!   ioctls; the primary, fully testable provider (platform facts §5).
//! - [`loop_image`]: [`LoopImageProvider`], block-level copies of file systems on loop devices:
//!   freeze the set, reflink-clone each backing image, thaw (architecture intent §3).
//!
//! The coordinator knows no concrete provider (ARCHITECTURE.md, "Departures from the original
//! plan"); the daemon chooses which of these to load. Providers here run in the coordinator's
//! process (PROV-REG-1 asks for separate processes; the plug-in protocol comes later). The btrfs
//! provider never freezes a file system it snapshots; the loop-image provider freezes only
//! file systems on loop devices, never the root, the current directory's or the coordinator's.
//! Their tests run only on loop-device file systems made for them (architecture intent §8).

#[doc(hidden)]
pub mod bare;
pub mod btrfs;
mod catalog;
mod common;
pub mod expose;
pub mod loop_image;
pub mod reflink;

pub use btrfs::{BTRFS_PROVIDER_ID, BtrfsProvider, SnapshotDir};
pub use catalog::RecoveryReport;
pub use loop_image::{LOOP_IMAGE_PROVIDER_ID, LoopImageProvider};
pub use reflink::{REFLINK_PROVIDER_ID, REFLINK_PROVIDER_NAME, ReflinkProvider};
