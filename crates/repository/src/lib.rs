//! The backup repository: a restic repository (format v2) written through `rustic_core`, so that
//! Debian's `restic` 0.14 can list, check and restore what shadowcopy backs up.
//!
//! One backup is one repository snapshot. The snapshot holds the shadow copy's tree recorded under
//! the original volume path (`as_path`), so the next backup of another shadow copy of the same
//! volume finds the previous snapshot as its parent and skips unchanged files (platform facts
//! §3 and §4e: parent detection goes by the recorded path, not by where the copy was mounted).
//!
//! The backup documents (the BCD and every WMD) travel in the same snapshot, as files under
//! `<as_path>/.shadowcopy-backup/` ([`METADATA_DIR`]). They are merged into the tree while it is
//! archived (a [`rustic_core::ReadSource`] wrapping the local source), so there is no second
//! snapshot to keep in step with the first, and a plain `restic restore` brings them back too.
//!
//! The password comes from `RESTIC_PASSWORD` or `RESTIC_PASSWORD_FILE`, as restic users expect
//! ([`Password::from_env`]). Asking on the terminal is not done yet; it belongs to the CLI.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustic_backend::BackendOptions;
use rustic_core::repofile::{MasterKey, Metadata, Node, NodeType, SnapshotFile};
use rustic_core::{
    BackupOptions, ConfigOptions, Credentials, Id, KeyOptions, LocalSource,
    LocalSourceFilterOptions, LocalSourceSaveOptions, OpenStatus, ReadSource, ReadSourceEntry,
    ReadSourceOpen, RepositoryBackends, RepositoryOptions, RusticError, RusticResult,
    SnapshotOptions,
};

/// The directory, under a snapshot's recorded path, that holds the backup documents.
///
/// A source tree that has a directory of this name (for example a volume that a whole backup was
/// restored to) has it replaced by the backup's own documents when any are given.
pub const METADATA_DIR: &str = ".shadowcopy-backup";

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
    /// A file-system operation on the repository or the source failed.
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
    /// A caller-supplied argument cannot be stored.
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
    /// The snapshot was saved, but some source entries could not be read and are missing from it.
    #[error(
        "repository {repo}: snapshot {snapshot_id} of {source_path} is incomplete, {count} entries could not be read (first: {first}); fix their permissions or the source and back up again",
        count = errors.len(),
        first = errors.first().map_or("", String::as_str)
    )]
    SourceUnreadable {
        /// The repository.
        repo: PathBuf,
        /// The source directory.
        source_path: PathBuf,
        /// The snapshot that was saved without them.
        snapshot_id: String,
        /// One message per entry that could not be read.
        errors: Vec<String>,
    },
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

/// A file stored with a backup under `<as_path>/.shadowcopy-backup/<name>` (the BCD, a WMD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataFile {
    /// The file name: one path component, no `/`, not `.` or `..`.
    pub name: String,
    /// The contents.
    pub contents: Vec<u8>,
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
    /// When the backup started, RFC 3339.
    pub time: String,
    /// The recorded paths (for a shadowcopy backup, the original volume path).
    pub paths: Vec<String>,
    /// The tags.
    pub tags: Vec<String>,
    /// The host that made it.
    pub hostname: String,
}

/// An open restic repository on a local directory.
pub struct Repository {
    path: PathBuf,
    /// Open for listing snapshots.
    inner: rustic_core::Repository<OpenStatus>,
    /// With `key`, for opening the repository again without the password's key derivation:
    /// reading the index consumes an open `rustic_core::Repository`, and each backup must read
    /// the index afresh anyway.
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

impl Repository {
    /// Opens the repository at `path`, or initialises one (format v2, restic's default chunker)
    /// when `path` does not exist or is an empty directory. Any other directory must already be a
    /// repository; a wrong password is [`RepositoryError::WrongPassword`].
    pub fn open_or_init(path: &Path, password: Password) -> Result<Self, RepositoryError> {
        let repo_path = path.to_path_buf();
        let io_err = |action, source| RepositoryError::Io {
            repo: repo_path.clone(),
            action,
            path: repo_path.clone(),
            source,
        };
        let fresh = match std::fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_err("read the directory", e)),
        };
        let rustic = |action: &str| {
            let repo = repo_path.clone();
            let action = action.to_owned();
            move |e: Box<RusticError>| RepositoryError::Rustic {
                repo,
                action,
                source: e,
            }
        };
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

    /// The repository opened again with the master key (no password key derivation).
    fn reopen(&self) -> RusticResult<rustic_core::Repository<OpenStatus>> {
        rustic_core::Repository::new(&RepositoryOptions::default().no_cache(true), &self.backends)?
            .open(&Credentials::Masterkey(self.key.clone()))
    }

    /// The repository's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Backs up the directory `source` (a shadow copy) as one snapshot recorded under `as_path`
    /// (the original volume path), with `tags`. See [`Repository::backup_with_metadata`].
    pub fn backup(
        &self,
        source: &Path,
        as_path: &Path,
        tags: &[String],
    ) -> Result<BackupSummary, RepositoryError> {
        self.backup_with_metadata(source, as_path, tags, &[])
    }

    /// Backs up the directory `source` as one snapshot recorded under `as_path`, with `tags` and
    /// with `metadata` stored as `<as_path>/.shadowcopy-backup/<name>` in the same snapshot.
    ///
    /// The parent is the latest snapshot of the same host and recorded path, so files whose size,
    /// mtime, ctime and inode match it are not read again. Tags must be non-empty and must not hold
    /// a `,` (restic's tag filters split on it). If some entries of `source` cannot be read, the
    /// snapshot is still saved (rustic skips them) and the result is
    /// [`RepositoryError::SourceUnreadable`] naming it, because a backup that silently misses files
    /// must not count as a success (BK-END-2).
    pub fn backup_with_metadata(
        &self,
        source: &Path,
        as_path: &Path,
        tags: &[String],
        metadata: &[MetadataFile],
    ) -> Result<BackupSummary, RepositoryError> {
        let started = Instant::now();
        let invalid = |message: String| RepositoryError::InvalidInput {
            repo: self.path.clone(),
            message,
        };
        if !as_path.is_absolute() {
            return Err(invalid(format!(
                "the recorded path {} is not absolute; give the original volume's mount point",
                as_path.display()
            )));
        }
        let source = std::fs::canonicalize(source).map_err(|e| RepositoryError::Io {
            repo: self.path.clone(),
            action: "open the backup source",
            path: source.to_path_buf(),
            source: e,
        })?;
        if !source.is_dir() {
            return Err(invalid(format!(
                "the backup source {} is not a directory; give the shadow copy's directory",
                source.display()
            )));
        }
        let snap_opts = SnapshotOptions::default();
        for tag in tags {
            if tag.is_empty() || tag.contains(',') {
                return Err(invalid(format!(
                    "tag {tag:?} is empty or holds a `,`, which restic's tag filters split on; encode it without commas"
                )));
            }
        }
        let meta_dir = source.join(METADATA_DIR);
        let mut extra = Vec::with_capacity(metadata.len());
        for file in metadata {
            let name = Path::new(&file.name);
            let single = name.components().count() == 1
                && matches!(
                    name.components().next(),
                    Some(std::path::Component::Normal(_))
                );
            if !single {
                return Err(invalid(format!(
                    "metadata file name {:?} is not a single file name; use a name without `/`, `.` or `..`",
                    file.name
                )));
            }
            extra.push((meta_dir.join(name), file.contents.clone()));
        }
        extra.sort_by(|a, b| a.0.cmp(&b.0));
        if extra.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(invalid(
                "two metadata files have the same name; give each document its own name".to_owned(),
            ));
        }

        let action = format!("back up {} as {}", source.display(), as_path.display());
        let rustic = |e: Box<RusticError>| RepositoryError::Rustic {
            repo: self.path.clone(),
            action: action.clone(),
            source: e,
        };
        let mut snap: SnapshotFile = snap_opts.to_snapshot().map_err(rustic)?;
        for tag in tags {
            snap.tags.add(tag.clone());
        }
        // The index is read afresh for every backup: another process (restic itself) may have
        // added to the repository since it was opened.
        let indexed = self
            .reopen()
            .and_then(rustic_core::Repository::to_indexed_ids)
            .map_err(rustic)?;
        let local = LocalSource::new(
            LocalSourceSaveOptions::default(),
            &rustic_core::Excludes::default(),
            &LocalSourceFilterOptions::default(),
            &[&source],
        )
        .map_err(rustic)?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let src = MergedSource {
            local,
            meta_dir,
            extra,
            errors: errors.clone(),
        };
        let opts = BackupOptions::default().as_path(as_path.to_path_buf());
        let snap = indexed
            .archive(&opts, &src, snap, std::slice::from_ref(&source))
            .map_err(rustic)?;
        let snapshot_id = full_hex(&snap.id);
        let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(PoisonError::into_inner));
        if !errors.is_empty() {
            return Err(RepositoryError::SourceUnreadable {
                repo: self.path.clone(),
                source_path: source,
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
            .map_err(|e| RepositoryError::Rustic {
                repo: self.path.clone(),
                action: "list the snapshots of".to_owned(),
                source: e,
            })?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(snaps
            .into_iter()
            .map(|s| SnapshotSummary {
                id: full_hex(&s.id),
                time: s.time.timestamp().to_string(),
                paths: s.paths.iter().cloned().collect(),
                tags: s.tags.iter().cloned().collect(),
                hostname: s.hostname,
            })
            .collect())
    }

    /// The contents of the metadata file `name` stored with snapshot `snapshot_id` (an id or a
    /// unique prefix of one), or `None` when that snapshot has no such file.
    pub fn metadata_file(
        &self,
        snapshot_id: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, RepositoryError> {
        let rustic = |e: Box<RusticError>| RepositoryError::Rustic {
            repo: self.path.clone(),
            action: format!("read {METADATA_DIR}/{name} of snapshot {snapshot_id} in"),
            source: e,
        };
        let indexed = self
            .reopen()
            .and_then(rustic_core::Repository::to_indexed)
            .map_err(rustic)?;
        let snap = indexed
            .get_snapshot_from_str(snapshot_id, |_| true)
            .map_err(rustic)?;
        let Some(root) = snap.paths.iter().next() else {
            return Ok(None);
        };
        let path = Path::new(root).join(METADATA_DIR).join(name);
        let path = path.strip_prefix("/").unwrap_or(&path);
        let Ok(node) = indexed.node_from_snapshot_and_path(&snap, &path.to_string_lossy()) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        indexed.dump(&node, &mut out).map_err(rustic)?;
        Ok(Some(out))
    }
}

/// All 64 hex digits of an id (`Display` shows only the first 8, which is ambiguous in a large
/// repository).
fn full_hex(id: &Id) -> String {
    id.to_hex().as_str().to_owned()
}

/// Messages for entries of the source that could not be read, shared with the archiver's threads.
type ErrorLog = Arc<Mutex<Vec<String>>>;

fn record(errors: &ErrorLog, message: String) {
    errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(message);
}

/// The local source with the metadata files merged in, in the walk order rustic expects (paths
/// sorted component by component, as `LocalSource` walks). It also records every entry rustic
/// would skip with only a log line, so that the backup can report them.
struct MergedSource {
    local: LocalSource,
    meta_dir: PathBuf,
    extra: Vec<(PathBuf, Vec<u8>)>,
    errors: ErrorLog,
}

type LocalOpen = <LocalSource as ReadSource>::Open;
type LocalIter = <LocalSource as ReadSource>::Iter;

/// How to open one entry: a file of the source, or a metadata file held in memory.
enum MergedOpen {
    Local(LocalOpen, PathBuf, ErrorLog),
    Memory(Vec<u8>),
}

impl ReadSourceOpen for MergedOpen {
    type Reader = Box<dyn Read + Send>;

    fn open(self) -> RusticResult<Self::Reader> {
        match self {
            Self::Local(open, path, errors) => match open.open() {
                Ok(file) => Ok(Box::new(RecordingReader {
                    inner: file,
                    path,
                    errors,
                })),
                Err(e) => {
                    record(&errors, format!("{}: {e}", path.display()));
                    Err(e)
                }
            },
            Self::Memory(bytes) => Ok(Box::new(io::Cursor::new(bytes))),
        }
    }
}

/// A reader that records a read error before handing it on (rustic skips the file with a log line).
struct RecordingReader<R> {
    inner: R,
    path: PathBuf,
    errors: ErrorLog,
}

impl<R: Read> Read for RecordingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                record(&self.errors, format!("{}: {e}", self.path.display()));
            }
        })
    }
}

impl ReadSource for MergedSource {
    type Open = MergedOpen;
    type Iter = MergedIter;

    fn size(&self) -> RusticResult<Option<u64>> {
        let extra: u64 = self.extra.iter().map(|(_, c)| c.len() as u64).sum();
        Ok(self.local.size()?.map(|s| s + extra))
    }

    fn entries(&self) -> Self::Iter {
        let mtime = rustic_core::jiff::Timestamp::now();
        let extra = self
            .extra
            .iter()
            .map(|(path, contents)| {
                let meta = Metadata {
                    // Go's file mode, as restic stores it: permission bits only for a regular file.
                    mode: Some(0o644),
                    mtime: Some(mtime),
                    ctime: Some(mtime),
                    size: contents.len() as u64,
                    ..Metadata::default()
                };
                let name = path.file_name().unwrap_or_default();
                ReadSourceEntry {
                    path: path.clone(),
                    node: Node::new_node(name, NodeType::File, meta),
                    open: Some(MergedOpen::Memory(contents.clone())),
                }
            })
            .collect();
        MergedIter {
            local: self.local.entries(),
            peeked: None,
            skip_dir: (!self.extra.is_empty()).then(|| self.meta_dir.clone()),
            extra,
            errors: self.errors.clone(),
        }
    }
}

/// The merge of the source walk and the metadata entries, both sorted by [`Path::cmp`].
struct MergedIter {
    local: LocalIter,
    peeked: Option<RusticResult<ReadSourceEntry<MergedOpen>>>,
    /// The source's own metadata directory, left out because this backup's documents replace it.
    skip_dir: Option<PathBuf>,
    extra: VecDeque<ReadSourceEntry<MergedOpen>>,
    errors: ErrorLog,
}

impl MergedIter {
    fn next_local(&mut self) -> Option<RusticResult<ReadSourceEntry<MergedOpen>>> {
        loop {
            let item = self.local.next()?;
            match item {
                Err(e) => {
                    record(&self.errors, e.to_string());
                    return Some(Err(e));
                }
                Ok(entry) => {
                    if self
                        .skip_dir
                        .as_ref()
                        .is_some_and(|d| entry.path.starts_with(d))
                    {
                        continue;
                    }
                    let ReadSourceEntry { path, node, open } = entry;
                    let open =
                        open.map(|o| MergedOpen::Local(o, path.clone(), self.errors.clone()));
                    return Some(Ok(ReadSourceEntry { path, node, open }));
                }
            }
        }
    }
}

impl Iterator for MergedIter {
    type Item = RusticResult<ReadSourceEntry<MergedOpen>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.peeked.is_none() {
            self.peeked = self.next_local();
        }
        let take_extra = match (&self.peeked, self.extra.front()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(Err(_)), Some(_)) => false,
            (Some(Ok(local)), Some(extra)) => extra.path < local.path,
        };
        if take_extra {
            self.extra.pop_front().map(Ok)
        } else {
            self.peeked.take()
        }
    }
}
