//! The protocol version handshake (COMPAT-3): a header on every call, checked by the server, and `Hello`.
//!
//! Every request carries [`VERSION_HEADER`]`: MAJOR.MINOR`; [`VersionInterceptor`] adds it on the
//! client side. Every server runs [`check_version`] (or installs [`check_version_interceptor`]) before
//! it looks at a call: a missing header or another major version is refused with
//! `FAILED_PRECONDITION`, and the refusal carries the server's own version in the same header.
//! Any minor version of the same major is accepted, because minor versions only add calls, fields
//! and values that older peers ignore. The `Hello` call of every service tells a client the server's
//! minor version, so that it knows which additions it may use.

use std::fmt;
use std::str::FromStr;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::v1::{HelloReply, HelloRequest};
use crate::{PROTOCOL_MAJOR, PROTOCOL_MINOR, PROTOCOL_VERSION, VERSION_HEADER};

/// A protocol version, `MAJOR.MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolVersion {
    /// Changes only with an incompatible change; peers must agree on it.
    pub major: u32,
    /// Grows with every compatible addition.
    pub minor: u32,
}

impl ProtocolVersion {
    /// The version this crate speaks: [`PROTOCOL_MAJOR`].[`PROTOCOL_MINOR`].
    pub const CURRENT: ProtocolVersion = ProtocolVersion {
        major: PROTOCOL_MAJOR,
        minor: PROTOCOL_MINOR,
    };

    /// Whether a peer speaking `self` and a peer speaking `other` can talk: the majors are equal.
    pub const fn is_compatible_with(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The error of parsing a [`ProtocolVersion`] that is not `MAJOR.MINOR` in decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol version {0:?} is not MAJOR.MINOR, for example \"1.0\"")]
pub struct ParseVersionError(String);

impl FromStr for ProtocolVersion {
    type Err = ParseVersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseVersionError(text.to_owned());
        let (major, minor) = text.split_once('.').ok_or_else(error)?;
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error());
            }
            part.parse::<u32>().map_err(|_| error())
        };
        Ok(ProtocolVersion {
            major: number(major)?,
            minor: number(minor)?,
        })
    }
}

/// A client interceptor that adds [`VERSION_HEADER`] to every request.
///
/// Use it through [`versioned`], or with a generated client's `with_interceptor` constructor.
#[derive(Debug, Clone)]
pub struct VersionInterceptor {
    value: AsciiMetadataValue,
}

impl VersionInterceptor {
    /// An interceptor that announces the version this crate speaks.
    pub fn new() -> Self {
        VersionInterceptor {
            value: AsciiMetadataValue::from_static(PROTOCOL_VERSION),
        }
    }

    /// An interceptor that announces another version; for tests of version negotiation.
    pub fn with_version(version: ProtocolVersion) -> Self {
        VersionInterceptor {
            value: version
                .to_string()
                .parse()
                .expect("digits and a dot are valid ASCII metadata"),
        }
    }
}

impl Default for VersionInterceptor {
    fn default() -> Self {
        Self::new()
    }
}

impl Interceptor for VersionInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(VERSION_HEADER, self.value.clone());
        Ok(request)
    }
}

/// A channel whose every request carries [`VERSION_HEADER`]; what the generated clients should wrap.
pub type VersionedChannel = InterceptedService<Channel, VersionInterceptor>;

/// Wraps a channel so that every request on it carries [`VERSION_HEADER`].
///
/// ```no_run
/// # async fn demo(channel: tonic::transport::Channel) {
/// use shadowcopy_protocol::{v1::writer_client::WriterClient, versioned};
/// let client = WriterClient::new(versioned(channel));
/// # let _ = client;
/// # }
/// ```
pub fn versioned(channel: Channel) -> VersionedChannel {
    InterceptedService::new(channel, VersionInterceptor::new())
}

/// Checks the [`VERSION_HEADER`] of a request on the server side.
///
/// Refuses, with `FAILED_PRECONDITION` and a message that names both versions and what to do,
/// a request without the header, with a header that is not `MAJOR.MINOR`, or with another major
/// version. Any minor version is accepted. Call it first in every handler, or install
/// [`check_version_interceptor`] on the whole service.
pub fn check_version<T>(request: &Request<T>) -> Result<(), Status> {
    let Some(value) = request.metadata().get(VERSION_HEADER) else {
        return Err(refusal(format!(
            "the request carries no {VERSION_HEADER} header, so its protocol version is unknown; \
             this server speaks shadowcopy protocol {PROTOCOL_VERSION}: send \
             \"{VERSION_HEADER}: {PROTOCOL_VERSION}\" with every call \
             (shadowcopy_protocol::VersionInterceptor does this), or use a client built for \
             protocol {PROTOCOL_MAJOR}.x"
        )));
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(|text| text.parse::<ProtocolVersion>().ok());
    let Some(client) = parsed else {
        return Err(refusal(format!(
            "the {VERSION_HEADER} header {value:?} is not MAJOR.MINOR; this server speaks \
             shadowcopy protocol {PROTOCOL_VERSION}: send \"{VERSION_HEADER}: {PROTOCOL_VERSION}\" \
             with every call, or use a client built for protocol {PROTOCOL_MAJOR}.x"
        )));
    };
    check_major(client)
}

/// [`check_version`] in the shape of a server interceptor:
/// `WriterServer::with_interceptor(service, check_version_interceptor)`.
pub fn check_version_interceptor(request: Request<()>) -> Result<Request<()>, Status> {
    check_version(&request)?;
    Ok(request)
}

/// Checks the version stated in the body of a `Hello` call; the same rule as [`check_version`].
pub fn check_hello(request: &HelloRequest) -> Result<(), Status> {
    check_major(ProtocolVersion {
        major: request.protocol_major,
        minor: request.protocol_minor,
    })
}

/// The `Hello` request of a client called `client_name` (its name and version, for logs).
pub fn hello_request(client_name: impl Into<String>) -> HelloRequest {
    HelloRequest {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        client_name: client_name.into(),
    }
}

/// The `Hello` reply of a server called `server_version` (its name and version).
pub fn hello_reply(server_version: impl Into<String>) -> HelloReply {
    HelloReply {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        server_version: server_version.into(),
    }
}

/// Refuses a client whose major version differs from ours.
fn check_major(client: ProtocolVersion) -> Result<(), Status> {
    if client.is_compatible_with(ProtocolVersion::CURRENT) {
        return Ok(());
    }
    let advice = if client.major < PROTOCOL_MAJOR {
        format!("upgrade the client to one that speaks protocol {PROTOCOL_MAJOR}.x")
    } else {
        format!(
            "upgrade the server (shadowcopyd or the provider plug-in) to one that speaks \
             protocol {}.x, or use a client built for protocol {PROTOCOL_MAJOR}.x",
            client.major
        )
    };
    Err(refusal(format!(
        "the client speaks shadowcopy protocol {client} but this server speaks {PROTOCOL_VERSION}, \
         and the major versions must be equal: {advice}"
    )))
}

/// A `FAILED_PRECONDITION` refusal that also tells the client our version in [`VERSION_HEADER`].
fn refusal(message: String) -> Status {
    let mut status = Status::failed_precondition(message);
    status.metadata_mut().insert(
        VERSION_HEADER,
        AsciiMetadataValue::from_static(PROTOCOL_VERSION),
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_version_matches_the_constants() {
        assert_eq!(ProtocolVersion::CURRENT.to_string(), PROTOCOL_VERSION);
        assert_eq!(
            PROTOCOL_VERSION.parse::<ProtocolVersion>(),
            Ok(ProtocolVersion::CURRENT)
        );
    }

    #[test]
    fn parse_accepts_only_major_dot_minor() {
        assert_eq!(
            "12.034".parse::<ProtocolVersion>(),
            Ok(ProtocolVersion {
                major: 12,
                minor: 34
            })
        );
        for bad in [
            "", "1", "1.", ".0", "1.0.0", "v1.0", "1.-0", "+1.0", " 1.0", "1.0 ", "x.y",
        ] {
            assert!(bad.parse::<ProtocolVersion>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_header_is_refused_naming_our_version() {
        let error = check_version(&Request::new(())).unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert!(error.message().contains("no x-shadowcopy-protocol header"));
        assert!(error.message().contains(PROTOCOL_VERSION));
        assert_eq!(
            error.metadata().get(VERSION_HEADER).unwrap(),
            PROTOCOL_VERSION
        );
    }

    #[test]
    fn malformed_header_is_refused() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(VERSION_HEADER, AsciiMetadataValue::from_static("one"));
        let error = check_version(&request).unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert!(error.message().contains("\"one\""));
        assert!(error.message().contains("is not MAJOR.MINOR"));
    }

    #[test]
    fn interceptor_output_passes_the_check_and_other_minors_pass_too() {
        for version in [
            ProtocolVersion::CURRENT,
            ProtocolVersion {
                major: PROTOCOL_MAJOR,
                minor: PROTOCOL_MINOR + 7,
            },
        ] {
            let request = VersionInterceptor::with_version(version)
                .call(Request::new(()))
                .unwrap();
            assert!(check_version(&request).is_ok(), "{version}");
        }
    }

    #[test]
    fn other_majors_are_refused_with_advice_for_the_right_side() {
        let newer = ProtocolVersion {
            major: PROTOCOL_MAJOR + 1,
            minor: 0,
        };
        let request = VersionInterceptor::with_version(newer)
            .call(Request::new(()))
            .unwrap();
        let error = check_version(&request).unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert!(error.message().contains(&newer.to_string()));
        assert!(error.message().contains(PROTOCOL_VERSION));
        assert!(error.message().contains("upgrade the server"));

        let older = HelloRequest {
            protocol_major: 0,
            protocol_minor: 9,
            client_name: "old".into(),
        };
        let error = check_hello(&older).unwrap_err();
        assert!(error.message().contains("0.9"));
        assert!(error.message().contains("upgrade the client"));
        assert!(check_hello(&hello_request("test")).is_ok());
    }
}
