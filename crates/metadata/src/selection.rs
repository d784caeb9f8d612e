//! The component selection engine (spec §8, §10): which components a backup or restore includes, and why.
//!
//! A requester names the components it wants; this module works out everything else the spec
//! demands from the Writer Metadata Documents:
//! - [`resolve_backup`] turns a [`BackupRequest`] into a [`BackupSelection`]: the explicitly included
//!   components that go into the BCD (BCD-3), the components they bring in implicitly (SEL-3, SEL-4),
//!   the required components (SEL-2), system state (SEL-8), dependency targets (DEP-1, DEP-2) and, for
//!   every file set, whether the backup type copies it (INC-2, SEL-7, BT-2);
//! - [`check_bcd`] lints a BCD that a requester built by hand (TS-30);
//! - [`resolve_restore`] turns a [`RestoreRequest`] on a stored BCD into a [`RestoreSelection`]
//!   (SEL-R-1 to SEL-R-3).
//!
//! Component sets follow LP-2: a component belongs to the set of a selectable component S when its
//! logical path is S's full path or lies below it. The engine never panics and always terminates,
//! whatever the documents contain: duplicated components, dependency cycles, empty names.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::bcd::{
    BackupComponents, BcdError, ComponentRecord, Party, Phase, RestoreSubcomponent,
    WriterComponents,
};
use crate::codes::{self, ErrorCode};
use crate::enums::{
    BackupType, ComponentFlags, ComponentType, FileSpecBackupType, UsageType, WriterRestore,
};
use crate::ids::{WriterClassId, WriterInstanceId};
use crate::logical_path;
use crate::wmd::{Component, Dependency, FileDescriptor, FileSet, WriterMetadata};

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

/// The prefix that marks a writer instance id in the text form of a selector.
const INSTANCE_PREFIX: &str = "instance=";

/// How a selector names a writer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterSelector {
    /// Every instance of a writer class (ROLE-7). Ambiguous when several instances have the component.
    ClassId(WriterClassId),
    /// One writer instance. In a restore this is the instance id recorded in the stored BCD.
    InstanceId(WriterInstanceId),
    /// The writer name; when no writer has this name, the persistent instance name (ROLE-7).
    Name(String),
}

impl fmt::Display for WriterSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriterSelector::ClassId(id) => write!(f, "{id}"),
            WriterSelector::InstanceId(id) => write!(f, "{INSTANCE_PREFIX}{id}"),
            WriterSelector::Name(name) => f.write_str(name),
        }
    }
}

impl FromStr for WriterSelector {
    type Err = SelectionError;

    /// A GUID is a class id, `instance=GUID` an instance id, anything else a writer name.
    fn from_str(text: &str) -> Result<Self, SelectionError> {
        if text.is_empty() {
            return Err(selector_syntax_error(text, "the writer is empty"));
        }
        if let Some(id) = text.strip_prefix(INSTANCE_PREFIX) {
            return id
                .parse::<WriterInstanceId>()
                .map(WriterSelector::InstanceId)
                .map_err(|_| {
                    selector_syntax_error(text, "`instance=` must be followed by a GUID")
                });
        }
        Ok(match text.parse::<WriterClassId>() {
            Ok(id) => WriterSelector::ClassId(id),
            Err(_) => WriterSelector::Name(text.to_owned()),
        })
    }
}

impl From<WriterClassId> for WriterSelector {
    fn from(id: WriterClassId) -> Self {
        WriterSelector::ClassId(id)
    }
}

impl From<WriterInstanceId> for WriterSelector {
    fn from(id: WriterInstanceId) -> Self {
        WriterSelector::InstanceId(id)
    }
}

/// One component named by the requester: a writer plus the component's logical path and name (COMP-3).
///
/// The text form is `WRITER:FULL\PATH`, for example `MyWriter:writerData\Set1`: WRITER is a writer
/// name, a class-id GUID or `instance=GUID`, and FULL\PATH is the component's full path (LP-2), split
/// at its last `\` into logical path and name. The first `:` ends the writer, so a writer whose name
/// contains `:` can only be selected by GUID or through the struct form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ComponentSelector {
    /// The writer.
    pub writer: WriterSelector,
    /// The component's logical path; empty at the top level.
    pub logical_path: String,
    /// The component's name.
    pub name: String,
}

impl ComponentSelector {
    /// A selector for the component `logical_path\name` of `writer`.
    pub fn new(
        writer: impl Into<WriterSelector>,
        logical_path: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ComponentSelector {
            writer: writer.into(),
            logical_path: logical_path.into(),
            name: name.into(),
        }
    }

    /// The full path of the selected component (LP-2).
    pub fn full_path(&self) -> String {
        logical_path::full_path(&self.logical_path, &self.name)
    }
}

impl fmt::Display for ComponentSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.writer, self.full_path())
    }
}

impl FromStr for ComponentSelector {
    type Err = SelectionError;

    fn from_str(text: &str) -> Result<Self, SelectionError> {
        let Some((writer, path)) = text.split_once(':') else {
            return Err(selector_syntax_error(
                text,
                "there is no `:` after the writer",
            ));
        };
        let writer = writer
            .parse::<WriterSelector>()
            .map_err(|_| selector_syntax_error(text, "the writer is empty or malformed"))?;
        if path.is_empty() {
            return Err(selector_syntax_error(text, "the component path is empty"));
        }
        let (logical_path, name) = path
            .rsplit_once(logical_path::SEPARATOR)
            .unwrap_or(("", path));
        if name.is_empty() {
            return Err(selector_syntax_error(
                text,
                "the component name after the last `\\` is empty",
            ));
        }
        Ok(ComponentSelector::new(writer, logical_path, name))
    }
}

fn selector_syntax_error(text: &str, why: &str) -> SelectionError {
    SelectionError::single(SelectionProblem::new(
        "LP-2",
        &codes::E_INVALIDARG,
        None,
        None,
        format!(
            "`{text}` is not a component selector: {why}; write WRITER:FULL\\PATH, for example `MyWriter:writerData\\Set1`"
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One reason why a selection was refused, with the requirement it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionProblem {
    /// The requirement ID, for example `"SEL-4"`; it also appears in the Display text.
    pub rule: &'static str,
    /// The writer concerned, as named in messages (writer name, or class id when the name is unknown).
    pub writer: Option<String>,
    /// The full path of the component concerned.
    pub component: Option<String>,
    /// What is wrong and what to do, naming the writer and the component.
    pub message: String,
    /// A reference keeps the problem small; the registry's codes are constants.
    code: &'static ErrorCode,
}

impl SelectionProblem {
    fn new(
        rule: &'static str,
        code: &'static ErrorCode,
        writer: Option<String>,
        component: Option<String>,
        message: String,
    ) -> Self {
        SelectionProblem {
            rule,
            writer,
            component,
            message,
            code,
        }
    }

    /// The VSS result code: VSS_E_OBJECT_NOT_FOUND for things that do not exist, E_INVALIDARG for
    /// selections the rules forbid.
    pub fn code(&self) -> ErrorCode {
        *self.code
    }
}

impl fmt::Display for SelectionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.rule)
    }
}

/// Why a selection could not be made: every problem found, never an empty list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_problems(&self.problems))]
pub struct SelectionError {
    problems: Vec<SelectionProblem>,
}

/// At most this many problems are spelled out in the Display text; all of them stay in the error.
const SHOWN_PROBLEMS: usize = 20;

fn render_problems(problems: &[SelectionProblem]) -> String {
    if let [only] = problems {
        return only.to_string();
    }
    let mut text = format!("{} problems with the component selection: ", problems.len());
    let shown: Vec<String> = problems
        .iter()
        .take(SHOWN_PROBLEMS)
        .map(ToString::to_string)
        .collect();
    text.push_str(&shown.join("; "));
    if problems.len() > SHOWN_PROBLEMS {
        text.push_str(&format!("; and {} more", problems.len() - SHOWN_PROBLEMS));
    }
    text
}

impl SelectionError {
    fn single(problem: SelectionProblem) -> Self {
        SelectionError {
            problems: vec![problem],
        }
    }

    /// `Err` with these problems, or `Ok` when there are none.
    fn check(problems: Vec<SelectionProblem>) -> Result<(), SelectionError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SelectionError { problems })
        }
    }

    /// Every problem, in the order found.
    pub fn problems(&self) -> &[SelectionProblem] {
        &self.problems
    }

    /// The problems, by value.
    pub fn into_problems(self) -> Vec<SelectionProblem> {
        self.problems
    }

    /// The result code of the first problem, for callers that can return only one.
    pub fn code(&self) -> ErrorCode {
        self.problems
            .first()
            .map_or(codes::E_INVALIDARG, SelectionProblem::code)
    }

    /// Whether some problem breaks this rule.
    pub fn has_rule(&self, rule: &str) -> bool {
        self.problems.iter().any(|p| p.rule == rule)
    }
}

// ---------------------------------------------------------------------------------------------
// The component model of one writer
// ---------------------------------------------------------------------------------------------

/// One writer's components with their set structure worked out once (LP-2).
struct Model<'a> {
    wmd: &'a WriterMetadata,
    /// The components, without repeated (logical path, name) pairs.
    comps: Vec<&'a Component>,
    by_id: HashMap<(&'a str, &'a str), usize>,
    /// For each component, the components whose sets contain it, nearest first.
    ancestors: Vec<Vec<usize>>,
    /// For each component, every component in the set it defines when selectable, in WMD order.
    members: Vec<Vec<usize>>,
    /// Whether some ancestor is selectable for backup (SEL-2, SEL-3).
    under_selectable: Vec<bool>,
    /// Full paths that the WMD lists more than once (WMD-9).
    duplicates: Vec<String>,
}

impl<'a> Model<'a> {
    fn new(wmd: &'a WriterMetadata) -> Self {
        let mut comps: Vec<&'a Component> = Vec::new();
        let mut by_id = HashMap::new();
        let mut duplicates = Vec::new();
        for component in &wmd.components {
            let key = (component.logical_path.as_str(), component.name.as_str());
            match by_id.entry(key) {
                // WMD-9 forbids this; the first definition wins so that the engine stays total.
                Entry::Occupied(_) => duplicates.push(component.full_path()),
                Entry::Vacant(slot) => {
                    slot.insert(comps.len());
                    comps.push(component);
                }
            }
        }

        // A trie of full-path segments. Walking a logical path through it finds exactly the
        // components whose full path equals the logical path or one of its `\`-prefixes, which is
        // LP-2's set membership, in time linear in the path instead of quadratic in the writer.
        let mut children: HashMap<(usize, &'a str), usize> = HashMap::new();
        let mut at_node: Vec<Vec<usize>> = vec![Vec::new()];
        for (index, component) in comps.iter().copied().enumerate() {
            // A nameless component has an empty or degenerate full path; it defines no set, or every
            // top-level component would fall into it.
            if component.name.is_empty() {
                continue;
            }
            let mut node = 0;
            for segment in segments(&component.logical_path).chain(component.name.split('\\')) {
                node = match children.get(&(node, segment)) {
                    Some(&next) => next,
                    None => {
                        let next = at_node.len();
                        at_node.push(Vec::new());
                        children.insert((node, segment), next);
                        next
                    }
                };
            }
            at_node[node].push(index);
        }

        let mut ancestors = Vec::with_capacity(comps.len());
        for (index, component) in comps.iter().enumerate() {
            let mut found = Vec::new();
            let mut node = 0;
            for segment in segments(&component.logical_path) {
                match children.get(&(node, segment)) {
                    Some(&next) => node = next,
                    None => break,
                }
                found.extend(at_node[node].iter().copied().filter(|&a| a != index));
            }
            found.reverse();
            ancestors.push(found);
        }
        let mut members = vec![Vec::new(); comps.len()];
        for (index, list) in ancestors.iter().enumerate() {
            for &ancestor in list {
                members[ancestor].push(index);
            }
        }
        let under_selectable = ancestors
            .iter()
            .map(|list| list.iter().any(|&a| comps[a].selectable_for_backup))
            .collect();
        Model {
            wmd,
            comps,
            by_id,
            ancestors,
            members,
            under_selectable,
            duplicates,
        }
    }

    fn name(&self) -> &'a str {
        &self.wmd.identity.writer_name
    }

    fn find(&self, logical_path: &str, name: &str) -> Option<usize> {
        self.by_id.get(&(logical_path, name)).copied()
    }

    fn full_path(&self, c: usize) -> String {
        self.comps[c].full_path()
    }

    fn selectable(&self, c: usize) -> bool {
        self.comps[c].selectable_for_backup
    }

    /// Non-selectable with no selectable ancestor: included whenever the writer takes part (SEL-2).
    fn required(&self, c: usize) -> bool {
        !self.selectable(c) && !self.under_selectable[c]
    }

    /// Whether the component may be listed in the BCD at all (SEL-2, SEL-4), as opposed to a
    /// non-selectable subcomponent, which only ever comes with its set (SEL-3).
    fn explicit_capable(&self, c: usize) -> bool {
        self.selectable(c) || !self.under_selectable[c]
    }

    /// The members of the component's set: only a selectable-for-backup component defines one.
    fn members_if_set(&self, c: usize) -> &[usize] {
        if self.selectable(c) {
            &self.members[c]
        } else {
            &[]
        }
    }

    fn nearest_selectable_ancestor(&self, c: usize) -> Option<usize> {
        self.ancestors[c]
            .iter()
            .copied()
            .find(|&a| self.selectable(a))
    }

    /// The components ordered so that every ancestor comes before its descendants: an ancestor's
    /// own ancestors are a strict subset of its descendant's, so sorting by their count works.
    fn depth_order(&self, among: impl Iterator<Item = usize>) -> Vec<usize> {
        let mut order: Vec<usize> = among.collect();
        order.sort_by_key(|&c| (self.ancestors[c].len(), c));
        order
    }

    fn is_system_state_writer(&self) -> bool {
        matches!(
            self.wmd.identity.usage_type,
            UsageType::BootableSystemState | UsageType::SystemService
        )
    }

    fn in_system_state(&self, c: usize) -> bool {
        !self.comps[c]
            .component_flags
            .contains(ComponentFlags::NOT_SYSTEM_STATE)
    }
}

/// The `\`-separated segments of a non-empty logical path; none for the top level.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    (!path.is_empty())
        .then(|| path.split('\\'))
        .into_iter()
        .flatten()
}

/// What a selector's writer part is matched against.
struct WriterKey<'a> {
    class_id: WriterClassId,
    instance_id: WriterInstanceId,
    writer_name: Option<&'a str>,
    instance_name: Option<&'a str>,
}

impl WriterKey<'_> {
    fn label(&self) -> String {
        match (self.writer_name, self.instance_name) {
            (Some(name), _) => name.to_owned(),
            (None, Some(instance)) => format!("{} (instance `{instance}`)", self.class_id),
            (None, None) => self.class_id.to_string(),
        }
    }
}

fn wmd_key(wmd: &WriterMetadata) -> WriterKey<'_> {
    WriterKey {
        class_id: wmd.identity.class_id,
        instance_id: wmd.identity.instance_id,
        writer_name: Some(&wmd.identity.writer_name),
        instance_name: wmd.identity.instance_name.as_deref(),
    }
}

fn matching_writers(selector: &WriterSelector, keys: &[WriterKey<'_>]) -> Vec<usize> {
    let matching = |test: &dyn Fn(&WriterKey<'_>) -> bool| -> Vec<usize> {
        keys.iter()
            .enumerate()
            .filter(|(_, k)| test(k))
            .map(|(i, _)| i)
            .collect()
    };
    match selector {
        WriterSelector::ClassId(id) => matching(&|k| k.class_id == *id),
        WriterSelector::InstanceId(id) => matching(&|k| k.instance_id == *id),
        WriterSelector::Name(name) => {
            let by_name = matching(&|k| k.writer_name == Some(name.as_str()));
            if by_name.is_empty() {
                matching(&|k| k.instance_name == Some(name.as_str()))
            } else {
                by_name
            }
        }
    }
}

/// The one writer a selector means: among the writers it matches, the one that has the component.
fn pick_writer(
    selector: &ComponentSelector,
    keys: &[WriterKey<'_>],
    has_component: impl Fn(usize) -> bool,
    not_found_rule: &'static str,
    context: &str,
) -> Result<usize, SelectionProblem> {
    let full = selector.full_path();
    let candidates = matching_writers(&selector.writer, keys);
    let Some(&first) = candidates.first() else {
        return Err(SelectionProblem::new(
            not_found_rule,
            &codes::VSS_E_OBJECT_NOT_FOUND,
            Some(selector.writer.to_string()),
            Some(full.clone()),
            format!(
                "no writer `{}` is among {context}, so `{selector}` names nothing",
                selector.writer
            ),
        ));
    };
    let with: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&w| has_component(w))
        .collect();
    match with.as_slice() {
        [] => Err(SelectionProblem::new(
            not_found_rule,
            &codes::VSS_E_OBJECT_NOT_FOUND,
            Some(keys[first].label()),
            Some(full.clone()),
            format!("writer `{}` has no component `{full}`", keys[first].label()),
        )),
        [only] => Ok(*only),
        several => {
            let instances: Vec<String> = several
                .iter()
                .map(|&w| format!("{INSTANCE_PREFIX}{}", keys[w].instance_id))
                .collect();
            Err(SelectionProblem::new(
                "ROLE-7",
                &codes::E_INVALIDARG,
                Some(selector.writer.to_string()),
                Some(full.clone()),
                format!(
                    "`{}` matches {} writer instances that all have component `{full}`; name one instance instead: {}",
                    selector.writer,
                    several.len(),
                    instances.join(", ")
                ),
            ))
        }
    }
}

/// Refuses writer metadata that lists one writer instance twice (ROLE-7: class id plus instance id
/// identify a running writer), because then no component can be attributed to one writer.
fn check_unique_instances(writers: &[WriterMetadata], problems: &mut Vec<SelectionProblem>) {
    let mut seen = HashSet::new();
    let mut reported = HashSet::new();
    for wmd in writers {
        let id = wmd.identity.instance_id;
        if !seen.insert(id) && reported.insert(id) {
            problems.push(SelectionProblem::new(
                "ROLE-7",
                &codes::E_INVALIDARG,
                Some(wmd.identity.writer_name.clone()),
                None,
                format!(
                    "writer instance {id} (`{}`) appears more than once in the writer metadata; each running writer must be listed once",
                    wmd.identity.writer_name
                ),
            ));
        }
    }
}

/// The writers and components a local dependency points to (DEP-1).
///
/// A dependency names only a class id. A target in the dependent's own writer instance is that
/// instance's component; otherwise every instance of the class that has the component is a target,
/// because backing up too much is safe and backing up too little is not.
fn dependency_targets(
    models: &[Model<'_>],
    w: usize,
    dependency: &Dependency,
) -> Vec<(usize, usize)> {
    let (path, name) = (
        dependency.logical_path.as_str(),
        dependency.component_name.as_str(),
    );
    if models[w].wmd.identity.class_id == dependency.writer_class_id
        && let Some(c) = models[w].find(path, name)
    {
        return vec![(w, c)];
    }
    models
        .iter()
        .enumerate()
        .filter(|(_, m)| m.wmd.identity.class_id == dependency.writer_class_id)
        .filter_map(|(t, m)| m.find(path, name).map(|c| (t, c)))
        .collect()
}

fn dependency_target_text(dependency: &Dependency) -> String {
    logical_path::full_path(&dependency.logical_path, &dependency.component_name)
}

fn missing_target_problem(
    models: &[Model<'_>],
    w: usize,
    c: usize,
    dependency: &Dependency,
) -> SelectionProblem {
    let target = dependency_target_text(dependency);
    let owner = models
        .iter()
        .find(|m| m.wmd.identity.class_id == dependency.writer_class_id);
    let why = match owner {
        Some(m) => format!("writer `{}` has no such component", m.name()),
        None => format!(
            "no writer of class {} is present",
            dependency.writer_class_id
        ),
    };
    SelectionProblem::new(
        "DEP-1",
        &codes::VSS_E_OBJECT_NOT_FOUND,
        Some(models[w].name().to_owned()),
        Some(models[w].full_path(c)),
        format!(
            "component `{}` of writer `{}` depends on `{target}` of writer class {}, but {why}; the dependent cannot be backed up without its target",
            models[w].full_path(c),
            models[w].name(),
            dependency.writer_class_id
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Backup
// ---------------------------------------------------------------------------------------------

/// What to do when an included component depends on a component that is not included (DEP-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyPolicy {
    /// Include the targets too (DEP-1's first way).
    #[default]
    IncludeTargets,
    /// Refuse the selection, naming dependent and target (DEP-1's second way).
    Refuse,
}

/// What a requester asks to back up, with the backup state it will set (BK-INIT-3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequest {
    /// The backup type (BT-1).
    pub backup_type: BackupType,
    /// Component mode honours selectability; volume mode adds no components (SEL-6).
    pub component_mode: bool,
    /// Whether bootable system state is included (SEL-8).
    pub bootable_system_state: bool,
    /// The components the requester chose.
    pub selected: Vec<ComponentSelector>,
    /// How dependency targets that were not chosen are handled (DEP-1).
    pub dependencies: DependencyPolicy,
}

impl Default for BackupRequest {
    /// A full backup in component mode with nothing selected yet.
    fn default() -> Self {
        BackupRequest {
            backup_type: BackupType::Full,
            component_mode: true,
            bootable_system_state: false,
            selected: Vec::new(),
            dependencies: DependencyPolicy::IncludeTargets,
        }
    }
}

impl BackupRequest {
    /// A full component-mode backup of these components.
    pub fn new(selected: Vec<ComponentSelector>) -> Self {
        BackupRequest {
            selected,
            ..BackupRequest::default()
        }
    }
}

/// How a component is in the backup (BCD-3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inclusion {
    /// It has a record in the BCD.
    Explicit,
    /// It comes with the set of an explicitly included selectable ancestor and has no record.
    Implicit {
        /// The full path of that ancestor, whose record stands for the whole set (BCD-9).
        set: String,
    },
}

/// Why a component is in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The requester chose it.
    Requested,
    /// It is non-selectable with no selectable ancestor, and its writer takes part (SEL-2).
    Required,
    /// It is a member of the set of an included selectable component (SEL-3, SEL-4).
    InSetOf {
        /// The full path of the set-defining component.
        set: String,
    },
    /// A component of another writer depends on it (DEP-1).
    DependencyOf {
        /// The dependent's writer name.
        writer: String,
        /// The dependent's full path.
        component: String,
    },
    /// It is part of bootable system state (SEL-8).
    SystemState,
}

/// How one file set is treated by the backup type (INC-2, SEL-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMode {
    /// Copy the whole set: its backup-required bit for this type is set.
    Whole,
    /// Copy what changed since the base backup (incremental and differential only).
    ChangedOnly,
    /// Do not copy the set in this backup type.
    Skip,
}

/// Which list of the component a file set comes from (COMP-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A file-group file set.
    Files,
    /// A database data file set.
    DatabaseFiles,
    /// A database log file set.
    DatabaseLogFiles,
}

/// The plan for one file descriptor of an included component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePlan {
    /// Which list it comes from.
    pub kind: FileKind,
    /// The directory.
    pub path: String,
    /// The file-name pattern.
    pub filespec: String,
    /// Whether the pattern reaches below `path`.
    pub recursive: bool,
    /// Where the writer keeps a stable copy to read instead (ALTP-1).
    pub alternate_path: Option<String>,
    /// The descriptor's backup-type mask (ENUM-12).
    pub backup_type_mask: FileSpecBackupType,
    /// Whether and how the set is copied.
    pub copy: CopyMode,
    /// Whether it must be read from the shadow copy (the type's snapshot-required bit, INC-2).
    pub from_snapshot: bool,
}

impl FilePlan {
    /// The (path, filespec, recursive) triple.
    pub fn file_set(&self) -> FileSet {
        FileSet {
            path: self.path.clone(),
            filespec: self.filespec.clone(),
            recursive: self.recursive,
        }
    }
}

/// One component in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncludedComponent {
    /// The logical path.
    pub logical_path: String,
    /// The name.
    pub name: String,
    /// Database or file group.
    pub component_type: ComponentType,
    /// Explicit or implicit.
    pub inclusion: Inclusion,
    /// Why it is included.
    pub reason: Reason,
    /// Its file sets, each with its plan for the writer's effective backup type.
    pub files: Vec<FilePlan>,
}

impl IncludedComponent {
    /// The full path (LP-2).
    pub fn full_path(&self) -> String {
        logical_path::full_path(&self.logical_path, &self.name)
    }

    /// Whether the component gets a BCD record.
    pub fn is_explicit(&self) -> bool {
        self.inclusion == Inclusion::Explicit
    }
}

/// Why a writer takes part in the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Participation {
    /// Some of its components are included (BK-DISC-4).
    Components,
    /// Volume mode: every writer takes part with no components (SEL-6, BK-DISC-5).
    VolumeMode,
}

/// One writer that takes part in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectedWriter {
    /// The writer name.
    pub writer_name: String,
    /// The class id.
    pub class_id: WriterClassId,
    /// The instance id.
    pub instance_id: WriterInstanceId,
    /// The persistent instance name, if any.
    pub instance_name: Option<String>,
    /// Why it takes part.
    pub participation: Participation,
    /// The type its file sets are planned for: the requested type, or FULL when its backup schema
    /// does not support that type (BT-2). The BCD still carries the requested type.
    pub effective_backup_type: BackupType,
    /// Things the requester should know, such as a BT-2 fallback.
    pub notes: Vec<String>,
    /// The writer's excludes, which win over every file set (BK-COPY-3).
    pub excludes: Vec<FileSet>,
    /// Every included component, explicit and implicit, in WMD order.
    pub components: Vec<IncludedComponent>,
}

impl SelectedWriter {
    /// The included component with this logical path and name.
    pub fn component(&self, logical_path: &str, name: &str) -> Option<&IncludedComponent> {
        self.components
            .iter()
            .find(|c| c.logical_path == logical_path && c.name == name)
    }

    /// The explicitly included components: exactly the BCD records (BCD-3).
    pub fn explicit_components(&self) -> impl Iterator<Item = &IncludedComponent> {
        self.components.iter().filter(|c| c.is_explicit())
    }

    /// The implicitly included components.
    pub fn implicit_components(&self) -> impl Iterator<Item = &IncludedComponent> {
        self.components.iter().filter(|c| !c.is_explicit())
    }
}

/// A dependency on a component of another host, which the requester backs up through an agent
/// there (DEP-2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteDependency {
    /// The dependent's writer name.
    pub writer_name: String,
    /// The dependent's writer instance.
    pub instance_id: WriterInstanceId,
    /// The dependent's full path.
    pub component: String,
    /// The remote host: the first element after `\\`, a name or an address.
    pub host: String,
    /// The class id of the remote writer.
    pub target_class_id: WriterClassId,
    /// The target's logical path, as the writer wrote it (with the `\\host\` prefix).
    pub target_logical_path: String,
    /// The target's name.
    pub target_name: String,
}

/// The outcome of [`resolve_backup`]: who takes part, with what, and how each file set is copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSelection {
    /// The requested backup type.
    pub backup_type: BackupType,
    /// Component mode or volume mode.
    pub component_mode: bool,
    /// Whether bootable system state is included.
    pub bootable_system_state: bool,
    /// The participating writers, in the order of the writer metadata (SEL-5: no others).
    pub writers: Vec<SelectedWriter>,
    /// Dependencies on other hosts (DEP-2).
    pub remote_dependencies: Vec<RemoteDependency>,
}

impl BackupSelection {
    /// The participating writer instance with this id.
    pub fn writer(&self, instance_id: WriterInstanceId) -> Option<&SelectedWriter> {
        self.writers.iter().find(|w| w.instance_id == instance_id)
    }

    /// The first participating writer with this name.
    pub fn writer_named(&self, name: &str) -> Option<&SelectedWriter> {
        self.writers.iter().find(|w| w.writer_name == name)
    }

    /// Whether some file set that is copied must come from a shadow copy; when none must, the
    /// requester may skip DoSnapshotSet (INC-2, TS-43).
    pub fn needs_snapshot(&self) -> bool {
        self.writers
            .iter()
            .flat_map(|w| &w.components)
            .flat_map(|c| &c.files)
            .any(|f| f.copy != CopyMode::Skip && f.from_snapshot)
    }

    /// Records the selection in a BCD during backup discovery: exactly the explicitly included
    /// components become records (BCD-3, BK-DISC-3), and the backup state this selection was planned
    /// for (component mode, bootable system state, backup type) is set, keeping the BCD's
    /// partial-file support (BK-INIT-3). Nothing changes unless everything succeeds.
    pub fn apply_to(&self, bcd: &mut BackupComponents) -> Result<(), BcdError> {
        let mut updated = bcd.clone();
        let mut state = updated.backup_state();
        state.component_mode = self.component_mode;
        state.bootable_system_state = self.bootable_system_state;
        state.backup_type = self.backup_type;
        updated.set_backup_state(Phase::BackupDiscovery, state)?;
        for writer in &self.writers {
            let entry = WriterComponents::new(
                writer.class_id,
                writer.instance_id,
                writer.instance_name.clone(),
            );
            for component in writer.explicit_components() {
                updated.add_component(
                    Phase::BackupDiscovery,
                    &entry,
                    ComponentRecord::new(
                        component.component_type,
                        component.logical_path.clone(),
                        component.name.clone(),
                    ),
                )?;
            }
        }
        *bcd = updated;
        Ok(())
    }
}

/// Works out a backup from the writers' metadata and the requester's choice (spec §8, §9).
///
/// In component mode:
/// - each requested component must exist (BK-DISC-3) and be selectable, or non-selectable with no
///   selectable ancestor (SEL-3); a component and one of its selectable ancestors cannot both be
///   requested (SEL-4);
/// - an included selectable component brings in its whole set implicitly (SEL-3, SEL-4);
/// - a writer with any included component also gets all its required components (SEL-2), and a
///   writer with none takes no part (SEL-5);
/// - with bootable system state, system writers are included whole, less NOT_SYSTEM_STATE
///   components (SEL-8);
/// - every local dependency target of an included component is included or refused (DEP-1); remote
///   ones are listed (DEP-2).
///
/// In volume mode every writer takes part with no components (SEL-6).
///
/// Every problem found is returned together.
pub fn resolve_backup(
    writers: &[WriterMetadata],
    request: &BackupRequest,
) -> Result<BackupSelection, SelectionError> {
    let mut problems = Vec::new();
    check_unique_instances(writers, &mut problems);
    SelectionError::check(problems)?;
    let models: Vec<Model<'_>> = writers.iter().map(Model::new).collect();

    if !request.component_mode {
        return resolve_volume_mode(&models, request);
    }

    let mut problems = Vec::new();
    let keys: Vec<WriterKey<'_>> = writers.iter().map(wmd_key).collect();
    let mut requested: Vec<(usize, usize)> = Vec::new();
    let mut seen = HashSet::new();
    for selector in &request.selected {
        let find = |w: usize| models[w].find(&selector.logical_path, &selector.name);
        let context = "the writers that answered Identify";
        let w = match pick_writer(selector, &keys, |w| find(w).is_some(), "BK-DISC-3", context) {
            Ok(w) => w,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let Some(c) = find(w) else { continue };
        let model = &models[w];
        if !model.explicit_capable(c) {
            problems.push(non_selectable_subcomponent_problem(model, c));
        } else if seen.insert((w, c)) {
            requested.push((w, c));
        }
    }

    // SEL-4: a selectable subcomponent must not be added when an ancestor is included. When both
    // are requested the requester must decide which one it meant.
    let mut conflicting = HashSet::new();
    for &(w, c) in &requested {
        let model = &models[w];
        if let Some(&ancestor) = model.ancestors[c]
            .iter()
            .find(|&&a| model.selectable(a) && seen.contains(&(w, a)))
        {
            conflicting.insert((w, c));
            let (full, set) = (model.full_path(c), model.full_path(ancestor));
            problems.push(SelectionProblem::new(
                "SEL-4",
                &codes::E_INVALIDARG,
                Some(model.name().to_owned()),
                Some(full.clone()),
                format!(
                    "component `{full}` of writer `{}` is included implicitly with `{set}`, which is selected too; a selectable subcomponent must not be added when an ancestor is included, so drop `{full}` (or `{set}`) from the selection",
                    model.name()
                ),
            ));
        }
    }

    let mut resolver = BackupResolver::new(&models, request.dependencies);
    // Every requested component goes in before any writer takes part, so that a requested
    // component keeps its reason even when it is also required (SEL-2).
    for &(w, c) in &requested {
        if !conflicting.contains(&(w, c)) {
            resolver.insert_explicit(w, c, Reason::Requested);
        }
    }
    for &(w, _) in &requested {
        resolver.take_part(w);
    }
    if request.bootable_system_state {
        resolver.add_system_state();
    }
    resolver.follow_dependencies();
    problems.append(&mut resolver.problems);
    SelectionError::check(problems)?;
    Ok(resolver.finish(request))
}

fn non_selectable_subcomponent_problem(model: &Model<'_>, c: usize) -> SelectionProblem {
    let full = model.full_path(c);
    let set = model
        .nearest_selectable_ancestor(c)
        .map(|a| model.full_path(a))
        .unwrap_or_default();
    SelectionProblem::new(
        "SEL-3",
        &codes::E_INVALIDARG,
        Some(model.name().to_owned()),
        Some(full.clone()),
        format!(
            "component `{full}` of writer `{}` is not selectable for backup and is included only implicitly with its set; select `{set}` instead",
            model.name()
        ),
    )
}

fn resolve_volume_mode(
    models: &[Model<'_>],
    request: &BackupRequest,
) -> Result<BackupSelection, SelectionError> {
    if let Some(first) = request.selected.first() {
        return Err(SelectionError::single(SelectionProblem::new(
            "SEL-6",
            &codes::E_INVALIDARG,
            Some(first.writer.to_string()),
            Some(first.full_path()),
            format!(
                "{} component(s) were selected (first `{first}`), but a volume-mode backup adds no components; select none, or back up in component mode",
                request.selected.len()
            ),
        )));
    }
    let writers = models
        .iter()
        .map(|model| {
            let mut notes = duplicate_notes(model);
            let effective = effective_backup_type(model, request.backup_type, &mut notes);
            selected_writer(
                model,
                Participation::VolumeMode,
                effective,
                notes,
                Vec::new(),
            )
        })
        .collect();
    Ok(BackupSelection {
        backup_type: request.backup_type,
        component_mode: false,
        bootable_system_state: request.bootable_system_state,
        writers,
        remote_dependencies: Vec::new(),
    })
}

fn duplicate_notes(model: &Model<'_>) -> Vec<String> {
    model
        .duplicates
        .iter()
        .map(|full| {
            format!("component `{full}` is defined more than once in the writer metadata; only its first definition is used (WMD-9)")
        })
        .collect()
}

/// BT-2: a writer whose schema lacks the requested type is backed up in full.
fn effective_backup_type(
    model: &Model<'_>,
    requested: BackupType,
    notes: &mut Vec<String>,
) -> BackupType {
    let schema = model.wmd.backup_schema;
    if schema.supports(requested) {
        return requested;
    }
    notes.push(format!(
        "writer `{}` does not support {requested} backups (backup schema {schema}); its file sets are planned for a FULL backup (BT-2)",
        model.name()
    ));
    BackupType::Full
}

fn selected_writer(
    model: &Model<'_>,
    participation: Participation,
    effective_backup_type: BackupType,
    notes: Vec<String>,
    components: Vec<IncludedComponent>,
) -> SelectedWriter {
    let identity = &model.wmd.identity;
    SelectedWriter {
        writer_name: identity.writer_name.clone(),
        class_id: identity.class_id,
        instance_id: identity.instance_id,
        instance_name: identity.instance_name.clone(),
        participation,
        effective_backup_type,
        notes,
        excludes: model.wmd.excludes.clone(),
        components,
    }
}

/// The plan of each file set of a component for a backup type (INC-2, SEL-7).
fn plan_files(component: &Component, backup_type: BackupType) -> Vec<FilePlan> {
    let required = FileSpecBackupType::backup_required_bit(backup_type);
    let snapshot = FileSpecBackupType::snapshot_required_bit(backup_type);
    let lists = [
        (FileKind::Files, &component.files),
        (FileKind::DatabaseFiles, &component.database_files),
        (FileKind::DatabaseLogFiles, &component.database_log_files),
    ];
    let plan = |kind: FileKind, descriptor: &FileDescriptor| {
        let mask = descriptor.backup_type_mask;
        let copy = if mask.contains(required) {
            CopyMode::Whole
        } else if matches!(
            backup_type,
            BackupType::Incremental | BackupType::Differential
        ) {
            CopyMode::ChangedOnly
        } else {
            // SEL-7: without its bit a set contributes nothing to a FULL, COPY, OTHER or LOG backup,
            // even when its component is included.
            CopyMode::Skip
        };
        FilePlan {
            kind,
            path: descriptor.path.clone(),
            filespec: descriptor.filespec.clone(),
            recursive: descriptor.recursive,
            alternate_path: descriptor.alternate_path.clone(),
            backup_type_mask: mask,
            copy,
            from_snapshot: mask.contains(snapshot),
        }
    };
    lists
        .into_iter()
        .flat_map(|(kind, list)| list.iter().map(move |d| plan(kind, d)))
        .collect()
}

/// The mutable state of one component-mode resolution.
struct BackupResolver<'m, 'a> {
    models: &'m [Model<'a>],
    policy: DependencyPolicy,
    /// Per writer, the components added explicitly so far with their first reason.
    explicit: Vec<BTreeMap<usize, Reason>>,
    included: Vec<Vec<bool>>,
    participating: Vec<bool>,
    /// Newly included components whose dependencies are still to be followed. Each component
    /// enters once, which is what makes dependency cycles terminate.
    pending: VecDeque<(usize, usize)>,
    problems: Vec<SelectionProblem>,
    remote: Vec<RemoteDependency>,
}

impl<'m, 'a> BackupResolver<'m, 'a> {
    fn new(models: &'m [Model<'a>], policy: DependencyPolicy) -> Self {
        BackupResolver {
            models,
            policy,
            explicit: vec![BTreeMap::new(); models.len()],
            included: models.iter().map(|m| vec![false; m.comps.len()]).collect(),
            participating: vec![false; models.len()],
            pending: VecDeque::new(),
            problems: Vec::new(),
            remote: Vec::new(),
        }
    }

    fn mark(&mut self, w: usize, c: usize) {
        if !self.included[w][c] {
            self.included[w][c] = true;
            self.pending.push_back((w, c));
        }
    }

    /// Adds a component explicitly unless it is already in, with its set and, when its writer
    /// starts taking part, the writer's required components (SEL-2).
    fn add_explicit(&mut self, w: usize, c: usize, reason: Reason) {
        if self.insert_explicit(w, c, reason) {
            self.take_part(w);
        }
    }

    /// Adds a component and its set, unless an included ancestor already brings it in (SEL-4).
    /// Returns whether it was added.
    fn insert_explicit(&mut self, w: usize, c: usize, reason: Reason) -> bool {
        if self.included[w][c] {
            return false;
        }
        let model = &self.models[w];
        self.explicit[w].insert(c, reason);
        self.mark(w, c);
        if model.selectable(c) {
            for &member in &model.members[c] {
                self.mark(w, member);
            }
        }
        true
    }

    /// SEL-2: once a writer takes part, every required component is in.
    fn take_part(&mut self, w: usize) {
        if std::mem::replace(&mut self.participating[w], true) {
            return;
        }
        let model = &self.models[w];
        for r in 0..model.comps.len() {
            if model.required(r) {
                self.insert_explicit(w, r, Reason::Required);
            }
        }
    }

    /// SEL-8: system writers take part with every component not flagged NOT_SYSTEM_STATE. Each
    /// component that may be listed is added unless an included ancestor already brings it in; a
    /// non-selectable member of a flagged set cannot be included without that set, so it stays out.
    /// The writer's required components follow as usual, so a flagged required one is still in.
    fn add_system_state(&mut self) {
        let models = self.models;
        for (w, model) in models.iter().enumerate() {
            if !model.is_system_state_writer() {
                continue;
            }
            let mut added = false;
            for c in model.depth_order(0..model.comps.len()) {
                if model.in_system_state(c) && model.explicit_capable(c) {
                    added |= self.insert_explicit(w, c, Reason::SystemState);
                }
            }
            if added {
                self.take_part(w);
            }
        }
    }

    fn follow_dependencies(&mut self) {
        let models = self.models;
        while let Some((w, c)) = self.pending.pop_front() {
            for dependency in &models[w].comps[c].dependencies {
                self.follow(w, c, dependency);
            }
        }
    }

    fn follow(&mut self, w: usize, c: usize, dependency: &Dependency) {
        let models = self.models;
        let model = &models[w];
        if dependency.is_remote() {
            // DEP-2: the component lives on another host; the requester backs it up there.
            let host = logical_path::remote_host(&dependency.logical_path)
                .or_else(|| logical_path::remote_host(&dependency.component_name))
                .unwrap_or_default();
            let remote = RemoteDependency {
                writer_name: model.name().to_owned(),
                instance_id: model.wmd.identity.instance_id,
                component: model.full_path(c),
                host: host.to_owned(),
                target_class_id: dependency.writer_class_id,
                target_logical_path: dependency.logical_path.clone(),
                target_name: dependency.component_name.clone(),
            };
            if !self.remote.contains(&remote) {
                self.remote.push(remote);
            }
            return;
        }
        let targets = dependency_targets(models, w, dependency);
        if targets.is_empty() {
            self.problems
                .push(missing_target_problem(models, w, c, dependency));
            return;
        }
        for (t, tc) in targets {
            if self.included[t][tc] {
                continue;
            }
            let target = &models[t];
            match self.policy {
                DependencyPolicy::Refuse => self.problems.push(SelectionProblem::new(
                    "DEP-1",
                    &codes::E_INVALIDARG,
                    Some(model.name().to_owned()),
                    Some(model.full_path(c)),
                    format!(
                        "component `{}` of writer `{}` depends on `{}` of writer `{}`, which is not selected; select the target too, or leave out `{}`",
                        model.full_path(c),
                        model.name(),
                        target.full_path(tc),
                        target.name(),
                        model.full_path(c)
                    ),
                )),
                DependencyPolicy::IncludeTargets => {
                    // A non-selectable subcomponent can only come with its set (SEL-3), so the
                    // nearest selectable ancestor is added instead; it is not included yet, or the
                    // target would be too.
                    let add = if target.explicit_capable(tc) {
                        tc
                    } else {
                        target.nearest_selectable_ancestor(tc).unwrap_or(tc)
                    };
                    let reason = Reason::DependencyOf {
                        writer: model.name().to_owned(),
                        component: model.full_path(c),
                    };
                    self.add_explicit(t, add, reason);
                }
            }
        }
    }

    fn finish(self, request: &BackupRequest) -> BackupSelection {
        let mut writers = Vec::new();
        for (w, model) in self.models.iter().enumerate() {
            if !self.participating[w] {
                continue;
            }
            let explicit = &self.explicit[w];
            let mut notes = duplicate_notes(model);
            let effective = effective_backup_type(model, request.backup_type, &mut notes);

            // A component added on its own can end up inside the set of an ancestor that was
            // added later, for example by a dependency. It then must not keep its record (SEL-4):
            // it stays explicit only if no selectable ancestor stays explicit. Ancestors come
            // first in depth order, so each decision uses final ones.
            let mut stays_explicit = vec![false; model.comps.len()];
            for c in model.depth_order(explicit.keys().copied()) {
                stays_explicit[c] = !model.ancestors[c]
                    .iter()
                    .any(|&a| model.selectable(a) && stays_explicit[a]);
            }

            let mut components = Vec::new();
            for (c, component) in model.comps.iter().enumerate() {
                if !self.included[w][c] {
                    continue;
                }
                let set = (!stays_explicit[c])
                    .then(|| {
                        model.ancestors[c]
                            .iter()
                            .copied()
                            .find(|&a| model.selectable(a) && stays_explicit[a])
                    })
                    .flatten();
                let (inclusion, reason) = match set {
                    Some(a) => {
                        let set = model.full_path(a);
                        if explicit.contains_key(&c) {
                            notes.push(format!(
                                "component `{}` is included implicitly with `{set}`, so it is not added on its own (SEL-4)",
                                model.full_path(c)
                            ));
                        }
                        (
                            Inclusion::Implicit { set: set.clone() },
                            Reason::InSetOf { set },
                        )
                    }
                    // Every included component is explicit or inside an explicit set; the
                    // fallback only keeps this total.
                    None => (
                        Inclusion::Explicit,
                        explicit.get(&c).cloned().unwrap_or(Reason::Required),
                    ),
                };
                components.push(IncludedComponent {
                    logical_path: component.logical_path.clone(),
                    name: component.name.clone(),
                    component_type: component.component_type,
                    inclusion,
                    reason,
                    files: plan_files(component, effective),
                });
            }
            writers.push(selected_writer(
                model,
                Participation::Components,
                effective,
                notes,
                components,
            ));
        }
        BackupSelection {
            backup_type: request.backup_type,
            component_mode: true,
            bootable_system_state: request.bootable_system_state,
            writers,
            remote_dependencies: self.remote,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// BCD lint
// ---------------------------------------------------------------------------------------------

/// The writer a backup-time BCD entry belongs to: the same instance, or else the one instance of the
/// class with the same persistent instance name (RST-INIT-4).
fn match_backup_writer(entry: &WriterComponents, models: &[Model<'_>]) -> Option<usize> {
    let exact = models.iter().position(|m| {
        m.wmd.identity.class_id == entry.class_id && m.wmd.identity.instance_id == entry.instance_id
    });
    exact.or_else(|| {
        let same: Vec<usize> = models
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                m.wmd.identity.class_id == entry.class_id
                    && m.wmd.identity.instance_name == entry.instance_name
            })
            .map(|(i, _)| i)
            .collect();
        match same.as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    })
}

/// Lints a BCD that a requester built during backup against the writers' metadata (TS-30).
///
/// Reports, each with its rule:
/// - writers and components that do not exist, or whose type differs (BK-DISC-3);
/// - records of implicitly included components: non-selectable subcomponents (SEL-3) and selectable
///   subcomponents whose selectable ancestor is listed too (SEL-4, BCD-3); records listed twice;
/// - required components missing from a writer that takes part (SEL-2);
/// - local dependency targets that are not included (DEP-1);
/// - with bootable system state, system-state components left out (SEL-8);
/// - in volume mode, any record at all (BK-DISC-5).
pub fn check_bcd(bcd: &BackupComponents, writers: &[WriterMetadata]) -> Result<(), SelectionError> {
    let mut problems = Vec::new();
    check_unique_instances(writers, &mut problems);
    let models: Vec<Model<'_>> = writers.iter().map(Model::new).collect();
    let state = bcd.backup_state();
    if !state.component_mode {
        for entry in bcd.writers().iter().filter(|e| !e.components().is_empty()) {
            let name = match_backup_writer(entry, &models).map_or_else(
                || entry.class_id.to_string(),
                |w| models[w].name().to_owned(),
            );
            problems.push(SelectionProblem::new(
                "BK-DISC-5",
                &codes::E_INVALIDARG,
                Some(name.clone()),
                entry.components().first().map(ComponentRecord::full_path),
                format!(
                    "the BCD is for a volume-mode backup, yet writer `{name}` has {} component record(s); volume mode adds no components",
                    entry.components().len()
                ),
            ));
        }
        return SelectionError::check(problems);
    }

    let mut explicit: Vec<Vec<bool>> = models.iter().map(|m| vec![false; m.comps.len()]).collect();
    let mut taking_part = vec![false; models.len()];
    let mut entry_of: HashMap<usize, usize> = HashMap::new();
    for (e, entry) in bcd.writers().iter().enumerate() {
        if entry.components().is_empty() {
            continue;
        }
        let Some(w) = match_backup_writer(entry, &models) else {
            problems.push(SelectionProblem::new(
                "BK-DISC-3",
                &codes::VSS_E_OBJECT_NOT_FOUND,
                Some(entry.class_id.to_string()),
                None,
                format!(
                    "the BCD lists components of writer {} (instance {}), which is not among the writers' metadata",
                    entry.class_id, entry.instance_id
                ),
            ));
            continue;
        };
        let model = &models[w];
        if entry_of.insert(w, e).is_some() {
            problems.push(SelectionProblem::new(
                "BCD-2",
                &codes::E_INVALIDARG,
                Some(model.name().to_owned()),
                None,
                format!(
                    "writer `{}` has more than one entry in the BCD",
                    model.name()
                ),
            ));
            continue;
        }
        taking_part[w] = true;
        let mut records = HashSet::new();
        for record in entry.components() {
            let full = record.full_path();
            let in_writer = |message: String, rule, code| {
                SelectionProblem::new(
                    rule,
                    code,
                    Some(model.name().to_owned()),
                    Some(full.clone()),
                    message,
                )
            };
            if !records.insert((record.logical_path(), record.name())) {
                problems.push(in_writer(
                    format!(
                        "component `{full}` of writer `{}` is listed twice in the BCD",
                        model.name()
                    ),
                    "BCD-3",
                    &codes::E_INVALIDARG,
                ));
                continue;
            }
            let Some(c) = model.find(record.logical_path(), record.name()) else {
                problems.push(in_writer(
                    format!("writer `{}` has no component `{full}`", model.name()),
                    "BK-DISC-3",
                    &codes::VSS_E_OBJECT_NOT_FOUND,
                ));
                continue;
            };
            let declared = model.comps[c].component_type;
            if declared != record.component_type() {
                problems.push(in_writer(
                    format!(
                        "component `{full}` of writer `{}` is recorded as {} but the writer declares it as {declared}",
                        model.name(),
                        record.component_type()
                    ),
                    "BK-DISC-3",
                    &codes::E_INVALIDARG,
                ));
            }
            if !model.explicit_capable(c) {
                let mut problem = non_selectable_subcomponent_problem(model, c);
                problem.message = format!(
                    "{}; implicitly included components are never listed in the BCD (BCD-3)",
                    problem.message
                );
                problems.push(problem);
                continue;
            }
            explicit[w][c] = true;
        }
    }

    let mut included: Vec<Vec<bool>> = models.iter().map(|m| vec![false; m.comps.len()]).collect();
    for (w, model) in models.iter().enumerate() {
        for c in (0..model.comps.len()).filter(|&c| explicit[w][c]) {
            included[w][c] = true;
            if model.selectable(c) {
                for &member in &model.members[c] {
                    included[w][member] = true;
                }
            }
            if let Some(&a) = model.ancestors[c]
                .iter()
                .find(|&&a| model.selectable(a) && explicit[w][a])
            {
                let (full, set) = (model.full_path(c), model.full_path(a));
                problems.push(SelectionProblem::new(
                    "SEL-4",
                    &codes::E_INVALIDARG,
                    Some(model.name().to_owned()),
                    Some(full.clone()),
                    format!(
                        "component `{full}` of writer `{}` is listed although it is included implicitly with `{set}`, which is listed too; remove its record (BCD-3)",
                        model.name()
                    ),
                ));
            }
        }
        if taking_part[w] {
            for c in (0..model.comps.len()).filter(|&c| model.required(c) && !explicit[w][c]) {
                let full = model.full_path(c);
                problems.push(SelectionProblem::new(
                    "SEL-2",
                    &codes::E_INVALIDARG,
                    Some(model.name().to_owned()),
                    Some(full.clone()),
                    format!(
                        "writer `{}` takes part in the backup, but its required component `{full}` is not in the BCD; a non-selectable component with no selectable ancestor must be added whenever the writer takes part",
                        model.name()
                    ),
                ));
            }
        }
    }

    for (w, model) in models.iter().enumerate() {
        for c in (0..model.comps.len()).filter(|&c| included[w][c]) {
            for dependency in model.comps[c]
                .dependencies
                .iter()
                .filter(|d| !d.is_remote())
            {
                let targets = dependency_targets(&models, w, dependency);
                if targets.is_empty() {
                    problems.push(missing_target_problem(&models, w, c, dependency));
                }
                for (t, tc) in targets.into_iter().filter(|&(t, tc)| !included[t][tc]) {
                    problems.push(SelectionProblem::new(
                        "DEP-1",
                        &codes::E_INVALIDARG,
                        Some(model.name().to_owned()),
                        Some(model.full_path(c)),
                        format!(
                            "component `{}` of writer `{}` is in the backup, but its dependency target `{}` of writer `{}` is not",
                            model.full_path(c),
                            model.name(),
                            models[t].full_path(tc),
                            models[t].name()
                        ),
                    ));
                }
            }
        }
    }

    if state.bootable_system_state {
        for (w, model) in models
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_system_state_writer())
        {
            for c in (0..model.comps.len()).filter(|&c| {
                model.in_system_state(c) && model.explicit_capable(c) && !included[w][c]
            }) {
                let full = model.full_path(c);
                problems.push(SelectionProblem::new(
                    "SEL-8",
                    &codes::E_INVALIDARG,
                    Some(model.name().to_owned()),
                    Some(full.clone()),
                    format!(
                        "the backup includes bootable system state, but component `{full}` of system writer `{}` is not included",
                        model.name()
                    ),
                ));
            }
        }
    }
    SelectionError::check(problems)
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// What a requester asks to restore from a stored backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The components to restore; empty means every component that was backed up.
    pub selected: Vec<ComponentSelector>,
}

/// Why a component is restored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreReason {
    /// It has a BCD record and is selected for restore (SEL-R-1).
    Selected,
    /// It is a restore subcomponent of this explicitly included component (SEL-R-2).
    Subcomponent {
        /// The full path of the explicitly included component that holds it.
        of: String,
    },
    /// It is in the set of this selected component or restore subcomponent (SEL-R-3).
    InSetOf {
        /// The full path of the set-defining component.
        set: String,
    },
}

/// An explicitly included component that is selected for restore, with its restore subcomponents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreComponent {
    /// The logical path.
    pub logical_path: String,
    /// The name.
    pub name: String,
    /// Database or file group.
    pub component_type: ComponentType,
    /// The restore subcomponents; when there are any, only they are restored, not the rest of the
    /// set (SEL-R-2).
    pub subcomponents: Vec<RestoreSubcomponent>,
}

impl RestoreComponent {
    /// The full path (LP-2).
    pub fn full_path(&self) -> String {
        logical_path::full_path(&self.logical_path, &self.name)
    }
}

/// A component whose files will actually be restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMember {
    /// The logical path.
    pub logical_path: String,
    /// The name.
    pub name: String,
    /// Database or file group.
    pub component_type: ComponentType,
    /// Why it is restored.
    pub reason: RestoreReason,
    /// Its file sets from the stored WMD, the only source of file specifications (RST-INIT-2);
    /// alternate paths are ignored at restore (RST-FILE-2).
    pub files: Vec<FileSet>,
}

impl RestoreMember {
    /// The full path (LP-2).
    pub fn full_path(&self) -> String {
        logical_path::full_path(&self.logical_path, &self.name)
    }
}

/// One writer whose data is restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreWriter {
    /// The writer name, from the stored WMD.
    pub writer_name: String,
    /// The class id.
    pub class_id: WriterClassId,
    /// The instance id recorded in the BCD at backup time; it keys the BCD entry.
    pub instance_id: WriterInstanceId,
    /// The persistent instance name, if any.
    pub instance_name: Option<String>,
    /// Whether the writer takes part: false when its restore condition is NEVER, and then its data
    /// is restored without selecting its components (RSV-1).
    pub involve_writer: bool,
    /// Things the requester should know.
    pub notes: Vec<String>,
    /// The components selected for restore, in WMD order.
    pub selected: Vec<RestoreComponent>,
    /// Every component whose files are restored, in WMD order.
    pub members: Vec<RestoreMember>,
}

impl RestoreWriter {
    /// The selected component with this logical path and name.
    pub fn selected_component(&self, logical_path: &str, name: &str) -> Option<&RestoreComponent> {
        self.selected
            .iter()
            .find(|c| c.logical_path == logical_path && c.name == name)
    }

    /// The restored component with this logical path and name.
    pub fn member(&self, logical_path: &str, name: &str) -> Option<&RestoreMember> {
        self.members
            .iter()
            .find(|c| c.logical_path == logical_path && c.name == name)
    }
}

/// The outcome of [`resolve_restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSelection {
    /// The writers with something to restore, in BCD order.
    pub writers: Vec<RestoreWriter>,
}

impl RestoreSelection {
    /// The writer whose BCD entry has this (backup-time) instance id.
    pub fn writer(&self, instance_id: WriterInstanceId) -> Option<&RestoreWriter> {
        self.writers.iter().find(|w| w.instance_id == instance_id)
    }

    /// The first writer with this name.
    pub fn writer_named(&self, name: &str) -> Option<&RestoreWriter> {
        self.writers.iter().find(|w| w.writer_name == name)
    }

    /// Records the selection in the stored BCD during restore selection (SEL-R-1, SEL-R-2, SEL-R-5):
    /// the selected components of writers that take part get selected_for_restore and their restore
    /// subcomponents; every other record is cleared, so the BCD says exactly what this selection
    /// says. Nothing changes unless everything succeeds.
    pub fn apply_to(&self, bcd: &mut BackupComponents) -> Result<(), BcdError> {
        let mut updated = bcd.clone();
        let records: Vec<(WriterInstanceId, String, String)> = updated
            .writers()
            .iter()
            .flat_map(|w| {
                w.components().iter().map(move |c| {
                    (
                        w.instance_id,
                        c.logical_path().to_owned(),
                        c.name().to_owned(),
                    )
                })
            })
            .collect();
        let (party, phase) = (Party::Requester, Phase::RestoreSelection);
        for (instance, path, name) in &records {
            updated
                .edit(party, phase, *instance, path, name)?
                .set_selected_for_restore(false)?
                .set_restore_subcomponents(Vec::new())?;
        }
        for writer in self.writers.iter().filter(|w| w.involve_writer) {
            for component in &writer.selected {
                updated
                    .edit(
                        party,
                        phase,
                        writer.instance_id,
                        &component.logical_path,
                        &component.name,
                    )?
                    .set_selected_for_restore(true)?
                    .set_restore_subcomponents(component.subcomponents.clone())?;
            }
        }
        *bcd = updated;
        Ok(())
    }
}

/// The stored WMD of a BCD entry: same class id and persistent instance name (RST-INIT-4); when
/// several stored WMDs share both, the instance id recorded with the backup decides.
fn match_stored_writer(entry: &WriterComponents, models: &[Model<'_>]) -> Option<usize> {
    let same: Vec<usize> = models
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m.wmd.identity.class_id == entry.class_id
                && m.wmd.identity.instance_name == entry.instance_name
        })
        .map(|(i, _)| i)
        .collect();
    match same.as_slice() {
        [only] => Some(*only),
        several => several
            .iter()
            .copied()
            .find(|&i| models[i].wmd.identity.instance_id == entry.instance_id),
    }
}

/// What one selected record restores.
#[derive(Default)]
struct Pick {
    whole: bool,
    subcomponents: Vec<usize>,
}

/// Works out a restore from the stored BCD, the stored WMDs and the requester's choice (spec §8, §4.2).
///
/// Stored WMDs are matched to BCD writers by class id and persistent instance name (RST-INIT-4). A
/// component with a BCD record is selected whole (SEL-R-1). A component included implicitly at
/// backup can be chosen alone only if it is selectable for restore; it then becomes a restore
/// subcomponent of its nearest explicitly included ancestor, and only it and its own set are
/// restored (SEL-R-2). Otherwise the error names what to select instead (SEL-R-3). A component that
/// is not in the backup is VSS_E_OBJECT_NOT_FOUND.
///
/// With an empty request every component with a record is restored, except those whose backup was
/// recorded as failed (BK-COPY-4).
pub fn resolve_restore(
    bcd: &BackupComponents,
    stored: &[WriterMetadata],
    request: &RestoreRequest,
) -> Result<RestoreSelection, SelectionError> {
    let models: Vec<Model<'_>> = stored.iter().map(Model::new).collect();
    let entries = bcd.writers();
    let matched: Vec<Option<usize>> = entries
        .iter()
        .map(|e| match_stored_writer(e, &models))
        .collect();
    let keys: Vec<WriterKey<'_>> = entries
        .iter()
        .zip(&matched)
        .map(|(e, m)| WriterKey {
            class_id: e.class_id,
            instance_id: e.instance_id,
            writer_name: m.map(|m| models[m].name()),
            instance_name: e.instance_name.as_deref(),
        })
        .collect();
    // Per entry, which model components have a record: the components explicitly included at backup.
    let recorded: Vec<Vec<bool>> = entries
        .iter()
        .zip(&matched)
        .map(|(e, m)| match m {
            Some(m) => {
                let model = &models[*m];
                let mut flags = vec![false; model.comps.len()];
                for record in e.components() {
                    if let Some(c) = model.find(record.logical_path(), record.name()) {
                        flags[c] = true;
                    }
                }
                flags
            }
            None => Vec::new(),
        })
        .collect();

    let mut problems = Vec::new();
    let mut picks: Vec<BTreeMap<usize, Pick>> = entries.iter().map(|_| BTreeMap::new()).collect();
    let mut notes: Vec<Vec<String>> = vec![Vec::new(); entries.len()];
    let no_stored_wmd = |e: usize, component: Option<String>| {
        SelectionProblem::new(
            "RST-INIT-4",
            &codes::VSS_E_OBJECT_NOT_FOUND,
            Some(keys[e].label()),
            component,
            format!(
                "no stored writer metadata matches writer {} (class id and instance name); without it the files of its components are unknown",
                keys[e].label()
            ),
        )
    };
    let failed_note = |full: &str| {
        format!(
            "the backup of component `{full}` was recorded as failed (BK-COPY-4); its data may be incomplete"
        )
    };

    if request.selected.is_empty() {
        for (e, entry) in entries.iter().enumerate() {
            if entry.components().is_empty() {
                continue;
            }
            let Some(m) = matched[e] else {
                problems.push(no_stored_wmd(e, None));
                continue;
            };
            let model = &models[m];
            for record in entry.components() {
                let full = record.full_path();
                let Some(c) = model.find(record.logical_path(), record.name()) else {
                    problems.push(unknown_record_problem(model, &full));
                    continue;
                };
                if record.backup_succeeded() == Some(false) {
                    notes[e].push(format!("{}, so it is not restored", failed_note(&full)));
                    continue;
                }
                picks[e].entry(c).or_default().whole = true;
            }
        }
    }

    for selector in &request.selected {
        let full = selector.full_path();
        let (path, name) = (selector.logical_path.as_str(), selector.name.as_str());
        let has = |e: usize| {
            matched[e].is_some_and(|m| models[m].find(path, name).is_some())
                || entries[e].component(path, name).is_some()
        };
        let e = match pick_writer(selector, &keys, has, "SEL-R-1", "the writers in the backup") {
            Ok(e) => e,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let Some(m) = matched[e] else {
            problems.push(no_stored_wmd(e, Some(full)));
            continue;
        };
        let model = &models[m];
        let Some(c) = model.find(path, name) else {
            problems.push(unknown_record_problem(model, &full));
            continue;
        };
        if let Some(record) = entries[e].component(path, name) {
            // SEL-R-1: explicitly included at backup, so selectable on its own whatever its
            // selectability for restore.
            if record.backup_succeeded() == Some(false) {
                notes[e].push(failed_note(&full));
            }
            picks[e].entry(c).or_default().whole = true;
            continue;
        }
        let owner = model.ancestors[c]
            .iter()
            .copied()
            .find(|&a| model.selectable(a) && recorded[e][a]);
        let Some(owner) = owner else {
            problems.push(SelectionProblem::new(
                "SEL-R-1",
                &codes::VSS_E_OBJECT_NOT_FOUND,
                Some(model.name().to_owned()),
                Some(full.clone()),
                format!(
                    "component `{full}` of writer `{}` was not included in this backup, so it cannot be restored from it",
                    model.name()
                ),
            ));
            continue;
        };
        if model.comps[c].selectable_for_restore {
            picks[e].entry(owner).or_default().subcomponents.push(c);
        } else {
            // SEL-R-3: point at the nearest set that may be restored on its own.
            let instead = model.ancestors[c]
                .iter()
                .copied()
                .take_while(|&a| a != owner)
                .find(|&a| model.comps[a].selectable_for_restore)
                .unwrap_or(owner);
            problems.push(SelectionProblem::new(
                "SEL-R-3",
                &codes::E_INVALIDARG,
                Some(model.name().to_owned()),
                Some(full.clone()),
                format!(
                    "component `{full}` of writer `{}` was included implicitly at backup and is not selectable for restore, so it is restored only with its set; select `{}` instead",
                    model.name(),
                    model.full_path(instead)
                ),
            ));
        }
    }
    SelectionError::check(problems)?;

    let mut writers = Vec::new();
    for (e, entry) in entries.iter().enumerate() {
        let (Some(m), false) = (matched[e], picks[e].is_empty()) else {
            continue;
        };
        let model = &models[m];
        let mut writer_notes = std::mem::take(&mut notes[e]);
        let involve_writer = model.wmd.restore_method.writer_restore != WriterRestore::Never;
        if !involve_writer {
            writer_notes.push(format!(
                "writer `{}` does not take part in restores (NEVER); its data is restored without selecting its components (RSV-1)",
                model.name()
            ));
        }
        let mut selected = Vec::new();
        let mut members: BTreeMap<usize, RestoreReason> = BTreeMap::new();
        for (&c, pick) in &picks[e] {
            let set = model.full_path(c);
            let subcomponents = if pick.whole {
                if !pick.subcomponents.is_empty() {
                    writer_notes.push(format!(
                        "`{set}` is restored whole, which already restores the subcomponents named with it (SEL-R-2)"
                    ));
                }
                members.entry(c).or_insert(RestoreReason::Selected);
                for &member in model.members_if_set(c) {
                    members
                        .entry(member)
                        .or_insert(RestoreReason::InSetOf { set: set.clone() });
                }
                Vec::new()
            } else {
                // A subcomponent inside another named subcomponent's set is restored with it anyway.
                let named: HashSet<usize> = pick.subcomponents.iter().copied().collect();
                let mut kept: Vec<usize> = Vec::new();
                for &s in &pick.subcomponents {
                    if kept.contains(&s) {
                        continue;
                    }
                    if let Some(&outer) = model.ancestors[s].iter().find(|a| named.contains(a)) {
                        writer_notes.push(format!(
                            "`{}` is restored with `{}`, so it is not named separately (SEL-R-2)",
                            model.full_path(s),
                            model.full_path(outer)
                        ));
                        continue;
                    }
                    kept.push(s);
                }
                kept.sort_unstable();
                for &s in &kept {
                    members
                        .entry(s)
                        .or_insert(RestoreReason::Subcomponent { of: set.clone() });
                    let sub_set = model.full_path(s);
                    for &member in &model.members[s] {
                        members.entry(member).or_insert(RestoreReason::InSetOf {
                            set: sub_set.clone(),
                        });
                    }
                }
                kept.iter()
                    .map(|&s| RestoreSubcomponent {
                        logical_path: model.comps[s].logical_path.clone(),
                        name: model.comps[s].name.clone(),
                        repair: false,
                    })
                    .collect()
            };
            let component = model.comps[c];
            let component_type = entry
                .component(&component.logical_path, &component.name)
                .map_or(component.component_type, ComponentRecord::component_type);
            selected.push(RestoreComponent {
                logical_path: component.logical_path.clone(),
                name: component.name.clone(),
                component_type,
                subcomponents,
            });
        }
        let members = members
            .into_iter()
            .map(|(c, reason)| {
                let component = model.comps[c];
                RestoreMember {
                    logical_path: component.logical_path.clone(),
                    name: component.name.clone(),
                    component_type: component.component_type,
                    reason,
                    files: component
                        .all_files()
                        .map(FileDescriptor::file_set)
                        .collect(),
                }
            })
            .collect();
        writers.push(RestoreWriter {
            writer_name: model.name().to_owned(),
            class_id: entry.class_id,
            instance_id: entry.instance_id,
            instance_name: entry.instance_name.clone(),
            involve_writer,
            notes: writer_notes,
            selected,
            members,
        });
    }
    Ok(RestoreSelection { writers })
}

fn unknown_record_problem(model: &Model<'_>, full: &str) -> SelectionProblem {
    SelectionProblem::new(
        "RST-INIT-2",
        &codes::VSS_E_OBJECT_NOT_FOUND,
        Some(model.name().to_owned()),
        Some(full.to_owned()),
        format!(
            "the stored writer metadata of `{}` has no component `{full}`, so its files are unknown; the stored WMD is the only source of file specifications",
            model.name()
        ),
    )
}
