//! A private mount namespace for a backup: the mounts it makes to read disk-image shadow copies
//! are seen by nothing else and vanish with the process, even when it is killed.
//!
//! It must be entered before any thread starts: a mount namespace belongs to a thread, and the
//! threads started later (tokio's, rustic's) inherit the one in force. The new namespace is a
//! slave of the host's, so mounts made on the host still appear in it, and nothing mounted in it
//! propagates back.

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

/// Enters a private mount namespace when running as root; otherwise (where mounting is not allowed
/// anyway) does nothing.
pub(crate) fn enter_private() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|errno| {
        anyhow::anyhow!("cannot enter a private mount namespace for the backup: {errno}")
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|errno| anyhow::anyhow!("cannot make the backup's mounts private: {errno}"))?;
    Ok(())
}
