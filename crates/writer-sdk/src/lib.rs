//! The writer SDK of shadowcopy: implement [`Writer`] for your application, call [`run`], and the
//! SDK does the rest of the VSS writer protocol.
//!
//! What the SDK does for a writer:
//! - connects to `shadowcopyd` over its Unix socket, checks the protocol version with Hello, and
//!   registers the Writer Metadata Document with the parameters of ROLE-8 ([`WriterOptions`]);
//! - holds the one bidirectional stream on which events arrive, and answers each event with the
//!   result of its handler, one handler at a time in event order (ROLE-5), with the component
//!   records the handler changed (BCD-7, BCD-8) and the WMD for Identify (ROLE-6);
//! - catches a panicking handler and reports VSS_E_WRITERERROR_NONRETRYABLE instead (ERR-1);
//! - runs the freeze timer: if Thaw has not arrived in time after a successful Freeze, it calls
//!   `on_abort` itself and answers the Thaw with VSS_E_WRITERERROR_TIMEOUT (BK-SNAP-5);
//! - aborts the writer itself when its Freeze or Thaw handler fails (BK-SNAP-7);
//! - notices at once when the coordinator goes away and aborts (thaws) the writer without waiting
//!   for the freeze timer (architecture §2), then returns or reconnects.
//!
//! ```no_run
//! use shadowcopy_metadata::WriterMetadata;
//! use shadowcopy_writer_sdk::{EventContext, HandlerResult, Writer, WriterOptions};
//!
//! struct MyWriter;
//!
//! impl Writer for MyWriter {
//!     fn metadata(&self) -> WriterMetadata {
//!         # unimplemented!()
//!         // Build the WMD: identity, restore method, components (deterministically, ROLE-6).
//!     }
//!     async fn on_freeze(&self, _ctx: &EventContext) -> HandlerResult {
//!         // Hold all writes.
//!         Ok(())
//!     }
//!     async fn on_thaw(&self, _ctx: &EventContext) -> HandlerResult {
//!         // Resume writing.
//!         Ok(())
//!     }
//!     async fn on_abort(&self, _ctx: &EventContext) -> HandlerResult {
//!         // Resume writing if frozen; clean up. May be called repeatedly.
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), shadowcopy_writer_sdk::SdkError> {
//! shadowcopy_writer_sdk::run(MyWriter, WriterOptions::default()).await
//! # }
//! ```
//!
//! `examples/counter_writer.rs` is a complete writer.

mod context;
mod error;
mod failure;
mod handle;
mod options;
mod runtime;
mod server;
mod writer;

pub use context::{AbortCause, EventContext, EventKind, SnapshotLocation};
pub use error::SdkError;
pub use failure::{HandlerResult, WriterFailure};
pub use handle::{WriterHandle, spawn};
pub use options::{DEFAULT_FREEZE_TIMEOUT, WriterOptions};
pub use runtime::{run, run_until};
pub use writer::Writer;
