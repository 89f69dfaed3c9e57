//! `cairn-sequencer`: the write path's core.
//!
//! Each shard is its own Raft group (openraft 0.9 with `storage-v2`) whose log and state machine live in
//! the node's RocksDB database ([`store`], [`sm`]). Raft traffic travels over gRPC ([`network`]).
//! Entries from many callers are batched into Raft proposals ([`node`]); applying a batch is
//! deterministic on every replica: exact dedup, index assignment, the tree edge. On each shard's leader,
//! the [`publisher`] writes C2SP tiles, entry bundles and the signed checkpoint to object storage
//! (`cairn-store`) and commits the published size through Raft.
//!
//! This crate owns ordering, replication and publication. Formats and proofs are `cairn-tlog`'s; the
//! gRPC submission API is `cairn-log-server`'s.

// openraft's storage traits return `StorageError` (over 200 bytes); the helpers around them return the
// same type so that `?` works across them without conversions.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod control;
pub mod error;
pub mod membership;
mod metrics;
pub mod network;
pub mod node;
mod placement;
mod proposer;
pub mod publisher;
mod shard;
pub mod sm;
pub mod state;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
pub mod types;

pub use cairn_store::Shard;
/// Object storage is `cairn-store`'s; the publisher writes through its [`Bucket`].
pub use cairn_store::bucket;
pub use cairn_store::{Bucket, PutError};
pub use config::{BatchConfig, NodeConfig, RaftTiming, ShardConfig};
pub use control::{CONTROL, KeyProvider, MapEntry, Phase, Schedule, ShardMap, ShardSpec};
pub use error::SequencerError;
pub use node::{GroupStatus, Node};
pub use state::ReplicatedState;
pub use types::{Appended, NodeId, ShardId};
