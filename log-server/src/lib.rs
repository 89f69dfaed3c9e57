//! `cairn-log-server`: the gRPC submission API (`cairn.v1.Log`, see `proto/cairn/v1/log.proto`).
//!
//! It validates requests as a whole before anything is appended (size limits, token, rate), routes each
//! entry to `active_shards[hash(leaf hash) mod n]` so that a repeated entry always meets its original,
//! hands each shard's share to that shard's Raft leader (the local sequencer, or another node over gRPC),
//! and for `PUBLISHED` waits for a checkpoint and proves every entry against it from the published tiles.
//!
//! It runs beside a sequencer node ([`LogServer::new`] with a [`Node`]) or apart from the sequencers
//! (`node = None`): then it forwards every write to the configured peers, following leader hints.
//!
//! This crate owns the API, validation, auth and routing; ordering and publication are
//! `cairn-sequencer`'s, formats and proofs `cairn-tlog`'s.

mod auth;
mod error;
mod service;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_sequencer::{Bucket, Node, NodeId, ShardId};

pub use auth::{AuthConfig, Caller, Tenant};
pub use error::{LEADER, LogError, RETRY_AFTER_MS};
pub use service::{LogServer, grpc_routes, serve};

/// Metadata key a log-server sets when it forwards a shard's share of a request to that shard's leader.
pub const FORWARDED_SHARD: &str = "x-cairn-shard";

/// A shard as the API presents it.
#[derive(Clone, Debug)]
pub struct ShardMeta {
    /// Shard id.
    pub id: ShardId,
    /// Checkpoint origin (and key name).
    pub origin: String,
    /// Verifier key.
    pub vkey: String,
    /// Where the read path serves it, e.g. `/logs/1`.
    pub http_prefix: String,
    /// Where its files are in object storage, relative to the bucket root.
    pub bucket_prefix: String,
}

/// Request size limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entries per request.
    pub max_entries: usize,
    /// Total entry bytes per request.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 16 << 20,
        }
    }
}

/// Log-server configuration.
#[derive(Clone, Debug)]
pub struct LogServerConfig {
    /// Every shard of the log (active and frozen).
    pub shards: Vec<ShardMeta>,
    /// gRPC URL (`http://host:port`) of each sequencer node's log API, for forwarding to leaders.
    pub peers: BTreeMap<NodeId, String>,
    /// Tokens, rates and the admin token.
    pub auth: AuthConfig,
    /// Request size limits.
    pub limits: Limits,
    /// How long a `PUBLISHED` write waits for its checkpoint.
    pub publish_timeout: Duration,
    /// Requests of one stream handled at once.
    pub stream_window: usize,
}

impl LogServerConfig {
    /// A configuration with default limits, no peers and anonymous writes off.
    pub fn new(shards: Vec<ShardMeta>) -> Self {
        Self {
            shards,
            peers: BTreeMap::new(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            publish_timeout: Duration::from_secs(30),
            stream_window: 8,
        }
    }
}

/// The shard an entry goes to among `active` (sorted shard ids): its leaf hash's first 8 bytes, big
/// endian, modulo the number of active shards.
pub fn route(leaf_hash: &[u8; 32], active: &[ShardId]) -> Option<ShardId> {
    if active.is_empty() {
        return None;
    }
    let mut head = [0u8; 8];
    head.copy_from_slice(&leaf_hash[..8]);
    let n = active.len() as u64;
    Some(active[(u64::from_be_bytes(head) % n) as usize])
}

/// What the log-server needs from the process it runs in.
pub struct Backend {
    /// The local sequencer node, if this process runs one.
    pub node: Option<Arc<Node>>,
    /// The object store the shards publish to (proofs are computed from its tiles).
    pub bucket: Bucket,
}
