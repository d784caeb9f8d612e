//! gRPC over a Unix socket: connecting, listening, and the peer credentials of a call (SEC-1, SEC-4).
//!
//! The daemon listens on [`DEFAULT_SOCKET`](crate::DEFAULT_SOCKET) unless configured otherwise,
//! and provider plug-ins listen on sockets of their own. The server side learns who called from the
//! socket's SO_PEERCRED, which tonic attaches to every request; [`peer_credentials`] reads it.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::Request;
use tonic::transport::server::UdsConnectInfo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why [`connect_unix`] could not reach a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Nothing exists at the socket path.
    #[error(
        "cannot connect to {}: the socket does not exist; start shadowcopyd \
         (`systemctl start shadowcopyd`) or pass the socket it listens on with --socket",
        path.display()
    )]
    Missing {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket file exists but nobody accepts connections on it.
    #[error(
        "cannot connect to {}: connection refused, so no server is listening there (a stale \
         socket file or not a socket); start shadowcopyd (`systemctl start shadowcopyd`) or \
         check --socket",
        path.display()
    )]
    Refused {
        /// The socket path.
        path: PathBuf,
    },
    /// The caller may not open the socket.
    #[error(
        "cannot connect to {}: permission denied; run as root or as a member of the backup \
         group configured for shadowcopyd",
        path.display()
    )]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// Another I/O error, for example a path longer than a socket address allows.
    #[error("cannot connect to {}; check --socket", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The socket accepted the connection but the HTTP/2 handshake of gRPC failed.
    #[error(
        "connected to {} but the gRPC handshake failed; is this the socket of shadowcopyd? \
         check --socket",
        path.display()
    )]
    Handshake {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: tonic::transport::Error,
    },
}

impl ConnectError {
    /// The socket path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConnectError::Missing { path }
            | ConnectError::Refused { path }
            | ConnectError::PermissionDenied { path }
            | ConnectError::Io { path, .. }
            | ConnectError::Handshake { path, .. } => path,
        }
    }

    fn from_io(path: &Path, source: io::Error) -> Self {
        let path = path.to_owned();
        match source.kind() {
            io::ErrorKind::NotFound => ConnectError::Missing { path },
            io::ErrorKind::ConnectionRefused => ConnectError::Refused { path },
            io::ErrorKind::PermissionDenied => ConnectError::PermissionDenied { path },
            _ => ConnectError::Io { path, source },
        }
    }
}

/// Opens a gRPC channel to the server listening on the Unix socket `path`.
///
/// The first connection is made here, so that a missing socket or a dead server is reported at
/// once, with the path and what to do. If the connection breaks later, the channel reconnects to the
/// same path on the next call. Wrap the channel with [`versioned`](crate::versioned) before handing
/// it to a generated client, so that every call carries the version header.
pub async fn connect_unix(path: &Path) -> Result<Channel, ConnectError> {
    let first = UnixStream::connect(path)
        .await
        .map_err(|error| ConnectError::from_io(path, error))?;
    let first = Arc::new(Mutex::new(Some(first)));
    let socket = path.to_owned();
    let connector = tower::service_fn(move |_: Uri| {
        let first = Arc::clone(&first);
        let socket = socket.clone();
        async move {
            // Take the connection made above, if it is still unused; reconnect otherwise.
            let ready = first
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .take();
            let stream = match ready {
                Some(stream) => stream,
                None => UnixStream::connect(&socket).await?,
            };
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    // The URI is required by the HTTP/2 layer but never resolved: the connector ignores it.
    Endpoint::from_static("http://shadowcopyd.invalid")
        .connect_with_connector(connector)
        .await
        .map_err(|source| ConnectError::Handshake {
            path: path.to_owned(),
            source,
        })
}

/// Listens on the Unix socket `path` and returns the stream of incoming connections, for
/// `tonic::transport::Server::serve_with_incoming`.
///
/// A stale socket file left by a server that died is removed first. A socket that a live server
/// still accepts on is left alone and reported as [`io::ErrorKind::AddrInUse`], and a path that is
/// not a socket is never removed ([`io::ErrorKind::AlreadyExists`]). The parent directory must
/// exist; its permissions and the socket's are the caller's business. Call it inside a Tokio
/// runtime.
pub fn serve_unix_incoming(path: impl AsRef<Path>) -> io::Result<UnixListenerStream> {
    let path = path.as_ref();
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "another server is already listening on {}; stop it first or \
                             choose another socket path",
                            path.display()
                        ),
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it, remove it or choose \
                     another socket path",
                    path.display()
                ),
            ));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    Ok(UnixListenerStream::new(UnixListener::bind(path)?))
}

/// Who is on the other end of a Unix-socket call, from SO_PEERCRED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
    /// The peer's process id, when the kernel reports it.
    pub pid: Option<i32>,
}

/// The credentials of the process that made `request`, when it came over a Unix socket served
/// with [`serve_unix_incoming`]; `None` for other transports.
///
/// The credentials are those of the process that opened the connection, taken when it connected.
pub fn peer_credentials<T>(request: &Request<T>) -> Option<PeerCredentials> {
    let credentials = request
        .extensions()
        .get::<UdsConnectInfo>()?
        .peer_cred
        .as_ref()?;
    Some(PeerCredentials {
        uid: credentials.uid(),
        gid: credentials.gid(),
        pid: credentials.pid(),
    })
}
