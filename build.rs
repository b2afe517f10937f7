//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and
//! generates the tonic servers and clients. The descriptor set is also written
//! to `OUT_DIR` so the node can serve gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/casemesh/v1/types.proto",
        "proto/casemesh/v1/records.proto",
        "proto/casemesh/v1/admin.proto",
        "proto/casemesh/v1/replication.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("casemesh_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
