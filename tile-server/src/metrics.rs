//! Prometheus metrics of the read path.

use std::sync::Mutex;

use cairn_store::TileCache;

use crate::ShardStatus;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) seconds: HistogramVec,
    pub(crate) corrupt: IntCounter,
    cache: TileCache,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    store_errors: IntCounter,
    publishing_stopped: IntGaugeVec,
    leader: IntGaugeVec,
    /// Serializes copying the cache's counters into the registry.
    sync: Mutex<()>,
}

fn defined<T>(m: Result<T, prometheus::Error>) -> T {
    // The definitions below are constants; an error is a bug caught by every test that renders metrics.
    m.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Metrics {
    pub(crate) fn new(cache: TileCache) -> Self {
        let registry = Registry::new();
        let requests = defined(IntCounterVec::new(
            Opts::new("cairn_tiles_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        ));
        let seconds = defined(HistogramVec::new(
            HistogramOpts::new(
                "cairn_tiles_request_seconds",
                "Request latency in seconds by route",
            )
            .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            &["route"],
        ));
        let cache_hits = defined(IntCounter::new(
            "cairn_tiles_cache_hits_total",
            "Tile and bundle cache hits",
        ));
        let cache_misses = defined(IntCounter::new(
            "cairn_tiles_cache_misses_total",
            "Tile and bundle cache misses",
        ));
        let store_errors = defined(IntCounter::new(
            "cairn_tiles_store_errors_total",
            "Object store errors",
        ));
        let corrupt = defined(IntCounter::new(
            "cairn_tiles_verification_failures_total",
            "Reads whose stored data did not verify (bad checkpoint signature, missing or malformed tile)",
        ));
        let publishing_stopped = defined(IntGaugeVec::new(
            Opts::new(
                "cairn_shard_publishing_stopped",
                "1 when the shard's publisher in this process stopped on a fatal error (see /readyz)",
            ),
            &["shard"],
        ));
        let leader = defined(IntGaugeVec::new(
            Opts::new(
                "cairn_shard_leader",
                "The shard's Raft leader as this node knows it (node id; 0 while unknown)",
            ),
            &["shard"],
        ));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(seconds.clone()),
            Box::new(publishing_stopped.clone()),
            Box::new(leader.clone()),
        ] {
            let _ = registry.register(c);
        }
        for c in [&cache_hits, &cache_misses, &store_errors, &corrupt] {
            let _ = registry.register(Box::new(c.clone()));
        }
        Self {
            registry,
            requests,
            seconds,
            corrupt,
            cache,
            cache_hits,
            cache_misses,
            store_errors,
            publishing_stopped,
            leader,
            sync: Mutex::new(()),
        }
    }

    /// The text exposition, with the sequencer's view of its shards.
    pub(crate) fn render(&self, status: &[ShardStatus], extra: &[Registry]) -> String {
        {
            let _guard = self.sync.lock().unwrap_or_else(|p| p.into_inner());
            let (hits, misses, errors) = self.cache.stats().snapshot();
            for (counter, now) in [
                (&self.cache_hits, hits),
                (&self.cache_misses, misses),
                (&self.store_errors, errors),
            ] {
                counter.inc_by(now.saturating_sub(counter.get()));
            }
        }
        for st in status {
            let shard = st.id.to_string();
            self.publishing_stopped
                .with_label_values(&[shard.as_str()])
                .set(i64::from(st.publishing_stopped.is_some()));
            self.leader
                .with_label_values(&[shard.as_str()])
                .set(st.leader.map_or(0, |l| i64::try_from(l).unwrap_or(0)));
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        for r in extra {
            let _ = TextEncoder::new().encode(&r.gather(), &mut buf);
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
