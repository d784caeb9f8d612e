//! The public entry points [`run`] and [`run_until`]: validate the WMD, connect, say Hello,
//! register, serve the stream (see `server.rs`), and reconnect when asked to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{WriterInstanceId, WriterMetadata};
use shadowcopy_protocol::v1::coordinator_event::Event;
use shadowcopy_protocol::v1::writer_client::WriterClient;
use shadowcopy_protocol::v1::writer_message::Message;
use shadowcopy_protocol::v1::{self, CoordinatorEvent, WriterMessage};
use shadowcopy_protocol::{
    ProtocolVersion, VersionedChannel, connect_unix, hello_request, versioned,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::Instrument;

use crate::error::SdkError;
use crate::options::WriterOptions;
use crate::server::{End, Server, event_name};
use crate::writer::Writer;

/// How long Hello, Connect and Registered may take together before the attempt counts as failed.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The first and the longest wait between reconnection attempts ([`WriterOptions::reconnect`]).
const RECONNECT_DELAYS: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_secs(30));

/// The future that tells the runtime to stop.
pub(crate) type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `writer` until the coordinator goes away (or forever with
/// [`WriterOptions::reconnect`]): connects to `options.socket`, checks the protocol version with
/// Hello, registers the WMD, and answers every event with the writer's handlers.
///
/// Returns `Err(SdkError::CoordinatorGone)` when the stream ends and `reconnect` is off; any backup
/// in progress has then been aborted (the writer thawed) already. Must be called inside a Tokio
/// runtime; use a multi-threaded one, so that a handler that blocks cannot hold up the freeze timer.
pub async fn run<W: Writer>(writer: W, options: WriterOptions) -> Result<(), SdkError> {
    run_until(writer, options, std::future::pending()).await
}

/// [`run`] until `shutdown` completes, for example `tokio::signal::ctrl_c()`; then returns `Ok(())`.
///
/// On shutdown the writer stops reading events, lets the running handler finish (a running
/// Identify is stopped instead: it changes no state, ROLE-6), aborts every backup that is in
/// progress (so that it is never left frozen, architecture §8), and closes the stream, which
/// tells the coordinator that the writer is gone.
pub async fn run_until<W, F>(writer: W, options: WriterOptions, shutdown: F) -> Result<(), SdkError>
where
    W: Writer,
    F: Future<Output = ()> + Send + 'static,
{
    run_inner(Arc::new(writer), options, Box::pin(shutdown), None).await
}

/// The body of [`run_until`]; `registered` learns the instance id while the writer is registered.
pub(crate) async fn run_inner<W: Writer>(
    writer: Arc<W>,
    options: WriterOptions,
    mut shutdown: Shutdown,
    registered: Option<watch::Sender<Option<WriterInstanceId>>>,
) -> Result<(), SdkError> {
    let wmd = registration_wmd(writer.metadata(), &options)?;
    let name = wmd.identity.writer_name.clone();
    let span = tracing::info_span!("writer", writer = %name, socket = %options.socket.display());
    let mut delay = RECONNECT_DELAYS.0;
    loop {
        let attempt = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            attempt = register(&options, &wmd).instrument(span.clone()) => attempt,
        };
        match attempt {
            Ok(connection) => {
                delay = RECONNECT_DELAYS.0;
                let instance_id = connection.instance_id;
                span.in_scope(|| tracing::info!(instance = %instance_id, "registered"));
                if let Some(registered) = &registered {
                    registered.send_replace(Some(instance_id));
                }
                let server = Server::new(Arc::clone(&writer), &options, wmd.clone(), &connection);
                let end = server
                    .serve(connection, &mut shutdown)
                    .instrument(span.clone())
                    .await;
                if let Some(registered) = &registered {
                    registered.send_replace(None);
                }
                match end {
                    End::Shutdown => return Ok(()),
                    End::Gone(reason) if options.reconnect => {
                        span.in_scope(|| {
                            tracing::warn!(%reason, "lost the coordinator; reconnecting");
                        });
                    }
                    End::Gone(reason) => return Err(SdkError::CoordinatorGone { reason }),
                }
            }
            Err(error) if options.reconnect && error.is_transient() => {
                span.in_scope(|| {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis(), "cannot register");
                });
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT_DELAYS.1);
    }
}

/// The WMD as it is registered: the options' instance name written in, and validated, so that a
/// broken document is reported here rather than refused by the coordinator.
fn registration_wmd(
    mut wmd: WriterMetadata,
    options: &WriterOptions,
) -> Result<WriterMetadata, SdkError> {
    apply_instance_name(&mut wmd, options)?;
    wmd.check().map_err(SdkError::InvalidMetadata)?;
    Ok(wmd)
}

/// Writes the options' instance name into the WMD; Register requires the two to agree (ROLE-7).
pub(crate) fn apply_instance_name(
    wmd: &mut WriterMetadata,
    options: &WriterOptions,
) -> Result<(), SdkError> {
    match (&options.instance_name, &wmd.identity.instance_name) {
        (Some(wanted), Some(found)) if wanted != found => Err(SdkError::InvalidOptions(format!(
            "the options name instance {wanted:?} but the writer's metadata names {found:?}; \
             they must agree (ROLE-7)"
        ))),
        (Some(wanted), None) => {
            wmd.identity.instance_name = Some(wanted.clone());
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A registered stream.
pub(crate) struct Connection {
    /// Kept so that the channel lives as long as the stream.
    pub(crate) _client: WriterClient<VersionedChannel>,
    /// The writer's half of the stream: every EventResult goes here.
    pub(crate) replies: mpsc::UnboundedSender<WriterMessage>,
    /// The coordinator's half.
    pub(crate) events: tonic::Streaming<CoordinatorEvent>,
    /// What Registered assigned (ROLE-7).
    pub(crate) instance_id: WriterInstanceId,
}

/// Connects, says Hello, opens Connect with Register and waits for Registered.
async fn register(options: &WriterOptions, wmd: &WriterMetadata) -> Result<Connection, SdkError> {
    let attempt = async {
        let channel = connect_unix(&options.socket).await?;
        let mut client = WriterClient::new(versioned(channel));
        let client_name = format!(
            "shadowcopy-writer-sdk {} ({})",
            env!("CARGO_PKG_VERSION"),
            wmd.identity.writer_name
        );
        let hello = client
            .hello(hello_request(client_name))
            .await
            .map_err(|status| SdkError::Refused {
                call: "Hello",
                status,
            })?
            .into_inner();
        let server = ProtocolVersion {
            major: hello.protocol_major,
            minor: hello.protocol_minor,
        };
        if !ProtocolVersion::CURRENT.is_compatible_with(server) {
            return Err(SdkError::ProtocolVersion { server });
        }
        let (replies, outgoing) = mpsc::unbounded_channel();
        let register = v1::Register {
            wmd_json: wmd.to_canonical_json(),
            application_level: options.application_level.value(),
            freeze_timeout_ms: options.freeze_timeout_ms(),
            subscribe_mask: options.subscribe_mask.bits(),
            instance_name: wmd.identity.instance_name.clone(),
        };
        // The first message must be Register (writer.proto); it waits in the channel until the
        // request stream starts.
        let _ = replies.send(WriterMessage {
            message: Some(Message::Register(register)),
        });
        let refused = |status| SdkError::Refused {
            call: "Connect",
            status,
        };
        let mut events = client
            .connect(UnboundedReceiverStream::new(outgoing))
            .await
            .map_err(refused)?
            .into_inner();
        let first = events.message().await.map_err(refused)?;
        let instance_id = match first {
            Some(CoordinatorEvent {
                event: Some(Event::Registered(registered)),
                ..
            }) => registered
                .writer_instance_id
                .parse::<WriterInstanceId>()
                .map_err(|error| {
                    SdkError::Protocol(format!(
                        "Registered carried the instance id {:?}, which is not a GUID: {error}",
                        registered.writer_instance_id
                    ))
                })?,
            Some(other) => {
                return Err(SdkError::Protocol(format!(
                    "the first event on the stream was {}, not Registered",
                    event_name(other.event.as_ref())
                )));
            }
            None => {
                return Err(SdkError::CoordinatorGone {
                    reason: "the stream ended before Registered arrived".into(),
                });
            }
        };
        Ok(Connection {
            _client: client,
            replies,
            events,
            instance_id,
        })
    };
    tokio::time::timeout(REGISTER_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(SdkError::CoordinatorGone {
                reason: format!(
                    "no answer to Hello and Register within {} s",
                    REGISTER_TIMEOUT.as_secs()
                ),
            })
        })
}
