//! Prometheus metrics of the read path.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) seconds: HistogramVec,
    pub(crate) cache_hits: IntCounter,
    pub(crate) cache_misses: IntCounter,
    pub(crate) store_errors: IntCounter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("cairn_tiles_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "cairn_tiles_request_seconds",
                "Request latency in seconds by route",
            )
            .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            &["route"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let cache_hits = IntCounter::new("cairn_tiles_cache_hits_total", "Tile and bundle cache hits")
            .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let cache_misses = IntCounter::new("cairn_tiles_cache_misses_total", "Tile and bundle cache misses")
            .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let store_errors = IntCounter::new("cairn_tiles_store_errors_total", "Object store errors")
            .unwrap_or_else(|e| panic!("metric definition: {e}"));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(seconds.clone()),
        ] {
            let _ = registry.register(c);
        }
        for c in [&cache_hits, &cache_misses, &store_errors] {
            let _ = registry.register(Box::new(c.clone()));
        }
        Self {
            registry,
            requests,
            seconds,
            cache_hits,
            cache_misses,
            store_errors,
        }
    }

    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
