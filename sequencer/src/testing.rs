//! A cluster harness for tests and drills: N nodes on loopback ports in temporary directories, sharing
//! one object store (each node through its own fault injector), with `wait_for_leader`, `kill`,
//! `restart`, `wipe`, `partition`, `heal` and `faults`; and [`verify_published`], which audits a shard's
//! published files with the shared verifier (`cairn_store::TileReader::audit`). Feature `testing`.
//!
//! Every wait polls with a deadline; nothing sleeps for a fixed time hoping a condition holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_store::testing::{Faults, FaultyStore};
use cairn_store::{Bucket, TileCache, TileReader};
use cairn_tlog::audit::AuditedLog;
use cairn_tlog::{Checkpoint, Hash, VerifierKey};
use object_store::memory::InMemory;
use object_store::path::Path;
use tempfile::TempDir;

use crate::error::SequencerError;
use crate::node::{Node, NodeConfig, RaftTiming, ShardConfig};
use crate::types::{Appended, NodeId, ShardId};

pub use cairn_store::testing::{test_shard, test_signer};

/// Shard configurations `1..=count` with test keys, at the published layout's prefixes.
pub fn test_shards(count: u32) -> Vec<ShardConfig> {
    (1..=count)
        .map(|id| ShardConfig::new(test_shard(id), Some(test_signer(id))))
        .collect()
}

/// A test cluster.
pub struct Cluster {
    dir: TempDir,
    /// The object store every node publishes to (each through its own [`Faults`]).
    pub bucket: Bucket,
    faults: BTreeMap<NodeId, Arc<Faults>>,
    shards: Vec<ShardConfig>,
    addrs: BTreeMap<NodeId, SocketAddr>,
    nodes: BTreeMap<NodeId, Node>,
    tweak: Arc<dyn Fn(&mut NodeConfig) + Send + Sync>,
}

fn fatal(msg: impl Into<String>) -> SequencerError {
    SequencerError::Fatal(msg.into())
}

impl Cluster {
    /// Starts `nodes` nodes hosting shards `1..=shards`, publishing to an in-memory store, and forms a
    /// cluster with all of them as voters.
    pub async fn start(nodes: u64, shards: u32) -> Result<Self, SequencerError> {
        Self::start_with(
            nodes,
            shards,
            Bucket::new(Arc::new(InMemory::new()), Path::default()),
            |_| {},
        )
        .await
    }

    /// Like [`Cluster::start`], with a given bucket and a function that adjusts each node's config.
    pub async fn start_with(
        nodes: u64,
        shards: u32,
        bucket: Bucket,
        tweak: impl Fn(&mut NodeConfig) + Send + Sync + 'static,
    ) -> Result<Self, SequencerError> {
        let dir = tempfile::tempdir().map_err(|e| fatal(e.to_string()))?;
        let mut cluster = Self {
            dir,
            bucket,
            faults: BTreeMap::new(),
            shards: test_shards(shards),
            addrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            tweak: Arc::new(tweak),
        };
        for id in 1..=nodes {
            cluster
                .launch(id, "127.0.0.1:0".parse().map_err(|_| fatal("addr"))?)
                .await?;
        }
        let members: BTreeMap<NodeId, String> =
            cluster.addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
        cluster.node(1)?.initialize(members).await?;
        Ok(cluster)
    }

    fn config(&mut self, id: NodeId, addr: SocketAddr) -> NodeConfig {
        // Each node gets its own fault controls over the shared store.
        let (store, faults) = FaultyStore::wrap(self.bucket.store().clone());
        self.faults.insert(id, faults);
        let bucket = Bucket::new(store, self.bucket.prefix().clone());
        let mut c = NodeConfig::new(
            id,
            self.dir.path().join(format!("node-{id}")),
            addr,
            bucket,
            self.shards.clone(),
        );
        c.timing = RaftTiming {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
        };
        c.publish_interval = Duration::from_millis(20);
        (self.tweak)(&mut c);
        c
    }

    async fn launch(&mut self, id: NodeId, addr: SocketAddr) -> Result<(), SequencerError> {
        let config = self.config(id, addr);
        let node = Node::start(config).await?;
        self.addrs.insert(id, node.raft_addr());
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Starts a new node that is not yet a member of any shard; returns its Raft address.
    pub async fn add_node(&mut self, id: NodeId) -> Result<String, SequencerError> {
        self.launch(id, "127.0.0.1:0".parse().map_err(|_| fatal("addr"))?)
            .await?;
        Ok(self.node(id)?.advertise_addr())
    }

    /// Adds node `id` as a learner of every shard (through each shard's leader), waiting for catch-up.
    pub async fn add_learner(&self, id: NodeId) -> Result<(), SequencerError> {
        let addr = self.node(id)?.advertise_addr();
        for shard in self.shards.iter().map(|s| s.shard.id) {
            let leader = self.wait_for_leader(shard, Duration::from_secs(20)).await?;
            self.node(leader)?.add_learner(shard, id, addr.clone()).await?;
        }
        Ok(())
    }

    /// Sets the voters of every shard (through each shard's leader); others are removed.
    pub async fn change_membership(&self, voters: &BTreeSet<NodeId>) -> Result<(), SequencerError> {
        for shard in self.shards.iter().map(|s| s.shard.id) {
            let among: BTreeSet<NodeId> = self
                .running()
                .into_iter()
                .filter(|n| voters.contains(n))
                .collect();
            let leader = self
                .wait_for_leader_among(shard, &among, Duration::from_secs(20))
                .await?;
            self.node(leader)?
                .change_membership(shard, voters.clone(), false)
                .await?;
        }
        Ok(())
    }

    /// The shard configurations (with keys).
    pub fn shards(&self) -> &[ShardConfig] {
        &self.shards
    }

    /// A running node.
    pub fn node(&self, id: NodeId) -> Result<&Node, SequencerError> {
        self.nodes
            .get(&id)
            .ok_or_else(|| fatal(format!("node {id} is not running")))
    }

    /// The fault controls of node `id`'s writes to object storage (reset when the node restarts).
    pub fn faults(&self, id: NodeId) -> Result<Arc<Faults>, SequencerError> {
        self.faults
            .get(&id)
            .cloned()
            .ok_or_else(|| fatal(format!("node {id} never ran")))
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Waits until a running node leads `shard` and every running node that knows of a leader names it.
    /// (Nodes that know of none, such as one just wiped or not yet reached, have no say.)
    pub async fn wait_for_leader(&self, shard: ShardId, timeout: Duration) -> Result<NodeId, SequencerError> {
        self.wait_for_leader_among(shard, &self.running().into_iter().collect(), timeout)
            .await
    }

    /// Like [`Cluster::wait_for_leader`], counting only the nodes in `among`; the leader must be one of them.
    pub async fn wait_for_leader_among(
        &self,
        shard: ShardId,
        among: &BTreeSet<NodeId>,
        timeout: Duration,
    ) -> Result<NodeId, SequencerError> {
        let deadline = Instant::now() + timeout;
        loop {
            let views: BTreeSet<NodeId> = among
                .iter()
                .filter_map(|id| self.nodes.get(id))
                .filter_map(|n| n.leader(shard))
                .collect();
            if let [leader] = views.into_iter().collect::<Vec<_>>()[..]
                && among.contains(&leader)
                && let Some(node) = self.nodes.get(&leader)
                && node.raft(shard)?.metrics().borrow().state == openraft::ServerState::Leader
            {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                return Err(SequencerError::Timeout("no leader elected".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops a node (its data stays).
    pub async fn kill(&mut self, id: NodeId) -> Result<(), SequencerError> {
        let node = self
            .nodes
            .remove(&id)
            .ok_or_else(|| fatal(format!("node {id} is not running")))?;
        node.shutdown().await;
        Ok(())
    }

    /// Restarts a stopped node on its old address with its old data.
    pub async fn restart(&mut self, id: NodeId) -> Result<(), SequencerError> {
        let addr = *self
            .addrs
            .get(&id)
            .ok_or_else(|| fatal(format!("node {id} never ran")))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        // The old process's socket and database lock are released asynchronously; retry briefly.
        loop {
            match self.launch(id, addr).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "restart not possible yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops a node, deletes all its data, and starts it empty on its old address.
    pub async fn wipe(&mut self, id: NodeId) -> Result<(), SequencerError> {
        if self.nodes.contains_key(&id) {
            self.kill(id).await?;
        }
        let dir = self.dir.path().join(format!("node-{id}"));
        std::fs::remove_dir_all(&dir).map_err(|e| fatal(format!("wipe {dir:?}: {e}")))?;
        self.restart(id).await
    }

    /// Cuts the link between two nodes, both ways.
    pub fn partition(&self, a: NodeId, b: NodeId) {
        if let Some(n) = self.nodes.get(&a) {
            n.partitions().block(b);
        }
        if let Some(n) = self.nodes.get(&b) {
            n.partitions().block(a);
        }
    }

    /// Isolates a node from all others.
    pub fn isolate(&self, id: NodeId) {
        for other in self.addrs.keys().copied().filter(|o| *o != id) {
            self.partition(id, other);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for n in self.nodes.values() {
            n.partitions().heal();
        }
    }

    /// Appends through whichever node leads the shard, following leader changes and backing off on
    /// pushback, until `timeout`.
    pub async fn append(
        &self,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(NodeId, Vec<Appended>), SequencerError> {
        let deadline = Instant::now() + timeout;
        let mut target = self.nodes.keys().next().copied().unwrap_or(1);
        loop {
            let result = match self.nodes.get(&target) {
                Some(node) => node.append(shard, entries.clone()).await,
                None => Err(SequencerError::NotLeader { shard, leader: None }),
            };
            match result {
                Ok(r) => return Ok((target, r)),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    match e {
                        SequencerError::NotLeader {
                            leader: Some((id, _)),
                            ..
                        } if self.nodes.contains_key(&id) && id != target => {
                            target = id;
                            continue;
                        }
                        SequencerError::Pushback { retry_after } => {
                            tokio::time::sleep(retry_after.min(Duration::from_millis(100))).await
                        }
                        _ => {
                            // Unknown leader or a node that is down: try the next running node.
                            let ids: Vec<NodeId> = self.running();
                            let pos = ids.iter().position(|i| *i == target).map_or(0, |p| p + 1);
                            target = ids[pos % ids.len().max(1)];
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the stored checkpoint of `shard` covers `size` entries; returns its size.
    pub async fn wait_stored(
        &self,
        shard: ShardId,
        size: u64,
        timeout: Duration,
    ) -> Result<u64, SequencerError> {
        let bucket = self.shard_bucket(shard)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = stored_checkpoint(&bucket).await?
                && c.size >= size
            {
                return Ok(c.size);
            }
            if Instant::now() > deadline {
                return Err(SequencerError::Timeout("checkpoint not published".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The bucket of one shard.
    pub fn shard_bucket(&self, shard: ShardId) -> Result<Bucket, SequencerError> {
        let sc = self
            .shards
            .iter()
            .find(|s| s.shard.id == shard)
            .ok_or(SequencerError::UnknownShard(shard))?;
        Ok(self.bucket.child(&sc.shard.prefix()))
    }

    /// The verifier key of a shard.
    pub fn vkey(&self, shard: ShardId) -> Result<VerifierKey, SequencerError> {
        let sc = self
            .shards
            .iter()
            .find(|s| s.shard.id == shard)
            .ok_or(SequencerError::UnknownShard(shard))?;
        VerifierKey::parse(&sc.shard.vkey).map_err(|e| fatal(e.to_string()))
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for id in self.running() {
            let _ = self.kill(id).await;
        }
    }
}

/// Parses (without verifying) a signed checkpoint note.
pub fn parse_checkpoint(note: &[u8]) -> Option<Checkpoint> {
    Checkpoint::parse_note_unverified(note).ok()
}

/// Reads and parses (without verifying) the stored checkpoint.
pub async fn stored_checkpoint(bucket: &Bucket) -> Result<Option<Checkpoint>, SequencerError> {
    let Some(raw) = bucket
        .get("checkpoint")
        .await
        .map_err(|e| SequencerError::Retryable(e.to_string()))?
    else {
        return Ok(None);
    };
    Checkpoint::parse_note_unverified(&raw)
        .map(Some)
        .map_err(|e| fatal(e.to_string()))
}

/// Audits a shard's published files with the shared verifier: the checkpoint's signature, every bundle,
/// every hash tile recomputed from the entries, the root. Returns the entries and tiles.
pub async fn verify_published(bucket: &Bucket, vkey: &VerifierKey) -> Result<AuditedLog, SequencerError> {
    TileReader::new(bucket.clone(), vkey.clone(), TileCache::new(0))
        .with_checkpoint_ttl(Duration::ZERO)
        .audit()
        .await
        .map_err(|e| fatal(format!("published log does not verify: {e}")))
}

/// Checks that `older` is consistent with the tree in `log` (a consistency proof from the tiles
/// verifies between the two roots).
pub fn check_consistent(log: &AuditedLog, older: &Checkpoint) -> Result<(), SequencerError> {
    if older.size == 0 {
        return Ok(());
    }
    let proof = cairn_tlog::consistency_proof(&log.tiles, older.size, log.checkpoint.size)
        .map_err(|e| fatal(e.to_string()))?;
    cairn_tlog::verify_consistency(
        older.size,
        log.checkpoint.size,
        &proof,
        &older.root,
        &log.checkpoint.root,
    )
    .map_err(|e| {
        fatal(format!(
            "checkpoint {} is not consistent with {}: {e}",
            older.size, log.checkpoint.size
        ))
    })
}

/// The leaf hash as a [`Hash`].
pub fn appended_hash(a: &Appended) -> Hash {
    Hash(a.leaf_hash)
}
