//! Client code generated from the part of etcd's v3 API the benchmark calls
//! (`proto/etcdserverpb/rpc.proto`, `proto/v3lockpb/v3lock.proto`).

/// Package `etcdserverpb`: leases, and the server status (version, leader).
#[allow(missing_docs, clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Package `v3lockpb`: the lock service.
#[allow(missing_docs, clippy::all)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}
