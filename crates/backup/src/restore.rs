//! `shadowcopy restore`: the restore sequence of spec §4 (R1–R9) with the writers, every restore
//! method of §10, restore targets, alternate location mappings and directed targets, or a private
//! restore into a directory of the user's choice.
//!
//! Where each file goes is decided per component set, after PreRestore (RM-2, RST-PREP-5):
//! - the restore target the writer left in the BCD wins over the method (RM-3): ALTERNATE uses the
//!   stored WMD's alternate location mappings, DIRECTED the writer's directed targets (DT-1);
//! - otherwise the restore method decides: RESTORE_IF_NOT_THERE and RESTORE_IF_CAN_REPLACE check
//!   the original files and fall back to the alternate mappings; STOP_RESTORE_START restores in
//!   place once the service is stopped (by its writer in PreRestore, or by the user); the reboot
//!   methods stage the files and record a pending restore; CUSTOM is refused with the writer's own
//!   procedure, since only that procedure knows how;
//! - files no writer owns go back to their original place the conventional way (RST-FILE-2),
//!   when the whole backup is restored.
//!
//! With `--to DIR` the restore is private (NT-1): no writer takes part, every file goes to `DIR`
//! followed by its original path, and absolute symbolic links that pointed into the backup's
//! volumes are pointed into `DIR` instead, so the restored copy never refers to live data (a
//! PostgreSQL cluster whose `pg_wal` links to the live WAL volume would otherwise write into it).
//!
//! Nothing is written outside the restore's targets (the backup's volumes, the stored WMD's
//! alternate locations, the pending-restore area, or `DIR`): the repository refuses trees with
//! `..`, `/` or duplicate names and never follows a symbolic link below a target, and this module
//! refuses stored documents whose paths are relative or hold `..`, and tree entries outside the
//! backup's volumes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shadowcopy_metadata::BackupComponents;
use shadowcopy_metadata::codes;
use shadowcopy_metadata::enums::{FileRestoreStatus, RestoreMethod, RestoreTarget};
use shadowcopy_metadata::selection::{
    ComponentSelector, RestoreRequest, RestoreSelection, RestoreWriter, resolve_restore,
};
use shadowcopy_metadata::wmd::{AlternateLocationMapping, FileDescriptor, FileSet, WriterMetadata};
use shadowcopy_repository::{EntryKind, Repository, RestoreUnit, TreeEntry};
use shadowcopy_requester::{Client, ComponentKey, RestoreSession, SkipReason, WriterStatus};

use crate::backup::{blocking, now_rfc3339};
use crate::error::BackupError;
use crate::progress::{Reporter, RepositoryProgress, Step};
use crate::stored::StoredBackup;

/// The metadata directory at the root of every backup's tree, never restored as data.
const METADATA_ROOT: &str = "/.shadowcopy-backup";

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backup: a repository snapshot id or a unique prefix of one.
    pub backup: String,
    /// The components to restore; none means the whole backup.
    pub components: Vec<ComponentSelector>,
    /// Restore into this directory instead of the original places: privately, without the
    /// writers, unless [`RestoreOptions::with_writers`] is set.
    pub to: Option<PathBuf>,
    /// With [`RestoreOptions::to`]: a restore to new targets with the writers (NT-1): writers whose
    /// schema has `WRITER_SUPPORTS_NEW_TARGET` take part (PreRestore, AddNewTarget for each file
    /// set, PostRestore); the components of other writers are not restored.
    pub with_writers: bool,
    /// The user has stopped the services of STOP_RESTORE_START writers that are not running.
    pub services_stopped: bool,
    /// Where files of the reboot restore methods are staged (the state directory's
    /// `pending-restores`).
    pub pending_dir: PathBuf,
}

/// How the files of one component set were restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentRestore {
    /// The writer's name.
    pub writer_name: String,
    /// The component's full path.
    pub full_path: String,
    /// The writer's restore method (RM-1).
    pub method: RestoreMethod,
    /// The restore target after PreRestore (RT-1).
    pub target: RestoreTarget,
    /// Whether the writer took part.
    pub writer_involved: bool,
    /// The file restore status reported to the writer (RST-FILE-3).
    pub status: FileRestoreStatus,
    /// Where the files went: original, alternate, directed, pending or the `--to` directory.
    pub placement: Placement,
    /// How many files.
    pub files: u64,
    /// Why it failed or was not restored, and what to do.
    pub message: Option<String>,
}

/// Where a component set's files went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Their original paths.
    Original,
    /// The stored WMD's alternate location mappings (ALT-2); the destinations used.
    Alternate(Vec<String>),
    /// The writer's directed targets (DT-1).
    Directed,
    /// Staged for the next boot (RESTORE_AT_REBOOT); the staging directory.
    Pending(String),
    /// Under the private restore directory.
    Relocated(String),
    /// Nowhere.
    NotRestored,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The repository snapshot restored from.
    pub backup: String,
    /// Every restored component set.
    pub components: Vec<ComponentRestore>,
    /// Files no writer owns that were restored (whole restores only).
    pub unowned_files: u64,
    /// Files and bytes written in all.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Absolute symbolic links pointed into the `--to` directory.
    pub relinked: u64,
    /// The writers' status after PostRestore.
    #[serde(skip)]
    pub writers: Vec<WriterStatus>,
    /// What the user should know.
    pub notes: Vec<String>,
    /// The wall time.
    #[serde(skip)]
    pub duration: Duration,
}

impl RestoreReport {
    /// Whether every component set was restored.
    pub fn succeeded(&self) -> bool {
        self.components
            .iter()
            .all(|c| c.status == FileRestoreStatus::All)
            && self.writers.iter().all(|w| !w.has_failed())
    }
}

/// Runs one restore. `client` is needed unless the restore is private (`--to`).
pub async fn run_restore(
    client: Option<&Client>,
    repository: Arc<Repository>,
    options: &RestoreOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    let (stored, entries) = {
        let repository = Arc::clone(&repository);
        let id = options.backup.clone();
        blocking("read the backup", move || {
            let stored = StoredBackup::load(&repository, &id)?;
            let entries = repository.entries(&stored.snapshot.id)?;
            Ok((stored, entries))
        })
        .await?
    };
    let layout = Layout::new(&stored, entries)?;
    let selection = select(&stored, &options.components)?;

    let mut report = RestoreReport {
        backup: stored.snapshot.id.clone(),
        components: Vec::new(),
        unowned_files: 0,
        files: 0,
        bytes: 0,
        relinked: 0,
        writers: Vec::new(),
        notes: Vec::new(),
        duration: Duration::ZERO,
    };
    if let (Some(dir), false) = (&options.to, options.with_writers) {
        private_restore(
            &repository,
            &stored,
            &layout,
            &selection,
            options,
            dir,
            &reporter,
            &mut report,
        )
        .await?;
    } else {
        let client = client.ok_or_else(|| {
            BackupError::invalid(
                &codes::E_INVALIDARG,
                "a restore with the writers needs the coordinator, to run PreRestore and \
                 PostRestore",
            )
        })?;
        let mut session = client.restore_session().await?;
        let result = writer_restore(
            &mut session,
            &repository,
            &stored,
            &layout,
            &selection,
            options,
            &reporter,
            &mut report,
        )
        .await;
        // Restores cannot be aborted (BK-ABORT-5); the session is released after PostRestore, or
        // when a call failed before it.
        let released = session.release().await;
        result?;
        released?;
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// The components to restore, or `None` for a volume-mode backup.
fn select(
    stored: &StoredBackup,
    components: &[ComponentSelector],
) -> Result<Option<RestoreSelection>, BackupError> {
    if !stored.manifest.component_mode {
        if !components.is_empty() {
            return Err(BackupError::invalid(
                &codes::VSS_E_OBJECT_NOT_FOUND,
                format!(
                    "backup {} was made in volume mode and has no components; restore it whole, \
                     or a part of it with --to",
                    stored.snapshot.id
                ),
            ));
        }
        return Ok(None);
    }
    let request = RestoreRequest {
        selected: components.to_vec(),
    };
    resolve_restore(&stored.bcd, &stored.writers, &request)
        .map(Some)
        .map_err(|error| {
            BackupError::invalid(
                codes::lookup(error.code().value).unwrap_or(&codes::E_INVALIDARG),
                format!(
                    "cannot restore as asked: {error}; `shadowcopy backups show {}` lists the \
                     components of the backup",
                    stored.snapshot.id
                ),
            )
        })
}

/// The backup's tree, checked, with each file's owner.
struct Layout {
    /// The recorded volumes, longest first, so that the first containing one is the innermost.
    volumes: Vec<PathBuf>,
    /// Every restorable entry (not a directory), by original path.
    entries: Vec<TreeEntry>,
    /// Every directory inside the volumes, so that a whole restore brings back empty ones too.
    dirs: Vec<PathBuf>,
}

impl Layout {
    fn new(stored: &StoredBackup, entries: Vec<TreeEntry>) -> Result<Self, BackupError> {
        let damaged = |message: String| BackupError::Damaged {
            repo: PathBuf::new(),
            snapshot: stored.snapshot.id.clone(),
            message,
        };
        let mut volumes = Vec::new();
        for path in &stored.snapshot.paths {
            let path = PathBuf::from(path);
            check_absolute(&path).map_err(|why| damaged(format!("its volume path {why}")))?;
            volumes.push(path);
        }
        volumes.sort_by_key(|v| std::cmp::Reverse(v.components().count()));
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for entry in entries {
            if entry.path.starts_with(METADATA_ROOT) {
                continue;
            }
            if !volumes.iter().any(|v| entry.path.starts_with(v)) {
                // Ancestors of the volumes (`/`, `/srv` of `/srv/db`) are part of every tree.
                if entry.kind == EntryKind::Dir
                    && volumes.iter().any(|v| v.starts_with(&entry.path))
                {
                    continue;
                }
                return Err(damaged(format!(
                    "its tree holds {}, which lies outside the backup's volumes; it is not \
                     restored, and neither is anything else of this backup",
                    entry.path.display()
                )));
            }
            if entry.kind == EntryKind::Dir {
                dirs.push(entry.path);
            } else {
                files.push(entry);
            }
        }
        Ok(Layout {
            volumes,
            entries: files,
            dirs,
        })
    }

    /// The innermost volume holding `path`.
    fn volume_of(&self, path: &Path) -> &Path {
        self.volumes
            .iter()
            .find(|v| path.starts_with(v))
            .map(PathBuf::as_path)
            .unwrap_or(Path::new("/"))
    }
}

/// `Ok` when `path` is absolute and has no `.` or `..`; otherwise why not.
fn check_absolute(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not absolute", path.display()));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("{} holds `..` or `.`", path.display()));
    }
    Ok(())
}

/// One component set to restore: a selected component (or restore subcomponent) with the file sets
/// of every member, and who restores it.
struct Job<'a> {
    writer: &'a RestoreWriter,
    wmd: &'a WriterMetadata,
    /// The explicit component whose record stands for the set (BCD-9, RT-1).
    logical_path: String,
    name: String,
    file_sets: Vec<FileSet>,
    /// The files owned by the set.
    files: Vec<usize>,
    key: Option<ComponentKey>,
}

impl Job<'_> {
    fn full_path(&self) -> String {
        shadowcopy_metadata::logical_path::full_path(&self.logical_path, &self.name)
    }
}

/// The stored WMD of a restore selection's writer (RST-INIT-4).
fn stored_wmd<'a>(stored: &'a StoredBackup, writer: &RestoreWriter) -> Option<&'a WriterMetadata> {
    let same: Vec<&WriterMetadata> = stored
        .writers
        .iter()
        .filter(|w| {
            w.identity.class_id == writer.class_id
                && w.identity.instance_name == writer.instance_name
        })
        .collect();
    match same.as_slice() {
        [one] => Some(one),
        several => several
            .iter()
            .copied()
            .find(|w| w.identity.instance_id == writer.instance_id),
    }
}

/// Every file set of every component of every stored WMD, with whether it belongs to a restored
/// set: a file owned by a component that is not restored is left alone.
fn jobs<'a>(
    stored: &'a StoredBackup,
    layout: &Layout,
    selection: &'a RestoreSelection,
) -> Result<(Vec<Job<'a>>, Vec<usize>), BackupError> {
    let mut jobs = Vec::new();
    for writer in &selection.writers {
        let wmd = stored_wmd(stored, writer).ok_or_else(|| BackupError::Damaged {
            repo: PathBuf::new(),
            snapshot: stored.snapshot.id.clone(),
            message: format!(
                "its BCD names writer `{}` but no stored WMD matches it",
                writer.writer_name
            ),
        })?;
        for component in &writer.selected {
            let set_path = component.full_path();
            let file_sets: Vec<FileSet> = writer
                .members
                .iter()
                .filter(|m| match &m.reason {
                    shadowcopy_metadata::selection::RestoreReason::Selected => {
                        m.full_path() == set_path
                    }
                    shadowcopy_metadata::selection::RestoreReason::Subcomponent { of } => {
                        *of == set_path
                    }
                    shadowcopy_metadata::selection::RestoreReason::InSetOf { set } => {
                        *set == set_path
                            || shadowcopy_metadata::logical_path::is_in_set(set, &set_path)
                    }
                })
                .flat_map(|m| m.files.iter().cloned())
                .collect();
            for set in &file_sets {
                check_absolute(Path::new(&set.path)).map_err(|why| BackupError::Damaged {
                    repo: PathBuf::new(),
                    snapshot: stored.snapshot.id.clone(),
                    message: format!(
                        "writer `{}` has a file set whose path {why}",
                        writer.writer_name
                    ),
                })?;
            }
            jobs.push(Job {
                writer,
                wmd,
                logical_path: component.logical_path.clone(),
                name: component.name.clone(),
                file_sets,
                files: Vec::new(),
                key: None,
            });
        }
    }
    let every_set = stored_file_sets(stored);
    let mut unowned = Vec::new();
    for (index, entry) in layout.entries.iter().enumerate() {
        let Some(text) = entry.path.to_str() else {
            unowned.push(index);
            continue;
        };
        if let Some(job) = jobs
            .iter_mut()
            .find(|j| j.file_sets.iter().any(|s| s.contains(text)))
        {
            job.files.push(index);
        } else if !every_set.iter().any(|s| s.contains(text)) {
            unowned.push(index);
        }
    }
    Ok((jobs, unowned))
}

/// Every file set of every component of the stored WMDs.
fn stored_file_sets(stored: &StoredBackup) -> Vec<FileSet> {
    stored
        .writers
        .iter()
        .flat_map(|w| &w.components)
        .flat_map(|c| c.all_files().map(FileDescriptor::file_set))
        .collect()
}

/// The paths of the backup's partial files.
fn partial_paths(stored: &StoredBackup) -> Vec<String> {
    stored
        .manifest
        .partial_files
        .iter()
        .map(|p| p.path.clone())
        .collect()
}

/// The file sets of `job` that are whole directories it alone owns: recursive, every name, with no
/// other component's file set below them. Such a set is restored as a mirror of the backup, so
/// that files made after the backup (a newer log segment of a database) do not linger among the
/// restored ones; a directory shared with another component is restored file by file, so that the
/// other's data is never deleted, and so is one holding a partial file (`keep`), whose ranges are
/// written into the file that is there (PF-1).
fn mirrored_sets(job: &Job<'_>, every_set: &[FileSet], keep: &[String]) -> Vec<FileSet> {
    job.file_sets
        .iter()
        .filter(|set| set.recursive && matches!(set.filespec.as_str(), "*" | "*.*"))
        .filter(|set| !keep.iter().any(|path| set.contains(path)))
        .filter(|set| {
            let dir = set.path.trim_end_matches('/');
            !every_set
                .iter()
                .filter(|other| !job.file_sets.contains(other))
                .any(|other| {
                    let other = other.path.trim_end_matches('/');
                    other == dir || other.starts_with(&format!("{dir}/"))
                })
        })
        .cloned()
        .collect()
}

/// Where the files of one job go.
enum Route {
    Original,
    /// Under the `--to` directory, as a new target the writer is told about (NT-1).
    NewTarget,
    Alternate(Vec<AlternateLocationMapping>),
    Directed,
    Pending,
    Refused(String),
}

/// RM-2 and RT-1 for one component set, after PreRestore.
fn route(
    job: &Job<'_>,
    layout: &Layout,
    bcd: &BackupComponents,
    writer_involved: bool,
    services_stopped: bool,
) -> (RestoreMethod, RestoreTarget, Route) {
    let method = job.wmd.restore_method.method;
    let target = bcd
        .writer_instance(job.writer.instance_id)
        .and_then(|w| w.component(&job.logical_path, &job.name))
        .map_or(RestoreTarget::Original, |r| r.restore_target());
    let files: Vec<&Path> = job
        .files
        .iter()
        .map(|&i| layout.entries[i].path.as_path())
        .collect();
    let mappings = || alternate_mappings(job);
    let fall_back = |why: String| match mappings() {
        Some(mappings) => Route::Alternate(mappings),
        None => Route::Refused(format!(
            "{why}, and the writer's alternate location mappings do not cover every file set of \
             the component, so it is not restored (RM-2); free the original files, or restore \
             with --to DIR"
        )),
    };
    let route = match target {
        RestoreTarget::Alternate => mappings().map_or_else(
            || {
                Route::Refused(
                    "the writer set the restore target ALTERNATE, but its alternate location \
                     mappings do not cover every file set of the component (RT-1)"
                        .to_owned(),
                )
            },
            Route::Alternate,
        ),
        RestoreTarget::Directed => Route::Directed,
        RestoreTarget::Undefined | RestoreTarget::Original | RestoreTarget::OriginalLocation => {
            match method {
                RestoreMethod::RestoreIfNotThere => match files.iter().find(|f| exists(f)) {
                    None => Route::Original,
                    Some(present) => fall_back(format!(
                        "RESTORE_IF_NOT_THERE: {} exists",
                        present.display()
                    )),
                },
                RestoreMethod::RestoreIfCanReplace | RestoreMethod::Undefined => {
                    match files.iter().find(|f| !replaceable(f)) {
                        None => Route::Original,
                        Some(stuck) => fall_back(format!(
                            "RESTORE_IF_CAN_REPLACE: {} cannot be replaced",
                            stuck.display()
                        )),
                    }
                }
                RestoreMethod::StopRestoreStart | RestoreMethod::RestoreStopStart => {
                    let service = job.wmd.restore_method.service.as_deref().unwrap_or("?");
                    if writer_involved || services_stopped {
                        Route::Original
                    } else {
                        Route::Refused(format!(
                            "{method}: the service `{service}` must be stopped before its files \
                             are replaced, and its writer is not running to do it; stop \
                             `{service}`, run the restore again with --services-stopped, then \
                             start it (RM-2)"
                        ))
                    }
                }
                RestoreMethod::RestoreToAlternateLocation => mappings().map_or_else(
                    || {
                        Route::Refused(
                            "RESTORE_TO_ALTERNATE_LOCATION: the writer's alternate location \
                             mappings do not cover every file set of the component (RM-2)"
                                .to_owned(),
                        )
                    },
                    Route::Alternate,
                ),
                RestoreMethod::RestoreAtReboot => Route::Pending,
                RestoreMethod::RestoreAtRebootIfCannotReplace => {
                    if files.iter().all(|f| replaceable(f)) {
                        Route::Original
                    } else {
                        Route::Pending
                    }
                }
                RestoreMethod::Custom => Route::Refused(format!(
                    "the writer restores with a CUSTOM procedure that shadowcopy cannot run for \
                     it: {}; restore the files with --to DIR and follow that procedure",
                    job.wmd
                        .restore_method
                        .user_procedure
                        .as_deref()
                        .unwrap_or("its documentation describes it")
                )),
            }
        }
    };
    // Reboot-time methods ignore restore targets (RM-3).
    let route = match (method, route) {
        (RestoreMethod::RestoreAtReboot, _) => Route::Pending,
        (_, route) => route,
    };
    (method, target, route)
}

/// NT-1: a restore to a new target is for writers that accept one; the others' components are not
/// restored, because their writers would be told of files in places they do not expect.
fn new_target_route(job: &Job<'_>, dir: &Path) -> (RestoreMethod, RestoreTarget, Route) {
    let accepts = job
        .wmd
        .backup_schema
        .contains(shadowcopy_metadata::enums::BackupSchema::WRITER_SUPPORTS_NEW_TARGET);
    let route = if accepts {
        Route::NewTarget
    } else {
        Route::Refused(format!(
            "writer `{}` does not accept new targets (its backup schema lacks \
             WRITER_SUPPORTS_NEW_TARGET, NT-1), so it is not restored to {} with the writers; \
             restore it there without --with-writers (a private copy), or to its original place",
            job.writer.writer_name,
            dir.display()
        ))
    };
    (
        job.wmd.restore_method.method,
        RestoreTarget::Original,
        route,
    )
}

/// The mappings that cover every file set of the job exactly (ALT-2), or `None`.
fn alternate_mappings(job: &Job<'_>) -> Option<Vec<AlternateLocationMapping>> {
    let mut used = Vec::new();
    for set in &job.file_sets {
        let mapping = job.wmd.alternate_location_mappings.iter().find(|m| {
            m.source.path.trim_end_matches('/') == set.path.trim_end_matches('/')
                && m.source.filespec == set.filespec
                && m.source.recursive == set.recursive
        })?;
        if check_absolute(Path::new(&mapping.destination)).is_err() {
            return None;
        }
        used.push(mapping.clone());
    }
    (!used.is_empty()).then_some(used)
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Whether `path` is present and writable, or absent and creatable (RM-2).
fn replaceable(path: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    if exists(path) {
        return access(path, AccessFlags::W_OK).is_ok();
    }
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor {
        if exists(dir) {
            return dir.is_dir() && access(dir, AccessFlags::W_OK).is_ok();
        }
        ancestor = dir.parent();
    }
    false
}

/// The restore with the writers (R1–R9).
#[allow(clippy::too_many_arguments)]
async fn writer_restore(
    session: &mut RestoreSession,
    repository: &Arc<Repository>,
    stored: &StoredBackup,
    layout: &Layout,
    selection: &Option<RestoreSelection>,
    options: &RestoreOptions,
    reporter: &Arc<dyn Reporter>,
    report: &mut RestoreReport,
) -> Result<(), BackupError> {
    // R1–R4.
    session
        .initialize_for_restore(&stored.bcd, &stored.writers)
        .await?;
    reporter.step(Step::GatheringWriters);
    session.gather_writer_metadata().await?;
    let empty = RestoreSelection {
        writers: Vec::new(),
    };
    let selection_ref = selection.as_ref().unwrap_or(&empty);
    let applied = session.apply_restore_selection(selection_ref).await?;
    for skipped in &applied.skipped {
        report.notes.push(match skipped.reason {
            SkipReason::NotRunning => format!(
                "writer `{}` is not running: its files are restored without it (RST-PREP-2)",
                skipped.writer_name
            ),
            _ => format!(
                "writer `{}` takes no part in restores: its files are restored without it (RSV-1)",
                skipped.writer_name
            ),
        });
    }
    let (mut jobs, unowned) = match selection {
        Some(selection) => jobs(stored, layout, selection)?,
        None => (Vec::new(), (0..layout.entries.len()).collect()),
    };
    for job in &mut jobs {
        job.key = applied
            .selected
            .iter()
            .find(|k| {
                k.writer_class_id == job.writer.class_id
                    && k.logical_path == job.logical_path
                    && k.name == job.name
            })
            .cloned();
    }

    // R5–R6.
    reporter.step(Step::PreparingRestore);
    session.pre_restore().await?;
    let statuses = session.gather_writer_status().await?;
    let bcd = session.backup_components().await?;

    // R7: decide, then copy.
    let relocate = options.to.as_deref();
    if let Some(dir) = relocate {
        check_absolute(dir).map_err(|why| {
            BackupError::invalid(
                &codes::E_INVALIDARG,
                format!("--to: {why}; give an absolute directory"),
            )
        })?;
    }
    let stamp = now_rfc3339().replace(':', "");
    let pending_root = options.pending_dir.join(format!(
        "{}-{stamp}",
        &stored.snapshot.id[..12.min(stored.snapshot.id.len())]
    ));
    let mut plan = UnitPlan::default();
    let every_set = stored_file_sets(stored);
    let keep = partial_paths(stored);
    let mut outcomes = Vec::new();
    for job in &jobs {
        let involved = job.key.is_some();
        let failed_at_pre_restore = statuses
            .iter()
            .find(|s| {
                involved
                    && job
                        .key
                        .as_ref()
                        .is_some_and(|k| k.writer_instance_id == s.instance_id)
            })
            .filter(|s| s.has_failed());
        let (method, target, route) = match relocate {
            None => route(job, layout, &bcd, involved, options.services_stopped),
            Some(dir) => new_target_route(job, dir),
        };
        let route = match failed_at_pre_restore {
            Some(status) => Route::Refused(format!(
                "its writer failed in PreRestore ({}{}); nothing of it was restored",
                status.state,
                status
                    .application_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )),
            None => route,
        };
        let placement = match &route {
            Route::Original => {
                plan.add_component(layout, job, &every_set, &keep, None);
                Placement::Original
            }
            Route::Alternate(mappings) => {
                plan.add_alternate(layout, &job.files, mappings);
                Placement::Alternate(mappings.iter().map(|m| m.destination.clone()).collect())
            }
            Route::NewTarget => {
                let dir = relocate.unwrap_or(Path::new("/"));
                plan.add_component(layout, job, &every_set, &keep, Some(dir));
                Placement::Relocated(dir.display().to_string())
            }
            Route::Directed => Placement::Directed,
            Route::Pending => {
                plan.add_pending(layout, &job.files, &pending_root);
                Placement::Pending(pending_root.display().to_string())
            }
            Route::Refused(_) => Placement::NotRestored,
        };
        outcomes.push((job, method, target, route, placement));
    }
    let whole = options.components.is_empty();
    if whole {
        plan.add_original(layout, &unowned, relocate);
        plan.add_all_dirs(layout, relocate);
    }
    reporter.step(Step::Restoring);
    let executed = plan
        .execute(repository, &stored.snapshot.id, reporter)
        .await;
    report.files = executed.files;
    report.bytes = executed.bytes;
    if whole {
        report.unowned_files = unowned.len() as u64;
    }
    if let Some(dir) = relocate {
        report.relinked = relink(layout, &plan.restored_symlinks(layout), dir)?;
    }

    // Directed targets (DT-1): each source range written into its destination range.
    let mut directed_failures = BTreeMap::new();
    for (index, (job, _, _, route, _)) in outcomes.iter().enumerate() {
        if matches!(route, Route::Directed) {
            let result = apply_directed(repository, &stored.snapshot.id, layout, &bcd, job).await;
            if let Err(error) = result {
                directed_failures.insert(index, format!("a directed target failed: {error}"));
            }
        }
    }
    if !plan.pending.is_empty() {
        record_pending(&pending_root, &plan.pending)?;
        report.notes.push(format!(
            "files staged in {} replace the originals at the next boot (RESTORE_AT_REBOOT): \
             `shadowcopy restore --apply-pending` puts them in place",
            pending_root.display()
        ));
    }

    for (index, (job, method, target, route, placement)) in outcomes.into_iter().enumerate() {
        let failure = match &route {
            Route::Refused(why) => Some(why.clone()),
            Route::Directed => directed_failures.remove(&index),
            _ => executed.failure_for(layout, &job.files),
        };
        // The partial files' ranges go in after the files, ranges files among them (RST-FILE-4).
        let failure = match (&failure, &route) {
            (None, Route::Original | Route::Alternate(_) | Route::NewTarget) => {
                let destination = |path: &Path| match (&route, relocate) {
                    (Route::Alternate(mappings), _) => alternate_destination(mappings, path),
                    (Route::NewTarget, Some(dir)) => Some((under(dir, path), dir.to_path_buf())),
                    _ => Some((path.to_path_buf(), layout.volume_of(path).to_path_buf())),
                };
                restore_partials(repository, stored, job, destination)
                    .await
                    .err()
            }
            _ => failure,
        };
        let status = match (&route, &failure) {
            (Route::Refused(_), _) => FileRestoreStatus::None,
            (_, Some(_)) => FileRestoreStatus::Failed,
            _ => FileRestoreStatus::All,
        };
        if let Some(key) = &job.key {
            session.set_file_restore_status(key, status).await?;
            if let Route::Alternate(mappings) = &route {
                for mapping in mappings {
                    session
                        .add_alternative_location_mapping(
                            key,
                            &mapping.source,
                            &mapping.destination,
                        )
                        .await?;
                }
            }
            if let (Route::NewTarget, Some(dir)) = (&route, relocate) {
                for set in &job.file_sets {
                    let new_path = under(dir, Path::new(&set.path));
                    session
                        .add_new_target(key, set, &new_path.to_string_lossy())
                        .await?;
                }
            }
        }
        report.components.push(ComponentRestore {
            writer_name: job.writer.writer_name.clone(),
            full_path: job.full_path(),
            method,
            target,
            writer_involved: job.key.is_some(),
            status,
            placement,
            files: job.files.len() as u64,
            message: failure,
        });
    }
    if let Some(failure) = &executed.error {
        report.notes.push(failure.clone());
    }

    // R8–R9.
    reporter.step(Step::FinishingRestore);
    session.post_restore().await?;
    report.writers = session.gather_writer_status().await?;
    Ok(())
}

/// A restore into `dir` without the writers (NT-1): every selected file under `dir` followed by
/// its original path.
#[allow(clippy::too_many_arguments)]
async fn private_restore(
    repository: &Arc<Repository>,
    stored: &StoredBackup,
    layout: &Layout,
    selection: &Option<RestoreSelection>,
    options: &RestoreOptions,
    dir: &Path,
    reporter: &Arc<dyn Reporter>,
    report: &mut RestoreReport,
) -> Result<(), BackupError> {
    check_absolute(dir).map_err(|why| {
        BackupError::invalid(
            &codes::E_INVALIDARG,
            format!("--to: {why}; give an absolute directory"),
        )
    })?;
    let (jobs, unowned) = match selection {
        Some(selection) => jobs(stored, layout, selection)?,
        None => (Vec::new(), (0..layout.entries.len()).collect()),
    };
    let whole = options.components.is_empty();
    let mut plan = UnitPlan::default();
    let every_set = stored_file_sets(stored);
    let keep = partial_paths(stored);
    for job in &jobs {
        plan.add_component(layout, job, &every_set, &keep, Some(dir));
    }
    if whole {
        plan.add_original(layout, &unowned, Some(dir));
        plan.add_all_dirs(layout, Some(dir));
        report.unowned_files = unowned.len() as u64;
    }
    reporter.step(Step::Restoring);
    let executed = plan
        .execute(repository, &stored.snapshot.id, reporter)
        .await;
    report.files = executed.files;
    report.bytes = executed.bytes;
    for job in &jobs {
        let mut failure = executed.failure_for(layout, &job.files);
        if failure.is_none() {
            let destination = |path: &Path| Some((under(dir, path), dir.to_path_buf()));
            failure = restore_partials(repository, stored, job, destination)
                .await
                .err();
        }
        report.components.push(ComponentRestore {
            writer_name: job.writer.writer_name.clone(),
            full_path: job.full_path(),
            method: job.wmd.restore_method.method,
            target: RestoreTarget::Original,
            writer_involved: false,
            status: if failure.is_some() {
                FileRestoreStatus::Failed
            } else {
                FileRestoreStatus::All
            },
            placement: Placement::Relocated(dir.display().to_string()),
            files: job.files.len() as u64,
            message: failure,
        });
    }
    if let Some(failure) = &executed.error {
        report.notes.push(failure.clone());
        return Err(BackupError::invalid(
            &codes::VSS_E_UNEXPECTED,
            failure.clone(),
        ));
    }
    report.relinked = relink(layout, &plan.restored_symlinks(layout), dir)?;
    if report.relinked > 0 {
        report.notes.push(format!(
            "{} absolute symbolic links that pointed into the backup's volumes now point into {}",
            report.relinked,
            dir.display()
        ));
    }
    Ok(())
}

/// Where a file restored through alternate location mappings goes, with the mapping's destination
/// as its boundary (ALT-2).
fn alternate_destination(
    mappings: &[AlternateLocationMapping],
    path: &Path,
) -> Option<(PathBuf, PathBuf)> {
    let text = path.to_str()?;
    let mapping = mappings.iter().find(|m| m.source.contains(text))?;
    let relative = path
        .strip_prefix(mapping.source.path.trim_end_matches('/'))
        .ok()?;
    let destination = PathBuf::from(&mapping.destination);
    Some((destination.join(relative), destination))
}

/// PF-5, RST-FILE-4: writes the stored ranges of the job's partial files back into their files,
/// at the place `destination` gives with its boundary. Nothing between the boundary and the file
/// may be a symbolic link, and the file itself is opened without following one.
async fn restore_partials(
    repository: &Arc<Repository>,
    stored: &StoredBackup,
    job: &Job<'_>,
    destination: impl Fn(&Path) -> Option<(PathBuf, PathBuf)>,
) -> Result<(), String> {
    let full_path = job.full_path();
    for record in stored
        .manifest
        .partial_files
        .iter()
        .filter(|r| r.class_id == job.writer.class_id && r.component == full_path)
    {
        let original = PathBuf::from(&record.path);
        check_absolute(&original).map_err(|why| format!("partial file: {why}"))?;
        let (target, boundary) = destination(&original)
            .ok_or_else(|| format!("partial file {}: no destination for it", record.path))?;
        let parent = target.parent().unwrap_or(&boundary);
        if !parent.starts_with(&boundary) || !real_directories(&boundary, parent) {
            return Err(format!(
                "partial file {}: {} is not a directory inside {} reached without symbolic                  links, so its ranges are not written",
                record.path,
                parent.display(),
                boundary.display()
            ));
        }
        let data = {
            let repository = Arc::clone(repository);
            let (snapshot, name) = (stored.snapshot.id.clone(), record.data.clone());
            blocking("read a partial file's ranges", move || {
                Ok(repository.metadata_file(&snapshot, &name)?)
            })
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "partial file {}: its ranges are missing from the backup",
                    record.path
                )
            })?
        };
        crate::partial::write_back(&target, &record.ranges, &data)
            .map_err(|why| format!("partial file {}: {why}", record.path))?;
    }
    Ok(())
}

/// Whether every component from `boundary` down to `dir` exists and is a directory, not a link.
fn real_directories(boundary: &Path, dir: &Path) -> bool {
    let Ok(relative) = dir.strip_prefix(boundary) else {
        return false;
    };
    let mut at = boundary.to_path_buf();
    for part in relative.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            _ => return false,
        }
    }
    boundary.is_dir()
}

/// Points restored absolute symbolic links that lead into the backup's volumes into `dir`.
fn relink(layout: &Layout, links: &[PathBuf], dir: &Path) -> Result<u64, BackupError> {
    let mut relinked = 0;
    for original in links {
        let restored = under(dir, original);
        let Ok(target) = std::fs::read_link(&restored) else {
            continue;
        };
        if !target.is_absolute() || !layout.volumes.iter().any(|v| target.starts_with(v)) {
            continue;
        }
        let new_target = under(dir, &target);
        let temporary = restored.with_file_name(format!(
            ".{}.shadowcopy-relink",
            restored.file_name().unwrap_or_default().to_string_lossy()
        ));
        let io = |action, source| BackupError::Io {
            action,
            path: restored.clone(),
            source,
        };
        let _ = std::fs::remove_file(&temporary);
        std::os::unix::fs::symlink(&new_target, &temporary)
            .map_err(|e| io("re-point the symbolic link", e))?;
        std::fs::rename(&temporary, &restored).map_err(|e| io("re-point the symbolic link", e))?;
        relinked += 1;
    }
    Ok(relinked)
}

/// `dir` followed by the absolute `path`.
fn under(dir: &Path, path: &Path) -> PathBuf {
    dir.join(path.strip_prefix("/").unwrap_or(path))
}

/// DT-1: for every directed target of the component, the source file's ranges are written into the
/// destination file's ranges. The source file is taken from the backup.
async fn apply_directed(
    repository: &Arc<Repository>,
    snapshot: &str,
    layout: &Layout,
    bcd: &BackupComponents,
    job: &Job<'_>,
) -> Result<(), BackupError> {
    let Some(record) = bcd
        .writer_instance(job.writer.instance_id)
        .and_then(|w| w.component(&job.logical_path, &job.name))
    else {
        return Ok(());
    };
    for target in record.directed_targets() {
        let source = Path::new(&target.source_path).join(&target.source_filename);
        let destination = Path::new(&target.destination_path).join(&target.destination_filename);
        for path in [&source, &destination] {
            check_absolute(path).map_err(|why| {
                BackupError::invalid(
                    &codes::E_INVALIDARG,
                    format!("a directed target's path {why}"),
                )
            })?;
        }
        let volume = layout.volume_of(&destination).to_path_buf();
        if !layout.volumes.contains(&volume) || !destination.starts_with(&volume) {
            return Err(BackupError::invalid(
                &codes::E_ACCESSDENIED,
                format!(
                    "the directed target {} lies outside the backup's volumes and is not written",
                    destination.display()
                ),
            ));
        }
        // The file is opened without following a link at its own name; its directories must be
        // real ones below the volume, or a link among them could lead the write outside.
        let parent = destination.parent().unwrap_or(&volume);
        if !real_directories(&volume, parent) {
            return Err(BackupError::invalid(
                &codes::E_ACCESSDENIED,
                format!(
                    "the directed target {} is not reached through real directories below {} \
                     (a symbolic link or a missing directory is in the way), so it is not \
                     written",
                    destination.display(),
                    volume.display()
                ),
            ));
        }
        let staging = volume.join(format!(".shadowcopy-directed-{}", std::process::id()));
        let unit = RestoreUnit {
            source: source.clone(),
            destination: staging.clone(),
            boundary: staging.clone(),
            filter: None,
            mirror: false,
        };
        {
            let repository = Arc::clone(repository);
            let snapshot = snapshot.to_owned();
            blocking("restore a directed target's source", move || {
                repository
                    .restore(&snapshot, &[unit], None)
                    .map_err(BackupError::from)
            })
            .await?;
        }
        let staged = staging.join(&target.source_filename);
        let result = copy_ranges(
            &staged,
            &target.source_ranges,
            &destination,
            &target.destination_ranges,
        );
        let _ = std::fs::remove_dir_all(&staging);
        result?;
    }
    Ok(())
}

/// Copies `source`'s ranges into `destination`'s ranges (PF-2 syntax, pairwise equal lengths).
fn copy_ranges(
    source: &Path,
    source_ranges: &str,
    destination: &Path,
    destination_ranges: &str,
) -> Result<(), BackupError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let parse = |text: &str| {
        let inline = match shadowcopy_metadata::validate::parse_ranges(text) {
            Ok(shadowcopy_metadata::validate::Ranges::Inline(pairs)) => Ok(pairs),
            Ok(shadowcopy_metadata::validate::Ranges::File(_)) => {
                Err("a directed target gives its ranges inline (DT-1)".to_owned())
            }
            Err(why) => Err(why),
        };
        inline.map_err(|why| {
            BackupError::invalid(
                &codes::E_INVALIDARG,
                format!("directed target ranges {text:?}: {why}"),
            )
        })
    };
    let from = parse(source_ranges)?;
    let to = parse(destination_ranges)?;
    if from.len() != to.len() || from.iter().zip(&to).any(|(a, b)| a.1 != b.1) {
        return Err(BackupError::invalid(
            &codes::E_INVALIDARG,
            format!(
                "directed target ranges {source_ranges:?} and {destination_ranges:?} do not pair up \
                 with equal lengths (DT-1)"
            ),
        ));
    }
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io {
            action,
            path,
            source,
        }
    };
    let mut input = std::fs::File::open(source).map_err(io("open", source))?;
    let mut output = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags_nofollow()
        .open(destination)
        .map_err(io("open", destination))?;
    for ((from_offset, length), (to_offset, _)) in from.iter().zip(&to) {
        let mut buffer = vec![0; usize::try_from(*length).unwrap_or(usize::MAX).min(1 << 26)];
        input
            .seek(SeekFrom::Start(*from_offset))
            .map_err(io("seek in", source))?;
        input.read_exact(&mut buffer).map_err(io("read", source))?;
        output
            .seek(SeekFrom::Start(*to_offset))
            .map_err(io("seek in", destination))?;
        output
            .write_all(&buffer)
            .map_err(io("write", destination))?;
    }
    Ok(())
}

/// `O_NOFOLLOW` for opens that must never go through a symbolic link.
trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
    }
}

/// The restore units of one restore, grouped by where their files go.
#[derive(Default)]
struct UnitPlan {
    /// (source, destination, boundary) → the original paths of the files.
    units: BTreeMap<(PathBuf, PathBuf, PathBuf), BTreeSet<PathBuf>>,
    /// Staged file → final place, for the pending-restore record.
    pending: Vec<(PathBuf, PathBuf)>,
    /// (source, destination, boundary) of whole directories restored as mirrors.
    mirrors: BTreeSet<(PathBuf, PathBuf, PathBuf)>,
    /// The backup's volumes that files go back to: each must exist here. A restore never creates
    /// a volume's mount point: a missing one means the volume is not mounted, and the files would
    /// land on whatever file system holds its parent.
    volumes_in_place: BTreeSet<PathBuf>,
}

/// What executing a [`UnitPlan`] did.
struct Executed {
    files: u64,
    bytes: u64,
    /// The units that failed: what they write, and the error.
    failed: Vec<(Touched, String)>,
    error: Option<String>,
}

impl Executed {
    /// The first failure that touched any of `files`.
    fn failure_for(&self, layout: &Layout, files: &[usize]) -> Option<String> {
        self.failed.iter().find_map(|(paths, why)| {
            files
                .iter()
                .any(|&i| paths.contains(&layout.entries[i].path))
                .then(|| why.clone())
        })
    }
}

impl UnitPlan {
    /// Files back to their original paths, or under `relocated_to`.
    fn add_original(&mut self, layout: &Layout, files: &[usize], relocated_to: Option<&Path>) {
        for &index in files {
            self.add_in_place(layout, &layout.entries[index].path, relocated_to);
        }
    }

    /// One entry to its original path, or under `relocated_to`, in the unit of its volume.
    fn add_in_place(&mut self, layout: &Layout, path: &Path, relocated_to: Option<&Path>) {
        let volume = layout.volume_of(path).to_path_buf();
        let (destination, boundary) = match relocated_to {
            Some(dir) => (under(dir, &volume), dir.to_path_buf()),
            None => {
                self.volumes_in_place.insert(volume.clone());
                (volume.clone(), volume.clone())
            }
        };
        self.units
            .entry((volume, destination, boundary))
            .or_default()
            .insert(path.to_path_buf());
    }

    /// A component set's files to their original paths (or under `relocated_to`): its whole
    /// directories ([`mirrored_sets`]) as mirrors, the rest file by file.
    fn add_component(
        &mut self,
        layout: &Layout,
        job: &Job<'_>,
        every_set: &[FileSet],
        keep: &[String],
        relocated_to: Option<&Path>,
    ) {
        let mirrored = mirrored_sets(job, every_set, keep);
        let mut rest = Vec::new();
        for &index in &job.files {
            let path = &layout.entries[index].path;
            let text = path.to_str().unwrap_or_default();
            if !mirrored.iter().any(|set| set.contains(text)) {
                rest.push(index);
            }
        }
        for set in &mirrored {
            let source = PathBuf::from(set.path.trim_end_matches('/'));
            if !layout.dirs.contains(&source) {
                continue;
            }
            let volume = layout.volume_of(&source).to_path_buf();
            let (destination, boundary) = match relocated_to {
                Some(dir) => (under(dir, &source), dir.to_path_buf()),
                None => {
                    self.volumes_in_place.insert(volume.clone());
                    (source.clone(), volume)
                }
            };
            self.mirrors.insert((source, destination, boundary));
        }
        self.add_original(layout, &rest, relocated_to);
    }

    /// Every directory of the backup's volumes, to their original paths or under `relocated_to`: a
    /// whole restore brings back empty directories too.
    fn add_all_dirs(&mut self, layout: &Layout, relocated_to: Option<&Path>) {
        for path in &layout.dirs {
            if path != layout.volume_of(path) {
                self.add_in_place(layout, path, relocated_to);
            }
        }
    }

    /// Files to the alternate location of the mapping whose source set holds them (ALT-2).
    fn add_alternate(
        &mut self,
        layout: &Layout,
        files: &[usize],
        mappings: &[AlternateLocationMapping],
    ) {
        for &index in files {
            let path = &layout.entries[index].path;
            let Some(text) = path.to_str() else { continue };
            if let Some(mapping) = mappings.iter().find(|m| m.source.contains(text)) {
                let source = PathBuf::from(&mapping.source.path);
                let destination = PathBuf::from(&mapping.destination);
                self.units
                    .entry((source, destination.clone(), destination))
                    .or_default()
                    .insert(path.clone());
            }
        }
    }

    /// Files staged under `root` for the next boot.
    fn add_pending(&mut self, layout: &Layout, files: &[usize], root: &Path) {
        let staging = root.join("files");
        for &index in files {
            let path = &layout.entries[index].path;
            let volume = layout.volume_of(path).to_path_buf();
            let destination = under(&staging, &volume);
            self.pending.push((under(&staging, path), path.clone()));
            self.units
                .entry((volume, destination, root.to_path_buf()))
                .or_default()
                .insert(path.clone());
        }
    }

    /// The symbolic links among the planned files.
    fn restored_symlinks(&self, layout: &Layout) -> Vec<PathBuf> {
        let planned: BTreeSet<&PathBuf> = self.units.values().flatten().collect();
        layout
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Symlink)
            .filter(|e| {
                planned.contains(&e.path)
                    || self
                        .mirrors
                        .iter()
                        .any(|(source, _, _)| e.path.starts_with(source))
            })
            .map(|e| e.path.clone())
            .collect()
    }

    /// Restores every unit, one after the other; a failed unit fails its files and the rest go on.
    async fn execute(
        &self,
        repository: &Arc<Repository>,
        snapshot: &str,
        reporter: &Arc<dyn Reporter>,
    ) -> Executed {
        let mut executed = Executed {
            files: 0,
            bytes: 0,
            failed: Vec::new(),
            error: None,
        };
        // Mirrors first: a directory that is mirrored may also hold directories that the
        // per-volume units create, and a mirror would delete nothing they restore (they restore
        // only what the backup holds).
        let mut work: Vec<(RestoreUnit, Touched)> = self
            .mirrors
            .iter()
            .map(|(source, destination, boundary)| {
                let unit = RestoreUnit {
                    source: source.clone(),
                    destination: destination.clone(),
                    boundary: boundary.clone(),
                    filter: None,
                    mirror: true,
                };
                (unit, Touched::Under(source.clone()))
            })
            .collect();
        for ((source, destination, boundary), files) in &self.units {
            let unit = RestoreUnit {
                source: source.clone(),
                destination: destination.clone(),
                boundary: boundary.clone(),
                filter: Some(only(source, files)),
                mirror: false,
            };
            work.push((unit, Touched::Files(files.clone())));
        }
        for (n, (unit, touched)) in work.into_iter().enumerate() {
            let (source, destination) = (unit.source.clone(), unit.destination.clone());
            if self.volumes_in_place.contains(&unit.boundary) && !unit.boundary.is_dir() {
                let message = format!(
                    "the backup's volume {} does not exist on this host, so {} is not restored: \
                     mount the volume (or recreate its directory) and restore again, or restore \
                     with --to DIR",
                    unit.boundary.display(),
                    source.display()
                );
                executed.error.get_or_insert_with(|| message.clone());
                executed.failed.push((touched, message));
                continue;
            }
            // Fault point `restore:restoring` (shadowcopy-faults, a test hook), before the first
            // file is written; an injected failure fails the unit as a real one would.
            let injected = match n {
                0 => shadowcopy_faults::point_async("restore:restoring")
                    .await
                    .err(),
                _ => None,
            };
            let result = match injected {
                Some(injected) => Err(BackupError::from(injected)),
                None => {
                    let repository = Arc::clone(repository);
                    let snapshot = snapshot.to_owned();
                    let progress: Arc<dyn shadowcopy_repository::Progress> =
                        Arc::new(RepositoryProgress(Arc::clone(reporter)));
                    blocking("restore files", move || {
                        repository
                            .restore(&snapshot, &[unit], Some(progress))
                            .map_err(BackupError::from)
                    })
                    .await
                }
            };
            match result {
                Ok(summary) => {
                    reporter.files(summary.files + summary.symlinks);
                    executed.files += summary.files;
                    executed.bytes += summary.bytes;
                }
                Err(error) => {
                    let message = format!(
                        "restoring {} to {} failed: {error}",
                        source.display(),
                        destination.display()
                    );
                    executed.error.get_or_insert_with(|| message.clone());
                    executed.failed.push((touched, message));
                }
            }
        }
        executed
    }
}

/// A filter that admits exactly `files` (original paths below `source`) and their directories.
fn only(source: &Path, files: &BTreeSet<PathBuf>) -> shadowcopy_repository::EntryFilter {
    let relative: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.strip_prefix(source).ok().map(Path::to_path_buf))
        .collect();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for file in &relative {
        let mut ancestor = file.parent();
        while let Some(dir) = ancestor.filter(|d| !d.as_os_str().is_empty()) {
            if !dirs.insert(dir.to_path_buf()) {
                break;
            }
            ancestor = dir.parent();
        }
    }
    Arc::new(move |path: &Path, kind| match kind {
        EntryKind::Dir => dirs.contains(path) || relative.contains(path),
        _ => relative.contains(path),
    })
}

/// Which files a restore unit writes, to tell whose restore failed with it.
enum Touched {
    Files(BTreeSet<PathBuf>),
    Under(PathBuf),
}

impl Touched {
    fn contains(&self, path: &Path) -> bool {
        match self {
            Touched::Files(files) => files.contains(path),
            Touched::Under(dir) => path.starts_with(dir),
        }
    }
}

/// A restore staged for the next boot (RESTORE_AT_REBOOT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRestore {
    /// Staged file → the place it replaces.
    pub files: Vec<(PathBuf, PathBuf)>,
}

/// The record of a pending restore, in its staging directory.
const PENDING_FILE: &str = "pending.json";

fn record_pending(root: &Path, files: &[(PathBuf, PathBuf)]) -> Result<(), BackupError> {
    let record = PendingRestore {
        files: files.to_vec(),
    };
    let path = root.join(PENDING_FILE);
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&record).expect("records serialize"),
    )
    .map_err(|source| BackupError::Io {
        action: "record the pending restore in",
        path,
        source,
    })
}

/// What `apply_pending` put in place.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppliedPending {
    /// The staging directories that were applied and removed.
    pub restores: Vec<String>,
    /// The files put in place.
    pub files: u64,
}

/// Puts every pending restore under `pending_dir` in place (what runs at boot): each staged file
/// replaces its original, then the staging directory is removed.
pub fn apply_pending(pending_dir: &Path) -> Result<AppliedPending, BackupError> {
    let mut applied = AppliedPending::default();
    let Ok(entries) = std::fs::read_dir(pending_dir) else {
        return Ok(applied);
    };
    let mut roots: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    roots.sort();
    for root in roots {
        let path = root.join(PENDING_FILE);
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let record: PendingRestore =
            serde_json::from_slice(&text).map_err(|e| BackupError::Io {
                action: "read the pending restore",
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
        for (staged, original) in &record.files {
            if !staged.starts_with(&root) || check_absolute(original).is_err() {
                continue;
            }
            if let Some(parent) = original.parent() {
                std::fs::create_dir_all(parent).map_err(|source| BackupError::Io {
                    action: "create",
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            move_into_place(staged, original)?;
            applied.files += 1;
        }
        std::fs::remove_dir_all(&root).map_err(|source| BackupError::Io {
            action: "remove the applied staging directory",
            path: root.clone(),
            source,
        })?;
        applied.restores.push(root.display().to_string());
    }
    Ok(applied)
}

/// Renames `staged` over `original`, or copies it when they are on different file systems.
fn move_into_place(staged: &Path, original: &Path) -> Result<(), BackupError> {
    let io = |action, source| BackupError::Io {
        action,
        path: original.to_path_buf(),
        source,
    };
    match std::fs::rename(staged, original) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            let temporary = original.with_extension("shadowcopy-pending");
            std::fs::copy(staged, &temporary).map_err(|e| io("copy the staged file to", e))?;
            std::fs::rename(&temporary, original)
                .map_err(|e| io("put the staged file in place as", e))
        }
        Err(e) => Err(io("put the staged file in place as", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_paths_must_be_absolute_and_plain() {
        assert!(check_absolute(Path::new("/srv/db")).is_ok());
        assert!(check_absolute(Path::new("srv/db")).is_err());
        assert!(check_absolute(Path::new("/srv/../etc")).is_err());
    }
}
