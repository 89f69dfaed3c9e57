//! What a node is told at start: its identity and storage, the shards it hosts, Raft timing, proposal
//! batching and publishing pace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use cairn_store::Shard;
use cairn_tlog::Signer;
use cairn_witness::Collector;

use crate::bucket::Bucket;
use crate::types::NodeId;

/// A shard hosted by a node.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Identity (its files live under the layout's prefix, `cairn_store::shard_prefix`).
    pub shard: Shard,
    /// Checkpoint signing key. A node without it can replicate the shard but not publish it as leader.
    pub signer: Option<Signer>,
    /// Witnesses whose cosignatures every checkpoint collects before it is published (a policy's
    /// quorum, fail-closed unless the collector fails open). `None`: checkpoints carry the log's
    /// signature alone.
    pub witnesses: Option<Arc<Collector>>,
}

impl ShardConfig {
    /// A shard published with its log signature alone.
    pub fn new(shard: Shard, signer: Option<Signer>) -> Self {
        Self {
            shard,
            signer,
            witnesses: None,
        }
    }
}

/// Raft timing, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct RaftTiming {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout.
    pub election_min_ms: u64,
    /// Upper bound of the election timeout.
    pub election_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_min_ms: 400,
            election_max_ms: 800,
        }
    }
}

impl RaftTiming {
    /// How long a leader waits for a majority to acknowledge it before an operator's change (a
    /// freeze, a membership change): two of the longest election timeouts.
    pub(crate) fn quorum_check(&self) -> Duration {
        Duration::from_millis(self.election_max_ms * 2)
    }
}

/// How entries are grouped into Raft proposals.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// At most this many entries per proposal.
    pub max_entries: usize,
    /// At most this many entry bytes per proposal.
    pub max_bytes: usize,
    /// Wait at most this long for a proposal to fill.
    pub max_delay: Duration,
    /// Proposals in flight at once per shard.
    pub max_in_flight: usize,
    /// Append requests queued per shard before callers are pushed back.
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_entries: 4096,
            max_bytes: 4 << 20,
            max_delay: Duration::from_millis(2),
            max_in_flight: 8,
            queue: 4096,
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (non-zero, unique in the cluster).
    pub id: NodeId,
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// Address the Raft gRPC server binds (port 0 picks one).
    pub raft_listen: SocketAddr,
    /// Address peers use to reach this node; the bound address when `None`.
    pub raft_advertise: Option<String>,
    /// Shards this node hosts.
    pub shards: Vec<ShardConfig>,
    /// Object storage shared by the cluster.
    pub bucket: Bucket,
    /// Raft timing.
    pub timing: RaftTiming,
    /// Proposal batching.
    pub batch: BatchConfig,
    /// Time from the start of one publishing round to the start of the next (a round that takes
    /// longer is followed by the next at once). The configured value of the cluster setting
    /// `publish_interval_ms` (see `control::settings`), as are the three below.
    pub publish_interval: Duration,
    /// Build a snapshot (and purge the log) after this many applied Raft entries.
    pub snapshot_every: u64,
    /// Raft entries kept behind a snapshot (lets slightly lagging followers catch up without one).
    pub keep_after_snapshot: u64,
    /// How long one snapshot chunk may take to send, and the last one to send and install on the
    /// follower. Installing rebuilds the follower's dedup index from the snapshot, which takes seconds for
    /// millions of entries: a timeout shorter than that makes every attempt start over, and a replica that
    /// lost its disk never catches up.
    pub snapshot_timeout: Duration,
    /// How often the leader placement balancer looks at this node's shards (`None`: never; leaders
    /// stay where elections put them). See `placement`. The cluster setting `balance_leaders_ms`.
    pub balance_interval: Option<Duration>,
    /// Refuse appends while this many entries are sequenced but not published (`max_unpublished`).
    pub max_unpublished: u64,
    /// TLS between peers: the Raft listener requires a client certificate from the cluster CA, and
    /// connections to peers check theirs and present this node's. Plain TCP when `None`.
    pub tls: Option<std::sync::Arc<cairn_proto::tls::Tls>>,
    /// This node's gRPC API URL, which it tells peers that ask (`Describe`): how a node added at
    /// runtime becomes reachable for forwarded writes without editing the other nodes' configuration.
    pub api_url: Option<String>,
    /// The configured peers: (Raft address, API URL) by node id. A member that is not among them, or
    /// is at another Raft address, is asked for its URL.
    pub peer_urls: std::collections::BTreeMap<NodeId, (String, String)>,
    /// Where this node finds the signing keys of shards added at runtime (`control`). Without one it
    /// hosts only its configured shards.
    pub keys: Option<Arc<dyn crate::control::KeyProvider>>,
    /// Shards this node's control group adds on a schedule (temporal sharding), when it leads it.
    pub schedule: Option<Arc<dyn crate::control::Schedule>>,
    /// How long a shard must have been frozen (its final checkpoint in object storage) before it
    /// can be archived: at least the log-servers' reroute grace, during which a retry looks for its
    /// entry in the shard it routed to before (`archive_after_s`).
    pub archive_after: Duration,
}

impl NodeConfig {
    /// A configuration with defaults for everything but identity, storage and shards.
    pub fn new(
        id: NodeId,
        data_dir: PathBuf,
        raft_listen: SocketAddr,
        bucket: Bucket,
        shards: Vec<ShardConfig>,
    ) -> Self {
        Self {
            id,
            data_dir,
            raft_listen,
            raft_advertise: None,
            shards,
            bucket,
            timing: RaftTiming::default(),
            batch: BatchConfig::default(),
            publish_interval: Duration::from_millis(50),
            snapshot_every: 1_000,
            keep_after_snapshot: 500,
            snapshot_timeout: Duration::from_secs(60),
            balance_interval: None,
            max_unpublished: 2_000_000,
            tls: None,
            api_url: None,
            peer_urls: Default::default(),
            keys: None,
            schedule: None,
            archive_after: Duration::from_secs(90),
        }
    }

    /// What every shard's publisher on this node needs to know of the node.
    pub(crate) fn publishing(&self, settings: Arc<crate::control::settings::Live>) -> Publishing {
        Publishing {
            node: self.id,
            settings,
            lease: Duration::from_millis(self.timing.election_min_ms / 2),
        }
    }
}

/// The node-level settings a shard's publisher runs with (it needs nothing else of the node).
#[derive(Clone, Debug)]
pub(crate) struct Publishing {
    /// This node's id: the publisher works only while it leads the shard.
    pub(crate) node: NodeId,
    /// The cluster settings in effect here: the time between the starts of publishing rounds.
    pub(crate) settings: Arc<crate::control::settings::Live>,
    /// How long after confirming its leadership the leader may still write the checkpoint object: half
    /// the minimum election timeout (see the publisher's fencing notes).
    pub(crate) lease: Duration,
}
