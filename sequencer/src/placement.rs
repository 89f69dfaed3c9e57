//! Leader placement: moving a shard's leadership to a chosen voter, and the balancer that spreads
//! shard leaders over the sequencers so that write load spreads over machines.
//!
//! # Moving leadership
//!
//! openraft 0.9 has no leadership transfer, so the leader `L` of a shard hands over to a voter `T`
//! with the protocol's own election, arranged so that `T` wins it:
//!
//! 1. `T` is probed (a `Campaign` RPC with `probe`): a node that is down costs nothing more.
//! 2. `L` waits until `T` is nearly caught up, then pauses the shard's Raft writes: proposals, the
//!    publisher's checkpoint commit and upload, freezes and membership changes hold the shard's gate
//!    shared, and `L` takes it exclusively, so what is in flight finishes first and nothing new starts
//!    (callers wait; once the move is done their writes meet `NotLeader` naming `T`, and they retry
//!    there).
//! 3. `L` stops its heartbeats and waits until `T`'s log matches its own (replication goes on).
//! 4. `T` is asked to stand for election (`Raft::trigger().elect()`), one term up. `L`, which has led
//!    for longer than the leader lease, grants its vote (the log check passes: `T` holds all of `L`'s
//!    log); with three voters that is a majority. With more voters, `L` first waits out the other
//!    followers' leases (the maximum election timeout), so that one more of them can grant too.
//! 5. `L` sees the new term and steps down; heartbeats are enabled again and the gate is released,
//!    so the queued callers meet `NotLeader` with the new leader's address and retry there.
//!
//! Raft's safety never depends on this arrangement: `T` wins only with a majority's votes under the
//! usual log check. A move that fails before step 4 (the target is down, not a voter, cannot publish,
//! slow to catch up) leaves `L` leading. Once `T` has stood, `L` may have granted its vote even if `T`
//! then fails: leadership then goes to an up-to-date node after the usual election timeout. `L` refuses
//! to start a move while it is within its own leader lease (it would refuse `T` its vote). The write
//! pause is a few round trips with three voters, about the maximum election timeout with five.
//!
//! # The balancer
//!
//! Each shard has a preference order over its voters: the voters sorted by id, rotated by the shard's
//! id (shards 1, 2, 3 on nodes 1, 2, 3: each node comes first for one), the same on every node. Every
//! `interval` the leader of each shard that has led it for a while moves the leadership to the first
//! voter in that order that answers a probe, holds the shard's signing key with its publisher running,
//! and is nearly caught up, if that is not itself. After a failure the shards of the lost node go to
//! their next preference, which spreads them over the survivors; when the node is back, its shards
//! return to it. A leadership moved by an operator (`Node::transfer_leader`) is pinned: the balancer
//! leaves that shard alone for [`PIN`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::raft::RaftRequest;
use cairn_proto::raft::raft_client::RaftClient;
use openraft::{Raft, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::RaftTiming;
use crate::error::SequencerError;
use crate::network::Channels;
use crate::shard::{HostedShard, ensure_leader};
use crate::types::{NodeId, ShardId, TypeConfig};

/// A leader that has led for less than this (or twice the maximum election timeout, if longer) is
/// left alone by the balancer.
const SETTLE: Duration = Duration::from_secs(3);
/// After a failed move, the balancer leaves the shard alone this long.
const BACKOFF: Duration = Duration::from_secs(20);
/// After an operator moved a shard's leadership, the balancer leaves it alone this long.
pub(crate) const PIN: Duration = Duration::from_secs(600);
/// A voter this many entries behind the leader is not a candidate.
const MAX_LAG: u64 = 10_000;
/// Before writes are paused, the target must be within this many entries of the leader.
const NEAR: u64 = 512;
/// How long the writes in flight may take to drain before a move is given up.
const DRAIN: Duration = Duration::from_secs(1);

/// The `Campaign` RPC's payload.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Campaign {
    /// Only say whether this node could stand.
    pub(crate) probe: bool,
    /// An operator chose this node: once it leads, its balancer leaves the shard alone for [`PIN`].
    pub(crate) pin: bool,
}

/// A node's answer to `Campaign`: its view of the shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PeerView {
    /// Whether it is a voter of the shard.
    pub(crate) voter: bool,
    /// The last index in its Raft log.
    pub(crate) last_log_index: Option<u64>,
    /// Whether it holds the shard's signing key and its publisher runs: a leader that could not
    /// publish would stall the shard.
    pub(crate) can_publish: bool,
}

/// Serves `Campaign` on the node that is asked to lead.
pub(crate) async fn serve_campaign(shard: &HostedShard, req: Campaign) -> Result<PeerView, String> {
    let raft = &shard.raft;
    let m = raft.metrics().borrow().clone();
    let voter = m.membership_config.membership().voter_ids().any(|v| v == m.id);
    let view = PeerView {
        voter,
        last_log_index: m.last_log_index,
        // The control group publishes nothing: any voter can lead it.
        can_publish: shard.id() == crate::control::CONTROL
            || (shard.config.signer.is_some() && shard.publishing_stopped().is_none()),
    };
    if req.probe {
        return Ok(view);
    }
    if !voter {
        return Err(format!("node {} is not a voter of this shard", m.id));
    }
    if !view.can_publish {
        return Err(format!(
            "node {} cannot publish this shard (no signing key, or its publisher stopped)",
            m.id
        ));
    }
    if req.pin {
        shard.pin(Some(Instant::now() + PIN));
    }
    raft.trigger().elect().await.map_err(|e| e.to_string())?;
    Ok(view)
}

/// Sends `Campaign` to the node at `addr`.
async fn ask(
    channels: &Channels,
    addr: &str,
    shard: ShardId,
    from: NodeId,
    req: Campaign,
    timeout: Duration,
) -> Result<PeerView, String> {
    let channel = channels.get(addr).map_err(|e| e.to_string())?;
    let payload = postcard::to_allocvec(&req).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(RaftRequest { shard, from, payload });
    request.set_timeout(timeout);
    let reply = tokio::time::timeout(timeout, RaftClient::new(channel).campaign(request))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|s| s.message().to_owned())?;
    let result: Result<PeerView, String> =
        postcard::from_bytes(&reply.into_inner().payload).map_err(|e| e.to_string())?;
    result
}

/// The log index `node` is known to hold, as the leader's replication metrics say.
pub(crate) fn matched(m: &RaftMetrics<NodeId, openraft::BasicNode>, node: NodeId) -> Option<u64> {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&node))
        .and_then(|l| l.as_ref())
        .map(|l| l.index)
}

/// Heartbeats off while the leadership moves; on again when dropped, whatever happened.
struct Quiet<'a>(&'a Raft<TypeConfig>);

impl<'a> Quiet<'a> {
    fn new(raft: &'a Raft<TypeConfig>) -> Self {
        raft.runtime_config().heartbeat(false);
        Self(raft)
    }
}

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}

fn rpc_timeout(timing: &RaftTiming) -> Duration {
    Duration::from_millis(timing.election_min_ms.max(300))
}

/// Whether the node at `addr` answers for `shard` (it runs and hosts the shard), whatever its role.
pub(crate) async fn hosts(
    channels: &Channels,
    timing: &RaftTiming,
    me: NodeId,
    shard: ShardId,
    addr: &str,
) -> Result<(), String> {
    let req = Campaign {
        probe: true,
        pin: false,
    };
    ask(channels, addr, shard, me, req, rpc_timeout(timing))
        .await
        .map(drop)
}

/// Whether `to` (at `addr`) answers, is a voter of `shard` and could publish it: nothing is paused
/// for a node that is down, not yet part of the group, or without the shard's key.
async fn probe(
    channels: &Channels,
    timing: &RaftTiming,
    me: NodeId,
    shard: ShardId,
    to: NodeId,
    addr: &str,
) -> Result<(), SequencerError> {
    let view = ask(
        channels,
        addr,
        shard,
        me,
        Campaign {
            probe: true,
            pin: false,
        },
        rpc_timeout(timing),
    )
    .await
    .map_err(|e| SequencerError::Retryable(format!("node {to} does not answer for shard {shard}: {e}")))?;
    if !view.voter {
        return Err(SequencerError::Retryable(format!(
            "node {to} does not yet know it is a voter of shard {shard}; retry"
        )));
    }
    if !view.can_publish {
        return Err(SequencerError::Invalid(format!(
            "node {to} cannot publish shard {shard}: it lacks the signing key or its publisher stopped (see its /readyz)"
        )));
    }
    Ok(())
}

/// Moves the leadership of `s` from this node (`me`, which must lead it) to the voter `to`; returns
/// once `to` leads (see the module docs). With `pin`, the new leader's balancer leaves the shard alone
/// for [`PIN`] (an operator's choice).
pub(crate) async fn transfer(
    channels: &Channels,
    timing: &RaftTiming,
    me: NodeId,
    s: &HostedShard,
    to: NodeId,
    pin: bool,
) -> Result<(), SequencerError> {
    let id = s.id();
    ensure_leader(me, s)?;
    if to == me {
        return Ok(());
    }
    let m = s.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if membership.get_joint_config().len() > 1 {
        return Err(SequencerError::Retryable(format!(
            "a membership change of shard {id} is in progress; retry when it is done"
        )));
    }
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    if !voters.contains(&to) {
        return Err(SequencerError::Invalid(format!(
            "node {to} is not a voter of shard {id}; its voters are {voters:?}"
        )));
    }
    let addr = membership
        .get_node(&to)
        .map(|n| n.addr.clone())
        .ok_or_else(|| SequencerError::Invalid(format!("node {to} has no address in shard {id}")))?;
    // Within its lease a leader refuses to vote for anyone: the target could not win.
    let lease = Duration::from_millis(timing.election_max_ms + 50);
    let elected = s
        .raft
        .with_raft_state(|st| st.vote_last_modified())
        .await
        .map_err(|e| SequencerError::Fatal(e.to_string()))?;
    if let Some(at) = elected
        && at.elapsed() < lease
    {
        return Err(SequencerError::Retryable(format!(
            "this node was elected leader of shard {id} moments ago; retry in {} ms",
            (lease - at.elapsed()).as_millis()
        )));
    }
    probe(channels, timing, me, id, to, &addr).await?;
    // Most of the catching up happens before anything is paused.
    let wait = Duration::from_millis(timing.election_max_ms.max(500));
    s.raft
        .wait(Some(wait * 2))
        .metrics(
            |m| matched(m, to).unwrap_or(0) + NEAR >= m.last_log_index.unwrap_or(0),
            "target nearly caught up",
        )
        .await
        .map_err(|_| {
            SequencerError::Retryable(format!("node {to} is too far behind on shard {id}; retry"))
        })?;

    let started = Instant::now();
    let _paused = tokio::time::timeout(DRAIN, s.gate.write()).await.map_err(|_| {
        SequencerError::Retryable(format!(
            "the writes in flight on shard {id} did not finish within {DRAIN:?}; retry"
        ))
    })?;
    ensure_leader(me, s)?;
    let _quiet = Quiet::new(&s.raft);
    let last = s.raft.metrics().borrow().last_log_index;
    s.raft
        .wait(Some(wait))
        .metrics(|m| matched(m, to) >= last, "target caught up")
        .await
        .map_err(|_| SequencerError::Retryable(format!("node {to} did not catch up on shard {id}; retry")))?;
    if voters.len() > 3 {
        // The target needs votes beyond this leader's: the other followers grant once their leases,
        // refreshed by this leader's last message, have run out.
        tokio::time::sleep(lease).await;
    }
    if s.raft.metrics().borrow().last_log_index != last {
        return Err(SequencerError::Retryable(format!(
            "shard {id} took a write while its leadership was moving; retry"
        )));
    }
    ask(
        channels,
        &addr,
        id,
        me,
        Campaign { probe: false, pin },
        rpc_timeout(timing),
    )
    .await
    .map_err(|e| SequencerError::Retryable(format!("node {to} did not stand for shard {id}: {e}")))?;
    let waited = s
        .raft
        .wait(Some(Duration::from_millis(timing.election_max_ms * 2)))
        .metrics(
            |m| m.current_leader.is_some() && m.current_leader != Some(me),
            "new leader",
        )
        .await;
    let now = s.raft.metrics().borrow().current_leader;
    match (waited, now) {
        (Ok(_), Some(l)) if l == to => {
            tracing::info!(
                shard = id,
                from = me,
                to,
                paused_ms = started.elapsed().as_millis() as u64,
                "leadership moved"
            );
            Ok(())
        }
        (_, leader) => Err(SequencerError::Retryable(format!(
            "node {to} did not take over shard {id}; its leader is now {}",
            leader.map_or("not known".into(), |l| format!("node {l}"))
        ))),
    }
}

/// Shard `shard`'s preference order over `voters` (sorted): rotated by the shard id, so that shard 1
/// prefers the first voter, shard 2 the second, and so on.
pub(crate) fn preference(voters: &[NodeId], shard: ShardId) -> Vec<NodeId> {
    let n = voters.len();
    let start = (shard.saturating_sub(1) as usize) % n.max(1);
    (0..n).map(|k| voters[(start + k) % n]).collect()
}

/// One shard's bookkeeping in the balancer.
#[derive(Default)]
struct Seen {
    /// The term this node leads in, and since when.
    term: Option<(u64, Instant)>,
    /// No move is tried before this.
    not_before: Option<Instant>,
}

/// Runs the balancer of this node's shards until `stop` is set.
pub(crate) async fn balance(
    channels: Channels,
    timing: RaftTiming,
    me: NodeId,
    shards: crate::shard::Hosted,
    settings: Arc<crate::control::settings::Live>,
    mut stop: watch::Receiver<bool>,
) {
    let settle = SETTLE.max(Duration::from_millis(timing.election_max_ms * 2));
    let mut seen: HashMap<ShardId, Seen> = HashMap::new();
    loop {
        // The interval is a cluster setting, read again at least every second (while balancing is
        // off, too), so that a change applies within a second.
        let turn = Instant::now();
        loop {
            let wait = match settings.balance_interval() {
                Some(interval) => interval.saturating_sub(turn.elapsed()),
                None => Duration::from_secs(1),
            };
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
            }
        }
        // Log shards only (added ones too): the control group's leadership carries no load.
        for s in &shards.logs() {
            let m = s.raft.metrics().borrow().clone();
            let entry = seen.entry(s.id()).or_default();
            if m.state != ServerState::Leader || m.current_leader != Some(me) {
                entry.term = None;
                continue;
            }
            let since = match entry.term {
                Some((term, since)) if term == m.current_term => since,
                _ => {
                    entry.term = Some((m.current_term, Instant::now()));
                    continue;
                }
            };
            if since.elapsed() < settle || entry.not_before.is_some_and(|t| Instant::now() < t) || s.pinned()
            {
                continue;
            }
            let membership = m.membership_config.membership();
            if membership.get_joint_config().len() > 1 {
                continue;
            }
            let mut voters: Vec<NodeId> = membership.voter_ids().collect();
            voters.sort_unstable();
            let last = m.last_log_index.unwrap_or(0);
            for candidate in preference(&voters, s.id()) {
                if candidate == me {
                    break;
                }
                if matched(&m, candidate).is_none_or(|i| last.saturating_sub(i) > MAX_LAG) {
                    continue;
                }
                let Some(addr) = membership.get_node(&candidate).map(|n| n.addr.clone()) else {
                    continue;
                };
                // A candidate that is down or cannot publish is passed over for the next one.
                if probe(&channels, &timing, me, s.id(), candidate, &addr)
                    .await
                    .is_err()
                {
                    continue;
                }
                if let Err(e) = transfer(&channels, &timing, me, s, candidate, false).await {
                    tracing::info!(shard = s.id(), to = candidate, error = %e, "leadership not moved");
                    entry.not_before = Some(Instant::now() + BACKOFF);
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preference;

    #[test]
    fn three_shards_on_three_nodes_each_prefer_another_node() {
        let voters = [1, 2, 3];
        let firsts: Vec<u64> = (1..=3).map(|shard| preference(&voters, shard)[0]).collect();
        assert_eq!(firsts, vec![1, 2, 3]);
        // With node 2 gone, shard 2's next choice is node 3.
        assert_eq!(preference(&voters, 2), vec![2, 3, 1]);
        assert_eq!(preference(&voters, 3), vec![3, 1, 2]);
        // More shards than nodes wrap around; node ids need not be consecutive.
        assert_eq!(preference(&voters, 5)[0], 2);
        assert_eq!(preference(&[4, 7], 2), vec![7, 4]);
    }
}
