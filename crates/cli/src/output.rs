//! Printing results as text for people or as JSON for programs (`--json`), and the command's
//! own notices and errors on stderr in the log format (`--log-format`).

use std::io::Write;

use shadowcopy_logging::LogFormat;

/// Where and how a command prints its result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    json: bool,
    /// The log format in force; notices follow it.
    log_format: LogFormat,
}

impl Output {
    pub(crate) fn new(json: bool, log_format: LogFormat) -> Self {
        Output { json, log_format }
    }

    /// Tells the user something about how the command runs (embedded mode, say): a
    /// `shadowcopy: ...` line on stderr, left out when the result is JSON so that programs see
    /// only the result; a record at level INFO with `--log-format json` or journal, where
    /// programs expect it.
    pub(crate) fn notice(self, line: &str) {
        match self.log_format {
            LogFormat::Text if self.json => {}
            LogFormat::Text => eprintln!("shadowcopy: {line}"),
            LogFormat::Json | LogFormat::Journal => {
                shadowcopy_logging::report(tracing::Level::INFO, line);
            }
        }
    }

    /// Whether the result is printed as JSON.
    pub(crate) fn is_json(self) -> bool {
        self.json
    }

    /// Prints `value` as JSON when asked for JSON, otherwise the text `text()` makes.
    ///
    /// A closed pipe (`shadowcopy codes | head`) is not an error.
    pub(crate) fn print(self, value: &serde_json::Value, text: impl FnOnce() -> String) {
        let rendered = if self.json {
            serde_json::to_string_pretty(value).expect("values are JSON")
        } else {
            text()
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", rendered.trim_end());
    }
}
