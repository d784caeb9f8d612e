//! Reading snapshot trees as a stream of validated nodes, for listing and for restores.
//!
//! A repository can be written by anyone who holds its password, so a tree is untrusted input:
//! every tree is checked when it is loaded, before any of its nodes is handed on. A node name must
//! be one path component (not empty, not `.` or `..`, no `/`, no NUL byte, checked after restic's
//! escaping is undone, since `\x2f` is a `/`), and no directory may hold two entries of the same
//! name: with duplicates, a symlink `x` and a directory `x` could both be restored, the directory's
//! files then written through the link. A directory must have a subtree, a subtree may not contain
//! itself (the index maps ids to blobs without checking them, so a loop can be crafted), and a
//! node that is not a directory never has its subtree followed.
//!
//! Nodes come in the order `Path::cmp` gives (each directory's entries sorted by name, a
//! directory's subtree right after it), which is the order rustic's restore expects when it merges
//! the nodes with what already exists at the destination.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustic_core::repofile::{Node, NodeType};
use rustic_core::{IndexedTree, TreeId};

use crate::{EntryFilter, EntryKind, RepositoryError, rustic_error};

/// The kind of a node, as filters and listings see it.
pub(crate) fn kind_of(node: &Node) -> EntryKind {
    match node.node_type {
        NodeType::Dir => EntryKind::Dir,
        NodeType::File => EntryKind::File,
        NodeType::Symlink { .. } => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

/// Why `name` cannot be a node name, if it cannot.
fn bad_name(name: &OsStr) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        Some("it is empty")
    } else if bytes == b"." || bytes == b".." {
        Some("it is `.` or `..`")
    } else if bytes.contains(&b'/') {
        Some("it holds a `/`")
    } else if bytes.contains(&0) {
        Some("it holds a NUL byte")
    } else {
        None
    }
}

/// Where a walk reads from and what it reports in errors.
pub(crate) struct Reader<'r, S> {
    pub(crate) repo: &'r rustic_core::Repository<S>,
    pub(crate) repo_path: &'r Path,
    /// The snapshot id, for error messages.
    pub(crate) snapshot: &'r str,
}

impl<S: IndexedTree> Reader<'_, S> {
    /// The nodes of tree `id`, the directory at `dir` (absolute, in the snapshot), validated and
    /// sorted by name.
    pub(crate) fn load(&self, id: TreeId, dir: &Path) -> Result<Vec<Node>, RepositoryError> {
        let tree = self.repo.get_tree(&id).map_err(rustic_error(
            self.repo_path,
            format!(
                "read the tree of {} in snapshot {}",
                dir.display(),
                self.snapshot
            ),
        ))?;
        let mut nodes = tree.nodes;
        for node in &nodes {
            if let Some(reason) = bad_name(&node.name()) {
                return Err(self.unsafe_tree(
                    dir,
                    format!(
                        "entry {:?} has a name that is not a single path component: {reason}",
                        node.name
                    ),
                ));
            }
        }
        nodes.sort_by(|a, b| a.name().cmp(&b.name()));
        if let Some(pair) = nodes.windows(2).find(|w| w[0].name() == w[1].name()) {
            return Err(self.unsafe_tree(
                dir,
                format!("two entries have the same name {:?}", pair[0].name()),
            ));
        }
        Ok(nodes)
    }

    pub(crate) fn unsafe_tree(&self, path: &Path, reason: String) -> RepositoryError {
        RepositoryError::UnsafeTree {
            snapshot: self.snapshot.to_owned(),
            path: path.to_path_buf(),
            reason,
        }
    }

    /// The subtree of the directory node `node` at `abs` (absolute, in the snapshot).
    pub(crate) fn subtree_of(&self, node: &Node, abs: &Path) -> Result<TreeId, RepositoryError> {
        match node.subtree {
            Some(id) if node.is_dir() => Ok(id),
            _ => Err(self.unsafe_tree(abs, "the directory has no subtree".to_owned())),
        }
    }
}

/// One directory being listed.
struct Frame {
    /// Its path relative to the walk's root.
    dir: PathBuf,
    tree: TreeId,
    nodes: std::vec::IntoIter<Node>,
}

/// A depth-first walk over a tree: `(path relative to the walk's root, node)`, validated.
pub(crate) struct Walk<'r, S> {
    reader: Reader<'r, S>,
    /// The absolute path of the walk's root in the snapshot, for error messages.
    base: PathBuf,
    filter: Option<EntryFilter>,
    /// Handed out before the tree's own nodes: the root directory's node (path "") or a single
    /// file's node (path = its name).
    first: Option<(PathBuf, Node)>,
    stack: Vec<Frame>,
    /// After an error the walk ends.
    done: bool,
}

/// What a walk starts from.
pub(crate) enum Start {
    /// The nodes of this tree, without a node for the tree itself (the snapshot's root).
    Tree(TreeId),
    /// A directory node: itself at path "", then its subtree.
    Dir(Node),
    /// A node that is not a directory: itself, at its name.
    Leaf(Node),
}

impl<'r, S: IndexedTree> Walk<'r, S> {
    /// A walk from `start`, found at `base` (absolute) in the snapshot. The filter gets paths
    /// relative to `base` (a leaf: its name) and is never asked about the root directory itself.
    pub(crate) fn new(
        reader: Reader<'r, S>,
        base: PathBuf,
        start: Start,
        filter: Option<EntryFilter>,
    ) -> Result<Self, RepositoryError> {
        let mut walk = Self {
            reader,
            base,
            filter,
            first: None,
            stack: Vec::new(),
            done: false,
        };
        match start {
            Start::Tree(id) => walk.push(PathBuf::new(), id)?,
            Start::Dir(node) => {
                let id = walk.reader.subtree_of(&node, &walk.base)?;
                walk.push(PathBuf::new(), id)?;
                walk.first = Some((PathBuf::new(), node));
            }
            Start::Leaf(mut node) => {
                let name = PathBuf::from(node.name().into_owned());
                if walk.wanted(&name, &node) {
                    node.subtree = None;
                    walk.first = Some((name, node));
                }
            }
        }
        Ok(walk)
    }

    fn wanted(&self, rel: &Path, node: &Node) -> bool {
        self.filter.as_ref().is_none_or(|f| f(rel, kind_of(node)))
    }

    fn push(&mut self, dir: PathBuf, tree: TreeId) -> Result<(), RepositoryError> {
        let abs = self.base.join(&dir);
        if self.stack.iter().any(|f| f.tree == tree) {
            return Err(self.reader.unsafe_tree(
                &abs,
                "the directory contains itself (its subtree is one of its ancestors)".to_owned(),
            ));
        }
        let nodes = self.reader.load(tree, &abs)?;
        self.stack.push(Frame {
            dir,
            tree,
            nodes: nodes.into_iter(),
        });
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(PathBuf, Node)>, RepositoryError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(mut node) = frame.nodes.next() else {
                self.stack.pop();
                continue;
            };
            let rel = frame.dir.join(node.name());
            if !self.wanted(&rel, &node) {
                continue;
            }
            if node.is_dir() {
                let id = self.reader.subtree_of(&node, &self.base.join(&rel))?;
                self.push(rel.clone(), id)?;
            } else {
                // Only a directory's subtree is ever read: a symlink or file stays childless.
                node.subtree = None;
            }
            return Ok(Some((rel, node)));
        }
    }
}

impl<S: IndexedTree> Iterator for Walk<'_, S> {
    type Item = Result<(PathBuf, Node), RepositoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Finds `path` (absolute, lexically clean) in the tree `root`: what a walk of it starts from.
/// Every tree on the way is validated like the walk's own.
pub(crate) fn locate<S: IndexedTree>(
    reader: &Reader<'_, S>,
    root: TreeId,
    path: &Path,
) -> Result<Option<Start>, RepositoryError> {
    let names: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut tree = root;
    let mut dir = PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        let nodes = reader.load(tree, &dir)?;
        let Some(node) = nodes.into_iter().find(|n| n.name() == *name) else {
            return Ok(None);
        };
        dir.push(name);
        let last = i + 1 == names.len();
        if last {
            return Ok(Some(if node.is_dir() {
                Start::Dir(node)
            } else {
                Start::Leaf(node)
            }));
        }
        if !node.is_dir() {
            return Ok(None);
        }
        tree = reader.subtree_of(&node, &dir)?;
    }
    Ok(Some(Start::Tree(tree)))
}
