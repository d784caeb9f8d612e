//! `shadowcopy-copy-provider`: an example external provider plug-in for shadowcopyd.
//!
//! It snapshots directories under `--root` by copying their trees into `--store/<snapshot id>/`
//! and serves the Provider service on `--socket`. It is meant to be read: start with `README.md`
//! next to this file, then `provider.rs`. The whole plug-in side is one call,
//! `shadowcopy_provider_plugin::serve`, around an implementation of the `Provider` trait.

mod provider;
mod tree;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

/// An example shadowcopy provider plug-in that snapshots small directory trees by copying them.
///
/// Register it in shadowcopyd.toml with
/// `[[providers.external]] name = "copy", socket = "<the --socket path>"`.
#[derive(Debug, Parser)]
#[command(name = "shadowcopy-copy-provider", version, max_term_width = 100)]
struct Args {
    /// Only directories under this one can be snapshotted.
    #[arg(long)]
    root: PathBuf,
    /// Where the copies and the record of them are kept; must lie outside --root.
    #[arg(long)]
    store: PathBuf,
    /// The Unix socket to serve on; shadowcopyd's configuration names the same path.
    #[arg(long, default_value = "/run/shadowcopy/providers/copy.sock")]
    socket: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let provider = provider::CopyProvider::open(&args.root, &args.store)?;
    // SIGTERM (systemd) and Ctrl-C stop serving; the socket is removed on the way out.
    let shutdown = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    shadowcopy_provider_plugin::serve(Arc::new(provider), &args.socket, shutdown).await?;
    Ok(())
}
