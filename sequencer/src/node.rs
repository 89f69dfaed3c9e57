//! A sequencer node: starts the Raft groups of the shards it hosts with their proposers and publishers
//! (each shard's runtime is in `shard.rs`), and is the library API the log-server calls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::bucket::Bucket;
use crate::metrics;
// The configuration types were defined here first; `node::NodeConfig` and friends stay valid paths.
pub use crate::config::{BatchConfig, NodeConfig, RaftTiming, ShardConfig};
use crate::error::SequencerError;
use crate::network::{Channels, Partitions, RaftRegistry, RaftService};
use crate::shard::{Hosted, HostedShard, PendingAppend, ensure_leader, map_write_err};
use crate::state::ReplicatedState;
use crate::store::open_db;
use crate::types::{Appended, Command, NodeId, ShardId, TypeConfig};

/// How long a freeze may take to commit once the leader has confirmed its majority.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

mod groups;

/// What the node's tasks and the Raft server share.
pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) config: NodeConfig,
    pub(crate) shards: Hosted,
    partitions: Arc<Partitions>,
    /// Channels to the peers' Raft listeners (shared with every shard's Raft network).
    pub(crate) channels: Channels,
    /// The members' gRPC API URLs.
    pub(crate) directory: Arc<crate::membership::Directory>,
    /// The shard map, as the control group's log has it here.
    pub(crate) map: crate::control::MapCache,
    db: Arc<rocksdb::DB>,
    raft_config: Arc<Config>,
    recorders: metrics::Recorders,
    stop: watch::Sender<bool>,
    /// The tasks of every group started here (proposers, publishers) and of the node.
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Archived shards whose replica this run of the node has deleted.
    archived: std::sync::Mutex<std::collections::BTreeSet<ShardId>>,
    /// The cluster settings in effect here (the control map's, else the configuration's).
    pub(crate) settings: Arc<crate::control::settings::Live>,
}

impl RaftRegistry for NodeInner {
    fn raft(&self, shard: ShardId) -> Option<Raft<TypeConfig>> {
        self.shards.get(shard).map(|s| s.raft.clone())
    }

    fn partitions(&self) -> &Partitions {
        &self.partitions
    }

    fn campaign(
        &self,
        shard: ShardId,
        payload: Vec<u8>,
    ) -> futures::future::BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        Box::pin(async move {
            let s = self
                .shards
                .get(shard)
                .ok_or_else(|| tonic::Status::not_found(format!("shard {shard} is not hosted here")))?;
            let req: crate::placement::Campaign = postcard::from_bytes(&payload)
                .map_err(|e| tonic::Status::invalid_argument(format!("bad campaign payload: {e}")))?;
            let result = crate::placement::serve_campaign(&s, req).await;
            postcard::to_allocvec(&result).map_err(|e| tonic::Status::internal(e.to_string()))
        })
    }

    fn describe(&self) -> Result<Vec<u8>, tonic::Status> {
        let me = crate::membership::Identity {
            id: self.id,
            api_url: self.config.api_url.clone(),
        };
        postcard::to_allocvec(&me).map_err(|e| tonic::Status::internal(e.to_string()))
    }

    fn control(&self, payload: Vec<u8>) -> futures::future::BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        Box::pin(async move { Ok(crate::control::serve(self, &payload).await) })
    }
}

/// One shard's Raft group as a node sees it ([`Node::group_status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The shard.
    pub shard: ShardId,
    /// Its leader, as this node knows it.
    pub leader: Option<NodeId>,
    /// The Raft term this node is in.
    pub term: u64,
    /// Whether this node leads it.
    pub leading: bool,
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Non-voting members (catching up).
    pub learners: Vec<NodeId>,
    /// Whether a membership change is under way (joint consensus).
    pub joint: bool,
    /// The last index in this node's Raft log.
    pub last_log_index: Option<u64>,
    /// The last index this node applied.
    pub applied_index: Option<u64>,
    /// On the leader: the log index each member is known to hold (`None`: nothing yet).
    pub matched: BTreeMap<NodeId, Option<u64>>,
}

/// A running node. Dropping it without [`Node::shutdown`] leaves tasks running until the runtime ends.
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
    db: Arc<rocksdb::DB>,
    addr: SocketAddr,
    registry: prometheus::Registry,
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
                install_snapshot_timeout: config.snapshot_timeout.as_millis() as u64,
                ..Default::default()
            }
            .validate()
            .map_err(|e| SequencerError::Fatal(e.to_string()))?,
        );
        let channels = Channels::new(
            config
                .tls
                .as_ref()
                .map(|t| t.connector().with_timeout(Duration::from_millis(500))),
        );
        let (stop, _) = watch::channel(false);
        let recorders = metrics::recorders();
        // The same partition table filters outgoing messages (network factories) and incoming ones (server).
        let inner = Arc::new(NodeInner {
            id: config.id,
            config: config.clone(),
            shards: Hosted::default(),
            partitions: Arc::new(Partitions::default()),
            channels,
            directory: Arc::new(crate::membership::Directory::new(config.peer_urls.clone())),
            map: Default::default(),
            db: db.clone(),
            raft_config,
            recorders: recorders.clone(),
            stop: stop.clone(),
            tasks: Default::default(),
            archived: Default::default(),
            settings: Arc::new(crate::control::settings::Live::new(&config)),
        });
        inner.host_at_start().await?;
        let registry = metrics::registry(config.id, inner.shards.clone(), &recorders);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(crate::placement::balance(
            inner.channels.clone(),
            config.timing,
            config.id,
            inner.shards.clone(),
            inner.settings.clone(),
            stop.subscribe(),
        )));
        tasks.push(tokio::spawn(crate::membership::resolve(
            inner.channels.clone(),
            config.id,
            inner.shards.clone(),
            inner.directory.clone(),
            stop.subscribe(),
        )));
        tasks.push(tokio::spawn(crate::control::run(inner.clone(), stop.subscribe())));
        let service = RaftService::new(inner.clone());
        let mut stop_rx = stop.subscribe();
        let incoming = cairn_proto::tls::Incoming::new(
            listener,
            config.tls.clone().map(|t| (t, cairn_proto::tls::Serve::Raft)),
        );
        tasks.push(tokio::spawn(async move {
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
        inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
        tracing::info!(node = config.id, %addr, shards = config.shards.len(), "sequencer node started");
        Ok(Self {
            inner,
            db,
            addr,
            registry,
        })
    }

    /// The node's Prometheus metrics: per shard Raft term, leadership, log and applied indexes,
    /// sequenced / published / unpublished entries, seconds since the leader last published, queue
    /// depth, pushbacks, and proposal and publishing-round latency histograms.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
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

    /// The ids of the log shards hosted here (configured ones and those of the control map this node
    /// holds the key of), in order.
    pub fn shard_ids(&self) -> Vec<ShardId> {
        self.inner.shards.logs().iter().map(|s| s.id()).collect()
    }

    /// The ids of every Raft group hosted here: the control group ([`crate::control::CONTROL`]) and
    /// the log shards. Membership changes apply to all of them.
    pub fn group_ids(&self) -> Vec<ShardId> {
        self.inner.shards.all().iter().map(|s| s.id()).collect()
    }

    pub(crate) fn shard(&self, id: ShardId) -> Result<Arc<HostedShard>, SequencerError> {
        self.inner.shards.get(id).ok_or(SequencerError::UnknownShard(id))
    }

    /// The Raft handle of a shard (metrics, membership, tests).
    pub fn raft(&self, shard: ShardId) -> Result<Raft<TypeConfig>, SequencerError> {
        Ok(self.shard(shard)?.raft.clone())
    }

    /// A shard's replicated state.
    pub fn state(&self, shard: ShardId) -> Result<ReplicatedState, SequencerError> {
        Ok(self.shard(shard)?.sm.state())
    }

    /// Whether a shard is frozen, as this replica has applied it (cheap: read on every submission).
    /// An archived shard, no longer hosted, is frozen.
    pub fn frozen(&self, shard: ShardId) -> Result<bool, SequencerError> {
        match self.shard(shard) {
            Ok(s) => Ok(s.sm.frozen()),
            Err(_) if shard != crate::control::CONTROL && self.archived(shard) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The current leader of a shard, as this node knows it.
    pub fn leader(&self, shard: ShardId) -> Option<NodeId> {
        self.inner
            .shards
            .get(shard)
            .and_then(|s| s.raft.metrics().borrow().current_leader)
    }

    /// Creates a new cluster: every hosted shard's Raft group starts with `members` as voters.
    /// Call once, on one node.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), SequencerError> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        // Configured shards and the control group only: a shard of the control map starts with the
        // members recorded for it, once a majority holds its key (`control`).
        let configured: Vec<ShardId> = self.inner.config.shards.iter().map(|s| s.shard.id).collect();
        for shard in self.inner.shards.all() {
            if shard.id() != crate::control::CONTROL && !configured.contains(&shard.id()) {
                continue;
            }
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

    /// Moves the leadership of `shard` from this node, which must lead it, to the voter `to`, and
    /// returns once `to` leads. The shard's writes pause meanwhile (a few Raft round trips with three
    /// voters); callers waiting then meet `NotLeader` naming the new leader. The move is an operator's
    /// choice: the leader placement balancer leaves the shard where it is for ten minutes. See
    /// `placement`.
    pub async fn transfer_leader(&self, shard: ShardId, to: NodeId) -> Result<(), SequencerError> {
        let s = self.shard(shard)?;
        crate::placement::transfer(
            &self.inner.channels,
            &self.inner.config.timing,
            self.inner.id,
            &s,
            to,
            true,
        )
        .await
    }

    /// What this node knows of `shard`'s Raft group.
    pub fn group_status(&self, shard: ShardId) -> Result<GroupStatus, SequencerError> {
        let m = self.shard(shard)?.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let mut voters: Vec<NodeId> = membership.voter_ids().collect();
        voters.sort_unstable();
        let mut learners: Vec<NodeId> = membership.learner_ids().collect();
        learners.sort_unstable();
        let matched = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.as_ref().map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(GroupStatus {
            shard,
            leader: m.current_leader,
            term: m.current_term,
            leading: m.state == openraft::ServerState::Leader,
            voters,
            learners,
            joint: membership.get_joint_config().len() > 1,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            matched,
        })
    }

    /// Appends entries to a shard; returns once they are committed on a majority and applied, with each
    /// entry's index (the original index for a duplicate). Nothing is appended if any entry is invalid.
    pub async fn append(
        &self,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
    ) -> Result<Vec<Appended>, SequencerError> {
        if shard == crate::control::CONTROL {
            return Err(SequencerError::UnknownShard(shard));
        }
        let s = self.shard(shard)?;
        self.inner.map.admits(shard)?;
        for (i, e) in entries.iter().enumerate() {
            cairn_tlog::bundle::check_entry(i, e).map_err(|e| SequencerError::Invalid(e.to_string()))?;
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        ensure_leader(self.inner.id, &s)?;
        let (frozen, unpublished) = s.sm.admission();
        if frozen {
            return Err(SequencerError::Frozen(shard));
        }
        if unpublished >= self.inner.settings.max_unpublished() {
            s.recorders
                .pushbacks
                .with_label_values(&[s.label().as_str()])
                .inc();
            return Err(SequencerError::Pushback {
                retry_after: Duration::from_millis(500),
            });
        }
        let (tx, rx) = oneshot::channel();
        s.queue
            .try_send(PendingAppend {
                entries,
                span: if crate::trace::on() {
                    tracing::Span::current()
                } else {
                    tracing::Span::none()
                },
                reply: tx,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    s.recorders
                        .pushbacks
                        .with_label_values(&[s.label().as_str()])
                        .inc();
                    SequencerError::Pushback {
                        retry_after: Duration::from_millis(50),
                    }
                }
                // The node is shutting down: another node takes the write.
                mpsc::error::TrySendError::Closed(_) => {
                    SequencerError::Retryable("the node is shutting down".into())
                }
            })?;
        rx.await
            .map_err(|_| SequencerError::Retryable("proposer dropped the request".into()))?
    }

    /// The index of each entry (by leaf hash) that is in `shard`'s log, as of now and for good: on a
    /// frozen shard (from any replica that applied the freeze) the answer is final; on an active one
    /// this node must lead it, and the lookup waits until every append queued here before the call
    /// has been applied, so an earlier attempt of the same entry is either found or never lands here
    /// after being queued later (the caller routes it elsewhere).
    pub async fn find(
        &self,
        shard: ShardId,
        leaves: &[[u8; 32]],
    ) -> Result<Vec<Option<u64>>, SequencerError> {
        if shard == crate::control::CONTROL {
            return Err(SequencerError::UnknownShard(shard));
        }
        let s = self.shard(shard)?;
        if !s.sm.admission().0 {
            ensure_leader(self.inner.id, &s)?;
            // An empty append is a barrier: the proposer answers it once its batch (and so every
            // batch proposed before it) is committed and applied.
            let (tx, rx) = oneshot::channel();
            let barrier = PendingAppend {
                entries: Vec::new(),
                span: tracing::Span::none(),
                reply: tx,
            };
            s.queue
                .send(barrier)
                .await
                .map_err(|_| SequencerError::Retryable("the node is shutting down".into()))?;
            match rx.await {
                Ok(Ok(_)) | Ok(Err(SequencerError::Frozen(_))) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(SequencerError::Retryable("proposer dropped the request".into())),
            }
        }
        let found = leaves
            .iter()
            .map(|l| {
                s.sm.lookup(l)
                    .map_err(|e| SequencerError::Retryable(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Archived meanwhile: its replica may be gone, so "absent" would not be an answer.
        if *s.halt.borrow() {
            return Err(SequencerError::Retryable(format!(
                "shard {shard} stopped here during the look-up; retry"
            )));
        }
        Ok(found)
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
        let mut uploaded = s.uploaded.subscribe();
        let mut stopped = s.watch_stopped();
        let wait = async {
            tokio::select! {
                biased;
                r = uploaded.wait_for(|size| *size > index) => {
                    // The sender goes away only when the node shuts down: the entries are sequenced and
                    // another leader publishes them.
                    r.map(drop).map_err(|_| SequencerError::Retryable("the node is shutting down".into()))
                }
                // A stopped publisher never gets there: say why now rather than at the timeout.
                r = stopped.wait_for(Option::is_some) => Err(SequencerError::Fatal(format!(
                    "publishing of shard {shard} stopped: {}",
                    r.ok().and_then(|why| why.clone()).unwrap_or_default()
                ))),
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            // Say what publication waits for, when the publisher knows (such as witnesses).
            SequencerError::Timeout(match s.held() {
                Some(why) => format!("waiting for publication: {why}"),
                None => "waiting for publication".into(),
            })
        })??;
        Ok(s.sm.published_note())
    }

    /// The newest checkpoint committed through Raft (it is in object storage, or about to be).
    pub fn checkpoint(&self, shard: ShardId) -> Result<Option<Vec<u8>>, SequencerError> {
        let p = self.shard(shard)?.sm.published();
        Ok((!p.note.is_empty()).then_some(p.note))
    }

    /// The shard's identity as replicated in its Raft group, once the leader has recorded it.
    pub fn info(&self, shard: ShardId) -> Result<Option<cairn_store::Shard>, SequencerError> {
        Ok(self.shard(shard)?.sm.state().info)
    }

    /// Freezes a shard: later appends are refused and the publisher writes a final checkpoint. This
    /// node must lead the shard and reach a majority of its voters: without one the freeze is refused
    /// (`Refused`) with nothing changed. A freeze that does not commit within [`FREEZE_TIMEOUT`]
    /// (the majority went away just then) is a `Timeout` and may still take effect.
    pub async fn freeze(&self, shard: ShardId) -> Result<(), SequencerError> {
        if shard == crate::control::CONTROL {
            return Err(SequencerError::UnknownShard(shard));
        }
        freeze_hosted(&self.inner, &self.shard(shard)?).await
    }

    /// Why this node stopped publishing `shard` for good (a fatal error such as a tile in object storage
    /// that differs from the replicated log), or `None` while its publisher runs (or for an unknown
    /// shard). Only a restart of the node starts a stopped publisher again.
    pub fn publishing_stopped(&self, shard: ShardId) -> Option<String> {
        self.inner.shards.get(shard).and_then(|s| s.publishing_stopped())
    }

    /// Every shard whose publisher stopped on this node, with the reason, by shard id (for readiness
    /// checks).
    pub fn stopped_shards(&self) -> Vec<(ShardId, String)> {
        self.inner
            .shards
            .logs()
            .iter()
            .filter_map(|s| s.publishing_stopped().map(|why| (s.id(), why)))
            .collect()
    }

    /// How many times a publisher on this node stopped on a fatal error since the node started (a
    /// counter for metrics).
    pub fn publisher_stops(&self) -> u64 {
        self.inner.shards.logs().iter().map(|s| s.publisher_stops()).sum()
    }

    /// Resolves when the Raft group of any shard on this node has stopped on a fatal error (a failed
    /// write or read of the database, such as `ENOSPC` when the disk is full, or a panic), with the
    /// shard and the error; never while every group runs. A stopped group is not restarted in place: every group
    /// shares the database, which refuses writes after such an error until it is reopened, so the
    /// node must be shut down and started again (a supervisor's restart). An orderly shutdown is not
    /// a failure.
    pub async fn failed(&self) -> (ShardId, String) {
        loop {
            // Groups started later (shards added at runtime) are watched from then on.
            let mut added = self.inner.shards.watch();
            added.borrow_and_update();
            let watches: Vec<_> = self.inner.shards.all().into_iter().map(watch_fatal).collect();
            let any = async {
                if watches.is_empty() {
                    std::future::pending().await
                } else {
                    futures::future::select_all(watches).await.0
                }
            };
            tokio::select! {
                failed = any => return failed,
                _ = added.changed() => {}
            }
        }
    }

    /// Stops every task and Raft group and closes the database. Returns once the database is closed,
    /// so the same directory can be opened again (or deleted) right away.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        for shard in self.inner.shards.all() {
            if let Err(e) = shard.raft.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown");
            }
        }
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
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

/// Resolves when `s`'s Raft group stops on a fatal error, with the shard and the error.
fn watch_fatal(s: Arc<HostedShard>) -> futures::future::BoxFuture<'static, (ShardId, String)> {
    let id = s.id();
    let mut metrics = s.raft.metrics();
    Box::pin(async move {
        let fatal = |m: &openraft::RaftMetrics<NodeId, BasicNode>| match &m.running_state {
            Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
            Err(e) => Some(e.to_string()),
        };
        loop {
            if let Some(why) = fatal(&metrics.borrow_and_update()) {
                return (id, why);
            }
            if metrics.changed().await.is_err() {
                // The Raft core is gone. An orderly stop says so (`Fatal::Stopped`) before it goes; a
                // core that panicked never reports: it ended while still running.
                if metrics.borrow().running_state.is_ok() {
                    return (
                        id,
                        "the Raft core ended without reporting why (it panicked)".into(),
                    );
                }
                return std::future::pending().await;
            }
        }
    })
}

/// Freezes a shard hosted here (see [`Node::freeze`]).
pub(crate) async fn freeze_hosted(inner: &NodeInner, s: &Arc<HostedShard>) -> Result<(), SequencerError> {
    let shard = s.id();
    crate::shard::confirm_quorum(inner.id, s, inner.config.timing.quorum_check()).await?;
    let _writing = s.gate.read().await;
    let span = tracing::info_span!("raft_freeze", shard, raft_index = tracing::field::Empty);
    let resp = tokio::time::timeout(
        FREEZE_TIMEOUT,
        s.raft.client_write(Command::Freeze).instrument(span.clone()),
    )
    .await
    .map_err(|_| {
        SequencerError::Timeout(format!(
            "for the freeze of shard {shard} to commit (a majority of its voters stopped answering); it may still take effect: see `cairn shard list`"
        ))
    })?
    .map_err(|e| map_write_err(shard, e))?;
    span.record("raft_index", resp.log_id.index);
    Ok(())
}
