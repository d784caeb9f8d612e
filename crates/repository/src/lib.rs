//! The backup repository: a restic repository (format v2) written through `rustic_core`, so that
//! Debian's `restic` 0.14 can list, check and restore what shadowcopy backs up.
//!
//! One backup of a shadow copy set is one repository snapshot ([`Repository::backup`]). Each
//! volume of the set is read from its shadow copy ([`VolumeSource::read_from`]) but recorded under
//! its original mount point ([`VolumeSource::original`]), and the snapshot's `paths` are those
//! mount points. The next backup of the same volumes, read from other shadow copies at other
//! paths, therefore falls in the same restic group (host and paths), finds the previous snapshot
//! as its parent and skips unchanged files (platform facts §3 and §4e). Volumes may nest
//! (`/srv` and `/srv/db`); the inner volume owns its subtree (`source.rs`).
//!
//! The backup documents (the BCD and every WMD) travel in the same snapshot, as files under
//! `/.shadowcopy-backup/` at the root of the snapshot's tree ([`METADATA_DIR`]), beside the
//! volumes rather than inside one. They are merged into the tree while it is archived, so there
//! is no second snapshot to keep in step with the first, and a plain `restic restore` brings them
//! back too.
//!
//! Reading goes the other way through trees that are treated as untrusted input
//! ([`Repository::entries`], [`Repository::restore`]): node names are checked to be single path
//! components and unique per directory (`tree.rs`), and a restore never writes outside the targets
//! it was given, whatever the repository holds and whatever symlinks it finds at the destination
//! (`restore.rs`). [`Repository::check`] runs rustic's check and reports what it finds.
//!
//! The password comes from `RESTIC_PASSWORD` or `RESTIC_PASSWORD_FILE`, as restic users expect
//! ([`Password::from_env`]). Asking on the terminal is not done yet; it belongs to the CLI.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustic_backend::BackendOptions;
use rustic_core::repofile::{MasterKey, PackId, SnapshotFile, SnapshotId};
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, Id, KeyOptions, OpenStatus,
    ParentOptions, RepositoryBackends, RepositoryOptions, RusticError, RusticResult,
    SnapshotOptions,
};

mod progress;
mod restore;
mod source;
mod tree;

pub use progress::Progress;
pub use restore::{RestoreSummary, RestoreUnit};

use progress::{Bars, Forwarding};
use source::{SetSource, Volume};
use tree::{Reader, Walk, kind_of};

/// The directory at the root of a snapshot's tree that holds the backup documents.
///
/// When a backup is given documents, a volume recorded as `/` that has a directory of this name
/// (for example because a whole backup was once restored onto it) has it replaced by the
/// backup's own documents. No volume may be recorded at or under it.
pub const METADATA_DIR: &str = ".shadowcopy-backup";

/// The most volumes one backup takes: a shadow copy set's limit (LIMIT-1).
pub const MAX_VOLUMES: usize = 64;

/// Something the repository layer could not do, naming the repository and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// Neither `RESTIC_PASSWORD` nor `RESTIC_PASSWORD_FILE` is set.
    #[error(
        "no repository password: set RESTIC_PASSWORD to the password, or RESTIC_PASSWORD_FILE to a file that holds it"
    )]
    PasswordMissing,
    /// The password file named by `RESTIC_PASSWORD_FILE` could not be read or is empty.
    #[error(
        "cannot read the repository password from {path} (RESTIC_PASSWORD_FILE): {reason}; fix the file or set RESTIC_PASSWORD instead"
    )]
    PasswordFile {
        /// The password file.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// The password does not open any key of the repository.
    #[error(
        "wrong password for repository {repo}: no key in it opens with the given password; check RESTIC_PASSWORD or RESTIC_PASSWORD_FILE"
    )]
    WrongPassword {
        /// The repository.
        repo: PathBuf,
    },
    /// The directory is neither empty nor a restic repository.
    #[error(
        "{repo} is not a restic repository (it has no `config` file) and is not empty, so it is not initialised either; give an empty or new directory, or the path of an existing repository"
    )]
    NotARepository {
        /// The directory.
        repo: PathBuf,
    },
    /// A file-system operation on the repository or a backup source failed.
    #[error("repository {repo}: cannot {action} {path}: {source}")]
    Io {
        /// The repository.
        repo: PathBuf,
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A caller-supplied argument cannot be used.
    #[error("repository {repo}: {message}")]
    InvalidInput {
        /// The repository.
        repo: PathBuf,
        /// What is wrong and what to give instead.
        message: String,
    },
    /// `rustic_core` failed while doing `action`.
    #[error(
        "repository {repo}: {action} failed: {source}; run `restic -r {repo} check` if this persists"
    )]
    Rustic {
        /// The repository.
        repo: PathBuf,
        /// What was being done ("open", "initialise", "back up /data", ...).
        action: String,
        /// The error from `rustic_core`.
        source: Box<RusticError>,
    },
    /// `rustic_core` stopped unexpectedly (it panicked) while doing `action`.
    #[error(
        "repository {repo}: {action} stopped unexpectedly inside rustic_core: {reason}; nothing of it counts as done (a restore may have left files partly written), run `restic -r {repo} check` and try again"
    )]
    Aborted {
        /// The repository.
        repo: PathBuf,
        /// What was being done.
        action: String,
        /// The panic message.
        reason: String,
    },
    /// The snapshot was saved, but some source entries could not be read and are missing from it.
    #[error(
        "repository {repo}: snapshot {snapshot_id} of {volumes} is incomplete, {count} entries could not be read (first: {first}); fix their permissions or the source and back up again",
        volumes = show_paths(volumes),
        count = errors.len(),
        first = errors.first().map_or("", String::as_str)
    )]
    SourceUnreadable {
        /// The repository.
        repo: PathBuf,
        /// The volumes of the backup, by original path.
        volumes: Vec<PathBuf>,
        /// The snapshot that was saved without them.
        snapshot_id: String,
        /// One message per entry that could not be read.
        errors: Vec<String>,
    },
    /// The parent snapshot asked for ([`ParentChoice::Snapshot`]) cannot be this backup's parent.
    #[error(
        "repository {repo}: snapshot {snapshot} cannot be the parent of this backup: {reason}; back up with ParentChoice::Latest or ParentChoice::None instead (every file is then compared with the latest snapshot of these volumes, or read)"
    )]
    ParentUnusable {
        /// The repository.
        repo: PathBuf,
        /// The snapshot asked for.
        snapshot: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A path asked for is not in the snapshot.
    #[error(
        "repository {repo}: snapshot {snapshot} has no {path}; list what it holds with Repository::entries or `restic -r {repo} ls {snapshot}`"
    )]
    NotInSnapshot {
        /// The repository.
        repo: PathBuf,
        /// The snapshot.
        snapshot: String,
        /// The path asked for.
        path: PathBuf,
    },
    /// A tree of the snapshot cannot be read safely (a crafted or damaged repository).
    #[error(
        "snapshot {snapshot} cannot be read safely at {path}: {reason}; it was written by something other than shadowcopy or restic, or is damaged, so it is neither listed nor restored (nothing was written); check the repository with `restic check` and restore from another snapshot"
    )]
    UnsafeTree {
        /// The snapshot.
        snapshot: String,
        /// The directory in the snapshot where the problem is.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A restore would write outside its target.
    #[error("restore refused at {path}: {reason}")]
    UnsafeDestination {
        /// The path that would lead out of the target.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Something at the destination is in the way of a restored entry and is not removed.
    #[error("restore stopped at {path}: {reason}")]
    DestinationConflict {
        /// The existing entry.
        path: PathBuf,
        /// What is in the way, and what to do.
        reason: String,
    },
    /// A file-system operation at a restore destination failed.
    #[error(
        "cannot {action} {path} while restoring: {source}; check that the destination is writable and has space"
    )]
    RestoreIo {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn show_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A function turning a rustic error into [`RepositoryError::Rustic`].
pub(crate) fn rustic_error(
    repo: &Path,
    action: String,
) -> impl Fn(Box<RusticError>) -> RepositoryError + use<> {
    let repo = repo.to_path_buf();
    move |source| RepositoryError::Rustic {
        repo: repo.clone(),
        action: action.clone(),
        source,
    }
}

/// A repository password. Its `Debug` form never shows the password.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// A password given directly (for example read from a prompt by the CLI).
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password restic would use: `RESTIC_PASSWORD`, else the contents of the file named by
    /// `RESTIC_PASSWORD_FILE` with surrounding white space removed (as restic does), else
    /// [`RepositoryError::PasswordMissing`]. A terminal prompt is not offered here; the CLI may add
    /// one and pass its answer to [`Password::new`].
    pub fn from_env() -> Result<Self, RepositoryError> {
        if let Some(pw) = std::env::var_os("RESTIC_PASSWORD") {
            return Ok(Self(pw.to_string_lossy().into_owned()));
        }
        let Some(file) = std::env::var_os("RESTIC_PASSWORD_FILE") else {
            return Err(RepositoryError::PasswordMissing);
        };
        let path = PathBuf::from(file);
        let text = std::fs::read_to_string(&path).map_err(|e| RepositoryError::PasswordFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let pw = text.trim();
        if pw.is_empty() {
            return Err(RepositoryError::PasswordFile {
                path,
                reason: "the file is empty".to_owned(),
            });
        }
        Ok(Self(pw.to_owned()))
    }
}

/// A file stored with a backup at `/.shadowcopy-backup/<name>` in the snapshot (the BCD, a WMD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataFile {
    /// The file name: one path component, no `/`, not `.` or `..`.
    pub name: String,
    /// The contents.
    pub contents: Vec<u8>,
}

/// One volume of a backup: read from `read_from` (the shadow copy's root directory), recorded as
/// `original`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSource {
    /// The volume's original mount point, absolute (for example `/srv/db`). It is the path the
    /// snapshot records, and the path a restore of the volume to its place writes to.
    pub original: PathBuf,
    /// The shadow copy's root directory, read instead of the live volume.
    pub read_from: PathBuf,
}

/// What a tree entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (never followed).
    Symlink,
    /// A device node, FIFO or socket.
    Other,
}

/// Decides per entry, by its path, whether it goes into a backup (by its original absolute path)
/// or a restore (by its path relative to the unit's source). `false` on a directory leaves out its
/// whole subtree, which is then not even read.
pub type EntryFilter = Arc<dyn Fn(&Path, EntryKind) -> bool + Send + Sync>;

/// Which snapshot a backup compares files with, so that unchanged ones are not read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentChoice {
    /// rustic's default: the latest snapshot of the same host and volume paths.
    Latest,
    /// Exactly this snapshot (an id or a unique prefix), for example the last full backup for a
    /// differential one. It must be of the same host and the same set of volume paths, since
    /// rustic only takes a parent from the backup's own group (it would silently read every file
    /// otherwise); anything else is refused with [`RepositoryError::ParentUnusable`].
    Snapshot(String),
    /// No parent: every file is read.
    None,
}

/// One backup: volumes, tags, documents and how to treat them.
#[derive(Clone)]
pub struct BackupRequest<'a> {
    /// The volumes, 1 to [`MAX_VOLUMES`]. Originals are absolute, distinct, free of `..` and valid
    /// UTF-8 (restic stores them as strings); one may lie inside another (`/srv` and `/srv/db`),
    /// and then the inner volume's tree takes the place of its mount point in the outer one.
    pub volumes: &'a [VolumeSource],
    /// Tags for the snapshot, each non-empty and without `,` (restic's tag filters split on it).
    pub tags: &'a [String],
    /// Documents stored at `/.shadowcopy-backup/<name>` at the root of the snapshot's tree.
    pub metadata: &'a [MetadataFile],
    /// Entries left out, by original path.
    pub filter: Option<EntryFilter>,
    /// The parent snapshot.
    pub parent: ParentChoice,
    /// Compare files with the parent without their ctime, for copies whose ctime is not the
    /// original's (reflink file copies); size and mtime still have to match.
    pub ignore_ctime: bool,
    /// Bytes read, as rustic reads them; the total comes from a scan that runs alongside.
    pub progress: Option<Arc<dyn Progress>>,
}

impl fmt::Debug for BackupRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupRequest")
            .field("volumes", &self.volumes)
            .field("tags", &self.tags)
            .field(
                "metadata",
                &self.metadata.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .field("filter", &self.filter.is_some())
            .field("parent", &self.parent)
            .field("ignore_ctime", &self.ignore_ctime)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What one backup did, from rustic's snapshot summary.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSummary {
    /// The repository snapshot (64 hex digits), as `restic snapshots` shows it.
    pub snapshot_id: String,
    /// The parent snapshot used to skip unchanged files, if one was found.
    pub parent_id: Option<String>,
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files in the parent snapshot that changed and were read again.
    pub files_changed: u64,
    /// Files taken over from the parent snapshot without reading them.
    pub files_unmodified: u64,
    /// Bytes of new data (before compression) added to the repository.
    pub bytes_added: u64,
    /// Bytes the new data takes in the repository (after compression and encryption).
    pub bytes_stored: u64,
    /// Bytes of all files in the snapshot.
    pub bytes_processed: u64,
    /// Wall time of the backup, including opening the index.
    pub duration: Duration,
}

/// One snapshot of the repository, as `restic snapshots` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The snapshot id (64 hex digits).
    pub id: String,
    /// When the backup started, RFC 3339 in UTC.
    pub time: String,
    /// The recorded paths (for a shadowcopy backup, the original volume paths), sorted.
    pub paths: Vec<String>,
    /// The tags.
    pub tags: Vec<String>,
    /// The host that made it.
    pub hostname: String,
    /// The parent snapshot the backup compared files with, if any.
    pub parent: Option<String>,
    /// Files and symlinks in the snapshot; `None` for snapshots without a summary (made by
    /// restic before 0.17).
    pub files_total: Option<u64>,
    /// Bytes of all files in the snapshot (rustic's `total_bytes_processed`); `None` without a
    /// summary.
    pub bytes_total: Option<u64>,
    /// Bytes of new data (before compression) the backup added; `None` without a summary.
    pub data_added: Option<u64>,
}

/// One entry of a snapshot's tree, as [`Repository::entries`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// The absolute path in the snapshot (an original path, or under `/.shadowcopy-backup`).
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// The size of a file; 0 for the rest.
    pub size: u64,
    /// The modification time, if recorded.
    pub mtime: Option<SystemTime>,
}

/// What [`Repository::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Snapshots in the repository, all of whose trees were checked.
    pub snapshots: usize,
    /// Pack files in the repository.
    pub packs: usize,
    /// Whether the packs' contents were read and verified, not only their index entries.
    pub read_data: bool,
    /// Errors: the repository is damaged. Empty when the check passed.
    pub problems: Vec<String>,
    /// Things that do not affect the repository's integrity (for example unreferenced packs,
    /// which `restic prune` removes).
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Whether the check found no errors.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An open restic repository on a local directory.
pub struct Repository {
    path: PathBuf,
    /// Open for listing snapshots.
    inner: rustic_core::Repository<OpenStatus>,
    /// With `key`, for opening the repository again without the password's key derivation:
    /// reading the index consumes an open `rustic_core::Repository`, and each operation must read
    /// the index afresh anyway (another process, restic itself, may have added to it).
    backends: RepositoryBackends,
    key: MasterKey,
}

impl fmt::Debug for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("path", &self.path)
            .finish()
    }
}

/// All 64 hex digits of an id (`Display` shows only the first 8, which is ambiguous in a large
/// repository).
fn full_hex(id: &Id) -> String {
    id.to_hex().as_str().to_owned()
}

/// `path` rebuilt from its components if it is absolute and has no `..` (dropping `.`, repeated
/// and trailing slashes); `None` otherwise.
fn clean_absolute(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut clean = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => clean.push(name),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(clean)
}

/// Whether `name` is one plain path component.
fn single_name(name: &str) -> bool {
    let path = Path::new(name);
    path.components().count() == 1
        && matches!(path.components().next(), Some(Component::Normal(_)))
        && !name.contains('/')
}

impl Repository {
    /// Opens the repository at `path`, or initialises one (format v2, restic's default chunker)
    /// when `path` does not exist or is an empty directory. Any other directory must already be a
    /// repository; a wrong password is [`RepositoryError::WrongPassword`].
    pub fn open_or_init(path: &Path, password: Password) -> Result<Self, RepositoryError> {
        let repo_path = path.to_path_buf();
        let fresh = match std::fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(RepositoryError::Io {
                    repo: repo_path.clone(),
                    action: "read the directory",
                    path: repo_path,
                    source: e,
                });
            }
        };
        let rustic = |action: &str| rustic_error(&repo_path, action.to_owned());
        let path_str = path.to_str().ok_or_else(|| RepositoryError::InvalidInput {
            repo: repo_path.clone(),
            message: "the repository path is not valid UTF-8; choose another path".to_owned(),
        })?;
        let backends = BackendOptions::default()
            .repository(path_str)
            .to_backends()
            .map_err(rustic("open the local backend"))?;
        // No cache: the repository is local, so a cache would only duplicate it.
        let repo =
            rustic_core::Repository::new(&RepositoryOptions::default().no_cache(true), &backends)
                .map_err(rustic("open"))?;
        let creds = Credentials::password(&password.0);
        let inner = if fresh {
            repo.init(&creds, &KeyOptions::default(), &ConfigOptions::default())
                .map_err(rustic("initialise"))?
        } else {
            if repo
                .config_id()
                .map_err(rustic("read the config of"))?
                .is_none()
            {
                return Err(RepositoryError::NotARepository { repo: repo_path });
            }
            repo.open(&creds).map_err(|e| {
                if e.is_incorrect_password() {
                    RepositoryError::WrongPassword {
                        repo: repo_path.clone(),
                    }
                } else {
                    rustic("open")(e)
                }
            })?
        };
        let key = inner.key();
        Ok(Self {
            path: repo_path,
            inner,
            backends,
            key,
        })
    }

    /// The repository opened again with the master key (no password key derivation), reporting
    /// progress to `bars`.
    fn reopen(&self, bars: Bars) -> RusticResult<rustic_core::Repository<OpenStatus>> {
        rustic_core::Repository::new_with_progress(
            &RepositoryOptions::default().no_cache(true),
            &self.backends,
            bars,
        )?
        .open(&Credentials::Masterkey(self.key.clone()))
    }

    fn reopen_quiet(&self) -> RusticResult<rustic_core::Repository<OpenStatus>> {
        self.reopen(Bars::new(None, Forwarding::Total))
    }

    /// The repository's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn invalid(&self, message: String) -> RepositoryError {
        RepositoryError::InvalidInput {
            repo: self.path.clone(),
            message,
        }
    }

    fn rustic(&self, action: impl Into<String>) -> impl Fn(Box<RusticError>) -> RepositoryError {
        rustic_error(&self.path, action.into())
    }

    /// Runs `step`, turning a panic inside rustic into [`RepositoryError::Aborted`].
    fn guarded<T>(
        &self,
        action: &str,
        step: impl FnOnce() -> Result<T, RepositoryError>,
    ) -> Result<T, RepositoryError> {
        catch_unwind(AssertUnwindSafe(step)).unwrap_or_else(|panic| {
            Err(RepositoryError::Aborted {
                repo: self.path.clone(),
                action: action.to_owned(),
                reason: restore::panic_message(panic.as_ref()),
            })
        })
    }

    /// The volumes of a request, checked: originals clean and distinct, copies existing
    /// directories; each with the originals nested inside it.
    fn volumes(
        &self,
        volumes: &[VolumeSource],
        with_documents: bool,
    ) -> Result<Vec<Volume>, RepositoryError> {
        if volumes.is_empty() || volumes.len() > MAX_VOLUMES {
            return Err(self.invalid(format!(
                "a backup takes 1 to {MAX_VOLUMES} volumes, {} were given; split the set or give at least one volume",
                volumes.len()
            )));
        }
        let documents_dir = Path::new("/").join(METADATA_DIR);
        let mut checked: Vec<Volume> = Vec::with_capacity(volumes.len());
        for volume in volumes {
            let original = clean_absolute(&volume.original).ok_or_else(|| {
                self.invalid(format!(
                    "the original path {} is not absolute or holds `..`; give the volume's mount point",
                    volume.original.display()
                ))
            })?;
            if original.to_str().is_none() {
                return Err(self.invalid(format!(
                    "the original path {} is not valid UTF-8, which restic's snapshot paths must be; mount the volume at another path",
                    original.display()
                )));
            }
            if original.starts_with(&documents_dir) {
                return Err(self.invalid(format!(
                    "the original path {} lies in {}, which holds the backup documents; record the volume under another path",
                    original.display(),
                    documents_dir.display()
                )));
            }
            if checked.iter().any(|v| v.original == original) {
                return Err(self.invalid(format!(
                    "the original path {} is given twice; give each volume once",
                    original.display()
                )));
            }
            let read_from =
                std::fs::canonicalize(&volume.read_from).map_err(|e| RepositoryError::Io {
                    repo: self.path.clone(),
                    action: "open the shadow copy",
                    path: volume.read_from.clone(),
                    source: e,
                })?;
            if !read_from.is_dir() {
                return Err(self.invalid(format!(
                    "the shadow copy {} of {} is not a directory; give the copy's root directory",
                    read_from.display(),
                    original.display()
                )));
            }
            checked.push(Volume {
                read_from,
                skip_documents_dir: with_documents && original == Path::new("/"),
                original,
                nested: Vec::new(),
            });
        }
        let originals: Vec<PathBuf> = checked.iter().map(|v| v.original.clone()).collect();
        for volume in &mut checked {
            volume.nested = originals
                .iter()
                .filter(|o| **o != volume.original && o.starts_with(&volume.original))
                .cloned()
                .collect();
        }
        Ok(checked)
    }

    /// The documents of a request, checked and sorted by name.
    fn documents(
        &self,
        metadata: &[MetadataFile],
    ) -> Result<Vec<(String, Vec<u8>)>, RepositoryError> {
        let mut documents = Vec::with_capacity(metadata.len());
        for file in metadata {
            if !single_name(&file.name) {
                return Err(self.invalid(format!(
                    "metadata file name {:?} is not a single file name; use a name without `/`, `.` or `..`",
                    file.name
                )));
            }
            documents.push((file.name.clone(), file.contents.clone()));
        }
        documents.sort_by(|a, b| a.0.cmp(&b.0));
        if documents.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(self.invalid(
                "two metadata files have the same name; give each document its own name".to_owned(),
            ));
        }
        Ok(documents)
    }

    /// The parent snapshot `id`, if rustic will use it as the parent of `snap` (same host, label
    /// and set of paths).
    fn usable_parent<S: rustic_core::Open>(
        &self,
        repo: &rustic_core::Repository<S>,
        id: &str,
        snap: &SnapshotFile,
        originals: &[PathBuf],
    ) -> Result<String, RepositoryError> {
        let unusable = |reason: String| RepositoryError::ParentUnusable {
            repo: self.path.clone(),
            snapshot: id.to_owned(),
            reason,
        };
        if id.is_empty() {
            return Err(unusable("no snapshot id was given".to_owned()));
        }
        let parent = repo
            .get_snapshot_from_str(id, |_| true)
            .map_err(|e| unusable(format!("it cannot be found: {e}")))?;
        let ours: BTreeSet<String> = originals
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let theirs: BTreeSet<String> = parent.paths.iter().cloned().collect();
        if parent.hostname != snap.hostname {
            return Err(unusable(format!(
                "it was made on host {:?}, this backup runs on {:?}",
                parent.hostname, snap.hostname
            )));
        }
        if parent.label != snap.label {
            return Err(unusable(format!(
                "it has the label {:?}, this backup has {:?}",
                parent.label, snap.label
            )));
        }
        if theirs != ours {
            return Err(unusable(format!(
                "it holds the volumes {:?}, this backup holds {:?}",
                theirs, ours
            )));
        }
        Ok(full_hex(&parent.id))
    }

    /// Backs up the volumes of a shadow copy set as one snapshot whose paths are the volumes'
    /// original mount points, with the request's tags and documents.
    ///
    /// Files whose size, mtime and ctime (unless `ignore_ctime`) match the parent snapshot's are
    /// not read again. If some entries cannot be read, the snapshot is still saved (rustic skips
    /// them) and the result is [`RepositoryError::SourceUnreadable`] naming it, because a backup
    /// that silently misses files must not count as a success (BK-END-2). Invalid input (tags,
    /// document names, volume paths, an unusable parent) is refused before anything is written.
    pub fn backup(&self, request: &BackupRequest<'_>) -> Result<BackupSummary, RepositoryError> {
        let started = Instant::now();
        let volumes = self.volumes(request.volumes, !request.metadata.is_empty())?;
        for tag in request.tags {
            if tag.is_empty() || tag.contains(',') {
                return Err(self.invalid(format!(
                    "tag {tag:?} is empty or holds a `,`, which restic's tag filters split on; encode it without commas"
                )));
            }
        }
        let documents = self.documents(request.metadata)?;
        let originals: Vec<PathBuf> = volumes.iter().map(|v| v.original.clone()).collect();

        let action = format!("back up {}", show_paths(&originals));
        let rustic = self.rustic(action.clone());
        let mut snap: SnapshotFile = SnapshotOptions::default().to_snapshot().map_err(&rustic)?;
        for tag in request.tags {
            snap.tags.add(tag.clone());
        }
        let bars = Bars::new(request.progress.clone(), Forwarding::Total);
        let indexed = self
            .reopen(bars)
            .and_then(rustic_core::Repository::to_indexed_ids)
            .map_err(&rustic)?;
        let parent_opts = match &request.parent {
            ParentChoice::Latest => ParentOptions::default(),
            ParentChoice::None => ParentOptions::default().force(true),
            ParentChoice::Snapshot(id) => ParentOptions::default()
                .parents(vec![self.usable_parent(&indexed, id, &snap, &originals)?]),
        }
        .ignore_ctime(request.ignore_ctime);
        let opts = BackupOptions::default().parent_opts(parent_opts);
        let errors = Arc::new(Mutex::new(Vec::new()));
        let src = SetSource {
            volumes,
            documents,
            filter: request.filter.clone(),
            errors: errors.clone(),
        };
        let snap = self.guarded(&action, || {
            indexed
                .archive(&opts, &src, snap, &originals)
                .map_err(&rustic)
        })?;
        let snapshot_id = full_hex(&snap.id);
        let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(PoisonError::into_inner));
        if !errors.is_empty() {
            return Err(RepositoryError::SourceUnreadable {
                repo: self.path.clone(),
                volumes: originals,
                snapshot_id,
                errors,
            });
        }
        let s = snap.summary.unwrap_or_default();
        Ok(BackupSummary {
            snapshot_id,
            parent_id: snap.parent.map(|p| full_hex(&p)),
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unmodified,
            bytes_added: s.data_added,
            bytes_stored: s.data_added_packed,
            bytes_processed: s.total_bytes_processed,
            duration: started.elapsed(),
        })
    }

    /// Every snapshot in the repository, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotSummary>, RepositoryError> {
        let mut snaps = self
            .inner
            .get_all_snapshots()
            .map_err(self.rustic("list the snapshots of"))?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(snaps
            .into_iter()
            .map(|s| SnapshotSummary {
                id: full_hex(&s.id),
                time: s.time.timestamp().to_string(),
                paths: s.paths.iter().cloned().collect(),
                tags: s.tags.iter().cloned().collect(),
                hostname: s.hostname,
                parent: s.parent.map(|p| full_hex(&p)),
                files_total: s.summary.as_ref().map(|m| m.total_files_processed),
                bytes_total: s.summary.as_ref().map(|m| m.total_bytes_processed),
                data_added: s.summary.as_ref().map(|m| m.data_added),
            })
            .collect())
    }

    /// The contents of the document `name` stored with snapshot `snapshot` (an id, a unique
    /// prefix of one, or `latest`) at `/.shadowcopy-backup/<name>`, or `None` when that snapshot
    /// has no such file.
    pub fn metadata_file(
        &self,
        snapshot: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, RepositoryError> {
        if !single_name(name) {
            return Err(self.invalid(format!(
                "metadata file name {name:?} is not a single file name; use a name without `/`, `.` or `..`"
            )));
        }
        let action = format!("read /{METADATA_DIR}/{name} of snapshot {snapshot} in");
        self.guarded(&action, || {
            let rustic = self.rustic(action.clone());
            let indexed = self
                .reopen_quiet()
                .and_then(rustic_core::Repository::to_indexed)
                .map_err(&rustic)?;
            let snap = indexed
                .get_snapshot_from_str(snapshot, |_| true)
                .map_err(&rustic)?;
            let snapshot_id = full_hex(&snap.id);
            let reader = Reader {
                repo: &indexed,
                repo_path: &self.path,
                snapshot: &snapshot_id,
            };
            let path = Path::new("/").join(METADATA_DIR).join(name);
            let Some(tree::Start::Leaf(node)) = tree::locate(&reader, snap.tree, &path)? else {
                return Ok(None);
            };
            if !node.is_file() {
                return Ok(None);
            }
            let mut out = Vec::new();
            indexed.dump(&node, &mut out).map_err(&rustic)?;
            Ok(Some(out))
        })
    }

    /// Every entry of snapshot `snapshot` (an id, a unique prefix of one, or `latest`), in
    /// `Path::cmp` order. Every tree is validated as a restore validates it, so a crafted
    /// snapshot is [`RepositoryError::UnsafeTree`] here too.
    pub fn entries(&self, snapshot: &str) -> Result<Vec<TreeEntry>, RepositoryError> {
        let action = format!("list snapshot {snapshot} of");
        self.guarded(&action, || {
            let rustic = self.rustic(action.clone());
            let indexed = self
                .reopen_quiet()
                .and_then(rustic_core::Repository::to_indexed_ids)
                .map_err(&rustic)?;
            let snap = indexed
                .get_snapshot_from_str(snapshot, |_| true)
                .map_err(&rustic)?;
            let snapshot_id = full_hex(&snap.id);
            let reader = Reader {
                repo: &indexed,
                repo_path: &self.path,
                snapshot: &snapshot_id,
            };
            let root = PathBuf::from("/");
            let walk = Walk::new(reader, root.clone(), tree::Start::Tree(snap.tree), None)?;
            walk.map(|item| {
                item.map(|(rel, node)| TreeEntry {
                    path: root.join(rel),
                    kind: kind_of(&node),
                    size: if node.is_file() { node.meta.size } else { 0 },
                    mtime: node.meta.mtime.map(SystemTime::from),
                })
            })
            .collect()
        })
    }

    /// Checks the repository with rustic's check: the index against the pack files, every
    /// snapshot's trees, and with `read_data` the contents of every pack. Whatever is wrong is
    /// listed in [`CheckReport::problems`], including a check that could not run to its end;
    /// an error is returned only when the repository cannot be opened at all.
    pub fn check(&self, read_data: bool) -> Result<CheckReport, RepositoryError> {
        let rustic = self.rustic("check");
        let repo = self.reopen_quiet().map_err(&rustic)?;
        let snapshots = repo.list::<SnapshotId>().map_err(&rustic)?.count();
        let packs = repo.list::<PackId>().map_err(&rustic)?.count();
        let mut report = CheckReport {
            snapshots,
            packs,
            read_data,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let opts = CheckOptions::default().read_data(read_data);
        match catch_unwind(AssertUnwindSafe(|| repo.check(opts))) {
            Ok(Ok(results)) => {
                for (level, finding) in results.0 {
                    // The level's type is not exported by rustic_core; its Debug form is its name.
                    if format!("{level:?}") == "Warn" {
                        report.warnings.push(finding.to_string());
                    } else {
                        report.problems.push(finding.to_string());
                    }
                }
            }
            Ok(Err(e)) => report
                .problems
                .push(format!("the check could not finish: {e}")),
            Err(panic) => report.problems.push(format!(
                "the check stopped inside rustic_core: {}",
                restore::panic_message(panic.as_ref())
            )),
        }
        Ok(report)
    }

    /// Restores `units` of snapshot `snapshot` (an id, a unique prefix of one, or `latest`), in
    /// order, reporting the bytes written (and the bytes found already in place) to `progress`.
    ///
    /// Before anything is written, every unit's paths are checked and its whole subtree is read
    /// and validated, so a crafted snapshot ([`RepositoryError::UnsafeTree`]) or a bad unit
    /// writes nothing. Then, unit by unit, the destination is checked and prepared (see
    /// [`RestoreUnit`]; a symlink between the boundary and a written path is
    /// [`RepositoryError::UnsafeDestination`]) and rustic writes it. Owners are restored by number
    /// (as restic does), modes, times and extended attributes as recorded, symlinks as links;
    /// existing files are verified chunk by chunk and only what differs is written; nothing
    /// at the destination is deleted except single entries that a restored entry replaces.
    pub fn restore(
        &self,
        snapshot: &str,
        units: &[RestoreUnit],
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<RestoreSummary, RepositoryError> {
        let action = format!("restore snapshot {snapshot} of");
        let bars = Bars::new(progress, Forwarding::AdvanceOnly);
        let rustic = self.rustic(action.clone());
        let indexed = self
            .reopen(bars.clone())
            .and_then(rustic_core::Repository::to_indexed)
            .map_err(&rustic)?;
        let snap = indexed
            .get_snapshot_from_str(snapshot, |_| true)
            .map_err(&rustic)?;
        let snapshot_id = full_hex(&snap.id);
        let restorer = restore::Restorer {
            repo: &indexed,
            repo_path: &self.path,
            snapshot: &snapshot_id,
            root: snap.tree,
            bars,
        };
        restorer.run(units)
    }
}
