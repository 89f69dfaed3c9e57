//! `cairn-proto`: Cairn's protobuf definitions and the tonic/prost code generated from them.
//!
//! Generated types stay here, with their conversions to and from the domain types ([`convert`]) and
//! the names of the metadata keys the API uses ([`metadata`]).

pub mod codec;
pub mod convert;
pub mod metadata;
pub mod tls;

/// Raft transport between sequencer nodes (`cairn.raft.v1`).
pub mod raft {
    #![allow(missing_docs, clippy::all)] // generated code
    tonic::include_proto!("cairn.raft.v1");
}

/// The public submission and proof API (`cairn.v1`), see `proto/cairn/v1/log.proto`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)] // generated code
    tonic::include_proto!("cairn.v1");

    /// Encoded `FileDescriptorSet` of `cairn.v1`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cairn_v1_descriptor");
}

/// The Rekor v2 gRPC service (`dev.sigstore.rekor.v2.Rekor`), over the message types of
/// `sigstore_protobuf_specs`.
pub mod rekor_v2 {
    #![allow(missing_docs, clippy::all)] // generated code
    include!(concat!(env!("OUT_DIR"), "/dev.sigstore.rekor.v2.Rekor.rs"));
}
