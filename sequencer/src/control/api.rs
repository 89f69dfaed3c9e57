//! What a node offers about the control group: the operator's changes (add and archive shards,
//! cluster settings), each proposed to the control group's leader, and the map as this node applied
//! it, read by the servers (hosting, archive, listing, validity, what a planned shard waits for).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::driver::propose;
use super::{CONTROL, Op, Phase, ShardMap, ShardSpec, unix_now};
use crate::error::SequencerError;
use crate::types::ShardId;

impl crate::Node {
    /// Adds a shard through the control group (see the module's notes): recorded as planned, active
    /// once a majority of its members hold its key and its window has started. Repeating the same
    /// spec is a no-op. `Invalid` for an id or origin in use; `Refused` (nothing recorded) when the
    /// control group's leader does not reach a majority.
    pub async fn add_shard(&self, spec: ShardSpec) -> Result<(), SequencerError> {
        propose(
            &self.inner,
            Op::Add {
                spec,
                members: BTreeMap::new(),
            },
        )
        .await
    }

    /// Archives a frozen shard, of the map or configured: once this node's replica shows its final
    /// checkpoint recorded (so it is in object storage), the control group records `Archived`, and
    /// every node stops the shard's group and deletes its replica (a node restarted later does not
    /// start a configured one again); the read path serves it from object storage alone. Repeating it
    /// is a no-op. `Refused` (nothing recorded) for a shard that is not frozen, whose final checkpoint
    /// (and, for a configured shard, the end of its validity) is not recorded yet, or that this node
    /// does not host.
    pub async fn archive_shard(&self, shard: ShardId) -> Result<(), SequencerError> {
        let map = self.shard_map();
        if map.is_archived(shard) {
            return Ok(());
        }
        let not_frozen = || {
            SequencerError::Refused(format!(
                "shard {shard} is not frozen; freeze it first (cairn shard freeze), then archive it"
            ))
        };
        match map.shards.get(&shard) {
            Some(entry) => match entry.phase {
                Phase::Archived => return Ok(()),
                Phase::Frozen => {}
                Phase::Planned | Phase::Active => return Err(not_frozen()),
            },
            None if self.inner.config.shards.iter().any(|s| s.shard.id == shard) => {
                if !self.frozen(shard)? {
                    return Err(not_frozen());
                }
                if !map.ended.contains_key(&shard) {
                    return Err(SequencerError::Refused(format!(
                        "the end of shard {shard}'s validity is not recorded yet (its leader records it after the freeze); retry shortly"
                    )));
                }
            }
            None => return Err(SequencerError::UnknownShard(shard)),
        }
        let Some(hosted) = self.inner.shards.get(shard) else {
            return Err(SequencerError::Refused(format!(
                "node {} does not host shard {shard}; ask a node that holds its key",
                self.inner.id
            )));
        };
        let (state, published) = hosted.sm.view();
        if !state.frozen || published.size < state.size {
            return Err(SequencerError::Refused(format!(
                "shard {shard}'s final checkpoint is not recorded yet (published {} of {} entries); retry shortly",
                published.size, state.size
            )));
        }
        // The checkpoint in object storage is what readers have once the groups stop: it must be the
        // final one, and old enough that no retry still looks for its entries here.
        let stored = hosted
            .bucket
            .get("checkpoint")
            .await
            .map_err(|e| SequencerError::Retryable(format!("object storage: {e}")))?;
        let stored_size = stored
            .as_deref()
            .and_then(|n| cairn_tlog::Checkpoint::parse_note_unverified(n).ok())
            .map(|c| c.size);
        if stored_size != Some(state.size) {
            return Err(SequencerError::Refused(format!(
                "shard {shard}'s checkpoint in object storage covers {stored_size:?} entries, not its final {}; retry once it is published",
                state.size
            )));
        }
        let written = hosted
            .bucket
            .modified("checkpoint")
            .await
            .map_err(|e| SequencerError::Retryable(format!("object storage: {e}")))?;
        let age = written
            .and_then(|w| std::time::SystemTime::now().duration_since(w).ok())
            .unwrap_or_default();
        let wait = self.inner.settings.archive_after();
        if age < wait {
            return Err(SequencerError::Refused(format!(
                "shard {shard}'s final checkpoint was written {} s ago; it can be archived {} s after (cluster setting archive_after_s), in {} s",
                age.as_secs(),
                wait.as_secs(),
                (wait - age).as_secs() + 1
            )));
        }
        propose(&self.inner, Op::Archived { shard }).await
    }

    /// Records a cluster setting for every node (`None`: back to each node's configured value). See
    /// [`super::settings`]. `Invalid` for an unknown key or a value it does not take.
    pub async fn set_setting(&self, key: &str, value: Option<&str>) -> Result<(), SequencerError> {
        super::settings::check(key, value).map_err(SequencerError::Invalid)?;
        propose(
            &self.inner,
            Op::Set {
                key: key.to_string(),
                value: value.map(str::to_string),
            },
        )
        .await
    }

    /// The cluster settings in effect on this node, with whether the control group recorded them.
    pub fn settings(&self) -> Vec<super::settings::Setting> {
        let map = self.shard_map();
        self.inner.settings.list(&map.settings)
    }

    /// Whether `shard` (of the map or configured) was archived.
    pub fn archived(&self, shard: ShardId) -> bool {
        self.shard_map().is_archived(shard)
    }

    /// Whether this node hosts `shard`'s group (a shard of the map only once it found the key).
    pub fn hosts(&self, shard: ShardId) -> bool {
        shard != CONTROL && self.inner.shards.get(shard).is_some()
    }

    /// The shards added at runtime, as this node has applied the control log (the cluster settings
    /// it records are put in effect here on the way).
    pub fn shard_map(&self) -> Arc<ShardMap> {
        self.inner.current_map()
    }

    /// The shards of the map as `shards.json` lists them, with their state now: a shard hosted here
    /// that its group froze is frozen even before the map records it.
    pub fn catalog(&self) -> Vec<cairn_store::ShardListing> {
        use cairn_store::Lifecycle;
        let now = unix_now();
        let map = self.shard_map();
        map.shards
            .values()
            .map(|e| {
                let id = e.spec.shard.id;
                let early = e.spec.valid_from.is_some_and(|from| now < from);
                let state = match e.phase {
                    Phase::Planned => Lifecycle::Planned,
                    Phase::Active if early => Lifecycle::Planned,
                    Phase::Frozen | Phase::Archived => Lifecycle::Frozen,
                    Phase::Active if self.inner.shards.get(id).is_some_and(|s| s.sm.frozen()) => {
                        Lifecycle::Frozen
                    }
                    Phase::Active => Lifecycle::Active,
                };
                let mut listing = cairn_store::ShardListing::new(e.spec.shard.clone(), e.spec.kind, state);
                listing.valid_from = e.spec.valid_from;
                listing.valid_until = map.valid_until(id);
                listing.base_url = e.spec.base_url.clone();
                listing.archived = e.phase == Phase::Archived;
                listing
            })
            .collect()
    }

    /// The end of `shard`'s validity as the control group recorded it (see [`ShardMap::valid_until`]):
    /// for configured shards too, once frozen.
    pub fn valid_until(&self, shard: ShardId) -> Option<u64> {
        self.shard_map().valid_until(shard)
    }

    /// What a planned shard of the map waits for (`None` once it is active or frozen, and for a shard
    /// not in the map).
    pub fn waiting_for(&self, shard: ShardId) -> Option<String> {
        self.shard_map().waiting_for(shard, unix_now())
    }
}
