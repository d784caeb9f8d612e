//! [`WriterHandle`]: a writer running as a Tokio task that its host can watch and stop cleanly.

use std::sync::Arc;

use shadowcopy_metadata::WriterInstanceId;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::SdkError;
use crate::options::WriterOptions;
use crate::runtime::run_inner;
use crate::writer::Writer;

/// Starts `writer` as a Tokio task, as [`run`](crate::run) would run it, and returns its handle.
///
/// Must be called inside a Tokio runtime.
pub fn spawn<W: Writer>(writer: W, options: WriterOptions) -> WriterHandle {
    WriterHandle::spawn(writer, options)
}

/// A writer running as a task (see [`spawn`]).
///
/// [`shutdown`](WriterHandle::shutdown) stops it cleanly, as [`run_until`](crate::run_until)
/// describes: the running handler finishes, every backup in progress is aborted so that nothing
/// stays frozen (architecture §8), and the stream is closed. Dropping the handle stops the writer the same way, without waiting for it.
#[derive(Debug)]
pub struct WriterHandle {
    task: JoinHandle<Result<(), SdkError>>,
    stop: Option<oneshot::Sender<()>>,
    registered: watch::Receiver<Option<WriterInstanceId>>,
}

impl WriterHandle {
    /// Starts `writer` as a Tokio task; the same as [`spawn`].
    pub fn spawn<W: Writer>(writer: W, options: WriterOptions) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (registered_tx, registered) = watch::channel(None);
        // A dropped sender counts as a stop request too, so a dropped handle stops the writer.
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run_inner(
            Arc::new(writer),
            options,
            shutdown,
            Some(registered_tx),
        ));
        WriterHandle {
            task,
            stop: Some(stop),
            registered,
        }
    }

    /// The instance id of the current registration, while the writer is registered.
    pub fn instance_id(&self) -> Option<WriterInstanceId> {
        *self.registered.borrow()
    }

    /// Waits until the writer is registered and returns its instance id; `None` when the writer
    /// stopped first.
    pub async fn registered(&mut self) -> Option<WriterInstanceId> {
        match self.registered.wait_for(Option::is_some).await {
            Ok(id) => *id,
            Err(_) => None,
        }
    }

    /// Whether the writer task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the writer to stop, without waiting; [`join`](WriterHandle::join) waits.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the writer and waits until it has stopped: `Ok(())` for a clean stop, or the error
    /// that had already ended it.
    pub async fn shutdown(mut self) -> Result<(), SdkError> {
        self.stop();
        self.join().await
    }

    /// Waits until the writer ends by itself (for example [`SdkError::CoordinatorGone`]) without
    /// asking it to stop.
    pub async fn join(mut self) -> Result<(), SdkError> {
        // Keep the stop sender alive while waiting: dropping it would stop the writer.
        let _stop = self.stop.take();
        match (&mut self.task).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => {
                Err(SdkError::Task(format!("the writer task panicked: {error}")))
            }
            Err(error) => Err(SdkError::Task(format!(
                "the writer task was cancelled: {error}"
            ))),
        }
    }
}
