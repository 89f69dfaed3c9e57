//! The publisher: on a shard's leader, turns sequenced entries into C2SP tiles, entry bundles and a
//! signed checkpoint in object storage.
//!
//! One round, from the published size `P` (replicated in the state machine) to the sequenced size `N`:
//!
//! 1. Build the hash tiles and bundles the tree of `N` adds to the tree of `P`, from the published
//!    partial tiles and the staged entries, and upload them. Tiles are immutable and fully determined by
//!    the entries, so any leader may (re)write them at any time: the same path always gets the same bytes.
//! 2. Sign the checkpoint for `N` and commit `Checkpointed { N, note }` through Raft.
//! 3. Write the checkpoint object, fenced (see below), then tell waiters.
//!
//! # Fencing the checkpoint
//!
//! The checkpoint is the only object that is ever overwritten. Two published checkpoints are never
//! inconsistent, by construction: a leader only publishes entries its state machine has applied, which
//! are committed, and every replica applies the same committed prefix. What needs fencing is regression:
//! a deposed leader whose slow upload of an older checkpoint lands after its successor wrote a newer one.
//!
//! - **Raft first.** A checkpoint is committed through Raft before it is uploaded, so a deposed leader
//!   cannot publish anything new: its proposal never commits. Every leader starts by re-uploading the
//!   newest committed checkpoint, so the store catches up with Raft after any crash.
//! - **Lease-bounded upload.** Before the upload the leader confirms its leadership with a quorum round
//!   started at `t0` ([`openraft::Raft::ensure_linearizable`]); no other node can win an election before
//!   `t0 + election_timeout_min`. The upload (a read of the stored checkpoint, then the write) is abandoned
//!   if it has not finished by `t0 + election_timeout_min / 2`. A deposed leader's write therefore either
//!   completes while no successor can exist yet, or is cancelled.
//! - **Never write backwards.** The stored checkpoint is read first and the write is skipped if it is
//!   already at or beyond this size. This does not rely on conditional writes, which some S3-compatible
//!   stores ignore.
//!
//! The remaining window is an upload whose request reached the store but was applied more than
//! `election_timeout_min / 2` after it was sent; the next round of the new leader repairs it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_tlog::bundle;
use cairn_tlog::{BundleBuilder, Checkpoint, Hash, Note, leaf_hash};
use futures::{StreamExt, TryStreamExt};
use openraft::ServerState;
use tokio::sync::watch;

use crate::bucket::{Bucket, PutError};
use crate::error::SequencerError;
use crate::node::{NodeInner, Shard, map_write_err};
use crate::types::{Command, Reply, ShardInfo};

/// Uploads run this many at once.
const UPLOAD_CONCURRENCY: usize = 16;
/// Attempts per object before the round gives up (it is retried next round).
const UPLOAD_ATTEMPTS: u32 = 4;

pub(crate) async fn run(node: Arc<NodeInner>, shard: Arc<Shard>, mut stop: watch::Receiver<bool>) {
    let interval = node.config.publish_interval;
    let mut failures = 0u32;
    // Size of the checkpoint this node has confirmed in the store during its current leadership.
    let mut confirmed: Option<u64> = None;
    loop {
        let pause = if failures == 0 {
            interval
        } else {
            (interval * 2u32.pow(failures.min(6))).min(Duration::from_secs(5))
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let m = shard.raft.metrics().borrow().clone();
        let leader = m.state == ServerState::Leader && m.current_leader == Some(node.id);
        if !leader {
            // When leadership comes back, the store may be behind the newest committed checkpoint.
            confirmed = None;
            continue;
        }
        match publish_once(&node, &shard, &mut confirmed).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(shard = shard.config.id, error = %e, failures, "publishing round failed");
            }
        }
    }
}

async fn publish_once(
    node: &NodeInner,
    shard: &Shard,
    confirmed: &mut Option<u64>,
) -> Result<(), SequencerError> {
    let (state, published) = shard.sm.view();
    let Some(info) = state.info.clone() else {
        // First leader of a new shard: record its identity in the replicated state.
        let info = ShardInfo {
            id: shard.config.id,
            origin: shard.config.origin.clone(),
            vkey: shard.config.vkey.clone(),
        };
        let resp = shard
            .raft
            .client_write(Command::Init(info))
            .await
            .map_err(|e| map_write_err(shard.config.id, e))?;
        if let Reply::Rejected(why) = resp.data {
            return Err(SequencerError::Fatal(why));
        }
        return Ok(());
    };
    if !published.note.is_empty() && confirmed.is_none_or(|c| c < published.size) {
        // Make sure the newest committed checkpoint is in the store before publishing beyond it.
        put_checkpoint(node, shard, published.size, &published.note).await?;
        *confirmed = Some(published.size);
    }
    let n = state.size;
    if n == published.size && !published.note.is_empty() {
        return Ok(());
    }
    let Some(signer) = &shard.config.signer else {
        return Err(SequencerError::Fatal(format!(
            "shard {} has no signing key on this node",
            info.id
        )));
    };

    // 1. Tiles and bundles.
    let floor = published.size - published.size % 256;
    let entries = shard
        .sm
        .staged_entries(floor, n)
        .map_err(|e| SequencerError::Retryable(e.to_string()))?;
    let (old, new) = entries.split_at((published.size - floor) as usize);
    let mut tiles = published
        .tile_builder()
        .map_err(|e| SequencerError::Fatal(e.to_string()))?;
    let leaves: Vec<Hash> = new.iter().map(|e| leaf_hash(e)).collect();
    let hash_tiles = tiles.extend(&leaves);
    let root = tiles.root();
    if root != state.tree_edge().root() {
        return Err(SequencerError::Fatal(format!(
            "tiles and tree edge disagree at size {n}"
        )));
    }
    let partial = bundle::encode(old).map_err(|e| SequencerError::Fatal(e.to_string()))?;
    let mut bundles = BundleBuilder::from_partial(published.size, &partial)
        .map_err(|e| SequencerError::Fatal(e.to_string()))?;
    let bundles = bundles
        .extend(new)
        .map_err(|e| SequencerError::Fatal(e.to_string()))?;
    let objects: Vec<(String, Bytes)> = hash_tiles
        .into_iter()
        .map(|t| (t.id.path(), Bytes::from(t.data)))
        .chain(bundles.into_iter().map(|b| (b.id.path(), Bytes::from(b.data))))
        .collect();
    let count = objects.len();
    futures::stream::iter(objects)
        .map(|(path, data)| upload(&shard.bucket, path, data))
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect::<()>()
        .await?;

    // 2. Sign and commit through Raft.
    let note = Checkpoint::new(info.origin.clone(), n, root)
        .sign(signer)
        .to_bytes();
    let resp = shard
        .raft
        .client_write(Command::Checkpointed {
            size: n,
            note: note.clone(),
        })
        .await
        .map_err(|e| map_write_err(shard.config.id, e))?;
    if let Reply::Rejected(why) = resp.data {
        return Err(SequencerError::Fatal(format!(
            "checkpoint for {n} rejected: {why}"
        )));
    }

    // 3. The checkpoint object.
    put_checkpoint(node, shard, n, &note).await?;
    *confirmed = Some(n);
    tracing::debug!(shard = info.id, size = n, objects = count, "published");
    Ok(())
}

async fn upload(bucket: &Bucket, path: String, data: Bytes) -> Result<(), SequencerError> {
    let mut attempt = 0;
    loop {
        match bucket.put_immutable(&path, data.clone()).await {
            Ok(()) => return Ok(()),
            Err(PutError::Conflict(p)) => {
                // Another writer stored different bytes for an immutable tile: the published log no longer
                // matches the replicated one. Stop publishing this shard rather than sign over it.
                return Err(SequencerError::Fatal(format!(
                    "{p} exists with different contents"
                )));
            }
            Err(e) if attempt + 1 < UPLOAD_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(%path, error = %e, attempt, "upload failed, retrying");
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            Err(e) => return Err(SequencerError::Retryable(format!("upload {path}: {e}"))),
        }
    }
}

/// Writes the checkpoint object under the fencing rules in the module docs.
async fn put_checkpoint(
    node: &NodeInner,
    shard: &Shard,
    size: u64,
    note: &[u8],
) -> Result<(), SequencerError> {
    let t0 = tokio::time::Instant::now();
    shard
        .raft
        .ensure_linearizable()
        .await
        .map_err(|e| map_write_err(shard.config.id, e))?;
    let lease = Duration::from_millis(node.config.timing.election_min_ms / 2);
    let write = async {
        if let Some(existing) = shard
            .bucket
            .get("checkpoint")
            .await
            .map_err(|e| SequencerError::Retryable(e.to_string()))?
        {
            let stored = Note::parse(&existing)
                .ok()
                .and_then(|n| Checkpoint::parse(&n.text).ok());
            if let Some(stored) = stored
                && stored.size >= size
            {
                return Ok(stored.size);
            }
        }
        shard
            .bucket
            .put("checkpoint", Bytes::copy_from_slice(note))
            .await
            .map_err(|e| SequencerError::Retryable(e.to_string()))?;
        Ok(size)
    };
    let stored = tokio::time::timeout_at(t0 + lease, write)
        .await
        .map_err(|_| SequencerError::Timeout("checkpoint upload outlived the leader lease"))??;
    shard.uploaded.send_if_modified(|u| {
        let grew = stored.min(size) > *u;
        *u = (*u).max(stored.min(size));
        grew
    });
    Ok(())
}
