//! systemd integration of `shadowcopyd`, without libsystemd: readiness and stop notifications
//! (the `sd_notify` protocol) and socket activation (the `sd_listen_fds` protocol).
//!
//! Both are the binary's business. [`take_environment`] reads what the service manager passed,
//! once, at the top of `main` before any thread exists, and removes it from the environment, so
//! that the programs hosted writers run (a `pg_ctl` whose PostgreSQL would send its own READY=1
//! to `$NOTIFY_SOCKET`) never see it. An embedding program (the CLI's embedded coordinator) never
//! calls it, and [`crate::Service::start`] binds its socket as configured.
//!
//! - Notifications: `$NOTIFY_SOCKET` names a datagram socket, a path or, with a leading `@`, an
//!   abstract name; each notification is one datagram of `KEY=value` lines (`READY=1`,
//!   `STATUS=...`, `STOPPING=1`). Without the variable [`Notifier::notify`] does nothing, so the
//!   daemon runs the same under any supervisor.
//! - Socket activation: when `$LISTEN_PID` is this process and `$LISTEN_FDS` is 1, file descriptor
//!   3 is the listening socket of `shadowcopyd.socket`, and the daemon serves it instead of
//!   binding `service.socket` ([`crate::ServiceSocket::Inherited`]). It must be a listening Unix
//!   stream socket with a path (hosted writers connect to it by path); anything else is refused at
//!   start with what it is and which `shadowcopyd.socket` setting to change, rather than served
//!   half-working. systemd owns that socket file: the daemon neither changes its mode nor removes
//!   it, and while the daemon is stopped systemd keeps accepting connections, which start it.
//!   `$LISTEN_PID` naming another process means the variables were inherited, not meant for this
//!   one: they are ignored, as `sd_listen_fds` does.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::PathBuf;

/// The first file descriptor the service manager passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The variables of both protocols, removed from the environment once read.
const VARIABLES: [&str; 4] = [
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

/// What the service manager handed this process.
#[derive(Debug)]
pub struct Environment {
    /// Where notifications go; an unusable `$NOTIFY_SOCKET` is the error.
    pub notifier: Result<Notifier, NotifyError>,
    /// The socket to serve, when the process was socket-activated.
    pub activation: Result<Option<ActivatedSocket>, ActivationError>,
}

/// Reads `$NOTIFY_SOCKET` and the socket-activation variables, takes the activated socket, and
/// removes the variables from the environment.
///
/// # Safety
///
/// Call it at most once, and while the process has no thread but the calling one: it removes
/// environment variables (`std::env::remove_var`, which another thread reading the environment
/// would race), and it takes ownership of file descriptor 3 when `$LISTEN_PID` and `$LISTEN_FDS`
/// say the service manager passed it, which a second call would take again.
#[allow(unsafe_code)]
pub unsafe fn take_environment() -> Environment {
    let notify_socket = std::env::var_os("NOTIFY_SOCKET");
    let listen_pid = std::env::var_os("LISTEN_PID");
    let listen_fds = std::env::var_os("LISTEN_FDS");
    let listen_fdnames = std::env::var_os("LISTEN_FDNAMES");
    for variable in VARIABLES {
        // SAFETY: the caller guarantees that no other thread exists that could read or write
        // the environment concurrently.
        unsafe { std::env::remove_var(variable) };
    }
    let notifier = match notify_socket {
        Some(address) => Notifier::to_address(&address),
        None => Ok(Notifier::disabled()),
    };
    let activation = match listen_request(
        listen_pid.as_deref(),
        listen_fds.as_deref(),
        std::process::id(),
    ) {
        Ok(true) => {
            // SAFETY: `$LISTEN_PID` is this process and `$LISTEN_FDS` is 1, so the service
            // manager opened descriptor 3 for it before exec and no code of this process has
            // claimed it (the caller calls this once, first thing in `main`); `take_socket`
            // checks that it is open before taking it, so no closed or reused number is owned.
            unsafe { take_socket(listen_fdnames.as_deref()) }
        }
        Ok(false) => Ok(None),
        Err(error) => Err(error),
    };
    Environment {
        notifier,
        activation,
    }
}

/// Whether the socket-activation variables pass exactly one descriptor to process `pid`.
fn listen_request(
    listen_pid: Option<&OsStr>,
    listen_fds: Option<&OsStr>,
    pid: u32,
) -> Result<bool, ActivationError> {
    // Without LISTEN_PID, or with another process's, nothing was passed to this one.
    let Some(listen_pid) = listen_pid else {
        return Ok(false);
    };
    if listen_pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(pid) {
        return Ok(false);
    }
    let value = listen_fds.unwrap_or_default();
    let count = value
        .to_str()
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| ActivationError::Variable {
            value: value.to_string_lossy().into_owned(),
        })?;
    match count {
        // Activated with nothing to serve: bind as configured, as sd_listen_fds returning 0 means.
        0 => Ok(false),
        1 => Ok(true),
        count => Err(ActivationError::TooMany { count }),
    }
}

/// Takes descriptor 3 as the activated socket, after checking that it is a listening Unix stream
/// socket with a path.
///
/// # Safety
///
/// Descriptor 3 must have been passed by the service manager and not be owned by anything else
/// in this process; this function is its owner from now on (it closes it on refusal).
#[allow(unsafe_code)]
unsafe fn take_socket(names: Option<&OsStr>) -> Result<Option<ActivatedSocket>, ActivationError> {
    let fd = LISTEN_FDS_START;
    // Whether the number is open at all, and what it is, without touching it: /proc says
    // "socket:[inode]" for a socket and the path for a file.
    let what = match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(target) => target,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(ActivationError::NotOpen);
        }
        Err(source) => return Err(ActivationError::Inspect { source }),
    };
    if !what.as_os_str().as_bytes().starts_with(b"socket:") {
        return Err(ActivationError::NotASocket {
            what: what.display().to_string(),
        });
    }
    // SAFETY: descriptor 3 is open (checked just above) and, by this function's contract, was
    // passed by the service manager and is owned by nothing else in this process.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Hosted writers run commands; they must not inherit the listening socket.
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|errno| ActivationError::Inspect {
        source: errno.into(),
    })?;
    use nix::sys::socket::{
        SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
    };
    let address = getsockname::<SockaddrStorage>(owned.as_raw_fd()).map_err(|errno| {
        ActivationError::Inspect {
            source: errno.into(),
        }
    })?;
    let Some(unix) = address.as_unix_addr() else {
        return Err(ActivationError::NotUnix {
            family: format!("{:?}", address.family()),
        });
    };
    let kind = getsockopt(&owned, sockopt::SockType).map_err(|errno| ActivationError::Inspect {
        source: errno.into(),
    })?;
    if kind != SockType::Stream {
        return Err(ActivationError::NotStream {
            kind: format!("{kind:?}"),
        });
    }
    let listening =
        getsockopt(&owned, sockopt::AcceptConn).map_err(|errno| ActivationError::Inspect {
            source: errno.into(),
        })?;
    if !listening {
        return Err(ActivationError::NotListening);
    }
    let Some(path) = unix.path() else {
        return Err(ActivationError::NoPath);
    };
    let listener = UnixListener::from(owned);
    Ok(Some(ActivatedSocket {
        listener,
        path: path.to_path_buf(),
        name: names
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(':').next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
    }))
}

/// The listening socket the service manager passed.
#[derive(Debug)]
pub struct ActivatedSocket {
    /// The socket, listening, close-on-exec.
    pub listener: UnixListener,
    /// Its path (the socket unit's `ListenStream=`).
    pub path: PathBuf,
    /// Its name (`FileDescriptorName=`, `--fdname`), when one was given.
    pub name: Option<String>,
}

/// Why the socket the service manager passed cannot be served. Each message says what the socket
/// is and which `shadowcopyd.socket` setting makes it one shadowcopyd serves.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivationError {
    /// `$LISTEN_FDS` is not a number.
    #[error(
        "socket activation: LISTEN_FDS={value:?} is not a number of file descriptors; start \
         shadowcopyd from shadowcopyd.socket, or without LISTEN_PID and LISTEN_FDS to bind \
         service.socket itself"
    )]
    Variable {
        /// The value.
        value: String,
    },
    /// More than one descriptor was passed.
    #[error(
        "socket activation: LISTEN_FDS={count} passes {count} sockets, but shadowcopyd serves \
         exactly one; give shadowcopyd.socket a single ListenStream= (by default \
         /run/shadowcopy/shadowcopyd.sock)"
    )]
    TooMany {
        /// How many.
        count: u32,
    },
    /// Descriptor 3 is not open.
    #[error(
        "socket activation: LISTEN_FDS=1 but file descriptor 3 is not open; the program that \
         started shadowcopyd closed it, or set LISTEN_PID and LISTEN_FDS without passing a \
         socket: start it from shadowcopyd.socket (or systemd-socket-activate)"
    )]
    NotOpen,
    /// Descriptor 3 is not a socket.
    #[error(
        "socket activation: file descriptor 3 is {what}, not a socket; start shadowcopyd from \
         shadowcopyd.socket, whose ListenStream= socket is passed as descriptor 3"
    )]
    NotASocket {
        /// What it is (its /proc/self/fd link).
        what: String,
    },
    /// Descriptor 3 is a socket of another family.
    #[error(
        "socket activation: file descriptor 3 is a {family} socket, but shadowcopyd serves a \
         Unix socket (every call is checked by its caller's SO_PEERCRED); set \
         ListenStream=/run/shadowcopy/shadowcopyd.sock in shadowcopyd.socket"
    )]
    NotUnix {
        /// Its address family.
        family: String,
    },
    /// Descriptor 3 is not a stream socket.
    #[error(
        "socket activation: file descriptor 3 is a {kind} socket, but shadowcopyd serves a \
         stream socket; use ListenStream=, not ListenDatagram= or ListenSequentialPacket=, in \
         shadowcopyd.socket"
    )]
    NotStream {
        /// Its type.
        kind: String,
    },
    /// Descriptor 3 is a stream socket that is not listening.
    #[error(
        "socket activation: file descriptor 3 is a connection, not a listening socket; \
         shadowcopyd serves every connection itself: set Accept=no in shadowcopyd.socket"
    )]
    NotListening,
    /// Descriptor 3 listens on an abstract or unnamed address.
    #[error(
        "socket activation: file descriptor 3 listens on an abstract or unnamed Unix address, \
         but hosted writers and clients connect by path; set \
         ListenStream=/run/shadowcopy/shadowcopyd.sock in shadowcopyd.socket"
    )]
    NoPath,
    /// Descriptor 3 could not be inspected.
    #[error("socket activation: cannot inspect file descriptor 3: {source}")]
    Inspect {
        /// Why.
        source: io::Error,
    },
}

/// Sends notifications to the service manager (`$NOTIFY_SOCKET`), or nothing without one.
pub struct Notifier {
    /// The socket's address and how `$NOTIFY_SOCKET` spelt it.
    target: Option<(SocketAddr, String)>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("socket", &self.target.as_ref().map(|(_, text)| text))
            .finish()
    }
}

/// Why `$NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "NOTIFY_SOCKET={address:?} is not a Unix socket path or @abstract name ({why}); shadowcopyd \
     sends no readiness notification, so a Type=notify unit waits for it until its start times \
     out: run shadowcopyd under a service manager that passes a Unix datagram socket, or as \
     Type=simple"
)]
pub struct NotifyError {
    /// The variable's value.
    pub address: String,
    /// Why it is refused.
    pub why: String,
}

impl Notifier {
    /// A notifier that sends nothing: no service manager asked for notifications.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// A notifier for the socket `address` names, as `$NOTIFY_SOCKET` does: an absolute path, or
    /// `@` and an abstract name.
    pub fn to_address(address: &OsStr) -> Result<Notifier, NotifyError> {
        let text = address.to_string_lossy().into_owned();
        let refuse = |why: String| NotifyError {
            address: text.clone(),
            why,
        };
        let bytes = address.as_bytes();
        let socket_address = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(address).map_err(|e| refuse(e.to_string()))?,
            Some(b'@') => {
                SocketAddr::from_abstract_name(&bytes[1..]).map_err(|e| refuse(e.to_string()))?
            }
            _ => {
                return Err(refuse(
                    "only path and abstract Unix sockets are supported, not vsock".into(),
                ));
            }
        };
        Ok(Notifier {
            target: Some((socket_address, text)),
        })
    }

    /// Whether notifications are sent anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The socket notifications go to, as `$NOTIFY_SOCKET` spelt it.
    pub fn address(&self) -> Option<&str> {
        self.target.as_ref().map(|(_, text)| text.as_str())
    }

    /// Sends `state`, newline-separated `KEY=value` assignments (`READY=1\nSTATUS=serving`), in
    /// one datagram; does nothing when notifications are disabled.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some((address, _)) = &self.target else {
            return Ok(());
        };
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), address)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    #[test]
    fn activation_is_for_this_process_only() {
        let me = std::process::id();
        let pid = |p: u32| OsString::from(p.to_string());
        let fds = |n: &str| OsString::from(n);
        assert!(!listen_request(None, Some(&fds("1")), me).unwrap());
        assert!(!listen_request(Some(&pid(me + 1)), Some(&fds("1")), me).unwrap());
        assert!(!listen_request(Some(&fds("nope")), Some(&fds("1")), me).unwrap());
        assert!(listen_request(Some(&pid(me)), Some(&fds("1")), me).unwrap());
        assert!(!listen_request(Some(&pid(me)), Some(&fds("0")), me).unwrap());
        let error = listen_request(Some(&pid(me)), Some(&fds("2")), me).unwrap_err();
        assert!(error.to_string().contains("exactly one"), "{error}");
        let error = listen_request(Some(&pid(me)), Some(&fds("x")), me).unwrap_err();
        assert!(error.to_string().contains("LISTEN_FDS=\"x\""), "{error}");
        let error = listen_request(Some(&pid(me)), None, me).unwrap_err();
        assert!(error.to_string().contains("LISTEN_FDS"), "{error}");
    }

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        let name = format!("shadowcopy-notify-test-{}", std::process::id());
        let abstract_socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::to_address(OsStr::new(&format!("@{name}"))).unwrap();
        assert!(notifier.is_enabled());
        notifier.notify("READY=1\nSTATUS=serving").unwrap();
        let mut buffer = [0u8; 256];
        let length = abstract_socket.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..length], b"READY=1\nSTATUS=serving");

        let path = std::env::temp_dir().join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&path);
        let path_socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to_address(path.as_os_str()).unwrap();
        notifier.notify("STOPPING=1").unwrap();
        let length = path_socket.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..length], b"STOPPING=1");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn unusable_notify_addresses_are_refused_and_none_is_silent() {
        let error = Notifier::to_address(OsStr::new("vsock:2:1234")).unwrap_err();
        assert!(error.to_string().contains("vsock"), "{error}");
        assert!(Notifier::to_address(OsStr::new("")).is_err());
        let disabled = Notifier::disabled();
        assert!(!disabled.is_enabled());
        disabled.notify("READY=1").unwrap();
    }
}
