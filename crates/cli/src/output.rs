//! Printing results as text for people or as JSON for programs (`--json`).

use std::io::Write;

/// Where and how a command prints its result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    json: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Output { json }
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
