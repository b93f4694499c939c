//! Compiles the client side of etcd's lease and lock services with protox (pure Rust), so
//! building the benchmark needs no system `protoc` (the `etcd-client` crate would).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["etcdserverpb/rpc.proto", "v3lockpb/v3lock.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
