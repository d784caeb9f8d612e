//! One `Requester.Session` stream: request ids, one call at a time, answers, release, and cancel.
//!
//! docs/protocol.md §4.1: each request carries a `request_id` unique in the session and gets
//! exactly one response with the same id; the daemon answers in order; `Cancel` is answered at
//! once, out of turn; the end of the stream releases the session (BK-END-4, BK-END-6).
//! [`SessionCore`] holds the stream for [`BackupSession`](crate::BackupSession) and
//! [`RestoreSession`](crate::RestoreSession), which take `&mut self` for every call so that two
//! calls never overlap on one session.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shadowcopy_metadata::json::Document;
use shadowcopy_metadata::{BackupComponents, WriterInstanceId, WriterMetadata, codes};
use shadowcopy_protocol::reply_status;
use shadowcopy_protocol::v1::requester_request::Call;
use shadowcopy_protocol::v1::requester_response::Result as Reply;
use shadowcopy_protocol::v1::{self, RequesterRequest, RequesterResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::Client;
use crate::error::RequesterError;
use crate::types::{self, WriterStatus};

/// How many requests may wait to be written to the stream. One call is in flight at a time, and
/// a `Cancel` may join it.
const QUEUE: usize = 4;

/// What the session and its [`Canceller`]s share: the request-id counter, and the ids of `Cancel`
/// requests whose answers the session must skip.
#[derive(Debug)]
struct Shared {
    next_id: AtomicU64,
    cancels: Mutex<HashSet<u64>>,
}

impl Shared {
    /// A fresh request id. Ids start at 1 and only grow, so an answer with a smaller id than the
    /// one awaited belongs to an earlier call whose future was dropped before its answer came.
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `id` is a `Cancel` request; forgets it, since it is answered exactly once.
    fn take_cancel(&self, id: u64) -> bool {
        self.cancels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&id)
    }
}

/// The stream of one requester session.
#[derive(Debug)]
pub(crate) struct SessionCore {
    // Declared before `responses` so that it is dropped first: the daemon then sees our half end
    // cleanly before the response stream is reset, and releases the session (BK-END-6).
    /// Our half of the stream; `None` once it has been closed.
    requests: Option<mpsc::Sender<RequesterRequest>>,
    /// The daemon's half.
    responses: Streaming<RequesterResponse>,
    /// Ids and pending cancels.
    shared: Arc<Shared>,
    /// The daemon's socket, for messages.
    socket: PathBuf,
}

impl SessionCore {
    /// Opens a `Session` stream. A refused stream (access denied, wrong version) fails here,
    /// before any call: the daemon accepts or refuses the stream when it opens (docs/protocol.md
    /// §1.1), and its answer's headers come before any request is read.
    pub(crate) async fn open(client: &Client) -> Result<Self, RequesterError> {
        let (requests, outbound) = mpsc::channel(QUEUE);
        let response = client
            .requester()
            .session(ReceiverStream::new(outbound))
            .await
            .map_err(|status| RequesterError::from_grpc(client.socket(), "Session", status))?;
        Ok(SessionCore {
            requests: Some(requests),
            responses: response.into_inner(),
            shared: Arc::new(Shared {
                next_id: AtomicU64::new(1),
                cancels: Mutex::new(HashSet::new()),
            }),
            socket: client.socket().to_owned(),
        })
    }

    /// The daemon's socket.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// A handle that cancels the asynchronous call running in this session.
    pub(crate) fn canceller(&self) -> Canceller {
        Canceller {
            requests: self.requests.as_ref().map(mpsc::Sender::downgrade),
            shared: Arc::clone(&self.shared),
            socket: self.socket.clone(),
        }
    }

    /// Sends one call and waits for its answer: the typed result on success, `None` when a
    /// successful answer carries none.
    pub(crate) async fn call(
        &mut self,
        name: &'static str,
        call: Call,
    ) -> Result<Option<Reply>, RequesterError> {
        let id = self.shared.next_id();
        let Some(requests) = &self.requests else {
            return Err(RequesterError::disconnected(
                &self.socket,
                name,
                "the session was already released",
            ));
        };
        tracing::debug!(request_id = id, call = name, "requester call");
        let request = RequesterRequest {
            request_id: id,
            call: Some(call),
        };
        if requests.send(request).await.is_err() {
            // The transport stopped reading our half, so the stream is over; the daemon's half
            // says why.
            return Err(self.ended(name).await);
        }
        loop {
            let response = match self.responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(RequesterError::disconnected(
                        &self.socket,
                        name,
                        "shadowcopyd ended the session without answering",
                    ));
                }
                Err(status) => return Err(RequesterError::from_grpc(&self.socket, name, status)),
            };
            if self.is_stale(&response, id) {
                continue;
            }
            if response.request_id != id {
                return Err(RequesterError::protocol(
                    &self.socket,
                    name,
                    format!(
                        "the answer carries request_id {} but the call had request_id {id}, and \
                         no other request was outstanding",
                        response.request_id
                    ),
                ));
            }
            return outcome(name, response);
        }
    }

    /// A call whose result is `Empty`.
    pub(crate) async fn call_empty(
        &mut self,
        name: &'static str,
        call: Call,
    ) -> Result<(), RequesterError> {
        match self.call(name, call).await? {
            // The proto sets `Empty` on success; an answer without a result says no less.
            None | Some(Reply::Empty(_)) => Ok(()),
            other => Err(self.wrong_result(name, "Empty", &other)),
        }
    }

    /// GatherWriterMetadata (B5, R3): every WMD, parsed and validated (docs/protocol.md §3).
    pub(crate) async fn gather_writer_metadata(
        &mut self,
    ) -> Result<Vec<WriterMetadata>, RequesterError> {
        const NAME: &str = "GatherWriterMetadata";
        let call = Call::GatherWriterMetadata(v1::GatherWriterMetadata {});
        let list = match self.call(NAME, call).await? {
            Some(Reply::WriterMetadata(list)) => list,
            other => return Err(self.wrong_result(NAME, "WriterMetadataList", &other)),
        };
        let mut writers = Vec::with_capacity(list.writers.len());
        for entry in list.writers {
            let what = || {
                format!(
                    "the writer metadata document of writer instance {}",
                    entry.writer_instance_id
                )
            };
            let wmd = WriterMetadata::from_json(&entry.wmd_json).map_err(|source| {
                RequesterError::InvalidDocument {
                    call: NAME,
                    what: what(),
                    source,
                }
            })?;
            let instance: WriterInstanceId =
                types::id("writer_instance_id", &entry.writer_instance_id)
                    .map_err(|message| RequesterError::protocol(&self.socket, NAME, message))?;
            // The daemon writes the instance id it assigned into every WMD it hands out
            // (docs/protocol.md §5.1); a mismatch would key components to the wrong writer.
            if wmd.identity.instance_id != instance {
                return Err(RequesterError::protocol(
                    &self.socket,
                    NAME,
                    format!(
                        "{} says its instance id is {}",
                        what(),
                        wmd.identity.instance_id
                    ),
                ));
            }
            writers.push(wmd);
        }
        Ok(writers)
    }

    /// GatherWriterStatus (B10, B14, R6, R9).
    pub(crate) async fn gather_writer_status(
        &mut self,
    ) -> Result<Vec<WriterStatus>, RequesterError> {
        const NAME: &str = "GatherWriterStatus";
        let call = Call::GatherWriterStatus(v1::GatherWriterStatus {});
        let list = match self.call(NAME, call).await? {
            Some(Reply::WriterStatus(list)) => list,
            other => return Err(self.wrong_result(NAME, "WriterStatusList", &other)),
        };
        list.writers
            .into_iter()
            .map(WriterStatus::from_proto)
            .collect::<Result<_, _>>()
            .map_err(|message| RequesterError::protocol(&self.socket, NAME, message))
    }

    /// GetBackupComponents: the session's BCD, parsed and validated.
    pub(crate) async fn backup_components(&mut self) -> Result<BackupComponents, RequesterError> {
        const NAME: &str = "GetBackupComponents";
        let call = Call::GetBackupComponents(v1::GetBackupComponents {});
        let document = match self.call(NAME, call).await? {
            Some(Reply::BackupComponents(document)) => document,
            other => return Err(self.wrong_result(NAME, "BackupComponentsDocument", &other)),
        };
        BackupComponents::from_json(&document.bcd_json).map_err(|source| {
            RequesterError::InvalidDocument {
                call: NAME,
                what: "the session's backup components document".to_owned(),
                source,
            }
        })
    }

    /// The error for a success answer with another result than the call has.
    pub(crate) fn wrong_result(
        &self,
        name: &'static str,
        expected: &str,
        got: &Option<Reply>,
    ) -> RequesterError {
        RequesterError::protocol(
            &self.socket,
            name,
            format!(
                "the successful answer carries {} instead of the {expected} result",
                result_name(got)
            ),
        )
    }

    /// Closes our half of the stream and waits until the daemon ends its half.
    ///
    /// Closing our half is the release (docs/protocol.md §4.1, BK-END-4): the daemon aborts what
    /// runs, sends BackupShutdown and deletes the auto-release shadow copies. When this returns
    /// `Ok`, the daemon has read the end of the session and ended the stream cleanly.
    pub(crate) async fn release(mut self) -> Result<(), RequesterError> {
        drop(self.requests.take());
        loop {
            match self.responses.message().await {
                // Late answers to dropped calls or to a Cancel; nothing waits for them now.
                Ok(Some(response)) => {
                    tracing::debug!(
                        request_id = response.request_id,
                        "answer skipped while releasing the session"
                    );
                }
                Ok(None) => return Ok(()),
                Err(status) => {
                    return Err(RequesterError::from_grpc(&self.socket, "release", status));
                }
            }
        }
    }

    /// Whether an answer belongs to a `Cancel` or to a call older than the one awaited.
    fn is_stale(&self, response: &RequesterResponse, awaited: u64) -> bool {
        let stale = self.shared.take_cancel(response.request_id) || response.request_id < awaited;
        if stale {
            tracing::debug!(
                request_id = response.request_id,
                awaited,
                "answer to a cancel or to an abandoned call skipped"
            );
        }
        stale
    }

    /// Why the stream ended, once sending failed.
    async fn ended(&mut self, name: &'static str) -> RequesterError {
        match self.responses.message().await {
            Err(status) => RequesterError::from_grpc(&self.socket, name, status),
            Ok(_) => RequesterError::disconnected(
                &self.socket,
                name,
                "the session's stream is closed; shadowcopyd no longer reads requests",
            ),
        }
    }
}

/// The outcome of an answer: its result on success, an error for a failure status or a
/// cancelled call.
fn outcome(
    name: &'static str,
    response: RequesterResponse,
) -> Result<Option<Reply>, RequesterError> {
    match reply_status(response.status) {
        Ok(status) if status.code == codes::VSS_S_ASYNC_CANCELLED.value => {
            Err(RequesterError::Cancelled { call: name })
        }
        Ok(_) => Ok(response.result),
        Err(status) => Err(RequesterError::vss(name, status)),
    }
}

/// The name of a result variant, for messages.
fn result_name(result: &Option<Reply>) -> &'static str {
    match result {
        None => "no result",
        Some(Reply::Empty(_)) => "an Empty result",
        Some(Reply::WriterMetadata(_)) => "a WriterMetadataList result",
        Some(Reply::WriterStatus(_)) => "a WriterStatusList result",
        Some(Reply::SnapshotSetStarted(_)) => "a SnapshotSetStarted result",
        Some(Reply::SnapshotAdded(_)) => "a SnapshotAdded result",
        Some(Reply::SnapshotProperties(_)) => "a SnapshotProperties result",
        Some(Reply::BackupComponents(_)) => "a BackupComponentsDocument result",
        Some(Reply::VolumeSupport(_)) => "a VolumeSupport result",
    }
}

/// Cancels the asynchronous call running in a session (ROLE-3), from another task.
///
/// Get one with `canceller()` on the session before starting the call. `Cancel` is the one
/// request the daemon handles out of turn: the running call (GatherWriterMetadata,
/// PrepareForBackup, DoSnapshotSet, BackupComplete, PreRestore or PostRestore) then fails with
/// [`RequesterError::Cancelled`], or returns its own result if it finished first. With no call
/// running, the cancel does nothing. A canceller does not keep the session open: once the
/// session is released or dropped, [`Canceller::cancel`] fails.
#[derive(Debug, Clone)]
pub struct Canceller {
    requests: Option<mpsc::WeakSender<RequesterRequest>>,
    shared: Arc<Shared>,
    socket: PathBuf,
}

impl Canceller {
    /// Sends `Cancel`. It returns once the request is on its way; the effect shows in the answer
    /// of the call that was running.
    pub async fn cancel(&self) -> Result<(), RequesterError> {
        // A weak sender, so that a canceller never keeps a dropped session's stream open: the end
        // of the stream is what releases the session (BK-END-6).
        let Some(requests) = self.requests.as_ref().and_then(mpsc::WeakSender::upgrade) else {
            return Err(RequesterError::disconnected(
                &self.socket,
                "Cancel",
                "the session was already released",
            ));
        };
        let id = self.shared.next_id();
        // Registered before sending, so that the session skips the answer whenever it arrives.
        self.shared
            .cancels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(id);
        let request = RequesterRequest {
            request_id: id,
            call: Some(Call::Cancel(v1::Cancel {})),
        };
        requests.send(request).await.map_err(|_| {
            RequesterError::disconnected(
                &self.socket,
                "Cancel",
                "the session's stream is closed; shadowcopyd no longer reads requests",
            )
        })
    }
}
