//! The hook-directory writer (kind = "hooks"): runs a directory of freeze hooks in the
//! `fsfreeze-hook.d` convention of qemu-guest-agent, so hook scripts people already have keep
//! working under shadowcopy.
//!
//! ```toml
//! kind = "hooks"
//! name = "fsfreeze-hooks"
//! [hooks]
//! dir = "/etc/qemu/fsfreeze-hook.d"
//! timeout_ms = 30000            # per hook; default 60000
//! [[hooks.components]]          # as in the script writer
//! name = "data"
//! files = [{ path = "/srv/data", recursive = true }]
//! ```
//!
//! The convention: every executable regular file of the directory is a hook and is called with one
//! argument. On Freeze each hook runs with `freeze`, in lexical order of the file names; on Thaw,
//! and on Abort after a freeze, each hook that was frozen runs with `thaw`, in reverse order (the
//! last application frozen is the first to resume, as with nested locks). Files the package
//! managers and editors leave behind (`*.dpkg-old`, `*.rpmnew`, `*~`, `*.sample`, hidden files,
//! ...) are skipped, as qemu-ga's `fsfreeze-hook` skips them. Hooks also get the `SHADOWCOPY_*`
//! variables of the script writer.
//!
//! Unlike qemu-ga, whose `fsfreeze-hook` logs a failing hook and carries on, a failing hook
//! (non-zero exit or timeout, then its process group is killed) fails the Freeze: the writer is
//! then FAILED_AT_FREEZE with the hook's name and the tail of its stderr (BK-SNAP-7), and the hooks
//! already frozen are thawed at once, in reverse order, so no application stays stopped. A failing
//! thaw hook does not stop the other hooks from thawing; the Thaw then fails naming every hook that
//! failed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use shadowcopy_metadata::WriterMetadata;
use shadowcopy_metadata::bcd::WriterComponents;
use shadowcopy_metadata::enums::{RestoreMethod, WriterRestore};
use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterFailure};

use crate::declaration::{Declaration, DeclarationError};
use crate::marker::{FreezeMarker, run_blocking};
use crate::script::{
    ComponentSettings, DEFAULT_COMMAND_TIMEOUT, RestoreSettings, Selections, check_user,
    declared_metadata, event_env, lock, run_program,
};

/// The file-name endings qemu-ga's `fsfreeze-hook` ignores, plus editor leftovers.
const IGNORED_SUFFIXES: [&str; 11] = [
    ".dpkg-dist",
    ".dpkg-old",
    ".dpkg-new",
    ".dpkg-tmp",
    ".dpkg-bak",
    ".rpmsave",
    ".rpmorig",
    ".rpmnew",
    ".sample",
    ".swp",
    "~",
];

/// The `[hooks]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HooksSettings {
    /// The hook directory.
    pub dir: PathBuf,
    /// The timeout of each hook call, in milliseconds; 60000 by default.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The user the hooks run as; the writer's own user by default.
    #[serde(default)]
    pub user: Option<String>,
    /// The components, as in the script writer.
    #[serde(default)]
    pub components: Vec<ComponentSettings>,
    /// The restore method, as in the script writer.
    #[serde(default)]
    pub restore_method: Option<RestoreMethod>,
    /// The service of a stop/start restore method.
    #[serde(default)]
    pub service: Option<String>,
    /// The procedure of a CUSTOM restore method.
    #[serde(default)]
    pub user_procedure: Option<String>,
    /// Whether the writer takes part in restores; it has nothing to do there, but the default
    /// ALWAYS keeps requesters from replacing files behind a running application (RSV-2).
    #[serde(default)]
    pub writer_restore: Option<WriterRestore>,
    /// Where the freeze marker lives; [`DEFAULT_RUNTIME_DIR`] by default.
    #[serde(default)]
    pub runtime_dir: Option<PathBuf>,
}

/// Where freeze markers live unless `hooks.runtime_dir` says otherwise.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/shadowcopy/hooks-frozen";

/// A writer that runs a `fsfreeze-hook.d` directory.
pub struct HooksWriter {
    /// The declaration's file, for messages.
    file: PathBuf,
    settings: HooksSettings,
    wmd: WriterMetadata,
    freeze_timeout: Duration,
    /// The hooks whose `freeze` succeeded, in the order they ran; thawed from the back.
    frozen: Mutex<Vec<PathBuf>>,
    /// The marker that records the frozen hooks, for a restart after a crash.
    marker: FreezeMarker,
    selections: Selections,
}

/// Whether a directory entry named `name` is a hook by name (qemu-ga's ignore list).
fn is_hook_name(name: &str) -> bool {
    !name.starts_with('.') && !IGNORED_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
}

/// The hooks of `dir` in lexical order: executable regular files (following symbolic links, as
/// `[ -x f ] && [ -f f ]` does) whose names are not ignored.
pub fn list_hooks(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let mut hooks = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !is_hook_name(name) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling link is not a hook
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            hooks.push(path);
        }
    }
    // Byte order of the names, which is the shell's `*` order in the C locale.
    hooks.sort();
    Ok(hooks)
}

impl HooksWriter {
    /// The writer of a `kind = "hooks"` declaration.
    pub fn from_declaration(d: &Declaration) -> Result<Self, DeclarationError> {
        let settings: HooksSettings = d.settings()?;
        if !settings.dir.is_absolute() {
            return Err(DeclarationError::invalid(
                &d.file,
                "hooks.dir",
                format!(
                    "{} is not an absolute path; give the hook directory's full path",
                    settings.dir.display()
                ),
            ));
        }
        if settings.timeout_ms == Some(0) {
            return Err(DeclarationError::invalid(
                &d.file,
                "hooks.timeout_ms",
                "a timeout of 0 ms would fail every hook; give a positive number",
            ));
        }
        if let Some(user) = &settings.user {
            check_user(&d.file, "hooks.user", user)?;
        }
        // The directory is read at each Freeze, not here: hooks may be installed later, and a
        // missing directory then fails the Freeze with its name (never a silent no-op).
        let restore = RestoreSettings {
            method: settings.restore_method,
            service: settings.service.clone(),
            user_procedure: settings.user_procedure.clone(),
            writer_restore: settings.writer_restore,
        };
        let wmd = declared_metadata(d, &settings.components, &restore)?;
        let marker = FreezeMarker::new(
            settings
                .runtime_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_RUNTIME_DIR)),
            &d.name,
            "hooks.runtime_dir",
        );
        let writer = HooksWriter {
            file: d.file.clone(),
            settings,
            wmd,
            freeze_timeout: d.freeze_timeout(),
            frozen: Mutex::new(Vec::new()),
            marker,
            selections: Selections::default(),
        };
        writer.recover_after_crash();
        Ok(writer)
    }

    /// The marker file that records the hooks frozen now.
    pub fn marker(&self) -> &Path {
        self.marker.path()
    }

    /// Thaws, in reverse order, the hooks that an earlier process of this writer froze and left
    /// frozen when it died (its marker names them), before this writer registers.
    fn recover_after_crash(&self) {
        let Some(hooks) = self.marker.left_by_dead_process() else {
            return;
        };
        let name = &self.wmd.identity.writer_name;
        tracing::warn!(writer = %name, marker = %self.marker.path().display(), hooks = hooks.len(), "an earlier run of this writer died with hooks frozen; thawing them");
        let env = [
            ("SHADOWCOPY_EVENT", "abort"),
            ("SHADOWCOPY_WRITER", name.as_str()),
            ("SHADOWCOPY_ABORT_CAUSE", "WriterRestarted"),
        ];
        let mut still_frozen = Vec::new();
        for hook in hooks.iter().rev() {
            if let Err(why) = run_blocking(
                Path::new(hook),
                &["thaw"],
                &env,
                self.settings.user.as_deref(),
                self.timeout(),
            ) {
                tracing::error!(writer = %name, hook = %hook, "thawing a hook a crashed run left frozen failed: {why}; thaw it by hand");
                still_frozen.push(hook.clone());
            }
        }
        if still_frozen.is_empty() {
            tracing::warn!(writer = %name, "the hooks left frozen by a crashed run were thawed");
            self.marker.clear();
        } else {
            still_frozen.reverse();
            self.marker.mark(&still_frozen);
        }
    }

    /// Records in the marker the hooks frozen now and those whose thaw failed, in freeze order,
    /// or removes it when there are none: what a restart after a crash must thaw.
    fn record_frozen_with(&self, not_thawed: &[String]) {
        let mut frozen: Vec<String> = lock(&self.frozen)
            .iter()
            .map(|hook| hook.display().to_string())
            .collect();
        frozen.extend(not_thawed.iter().rev().cloned());
        if frozen.is_empty() {
            self.marker.clear();
        } else {
            self.marker.mark(&frozen);
        }
    }

    /// The settings, as declared.
    pub fn settings(&self) -> &HooksSettings {
        &self.settings
    }

    fn timeout(&self) -> Duration {
        self.settings
            .timeout_ms
            .map_or(DEFAULT_COMMAND_TIMEOUT, Duration::from_millis)
    }

    fn hook_name(hook: &Path) -> String {
        hook.file_name().map_or_else(
            || hook.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Runs `hook <argument>`.
    async fn call(
        &self,
        hook: &Path,
        argument: &str,
        env: &[(String, String)],
        timeout: Duration,
    ) -> HandlerResult {
        let label = format!(
            "{}:{}:{argument}",
            self.wmd.identity.writer_name,
            Self::hook_name(hook)
        );
        let what = format!(
            "hook {} {argument} (writer {:?}, {})",
            hook.display(),
            self.wmd.identity.writer_name,
            self.file.display()
        );
        run_program(
            &label,
            hook,
            &[argument],
            env,
            self.settings.user.as_deref(),
            timeout,
        )
        .await
        .map(drop)
        .map_err(|error| error.failure(&what, argument))
    }

    /// Thaws every frozen hook in reverse order; every hook is tried, and the failures are
    /// reported together.
    async fn thaw_all(&self, ctx: &EventContext, event: &str) -> HandlerResult {
        let env = event_env(event, ctx, &self.selections.of(ctx));
        let mut failures = Vec::new();
        let mut not_thawed = Vec::new();
        loop {
            // Pop one at a time, so that a thaw cancelled half-way leaves the rest for Abort.
            let Some(hook) = lock(&self.frozen).pop() else {
                break;
            };
            if let Err(failure) = self.call(&hook, "thaw", &env, self.timeout()).await {
                failures.push(failure);
                not_thawed.push(hook.display().to_string());
            } else {
                self.record_frozen_with(&not_thawed);
            }
        }
        self.record_frozen_with(&not_thawed);
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            _ => {
                let message = failures
                    .iter()
                    .map(WriterFailure::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                Err(WriterFailure::retryable(format!(
                    "{} thaw hooks failed: {message}",
                    failures.len()
                )))
            }
        }
    }
}

impl Writer for HooksWriter {
    fn metadata(&self) -> WriterMetadata {
        self.wmd.clone()
    }

    async fn on_prepare_backup(
        &self,
        ctx: &EventContext,
        components: &mut WriterComponents,
    ) -> HandlerResult {
        self.selections.remember(ctx, components);
        Ok(())
    }

    async fn on_freeze(&self, ctx: &EventContext) -> HandlerResult {
        let dir = self.settings.dir.clone();
        let hooks = tokio::task::spawn_blocking(move || list_hooks(&dir))
            .await
            .map_err(|error| WriterFailure::retryable(format!("listing hooks failed: {error}")))?
            .map_err(|error| {
                WriterFailure::non_retryable(format!(
                    "cannot read the hook directory {} of writer {:?} ({}): {error}; create it or fix hooks.dir",
                    self.settings.dir.display(),
                    self.wmd.identity.writer_name,
                    self.file.display()
                ))
            })?;
        let env = event_env("freeze", ctx, &self.selections.of(ctx));
        // A hook that outlives the freeze window is useless (BK-SNAP-5).
        let timeout = self.timeout().min(self.freeze_timeout);
        for hook in hooks {
            // Recorded before the hook runs: a crash while it runs may leave it frozen.
            lock(&self.frozen).push(hook.clone());
            self.record_frozen_with(&[]);
            match self.call(&hook, "freeze", &env, timeout).await {
                Ok(()) => {}
                Err(failure) => {
                    // The failed hook did not freeze: only the ones before it are thawed.
                    lock(&self.frozen).pop();
                    tracing::error!(hook = %hook.display(), "freeze hook failed: {failure}; thawing the hooks already frozen");
                    // Thaw what is frozen now, not only later in Abort: the failing hook's
                    // message is what the requester must see, and a thaw failure is logged.
                    if let Err(thaw) = self.thaw_all(ctx, "abort").await {
                        tracing::error!("thawing after the failed freeze: {thaw}");
                    }
                    return Err(failure);
                }
            }
        }
        Ok(())
    }

    async fn on_thaw(&self, ctx: &EventContext) -> HandlerResult {
        self.thaw_all(ctx, "thaw").await
    }

    async fn on_abort(&self, ctx: &EventContext) -> HandlerResult {
        // Idempotent: nothing is frozen after the first successful run (BK-ABORT-3).
        self.thaw_all(ctx, "abort").await
    }

    async fn on_backup_shutdown(&self, ctx: &EventContext) -> HandlerResult {
        self.selections.forget(ctx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_listing_follows_the_qemu_ga_convention() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("shadowcopy-hooks-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for (name, mode) in [
            ("20-b", 0o755),
            ("10-a", 0o700),
            ("30-not-exec", 0o644),
            ("40-c.dpkg-old", 0o755),
            ("50-d~", 0o755),
            (".hidden", 0o755),
            ("60-e.sample", 0o755),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let hooks = list_hooks(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = hooks
            .unwrap()
            .iter()
            .map(|h| HooksWriter::hook_name(h))
            .collect();
        assert_eq!(names, ["10-a", "20-b"]);
    }

    #[test]
    fn relative_dir_and_unknown_key_are_refused() {
        let file = Path::new("/etc/shadowcopy/writers.d/h.toml");
        let d = Declaration::parse(
            file,
            "kind = \"hooks\"\nname = \"h\"\n[hooks]\ndir = \"hooks.d\"\n",
        )
        .unwrap();
        let error = HooksWriter::from_declaration(&d).err().unwrap().to_string();
        assert!(
            error.contains("hooks.dir") && error.contains("h.toml"),
            "{error}"
        );
        let d = Declaration::parse(
            file,
            "kind = \"hooks\"\nname = \"h\"\n[hooks]\ndir = \"/x\"\ntimout_ms = 5\n",
        )
        .unwrap();
        let error = HooksWriter::from_declaration(&d).err().unwrap().to_string();
        assert!(error.contains("hooks.timout_ms"), "{error}");
        let d = Declaration::parse(file, "kind = \"hooks\"\nname = \"h\"\n").unwrap();
        let error = HooksWriter::from_declaration(&d).err().unwrap().to_string();
        assert!(error.contains("hooks.dir"), "{error}");
    }
}
