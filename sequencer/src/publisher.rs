//! The publisher: on a shard's leader, turns sequenced entries into C2SP tiles, entry bundles and a
//! signed checkpoint in object storage.
//!
//! One round, from the published size `P` (replicated in the state machine) to the sequenced size `N`:
//!
//! 1. Build the hash tiles and bundles the tree of `N` adds to the tree of `P`, from the published
//!    partial tiles and the staged entries, and upload them. Tiles are immutable and fully determined by
//!    the entries, so any leader may (re)write them at any time: the same path always gets the same bytes.
//! 2. Sign the checkpoint for `N`; when the shard has a witness policy, collect the witnesses'
//!    cosignatures (c2sp.org/tlog-witness, consistency proofs read from the tiles just uploaded) and
//!    append them after the log's signature; commit `Checkpointed { N, note }` through Raft.
//! 3. Write the checkpoint object, fenced (see below), then tell waiters.
//!
//! # Witnesses
//!
//! Collection is fail-closed by default: without the policy's quorum the round ends before anything is
//! committed, the reason is recorded for writers waiting on publication (it is in their timeout
//! error), and the next round tries again with whatever has been sequenced by then. A witness that has
//! cosigned a larger tree than this round's (for a leader that crashed before committing it) cannot
//! cosign a smaller one; it cosigns again once the new leader's tree has caught up, which it does: the
//! entries under that larger checkpoint were committed. Failing open publishes with the cosignatures
//! obtained, and says so in the log.
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
//!
//! # Fatal errors
//!
//! A round that fails for a reason retrying can cure (storage or network hiccups, a leadership change)
//! is retried with backoff. A round that fails for a reason it would meet again every time (a tile in
//! object storage that differs from the replicated log, no signing key, replicated state that does not
//! add up) stops this shard's publisher for good: the reason is recorded on the shard
//! ([`crate::Node::publishing_stopped`]), logged once at error level and counted; other shards keep
//! publishing. Every such check happens before the checkpoint is signed, so nothing that covers the
//! offending data is ever signed, committed or written.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_tlog::bundle;
use cairn_tlog::proof::consistency_tiles;
use cairn_tlog::{BundleBuilder, Checkpoint, Hash, Note, leaf_hash};
use cairn_witness::Collector;
use cairn_witness::collect::ProofFuture;
use futures::{StreamExt, TryStreamExt};
use openraft::ServerState;
use tokio::sync::watch;
use tracing::Instrument;

use crate::bucket::{Bucket, PutError};
use crate::config::Publishing;
use crate::error::SequencerError;
use crate::shard::{HostedShard, map_write_err};
use crate::types::{Command, Reply};

/// The longest pause between failed rounds (unless the publishing interval is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often a long pause between rounds looks at the publishing interval again.
const SETTING_RECHECK: Duration = Duration::from_secs(1);
/// Uploads run this many at once.
const UPLOAD_CONCURRENCY: usize = 16;
/// Attempts per object before the round gives up (it is retried next round).
const UPLOAD_ATTEMPTS: u32 = 4;

/// Why a round ended before publishing everything sequenced.
#[derive(Debug)]
enum RoundError {
    /// Retrying can succeed: the next round tries again, after a backoff.
    Retry(SequencerError),
    /// Retrying would meet the same failure (or sign over a log that object storage contradicts): this
    /// node stops publishing the shard.
    Stop(String),
}

/// Classifies the error of a Raft write or leadership check (from [`map_write_err`]). Not being the
/// leader and Raft API errors are transient. A fatal Raft error means the shard's Raft group has stopped
/// (shut down, or its storage failed): nothing can be committed through it any more, so publishing
/// stops as well.
fn raft_err(e: SequencerError) -> RoundError {
    match e {
        SequencerError::Fatal(why) => RoundError::Stop(format!("raft stopped: {why}")),
        other => RoundError::Retry(other),
    }
}

/// How long one Raft call of a publishing round may take before the round is given up and retried.
/// A call made while this node led the shard can outlive that leadership without an answer (the node
/// paused, then installing a snapshot from the new leader): it must not hold this node's publisher
/// forever, or the shard stops publishing once the leadership comes back here.
const RAFT_CALL: Duration = Duration::from_secs(5);

/// `call`, or a retryable timeout after [`RAFT_CALL`].
async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> Result<T, RoundError> {
    tokio::time::timeout(RAFT_CALL, call).await.map_err(|_| {
        RoundError::Retry(SequencerError::Timeout(format!(
            "{what} took longer than {RAFT_CALL:?}"
        )))
    })
}

/// Publishes `shard` while this node leads it, until `stop` is set or a fatal error stops it.
pub(crate) async fn run(cfg: Publishing, shard: Arc<HostedShard>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    // Size of the checkpoint this node has confirmed in the store during its current leadership.
    let mut confirmed: Option<u64> = None;
    // Rounds start `interval` apart (a round that takes longer is followed by the next at once), so
    // an entry waits at most one interval plus one round for its checkpoint.
    let mut last_start = tokio::time::Instant::now();
    loop {
        // The interval is a cluster setting, read again at least every second of the pause, so that
        // a shorter one applies without waiting out a long pause.
        let paused_at = tokio::time::Instant::now();
        loop {
            let interval = cfg.settings.publish_interval();
            let pause = if failures == 0 {
                interval.saturating_sub(last_start.elapsed())
            } else {
                // Backoff after failed rounds, capped low: writers of a Sigstore shard wait for
                // publication, so every second of backoff after the store or the leadership recovered
                // is a second of write stall. One round a second is no load for any store.
                (interval * 2u32.pow(failures.min(6)))
                    .min(MAX_BACKOFF.max(interval))
                    .saturating_sub(paused_at.elapsed())
            };
            if pause.is_zero() {
                break;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(pause.min(SETTING_RECHECK)) => {}
            }
        }
        last_start = tokio::time::Instant::now();
        let m = shard.raft.metrics().borrow().clone();
        let leader = m.state == ServerState::Leader && m.current_leader == Some(cfg.node);
        if !leader {
            // When leadership comes back, the store may be behind the newest committed checkpoint.
            confirmed = None;
            // What held publication here is the new leader's to say now.
            shard.hold(None);
            shard.sm.traces.clear();
            continue;
        }
        let started = std::time::Instant::now();
        let before = shard.sm.published().size;
        match publish_once(&cfg, &shard, &mut confirmed).await {
            Ok(()) => {
                failures = 0;
                if shard.sm.published().size > before {
                    shard
                        .recorders
                        .publish_seconds
                        .with_label_values(&[shard.label().as_str()])
                        .observe(started.elapsed().as_secs_f64());
                }
            }
            Err(RoundError::Retry(SequencerError::NotLeader { .. })) => {
                // The leadership moved during the round: the new leader publishes.
                tracing::debug!(shard = shard.id(), "leadership moved during a publishing round");
            }
            Err(RoundError::Retry(e)) => {
                failures += 1;
                tracing::warn!(shard = shard.id(), error = %e, failures, "publishing round failed");
            }
            Err(RoundError::Stop(why)) => {
                shard.sm.traces.clear();
                // Raft is stopped on purpose at shutdown: that is no failure to report.
                if *stop.borrow() {
                    return;
                }
                if shard.stop_publishing(why.clone()) {
                    tracing::error!(shard = shard.id(), reason = %why, "publishing stopped");
                }
                return;
            }
        }
    }
}

async fn publish_once(
    cfg: &Publishing,
    shard: &HostedShard,
    confirmed: &mut Option<u64>,
) -> Result<(), RoundError> {
    let (state, published) = shard.sm.view();
    let Some(info) = state.info.clone() else {
        let _writing = writing(cfg, shard).await?;
        // First leader of a new shard: record its identity in the replicated state.
        let info = shard.config.shard.clone();
        let span = tracing::info_span!(
            "raft_init",
            shard = shard.id(),
            raft_index = tracing::field::Empty
        );
        let write = shard
            .raft
            .client_write(Command::Init(info))
            .instrument(span.clone());
        let resp = bounded("recording the shard's identity", write)
            .await?
            .map_err(|e| raft_err(map_write_err(shard.id(), e)))?;
        span.record("raft_index", resp.log_id.index);
        if let Reply::Rejected(why) = resp.data {
            // The shard's replicated identity is not the one this node is configured with; only a
            // configuration change (and a restart) can fix that.
            return Err(RoundError::Stop(format!("identity rejected: {why}")));
        }
        return Ok(());
    };
    if !published.note.is_empty() && confirmed.is_none_or(|c| c < published.size) {
        // Make sure the newest committed checkpoint is in the store before publishing beyond it.
        let _writing = writing(cfg, shard).await?;
        put_checkpoint(cfg, shard, published.size, &published.note).await?;
        *confirmed = Some(published.size);
    }
    let n = state.size;
    if n == published.size && !published.note.is_empty() {
        return Ok(());
    }
    let Some(signer) = &shard.config.signer else {
        // Configuration: this node can replicate the shard but never sign for it until it is restarted
        // with the key. (Leadership is not given up by itself; the reason tells operators to move it.)
        return Err(RoundError::Stop(format!(
            "shard {} has no signing key on this node",
            info.id
        )));
    };

    // The round's span continues the traces of the submissions it publishes.
    let (span, covered) = shard.sm.traces.publish_span(info.id, published.size, n);
    let round = async {
        // 1. Tiles and bundles.
        let floor = bundle::bundle_floor(published.size);
        // A read error may be transient (storage), and so may missing entries: a checkpoint committed by
        // an earlier leader can be applied after `view` was read and drop entries below its bundle floor.
        let entries = shard
            .sm
            .staged_entries(floor, n)
            .map_err(|e| RoundError::Retry(SequencerError::Retryable(e.to_string())))?;
        let (old, new) = entries.split_at((published.size - floor) as usize);
        // The published record, the staged entries and the tree edge are replicated state: if they do not
        // add up now they never will, and no checkpoint over them may be signed.
        let mut tiles = published
            .tile_builder()
            .map_err(|e| RoundError::Stop(format!("published partial tiles: {e}")))?;
        let leaves: Vec<Hash> = new.iter().map(|e| leaf_hash(e)).collect();
        let hash_tiles = tiles.extend(&leaves);
        let root = tiles.root();
        if root != state.tree_edge().root() {
            return Err(RoundError::Stop(format!(
                "tiles and tree edge disagree at size {n}"
            )));
        }
        let partial = bundle::encode(old).map_err(|e| RoundError::Stop(format!("staged entries: {e}")))?;
        let mut bundles = BundleBuilder::from_partial(published.size, &partial)
            .map_err(|e| RoundError::Stop(format!("partial bundle: {e}")))?;
        let bundles = bundles
            .extend(new)
            .map_err(|e| RoundError::Stop(format!("staged entries: {e}")))?;
        let objects: Vec<(String, Bytes)> = hash_tiles
            .into_iter()
            .map(|t| (t.id.path(), Bytes::from(t.data)))
            .chain(bundles.into_iter().map(|b| (b.id.path(), Bytes::from(b.data))))
            .collect();
        let count = objects.len();
        // Every object is uploaded (and any conflict found) before the checkpoint is signed.
        futures::stream::iter(objects)
            .map(|(path, data)| upload(&shard.bucket, path, data))
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect::<()>()
            .await?;

        // 2. Sign, collect the witnesses' cosignatures, and commit through Raft.
        let mut signed = Checkpoint::new(info.origin.clone(), n, root).sign(signer);
        if let Some(collector) = &shard.config.witnesses {
            signed = cosign(shard, collector, signed, n, published.size).await?;
        }
        let note = signed.to_bytes();
        // From the commit to the end of the upload the leadership stays here (see `writing`).
        let _writing = writing(cfg, shard).await?;
        let span = tracing::info_span!(
            "raft_checkpointed",
            shard = shard.id(),
            size = n,
            raft_index = tracing::field::Empty
        );
        let write = shard
            .raft
            .client_write(Command::Checkpointed {
                size: n,
                note: note.clone(),
            })
            .instrument(span.clone());
        let resp = bounded("committing the checkpoint", write)
            .await?
            .map_err(|e| raft_err(map_write_err(shard.id(), e)))?;
        span.record("raft_index", resp.log_id.index);
        if let Reply::Rejected(why) = resp.data {
            let why = format!("checkpoint for {n} rejected: {why}");
            // A checkpoint of an earlier leader, applied after `view` was read, moves the published size
            // on: this round's view was stale, and the next one starts from the new size. Otherwise the
            // state machine refused, from the same replicated state, the tree this round built: a bug that
            // retrying would repeat.
            if shard.sm.published().size != published.size {
                return Err(RoundError::Retry(SequencerError::Retryable(why)));
            }
            return Err(RoundError::Stop(why));
        }

        // 3. The checkpoint object.
        put_checkpoint(cfg, shard, n, &note).await?;
        *confirmed = Some(n);
        tracing::debug!(shard = info.id, size = n, objects = count, "published");
        Ok::<(), RoundError>(())
    }
    .instrument(span)
    .await;
    if round.is_err() {
        shard.sm.traces.unpublished(covered);
    }
    round
}

/// Holds the shard's gate shared for a Raft write and the checkpoint upload that follows it, so that
/// a move of the leadership (`placement`) waits for them: the leader that hands over grants its vote
/// outside the lease the upload's fencing counts on, so no upload of its may be in flight then. Fails
/// if this node no longer leads the shard once it has the gate.
async fn writing<'a>(
    cfg: &Publishing,
    shard: &'a HostedShard,
) -> Result<tokio::sync::RwLockReadGuard<'a, ()>, RoundError> {
    let guard = shard.gate.read().await;
    crate::shard::ensure_leader(cfg.node, shard).map_err(RoundError::Retry)?;
    Ok(guard)
}

/// Asks the shard's witnesses to cosign the checkpoint `note` of `size` (the previous checkpoint was
/// of `previous`). The tiles of `size` are uploaded already, so consistency proofs are read from them.
/// Without the quorum (failing closed) the round is retried and the reason is recorded for
/// [`crate::Node::wait_published`]; nothing is committed or published.
async fn cosign(
    shard: &HostedShard,
    collector: &Collector,
    note: Note,
    size: u64,
    previous: u64,
) -> Result<Note, RoundError> {
    let Some(reader) = &shard.tiles else {
        return Err(RoundError::Stop(format!(
            "shard {}: its vkey does not parse, so no proofs can be made for witnesses",
            shard.id()
        )));
    };
    let proof = |old: u64| -> ProofFuture<'_> {
        Box::pin(async move {
            let tiles = consistency_tiles(old, size).map_err(|e| e.to_string())?;
            let src = reader.proof_tiles(tiles, size).await.map_err(|e| e.to_string())?;
            cairn_tlog::consistency_proof(&src, old, size).map_err(|e| e.to_string())
        })
    };
    let span = tracing::info_span!("witness_collect", shard = shard.id(), size);
    match collector
        .collect(&note, size, previous, proof)
        .instrument(span)
        .await
    {
        Ok(c) => {
            if !c.quorum {
                tracing::warn!(
                    shard = shard.id(),
                    size,
                    cosigned = ?c.cosigned,
                    failures = ?c.failures,
                    "publishing without the witness quorum (fail-open)"
                );
            } else if !c.failures.is_empty() {
                tracing::info!(shard = shard.id(), size, failures = ?c.failures, "some witnesses did not cosign");
            }
            shard.hold(None);
            Ok(c.note)
        }
        Err(e) => {
            let why = e.to_string();
            shard.hold(Some(why.clone()));
            Err(RoundError::Retry(SequencerError::Retryable(why)))
        }
    }
}

async fn upload(bucket: &Bucket, path: String, data: Bytes) -> Result<(), RoundError> {
    let mut attempt = 0;
    loop {
        match bucket.put_immutable(&path, data.clone()).await {
            Ok(()) => return Ok(()),
            Err(PutError::Conflict(p)) => {
                // Another writer stored different bytes for an immutable tile: the published log no longer
                // matches the replicated one, and every retry would find the same object. Stop publishing
                // this shard rather than sign over it.
                return Err(RoundError::Stop(format!("{p} exists with different contents")));
            }
            Err(e) if attempt + 1 < UPLOAD_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(%path, error = %e, attempt, "upload failed, retrying");
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            Err(e) => {
                return Err(RoundError::Retry(SequencerError::Retryable(format!(
                    "upload {path}: {e}"
                ))));
            }
        }
    }
}

/// Writes the checkpoint object under the fencing rules in the module docs.
async fn put_checkpoint(
    cfg: &Publishing,
    shard: &HostedShard,
    size: u64,
    note: &[u8],
) -> Result<(), RoundError> {
    let t0 = tokio::time::Instant::now();
    bounded("confirming the leadership", shard.raft.ensure_linearizable())
        .await?
        .map_err(|e| raft_err(map_write_err(shard.id(), e)))?;
    let write = async {
        let existing = shard
            .bucket
            .get("checkpoint")
            .await
            .map_err(|e| SequencerError::Retryable(e.to_string()))?;
        if let Some(stored) = existing.and_then(|e| Checkpoint::parse_note_unverified(&e).ok())
            && stored.size >= size
        {
            return Ok(stored.size);
        }
        shard
            .bucket
            .put("checkpoint", Bytes::copy_from_slice(note))
            .await
            .map_err(|e| SequencerError::Retryable(e.to_string()))?;
        Ok::<u64, SequencerError>(size)
    };
    // Store errors and an upload that outlives the lease are transient: the next round writes again.
    let stored = tokio::time::timeout_at(t0 + cfg.lease, write)
        .await
        .map_err(|_| SequencerError::Timeout("checkpoint upload outlived the leader lease".into()))
        .and_then(|r| r)
        .map_err(RoundError::Retry)?;
    if shard.uploaded.send_if_modified(|u| {
        let grew = stored.min(size) > *u;
        *u = (*u).max(stored.min(size));
        grew
    }) {
        shard.mark_uploaded();
    }
    Ok(())
}
