//! Listening Unix sockets as the kernel lists them in `/proc/net/unix`, read without connecting:
//! a connection would be a client of its own (it starts a socket-activated daemon).

use std::path::{Path, PathBuf};

/// `__SO_ACCEPTCON` in the table's Flags column: the socket takes connections.
const ACCEPTING: u32 = 1 << 16;

/// One listening Unix stream socket of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListeningUnixSocket {
    /// The socket's inode number, as `/proc/PID/fd` links name it (`socket:[INODE]`).
    pub inode: String,
    /// The path it is bound to; `None` for an unnamed socket. Abstract names start with `@`.
    pub path: Option<PathBuf>,
}

/// The listening sockets of a Unix socket table: `/proc/net/unix`, or `/proc/PID/net/unix` for
/// the network namespace of process PID. An unreadable table lists none.
pub fn listening_unix_sockets(table: &Path) -> Vec<ListeningUnixSocket> {
    let text = std::fs::read_to_string(table).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode [Path]
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            if flags & ACCEPTING == 0 {
                return None;
            }
            Some(ListeningUnixSocket {
                inode: fields.get(6)?.to_string(),
                path: fields.get(7).map(PathBuf::from),
            })
        })
        .collect()
}

/// Whether a Unix stream socket bound at `path` is listening.
pub fn unix_socket_listening(path: &Path) -> bool {
    listening_unix_sockets(Path::new("/proc/net/unix"))
        .iter()
        .any(|socket| socket.path.as_deref() == Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
