//! Finding entries in a shard's log by leaf hash: the `FindEntries` RPC, and the write path's look-up
//! of entries whose route changed. An attempt whose answer was lost (or a batch partly refused) may
//! have landed in the shard its entries routed to then; when the active shards change before the
//! retry, the retry routes elsewhere. So for the reroute grace after a change, an entry whose route
//! differs from a recent set's is first looked for in that set's shard, and answered from there when
//! found: acknowledged once, logged once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use cairn_proto::metadata::FORWARDED_SHARD;
use cairn_proto::v1::{EntryResult, FindEntriesRequest, Wait};
use cairn_sequencer::ShardId;
use futures::future::try_join_all;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use crate::error::LogError;
use crate::forward::walk_peers;
use crate::route;
use crate::service::Inner;

/// How often a write answered from an earlier shard polls for a checkpoint covering its entries.
const PUBLISHED_POLL: Duration = Duration::from_millis(100);

impl Inner {
    /// `FindEntries`: which of `leaves` `shard`'s log holds (a writer's token, as for a write).
    pub(crate) async fn find_entries(
        &self,
        metadata: &MetadataMap,
        req: FindEntriesRequest,
    ) -> Result<Vec<Option<u64>>, LogError> {
        if req.leaf_hashes.len() > self.config.limits.max_entries {
            return Err(LogError::Invalid(format!(
                "the request has {} leaf hashes; the limit is {} per request",
                req.leaf_hashes.len(),
                self.config.limits.max_entries
            )));
        }
        let leaves = req
            .leaf_hashes
            .iter()
            .enumerate()
            .map(|(i, h)| {
                <[u8; 32]>::try_from(h.as_slice()).map_err(|_| {
                    LogError::Invalid(format!(
                        "leaf hash {i} is {} bytes; a leaf hash is 32 bytes (SHA-256(0x00 || entry))",
                        h.len()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A look-up costs the tenant's rate like a one-entry write, however many hashes it names.
        self.auth.writer(metadata, 1)?;
        if !req.active.is_empty() {
            let mut theirs = req.active.clone();
            theirs.sort_unstable();
            let ours = self.active(self.kind(req.shard_id));
            if theirs != ours && !self.is_frozen(req.shard_id) {
                return Err(LogError::Unavailable {
                    reason: format!(
                        "this server sees the active shards {ours:?}, the caller {theirs:?}: the change is still spreading; retry"
                    ),
                    leader: None,
                });
            }
        }
        self.find(req.shard_id, &leaves, metadata).await
    }

    /// Which of `leaves` `shard`'s log holds: answered by the local sequencer when it can (it leads the
    /// shard, or the shard is frozen here), else by the shard's leader, within twice the forward
    /// deadline.
    pub(crate) async fn find(
        &self,
        shard: ShardId,
        leaves: &[[u8; 32]],
        metadata: &MetadataMap,
    ) -> Result<Vec<Option<u64>>, LogError> {
        self.shard(shard)?;
        if self.is_archived(shard) {
            return Err(LogError::Refused(format!(
                "shard {shard} is archived: no sequencer holds its index any more; its published log (tiles) holds every entry"
            )));
        }
        let forwarded = metadata.contains_key(FORWARDED_SHARD);
        // A look-up at an active shard waits for the appends queued before it: twice a forward's
        // deadline.
        let limit = self.config.forward_deadline * 2;
        let late = || LogError::Unavailable {
            reason: format!("shard {shard} did not answer a look-up within {limit:?}; retry"),
            leader: None,
        };
        let mut candidates = VecDeque::new();
        if let Some(node) = self.node.as_ref().filter(|n| n.hosts(shard)) {
            let leader = node.leader(shard);
            let here = node.frozen(shard).unwrap_or(false) || leader == Some(node.id());
            if here || forwarded {
                // A forwarded look-up is answered here or refused with a leader hint, never sent on.
                return tokio::time::timeout(limit, node.find(shard, leaves))
                    .await
                    .map_err(|_| late())?
                    .map_err(|e| self.seq_err(e));
            }
            candidates.extend(leader.and_then(|l| self.peer(l)));
        } else if forwarded {
            return Err(LogError::Unavailable {
                reason: format!("this server does not host shard {shard}"),
                leader: None,
            });
        } else {
            candidates.extend(self.leaders.lock().ok().and_then(|l| l.get(&shard).cloned()));
        }
        candidates.extend(self.config.peers.values().cloned());
        tokio::time::timeout(limit, self.find_at_peers(shard, leaves, metadata, candidates))
            .await
            .map_err(|_| late())?
    }

    /// Asks `candidates` in turn (following leader hints) until one answers.
    async fn find_at_peers(
        &self,
        shard: ShardId,
        leaves: &[[u8; 32]],
        metadata: &MetadataMap,
        candidates: VecDeque<String>,
    ) -> Result<Vec<Option<u64>>, LogError> {
        let none = LogError::Unavailable {
            reason: format!("no sequencer could look up entries of shard {shard}"),
            leader: None,
        };
        walk_peers(candidates, none, |url| async move {
            let req = Self::forward_request(
                shard,
                FindEntriesRequest {
                    shard_id: shard,
                    leaf_hashes: leaves.iter().map(|l| l.to_vec()).collect(),
                    active: self.active(self.kind(shard)),
                },
                metadata,
            );
            match self.client(&url)?.find_entries(req).await {
                // A server of an older version (a rolling upgrade): ask the next.
                Err(status) if status.code() == tonic::Code::Unimplemented => Err(LogError::Unavailable {
                    reason: format!("{url} does not implement FindEntries"),
                    leader: None,
                }),
                Err(status) => Err(LogError::from_forwarded(status)),
                Ok(reply) => {
                    let results = reply.into_inner().results;
                    if results.len() != leaves.len() {
                        return Err(LogError::Internal(format!(
                            "{url} answered {} look-ups for {} leaf hashes",
                            results.len(),
                            leaves.len()
                        )));
                    }
                    Ok(results.into_iter().map(|r| r.found.then_some(r.index)).collect())
                }
            }
        })
        .await
    }

    /// The entries (by position) of a write that are already in a shard they routed to under one of
    /// the `past` active sets but not under `active`: each with that shard and its index there.
    pub(crate) async fn find_earlier(
        &self,
        leaves: &[[u8; 32]],
        active: &[ShardId],
        past: &[Vec<ShardId>],
        metadata: &MetadataMap,
    ) -> Result<BTreeMap<usize, (ShardId, u64)>, LogError> {
        // An archived shard was frozen for longer than the grace before it was archived.
        let archived: BTreeSet<ShardId> = past
            .iter()
            .flatten()
            .copied()
            .filter(|s| self.is_archived(*s))
            .collect();
        let mut probes: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
        for (i, leaf) in leaves.iter().enumerate() {
            let now = route(leaf, active);
            let mut seen = BTreeSet::new();
            for set in past {
                if let Some(before) = route(leaf, set)
                    && Some(before) != now
                    && !archived.contains(&before)
                    && seen.insert(before)
                {
                    probes.entry(before).or_default().push(i);
                }
            }
        }
        let found = try_join_all(probes.into_iter().map(|(shard, positions)| async move {
            let hashes: Vec<[u8; 32]> = positions.iter().map(|&i| leaves[i]).collect();
            let indexes = self.find(shard, &hashes, metadata).await?;
            Ok::<_, LogError>(
                positions
                    .into_iter()
                    .zip(indexes)
                    .filter_map(move |(i, index)| index.map(|index| (i, (shard, index)))),
            )
        }))
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Results for entries found in `shard` at `indexes` (leaf hashes beside), as duplicates; for
    /// `PUBLISHED`, proven against a checkpoint of the shard that covers them all (waited for up to
    /// the publish timeout).
    pub(crate) async fn found_results(
        &self,
        shard: ShardId,
        found: &[(u64, [u8; 32])],
        wait: Wait,
    ) -> Result<Vec<EntryResult>, LogError> {
        let mut results: Vec<EntryResult> = found
            .iter()
            .map(|(index, leaf)| EntryResult {
                shard_id: shard,
                index: *index,
                leaf_hash: leaf.to_vec(),
                duplicate: true,
                ..Default::default()
            })
            .collect();
        let Some(last) = found.iter().map(|(i, _)| *i).max() else {
            return Ok(results);
        };
        if wait != Wait::Published {
            return Ok(results);
        }
        let reader = self.reader(shard)?;
        let deadline = Instant::now() + self.config.publish_timeout;
        let checkpoint = loop {
            // No checkpoint readable yet is waited for like one too small.
            match reader.checkpoint().await {
                Ok(cp) if cp.checkpoint.size > last => break cp,
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(LogError::Unavailable {
                    reason: format!(
                        "shard {shard} holds the entry at index {last} but has not published it within {:?}; retry",
                        self.config.publish_timeout
                    ),
                    leader: None,
                });
            }
            tokio::time::sleep(PUBLISHED_POLL).await;
        };
        let indexes: Vec<u64> = found.iter().map(|(i, _)| *i).collect();
        let proofs = reader.inclusion_proofs_in(&checkpoint, &indexes).await?;
        let note = checkpoint.note.body.to_vec();
        for (r, proof) in results.iter_mut().zip(proofs) {
            r.inclusion_proof = cairn_proto::convert::hash_bytes(&proof);
            r.checkpoint = note.clone();
        }
        Ok(results)
    }
}
