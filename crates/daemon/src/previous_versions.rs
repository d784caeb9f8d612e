//! Previous Versions: the client-accessible shadow copies (CTX-1) of shared directories, shown to
//! SMB clients through Samba's `vfs_shadow_copy2`, so that Windows users see them on the
//! Previous Versions tab of a file or folder.
//!
//! For each `[[previous_versions]]` entry of shadowcopyd.toml (a shared directory `path` and its
//! view directory `snapdir`), shadowcopyd keeps in `snapdir` one read-only view per client-accessible
//! shadow copy that holds the directory, named `@GMT-YYYY.MM.DD-HH.MM.SS` after the copy's
//! creation time in UTC: the names `vfs_shadow_copy2` reads with
//! `shadow:format = @GMT-%Y.%m.%d-%H.%M.%S` and `shadow:localtime = no`. A view shows the shared
//! directory as it was, that is the directory inside the copy that stood for `path`
//! (`<snapshot_path>/<path relative to the copy's volume>`), so `shadow:basedir = <path>` maps a
//! file of the share straight to `<snapdir>/<@GMT-...>/<file>` whichever volume the copy is of.
//! [`PreviousVersionsShare::smb_conf`] prints the share section that says so.
//!
//! Choices, and why:
//! - Not ExposeSnapshot: EXP-2 forbids exposing client-accessible copies at all; previous versions
//!   are the way their users reach them (CTX-1). A view is not an exposure: listings do not show
//!   it as one and it never keeps its copy from being deleted.
//! - Read-only bind mounts, not symbolic links: the copies live in directories only root may enter
//!   (`<volume>/.shadowcopy` is 0700, SNAP-3), and smbd opens files as the connected user, who
//!   could not follow a link through them; a bind mount of the directory inside the copy shows it
//!   with its own permissions and nothing above it. Read-only, nosuid and nodev, like an exposure
//!   (EXP-4, SEC-7).
//! - Views are derived state with no table of their own: [`PreviousVersions::sync`] works out from
//!   the providers' copies which views each `snapdir` should hold and makes it so (mounts new
//!   ones, unmounts those whose copy is gone, replaces one that shows another directory). It runs
//!   at start, after the providers' catalog recovery (copies deleted as orphans lose their views,
//!   and views a reboot lost come back), after every successful DoSnapshotSet (the new copies, and
//!   the oldest client-accessible copies CFG-1 deleted) and after every DeleteSnapshots.
//! - Deleting a copy does not wait for its view: btrfs deletes a bind-mounted snapshot, after
//!   which the view shows an empty, deleted directory, so a deleted copy is never readable through
//!   it (SNAP-3), and the sync that follows unmounts it. A view a client keeps busy is detached
//!   (MNT_DETACH): it leaves the `snapdir` at once, and files already open stay readable until
//!   they are closed.
//! - The names have one-second resolution, as Samba's and Windows' do: of two copies made in the
//!   same second, the newer is shown.
//! - Views are mounts and outlive shadowcopyd, so Samba keeps showing previous versions while the
//!   daemon restarts. Only the `@GMT-...` names in a `snapdir` are shadowcopyd's; anything else
//!   there is left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MntFlags;
use serde::Deserialize;
use shadowcopy_coordinator::{Coordinator, SnapshotRecord};
use shadowcopy_metadata::enums::{SnapshotAttributes, SnapshotContext, SnapshotState};
use shadowcopy_metadata::{SnapshotId, VssTimestamp};
use shadowcopy_providers::expose;

/// Where the views of a share go when its entry names no `snapdir`: a directory per share below
/// this one, named after its path (`/srv/share` -> `srv-share`). Under /run because views are
/// rebuilt at every start; readable by everyone because smbd opens them as the connected user.
pub const DEFAULT_SNAPDIR_ROOT: &str = "/run/shadowcopy/previous-versions";

/// The `shadow:format` of the view names: `@GMT-` and the UTC creation time to the second.
pub const SHADOW_FORMAT: &str = "@GMT-%Y.%m.%d-%H.%M.%S";

/// One `[[previous_versions]]` entry of shadowcopyd.toml: a shared directory whose
/// client-accessible shadow copies SMB clients see as Previous Versions (docs/previous-versions.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousVersionsShare {
    /// The shared directory, exactly as the smb.conf share's `path` names it: absolute, without
    /// `.`, `..` or symbolic links. It is shown as it was in every client-accessible copy of the
    /// volume (btrfs subvolume) that holds it.
    pub path: PathBuf,
    /// The directory shadowcopyd fills with the views, the share's `shadow:snapdir`: absolute,
    /// outside `path`, and its own for each entry. Default:
    /// `/run/shadowcopy/previous-versions/<path, systemd-escaped>`.
    pub snapdir: Option<PathBuf>,
}

impl PreviousVersionsShare {
    /// The view directory: `snapdir`, or the default below [`DEFAULT_SNAPDIR_ROOT`].
    pub fn snapdir(&self) -> PathBuf {
        self.snapdir.clone().unwrap_or_else(|| {
            Path::new(DEFAULT_SNAPDIR_ROOT).join(expose::volume_key(&self.path.to_string_lossy()))
        })
    }

    /// The smb.conf section of a share `name` that shows these previous versions, ready to paste
    /// into /etc/samba/smb.conf. The directories in which `providers` keep shadow copies inside
    /// each volume (the btrfs provider's `.shadowcopy`, the reflink provider's
    /// `.shadowcopy-files`) are hidden from clients (`veto files`), since they are there when the
    /// share is the root of a volume.
    pub fn smb_conf(&self, name: &str, providers: &crate::config::ProvidersConfig) -> String {
        let mut copy_areas = Vec::new();
        let btrfs_dir = &providers.btrfs_snapshot_dir;
        if providers.btrfs
            && !btrfs_dir.is_absolute()
            && let Some(Component::Normal(first)) = btrfs_dir.components().next()
        {
            copy_areas.push(first.to_string_lossy().into_owned());
        }
        if providers.reflink {
            copy_areas.push(shadowcopy_providers::reflink::DEFAULT_COPY_AREA.to_owned());
        }
        let path = self.path.display();
        let mut text = format!(
            "# Previous Versions of {path}, kept by shadowcopyd ([[previous_versions]] in \
             shadowcopyd.toml;\n\
             # docs/previous-versions.md). Add the share's other settings (valid users, read \
             only, ...).\n\
             [{name}]\n    path = {path}\n    vfs objects = shadow_copy2\n    \
             shadow:snapdir = {snapdir}\n    shadow:basedir = {path}\n    \
             shadow:format = {SHADOW_FORMAT}\n    shadow:localtime = no\n    shadow:sort = desc\n",
            snapdir = self.snapdir().display(),
        );
        if !copy_areas.is_empty() {
            let names: String = copy_areas.iter().map(|area| format!("/{area}")).collect();
            text.push_str(
                "    # Where shadow copies are kept, if inside the share: not for clients.\n",
            );
            text.push_str(&format!("    veto files = {names}/\n"));
        }
        text
    }
}

/// Whether `path` is absolute and has no `.` or `..` (a path Samba and the mount table spell the
/// same way).
fn is_plain_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Checks the `[[previous_versions]]` entries; a refusal is (setting, value, rule) for the
/// configuration's range error.
pub(crate) fn check_config(
    shares: &[PreviousVersionsShare],
) -> Result<(), (String, String, String)> {
    let mut seen: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (index, share) in shares.iter().enumerate() {
        let key = |field: &str| format!("previous_versions[{index}].{field}");
        let shown = |path: &Path| format!("{:?}", path.display().to_string());
        if !is_plain_absolute(&share.path) || share.path == Path::new("/") {
            return Err((
                key("path"),
                shown(&share.path),
                "must be an absolute path below / without `.` or `..`, spelt as the smb.conf \
                 share's `path`, for example \"/srv/share\""
                    .into(),
            ));
        }
        let snapdir = share.snapdir();
        if !is_plain_absolute(&snapdir) {
            return Err((
                key("snapdir"),
                shown(&snapdir),
                "must be an absolute path without `.` or `..`, for example \
                 \"/run/shadowcopy/previous-versions/srv-share\""
                    .into(),
            ));
        }
        if snapdir.starts_with(&share.path) || share.path.starts_with(&snapdir) {
            return Err((
                key("snapdir"),
                shown(&snapdir),
                format!(
                    "must lie outside the shared directory {} (and not contain it): views inside \
                     the share would show up in it and in every later shadow copy of it; leave \
                     snapdir out for the default under {DEFAULT_SNAPDIR_ROOT}",
                    share.path.display()
                ),
            ));
        }
        for (path, other) in &seen {
            if *path == share.path {
                return Err((
                    key("path"),
                    shown(&share.path),
                    "is already the path of an earlier [[previous_versions]] entry; give each \
                     shared directory one entry"
                        .into(),
                ));
            }
            if snapdir.starts_with(other) || other.starts_with(&snapdir) {
                return Err((
                    key("snapdir"),
                    shown(&snapdir),
                    format!(
                        "overlaps the snapdir {} of the entry for {}; each shared directory needs \
                         a view directory of its own",
                        other.display(),
                        path.display()
                    ),
                ));
            }
        }
        seen.push((share.path.clone(), snapdir));
    }
    Ok(())
}

/// The view name of a copy created at `created`: `@GMT-YYYY.MM.DD-HH.MM.SS` in UTC
/// ([`SHADOW_FORMAT`]).
pub(crate) fn view_name(created: VssTimestamp) -> String {
    let seconds = i64::try_from(created.to_unix_nanos().div_euclid(1_000_000_000)).unwrap_or(0);
    let (days, time) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "@GMT-{year:04}.{month:02}.{day:02}-{:02}.{:02}.{:02}",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether `name` has the form of a view name, `@GMT-dddd.dd.dd-dd.dd.dd`: only those entries of
/// a snapdir are shadowcopyd's.
fn is_view_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("@GMT-") else {
        return false;
    };
    let shape = "dddd.dd.dd-dd.dd.dd";
    rest.len() == shape.len()
        && rest
            .bytes()
            .zip(shape.bytes())
            .all(|(byte, want)| match want {
                b'd' => byte.is_ascii_digit(),
                other => byte == other,
            })
}

/// One view a snapdir should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    /// The client-accessible copy it shows.
    snapshot: SnapshotId,
    /// The copy's creation time (the newer of two copies of one second wins).
    created: VssTimestamp,
    /// The directory inside the copy that stood for the shared directory.
    target: PathBuf,
}

/// The views a shared directory `share` should have, by name: one per CREATED client-accessible
/// copy whose volume holds it. A copy holds the directory when its volume is the directory or
/// above it on the same file system and btrfs subvolume (same st_dev): a copy of a volume has
/// nothing of a file system mounted below it, nor of a nested subvolume. Copies that are not
/// directories (disk images) are left out.
fn plan(share: &Path, records: &[SnapshotRecord]) -> BTreeMap<String, View> {
    let mut views: BTreeMap<String, View> = BTreeMap::new();
    let Ok(share_device) = std::fs::metadata(share).map(|m| m.dev()) else {
        return views;
    };
    for record in records {
        if record.state != SnapshotState::Created
            || !record
                .attributes
                .contains(SnapshotAttributes::CLIENT_ACCESSIBLE)
        {
            continue;
        }
        let Some(copy) = record.snapshot_path.as_deref() else {
            continue;
        };
        let volume = Path::new(&record.volume);
        let Ok(relative) = share.strip_prefix(volume) else {
            continue;
        };
        if std::fs::metadata(volume).map(|m| m.dev()).ok() != Some(share_device) {
            continue;
        }
        let target = Path::new(copy).join(relative);
        if !target.is_dir() {
            continue;
        }
        let view = View {
            snapshot: record.snapshot_id,
            created: record.created,
            target,
        };
        let name = view_name(record.created);
        match views.get(&name) {
            Some(shown) if (shown.created, shown.snapshot) >= (view.created, view.snapshot) => {}
            _ => {
                views.insert(name, view);
            }
        }
    }
    views
}

/// What one sync did to one snapdir.
#[derive(Debug, Default, PartialEq, Eq)]
struct Applied {
    /// Views mounted now.
    added: Vec<String>,
    /// Views unmounted and removed.
    removed: Vec<String>,
    /// Views left as they were.
    kept: usize,
    /// What could not be done, said for the log.
    problems: Vec<String>,
}

/// Whether two paths are the same directory (device and inode): a mounted view shows its target.
fn same_directory(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Unmounts whatever is mounted on `view` (several mounts if a crash stacked them), detaching it
/// when a client keeps it busy.
fn unmount_view(view: &Path) -> Result<(), String> {
    for _ in 0..8 {
        match nix::mount::umount2(view, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            // Not a mount point (any more).
            Err(Errno::EINVAL) => return Ok(()),
            Err(Errno::EBUSY) => {
                nix::mount::umount2(view, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    .map_err(|errno| {
                        format!("cannot detach the view {}: {errno}", view.display())
                    })?;
            }
            Err(errno) => {
                return Err(format!(
                    "cannot unmount the view {}: {errno}",
                    view.display()
                ));
            }
        }
    }
    Ok(())
}

/// Makes `snapdir` hold exactly the views of `desired`.
fn apply(snapdir: &Path, desired: &BTreeMap<String, View>) -> Applied {
    let mut applied = Applied::default();
    if let Err(error) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(snapdir)
    {
        applied.problems.push(format!(
            "cannot create the view directory {}: {error}; check `snapdir` of the \
             [[previous_versions]] entry",
            snapdir.display()
        ));
        return applied;
    }
    // The mount table spells it canonically.
    let snapdir = snapdir
        .canonicalize()
        .unwrap_or_else(|_| snapdir.to_path_buf());
    let view_in = |path: &Path| {
        (path.parent() == Some(snapdir.as_path()))
            .then(|| path.file_name()?.to_str().map(str::to_owned))
            .flatten()
            .filter(|name| is_view_name(name))
    };
    let mounted: BTreeSet<String> = expose::mount_points()
        .iter()
        .filter_map(|mount| view_in(mount))
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(&snapdir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| view_in(&entry.path()))
        .collect();
    let mut kept = BTreeSet::new();
    for name in mounted.union(&present) {
        let path = snapdir.join(name);
        let wanted = desired.get(name);
        let is_mounted = mounted.contains(name);
        if is_mounted && wanted.is_some_and(|view| same_directory(&path, &view.target)) {
            kept.insert(name.clone());
            continue;
        }
        if is_mounted && let Err(problem) = unmount_view(&path) {
            applied.problems.push(problem);
            continue;
        }
        if wanted.is_none() {
            match std::fs::remove_dir(&path) {
                Ok(()) => applied.removed.push(name.clone()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    applied.removed.push(name.clone());
                }
                Err(error) => applied.problems.push(format!(
                    "left {} alone: it is not a view of a shadow copy any more but cannot be \
                     removed ({error}); remove it by hand if it is not yours",
                    path.display()
                )),
            }
        }
    }
    applied.kept = kept.len();
    for (name, view) in desired {
        if kept.contains(name) {
            continue;
        }
        let path = snapdir.join(name);
        if let Err(error) = std::fs::DirBuilder::new().mode(0o755).create(&path)
            && error.kind() != std::io::ErrorKind::AlreadyExists
        {
            applied.problems.push(format!(
                "cannot create the view {} of shadow copy {}: {error}",
                path.display(),
                view.snapshot
            ));
            continue;
        }
        match expose::mount_read_only(&view.target, &path) {
            Ok(_) => applied.added.push(name.clone()),
            Err(error) => applied.problems.push(format!(
                "cannot show shadow copy {} as {}: {}",
                view.snapshot,
                path.display(),
                error.message
            )),
        }
    }
    applied
}

/// The views of every configured share, kept in step with the client-accessible copies.
pub(crate) struct PreviousVersions {
    /// Each share's directory and view directory.
    shares: Vec<(PathBuf, PathBuf)>,
    /// One sync at a time, so that a later one always sees the later state.
    running: tokio::sync::Mutex<()>,
}

impl PreviousVersions {
    /// The views of these `[[previous_versions]]` entries; nothing is touched until
    /// [`PreviousVersions::sync`].
    pub(crate) fn new(shares: &[PreviousVersionsShare]) -> Self {
        PreviousVersions {
            shares: shares
                .iter()
                .map(|share| (share.path.clone(), share.snapdir()))
                .collect(),
            running: tokio::sync::Mutex::default(),
        }
    }

    /// Makes every share's snapdir hold one view per client-accessible copy that holds the share,
    /// and nothing else of the `@GMT-...` form. When the copies cannot be listed, the views stay
    /// as they are: tearing them down would hide copies that still exist. Problems are logged;
    /// they never fail the call that triggered the sync.
    pub(crate) async fn sync(&self, coordinator: &Coordinator) {
        if self.shares.is_empty() {
            return;
        }
        let _one_at_a_time = self.running.lock().await;
        let records = match coordinator.snapshots(SnapshotContext::All).await {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "cannot list the shadow copies; the previous versions of the shares stay as they are");
                return;
            }
        };
        let shares = self.shares.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            shares
                .into_iter()
                .map(|(path, snapdir)| {
                    let share_exists = path.is_dir();
                    let applied = apply(&snapdir, &plan(&path, &records));
                    (path, snapdir, share_exists, applied)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, "the previous-versions task of shadowcopyd failed");
                return;
            }
        };
        for (path, snapdir, share_exists, applied) in outcome {
            if !share_exists {
                tracing::warn!(share = %path.display(), "the shared directory of a [[previous_versions]] entry is not a directory; it has no previous versions");
            }
            for problem in &applied.problems {
                tracing::error!(share = %path.display(), "previous versions: {problem}");
            }
            if !applied.added.is_empty() || !applied.removed.is_empty() {
                tracing::info!(
                    share = %path.display(),
                    snapdir = %snapdir.display(),
                    added = ?applied.added,
                    removed = ?applied.removed,
                    shown = applied.kept + applied.added.len(),
                    "previous versions updated"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> VssTimestamp {
        VssTimestamp::from_unix_nanos(i128::from(seconds) * 1_000_000_000 + 999_999_999)
    }

    /// The names are vfs_shadow_copy2's default format in UTC, to the second (rounded down).
    #[test]
    fn view_names_are_gmt_tokens() {
        assert_eq!(view_name(at(0)), "@GMT-1970.01.01-00.00.00");
        // 2024-02-29 23:59:59 UTC, a leap day.
        assert_eq!(view_name(at(1_709_251_199)), "@GMT-2024.02.29-23.59.59");
        // 2000-03-01 00:00:00 UTC, after a century leap day.
        assert_eq!(view_name(at(951_868_800)), "@GMT-2000.03.01-00.00.00");
        assert_eq!(view_name(at(4_102_444_800)), "@GMT-2100.01.01-00.00.00");
        for name in ["@GMT-2024.02.29-23.59.59", "@GMT-1970.01.01-00.00.00"] {
            assert!(is_view_name(name), "{name}");
        }
        for name in [
            "@GMT-2024.02.29-23.59",
            "@GMT-2024.02.29-23.59.5x",
            "GMT-2024.02.29-23.59.59",
            "@GMT-2024-02-29-23.59.59",
            "notes",
        ] {
            assert!(!is_view_name(name), "{name}");
        }
    }

    fn record(
        volume: &Path,
        copy: &Path,
        seconds: i64,
        context: SnapshotContext,
    ) -> SnapshotRecord {
        SnapshotRecord {
            snapshot_id: SnapshotId::new_random(),
            set_id: shadowcopy_metadata::SnapshotSetId::new_random(),
            volume: volume.display().to_string(),
            snapshot_path: Some(copy.display().to_string()),
            state: SnapshotState::Created,
            attributes: context.attributes(),
            created: at(seconds),
            provider_id: "30401de5-983a-46fd-9ceb-af8edf8cd8ff".parse().unwrap(),
        }
    }

    /// A share below its volume is shown from the matching directory of each client-accessible
    /// copy; other contexts, unfinished copies, copies of other volumes and copies without the
    /// directory are not shown; of two copies of one second the newer is.
    #[test]
    fn plans_views_from_client_accessible_copies() {
        let dir = std::env::temp_dir().join(format!("sc-pv-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let volume = dir.join("volume");
        let share = volume.join("shared/docs");
        std::fs::create_dir_all(&share).unwrap();
        for copy in ["a", "b", "c", "other"] {
            std::fs::create_dir_all(dir.join(copy).join("shared/docs")).unwrap();
        }
        std::fs::create_dir_all(dir.join("no-docs/shared")).unwrap();
        let ca = SnapshotContext::ClientAccessible;
        let first = record(&volume, &dir.join("a"), 1_000, ca);
        let second = record(&volume, &dir.join("b"), 2_000, ca);
        // Made earlier in the same second as `second`, so hidden by it.
        let mut same_second = record(&volume, &dir.join("c"), 2_000, ca);
        same_second.created = VssTimestamp(second.created.0 - 1);
        let persistent = record(
            &volume,
            &dir.join("other"),
            3_000,
            SnapshotContext::NasRollback,
        );
        let mut preparing = record(&volume, &dir.join("other"), 4_000, ca);
        preparing.state = SnapshotState::Prepared;
        let elsewhere = record(&dir.join("a"), &dir.join("other"), 5_000, ca);
        let without = record(&volume, &dir.join("no-docs"), 6_000, ca);
        let records = [
            first.clone(),
            second.clone(),
            same_second,
            persistent,
            preparing,
            elsewhere,
            without,
        ];
        let views = plan(&share, &records);
        assert_eq!(
            views,
            BTreeMap::from([
                (
                    view_name(first.created),
                    View {
                        snapshot: first.snapshot_id,
                        created: first.created,
                        target: dir.join("a/shared/docs"),
                    }
                ),
                (
                    view_name(second.created),
                    View {
                        snapshot: second.snapshot_id,
                        created: second.created,
                        target: dir.join("b/shared/docs"),
                    }
                ),
            ])
        );
        let mut reversed = records.clone();
        reversed.reverse();
        assert_eq!(
            plan(&share, &reversed),
            views,
            "whatever the order of the records"
        );
        assert!(plan(&dir.join("missing"), &records).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn parse(text: &str) -> Result<crate::DaemonConfig, String> {
        crate::DaemonConfig::parse(Path::new("t.toml"), text).map_err(|e| e.to_string())
    }

    /// Entries are read with a default snapdir per share, and mistakes name the entry and field.
    #[test]
    fn entries_are_read_and_checked() {
        let config = parse(
            "[[previous_versions]]\npath = \"/srv/share\"\n\
             [[previous_versions]]\npath = \"/srv/other\"\nsnapdir = \"/srv/.versions/other\"\n",
        )
        .unwrap();
        assert_eq!(
            config.previous_versions[0].snapdir(),
            Path::new("/run/shadowcopy/previous-versions/srv-share")
        );
        assert_eq!(
            config.previous_versions[1].snapdir(),
            Path::new("/srv/.versions/other")
        );
        assert!(crate::DaemonConfig::default().previous_versions.is_empty());

        for (text, says) in [
            ("path = \"srv/share\"", "previous_versions[0].path"),
            ("path = \"/srv/../etc\"", "previous_versions[0].path"),
            ("path = \"/\"", "previous_versions[0].path"),
            (
                "path = \"/srv/share\"\nsnapdir = \"/srv/share/.snapshots\"",
                "must lie outside the shared directory",
            ),
            (
                "path = \"/srv/share\"\nsnapdir = \"/srv\"",
                "must lie outside the shared directory",
            ),
            (
                "path = \"/srv/share\"\nsnapdir = \"versions\"",
                "previous_versions[0].snapdir",
            ),
            ("path = \"/srv/share\"\nsnap_dir = \"/x\"", "snap_dir"),
        ] {
            let message = parse(&format!("[[previous_versions]]\n{text}\n")).unwrap_err();
            assert!(message.contains(says), "{text}: {message}");
        }
        let twice = "[[previous_versions]]\npath = \"/srv/share\"\n".repeat(2);
        let message = parse(&twice).unwrap_err();
        assert!(message.contains("previous_versions[1].path"), "{message}");
        let overlapping = "[[previous_versions]]\npath = \"/srv/a\"\nsnapdir = \"/v\"\n\
                           [[previous_versions]]\npath = \"/srv/b\"\nsnapdir = \"/v/b\"\n";
        let message = parse(overlapping).unwrap_err();
        assert!(message.contains("overlaps the snapdir /v"), "{message}");
    }

    /// The printed section names the share's path as its basedir and the views as its snapdir.
    #[test]
    fn smb_conf_section() {
        let share = PreviousVersionsShare {
            path: "/srv/share".into(),
            snapdir: None,
        };
        let providers = crate::config::ProvidersConfig::default();
        let text = share.smb_conf("share", &providers);
        for line in [
            "[share]",
            "    path = /srv/share",
            "    vfs objects = shadow_copy2",
            "    shadow:snapdir = /run/shadowcopy/previous-versions/srv-share",
            "    shadow:basedir = /srv/share",
            "    shadow:format = @GMT-%Y.%m.%d-%H.%M.%S",
            "    shadow:localtime = no",
            "    veto files = /.shadowcopy/.shadowcopy-files/",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let none = crate::config::ProvidersConfig {
            reflink: false,
            btrfs_snapshot_dir: "/pool/snapshots".into(),
            ..providers
        };
        assert!(!share.smb_conf("s", &none).contains("veto files"));
    }
}
