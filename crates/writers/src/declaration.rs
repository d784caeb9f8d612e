//! Writer declarations: the TOML file that declares one built-in writer (normally
//! `/etc/shadowcopy/writers.d/<file>.toml`), its parsing and validation, and [`run`], which runs
//! the declared writer through the writer SDK, hosted in `shadowcopyd` or standalone.
//!
//! The format (docs/writers.md has the full description):
//!
//! ```toml
//! kind = "script"              # script | hooks | cgroup | postgresql | mariadb | sqlite
//! name = "webapp"              # the writer name (WMD identity)
//! class_id = "<uuid>"          # optional; default: UUID v5 of kind + name, stable across restarts
//! instance_name = "..."        # optional (ROLE-7)
//! freeze_timeout_ms = 60000    # optional (ROLE-8, BK-SNAP-5)
//!
//! [script]                     # the kind's own settings table; its keys belong to the kind
//! freeze = "systemctl kill -s STOP webapp"
//! ```
//!
//! A key that nobody knows is refused with the file and the key, at the top level here and in the
//! kind's table through `#[serde(deny_unknown_fields)]` on the kind's settings type: a mistyped
//! `frezee = ...` that silently did nothing would leave an application unquiesced in every backup.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shadowcopy_metadata::WriterClassId;
use shadowcopy_writer_sdk::{DEFAULT_FREEZE_TIMEOUT, WriterOptions};
use uuid::Uuid;

/// The namespace of the UUID v5 class ids of declared writers, chosen once for shadowcopy.
///
/// A declaration without `class_id` gets `uuid_v5(WRITER_CLASS_NAMESPACE, "<kind>:<name>")`, so a
/// writer keeps its class id across restarts and hosts (ROLE-7: the class id names the writer
/// class, and a BCD written today must still match it at restore time).
pub const WRITER_CLASS_NAMESPACE: Uuid = Uuid::from_u128(0x6a1d_3c52_9f0e_4b7a_8c21_5e44_d0b3_a917);

/// The directory `shadowcopyd` hosts declarations from when its configuration names none.
pub const DEFAULT_WRITERS_DIR: &str = "/etc/shadowcopy/writers.d";

/// The top-level keys every declaration may have, besides the kind's own table.
const COMMON_KEYS: [&str; 5] = [
    "kind",
    "name",
    "class_id",
    "instance_name",
    "freeze_timeout_ms",
];

/// The kind of a declared writer: which module implements it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Runs one shell command per event (`crate::script`).
    Script,
    /// Runs a `fsfreeze-hook.d` style directory of hooks (`crate::hooks`).
    Hooks,
    /// Freezes a cgroup for the freeze window.
    Cgroup,
    /// A PostgreSQL cluster.
    Postgresql,
    /// A MariaDB server.
    Mariadb,
    /// SQLite database files.
    Sqlite,
}

impl Kind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Kind; 6] = [
        Kind::Script,
        Kind::Hooks,
        Kind::Cgroup,
        Kind::Postgresql,
        Kind::Mariadb,
        Kind::Sqlite,
    ];

    /// The name used for `kind = "..."` and for the kind's settings table.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Script => "script",
            Kind::Hooks => "hooks",
            Kind::Cgroup => "cgroup",
            Kind::Postgresql => "postgresql",
            Kind::Mariadb => "mariadb",
            Kind::Sqlite => "sqlite",
        }
    }

    /// The kind named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a declaration was refused. Every variant names the file, and the key where there is one,
/// so that the log line of a skipped declaration says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DeclarationError {
    /// The file or directory could not be read.
    #[error("cannot read writer declaration {}: {source}", file.display())]
    Read {
        /// The file or directory.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("writer declaration {} is not valid TOML: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A required key is missing.
    #[error("writer declaration {}: missing key `{key}`; add it (see docs/writers.md)", file.display())]
    Missing {
        /// The file.
        file: PathBuf,
        /// The missing key.
        key: String,
    },
    /// A key nobody knows.
    #[error("writer declaration {}: unknown key `{key}`; {hint}", file.display())]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The key, dotted for a key inside a table (`script.frezee`).
        key: String,
        /// What is allowed there.
        hint: String,
    },
    /// A key has a value of the wrong type or out of range.
    #[error("writer declaration {}: key `{key}`: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key, dotted for a key inside a table.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

impl DeclarationError {
    /// The declaration file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            DeclarationError::Read { file, .. }
            | DeclarationError::Syntax { file, .. }
            | DeclarationError::Missing { file, .. }
            | DeclarationError::UnknownKey { file, .. }
            | DeclarationError::Invalid { file, .. } => file,
        }
    }

    /// A value error for `key` of the declaration in `file`; for the kinds' own checks.
    pub fn invalid(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        DeclarationError::Invalid {
            file: file.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// One writer declared by a TOML file (normally `/etc/shadowcopy/writers.d/<file>.toml`):
///
/// ```text
/// kind = "script" | "hooks" | "cgroup" | "postgresql" | "mariadb" | "sqlite"
/// name = "..."                 # the writer name
/// class_id = "<uuid>"          # optional; default: UUID v5 of kind+name, stable across restarts
/// instance_name = "..."        # optional
/// freeze_timeout_ms = 60000    # optional (ROLE-8)
/// [<kind>]                     # the kind's own settings table, e.g. [postgresql]
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    /// The file it was read from (for messages; `parse` takes it as given).
    pub file: PathBuf,
    /// Which writer implements it.
    pub kind: Kind,
    /// The writer name (WMD identity).
    pub name: String,
    /// The writer class id: `class_id` or the UUID v5 of kind and name.
    pub class_id: WriterClassId,
    /// The persistent instance name (ROLE-7), if declared.
    pub instance_name: Option<String>,
    /// The freeze timeout in milliseconds (ROLE-8), if declared; otherwise the SDK's 60 s.
    pub freeze_timeout_ms: Option<u64>,
    /// The kind's own table (`[script]`, `[postgresql]`, ...); empty when the file has none.
    pub settings: toml::Table,
}

impl Declaration {
    /// Parses the text of the declaration `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Declaration, DeclarationError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|error: toml::de::Error| DeclarationError::Syntax {
                    file: file.to_path_buf(),
                    message: error.to_string().trim_end().to_owned(),
                })?;
        let kind_names = Kind::ALL.map(Kind::as_str).join(", ");
        let kind_value = table
            .remove("kind")
            .ok_or_else(|| DeclarationError::Missing {
                file: file.to_path_buf(),
                key: "kind".into(),
            })?;
        let kind_name = string_value(file, "kind", kind_value)?;
        let kind = Kind::from_name(&kind_name).ok_or_else(|| {
            DeclarationError::invalid(
                file,
                "kind",
                format!("unknown writer kind {kind_name:?}; use one of {kind_names}"),
            )
        })?;
        let name = match table.remove("name") {
            Some(value) => string_value(file, "name", value)?,
            None => {
                return Err(DeclarationError::Missing {
                    file: file.to_path_buf(),
                    key: "name".into(),
                });
            }
        };
        if name.trim().is_empty() {
            return Err(DeclarationError::invalid(
                file,
                "name",
                "the writer name is empty; give the writer a name",
            ));
        }
        let class_id = match table.remove("class_id") {
            Some(value) => {
                let text = string_value(file, "class_id", value)?;
                text.parse::<WriterClassId>().map_err(|error| {
                    DeclarationError::invalid(
                        file,
                        "class_id",
                        format!("{text:?} is not a UUID ({error}); remove the key to get a stable default"),
                    )
                })?
            }
            None => default_class_id(kind, &name),
        };
        let instance_name = table
            .remove("instance_name")
            .map(|value| string_value(file, "instance_name", value))
            .transpose()?;
        let freeze_timeout_ms = match table.remove("freeze_timeout_ms") {
            None => None,
            Some(toml::Value::Integer(ms)) if ms > 0 => Some(ms as u64),
            Some(other) => {
                return Err(DeclarationError::invalid(
                    file,
                    "freeze_timeout_ms",
                    format!(
                        "{other} is not a positive number of milliseconds (BK-SNAP-5: default 60000)"
                    ),
                ));
            }
        };
        let settings = match table.remove(kind.as_str()) {
            None => toml::Table::new(),
            Some(toml::Value::Table(settings)) => settings,
            Some(other) => {
                return Err(DeclarationError::invalid(
                    file,
                    kind.as_str(),
                    format!("expected a table [{kind}], found {}", other.type_str()),
                ));
            }
        };
        // Whatever is left is unknown, including another kind's table.
        if let Some(key) = table.keys().next() {
            return Err(DeclarationError::UnknownKey {
                file: file.to_path_buf(),
                key: key.clone(),
                hint: format!(
                    "the top level allows {} and the table [{kind}]",
                    COMMON_KEYS.join(", ")
                ),
            });
        }
        Ok(Declaration {
            file: file.to_path_buf(),
            kind,
            name,
            class_id,
            instance_name,
            freeze_timeout_ms,
            settings,
        })
    }

    /// Reads and parses the declaration `file`.
    pub fn load(file: &Path) -> Result<Declaration, DeclarationError> {
        let text = std::fs::read_to_string(file).map_err(|source| DeclarationError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Declaration::parse(file, &text)
    }

    /// The kind's table deserialized into the kind's own settings type (#[serde(deny_unknown_fields)]); errors name the file and key.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, DeclarationError> {
        // Deserializing from re-serialized text, not from the `Table` value, gives the error a
        // span, and the span names the offending key even where serde's message does not
        // (a wrong type says "invalid type" but not where).
        let text = toml::to_string(&self.settings).map_err(|error| {
            DeclarationError::invalid(&self.file, self.kind.as_str(), error.to_string())
        })?;
        toml::from_str::<T>(&text).map_err(|error| {
            let key = error
                .span()
                .and_then(|span| key_at(&text, span.start))
                .map_or_else(
                    || self.kind.as_str().to_owned(),
                    |key| format!("{}.{key}", self.kind),
                );
            let message = error.message().trim_end().to_owned();
            if message.starts_with("unknown field") {
                DeclarationError::UnknownKey {
                    file: self.file.clone(),
                    key,
                    hint: format!(
                        "{message}; see the [{}] section of docs/writers.md",
                        self.kind
                    ),
                }
            } else if let Some(missing) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                DeclarationError::Missing {
                    file: self.file.clone(),
                    key: format!("{}.{missing}", self.kind),
                }
            } else {
                DeclarationError::Invalid {
                    file: self.file.clone(),
                    key,
                    message,
                }
            }
        })
    }

    /// The freeze timeout this declaration asks for, or the SDK's default of 60 s (ROLE-8).
    pub fn freeze_timeout(&self) -> Duration {
        self.freeze_timeout_ms
            .map_or(DEFAULT_FREEZE_TIMEOUT, Duration::from_millis)
    }

    /// WriterOptions for the SDK with this declaration's identity (class id, instance name, freeze timeout) and the given socket.
    ///
    /// The class id itself travels in the WMD, which each kind builds with
    /// [`Declaration::class_id`]; the options carry the rest of the registration (ROLE-8).
    pub fn options(&self, socket: &Path) -> WriterOptions {
        WriterOptions {
            freeze_timeout: self.freeze_timeout(),
            instance_name: self.instance_name.clone(),
            ..WriterOptions::with_socket(socket)
        }
    }
}

/// The class id of a declaration without `class_id`: UUID v5 of `"<kind>:<name>"` in
/// [`WRITER_CLASS_NAMESPACE`].
pub fn default_class_id(kind: Kind, name: &str) -> WriterClassId {
    WriterClassId(Uuid::new_v5(
        &WRITER_CLASS_NAMESPACE,
        format!("{kind}:{name}").as_bytes(),
    ))
}

/// Every `*.toml` declaration in `dir`, in file name order; a missing directory holds none.
///
/// The first bad file fails the whole load; `shadowcopyd` instead uses [`load_dir_each`] so that
/// one bad file does not keep the other writers from being hosted.
pub fn load_dir(dir: &Path) -> Result<Vec<Declaration>, DeclarationError> {
    load_dir_each(dir)?.into_iter().collect()
}

/// Every `*.toml` file in `dir`, in file name order, each parsed on its own; the outer error is
/// for a directory that exists but cannot be read. A missing directory holds none.
pub fn load_dir_each(
    dir: &Path,
) -> Result<Vec<Result<Declaration, DeclarationError>>, DeclarationError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DeclarationError::Read {
                file: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DeclarationError::Read {
            file: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        // Editor backups and disabled files (`x.toml.disabled`, `.x.toml.swp`) are not
        // declarations: only `*.toml`, and no hidden files.
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if !hidden && path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files.iter().map(|file| Declaration::load(file)).collect())
}

/// Builds the writer of `$declaration`'s kind and evaluates `$body` with it bound to `$writer`:
/// the one place that maps a kind to its module, used by [`run`] and [`metadata`].
macro_rules! with_writer {
    ($declaration:expr, |$writer:ident| $body:expr) => {
        match $declaration.kind {
            Kind::Script => {
                let $writer = crate::script::ScriptWriter::from_declaration($declaration)?;
                $body
            }
            Kind::Hooks => {
                let $writer = crate::hooks::HooksWriter::from_declaration($declaration)?;
                $body
            }
            Kind::Cgroup => {
                let $writer = crate::cgroup::CgroupWriter::from_declaration($declaration)?;
                $body
            }
            Kind::Postgresql => {
                let $writer = crate::postgres::PostgresWriter::from_declaration($declaration)?;
                $body
            }
            Kind::Mariadb => {
                let $writer = crate::mariadb::MariadbWriter::from_declaration($declaration)?;
                $body
            }
            Kind::Sqlite => {
                let $writer = crate::sqlite::SqliteWriter::from_declaration($declaration)?;
                $body
            }
        }
    };
}

/// Runs the declared writer until `shutdown` resolves (dispatch on kind).
///
/// On shutdown the SDK aborts (thaws) a backup in progress before it returns, so a stopped writer
/// never leaves its application frozen. Returns an error when the kind's settings are invalid or
/// when the SDK gives up (the coordinator went away and `reconnect` is off, the registration was
/// refused).
pub async fn run(
    declaration: Declaration,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let options = declaration.options(socket);
    with_writer!(&declaration, |writer| run_writer(writer, options, shutdown)
        .await)
    .map_err(|error| {
        error.context(format!(
            "writer {:?} declared in {}",
            declaration.name,
            declaration.file.display()
        ))
    })
}

/// The WMD a declaration produces, as the writer would register it; for `shadowcopy-writer check`.
///
/// Building the writer runs the kind's checks, so this also validates the declaration. Kinds
/// that inspect a running application (a database's data directory) may need it reachable.
pub fn metadata(declaration: &Declaration) -> anyhow::Result<shadowcopy_metadata::WriterMetadata> {
    use shadowcopy_writer_sdk::Writer as _;
    let mut wmd = with_writer!(declaration, |writer| writer.metadata());
    // The SDK writes the instance name into the identity at registration (ROLE-7); show it.
    if declaration.instance_name.is_some() {
        wmd.identity.instance_name = declaration.instance_name.clone();
    }
    Ok(wmd)
}

/// Runs `writer` with the SDK until `shutdown` resolves, then lets the SDK abort what is in
/// progress and return.
///
/// The SDK's `run_until` needs a `Send + 'static` shutdown future, and `run` takes any future;
/// a oneshot channel bridges the two, so the SDK's orderly shutdown (abort, thaw) still runs
/// instead of the writer being dropped mid-freeze.
async fn run_writer<W: shadowcopy_writer_sdk::Writer>(
    writer: W,
    options: WriterOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = shadowcopy_writer_sdk::run_until(writer, options, async move {
        let _ = stopped.await;
    });
    tokio::pin!(runner);
    tokio::pin!(shutdown);
    let mut stop = Some(stop);
    loop {
        tokio::select! {
            result = &mut runner => return result.map_err(anyhow::Error::from),
            () = &mut shutdown, if stop.is_some() => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
        }
    }
}

/// The key whose text starts at byte `start` of `text`, dotted with its table header
/// (`components.files.filespec` style is not reconstructed: the nearest `[header]` and the key).
fn key_at(text: &str, start: usize) -> Option<String> {
    let line_start = text[..start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?.trim();
    let key = line
        .split('=')
        .next()?
        .trim()
        .trim_matches(|c| c == '[' || c == ']' || c == '"')
        .to_owned();
    if key.is_empty() {
        return None;
    }
    if line.starts_with('[') {
        return Some(key);
    }
    // The nearest header above the key, for a key inside a sub-table.
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').to_owned());
    Some(match header {
        Some(header) => format!("{header}.{key}"),
        None => key,
    })
}

/// A string value of `key`, or an error naming the key and the type found.
fn string_value(file: &Path, key: &str, value: toml::Value) -> Result<String, DeclarationError> {
    match value {
        toml::Value::String(text) => Ok(text),
        other => Err(DeclarationError::invalid(
            file,
            key,
            format!("expected a string, found {}", other.type_str()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        freeze: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    }

    fn file() -> &'static Path {
        Path::new("/etc/shadowcopy/writers.d/web.toml")
    }

    #[test]
    fn every_field_is_read() {
        let text = r#"
            kind = "script"
            name = "web"
            class_id = "{A65FAA63-5EA8-4EBC-9DBD-A0C4DB26912A}"
            instance_name = "blue"
            freeze_timeout_ms = 1500
            [script]
            freeze = "kill -STOP 1"
            timeout_ms = 10
        "#;
        let declaration = Declaration::parse(file(), text).unwrap();
        assert_eq!(declaration.kind, Kind::Script);
        assert_eq!(declaration.name, "web");
        assert_eq!(
            declaration.class_id.to_string(),
            "a65faa63-5ea8-4ebc-9dbd-a0c4db26912a"
        );
        assert_eq!(declaration.instance_name.as_deref(), Some("blue"));
        assert_eq!(declaration.freeze_timeout_ms, Some(1500));
        let settings: Settings = declaration.settings().unwrap();
        assert_eq!(
            settings,
            Settings {
                freeze: "kill -STOP 1".into(),
                timeout_ms: Some(10)
            }
        );
        let options = declaration.options(Path::new("/tmp/s.sock"));
        assert_eq!(options.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(options.freeze_timeout, Duration::from_millis(1500));
        assert_eq!(options.instance_name.as_deref(), Some("blue"));
    }

    #[test]
    fn defaults_apply() {
        let declaration = Declaration::parse(file(), "kind = \"hooks\"\nname = \"h\"\n").unwrap();
        assert_eq!(declaration.kind, Kind::Hooks);
        assert_eq!(declaration.instance_name, None);
        assert_eq!(declaration.freeze_timeout_ms, None);
        assert!(declaration.settings.is_empty());
        let options = declaration.options(Path::new("/s"));
        assert_eq!(options.freeze_timeout, DEFAULT_FREEZE_TIMEOUT);
        assert_eq!(options.instance_name, None);
        assert_eq!(declaration.class_id, default_class_id(Kind::Hooks, "h"));
    }

    #[test]
    fn default_class_id_is_stable_uuid_v5() {
        let a = Declaration::parse(file(), "kind = \"script\"\nname = \"web\"\n").unwrap();
        let b = Declaration::parse(
            Path::new("/other.toml"),
            "name = \"web\"\nkind = \"script\"\n",
        )
        .unwrap();
        assert_eq!(a.class_id, b.class_id);
        assert_eq!(a.class_id.0.get_version_num(), 5);
        assert_eq!(
            a.class_id.0,
            Uuid::new_v5(&WRITER_CLASS_NAMESPACE, b"script:web")
        );
        // Another kind or name is another class.
        let c = Declaration::parse(file(), "kind = \"hooks\"\nname = \"web\"\n").unwrap();
        let d = Declaration::parse(file(), "kind = \"script\"\nname = \"web2\"\n").unwrap();
        assert_ne!(a.class_id, c.class_id);
        assert_ne!(a.class_id, d.class_id);
    }

    #[test]
    fn unknown_top_level_key_is_refused_with_file_and_key() {
        let error =
            Declaration::parse(file(), "kind = \"script\"\nname = \"w\"\nfreez = 1\n").unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, DeclarationError::UnknownKey { ref key, .. } if key == "freez"));
        assert!(
            text.contains("/etc/shadowcopy/writers.d/web.toml"),
            "{text}"
        );
        assert!(text.contains("`freez`"), "{text}");
        // Another kind's table is unknown too.
        let error = Declaration::parse(
            file(),
            "kind = \"script\"\nname = \"w\"\n[hooks]\ndir = \"/x\"\n",
        )
        .unwrap_err();
        assert!(matches!(error, DeclarationError::UnknownKey { ref key, .. } if key == "hooks"));
    }

    #[test]
    fn unknown_settings_key_is_refused_with_file_and_key() {
        let declaration = Declaration::parse(
            file(),
            "kind = \"script\"\nname = \"w\"\n[script]\nfreeze = \"true\"\nfrezee = \"x\"\n",
        )
        .unwrap();
        let error = declaration.settings::<Settings>().unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, DeclarationError::UnknownKey { ref key, .. } if key == "script.frezee"),
            "{error:?}"
        );
        assert!(text.contains("web.toml"), "{text}");
        // A wrong type names the key too.
        let declaration = Declaration::parse(
            file(),
            "kind = \"script\"\nname = \"w\"\n[script]\nfreeze = \"true\"\ntimeout_ms = \"soon\"\n",
        )
        .unwrap();
        let error = declaration.settings::<Settings>().unwrap_err();
        assert!(
            matches!(error, DeclarationError::Invalid { ref key, .. } if key == "script.timeout_ms"),
            "{error:?}"
        );
        // A missing required key is named.
        let declaration = Declaration::parse(file(), "kind = \"script\"\nname = \"w\"\n").unwrap();
        let error = declaration.settings::<Settings>().unwrap_err();
        assert!(
            matches!(error, DeclarationError::Missing { ref key, .. } if key == "script.freeze"),
            "{error:?}"
        );
    }

    #[test]
    fn bad_kind_is_named() {
        let error = Declaration::parse(file(), "kind = \"oracle\"\nname = \"w\"\n").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("\"oracle\""), "{text}");
        assert!(text.contains("script, hooks, cgroup"), "{text}");
        assert!(text.contains("web.toml"), "{text}");
        let error = Declaration::parse(file(), "name = \"w\"\n").unwrap_err();
        assert!(matches!(error, DeclarationError::Missing { ref key, .. } if key == "kind"));
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            (
                "kind = \"script\"\nname = \"w\"\nclass_id = \"nope\"\n",
                "class_id",
            ),
            (
                "kind = \"script\"\nname = \"w\"\nfreeze_timeout_ms = 0\n",
                "freeze_timeout_ms",
            ),
            ("kind = \"script\"\nname = \"\"\n", "name"),
            ("kind = \"script\"\nname = \"w\"\nscript = 3\n", "script"),
            ("kind = 3\nname = \"w\"\n", "kind"),
        ] {
            let error = Declaration::parse(file(), text).unwrap_err();
            assert!(
                matches!(error, DeclarationError::Invalid { key: ref k, .. } if k == key),
                "{text}: {error:?}"
            );
        }
        let error = Declaration::parse(file(), "kind = ").unwrap_err();
        assert!(matches!(error, DeclarationError::Syntax { .. }));
    }

    #[test]
    fn load_dir_reads_toml_files_in_order_and_missing_dir_is_empty() {
        let dir = std::env::temp_dir().join(format!("shadowcopy-decl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.toml"), "kind = \"hooks\"\nname = \"b\"\n").unwrap();
        std::fs::write(dir.join("a.toml"), "kind = \"script\"\nname = \"a\"\n").unwrap();
        std::fs::write(dir.join("c.toml.disabled"), "garbage").unwrap();
        std::fs::write(dir.join(".d.toml"), "garbage").unwrap();
        let loaded = load_dir(&dir);
        std::fs::write(dir.join("e.toml"), "kind = \"x\"\nname = \"e\"\n").unwrap();
        let each = load_dir_each(&dir);
        let failed = load_dir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = loaded.unwrap().into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["a", "b"]);
        let each = each.unwrap();
        assert_eq!(each.len(), 3);
        assert!(each[2].is_err());
        assert!(failed.unwrap_err().file().ends_with("e.toml"));
        assert!(
            load_dir(Path::new("/nonexistent/shadowcopy/writers.d"))
                .unwrap()
                .is_empty()
        );
    }
}
