//! The outcome of a conformance run: one result per scenario, printed as one line each with a
//! final `N passed, M failed` line, or as one JSON document.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// The outcome of one scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScenarioResult {
    /// The scenario's label: the TS number of spec §22 it implements (with a letter for variants),
    /// or the requirement ID when §22 has no scenario for it.
    pub id: String,
    /// What the scenario does.
    pub name: String,
    /// The requirement IDs the scenario checks.
    pub requirements: Vec<String>,
    /// Whether every check passed.
    pub passed: bool,
    /// Why it failed; `None` when it passed.
    pub reason: Option<String>,
    /// How long it ran, in microseconds.
    pub duration_us: u64,
}

impl ScenarioResult {
    /// The result line: `ok|FAILED  ID name [IDs]  (duration)`, plus the reason on the next line
    /// when it failed.
    pub fn line(&self) -> String {
        let status = if self.passed { "ok" } else { "FAILED" };
        let mut line = format!(
            "{status:<6}  {} {} [{}]  ({})",
            self.id,
            self.name,
            self.requirements.join(", "),
            format_duration(Duration::from_micros(self.duration_us))
        );
        if let Some(reason) = &self.reason {
            let _ = write!(line, "\n        reason: {reason}");
        }
        line
    }
}

/// The outcome of a whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The daemon's socket.
    pub socket: String,
    /// What was tested: `shadowcopyd` for the built-in scenarios, or the writer under test.
    pub subject: String,
    /// Every scenario that ran, in order.
    pub scenarios: Vec<ScenarioResult>,
    /// How many passed.
    pub passed: usize,
    /// How many failed.
    pub failed: usize,
}

impl Report {
    /// An empty report.
    pub fn new(socket: impl Into<String>, subject: impl Into<String>) -> Self {
        Report {
            socket: socket.into(),
            subject: subject.into(),
            ..Report::default()
        }
    }

    /// Adds a result and counts it.
    pub fn push(&mut self, result: ScenarioResult) {
        if result.passed {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        self.scenarios.push(result);
    }

    /// Whether every scenario passed.
    pub fn success(&self) -> bool {
        self.failed == 0
    }

    /// The final line, exactly `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }

    /// The JSON form, for `--json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report is representable in JSON")
    }
}

/// A duration for people: microseconds, milliseconds or seconds, whichever reads best.
pub fn format_duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros < 1_000 {
        format!("{micros} µs")
    } else if micros < 10_000_000 {
        format!("{:.2} ms", duration.as_secs_f64() * 1_000.0)
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_summary_have_the_documented_shape() {
        let mut report = Report::new("/tmp/s.sock", "shadowcopyd");
        report.push(ScenarioResult {
            id: "TS-01".into(),
            name: "full backup".into(),
            requirements: vec!["TS-01".into(), "WST-3".into()],
            passed: true,
            reason: None,
            duration_us: 12_340,
        });
        report.push(ScenarioResult {
            id: "TS-09a".into(),
            name: "veto".into(),
            requirements: vec!["BK-SNAP-7".into()],
            passed: false,
            reason: Some("no Abort".into()),
            duration_us: 1_500_000,
        });
        assert_eq!(
            report.scenarios[0].line(),
            "ok      TS-01 full backup [TS-01, WST-3]  (12.34 ms)"
        );
        assert!(report.scenarios[1].line().starts_with(
            "FAILED  TS-09a veto [BK-SNAP-7]  (1500.00 ms)\n        reason: no Abort"
        ));
        assert_eq!(report.summary(), "1 passed, 1 failed");
        assert!(!report.success());
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["failed"], 1);
        assert_eq!(json["scenarios"][1]["reason"], "no Abort");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_micros(250)), "250 µs");
        assert_eq!(format_duration(Duration::from_micros(1_500)), "1.50 ms");
        assert_eq!(format_duration(Duration::from_secs(12)), "12.00 s");
    }
}
