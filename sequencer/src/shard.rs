//! A shard's runtime on one node: its Raft group, state machine, bucket and append queue, whether its
//! publisher still runs, and how Raft's answers map to [`SequencerError`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::error::{ForwardToLeader, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use tokio::sync::{mpsc, oneshot, watch};

use crate::bucket::Bucket;
use crate::metrics::Recorders;
use cairn_store::{TileCache, TileReader};

/// Bytes of tiles cached per shard for the consistency proofs sent to witnesses.
const PROOF_CACHE_BYTES: u64 = 4 << 20;
use crate::config::ShardConfig;
use crate::error::SequencerError;
use crate::state::ShardSm;
use crate::types::{Appended, NodeId, ShardId, TypeConfig};

/// Entries waiting for the proposer, and where their results go.
pub(crate) struct PendingAppend {
    pub(crate) entries: Vec<Vec<u8>>,
    /// The caller's span, which the proposal continues.
    pub(crate) span: tracing::Span,
    pub(crate) reply: oneshot::Sender<Result<Vec<Appended>, SequencerError>>,
}

/// The Raft groups a node hosts, by shard id: its configured shards, the control group
/// ([`crate::control::CONTROL`]) and shards added at runtime. A group is dropped only when its shard
/// is archived; a handle taken before stays usable (its Raft instance shut down, its `halt` set).
#[derive(Clone, Default)]
pub(crate) struct Hosted(Arc<HostedGroups>);

#[derive(Default)]
pub(crate) struct HostedGroups {
    groups: std::sync::RwLock<std::collections::BTreeMap<ShardId, Arc<HostedShard>>>,
    /// How many groups are hosted (changes when one is added).
    count: watch::Sender<usize>,
}

impl Hosted {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, std::collections::BTreeMap<ShardId, Arc<HostedShard>>> {
        self.0.groups.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle that does not keep the groups (and so the database) alive.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<HostedGroups> {
        Arc::downgrade(&self.0)
    }

    /// The groups behind a [`Hosted::downgrade`] handle, while the node runs.
    pub(crate) fn upgrade(weak: &std::sync::Weak<HostedGroups>) -> Option<Self> {
        weak.upgrade().map(Self)
    }

    /// Changes when a group is added.
    pub(crate) fn watch(&self) -> watch::Receiver<usize> {
        self.0.count.subscribe()
    }

    /// The group of `id`, if hosted here.
    pub(crate) fn get(&self, id: ShardId) -> Option<Arc<HostedShard>> {
        self.read().get(&id).cloned()
    }

    /// Every group, the control group included, in id order.
    pub(crate) fn all(&self) -> Vec<Arc<HostedShard>> {
        self.read().values().cloned().collect()
    }

    /// The log shards (every group but the control group), in id order.
    pub(crate) fn logs(&self) -> Vec<Arc<HostedShard>> {
        self.read()
            .values()
            .filter(|s| s.id() != crate::control::CONTROL)
            .cloned()
            .collect()
    }

    /// Stops listing a group (an archived shard); handles taken before stay valid, their Raft
    /// instance shut down.
    pub(crate) fn remove(&self, id: ShardId) -> Option<Arc<HostedShard>> {
        let mut map = self.0.groups.write().unwrap_or_else(|p| p.into_inner());
        let removed = map.remove(&id);
        self.0.count.send_replace(map.len());
        removed
    }

    /// Adds a group; `false` (and nothing changed) when one with the same id is hosted already.
    pub(crate) fn insert(&self, shard: Arc<HostedShard>) -> bool {
        let mut map = self.0.groups.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&shard.id()) {
            return false;
        }
        map.insert(shard.id(), shard);
        self.0.count.send_replace(map.len());
        true
    }
}

/// A shard's runtime on this node.
pub(crate) struct HostedShard {
    pub(crate) config: ShardConfig,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) sm: Arc<ShardSm>,
    pub(crate) bucket: Bucket,
    pub(crate) queue: mpsc::Sender<PendingAppend>,
    /// Size of the newest checkpoint this node has written to object storage.
    pub(crate) uploaded: watch::Sender<u64>,
    /// Why this node's publisher of the shard stopped for good (`None` while it runs).
    stopped: watch::Sender<Option<String>>,
    /// How many times the publisher stopped on a fatal error (at most once per start today; a counter
    /// so that it can be exported as a metric as it is).
    publisher_stops: AtomicU64,
    /// What the publisher is waiting for before it can publish (such as a witness quorum), if anything.
    held: Mutex<Option<String>>,
    /// Reads the shard's uploaded tiles for consistency proofs sent to witnesses.
    pub(crate) tiles: Option<TileReader<Bucket>>,
    /// When this node last wrote a newer checkpoint to object storage.
    uploaded_at: Mutex<Option<Instant>>,
    /// The node's latency histograms and counters.
    pub(crate) recorders: Recorders,
    /// Held shared by each proposal and each publishing round, and exclusively while the leadership
    /// moves to another node (`placement`), which so pauses the shard's writes.
    pub(crate) gate: tokio::sync::RwLock<()>,
    /// Until when an operator's choice of leader holds against the placement balancer.
    pinned_until: Mutex<Option<Instant>>,
    /// Set when this group's proposer and publisher stop: the node stops, or the shard is archived.
    pub(crate) halt: watch::Sender<bool>,
}

impl HostedShard {
    pub(crate) fn new(
        config: ShardConfig,
        raft: Raft<TypeConfig>,
        sm: Arc<ShardSm>,
        bucket: Bucket,
        queue: mpsc::Sender<PendingAppend>,
        recorders: Recorders,
    ) -> Self {
        // The key only verifies checkpoints, which proofs for witnesses do not read (they are made
        // before the checkpoint is stored); a shard whose vkey does not parse fails at start anyway.
        let tiles = config
            .shard
            .verifier()
            .ok()
            .map(|key| TileReader::new(bucket.clone(), key, TileCache::new(PROOF_CACHE_BYTES)));
        Self {
            tiles,
            config,
            raft,
            sm,
            bucket,
            queue,
            uploaded: watch::channel(0).0,
            stopped: watch::channel(None).0,
            publisher_stops: AtomicU64::new(0),
            held: Mutex::new(None),
            uploaded_at: Mutex::new(None),
            recorders,
            gate: tokio::sync::RwLock::new(()),
            pinned_until: Mutex::new(None),
            halt: watch::channel(false).0,
        }
    }

    /// Records that this node wrote a newer checkpoint to object storage now.
    pub(crate) fn mark_uploaded(&self) {
        *self.uploaded_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// How long ago this node last wrote a newer checkpoint (`None` if it never did).
    pub(crate) fn since_upload(&self) -> Option<std::time::Duration> {
        self.uploaded_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    /// Keeps the placement balancer away from this shard until `until` (`None`: no longer).
    pub(crate) fn pin(&self, until: Option<Instant>) {
        *self.pinned_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    /// Whether an operator's choice of leader still holds.
    pub(crate) fn pinned(&self) -> bool {
        self.pinned_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    /// The shard id as a metric label.
    pub(crate) fn label(&self) -> String {
        self.id().to_string()
    }

    /// Records what publication waits for (`None` once it no longer waits).
    pub(crate) fn hold(&self, why: Option<String>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// What publication waits for, if anything.
    pub(crate) fn held(&self) -> Option<String> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The shard id.
    pub(crate) fn id(&self) -> ShardId {
        self.config.shard.id
    }

    /// Records that the publisher stopped for `reason` and counts it. Returns `false` (and changes
    /// nothing) if it had already stopped.
    pub(crate) fn stop_publishing(&self, reason: String) -> bool {
        let first = self.stopped.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            *r = Some(reason);
            true
        });
        if first {
            self.publisher_stops.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Why the publisher stopped, or `None` while it runs.
    pub(crate) fn publishing_stopped(&self) -> Option<String> {
        self.stopped.borrow().clone()
    }

    /// Watches the publisher's stop reason.
    pub(crate) fn watch_stopped(&self) -> watch::Receiver<Option<String>> {
        self.stopped.subscribe()
    }

    /// How many times the publisher stopped on a fatal error since the node started.
    pub(crate) fn publisher_stops(&self) -> u64 {
        self.publisher_stops.load(Ordering::Relaxed)
    }
}

/// `Ok` if `me` leads the shard; otherwise `NotLeader` with the leader's id and address when known.
pub(crate) fn ensure_leader(me: NodeId, s: &HostedShard) -> Result<(), SequencerError> {
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
        shard: s.config.shard.id,
        leader,
    })
}

/// Confirms that this node leads `s` and a majority of its voters acknowledge it now: rounds of
/// heartbeats (openraft's leader check, one round per call) until one gets a majority, for at most
/// `within`. Operator changes (a freeze, a membership change) check this first: proposed to a leader
/// that has lost its quorum, a change would wait in its log and might commit much later, after the
/// operator was told it failed. What remains is a change whose quorum goes away in the moment between
/// the check and the commit: its caller then times out and says that the change may still take effect.
pub(crate) async fn confirm_quorum(
    me: NodeId,
    s: &HostedShard,
    within: std::time::Duration,
) -> Result<(), SequencerError> {
    ensure_leader(me, s)?;
    let shard = s.config.shard.id;
    let deadline = tokio::time::Instant::now() + within;
    let mut why = format!("no majority answered within {within:?}");
    loop {
        match tokio::time::timeout_at(deadline, s.raft.get_read_log_id()).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => {
                let text = e.to_string();
                if let e @ (SequencerError::NotLeader { .. } | SequencerError::Fatal(_)) =
                    map_write_err(shard, e)
                {
                    return Err(e);
                }
                why = text;
            }
            Err(_) => {}
        }
        if tokio::time::Instant::now() + std::time::Duration::from_millis(20) >= deadline {
            return Err(SequencerError::Refused(format!(
                "the leader of shard {shard} does not reach a majority of its voters now ({why}); nothing was changed"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Classifies an error of a Raft write (proposal, membership change, linearizable read).
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
