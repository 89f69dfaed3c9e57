//! The write path: whole-request validation, routing each entry to its shard, and appending each
//! shard's share locally (this node leads it) or through its leader ([`crate::forward`]); `PUBLISHED`
//! writes wait for a checkpoint and are proven against it ([`crate::read`]).

use std::collections::BTreeMap;

use cairn_proto::metadata::{FORWARDED_SHARD, NAMED_SHARD};
use cairn_proto::v1::{AddEntriesRequest, AddEntriesResponse, EntryResult, Wait};
use cairn_sequencer::{Node, ShardId};
use cairn_store::ShardKind;
use cairn_tlog::bundle::MAX_ENTRY_SIZE;
use cairn_tlog::hash::leaf_hash;
use futures::future::try_join_all;
use tonic::metadata::MetadataMap;

use crate::error::LogError;
use crate::route;
use crate::service::Inner;

/// An entry already in another shard: its index there and its leaf hash.
type Found = (u64, [u8; 32]);

/// Checks a whole request before anything is appended.
fn validate(entries: &[Vec<u8>], limits: &crate::Limits) -> Result<(), LogError> {
    if entries.is_empty() {
        return Err(LogError::Invalid("the request has no entries".into()));
    }
    if entries.len() > limits.max_entries {
        return Err(LogError::Invalid(format!(
            "the request has {} entries; the limit is {} per request",
            entries.len(),
            limits.max_entries
        )));
    }
    let mut total = 0usize;
    for (i, e) in entries.iter().enumerate() {
        if e.is_empty() {
            return Err(LogError::Invalid(format!(
                "entry {i} is empty; entries are 1 to {MAX_ENTRY_SIZE} bytes"
            )));
        }
        if e.len() > MAX_ENTRY_SIZE {
            return Err(LogError::Invalid(format!(
                "entry {i} is {} bytes; the limit is {MAX_ENTRY_SIZE} bytes",
                e.len()
            )));
        }
        total += e.len();
    }
    if total > limits.max_bytes {
        return Err(LogError::Invalid(format!(
            "the request carries {total} bytes of entries; the limit is {} bytes per request",
            limits.max_bytes
        )));
    }
    Ok(())
}

/// The shard a forwarding server routed this request to, if it was forwarded.
fn forwarded_shard(metadata: &MetadataMap) -> Result<Option<ShardId>, LogError> {
    metadata
        .get(FORWARDED_SHARD)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<ShardId>().ok())
                .ok_or_else(|| LogError::Invalid(format!("{FORWARDED_SHARD} must be a shard id")))
        })
        .transpose()
}

impl Inner {
    /// `cairn.v1.Log/AddEntries`: entries for opaque shards (a forwarded request keeps the kind of
    /// the shard it was routed to).
    pub(crate) async fn add_entries(
        &self,
        metadata: &MetadataMap,
        req: AddEntriesRequest,
    ) -> Result<AddEntriesResponse, LogError> {
        let wait = req.wait();
        let kind = match forwarded_shard(metadata)? {
            Some(shard) => self.kind(shard),
            None => ShardKind::Opaque,
        };
        if kind == ShardKind::Sigstore {
            // Forwarded for a Sigstore shard: the marker comes from the caller, so the entries are
            // checked again; only checked, canonical hashedrekord bodies reach a Sigstore shard.
            for (i, entry) in req.entries.iter().enumerate() {
                cairn_sigstore::hashedrekord::check_body(entry, &self.config.sigstore_policy)
                    .map_err(|e| LogError::Invalid(format!("entry {i}: {e}")))?;
            }
        }
        self.add_entries_of_kind(kind, metadata, req.entries, wait, None)
            .await
    }

    /// The shard a caller named (`POST /logs/<id>/add`), if it takes entries of `kind`.
    fn named_shard(&self, shard: ShardId, kind: ShardKind, active: &[ShardId]) -> Result<ShardId, LogError> {
        if self.shard(shard).is_err() {
            return Err(LogError::NotFound(format!(
                "this log has no shard {shard}; shards.json lists its shards"
            )));
        }
        if self.kind(shard) != kind {
            let hint = match self.kind(shard) {
                ShardKind::Sigstore => "; it takes Rekor v2 requests at /api/v2/log/entries",
                _ => "",
            };
            return Err(LogError::Invalid(format!(
                "shard {shard} is a {} shard and takes no {} entries{hint}",
                self.kind(shard).as_str(),
                kind.as_str()
            )));
        }
        if !active.contains(&shard) {
            return Err(LogError::Frozen(format!(
                "shard {shard} is not active (frozen, or planned) and takes no entries; shards.json lists the active ones"
            )));
        }
        Ok(shard)
    }

    /// Validates, routes among the active shards of `kind` (or appends to the shard the caller
    /// named), and appends.
    pub(crate) async fn add_entries_of_kind(
        &self,
        kind: ShardKind,
        metadata: &MetadataMap,
        entries: Vec<Vec<u8>>,
        wait: Wait,
        named: Option<ShardId>,
    ) -> Result<AddEntriesResponse, LogError> {
        validate(&entries, &self.config.limits)?;
        let forwarded = forwarded_shard(metadata)?;
        self.auth.writer(metadata, entries.len())?;
        if let Some(node) = &self.node
            && node.removed()
        {
            return Err(LogError::Unavailable {
                reason: format!(
                    "node {} votes in no shard's group (removed from the cluster, or still being added) and takes no writes; send them to another node",
                    node.id()
                ),
                leader: None,
            });
        }
        let (active, past) = self.routing(kind);
        // A shard the caller named (here, or at the server that forwarded the request: opaque shards
        // only, as `POST /logs/<id>/add` allows) takes every entry; otherwise the leaf hash routes.
        let named = match (named, forwarded) {
            (Some(shard), _) => Some(shard),
            (None, Some(f)) if metadata.contains_key(NAMED_SHARD) && kind == ShardKind::Opaque => Some(f),
            _ => None,
        };
        let pinned = named
            .map(|shard| self.named_shard(shard, kind, &active))
            .transpose()?;
        let marked;
        let metadata = match named {
            // Forwarded on with the mark, so that the leader appends where the caller asked.
            Some(_) if !metadata.contains_key(NAMED_SHARD) => {
                let mut m = metadata.clone();
                m.insert(NAMED_SHARD, tonic::metadata::MetadataValue::from_static("1"));
                marked = m;
                &marked
            }
            _ => metadata,
        };
        let n = entries.len();
        let leaves: Vec<[u8; 32]> = entries.iter().map(|e| leaf_hash(e).0).collect();
        // Routed here for the first time since the active shards changed (a forwarded request was
        // looked up by the server that routed it): entries an earlier attempt left in the shard they
        // routed to before are answered from there.
        let earlier = if pinned.is_none() && forwarded.is_none() && !past.is_empty() {
            self.find_earlier(&leaves, &active, &past, metadata).await?
        } else {
            BTreeMap::new()
        };
        let mut groups: BTreeMap<ShardId, (Vec<usize>, Vec<Vec<u8>>)> = BTreeMap::new();
        let mut found: BTreeMap<ShardId, (Vec<usize>, Vec<Found>)> = BTreeMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            if let Some(&(shard, index)) = earlier.get(&i) {
                let f = found.entry(shard).or_default();
                f.0.push(i);
                f.1.push((index, leaves[i]));
                continue;
            }
            let shard = match pinned {
                Some(shard) => shard,
                None => route(&leaves[i], &active).ok_or_else(|| self.none_active(kind))?,
            };
            if pinned.is_none() && forwarded.is_some_and(|f| f != shard) {
                // The forwarding server routed with another set of active shards (a freeze in between).
                return Err(LogError::Unavailable {
                    reason: "the set of active shards changed; retry".into(),
                    leader: None,
                });
            }
            let g = groups.entry(shard).or_default();
            g.0.push(i);
            g.1.push(entry);
        }
        let appended = try_join_all(
            groups
                .into_iter()
                .map(|(shard, (positions, entries))| async move {
                    let results = self
                        .append_group(shard, entries, wait, metadata, forwarded.is_some())
                        .await?;
                    if results.len() != positions.len() {
                        return Err(LogError::Internal(format!(
                            "shard {shard} answered {} results for {} entries",
                            results.len(),
                            positions.len()
                        )));
                    }
                    Ok::<_, LogError>(positions.into_iter().zip(results).collect::<Vec<_>>())
                }),
        );
        let answered = try_join_all(found.into_iter().map(|(shard, (positions, found))| async move {
            let results = self.found_results(shard, &found, wait).await?;
            Ok::<_, LogError>(positions.into_iter().zip(results).collect::<Vec<_>>())
        }));
        let (appended, answered) = futures::future::try_join(appended, answered).await?;
        let outs = appended.into_iter().chain(answered);
        let mut results = vec![EntryResult::default(); n];
        for (i, r) in outs.into_iter().flatten() {
            results[i] = r;
        }
        Ok(AddEntriesResponse { results })
    }

    async fn append_group(
        &self,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        wait: Wait,
        metadata: &MetadataMap,
        forwarded: bool,
    ) -> Result<Vec<EntryResult>, LogError> {
        // A shard this node does not host (added at runtime; its key is not here) goes to its
        // leader among the peers, like a write at a server without a sequencer.
        if let Some(node) = self.node.as_ref().filter(|n| n.hosts(shard)) {
            return match node.leader(shard) {
                Some(l) if l == node.id() => {
                    // A leader cut off from its majority takes no entries (openraft keeps it leader
                    // until it hears of a newer term): bounded like a forward, then the caller retries.
                    let limit = self.forward_deadline(wait);
                    tokio::time::timeout(limit, self.append_local(node, shard, entries, wait))
                        .await
                        .unwrap_or_else(|_| {
                            Err(LogError::Unavailable {
                                reason: format!("shard {shard} took no entries within {limit:?}; retry"),
                                leader: None,
                            })
                        })
                }
                // A forwarded request is never forwarded again: the sender re-routes.
                leader if forwarded => Err(LogError::Unavailable {
                    reason: format!("{} {shard}", crate::error::NOT_LEADER),
                    leader: leader.and_then(|l| self.peer(l)),
                }),
                _ => {
                    self.forward_to_shard_leader(node, shard, entries, wait, metadata)
                        .await
                }
            };
        }
        if forwarded {
            return Err(LogError::Unavailable {
                reason: "this server runs no sequencer".into(),
                leader: None,
            });
        }
        self.forward_to_leader(shard, entries, wait, metadata).await
    }

    pub(crate) async fn append_local(
        &self,
        node: &Node,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        wait: Wait,
    ) -> Result<Vec<EntryResult>, LogError> {
        let appended = node.append(shard, entries).await.map_err(|e| self.seq_err(e))?;
        let mut results: Vec<EntryResult> = appended
            .iter()
            .map(|a| EntryResult {
                shard_id: shard,
                index: a.index,
                leaf_hash: a.leaf_hash.to_vec(),
                duplicate: a.duplicate,
                ..Default::default()
            })
            .collect();
        if wait == Wait::Published {
            let Some(last) = appended.iter().map(|a| a.index).max() else {
                return Ok(results);
            };
            let note = node
                .wait_published(shard, last, self.config.publish_timeout)
                .await
                .map_err(|e| self.seq_err(e))?;
            let indexes: Vec<u64> = appended.iter().map(|a| a.index).collect();
            let proofs = self.published_proofs(shard, &note, &indexes).await?;
            for (r, proof) in results.iter_mut().zip(proofs) {
                r.inclusion_proof = cairn_proto::convert::hash_bytes(&proof);
                r.checkpoint = note.clone();
            }
        }
        Ok(results)
    }
}
