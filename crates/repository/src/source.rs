//! The backup source: the volumes of a shadow copy set, each read from its shadow copy and
//! recorded under its original mount point, with the backup documents, as one
//! `rustic_core::ReadSource`.
//!
//! Each volume is walked on its own (the `ignore` crate's walker, as rustic's `LocalSource` does,
//! with every ignore-file rule off: rustic leaves git's global excludes on, which would silently
//! leave files out of a volume that holds a git checkout). Entries are turned into nodes by
//! rustic's own `LocalSourceSaveOptions::map_entry`, so metadata is recorded exactly as
//! `rustic backup` records it. Their paths are then rewritten from the copy to the original, the
//! volume root's node is renamed after the original mount point, and the volumes' walks, each
//! sorted by `Path::cmp`, are merged into the one sorted stream rustic's archiver needs (it builds
//! the trees from consecutive paths, and matches the parent snapshot by name in that order).
//!
//! A volume nested in another (`/srv/db` inside `/srv`) owns its subtree: the outer volume's
//! walk skips the mount point and everything under it (in a shadow copy of `/srv` that is the
//! usually empty directory the inner volume is mounted on), and the inner volume's root takes its
//! place.
//!
//! Entries that cannot be read are recorded (rustic itself only logs and skips them), so that the
//! backup can fail with [`crate::RepositoryError::SourceUnreadable`] instead of passing for
//! complete.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustic_core::jiff::Timestamp;
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{
    LocalSourceSaveOptions, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticResult,
};

use crate::{EntryFilter, EntryKind, METADATA_DIR};

/// Go's `os.ModeDir`, which restic stores in a directory node's mode.
const GO_MODE_DIR: u32 = 1 << 31;

/// Messages for entries of the sources that could not be read, shared with rustic's threads.
pub(crate) type ErrorLog = Arc<Mutex<Vec<String>>>;

fn record(errors: &ErrorLog, message: String) {
    errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(message);
}

/// One volume: where it is read and where it is recorded.
#[derive(Clone, Debug)]
pub(crate) struct Volume {
    /// The shadow copy's root directory, canonical.
    pub(crate) read_from: PathBuf,
    /// The original mount point, absolute and lexically clean.
    pub(crate) original: PathBuf,
    /// Originals of the other volumes nested inside this one: their subtrees come from them.
    pub(crate) nested: Vec<PathBuf>,
    /// Leave out this volume's own `/.shadowcopy-backup` (it is `/` and documents are given).
    pub(crate) skip_documents_dir: bool,
}

/// The source rustic archives.
pub(crate) struct SetSource {
    pub(crate) volumes: Vec<Volume>,
    /// `(name, contents)`, sorted by name.
    pub(crate) documents: Vec<(String, Vec<u8>)>,
    pub(crate) filter: Option<EntryFilter>,
    pub(crate) errors: ErrorLog,
}

fn kind_of(file_type: Option<std::fs::FileType>) -> EntryKind {
    match file_type {
        Some(t) if t.is_dir() => EntryKind::Dir,
        Some(t) if t.is_file() => EntryKind::File,
        Some(t) if t.is_symlink() => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

impl Volume {
    /// The original path of `path`, which lies in the copy.
    fn original_of(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.read_from) {
            Ok(rel) if rel.as_os_str().is_empty() => self.original.clone(),
            Ok(rel) => self.original.join(rel),
            // The walker only yields paths under its root.
            Err(_) => self.original.join(path),
        }
    }

    /// The walker over the copy, skipping nested volumes and whatever the filter leaves out
    /// (a directory left out is not even read, so an unreadable one does not fail the backup).
    fn walker(&self, filter: Option<EntryFilter>) -> ignore::Walk {
        let volume = self.clone();
        let mut builder = ignore::WalkBuilder::new(&self.read_from);
        builder
            .standard_filters(false)
            .follow_links(false)
            .same_file_system(false)
            .sort_by_file_path(Path::cmp)
            .filter_entry(move |entry| {
                let original = volume.original_of(entry.path());
                if volume.nested.iter().any(|n| original.starts_with(n)) {
                    return false;
                }
                if volume.skip_documents_dir
                    && original.starts_with(Path::new("/").join(METADATA_DIR))
                {
                    return false;
                }
                filter
                    .as_ref()
                    .is_none_or(|f| f(&original, kind_of(entry.file_type())))
            });
        builder.build()
    }
}

/// How to open one entry: a file in a shadow copy, or a document held in memory.
pub(crate) enum SetOpen {
    Local(
        <rustic_core::LocalSource as ReadSource>::Open,
        PathBuf,
        ErrorLog,
    ),
    Memory(Vec<u8>),
}

impl ReadSourceOpen for SetOpen {
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

type Entry = ReadSourceEntry<SetOpen>;

/// The entries of one volume, recorded under the original path.
struct VolumeEntries {
    volume: Volume,
    walk: ignore::Walk,
    filter: Option<EntryFilter>,
    errors: ErrorLog,
    done: bool,
}

impl Iterator for VolumeEntries {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        while !self.done {
            let Some(item) = self.walk.next() else {
                self.done = true;
                break;
            };
            let entry = match item {
                Ok(entry) => entry,
                Err(e) => {
                    record(
                        &self.errors,
                        format!(
                            "{e} (volume {} read from {})",
                            self.volume.original.display(),
                            self.volume.read_from.display()
                        ),
                    );
                    continue;
                }
            };
            let is_root = entry.depth() == 0;
            if is_root {
                // The walker never asks its filter about the root: ask here. `/` has no node of
                // its own; the snapshot's root tree is its directory.
                let wanted = self
                    .filter
                    .as_ref()
                    .is_none_or(|f| f(&self.volume.original, EntryKind::Dir));
                if !wanted {
                    self.done = true;
                    break;
                }
                if self.volume.original.file_name().is_none() {
                    continue;
                }
            }
            let copy_path = entry.path().to_path_buf();
            let mapped = match LocalSourceSaveOptions::default().map_entry(entry) {
                Ok(mapped) => mapped,
                Err(e) => {
                    record(&self.errors, format!("{}: {e}", copy_path.display()));
                    continue;
                }
            };
            let ReadSourceEntry { path, node, open } = mapped;
            let original = self.volume.original_of(&path);
            let node = if is_root {
                let name = self.volume.original.file_name().unwrap_or_default();
                Node::new_node(name, node.node_type, node.meta)
            } else {
                node
            };
            let open = open.map(|o| SetOpen::Local(o, copy_path, self.errors.clone()));
            return Some(ReadSourceEntry {
                path: original,
                node,
                open,
            });
        }
        None
    }
}

/// The head of one stream in the merge.
struct Head {
    entry: Entry,
    /// Which stream it came from.
    stream: usize,
    /// On equal paths the higher rank wins: documents, then the more deeply nested volume.
    rank: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        self.entry
            .path
            .cmp(&other.entry.path)
            .then_with(|| other.rank.cmp(&self.rank))
    }
}

/// The k-way merge of the volumes' and the documents' sorted streams.
pub(crate) struct SetEntries {
    streams: Vec<Box<dyn Iterator<Item = Entry> + Send>>,
    ranks: Vec<usize>,
    heads: BinaryHeap<Reverse<Head>>,
}

impl SetEntries {
    fn refill(&mut self, stream: usize) {
        if let Some(entry) = self.streams[stream].next() {
            self.heads.push(Reverse(Head {
                entry,
                stream,
                rank: self.ranks[stream],
            }));
        }
    }
}

impl Iterator for SetEntries {
    type Item = RusticResult<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse(head) = self.heads.pop()?;
        self.refill(head.stream);
        // Nested volumes are skipped by the outer walk, so equal paths do not happen; should
        // they, the first (highest-ranked) entry wins and the others are dropped.
        while self
            .heads
            .peek()
            .is_some_and(|Reverse(next)| next.entry.path == head.entry.path)
        {
            if let Some(Reverse(dropped)) = self.heads.pop() {
                self.refill(dropped.stream);
            }
        }
        Some(Ok(head.entry))
    }
}

impl SetSource {
    /// The documents as entries: their directory, then the files, all under `/`.
    fn document_entries(&self) -> Vec<Entry> {
        if self.documents.is_empty() {
            return Vec::new();
        }
        let now = Timestamp::now();
        let dir = Path::new("/").join(METADATA_DIR);
        let mut entries = vec![ReadSourceEntry {
            path: dir.clone(),
            node: Node::new_node(
                OsStr::new(METADATA_DIR),
                NodeType::Dir,
                Metadata {
                    // Go's file mode, as restic stores it.
                    mode: Some(GO_MODE_DIR | 0o755),
                    mtime: Some(now),
                    ctime: Some(now),
                    ..Metadata::default()
                },
            ),
            open: None,
        }];
        for (name, contents) in &self.documents {
            let meta = Metadata {
                // Permission bits only: a regular file has no type bits in Go's file mode.
                mode: Some(0o644),
                mtime: Some(now),
                ctime: Some(now),
                size: contents.len() as u64,
                ..Metadata::default()
            };
            entries.push(ReadSourceEntry {
                path: dir.join(name),
                node: Node::new_node(OsStr::new(name), NodeType::File, meta),
                open: Some(SetOpen::Memory(contents.clone())),
            });
        }
        entries
    }
}

impl ReadSource for SetSource {
    type Open = SetOpen;
    type Iter = SetEntries;

    fn size(&self) -> RusticResult<Option<u64>> {
        let mut size: u64 = self.documents.iter().map(|(_, c)| c.len() as u64).sum();
        for volume in &self.volumes {
            for entry in volume.walker(self.filter.clone()).flatten() {
                if let Ok(meta) = entry.metadata()
                    && meta.is_file()
                {
                    size += meta.len();
                }
            }
        }
        Ok(Some(size))
    }

    fn entries(&self) -> Self::Iter {
        let mut streams: Vec<Box<dyn Iterator<Item = Entry> + Send>> = Vec::new();
        let mut ranks = Vec::new();
        for volume in &self.volumes {
            ranks.push(volume.original.components().count());
            streams.push(Box::new(VolumeEntries {
                walk: volume.walker(self.filter.clone()),
                volume: volume.clone(),
                filter: self.filter.clone(),
                errors: self.errors.clone(),
                done: false,
            }));
        }
        ranks.push(usize::MAX);
        streams.push(Box::new(self.document_entries().into_iter()));
        let mut merged = SetEntries {
            streams,
            ranks,
            heads: BinaryHeap::new(),
        };
        for stream in 0..merged.streams.len() {
            merged.refill(stream);
        }
        merged
    }
}
