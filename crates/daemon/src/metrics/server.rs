//! The metrics endpoint: a small HTTP/1.1 server (hyper, already in the daemon through tonic) on a
//! TCP address or a Unix socket that answers `GET /metrics` and refuses everything else with a
//! status and a line that says what is served.
//!
//! Built to be left open on a port: one request per connection (Prometheus reconnects at each
//! scrape anyway), at most [`MAX_CONNECTIONS`] at once (more wait in the listen backlog), the
//! request head within [`HEAD_TIMEOUT`] and the whole exchange within [`CONNECTION_TIMEOUT`], so
//! that idle or slow clients cannot pile up.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::SetMetrics;
use super::text::CONTENT_TYPE as EXPOSITION;
use crate::config::MetricsListen;
use crate::state::Daemon;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may last, scrape included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The running endpoint; [`MetricsServer::stop`] ends it, dropping it aborts it. Either way a Unix
/// socket file it made is removed.
pub(crate) struct MetricsServer {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The Unix socket file, removed when the server goes.
    socket_file: Option<PathBuf>,
}

/// A bound listener of either kind.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl MetricsServer {
    /// Binds `listen` and serves on it. A Unix socket's directory is created, a stale socket file
    /// replaced (never a live one or another kind of file), and the socket made 0666: what it
    /// serves is what any local user could read from a loopback port. The error names the step
    /// that failed: "listen on", "create the directory of", "set the permissions of".
    pub(crate) async fn start(
        listen: &MetricsListen,
        daemon: Arc<Daemon>,
        sets: Arc<SetMetrics>,
    ) -> Result<MetricsServer, (&'static str, std::io::Error)> {
        let (listener, socket_file) = match listen {
            MetricsListen::Tcp(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|error| ("listen on", error))?;
                let bound = listener
                    .local_addr()
                    .map_or_else(|_| address.to_string(), |a| a.to_string());
                tracing::info!(listen = %bound, "metrics endpoint listening (GET /metrics)");
                (Listener::Tcp(listener), None)
            }
            MetricsListen::Unix(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|error| ("create the directory of", error))?;
                }
                let listener = shadowcopy_protocol::serve_unix_incoming(path)
                    .map_err(|error| ("listen on", error))?
                    .into_inner();
                if let Err(error) = std::fs::set_permissions(
                    path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o666),
                ) {
                    let _ = std::fs::remove_file(path);
                    return Err(("set the permissions of", error));
                }
                tracing::info!(listen = %listen, "metrics endpoint listening (GET /metrics)");
                (Listener::Unix(listener), Some(path.clone()))
            }
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept(listener, daemon, sets, stopped));
        Ok(MetricsServer {
            stop: Some(stop),
            task: Some(task),
            socket_file,
        })
    }

    /// Stops accepting, ends the connections being served and waits until all of it is gone.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::error!("the metrics endpoint's task ended abnormally: {error}");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(path) = &self.socket_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Accepts until told to stop; the connections still being served are aborted with the `JoinSet`.
async fn accept(
    listener: Listener,
    daemon: Arc<Daemon>,
    sets: Arc<SetMetrics>,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = &mut stopped => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            accepted = accept_one(&listener) => accepted,
        };
        match accepted {
            Ok(stream) => {
                let daemon = Arc::clone(&daemon);
                let sets = Arc::clone(&sets);
                connections.spawn(async move {
                    serve_connection(stream, daemon, sets).await;
                    drop(slot);
                });
            }
            Err(error) => {
                // Out of descriptors, say: pause rather than spin, and keep serving.
                tracing::warn!(%error, "metrics endpoint: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    connections.shutdown().await;
}

/// A stream of either kind.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

async fn accept_one(listener: &Listener) -> std::io::Result<Box<dyn Stream>> {
    Ok(match listener {
        Listener::Tcp(listener) => Box::new(listener.accept().await?.0),
        Listener::Unix(listener) => Box::new(listener.accept().await?.0),
    })
}

/// One connection, one request.
async fn serve_connection(stream: Box<dyn Stream>, daemon: Arc<Daemon>, sets: Arc<SetMetrics>) {
    let service = service_fn(move |request| {
        let daemon = Arc::clone(&daemon);
        let sets = Arc::clone(&sets);
        async move { Ok::<_, Infallible>(respond(&request, &daemon, &sets).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "metrics endpoint: connection failed"),
        Err(_) => tracing::debug!(
            "metrics endpoint: a connection outlasted {} s and was closed",
            CONNECTION_TIMEOUT.as_secs()
        ),
    }
}

/// `GET /metrics` is the exposition; any other path is 404 and any other method 405, each with a
/// line that says what is served here.
async fn respond(
    request: &Request<Incoming>,
    daemon: &Daemon,
    sets: &SetMetrics,
) -> Response<String> {
    let path = request.uri().path();
    if path != "/metrics" {
        tracing::debug!(method = %request.method(), path, "metrics endpoint: not found");
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "{path} is not served here: shadowcopyd's metrics endpoint serves only GET \
                 /metrics\n"
            ),
        );
    }
    if request.method() != Method::GET {
        tracing::debug!(method = %request.method(), "metrics endpoint: method not allowed");
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not allowed on /metrics: shadowcopyd's metrics endpoint serves only GET \
                 /metrics\n",
                request.method()
            ),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    let mut response = Response::new(super::render(daemon, sets).await);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(EXPOSITION));
    response
}

/// A plain-text answer with this status.
fn plain(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
