//! Forwarding a shard's share of a request to the shard's leader on another node: the peer client
//! cache, the forwarded request (the caller's token travels with it, and a marker stops the receiver
//! from routing or forwarding it again), and, for a log-server without a sequencer, finding the leader
//! among the peers by following leader hints.

//!
//! Every failure of a forwarded call goes through one mapping ([`LogError::from_forwarded`]): a transport
//! failure or a call cancelled before the leader answered becomes `UNAVAILABLE` (the write is idempotent
//! by leaf hash, so the retry is safe), with the leader's address when known. A forward has a deadline,
//! and when this node sees the shard's leadership move while it waits, the request goes to the new
//! leader instead of waiting for the old one (a paused leader answers only after it resumes).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use cairn_proto::metadata::{AUTHORIZATION, FORWARDED_SHARD, NAMED_SHARD};
use cairn_proto::v1::log_client::LogClient;
use cairn_proto::v1::{AddEntriesRequest, EntryResult, Wait};
use cairn_sequencer::{Node, NodeId, ShardId};
use tokio::time::Instant;
use tonic::Request;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tracing::Instrument;

use crate::error::LogError;
use crate::service::{Inner, MAX_REPLY};

/// How long a peer connection may show no sign of life while a call waits on it.
const PEER_STALL: Duration = Duration::from_secs(1);

/// Resolves once `node` knows of a leader of `shard` other than `current`; returns it.
async fn leader_other_than(node: &Node, shard: ShardId, current: Option<NodeId>) -> Option<NodeId> {
    let mut metrics = node.raft(shard).ok()?.metrics();
    let m = metrics
        .wait_for(|m| m.current_leader.is_some() && m.current_leader != current)
        .await
        .ok()?;
    m.current_leader
}

impl Inner {
    pub(crate) fn client(&self, url: &str) -> Result<LogClient<Channel>, LogError> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| LogError::Internal("client cache poisoned".into()))?;
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        let endpoint = Channel::from_shared(url.to_owned())
            .map_err(|e| LogError::Internal(format!("peer URL {url}: {e}")))?
            .tcp_nodelay(true)
            // A peer that stops answering pings (paused, or gone without a reset) fails the calls
            // waiting on it within about a second, so they are re-routed rather than held.
            .http2_keep_alive_interval(PEER_STALL / 2)
            .keep_alive_timeout(PEER_STALL / 2);
        let channel = match (&self.config.tls, url.starts_with("https://")) {
            (Some(tls), true) => endpoint.connect_with_connector_lazy(tls.connector()),
            (None, true) => {
                return Err(LogError::Internal(format!(
                    "peer URL {url} is https:// but this node has no [tls] configuration"
                )));
            }
            (_, false) => endpoint.connect_lazy(),
        };
        let client = LogClient::new(channel)
            .max_decoding_message_size(MAX_REPLY)
            .max_encoding_message_size(MAX_REPLY);
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }

    /// `body` as a forwarded request for `shard`: the caller's token travels with it, and the marker
    /// tells the receiving server not to route or forward again.
    pub(crate) fn forward_request<T>(shard: ShardId, body: T, metadata: &MetadataMap) -> Request<T> {
        let mut req = Request::new(body);
        if let Some(auth) = metadata.get(AUTHORIZATION) {
            req.metadata_mut().insert(AUTHORIZATION, auth.clone());
        }
        req.metadata_mut()
            .insert(FORWARDED_SHARD, MetadataValue::from(shard));
        if let Some(named) = metadata.get(NAMED_SHARD) {
            req.metadata_mut().insert(NAMED_SHARD, named.clone());
        }
        req
    }

    pub(crate) async fn forward(
        &self,
        url: &str,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        wait: Wait,
        metadata: &MetadataMap,
    ) -> Result<Vec<EntryResult>, LogError> {
        let mut client = self.client(url)?;
        let span = tracing::info_span!("forward", shard, leader = url, otel.kind = "client");
        let mut req = Self::forward_request(
            shard,
            AddEntriesRequest {
                entries,
                wait: wait as i32,
            },
            metadata,
        );
        // The leader's spans join this trace.
        span.in_scope(|| crate::trace::inject_current(req.metadata_mut()));
        let reply = client
            .add_entries(req)
            .instrument(span)
            .await
            .map_err(LogError::from_forwarded)?;
        Ok(reply.into_inner().results)
    }

    /// How long a forwarded write may wait for the leader's answer.
    pub(crate) fn forward_deadline(&self, wait: Wait) -> Duration {
        match wait {
            Wait::Published => self.config.forward_deadline + self.config.publish_timeout,
            _ => self.config.forward_deadline,
        }
    }

    /// With a local node: sends `shard`'s share to the shard's leader as this node sees it, following the
    /// leadership when it moves during the wait, until the forward deadline.
    pub(crate) async fn forward_to_shard_leader(
        &self,
        node: &Node,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        wait: Wait,
        metadata: &MetadataMap,
    ) -> Result<Vec<EntryResult>, LogError> {
        let deadline = Instant::now() + self.forward_deadline(wait);
        let late = |what: String| LogError::Unavailable {
            reason: format!("{what} within {:?}; retry", self.forward_deadline(wait)),
            leader: None,
        };
        let mut leader = node.leader(shard);
        loop {
            let l = match leader {
                Some(l) if l == node.id() => {
                    // Leadership came here during the wait: append locally, under the same deadline.
                    let local = self.append_local(node, shard, entries, wait);
                    return tokio::time::timeout_at(deadline, local)
                        .await
                        .unwrap_or_else(|_| Err(late(format!("shard {shard} took no entries"))));
                }
                Some(l) => l,
                None => match tokio::time::timeout_at(deadline, leader_other_than(node, shard, None)).await {
                    // An election is under way: wait for its result.
                    Ok(Some(new)) => {
                        leader = Some(new);
                        continue;
                    }
                    _ => return Err(late(format!("no leader of shard {shard} was elected"))),
                },
            };
            let url = self.peer(l).ok_or_else(|| LogError::Unavailable {
                reason: format!("the leader of shard {shard} (node {l}) is not among the configured peers"),
                leader: None,
            })?;
            let call = tokio::time::timeout_at(
                deadline,
                self.forward(&url, shard, entries.clone(), wait, metadata),
            );
            tokio::select! {
                // An answer that is ready wins over a leadership change seen in the same poll.
                biased;
                r = call => match r {
                    Ok(Ok(results)) => return Ok(results),
                    // The leader is gone or no longer leads: go to the next one, once this node learns
                    // of it (before the deadline; otherwise the caller retries).
                    Ok(Err(e @ LogError::LeaderUnreachable { .. })) => {
                        match tokio::time::timeout_at(deadline, leader_other_than(node, shard, Some(l))).await {
                            Ok(Some(new)) => {
                                tracing::debug!(shard, from = l, to = new, "forward failed; re-routing to the new leader");
                                leader = Some(new);
                            }
                            _ => return Err(e),
                        }
                    }
                    // Any other answer (including the leader's own UNAVAILABLE, such as a freeze that
                    // changed the routing) goes back to the caller as it is.
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(LogError::Unavailable {
                            reason: format!(
                                "the leader of shard {shard} (node {l}) did not answer within {:?}; retry",
                                self.forward_deadline(wait)
                            ),
                            leader: node.leader(shard).filter(|n| *n != l).and_then(|n| self.peer(n)),
                        });
                    }
                },
                new = leader_other_than(node, shard, Some(l)) => {
                    tracing::debug!(shard, from = l, to = ?new, "leadership moved during a forward; re-routing");
                    leader = new;
                }
            }
        }
    }

    /// Without a local node: tries the last known leader, then each peer, following leader hints.
    pub(crate) async fn forward_to_leader(
        &self,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        wait: Wait,
        metadata: &MetadataMap,
    ) -> Result<Vec<EntryResult>, LogError> {
        let cached = self.leaders.lock().ok().and_then(|l| l.get(&shard).cloned());
        let mut candidates: VecDeque<String> = cached.into_iter().collect();
        candidates.extend(self.config.peers.values().cloned());
        let deadline = Instant::now() + self.forward_deadline(wait);
        let none = LogError::Unavailable {
            reason: "no sequencer peers are configured".into(),
            leader: None,
        };
        let entries = &entries;
        walk_peers(candidates, none, |url| async move {
            let call = self.forward(&url, shard, entries.clone(), wait, metadata);
            let outcome = match tokio::time::timeout_at(deadline, call).await {
                Ok(r) => r,
                Err(_) => Err(LogError::Unavailable {
                    reason: format!("{url} did not answer within {:?}", self.forward_deadline(wait)),
                    leader: None,
                }),
            };
            match &outcome {
                Ok(_) => {
                    if let Ok(mut l) = self.leaders.lock() {
                        l.insert(shard, url);
                    }
                }
                Err(LogError::Unavailable { reason, .. } | LogError::LeaderUnreachable { reason, .. })
                    if reason.contains("frozen") =>
                {
                    if let Ok(mut f) = self.frozen.lock() {
                        f.insert(shard);
                    }
                }
                Err(_) => {}
            }
            outcome
        })
        .await
    }
}

/// Tries each of `candidates` once, in order, until one answers, for a process that looks for a
/// shard's leader among its peers: a peer that answers `Unavailable` or `LeaderUnreachable` with a
/// hint of the leader has that hint tried next; any other error ends the walk. Without an answer, the
/// last such reason (`none` when there was no candidate).
pub(crate) async fn walk_peers<T, F, Fut>(
    mut candidates: VecDeque<String>,
    none: LogError,
    mut attempt: F,
) -> Result<T, LogError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, LogError>>,
{
    let mut tried = BTreeSet::new();
    let mut last = none;
    while let Some(url) = candidates.pop_front() {
        if !tried.insert(url.clone()) {
            continue;
        }
        match attempt(url).await {
            Ok(answer) => return Ok(answer),
            Err(
                LogError::Unavailable { reason, leader } | LogError::LeaderUnreachable { reason, leader },
            ) => {
                if let Some(hint) = &leader {
                    candidates.push_front(hint.clone());
                }
                last = LogError::Unavailable { reason, leader };
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}
