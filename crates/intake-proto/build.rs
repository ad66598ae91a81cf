//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let public = ["intake/v1/intake.proto", "intake/v1/admin.proto"];
    let internal = ["intake_internal/raft/v1/raft.proto"];
    println!("cargo:rerun-if-changed={}", root.display());

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let public_fds = protox::compile(public, [&root])?;
    // Reflection serves the public API only; the Raft transport stays private.
    std::fs::write(out.join("intake_v1_descriptor.bin"), public_fds.encode_to_vec())?;
    // Bad request bodies are INVALID_ARGUMENT on the public services (see
    // `src/codec.rs`); the internal transport and dispatch.v1 keep tonic-prost's.
    tonic_prost_build::configure()
        .codec_path("crate::codec::PublicCodec")
        .compile_fds(public_fds)?;

    // The downstream's contract: Intake is its client, the reference sink its server.
    let dispatch_fds = protox::compile(["dispatch/v1/dispatch.proto"], [&root])?;
    tonic_prost_build::configure().compile_fds(dispatch_fds)?;

    let internal_fds = protox::compile(internal, [&root])?;
    tonic_prost_build::configure().compile_fds(internal_fds)?;
    Ok(())
}
