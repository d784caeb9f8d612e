//! The journal format: each record is one entry sent to journald over its native protocol, a
//! datagram of `NAME=value` lines on `/run/systemd/journal/socket` (systemd's "Native Journal
//! Protocol"), so that its fields stay fields.
//!
//! What is sent: `MESSAGE`, `PRIORITY` (error 3, warn 4, info 6, debug and trace 7: syslog's
//! numbers), `SYSLOG_IDENTIFIER` (the program), `CODE_FILE` and `CODE_LINE`, `SHADOWCOPY_TARGET`
//! (the module), `SHADOWCOPY_SPANS`, and every span and event field as `SHADOWCOPY_<NAME>`
//! ([`journal_field_name`]): `SHADOWCOPY_SET_ID`, `SHADOWCOPY_WRITER`, `SHADOWCOPY_PHASE`,
//! `SHADOWCOPY_SESSION`, `SHADOWCOPY_VOLUME`, ... The prefix keeps them apart from journald's own
//! fields and from other programs' in `journalctl -F`.
//!
//! The socket is non-blocking, on purpose: shadowcopyd logs from inside the freeze window, and a
//! journal that is slow (or itself waiting on a frozen file system) must not hold the applications
//! frozen. When the journal does not take a datagram at once, the record is dropped and counted;
//! the next entry that goes through carries `SHADOWCOPY_DROPPED=<count>`. An entry too large for
//! one datagram goes, as the protocol provides, in a sealed memfd passed with SCM_RIGHTS. When the
//! journal has gone away (restarted: the socket is connected again once) or refuses otherwise, the
//! record is written as a text line on stderr instead.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Level;

use crate::layer::{Record, Sink};

/// journald's native protocol socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The environment variable that moves the journal's socket: a test's own datagram socket, or
/// where a container mounts the host's journal socket.
pub const JOURNAL_SOCKET_ENV: &str = "SHADOWCOPY_JOURNAL_SOCKET";

/// journald's limit on a field name's length.
const MAX_NAME: usize = 64;

/// The journal socket in force.
pub(crate) fn socket_path() -> PathBuf {
    std::env::var_os(JOURNAL_SOCKET_ENV)
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from(JOURNAL_SOCKET), PathBuf::from)
}

/// The journal field a record field is sent as: `SHADOWCOPY_` and the name in capitals, every
/// character other than a letter or digit made `_` (journald drops fields with other names), cut
/// at journald's 64 characters. `set_id` is `SHADOWCOPY_SET_ID`, `writer` `SHADOWCOPY_WRITER`.
pub fn journal_field_name(key: &str) -> String {
    let mut name = String::from("SHADOWCOPY_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name.truncate(MAX_NAME);
    name
}

/// syslog's priority for a level (journald's `PRIORITY`).
fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        Level::DEBUG | Level::TRACE => "7",
    }
}

/// Appends one field: `NAME=value\n`, or for a value holding a newline the protocol's binary
/// form, `NAME\n`, the length as 64-bit little-endian, the value, `\n`.
fn put(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

/// The entry of a record, as sent.
pub(crate) fn encode(program: &str, record: &Record<'_>, dropped: u64) -> Vec<u8> {
    let mut entry = Vec::with_capacity(256);
    put(&mut entry, "MESSAGE", record.message.as_bytes());
    put(&mut entry, "PRIORITY", priority(record.level).as_bytes());
    put(&mut entry, "SYSLOG_IDENTIFIER", program.as_bytes());
    if let Some(file) = record.file {
        put(&mut entry, "CODE_FILE", file.as_bytes());
    }
    if let Some(line) = record.line {
        put(&mut entry, "CODE_LINE", line.to_string().as_bytes());
    }
    put(&mut entry, "SHADOWCOPY_TARGET", record.target.as_bytes());
    if !record.spans.is_empty() {
        put(&mut entry, "SHADOWCOPY_SPANS", record.spans.as_bytes());
    }
    for (key, value) in &record.fields {
        let name = journal_field_name(key);
        // A field may not replace one written above.
        if name == "SHADOWCOPY_TARGET" || name == "SHADOWCOPY_SPANS" {
            continue;
        }
        put(&mut entry, &name, value.to_string().as_bytes());
    }
    if dropped > 0 {
        put(
            &mut entry,
            "SHADOWCOPY_DROPPED",
            dropped.to_string().as_bytes(),
        );
    }
    entry
}

/// Reads an entry of the native protocol back into its fields, the inverse of what the journal
/// format sends; for tests that stand in for journald. A name that appears twice keeps its last
/// value; a value that is not UTF-8 is replaced lossily.
pub fn parse_journal_entry(entry: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut fields = BTreeMap::new();
    let mut rest = entry;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("a field without its newline: {:?}", lossy(rest)))?;
        let line = &rest[..end];
        rest = &rest[end + 1..];
        if let Some(equals) = line.iter().position(|&b| b == b'=') {
            fields.insert(lossy(&line[..equals]), lossy(&line[equals + 1..]));
            continue;
        }
        // The binary form: the name alone on its line, then the length and the value.
        let name = lossy(line);
        let (length, tail) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| format!("field {name}: no length after the name"))?;
        let length = usize::try_from(u64::from_le_bytes(*length))
            .map_err(|_| format!("field {name}: length out of range"))?;
        if tail.len() < length + 1 || tail[length] != b'\n' {
            return Err(format!(
                "field {name}: {length} bytes and a newline announced, {} there",
                tail.len()
            ));
        }
        fields.insert(name, lossy(&tail[..length]));
        rest = &tail[length + 1..];
    }
    Ok(fields)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The journal sink: a non-blocking datagram socket connected to journald.
pub(crate) struct JournalSink {
    program: &'static str,
    path: PathBuf,
    socket: UnixDatagram,
    /// Records dropped since the last entry that went through.
    dropped: AtomicU64,
}

impl JournalSink {
    /// Connects to the journal's socket at `path`.
    pub(crate) fn connect(program: &'static str, path: PathBuf) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(&path)?;
        socket.set_nonblocking(true)?;
        Ok(JournalSink {
            program,
            path,
            socket,
            dropped: AtomicU64::new(0),
        })
    }

    /// Sends one entry: as a datagram, or in a memfd when it is too large for one; connects once
    /// more when the journal restarted (its socket is a new one).
    fn send(&self, entry: &[u8]) -> io::Result<()> {
        match self.socket.send(entry) {
            Ok(_) => Ok(()),
            Err(error) if is_too_large(&error) => self.send_memfd(entry),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) =>
            {
                self.socket.connect(&self.path)?;
                match self.socket.send(entry) {
                    Ok(_) => Ok(()),
                    Err(error) if is_too_large(&error) => self.send_memfd(entry),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// The protocol's way for a large entry: written to a memfd, sealed so that it cannot change
    /// while journald reads it, and passed as the datagram's only content.
    fn send_memfd(&self, entry: &[u8]) -> io::Result<()> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        use nix::sys::memfd::{MFdFlags, memfd_create};
        use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
        let memfd = memfd_create(
            "shadowcopy-journal",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let mut file = std::fs::File::from(memfd);
        file.write_all(entry)?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let fds = [file.as_raw_fd()];
        sendmsg::<UnixAddr>(
            self.socket.as_raw_fd(),
            &[],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )?;
        Ok(())
    }
}

/// EMSGSIZE, or ENOBUFS, which a datagram larger than the socket's buffer gets on Linux.
fn is_too_large(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == nix::libc::EMSGSIZE || code == nix::libc::ENOBUFS
    )
}

impl Sink for JournalSink {
    fn write(&self, record: &Record<'_>) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let entry = encode(self.program, record, dropped);
        match self.send(&entry) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                self.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
            }
            Err(error) => {
                self.dropped.fetch_add(dropped, Ordering::Relaxed);
                let _ = writeln!(
                    io::stderr().lock(),
                    "{}: {} (the journal at {} refused this entry: {error})",
                    self.program,
                    record.text(),
                    Path::new(&self.path).display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::layer::{StructuredLayer, Value};

    fn record(message: &str, fields: Vec<(String, Value)>) -> Record<'static> {
        Record {
            level: Level::WARN,
            target: "shadowcopy_coordinator::registry",
            file: Some("crates/coordinator/src/registry.rs"),
            line: Some(230),
            message: message.to_owned(),
            fields,
            spans: "snapshot_set:phase:writer_event".to_owned(),
        }
    }

    #[test]
    fn field_names_follow_journald_rules() {
        assert_eq!(journal_field_name("set_id"), "SHADOWCOPY_SET_ID");
        assert_eq!(journal_field_name("writer"), "SHADOWCOPY_WRITER");
        assert_eq!(
            journal_field_name("retry_in.ms-x"),
            "SHADOWCOPY_RETRY_IN_MS_X"
        );
        assert_eq!(journal_field_name(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn entries_round_trip_including_multi_line_values() {
        let entry = encode(
            "shadowcopyd",
            &record(
                "writer reported failure:\nexit status 3",
                vec![
                    ("set_id".into(), Value::Str("3f2c".into())),
                    ("writer".into(), Value::Str("pg".into())),
                    ("application_code".into(), Value::I64(-3)),
                ],
            ),
            2,
        );
        let fields = parse_journal_entry(&entry).unwrap();
        assert_eq!(fields["MESSAGE"], "writer reported failure:\nexit status 3");
        assert_eq!(fields["PRIORITY"], "4");
        assert_eq!(fields["SYSLOG_IDENTIFIER"], "shadowcopyd");
        assert_eq!(fields["CODE_LINE"], "230");
        assert_eq!(fields["SHADOWCOPY_SET_ID"], "3f2c");
        assert_eq!(fields["SHADOWCOPY_WRITER"], "pg");
        assert_eq!(fields["SHADOWCOPY_APPLICATION_CODE"], "-3");
        assert_eq!(
            fields["SHADOWCOPY_SPANS"],
            "snapshot_set:phase:writer_event"
        );
        assert_eq!(fields["SHADOWCOPY_DROPPED"], "2");
        assert!(parse_journal_entry(b"MESSAGE\n\x05\0\0\0\0\0\0\0ab\n").is_err());
    }

    /// A datagram socket of the test's own, standing in for journald.
    fn fake_journal(name: &str) -> (PathBuf, UnixDatagram) {
        let path = std::env::temp_dir().join(format!(
            "sc-journal-{name}-{}-{:?}.sock",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (path, socket)
    }

    /// Receives one entry: a datagram, or the memfd it carries.
    fn receive(socket: &UnixDatagram) -> BTreeMap<String, String> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::io::{IoSliceMut, Read, Seek};
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut buffer = vec![0u8; 1 << 20];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let (length, fd) = {
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let message = recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .unwrap();
            let fd = message.cmsgs().unwrap().find_map(|cmsg| match cmsg {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            });
            (message.bytes, fd)
        };
        let entry = match fd {
            Some(fd) => {
                // SAFETY: the kernel just installed this descriptor in this process for the
                // received SCM_RIGHTS message; nothing else owns it.
                #[allow(unsafe_code)]
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                let mut file = std::fs::File::from(owned);
                // The descriptor shares the sender's file offset, which is at the end: journald
                // maps the memfd, the test reads it from the start.
                file.seek(std::io::SeekFrom::Start(0)).unwrap();
                let mut entry = Vec::new();
                file.read_to_end(&mut entry).unwrap();
                entry
            }
            None => buffer[..length].to_vec(),
        };
        parse_journal_entry(&entry).unwrap()
    }

    #[test]
    fn the_layer_sends_set_writer_and_phase_as_fields() {
        let (path, journal) = fake_journal("layer");
        let sink = Arc::new(JournalSink::connect("shadowcopyd", path.clone()).unwrap());
        let subscriber = tracing_subscriber::registry().with(StructuredLayer::new(sink));
        tracing::subscriber::with_default(subscriber, || {
            let set = tracing::info_span!("snapshot_set", set = "3f2c");
            let _set = set.enter();
            let phase = tracing::info_span!("phase", phase = "thaw");
            let _phase = phase.enter();
            let event = tracing::info_span!("writer_event", writer = "pg");
            let _event = event.enter();
            tracing::error!(
                code = "VSS_E_WRITERERROR_TIMEOUT",
                "no answer before the deadline"
            );
            // Larger than the socket's buffer: goes in a memfd.
            tracing::info!("{}", "x".repeat(600_000));
        });
        let fields = receive(&journal);
        assert_eq!(fields["MESSAGE"], "no answer before the deadline");
        assert_eq!(fields["PRIORITY"], "3");
        assert_eq!(fields["SHADOWCOPY_SET_ID"], "3f2c");
        assert_eq!(fields["SHADOWCOPY_WRITER"], "pg");
        assert_eq!(fields["SHADOWCOPY_PHASE"], "thaw");
        assert_eq!(fields["SHADOWCOPY_CODE"], "VSS_E_WRITERERROR_TIMEOUT");
        let large = receive(&journal);
        assert_eq!(large["MESSAGE"].len(), 600_000);
        assert_eq!(large["SHADOWCOPY_SET_ID"], "3f2c");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_full_journal_drops_and_counts_rather_than_blocks() {
        let (path, journal) = fake_journal("full");
        let sink = JournalSink::connect("shadowcopyd", path.clone()).unwrap();
        // Nobody reads: the socket's queue fills, and then every write must return at once.
        let mut sent = 0_u64;
        while sink.dropped.load(Ordering::Relaxed) == 0 {
            sink.write(&record(&format!("entry {sent}"), Vec::new()));
            sent += 1;
            assert!(sent < 100_000, "the queue never filled");
        }
        let dropped_before_draining = sink.dropped.load(Ordering::Relaxed);
        // Drain, then the next entry reports how many were lost.
        journal.set_nonblocking(true).unwrap();
        let mut buffer = vec![0u8; 1 << 16];
        while journal.recv(&mut buffer).is_ok() {}
        journal.set_nonblocking(false).unwrap();
        sink.write(&record("after", Vec::new()));
        let fields = receive(&journal);
        assert_eq!(fields["MESSAGE"], "after");
        assert_eq!(
            fields["SHADOWCOPY_DROPPED"],
            dropped_before_draining.to_string()
        );
        std::fs::remove_file(&path).unwrap();
    }
}
