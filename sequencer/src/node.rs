//! A sequencer node: the Raft groups of the shards it hosts, the batching proposer, the publisher, and
//! the library API the log-server calls.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_tlog::Signer;
use openraft::error::{ForwardToLeader, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::bucket::Bucket;
use crate::error::SequencerError;
use crate::network::{Channels, NetworkFactory, Partitions, RaftRegistry, RaftService};
use crate::publisher;
use crate::sm::{ShardSm, StateMachine};
use crate::store::{LogStore, open_db};
use crate::types::{Appended, Command, NodeId, Reply, ShardId, ShardInfo, TypeConfig};

/// A shard hosted by a node.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Shard id.
    pub id: ShardId,
    /// Checkpoint origin (also the key name).
    pub origin: String,
    /// Checkpoint signing key. A node without it can replicate the shard but not publish it as leader.
    pub signer: Option<Signer>,
    /// The shard's verifier key string.
    pub vkey: String,
    /// Where the shard's tiles live inside the node's bucket, e.g. `logs/2026h2-a`.
    pub prefix: String,
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
    /// Pause between publishing rounds.
    pub publish_interval: Duration,
    /// Build a snapshot (and purge the log) after this many applied Raft entries.
    pub snapshot_every: u64,
    /// Raft entries kept behind a snapshot (lets slightly lagging followers catch up without one).
    pub keep_after_snapshot: u64,
    /// Refuse appends while this many entries are sequenced but not published.
    pub max_unpublished: u64,
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
            max_unpublished: 2_000_000,
        }
    }
}

pub(crate) struct PendingAppend {
    entries: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<Vec<Appended>, SequencerError>>,
}

/// A shard's runtime on this node.
pub(crate) struct Shard {
    pub(crate) config: ShardConfig,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) sm: Arc<ShardSm>,
    pub(crate) bucket: Bucket,
    queue: mpsc::Sender<PendingAppend>,
    /// Size of the newest checkpoint this node has written to object storage.
    pub(crate) uploaded: watch::Sender<u64>,
}

pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) config: NodeConfig,
    pub(crate) shards: HashMap<ShardId, Arc<Shard>>,
    partitions: Arc<Partitions>,
}

impl RaftRegistry for NodeInner {
    fn raft(&self, shard: ShardId) -> Option<Raft<TypeConfig>> {
        self.shards.get(&shard).map(|s| s.raft.clone())
    }

    fn partitions(&self) -> &Partitions {
        &self.partitions
    }
}

/// A running node. Dropping it without [`Node::shutdown`] leaves tasks running until the runtime ends.
pub struct Node {
    inner: Arc<NodeInner>,
    db: Arc<rocksdb::DB>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn to_retryable(e: impl std::fmt::Display) -> SequencerError {
    SequencerError::Retryable(e.to_string())
}

impl Node {
    /// Opens the database, starts every hosted shard's Raft group, the Raft gRPC server, the proposers
    /// and the publishers.
    pub async fn start(config: NodeConfig) -> Result<Self, SequencerError> {
        let db = open_db(&config.data_dir)
            .map_err(|e| SequencerError::Fatal(format!("open {:?}: {e}", config.data_dir)))?;
        let listener = tokio::net::TcpListener::bind(config.raft_listen)
            .await
            .map_err(|e| SequencerError::Fatal(format!("bind {}: {e}", config.raft_listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SequencerError::Fatal(e.to_string()))?;
        let raft_config = Arc::new(
            Config {
                cluster_name: "cairn".into(),
                heartbeat_interval: config.timing.heartbeat_ms,
                election_timeout_min: config.timing.election_min_ms,
                election_timeout_max: config.timing.election_max_ms,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
                max_in_snapshot_log_to_keep: config.keep_after_snapshot,
                max_payload_entries: 64,
                ..Default::default()
            }
            .validate()
            .map_err(|e| SequencerError::Fatal(e.to_string()))?,
        );
        let channels = Channels::default();
        let partitions = Arc::new(Partitions::default());
        let (stop, _) = watch::channel(false);
        let mut shards = HashMap::new();
        let mut queues = Vec::new();
        for sc in &config.shards {
            let sm = ShardSm::open(db.clone(), sc.id).map_err(|e| SequencerError::Fatal(e.to_string()))?;
            let network = NetworkFactory {
                shard: sc.id,
                from: config.id,
                channels: channels.clone(),
                partitions: partitions.clone(),
            };
            let raft = Raft::new(
                config.id,
                raft_config.clone(),
                network,
                LogStore::new(db.clone(), sc.id),
                StateMachine(sm.clone()),
            )
            .await
            .map_err(|e| SequencerError::Fatal(e.to_string()))?;
            let (tx, rx) = mpsc::channel(config.batch.queue);
            let bucket = config.bucket.child(&sc.prefix);
            let (uploaded, _) = watch::channel(0);
            shards.insert(
                sc.id,
                Arc::new(Shard {
                    config: sc.clone(),
                    raft,
                    sm,
                    bucket,
                    queue: tx,
                    uploaded,
                }),
            );
            queues.push((sc.id, rx));
        }
        // The same partition table filters outgoing messages (network factories) and incoming ones (server).
        let inner = Arc::new(NodeInner {
            id: config.id,
            config: config.clone(),
            shards,
            partitions,
        });
        let mut tasks = Vec::new();
        for (id, rx) in queues {
            let shard = inner.shards[&id].clone();
            tasks.push(tokio::spawn(proposer(
                shard.clone(),
                config.batch,
                rx,
                stop.subscribe(),
            )));
            tasks.push(tokio::spawn(publisher::run(
                inner.clone(),
                shard,
                stop.subscribe(),
            )));
        }
        let service = RaftService::new(inner.clone());
        let mut stop_rx = stop.subscribe();
        tasks.push(tokio::spawn(async move {
            // `tcp_nodelay` on the builder only applies to sockets tonic binds itself.
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let shutdown = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            if let Err(e) = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!(error = %e, "raft gRPC server failed");
            }
        }));
        tracing::info!(node = config.id, %addr, shards = config.shards.len(), "sequencer node started");
        Ok(Self {
            inner,
            db,
            addr,
            stop,
            tasks,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address the Raft server is bound to.
    pub fn raft_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address peers should use.
    pub fn advertise_addr(&self) -> String {
        self.inner
            .config
            .raft_advertise
            .clone()
            .unwrap_or_else(|| self.addr.to_string())
    }

    /// The object storage this node publishes to.
    pub fn bucket(&self) -> &Bucket {
        &self.inner.config.bucket
    }

    /// Link controls for tests and drills.
    pub fn partitions(&self) -> &Partitions {
        &self.inner.partitions
    }

    /// The ids of the shards hosted here.
    pub fn shard_ids(&self) -> Vec<ShardId> {
        let mut ids: Vec<ShardId> = self.inner.shards.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn shard(&self, id: ShardId) -> Result<&Arc<Shard>, SequencerError> {
        self.inner.shards.get(&id).ok_or(SequencerError::UnknownShard(id))
    }

    /// The Raft handle of a shard (metrics, membership, tests).
    pub fn raft(&self, shard: ShardId) -> Result<Raft<TypeConfig>, SequencerError> {
        Ok(self.shard(shard)?.raft.clone())
    }

    /// A shard's replicated state.
    pub fn state(&self, shard: ShardId) -> Result<crate::sm::ShardState, SequencerError> {
        Ok(self.shard(shard)?.sm.state())
    }

    /// Whether a shard is frozen, as this replica has applied it (cheap: read on every submission).
    pub fn frozen(&self, shard: ShardId) -> Result<bool, SequencerError> {
        Ok(self.shard(shard)?.sm.frozen())
    }

    /// The current leader of a shard, as this node knows it.
    pub fn leader(&self, shard: ShardId) -> Option<NodeId> {
        self.inner
            .shards
            .get(&shard)
            .and_then(|s| s.raft.metrics().borrow().current_leader)
    }

    /// Creates a new cluster: every hosted shard's Raft group starts with `members` as voters.
    /// Call once, on one node.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), SequencerError> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        for shard in self.inner.shards.values() {
            // A restarted node already has its membership; asking again would only log an error.
            if shard.raft.is_initialized().await.map_err(to_retryable)? {
                continue;
            }
            match shard.raft.initialize(nodes.clone()).await {
                Ok(()) => {}
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(to_retryable(e)),
            }
        }
        Ok(())
    }

    /// Adds `id` as a learner of `shard` (this node must lead it) and waits until it has caught up.
    pub async fn add_learner(&self, shard: ShardId, id: NodeId, addr: String) -> Result<(), SequencerError> {
        let s = self.shard(shard)?;
        s.raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(|e| map_write_err(shard, e))?;
        Ok(())
    }

    /// Makes `voters` the voting members of `shard` (this node must lead it); other members become
    /// learners if `keep_learners`, or are removed.
    pub async fn change_membership(
        &self,
        shard: ShardId,
        voters: BTreeSet<NodeId>,
        keep_learners: bool,
    ) -> Result<(), SequencerError> {
        let s = self.shard(shard)?;
        s.raft
            .change_membership(voters, keep_learners)
            .await
            .map_err(|e| map_write_err(shard, e))?;
        Ok(())
    }

    /// Appends entries to a shard; returns once they are committed on a majority and applied, with each
    /// entry's index (the original index for a duplicate). Nothing is appended if any entry is invalid.
    pub async fn append(
        &self,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
    ) -> Result<Vec<Appended>, SequencerError> {
        let s = self.shard(shard)?;
        for (i, e) in entries.iter().enumerate() {
            cairn_tlog::bundle::check_entry(i, e).map_err(|e| SequencerError::Invalid(e.to_string()))?;
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        ensure_leader(self.inner.id, s)?;
        let (state, published) = s.sm.view();
        if state.frozen {
            return Err(SequencerError::Frozen(shard));
        }
        if state.size.saturating_sub(published.size) >= self.inner.config.max_unpublished {
            return Err(SequencerError::Pushback {
                retry_after: Duration::from_millis(500),
            });
        }
        let (tx, rx) = oneshot::channel();
        s.queue
            .try_send(PendingAppend { entries, reply: tx })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SequencerError::Pushback {
                    retry_after: Duration::from_millis(50),
                },
                mpsc::error::TrySendError::Closed(_) => SequencerError::Fatal("proposer stopped".into()),
            })?;
        rx.await
            .map_err(|_| SequencerError::Retryable("proposer dropped the request".into()))?
    }

    /// Waits until a checkpoint of size greater than `index` has been written to object storage by this
    /// node (its leader), and returns that checkpoint's signed note.
    pub async fn wait_published(
        &self,
        shard: ShardId,
        index: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, SequencerError> {
        let s = self.shard(shard)?;
        let mut rx = s.uploaded.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|size| *size > index))
            .await
            .map_err(|_| SequencerError::Timeout("waiting for publication"))?
            .map_err(|_| SequencerError::Fatal("publisher stopped".into()))?;
        Ok(s.sm.published().note)
    }

    /// The newest checkpoint committed through Raft (it is in object storage, or about to be).
    pub fn checkpoint(&self, shard: ShardId) -> Result<Option<Vec<u8>>, SequencerError> {
        let p = self.shard(shard)?.sm.published();
        Ok((!p.note.is_empty()).then_some(p.note))
    }

    /// The shard's identity as replicated in its Raft group, once the leader has recorded it.
    pub fn info(&self, shard: ShardId) -> Result<Option<ShardInfo>, SequencerError> {
        Ok(self.shard(shard)?.sm.state().info)
    }

    /// Freezes a shard: later appends are refused and the publisher writes a final checkpoint.
    pub async fn freeze(&self, shard: ShardId) -> Result<(), SequencerError> {
        let s = self.shard(shard)?;
        s.raft
            .client_write(Command::Freeze)
            .await
            .map_err(|e| map_write_err(shard, e))?;
        Ok(())
    }

    /// Stops every task and Raft group and closes the database. Returns once the database is closed,
    /// so the same directory can be opened again (or deleted) right away.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for shard in self.inner.shards.values() {
            if let Err(e) = shard.raft.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown");
            }
        }
        for t in self.tasks {
            let _ = t.await;
        }
        drop(self.inner);
        // Requests still in flight (proposals answered with errors) release their handles shortly.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.db) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&self.db) > 1 {
            tracing::error!("database still in use after shutdown");
        }
    }
}

pub(crate) fn ensure_leader(me: NodeId, s: &Shard) -> Result<(), SequencerError> {
    let m = s.raft.metrics().borrow().clone();
    if m.state == ServerState::Leader && m.current_leader == Some(me) {
        return Ok(());
    }
    let leader = m.current_leader.and_then(|id| {
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| (id, n.addr.clone()))
    });
    Err(SequencerError::NotLeader {
        shard: s.config.id,
        leader,
    })
}

pub(crate) fn map_write_err<E>(shard: ShardId, e: RaftError<NodeId, E>) -> SequencerError
where
    E: std::error::Error + openraft::TryAsRef<ForwardToLeader<NodeId, BasicNode>>,
{
    if let Some(f) = e.forward_to_leader::<BasicNode>() {
        return SequencerError::NotLeader {
            shard,
            leader: f.leader_id.zip(f.leader_node.as_ref().map(|n| n.addr.clone())),
        };
    }
    match e {
        RaftError::Fatal(f) => SequencerError::Fatal(f.to_string()),
        RaftError::APIError(api) => SequencerError::Retryable(api.to_string()),
    }
}

/// Groups queued appends into Raft proposals by count, bytes or time, with several in flight.
async fn proposer(
    shard: Arc<Shard>,
    cfg: BatchConfig,
    mut rx: mpsc::Receiver<PendingAppend>,
    mut stop: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight));
    loop {
        let first = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        let mut batch = vec![first];
        let mut count = batch[0].entries.len();
        let mut bytes: usize = batch[0].entries.iter().map(Vec::len).sum();
        let deadline = tokio::time::Instant::now() + cfg.max_delay;
        while count < cfg.max_entries && bytes < cfg.max_bytes {
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    p = rx.recv() => p,
                    _ = tokio::time::sleep_until(deadline) => None,
                },
            };
            let Some(p) = next else { break };
            count += p.entries.len();
            bytes += p.entries.iter().map(Vec::len).sum::<usize>();
            batch.push(p);
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let shard = shard.clone();
        tokio::spawn(async move {
            let mut sizes = Vec::with_capacity(batch.len());
            let mut all = Vec::with_capacity(count);
            let mut replies = Vec::with_capacity(batch.len());
            for p in batch {
                sizes.push(p.entries.len());
                all.extend(p.entries);
                replies.push(p.reply);
            }
            let id = shard.config.id;
            let result = shard.raft.client_write(Command::Append(all)).await;
            drop(permit);
            match result {
                Ok(resp) => match resp.data {
                    Reply::Appended(mut results) => {
                        for (n, reply) in sizes.into_iter().zip(replies).rev() {
                            let tail = results.split_off(results.len() - n);
                            let _ = reply.send(Ok(tail));
                        }
                    }
                    Reply::Frozen => replies
                        .into_iter()
                        .for_each(|r| drop(r.send(Err(SequencerError::Frozen(id))))),
                    other => {
                        let msg = format!("unexpected reply {other:?}");
                        replies
                            .into_iter()
                            .for_each(|r| drop(r.send(Err(SequencerError::Fatal(msg.clone())))));
                    }
                },
                Err(e) => {
                    let err = map_write_err(id, e);
                    for r in replies {
                        let _ = r.send(Err(match &err {
                            SequencerError::NotLeader { shard, leader } => SequencerError::NotLeader {
                                shard: *shard,
                                leader: leader.clone(),
                            },
                            SequencerError::Fatal(m) => SequencerError::Fatal(m.clone()),
                            other => SequencerError::Retryable(other.to_string()),
                        }));
                    }
                }
            }
        });
    }
}
