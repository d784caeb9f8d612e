//! Progress of backups and restores on a terminal: the current step, bytes done of the total, the
//! rate and the time left, redrawn on one line of standard error a few times a second. Without a
//! terminal (a pipe, a log, `--json`) nothing is drawn; notes are printed either way.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shadowcopy_backup::{Reporter, Step};

/// How often the line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(250);

/// A [`Reporter`] drawing on standard error.
pub(crate) struct TerminalReporter {
    draw: bool,
    print_notes: bool,
    state: Mutex<State>,
}

struct State {
    step: Option<Step>,
    started: Instant,
    total: u64,
    done: u64,
    files: u64,
    drawn: Option<Instant>,
}

impl TerminalReporter {
    /// Draws only when standard error is a terminal and the result is not JSON; notes are printed
    /// unless the result is JSON (where they are part of it).
    pub(crate) fn new(json: bool) -> Self {
        TerminalReporter {
            draw: !json && std::io::stderr().is_terminal(),
            print_notes: !json,
            state: Mutex::new(State {
                step: None,
                started: Instant::now(),
                total: 0,
                done: 0,
                files: 0,
                drawn: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn redraw(&self, state: &mut State, force: bool) {
        if !self.draw {
            return;
        }
        let now = Instant::now();
        if !force && state.drawn.is_some_and(|at| now - at < REDRAW) {
            return;
        }
        state.drawn = Some(now);
        let Some(step) = state.step else { return };
        let mut line = step.describe().to_owned();
        if state.files > 0 {
            line.push_str(&format!(": {} files", state.files));
        }
        if state.done > 0 || state.total > 0 {
            let elapsed = state.started.elapsed().as_secs_f64().max(0.001);
            let rate = state.done as f64 / elapsed;
            line.push_str(&format!(
                "{} {}",
                if state.files > 0 { "," } else { ":" },
                bytes(state.done)
            ));
            if state.total > 0 {
                line.push_str(&format!(" of {}", bytes(state.total)));
            }
            line.push_str(&format!(", {}/s", bytes(rate as u64)));
            if state.total > state.done && rate > 0.0 {
                let left = (state.total - state.done) as f64 / rate;
                line.push_str(&format!(", {} left", clock(left)));
            }
        }
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }

    /// Ends the progress line, so that what is printed next starts on a line of its own.
    pub(crate) fn finish(&self) {
        if self.draw && self.lock().drawn.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

impl Reporter for TerminalReporter {
    fn step(&self, step: Step) {
        let mut state = self.lock();
        state.step = Some(step);
        state.started = Instant::now();
        state.total = 0;
        state.done = 0;
        state.files = 0;
        self.redraw(&mut state, true);
    }

    fn total_bytes(&self, bytes: u64) {
        let mut state = self.lock();
        state.total = bytes;
        self.redraw(&mut state, false);
    }

    fn advance(&self, bytes: u64) {
        let mut state = self.lock();
        state.done += bytes;
        self.redraw(&mut state, false);
    }

    fn files(&self, files: u64) {
        let mut state = self.lock();
        state.files += files;
        self.redraw(&mut state, false);
    }

    fn note(&self, message: &str) {
        if !self.print_notes {
            return;
        }
        let mut state = self.lock();
        let mut stderr = std::io::stderr().lock();
        if self.draw {
            let _ = write!(stderr, "\r\x1b[2K");
        }
        let _ = writeln!(stderr, "note: {message}");
        drop(stderr);
        self.redraw(&mut state, true);
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Seconds as `m:ss` or `h:mm:ss`.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(clock(65.0), "1:05");
        assert_eq!(clock(3725.0), "1:02:05");
    }
}
