//! External provider plug-ins: a provider that runs as its own process, serves the Provider
//! service of `provider.proto` on its own Unix socket, and is used by shadowcopyd exactly like a
//! built-in provider (PROV-REG-1, docs/protocol.md §7).
//!
//! Both ends speak through the coordinator's [`Provider`](shadowcopy_coordinator::Provider) trait:
//! - a plug-in author implements the trait and calls [`serve`], which adapts it to the gRPC
//!   service, checks the protocol version header and lets only root (shadowcopyd) and the
//!   plug-in's own user call it;
//! - shadowcopyd wraps each configured plug-in in a [`PluginProvider`], which implements the trait
//!   by calling the plug-in, so the coordinator sequences it like any other provider and applies
//!   the code translation of PROV-R-3 and the time limits itself.
//!
//! `examples/copy-provider` is a complete plug-in to start from.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn demo(my_provider: Arc<dyn shadowcopy_coordinator::Provider>) -> Result<(), Box<dyn std::error::Error>> {
//! let socket = std::path::Path::new("/run/shadowcopy/providers/mine.sock");
//! // Serve until the process is stopped; pass a signal future to stop cleanly instead.
//! shadowcopy_provider_plugin::serve(my_provider, socket, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

mod client;
mod convert;
mod server;

pub use client::PluginProvider;
pub use server::{ServeError, serve};
