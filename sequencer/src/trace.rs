//! Where a submission's trace continues after it leaves its caller's task: into the Raft apply, which
//! openraft runs in its own task, and into the publishing round that covers it, which runs on a timer.
//!
//! The proposer records each proposal's span under the leaf hash of the batch's first entry; the
//! state machine, applying that batch on the same node, opens its `apply` span as the proposal's child
//! and, in the same step (before the new size is visible to the publisher, and in index order), queues
//! the proposal with the last index it covers. The publishing round whose checkpoint includes that
//! index takes it: the round's `publish` span is the child of the first proposal it covers and follows
//! from the others (a link, in OpenTelemetry). So the first caller of a batch sees, in its trace, the API
//! call, any forward to the leader, the proposal, apply and publication; the batch's other callers are
//! linked from the proposal.
//!
//! Off unless [`enable`] was called (by a process that exports traces): then nothing is recorded or
//! computed here, and log lines keep the span context of the task that writes them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Span;

/// Spans waiting for publication, per shard, beyond which the oldest are dropped (a slow store must
/// not grow memory without bound; a dropped span only loses its `publish` child).
const WAITING_MAX: usize = 4096;

static ON: AtomicBool = AtomicBool::new(false);

/// Continues submissions' traces into apply and publication (for processes that export traces).
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether traces are exported.
pub(crate) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// One shard's spans in transit (on the node that proposed them).
#[derive(Default)]
pub(crate) struct Traces {
    /// Proposals in flight, by the leaf hash of their first entry.
    proposals: Mutex<HashMap<[u8; 32], Span>>,
    /// Proposals whose entries wait for a checkpoint, with the last index each covers, oldest first.
    waiting: Mutex<VecDeque<(u64, Span)>>,
}

impl Traces {
    /// Records `span` as the proposal of a batch whose first entry has leaf hash `first`.
    pub(crate) fn proposing(&self, first: [u8; 32], span: &Span) {
        lock(&self.proposals).insert(first, span.clone());
    }

    /// The proposal `span` was answered: forgets it (unless another proposal with the same first
    /// entry replaced it meanwhile).
    pub(crate) fn proposed(&self, first: [u8; 32], span: &Span) {
        let mut proposals = lock(&self.proposals);
        if proposals.get(&first).map(Span::id) == Some(span.id()) {
            proposals.remove(&first);
        }
    }

    /// The span to apply the batch `entries` in: a child of its proposal if that was made on this
    /// node, else none. With the proposal: see [`Traces::applied`].
    pub(crate) fn apply_span(&self, shard: u32, entries: &[Vec<u8>]) -> Option<(Span, Span)> {
        if !on() {
            return None;
        }
        let first = cairn_tlog::leaf_hash(entries.first()?).0;
        let proposal = lock(&self.proposals).get(&first).cloned()?;
        let entries = entries.len();
        let span = tracing::info_span!(
            parent: &proposal,
            "apply",
            shard,
            entries,
            first_index = tracing::field::Empty,
            last_index = tracing::field::Empty,
        );
        Some((span, proposal))
    }

    /// The batch of `proposal` was applied and its last new entry has index `last`: the proposal waits
    /// for the checkpoint that covers it. Called while applying, so in index order and before the
    /// publisher can see the entries.
    pub(crate) fn applied(&self, proposal: Span, last: u64) {
        let mut waiting = lock(&self.waiting);
        if waiting.len() == WAITING_MAX {
            waiting.pop_front();
        }
        waiting.push_back((last, proposal));
    }

    /// This node no longer publishes the shard (it lost the leadership, or its publisher stopped):
    /// what waited for publication here is dropped, and those traces end without a `publish` span.
    pub(crate) fn clear(&self) {
        lock(&self.waiting).clear();
    }

    /// The span of a publishing round from size `from` to `size`: a child of the first proposal it
    /// publishes, following from the others (the proposals are taken; [`Traces::unpublished`] puts
    /// them back if the round fails). Without a proposal to continue, a span of its own.
    pub(crate) fn publish_span(&self, shard: u32, from: u64, size: u64) -> (Span, Vec<(u64, Span)>) {
        let covered: Vec<(u64, Span)> = if on() {
            // In index order (queued while applying); anything below `from` was published before.
            let mut waiting = lock(&self.waiting);
            let n = waiting.iter().take_while(|(last, _)| *last < size).count();
            waiting.drain(..n).filter(|(last, _)| *last >= from).collect()
        } else {
            Vec::new()
        };
        let span = match covered.first() {
            Some((_, first)) => tracing::info_span!(parent: first, "publish", shard, from, size),
            None => tracing::info_span!("publish", shard, from, size),
        };
        for (_, other) in covered.iter().skip(1) {
            span.follows_from(other);
        }
        (span, covered)
    }

    /// A round that took `covered` failed: they wait for the next one.
    pub(crate) fn unpublished(&self, covered: Vec<(u64, Span)>) {
        let mut waiting = lock(&self.waiting);
        for item in covered.into_iter().rev() {
            if waiting.len() < WAITING_MAX {
                waiting.push_front(item);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` with spans recorded (a registry as the thread's subscriber) and traces enabled.
    fn traced(f: impl FnOnce()) {
        enable();
        tracing::subscriber::with_default(tracing_subscriber::registry(), f);
    }

    fn lasts(covered: &[(u64, Span)]) -> Vec<u64> {
        covered.iter().map(|(last, _)| *last).collect()
    }

    #[test]
    fn a_round_takes_the_proposals_it_publishes_in_order_and_a_failed_one_gives_them_back() {
        traced(|| {
            let t = Traces::default();
            let (a, b, c) = (
                tracing::info_span!("a"),
                tracing::info_span!("b"),
                tracing::info_span!("c"),
            );
            t.applied(a.clone(), 4);
            t.applied(b.clone(), 9);
            // Size 8 publishes indexes 0..=7: only the batch ending at 4.
            let (span, covered) = t.publish_span(1, 0, 8);
            assert_eq!(lasts(&covered), [4]);
            assert!(span.id().is_some());
            // The round failed: the next one, to 10, takes both, oldest first.
            t.unpublished(covered);
            let (_, covered) = t.publish_span(1, 0, 10);
            assert_eq!(lasts(&covered), [4, 9]);
            assert_eq!(covered[0].1.id(), a.id());
            // Nothing waits now; a proposal below the round's start is not the round's.
            t.applied(c.clone(), 3);
            let (_, covered) = t.publish_span(1, 10, 20);
            assert!(covered.is_empty());
            // Losing the leadership drops what waited.
            t.applied(c, 25);
            t.clear();
            assert!(t.publish_span(1, 20, 30).1.is_empty());
        });
    }

    #[test]
    fn a_proposal_is_forgotten_only_by_itself_and_apply_runs_under_the_latest() {
        traced(|| {
            let t = Traces::default();
            let entries = vec![b"first".to_vec(), b"second".to_vec()];
            let first = cairn_tlog::leaf_hash(&entries[0]).0;
            let (old, new) = (tracing::info_span!("old"), tracing::info_span!("new"));
            t.proposing(first, &old);
            // The same first entry proposed again while the first proposal is in flight.
            t.proposing(first, &new);
            t.proposed(first, &old);
            let (apply, proposal) = t
                .apply_span(1, &entries)
                .expect("the newer proposal is still known");
            assert_eq!(proposal.id(), new.id());
            assert!(apply.id().is_some());
            t.proposed(first, &new);
            assert!(t.apply_span(1, &entries).is_none());
        });
    }
}
