//! Compiles the .proto files with protox (a protobuf compiler in pure Rust), so building
//! needs no system `protoc`, and writes the descriptor set for gRPC reflection. The raft
//! service (between cluster members) is compiled on its own and left out of that set:
//! reflection on the client listener describes what clients may call.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["fenced/v1/lock.proto", "fenced/kv/v1/kv.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("fenced_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;

    let raft = "fenced/raft/v1/raft.proto";
    println!("cargo:rerun-if-changed={raft}");
    tonic_prost_build::configure().compile_fds(protox::compile([raft], ["."])?)?;
    Ok(())
}
