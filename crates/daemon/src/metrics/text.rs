//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` lines, samples with
//! escaped label values, and histograms with cumulative buckets.
//!
//! Written out here rather than through a metrics crate: the daemon's metrics are a handful of
//! families rebuilt on every scrape from what the coordinator and the providers know, so a
//! registry of long-lived metric objects would only duplicate that state.

use std::fmt::{Display, Write};
use std::time::Duration;

/// The `Content-Type` of the format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape's text, family by family.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: its help and type lines. Every sample of the family must follow before the
    /// next family starts (the format wants a family's samples together).
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    /// One sample.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A whole histogram family with one series (no labels of its own).
    pub(crate) fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative += count;
            self.sample(&bucket, &[("le", &bound.to_string())], cumulative);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count);
        self.sample(&format!("{name}_sum"), &[], histogram.sum);
        self.sample(&format!("{name}_count"), &[], histogram.count);
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// A label value with `\`, `"` and line feeds escaped, as the format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Seconds as the format writes them.
pub(crate) fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Observations counted into fixed buckets, each bucket holding the observations up to its upper
/// bound and above the previous one; the exposition makes them cumulative.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds, in increasing order (`+Inf` is implied).
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub(crate) fn observe(&mut self, value: f64) {
        if let Some(index) = self.bounds.iter().position(|bound| value <= *bound) {
            self.counts[index] += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut text = Exposition::default();
        text.family("shadowcopy_x", Kind::Gauge, "A \\ help\nline.");
        text.sample("shadowcopy_x", &[], 1);
        text.sample(
            "shadowcopy_x",
            &[("volume", "/mnt/a \"b\"\\c\nd"), ("provider", "btrfs")],
            0.25,
        );
        assert_eq!(
            text.finish(),
            "# HELP shadowcopy_x A \\\\ help\\nline.\n\
             # TYPE shadowcopy_x gauge\n\
             shadowcopy_x 1\n\
             shadowcopy_x{volume=\"/mnt/a \\\"b\\\"\\\\c\\nd\",provider=\"btrfs\"} 0.25\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        static BOUNDS: &[f64] = &[0.001, 0.01, 1.0];
        let mut histogram = Histogram::new(BOUNDS);
        for value in [0.0005, 0.001, 0.005, 0.5, 2.0] {
            histogram.observe(value);
        }
        let mut text = Exposition::default();
        text.histogram("shadowcopy_h_seconds", "H.", &histogram);
        assert_eq!(
            text.finish(),
            "# HELP shadowcopy_h_seconds H.\n\
             # TYPE shadowcopy_h_seconds histogram\n\
             shadowcopy_h_seconds_bucket{le=\"0.001\"} 2\n\
             shadowcopy_h_seconds_bucket{le=\"0.01\"} 3\n\
             shadowcopy_h_seconds_bucket{le=\"1\"} 4\n\
             shadowcopy_h_seconds_bucket{le=\"+Inf\"} 5\n\
             shadowcopy_h_seconds_sum 2.5065\n\
             shadowcopy_h_seconds_count 5\n"
        );
    }
}
