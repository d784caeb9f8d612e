//! Compiles the `.proto` files of `proto/shadowcopy/v1` into Rust with protox and tonic-prost-build.
//!
//! protox is a protobuf compiler written in Rust, so no `protoc` binary is needed.
//! Both the clients and the servers of every service are generated.
//! The clients' TCP `connect(dst)` constructors are not (`build_transport(false)`): the Writer
//! service's `Connect` call would clash with them, and every client should reach the daemon through
//! `shadowcopy_protocol::connect_unix` and carry the version header anyway.

use std::path::Path;

/// The protocol's files, relative to the `proto` include directory.
const FILES: &[&str] = &[
    "shadowcopy/v1/common.proto",
    "shadowcopy/v1/requester.proto",
    "shadowcopy/v1/writer.proto",
    "shadowcopy/v1/admin.proto",
    "shadowcopy/v1/provider.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let include = Path::new("proto");
    let files: Vec<_> = FILES.iter().map(|file| include.join(file)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [include])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
