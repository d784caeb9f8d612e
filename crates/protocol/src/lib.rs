//! The gRPC protocol between `shadowcopyd` and its requesters, writers, admin tools and provider plug-ins.
//!
//! The contract is the set of `.proto` files under `proto/shadowcopy/v1` (package `shadowcopy.v1`),
//! explained call by call in `docs/protocol.md`.
//! This crate holds
//! - the code generated from them, clients and servers of the four services, in [`v1`],
//! - the version handshake: the [`VERSION_HEADER`] that [`VersionInterceptor`] adds to every call
//!   and that [`check_version`] checks on the server ([`version`]),
//! - the Unix-socket transport: [`connect_unix`], [`serve_unix_incoming`] and
//!   [`peer_credentials`] for the SO_PEERCRED checks ([`transport`]),
//! - the bridge between the VSS result codes of [`shadowcopy_metadata::codes`] and the wire:
//!   the in-band [`v1::Status`] and, for refused calls, [`tonic::Status`] ([`status`]).
//!
//! A client in three lines:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use shadowcopy_protocol::{connect_unix, versioned, v1, DEFAULT_SOCKET};
//! let channel = connect_unix(DEFAULT_SOCKET.as_ref()).await?;
//! let mut admin = v1::admin_client::AdminClient::new(versioned(channel));
//! let status = admin.get_status(v1::GetStatusRequest {}).await?.into_inner();
//! # let _ = status;
//! # Ok(())
//! # }
//! ```

pub mod status;
pub mod transport;
pub mod version;

/// The code generated from `proto/shadowcopy/v1/*.proto`: messages, and a client module and a
/// server module per service (`requester_client`, `writer_server`, ...).
///
/// The documentation of every item is the comment in the `.proto` file.
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod v1 {
    tonic::include_proto!("shadowcopy.v1");
}

pub use status::{
    VSS_CODE_HEADER, error_code_of, error_code_of_grpc, grpc_code, grpc_status, reply_status,
    status_ok, to_grpc_status,
};
pub use transport::{
    ConnectError, PeerCredentials, connect_unix, peer_credentials, serve_unix_incoming,
};
pub use version::{
    ProtocolVersion, VersionInterceptor, VersionedChannel, check_hello, check_version,
    check_version_interceptor, hello_reply, hello_request, versioned,
};

/// The protocol major version this crate speaks. Peers with another major version are refused.
pub const PROTOCOL_MAJOR: u32 = 1;

/// The protocol minor version this crate speaks. Minor versions only add; any minor is accepted.
pub const PROTOCOL_MINOR: u32 = 0;

/// [`PROTOCOL_MAJOR`] and [`PROTOCOL_MINOR`] as the text of the [`VERSION_HEADER`].
pub const PROTOCOL_VERSION: &str = "1.0";

/// The Unix socket `shadowcopyd` listens on unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/shadowcopy/shadowcopyd.sock";

/// The largest message, in bytes, that clients and servers of this protocol must accept.
///
/// WMDs and BCDs travel inside messages and can exceed tonic's default limit of 4 MiB, so every
/// generated client and server should be built with `.max_decoding_message_size(MAX_MESSAGE_SIZE)`.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The request header that carries the client's protocol version, `MAJOR.MINOR`, on every call.
pub const VERSION_HEADER: &str = "x-shadowcopy-protocol";
