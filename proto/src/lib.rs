//! `cairn-proto`: Cairn's protobuf definitions and the tonic/prost code generated from them.
//!
//! Generated types stay here; domain crates convert at their edges.

/// Raft transport between sequencer nodes (`cairn.raft.v1`).
pub mod raft {
    #![allow(missing_docs, clippy::all)] // generated code
    tonic::include_proto!("cairn.raft.v1");
}
