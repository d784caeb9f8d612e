//! The connection to `shadowcopyd`: one channel, checked with `Hello`, from which sessions and the
//! admin wrapper are made.

use std::path::Path;
use std::sync::Arc;

use shadowcopy_metadata::codes;
use shadowcopy_protocol::v1::admin_client::AdminClient;
use shadowcopy_protocol::v1::requester_client::RequesterClient;
use shadowcopy_protocol::{
    DEFAULT_SOCKET, MAX_MESSAGE_SIZE, PROTOCOL_MAJOR, ProtocolVersion, VersionedChannel,
    connect_unix, hello_request, versioned,
};
use tonic::transport::Channel;

use crate::admin::Admin;
use crate::backup::BackupSession;
use crate::error::RequesterError;
use crate::restore::RestoreSession;
use crate::session::SessionCore;

/// The name this library gives itself in `Hello`, for the daemon's logs.
const CLIENT_NAME: &str = concat!("shadowcopy-requester ", env!("CARGO_PKG_VERSION"));

/// What the daemon said about itself in `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The protocol version the daemon speaks; its minor version bounds what this client may use
    /// (COMPAT-3).
    pub protocol: ProtocolVersion,
    /// The daemon's name and version, for example `shadowcopyd 0.1.0`.
    pub server_version: String,
}

/// A connection to `shadowcopyd`.
///
/// [`Client::connect`] opens the socket once and checks the protocol version with `Hello`. The
/// client is cheap to clone; every session and the admin wrapper share its connection, as HTTP/2
/// streams. If the connection breaks, the next session reconnects to the same socket.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    socket: Arc<Path>,
    server: ServerInfo,
}

impl Client {
    /// Connects to the daemon listening on `socket` and says `Hello` to its Requester service.
    ///
    /// Fails with [`RequesterError::Connect`] naming the socket when nothing listens there or the
    /// caller may not open it, and with [`RequesterError::VersionMismatch`] when the daemon speaks
    /// another protocol major version.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Client, RequesterError> {
        Self::connect_as(socket, CLIENT_NAME).await
    }

    /// [`Client::connect`] to [`DEFAULT_SOCKET`], `/run/shadowcopy/shadowcopyd.sock`.
    pub async fn connect_default() -> Result<Client, RequesterError> {
        Self::connect(DEFAULT_SOCKET).await
    }

    /// [`Client::connect`], naming the calling program in `Hello` (its name and version, which the
    /// daemon logs).
    pub async fn connect_as(
        socket: impl AsRef<Path>,
        client_name: &str,
    ) -> Result<Client, RequesterError> {
        let socket = socket.as_ref();
        let channel = connect_unix(socket).await?;
        let mut requester = requester_client(&channel);
        let reply = requester
            .hello(hello_request(client_name))
            .await
            .map_err(|status| hello_error(socket, status))?
            .into_inner();
        let protocol = ProtocolVersion {
            major: reply.protocol_major,
            minor: reply.protocol_minor,
        };
        // The daemon checks our major version too, but a daemon that answers with another major
        // would misread every later message, so refuse before the first session (COMPAT-3).
        if protocol.major != PROTOCOL_MAJOR {
            return Err(RequesterError::VersionMismatch {
                socket: socket.to_owned(),
                server: protocol.to_string(),
                detail: reply.server_version,
            });
        }
        tracing::debug!(
            socket = %socket.display(),
            server = %reply.server_version,
            protocol = %protocol,
            "connected to shadowcopyd"
        );
        Ok(Client {
            channel,
            socket: socket.into(),
            server: ServerInfo {
                protocol,
                server_version: reply.server_version,
            },
        })
    }

    /// The socket this client is connected to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the daemon said about itself in `Hello`.
    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// Opens a new session for one backup (ROLE-12): one `Requester.Session` stream.
    ///
    /// The first call must be [`BackupSession::initialize_for_backup`] (BK-INIT-1).
    pub async fn backup_session(&self) -> Result<BackupSession, RequesterError> {
        Ok(BackupSession::new(SessionCore::open(self).await?))
    }

    /// Opens a new session for one restore (ROLE-12): one `Requester.Session` stream.
    ///
    /// The first call must be [`RestoreSession::initialize_for_restore`] (RST-INIT-1).
    pub async fn restore_session(&self) -> Result<RestoreSession, RequesterError> {
        Ok(RestoreSession::new(SessionCore::open(self).await?))
    }

    /// The Admin service: listings, deletion, exposure, revert and the daemon's status.
    pub fn admin(&self) -> Admin {
        let client = AdminClient::new(versioned(self.channel.clone()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        Admin::new(client, self.socket.clone())
    }

    /// A generated Requester client on this connection.
    pub(crate) fn requester(&self) -> RequesterClient<VersionedChannel> {
        requester_client(&self.channel)
    }
}

/// The error for a failed `Hello`: a socket that does not serve the Requester service is most
/// likely not shadowcopyd's, for example a provider plug-in's (docs/protocol.md §1).
fn hello_error(socket: &Path, status: tonic::Status) -> RequesterError {
    if status.code() == tonic::Code::Unimplemented {
        return RequesterError::Refused {
            socket: socket.to_owned(),
            call: "Hello",
            code: &codes::E_NOTIMPL,
            message: "the socket does not serve the Requester service".to_owned(),
            hint: format!(
                "check that this is the socket of shadowcopyd (its --socket option, by default \
                 {DEFAULT_SOCKET}), not one of a provider plug-in"
            ),
        };
    }
    RequesterError::from_grpc(socket, "Hello", status)
}

/// A Requester client that carries the version header and accepts messages up to
/// [`MAX_MESSAGE_SIZE`], because WMDs and BCDs travel inside them (docs/protocol.md §1).
fn requester_client(channel: &Channel) -> RequesterClient<VersionedChannel> {
    RequesterClient::new(versioned(channel.clone()))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}
