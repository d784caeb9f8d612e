//! Waiting for something another process brings about (a file appears, a device detaches, a
//! copy is deleted, a socket listens), without a fixed sleep and without asserting how long it
//! took.

use std::path::Path;
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

/// Whether a Unix stream socket bound at `path` is listening, read from /proc/net/unix (the
/// `__SO_ACCEPTCON` flag) without connecting to it.
pub fn unix_socket_listening(path: &Path) -> bool {
    const ACCEPTING: u32 = 1 << 16;
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && Path::new(fields[7]) == path
            && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & ACCEPTING != 0)
    })
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
    fn a_listening_stream_socket_is_told_from_a_bound_datagram_socket() {
        let dir = crate::TempDir::new("listening");
        let stream = dir.join("stream.sock");
        let datagram = dir.join("datagram.sock");
        assert!(!unix_socket_listening(&stream), "nothing is bound yet");
        let _listener = std::os::unix::net::UnixListener::bind(&stream).unwrap();
        let _bound = std::os::unix::net::UnixDatagram::bind(&datagram).unwrap();
        assert!(unix_socket_listening(&stream));
        assert!(
            !unix_socket_listening(&datagram),
            "a bound socket that takes no connections is not listening"
        );
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
