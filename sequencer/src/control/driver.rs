//! The control group at work on one node: the map as applied here ([`MapCache`]), operations
//! appended at the control group's leader (here, or over the `Control` RPC), and the loop that hosts,
//! starts, activates and freezes the map's shards and adds those of the schedule (see the parent
//! module's notes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use cairn_store::ShardKind;

use super::{CONTROL, MapEntry, Op, Phase, ShardMap, ShardSpec, unix_now};
use crate::error::SequencerError;
use crate::node::NodeInner;
use crate::shard::{HostedShard, map_write_err};
use crate::types::{Command, NodeId, Reply, ShardId};

/// How often a node looks at the map (keys to find, groups to start, shards to activate or freeze).
const TICK: Duration = Duration::from_millis(250);
/// How long a proposal waits for the control group to have a leader.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long an operation may take to commit once the control leader confirmed its majority.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The control group's map as this node has applied it, rebuilt when its log grows.
pub(crate) struct MapCache {
    applied: std::sync::Mutex<u64>,
    map: watch::Sender<Arc<ShardMap>>,
}

impl Default for MapCache {
    fn default() -> Self {
        Self {
            applied: std::sync::Mutex::new(0),
            map: watch::channel(Arc::new(ShardMap::default())).0,
        }
    }
}

impl MapCache {
    /// The map as last read (refreshed by the control loop when the log grows).
    pub(crate) fn current(&self) -> Arc<ShardMap> {
        self.map.borrow().clone()
    }

    /// Why a shard of the map takes no entries now, judged by its window: `Frozen` once the window
    /// has ended (its leader freezes it right after), retryable before it opens. `Ok` for shards
    /// outside the map.
    pub(crate) fn admits(&self, shard: ShardId) -> Result<(), SequencerError> {
        let map = self.current();
        let Some(e) = map.shards.get(&shard) else {
            return Ok(());
        };
        let now = unix_now();
        if e.spec.valid_until.is_some_and(|until| now >= until)
            || matches!(e.phase, Phase::Frozen | Phase::Archived)
        {
            return Err(SequencerError::Frozen(shard));
        }
        if e.phase == Phase::Planned || e.spec.valid_from.is_some_and(|from| now < from) {
            return Err(SequencerError::Retryable(format!(
                "shard {shard} does not take entries yet (planned; see shards.json)"
            )));
        }
        Ok(())
    }

    /// Re-reads the control log if it grew since the last read.
    pub(crate) fn refresh(&self, control: &HostedShard) -> Arc<ShardMap> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock, and only forward: the control log only grows.
        let size = control.sm.state().size;
        if size > *applied {
            match control.sm.staged_entries(0, size) {
                Ok(entries) => {
                    let ops: Vec<Op> = entries
                        .iter()
                        .filter_map(|e| postcard::from_bytes(e).ok())
                        .collect();
                    self.map.send_replace(Arc::new(ShardMap::fold(&ops)));
                    *applied = size;
                }
                Err(e) => tracing::warn!(error = %e, "reading the control log"),
            }
        }
        self.map.borrow().clone()
    }
}

impl NodeInner {
    /// The map as this node applied it, with the cluster settings it records put in effect here
    /// (empty before the control group is hosted).
    pub(crate) fn current_map(&self) -> Arc<ShardMap> {
        let Some(control) = self.shards.get(CONTROL) else {
            return Arc::default();
        };
        let map = self.map.refresh(&control);
        self.settings.update(&self.config, &map.settings);
        map
    }
}

/// Appends `op` to the control log on this node, which must lead the control group: after a check
/// that it reaches a majority (else `Refused`, nothing changed), within [`COMMIT_TIMEOUT`].
pub(crate) async fn append(inner: &NodeInner, mut op: Op) -> Result<(), SequencerError> {
    let control = inner
        .shards
        .get(CONTROL)
        .ok_or(SequencerError::UnknownShard(CONTROL))?;
    crate::shard::ensure_leader(inner.id, &control)?;
    let map = inner.map.refresh(&control);
    if let Op::Ended { shard, .. } = &op
        && map.ended.contains_key(shard)
    {
        // Recorded already (the first record counts): nothing to write.
        return Ok(());
    }
    if let Op::Add { spec, members } = &mut op {
        if spec.kind == ShardKind::Sigstore && spec.valid_from.is_none() {
            // The trust documents give every Sigstore log a start: now (it takes no entry before),
            // or the start recorded when this same shard was added before (a repeat).
            let recorded = map.shards.get(&spec.shard.id).and_then(|e| {
                let repeat = ShardSpec {
                    valid_from: e.spec.valid_from,
                    ..spec.clone()
                };
                (repeat == e.spec).then_some(e.spec.valid_from).flatten()
            });
            spec.valid_from = Some(recorded.unwrap_or_else(unix_now));
        }
        map.check_add(spec).map_err(SequencerError::Invalid)?;
        if inner.config.shards.iter().any(|s| s.shard.id == spec.shard.id) {
            return Err(SequencerError::Invalid(format!(
                "shard {} is in the nodes' configuration already",
                spec.shard.id
            )));
        }
        if let Some(s) = inner
            .config
            .shards
            .iter()
            .find(|s| s.shard.origin == spec.shard.origin)
        {
            return Err(SequencerError::Invalid(format!(
                "shard {} of the configuration has origin {} already",
                s.shard.id, spec.shard.origin
            )));
        }
        // The members are the control group's voters now, recorded once for every node to use.
        if members.is_empty() {
            let m = control.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            *members = membership
                .voter_ids()
                .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
                .collect();
        }
    }
    // An operator's change is refused, nothing written, unless this leader reaches a majority now
    // (else the entry could commit long after the operator was told it failed).
    if matches!(op, Op::Add { .. } | Op::Set { .. } | Op::Archived { .. }) {
        crate::shard::confirm_quorum(inner.id, &control, inner.config.timing.quorum_check()).await?;
    }
    let bytes = postcard::to_allocvec(&op).map_err(|e| SequencerError::Fatal(e.to_string()))?;
    let write = control.raft.client_write(Command::Append(vec![bytes]));
    let resp = tokio::time::timeout(COMMIT_TIMEOUT, write)
        .await
        .map_err(|_| {
            SequencerError::Timeout(
                "for the control group to commit (a majority of its voters stopped answering); it may still take effect: see `cairn shard list`".into(),
            )
        })?
        .map_err(|e| map_write_err(CONTROL, e))?;
    match resp.data {
        Reply::Appended(_) => {}
        Reply::Rejected(why) => return Err(SequencerError::Refused(why)),
        other => return Err(SequencerError::Fatal(format!("control log answered {other:?}"))),
    }
    // The check above read this leader's map, which a concurrent add may have changed since: the
    // fold keeps the first add of an id, so see which one that is (the entry is applied here now).
    if let Op::Add { spec, .. } = &op {
        let map = inner.map.refresh(&control);
        match map.shards.get(&spec.shard.id) {
            Some(e) if e.spec == *spec => {}
            Some(e) => {
                return Err(SequencerError::Invalid(format!(
                    "shard {} exists already with origin {} (added concurrently)",
                    spec.shard.id, e.spec.shard.origin
                )));
            }
            None => {
                return Err(SequencerError::Invalid(format!(
                    "shard {} was not recorded: {}",
                    spec.shard.id,
                    map.check_add(spec)
                        .err()
                        .unwrap_or_else(|| "its origin is in use".into())
                )));
            }
        }
    }
    Ok(())
}

/// How a `Control` call failed, as the leader answers it.
#[derive(Debug, Serialize, Deserialize)]
enum Failure {
    /// The operation is invalid (`Invalid`).
    Invalid(String),
    /// Refused in the present state, nothing changed (`Refused`).
    Refused(String),
    /// Not committed in time; may still take effect (`Timeout`).
    Timeout(String),
    /// Anything else: retrying may help.
    Retry(String),
}

/// How long a `Control` call may take: the leader's majority check and its commit.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves the `Control` RPC: a peer's operation, appended here if this node leads the control group.
pub(crate) async fn serve(inner: &NodeInner, payload: &[u8]) -> Vec<u8> {
    let result = match postcard::from_bytes::<Op>(payload) {
        Err(e) => Err(Failure::Invalid(format!("bad control operation: {e}"))),
        Ok(op) => append(inner, op).await.map_err(|e| match e {
            SequencerError::Invalid(m) => Failure::Invalid(m),
            SequencerError::Refused(m) => Failure::Refused(m),
            SequencerError::Timeout(m) => Failure::Timeout(m),
            other => Failure::Retry(other.to_string()),
        }),
    };
    postcard::to_allocvec(&result).unwrap_or_default()
}

/// Sends `op` to the control group's leader at the Raft address `addr`.
async fn send(inner: &NodeInner, addr: &str, op: &Op) -> Result<(), SequencerError> {
    use cairn_proto::raft::RaftRequest;
    use cairn_proto::raft::raft_client::RaftClient;
    let payload = postcard::to_allocvec(op).map_err(|e| SequencerError::Fatal(e.to_string()))?;
    let channel = inner
        .channels
        .get(addr)
        .map_err(|e| SequencerError::Retryable(e.to_string()))?;
    let mut request = tonic::Request::new(RaftRequest {
        shard: CONTROL,
        from: inner.id,
        payload,
    });
    request.set_timeout(CONTROL_TIMEOUT);
    let reply = tokio::time::timeout(CONTROL_TIMEOUT, RaftClient::new(channel).control(request))
        .await
        .map_err(|_| SequencerError::Timeout(format!("the control group's leader at {addr} did not answer")))?
        .map_err(|s| {
            let m = format!("the control group's leader at {addr}: {}", s.message());
            match s.code() {
                // A peer that predates the control group (a rolling upgrade): retrying will not help
                // until it is upgraded.
                tonic::Code::Unimplemented => SequencerError::Fatal(format!("{m} (upgrade it)")),
                _ => SequencerError::Retryable(m),
            }
        })?;
    let result: Result<(), Failure> = postcard::from_bytes(&reply.into_inner().payload)
        .map_err(|e| SequencerError::Fatal(format!("the control group's leader answered: {e}")))?;
    result.map_err(|f| match f {
        Failure::Invalid(m) => SequencerError::Invalid(m),
        Failure::Refused(m) => SequencerError::Refused(m),
        Failure::Timeout(m) => SequencerError::Timeout(m),
        Failure::Retry(m) => SequencerError::Retryable(m),
    })
}

/// Appends `op` to the control log: here when this node leads the control group, else at its
/// leader (one hop; during an election the caller retries).
pub(crate) async fn propose(inner: &NodeInner, op: Op) -> Result<(), SequencerError> {
    let control = inner
        .shards
        .get(CONTROL)
        .ok_or(SequencerError::UnknownShard(CONTROL))?;
    // During an election (the cluster just started, the leader just failed) wait for its result.
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        match crate::shard::ensure_leader(inner.id, &control) {
            Ok(()) => return append(inner, op).await,
            Err(SequencerError::NotLeader {
                leader: Some((_, addr)),
                ..
            }) => return send(inner, &addr, &op).await,
            Err(SequencerError::NotLeader { leader: None, .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Until `stop`: keeps this node's part of the map's shards going. See the module's notes.
pub(crate) async fn run(inner: Arc<NodeInner>, mut stop: watch::Receiver<bool>) {
    let Some(control) = inner.shards.get(CONTROL) else {
        return;
    };
    let mut grew = control.sm.watch_size();
    // What this node failed to do, said once per shard until it changes.
    let mut said: BTreeMap<ShardId, String> = BTreeMap::new();
    loop {
        let map = inner.current_map();
        if let Some(schedule) = &inner.config.schedule
            && !inner.settings.schedule_paused()
            && control.raft.metrics().borrow().current_leader == Some(inner.id)
        {
            for spec in schedule.due(unix_now()) {
                let id = spec.shard.id;
                if map.shards.contains_key(&id) {
                    continue;
                }
                match append(
                    &inner,
                    Op::Add {
                        spec,
                        members: BTreeMap::new(),
                    },
                )
                .await
                {
                    Ok(()) => tracing::info!(shard = id, "added a shard on the schedule"),
                    Err(e) => {
                        let why = format!("adding it on the schedule: {e}");
                        if said.get(&id) != Some(&why) {
                            tracing::warn!(shard = id, reason = %why, "scheduled shard");
                            said.insert(id, why);
                        }
                    }
                }
            }
        }
        let map = inner.map.refresh(&control);
        // Freezes at a window's end first: they need only the shard's own group, not the control
        // group, whose calls below may wait for a leader.
        for entry in map.shards.values() {
            if let Err(why) = freeze_due(&inner, entry).await
                && said.get(&entry.spec.shard.id) != Some(&why)
            {
                tracing::warn!(shard = entry.spec.shard.id, reason = %why, "shard from the control map");
                said.insert(entry.spec.shard.id, why);
            }
        }
        if let Err(why) = record_ends(&inner, &map).await
            && said.get(&CONTROL) != Some(&why)
        {
            tracing::warn!(reason = %why, "recording the end of a frozen shard");
            said.insert(CONTROL, why);
        }
        // Configured shards archived while this node ran.
        for id in &map.archived {
            if inner.shards.get(*id).is_some()
                && let Err(e) = inner.archive(*id).await
            {
                let why = format!("stopping the archived shard's group: {e}");
                if said.get(id) != Some(&why) {
                    tracing::warn!(shard = id, reason = %why, "configured shard");
                    said.insert(*id, why);
                }
            }
        }
        for entry in map.shards.values() {
            if let Err(why) = step(&inner, entry).await
                && said.get(&entry.spec.shard.id) != Some(&why)
            {
                tracing::warn!(shard = entry.spec.shard.id, reason = %why, "shard from the control map");
                said.insert(entry.spec.shard.id, why);
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = grew.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Freezes a shard this node leads once its window has ended.
async fn freeze_due(inner: &Arc<NodeInner>, entry: &MapEntry) -> Result<(), String> {
    if entry.phase != Phase::Active || entry.spec.valid_until.is_none_or(|until| unix_now() < until) {
        return Ok(());
    }
    let Some(hosted) = inner.shards.get(entry.spec.shard.id) else {
        return Ok(());
    };
    if hosted.raft.metrics().borrow().current_leader != Some(inner.id) || hosted.sm.frozen() {
        return Ok(());
    }
    crate::node::freeze_hosted(inner, &hosted)
        .await
        .map_err(|e| format!("freezing at the window's end: {e}"))?;
    tracing::info!(
        shard = entry.spec.shard.id,
        "froze the shard at the end of its window"
    );
    Ok(())
}

/// Records the end of validity ([`Op::Ended`]) of each frozen shard this node leads, configured or
/// of the map, that has none yet: now, after the freeze was applied, so no entry came later. For a
/// shard of the map `Frozen` goes first, which control leaders of an older version understand too.
async fn record_ends(inner: &Arc<NodeInner>, map: &ShardMap) -> Result<(), String> {
    let mut failed = Vec::new();
    for hosted in inner.shards.logs() {
        let id = hosted.id();
        if map.ended.contains_key(&id)
            || !hosted.sm.frozen()
            || hosted.raft.metrics().borrow().current_leader != Some(inner.id)
        {
            continue;
        }
        let mut ops = Vec::new();
        if map.shards.get(&id).is_some_and(|e| e.phase == Phase::Active) {
            ops.push(Op::Frozen { shard: id });
        }
        ops.push(Op::Ended {
            shard: id,
            at: unix_now(),
        });
        for op in ops {
            if let Err(e) = propose(inner, op).await {
                failed.push(format!("shard {id}: {e}"));
                break;
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// This node's next step for one shard of the map.
async fn step(inner: &Arc<NodeInner>, entry: &MapEntry) -> Result<(), String> {
    let id = entry.spec.shard.id;
    let me = inner.id;
    if entry.phase == Phase::Archived {
        return inner
            .archive(id)
            .await
            .map_err(|e| format!("stopping the archived shard's group: {e}"));
    }
    // A node that is not among the recorded members (added to the cluster later) hosts the shard
    // too once it has the key, so that `cairn cluster add-node` can make it a voter of the group; it
    // neither reports the key nor starts the group.
    let member = entry.members.contains_key(&me);
    let hosted = match inner.shards.get(id) {
        Some(s) => s,
        None => {
            let Some(keys) = &inner.config.keys else {
                return Err(
                    "this node has no key provider (key directory) to find the shard's key in".into(),
                );
            };
            let Some(signer) = keys.signer(&entry.spec.shard)? else {
                if entry.holders.contains(&me) {
                    return Err("this node held the shard's key and does not find it now: its group here waits for it".into());
                }
                return Ok(());
            };
            if signer.name() != entry.spec.shard.origin
                || signer.verifier().to_string() != entry.spec.shard.vkey
            {
                return Err(format!(
                    "the key found is {}, not the shard's {}",
                    signer.verifier(),
                    entry.spec.shard.vkey
                ));
            }
            let config = crate::config::ShardConfig::new(entry.spec.shard.clone(), Some(signer));
            inner.host(config).await.map_err(|e| e.to_string())?;
            tracing::info!(shard = id, origin = %entry.spec.shard.origin, "hosting a shard from the control map");
            inner
                .shards
                .get(id)
                .ok_or_else(|| "the shard's group did not start".to_string())?
        }
    };
    if !member {
        return Ok(());
    }
    if !entry.holders.contains(&me) {
        return propose(inner, Op::HoldsKey { shard: id, node: me })
            .await
            .map_err(|e| format!("reporting that this node holds the key: {e}"));
    }
    match entry.phase {
        Phase::Planned => {
            // Started ahead of its window once keyed, so that it takes entries the moment the window
            // opens (routing looks at the window).
            if !entry.keyed() {
                return Ok(());
            }
            let raft = &hosted.raft;
            if !raft.is_initialized().await.map_err(|e| e.to_string())? {
                let members: BTreeMap<NodeId, openraft::BasicNode> = entry
                    .members
                    .iter()
                    .map(|(id, addr)| (*id, openraft::BasicNode::new(addr.clone())))
                    .collect();
                match raft.initialize(members).await {
                    Ok(()) => {}
                    Err(openraft::error::RaftError::APIError(
                        openraft::error::InitializeError::NotAllowed(_),
                    )) => {}
                    Err(e) => return Err(format!("starting the shard's group: {e}")),
                }
            }
            // The leader records the activation once its publisher has recorded the identity and put a
            // first checkpoint in the store: from then on readers find the shard's checkpoint.
            let leading = raft.metrics().borrow().current_leader == Some(me);
            if leading && !hosted.sm.published().note.is_empty() {
                propose(inner, Op::Activated { shard: id })
                    .await
                    .map_err(|e| format!("recording the activation: {e}"))?;
            }
            Ok(())
        }
        // A freeze is recorded, with its end, by `record_ends`.
        Phase::Active | Phase::Frozen | Phase::Archived => Ok(()),
    }
}
