//! `shadowcopy backup`: the backup sequence of spec §3 (B1–B15) end to end, from the writers'
//! metadata to BackupComplete, with the files copied from the shadow copies into the repository.
//!
//! The order matters where it protects data:
//! - the repository is opened before the session starts, so a wrong password or path costs no
//!   freeze;
//! - the BCD that is stored is read after DoSnapshotSet, because PostSnapshot may still change it
//!   (BK-COPY-5);
//! - BackupComplete, on which writers may truncate their logs, is sent only after the repository has
//!   committed the snapshot (BK-END-2); if the copy fails the backup is aborted instead and no
//!   writer hears that it completed;
//! - a failed DoSnapshotSet is followed by AbortBackup, never BackupComplete (BK-SNAP-9).
//!
//! Backup types (spec §9) map onto a content-addressed repository as synthetic fulls: every
//! repository snapshot holds the complete selected data as of its shadow copy, so any backup
//! restores on its own (and `restic restore` works on each). The type decides which writer stamps
//! are handed back (INC-3), which file sets are copied at all (INC-2: a LOG backup holds only log
//! file sets), and which earlier backup is the base whose unchanged files are not read again: the
//! last FULL, INCREMENTAL or DIFFERENTIAL for an INCREMENTAL, the last FULL for a DIFFERENTIAL.
//! A FULL or COPY backup reads every file. An INCREMENTAL or DIFFERENTIAL with no base in the
//! repository is made as a FULL, and the manifest says so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shadowcopy_metadata::bcd::BackupState;
use shadowcopy_metadata::enums::{BackupType, SnapshotAttributes, SnapshotContext};
use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::selection::{
    BackupRequest, BackupSelection, ComponentSelector, resolve_backup,
};
use shadowcopy_metadata::{BackupComponents, SnapshotId, WriterMetadata, codes};
use shadowcopy_repository::{
    BackupSummary, EntryFilter, MetadataFile, ParentChoice, Repository, RepositoryError,
    SnapshotSummary, VolumeSource,
};
use shadowcopy_requester::{BackupSession, Client, ComponentKey, WriterStatus};

use crate::copies::ReadableCopy;
use crate::error::BackupError;
use crate::manifest::{
    self, BCD_FILE, BaseBackup, ComponentRecord, MANIFEST_FILE, MANIFEST_FORMAT, Manifest,
    PartialRecord, VolumeRecord, WriterRecord,
};
use crate::partial;
use crate::plan::BackupPlan;
use crate::progress::{Reporter, RepositoryProgress, Step};
use crate::stored::StoredBackup;

/// What to back up.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The backup type (BT-1); UNDEFINED and OTHER are refused.
    pub backup_type: BackupType,
    /// Components, as `WRITER:FULL\PATH` selectors (`shadowcopy writers --components` lists them).
    /// With none, the backup is in volume mode (SEL-6).
    pub components: Vec<ComponentSelector>,
    /// Volumes (mount points) to back up whole, in either mode.
    pub volumes: Vec<PathBuf>,
    /// Where copies that are disk images are mounted while they are read.
    pub runtime_dir: PathBuf,
}

/// How one explicitly included component came out (BK-COPY-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentOutcome {
    /// The writer's name.
    pub writer_name: String,
    /// The component's full path.
    pub full_path: String,
    /// Whether it was saved completely; what SetBackupSucceeded was told.
    pub succeeded: bool,
    /// Why not.
    pub failure: Option<String>,
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The repository snapshot, the backup's id.
    pub snapshot_id: String,
    /// What was stored about the backup.
    pub manifest: Manifest,
    /// The repository's account of the copy.
    pub summary: BackupSummary,
    /// The explicitly included components and whether each was saved.
    pub components: Vec<ComponentOutcome>,
    /// The writers' status after BackupComplete.
    pub writers: Vec<WriterStatus>,
    /// The whole backup's wall time.
    pub duration: Duration,
    /// How long the writers were frozen, as far as the requester can see it: DoSnapshotSet's wall
    /// time.
    pub snapshot_set_duration: Duration,
}

impl BackupReport {
    /// Whether every component was saved.
    pub fn succeeded(&self) -> bool {
        self.components.iter().all(|c| c.succeeded)
    }
}

/// Runs one backup through the coordinator at `client` into `repository`.
pub async fn run_backup(
    client: &Client,
    repository: Arc<Repository>,
    options: &BackupOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    if matches!(
        options.backup_type,
        BackupType::Undefined | BackupType::Other
    ) {
        return Err(BackupError::invalid(
            &codes::E_INVALIDARG,
            format!(
                "backup type {} cannot be made; use full, incremental, differential, copy or log",
                options.backup_type
            ),
        ));
    }
    if options.components.is_empty() && options.volumes.is_empty() {
        return Err(BackupError::invalid(
            &codes::E_INVALIDARG,
            "nothing to back up: name components (`shadowcopy writers --components` lists them) \
             or volumes (mount points)",
        ));
    }
    let component_mode = !options.components.is_empty();
    let history = {
        let repository = Arc::clone(&repository);
        blocking("list the repository's backups", move || {
            repository.snapshots().map_err(BackupError::from)
        })
        .await?
    };

    // Provider names for the manifest; a daemon that cannot list them still makes backups.
    let provider_names: Vec<(String, String)> = client
        .admin()
        .list_providers()
        .await
        .map(|providers| {
            providers
                .into_iter()
                .map(|p| (p.id.to_string(), p.name))
                .collect()
        })
        .unwrap_or_default();
    let mut session = client.backup_session().await?;
    let context = Context {
        repository: &repository,
        options,
        component_mode,
        history: &history,
        reporter: &reporter,
        provider_names: &provider_names,
    };
    let result = drive(&mut session, &context, started_at).await;
    match result {
        Ok(mut report) => {
            // Fault point `backup:release` (shadowcopy-faults, a test hook).
            shadowcopy_faults::point_async("backup:release").await?;
            session
                .release()
                .await
                .map_err(|error| BackupError::Stored {
                    snapshot_id: report.snapshot_id.clone(),
                    completed: true,
                    cause: Box::new(error.into()),
                })?;
            report.duration = started.elapsed();
            Ok(report)
        }
        Err(failure) => {
            // After PrepareForBackup a backup is stopped by AbortBackup (BK-ABORT-2, BK-SNAP-9);
            // before it the call is refused as out of order, which is harmless. Then release.
            if failure.aborts {
                let _ = session.abort_backup().await;
            }
            let _ = session.release().await;
            Err(failure.error)
        }
    }
}

/// A failure inside the session, and whether the session must be aborted before release.
struct Failure {
    error: BackupError,
    aborts: bool,
}

impl<E: Into<BackupError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            error: error.into(),
            aborts: true,
        }
    }
}

/// What one backup works with besides its session.
struct Context<'a> {
    repository: &'a Arc<Repository>,
    options: &'a BackupOptions,
    component_mode: bool,
    history: &'a [SnapshotSummary],
    reporter: &'a Arc<dyn Reporter>,
    /// (provider id, provider name) of the daemon's providers.
    provider_names: &'a [(String, String)],
}

async fn drive(
    session: &mut BackupSession,
    context: &Context<'_>,
    started_at: String,
) -> Result<BackupReport, Failure> {
    let Context {
        repository,
        options,
        component_mode,
        history,
        reporter,
        provider_names,
    } = *context;
    let mut notes = Vec::new();
    // B1–B5.
    session.initialize_for_backup(None).await?;
    session
        .set_context(SnapshotContext::Backup, SnapshotAttributes::empty())
        .await?;
    reporter.step(Step::GatheringWriters);
    let writers = session.gather_writer_metadata().await?;

    // B6: the selection, the volumes and the base backup.
    let selection = resolve(&writers, options, component_mode, options.backup_type)?;
    let plan = BackupPlan::new(&selection, &writers, &options.volumes)?;
    let volumes: Vec<String> = plan
        .volumes
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let base = find_base(history, options.backup_type, &volumes, &selection);
    let backup_type = match (&base, options.backup_type) {
        (None, BackupType::Incremental | BackupType::Differential) => {
            let note = format!(
                "no earlier backup of these volumes and components is in the repository to base a \
                 {} backup on, so this backup is FULL",
                options.backup_type
            );
            reporter.note(&note);
            notes.push(note);
            BackupType::Full
        }
        _ => options.backup_type,
    };
    let selection = if backup_type == options.backup_type {
        selection
    } else {
        resolve(&writers, options, component_mode, backup_type)?
    };
    for writer in &selection.writers {
        notes.extend(writer.notes.iter().cloned());
    }
    session
        .set_backup_state(BackupState {
            component_mode,
            bootable_system_state: false,
            backup_type,
            partial_file_support: true,
        })
        .await?;
    let keys = session.apply_selection(&selection).await?;
    if let Some(base) = &base {
        hand_back_stamps(session, repository, base, &keys, &selection).await?;
    }

    // B7–B8: the set, unless nothing needs a shadow copy (BK-PREP-6, TS-43).
    let needs_set = !plan.volumes.is_empty() && (!component_mode || selection.needs_snapshot());
    let mut snapshots: Vec<(String, SnapshotId)> = Vec::new();
    if needs_set {
        session.start_snapshot_set().await?;
        for volume in &volumes {
            let id = session.add_to_snapshot_set(volume, None).await?;
            snapshots.push((volume.clone(), id));
        }
    }

    // B9–B10.
    reporter.step(Step::Preparing);
    session.prepare_for_backup().await?;
    let prepared = session.gather_writer_status().await?;

    // B11–B12.
    let mut set_duration = Duration::ZERO;
    let statuses = if needs_set {
        reporter.step(Step::CreatingShadowCopies);
        let set_started = Instant::now();
        session.do_snapshot_set().await?;
        set_duration = set_started.elapsed();
        session.gather_writer_status().await?
    } else {
        prepared
    };
    let failed_writers = failed_writers(&statuses);
    let mut plan = plan;
    let bcd = session.backup_components().await?;
    plan.add_writer_files(&bcd);

    let mut readable = Vec::new();
    let mut volume_records = Vec::new();
    for volume in &volumes {
        let snapshot = snapshots
            .iter()
            .find(|(v, _)| v == volume)
            .map(|(_, id)| *id);
        let (root, provider) = match snapshot {
            Some(id) => {
                let properties = session.snapshot_properties(id).await?;
                let copy = ReadableCopy::open(&properties, &options.runtime_dir)?;
                let root = copy.root.clone();
                readable.push(copy);
                let provider = properties.provider_id.map(|id| {
                    let id = id.to_string();
                    provider_names
                        .iter()
                        .find(|(known, _)| *known == id)
                        .map_or(id, |(_, name)| name.clone())
                });
                (root, provider)
            }
            None => (PathBuf::from(volume), None),
        };
        volume_records.push((
            VolumeSource {
                original: PathBuf::from(volume),
                read_from: root,
            },
            VolumeRecord {
                volume: volume.clone(),
                snapshot_id: snapshot,
                provider,
            },
        ));
    }

    let mut components = component_records(&selection, &bcd, &failed_writers);
    let sources: Vec<VolumeSource> = volume_records.iter().map(|(s, _)| s.clone()).collect();
    let partials = capture_partials(&selection, &bcd, &sources, &mut components, &mut plan);
    for note in &partials.notes {
        reporter.note(note);
    }
    notes.extend(partials.notes);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        backup_type,
        requested_type: options.backup_type,
        component_mode,
        partial_file_support: true,
        set_id: session.snapshot_set_id(),
        hostname: hostname(),
        started: started_at,
        base: base.as_ref().map(|b| BaseBackup {
            snapshot_id: b.id.clone(),
            backup_type: b.backup_type,
        }),
        volumes: volume_records.iter().map(|(_, r)| r.clone()).collect(),
        components,
        writers: statuses.iter().map(writer_record).collect(),
        wmd_files: (1..=writers.len())
            .map(|i| format!("wmd-{i}.json"))
            .collect(),
        notes,
        partial_files: partials.records,
    };
    let mut documents = documents(&manifest, &bcd, &writers);
    documents.extend(partials.data);

    // The writers whose freeze failed: their components' files are left out of the backup; the
    // rest of the set goes on (BK-SNAP-7, ERR-3).
    let left_out: Vec<_> = manifest
        .components
        .iter()
        .filter(|c| !c.backed_up)
        .cloned()
        .collect();
    for component in &left_out {
        let note = format!(
            "component `{}` of writer `{}` is not backed up: {}",
            component.full_path,
            component.writer_name,
            component.failure.as_deref().unwrap_or("its writer failed")
        );
        reporter.note(&note);
    }
    let plan = Arc::new(plan.without(&left_out_sets(&selection, &left_out)));

    // B12: the copy, on a blocking thread (rustic's archiver is synchronous).
    reporter.step(Step::Copying);
    let tags = manifest::tags(&manifest);
    let parent = match (backup_type, &base) {
        (BackupType::Incremental | BackupType::Differential, Some(base)) => {
            ParentChoice::Snapshot(base.id.clone())
        }
        (BackupType::Log, _) => ParentChoice::Latest,
        _ => ParentChoice::None,
    };
    // Fault point `backup:copy` (shadowcopy-faults, a test hook) at the first entry the copy
    // reads; an injected failure fails the copy once it returns, as a real read error would.
    let injected: Arc<Mutex<Option<shadowcopy_faults::Injected>>> = Arc::default();
    let filter: EntryFilter = {
        let plan = Arc::clone(&plan);
        let reporter = Arc::clone(reporter);
        let (injected, first) = (Arc::clone(&injected), AtomicBool::new(true));
        Arc::new(move |path: &Path, kind| {
            if first.swap(false, Ordering::Relaxed)
                && let Err(error) = shadowcopy_faults::point("backup:copy")
            {
                *injected.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
            }
            let included = plan.includes(path, kind);
            if included && kind != shadowcopy_repository::EntryKind::Dir {
                reporter.files(1);
            }
            included
        })
    };
    let progress: Arc<dyn shadowcopy_repository::Progress> =
        Arc::new(RepositoryProgress(Arc::clone(reporter)));
    let copied = {
        let repository = Arc::clone(repository);
        blocking("copy into the repository", move || {
            Ok(repository.backup(&shadowcopy_repository::BackupRequest {
                volumes: &sources,
                tags: &tags,
                metadata: &documents,
                filter: Some(filter),
                parent,
                ignore_ctime: false,
                progress: Some(progress),
            }))
        })
        .await?
    };
    drop(readable);
    if let Some(error) = injected.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(error.into());
    }
    let summary = match copied {
        Ok(summary) => summary,
        Err(error @ RepositoryError::SourceUnreadable { .. }) => {
            // The snapshot exists but misses files: no writer may hear that this backup completed,
            // since a log truncated now could not be restored (BK-END-2).
            return Err(Failure {
                error: error.into(),
                aborts: true,
            });
        }
        Err(error) => return Err(error.into()),
    };

    // B12: the outcome per explicit component (BK-COPY-4), then B13–B14. The repository holds the
    // backup from here on: a failure now (the coordinator gone) must say so, or the user would
    // take a stored, restorable backup for a lost one.
    let stored = |error: shadowcopy_requester::RequesterError| {
        Failure::from(BackupError::Stored {
            snapshot_id: summary.snapshot_id.clone(),
            completed: false,
            cause: Box::new(error.into()),
        })
    };
    let mut outcomes = Vec::new();
    for key in &keys {
        let record = manifest.components.iter().find(|c| {
            c.explicit && c.class_id == key.writer_class_id && c.full_path == key.full_path()
        });
        let (succeeded, failure) = match record {
            Some(record) => (record.backed_up, record.failure.clone()),
            None => (true, None),
        };
        session
            .set_backup_succeeded(key, succeeded)
            .await
            .map_err(stored)?;
        outcomes.push(ComponentOutcome {
            writer_name: record.map(|r| r.writer_name.clone()).unwrap_or_default(),
            full_path: key.full_path(),
            succeeded,
            failure,
        });
    }
    reporter.step(Step::Completing);
    session.backup_complete().await.map_err(stored)?;
    let writers_after = session.gather_writer_status().await.map_err(stored)?;
    Ok(BackupReport {
        snapshot_id: summary.snapshot_id.clone(),
        manifest,
        summary,
        components: outcomes,
        writers: writers_after,
        duration: Duration::ZERO,
        snapshot_set_duration: set_duration,
    })
}

/// The selection for `backup_type`.
fn resolve(
    writers: &[WriterMetadata],
    options: &BackupOptions,
    component_mode: bool,
    backup_type: BackupType,
) -> Result<BackupSelection, BackupError> {
    let request = BackupRequest {
        backup_type,
        component_mode,
        selected: options.components.clone(),
        ..BackupRequest::default()
    };
    resolve_backup(writers, &request).map_err(|error| {
        BackupError::invalid(
            leak_code(error.code()),
            format!(
                "the components cannot be backed up as asked: {error}; `shadowcopy writers \
                 --components` lists what can be selected"
            ),
        )
    })
}

/// The registry entry of a code given by value.
fn leak_code(code: codes::ErrorCode) -> &'static codes::ErrorCode {
    codes::lookup(code.value).unwrap_or(&codes::E_INVALIDARG)
}

/// A backup in the repository that can be the base of this one.
#[derive(Debug, Clone)]
struct Base {
    id: String,
    backup_type: BackupType,
}

/// The base of an incremental (the latest FULL, INCREMENTAL or DIFFERENTIAL) or differential (the
/// latest FULL) backup: a shadowcopy backup of this host, of exactly these volumes (restic's parent
/// group), with at least these components.
fn find_base(
    history: &[SnapshotSummary],
    backup_type: BackupType,
    volumes: &[String],
    selection: &BackupSelection,
) -> Option<Base> {
    let allowed: &[BackupType] = match backup_type {
        BackupType::Incremental => &[
            BackupType::Full,
            BackupType::Incremental,
            BackupType::Differential,
        ],
        BackupType::Differential => &[BackupType::Full],
        _ => return None,
    };
    let host = hostname();
    let want_paths: BTreeSet<&str> = volumes.iter().map(String::as_str).collect();
    let want_components: BTreeSet<String> = selection
        .writers
        .iter()
        .flat_map(|w| {
            w.explicit_components()
                .map(move |c| format!("{}:{}", w.writer_name, c.full_path()))
        })
        .collect();
    history
        .iter()
        .filter(|s| s.hostname == host)
        .filter(|s| s.paths.iter().map(String::as_str).collect::<BTreeSet<_>>() == want_paths)
        .filter_map(|s| Some((s, manifest::parse_tags(&s.tags)?)))
        .filter(|(_, t)| t.backup_type.is_some_and(|bt| allowed.contains(&bt)))
        .filter(|(_, t)| {
            let have: BTreeSet<&String> = t.components.iter().collect();
            want_components.iter().all(|c| have.contains(c))
        })
        .max_by(|(a, _), (b, _)| a.time.cmp(&b.time))
        .map(|(s, t)| Base {
            id: s.id.clone(),
            backup_type: t.backup_type.unwrap_or(BackupType::Full),
        })
}

/// INC-3: every explicit component's stamp from the base backup goes back to its writer before
/// PrepareForBackup.
async fn hand_back_stamps(
    session: &mut BackupSession,
    repository: &Arc<Repository>,
    base: &Base,
    keys: &[ComponentKey],
    selection: &BackupSelection,
) -> Result<(), BackupError> {
    let stored = {
        let repository = Arc::clone(repository);
        let id = base.id.clone();
        blocking("read the base backup", move || {
            StoredBackup::load(&repository, &id)
        })
        .await?
    };
    for key in keys {
        let Some(writer) = selection.writer(key.writer_instance_id) else {
            continue;
        };
        let stamp = stored.bcd.writers().iter().find_map(|entry| {
            (entry.class_id == key.writer_class_id && entry.instance_name == writer.instance_name)
                .then(|| entry.component(&key.logical_path, &key.name))
                .flatten()
                .and_then(|record| record.backup_stamp().map(str::to_owned))
        });
        if let Some(stamp) = stamp {
            session.set_previous_backup_stamp(key, &stamp).await?;
        }
    }
    Ok(())
}

/// Writers that failed in this session, by instance id, with what to tell the user.
fn failed_writers(statuses: &[WriterStatus]) -> Vec<(WriterStatus, String)> {
    statuses
        .iter()
        .filter(|s| s.has_failed())
        .map(|s| {
            let why = match s.failure() {
                Some(code) => format!(
                    "its writer ended {} with {} ({})",
                    s.state, code.name, code.title
                ),
                None => format!("its writer ended {}", s.state),
            };
            let why = match &s.application_message {
                Some(message) => format!("{why}: {message}"),
                None => why,
            };
            (s.clone(), why)
        })
        .collect()
}

/// The manifest's component records: every included component with its stamp, and not backed up
/// when its writer failed.
fn component_records(
    selection: &BackupSelection,
    bcd: &BackupComponents,
    failed: &[(WriterStatus, String)],
) -> Vec<ComponentRecord> {
    let mut records = Vec::new();
    for writer in &selection.writers {
        let failure = failed
            .iter()
            .find(|(s, _)| s.instance_id == writer.instance_id)
            .map(|(_, why)| why.clone());
        let entry = bcd.writer_instance(writer.instance_id);
        for component in &writer.components {
            let stamp = entry
                .and_then(|e| e.component(&component.logical_path, &component.name))
                .and_then(|r| r.backup_stamp().map(str::to_owned));
            let copies_nothing = !component.files.is_empty()
                && component
                    .files
                    .iter()
                    .all(|f| f.copy == shadowcopy_metadata::selection::CopyMode::Skip);
            records.push(ComponentRecord {
                writer_name: writer.writer_name.clone(),
                class_id: writer.class_id,
                instance_name: writer.instance_name.clone(),
                full_path: component.full_path(),
                explicit: component.is_explicit(),
                backed_up: failure.is_none(),
                failure: failure.clone().or_else(|| {
                    copies_nothing.then(|| {
                        format!(
                            "no file set of it is copied in a {} backup (INC-2)",
                            selection.backup_type
                        )
                    })
                }),
                backup_stamp: stamp,
            });
        }
    }
    records
}

/// What [`capture_partials`] found.
struct Partials {
    records: Vec<PartialRecord>,
    data: Vec<MetadataFile>,
    notes: Vec<String>,
}

/// Where the file at `original` is read: in the shadow copy of the innermost volume holding it.
fn readable_path(sources: &[VolumeSource], original: &Path) -> Option<PathBuf> {
    sources
        .iter()
        .filter(|s| original.starts_with(&s.original))
        .max_by_key(|s| s.original.components().count())
        .map(|s| {
            s.read_from
                .join(original.strip_prefix(&s.original).unwrap_or(original))
        })
}

/// PF-1 to PF-4: reads the ranges of every partial file the writers named for the components that
/// are backed up, from the shadow copies. The files themselves leave the tree, their ranges files
/// join it. A partial file that cannot be read fails its component; one that is also a differenced
/// file is backed up whole, as the differenced entry says (PF-4).
fn capture_partials(
    selection: &BackupSelection,
    bcd: &BackupComponents,
    sources: &[VolumeSource],
    components: &mut [ComponentRecord],
    plan: &mut BackupPlan,
) -> Partials {
    let mut partials = Partials {
        records: Vec::new(),
        data: Vec::new(),
        notes: Vec::new(),
    };
    let mut total = 0u64;
    for writer in &selection.writers {
        let Some(entry) = bcd.writer_instance(writer.instance_id) else {
            continue;
        };
        for component in writer.explicit_components() {
            let full_path = component.full_path();
            let Some(record) = components
                .iter_mut()
                .find(|c| c.class_id == writer.class_id && c.full_path == full_path)
            else {
                continue;
            };
            if !record.backed_up {
                continue;
            }
            let Some(bcd_record) = entry.component(&component.logical_path, &component.name) else {
                continue;
            };
            for file in bcd_record.partial_files() {
                let original = Path::new(&file.path).join(&file.filename);
                let text = original.to_string_lossy();
                if bcd_record
                    .differenced_files()
                    .iter()
                    .any(|d| d.file_set().contains(&text))
                {
                    partials.notes.push(format!(
                        "writer `{}` named {} both a partial and a differenced file; it is backed                          up whole, as the differenced entry says (PF-4)",
                        writer.writer_name, text
                    ));
                    continue;
                }
                let captured = partial::resolve(&file.ranges, |p| readable_path(sources, p))
                    .and_then(|(ranges, ranges_file)| {
                        let readable = readable_path(sources, &original).ok_or_else(|| {
                            "it is on no volume of the shadow copy set (PF-1)".to_owned()
                        })?;
                        let data = partial::capture(&readable, &ranges)?;
                        Ok((ranges, ranges_file, data))
                    })
                    .and_then(|captured| {
                        total += captured.2.len() as u64;
                        if total > partial::MAX_PARTIAL_BYTES {
                            return Err(format!(
                                "the partial files of this backup hold more than {} bytes, which                                  travel with its documents; name fewer or smaller ranges",
                                partial::MAX_PARTIAL_BYTES
                            ));
                        }
                        Ok(captured)
                    });
                match captured {
                    Ok((ranges, ranges_file, data)) => {
                        let name = format!("partial-{}.bin", partials.records.len() + 1);
                        plan.ranges_only(original.clone());
                        if let Some(ranges_file) = &ranges_file {
                            plan.always(PathBuf::from(ranges_file));
                        }
                        partials.records.push(PartialRecord {
                            writer_name: writer.writer_name.clone(),
                            class_id: writer.class_id,
                            component: full_path.clone(),
                            path: text.into_owned(),
                            ranges,
                            ranges_file,
                            data: name.clone(),
                        });
                        partials.data.push(MetadataFile {
                            name,
                            contents: data,
                        });
                    }
                    Err(why) => {
                        record.backed_up = false;
                        record.failure = Some(format!("partial file {text}: {why}"));
                    }
                }
            }
        }
    }
    partials
}

/// The file sets of the components that are left out.
fn left_out_sets(
    selection: &BackupSelection,
    left_out: &[ComponentRecord],
) -> Vec<shadowcopy_metadata::wmd::FileSet> {
    selection
        .writers
        .iter()
        .flat_map(|w| w.components.iter().map(move |c| (w, c)))
        .filter(|(w, c)| {
            left_out
                .iter()
                .any(|l| l.class_id == w.class_id && l.full_path == c.full_path())
        })
        .flat_map(|(_, c)| c.files.iter().map(|f| f.file_set()))
        .collect()
}

fn writer_record(status: &WriterStatus) -> WriterRecord {
    WriterRecord {
        writer_name: status.writer_name.clone(),
        class_id: status.class_id,
        instance_name: status.instance_name.clone(),
        state: status.state.to_string(),
        failure: status.failure().map(|code| code.name.to_owned()),
    }
}

/// The documents stored with the backup: manifest, BCD and every WMD.
fn documents(
    manifest: &Manifest,
    bcd: &BackupComponents,
    writers: &[WriterMetadata],
) -> Vec<MetadataFile> {
    let mut files = vec![
        MetadataFile {
            name: MANIFEST_FILE.to_owned(),
            contents: serde_json::to_vec_pretty(manifest).expect("manifests serialize"),
        },
        MetadataFile {
            name: BCD_FILE.to_owned(),
            contents: bcd.to_canonical_json().into_bytes(),
        },
    ];
    for (name, wmd) in manifest.wmd_files.iter().zip(writers) {
        files.push(MetadataFile {
            name: name.clone(),
            contents: wmd.to_canonical_json().into_bytes(),
        });
    }
    files
}

/// Runs repository work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(BackupError::Internal {
            what,
            detail: e.to_string(),
        })
    })
}

/// This host's name, as restic records it.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Now, in RFC 3339 (UTC, seconds).
pub(crate) fn now_rfc3339() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(seconds)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (the civil-from-days algorithm of H. Hinnant).
fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
