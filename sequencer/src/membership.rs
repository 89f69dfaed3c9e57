//! Membership changes at runtime: adding a sequencer node to a shard's Raft group and removing one,
//! on the group's leader, with openraft's joint consensus; and the directory of the members' API URLs.
//!
//! # Adding a node
//!
//! The node must already run with the shard configured (its group then waits, uninitialized, for a
//! leader to contact it). The leader first asks it who it is (`Describe`): a node at that address
//! with another id is refused before anything changes, as is one that does not host the shard. It
//! is then added as a learner and the leader waits until its log has caught up (replication, or a
//! snapshot for a shard with a long history), and only then makes it a voter: a voter that is far
//! behind would hold up commits (with three voters, one lagging voter plus one failure stops the
//! shard). Each step is idempotent, so an operator repeats a failed call.
//!
//! # Removing a node
//!
//! A leader that is asked to remove itself hands the leadership to another voter first (as the
//! placement balancer moves it) and answers `NotLeader` naming it, so the caller repeats the call
//! there: removing the leader directly would leave the shard without one for an election timeout.
//! Before the change, the leader probes the voters that remain: a majority of them must answer, or
//! the change is refused with nothing changed. (A joint configuration needs a majority of the old
//! and of the new voters; one that cannot get it would hang half-applied until nodes came back.)
//! The node is first made a learner, and the leader waits (briefly) until it has received that
//! configuration, then removes it entirely. The order matters: the leader stops replicating to a
//! node as soon as the configuration without it exists, so the node may never learn it is gone; as
//! a learner it knows it no longer votes, never stands for election, and
//! [`crate::Node::removed`] tells its API to stop taking writes.
//!
//! # API URLs
//!
//! A node's configuration names its peers' gRPC API URLs, where writes for the shards they lead are
//! forwarded. A node added at runtime is in no older node's configuration: every node asks each
//! member it has no URL for (`Describe`, over the Raft transport) and remembers the answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cairn_proto::raft::RaftRequest;
use cairn_proto::raft::raft_client::RaftClient;
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::RaftTiming;
use crate::error::SequencerError;
use crate::network::Channels;
use crate::shard::{HostedShard, ensure_leader, map_write_err};
use crate::types::NodeId;

/// How often a node looks for members whose API URL it does not know.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// How long `Describe` may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_millis(800);
/// A learner is caught up once it is within this many log entries of the leader.
const CAUGHT_UP: u64 = 64;
/// How long a removal waits for the node to hear that it is a learner before removing it entirely.
const TELL_REMOVED: Duration = Duration::from_secs(3);

/// A node's answer to `Describe`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// Its node id.
    pub id: NodeId,
    /// Its gRPC API URL, when it serves one.
    pub api_url: Option<String>,
}

/// Asks the node at the Raft address `addr` who it is.
pub(crate) async fn describe(channels: &Channels, addr: &str, from: NodeId) -> Result<Identity, String> {
    let channel = channels.get(addr).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(RaftRequest {
        shard: 0,
        from,
        payload: Vec::new(),
    });
    request.set_timeout(DESCRIBE_TIMEOUT);
    let reply = tokio::time::timeout(DESCRIBE_TIMEOUT, RaftClient::new(channel).describe(request))
        .await
        .map_err(|_| format!("no answer within {DESCRIBE_TIMEOUT:?}"))?
        .map_err(|s| s.message().to_owned())?;
    postcard::from_bytes(&reply.into_inner().payload).map_err(|e| e.to_string())
}

/// Node id to gRPC API URL: the configured peers, and what members told this node.
#[derive(Default)]
pub(crate) struct Directory(RwLock<BTreeMap<NodeId, String>>);

impl Directory {
    pub(crate) fn new(known: BTreeMap<NodeId, String>) -> Self {
        Self(RwLock::new(known))
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<String> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    fn insert(&self, id: NodeId, url: String) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(id, url);
    }
}

/// Every member (id, Raft address) of the groups of `shards`.
fn members(shards: &[Arc<HostedShard>]) -> BTreeMap<NodeId, String> {
    let mut out = BTreeMap::new();
    for s in shards {
        let m = s.raft.metrics().borrow().clone();
        for (id, node) in m.membership_config.membership().nodes() {
            out.entry(*id).or_insert_with(|| node.addr.clone());
        }
    }
    out
}

/// Until `stop`: asks every member without a known API URL for it.
pub(crate) async fn resolve(
    channels: Channels,
    me: NodeId,
    shards: Vec<Arc<HostedShard>>,
    directory: Arc<Directory>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        for (id, addr) in members(&shards) {
            if id == me || directory.get(id).is_some() {
                continue;
            }
            match describe(&channels, &addr, me).await {
                Ok(Identity {
                    id: said,
                    api_url: Some(url),
                }) if said == id => {
                    tracing::info!(node = id, %url, "learned a member's API URL");
                    directory.insert(id, url);
                }
                Ok(other) => tracing::debug!(node = id, ?other, "member did not say its API URL"),
                Err(e) => tracing::debug!(node = id, error = %e, "member did not answer Describe"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RESOLVE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The voters and every member of `s`'s group, as this node knows them.
fn config_of(s: &HostedShard) -> (BTreeSet<NodeId>, BTreeMap<NodeId, String>, bool) {
    let m = s.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters = membership.voter_ids().collect();
    let nodes = membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
    (voters, nodes, membership.get_joint_config().len() > 1)
}

fn in_progress(shard: u32) -> SequencerError {
    SequencerError::Retryable(format!(
        "a membership change of shard {shard} is in progress; retry when it is done"
    ))
}

/// Makes node `id` at `addr` a voter of `s` (this node, `me`, must lead it): see the module docs.
/// Waits at most `catch_up` for it to catch up as a learner.
pub(crate) async fn add(
    channels: &Channels,
    timing: &RaftTiming,
    me: NodeId,
    s: &HostedShard,
    id: NodeId,
    addr: &str,
    catch_up: Duration,
) -> Result<(), SequencerError> {
    let shard = s.id();
    ensure_leader(me, s)?;
    if id == 0 {
        return Err(SequencerError::Invalid("node ids start at 1".into()));
    }
    let (voters, nodes, joint) = config_of(s);
    if let Some(known) = nodes.get(&id)
        && known != addr
    {
        return Err(SequencerError::Invalid(format!(
            "node {id} is a member of shard {shard} at {known}, not {addr}; remove it first to move it"
        )));
    }
    if voters.contains(&id) {
        return Ok(());
    }
    if joint {
        return Err(in_progress(shard));
    }
    let who = describe(channels, addr, me)
        .await
        .map_err(|e| SequencerError::Retryable(format!("no node answers at {addr}: {e}")))?;
    if who.id != id {
        return Err(SequencerError::Invalid(format!(
            "the node at {addr} is node {}, not node {id}",
            who.id
        )));
    }
    crate::placement::hosts(channels, timing, me, shard, addr)
        .await
        .map_err(|e| {
            SequencerError::Invalid(format!(
                "node {id} does not host shard {shard} ({e}); add the shard to its configuration and restart it"
            ))
        })?;
    crate::shard::confirm_quorum(me, s, timing.quorum_check()).await?;
    let added = {
        let _writing = s.gate.read().await;
        s.raft
            .add_learner(id, BasicNode::new(addr), false)
            .await
            .map_err(|e| map_write_err(shard, e))?
    };
    // The learner must reach the membership entry that added it and stay near the leader's end.
    let mut metrics = s.raft.metrics();
    let target = added.log_id.index;
    let caught = tokio::time::timeout(catch_up, async {
        metrics
            .wait_for(|m| {
                crate::placement::matched(m, id)
                    .is_some_and(|h| h >= target && h + CAUGHT_UP >= m.last_log_index.unwrap_or(0))
            })
            .await
            .map(drop)
    })
    .await;
    match caught {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err(SequencerError::Retryable("the node is shutting down".into())),
        Err(_) => {
            let m = s.raft.metrics().borrow().clone();
            return Err(SequencerError::Timeout(format!(
                "for node {id} to catch up with shard {shard} as a learner: it holds index {:?} of {:?} after {catch_up:?}; it stays a learner, repeat the call to go on",
                crate::placement::matched(&m, id),
                m.last_log_index
            )));
        }
    }
    ensure_leader(me, s)?;
    let _writing = s.gate.read().await;
    s.raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
        .await
        .map_err(|e| map_write_err(shard, e))?;
    tracing::info!(shard, node = id, "node added as a voter");
    Ok(())
}

/// Removes node `id` from `s`'s group (this node, `me`, must lead it): see the module docs. A leader
/// asked to remove itself moves the leadership and answers `NotLeader` naming the new leader.
pub(crate) async fn remove(
    channels: &Channels,
    timing: &RaftTiming,
    me: NodeId,
    s: &HostedShard,
    id: NodeId,
) -> Result<(), SequencerError> {
    let shard = s.id();
    ensure_leader(me, s)?;
    let (voters, nodes, joint) = config_of(s);
    if !nodes.contains_key(&id) {
        return Ok(());
    }
    if joint {
        return Err(in_progress(shard));
    }
    let remaining: Vec<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
    if voters.contains(&id) && remaining.is_empty() {
        return Err(SequencerError::Refused(format!(
            "node {id} is the last voter of shard {shard}; add another node first"
        )));
    }
    if id == me {
        let mut why = Vec::new();
        for to in &remaining {
            match crate::placement::transfer(channels, timing, me, s, *to, false).await {
                Ok(()) => {
                    return Err(SequencerError::NotLeader {
                        shard,
                        leader: nodes.get(to).map(|a| (*to, a.clone())),
                    });
                }
                Err(e) => why.push(format!("node {to}: {e}")),
            }
        }
        return Err(SequencerError::Retryable(format!(
            "node {me} leads shard {shard} and could not hand it to another voter ({}); retry",
            why.join("; ")
        )));
    }
    if voters.contains(&id) {
        // This node counts; the others must answer now.
        let mut answering = 1;
        let mut silent = Vec::new();
        for v in remaining.iter().filter(|v| **v != me) {
            let addr = nodes.get(v).map(String::as_str).unwrap_or_default();
            match crate::placement::hosts(channels, timing, me, shard, addr).await {
                Ok(()) => answering += 1,
                Err(_) => silent.push(*v),
            }
        }
        if answering * 2 <= remaining.len() {
            return Err(SequencerError::Refused(format!(
                "removing node {id} from shard {shard} needs a majority of the remaining voters {remaining:?} to answer; {silent:?} do not"
            )));
        }
    }
    crate::shard::confirm_quorum(me, s, timing.quorum_check()).await?;
    if voters.contains(&id) {
        let addr = nodes.get(&id).cloned().unwrap_or_default();
        let answers = crate::placement::hosts(channels, timing, me, shard, &addr)
            .await
            .is_ok();
        // First a learner: learners still receive the log, so the node learns that it no longer
        // votes (the configuration without it at all may never reach it: the leader stops
        // replicating to a node once it is gone), and a learner never stands for election.
        let demoted = {
            let _writing = s.gate.read().await;
            s.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
                .await
                .map_err(|e| map_write_err(shard, e))?
        };
        let mut metrics = s.raft.metrics();
        let wait = if answers { TELL_REMOVED } else { Duration::ZERO };
        let told = tokio::time::timeout(wait, async {
            metrics
                .wait_for(|m| crate::placement::matched(m, id).is_some_and(|h| h >= demoted.log_id.index))
                .await
                .map(drop)
        })
        .await;
        if told.is_err() {
            tracing::info!(
                shard,
                node = id,
                "the node being removed did not hear of its demotion (down?)"
            );
        }
    }
    {
        let _writing = s.gate.read().await;
        s.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(|e| map_write_err(shard, e))?;
    }
    tracing::info!(shard, node = id, "node removed");
    Ok(())
}
