//! A cluster harness for tests and drills: N nodes on loopback ports in temporary directories, sharing
//! one object store, with `wait_for_leader`, `kill`, `restart`, `wipe`, `partition` and `heal`; and
//! [`verify_published`], which checks a shard's published files with nothing but `cairn-tlog`.
//!
//! Every wait polls with a deadline; nothing sleeps for a fixed time hoping a condition holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_tlog::proof::{ExpandedTile, TileMap, tree_root};
use cairn_tlog::tile::{TILE_WIDTH, TileId, hashes_at_level, partial_tiles};
use cairn_tlog::{BundleId, Checkpoint, Hash, Signer, VerifierKey, bundle, leaf_hash};
use object_store::memory::InMemory;
use object_store::path::Path;
use tempfile::TempDir;

use crate::bucket::Bucket;
use crate::error::SequencerError;
use crate::node::{Node, NodeConfig, RaftTiming, ShardConfig};
use crate::types::{Appended, NodeId, ShardId};

/// A fixed signing key for shard `id` in tests: its origin is `test.cairn.dev/shard-<id>`.
pub fn test_signer(id: ShardId) -> Signer {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&id.to_be_bytes());
    // The origin is a valid key name, so this cannot fail.
    Signer::from_seed(&format!("test.cairn.dev/shard-{id}"), seed).unwrap_or_else(|e| panic!("test key: {e}"))
}

/// Shard configurations `1..=count` with test keys, prefixes `logs/shard-<id>`.
pub fn test_shards(count: u32) -> Vec<ShardConfig> {
    (1..=count)
        .map(|id| {
            let signer = test_signer(id);
            ShardConfig {
                id,
                origin: signer.name().to_owned(),
                vkey: signer.verifier().to_string(),
                signer: Some(signer),
                prefix: format!("logs/shard-{id}"),
            }
        })
        .collect()
}

/// A test cluster.
pub struct Cluster {
    dir: TempDir,
    /// The object store every node publishes to.
    pub bucket: Bucket,
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

    fn config(&self, id: NodeId, addr: SocketAddr) -> NodeConfig {
        // Each node gets its own fault controls over the shared store.
        let bucket = self.bucket.with_own_faults();
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
        let node = Node::start(self.config(id, addr)).await?;
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
        for shard in self.shards.iter().map(|s| s.id) {
            let leader = self.wait_for_leader(shard, Duration::from_secs(20)).await?;
            self.node(leader)?.add_learner(shard, id, addr.clone()).await?;
        }
        Ok(())
    }

    /// Sets the voters of every shard (through each shard's leader); others are removed.
    pub async fn change_membership(&self, voters: &BTreeSet<NodeId>) -> Result<(), SequencerError> {
        for shard in self.shards.iter().map(|s| s.id) {
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
                return Err(SequencerError::Timeout("no leader elected"));
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
                return Err(SequencerError::Timeout("checkpoint not published"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The bucket of one shard.
    pub fn shard_bucket(&self, shard: ShardId) -> Result<Bucket, SequencerError> {
        let sc = self
            .shards
            .iter()
            .find(|s| s.id == shard)
            .ok_or(SequencerError::UnknownShard(shard))?;
        Ok(self.bucket.child(&sc.prefix))
    }

    /// The verifier key of a shard.
    pub fn vkey(&self, shard: ShardId) -> Result<VerifierKey, SequencerError> {
        let sc = self
            .shards
            .iter()
            .find(|s| s.id == shard)
            .ok_or(SequencerError::UnknownShard(shard))?;
        VerifierKey::parse(&sc.vkey).map_err(|e| fatal(e.to_string()))
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
    cairn_tlog::Note::parse(note)
        .ok()
        .and_then(|n| Checkpoint::parse(&n.text).ok())
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
    let note = cairn_tlog::Note::parse(&raw).map_err(|e| fatal(e.to_string()))?;
    Checkpoint::parse(&note.text)
        .map(Some)
        .map_err(|e| fatal(e.to_string()))
}

/// What [`verify_published`] found.
#[derive(Debug)]
pub struct VerifiedLog {
    /// The verified checkpoint.
    pub checkpoint: Checkpoint,
    /// Every entry, in index order.
    pub entries: Vec<Vec<u8>>,
    /// Every hash tile of the tree, by (level, index).
    pub tiles: TileMap,
}

/// Verifies a shard's published files using only `cairn-tlog`: the checkpoint's signature; every hash
/// tile (each level-`l` hash is the root of the full tile below it); the root recomputed from the tiles;
/// every bundle against the level-0 tiles. Returns the entries.
pub async fn verify_published(bucket: &Bucket, vkey: &VerifierKey) -> Result<VerifiedLog, SequencerError> {
    let raw = bucket
        .get("checkpoint")
        .await
        .map_err(|e| fatal(e.to_string()))?
        .ok_or_else(|| fatal("no checkpoint"))?;
    let (checkpoint, _) = Checkpoint::open(&raw, vkey, &[]).map_err(|e| fatal(format!("checkpoint: {e}")))?;
    let size = checkpoint.size;
    let w = u64::from(TILE_WIDTH);
    let mut tiles = TileMap::new();
    let partials = partial_tiles(size);
    for level in 0..=cairn_tlog::tile::MAX_LEVEL {
        let n = hashes_at_level(size, level);
        if n == 0 {
            break;
        }
        for index in 0..n.div_ceil(w) {
            let id = match partials.iter().find(|t| t.level == level && t.index == index) {
                Some(p) => *p,
                None => TileId::full(level, index),
            };
            let data = bucket
                .get(&id.path())
                .await
                .map_err(|e| fatal(e.to_string()))?
                .ok_or_else(|| fatal(format!("missing {id}")))?;
            if data.len() != id.byte_len() {
                return Err(fatal(format!("{id} has {} bytes", data.len())));
            }
            tiles.insert((level, index), data.to_vec());
        }
    }
    // Each hash above level 0 is the root of the full tile below.
    for (&(level, index), data) in &tiles {
        if level == 0 {
            continue;
        }
        for (i, h) in data.chunks_exact(32).enumerate() {
            let below = tiles
                .get(&(level - 1, index * w + i as u64))
                .ok_or_else(|| fatal("missing tile below"))?;
            let root = ExpandedTile::new(below).subtree(0, cairn_tlog::tile::TILE_HEIGHT);
            if root.map(|r| r.0.to_vec()) != Some(h.to_vec()) {
                return Err(fatal(format!(
                    "tile {level}/{index} hash {i} is not the root of the tile below"
                )));
            }
        }
    }
    let root = tree_root(&tiles, size).map_err(|e| fatal(e.to_string()))?;
    if root != checkpoint.root {
        return Err(fatal(format!(
            "root from tiles {root:?} differs from the checkpoint's"
        )));
    }
    let mut entries = Vec::with_capacity(size as usize);
    for index in 0..size.div_ceil(w) {
        let width = (size - index * w).min(w) as u16;
        let id = BundleId { index, width };
        let data = bucket
            .get(&id.path())
            .await
            .map_err(|e| fatal(e.to_string()))?
            .ok_or_else(|| fatal(format!("missing {id}")))?;
        let decoded =
            bundle::decode(&data, Some(usize::from(width))).map_err(|e| fatal(format!("{id}: {e}")))?;
        let level0 = &tiles[&(0, index)];
        for (i, e) in decoded.iter().enumerate() {
            if leaf_hash(e).0 != level0[i * 32..i * 32 + 32] {
                return Err(fatal(format!(
                    "entry {} does not match its leaf hash",
                    index * w + i as u64
                )));
            }
            entries.push(e.to_vec());
        }
    }
    Ok(VerifiedLog {
        checkpoint,
        entries,
        tiles,
    })
}

/// Checks that `older` is consistent with the tree in `log` (a consistency proof from the tiles
/// verifies between the two roots).
pub fn check_consistent(log: &VerifiedLog, older: &Checkpoint) -> Result<(), SequencerError> {
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
