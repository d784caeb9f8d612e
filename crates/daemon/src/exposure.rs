//! The exposure table: which shadow copies shadowcopyd has mounted read-only where (EXP-1, EXP-4),
//! kept in `<state_dir>/exposures.json` so that exposures survive a daemon restart.
//!
//! An exposure is a mount, and a mount outlives the daemon; the table is how a restarted daemon
//! knows which mounts are its own. At start, [`ExposureTable::reconcile`] drops entries whose
//! mount is gone (someone unmounted it by hand) and unmounts entries whose shadow copy no longer
//! exists, so that a deleted copy never stays readable (SNAP-3).
//!
//! Every change is written to a temporary file, synced and renamed over the table, so a crash
//! leaves the old table or the new one, never half of one. One lock serialises expose and
//! unexpose calls across their mount and unmount, so two calls never race for one directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shadowcopy_coordinator::{Coordinator, CoordinatorError, SnapshotRecord};
use shadowcopy_metadata::SnapshotId;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{SnapshotAttributes, SnapshotContext, SnapshotState};
use shadowcopy_protocol::v1;
use shadowcopy_providers::expose;

use crate::state::Daemon;

/// The table file's name inside the state directory.
const TABLE_FILE: &str = "exposures.json";

/// The table file's format version; a file of another version is set aside, not half-read.
const TABLE_VERSION: u32 = 1;

/// One exposed shadow copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Exposure {
    /// The exposed shadow copy.
    pub(crate) snapshot_id: SnapshotId,
    /// Its original volume (mount point).
    pub(crate) volume: String,
    /// The exposed name: the directory it is mounted on (canonical).
    pub(crate) directory: PathBuf,
    /// The exposed subdirectory; always `None` for local exposure, which shows the whole volume
    /// (EXP-1).
    pub(crate) path_from_root: Option<String>,
    /// Whether shadowcopyd made the directory, and so removes it at unexpose.
    pub(crate) created_directory: bool,
    /// What was mounted: the shadow copy's device object.
    pub(crate) device_object: PathBuf,
}

/// The file's layout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    version: u32,
    exposures: Vec<Exposure>,
}

/// The exposure table and where it lives.
pub(crate) struct ExposureTable {
    /// `<state_dir>/exposures.json`.
    file: PathBuf,
    /// The default exposure root (`service.expose_dir`).
    expose_dir: PathBuf,
    /// The exposures, by shadow copy. A tokio lock, because it is held across mounts.
    entries: tokio::sync::Mutex<BTreeMap<SnapshotId, Exposure>>,
}

fn failure(code: shadowcopy_metadata::codes::ErrorCode, message: String) -> CoordinatorError {
    CoordinatorError::new(code, message)
}

/// Runs mount work on the blocking pool; the syscalls can wait on the disk.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CoordinatorError> + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(failure(
            codes::VSS_E_UNEXPECTED,
            format!("a mount task of shadowcopyd failed: {e}"),
        ))
    })
}

fn from_provider(error: shadowcopy_coordinator::ProviderError) -> CoordinatorError {
    CoordinatorError::new(error.code, error.message)
}

/// Removes a directory shadowcopyd made, if it is empty; never anything else.
fn remove_created(directory: &Path) {
    if let Err(error) = std::fs::remove_dir(directory)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(directory = %directory.display(), %error, "cannot remove an exposure directory shadowcopyd made");
    }
}

impl ExposureTable {
    /// An empty table kept in `state_dir`, exposing by default under `expose_dir`. Nothing is read
    /// until [`ExposureTable::reconcile`].
    pub(crate) fn new(state_dir: &Path, expose_dir: &Path) -> Self {
        ExposureTable {
            file: state_dir.join(TABLE_FILE),
            expose_dir: expose_dir.to_path_buf(),
            entries: tokio::sync::Mutex::default(),
        }
    }

    /// Loads the table and squares it with the mounts and the providers' shadow copies; called
    /// once at start, after the providers are loaded. Entries whose mount is gone are dropped;
    /// entries whose shadow copy no provider knows any more are unmounted and dropped (SNAP-3).
    /// When the providers cannot be asked, every mounted entry is kept: unmounting a copy that
    /// still exists would break a backup tool that reads it.
    pub(crate) async fn reconcile(&self, coordinator: &Coordinator) {
        let loaded = match self.read() {
            Ok(loaded) => loaded,
            Err(message) => {
                tracing::error!("{message}");
                Vec::new()
            }
        };
        let known = match coordinator.snapshots(SnapshotContext::All).await {
            Ok(records) => Some(
                records
                    .into_iter()
                    .map(|r| r.snapshot_id)
                    .collect::<std::collections::BTreeSet<_>>(),
            ),
            Err(error) => {
                tracing::warn!(%error, "cannot list the shadow copies to check the exposures; keeping every mounted one");
                None
            }
        };
        let mut entries = self.entries.lock().await;
        for exposure in loaded {
            let directory = exposure.directory.clone();
            let id = exposure.snapshot_id;
            if !expose::is_mounted(&directory) {
                tracing::info!(snapshot = %id, directory = %directory.display(), "exposure dropped: nothing is mounted there any more");
                if exposure.created_directory {
                    remove_created(&directory);
                }
                continue;
            }
            if known.as_ref().is_some_and(|known| !known.contains(&id)) {
                let target = directory.clone();
                match blocking(move || expose::unmount(&target).map_err(from_provider)).await {
                    Ok(()) => {
                        tracing::info!(snapshot = %id, directory = %directory.display(), "unexposed: the shadow copy no longer exists");
                        if exposure.created_directory {
                            remove_created(&directory);
                        }
                        continue;
                    }
                    Err(error) => {
                        // Kept, so that a later unexpose can retry; the copy is gone from the
                        // providers but its mount is busy.
                        tracing::error!(snapshot = %id, directory = %directory.display(), %error, "cannot unexpose a shadow copy that no longer exists");
                    }
                }
            }
            entries.insert(id, exposure);
        }
        if let Err(error) = self.save(&entries) {
            tracing::warn!(%error, "cannot rewrite the exposure table after the start-up check");
        }
        tracing::info!(exposed = entries.len(), table = %self.file.display(), "exposure table loaded");
    }

    /// Reads the file; a missing file is an empty table. A damaged file or one of another version
    /// is renamed aside (so that it is not overwritten and can be looked at) and gives an empty
    /// table: shadowcopyd still starts, and the mounts it names can be found with `findmnt`.
    fn read(&self) -> Result<Vec<Exposure>, String> {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(format!(
                    "cannot read the exposure table {}: {error}; shadow copies exposed before \
                     the restart are still mounted (`findmnt | grep shadowcopy`) but unknown to \
                     shadowcopyd",
                    self.file.display()
                ));
            }
        };
        match serde_json::from_str::<TableFile>(&text) {
            Ok(table) if table.version == TABLE_VERSION => Ok(table.exposures),
            outcome => {
                let why = match outcome {
                    Ok(table) => format!("version {} instead of {TABLE_VERSION}", table.version),
                    Err(error) => error.to_string(),
                };
                let aside = self.file.with_extension("json.unreadable");
                let _ = std::fs::rename(&self.file, &aside);
                Err(format!(
                    "the exposure table {} is unreadable ({why}); it was moved to {} and \
                     shadowcopyd starts with no exposures. Shadow copies exposed before are still \
                     mounted: unmount them with `umount` (`findmnt | grep shadowcopy` lists them)",
                    self.file.display(),
                    aside.display()
                ))
            }
        }
    }

    /// Writes the table atomically: temporary file, fsync, rename, fsync of the directory.
    fn save(&self, entries: &BTreeMap<SnapshotId, Exposure>) -> std::io::Result<()> {
        let dir = self.file.parent().unwrap_or(Path::new("/"));
        // The state directory holds catalogs too; only root reads it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let table = TableFile {
            version: TABLE_VERSION,
            exposures: entries.values().cloned().collect(),
        };
        let text = serde_json::to_string_pretty(&table).map_err(std::io::Error::other)?;
        let temporary = self.file.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, &self.file)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// The exposure of `snapshot`, if it is exposed: for DeleteSnapshots with force and for revert,
    /// which must unexpose a copy first.
    #[allow(dead_code)] // Until delete --force and revert call it.
    pub(crate) async fn exposure_of(&self, snapshot: SnapshotId) -> Option<Exposure> {
        self.entries.lock().await.get(&snapshot).cloned()
    }

    /// Every exposure, by shadow copy.
    pub(crate) async fn all(&self) -> BTreeMap<SnapshotId, Exposure> {
        self.entries.lock().await.clone()
    }

    /// Mounts `record`'s device object read-only on `directory`, or on the volume's stable
    /// directory `<expose_dir>/<volume key>` when `None` (EXP-4), and records it. The caller has
    /// checked EXP-2; this checks that the copy and the directory are free.
    pub(crate) async fn expose_locally(
        &self,
        record: &SnapshotRecord,
        directory: Option<PathBuf>,
    ) -> Result<Exposure, CoordinatorError> {
        let id = record.snapshot_id;
        let mut entries = self.entries.lock().await;
        if let Some(existing) = entries.get(&id) {
            return Err(failure(
                codes::VSS_E_OBJECT_ALREADY_EXISTS,
                format!(
                    "shadow copy {id} is already exposed at {}; `shadowcopy unexpose {id}` first \
                     to expose it elsewhere",
                    existing.directory.display()
                ),
            ));
        }
        let Some(device_object) = record.snapshot_path.clone().map(PathBuf::from) else {
            return Err(failure(
                codes::VSS_E_BAD_STATE,
                format!(
                    "shadow copy {id} of {} has no device object yet (state {}); expose it once \
                     its set is complete",
                    record.volume, record.state
                ),
            ));
        };
        let (target, default) = match directory {
            Some(directory) => (directory, false),
            None => (
                self.expose_dir
                    .join(shadowcopy_providers::expose::volume_key(&record.volume)),
                true,
            ),
        };
        if !target.is_absolute() {
            return Err(failure(
                codes::E_INVALIDARG,
                format!(
                    "cannot expose shadow copy {id} on {}: the directory must be an absolute path",
                    target.display()
                ),
            ));
        }
        let resolved = target.canonicalize().unwrap_or_else(|_| target.clone());
        if let Some(other) = entries
            .values()
            .find(|e| e.directory == resolved || e.directory == target)
        {
            let hint = if default {
                format!(
                    "{} is where {} is always exposed; `shadowcopy unexpose {}` first, or expose \
                     this copy on a directory of your own",
                    target.display(),
                    record.volume,
                    other.snapshot_id
                )
            } else {
                format!(
                    "`shadowcopy unexpose {}` first, or choose another empty directory",
                    other.snapshot_id
                )
            };
            return Err(failure(
                codes::VSS_E_OBJECT_ALREADY_EXISTS,
                format!(
                    "cannot expose shadow copy {id} on {}: shadow copy {} of {} is exposed there; \
                     {hint}",
                    target.display(),
                    other.snapshot_id,
                    other.volume
                ),
            ));
        }
        let mut made_now = false;
        if default {
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&self.expose_dir)
                .and_then(
                    |()| match std::fs::DirBuilder::new().mode(0o755).create(&target) {
                        Ok(()) => {
                            made_now = true;
                            Ok(())
                        }
                        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                        Err(error) => Err(error),
                    },
                );
            if let Err(error) = made {
                return Err(failure(
                    codes::VSS_E_UNEXPECTED,
                    format!(
                        "cannot create the exposure directory {}: {error}; check \
                         `service.expose_dir` in shadowcopyd.toml",
                        target.display()
                    ),
                ));
            }
        }
        let (source, on) = (device_object.clone(), target.clone());
        let mounted =
            match blocking(move || expose::mount_read_only(&source, &on).map_err(from_provider))
                .await
            {
                Ok(mounted) => mounted,
                Err(error) => {
                    if made_now {
                        remove_created(&target);
                    }
                    return Err(failure(
                        error.code(),
                        format!("cannot expose shadow copy {id}: {}", error.message()),
                    ));
                }
            };
        let exposure = Exposure {
            snapshot_id: id,
            volume: record.volume.clone(),
            directory: mounted.target.clone(),
            path_from_root: None,
            // The volume's stable directory belongs to shadowcopyd even if an earlier run left it.
            created_directory: default,
            device_object,
        };
        entries.insert(id, exposure.clone());
        if let Err(error) = self.save(&entries) {
            // An exposure the table does not record would be forgotten at the next start, and
            // could outlive the copy's deletion (SNAP-3): undo it.
            entries.remove(&id);
            let on = mounted.target.clone();
            let _ = blocking(move || expose::unmount(&on).map_err(from_provider)).await;
            if made_now {
                remove_created(&target);
            }
            return Err(failure(
                codes::VSS_E_UNEXPECTED,
                format!(
                    "cannot record the exposure of {id} in {}: {error}; nothing was exposed. Check \
                     `service.state_dir` in shadowcopyd.toml",
                    self.file.display()
                ),
            ));
        }
        tracing::info!(snapshot = %id, directory = %exposure.directory.display(), device_object = %exposure.device_object.display(), "shadow copy exposed");
        Ok(exposure)
    }

    /// Unmounts the exposure of `snapshot`, removes its directory if shadowcopyd made it, and
    /// forgets it. Not exposed: VSS_E_OBJECT_NOT_FOUND; still in use: VSS_E_VOLUME_IN_USE (and it
    /// stays exposed). For DeleteSnapshots with force and for revert as well.
    pub(crate) async fn unexpose(
        &self,
        snapshot: SnapshotId,
    ) -> Result<Exposure, CoordinatorError> {
        let mut entries = self.entries.lock().await;
        let Some(exposure) = entries.get(&snapshot).cloned() else {
            return Err(failure(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!(
                    "shadow copy {snapshot} is not exposed; `shadowcopy list` shows which copies \
                     are exposed and where"
                ),
            ));
        };
        let target = exposure.directory.clone();
        match blocking(move || expose::unmount(&target).map_err(from_provider)).await {
            Ok(()) => {}
            // Unmounted by hand already: what was asked for is done.
            Err(error) if error.code() == codes::VSS_E_OBJECT_NOT_FOUND => {
                tracing::info!(snapshot = %snapshot, directory = %exposure.directory.display(), "exposure was already unmounted");
            }
            Err(error) => {
                return Err(failure(
                    error.code(),
                    format!(
                        "cannot unexpose shadow copy {snapshot}: {}",
                        error.message()
                    ),
                ));
            }
        }
        if exposure.created_directory {
            remove_created(&exposure.directory);
        }
        entries.remove(&snapshot);
        if let Err(error) = self.save(&entries) {
            // The mount is gone; a stale entry is dropped by the check at the next start.
            tracing::warn!(snapshot = %snapshot, %error, table = %self.file.display(), "cannot record an unexposure");
        }
        tracing::info!(snapshot = %snapshot, directory = %exposure.directory.display(), "shadow copy unexposed");
        Ok(exposure)
    }
}

/// Checks an ExposeSnapshot request for `record` against EXP-1 and EXP-2 and returns the
/// directory asked for (`None`: the volume's stable directory).
///
/// The codes: a client-accessible copy (EXP-2: never exposable) and a non-persistent one (EXP-2:
/// only persistent copies are exposed locally) get VSS_E_UNSUPPORTED_CONTEXT, the code the
/// registry gives for "the snapshot context is not valid for this call" and the one REV-1 uses for
/// the same refusal of a revert. Remote exposure is the optional phase-2 feature of OPEN-6:
/// VSS_E_NOT_SUPPORTED, whose registered action is to share the locally exposed directory. A
/// subdirectory (path_from_root) is only for remote exposure (EXP-1), so locally it is
/// E_INVALIDARG.
pub(crate) fn check_request(
    record: &SnapshotRecord,
    expose_attribute: u32,
    path_from_root: &str,
    expose_name: &str,
) -> Result<Option<PathBuf>, CoordinatorError> {
    let id = record.snapshot_id;
    let locally = SnapshotAttributes::EXPOSED_LOCALLY.bits();
    let remotely = SnapshotAttributes::EXPOSED_REMOTELY.bits();
    if expose_attribute != locally && expose_attribute != remotely {
        return Err(failure(
            codes::E_INVALIDARG,
            format!(
                "expose_attribute = {expose_attribute:#x}: give EXPOSED_LOCALLY ({locally:#x}) or                  EXPOSED_REMOTELY ({remotely:#x}), exactly one (ENUM-13)"
            ),
        ));
    }
    if record
        .attributes
        .contains(SnapshotAttributes::CLIENT_ACCESSIBLE)
    {
        return Err(failure(
            codes::VSS_E_UNSUPPORTED_CONTEXT,
            format!(
                "shadow copy {id} of {} is client-accessible, and client-accessible shadow copies                  cannot be exposed, locally or remotely (EXP-2); users reach them as previous                  versions instead",
                record.volume
            ),
        ));
    }
    if expose_attribute == remotely {
        return Err(failure(
            codes::VSS_E_NOT_SUPPORTED,
            format!(
                "shadowcopyd cannot expose shadow copy {id} remotely: remote exposure (a network                  share) is not available in this build; expose it locally with `shadowcopy expose                  {id}` and export that directory over NFS or SMB yourself"
            ),
        ));
    }
    if !path_from_root.is_empty() {
        return Err(failure(
            codes::E_INVALIDARG,
            format!(
                "path_from_root = {path_from_root:?}: local exposure always shows the whole                  volume; only remote exposure takes a subdirectory (EXP-1). Leave it empty"
            ),
        ));
    }
    if record.is_auto_release() {
        return Err(failure(
            codes::VSS_E_UNSUPPORTED_CONTEXT,
            format!(
                "shadow copy {id} of {} is not persistent (attributes {}), and only persistent                  shadow copies can be exposed (EXP-2); its files are read at {} while its backup                  session is open. Create a persistent copy (context NAS_ROLLBACK or APP_ROLLBACK,                  as `shadowcopy create` does) to expose it",
                record.volume,
                record.attributes.names().join("|"),
                record
                    .snapshot_path
                    .as_deref()
                    .unwrap_or("its snapshot path")
            ),
        ));
    }
    if record.state != SnapshotState::Created {
        return Err(failure(
            codes::VSS_E_BAD_STATE,
            format!(
                "shadow copy {id} of {} is {}, not CREATED; expose it once its set is complete",
                record.volume, record.state
            ),
        ));
    }
    Ok((!expose_name.is_empty()).then(|| PathBuf::from(expose_name)))
}

/// ExposeSnapshot (EXP-1): finds the copy, checks the request and exposes it locally; returns the
/// exposed name, the mount directory.
pub(crate) async fn expose_request(
    daemon: &Daemon,
    request: v1::ExposeSnapshotRequest,
) -> Result<String, CoordinatorError> {
    let id: SnapshotId = crate::convert::parse_id("snapshot_id", &request.snapshot_id)?;
    let record = find(daemon, id).await?;
    let directory = check_request(
        &record,
        request.expose_attribute,
        &request.path_from_root,
        &request.expose_name,
    )?;
    let exposure = daemon.exposures.expose_locally(&record, directory).await?;
    Ok(exposure.directory.to_string_lossy().into_owned())
}

/// UnexposeSnapshot (EXP-1).
pub(crate) async fn unexpose_request(
    daemon: &Daemon,
    request: v1::UnexposeSnapshotRequest,
) -> Result<(), CoordinatorError> {
    let id: SnapshotId = crate::convert::parse_id("snapshot_id", &request.snapshot_id)?;
    daemon.exposures.unexpose(id).await.map(drop)
}

/// The record of shadow copy `id`, or VSS_E_OBJECT_NOT_FOUND.
async fn find(daemon: &Daemon, id: SnapshotId) -> Result<SnapshotRecord, CoordinatorError> {
    daemon
        .coordinator
        .snapshots(SnapshotContext::All)
        .await?
        .into_iter()
        .find(|r| r.snapshot_id == id)
        .ok_or_else(|| {
            failure(
                codes::VSS_E_OBJECT_NOT_FOUND,
                format!("there is no shadow copy {id}; `shadowcopy list` shows the ones there are"),
            )
        })
}

/// Adds an exposure to a listed copy (SNAP-1): the exposed name and path, EXPOSED_LOCALLY set,
/// and NOT_SURFACED cleared, since every exposed copy is surfaced (EXP-3).
pub(crate) fn describe(properties: &mut v1::SnapshotProperties, exposure: &Exposure) {
    properties.exposed_name = exposure.directory.to_string_lossy().into_owned();
    properties.exposed_path = exposure.path_from_root.clone().unwrap_or_default();
    let bits = properties.attributes | u64::from(SnapshotAttributes::EXPOSED_LOCALLY.bits());
    properties.attributes = bits & !u64::from(SnapshotAttributes::NOT_SURFACED.bits());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(context: SnapshotContext) -> SnapshotRecord {
        SnapshotRecord {
            snapshot_id: "6a9d0f52-3c2e-4c61-9a53-5b1c1f0e8d21".parse().unwrap(),
            set_id: "7b9d0f52-3c2e-4c61-9a53-5b1c1f0e8d21".parse().unwrap(),
            volume: "/srv/db".into(),
            snapshot_path: Some("/srv/db/.shadowcopy/x".into()),
            state: SnapshotState::Created,
            attributes: context.attributes(),
            created: shadowcopy_metadata::VssTimestamp(0),
            provider_id: "30401de5-983a-46fd-9ceb-af8edf8cd8ff".parse().unwrap(),
        }
    }

    const LOCALLY: u32 = SnapshotAttributes::EXPOSED_LOCALLY.bits();
    const REMOTELY: u32 = SnapshotAttributes::EXPOSED_REMOTELY.bits();

    /// EXP-2: persistent copies are exposed locally; non-persistent and client-accessible ones
    /// never are, and remote exposure is refused with the way to do it by hand.
    #[test]
    fn which_copies_can_be_exposed() {
        for context in [SnapshotContext::NasRollback, SnapshotContext::AppRollback] {
            assert_eq!(
                check_request(&record(context), LOCALLY, "", "").unwrap(),
                None,
                "{context:?}"
            );
        }
        assert_eq!(
            check_request(&record(SnapshotContext::AppRollback), LOCALLY, "", "/mnt/x").unwrap(),
            Some(PathBuf::from("/mnt/x"))
        );
        for context in [SnapshotContext::Backup, SnapshotContext::FileShareBackup] {
            let err = check_request(&record(context), LOCALLY, "", "").unwrap_err();
            assert_eq!(err.code(), codes::VSS_E_UNSUPPORTED_CONTEXT, "{context:?}");
            assert!(
                err.message().contains("not persistent"),
                "{}",
                err.message()
            );
        }
        for context in [
            SnapshotContext::ClientAccessible,
            SnapshotContext::ClientAccessibleWriters,
        ] {
            for attribute in [LOCALLY, REMOTELY] {
                let err = check_request(&record(context), attribute, "", "").unwrap_err();
                assert_eq!(err.code(), codes::VSS_E_UNSUPPORTED_CONTEXT, "{context:?}");
                assert!(
                    err.message().contains("client-accessible"),
                    "{}",
                    err.message()
                );
            }
        }
        let err =
            check_request(&record(SnapshotContext::NasRollback), REMOTELY, "sub", "").unwrap_err();
        assert_eq!(err.code(), codes::VSS_E_NOT_SUPPORTED);
        assert!(err.message().contains("NFS or SMB"), "{}", err.message());
        let err =
            check_request(&record(SnapshotContext::NasRollback), LOCALLY, "sub", "").unwrap_err();
        assert_eq!(err.code(), codes::E_INVALIDARG);
        assert!(err.message().contains("EXP-1"), "{}", err.message());
        let err = check_request(
            &record(SnapshotContext::NasRollback),
            LOCALLY | REMOTELY,
            "",
            "",
        )
        .unwrap_err();
        assert_eq!(err.code(), codes::E_INVALIDARG);
        let mut unfinished = record(SnapshotContext::NasRollback);
        unfinished.state = SnapshotState::Prepared;
        let err = check_request(&unfinished, LOCALLY, "", "").unwrap_err();
        assert_eq!(err.code(), codes::VSS_E_BAD_STATE);
    }

    /// SNAP-1, EXP-3: a listed exposed copy has its name, EXPOSED_LOCALLY, and is surfaced.
    #[test]
    fn listings_show_the_exposure() {
        let mut properties = crate::convert::snapshot_properties(
            &SnapshotRecord {
                attributes: SnapshotAttributes::from_bits(
                    SnapshotContext::NasRollback.attributes().bits()
                        | SnapshotAttributes::NOT_SURFACED.bits(),
                )
                .unwrap(),
                ..record(SnapshotContext::NasRollback)
            },
            1,
        );
        let exposure = Exposure {
            snapshot_id: record(SnapshotContext::NasRollback).snapshot_id,
            volume: "/srv/db".into(),
            directory: "/run/shadowcopy/volumes/srv-db".into(),
            path_from_root: None,
            created_directory: true,
            device_object: "/srv/db/.shadowcopy/x".into(),
        };
        describe(&mut properties, &exposure);
        assert_eq!(properties.exposed_name, "/run/shadowcopy/volumes/srv-db");
        let attributes = SnapshotAttributes::from_bits(properties.attributes as u32).unwrap();
        assert!(attributes.contains(SnapshotAttributes::EXPOSED_LOCALLY));
        assert!(!attributes.contains(SnapshotAttributes::NOT_SURFACED));
        assert!(attributes.contains(SnapshotAttributes::PERSISTENT));
    }

    #[test]
    fn the_table_round_trips_and_damage_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("sc-exposure-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let table = ExposureTable::new(&dir.join("state"), &dir.join("exposed"));
        let id: SnapshotId = "6a9d0f52-3c2e-4c61-9a53-5b1c1f0e8d21".parse().unwrap();
        let exposure = Exposure {
            snapshot_id: id,
            volume: "/srv/db".into(),
            directory: dir.join("exposed/srv-db"),
            path_from_root: None,
            created_directory: true,
            device_object: "/srv/db/.shadowcopy/x".into(),
        };
        table
            .save(&BTreeMap::from([(id, exposure.clone())]))
            .unwrap();
        assert_eq!(table.read().unwrap(), vec![exposure]);
        assert!(!dir.join("state/exposures.json.tmp").exists());

        std::fs::write(dir.join("state/exposures.json"), "{ not json").unwrap();
        let message = table.read().unwrap_err();
        assert!(message.contains("unreadable"), "{message}");
        assert!(dir.join("state/exposures.json.unreadable").exists());
        assert_eq!(table.read().unwrap(), vec![], "a missing table is empty");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
