//! Compiles the driver's protos (etcd's KV.Put slice and the no-op service)
//! with protox, so the benches build without a system `protoc` or etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(["etcd_kv.proto", "noop.proto"], [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
