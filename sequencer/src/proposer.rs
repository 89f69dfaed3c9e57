//! The batching proposer: groups a shard's queued appends into Raft proposals by count, bytes or time,
//! with several proposals in flight, and hands each caller its share of the results.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::Instrument;

use crate::config::BatchConfig;
use crate::error::SequencerError;
use crate::shard::{HostedShard, PendingAppend, map_write_err};
use crate::types::{Appended, Command, Reply};

/// Runs until `stop` is set or the queue closes.
pub(crate) async fn run(
    shard: Arc<HostedShard>,
    cfg: BatchConfig,
    mut rx: mpsc::Receiver<PendingAppend>,
    mut stop: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight));
    loop {
        let first = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        let mut batch = vec![first];
        let mut count = batch[0].entries.len();
        let mut bytes: usize = batch[0].entries.iter().map(Vec::len).sum();
        let deadline = tokio::time::Instant::now() + cfg.max_delay;
        while count < cfg.max_entries && bytes < cfg.max_bytes {
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    p = rx.recv() => p,
                    _ = tokio::time::sleep_until(deadline) => None,
                },
            };
            let Some(p) = next else { break };
            count += p.entries.len();
            bytes += p.entries.iter().map(Vec::len).sum::<usize>();
            batch.push(p);
        }
        // A batch carrying a look-up's barrier (an empty append, `Node::find`) waits until every
        // earlier proposal has been applied: proposals run concurrently, and one proposed later
        // could otherwise take a lower log index than an earlier batch still on its way.
        let permit = if batch.iter().any(|p| p.entries.is_empty()) {
            in_flight
                .clone()
                .acquire_many_owned(u32::try_from(cfg.max_in_flight).unwrap_or(u32::MAX))
                .await
        } else {
            in_flight.clone().acquire_owned().await
        };
        let Ok(permit) = permit else {
            return;
        };
        let shard = shard.clone();
        tokio::spawn(async move { propose(&shard, batch, count, permit).await });
    }
}

/// Proposes one batch and answers its callers; the in-flight slot is freed as soon as Raft answers.
async fn propose(shard: &HostedShard, batch: Vec<PendingAppend>, count: usize, permit: OwnedSemaphorePermit) {
    let mut sizes = Vec::with_capacity(batch.len());
    let mut all = Vec::with_capacity(count);
    let mut replies = Vec::with_capacity(batch.len());
    let mut callers = Vec::with_capacity(batch.len());
    for p in batch {
        sizes.push(p.entries.len());
        all.extend(p.entries);
        replies.push(p.reply);
        callers.push(p.span);
    }
    let id = shard.id();
    // The proposal continues its first caller's span (its trace) and follows from the others' (the
    // callers' spans are only kept while traces are exported: see `crate::trace`).
    let span = tracing::info_span!(
        parent: callers.first().and_then(tracing::Span::id),
        "raft_append",
        shard = id,
        entries = count,
        first_index = tracing::field::Empty,
        last_index = tracing::field::Empty,
        raft_index = tracing::field::Empty,
    );
    for other in callers.iter().skip(1) {
        span.follows_from(other);
    }
    let traced = if crate::trace::on() {
        all.first().map(|e| cairn_tlog::leaf_hash(e).0)
    } else {
        None
    };
    if let Some(first) = traced {
        shard.sm.traces.proposing(first, &span);
    }
    let started = std::time::Instant::now();
    // Paused while the leadership moves to another node (which then answers `NotLeader`).
    let paused = shard.gate.read().await;
    let result = shard
        .raft
        .client_write(Command::Append(all))
        .instrument(span.clone())
        .await;
    drop(paused);
    drop(permit);
    if let Some(first) = traced {
        shard.sm.traces.proposed(first, &span);
    }
    shard
        .recorders
        .proposal_seconds
        .with_label_values(&[shard.label().as_str()])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(resp) => {
            span.record("raft_index", resp.log_id.index);
            match resp.data {
                Reply::Appended(mut results) => {
                    record_range(&span, &results);
                    for (n, reply) in sizes.into_iter().zip(replies).rev() {
                        let tail = results.split_off(results.len() - n);
                        let _ = reply.send(Ok(tail));
                    }
                }
                Reply::Frozen => replies
                    .into_iter()
                    .for_each(|r| drop(r.send(Err(SequencerError::Frozen(id))))),
                other => {
                    let msg = format!("unexpected reply {other:?}");
                    replies
                        .into_iter()
                        .for_each(|r| drop(r.send(Err(SequencerError::Fatal(msg.clone())))));
                }
            }
        }
        Err(e) => {
            let err = map_write_err(id, e);
            for r in replies {
                let _ = r.send(Err(match &err {
                    SequencerError::NotLeader { shard, leader } => SequencerError::NotLeader {
                        shard: *shard,
                        leader: leader.clone(),
                    },
                    SequencerError::Fatal(m) => SequencerError::Fatal(m.clone()),
                    other => SequencerError::Retryable(other.to_string()),
                }));
            }
        }
    }
}

/// Records the log indexes the batch's new entries received (they are consecutive; duplicates keep
/// their earlier index and are left out).
pub(crate) fn record_range(span: &tracing::Span, results: &[Appended]) {
    let mut new = results.iter().filter(|a| !a.duplicate).map(|a| a.index);
    if let Some(first) = new.next() {
        span.record("first_index", first);
        span.record("last_index", new.next_back().unwrap_or(first));
    }
}
