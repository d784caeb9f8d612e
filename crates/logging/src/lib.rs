//! Logging for shadowcopy's programs (`shadowcopyd`, `shadowcopy`, `shadowcopy-writer`): one
//! `--log-format` for all three, and log records whose shadow copy set, writer and phase are
//! fields of their own rather than words in a sentence.
//!
//! The coordinator and the writer SDK put what a line is about into `tracing` spans: the
//! `snapshot_set` span carries `set`, the `writer_event` and SDK spans carry `writer`, the
//! `phase` span carries `phase` (`freeze`, `commit`, `thaw`, ...). Each format keeps them:
//!
//! - [`LogFormat::Text`]: `tracing_subscriber`'s human-readable lines on stderr, the spans written
//!   out as `snapshot_set{set=...}:phase{phase=freeze}:`.
//! - [`LogFormat::Json`]: one JSON object per line on stderr, flat: `timestamp`, `level`,
//!   `program`, `target`, `message`, then every span and event field by name, innermost span
//!   winning, with the set's id as `set_id` (see [`SET_ID`]), `writer` and `phase`, and `spans`,
//!   the span names from the outermost (`backup_session:snapshot_set:phase:writer_event`).
//! - [`LogFormat::Journal`]: each record is one entry sent to journald over its native protocol
//!   (`/run/systemd/journal/socket`), so `journalctl SHADOWCOPY_SET_ID=...` finds every line of a
//!   set: `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER`, `CODE_FILE`, `CODE_LINE`, and each field as
//!   `SHADOWCOPY_<NAME>` (`SHADOWCOPY_SET_ID`, `SHADOWCOPY_WRITER`, `SHADOWCOPY_PHASE`,
//!   `SHADOWCOPY_TARGET`, `SHADOWCOPY_SPANS`, ...). See `journal.rs` for what happens when the
//!   journal is slow or gone.
//!
//! Without `--log-format` a program writes to the journal when systemd connected its stderr to
//! it (`$JOURNAL_STREAM` names stderr's device and inode, [`stderr_is_journal`]) and text
//! otherwise. The journal's socket can be moved with `$SHADOWCOPY_JOURNAL_SOCKET`
//! ([`JOURNAL_SOCKET_ENV`]): for tests, which read the entries from a datagram socket of their
//! own, and for containers that mount the journal's socket elsewhere.
//!
//! [`report`] is for a program's own messages to its user (the CLI's errors and notices): they
//! are output rather than logs, so no log level filter hides them, and they take the same format
//! as the logs around them.

mod journal;
mod layer;

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use journal::{JOURNAL_SOCKET, JOURNAL_SOCKET_ENV, journal_field_name, parse_journal_entry};

/// The key under which the shadow copy set's id appears in JSON records (`SHADOWCOPY_SET_ID` in
/// the journal). The coordinator's spans call it `set`; one name in every record makes a set's
/// lines easy to select.
pub const SET_ID: &str = "set_id";

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr, with set_id, writer and phase as keys.
    Json,
    /// Entries in the systemd journal, with SHADOWCOPY_SET_ID, SHADOWCOPY_WRITER and
    /// SHADOWCOPY_PHASE as fields (the default when stderr is connected to the journal).
    Journal,
}

impl LogFormat {
    /// The format asked for, or without one the journal when stderr is connected to it and text
    /// otherwise.
    pub fn resolve(requested: Option<LogFormat>) -> LogFormat {
        requested.unwrap_or_else(|| {
            if stderr_is_journal() {
                LogFormat::Journal
            } else {
                LogFormat::Text
            }
        })
    }
}

/// Where [`report`] writes; set once by [`init`].
enum Output {
    Text,
    Json,
    Journal(Arc<journal::JournalSink>),
}

/// The program name and output of [`init`], for [`report`].
static ACTIVE: OnceLock<(&'static str, Output)> = OnceLock::new();

/// Installs the global `tracing` subscriber for `program` in `format`, with the level filter of
/// `$RUST_LOG` or else `default_filter` (`"info"`, `"warn"`, `"info,h2=warn"`, ...), and returns
/// the format in force.
///
/// That is `format`, except when the journal cannot be reached: then the reason is printed on
/// stderr and the records are written as text there (under systemd stderr goes to the journal
/// all the same, as plain lines). Call it once, before the program's first record; a second call
/// changes nothing.
pub fn init(program: &'static str, format: LogFormat, default_filter: &str) -> LogFormat {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let (format, output) = match format {
        LogFormat::Text => (LogFormat::Text, Output::Text),
        LogFormat::Json => (LogFormat::Json, Output::Json),
        LogFormat::Journal => {
            match journal::JournalSink::connect(program, journal::socket_path()) {
                Ok(sink) => (LogFormat::Journal, Output::Journal(Arc::new(sink))),
                Err(error) => {
                    eprintln!(
                        "{program}: cannot write to the journal at {}: {error}; logging as text on \
                     stderr instead (is systemd-journald running? --log-format text or json \
                     chooses another format)",
                        journal::socket_path().display()
                    );
                    (LogFormat::Text, Output::Text)
                }
            }
        }
    };
    // A second init keeps the first subscriber: ignoring the error is that.
    let _ = match &output {
        Output::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        Output::Json => registry
            .with(layer::StructuredLayer::new(Arc::new(layer::JsonSink {
                program,
            })))
            .try_init(),
        Output::Journal(sink) => registry
            .with(layer::StructuredLayer::new(Arc::clone(sink)))
            .try_init(),
    };
    let _ = ACTIVE.set((program, output));
    format
}

/// Writes one of the program's own messages to its user, in the format [`init`] set up and
/// whatever the log level filter says: `<program>: <message>` on stderr as text, a JSON line with
/// `level`, `program` and `message`, or a journal entry with its `PRIORITY`. Before `init`, the
/// message is printed as it is.
pub fn report(level: Level, message: &str) {
    let Some((program, output)) = ACTIVE.get() else {
        eprintln!("{message}");
        return;
    };
    let record = layer::Record {
        level,
        target: program,
        file: None,
        line: None,
        message: message.to_owned(),
        fields: Vec::new(),
        spans: String::new(),
    };
    match output {
        Output::Text => {
            let _ = writeln!(std::io::stderr().lock(), "{program}: {message}");
        }
        Output::Json => layer::Sink::write(&layer::JsonSink { program }, &record),
        Output::Journal(sink) => layer::Sink::write(sink.as_ref(), &record),
    }
}

/// Whether systemd connected stderr to the journal: `$JOURNAL_STREAM` holds the device and inode
/// number (`<dev>:<ino>`) of the stream it set up, and stderr still is that stream (a program run
/// from a unit with its stderr redirected elsewhere inherits the variable but not the stream).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // A duplicate of stderr, so that its metadata can be read without unsafe code.
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(stderr).metadata() {
        Ok(metadata) => metadata.dev() == dev && metadata.ino() == ino,
        Err(_) => false,
    }
}

/// The journal's socket in force: `$SHADOWCOPY_JOURNAL_SOCKET` or [`JOURNAL_SOCKET`].
pub fn journal_socket() -> PathBuf {
    journal::socket_path()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_format_is_kept() {
        for format in [LogFormat::Text, LogFormat::Json, LogFormat::Journal] {
            assert_eq!(LogFormat::resolve(Some(format)), format);
        }
    }
}
