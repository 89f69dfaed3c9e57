//! `cairn-log-server`: the gRPC submission API (`cairn.v1.Log`, see `proto/cairn/v1/log.proto`).
//!
//! It validates requests as a whole before anything is appended (size limits, token, rate), routes each
//! entry among the active shards by rendezvous hashing of its leaf hash ([`route`]) so that a repeated
//! entry always meets its original (and, across a change of the active shards, looks for it in the
//! shard it routed to before: [`write`]),
//! hands each shard's share to that shard's Raft leader (the local sequencer, or another node over gRPC),
//! and for `PUBLISHED` waits for a checkpoint and proves every entry against it from the published tiles.
//!
//! It runs beside a sequencer node ([`LogServer::new`] with a [`Node`]) or apart from the sequencers
//! (`node = None`): then it forwards every write to the configured peers, following leader hints.
//!
//! Sigstore shards also take `hashedrekord` entries through the Rekor v2 API ([`rekor`]).
//!
//! This crate owns the API, validation, auth and routing; ordering and publication are
//! `cairn-sequencer`'s, formats and proofs `cairn-tlog`'s.

pub mod add;
mod admin;
mod auth;
mod error;
mod find;
mod forward;
pub mod metrics;
mod read;
pub mod rekor;
mod reroute;
mod service;
mod trace;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_sequencer::{Node, NodeId, ShardId};
use cairn_store::{Bucket, Shard, ShardKind, TileCache};

pub use auth::{AuthConfig, Caller, Tenant};
pub use cairn_proto::metadata::{FORWARDED_SHARD, LEADER, RETRY_AFTER_MS};
pub use error::LogError;
pub use metrics::ApiMetrics;
pub use service::{LogServer, grpc_routes, serve};

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
    pub shards: Vec<Shard>,
    /// What each shard logs (a shard not listed is opaque). Entries are routed among the active shards
    /// of their kind: `cairn.v1.Log` writes to opaque shards, the Rekor v2 API to Sigstore shards.
    pub kinds: BTreeMap<ShardId, ShardKind>,
    /// Start of each configured shard's validity (Unix seconds), for `ListShards`.
    pub valid_from: BTreeMap<ShardId, u64>,
    /// Each configured Sigstore shard's base URL, for `ListShards`.
    pub base_urls: BTreeMap<ShardId, String>,
    /// Shards added while the process runs (the cluster's control group), beside `shards`.
    pub catalog: Option<cairn_store::Catalog>,
    /// For a log-server without a sequencer: a configured shard as the sequencers list it (its state,
    /// end and whether it was archived), so that routing skips a shard frozen through another server.
    pub configured_state: Option<ListingSource>,
    /// The signing algorithms Sigstore shards accept.
    pub sigstore_policy: cairn_sigstore::Policy,
    /// gRPC URL (`http://host:port`, or `https://` with TLS) of each sequencer node's log API, for
    /// forwarding to leaders.
    pub peers: BTreeMap<NodeId, String>,
    /// TLS for forwarded writes to `https://` peers (their chains checked against the cluster CA,
    /// this node's certificate presented).
    pub tls: Option<std::sync::Arc<cairn_proto::tls::Tls>>,
    /// Tokens, rates and the admin token.
    pub auth: AuthConfig,
    /// Request size limits.
    pub limits: Limits,
    /// How long a `PUBLISHED` write waits for its checkpoint.
    pub publish_timeout: Duration,
    /// How long a write forwarded to a shard's leader may wait for its answer (plus `publish_timeout`
    /// for `PUBLISHED`); a small multiple of the election timeout. Leadership moving during the wait
    /// re-routes the write at once.
    pub forward_deadline: Duration,
    /// Requests of one stream handled at once.
    pub stream_window: usize,
    /// How long after the active shards change a write still looks for its entries in the shards
    /// they routed to before (so a retry of an attempt that landed there is answered from there, not
    /// logged twice): longer than writers keep retrying (the Rust client's default deadline is 60 s).
    pub reroute_grace: Duration,
}

impl LogServerConfig {
    /// A configuration with default limits, no peers and anonymous writes off.
    pub fn new(shards: Vec<Shard>) -> Self {
        Self {
            shards,
            kinds: BTreeMap::new(),
            valid_from: BTreeMap::new(),
            base_urls: BTreeMap::new(),
            catalog: None,
            configured_state: None,
            sigstore_policy: cairn_sigstore::Policy::default(),
            peers: BTreeMap::new(),
            tls: None,
            auth: AuthConfig::default(),
            limits: Limits::default(),
            publish_timeout: Duration::from_secs(30),
            forward_deadline: Duration::from_secs(2),
            stream_window: 8,
            reroute_grace: Duration::from_secs(90),
        }
    }
}

/// Reports a shard's listing as another server knows it, if it does.
#[derive(Clone)]
pub struct ListingSource(
    pub std::sync::Arc<dyn Fn(ShardId) -> Option<cairn_store::ShardListing> + Send + Sync>,
);

impl std::fmt::Debug for ListingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListingSource")
    }
}

/// The shard an entry goes to among `active`: rendezvous (highest random weight) hashing, each
/// shard's weight the first 8 bytes, big endian, of SHA-256(leaf hash || shard id as 4 bytes big
/// endian); the highest wins. A given set of active shards sends an entry to one shard always (exact
/// dedup), and a change moves only what it must: a shard added takes its share from every other, a
/// shard frozen hands on only its own entries.
pub fn route(leaf_hash: &[u8; 32], active: &[ShardId]) -> Option<ShardId> {
    use sha2::{Digest, Sha256};
    active.iter().copied().max_by_key(|shard| {
        let mut h = Sha256::new();
        h.update(leaf_hash);
        h.update(shard.to_be_bytes());
        let d = h.finalize();
        (
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]),
            *shard,
        )
    })
}

/// What the log-server needs from the process it runs in.
pub struct Backend {
    /// The local sequencer node, if this process runs one.
    pub node: Option<Arc<Node>>,
    /// The object store the shards publish to, at the log's root (proofs are computed from its tiles).
    pub bucket: Bucket,
    /// Cache of the tiles proofs read (shared with the read path when both run in one process).
    pub cache: TileCache,
}

#[cfg(test)]
mod tests {
    use super::route;

    fn leaves(n: u32) -> impl Iterator<Item = [u8; 32]> {
        (0..n).map(|i| cairn_tlog::hash::leaf_hash(&i.to_be_bytes()).0)
    }

    #[test]
    fn routing_spreads_entries_and_moves_only_what_a_change_must() {
        let before = [1, 2, 3];
        let added = [1, 2, 3, 4];
        let frozen = [1, 3];
        let mut counts = std::collections::BTreeMap::new();
        for leaf in leaves(20_000) {
            let b = route(&leaf, &before).unwrap();
            let a = route(&leaf, &added).unwrap();
            *counts.entry(a).or_insert(0u32) += 1;
            assert!(a == b || a == 4, "adding shard 4 moved an entry from {b} to {a}");
            let f = route(&leaf, &frozen).unwrap();
            assert!(
                f == b || b == 2,
                "freezing shard 2 moved an entry from {b} to {f}"
            );
            assert_eq!(route(&leaf, &[7]), Some(7));
        }
        // Each of 4 shards gets a quarter, within 5 %.
        for (shard, n) in counts {
            assert!((4_750..=5_250).contains(&n), "shard {shard} got {n} of 20000");
        }
        assert_eq!(route(&[0; 32], &[]), None);
    }
}
