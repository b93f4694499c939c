//! The fenced wire protocol: code generated from `fenced/v1/lock.proto` (the lock service),
//! `fenced/kv/v1/kv.proto` (the gated key-value store) and `fenced/raft/v1/raft.proto`
//! (raft between the members of a cluster), plus the descriptor set that gRPC reflection
//! serves.
//!
//! # Layout
//! - [`v1`]: package `fenced.v1`, service `LockService`.
//! - [`kv::v1`]: package `fenced.kv.v1`, service `GatedKv`.
//! - [`raft::v1`]: package `fenced.raft.v1`, service `RaftService` (members only; not in
//!   [`FILE_DESCRIPTOR_SET`]).
//! - [`metadata`]: the names of the request and response metadata keys fencing uses.
//! - [`session`]: a refusal as a `Session` stream carries it.
//! - [`framed`]: the `Session` messages over framed TCP (or TLS), without HTTP/2;
//!   [`framed_tls`]: a client's TLS for it.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for `tonic-reflection`.
//!
//! Conversions between these messages and the domain types live in the crates that own
//! the domain (server, client), at their edges.

pub mod framed;
pub mod framed_tls;
pub mod metadata;
pub mod session;

/// Package `fenced.v1`: the lock service.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("fenced.v1");
}

/// Package `fenced.kv`: the gated key-value store.
pub mod kv {
    /// Package `fenced.kv.v1`.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("fenced.kv.v1");
    }
}

/// Package `fenced.raft`: raft between the members of a cluster.
pub mod raft {
    /// Package `fenced.raft.v1`.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("fenced.raft.v1");
    }
}

/// The encoded `FileDescriptorSet` of the client-facing .proto files (lock and kv), for
/// gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fenced_descriptor.bin"));
