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
//! # Every change
//!
//! Each configuration change first confirms that the leader reaches a majority now (else that step
//! is refused and not taken, rather than left in the leader's log to commit later; an error after an
//! earlier step says what that step did), runs in a task of its own (a caller that goes away cannot
//! stop openraft between its two steps, joint then final configuration) and is waited for at most
//! ten seconds (then the caller hears it may still take effect). A shard found in a joint
//! configuration (its leader failed between the steps) is finished first by the next add or remove
//! request: proposed again toward the same target. While the change waits for its commit it holds
//! the shard's gate shared, so a leadership move meanwhile gives up after its one-second drain and the
//! balancer retries later.
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
use crate::types::{NodeId, ShardId};

/// How often a node looks for members whose API URL it does not know.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// How long `Describe` may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_millis(800);
/// A learner is caught up once it is within this many log entries of the leader.
const CAUGHT_UP: u64 = 64;
/// How long a removal waits for the node to hear that it is a learner before removing it entirely.
const TELL_REMOVED: Duration = Duration::from_secs(5);
/// How long one membership change may take to commit once the leader has confirmed its majority.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Node id to gRPC API URL: seeded from the configured peers, then what each member at its current
/// Raft address said itself (so a node re-added at another address is followed).
#[derive(Default)]
pub(crate) struct Directory(RwLock<BTreeMap<NodeId, Entry>>);

#[derive(Clone)]
struct Entry {
    url: String,
    /// The Raft address this holds for: where the member answered, or its configured one.
    at: Option<String>,
}

impl Directory {
    /// Seeded with the configured peers' (Raft address, API URL): trusted while the member is at that
    /// address.
    pub(crate) fn new(known: BTreeMap<NodeId, (String, String)>) -> Self {
        let known = known
            .into_iter()
            .map(|(id, (raft, url))| (id, Entry { url, at: Some(raft) }))
            .collect();
        Self(RwLock::new(known))
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|e| e.url.clone())
    }

    /// Whether what is known of `id` was said by the member at `addr`.
    fn confirmed(&self, id: NodeId, addr: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|e| e.at.as_deref() == Some(addr))
    }

    fn insert(&self, id: NodeId, url: String, at: &str) {
        let at = Some(at.to_owned());
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Entry { url, at });
    }
}

/// Every member (id, Raft address) of the groups of `shards`.
fn members(shards: &[Arc<HostedShard>]) -> BTreeMap<NodeId, String> {
    let mut out = BTreeMap::new();
    for s in shards {
        let metrics = s.raft.metrics();
        let m = metrics.borrow();
        for (id, node) in m.membership_config.membership().nodes() {
            out.entry(*id).or_insert_with(|| node.addr.clone());
        }
    }
    out
}

/// Until `stop`: asks every member whose API URL it has not heard from the member at its present Raft
/// address.
pub(crate) async fn resolve(
    channels: Channels,
    me: NodeId,
    shards: crate::shard::Hosted,
    directory: Arc<Directory>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let unknown = members(&shards.all())
            .into_iter()
            .filter(|(id, addr)| *id != me && !directory.confirmed(*id, addr));
        // Asked at once: a member that is down must not hold up learning about the others.
        let asked = unknown.map(|(id, addr)| {
            let channels = &channels;
            async move { (id, describe(channels, &addr, me).await, addr) }
        });
        for (id, answer, addr) in futures::future::join_all(asked).await {
            match answer {
                Ok(Identity {
                    id: said,
                    api_url: Some(url),
                }) if said == id => {
                    if directory.get(id).as_ref() != Some(&url) {
                        tracing::info!(node = id, %url, "learned a member's API URL");
                    }
                    directory.insert(id, url, &addr);
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

/// `s`'s group as this node knows it: the voters it is heading to (the last half of a joint
/// configuration, or the only one), every member's Raft address, and whether a change is under way.
fn config_of(s: &HostedShard) -> (BTreeSet<NodeId>, BTreeMap<NodeId, String>, bool) {
    let metrics = s.raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let joint = membership.get_joint_config();
    let target = joint.last().cloned().unwrap_or_default();
    let nodes = membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
    (target, nodes, joint.len() > 1)
}

/// Proposes `change` and waits at most [`CHANGE_TIMEOUT`] for it to commit. The proposal runs in a
/// task of its own, so a caller that goes away (a dropped request) cannot stop it between openraft's
/// two steps (joint, then final configuration); a shard left in a joint configuration anyway (its
/// leader failed in between) is finished by repeating the request, which proposes the same target.
async fn commit(
    timing: &RaftTiming,
    me: NodeId,
    s: &Arc<HostedShard>,
    change: ChangeMembers<NodeId, BasicNode>,
    retain: bool,
) -> Result<openraft::raft::ClientWriteResponse<crate::types::TypeConfig>, SequencerError> {
    let shard = s.id();
    crate::shard::confirm_quorum(me, s, timing.quorum_check()).await?;
    let task = {
        let s = s.clone();
        tokio::spawn(async move {
            let _writing = s.gate.read().await;
            s.raft.change_membership(change, retain).await
        })
    };
    match tokio::time::timeout(CHANGE_TIMEOUT, task).await {
        Ok(Ok(result)) => result.map_err(|e| map_write_err(shard, e)),
        Ok(Err(e)) => Err(SequencerError::Fatal(format!("membership change task: {e}"))),
        Err(_) => Err(SequencerError::Timeout(format!(
            "for a membership change of shard {shard} to commit (a majority stopped answering); it may still take effect: see `cairn cluster status`, and repeat the request to finish it"
        ))),
    }
}

/// `s`'s configuration ([`config_of`]) once no change is under way: a joint configuration left by a
/// leader that failed between openraft's two steps is finished first (proposed again toward the same
/// target); until then nothing else could change, nor could leadership move.
async fn finished_config(
    timing: &RaftTiming,
    me: NodeId,
    s: &Arc<HostedShard>,
) -> Result<(BTreeSet<NodeId>, BTreeMap<NodeId, String>, bool), SequencerError> {
    let config = config_of(s);
    if !config.2 {
        return Ok(config);
    }
    tracing::info!(shard = s.id(), "finishing a membership change left half done");
    commit(timing, me, s, ChangeMembers::AddVoterIds(BTreeSet::new()), true).await?;
    Ok(config_of(s))
}

/// Makes the learner `id` a voter of `s`.
async fn promote(
    timing: &RaftTiming,
    me: NodeId,
    s: &Arc<HostedShard>,
    id: NodeId,
) -> Result<(), SequencerError> {
    let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
    commit(timing, me, s, change, true).await.map(drop)
}

/// Whether the node at `addr` runs and hosts `shard`: `Invalid` when it answers that it does not
/// host it, `Retryable` when it does not answer.
async fn check_hosts(
    channels: &Channels,
    timing: &RaftTiming,
    me: NodeId,
    shard: u32,
    id: NodeId,
    addr: &str,
) -> Result<(), SequencerError> {
    crate::placement::hosts(channels, timing, me, shard, addr)
        .await
        .map_err(|e| {
            if e.contains("is not hosted here") {
                SequencerError::Invalid(format!(
                    "node {id} does not host shard {shard}; add the shard to its configuration and restart it"
                ))
            } else {
                SequencerError::Retryable(format!("node {id} does not answer for shard {shard}: {e}"))
            }
        })
}

/// Makes node `id` at `addr` a voter of `s` (this node, `me`, must lead it): see the module docs.
/// Waits at most `catch_up` for it to catch up as a learner.
pub(crate) async fn add(
    channels: &Channels,
    timing: &RaftTiming,
    me: NodeId,
    s: &Arc<HostedShard>,
    id: NodeId,
    addr: &str,
    catch_up: Duration,
) -> Result<(), SequencerError> {
    let shard = s.id();
    ensure_leader(me, s)?;
    if id == 0 {
        return Err(SequencerError::Invalid("node ids start at 1".into()));
    }
    let (target, nodes, _) = finished_config(timing, me, s).await?;
    if let Some(known) = nodes.get(&id)
        && known != addr
    {
        return Err(SequencerError::Invalid(format!(
            "node {id} is a member of shard {shard} at {known}, not {addr}; remove it first to move it"
        )));
    }
    if target.contains(&id) {
        return Ok(());
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
    check_hosts(channels, timing, me, shard, id, addr).await?;
    let learner = BTreeMap::from([(id, BasicNode::new(addr))]);
    let added = commit(timing, me, s, ChangeMembers::AddNodes(learner), true).await?;
    // The learner must reach the membership entry that added it and stay near the leader's end.
    let mut metrics = s.raft.metrics();
    let target_index = added.log_id.index;
    let caught = tokio::time::timeout(catch_up, async {
        metrics
            .wait_for(|m| {
                m.state != openraft::ServerState::Leader
                    || crate::placement::matched(m, id)
                        .is_some_and(|h| h >= target_index && h + CAUGHT_UP >= m.last_log_index.unwrap_or(0))
            })
            .await
            .map(drop)
    })
    .await;
    match caught {
        Ok(Ok(())) => ensure_leader(me, s)?,
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
    promote(timing, me, s, id).await.map_err(|e| {
        e.after(&format!(
            "node {id} is a learner of shard {shard}, not yet a voter"
        ))
    })?;
    tracing::info!(shard, node = id, "node added as a voter");
    Ok(())
}

/// Removes node `id` from `s`'s group (this node, `me`, must lead it): see the module docs. A leader
/// asked to remove itself moves the leadership and answers `NotLeader` naming the new leader.
pub(crate) async fn remove(
    channels: &Channels,
    timing: &RaftTiming,
    me: NodeId,
    s: &Arc<HostedShard>,
    id: NodeId,
) -> Result<(), SequencerError> {
    let shard = s.id();
    ensure_leader(me, s)?;
    let (target, nodes, _) = finished_config(timing, me, s).await?;
    if !nodes.contains_key(&id) {
        return Ok(());
    }
    let remaining: Vec<NodeId> = target.iter().copied().filter(|v| *v != id).collect();
    if remaining.is_empty() {
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
    // This node counts; the other remaining voters must answer now.
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
    if target.contains(&id) {
        let addr = nodes.get(&id).cloned().unwrap_or_default();
        let answers = crate::placement::hosts(channels, timing, me, shard, &addr)
            .await
            .is_ok();
        // First a learner: learners still receive the log, so the node learns that it no longer
        // votes (the configuration without it at all may never reach it: the leader stops
        // replicating to a node once it is gone), and a learner never stands for election.
        let demoted = commit(
            timing,
            me,
            s,
            ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            true,
        )
        .await?;
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
    let change = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
    commit(timing, me, s, change, false).await.map_err(|e| {
        e.after(&format!(
            "node {id} is a learner of shard {shard}, no longer a voter"
        ))
    })?;
    tracing::info!(shard, node = id, "node removed");
    Ok(())
}

/// Membership changes and the member directory, as the node's API.
impl crate::Node {
    /// Adds `id` as a learner of `shard` (this node must lead it) and waits until it has caught up.
    pub async fn add_learner(&self, shard: ShardId, id: NodeId, addr: String) -> Result<(), SequencerError> {
        let s = self.shard(shard)?;
        let _writing = s.gate.read().await;
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
        let _writing = s.gate.read().await;
        s.raft
            .change_membership(voters, keep_learners)
            .await
            .map_err(|e| map_write_err(shard, e))?;
        Ok(())
    }

    /// Makes the running node `id`, reached at the Raft address `addr`, a voter of `shard` (this
    /// node must lead it): checks who answers there, adds it as a learner, waits at most `catch_up`
    /// for it to catch up, then promotes it. Returns at once if it is a voter already. See
    /// `membership`.
    pub async fn add_member(
        &self,
        shard: ShardId,
        id: NodeId,
        addr: &str,
        catch_up: Duration,
    ) -> Result<(), SequencerError> {
        let s = self.shard(shard)?;
        let inner = &self.inner;
        crate::membership::add(
            &inner.channels,
            &inner.config.timing,
            inner.id,
            &s,
            id,
            addr,
            catch_up,
        )
        .await
    }

    /// Removes node `id` from `shard`'s group (this node must lead it); returns at once if it is not
    /// a member. Asked to remove itself, this node hands the leadership to another voter and answers
    /// `NotLeader` naming it. [`SequencerError::Refused`] (nothing changed) when a majority of the
    /// remaining voters does not answer. See `membership`.
    pub async fn remove_member(&self, shard: ShardId, id: NodeId) -> Result<(), SequencerError> {
        let s = self.shard(shard)?;
        let inner = &self.inner;
        crate::membership::remove(&inner.channels, &inner.config.timing, inner.id, &s, id).await
    }

    /// The gRPC API URL of node `id`: as the member told this node, else from the configuration.
    pub fn api_url(&self, id: NodeId) -> Option<String> {
        if id == self.inner.id {
            return self.inner.config.api_url.clone();
        }
        self.inner.directory.get(id)
    }

    /// Whether this node votes in none of its shards' groups although they have a configuration:
    /// it was removed from the cluster (it learns so as a learner first, see `membership`), or it
    /// is a learner still being added. Its API then refuses writes, so clients go to other nodes.
    pub fn removed(&self) -> bool {
        let me = self.inner.id;
        let groups = self.inner.shards.all();
        !groups.is_empty()
            && groups.iter().all(|s| {
                let metrics = s.raft.metrics();
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                // An uninitialized group (a node waiting to be added) has no members yet.
                m.membership_config.log_id().is_some() && !membership.voter_ids().any(|id| id == me)
            })
    }
}
