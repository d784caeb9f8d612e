//! Waiting for something another process brings about (a file appears, a device detaches, a
//! copy is deleted), without a fixed sleep and without asserting how long it took.

use std::time::{Duration, Instant};

/// Calls `done` every 20 ms until it returns true or `limit` has passed; returns its last answer.
///
/// The caller asserts on the result with a message that says what did not happen (and usually
/// the daemon's log), so this never fails by itself; `limit` only bounds a hang.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_true_once_the_condition_holds() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(10), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3, "stops asking once the answer is yes");
    }

    #[test]
    fn returns_false_when_the_condition_never_holds() {
        let mut calls = 0;
        assert!(!wait_until(Duration::ZERO, || {
            calls += 1;
            false
        }));
        assert_eq!(calls, 1, "asks at least once, even with no time left");
    }
}
