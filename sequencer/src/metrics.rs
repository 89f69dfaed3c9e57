//! Prometheus metrics of a node's shards: Raft state, sequenced and published sizes, the publication
//! lag, queue depth and pushbacks (read live at each scrape), and proposal and publishing-round latency
//! histograms. [`crate::Node::registry`] holds them; the process serves them on `/metrics`.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::types::NodeId;

/// Histograms and counters updated as things happen.
#[derive(Clone)]
pub(crate) struct Recorders {
    pub(crate) proposal_seconds: HistogramVec,
    pub(crate) publish_seconds: HistogramVec,
    pub(crate) pushbacks: IntCounterVec,
}

fn defined<T>(m: Result<T, prometheus::Error>) -> T {
    // Constant definitions: an error is a bug that every test rendering metrics catches.
    m.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Recorders {
    fn new() -> Self {
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        Self {
            proposal_seconds: defined(HistogramVec::new(
                HistogramOpts::new(
                    "cairn_raft_proposal_seconds",
                    "Time from proposing a batch of entries to its commit and apply (majority fsync)",
                )
                .buckets(buckets.clone()),
                &["shard"],
            )),
            publish_seconds: defined(HistogramVec::new(
                HistogramOpts::new(
                    "cairn_publish_round_seconds",
                    "Duration of a publishing round that published a checkpoint (tiles, witnesses, Raft, upload)",
                )
                .buckets(buckets),
                &["shard"],
            )),
            pushbacks: defined(IntCounterVec::new(
                Opts::new(
                    "cairn_shard_pushbacks_total",
                    "Appends refused with RESOURCE_EXHAUSTED (queue full or too much unpublished)",
                ),
                &["shard"],
            )),
        }
    }
}

/// Gauges computed from the shards' live state at each scrape.
struct Live {
    node: NodeId,
    /// Weak: the registry may outlive the node (it is shared with the read path), the database must not.
    shards: std::sync::Weak<crate::shard::HostedGroups>,
    term: IntGaugeVec,
    is_leader: IntGaugeVec,
    last_log: IntGaugeVec,
    applied: IntGaugeVec,
    sequenced: IntGaugeVec,
    published: IntGaugeVec,
    unpublished: IntGaugeVec,
    since_publication: GaugeVec,
    queue: IntGaugeVec,
    /// Serializes scrapes: each resets the shared gauges before setting them.
    scrape: std::sync::Mutex<()>,
}

impl Live {
    fn gauges(&self) -> [&IntGaugeVec; 8] {
        [
            &self.term,
            &self.is_leader,
            &self.last_log,
            &self.applied,
            &self.sequenced,
            &self.published,
            &self.unpublished,
            &self.queue,
        ]
    }
}

impl Collector for Live {
    fn desc(&self) -> Vec<&Desc> {
        let mut d: Vec<&Desc> = self.gauges().iter().flat_map(|g| g.desc()).collect();
        d.extend(self.since_publication.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        for g in self.gauges() {
            g.reset();
        }
        self.since_publication.reset();
        let hosted = crate::shard::Hosted::upgrade(&self.shards);
        for s in hosted.iter().flat_map(|h| h.logs()) {
            let shard = s.id().to_string();
            let l = [shard.as_str()];
            let m = s.raft.metrics().borrow().clone();
            let leader = m.current_leader == Some(self.node);
            let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.term.with_label_values(&l).set(as_i64(m.current_term));
            self.is_leader.with_label_values(&l).set(i64::from(leader));
            self.last_log
                .with_label_values(&l)
                .set(as_i64(m.last_log_index.unwrap_or(0)));
            self.applied
                .with_label_values(&l)
                .set(as_i64(m.last_applied.map_or(0, |x| x.index)));
            let (state, published) = (s.sm.state().size, s.sm.published().size);
            self.sequenced.with_label_values(&l).set(as_i64(state));
            self.published.with_label_values(&l).set(as_i64(published));
            self.unpublished
                .with_label_values(&l)
                .set(as_i64(state.saturating_sub(published)));
            self.queue
                .with_label_values(&l)
                .set(as_i64((s.queue.max_capacity() - s.queue.capacity()) as u64));
            if leader && let Some(age) = s.since_upload() {
                self.since_publication
                    .with_label_values(&l)
                    .set(age.as_secs_f64());
            }
        }
        let mut out: Vec<MetricFamily> = self.gauges().iter().flat_map(|g| g.collect()).collect();
        out.extend(self.since_publication.collect());
        out
    }
}

/// Creates the node's registry with the live gauges over `shards` and the recorders.
pub(crate) fn registry(node: NodeId, shards: crate::shard::Hosted, recorders: &Recorders) -> Registry {
    let gauge = |name: &str, help: &str| defined(IntGaugeVec::new(Opts::new(name, help), &["shard"]));
    let live = Live {
        node,
        shards: shards.downgrade(),
        term: gauge("cairn_raft_term", "The shard's current Raft term on this node"),
        is_leader: gauge("cairn_raft_is_leader", "1 on the node that leads the shard"),
        last_log: gauge(
            "cairn_raft_last_log_index",
            "Index of the last entry in this node's Raft log",
        ),
        applied: gauge(
            "cairn_raft_applied_index",
            "Index of the last Raft entry applied on this node",
        ),
        sequenced: gauge(
            "cairn_shard_sequenced_entries",
            "Entries sequenced (index assigned) as applied on this node",
        ),
        published: gauge(
            "cairn_shard_published_entries",
            "Entries covered by the newest committed checkpoint",
        ),
        unpublished: gauge(
            "cairn_shard_unpublished_entries",
            "Entries sequenced but not yet covered by a published checkpoint",
        ),
        since_publication: defined(GaugeVec::new(
            Opts::new(
                "cairn_shard_seconds_since_publication",
                "On the leader: seconds since it last wrote a newer checkpoint to object storage",
            ),
            &["shard"],
        )),
        queue: gauge(
            "cairn_shard_queue_depth",
            "Append requests waiting for the proposer on this node",
        ),
        scrape: std::sync::Mutex::new(()),
    };
    let registry = Registry::new();
    defined(registry.register(Box::new(live)));
    defined(registry.register(Box::new(recorders.proposal_seconds.clone())));
    defined(registry.register(Box::new(recorders.publish_seconds.clone())));
    defined(registry.register(Box::new(recorders.pushbacks.clone())));
    registry
}

/// New recorders (one set per node).
pub(crate) fn recorders() -> Recorders {
    Recorders::new()
}
