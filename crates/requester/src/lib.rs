//! The requester client library: drive backups and restores through `shadowcopyd`, in Rust types.
//!
//! A requester (a backup or restore program, ROLE-1) talks to the daemon over its Unix socket with
//! the protocol of `docs/protocol.md`. This crate hides the wire: ids are typed GUIDs, enumerations
//! are the VSS enumerations of `shadowcopy-metadata`, the WMDs and BCDs that travel as JSON text
//! are parsed and validated on arrival, and every failure is one [`RequesterError`] with a VSS
//! result code and a hint.
//!
//! - [`Client::connect`] opens the socket once and checks the protocol version with `Hello`.
//! - [`Client::backup_session`] and [`Client::restore_session`] open one `Requester.Session`
//!   stream each: one single-use session (ROLE-12) with one typed method per call, in the order
//!   of spec §3 (B1–B15) and §4 (R1–R9).
//! - [`Client::admin`] is the Admin service: writers, providers, shadow copies, status.
//!
//! A backup in outline (error handling and the file copy left out):
//!
//! ```no_run
//! # async fn demo() -> Result<(), shadowcopy_requester::RequesterError> {
//! use shadowcopy_metadata::bcd::BackupState;
//! use shadowcopy_metadata::selection::{BackupRequest, resolve_backup};
//! use shadowcopy_requester::Client;
//!
//! let client = Client::connect_default().await?;
//! let mut session = client.backup_session().await?;
//! session.initialize_for_backup(None).await?; // B1
//! session.set_backup_state(BackupState::default()).await?; // B3: full, component mode
//! let writers = session.gather_writer_metadata().await?; // B5
//! let request = BackupRequest::new(vec!["PostgreSQL:main".parse().expect("selector")]);
//! let selection = resolve_backup(&writers, &request).expect("a valid selection");
//! let components = session.apply_selection(&selection).await?; // B6
//! session.start_snapshot_set().await?; // B7
//! let snapshot = session.add_to_snapshot_set("/srv/db", None).await?; // B8
//! session.prepare_for_backup().await?; // B9
//! session.gather_writer_status().await?; // B10
//! session.do_snapshot_set().await?; // B11
//! let properties = session.snapshot_properties(snapshot).await?; // B12
//! // ... copy files from properties.snapshot_path, store the BCD and every WMD ...
//! let _bcd = session.backup_components().await?;
//! for component in &components {
//!     session.set_backup_succeeded(component, true).await?;
//! }
//! session.backup_complete().await?; // B13
//! session.gather_writer_status().await?; // B14
//! session.release().await?; // B15: BackupShutdown
//! # let _ = properties;
//! # Ok(())
//! # }
//! ```
//!
//! Decisions:
//! - **Runtime state, not typestate.** The sessions are plain structs whose methods take
//!   `&mut self`, so two calls never overlap on one session, and the daemon enforces the call
//!   order, answering `VSS_E_BAD_STATE` with a hint (docs/protocol.md §4.5). The order has many
//!   legal branches that a typestate would have to spell out or forbid: B7, B8 and B11 may be
//!   skipped (BK-PREP-6), components may be added until PrepareForBackup (BK-DISC-8), writer
//!   status may be read at any time after B5, B5 is optional in writerless contexts (CTX-4), and a
//!   failed DoSnapshotSet must still be followed by AbortBackup (BK-SNAP-9). Keeping one
//!   authority for the order, the daemon, also keeps client and server from disagreeing.
//! - **Errors are values, hints included.** A non-OK in-band status becomes
//!   [`RequesterError::Vss`]; a refused stream or call keeps its VSS code; a lost stream is
//!   [`RequesterError::Disconnected`] and says that the daemon has released the session
//!   (BK-END-6). `VSS_S_ASYNC_CANCELLED`, a success code, becomes [`RequesterError::Cancelled`],
//!   because the cancelled call did not do its work.
//! - **Release is the end of the stream.** [`BackupSession::release`] closes the session's stream
//!   and waits until the daemon ends its side, and dropping a session ends the stream as well, so
//!   the daemon releases the session however the requester goes away (BK-END-4, BK-END-6).
//! - **Strict answers.** The daemon never sends values newer than our minor version (COMPAT-3),
//!   so an unknown enumeration value, a malformed id or an invalid document is reported as an
//!   error naming the field, never guessed around and never a panic.

mod admin;
mod backup;
mod client;
mod error;
mod restore;
mod session;
mod types;

pub use admin::{
    Admin, DaemonStatus, DeleteTarget, Exposure, ProviderEntry, SessionInfo, SnapshotFilter,
    WriterInfo,
};
pub use backup::BackupSession;
pub use client::{Client, ServerInfo};
pub use error::RequesterError;
pub use restore::{AppliedRestoreSelection, RestoreSession, SkipReason, SkippedWriter};
pub use session::Canceller;
pub use types::{ComponentKey, SnapshotProperties, VolumeSupport, WriterStatus, WriterTarget};
